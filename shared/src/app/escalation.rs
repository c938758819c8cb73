//! Escalation: every CASCADE_FAILURE reaches a person who acknowledges it,
//! or the incident records ESCALATION_UNDELIVERED and the alarm fires.
//!
//! One escalation cascade per (failed person, person told): simple to
//! reason about (each failure has its own chain, its own timers and its own
//! acknowledgement) and safe under concurrency (the cascade key is the
//! idempotency key of the escalation). What a person told about several
//! failures receives is coalesced instead: the contact ledger never lets two
//! of their cascades call or text them within the hold, and every escalation
//! message names every failure still open for them (a bundle); answering it
//! acknowledges all it named.
//!
//! The chain of one failure ([`next_in_chain`]): the group's on-call
//! manager (when the failed person is that manager: their own manager), then
//! each person's manager from the directory, then the policy's fallback rota
//! in order; never anyone already on the chain, at most `max_depth` people.
//! Each person told is validated live, like members. The failed person's
//! member cascade records each step (ESCALATION_STARTED) and the end of a
//! chain with nobody left (ESCALATION_UNDELIVERED).
//!
//! When the failed person acknowledges after all, the open escalation about
//! them is withdrawn; if a message of it had been accepted, its person gets
//! an update (by email or push, else SMS; never a call).

use super::dispatch::{NewCascade, start};
use super::{Batch, apply_loaded};
use crate::audit::AuditEntry;
use crate::domain::{
    Channel, Incident, IncidentId, IncidentStatus, Milestone, Millis, StakeholderId, Ts,
};
use crate::engine::{AuditKind, Cascade, CascadeKey, CascadeStatus, ChannelPlan, Event, Route};
use crate::error::Result;
use crate::ports::{CascadeRecord, Deps, EscalationInfo, Job, Lane, OutboundMessage};

/// Failures one message names at most beyond its own ("and 12 more").
pub const BUNDLE_NAMES: usize = 10;

/// The next person to tell about a failure. `chain`: the failed person
/// first, then everyone told so far; `on_call`: the group's on-call manager;
/// `manager_of_last`: the directory manager of the chain's last person.
/// `None` when the chain is `max_depth` people deep or nobody is left.
pub fn next_in_chain(
    chain: &[StakeholderId],
    on_call: Option<&StakeholderId>,
    manager_of_last: Option<&StakeholderId>,
    fallback: &[StakeholderId],
    max_depth: u32,
) -> Option<StakeholderId> {
    let (failed, told) = chain.split_first()?;
    if told.len() >= max_depth as usize {
        return None;
    }
    let fresh = |id: &&StakeholderId| !chain.contains(id);
    let from_directory = match told.last() {
        // Level 1: the on-call manager, or, when they are the one who
        // failed, their own manager.
        None => match on_call {
            Some(m) if m == failed => manager_of_last,
            other => other,
        },
        // In the fallback rota: its next person, not their manager.
        Some(last) if fallback.contains(last) => None,
        Some(_) => manager_of_last,
    };
    from_directory
        .filter(fresh)
        .or_else(|| fallback.iter().find(fresh))
        .cloned()
}

/// Other open failures one escalation message names at most (the oldest):
/// a manager told of many at once gets them in messages of this many, each
/// answer acknowledging the ones it named.
pub const BUNDLE_MAX: usize = 500;

/// The other failures still open for the person `rec` tells: their open
/// escalation cascades of the same incident, oldest first.
pub(super) async fn bundle(
    deps: &Deps,
    rec: &CascadeRecord,
) -> Result<Vec<(StakeholderId, String)>> {
    let key = &rec.cascade.key;
    // An answer that needs help is told on its own, with the answer: it is
    // neither bundled into another message nor carries others.
    if rec.escalation.as_ref().is_some_and(|e| e.answer.is_some()) {
        return Ok(Vec::new());
    }
    // One more than the bundle holds: this cascade may be among them.
    let open = deps
        .cascades
        .open_escalations(&key.incident, &key.stakeholder, BUNDLE_MAX + 1)
        .await?;
    Ok(open
        .into_iter()
        .filter(|r| r.key != *key && !r.answered)
        .take(BUNDLE_MAX)
        .filter_map(|r| Some((r.key.route.about()?.clone(), r.about_name)))
        .collect())
}

