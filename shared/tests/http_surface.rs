//! The HTTP surface as an attacker tries it (docs/api.md): each test
//! reproduces one finding of the review of `muster serve` and states the
//! rule that now holds. The router is the finished one `muster serve` and
//! the Lambda functions serve.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use futures::executor::block_on;
use http_body_util::BodyExt;
use muster::adapters::memory::{
    Agenda, Item, MemoryDirectory, MemoryStore, SeededIds, VirtualClock, embedded,
};
use muster::api::sign::{AckTokens, SignedRequest, sign_request};
use muster::api::v1;
use muster::app;
use muster::domain::*;
use muster::engine::{CascadeKey, CascadeStatus, Route};
use muster::policy::Policy;
use muster::ports::*;
use muster::secret::Secret;
use serde_json::{Value, json};
use std::sync::Arc;
use tower::ServiceExt;

const SECRET: &str = "http-surface-secret";

struct Quiet;

#[async_trait::async_trait]
impl ChannelSender for Quiet {
    fn endpoint(&self) -> &str {
        "quiet"
    }
    async fn send(&self, _: &OutboundMessage) -> Result<Accepted, SendError> {
        Ok(Accepted {
            provider_message_id: "q-1".into(),
        })
    }
}

struct Env {
    deps: Deps,
    clock: Arc<VirtualClock>,
    agenda: Arc<Agenda<()>>,
    tokens: AckTokens,
    app: axum::Router,
}

fn person(id: &str, n: u32) -> Stakeholder {
    Stakeholder::new(
        StakeholderId::parse(id).unwrap_or_else(|e| panic!("{e}")),
        id,
        Tier::TWO,
        ContactMethods {
            email: EmailAddress::parse(&format!("{id}@example.com")).ok(),
            phone: PhoneNumber::parse(&format!("+1212555{:04}", 100 + n)).ok(),
            ..Default::default()
        },
    )
}

fn env() -> Env {
    let people = vec![person("alice", 1), person("boss", 2)];
    let members = vec![people[0].id.clone()];
    env_with(people, members)
}

/// `n` members `p0`.. of group `ops`, tiers 1, 2, 3 in turn, and `boss`.
fn env_of(n: u32) -> Env {
    let mut people: Vec<Stakeholder> = (0..n)
        .map(|i| {
            let mut p = person(&format!("p{i}"), i);
            p.tier = Tier::ALL[(i % 3) as usize];
            p
        })
        .collect();
    let members = people.iter().map(|p| p.id.clone()).collect();
    people.push(person("boss", 9_000));
    env_with(people, members)
}

fn env_with(people: Vec<Stakeholder>, members: Vec<StakeholderId>) -> Env {
    let q = || -> Arc<dyn ChannelSender> { Arc::new(Quiet) };
    let senders = Senders {
        voice: q(),
        sms: q(),
        email: q(),
        push: q(),
    };
    env_sending(people, members, senders)
}

fn env_sending(people: Vec<Stakeholder>, members: Vec<StakeholderId>, senders: Senders) -> Env {
    let clock = VirtualClock::new(Ts::from_secs(1_700_000_000));
    let agenda: Arc<Agenda<()>> = Agenda::new(clock.clone());
    let group = Group {
        id: GroupId::parse("ops").unwrap_or_else(|e| panic!("{e}")),
        name: "Ops".into(),
        members,
        on_call_manager: StakeholderId::parse("boss").ok(),
        escalation_channels: vec![],
        idp: None,
    };
    let deps = embedded(
        Arc::new(Policy::default()),
        &agenda,
        Arc::new(MemoryStore::new()),
        Arc::new(MemoryDirectory::new(vec![group], people)),
        senders,
        clock.clone(),
        Arc::new(SeededIds::new(1)),
    );
    let tokens = AckTokens::new(Secret::new("ack-key"), 86_400_000);
    let app = muster::api::finish(v1::router(v1::ApiState {
        deps: deps.clone(),
        secret: Some(Secret::new(SECRET)),
        tokens: tokens.clone(),
        integrations: Default::default(),
    }));
    Env {
        deps,
        clock,
        agenda,
        tokens,
        app,
    }
}

struct Answer {
    status: StatusCode,
    content_type: String,
    headers: axum::http::HeaderMap,
    text: String,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or(Value::Null)
    }
}

