//! Alternative gateways beside the AWS carriers, chosen per channel:
//! Twilio for voice (a call whose TwiML gathers one digit; 1 acknowledges)
//! and SMS, SendGrid for email. Their webhooks come back to
//! `/v1/gateways/{gateway}/{event}` (the API's `gateways` routes).
//!
//! | channel | request | accepted | provider message id |
//! |---|---|---|---|
//! | voice | Twilio `POST {api}/2010-04-01/Accounts/{sid}/Calls.json` (`To`, `From`, `Url`, `StatusCallback`, `Timeout`), Basic (account SID, auth token) | 201, `sid` | `twilio:<CallSid>` |
//! | sms | Twilio `POST .../Messages.json` (`To`, `From` or `MessagingServiceSid`, `Body`, `StatusCallback`) | 201, `sid` | `twilio:<MessageSid>` |
//! | email | SendGrid `POST {api}/v3/mail/send` (JSON: `personalizations`, `from`, `subject`, `content`), `Authorization: Bearer` | 202, `X-Message-Id` | `sendgrid:<X-Message-Id>` |
//!
//! Errors, as for the AWS senders: 429 is throttling (with `Retry-After`
//! when sent), 5xx, a timeout or no connection transient; Twilio's codes
//! for a number that is invalid, unsubscribed or cannot be reached (21211,
//! 21214, 21217, 21401, 21610, 21612, 21614) and SendGrid's 400 on a
//! recipient address are unreachable; anything else failed. Error strings
//! carry the status and the vendor's code, never its message (which can
//! echo the number or address).

use crate::domain::Address;
use crate::ports::{Accepted, ChannelSender, OutboundMessage, SendError};
use crate::secret::Secret;
use async_trait::async_trait;
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// The environment variable holding the gateways' configuration (`muster
/// serve`); on AWS the `muster/<stage>/gateways` secret (docs/gateways.md).
pub const VARIABLE: &str = "MUSTER_GATEWAYS";

