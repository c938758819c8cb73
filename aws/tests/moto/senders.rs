//! Channel senders: what moto received (SESv2 email), End User Messaging SMS
//! and Chime SDK Voice (not in moto) against mocks of their documented
//! requests and errors, and the error
//! mapping for what moto cannot produce (throttling with Retry-After, 5xx,
//! timeouts) with aws-smithy-mocks. moto gaps: SESv2 `SendEmail` ignores the
//! configuration set and the tags, so their presence is asserted on the
//! request with a mock.
#![allow(clippy::unwrap_used)]

use crate::support;

use aws_sdk_sesv2::operation::send_email::SendEmailOutput;
use aws_smithy_mocks::{RuleMode, mock, mock_client};
use muster::domain::*;
use muster::engine::{CascadeKey, Route};
use muster::ports::{ChannelSender, OutboundMessage, SendError};
use muster_aws::senders::{EmailSender, PushSender, SmsSender, tag_value};

const PHONE: &str = "+12125550123";
const EMAIL: &str = "oncall.person@example.com";

fn msg(channel: Channel, to: Address) -> OutboundMessage {
    OutboundMessage {
        key: CascadeKey {
            incident: IncidentId::parse("INC-42").unwrap(),
            stakeholder: StakeholderId::parse("alice").unwrap(),
            route: Route::Member,
        },
        attempt: 2,
        channel,
        severity: Severity::P1,
        to,
        subject: "P1: Outage".into(),
        body: "P1 Outage. Reply ACK 4821".into(),
        ack_code: "4821".into(),
    }
}

fn sms() -> OutboundMessage {
    msg(
        Channel::Sms,
        Address::Phone(PhoneNumber::parse(PHONE).unwrap()),
    )
}

fn push() -> OutboundMessage {
    msg(
        Channel::Push,
        Address::Push(
            PushEndpoint::parse("arn:aws:sns:us-east-1:123456789012:endpoint/GCM/muster/1")
                .unwrap(),
        ),
    )
}

fn email() -> OutboundMessage {
    msg(
        Channel::Email,
        Address::Email(EmailAddress::parse(EMAIL).unwrap()),
    )
}

/// End User Messaging SMS is not in moto: the request and the error
/// mapping are asserted with mocks, against the API reference's
/// `SendTextMessage` shape.
#[tokio::test]
async fn an_sms_is_a_transactional_send_text_message_naming_its_attempt() {
    use aws_sdk_pinpointsmsvoicev2::operation::send_text_message::SendTextMessageOutput;
    use aws_sdk_pinpointsmsvoicev2::types::MessageType;
    use muster_aws::senders::Origination;
    let rule = mock!(aws_sdk_pinpointsmsvoicev2::Client::send_text_message)
        .match_requests(|r| {
            r.destination_phone_number() == Some(PHONE)
                && r.origination_identity() == Some("pool-0123456789abcdef")
                && r.configuration_set_name() == Some("muster-dev")
                && r.message_type() == Some(&MessageType::Transactional)
                && r.message_body() == Some("P1 Outage. Reply ACK 4821")
                && r.time_to_live().is_some_and(|t| (5..=259_200).contains(&t))
                && r.context()
                    .and_then(|c| c.get("attempt_id"))
                    .map(String::as_str)
                    == Some("INC-42/alice#2")
        })
        .then_output(|| {
            SendTextMessageOutput::builder()
                .message_id("862a8790-60c0-4430-9b2b-658bdexample")
                .build()
        });
    let client = mock_client!(aws_sdk_pinpointsmsvoicev2, RuleMode::Sequential, [&rule]);
    let sender = SmsSender::new(&client, "sms")
        .with_origination(Origination::parse("pool-0123456789abcdef").unwrap())
        .with_configuration_set("muster-dev");
    assert!(sender.accepts_replies(), "a pool receives replies");
    let got = sender.send(&sms()).await.unwrap();
    assert_eq!(
        got.provider_message_id,
        "862a8790-60c0-4430-9b2b-658bdexample"
    );
    assert_eq!(rule.num_calls(), 1);
    let from_sender_id =
        SmsSender::new(&client, "sms").with_origination(Origination::parse("MUSTER").unwrap());
    assert!(
        !from_sender_id.accepts_replies(),
        "a sender id cannot receive replies"
    );
}

