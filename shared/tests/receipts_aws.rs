//! Receipts delivered by AWS: SNS notifications (signature verification,
//! SES events, inbound SMS) and CloudWatch Logs SMS delivery logs, over
//! the fixtures in tests/fixtures/{sns,ses,cloudwatch}.

use async_trait::async_trait;
use base64::Engine as _;
use muster::app::ReceiptEvent;
use muster::domain::PhoneNumber;
use muster::engine::ReceiptStatus;
use muster::events::cwlogs::{self, CwLogsError, receipts_from_cloudwatch_logs};
use muster::events::sns::{
    CERT_CACHE_CAPACITY, CertFetcher, SnsError, SnsMessage, SnsVerifier, check_cert_url,
    public_key_from_pem, receipts_from_sns, string_to_sign,
};
use serde_json::{Value, json};
use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

const TOPIC: &str = "arn:aws:sns:us-east-1:123456789012:muster-dev-ses-events";
const CERT_URL: &str =
    "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-0000000000000000000000.pem";
const SES_MESSAGE_ID: &str = "0100018c2f5e4a3b-3f1d7c2a-9b1e-4c2d-8f3e-5a6b7c8d9e0f-000000";

fn fixture_path(rel: &str) -> String {
    format!("{}/../tests/fixtures/{rel}", env!("CARGO_MANIFEST_DIR"))
}

