//! SMS and push through SNS `Publish`. SMS is sent as `Transactional` (the
//! route SNS keeps for time-critical messages); push publishes to the
//! stakeholder's platform endpoint ARN.

use super::map_send_error;
use async_trait::async_trait;
use aws_sdk_sns::Client;
use aws_sdk_sns::config::retry::RetryConfig;
use aws_sdk_sns::types::MessageAttributeValue;
use muster::domain::Address;
use muster::ports::{Accepted, ChannelSender, OutboundMessage, SendError};

/// A copy of `client` with SDK retries off (see the module doc of `senders`).
fn no_retries(client: &Client) -> Client {
    Client::from_conf(
        client
            .config()
            .to_builder()
            .retry_config(RetryConfig::disabled())
            .build(),
    )
}

pub struct SmsSender {
    client: Client,
    endpoint: String,
    origination: Option<String>,
}

impl SmsSender {
    /// `endpoint` is the rate-limiting unit ("sms", "sms-us", ...).
    pub fn new(client: &Client, endpoint: impl Into<String>) -> Self {
        SmsSender {
            client: no_retries(client),
            endpoint: endpoint.into(),
            origination: None,
        }
    }

    /// Sends from this origination identity (a phone number or sender id
    /// of AWS End User Messaging SMS), as the SNS attribute
    /// `AWS.MM.SMS.OriginationNumber`; without it SNS picks one.
    pub fn with_origination(mut self, origination: impl Into<String>) -> Self {
        self.origination = Some(origination.into());
        self
    }
}

#[async_trait]
impl ChannelSender for SmsSender {
    fn endpoint(&self) -> &str {
        &self.endpoint
    }

    async fn send(&self, msg: &OutboundMessage) -> Result<Accepted, SendError> {
        let Address::Phone(phone) = &msg.to else {
            return Err(SendError::Unreachable("sms: not a phone number".into()));
        };
        let sms_type = MessageAttributeValue::builder()
            .data_type("String")
            .string_value("Transactional")
            .build()
            .map_err(|_| SendError::Failed("sms: attribute not built".into()))?;
        let mut publish = self
            .client
            .publish()
            .phone_number(phone.expose())
            .message(&msg.body)
            .message_attributes("AWS.SNS.SMS.SMSType", sms_type);
        if let Some(origination) = &self.origination {
            let value = MessageAttributeValue::builder()
                .data_type("String")
                .string_value(origination)
                .build()
                .map_err(|_| SendError::Failed("sms: attribute not built".into()))?;
            publish = publish.message_attributes("AWS.MM.SMS.OriginationNumber", value);
        }
        let resp = publish
            .send()
            .await
            .map_err(|e| map_send_error("sns publish (sms)", &e))?;
        let id = resp
            .message_id()
            .ok_or_else(|| SendError::Transient("sns publish (sms): no message id".into()))?;
        Ok(Accepted {
            provider_message_id: id.to_string(),
        })
    }
}

pub struct PushSender {
    client: Client,
    endpoint: String,
}

impl PushSender {
    pub fn new(client: &Client, endpoint: impl Into<String>) -> Self {
        PushSender {
            client: no_retries(client),
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
