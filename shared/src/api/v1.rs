//! The v1 HTTP API, served by API Gateway (through lambda_http) and by
//! `muster serve`. Errors are RFC 9457 problem+json; 5xx bodies say nothing
//! internal (the cause goes to the log, without contact details).
//!
//! - `POST /v1/incidents`: a trigger in any of its three body shapes; 202
//!   with the incident and a status link, before the group is expanded. A
//!   duplicate replays the first answer with `Idempotent-Replayed: true`; the
//!   same id with another payload is 409.
//! - `GET /v1/incidents`: incidents, open ones first, newest first, paged
//!   (`limit` 1 to 1,000, default 100; `cursor` from the page before).
//! - `GET /v1/carriers`: each channel's carrier: its told limit, the pace
//!   the limiter sends at, the wait of a send asking now, the carrier's
//!   pause, and the sends it accepted and the 429s it answered.
//! - `GET /v1/incidents/{id}`: counts by state and every stakeholder's state,
//!   contacts masked, needs-review flags.
//! - `POST /v1/incidents/{id}/close`: cancels every open cascade.
//! - `GET /v1/incidents/{id}/audit`: the audit trail, for the
//!   ComplianceOfficer and BCPAdministrator roles only.
//! - `GET /v1/ack/{token}` (and `HEAD`): a small HTML page with a button; it
//!   changes nothing, because mail security scanners fetch every link in a
//!   message. The button POSTs to `/v1/ack/{token}`, which records the
//!   acknowledgement (RFC 8058's reasoning). `POST /v1/ack` with
//!   `{"token": ...}` does the same for programs. A token for no cascade
//!   Muster knows is 404.
//! - `POST /v1/webhooks/{provider}`: signed delivery receipts and inbound
//!   SMS from a generic gateway.
//! - `POST /v1/integrations/{source}`: incidents declared and resolved by
//!   Alertmanager, PagerDuty, Jira, ServiceNow or CloudWatch, in their own
//!   formats and signatures ([`super::integrations`]).
//!
//! A request that API Gateway's JWT authorizer let through carries a
//! [`Caller`] extension (set by the Lambda adapter from the authorizer's
//! claims and scopes, never from anything the client sends): it is
//! authenticated, and its roles are the caller's. Otherwise, with a shared
//! secret configured, every route but the ack links requires an HMAC
//! signature over method, path, query, time and body (see `sign`). Without
//! one (local development only) the API is open and the `X-Muster-Roles`
//! header states the caller's roles. No GET changes state.

use super::sign::{AckTokens, verify_headers};
use crate::app::{self, ReceiptEvent, ReceiptOutcome};
use crate::domain::{Channel, IncidentId, PhoneNumber, Trigger};
use crate::engine::ReceiptStatus;
use crate::ports::Deps;
use crate::secret::Secret;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Extension, Path, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{Value, json};

/// Largest request body accepted.
pub const MAX_BODY: usize = 64 * 1024;

/// Roles that may read audit trails.
pub const AUDIT_ROLES: [&str; 2] = ["ComplianceOfficer", "BCPAdministrator"];

/// A caller authenticated by the gateway (API Gateway's JWT authorizer),
/// inserted as a request extension by the Lambda adapter only.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Caller {
    /// The token's subject (`sub` claim), for logs.
    pub subject: String,
    /// Roles of the API (`ComplianceOfficer`, `BCPAdministrator`, ...).
    pub roles: Vec<String>,
}

type MaybeCaller = Option<Extension<Caller>>;

#[derive(Clone)]
pub struct ApiState {
    pub deps: Deps,
    /// Shared secret for signed requests; `None` = open (local development).
    pub secret: Option<Secret>,
    pub tokens: AckTokens,
    /// Secrets of the incident sources (`/v1/integrations/{source}`); a
    /// source without one is not served.
    pub integrations: super::integrations::Integrations,
}

/// Every route, as (method, path): the OpenAPI document must list exactly these.
pub const ROUTES: [(&str, &str); 14] = [
    ("post", "/v1/incidents"),
    ("get", "/v1/incidents"),
    ("get", "/v1/carriers"),
    ("get", "/v1/incidents/{id}"),
    ("post", "/v1/incidents/{id}/close"),
    ("post", "/v1/incidents/{id}/updates"),
    ("get", "/v1/incidents/{id}/audit"),
    ("get", "/v1/ack/{token}"),
    ("head", "/v1/ack/{token}"),
    ("post", "/v1/ack/{token}"),
    ("post", "/v1/ack"),
    ("post", "/v1/webhooks/{provider}"),
    ("post", "/v1/integrations/{source}"),
    ("post", "/v1/gateways/{gateway}/{event}"),
];

