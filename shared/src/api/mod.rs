//! HTTP APIs as axum routers, shared by API Gateway (through lambda_http)
//! and the local server.

pub mod board;
pub mod gateways;
pub mod integrations;
pub mod scim;
pub mod sign;
pub mod v1;

use axum::Router;
use axum::extract::{MatchedPath, Request};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};

/// Finishes a router for serving (by `muster serve` and the Lambda
/// functions): an unknown route is 404, a known one asked with another
/// method 405 with `Allow`, and every error is in its API's shape, as
/// problem+json (RFC 9457) or, under `/scim/v2`, a SCIM error, including
/// the ones axum answers before a handler runs (undecodable paths, bad
/// query strings, bodies over the limit). One log line per request names
/// the route (its template: never an id, token or address), the status
/// and the latency.
/// Whether a `Content-Type` value names JSON (`application/json` or any
/// `+json` type such as `application/scim+json`), parameters ignored.
pub(crate) fn is_json_media_type(content_type: &str) -> bool {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    essence == "application/json" || essence.ends_with("+json")
}

pub fn finish(router: Router) -> Router {
    router
        .fallback(|| async { StatusCode::NOT_FOUND })
        .layer(middleware::from_fn(shape_errors))
}

fn is_scim(path: &str) -> bool {
    path == scim::PREFIX || path.starts_with("/scim/v2/")
}

/// What an error without a body of its own says.
fn default_detail(status: StatusCode) -> &'static str {
    match status {
        StatusCode::NOT_FOUND => "no such resource",
        StatusCode::METHOD_NOT_ALLOWED => "this method is not allowed here; see the Allow header",
        StatusCode::PAYLOAD_TOO_LARGE => "the body is too large",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported media type",
        s if s.is_server_error() => "internal error",
        _ => "the request could not be read",
    }
}

async fn shape_errors(req: Request, next: Next) -> Response {
    let started = std::time::Instant::now();
    let method = req.method().clone();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_string());
    let scim = is_scim(req.uri().path());
    let resp = next.run(req).await;
    let status = resp.status();
    let resp = if status.is_client_error() || status.is_server_error() {
        reshape(resp, scim).await
    } else {
        resp
    };
    tracing::info!(
        method = %method,
        route = route.as_deref().unwrap_or("(none)"),
        status = status.as_u16(),
        latency_ms = started.elapsed().as_secs_f64() * 1000.0,
        "request"
    );
    resp
}

/// An error response in its API's shape; headers (`Allow`,
/// `WWW-Authenticate`) are kept. A client error's plain-text body (axum's
/// rejection text) becomes the detail; a server error says nothing more.
async fn reshape(resp: Response, scim: bool) -> Response {
    let status = resp.status();
    let ct = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_ascii_lowercase();
    let shaped = [
        "application/problem+json",
        "application/scim+json",
        "text/html",
    ]
    .iter()
    .any(|t| ct.starts_with(t));
    if shaped {
        return resp;
    }
    let (mut parts, body) = resp.into_parts();
    let text = if status.is_client_error() {
        axum::body::to_bytes(body, 2048)
            .await
            .ok()
            .and_then(|b| String::from_utf8(b.to_vec()).ok())
            .map(|t| t.trim().to_string())
            .filter(|t| !t.is_empty())
    } else {
        None
    };
    let detail = text.unwrap_or_else(|| default_detail(status).to_string());
    let fresh = if scim {
        let kind = (status == StatusCode::BAD_REQUEST).then_some("invalidSyntax");
        scim::ScimError::new(status, kind, detail).into_response()
    } else {
        v1::Problem::new(status, detail).into_response()
    };
    let (fresh_parts, fresh_body) = fresh.into_parts();
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.insert(
        header::CONTENT_TYPE,
        fresh_parts
            .headers
            .get(header::CONTENT_TYPE)
            .cloned()
            .unwrap_or(HeaderValue::from_static("application/json")),
    );
    Response::from_parts(parts, fresh_body)
}
