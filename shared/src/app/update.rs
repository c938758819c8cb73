//! Updates and the all-clear. An update is posted to an open incident (the
//! all-clear with its close), kept on the incident, and fanned out a page
//! of cascades at a time: each member a message reached who is in the
//! update's audience gets it once, on their best channel (the one they
//! acknowledged on, else the first of their plan; never a call), through
//! the rate limiter, and their cascade's audit records it (UPDATE_SENT or
//! UPDATE_FAILED). The state of the cascade does not change.
//!
//! A closed incident whose audit grows this way is sealed again: the first
//! such entry sets `reseal_at` and queues a seal job; that job clears it
//! before reading the chain heads, so an entry written after the clear
//! queues the next seal, and every entry is under a seal.

use super::apply_loaded;
use crate::domain::{
    Audience, Channel, Incident, IncidentId, IncidentStatus, IncidentUpdate, MAX_UPDATES,
    MessageTemplate,
};
use crate::engine::{CascadeKey, CascadeStatus, Event};
use crate::error::{Error, Result};
use crate::ports::{
    Admission, Admit, CascadeRecord, Deps, Job, Lane, OutboundMessage, Reservation, SendClaim,
    SendOutcomeKind, guarded,
};
use crate::ratelimit::Ticket;

/// Cascades one fan-out job reads before it queues the next page.
const FAN_OUT_PAGE: usize = 200;
/// How long after the first entry past the last seal a closed incident is
/// sealed again (later entries in the window share the seal).
pub const RESEAL_DELAY_MS: u64 = 30_000;

/// Posts update `message` for `audience` to open incident `id`: kept on the
/// incident (a conditional write), then fanned out in jobs. 404 for no
/// such incident; 409 once it is closing or closed (its close takes an
/// all-clear) or it has had [`MAX_UPDATES`].
pub async fn post(
    deps: &Deps,
    id: &IncidentId,
    message: MessageTemplate,
    audience: Audience,
) -> Result<IncidentUpdate> {
    add(deps, id, message, audience, false).await
}

/// Adds the all-clear to incident `id` (closing or closed) unless it has
/// one: the existing one is returned then.
pub async fn all_clear(
    deps: &Deps,
    id: &IncidentId,
    message: MessageTemplate,
) -> Result<IncidentUpdate> {
    add(deps, id, message, Audience::All, true).await
}

async fn add(
    deps: &Deps,
    id: &IncidentId,
    message: MessageTemplate,
    audience: Audience,
    all_clear: bool,
) -> Result<IncidentUpdate> {
    loop {
        let inc = deps
            .incidents
            .get_incident(id)
            .await?
            .ok_or_else(|| Error::NotFound(format!("incident {id}")))?;
        if let Some(done) = inc.updates.iter().find(|u| u.all_clear) {
            if all_clear {
                return Ok(done.clone());
            }
            return Err(Error::Conflict(format!(
                "incident {id} has had its all-clear"
            )));
        }
        if !all_clear && inc.status != IncidentStatus::Open {
            return Err(Error::Conflict(format!(
                "incident {id} is {}: an update goes to an open incident (close it with an allClear to tell everyone it is over)",
                status_name(inc.status)
            )));
        }
        if inc.updates.len() >= MAX_UPDATES {
            return Err(Error::Conflict(format!(
                "incident {id} has had {MAX_UPDATES} updates, the most one incident sends"
            )));
        }
        let update = IncidentUpdate {
            seq: inc.updates.len() as u32 + 1,
            message: message.clone(),
            audience,
            at: deps.clock.now(),
            all_clear,
        };
        let mut next = inc.clone();
        next.updates.push(update.clone());
        next.version += 1;
        match deps.incidents.update_incident(&next, inc.version).await {
            Ok(()) => {
                let jobs = (0..deps.cascades.parts())
                    .map(|part| {
                        let job = Job::Updates {
                            incident: id.clone(),
                            seq: update.seq,
                            part,
                            cursor: None,
                        };
                        (job, 0)
                    })
                    .collect();
                deps.queue.enqueue(jobs).await?;
                tracing::info!(incident_id = %id, seq = update.seq, audience = audience.as_str(), all_clear, "update posted");
                return Ok(update);
            }
            Err(e) if e.is_conflict() => continue,
            Err(e) => return Err(e),
        }
    }
}

fn status_name(s: IncidentStatus) -> &'static str {
    match s {
        IncidentStatus::Open => "open",
        IncidentStatus::Closing => "closing",
        IncidentStatus::Closed => "closed",
    }
}

