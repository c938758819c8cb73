//! `muster serve`: the HTTP API on localhost with the embedded runtime: a
//! memory store, the agenda on the wall clock, and console carriers that
//! print each message (ack links included) and report it delivered a moment
//! later. A local development server, not a deployment.

use anyhow::Context;
use async_trait::async_trait;
use muster::adapters::memory::{
    Agenda, Item, LocalSealer, MemoryDirectory, MemoryStore, MemoryVault, SeededIds, SystemClock,
    embedded,
};
use muster::api::sign::{AckTokens, SignedAckLinks};
use muster::api::{Secret, scim, v1};
use muster::app::{self, ReceiptEvent};
use muster::domain::{Channel, Ts};
use muster::engine::ReceiptStatus;
use muster::policy::Policy;
use muster::ports::{
    Accepted, ChannelSender, Clock, Deps, OutboundMessage, Sealing, SendError, Senders,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// What the console carriers schedule: a delivery receipt.
#[derive(Debug, Clone)]
struct Delivered(String);

struct ConsoleCarrier {
    quiet: bool,
    channel: Channel,
    agenda: Arc<Agenda<Delivered>>,
    next: Arc<AtomicU64>,
}

#[async_trait]
impl ChannelSender for ConsoleCarrier {
    fn endpoint(&self) -> &str {
        self.channel.as_str()
    }
    async fn send(&self, msg: &OutboundMessage) -> Result<Accepted, SendError> {
        let id = format!("console:{}", self.next.fetch_add(1, Ordering::Relaxed));
        if !self.quiet {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(
                out,
                "--> {} to {} ({}) [{}]\n    {}\n    {}",
                self.channel,
                msg.key.stakeholder,
                msg.to.masked(),
                id,
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
    pub directory: PathBuf,
    pub policy: Option<PathBuf>,
}

pub fn run(opts: Options) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(&opts.directory)
        .with_context(|| format!("cannot read {}", opts.directory.display()))?;
    let dir = muster::directory::parse_file(&opts.directory, &text).map_err(|errors| {
        let lines: Vec<String> = errors.iter().map(|e| format!("  {e}")).collect();
        anyhow::anyhow!(
            "{}: invalid directory\n{}",
            opts.directory.display(),
            lines.join("\n")
        )
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
        secret.clone(),
        scim_token,
        &ack_secret,
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
        "directory: {} ({} stakeholders, {} groups)",
        opts.directory.display(),
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
    println!("listening on {base}");
    println!(
        "try:\n  curl -i -X POST {base}/v1/incidents -H 'content-type: application/json' -d '{{\"trigger\": {{\"incidentId\": \"INC-2024-0892\", \"severity\": \"P1\", \"stakeholderGroupId\": \"{group}\", \"messageTemplate\": \"System outage detected. Activate BCP protocol. Acknowledge by pressing 1.\", \"timestamp\": \"2024-05-20T14:32:00Z\"}}}}'\n  curl {base}/v1/incidents/INC-2024-0892"
    );
    let _ = std::io::stdout().flush();
    rt.block_on(async move {
        axum::serve(listener, router)
            .with_graceful_shutdown(async {
                let _ = tokio::signal::ctrl_c().await;
            })
            .await
    })?;
    Ok(())
}

/// The server's router with the embedded runtime behind it (the agenda
/// runs on its own thread). `quiet` carriers print nothing.
pub fn app(
    dir: &muster::directory::DirectoryFile,
    policy: Policy,
    base: &str,
    secret: Option<Secret>,
    scim_token: Option<Secret>,
    ack_secret: &str,
    quiet: bool,
) -> anyhow::Result<axum::Router> {
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
    let next = Arc::new(AtomicU64::new(1));
    let carrier = |channel| -> Arc<dyn ChannelSender> {
        Arc::new(ConsoleCarrier {
            quiet,
            channel,
            agenda: agenda.clone(),
            next: next.clone(),
        })
    };
    let tokens = AckTokens::new(Secret::new(ack_secret.to_string()), 7 * 86_400_000);
    let senders = Senders {
        voice: carrier(Channel::Voice),
        sms: carrier(Channel::Sms),
        email: carrier(Channel::Email),
        push: carrier(Channel::Push),
    };
    let ids = Arc::new(SeededIds::new(ChaCha20Rng::from_os_rng().random()));
    let deps = Deps {
        ack_links: Some(Arc::new(SignedAckLinks {
            tokens: tokens.clone(),
            base_url: base.to_string(),
        })),
        vault: Some(Arc::new(MemoryVault::from_os())),
        sealing: Some(Sealing {
            sealer: Arc::new(LocalSealer::from_os()),
            store: store.clone(),
        }),
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

    let mut router = v1::router(v1::ApiState {
        deps,
        secret,
        tokens,
    });
    if let Some(t) = scim_token {
        router = router.merge(scim::router(directory, t));
    }
    Ok(router)
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
            match item {
                Item::Job(job) => app::dispatch(&deps, job).await,
                Item::Timer(t) => app::tick(&deps, t).await,
                Item::Sweep => {
                    agenda.push(Ts(at.0).plus(deps.policy.sweep_interval), Item::Sweep);
                    app::sweep(&deps, None).await.map(|_| ())
                }
                Item::External(Delivered(id)) => app::receipt(
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
