//! The alternative gateways, each sender tested with the handler of its
//! events: Twilio places a call whose TwiML gathers one digit (1
//! acknowledges) and sends texts whose status callbacks and replies come
//! back; SendGrid sends email whose signed events come back. The gateways
//! are fakes that check each request against the vendor's documented
//! contract and answer with its documented bodies
//! (tests/fixtures/gateways/, sources in its README); the webhooks are
//! sent as the vendors send them, signed their way. Incidents run on the
//! embedded driver with a virtual clock.

mod support;
use support::*;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use base64::Engine;
use muster::adapters::memory::{
    Agenda, Item, MemoryDirectory, MemoryStore, SeededIds, VirtualClock, embedded,
};
use muster::api::integrations::Integrations;
use muster::app;
use muster::domain::*;
use muster::engine::{AuditKind, CascadeKey, CascadeStatus, Route};
use muster::policy::Policy;
use muster::ports::*;
use muster::secret::Secret;
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};

const SID: &str = "AC0123456789abcdef0123456789abcdef";
const TOKEN: &str = "twilio-auth-token-0123";
const SG_KEY: &str = "SG.sendgrid-api-key-0123";
const CALLBACK: &str = "https://muster.example.com";
const FROM: &str = "+12125550100";

fn fixture(rel: &str) -> Value {
    let path = format!(
        "{}/../tests/fixtures/gateways/{rel}",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// A form's parameters, in order.
type Form = Vec<(String, String)>;

/// What the fake vendors were asked, and what they answer next.
#[derive(Default)]
struct Vendor {
    /// (resource, form) of each Twilio create accepted.
    twilio: Mutex<Vec<(String, Form)>>,
    /// Each SendGrid mail send accepted, and the X-Message-Id answered.
    mail: Mutex<Vec<(Value, String)>>,
    /// The next answer to a call instead of 201: (status, fixture, Retry-After).
    twilio_error: Mutex<Option<(u16, Value, Option<&'static str>)>>,
}

fn error(status: StatusCode, body: Value) -> Response {
    (status, Json(body)).into_response()
}

/// Twilio's create-a-call and create-a-message endpoints: Basic auth with
/// the account SID and auth token, a form with the documented required
/// parameters; 201 with the documented resource.
async fn twilio(
    State(v): State<Arc<Vendor>>,
    Path((account, resource)): Path<(String, String)>,
    headers: HeaderMap,
    body: String,
) -> Response {
    let basic = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{SID}:{TOKEN}"))
    );
    if headers.get("authorization").and_then(|h| h.to_str().ok()) != Some(basic.as_str())
        || account != SID
    {
        return error(StatusCode::UNAUTHORIZED, fixture("twilio_error_auth.json"));
    }
    if !headers
        .get("content-type")
        .and_then(|h| h.to_str().ok())
        .is_some_and(|c| c.starts_with("application/x-www-form-urlencoded"))
    {
        return StatusCode::UNSUPPORTED_MEDIA_TYPE.into_response();
    }
    let form: Vec<(String, String)> = serde_urlencoded::from_str(&body).unwrap_or_default();
    let has = |k: &str| form.iter().any(|(n, v)| n == k && !v.is_empty());
    let (required, sample): (&[&str], &str) = match resource.as_str() {
        "Calls.json" => (&["To", "From", "Url"], "twilio_call_created.json"),
        "Messages.json" => (&["To", "Body"], "twilio_message_created.json"),
        _ => return StatusCode::NOT_FOUND.into_response(),
    };
    if !required.iter().all(|k| has(k))
        || (resource == "Messages.json" && !has("From") && !has("MessagingServiceSid"))
    {
        return error(
            StatusCode::BAD_REQUEST,
            fixture("twilio_error_invalid_to.json"),
        );
    }
    let next_error = match resource.as_str() {
        "Calls.json" => v
            .twilio_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take(),
        _ => None,
    };
    if let Some((status, body, retry)) = next_error {
        let mut r = error(
            StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST),
            body,
        );
        if let Some(s) = retry {
            r.headers_mut()
                .insert("retry-after", s.parse().unwrap_or_else(|e| panic!("{e:?}")));
        }
        return r;
    }
    let mut created = fixture(sample);
    let mut calls = v.twilio.lock().unwrap_or_else(|e| e.into_inner());
    let n = calls.len();
    let prefix = if resource == "Calls.json" { "CA" } else { "SM" };
    created["sid"] = json!(format!("{prefix}{n:032x}"));
    created["account_sid"] = json!(SID);
    calls.push((resource.trim_end_matches(".json").to_string(), form));
    (StatusCode::CREATED, Json(created)).into_response()
}

/// SendGrid's mail send: a Bearer API key, the documented required fields;
/// 202, no body, `X-Message-Id`.
async fn sendgrid(State(v): State<Arc<Vendor>>, headers: HeaderMap, body: String) -> Response {
    if headers.get("authorization").and_then(|h| h.to_str().ok())
        != Some(&format!("Bearer {SG_KEY}"))
    {
        return error(
            StatusCode::UNAUTHORIZED,
            fixture("sendgrid_error_auth.json"),
        );
    }
    let Ok(mail) = serde_json::from_str::<Value>(&body) else {
        return error(
            StatusCode::BAD_REQUEST,
            fixture("sendgrid_error_bad_request.json"),
        );
    };
    let ok = mail["personalizations"][0]["to"][0]["email"].is_string()
        && mail["from"]["email"].is_string()
        && mail["subject"].is_string()
        && mail["content"][0]["type"].is_string()
        && mail["content"][0]["value"].is_string();
    if !ok {
        return error(
            StatusCode::BAD_REQUEST,
            fixture("sendgrid_error_bad_request.json"),
        );
    }
    let mut sent = v.mail.lock().unwrap_or_else(|e| e.into_inner());
    let message_id = format!("W5K8iK8iS3CyAQh3u1_0{:02}", sent.len());
    sent.push((mail, message_id.clone()));
    let mut r = StatusCode::ACCEPTED.into_response();
    r.headers_mut().insert(
        "x-message-id",
        message_id.parse().unwrap_or_else(|e| panic!("{e:?}")),
    );
    r
}

async fn start_vendor() -> (String, Arc<Vendor>) {
    let v = Arc::new(Vendor::default());
    let app = Router::new()
        .route("/2010-04-01/Accounts/{account}/{resource}", post(twilio))
        .route("/v3/mail/send", post(sendgrid))
        .with_state(v.clone());
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let base = format!(
        "http://{}",
        l.local_addr().unwrap_or_else(|e| panic!("{e}"))
    );
    tokio::spawn(async move { axum::serve(l, app).await });
    (base, v)
}

/// A fixed P-256 key standing in for SendGrid's event signing key.
fn sendgrid_signing_key() -> p256::ecdsa::SigningKey {
    p256::ecdsa::SigningKey::from_slice(&[7u8; 32]).unwrap_or_else(|e| panic!("{e}"))
}

fn verification_key() -> String {
    // SubjectPublicKeyInfo: id-ecPublicKey, prime256v1, the uncompressed point.
    let mut der = hex::decode("3059301306072a8648ce3d020106082a8648ce3d030107034200")
        .unwrap_or_else(|e| panic!("{e}"));
    der.extend_from_slice(
        sendgrid_signing_key()
            .verifying_key()
            .to_encoded_point(false)
            .as_bytes(),
    );
    base64::engine::general_purpose::STANDARD.encode(der)
}

struct Env {
    deps: Deps,
    app: Router,
    agenda: Arc<Agenda<()>>,
    clock: Arc<VirtualClock>,
    vendor: Arc<Vendor>,
}

/// Group `g`: `v` (a phone, called), `s` (a mobile, texted), `e` (email),
/// on-call manager `m` (email).
async fn env() -> Env {
    let (base, vendor) = start_vendor().await;
    let person =
        |n: &str, contacts: ContactMethods| Stakeholder::new(id(n), n, Tier::TWO, contacts);
    let people = vec![
        person(
            "v",
            ContactMethods {
                phone: PhoneNumber::parse("+13125550101").ok(),
                ..Default::default()
            },
        ),
        person(
            "s",
            ContactMethods {
                sms: PhoneNumber::parse("+13125550102").ok(),
                ..Default::default()
            },
        ),
        person(
            "e",
            ContactMethods {
                email: EmailAddress::parse("e@example.com").ok(),
                ..Default::default()
            },
        ),
        person(
            "m",
            ContactMethods {
                email: EmailAddress::parse("m@example.com").ok(),
                ..Default::default()
            },
        ),
    ];
    let group = Group {
        id: GroupId::parse("g").unwrap_or_else(|e| panic!("{e}")),
        name: "G".into(),
        members: vec![id("v"), id("s"), id("e")],
        on_call_manager: Some(id("m")),
        escalation_channels: vec![],
        idp: None,
    };
    let settings = json!({
        "callback_url": CALLBACK,
        "channels": {"voice": "twilio", "sms": "twilio", "email": "sendgrid"},
        "twilio": {"account_sid": SID, "auth_token": TOKEN, "from": FROM, "api_url": base},
        "sendgrid": {"api_key": SG_KEY, "from": "bcp@example.com", "verification_key": verification_key(), "api_url": base},
    });
    let gateways = muster::adapters::gateways::from_json(&settings.to_string())
        .unwrap_or_else(|e| panic!("{e}"));
    let clock = VirtualClock::new(Ts::from_secs(1_700_000_000));
    let agenda: Arc<Agenda<()>> = Agenda::new(clock.clone());
    let none: Arc<dyn ChannelSender> = Arc::new(NoPush);
    let mut senders = Senders {
        voice: none.clone(),
        sms: none.clone(),
        email: none.clone(),
        push: none,
    };
    gateways.apply(&mut senders);
    let deps = embedded(
        Arc::new(Policy::default()),
        &agenda,
        Arc::new(MemoryStore::new()),
        Arc::new(MemoryDirectory::new(vec![group], people)),
        senders,
        clock.clone(),
        Arc::new(SeededIds::new(1)),
    );
    let integrations = Integrations {
        gateways: gateways.hooks.clone(),
        ..Default::default()
    };
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
        vendor,
    }
}

