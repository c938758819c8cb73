//! The invariants every transition keeps, as checks: used by the property
//! tests over random event sequences and by every drill over the whole run.

use super::{AuditKind, Cascade, Command, Decision, Event, Phase};
use crate::domain::Channel;
use crate::policy::Policy;

/// Checks one transition; returns a description of each invariant it breaks.
pub fn check_transition(
    before: &Cascade,
    event: &Event,
    d: &Decision,
    policy: &Policy,
) -> Vec<String> {
    let mut v = Vec::new();
    let next = &d.next;
    if next.version != before.version + 1 {
        v.push(format!(
            "version went from {} to {}",
            before.version, next.version
        ));
    }
    if before.status.is_terminal() {
        if next.status != before.status {
            v.push(format!(
                "terminal {} became {}",
                before.status.as_str(),
                next.status.as_str()
            ));
        }
        // An ACK after CASCADE_FAILURE withdraws the escalation, and the
        // sweep re-escalates a failure nobody took up; nothing else comes out
        // of a terminal state.
        let redriven_escalation = matches!(event, Event::Reconcile)
            && before.escalation_pending()
            && d.commands == [Command::EscalateToManager];
        if !redriven_escalation
            && d.commands
                .iter()
                .any(|c| !matches!(c, Command::WithdrawEscalations))
        {
            v.push(format!(
                "terminal {} issued commands {:?}",
                before.status.as_str(),
                d.commands
            ));
        }
    }
    if next.in_flight.len() > policy.max_in_flight as usize {
        v.push(format!("{} attempts in flight", next.in_flight.len()));
    }
    if let Some(a) = next
        .in_flight
        .iter()
        .find(|a| a.retries > policy.retry.max_retries)
    {
        v.push(format!(
            "attempt {} on {} is retry number {}",
            a.id, a.channel, a.retries
        ));
    }
    if next.status.is_terminal() {
        if !next.in_flight.is_empty() {
            v.push("terminal cascade with attempts in flight".into());
        }
        if d.commands.iter().any(|c| matches!(c, Command::Send { .. })) {
            v.push(format!(
                "send issued by a transition to {}",
                next.status.as_str()
            ));
        }
    }
    for c in &d.commands {
        if let Command::Send { attempt, channel } = c {
            let ok = next.in_flight.iter().any(|a| {
                a.id == *attempt
                    && a.channel == *channel
                    && matches!(a.phase, Phase::Sending { .. })
            });
            if !ok {
                v.push(format!("send of attempt {attempt} which is not sending"));
            }
        }
    }
    // Rule 6: two in flight only after UNREACHABLE, or for the seed's
    // parallel voice call after a hold; a replan swaps an attempt, never adds
    // one. A forced transition is judged by what it did.
    let kind = match (d.audit.kind, d.audit.cause) {
        (AuditKind::Redriven, Some(cause)) => cause,
        (kind, _) => kind,
    };
    let parallel_voice = kind == AuditKind::NotAcknowledged
        && d.audit.started.contains(&Channel::Voice)
        && policy.parallel_voice(super::route_severity(before, policy));
    let swapped = kind == AuditKind::PlanChanged && next.in_flight.len() <= before.in_flight.len();
    if !d.audit.started.is_empty()
        && next.in_flight.len() > 1
        && kind != AuditKind::ChannelUnreachable
        && !parallel_voice
        && !swapped
    {
        v.push(format!(
            "two channels in flight after {} (parallel only after UNREACHABLE)",
            d.audit.kind.as_str()
        ));
    }
    let sent: Vec<Channel> = d
        .commands
        .iter()
        .filter_map(|c| match c {
            Command::Send { channel, .. } => Some(*channel),
            _ => None,
        })
        .collect();
    if sent.contains(&Channel::Voice)
        && sent.contains(&Channel::Sms)
        && kind != AuditKind::ChannelUnreachable
    {
        v.push(format!(
            "voice and SMS sent at the same instant after {}",
            d.audit.kind.as_str()
        ));
    }
    if matches!(event, Event::Ack { .. }) && !next.status.is_terminal() {
        v.push("ACK left the cascade open".into());
    }
    if let Event::Respond { key, .. } = event
        && !next.key.route.is_escalation()
        && (!next.status.is_terminal() || d.audit.response.as_deref() != Some(key.as_str()))
    {
        v.push("an answer left the cascade open or was not audited with its key".into());
    }
    if d.audit.status != next.status || usize::from(d.audit.in_flight) != next.in_flight.len() {
        v.push("audit record disagrees with the state it records".into());
    }
    v
}

/// At the end of a run every cascade must be terminal.
pub fn check_final(c: &Cascade) -> Option<String> {
    (!c.status.is_terminal())
        .then(|| format!("cascade {} ended the run {}", c.key, c.status.as_str()))
}
