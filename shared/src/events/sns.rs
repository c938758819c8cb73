//! Amazon SNS notifications delivered to the `receipt` Lambda by a Lambda
//! subscription: the message model, signature verification, and the
//! receipts carried by the topics Muster subscribes to (SES event
//! publishing, see [`super::ses`], and two-way SMS from AWS End User
//! Messaging).
//!
//! Verification follows "Verifying the signatures of Amazon SNS messages":
//!
//! - the topic ARN must be in the allow-list (`MUSTER_SNS_TOPIC_ARNS`);
//! - `SignatureVersion` `1` is SHA1withRSA, `2` SHA256withRSA (PKCS#1 v1.5);
//!   anything else is refused;
//! - the signing certificate URL must be `https://sns.<region>.amazonaws.com/<name>.pem`
//!   (no user info, no port, nothing else), fetched through [`CertFetcher`]
//!   and its public key cached by URL (bounded);
//! - the certificate must be within its validity period;
//! - the signed string is the `Name\nvalue\n` pairs, in this order:
//!   `Message`, `MessageId`, `Subject` (only if present), `Timestamp`,
//!   `TopicArn`, `Type` for a notification; `Message`, `MessageId`,
//!   `SubscribeURL`, `Timestamp`, `Token`, `TopicArn`, `Type` for the
//!   (un)subscribe confirmations.
//!
//! The certificate's chain is not walked: trust comes from fetching it over
//! HTTPS (rustls, web PKI roots) from the SNS host of the region, as the AWS
//! SDK validators do.

use super::ses;
use crate::app::ReceiptEvent;
use crate::domain::PhoneNumber;
use async_trait::async_trait;
use base64::Engine as _;
use serde::Deserialize;
use serde_json::Value;
use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use x509_cert::Certificate;
use x509_cert::der::DecodePem;

/// An RSA public key as PKCS#1 `RSAPublicKey` DER (what `ring` verifies
/// with), from a certificate whose key algorithm is rsaEncryption.
#[derive(Clone, PartialEq, Eq)]
pub struct RsaPublicKey(Vec<u8>);

impl std::fmt::Debug for RsaPublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RsaPublicKey({} bytes)", self.0.len())
    }
}

/// rsaEncryption (RFC 8017, A.1).
const RSA_ENCRYPTION: x509_cert::der::asn1::ObjectIdentifier =
    x509_cert::der::asn1::ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");

/// Certificates kept in memory (SNS uses one per region at a time; a few
/// more cover a rotation).
pub const CERT_CACHE_CAPACITY: usize = 8;

/// Timeout of the certificate fetch.
pub const CERT_FETCH_TIMEOUT: Duration = Duration::from_secs(2);

/// The kind of an SNS message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum SnsMessageType {
    Notification,
    SubscriptionConfirmation,
    UnsubscribeConfirmation,
}

/// An SNS message, as posted to HTTPS endpoints (`SigningCertURL`) or as
/// `Records[].Sns` in a Lambda event (`SigningCertUrl`): both casings are
/// accepted.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct SnsMessage {
    #[serde(rename = "Type")]
    pub kind: SnsMessageType,
    #[serde(rename = "MessageId")]
    pub message_id: String,
    #[serde(rename = "TopicArn")]
    pub topic_arn: String,
    /// Absent, or `null` in Lambda events, when the publisher set none.
    #[serde(rename = "Subject", default)]
    pub subject: Option<String>,
    #[serde(rename = "Message")]
    pub message: String,
    #[serde(rename = "Timestamp")]
    pub timestamp: String,
    #[serde(rename = "SignatureVersion")]
    pub signature_version: String,
    #[serde(rename = "Signature")]
    pub signature: String,
    #[serde(rename = "SigningCertURL", alias = "SigningCertUrl")]
    pub signing_cert_url: String,
    #[serde(rename = "UnsubscribeURL", alias = "UnsubscribeUrl", default)]
    pub unsubscribe_url: Option<String>,
    /// Confirmations only.
    #[serde(rename = "SubscribeURL", alias = "SubscribeUrl", default)]
    pub subscribe_url: Option<String>,
    /// Confirmations only.
    #[serde(rename = "Token", default)]
    pub token: Option<String>,
}

