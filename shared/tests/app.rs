//! Use cases against the memory adapters, driven by hand: trigger
//! idempotency, close, stale jobs, receipts, timers and the sweep.

use async_trait::async_trait;
use futures::executor::block_on;
use muster::Error;
use muster::adapters::memory::{
    Agenda, Item, MemoryDirectory, MemoryQueue, MemoryStore, SeededIds, VirtualClock, embedded,
};
use muster::app::{self, ReceiptEvent, ReceiptOutcome};
use muster::domain::*;
use muster::engine::{AuditKind, CascadeKey, CascadeStatus, Event, ReceiptStatus, Route};
use muster::policy::Policy;
use muster::ports::*;
use std::sync::{Arc, Mutex};

/// A carrier that accepts everything and remembers what it was given.
#[derive(Default)]
struct Recorder {
    sent: Mutex<Vec<OutboundMessage>>,
}

struct Rec(Arc<Recorder>, &'static str);

#[async_trait]
impl ChannelSender for Rec {
    fn endpoint(&self) -> &str {
        self.1
    }
    async fn send(&self, msg: &OutboundMessage) -> Result<Accepted, SendError> {
        let mut g = self.0.sent.lock().unwrap_or_else(|e| e.into_inner());
        g.push(msg.clone());
        Ok(Accepted {
            provider_message_id: format!("m-{}", g.len()),
        })
    }
}

struct Env {
    deps: Deps,
    clock: Arc<VirtualClock>,
    agenda: Arc<Agenda<()>>,
    store: Arc<MemoryStore>,
    carrier: Arc<Recorder>,
}

fn person(id: &str, n: u32) -> Stakeholder {
    let contacts = ContactMethods {
        phone: PhoneNumber::parse(&format!("+1212555{:04}", 100 + n)).ok(),
        email: EmailAddress::parse(&format!("{id}@example.com")).ok(),
        ..Default::default()
    };
    Stakeholder::new(
        StakeholderId::parse(id).unwrap_or_else(|e| panic!("{e}")),
        id,
        Tier::TWO,
        contacts,
    )
}

fn env(members: u32) -> Env {
    let clock = VirtualClock::new(Ts::from_secs(1_700_000_000));
    let agenda: Arc<Agenda<()>> = Agenda::new(clock.clone());
    let store = Arc::new(MemoryStore::new());
    let mut people: Vec<_> = (0..members).map(|i| person(&format!("p{i}"), i)).collect();
    people.push(person("boss", 9999));
    let group = Group {
        id: GroupId::parse("ops").unwrap_or_else(|e| panic!("{e}")),
        name: "Ops".into(),
        members: people
            .iter()
            .take(members as usize)
            .map(|p| p.id.clone())
            .collect(),
        on_call_manager: StakeholderId::parse("boss").ok(),
        escalation_channels: vec![],
        idp: None,
    };
    let carrier = Arc::new(Recorder::default());
    let policy = Arc::new(Policy::default());
    let directory = Arc::new(MemoryDirectory::new(vec![group], people));
    let senders = Senders {
        voice: Arc::new(Rec(carrier.clone(), "voice")),
        sms: Arc::new(Rec(carrier.clone(), "sms")),
        email: Arc::new(Rec(carrier.clone(), "email")),
        push: Arc::new(Rec(carrier.clone(), "push")),
    };
    let ids = Arc::new(SeededIds::new(1));
    let deps = embedded(
        policy,
        &agenda,
        store.clone(),
        directory,
        senders,
        clock.clone(),
        ids,
    );
    Env {
        deps,
        clock,
        agenda,
        store,
        carrier,
    }
}

fn trigger(id: &str, message: &str) -> Trigger {
    Trigger::from_json(&serde_json::json!({
        "incidentId": id, "severity": "P1", "stakeholderGroupId": "ops", "messageTemplate": message
    }))
    .unwrap_or_else(|e| panic!("{e:?}"))
}

impl Env {
    /// Processes jobs only (no timers) due within the next second, moving
    /// the clock to each (sends are paced by the rate limiter).
    fn run_jobs(&self) {
        let mut later = Vec::new();
        let horizon = self.clock_now().plus(1_000);
        while let Some((at, item)) = self.agenda.pop_due(horizon) {
            match item {
                Item::Job(j) => {
                    self.clock.set(at);
                    block_on(app::dispatch(&self.deps, j)).unwrap_or_else(|e| panic!("{e}"))
                }
                other => later.push((at, other)),
            }
        }
        for (at, i) in later {
            self.agenda.push(at, i);
        }
    }
    /// Processes everything due up to `until`, moving the clock.
    fn run_until(&self, until: Ts) {
        let run = muster::embedded::run_virtual(
            &self.deps,
            &self.agenda,
            &self.clock,
            until,
            async |_| {},
        );
        block_on(run).unwrap_or_else(|e| panic!("{e}"));
        self.clock.set(until);
    }
    fn clock_now(&self) -> Ts {
        self.deps.clock.now()
    }
    fn cascades(&self, id: &str) -> Vec<CascadeRecord> {
        let id = IncidentId::parse(id).unwrap_or_else(|e| panic!("{e}"));
        block_on(self.deps.cascades.list_cascades(&id, None, 10_000))
            .map(|p| p.items)
            .unwrap_or_default()
    }
    fn key(&self, incident: &str, who: &str) -> CascadeKey {
        CascadeKey {
            incident: IncidentId::parse(incident).unwrap_or_else(|e| panic!("{e}")),
            stakeholder: StakeholderId::parse(who).unwrap_or_else(|e| panic!("{e}")),
            route: Route::Member,
        }
    }
}

#[test]
fn duplicate_trigger_replays_and_starts_nothing() {
    let e = env(3);
    let first = block_on(app::trigger(&e.deps, trigger("INC-1", "Outage")))
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(!first.replay);
    assert_eq!(first.incident.cascades, 3);
    e.run_jobs();
    let sent = e.carrier.sent.lock().map(|g| g.len()).unwrap_or(0);
    assert_eq!(sent, 3);
    // A re-send from monitoring with a fresh timestamp is the same trigger.
    let mut again = trigger("INC-1", "Outage");
    again.timestamp = Some(Ts::from_secs(1_700_000_100));
    let second = block_on(app::trigger(&e.deps, again)).unwrap_or_else(|e| panic!("{e}"));
    assert!(second.replay);
    assert_eq!(second.incident, first.incident);
    e.run_jobs();
    assert_eq!(e.cascades("INC-1").len(), 3);
    assert_eq!(
        e.carrier.sent.lock().map(|g| g.len()).unwrap_or(0),
        3,
        "no second cascade"
    );
}

#[test]
fn same_incident_id_with_a_different_payload_is_a_conflict() {
    let e = env(1);
    block_on(app::trigger(&e.deps, trigger("INC-1", "Outage"))).unwrap_or_else(|e| panic!("{e}"));
    let r = block_on(app::trigger(&e.deps, trigger("INC-1", "Different text")));
    assert!(matches!(r, Err(Error::Conflict(_))), "{r:?}");
}

#[test]
fn unknown_group_is_a_validation_error_naming_the_field() {
    let e = env(1);
    let t = Trigger::from_json(
        &serde_json::json!({"incidentId": "INC-2", "severity": "P2", "stakeholderGroupId": "nobody", "messageTemplate": "x"}),
    );
    let r = block_on(app::trigger(&e.deps, t.unwrap_or_else(|e| panic!("{e:?}"))));
    match r {
        Err(Error::Validation(v)) => assert_eq!(v[0].field, "stakeholderGroupId"),
        other => panic!("{other:?}"),
    }
    assert!(
        block_on(
            e.deps
                .incidents
                .get_incident(&IncidentId::parse("INC-2").unwrap_or_else(|e| panic!("{e}")))
        )
        .ok()
        .flatten()
        .is_none()
    );
}

#[test]
fn a_storm_of_concurrent_identical_triggers_creates_one_set_of_cascades() {
    let e = env(600);
    let replays = std::sync::atomic::AtomicU64::new(0);
    std::thread::scope(|s| {
        for _ in 0..8 {
            s.spawn(|| {
                for _ in 0..125 {
                    let r = block_on(app::trigger(&e.deps, trigger("INC-STORM", "Outage")))
                        .unwrap_or_else(|e| panic!("{e}"));
                    if r.replay {
                        replays.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                }
            });
        }
    });
    assert_eq!(replays.into_inner(), 999);
    assert_eq!(
        e.agenda.jobs(),
        3,
        "600 members: three expansion jobs of 250, once"
    );
    e.run_jobs();
    assert_eq!(e.cascades("INC-STORM").len(), 600);
}

#[test]
fn close_cancels_open_cascades_and_stops_queued_sends() {
    let e = env(2);
    block_on(app::trigger(&e.deps, trigger("INC-3", "Outage"))).unwrap_or_else(|e| panic!("{e}"));
    // Expand only: the send jobs stay queued.
    let Some((_, Item::Job(expand))) = e.agenda.pop() else {
        panic!("no expansion job")
    };
    block_on(app::dispatch(&e.deps, expand)).unwrap_or_else(|e| panic!("{e}"));
    let id = IncidentId::parse("INC-3").unwrap_or_else(|e| panic!("{e}"));
    let closing = block_on(app::close(&e.deps, &id)).unwrap_or_else(|e| panic!("{e}"));
    // The close answers before cancelling anything: its jobs do that.
    assert_eq!(closing.status, IncidentStatus::Closing);
    let counts = |e: &Env| {
        block_on(app::status(&e.deps, &id, &app::StatusQuery::default()))
            .unwrap_or_else(|e| panic!("{e}"))
    };
    assert_eq!(counts(&e).counts.cancelled, 0);
    e.run_until(e.clock_now().plus(3_600_000));
    let view = counts(&e);
    assert_eq!(view.incident.status, IncidentStatus::Closed);
    assert_eq!((view.counts.cancelled, view.counts.total()), (2, 2));
    assert_eq!(
        e.carrier.sent.lock().map(|g| g.len()).unwrap_or(9),
        0,
        "nothing is sent after close"
    );
    assert!(
        e.cascades("INC-3")
            .iter()
            .all(|c| c.cascade.status == CascadeStatus::Cancelled)
    );
}

#[test]
fn duplicate_and_unknown_receipts_change_nothing() {
    let e = env(1);
    block_on(app::trigger(&e.deps, trigger("INC-4", "Outage"))).unwrap_or_else(|e| panic!("{e}"));
    e.run_jobs();
    let delivered = || ReceiptEvent::Delivery {
        provider_message_id: "m-1".into(),
        status: ReceiptStatus::Delivered,
    };
    assert_eq!(
        block_on(app::receipt(&e.deps, delivered())).ok(),
        Some(ReceiptOutcome::Applied(AuditKind::Delivered))
    );
    let before = e.cascades("INC-4")[0].cascade.clone();
    assert_eq!(
        block_on(app::receipt(&e.deps, delivered())).ok(),
        Some(ReceiptOutcome::Applied(AuditKind::StaleIgnored))
    );
    let after = e.cascades("INC-4")[0].cascade.clone();
    assert_eq!(
        (after.status, &after.in_flight),
        (before.status, &before.in_flight)
    );
    assert_eq!(
        after.version,
        before.version + 1,
        "the stale receipt is audited"
    );
    // A receipt for a message never sent is held (it might be early) and
    // changes nothing.
    let unknown = ReceiptEvent::Delivery {
        provider_message_id: "nope".into(),
        status: ReceiptStatus::Delivered,
    };
    assert_eq!(
        block_on(app::receipt(&e.deps, unknown)).ok(),
        Some(ReceiptOutcome::Held)
    );
    assert_eq!(e.cascades("INC-4")[0].cascade, after);
}

#[test]
fn ack_ends_the_cascade_and_later_timers_are_noops() {
    let e = env(1);
    block_on(app::trigger(&e.deps, trigger("INC-5", "Outage"))).unwrap_or_else(|e| panic!("{e}"));
    e.run_jobs();
    let key = e.key("INC-5", "p0");
    let ack = ReceiptEvent::Ack {
        key: key.clone(),
        channel: Channel::Voice,
        attempt: Some(1),
    };
    assert_eq!(
        block_on(app::receipt(&e.deps, ack)).ok(),
        Some(ReceiptOutcome::Applied(AuditKind::Acknowledged))
    );
    e.run_until(e.clock_now().plus(3_600_000));
    assert_eq!(
        e.carrier.sent.lock().map(|g| g.len()).unwrap_or(0),
        1,
        "nothing after the ACK"
    );
    let trail = block_on(e.deps.cascades.audit_trail(&key.incident)).unwrap_or_default();
    assert_eq!(
        trail.last().map(|t| t.record.kind),
        Some(AuditKind::Acknowledged),
        "the leftover receipt-timeout timer wrote nothing"
    );
    assert_eq!(e.agenda.len(), 0, "and it did fire");
}

#[test]
fn the_sweep_redrives_a_cascade_whose_timer_was_lost() {
    let e = env(1);
    block_on(app::trigger(&e.deps, trigger("INC-6", "Outage"))).unwrap_or_else(|e| panic!("{e}"));
    e.run_jobs();
    // Lose every armed timer.
    while e.agenda.pop().is_some() {}
    e.clock.advance(120_000 + 300_000 + 1);
    let r = block_on(app::sweep(&e.deps, None)).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((r.examined, r.redriven), (1, 1));
    let trail = block_on(
        e.deps
            .cascades
            .audit_trail(&IncidentId::parse("INC-6").unwrap_or_else(|e| panic!("{e}"))),
    )
    .unwrap_or_default();
    let last = trail.last().map(|t| {
        (
            t.record.kind,
            t.record.cause,
            t.record.note.clone().unwrap_or_default(),
        )
    });
    assert!(
        matches!(&last, Some((AuditKind::Redriven, Some(AuditKind::ChannelTimeout), n)) if n.contains("reconciliation sweep")),
        "{last:?}"
    );
    // A fresh cascade is not touched.
    let again = block_on(app::sweep(&e.deps, None)).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(again.redriven, 0);
}

#[test]
fn the_sweep_expands_again_the_members_whose_expansion_job_was_lost() {
    // 600 members: three expansion jobs. All three are lost (a crash right
    // after the trigger): nobody has a cascade. After the reconciliation
    // age, the sweep finds the members without one and expands them again;
    // the next sweep finds everyone and records the expansion complete.
    let e = env(600);
    block_on(app::trigger(&e.deps, trigger("INC-LOST", "Outage")))
        .unwrap_or_else(|e| panic!("{e}"));
    while e.agenda.pop().is_some() {}
    assert!(e.cascades("INC-LOST").is_empty());
    // Not before the reconciliation age: expansion may still be running.
    e.clock.advance(60_000);
    let early = block_on(app::sweep(&e.deps, None)).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(early.reexpanded, 0);
    e.clock.advance(300_000);
    let r = block_on(app::sweep(&e.deps, None)).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.reexpanded, 600);
    e.run_jobs();
    let cascades = e.cascades("INC-LOST");
    assert_eq!(cascades.len(), 600, "every member has a cascade");
    let id = IncidentId::parse("INC-LOST").unwrap_or_else(|e| panic!("{e}"));
    let inc = block_on(e.deps.incidents.get_incident(&id)).ok().flatten();
    assert_eq!(inc.as_ref().map(|i| i.expanded), Some(0), "not yet checked");
    // Lose one cascade's jobs again: nothing is re-expanded twice.
    while e.agenda.pop().is_some() {}
    let r = block_on(app::sweep(&e.deps, None)).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.reexpanded, 0);
    let inc = block_on(e.deps.incidents.get_incident(&id)).ok().flatten();
    assert_eq!(inc.map(|i| i.expanded), Some(600), "recorded complete");
}