fn member_key(incident: &IncidentId, about: &StakeholderId) -> CascadeKey {
    CascadeKey {
        incident: incident.clone(),
        stakeholder: about.clone(),
        route: Route::Member,
    }
}

/// Names `about`'s failure to the next person of its chain.
#[tracing::instrument(skip_all, fields(incident_id = %incident, stakeholder_id = %about, level = chain.len()))]
pub(super) async fn escalate(
    deps: &Deps,
    incident: &IncidentId,
    about: &StakeholderId,
    mut chain: Vec<StakeholderId>,
) -> Result<()> {
    let Some(inc) = deps.incidents.get_incident(incident).await? else {
        return Ok(());
    };
    let member = member_key(incident, about);
    if inc.status != IncidentStatus::Open {
        // Closed: the failure needs nobody any more; settle what waits for it.
        let last = match chain.get(1..).and_then(<[StakeholderId]>::last) {
            Some(told) => CascadeKey {
                stakeholder: told.clone(),
                route: Route::escalation(about.clone()),
                ..member.clone()
            },
            None => member.clone(),
        };
        if let Some(rec) = deps.cascades.get_cascade(&last).await?
            && rec.cascade.escalation_pending()
        {
            apply_loaded(deps, rec, Event::HandedOn { closed: true }).await?;
        }
        return Ok(());
    }
    let Some(failed) = deps.cascades.get_cascade(&member).await? else {
        tracing::error!("escalation of a failure with no member cascade dropped");
        return Ok(());
    };
    if failed.cascade.acked_at.is_some() {
        // They acknowledged after all: nothing more to tell anyone.
        return handed_on(deps, incident, about, &chain).await;
    }
    if let Some(last) = chain.last()
        && chain.len() > 1
    {
        let previous = CascadeKey {
            incident: incident.clone(),
            stakeholder: last.clone(),
            route: Route::escalation(about.clone()),
        };
        if deps
            .cascades
            .get_cascade(&previous)
            .await?
            .is_some_and(|r| r.cascade.acked_at.is_some())
        {
            // Acknowledged late by the person told last: the failure is known.
            return Ok(());
        }
    }
    let group = deps
        .directory
        .group(&inc.trigger.stakeholder_group_id)
        .await?;
    let on_call = group.as_ref().and_then(|g| g.on_call_manager.clone());
    let route_channels = group
        .map(|g| g.escalation_channels)
        .filter(|c| !c.is_empty());
    let policy = &deps.policy.escalation;
    // Each turn adds one person to the chain or returns, and the chain is
    // at most `max_depth` people deep: bounded.
    loop {
        let Some(last) = chain.last() else {
            return Ok(());
        };
        let manager_of_last = deps
            .directory
            .stakeholder(last)
            .await?
            .and_then(|p| p.manager);
        let Some(next) = next_in_chain(
            &chain,
            on_call.as_ref(),
            manager_of_last.as_ref(),
            &policy.fallback,
            policy.max_depth,
        ) else {
            handed_on(deps, incident, about, &chain).await?;
            return undelivered(deps, &inc, failed, &chain, on_call.is_some()).await;
        };
        let key = CascadeKey {
            incident: incident.clone(),
            stakeholder: next.clone(),
            route: Route::escalation(about.clone()),
        };
        chain.push(next.clone());
        if deps.cascades.get_cascade(&key).await?.is_some() {
            // A redelivered job: the escalation exists; make sure the
            // failure's own chain and the step before say so.
            started(deps, &member, &next).await?;
            handed_on(deps, incident, about, &chain[..chain.len() - 1]).await?;
            return settle(deps, &member, &chain).await;
        }
        let Some(person) = deps.directory.stakeholder(&next).await? else {
            tracing::warn!(manager_id = %next, "escalation target is not in the directory; the chain moves on");
            continue;
        };
        let resolved = super::contacts::resolve(deps, vec![(next.clone(), Some(person))]).await;
        let Some(super::contacts::Resolved {
            person: Some(person),
            check,
            ..
        }) = resolved.into_iter().next()
        else {
            continue;
        };
        let order = route_channels
            .as_deref()
            .unwrap_or_else(|| deps.policy.channels(deps.policy.manager_route));
        let plan = ChannelPlan::new(&person.plan(order));
        let cascade = Cascade::new(
            key,
            inc.trigger.severity,
            person.tier,
            plan,
            deps.clock.now(),
        );
        let fresh = NewCascade {
            contacts: person.contacts,
            name: person.name,
            locale: inc
                .trigger
                .template_for(person.locale.as_deref())
                .1
                .map(str::to_string),
            escalation: Some(EscalationInfo {
                level: (chain.len() - 1) as u32,
                chain: chain.clone(),
                about_name: failed.name.clone(),
                answer: failed
                    .cascade
                    .response
                    .as_deref()
                    .and_then(|k| inc.trigger.responses.by_key(k))
                    .filter(|o| !o.acknowledges)
                    .map(|o| o.label.clone()),
            }),
            check,
        };
        let mut batch = Batch::default();
        start(deps, cascade, fresh, &mut batch).await?;
        batch.flush(deps).await?;
        let told = Milestone::Escalated {
            about: about.clone(),
            to: next.clone(),
            level: (chain.len() - 1) as u32,
        };
        super::writeback::queue(deps, &inc, told).await;
        started(deps, &member, &next).await?;
        handed_on(deps, incident, about, &chain[..chain.len() - 1]).await?;
        return settle(deps, &member, &chain).await;
    }
}

