//! Whole-system drills on the memory adapters, in virtual time.

use muster::domain::Channel;
use muster::drill::{DrillReport, Scenario, run};
use muster::engine::{AuditKind, Route};

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
    assert_eq!(r.manager_cascades, 1);
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
    let (_, r) = drill("mass-activation-10k");
    assert_eq!(r.stakeholders, 10_000);
    let bound = 1.02 * 10_000.0 / 50.0;
    assert!(
        r.first_contact_secs.max <= bound,
        "last first contact at {}s, bound {bound}s",
        r.first_contact_secs.max
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
    assert_eq!(r.needs_review, r.stakeholders, "every cascade flagged");
    assert_eq!(
        r.contact_checks.get("unavailable").copied(),
        Some(r.stakeholders)
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
            .all(|c| *c == Some(muster::app::ContactCheck::Unavailable)),
        "the audit trail records it"
    );
}
