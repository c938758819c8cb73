//! The incident board as it runs on AWS: an operator signs in through the
//! Cognito hosted UI (authorization code with PKCE) and the page calls the
//! API with the access token, which it keeps in memory only.
//!
//! Cognito is a fake built from its documentation (Amazon Cognito Developer
//! Guide: "The authorize endpoint", "The token issuer endpoint", "The
//! logout endpoint"): `/oauth2/authorize` checks the client, the registered
//! redirect URI and an S256 challenge, and sends the browser to its sign-in
//! page; a good password redirects to the callback with a one-time `code`
//! and the `state`; `/oauth2/token` redeems the code only with the verifier
//! whose SHA-256 is the challenge, answers `id_token`, `access_token`,
//! `refresh_token`, `expires_in` and `token_type` with
//! `Access-Control-Allow-Origin: *`, and `invalid_grant` otherwise. In front
//! of the real v1 router, a stand-in for API Gateway's JWT authorizer lets
//! through only tokens the fake issued, with the route's scope, and passes
//! the caller's groups on as its roles (401 `{"message":"Unauthorized"}`
//! otherwise, as the gateway answers).

mod browser;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Query, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::get;
use browser::Browser;
use muster::adapters::memory::{
    Agenda, MemoryDirectory, MemoryStore, SeededIds, SystemClock, embedded,
};
use muster::api::board::{BoardAuth, BoardConfig, CognitoSignIn};
use muster::api::finish;
use muster::api::sign::AckTokens;
use muster::api::v1::{self, ApiState, Caller};
use muster::ports::{Accepted, ChannelSender, OutboundMessage, SendError, Senders};
use muster::secret::Secret;
use serde_json::{Value, json};
use sha2::Digest;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

const CLIENT_ID: &str = "boardclient4lh2";

#[derive(Clone, Debug)]
struct Grant {
    user: String,
    redirect_uri: String,
    challenge: String,
    scopes: Vec<String>,
}

#[derive(Default)]
struct Idp {
    redirect_uri: String,
    /// Unredeemed codes.
    codes: HashMap<String, Grant>,
    /// Issued access tokens: user, groups, scopes.
    tokens: HashMap<String, (String, Vec<String>, Vec<String>)>,
    refresh: HashMap<String, Grant>,
    /// Every token request's outcome, for the test to read.
    redeemed: Vec<Result<String, String>>,
    /// The authorize requests' query strings.
    authorizations: Vec<HashMap<String, String>>,
    next: u64,
}

type Shared = Arc<Mutex<Idp>>;

fn lock(s: &Shared) -> std::sync::MutexGuard<'_, Idp> {
    s.lock().unwrap_or_else(|p| p.into_inner())
}

fn groups_of(user: &str) -> Option<Vec<String>> {
    match user {
        "operator" => Some(vec![]),
        "auditor" => Some(vec!["ComplianceOfficer".into()]),
        _ => None,
    }
}

const PASSWORD: &str = "Correct-Horse-Battery-9";

fn form(body: &[u8]) -> HashMap<String, String> {
    form_urlencoded::parse(body).into_owned().collect()
}

