//! The drill report as one self-contained HTML page (`muster drill --html`):
//! the summary and four SVG plots drawn from the report's series. No script,
//! no external asset: it opens offline, prints, and can be archived with the
//! run.

use super::report::{DrillReport, Series};
use std::fmt::Write;

/// Escapes text for HTML content and attribute values.
fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Seconds as `45s`, `12m` or `2h05m` (axis labels).
fn clock(secs: f64) -> String {
    let s = secs.max(0.0).round() as u64;
    match s {
        0..120 => format!("{s}s"),
        120..7200 => format!("{}m", s / 60),
        _ => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
    }
}

/// Colours with enough contrast on white (WCAG AA for lines and text).
const COLOURS: [&str; 6] = [
    "#1f4e9c", "#b3261e", "#1b6b3a", "#8a4b00", "#5b2a86", "#005f73",
];

struct Line<'a> {
    label: String,
    /// (x, y) in data units.
    points: Vec<(f64, f64)>,
    dashed: bool,
    colour: &'a str,
}

const W: f64 = 720.0;
const H: f64 = 260.0;
const LEFT: f64 = 64.0;
const RIGHT: f64 = 16.0;
const TOP: f64 = 16.0;
const BOTTOM: f64 = 36.0;

/// A line plot with axes, ticks and a legend; `title` names it for screen
/// readers.
fn plot(title: &str, y_label: &str, lines: &[Line<'_>]) -> String {
    let x_max = lines
        .iter()
        .flat_map(|l| l.points.iter().map(|p| p.0))
        .fold(0.0_f64, f64::max)
        .max(1.0);
    let y_max = lines
        .iter()
        .flat_map(|l| l.points.iter().map(|p| p.1))
        .filter(|y| y.is_finite())
        .fold(0.0_f64, f64::max)
        .max(1.0)
        * 1.05;
    let sx = |x: f64| LEFT + (W - LEFT - RIGHT) * x / x_max;
    let sy = |y: f64| H - BOTTOM - (H - TOP - BOTTOM) * y / y_max;
    let mut svg = String::new();
    let _ = write!(
        svg,
        r#"<svg viewBox="0 0 {W} {H}" role="img" aria-label="{}"><title>{}</title>"#,
        esc(title),
        esc(title)
    );
    // Axes and ticks.
    let _ = write!(
        svg,
        r##"<line x1="{LEFT}" y1="{b}" x2="{r}" y2="{b}" stroke="#444"/><line x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{b}" stroke="#444"/>"##,
        b = H - BOTTOM,
        r = W - RIGHT
    );
    for i in 0..=4 {
        let f = f64::from(i) / 4.0;
        let (x, y) = (sx(x_max * f), sy(y_max / 1.05 * f));
        let _ = write!(
            svg,
            r##"<text x="{x:.1}" y="{ty:.1}" text-anchor="middle" class="tick">{}</text><line x1="{LEFT}" y1="{y:.1}" x2="{r}" y2="{y:.1}" stroke="#ddd"/><text x="{tx:.1}" y="{yy:.1}" text-anchor="end" class="tick">{}</text>"##,
            clock(x_max * f),
            number(y_max / 1.05 * f),
            ty = H - BOTTOM + 16.0,
            r = W - RIGHT,
            tx = LEFT - 6.0,
            yy = y + 4.0
        );
    }
    let _ = write!(
        svg,
        r#"<text x="12" y="{}" transform="rotate(-90 12 {})" text-anchor="middle" class="tick">{}</text>"#,
        H / 2.0,
        H / 2.0,
        esc(y_label)
    );
    for l in lines {
        let pts: Vec<String> = l
            .points
            .iter()
            .filter(|p| p.0.is_finite() && p.1.is_finite())
            .map(|(x, y)| format!("{:.1},{:.1}", sx(*x), sy(*y)))
            .collect();
        let dash = if l.dashed {
            r#" stroke-dasharray="6 4""#
        } else {
            ""
        };
        let _ = write!(
            svg,
            r#"<polyline fill="none" stroke="{}" stroke-width="2"{dash} points="{}"/>"#,
            l.colour,
            pts.join(" ")
        );
    }
    svg.push_str("</svg>");
    let mut legend = String::from(r#"<ul class="legend">"#);
    for l in lines {
        let _ = write!(
            legend,
            r#"<li><span class="swatch{}" style="border-color:{}"></span>{}</li>"#,
            if l.dashed { " dashed" } else { "" },
            l.colour,
            esc(&l.label)
        );
    }
    legend.push_str("</ul>");
    format!(
        "<figure><figcaption>{}</figcaption>{svg}{legend}</figure>",
        esc(title)
    )
}

fn number(v: f64) -> String {
    if v >= 10_000.0 {
        format!("{:.0}k", v / 1000.0)
    } else if v >= 100.0 || v == v.round() {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

impl<'a> Line<'a> {
    /// A running total of the series (x: seconds from the trigger, each
    /// value at the end of its bucket).
    fn running(label: &str, s: &Series, values: &[u64], colour: &'a str) -> Self {
        let mut points = vec![(0.0, 0.0)];
        points.extend(
            values
                .iter()
                .enumerate()
                .map(|(i, v)| ((i as f64 + 1.0) * s.bucket_secs, *v as f64)),
        );
        Line {
            label: label.to_string(),
            points,
            dashed: false,
            colour,
        }
    }
}

/// The page.
pub fn render(r: &DrillReport) -> String {
    let s = &r.series;
    let mut body = String::new();
    let _ = write!(
        body,
        "<h1>{}</h1><p class=\"sub\">{} {} &middot; seed {} &middot; {} stakeholders &middot; {} of virtual time in {:.1} s</p>",
        esc(&r.scenario),
        esc(&r.incident),
        esc(&r.severity),
        r.seed,
        r.stakeholders,
        clock(r.virtual_secs),
        r.wall_secs
    );
    let verdict = if r.passed() {
        "<p class=\"ok\">Every invariant held; every stakeholder ended in a final state.</p>"
            .to_string()
    } else {
        format!(
            "<p class=\"bad\">The drill did not pass: {} invariant violation(s), {} still active, {} error(s).</p>",
            r.invariant_violations,
            r.final_states.active,
            r.errors.len()
        )
    };
    body.push_str(&verdict);
    let f = &r.final_states;
    let _ = write!(
        body,
        "<table><caption>Outcome</caption><tr><th scope=\"col\">state</th><th scope=\"col\">people</th></tr>\
         <tr><td>acknowledged</td><td>{}</td></tr><tr><td>escalated (CASCADE_FAILURE)</td><td>{}</td></tr>\
         <tr><td>cancelled</td><td>{}</td></tr><tr><td>still active</td><td>{}</td></tr></table>",
        f.acknowledged, f.escalated, f.cancelled, f.active
    );
    let _ = write!(
        body,
        "<table><caption>Time from trigger</caption><tr><th scope=\"col\"></th><th scope=\"col\">p50</th><th scope=\"col\">p95</th><th scope=\"col\">max</th></tr>\
         <tr><td>first contact</td><td>{}</td><td>{}</td><td>{}</td></tr>\
         <tr><td>acknowledged</td><td>{}</td><td>{}</td><td>{}</td></tr></table>",
        clock(r.first_contact_secs.p50),
        clock(r.first_contact_secs.p95),
        clock(r.first_contact_secs.max),
        clock(r.ack_secs.p50),
        clock(r.ack_secs.p95),
        clock(r.ack_secs.max)
    );
    body.push_str(&plot(
        "First contacts and acknowledgements, cumulative",
        "people",
        &[
            Line::running("first contacted", s, &s.first_contacts, COLOURS[0]),
            Line::running("acknowledged", s, &s.acknowledged, COLOURS[2]),
        ],
    ));
    let mut lines = Vec::new();
    for (i, (name, counts)) in s.accepted.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        lines.push(Line {
            label: name.clone(),
            points: counts
                .iter()
                .enumerate()
                .map(|(b, n)| ((b as f64 + 0.5) * s.bucket_secs, *n as f64 / s.bucket_secs))
                .collect(),
            dashed: false,
            colour,
        });
        if let Some(c) = r.carriers.get(name) {
            let end = s.bucket_secs * s.first_contacts.len() as f64;
            lines.push(Line {
                label: format!("{name}: told limit"),
                points: vec![(0.0, c.limit_per_sec), (end, c.limit_per_sec)],
                dashed: true,
                colour,
            });
        }
    }
    body.push_str(&plot(
        "Each carrier's pace (accepted sends per second) against its told limit (dashed)",
        "sends per second",
        &lines,
    ));
    let _ = write!(
        body,
        "<table><caption>Carriers</caption><tr><th scope=\"col\">carrier</th><th scope=\"col\">told limit /s</th><th scope=\"col\">hidden capacity /s</th><th scope=\"col\">peak /s</th><th scope=\"col\">429s</th><th scope=\"col\">throughput /s</th></tr>"
    );
    for (name, c) in &r.carriers {
        let _ = write!(
            body,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{:.1}</td></tr>",
            esc(name),
            number(c.limit_per_sec),
            c.hidden_capacity_per_sec.map_or("-".to_string(), number),
            c.peak_per_sec,
            c.throttled_429,
            c.throughput_per_sec
        );
    }
    body.push_str("</table>");
    body.push_str(&waits(r));
    body.push_str(&plot(
        "Escalations, cumulative: failures and failures acknowledged by someone told",
        "failures",
        &[
            Line::running("CASCADE_FAILURE", s, &s.failures, COLOURS[1]),
            Line::running(
                "acknowledged by someone told",
                s,
                &s.failures_acknowledged,
                COLOURS[2],
            ),
        ],
    ));
    let e = &r.escalations;
    let _ = write!(
        body,
        "<p>{} failures: {} acknowledged, {} withdrawn, {} reached nobody, {} cancelled, {} still open.</p>",
        e.failures, e.acknowledged, e.withdrawn, e.undelivered, e.cancelled, e.open
    );
    let _ = write!(
        body,
        "<p class=\"sub\">Audit: {} entries; hash chains {}. Computed from the run's audit trail and records.</p>",
        r.audit_entries,
        if r.audit_chains_verified {
            "verified"
        } else {
            "NOT verified"
        }
    );
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>{}</title><style>{STYLE}</style></head><body><main>{body}</main></body></html>\n",
        esc(&r.scenario)
    )
}

/// Queue waits per channel as horizontal bars (p50 solid, p95 light, max tick).
fn waits(r: &DrillReport) -> String {
    let rows: Vec<_> = r
        .channels
        .iter()
        .filter(|(_, c)| c.queue_wait_secs.count > 0)
        .collect();
    if rows.is_empty() {
        return String::new();
    }
    let most = rows
        .iter()
        .map(|(_, c)| c.queue_wait_secs.max)
        .fold(0.0_f64, f64::max)
        .max(1.0);
    let row_h = 28.0;
    let h = TOP + row_h * rows.len() as f64 + BOTTOM;
    let span = W - LEFT - RIGHT - 120.0;
    let sx = |v: f64| LEFT + span * v / most;
    let mut svg = format!(
        r#"<svg viewBox="0 0 {W} {h}" role="img" aria-label="Queue waits per channel"><title>Queue waits per channel</title>"#
    );
    for (i, (ch, c)) in rows.iter().enumerate() {
        let y = TOP + row_h * i as f64;
        let q = &c.queue_wait_secs;
        let _ = write!(
            svg,
            r##"<text x="{tx}" y="{ty:.1}" text-anchor="end" class="tick">{}</text><rect x="{LEFT}" y="{y:.1}" width="{w95:.1}" height="18" fill="#c9d6ee"/><rect x="{LEFT}" y="{y:.1}" width="{w50:.1}" height="18" fill="{}"/><line x1="{mx:.1}" y1="{y:.1}" x2="{mx:.1}" y2="{y2:.1}" stroke="#222" stroke-width="2"/><text x="{lx:.1}" y="{ty:.1}" class="tick">p50 {} · p95 {} · max {}</text>"##,
            ch.as_str(),
            COLOURS[0],
            clock(q.p50),
            clock(q.p95),
            clock(q.max),
            tx = LEFT - 6.0,
            ty = y + 13.0,
            w95 = sx(q.p95) - LEFT,
            w50 = sx(q.p50) - LEFT,
            mx = sx(q.max),
            y2 = y + 18.0,
            lx = sx(q.max) + 6.0
        );
    }
    svg.push_str("</svg>");
    format!(
        "<figure><figcaption>Queue waits per channel: from ready to offered to the carrier (p50 dark, p95 light, max the tick)</figcaption>{svg}</figure>"
    )
}

const STYLE: &str = "body{font:16px/1.45 system-ui,sans-serif;color:#111;background:#fff;margin:0}\
main{max-width:760px;margin:0 auto;padding:16px}h1{font-size:1.4em;margin:.2em 0}\
.sub{color:#444}.ok{color:#1b6b3a;font-weight:600}.bad{color:#b3261e;font-weight:600}\
table{border-collapse:collapse;margin:12px 0;width:100%}caption{text-align:left;font-weight:600;padding:4px 0}\
td,th{border-bottom:1px solid #ccc;padding:4px 8px;text-align:left}\
figure{margin:20px 0}figcaption{font-weight:600;margin-bottom:4px}svg{width:100%;height:auto}\
.tick{font-size:11px;fill:#333}.legend{list-style:none;padding:0;display:flex;flex-wrap:wrap;gap:12px;margin:4px 0}\
.swatch{display:inline-block;width:22px;border-top:3px solid;margin-right:6px;vertical-align:middle}\
.swatch.dashed{border-top-style:dashed}@media print{main{max-width:none}}";