#[tokio::test]
async fn sms_errors_map_to_what_the_cascade_does_next() {
    use aws_sdk_pinpointsmsvoicev2::operation::send_text_message::SendTextMessageError as E;
    use aws_sdk_pinpointsmsvoicev2::types::error::{
        ConflictException, InternalServerException, ServiceQuotaExceededException,
        ThrottlingException, ValidationException,
    };
    use aws_sdk_pinpointsmsvoicev2::types::{
        ConflictExceptionReason, ServiceQuotaExceededExceptionReason, ValidationExceptionField,
        ValidationExceptionReason,
    };
    let rules = [
        mock!(aws_sdk_pinpointsmsvoicev2::Client::send_text_message).then_error(|| {
            E::ThrottlingException(ThrottlingException::builder().message("slow down").build())
        }),
        mock!(aws_sdk_pinpointsmsvoicev2::Client::send_text_message).then_error(|| {
            E::ConflictException(
                ConflictException::builder()
                    .reason(ConflictExceptionReason::DestinationPhoneNumberOptedOut)
                    .build(),
            )
        }),
        mock!(aws_sdk_pinpointsmsvoicev2::Client::send_text_message).then_error(|| {
            E::ConflictException(
                ConflictException::builder()
                    .reason(ConflictExceptionReason::DestinationPhoneNumberNotVerified)
                    .build(),
            )
        }),
        mock!(aws_sdk_pinpointsmsvoicev2::Client::send_text_message).then_error(|| {
            E::ValidationException(
                ValidationException::builder()
                    .reason(ValidationExceptionReason::FieldValidationFailed)
                    .fields(
                        ValidationExceptionField::builder()
                            .name("DestinationPhoneNumber")
                            .message("invalid")
                            .build()
                            .unwrap(),
                    )
                    .build(),
            )
        }),
        mock!(aws_sdk_pinpointsmsvoicev2::Client::send_text_message).then_error(|| {
            E::ServiceQuotaExceededException(
                ServiceQuotaExceededException::builder()
                    .reason(ServiceQuotaExceededExceptionReason::MonthlySpendLimitReachedForText)
                    .build(),
            )
        }),
        mock!(aws_sdk_pinpointsmsvoicev2::Client::send_text_message)
            .then_error(|| E::InternalServerException(InternalServerException::builder().build())),
    ];
    let client = mock_client!(
        aws_sdk_pinpointsmsvoicev2,
        RuleMode::Sequential,
        rules.iter()
    );
    let sender = SmsSender::new(&client, "sms");
    let mut got = Vec::new();
    for _ in 0..rules.len() {
        got.push(sender.send(&sms()).await.unwrap_err());
    }
    assert!(
        matches!(got[0], SendError::Throttled { .. }),
        "{:?}",
        got[0]
    );
    assert!(
        matches!(&got[1], SendError::Unreachable(m) if m.contains("opted out")),
        "{:?}",
        got[1]
    );
    assert!(
        matches!(got[2], SendError::Failed(_)),
        "sandbox: {:?}",
        got[2]
    );
    assert!(matches!(got[3], SendError::Unreachable(_)), "{:?}", got[3]);
    assert!(
        matches!(got[4], SendError::Failed(_)),
        "spend limit: {:?}",
        got[4]
    );
    assert!(matches!(got[5], SendError::Transient(_)), "{:?}", got[5]);
    for e in &got {
        assert!(
            !format!("{e:?}").contains("2125550123"),
            "no number in errors: {e:?}"
        );
    }
}

#[tokio::test]
async fn email_reaches_moto() {
    let cfg = support::sdk_config().await;
    let ses = aws_sdk_sesv2::Client::new(&cfg);
    let from = format!("{}@muster.example.net", support::unique("from"));
    ses.create_email_identity()
        .email_identity(&from)
        .send()
        .await
        .unwrap();
    let sender = EmailSender::new(&ses, "email", &from, "muster-events");
    let accepted = sender.send(&email()).await.unwrap();
    let dump = support::data_json();
    let sent: Vec<&serde_json::Value> = dump["ses"]["Message"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["source"] == from.as_str())
        .collect();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0]["id"], accepted.provider_message_id.as_str());
    assert_eq!(sent[0]["subject"], "P1: Outage");
    assert_eq!(sent[0]["destinations"]["ToAddresses"][0], EMAIL);
}

#[tokio::test]
async fn email_request_names_the_configuration_set_and_the_attempt() {
    let want = tag_value("INC-42/alice#2");
    let rule = mock!(aws_sdk_sesv2::Client::send_email)
        .match_requests(move |r| {
            r.configuration_set_name() == Some("muster-events")
                && r.email_tags()
                    .iter()
                    .any(|t| t.name() == "attempt_id" && t.value() == want)
        })
        .then_output(|| SendEmailOutput::builder().message_id("e-1").build());
    let client = mock_client!(aws_sdk_sesv2, RuleMode::Sequential, [&rule]);
    let got = EmailSender::new(&client, "email", "muster@example.net", "muster-events")
        .send(&email())
        .await
        .unwrap();
    assert_eq!(got.provider_message_id, "e-1");
    assert_eq!(tag_value("INC-42/alice#2"), "INC-42_2falice_232");
}