fn b64url(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn oauth_error(code: &str) -> Response {
    let mut r = (StatusCode::BAD_REQUEST, axum::Json(json!({"error": code}))).into_response();
    r.headers_mut().insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    r
}

async fn authorize(State(s): State<Shared>, Query(q): Query<HashMap<String, String>>) -> Response {
    lock(&s).authorizations.push(q.clone());
    let registered = lock(&s).redirect_uri.clone();
    let ok = q.get("response_type").map(String::as_str) == Some("code")
        && q.get("client_id").map(String::as_str) == Some(CLIENT_ID)
        && q.get("redirect_uri") == Some(&registered)
        // Cognito's PKCE is S256 only.
        && q.get("code_challenge_method").map(String::as_str) == Some("S256")
        && q.get("code_challenge").is_some_and(|c| c.len() == 43);
    if !ok {
        return (StatusCode::BAD_REQUEST, "invalid_request").into_response();
    }
    let query: String = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(q.iter())
        .finish();
    Redirect::to(&format!("/login?{query}")).into_response()
}

async fn login_page(Query(q): Query<HashMap<String, String>>) -> Html<String> {
    let hidden: String = q
        .iter()
        .map(|(k, v)| format!("<input type=\"hidden\" name=\"{k}\" value=\"{v}\">"))
        .collect();
    Html(format!(
        "<!doctype html><title>Sign in</title><form method=\"post\" action=\"/login\">{hidden}\
         <input id=\"username\" name=\"username\"><input id=\"password\" name=\"password\" type=\"password\">\
         <button id=\"signin\" type=\"submit\">Sign in</button></form>"
    ))
}

async fn login(State(s): State<Shared>, body: Bytes) -> Response {
    let f = form(&body);
    let user = f.get("username").cloned().unwrap_or_default();
    if groups_of(&user).is_none() || f.get("password").map(String::as_str) != Some(PASSWORD) {
        return (StatusCode::OK, Html("Incorrect username or password.")).into_response();
    }
    let mut g = lock(&s);
    g.next += 1;
    let code = format!("code-{}-{}", g.next, b64url(&g.next.to_be_bytes()));
    let grant = Grant {
        user,
        redirect_uri: f.get("redirect_uri").cloned().unwrap_or_default(),
        challenge: f.get("code_challenge").cloned().unwrap_or_default(),
        scopes: f
            .get("scope")
            .map(|s| s.split(' ').map(str::to_string).collect())
            .unwrap_or_default(),
    };
    g.codes.insert(code.clone(), grant.clone());
    let state = f.get("state").cloned().unwrap_or_default();
    let back = format!(
        "{}?{}",
        grant.redirect_uri,
        form_urlencoded::Serializer::new(String::new())
            .append_pair("code", &code)
            .append_pair("state", &state)
            .finish()
    );
    Redirect::to(&back).into_response()
}

fn issue(g: &mut Idp, grant: &Grant) -> Value {
    g.next += 1;
    let access = format!("access-{}", g.next);
    let refresh = format!("refresh-{}", g.next);
    let groups = groups_of(&grant.user).unwrap_or_default();
    g.tokens.insert(
        access.clone(),
        (grant.user.clone(), groups, grant.scopes.clone()),
    );
    g.refresh.insert(refresh.clone(), grant.clone());
    json!({
        "id_token": format!("id-{}", g.next),
        "access_token": access,
        "refresh_token": refresh,
        "expires_in": 3600,
        "token_type": "Bearer"
    })
}

async fn token(State(s): State<Shared>, body: Bytes) -> Response {
    let f = form(&body);
    let mut g = lock(&s);
    if f.get("client_id").map(String::as_str) != Some(CLIENT_ID) {
        g.redeemed.push(Err("invalid_client".into()));
        return oauth_error("invalid_client");
    }
    let answer = match f.get("grant_type").map(String::as_str) {
        Some("authorization_code") => {
            // One use only, whatever the outcome.
            let grant = f.get("code").and_then(|c| g.codes.remove(c));
            let verifier = f.get("code_verifier").cloned().unwrap_or_default();
            match grant {
                Some(grant)
                    if Some(&grant.redirect_uri) == f.get("redirect_uri")
                        && b64url(&sha2::Sha256::digest(verifier.as_bytes()))
                            == grant.challenge =>
                {
                    Ok(issue(&mut g, &grant))
                }
                _ => Err("invalid_grant"),
            }
        }
        Some("refresh_token") => match f
            .get("refresh_token")
            .and_then(|r| g.refresh.get(r))
            .cloned()
        {
            Some(grant) => Ok(issue(&mut g, &grant)),
            None => Err("invalid_grant"),
        },
        _ => Err("unsupported_grant_type"),
    };
    match answer {
        Ok(v) => {
            g.redeemed
                .push(Ok(v["access_token"].as_str().unwrap_or_default().into()));
            let mut r = axum::Json(v).into_response();
            r.headers_mut().insert(
                header::ACCESS_CONTROL_ALLOW_ORIGIN,
                HeaderValue::from_static("*"),
            );
            r
        }
        Err(e) => {
            g.redeemed.push(Err(e.into()));
            oauth_error(e)
        }
    }
}

async fn logout(Query(q): Query<HashMap<String, String>>) -> Response {
    Redirect::to(q.get("logout_uri").map(String::as_str).unwrap_or("/")).into_response()
}

/// API Gateway's JWT authorizer, as the template configures it: `/v1`
/// routes want a token this user pool issued with the route's scope.
async fn authorizer(State(s): State<Shared>, mut req: Request, next: Next) -> Response {
    let path = req.uri().path().to_string();
    if !path.starts_with("/v1/") {
        return next.run(req).await;
    }
    let write = req.method() == axum::http::Method::POST;
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_string);
    let known = presented.and_then(|t| lock(&s).tokens.get(&t).cloned());
    let needed = if write {
        "muster/incidents.write"
    } else {
        "muster/incidents.read"
    };
    match known {
        Some((user, groups, scopes)) if scopes.iter().any(|s| s == needed) => {
            let mut roles = groups;
            roles.extend(
                scopes
                    .iter()
                    .filter_map(|s| s.rsplit('/').next().map(str::to_string)),
            );
            req.extensions_mut().insert(Caller {
                subject: user,
                roles,
            });
            next.run(req).await
        }
        _ => (
            StatusCode::UNAUTHORIZED,
            axum::Json(json!({"message": "Unauthorized"})),
        )
            .into_response(),
    }
}

