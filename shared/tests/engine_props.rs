//! Property tests of the cascade invariants (`muster::engine` module docs,
//! "Rules" and invariants) over random
//! channel plans, severities, tiers, routes and policies (every override
//! within the range the policy loader accepts), driven by random event
//! sequences with duplicates, reordering, stale and early timers, arbitrary
//! carrier answers, ACKs, cancels and sweeps, at non-decreasing times.
//!
//! Safety: after every step, `invariants::check_transition` finds nothing,
//! plus the checks in `Sim::apply` (stale events and terminal states change
//! nothing, every command can be derived again from the state it leads to,
//! channels start in plan order, at most `1 + max_retries` attempt ids per
//! channel, nothing sent once ACKed or cancelled, no open cascade without
//! something in flight).
//!
//! Liveness: from any state those sequences reach, answering only the
//! engine's own commands (every send answered, every armed timer fired at
//! its time, no ACK) ends the cascade within a bounded number of steps.

use muster::domain::{Channel, IncidentId, Millis, Severity, StakeholderId, Tier, Ts};
use muster::engine::invariants::{check_final, check_transition};
use muster::engine::{
    AuditKind, Cascade, CascadeKey, CascadeStatus, ChannelPlan, ChannelWaits, Command, Decision,
    Event, Phase, ReceiptStatus, Route, SendOutcome, TimerKind, WaitCause, decide, throttle_bound,
};
use muster::policy::Policy;
use proptest::prelude::*;
use proptest::sample::{select, subsequence};
use proptest::test_runner::TestCaseError;
use std::collections::{BTreeMap, HashSet, VecDeque};

/// 2024-05-20T14:32:00Z.
const T0: Ts = Ts::from_secs(1_716_215_520);
/// Steps the liveness driver may take before the cascade must have ended.
const LIVENESS_BOUND: usize = 500;

// ---------------------------------------------------------------- setup

#[derive(Debug, Clone)]
struct Setup {
    plan: Vec<Channel>,
    severity: Severity,
    tier: Tier,
    route: Route,
    policy: Policy,
    /// Quiet hours holding the first message, in ms from the start.
    quiet: Option<Millis>,
}

fn channels(min: usize) -> impl Strategy<Value = Vec<Channel>> {
    subsequence(Channel::ALL.to_vec(), min..=4).prop_shuffle()
}

/// A duration in ms: usually near the low end of the range (the values
/// operators set), sometimes anywhere in it.
fn duration(lo: Millis, hi: Millis) -> impl Strategy<Value = Millis> {
    let near = hi.min(lo.saturating_mul(20));
    prop_oneof![3 => lo..=near, 1 => lo..=hi]
}

/// The default policy with random overrides, each within the range
/// `Policy::from_toml` accepts.
fn policy() -> impl Strategy<Value = Policy> {
    let retry = (
        prop::option::of(0u32..=10),
        prop::option::of((duration(1_000, 3_600_000), duration(1_000, 3_600_000))),
        prop::option::of(1.0f64..=10.0),
    );
    let cascade = (
        prop::option::of(1u32..=10),
        prop::option::of(duration(1_000, 3_600_000)),
        prop::option::of(1u32..=2),
        prop::option::of(duration(60_000, 86_400_000)),
        prop::option::of(select(Severity::ALL.to_vec())),
    );
    let tables = (
        prop::option::of(prop::array::uniform4(channels(1))),
        prop::option::of(prop::array::uniform4(prop::array::uniform3(duration(
            1_000,
            7 * 86_400_000,
        )))),
    );
    (retry, cascade, tables).prop_map(|(retry, cascade, tables)| {
        let mut p = Policy::default();
        let (max_retries, delays, multiplier) = retry;
        if let Some(n) = max_retries {
            p.retry.max_retries = n;
        }
        if let Some((a, b)) = delays {
            (p.retry.initial_delay, p.retry.max_delay) = (a.min(b), a.max(b));
        }
        if let Some(m) = multiplier {
            p.retry.multiplier = m;
        }
        let (threshold, receipt_timeout, max_in_flight, age, manager) = cascade;
        p.hard_failure_threshold = threshold.unwrap_or(p.hard_failure_threshold);
        p.receipt_timeout = receipt_timeout.unwrap_or(p.receipt_timeout);
        p.max_in_flight = max_in_flight.unwrap_or(p.max_in_flight);
        p.reconciliation_age = age.unwrap_or(p.reconciliation_age);
        p.manager_route = manager.unwrap_or(p.manager_route);
        let (order, delay) = tables;
        if let Some(order) = order {
            p.channel_order = order;
        }
        if let Some(delay) = delay {
            p.escalation_delay = delay;
        }
        p
    })
}

fn setup() -> impl Strategy<Value = Setup> {
    (
        channels(0),
        select(Severity::ALL.to_vec()),
        select(Tier::ALL.to_vec()),
        prop_oneof![
            4 => Just(Route::Member),
            1 => Just(Route::escalation(StakeholderId::parse("bob").expect("valid id"))),
        ],
        policy(),
        prop::option::weighted(0.2, 1u64..=12 * 3_600_000),
    )
        .prop_map(|(plan, severity, tier, route, policy, quiet)| Setup {
            plan,
            severity,
            tier,
            route,
            policy,
            quiet,
        })
}

