//! Builds the use cases' [`Deps`] from the configuration: the DynamoDB
//! stores, the SQS queue and timers, the carriers' senders, the rate
//! limiter, EMF metrics on stdout, signed ack links and the live contact
//! lookup when configured, the KMS contact vault (addresses in the audit
//! trail), KMS incident seals (where MUSTER_SEAL_KEY_ID is set), the
//! keyed-hash number index (SMS replies and opt-outs) and directory writes
//! (SCIM, opt-outs).

use super::config::Config;
use crate::crypto::{KmsContactCipher, KmsContactVault};
use crate::dynamo::index_key::IndexKey;
use crate::dynamo::{DynamoDirectory, DynamoLimiter, DynamoStore};
use crate::kms_seal::KmsSealSigner;
use crate::senders::email::EmailSender;
use crate::senders::sms::SmsSender;
use crate::senders::sns::PushSender;
use crate::senders::voice::VoiceSender;
use crate::sqs::SqsQueue;
use crate::timers::{ScheduleTarget, SqsTimers};
use async_trait::async_trait;
use muster::adapters::emf::EmfObserver;
use muster::adapters::http_lookup::{DEFAULT_TIMEOUT, HttpContactLookup};
use muster::adapters::memory::SeededIds;
use muster::api::sign::{AckTokens, SignedAckLinks};
use muster::ports::{
    Accepted, ChannelSender, Clock, Deps, OutboundMessage, Sealing, SendError, Senders,
};
use muster::secret::Secret;
use std::sync::Arc;

/// How long a one-click acknowledgement link stays valid.
pub const ACK_LINK_TTL_MS: u64 = 7 * 86_400_000;

/// Rate-limiting endpoint names of the senders.
pub mod endpoints {
    pub const SMS: &str = "sms";
    pub const EMAIL: &str = "email";
    pub const VOICE: &str = "voice";
    pub const PUSH: &str = "push";
}

/// A channel this deployment does not send on (no voice without a SIP media
/// application, no push unless enabled, no email without a sender): every
/// send fails at once, so the cascade moves to its next channel.
pub struct Disabled {
    endpoint: &'static str,
    why: &'static str,
}

#[async_trait]
impl ChannelSender for Disabled {
    fn endpoint(&self) -> &str {
        self.endpoint
    }
    async fn send(&self, _msg: &OutboundMessage) -> Result<Accepted, SendError> {
        Err(SendError::Failed(self.why.to_string()))
    }
}

/// The AWS clients the adapters use, from one SDK configuration.
#[derive(Clone)]
pub struct Clients {
    pub dynamodb: aws_sdk_dynamodb::Client,
    pub sqs: aws_sdk_sqs::Client,
    pub scheduler: aws_sdk_scheduler::Client,
    pub sns: aws_sdk_sns::Client,
    pub sesv2: aws_sdk_sesv2::Client,
    pub chime: aws_sdk_chimesdkvoice::Client,
    pub sms: aws_sdk_pinpointsmsvoicev2::Client,
    pub kms: aws_sdk_kms::Client,
    pub s3: aws_sdk_s3::Client,
}

impl Clients {
    pub fn new(cfg: &aws_config::SdkConfig) -> Self {
        Clients {
            dynamodb: aws_sdk_dynamodb::Client::new(cfg),
            sqs: aws_sdk_sqs::Client::new(cfg),
            scheduler: aws_sdk_scheduler::Client::new(cfg),
            sns: aws_sdk_sns::Client::new(cfg),
            sesv2: aws_sdk_sesv2::Client::new(cfg),
            chime: aws_sdk_chimesdkvoice::Client::new(cfg),
            sms: aws_sdk_pinpointsmsvoicev2::Client::new(cfg),
            kms: aws_sdk_kms::Client::new(cfg),
            s3: aws_sdk_s3::Client::new(cfg),
        }
    }
}