struct Quiet;

#[async_trait::async_trait]
impl ChannelSender for Quiet {
    fn endpoint(&self) -> &str {
        "quiet"
    }
    async fn send(&self, _: &OutboundMessage) -> Result<Accepted, SendError> {
        Ok(Accepted {
            provider_message_id: "quiet-1".into(),
        })
    }
}

async fn listen() -> (tokio::net::TcpListener, String) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let base = format!(
        "http://{}",
        l.local_addr().unwrap_or_else(|e| panic!("{e}"))
    );
    (l, base)
}

/// The fake user pool and the API behind its authorizer, on loopback (on
/// their own thread until the test ends), with one incident declared.
fn deployment() -> (Shared, String) {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap_or_else(|e| panic!("{e}"));
        rt.block_on(serve_deployment(tx));
    });
    rx.recv_timeout(std::time::Duration::from_secs(20))
        .unwrap_or_else(|e| panic!("the deployment did not start: {e}"))
}

async fn serve_deployment(ready: std::sync::mpsc::Sender<(Shared, String)>) {
    let idp: Shared = Arc::default();
    let ((idp_listener, idp_base), (api_listener, api_base)) = (listen().await, listen().await);
    lock(&idp).redirect_uri = format!("{api_base}/board");

    let text = include_str!("../../examples/directory/ops-leadership.yaml");
    let dir = muster::directory::parse_file(std::path::Path::new("ops-leadership.yaml"), text)
        .unwrap_or_else(|e| panic!("{e:?}"));
    let clock: Arc<dyn muster::ports::Clock> = Arc::new(SystemClock);
    let agenda: Arc<Agenda<()>> = Agenda::new(clock.clone());
    let q = || -> Arc<dyn ChannelSender> { Arc::new(Quiet) };
    let deps = embedded(
        Arc::new(muster::policy::Policy::default()),
        &agenda,
        Arc::new(MemoryStore::new()),
        Arc::new(MemoryDirectory::new(dir.groups, dir.stakeholders)),
        Senders {
            voice: q(),
            sms: q(),
            email: q(),
            push: q(),
        },
        clock,
        Arc::new(SeededIds::new(7)),
    );
    let trigger = muster::domain::Trigger::from_json(&json!({
        "incidentId": "INC-2026-1201",
        "severity": "P1",
        "stakeholderGroupId": "ops-leadership",
        "messageTemplate": "Data centre power lost. Acknowledge by pressing 1.",
        "timestamp": "2026-12-01T09:00:00Z"
    }))
    .unwrap_or_else(|e| panic!("{e:?}"));
    muster::app::trigger(&deps, trigger)
        .await
        .unwrap_or_else(|e| panic!("{e}"));

    let sign_in = CognitoSignIn {
        domain: idp_base.clone(),
        client_id: CLIENT_ID.into(),
        redirect_uri: format!("{api_base}/board"),
        scopes: vec![
            "openid".into(),
            "muster/incidents.read".into(),
            "muster/incidents.write".into(),
        ],
    };
    let api = v1::router(ApiState {
        deps,
        // As on AWS: a key nobody has, so only the authorizer's callers
        // get in.
        secret: Some(Secret::new("a-key-no-caller-holds-0123456789")),
        tokens: AckTokens::new(Secret::new("ack-key-for-the-board-test"), 86_400_000),
        integrations: Default::default(),
    })
    .merge(muster::api::board::router(BoardConfig {
        auth: BoardAuth::Cognito(sign_in),
        local_phones: false,
    }))
    .layer(middleware::from_fn_with_state(idp.clone(), authorizer));
    let api = finish(api);
    let pool = Router::new()
        .route("/oauth2/authorize", get(authorize))
        .route("/login", get(login_page).post(login))
        .route("/oauth2/token", axum::routing::post(token))
        .route("/logout", get(logout))
        .with_state(idp.clone());
    let _ = ready.send((idp.clone(), api_base));
    let (a, b) = tokio::join!(
        axum::serve(idp_listener, pool).into_future(),
        axum::serve(api_listener, api).into_future()
    );
    a.and(b).unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn an_operator_signs_in_through_the_hosted_ui_and_the_board_keeps_the_token_in_memory() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    let (idp, base) = deployment();
    // Without a token the API refuses, as the gateway does.
    let refused = rt
        .block_on(async { reqwest::get(format!("{base}/v1/incidents")).await })
        .map(|r| r.status().as_u16())
        .ok();
    assert_eq!(refused, Some(401));

    let mut b = Browser::open(&format!("{base}/board#/incidents/INC-2026-1201"));
    b.until("!!document.getElementById('sign-in')");
    b.screenshot("10-sign-in");
    b.eval("document.getElementById('sign-in').click()");
    // The hosted UI's page, on the user pool's origin.
    b.until("!!document.getElementById('username')");
    {
        let g = lock(&idp);
        let asked = g.authorizations.last().cloned().unwrap_or_default();
        assert_eq!(
            asked.get("code_challenge_method").map(String::as_str),
            Some("S256")
        );
        assert_eq!(
            asked.get("scope").map(String::as_str),
            Some("openid muster/incidents.read muster/incidents.write")
        );
        assert!(
            asked.get("state").is_some_and(|s| s.len() >= 16),
            "{asked:?}"
        );
    }
    b.eval(&format!(
        "document.getElementById('username').value = 'operator'; document.getElementById('password').value = '{PASSWORD}'; document.getElementById('signin').click()"
    ));
    // Back on the board, signed in, on the page the operator asked for.
    b.until("!!document.querySelector('h1 .status-open')");
    b.screenshot("11-signed-in");
    assert_eq!(
        b.eval("location.search + '|' + location.hash"),
        json!("|#/incidents/INC-2026-1201"),
        "the code is gone from the address bar; the page is the one asked for"
    );
    assert_eq!(
        b.eval("sessionStorage.length + localStorage.length + document.cookie.length"),
        json!(0),
        "nothing of the sign-in stays in storage: the token lives in memory"
    );
    let redeemed = lock(&idp).redeemed.clone();
    assert_eq!(redeemed.len(), 1, "{redeemed:?}");
    assert!(
        redeemed[0].is_ok(),
        "the verifier matched the challenge: {redeemed:?}"
    );
    // The board's own reads carried the token; an audit download is
    // refused to an operator without an audit group, and the page says so.
    b.eval("document.getElementById('download').click()");
    b.until("document.getElementById('action-error').textContent.includes('role')");

    // A reload forgets the token: sign in again.
    b.eval("location.reload()");
    b.until("!!document.getElementById('sign-in')");
}
