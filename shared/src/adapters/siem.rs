//! SIEM receivers of the audit trail: syslog over TLS (RFC 5424 messages,
//! RFC 5425 transport with octet-counted frames) and Splunk's HTTP Event
//! Collector (HEC).
//!
//! Each line is the export line `muster audit verify` reads (an entry, or
//! `{"seal": ...}`), with its dedup key: an entry's hash, a seal's
//! statement hashed ([`ExportLine::dedup_key`]).
//!
//! - **syslog**: one connection per delivery; every line a frame
//!   `LEN SP <110>1 TIMESTAMP HOSTNAME muster - KIND [muster@32473
//!   incident=".." stakeholder=".." route=".." seq=".." hash=".."] JSON`
//!   (facility 13, log audit; severity 6, or 4 for a failure). The delivery
//!   counts once the receiver has read to the end: after the frames Muster
//!   closes its side (TLS close_notify) and waits for the receiver to close
//!   its own; a receiver that resets the connection or does not close
//!   within the timeout has not confirmed, and the lines are sent again.
//! - **hec**: `POST {url}/services/collector/event`, `Authorization: Splunk
//!   <token>`, one event object per line (`time`, `host`, `source`,
//!   `sourcetype`, `index`, `event`: the line, `fields`: `muster_hash`,
//!   `muster_incident`, `muster_kind`), concatenated. 200 is delivered; 429,
//!   5xx (503: "Server is busy"), a timeout or no connection is
//!   unavailable; another status (400 invalid data, 401, 403 token) is a
//!   refusal.

use crate::audit::ExportLine;
use crate::ports::{AuditSink, ExportError};
use crate::secret::Secret;
use async_trait::async_trait;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use serde::Deserialize;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The environment variable holding the SIEM configuration (`muster
/// serve`); on AWS the `muster/<stage>/siem` secret (docs/audit.md).
pub const VARIABLE: &str = "MUSTER_SIEM";

/// How long connecting, sending or confirming one delivery may take.
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// The structured data element's default id: `muster` at the private
/// enterprise number IANA reserves for documentation (RFC 5612).
pub const SD_ID: &str = "muster@32473";

/// syslog facility 13: log audit.
const FACILITY: u8 = 13;

/// How long a receiver that was unavailable is not tried again: the jobs
/// for it fail at once meanwhile (and are retried later, as always), so a
/// receiver that hangs never holds a dispatch worker for its timeout on
/// every job.
pub const RESTING: Duration = Duration::from_secs(30);

/// A receiver's recent unavailability (in process: per warm function or
/// server).
#[derive(Default)]
struct Breaker(std::sync::atomic::AtomicU64);

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default()
}