/// One record of a Lambda SNS event.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct SnsRecord {
    #[serde(rename = "EventSource", default)]
    pub event_source: Option<String>,
    #[serde(rename = "EventSubscriptionArn", default)]
    pub event_subscription_arn: Option<String>,
    #[serde(rename = "Sns")]
    pub sns: SnsMessage,
}

/// The Lambda SNS event: `{"Records": [{"Sns": {...}}]}`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct SnsEvent {
    #[serde(rename = "Records")]
    pub records: Vec<SnsRecord>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SnsError {
    #[error("SNS event is malformed: {0}")]
    Malformed(String),
    #[error("SNS topic {0} is not in the allowed topics (MUSTER_SNS_TOPIC_ARNS)")]
    TopicNotAllowed(String),
    #[error("SNS SignatureVersion {0:?} is not supported (expected \"1\" or \"2\")")]
    UnsupportedSignatureVersion(String),
    #[error("SNS SigningCertURL rejected: {0}")]
    CertUrl(String),
    #[error("SNS signing certificate could not be fetched: {0}")]
    CertFetch(String),
    #[error("SNS signing certificate is not usable: {0}")]
    Cert(String),
    #[error("SNS signature does not verify for message {0}")]
    BadSignature(String),
    #[error("SNS message {message_id} carries an unrecognised payload: {reason}")]
    Payload { message_id: String, reason: String },
}

impl SnsError {
    /// Worth retrying the event (the certificate host did not answer);
    /// every other error will fail the same way again.
    pub fn is_transient(&self) -> bool {
        matches!(self, SnsError::CertFetch(_))
    }
}

/// Fetches a signing certificate (PEM) by URL. The URL has already been
/// checked by the verifier.
#[async_trait]
pub trait CertFetcher: Send + Sync {
    async fn fetch_pem(&self, url: &str) -> Result<String, SnsError>;
    /// Visits a subscription's `SubscribeURL` (checked by
    /// [`check_subscribe_url`]), which confirms it.
    async fn confirm(&self, url: &str) -> Result<(), SnsError> {
        Err(SnsError::CertFetch(format!(
            "{}: this fetcher does not confirm subscriptions",
            url.split('?').next().unwrap_or_default()
        )))
    }
}

/// [`CertFetcher`] over HTTPS with reqwest (rustls), 2 s timeout, no
/// redirects.
pub struct HttpCertFetcher {
    client: reqwest::Client,
}

impl HttpCertFetcher {
    pub fn new() -> Result<Self, SnsError> {
        let client = reqwest::Client::builder()
            .timeout(CERT_FETCH_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .https_only(true)
            .build()
            .map_err(|e| SnsError::CertFetch(format!("HTTP client not built: {e}")))?;
        Ok(Self { client })
    }
}

#[async_trait]
impl CertFetcher for HttpCertFetcher {
    async fn fetch_pem(&self, url: &str) -> Result<String, SnsError> {
        let resp = self
            .client
            .get(url)
            .send()
            .await
            .map_err(|e| SnsError::CertFetch(format!("{url}: {e}")))?;
        if !resp.status().is_success() {
            return Err(SnsError::CertFetch(format!(
                "{url}: HTTP {}",
                resp.status().as_u16()
            )));
        }
        resp.text()
            .await
            .map_err(|e| SnsError::CertFetch(format!("{url}: {e}")))
    }

