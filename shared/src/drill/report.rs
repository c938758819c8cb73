//! The drill report: outcome, timings, channels, carriers, invariants.

use super::run::Drill;
use crate::domain::{Channel, Ts};
use crate::engine::{CascadeStatus, invariants};
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

/// One incident of a drill with several (`[[incidents]]`): its members'
/// cascades as they ended, and first contacts from its own trigger.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct IncidentOutcome {
    pub incident: String,
    pub severity: String,
    /// Members of its group when it was triggered.
    pub members: u64,
    pub final_states: FinalStates,
    /// The last member's first contact, in seconds after its trigger.
    pub last_first_contact_secs: f64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Percentiles {
    pub count: u64,
    pub p50: f64,
    pub p95: f64,
    pub max: f64,
}

/// Seconds as `12.3s`, `4m05s` or `2h46m`.
fn short_secs(secs: f64) -> String {
    let whole = secs.round() as u64;
    match whole {
        0..60 => format!("{secs:.1}s"),
        60..3600 => format!("{}m{:02}s", whole / 60, whole % 60),
        _ => format!("{}h{:02}m", whole / 3600, whole % 3600 / 60),
    }
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

/// What was still on the agenda when the drill's window ended: the
/// system's own jobs and timers (a timeout), and what people and carriers
/// were still to do (acknowledgements and receipts after the window, which
/// end nothing: every cascade may already have ended).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct LeftAtEnd {
    pub work: u64,
    pub acks: u64,
    pub receipts: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ChannelStats {
    pub attempts: u64,
    pub delivered: u64,
    pub failed: u64,
    pub timeouts: u64,
    pub throttled: u64,
    pub acknowledged: u64,
    /// Each send's wait in its endpoint's queue, from ready to offered to
    /// the carrier.
    pub queue_wait_secs: Percentiles,
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
    /// Accepted sends per second over the endpoint's first backlog window
    /// (from its first send until sends stopped waiting for it), which is
    /// what the carrier could take; over the whole run when nothing waited.
    pub throughput_per_sec: f64,
    /// The limiter's pacing rate at the end.
    pub final_rate_per_sec: f64,
    /// Sends that reached the carrier for a cascade already ended (must be 0).
    pub sent_after_end: u64,
}

/// What became of one update (or the all-clear), from the audit trail.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct UpdateOutcome {
    /// "update 1", ..., or "the all-clear".
    pub update: String,
    /// People whose carrier took it (UPDATE_SENT).
    pub sent: u64,
    /// People it could not go to (UPDATE_FAILED: refused, or only a phone).
    pub not_sent: u64,
}

/// The updates of `incident`, counted per update from its members'
/// UPDATE_SENT and UPDATE_FAILED entries. Violation: an all-clear posted
/// that a member a message reached never had recorded.
fn update_outcomes(
    incident: &crate::domain::IncidentId,
    all_clear: bool,
    entries: &[&crate::audit::AuditEntry],
    records: &[&crate::ports::CascadeRecord],
    violations: &mut Vec<String>,
) -> Vec<UpdateOutcome> {
    use crate::engine::{AuditKind, Route};
    let mut by: BTreeMap<(bool, u32), UpdateOutcome> = BTreeMap::new();
    let mut cleared = std::collections::HashSet::new();
    for e in entries
        .iter()
        .filter(|e| e.incident == *incident && e.route == Route::Member)
    {
        let sent = match e.record.kind {
            AuditKind::UpdateSent => true,
            AuditKind::UpdateFailed => false,
            _ => continue,
        };
        let note = e.record.note.as_deref().unwrap_or_default();
        let name = note.split(':').next().unwrap_or_default().to_string();
        let is_all_clear = name == "the all-clear";
        if is_all_clear {
            cleared.insert(e.stakeholder.clone());
        }
        let n = name
            .strip_prefix("update ")
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        let o = by
            .entry((is_all_clear, n))
            .or_insert_with(|| UpdateOutcome {
                update: name,
                ..Default::default()
            });
        if sent {
            o.sent += 1;
        } else {
            o.not_sent += 1;
        }
    }
    if all_clear {
        let missed = records
            .iter()
            .filter(|r| {
                let k = &r.cascade.key;
                k.incident == *incident
                    && k.route == Route::Member
                    && r.cascade.first_contact_at.is_some()
                    && !cleared.contains(&k.stakeholder)
            })
            .count();
        if missed > 0 {
            violations.push(format!(
                "incident {incident}: {missed} members a message reached have no all-clear recorded"
            ));
        }
    }
    by.into_values().collect()
}

