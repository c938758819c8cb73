//! The drill report: outcome, timings, channels, carriers, invariants.

use super::run::Drill;
use crate::domain::{Channel, Ts};
use crate::engine::{CascadeStatus, Route, invariants};
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::Ordering;
use std::time::Instant;

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct FinalStates {
    pub acknowledged: u64,
    pub escalated: u64,
    pub cancelled: u64,
    pub active: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Percentiles {
    pub count: u64,
    pub p50: f64,
    pub p95: f64,
    pub max: f64,
}

impl Percentiles {
    fn of(mut v: Vec<u64>) -> Self {
        if v.is_empty() {
            return Percentiles::default();
        }
        v.sort_unstable();
        let at = |q: f64| {
            v[((q * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1] as f64 / 1000.0
        };
        Percentiles {
            count: v.len() as u64,
            p50: at(0.5),
            p95: at(0.95),
            max: at(1.0),
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ChannelStats {
    pub attempts: u64,
    pub delivered: u64,
    pub failed: u64,
    pub timeouts: u64,
    pub throttled: u64,
    pub acknowledged: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct CarrierStats {
    /// The limit Muster was told (policy).
    pub limit_per_sec: f64,
    /// The carrier's hidden capacity, if it had one.
    pub hidden_capacity_per_sec: Option<f64>,
    pub peak_per_sec: u64,
    pub throttled_429: u64,
    pub offered: u64,
    pub accepted: u64,
    /// Accepted sends per second between the first and the last.
    pub throughput_per_sec: f64,
    /// The limiter's pacing rate at the end.
    pub final_rate_per_sec: f64,
    /// Sends that reached the carrier for a cascade already ended (must be 0).
    pub sent_after_end: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct DrillReport {
    pub scenario: String,
    pub seed: u64,
    pub incident: String,
    pub severity: String,
    pub stakeholders: u64,
    pub manager_cascades: u64,
    pub final_states: FinalStates,
    pub first_contact_secs: Percentiles,
    pub ack_secs: Percentiles,
    pub channels: BTreeMap<Channel, ChannelStats>,
    pub carriers: BTreeMap<String, CarrierStats>,
    pub cascade_failures: u64,
    pub needs_review: u64,
    /// Live contact lookups at cascade start, by outcome.
    pub contact_checks: BTreeMap<String, u64>,
    pub invariant_violations: u64,
    pub violations: Vec<String>,
    pub audit_entries: u64,
    pub audit_chains_verified: bool,
    pub stale_events: u64,
    pub errors: Vec<String>,
    pub timed_out: bool,
    pub steps: u64,
    pub virtual_secs: f64,
    pub wall_secs: f64,
}

pub(super) fn build(
    d: &Drill,
    start: Ts,
    end: Ts,
    wall: Instant,
    errors: Vec<String>,
    timed_out: bool,
    steps: u64,
) -> DrillReport {
    let (world, limiter, obs) = d.parts();
    let mut r = DrillReport {
        scenario: d.scenario.name.clone(),
        seed: d.seed,
        incident: d.scenario.trigger.incident_id.to_string(),
        severity: d.scenario.trigger.severity.to_string(),
        errors,
        timed_out,
        steps,
        ..Default::default()
    };
    let mut violations: Vec<String> = obs
        .violations
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let mut violation_count = obs.violation_count.load(Ordering::Relaxed);
    let mut first = Vec::new();
    let mut acks = Vec::new();
    let triggered = start;
    for rec in d.store.all_cascades() {
        let c = &rec.cascade;
        if let Some(v) = invariants::check_final(c) {
            violation_count += 1;
            if violations.len() < 50 {
                violations.push(v);
            }
        }
        r.needs_review += u64::from(rec.needs_review);
        if c.key.route == Route::Manager {
            r.manager_cascades += 1;
            continue;
        }
        r.stakeholders += 1;
        match c.status {
            CascadeStatus::Acknowledged => r.final_states.acknowledged += 1,
            CascadeStatus::Escalated => {
                r.final_states.escalated += 1;
                r.cascade_failures += 1;
            }
            CascadeStatus::Cancelled => r.final_states.cancelled += 1,
            _ => r.final_states.active += 1,
        }
        if let Some(t) = c.first_contact_at {
            first.push(t.since(triggered));
        }
        if c.status == CascadeStatus::Acknowledged
            && let Some(t) = c.acked_at
        {
            acks.push(t.since(triggered));
        }
    }
    let missing =
        d.scenario.members.len() as u64 - r.stakeholders.min(d.scenario.members.len() as u64);
    if missing > 0 {
        violation_count += missing;
        violations.push(format!("{missing} members never got a cascade"));
    }
    r.first_contact_secs = Percentiles::of(first);
    r.ack_secs = Percentiles::of(acks);
    let ch = *obs.channel.lock().unwrap_or_else(|e| e.into_inner());
    for c in Channel::ALL {
        let v = ch[c.index()];
        r.channels.insert(
            c,
            ChannelStats {
                attempts: v[0],
                delivered: v[1],
                failed: v[2],
                timeouts: v[3],
                throttled: v[4],
                acknowledged: v[5],
            },
        );
    }
    let rates = limiter.rates();
    for (c, k, capacity) in world.counters() {
        let span = match (k.first_at, k.last_at) {
            (Some(a), Some(b)) if b > a => b.since(a) as f64 / 1000.0,
            _ => 0.0,
        };
        if k.after_end > 0 {
            violation_count += k.after_end;
            violations.push(format!(
                "{} sends on {} for cascades already ended",
                k.after_end,
                c.as_str()
            ));
        }
        r.carriers.insert(
            c.as_str().to_string(),
            CarrierStats {
                limit_per_sec: d.scenario.policy.rate_limit(c.as_str()),
                hidden_capacity_per_sec: capacity,
                peak_per_sec: k.peak_per_sec,
                throttled_429: k.throttled_429,
                offered: k.offered,
                accepted: k.accepted,
                throughput_per_sec: if span > 0.0 {
                    (k.accepted.saturating_sub(1)) as f64 / span
                } else {
                    0.0
                },
                final_rate_per_sec: rates.get(c.as_str()).copied().unwrap_or(0.0),
                sent_after_end: k.after_end,
            },
        );
    }
    r.audit_entries = d.store.audit_len() as u64;
    d.store.for_each_audit(|e| {
        if let Some(c) = e.contact_check {
            let name = serde_json::to_value(c)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default();
            *r.contact_checks.entry(name).or_default() += 1;
        }
    });
    match d.store.verify_audit() {
        Ok(_) => r.audit_chains_verified = true,
        Err(b) => {
            violation_count += 1;
            violations.push(format!(
                "audit chain broken at entry {} ({} seq {}): {}",
                b.line, b.cascade, b.seq, b.problem
            ));
        }
    }
    r.stale_events = obs.stale_events.load(Ordering::Relaxed);
    r.invariant_violations = violation_count;
    r.violations = violations;
    r.virtual_secs = end.since(start) as f64 / 1000.0;
    r.wall_secs = wall.elapsed().as_secs_f64();
    r
}

fn dur(secs: f64) -> String {
    if secs < 60.0 {
        format!("{secs:.1}s")
    } else if secs < 3600.0 {
        format!("{}m{:02}s", (secs / 60.0) as u64, (secs % 60.0) as u64)
    } else {
        format!(
            "{}h{:02}m",
            (secs / 3600.0) as u64,
            ((secs % 3600.0) / 60.0) as u64
        )
    }
}

impl DrillReport {
    /// The readable report.
    pub fn render(&self) -> String {
        let mut s = String::new();
        let pct = |n: u64| {
            if self.stakeholders == 0 {
                0.0
            } else {
                100.0 * n as f64 / self.stakeholders as f64
            }
        };
        let _ = writeln!(
            s,
            "Muster drill: {} ({} {}, seed {})",
            self.scenario, self.incident, self.severity, self.seed
        );
        let _ = writeln!(
            s,
            "  {} stakeholders, {} manager escalation cascade(s); {} of virtual time in {:.2}s of wall time",
            self.stakeholders,
            self.manager_cascades,
            dur(self.virtual_secs),
            self.wall_secs
        );
        let f = &self.final_states;
        let _ = writeln!(s, "\nOutcome");
        let _ = writeln!(
            s,
            "  acknowledged   {:>8}  {:5.1}%",
            f.acknowledged,
            pct(f.acknowledged)
        );
        let _ = writeln!(
            s,
            "  escalated      {:>8}  {:5.1}%  (CASCADE_FAILURE, on-call manager notified)",
            f.escalated,
            pct(f.escalated)
        );
        let _ = writeln!(
            s,
            "  cancelled      {:>8}  {:5.1}%",
            f.cancelled,
            pct(f.cancelled)
        );
        let _ = writeln!(
            s,
            "  still active   {:>8}  {:5.1}%",
            f.active,
            pct(f.active)
        );
        let p = |x: &Percentiles| {
            format!(
                "p50 {:>8}  p95 {:>8}  max {:>8}  (n={})",
                dur(x.p50),
                dur(x.p95),
                dur(x.max),
                x.count
            )
        };
        let _ = writeln!(s, "\nTime from trigger");
        let _ = writeln!(s, "  first contact  {}", p(&self.first_contact_secs));
        let _ = writeln!(s, "  acknowledged   {}", p(&self.ack_secs));
        let _ = writeln!(
            s,
            "\nChannels   attempts  delivered   failed  timeouts  throttled  acked"
        );
        for (c, v) in &self.channels {
            let _ = writeln!(
                s,
                "  {:<7} {:>10} {:>10} {:>8} {:>9} {:>10} {:>6}",
                c.as_str(),
                v.attempts,
                v.delivered,
                v.failed,
                v.timeouts,
                v.throttled,
                v.acknowledged
            );
        }
        let _ = writeln!(
            s,
            "\nCarriers   told limit  hidden capacity  peak/s   429s  throughput  final rate"
        );
        for (name, c) in &self.carriers {
            let cap = c
                .hidden_capacity_per_sec
                .map(|x| format!("{x}/s"))
                .unwrap_or_else(|| "none".into());
            let _ = writeln!(
                s,
                "  {:<7} {:>10} {:>16} {:>7} {:>6} {:>9.1}/s {:>9.1}/s",
                name,
                format!("{}/s", c.limit_per_sec),
                cap,
                c.peak_per_sec,
                c.throttled_429,
                c.throughput_per_sec,
                c.final_rate_per_sec
            );
        }
        let _ = writeln!(
            s,
            "\nAudit      {} entries; hash chains {}",
            self.audit_entries,
            if self.audit_chains_verified {
                "verified"
            } else {
                "BROKEN"
            }
        );
        if !self.contact_checks.is_empty() {
            let parts: Vec<String> = self
                .contact_checks
                .iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect();
            let _ = writeln!(s, "Contacts   live lookups: {}", parts.join(", "));
        }
        if self.needs_review > 0 {
            let _ = writeln!(
                s,
                "Review     {} cascades flagged needs_review",
                self.needs_review
            );
        }
        if self.invariant_violations == 0 {
            let _ = writeln!(
                s,
                "Invariants all held (0 violations); {} stale events audited and ignored",
                self.stale_events
            );
        } else {
            let _ = writeln!(s, "Invariants {} VIOLATIONS:", self.invariant_violations);
            for v in &self.violations {
                let _ = writeln!(s, "  - {v}");
            }
        }
        if self.timed_out {
            let _ = writeln!(
                s,
                "Stopped at the scenario's max_virtual bound with work still pending."
            );
        }
        for e in &self.errors {
            let _ = writeln!(s, "Error: {e}");
        }
        s
    }

    /// A drill passes when every invariant held, every stakeholder ended and nothing failed.
    pub fn passed(&self) -> bool {
        self.invariant_violations == 0
            && self.final_states.active == 0
            && self.errors.is_empty()
            && !self.timed_out
    }
}
