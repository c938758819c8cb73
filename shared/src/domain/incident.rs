//! Incidents and the trigger that declares one. The trigger accepts the three
//! body shapes monitoring and ITSM tools send (Genesys-style `{"trigger": ..}`,
//! CXone-style `{"eventType": "bcp.cascade.trigger", "payload": ..}`, plain).

use super::quorum::Quorum;
use super::response::Responses;
use super::{GroupId, IncidentId, InvalidValue, Severity, Ts};
use serde::{Deserialize, Serialize};

/// The operator's message: at most 1,000 characters as sent, not blank, no
/// control characters but newlines; kept trimmed. The pattern
/// `docs/openapi.json` declares says the same.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct MessageTemplate(String);

impl MessageTemplate {
    pub fn parse(s: &str) -> Result<Self, InvalidValue> {
        if s.chars().count() > 1000 {
            return Err(InvalidValue::new(
                "",
                "message template is longer than 1000 characters",
            ));
        }
        let t = s.trim();
        if t.is_empty() {
            return Err(InvalidValue::new("", "message template is empty"));
        }
        if t.chars().any(|c| c.is_control() && c != '\n') {
            return Err(InvalidValue::new(
                "",
                "message template contains control characters",
            ));
        }
        Ok(Self(t.to_string()))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for MessageTemplate {
    type Error = InvalidValue;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s)
    }
}
impl From<MessageTemplate> for String {
    fn from(m: MessageTemplate) -> String {
        m.0
    }
}

/// A validated trigger, whatever the body shape it came in.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Trigger {
    pub incident_id: IncidentId,
    pub severity: Severity,
    pub stakeholder_group_id: GroupId,
    pub message_template: MessageTemplate,
    /// The message in other languages, by locale (`fr`, `fr-CA`): a
    /// person's directory locale picks one, else `message_template`.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub message_templates: std::collections::BTreeMap<String, MessageTemplate>,
    /// When the source declared the incident (informational; a time before
    /// 1970 is accepted but not kept, and the answer says so).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<Ts>,
    /// The answers people can give (default: key 1, "Acknowledge").
    #[serde(default, skip_serializing_if = "Responses::is_default")]
    pub responses: Responses,
    /// How many acknowledgements the incident needs (none: no quorum).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quorum: Option<Quorum>,
    /// Once the quorum is reached, cancel the cascades still open (audited).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub stop_on_quorum: bool,
    /// The conference bridge every message names (a call: press 0 to join).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bridge: Option<super::Bridge>,
}

/// The most locales a trigger's `messageTemplates` holds.
pub const MAX_TEMPLATES: usize = 30;

impl Trigger {
    /// The message for a person of `locale` (from the directory): the
    /// template of their locale, else of its language, else the default;
    /// with the locale of the one chosen (`None`: the default).
    pub fn template_for(&self, locale: Option<&str>) -> (&MessageTemplate, Option<&str>) {
        match super::locale::pick(&self.message_templates, locale) {
            Some((tag, t)) => (t, Some(tag)),
            None => (&self.message_template, None),
        }
    }

