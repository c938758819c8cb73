//! `muster serve`: the HTTP API on localhost with the embedded runtime: a
//! memory store, the agenda on the wall clock, and console carriers that
//! print each message (ack links included) and report it delivered a moment
//! later. A local development server, not a deployment.

use crate::phones::{self, Phones};
use anyhow::Context;
use async_trait::async_trait;
use muster::adapters::memory::{
    Agenda, Item, LocalSealSigner, MemoryDirectory, MemoryStore, MemoryVault, SeededIds,
    SystemClock, embedded,
};
use muster::api::sign::{AckTokens, SignedAckLinks};
use muster::api::{scim, v1};
use muster::app::{self, ReceiptEvent};
use muster::domain::{Channel, Ts};
use muster::embedded::Ran;
use muster::engine::ReceiptStatus;
use muster::policy::Policy;
use muster::ports::{
    Accepted, ChannelSender, Clock, Deps, OutboundMessage, Sealing, SendError, Senders,
};
use muster::secret::Secret;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// What the console carriers schedule: a delivery receipt.
#[derive(Debug, Clone)]
struct Delivered(String);

struct ConsoleCarrier {
    quiet: bool,
    channel: Channel,
    agenda: Arc<Agenda<Delivered>>,
    phones: Arc<Phones>,
    clock: Arc<dyn Clock>,
}

#[async_trait]
impl ChannelSender for ConsoleCarrier {
    fn endpoint(&self) -> &str {
        self.channel.as_str()
    }
    async fn send(&self, msg: &OutboundMessage) -> Result<Accepted, SendError> {
        let n = self.phones.number();
        // A call is known by its SIP media application transaction, as the
        // Chime voice sender registers it.
        let id = match self.channel {
            Channel::Voice => {
                muster::events::chime::provider_message_id(&phones::transaction_id(n))
            }
            _ => format!("console:{n}"),
        };
        self.phones.keep(n, msg, &id, self.clock.now());
        if !self.quiet {
            let how = match self.channel {
                Channel::Voice => r#"{"digits": "1"}"#,
                Channel::Sms => r#"{"text": "ACK ..."}"#,
                Channel::Email | Channel::Push => r#"{"action": "acknowledge"}"#,
            };
            let mut out = std::io::stdout().lock();
            let _ = writeln!(
                out,
                "--> {} to {} ({}) [message {n}]\n    {}\n    {}\n    answer it: the board's Phones page, or POST /local/messages/{n}/answer {how}",
                self.channel,
                msg.key.stakeholder,
                msg.to.masked(),
                msg.subject,
                msg.body.replace('\n', "\n    ")
            );
        }
        self.agenda
            .push_after(1_000, Item::External(Delivered(id.clone())));
        Ok(Accepted {
            provider_message_id: id,
        })
    }
}

pub struct Options {
    pub port: u16,
    /// `None`: the built-in example directory.
    pub directory: Option<PathBuf>,
    pub policy: Option<PathBuf>,
    pub log_format: LogFormat,
    pub max_connections: usize,
    pub header_timeout: Duration,
    pub request_timeout: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Human,
    Json,
}

/// Open files kept free of connections (logs, the directory, sockets the
/// runtime opens).
const RESERVED_FILES: usize = 32;

/// Log lines on stderr, at `MUSTER_LOG` (error, warn, info, debug, trace;
/// info by default). stdout carries the console carriers' messages.
fn init_logs(format: LogFormat) {
    let level = std::env::var("MUSTER_LOG")
        .ok()
        .and_then(|l| l.parse::<tracing_subscriber::filter::LevelFilter>().ok())
        .unwrap_or(tracing_subscriber::filter::LevelFilter::INFO);
    let b = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_max_level(level)
        .with_target(false);
    let _ = match format {
        LogFormat::Json => b.json().with_current_span(false).try_init(),
        LogFormat::Human => b.with_ansi(false).try_init(),
    };
}

