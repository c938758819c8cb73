//! SendGrid's Event Webhook, as its documentation describes it: a JSON
//! array of events, signed (Signed Event Webhook) with ECDSA P-256 over
//! SHA-256 of the timestamp header followed by the raw body; the signature
//! (`X-Twilio-Email-Event-Webhook-Signature`) is Base64 DER, the key is
//! the Base64 DER public key SendGrid shows in its settings.
//!
//! Mapping, as for SES (docs/receipts.md): `delivered` is DELIVERED;
//! `bounce` (a hard bounce) UNREACHABLE; `bounce` of type `blocked`,
//! `dropped` and `spamreport` FAILED; `processed`, `deferred` (SendGrid
//! tries again), `open`, `click`, `unsubscribe` and the group events are
//! no receipt. A click is never an acknowledgement: mail scanners follow
//! links (the acknowledgement link needs a press of its button).

use crate::engine::ReceiptStatus;
use base64::Engine;
use p256::ecdsa::VerifyingKey;
use serde_json::Value;

/// The header carrying the signature.
pub const SIGNATURE: &str = "x-twilio-email-event-webhook-signature";
/// The header carrying the timestamp the signature covers.
pub const TIMESTAMP: &str = "x-twilio-email-event-webhook-timestamp";

/// Provider message ids of SendGrid messages: `sendgrid:<X-Message-Id>`.
pub fn provider_message_id(x_message_id: &str) -> String {
    format!("sendgrid:{x_message_id}")
}

/// The verification key from its Base64 DER form, or why not.
pub fn key(base64_der: &str) -> Result<VerifyingKey, String> {
    use p256::pkcs8::DecodePublicKey;
    let der = base64::engine::general_purpose::STANDARD
        .decode(base64_der.trim())
        .map_err(|_| "not Base64".to_string())?;
    VerifyingKey::from_public_key_der(&der)
        .map_err(|_| "not a P-256 public key (DER SubjectPublicKeyInfo)".to_string())
}

/// Whether `signature` (Base64 DER) is the key's over `timestamp` and `body`.
pub fn verify(key: &VerifyingKey, timestamp: &str, body: &[u8], signature: &str) -> bool {
    use p256::ecdsa::DerSignature;
    use p256::ecdsa::signature::Verifier;
    let Ok(sig) = base64::engine::general_purpose::STANDARD.decode(signature.trim()) else {
        return false;
    };
    let Ok(sig) = DerSignature::from_bytes(&sig) else {
        return false;
    };
    let mut signed = timestamp.as_bytes().to_vec();
    signed.extend_from_slice(body);
    key.verify(&signed, &sig).is_ok()
}

/// The receipt of one event: (provider message id, status), or none.
pub fn receipt(event: &Value) -> Option<(String, ReceiptStatus)> {
    let status = match (event["event"].as_str()?, event["type"].as_str()) {
        ("delivered", _) => ReceiptStatus::Delivered,
        ("bounce", Some("blocked")) => ReceiptStatus::Failed,
        ("bounce", _) => ReceiptStatus::Unreachable,
        ("dropped" | "spamreport", _) => ReceiptStatus::Failed,
        _ => return None,
    };
    // `sg_message_id` is the send's X-Message-Id, then `.` and SendGrid's
    // own suffix.
    let sg = event["sg_message_id"].as_str()?;
    let id = sg.split('.').next().filter(|s| !s.is_empty())?;
    Some((provider_message_id(id), status))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn events_map_as_the_receipts_table_says() {
        use ReceiptStatus::*;
        let ev = |e: &str, t: Option<&str>| {
            let mut v = json!({"event": e, "sg_message_id": "14c5d75ce93.dfd.64b469.filter0001.16648.5515E0B88.0"});
            if let Some(t) = t {
                v["type"] = json!(t);
            }
            v
        };
        let id = provider_message_id("14c5d75ce93");
        for (e, t, want) in [
            ("delivered", None, Some(Delivered)),
            ("bounce", Some("bounce"), Some(Unreachable)),
            ("bounce", Some("blocked"), Some(Failed)),
            ("dropped", None, Some(Failed)),
            ("spamreport", None, Some(Failed)),
            ("processed", None, None),
            ("deferred", None, None),
            ("open", None, None),
            ("click", None, None),
        ] {
            assert_eq!(receipt(&ev(e, t)), want.map(|s| (id.clone(), s)), "{e}");
        }
        assert_eq!(receipt(&json!({"event": "delivered"})), None);
    }
}
