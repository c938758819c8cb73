//! `decide`: the ten cascade rules. See the module docs of `engine`.

use super::{
    Attempt, AuditKind, AuditRecord, Cascade, CascadeStatus, Command, Decision, Event, Phase,
    ReceiptStatus, Route, SendOutcome, TimerKind,
};
use crate::domain::Ts;
use crate::policy::Policy;

/// Decides the next state of `cascade` after `event` at `now`.
pub fn decide(cascade: &Cascade, event: &Event, policy: &Policy, now: Ts) -> Decision {
    let mut t = Transition::new(cascade, policy, now);
    t.apply(event);
    t.finish()
}

struct Transition<'a> {
    next: Cascade,
    policy: &'a Policy,
    now: Ts,
    commands: Vec<Command>,
    audit: AuditRecord,
}

impl<'a> Transition<'a> {
    fn new(c: &Cascade, policy: &'a Policy, now: Ts) -> Self {
        let mut next = c.clone();
        next.version += 1;
        Transition {
            next,
            policy,
            now,
            commands: Vec::new(),
            audit: AuditRecord {
                kind: AuditKind::StaleIgnored,
                cause: None,
                channel: None,
                attempt: None,
                status: c.status,
                started: Vec::new(),
                in_flight: 0,
                retries: None,
                wait_ms: None,
                note: None,
            },
        }
    }

    fn finish(mut self) -> Decision {
        self.audit.status = self.next.status;
        self.audit.in_flight = self.next.in_flight.len() as u8;
        Decision {
            next: self.next,
            commands: self.commands,
            audit: self.audit,
        }
    }

    fn record(&mut self, kind: AuditKind, attempt: Option<&Attempt>) {
        self.audit.kind = kind;
        if let Some(a) = attempt {
            self.audit.channel = Some(a.channel);
            self.audit.attempt = Some(a.id);
        }
    }

    fn stale(&mut self, note: String) {
        self.audit.kind = AuditKind::StaleIgnored;
        self.audit.note = Some(note);
    }

    fn apply(&mut self, event: &Event) {
        if self.next.status.is_terminal() {
            return self.absorb(event);
        }
        match *event {
            Event::Start => {
                if self.next.status != CascadeStatus::Pending {
                    return self.stale("start of a cascade already started".into());
                }
                self.start();
            }
            Event::SendResult { attempt, result } => {
                let Some(i) = self.find(attempt, |p| matches!(p, Phase::Sending { .. })) else {
                    return self.stale(format!(
                        "send result for attempt {attempt}, which is not sending"
                    ));
                };
                self.send_result(i, result);
            }
            Event::Receipt { attempt, status } => {
                let Some(i) = self.find(attempt, |p| {
                    matches!(p, Phase::Sending { .. } | Phase::AwaitingReceipt { .. })
                }) else {
                    return self.stale(format!(
                        "receipt for attempt {attempt}, which is not awaiting one"
                    ));
                };
                self.receipt(i, status);
            }
            Event::Ack { channel, attempt } => {
                let a = attempt.and_then(|id| self.next.attempt(id).copied());
                self.next.status = CascadeStatus::Acknowledged;
                self.next.acked_at = Some(self.now);
                self.next.acked_on = Some(channel);
                self.end();
                self.record(AuditKind::Acknowledged, a.as_ref());
                self.audit.channel = Some(channel);
                self.audit.attempt = attempt;
            }
            Event::Timer { attempt, kind } => {
                let Some(i) = self.find(attempt, |p| phase_matches(p, kind)) else {
                    return self.stale(format!(
                        "{} timer for attempt {attempt}, which is no longer in that phase",
                        timer_name(kind)
                    ));
                };
                let due = self.next.in_flight[i].phase.due();
                if self.now < due {
                    self.commands.push(Command::ArmTimer {
                        at: due,
                        attempt,
                        kind,
                    });
                    return self.stale(format!(
                        "{} timer for attempt {attempt} fired early; re-armed",
                        timer_name(kind)
                    ));
                }
                self.fire(i, kind);
            }
            Event::Reconcile => self.reconcile(),
            Event::Cancel => {
                self.next.status = CascadeStatus::Cancelled;
                self.end();
                self.record(AuditKind::Cancelled, None);
            }
            Event::OptOut { channel } => {
                let step = usize::from(self.next.next_step);
                let plan = self.next.plan;
                let (done, rest) = plan.as_slice().split_at(step.min(plan.len()));
                let kept: Vec<_> = done
                    .iter()
                    .chain(rest.iter().filter(|c| **c != channel))
                    .copied()
                    .collect();
                self.next.plan = super::ChannelPlan::new(&kept);
                self.record(AuditKind::OptOut, None);
                self.audit.channel = Some(channel);
                // An attempt on the channel not yet sent is withdrawn, without
                // counting as a failure; one already sent runs its course.
                let unsent = self.next.in_flight.iter().position(|a| {
                    a.channel == channel
                        && matches!(
                            a.phase,
                            Phase::Sending { .. } | Phase::Backoff { .. } | Phase::Throttled { .. }
                        )
                });
                if let Some(i) = unsent {
                    let a = self.next.in_flight.remove(i);
                    self.audit.attempt = Some(a.id);
                    self.audit.note =
                        Some(format!("attempt {} withdrawn before it was sent", a.id));
                    self.advance(1, AuditKind::OptOut);
                } else if kept.len() == plan.len() {
                    self.audit.note = Some("channel already used or not in the plan".into());
                }
            }
        }
    }

