//! Dispatch: expand a group into cascades, send one attempt, or escalate to
//! the on-call manager.
//!
//! A send happens only while its attempt is `Sending` in the stored state
//! (a redelivered or re-driven job for an attempt that moved on is dropped),
//! only for an open incident, and only after the carrier endpoint's rate
//! limiter admits it; otherwise the job goes back to the queue, delayed to
//! the slot the limiter booked, and never waits in a loop.

use super::{Batch, apply_event, audit};
use crate::domain::{Channel, ContactMethods, IncidentStatus, Ts};
use crate::engine::{Cascade, CascadeKey, ChannelPlan, Event, Phase, Route, SendOutcome, decide};
use crate::error::Result;
use crate::ports::{Admit, CascadeRecord, Deps, Job, OutboundMessage, SendError, SendOutcomeKind};
use crate::ratelimit::Ticket;

/// Members per expansion job.
pub const EXPAND_CHUNK: u32 = 250;

pub async fn dispatch(deps: &Deps, job: Job) -> Result<()> {
    match job {
        Job::Expand { incident, members } => expand(deps, &incident, &members).await,
        Job::Send {
            key,
            attempt,
            ticket,
        } => send(deps, &key, attempt, ticket).await,
        Job::Escalate {
            incident,
            manager,
            about,
        } => escalate(deps, &incident, &manager, &about).await,
    }
}

#[tracing::instrument(skip_all, fields(incident_id = %incident, members = members.len()))]
async fn expand(
    deps: &Deps,
    incident: &crate::domain::IncidentId,
    members: &[crate::domain::StakeholderId],
) -> Result<()> {
    let Some(inc) = deps.incidents.get_incident(incident).await? else {
        tracing::warn!("expansion for an unknown incident dropped");
        return Ok(());
    };
    if inc.status != IncidentStatus::Open {
        return Ok(());
    }
    let severity = inc.trigger.severity;
    let order = deps.policy.channels(severity);
    let mut people = Vec::with_capacity(members.len());
    for id in members {
        people.push((id.clone(), deps.directory.stakeholder(id).await?));
    }
    let mut batch = Batch::default();
    let mut failed = None;
    for r in super::contacts::resolve(deps, people).await {
        let key = CascadeKey {
            incident: incident.clone(),
            stakeholder: r.id,
            route: Route::Member,
        };
        let (plan, tier, contacts, name) = match r.person {
            Some(p) => (ChannelPlan::new(&p.plan(order)), p.tier, p.contacts, p.name),
            // Not in the directory: the cascade starts with no channel and escalates at once.
            None => (
                ChannelPlan::new(&[]),
                crate::domain::Tier::ALL[2],
                ContactMethods::default(),
                String::new(),
            ),
        };
        let cascade = Cascade::new(key, severity, tier, plan, deps.clock.now());
        if let Err(e) = start(deps, cascade, contacts, name, None, r.check, &mut batch).await {
            failed = Some(e);
            break;
        }
    }
    // What was created gets its sends even if a later cascade failed.
    batch.flush(deps).await?;
    if let Some(e) = failed {
        return Err(e);
    }
    Ok(())
}

/// Creates a cascade already started (one conditional write with its first
/// audit entry) and acts on the start's commands. An existing cascade (a
/// redelivered expansion) is left alone.
async fn start(
    deps: &Deps,
    cascade: Cascade,
    contacts: ContactMethods,
    name: String,
    about: Option<crate::domain::StakeholderId>,
    check: Option<super::ContactCheck>,
    batch: &mut Batch,
) -> Result<()> {
    let now = deps.clock.now();
    let d = decide(&cascade, &Event::Start, &deps.policy, now);
    let blank = CascadeRecord {
        cascade: cascade.clone(),
        contacts,
        name,
        ack_code: deps.ids.ack_code(),
        about,
        needs_review: check.is_some_and(|c| c.needs_review()),
        audit_seq: 0,
        audit_head: audit::GENESIS.to_string(),
    };
    let (rec, entry) = audit::append(
        &blank,
        d.next.clone(),
        &d.audit,
        now,
        audit::Extras {
            contact_check: check,
            contact: None,
        },
    );
    match deps.cascades.create_cascade(&rec, &entry).await {
        Ok(()) => {
            deps.observer.transition(&cascade, &Event::Start, &d);
            batch.add(deps, &rec, d.commands).await
        }
        // Created by an earlier delivery of this job: if it never got past
        // its start, its first send may never have been queued; queue it
        // again (a send whose attempt moved on is dropped by dispatch).
        Err(e) if e.is_conflict() => {
            if let Some(existing) = deps.cascades.get_cascade(&cascade.key).await?
                && existing.audit_seq == 1
            {
                let sends = existing
                    .cascade
                    .in_flight
                    .iter()
                    .filter(|a| matches!(a.phase, Phase::Sending { .. }));
                let commands = sends
                    .map(|a| crate::engine::Command::Send {
                        attempt: a.id,
                        channel: a.channel,
                    })
                    .collect();
                batch.add(deps, &existing, commands).await?;
            }
            Ok(())
        }
        Err(e) => Err(e),
    }
}

