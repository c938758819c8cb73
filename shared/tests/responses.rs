//! Responses beyond "press 1": an incident's own answers ("I am safe",
//! "I need help"), offered on every channel; every answer audited with its
//! key; one that does not acknowledge ends that person's cascade as
//! RESPONDED and names them at once, with the answer, to their manager.

mod support;
use support::*;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use muster::adapters::memory::{
    Agenda, Item, MemoryDirectory, MemoryStore, SeededIds, VirtualClock, embedded,
};
use muster::api::sign::AckTokens;
use muster::app::{self, ReceiptEvent};
use muster::domain::*;
use muster::engine::{AuditKind, CascadeKey, CascadeStatus, Route};
use muster::policy::Policy;
use muster::ports::*;
use muster::secret::Secret;
use serde_json::{Value, json};
use std::sync::Arc;

struct Env {
    deps: Deps,
    app: axum::Router,
    tokens: AckTokens,
    agenda: Arc<Agenda<()>>,
    clock: Arc<VirtualClock>,
    sent: Arc<Accept>,
}

const SAFE_OR_HELP: &str = r#"[{"key": "1", "label": "I am safe"}, {"key": "2", "label": "I need help", "acknowledges": false}]"#;

/// Group `g`: `e` (email), `s` (SMS), `v` (voice); on-call manager `m` (email).
fn env() -> Env {
    let person =
        |n: &str, contacts: ContactMethods| Stakeholder::new(id(n), n, Tier::TWO, contacts);
    let people = vec![
        person(
            "e",
            ContactMethods {
                email: EmailAddress::parse("e@example.com").ok(),
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
            "v",
            ContactMethods {
                phone: PhoneNumber::parse("+13125550103").ok(),
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
        members: vec![id("e"), id("s"), id("v")],
        on_call_manager: Some(id("m")),
        escalation_channels: vec![],
        idp: None,
    };
    let clock = VirtualClock::new(Ts::from_secs(1_700_000_000));
    let agenda: Arc<Agenda<()>> = Agenda::new(clock.clone());
    let sent = Arc::new(Accept::default());
    let sender: Arc<dyn ChannelSender> = sent.clone();
    let tokens = AckTokens::new(Secret::new("ack-key-0123"), 86_400_000);
    let deps = Deps {
        ack_links: Some(Arc::new(muster::api::sign::SignedAckLinks {
            tokens: tokens.clone(),
            base_url: "https://muster.example.com".into(),
        })),
        ..embedded(
            Arc::new(Policy::default()),
            &agenda,
            Arc::new(MemoryStore::new()),
            Arc::new(MemoryDirectory::new(vec![group], people)),
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
    let app = muster::api::finish(muster::api::v1::router(muster::api::v1::ApiState {
        deps: deps.clone(),
        secret: None,
        tokens: tokens.clone(),
        integrations: Default::default(),
    }));
    agenda.push(clock.now().plus(60_000), Item::Sweep);
    Env {
        deps,
        app,
        tokens,
        agenda,
        clock,
        sent,
    }
}

fn key(who: &str) -> CascadeKey {
    CascadeKey {
        incident: IncidentId::parse("INC-R-1").unwrap_or_else(|e| panic!("{e}")),
        stakeholder: id(who),
        route: Route::Member,
    }
}

impl Env {
    async fn run_for(&self, secs: u64) {
        let end = self.clock.now().plus(secs * 1000);
        muster::embedded::run_virtual(&self.deps, &self.agenda, &self.clock, end, async |_| {})
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    }

    async fn request(
        &self,
        method: &str,
        uri: &str,
        ct: &str,
        body: String,
    ) -> (StatusCode, String) {
        let req = Request::builder()
            .method(method)
            .uri(uri)
            .header("content-type", ct)
            .body(Body::from(body))
            .unwrap_or_else(|e| panic!("{e}"));
        let (status, _, body) = call(&self.app, req).await;
        (status, body)
    }

    /// Declares INC-R-1 through the API with `responses`.
    async fn start(&self, responses: &str) -> (StatusCode, String) {
        let body = json!({"trigger": {
            "incidentId": "INC-R-1", "severity": "P1", "stakeholderGroupId": "g",
            "messageTemplate": "Fire at the Leeds office. Are you safe?",
            "responses": serde_json::from_str::<Value>(responses).unwrap_or_else(|e| panic!("{e}")),
        }});
        let out = self
            .request(
                "POST",
                "/v1/incidents",
                "application/json",
                body.to_string(),
            )
            .await;
        self.run_for(5).await;
        out
    }

    fn sent_to(&self, who: &str) -> Vec<OutboundMessage> {
        self.sent
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|m| m.key.stakeholder.as_str() == who)
            .cloned()
            .collect()
    }

    async fn record(&self, k: &CascadeKey) -> CascadeRecord {
        self.deps
            .cascades
            .get_cascade(k)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .unwrap_or_else(|| panic!("no cascade {k}"))
    }

    /// (kind, response) of each of `who`'s member entries.
    async fn trail(&self, who: &str) -> Vec<(AuditKind, Option<String>)> {
        self.deps
            .cascades
            .audit_trail(&key(who).incident)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .iter()
            .filter(|e| e.stakeholder.as_str() == who && e.route == Route::Member)
            .map(|e| (e.record.kind, e.record.response.clone()))
            .collect()
    }

    async fn respond(&self, who: &str, channel: Channel, response: &str) -> app::ReceiptOutcome {
        let ev = ReceiptEvent::Respond {
            key: key(who),
            channel,
            attempt: None,
            response: response.into(),
        };
        app::receipt(&self.deps, ev)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
    }
}

#[tokio::test]
async fn who_answers_i_need_help_is_named_at_once_to_their_manager_with_the_answer() {
    let env = env();
    assert_eq!(env.start(SAFE_OR_HELP).await.0, StatusCode::ACCEPTED);
    env.respond("e", Channel::Email, "2").await;
    env.run_for(2).await;
    let rec = env.record(&key("e")).await;
    assert_eq!(rec.cascade.status, CascadeStatus::Escalated);
    assert_eq!(rec.cascade.response.as_deref(), Some("2"));
    let trail = env.trail("e").await;
    assert!(
        trail.contains(&(AuditKind::Responded, Some("2".into()))),
        "{trail:?}"
    );
    assert!(
        !trail.iter().any(|(k, _)| *k == AuditKind::CascadeFailure),
        "an answer is not a failure"
    );
    // The manager is told within seconds, and told what the answer was.
    let told = env.sent_to("m");
    let first = told
        .first()
        .unwrap_or_else(|| panic!("the manager was not told"));
    assert_eq!(first.key.route, Route::escalation(id("e")));
    assert!(
        first.subject.contains("answered \"I need help\""),
        "{}",
        first.subject
    );
    assert!(
        first.body.contains("answered \"I need help\""),
        "{}",
        first.body
    );
    // The status view names the answer.
    let view = app::status(&env.deps, &key("e").incident, &app::StatusQuery::default())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let e = view
        .stakeholders
        .iter()
        .find(|s| s.stakeholder.as_str() == "e" && s.route == Route::Member);
    assert_eq!(e.and_then(|s| s.response.as_deref()), Some("2"));
}

#[tokio::test]
async fn an_answer_that_acknowledges_is_an_acknowledgement_with_its_key() {
    let env = env();
    env.start(SAFE_OR_HELP).await;
    env.respond("e", Channel::Email, "1").await;
    assert_eq!(
        env.record(&key("e")).await.cascade.status,
        CascadeStatus::Acknowledged
    );
    assert!(
        env.trail("e")
            .await
            .contains(&(AuditKind::Acknowledged, Some("1".into())))
    );
    // Not an option of the incident: nothing changes.
    let env = env_started().await;
    assert_eq!(
        env.respond("e", Channel::Email, "7").await,
        app::ReceiptOutcome::Unrecognised
    );
    assert_eq!(
        env.record(&key("e")).await.cascade.status,
        CascadeStatus::Active
    );
}

async fn env_started() -> Env {
    let env = env();
    env.start(SAFE_OR_HELP).await;
    env
}

#[tokio::test]
async fn every_channel_offers_the_answers_and_an_sms_reply_may_be_the_key_or_the_label() {
    let env = env_started().await;
    let voice = env.sent_to("v");
    assert!(
        voice[0]
            .body
            .contains("Press 1 for I am safe, press 2 for I need help."),
        "{}",
        voice[0].body
    );
    let sms = env.sent_to("s");
    assert!(
        sms[0]
            .body
            .contains("Reply 1 for I am safe, 2 for I need help."),
        "{}",
        sms[0].body
    );
    let email = env.sent_to("e");
    assert!(
        email[0]
            .body
            .contains("Answer (I am safe, I need help): https://muster.example.com/v1/ack/"),
        "{}",
        email[0].body
    );
    let reply = ReceiptEvent::InboundSms {
        from: PhoneNumber::parse("+13125550102").unwrap_or_else(|e| panic!("{e}")),
        body: " i need HELP. ".into(),
    };
    app::receipt(&env.deps, reply)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        env.trail("s")
            .await
            .contains(&(AuditKind::Responded, Some("2".into())))
    );
}

#[tokio::test]
async fn the_link_page_has_a_button_per_answer_and_the_button_records_it() {
    let env = env_started().await;
    let token = env.tokens.mint(&key("e"), Channel::Email, env.clock.now());
    let (status, page) = env
        .request(
            "GET",
            &format!("/v1/ack/{token}"),
            "text/plain",
            String::new(),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        page.contains(r#"name="response" value="1""#) && page.contains("I am safe"),
        "{page}"
    );
    assert!(
        page.contains(r#"name="response" value="2""#) && page.contains("I need help"),
        "{page}"
    );
    assert_eq!(
        env.record(&key("e")).await.cascade.status,
        CascadeStatus::Active,
        "a GET changes nothing"
    );
    let (status, _) = env
        .request(
            "POST",
            &format!("/v1/ack/{token}"),
            "application/x-www-form-urlencoded",
            "response=9".into(),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let (status, done) = env
        .request(
            "POST",
            &format!("/v1/ack/{token}"),
            "application/x-www-form-urlencoded",
            "response=2".into(),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{done}");
    assert!(done.contains("Your answer"), "{done}");
    assert!(
        env.trail("e")
            .await
            .contains(&(AuditKind::Responded, Some("2".into())))
    );
    // The API takes the same answers.
    let token = env.tokens.mint(&key("s"), Channel::Sms, env.clock.now());
    let (status, body) = env
        .request(
            "POST",
            "/v1/ack",
            "application/json",
            json!({"token": token, "response": "1"}).to_string(),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(
        env.trail("s")
            .await
            .contains(&(AuditKind::Acknowledged, Some("1".into())))
    );
    assert!(body.contains(r#""acknowledged":true"#), "{body}");
    // "I need help" by the API is recorded, and not called an acknowledgement.
    let token = env.tokens.mint(&key("v"), Channel::Push, env.clock.now());
    let (status, body) = env
        .request(
            "POST",
            "/v1/ack",
            "application/json",
            json!({"token": token, "response": "2"}).to_string(),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(
        body.contains(r#""acknowledged":false"#) && body.contains(r#""response":"2""#),
        "{body}"
    );
}

#[tokio::test]
async fn safe_after_needing_help_acknowledges_and_withdraws_the_escalation() {
    let env = env_started().await;
    env.respond("e", Channel::Email, "2").await;
    env.run_for(2).await;
    env.respond("e", Channel::Email, "1").await;
    env.run_for(2).await;
    let trail = env.trail("e").await;
    assert!(
        trail.contains(&(AuditKind::AckAfterEnd, Some("1".into()))),
        "{trail:?}"
    );
    let esc = CascadeKey {
        route: Route::escalation(id("e")),
        ..key("m")
    };
    assert_eq!(
        env.record(&esc).await.cascade.status,
        CascadeStatus::Cancelled,
        "withdrawn"
    );
}

#[tokio::test]
async fn bad_answers_in_a_trigger_are_refused_naming_the_field() {
    let env = env();
    let (status, body) = env
        .start(r#"[{"key": "1", "label": "I am safe"}, {"key": "1", "label": "I need help", "acknowledges": false}]"#)
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(body.contains("trigger.responses[1].key"), "{body}");
    let (status, body) = env
        .start(r#"[{"key": "2", "label": "I need help", "acknowledges": false}]"#)
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(body.contains("no option acknowledges"), "{body}");
    assert!(env.sent_to("e").is_empty(), "nothing was declared");
}
