//! Incidents declared by the systems around a BCP programme, as they send
//! them: Prometheus Alertmanager (webhook version 4), PagerDuty (V3
//! webhooks), Jira (issue webhooks), ServiceNow (a business rule's REST
//! message, the body documented in docs/integrations.md) and CloudWatch
//! alarms (through SNS). Each is read into what Muster does with it:
//! declare an incident, close one, or nothing.
//!
//! Pure: no I/O. Signatures are checked here too ([`verify_pagerduty`],
//! [`verify_jira`], [`verify_bearer`]; SNS by [`super::sns::SnsVerifier`]).
//!
//! The group and severity come from the integration URL's query
//! (`?group=...&severity=...`), overridden by the source's own fields where
//! it has them, through a table the URL can replace
//! (`?severityMap=critical:P1,warning:P3`):
//!
//! | source | group | severity, default table |
//! |---|---|---|
//! | alertmanager | label `muster_group` (`?groupLabel=` names another) | label `severity`: critical, page: P1; high, error, major: P2; warning, medium: P3; info, low, none: P4 |
//! | pagerduty | query | `priority.summary` P1..P5: P1, P2, P3, P4, P4; else `urgency` high: P2, low: P4 |
//! | jira | query | `priority.name` Highest: P1, High: P2, Medium: P3, Low, Lowest: P4 |
//! | servicenow | `muster_group` in the body, else query | `priority` 1 (Critical): P1, 2: P2, 3: P3, 4, 5: P4 |
//! | cloudwatch | query | query |
//!
//! The same alert or ticket always gives the same incident key
//! ([`Inbound::key`]); the API maps a key to the open incident it declared,
//! so a repeat is a replay and a resolve closes what the alert opened.

use crate::domain::{GroupId, InvalidValue, MessageTemplate, Origin, OriginSource, Severity};
use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::{Digest, Sha256};

/// The sources an integration URL can name.
pub const SOURCES: [&str; 5] = [
    "alertmanager",
    "pagerduty",
    "jira",
    "servicenow",
    "cloudwatch",
];

/// What a source's delivery asks of Muster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inbound {
    /// Declare an incident (or replay the open one with this key).
    Trigger {
        key: String,
        severity: Severity,
        group: GroupId,
        message: MessageTemplate,
        /// The source's own record, told of the incident's progress
        /// (PagerDuty, Jira, ServiceNow with a `sys_id`).
        origin: Option<Origin>,
    },
    /// Close the open incident with this key.
    Resolve { key: String },
    /// Nothing to do (another kind of event); the reason, for the answer.
    Ignore(&'static str),
}

impl Inbound {
    /// The incident key, when the delivery has one.
    pub fn key(&self) -> Option<&str> {
        match self {
            Inbound::Trigger { key, .. } | Inbound::Resolve { key } => Some(key),
            Inbound::Ignore(_) => None,
        }
    }
}

/// The integration URL's query.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Options {
    pub group: Option<String>,
    pub severity: Option<String>,
    /// `value:P1,value:P2,...`: replaces the source's default table.
    pub severity_map: Option<String>,
    /// Alertmanager: the label naming the group (default `muster_group`).
    pub group_label: Option<String>,
}

