//! The answers a person can give to an incident's message: a key (the digit
//! they press or reply), a label (what they are told and may reply in
//! words) and whether it acknowledges. "I am safe" acknowledges; "I need
//! help" does not: it ends that person's cascade as RESPONDED and is named
//! at once to their manager, with the answer.

use super::InvalidValue;
use serde::{Deserialize, Serialize};

/// The most options an incident offers (the keys 1 to 9).
pub const MAX_OPTIONS: usize = 9;
/// The longest label, in characters.
pub const MAX_LABEL: usize = 60;

/// Words an SMS reply cannot mean as an answer (the carriers' opt-out and
/// opt-in words, and the acknowledgement word).
const RESERVED: &[&str] = &[
    "stop",
    "stopall",
    "unsubscribe",
    "cancel",
    "end",
    "quit",
    "optout",
    "arret",
    "start",
    "unstop",
    "optin",
    "yes",
    "help",
    "ack",
    "acknowledge",
    "acknowledged",
    "ok",
];

/// The opt-out words a reply is read as when it starts with one (whatever
/// follows), so a label cannot start with them either.
const REPLY_FIRST_WORDS: &[&str] = &[
    "stop",
    "stopall",
    "unsubscribe",
    "cancel",
    "end",
    "quit",
    "optout",
    "arret",
];

fn normal(text: &str) -> &str {
    text.trim().trim_end_matches(['.', '!']).trim()
}