/// Records on the failed person's cascade that their failure went to `to`.
async fn started(deps: &Deps, member: &CascadeKey, to: &StakeholderId) -> Result<()> {
    if let Some(rec) = deps.cascades.get_cascade(member).await?
        && !rec.cascade.escalated_to.contains(to)
    {
        apply_loaded(deps, rec, Event::EscalationStarted { to: to.clone() }).await?;
    }
    Ok(())
}

/// Marks the escalation told last before this step (`chain`'s last, when it
/// is not the failed person) as taken up, so the sweep leaves it be.
async fn handed_on(
    deps: &Deps,
    incident: &IncidentId,
    about: &StakeholderId,
    chain: &[StakeholderId],
) -> Result<()> {
    let Some(last) = chain.get(1..).and_then(<[StakeholderId]>::last) else {
        return Ok(());
    };
    let key = CascadeKey {
        incident: incident.clone(),
        stakeholder: last.clone(),
        route: Route::escalation(about.clone()),
    };
    if let Some(rec) = deps.cascades.get_cascade(&key).await?
        && rec.cascade.escalation_pending()
    {
        apply_loaded(deps, rec, Event::HandedOn { closed: false }).await?;
    }
    Ok(())
}

/// The failure was acknowledged (by its person, or by someone told before)
/// while its new escalation was being started: withdraw that one at once,
/// so nobody is told about a failure already taken care of.
async fn settle(deps: &Deps, member: &CascadeKey, chain: &[StakeholderId]) -> Result<()> {
    let acked_by = match deps.cascades.get_cascade(member).await? {
        Some(m) if m.cascade.acked_at.is_some() => Some(None),
        _ => {
            let mut by = None;
            for told in chain.iter().skip(1).take(chain.len().saturating_sub(2)) {
                let key = CascadeKey {
                    stakeholder: told.clone(),
                    route: Route::escalation(member.stakeholder.clone()),
                    ..member.clone()
                };
                if deps
                    .cascades
                    .get_cascade(&key)
                    .await?
                    .is_some_and(|r| r.cascade.acked_at.is_some())
                {
                    by = Some(Some(told.clone()));
                }
            }
            by
        }
    };
    let (Some(by), Some(newest)) = (acked_by, chain.last()) else {
        return Ok(());
    };
    let key = CascadeKey {
        stakeholder: newest.clone(),
        route: Route::escalation(member.stakeholder.clone()),
        ..member.clone()
    };
    if let Some(rec) = deps.cascades.get_cascade(&key).await?
        && !rec.cascade.status.is_terminal()
    {
        apply_loaded(deps, rec, Event::Withdraw { by }).await?;
    }
    Ok(())
}