fn cascade(s: &Setup) -> Cascade {
    let key = CascadeKey {
        incident: IncidentId::parse("INC-2024-0892").expect("valid incident id"),
        stakeholder: StakeholderId::parse("alice").expect("valid stakeholder id"),
        route: s.route.clone(),
    };
    let mut c = Cascade::new(key, s.severity, s.tier, ChannelPlan::new(&s.plan), T0);
    // Quiet hours hold the first message this long (the app sets it).
    c.quiet_until = s.quiet.map(|ms| T0.plus(ms));
    c
}

// ---------------------------------------------------------------- events

/// Which attempt an event names, resolved against the state when it happens.
#[derive(Debug, Clone)]
enum Pick {
    /// One in flight now (the likely-valid case).
    InFlight(usize),
    /// Any attempt id seen so far (often stale).
    Seen(usize),
    /// Any id at all, including ones never issued.
    Any(u32),
}

#[derive(Debug, Clone)]
enum Step {
    Start,
    Result(Pick, SendOutcome),
    Receipt(Pick, ReceiptStatus),
    Ack(Channel, Option<Pick>),
    /// A timer; `None` for the kind the attempt's phase waits for.
    Timer(Pick, Option<TimerKind>),
    /// A timer the engine armed earlier, fired again now (valid once).
    Armed(usize),
    /// An event already applied, again: a duplicate delivered late.
    Replay(usize),
    Reconcile,
    Cancel,
    /// The incident's quorum was reached and its trigger stops there.
    QuorumStop,
    /// The dispatcher found channels busy for this person (until +ms each).
    Replan(Pick, [Option<Millis>; 4], bool),
    BundleAck(Channel),
    Withdraw,
    EscalationStarted(u8),
    EscalationUndelivered,
    HandedOn(bool),
    Notice(Option<Channel>, bool),
}

/// How time moves before a step; never backwards.
#[derive(Debug, Clone)]
enum Wait {
    Not,
    By(Millis),
    /// To the next due time, give or take a little (early timers included).
    ToDue(i64),
    /// Past the next due time by the reconciliation age and more.
    ToOverdue(Millis),
}

fn pick() -> impl Strategy<Value = Pick> {
    prop_oneof![
        6 => (0usize..4).prop_map(Pick::InFlight),
        2 => (0usize..32).prop_map(Pick::Seen),
        1 => (0u32..16).prop_map(Pick::Any),
    ]
}

fn outcome() -> impl Strategy<Value = SendOutcome> {
    prop_oneof![
        4 => Just(SendOutcome::Accepted),
        2 => (0u64..=300_000, prop::option::weighted(0.3, 0u64..=600_000)).prop_map(|(retry_after_ms, before)| {
            SendOutcome::Throttled { retry_after_ms, since: before.map(|b| Ts(T0.0.saturating_sub(b))) }
        }),
        3 => Just(SendOutcome::Transient),
        1 => Just(SendOutcome::Failed),
        1 => Just(SendOutcome::Unreachable),
    ]
}

fn receipt_status() -> impl Strategy<Value = ReceiptStatus> {
    prop_oneof![4 => Just(ReceiptStatus::Delivered), 1 => Just(ReceiptStatus::Failed), 1 => Just(ReceiptStatus::Unreachable)]
}

fn timer_kind() -> impl Strategy<Value = TimerKind> {
    select(vec![
        TimerKind::Retry,
        TimerKind::ThrottleWait,
        TimerKind::ReceiptTimeout,
        TimerKind::EscalationHold,
        TimerKind::DeferredStart,
    ])
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        2 => Just(Step::Start),
        8 => (pick(), outcome()).prop_map(|(p, o)| Step::Result(p, o)),
        5 => (pick(), receipt_status()).prop_map(|(p, s)| Step::Receipt(p, s)),
        1 => (select(Channel::ALL.to_vec()), prop::option::of(pick())).prop_map(|(c, p)| Step::Ack(c, p)),
        6 => (pick(), prop::option::weighted(0.3, timer_kind())).prop_map(|(p, k)| Step::Timer(p, k)),
        3 => (0usize..64).prop_map(Step::Armed),
        3 => (0usize..64).prop_map(Step::Replay),
        2 => Just(Step::Reconcile),
        1 => Just(Step::Cancel),
        1 => Just(Step::QuorumStop),
        2 => (pick(), prop::array::uniform4(prop::option::weighted(0.5, 0u64..=200_000)), any::<bool>())
            .prop_map(|(p, w, t)| Step::Replan(p, w, t)),
        1 => select(Channel::ALL.to_vec()).prop_map(Step::BundleAck),
        1 => Just(Step::Withdraw),
        1 => (0u8..4).prop_map(Step::EscalationStarted),
        1 => Just(Step::EscalationUndelivered),
        1 => any::<bool>().prop_map(Step::HandedOn),
        1 => (prop::option::of(select(Channel::ALL.to_vec())), any::<bool>()).prop_map(|(c, a)| Step::Notice(c, a)),
    ]
}

