//! Trigger: declare an incident. Idempotent: the same incident id while the
//! incident is open, or within the dedup window of its trigger, replays the
//! original answer and starts nothing; a different payload under the same id
//! is a conflict (a different `timestamp` alone is not: monitoring tools
//! re-send with a fresh one). The group is expanded through the work queue, so the answer
//! never waits for a large group.

use crate::domain::{Incident, IncidentStatus, Milestone, Origin, Trigger};
use crate::error::{Error, Result};
use crate::ports::{Deps, Job};
use serde::Serialize;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TriggerOutcome {
    pub incident: Incident,
    /// The answer is a replay of an earlier identical trigger.
    pub replay: bool,
    /// What the caller should know: a group with no escalation path (its
    /// failures will be recorded as ESCALATION_UNDELIVERED). An activation
    /// is never refused for it.
    pub warnings: Vec<String>,
}

pub async fn trigger(deps: &Deps, trigger: Trigger) -> Result<TriggerOutcome> {
    declare(deps, trigger, None).await
}

/// [`trigger`], for an incident that came from a system told of its
/// progress (write-back): `origin` is kept with the incident, and the
/// origin is told it started.
pub async fn trigger_from(deps: &Deps, trigger: Trigger, origin: Origin) -> Result<TriggerOutcome> {
    declare(deps, trigger, Some(origin)).await
}

#[tracing::instrument(skip_all, fields(incident_id = %trigger.incident_id))]
async fn declare(deps: &Deps, trigger: Trigger, origin: Option<Origin>) -> Result<TriggerOutcome> {
    let now = deps.clock.now();
    if let Some(existing) = deps.incidents.get_incident(&trigger.incident_id).await? {
        return replay(deps, existing, &trigger, now);
    }
    let group = deps
        .directory
        .group(&trigger.stakeholder_group_id)
        .await?
        .ok_or_else(|| {
            Error::invalid(
                "stakeholderGroupId",
                format!(
                    "unknown stakeholder group {:?}",
                    trigger.stakeholder_group_id.as_str()
                ),
            )
        })?;
    let mut warnings = Vec::new();
    if group.on_call_manager.is_none() && deps.policy.escalation.fallback.is_empty() {
        tracing::error!(group_id = %group.id, "group has no escalation path: its failures will reach nobody");
        warnings.push(format!(
            "group {} has no on-call manager and the policy names no escalation fallback: a failure will be recorded as ESCALATION_UNDELIVERED",
            group.id
        ));
    }
    let ids = deps.directory.members(&group.id).await?;
    let members = ids.len() as u32;
    let incident = Incident {
        trigger: trigger.clone(),
        status: IncidentStatus::Open,
        triggered_at: now,
        closed_at: None,
        cascades: members,
        expanded: 0,
        version: 0,
        close_passes: 0,
        close_done: Vec::new(),
        tallied: true,
        origin,
        all_acknowledged_told: false,
        quorum_reached_at: None,
        updates: Vec::new(),
        reseal_at: None,
    };
    match deps.incidents.create_incident(&incident).await {
        Ok(()) => {}
        Err(e) if e.is_conflict() => {
            let existing = deps
                .incidents
                .get_incident(&trigger.incident_id)
                .await?
                .ok_or(e)?;
            return replay(deps, existing, &trigger, now);
        }
        Err(e) => return Err(e),
    }
    let jobs = ids
        .chunks(super::EXPAND_CHUNK as usize)
        .map(|c| {
            let job = Job::Expand {
                incident: trigger.incident_id.clone(),
                members: c.to_vec(),
            };
            (job, 0)
        })
        .collect::<Vec<_>>();
    if !jobs.is_empty() {
        deps.queue.enqueue(jobs).await?;
    }
    super::writeback::queue(deps, &incident, Milestone::Started).await;
    tracing::info!(cascades = members, severity = %trigger.severity, "incident triggered");
    Ok(TriggerOutcome {
        incident,
        replay: false,
        warnings,
    })
}

fn replay(
    deps: &Deps,
    existing: Incident,
    trigger: &Trigger,
    now: crate::domain::Ts,
) -> Result<TriggerOutcome> {
    let within_window = now.since(existing.triggered_at) < deps.policy.dedup_window;
    let open = existing.status == IncidentStatus::Open;
    let t = &existing.trigger;
    let same = t.severity == trigger.severity
        && t.stakeholder_group_id == trigger.stakeholder_group_id
        && t.message_template == trigger.message_template;
    if !same {
        return Err(Error::Conflict(format!(
            "incident {} was already triggered with a different payload",
            trigger.incident_id
        )));
    }
    if open || within_window {
        return Ok(TriggerOutcome {
            incident: existing,
            replay: true,
            warnings: Vec::new(),
        });
    }
    Err(Error::Conflict(format!(
        "incident {} is closed; declare a new incident id",
        trigger.incident_id
    )))
}