/// A quorum's outcome, from the audit trail (and checked against what the
/// incident recorded).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct QuorumOutcome {
    pub required: crate::domain::Quorum,
    /// From the trigger to the acknowledgement that met it, by the audit.
    pub reached_after_secs: Option<f64>,
    /// From the trigger to the moment the incident recorded.
    pub recorded_after_secs: Option<f64>,
    /// Members acknowledged at the end.
    pub acknowledged: u64,
    /// Member cascades cancelled because the quorum was reached (`stopOnQuorum`).
    pub stopped: u64,
}

/// The quorum of `incident` from its audit entries (time order per
/// cascade; sorted here by time): when the acknowledgements first met it,
/// and how many cascades its stop cancelled. Violations: a moment recorded
/// before the audit met it, or never met by the audit.
fn quorum_outcome(
    trigger: &crate::domain::Trigger,
    entries: &[&crate::audit::AuditEntry],
    records: &[&crate::ports::CascadeRecord],
    recorded: Option<Ts>,
    triggered: Ts,
    violations: &mut Vec<String>,
) -> Option<QuorumOutcome> {
    use crate::engine::{AuditKind, Route};
    let q = trigger.quorum.as_ref()?;
    let id = &trigger.incident_id;
    let tier: std::collections::HashMap<_, _> = records
        .iter()
        .filter(|r| r.cascade.key.incident == *id && r.cascade.key.route == Route::Member)
        .map(|r| (r.cascade.key.stakeholder.clone(), r.cascade.tier))
        .collect();
    let mut acks: Vec<_> = entries
        .iter()
        .filter(|e| {
            e.incident == *id
                && e.route == Route::Member
                && e.record.kind == AuditKind::Acknowledged
        })
        .map(|e| (e.at, e.stakeholder.clone()))
        .collect();
    acks.sort();
    let (mut all, mut by_tier) = (0u64, [0u64; crate::domain::Tier::COUNT]);
    let mut reached = None;
    for (at, who) in &acks {
        all += 1;
        if let Some(t) = tier.get(who) {
            by_tier[t.index()] += 1;
        }
        if reached.is_none() && q.met(all, by_tier) {
            reached = Some(*at);
        }
    }
    let stopped = entries
        .iter()
        .filter(|e| {
            e.incident == *id
                && e.record.kind == AuditKind::Cancelled
                && e.record
                    .note
                    .as_deref()
                    .is_some_and(|n| n.starts_with("quorum reached"))
        })
        .count() as u64;
    match (reached, recorded) {
        (None, Some(_)) => violations.push(format!(
            "incident {id} recorded its quorum reached, but its audit never meets it"
        )),
        (Some(a), Some(r)) if r < a => violations.push(format!(
            "incident {id} recorded its quorum reached {} ms before the acknowledgement that met it",
            a.since(r)
        )),
        (None, None) if stopped > 0 => violations.push(format!(
            "incident {id}: {stopped} cascades cancelled for a quorum never reached"
        )),
        _ => {}
    }
    let secs = |t: Ts| t.since(triggered) as f64 / 1000.0;
    Some(QuorumOutcome {
        required: q.clone(),
        reached_after_secs: reached.map(secs),
        recorded_after_secs: recorded.map(secs),
        acknowledged: all,
        stopped,
    })
}