/// Whether `rec`'s person gets update `u`: a member a message reached, in
/// its audience, not yet given it.
fn due(rec: &CascadeRecord, u: &IncidentUpdate) -> bool {
    let c = &rec.cascade;
    let acknowledged = c.status == CascadeStatus::Acknowledged || c.acked_at.is_some();
    !c.key.route.is_escalation()
        && c.first_contact_at.is_some()
        && c.updated < u.seq
        && u.audience.admits(acknowledged)
}

/// One fan-out job: queues update `seq` for each person of a page of one
/// partition who gets it, then the next page.
pub(crate) async fn fan_out(
    deps: &Deps,
    id: &IncidentId,
    seq: u32,
    part: u16,
    cursor: Option<String>,
) -> Result<()> {
    let Some(inc) = deps.incidents.get_incident(id).await? else {
        return Ok(());
    };
    let Some(u) = inc.updates.iter().find(|u| u.seq == seq) else {
        return Ok(());
    };
    let page = deps
        .cascades
        .list_part(id, part, cursor, FAN_OUT_PAGE)
        .await?;
    let mut jobs: Vec<(Job, u64)> = page
        .items
        .iter()
        .filter(|r| due(r, u))
        .map(|r| {
            let job = Job::Update {
                key: r.cascade.key.clone(),
                seq,
                ticket: None,
            };
            (job, 0)
        })
        .collect();
    if let Some(c) = page.next {
        let job = Job::Updates {
            incident: id.clone(),
            seq,
            part,
            cursor: Some(c),
        };
        jobs.push((job, 0));
    }
    if jobs.is_empty() {
        return Ok(());
    }
    deps.queue.enqueue(jobs).await
}

/// The channel an update goes on: the one the person acknowledged on,
/// else the first of their plan; never a call (an update asks nothing),
/// so the next channel they have after it.
fn best_channel(rec: &CascadeRecord) -> Option<(Channel, crate::domain::Address)> {
    let c = &rec.cascade;
    c.acked_on
        .into_iter()
        .chain(c.plan.as_slice().iter().copied())
        .chain([Channel::Email, Channel::Push, Channel::Sms])
        .filter(|ch| *ch != Channel::Voice)
        .find_map(|ch| rec.contacts.address(ch).map(|a| (ch, a)))
}

/// One person's update: sent once (the cascade records it), or, with no
/// channel an update goes on, recorded as not sent.
pub(crate) async fn send_update(
    deps: &Deps,
    key: &CascadeKey,
    seq: u32,
    ticket: Option<Ticket>,
) -> Result<()> {
    let Some(rec) = deps.cascades.get_cascade(key).await? else {
        return Ok(());
    };
    if rec.cascade.updated >= seq {
        deps.observer.stale_job();
        return Ok(());
    }
    let Some(incident) = deps.incidents.get_incident(&key.incident).await? else {
        return Ok(());
    };
    let Some(u) = incident.updates.iter().find(|u| u.seq == seq).cloned() else {
        return Ok(());
    };
    let Some((channel, to)) = best_channel(&rec) else {
        let event = Event::Update {
            seq,
            all_clear: u.all_clear,
            channel: None,
            accepted: false,
        };
        return record(deps, &incident, rec, event).await;
    };
    let (subject, body) = super::message::render_update(&incident, &u);
    let msg = OutboundMessage {
        key: key.clone(),
        attempt: OutboundMessage::UPDATE_BASE + seq,
        channel,
        severity: incident.trigger.severity,
        to,
        subject,
        body,
        ack_code: rec.ack_code.clone(),
    };
    let again = |ticket| Job::Update {
        key: key.clone(),
        seq,
        ticket,
    };
    let Outside::Sent(accepted) =
        send_outside(deps, &rec, &msg, Lane::Member, ticket, again).await?
    else {
        return Ok(());
    };
    let event = Event::Update {
        seq,
        all_clear: u.all_clear,
        channel: Some(channel),
        accepted,
    };
    record(deps, &incident, rec, event).await
}

/// Records an update on the cascade; for an incident no longer open, sees
/// that a seal covers the entry.
async fn record(deps: &Deps, incident: &Incident, rec: CascadeRecord, event: Event) -> Result<()> {
    apply_loaded(deps, rec, event).await?;
    if incident.status != IncidentStatus::Open {
        reseal_later(deps, incident.id()).await?;
    }
    Ok(())
}