#[tracing::instrument(skip_all, fields(incident_id = %key.incident, stakeholder_id = %key.stakeholder, attempt))]
async fn send(deps: &Deps, key: &CascadeKey, attempt: u32, ticket: Option<Ticket>) -> Result<()> {
    let Some(rec) = deps.cascades.get_cascade(key).await? else {
        deps.observer.stale_job();
        return Ok(());
    };
    let Some(a) = rec
        .cascade
        .attempt(attempt)
        .copied()
        .filter(|a| matches!(a.phase, Phase::Sending { .. }))
    else {
        deps.observer.stale_job();
        return Ok(());
    };
    let Some(incident) = deps.incidents.get_incident(&key.incident).await? else {
        deps.observer.stale_job();
        return Ok(());
    };
    if incident.status != IncidentStatus::Open {
        apply_event(deps, key, Event::Cancel).await?;
        return Ok(());
    }
    let sender = deps.senders.get(a.channel);
    let endpoint = sender.endpoint();
    let now = deps.clock.now();
    if let Admit::Wait { until, ticket } = deps.limiter.admit(endpoint, now, ticket).await? {
        let job = Job::Send {
            key: key.clone(),
            attempt,
            ticket: Some(ticket),
        };
        return deps
            .queue
            .enqueue(vec![(job, until.since(now).max(1))])
            .await;
    }
    let outcome = match rec.contacts.address(a.channel) {
        None => {
            deps.observer.send(
                a.channel,
                incident.trigger.severity,
                SendOutcomeKind::NoAddress,
            );
            SendOutcome::Failed
        }
        Some(to) => {
            let link = match a.channel {
                Channel::Email | Channel::Push => deps
                    .ack_links
                    .as_ref()
                    .map(|l| l.link(key, deps.clock.now())),
                _ => None,
            };
            let (subject, body) = super::render(&incident, &rec, a.channel, link.as_deref());
            let msg = OutboundMessage {
                key: key.clone(),
                attempt,
                channel: a.channel,
                severity: incident.trigger.severity,
                to,
                subject,
                body,
                ack_code: rec.ack_code.clone(),
            };
            let result = sender.send(&msg).await;
            let now = deps.clock.now();
            let (outcome, kind) = match result {
                Ok(accepted) => {
                    deps.limiter.on_success(endpoint, now).await;
                    deps.cascades
                        .put_message_ref(&accepted.provider_message_id, key, attempt)
                        .await?;
                    (SendOutcome::Accepted, SendOutcomeKind::Accepted)
                }
                Err(SendError::Throttled { retry_after }) => {
                    deps.limiter.on_throttled(endpoint, now, retry_after).await;
                    (
                        SendOutcome::Throttled {
                            retry_after_ms: retry_after.unwrap_or(1_000),
                        },
                        SendOutcomeKind::Throttled,
                    )
                }
                Err(e) => {
                    deps.limiter.on_success(endpoint, now).await;
                    tracing::info!(channel = %a.channel, error = %e, "send failed");
                    match e {
                        SendError::Transient(_) => {
                            (SendOutcome::Transient, SendOutcomeKind::Transient)
                        }
                        SendError::Unreachable(_) => {
                            (SendOutcome::Unreachable, SendOutcomeKind::Unreachable)
                        }
                        _ => (SendOutcome::Failed, SendOutcomeKind::Failed),
                    }
                }
            };
            deps.observer
                .send(a.channel, incident.trigger.severity, kind);
            outcome
        }
    };
    apply_event(
        deps,
        key,
        Event::SendResult {
            attempt,
            result: outcome,
        },
    )
    .await?;
    Ok(())
}

#[tracing::instrument(skip_all, fields(incident_id = %incident, manager_id = %manager))]
async fn escalate(
    deps: &Deps,
    incident: &crate::domain::IncidentId,
    manager: &crate::domain::StakeholderId,
    about: &crate::domain::StakeholderId,
) -> Result<()> {
    let key = CascadeKey {
        incident: incident.clone(),
        stakeholder: manager.clone(),
        route: Route::Manager,
    };
    if deps.cascades.get_cascade(&key).await?.is_some() {
        // One bounded manager cascade per incident and manager: it already tells them.
        tracing::info!("escalation joins the manager's existing cascade");
        return Ok(());
    }
    let Some(inc) = deps.incidents.get_incident(incident).await? else {
        return Ok(());
    };
    if inc.status != IncidentStatus::Open {
        return Ok(());
    }
    let Some(person) = deps.directory.stakeholder(manager).await? else {
        tracing::error!("on-call manager is not in the directory");
        return Ok(());
    };
    // The group's high-priority route, else the policy's manager route.
    let route = deps
        .directory
        .group(&inc.trigger.stakeholder_group_id)
        .await?
        .map(|g| g.escalation_channels)
        .unwrap_or_default();
    let order = if route.is_empty() {
        deps.policy.channels(deps.policy.manager_route)
    } else {
        &route
    };
    let plan = ChannelPlan::new(&person.plan(order));
    let now: Ts = deps.clock.now();
    let cascade = Cascade::new(key, inc.trigger.severity, person.tier, plan, now);
    let mut batch = Batch::default();
    start(
        deps,
        cascade,
        person.contacts.clone(),
        person.name.clone(),
        Some(about.clone()),
        None,
        &mut batch,
    )
    .await?;
    batch.flush(deps).await
}