/// How long one send may take.
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// Limiter endpoints of the gateways (`rate_limit.endpoints` in the policy).
pub mod endpoints {
    pub const TWILIO_VOICE: &str = "twilio-voice";
    pub const TWILIO_SMS: &str = "twilio-sms";
    pub const SENDGRID_EMAIL: &str = "sendgrid-email";
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    /// The public base URL of Muster's API, where the gateways' webhooks
    /// come back: `https://muster.example.com`.
    callback_url: String,
    /// Channel -> gateway: `{"voice": "twilio", "sms": "twilio", "email": "sendgrid"}`.
    channels: BTreeMap<String, String>,
    #[serde(default)]
    twilio: Option<TwilioConfig>,
    #[serde(default)]
    sendgrid: Option<SendgridConfig>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TwilioConfig {
    account_sid: String,
    auth_token: Secret,
    /// The caller id and SMS sender, E.164.
    #[serde(default)]
    from: Option<String>,
    /// A Messaging Service to send SMS from instead of `from`.
    #[serde(default)]
    messaging_service_sid: Option<String>,
    /// Seconds a call rings before it counts as not answered (default 30).
    #[serde(default)]
    ring_seconds: Option<u32>,
    #[serde(default)]
    api_url: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SendgridConfig {
    api_key: Secret,
    /// The sender address (a verified sender or domain).
    from: String,
    #[serde(default)]
    from_name: Option<String>,
    /// The Signed Event Webhook's verification key (Base64 DER, as
    /// SendGrid shows it).
    verification_key: String,
    #[serde(default)]
    api_url: Option<String>,
}

/// What [`from_json`] configures: a sender per channel given to a gateway,
/// and what checks the gateways' webhooks.
pub struct Gateways {
    pub voice: Option<Arc<dyn ChannelSender>>,
    pub sms: Option<Arc<dyn ChannelSender>>,
    pub email: Option<Arc<dyn ChannelSender>>,
    pub hooks: crate::events::gateways::Hooks,
}

impl Gateways {
    /// `(channel, gateway)` of each channel given to a gateway, for logs.
    pub fn chosen(&self) -> Vec<(&'static str, &'static str)> {
        let mut out = Vec::new();
        if self.voice.is_some() {
            out.push(("voice", "twilio"));
        }
        if self.sms.is_some() {
            out.push(("sms", "twilio"));
        }
        if self.email.is_some() {
            out.push(("email", "sendgrid"));
        }
        out
    }

    /// `senders` with the channels given to a gateway replaced.
    pub fn apply(&self, senders: &mut crate::ports::Senders) {
        if let Some(s) = &self.voice {
            senders.voice = s.clone();
        }
        if let Some(s) = &self.sms {
            senders.sms = s.clone();
        }
        if let Some(s) = &self.email {
            senders.email = s.clone();
        }
    }
}

fn https_or_loopback(field: &str, url: &str) -> Result<String, String> {
    let u = reqwest::Url::parse(url).map_err(|_| format!("{VARIABLE}.{field}: not a URL"))?;
    if u.scheme() != "https" && !super::notes::is_loopback(&u) {
        return Err(format!("{VARIABLE}.{field}: must be https"));
    }
    Ok(url.trim_end_matches('/').to_string())
}

fn client() -> Result<reqwest::Client, String> {
    reqwest::Client::builder()
        .timeout(TIMEOUT)
        .connect_timeout(TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|_| "cannot build the HTTP client".to_string())
}

/// Reads [`VARIABLE`]'s value. Every problem names its field, never a
/// secret.
pub fn from_json(text: &str) -> Result<Gateways, String> {
    let c: Config = serde_json::from_str(text).map_err(|e| format!("{VARIABLE}: {e}"))?;
    let callback = https_or_loopback("callback_url", &c.callback_url)?;
    let mut hooks = crate::events::gateways::Hooks {
        callback_url: callback.clone(),
        ..Default::default()
    };
    let twilio = match c.twilio {
        Some(t) => {
            if t.account_sid.len() != 34 || !t.account_sid.starts_with("AC") {
                return Err(format!(
                    "{VARIABLE}.twilio.account_sid: expected AC and 32 hex digits"
                ));
            }
            if t.auth_token.expose().trim().is_empty() {
                return Err(format!("{VARIABLE}.twilio.auth_token: required"));
            }
            if let Some(f) = &t.from
                && crate::domain::PhoneNumber::parse(f).is_err()
            {
                return Err(format!("{VARIABLE}.twilio.from: not an E.164 number"));
            }
            let api = https_or_loopback(
                "twilio.api_url",
                t.api_url.as_deref().unwrap_or("https://api.twilio.com"),
            )?;
            hooks.twilio = Some(t.auth_token.clone());
            Some(Arc::new(Twilio {
                api,
                account_sid: t.account_sid,
                auth_token: t.auth_token,
                from: t.from,
                messaging_service_sid: t.messaging_service_sid,
                ring_seconds: t.ring_seconds.unwrap_or(30).clamp(5, 600),
                callback: callback.clone(),
                client: client()?,
            }))
        }
        None => None,
    };
    let sendgrid = match c.sendgrid {
        Some(s) => {
            if s.api_key.expose().trim().is_empty() {
                return Err(format!("{VARIABLE}.sendgrid.api_key: required"));
            }
            if crate::domain::EmailAddress::parse(&s.from).is_err() {
                return Err(format!("{VARIABLE}.sendgrid.from: not an email address"));
            }
            let key = crate::events::sendgrid::key(&s.verification_key)
                .map_err(|e| format!("{VARIABLE}.sendgrid.verification_key: {e}"))?;
            hooks.sendgrid = Some(key);
            Some(Arc::new(Sendgrid {
                api: https_or_loopback(
                    "sendgrid.api_url",
                    s.api_url.as_deref().unwrap_or("https://api.sendgrid.com"),
                )?,
                api_key: s.api_key,
                from: s.from,
                from_name: s.from_name,
                client: client()?,
            }))
        }
        None => None,
    };
    let mut out = Gateways {
        voice: None,
        sms: None,
        email: None,
        hooks,
    };
    for (channel, gateway) in &c.channels {
        let field = format!("{VARIABLE}.channels.{channel}");
        match (channel.as_str(), gateway.as_str()) {
            ("voice", "twilio") | ("sms", "twilio") => {
                let t = twilio
                    .clone()
                    .ok_or_else(|| format!("{field}: twilio is not configured"))?;
                if channel == "voice" {
                    if t.from.is_none() {
                        return Err(format!(
                            "{VARIABLE}.twilio.from: required for voice (the caller id)"
                        ));
                    }
                    out.voice = Some(Arc::new(TwilioVoice(t)));
                } else {
                    if t.from.is_none() && t.messaging_service_sid.is_none() {
                        return Err(format!(
                            "{VARIABLE}.twilio: from or messaging_service_sid required for sms"
                        ));
                    }
                    out.sms = Some(Arc::new(TwilioSms(t)));
                }
            }
            ("email", "sendgrid") => {
                out.email = Some(
                    sendgrid
                        .clone()
                        .ok_or_else(|| format!("{field}: sendgrid is not configured"))?,
                );
            }
            ("voice" | "sms", other) | ("email", other) => {
                return Err(format!(
                    "{field}: {other:?} is no gateway for {channel} (voice and sms: twilio; email: sendgrid)"
                ));
            }
            (other, _) => {
                return Err(format!(
                    "{VARIABLE}.channels: {other:?} is no channel a gateway takes (voice, sms, email)"
                ));
            }
        }
    }
    Ok(out)
}

// ---- Twilio ------------------------------------------------------------------

struct Twilio {
    api: String,
    account_sid: String,
    auth_token: Secret,
    from: Option<String>,
    messaging_service_sid: Option<String>,
    ring_seconds: u32,
    callback: String,
    client: reqwest::Client,
}

/// Twilio error codes for a number that is invalid, unsubscribed or
/// cannot be reached.
const UNREACHABLE_CODES: &[i64] = &[21211, 21214, 21217, 21401, 21610, 21612, 21614];

fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<u64> {
    headers
        .get("retry-after")?
        .to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()
        .map(|s| s.saturating_mul(1000))
}

fn transport(e: &reqwest::Error) -> SendError {
    SendError::Transient(if e.is_timeout() {
        "timed out".into()
    } else {
        "no connection".into()
    })
}

impl Twilio {
    /// Creates a call or a message; the resource's `sid`.
    async fn create(&self, resource: &str, form: &[(&str, &str)]) -> Result<String, SendError> {
        let url = format!(
            "{}/2010-04-01/Accounts/{}/{resource}.json",
            self.api, self.account_sid
        );
        let resp = self
            .client
            .post(url)
            .basic_auth(&self.account_sid, Some(self.auth_token.expose()))
            .form(form)
            .send()
            .await
            .map_err(|e| transport(&e))?;
        let status = resp.status();
        let headers = resp.headers().clone();
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        if status.is_success() {
            return body["sid"]
                .as_str()
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .ok_or_else(|| {
                    SendError::Transient(format!("twilio {resource}: no sid in the answer"))
                });
        }
        let code = body["code"].as_i64().unwrap_or_default();
        let what = format!("twilio {resource}: {} code {code}", status.as_u16());
        Err(match status.as_u16() {
            429 => SendError::Throttled {
                retry_after: retry_after(&headers),
            },
            s if s >= 500 => SendError::Transient(what),
            _ if UNREACHABLE_CODES.contains(&code) => SendError::Unreachable(what),
            _ => SendError::Failed(what),
        })
    }

    fn phone<'a>(&self, msg: &'a OutboundMessage) -> Result<&'a str, SendError> {
        match &msg.to {
            Address::Phone(p) => Ok(p.expose()),
            _ => Err(SendError::Unreachable("not a phone number".into())),
        }
    }
}