/// Sets `reseal_at` (unless a seal is already due) and queues its job.
async fn reseal_later(deps: &Deps, id: &IncidentId) -> Result<()> {
    if deps.sealing.is_none() {
        return Ok(());
    }
    loop {
        let Some(inc) = deps.incidents.get_incident(id).await? else {
            return Ok(());
        };
        if inc.reseal_at.is_some() {
            return Ok(());
        }
        let mut next = inc.clone();
        next.reseal_at = Some(deps.clock.now().plus(RESEAL_DELAY_MS));
        next.version += 1;
        match deps.incidents.update_incident(&next, inc.version).await {
            Ok(()) => {
                let job = Job::Reseal {
                    incident: id.clone(),
                };
                return deps.queue.enqueue(vec![(job, RESEAL_DELAY_MS)]).await;
            }
            Err(e) if e.is_conflict() => continue,
            Err(e) => return Err(e),
        }
    }
}

/// The seal job: clears `reseal_at` (a conditional write), then seals.
pub(crate) async fn reseal(deps: &Deps, id: &IncidentId) -> Result<()> {
    loop {
        let Some(inc) = deps.incidents.get_incident(id).await? else {
            return Ok(());
        };
        if inc.reseal_at.is_none() {
            return Ok(());
        }
        let mut next = inc.clone();
        next.reseal_at = None;
        next.version += 1;
        match deps.incidents.update_incident(&next, inc.version).await {
            Ok(()) => return super::seal(deps, id).await.map(|_| ()),
            Err(e) if e.is_conflict() => continue,
            Err(e) => return Err(e),
        }
    }
}

/// What became of a message outside a cascade's attempts.
pub(super) enum Outside {
    /// Not sent now: queued again (the limiter, the contact ledger or a
    /// newer write said wait), or held by another worker's claim.
    Later,
    /// Offered to the carrier: whether it took it.
    Sent(bool),
}

/// Sends `msg` (a notice or an update: no attempt of the cascade) through
/// the rate limiter on `lane`, the contact ledger for a guarded channel
/// and a claim on the cascade's version, so that it goes once; `again`
/// is the job that tries it later.
pub(super) async fn send_outside(
    deps: &Deps,
    rec: &CascadeRecord,
    msg: &OutboundMessage,
    lane: Lane,
    ticket: Option<Ticket>,
    again: impl Fn(Option<Ticket>) -> Job,
) -> Result<Outside> {
    let key = &rec.cascade.key;
    let channel = msg.channel;
    let sender = deps.senders.get(channel);
    let now = deps.clock.now();
    let admit = deps
        .limiter
        .admit(sender.endpoint(), now, ticket, lane)
        .await?;
    let wait = match admit {
        Admission::Decided(Admit::Granted) => None,
        Admission::Decided(Admit::Wait { until, ticket, .. }) => Some((until, Some(ticket))),
        Admission::Retry { at } => Some((at, ticket)),
    };
    if let Some((until, ticket)) = wait {
        let delay = until.since(now).max(1);
        deps.queue.enqueue(vec![(again(ticket), delay)]).await?;
        return Ok(Outside::Later);
    }
    if guarded(channel) {
        let hold = crate::engine::hold_delay(&rec.cascade, &deps.policy);
        if let Reservation::Busy(waits) = deps
            .ledger
            .reserve(&key.incident, &key.stakeholder, channel, key, now, hold)
            .await?
        {
            let until = waits.busy_until(channel, now).unwrap_or(now.plus(1_000));
            let delay = until.since(now).max(1);
            deps.queue.enqueue(vec![(again(None), delay)]).await?;
            return Ok(Outside::Later);
        }
    }
    // Claimed before it goes, like every send (see `dispatch::send`); the
    // message's phase is the version it was decided at, so one that failed
    // can be tried again once that failure is recorded.
    let phase = crate::domain::Ts(rec.cascade.version);
    match deps
        .cascades
        .claim_send(rec, msg.attempt, phase, now, super::dispatch::SEND_LEASE_MS)
        .await?
    {
        SendClaim::Claimed => {}
        SendClaim::Held => {
            deps.observer.stale_job();
            return Ok(Outside::Later);
        }
        // Overtaken by another write: looked at again shortly, on fresh state.
        SendClaim::Changed => {
            deps.queue.enqueue(vec![(again(None), 1_000)]).await?;
            return Ok(Outside::Later);
        }
    }
    let severity = msg.severity;
    Ok(Outside::Sent(match sender.send(msg).await {
        Ok(_) => {
            deps.limiter
                .on_success(sender.endpoint(), deps.clock.now())
                .await;
            deps.observer
                .send(channel, severity, SendOutcomeKind::Accepted);
            true
        }
        Err(e) => {
            tracing::warn!(channel = %channel, attempt = msg.attempt, error = %e, "message outside the cascade's attempts not sent");
            false
        }
    }))
}