/// Push is not used here.
struct NoPush;

#[async_trait::async_trait]
impl ChannelSender for NoPush {
    fn endpoint(&self) -> &str {
        "push"
    }
    async fn send(&self, _: &OutboundMessage) -> Result<Accepted, SendError> {
        Err(SendError::Failed("no push here".into()))
    }
}

fn key(who: &str) -> CascadeKey {
    CascadeKey {
        incident: IncidentId::parse("INC-GW-1").unwrap_or_else(|e| panic!("{e}")),
        stakeholder: id(who),
        route: Route::Member,
    }
}

impl Env {
    /// Runs every item due within `secs` of virtual time.
    async fn run_for(&self, secs: u64) {
        let end = self.clock.now().plus(secs * 1000);
        muster::embedded::run_virtual(&self.deps, &self.agenda, &self.clock, end, async |_| {})
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    }

    async fn start(&self) {
        self.start_with(Responses::default()).await
    }

    async fn start_with(&self, responses: Responses) {
        let t = Trigger {
            incident_id: IncidentId::parse("INC-GW-1").unwrap_or_else(|e| panic!("{e}")),
            severity: Severity::P1,
            stakeholder_group_id: GroupId::parse("g").unwrap_or_else(|e| panic!("{e}")),
            message_template: MessageTemplate::parse("Data centre power lost. Activate BCP.")
                .unwrap_or_else(|e| panic!("{e}")),
            timestamp: None,
            responses,
            quorum: None,
            stop_on_quorum: false,
            bridge: None,
            message_templates: Default::default(),
        };
        app::trigger(&self.deps, t)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        self.run_for(5).await;
    }

