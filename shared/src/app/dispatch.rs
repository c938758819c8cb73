//! Dispatch: expand a group into cascades, send one attempt, and the
//! escalation jobs (see `escalation`).
//!
//! A send happens only while its attempt is `Sending` in the stored state
//! (a redelivered or re-driven job for an attempt that moved on is dropped),
//! only for an open incident, only after the carrier endpoint's rate limiter
//! admits it (escalations in its priority lane), and, for a call or an SMS,
//! only once the contact ledger has reserved that channel of that person for
//! this cascade (another cascade of the same incident that contacted them on
//! it within the hold makes the engine replan instead). Otherwise the job
//! goes back to the queue, delayed to the slot the limiter booked, and never
//! waits in a loop. Throttling that holds an attempt back past the bound
//! fails its channel for that person.

use super::{Batch, apply_event, apply_with, audit, escalation};
use crate::domain::ContactCheck;
use crate::domain::{Channel, ContactMethods, IncidentId, IncidentStatus, Millis, StakeholderId};
use crate::engine::{
    Cascade, CascadeKey, ChannelPlan, ChannelWaits, Event, Phase, Route, SendOutcome, WaitCause,
    decide, hold_delay, queue_bound, throttle_bound,
};
use crate::error::Result;
use crate::ports::{
    Admission, Admit, CascadeRecord, Deps, EscalationInfo, Job, Lane, OutboundMessage, Reservation,
    SendClaim, SendError, SendOutcomeKind, guarded,
};
use crate::ratelimit::Ticket;

/// Members per expansion job.
pub const EXPAND_CHUNK: u32 = 250;

/// When a throttling carrier set no pause (or it is over), how long an
/// escalation counts its channel as busy before trying it again.
const THROTTLED_RETRY_MS: u64 = 1_000;

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
            about,
            chain,
        } => escalation::escalate(deps, &incident, &about, chain).await,
        Job::Withdraw {
            incident,
            about,
            by,
        } => escalation::withdraw(deps, &incident, &about, by).await,
        Job::Notice { key, ticket } => escalation::notice(deps, &key, ticket).await,
        Job::ShareAck { key, attempt } => escalation::share_ack(deps, &key, attempt).await,
        Job::Close {
            incident,
            pass,
            part,
            cursor,
        } => super::incident::cancel_page(deps, &incident, pass, part, cursor).await,
        Job::Stop {
            incident,
            part,
            cursor,
        } => super::quorum::stop_page(deps, &incident, part, cursor).await,
        Job::Updates {
            incident,
            seq,
            part,
            cursor,
        } => super::update::fan_out(deps, &incident, seq, part, cursor).await,
        Job::Update { key, seq, ticket } => {
            super::update::send_update(deps, &key, seq, ticket).await
        }
        Job::Reseal { incident } => super::update::reseal(deps, &incident).await,
        Job::WriteBack {
            incident,
            milestone,
            attempt,
        } => super::writeback::write_back(deps, &incident, milestone, attempt).await,
        Job::Export {
            lines,
            sinks,
            attempt,
        } => super::export::export(deps, lines, sinks, attempt).await,
    }
}

