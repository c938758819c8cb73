//! CloudWatch Embedded Metric Format: one JSON log line per metric event,
//! which CloudWatch turns into metrics (namespace `Muster`, dimensions
//! channel and severity) for the alarms to watch. Lines carry counts, ids
//! never, contact details never.

use crate::domain::{Channel, Severity};
use crate::engine::{AuditKind, Cascade, Decision, Event};
use crate::ports::{Observer, SendOutcomeKind};
use serde_json::json;
use std::io::Write;
use std::sync::Mutex;

pub const NAMESPACE: &str = "Muster";

/// Metric names.
pub mod names {
    pub const SENT: &str = "Sent";
    pub const THROTTLED: &str = "Throttled";
    pub const SEND_FAILED: &str = "SendFailed";
    pub const DELIVERED: &str = "Delivered";
    pub const ACKNOWLEDGED: &str = "Acknowledged";
    pub const ESCALATED: &str = "Escalated";
    pub const CHANNEL_TIMEOUT: &str = "ChannelTimeout";
    pub const CASCADE_FAILURE: &str = "CascadeFailure";
    /// A failure's escalation chain ended with nobody acknowledging it: the
    /// alarm that must never stay silent.
    pub const ESCALATION_UNDELIVERED: &str = "EscalationUndelivered";
    pub const ESCALATION_STARTED: &str = "EscalationStarted";
    pub const CHANNEL_THROTTLED_OUT: &str = "ChannelThrottledOut";
}

/// One EMF line for `metric` = 1 at `timestamp_ms`.
pub fn emf_line(
    metric: &str,
    channel: Option<Channel>,
    severity: Severity,
    timestamp_ms: u64,
) -> String {
    let channel = channel.map(|c| c.as_str()).unwrap_or("none");
    json!({
        "_aws": {
            "Timestamp": timestamp_ms,
            "CloudWatchMetrics": [{
                "Namespace": NAMESPACE,
                "Dimensions": [["Channel", "Severity"], ["Severity"]],
                "Metrics": [{"Name": metric, "Unit": "Count"}]
            }]
        },
        "Channel": channel,
        "Severity": severity.as_str(),
        metric: 1
    })
    .to_string()
}

/// An observer writing EMF lines to a sink (stdout in Lambda).
pub struct EmfObserver<W: Write + Send> {
    out: Mutex<W>,
    clock: std::sync::Arc<dyn crate::ports::Clock>,
}

impl<W: Write + Send> EmfObserver<W> {
    pub fn new(out: W, clock: std::sync::Arc<dyn crate::ports::Clock>) -> Self {
        EmfObserver {
            out: Mutex::new(out),
            clock,
        }
    }

    fn emit(&self, metric: &str, channel: Option<Channel>, severity: Severity) {
        let line = emf_line(metric, channel, severity, self.clock.now().0);
        let mut out = self.out.lock().unwrap_or_else(|e| e.into_inner());
        let _ = writeln!(out, "{line}");
    }

    pub fn into_inner(self) -> W {
        self.out.into_inner().unwrap_or_else(|e| e.into_inner())
    }
}

impl<W: Write + Send> Observer for EmfObserver<W> {
    fn transition(&self, _before: &Cascade, _event: &Event, d: &Decision) {
        let a = &d.audit;
        let kind = if a.kind == AuditKind::Redriven {
            a.cause.unwrap_or(a.kind)
        } else {
            a.kind
        };
        let sev = d.next.severity;
        match kind {
            AuditKind::Delivered => self.emit(names::DELIVERED, a.channel, sev),
            AuditKind::Acknowledged => self.emit(names::ACKNOWLEDGED, a.channel, sev),
            AuditKind::ChannelTimeout => self.emit(names::CHANNEL_TIMEOUT, a.channel, sev),
            AuditKind::CascadeFailure => {
                match a.cause {
                    Some(AuditKind::ChannelTimeout) => {
                        self.emit(names::CHANNEL_TIMEOUT, a.channel, sev)
                    }
                    Some(AuditKind::ChannelThrottledOut) => {
                        self.emit(names::CHANNEL_THROTTLED_OUT, a.channel, sev)
                    }
                    _ => {}
                }
                self.emit(names::ESCALATED, a.channel, sev);
                self.emit(names::CASCADE_FAILURE, a.channel, sev);
            }
            AuditKind::ChannelThrottledOut => {
                self.emit(names::CHANNEL_THROTTLED_OUT, a.channel, sev)
            }
            AuditKind::EscalationStarted => self.emit(names::ESCALATION_STARTED, None, sev),
            AuditKind::EscalationUndelivered => self.emit(names::ESCALATION_UNDELIVERED, None, sev),
            _ => {}
        }
    }