/// A seed for ack codes from the operating system (time and process id if
/// it cannot be read: ack codes are matched with the sender's number, they
/// are not secrets).
fn seed() -> u64 {
    use rand::TryRngCore;
    rand::rngs::OsRng.try_next_u64().unwrap_or_else(|_| {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        nanos ^ u64::from(std::process::id())
    })
}

/// No sender at all: the functions that never send (trigger, receipt,
/// tick) link none of the carriers' clients (each zip stays small).
fn no_senders() -> Senders {
    let none = |endpoint| -> Arc<dyn ChannelSender> {
        Arc::new(Disabled {
            endpoint,
            why: "this function does not send",
        })
    };
    Senders {
        voice: none(endpoints::VOICE),
        sms: none(endpoints::SMS),
        email: none(endpoints::EMAIL),
        push: none(endpoints::PUSH),
    }
}

/// [`build_deps`] with the configured channels' senders: dispatch's.
pub async fn build_dispatch_deps(
    config: &Config,
    clients: &Clients,
    clock: Arc<dyn Clock>,
) -> Result<Deps, muster::Error> {
    let mut deps = build_deps(config, clients, clock).await?;
    deps.senders = senders(config, clients);
    Ok(deps)
}

/// The senders of the configured channels.
pub fn senders(config: &Config, clients: &Clients) -> Senders {
    let mut sms = SmsSender::new(&clients.sms, endpoints::SMS);
    if let Some(origination) = &config.sms_origination {
        sms = sms.with_origination(origination.clone());
    }
    if let Some(set) = &config.sms_configuration_set {
        sms = sms.with_configuration_set(set);
    }
    let sms: Arc<dyn ChannelSender> = Arc::new(sms);
    let email: Arc<dyn ChannelSender> = match (&config.ses_from, &config.ses_configuration_set) {
        (Some(from), Some(set)) => Arc::new(EmailSender::new(
            &clients.sesv2,
            endpoints::EMAIL,
            from,
            set,
        )),
        _ => Arc::new(Disabled {
            endpoint: endpoints::EMAIL,
            why: "email is not configured",
        }),
    };
    let voice: Arc<dyn ChannelSender> = match &config.chime {
        Some((sma, from)) => Arc::new(VoiceSender::new(
            &clients.chime,
            endpoints::VOICE,
            from,
            sma,
        )),
        None => Arc::new(Disabled {
            endpoint: endpoints::VOICE,
            why: "voice is not configured",
        }),
    };
    let push: Arc<dyn ChannelSender> = if config.push_enabled {
        Arc::new(PushSender::new(&clients.sns, endpoints::PUSH))
    } else {
        Arc::new(Disabled {
            endpoint: endpoints::PUSH,
            why: "push is not enabled",
        })
    };
    let mut senders = Senders {
        voice,
        sms,
        email,
        push,
    };
    // Channels given to Twilio or SendGrid.
    if let Some(g) = config
        .gateways
        .as_ref()
        .and_then(|t| muster::adapters::gateways::from_json(t.expose()).ok())
    {
        g.apply(&mut senders);
    }
    senders
}

/// The ack tokens of the deployment (any function that mints or checks
/// them has MUSTER_ACK_SECRET); without the secret, a random key no link
/// was ever signed with, so that no token checks.
pub fn ack_tokens(config: &Config) -> AckTokens {
    let secret = config
        .ack_secret
        .clone()
        .unwrap_or_else(|| Secret::new(format!("{:016x}{:016x}", seed(), seed())));
    AckTokens::new(secret, ACK_LINK_TTL_MS)
}