#[tracing::instrument(skip_all, fields(incident_id = %incident, members = members.len()))]
async fn expand(deps: &Deps, incident: &IncidentId, members: &[StakeholderId]) -> Result<()> {
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
        let now = deps.clock.now();
        let quiet_until = r
            .person
            .as_ref()
            .and_then(|p| p.quiet.as_ref())
            .filter(|_| !deps.policy.overrides_quiet(severity))
            .and_then(|q| q.hours.ends_after(&q.time_zone, now));
        let (plan, tier, contacts, name, locale) = match r.person {
            Some(p) => (
                ChannelPlan::new(&p.plan(order)),
                p.tier,
                p.contacts,
                p.name,
                inc.trigger
                    .template_for(p.locale.as_deref())
                    .1
                    .map(str::to_string),
            ),
            // Not in the directory: the cascade starts with no channel and escalates at once.
            None => (
                ChannelPlan::new(&[]),
                crate::domain::Tier::LOWEST,
                ContactMethods::default(),
                String::new(),
                None,
            ),
        };
        let mut cascade = Cascade::new(key, severity, tier, plan, now);
        cascade.quiet_until = quiet_until;
        let fresh = NewCascade {
            contacts,
            name,
            locale,
            escalation: None,
            check: r.check,
        };
        if let Err(e) = start(deps, cascade, fresh, &mut batch).await {
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

/// What a new cascade's record holds besides the engine state.
pub(super) struct NewCascade {
    pub contacts: ContactMethods,
    pub name: String,
    /// The locale of the message template the person is sent (their
    /// directory locale's, else none: the default).
    pub locale: Option<String>,
    pub escalation: Option<EscalationInfo>,
    pub check: Option<ContactCheck>,
}

/// Creates a cascade already started (one conditional write with its first
/// audit entry) and acts on the start's commands. An existing cascade (a
/// redelivered job) is left alone.
pub(super) async fn start(
    deps: &Deps,
    cascade: Cascade,
    fresh: NewCascade,
    batch: &mut Batch,
) -> Result<()> {
    let now = deps.clock.now();
    let d = decide(&cascade, &Event::Start, &deps.policy, now);
    let blank = CascadeRecord {
        cascade: cascade.clone(),
        masked: CascadeRecord::mask(&fresh.contacts),
        contacts: fresh.contacts,
        name: fresh.name,
        locale: fresh.locale,
        ack_code: deps.ids.ack_code(),
        escalation: fresh.escalation,
        named: Vec::new(),
        needs_review: fresh.check.is_some_and(|c| c.needs_review()),
        audit_seq: 0,
        audit_head: crate::audit::GENESIS.to_string(),
    };
    let (rec, entry) = audit::append(
        &blank,
        d.next.clone(),
        &d.audit,
        now,
        audit::Extras {
            contact_check: fresh.check,
            locale: blank.locale.clone(),
            ..Default::default()
        },
    );
    match deps.cascades.create_cascade(&rec, &entry).await {
        Ok(()) => {
            deps.observer.transition(&cascade, &Event::Start, &d);
            batch.add(&rec, d.commands);
            Ok(())
        }
        // Created by an earlier delivery of this job: if it never got past
        // its start, its first send may never have been queued; queue it
        // again (a send whose attempt moved on is dropped by dispatch).
        Err(e) if e.is_conflict() => {
            let Some(existing) = deps.cascades.get_cascade(&cascade.key).await? else {
                // Refused, yet not there: the write met another one and
                // must be tried again (the job is retried), never dropped.
                return Err(crate::Error::transient(
                    format!("creating cascade {}", cascade.key),
                    e,
                ));
            };
            if existing.audit_seq == 1 {
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
                batch.add(&existing, commands);
            }
            Ok(())
        }
        Err(e) => Err(e),
    }
}

/// How long a claimed send is another worker's: longer than any sender's
/// own timeout, so a claim lapses only when its worker died before writing
/// the outcome (the sweep then sends the attempt again).
pub const SEND_LEASE_MS: Millis = 300_000;
/// Reads again when a claim finds the cascade changed, before the job is
/// handed back to the queue as a conflict.
const CLAIM_TRIES: u32 = 4;

/// Claims the send of `attempt` in its sending phase `ready` before the
/// carrier is called: false when another worker holds the claim (a second
/// delivery of the same job) or the attempt has left that phase. A read
/// another write overtook is read again, a few times, then the job goes
/// back to the queue as a conflict.
async fn claim(
    deps: &Deps,
    rec: &CascadeRecord,
    attempt: u32,
    ready: crate::domain::Ts,
    now: crate::domain::Ts,
) -> Result<bool> {
    let key = &rec.cascade.key;
    let sending = |r: &CascadeRecord| {
        !r.cascade.status.is_terminal()
            && r.cascade
                .attempt(attempt)
                .is_some_and(|a| a.phase == Phase::Sending { since: ready })
    };
    let mut read = rec.clone();
    for _ in 0..=CLAIM_TRIES {
        match deps
            .cascades
            .claim_send(&read, attempt, ready, now, SEND_LEASE_MS)
            .await?
        {
            SendClaim::Claimed => return Ok(true),
            SendClaim::Held => return Ok(false),
            SendClaim::Changed => match deps.cascades.get_cascade(key).await? {
                Some(r) if sending(&r) => read = r,
                _ => return Ok(false),
            },
        }
    }
    Err(crate::Error::Conflict(format!(
        "cascade {key} kept changing while its send was claimed"
    )))
}

#[tracing::instrument(skip_all, fields(incident_id = %key.incident, stakeholder_id = %key.stakeholder, attempt))]
async fn send(deps: &Deps, key: &CascadeKey, attempt: u32, ticket: Option<Ticket>) -> Result<()> {
    let Some(rec) = deps.cascades.get_cascade(key).await? else {
        deps.observer.stale_job();
        return Ok(());
    };
    let Some(a) = rec.cascade.attempt(attempt).copied() else {
        deps.observer.stale_job();
        return Ok(());
    };
    let Phase::Sending { since: ready } = a.phase else {
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
    if !key.route.is_escalation() && super::quorum::stopped(&incident) {
        apply_event(deps, key, Event::QuorumStop).await?;
        return Ok(());
    }
    let sender = deps.senders.get(a.channel);
    let endpoint = sender.endpoint();
    let now = deps.clock.now();
    let lane = if key.route.is_escalation() {
        Lane::Priority
    } else {
        Lane::Member
    };
    // The high-priority route never waits for a carrier that is throttling
    // while the person has another channel left to try.
    if lane == Lane::Priority
        && rec.cascade.next_step < rec.cascade.plan.len() as u8
        && let Some(throttling) = deps.limiter.throttling(endpoint, now).await?
    {
        let mut waits = ChannelWaits {
            cause: WaitCause::Throttled,
            ..Default::default()
        };
        // Free again (to be tried) when the carrier's pause ends.
        let free = throttling
            .paused_until
            .filter(|p| *p > now)
            .unwrap_or(now.plus(THROTTLED_RETRY_MS));
        waits.free_at[a.channel.index()] = Some(free);
        apply_with(deps, rec, Event::Replan { attempt, waits }, Vec::new()).await?;
        return Ok(());
    }
    if lane == Lane::Member
        && ticket.is_none()
        && deps.policy.queue_replan(incident.trigger.severity)
        && let Some(moved) = follow_capacity(deps, &rec, attempt, a.channel, now).await?
    {
        // At most one move per channel of the plan: each is to a shorter queue.
        return match moved {
            Some(next) => Box::pin(send(deps, key, next, None)).await,
            None => Ok(()),
        };
    }
    if lane == Lane::Priority && !reserve(deps, &rec, attempt, now).await? {
        return Ok(());
    }
    let admit = match deps.limiter.admit(endpoint, now, ticket, lane).await? {
        Admission::Decided(admit) => admit,
        Admission::Retry { at } => {
            let job = Job::Send {
                key: key.clone(),
                attempt,
                ticket,
            };
            return deps.queue.enqueue(vec![(job, at.since(now).max(1))]).await;
        }
    };
    if let Admit::Wait {
        until,
        ticket,
        throttled_since,
    } = admit
    {
        // While the carrier is throttling the endpoint (a 429 and nothing
        // accepted since), the wait is bounded per person (rule 3): once it
        // has held this attempt back for longer than the bound, the channel
        // fails for this person; until then the job comes back by the end
        // of the bound at the latest (keeping its slot) to look again. A
        // wait that is only pacing behind other sends is not throttling:
        // an attempt held back by an earlier episode, which then waited its
        // turn while the carrier accepted others, is held by this episode
        // only since it began.
        let mut back = until;
        if let Some(since) = throttled_since {
            let held_since = a
                .throttled_since
                .filter(|held| *held >= since)
                .unwrap_or(since.max(ready));
            let bound = throttle_bound(&rec.cascade, &deps.policy);
            if now.since(held_since) > bound {
                let result = SendOutcome::Throttled {
                    retry_after_ms: until.since(now).max(1),
                    since: Some(held_since),
                };
                apply_with(deps, rec, Event::SendResult { attempt, result }, Vec::new()).await?;
                return Ok(());
            }
            back = back.min(held_since.plus(bound + 1));
        }
        let job = Job::Send {
            key: key.clone(),
            attempt,
            ticket: Some(ticket),
        };
        return deps
            .queue
            .enqueue(vec![(job, back.since(now).max(1))])
            .await;
    }
    // A member send reserves its channel of the person when the limiter
    // grants it (a reservation made before a long queue wait would lapse
    // before the send); an escalation, whose waits are short, before.
    if lane == Lane::Member && !reserve(deps, &rec, attempt, now).await? {
        return Ok(());
    }
    let bundle = match &key.route {
        Route::Escalation { about } => {
            let mut named = vec![(about.clone(), rec.about_name())];
            named.extend(escalation::bundle(deps, &rec).await?);
            named
        }
        Route::Member => Vec::new(),
    };
    let mut early = Vec::new();
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
            // Replies reach Muster, and the person has a number to reply
            // from (an email does not ask someone without one to text).
            let sms_replies =
                deps.senders.sms.accepts_replies() && rec.contacts.address(Channel::Sms).is_some();
            let link = match a.channel {
                Channel::Email | Channel::Push => deps
                    .ack_links
                    .as_ref()
                    .map(|l| l.link(key, a.channel, deps.clock.now())),
                // No reply can reach Muster: the SMS carries the link.
                Channel::Sms if !sms_replies => deps
                    .ack_links
                    .as_ref()
                    .map(|l| l.link(key, a.channel, deps.clock.now())),
                _ => None,
            };
            let names: Vec<&str> = bundle.iter().map(|(_, n)| n.as_str()).collect();
            let (subject, body) = super::render(
                &incident,
                &rec,
                a.channel,
                link.as_deref(),
                &names,
                sms_replies,
            );
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
            // The conditional write before the act (see `claim`).
            if !claim(deps, &rec, attempt, ready, now).await? {
                deps.observer.stale_job();
                return Ok(());
            }
            deps.observer.offered(a.channel, now.since(ready));
            let result = sender.send(&msg).await;
            let now = deps.clock.now();
            let (outcome, kind) = match result {
                Ok(accepted) => {
                    deps.limiter.on_success(endpoint, now).await;
                    early = deps
                        .cascades
                        .put_message_ref(&accepted.provider_message_id, key, attempt)
                        .await?;
                    (SendOutcome::Accepted, SendOutcomeKind::Accepted)
                }
                Err(SendError::Throttled { retry_after }) => {
                    deps.limiter.on_throttled(endpoint, now, retry_after).await;
                    (
                        SendOutcome::Throttled {
                            retry_after_ms: retry_after.unwrap_or(1_000),
                            since: None,
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
    let named = bundle.into_iter().map(|(id, _)| id).collect();
    let event = Event::SendResult {
        attempt,
        result: outcome,
    };
    apply_with(deps, rec, event, named).await?;
    // Receipts the carrier sent before its answer reached Muster, now that
    // the attempt is recorded as accepted. Each is tried whatever became
    // of the others; one that cannot be applied leaves the attempt to its
    // receipt timeout (rule 4), as a receipt that never came.
    for status in early {
        if let Err(e) = super::apply_event(deps, key, Event::Receipt { attempt, status }).await {
            tracing::warn!(error = %e, "an early receipt was not applied");
        }
    }
    Ok(())
}

/// Capacity-aware plans: a member send whose channel's queue would hold it
/// past the queue-wait bound moves to the first channel left in the
/// person's plan whose queue is within the bound, else to the one whose
/// queue ends first, when that is sooner than its own (the engine decides
/// from the waits and audits them; the channel is tried later). The new
/// attempt is sent at once by the caller (it books its slot now), so every
/// send waits in exactly one queue and each booking is seen by the next
/// send that asks. `Some` when the plan changed, with the new attempt if
/// it is sending.
async fn follow_capacity(
    deps: &Deps,
    rec: &CascadeRecord,
    attempt: u32,
    channel: Channel,
    now: crate::domain::Ts,
) -> Result<Option<Option<u32>>> {
    let c = &rec.cascade;
    let rest = &c.plan.as_slice()[usize::from(c.next_step).min(c.plan.len())..];
    if rest.is_empty() {
        return Ok(None);
    }
    let bound = queue_bound(c, &deps.policy);
    let own = deps
        .limiter
        .queue_wait(deps.senders.get(channel).endpoint(), now)
        .await?;
    if own <= bound {
        return Ok(None);
    }
    let mut waits = ChannelWaits {
        cause: WaitCause::Queue,
        ..Default::default()
    };
    waits.free_at[channel.index()] = Some(now.plus(own));
    let mut sooner = false;
    for next in rest {
        let wait = deps
            .limiter
            .queue_wait(deps.senders.get(*next).endpoint(), now)
            .await?;
        sooner |= wait < own;
        waits.free_at[next.index()] = (wait > 0).then(|| now.plus(wait));
    }
    if !sooner {
        return Ok(None);
    }
    let before: Vec<u32> = c.in_flight.iter().map(|a| a.id).collect();
    let (next, kind) = apply_with(
        deps,
        rec.clone(),
        Event::Replan { attempt, waits },
        Vec::new(),
    )
    .await?;
    if kind != crate::engine::AuditKind::PlanChanged {
        return Ok(None);
    }
    let moved = next
        .cascade
        .in_flight
        .iter()
        .find(|a| !before.contains(&a.id) && matches!(a.phase, Phase::Sending { .. }))
        .map(|a| a.id);
    Ok(Some(moved))
}

/// Reserves the attempt's channel of its person in the contact ledger (calls
/// and SMS only); when another cascade holds it, the engine replans the
/// attempt and this returns false.
async fn reserve(
    deps: &Deps,
    rec: &CascadeRecord,
    attempt: u32,
    now: crate::domain::Ts,
) -> Result<bool> {
    let key = &rec.cascade.key;
    let Some(a) = rec.cascade.attempt(attempt) else {
        return Ok(false);
    };
    if !guarded(a.channel) {
        return Ok(true);
    }
    let hold = hold_delay(&rec.cascade, &deps.policy);
    match deps
        .ledger
        .reserve(&key.incident, &key.stakeholder, a.channel, key, now, hold)
        .await?
    {
        Reservation::Granted => Ok(true),
        Reservation::Busy(waits) => {
            apply_with(
                deps,
                rec.clone(),
                Event::Replan { attempt, waits },
                Vec::new(),
            )
            .await?;
            Ok(false)
        }
    }
}