    fn send(&self, channel: Channel, severity: Severity, outcome: SendOutcomeKind) {
        let metric = match outcome {
            SendOutcomeKind::Accepted => names::SENT,
            SendOutcomeKind::Throttled => names::THROTTLED,
            _ => names::SEND_FAILED,
        };
        self.emit(metric, Some(channel), severity);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emf_lines_are_valid_and_say_what_happened_without_contact_details() {
        let line = emf_line(
            names::SENT,
            Some(Channel::Sms),
            Severity::P1,
            1_700_000_000_000,
        );
        let v: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
        assert_eq!(v["_aws"]["CloudWatchMetrics"][0]["Namespace"], "Muster");
        assert_eq!(
            v["_aws"]["CloudWatchMetrics"][0]["Metrics"][0]["Name"],
            "Sent"
        );
        assert_eq!(
            (
                v["Channel"].as_str(),
                v["Severity"].as_str(),
                v["Sent"].as_i64()
            ),
            (Some("sms"), Some("P1"), Some(1))
        );
    }

    #[test]
    fn transitions_and_sends_become_metrics() {
        use crate::domain::{IncidentId, StakeholderId, Tier, Ts};
        use crate::engine::{CascadeKey, ChannelPlan, ReceiptStatus, Route, SendOutcome, decide};
        let clock: std::sync::Arc<dyn crate::ports::Clock> =
            std::sync::Arc::new(crate::adapters::memory::SystemClock);
        let emf = EmfObserver::new(Vec::new(), clock);
        let policy = crate::policy::Policy::default();
        let key = CascadeKey {
            incident: IncidentId::parse("INC-1").unwrap_or_else(|e| panic!("{e}")),
            stakeholder: StakeholderId::parse("a").unwrap_or_else(|e| panic!("{e}")),
            route: Route::Member,
        };
        let mut c = Cascade::new(
            key,
            Severity::P2,
            Tier::ONE,
            ChannelPlan::new(&[Channel::Voice, Channel::Sms]),
            Ts(0),
        );
        let events = [
            Event::Start,
            Event::SendResult {
                attempt: 1,
                result: SendOutcome::Accepted,
            },
            Event::Receipt {
                attempt: 1,
                status: ReceiptStatus::Delivered,
            },
            Event::Ack {
                channel: Channel::Voice,
                attempt: Some(1),
            },
        ];
        for (i, e) in events.iter().enumerate() {
            let d = decide(&c, e, &policy, Ts(i as u64 * 1000));
            emf.transition(&c, e, &d);
            c = d.next;
        }
        emf.send(Channel::Voice, Severity::P2, SendOutcomeKind::Accepted);
        emf.send(Channel::Sms, Severity::P2, SendOutcomeKind::Throttled);
        let text = String::from_utf8(emf.into_inner()).unwrap_or_default();
        let metrics: Vec<String> = text
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap_or_default())
            .map(|v| {
                format!(
                    "{}:{}:{}",
                    v["_aws"]["CloudWatchMetrics"][0]["Metrics"][0]["Name"]
                        .as_str()
                        .unwrap_or(""),
                    v["Channel"].as_str().unwrap_or(""),
                    v["Severity"].as_str().unwrap_or("")
                )
            })
            .collect();
        assert_eq!(
            metrics,
            [
                "Delivered:voice:P2",
                "Acknowledged:voice:P2",
                "Sent:voice:P2",
                "Throttled:sms:P2"
            ]
        );
    }
}
