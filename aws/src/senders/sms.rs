//! SMS through AWS End User Messaging SMS: one `SendTextMessage` per
//! attempt (API `pinpoint-sms-voice-v2`), `TRANSACTIONAL`, with the
//! deployment's configuration set (whose SNS event destination brings the
//! delivery events back to `receipt`, `events::sms`) and the attempt's id
//! in `Context` (at most 5 entries, each value 1 to 800 characters).
//!
//! The origination identity is used as what it is ([`Origination`]): a
//! phone number, a pool or a sender id, each passed as
//! `OriginationIdentity` (number, id or ARN). A sender id cannot receive
//! replies, so its messages never ask for one ([`ChannelSender::accepts_replies`]).
//!
//! | SDK outcome | SendError |
//! | --- | --- |
//! | `ThrottlingException`, HTTP 429 | `Throttled` |
//! | `InternalServerException`, 5xx, timeouts | `Transient` |
//! | `ConflictException` `DESTINATION_PHONE_NUMBER_OPTED_OUT` (the number sent STOP to the origination) | `Unreachable` |
//! | `ValidationException` (a number End User Messaging will not send to, or a message it refuses) | `Unreachable` when the destination is at fault, else `Failed` |
//! | anything else (`AccessDeniedException`, `ResourceNotFoundException`, `ServiceQuotaExceededException` such as the monthly spend limit, a sandbox's unverified destination) | `Failed` |

use super::map_send_error;
use async_trait::async_trait;
use aws_sdk_pinpointsmsvoicev2::Client;
use aws_sdk_pinpointsmsvoicev2::error::SdkError;
use aws_sdk_pinpointsmsvoicev2::operation::send_text_message::SendTextMessageError;
use aws_sdk_pinpointsmsvoicev2::types::{ConflictExceptionReason, MessageType};
use muster::domain::Address;
use muster::ports::{Accepted, ChannelSender, OutboundMessage, SendError};

/// How long End User Messaging keeps trying to hand a message to the
/// carrier (its default is 72 hours): an alert an hour old is noise, and
/// the cascade has long moved on.
pub const TIME_TO_LIVE_SECS: i32 = 3600;

/// What a message is sent from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origination {
    /// A phone number (E.164, `phone-...` id or ARN): receives replies when
    /// two-way SMS is enabled on it.
    PhoneNumber(String),
    /// A pool of numbers (`pool-...` id or ARN).
    Pool(String),
    /// An alphanumeric sender id (the id itself, `senderid-...` or ARN):
    /// cannot receive replies.
    SenderId(String),
}

impl Origination {
    /// Classifies a configured identity; refuses what End User Messaging
    /// would refuse (`[A-Za-z0-9_:/+-]`, 1 to 256 characters).
    pub fn parse(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if s.is_empty()
            || s.len() > 256
            || !s
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_:/+-".contains(c))
        {
            return Err(format!(
                "SMS origination identity {:?}: expected a phone number, pool or sender id (letters, digits, _ : / + -)",
                s.chars().take(60).collect::<String>()
            ));
        }
        let lower = s.to_ascii_lowercase();
        Ok(if lower.contains(":pool/") || lower.starts_with("pool-") {
            Origination::Pool(s.to_string())
        } else if lower.contains(":phone-number/")
            || lower.starts_with("phone-")
            || (s.starts_with('+') && s[1..].chars().all(|c| c.is_ascii_digit()))
        {
            Origination::PhoneNumber(s.to_string())
        } else {
            Origination::SenderId(s.to_string())
        })
    }

    fn identity(&self) -> &str {
        match self {
            Origination::PhoneNumber(s) | Origination::Pool(s) | Origination::SenderId(s) => s,
        }
    }

    /// Whether replies to a message from it reach the two-way topic.
    pub fn receives_replies(&self) -> bool {
        !matches!(self, Origination::SenderId(_))
    }
}

pub struct SmsSender {
    client: Client,
    endpoint: String,
    origination: Option<Origination>,
    configuration_set: Option<String>,
}

impl SmsSender {
    /// `endpoint` is the rate-limiting unit ("sms", "sms-us", ...).
    pub fn new(client: &Client, endpoint: impl Into<String>) -> Self {
        SmsSender {
            client: super::no_retries!(aws_sdk_pinpointsmsvoicev2, client),
            endpoint: endpoint.into(),
            origination: None,
            configuration_set: None,
        }
    }