/// The soft limit on open files (Linux: /proc/self/limits), if known.
fn open_file_limit() -> Option<usize> {
    let text = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = text.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// How many connections to hold open at once: the asked number, below the
/// open-file limit.
pub fn connection_limit(asked: usize, open_files: Option<usize>) -> usize {
    let cap = open_files
        .map(|n| n.saturating_sub(RESERVED_FILES).max(1))
        .unwrap_or(usize::MAX);
    asked.clamp(1, cap)
}

/// The example directory `muster serve` uses when given none, built into
/// the binary so that it starts from any folder.
const EXAMPLE_DIRECTORY: &str = include_str!("../../examples/directory/ops-leadership.yaml");
const EXAMPLE_DIRECTORY_NAME: &str = "ops-leadership.yaml";

pub fn run(opts: Options) -> anyhow::Result<()> {
    init_logs(opts.log_format);
    let (path, text, shown) = match &opts.directory {
        Some(p) => (
            p.clone(),
            std::fs::read_to_string(p).with_context(|| format!("cannot read {}", p.display()))?,
            p.display().to_string(),
        ),
        None => (
            PathBuf::from(EXAMPLE_DIRECTORY_NAME),
            EXAMPLE_DIRECTORY.to_string(),
            format!("built-in example ({EXAMPLE_DIRECTORY_NAME}; --directory FILE for your own)"),
        ),
    };
    let dir = muster::directory::parse_file(&path, &text).map_err(|errors| {
        let lines: Vec<String> = errors.iter().map(|e| format!("  {e}")).collect();
        anyhow::anyhow!("{shown}: invalid directory\n{}", lines.join("\n"))
    })?;
    let policy = match &opts.policy {
        Some(p) => {
            let t = std::fs::read_to_string(p)
                .with_context(|| format!("cannot read {}", p.display()))?;
            Policy::from_toml(&t).map_err(|errors| {
                let lines: Vec<String> = errors.iter().map(|e| format!("  {e}")).collect();
                anyhow::anyhow!("{}: invalid policy\n{}", p.display(), lines.join("\n"))
            })?
        }
        None => Policy::default(),
    };
    let secret = std::env::var("MUSTER_SHARED_SECRET")
        .ok()
        .filter(|s| !s.is_empty())
        .map(Secret::new);
    let scim_token = std::env::var("MUSTER_SCIM_TOKEN")
        .ok()
        .filter(|s| !s.is_empty())
        .map(Secret::new);
    let mut integrations = integrations_from_env()?;
    let gateways = gateways_from_env()?;
    let chosen: Vec<String> = gateways
        .iter()
        .flat_map(|g| g.chosen())
        .map(|(c, g)| format!("{c} by {g}"))
        .collect();
    if let Some(g) = &gateways {
        integrations.gateways = g.hooks.clone();
    }
    let notes = notes_from_env()?;
    let siem = siem_from_env()?;
    let siem_names: Vec<String> = siem.iter().map(|s| s.name().to_string()).collect();
    let ack_secret = std::env::var("MUSTER_ACK_SECRET")
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| {
            let bytes: [u8; 32] = ChaCha20Rng::from_os_rng().random();
            bytes.iter().map(|b| format!("{b:02x}")).collect()
        });

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let listener = rt
        .block_on(tokio::net::TcpListener::bind(SocketAddr::from((
            [127, 0, 0, 1],
            opts.port,
        ))))
        .with_context(|| format!("cannot listen on port {}", opts.port))?;
    let addr = listener.local_addr()?;
    let base = format!("http://{addr}");

    let router = app(
        &dir,
        policy,
        &base,
        Access {
            secret: secret.clone(),
            scim_token,
            ack_secret,
            integrations: integrations.clone(),
            notes,
            siem,
            gateways,
        },
        opts.request_timeout,
        false,
    )?;
    let group = dir
        .groups
        .first()
        .map(|g| g.id.to_string())
        .unwrap_or_else(|| "ops-leadership".into());
    println!(
        "Muster local development server: embedded store, console carriers, real time. Not for production."
    );
    println!(
        "directory: {shown} ({} stakeholders, {} groups)",
        dir.stakeholders.len(),
        dir.groups.len()
    );
    println!(
        "requests: {}; SCIM: {}",
        if secret.is_some() {
            "HMAC signatures required (MUSTER_SHARED_SECRET)"
        } else {
            "open, no credentials (set MUSTER_SHARED_SECRET to require signatures)"
        },
        if std::env::var("MUSTER_SCIM_TOKEN")
            .map(|t| !t.is_empty())
            .unwrap_or(false)
        {
            "on, /scim/v2"
        } else {
            "off (set MUSTER_SCIM_TOKEN)"
        }
    );
    let sources = integrations.served();
    println!(
        "incident sources: {}",
        if sources.is_empty() {
            "none (set MUSTER_ALERTMANAGER_TOKEN, MUSTER_PAGERDUTY_SECRET, MUSTER_JIRA_SECRET, MUSTER_SERVICENOW_TOKEN or MUSTER_CLOUDWATCH_TOPIC_ARNS)".to_string()
        } else {
            format!(
                "{} at {base}/v1/integrations/{{source}}",
                sources.join(", ")
            )
        }
    );
    println!(
        "gateways: {}",
        if chosen.is_empty() {
            "none: every channel on the console carriers (set MUSTER_GATEWAYS for Twilio, SendGrid)"
                .to_string()
        } else {
            format!("{} (the rest on the console carriers)", chosen.join(", "))
        }
    );
    println!(
        "audit trail to SIEM: {}",
        if siem_names.is_empty() {
            "off (set MUSTER_SIEM)".to_string()
        } else {
            siem_names.join(", ")
        }
    );
    println!("listening on {base}");
    println!("incident board: {base}/");
    println!(
        "try:\n  curl -i -X POST {base}/v1/incidents -H 'content-type: application/json' -d '{{\"trigger\": {{\"incidentId\": \"INC-2024-0892\", \"severity\": \"P1\", \"stakeholderGroupId\": \"{group}\", \"messageTemplate\": \"System outage detected. Activate BCP protocol. Acknowledge by pressing 1.\", \"timestamp\": \"2024-05-20T14:32:00Z\"}}}}'\n  curl {base}/v1/incidents/INC-2024-0892"
    );
    let limit = connection_limit(opts.max_connections, open_file_limit());
    tracing::info!(
        max_connections = limit,
        header_timeout_s = opts.header_timeout.as_secs(),
        request_timeout_s = opts.request_timeout.as_secs(),
        "serving"
    );
    let _ = std::io::stdout().flush();
    rt.block_on(serve_connections(
        listener,
        router,
        limit,
        opts.header_timeout,
    ));
    Ok(())
}