/// Reads one delivery of `source` (a name in [`SOURCES`]); for
/// `cloudwatch`, `body` is the SNS notification's `Message`. Every problem
/// is listed, each naming its field.
pub fn read(source: &str, opts: &Options, body: &Value) -> Result<Inbound, Vec<InvalidValue>> {
    let table = SeverityTable::new(source, opts.severity_map.as_deref())?;
    let found = match source {
        "alertmanager" => alertmanager(opts, body)?,
        "pagerduty" => pagerduty(body)?,
        "jira" => jira(body)?,
        "servicenow" => servicenow(body)?,
        "cloudwatch" => cloudwatch(body)?,
        other => {
            return Err(vec![InvalidValue::new(
                "source",
                format!(
                    "unknown source {other:?}: expected one of {}",
                    SOURCES.join(", ")
                ),
            )]);
        }
    };
    let (key, group) = match &found {
        Found::Ignore(why) => return Ok(Inbound::Ignore(why)),
        Found::Trigger { key, group, .. } | Found::Resolve { key, group } => (key, group),
    };
    let mut errors = Vec::new();
    let group = match group.clone().or_else(|| opts.group.clone()) {
        Some(g) => GroupId::parse(&g)
            .map_err(|e| errors.push(InvalidValue::new("group", e.message)))
            .ok(),
        None => {
            errors.push(InvalidValue::new(
                "group",
                "no stakeholder group: add ?group= to the integration URL",
            ));
            None
        }
    };
    // One alert sent to two groups' URLs is two incidents.
    let key = group
        .as_ref()
        .map(|g| format!("{key}-{}", &digest(g.as_str())[..8]));
    let Found::Trigger {
        severity,
        message,
        reference,
        ..
    } = found
    else {
        return match key {
            Some(key) => Ok(Inbound::Resolve { key }),
            None => Err(errors),
        };
    };
    let severity = match severity.iter().find_map(|s| table.get(s)) {
        Some(s) => Some(s),
        None => match &opts.severity {
            Some(s) => Severity::parse(s)
                .map_err(|_| {
                    errors.push(InvalidValue::new("severity", "expected P1, P2, P3 or P4"))
                })
                .ok(),
            None => {
                errors.push(InvalidValue::new(
                    "severity",
                    "the source gave no severity the table maps: add ?severity= to the integration URL",
                ));
                None
            }
        },
    };
    let message = MessageTemplate::parse(&clip(&message, 1000))
        .map_err(|e| errors.push(InvalidValue::new("message", e.message)))
        .ok();
    match (key, group, severity, message) {
        (Some(key), Some(group), Some(severity), Some(message)) if errors.is_empty() => {
            Ok(Inbound::Trigger {
                key,
                severity,
                group,
                message,
                origin: OriginSource::parse(source)
                    .zip(reference)
                    .and_then(|(s, r)| Origin::new(s, &r)),
            })
        }
        _ => Err(errors),
    }
}

/// What a source's reader found, before the URL's defaults.
enum Found {
    Trigger {
        key: String,
        group: Option<String>,
        /// The source's severity values, most specific first.
        severity: Vec<String>,
        message: String,
        /// The source's id of its record, for write-back.
        reference: Option<String>,
    },
    Resolve {
        key: String,
        group: Option<String>,
    },
    Ignore(&'static str),
}

fn str_at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    path.iter().try_fold(v, |v, k| v.get(*k))?.as_str()
}

fn required<'a>(v: &'a Value, path: &[&str]) -> Result<&'a str, Vec<InvalidValue>> {
    str_at(v, path)
        .filter(|s| !s.trim().is_empty())
        .ok_or_else(|| vec![InvalidValue::new(path.join("."), "is required (a string)")])
}

/// A short stable key of a value that may be long or personal.
fn digest(s: &str) -> String {
    hex::encode(&Sha256::digest(s.as_bytes())[..10])
}

/// At most `n` characters, control characters but newlines made spaces.
fn clip(s: &str, n: usize) -> String {
    s.chars()
        .map(|c| if c.is_control() && c != '\n' { ' ' } else { c })
        .take(n)
        .collect()
}