/// What the escalations did, counted from the audit trail.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct EscalationSummary {
    /// Members whose cascade ended in CASCADE_FAILURE.
    pub failures: u64,
    /// ... acknowledged by someone on their escalation chain.
    pub acknowledged: u64,
    /// ... who acknowledged after all, so their escalation was withdrawn.
    pub withdrawn: u64,
    /// ... whose chain ended with nobody acknowledging (ESCALATION_UNDELIVERED; goal 0).
    pub undelivered: u64,
    /// ... cancelled with the incident.
    pub cancelled: u64,
    /// ... still open when the drill ended.
    pub open: u64,
    /// Failures named in a message a carrier accepted.
    pub named: u64,
    /// From each failure to the first send for it offered to a carrier.
    pub first_offer_secs: Percentiles,
    /// From each failure to the first accepted message naming it.
    pub first_named_secs: Percentiles,
    /// The longest chain used (1: the on-call manager only).
    pub deepest_level: u32,
    /// Of the escalations, those of an answer that does not acknowledge
    /// (RESPONDED) rather than a failure.
    pub responded: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct DrillReport {
    pub scenario: String,
    pub seed: u64,
    pub incident: String,
    pub severity: String,
    pub stakeholders: u64,
    /// Escalation cascades: one per (failed person, person told).
    pub escalation_cascades: u64,
    pub final_states: FinalStates,
    pub first_contact_secs: Percentiles,
    pub ack_secs: Percentiles,
    pub channels: BTreeMap<Channel, ChannelStats>,
    pub carriers: BTreeMap<String, CarrierStats>,
    pub cascade_failures: u64,
    /// Members whose last answer was each of the incident's own answers
    /// (by key), from the audit trail.
    pub answers: BTreeMap<String, u64>,
    /// The first incident's quorum, when its trigger sets one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quorum: Option<QuorumOutcome>,
    /// With `messageTemplates`: members of the first incident by the
    /// locale of the message they were sent ("default": the
    /// `messageTemplate`), from their CASCADE_STARTED entries.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub languages: BTreeMap<String, u64>,
    /// Members whose first message their quiet hours held (CASCADE_STARTED
    /// noting it); a message taken for one of them before the end of their
    /// wait is a broken rule.
    pub quiet_held: u64,
    /// The first incident's updates and all-clear, from the audit trail.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub updates: Vec<UpdateOutcome>,
    pub escalations: EscalationSummary,
    /// Each failure's escalation, from the audit trail.
    pub escalation_stories: Vec<crate::app::EscalationStory>,
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
    /// What was still to happen when `max_virtual` ended the drill.
    pub left_at_end: LeftAtEnd,
    /// Members who had no cascade yet when the incident closed (never
    /// contacted: expansion stops at the close).
    pub unexpanded_at_close: u64,
    /// Jobs and timers the scenario's faults lost (the sweep recovers).
    pub lost_jobs: u64,
    pub lost_timers: u64,
    /// Items the scenario's faults delivered to two workers at once.
    pub concurrent_deliveries: u64,
    /// Each incident, when the drill has more than one (the first first).
    pub incidents: Vec<IncidentOutcome>,
    /// Receipts that came before their message's reference was written and
    /// were held for the send to apply (`early_receipts`).
    pub early_receipts_held: u64,
    pub steps: u64,
    pub virtual_secs: f64,
    pub wall_secs: f64,
    /// When the incident was triggered (virtual time, ms since the epoch).
    pub started_at_ms: u64,
    /// The run over time, for plots (`muster drill --html`).
    pub series: Series,
}

/// The run over time in equal buckets from the trigger (at most
/// [`Series::BUCKETS`] of them, each a whole number of seconds).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Series {
    pub bucket_secs: f64,
    /// Cumulative, at the end of each bucket: members first contacted, and
    /// members acknowledged.
    pub first_contacts: Vec<u64>,
    pub acknowledged: Vec<u64>,
    /// Per carrier: sends it accepted in each bucket.
    pub accepted: BTreeMap<String, Vec<u64>>,
    /// Cumulative: CASCADE_FAILUREs, and those acknowledged by someone told.
    pub failures: Vec<u64>,
    pub failures_acknowledged: Vec<u64>,
}

impl Series {
    pub const BUCKETS: u64 = 120;