fn wait() -> impl Strategy<Value = Wait> {
    prop_oneof![
        3 => Just(Wait::Not),
        3 => (0u64..=10_000).prop_map(Wait::By),
        1 => (0u64..=7_200_000).prop_map(Wait::By),
        5 => (-2_000i64..=2_000).prop_map(Wait::ToDue),
        1 => (0u64..=120_000).prop_map(Wait::ToOverdue),
    ]
}

fn steps(max: usize) -> impl Strategy<Value = Vec<(Wait, Step)>> {
    prop::collection::vec((wait(), step()), 0..=max)
}

fn kind_for(p: Phase) -> Option<TimerKind> {
    match p {
        Phase::Sending { .. } => None,
        Phase::Backoff { .. } => Some(TimerKind::Retry),
        Phase::Throttled { .. } => Some(TimerKind::ThrottleWait),
        Phase::AwaitingReceipt { .. } => Some(TimerKind::ReceiptTimeout),
        Phase::Holding { .. } => Some(TimerKind::EscalationHold),
        Phase::Deferred { .. } => Some(TimerKind::DeferredStart),
    }
}

// ---------------------------------------------------------------- simulation

/// One cascade, the history of its run, and the checks made at every step.
struct Sim {
    c: Cascade,
    p: Policy,
    now: Ts,
    applied: Vec<Event>,
    armed: Vec<(u32, TimerKind)>,
    /// Every attempt id seen, with its channel.
    ids: BTreeMap<u32, Channel>,
    /// Channels in the order their first attempt started.
    started: Vec<Channel>,
    /// Ended by an ACK or a cancel: nothing may be sent from here on.
    closed: bool,
    /// For the reach check: every audit kind recorded, the most in flight.
    kinds: HashSet<AuditKind>,
    most_in_flight: usize,
    /// Attempt ids created per (channel, by a transient retry).
    uses: BTreeMap<(Channel, bool), usize>,
}

impl Sim {
    fn new(s: &Setup) -> Self {
        Sim {
            c: cascade(s),
            p: s.policy.clone(),
            now: T0,
            applied: Vec::new(),
            armed: Vec::new(),
            ids: BTreeMap::new(),
            started: Vec::new(),
            closed: false,
            kinds: HashSet::new(),
            most_in_flight: 0,
            uses: BTreeMap::new(),
        }
    }

    fn advance_to(&mut self, t: Ts) {
        self.now = self.now.max(t);
    }

    fn wait(&mut self, w: &Wait) {
        let due = self.c.next_due().unwrap_or(self.now);
        match *w {
            Wait::Not => {}
            Wait::By(ms) => self.advance_to(self.now.plus(ms)),
            Wait::ToDue(off) => self.advance_to(Ts(due.0.saturating_add_signed(off))),
            Wait::ToOverdue(ms) => self.advance_to(due.plus(self.p.reconciliation_age).plus(ms)),
        }
    }

    fn attempt(&self, p: &Pick) -> u32 {
        match *p {
            Pick::InFlight(i) if !self.c.in_flight.is_empty() => {
                self.c.in_flight[i % self.c.in_flight.len()].id
            }
            Pick::InFlight(i) | Pick::Seen(i) => self
                .ids
                .keys()
                .nth(i % self.ids.len().max(1))
                .copied()
                .unwrap_or(1),
            Pick::Any(n) => n,
        }
    }

    fn event(&self, s: &Step) -> Event {
        match s {
            Step::Start => Event::Start,
            Step::Result(p, result) => Event::SendResult {
                attempt: self.attempt(p),
                result: *result,
            },
            Step::Receipt(p, status) => Event::Receipt {
                attempt: self.attempt(p),
                status: *status,
            },
            Step::Ack(channel, p) => Event::Ack {
                channel: *channel,
                attempt: p.as_ref().map(|p| self.attempt(p)),
            },
            Step::Timer(p, kind) => {
                let attempt = self.attempt(p);
                let phase = self.c.attempt(attempt).and_then(|a| kind_for(a.phase));
                Event::Timer {
                    attempt,
                    kind: kind.or(phase).unwrap_or(TimerKind::Retry),
                }
            }
            Step::Armed(i) if !self.armed.is_empty() => {
                let (attempt, kind) = self.armed[i % self.armed.len()];
                Event::Timer { attempt, kind }
            }
            Step::Replay(i) if !self.applied.is_empty() => {
                self.applied[i % self.applied.len()].clone()
            }
            Step::Armed(_) | Step::Replay(_) | Step::Reconcile => Event::Reconcile,
            Step::Cancel => Event::Cancel,
            Step::QuorumStop => Event::QuorumStop,
            Step::Replan(p, waits, throttled) => {
                let mut w = ChannelWaits {
                    cause: if *throttled {
                        WaitCause::Throttled
                    } else {
                        WaitCause::Contact
                    },
                    ..Default::default()
                };
                for (i, ms) in waits.iter().enumerate() {
                    w.free_at[i] = ms.map(|ms| self.now.plus(ms));
                }
                Event::Replan {
                    attempt: self.attempt(p),
                    waits: w,
                }
            }
            Step::BundleAck(channel) => Event::BundleAck {
                channel: *channel,
                message: "attempt 1 of another cascade".into(),
            },
            Step::Withdraw => Event::Withdraw { by: None },
            Step::EscalationStarted(n) => Event::EscalationStarted {
                to: StakeholderId::parse(&format!("manager-{n}")).expect("valid id"),
            },
            Step::HandedOn(closed) => Event::HandedOn { closed: *closed },
            Step::EscalationUndelivered => Event::EscalationUndelivered {
                reason: "nobody on the chain acknowledged".into(),
            },
            Step::Notice(channel, accepted) => Event::Notice {
                channel: *channel,
                accepted: *accepted,
            },
        }
    }

