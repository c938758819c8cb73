//! Write-back: an incident that came from ServiceNow, PagerDuty or Jira is
//! told its progress there (started, each escalation, everyone
//! acknowledged, closed), each note saying what the records say, once; a
//! source that is down is tried a bounded number of times and holds up no
//! cascade.
//!
//! The systems are fakes that check each request against the vendor's
//! documented contract (path, method, authentication, headers, body) and
//! answer with the documented bodies (tests/fixtures/integrations/
//! write-back/, sources in its README). The incidents are declared through
//! `POST /v1/integrations/{source}` with the vendors' documented deliveries,
//! and run on the embedded driver with a virtual clock.

mod support;
use support::*;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{patch, post};
use axum::{Json, Router};
use base64::Engine;
use hmac::Mac;
use http_body_util::BodyExt;
use muster::adapters::memory::{
    Agenda, Item, MemoryDirectory, MemoryStore, SeededIds, VirtualClock, embedded,
};
use muster::adapters::notes::{Api, HttpNotes};
use muster::api::integrations::Integrations;
use muster::app;
use muster::domain::*;
use muster::engine::CascadeStatus;
use muster::policy::Policy;
use muster::ports::*;
use muster::secret::Secret;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use tower::ServiceExt;

const PD_TOKEN: &str = "pd-api-token-0123";
const JIRA_USER: &str = "ops@example.com";
const JIRA_TOKEN: &str = "jira-api-token-0123";
const SN_USER: &str = "muster.integration";
const SN_PASSWORD: &str = "sn-password-0123";

fn fixture(rel: &str) -> Value {
    let path = format!("{}/../tests/fixtures/{rel}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

fn basic(user: &str, password: &str) -> String {
    let raw = format!("{user}:{password}");
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(raw)
    )
}

/// The three systems' note endpoints, as documented.
#[derive(Default)]
struct Vendor {
    /// (path, text) of every note accepted, in order.
    notes: Mutex<Vec<(String, String)>>,
    requests: AtomicUsize,
    /// Answers 503 to this many requests first.
    fail_next: AtomicUsize,
    down: AtomicBool,
}

impl Vendor {
    fn notes(&self) -> Vec<(String, String)> {
        self.notes.lock().map(|n| n.clone()).unwrap_or_default()
    }

    /// Every check a request must pass; the documented error when one fails.
    fn take(
        &self,
        headers: &HeaderMap,
        auth: &str,
        body: &Value,
        field: &[&str],
        path: String,
    ) -> Result<(), Box<Response>> {
        self.requests.fetch_add(1, Ordering::SeqCst);
        let unavailable = self.down.load(Ordering::SeqCst)
            || self
                .fail_next
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok();
        if unavailable {
            return Err(Box::new(StatusCode::SERVICE_UNAVAILABLE.into_response()));
        }
        let header = |k: &str| headers.get(k).and_then(|v| v.to_str().ok());
        if header("authorization") != Some(auth) {
            return Err(Box::new(
                (
                    StatusCode::UNAUTHORIZED,
                    Json(json!({"error": {"message": "Unauthorized"}})),
                )
                    .into_response(),
            ));
        }
        if !header("content-type").is_some_and(|c| c.starts_with("application/json")) {
            return Err(Box::new(StatusCode::UNSUPPORTED_MEDIA_TYPE.into_response()));
        }
        let text = field
            .iter()
            .try_fold(body, |v, k| v.get(*k))
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty());
        let Some(text) = text else {
            return Err(Box::new(StatusCode::BAD_REQUEST.into_response()));
        };
        assert!(
            !text.contains('@') && !text.contains("+1"),
            "a note carries no contact detail: {text}"
        );
        if let Ok(mut n) = self.notes.lock() {
            n.push((path, text.to_string()));
        }
        Ok(())
    }
}