/// Nobody is left to tell: the failure is recorded as undelivered, and the
/// alarm fires.
async fn undelivered(
    deps: &Deps,
    inc: &Incident,
    failed: CascadeRecord,
    chain: &[StakeholderId],
    had_on_call: bool,
) -> Result<()> {
    let key = failed.cascade.key.clone();
    let told = &chain[1..];
    let reason = if told.is_empty() {
        if had_on_call {
            "no escalation path: the on-call manager is the person who failed, with no manager of their own, and the policy names no fallback".to_string()
        } else {
            "no escalation path: the group has no on-call manager and the policy names no fallback"
                .to_string()
        }
    } else {
        let names: Vec<&str> = told.iter().map(StakeholderId::as_str).collect();
        format!(
            "nobody on the escalation chain acknowledged ({}; {} of at most {} people)",
            names.join(" -> "),
            told.len(),
            deps.policy.escalation.max_depth
        )
    };
    tracing::error!(incident_id = %key.incident, stakeholder_id = %key.stakeholder, levels = told.len(), "ESCALATION_UNDELIVERED");
    if !failed.cascade.escalation_undelivered {
        let about = key.stakeholder.clone();
        apply_loaded(deps, failed, Event::EscalationUndelivered { reason }).await?;
        super::writeback::queue(deps, inc, Milestone::Undelivered { about }).await;
    }
    Ok(())
}

/// `about`'s failure was acknowledged late: withdraws the open escalation
/// about them (the last one their chain started).
pub(super) async fn withdraw(
    deps: &Deps,
    incident: &IncidentId,
    about: &StakeholderId,
    by: Option<StakeholderId>,
) -> Result<()> {
    let member = deps
        .cascades
        .get_cascade(&member_key(incident, about))
        .await?;
    let Some(to) = member.and_then(|m| m.cascade.escalated_to.last().cloned()) else {
        return Ok(());
    };
    let key = CascadeKey {
        incident: incident.clone(),
        stakeholder: to,
        route: Route::escalation(about.clone()),
    };
    match deps.cascades.get_cascade(&key).await? {
        Some(rec) if !rec.cascade.status.is_terminal() => {
            apply_loaded(deps, rec, Event::Withdraw { by }).await?;
        }
        _ => deps.observer.stale_job(),
    }
    Ok(())
}

/// An escalation cascade was acknowledged: the failures its answered
/// message also named are acknowledged too (each audited with the message).
pub(super) async fn share_ack(deps: &Deps, key: &CascadeKey, attempt: Option<u32>) -> Result<()> {
    let Some(rec) = deps.cascades.get_cascade(key).await? else {
        return Ok(());
    };
    let channel = rec.cascade.acked_on.unwrap_or(Channel::Voice);
    let message = match attempt {
        Some(a) => format!("attempt {a} of {key}"),
        None => format!("a message of {key}"),
    };
    for about in rec.bundled(attempt) {
        let other = CascadeKey {
            incident: key.incident.clone(),
            stakeholder: key.stakeholder.clone(),
            route: Route::escalation(about),
        };
        // One acknowledged already (by its own answer or another bundle's)
        // is left be: a manager answering many bundles would otherwise add
        // a stale entry to every failure each one named.
        let Some(other) = deps.cascades.get_cascade(&other).await? else {
            continue;
        };
        if !other.cascade.takes_bundle_ack() {
            continue;
        }
        let event = Event::BundleAck {
            channel,
            message: message.clone(),
        };
        apply_loaded(deps, other, event).await?;
    }
    Ok(())
}