fn alertmanager(opts: &Options, v: &Value) -> Result<Found, Vec<InvalidValue>> {
    if let Some(version) = v.get("version").and_then(Value::as_str)
        && version != "4"
    {
        return Err(vec![InvalidValue::new(
            "version",
            format!("webhook version {version:?} is not supported: expected \"4\""),
        )]);
    }
    let group_key = required(v, &["groupKey"])?;
    let key = format!("am-{}", digest(group_key));
    let label = |name: &str| {
        str_at(v, &["commonLabels", name])
            .or_else(|| str_at(v, &["groupLabels", name]))
            .map(str::to_string)
    };
    let group_label = opts.group_label.as_deref().unwrap_or("muster_group");
    match required(v, &["status"])? {
        "resolved" => {
            return Ok(Found::Resolve {
                key,
                group: label(group_label),
            });
        }
        "firing" => {}
        other => {
            return Err(vec![InvalidValue::new(
                "status",
                format!("{other:?}: expected firing or resolved"),
            )]);
        }
    }
    let firing: Vec<&Value> = v
        .get("alerts")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter(|a| a.get("status").and_then(Value::as_str) == Some("firing"))
                .collect()
        })
        .unwrap_or_default();
    let summary = str_at(v, &["commonAnnotations", "summary"])
        .or_else(|| {
            firing
                .first()
                .and_then(|a| str_at(a, &["annotations", "summary"]))
        })
        .map(str::to_string)
        .or_else(|| label("alertname"))
        .unwrap_or_else(|| "Alert".to_string());
    let message = if firing.len() > 1 {
        format!("{summary} ({} alerts firing)", firing.len())
    } else {
        summary
    };
    Ok(Found::Trigger {
        key,
        group: label(group_label),
        severity: label("severity").into_iter().collect(),
        message,
        reference: None,
    })
}

fn pagerduty(v: &Value) -> Result<Found, Vec<InvalidValue>> {
    let kind = required(v, &["event", "event_type"])?;
    if str_at(v, &["event", "resource_type"]) != Some("incident") {
        return Ok(Found::Ignore("not an incident event"));
    }
    let id = required(v, &["event", "data", "id"])?;
    let key = format!("pd-{}", digest(id));
    match kind {
        "incident.triggered" | "incident.reopened" => {}
        "incident.resolved" => return Ok(Found::Resolve { key, group: None }),
        _ => {
            return Ok(Found::Ignore(
                "an incident event that neither opens nor resolves",
            ));
        }
    }
    let data = &v["event"]["data"];
    let title = str_at(data, &["title"]).unwrap_or("PagerDuty incident");
    let message = match data.get("number").and_then(Value::as_u64) {
        Some(n) => format!("[PagerDuty #{n}] {title}"),
        None => format!("[PagerDuty] {title}"),
    };
    let severity = [
        str_at(data, &["priority", "summary"]).map(|p| format!("priority:{p}")),
        str_at(data, &["urgency"]).map(|u| format!("urgency:{u}")),
    ]
    .into_iter()
    .flatten()
    .collect();
    Ok(Found::Trigger {
        key,
        group: None,
        severity,
        message,
        reference: Some(id.to_string()),
    })
}

fn jira(v: &Value) -> Result<Found, Vec<InvalidValue>> {
    let event = required(v, &["webhookEvent"])?;
    if event != "jira:issue_created" {
        return Ok(Found::Ignore("not an issue-created event"));
    }
    let issue_key = required(v, &["issue", "key"])?;
    let summary = str_at(v, &["issue", "fields", "summary"]).unwrap_or("Jira issue");
    Ok(Found::Trigger {
        key: format!("jira-{}", digest(issue_key)),
        group: None,
        severity: str_at(v, &["issue", "fields", "priority", "name"])
            .map(str::to_string)
            .into_iter()
            .collect(),
        message: format!("[{}] {summary}", clip(issue_key, 40)),
        reference: Some(issue_key.to_string()),
    })
}

/// ServiceNow incident `state` values (the incident table's choices):
/// 6 Resolved, 7 Closed, 8 Canceled end an incident.
fn servicenow(v: &Value) -> Result<Found, Vec<InvalidValue>> {
    let number = required(v, &["number"])?;
    let key = format!("sn-{}", digest(number));
    let state = match v.get("state") {
        Some(Value::String(s)) => s
            .split(|c: char| !c.is_ascii_digit())
            .next()
            .unwrap_or("")
            .to_string(),
        Some(Value::Number(n)) => n.to_string(),
        _ => String::new(),
    };
    if matches!(state.as_str(), "6" | "7" | "8") {
        return Ok(Found::Resolve {
            key,
            group: str_at(v, &["muster_group"]).map(str::to_string),
        });
    }
    let priority = match v.get("priority") {
        Some(Value::String(s)) => s.trim().chars().next().map(String::from),
        Some(Value::Number(n)) => Some(n.to_string()),
        _ => None,
    };
    let summary = str_at(v, &["short_description"]).unwrap_or("ServiceNow incident");
    Ok(Found::Trigger {
        key,
        group: str_at(v, &["muster_group"]).map(str::to_string),
        severity: priority.into_iter().collect(),
        message: format!("[{}] {summary}", clip(number, 40)),
        reference: str_at(v, &["sys_id"]).map(str::to_string),
    })
}

