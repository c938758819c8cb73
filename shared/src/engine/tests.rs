//! Table tests of the cascade rules numbered in the module docs (`engine`,
//! "Rules"); each test names its rule. Every step goes
//! through `Run::at`, which also proves the per-transition contract: the
//! version goes up by exactly one, the single audit record agrees with the
//! state, `invariants::check_transition` finds nothing, and a stale event
//! changes nothing but the version.

use super::invariants::check_transition;
use super::*;
use crate::domain::{
    ContactMethods, EmailAddress, IncidentId, PhoneNumber, PushEndpoint, Severity, Stakeholder,
    StakeholderId, Tier,
};
use crate::policy::Policy;
use Channel::{Email, Push, Sms, Voice};
use TimerKind::{DeferredStart, EscalationHold, ReceiptTimeout, Retry, ThrottleWait};

/// 2024-05-20T14:32:00Z, the seed's trigger time.
const T0: Ts = Ts::from_secs(1_716_215_520);
const ALL: [Channel; 4] = [Voice, Sms, Email, Push];

/// Events at seconds after `T0`.
type Script = Vec<(u64, Event)>;

fn s(secs: u64) -> Ts {
    T0.plus(secs * 1000)
}

fn tier(n: i64) -> Tier {
    Tier::new(n).expect("tier 1 to 3")
}

fn key(route: Route) -> CascadeKey {
    CascadeKey {
        incident: IncidentId::parse("INC-2024-0892").expect("valid incident id"),
        stakeholder: StakeholderId::parse("alice").expect("valid stakeholder id"),
        route,
    }
}

fn policy(toml: &str) -> Policy {
    match Policy::from_toml(toml) {
        Ok(p) => p,
        Err(errs) => panic!("test policy is invalid: {errs:?}"),
    }
}

fn result(attempt: u32, result: SendOutcome) -> Event {
    Event::SendResult { attempt, result }
}
fn receipt(attempt: u32, status: ReceiptStatus) -> Event {
    Event::Receipt { attempt, status }
}
fn timer(attempt: u32, kind: TimerKind) -> Event {
    Event::Timer { attempt, kind }
}
fn ack(channel: Channel) -> Event {
    Event::Ack {
        channel,
        attempt: None,
    }
}
fn send(attempt: u32, channel: Channel) -> Command {
    Command::Send { attempt, channel }
}
fn arm(at: Ts, attempt: u32, kind: TimerKind) -> Command {
    Command::ArmTimer { at, attempt, kind }
}
fn attempt(id: u32, channel: Channel, retries: u32, phase: Phase) -> Attempt {
    Attempt {
        id,
        channel,
        retries,
        phase,
        throttled_since: None,
    }
}
fn sending(id: u32, channel: Channel, since: Ts) -> Attempt {
    attempt(id, channel, 0, Phase::Sending { since })
}
/// `a`, held back by carrier throttling since `t`.
fn throttled_from(a: Attempt, t: Ts) -> Attempt {
    Attempt {
        throttled_since: Some(t),
        ..a
    }
}

const ACCEPTED: SendOutcome = SendOutcome::Accepted;
const TRANSIENT: SendOutcome = SendOutcome::Transient;
const FAILED: SendOutcome = SendOutcome::Failed;
const UNREACHABLE: SendOutcome = SendOutcome::Unreachable;
const DELIVERED: ReceiptStatus = ReceiptStatus::Delivered;

/// One cascade driven through `decide`, checking the per-transition contract
/// at every step.
struct Run {
    c: Cascade,
    p: Policy,
}

impl Run {
    /// A P1, tier-1 member cascade under the default policy, with the
    /// seed's parallel voice call off (its own tests turn it on), so that
    /// each rule's table shows that rule alone.
    fn new(plan: &[Channel]) -> Self {
        Run::with(
            plan,
            Severity::P1,
            tier(1),
            Route::Member,
            policy("[cascade]\nparallel_voice = []\n"),
        )
    }

    fn with(plan: &[Channel], severity: Severity, tier: Tier, route: Route, p: Policy) -> Self {
        let c = Cascade::new(key(route), severity, tier, ChannelPlan::new(plan), T0);
        Run { c, p }
    }

    fn at(&mut self, secs: u64, e: Event) -> Decision {
        self.at_ts(s(secs), e)
    }

    fn at_ts(&mut self, now: Ts, e: Event) -> Decision {
        let before = self.c.clone();
        let d = decide(&before, &e, &self.p, now);
        assert_eq!(
            d.next.version,
            before.version + 1,
            "{e:?}: version must go up by one"
        );
        let broken = check_transition(&before, &e, &d, &self.p);
        assert!(
            broken.is_empty(),
            "{e:?} at {now:?} broke invariants: {broken:?}"
        );
        assert_eq!(d.audit.status, d.next.status, "{e:?}: audit status");
        assert_eq!(
            usize::from(d.audit.in_flight),
            d.next.in_flight.len(),
            "{e:?}: audit in_flight"
        );
        if d.audit.kind == AuditKind::StaleIgnored {
            let mut same = before.clone();
            same.version += 1;
            assert_eq!(
                d.next, same,
                "{e:?}: a stale event changes nothing but the version"
            );
            assert!(
                d.audit.note.is_some(),
                "{e:?}: a stale event is audited with a reason"
            );
        }
        self.c = d.next.clone();
        d
    }

    /// Runs a script of (seconds after T0, event); returns the last decision.
    fn script(&mut self, steps: &[(u64, Event)]) -> Decision {
        let mut last = None;
        for (secs, e) in steps {
            last = Some(self.at(*secs, e.clone()));
        }
        last.expect("a script has at least one step")
    }

    fn channels_in_flight(&self) -> Vec<Channel> {
        self.c.in_flight.iter().map(|a| a.channel).collect()
    }
}

fn assert_stale(d: &Decision) {
    assert_eq!(d.audit.kind, AuditKind::StaleIgnored, "{:?}", d.audit);
    assert_eq!(d.commands, [], "a stale event issues nothing");
}

fn note(d: &Decision) -> &str {
    d.audit.note.as_deref().unwrap_or("")
}

/// Voice on attempt 1, three transient failures and three retries: voice is on
/// attempt 4, retry 3, in flight since `s(108)`.
fn voice_with_retries_spent(r: &mut Run) {
    r.script(&[
        (0, Event::Start),
        (1, result(1, TRANSIENT)),
        (16, timer(2, Retry)),
        (17, result(2, TRANSIENT)),
        (47, timer(3, Retry)),
        (48, result(3, TRANSIENT)),
        (108, timer(4, Retry)),
    ]);
    assert_eq!(
        r.c.in_flight,
        [attempt(4, Voice, 3, Phase::Sending { since: s(108) })]
    );
}

fn person(contacts: ContactMethods, preferences: &[Channel]) -> Stakeholder {
    Stakeholder {
        id: StakeholderId::parse("alice").expect("valid id"),
        name: "Alice".into(),
        tier: tier(1),
        contacts,
        preferences: preferences.to_vec(),
        manager: None,
        locale: None,
        quiet: None,
        idp: None,
        active: true,
    }
}

fn contacts(phone: bool, email: bool, push: bool) -> ContactMethods {
    ContactMethods {
        phone: phone.then(|| PhoneNumber::parse("+442079460958").expect("valid phone")),
        sms: None,
        email: email.then(|| EmailAddress::parse("alice@example.com").expect("valid email")),
        push: push.then(|| {
            PushEndpoint::parse("arn:aws:sns:eu-west-1:123456789012:endpoint/APNS/app/1")
                .expect("valid endpoint")
        }),
        sms_opted_out: false,
    }
}

// Rule 1: channel plan.

/// Rule 1.
#[test]
fn plan_follows_severity_order_filtered_by_contacts() {
    let p = policy(
        r#"
        [channel_order]
        P3 = ["email", "sms", "voice", "push"]
        "#,
    );
    let no_push = contacts(true, true, false);
    let opted_out = ContactMethods {
        sms_opted_out: true,
        ..no_push.clone()
    };
    let table: [(&str, Severity, Stakeholder, &[Channel]); 6] = [
        (
            "everything",
            Severity::P1,
            person(contacts(true, true, true), &[]),
            &ALL,
        ),
        (
            "no push endpoint",
            Severity::P1,
            person(no_push.clone(), &[]),
            &[Voice, Sms, Email],
        ),
        (
            "sms opted out",
            Severity::P1,
            person(opted_out, &[]),
            &[Voice, Email],
        ),
        (
            "preferences filter, order stays the policy's",
            Severity::P1,
            person(no_push.clone(), &[Email, Voice]),
            &[Voice, Email],
        ),
        (
            "severity's own order",
            Severity::P3,
            person(no_push.clone(), &[]),
            &[Email, Sms, Voice],
        ),
        (
            "preferred but no address",
            Severity::P3,
            person(contacts(false, true, false), &[Push, Email]),
            &[Email],
        ),
    ];
    for (what, sev, who, want) in table {
        assert_eq!(who.plan(p.channels(sev)), want, "{what}");
    }

    // The plan is a snapshot: the cascade follows it, whatever the policy it
    // is later decided under says.
    let plan = person(no_push, &[]).plan(p.channels(Severity::P3));
    let mut r = Run::with(
        &plan,
        Severity::P3,
        tier(2),
        Route::Member,
        Policy::default(),
    );
    let d = r.at(0, Event::Start);
    assert_eq!(d.audit.kind, AuditKind::CascadeStarted);
    assert_eq!(d.audit.started, [Email]);
    assert_eq!(d.commands, [send(1, Email)]);
    assert_eq!(r.c.status, CascadeStatus::Active);
    assert_eq!(r.c.in_flight, [sending(1, Email, s(0))]);
    let d = r.at(1, result(1, FAILED));
    assert_eq!(d.commands, [send(2, Sms)]);
    let d = r.at(2, result(2, FAILED));
    assert_eq!(d.commands, [send(3, Voice)]);
    assert_eq!(r.c.next_step, 3);
}

// Rule 3: transient errors and throttles.