/// Sends a withdrawn escalation's person the update that the failure they
/// were told about has been acknowledged, once, on the least intrusive
/// channel they have.
pub(super) async fn notice(
    deps: &Deps,
    key: &CascadeKey,
    ticket: Option<crate::ratelimit::Ticket>,
) -> Result<()> {
    let Some(rec) = deps.cascades.get_cascade(key).await? else {
        return Ok(());
    };
    if rec.cascade.status != CascadeStatus::Cancelled || rec.cascade.noticed {
        deps.observer.stale_job();
        return Ok(());
    }
    let Some(incident) = deps.incidents.get_incident(&key.incident).await? else {
        return Ok(());
    };
    let Some((channel, to)) = [Channel::Email, Channel::Push, Channel::Sms]
        .into_iter()
        .find_map(|c| rec.contacts.address(c).map(|a| (c, a)))
    else {
        // Only a phone to call: no update is sent (never a call for it),
        // and the audit says so.
        let event = Event::Notice {
            channel: None,
            accepted: false,
        };
        apply_loaded(deps, rec, event).await?;
        return Ok(());
    };
    let (subject, body) = super::message::render_notice(&incident, &rec);
    let msg = OutboundMessage {
        key: key.clone(),
        attempt: OutboundMessage::NOTICE,
        channel,
        severity: incident.trigger.severity,
        to,
        subject,
        body,
        ack_code: rec.ack_code.clone(),
    };
    let again = |ticket| Job::Notice {
        key: key.clone(),
        ticket,
    };
    let super::update::Outside::Sent(accepted) =
        super::update::send_outside(deps, &rec, &msg, Lane::Priority, ticket, again).await?
    else {
        return Ok(());
    };
    let event = Event::Notice {
        channel: Some(channel),
        accepted,
    };
    apply_loaded(deps, rec, event).await?;
    Ok(())
}

/// What became of one failure's escalation, read from the audit trail
/// alone (so a report says only what was recorded).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct EscalationStory {
    pub about: StakeholderId,
    pub failed_at: Ts,
    /// Everyone told, in chain order.
    pub told: Vec<Told>,
    pub outcome: EscalationOutcome,
    /// From the failure to the first send for it offered to a carrier.
    pub first_offer_ms: Option<Millis>,
    /// From the failure to the first message a carrier accepted that named
    /// it (its own escalation's, or another's that bundled it).
    pub first_named_ms: Option<Millis>,
    /// Not a failure but an answer that does not acknowledge (RESPONDED):
    /// its key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub answered: Option<String>,
}

/// One person told about a failure.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Told {
    pub to: StakeholderId,
    pub level: u32,
    /// Messages of this escalation a carrier accepted: channel and time.
    pub sent: Vec<(Channel, Ts)>,
    /// When and on which channel they acknowledged it, if they did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub acknowledged: Option<(Channel, Ts)>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case", tag = "outcome")]
pub enum EscalationOutcome {
    /// Someone on the chain acknowledged it.
    Acknowledged { by: StakeholderId, at: Ts },
    /// The failed person acknowledged after all; the escalation was withdrawn.
    Withdrawn { at: Ts },
    /// Nobody on the chain acknowledged it, or there was no chain.
    Undelivered { at: Ts, reason: String },
    /// Cancelled with the incident's close.
    Cancelled,
    /// Still going when the trail was read.
    Open,
}