    async fn confirm(&self, url: &str) -> Result<(), SnsError> {
        // The URL carries the subscription's token: logged without its query.
        let shown = url.split('?').next().unwrap_or_default();
        let resp = self
            .client
            .get(url)
            .send()
            .await
            .map_err(|e| SnsError::CertFetch(format!("{shown}: {}", e.without_url())))?;
        if !resp.status().is_success() {
            return Err(SnsError::CertFetch(format!(
                "{shown}: HTTP {}",
                resp.status().as_u16()
            )));
        }
        Ok(())
    }
}

/// Checks SNS messages: allowed topic, certificate URL, signature.
pub struct SnsVerifier {
    topics: HashSet<String>,
    fetcher: Arc<dyn CertFetcher>,
    cache: Mutex<VecDeque<(String, RsaPublicKey)>>,
}

/// Splits `MUSTER_SNS_TOPIC_ARNS` (comma-separated, blanks ignored).
pub fn topic_arns_from_csv(csv: &str) -> Vec<String> {
    csv.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

impl SnsVerifier {
    pub fn new(
        allowed_topic_arns: impl IntoIterator<Item = String>,
        fetcher: Arc<dyn CertFetcher>,
    ) -> Self {
        Self {
            topics: allowed_topic_arns.into_iter().collect(),
            fetcher,
            cache: Mutex::new(VecDeque::new()),
        }
    }

    /// Confirms a verified `SubscriptionConfirmation` by visiting its
    /// `SubscribeURL`.
    pub async fn confirm(&self, msg: &SnsMessage) -> Result<(), SnsError> {
        let url = msg
            .subscribe_url
            .as_deref()
            .ok_or_else(|| SnsError::Malformed("SubscribeURL is missing".into()))?;
        check_subscribe_url(url)?;
        self.fetcher.confirm(url).await
    }

    /// Verifies one message; `Ok` means it came from an allowed topic and
    /// its signature holds.
    pub async fn verify(&self, msg: &SnsMessage) -> Result<(), SnsError> {
        if !self.topics.contains(&msg.topic_arn) {
            return Err(SnsError::TopicNotAllowed(msg.topic_arn.clone()));
        }
        let sha256 = match msg.signature_version.as_str() {
            "2" => true,
            "1" => false,
            other => return Err(SnsError::UnsupportedSignatureVersion(other.to_string())),
        };
        check_cert_url(&msg.signing_cert_url)?;
        let signature = base64::engine::general_purpose::STANDARD
            .decode(msg.signature.trim())
            .map_err(|_| SnsError::Malformed("Signature: not base64".into()))?;
        let key = self.public_key(&msg.signing_cert_url).await?;
        let text = string_to_sign(msg)?;
        // PKCS#1 v1.5 with keys of 2048 to 8192 bits (SNS signs with 2048).
        let algorithm: &dyn ring::signature::VerificationAlgorithm = if sha256 {
            &ring::signature::RSA_PKCS1_2048_8192_SHA256
        } else {
            &ring::signature::RSA_PKCS1_2048_8192_SHA1_FOR_LEGACY_USE_ONLY
        };
        ring::signature::UnparsedPublicKey::new(algorithm, &key.0)
            .verify(text.as_bytes(), &signature)
            .map_err(|_| SnsError::BadSignature(msg.message_id.clone()))
    }

    async fn public_key(&self, url: &str) -> Result<RsaPublicKey, SnsError> {
        if let Some(key) = self.cached(url) {
            return Ok(key);
        }
        let pem = self.fetcher.fetch_pem(url).await?;
        let key = public_key_from_pem(&pem, SystemTime::now())?;
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if !cache.iter().any(|(u, _)| u == url) {
            if cache.len() >= CERT_CACHE_CAPACITY {
                cache.pop_front();
            }
            cache.push_back((url.to_string(), key.clone()));
        }
        Ok(key)
    }

    fn cached(&self, url: &str) -> Option<RsaPublicKey> {
        let cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        cache.iter().find(|(u, _)| u == url).map(|(_, k)| k.clone())
    }
}

/// A `SubscribeURL`: `https://sns.<region>.amazonaws.com/?Action=ConfirmSubscription&...`,
/// nothing else (a forged confirmation must not make Muster fetch an
/// address of the sender's choosing).
pub fn check_subscribe_url(url: &str) -> Result<(), SnsError> {
    let bad = |why: &str| SnsError::CertUrl(format!("SubscribeURL {why}"));
    let parsed = reqwest::Url::parse(url).map_err(|_| bad("is not a URL"))?;
    sns_host(&parsed).map_err(|_| bad("must be https://sns.<region>.amazonaws.com"))?;
    let confirms = parsed
        .query_pairs()
        .any(|(k, v)| k == "Action" && v == "ConfirmSubscription");
    if !confirms || parsed.path() != "/" {
        return Err(bad("must be /?Action=ConfirmSubscription"));
    }
    Ok(())
}

/// https, no user info or port, host `sns.<region>.amazonaws.com`.
fn sns_host(parsed: &reqwest::Url) -> Result<(), SnsError> {
    let url = parsed.as_str();
    if parsed.scheme() != "https" {
        return Err(SnsError::CertUrl(format!("{url}: not https")));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() || parsed.port().is_some() {
        return Err(SnsError::CertUrl(format!(
            "{url}: user info or port not allowed"
        )));
    }
    let host = parsed.host_str().unwrap_or_default();
    let region = host
        .strip_prefix("sns.")
        .and_then(|h| h.strip_suffix(".amazonaws.com"));
    let region_ok = region.is_some_and(|r| {
        !r.is_empty()
            && r.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    });
    if !region_ok {
        return Err(SnsError::CertUrl(format!(
            "{url}: host must be sns.<region>.amazonaws.com"
        )));
    }
    Ok(())
}

/// `https://sns.<region>.amazonaws.com/<name>.pem`, nothing else.
pub fn check_cert_url(url: &str) -> Result<(), SnsError> {
    let parsed =
        reqwest::Url::parse(url).map_err(|_| SnsError::CertUrl(format!("{url}: not a URL")))?;
    sns_host(&parsed)?;
    if !parsed.path().ends_with(".pem") || parsed.query().is_some() {
        return Err(SnsError::CertUrl(format!(
            "{url}: path must name a .pem file"
        )));
    }
    Ok(())
}

/// The RSA public key of a PEM certificate valid at `now`.
pub fn public_key_from_pem(pem: &str, now: SystemTime) -> Result<RsaPublicKey, SnsError> {
    let cert = Certificate::from_pem(pem.trim().as_bytes())
        .map_err(|e| SnsError::Cert(format!("not a PEM X.509 certificate ({e})")))?;
    let validity = &cert.tbs_certificate.validity;
    if now < validity.not_before.to_system_time() || now > validity.not_after.to_system_time() {
        return Err(SnsError::Cert("outside its validity period".into()));
    }
    let spki = &cert.tbs_certificate.subject_public_key_info;
    if spki.algorithm.oid != RSA_ENCRYPTION {
        return Err(SnsError::Cert(format!(
            "not an RSA public key (algorithm {})",
            spki.algorithm.oid
        )));
    }
    // For rsaEncryption the key's bit string is the RSAPublicKey DER.
    let der = spki
        .subject_public_key
        .as_bytes()
        .ok_or_else(|| SnsError::Cert("public key is not whole bytes".into()))?;
    if der.first() != Some(&0x30) {
        return Err(SnsError::Cert(
            "not an RSA public key (no RSAPublicKey)".into(),
        ));
    }
    Ok(RsaPublicKey(der.to_vec()))
}

/// The string SNS signs for this message.
pub fn string_to_sign(msg: &SnsMessage) -> Result<String, SnsError> {
    let mut out = String::with_capacity(msg.message.len() + 256);
    let mut pair = |name: &str, value: &str| {
        out.push_str(name);
        out.push('\n');
        out.push_str(value);
        out.push('\n');
    };
    let missing = |field: &str| SnsError::Malformed(format!("{field}: missing"));
    match msg.kind {
        SnsMessageType::Notification => {
            pair("Message", &msg.message);
            pair("MessageId", &msg.message_id);
            if let Some(subject) = &msg.subject {
                pair("Subject", subject);
            }
            pair("Timestamp", &msg.timestamp);
            pair("TopicArn", &msg.topic_arn);
            pair("Type", "Notification");
        }
        SnsMessageType::SubscriptionConfirmation | SnsMessageType::UnsubscribeConfirmation => {
            let subscribe = msg
                .subscribe_url
                .as_deref()
                .ok_or_else(|| missing("SubscribeURL"))?;
            let token = msg.token.as_deref().ok_or_else(|| missing("Token"))?;
            pair("Message", &msg.message);
            pair("MessageId", &msg.message_id);
            pair("SubscribeURL", subscribe);
            pair("Timestamp", &msg.timestamp);
            pair("Token", token);
            pair("TopicArn", &msg.topic_arn);
            pair(
                "Type",
                if msg.kind == SnsMessageType::SubscriptionConfirmation {
                    "SubscriptionConfirmation"
                } else {
                    "UnsubscribeConfirmation"
                },
            );
        }
    }
    Ok(out)
}

/// An SMS received on an End User Messaging (Pinpoint) number with two-way
/// SMS publishing to SNS.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InboundSmsMessage {
    pub origination_number: String,
    #[serde(default)]
    pub destination_number: Option<String>,
    #[serde(default)]
    pub message_keyword: Option<String>,
    pub message_body: String,
    #[serde(default)]
    pub inbound_message_id: Option<String>,
    #[serde(default)]
    pub previous_published_message_id: Option<String>,
}

/// The receipt an inbound SMS makes; the sender's number is checked
/// (E.164) but never echoed in errors.
pub fn receipt_from_inbound_sms(sms: &InboundSmsMessage) -> Result<ReceiptEvent, String> {
    let from = PhoneNumber::parse(&sms.origination_number)
        .map_err(|e| e.within("originationNumber").to_string())?;
    Ok(ReceiptEvent::InboundSms {
        from,
        body: sms.message_body.clone(),
    })
}

/// The receipts of one verified SNS notification: SES events
/// (`eventType`/`notificationType`) or an inbound SMS
/// (`originationNumber` + `messageBody`).
pub fn receipts_from_notification(msg: &SnsMessage) -> Result<Vec<ReceiptEvent>, SnsError> {
    let payload_err = |reason: String| SnsError::Payload {
        message_id: msg.message_id.clone(),
        reason,
    };
    let body: Value = serde_json::from_str(&msg.message)
        .map_err(|e| payload_err(format!("Message is not JSON ({e})")))?;
    if ses::is_ses_event(&body) {
        return Ok(ses::receipt_from_ses_event(&body)
            .map_err(payload_err)?
            .into_iter()
            .collect());
    }
    if super::sms::is_sms_event(&body) {
        return Ok(super::sms::receipt_from_sms_event(&body)
            .map_err(payload_err)?
            .into_iter()
            .collect());
    }
    if body.get("originationNumber").is_some() && body.get("messageBody").is_some() {
        let sms: InboundSmsMessage =
            serde_json::from_value(body).map_err(|e| payload_err(format!("inbound SMS ({e})")))?;
        return Ok(vec![receipt_from_inbound_sms(&sms).map_err(payload_err)?]);
    }
    Err(payload_err(
        "neither an SES event, an SMS event nor an inbound SMS".to_string(),
    ))
}

/// Entry point for the `receipt` Lambda's SNS subscription: parses the
/// Lambda SNS event, verifies every record (topic allow-list, certificate
/// URL, signature; all records or none) and returns the receipts in record
/// order. Confirmations carry no receipt (Lambda subscriptions need none)
/// and are skipped after verification. SES events that mean nothing to a
/// cascade (Send, Open, Click, transient bounces, delays...) yield no
/// receipt.
pub async fn receipts_from_sns(
    event: &Value,
    verifier: &SnsVerifier,
) -> Result<Vec<ReceiptEvent>, SnsError> {
    let event: SnsEvent = SnsEvent::deserialize(event)
        .map_err(|e| SnsError::Malformed(format!("not a Lambda SNS event ({e})")))?;
    for record in &event.records {
        verifier.verify(&record.sns).await?;
    }
    let mut out = Vec::new();
    for record in &event.records {
        if record.sns.kind != SnsMessageType::Notification {
            tracing::info!(kind = ?record.sns.kind, topic = %record.sns.topic_arn, "SNS confirmation skipped");
            continue;
        }
        out.extend(receipts_from_notification(&record.sns)?);
    }
    Ok(out)
}
