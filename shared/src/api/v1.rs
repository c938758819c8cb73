//! The v1 HTTP API, served by API Gateway (through lambda_http) and by
//! `muster serve`. Errors are RFC 9457 problem+json; 5xx bodies say nothing
//! internal (the cause goes to the log, without contact details).
//!
//! - `POST /v1/incidents`: a trigger in any of its three body shapes; 202
//!   with the incident and a status link, before the group is expanded. A
//!   duplicate replays the first answer with `Idempotent-Replayed: true`; the
//!   same id with another payload is 409.
//! - `GET /v1/incidents/{id}`: counts by state and every stakeholder's state,
//!   contacts masked, needs-review flags.
//! - `POST /v1/incidents/{id}/close`: cancels every open cascade.
//! - `GET /v1/incidents/{id}/audit`: the audit trail, for the
//!   ComplianceOfficer and BCPAdministrator roles only.
//! - `GET /v1/ack/{token}` (a small HTML page) and `POST /v1/ack`
//!   (`{"token": ...}`): signed one-click acknowledgement.
//! - `POST /v1/webhooks/{provider}`: signed delivery receipts and inbound
//!   SMS from a generic gateway.
//!
//! A request that API Gateway's JWT authorizer let through carries a
//! [`Caller`] extension (set by the Lambda adapter from the authorizer's
//! claims and scopes, never from anything the client sends): it is
//! authenticated, and its roles are the caller's. Otherwise, with a shared
//! secret configured, every route but the ack links requires an HMAC
//! signature (see `sign`). Without one (local development only) the API is
//! open and the `X-Muster-Roles` header states the caller's roles.

use super::Secret;
use super::sign::{AckTokens, verify_request};
use crate::app::{self, ReceiptEvent, ReceiptOutcome};
use crate::domain::{IncidentId, PhoneNumber, Trigger};
use crate::engine::ReceiptStatus;
use crate::ports::Deps;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Extension, Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
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
}

/// Every route, as (method, path): the OpenAPI document must list exactly these.
pub const ROUTES: [(&str, &str); 7] = [
    ("post", "/v1/incidents"),
    ("get", "/v1/incidents/{id}"),
    ("post", "/v1/incidents/{id}/close"),
    ("get", "/v1/incidents/{id}/audit"),
    ("get", "/v1/ack/{token}"),
    ("post", "/v1/ack"),
    ("post", "/v1/webhooks/{provider}"),
];

pub fn router(state: ApiState) -> Router {
    Router::new()
        .route("/v1/incidents", post(trigger))
        .route("/v1/incidents/{id}", get(status))
        .route("/v1/incidents/{id}/close", post(close))
        .route("/v1/incidents/{id}/audit", get(audit))
        .route("/v1/ack/{token}", get(ack_link))
        .route("/v1/ack", post(ack_api))
        .route("/v1/webhooks/{provider}", post(webhook))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(state)
}