    /// Decides `e` at `self.now`, checks the transition, and moves on.
    fn apply(&mut self, e: Event) -> Result<Decision, TestCaseError> {
        let before = self.c.clone();
        let d = decide(&before, &e, &self.p, self.now);
        let next = &d.next;
        let ctx = || {
            format!(
                "\nevent {e:?} at +{} ms\nbefore {before:#?}\ndecision {d:#?}",
                self.now.since(T0)
            )
        };

        let broken = check_transition(&before, &e, &d, &self.p);
        prop_assert!(broken.is_empty(), "invariants broken: {broken:?}{}", ctx());

        let mut same = before.clone();
        same.version += 1;
        if d.audit.kind == AuditKind::StaleIgnored {
            prop_assert!(
                d.audit.note.is_some(),
                "a stale event is audited with its reason{}",
                ctx()
            );
            prop_assert_eq!(next, &same, "a stale event changed the state{}", ctx());
            prop_assert!(
                d.commands
                    .iter()
                    .all(|c| matches!(c, Command::ArmTimer { .. })),
                "a stale event may only re-arm an early timer{}",
                ctx()
            );
        }
        if before.status.is_terminal() {
            // Only the record of a late ACK and the escalation bookkeeping
            // change once a cascade has ended, each by its own event.
            same.acked_at = next.acked_at;
            same.acked_on = next.acked_on;
            same.escalated_to = next.escalated_to.clone();
            same.escalation_undelivered = next.escalation_undelivered;
            same.noticed = next.noticed;
            same.handed_on = next.handed_on;
            prop_assert_eq!(next, &same, "a terminal cascade changed{}", ctx());
            let changed = |a: bool| if a { Some(()) } else { None };
            prop_assert!(
                changed(next.escalated_to != before.escalated_to).is_none()
                    || matches!(e, Event::EscalationStarted { .. }),
                "{}",
                ctx()
            );
            prop_assert!(
                next.escalation_undelivered == before.escalation_undelivered
                    || matches!(e, Event::EscalationUndelivered { .. }),
                "{}",
                ctx()
            );
            prop_assert!(
                next.noticed == before.noticed || matches!(e, Event::Notice { .. }),
                "{}",
                ctx()
            );
            if !matches!(e, Event::Ack { .. } | Event::BundleAck { .. }) {
                prop_assert_eq!(
                    (next.acked_at, next.acked_on),
                    (before.acked_at, before.acked_on),
                    "{}",
                    ctx()
                );
            }
        }

        // Every command can be derived again from the state it leads to.
        for c in &d.commands {
            match *c {
                Command::Send { channel, .. } => {
                    prop_assert!(!self.closed, "send after ACK or cancel{}", ctx());
                    prop_assert!(
                        next.plan.as_slice().contains(&channel),
                        "send on a channel outside the plan{}",
                        ctx()
                    );
                }
                Command::ArmTimer { at, attempt, kind } => {
                    let a = next.attempt(attempt);
                    prop_assert!(
                        a.is_some_and(|a| kind_for(a.phase) == Some(kind) && a.phase.due() == at),
                        "timer armed for a phase the state is not in{}",
                        ctx()
                    );
                    prop_assert!(at >= self.now, "timer armed in the past{}", ctx());
                    self.armed.push((attempt, kind));
                }
                Command::EscalateToManager | Command::EmitCascadeFailure => {}
                Command::WithdrawEscalations => {
                    prop_assert!(
                        matches!(e, Event::Ack { .. } | Event::BundleAck { .. })
                            && before.status == CascadeStatus::Escalated
                            && before.acked_at.is_none(),
                        "a withdrawal that is not a late ACK of a failure{}",
                        ctx()
                    );
                }
                Command::NotifyWithdrawn => {
                    prop_assert!(
                        matches!(e, Event::Withdraw { .. })
                            && before.key.route.is_escalation()
                            && before.first_contact_at.is_some(),
                        "an update for an escalation that reached nobody{}",
                        ctx()
                    );
                }
            }
        }
        let escalated =
            next.status == CascadeStatus::Escalated && before.status != CascadeStatus::Escalated;
        let failure: Vec<_> = d
            .commands
            .iter()
            .filter(|c| **c == Command::EmitCascadeFailure)
            .collect();
        let to_manager = d
            .commands
            .iter()
            .filter(|c| **c == Command::EscalateToManager)
            .count();
        prop_assert_eq!(
            failure.len(),
            usize::from(escalated),
            "CASCADE_FAILURE once, on escalation{}",
            ctx()
        );
        prop_assert_eq!(
            escalated,
            d.audit.kind == AuditKind::CascadeFailure,
            "{}",
            ctx()
        );
        // ... and a failure nobody took up goes up again when the sweep
        // finds it.
        let redriven = matches!(e, Event::Reconcile)
            && before.escalation_pending()
            && d.audit.kind == AuditKind::Redriven;
        prop_assert_eq!(
            to_manager,
            usize::from(escalated || redriven),
            "every failure, of a member or of an escalation, goes up the chain{}",
            ctx()
        );

        self.rules(&before, &e, &d)
            .map_err(|m| TestCaseError::fail(format!("{m}{}", ctx())))?;

        // Channels start once each, in plan order (a replan reorders what
        // is not started yet; a parallel voice call repeats voice).
        if d.audit.kind == AuditKind::PlanChanged || d.audit.kind == AuditKind::NotAcknowledged {
            let mut old = before.plan.as_slice().to_vec();
            let mut new = next.plan.as_slice().to_vec();
            old.sort();
            new.sort();
            prop_assert_eq!(old, new, "a replan changed the plan's channels{}", ctx());
            self.started = next.plan.as_slice()[..usize::from(next.next_step)].to_vec();
        }
        for c in &d.audit.started {
            if !self.started.contains(c) {
                self.started.push(*c);
            }
        }
        prop_assert_eq!(
            self.started.as_slice(),
            &next.plan.as_slice()[..usize::from(next.next_step)],
            "channels started out of plan order{}",
            ctx()
        );

        // Attempt ids: each on one channel; a channel's retries come at
        // most max_retries times per use of it.
        let new_ids = d.commands.iter().filter_map(|c| match *c {
            Command::Send { attempt, channel } => Some((attempt, channel)),
            _ => None,
        });
        for (id, channel) in next
            .in_flight
            .iter()
            .map(|a| (a.id, a.channel))
            .chain(new_ids)
        {
            if !self.ids.contains_key(&id) {
                let retry = d.audit.kind == AuditKind::RetryScheduled;
                *self.uses.entry((channel, retry)).or_default() += 1;
            }
            let known = *self.ids.entry(id).or_insert(channel);
            prop_assert_eq!(
                known,
                channel,
                "attempt id {} reused on another channel{}",
                id,
                ctx()
            );
        }
        for ch in Channel::ALL {
            let uses = self.uses.get(&(ch, false)).copied().unwrap_or(0);
            let retries = self.uses.get(&(ch, true)).copied().unwrap_or(0);
            prop_assert!(
                retries <= uses * self.p.retry.max_retries as usize,
                "{retries} retries on {ch} over {uses} uses with max_retries {}{}",
                self.p.retry.max_retries,
                ctx()
            );
        }

        // An open cascade always has something in flight (else nothing would move it).
        if next.status == CascadeStatus::Active {
            prop_assert!(
                !next.in_flight.is_empty(),
                "active with nothing in flight{}",
                ctx()
            );
            prop_assert!(
                next.consecutive_failures < self.p.hard_failure_threshold,
                "{}",
                ctx()
            );
        }
        prop_assert_eq!(
            next.next_due().is_none(),
            next.status.is_terminal() && !next.escalation_pending(),
            "due until terminal, and a failure until it is taken up{}",
            ctx()
        );

        if matches!(
            e,
            Event::Ack { .. }
                | Event::Cancel
                | Event::QuorumStop
                | Event::BundleAck { .. }
                | Event::Withdraw { .. }
        ) && matches!(
            next.status,
            CascadeStatus::Acknowledged | CascadeStatus::Cancelled
        ) {
            self.closed = true;
        }
        self.kinds.insert(d.audit.kind);
        self.most_in_flight = self.most_in_flight.max(next.in_flight.len());
        self.applied.push(e);
        self.c = d.next.clone();
        Ok(d)
    }

