//! What the integration tests share: ids and a carrier that takes every
//! message. (Each test binary uses some of it.)
#![allow(dead_code)]

use muster::domain::StakeholderId;
use muster::ports::{Accepted, ChannelSender, OutboundMessage, SendError};
use std::sync::Mutex;

pub fn id(s: &str) -> StakeholderId {
    StakeholderId::parse(s).unwrap_or_else(|e| panic!("{e}"))
}

/// Accepts every message, keeping them (provider ids `m1`, `m2`...).
#[derive(Default)]
pub struct Accept(pub Mutex<Vec<OutboundMessage>>);

impl Accept {
    /// Every message accepted so far.
    pub fn sent(&self) -> Vec<OutboundMessage> {
        self.0.lock().map(|s| s.clone()).unwrap_or_default()
    }
}

#[async_trait::async_trait]
impl ChannelSender for Accept {
    fn endpoint(&self) -> &str {
        "any"
    }
    async fn send(&self, m: &OutboundMessage) -> Result<Accepted, SendError> {
        let mut sent = self.0.lock().unwrap_or_else(|e| e.into_inner());
        sent.push(m.clone());
        Ok(Accepted {
            provider_message_id: format!("m{}", sent.len()),
        })
    }
}

/// Acknowledges, as their person would, each message `sent` accepted since
/// the `answered` first that went to one of `ackers`; moves `answered` on.
pub async fn ack_new(
    deps: &muster::ports::Deps,
    sent: &Accept,
    answered: &mut usize,
    ackers: &[&str],
) {
    let all = sent.sent();
    for m in &all[*answered..] {
        if ackers.contains(&m.key.stakeholder.as_str()) {
            let ack = muster::app::ReceiptEvent::Ack {
                key: m.key.clone(),
                channel: m.channel,
                attempt: Some(m.attempt),
            };
            muster::app::receipt(deps, ack)
                .await
                .unwrap_or_else(|e| panic!("{e}"));
        }
    }
    *answered = all.len();
}

/// Sends `req` to `app`: its status, content type and body as text.
pub async fn call(
    app: &axum::Router,
    req: axum::http::Request<axum::body::Body>,
) -> (axum::http::StatusCode, String, String) {
    use http_body_util::BodyExt;
    use tower::ServiceExt;
    let resp = app
        .clone()
        .oneshot(req)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let status = resp.status();
    let ct = resp
        .headers()
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
    (status, ct, String::from_utf8_lossy(&bytes).into_owned())
}

/// One process of Muster on virtual time: the memory adapters, every
/// channel on one accepting carrier (`sent`), and the API on `app`.
pub struct World {
    pub deps: muster::ports::Deps,
    pub app: axum::Router,
    pub agenda: std::sync::Arc<muster::adapters::memory::Agenda<()>>,
    pub clock: std::sync::Arc<muster::adapters::memory::VirtualClock>,
    pub sent: std::sync::Arc<Accept>,
}

impl World {
    /// `groups` and `people` in the directory; the sweep first due in a minute.
    pub fn new(
        groups: Vec<muster::domain::Group>,
        people: Vec<muster::domain::Stakeholder>,
    ) -> World {
        use muster::adapters::memory::*;
        use muster::ports::{ChannelSender, Clock, Senders};
        use std::sync::Arc;
        let clock = VirtualClock::new(muster::domain::Ts::from_secs(1_700_000_000));
        let agenda: Arc<Agenda<()>> = Agenda::new(clock.clone());
        let sent = Arc::new(Accept::default());
        let sender: Arc<dyn ChannelSender> = sent.clone();
        let deps = embedded(
            Arc::new(muster::policy::Policy::default()),
            &agenda,
            Arc::new(MemoryStore::new()),
            Arc::new(MemoryDirectory::new(groups, people)),
            Senders {
                voice: sender.clone(),
                sms: sender.clone(),
                email: sender.clone(),
                push: sender,
            },
            clock.clone(),
            Arc::new(SeededIds::new(1)),
        );
        let tokens = muster::api::sign::AckTokens::new(
            muster::secret::Secret::new("ack-key-0123"),
            86_400_000,
        );
        let app = muster::api::finish(muster::api::v1::router(muster::api::v1::ApiState {
            deps: deps.clone(),
            secret: None,
            tokens,
            integrations: Default::default(),
        }));
        agenda.push(clock.now().plus(60_000), Item::Sweep);
        World {
            deps,
            app,
            agenda,
            clock,
            sent,
        }
    }

    /// Runs every job, timer and sweep due in the next `secs` seconds.
    pub async fn run_for(&self, secs: u64) {
        use muster::ports::Clock;
        let end = self.clock.now().plus(secs * 1000);
        muster::embedded::run_virtual(&self.deps, &self.agenda, &self.clock, end, async |_| {})
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    }

    /// `method uri` with a JSON body (or none): the status and the body as JSON.
    pub async fn request(
        &self,
        method: &str,
        uri: &str,
        body: Option<serde_json::Value>,
    ) -> (axum::http::StatusCode, serde_json::Value) {
        use axum::body::Body;
        let req = axum::http::Request::builder()
            .method(method)
            .uri(uri)
            .header("content-type", "application/json")
            .body(body.map_or_else(Body::empty, |b| Body::from(b.to_string())))
            .unwrap_or_else(|e| panic!("{e}"));
        let (status, _, body) = call(&self.app, req).await;
        (
            status,
            serde_json::from_str(&body).unwrap_or(serde_json::Value::Null),
        )
    }

    /// The virtual time now, in ms.
    pub fn clock_now(&self) -> u64 {
        use muster::ports::Clock;
        self.clock.now().0
    }

    /// The call placed to `who` (their first message), as the voice
    /// handler resolves it from its reference (`m1`, `m2`...).
    pub async fn call_to(&self, who: &str) -> muster::events::chime::Call {
        let at = self
            .sent
            .sent()
            .iter()
            .position(|m| m.key.stakeholder.as_str() == who)
            .unwrap_or_else(|| panic!("nothing sent to {who}"));
        muster::app::call_for(&self.deps, &format!("m{}", at + 1))
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .unwrap_or_else(|| panic!("no call to {who}"))
    }

    /// The messages accepted for `who`.
    pub fn sent_to(&self, who: &str) -> Vec<OutboundMessage> {
        self.sent
            .sent()
            .into_iter()
            .filter(|m| m.key.stakeholder.as_str() == who)
            .collect()
    }

    /// Every audit entry of `incident`.
    pub async fn trail(&self, incident: &str) -> Vec<muster::audit::AuditEntry> {
        let id = muster::domain::IncidentId::parse(incident).unwrap_or_else(|e| panic!("{e}"));
        self.deps
            .cascades
            .audit_trail(&id)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
    }
}