async fn pagerduty(
    State(v): State<Arc<Vendor>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    let h = |k: &str| headers.get(k).and_then(|v| v.to_str().ok());
    if h("accept") != Some("application/vnd.pagerduty+json;version=2") {
        return StatusCode::NOT_ACCEPTABLE.into_response();
    }
    // "From: the email address of a valid user associated with the account".
    if !h("from").is_some_and(|f| f.contains('@')) {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": {"message": "Requester User Not Found"}})),
        )
            .into_response();
    }
    let auth = format!("Token token={PD_TOKEN}");
    let path = format!("/incidents/{id}/notes");
    match v.take(&headers, &auth, &body, &["note", "content"], path) {
        Ok(()) => (
            StatusCode::CREATED,
            Json(fixture(
                "integrations/write-back/pagerduty_note_created.json",
            )),
        )
            .into_response(),
        Err(r) => *r,
    }
}

async fn jira(
    State(v): State<Arc<Vendor>>,
    Path(key): Path<String>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    let auth = basic(JIRA_USER, JIRA_TOKEN);
    let path = format!("/rest/api/2/issue/{key}/comment");
    match v.take(&headers, &auth, &body, &["body"], path) {
        Ok(()) => (
            StatusCode::CREATED,
            Json(fixture("integrations/write-back/jira_comment_created.json")),
        )
            .into_response(),
        Err(r) => *r,
    }
}

async fn servicenow(
    State(v): State<Arc<Vendor>>,
    Path(sys_id): Path<String>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    let auth = basic(SN_USER, SN_PASSWORD);
    let path = format!("/api/now/table/incident/{sys_id}");
    match v.take(&headers, &auth, &body, &["work_notes"], path) {
        Ok(()) => Json(fixture(
            "integrations/write-back/servicenow_incident_updated.json",
        ))
        .into_response(),
        Err(r) => *r,
    }
}

async fn start_vendor() -> (String, Arc<Vendor>) {
    let v = Arc::new(Vendor::default());
    let app = Router::new()
        .route("/incidents/{id}/notes", post(pagerduty))
        .route("/rest/api/2/issue/{key}/comment", post(jira))
        .route("/api/now/table/incident/{sys_id}", patch(servicenow))
        .with_state(v.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let addr = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}"), v)
}

fn apis(base: &str, pd_token: &str) -> BTreeMap<OriginSource, Api> {
    let api = |user: Option<&str>, token: &str, from: Option<&str>| Api {
        url: base.to_string(),
        user: user.map(str::to_string),
        token: Secret::new(token),
        from: from.map(str::to_string),
    };
    BTreeMap::from([
        (
            OriginSource::Pagerduty,
            api(None, pd_token, Some("bcp-lead@example.com")),
        ),
        (OriginSource::Jira, api(Some(JIRA_USER), JIRA_TOKEN, None)),
        (
            OriginSource::Servicenow,
            api(Some(SN_USER), SN_PASSWORD, None),
        ),
    ])
}

struct Env {
    deps: Deps,
    app: Router,
    agenda: Arc<Agenda<()>>,
    clock: Arc<VirtualClock>,
    sent: Arc<Accept>,
}