pub fn router(state: ApiState) -> Router {
    Router::new()
        .route("/v1/incidents", post(trigger).get(list))
        .route("/v1/carriers", get(carriers))
        .route("/v1/incidents/{id}", get(status))
        .route("/v1/incidents/{id}/close", post(close))
        .route("/v1/incidents/{id}/updates", post(post_update))
        .route("/v1/incidents/{id}/audit", get(audit))
        .route("/v1/ack/{token}", get(ack_page).post(ack_form))
        .route("/v1/ack", post(ack_api))
        .route("/v1/webhooks/{provider}", post(webhook))
        .route(
            "/v1/integrations/{source}",
            post(super::integrations::integration),
        )
        .route(
            "/v1/gateways/{gateway}/{event}",
            post(super::gateways::gateway),
        )
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(state)
}

/// An RFC 9457 problem.
#[derive(Debug)]
pub struct Problem {
    pub(crate) status: StatusCode,
    pub(crate) detail: String,
    pub(crate) errors: Vec<Value>,
}

impl Problem {
    pub fn new(status: StatusCode, detail: impl Into<String>) -> Self {
        Problem {
            status,
            detail: detail.into(),
            errors: Vec::new(),
        }
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let mut body = json!({
            "type": "about:blank",
            "title": self.status.canonical_reason().unwrap_or("Error"),
            "status": self.status.as_u16(),
            "detail": self.detail,
        });
        if !self.errors.is_empty() {
            body["errors"] = Value::Array(self.errors);
        }
        let mut r = (self.status, Json(body)).into_response();
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        r
    }
}

impl From<crate::Error> for Problem {
    fn from(e: crate::Error) -> Self {
        match e {
            crate::Error::Validation(v) => Problem {
                status: StatusCode::UNPROCESSABLE_ENTITY,
                detail: "the request is not valid".into(),
                errors: v
                    .iter()
                    .map(|e| json!({"field": e.field, "message": e.message}))
                    .collect(),
            },
            crate::Error::NotFound(w) => {
                Problem::new(StatusCode::NOT_FOUND, format!("{w} not found"))
            }
            crate::Error::Conflict(w) => Problem::new(StatusCode::CONFLICT, w),
            e @ crate::Error::Transient { .. } => {
                tracing::error!(error = %e, "transient failure serving a request");
                Problem::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "temporarily unavailable; retry",
                )
            }
            e @ crate::Error::Permanent { .. } => {
                tracing::error!(error = %e, "failure serving a request");
                Problem::new(StatusCode::INTERNAL_SERVER_ERROR, "internal error")
            }
        }
    }
}

type Res = Result<Response, Problem>;

pub(crate) fn body_of(body: Result<Bytes, BytesRejection>) -> Result<Bytes, Problem> {
    body.map_err(|r| {
        if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
            Problem::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("the body is larger than {MAX_BODY} bytes"),
            )
        } else {
            Problem::new(StatusCode::BAD_REQUEST, "the body could not be read")
        }
    })
}

/// What a request is, for its signature.
struct Req {
    method: Method,
    uri: axum::http::Uri,
    headers: HeaderMap,
}

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Req {
    type Rejection = std::convert::Infallible;
    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _state: &S,
    ) -> Result<Self, Self::Rejection> {
        // Routers are merged, never nested, so the URI is the one signed.
        Ok(Req {
            method: parts.method.clone(),
            uri: parts.uri.clone(),
            headers: parts.headers.clone(),
        })
    }
}

/// Passes a caller the gateway authenticated; otherwise checks the
/// signature when a secret is configured.
fn authenticate(s: &ApiState, caller: &MaybeCaller, req: &Req, body: &[u8]) -> Result<(), Problem> {
    if caller.is_some() {
        return Ok(());
    }
    let Some(secret) = &s.secret else {
        return Ok(());
    };
    verify_headers(
        secret,
        &req.headers,
        req.method.as_str(),
        &req.uri,
        body,
        s.deps.clock.now(),
    )
    .map_err(|e| Problem::new(StatusCode::UNAUTHORIZED, e.to_string()))
}

fn json_body(headers: &HeaderMap, body: &[u8]) -> Result<Value, Problem> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if !super::is_json_media_type(ct) {
        return Err(Problem::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "send application/json",
        ));
    }
    serde_json::from_slice(body).map_err(|e| {
        Problem::new(
            StatusCode::BAD_REQUEST,
            format!("malformed JSON at line {}, column {}", e.line(), e.column()),
        )
    })
}

