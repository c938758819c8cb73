//! `POST /v1/integrations/{source}`: incidents declared by Alertmanager,
//! PagerDuty, Jira, ServiceNow and CloudWatch (through SNS), in their own
//! formats ([`crate::events::integrations`]), authenticated by each
//! source's own scheme with a secret configured per source. A source
//! without one is not served (404): an integration is never open.
//!
//! A source's incident key maps to incident ids `key`, `key.2`, `key.3`...:
//! a trigger replays the open one, else declares the next; a resolve closes
//! the open one. So a repeat is a replay, and the same alert firing again
//! after it was resolved is a new incident, not a replay of a closed one.
//!
//! Answers: 202 `{"incidentId", "result": "TRIGGERED" | "CLOSING"}`, 200
//! `{"incidentId", "result": "REPLAYED" | "NOTHING_OPEN"}` or
//! `{"result": "IGNORED", "reason"}` (another kind of event, acknowledged
//! so that the source does not retry it), 401 for a bad signature, 422
//! naming what is missing.

use super::v1::{ApiState, Problem};
use crate::app;
use crate::domain::{IncidentId, IncidentStatus, Trigger};
use crate::events::integrations::{self as src, Inbound, Options, SOURCES};
use crate::events::sns::{SnsMessage, SnsMessageType, SnsVerifier};
use crate::secret::Secret;
use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::Arc;

/// The most occurrences of one key: a source that re-opens the same alert
/// more often than this is refused (409), not counted forever.
pub const MAX_OCCURRENCES: u32 = 100_000;

/// Each source's secret, and the SNS verifier for CloudWatch alarms.
#[derive(Clone, Default)]
pub struct Integrations {
    /// `alertmanager`, `pagerduty`, `jira`, `servicenow` -> secret.
    pub secrets: BTreeMap<&'static str, Secret>,
    /// CloudWatch alarms through SNS: the allowed topics' verifier.
    pub cloudwatch: Option<Arc<SnsVerifier>>,
    /// The alternative gateways' webhooks (`/v1/gateways/{gateway}/{event}`).
    pub gateways: super::gateways::Hooks,
}

/// The environment variable holding each source's secret (`muster serve`
/// and the trigger function read the same ones).
pub const SECRET_VARIABLES: [(&str, &str); 4] = [
    ("alertmanager", "MUSTER_ALERTMANAGER_TOKEN"),
    ("pagerduty", "MUSTER_PAGERDUTY_SECRET"),
    ("jira", "MUSTER_JIRA_SECRET"),
    ("servicenow", "MUSTER_SERVICENOW_TOKEN"),
];

/// The variable holding every source's secret at once, as a JSON object
/// (`{"pagerduty": "...", "jira": "..."}`): what the AWS template passes
/// from one Secrets Manager secret.
pub const SECRETS_JSON_VARIABLE: &str = "MUSTER_INTEGRATION_SECRETS";

/// The shortest secret a source may have.
pub const MIN_SECRET: usize = 16;

/// A source's secret, or why it cannot be one (never printing it).
fn checked(source: &str, v: &str) -> Result<Secret, String> {
    if v.trim().chars().count() < MIN_SECRET {
        return Err(format!(
            "{source}: a secret of at least {MIN_SECRET} characters"
        ));
    }
    Ok(Secret::new(v.trim()))
}

/// Reads [`SECRETS_JSON_VARIABLE`]'s value: the good entries, and what is
/// wrong with the others (naming the key, never a secret). A bad entry
/// leaves that source unserved, not the whole API down.
pub fn secrets_from_json(text: &str) -> (Vec<(&'static str, Secret)>, Vec<String>) {
    let map: serde_json::Map<String, Value> = match serde_json::from_str(text) {
        Ok(m) => m,
        Err(e) => {
            return (
                Vec::new(),
                vec![format!(
                    "is not a JSON object of source to secret (line {}, column {})",
                    e.line(),
                    e.column()
                )],
            );
        }
    };
    let (mut out, mut problems) = (Vec::new(), Vec::new());
    for (k, v) in map {
        let Some(source) = SECRET_VARIABLES.iter().map(|(s, _)| *s).find(|s| *s == k) else {
            problems.push(format!(
                "names {k:?}: expected alertmanager, pagerduty, jira or servicenow"
            ));
            continue;
        };
        match v.as_str().map(|s| checked(source, s)) {
            Some(Ok(secret)) => out.push((source, secret)),
            Some(Err(p)) => problems.push(p),
            None => problems.push(format!("{k}: not a string")),
        }
    }
    (out, problems)
}

impl Integrations {
    /// The secrets `lookup` (the environment) holds: one variable per
    /// source ([`SECRET_VARIABLES`]), or all in [`SECRETS_JSON_VARIABLE`]
    /// (a source's own variable wins); blank ones are absent.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, String> {
        let mut secrets = BTreeMap::new();
        if let Some(text) = lookup(SECRETS_JSON_VARIABLE).filter(|t| !t.trim().is_empty()) {
            let (good, problems) = secrets_from_json(&text);
            if let Some(p) = problems.first() {
                return Err(format!("{SECRETS_JSON_VARIABLE} {p}"));
            }
            secrets.extend(good);
        }
        for (source, var) in SECRET_VARIABLES {
            if let Some(v) = lookup(var).filter(|v| !v.trim().is_empty()) {
                secrets.insert(
                    source,
                    checked(source, &v).map_err(|p| format!("{var}: {p}"))?,
                );
            }
        }
        Ok(Integrations {
            secrets,
            cloudwatch: None,
            gateways: Default::default(),
        })
    }

    /// The sources served, for logs at start-up.
    pub fn served(&self) -> Vec<&'static str> {
        let mut out: Vec<&'static str> = self.secrets.keys().copied().collect();
        if self.cloudwatch.is_some() {
            out.push("cloudwatch");
        }
        out
    }
}

