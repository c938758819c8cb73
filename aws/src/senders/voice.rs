//! Voice through the Chime SDK PSTN audio service: one
//! `CreateSipMediaApplicationCall` per attempt. The SIP media application
//! invokes `receipt` (`muster::events::chime`), which finds the call by
//! the provider message id this sender returns,
//! `chime::provider_message_id(transaction id)`, and renders the prompt from
//! the cascade when the call is answered. The `ArgumentsMap` (`incident`,
//! `stakeholder`, `route`, `attempt`) names the attempt for the call's
//! logs and for NEW_OUTBOUND_CALL; it never carries the message.

use super::map_send_error;
use async_trait::async_trait;
use aws_sdk_chimesdkvoice::Client;
use muster::domain::Address;
use muster::ports::{Accepted, ChannelSender, OutboundMessage, SendError};

pub struct VoiceSender {
    client: Client,
    endpoint: String,
    from: String,
    sip_media_application_id: String,
}

impl VoiceSender {
    /// `from` is the deployment's caller id (an E.164 number it owns).
    pub fn new(
        client: &Client,
        endpoint: impl Into<String>,
        from: impl Into<String>,
        sip_media_application_id: impl Into<String>,
    ) -> Self {
        VoiceSender {
            client: super::no_retries!(aws_sdk_chimesdkvoice, client),
            endpoint: endpoint.into(),
            from: from.into(),
            sip_media_application_id: sip_media_application_id.into(),
        }
    }
}

#[async_trait]
impl ChannelSender for VoiceSender {
    fn endpoint(&self) -> &str {
        &self.endpoint
    }

    async fn send(&self, msg: &OutboundMessage) -> Result<Accepted, SendError> {
        let Address::Phone(to) = &msg.to else {
            return Err(SendError::Unreachable("voice: not a phone number".into()));
        };
        let resp = self
            .client
            .create_sip_media_application_call()
            .sip_media_application_id(&self.sip_media_application_id)
            .from_phone_number(&self.from)
            .to_phone_number(to.expose())
            .arguments_map("incident", msg.key.incident.as_str())
            .arguments_map("stakeholder", msg.key.stakeholder.as_str())
            .arguments_map("route", msg.key.route.encode())
            .arguments_map("attempt", msg.attempt.to_string())
            .send()
            .await
            .map_err(|e| map_send_error("chime create_sip_media_application_call", &e))?;
        let id = resp
            .sip_media_application_call()
            .and_then(|c| c.transaction_id())
            .ok_or_else(|| SendError::Transient("chime call: no transaction id".into()))?;
        Ok(Accepted {
            provider_message_id: muster::events::chime::provider_message_id(id),
        })
    }
}
