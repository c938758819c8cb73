//! Use cases, written only against ports: trigger, dispatch, receipt, tick,
//! and the incident operations (close, status). Each is a "load, decide,
//! conditional write, act" loop: the engine decides, the store's version
//! check makes the write safe under concurrency, and every command is
//! idempotent by its attempt id, so a redelivered job or a duplicate webhook
//! never has a double effect.

pub mod audit;
mod carriers;
mod contacts;
mod dispatch;
mod escalation;
pub mod export;
mod incident;
mod message;
pub mod quorum;
mod receipt;
mod tick;
mod trigger;
pub mod update;
mod writeback;

pub use carriers::{CarrierView, carriers};
pub use dispatch::{EXPAND_CHUNK, dispatch};
pub use escalation::{
    BUNDLE_MAX, EscalationOutcome, EscalationStory, Told, next_in_chain, stories,
};
pub use incident::{
    IncidentView, PAGE_DEFAULT, PAGE_MAX, Progress, StakeholderFilter, StakeholderView,
    StatusQuery, api_cursor, close, cursor_refused, status, store_cursor,
};
pub use message::render;
pub use receipt::{ReceiptEvent, ReceiptOutcome, call_for, receipt, voice_event};
pub use tick::{SEAL_INTERVAL_MS, SweepReport, sweep, tick};
pub use trigger::{TriggerOutcome, trigger, trigger_from};
pub use writeback::{ATTEMPTS as WRITE_BACK_ATTEMPTS, backoff as write_back_backoff};

use crate::engine::{AuditKind, CascadeKey, Command, Event, decide};
use crate::error::{Error, Result};
use crate::ports::{CascadeRecord, Deps, Job, TimerMsg};

/// Lost races on one cascade before giving up (the caller's retry, an SQS
/// redelivery or the sweep, takes it from there).
const MAX_CONFLICTS: usize = 8;

/// Applies `event` to the cascade: load, decide, conditional write with the
/// audit entry, then act on the commands. Returns the stored record and the
/// kind of transition recorded; `Ok(None)` if there is no such cascade.
pub async fn apply_event(
    deps: &Deps,
    key: &CascadeKey,
    event: Event,
) -> Result<Option<(CascadeRecord, AuditKind)>> {
    match deps.cascades.get_cascade(key).await? {
        Some(rec) => apply_loaded(deps, rec, event).await.map(Some),
        None => Ok(None),
    }
}

/// [`apply_event`] on a record just read; re-reads only after a lost race.
pub async fn apply_loaded(
    deps: &Deps,
    rec: CascadeRecord,
    event: Event,
) -> Result<(CascadeRecord, AuditKind)> {
    apply_with(deps, rec, event, Vec::new()).await
}

/// [`apply_loaded`], recording on an accepted send the failures the message
/// named (`named`: an escalation's subject first, then the bundled ones).
pub(crate) async fn apply_with(
    deps: &Deps,
    mut rec: CascadeRecord,
    event: Event,
    named: Vec<crate::domain::StakeholderId>,
) -> Result<(CascadeRecord, AuditKind)> {
    let key = rec.cascade.key.clone();
    for _ in 0..MAX_CONFLICTS {
        let now = deps.clock.now();
        let d = decide(&rec.cascade, &event, &deps.policy, now);
        let accepted = d.audit.kind == AuditKind::SendAccepted;
        let extras = audit::Extras {
            contact_check: None,
            contact: sent_to(deps, &rec, &d).await?,
            named: if accepted { named.clone() } else { Vec::new() },
            locale: None,
        };
        let (next, entry) = audit::append(&rec, d.next.clone(), &d.audit, now, extras);
        match deps.cascades.transition(&rec, &next, &entry).await {
            Ok(()) => {
                deps.observer.transition(&rec.cascade, &event, &d);
                let mut batch = Batch::default();
                batch.add(&next, d.commands);
                if let Event::Ack { attempt, .. } = event
                    && matches!(
                        d.audit.kind,
                        AuditKind::Acknowledged | AuditKind::AckAfterEnd
                    )
                    && !next.bundled(attempt).is_empty()
                {
                    batch.jobs.push((
                        Job::ShareAck {
                            key: key.clone(),
                            attempt,
                        },
                        0,
                    ));
                }
                batch.flush(deps).await?;
                let newly_acknowledged = next.cascade.status
                    == crate::engine::CascadeStatus::Acknowledged
                    && rec.cascade.status != crate::engine::CascadeStatus::Acknowledged
                    && !key.route.is_escalation();
                if newly_acknowledged && let Err(e) = quorum::check(deps, &key.incident).await {
                    // Written already; the sweep checks the quorum again.
                    tracing::warn!(incident_id = %key.incident, error = %e, "quorum check failed");
                }
                return Ok((next, d.audit.kind));
            }
            Err(e) if e.is_conflict() => match deps.cascades.get_cascade(&key).await? {
                Some(fresh) => rec = fresh,
                None => return Err(Error::NotFound(format!("cascade {key}"))),
            },
            Err(e) => return Err(e),
        }
    }
    Err(Error::Conflict(format!(
        "cascade {key} kept changing under {MAX_CONFLICTS} attempts"
    )))
}

