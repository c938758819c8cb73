//! A conference bridge for an incident: a number to dial (with its PIN)
//! and a link. Every message names it; a call offers "press 0" to be
//! connected to it.

use super::{InvalidValue, PhoneNumber};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Bridge {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone: Option<PhoneNumber>,
    /// Digits only (1 to 20), dialled after the bridge answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pin: Option<String>,
    /// An https link to join (a meeting room).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
}

impl Bridge {
    /// Parses the trigger's `bridge`; every problem is named under `field`.
    pub fn parse(v: &serde_json::Value, field: &str) -> Result<Bridge, Vec<InvalidValue>> {
        let Some(map) = v.as_object() else {
            return Err(vec![InvalidValue::new(
                field,
                "expected an object: {\"phone\", \"pin\", \"url\"}",
            )]);
        };
        let mut errors = Vec::new();
        let mut b = Bridge {
            phone: None,
            pin: None,
            url: None,
        };
        let mut fields: Vec<_> = map.iter().collect();
        fields.sort_by(|a, b| a.0.cmp(b.0));
        for (k, v) in fields {
            let at = format!("{field}.{k}");
            let Some(s) = v.as_str() else {
                errors.push(InvalidValue::new(at, "expected a string"));
                continue;
            };
            match k.as_str() {
                "phone" => match PhoneNumber::parse(s) {
                    Ok(p) => b.phone = Some(p),
                    Err(e) => errors.push(InvalidValue::new(at, e.message)),
                },
                "pin"
                    if !s.is_empty() && s.len() <= 20 && s.bytes().all(|c| c.is_ascii_digit()) =>
                {
                    b.pin = Some(s.to_string())
                }
                "pin" => errors.push(InvalidValue::new(at, "expected 1 to 20 digits")),
                "url"
                    if s.starts_with("https://")
                        && s.len() > 8
                        && s.len() <= 500
                        && !s.chars().any(|c| c.is_whitespace() || c.is_control()) =>
                {
                    b.url = Some(s.to_string())
                }
                "url" => errors.push(InvalidValue::new(
                    at,
                    "expected an https:// link of at most 500 characters, without spaces",
                )),
                _ => errors.push(InvalidValue::new(
                    at,
                    "unknown field: a bridge has phone, pin and url",
                )),
            }
        }
        if errors.is_empty() && b.phone.is_none() && b.url.is_none() {
            errors.push(InvalidValue::new(field, "give a phone, a url or both"));
        }
        if errors.is_empty() && b.pin.is_some() && b.phone.is_none() {
            errors.push(InvalidValue::new(
                format!("{field}.pin"),
                "a PIN without a phone to dial",
            ));
        }
        if errors.is_empty() {
            Ok(b)
        } else {
            Err(errors)
        }
    }

    /// The line every message carries: "Conference bridge: +44..., PIN
    /// 1234, https://...".
    pub fn line(&self) -> String {
        let mut parts = Vec::new();
        if let Some(p) = &self.phone {
            parts.push(p.expose().to_string());
        }
        if let Some(pin) = &self.pin {
            parts.push(format!("PIN {pin}"));
        }
        if let Some(u) = &self.url {
            parts.push(u.clone());
        }
        format!("Conference bridge: {}", parts.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_bridge_is_a_number_with_its_pin_a_link_or_both() {
        let b = Bridge::parse(
            &json!({"phone": "+44 20 7946 0000", "pin": "4821", "url": "https://meet.example.com/bcp"}),
            "bridge",
        )
        .unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(
            b.line(),
            "Conference bridge: +442079460000, PIN 4821, https://meet.example.com/bcp"
        );
        let errs = Bridge::parse(
            &json!({"phone": "call me", "pin": "12a", "url": "http://x", "room": "1"}),
            "trigger.bridge",
        )
        .err()
        .unwrap_or_default();
        let fields: Vec<_> = errs.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "trigger.bridge.phone",
                "trigger.bridge.pin",
                "trigger.bridge.room",
                "trigger.bridge.url"
            ]
        );
        assert!(Bridge::parse(&json!({}), "b").is_err());
        assert!(Bridge::parse(&json!({"pin": "1", "url": "https://m.example.com"}), "b").is_err());
    }
}
