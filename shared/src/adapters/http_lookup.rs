//! Live contact lookup over HTTPS, against an HRIS or identity provider that
//! serves SCIM-shaped users (`GET {base}/Users/{id}`, the default), with a
//! hard timeout (2 s by default). 404 means the source does not know the
//! person; a timeout, a connection failure or any other status means the
//! source is unavailable and the directory copy is used (flagged for review).
//! Response bodies and URLs are never logged: they carry contact details.

use crate::domain::{ContactMethods, EmailAddress, PhoneNumber, PushEndpoint, StakeholderId};
use crate::ports::{ContactLookup, LookupError};
use crate::secret::Secret;
use async_trait::async_trait;
use serde_json::Value;
use std::time::Duration;

/// The lookup timeout the seed requires.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);

pub struct HttpContactLookup {
    client: reqwest::Client,
    base: String,
    token: Option<Secret>,
}

impl HttpContactLookup {
    /// `base` is the SCIM base URL (e.g. `https://hris.example.com/scim/v2`).
    pub fn new(base: &str, token: Option<Secret>, timeout: Duration) -> Result<Self, crate::Error> {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .build()
            .map_err(|e| crate::Error::Permanent {
                context: "cannot build the HTTP client".into(),
                source: Some(Box::new(e)),
            })?;
        Ok(HttpContactLookup {
            client,
            base: base.trim_end_matches('/').to_string(),
            token,
        })
    }
}

#[async_trait]
impl ContactLookup for HttpContactLookup {
    async fn lookup(&self, id: &StakeholderId) -> Result<Option<ContactMethods>, LookupError> {
        let mut req = self
            .client
            .get(format!("{}/Users/{}", self.base, id))
            .header("accept", "application/scim+json, application/json");
        if let Some(t) = &self.token {
            req = req.bearer_auth(t.expose());
        }
        let resp = req.send().await.map_err(|e| {
            if e.is_timeout() {
                LookupError::Timeout
            } else {
                LookupError::Unavailable("connection failed".into())
            }
        })?;
        match resp.status().as_u16() {
            200 => {}
            404 => return Ok(None),
            s => return Err(LookupError::Unavailable(format!("status {s}"))),
        }
        let body: Value = resp.json().await.map_err(|e| {
            if e.is_timeout() {
                LookupError::Timeout
            } else {
                LookupError::Unavailable("unreadable body".into())
            }
        })?;
        contacts_from_scim(&body).map(Some)
    }
}

/// Contacts from a SCIM user: the mobile (else work, else first) phone, the
/// primary (else first) email, Muster's extension push endpoint. Invalid
/// values make the answer unusable, never a guess.
pub fn contacts_from_scim(v: &Value) -> Result<ContactMethods, LookupError> {
    let bad = |what: &str| LookupError::Unavailable(format!("invalid {what} in the answer"));
    let phone = match crate::directory::preferred_phone(v)
        .and_then(|p| p.get("value"))
        .and_then(Value::as_str)
    {
        Some(s) => Some(PhoneNumber::parse(s).map_err(|_| bad("phone number"))?),
        None => None,
    };
    let email = crate::directory::preferred_email(v);
    let email = match email.and_then(|e| e.get("value")).and_then(Value::as_str) {
        Some(s) => Some(EmailAddress::parse(s).map_err(|_| bad("email"))?),
        None => None,
    };
    let push = match v
        .get("urn:muster:scim:1.0:User")
        .and_then(|e| e.get("pushEndpoint"))
        .and_then(Value::as_str)
    {
        Some(s) => Some(PushEndpoint::parse(s).map_err(|_| bad("push endpoint"))?),
        None => None,
    };
    Ok(ContactMethods {
        phone,
        sms: None,
        email,
        push,
        sms_opted_out: false,
    })
}
