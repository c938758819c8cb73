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