fn fixture_text(rel: &str) -> String {
    let path = fixture_path(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn fixture_json(rel: &str) -> Value {
    serde_json::from_str(&fixture_text(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

fn private_key() -> ring::rsa::KeyPair {
    let path = fixture_path("sns/key.pk8.der");
    let der = std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    ring::rsa::KeyPair::from_pkcs8(&der).expect("fixture key")
}

/// Serves the fixture certificate for any URL and counts the fetches.
#[derive(Default)]
struct FixtureFetcher {
    fetches: AtomicUsize,
}

#[async_trait]
impl CertFetcher for FixtureFetcher {
    async fn fetch_pem(&self, _url: &str) -> Result<String, SnsError> {
        self.fetches.fetch_add(1, Ordering::SeqCst);
        Ok(fixture_text("sns/cert.pem"))
    }
}

fn verifier() -> (SnsVerifier, Arc<FixtureFetcher>) {
    let fetcher = Arc::new(FixtureFetcher::default());
    (
        SnsVerifier::new([TOPIC.to_string()], fetcher.clone()),
        fetcher,
    )
}

/// A Lambda SNS event for `message`, signed with the fixture key.
fn signed_event(message: &str, version: &str, subject: Option<&str>) -> Value {
    let mut sns = json!({
        "Type": "Notification",
        "MessageId": "95df01b4-ee98-5cb9-9903-4c221d41eb5e",
        "TopicArn": TOPIC,
        "Subject": subject,
        "Message": message,
        "Timestamp": "2026-11-27T20:40:04.123Z",
        "SignatureVersion": version,
        "Signature": "",
        "SigningCertUrl": CERT_URL,
        "UnsubscribeUrl": "https://sns.us-east-1.amazonaws.com/?Action=Unsubscribe",
        "MessageAttributes": {}
    });
    sign(&mut sns);
    json!({"Records": [{"EventSource": "aws:sns", "EventVersion": "1.0", "Sns": sns}]})
}

fn sign(sns: &mut Value) {
    let msg: SnsMessage = serde_json::from_value(sns.clone()).expect("message");
    let text = string_to_sign(&msg).expect("string to sign");
    if msg.signature_version == "1" {
        // ring signs no SHA-1: the recorded signatures of the notifications
        // the tests make (tests/fixtures/sns/v1_signatures.json, openssl).
        let recorded = fixture_json("sns/v1_signatures.json");
        let subject = msg.subject.clone().unwrap_or_else(|| "none".into());
        let sig = recorded["signatures"][&subject]
            .as_str()
            .unwrap_or_else(|| panic!("no recorded v1 signature for subject {subject:?}"));
        sns["Signature"] = json!(sig);
        return;
    }
    let key = private_key();
    let mut sig = vec![0; key.public().modulus_len()];
    key.sign(
        &ring::signature::RSA_PKCS1_SHA256,
        &ring::rand::SystemRandom::new(),
        text.as_bytes(),
        &mut sig,
    )
    .expect("signing");
    sns["Signature"] = json!(base64::engine::general_purpose::STANDARD.encode(sig));
}

fn delivery(id: &str, status: ReceiptStatus) -> ReceiptEvent {
    ReceiptEvent::Delivery {
        provider_message_id: id.to_string(),
        status,
    }
}

#[tokio::test]
async fn committed_signed_lambda_event_verifies_and_yields_the_delivery() {
    let (v, fetcher) = verifier();
    let event = fixture_json("sns/lambda_ses_delivery.json");
    let got = receipts_from_sns(&event, &v).await.expect("verified");
    assert_eq!(
        got,
        vec![delivery(SES_MESSAGE_ID, ReceiptStatus::Delivered)]
    );
    assert_eq!(fetcher.fetches.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn ses_events_map_to_receipts() {
    let (v, _) = verifier();
    for (name, want) in [
        ("delivery", Some(ReceiptStatus::Delivered)),
        ("bounce_permanent", Some(ReceiptStatus::Unreachable)),
        ("bounce_transient", None),
        ("complaint", Some(ReceiptStatus::Failed)),
        ("reject", Some(ReceiptStatus::Failed)),
        ("delivery_delay", None),
        ("send", None),
        ("open", None),
    ] {
        let message = fixture_text(&format!("ses/{name}.json"));
        let got = receipts_from_sns(&signed_event(&message, "2", None), &v)
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let want: Vec<_> = want
            .map(|s| delivery(SES_MESSAGE_ID, s))
            .into_iter()
            .collect();
        assert_eq!(got, want, "{name}");
    }
}

#[tokio::test]
async fn ses_attempt_tag_is_read() {
    let body = fixture_json("ses/delivery.json");
    assert_eq!(
        muster::events::ses::attempt_id_tag(&body),
        Some("inc-01JD3Q7Z0000000000000000_3ast-00042_3amember_3a1")
    );
}

#[tokio::test]
async fn signature_version_1_and_a_subject_verify() {
    let (v, _) = verifier();
    let message = fixture_text("ses/delivery.json");
    for (version, subject) in [("1", None), ("1", Some("Amazon SES")), ("2", Some("x\ny"))] {
        let got = receipts_from_sns(&signed_event(&message, version, subject), &v)
            .await
            .unwrap_or_else(|e| panic!("v{version} {subject:?}: {e}"));
        assert_eq!(got.len(), 1);
    }
}

#[tokio::test]
async fn a_modified_message_fails() {
    let (v, _) = verifier();
    let message = fixture_text("ses/delivery.json");
    for field in ["Message", "MessageId", "Timestamp", "Subject"] {
        let mut event = signed_event(&message, "2", Some("s"));
        let sns = &mut event["Records"][0]["Sns"];
        sns[field] = json!(format!("{}x", sns[field].as_str().unwrap_or_default()));
        let err = receipts_from_sns(&event, &v).await.expect_err(field);
        assert!(matches!(err, SnsError::BadSignature(_)), "{field}: {err}");
        assert!(!err.is_transient());
    }
    // The subject removed after signing.
    let mut event = signed_event(&message, "2", Some("s"));
    event["Records"][0]["Sns"]["Subject"] = Value::Null;
    let err = receipts_from_sns(&event, &v).await.expect_err("no subject");
    assert!(matches!(err, SnsError::BadSignature(_)), "{err}");
    // Signed with SHA-256 but claiming SHA-1.
    let mut event = signed_event(&message, "2", None);
    event["Records"][0]["Sns"]["SignatureVersion"] = json!("1");
    let err = receipts_from_sns(&event, &v).await.expect_err("downgrade");
    assert!(matches!(err, SnsError::BadSignature(_)), "{err}");
}

#[tokio::test]
async fn bad_urls_topics_and_versions_are_rejected_before_any_fetch() {
    let (v, fetcher) = verifier();
    let message = fixture_text("ses/delivery.json");
    for url in [
        "http://sns.us-east-1.amazonaws.com/SimpleNotificationService-1.pem",
        "https://sns.us-east-1.amazonaws.com.evil.example/SimpleNotificationService-1.pem",
        "https://evil.example/sns.us-east-1.amazonaws.com/x.pem",
        "https://sns.amazonaws.com/SimpleNotificationService-1.pem",
        "https://sns.US-EAST-1.amazonaws.com.cn/SimpleNotificationService-1.pem",
        "https://sns.us_east_1.amazonaws.com/SimpleNotificationService-1.pem",
        "https://user@sns.us-east-1.amazonaws.com/SimpleNotificationService-1.pem",
        "https://sns.us-east-1.amazonaws.com:8443/SimpleNotificationService-1.pem",
        "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-1.txt",
        "not a url",
    ] {
        let mut event = signed_event(&message, "2", None);
        event["Records"][0]["Sns"]["SigningCertUrl"] = json!(url);
        let err = receipts_from_sns(&event, &v).await.expect_err(url);
        assert!(matches!(err, SnsError::CertUrl(_)), "{url}: {err}");
    }
    assert!(check_cert_url(CERT_URL).is_ok());
    assert!(
        check_cert_url("https://sns.ap-southeast-2.amazonaws.com/SimpleNotificationService-9c6465fa7f48f5cacd23014631ec1136.pem").is_ok()
    );

    let mut event = signed_event(&message, "2", None);
    event["Records"][0]["Sns"]["TopicArn"] = json!("arn:aws:sns:us-east-1:999999999999:other");
    let err = receipts_from_sns(&event, &v).await.expect_err("topic");
    assert!(matches!(err, SnsError::TopicNotAllowed(_)), "{err}");

    for version in ["3", "", "2.0"] {
        let mut event = signed_event(&message, "2", None);
        event["Records"][0]["Sns"]["SignatureVersion"] = json!(version);
        let err = receipts_from_sns(&event, &v).await.expect_err(version);
        assert!(
            matches!(err, SnsError::UnsupportedSignatureVersion(_)),
            "{version}: {err}"
        );
    }
    assert_eq!(fetcher.fetches.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn certificates_are_cached_by_url_and_bounded() {
    let (v, fetcher) = verifier();
    let message = fixture_text("ses/delivery.json");
    let event = signed_event(&message, "2", None);
    for _ in 0..3 {
        receipts_from_sns(&event, &v).await.expect("verified");
    }
    assert_eq!(fetcher.fetches.load(Ordering::SeqCst), 1, "cache hit");

    let with_url = |n: usize| {
        let mut e = event.clone();
        e["Records"][0]["Sns"]["SigningCertUrl"] = json!(format!(
            "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-{n}.pem"
        ));
        e
    };
    for n in 0..CERT_CACHE_CAPACITY {
        receipts_from_sns(&with_url(n), &v).await.expect("verified");
    }
    assert_eq!(
        fetcher.fetches.load(Ordering::SeqCst),
        1 + CERT_CACHE_CAPACITY
    );
    // The most recent URLs are still cached; the first one was evicted.
    receipts_from_sns(&with_url(CERT_CACHE_CAPACITY - 1), &v)
        .await
        .expect("verified");
    assert_eq!(
        fetcher.fetches.load(Ordering::SeqCst),
        1 + CERT_CACHE_CAPACITY
    );
    receipts_from_sns(&event, &v).await.expect("verified");
    assert_eq!(
        fetcher.fetches.load(Ordering::SeqCst),
        2 + CERT_CACHE_CAPACITY
    );
}

struct FailingFetcher;

#[async_trait]
impl CertFetcher for FailingFetcher {
    async fn fetch_pem(&self, url: &str) -> Result<String, SnsError> {
        Err(SnsError::CertFetch(format!("{url}: timed out")))
    }
}

struct GarbageFetcher;

#[async_trait]
impl CertFetcher for GarbageFetcher {
    async fn fetch_pem(&self, _url: &str) -> Result<String, SnsError> {
        Ok("<html>not a certificate</html>".into())
    }
}

#[tokio::test]
async fn fetch_failures_are_transient_and_bad_certificates_are_not() {
    let message = fixture_text("ses/delivery.json");
    let event = signed_event(&message, "2", None);
    let v = SnsVerifier::new([TOPIC.to_string()], Arc::new(FailingFetcher));
    let err = receipts_from_sns(&event, &v).await.expect_err("fetch");
    assert!(err.is_transient(), "{err}");
    let v = SnsVerifier::new([TOPIC.to_string()], Arc::new(GarbageFetcher));
    let err = receipts_from_sns(&event, &v).await.expect_err("garbage");
    assert!(matches!(err, SnsError::Cert(_)), "{err}");
    assert!(!err.is_transient());
}

#[test]
fn a_certificate_outside_its_validity_is_refused() {
    let pem = fixture_text("sns/cert.pem");
    assert!(public_key_from_pem(&pem, std::time::SystemTime::now()).is_ok());
    let err = public_key_from_pem(&pem, std::time::UNIX_EPOCH).expect_err("not yet valid");
    assert!(matches!(err, SnsError::Cert(_)), "{err}");
}

#[test]
fn https_endpoint_casing_parses_too() {
    let body = json!({
        "Type": "Notification",
        "MessageId": "m",
        "TopicArn": TOPIC,
        "Message": "{}",
        "Timestamp": "2026-11-27T20:40:04.123Z",
        "SignatureVersion": "2",
        "Signature": "AA==",
        "SigningCertURL": CERT_URL,
        "UnsubscribeURL": "https://sns.us-east-1.amazonaws.com/?Action=Unsubscribe"
    });
    let msg: SnsMessage = serde_json::from_value(body).expect("parsed");
    assert_eq!(msg.signing_cert_url, CERT_URL);
    assert_eq!(msg.subject, None);
    assert_eq!(
        string_to_sign(&msg).expect("string"),
        format!(
            "Message\n{{}}\nMessageId\nm\nTimestamp\n2026-11-27T20:40:04.123Z\nTopicArn\n{TOPIC}\nType\nNotification\n"
        )
    );
}

#[tokio::test]
async fn inbound_sms_becomes_an_inbound_sms_receipt() {
    let (v, _) = verifier();
    let message = fixture_text("sns/inbound_sms.json");
    let got = receipts_from_sns(&signed_event(&message, "2", None), &v)
        .await
        .expect("verified");
    assert_eq!(
        got,
        vec![ReceiptEvent::InboundSms {
            from: PhoneNumber::parse("+14255550182").expect("phone"),
            body: "ACK 4821".into(),
        }]
    );

    let mut bad: Value = serde_json::from_str(&message).expect("json");
    bad["originationNumber"] = json!("4255550182");
    let err = receipts_from_sns(&signed_event(&bad.to_string(), "2", None), &v)
        .await
        .expect_err("not E.164");
    let text = err.to_string();
    assert!(text.contains("originationNumber"), "{text}");
    assert!(!text.contains("4255550182"), "{text}");
}

#[tokio::test]
async fn unknown_payloads_are_errors_naming_the_message() {
    let (v, _) = verifier();
    for message in [
        "not json",
        "{\"hello\": 1}",
        "{\"eventType\": \"Bogus\", \"mail\": {}}",
    ] {
        let err = receipts_from_sns(&signed_event(message, "2", None), &v)
            .await
            .expect_err(message);
        assert!(
            matches!(&err, SnsError::Payload { message_id, .. } if message_id == "95df01b4-ee98-5cb9-9903-4c221d41eb5e"),
            "{message}: {err}"
        );
    }
    let err = receipts_from_sns(&json!({"Records": [{"Sns": {}}]}), &v)
        .await
        .expect_err("malformed");
    assert!(matches!(err, SnsError::Malformed(_)), "{err}");
}

// ---- CloudWatch Logs ----

fn awslogs_event(message_type: &str, lines: &[String]) -> Value {
    let data = json!({
        "messageType": message_type,
        "owner": "123456789012",
        "logGroup": "sns/us-east-1/123456789012/DirectPublishToPhoneNumber/Failure",
        "logStream": "s",
        "subscriptionFilters": ["f"],
        "logEvents": lines.iter().enumerate().map(|(i, m)| json!({"id": i.to_string(), "timestamp": 0, "message": m})).collect::<Vec<_>>(),
    });
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(data.to_string().as_bytes()).expect("gzip");
    let bytes = gz.finish().expect("gzip");
    json!({"awslogs": {"data": base64::engine::general_purpose::STANDARD.encode(bytes)}})
}

#[test]
fn committed_subscription_event_yields_delivered_and_failed() {
    let event = fixture_json("cloudwatch/subscription_event.json");
    let got = receipts_from_cloudwatch_logs(&event).expect("decoded");
    assert_eq!(
        got,
        vec![
            delivery(
                "b8b1d1c4-1d2e-5f3a-9c4b-6d7e8f9a0b1c",
                ReceiptStatus::Delivered
            ),
            delivery(
                "c9c2e2d5-2e3f-5a4b-8d5c-7e8f9a0b1c2d",
                ReceiptStatus::Failed
            ),
        ]
    );
}

#[test]
fn sms_delivery_logs_map_to_receipts_and_other_lines_are_skipped() {
    let line = |name: &str| fixture_json(&format!("cloudwatch/{name}.json")).to_string();
    let event = awslogs_event(
        "DATA_MESSAGE",
        &[
            line("sms_opted_out"),
            "plain text line".to_string(),
            line("sms_success"),
            "{\"status\": \"SUCCESS\"}".to_string(),
        ],
    );
    let got = receipts_from_cloudwatch_logs(&event).expect("decoded");
    assert_eq!(
        got,
        vec![
            delivery(
                "d0d3f3e6-3f4a-5b5c-9e6d-8f9a0b1c2d3e",
                ReceiptStatus::Unreachable
            ),
            delivery(
                "b8b1d1c4-1d2e-5f3a-9c4b-6d7e8f9a0b1c",
                ReceiptStatus::Delivered
            ),
        ]
    );
    let control = awslogs_event(
        "CONTROL_MESSAGE",
        &["CWL CONTROL MESSAGE: Checking health of destination Lambda".to_string()],
    );
    assert_eq!(receipts_from_cloudwatch_logs(&control), Ok(vec![]));
}

#[test]
fn malformed_awslogs_are_errors() {
    for event in [
        json!({}),
        json!({"awslogs": {"data": "!!!"}}),
        json!({"awslogs": {"data": base64::engine::general_purpose::STANDARD.encode(b"not gzip")}}),
    ] {
        let err = receipts_from_cloudwatch_logs(&event).expect_err("malformed");
        assert!(matches!(err, CwLogsError::Malformed(_)), "{err}");
    }
    assert!(cwlogs::receipt_from_sms_log("{\"notification\": {}}").is_none());
}

// ---- no contact details in logs ----

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn no_address_or_number_reaches_the_logs() {
    let capture = Capture::default();
    let sink = capture.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || sink.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let (v, _) = verifier();
    for name in [
        "delivery",
        "bounce_permanent",
        "bounce_transient",
        "complaint",
        "open",
    ] {
        let message = fixture_text(&format!("ses/{name}.json"));
        receipts_from_sns(&signed_event(&message, "2", None), &v)
            .await
            .expect("verified");
    }
    let message = fixture_text("sns/inbound_sms.json");
    receipts_from_sns(&signed_event(&message, "2", None), &v)
        .await
        .expect("verified");
    let event = awslogs_event(
        "DATA_MESSAGE",
        &[
            fixture_json("cloudwatch/sms_failure.json").to_string(),
            "{\"delivery\": {\"destination\": \"+14255550109\"}}".to_string(),
        ],
    );
    receipts_from_cloudwatch_logs(&event).expect("decoded");

    let logs = String::from_utf8(capture.0.lock().unwrap_or_else(|e| e.into_inner()).clone())
        .unwrap_or_default();
    assert!(logs.contains("SES event"), "the capture works: {logs}");
    for secret in ["recipient@", "alerts@", "4255550", "2125550"] {
        assert!(!logs.contains(secret), "{secret} in logs:\n{logs}");
    }
}

#[test]
fn the_sns_entry_point_is_send_for_the_lambda_runtime() {
    fn assert_send<T: Send>(_: &T) {}
    let (v, _) = verifier();
    let event = json!({});
    let fut = receipts_from_sns(&event, &v);
    assert_send(&fut);
    let http = muster::events::sns::HttpCertFetcher::new().expect("client");
    let _: Arc<dyn CertFetcher> = Arc::new(http);
}

/// An End User Messaging SMS event, as the configuration set's SNS event
/// destination publishes it (the guide's sample), is the delivery of the
/// message `SendTextMessage` answered with; a failure of another type is
/// the failure the cascade acts on; a queued one is no outcome yet.
#[tokio::test]
async fn sms_delivery_events_from_the_configuration_set_map_to_receipts() {
    let (v, _) = verifier();
    let sample = fixture_json("sms/text_successful.json");
    let id = "862a8790-60c0-4430-9b2b-658bdexample";
    for (kind, is_final, want) in [
        ("TEXT_SUCCESSFUL", true, Some(ReceiptStatus::Delivered)),
        ("TEXT_UNREACHABLE", true, Some(ReceiptStatus::Unreachable)),
        ("TEXT_CARRIER_BLOCKED", true, Some(ReceiptStatus::Failed)),
        ("TEXT_QUEUED", false, None),
    ] {
        let mut e = sample.clone();
        e["eventType"] = json!(kind);
        e["isFinal"] = json!(is_final);
        let got = receipts_from_sns(&signed_event(&e.to_string(), "2", None), &v)
            .await
            .expect("verified");
        assert_eq!(
            got,
            want.map(|s| delivery(id, s))
                .into_iter()
                .collect::<Vec<_>>(),
            "{kind}"
        );
    }
}