impl Env {
    fn now_secs(&self) -> u64 {
        self.clock.now().0 / 1000
    }
    async fn send(&self, req: Request<Body>) -> Answer {
        let resp = self
            .app
            .clone()
            .oneshot(req)
            .await
            .unwrap_or_else(|e| match e {});
        let status = resp.status();
        let headers = resp.headers().clone();
        let content_type = headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let bytes = resp
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        Answer {
            status,
            content_type,
            headers,
            text: String::from_utf8_lossy(&bytes).into_owned(),
        }
    }
    /// A request signed for exactly what it is.
    fn signed(&self, method: &str, uri: &str, body: &str) -> Request<Body> {
        let (path, query) = match uri.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (uri, None),
        };
        let ts = self.now_secs();
        let sig = sign_request(
            &Secret::new(SECRET),
            &SignedRequest {
                method,
                path,
                query,
                timestamp: ts,
                body: body.as_bytes(),
            },
        );
        self.request(method, uri, body, Some((ts, sig)))
    }
    fn request(
        &self,
        method: &str,
        uri: &str,
        body: &str,
        sig: Option<(u64, String)>,
    ) -> Request<Body> {
        let mut b = Request::builder()
            .method(method)
            .uri(uri)
            .header("content-type", "application/json");
        if let Some((ts, sig)) = sig {
            b = b
                .header("x-muster-timestamp", ts.to_string())
                .header("x-muster-signature", sig);
        }
        b.body(Body::from(body.to_string()))
            .unwrap_or_else(|e| panic!("{e}"))
    }
    async fn trigger(&self, fields: Value) -> Answer {
        self.send(self.signed(
            "POST",
            "/v1/incidents",
            &json!({ "trigger": fields }).to_string(),
        ))
        .await
    }
    /// Runs the queued work (the group's expansion, first sends).
    fn run_jobs(&self) {
        let horizon = self.clock.now().plus(1_000);
        let mut later = Vec::new();
        while let Some((at, item)) = self.agenda.pop_due(horizon) {
            match item {
                Item::Job(j) => {
                    block_on(app::dispatch(&self.deps, j)).unwrap_or_else(|e| panic!("{e}"))
                }
                other => later.push((at, other)),
            }
        }
        for (at, i) in later {
            self.agenda.push(at, i);
        }
    }
    /// Runs the jobs due within the next second, the clock moving to each
    /// (sends a rate limiter delays run at their slot).
    fn work(&self) {
        let horizon = self.clock.now().plus(1_000);
        let mut later = Vec::new();
        while let Some((at, item)) = self.agenda.pop_due(horizon) {
            match item {
                Item::Job(j) => {
                    self.clock.set(at.max(self.clock.now()));
                    block_on(app::dispatch(&self.deps, j)).unwrap_or_else(|e| panic!("{e}"))
                }
                other => later.push((at, other)),
            }
        }
        for (at, i) in later {
            self.agenda.push(at, i);
        }
    }
    fn cascade(&self, incident: &str) -> Option<CascadeRecord> {
        block_on(self.deps.cascades.get_cascade(&key(incident)))
            .ok()
            .flatten()
    }
    fn audit_len(&self, incident: &str) -> usize {
        let id = IncidentId::parse(incident).unwrap_or_else(|e| panic!("{e}"));
        block_on(self.deps.cascades.audit_trail(&id))
            .map(|t| t.len())
            .unwrap_or(0)
    }
}

fn key(incident: &str) -> CascadeKey {
    CascadeKey {
        incident: IncidentId::parse(incident).unwrap_or_else(|e| panic!("{e}")),
        stakeholder: StakeholderId::parse("alice").unwrap_or_else(|e| panic!("{e}")),
        route: Route::Member,
    }
}

fn seed(id: &str) -> Value {
    json!({"incidentId": id, "severity": "P1", "stakeholderGroupId": "ops", "messageTemplate": "System outage detected."})
}

