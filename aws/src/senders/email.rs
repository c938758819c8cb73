//! Email through SESv2 `SendEmail`, in the deployment's configuration set
//! (whose event destination carries delivery and bounce events back), with
//! the cascade, stakeholder and attempt in message tags so that every event
//! names its attempt.

use super::{map_send_error, tag_value};
use async_trait::async_trait;
use aws_sdk_sesv2::Client;
use aws_sdk_sesv2::types::{Body, Content, Destination, EmailContent, Message, MessageTag};
use muster::domain::Address;
use muster::ports::{Accepted, ChannelSender, OutboundMessage, SendError};

pub struct EmailSender {
    client: Client,
    endpoint: String,
    from: String,
    configuration_set: String,
}

impl EmailSender {
    pub fn new(
        client: &Client,
        endpoint: impl Into<String>,
        from: impl Into<String>,
        configuration_set: impl Into<String>,
    ) -> Self {
        EmailSender {
            client: super::no_retries!(aws_sdk_sesv2, client),
            endpoint: endpoint.into(),
            from: from.into(),
            configuration_set: configuration_set.into(),
        }
    }
}

fn content(s: &str) -> Result<Content, SendError> {
    Content::builder()
        .data(s)
        .charset("UTF-8")
        .build()
        .map_err(|_| SendError::Failed("ses: content not built".into()))
}

fn tag(name: &str, value: &str) -> Result<MessageTag, SendError> {
    MessageTag::builder()
        .name(name)
        .value(tag_value(value))
        .build()
        .map_err(|_| SendError::Failed("ses: tag not built".into()))
}

#[async_trait]
impl ChannelSender for EmailSender {
    fn endpoint(&self) -> &str {
        &self.endpoint
    }

    async fn send(&self, msg: &OutboundMessage) -> Result<Accepted, SendError> {
        let Address::Email(to) = &msg.to else {
            return Err(SendError::Unreachable("email: not an email address".into()));
        };
        let message = Message::builder()
            .subject(content(&msg.subject)?)
            .body(Body::builder().text(content(&msg.body)?).build())
            .build();
        let resp = self
            .client
            .send_email()
            .from_email_address(&self.from)
            .destination(Destination::builder().to_addresses(to.expose()).build())
            .content(EmailContent::builder().simple(message).build())
            .configuration_set_name(&self.configuration_set)
            .email_tags(tag("attempt_id", &msg.idempotency_key())?)
            .email_tags(tag("incident", msg.key.incident.as_str())?)
            .email_tags(tag("attempt", &msg.attempt.to_string())?)
            .send()
            .await
            .map_err(|e| map_send_error("ses send_email", &e))?;
        let id = resp
            .message_id()
            .ok_or_else(|| SendError::Transient("ses send_email: no message id".into()))?;
        Ok(Accepted {
            provider_message_id: id.to_string(),
        })
    }
}