/// Everything the use cases touch, on AWS. `clock` is the wall clock in
/// Lambda and a virtual one in tests. Reads the seal key's public key from
/// KMS when sealing is configured (a key that cannot be read fails here, at
/// start, not at the first seal).
pub async fn build_deps(
    config: &Config,
    clients: &Clients,
    clock: Arc<dyn Clock>,
) -> Result<Deps, muster::Error> {
    let policy = Arc::new(config.policy.clone());
    let pii: Arc<dyn crate::crypto::ContactCipher> = Arc::new(KmsContactCipher::new(
        clients.kms.clone(),
        &config.pii_key_id,
    ));
    // Phone numbers are indexed by a keyed hash; the key comes from the
    // deployment's ack secret, which every function requires (the number
    // index and SMS opt-outs are not optional capabilities).
    let number_key = IndexKey::derive(config.ack_secret.as_ref().ok_or_else(|| {
        muster::Error::invalid(
            "MUSTER_ACK_SECRET",
            "is required: it keys the phone-number index SMS replies use",
        )
    })?);
    let store = DynamoStore::new(
        clients.dynamodb.clone(),
        &config.state_table,
        &config.audit_table,
        pii.clone(),
    )
    .with_audit_retention_days(config.audit_retention_days)
    .with_index_key(number_key.clone());
    let directory = DynamoDirectory::new(clients.dynamodb.clone(), &config.directory_table, pii)
        .with_index_key(number_key);
    let store = Arc::new(store);
    let directory = Arc::new(directory);
    let sealing = match &config.seal_key_id {
        Some(key_id) => Some(Sealing {
            signer: Arc::new(KmsSealSigner::connect(clients.kms.clone(), key_id).await?),
            store: store.clone(),
        }),
        None => None,
    };
    let vault = Arc::new(KmsContactVault::new(
        clients.kms.clone(),
        clients.dynamodb.clone(),
        &config.directory_table,
        &config.pii_key_id,
    ));
    let timers = SqsTimers::new(
        clients.sqs.clone(),
        &config.timer_queue_url,
        clients.scheduler.clone(),
        ScheduleTarget {
            group: config.scheduler_group.clone(),
            queue_arn: config.timer_queue_arn.clone(),
            role_arn: config.scheduler_role_arn.clone(),
        },
        clock.clone(),
    );
    let notes: Option<Arc<dyn muster::ports::SourceNotes>> = match &config.write_back {
        Some(text) => Some(Arc::new(
            muster::adapters::notes::HttpNotes::from_json(text.expose())
                .map_err(muster::Error::permanent)?,
        )),
        None => None,
    };
    let siem = match &config.siem {
        Some(text) => {
            muster::adapters::siem::from_json(text.expose()).map_err(muster::Error::permanent)?
        }
        None => Vec::new(),
    };
    let contacts: Option<Arc<dyn muster::ports::ContactLookup>> = match &config.contact_lookup_url {
        Some(url) => Some(Arc::new(HttpContactLookup::new(
            url,
            config.contact_lookup_token.clone(),
            DEFAULT_TIMEOUT,
        )?)),
        None => None,
    };
    let ack_links: Option<Arc<dyn muster::ports::AckLinks>> =
        match (&config.api_base_url, &config.ack_secret) {
            (Some(base), Some(_)) => Some(Arc::new(SignedAckLinks {
                tokens: ack_tokens(config),
                base_url: base.clone(),
            })),
            _ => None,
        };
    Ok(Deps {
        limiter: Arc::new(DynamoLimiter::new(
            clients.dynamodb.clone(),
            &config.state_table,
            policy.clone(),
        )),
        policy,
        incidents: store.clone(),
        cascades: store.clone(),
        directory: directory.clone(),
        queue: Arc::new(
            SqsQueue::new(clients.sqs.clone(), &config.dispatch_queue_url)
                .with_priority_lane(&config.priority_queue_url),
        ),
        timers: Arc::new(timers),
        senders: no_senders(),
        observer: Arc::new(EmfObserver::new(std::io::stdout(), clock.clone())),
        clock,
        ids: Arc::new(SeededIds::new(seed())),
        contacts,
        ack_links,
        vault: Some(vault),
        sealing,
        numbers: store.clone(),
        admin: directory,
        ledger: store,
        notes,
        siem,
    })
}