struct TwilioVoice(Arc<Twilio>);

#[async_trait]
impl ChannelSender for TwilioVoice {
    fn endpoint(&self) -> &str {
        endpoints::TWILIO_VOICE
    }

    async fn send(&self, msg: &OutboundMessage) -> Result<Accepted, SendError> {
        let t = &self.0;
        let to = t.phone(msg)?;
        let url = format!("{}/v1/gateways/twilio/voice", t.callback);
        let status = format!("{}/v1/gateways/twilio/call-status", t.callback);
        let ring = t.ring_seconds.to_string();
        let form = [
            ("To", to),
            ("From", t.from.as_deref().unwrap_or_default()),
            ("Url", url.as_str()),
            ("Method", "POST"),
            ("StatusCallback", status.as_str()),
            ("StatusCallbackMethod", "POST"),
            ("Timeout", ring.as_str()),
        ];
        let sid = t.create("Calls", &form).await?;
        Ok(Accepted {
            provider_message_id: crate::events::twilio::provider_message_id(&sid),
        })
    }
}

struct TwilioSms(Arc<Twilio>);

#[async_trait]
impl ChannelSender for TwilioSms {
    fn endpoint(&self) -> &str {
        endpoints::TWILIO_SMS
    }

    async fn send(&self, msg: &OutboundMessage) -> Result<Accepted, SendError> {
        let t = &self.0;
        let to = t.phone(msg)?;
        let status = format!("{}/v1/gateways/twilio/sms-status", t.callback);
        let mut form = vec![("To", to), ("Body", msg.body.as_str())];
        match (&t.messaging_service_sid, &t.from) {
            (Some(m), _) => form.push(("MessagingServiceSid", m.as_str())),
            (None, Some(f)) => form.push(("From", f.as_str())),
            (None, None) => return Err(SendError::Failed("twilio: no sender".into())),
        }
        form.push(("StatusCallback", status.as_str()));
        let sid = t.create("Messages", &form).await?;
        Ok(Accepted {
            provider_message_id: crate::events::twilio::provider_message_id(&sid),
        })
    }
}

