//! Twilio's webhooks, as its documentation describes them: request
//! validation (`X-Twilio-Signature`), the voice call's TwiML (one digit
//! gathered; 1 acknowledges), and the call and message status callbacks,
//! mapped to receipts with the same table as the AWS carriers
//! (docs/receipts.md).
//!
//! Validation ("Webhooks security"): the signature is the Base64 of
//! HMAC-SHA1, keyed with the account's auth token, over the full URL Twilio
//! requested (scheme, host, path and query) followed by every POST
//! parameter, sorted by name, each name then its value, without
//! separators.

use crate::engine::ReceiptStatus;
use base64::Engine;

/// Provider message ids of Twilio calls and messages: `twilio:<Sid>`.
pub fn provider_message_id(sid: &str) -> String {
    format!("twilio:{sid}")
}

/// The signature Twilio sends with a request to `url` with `params`.
pub fn signature(auth_token: &str, url: &str, params: &[(String, String)]) -> String {
    let mut sorted: Vec<&(String, String)> = params.iter().collect();
    sorted.sort();
    let mut data = url.to_string();
    for (k, v) in sorted {
        data.push_str(k);
        data.push_str(v);
    }
    let key = ring::hmac::Key::new(
        ring::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY,
        auth_token.as_bytes(),
    );
    base64::engine::general_purpose::STANDARD.encode(ring::hmac::sign(&key, data.as_bytes()))
}

/// Whether `presented` is Twilio's signature of this request (compared in
/// constant time). Twilio's own validators also accept the URL with the
/// default port written out or left out; so does this.
pub fn verify(auth_token: &str, url: &str, params: &[(String, String)], presented: &str) -> bool {
    use subtle::ConstantTimeEq;
    let matches = |u: &str| {
        let s = signature(auth_token, u, params);
        bool::from(s.as_bytes().ct_eq(presented.as_bytes()))
    };
    matches(url) || port_variant(url).is_some_and(|u| matches(&u))
}

/// `url` with its default port added (`https://h/...` -> `https://h:443/...`)
/// or removed.
fn port_variant(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    let port = match scheme {
        "https" => ":443",
        "http" => ":80",
        _ => return None,
    };
    let (host, path) = rest.split_at(rest.find(['/', '?']).unwrap_or(rest.len()));
    Some(match host.strip_suffix(port) {
        Some(bare) => format!("{scheme}://{bare}{path}"),
        None if !host.contains(':') => format!("{scheme}://{host}{port}{path}"),
        None => return None,
    })
}

/// The value of parameter `name`.
pub fn param<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// SIP codes that say the number does not exist or cannot be reached (the
/// same as for Chime calls).
const UNREACHABLE_SIP: &[&str] = &["404", "410", "484", "604"];

/// The receipt of a call's status callback: `completed` (the call was
/// answered: its answer was the receipt) and the progress states are none;
/// `busy`, `no-answer`, `canceled` and `failed` are FAILED, or UNREACHABLE
/// when the SIP response says the number is not there.
pub fn call_status(params: &[(String, String)]) -> Option<ReceiptStatus> {
    match param(params, "CallStatus")? {
        "busy" | "no-answer" | "canceled" | "failed" => {
            if param(params, "SipResponseCode").is_some_and(|c| UNREACHABLE_SIP.contains(&c)) {
                Some(ReceiptStatus::Unreachable)
            } else {
                Some(ReceiptStatus::Failed)
            }
        }
        _ => None,
    }
}

/// Error codes of an undelivered message that say the number cannot take
/// it: 30003 unreachable handset, 30005 unknown handset, 30006 landline or
/// unreachable carrier, 21610 unsubscribed (STOP), 21211 invalid number,
/// 21614 not a mobile number.
const UNREACHABLE_SMS: &[&str] = &["30003", "30005", "30006", "21610", "21211", "21614"];

/// The receipt of a message's status callback: `delivered` is DELIVERED;
/// `undelivered` and `failed` are UNREACHABLE for the codes above, FAILED
/// otherwise; the progress states (`accepted`, `queued`, `sending`,
/// `sent`) and `read` are none.
pub fn message_status(params: &[(String, String)]) -> Option<ReceiptStatus> {
    match param(params, "MessageStatus")? {
        "delivered" => Some(ReceiptStatus::Delivered),
        "undelivered" | "failed" => {
            if param(params, "ErrorCode").is_some_and(|c| UNREACHABLE_SMS.contains(&c)) {
                Some(ReceiptStatus::Unreachable)
            } else {
                Some(ReceiptStatus::Failed)
            }
        }
        _ => None,
    }
}

/// `text` escaped for XML character data and attribute values.
fn xml(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            // Characters XML 1.0 cannot carry.
            c if (c as u32) < 0x20 && !matches!(c, '\t' | '\n' | '\r') => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

/// A `<Say>` opening tag in `voice` (Twilio's Amazon Polly voices:
/// `Polly.<id>-Neural`, with the language); the default voice for `None`.
fn say_tag(voice: Option<&crate::policy::Voice>) -> String {
    match voice {
        Some(v) => format!(
            r#"<Say language="{}" voice="Polly.{}-Neural">"#,
            xml(&v.language),
            xml(&v.voice)
        ),
        None => "<Say>".to_string(),
    }
}

/// TwiML that says `prompt` (in `voice`) and gathers one digit (twice, as
/// the Chime call does), posting it to `action`; then says goodbye.
pub fn gather(prompt: &str, action: &str, voice: Option<&crate::policy::Voice>) -> String {
    let say = say_tag(voice);
    let g = format!(
        r#"<Gather input="dtmf" numDigits="1" timeout="8" action="{}" method="POST">{say}{}</Say></Gather>"#,
        xml(action),
        xml(prompt)
    );
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?><Response>{g}{g}{say}No key was pressed. Goodbye.</Say></Response>"#
    )
}