#[tokio::test]
async fn a_signature_authorises_only_the_request_it_was_made_for() {
    let e = env();
    assert_eq!(e.trigger(seed("INC-A")).await.status, StatusCode::ACCEPTED);
    assert_eq!(e.trigger(seed("INC-B")).await.status, StatusCode::ACCEPTED);
    // A captured signed GET of incident A, replayed within 300 s as a close of B.
    let get = e.signed("GET", "/v1/incidents/INC-A", "");
    let (ts, sig) = (
        get.headers()["x-muster-timestamp"]
            .to_str()
            .unwrap_or_default()
            .to_string(),
        get.headers()["x-muster-signature"]
            .to_str()
            .unwrap_or_default()
            .to_string(),
    );
    assert_eq!(e.send(get).await.status, StatusCode::OK);
    for (method, uri) in [
        ("POST", "/v1/incidents/INC-B/close"),
        ("POST", "/v1/incidents/INC-A/close"),
        ("GET", "/v1/incidents/INC-B"),
        ("GET", "/v1/incidents/INC-A?x=1"),
    ] {
        let replay = e.request(
            method,
            uri,
            "",
            Some((ts.parse().unwrap_or(0), sig.clone())),
        );
        let a = e.send(replay).await;
        assert_eq!(
            a.status,
            StatusCode::UNAUTHORIZED,
            "{method} {uri}: {}",
            a.text
        );
    }
    let b = e
        .send(e.signed("GET", "/v1/incidents/INC-B", ""))
        .await
        .json();
    assert_eq!(b["incident"]["status"], "open", "B was not closed");

    // A webhook signed for one provider is refused on another.
    let body = json!({"messageId": "gw-1", "status": "delivered"}).to_string();
    let for_a = e.signed("POST", "/v1/webhooks/provider-a", &body);
    let (ts, sig) = (
        for_a.headers()["x-muster-timestamp"]
            .to_str()
            .unwrap_or_default()
            .to_string(),
        for_a.headers()["x-muster-signature"]
            .to_str()
            .unwrap_or_default()
            .to_string(),
    );
    assert_eq!(e.send(for_a).await.status, StatusCode::OK);
    let moved = e.request(
        "POST",
        "/v1/webhooks/console",
        &body,
        Some((ts.parse().unwrap_or(0), sig)),
    );
    assert_eq!(e.send(moved).await.status, StatusCode::UNAUTHORIZED);
    // Query parameters are signed in any order.
    let a = e
        .send(e.signed("GET", "/v1/incidents/INC-A?b=2&a=1", ""))
        .await;
    assert_eq!(a.status, StatusCode::OK);
}

#[tokio::test]
async fn opening_an_ack_link_changes_nothing_and_its_button_acknowledges() {
    let e = env();
    assert_eq!(e.trigger(seed("INC-1")).await.status, StatusCode::ACCEPTED);
    e.run_jobs();
    // The link of a push notification.
    let token = e.tokens.mint(&key("INC-1"), Channel::Push, e.clock.now());
    let link = format!("/v1/ack/{token}");
    let before = e.audit_len("INC-1");
    // A mail scanner fetches the link, more than once, GET and HEAD.
    for method in ["GET", "GET", "HEAD", "GET"] {
        let req = Request::builder()
            .method(method)
            .uri(&link)
            .body(Body::empty())
            .unwrap_or_else(|err| panic!("{err}"));
        let a = e.send(req).await;
        assert_eq!(a.status, StatusCode::OK, "{method}");
        assert!(a.content_type.starts_with("text/html"));
        assert_eq!(
            a.headers.get("cache-control").and_then(|v| v.to_str().ok()),
            Some("no-store")
        );
        if method == "GET" {
            assert!(
                a.text.contains(&format!("action=\"{link}\"")),
                "a button that POSTs here: {}",
                a.text
            );
        }
    }
    // Reading the status and the audit trail changes nothing either.
    e.send(e.signed("GET", "/v1/incidents/INC-1", "")).await;
    e.send(e.signed("GET", "/v1/incidents/INC-1/audit", ""))
        .await;
    assert_ne!(
        e.cascade("INC-1").map(|c| c.cascade.status),
        Some(CascadeStatus::Acknowledged)
    );
    assert_eq!(
        e.audit_len("INC-1"),
        before,
        "no GET wrote to the audit trail"
    );
    // The person presses the button.
    let press = Request::builder()
        .method("POST")
        .uri(&link)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(Body::empty())
        .unwrap_or_else(|err| panic!("{err}"));
    let a = e.send(press).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text);
    assert!(a.text.contains("has been recorded"), "{}", a.text);
    assert!(
        a.headers.get("location").is_none(),
        "no redirect (RFC 8058)"
    );
    assert_eq!(
        e.cascade("INC-1").map(|c| c.cascade.status),
        Some(CascadeStatus::Acknowledged)
    );
    let by_channel = status_of(&e, "INC-1").await["progress"]["byChannel"].clone();
    assert_eq!(
        (
            by_channel["push"]["acknowledged"].as_u64(),
            by_channel["email"]["acknowledged"].as_u64()
        ),
        (Some(1), Some(0)),
        "recorded on the channel whose message carried the link: {by_channel}"
    );
    // Afterwards the page says nothing more is needed, with no button.
    let again = Request::builder()
        .uri(&link)
        .body(Body::empty())
        .unwrap_or_else(|err| panic!("{err}"));
    let a = e.send(again).await;
    assert!(!a.text.contains("<form"), "{}", a.text);
}

#[tokio::test]
async fn a_genuine_token_for_a_cascade_that_does_not_exist_is_not_found() {
    let e = env();
    let token = e
        .tokens
        .mint(&key("INC-NEVER"), Channel::Email, e.clock.now());
    for method in ["GET", "POST"] {
        let req = Request::builder()
            .method(method)
            .uri(format!("/v1/ack/{token}"))
            .body(Body::empty())
            .unwrap_or_else(|err| panic!("{err}"));
        let a = e.send(req).await;
        assert_eq!(a.status, StatusCode::NOT_FOUND, "{method}: {}", a.text);
        assert!(!a.text.contains("recorded"), "{}", a.text);
    }
    let a = e
        .send(e.request(
            "POST",
            "/v1/ack",
            &json!({"token": token}).to_string(),
            None,
        ))
        .await;
    assert_eq!(a.status, StatusCode::NOT_FOUND, "{}", a.text);
    assert!(a.content_type.starts_with("application/problem+json"));
}

