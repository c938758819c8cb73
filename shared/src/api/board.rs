//! The incident board: one HTML page, its script and its style, served by
//! the same router as the API (`/` in `muster serve`). No external assets,
//! so it works offline; the script only calls the v1 API of its own origin
//! (docs/board.md).

use axum::Router;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

const PAGE: &str = include_str!("board/index.html");
const SCRIPT: &str = include_str!("board/board.js");
const STYLE: &str = include_str!("board/board.css");

/// Only this origin's script, style and API; never framed; no referrer.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' blob:; form-action 'none'; frame-ancestors 'none'; base-uri 'none'";

fn asset(body: &'static str, content_type: &'static str) -> Response {
    let mut r = body.into_response();
    let h = r.headers_mut();
    for (name, value) in [
        (header::CONTENT_TYPE, content_type),
        (header::CACHE_CONTROL, "no-cache"),
        (header::CONTENT_SECURITY_POLICY, CSP),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
    ] {
        h.insert(name, HeaderValue::from_static(value));
    }
    r
}

/// `GET /` (also `/board`), `/board.js`, `/board.css`.
pub fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    let page = || async { asset(PAGE, "text/html; charset=utf-8") };
    Router::new()
        .route("/", get(page))
        .route("/board", get(page))
        .route(
            "/board.js",
            get(|| async { asset(SCRIPT, "text/javascript; charset=utf-8") }),
        )
        .route(
            "/board.css",
            get(|| async { asset(STYLE, "text/css; charset=utf-8") }),
        )
}
