//! Quorum: an incident whose trigger asks for N acknowledgements (in all,
//! per tier, or both) records the moment they are reached, and with
//! `stopOnQuorum` cancels the member cascades still open, audited on each.
//!
//! The check runs right after a member's acknowledgement is written (the
//! tally it reads already counts it), and again in every sweep, so a
//! process stopped between the two writes loses nothing; the moment is set
//! once, by a conditional write, to the time the check saw the counts meet
//! it: never before the acknowledgement that met it, and at most a sweep
//! after it.

use super::apply_event;
use super::incident::counts;
use crate::domain::{IncidentId, IncidentStatus, Tier};
use crate::engine::{Event, Tally};
use crate::error::Result;
use crate::ports::{Deps, Job};

/// Cascades one stop job cancels before it queues the next page.
const STOP_PAGE: usize = 200;

/// Acknowledged members, in all and by tier, as the tally counts them.
pub fn acknowledged(t: &Tally) -> (u64, [u64; Tier::COUNT]) {
    let mut by_tier = [0; Tier::COUNT];
    for tier in Tier::ALL {
        by_tier[tier.index()] = t.tier(tier).acknowledged;
    }
    (t.members().acknowledged, by_tier)
}

/// Records the quorum reached (now) if the incident has one not yet
/// reached and its counts now meet it; with `stopOnQuorum`, queues the
/// jobs that cancel what is still open. Returns whether this call recorded it.
pub(crate) async fn check(deps: &Deps, id: &IncidentId) -> Result<bool> {
    loop {
        let Some(inc) = deps.incidents.get_incident(id).await? else {
            return Ok(false);
        };
        let Some(q) = &inc.trigger.quorum else {
            return Ok(false);
        };
        if inc.quorum_reached_at.is_some() || inc.status != IncidentStatus::Open {
            return Ok(false);
        }
        let (all, by_tier) = acknowledged(&counts(deps, &inc).await?);
        if !q.met(all, by_tier) {
            return Ok(false);
        }
        let mut next = inc.clone();
        next.quorum_reached_at = Some(deps.clock.now());
        next.version += 1;
        match deps.incidents.update_incident(&next, inc.version).await {
            Ok(()) => {
                tracing::info!(incident_id = %id, acknowledged = all, stop = inc.trigger.stop_on_quorum, "QUORUM_REACHED");
                if inc.trigger.stop_on_quorum {
                    let jobs = (0..deps.cascades.parts())
                        .map(|part| {
                            let job = Job::Stop {
                                incident: id.clone(),
                                part,
                                cursor: None,
                            };
                            (job, 0)
                        })
                        .collect();
                    deps.queue.enqueue(jobs).await?;
                }
                return Ok(true);
            }
            Err(e) if e.is_conflict() => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Whether a member send of this incident is no longer needed: its quorum
/// was reached and the trigger stops there.
pub(crate) fn stopped(inc: &crate::domain::Incident) -> bool {
    inc.trigger.stop_on_quorum && inc.quorum_reached_at.is_some()
}

/// One stop job: cancels a page of one partition's open member cascades
/// (escalations go on), then queues the next page.
pub(crate) async fn stop_page(
    deps: &Deps,
    id: &IncidentId,
    part: u16,
    cursor: Option<String>,
) -> Result<()> {
    let Some(inc) = deps.incidents.get_incident(id).await? else {
        return Ok(());
    };
    if !stopped(&inc) {
        return Ok(());
    }
    let page = deps.cascades.list_part(id, part, cursor, STOP_PAGE).await?;
    for rec in page.items {
        let c = &rec.cascade;
        if !c.status.is_terminal() && !c.key.route.is_escalation() {
            apply_event(deps, &c.key, Event::QuorumStop).await?;
        }
    }
    if let Some(c) = page.next {
        let job = Job::Stop {
            incident: id.clone(),
            part,
            cursor: Some(c),
        };
        deps.queue.enqueue(vec![(job, 0)]).await?;
    }
    Ok(())
}

/// The sweep's part: every open incident with a quorum not yet recorded
/// is checked again.
pub(super) async fn sweep(deps: &Deps) -> Result<()> {
    for id in deps.incidents.open_incidents().await? {
        check(deps, &id).await?;
    }
    Ok(())
}