    pub fn with_origination(mut self, origination: Origination) -> Self {
        self.origination = Some(origination);
        self
    }

    /// The configuration set whose event destination reports deliveries.
    pub fn with_configuration_set(mut self, name: impl Into<String>) -> Self {
        self.configuration_set = Some(name.into());
        self
    }
}

fn map_error(
    err: &SdkError<SendTextMessageError, aws_sdk_pinpointsmsvoicev2::config::http::HttpResponse>,
) -> SendError {
    const OP: &str = "sms-voice send_text_message";
    if let SdkError::ServiceError(se) = err {
        match se.err() {
            SendTextMessageError::ThrottlingException(_) => {
                return SendError::Throttled {
                    retry_after: super::retry_after(se.raw()),
                };
            }
            SendTextMessageError::InternalServerException(_) => {
                return SendError::Transient(format!("{OP}: InternalServerException"));
            }
            SendTextMessageError::ConflictException(c)
                if c.reason() == Some(&ConflictExceptionReason::DestinationPhoneNumberOptedOut) =>
            {
                return SendError::Unreachable(format!("{OP}: the number opted out"));
            }
            SendTextMessageError::ValidationException(v) => {
                use aws_sdk_pinpointsmsvoicev2::types::ValidationExceptionReason as R;
                let reason = v.reason().map(|r| r.as_str()).unwrap_or("unknown");
                let destination = matches!(
                    v.reason(),
                    Some(
                        R::DestinationCountryBlocked
                            | R::CountryCodeMismatch
                            | R::InvalidIdentityForDestinationCountry
                    )
                ) || v
                    .fields()
                    .iter()
                    .any(|f| f.name() == "DestinationPhoneNumber");
                return if destination {
                    SendError::Unreachable(format!("{OP}: ValidationException {reason}"))
                } else {
                    SendError::Failed(format!("{OP}: ValidationException {reason}"))
                };
            }
            SendTextMessageError::ConflictException(c) => {
                let reason = c.reason().map(|r| r.as_str()).unwrap_or("unknown");
                return SendError::Failed(format!("{OP}: ConflictException {reason}"));
            }
            _ => {}
        }
    }
    map_send_error(OP, err)
}

#[async_trait]
impl ChannelSender for SmsSender {
    fn endpoint(&self) -> &str {
        &self.endpoint
    }

    fn accepts_replies(&self) -> bool {
        self.origination
            .as_ref()
            .is_none_or(Origination::receives_replies)
    }

    async fn send(&self, msg: &OutboundMessage) -> Result<Accepted, SendError> {
        let Address::Phone(phone) = &msg.to else {
            return Err(SendError::Unreachable("sms: not a phone number".into()));
        };
        let resp = self
            .client
            .send_text_message()
            .destination_phone_number(phone.expose())
            .set_origination_identity(self.origination.as_ref().map(|o| o.identity().to_string()))
            .set_configuration_set_name(self.configuration_set.clone())
            .message_body(&msg.body)
            .message_type(MessageType::Transactional)
            .time_to_live(TIME_TO_LIVE_SECS)
            .context("attempt_id", msg.idempotency_key())
            .send()
            .await
            .map_err(|e| map_error(&e))?;
        let id = resp
            .message_id()
            .ok_or_else(|| SendError::Transient("sms: no message id".into()))?;
        Ok(Accepted {
            provider_message_id: id.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_origination_is_used_as_what_it_is() {
        let o = |s| Origination::parse(s).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            o("+12065550152"),
            Origination::PhoneNumber("+12065550152".into())
        );
        assert_eq!(
            o("phone-0123456789abcdef"),
            Origination::PhoneNumber("phone-0123456789abcdef".into())
        );
        assert_eq!(
            o("arn:aws:sms-voice:us-east-1:111122223333:pool/pool-0123"),
            Origination::Pool("arn:aws:sms-voice:us-east-1:111122223333:pool/pool-0123".into())
        );
        assert_eq!(
            o("pool-0123456789abcdef"),
            Origination::Pool("pool-0123456789abcdef".into())
        );
        assert_eq!(o("MUSTER"), Origination::SenderId("MUSTER".into()));
        assert!(o("+12065550152").receives_replies() && o("pool-1").receives_replies());
        assert!(
            !o("MUSTER").receives_replies(),
            "a sender id cannot receive replies"
        );
        for bad in ["", "  ", "has space", "semi;colon"] {
            assert!(Origination::parse(bad).is_err(), "{bad:?}");
        }
    }
}