#[test]
fn transient_errors_retry_same_channel_with_backoff_15_30_60() {
    let mut r = Run::new(&[Voice, Sms]);
    let d = r.at(0, Event::Start);
    assert_eq!(d.commands, [send(1, Voice)]);
    // (failure at, failed attempt, retry attempt, expected delay, retry number)
    let table = [(1, 1, 2, 15, 1), (17, 2, 3, 30, 2), (48, 3, 4, 60, 3)];
    for (t, failed, retry, delay, n) in table {
        let d = r.at(t, result(failed, TRANSIENT));
        assert_eq!(d.audit.kind, AuditKind::RetryScheduled);
        assert_eq!(
            (d.audit.channel, d.audit.attempt),
            (Some(Voice), Some(failed))
        );
        assert_eq!(
            (d.audit.retries, d.audit.wait_ms),
            (Some(n), Some(delay * 1000))
        );
        assert_eq!(d.commands, [arm(s(t + delay), retry, Retry)]);
        assert_eq!(
            r.c.in_flight,
            [attempt(
                retry,
                Voice,
                n,
                Phase::Backoff {
                    until: s(t + delay)
                }
            )]
        );

        let d = r.at(t + delay, timer(retry, Retry));
        assert_eq!(d.audit.kind, AuditKind::RetrySent);
        assert_eq!((d.audit.attempt, d.audit.retries), (Some(retry), Some(n)));
        assert_eq!(
            d.commands,
            [send(retry, Voice)],
            "same channel, new attempt id"
        );
        assert_eq!(
            r.c.in_flight,
            [attempt(
                retry,
                Voice,
                n,
                Phase::Sending {
                    since: s(t + delay)
                }
            )]
        );
    }
    assert_eq!(
        (r.c.status, r.c.next_step, r.c.consecutive_failures),
        (CascadeStatus::Active, 1, 0),
        "SMS not started"
    );
}

/// Rule 3.
#[test]
fn fourth_transient_failure_fails_the_channel() {
    let mut r = Run::new(&[Voice, Sms]);
    voice_with_retries_spent(&mut r);
    let d = r.at(109, result(4, TRANSIENT));
    assert_eq!(d.audit.kind, AuditKind::ChannelFailed);
    assert_eq!((d.audit.channel, d.audit.attempt), (Some(Voice), Some(4)));
    assert!(
        note(&d).contains("4 transient failures"),
        "{:?}",
        d.audit.note
    );
    assert_eq!(d.audit.started, [Sms]);
    assert_eq!(d.commands, [send(5, Sms)]);
    assert_eq!(r.c.in_flight, [sending(5, Sms, s(109))]);
    assert_eq!(r.c.consecutive_failures, 1);
}

/// Rule 3.
#[test]
fn retries_stop_after_three() {
    // Seed trap: unbounded retries on an endpoint that never works.
    let mut r = Run::new(&[Voice]);
    voice_with_retries_spent(&mut r);
    let d = r.at(109, result(4, TRANSIENT));
    assert_eq!(d.audit.kind, AuditKind::CascadeFailure);
    assert_eq!(d.audit.cause, Some(AuditKind::ChannelFailed));
    assert_eq!(
        d.commands,
        [Command::EmitCascadeFailure, Command::EscalateToManager]
    );
    assert_eq!(
        (r.c.status, r.c.in_flight.len()),
        (CascadeStatus::Escalated, 0)
    );
    // The carrier keeps failing: nothing more is sent, ever.
    for (t, e) in [
        (110, result(4, TRANSIENT)),
        (130, timer(5, Retry)),
        (400, Event::Reconcile),
    ] {
        assert_stale(&r.at(t, e));
    }
    assert_eq!(
        r.c.next_attempt, 5,
        "four attempt ids were ever used: the first send and three retries"
    );
}

/// Rule 3.
#[test]
fn throttle_waits_retry_after_without_spending_retry_budget() {
    let mut r = Run::new(&[Voice, Sms]);
    r.script(&[
        (0, Event::Start),
        (1, result(1, TRANSIENT)),
        (16, timer(2, Retry)),
    ]);
    let mut t = 17;
    for _ in 0..5 {
        let d = r.at(
            t,
            result(
                2,
                SendOutcome::Throttled {
                    retry_after_ms: 7_000,
                    since: None,
                },
            ),
        );
        assert_eq!(d.audit.kind, AuditKind::Throttled);
        assert_eq!(
            (d.audit.attempt, d.audit.retries, d.audit.wait_ms),
            (Some(2), Some(1), Some(7_000)),
            "the wait is audited"
        );
        assert_eq!(d.commands, [arm(s(t + 7), 2, ThrottleWait)]);
        assert_eq!(
            r.c.in_flight,
            [throttled_from(
                attempt(2, Voice, 1, Phase::Throttled { until: s(t + 7) }),
                s(17)
            )]
        );

        let d = r.at(t + 7, timer(2, ThrottleWait));
        assert_eq!(d.audit.kind, AuditKind::ThrottleResumed);
        assert_eq!(
            d.commands,
            [send(2, Voice)],
            "the same attempt is sent again"
        );
        assert_eq!(
            r.c.in_flight,
            [throttled_from(
                attempt(2, Voice, 1, Phase::Sending { since: s(t + 7) }),
                s(17)
            )]
        );
        t += 8;
    }
    assert_eq!(
        r.c.consecutive_failures, 0,
        "a throttle is not a channel failure"
    );
    // Five throttles later the budget is where one transient error left it.
    let d = r.at(t, result(2, TRANSIENT));
    assert_eq!(d.audit.kind, AuditKind::RetryScheduled);
    assert_eq!((d.audit.retries, d.audit.wait_ms), (Some(2), Some(30_000)));
    assert_eq!(d.commands, [arm(s(t + 30), 3, Retry)]);
}

fn throttled(ms: u64) -> Event {
    result(
        1,
        SendOutcome::Throttled {
            retry_after_ms: ms,
            since: None,
        },
    )
}

/// Rule 3.
#[test]
fn throttling_is_bounded_per_person_then_the_channel_fails_and_the_cascade_moves_on() {
    // P1 tier 1: the bound is the 60 s escalation delay. A carrier that
    // answers 429 every time holds the attempt back without spending a
    // retry until the next wait would pass the bound.
    let mut r = Run::new(&[Voice, Sms]);
    r.at(0, Event::Start);
    let mut t = 0;
    for _ in 0..5 {
        let d = r.at(t, throttled(10_000));
        assert_eq!(d.audit.kind, AuditKind::Throttled, "at {t}");
        assert_eq!(d.audit.retries, Some(0), "no retry spent");
        r.at(t + 10, timer(1, ThrottleWait));
        t += 10;
    }
    // 50 s held so far; another 10 s wait would make 60 s, which is still
    // within the bound; 11 s would not.
    let d = r.at(t, throttled(11_000));
    assert_eq!(
        (d.audit.kind, d.audit.channel, d.audit.wait_ms),
        (AuditKind::ChannelThrottledOut, Some(Voice), Some(61_000))
    );
    assert!(
        note(&d).contains("past the 60s bound"),
        "{:?}",
        d.audit.note
    );
    assert_eq!(d.commands, [send(2, Sms)], "the cascade moves on");
    assert_eq!(
        r.c.consecutive_failures, 1,
        "it counts as a channel failure"
    );

    // The endpoint's limiter, paused by the carrier, had held the send back
    // before the carrier's own answer: that time counts too.
    let mut r = Run::new(&[Voice, Sms]);
    r.at(0, Event::Start);
    let d = r.at(
        100,
        result(
            1,
            SendOutcome::Throttled {
                retry_after_ms: 1_000,
                since: Some(s(30)),
            },
        ),
    );
    assert_eq!(d.audit.kind, AuditKind::ChannelThrottledOut);

    // A policy bound overrides the hold.
    let mut r = Run::with(
        &[Voice, Sms],
        Severity::P1,
        tier(1),
        Route::Member,
        policy("[cascade]\nthrottle_bound = \"5m\"\nparallel_voice = []\n"),
    );
    r.at(0, Event::Start);
    assert_eq!(r.at(0, throttled(200_000)).audit.kind, AuditKind::Throttled);
    r.at(200, timer(1, ThrottleWait));
    assert_eq!(
        r.at(200, throttled(100_001)).audit.kind,
        AuditKind::ChannelThrottledOut
    );
}

// Rule 4: failure, unreachable, receipt timeout.

/// Rule 4.
#[test]
fn failed_or_unreachable_advances_to_next_channel() {
    let accepted = (1, result(1, ACCEPTED));
    let table: [(&str, Script, AuditKind, &[Channel]); 4] = [
        (
            "send failed",
            vec![(5, result(1, FAILED))],
            AuditKind::ChannelFailed,
            &[Sms],
        ),
        (
            "receipt failed",
            vec![accepted.clone(), (5, receipt(1, ReceiptStatus::Failed))],
            AuditKind::ChannelFailed,
            &[Sms],
        ),
        (
            "send unreachable",
            vec![(5, result(1, UNREACHABLE))],
            AuditKind::ChannelUnreachable,
            &[Sms, Email],
        ),
        (
            "receipt unreachable",
            vec![accepted, (5, receipt(1, ReceiptStatus::Unreachable))],
            AuditKind::ChannelUnreachable,
            &[Sms, Email],
        ),
    ];
    for (what, steps, kind, started) in table {
        let mut r = Run::new(&ALL);
        r.at(0, Event::Start);
        let d = r.script(&steps);
        assert_eq!(d.audit.kind, kind, "{what}");
        assert_eq!(
            (d.audit.channel, d.audit.attempt),
            (Some(Voice), Some(1)),
            "{what}"
        );
        assert_eq!(d.audit.started, started, "{what}");
        let sends: Vec<_> = started
            .iter()
            .zip(2..)
            .map(|(&c, id)| send(id, c))
            .collect();
        assert_eq!(d.commands, sends, "{what}");
        let flight: Vec<_> = started
            .iter()
            .zip(2..)
            .map(|(&c, id)| sending(id, c, s(5)))
            .collect();
        assert_eq!(r.c.in_flight, flight, "{what}");
        assert_eq!(
            (r.c.status, r.c.consecutive_failures),
            (CascadeStatus::Active, 1),
            "{what}"
        );
        assert_eq!(usize::from(r.c.next_step), 1 + started.len(), "{what}");
    }
}