#[tokio::test]
async fn every_error_is_an_rfc_9457_problem() {
    let e = env();
    let cases = [
        ("GET", "/nope", StatusCode::NOT_FOUND),
        ("GET", "/v1", StatusCode::NOT_FOUND),
        ("DELETE", "/v1/incidents", StatusCode::METHOD_NOT_ALLOWED),
        ("PUT", "/v1/incidents/INC-1", StatusCode::METHOD_NOT_ALLOWED),
        ("TRACE", "/v1/ack", StatusCode::METHOD_NOT_ALLOWED),
        ("GET", "/v1/incidents/%FF%FE", StatusCode::BAD_REQUEST),
        ("GET", "/v1/ack/%C3%28", StatusCode::BAD_REQUEST),
    ];
    for (method, uri, want) in cases {
        let a = e.send(e.request(method, uri, "", None)).await;
        assert_eq!(a.status, want, "{method} {uri}: {}", a.text);
        assert!(
            a.content_type.starts_with("application/problem+json"),
            "{method} {uri}: {}",
            a.content_type
        );
        let p = a.json();
        assert_eq!(p["status"], want.as_u16(), "{method} {uri}: {p}");
        assert!(p["title"].is_string() && p["detail"].is_string(), "{p}");
        if want == StatusCode::METHOD_NOT_ALLOWED {
            assert!(a.headers.get("allow").is_some(), "{method} {uri}: Allow");
        }
    }
}

#[tokio::test]
async fn timestamps_ids_and_severities_are_what_the_document_declares() {
    let e = env();
    for (i, ts) in [
        "2024-05-20T16:32:00+02:00",
        "2024-05-20T09:32:00-05:00",
        "2024-05-20t14:32:00z",
    ]
    .iter()
    .enumerate()
    {
        let mut f = seed(&format!("INC-T{i}"));
        f["timestamp"] = json!(ts);
        let a = e.trigger(f).await;
        assert_eq!(a.status, StatusCode::ACCEPTED, "{ts}: {}", a.text);
    }
    let mut old = seed("INC-OLD");
    old["timestamp"] = json!("1969-07-20T20:17:40Z");
    let a = e.trigger(old).await;
    assert_eq!(a.status, StatusCode::ACCEPTED, "{}", a.text);
    assert!(
        a.json()["warnings"].to_string().contains("before 1970"),
        "{}",
        a.text
    );
    for (field, value) in [
        ("incidentId", "."),
        ("incidentId", ".."),
        ("incidentId", "-x"),
        ("severity", "p1"),
        ("severity", "1"),
        ("severity", " P2 "),
        ("timestamp", "2024-05-20 14:32:00"),
        ("messageTemplate", "   "),
    ] {
        let mut f = seed("INC-BAD");
        f[field] = json!(value);
        let a = e.trigger(f).await;
        assert_eq!(
            a.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{field}={value:?}: {}",
            a.text
        );
        assert_eq!(
            a.json()["errors"][0]["field"],
            format!("trigger.{field}"),
            "{}",
            a.text
        );
    }
}