fn cloudwatch(v: &Value) -> Result<Found, Vec<InvalidValue>> {
    let arn = str_at(v, &["AlarmArn"])
        .or_else(|| str_at(v, &["AlarmName"]))
        .ok_or_else(|| vec![InvalidValue::new("AlarmArn", "is required (a string)")])?;
    let key = format!("cw-{}", digest(arn));
    match required(v, &["NewStateValue"])? {
        "ALARM" => {}
        "OK" => return Ok(Found::Resolve { key, group: None }),
        _ => return Ok(Found::Ignore("an alarm state that is neither ALARM nor OK")),
    }
    let name = str_at(v, &["AlarmName"]).unwrap_or("CloudWatch alarm");
    let message = match str_at(v, &["NewStateReason"]) {
        Some(r) => format!("{name}: {r}"),
        None => name.to_string(),
    };
    Ok(Found::Trigger {
        key,
        group: None,
        severity: Vec::new(),
        message,
        reference: None,
    })
}

/// A source's severity values to Muster severities.
struct SeverityTable(Vec<(String, Severity)>);

impl SeverityTable {
    fn new(source: &str, custom: Option<&str>) -> Result<Self, Vec<InvalidValue>> {
        if let Some(custom) = custom {
            let mut out = Vec::new();
            for (i, pair) in custom.split(',').enumerate() {
                let parsed = pair
                    .rsplit_once(':')
                    .and_then(|(k, s)| Some((k.trim(), Severity::parse(s.trim()).ok()?)))
                    .filter(|(k, _)| !k.is_empty());
                match parsed {
                    Some((k, s)) => out.push((k.to_ascii_lowercase(), s)),
                    None => {
                        return Err(vec![InvalidValue::new(
                            "severityMap",
                            format!(
                                "entry {} ({:?}): expected value:P1..P4",
                                i + 1,
                                clip(pair, 40)
                            ),
                        )]);
                    }
                }
            }
            // PagerDuty's values are told apart by kind; a custom table
            // names them plainly (`P1:P1`, `high:P2`).
            if source == "pagerduty" {
                out = out
                    .into_iter()
                    .flat_map(|(k, s)| [(format!("priority:{k}"), s), (format!("urgency:{k}"), s)])
                    .collect();
            }
            return Ok(SeverityTable(out));
        }
        use Severity::*;
        let table: &[(&str, Severity)] = match source {
            "alertmanager" => &[
                ("critical", P1),
                ("page", P1),
                ("high", P2),
                ("error", P2),
                ("major", P2),
                ("warning", P3),
                ("medium", P3),
                ("info", P4),
                ("low", P4),
                ("none", P4),
            ],
            "pagerduty" => &[
                ("priority:p1", P1),
                ("priority:p2", P2),
                ("priority:p3", P3),
                ("priority:p4", P4),
                ("priority:p5", P4),
                ("urgency:high", P2),
                ("urgency:low", P4),
            ],
            "jira" => &[
                ("highest", P1),
                ("high", P2),
                ("medium", P3),
                ("low", P4),
                ("lowest", P4),
            ],
            "servicenow" => &[("1", P1), ("2", P2), ("3", P3), ("4", P4), ("5", P4)],
            _ => &[],
        };
        Ok(SeverityTable(
            table.iter().map(|(k, s)| (k.to_string(), *s)).collect(),
        ))
    }

    fn get(&self, value: &str) -> Option<Severity> {
        let v = value.trim().to_ascii_lowercase();
        self.0.iter().find(|(k, _)| *k == v).map(|(_, s)| *s)
    }
}

type HmacSha256 = Hmac<Sha256>;