    /// From times in ms since the trigger.
    fn of(
        first: &[u64],
        acks: &[u64],
        accepted: BTreeMap<String, Vec<u64>>,
        failures: &[u64],
        failures_acked: &[u64],
    ) -> Series {
        let horizon = first
            .iter()
            .chain(acks)
            .chain(failures)
            .chain(failures_acked)
            .chain(accepted.values().flatten())
            .copied()
            .max()
            .unwrap_or(0)
            .max(1_000);
        let bucket = horizon.div_ceil(Self::BUCKETS).div_ceil(1_000).max(1) * 1_000;
        let n = horizon.div_ceil(bucket).max(1) as usize;
        let per_bucket = |times: &[u64]| {
            let mut v = vec![0u64; n];
            for t in times {
                v[((t / bucket) as usize).min(n - 1)] += 1;
            }
            v
        };
        let running = |times: &[u64]| {
            let mut v = per_bucket(times);
            for i in 1..v.len() {
                v[i] += v[i - 1];
            }
            v
        };
        Series {
            bucket_secs: bucket as f64 / 1000.0,
            first_contacts: running(first),
            acknowledged: running(acks),
            accepted: accepted
                .into_iter()
                .map(|(c, t)| (c, per_bucket(&t)))
                .collect(),
            failures: running(failures),
            failures_acknowledged: running(failures_acked),
        }
    }
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
    let mut recount: BTreeMap<crate::domain::IncidentId, crate::engine::Tally> = BTreeMap::new();
    // Each incident's members, its trigger time and severity.
    let sc = &d.scenario;
    let incidents: Vec<(&crate::domain::Trigger, u64, Ts)> =
        std::iter::once((&sc.trigger, sc.members.len() as u64, start))
            .chain(
                sc.more
                    .iter()
                    .map(|m| (&m.trigger, m.members.len() as u64, start.plus(m.at))),
            )
            .collect();
    let mut outcomes: Vec<IncidentOutcome> = incidents
        .iter()
        .map(|(t, members, _)| IncidentOutcome {
            incident: t.incident_id.to_string(),
            severity: t.severity.to_string(),
            members: *members,
            ..Default::default()
        })
        .collect();
    d.store.with_cascades(|all| {
        for rec in all {
            let c = &rec.cascade;
            recount
                .entry(c.key.incident.clone())
                .or_default()
                .add(&crate::engine::Tally::of(c, rec.needs_review));
            if let Some(v) = invariants::check_final(c) {
                violation_count += 1;
                if violations.len() < 50 {
                    violations.push(v);
                }
            }
            r.needs_review += u64::from(rec.needs_review);
            if c.key.route.is_escalation() {
                r.escalation_cascades += 1;
                continue;
            }
            r.stakeholders += 1;
            // Times run from the cascade's own incident's trigger.
            let i = incidents
                .iter()
                .position(|(t, _, _)| t.incident_id == c.key.incident);
            let triggered = i.map_or(triggered, |i| incidents[i].2);
            let mut outcome = i.map(|i| &mut outcomes[i]);
            for f in [
                Some(&mut r.final_states),
                outcome.as_mut().map(|o| &mut o.final_states),
            ]
            .into_iter()
            .flatten()
            {
                match c.status {
                    CascadeStatus::Acknowledged => f.acknowledged += 1,
                    CascadeStatus::Escalated => f.escalated += 1,
                    CascadeStatus::Cancelled => f.cancelled += 1,
                    _ => f.active += 1,
                }
            }
            if c.status == CascadeStatus::Escalated {
                r.cascade_failures += 1;
            }
            if let Some(t) = c.first_contact_at {
                first.push(t.since(triggered));
                if let Some(o) = outcome {
                    o.last_first_contact_secs = o
                        .last_first_contact_secs
                        .max(t.since(triggered) as f64 / 1000.0);
                }
            }
            if c.status == CascadeStatus::Acknowledged
                && let Some(t) = c.acked_at
            {
                acks.push(t.since(triggered));
            }
        }
    });
    // The status's counts are kept as cascades change: they must be what a
    // count of the cascades gives.
    for (id, kept) in d.store.tallies() {
        if recount.get(&id).copied().unwrap_or_default() != kept {
            violation_count += 1;
            violations.truncate(49);
            violations.push(format!(
                "incident {id}: the kept status counts differ from a count of its cascades"
            ));
        }
    }
    let all_incidents = d.store.all_incidents();
    for o in &outcomes {
        let f = &o.final_states;
        let got = f.acknowledged + f.escalated + f.cancelled + f.active;
        let missing = o.members - got.min(o.members);
        // Members not yet expanded when the incident closed are never
        // contacted (expansion stops at the close): that is the close, not
        // a loss.
        let closed = all_incidents.iter().any(|i| {
            i.id().as_str() == o.incident && i.status != crate::domain::IncidentStatus::Open
        });
        if missing > 0 && closed {
            r.unexpanded_at_close += missing;
        } else if missing > 0 {
            violation_count += missing;
            violations.push(format!(
                "{missing} members of {} never got a cascade",
                o.incident
            ));
        }
    }
    if outcomes.len() > 1 {
        r.incidents = outcomes;
    }
    let (first_ms, acks_ms) = (first.clone(), acks.clone());
    r.first_contact_secs = Percentiles::of(first);
    r.ack_secs = Percentiles::of(acks);
    let mut accepted_ms = BTreeMap::new();
    let ch = obs
        .channel
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let waits = std::mem::take(&mut *obs.queue_waits.lock().unwrap_or_else(|e| e.into_inner()));
    for ((c, mut stats), waited) in Channel::ALL.into_iter().zip(ch).zip(waits) {
        stats.queue_wait_secs = Percentiles::of(waited);
        r.channels.insert(c, stats);
    }
    let rates = limiter.rates();
    let backlogs = limiter.first_backlog_end();
    for (c, k, capacity) in world.counters() {
        accepted_ms.insert(
            c.as_str().to_string(),
            k.accepted_at
                .iter()
                .map(|t| t.since(start))
                .collect::<Vec<_>>(),
        );
        // Throughput while sends were waiting for the endpoint (what it
        // could take); over the whole run when nothing ever waited.
        let end = backlogs
            .get(c.as_str())
            .copied()
            .filter(|b| k.first_at.is_some_and(|a| *b > a))
            .or(k.last_at);
        let (span, sent) = match (k.first_at, end) {
            (Some(a), Some(b)) if b > a => (
                b.since(a) as f64 / 1000.0,
                k.accepted_at.iter().filter(|t| **t <= b).count() as u64,
            ),
            _ => (0.0, 0),
        };
        if k.twice > 0 {
            violation_count += k.twice;
            violations.push(format!(
                "{} sends on {} of an attempt the carrier had already taken",
                k.twice,
                c.as_str()
            ));
        }
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
                    sent.saturating_sub(1) as f64 / span
                } else {
                    0.0
                },
                final_rate_per_sec: rates.get(c.as_str()).copied().unwrap_or(0.0),
                sent_after_end: k.after_end,
            },
        );
    }
    r.audit_entries = d.store.audit_len() as u64;
    // Borrowed, not copied: a run of a million people keeps millions of entries.
    let recorded = d
        .store
        .all_incidents()
        .into_iter()
        .find(|i| *i.id() == sc.trigger.incident_id)
        .and_then(|i| i.quorum_reached_at);
    let mut more_violations = Vec::new();
    let found = d.store.with_all(|entries, records| {
        {
            let mut held = std::collections::HashMap::new();
            for e in entries.iter().filter(|e| {
                e.route == crate::engine::Route::Member
                    && e.record.kind == crate::engine::AuditKind::CascadeStarted
                    && e.record
                        .note
                        .as_deref()
                        .is_some_and(|n| n.starts_with("quiet hours"))
            }) {
                let until = e.at.plus(e.record.wait_ms.unwrap_or_default());
                held.insert((e.incident.clone(), e.stakeholder.clone()), until);
            }
            r.quiet_held = held.len() as u64;
            let early = entries
                .iter()
                .filter(|e| {
                    e.route == crate::engine::Route::Member
                        && e.record.kind == crate::engine::AuditKind::SendAccepted
                        && held
                            .get(&(e.incident.clone(), e.stakeholder.clone()))
                            .is_some_and(|until| e.at < *until)
                })
                .count();
            if early > 0 {
                more_violations.push(format!(
                    "{early} messages taken by a carrier during their person's quiet hours"
                ));
            }
        }
        if !sc.trigger.message_templates.is_empty() {
            for e in entries.iter().filter(|e| {
                e.incident == sc.trigger.incident_id
                    && e.route == crate::engine::Route::Member
                    && e.record.kind == crate::engine::AuditKind::CascadeStarted
            }) {
                let l = e.locale.clone().unwrap_or_else(|| "default".into());
                *r.languages.entry(l).or_default() += 1;
            }
        }
        r.updates = update_outcomes(
            &sc.trigger.incident_id,
            sc.all_clear.is_some() && !timed_out,
            entries,
            records,
            &mut more_violations,
        );
        r.quorum = quorum_outcome(
            &sc.trigger,
            entries,
            records,
            recorded,
            start,
            &mut more_violations,
        );
        let stories = crate::app::stories(entries.iter().copied());
        let found = escalation_checks(&stories, entries, records, &d.scenario.policy);
        r.escalation_stories = stories;
        found
    });
    r.escalations = summarize(&r.escalation_stories);
    for v in more_violations {
        violation_count += 1;
        violations.truncate(49);
        violations.push(v);
    }
    // A non-acknowledging answer ends a cascade escalated, but it is not a
    // failure: the failures are the audit's CASCADE_FAILUREs.
    {
        let mut failed = std::collections::HashSet::new();
        d.store.for_each_audit(|e| {
            if e.route == crate::engine::Route::Member
                && e.record.kind == crate::engine::AuditKind::CascadeFailure
            {
                failed.insert((e.incident.clone(), e.stakeholder.clone()));
            }
        });
        r.cascade_failures = failed.len() as u64;
    }
    {
        let mut last: std::collections::HashMap<
            (crate::domain::IncidentId, crate::domain::StakeholderId),
            String,
        > = std::collections::HashMap::new();
        d.store.for_each_audit(|e| {
            if e.route == crate::engine::Route::Member
                && let Some(k) = &e.record.response
                && matches!(
                    e.record.kind,
                    crate::engine::AuditKind::Acknowledged
                        | crate::engine::AuditKind::Responded
                        | crate::engine::AuditKind::AckAfterEnd
                )
            {
                last.insert((e.incident.clone(), e.stakeholder.clone()), k.clone());
            }
        });
        for k in last.into_values() {
            *r.answers.entry(k).or_default() += 1;
        }
    }
    for v in found {
        violation_count += 1;
        if violations.len() < 50 {
            violations.push(v);
        }
    }
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
    r.started_at_ms = start.0;
    let failed: Vec<u64> = r
        .escalation_stories
        .iter()
        .map(|st| st.failed_at.since(start))
        .collect();
    let failed_acked: Vec<u64> = r
        .escalation_stories
        .iter()
        .filter_map(|st| match st.outcome {
            crate::app::EscalationOutcome::Acknowledged { at, .. } => Some(at.since(start)),
            _ => None,
        })
        .collect();
    r.series = Series::of(&first_ms, &acks_ms, accepted_ms, &failed, &failed_acked);
    r.wall_secs = wall.elapsed().as_secs_f64();
    r
}