/// TwiML that says `text` (in `voice`) and hangs up.
pub fn say(text: &str, voice: Option<&crate::policy::Voice>) -> String {
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?><Response>{}{}</Say><Hangup/></Response>"#,
        say_tag(voice),
        xml(text)
    )
}

/// TwiML that says `text` and connects the call to `phone` (a
/// conference bridge), dialling `pin` once it answers (`w`: half a second).
pub fn dial(
    text: &str,
    phone: &str,
    pin: Option<&str>,
    voice: Option<&crate::policy::Voice>,
) -> String {
    let digits = pin
        .map(|p| format!(r#" sendDigits="wwww{}#""#, xml(p)))
        .unwrap_or_default();
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?><Response>{}{}</Say><Dial><Number{digits}>{}</Number></Dial></Response>"#,
        say_tag(voice),
        xml(text),
        xml(phone)
    )
}

/// TwiML that does nothing (an answer to a message webhook: no reply).
pub const EMPTY: &str = r#"<?xml version="1.0" encoding="UTF-8"?><Response/>"#;

#[cfg(test)]
mod tests {
    use super::*;

    fn p(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn the_default_port_may_be_written_or_left_out() {
        assert_eq!(
            port_variant("https://m.example.com/v1/gateways/twilio/voice?a=1").as_deref(),
            Some("https://m.example.com:443/v1/gateways/twilio/voice?a=1")
        );
        assert_eq!(
            port_variant("https://m.example.com:443/x").as_deref(),
            Some("https://m.example.com/x")
        );
        assert_eq!(port_variant("http://127.0.0.1:8080/x"), None);
    }

    #[test]
    fn statuses_map_as_the_receipts_table_says() {
        use ReceiptStatus::*;
        for (status, code, want) in [
            ("completed", None, None),
            ("in-progress", None, None),
            ("ringing", None, None),
            ("busy", Some("486"), Some(Failed)),
            ("no-answer", Some("480"), Some(Failed)),
            ("failed", Some("404"), Some(Unreachable)),
            ("failed", None, Some(Failed)),
            ("canceled", None, Some(Failed)),
        ] {
            let mut ps = p(&[("CallStatus", status)]);
            if let Some(c) = code {
                ps.push(("SipResponseCode".into(), c.into()));
            }
            assert_eq!(call_status(&ps), want, "{status} {code:?}");
        }
        for (status, code, want) in [
            ("queued", None, None),
            ("sent", None, None),
            ("delivered", None, Some(Delivered)),
            ("undelivered", Some("30003"), Some(Unreachable)),
            ("undelivered", Some("30007"), Some(Failed)),
            ("failed", Some("21610"), Some(Unreachable)),
            ("failed", None, Some(Failed)),
            ("read", None, None),
        ] {
            let mut ps = p(&[("MessageStatus", status)]);
            if let Some(c) = code {
                ps.push(("ErrorCode".into(), c.into()));
            }
            assert_eq!(message_status(&ps), want, "{status} {code:?}");
        }
    }

    #[test]
    fn twiml_escapes_what_it_says() {
        let t = gather(
            "R&D <lab> \"down\"",
            "https://m.example.com/v1/gateways/twilio/gather",
            None,
        );
        assert!(t.contains("R&amp;D &lt;lab&gt; &quot;down&quot;"), "{t}");
        assert_eq!(t.matches("numDigits=\"1\"").count(), 2);
    }

    /// Twilio's `<Say>`: `language` and `voice`, Amazon Polly voices named
    /// `Polly.<VoiceId>-Neural` (Twilio docs, "TwiML Voice: <Say>").
    #[test]
    fn a_call_in_another_language_is_read_in_its_voice() {
        let fr = crate::policy::Voice {
            language: "fr-FR".into(),
            voice: "Lea".into(),
        };
        let t = gather("Panne.", "https://m.example.com/g", Some(&fr));
        assert_eq!(
            t.matches(r#"<Say language="fr-FR" voice="Polly.Lea-Neural">"#)
                .count(),
            3,
            "{t}"
        );
        assert!(say("Merci.", Some(&fr)).contains(r#"voice="Polly.Lea-Neural""#));
    }

    /// Twilio's `<Dial><Number sendDigits>`: the number to connect and the
    /// digits to play once it answers, `w` a half-second wait (Twilio docs,
    /// "TwiML Voice: <Number>").
    #[test]
    fn press_0_dials_the_bridge_and_its_pin() {
        let t = dial("Connecting.", "+442079460000", Some("4821"), None);
        assert!(
            t.contains(r#"<Dial><Number sendDigits="wwww4821#">+442079460000</Number></Dial>"#),
            "{t}"
        );
        assert!(!dial("Connecting.", "+442079460000", None, None).contains("sendDigits"));
    }
}