#[test]
fn receipt_timeout_after_120s_is_channel_timeout() {
    // Seed trap: a receipt that never comes must not hang the cascade.
    let mut r = Run::new(&ALL);
    r.at(0, Event::Start);
    let d = r.at(2, result(1, ACCEPTED));
    assert_eq!(d.audit.kind, AuditKind::SendAccepted);
    assert_eq!(d.commands, [arm(s(122), 1, ReceiptTimeout)]);
    assert_eq!(
        r.c.in_flight,
        [attempt(
            1,
            Voice,
            0,
            Phase::AwaitingReceipt { deadline: s(122) }
        )]
    );
    assert_eq!(r.c.first_contact_at, Some(s(2)));

    let d = r.at(122, timer(1, ReceiptTimeout));
    assert_eq!(d.audit.kind, AuditKind::ChannelTimeout);
    assert_eq!((d.audit.channel, d.audit.attempt), (Some(Voice), Some(1)));
    assert_eq!(d.audit.started, [Sms]);
    assert_eq!(d.commands, [send(2, Sms)]);
    assert_eq!(r.c.in_flight, [sending(2, Sms, s(122))]);
    assert_eq!(r.c.consecutive_failures, 1);

    // The receipt that finally turns up is too late to matter.
    assert_stale(&r.at(130, receipt(1, DELIVERED)));
}

// Rule 5: DELIVERED without ACK.

/// Rule 5.
#[test]
fn delivered_without_ack_holds_for_severity_tier_delay_then_advances() {
    // Seed trap: static delays. The hold comes from the severity x tier table.
    let table = [
        (Severity::P1, 1, 60),
        (Severity::P1, 2, 90),
        (Severity::P1, 3, 90),
        (Severity::P2, 1, 180),
        (Severity::P2, 3, 300),
        (Severity::P3, 1, 900),
        (Severity::P3, 3, 900),
        (Severity::P4, 1, 1_800),
        (Severity::P4, 2, 3_600),
    ];
    let mut holds = Vec::new();
    for (sev, t, hold) in table {
        let mut r = Run::with(
            &[Voice, Sms],
            sev,
            tier(t),
            Route::Member,
            Policy::default(),
        );
        r.script(&[(0, Event::Start), (1, result(1, ACCEPTED))]);
        let d = r.at(5, receipt(1, DELIVERED));
        assert_eq!(d.audit.kind, AuditKind::Delivered, "{sev} tier{t}");
        assert_eq!(d.audit.wait_ms, Some(hold * 1000), "{sev} tier{t}");
        assert_eq!(
            d.commands,
            [arm(s(5 + hold), 1, EscalationHold)],
            "{sev} tier{t}"
        );
        assert_eq!(
            r.c.in_flight,
            [attempt(1, Voice, 0, Phase::Holding { until: s(5 + hold) })],
            "{sev} tier{t}"
        );
        assert_eq!(
            (r.c.status, r.c.next_step),
            (CascadeStatus::Active, 1),
            "{sev} tier{t}: nothing else sent while holding"
        );

        let d = r.at(5 + hold, timer(1, EscalationHold));
        assert_eq!(d.audit.kind, AuditKind::NotAcknowledged, "{sev} tier{t}");
        assert_eq!((d.audit.channel, d.audit.attempt), (Some(Voice), Some(1)));
        assert_eq!(d.audit.started, [Sms], "{sev} tier{t}");
        assert_eq!(d.commands, [send(2, Sms)], "{sev} tier{t}");
        assert_eq!(
            r.c.in_flight,
            [sending(2, Sms, s(5 + hold))],
            "{sev} tier{t}"
        );
        holds.push(((sev, t), hold));
    }
    let hold = |k| holds.iter().find(|(key, _)| *key == k).map(|(_, h)| *h);
    assert!(
        hold((Severity::P1, 1)) <= Some(90),
        "P1 escalates within 90 s"
    );
    assert_eq!(
        hold((Severity::P3, 1)),
        Some(15 * 60),
        "P3 uses 15-minute intervals"
    );
    assert_ne!(
        hold((Severity::P1, 1)),
        hold((Severity::P1, 2)),
        "tier matters"
    );
    assert_ne!(
        hold((Severity::P2, 1)),
        hold((Severity::P2, 3)),
        "tier matters"
    );

    // The table itself is policy.
    let p = policy("[escalation_delay.P1]\ntier1 = \"45s\"\n");
    let mut r = Run::with(&[Voice, Sms], Severity::P1, tier(1), Route::Member, p);
    r.script(&[(0, Event::Start), (1, result(1, ACCEPTED))]);
    let d = r.at(5, receipt(1, DELIVERED));
    assert_eq!(d.commands, [arm(s(50), 1, EscalationHold)]);
}

fn parallel_voice_run(plan: &[Channel]) -> Run {
    Run::with(
        plan,
        Severity::P1,
        tier(1),
        Route::Member,
        Policy::default(),
    )
}

/// Rule 5.
#[test]
fn delivered_without_ack_on_sms_places_a_parallel_voice_call_with_the_next_channel() {
    // On by default for P1. Voice was tried first and not acknowledged; SMS
    // is then delivered and not acknowledged within the hold: a voice call
    // goes out again alongside email.
    let mut r = parallel_voice_run(&[Voice, Sms, Email]);
    r.script(&[
        (0, Event::Start),
        (1, result(1, ACCEPTED)),
        (5, receipt(1, DELIVERED)),
        (65, timer(1, EscalationHold)),
        (66, result(2, ACCEPTED)),
        (67, receipt(2, DELIVERED)),
    ]);
    let d = r.at(127, timer(2, EscalationHold));
    assert_eq!(d.audit.kind, AuditKind::NotAcknowledged);
    assert_eq!(d.commands, [send(3, Voice), send(4, Email)]);
    assert_eq!(r.channels_in_flight(), [Voice, Email]);
    assert!(note(&d).contains("parallel voice"), "{:?}", d.audit.note);

    // Voice later in the plan is brought forward; the next channel, SMS,
    // waits the 30 s stagger: voice and SMS never go at the same instant.
    let mut r = parallel_voice_run(&[Email, Sms, Voice]);
    r.script(&[
        (0, Event::Start),
        (1, result(1, ACCEPTED)),
        (5, receipt(1, DELIVERED)),
    ]);
    let d = r.at(65, timer(1, EscalationHold));
    assert_eq!(d.commands, [send(2, Voice), arm(s(95), 3, DeferredStart)]);
    assert_eq!(r.c.plan.as_slice(), [Email, Voice, Sms]);
    assert_eq!(
        r.c.in_flight,
        [
            sending(2, Voice, s(65)),
            attempt(3, Sms, 0, Phase::Deferred { until: s(95) })
        ]
    );
    let d = r.at(95, timer(3, DeferredStart));
    assert_eq!(
        (d.audit.kind, d.commands.as_slice()),
        (AuditKind::DeferredSent, [send(3, Sms)].as_slice())
    );

    // An unanswered call (FAILED receipt) is called again; a dead number
    // (UNREACHABLE) never is.
    for (answer, again) in [
        (ReceiptStatus::Failed, true),
        (ReceiptStatus::Unreachable, false),
    ] {
        let mut r = parallel_voice_run(&[Voice, Sms]);
        r.script(&[
            (0, Event::Start),
            (1, result(1, ACCEPTED)),
            (20, receipt(1, answer)),
        ]);
        assert_eq!(r.channels_in_flight(), [Sms]);
        let sms = r.c.in_flight[0].id;
        r.script(&[(21, result(sms, ACCEPTED)), (22, receipt(sms, DELIVERED))]);
        let d = r.at(82, timer(sms, EscalationHold));
        assert_eq!(
            d.audit.started.contains(&Voice),
            again,
            "{answer:?}: {:?}",
            d.audit.started
        );
    }

    // Voice itself delivered without an ACK: the plan just moves on.
    let mut r = parallel_voice_run(&[Voice, Sms]);
    r.script(&[
        (0, Event::Start),
        (1, result(1, ACCEPTED)),
        (5, receipt(1, DELIVERED)),
    ]);
    assert_eq!(r.at(65, timer(1, EscalationHold)).commands, [send(2, Sms)]);

    // Off for P2 by default, and off when the policy says so.
    for (severity, p) in [
        (Severity::P2, Policy::default()),
        (Severity::P1, policy("[cascade]\nparallel_voice = []\n")),
    ] {
        let mut r = Run::with(&[Voice, Sms, Email], severity, tier(1), Route::Member, p);
        let hold = r.p.escalation_delay(severity, tier(1)) / 1000;
        r.script(&[
            (0, Event::Start),
            (1, result(1, ACCEPTED)),
            (2, receipt(1, DELIVERED)),
            (2 + hold, timer(1, EscalationHold)),
            (3 + hold, result(2, ACCEPTED)),
            (4 + hold, receipt(2, DELIVERED)),
        ]);
        let d = r.at(4 + 2 * hold, timer(2, EscalationHold));
        assert_eq!(d.commands, [send(3, Email)], "{severity}");
    }
}

// Rule 6: bounded parallelism.

