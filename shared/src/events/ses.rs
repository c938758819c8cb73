//! Amazon SES events (event publishing of the configuration set to SNS),
//! as receipts for the email channel. The email sender registers SES's
//! `MessageId` as the provider message id and tags the mail with
//! `attempt_id`, `incident` and `attempt`; the receipt is keyed by
//! `mail.messageId`, the tag only helps tracing.
//!
//! | eventType | receipt |
//! | --- | --- |
//! | Delivery | DELIVERED |
//! | Bounce, bounceType Permanent | UNREACHABLE (the address does not take mail) |
//! | Bounce, bounceType Transient or Undetermined | none: SES retries; the receipt timeout runs |
//! | Complaint | FAILED |
//! | Reject | FAILED |
//! | Rendering Failure | FAILED |
//! | DeliveryDelay | none: the receipt timeout runs |
//! | Send, Open, Click, Subscription | none |
//!
//! The legacy SES notifications (`notificationType` Delivery/Bounce/
//! Complaint) are read the same way. No address ever reaches a log line or
//! an error.

use crate::app::ReceiptEvent;
use crate::engine::ReceiptStatus;
use serde_json::Value;

/// True when the JSON is an SES event or notification.
pub fn is_ses_event(body: &Value) -> bool {
    body.get("mail").is_some()
        && (body.get("eventType").is_some() || body.get("notificationType").is_some())
}

/// What an SES event means for the cascade.
pub fn status_of(body: &Value) -> Result<Option<ReceiptStatus>, String> {
    let kind = body
        .get("eventType")
        .or_else(|| body.get("notificationType"))
        .and_then(Value::as_str)
        .ok_or("eventType: missing or not a string")?;
    Ok(match kind {
        "Delivery" => Some(ReceiptStatus::Delivered),
        "Bounce" => match body["bounce"]["bounceType"].as_str() {
            Some("Permanent") => Some(ReceiptStatus::Unreachable),
            Some("Transient" | "Undetermined") => None,
            Some(other) => return Err(format!("bounce.bounceType: unknown value {other:?}")),
            None => return Err("bounce.bounceType: missing".into()),
        },
        "Complaint" | "Reject" | "Rendering Failure" | "RenderingFailure" => {
            Some(ReceiptStatus::Failed)
        }
        "DeliveryDelay" | "Send" | "Open" | "Click" | "Subscription" | "Received" => None,
        other => return Err(format!("eventType: unknown value {other:?}")),
    })
}

/// The `attempt_id` tag the email sender set, if any.
pub fn attempt_id_tag(body: &Value) -> Option<&str> {
    body["mail"]["tags"]["attempt_id"]
        .as_array()
        .and_then(|v| v.first())
        .and_then(Value::as_str)
}

/// The receipt of one SES event, or none when the event changes nothing.
pub fn receipt_from_ses_event(body: &Value) -> Result<Option<ReceiptEvent>, String> {
    let status = status_of(body)?;
    let kind = body
        .get("eventType")
        .or_else(|| body.get("notificationType"))
        .and_then(Value::as_str)
        .unwrap_or_default();
    let Some(status) = status else {
        tracing::debug!(
            event_type = kind,
            attempt_id = attempt_id_tag(body),
            "SES event carries no receipt"
        );
        return Ok(None);
    };
    let id = body["mail"]["messageId"]
        .as_str()
        .filter(|s| !s.is_empty())
        .ok_or("mail.messageId: missing")?;
    tracing::debug!(
        event_type = kind,
        attempt_id = attempt_id_tag(body),
        "SES event read"
    );
    Ok(Some(ReceiptEvent::Delivery {
        provider_message_id: id.to_string(),
        status,
    }))
}