#[test]
fn an_early_timer_is_rearmed_not_applied() {
    let e = env(1);
    block_on(app::trigger(&e.deps, trigger("INC-7", "Outage"))).unwrap_or_else(|e| panic!("{e}"));
    e.run_jobs();
    let key = e.key("INC-7", "p0");
    let at = e.clock_now().plus(120_000);
    let msg = TimerMsg {
        key: key.clone(),
        attempt: 1,
        kind: muster::engine::TimerKind::ReceiptTimeout,
        at,
    };
    let before = e.agenda.len();
    block_on(app::tick(&e.deps, msg)).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(e.agenda.len(), before + 1);
    let rec = block_on(e.deps.cascades.get_cascade(&key))
        .ok()
        .flatten()
        .unwrap_or_else(|| panic!("no cascade"));
    assert_eq!(rec.audit_seq, 2, "no transition for an early timer");
}

#[test]
fn stale_versions_are_typed_conflicts() {
    let e = env(1);
    block_on(app::trigger(&e.deps, trigger("INC-8", "Outage"))).unwrap_or_else(|e| panic!("{e}"));
    e.run_jobs();
    let rec = e.cascades("INC-8").remove(0);
    let d = muster::engine::decide(&rec.cascade, &Event::Cancel, &e.deps.policy, e.clock_now());
    let (next, entry) =
        app::audit::append(&rec, d.next, &d.audit, e.clock_now(), Default::default());
    let mut older = rec.clone();
    older.cascade.version -= 1;
    let stale = block_on(e.deps.cascades.transition(&older, &next, &entry));
    assert!(matches!(stale, Err(Error::Conflict(_))), "{stale:?}");
    let dup = block_on(e.deps.cascades.create_cascade(&rec, &entry));
    assert!(matches!(dup, Err(Error::Conflict(_))), "{dup:?}");
    assert!(block_on(e.deps.cascades.transition(&rec, &next, &entry)).is_ok());
    assert_eq!(e.store.audit_len(), 3);
}