/// Rule 6.
#[test]
fn unreachable_starts_next_two_channels_together() {
    let mut r = Run::new(&ALL);
    r.at(0, Event::Start);
    let d = r.at(1, result(1, UNREACHABLE));
    assert_eq!(d.audit.kind, AuditKind::ChannelUnreachable);
    assert_eq!(d.audit.started, [Sms, Email]);
    assert_eq!(d.commands, [send(2, Sms), send(3, Email)]);
    assert_eq!(
        r.c.in_flight,
        [sending(2, Sms, s(1)), sending(3, Email, s(1))]
    );
    assert_eq!(
        (d.audit.in_flight, r.c.next_step, r.c.consecutive_failures),
        (2, 3, 1)
    );

    // One of the pair fails (not UNREACHABLE): nothing new while the other is out.
    r.at(2, result(2, ACCEPTED));
    let d = r.at(3, result(3, FAILED));
    assert_eq!(d.audit.kind, AuditKind::ChannelFailed);
    assert_eq!((d.audit.started.len(), d.commands.len()), (0, 0));
    assert_eq!(r.channels_in_flight(), [Sms]);
    assert_eq!(r.c.consecutive_failures, 2);

    let d = r.at(10, receipt(2, DELIVERED));
    assert_eq!(d.commands, [arm(s(70), 2, EscalationHold)]);
    assert_eq!(r.c.consecutive_failures, 0);
    let d = r.at(70, timer(2, EscalationHold));
    assert_eq!(d.audit.kind, AuditKind::NotAcknowledged);
    assert_eq!(d.commands, [send(4, Push)]);
    assert_eq!(r.c.in_flight, [sending(4, Push, s(70))]);

    // One of the pair UNREACHABLE: the next channel joins the one still out.
    let mut r = Run::new(&ALL);
    r.script(&[
        (0, Event::Start),
        (1, result(1, UNREACHABLE)),
        (2, result(2, ACCEPTED)),
    ]);
    let d = r.at(3, result(3, UNREACHABLE));
    assert_eq!(d.audit.kind, AuditKind::ChannelUnreachable);
    assert_eq!(d.commands, [send(4, Push)]);
    assert_eq!(
        r.c.in_flight,
        [
            attempt(2, Sms, 0, Phase::AwaitingReceipt { deadline: s(122) }),
            sending(4, Push, s(3))
        ]
    );
}

/// Rule 2 and 6.
#[test]
fn voice_and_sms_never_in_flight_together_otherwise() {
    // Seed trap: voice and SMS broadcast at once. Every way voice can end
    // other than UNREACHABLE hands over to SMS alone, and while voice is in
    // any phase SMS is not started.
    let throttled = SendOutcome::Throttled {
        retry_after_ms: 30_000,
        since: None,
    };
    let table: [(&str, Script); 6] = [
        ("send failed", vec![(1, result(1, FAILED))]),
        (
            "receipt failed",
            vec![
                (1, result(1, ACCEPTED)),
                (2, receipt(1, ReceiptStatus::Failed)),
            ],
        ),
        (
            "receipt timeout",
            vec![(1, result(1, ACCEPTED)), (121, timer(1, ReceiptTimeout))],
        ),
        (
            "retries exhausted",
            vec![
                (1, result(1, TRANSIENT)),
                (16, timer(2, Retry)),
                (17, result(2, TRANSIENT)),
                (47, timer(3, Retry)),
                (48, result(3, TRANSIENT)),
                (108, timer(4, Retry)),
                (109, result(4, TRANSIENT)),
            ],
        ),
        (
            "delivered, not acknowledged",
            vec![
                (1, result(1, ACCEPTED)),
                (2, receipt(1, DELIVERED)),
                (62, timer(1, EscalationHold)),
            ],
        ),
        (
            "throttled, then failed",
            vec![
                (1, result(1, throttled)),
                (31, timer(1, ThrottleWait)),
                (32, result(1, FAILED)),
            ],
        ),
    ];
    for (what, steps) in table {
        let mut r = Run::new(&ALL);
        r.at(0, Event::Start);
        let ((t, e), prefix) = steps.split_last().expect("a script ending voice");
        for (t, e) in prefix {
            r.at(*t, e.clone());
            assert_eq!(
                r.channels_in_flight(),
                [Voice],
                "{what}: only voice while voice is out"
            );
            assert_eq!(r.c.next_step, 1, "{what}");
        }
        let d = r.at(*t, e.clone());
        assert_eq!(d.commands, [send(r.c.next_attempt - 1, Sms)], "{what}");
        assert_eq!(
            r.channels_in_flight(),
            [Sms],
            "{what}: SMS alone once voice is done"
        );
    }

    // Even after UNREACHABLE, voice itself is done before the next two start.
    let mut r = Run::new(&ALL);
    r.script(&[(0, Event::Start), (1, result(1, UNREACHABLE))]);
    assert_eq!(r.channels_in_flight(), [Sms, Email]);
}

// Rule 7: hard failure.

/// Rule 7.
#[test]
fn three_consecutive_failures_escalate_with_cascade_failure() {
    let mut r = Run::new(&ALL);
    let d = r.script(&[(0, Event::Start), (1, result(1, FAILED))]);
    assert_eq!(
        (d.commands.as_slice(), r.c.consecutive_failures),
        ([send(2, Sms)].as_slice(), 1)
    );
    let d = r.script(&[(2, result(2, ACCEPTED)), (122, timer(2, ReceiptTimeout))]);
    assert_eq!(
        (d.commands.as_slice(), r.c.consecutive_failures),
        ([send(3, Email)].as_slice(), 2)
    );
    let d = r.at(123, result(3, FAILED));
    assert_eq!(d.audit.kind, AuditKind::CascadeFailure);
    assert_eq!(d.audit.cause, Some(AuditKind::ChannelFailed));
    assert_eq!((d.audit.channel, d.audit.attempt), (Some(Email), Some(3)));
    assert!(
        note(&d).contains("3 consecutive channel failures"),
        "{:?}",
        d.audit.note
    );
    assert_eq!(
        d.commands,
        [Command::EmitCascadeFailure, Command::EscalateToManager]
    );
    assert_eq!(r.c.status, CascadeStatus::Escalated);
    assert_eq!(
        (r.c.in_flight.len(), r.c.ended_at, r.c.next_step),
        (0, Some(s(123)), 3),
        "push is never tried"
    );

    // A delivery breaks the run of failures (threshold 2 to show it).
    let p = policy("[cascade]\nhard_failure_threshold = 2\nparallel_voice = []\n");
    let mut r = Run::with(&ALL, Severity::P1, tier(1), Route::Member, p);
    r.script(&[
        (0, Event::Start),
        (1, result(1, FAILED)),
        (2, result(2, ACCEPTED)),
        (3, receipt(2, DELIVERED)),
        (63, timer(2, EscalationHold)),
    ]);
    let d = r.at(64, result(3, FAILED));
    assert_eq!(d.audit.kind, AuditKind::ChannelFailed);
    assert_eq!(d.commands, [send(4, Push)]);
    assert_eq!(
        (r.c.status, r.c.consecutive_failures),
        (CascadeStatus::Active, 1)
    );
    let d = r.at(65, result(4, FAILED));
    assert_eq!(
        (d.audit.kind, d.audit.cause),
        (AuditKind::CascadeFailure, Some(AuditKind::ChannelFailed))
    );
    assert!(
        note(&d).contains("2 consecutive channel failures"),
        "{:?}",
        d.audit.note
    );
}

/// Rule 7.
#[test]
fn every_channel_tried_without_ack_escalates() {
    let mut r = Run::with(
        &[Email, Push],
        Severity::P2,
        tier(2),
        Route::Member,
        Policy::default(),
    );
    let d = r.script(&[
        (0, Event::Start),
        (1, result(1, ACCEPTED)),
        (2, receipt(1, DELIVERED)),
    ]);
    assert_eq!(d.commands, [arm(s(302), 1, EscalationHold)]);
    let d = r.at(302, timer(1, EscalationHold));
    assert_eq!(d.commands, [send(2, Push)]);
    let d = r.script(&[(303, result(2, ACCEPTED)), (304, receipt(2, DELIVERED))]);
    assert_eq!(d.commands, [arm(s(604), 2, EscalationHold)]);
    let d = r.at(604, timer(2, EscalationHold));
    assert_eq!(d.audit.kind, AuditKind::CascadeFailure);
    assert_eq!(d.audit.cause, Some(AuditKind::NotAcknowledged));
    assert!(
        note(&d).contains("every channel tried without an ACK"),
        "{:?}",
        d.audit.note
    );
    assert_eq!(
        d.commands,
        [Command::EmitCascadeFailure, Command::EscalateToManager]
    );
    assert_eq!(
        (r.c.status, r.c.consecutive_failures, r.c.ended_at),
        (CascadeStatus::Escalated, 0, Some(s(604)))
    );

    // Below the failure threshold, running out of channels escalates too.
    let mut r = Run::new(&[Push]);
    let d = r.script(&[(0, Event::Start), (1, result(1, FAILED))]);
    assert_eq!(
        (d.audit.kind, d.audit.cause),
        (AuditKind::CascadeFailure, Some(AuditKind::ChannelFailed))
    );
    assert!(
        note(&d).contains("every channel tried"),
        "{:?}",
        d.audit.note
    );
    assert_eq!(
        d.commands,
        [Command::EmitCascadeFailure, Command::EscalateToManager]
    );
}

fn escalation() -> Route {
    Route::escalation(StakeholderId::parse("bob").expect("valid stakeholder id"))
}

/// Rule 7.
#[test]
fn an_escalation_follows_the_manager_route_and_climbs_the_chain_when_it_fails() {
    // The escalation uses the manager route's severity (P1 by default), not
    // the incident's P3; when it fails, it escalates further (the app names
    // the failure to the next person of the chain).
    let mut r = Run::with(
        &[Voice, Sms],
        Severity::P3,
        tier(3),
        escalation(),
        Policy::default(),
    );
    let d = r.script(&[
        (0, Event::Start),
        (1, result(1, ACCEPTED)),
        (5, receipt(1, DELIVERED)),
    ]);
    assert_eq!(d.audit.wait_ms, Some(90_000));
    assert_eq!(d.commands, [arm(s(95), 1, EscalationHold)]);
    let d = r.at(95, timer(1, EscalationHold));
    assert_eq!(d.commands, [send(2, Sms)]);
    let d = r.at(96, result(2, FAILED));
    assert_eq!(d.audit.kind, AuditKind::CascadeFailure);
    assert_eq!(
        d.commands,
        [Command::EmitCascadeFailure, Command::EscalateToManager],
        "up the chain"
    );
    assert_eq!(r.c.status, CascadeStatus::Escalated);

    let mut r = Run::with(
        &[Voice, Sms, Email],
        Severity::P1,
        tier(1),
        escalation(),
        Policy::default(),
    );
    let d = r.script(&[
        (0, Event::Start),
        (1, result(1, FAILED)),
        (2, result(2, FAILED)),
        (3, result(3, FAILED)),
    ]);
    assert_eq!(
        (d.audit.kind, d.commands.as_slice()),
        (
            AuditKind::CascadeFailure,
            [Command::EmitCascadeFailure, Command::EscalateToManager].as_slice()
        )
    );

    let p = policy("[cascade]\nmanager_route = \"P2\"\n");
    let mut r = Run::with(&[Voice], Severity::P1, tier(3), escalation(), p);
    let d = r.script(&[
        (0, Event::Start),
        (1, result(1, ACCEPTED)),
        (5, receipt(1, DELIVERED)),
    ]);
    assert_eq!(
        d.commands,
        [arm(s(305), 1, EscalationHold)],
        "P2 tier3 hold"
    );
}