// ---- SendGrid ----------------------------------------------------------------

struct Sendgrid {
    api: String,
    api_key: Secret,
    from: String,
    from_name: Option<String>,
    client: reqwest::Client,
}

#[async_trait]
impl ChannelSender for Sendgrid {
    fn endpoint(&self) -> &str {
        endpoints::SENDGRID_EMAIL
    }

    async fn send(&self, msg: &OutboundMessage) -> Result<Accepted, SendError> {
        let Address::Email(to) = &msg.to else {
            return Err(SendError::Unreachable("not an email address".into()));
        };
        let mut from = json!({"email": self.from});
        if let Some(n) = &self.from_name {
            from["name"] = json!(n);
        }
        let body = json!({
            "personalizations": [{"to": [{"email": to.expose()}]}],
            "from": from,
            "subject": msg.subject,
            "content": [{"type": "text/plain", "value": msg.body}],
            // Open and click tracking rewrite links and add pixels: off, so
            // that the acknowledgement link is the one Muster signed.
            "tracking_settings": {
                "click_tracking": {"enable": false, "enable_text": false},
                "open_tracking": {"enable": false}
            },
        });
        let resp = self
            .client
            .post(format!("{}/v3/mail/send", self.api))
            .bearer_auth(self.api_key.expose())
            .json(&body)
            .send()
            .await
            .map_err(|e| transport(&e))?;
        let status = resp.status();
        if status.is_success() {
            let id = resp
                .headers()
                .get("x-message-id")
                .and_then(|v| v.to_str().ok())
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .ok_or_else(|| SendError::Transient("sendgrid: no X-Message-Id".into()))?;
            return Ok(Accepted {
                provider_message_id: crate::events::sendgrid::provider_message_id(&id),
            });
        }
        let headers = resp.headers().clone();
        let errors: Value = resp.json().await.unwrap_or(Value::Null);
        let on_recipient = errors["errors"].as_array().is_some_and(|es| {
            es.iter().any(|e| {
                e["field"]
                    .as_str()
                    .is_some_and(|f| f.starts_with("personalizations") && f.contains(".to"))
            })
        });
        let what = format!("sendgrid mail send: {}", status.as_u16());
        Err(match status.as_u16() {
            429 => SendError::Throttled {
                retry_after: retry_after(&headers),
            },
            s if s >= 500 => SendError::Transient(what),
            400 if on_recipient => SendError::Unreachable(what),
            _ => SendError::Failed(what),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SendGrid's documented verification key (sendgrid-python's tests;
    /// tests/fixtures/gateways/sendgrid_signature_vector.json).
    const KEY: &str = "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE83T4O/n84iotIvIW4mdBgQ/7dAfSmpqIM8kF9mN1flpVKS3GRqe62gw+2fNNRaINXvVpiglSI8eNEc6wEA3F+g==";

    #[test]
    fn bad_settings_name_their_field_and_never_the_secret() {
        let twilio = r#""twilio": {"account_sid": "AC0123456789abcdef0123456789abcdef", "auth_token": "tok-secret-123", "from": "+12125550100"}"#;
        let sendgrid = format!(
            r#""sendgrid": {{"api_key": "SG.key-secret-123", "from": "bcp@example.com", "verification_key": "{KEY}"}}"#
        );
        let cases = [
            (
                format!(
                    r#"{{"callback_url": "http://m.example.com", "channels": {{}}, {twilio}}}"#
                ),
                "callback_url",
            ),
            (
                format!(
                    r#"{{"callback_url": "https://m.example.com", "channels": {{"voice": "sendgrid"}}, {twilio}}}"#
                ),
                "channels.voice",
            ),
            (
                format!(
                    r#"{{"callback_url": "https://m.example.com", "channels": {{"fax": "twilio"}}, {twilio}}}"#
                ),
                "fax",
            ),
            (
                r#"{"callback_url": "https://m.example.com", "channels": {"sms": "twilio"}}"#
                    .to_string(),
                "twilio is not configured",
            ),
            (
                r#"{"callback_url": "https://m.example.com", "channels": {}, "twilio": {"account_sid": "x", "auth_token": "tok-secret-123"}}"#.to_string(),
                "account_sid",
            ),
            (
                r#"{"callback_url": "https://m.example.com", "channels": {"voice": "twilio"}, "twilio": {"account_sid": "AC0123456789abcdef0123456789abcdef", "auth_token": "tok-secret-123"}}"#.to_string(),
                "twilio.from",
            ),
            (
                r#"{"callback_url": "https://m.example.com", "channels": {}, "sendgrid": {"api_key": "SG.key-secret-123", "from": "bcp@example.com", "verification_key": "nope"}}"#.to_string(),
                "verification_key",
            ),
        ];
        for (text, names) in &cases {
            let e = from_json(text).err().unwrap_or_default();
            assert!(e.contains(names), "{text}: {e}");
            assert!(!e.contains("secret-123"), "{e}");
        }
        let ok = format!(
            r#"{{"callback_url": "https://m.example.com", "channels": {{"voice": "twilio", "sms": "twilio", "email": "sendgrid"}}, {twilio}, {sendgrid}}}"#
        );
        let g = from_json(&ok).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            g.chosen(),
            vec![
                ("voice", "twilio"),
                ("sms", "twilio"),
                ("email", "sendgrid")
            ]
        );
    }
}