fn audit(e: &Env) -> Vec<muster::audit::AuditEntry> {
    let mut v = Vec::new();
    e.store.for_each_audit(|a| v.push(a.clone()));
    v
}

#[test]
fn every_failure_is_named_to_the_on_call_manager_and_a_chain_that_ends_is_recorded() {
    let e = env(2);
    block_on(app::trigger(&e.deps, trigger("INC-9", "Outage"))).unwrap_or_else(|e| panic!("{e}"));
    // Nobody answers and no receipt comes: every channel times out, the
    // manager's too.
    e.run_until(e.clock_now().plus(4 * 3_600_000));
    let recs = e.cascades("INC-9");
    let failed: Vec<_> = recs
        .iter()
        .filter(|r| r.cascade.key.route == Route::Member)
        .collect();
    assert!(
        failed
            .iter()
            .all(|r| r.cascade.status == CascadeStatus::Escalated)
    );
    // One escalation per failure, each to the on-call manager.
    let mut told: Vec<(String, String)> = recs
        .iter()
        .filter_map(|r| {
            let about = r.cascade.key.route.about()?;
            Some((about.to_string(), r.cascade.key.stakeholder.to_string()))
        })
        .collect();
    told.sort();
    assert_eq!(
        told,
        [("p0".into(), "boss".into()), ("p1".into(), "boss".into())]
    );
    let entries = audit(&e);
    for who in ["p0", "p1"] {
        let id = StakeholderId::parse(who).unwrap_or_else(|e| panic!("{e}"));
        // Named in a message the carrier accepted ...
        assert!(
            entries
                .iter()
                .any(|a| a.record.kind == AuditKind::SendAccepted && a.named.contains(&id)),
            "{who} was never named to the manager"
        );
        // ... and, as the manager never answered and the chain has nobody
        // after them, recorded as undelivered on the failed cascade.
        assert!(
            entries.iter().any(|a| a.stakeholder == id
                && a.route == Route::Member
                && a.record.kind == AuditKind::EscalationUndelivered),
            "{who}: no ESCALATION_UNDELIVERED"
        );
    }
    // The manager's messages say whom they are about, by name.
    let sent = e.carrier.sent.lock().map(|g| g.clone()).unwrap_or_default();
    assert!(sent.iter().any(|m| m.key.route.is_escalation()
        && m.subject.contains("ESCALATION")
        && m.subject.contains("p0")));
}