    /// The timing and counting rules, checked against the policy for each
    /// kind of transition (an oracle per rule, not a second engine).
    fn rules(&self, before: &Cascade, e: &Event, d: &Decision) -> Result<(), String> {
        let (p, now, next) = (&self.p, self.now, &d.next);
        let arms: Vec<_> = d
            .commands
            .iter()
            .filter_map(|c| match *c {
                Command::ArmTimer { at, kind, .. } => Some((at, kind)),
                _ => None,
            })
            .collect();
        let expect_arm = |want: (Ts, TimerKind)| {
            if arms == [want] {
                Ok(())
            } else {
                Err(format!("armed {arms:?}, rule says {want:?}"))
            }
        };
        // A timer moves a cascade on only once due; the sweep only once overdue.
        match *e {
            Event::Timer { attempt, .. }
                if !matches!(
                    d.audit.kind,
                    AuditKind::StaleIgnored | AuditKind::AckAfterEnd
                ) =>
            {
                let due = before.attempt(attempt).map(|a| a.phase.due());
                if due.is_none_or(|due| due > now) {
                    return Err(format!("timer acted before its due time {due:?}"));
                }
            }
            Event::Receipt { attempt, .. } if d.audit.kind != AuditKind::StaleIgnored => {
                let phase = before.attempt(attempt).map(|a| a.phase);
                if !matches!(
                    phase,
                    Some(Phase::Sending { .. } | Phase::AwaitingReceipt { .. })
                ) {
                    return Err(format!("receipt acted on an attempt in {phase:?}"));
                }
            }
            Event::Reconcile
                if d.audit.kind != AuditKind::StaleIgnored
                    && !before.overdue(now, p.reconciliation_age) =>
            {
                return Err("the sweep re-drove a cascade that is not overdue".into());
            }
            _ => {}
        }
        let failed = before
            .in_flight
            .iter()
            .find(|a| Some(a.id) == d.audit.attempt);
        let others = before
            .in_flight
            .len()
            .saturating_sub(usize::from(failed.is_some()));
        let remaining = before.plan.len() - usize::from(before.next_step);
        let limit = p.max_in_flight as usize;
        // Rule 6: the next channel once nothing else is out; the next two after UNREACHABLE.
        let expect_started = |unreachable: bool| {
            let want = match (unreachable, others) {
                (true, _) => remaining.min(2).min(limit.saturating_sub(others)),
                (false, 0) => remaining.min(1),
                (false, _) => 0,
            };
            if d.audit.started.len() == want {
                Ok(())
            } else {
                Err(format!(
                    "started {:?}, rule says {want} channel(s)",
                    d.audit.started
                ))
            }
        };
        let failure = |k| {
            matches!(
                k,
                AuditKind::ChannelFailed
                    | AuditKind::ChannelUnreachable
                    | AuditKind::ChannelTimeout
            )
        };
        match d.audit.kind {
            AuditKind::SendAccepted => {
                expect_arm((now.plus(p.receipt_timeout), TimerKind::ReceiptTimeout))?
            }
            AuditKind::RetryScheduled => {
                let n = d.audit.retries.unwrap_or(0);
                if n == 0 || n > p.retry.max_retries {
                    return Err(format!(
                        "retry number {n} with max_retries {}",
                        p.retry.max_retries
                    ));
                }
                expect_arm((now.plus(p.retry.delay(n - 1)), TimerKind::Retry))?;
            }
            AuditKind::Throttled => {
                let Event::SendResult {
                    result: SendOutcome::Throttled { retry_after_ms, .. },
                    ..
                } = *e
                else {
                    return Err("THROTTLED without a throttle".into());
                };
                expect_arm((now.plus(retry_after_ms.max(1)), TimerKind::ThrottleWait))?;
                let a = next.attempt(d.audit.attempt.unwrap_or(0));
                let held = a
                    .and_then(|a| a.throttled_since)
                    .map(|t| now.plus(retry_after_ms.max(1)).since(t));
                if held.is_none_or(|h| h > throttle_bound(next, p)) {
                    return Err(format!(
                        "throttled for {held:?}, past the bound, yet not failed"
                    ));
                }
            }
            AuditKind::ChannelThrottledOut => {
                if d.audit
                    .wait_ms
                    .is_none_or(|w| w < throttle_bound(before, p))
                {
                    return Err(format!(
                        "throttled out after {:?} ms, within the {} ms bound",
                        d.audit.wait_ms,
                        throttle_bound(before, p)
                    ));
                }
                if next.consecutive_failures != before.consecutive_failures + 1 {
                    return Err("a throttled-out channel not counted as a failure".into());
                }
            }
            AuditKind::Delivered => {
                let severity = if next.key.route == Route::Member {
                    next.severity
                } else {
                    p.manager_route
                };
                expect_arm((
                    now.plus(p.escalation_delay(severity, next.tier)),
                    TimerKind::EscalationHold,
                ))?;
                if next.consecutive_failures != 0 {
                    return Err("DELIVERED did not end the run of failures".into());
                }
            }
            k if failure(k) => {
                if next.consecutive_failures != before.consecutive_failures + 1 {
                    return Err("a channel failure not counted once".into());
                }
                expect_started(k == AuditKind::ChannelUnreachable)?;
            }
            AuditKind::NotAcknowledged => {
                let held = before
                    .attempt(d.audit.attempt.unwrap_or(0))
                    .map(|a| a.channel);
                let severity = if before.key.route == Route::Member {
                    before.severity
                } else {
                    p.manager_route
                };
                let step = usize::from(before.next_step);
                let plan = before.plan.as_slice();
                let parallel = p.parallel_voice(severity)
                    && p.max_in_flight >= 2
                    && held.is_some_and(|c| c != Channel::Voice)
                    && others == 0
                    && plan.contains(&Channel::Voice)
                    && !before.dead_channels.contains(&Channel::Voice)
                    && plan.get(step) != Some(&Channel::Voice)
                    && (plan[..step].contains(&Channel::Voice) || step + 1 < plan.len());
                if parallel {
                    if d.audit.started.first() != Some(&Channel::Voice)
                        || d.audit.started.len() != 1 + remaining.min(1)
                    {
                        return Err(format!(
                            "parallel voice rule: started {:?}",
                            d.audit.started
                        ));
                    }
                } else {
                    expect_started(false)?
                }
            }
            AuditKind::CascadeFailure => {
                let exhausted = others == 0 && remaining == 0;
                let ok = match d.audit.cause {
                    Some(k) if failure(k) => {
                        next.consecutive_failures == before.consecutive_failures + 1
                            && (next.consecutive_failures >= p.hard_failure_threshold || exhausted)
                    }
                    Some(AuditKind::NotAcknowledged) => exhausted,
                    Some(AuditKind::ChannelThrottledOut) => {
                        next.consecutive_failures == before.consecutive_failures + 1
                            && (next.consecutive_failures >= p.hard_failure_threshold || exhausted)
                    }
                    Some(AuditKind::CascadeStarted) => before.plan.is_empty(),
                    _ => false,
                };
                if !ok {
                    return Err("CASCADE_FAILURE where rule 7 does not call for one".into());
                }
            }
            _ => {}
        }
        Ok(())
    }