/// On SEND_ACCEPTED, the address the message went to, encrypted (when a
/// vault is configured): the audit trail proves where, never in plaintext.
async fn sent_to(
    deps: &Deps,
    rec: &CascadeRecord,
    d: &crate::engine::Decision,
) -> Result<Option<String>> {
    let (Some(vault), AuditKind::SendAccepted, Some(channel)) =
        (&deps.vault, d.audit.kind, d.audit.channel)
    else {
        return Ok(None);
    };
    let Some(address) = rec.contacts.address(channel) else {
        return Ok(None);
    };
    let key = &rec.cascade.key;
    vault
        .encrypt(&key.stakeholder, &key.incident, address.expose())
        .await
        .map(Some)
}

/// Seals an incident: signs a digest of every chain head and stores it.
/// `Ok(None)` when no sealer is configured.
pub async fn seal(
    deps: &Deps,
    incident: &crate::domain::IncidentId,
) -> Result<Option<crate::audit::Seal>> {
    let Some(crate::ports::Sealing { signer, store }) = &deps.sealing else {
        return Ok(None);
    };
    let heads = store.chain_heads(incident).await?;
    let mut seal = crate::audit::Seal::unsigned(
        incident.clone(),
        deps.clock.now(),
        crate::audit::heads_digest_of(&heads),
        signer.describe(),
    );
    seal.signature = signer.sign(&seal.message()).await?;
    store.put_seal(&seal).await?;
    Ok(Some(seal))
}

/// The engine's commands, carried out: jobs (sends go through the work queue
/// so that every send passes the rate limiter in `dispatch`) and timers,
/// gathered so that those of several cascades go out together (an expansion
/// job's first sends are one batch of requests, not one per cascade).
#[derive(Default)]
pub(crate) struct Batch {
    jobs: Vec<(Job, crate::domain::Millis)>,
    timers: Vec<TimerMsg>,
}

impl Batch {
    pub(crate) fn add(&mut self, rec: &CascadeRecord, commands: Vec<Command>) {
        let key = &rec.cascade.key;
        for c in commands {
            match c {
                Command::Send { attempt, .. } => self.jobs.push((
                    Job::Send {
                        key: key.clone(),
                        attempt,
                        ticket: None,
                    },
                    0,
                )),
                Command::ArmTimer { at, attempt, kind } => self.timers.push(TimerMsg {
                    key: key.clone(),
                    attempt,
                    kind,
                    at,
                }),
                Command::EscalateToManager => {
                    let about = key.route.about().unwrap_or(&key.stakeholder).clone();
                    let chain = match &rec.escalation {
                        Some(e) => e.chain.clone(),
                        None => vec![key.stakeholder.clone()],
                    };
                    let job = Job::Escalate {
                        incident: key.incident.clone(),
                        about,
                        chain,
                    };
                    self.jobs.push((job, 0));
                }
                Command::EmitCascadeFailure => {
                    tracing::warn!(incident_id = %key.incident, stakeholder_id = %key.stakeholder, route = %key.route.encode(), "CASCADE_FAILURE");
                }
                Command::WithdrawEscalations => {
                    let job = Job::Withdraw {
                        incident: key.incident.clone(),
                        about: key.route.about().unwrap_or(&key.stakeholder).clone(),
                        by: key.route.is_escalation().then(|| key.stakeholder.clone()),
                    };
                    self.jobs.push((job, 0));
                }
                Command::NotifyWithdrawn => self.jobs.push((
                    Job::Notice {
                        key: key.clone(),
                        ticket: None,
                    },
                    0,
                )),
            }
        }
    }

    pub(crate) async fn flush(self, deps: &Deps) -> Result<()> {
        if !self.timers.is_empty() {
            deps.timers.arm(self.timers).await?;
        }
        if !self.jobs.is_empty() {
            deps.queue.enqueue(self.jobs).await?;
        }
        Ok(())
    }
}