#[test]
fn one_answer_to_a_bundled_escalation_acknowledges_every_failure_it_named() {
    let e = env(3);
    block_on(app::trigger(&e.deps, trigger("INC-19", "Outage"))).unwrap_or_else(|e| panic!("{e}"));
    // Members fail together (no receipts): the manager is told of all three.
    let until = e.clock_now().plus(3_600_000);
    while e
        .cascades("INC-19")
        .iter()
        .filter(|r| r.cascade.key.route.is_escalation())
        .count()
        < 3
    {
        let Some(at) = e.agenda.next_at() else { break };
        assert!(at < until, "the escalations never started");
        e.run_until(at);
    }
    e.run_jobs();
    // The last escalation message the manager got names every failure
    // still open; the manager answers it.
    let sent = e.carrier.sent.lock().map(|g| g.clone()).unwrap_or_default();
    let last = sent
        .iter()
        .rev()
        .find(|m| m.key.route.is_escalation())
        .cloned()
        .unwrap_or_else(|| panic!("no escalation message"));
    let named = audit(&e)
        .into_iter()
        .rev()
        .find(|a| a.key() == last.key && a.record.kind == AuditKind::SendAccepted)
        .map(|a| a.named)
        .unwrap_or_default();
    assert_eq!(named.len(), 3, "the message names all three: {named:?}");
    let answer = block_on(app::receipt(
        &e.deps,
        ReceiptEvent::Ack {
            key: last.key.clone(),
            channel: last.channel,
            attempt: Some(last.attempt),
        },
    ))
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(answer, ReceiptOutcome::Applied(AuditKind::Acknowledged));
    e.run_jobs();
    let escalations: Vec<_> = e
        .cascades("INC-19")
        .into_iter()
        .filter(|r| r.cascade.key.route.is_escalation())
        .collect();
    assert_eq!(escalations.len(), 3);
    for r in &escalations {
        assert_eq!(
            r.cascade.status,
            CascadeStatus::Acknowledged,
            "{}",
            r.cascade.key
        );
    }
}