fn unauthorized(source: &str) -> Problem {
    Problem::new(
        StatusCode::UNAUTHORIZED,
        format!("the {source} delivery is not signed with this integration's secret"),
    )
}

fn invalid(errors: Vec<crate::domain::InvalidValue>) -> Problem {
    Problem {
        status: StatusCode::UNPROCESSABLE_ENTITY,
        detail: "the delivery cannot be read as an incident".into(),
        errors: errors
            .iter()
            .map(|e| json!({"field": e.field, "message": e.message}))
            .collect(),
    }
}

fn header<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

fn parse_json(body: &[u8]) -> Result<Value, Problem> {
    serde_json::from_slice(body).map_err(|e| {
        Problem::new(
            StatusCode::BAD_REQUEST,
            format!("malformed JSON at line {}, column {}", e.line(), e.column()),
        )
    })
}

pub(super) async fn integration(
    State(s): State<ApiState>,
    Path(source): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Problem> {
    let Some(source) = SOURCES.iter().copied().find(|k| *k == source) else {
        return Err(Problem::new(
            StatusCode::NOT_FOUND,
            format!(
                "no integration of that name: expected one of {}",
                SOURCES.join(", ")
            ),
        ));
    };
    let not_configured = || {
        Problem::new(
            StatusCode::NOT_FOUND,
            format!("the {source} integration is not configured"),
        )
    };
    let body = super::v1::body_of(body)?;
    // Each source's own authentication, before anything is read.
    let value = if source == "cloudwatch" {
        let verifier = s
            .integrations
            .cloudwatch
            .clone()
            .ok_or_else(not_configured)?;
        let msg: SnsMessage = serde_json::from_slice(&body).map_err(|e| {
            Problem::new(StatusCode::BAD_REQUEST, format!("not an SNS message: {e}"))
        })?;
        if let Err(e) = verifier.verify(&msg).await {
            tracing::warn!(error = %e, "cloudwatch delivery refused");
            return Err(if e.is_transient() {
                Problem::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "temporarily unavailable; retry",
                )
            } else {
                unauthorized(source)
            });
        }
        match msg.kind {
            SnsMessageType::SubscriptionConfirmation => {
                verifier.confirm(&msg).await.map_err(|e| {
                    tracing::warn!(error = %e, "the SNS subscription was not confirmed");
                    Problem::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "the subscription could not be confirmed; SNS will retry",
                    )
                })?;
                tracing::info!(topic = %msg.topic_arn, "SNS subscription confirmed");
                return Ok(Json(json!({"result": "SUBSCRIBED"})).into_response());
            }
            SnsMessageType::UnsubscribeConfirmation => {
                return Ok(Json(
                    json!({"result": "IGNORED", "reason": "an unsubscribe confirmation"}),
                )
                .into_response());
            }
            SnsMessageType::Notification => parse_json(msg.message.as_bytes())?,
        }
    } else {
        let secret = s
            .integrations
            .secrets
            .get(source)
            .ok_or_else(not_configured)?;
        let key = secret.expose().as_bytes();
        let ok = match source {
            "pagerduty" => {
                src::verify_pagerduty(key, header(&headers, "x-pagerduty-signature"), &body)
            }
            "jira" => src::verify_jira(key, header(&headers, "x-hub-signature"), &body),
            _ => src::verify_bearer(key, header(&headers, "authorization")),
        };
        if !ok {
            return Err(unauthorized(source));
        }
        parse_json(&body)?
    };
    let opts: Options = serde_urlencoded::from_str(query.as_deref().unwrap_or_default()).map_err(|e| {
        Problem::new(
            StatusCode::BAD_REQUEST,
            format!("the query string is not valid: {e} (expected group, severity, severityMap, groupLabel)"),
        )
    })?;
    match src::read(source, &opts, &value).map_err(invalid)? {
        Inbound::Ignore(reason) => {
            Ok(Json(json!({"result": "IGNORED", "reason": reason})).into_response())
        }
        Inbound::Trigger {
            key,
            severity,
            group,
            message,
            origin,
        } => {
            let (open, next) = occurrences(&s, &key).await?;
            if let Some(id) = open {
                return Ok(Json(json!({"incidentId": id, "result": "REPLAYED"})).into_response());
            }
            let trigger = Trigger {
                incident_id: next,
                severity,
                stakeholder_group_id: group,
                message_template: message,
                message_templates: Default::default(),
                timestamp: None,
                responses: Default::default(),
                quorum: None,
                stop_on_quorum: false,
                bridge: None,
            };
            let id = trigger.incident_id.clone();
            let declared = match origin {
                Some(origin) => app::trigger_from(&s.deps, trigger, origin).await,
                None => app::trigger(&s.deps, trigger).await,
            };
            let out = match declared {
                Ok(out) => out,
                // Two deliveries at once, their messages different (an
                // alert joined the group): the first declared it.
                Err(e) if e.is_conflict() => match s.deps.incidents.get_incident(&id).await? {
                    Some(inc) if inc.status == IncidentStatus::Open => {
                        return Ok(
                            Json(json!({"incidentId": id, "result": "REPLAYED"})).into_response()
                        );
                    }
                    _ => return Err(e.into()),
                },
                Err(e) => return Err(e.into()),
            };
            tracing::info!(source, incident_id = %id, replay = out.replay, "integration trigger");
            let (status, result) = if out.replay {
                (StatusCode::OK, "REPLAYED")
            } else {
                (StatusCode::ACCEPTED, "TRIGGERED")
            };
            Ok((status, Json(json!({"incidentId": id, "result": result, "links": {"status": format!("/v1/incidents/{id}")}}))).into_response())
        }
        Inbound::Resolve { key } => match occurrences(&s, &key).await?.0 {
            Some(id) => {
                let inc = app::close(&s.deps, &id).await?;
                tracing::info!(source, incident_id = %id, "integration resolve");
                Ok((
                    StatusCode::ACCEPTED,
                    Json(json!({"incidentId": id, "result": "CLOSING", "status": inc.status})),
                )
                    .into_response())
            }
            None => Ok(Json(json!({"result": "NOTHING_OPEN"})).into_response()),
        },
    }
}