fn sns_error(
    status: u16,
    kind: &str,
    code: &str,
    message: &str,
) -> aws_sdk_sns::config::http::HttpResponse {
    aws_sdk_sns::config::http::HttpResponse::new(
        status.try_into().unwrap(),
        aws_smithy_types::body::SdkBody::from(format!(
            "<ErrorResponse><Error><Type>{kind}</Type><Code>{code}</Code>\
             <Message>{message}</Message></Error></ErrorResponse>"
        )),
    )
}

fn ses_error(status: u16, code: &str, message: &str) -> aws_sdk_sesv2::config::http::HttpResponse {
    let mut r = aws_sdk_sesv2::config::http::HttpResponse::new(
        status.try_into().unwrap(),
        aws_smithy_types::body::SdkBody::from(format!("{{\"message\":\"{message}\"}}")),
    );
    r.headers_mut().insert("x-amzn-errortype", code.to_string());
    r.headers_mut().insert("content-type", "application/json");
    r
}

#[tokio::test]
async fn sns_errors_map_to_send_errors() {
    let throttled = mock!(aws_sdk_sns::Client::publish).then_http_response(|| {
        aws_sdk_sns::config::http::HttpResponse::new(
            429.try_into().unwrap(),
            aws_smithy_types::body::SdkBody::from(
                "<ErrorResponse><Error><Type>Sender</Type><Code>Throttling</Code>\
                     <Message>Rate exceeded for +12125550123</Message></Error></ErrorResponse>",
            ),
        )
    });
    let mut with_header = aws_sdk_sns::config::http::HttpResponse::new(
        400.try_into().unwrap(),
        aws_smithy_types::body::SdkBody::from(
            "<ErrorResponse><Error><Type>Sender</Type><Code>Throttled</Code>\
             <Message>slow down</Message></Error></ErrorResponse>",
        ),
    );
    with_header.headers_mut().insert("retry-after", "7");
    let with_header = std::sync::Mutex::new(Some(with_header));
    let throttled_after = mock!(aws_sdk_sns::Client::publish)
        .then_http_response(move || with_header.lock().unwrap().take().unwrap());
    let unavailable = mock!(aws_sdk_sns::Client::publish).then_http_response(|| {
        aws_sdk_sns::config::http::HttpResponse::new(
            503.try_into().unwrap(),
            aws_smithy_types::body::SdkBody::from(
                "<ErrorResponse><Error><Type>Receiver</Type><Code>ServiceUnavailable</Code>\
                 <Message>try later</Message></Error></ErrorResponse>",
            ),
        )
    });
    let invalid = mock!(aws_sdk_sns::Client::publish).then_http_response(|| {
        sns_error(
            400,
            "Sender",
            "InvalidParameter",
            &format!("Invalid parameter: PhoneNumber Reason: {PHONE}"),
        )
    });
    let typed_throttle = mock!(aws_sdk_sns::Client::publish)
        .then_http_response(|| sns_error(400, "Sender", "KMSThrottling", "KMS throttled"));
    let client = mock_client!(
        aws_sdk_sns,
        RuleMode::Sequential,
        [
            &throttled,
            &throttled_after,
            &unavailable,
            &invalid,
            &typed_throttle
        ]
    );
    let sender = PushSender::new(&client, "push");
    let outcomes = [
        sender.send(&push()).await.unwrap_err(),
        sender.send(&push()).await.unwrap_err(),
        sender.send(&push()).await.unwrap_err(),
        sender.send(&push()).await.unwrap_err(),
        sender.send(&push()).await.unwrap_err(),
    ];
    assert_eq!(outcomes[0], SendError::Throttled { retry_after: None });
    assert_eq!(
        outcomes[1],
        SendError::Throttled {
            retry_after: Some(7_000)
        }
    );
    assert!(
        matches!(outcomes[2], SendError::Transient(_)),
        "{:?}",
        outcomes[2]
    );
    assert!(
        matches!(outcomes[3], SendError::Unreachable(_)),
        "{:?}",
        outcomes[3]
    );
    assert_eq!(outcomes[4], SendError::Throttled { retry_after: None });
    for o in &outcomes {
        assert!(!o.to_string().contains(PHONE), "contact detail in {o}");
        assert!(
            !format!("{o:?}").contains("2125550123"),
            "contact detail in {o:?}"
        );
    }
}