#[test]
fn the_groups_escalation_route_orders_the_managers_cascade() {
    let e = env(1);
    let dir = MemoryDirectory::new(vec![], vec![]);
    dir.upsert_stakeholder(person("p0", 0));
    let mut boss = person("boss", 42);
    boss.contacts.push = PushEndpoint::parse("device-boss").ok();
    dir.upsert_stakeholder(boss);
    dir.upsert_group(Group {
        id: GroupId::parse("ops").unwrap_or_else(|e| panic!("{e}")),
        name: "Ops".into(),
        members: vec![StakeholderId::parse("p0").unwrap_or_else(|e| panic!("{e}"))],
        on_call_manager: StakeholderId::parse("boss").ok(),
        escalation_channels: vec![Channel::Push, Channel::Sms],
        idp: None,
    });
    let mut e = e;
    e.deps.directory = Arc::new(dir);
    block_on(app::trigger(&e.deps, trigger("INC-12", "Outage"))).unwrap_or_else(|e| panic!("{e}"));
    e.run_until(e.clock_now().plus(3_600_000));
    let manager = e
        .cascades("INC-12")
        .into_iter()
        .find(|r| r.cascade.key.route.is_escalation());
    assert_eq!(
        manager.map(|m| m.cascade.plan.as_slice().to_vec()),
        Some(vec![Channel::Push, Channel::Sms])
    );
}