impl Breaker {
    /// Runs `deliver` unless the receiver is resting.
    async fn guard(
        &self,
        deliver: impl std::future::Future<Output = Result<(), ExportError>>,
    ) -> Result<(), ExportError> {
        use std::sync::atomic::Ordering;
        if now_ms() < self.0.load(Ordering::Relaxed) {
            return Err(ExportError::Unavailable(
                "unavailable moments ago; not tried".into(),
            ));
        }
        let r = deliver.await;
        if matches!(r, Err(ExportError::Unavailable(_))) {
            self.0
                .store(now_ms() + RESTING.as_millis() as u64, Ordering::Relaxed);
        }
        r
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    #[serde(default)]
    syslog: Option<SyslogConfig>,
    #[serde(default)]
    hec: Option<HecConfig>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SyslogConfig {
    /// `host:port` of the receiver (6514 is syslog over TLS).
    address: String,
    /// The CA certificates the receiver's certificate is checked against,
    /// PEM (else the public roots).
    #[serde(default)]
    ca_pem: Option<String>,
    #[serde(default)]
    ca_file: Option<String>,
    /// A client certificate and key (PEM) for receivers that authenticate
    /// their senders (rsyslog's `x509/certvalid`).
    #[serde(default)]
    client_cert_pem: Option<String>,
    #[serde(default)]
    client_cert_file: Option<String>,
    #[serde(default)]
    client_key_pem: Option<Secret>,
    #[serde(default)]
    client_key_file: Option<String>,
    /// HOSTNAME of each message (default `muster`).
    #[serde(default)]
    hostname: Option<String>,
    #[serde(default)]
    sd_id: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HecConfig {
    /// The collector's base URL: `https://splunk.example.com:8088`.
    url: String,
    token: Secret,
    #[serde(default)]
    index: Option<String>,
    #[serde(default)]
    source: Option<String>,
    #[serde(default)]
    sourcetype: Option<String>,
    #[serde(default)]
    host: Option<String>,
    #[serde(default)]
    ca_pem: Option<String>,
    #[serde(default)]
    ca_file: Option<String>,
}

/// The receivers [`VARIABLE`]'s value configures: `{"syslog": {...},
/// "hec": {...}}`, each optional (`{}`: none). Every problem names its
/// field, never a secret.
pub fn from_json(text: &str) -> Result<Vec<Arc<dyn AuditSink>>, String> {
    let c: Config = serde_json::from_str(text).map_err(|e| format!("{VARIABLE}: {e}"))?;
    let mut out: Vec<Arc<dyn AuditSink>> = Vec::new();
    if let Some(s) = c.syslog {
        out.push(Arc::new(Syslog::new(s)?));
    }
    if let Some(h) = c.hec {
        out.push(Arc::new(Hec::new(h)?));
    }
    Ok(out)
}

/// PEM text from a field or the file another field names.
fn pem(
    field: &str,
    inline: Option<String>,
    file: Option<String>,
) -> Result<Option<Vec<u8>>, String> {
    match (inline, file) {
        (Some(_), Some(_)) => Err(format!(
            "{VARIABLE}.{field}_pem and {field}_file: give one of them"
        )),
        (Some(p), None) => Ok(Some(p.into_bytes())),
        (None, Some(f)) => std::fs::read(&f)
            .map(Some)
            .map_err(|e| format!("{VARIABLE}.{field}_file: cannot read {f}: {e}")),
        (None, None) => Ok(None),
    }
}

fn certs(field: &str, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs: Vec<_> = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<_, _>>()
        .map_err(|_| format!("{VARIABLE}.{field}: not PEM certificates"))?;
    if certs.is_empty() {
        return Err(format!("{VARIABLE}.{field}: no certificate in it"));
    }
    Ok(certs)
}

// ---- syslog ----------------------------------------------------------------

pub struct Syslog {
    breaker: Breaker,
    address: String,
    server: ServerName<'static>,
    tls: tokio_rustls::TlsConnector,
    hostname: String,
    sd_id: String,
}

/// PRINTUSASCII without space, `=`, `]` and `"` (an SD-NAME), 1 to `max`.
fn sd_name_ok(s: &str, max: usize) -> bool {
    (1..=max).contains(&s.len())
        && s.bytes()
            .all(|b| (33..=126).contains(&b) && !matches!(b, b'=' | b']' | b'"'))
}

impl Syslog {
    fn new(c: SyslogConfig) -> Result<Syslog, String> {
        let (host, _port) = c
            .address
            .rsplit_once(':')
            .filter(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok_and(|p| p > 0))
            .ok_or_else(|| format!("{VARIABLE}.syslog.address: expected host:port"))?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let server = ServerName::try_from(host.to_string())
            .map_err(|_| format!("{VARIABLE}.syslog.address: {host:?} is not a host name"))?;
        let hostname = c.hostname.unwrap_or_else(|| "muster".into());
        if !(1..=255).contains(&hostname.len())
            || !hostname.bytes().all(|b| (33..=126).contains(&b))
        {
            return Err(format!(
                "{VARIABLE}.syslog.hostname: 1 to 255 printable ASCII characters without spaces"
            ));
        }
        let sd_id = c.sd_id.unwrap_or_else(|| SD_ID.into());
        if !sd_name_ok(&sd_id, 32) || !sd_id.contains('@') {
            return Err(format!(
                "{VARIABLE}.syslog.sd_id: expected name@enterprise-number (at most 32 characters)"
            ));
        }
        let mut roots = rustls::RootCertStore::empty();
        match pem("syslog.ca", c.ca_pem, c.ca_file)? {
            Some(p) => {
                for cert in certs("syslog.ca", &p)? {
                    roots.add(cert).map_err(|_| {
                        format!("{VARIABLE}.syslog.ca: a certificate that cannot be used")
                    })?;
                }
            }
            None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|_| "TLS set-up failed".to_string())?
            .with_root_certificates(roots);
        let cert = pem("syslog.client_cert", c.client_cert_pem, c.client_cert_file)?;
        let key = pem(
            "syslog.client_key",
            c.client_key_pem.map(|k| k.expose().to_string()),
            c.client_key_file,
        )?;
        let config = match (cert, key) {
            (Some(cert), Some(key)) => {
                let chain = certs("syslog.client_cert", &cert)?;
                let key = PrivateKeyDer::from_pem_slice(&key)
                    .map_err(|_| format!("{VARIABLE}.syslog.client_key: not a PEM private key"))?;
                builder.with_client_auth_cert(chain, key).map_err(|_| {
                    format!("{VARIABLE}.syslog.client_key: does not match client_cert")
                })?
            }
            (None, None) => builder.with_no_client_auth(),
            _ => {
                return Err(format!(
                    "{VARIABLE}.syslog: client_cert and client_key go together"
                ));
            }
        };
        Ok(Syslog {
            breaker: Breaker::default(),
            address: c.address,
            server,
            tls: tokio_rustls::TlsConnector::from(Arc::new(config)),
            hostname,
            sd_id,
        })
    }

    async fn send(&self, frames: &[u8]) -> Result<(), ExportError> {
        let down = |what: &str, e: std::io::Error| ExportError::Unavailable(format!("{what}: {e}"));
        let tcp = tokio::net::TcpStream::connect(&self.address)
            .await
            .map_err(|e| down("connecting", e))?;
        let mut tls = self
            .tls
            .connect(self.server.clone(), tcp)
            .await
            .map_err(
                |e| match e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
                    // A certificate or a protocol refused: settings to fix.
                    Some(t) => ExportError::Refused(format!("TLS: {t}")),
                    None => down("TLS handshake", e),
                },
            )?;
        tls.write_all(frames)
            .await
            .map_err(|e| down("sending", e))?;
        // close_notify, then wait for the receiver to close: it closes
        // only once it has read to our close_notify, so every frame before
        // it (rsyslog closes the TCP connection without a close_notify of
        // its own; a receiver that had not read everything resets it
        // instead, which is no confirmation).
        tls.shutdown().await.map_err(|e| down("closing", e))?;
        let mut buf = [0u8; 512];
        loop {
            match tls.read(&mut buf).await {
                Ok(0) => return Ok(()),
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
                Err(e) => return Err(down("waiting for the receiver to confirm", e)),
            }
        }
    }
}

/// `value` escaped for a structured data parameter (RFC 5424 6.3.3).
fn sd_escape(value: &str, out: &mut String) {
    for c in value.chars() {
        if matches!(c, '"' | '\\' | ']') {
            out.push('\\');
        }
        out.push(c);
    }
}

/// One RFC 5424 message for `line`.
pub fn syslog_message(line: &ExportLine, hostname: &str, sd_id: &str) -> String {
    let kind = line.kind();
    let severity = if kind.contains("FAILURE") || kind.contains("UNDELIVERED") {
        4
    } else {
        6
    };
    let mut m = format!(
        "<{}>1 {} {hostname} muster - {kind} [{sd_id}",
        FACILITY * 8 + severity,
        line.at().rfc3339()
    );
    let mut param = |name: &str, value: &str| {
        let _ = write!(m, " {name}=\"");
        sd_escape(value, &mut m);
        m.push('"');
    };
    param("incident", line.incident().as_str());
    if let ExportLine::Entry(e) = line {
        param("stakeholder", e.stakeholder.as_str());
        param("route", &e.route.encode());
        param("seq", &e.seq.to_string());
    }
    param("hash", &line.dedup_key());
    m.push_str("] ");
    m.push_str(&line.to_json());
    m
}

/// `lines` as octet-counted frames (RFC 5425 4.3: `MSG-LEN SP SYSLOG-MSG`).
pub fn syslog_frames(lines: &[ExportLine], hostname: &str, sd_id: &str) -> Vec<u8> {
    let mut out = Vec::new();
    for line in lines {
        let m = syslog_message(line, hostname, sd_id);
        out.extend_from_slice(format!("{} ", m.len()).as_bytes());
        out.extend_from_slice(m.as_bytes());
    }
    out
}

#[async_trait]
impl AuditSink for Syslog {
    fn name(&self) -> &str {
        "syslog"
    }

    async fn deliver(&self, lines: &[ExportLine]) -> Result<(), ExportError> {
        let frames = syslog_frames(lines, &self.hostname, &self.sd_id);
        let send = async {
            tokio::time::timeout(TIMEOUT, self.send(&frames))
                .await
                .unwrap_or_else(|_| Err(ExportError::Unavailable("timed out".into())))
        };
        self.breaker.guard(send).await
    }
}

// ---- Splunk HEC --------------------------------------------------------------

pub struct Hec {
    breaker: Breaker,
    endpoint: String,
    token: Secret,
    index: Option<String>,
    source: String,
    sourcetype: String,
    host: String,
    client: reqwest::Client,
}

impl Hec {
    fn new(c: HecConfig) -> Result<Hec, String> {
        let url =
            reqwest::Url::parse(&c.url).map_err(|_| format!("{VARIABLE}.hec.url: not a URL"))?;
        if url.scheme() != "https" && !super::notes::is_loopback(&url) {
            return Err(format!("{VARIABLE}.hec.url: must be https"));
        }
        if c.token.expose().trim().is_empty() {
            return Err(format!("{VARIABLE}.hec.token: required"));
        }
        let mut builder = reqwest::Client::builder()
            .timeout(TIMEOUT)
            .connect_timeout(TIMEOUT)
            .redirect(reqwest::redirect::Policy::none());
        if let Some(p) = pem("hec.ca", c.ca_pem, c.ca_file)? {
            for cert in certs("hec.ca", &p)? {
                let cert = reqwest::Certificate::from_der(&cert)
                    .map_err(|_| format!("{VARIABLE}.hec.ca: a certificate that cannot be used"))?;
                builder = builder.add_root_certificate(cert);
            }
        }
        let client = builder
            .build()
            .map_err(|_| "cannot build the HTTP client".to_string())?;
        Ok(Hec {
            breaker: Breaker::default(),
            endpoint: format!("{}/services/collector/event", c.url.trim_end_matches('/')),
            token: c.token,
            index: c.index,
            source: c.source.unwrap_or_else(|| "muster".into()),
            sourcetype: c.sourcetype.unwrap_or_else(|| "muster:audit".into()),
            host: c.host.unwrap_or_else(|| "muster".into()),
            client,
        })
    }

    /// The request body: one HEC event object per line, concatenated.
    pub fn body(&self, lines: &[ExportLine]) -> String {
        let mut out = String::new();
        for line in lines {
            let mut ev = serde_json::json!({
                "time": line.at().0 as f64 / 1000.0,
                "host": self.host,
                "source": self.source,
                "sourcetype": self.sourcetype,
                "event": line,
                "fields": {
                    "muster_hash": line.dedup_key(),
                    "muster_incident": line.incident().as_str(),
                    "muster_kind": line.kind(),
                },
            });
            if let Some(i) = &self.index {
                ev["index"] = serde_json::Value::String(i.clone());
            }
            out.push_str(&ev.to_string());
            out.push('\n');
        }
        out
    }
}

#[async_trait]
impl AuditSink for Hec {
    fn name(&self) -> &str {
        "hec"
    }

    async fn deliver(&self, lines: &[ExportLine]) -> Result<(), ExportError> {
        self.breaker.guard(self.post(lines)).await
    }
}

impl Hec {
    async fn post(&self, lines: &[ExportLine]) -> Result<(), ExportError> {
        let resp = self
            .client
            .post(&self.endpoint)
            .header("Authorization", format!("Splunk {}", self.token.expose()))
            .header("Content-Type", "application/json")
            .body(self.body(lines))
            .send()
            .await
            .map_err(|e| {
                ExportError::Unavailable(if e.is_timeout() {
                    "timed out".into()
                } else {
                    "no connection".into()
                })
            })?;
        let status = resp.status();
        if status.is_success() {
            return Ok(());
        }
        // HEC answers {"text": "...", "code": n}; the text names the problem.
        let text = resp
            .json::<serde_json::Value>()
            .await
            .ok()
            .and_then(|v| {
                let code = v.get("code")?.as_i64()?;
                let text = v
                    .get("text")?
                    .as_str()?
                    .chars()
                    .take(200)
                    .collect::<String>();
                Some(format!("{status}: {text} (code {code})"))
            })
            .unwrap_or_else(|| status.to_string());
        if status.as_u16() == 429 || status.is_server_error() {
            Err(ExportError::Unavailable(text))
        } else {
            Err(ExportError::Refused(text))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_settings_name_their_field_and_never_the_secret() {
        let cases = [
            (
                r#"{"syslog": {"address": "siem.example.com"}}"#,
                "syslog.address",
            ),
            (
                r#"{"syslog": {"address": "siem.example.com:6514", "hostname": "a b"}}"#,
                "syslog.hostname",
            ),
            (
                r#"{"syslog": {"address": "siem.example.com:6514", "sd_id": "muster"}}"#,
                "syslog.sd_id",
            ),
            (
                r#"{"syslog": {"address": "siem.example.com:6514", "ca_pem": "nope"}}"#,
                "syslog.ca",
            ),
            (
                r#"{"syslog": {"address": "siem.example.com:6514", "client_key_pem": "k-secret-123"}}"#,
                "client_cert and client_key",
            ),
            (
                r#"{"hec": {"url": "http://splunk.example.com:8088", "token": "t-secret-123"}}"#,
                "hec.url",
            ),
            (
                r#"{"hec": {"url": "https://splunk.example.com:8088", "token": " "}}"#,
                "hec.token",
            ),
            (
                r#"{"hec": {"url": "https://splunk.example.com:8088"}}"#,
                "token",
            ),
            (r#"{"kafka": {}}"#, "kafka"),
        ];
        for (text, names) in cases {
            let e = from_json(text).err().unwrap_or_default();
            assert!(e.contains(names), "{text}: {e}");
            assert!(!e.contains("secret-123"), "{e}");
        }
        assert_eq!(from_json("{}").map(|v| v.len()), Ok(0));
    }
}