    /// Terminal states absorb: a late ACK is recorded, nothing else changes.
    fn absorb(&mut self, event: &Event) {
        match *event {
            Event::Ack { channel, attempt } if self.next.acked_at.is_none() => {
                self.next.acked_at = Some(self.now);
                self.next.acked_on = Some(channel);
                self.record(AuditKind::AckAfterEnd, None);
                self.audit.channel = Some(channel);
                self.audit.attempt = attempt;
                self.audit.note = Some(format!(
                    "acknowledged after the cascade ended as {}; nothing sent",
                    self.next.status.as_str()
                ));
            }
            _ => self.stale(format!("cascade already {}", self.next.status.as_str())),
        }
    }

    fn find(&self, id: u32, phase_ok: impl Fn(Phase) -> bool) -> Option<usize> {
        self.next
            .in_flight
            .iter()
            .position(|a| a.id == id && phase_ok(a.phase))
    }

    fn start(&mut self) {
        self.next.status = CascadeStatus::Active;
        self.record(AuditKind::CascadeStarted, None);
        self.start_channels(1);
        if self.next.in_flight.is_empty() {
            self.audit.note = Some("no usable channel".into());
            self.escalate(AuditKind::CascadeStarted);
        }
    }

    /// Starts up to `count` next channels of the plan, never exceeding the
    /// in-flight limit.
    fn start_channels(&mut self, count: usize) {
        let limit = self.policy.max_in_flight.clamp(1, 2) as usize;
        for _ in 0..count {
            let step = usize::from(self.next.next_step);
            if self.next.in_flight.len() >= limit || step >= self.next.plan.len() {
                break;
            }
            let channel = self.next.plan.as_slice()[step];
            self.next.next_step += 1;
            let id = self.new_attempt_id();
            self.next.in_flight.push(Attempt {
                id,
                channel,
                retries: 0,
                phase: Phase::Sending { since: self.now },
            });
            self.commands.push(Command::Send {
                attempt: id,
                channel,
            });
            self.audit.started.push(channel);
        }
    }

    fn new_attempt_id(&mut self) -> u32 {
        let id = self.next.next_attempt;
        self.next.next_attempt += 1;
        id
    }

    fn arm(&mut self, i: usize, kind: TimerKind) {
        let a = self.next.in_flight[i];
        self.commands.push(Command::ArmTimer {
            at: a.phase.due(),
            attempt: a.id,
            kind,
        });
    }