fn number(n: u32) -> PhoneNumber {
    PhoneNumber::parse(&format!("+1212555{:04}", 100 + n)).unwrap_or_else(|e| panic!("{e}"))
}

fn sms(e: &Env, from: PhoneNumber, body: &str) -> ReceiptOutcome {
    block_on(app::receipt(
        &e.deps,
        ReceiptEvent::InboundSms {
            from,
            body: body.into(),
        },
    ))
    .unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn stop_opts_the_number_out_everywhere_and_start_opts_it_back_in() {
    let e = env(2);
    block_on(app::trigger(&e.deps, trigger("INC-13", "Outage"))).unwrap_or_else(|e| panic!("{e}"));
    e.run_jobs();
    assert_eq!(
        sms(&e, number(0), "STOP"),
        ReceiptOutcome::OptedOut {
            stakeholders: 1,
            cascades: 1
        }
    );
    let recs = e.cascades("INC-13");
    let p0 = recs
        .iter()
        .find(|r| r.cascade.key.stakeholder.as_str() == "p0")
        .unwrap_or_else(|| panic!("p0"));
    assert_eq!(
        p0.cascade.plan.as_slice(),
        [Channel::Voice, Channel::Email],
        "SMS dropped from the rest of the plan"
    );
    assert!(p0.contacts.sms_opted_out);
    let p1 = recs
        .iter()
        .find(|r| r.cascade.key.stakeholder.as_str() == "p1")
        .unwrap_or_else(|| panic!("p1"));
    assert!(
        p1.cascade.plan.as_slice().contains(&Channel::Sms),
        "another person is untouched"
    );
    let trail = block_on(
        e.deps
            .cascades
            .audit_trail(&IncidentId::parse("INC-13").unwrap_or_else(|e| panic!("{e}"))),
    )
    .unwrap_or_default();
    assert!(
        trail
            .iter()
            .any(|t| t.stakeholder.as_str() == "p0" && t.record.kind == AuditKind::OptOut),
        "audited"
    );
    // Nobody is texted at that number for the rest of the incident.
    e.run_until(e.clock_now().plus(3_600_000));
    let sent = e.carrier.sent.lock().map(|g| g.clone()).unwrap_or_default();
    assert!(
        !sent
            .iter()
            .any(|m| m.channel == Channel::Sms && m.to.expose() == number(0).expose())
    );
    // A new incident does not plan SMS for them; after START it does again.
    block_on(app::trigger(&e.deps, trigger("INC-14", "Outage"))).unwrap_or_else(|e| panic!("{e}"));
    e.run_jobs();
    let plan = |id: &str| {
        e.cascades(id)
            .into_iter()
            .find(|r| r.cascade.key.stakeholder.as_str() == "p0")
            .map(|r| r.cascade.plan.as_slice().to_vec())
    };
    assert_eq!(plan("INC-14"), Some(vec![Channel::Voice, Channel::Email]));
    assert_eq!(
        sms(&e, number(0), "start"),
        ReceiptOutcome::OptedIn { stakeholders: 1 }
    );
    block_on(app::trigger(&e.deps, trigger("INC-15", "Outage"))).unwrap_or_else(|e| panic!("{e}"));
    e.run_jobs();
    assert_eq!(
        plan("INC-15"),
        Some(vec![Channel::Voice, Channel::Sms, Channel::Email])
    );
}

#[test]
fn sms_replies_acknowledge_by_code_or_the_oldest_open_cascade() {
    let e = env(1);
    block_on(app::trigger(&e.deps, trigger("INC-16", "First"))).unwrap_or_else(|e| panic!("{e}"));
    e.run_jobs();
    e.clock.advance(1_000);
    block_on(app::trigger(&e.deps, trigger("INC-17", "Second"))).unwrap_or_else(|e| panic!("{e}"));
    e.run_jobs();
    let second = e.cascades("INC-17").remove(0);
    assert_eq!(
        sms(&e, number(0), "ACK 0000"),
        ReceiptOutcome::Unknown,
        "a wrong code acknowledges nothing"
    );
    assert_eq!(
        sms(&e, number(0), &format!("ack {}", second.ack_code)),
        ReceiptOutcome::Applied(AuditKind::Acknowledged)
    );
    assert_eq!(
        e.cascades("INC-17")[0].cascade.status,
        CascadeStatus::Acknowledged
    );
    assert_eq!(
        e.cascades("INC-16")[0].cascade.status,
        CascadeStatus::Active
    );
    assert_eq!(
        sms(&e, number(0), "1"),
        ReceiptOutcome::Applied(AuditKind::Acknowledged)
    );
    assert_eq!(e.cascades("INC-16")[0].cascade.acked_on, Some(Channel::Sms));
    assert_eq!(
        sms(&e, number(0), "1"),
        ReceiptOutcome::Unknown,
        "nothing left open"
    );
    assert_eq!(
        sms(&e, number(0), "who is this?"),
        ReceiptOutcome::Unrecognised
    );
}

/// A work queue that counts enqueue calls.
struct CountingQueue {
    inner: MemoryQueue<()>,
    calls: std::sync::atomic::AtomicUsize,
}

#[async_trait]
impl WorkQueue for CountingQueue {
    async fn enqueue(&self, jobs: Vec<(Job, u64)>) -> muster::Result<()> {
        self.calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.inner.enqueue(jobs).await
    }
    async fn backlog(&self) -> muster::Result<u64> {
        self.inner.backlog().await
    }
}

#[test]
fn an_expansion_queues_its_first_sends_in_one_request() {
    let mut e = env(250);
    let q = Arc::new(CountingQueue {
        inner: MemoryQueue(e.agenda.clone()),
        calls: Default::default(),
    });
    e.deps.queue = q.clone();
    block_on(app::trigger(&e.deps, trigger("INC-B", "Outage"))).unwrap_or_else(|e| panic!("{e}"));
    let Some((_, Item::Job(expand))) = e.agenda.pop() else {
        panic!("no expansion job")
    };
    let before = q.calls.load(std::sync::atomic::Ordering::SeqCst);
    block_on(app::dispatch(&e.deps, expand)).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        q.calls.load(std::sync::atomic::Ordering::SeqCst) - before,
        1,
        "250 first sends, one enqueue"
    );
    assert_eq!(e.agenda.jobs(), 250);
}

