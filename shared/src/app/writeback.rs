//! Write-back: an incident that came from PagerDuty, Jira or ServiceNow is
//! told its progress there (a note, a comment, a work note): started, each
//! escalation, all acknowledged, closed.
//!
//! A milestone is queued as a [`Job::WriteBack`] by the step that made it
//! true (the trigger, an escalation, the sweep that finds every member
//! acknowledged, the close that ends the incident), and the note's figures
//! are read from the stored state when the job runs, so a note says only
//! what the records say. The job is on the member lane, not the priority
//! lane, and a failing source never holds up a cascade: an unavailable
//! source is tried again with growing delays (30 s doubling to 15 min, 8
//! tries over about an hour), a refusal is logged and dropped.

use super::incident::counts;
use crate::domain::{Incident, IncidentId, IncidentStatus, Milestone, Millis};
use crate::error::Result;
use crate::ports::{Deps, Job, NoteError};

/// Deliveries of one note tried at most.
pub const ATTEMPTS: u32 = 8;
/// The first retry's delay; each next one doubles, up to [`MAX_DELAY`].
pub const FIRST_DELAY: Millis = 30_000;
/// The longest delay between tries (the queue's longest message delay).
pub const MAX_DELAY: Millis = 900_000;

/// The delay before try `attempt + 1` after try `attempt` failed.
pub fn backoff(attempt: u32) -> Millis {
    FIRST_DELAY
        .saturating_mul(1u64 << attempt.min(16))
        .min(MAX_DELAY)
}

/// The job telling `inc`'s origin `milestone`, if it has one.
pub(super) fn job(inc: &Incident, milestone: Milestone) -> Option<(Job, Millis)> {
    inc.origin.as_ref()?;
    let job = Job::WriteBack {
        incident: inc.id().clone(),
        milestone,
        attempt: 0,
    };
    Some((job, 0))
}

/// Queues the job telling `inc`'s origin `milestone`, if it has one. A
/// queue failure is logged, never the caller's failure: the step that made
/// the milestone true has happened.
pub(super) async fn queue(deps: &Deps, inc: &Incident, milestone: Milestone) {
    let kind = milestone.kind();
    if let Some(job) = job(inc, milestone)
        && let Err(e) = deps.queue.enqueue(vec![job]).await
    {
        tracing::error!(incident_id = %inc.id(), milestone = kind, error = %e, "a write-back note was not queued");
    }
}

/// One write-back job: the note, from the stored state, posted to the
/// origin; an unavailable source is tried again later.
#[tracing::instrument(skip_all, fields(incident_id = %incident, milestone = milestone.kind(), attempt))]
pub(super) async fn write_back(
    deps: &Deps,
    incident: &IncidentId,
    milestone: Milestone,
    attempt: u32,
) -> Result<()> {
    let Some(inc) = deps.incidents.get_incident(incident).await? else {
        return Ok(());
    };
    let Some(origin) = &inc.origin else {
        return Ok(());
    };
    let Some(notes) = &deps.notes else {
        tracing::info!(source = %origin.source, "write-back is not configured; the note is dropped");
        return Ok(());
    };
    let text = text(deps, &inc, &milestone).await?;
    match notes.post(origin, &text).await {
        Ok(()) => {
            tracing::info!(source = %origin.source, "progress written back");
            Ok(())
        }
        Err(NoteError::Unavailable(why)) if attempt + 1 < ATTEMPTS => {
            let delay = backoff(attempt);
            tracing::warn!(source = %origin.source, why, retry_in_ms = delay, "write-back failed; retrying");
            let job = Job::WriteBack {
                incident: incident.clone(),
                milestone,
                attempt: attempt + 1,
            };
            deps.queue.enqueue(vec![(job, delay)]).await
        }
        Err(NoteError::NotConfigured) => {
            tracing::info!(source = %origin.source, "write-back to this source is not configured; the note is dropped");
            Ok(())
        }
        Err(e) => {
            tracing::error!(source = %origin.source, error = %e, "write-back given up");
            Ok(())
        }
    }
}

/// The note of `milestone`, its figures from the stored state. Stakeholder
/// ids only: a note never carries a contact detail.
async fn text(deps: &Deps, inc: &Incident, milestone: &Milestone) -> Result<String> {
    let id = inc.id();
    let t = &inc.trigger;
    Ok(match milestone {
        Milestone::Started => format!(
            "Muster incident {id} ({}) started: notifying the {} members of group {} until each acknowledges or is escalated.",
            t.severity, inc.cascades, t.stakeholder_group_id
        ),
        Milestone::Escalated { about, to, level } => format!(
            "Muster incident {id}: {about} was not reached; their failure was named to {to} (escalation level {level})."
        ),
        Milestone::Undelivered { about } => format!(
            "Muster incident {id}: {about} was not reached and nobody on their escalation chain could be told (ESCALATION_UNDELIVERED)."
        ),
        Milestone::AllAcknowledged => {
            let m = counts(deps, inc).await?.members();
            format!(
                "Muster incident {id}: all {} members of group {} acknowledged.",
                m.acknowledged, t.stakeholder_group_id
            )
        }
        Milestone::Closed => {
            let m = counts(deps, inc).await?.members();
            format!(
                "Muster incident {id} closed: of {} members, {} acknowledged, {} escalated, {} cancelled.",
                m.total(),
                m.acknowledged,
                m.escalated,
                m.cancelled
            )
        }
    })
}

/// The sweep's part: an open incident with an origin whose members have
/// all acknowledged is marked so (a conditional write: once) and its
/// origin told.
pub(super) async fn all_acknowledged(deps: &Deps) -> Result<()> {
    for id in deps.incidents.open_incidents().await? {
        let Some(inc) = deps.incidents.get_incident(&id).await? else {
            continue;
        };
        if inc.origin.is_none()
            || inc.all_acknowledged_told
            || inc.status != IncidentStatus::Open
            || inc.cascades == 0
            || inc.expanded < inc.cascades
        {
            continue;
        }
        let members = counts(deps, &inc).await?.members();
        if members.acknowledged < u64::from(inc.cascades) {
            continue;
        }
        let mut next = inc.clone();
        next.all_acknowledged_told = true;
        next.version += 1;
        match deps.incidents.update_incident(&next, inc.version).await {
            Ok(()) => queue(deps, &next, Milestone::AllAcknowledged).await,
            // Changed meanwhile: the next sweep looks again.
            Err(e) if e.is_conflict() => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_back_off_to_the_longest_queue_delay_and_stop() {
        let delays: Vec<Millis> = (0..ATTEMPTS - 1).map(backoff).collect();
        assert_eq!(
            delays,
            [30_000, 60_000, 120_000, 240_000, 480_000, 900_000, 900_000]
        );
        // About an hour of tries, then given up.
        assert!(delays.iter().sum::<Millis>() <= 3_600_000);
        assert_eq!(backoff(60), MAX_DELAY);
    }
}