/// Accepts connections, at most `limit` open at once (others wait in the
/// listen backlog), each with `header_timeout` for every request's headers,
/// until Ctrl-C.
async fn serve_connections(
    listener: tokio::net::TcpListener,
    router: axum::Router,
    limit: usize,
    header_timeout: Duration,
) {
    use hyper_util::rt::{TokioIo, TokioTimer};
    use hyper_util::service::TowerToHyperService;
    let app = router;
    let slots = Arc::new(tokio::sync::Semaphore::new(limit));
    let shutdown = tokio::signal::ctrl_c();
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            _ = &mut shutdown => return,
            p = slots.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => return,
            },
        };
        let stream = tokio::select! {
            _ = &mut shutdown => return,
            a = listener.accept() => match a {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors and the like: wait a moment
                    // for connections to close rather than spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let service = TowerToHyperService::new(app.clone());
        tokio::spawn(async move {
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(header_timeout)
                .serve_connection(TokioIo::new(stream), service);
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
            drop(permit);
        });
    }
}

/// Who may do what: the request signing secret (none: open), the SCIM
/// bearer token (none: no SCIM) and the ack link key.
pub struct Access {
    pub secret: Option<Secret>,
    pub scim_token: Option<Secret>,
    pub ack_secret: String,
    /// Incident sources served at `/v1/integrations/{source}`.
    pub integrations: muster::api::integrations::Integrations,
    /// Progress notes to the incidents' origins (`MUSTER_WRITEBACK`).
    pub notes: Option<Arc<dyn muster::ports::SourceNotes>>,
    /// SIEM receivers the audit trail is forwarded to (`MUSTER_SIEM`).
    pub siem: Vec<Arc<dyn muster::ports::AuditSink>>,
    /// Gateways that take channels from the console carriers (`MUSTER_GATEWAYS`).
    pub gateways: Option<muster::adapters::gateways::Gateways>,
}

/// The gateways the environment configures ([`muster::adapters::gateways::VARIABLE`]).
pub fn gateways_from_env() -> anyhow::Result<Option<muster::adapters::gateways::Gateways>> {
    use muster::adapters::gateways::{VARIABLE, from_json};
    match std::env::var(VARIABLE)
        .ok()
        .filter(|t| !t.trim().is_empty())
    {
        Some(text) => from_json(&text)
            .map(Some)
            .map_err(|e| anyhow::anyhow!("{e}")),
        None => Ok(None),
    }
}

