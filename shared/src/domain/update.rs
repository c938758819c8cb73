//! Updates as an incident evolves, and the all-clear at its end: a message
//! sent once to each person of an audience who was reached, on their best
//! channel, outside the cascade's attempts.

use super::{InvalidValue, MessageTemplate, Ts};
use serde::{Deserialize, Serialize};

/// The most updates (the all-clear included) one incident sends.
pub const MAX_UPDATES: usize = 20;

/// Who an update goes to, of the members a message reached.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Audience {
    #[default]
    All,
    Acknowledged,
    Unacknowledged,
}

impl Audience {
    pub fn parse(s: &str) -> Result<Audience, InvalidValue> {
        match s {
            "all" => Ok(Audience::All),
            "acknowledged" => Ok(Audience::Acknowledged),
            "unacknowledged" => Ok(Audience::Unacknowledged),
            other => Err(InvalidValue::new(
                "audience",
                format!(
                    "unknown audience {other:?}: expected \"all\", \"acknowledged\" or \"unacknowledged\""
                ),
            )),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Audience::All => "all",
            Audience::Acknowledged => "acknowledged",
            Audience::Unacknowledged => "unacknowledged",
        }
    }

    /// Whether a member reached, acknowledged or not, is in it.
    pub fn admits(self, acknowledged: bool) -> bool {
        match self {
            Audience::All => true,
            Audience::Acknowledged => acknowledged,
            Audience::Unacknowledged => !acknowledged,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IncidentUpdate {
    /// 1 for the incident's first update.
    pub seq: u32,
    pub message: MessageTemplate,
    pub audience: Audience,
    /// When it was posted.
    pub at: Ts,
    /// The all-clear (the incident's close).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub all_clear: bool,
}

impl IncidentUpdate {
    /// Parses the body of `POST /v1/incidents/{id}/updates`:
    /// `{"message": "...", "audience": "all"}` (audience defaults to all).
    pub fn parse_body(
        v: &serde_json::Value,
    ) -> Result<(MessageTemplate, Audience), Vec<InvalidValue>> {
        let Some(map) = v.as_object() else {
            return Err(vec![InvalidValue::new("", "expected a JSON object")]);
        };
        let mut errors = Vec::new();
        let mut keys: Vec<_> = map.keys().collect();
        keys.sort();
        for k in keys {
            if k != "message" && k != "audience" {
                errors.push(InvalidValue::new(
                    k.clone(),
                    "unknown field: an update has message and audience",
                ));
            }
        }
        let message = match map.get("message") {
            None | Some(serde_json::Value::Null) => {
                errors.push(InvalidValue::new("message", "missing"));
                None
            }
            Some(serde_json::Value::String(s)) => MessageTemplate::parse(s)
                .map_err(|e| errors.push(InvalidValue::new("message", e.message)))
                .ok(),
            Some(_) => {
                errors.push(InvalidValue::new("message", "expected a string"));
                None
            }
        };
        let audience = match map.get("audience") {
            None => Some(Audience::All),
            Some(serde_json::Value::String(s)) => {
                Audience::parse(s).map_err(|e| errors.push(e)).ok()
            }
            Some(_) => {
                errors.push(InvalidValue::new(
                    "audience",
                    "expected \"all\", \"acknowledged\" or \"unacknowledged\"",
                ));
                None
            }
        };
        match (message, audience) {
            (Some(m), Some(a)) if errors.is_empty() => Ok((m, a)),
            _ => Err(errors),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_body_is_a_message_and_an_audience_each_checked() {
        let (m, a) = IncidentUpdate::parse_body(&json!({"message": " Power is back. "}))
            .unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!((m.as_str(), a), ("Power is back.", Audience::All));
        let errs = IncidentUpdate::parse_body(&json!({"audience": "some", "to": 1}))
            .err()
            .unwrap_or_default();
        let fields: Vec<_> = errs.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["to", "message", "audience"]);
        assert!(IncidentUpdate::parse_body(&json!({"message": ""})).is_err());
        assert!(IncidentUpdate::parse_body(&json!([])).is_err());
    }

    #[test]
    fn audiences_split_the_reached_by_acknowledgement() {
        assert!(Audience::All.admits(true) && Audience::All.admits(false));
        assert!(Audience::Acknowledged.admits(true) && !Audience::Acknowledged.admits(false));
        assert!(!Audience::Unacknowledged.admits(true) && Audience::Unacknowledged.admits(false));
    }
}