fn busy(channel: Channel, until: Ts, cause: WaitCause) -> Event {
    let mut waits = ChannelWaits {
        cause,
        ..Default::default()
    };
    waits.free_at[channel.index()] = Some(until);
    Event::Replan { attempt: 1, waits }
}

/// Rule 1.
#[test]
fn a_channel_busy_for_the_person_moves_after_the_next_free_one() {
    // Another cascade called this person 30 s ago: voice is busy for 60 s
    // more. SMS goes now, as a new attempt; voice is tried right after it.
    let mut r = Run::new(&[Voice, Sms, Email]);
    r.at(0, Event::Start);
    let d = r.at(0, busy(Voice, s(60), WaitCause::Contact));
    assert_eq!(d.audit.kind, AuditKind::PlanChanged);
    assert_eq!(d.commands, [send(2, Sms)]);
    assert_eq!(r.c.plan.as_slice(), [Sms, Voice, Email]);
    assert_eq!(r.c.in_flight, [sending(2, Sms, s(0))]);
    assert_eq!(d.audit.wait_ms, Some(60_000));
    // The old attempt's send job is stale now.
    assert_stale(&r.at(1, result(1, ACCEPTED)));

    // Every other channel busy too, but one frees sooner: the attempt
    // moves to it and waits for it.
    let mut r = Run::new(&[Voice, Sms]);
    r.at(0, Event::Start);
    let mut waits = ChannelWaits::default();
    waits.free_at[Voice.index()] = Some(s(80));
    waits.free_at[Sms.index()] = Some(s(20));
    let d = r.at(0, Event::Replan { attempt: 1, waits });
    assert_eq!(d.audit.kind, AuditKind::PlanChanged);
    assert_eq!(d.commands, [arm(s(20), 2, DeferredStart)]);
    assert_eq!(
        r.c.in_flight,
        [attempt(2, Sms, 0, Phase::Deferred { until: s(20) })]
    );

    // Nothing else to try: the attempt waits for its own channel.
    let mut r = Run::new(&[Voice]);
    r.at(0, Event::Start);
    let d = r.at(0, busy(Voice, s(45), WaitCause::Contact));
    assert_eq!(
        (d.audit.kind, d.commands.as_slice()),
        (
            AuditKind::Deferred,
            [arm(s(45), 1, DeferredStart)].as_slice()
        )
    );
    assert_eq!(r.at(45, timer(1, DeferredStart)).commands, [send(1, Voice)]);

    // A free channel is no reason to replan.
    assert_stale(&r.at(46, busy(Voice, s(46), WaitCause::Contact)));
}

/// Queue waits as a dispatcher reports them: `(channel, seconds)`.
fn queues(waits: &[(Channel, u64)]) -> ChannelWaits {
    let mut w = ChannelWaits {
        cause: WaitCause::Queue,
        ..Default::default()
    };
    for (c, secs) in waits {
        w.free_at[c.index()] = (*secs > 0).then(|| s(*secs));
    }
    w
}

/// Rule 1.
#[test]
fn a_channel_whose_queue_is_past_the_bound_moves_later_for_that_person() {
    // P1 tier 1: the bound is the 60 s hold. Voice's queue is 2h46m long,
    // SMS's 120 s, email's 30 s: the first channel of the plan within the
    // bound is email. The attempt moves there as a new attempt that is
    // sending (the dispatcher books its slot and sends it: no command),
    // the plan keeps its order otherwise, voice right after email.
    let mut r = Run::new(&[Voice, Sms, Email, Push]);
    r.at(0, Event::Start);
    let d = r.at(
        0,
        Event::Replan {
            attempt: 1,
            waits: queues(&[(Voice, 9_960), (Sms, 120), (Email, 30), (Push, 0)]),
        },
    );
    assert_eq!(d.audit.kind, AuditKind::PlanChanged);
    assert_eq!(d.commands, []);
    assert_eq!(r.c.in_flight, [sending(2, Email, s(0))]);
    assert_eq!(r.c.plan.as_slice(), [Email, Voice, Sms, Push]);
    // Audited with the waits that caused it.
    let note = d.audit.note.clone().unwrap_or_default();
    assert!(
        note.contains("voice queue 9960s, past the 60s bound"),
        "{note}"
    );
    assert!(
        note.contains("voice 9960s, sms 120s, email 30s, push 0s"),
        "{note}"
    );
    // A queue is the carrier's, not the person's: nothing is kept busy.
    assert_eq!(r.c.busy_until, [None; 4]);

    // Every queue past the bound: the one that ends first.
    let mut r = Run::new(&[Voice, Sms, Email]);
    r.at(0, Event::Start);
    let d = r.at(
        0,
        Event::Replan {
            attempt: 1,
            waits: queues(&[(Voice, 9_960), (Sms, 400), (Email, 300)]),
        },
    );
    assert_eq!(d.audit.kind, AuditKind::PlanChanged);
    assert_eq!(r.c.in_flight, [sending(2, Email, s(0))]);
    assert_eq!(r.c.plan.as_slice(), [Email, Voice, Sms]);

    // No channel left with a shorter queue: the attempt stays in its own.
    let mut r = Run::new(&[Voice, Sms]);
    r.at(0, Event::Start);
    assert_stale(&r.at(
        0,
        Event::Replan {
            attempt: 1,
            waits: queues(&[(Voice, 200), (Sms, 300)]),
        },
    ));
    assert_eq!(r.c.in_flight, [sending(1, Voice, s(0))]);
}

/// Rule 3.
#[test]
fn two_throttling_channels_taken_in_turn_reach_the_throttling_bound() {
    // Voice and email both throttled, each free again a second later: the
    // attempt moves between them, but the person has been held back by
    // throttling since the first 429, so the bound (the 60 s hold, P1
    // tier 1) fails the channel; it does not swing forever.
    let mut r = Run::new(&[Voice, Email]);
    r.at(0, Event::Start);
    let mut attempt = 1;
    let mut channel = Voice;
    let mut out = None;
    for t in 0..200u64 {
        let mut waits = ChannelWaits {
            cause: WaitCause::Throttled,
            ..Default::default()
        };
        waits.free_at[channel.index()] = Some(s(t + 1));
        let d = r.at(t, Event::Replan { attempt, waits });
        if d.audit.kind == AuditKind::ChannelThrottledOut
            || d.audit.kind == AuditKind::CascadeFailure
        {
            out = Some((t, d.audit.kind));
            break;
        }
        // Follow the attempt to wherever it went (deferred ones start when due).
        let a = r.c.in_flight[0];
        if let Phase::Deferred { until } = a.phase {
            r.at_ts(until, timer(a.id, DeferredStart));
        }
        attempt = r.c.in_flight[0].id;
        channel = r.c.in_flight[0].channel;
    }
    let (t, _) = out.unwrap_or_else(|| panic!("still swinging after 200 s: {:?}", r.c));
    assert!((60..=62).contains(&t), "failed out at {t} s");
}

/// Rule 1.
#[test]
fn what_is_known_busy_is_remembered_so_an_attempt_never_swings_between_two() {
    // Voice is throttled by the carrier; SMS is busy for the person. The
    // attempt moves to SMS, finds it busy, and does not go back to voice:
    // it goes to email.
    let mut r = Run::new(&[Voice, Sms, Email]);
    r.at(0, Event::Start);
    r.at(0, busy(Voice, s(60), WaitCause::Throttled));
    assert_eq!(r.channels_in_flight(), [Sms]);
    let mut waits = ChannelWaits::default();
    waits.free_at[Sms.index()] = Some(s(50));
    let d = r.at(0, Event::Replan { attempt: 2, waits });
    assert_eq!(d.commands, [send(3, Email)]);
    assert_eq!(r.c.plan.as_slice(), [Email, Sms, Voice]);

    // Waiting for a throttling carrier is bounded like throttling itself:
    // the deferred attempt fails out once the bound is reached.
    let mut r = Run::new(&[Voice]);
    r.at(0, Event::Start);
    r.at(0, busy(Voice, s(30), WaitCause::Throttled));
    r.at(30, timer(1, DeferredStart));
    r.at(30, busy(Voice, s(60), WaitCause::Throttled));
    r.at(60, timer(1, DeferredStart));
    let d = r.at(60, busy(Voice, s(90), WaitCause::Throttled));
    assert_eq!(d.audit.kind, AuditKind::CascadeFailure);
    assert_eq!(d.audit.cause, Some(AuditKind::ChannelThrottledOut));
}

/// Rule 7.
#[test]
fn a_failure_escalation_is_recorded_on_the_failed_cascade_and_withdrawn_by_a_late_ack() {
    let mut r = Run::new(&[Voice]);
    r.script(&[(0, Event::Start), (1, result(1, FAILED))]);
    assert_eq!(r.c.status, CascadeStatus::Escalated);
    let to = |n: &str| StakeholderId::parse(n).expect("valid id");
    let d = r.at(1, Event::EscalationStarted { to: to("duty") });
    assert_eq!(d.audit.kind, AuditKind::EscalationStarted);
    assert!(note(&d).contains("duty (level 1)"), "{:?}", d.audit.note);
    assert_stale(&r.at(2, Event::EscalationStarted { to: to("duty") }));
    r.at(300, Event::EscalationStarted { to: to("head") });
    assert_eq!(r.c.escalated_to, [to("duty"), to("head")]);
    // The person answers after all: the open escalation is withdrawn.
    let d = r.at(400, ack(Sms));
    assert_eq!(
        (d.audit.kind, d.commands.as_slice()),
        (
            AuditKind::AckAfterEnd,
            [Command::WithdrawEscalations].as_slice()
        )
    );
    assert_eq!(
        r.c.status,
        CascadeStatus::Escalated,
        "terminal states absorb"
    );
    // After that, nobody more is told.
    assert_stale(&r.at(401, Event::EscalationStarted { to: to("bcp") }));

    // A chain that ends with nobody acknowledging is recorded once.
    let mut r = Run::new(&[Voice]);
    r.script(&[(0, Event::Start), (1, result(1, FAILED))]);
    let undelivered = Event::EscalationUndelivered {
        reason: "nobody on the escalation chain acknowledged".into(),
    };
    let d = r.at(900, undelivered.clone());
    assert_eq!(d.audit.kind, AuditKind::EscalationUndelivered);
    assert!(r.c.escalation_undelivered);
    assert_stale(&r.at(901, undelivered.clone()));
    // Bookkeeping for a cascade still running is stale.
    let mut r = Run::new(&[Voice]);
    r.at(0, Event::Start);
    assert_stale(&r.at(1, undelivered));
    assert_stale(&r.at(1, Event::EscalationStarted { to: to("duty") }));
}

