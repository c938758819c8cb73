//! `muster incidents`: a client of a deployed API (or of `muster serve`).
//! Credentials come from the environment: `MUSTER_API_TOKEN` (a bearer
//! token, as API Gateway's JWT authorizer takes) or `MUSTER_API_SECRET`
//! (the shared secret every request is signed with, docs/api.md).

use anyhow::{Context, bail};
use muster::api::sign::{SignedRequest, sign_request};
use muster::secret::Secret;
use serde_json::{Value, json};
use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How a request proves who sends it.
enum Credentials {
    Bearer(Secret),
    Hmac(Secret),
    None,
}

impl Credentials {
    fn from_env() -> Self {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        if let Some(t) = var("MUSTER_API_TOKEN") {
            Credentials::Bearer(Secret::new(t))
        } else if let Some(s) = var("MUSTER_API_SECRET") {
            Credentials::Hmac(Secret::new(s))
        } else {
            Credentials::None
        }
    }
}

pub struct Client {
    base: reqwest::Url,
    http: reqwest::Client,
    credentials: Credentials,
}

impl Client {
    pub fn new(api: &str) -> anyhow::Result<Self> {
        let mut base =
            reqwest::Url::parse(api).with_context(|| format!("--api {api:?} is not a URL"))?;
        if !matches!(base.scheme(), "http" | "https") {
            bail!("--api {api:?}: expected an http or https URL");
        }
        if !base.path().ends_with('/') {
            base.set_path(&format!("{}/", base.path()));
        }
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()?;
        Ok(Client {
            base,
            http,
            credentials: Credentials::from_env(),
        })
    }

    /// Sends one request; the JSON answer of a 2xx, else an error saying
    /// what the API said (its problem detail and field errors).
    async fn call(&self, method: &str, path: &str, body: Option<&Value>) -> anyhow::Result<Value> {
        let url = self.base.join(path.trim_start_matches('/'))?;
        let bytes = body.map(|b| b.to_string().into_bytes()).unwrap_or_default();
        let m = reqwest::Method::from_bytes(method.as_bytes())?;
        let mut req = self.http.request(m, url.clone());
        if body.is_some() {
            req = req
                .header("content-type", "application/json")
                .body(bytes.clone());
        }
        match &self.credentials {
            Credentials::Bearer(t) => {
                req = req.header("authorization", format!("Bearer {}", t.expose()));
            }
            Credentials::Hmac(secret) => {
                let ts = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
                let sig = sign_request(
                    secret,
                    &SignedRequest {
                        method,
                        path: url.path(),
                        query: url.query(),
                        timestamp: ts,
                        body: &bytes,
                    },
                );
                req = req
                    .header("x-muster-timestamp", ts.to_string())
                    .header("x-muster-signature", sig);
            }
            Credentials::None => {}
        }
        // Roles as a local `muster serve` without a secret takes them
        // (ignored anywhere a caller is authenticated).
        if let Ok(roles) = std::env::var("MUSTER_API_ROLES") {
            req = req.header("x-muster-roles", roles);
        }
        let resp = req
            .send()
            .await
            .with_context(|| format!("{method} {url}"))?;
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        if status.is_success() {
            return Ok(v);
        }
        let mut msg = format!("{method} {}: {status}", url.path());
        if let Some(d) = v["detail"].as_str() {
            msg.push_str(&format!(": {d}"));
        }
        for e in v["errors"].as_array().into_iter().flatten() {
            msg.push_str(&format!(
                "\n  {}: {}",
                e["field"].as_str().unwrap_or("?"),
                e["message"].as_str().unwrap_or("?")
            ));
        }
        bail!(msg)
    }
}

fn path_id(id: &str) -> anyhow::Result<String> {
    muster::domain::IncidentId::parse(id)
        .map(|i| i.to_string())
        .map_err(|e| anyhow::anyhow!("incident id {id:?}: {e}"))
}

/// What `trigger` sends.
pub struct TriggerArgs {
    pub id: Option<String>,
    pub group: String,
    pub severity: String,
    pub message: String,
}

pub async fn trigger(c: &Client, t: TriggerArgs) -> anyhow::Result<Value> {
    let mut fields = json!({
        "severity": t.severity,
        "stakeholderGroupId": t.group,
        "messageTemplate": t.message,
    });
    if let Some(id) = t.id {
        fields["incidentId"] = json!(id);
    } else {
        let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis();
        fields["incidentId"] = json!(format!("INC-{now}"));
    }
    c.call("POST", "v1/incidents", Some(&json!({ "trigger": fields })))
        .await
}

pub async fn status(c: &Client, id: &str) -> anyhow::Result<Value> {
    c.call(
        "GET",
        &format!("v1/incidents/{}?limit=1", path_id(id)?),
        None,
    )
    .await
}

/// Closes the incident; with `all_clear`, everyone reached is told.
pub async fn close(c: &Client, id: &str, all_clear: Option<&str>) -> anyhow::Result<Value> {
    let body = match all_clear {
        Some(m) => json!({ "allClear": m }),
        None => json!({}),
    };
    c.call(
        "POST",
        &format!("v1/incidents/{}/close", path_id(id)?),
        Some(&body),
    )
    .await
}