/// An RFC 9457 problem.
#[derive(Debug)]
pub struct Problem {
    status: StatusCode,
    detail: String,
    errors: Vec<Value>,
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

fn body_of(body: Result<Bytes, BytesRejection>) -> Result<Bytes, Problem> {
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

/// Passes a caller the gateway authenticated; otherwise checks the
/// signature when a secret is configured.
fn authenticate(
    s: &ApiState,
    caller: &MaybeCaller,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(), Problem> {
    if caller.is_some() {
        return Ok(());
    }
    let Some(secret) = &s.secret else {
        return Ok(());
    };
    let h = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    verify_request(
        secret,
        h("x-muster-timestamp"),
        h("x-muster-signature"),
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
    let essence = ct
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    if essence != "application/json" && !essence.ends_with("+json") {
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
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Res {
    let body = body_of(body)?;
    authenticate(&s, &caller, &headers, &body)?;
    let value = json_body(&headers, &body)?;
    let trigger = Trigger::from_json(&value).map_err(|errors| Problem {
        status: StatusCode::UNPROCESSABLE_ENTITY,
        detail: "the trigger is not valid".into(),
        errors: errors
            .iter()
            .map(|e| json!({"field": e.field, "message": e.message}))
            .collect(),
    })?;
    let out = app::trigger(&s.deps, trigger).await?;
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
    if !out.warnings.is_empty() {
        answer["warnings"] = json!(out.warnings);
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

async fn status(
    State(s): State<ApiState>,
    caller: MaybeCaller,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Res {
    authenticate(&s, &caller, &headers, b"")?;
    let view = app::status(&s.deps, &incident_id(&id)?).await?;
    Ok(Json(view).into_response())
}

async fn close(
    State(s): State<ApiState>,
    caller: MaybeCaller,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Res {
    let body = body_of(body)?;
    authenticate(&s, &caller, &headers, &body)?;
    let id = incident_id(&id)?;
    let cancelled = app::close(&s.deps, &id).await?;
    Ok(Json(json!({"incidentId": id, "status": "closed", "cancelled": cancelled})).into_response())
}

async fn audit(
    State(s): State<ApiState>,
    caller: MaybeCaller,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Res {
    authenticate(&s, &caller, &headers, b"")?;
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
    s.deps
        .incidents
        .get_incident(&id)
        .await?
        .ok_or_else(|| Problem::new(StatusCode::NOT_FOUND, "incident not found"))?;
    let entries = s.deps.cascades.audit_trail(&id).await?;
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
    Ok(Json(json!({"incidentId": id, "entries": out})).into_response())
}

async fn acknowledge(
    s: &ApiState,
    token: &str,
) -> Result<(crate::engine::CascadeKey, ReceiptOutcome), Problem> {
    let key = s.tokens.check(token, s.deps.clock.now()).ok_or_else(|| {
        Problem::new(
            StatusCode::NOT_FOUND,
            "this acknowledgement link is not valid or has expired",
        )
    })?;
    let channel = crate::domain::Channel::Email;
    let outcome = app::receipt(
        &s.deps,
        ReceiptEvent::Ack {
            key: key.clone(),
            channel,
            attempt: None,
        },
    )
    .await?;
    Ok((key, outcome))
}

async fn ack_link(State(s): State<ApiState>, Path(token): Path<String>) -> Response {
    let page = |status: StatusCode, title: &str, text: String| {
        let html = format!(
            "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width\"><title>{title}</title></head>\
             <body style=\"font-family:sans-serif;max-width:32rem;margin:4rem auto;padding:0 1rem\"><h1>{title}</h1><p>{text}</p></body></html>"
        );
        (status, Html(html)).into_response()
    };
    match acknowledge(&s, &token).await {
        Ok((key, ReceiptOutcome::Applied(crate::engine::AuditKind::Acknowledged))) => {
            page(StatusCode::OK, "Acknowledged", format!("Thank you. Your acknowledgement of incident {} has been recorded.", html_escape(key.incident.as_str())))
        }
        Ok((key, _)) => page(StatusCode::OK, "Already recorded", format!("Incident {} needs nothing more from you: it was already acknowledged or has ended.", html_escape(key.incident.as_str()))),
        Err(p) if p.status == StatusCode::NOT_FOUND => page(StatusCode::NOT_FOUND, "Link not valid", "This acknowledgement link is not valid or has expired.".into()),
        Err(_) => page(StatusCode::SERVICE_UNAVAILABLE, "Not recorded", "Your acknowledgement could not be recorded just now. Please try the link again in a minute.".into()),
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
            errors: vec![json!({"field": "token", "message": "missing"})],
        })?;
    let (key, outcome) = acknowledge(&s, token).await?;
    let recorded = matches!(
        outcome,
        ReceiptOutcome::Applied(crate::engine::AuditKind::Acknowledged)
    );
    Ok(Json(json!({"incidentId": key.incident, "stakeholder": key.stakeholder, "acknowledged": true, "alreadyRecorded": !recorded})).into_response())
}

/// Generic gateway webhook: `{"messageId", "status": delivered|failed|unreachable}`
/// for a delivery receipt, or `{"from", "text"}` for an inbound SMS.
async fn webhook(
    State(s): State<ApiState>,
    caller: MaybeCaller,
    headers: HeaderMap,
    Path(provider): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Res {
    let body = body_of(body)?;
    authenticate(&s, &caller, &headers, &body)?;
    let v = json_body(&headers, &body)?;
    let field_error = |field: &str, message: &str| Problem {
        status: StatusCode::UNPROCESSABLE_ENTITY,
        detail: "the webhook is not valid".into(),
        errors: vec![json!({"field": field, "message": message})],
    };
    let event = if let Some(id) = v.get("messageId").and_then(Value::as_str) {
        let status = match v
            .get("status")
            .and_then(Value::as_str)
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            Some("delivered") => ReceiptStatus::Delivered,
            Some("failed" | "undelivered" | "bounced") => ReceiptStatus::Failed,
            Some("unreachable") => ReceiptStatus::Unreachable,
            _ => {
                return Err(field_error(
                    "status",
                    "expected delivered, failed or unreachable",
                ));
            }
        };
        ReceiptEvent::Delivery {
            provider_message_id: format!("{provider}:{id}"),
            status,
        }
    } else if let (Some(from), Some(text)) = (
        v.get("from").and_then(Value::as_str),
        v.get("text").and_then(Value::as_str),
    ) {
        let from = PhoneNumber::parse(from).map_err(|e| field_error("from", &e.message))?;
        ReceiptEvent::InboundSms {
            from,
            body: text.to_string(),
        }
    } else {
        return Err(field_error(
            "messageId",
            "expected messageId and status, or from and text",
        ));
    };
    let outcome = app::receipt(&s.deps, event).await?;
    let result = match outcome {
        ReceiptOutcome::Applied(k) => k.as_str().to_string(),
        ReceiptOutcome::OptedOut { .. } => "OPTED_OUT".into(),
        ReceiptOutcome::OptedIn { .. } => "OPTED_IN".into(),
        ReceiptOutcome::Unrecognised => "UNRECOGNISED".into(),
        ReceiptOutcome::Unknown => "UNKNOWN_REFERENCE".into(),
    };
    Ok(Json(json!({"result": result})).into_response())
}