/// The escalation rules, checked over a whole run from its audit trail and
/// final records:
/// - every failure is named in a message a carrier accepted, or
///   acknowledged by someone told (a message whose acceptance never reached
///   Muster still reached them), or withdrawn (the person acknowledged
///   after all), or recorded as undelivered, or cancelled with the
///   incident, unless it is still open;
/// - no escalation chain names anyone twice;
/// - no person gets two calls, or two SMS, from two of their cascades
///   within the earlier one's hold.
pub fn escalation_checks(
    stories: &[crate::app::EscalationStory],
    entries: &[&crate::audit::AuditEntry],
    records: &[&crate::ports::CascadeRecord],
    policy: &crate::policy::Policy,
) -> Vec<String> {
    use crate::app::EscalationOutcome as O;
    use crate::engine::{AuditKind, CascadeKey, hold_delay};
    use std::collections::HashMap;
    let mut v = Vec::new();
    for st in stories {
        let accounted = st.first_named_ms.is_some()
            || matches!(
                st.outcome,
                O::Acknowledged { .. } | O::Undelivered { .. } | O::Withdrawn { .. } | O::Cancelled
            );
        if st.outcome == O::Open {
            v.push(format!(
                "the escalation of {}'s failure was still open at the end",
                st.about
            ));
        }
        if !accounted {
            v.push(format!(
                "the failure of {} was never named in an accepted message, acknowledged, withdrawn or recorded as undelivered",
                st.about
            ));
        }
    }
    let mut holds: HashMap<&CascadeKey, u64> = HashMap::new();
    for r in records {
        holds.insert(&r.cascade.key, hold_delay(&r.cascade, policy));
        if r.cascade.escalation_pending() {
            v.push(format!(
                "the failure of {} was never taken up (nobody told next, nothing recorded)",
                r.cascade.key
            ));
        }
        if let Some(e) = &r.escalation {
            let mut seen = std::collections::HashSet::new();
            if let Some(dup) = e.chain.iter().find(|id| !seen.insert(*id)) {
                v.push(format!(
                    "the escalation chain of {} names {dup} twice",
                    r.cascade.key
                ));
            }
        }
    }
    // Accepted calls and SMS per (incident, person, channel), in time order.
    let mut sends: HashMap<
        (
            &crate::domain::IncidentId,
            &crate::domain::StakeholderId,
            Channel,
        ),
        Vec<&crate::audit::AuditEntry>,
    > = HashMap::new();
    for e in entries {
        if e.record.kind == AuditKind::SendAccepted
            && let Some(c) = e.record.channel
            && crate::ports::guarded(c)
        {
            sends
                .entry((&e.incident, &e.stakeholder, c))
                .or_default()
                .push(e);
        }
    }
    for ((_, who, channel), mut list) in sends {
        list.sort_by_key(|e| e.at);
        for pair in list.windows(2) {
            let (a, b) = (pair[0], pair[1]);
            if a.route == b.route {
                continue;
            }
            let hold = holds.get(&a.key()).copied().unwrap_or(0);
            if b.at.since(a.at) < hold {
                v.push(format!(
                    "{who} got two {} messages {} ms apart from two cascades ({} and {}), within the {} ms hold",
                    channel.as_str(),
                    b.at.since(a.at),
                    a.route.encode(),
                    b.route.encode(),
                    hold
                ));
            }
        }
    }
    v
}