/// Rule 7.
#[test]
fn a_withdrawn_escalation_that_had_reached_its_person_sends_them_an_update() {
    let mut r = Run::with(
        &[Sms, Email],
        Severity::P1,
        tier(1),
        escalation(),
        Policy::default(),
    );
    r.script(&[(0, Event::Start), (1, result(1, ACCEPTED))]);
    let d = r.at(30, Event::Withdraw { by: None });
    assert_eq!(
        (d.audit.kind, d.commands.as_slice(), r.c.status),
        (
            AuditKind::Withdrawn,
            [Command::NotifyWithdrawn].as_slice(),
            CascadeStatus::Cancelled
        )
    );
    let d = r.at(
        31,
        Event::Notice {
            channel: Some(Email),
            accepted: true,
        },
    );
    assert_eq!(
        (d.audit.kind, d.audit.channel),
        (AuditKind::NoticeSent, Some(Email))
    );
    assert_stale(&r.at(
        32,
        Event::Notice {
            channel: Some(Email),
            accepted: true,
        },
    ));

    // Nothing accepted yet: withdrawn without an update.
    let mut r = Run::with(
        &[Sms],
        Severity::P1,
        tier(1),
        escalation(),
        Policy::default(),
    );
    r.at(0, Event::Start);
    let d = r.at(1, Event::Withdraw { by: None });
    assert_eq!(
        (d.audit.kind, d.commands.as_slice()),
        (AuditKind::Withdrawn, [].as_slice())
    );
    // Members are never withdrawn.
    let mut r = Run::new(&[Sms]);
    r.at(0, Event::Start);
    assert_stale(&r.at(1, Event::Withdraw { by: None }));
}

/// Rule 7.
#[test]
fn an_answer_to_a_bundled_message_acknowledges_every_escalation_it_named() {
    let mut r = Run::with(
        &[Voice, Sms],
        Severity::P1,
        tier(1),
        escalation(),
        Policy::default(),
    );
    r.script(&[(0, Event::Start), (1, result(1, ACCEPTED))]);
    let d = r.at(
        20,
        Event::BundleAck {
            channel: Sms,
            message: "attempt 2 of INC-1/duty!escalation:carol".into(),
        },
    );
    assert_eq!(
        (d.audit.kind, r.c.status, r.c.acked_on),
        (
            AuditKind::Acknowledged,
            CascadeStatus::Acknowledged,
            Some(Sms)
        )
    );
    assert!(note(&d).contains("attempt 2 of"), "{:?}", d.audit.note);
    assert_eq!(d.commands, []);

    // The escalation had already moved up the chain: the answer still
    // counts (recorded late) and withdraws the open one above.
    let mut r = Run::with(
        &[Sms],
        Severity::P1,
        tier(1),
        escalation(),
        Policy::default(),
    );
    r.script(&[(0, Event::Start), (1, result(1, FAILED))]);
    assert_eq!(r.c.status, CascadeStatus::Escalated);
    let d = r.at(
        30,
        Event::BundleAck {
            channel: Sms,
            message: "attempt 1 of another escalation".into(),
        },
    );
    assert_eq!(
        (d.audit.kind, d.commands.as_slice()),
        (
            AuditKind::AckAfterEnd,
            [Command::WithdrawEscalations].as_slice()
        )
    );
    assert!(
        !r.c.escalation_pending(),
        "an acknowledged failure needs nobody"
    );
}

/// Rule 7 and 10.
#[test]
fn a_failure_nobody_took_up_is_escalated_again_by_the_sweep() {
    // Its escalation job was lost: the failed cascade stays due until the
    // failure is taken up, and the sweep, finding it overdue, escalates again.
    let mut r = Run::new(&[Voice]);
    r.script(&[(0, Event::Start), (1, result(1, FAILED))]);
    assert!(r.c.escalation_pending());
    assert_eq!(r.c.next_due(), Some(s(1)));
    assert_stale(&r.at(200, Event::Reconcile));
    let d = r.at(302, Event::Reconcile);
    assert_eq!(
        (d.audit.kind, d.audit.cause, d.commands.as_slice()),
        (
            AuditKind::Redriven,
            Some(AuditKind::CascadeFailure),
            [Command::EscalateToManager].as_slice()
        )
    );
    // Taken up: no longer due.
    let to = StakeholderId::parse("duty").expect("valid id");
    r.at(303, Event::EscalationStarted { to });
    assert_eq!(r.c.next_due(), None);

    // An incident closed before anyone took it up settles it too.
    let mut r = Run::with(
        &[Voice],
        Severity::P1,
        tier(1),
        escalation(),
        Policy::default(),
    );
    r.script(&[(0, Event::Start), (1, result(1, FAILED))]);
    let d = r.at(2, Event::HandedOn { closed: true });
    assert_eq!(d.audit.kind, AuditKind::Cancelled);
    assert_eq!(r.c.next_due(), None);
}

// Rule 8: ACK.

/// Ways to reach each open state, as (what, script after T0).
fn open_states() -> Vec<(&'static str, Script)> {
    vec![
        ("pending", vec![]),
        ("sending", vec![(0, Event::Start)]),
        (
            "awaiting receipt",
            vec![(0, Event::Start), (1, result(1, ACCEPTED))],
        ),
        (
            "holding",
            vec![
                (0, Event::Start),
                (1, result(1, ACCEPTED)),
                (2, receipt(1, DELIVERED)),
            ],
        ),
        (
            "backoff",
            vec![(0, Event::Start), (1, result(1, TRANSIENT))],
        ),
        (
            "throttled",
            vec![
                (0, Event::Start),
                (
                    1,
                    result(
                        1,
                        SendOutcome::Throttled {
                            retry_after_ms: 20_000,
                            since: None,
                        },
                    ),
                ),
            ],
        ),
        (
            "two in flight",
            vec![(0, Event::Start), (1, result(1, UNREACHABLE))],
        ),
    ]
}

/// Every kind of event that could come after the end, at `t`.
fn late_events() -> Vec<Event> {
    let mut v = vec![Event::Start, Event::Reconcile, Event::Cancel, ack(Voice)];
    for id in 1..=4 {
        v.extend([ACCEPTED, TRANSIENT, FAILED, UNREACHABLE].map(|o| result(id, o)));
        v.extend([DELIVERED, ReceiptStatus::Failed].map(|st| receipt(id, st)));
        v.extend([Retry, ThrottleWait, ReceiptTimeout, EscalationHold].map(|k| timer(id, k)));
    }
    v
}

/// Rule 8.
#[test]
fn ack_from_any_channel_is_terminal_and_later_events_are_noops() {
    for (what, steps) in open_states() {
        for (channel, attempt) in [(Sms, None), (Voice, Some(1)), (Push, None)] {
            let mut r = Run::new(&ALL);
            for (t, e) in &steps {
                r.at(*t, e.clone());
            }
            let d = r.at(50, Event::Ack { channel, attempt });
            assert_eq!(d.audit.kind, AuditKind::Acknowledged, "{what}");
            assert_eq!(
                (d.audit.channel, d.audit.attempt),
                (Some(channel), attempt),
                "{what}"
            );
            assert_eq!(d.commands, [], "{what}");
            assert_eq!(r.c.status, CascadeStatus::Acknowledged, "{what}");
            assert_eq!(
                (r.c.acked_at, r.c.acked_on, r.c.ended_at),
                (Some(s(50)), Some(channel), Some(s(50))),
                "{what}"
            );
            assert_eq!(r.c.in_flight, [], "{what}");
            assert_eq!(r.c.next_due(), None, "{what}: nothing left for the sweep");

            for e in late_events() {
                let d = r.at(86_400, e.clone());
                assert_stale(&d);
                assert!(
                    note(&d).contains("already acknowledged"),
                    "{what}, {e:?}: {:?}",
                    d.audit.note
                );
            }
            assert_eq!(
                (r.c.status, r.c.acked_at, r.c.acked_on),
                (CascadeStatus::Acknowledged, Some(s(50)), Some(channel)),
                "{what}"
            );
        }
    }
}

/// Rule 8.
#[test]
fn delivered_is_never_an_ack() {
    let mut r = Run::new(&[Voice, Sms]);
    let d = r.script(&[(0, Event::Start), (1, result(1, ACCEPTED))]);
    assert_eq!(
        (d.next.status, d.next.acked_at),
        (CascadeStatus::Active, None)
    );
    let d = r.at(2, receipt(1, DELIVERED));
    assert_eq!(d.audit.kind, AuditKind::Delivered);
    assert_eq!(
        (r.c.status, r.c.acked_at, r.c.acked_on),
        (CascadeStatus::Active, None, None)
    );
    assert_eq!(r.c.first_contact_at, Some(s(1)));
    let d = r.at(62, timer(1, EscalationHold));
    assert_eq!(
        (d.audit.kind, d.commands.as_slice()),
        (AuditKind::NotAcknowledged, [send(2, Sms)].as_slice())
    );
    // Delivered everywhere, acknowledged nowhere: escalated, not acknowledged.
    let d = r.script(&[
        (63, result(2, ACCEPTED)),
        (64, receipt(2, DELIVERED)),
        (124, timer(2, EscalationHold)),
    ]);
    assert_eq!(d.audit.kind, AuditKind::CascadeFailure);
    assert_eq!((r.c.status, r.c.acked_at), (CascadeStatus::Escalated, None));
}

