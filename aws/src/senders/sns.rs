//! Push through SNS `Publish` to the stakeholder's platform endpoint ARN
//! (SMS goes through End User Messaging SMS: `senders::sms`).

use super::map_send_error;
use async_trait::async_trait;
use aws_sdk_sns::Client;
use muster::domain::Address;
use muster::ports::{Accepted, ChannelSender, OutboundMessage, SendError};

pub struct PushSender {
    client: Client,
    endpoint: String,
}

impl PushSender {
    pub fn new(client: &Client, endpoint: impl Into<String>) -> Self {
        PushSender {
            client: super::no_retries!(aws_sdk_sns, client),
            endpoint: endpoint.into(),
        }
    }
}

#[async_trait]
impl ChannelSender for PushSender {
    fn endpoint(&self) -> &str {
        &self.endpoint
    }

    async fn send(&self, msg: &OutboundMessage) -> Result<Accepted, SendError> {
        let Address::Push(target) = &msg.to else {
            return Err(SendError::Unreachable("push: not a push endpoint".into()));
        };
        let resp = self
            .client
            .publish()
            .target_arn(target.expose())
            .subject(&msg.subject)
            .message(&msg.body)
            .send()
            .await
            .map_err(|e| map_send_error("sns publish (push)", &e))?;
        let id = resp
            .message_id()
            .ok_or_else(|| SendError::Transient("sns publish (push): no message id".into()))?;
        Ok(Accepted {
            provider_message_id: id.to_string(),
        })
    }
}