/// Whether a reply of `label` would be read as something else (an opt-out
/// or opt-in word, the acknowledgement word, an opt-out at its start).
fn reserved(label: &str) -> bool {
    let lower = label.to_ascii_lowercase();
    RESERVED.contains(&lower.as_str())
        || lower
            .split(|c: char| c.is_whitespace() || c == ',' || c == '.' || c == '!')
            .next()
            .is_some_and(|w| REPLY_FIRST_WORDS.contains(&w))
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ResponseOption {
    /// One digit, 1 to 9 (0 is kept for the conference bridge).
    pub key: String,
    pub label: String,
    #[serde(default = "yes")]
    pub acknowledges: bool,
}

fn yes() -> bool {
    true
}

/// An incident's options, in the order they are offered; by default one:
/// key 1, "Acknowledge".
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Responses(Vec<ResponseOption>);

impl Default for Responses {
    fn default() -> Self {
        Responses(vec![ResponseOption {
            key: "1".into(),
            label: "Acknowledge".into(),
            acknowledges: true,
        }])
    }
}

impl Responses {
    pub fn is_default(&self) -> bool {
        *self == Responses::default()
    }

    pub fn options(&self) -> &[ResponseOption] {
        &self.0
    }

    /// The option of `key`.
    pub fn by_key(&self, key: &str) -> Option<&ResponseOption> {
        self.0.iter().find(|o| o.key == key.trim())
    }

    /// The option an SMS reply means: its key, or its label in any case
    /// (surrounding spaces and a final `.` or `!` ignored).
    pub fn by_reply(&self, text: &str) -> Option<&ResponseOption> {
        let t = normal(text);
        self.by_key(t).or_else(|| {
            self.0
                .iter()
                .find(|o| normal(&o.label).eq_ignore_ascii_case(t))
        })
    }

    /// "press 1 for I am safe, press 2 for I need help" (voice) or
    /// "1 for I am safe, 2 for I need help" (text): the options, spoken or
    /// written.
    pub fn menu(&self, verb: &str) -> String {
        let parts: Vec<String> = self
            .0
            .iter()
            .map(|o| format!("{verb}{} for {}", o.key, o.label))
            .collect();
        parts.join(", ")
    }

    /// Reads the trigger's `responses` (at `field`): 1 to 9 options, each
    /// with a one-digit key (1 to 9) and a label, keys and labels distinct,
    /// at least one acknowledging. Every problem names its field.
    pub fn parse(v: &serde_json::Value, field: &str) -> Result<Responses, Vec<InvalidValue>> {
        let Some(items) = v.as_array() else {
            return Err(vec![InvalidValue::new(
                field,
                "expected an array of {\"key\", \"label\", \"acknowledges\"}",
            )]);
        };
        let mut errors = Vec::new();
        if items.is_empty() || items.len() > MAX_OPTIONS {
            errors.push(InvalidValue::new(
                field,
                format!("expected 1 to {MAX_OPTIONS} options, found {}", items.len()),
            ));
        }
        let mut out: Vec<ResponseOption> = Vec::new();
        for (i, item) in items.iter().take(MAX_OPTIONS).enumerate() {
            let at = |name: &str| format!("{field}[{i}].{name}");
            let Some(obj) = item.as_object() else {
                errors.push(InvalidValue::new(
                    format!("{field}[{i}]"),
                    "expected an object",
                ));
                continue;
            };
            for k in obj.keys() {
                if !matches!(k.as_str(), "key" | "label" | "acknowledges") {
                    errors.push(InvalidValue::new(
                        at(k),
                        "unknown field: expected key, label, acknowledges",
                    ));
                }
            }
            let key = match obj.get("key").and_then(|k| k.as_str()) {
                Some(k)
                    if k.len() == 1 && ('1'..='9').contains(&k.chars().next().unwrap_or('0')) =>
                {
                    if out.iter().any(|o| o.key == k) {
                        errors.push(InvalidValue::new(at("key"), format!("{k:?} is used twice")));
                    }
                    Some(k.to_string())
                }
                Some(k) => {
                    errors.push(InvalidValue::new(
                        at("key"),
                        format!("{k:?}: expected one digit, 1 to 9"),
                    ));
                    None
                }
                None => {
                    errors.push(InvalidValue::new(at("key"), "missing: a digit, 1 to 9"));
                    None
                }
            };
            let label = match obj.get("label").and_then(|l| l.as_str()).map(str::trim) {
                Some(l) if l.is_empty() || l.chars().count() > MAX_LABEL => {
                    errors.push(InvalidValue::new(
                        at("label"),
                        format!("expected 1 to {MAX_LABEL} characters"),
                    ));
                    None
                }
                Some(l) if l.chars().any(char::is_control) => {
                    errors.push(InvalidValue::new(
                        at("label"),
                        "contains a control character",
                    ));
                    None
                }
                Some(l) if reserved(l) => {
                    errors.push(InvalidValue::new(
                        at("label"),
                        format!("{l:?} is a word SMS reserves (STOP, START, HELP, ACK...)"),
                    ));
                    None
                }
                Some(l) if l.chars().all(|c| c.is_ascii_digit()) => {
                    errors.push(InvalidValue::new(
                        at("label"),
                        "a label cannot be only digits",
                    ));
                    None
                }
                Some(l) => {
                    if out.iter().any(|o| o.label.eq_ignore_ascii_case(l)) {
                        errors.push(InvalidValue::new(
                            at("label"),
                            format!("{l:?} is used twice"),
                        ));
                    }
                    Some(l.to_string())
                }
                None => {
                    errors.push(InvalidValue::new(at("label"), "missing"));
                    None
                }
            };
            let acknowledges = match obj.get("acknowledges") {
                None => true,
                Some(serde_json::Value::Bool(b)) => *b,
                Some(_) => {
                    errors.push(InvalidValue::new(
                        at("acknowledges"),
                        "expected true or false",
                    ));
                    true
                }
            };
            if let (Some(key), Some(label)) = (key, label) {
                out.push(ResponseOption {
                    key,
                    label,
                    acknowledges,
                });
            }
        }
        if errors.is_empty() && !out.iter().any(|o| o.acknowledges) {
            errors.push(InvalidValue::new(
                field,
                "no option acknowledges: give at least one \"acknowledges\": true",
            ));
        }
        if errors.is_empty() {
            Ok(Responses(out))
        } else {
            Err(errors)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn options_are_read_by_key_or_label_and_bad_ones_name_their_field() {
        let r = Responses::parse(
            &json!([{"key": "1", "label": "I am safe"}, {"key": "2", "label": "I need help", "acknowledges": false}]),
            "trigger.responses",
        )
        .unwrap_or_default();
        assert_eq!(r.options().len(), 2);
        assert_eq!(
            r.by_reply(" i need HELP. ").map(|o| o.key.as_str()),
            Some("2")
        );
        assert_eq!(r.by_reply("1").map(|o| o.acknowledges), Some(true));
        assert_eq!(r.by_reply("maybe"), None);
        let bang =
            Responses::parse(&json!([{"key": "1", "label": "Safe!"}]), "r").unwrap_or_default();
        assert_eq!(bang.by_reply("safe").map(|o| o.key.as_str()), Some("1"));
        assert_eq!(
            r.menu("press "),
            "press 1 for I am safe, press 2 for I need help"
        );
        for (v, field) in [
            (json!([]), "trigger.responses"),
            (json!(null), "trigger.responses"),
            (
                json!([{"key": "0", "label": "Bridge"}]),
                "trigger.responses[0].key",
            ),
            (
                json!([{"key": "12", "label": "x"}]),
                "trigger.responses[0].key",
            ),
            (json!([{"key": "1"}]), "trigger.responses[0].label"),
            (
                json!([{"key": "1", "label": "STOP"}]),
                "trigger.responses[0].label",
            ),
            (
                json!([{"key": "1", "label": "Stop work"}]),
                "trigger.responses[0].label",
            ),
            (
                json!([{"key": "1", "label": "a"}, {"key": "1", "label": "b"}]),
                "trigger.responses[1].key",
            ),
            (
                json!([{"key": "1", "label": "a"}, {"key": "2", "label": "A"}]),
                "trigger.responses[1].label",
            ),
            (
                json!([{"key": "1", "label": "a", "acknowledges": "no"}]),
                "trigger.responses[0].acknowledges",
            ),
            (
                json!([{"key": "1", "label": "a", "colour": "red"}]),
                "trigger.responses[0].colour",
            ),
            (
                json!([{"key": "2", "label": "I need help", "acknowledges": false}]),
                "trigger.responses",
            ),
        ] {
            let e = Responses::parse(&v, "trigger.responses")
                .err()
                .unwrap_or_default();
            assert!(e.iter().any(|e| e.field == field), "{v}: {e:?}");
        }
    }
}