/// Rule 8.
#[test]
fn ack_after_escalation_is_recorded_not_resent() {
    let mut r = Run::new(&[Voice]);
    r.script(&[(0, Event::Start), (1, result(1, FAILED))]);
    assert_eq!(r.c.status, CascadeStatus::Escalated);
    let d = r.at(
        600,
        Event::Ack {
            channel: Voice,
            attempt: Some(1),
        },
    );
    assert_eq!(d.audit.kind, AuditKind::AckAfterEnd);
    assert_eq!((d.audit.channel, d.audit.attempt), (Some(Voice), Some(1)));
    assert!(note(&d).contains("nothing sent"), "{:?}", d.audit.note);
    assert_eq!(d.commands, []);
    assert_eq!(
        r.c.status,
        CascadeStatus::Escalated,
        "the escalation stands"
    );
    assert_eq!(
        (r.c.acked_at, r.c.acked_on, r.c.ended_at),
        (Some(s(600)), Some(Voice), Some(s(1)))
    );
    // Only the first late ACK is recorded as such.
    assert_stale(&r.at(700, ack(Sms)));
    assert_eq!((r.c.acked_at, r.c.acked_on), (Some(s(600)), Some(Voice)));

    let mut r = Run::new(&[Voice]);
    r.script(&[(0, Event::Start), (5, Event::Cancel)]);
    let d = r.at(6, ack(Sms));
    assert_eq!(
        (d.audit.kind, d.next.status, d.commands.len()),
        (AuditKind::AckAfterEnd, CascadeStatus::Cancelled, 0)
    );
}

// Rule 9: cancel.

/// Rule 9.
#[test]
fn cancel_ends_open_cascade() {
    for (what, steps) in open_states() {
        let mut r = Run::new(&ALL);
        for (t, e) in &steps {
            r.at(*t, e.clone());
        }
        let d = r.at(50, Event::Cancel);
        assert_eq!(d.audit.kind, AuditKind::Cancelled, "{what}");
        assert_eq!(d.commands, [], "{what}");
        assert_eq!(
            (r.c.status, r.c.ended_at, r.c.acked_at),
            (CascadeStatus::Cancelled, Some(s(50)), None),
            "{what}"
        );
        assert_eq!(r.c.in_flight, [], "{what}");
        for e in late_events()
            .into_iter()
            .filter(|e| !matches!(e, Event::Ack { .. }))
        {
            assert_stale(&r.at(86_400, e));
        }
        assert_eq!(r.c.status, CascadeStatus::Cancelled, "{what}");
    }
    // Closing the incident does not rewrite how a cascade already ended.
    for end in [
        vec![(0, Event::Start), (1, ack(Voice))],
        vec![
            (0, Event::Start),
            (1, result(1, FAILED)),
            (2, result(2, FAILED)),
            (3, result(3, FAILED)),
        ],
    ] {
        let mut r = Run::new(&ALL);
        let status = r.script(&end).next.status;
        assert_stale(&r.at(10, Event::Cancel));
        assert_eq!(r.c.status, status);
    }
}

// Fences.

/// Fences (module docs).
#[test]
fn stale_timer_is_ignored_and_audited() {
    let mut r = Run::new(&ALL);
    r.script(&[(0, Event::Start), (1, result(1, ACCEPTED))]);
    for e in [
        timer(99, ReceiptTimeout),
        timer(1, EscalationHold),
        timer(1, Retry),
        timer(1, ThrottleWait),
    ] {
        let d = r.at(130, e.clone());
        assert_stale(&d);
        assert!(
            note(&d).contains("timer for attempt"),
            "{e:?}: {:?}",
            d.audit.note
        );
    }
    // The receipt-timeout armed at acceptance fires after the delivery.
    r.at(131, receipt(1, DELIVERED));
    assert_stale(&r.at(131, timer(1, ReceiptTimeout)));
    assert_eq!(
        r.c.in_flight,
        [attempt(1, Voice, 0, Phase::Holding { until: s(191) })]
    );

    // A redelivered retry timer does not send the retry twice; the failed
    // attempt's id is no longer a fence that matches.
    let mut r = Run::new(&ALL);
    let d = r.script(&[
        (0, Event::Start),
        (1, result(1, TRANSIENT)),
        (16, timer(2, Retry)),
    ]);
    assert_eq!(d.commands, [send(2, Voice)]);
    assert_stale(&r.at(17, timer(2, Retry)));
    assert_stale(&r.at(17, timer(1, Retry)));
}

/// Fences (module docs).
#[test]
fn duplicate_send_result_is_stale() {
    let mut r = Run::new(&ALL);
    r.script(&[(0, Event::Start), (1, result(1, ACCEPTED))]);
    for o in [
        ACCEPTED,
        TRANSIENT,
        FAILED,
        UNREACHABLE,
        SendOutcome::Throttled {
            retry_after_ms: 1_000,
            since: None,
        },
    ] {
        let d = r.at(2, result(1, o));
        assert_stale(&d);
        assert!(note(&d).contains("not sending"), "{:?}", d.audit.note);
    }
    assert_eq!(
        r.c.in_flight,
        [attempt(
            1,
            Voice,
            0,
            Phase::AwaitingReceipt { deadline: s(121) }
        )],
        "deadline not moved"
    );
    assert_stale(&r.at(3, result(7, ACCEPTED)));

    // A duplicated transient error does not spend a second retry.
    let mut r = Run::new(&ALL);
    r.script(&[(0, Event::Start), (1, result(1, TRANSIENT))]);
    assert_stale(&r.at(2, result(1, TRANSIENT)));
    assert_eq!(
        r.c.in_flight,
        [attempt(2, Voice, 1, Phase::Backoff { until: s(16) })]
    );

    // Reordered: the receipt overtakes the send result, which then is stale.
    let mut r = Run::new(&ALL);
    r.at(0, Event::Start);
    let d = r.at(1, receipt(1, DELIVERED));
    assert_eq!(
        (d.audit.kind, d.commands.as_slice()),
        (
            AuditKind::Delivered,
            [arm(s(61), 1, EscalationHold)].as_slice()
        )
    );
    assert_stale(&r.at(2, result(1, ACCEPTED)));
    // A duplicated receipt does not extend the hold.
    assert_stale(&r.at(30, receipt(1, DELIVERED)));
    assert_eq!(
        r.c.in_flight,
        [attempt(1, Voice, 0, Phase::Holding { until: s(61) })]
    );
}

/// Fences (module docs).
#[test]
fn receipt_for_an_attempt_not_awaiting_one_is_stale() {
    // Backoff: the retry's id has not been sent yet. Throttled: the carrier
    // refused the send. Neither can have a receipt.
    let throttled = SendOutcome::Throttled {
        retry_after_ms: 10_000,
        since: None,
    };
    for (what, steps, id) in [
        ("backoff", result(1, TRANSIENT), 2),
        ("throttled", result(1, throttled), 1),
    ] {
        for status in [DELIVERED, ReceiptStatus::Failed, ReceiptStatus::Unreachable] {
            let mut r = Run::new(&ALL);
            r.script(&[(0, Event::Start), (1, steps.clone())]);
            let d = r.at(2, receipt(id, status));
            assert_stale(&d);
            assert!(
                note(&d).contains("not awaiting one"),
                "{what}: {:?}",
                d.audit.note
            );
        }
    }
}

/// Fences (module docs).
#[test]
fn early_timer_rearms() {
    let mut r = Run::new(&ALL);
    r.script(&[(0, Event::Start), (1, result(1, ACCEPTED))]);
    let d = r.at(60, timer(1, ReceiptTimeout));
    assert_eq!(d.audit.kind, AuditKind::StaleIgnored);
    assert!(note(&d).contains("fired early"), "{:?}", d.audit.note);
    assert_eq!(d.commands, [arm(s(121), 1, ReceiptTimeout)]);
    let d = r.at(121, timer(1, ReceiptTimeout));
    assert_eq!(d.audit.kind, AuditKind::ChannelTimeout);

    // One millisecond early is early (e.g. a Scheduler timer firing 60 s
    // ahead, or SQS's 1 s precision rounding down).
    let mut r = Run::new(&ALL);
    r.script(&[(0, Event::Start), (1, result(1, TRANSIENT))]);
    let d = r.at_ts(Ts(s(16).0 - 1), timer(2, Retry));
    assert_eq!(
        (d.audit.kind, d.commands.as_slice()),
        (AuditKind::StaleIgnored, [arm(s(16), 2, Retry)].as_slice())
    );
    let d = r.at(16, timer(2, Retry));
    assert_eq!(d.commands, [send(2, Voice)]);
}

// Rule 10: reconciliation.