    /// Posts to Muster's gateway route as the vendor would; (status,
    /// content type, body).
    async fn post(
        &self,
        path: &str,
        headers: &[(&str, String)],
        body: Vec<u8>,
    ) -> (StatusCode, String, String) {
        let mut req = Request::builder().method("POST").uri(path);
        for (k, v) in headers {
            req = req.header(*k, v);
        }
        let req = req.body(Body::from(body)).unwrap_or_else(|e| panic!("{e}"));
        call(&self.app, req).await
    }

    /// A Twilio webhook to `event`, its form signed as Twilio signs
    /// (`token`: the auth token it is signed with).
    async fn twilio(
        &self,
        event: &str,
        params: &[(&str, &str)],
        token: &str,
    ) -> (StatusCode, String, String) {
        let url = format!("{CALLBACK}/v1/gateways/twilio/{event}");
        let pairs: Vec<(String, String)> = params
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let sig = twilio_signature(token, &url, &pairs);
        let body = serde_urlencoded::to_string(&pairs)
            .unwrap_or_default()
            .into_bytes();
        self.post(
            &format!("/v1/gateways/twilio/{event}"),
            &[
                ("content-type", "application/x-www-form-urlencoded".into()),
                ("x-twilio-signature", sig),
            ],
            body,
        )
        .await
    }

