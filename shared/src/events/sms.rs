//! AWS End User Messaging SMS delivery events, as the configuration set's
//! SNS event destination publishes them (the User Guide's "Event format"
//! and "Event types"), mapped to receipts by `messageId` (the
//! `SendTextMessage` answer the SMS sender registered).
//!
//! | `eventType` | receipt |
//! | --- | --- |
//! | `TEXT_DELIVERED`, `TEXT_SUCCESSFUL` (accepted by the recipient's carrier; countries use one or the other) | DELIVERED |
//! | `TEXT_INVALID` (not a valid number), `TEXT_UNREACHABLE` (device off or off the network), `TEXT_BLOCKED` (the device or carrier blocks messages to this recipient) | UNREACHABLE |
//! | `TEXT_CARRIER_BLOCKED`, `TEXT_SPAM`, `TEXT_PROTECT_BLOCKED`, `TEXT_INVALID_MESSAGE`, `TEXT_TTL_EXPIRED`, `TEXT_CARRIER_UNREACHABLE`, `TEXT_UNKNOWN` | FAILED (the message, the carrier or the moment failed, not the person's number) |
//! | `TEXT_QUEUED`, `TEXT_PENDING`, `TEXT_SENT`, or any event with `isFinal: false` | none: not an outcome yet |
//!
//! A type the guide does not list is ignored when not final and FAILED when
//! final: a message whose end Muster cannot read has not been delivered.

use crate::app::ReceiptEvent;
use crate::engine::ReceiptStatus;
use serde_json::Value;

/// Whether `body` (an SNS notification's message) is an SMS event.
pub fn is_sms_event(body: &Value) -> bool {
    body["eventType"]
        .as_str()
        .is_some_and(|t| t.starts_with("TEXT_"))
        && body.get("messageId").is_some()
}

/// The receipt an SMS event means, if any; an error names the field.
pub fn receipt_from_sms_event(body: &Value) -> Result<Option<ReceiptEvent>, String> {
    let kind = body["eventType"]
        .as_str()
        .ok_or_else(|| "eventType: missing".to_string())?;
    let id = body["messageId"]
        .as_str()
        .filter(|s| !s.is_empty())
        .ok_or_else(|| "messageId: missing".to_string())?;
    // Absent isFinal: trust the type alone.
    let is_final = body["isFinal"].as_bool();
    let status = match kind {
        "TEXT_QUEUED" | "TEXT_PENDING" | "TEXT_SENT" => None,
        _ if is_final == Some(false) => None,
        "TEXT_DELIVERED" | "TEXT_SUCCESSFUL" => Some(ReceiptStatus::Delivered),
        "TEXT_INVALID" | "TEXT_UNREACHABLE" | "TEXT_BLOCKED" => Some(ReceiptStatus::Unreachable),
        _ => Some(ReceiptStatus::Failed),
    };
    Ok(status.map(|status| ReceiptEvent::Delivery {
        provider_message_id: id.to_string(),
        status,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sample() -> Value {
        let path = format!(
            "{}/../tests/fixtures/sms/text_successful.json",
            env!("CARGO_MANIFEST_DIR")
        );
        serde_json::from_str(
            &std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}")),
        )
        .unwrap_or_else(|e| panic!("{e}"))
    }

    fn status(kind: &str, is_final: bool) -> Option<ReceiptStatus> {
        let mut e = sample();
        e["eventType"] = json!(kind);
        e["isFinal"] = json!(is_final);
        match receipt_from_sms_event(&e).unwrap_or_else(|e| panic!("{e}")) {
            Some(ReceiptEvent::Delivery {
                provider_message_id,
                status,
            }) => {
                assert_eq!(provider_message_id, "862a8790-60c0-4430-9b2b-658bdexample");
                Some(status)
            }
            Some(other) => panic!("{other:?}"),
            None => None,
        }
    }

    #[test]
    fn the_guides_sample_is_a_delivery_of_its_message_id() {
        assert!(is_sms_event(&sample()));
        assert_eq!(
            status("TEXT_SUCCESSFUL", true),
            Some(ReceiptStatus::Delivered)
        );
        assert_eq!(
            status("TEXT_DELIVERED", true),
            Some(ReceiptStatus::Delivered)
        );
    }

    #[test]
    fn each_documented_type_maps_to_its_outcome_and_only_final_ones_count() {
        for t in ["TEXT_INVALID", "TEXT_UNREACHABLE", "TEXT_BLOCKED"] {
            assert_eq!(status(t, true), Some(ReceiptStatus::Unreachable), "{t}");
        }
        for t in [
            "TEXT_CARRIER_BLOCKED",
            "TEXT_SPAM",
            "TEXT_PROTECT_BLOCKED",
            "TEXT_INVALID_MESSAGE",
            "TEXT_TTL_EXPIRED",
            "TEXT_CARRIER_UNREACHABLE",
            "TEXT_UNKNOWN",
            "TEXT_SOMETHING_NEW",
        ] {
            assert_eq!(status(t, true), Some(ReceiptStatus::Failed), "{t}");
        }
        for t in ["TEXT_QUEUED", "TEXT_PENDING", "TEXT_SENT"] {
            assert_eq!(status(t, true), None, "{t} is not an outcome");
        }
        assert_eq!(
            status("TEXT_CARRIER_UNREACHABLE", false),
            None,
            "not final yet"
        );
        assert_eq!(status("TEXT_SUCCESSFUL", false), None);
    }

    #[test]
    fn an_event_without_its_message_id_is_refused_naming_it() {
        let mut e = sample();
        e.as_object_mut().map(|o| o.remove("messageId"));
        assert!(!is_sms_event(&e));
        assert_eq!(
            receipt_from_sms_event(&e).err().as_deref(),
            Some("messageId: missing")
        );
    }
}
