//! Whole-system drills on the memory adapters, in virtual time.

use muster::app::{EscalationOutcome, EscalationStory};
use muster::audit::AuditEntry;
use muster::domain::Channel;
use muster::drill::{DrillReport, Scenario, run};
use muster::engine::{AuditKind, CascadeStatus, Route};

fn load(name: &str) -> Scenario {
    let path = format!(
        "{}/../examples/drills/{name}.toml",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    Scenario::from_toml(&text).unwrap_or_else(|e| panic!("{path}: {e:?}"))
}

fn drill(name: &str) -> (muster::drill::Drill, DrillReport) {
    let s = load(name);
    let seed = s.seed;
    let (d, r) = run(s, seed);
    assert!(r.passed(), "{name} failed:\n{}", r.render());
    assert_eq!(r.invariant_violations, 0, "{name}");
    assert_eq!(
        r.final_states.active, 0,
        "{name}: every stakeholder must end in a terminal state"
    );
    assert!(r.audit_chains_verified, "{name}");
    (d, r)
}

fn story<'a>(r: &'a DrillReport, who: &str) -> &'a EscalationStory {
    r.escalation_stories
        .iter()
        .find(|s| s.about.as_str() == who)
        .unwrap_or_else(|| panic!("no escalation story for {who}"))
}

fn entries(d: &muster::drill::Drill) -> Vec<AuditEntry> {
    let mut v = Vec::new();
    d.store.for_each_audit(|e| v.push(e.clone()));
    v
}

/// Every failure ended acknowledged by someone told, or withdrawn because
/// the person answered after all: none reached nobody, none left open.
fn every_failure_reached_a_person(r: &DrillReport) {
    let e = &r.escalations;
    assert_eq!(e.failures, r.final_states.escalated, "{}", r.scenario);
    assert_eq!(
        (e.undelivered, e.open, e.acknowledged + e.withdrawn),
        (0, 0, e.failures),
        "{}: {e:?}",
        r.scenario
    );
}

#[test]
fn seed_p1_outage_reaches_everyone_and_escalates_the_unavailable() {
    let (d, r) = drill("seed-p1-outage");
    assert_eq!(r.stakeholders, 12);
    assert_eq!(r.final_states.acknowledged + r.final_states.escalated, 12);
    // Two people never acknowledge: both must escalate, and the manager is told.
    let recs = d.store.all_cascades();
    for who in ["legal-counsel", "hr-partner"] {
        let c = recs
            .iter()
            .find(|c| c.cascade.key.stakeholder.as_str() == who)
            .map(|c| c.cascade.status);
        assert_eq!(c, Some(muster::engine::CascadeStatus::Escalated), "{who}");
    }
    // Every failure reached a person who acknowledged it.
    assert_eq!(r.escalations.failures, r.final_states.escalated);
    assert_eq!(
        r.escalations.acknowledged + r.escalations.withdrawn,
        r.escalations.failures
    );
    assert_eq!(r.escalations.undelivered, 0);
    for who in ["legal-counsel", "hr-partner"] {
        let story = story(&r, who);
        assert_eq!(story.told[0].to.as_str(), "duty-manager", "{who}");
        assert!(
            story.first_named_ms.is_some_and(|ms| ms <= 5_000),
            "{who}: named to the manager within 5 s: {story:?}"
        );
    }
    // comms-lead accepts only SMS and email: never called.
    let comms = recs
        .iter()
        .find(|c| c.cascade.key.stakeholder.as_str() == "comms-lead")
        .map(|c| c.cascade.plan.as_slice().to_vec());
    assert_eq!(comms, Some(vec![Channel::Sms, Channel::Email]));
}

#[test]
fn same_seed_same_report_other_seed_other_run() {
    let s = load("seed-p1-outage");
    let (_, mut a) = run(s.clone(), 7);
    let (_, mut b) = run(s.clone(), 7);
    let (_, mut c) = run(s, 8);
    for r in [&mut a, &mut b, &mut c] {
        r.wall_secs = 0.0;
    }
    assert_eq!(a, b);
    assert_ne!(a, c);
}

#[test]
fn webhook_timeout_every_cascade_ends_via_channel_timeout() {
    let (d, r) = drill("webhook-timeout");
    let delivered: u64 = r.channels.values().map(|c| c.delivered).sum();
    let timeouts: u64 = r.channels.values().map(|c| c.timeouts).sum();
    assert_eq!(delivered, 0, "no receipt ever arrives");
    assert!(
        timeouts >= r.final_states.escalated * 3,
        "each escalation took three timeouts: {timeouts}"
    );
    let mut entries = Vec::new();
    d.store.for_each_audit(|e| entries.push(e.clone()));
    for e in entries
        .iter()
        .filter(|e| e.record.kind == AuditKind::CascadeFailure && e.route == Route::Member)
    {
        assert_eq!(e.record.cause, Some(AuditKind::ChannelTimeout), "{e:?}");
    }
    // The timeout is the policy's 120 s after acceptance.
    let accepted = entries
        .iter()
        .find(|e| e.record.kind == AuditKind::SendAccepted)
        .cloned();
    let accepted = accepted.unwrap_or_else(|| panic!("no send accepted"));
    let timeout = entries.iter().find(|e| {
        e.key() == accepted.key()
            && e.record.kind == AuditKind::ChannelTimeout
            && e.record.attempt == accepted.record.attempt
    });
    assert_eq!(timeout.map(|t| t.at.since(accepted.at)), Some(120_000));
}

#[test]
fn p3_sends_no_voice_and_waits_fifteen_minutes_between_channels() {
    let (d, r) = drill("p3-low-priority");
    let mut entries = Vec::new();
    d.store.for_each_audit(|e| entries.push(e.clone()));
    for e in entries.iter().filter(|e| e.route == Route::Member) {
        assert!(
            !e.record.started.contains(&Channel::Voice),
            "voice started for {}",
            e.stakeholder
        );
        if e.record.kind == AuditKind::Delivered {
            assert_eq!(e.record.wait_ms, Some(900_000), "P3 hold is 15 minutes");
        }
    }
    assert!(r.ack_secs.count > 0);
}

#[test]
fn mass_activation_500_survives_the_throttling_carrier() {
    let (_, r) = drill("mass-activation-500");
    assert_eq!(r.stakeholders, 500);
    let sms = &r.carriers["sms"];
    assert!(
        sms.throttled_429 > 0,
        "the carrier does throttle in this scenario"
    );
    assert!(
        sms.peak_per_sec <= 50,
        "never above the told limit: {}",
        sms.peak_per_sec
    );
    assert!(
        sms.throttled_429 < 30,
        "the limiter settles instead of hammering: {} 429s",
        sms.throttled_429
    );
    assert!(r.first_contact_secs.count == 500, "everyone was contacted");
}