    async fn sendgrid(
        &self,
        events: &Value,
        key: &p256::ecdsa::SigningKey,
    ) -> (StatusCode, String, String) {
        use p256::ecdsa::signature::Signer;
        let body = serde_json::to_vec(events).unwrap_or_default();
        let timestamp = "1700000100".to_string();
        let mut signed = timestamp.clone().into_bytes();
        signed.extend_from_slice(&body);
        let sig: p256::ecdsa::Signature = key.sign(&signed);
        let sig = base64::engine::general_purpose::STANDARD.encode(sig.to_der().as_bytes());
        self.post(
            "/v1/gateways/sendgrid/events",
            &[
                ("content-type", "application/json".into()),
                ("x-twilio-email-event-webhook-signature", sig),
                ("x-twilio-email-event-webhook-timestamp", timestamp),
            ],
            body,
        )
        .await
    }

    async fn status(&self, who: &str) -> CascadeStatus {
        self.deps
            .cascades
            .get_cascade(&key(who))
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .map(|r| r.cascade.status)
            .unwrap_or_else(|| panic!("no cascade for {who}"))
    }

    async fn kinds(&self, who: &str) -> Vec<AuditKind> {
        self.deps
            .cascades
            .audit_trail(&key(who).incident)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .iter()
            .filter(|e| e.stakeholder.as_str() == who && e.route == Route::Member)
            .map(|e| e.record.kind)
            .collect()
    }
}

/// Twilio's documented algorithm, written here from its documentation
/// (not the code under test): Base64 HMAC-SHA1 of the URL and the sorted
/// parameters, each name then value.
fn twilio_signature(token: &str, url: &str, params: &[(String, String)]) -> String {
    let mut sorted = params.to_vec();
    sorted.sort();
    let mut data = url.to_string();
    for (k, v) in sorted {
        data.push_str(&k);
        data.push_str(&v);
    }
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, token.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(ring::hmac::sign(&key, data.as_bytes()))
}

fn form_of(v: &Vendor, resource: &str) -> Vec<(String, String)> {
    v.twilio
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .find(|(r, _)| r == resource)
        .map(|(_, f)| f.clone())
        .unwrap_or_else(|| panic!("no {resource} created"))
}

fn field<'a>(form: &'a [(String, String)], k: &str) -> &'a str {
    form.iter()
        .find(|(n, _)| n == k)
        .map(|(_, v)| v.as_str())
        .unwrap_or_default()
}