/// Group `g`: members `a` and `c` (email only), on-call manager `m`.
fn env(base: &str) -> Env {
    let person = |n: &str| {
        let contacts = ContactMethods {
            email: EmailAddress::parse(&format!("{n}@example.com")).ok(),
            ..Default::default()
        };
        Stakeholder::new(id(n), n, Tier::TWO, contacts)
    };
    let group = Group {
        id: GroupId::parse("g").unwrap_or_else(|e| panic!("{e}")),
        name: "G".into(),
        members: vec![id("a"), id("c")],
        on_call_manager: Some(id("m")),
        escalation_channels: vec![],
        idp: None,
    };
    let clock = VirtualClock::new(Ts::from_secs(1_700_000_000));
    let agenda: Arc<Agenda<()>> = Agenda::new(clock.clone());
    let sent = Arc::new(Accept::default());
    let sender: Arc<dyn ChannelSender> = sent.clone();
    let notes = HttpNotes::new(apis(base, PD_TOKEN)).unwrap_or_else(|e| panic!("{e}"));
    let deps = Deps {
        notes: Some(Arc::new(notes)),
        ..embedded(
            Arc::new(Policy::default()),
            &agenda,
            Arc::new(MemoryStore::new()),
            Arc::new(MemoryDirectory::new(
                vec![group],
                vec![person("a"), person("c"), person("m")],
            )),
            Senders {
                voice: sender.clone(),
                sms: sender.clone(),
                email: sender.clone(),
                push: sender,
            },
            clock.clone(),
            Arc::new(SeededIds::new(1)),
        )
    };
    let integrations = Integrations::from_lookup(|k| {
        Some(
            match k {
                "MUSTER_PAGERDUTY_SECRET" => "pd-secret-0123456789",
                "MUSTER_JIRA_SECRET" => "jira-secret-0123456789",
                "MUSTER_SERVICENOW_TOKEN" => "sn-token-0123456789",
                _ => return None,
            }
            .to_string(),
        )
    })
    .unwrap_or_else(|e| panic!("{e}"));
    let app = muster::api::finish(muster::api::v1::router(muster::api::v1::ApiState {
        deps: deps.clone(),
        secret: Some(Secret::new("api-secret")),
        tokens: muster::api::sign::AckTokens::new(Secret::new("k"), 1000),
        integrations,
    }));
    agenda.push(clock.now().plus(60_000), Item::Sweep);
    Env {
        deps,
        app,
        agenda,
        clock,
        sent,
    }
}

fn hmac_hex(secret: &str, body: &[u8]) -> String {
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes())
        .unwrap_or_else(|e| panic!("{e}"));
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

impl Env {
    /// Delivers `body` as `source` would, signed with its secret.
    async fn deliver(&self, source: &str, body: &Value) -> Value {
        let bytes = serde_json::to_vec(body).unwrap_or_default();
        let (name, value) = match source {
            "pagerduty" => (
                "x-pagerduty-signature",
                format!("v1={}", hmac_hex("pd-secret-0123456789", &bytes)),
            ),
            "jira" => (
                "x-hub-signature",
                format!("sha256={}", hmac_hex("jira-secret-0123456789", &bytes)),
            ),
            _ => ("authorization", "Bearer sn-token-0123456789".to_string()),
        };
        let req = Request::builder()
            .method("POST")
            .uri(format!("/v1/integrations/{source}?group=g&severity=P2"))
            .header("content-type", "application/json")
            .header(name, value)
            .body(Body::from(bytes))
            .unwrap_or_else(|e| panic!("{e}"));
        let resp = self
            .app
            .clone()
            .oneshot(req)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let status = resp.status();
        let body = resp
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        assert!(status.is_success(), "{status}: {v}");
        v
    }

    /// Runs the agenda for `secs` of virtual time; `ackers` acknowledge
    /// each message they get (the sweep runs every minute, as in
    /// production).
    async fn run_for(&self, secs: u64, ackers: &[&str]) {
        let end = self.clock.now().plus(secs * 1000);
        let (deps, sent) = (&self.deps, &self.sent);
        let mut answered = 0;
        muster::embedded::run_virtual(deps, &self.agenda, &self.clock, end, async |_| {
            ack_new(deps, sent, &mut answered, ackers).await;
        })
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    }

    async fn members(&self, incident: &Value) -> Vec<(String, CascadeStatus)> {
        let id = IncidentId::parse(incident.as_str().unwrap_or_default())
            .unwrap_or_else(|e| panic!("{e}"));
        let view = app::status(&self.deps, &id, &app::StatusQuery::default())
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let mut out: Vec<(String, CascadeStatus)> = view
            .stakeholders
            .iter()
            .filter(|s| !s.route.is_escalation())
            .map(|s| (s.stakeholder.as_str().to_string(), s.status))
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }
}