#[test]
fn mass_activation_10k_first_contacts_everyone_at_the_told_limit() {
    let (d, r) = drill("mass-activation-10k");
    assert_eq!(r.stakeholders, 10_000);
    // Everyone's first send is offered to the carrier within the time the
    // told limit allows (a send that then fails transiently is retried 15 s
    // later, by rule 3, and is first contact then).
    let bound = 1.02 * 10_000.0 / 50.0;
    let mut first: std::collections::HashMap<muster::domain::StakeholderId, muster::domain::Ts> =
        Default::default();
    for e in entries(&d) {
        let offered = matches!(
            e.record.kind,
            AuditKind::SendAccepted
                | AuditKind::RetryScheduled
                | AuditKind::ChannelFailed
                | AuditKind::ChannelUnreachable
                | AuditKind::Throttled
        );
        if e.route == Route::Member && offered {
            first.entry(e.stakeholder.clone()).or_insert(e.at);
        }
    }
    assert_eq!(first.len(), 10_000);
    let start = d.scenario.start;
    let last = first.values().map(|t| t.since(start)).max().unwrap_or(0) as f64 / 1000.0;
    assert!(
        last <= bound,
        "last first send offered at {last}s, bound {bound}s"
    );
    for (name, c) in &r.carriers {
        assert_eq!(
            c.throttled_429, 0,
            "{name}: a carrier at the told limit must never answer 429"
        );
        assert!(
            c.peak_per_sec as f64 <= c.limit_per_sec,
            "{name}: peak {} above told {}",
            c.peak_per_sec,
            c.limit_per_sec
        );
    }
}

#[test]
fn plans_follow_capacity_so_nobody_waits_for_a_congested_channel() {
    // 10,000 P1 people with all four channels at AWS's default quotas:
    // voice 1/s, SMS 20/s, email 14/s, push 50/s. The fastest those
    // channels together allow is N / (sum of limits); the last first
    // contact comes within 1.10 x that (behind the voice queue alone it
    // would be 10,000 s).
    let (d, r) = drill("mass-activation-10k-aws-quotas");
    assert_eq!(r.first_contact_secs.count, 10_000);
    let fastest = 10_000.0 / (1.0 + 20.0 + 14.0 + 50.0);
    assert!(
        r.first_contact_secs.max <= 1.10 * fastest,
        "last first contact {}s, fastest possible {fastest:.1}s",
        r.first_contact_secs.max
    );
    // No SMS, email or push waited in its queue longer than that either.
    // (Voice calls do: the ones placed later, the P1 parallel call and
    // voice tried after the channels it was moved behind, for people with
    // no other channel left to try.)
    for c in [Channel::Sms, Channel::Email, Channel::Push] {
        let w = &r.channels[&c].queue_wait_secs;
        assert!(w.count > 0, "{c:?}");
        assert!(w.max <= 1.10 * fastest, "{c:?}: queue wait {w:?}");
    }
    // Each channel is used at its pace, none above its limit.
    for (name, c) in &r.carriers {
        assert!(c.peak_per_sec as f64 <= c.limit_per_sec, "{name}");
        assert_eq!(c.throttled_429, 0, "{name}");
    }
    // Every move is audited with the waits that caused it, and only a
    // channel whose queue was past the bound (the P1 hold of the person's
    // tier: 60 s or 90 s) was moved.
    let moves: Vec<AuditEntry> = entries(&d)
        .into_iter()
        .filter(|e| {
            e.record.kind == AuditKind::PlanChanged
                && e.record
                    .note
                    .as_deref()
                    .unwrap_or_default()
                    .contains(" queue ")
        })
        .collect();
    assert!(moves.len() > 5_000, "{} moves", moves.len());
    for m in &moves {
        let note = m.record.note.as_deref().unwrap_or_default();
        assert!(note.contains("(queue waits: "), "{note}");
        assert_eq!(m.route, Route::Member, "{note}");
        let number_after = |marker: &str| -> u64 {
            note.split(marker)
                .nth(1)
                .and_then(|t| t.split('s').next())
                .and_then(|n| n.parse().ok())
                .unwrap_or_default()
        };
        let (waited, bound) = (number_after(" queue "), number_after("past the "));
        assert!(bound == 60 || bound == 90, "{note}");
        assert!(waited > bound, "{note}");
    }
}

