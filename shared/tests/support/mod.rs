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