/// The open incident of `key`, if any, and the id its next occurrence
/// takes. Occurrences are made one after another (`key`, `key.2`, ...), and
/// only when none is open, so only the last can be open: it is found in
/// about 2 log2(n) reads (doubling, then halving).
async fn occurrences(s: &ApiState, key: &str) -> Result<(Option<IncidentId>, IncidentId), Problem> {
    let id = |n: u32| {
        let text = if n == 1 {
            key.to_string()
        } else {
            format!("{key}.{n}")
        };
        IncidentId::parse(&text).map_err(|e| {
            tracing::error!(error = %e.message, "an integration key is not an incident id");
            Problem::new(StatusCode::INTERNAL_SERVER_ERROR, "internal error")
        })
    };
    let get =
        |n: u32| async move { Ok::<_, Problem>(s.deps.incidents.get_incident(&id(n)?).await?) };
    if get(1).await?.is_none() {
        return Ok((None, id(1)?));
    }
    // `lo` exists; `hi` does not (or is past the last allowed).
    let (mut lo, mut hi) = (1u32, 2u32);
    while hi <= MAX_OCCURRENCES && get(hi).await?.is_some() {
        lo = hi;
        hi = hi.saturating_mul(2);
    }
    let mut hi = hi.min(MAX_OCCURRENCES + 1);
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        if get(mid).await?.is_some() {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    match get(lo).await? {
        Some(inc) if inc.status == IncidentStatus::Open => Ok((Some(id(lo)?), id(lo)?)),
        _ if lo >= MAX_OCCURRENCES => {
            tracing::error!(
                occurrences = lo,
                "an incident source's alert was opened too often; refused"
            );
            Err(Problem::new(
                StatusCode::CONFLICT,
                format!("this alert was opened more than {MAX_OCCURRENCES} times"),
            ))
        }
        _ => Ok((None, id(lo + 1)?)),
    }
}
