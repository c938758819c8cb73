//! Receipt: delivery receipts and acknowledgements from carriers and people.
//! Late, duplicate and out-of-order receipts reach the engine, which audits
//! them as stale and changes nothing; a reference to no known message is
//! logged (without contact details) and counted, never an error.

use super::apply_event;
use crate::domain::Channel;
use crate::engine::{AuditKind, CascadeKey, Event, ReceiptStatus};
use crate::error::Result;
use crate::ports::Deps;

#[derive(Debug, Clone, PartialEq)]
pub enum ReceiptEvent {
    /// A carrier's delivery report for a message it accepted.
    Delivery {
        provider_message_id: String,
        status: ReceiptStatus,
    },
    /// A person acknowledged (DTMF 1, SMS reply, link, push action, API).
    Ack {
        key: CascadeKey,
        channel: Channel,
        attempt: Option<u32>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReceiptOutcome {
    /// Applied; the audit kind the engine recorded (STALE_IGNORED for a
    /// duplicate or late one).
    Applied(AuditKind),
    /// Refers to no message or cascade Muster knows.
    Unknown,
}

pub async fn receipt(deps: &Deps, event: ReceiptEvent) -> Result<ReceiptOutcome> {
    let (key, ev) = match event {
        ReceiptEvent::Delivery {
            provider_message_id,
            status,
        } => match deps.cascades.get_message_ref(&provider_message_id).await? {
            Some((key, attempt)) => (key, Event::Receipt { attempt, status }),
            None => {
                tracing::warn!("receipt for an unknown provider message id");
                return Ok(ReceiptOutcome::Unknown);
            }
        },
        ReceiptEvent::Ack {
            key,
            channel,
            attempt,
        } => (key, Event::Ack { channel, attempt }),
    };
    match apply_event(deps, &key, ev).await? {
        Some((_, kind)) => Ok(ReceiptOutcome::Applied(kind)),
        None => {
            tracing::warn!(incident_id = %key.incident, "acknowledgement for an unknown cascade");
            Ok(ReceiptOutcome::Unknown)
        }
    }
}