#[tokio::test]
async fn servicenow_is_told_the_start_each_escalation_and_the_close_as_the_records_have_them() {
    let (base, vendor) = start_vendor().await;
    let e = env(&base);
    let opened = fixture("integrations/servicenow_incident.json");
    let got = e.deliver("servicenow", &opened).await;
    // `a` acknowledges; `c` never answers and is escalated to `m`, who does.
    e.run_for(1_800, &["a", "m"]).await;
    let mut resolved = opened.clone();
    resolved["state"] = json!("6");
    e.deliver("servicenow", &resolved).await;
    e.run_for(600, &["a", "m"]).await;

    let members = e.members(&got["incidentId"]).await;
    let count = |s: CascadeStatus| members.iter().filter(|(_, st)| *st == s).count();
    let notes = vendor.notes();
    let path = "/api/now/table/incident/f3a1c2d4e5b60718293a4b5c6d7e8f90";
    assert!(notes.iter().all(|(p, _)| p == path), "{notes:?}");
    let texts: Vec<&str> = notes.iter().map(|(_, t)| t.as_str()).collect();
    assert_eq!(texts.len(), 3, "started, one escalation, closed: {texts:?}");
    assert!(
        texts[0].contains("started") && texts[0].contains("2 members of group g"),
        "{}",
        texts[0]
    );
    assert!(
        texts[1].contains("c was not reached; their failure was named to m"),
        "{}",
        texts[1]
    );
    // The close note's figures are the incident's own.
    let closed = format!(
        "of 2 members, {} acknowledged, {} escalated, {} cancelled",
        count(CascadeStatus::Acknowledged),
        count(CascadeStatus::Escalated),
        count(CascadeStatus::Cancelled)
    );
    assert!(
        texts[2].contains("closed") && texts[2].contains(&closed),
        "{} (want {closed})",
        texts[2]
    );
    assert!(count(CascadeStatus::Escalated) == 1, "{members:?}");
}

#[tokio::test]
async fn pagerduty_is_told_once_when_every_member_acknowledged_then_the_close() {
    let (base, vendor) = start_vendor().await;
    let e = env(&base);
    let got = e
        .deliver(
            "pagerduty",
            &fixture("integrations/pagerduty_incident_triggered.json"),
        )
        .await;
    // An hour of sweeps after everyone acknowledged: still one note of it.
    e.run_for(3_600, &["a", "c"]).await;
    assert_eq!(
        e.members(&got["incidentId"]).await,
        [
            ("a".to_string(), CascadeStatus::Acknowledged),
            ("c".to_string(), CascadeStatus::Acknowledged)
        ]
    );
    e.deliver(
        "pagerduty",
        &fixture("integrations/pagerduty_incident_resolved.json"),
    )
    .await;
    e.run_for(600, &[]).await;
    let notes = vendor.notes();
    assert!(
        notes.iter().all(|(p, _)| p == "/incidents/PINC7Q1/notes"),
        "{notes:?}"
    );
    let texts: Vec<&str> = notes.iter().map(|(_, t)| t.as_str()).collect();
    assert_eq!(texts.len(), 3, "{texts:?}");
    assert!(texts[0].contains("started"), "{}", texts[0]);
    assert!(
        texts[1].contains("all 2 members of group g acknowledged"),
        "{}",
        texts[1]
    );
    assert!(
        texts[2].contains("of 2 members, 2 acknowledged, 0 escalated, 0 cancelled"),
        "{}",
        texts[2]
    );
}