#[tokio::test]
async fn ses_errors_map_to_send_errors() {
    let rules = [
        mock!(aws_sdk_sesv2::Client::send_email)
            .then_http_response(|| ses_error(429, "TooManyRequestsException", "slow down")),
        mock!(aws_sdk_sesv2::Client::send_email).then_http_response(|| {
            ses_error(
                400,
                "MessageRejected",
                &format!("Address blacklisted: {EMAIL}"),
            )
        }),
        mock!(aws_sdk_sesv2::Client::send_email)
            .then_http_response(|| ses_error(400, "SendingPausedException", "paused")),
        mock!(aws_sdk_sesv2::Client::send_email)
            .then_http_response(|| ses_error(500, "InternalFailure", "oops")),
    ];
    let client = mock_client!(aws_sdk_sesv2, RuleMode::Sequential, &rules);
    let sender = EmailSender::new(&client, "email", "muster@example.net", "muster-events");
    let mut outcomes = Vec::new();
    for _ in 0..4 {
        outcomes.push(sender.send(&email()).await.unwrap_err());
    }
    assert_eq!(outcomes[0], SendError::Throttled { retry_after: None });
    assert!(
        matches!(outcomes[1], SendError::Unreachable(_)),
        "{:?}",
        outcomes[1]
    );
    assert!(
        matches!(outcomes[2], SendError::Failed(_)),
        "{:?}",
        outcomes[2]
    );
    assert!(
        matches!(outcomes[3], SendError::Transient(_)),
        "{:?}",
        outcomes[3]
    );
    for o in &outcomes {
        assert!(!format!("{o:?}").contains(EMAIL), "contact detail in {o:?}");
    }
}

#[tokio::test]
async fn a_timeout_is_transient() {
    use aws_sdk_sns::config::timeout::TimeoutConfig;
    use std::time::Duration;
    // A server that accepts and never answers.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = listener.accept().await {
            held.push(s);
        }
    });
    let cfg = support::sdk_config().await;
    let conf = aws_sdk_sns::config::Builder::from(&cfg)
        .endpoint_url(format!("http://{addr}"))
        .timeout_config(
            TimeoutConfig::builder()
                .operation_attempt_timeout(Duration::from_millis(300))
                .build(),
        )
        .build();
    let client = aws_sdk_sns::Client::from_conf(conf);
    let push = PushSender::new(&client, "push");
    let to = Address::Push(
        PushEndpoint::parse("arn:aws:sns:us-east-1:123456789012:endpoint/GCM/muster/1").unwrap(),
    );
    let err = push.send(&msg(Channel::Push, to)).await.unwrap_err();
    assert!(matches!(err, SendError::Transient(_)), "{err:?}");
    hold.abort();
}

/// Chime SDK Voice is not in moto: the request and the error mapping are
/// tested with mocks.
#[tokio::test]
async fn a_voice_call_names_its_attempt_and_is_registered_under_its_transaction() {
    use aws_sdk_chimesdkvoice::operation::create_sip_media_application_call::CreateSipMediaApplicationCallOutput;
    use aws_sdk_chimesdkvoice::types::SipMediaApplicationCall;
    use muster_aws::senders::VoiceSender;
    let ok = mock!(aws_sdk_chimesdkvoice::Client::create_sip_media_application_call)
        .match_requests(|r| {
            let args = r.arguments_map();
            let arg = |k: &str| args.and_then(|a| a.get(k)).map(String::as_str);
            r.to_phone_number() == Some(PHONE)
                && r.sip_media_application_id() == Some("sma-1")
                && (arg("incident"), arg("stakeholder"), arg("route"), arg("attempt"))
                    == (Some("INC-42"), Some("alice"), Some("member"), Some("2"))
                // The message is rendered when the call is answered, never
                // passed as an argument.
                && args.is_some_and(|a| a.values().all(|v| !v.contains("Outage")))
        })
        .then_output(|| {
            CreateSipMediaApplicationCallOutput::builder()
                .sip_media_application_call(
                    SipMediaApplicationCall::builder()
                        .transaction_id("tx-1")
                        .build(),
                )
                .build()
        });
    let throttled = mock!(aws_sdk_chimesdkvoice::Client::create_sip_media_application_call)
        .then_http_response(|| {
            let mut r = aws_sdk_chimesdkvoice::config::http::HttpResponse::new(
                429.try_into().unwrap(),
                aws_smithy_types::body::SdkBody::from("{\"Message\":\"slow down\"}"),
            );
            r.headers_mut()
                .insert("x-amzn-errortype", "ThrottledClientException");
            r.headers_mut().insert("retry-after", "2");
            r
        });
    let client = mock_client!(
        aws_sdk_chimesdkvoice,
        RuleMode::Sequential,
        [&ok, &throttled]
    );
    let voice = VoiceSender::new(&client, "voice", "+12065550100", "sma-1");
    let m = msg(
        Channel::Voice,
        Address::Phone(PhoneNumber::parse(PHONE).unwrap()),
    );
    // The id the SMA handler looks the call up by (events::chime).
    assert_eq!(
        voice.send(&m).await.unwrap().provider_message_id,
        muster::events::chime::provider_message_id("tx-1")
    );
    assert_eq!(
        voice.send(&m).await.unwrap_err(),
        SendError::Throttled {
            retry_after: Some(2_000)
        }
    );
}