    fn run(&mut self, steps: &[(Wait, Step)]) -> Result<(), TestCaseError> {
        for (w, s) in steps {
            self.wait(w);
            let e = self.event(s);
            self.apply(e)?;
        }
        Ok(())
    }
}

// ---------------------------------------------------------------- liveness

/// What the carrier does with one send.
#[derive(Debug, Clone)]
struct Answer {
    latency: Millis,
    outcome: SendOutcome,
    /// For an accepted send: a receipt this long after acceptance, or none.
    receipt: Option<(ReceiptStatus, Millis)>,
}

fn answer() -> impl Strategy<Value = Answer> {
    (
        0u64..=5_000,
        outcome(),
        prop::option::of((receipt_status(), 0u64..=400_000)),
    )
        .prop_map(|(latency, outcome, receipt)| Answer {
            latency,
            outcome,
            receipt,
        })
}

/// Work the engine asked for (or that its state implies), not yet done.
#[derive(Debug, Clone, Copy)]
enum Due {
    Start,
    Send(u32),
    At(Ts, Fire),
}

#[derive(Debug, Clone, Copy)]
enum Fire {
    Timer(u32, TimerKind),
    Receipt(u32, ReceiptStatus),
}

impl Due {
    fn at(&self, now: Ts) -> Ts {
        match *self {
            Due::Start | Due::Send(_) => now,
            Due::At(t, _) => t,
        }
    }
}