    /// How the body's shape prefixes its field names in errors: `trigger.`
    /// (native), `payload.` (the CXone event) or nothing (flat).
    pub fn field_prefix(body: &serde_json::Value) -> &'static str {
        if body.get("trigger").is_some() {
            "trigger."
        } else if body.get("payload").is_some() {
            "payload."
        } else {
            ""
        }
    }

    /// Parses any of the accepted body shapes. Every problem found is listed,
    /// each naming its field.
    pub fn from_json(body: &serde_json::Value) -> Result<Self, Vec<InvalidValue>> {
        let (obj, prefix) = if let Some(t) = body.get("trigger") {
            (t, "trigger.")
        } else if let Some(p) = body.get("payload") {
            match body.get("eventType").and_then(|v| v.as_str()) {
                Some("bcp.cascade.trigger") => (p, "payload."),
                Some(other) => {
                    return Err(vec![InvalidValue::new(
                        "eventType",
                        format!(
                            "unsupported event type {other:?}: expected \"bcp.cascade.trigger\""
                        ),
                    )]);
                }
                None => {
                    return Err(vec![InvalidValue::new(
                        "eventType",
                        "missing: expected \"bcp.cascade.trigger\"",
                    )]);
                }
            }
        } else {
            (body, "")
        };
        let Some(map) = obj.as_object() else {
            return Err(vec![InvalidValue::new(
                prefix.trim_end_matches('.').to_string(),
                "expected a JSON object",
            )]);
        };
        let mut errors = Vec::new();
        let field = |name: &str, errors: &mut Vec<InvalidValue>| -> Option<String> {
            match map.get(name) {
                None | Some(serde_json::Value::Null) => {
                    errors.push(InvalidValue::new(format!("{prefix}{name}"), "missing"));
                    None
                }
                Some(serde_json::Value::String(s)) => Some(s.clone()),
                Some(_) => {
                    errors.push(InvalidValue::new(
                        format!("{prefix}{name}"),
                        "expected a string",
                    ));
                    None
                }
            }
        };
        let at = |name: &'static str| {
            move |e: InvalidValue| InvalidValue::new(format!("{prefix}{name}"), e.message)
        };
        let incident_id = field("incidentId", &mut errors).and_then(|s| {
            IncidentId::parse(&s)
                .map_err(at("incidentId"))
                .map_err(|e| errors.push(e))
                .ok()
        });
        let severity = field("severity", &mut errors).and_then(|s| {
            Severity::parse(&s)
                .map_err(at("severity"))
                .map_err(|e| errors.push(e))
                .ok()
        });
        let group = field("stakeholderGroupId", &mut errors).and_then(|s| {
            GroupId::parse(&s)
                .map_err(at("stakeholderGroupId"))
                .map_err(|e| errors.push(e))
                .ok()
        });
        let message = field("messageTemplate", &mut errors).and_then(|s| {
            MessageTemplate::parse(&s)
                .map_err(at("messageTemplate"))
                .map_err(|e| errors.push(e))
                .ok()
        });
        let timestamp = match map.get("timestamp") {
            None | Some(serde_json::Value::Null) => None,
            Some(serde_json::Value::String(s)) => Ts::parse_rfc3339_any(s)
                .map_err(at("timestamp"))
                .map_err(|e| errors.push(e))
                .ok()
                .flatten(),
            Some(_) => {
                errors.push(InvalidValue::new(
                    format!("{prefix}timestamp"),
                    "expected an RFC 3339 string",
                ));
                None
            }
        };
        // Absent: the default; present, it must be the array (null is
        // refused like any other wrong type).
        let responses = match map.get("responses") {
            None => Responses::default(),
            Some(v) => Responses::parse(v, &format!("{prefix}responses")).unwrap_or_else(|e| {
                errors.extend(e);
                Responses::default()
            }),
        };
        let mut message_templates = std::collections::BTreeMap::new();
        match map.get("messageTemplates") {
            None => {}
            Some(serde_json::Value::Object(m)) => {
                if m.len() > MAX_TEMPLATES {
                    errors.push(InvalidValue::new(
                        format!("{prefix}messageTemplates"),
                        format!("{} locales: at most {MAX_TEMPLATES}", m.len()),
                    ));
                }
                let mut m: Vec<_> = m.iter().collect();
                m.sort_by(|a, b| a.0.cmp(b.0));
                for (tag, text) in m {
                    let at = format!("{prefix}messageTemplates.{tag}");
                    let locale = super::locale::normalise(tag)
                        .map_err(|e| errors.push(InvalidValue::new(at.clone(), e.message)))
                        .ok();
                    let text = match text {
                        serde_json::Value::String(t) => MessageTemplate::parse(t)
                            .map_err(|e| errors.push(InvalidValue::new(at.clone(), e.message)))
                            .ok(),
                        _ => {
                            errors.push(InvalidValue::new(at.clone(), "expected a string"));
                            None
                        }
                    };
                    if let (Some(l), Some(t)) = (locale, text)
                        && message_templates.insert(l, t).is_some()
                    {
                        errors.push(InvalidValue::new(at, "the same locale twice"));
                    }
                }
            }
            Some(_) => errors.push(InvalidValue::new(
                format!("{prefix}messageTemplates"),
                "expected an object of locale to message, e.g. {\"fr\": \"...\"}",
            )),
        }
        let quorum = match map.get("quorum") {
            None => None,
            Some(v) => Quorum::parse(v, &format!("{prefix}quorum"))
                .map_err(|e| errors.extend(e))
                .ok(),
        };
        let stop_on_quorum = match map.get("stopOnQuorum") {
            None => false,
            Some(serde_json::Value::Bool(b)) => *b,
            Some(_) => {
                errors.push(InvalidValue::new(
                    format!("{prefix}stopOnQuorum"),
                    "expected true or false",
                ));
                false
            }
        };
        if map.contains_key("stopOnQuorum") && !map.contains_key("quorum") {
            errors.push(InvalidValue::new(
                format!("{prefix}stopOnQuorum"),
                "given without a quorum: give quorum too",
            ));
        }
        let bridge = match map.get("bridge") {
            None => None,
            Some(v) => super::Bridge::parse(v, &format!("{prefix}bridge"))
                .map_err(|e| errors.extend(e))
                .ok(),
        };
        match (incident_id, severity, group, message) {
            (
                Some(incident_id),
                Some(severity),
                Some(stakeholder_group_id),
                Some(message_template),
            ) if errors.is_empty() => Ok(Trigger {
                incident_id,
                severity,
                stakeholder_group_id,
                message_template,
                message_templates,
                timestamp,
                responses,
                quorum,
                stop_on_quorum,
                bridge,
            }),
            _ => Err(errors),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IncidentStatus {
    Open,
    /// Closed by a user: cascades are being cancelled in jobs.
    Closing,
    /// Closed, and no cascade of it is still open.
    Closed,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Incident {
    pub trigger: Trigger,
    pub status: IncidentStatus,
    pub triggered_at: Ts,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub closed_at: Option<Ts>,
    /// Number of cascades the group expands to (members).
    pub cascades: u32,
    /// Expansion progress: members turned into cascades so far.
    pub expanded: u32,
    pub version: u64,
    /// While closing: the pass over the cascades under way (1 for the first).
    #[serde(default, skip_serializing_if = "is_zero_u8")]
    pub close_passes: u8,
    /// While closing: store partitions whose job finished the current pass.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub close_done: Vec<u16>,
    /// The stores keep this incident's counts as its cascades change (every
    /// incident triggered by this version; one triggered before has none,
    /// and its status counts its cascades instead).
    #[serde(default)]
    pub tallied: bool,
    /// The system it came from, told of its progress (write-back).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<super::Origin>,
    /// The sweep found every member acknowledged and told the origin so
    /// (set once, by a conditional write, so the note is queued once).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub all_acknowledged_told: bool,
    /// When the trigger's quorum was seen met: right after the
    /// acknowledgement that met it (or at the next sweep, had the process
    /// stopped between); set once, by a conditional write.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quorum_reached_at: Option<Ts>,
    /// Updates posted, the all-clear included, in order (`seq` 1, 2, ...).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub updates: Vec<super::IncidentUpdate>,
    /// A closed incident's audit grew after its last seal (an update or
    /// the all-clear was recorded): when the next seal is due. Cleared by
    /// the seal job before it reads the chain heads.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reseal_at: Option<Ts>,
}

fn is_zero_u8(n: &u8) -> bool {
    *n == 0
}

impl Incident {
    pub fn id(&self) -> &IncidentId {
        &self.trigger.incident_id
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn seed_fields() -> serde_json::Value {
        json!({
            "incidentId": "INC-2024-0892",
            "severity": "P1",
            "stakeholderGroupId": "ops-leadership",
            "messageTemplate": "System outage detected. Activate BCP protocol. Acknowledge by pressing 1.",
            "timestamp": "2024-05-20T14:32:00Z"
        })
    }

    #[test]
    fn accepts_all_three_body_shapes_alike() {
        let plain = Trigger::from_json(&seed_fields());
        let genesys = Trigger::from_json(&json!({ "trigger": seed_fields() }));
        let cxone = Trigger::from_json(
            &json!({ "eventType": "bcp.cascade.trigger", "payload": seed_fields() }),
        );
        assert!(plain.is_ok());
        assert_eq!(plain, genesys);
        assert_eq!(plain, cxone);
    }

    #[test]
    fn every_bad_field_is_named() {
        let errs = Trigger::from_json(
            &json!({"trigger": {"incidentId": "bad id", "severity": "P9", "messageTemplate": 3}}),
        )
        .err()
        .unwrap_or_default();
        let fields: Vec<_> = errs.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "trigger.incidentId",
                "trigger.severity",
                "trigger.stakeholderGroupId",
                "trigger.messageTemplate"
            ]
        );
    }

    #[test]
    fn wrong_event_type_is_refused() {
        let errs = Trigger::from_json(&json!({"eventType": "other", "payload": seed_fields()}))
            .err()
            .unwrap_or_default();
        assert_eq!(errs.first().map(|e| e.field.as_str()), Some("eventType"));
    }
}