#[test]
fn a_redelivered_expansion_requeues_a_lost_first_send() {
    let e = env(1);
    block_on(app::trigger(&e.deps, trigger("INC-R", "Outage"))).unwrap_or_else(|e| panic!("{e}"));
    let Some((_, Item::Job(expand))) = e.agenda.pop() else {
        panic!("no expansion job")
    };
    block_on(app::dispatch(&e.deps, expand.clone())).unwrap_or_else(|e| panic!("{e}"));
    // The send job is lost (say, the process died before the queue took it).
    while e.agenda.pop().is_some() {}
    block_on(app::dispatch(&e.deps, expand)).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        e.agenda.jobs(),
        1,
        "the redelivered expansion queues the send again"
    );
    e.run_jobs();
    assert_eq!(
        e.carrier.sent.lock().map(|g| g.len()).unwrap_or(0),
        1,
        "and it goes out once"
    );
    assert_eq!(e.cascades("INC-R").len(), 1);
}

/// An HRIS that, while it is asked about `when_asked_about`, sees `acker`
/// acknowledge: the acknowledgement lands in the middle of the use case
/// that asked.
struct AckWhileLookingUp {
    deps: std::sync::OnceLock<Deps>,
    when_asked_about: StakeholderId,
    acker: CascadeKey,
    fired: std::sync::atomic::AtomicBool,
}

#[async_trait]
impl ContactLookup for AckWhileLookingUp {
    async fn lookup(&self, id: &StakeholderId) -> Result<Option<ContactMethods>, LookupError> {
        if *id == self.when_asked_about
            && !self.fired.swap(true, std::sync::atomic::Ordering::SeqCst)
            && let Some(deps) = self.deps.get()
        {
            let ack = ReceiptEvent::Ack {
                key: self.acker.clone(),
                channel: Channel::Sms,
                attempt: None,
            };
            app::receipt(deps, ack)
                .await
                .map_err(|e| LookupError::Unavailable(e.to_string()))?;
        }
        Ok(None)
    }
}