    fn send_result(&mut self, i: usize, result: SendOutcome) {
        let a = self.next.in_flight[i];
        match result {
            SendOutcome::Accepted => {
                self.next.in_flight[i].phase = Phase::AwaitingReceipt {
                    deadline: self.now.plus(self.policy.receipt_timeout),
                };
                self.next.first_contact_at.get_or_insert(self.now);
                self.arm(i, TimerKind::ReceiptTimeout);
                self.record(AuditKind::SendAccepted, Some(&a));
            }
            SendOutcome::Throttled { retry_after_ms } => {
                let wait = retry_after_ms.max(1);
                self.next.in_flight[i].phase = Phase::Throttled {
                    until: self.now.plus(wait),
                };
                self.arm(i, TimerKind::ThrottleWait);
                self.record(AuditKind::Throttled, Some(&a));
                self.audit.wait_ms = Some(wait);
                self.audit.retries = Some(a.retries);
            }
            SendOutcome::Transient if a.retries < self.policy.retry.max_retries => {
                let wait = self.policy.retry.delay(a.retries);
                let id = self.new_attempt_id();
                self.next.in_flight[i] = Attempt {
                    id,
                    channel: a.channel,
                    retries: a.retries + 1,
                    phase: Phase::Backoff {
                        until: self.now.plus(wait),
                    },
                };
                self.arm(i, TimerKind::Retry);
                self.record(AuditKind::RetryScheduled, Some(&a));
                self.audit.wait_ms = Some(wait);
                self.audit.retries = Some(a.retries + 1);
                self.audit.note = Some(format!("retry as attempt {id}"));
            }
            SendOutcome::Transient => {
                self.audit.note = Some(format!(
                    "{} transient failures: retries exhausted",
                    a.retries + 1
                ));
                self.channel_failed(i, AuditKind::ChannelFailed);
            }
            SendOutcome::Failed => self.channel_failed(i, AuditKind::ChannelFailed),
            SendOutcome::Unreachable => self.channel_failed(i, AuditKind::ChannelUnreachable),
        }
    }

    fn receipt(&mut self, i: usize, status: ReceiptStatus) {
        let a = self.next.in_flight[i];
        match status {
            ReceiptStatus::Delivered => {
                let hold = self.hold_delay();
                self.next.in_flight[i].phase = Phase::Holding {
                    until: self.now.plus(hold),
                };
                self.next.first_contact_at.get_or_insert(self.now);
                self.next.consecutive_failures = 0;
                self.arm(i, TimerKind::EscalationHold);
                self.record(AuditKind::Delivered, Some(&a));
                self.audit.wait_ms = Some(hold);
            }
            ReceiptStatus::Failed => self.channel_failed(i, AuditKind::ChannelFailed),
            ReceiptStatus::Unreachable => self.channel_failed(i, AuditKind::ChannelUnreachable),
        }
    }

    fn hold_delay(&self) -> u64 {
        let severity = match self.next.key.route {
            Route::Member => self.next.severity,
            Route::Manager => self.policy.manager_route,
        };
        self.policy.escalation_delay(severity, self.next.tier)
    }

    fn fire(&mut self, i: usize, kind: TimerKind) {
        let a = self.next.in_flight[i];
        match kind {
            TimerKind::Retry | TimerKind::ThrottleWait => {
                self.next.in_flight[i].phase = Phase::Sending { since: self.now };
                self.commands.push(Command::Send {
                    attempt: a.id,
                    channel: a.channel,
                });
                let k = if kind == TimerKind::Retry {
                    AuditKind::RetrySent
                } else {
                    AuditKind::ThrottleResumed
                };
                self.record(k, Some(&a));
                self.audit.retries = Some(a.retries);
            }
            TimerKind::ReceiptTimeout => self.channel_failed(i, AuditKind::ChannelTimeout),
            TimerKind::EscalationHold => {
                self.next.in_flight.remove(i);
                self.record(AuditKind::NotAcknowledged, Some(&a));
                self.advance(1, AuditKind::NotAcknowledged);
            }
        }
    }

    /// The channel of attempt `i` failed: count it, then escalate on the hard
    /// failure threshold, or start the next channel (the next two together
    /// after UNREACHABLE).
    fn channel_failed(&mut self, i: usize, kind: AuditKind) {
        let a = self.next.in_flight.remove(i);
        self.next.consecutive_failures += 1;
        self.record(kind, Some(&a));
        if self.next.consecutive_failures >= self.policy.hard_failure_threshold {
            let note = format!(
                "{} consecutive channel failures",
                self.next.consecutive_failures
            );
            self.audit.note = Some(match self.audit.note.take() {
                Some(n) => format!("{n}; {note}"),
                None => note,
            });
            return self.escalate(kind);
        }
        let count = if kind == AuditKind::ChannelUnreachable {
            2
        } else {
            1
        };
        self.advance(count, kind);
    }

    /// Starts the next channel(s) when nothing else is in flight (or, after
    /// UNREACHABLE, alongside what is); with every channel tried and nothing
    /// in flight, the cascade has failed.
    fn advance(&mut self, count: usize, cause: AuditKind) {
        if count > 1 || self.next.in_flight.is_empty() {
            self.start_channels(count);
        }
        if self.next.in_flight.is_empty() {
            self.audit
                .note
                .get_or_insert_with(|| "every channel tried without an ACK".into());
            self.escalate(cause);
        }
    }