#[tokio::test]
async fn an_unknown_group_is_named_as_the_body_names_it() {
    let e = env();
    let mut f = seed("INC-G");
    f["stakeholderGroupId"] = json!("nobody");
    for (body, field) in [
        (json!({ "trigger": f }), "trigger.stakeholderGroupId"),
        (
            json!({"eventType": "bcp.cascade.trigger", "payload": f}),
            "payload.stakeholderGroupId",
        ),
        (f.clone(), "stakeholderGroupId"),
    ] {
        let a = e
            .send(e.signed("POST", "/v1/incidents", &body.to_string()))
            .await;
        assert_eq!(a.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(a.json()["errors"][0]["field"], field, "{}", a.text);
    }
}

#[tokio::test]
async fn a_replay_answers_with_the_incident_as_it_is_now() {
    let e = env();
    let first = e.trigger(seed("INC-R")).await;
    assert_eq!(first.json()["status"], "open");
    let closed = e
        .send(e.signed("POST", "/v1/incidents/INC-R/close", ""))
        .await;
    assert_eq!(closed.status, StatusCode::ACCEPTED, "{}", closed.text);
    assert_eq!(closed.json()["status"], "closing", "{}", closed.text);
    e.run_jobs();
    let replay = e.trigger(seed("INC-R")).await;
    assert_eq!(
        replay.status,
        StatusCode::ACCEPTED,
        "within the dedup window: {}",
        replay.text
    );
    assert_eq!(
        replay
            .headers
            .get("idempotent-replayed")
            .and_then(|v| v.to_str().ok()),
        Some("true")
    );
    let (a, b) = (first.json(), replay.json());
    assert_eq!(
        (&b["incidentId"], &b["triggeredAt"], &b["cascades"]),
        (&a["incidentId"], &a["triggeredAt"], &a["cascades"])
    );
    assert_eq!(b["status"], "closed", "its status now, as docs/api.md says");
}

#[tokio::test]
async fn the_incident_list_puts_open_incidents_first_newest_first_a_page_at_a_time() {
    let e = env();
    for id in ["INC-A", "INC-B", "INC-C", "INC-D"] {
        assert_eq!(e.trigger(seed(id)).await.status, StatusCode::ACCEPTED);
        e.clock.advance(60_000);
    }
    for id in ["INC-B", "INC-D"] {
        let closed = e
            .send(e.signed("POST", &format!("/v1/incidents/{id}/close"), ""))
            .await;
        assert_eq!(closed.status, StatusCode::ACCEPTED, "{}", closed.text);
        e.work();
    }
    // One page of everything.
    let all = e.send(e.signed("GET", "/v1/incidents", "")).await;
    assert_eq!(all.status, StatusCode::OK, "{}", all.text);
    let ids = |a: &Answer| -> Vec<String> {
        a.json()["incidents"]
            .as_array()
            .map(|v| {
                v.iter()
                    .map(|i| i["incidentId"].as_str().unwrap_or_default().to_string())
                    .collect()
            })
            .unwrap_or_default()
    };
    assert_eq!(ids(&all), ["INC-C", "INC-A", "INC-D", "INC-B"]);
    assert_eq!(all.json()["next"], Value::Null);
    assert_eq!(all.json()["incidents"][0]["status"], "open");
    assert_eq!(
        all.json()["incidents"][0]["links"]["status"],
        "/v1/incidents/INC-C"
    );
    assert_eq!(all.json()["incidents"][2]["status"], "closed");
    // The same, one at a time through the cursors.
    let mut seen = Vec::new();
    let mut uri = "/v1/incidents?limit=1".to_string();
    for _ in 0..10 {
        let page = e.send(e.signed("GET", &uri, "")).await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.text);
        seen.extend(ids(&page));
        match page.json()["next"].as_str() {
            Some(c) => uri = format!("/v1/incidents?limit=1&cursor={c}"),
            None => break,
        }
    }
    assert_eq!(seen, ids(&all));
    // Bad input is named and changes nothing; no signature, no list.
    for (query, field) in [
        ("limit=0", "limit"),
        ("limit=1001", "limit"),
        ("limit=ten", "limit"),
        ("cursor=x.1.INC-A", "cursor"),
        ("cursor=o.later.INC-A", "cursor"),
        ("cursor=", "cursor"),
    ] {
        let bad = e
            .send(e.signed("GET", &format!("/v1/incidents?{query}"), ""))
            .await;
        assert_eq!(
            bad.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{query}: {}",
            bad.text
        );
        assert_eq!(bad.json()["errors"][0]["field"], field, "{query}");
    }
    let unsigned = e.send(e.request("GET", "/v1/incidents", "", None)).await;
    assert_eq!(unsigned.status, StatusCode::UNAUTHORIZED);
}

/// `n` people of group `ops` (see [`env_of`]) with incident `id` triggered
/// for them and its expansion and first sends run.
async fn triggered(n: u32, id: &str) -> Env {
    let e = env_of(n);
    let mut fields = seed(id);
    fields["stakeholderGroupId"] = json!("ops");
    assert_eq!(e.trigger(fields).await.status, StatusCode::ACCEPTED);
    e.work();
    e
}

/// Each query is refused 422, naming its field.
async fn refused(e: &Env, request: impl Fn(&str) -> Request<Body>, cases: &[(&str, &str)]) {
    for (query, field) in cases {
        let a = e.send(request(query)).await;
        assert_eq!(
            a.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{query}: {}",
            a.text
        );
        assert_eq!(
            a.json()["errors"][0]["field"],
            *field,
            "{query}: {}",
            a.text
        );
    }
}

async fn status_of(e: &Env, incident: &str) -> Value {
    let a = e
        .send(e.signed("GET", &format!("/v1/incidents/{incident}"), ""))
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text);
    a.json()
}