/// The SIEM receivers the environment configures ([`muster::adapters::siem::VARIABLE`]).
pub fn siem_from_env() -> anyhow::Result<Vec<Arc<dyn muster::ports::AuditSink>>> {
    use muster::adapters::siem::{VARIABLE, from_json};
    match std::env::var(VARIABLE)
        .ok()
        .filter(|t| !t.trim().is_empty())
    {
        Some(text) => from_json(&text).map_err(|e| anyhow::anyhow!("{e}")),
        None => Ok(Vec::new()),
    }
}

/// Write-back as the environment configures it ([`muster::adapters::notes::VARIABLE`]).
pub fn notes_from_env() -> anyhow::Result<Option<Arc<dyn muster::ports::SourceNotes>>> {
    use muster::adapters::notes::{HttpNotes, VARIABLE};
    match std::env::var(VARIABLE)
        .ok()
        .filter(|t| !t.trim().is_empty())
    {
        Some(text) => {
            let notes = HttpNotes::from_json(&text).map_err(|e| anyhow::anyhow!("{e}"))?;
            tracing::info!(sources = ?notes.sources(), "progress is written back");
            Ok(Some(Arc::new(notes)))
        }
        None => Ok(None),
    }
}

/// The incident sources the environment configures: each source's secret
/// (`MUSTER_ALERTMANAGER_TOKEN`, `MUSTER_PAGERDUTY_SECRET`,
/// `MUSTER_JIRA_SECRET`, `MUSTER_SERVICENOW_TOKEN`) and, for CloudWatch
/// alarms through SNS, the allowed topics (`MUSTER_CLOUDWATCH_TOPIC_ARNS`).
pub fn integrations_from_env() -> anyhow::Result<muster::api::integrations::Integrations> {
    use muster::events::sns::{HttpCertFetcher, SnsVerifier, topic_arns_from_csv};
    let mut out = muster::api::integrations::Integrations::from_lookup(|k| std::env::var(k).ok())
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let topics =
        topic_arns_from_csv(&std::env::var("MUSTER_CLOUDWATCH_TOPIC_ARNS").unwrap_or_default());
    if !topics.is_empty() {
        let certs = HttpCertFetcher::new().map_err(|e| anyhow::anyhow!("{e}"))?;
        out.cloudwatch = Some(Arc::new(SnsVerifier::new(topics, Arc::new(certs))));
    }
    Ok(out)
}

