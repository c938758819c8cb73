//! Write-back over HTTPS: progress notes to the systems incidents came
//! from, each through its documented REST API.
//!
//! | source | request | auth | success |
//! |---|---|---|---|
//! | PagerDuty | `POST {url}/incidents/{id}/notes` `{"note": {"content": ...}}` | `Authorization: Token token=...`, `From:` a user's email | 201 |
//! | Jira | `POST {url}/rest/api/2/issue/{key}/comment` `{"body": ...}` | Basic (account email, API token) | 201 |
//! | ServiceNow | `PATCH {url}/api/now/table/incident/{sys_id}` `{"work_notes": ...}` | Basic (user, password) | 200 |
//!
//! 429, 5xx, a timeout or no connection is [`NoteError::Unavailable`]
//! (tried again later); any other status is [`NoteError::Refused`].
//! Bodies and credentials are never logged.

use crate::domain::{Origin, OriginSource};
use crate::ports::{NoteError, SourceNotes};
use crate::secret::Secret;
use async_trait::async_trait;
use serde::Deserialize;
use serde_json::json;
use std::collections::BTreeMap;
use std::time::Duration;

/// The environment variable holding the write-back configuration, a JSON
/// object of source to its API's settings (docs/integrations.md).
pub const VARIABLE: &str = "MUSTER_WRITEBACK";

/// How long one note may take.
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// One source's API settings.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Api {
    /// The API's base URL: `https://api.pagerduty.com`,
    /// `https://example.atlassian.net`, `https://example.service-now.com`.
    pub url: String,
    /// Jira: the account's email; ServiceNow: the user name.
    #[serde(default)]
    pub user: Option<String>,
    /// The API token (PagerDuty, Jira) or password (ServiceNow).
    pub token: Secret,
    /// PagerDuty: the email of the user the notes are written as.
    #[serde(default)]
    pub from: Option<String>,
}

impl std::fmt::Debug for Api {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Api")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

pub struct HttpNotes {
    client: reqwest::Client,
    apis: BTreeMap<OriginSource, Api>,
}

impl HttpNotes {
    /// Reads [`VARIABLE`]'s value: `{"pagerduty": {"url", "token", "from"},
    /// "jira": {"url", "user", "token"}, "servicenow": {"url", "user",
    /// "token"}}`, each source optional. Every problem names its source
    /// and field, never a secret.
    pub fn from_json(text: &str) -> Result<HttpNotes, String> {
        let raw: BTreeMap<String, serde_json::Value> = serde_json::from_str(text)
            .map_err(|e| format!("{VARIABLE}: not a JSON object of source to settings ({e})"))?;
        let mut apis = BTreeMap::new();
        for (name, v) in raw {
            let source = OriginSource::parse(&name).ok_or_else(|| {
                format!("{VARIABLE}: {name:?} is no source: expected pagerduty, jira or servicenow")
            })?;
            let api: Api =
                serde_json::from_value(v).map_err(|e| format!("{VARIABLE}.{name}: {e}"))?;
            let url = reqwest::Url::parse(&api.url)
                .map_err(|_| format!("{VARIABLE}.{name}.url: not a URL"))?;
            if url.scheme() != "https" && !is_loopback(&url) {
                return Err(format!("{VARIABLE}.{name}.url: must be https"));
            }
            match source {
                OriginSource::Pagerduty if api.from.as_deref().is_none_or(str::is_empty) => {
                    return Err(format!(
                        "{VARIABLE}.pagerduty.from: required (the email of the PagerDuty user the notes are written as)"
                    ));
                }
                OriginSource::Jira | OriginSource::Servicenow
                    if api.user.as_deref().is_none_or(str::is_empty) =>
                {
                    return Err(format!("{VARIABLE}.{name}.user: required"));
                }
                _ => {}
            }
            if api.token.expose().trim().is_empty() {
                return Err(format!("{VARIABLE}.{name}.token: required"));
            }
            apis.insert(
                source,
                Api {
                    url: api.url.trim_end_matches('/').to_string(),
                    ..api
                },
            );
        }
        Self::new(apis)
    }

    pub fn new(apis: BTreeMap<OriginSource, Api>) -> Result<HttpNotes, String> {
        let client = reqwest::Client::builder()
            .timeout(TIMEOUT)
            .connect_timeout(TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|_| "cannot build the HTTP client".to_string())?;
        Ok(HttpNotes { client, apis })
    }

    /// The sources configured, for logs at start-up.
    pub fn sources(&self) -> Vec<&'static str> {
        self.apis.keys().map(|s| s.name()).collect()
    }
}

/// Plain http is allowed to loopback only (tests, a local relay).
pub(crate) fn is_loopback(url: &reqwest::Url) -> bool {
    url.scheme() == "http" && matches!(url.host_str(), Some("127.0.0.1" | "localhost" | "[::1]"))
}

#[async_trait]
impl SourceNotes for HttpNotes {
    async fn post(&self, origin: &Origin, text: &str) -> Result<(), NoteError> {
        let api = self
            .apis
            .get(&origin.source)
            .ok_or(NoteError::NotConfigured)?;
        // `Origin::new` admits only characters safe in a path segment.
        let r = &origin.reference;
        let req = match origin.source {
            OriginSource::Pagerduty => self
                .client
                .post(format!("{}/incidents/{r}/notes", api.url))
                .header(
                    "authorization",
                    format!("Token token={}", api.token.expose()),
                )
                .header("accept", "application/vnd.pagerduty+json;version=2")
                .header("from", api.from.as_deref().unwrap_or_default())
                .json(&json!({"note": {"content": text}})),
            OriginSource::Jira => self
                .client
                .post(format!("{}/rest/api/2/issue/{r}/comment", api.url))
                .basic_auth(
                    api.user.as_deref().unwrap_or_default(),
                    Some(api.token.expose()),
                )
                .header("accept", "application/json")
                .json(&json!({"body": text})),
            OriginSource::Servicenow => self
                .client
                .patch(format!("{}/api/now/table/incident/{r}", api.url))
                .basic_auth(
                    api.user.as_deref().unwrap_or_default(),
                    Some(api.token.expose()),
                )
                .header("accept", "application/json")
                .json(&json!({"work_notes": text})),
        };
        let resp = req.send().await.map_err(|e| {
            NoteError::Unavailable(
                if e.is_timeout() {
                    "timeout"
                } else {
                    "connection failed"
                }
                .into(),
            )
        })?;
        let status = resp.status().as_u16();
        match status {
            200..=299 => Ok(()),
            429 | 500..=599 => Err(NoteError::Unavailable(format!("status {status}"))),
            _ => Err(NoteError::Refused(format!("status {status}"))),
        }
    }
}