/// Every page of an incident's stakeholders from `query` on, following `next`.
async fn all_pages(e: &Env, incident: &str, query: &str) -> (Vec<Value>, usize) {
    let (mut out, mut pages) = (Vec::new(), 0);
    let mut uri = format!("/v1/incidents/{incident}?{query}");
    loop {
        let a = e.send(e.signed("GET", &uri, "")).await;
        assert_eq!(a.status, StatusCode::OK, "{}", a.text);
        let v = a.json();
        pages += 1;
        out.extend(v["stakeholders"].as_array().cloned().unwrap_or_default());
        match v["next"].as_str() {
            Some(next) => uri = format!("/v1/incidents/{incident}?{query}&cursor={next}"),
            None => return (out, pages),
        }
        assert!(pages < 100, "paging ends");
    }
}

#[tokio::test]
async fn a_status_page_counts_everyone_and_lists_a_page_of_them_at_a_time() {
    let e = triggered(250, "INC-PAGE").await;
    // Ten people acknowledge by SMS.
    for i in 0..10 {
        let key = CascadeKey {
            incident: IncidentId::parse("INC-PAGE").unwrap_or_else(|e| panic!("{e}")),
            stakeholder: StakeholderId::parse(&format!("p{i}")).unwrap_or_else(|e| panic!("{e}")),
            route: Route::Member,
        };
        let ack = app::ReceiptEvent::Ack {
            key,
            channel: Channel::Sms,
            attempt: None,
        };
        block_on(app::receipt(&e.deps, ack)).unwrap_or_else(|e| panic!("{e}"));
    }
    let first = e.send(e.signed("GET", "/v1/incidents/INC-PAGE", "")).await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.text);
    let v = first.json();
    // The counts cover everyone; the page holds the default 100.
    assert_eq!(v["counts"]["acknowledged"], 10, "{v}");
    let members = &v["progress"]["members"];
    let total: u64 = [
        "pending",
        "active",
        "acknowledged",
        "escalated",
        "cancelled",
    ]
    .iter()
    .map(|s| members[s].as_u64().unwrap_or(0))
    .sum();
    assert_eq!(total, 250, "{v}");
    let tier_sizes: Vec<u64> = ["1", "2", "3"]
        .iter()
        .map(|t| {
            let c = &v["progress"]["byTier"][t];
            [
                "pending",
                "active",
                "acknowledged",
                "escalated",
                "cancelled",
            ]
            .iter()
            .map(|s| c[s].as_u64().unwrap_or(0))
            .sum()
        })
        .collect();
    assert_eq!(tier_sizes, vec![84, 83, 83], "{v}");
    assert_eq!(v["progress"]["byChannel"]["sms"]["acknowledged"], 10, "{v}");
    assert_eq!(v["stakeholders"].as_array().map(Vec::len), Some(100));
    assert!(v["next"].is_string(), "{v}");
    assert!(
        (0..100).all(|i| !first.text.contains(&format!("\"p{i}@example.com")))
            && !first.text.contains("+1212555010"),
        "contacts are masked"
    );
    assert!(first.text.contains('•'), "masked contacts are shown");

    // Following `next` lists everyone exactly once.
    let (all, pages) = all_pages(&e, "INC-PAGE", "limit=100").await;
    let mut ids: Vec<&str> = all
        .iter()
        .filter_map(|s| s["stakeholder"].as_str())
        .collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!((ids.len(), all.len(), pages), (250, 250, 3));

    // Filters: each listed person matches, and the lists add up to the counts.
    let (tier2, _) = all_pages(&e, "INC-PAGE", "tier=2&limit=7").await;
    assert_eq!(tier2.len(), 83);
    assert!(tier2.iter().all(|s| s["tier"] == 2));
    let (acked, _) = all_pages(&e, "INC-PAGE", "state=acknowledged").await;
    let mut acked: Vec<&str> = acked
        .iter()
        .filter_map(|s| s["stakeholder"].as_str())
        .collect();
    acked.sort_unstable();
    let mut expected: Vec<String> = (0..10).map(|i| format!("p{i}")).collect();
    expected.sort_unstable();
    assert_eq!(acked, expected);
    let (by_sms, _) = all_pages(&e, "INC-PAGE", "channel=sms&state=acknowledged").await;
    assert!(
        by_sms.len() == 10 && by_sms.iter().all(|s| s["ackedOn"] == "sms"),
        "{by_sms:?}"
    );
    let (none, _) = all_pages(&e, "INC-PAGE", "route=escalation").await;
    assert!(none.is_empty());

    // Bad queries are refused, naming the field, and change nothing.
    refused(
        &e,
        |query| e.signed("GET", &format!("/v1/incidents/INC-PAGE?{query}"), ""),
        &[
            ("limit=0", "limit"),
            ("limit=1001", "limit"),
            ("state=open", "state"),
            ("tier=4", "tier"),
            ("channel=fax", "channel"),
            ("needsReview=yes", "needsReview"),
            ("route=all", "route"),
            ("cursor=bm90LWEtY3Vyc29y", "cursor"),
            ("cursor=%25%25", "cursor"),
        ],
    )
    .await;
}