#[tokio::test]
async fn a_twilio_call_says_the_message_gathers_one_digit_and_1_acknowledges() {
    let env = env().await;
    env.start().await;
    let call = form_of(&env.vendor, "Calls");
    assert_eq!(field(&call, "To"), "+13125550101");
    assert_eq!(field(&call, "From"), FROM);
    assert_eq!(
        field(&call, "Url"),
        format!("{CALLBACK}/v1/gateways/twilio/voice")
    );
    assert_eq!(
        field(&call, "StatusCallback"),
        format!("{CALLBACK}/v1/gateways/twilio/call-status")
    );
    let sid = format!("CA{:032x}", 0);
    let answered = [
        ("CallSid", sid.as_str()),
        ("AccountSid", SID),
        ("From", FROM),
        ("To", "+13125550101"),
        ("CallStatus", "in-progress"),
        ("Direction", "outbound-api"),
    ];

    // Not signed with the auth token: refused, nothing recorded.
    let (status, _, _) = env.twilio("voice", &answered, "another-token").await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(!env.kinds("v").await.contains(&AuditKind::Delivered));

    let (status, ct, twiml) = env.twilio("voice", &answered, TOKEN).await;
    assert_eq!(status, StatusCode::OK, "{twiml}");
    assert!(ct.starts_with("text/xml"), "{ct}");
    assert!(twiml.contains(r#"numDigits="1""#), "{twiml}");
    assert!(
        twiml.contains(&format!(r#"action="{CALLBACK}/v1/gateways/twilio/gather""#)),
        "{twiml}"
    );
    assert!(
        twiml.contains("Data centre power lost"),
        "the incident's message is said: {twiml}"
    );
    assert!(twiml.contains("Press 1"), "{twiml}");
    assert!(env.kinds("v").await.contains(&AuditKind::Delivered));

    // A 2 is not an acknowledgement: the prompt again.
    let mut pressed = answered.to_vec();
    pressed.push(("Digits", "2"));
    let (_, _, again) = env.twilio("gather", &pressed, TOKEN).await;
    assert!(again.contains("Only 1 acknowledges"), "{again}");
    assert_eq!(env.status("v").await, CascadeStatus::Active);

    pressed.pop();
    pressed.push(("Digits", "1"));
    let (status, _, done) = env.twilio("gather", &pressed, TOKEN).await;
    assert_eq!(status, StatusCode::OK);
    assert!(done.contains("Acknowledged"), "{done}");
    assert_eq!(env.status("v").await, CascadeStatus::Acknowledged);
}

#[tokio::test]
async fn a_call_nobody_answers_fails_its_channel_and_a_number_that_is_not_there_is_unreachable() {
    let env = env().await;
    env.start().await;
    let sid = format!("CA{:032x}", 0);
    let (status, _, _) = env
        .twilio(
            "call-status",
            &[
                ("CallSid", &sid),
                ("CallStatus", "no-answer"),
                ("AccountSid", SID),
            ],
            TOKEN,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let kinds = env.kinds("v").await;
    assert!(kinds.contains(&AuditKind::ChannelFailed), "{kinds:?}");

    // Twilio refuses a number as invalid (21211): unreachable at once.
    let env = env_with_error(400, "twilio_error_invalid_to.json", None).await;
    let kinds = env.kinds("v").await;
    assert!(kinds.contains(&AuditKind::ChannelUnreachable), "{kinds:?}");
}

async fn env_with_error(status: u16, fixture_name: &str, retry: Option<&'static str>) -> Env {
    let env = env().await;
    *env.vendor
        .twilio_error
        .lock()
        .unwrap_or_else(|e| e.into_inner()) = Some((status, fixture(fixture_name), retry));
    env.start().await;
    env
}

#[tokio::test]
async fn twilio_s_429_is_throttling_the_call_is_placed_again_after_its_retry_after() {
    let env = env_with_error(429, "twilio_error_too_many.json", Some("2")).await;
    let kinds = env.kinds("v").await;
    assert!(kinds.contains(&AuditKind::Throttled), "{kinds:?}");
    env.run_for(10).await;
    let calls = env
        .vendor
        .twilio
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .filter(|(r, _)| r == "Calls")
        .count();
    assert_eq!(calls, 1, "placed once the pause was over");
}

#[tokio::test]
async fn a_twilio_text_s_status_callbacks_and_reply_come_back_to_its_cascade() {
    let env = env().await;
    env.start().await;
    let msg = form_of(&env.vendor, "Messages");
    assert_eq!(field(&msg, "To"), "+13125550102");
    assert_eq!(field(&msg, "From"), FROM);
    assert!(field(&msg, "Body").contains("Data centre power lost"));
    assert_eq!(
        field(&msg, "StatusCallback"),
        format!("{CALLBACK}/v1/gateways/twilio/sms-status")
    );
    // Twilio creates calls before messages here: the message is the second resource.
    let sid = format!("SM{:032x}", 1);
    for status in ["queued", "sent", "delivered"] {
        let (s, _, _) = env
            .twilio(
                "sms-status",
                &[
                    ("MessageSid", &sid),
                    ("MessageStatus", status),
                    ("AccountSid", SID),
                ],
                TOKEN,
            )
            .await;
        assert_eq!(s, StatusCode::NO_CONTENT);
    }
    assert!(env.kinds("s").await.contains(&AuditKind::Delivered));
    let (s, ct, body) = env
        .twilio(
            "sms",
            &[
                ("MessageSid", "SMreply"),
                ("From", "+13125550102"),
                ("To", FROM),
                ("Body", "1"),
                ("AccountSid", SID),
            ],
            TOKEN,
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert!(
        ct.starts_with("text/xml") && body.contains("<Response/>"),
        "{body}"
    );
    assert_eq!(env.status("s").await, CascadeStatus::Acknowledged);
}

#[tokio::test]
async fn sendgrid_mail_s_signed_events_come_back_and_a_click_is_no_acknowledgement() {
    let env = env().await;
    env.start().await;
    let (mail, message_id) = env
        .vendor
        .mail
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .find(|(m, _)| m["personalizations"][0]["to"][0]["email"] == json!("e@example.com"))
        .cloned()
        .unwrap_or_else(|| panic!("no mail to e"));
    assert_eq!(mail["from"]["email"], json!("bcp@example.com"));
    assert!(
        mail["content"][0]["value"]
            .as_str()
            .unwrap_or_default()
            .contains("Data centre power lost")
    );
    assert_eq!(
        mail["tracking_settings"]["click_tracking"]["enable"],
        json!(false)
    );

    // The documented events, for this message.
    let mut events = fixture("sendgrid_events.json");
    for ev in events.as_array_mut().into_iter().flatten() {
        ev["email"] = json!("e@example.com");
        ev["sg_message_id"] = json!(format!(
            "{message_id}.recvd-5f54b7dc6c-2n4ns-1-64B02A5B-7.0"
        ));
    }
    let kinds: Vec<&str> = events
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["event"].as_str())
        .collect();
    assert!(
        kinds.contains(&"delivered") && kinds.contains(&"click"),
        "{kinds:?}"
    );

    // Signed with another key: refused, nothing recorded.
    let other = p256::ecdsa::SigningKey::from_slice(&[9u8; 32]).unwrap_or_else(|e| panic!("{e}"));
    let (status, _, _) = env.sendgrid(&events, &other).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(!env.kinds("e").await.contains(&AuditKind::Delivered));

    let delivered: Vec<Value> = events
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| {
            e["event"] == json!("delivered")
                || e["event"] == json!("click")
                || e["event"] == json!("open")
                || e["event"] == json!("processed")
        })
        .cloned()
        .collect();
    let (status, _, body) = env
        .sendgrid(&Value::Array(delivered), &sendgrid_signing_key())
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(env.kinds("e").await.contains(&AuditKind::Delivered));
    assert_eq!(
        env.status("e").await,
        CascadeStatus::Active,
        "a click or an open is not an acknowledgement"
    );
}

#[test]
fn twilio_s_documented_signature_example_verifies() {
    let v = fixture("twilio_signature_vector.json");
    let params: Vec<(String, String)> = v["params"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, x)| (k.clone(), x.as_str().unwrap_or_default().to_string()))
        .collect();
    let token = v["auth_token"].as_str().unwrap_or_default();
    let url = v["url"].as_str().unwrap_or_default();
    let expected = v["signature"].as_str().unwrap_or_default();
    assert_eq!(
        twilio_signature(token, url, &params),
        expected,
        "the test's own reading of the docs"
    );
    assert!(muster::events::twilio::verify(
        token, url, &params, expected
    ));
    assert!(!muster::events::twilio::verify(
        token,
        url,
        &params[1..],
        expected
    ));
    assert!(!muster::events::twilio::verify(
        "other", url, &params, expected
    ));
}

#[test]
fn twilio_s_signature_over_the_url_with_its_default_port_verifies_too() {
    let v = fixture("twilio_signature_vector.json");
    let params: Vec<(String, String)> = v["params"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, x)| (k.clone(), x.as_str().unwrap_or_default().to_string()))
        .collect();
    let with_port = v["signature_with_port_443"].as_str().unwrap_or_default();
    let url = v["url"].as_str().unwrap_or_default();
    assert!(muster::events::twilio::verify(
        "12345", url, &params, with_port
    ));
}

#[test]
fn sendgrid_s_documented_signed_event_verifies_and_nothing_else_does() {
    use muster::events::sendgrid::{key, verify};
    let v = fixture("sendgrid_signature_vector.json");
    let s = |k: &str| v[k].as_str().unwrap_or_default().to_string();
    let k = key(&s("public_key")).unwrap_or_else(|e| panic!("{e}"));
    let payload = s("payload");
    assert!(verify(
        &k,
        &s("timestamp"),
        payload.as_bytes(),
        &s("signature")
    ));
    assert!(!verify(
        &k,
        &s("timestamp"),
        payload.trim_end().as_bytes(),
        &s("signature")
    ));
    assert!(!verify(
        &k,
        "1600112503",
        payload.as_bytes(),
        &s("signature")
    ));
    let other = key(&s("other_key")).unwrap_or_else(|e| panic!("{e}"));
    assert!(!verify(
        &other,
        &s("timestamp"),
        payload.as_bytes(),
        &s("signature")
    ));
    assert!(!verify(
        &k,
        &s("timestamp"),
        payload.as_bytes(),
        "not base64!"
    ));
}

#[tokio::test]
async fn a_twilio_call_offers_the_incident_s_answers_and_a_2_is_recorded_as_needing_help() {
    let env = env().await;
    let answers = Responses::parse(
        &json!([{"key": "1", "label": "I am safe"}, {"key": "2", "label": "I need help", "acknowledges": false}]),
        "responses",
    )
    .unwrap_or_else(|e| panic!("{e:?}"));
    env.start_with(answers).await;
    let sid = format!("CA{:032x}", 0);
    let answered = [
        ("CallSid", sid.as_str()),
        ("AccountSid", SID),
        ("CallStatus", "in-progress"),
    ];
    let (_, _, twiml) = env.twilio("voice", &answered, TOKEN).await;
    assert!(
        twiml.contains("Press 1 for I am safe, press 2 for I need help."),
        "{twiml}"
    );
    let mut pressed = answered.to_vec();
    pressed.push(("Digits", "7"));
    let (_, _, again) = env.twilio("gather", &pressed, TOKEN).await;
    assert!(again.contains("not one of the answers"), "{again}");
    pressed.pop();
    pressed.push(("Digits", "2"));
    let (status, _, done) = env.twilio("gather", &pressed, TOKEN).await;
    assert_eq!(status, StatusCode::OK);
    assert!(done.contains("Your answer has been recorded"), "{done}");
    assert!(env.kinds("v").await.contains(&AuditKind::Responded));
    assert_eq!(env.status("v").await, CascadeStatus::Escalated);
}
