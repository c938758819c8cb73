//! Voice through the Chime SDK PSTN audio service: one
//! `CreateSipMediaApplicationCall` per attempt. The SIP media application
//! (a Lambda outside this crate) reads `attempt_id` and `prompt` from the
//! call's `ArgumentsMap`, speaks the prompt and reports "press 1" as an
//! acknowledgement of that attempt. The provider message id is the call's
//! transaction id.

use super::map_send_error;
use async_trait::async_trait;
use aws_sdk_chimesdkvoice::Client;
use aws_sdk_chimesdkvoice::config::retry::RetryConfig;
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
            client: Client::from_conf(
                client
                    .config()
                    .to_builder()
                    .retry_config(RetryConfig::disabled())
                    .build(),
            ),
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
            .arguments_map("attempt_id", msg.idempotency_key())
            .arguments_map("prompt", &msg.body)
            .send()
            .await
            .map_err(|e| map_send_error("chime create_sip_media_application_call", &e))?;
        let id = resp
            .sip_media_application_call()
            .and_then(|c| c.transaction_id())
            .ok_or_else(|| SendError::Transient("chime call: no transaction id".into()))?;
        Ok(Accepted {
            provider_message_id: id.to_string(),
        })
    }
}