/// The commands implied by a stored state: what a restarted worker re-derives.
fn derive(c: &Cascade) -> Vec<Due> {
    if c.status == CascadeStatus::Pending {
        return vec![Due::Start];
    }
    if c.status.is_terminal() {
        return Vec::new();
    }
    c.in_flight
        .iter()
        .map(|a| match kind_for(a.phase) {
            None => Due::Send(a.id),
            Some(k) => Due::At(a.phase.due(), Fire::Timer(a.id, k)),
        })
        .collect()
}

/// Carries out the engine's own commands until the cascade ends: every send
/// answered (answers in order, then `Failed`), every timer fired at its time,
/// never an ACK, unless `interrupt` = (step, ack?) closes it on the way, in
/// which case every outstanding command is still carried out and must lead to
/// no further send.
fn drive(
    sim: &mut Sim,
    answers: &[Answer],
    interrupt: Option<(usize, bool)>,
) -> Result<usize, TestCaseError> {
    let mut todo: VecDeque<Due> = derive(&sim.c).into();
    let mut answers = answers.iter();
    let fallback = Answer {
        latency: 0,
        outcome: SendOutcome::Failed,
        receipt: None,
    };
    for step in 0..LIVENESS_BOUND {
        if let Some((k, ack)) = interrupt
            && k == step
            && !sim.c.status.is_terminal()
        {
            let e = if ack {
                Event::Ack {
                    channel: Channel::Email,
                    attempt: None,
                }
            } else {
                Event::Cancel
            };
            sim.apply(e)?;
            prop_assert!(sim.closed);
        }
        if sim.c.status.is_terminal() && (!sim.closed || todo.is_empty()) {
            return Ok(step);
        }
        // Sends first (they are immediate), then the earliest timer or receipt.
        let i = (0..todo.len()).min_by_key(|&i| (todo[i].at(sim.now), i));
        let Some(due) = i.and_then(|i| todo.remove(i)) else {
            return Err(TestCaseError::fail(format!(
                "open cascade with nothing left to do: {:#?}",
                sim.c
            )));
        };
        sim.advance_to(due.at(sim.now));
        let d = match due {
            Due::Start => sim.apply(Event::Start)?,
            Due::Send(attempt) => {
                let a = answers.next().unwrap_or(&fallback);
                sim.advance_to(sim.now.plus(a.latency));
                let d = sim.apply(Event::SendResult {
                    attempt,
                    result: a.outcome,
                })?;
                if let (SendOutcome::Accepted, Some((status, after))) = (a.outcome, a.receipt) {
                    todo.push_back(Due::At(sim.now.plus(after), Fire::Receipt(attempt, status)));
                }
                d
            }
            Due::At(_, Fire::Timer(attempt, kind)) => sim.apply(Event::Timer { attempt, kind })?,
            Due::At(_, Fire::Receipt(attempt, status)) => {
                sim.apply(Event::Receipt { attempt, status })?
            }
        };
        for c in d.commands {
            match c {
                Command::Send { attempt, .. } => todo.push_back(Due::Send(attempt)),
                Command::ArmTimer { at, attempt, kind } => {
                    todo.push_back(Due::At(at, Fire::Timer(attempt, kind)))
                }
                Command::EscalateToManager
                | Command::EmitCascadeFailure
                | Command::WithdrawEscalations
                | Command::NotifyWithdrawn => {}
            }
        }
    }
    Err(TestCaseError::fail(format!(
        "not ended after {LIVENESS_BOUND} steps: {:#?}",
        sim.c
    )))
}