/// Sends an update to `audience` (all, acknowledged, unacknowledged).
pub async fn update(c: &Client, id: &str, message: &str, audience: &str) -> anyhow::Result<Value> {
    c.call(
        "POST",
        &format!("v1/incidents/{}/updates", path_id(id)?),
        Some(&json!({ "message": message, "audience": audience })),
    )
    .await
}

fn n(v: &Value) -> u64 {
    v.as_u64().unwrap_or(0)
}

/// Whether the incident needs nothing more: closed, or expanded with every
/// cascade ended and no failure waiting to be escalated.
pub fn ended(v: &Value) -> bool {
    let p = &v["progress"];
    let open = |c: &Value| n(&c["pending"]) + n(&c["active"]);
    let expanded = n(&v["incident"]["expanded"]) >= n(&v["incident"]["cascades"]);
    v["incident"]["status"] == "closed"
        || (expanded
            && open(&p["members"]) == 0
            && open(&p["escalations"]) == 0
            && n(&p["awaitingEscalation"]) == 0)
}

fn bar(done: u64, total: u64, width: usize) -> String {
    let filled = if total == 0 {
        0
    } else {
        ((done as f64 / total as f64) * width as f64).round() as usize
    };
    let filled = filled.min(width);
    format!("[{}{}]", "#".repeat(filled), "-".repeat(width - filled))
}

/// The progress block `watch` draws.
pub fn render(v: &Value) -> String {
    let p = &v["progress"];
    let m = &p["members"];
    let members = n(&v["incident"]["cascades"]).max(1);
    let lines = [
        format!(
            "{} {}  {}",
            v["incident"]["trigger"]["incidentId"]
                .as_str()
                .unwrap_or("?"),
            v["incident"]["status"].as_str().unwrap_or("?"),
            v["incident"]["trigger"]["severity"].as_str().unwrap_or(""),
        ),
        format!(
            "contacted     {} {:>7} / {members}",
            bar(n(&p["contacted"]), members, 30),
            n(&p["contacted"])
        ),
        format!(
            "acknowledged  {} {:>7} / {members}",
            bar(n(&m["acknowledged"]), members, 30),
            n(&m["acknowledged"])
        ),
        format!(
            "members: {} pending, {} active, {} escalated, {} cancelled; escalations: {} open, {} acknowledged; {} undelivered",
            n(&m["pending"]),
            n(&m["active"]),
            n(&m["escalated"]),
            n(&m["cancelled"]),
            n(&p["escalations"]["pending"]) + n(&p["escalations"]["active"]),
            n(&p["escalations"]["acknowledged"]),
            n(&p["undelivered"]),
        ),
    ];
    lines.join("\n")
}

/// Reads the status every `interval` and draws the progress until the
/// incident ends (or `timeout` passes: an error).
pub async fn watch(
    c: &Client,
    id: &str,
    interval: Duration,
    timeout: Option<Duration>,
) -> anyhow::Result<Value> {
    let tty = std::io::stdout().is_terminal();
    let start = Instant::now();
    let mut last = String::new();
    let mut drawn_lines = 0;
    loop {
        let v = status(c, id).await?;
        let block = render(&v);
        if block != last {
            let mut out = std::io::stdout().lock();
            if tty && drawn_lines > 0 {
                // Redraw in place: up over the block drawn before.
                write!(out, "\x1b[{drawn_lines}A\x1b[J")?;
            }
            writeln!(out, "{block}")?;
            out.flush()?;
            drawn_lines = block.lines().count();
            last = block;
        }
        if ended(&v) {
            return Ok(v);
        }
        if timeout.is_some_and(|t| start.elapsed() >= t) {
            bail!("incident {id} had not ended after {:?}", start.elapsed());
        }
        tokio::time::sleep(interval).await;
    }
}

/// Writes the incident's whole audit trail, page by page, as the JSON lines
/// `muster audit verify` reads: every entry (without the address the API
/// shows beside it), then the seals as the last page gave them (so a seal
/// written while the export ran is there). Progress on stderr. Returns the
/// number of entries.
pub async fn export(c: &Client, id: &str, out: &mut dyn Write) -> anyhow::Result<u64> {
    let id = path_id(id)?;
    let mut cursor: Option<String> = None;
    let (mut entries, mut pages) = (0u64, 0u64);
    let mut seals: Vec<Value>;
    loop {
        let mut path = format!("v1/incidents/{id}/audit?limit=1000");
        if let Some(c) = &cursor {
            path.push_str(&format!("&cursor={c}"));
        }
        let v = c.call("GET", &path, None).await?;
        seals = v["seals"].as_array().cloned().unwrap_or_default();
        for e in v["entries"].as_array().into_iter().flatten() {
            let mut e = e.clone();
            if let Some(o) = e.as_object_mut() {
                o.remove("address");
            }
            writeln!(out, "{e}")?;
            entries += 1;
        }
        pages += 1;
        eprint!("\rpage {pages}: {entries} entries");
        match v["next"].as_str() {
            Some(n) => cursor = Some(n.to_string()),
            None => break,
        }
    }
    for seal in seals {
        writeln!(out, "{}", json!({ "seal": seal }))?;
    }
    eprintln!();
    out.flush()?;
    Ok(entries)
}