#[tokio::test]
async fn close_answers_at_once_and_its_jobs_cancel_everyone_then_it_is_closed() {
    let e = triggered(230, "INC-CLOSE").await;
    let before = status_of(&e, "INC-CLOSE").await;
    assert_eq!(before["counts"]["cancelled"], 0);
    let closed = e
        .send(e.signed("POST", "/v1/incidents/INC-CLOSE/close", ""))
        .await;
    assert_eq!(closed.status, StatusCode::ACCEPTED, "{}", closed.text);
    assert_eq!(closed.json()["status"], "closing");
    assert_eq!(closed.json()["links"]["status"], "/v1/incidents/INC-CLOSE");
    // Nothing is cancelled inside the request: the status says closing.
    let during = status_of(&e, "INC-CLOSE").await;
    assert_eq!(during["incident"]["status"], "closing");
    assert_eq!(during["counts"]["cancelled"], 0);
    e.work();
    let after = status_of(&e, "INC-CLOSE").await;
    assert_eq!(after["incident"]["status"], "closed", "{after}");
    assert_eq!(after["counts"]["cancelled"], 230, "{after}");
    let (open, _) = all_pages(&e, "INC-CLOSE", "state=active").await;
    assert!(open.is_empty());
    // Closing again starts nothing.
    let again = e
        .send(e.signed("POST", "/v1/incidents/INC-CLOSE/close", ""))
        .await;
    assert_eq!(again.status, StatusCode::ACCEPTED);
    assert_eq!(again.json()["status"], "closed");
    while let Some((_, item)) = e.agenda.pop_due(e.clock.now().plus(1_000)) {
        assert!(
            !matches!(item, Item::Job(Job::Close { .. })),
            "a second close queues no close job"
        );
    }
}

#[tokio::test]
async fn the_audit_trail_comes_a_page_at_a_time_and_the_pages_are_the_whole_trail() {
    let e = triggered(120, "INC-AUD").await;
    let id = IncidentId::parse("INC-AUD").unwrap_or_else(|e| panic!("{e}"));
    let trail = block_on(e.deps.cascades.audit_trail(&id)).unwrap_or_else(|e| panic!("{e}"));
    assert!(trail.len() > 120, "{} entries", trail.len());
    let get = |uri: String| {
        // As API Gateway's JWT authorizer passes a compliance officer.
        let mut r = e.signed("GET", &uri, "");
        r.extensions_mut().insert(v1::Caller {
            subject: "officer".into(),
            roles: vec!["ComplianceOfficer".into()],
        });
        r
    };
    let mut seen = Vec::new();
    let mut uri = "/v1/incidents/INC-AUD/audit?limit=50".to_string();
    let mut pages = 0;
    loop {
        let a = e.send(get(uri.clone())).await;
        assert_eq!(a.status, StatusCode::OK, "{}", a.text);
        let v = a.json();
        let entries = v["entries"].as_array().cloned().unwrap_or_default();
        assert!(entries.len() <= 50);
        seen.extend(
            entries
                .iter()
                .map(|x| x["hash"].as_str().unwrap_or_default().to_string()),
        );
        pages += 1;
        match v["next"].as_str() {
            Some(next) => uri = format!("/v1/incidents/INC-AUD/audit?limit=50&cursor={next}"),
            None => break,
        }
        assert!(pages < 100);
    }
    let whole: Vec<String> = trail.iter().map(|x| x.hash.clone()).collect();
    assert_eq!(seen, whole, "the pages, in order, are the trail");
    refused(
        &e,
        |query| get(format!("/v1/incidents/INC-AUD/audit?{query}")),
        &[
            ("limit=0", "limit"),
            ("limit=1001", "limit"),
            ("cursor=bm9wZQ", "cursor"),
        ],
    )
    .await;
}

#[tokio::test]
async fn a_close_job_delivered_twice_counts_its_partition_once() {
    let e = triggered(230, "INC-DUP").await;
    let closed = e
        .send(e.signed("POST", "/v1/incidents/INC-DUP/close", ""))
        .await;
    assert_eq!(closed.status, StatusCode::ACCEPTED);
    // Every close job runs twice, as a queue that delivers at least once may.
    let mut close_jobs = 0;
    while let Some((_, item)) = e.agenda.pop_due(e.clock.now().plus(1_000)) {
        if let Item::Job(j @ Job::Close { .. }) = item {
            close_jobs += 1;
            for _ in 0..2 {
                block_on(app::dispatch(&e.deps, j.clone())).unwrap_or_else(|e| panic!("{e}"));
            }
        }
    }
    assert!(close_jobs >= 3, "three pages of 100: {close_jobs}");
    let v = status_of(&e, "INC-DUP").await;
    assert_eq!(v["incident"]["status"], "closed", "{v}");
    assert_eq!(v["counts"]["cancelled"], 230, "{v}");
    assert_eq!(v["incident"]["close_passes"], 1, "one pass was enough: {v}");
}