fn summarize(stories: &[crate::app::EscalationStory]) -> EscalationSummary {
    use crate::app::EscalationOutcome as O;
    let mut s = EscalationSummary {
        failures: stories.len() as u64,
        ..Default::default()
    };
    let (mut offer, mut named) = (Vec::new(), Vec::new());
    for st in stories {
        s.responded += u64::from(st.answered.is_some());
        match st.outcome {
            O::Acknowledged { .. } => s.acknowledged += 1,
            O::Withdrawn { .. } => s.withdrawn += 1,
            O::Undelivered { .. } => s.undelivered += 1,
            O::Cancelled => s.cancelled += 1,
            O::Open => s.open += 1,
        }
        offer.extend(st.first_offer_ms);
        named.extend(st.first_named_ms);
        s.deepest_level = s.deepest_level.max(st.told.len() as u32);
    }
    s.named = named.len() as u64;
    s.first_offer_secs = Percentiles::of(offer);
    s.first_named_secs = Percentiles::of(named);
    s
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
            "  {} stakeholders, {} escalation cascade(s); {} of virtual time in {:.2}s of wall time",
            self.stakeholders,
            self.escalation_cascades,
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
        let e = &self.escalations;
        let responded = if e.responded > 0 {
            format!(
                "{} RESPONDED, {} CASCADE_FAILURE; ",
                e.responded, self.cascade_failures
            )
        } else {
            "CASCADE_FAILURE: ".to_string()
        };
        let _ = writeln!(
            s,
            "  escalated      {:>8}  {:5.1}%  ({responded}{} acknowledged by the person told, {} withdrawn, {} reached nobody)",
            f.escalated,
            pct(f.escalated),
            e.acknowledged,
            e.withdrawn,
            e.undelivered
        );
        if !self.answers.is_empty() {
            let counts: Vec<String> = self
                .answers
                .iter()
                .map(|(k, n)| format!("{k}: {n}"))
                .collect();
            let _ = writeln!(
                s,
                "  answers        {}  (each member's last answer, by key)",
                counts.join(", ")
            );
        }
        let _ = writeln!(
            s,
            "  cancelled      {:>8}  {:5.1}%",
            f.cancelled,
            pct(f.cancelled)
        );
        if self.quiet_held > 0 {
            let _ = writeln!(
                s,
                "  quiet hours    {:>8}  first messages held until the person's window ended",
                self.quiet_held
            );
        }
        if !self.languages.is_empty() {
            let counts: Vec<String> = self
                .languages
                .iter()
                .map(|(l, n)| format!("{l}: {n}"))
                .collect();
            let _ = writeln!(
                s,
                "  languages      {}  (members by the message they were sent)",
                counts.join(", ")
            );
        }
        for u in &self.updates {
            let _ = writeln!(
                s,
                "  {:<14} {:>8} sent, {} could not go (only a phone, or refused)",
                u.update, u.sent, u.not_sent
            );
        }
        if let Some(q) = &self.quorum {
            let mut need = Vec::new();
            if let Some(n) = q.required.count {
                need.push(format!("{n} in all"));
            }
            for (t, n) in &q.required.tiers {
                need.push(format!("{n} of tier {t}"));
            }
            let when = match q.reached_after_secs {
                Some(t) => format!("reached {} after the trigger", dur(t)),
                None => "not reached".to_string(),
            };
            let stopped = if q.stopped > 0 {
                format!("; {} cascades still open were stopped there", q.stopped)
            } else {
                String::new()
            };
            let _ = writeln!(
                s,
                "  quorum         {}: {when}{stopped}",
                need.join(" and ")
            );
        }
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
        if !self.incidents.is_empty() {
            let _ = writeln!(
                s,
                "\nIncidents          severity  members  acknowledged  escalated  cancelled  active  last first contact"
            );
            for o in &self.incidents {
                let f = &o.final_states;
                let _ = writeln!(
                    s,
                    "  {:<18} {:<4} {:>11} {:>13} {:>10} {:>10} {:>7}  {:>10}",
                    o.incident,
                    o.severity,
                    o.members,
                    f.acknowledged,
                    f.escalated,
                    f.cancelled,
                    f.active,
                    dur(o.last_first_contact_secs)
                );
            }
        }
        let _ = writeln!(s, "\nTime from trigger");
        let _ = writeln!(s, "  first contact  {}", p(&self.first_contact_secs));
        let _ = writeln!(s, "  acknowledged   {}", p(&self.ack_secs));
        if e.failures > 0 {
            self.render_escalations(&mut s, &p);
        }
        let _ = writeln!(
            s,
            "\nChannels   attempts  delivered   failed  timeouts  throttled  acked   queue wait p50    p95    max"
        );
        for (c, v) in &self.channels {
            let w = &v.queue_wait_secs;
            let _ = writeln!(
                s,
                "  {:<7} {:>10} {:>10} {:>8} {:>9} {:>10} {:>6}   {:>14} {:>6} {:>6}",
                c.as_str(),
                v.attempts,
                v.delivered,
                v.failed,
                v.timeouts,
                v.throttled,
                v.acknowledged,
                short_secs(w.p50),
                short_secs(w.p95),
                short_secs(w.max)
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
        let l = self.left_at_end;
        if self.timed_out {
            let _ = writeln!(
                s,
                "Stopped at the scenario's max_virtual bound with {} jobs and timers still pending ({} cascades active).",
                l.work, self.final_states.active
            );
        }
        if self.unexpanded_at_close > 0 {
            let _ = writeln!(
                s,
                "Closed before {} members had a cascade: they were never contacted.",
                self.unexpanded_at_close
            );
        }
        if l.acks + l.receipts > 0 {
            let _ = writeln!(
                s,
                "After the window: {} acknowledgements and {} delivery receipts still to come (recorded as late if they came; no cascade waits for them).",
                l.acks, l.receipts
            );
        }
        for e in &self.errors {
            let _ = writeln!(s, "Error: {e}");
        }
        s
    }

    fn render_escalations(&self, s: &mut String, p: &dyn Fn(&Percentiles) -> String) {
        use crate::app::EscalationOutcome as O;
        let e = &self.escalations;
        let _ = writeln!(s, "\nEscalations (from the audit trail)");
        let what = if e.responded > 0 {
            format!(
                "{} escalated ({} failures, {} answers that do not acknowledge, named at once)",
                e.failures,
                e.failures - e.responded,
                e.responded
            )
        } else {
            format!("{} failures", e.failures)
        };
        let _ = writeln!(
            s,
            "  {what}: {} acknowledged, {} withdrawn, {} reached nobody, {} cancelled, {} still open; chain depth up to {}",
            e.acknowledged, e.withdrawn, e.undelivered, e.cancelled, e.open, e.deepest_level
        );
        let _ = writeln!(s, "  first send offered   {}", p(&e.first_offer_secs));
        let _ = writeln!(s, "  first message naming {}", p(&e.first_named_secs));
        const SHOWN: usize = 10;
        let start = self.started_at();
        for st in self.escalation_stories.iter().take(SHOWN) {
            let at = |t: Ts| dur(t.since(start) as f64 / 1000.0);
            let told: Vec<String> = st
                .told
                .iter()
                .map(|t| {
                    let sent = match t.sent.first() {
                        Some((c, when)) => format!("{} {}", c.as_str(), at(*when)),
                        None => "no message accepted".into(),
                    };
                    match t.acknowledged {
                        Some((c, when)) => {
                            format!(
                                "{} ({sent}, acknowledged on {} {})",
                                t.to,
                                c.as_str(),
                                at(when)
                            )
                        }
                        None => format!("{} ({sent})", t.to),
                    }
                })
                .collect();
            let outcome = match &st.outcome {
                O::Acknowledged { .. } => String::new(),
                O::Withdrawn { at: when } => format!("; withdrawn at {}", at(*when)),
                O::Undelivered { .. } => "; REACHED NOBODY".into(),
                O::Cancelled => "; cancelled".into(),
                O::Open => "; still open".into(),
            };
            let what = match &st.answered {
                Some(k) => format!("answered {k}"),
                None => "failed".to_string(),
            };
            let _ = writeln!(
                s,
                "  {:<16} {what} {}: {}{outcome}",
                st.about.as_str(),
                at(st.failed_at),
                if told.is_empty() {
                    "nobody told".to_string()
                } else {
                    told.join(" -> ")
                }
            );
        }
        if self.escalation_stories.len() > SHOWN {
            let _ = writeln!(
                s,
                "  ... and {} more (--json has them all)",
                self.escalation_stories.len() - SHOWN
            );
        }
    }

    fn started_at(&self) -> Ts {
        Ts(self.started_at_ms)
    }

    /// A drill passes when every invariant held, every stakeholder ended and nothing failed.
    pub fn passed(&self) -> bool {
        self.invariant_violations == 0
            && self.final_states.active == 0
            && self.errors.is_empty()
            && !self.timed_out
    }
}