/// The escalation story of every failure in `entries` (one incident's
/// trail, in any order), in order of failure.
pub fn stories<'a>(entries: impl IntoIterator<Item = &'a AuditEntry>) -> Vec<EscalationStory> {
    use std::collections::BTreeMap;
    let mut by_about: BTreeMap<StakeholderId, EscalationStory> = BTreeMap::new();
    let mut named_at: BTreeMap<StakeholderId, Ts> = BTreeMap::new();
    let mut cancelled: std::collections::BTreeSet<StakeholderId> = Default::default();
    let mut late_ack: BTreeMap<StakeholderId, Ts> = BTreeMap::new();
    let mut escalations: Vec<&AuditEntry> = Vec::new();
    for e in entries {
        match &e.route {
            Route::Member => {
                let story = || EscalationStory {
                    about: e.stakeholder.clone(),
                    failed_at: e.at,
                    told: Vec::new(),
                    outcome: EscalationOutcome::Open,
                    first_offer_ms: None,
                    first_named_ms: None,
                    answered: None,
                };
                match e.record.kind {
                    AuditKind::CascadeFailure => {
                        by_about
                            .entry(e.stakeholder.clone())
                            .or_insert_with(story)
                            .failed_at = e.at;
                    }
                    AuditKind::Responded => {
                        let s = by_about.entry(e.stakeholder.clone()).or_insert_with(story);
                        s.failed_at = e.at;
                        s.answered = e.record.response.clone();
                    }
                    AuditKind::AckAfterEnd => {
                        late_ack.insert(e.stakeholder.clone(), e.at);
                    }
                    AuditKind::Cancelled if by_about.contains_key(&e.stakeholder) => {
                        cancelled.insert(e.stakeholder.clone());
                    }
                    AuditKind::EscalationUndelivered => {
                        if let Some(s) = by_about.get_mut(&e.stakeholder) {
                            s.outcome = EscalationOutcome::Undelivered {
                                at: e.at,
                                reason: e.record.note.clone().unwrap_or_default(),
                            };
                        }
                    }
                    _ => {}
                }
            }
            Route::Escalation { .. } => {
                if e.record.kind == AuditKind::SendAccepted {
                    for id in e.named.iter() {
                        let t = named_at.entry(id.clone()).or_insert(e.at);
                        *t = (*t).min(e.at);
                    }
                }
                escalations.push(e);
            }
        }
    }
    escalations.sort_by_key(|e| (e.at, e.seq));
    for e in escalations {
        let Some(about) = e.route.about() else {
            continue;
        };
        let Some(story) = by_about.get_mut(about) else {
            continue;
        };
        let pos = match story.told.iter().position(|t| t.to == e.stakeholder) {
            Some(p) => p,
            None => {
                story.told.push(Told {
                    to: e.stakeholder.clone(),
                    level: story.told.len() as u32 + 1,
                    sent: Vec::new(),
                    acknowledged: None,
                });
                story.told.len() - 1
            }
        };
        let offered = matches!(
            e.record.kind,
            AuditKind::SendAccepted
                | AuditKind::Throttled
                | AuditKind::RetryScheduled
                | AuditKind::ChannelFailed
                | AuditKind::ChannelUnreachable
        ) && e.record.attempt.is_some();
        if offered && story.first_offer_ms.is_none() {
            story.first_offer_ms = Some(e.at.since(story.failed_at));
        }
        let told = &mut story.told[pos];
        match (e.record.kind, e.record.channel) {
            (AuditKind::SendAccepted, Some(c)) => told.sent.push((c, e.at)),
            (AuditKind::Acknowledged | AuditKind::AckAfterEnd, Some(c)) => {
                told.acknowledged.get_or_insert((c, e.at));
                let earlier = match &story.outcome {
                    EscalationOutcome::Acknowledged { at, .. } => *at <= e.at,
                    _ => false,
                };
                if !earlier {
                    story.outcome = EscalationOutcome::Acknowledged {
                        by: e.stakeholder.clone(),
                        at: e.at,
                    };
                }
            }
            (AuditKind::Cancelled, _) => {
                cancelled.insert(about.clone());
            }
            _ => {}
        }
    }
    let mut out: Vec<EscalationStory> = by_about
        .into_values()
        .map(|mut s| {
            s.first_named_ms = named_at.get(&s.about).map(|t| t.since(s.failed_at));
            // Whichever came first: someone told acknowledged it, or the
            // failed person acknowledged after all.
            if let Some(&at) = late_ack.get(&s.about) {
                let acked_first =
                    matches!(s.outcome, EscalationOutcome::Acknowledged { at: a, .. } if a <= at);
                if !acked_first {
                    s.outcome = EscalationOutcome::Withdrawn { at };
                }
            }
            if s.outcome == EscalationOutcome::Open && cancelled.contains(&s.about) {
                s.outcome = EscalationOutcome::Cancelled;
            }
            s
        })
        .collect();
    out.sort_by(|a, b| (a.failed_at, &a.about).cmp(&(b.failed_at, &b.about)));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(s: &[&str]) -> Vec<StakeholderId> {
        s.iter()
            .map(|i| StakeholderId::parse(i).expect("valid id"))
            .collect()
    }
    fn id(s: &str) -> StakeholderId {
        StakeholderId::parse(s).expect("valid id")
    }

    #[test]
    fn the_chain_goes_on_call_manager_then_managers_then_the_fallback_rota() {
        let fallback = ids(&["bcp-1", "bcp-2"]);
        let on_call = id("duty");
        let next = |chain: &[&str], manager: Option<&str>| {
            next_in_chain(
                &ids(chain),
                Some(&on_call),
                manager.map(id).as_ref(),
                &fallback,
                4,
            )
            .map(|s| s.to_string())
        };
        assert_eq!(next(&["x"], Some("x-boss")).as_deref(), Some("duty"));
        assert_eq!(next(&["x", "duty"], Some("head")).as_deref(), Some("head"));
        assert_eq!(next(&["x", "duty"], None).as_deref(), Some("bcp-1"));
        assert_eq!(
            next(&["x", "duty", "bcp-1"], Some("bcp-boss")).as_deref(),
            Some("bcp-2"),
            "the rota goes on, not the rota member's manager"
        );
        assert_eq!(next(&["x", "duty", "bcp-1", "bcp-2"], None), None);
        // The on-call manager failed themselves: their own manager.
        assert_eq!(next(&["duty"], Some("head")).as_deref(), Some("head"));
        assert_eq!(next(&["duty"], None).as_deref(), Some("bcp-1"));
    }

    #[test]
    fn the_chain_never_names_anyone_twice_and_stops_at_the_depth() {
        let fallback = ids(&["a", "b"]);
        // A manager cycle: a's manager is x, the failed person.
        assert_eq!(
            next_in_chain(&ids(&["x", "a"]), None, Some(&id("x")), &fallback, 3),
            Some(id("b"))
        );
        assert_eq!(
            next_in_chain(&ids(&["x", "a", "b"]), None, Some(&id("a")), &fallback, 9),
            None
        );
        assert_eq!(
            next_in_chain(
                &ids(&["x", "m1", "m2"]),
                None,
                Some(&id("m3")),
                &fallback,
                2
            ),
            None,
            "two people deep at most"
        );
        // No on-call manager: the fallback.
        assert_eq!(
            next_in_chain(&ids(&["x"]), None, Some(&id("x-boss")), &fallback, 3),
            Some(id("a"))
        );
        // No path at all.
        assert_eq!(next_in_chain(&ids(&["x"]), None, None, &[], 3), None);
        assert_eq!(next_in_chain(&[], None, None, &fallback, 3), None);
    }
}