/// Rule 10.
#[test]
fn reconcile_forces_overdue_transition() {
    let throttled = SendOutcome::Throttled {
        retry_after_ms: 10_000,
        since: None,
    };
    // (what, script, sweep time, what the forced transition did, commands, in flight after)
    let table = [
        (
            "never started",
            vec![],
            301,
            AuditKind::CascadeStarted,
            vec![send(1, Voice)],
            vec![sending(1, Voice, s(301))],
        ),
        (
            // No answer to a send counts as a transient failure: a bounded retry.
            "no send result",
            vec![(0, Event::Start)],
            301,
            AuditKind::RetryScheduled,
            vec![arm(s(316), 2, TimerKind::Retry)],
            vec![attempt(2, Voice, 1, Phase::Backoff { until: s(316) })],
        ),
        (
            "backoff",
            vec![(0, Event::Start), (1, result(1, TRANSIENT))],
            317,
            AuditKind::RetrySent,
            vec![send(2, Voice)],
            vec![attempt(2, Voice, 1, Phase::Sending { since: s(317) })],
        ),
        (
            "throttled",
            vec![(0, Event::Start), (1, result(1, throttled))],
            312,
            AuditKind::ThrottleResumed,
            vec![send(1, Voice)],
            vec![throttled_from(sending(1, Voice, s(312)), s(1))],
        ),
        (
            "no receipt",
            vec![(0, Event::Start), (1, result(1, ACCEPTED))],
            422,
            AuditKind::ChannelTimeout,
            vec![send(2, Sms)],
            vec![sending(2, Sms, s(422))],
        ),
        (
            "holding",
            vec![
                (0, Event::Start),
                (1, result(1, ACCEPTED)),
                (2, receipt(1, DELIVERED)),
            ],
            363,
            AuditKind::NotAcknowledged,
            vec![send(2, Sms)],
            vec![sending(2, Sms, s(363))],
        ),
    ];
    for (what, steps, sweep, cause, commands, flight) in table {
        let mut r = Run::new(&ALL);
        for (t, e) in &steps {
            r.at(*t, e.clone());
        }
        assert!(r.c.overdue(s(sweep), r.p.reconciliation_age), "{what}");
        let d = r.at(sweep, Event::Reconcile);
        assert_eq!(
            (d.audit.kind, d.audit.cause),
            (AuditKind::Redriven, Some(cause)),
            "{what}"
        );
        assert_eq!(d.commands, commands, "{what}");
        assert_eq!(r.c.in_flight, flight, "{what}");
        assert_eq!(r.c.status, CascadeStatus::Active, "{what}");
        assert!(
            note(&d).contains("forced by the reconciliation sweep"),
            "{what}: {:?}",
            d.audit.note
        );
    }

    // A send that never gets an answer is re-driven at most max_retries times,
    // then its channel fails and the cascade moves on.
    let mut r = Run::new(&ALL);
    r.at(0, Event::Start);
    let mut t = 0;
    for n in 0..3u32 {
        t += 301;
        let d = r.at(t, Event::Reconcile);
        assert_eq!(
            d.audit.cause,
            Some(AuditKind::RetryScheduled),
            "re-drive {n}"
        );
        let until = r.c.in_flight[0].phase.due();
        let id = r.c.in_flight[0].id;
        r.at_ts(until, timer(id, TimerKind::Retry));
        t = until.0 / 1000 - s(0).0 / 1000;
    }
    let d = r.at(t + 301, Event::Reconcile);
    assert_eq!(d.audit.cause, Some(AuditKind::ChannelFailed));
    assert_eq!(r.channels_in_flight(), [Sms]);

    // A forced timeout that reaches the failure threshold escalates as usual.
    let mut r = Run::new(&ALL);
    r.script(&[
        (0, Event::Start),
        (1, result(1, FAILED)),
        (2, result(2, FAILED)),
        (3, result(3, ACCEPTED)),
    ]);
    let d = r.at(424, Event::Reconcile);
    assert_eq!(
        (d.audit.kind, d.audit.cause),
        (AuditKind::CascadeFailure, Some(AuditKind::ChannelTimeout))
    );
    assert!(
        note(&d).contains("forced by the reconciliation sweep"),
        "{:?}",
        d.audit.note
    );
    assert_eq!(
        d.commands,
        [Command::EmitCascadeFailure, Command::EscalateToManager]
    );
}

/// Rule 10.
#[test]
fn reconcile_ignores_fresh_cascade() {
    let almost = |secs: u64| Ts(s(secs).0 - 1);
    let mut r = Run::new(&ALL);
    let d = r.at_ts(almost(300), Event::Reconcile);
    assert_stale(&d);
    assert!(note(&d).contains("not overdue"), "{:?}", d.audit.note);
    assert_eq!(r.c.status, CascadeStatus::Pending);

    // Due (the receipt deadline has passed) but not 5 minutes past: the
    // timer, not the sweep, moves it on.
    r.script(&[(0, Event::Start), (1, result(1, ACCEPTED))]);
    for now in [s(60), s(121), s(200), almost(421)] {
        assert_stale(&r.at_ts(now, Event::Reconcile));
    }
    assert_eq!(
        r.c.in_flight,
        [attempt(
            1,
            Voice,
            0,
            Phase::AwaitingReceipt { deadline: s(121) }
        )]
    );

    // Ended cascades are never re-driven.
    r.at(122, ack(Voice));
    let d = r.at(86_400, Event::Reconcile);
    assert_stale(&d);
}

// Start.

/// Rule 7.
#[test]
fn no_usable_channel_escalates_at_start() {
    let who = person(contacts(false, true, false), &[Push, Voice]);
    let plan = who.plan(Policy::default().channels(Severity::P1));
    assert_eq!(plan, []);
    for route in [Route::Member, escalation()] {
        let commands = vec![Command::EmitCascadeFailure, Command::EscalateToManager];
        let mut r = Run::with(
            &plan,
            Severity::P1,
            tier(1),
            route.clone(),
            Policy::default(),
        );
        let d = r.at(0, Event::Start);
        assert_eq!(d.audit.kind, AuditKind::CascadeFailure, "{route:?}");
        assert_eq!(d.audit.cause, Some(AuditKind::CascadeStarted), "{route:?}");
        assert_eq!(d.audit.started, [], "{route:?}");
        assert!(note(&d).contains("no usable channel"), "{:?}", d.audit.note);
        assert_eq!(d.commands, commands, "{route:?}");
        assert_eq!(
            (r.c.status, r.c.ended_at, r.c.in_flight.len()),
            (CascadeStatus::Escalated, Some(s(0)), 0),
            "{route:?}"
        );
    }
}

// Policy.

#[test]
fn policy_overrides_change_decisions() {
    // One retry, 5 s initial delay, no parallelism, 30 s receipt timeout.
    let p = policy(
        r#"
        [retry]
        max_retries = 1
        initial_delay = 5
        [cascade]
        max_in_flight = 1
        receipt_timeout = 30
        "#,
    );
    let mut r = Run::with(&ALL, Severity::P1, tier(1), Route::Member, p);
    r.at(0, Event::Start);
    let d = r.at(1, result(1, TRANSIENT));
    assert_eq!(d.commands, [arm(s(6), 2, Retry)]);
    r.at(6, timer(2, Retry));
    let d = r.at(7, result(2, TRANSIENT));
    assert_eq!(
        d.audit.kind,
        AuditKind::ChannelFailed,
        "a second transient failure exhausts one retry"
    );
    assert!(
        note(&d).contains("2 transient failures"),
        "{:?}",
        d.audit.note
    );
    assert_eq!(d.commands, [send(3, Sms)]);
    let d = r.at(8, result(3, UNREACHABLE));
    assert_eq!(d.audit.kind, AuditKind::ChannelUnreachable);
    assert_eq!(
        d.audit.started,
        [Email],
        "max_in_flight = 1: no pair after UNREACHABLE"
    );
    assert_eq!(d.commands, [send(4, Email)]);
    let d = r.at(9, result(4, ACCEPTED));
    assert_eq!(d.commands, [arm(s(39), 4, ReceiptTimeout)]);

    // Backoff shape: x3, capped at 20 s.
    let p = policy("[retry]\ninitial_delay = 5\nmultiplier = 3.0\nmax_delay = 20\n");
    let mut r = Run::with(&ALL, Severity::P1, tier(1), Route::Member, p);
    r.at(0, Event::Start);
    let mut t = 0;
    for (id, delay) in [(1, 5), (2, 15), (3, 20)] {
        t += 1;
        let d = r.at(t, result(id, TRANSIENT));
        assert_eq!(d.commands, [arm(s(t + delay), id + 1, Retry)], "retry {id}");
        t += delay;
        r.at(t, timer(id + 1, Retry));
    }

    // Zero retries and a threshold of one: the first failure of any kind ends it.
    let p = policy("[retry]\nmax_retries = 0\n[cascade]\nhard_failure_threshold = 1\n");
    let mut r = Run::with(&ALL, Severity::P1, tier(1), Route::Member, p);
    let d = r.script(&[(0, Event::Start), (1, result(1, TRANSIENT))]);
    assert_eq!(
        (d.audit.kind, d.audit.cause),
        (AuditKind::CascadeFailure, Some(AuditKind::ChannelFailed))
    );
    assert_eq!(
        d.commands,
        [Command::EmitCascadeFailure, Command::EscalateToManager]
    );
}

/// Rule 1.
#[test]
fn opt_out_drops_the_channel_from_the_rest_of_the_plan() {
    // SMS still ahead in the plan: dropped; voice failing goes straight to email.
    let mut r = Run::new(&ALL);
    r.at(0, Event::Start);
    let d = r.at(1, Event::OptOut { channel: Sms });
    assert_eq!(d.audit.kind, AuditKind::OptOut);
    assert!(d.commands.is_empty());
    assert_eq!(r.c.plan.as_slice(), [Voice, Email, Push]);
    let d = r.at(2, result(1, FAILED));
    assert_eq!(d.audit.started, [Email]);

    // An SMS attempt not yet sent is withdrawn without counting as a failure.
    let mut r = Run::new(&[Sms, Email]);
    r.at(0, Event::Start);
    r.at(1, result(1, TRANSIENT));
    let before = r.c.consecutive_failures;
    let d = r.at(2, Event::OptOut { channel: Sms });
    assert_eq!(d.audit.started, [Email]);
    assert_eq!(r.c.consecutive_failures, before);
    assert_eq!(r.channels_in_flight(), [Email]);
    // Its retry timer is now stale.
    assert_stale(&r.at(20, timer(2, TimerKind::Retry)));

    // So is one deferred (waiting for another cascade's hold on the phone).
    let mut r = Run::new(&[Sms, Email]);
    r.at(0, Event::Start);
    let mut waits = ChannelWaits::default();
    waits.free_at[Sms.index()] = Some(s(60));
    waits.free_at[Email.index()] = Some(s(90));
    assert_eq!(
        r.at(0, Event::Replan { attempt: 1, waits }).audit.kind,
        AuditKind::Deferred
    );
    let d = r.at(1, Event::OptOut { channel: Sms });
    assert_eq!(d.audit.kind, AuditKind::OptOut);
    assert_eq!(r.channels_in_flight(), [Email]);
    assert_eq!(r.c.consecutive_failures, 0);

    // An SMS already delivered runs its course.
    let mut r = Run::new(&[Sms, Email]);
    r.script(&[
        (0, Event::Start),
        (1, result(1, ACCEPTED)),
        (2, receipt(1, DELIVERED)),
    ]);
    let d = r.at(3, Event::OptOut { channel: Sms });
    assert!(d.commands.is_empty());
    assert_eq!(r.channels_in_flight(), [Sms]);
    assert!(note(&d).contains("already used"));
}