fn incident_id(id: &str) -> Result<IncidentId, Problem> {
    IncidentId::parse(id).map_err(|_| Problem::new(StatusCode::NOT_FOUND, "incident not found"))
}

async fn trigger(
    State(s): State<ApiState>,
    caller: MaybeCaller,
    req: Req,
    body: Result<Bytes, BytesRejection>,
) -> Res {
    let body = body_of(body)?;
    authenticate(&s, &caller, &req, &body)?;
    let value = json_body(&req.headers, &body)?;
    let trigger = Trigger::from_json(&value).map_err(|errors| Problem {
        status: StatusCode::UNPROCESSABLE_ENTITY,
        detail: "the trigger is not valid".into(),
        errors: errors
            .iter()
            .map(|e| json!({"field": e.field, "message": e.message}))
            .collect(),
    })?;
    // Field errors found past the body's shape name fields as the body does
    // (`trigger.stakeholderGroupId`).
    let prefix = Trigger::field_prefix(&value);
    let out = app::trigger(&s.deps, trigger).await.map_err(|e| match e {
        crate::Error::Validation(mut v) => {
            for f in &mut v {
                f.field = format!("{prefix}{}", f.field);
            }
            Problem::from(crate::Error::Validation(v))
        }
        other => Problem::from(other),
    })?;
    let inc = &out.incident;
    let link = format!("/v1/incidents/{}", inc.id());
    let mut answer = json!({
        "incidentId": inc.id(),
        "status": inc.status,
        "severity": inc.trigger.severity,
        "stakeholderGroupId": inc.trigger.stakeholder_group_id,
        "cascades": inc.cascades,
        "triggeredAt": inc.triggered_at.rfc3339(),
        "links": {"status": link, "audit": format!("{link}/audit"), "close": format!("{link}/close")},
    });
    let mut warnings = out.warnings;
    let fields = value
        .get("trigger")
        .or_else(|| value.get("payload"))
        .unwrap_or(&value);
    // A valid timestamp the incident does not hold was before 1970.
    if fields.get("timestamp").is_some_and(Value::is_string) && inc.trigger.timestamp.is_none() {
        warnings.push(format!("{prefix}timestamp is before 1970 and was not kept"));
    }
    if !warnings.is_empty() {
        answer["warnings"] = json!(warnings);
    }
    let mut r = (StatusCode::ACCEPTED, Json(answer)).into_response();
    if let Ok(v) = HeaderValue::from_str(&link) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    if out.replay {
        r.headers_mut()
            .insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    Ok(r)
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct StatusParams {
    limit: Option<String>,
    cursor: Option<String>,
    state: Option<String>,
    tier: Option<String>,
    channel: Option<String>,
    needs_review: Option<String>,
    route: Option<String>,
}

fn status_query(p: StatusParams) -> Result<app::StatusQuery, crate::Error> {
    use crate::engine::CascadeStatus as S;
    let mut errors = Vec::new();
    let mut field =
        |name: &str, message: &str| errors.push(crate::domain::InvalidValue::new(name, message));
    let limit =
        parse_limit(p.limit.as_deref(), app::PAGE_DEFAULT, app::PAGE_MAX).unwrap_or_else(|m| {
            field("limit", &m);
            0
        });
    let mut filter = app::StakeholderFilter::default();
    if let Some(v) = p.state.as_deref() {
        filter.state = match v {
            "pending" => Some(S::Pending),
            "active" => Some(S::Active),
            "acknowledged" => Some(S::Acknowledged),
            "escalated" => Some(S::Escalated),
            "cancelled" => Some(S::Cancelled),
            _ => {
                field(
                    "state",
                    "expected pending, active, acknowledged, escalated or cancelled",
                );
                None
            }
        };
    }
    if let Some(v) = p.tier.as_deref() {
        filter.tier = match v {
            "1" | "2" | "3" => v
                .parse()
                .ok()
                .and_then(|n| crate::domain::Tier::new(n).ok()),
            _ => None,
        };
        if filter.tier.is_none() {
            field("tier", "expected 1, 2 or 3");
        }
    }
    if let Some(v) = p.channel.as_deref() {
        filter.channel = match v {
            "voice" | "sms" | "email" | "push" => crate::domain::Channel::parse(v).ok(),
            _ => None,
        };
        if filter.channel.is_none() {
            field("channel", "expected voice, sms, email or push");
        }
    }
    if let Some(v) = p.needs_review.as_deref() {
        filter.needs_review = match v {
            "true" => Some(true),
            "false" => Some(false),
            _ => {
                field("needsReview", "expected true or false");
                None
            }
        };
    }
    if let Some(v) = p.route.as_deref() {
        filter.escalation = match v {
            "member" => Some(false),
            "escalation" => Some(true),
            _ => {
                field("route", "expected member or escalation");
                None
            }
        };
    }
    if !errors.is_empty() {
        return Err(crate::Error::Validation(errors));
    }
    Ok(app::StatusQuery {
        filter,
        cursor: p.cursor,
        limit,
    })
}

type QueryOf<T> = Result<axum::extract::Query<T>, axum::extract::rejection::QueryRejection>;

fn query_of<T>(q: QueryOf<T>) -> Result<T, Problem> {
    q.map(|axum::extract::Query(q)| q).map_err(|e| {
        Problem::new(
            StatusCode::BAD_REQUEST,
            format!("the query string is not valid: {}", e.body_text()),
        )
    })
}

/// A page size from the query: `default` when absent, else a whole number
/// from 1 to `max`.
fn parse_limit(v: Option<&str>, default: usize, max: usize) -> Result<usize, String> {
    match v {
        None => Ok(default),
        Some(l) => match l.parse::<usize>() {
            Ok(n) if (1..=max).contains(&n) => Ok(n),
            _ => Err(format!("must be a whole number from 1 to {max}")),
        },
    }
}

async fn status(
    State(s): State<ApiState>,
    caller: MaybeCaller,
    req: Req,
    Path(id): Path<String>,
    query: QueryOf<StatusParams>,
) -> Res {
    authenticate(&s, &caller, &req, b"")?;
    let id = incident_id(&id)?;
    let q = status_query(query_of(query)?)?;
    let view = app::status(&s.deps, &id, &q).await?;
    Ok(Json(view).into_response())
}

/// Page size of the incident list: default and most.
pub const LIST_DEFAULT: usize = 100;
pub const LIST_MAX: usize = 1_000;

#[derive(serde::Deserialize)]
struct ListQuery {
    limit: Option<String>,
    cursor: Option<String>,
}

/// `GET /v1/carriers`: each channel's carrier as its rate limiter sees it.
async fn carriers(State(s): State<ApiState>, caller: MaybeCaller, req: Req) -> Res {
    authenticate(&s, &caller, &req, b"")?;
    let carriers = app::carriers(&s.deps).await?;
    Ok(Json(json!({"carriers": carriers})).into_response())
}

async fn list(
    State(s): State<ApiState>,
    caller: MaybeCaller,
    req: Req,
    query: QueryOf<ListQuery>,
) -> Res {
    authenticate(&s, &caller, &req, b"")?;
    let q = query_of(query)?;
    let limit = parse_limit(q.limit.as_deref(), LIST_DEFAULT, LIST_MAX)
        .map_err(|m| crate::Error::invalid("limit", m))?;
    let page = s.deps.incidents.recent_incidents(q.cursor, limit).await?;
    let incidents: Vec<Value> = page
        .items
        .iter()
        .map(|i| {
            json!({
                "incidentId": i.id(),
                "severity": i.trigger.severity,
                "stakeholderGroupId": i.trigger.stakeholder_group_id,
                "status": i.status,
                "triggeredAt": i.triggered_at,
                "closedAt": i.closed_at,
                "members": i.cascades,
                "expanded": i.expanded,
                "links": {"status": format!("/v1/incidents/{}", i.id())},
            })
        })
        .collect();
    Ok(Json(json!({"incidents": incidents, "next": page.next})).into_response())
}

async fn close(
    State(s): State<ApiState>,
    caller: MaybeCaller,
    req: Req,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Res {
    let body = body_of(body)?;
    authenticate(&s, &caller, &req, &body)?;
    let id = incident_id(&id)?;
    // No body, or `{}`: a close; `{"allClear": "..."}`: with an all-clear.
    let all_clear = if body.iter().all(u8::is_ascii_whitespace) {
        None
    } else {
        all_clear_of(&json_body(&req.headers, &body)?)?
    };
    let inc = app::close(&s.deps, &id).await?;
    let sent = match all_clear {
        Some(m) => Some(app::update::all_clear(&s.deps, &id, m).await?),
        None => None,
    };
    let link = format!("/v1/incidents/{id}");
    let mut answer = json!({
        "incidentId": id,
        "status": inc.status,
        "closedAt": inc.closed_at,
        "links": {"status": link},
    });
    if let Some(u) = sent {
        answer["allClear"] = json!({"update": u.seq, "message": u.message});
    }
    Ok((StatusCode::ACCEPTED, Json(answer)).into_response())
}

fn unprocessable(detail: &str, errors: &[crate::domain::InvalidValue]) -> Problem {
    Problem {
        status: StatusCode::UNPROCESSABLE_ENTITY,
        detail: detail.into(),
        errors: errors
            .iter()
            .map(|e| json!({"field": e.field, "message": e.message}))
            .collect(),
    }
}

/// A close's body: an object, with at most `allClear` (the message).
fn all_clear_of(v: &Value) -> Result<Option<crate::domain::MessageTemplate>, Problem> {
    use crate::domain::InvalidValue;
    let Some(map) = v.as_object() else {
        let e = InvalidValue::new("", "expected a JSON object");
        return Err(unprocessable("the close is not valid", &[e]));
    };
    let mut errors: Vec<InvalidValue> = map
        .keys()
        .filter(|k| *k != "allClear")
        .map(|k| InvalidValue::new(k.clone(), "unknown field: a close takes allClear"))
        .collect();
    let m = match map.get("allClear") {
        None => None,
        Some(Value::String(t)) => crate::domain::MessageTemplate::parse(t)
            .map_err(|e| errors.push(InvalidValue::new("allClear", e.message)))
            .ok(),
        Some(_) => {
            errors.push(InvalidValue::new("allClear", "expected a string"));
            None
        }
    };
    if errors.is_empty() {
        Ok(m)
    } else {
        Err(unprocessable("the close is not valid", &errors))
    }
}

/// `POST /v1/incidents/{id}/updates`: an update for an open incident.
async fn post_update(
    State(s): State<ApiState>,
    caller: MaybeCaller,
    req: Req,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Res {
    let body = body_of(body)?;
    authenticate(&s, &caller, &req, &body)?;
    let id = incident_id(&id)?;
    let value = json_body(&req.headers, &body)?;
    let (message, audience) = crate::domain::IncidentUpdate::parse_body(&value)
        .map_err(|e| unprocessable("the update is not valid", &e))?;
    let u = app::update::post(&s.deps, &id, message, audience).await?;
    let answer = json!({
        "incidentId": id,
        "update": u.seq,
        "audience": u.audience,
        "postedAt": u.at,
        "links": {"status": format!("/v1/incidents/{id}")},
    });
    Ok((StatusCode::ACCEPTED, Json(answer)).into_response())
}

/// Audit entries per page: default and most.
pub const AUDIT_DEFAULT: usize = 500;
pub const AUDIT_MAX: usize = 1_000;

async fn audit(
    State(s): State<ApiState>,
    caller: MaybeCaller,
    req: Req,
    Path(id): Path<String>,
    query: QueryOf<ListQuery>,
) -> Res {
    authenticate(&s, &caller, &req, b"")?;
    let q = query_of(query)?;
    let headers = &req.headers;
    let roles = if let Some(Extension(c)) = &caller {
        c.roles.join(",")
    } else if s.secret.is_none() {
        headers
            .get("x-muster-roles")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    } else {
        String::new()
    };
    if !roles.split(',').any(|r| AUDIT_ROLES.contains(&r.trim())) {
        return Err(Problem::new(
            StatusCode::FORBIDDEN,
            "audit trails are for the ComplianceOfficer and BCPAdministrator roles",
        ));
    }
    let id = incident_id(&id)?;
    let limit = parse_limit(q.limit.as_deref(), AUDIT_DEFAULT, AUDIT_MAX)
        .map_err(|m| crate::Error::invalid("limit", m))?;
    let cursor = q.cursor.as_deref().map(app::store_cursor).transpose()?;
    s.deps
        .incidents
        .get_incident(&id)
        .await?
        .ok_or_else(|| Problem::new(StatusCode::NOT_FOUND, "incident not found"))?;
    let page = s
        .deps
        .cascades
        .audit_page(&id, cursor, limit)
        .await
        .map_err(app::cursor_refused)?;
    let next = page.next.as_deref().map(app::api_cursor);
    let entries = page.items;
    // Seals with every page (a few), so any page verifies what it holds
    // and an export of the pages verifies offline (`muster audit verify`).
    let seals = match &s.deps.sealing {
        Some(sealing) => sealing.store.seals(&id).await?,
        None => Vec::new(),
    };
    // Addresses: in full for the ComplianceOfficer, masked for others.
    let full = roles.split(',').any(|r| r.trim() == "ComplianceOfficer");
    let mut out = Vec::with_capacity(entries.len());
    for e in entries {
        let mut v = serde_json::to_value(&e).unwrap_or(Value::Null);
        if let (Some(ct), Some(vault)) = (&e.contact, &s.deps.vault) {
            let shown = match vault.decrypt(&e.stakeholder, &e.incident, ct).await {
                Ok(Some(plain)) if full => plain,
                Ok(Some(plain)) => mask(&plain),
                Ok(None) => "(erased)".into(),
                Err(_) => "(unreadable)".into(),
            };
            v["address"] = json!(shown);
        }
        out.push(v);
    }
    Ok(
        Json(json!({"incidentId": id, "seals": seals, "entries": out, "next": next}))
            .into_response(),
    )
}

/// What an acknowledgement token stands for, read without changing anything.
enum Ack {
    /// Genuine, unexpired, for an open cascade.
    Open(crate::ports::CascadeRecord),
    /// Genuine, for a cascade that has ended (acknowledged or not).
    Ended(crate::ports::CascadeRecord),
}

fn invalid_link() -> Problem {
    Problem::new(
        StatusCode::NOT_FOUND,
        "this acknowledgement link is not valid or has expired",
    )
}

/// The cascade a token acknowledges: 404 unless the token is genuine,
/// unexpired and names a cascade that exists.
async fn ack_target(s: &ApiState, token: &str) -> Result<(Ack, Channel), Problem> {
    let target = s
        .tokens
        .check(token, s.deps.clock.now())
        .ok_or_else(invalid_link)?;
    let rec = s
        .deps
        .cascades
        .get_cascade(&target.key)
        .await?
        .ok_or_else(invalid_link)?;
    let ack = if rec.cascade.status.is_terminal() {
        Ack::Ended(rec)
    } else {
        Ack::Open(rec)
    };
    Ok((ack, target.channel))
}

/// Records the acknowledgement a token stands for (on the channel whose
/// message carried it), as the link's button does; whether this request
/// recorded it (false: it was recorded before, or the cascade had ended).
pub async fn acknowledge(
    s: &ApiState,
    token: &str,
    response: Option<&str>,
) -> Result<(crate::engine::CascadeKey, bool), Problem> {
    answer(s, token, response)
        .await
        .map(|(key, recorded, _)| (key, recorded))
}

/// [`acknowledge`], also saying whether what was recorded acknowledges
/// (an answer such as "I need help" does not: RESPONDED).
pub async fn answer(
    s: &ApiState,
    token: &str,
    response: Option<&str>,
) -> Result<(crate::engine::CascadeKey, bool, bool), Problem> {
    let (key, channel) = match ack_target(s, token).await? {
        (Ack::Open(rec) | Ack::Ended(rec), channel) => (rec.cascade.key, channel),
    };
    let event = match response {
        // One of the incident's own answers (a button of the page, the API).
        Some(r) => ReceiptEvent::Respond {
            key: key.clone(),
            channel,
            attempt: None,
            response: r.to_string(),
        },
        None => ReceiptEvent::Ack {
            key: key.clone(),
            channel,
            attempt: None,
        },
    };
    let outcome = app::receipt(&s.deps, event).await?;
    match outcome {
        ReceiptOutcome::Applied(crate::engine::AuditKind::Acknowledged) => Ok((key, true, true)),
        ReceiptOutcome::Applied(crate::engine::AuditKind::Responded) => Ok((key, true, false)),
        ReceiptOutcome::Unknown => Err(invalid_link()),
        ReceiptOutcome::Unrecognised => Err(Problem {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            detail: "the request is not valid".into(),
            errors: vec![
                json!({"field": "response", "message": "not one of the incident's answers"}),
            ],
        }),
        _ => Ok((key, false, true)),
    }
}

/// The incident's own answers a member's page offers (key, label); empty:
/// the one Acknowledge button.
async fn answers(s: &ApiState, rec: &crate::ports::CascadeRecord) -> Vec<(String, String)> {
    if rec.cascade.key.route.is_escalation() {
        return Vec::new();
    }
    match s
        .deps
        .incidents
        .get_incident(&rec.cascade.key.incident)
        .await
    {
        Ok(Some(inc)) if !inc.trigger.responses.is_default() => inc
            .trigger
            .responses
            .options()
            .iter()
            .map(|o| (o.key.clone(), o.label.clone()))
            .collect(),
        _ => Vec::new(),
    }
}

/// A small page: no external assets, no scripts, never cached or framed,
/// and it sends no referrer (the token is in the URL).
fn page(status: StatusCode, title: &str, text: &str, form: Option<&str>) -> Response {
    page_with(status, title, text, form, &[])
}

/// [`page`] with a button per answer (`name="response"`), or the one
/// Acknowledge button when `answers` is empty.
fn page_with(
    status: StatusCode,
    title: &str,
    text: &str,
    form: Option<&str>,
    answers: &[(String, String)],
) -> Response {
    const STYLE: &str = "font-size:1.25rem;padding:.75rem 1.5rem;margin:.25rem";
    let form = form
        .map(|action| {
            let buttons = if answers.is_empty() {
                format!("<button type=\"submit\" style=\"{STYLE}\">Acknowledge</button>")
            } else {
                answers
                    .iter()
                    .map(|(k, l)| {
                        format!(
                            "<button type=\"submit\" name=\"response\" value=\"{}\" style=\"{STYLE}\">{}</button>",
                            html_escape(k),
                            html_escape(l)
                        )
                    })
                    .collect()
            };
            format!(
                "<form method=\"post\" action=\"{}\">{buttons}</form>",
                html_escape(action)
            )
        })
        .unwrap_or_default();
    let html = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width\"><title>{title}</title></head>\
         <body style=\"font-family:sans-serif;max-width:32rem;margin:4rem auto;padding:0 1rem\"><h1>{title}</h1><p>{text}</p>{form}</body></html>"
    );
    let mut r = (status, Html(html)).into_response();
    let h = r.headers_mut();
    for (name, value) in [
        (header::CACHE_CONTROL, "no-store"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'",
        ),
    ] {
        h.insert(name, HeaderValue::from_static(value));
    }
    r
}

fn invalid_link_page() -> Response {
    page(
        StatusCode::NOT_FOUND,
        "Link not valid",
        "This acknowledgement link is not valid or has expired.",
        None,
    )
}

fn not_recorded_page() -> Response {
    page(
        StatusCode::SERVICE_UNAVAILABLE,
        "Not recorded",
        "Your acknowledgement could not be recorded just now. Please try again in a minute.",
        None,
    )
}

/// `GET /v1/ack/{token}`: what the link is for, and a button. Changes nothing.
async fn ack_page(State(s): State<ApiState>, Path(token): Path<String>) -> Response {
    match ack_target(&s, &token).await {
        Ok((Ack::Open(rec), _)) => {
            let action = format!("/v1/ack/{token}");
            let answers = answers(&s, &rec).await;
            let incident = html_escape(rec.cascade.key.incident.as_str());
            if answers.is_empty() {
                page(
                    StatusCode::OK,
                    "Acknowledge",
                    &format!(
                        "Incident {incident}: press the button to confirm you have received this business continuity message."
                    ),
                    Some(&action),
                )
            } else {
                page_with(
                    StatusCode::OK,
                    "Your answer",
                    &format!("Incident {incident}: press the button that is your answer."),
                    Some(&action),
                    &answers,
                )
            }
        }
        Ok((Ack::Ended(rec), _)) => page(
            StatusCode::OK,
            "Nothing more needed",
            &format!(
                "Incident {} needs nothing more from you: it was acknowledged or has ended.",
                html_escape(rec.cascade.key.incident.as_str())
            ),
            None,
        ),
        Err(p) if p.status == StatusCode::NOT_FOUND => invalid_link_page(),
        Err(_) => not_recorded_page(),
    }
}

/// `POST /v1/ack/{token}`: the page's button. Records the acknowledgement.
async fn ack_form(
    State(s): State<ApiState>,
    Path(token): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    // The button pressed: `response=<key>` (none: Acknowledge).
    let response = body
        .ok()
        .and_then(|b| serde_urlencoded::from_bytes::<Vec<(String, String)>>(&b).ok())
        .and_then(|f| f.into_iter().find(|(k, _)| k == "response").map(|(_, v)| v));
    match answer(&s, &token, response.as_deref()).await {
        Ok((key, recorded, acknowledges)) => page(
            StatusCode::OK,
            if recorded && !acknowledges {
                "Answer recorded"
            } else if recorded {
                "Acknowledged"
            } else {
                "Already recorded"
            },
            &if recorded && response.is_some() {
                format!(
                    "Thank you. Your answer to incident {} has been recorded.",
                    html_escape(key.incident.as_str())
                )
            } else if recorded {
                format!(
                    "Thank you. Your acknowledgement of incident {} has been recorded.",
                    html_escape(key.incident.as_str())
                )
            } else {
                format!(
                    "Incident {} needs nothing more from you: it was already acknowledged or has ended.",
                    html_escape(key.incident.as_str())
                )
            },
            None,
        ),
        Err(p) if p.status == StatusCode::NOT_FOUND => invalid_link_page(),
        Err(p) if p.status == StatusCode::UNPROCESSABLE_ENTITY => page(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Not an answer",
            "That is not one of this incident's answers. Go back and press one of the buttons.",
            None,
        ),
        Err(_) => not_recorded_page(),
    }
}

fn mask(address: &str) -> String {
    if let Ok(p) = PhoneNumber::parse(address) {
        p.masked()
    } else if let Ok(e) = crate::domain::EmailAddress::parse(address) {
        e.masked()
    } else {
        crate::domain::PushEndpoint::parse(address)
            .map(|p| p.masked())
            .unwrap_or_else(|_| "•••".into())
    }
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

async fn ack_api(
    State(s): State<ApiState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Res {
    let body = body_of(body)?;
    let value = json_body(&headers, &body)?;
    let token = value
        .get("token")
        .and_then(Value::as_str)
        .ok_or_else(|| Problem {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            detail: "the request is not valid".into(),
            errors: vec![json!({"field": "token", "message": "missing, or not a string"})],
        })?;
    let response = match value.get("response") {
        None | Some(Value::Null) => None,
        Some(Value::String(r)) => Some(r.as_str()),
        Some(_) => {
            return Err(Problem {
                status: StatusCode::UNPROCESSABLE_ENTITY,
                detail: "the request is not valid".into(),
                errors: vec![
                    json!({"field": "response", "message": "expected the key of an answer, a string"}),
                ],
            });
        }
    };
    let (key, recorded, acknowledges) = answer(&s, token, response).await?;
    let mut out = json!({"incidentId": key.incident, "stakeholder": key.stakeholder, "acknowledged": acknowledges, "alreadyRecorded": !recorded});
    if let Some(r) = response {
        out["response"] = json!(r);
    }
    Ok(Json(out).into_response())
}

/// A webhook provider's name in its path: 1 to 64 of `a-z 0-9 - _`.
fn provider_name(p: &str) -> Result<&str, Problem> {
    let ok = !p.is_empty()
        && p.len() <= 64
        && p.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    if ok {
        Ok(p)
    } else {
        Err(Problem::new(StatusCode::NOT_FOUND, "no such webhook"))
    }
}

/// What a generic gateway's webhook body says: `{"messageId", "status"}`
/// (delivered, failed, undelivered, bounced or unreachable) for a delivery
/// receipt, else `{"from", "text"}` for an inbound SMS; `None` for an SMS
/// from a sender that is not an international number (no one Muster
/// texted).
pub fn webhook_event(provider: &str, v: &Value) -> Result<Option<ReceiptEvent>, Problem> {
    let field_error = |field: &str, message: &str| Problem {
        status: StatusCode::UNPROCESSABLE_ENTITY,
        detail: "the webhook is not valid".into(),
        errors: vec![json!({"field": field, "message": message})],
    };
    if let Some(id) = v.get("messageId").and_then(Value::as_str) {
        let status = match v.get("status").and_then(Value::as_str) {
            Some("delivered") => ReceiptStatus::Delivered,
            Some("failed" | "undelivered" | "bounced") => ReceiptStatus::Failed,
            Some("unreachable") => ReceiptStatus::Unreachable,
            _ => {
                return Err(field_error(
                    "status",
                    "expected delivered, failed, undelivered, bounced or unreachable",
                ));
            }
        };
        return Ok(Some(ReceiptEvent::Delivery {
            provider_message_id: format!("{provider}:{id}"),
            status,
        }));
    }
    match (
        v.get("from").and_then(Value::as_str),
        v.get("text").and_then(Value::as_str),
    ) {
        (Some(from), Some(text)) => {
            Ok(PhoneNumber::parse(from)
                .ok()
                .map(|from| ReceiptEvent::InboundSms {
                    from,
                    body: text.to_string(),
                }))
        }
        _ => Err(field_error(
            "messageId",
            "expected messageId and status, or from and text",
        )),
    }
}

/// `POST /v1/webhooks/{provider}`: see [`webhook_event`].
async fn webhook(
    State(s): State<ApiState>,
    caller: MaybeCaller,
    req: Req,
    Path(provider): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Res {
    let provider = provider_name(&provider)?.to_string();
    let body = body_of(body)?;
    authenticate(&s, &caller, &req, &body)?;
    let v = json_body(&req.headers, &body)?;
    let Some(event) = webhook_event(&provider, &v)? else {
        return Ok(Json(json!({"result": "UNKNOWN_REFERENCE"})).into_response());
    };
    let outcome = app::receipt(&s.deps, event).await?;
    let result = match outcome {
        ReceiptOutcome::Applied(k) => k.as_str().to_string(),
        ReceiptOutcome::OptedOut { .. } => "OPTED_OUT".into(),
        ReceiptOutcome::OptedIn { .. } => "OPTED_IN".into(),
        ReceiptOutcome::Unrecognised => "UNRECOGNISED".into(),
        ReceiptOutcome::Held => "HELD".into(),
        ReceiptOutcome::Unknown => "UNKNOWN_REFERENCE".into(),
    };
    Ok(Json(json!({"result": result})).into_response())
}
