//! `decide`: the ten cascade rules. See the module docs of `engine`.

use super::{
    Attempt, AuditKind, AuditRecord, Cascade, CascadeStatus, ChannelPlan, ChannelWaits, Command,
    Decision, Event, Phase, ReceiptStatus, Route, SendOutcome, TimerKind,
};
use crate::domain::{Channel, Millis, Severity, Ts};
use crate::policy::Policy;

/// The severity whose delays a cascade follows: the incident's for members,
/// the policy's manager route for escalations.
pub fn route_severity(c: &Cascade, policy: &Policy) -> Severity {
    match c.key.route {
        Route::Member => c.severity,
        Route::Escalation { .. } => policy.manager_route,
    }
}

/// The escalation delay `c` holds a DELIVERED message for before moving on
/// (rule 5), and for which a person contacted by `c` on a call or an SMS is
/// not called or texted again by another cascade (rule 7).
pub fn hold_delay(c: &Cascade, policy: &Policy) -> Millis {
    policy.escalation_delay(route_severity(c, policy), c.tier)
}

/// How long carrier throttling may hold one attempt of `c` back before its
/// channel fails for that person (rule 3): the policy's bound, else the
/// severity x tier escalation delay.
pub fn throttle_bound(c: &Cascade, policy: &Policy) -> Millis {
    policy
        .throttle_bound
        .unwrap_or_else(|| hold_delay(c, policy))
}