/// A carrier that answers 429 to its first `throttle` sends, then accepts,
/// counting both.
struct Counted {
    endpoint: &'static str,
    throttle: usize,
    answered: std::sync::Mutex<(usize, usize)>,
}

#[async_trait::async_trait]
impl ChannelSender for Counted {
    fn endpoint(&self) -> &str {
        self.endpoint
    }
    async fn send(&self, _: &OutboundMessage) -> Result<Accepted, SendError> {
        let mut g = self.answered.lock().unwrap_or_else(|p| p.into_inner());
        if g.1 < self.throttle {
            g.1 += 1;
            return Err(SendError::Throttled {
                retry_after: Some(5_000),
            });
        }
        g.0 += 1;
        Ok(Accepted {
            provider_message_id: format!("{}-{}", self.endpoint, g.0),
        })
    }
}

#[tokio::test]
async fn the_carriers_view_shows_each_carriers_limit_pace_and_the_answers_it_gave() {
    let counted = |endpoint, throttle| {
        Arc::new(Counted {
            endpoint,
            throttle,
            answered: std::sync::Mutex::new((0, 0)),
        })
    };
    let (voice, sms, email, push) = (
        counted("voice-carrier", 2),
        counted("sms-carrier", 0),
        counted("email-carrier", 0),
        counted("push-carrier", 0),
    );
    let mut people: Vec<Stakeholder> = (0..6).map(|i| person(&format!("p{i}"), i)).collect();
    let members = people.iter().map(|p| p.id.clone()).collect();
    people.push(person("boss", 9_000));
    let e = env_sending(
        people,
        members,
        Senders {
            voice: voice.clone(),
            sms: sms.clone(),
            email: email.clone(),
            push: push.clone(),
        },
    );
    let before = e.send(e.signed("GET", "/v1/carriers", "")).await;
    assert_eq!(before.status, StatusCode::OK, "{}", before.text);
    let list = before.json()["carriers"].clone();
    assert_eq!(list.as_array().map(Vec::len), Some(4), "{list}");
    for c in list.as_array().into_iter().flatten() {
        assert_eq!(c["active"], false, "nothing sent yet: {c}");
        assert_eq!(
            (c["accepted"].as_u64(), c["throttled"].as_u64()),
            (Some(0), Some(0))
        );
        assert_eq!(c["limitPerSec"], c["pacePerSec"], "{c}");
    }
    let mut fields = seed("INC-CARRIERS");
    fields["stakeholderGroupId"] = json!("ops");
    assert_eq!(e.trigger(fields).await.status, StatusCode::ACCEPTED);
    for _ in 0..30 {
        e.work();
        e.clock.advance(1_000);
    }
    let a = e.send(e.signed("GET", "/v1/carriers", "")).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text);
    let list = a.json()["carriers"].clone();
    let by = |ch: &str| {
        list.as_array()
            .and_then(|l| l.iter().find(|c| c["channel"] == ch))
            .cloned()
            .unwrap_or_else(|| panic!("no {ch} in {list}"))
    };
    for (ch, fake) in [
        ("voice", &voice),
        ("sms", &sms),
        ("email", &email),
        ("push", &push),
    ] {
        let c = by(ch);
        let (accepted, throttled) = *fake.answered.lock().unwrap_or_else(|p| p.into_inner());
        assert_eq!(c["endpoint"], fake.endpoint, "{c}");
        assert_eq!(c["accepted"].as_u64(), Some(accepted as u64), "{ch}: {c}");
        assert_eq!(c["throttled"].as_u64(), Some(throttled as u64), "{ch}: {c}");
        assert_eq!(c["active"], accepted + throttled > 0, "{ch}: {c}");
        let (limit, pace) = (c["limitPerSec"].as_f64(), c["pacePerSec"].as_f64());
        assert!(pace <= limit && pace > Some(0.0), "{ch}: {c}");
    }
    let v = by("voice");
    assert_eq!(v["throttled"], 2, "the carrier's two 429s are counted: {v}");
    assert!(
        v["accepted"].as_u64() > Some(0),
        "voice went on after the pause: {v}"
    );
    assert!(
        v["pacePerSec"].as_f64() < v["limitPerSec"].as_f64(),
        "after 429s the limiter paces below the told limit: {v}"
    );
}