fn hmac_ok(secret: &[u8], body: &[u8], hex_sig: &str) -> bool {
    let Ok(sig) = hex::decode(hex_sig.trim()) else {
        return false;
    };
    let Ok(mut mac) = HmacSha256::new_from_slice(secret) else {
        return false;
    };
    mac.update(body);
    // Constant time.
    mac.verify_slice(&sig).is_ok()
}

/// PagerDuty V3: `X-PagerDuty-Signature: v1=<hex HMAC-SHA256 of the raw
/// body under the subscription's secret>`, several comma-separated while a
/// secret is rotated; one that matches is enough.
pub fn verify_pagerduty(secret: &[u8], header: Option<&str>, body: &[u8]) -> bool {
    header.is_some_and(|h| {
        h.split(',')
            .filter_map(|s| s.trim().strip_prefix("v1="))
            .any(|sig| hmac_ok(secret, body, sig))
    })
}

/// Jira: a webhook with a secret sends `X-Hub-Signature: sha256=<hex
/// HMAC-SHA256 of the raw body>` (WebSub's form).
pub fn verify_jira(secret: &[u8], header: Option<&str>, body: &[u8]) -> bool {
    header
        .and_then(|h| h.trim().strip_prefix("sha256="))
        .is_some_and(|sig| hmac_ok(secret, body, sig))
}

/// Alertmanager (`http_config.authorization`) and ServiceNow (the REST
/// message's header): `Authorization: Bearer <secret>`, compared in
/// constant time.
pub fn verify_bearer(secret: &[u8], header: Option<&str>) -> bool {
    use subtle::ConstantTimeEq;
    header
        .and_then(|h| h.strip_prefix("Bearer "))
        .is_some_and(|t| bool::from(t.trim().as_bytes().ct_eq(secret)))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    #[test]
    fn pagerduty_signatures_follow_its_v1_scheme() {
        let body = br#"{"event":{}}"#;
        let mut mac = HmacSha256::new_from_slice(b"s3cret").unwrap();
        mac.update(body);
        let good = hex::encode(mac.finalize().into_bytes());
        assert!(verify_pagerduty(
            b"s3cret",
            Some(&format!("v1={good}")),
            body
        ));
        assert!(verify_pagerduty(
            b"s3cret",
            Some(&format!("v1=00ff, v1={good}")),
            body
        ));
        assert!(!verify_pagerduty(
            b"other",
            Some(&format!("v1={good}")),
            body
        ));
        assert!(
            !verify_pagerduty(b"s3cret", Some(&good), body),
            "no v1= prefix"
        );
        assert!(!verify_pagerduty(b"s3cret", None, body));
        assert!(!verify_pagerduty(b"s3cret", Some("v1=zz"), body));
    }

    #[test]
    fn a_custom_severity_table_replaces_the_default_and_bad_entries_are_named() {
        let opts = Options {
            group: Some("ops".into()),
            severity_map: Some("warning:P1".into()),
            ..Default::default()
        };
        let body = json!({"version": "4", "groupKey": "{}:{a=\"b\"}", "status": "firing", "commonLabels": {"severity": "warning"}, "alerts": []});
        match read("alertmanager", &opts, &body).unwrap() {
            Inbound::Trigger { severity, .. } => assert_eq!(severity, Severity::P1),
            other => panic!("{other:?}"),
        }
        let bad = Options {
            severity_map: Some("warning:P1,oops".into()),
            ..opts
        };
        let e = read("alertmanager", &bad, &body).unwrap_err();
        assert_eq!(e[0].field, "severityMap");
        assert!(e[0].message.contains("entry 2"), "{}", e[0].message);
    }

    #[test]
    fn without_a_group_or_a_severity_the_answer_says_which_to_add() {
        let body = json!({"Trigger": {}, "AlarmName": "x", "AlarmArn": "arn:aws:cloudwatch:eu-west-1:123456789012:alarm:x", "NewStateValue": "ALARM"});
        let e = read("cloudwatch", &Options::default(), &body).unwrap_err();
        let fields: Vec<&str> = e.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["group", "severity"]);
    }
}