// ---------------------------------------------------------------- properties

/// `cases` per property (sized for about a second in debug), unless
/// `PROPTEST_CASES` asks for a deeper run. No regression files are written.
fn config(cases: u32) -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(cases);
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config(1024))]

    /// Any event sequence, however duplicated, reordered or stale, keeps every
    /// invariant at every step.
    #[test]
    fn random_event_sequences_keep_every_invariant(s in setup(), steps in steps(80)) {
        let mut sim = Sim::new(&s);
        sim.run(&steps)?;
    }

    /// From any reachable state, the engine's own commands alone end the
    /// cascade: no lost timer, no state that waits for nothing, no unbounded
    /// retry; and nothing is sent once it is ACKed or cancelled.
    #[test]
    fn own_commands_alone_end_every_cascade(
        s in setup(),
        prefix in steps(30),
        answers in prop::collection::vec(answer(), 0..=40),
        interrupt in prop::option::weighted(0.3, (0usize..40, any::<bool>())),
    ) {
        let mut sim = Sim::new(&s);
        sim.run(&prefix)?;
        let taken = drive(&mut sim, &answers, interrupt)?;
        prop_assert_eq!(check_final(&sim.c), None);
        prop_assert!(taken < LIVENESS_BOUND);
        if interrupt.is_none() && !sim.closed {
            // Never ACKed: the only way out is the hard-failure path.
            prop_assert_eq!(sim.c.status, CascadeStatus::Escalated);
        }
        // Retries stay bounded per use of a channel over the whole run.
        for ch in Channel::ALL {
            let uses = sim.uses.get(&(ch, false)).copied().unwrap_or(0);
            let retries = sim.uses.get(&(ch, true)).copied().unwrap_or(0);
            prop_assert!(retries <= uses * s.policy.retry.max_retries as usize, "{ch}: {retries} retries over {uses} uses");
        }
    }
}

/// The properties are only as good as their reach: random runs must get to
/// every kind of transition (retries, throttles, pairs in flight, holds, each
/// way of ending, sweeps), or a green run proves little.
#[test]
fn random_runs_reach_every_kind_of_transition() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let mut runner = TestRunner::deterministic();
    let strategy = (setup(), steps(80), prop::collection::vec(answer(), 0..=40));
    let mut kinds = HashSet::new();
    let mut most_in_flight = 0;
    for _ in 0..300 {
        let (s, steps, answers) = strategy.new_tree(&mut runner).expect("a value").current();
        let mut sim = Sim::new(&s);
        sim.run(&steps).expect("invariants hold");
        drive(&mut sim, &answers, None).expect("the cascade ends");
        kinds.extend(sim.kinds);
        most_in_flight = most_in_flight.max(sim.most_in_flight);
    }
    let all = [
        AuditKind::CascadeStarted,
        AuditKind::SendAccepted,
        AuditKind::Throttled,
        AuditKind::RetryScheduled,
        AuditKind::RetrySent,
        AuditKind::ThrottleResumed,
        AuditKind::Delivered,
        AuditKind::ChannelFailed,
        AuditKind::ChannelUnreachable,
        AuditKind::ChannelTimeout,
        AuditKind::NotAcknowledged,
        AuditKind::Acknowledged,
        AuditKind::AckAfterEnd,
        AuditKind::CascadeFailure,
        AuditKind::Cancelled,
        AuditKind::StaleIgnored,
        AuditKind::Redriven,
        AuditKind::ChannelThrottledOut,
        AuditKind::PlanChanged,
        AuditKind::Deferred,
        AuditKind::DeferredSent,
        AuditKind::EscalationStarted,
        AuditKind::EscalationUndelivered,
        AuditKind::Withdrawn,
        AuditKind::NoticeSent,
    ];
    let missing: Vec<_> = all.iter().filter(|k| !kinds.contains(*k)).collect();
    assert!(missing.is_empty(), "no random run reached {missing:?}");
    assert_eq!(
        most_in_flight, 2,
        "no random run had two attempts in flight"
    );
}