#[test]
fn capacity_aware_plans_are_turned_off_per_severity() {
    // The same people, 600 of them, with P1 plans that do not follow
    // capacity: everyone waits for voice at 1 call a second.
    let path = format!(
        "{}/../examples/drills/mass-activation-10k-aws-quotas.toml",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(&path)
        .unwrap_or_default()
        .replace("count = 10000", "count = 600")
        + "\n[policy.cascade]\nqueue_replan = [\"P2\", \"P3\", \"P4\"]\n";
    let s = Scenario::from_toml(&text).unwrap_or_else(|e| panic!("{e:?}"));
    let seed = s.seed;
    let (d, r) = run(s, seed);
    assert_eq!(r.invariant_violations, 0);
    assert!(
        r.first_contact_secs.max > 500.0,
        "last first contact {}s: behind the voice queue",
        r.first_contact_secs.max
    );
    assert!(
        entries(&d)
            .iter()
            .all(|e| e.record.kind != AuditKind::PlanChanged
                || !e
                    .record
                    .note
                    .as_deref()
                    .unwrap_or_default()
                    .contains(" queue ")),
        "no plan follows a queue when turned off"
    );
}

#[test]
fn mass_activation_10k_adapts_to_hidden_capacity() {
    let (_, r) = drill("mass-activation-10k-hidden-capacity");
    let voice = &r.carriers["voice"];
    assert!(
        voice.throttled_429 > 0,
        "the hidden capacity is only ever shown by 429s"
    );
    assert!(voice.peak_per_sec <= 50);
    assert!(
        voice.throughput_per_sec >= 0.9 * 35.0,
        "throughput {:.1}/s is below 90% of the hidden 35/s",
        voice.throughput_per_sec
    );
    assert!(
        voice.throttled_429 < 60,
        "{} 429s: the limiter keeps them rare",
        voice.throttled_429
    );
    assert_eq!(r.first_contact_secs.count, 10_000);
}

#[test]
fn bad_scenarios_name_every_field() {
    let text = r#"
        [incident]
        incidentId = "INC 1"
        severity = "P9"
        stakeholderGroupId = "g"
        messageTemplate = "m"
        [group]
        on_call_manager = "nobody"
        [[stakeholders]]
        id = "a"
        phone = "12345"
        tier = 7
        behaviour = "ghost"
        [carriers.fax]
        transient = 0.1
        [carriers.sms]
        transient = 1.5
        [policy.retry]
        max_retries = 99
    "#;
    let errs = Scenario::from_toml(text).err().unwrap_or_default();
    let fields: Vec<_> = errs.iter().map(|e| e.field.as_str()).collect();
    for want in [
        "incident.incidentId",
        "incident.severity",
        "policy.retry.max_retries",
        "carriers.fax",
        "carriers.sms.transient",
        "stakeholders[0].tier",
        "stakeholders[0].phone",
        "stakeholders[0].behaviour",
        "group.on_call_manager",
    ] {
        assert!(
            fields.contains(&want),
            "{want} not reported; got {fields:?}"
        );
    }
}

#[test]
fn bad_further_incidents_name_their_fields() {
    let text = r#"
        [incident]
        incidentId = "INC-1"
        severity = "P1"
        stakeholderGroupId = "g"
        messageTemplate = "m"
        [[incidents]]
        incidentId = "INC-1"
        severity = "P2"
        stakeholderGroupId = "g"
        messageTemplate = "m"
        [[incidents]]
        incidentId = "INC-2"
        severity = "P9"
        stakeholderGroupId = "h"
        messageTemplate = "m"
        [[incidents]]
        incidentId = "INC-3"
        severity = "P2"
        stakeholderGroupId = "h"
        messageTemplate = "m"
        at = "soon"
        members = 11
        [[incidents]]
        incidentId = "INC-4"
        severity = "P2"
        stakeholderGroupId = "g"
        messageTemplate = "m"
        members = 2
        [group]
        on_call_manager = "duty"
        [[stakeholders]]
        id = "duty"
        phone = "+1 202 555 0100"
        member = false
        [[population]]
        count = 10
    "#;
    let errs = Scenario::from_toml(text).err().unwrap_or_default();
    let fields: Vec<_> = errs.iter().map(|e| e.field.as_str()).collect();
    for want in [
        "incidents[0].incidentId",
        "incidents[1].severity",
        "incidents[2].at",
        "incidents[2].members",
        "incidents[3].members",
    ] {
        assert!(fields.contains(&want), "{want} not reported; got {errs:?}");
    }
}

#[test]
fn scenario_syntax_and_unknown_keys_are_reported_with_line() {
    let errs = Scenario::from_toml(
        "[incident]\nincidentId = \"x\"\ncolour = \"red\"\n[unknown_section]\nx = 1\n",
    )
    .err()
    .unwrap_or_default();
    assert_eq!(errs.len(), 1);
    assert!(errs[0].field.starts_with("line "), "{:?}", errs[0]);
    assert!(errs[0].message.contains("unknown_section"), "{:?}", errs[0]);
}

#[test]
fn stale_directory_numbers_are_corrected_by_the_live_lookup() {
    let s = load("stale-directory");
    let stale: Vec<_> = s
        .people
        .iter()
        .filter(|p| p.contacts.phone != p.current.phone)
        .map(|p| p.id.clone())
        .collect();
    assert!(
        stale.len() > 40,
        "the scenario has stale numbers: {}",
        stale.len()
    );
    let (d, r) = drill("stale-directory");
    assert_eq!(
        r.contact_checks.get("changed").copied(),
        Some(stale.len() as u64)
    );
    assert_eq!(r.needs_review, 0);
    assert_eq!(
        r.channels[&Channel::Voice].failed,
        0,
        "nobody was called on a dead number"
    );
    let recs = d.store.all_cascades();
    for id in &stale {
        let rec = recs
            .iter()
            .find(|c| &c.cascade.key.stakeholder == id)
            .unwrap_or_else(|| panic!("{id}"));
        let person = s
            .people
            .iter()
            .find(|p| &p.id == id)
            .unwrap_or_else(|| panic!("{id}"));
        assert_eq!(
            rec.contacts.phone, person.current.phone,
            "{id}: the cascade snapshotted the live number"
        );
    }
}

#[test]
fn lookup_down_flags_every_cascade_and_falls_back_to_the_directory() {
    let (d, r) = drill("stale-directory-lookup-down");
    assert_eq!(
        r.needs_review,
        r.stakeholders + r.escalation_cascades,
        "every cascade flagged, escalations' too"
    );
    assert_eq!(
        r.contact_checks.get("unavailable").copied(),
        Some(r.stakeholders + r.escalation_cascades)
    );
    assert!(
        r.channels[&Channel::Voice].failed > 0,
        "stale numbers were dialled from the directory copy"
    );
    let mut first = Vec::new();
    d.store.for_each_audit(|e| {
        if e.seq == 0 && e.route == Route::Member {
            first.push(e.contact_check);
        }
    });
    assert_eq!(first.len() as u64, r.stakeholders);
    assert!(
        first
            .iter()
            .all(|c| *c == Some(muster::domain::ContactCheck::Unavailable)),
        "the audit trail records it"
    );
}

#[test]
fn a_failure_climbs_the_chain_to_the_fallback_rota_naming_nobody_twice() {
    let (_, r) = drill("escalation-chain");
    every_failure_reached_a_person(&r);
    assert_eq!(r.escalations.failures, 3);
    for st in &r.escalation_stories {
        let told: Vec<&str> = st.told.iter().map(|t| t.to.as_str()).collect();
        assert_eq!(
            told,
            ["duty-manager", "head-of-ops", "bcp-admin-1", "bcp-admin-2"],
            "{}: the on-call manager, their manager, then the rota in order",
            st.about
        );
        assert!(
            matches!(&st.outcome, EscalationOutcome::Acknowledged { by, .. } if by.as_str() == "bcp-admin-2"),
            "{st:?}"
        );
    }
    assert_eq!(r.escalations.deepest_level, 4);
}

#[test]
fn a_group_without_an_on_call_manager_escalates_to_the_fallback() {
    let (_, r) = drill("escalation-no-manager");
    every_failure_reached_a_person(&r);
    assert!(r.escalations.failures > 0);
    for st in &r.escalation_stories {
        assert_eq!(st.told[0].to.as_str(), "bcp-rota-1", "{st:?}");
    }
}

#[test]
fn a_scenario_whose_group_has_no_escalation_path_is_refused() {
    let text = std::fs::read_to_string(format!(
        "{}/../examples/drills/escalation-no-manager.toml",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap_or_else(|e| panic!("{e}"));
    let without = text.replace(
        "fallback = [\"bcp-rota-1\", \"bcp-rota-2\"]",
        "max_depth = 3",
    );
    let errs = Scenario::from_toml(&without).err().unwrap_or_default();
    assert!(
        errs.iter().any(|e| e.field == "group.on_call_manager"
            && e.message.contains("no escalation path")),
        "{errs:?}"
    );
}

#[test]
fn a_manager_who_is_also_a_member_is_never_called_or_texted_twice_within_the_hold() {
    let (d, r) = drill("manager-also-member");
    every_failure_reached_a_person(&r);
    // The drill checks the rule itself (any violation fails it); here: the
    // manager's contacts were coalesced, so messages named several failures
    // and one answer acknowledged several.
    let entries = entries(&d);
    let bundled = entries
        .iter()
        .filter(|e| e.record.kind == AuditKind::SendAccepted && e.named.len() > 1)
        .count();
    assert!(bundled > 0, "no message named more than one failure");
    let shared = entries
        .iter()
        .filter(|e| {
            e.record.kind == AuditKind::Acknowledged
                && e.record
                    .note
                    .as_deref()
                    .is_some_and(|n| n.contains("by the answer to"))
        })
        .count();
    assert!(shared > 0, "no answer acknowledged a bundle");
    let moved = entries
        .iter()
        .filter(|e| e.record.kind == AuditKind::PlanChanged)
        .count();
    assert!(
        moved > 0,
        "no escalation took a free channel instead of a busy one"
    );
}

#[test]
fn a_late_acknowledgement_withdraws_the_escalation_and_updates_the_manager() {
    let (d, r) = drill("late-ack-withdraws-escalation");
    every_failure_reached_a_person(&r);
    assert!(r.escalations.withdrawn > 0);
    let entries = entries(&d);
    let withdrawn: Vec<&AuditEntry> = entries
        .iter()
        .filter(|e| e.record.kind == AuditKind::Withdrawn)
        .collect();
    assert!(!withdrawn.is_empty());
    // Each withdrawal that followed a message the manager got is followed by
    // an update to them; none that followed no message is.
    for w in &withdrawn {
        let had_message = entries.iter().any(|e| {
            e.key() == w.key() && e.record.kind == AuditKind::SendAccepted && e.at <= w.at
        });
        let notice = entries
            .iter()
            .any(|e| e.key() == w.key() && e.record.kind == AuditKind::NoticeSent);
        assert_eq!(had_message, notice, "{}", w.key());
    }
    // No stale alarm: once a person acknowledged, no escalation message
    // names them any more.
    for st in &r.escalation_stories {
        let EscalationOutcome::Withdrawn { at } = st.outcome else {
            continue;
        };
        assert!(
            !entries
                .iter()
                .any(|e| e.record.kind == AuditKind::SendAccepted
                    && e.at > at
                    && e.named.contains(&st.about)),
            "{} was still named after acknowledging",
            st.about
        );
    }
}

#[test]
fn a_carrier_that_throttles_for_ever_holds_nobody_past_the_bound() {
    let (d, r) = drill("carrier-throttles-forever");
    assert_eq!(r.final_states.active, 0, "no cascade left active");
    every_failure_reached_a_person(&r);
    let entries = entries(&d);
    let out: Vec<&AuditEntry> = entries
        .iter()
        .filter(|e| {
            e.record.kind == AuditKind::ChannelThrottledOut
                || e.record.cause == Some(AuditKind::ChannelThrottledOut)
        })
        .collect();
    assert!(!out.is_empty(), "voice was never throttled out");
    for e in &out {
        assert_eq!(e.record.channel, Some(Channel::Voice));
    }
    // Every member reached on another channel, or escalated.
    assert!(r.first_contact_secs.count >= r.stakeholders - r.final_states.escalated);
    // Waiting out 429s spent no retries: the voice carrier never answered
    // anything but 429, so no retry was ever scheduled on voice.
    assert!(
        !entries
            .iter()
            .any(|e| e.record.kind == AuditKind::RetryScheduled
                && e.record.channel == Some(Channel::Voice))
    );
}

#[test]
fn a_delivered_unacknowledged_message_brings_a_parallel_voice_call() {
    let s = load("parallel-voice");
    let seed = s.seed;
    let (d, with) = run(s.clone(), seed);
    assert!(with.passed(), "{}", with.render());
    let entries = entries(&d);
    let parallel = entries
        .iter()
        .filter(|e| {
            e.record.kind == AuditKind::NotAcknowledged
                && e.record
                    .note
                    .as_deref()
                    .is_some_and(|n| n.contains("parallel voice"))
        })
        .count();
    assert!(parallel > 0);
    // Never voice and SMS at the same instant to one person.
    for e in entries.iter().filter(|e| {
        e.record.kind == AuditKind::SendAccepted && e.record.channel == Some(Channel::Voice)
    }) {
        assert!(!entries.iter().any(|o| o.key() == e.key()
            && o.at == e.at
            && o.record.kind == AuditKind::SendAccepted
            && o.record.channel == Some(Channel::Sms)));
    }
    // These people only answer the phone: with the rule they answer about
    // a hold after the first message, without it only once every other
    // channel has had its hold.
    let mut off = s;
    off.policy.parallel_voice = [false; 4];
    let (_, without) = run(off, seed);
    assert!(
        with.ack_secs.p50 + 60.0 < without.ack_secs.p50,
        "acknowledged p50 {}s with the parallel call, {}s without",
        with.ack_secs.p50,
        without.ack_secs.p50
    );
}

#[test]
fn an_on_call_manager_is_validated_live_like_a_member() {
    let (d, r) = drill("escalation-stale-manager");
    every_failure_reached_a_person(&r);
    assert!(r.escalations.failures > 0);
    let s = load("escalation-stale-manager");
    let manager = s
        .people
        .iter()
        .find(|p| p.id.as_str() == "retail-duty")
        .unwrap_or_else(|| panic!("no manager"));
    assert_ne!(
        manager.contacts.phone, manager.current.phone,
        "the directory is stale"
    );
    for rec in d.store.all_cascades().iter().filter(|c| {
        c.cascade.key.route.is_escalation() && c.cascade.key.stakeholder.as_str() == "retail-duty"
    }) {
        assert_eq!(
            rec.contacts.phone, manager.current.phone,
            "{}",
            rec.cascade.key
        );
        assert!(!rec.needs_review);
    }
    let entries = entries(&d);
    assert!(entries.iter().any(|e| e.route.is_escalation()
        && e.seq == 0
        && e.contact_check == Some(muster::domain::ContactCheck::Changed)));
    assert!(
        !entries.iter().any(|e| e.route.is_escalation()
            && e.record.kind == AuditKind::ChannelFailed
            && e.record.channel == Some(Channel::Voice)),
        "the manager was never called on the dead number"
    );
}

#[test]
fn escalations_are_offered_to_a_carrier_within_five_seconds_at_mass_scale() {
    for name in ["mass-activation-10k", "mass-activation-voice-1ps"] {
        let (_, r) = drill(name);
        every_failure_reached_a_person(&r);
        assert!(r.escalations.failures > 100, "{name}");
        assert!(
            r.escalations.first_offer_secs.max <= 5.0,
            "{name}: a manager's first message went out {}s after a failure",
            r.escalations.first_offer_secs.max
        );
        assert!(
            r.escalations.first_named_secs.max <= 5.0,
            "{name}: {}",
            r.escalations.first_named_secs.max
        );
    }
}

#[test]
fn no_cascade_of_an_ended_escalation_is_left_open() {
    let (d, _) = drill("seed-p1-outage");
    for rec in d.store.all_cascades() {
        assert_ne!(
            rec.cascade.status,
            CascadeStatus::Active,
            "{}",
            rec.cascade.key
        );
    }
}

#[test]
fn a_short_throttle_does_not_fail_the_people_queued_behind_it() {
    // Voice told 2/s but taking 1/s: the limiter meets 429s and settles at
    // the carrier's pace. 150 people queue for up to two and a half minutes,
    // far past the 90 s bound; the carrier throttles only briefly now and
    // then, so their wait is pacing, and nobody's voice fails for it.
    let text = r#"
        [incident]
        incidentId = "INC-PACE"
        severity = "P1"
        stakeholderGroupId = "g"
        messageTemplate = "Outage."
        [group]
        on_call_manager = "duty"
        [policy.rate_limit.endpoints]
        voice = 2
        [carriers.voice]
        capacity_per_sec = 1
        burst = 1
        retry_after = "5s"
        [behaviours.calls]
        ack = { voice = 1.0 }
        ack_delay = { median = "5s", p95 = "10s" }
        [[stakeholders]]
        id = "duty"
        phone = "+1 202 555 0100"
        member = false
        [[population]]
        count = 150
        prefix = "staff"
        tiers = { 3 = 1.0 }
        channels = { voice = 1.0, sms = 0.0, email = 1.0, push = 0.0 }
        behaviour = "calls"
    "#;
    let s = Scenario::from_toml(text).unwrap_or_else(|e| panic!("{e:?}"));
    let (d, r) = run(s, 5);
    assert!(r.passed(), "{}", r.render());
    assert!(
        r.carriers["voice"].throttled_429 > 0,
        "the carrier did throttle"
    );
    assert!(
        r.first_contact_secs.max > 120.0,
        "people queued past the bound"
    );
    let out = entries(&d)
        .iter()
        .filter(|e| {
            e.record.kind == AuditKind::ChannelThrottledOut
                || e.record.cause == Some(AuditKind::ChannelThrottledOut)
        })
        .count();
    assert_eq!(out, 0, "pacing behind others is not throttling");
    assert_eq!(r.final_states.acknowledged, 150, "everyone was called");
}

#[test]
fn a_manager_told_of_hundreds_of_failures_gets_messages_naming_at_most_the_bundle() {
    // 700 people who never answer all fail to one on-call manager within a
    // few seconds. A message to the manager names its own failure and at
    // most BUNDLE_MAX other open ones; answering it acknowledges them all,
    // so every failure is acknowledged by the manager.
    let text = r#"
        [incident]
        incidentId = "INC-BUNDLE"
        severity = "P1"
        stakeholderGroupId = "g"
        messageTemplate = "Outage."
        [group]
        on_call_manager = "duty"
        [policy.rate_limit]
        per_second = 1000
        [carriers.voice]
        capacity_per_sec = 1000
        unreachable = 1.0
        [carriers.email]
        capacity_per_sec = 1000
        [behaviours.silent]
        never = 1.0
        [behaviours.duty]
        ack = { email = 1.0 }
        ack_delay = { median = "20s", p95 = "40s" }
        [[stakeholders]]
        id = "duty"
        email = "duty@example.com"
        member = false
        behaviour = "duty"
        [[population]]
        count = 700
        prefix = "staff"
        tiers = { 3 = 1.0 }
        channels = { voice = 1.0, sms = 0.0, email = 0.0, push = 0.0 }
        behaviour = "silent"
    "#;
    let s = Scenario::from_toml(text).unwrap_or_else(|e| panic!("{e:?}"));
    let (d, r) = run(s, 3);
    assert!(r.passed(), "{}", r.render());
    assert_eq!(r.final_states.escalated, 700, "{}", r.render());
    every_failure_reached_a_person(&r);
    let most = muster::app::BUNDLE_MAX + 1;
    let sizes: Vec<usize> = entries(&d)
        .iter()
        .filter(|e| e.record.kind == AuditKind::SendAccepted && e.stakeholder.as_str() == "duty")
        .map(|e| e.named.len())
        .collect();
    assert!(sizes.iter().all(|n| *n <= most), "{sizes:?}");
    assert!(
        sizes.contains(&most),
        "some message met the bound: {sizes:?}"
    );
    let by_duty = r
        .escalation_stories
        .iter()
        .filter(|s| matches!(&s.outcome, EscalationOutcome::Acknowledged { by, .. } if by.as_str() == "duty"))
        .count();
    assert_eq!(by_duty, 700);
}

#[test]
fn acknowledgements_still_to_come_after_the_window_are_no_timeout() {
    // Ten people answer their phone 30 to 60 minutes late: each cascade
    // fails after its hold and is escalated to the desk, which acknowledges
    // within a minute. The drill's window (20 minutes) ends with every
    // cascade ended and the ten late answers still to come: the run passed,
    // and the report says what was still to come.
    let text = r#"
        name = "Late answers"
        seed = 7
        max_virtual = "20m"
        [incident]
        incidentId = "INC-LATE"
        severity = "P1"
        stakeholderGroupId = "g"
        messageTemplate = "Outage."
        timestamp = "2024-05-20T14:32:00Z"
        [group]
        on_call_manager = "desk"
        [behaviours.late]
        ack = { voice = 1.0 }
        ack_delay = { median = "40m", p95 = "55m" }
        [behaviours.desk]
        ack = { voice = 1.0, sms = 1.0, email = 1.0, push = 1.0 }
        ack_delay = { median = "10s", p95 = "30s" }
        [[stakeholders]]
        id = "desk"
        tier = 1
        phone = "+1 212 555 0190"
        behaviour = "desk"
        member = false
        [[population]]
        count = 10
        prefix = "late"
        channels = { voice = 1.0 }
        behaviour = "late"
    "#;
    let s = Scenario::from_toml(text).unwrap_or_else(|e| panic!("{e:?}"));
    let (_, r) = run(s, 7);
    assert_eq!(r.final_states.active, 0, "{}", r.render());
    assert!(!r.timed_out, "{}", r.render());
    assert!(r.passed(), "{}", r.render());
    assert_eq!(r.left_at_end.acks, 10, "{:?}", r.left_at_end);
    assert!(
        r.render().contains("After the window: 10 acknowledgements"),
        "{}",
        r.render()
    );
}

#[test]
fn random_fault_mixes_break_no_rule() {
    // A sample of `muster bench faults` (docs/benchmarks.md has 10,000):
    // outages, 429s with and without Retry-After, capacity changes, lost,
    // late, duplicate and unknown receipts, answers that never come, lost
    // jobs and timers, re-sent triggers, duplicate acknowledgements, a
    // failing directory lookup, early closes and empty groups.
    let mut broken = Vec::new();
    for seed in 1..=150 {
        let s = muster::drill::faults::mix(seed).unwrap_or_else(|e| panic!("seed {seed}: {e:?}"));
        let (_, r) = run(s, seed);
        let problems = muster::drill::faults::problems(&r);
        if !problems.is_empty() {
            broken.push(format!("seed {seed}: {}", problems.join("; ")));
        }
    }
    assert!(broken.is_empty(), "{broken:#?}");
}

#[test]
fn the_report_page_plots_what_the_run_recorded_and_needs_nothing_from_outside() {
    let (_, r) = drill("seed-p1-outage");
    // The plots' last points are the report's own counts.
    let s = &r.series;
    let contacted = r.first_contact_secs.count;
    assert_eq!(s.first_contacts.last().copied(), Some(contacted));
    assert_eq!(
        s.acknowledged.last().copied(),
        Some(r.final_states.acknowledged)
    );
    assert_eq!(s.failures.last().copied(), Some(r.escalations.failures));
    assert_eq!(
        s.failures_acknowledged.last().copied(),
        Some(r.escalations.acknowledged)
    );
    for (name, per_bucket) in &s.accepted {
        assert_eq!(
            per_bucket.iter().sum::<u64>(),
            r.carriers[name].accepted,
            "{name}: every accepted send is in one bucket"
        );
    }
    assert!(s.first_contacts.len() as u64 <= muster::drill::Series::BUCKETS);
    let page = muster::drill::html::render(&r);
    assert!(page.starts_with("<!doctype html>"));
    assert!(page.matches("<svg").count() >= 3, "{page}");
    assert!(page.matches("<polyline").count() >= 4);
    for outside in ["http://", "https://", "<script", " src=", "<link"] {
        assert!(!page.contains(outside), "the page asks for {outside}");
    }
    assert!(page.contains(&r.scenario));
    assert!(!page.contains("NaN") && !page.contains("inf"), "{page}");
}

#[test]
fn jobs_and_events_delivered_to_two_workers_at_once_tell_nobody_twice() {
    // Every job, timer and event is handed to two workers at once whose
    // store calls interleave (a queue's at-least-once delivery, a webhook
    // retried while its first delivery runs): each send is claimed by a
    // conditional write before it goes, so no carrier takes one attempt
    // twice, nothing is sent for a cascade already ended, every invariant
    // holds and every cascade ends.
    let text = r#"
        [incident]
        incidentId = "INC-TWICE"
        severity = "P1"
        stakeholderGroupId = "g"
        messageTemplate = "Outage."
        [group]
        on_call_manager = "duty"
        [policy.escalation]
        fallback = ["desk"]
        [carriers.voice]
        capacity_per_sec = 2
        burst = 2
        retry_after = "5s"
        duplicate_receipts = 0.3
        [carriers.sms]
        transient = 0.1
        [faults]
        concurrent_deliveries = 1.0
        duplicate_acks = 0.2
        [behaviours.some]
        never = 0.3
        ack = { voice = 0.6, sms = 0.5, email = 0.5, push = 0.5 }
        ack_delay = { median = "20s", p95 = "2m" }
        [behaviours.desk]
        ack = { voice = 1.0, sms = 1.0, email = 1.0, push = 1.0 }
        ack_delay = { median = "10s", p95 = "30s" }
        [[stakeholders]]
        id = "duty"
        phone = "+1 202 555 0100"
        email = "duty@example.com"
        behaviour = "some"
        member = false
        [[stakeholders]]
        id = "desk"
        phone = "+44 20 7946 0900"
        email = "desk@example.com"
        behaviour = "desk"
        member = false
        [[population]]
        count = 60
        prefix = "staff"
        tiers = { 1 = 0.3, 2 = 0.3, 3 = 0.4 }
        channels = { voice = 1.0, sms = 1.0, email = 1.0, push = 0.5 }
        behaviour = "some"
        manager = "duty"
    "#;
    let s = Scenario::from_toml(text).unwrap_or_else(|e| panic!("{e:?}"));
    let (_, r) = run(s, 11);
    assert!(r.concurrent_deliveries > 100, "{}", r.concurrent_deliveries);
    assert!(r.passed(), "{}", r.render());
    assert_eq!(r.invariant_violations, 0, "{:?}", r.violations);
    assert_eq!(r.final_states.active, 0);
    for (channel, c) in &r.carriers {
        assert_eq!(c.sent_after_end, 0, "{channel}");
    }
}

#[test]
fn a_receipt_that_comes_before_the_carriers_answer_is_applied_not_lost() {
    // Every carrier reports on each message before its answer to the send
    // reaches Muster (the message's reference is not written yet). The
    // receipts still count: each unreachable call moves the person on to
    // SMS at once instead of after the receipt timeout, each text is
    // audited as delivered, and nobody waits out a timeout.
    let text = r#"
        [incident]
        incidentId = "INC-EARLY"
        severity = "P1"
        stakeholderGroupId = "g"
        messageTemplate = "Outage."
        [group]
        on_call_manager = "duty"
        [carriers.voice]
        unreachable = 1.0
        early_receipts = 1.0
        [carriers.sms]
        early_receipts = 1.0
        [behaviours.texts]
        ack = { voice = 0.0, sms = 1.0, email = 0.0, push = 0.0 }
        ack_delay = { median = "20s", p95 = "1m" }
        [[stakeholders]]
        id = "duty"
        phone = "+1 202 555 0100"
        behaviour = "texts"
        member = false
        [[population]]
        count = 40
        prefix = "staff"
        channels = { voice = 1.0, sms = 1.0 }
        behaviour = "texts"
        manager = "duty"
    "#;
    let s = Scenario::from_toml(text).unwrap_or_else(|e| panic!("{e:?}"));
    let (d, r) = run(s, 5);
    assert!(r.passed(), "{}", r.render());
    let all = entries(&d);
    let sent = |c: Channel| -> Vec<(String, Option<u32>)> {
        all.iter()
            .filter(|e| e.record.kind == AuditKind::SendAccepted && e.record.channel == Some(c))
            .map(|e| (e.stakeholder.to_string(), e.record.attempt))
            .collect()
    };
    let heard = |k: AuditKind, who: &(String, Option<u32>)| {
        all.iter().any(|e| {
            e.record.kind == k && e.stakeholder.as_str() == who.0 && e.record.attempt == who.1
        })
    };
    let (calls, texts) = (sent(Channel::Voice), sent(Channel::Sms));
    assert_eq!((calls.len(), texts.len()), (40, 40));
    assert_eq!(
        r.early_receipts_held, 80,
        "every call's and text's receipt came early"
    );
    for call in &calls {
        assert!(heard(AuditKind::ChannelUnreachable, call), "{call:?}");
    }
    for text in &texts {
        assert!(heard(AuditKind::Delivered, text), "{text:?}");
    }
    assert!(
        all.iter()
            .all(|e| e.record.kind != AuditKind::ChannelTimeout)
    );
    assert_eq!(r.final_states.acknowledged, 40);
    assert_eq!(r.final_states.active, 0);
}

#[test]
fn two_incidents_at_once_share_each_carriers_capacity_and_lose_nobody() {
    // A second P1, for 200 of the first incident's 300 people, is declared
    // 5 s into the first. Both draw on one voice carrier that takes 10
    // calls a second, which Muster was told: the limiter is the carrier's,
    // not the incident's, so the two together never push it past its
    // capacity (no 429), the 500 first contacts take about 500 / 10 s, and
    // every member of each incident is contacted and ends, acknowledged or
    // escalated to someone who is reached.
    let text = r#"
        [incident]
        incidentId = "INC-FIRST"
        severity = "P1"
        stakeholderGroupId = "all"
        messageTemplate = "Region outage."
        [[incidents]]
        incidentId = "INC-SECOND"
        severity = "P1"
        stakeholderGroupId = "payments"
        messageTemplate = "Payments outage."
        at = "5s"
        members = 200
        [group]
        on_call_manager = "duty"
        [policy.rate_limit]
        per_second = 10
        [carriers.voice]
        capacity_per_sec = 10
        burst = 10
        [behaviours.calls]
        ack = { voice = 1.0, sms = 1.0, email = 1.0, push = 1.0 }
        ack_delay = { median = "20s", p95 = "1m" }
        [[stakeholders]]
        id = "duty"
        phone = "+1 202 555 0100"
        behaviour = "calls"
        member = false
        [[population]]
        count = 300
        prefix = "staff"
        channels = { voice = 1.0, sms = 0.0, email = 0.0, push = 0.0 }
        behaviour = "calls"
        manager = "duty"
    "#;
    let s = Scenario::from_toml(text).unwrap_or_else(|e| panic!("{e:?}"));
    let (_, r) = run(s, 3);
    assert!(r.passed(), "{}", r.render());
    assert_eq!(r.invariant_violations, 0, "{:?}", r.violations);
    let [first, second] = &r.incidents[..] else {
        panic!("two incidents: {:?}", r.incidents);
    };
    for (o, members) in [(first, 300), (second, 200)] {
        let f = &o.final_states;
        assert_eq!(o.members, members, "{}", o.incident);
        assert_eq!(
            f.acknowledged + f.escalated,
            members,
            "{}: {o:?}",
            o.incident
        );
    }
    every_failure_reached_a_person(&r);
    let voice = &r.carriers["voice"];
    assert_eq!(voice.throttled_429, 0, "{voice:?}");
    assert!(
        voice.accepted >= 500,
        "a call a person an incident: {voice:?}"
    );
    let last = first
        .last_first_contact_secs
        .max(5.0 + second.last_first_contact_secs);
    assert!(
        last <= 1.10 * 500.0 / 10.0,
        "last first contact at {last} s"
    );
    assert!(
        last >= 0.9 * 500.0 / 10.0,
        "faster than the carrier allows: {last} s"
    );
}

#[test]
fn a_slow_hris_delays_first_contacts_but_loses_nobody() {
    // The live contact lookup takes about 3 s a person, eight at a time:
    // expanding 240 people takes minutes instead of an instant. Everyone
    // is still contacted and every cascade ends; the delay shows in the
    // first-contact times, which a lookup at once does not have.
    let text = |latency: &str| {
        format!(
            r#"
        [incident]
        incidentId = "INC-SLOW-HRIS"
        severity = "P1"
        stakeholderGroupId = "g"
        messageTemplate = "Outage."
        [group]
        on_call_manager = "duty"
        [contact_source]
        failure_rate = 0.05
        {latency}
        [behaviours.calls]
        ack = {{ voice = 1.0, sms = 1.0, email = 1.0, push = 1.0 }}
        ack_delay = {{ median = "10s", p95 = "30s" }}
        [[stakeholders]]
        id = "duty"
        phone = "+1 202 555 0100"
        behaviour = "calls"
        member = false
        [[population]]
        count = 240
        prefix = "staff"
        tiers = {{ 3 = 1.0 }}
        channels = {{ voice = 0.0, sms = 1.0, email = 1.0, push = 0.0 }}
        behaviour = "calls"
    "#
        )
    };
    let scenario = |t: String| Scenario::from_toml(&t).unwrap_or_else(|e| panic!("{e:?}"));
    let (_, slow) = run(
        scenario(text(r#"latency = { median = "3s", p95 = "6s" }"#)),
        3,
    );
    let (_, quick) = run(scenario(text("")), 3);
    for r in [&slow, &quick] {
        assert!(r.passed(), "{}", r.render());
        assert_eq!(r.final_states.active, 0);
        assert_eq!(r.final_states.acknowledged, 240, "{}", r.render());
    }
    // 240 lookups of about 3 s, eight at a time: the last person waits
    // about 90 s for theirs.
    assert!(
        slow.first_contact_secs.max >= 60.0,
        "{}",
        slow.first_contact_secs.max
    );
    assert!(
        quick.first_contact_secs.max < 10.0,
        "{}",
        quick.first_contact_secs.max
    );
}

/// Everyone who answers "I need help" ends RESPONDED, is named at once to
/// a manager who then acknowledges it, and the report counts each answer
/// from the audit trail, none of them as a failure.
#[test]
fn are_you_safe_every_answer_that_needs_help_reaches_a_manager_who_takes_it_up() {
    let (d, r) = drill("are-you-safe");
    let entries = entries(&d);
    let helped: Vec<&AuditEntry> = entries
        .iter()
        .filter(|e| e.route == Route::Member && e.record.kind == AuditKind::Responded)
        .collect();
    assert!(helped.len() >= 3, "some need help: {}", helped.len());
    for e in &helped {
        assert_eq!(e.record.response.as_deref(), Some("2"));
        let st = story(&r, e.stakeholder.as_str());
        assert_eq!(st.answered.as_deref(), Some("2"));
        assert!(
            matches!(st.outcome, EscalationOutcome::Acknowledged { .. }),
            "{}: {:?}",
            e.stakeholder,
            st.outcome
        );
        // Named at once: the manager's message was offered within seconds.
        assert!(
            st.first_offer_ms.is_some_and(|ms| ms < 5_000),
            "{:?}",
            st.first_offer_ms
        );
    }
    // The report's counts are the audit's: each member's last answer, by
    // key (a late one after the cascade ended included), and no answer
    // counted as a failure.
    let mut last = std::collections::BTreeMap::new();
    for e in &entries {
        if e.route == Route::Member
            && let Some(k) = &e.record.response
            && matches!(
                e.record.kind,
                AuditKind::Acknowledged | AuditKind::Responded | AuditKind::AckAfterEnd
            )
        {
            last.insert(e.stakeholder.clone(), k.clone());
        }
    }
    for key in ["1", "2"] {
        let n = last.values().filter(|k| k.as_str() == key).count() as u64;
        assert_eq!(r.answers.get(key).copied(), Some(n), "answer {key}");
    }
    let failures = entries
        .iter()
        .filter(|e| e.route == Route::Member && e.record.kind == AuditKind::CascadeFailure)
        .count() as u64;
    assert_eq!(r.cascade_failures, failures);
    assert_eq!(r.escalations.responded, helped.len() as u64);
    let text = r.render();
    assert!(text.contains("answered 2"), "{text}");
}

#[test]
fn a_drill_behaviour_may_only_give_the_incident_s_answers() {
    let text = std::fs::read_to_string(format!(
        "{}/../examples/drills/are-you-safe.toml",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap_or_default()
    .replace(
        r#"answers = { "1" = 0.95, "2" = 0.05 }"#,
        r#"answers = { "1" = 0.95, "3" = 0.5 }"#,
    );
    let errors = Scenario::from_toml(&text).err().unwrap_or_default();
    let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
    assert!(fields.contains(&"behaviours.staff.answers.3"), "{fields:?}");
    assert!(fields.contains(&"behaviours.staff.answers"), "{fields:?}");
}

/// Once the quorum is reached (by the audit: the acknowledgement that met
/// it), nobody more is called: every member still open is stood down, each
/// cancellation audited with the reason, no message to a member is taken
/// by a carrier after, and the moment recorded is not before the audit's.
#[test]
fn quorum_stop_stands_down_everyone_still_open_once_the_quorum_is_reached() {
    let (d, r) = drill("quorum-stop");
    let q = r.quorum.clone().unwrap_or_default();
    let (Some(reached), Some(recorded)) = (q.reached_after_secs, q.recorded_after_secs) else {
        panic!("the quorum was reached: {q:?}");
    };
    assert!(recorded >= reached, "{q:?}");
    let entries = entries(&d);
    let start = r.started_at_ms;
    let at = |e: &AuditEntry| (e.at.0 - start) as f64 / 1000.0;
    // By the audit, at the moment reached: 5 acknowledged, 2 of tier 1.
    let acked_by = entries
        .iter()
        .filter(|e| {
            e.route == Route::Member && e.record.kind == AuditKind::Acknowledged && at(e) <= reached
        })
        .count();
    assert!(acked_by >= 5, "{acked_by}");
    let stood_down: Vec<&AuditEntry> = entries
        .iter()
        .filter(|e| {
            e.record.kind == AuditKind::Cancelled
                && e.record
                    .note
                    .as_deref()
                    .is_some_and(|n| n.contains("quorum"))
        })
        .collect();
    assert_eq!(stood_down.len() as u64, q.stopped);
    assert!(q.stopped > 0);
    for e in &stood_down {
        assert_eq!(e.route, Route::Member, "escalations go on");
        assert!(at(e) >= recorded, "stood down only after the quorum");
    }
    // Every member cascade ends: acknowledged, answered, stood down.
    assert_eq!(
        r.final_states.cancelled, q.stopped,
        "every cancellation is the quorum's"
    );
    let last_member_send = entries
        .iter()
        .filter(|e| e.route == Route::Member && e.record.kind == AuditKind::SendAccepted)
        .map(at)
        .fold(0.0, f64::max);
    assert!(
        last_member_send <= recorded + 1.0,
        "a member message was taken {last_member_send}s in, after the quorum at {recorded}s"
    );
    assert!(
        r.render()
            .contains("quorum         5 in all and 2 of tier 1: reached")
    );
}

/// Each update goes once to each person of its audience a message reached,
/// never by a call; the all-clear to everyone reached. Counted from the
/// audit, and checked against who acknowledged when.
#[test]
fn updates_go_once_to_their_audience_and_the_all_clear_to_everyone_reached() {
    let (d, r) = drill("updates-all-clear");
    let entries = entries(&d);
    let names: Vec<&str> = r.updates.iter().map(|u| u.update.as_str()).collect();
    assert_eq!(names, ["update 1", "update 2", "the all-clear"]);
    let start = r.started_at_ms;
    let member_entries = |kind: AuditKind| {
        entries
            .iter()
            .filter(move |e| e.route == Route::Member && e.record.kind == kind)
    };
    // Who had acknowledged by each update's time.
    let acked_by = |secs: u64| -> std::collections::HashSet<String> {
        member_entries(AuditKind::Acknowledged)
            .chain(member_entries(AuditKind::AckAfterEnd))
            .filter(|e| e.at.0 - start <= secs * 1000)
            .map(|e| e.stakeholder.to_string())
            .collect()
    };
    let got = |name: &str| -> Vec<String> {
        member_entries(AuditKind::UpdateSent)
            .chain(member_entries(AuditKind::UpdateFailed))
            .filter(|e| {
                e.record
                    .note
                    .as_deref()
                    .is_some_and(|n| n.split(':').next() == Some(name))
            })
            .map(|e| e.stakeholder.to_string())
            .collect()
    };
    let once = |who: &[String]| {
        let set: std::collections::HashSet<_> = who.iter().collect();
        set.len() == who.len()
    };
    // Update 1 (at 2m, the unacknowledged): nobody who had acknowledged by then.
    let u1 = got("update 1");
    assert!(!u1.is_empty() && once(&u1));
    let acked_2m = acked_by(120);
    assert!(u1.iter().all(|p| !acked_2m.contains(p)));
    // Update 2 (at 5m, the acknowledged): only people who had.
    let u2 = got("update 2");
    assert!(!u2.is_empty() && once(&u2));
    let acked_later = acked_by(5 * 60 + 10);
    assert!(u2.iter().all(|p| acked_later.contains(p)));
    // The all-clear: once to every member a message reached.
    let all = got("the all-clear");
    assert!(once(&all));
    let reached = d.store.with_cascades(|rs| {
        rs.iter()
            .filter(|r| {
                r.cascade.key.route == Route::Member && r.cascade.first_contact_at.is_some()
            })
            .count()
    });
    assert_eq!(all.len(), reached);
    // Never a call.
    assert!(
        member_entries(AuditKind::UpdateSent).all(|e| e.record.channel != Some(Channel::Voice))
    );
    assert!(r.render().contains("the all-clear"));
}

/// Each member is sent the message of their directory locale, else of its
/// language, else the default, and the audit's first entry of their cascade
/// says which; the report's counts are the audit's.
#[test]
fn languages_each_member_is_sent_the_message_of_their_locale_and_the_audit_says_which() {
    let (d, r) = drill("languages");
    let trigger = &d.scenario.trigger;
    let locale_of: std::collections::HashMap<String, Option<String>> = d
        .scenario
        .people
        .iter()
        .map(|p| (p.id.to_string(), p.locale.clone()))
        .collect();
    let all = entries(&d);
    let started: Vec<&AuditEntry> = all
        .iter()
        .filter(|e| e.route == Route::Member && e.record.kind == AuditKind::CascadeStarted)
        .collect();
    assert_eq!(started.len(), 120);
    for e in &started {
        let person = locale_of.get(e.stakeholder.as_str()).cloned().flatten();
        let want = trigger
            .template_for(person.as_deref())
            .1
            .map(str::to_string);
        assert_eq!(e.locale, want, "{}: {person:?}", e.stakeholder);
    }
    // fr-FR people get fr (its language), es people the default.
    assert_eq!(r.languages.get("fr-CA"), Some(&60));
    assert_eq!(r.languages.get("fr"), Some(&24));
    assert_eq!(r.languages.get("default"), Some(&36));
}

/// A P3 at 23:30 London time: everyone in London (quiet 22:00-07:00 there)
/// is first reached at 07:00 London time, never before; in Singapore
/// (07:30 there) at once. The report's count is the audit's.
#[test]
fn quiet_hours_hold_a_p3_until_each_person_s_window_ends_in_their_own_time_zone() {
    let (d, r) = drill("quiet-hours");
    assert_eq!(r.quiet_held, 30);
    let london_morning =
        muster::domain::Ts::parse_rfc3339("2026-12-07T07:00:00Z").unwrap_or_else(|e| panic!("{e}"));
    let mut first: std::collections::BTreeMap<String, muster::domain::Ts> = Default::default();
    for e in entries(&d) {
        if e.route == Route::Member && e.record.kind == AuditKind::SendAccepted {
            first.entry(e.stakeholder.to_string()).or_insert(e.at);
        }
    }
    let start = muster::domain::Ts(r.started_at_ms);
    for (who, at) in &first {
        if who.starts_with("ldn-") {
            assert!(
                *at >= london_morning,
                "{who} reached at {at:?}, in their quiet hours"
            );
        } else {
            assert!(
                at.since(start) < 60_000,
                "{who} in Singapore waited {} ms",
                at.since(start)
            );
        }
    }
    assert_eq!(first.keys().filter(|w| w.starts_with("ldn-")).count(), 30);
}

/// Every written message of an incident with a conference bridge names it
/// (rendered as the drill's carriers were sent them, for every cascade the
/// drill created, members and escalations).
#[test]
fn bridge_every_written_message_names_the_bridge() {
    let (d, _) = drill("bridge");
    let incident = d
        .store
        .all_incidents()
        .into_iter()
        .next()
        .unwrap_or_else(|| panic!("no incident"));
    let line = "Conference bridge: +442079460000, PIN 4821, https://meet.example.com/network-bcp";
    let records = d.store.all_cascades();
    assert!(records.len() >= 60);
    for rec in &records {
        for channel in [Channel::Sms, Channel::Email, Channel::Push] {
            let (_, body) = muster::app::render(&incident, rec, channel, None, &[], true);
            assert!(body.contains(line), "{channel:?}: {body}");
        }
    }
}