#[tokio::test]
async fn a_source_that_fails_is_tried_again_later_and_holds_up_no_cascade() {
    // Jira answers 503 twice: the start note arrives once, on the third try.
    let (base, vendor) = start_vendor().await;
    vendor.fail_next.store(2, Ordering::SeqCst);
    let e = env(&base);
    let got = e
        .deliver("jira", &fixture("integrations/jira_issue_created.json"))
        .await;
    e.run_for(3_600, &["a", "c"]).await;
    let notes = vendor.notes();
    assert!(
        notes
            .iter()
            .all(|(p, _)| p == "/rest/api/2/issue/OPS-42/comment"),
        "{notes:?}"
    );
    let started = notes.iter().filter(|(_, t)| t.contains("started")).count();
    assert_eq!(started, 1, "{notes:?}");
    assert_eq!(notes.len(), 2, "started and all acknowledged: {notes:?}");
    assert_eq!(vendor.requests.load(Ordering::SeqCst), 4);
    assert!(
        e.members(&got["incidentId"])
            .await
            .iter()
            .all(|(_, s)| *s == CascadeStatus::Acknowledged)
    );

    // Down for good: everyone is still reached and acknowledges, and each
    // note is tried a bounded number of times, then given up.
    let (base, vendor) = start_vendor().await;
    vendor.down.store(true, Ordering::SeqCst);
    let e = env(&base);
    let got = e
        .deliver("jira", &fixture("integrations/jira_issue_created.json"))
        .await;
    e.run_for(3 * 3_600, &["a", "c"]).await;
    assert!(
        e.members(&got["incidentId"])
            .await
            .iter()
            .all(|(_, s)| *s == CascadeStatus::Acknowledged)
    );
    assert!(vendor.notes().is_empty());
    assert_eq!(
        vendor.requests.load(Ordering::SeqCst) as u32,
        2 * app::WRITE_BACK_ATTEMPTS,
        "two notes (started, all acknowledged), each tried {} times",
        app::WRITE_BACK_ATTEMPTS
    );
}

#[tokio::test]
async fn each_request_follows_its_system_s_contract_and_a_refusal_is_not_retried() {
    let (base, vendor) = start_vendor().await;
    let good = HttpNotes::new(apis(&base, PD_TOKEN)).unwrap_or_else(|e| panic!("{e}"));
    for (source, reference) in [
        (OriginSource::Pagerduty, "PINC7Q1"),
        (OriginSource::Jira, "OPS-42"),
        (OriginSource::Servicenow, "f3a1c2d4e5b60718293a4b5c6d7e8f90"),
    ] {
        let origin = Origin::new(source, reference).unwrap_or_else(|| panic!("{reference}"));
        good.post(&origin, "Muster incident x started.")
            .await
            .unwrap_or_else(|e| panic!("{source}: {e}"));
    }
    assert_eq!(vendor.notes().len(), 3);
    let origin = Origin::new(OriginSource::Pagerduty, "PINC7Q1").unwrap_or_else(|| panic!());
    let bad = HttpNotes::new(apis(&base, "wrong-token")).unwrap_or_else(|e| panic!("{e}"));
    assert!(matches!(
        bad.post(&origin, "x").await,
        Err(NoteError::Refused(_))
    ));
    vendor.down.store(true, Ordering::SeqCst);
    assert!(matches!(
        good.post(&origin, "x").await,
        Err(NoteError::Unavailable(_))
    ));
}

#[test]
fn write_back_settings_name_what_is_wrong_and_never_print_a_secret() {
    let cases = [
        ("[]", "not a JSON object"),
        (
            r#"{"opsgenie": {"url": "https://x", "token": "t"}}"#,
            "\"opsgenie\" is no source",
        ),
        (
            r#"{"pagerduty": {"url": "https://api.pagerduty.com", "token": "s3cr3t-value"}}"#,
            "MUSTER_WRITEBACK.pagerduty.from: required",
        ),
        (
            r#"{"jira": {"url": "http://jira.example.com", "user": "u", "token": "s3cr3t-value"}}"#,
            "MUSTER_WRITEBACK.jira.url: must be https",
        ),
        (
            r#"{"servicenow": {"url": "https://x.service-now.com", "token": "s3cr3t-value"}}"#,
            "MUSTER_WRITEBACK.servicenow.user: required",
        ),
        (
            r#"{"jira": {"url": "https://x.atlassian.net", "user": "u", "token": "s3cr3t-value", "extra": 1}}"#,
            "unknown field `extra`",
        ),
    ];
    for (text, want) in cases {
        let err = match HttpNotes::from_json(text) {
            Ok(_) => panic!("{text} was accepted"),
            Err(e) => e,
        };
        assert!(err.contains(want), "{text}: {err}");
        assert!(!err.contains("s3cr3t"), "{err}");
    }
    let ok = HttpNotes::from_json(
        r#"{"jira": {"url": "https://x.atlassian.net/", "user": "u", "token": "t"}}"#,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(ok.sources(), ["jira"]);
}