    fn escalate(&mut self, cause: AuditKind) {
        self.next.status = CascadeStatus::Escalated;
        self.end();
        self.audit.kind = AuditKind::CascadeFailure;
        self.audit.cause = Some(cause);
        self.commands
            .retain(|c| !matches!(c, Command::Send { .. } | Command::ArmTimer { .. }));
        self.commands.push(Command::EmitCascadeFailure);
        if self.next.key.route == Route::Member {
            self.commands.push(Command::EscalateToManager);
        }
    }

    fn end(&mut self) {
        self.next.in_flight.clear();
        self.next.ended_at = Some(self.now);
    }

    /// Forced transition for a cascade overdue by the reconciliation age: the
    /// most overdue thing is done as if its timer (or send) had just happened.
    fn reconcile(&mut self) {
        let age = self.policy.reconciliation_age;
        if self.next.status == CascadeStatus::Pending {
            if self.next.created_at.plus(age) >= self.now {
                return self.stale("reconcile: not overdue".into());
            }
            self.start();
            let kind = self.audit.kind;
            return self.redriven(kind);
        }
        let Some(i) =
            (0..self.next.in_flight.len()).min_by_key(|&i| self.next.in_flight[i].phase.due())
        else {
            return self.stale("reconcile: nothing in flight".into());
        };
        let a = self.next.in_flight[i];
        if a.phase.due().plus(age) >= self.now {
            return self.stale("reconcile: not overdue".into());
        }
        match a.phase {
            // No answer to a send for the whole reconciliation age counts as a
            // transient failure, so repeated re-drives spend the retry budget
            // and end in a channel failure instead of looping.
            Phase::Sending { .. } => {
                self.send_result(i, SendOutcome::Transient);
                self.audit.note = Some(match self.audit.note.take() {
                    Some(n) => format!("no result from the carrier; {n}"),
                    None => "no result from the carrier".into(),
                });
            }
            Phase::Backoff { .. } => self.fire(i, TimerKind::Retry),
            Phase::Throttled { .. } => self.fire(i, TimerKind::ThrottleWait),
            Phase::AwaitingReceipt { .. } => self.fire(i, TimerKind::ReceiptTimeout),
            Phase::Holding { .. } => self.fire(i, TimerKind::EscalationHold),
        }
        let kind = self.audit.kind;
        self.redriven(kind);
    }

    /// Marks a forced transition: REDRIVEN with what it did as the cause
    /// (a forced transition that escalates stays CASCADE_FAILURE).
    fn redriven(&mut self, what: AuditKind) {
        let forced = format!("forced by the reconciliation sweep ({})", what.as_str());
        self.audit.note = Some(match self.audit.note.take() {
            Some(n) => format!("{n}; {forced}"),
            None => forced,
        });
        if what != AuditKind::CascadeFailure {
            self.audit.kind = AuditKind::Redriven;
            self.audit.cause = Some(what);
        }
    }
}

/// Whether a timer still applies: the cascade is open and the attempt is in
/// flight in the phase the timer was armed for. A timer that does not apply
/// is an expected leftover (timers are never cancelled), not an event.
pub fn timer_is_live(c: &Cascade, attempt: u32, kind: TimerKind) -> bool {
    !c.status.is_terminal()
        && c.in_flight
            .iter()
            .any(|a| a.id == attempt && phase_matches(a.phase, kind))
}

fn phase_matches(p: Phase, kind: TimerKind) -> bool {
    matches!(
        (p, kind),
        (Phase::Backoff { .. }, TimerKind::Retry)
            | (Phase::Throttled { .. }, TimerKind::ThrottleWait)
            | (Phase::AwaitingReceipt { .. }, TimerKind::ReceiptTimeout)
            | (Phase::Holding { .. }, TimerKind::EscalationHold)
    )
}

fn timer_name(kind: TimerKind) -> &'static str {
    match kind {
        TimerKind::Retry => "retry",
        TimerKind::ThrottleWait => "throttle-wait",
        TimerKind::ReceiptTimeout => "receipt-timeout",
        TimerKind::EscalationHold => "escalation-hold",
    }
}
