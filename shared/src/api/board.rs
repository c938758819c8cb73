//! The incident board: one HTML page, its script and its style, served by
//! the same router as the API (`/` in `muster serve`, `/board` on AWS). No
//! external assets, so it works offline; the script only calls the v1 API
//! of its own origin, and, on AWS, the Cognito user pool's token endpoint
//! (docs/board.md).

use axum::Router;
use axum::http::{HeaderValue, header};
use axum::response::Response;
use axum::routing::get;
use serde::Serialize;

const PAGE: &str = include_str!("board/index.html");
const SCRIPT: &str = include_str!("board/board.js");
const STYLE: &str = include_str!("board/board.css");

/// How operators sign in to the board on AWS: the Cognito hosted UI, the
/// authorization code grant with PKCE (S256) for a public app client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CognitoSignIn {
    /// The user pool domain's origin, `https://<prefix>.auth.<region>.amazoncognito.com`
    /// (or a custom domain): `/oauth2/authorize`, `/oauth2/token` and
    /// `/logout` are under it.
    pub domain: String,
    pub client_id: String,
    /// The board's own URL, registered as the app client's callback and
    /// sign-out URL.
    pub redirect_uri: String,
    pub scopes: Vec<String>,
}

/// How the page authenticates its API calls.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum BoardAuth {
    /// No credentials (a local server without a shared secret).
    #[default]
    Open,
    /// HMAC signatures with a shared secret typed into the page.
    Signed,
    /// Bearer tokens from the Cognito hosted UI.
    Cognito(CognitoSignIn),
    /// On AWS with no board app client deployed: the page says so.
    Unconfigured,
}

/// What the page is told at `/board/config.json`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BoardConfig {
    pub auth: BoardAuth,
    /// The server simulates phones (`muster serve`: `/local/messages`).
    pub local_phones: bool,
}

impl BoardConfig {
    fn json(&self) -> serde_json::Value {
        let (auth, cognito) = match &self.auth {
            BoardAuth::Open => ("open", None),
            BoardAuth::Signed => ("signed", None),
            BoardAuth::Cognito(c) => ("cognito", Some(c)),
            BoardAuth::Unconfigured => ("unconfigured", None),
        };
        serde_json::json!({"auth": auth, "cognito": cognito, "localPhones": self.local_phones})
    }

    /// Only this origin's script, style and API (and the sign-in domain's
    /// token endpoint); never framed; no referrer.
    fn csp(&self) -> String {
        let token = match &self.auth {
            BoardAuth::Cognito(c) => format!(" {}", c.domain.trim_end_matches('/')),
            _ => String::new(),
        };
        format!(
            "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'{token}; img-src 'self' blob:; form-action 'none'; frame-ancestors 'none'; base-uri 'none'"
        )
    }
}

fn secured(body: axum::body::Body, content_type: &'static str, csp: &HeaderValue) -> Response {
    let mut r = Response::new(body);
    let h = r.headers_mut();
    for (name, value) in [
        (header::CONTENT_TYPE, content_type),
        (header::CACHE_CONTROL, "no-cache"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
    ] {
        h.insert(name, HeaderValue::from_static(value));
    }
    h.insert(header::CONTENT_SECURITY_POLICY, csp.clone());
    r
}

/// `GET /` (also `/board`), `/board.js`, `/board.css` and
/// `/board/config.json`.
pub fn router<S: Clone + Send + Sync + 'static>(config: BoardConfig) -> Router<S> {
    let csp = HeaderValue::from_str(&config.csp()).unwrap_or_else(|_| {
        // A domain that is not a header value (validated where it is
        // configured): nothing but this origin.
        HeaderValue::from_static("default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'")
    });
    let told = config.json().to_string();
    let serve = move |text: String, ct: &'static str| {
        let csp = csp.clone();
        move || {
            let (text, csp) = (text.clone(), csp.clone());
            async move { secured(text.into(), ct, &csp) }
        }
    };
    let page = serve(PAGE.to_string(), "text/html; charset=utf-8");
    Router::new()
        .route("/", get(page.clone()))
        .route("/board", get(page))
        .route(
            "/board.js",
            get(serve(SCRIPT.to_string(), "text/javascript; charset=utf-8")),
        )
        .route(
            "/board.css",
            get(serve(STYLE.to_string(), "text/css; charset=utf-8")),
        )
        .route("/board/config.json", get(serve(told, "application/json")))
}