#[test]
fn an_acknowledgement_while_its_escalation_is_being_started_withdraws_it() {
    let mut e = env(1);
    let hris = Arc::new(AckWhileLookingUp {
        deps: std::sync::OnceLock::new(),
        when_asked_about: StakeholderId::parse("boss").unwrap_or_else(|e| panic!("{e}")),
        acker: e.key("INC-20", "p0"),
        fired: Default::default(),
    });
    e.deps.contacts = Some(hris.clone());
    let _ = hris.deps.set(e.deps.clone());
    block_on(app::trigger(&e.deps, trigger("INC-20", "Outage"))).unwrap_or_else(|e| panic!("{e}"));
    e.run_until(e.clock_now().plus(3_600_000));
    assert!(
        hris.fired.load(std::sync::atomic::Ordering::SeqCst),
        "p0 failed and the manager was looked up"
    );
    let escalation = e
        .cascades("INC-20")
        .into_iter()
        .find(|r| r.cascade.key.route.is_escalation())
        .unwrap_or_else(|| panic!("the escalation was started"));
    assert_eq!(
        escalation.cascade.status,
        CascadeStatus::Cancelled,
        "withdrawn at once"
    );
    let entries = audit(&e);
    assert!(
        entries
            .iter()
            .any(|a| a.key() == escalation.cascade.key && a.record.kind == AuditKind::Withdrawn)
    );
    // Nobody was told about p0 after p0 acknowledged.
    let acked = entries
        .iter()
        .find(|a| a.record.kind == AuditKind::AckAfterEnd)
        .map(|a| a.at)
        .unwrap_or_else(|| panic!("p0's late acknowledgement is recorded"));
    let sent = e.carrier.sent.lock().map(|g| g.clone()).unwrap_or_default();
    assert!(
        !sent.iter().any(|m| m.key.route.is_escalation()),
        "no escalation message went out"
    );
    assert!(!entries.iter().any(|a| a.route.is_escalation()
        && a.record.kind == AuditKind::SendAccepted
        && a.at >= acked));
    // And the failure is settled: nothing left due.
    for r in e.cascades("INC-20") {
        assert_eq!(r.cascade.next_due(), None, "{}", r.cascade.key);
    }
}

#[test]
fn waiting_behind_a_backlog_after_a_short_throttle_is_pacing_not_throttling() {
    // Voice at 1/s with 200 sends booked ahead; the carrier answered one
    // 429 (a 5 s pause) and then took sends again. p0's call waits over
    // three minutes, far past the 60 s bound, but only the first seconds of
    // that were throttling: p0's voice must not fail for it.
    let mut e = env(1);
    let mut policy = Policy::default();
    policy.endpoint_limits.insert("voice".into(), 1.0);
    let policy = Arc::new(policy);
    e.deps.policy = policy.clone();
    e.deps.limiter = Arc::new(muster::adapters::memory::MemoryLimiter::new(policy));
    let t0 = e.clock_now();
    block_on(async {
        e.deps.limiter.on_throttled("voice", t0, Some(5_000)).await;
        for _ in 0..200 {
            e.deps
                .limiter
                .admit("voice", t0, None, Lane::Member)
                .await?;
        }
        Ok::<_, muster::Error>(())
    })
    .unwrap_or_else(|e| panic!("{e}"));
    block_on(app::trigger(&e.deps, trigger("INC-21", "Outage"))).unwrap_or_else(|e| panic!("{e}"));
    e.run_jobs();
    // The pause ends and the carrier takes a send.
    e.clock.set(t0.plus(6_000));
    block_on(e.deps.limiter.on_success("voice", t0.plus(6_000)));
    e.run_until(t0.plus(600_000));
    let entries = audit(&e);
    let p0 = StakeholderId::parse("p0").unwrap_or_else(|e| panic!("{e}"));
    assert!(
        !entries.iter().any(|a| a.stakeholder == p0
            && (a.record.kind == AuditKind::ChannelThrottledOut
                || a.record.cause == Some(AuditKind::ChannelThrottledOut))),
        "p0's voice failed for a wait that was pacing"
    );
    assert!(entries.iter().any(|a| a.stakeholder == p0
        && a.record.kind == AuditKind::SendAccepted
        && a.record.channel == Some(Channel::Voice)));
}

/// An SMS sender that cannot take replies (a sender id on AWS).
struct OneWay(Arc<Recorder>);

#[async_trait]
impl ChannelSender for OneWay {
    fn endpoint(&self) -> &str {
        "sms"
    }
    async fn send(&self, msg: &OutboundMessage) -> Result<Accepted, SendError> {
        Rec(self.0.clone(), "sms").send(msg).await
    }
    fn accepts_replies(&self) -> bool {
        false
    }
}

/// A message never asks for a reply nobody can receive: with an SMS
/// origination that cannot take replies, neither the SMS nor the email
/// says "reply ACK".
#[test]
fn no_message_asks_for_a_reply_that_cannot_arrive() {
    let mut e = env(1);
    e.deps.senders.sms = Arc::new(OneWay(e.carrier.clone()));
    block_on(app::trigger(&e.deps, trigger("INC-OW", "Site down.")))
        .unwrap_or_else(|e| panic!("{e}"));
    e.run_until(e.clock_now().plus(30 * 60_000));
    let sent = e
        .carrier
        .sent
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let sms: Vec<_> = sent.iter().filter(|m| m.channel == Channel::Sms).collect();
    assert!(
        !sms.is_empty(),
        "an SMS was sent: {:?}",
        sent.iter().map(|m| m.channel).collect::<Vec<_>>()
    );
    for m in &sent {
        assert!(
            !m.body.to_ascii_lowercase().contains("reply ack"),
            "{:?}: {}",
            m.channel,
            m.body
        );
    }
}