/// How long a member send may wait in a carrier endpoint's queue before the
/// channel is moved later in the person's plan (when another channel of it
/// has room sooner): `cascade.queue_wait_bound`, else the hold for the
/// cascade's severity and tier (90 s for P1 by default), so nobody waits
/// longer for their first channel than the cascade would wait for an answer.
pub fn queue_bound(c: &Cascade, policy: &Policy) -> Millis {
    policy
        .queue_wait_bound
        .unwrap_or_else(|| hold_delay(c, policy))
}

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
                response: None,
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
        if let Event::Update {
            seq,
            all_clear,
            channel,
            accepted,
        } = *event
        {
            return self.update(seq, all_clear, channel, accepted);
        }
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
            Event::Respond {
                channel,
                attempt,
                ref key,
                acknowledges,
            } => {
                if !acknowledges && self.next.key.route.is_escalation() {
                    self.stale(format!(
                        "answer {key} to an escalation, which only an acknowledgement takes up"
                    ));
                    self.audit.response = Some(key.clone());
                    return;
                }
                let a = attempt.and_then(|id| self.next.attempt(id).copied());
                self.next.response = Some(key.clone());
                if acknowledges {
                    self.next.status = CascadeStatus::Acknowledged;
                    self.next.acked_at = Some(self.now);
                    self.next.acked_on = Some(channel);
                    self.end();
                    self.record(AuditKind::Acknowledged, a.as_ref());
                } else {
                    // Ended, and named to the manager route at once: who
                    // needs help is the first thing a BCP lead must know.
                    self.next.status = CascadeStatus::Escalated;
                    self.end();
                    self.record(AuditKind::Responded, a.as_ref());
                    self.commands
                        .retain(|c| !matches!(c, Command::Send { .. } | Command::ArmTimer { .. }));
                    self.commands.push(Command::EscalateToManager);
                }
                self.audit.channel = Some(channel);
                self.audit.attempt = attempt;
                self.audit.response = Some(key.clone());
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
            Event::QuorumStop => {
                if self.next.key.route.is_escalation() {
                    return self.stale("quorum stop of an escalation, which goes on".into());
                }
                self.next.status = CascadeStatus::Cancelled;
                self.end();
                self.record(AuditKind::Cancelled, None);
                self.audit.note = Some("quorum reached: the trigger stops there".into());
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
                            Phase::Sending { .. }
                                | Phase::Backoff { .. }
                                | Phase::Throttled { .. }
                                | Phase::Deferred { .. }
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
            Event::Replan { attempt, waits } => {
                let Some(i) = self.find(attempt, |p| matches!(p, Phase::Sending { .. })) else {
                    return self
                        .stale(format!("replan of attempt {attempt}, which is not sending"));
                };
                self.replan(i, &waits);
            }
            Event::BundleAck {
                channel,
                ref message,
            } => {
                self.next.status = CascadeStatus::Acknowledged;
                self.next.acked_at = Some(self.now);
                self.next.acked_on = Some(channel);
                self.end();
                self.record(AuditKind::Acknowledged, None);
                self.audit.channel = Some(channel);
                self.audit.note = Some(format!("acknowledged by the answer to {message}"));
            }
            Event::Withdraw { ref by } => {
                if !self.next.key.route.is_escalation() {
                    return self.stale("withdraw of a member cascade".into());
                }
                let reached = self.next.first_contact_at.is_some();
                self.next.status = CascadeStatus::Cancelled;
                self.end();
                self.record(AuditKind::Withdrawn, None);
                let who = match by {
                    None => "the person it is about acknowledged".to_string(),
                    Some(p) => format!("{p}, told before on the chain, acknowledged the failure"),
                };
                self.audit.note = Some(if reached {
                    format!("{who}; an update follows")
                } else {
                    format!("{who} before any message was accepted")
                });
                if reached {
                    self.commands.push(Command::NotifyWithdrawn);
                }
            }
            Event::EscalationStarted { .. }
            | Event::EscalationUndelivered { .. }
            | Event::HandedOn { .. }
            | Event::Notice { .. } => {
                self.stale("escalation bookkeeping for a cascade that has not ended".into())
            }
            // Handled before the state is looked at.
            Event::Update { .. } => {}
        }
    }

    /// An update offered to a carrier, in any state: recorded once, nothing
    /// else changes (its message is not an attempt of the cascade).
    fn update(&mut self, seq: u32, all_clear: bool, channel: Option<Channel>, accepted: bool) {
        if self.next.key.route.is_escalation() {
            return self.stale(format!("update {seq} for an escalation"));
        }
        if seq <= self.next.updated {
            return self.stale(format!("update {seq} already recorded"));
        }
        self.next.updated = seq;
        let what = if all_clear {
            "the all-clear".to_string()
        } else {
            format!("update {seq}")
        };
        let kind = if accepted {
            AuditKind::UpdateSent
        } else {
            AuditKind::UpdateFailed
        };
        self.record(kind, None);
        self.audit.channel = channel;
        self.audit.note = Some(match (channel, accepted) {
            (None, _) => format!("{what}: no channel an update goes on (only a phone to call)"),
            (Some(_), true) => what,
            (Some(_), false) => format!("{what}: the carrier refused it"),
        });
    }

    /// Terminal states absorb: a late ACK is recorded, nothing else changes.
    fn absorb(&mut self, event: &Event) {
        if let Event::Respond {
            channel,
            attempt,
            key,
            acknowledges,
        } = event
        {
            // A late answer that acknowledges is a late acknowledgement
            // (after RESPONDED: the person is now safe; the open escalation
            // about them is withdrawn). Another is recorded, nothing more.
            if *acknowledges && self.next.acked_at.is_none() {
                self.absorb(&Event::Ack {
                    channel: *channel,
                    attempt: *attempt,
                });
                self.next.response = Some(key.clone());
            } else {
                self.stale(format!(
                    "answer {key} after the cascade ended as {}",
                    self.next.status.as_str()
                ));
            }
            self.audit.response = Some(key.clone());
            return;
        }
        let escalated_member =
            self.next.status == CascadeStatus::Escalated && self.next.key.route == Route::Member;
        match event {
            Event::Ack { channel, attempt } if self.next.acked_at.is_none() => {
                self.next.acked_at = Some(self.now);
                self.next.acked_on = Some(*channel);
                self.record(AuditKind::AckAfterEnd, None);
                self.audit.channel = Some(*channel);
                self.audit.attempt = *attempt;
                self.audit.note = Some(format!(
                    "acknowledged after the cascade ended as {}; nothing sent",
                    self.next.status.as_str()
                ));
                let escalated = self.next.status == CascadeStatus::Escalated;
                if escalated_member && !self.next.escalated_to.is_empty() {
                    self.audit.note = Some(
                        "acknowledged after CASCADE_FAILURE; its open escalation is withdrawn"
                            .into(),
                    );
                    self.commands.push(Command::WithdrawEscalations);
                } else if escalated && self.next.key.route.is_escalation() {
                    self.audit.note = Some(
                        "acknowledged after this escalation had moved up the chain; the open one is withdrawn"
                            .into(),
                    );
                    self.commands.push(Command::WithdrawEscalations);
                }
            }
            // An answer to another message that named this failure, after
            // this escalation had already moved up the chain: the person
            // told here knows; the open escalation above is withdrawn.
            Event::BundleAck { channel, message } if self.next.takes_bundle_ack() => {
                self.next.acked_at = Some(self.now);
                self.next.acked_on = Some(*channel);
                self.record(AuditKind::AckAfterEnd, None);
                self.audit.channel = Some(*channel);
                self.audit.note = Some(format!(
                    "acknowledged by the answer to {message}, after this escalation had moved up the chain; the open one is withdrawn"
                ));
                self.commands.push(Command::WithdrawEscalations);
            }
            Event::EscalationStarted { to } if escalated_member && self.next.acked_at.is_none() => {
                if self.next.escalated_to.contains(to) {
                    return self.stale(format!("already escalated to {to}"));
                }
                self.next.escalated_to.push(to.clone());
                self.next.handed_on = true;
                self.record(AuditKind::EscalationStarted, None);
                self.audit.note = Some(format!(
                    "escalated to {to} (level {})",
                    self.next.escalated_to.len()
                ));
            }
            Event::EscalationUndelivered { reason }
                if escalated_member && !self.next.escalation_undelivered =>
            {
                self.next.escalation_undelivered = true;
                self.next.handed_on = true;
                self.record(AuditKind::EscalationUndelivered, None);
                self.audit.note = Some(reason.clone());
            }
            Event::HandedOn { closed }
                if self.next.escalation_pending()
                    && (*closed || self.next.key.route.is_escalation()) =>
            {
                self.next.handed_on = true;
                if *closed {
                    self.record(AuditKind::Cancelled, None);
                    self.audit.note =
                        Some("the incident closed before the failure was taken up".into());
                } else {
                    self.record(AuditKind::EscalationStarted, None);
                    self.audit.note =
                        Some("handed to the escalation chain of the person it was about".into());
                }
            }
            // The sweep found an escalation not taken up for the whole
            // reconciliation age (its job was lost): escalate again.
            Event::Reconcile if self.next.escalation_pending() => {
                let age = self.policy.reconciliation_age;
                if self.next.ended_at.is_some_and(|t| t.plus(age) >= self.now) {
                    return self.stale("reconcile: escalation not overdue".into());
                }
                self.commands.push(Command::EscalateToManager);
                self.record(AuditKind::Redriven, None);
                self.audit.cause = Some(AuditKind::CascadeFailure);
                self.audit.note = Some(
                    "forced by the reconciliation sweep: the failure had not been taken up; escalated again".into(),
                );
            }
            Event::Notice { channel, accepted }
                if self.next.status == CascadeStatus::Cancelled
                    && self.next.key.route.is_escalation()
                    && !self.next.noticed =>
            {
                self.next.noticed = *accepted;
                let kind = if *accepted {
                    AuditKind::NoticeSent
                } else {
                    AuditKind::NoticeFailed
                };
                self.record(kind, None);
                self.audit.channel = *channel;
                self.audit.note = Some(match channel {
                    Some(_) => "update: the failure this escalation reported is acknowledged".into(),
                    None => "no update sent: the person has no email, push or SMS (never a call for an update)".into(),
                });
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
            return;
        }
        // Quiet hours: the first message waits for the window to end.
        if let Some(until) = self.next.quiet_until.filter(|t| *t > self.now) {
            for i in 0..self.next.in_flight.len() {
                let id = self.next.in_flight[i].id;
                self.next.in_flight[i].phase = Phase::Deferred { until };
                self.commands
                    .retain(|c| !matches!(c, Command::Send { attempt, .. } if *attempt == id));
                self.arm(i, TimerKind::DeferredStart);
            }
            self.audit.wait_ms = Some(until.since(self.now));
            self.audit.note = Some(format!(
                "quiet hours: the first message waits {}s, until the window ends",
                until.since(self.now).div_ceil(1000)
            ));
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
                throttled_since: None,
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
            SendOutcome::Throttled {
                retry_after_ms,
                since,
            } => {
                let wait = retry_after_ms.max(1);
                let since = [a.throttled_since, since, Some(self.now)]
                    .into_iter()
                    .flatten()
                    .min()
                    .unwrap_or(self.now);
                let bound = throttle_bound(&self.next, self.policy);
                let held = self.now.plus(wait).since(since);
                if held > bound {
                    self.audit.note = Some(format!(
                        "held back by carrier throttling for {}s, past the {}s bound; no retry spent",
                        held / 1000,
                        bound / 1000
                    ));
                    self.audit.wait_ms = Some(held);
                    return self.channel_failed(i, AuditKind::ChannelThrottledOut);
                }
                self.next.in_flight[i].phase = Phase::Throttled {
                    until: self.now.plus(wait),
                };
                self.next.in_flight[i].throttled_since = Some(since);
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
                    // Still held back since then, if throttling held it.
                    throttled_since: a.throttled_since,
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
            SendOutcome::Failed => {
                self.mark_dead(i);
                self.channel_failed(i, AuditKind::ChannelFailed)
            }
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
        hold_delay(&self.next, self.policy)
    }

    fn fire(&mut self, i: usize, kind: TimerKind) {
        let a = self.next.in_flight[i];
        match kind {
            TimerKind::Retry | TimerKind::ThrottleWait | TimerKind::DeferredStart => {
                self.next.in_flight[i].phase = Phase::Sending { since: self.now };
                self.commands.push(Command::Send {
                    attempt: a.id,
                    channel: a.channel,
                });
                let k = match kind {
                    TimerKind::Retry => AuditKind::RetrySent,
                    TimerKind::ThrottleWait => AuditKind::ThrottleResumed,
                    _ => AuditKind::DeferredSent,
                };
                self.record(k, Some(&a));
                self.audit.retries = Some(a.retries);
            }
            TimerKind::ReceiptTimeout => self.channel_failed(i, AuditKind::ChannelTimeout),
            TimerKind::EscalationHold => {
                self.next.in_flight.remove(i);
                self.record(AuditKind::NotAcknowledged, Some(&a));
                if a.channel != Channel::Voice && self.parallel_voice_applies() {
                    return self.advance_with_voice();
                }
                self.advance(1, AuditKind::NotAcknowledged);
            }
        }
    }

    /// The seed's rule: DELIVERED on a non-voice channel without an ACK
    /// within the hold places a voice call alongside the next step, when the
    /// policy says so for this severity, the person can be called, and two
    /// attempts may be in flight.
    fn parallel_voice_applies(&self) -> bool {
        let c = &self.next;
        self.policy.parallel_voice(route_severity(c, self.policy))
            && self.policy.max_in_flight >= 2
            && c.plan.as_slice().contains(&Channel::Voice)
            && !c.dead_channels.contains(&Channel::Voice)
            && c.in_flight.is_empty()
            && c.plan.as_slice().get(usize::from(c.next_step)) != Some(&Channel::Voice)
            // Voice later in the plan counts only with a channel to go with it.
            && (c.plan.as_slice()[..usize::from(c.next_step)].contains(&Channel::Voice)
                || usize::from(c.next_step) + 1 < c.plan.len())
    }

    /// Starts a voice attempt and the plan's next channel (if any) together;
    /// a next channel of SMS waits the stagger, so voice and SMS never go
    /// at the same instant.
    fn advance_with_voice(&mut self) {
        let step = usize::from(self.next.next_step);
        let order = self.next.plan.as_slice().to_vec();
        let before = if let Some(pos) = order[step..].iter().position(|c| *c == Channel::Voice) {
            // Voice is later in the plan: it is taken now, out of its turn,
            // with the next channel after it.
            let mut order = order;
            let voice = order.remove(step + pos);
            order.insert(step, voice);
            self.next.plan = ChannelPlan::new(&order);
            self.start_channels(1);
            self.next.in_flight.len()
        } else {
            // Voice was tried already: call again.
            let id = self.new_attempt_id();
            self.next.in_flight.push(Attempt {
                id,
                channel: Channel::Voice,
                retries: 0,
                phase: Phase::Sending { since: self.now },
                throttled_since: None,
            });
            self.commands.push(Command::Send {
                attempt: id,
                channel: Channel::Voice,
            });
            self.audit.started.push(Channel::Voice);
            self.next.in_flight.len()
        };
        self.start_channels(1);
        let stagger = self.policy.parallel_voice_stagger;
        if self.next.in_flight.len() > before
            && let Some(last) = self.next.in_flight.last_mut()
            && last.channel == Channel::Sms
            && stagger > 0
        {
            let (id, until) = (last.id, self.now.plus(stagger));
            last.phase = Phase::Deferred { until };
            self.commands
                .retain(|c| !matches!(c, Command::Send { attempt, .. } if *attempt == id));
            self.commands.push(Command::ArmTimer {
                at: until,
                attempt: id,
                kind: TimerKind::DeferredStart,
            });
        }
        self.audit.note = Some("parallel voice call alongside the next channel".into());
    }

    /// The attempt's channel is busy for this person. What is known to be
    /// busy is remembered (`Cascade::busy_until`), so two causes never make
    /// the attempt swing between two busy channels. The attempt moves to the
    /// first channel not yet started that is free, the busy one tried right
    /// after it; with none free, to whichever of them frees first (its own
    /// channel on a tie), deferred until then.
    fn replan(&mut self, i: usize, waits: &ChannelWaits) {
        let a = self.next.in_flight[i];
        let now = self.now;
        let mut busy = [None; 4];
        for c in Channel::ALL {
            let known = self.next.busy_until[c.index()].filter(|t| *t > now);
            busy[c.index()] = known.max(waits.busy_until(c, now));
        }
        let free_at = |c: Channel| busy[c.index()];
        let Some(busy_until) = free_at(a.channel) else {
            return self.stale(format!("replan of attempt {}: {} is free", a.id, a.channel));
        };
        let queued = waits.cause == super::WaitCause::Queue;
        // A queue's wait is the carrier's, not the person's: not kept.
        if !queued {
            self.next.busy_until = busy;
        }
        // Waiting for a throttling carrier is bounded per person (rule 3).
        let throttled = waits.cause == super::WaitCause::Throttled;
        if throttled {
            let since = a.throttled_since.unwrap_or(now);
            let bound = throttle_bound(&self.next, self.policy);
            if now.since(since) >= bound {
                self.audit.note = Some(format!(
                    "held back by carrier throttling for {}s, past the {}s bound; no retry spent",
                    now.since(since) / 1000,
                    bound / 1000
                ));
                self.audit.wait_ms = Some(now.since(since));
                return self.channel_failed(i, AuditKind::ChannelThrottledOut);
            }
        }
        let step = usize::from(self.next.next_step);
        let plan = self.next.plan;
        let rest = &plan.as_slice()[step..];
        let sooner = rest
            .iter()
            .enumerate()
            .filter_map(|(j, c)| free_at(*c).map(|t| (t, j)))
            .filter(|(t, _)| *t < busy_until)
            .min();
        let target = if queued {
            // The first channel of the plan whose queue is within the bound,
            // else the one whose queue ends first; the send waits in that
            // queue (the dispatcher books its slot), it is not deferred.
            let bound = queue_bound(&self.next, self.policy);
            let within = |c: Channel| free_at(c).is_none_or(|t| t.since(now) <= bound);
            match rest.iter().position(|c| within(*c)) {
                Some(j) => Some((j, None)),
                None => sooner.map(|(_, j)| (j, None)),
            }
        } else {
            match rest.iter().position(|c| free_at(*c).is_none()) {
                Some(j) => Some((j, None)),
                None => sooner.map(|(t, j)| (j, Some(t))),
            }
        };
        if queued && target.is_none() {
            return self.stale(format!(
                "replan of attempt {}: no channel of the plan has room sooner than {}",
                a.id, a.channel
            ));
        }
        let cause = cause_text(waits.cause);
        let waited = busy_until.since(now).div_ceil(1000);
        let Some((j, until)) = target else {
            self.next.in_flight[i].phase = Phase::Deferred { until: busy_until };
            if throttled {
                self.next.in_flight[i].throttled_since = Some(a.throttled_since.unwrap_or(now));
            }
            self.arm(i, TimerKind::DeferredStart);
            self.record(AuditKind::Deferred, Some(&a));
            self.audit.wait_ms = Some(busy_until.since(now));
            self.audit.note = Some(format!(
                "{} busy for {waited}s ({cause}) and no other channel free sooner",
                a.channel
            ));
            return;
        };
        let channel = rest[j];
        let started: Vec<Channel> = plan.as_slice()[..step]
            .iter()
            .map(|c| if *c == a.channel { channel } else { *c })
            .collect();
        let others = rest
            .iter()
            .enumerate()
            .filter(|(k, _)| *k != j)
            .map(|(_, c)| *c);
        let order: Vec<Channel> = started
            .into_iter()
            .chain(std::iter::once(a.channel))
            .chain(others)
            .collect();
        self.next.plan = ChannelPlan::new(&order);
        let id = self.new_attempt_id();
        let phase = match until {
            None => Phase::Sending { since: now },
            Some(until) => Phase::Deferred { until },
        };
        // Moving away from a throttling carrier keeps the time the person
        // has been held back by throttling: two throttled channels taken in
        // turn reach the bound (rule 3) instead of swinging forever.
        self.next.in_flight[i] = Attempt {
            id,
            channel,
            retries: 0,
            phase,
            throttled_since: throttled.then(|| a.throttled_since.unwrap_or(now)),
        };
        match until {
            // The dispatcher that found the queue books the new slot and
            // queues the send itself (one booking, in the order asked).
            None if queued => {}
            None => self.commands.push(Command::Send {
                attempt: id,
                channel,
            }),
            Some(_) => self.arm(i, TimerKind::DeferredStart),
        }
        self.record(
            AuditKind::PlanChanged,
            Some(&self.next.in_flight[i].clone()),
        );
        self.audit.started.push(channel);
        self.audit.wait_ms = Some(busy_until.since(now));
        let when = match until {
            None => "now".to_string(),
            Some(t) => format!("in {}s", t.since(now).div_ceil(1000)),
        };
        self.audit.note = Some(if queued {
            let queues: Vec<String> = Channel::ALL
                .iter()
                .filter(|c| **c == a.channel || rest.contains(c))
                .map(|c| {
                    let w = busy[c.index()].map_or(0, |t| t.since(now).div_ceil(1000));
                    format!("{c} {w}s")
                })
                .collect();
            format!(
                "{} queue {waited}s, past the {}s bound; {channel} {when} as attempt {id}, {} after it (queue waits: {})",
                a.channel,
                queue_bound(&self.next, self.policy).div_ceil(1000),
                a.channel,
                queues.join(", ")
            )
        } else {
            format!(
                "{} busy for {waited}s ({cause}); {channel} {when} as attempt {id}, {} after it",
                a.channel, a.channel
            )
        });
    }

    /// The channel of attempt `i` failed: count it, then escalate on the hard
    /// failure threshold, or start the next channel (the next two together
    /// after UNREACHABLE).
    /// The channel of attempt `i` cannot reach this person (refused at
    /// send, unreachable, or held out by a throttling carrier), as opposed
    /// to a message that was not answered or not confirmed.
    fn mark_dead(&mut self, i: usize) {
        let c = self.next.in_flight[i].channel;
        if !self.next.dead_channels.contains(&c) {
            self.next.dead_channels.push(c);
        }
    }

    fn channel_failed(&mut self, i: usize, kind: AuditKind) {
        if matches!(
            kind,
            AuditKind::ChannelUnreachable | AuditKind::ChannelThrottledOut
        ) {
            self.mark_dead(i);
        }
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
        self.commands.push(Command::EscalateToManager);
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
            Phase::Deferred { .. } => self.fire(i, TimerKind::DeferredStart),
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
            | (Phase::Deferred { .. }, TimerKind::DeferredStart)
    )
}

fn cause_text(cause: super::WaitCause) -> &'static str {
    match cause {
        super::WaitCause::Contact => "another cascade contacted this person on it within the hold",
        super::WaitCause::Throttled => "the carrier is throttling it",
        super::WaitCause::Queue => "its carrier's queue is past the bound",
    }
}

fn timer_name(kind: TimerKind) -> &'static str {
    match kind {
        TimerKind::Retry => "retry",
        TimerKind::ThrottleWait => "throttle-wait",
        TimerKind::ReceiptTimeout => "receipt-timeout",
        TimerKind::EscalationHold => "escalation-hold",
        TimerKind::DeferredStart => "deferred-start",
    }
}