/// The server's router with the embedded runtime behind it (the agenda
/// runs on its own thread). `quiet` carriers print nothing.
pub fn app(
    dir: &muster::directory::DirectoryFile,
    policy: Policy,
    base: &str,
    access: Access,
    request_timeout: Duration,
    quiet: bool,
) -> anyhow::Result<axum::Router> {
    let Access {
        secret,
        scim_token,
        ack_secret,
        integrations,
        notes,
        siem,
        gateways,
    } = access;
    let paths = muster::directory::escalation_paths(&dir.stakeholders, &dir.groups, &policy);
    if !paths.is_empty() {
        let lines: Vec<String> = paths.iter().map(|e| format!("  {e}")).collect();
        anyhow::bail!(
            "refusing to start: failures would reach nobody\n{}",
            lines.join("\n")
        );
    }
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let agenda: Arc<Agenda<Delivered>> = Agenda::new(clock.clone());
    let store = Arc::new(MemoryStore::new());
    let directory = Arc::new(MemoryDirectory::new(
        dir.groups.clone(),
        dir.stakeholders.clone(),
    ));
    let policy = Arc::new(policy);
    let phones = Arc::new(Phones::default());
    let carrier = |channel| -> Arc<dyn ChannelSender> {
        Arc::new(ConsoleCarrier {
            quiet,
            channel,
            agenda: agenda.clone(),
            phones: phones.clone(),
            clock: clock.clone(),
        })
    };
    let tokens = AckTokens::new(Secret::new(ack_secret), 7 * 86_400_000);
    let mut senders = Senders {
        voice: carrier(Channel::Voice),
        sms: carrier(Channel::Sms),
        email: carrier(Channel::Email),
        push: carrier(Channel::Push),
    };
    if let Some(g) = &gateways {
        g.apply(&mut senders);
    }
    let ids = Arc::new(SeededIds::new(ChaCha20Rng::from_os_rng().random()));
    let deps = Deps {
        ack_links: Some(Arc::new(SignedAckLinks {
            tokens: tokens.clone(),
            base_url: base.to_string(),
        })),
        vault: Some(Arc::new(MemoryVault::from_os())),
        sealing: Some(Sealing {
            signer: Arc::new(LocalSealSigner::from_os()),
            store: store.clone(),
        }),
        notes,
        siem,
        ..embedded(
            policy.clone(),
            &agenda,
            store.clone(),
            directory.clone(),
            senders,
            clock.clone(),
            ids,
        )
    };

    // The agenda on the wall clock, on its own thread.
    agenda.push(clock.now().plus(policy.sweep_interval), Item::Sweep);
    {
        let (deps, agenda) = (deps.clone(), agenda.clone());
        std::thread::Builder::new()
            .name("agenda".into())
            .spawn(move || drive(deps, agenda))?;
    }
    // The audit trail to the SIEM receivers, as it is written.
    if !deps.siem.is_empty() {
        let (deps, store) = (deps.clone(), store.clone());
        std::thread::Builder::new()
            .name("siem".into())
            .spawn(move || forward_audit(deps, store))?;
    }

    let board = muster::api::board::BoardConfig {
        auth: if secret.is_some() {
            muster::api::board::BoardAuth::Signed
        } else {
            muster::api::board::BoardAuth::Open
        },
        local_phones: true,
    };
    let api = v1::ApiState {
        deps,
        secret,
        tokens,
        integrations,
    };
    // Answering the console carriers' messages locally.
    let mut router = v1::router(api.clone()).merge(phones::router(phones, api));
    if let Some(t) = scim_token {
        router = router.merge(scim::router(directory, t));
    }
    // The incident board at `/`.
    let router = router.merge(muster::api::board::router(board));
    let router = router.layer(tower_http::timeout::TimeoutLayer::with_status_code(
        axum::http::StatusCode::REQUEST_TIMEOUT,
        request_timeout,
    ));
    Ok(muster::api::finish(router))
}

/// Queues the audit lines the store writes for the SIEM receivers, every
/// second, forever (the export jobs deliver them, at least once).
fn forward_audit(deps: Deps, store: Arc<MemoryStore>) {
    let Ok(rt) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        tracing::error!("cannot start the SIEM forwarder");
        return;
    };
    let mut cursor = 0;
    loop {
        let next = rt.block_on(muster::embedded::forward_written(&deps, &store, cursor));
        if next == cursor {
            std::thread::sleep(Duration::from_secs(1));
        }
        cursor = next;
    }
}

/// Delivers due items to the use cases, forever.
fn drive(deps: Deps, agenda: Arc<Agenda<Delivered>>) {
    let Ok(rt) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        tracing::error!("cannot start the agenda runtime");
        return;
    };
    loop {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3600);
        let Some((at, item)) = agenda.wait_due(deadline) else {
            continue;
        };
        let r = rt.block_on(async {
            match muster::embedded::run(&deps, item).await {
                Ran::Handled(r) => r,
                Ran::Swept(r) => {
                    // Every sweep interval, whatever is queued, as in production.
                    agenda.push(Ts(at.0).plus(deps.policy.sweep_interval), Item::Sweep);
                    r.map(|_| ())
                }
                Ran::External(Delivered(id)) => app::receipt(
                    &deps,
                    ReceiptEvent::Delivery {
                        provider_message_id: id,
                        status: ReceiptStatus::Delivered,
                    },
                )
                .await
                .map(|_| ()),
            }
        });
        if let Err(e) = r {
            tracing::error!(error = %e, "processing a due item failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The server always keeps descriptors back to answer with (the store,
    /// logs, the listener), whatever limit is asked for.
    #[test]
    fn the_connection_limit_leaves_descriptors_to_answer_with() {
        assert_eq!(connection_limit(256, None), 256);
        assert_eq!(connection_limit(256, Some(1024)), 256);
        assert_eq!(connection_limit(256, Some(64)), 64 - RESERVED_FILES);
        assert_eq!(
            connection_limit(0, Some(1024)),
            1,
            "at least one connection"
        );
        assert_eq!(
            connection_limit(256, Some(3)),
            1,
            "a tiny limit still serves one"
        );
    }
}
