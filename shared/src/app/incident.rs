//! Incident operations: close (cancel every open cascade) and status.

use super::apply_event;
use crate::domain::{Channel, Incident, IncidentId, IncidentStatus, StakeholderId, Ts};
use crate::engine::{CascadeStatus, Event, Route};
use crate::error::{Error, Result};
use crate::ports::Deps;
use serde::Serialize;

/// Closes the incident and cancels every open cascade; returns how many.
/// Closing a closed incident cancels whatever is still open (idempotent).
#[tracing::instrument(skip_all, fields(incident_id = %id))]
pub async fn close(deps: &Deps, id: &IncidentId) -> Result<u64> {
    loop {
        let inc = deps
            .incidents
            .get_incident(id)
            .await?
            .ok_or_else(|| Error::NotFound(format!("incident {id}")))?;
        if inc.status == IncidentStatus::Closed {
            break;
        }
        let mut next = inc.clone();
        next.status = IncidentStatus::Closed;
        next.closed_at = Some(deps.clock.now());
        next.version += 1;
        match deps.incidents.update_incident(&next, inc.version).await {
            Ok(()) => break,
            Err(e) if e.is_conflict() => continue,
            Err(e) => return Err(e),
        }
    }
    let mut cancelled = 0;
    let mut cursor = None;
    loop {
        let page = deps.cascades.list_cascades(id, cursor, 500).await?;
        for rec in page.items {
            if !rec.cascade.status.is_terminal() {
                apply_event(deps, &rec.cascade.key, Event::Cancel).await?;
                cancelled += 1;
            } else if rec.cascade.escalation_pending() {
                // A failure not yet taken up needs nobody now.
                let event = Event::HandedOn { closed: true };
                apply_event(deps, &rec.cascade.key, event).await?;
            }
        }
        match page.next {
            Some(c) => cursor = Some(c),
            None => {
                super::seal(deps, id).await?;
                return Ok(cancelled);
            }
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct StateCounts {
    pub pending: u64,
    pub active: u64,
    pub acknowledged: u64,
    pub escalated: u64,
    pub cancelled: u64,
}

impl StateCounts {
    pub fn add(&mut self, s: CascadeStatus) {
        match s {
            CascadeStatus::Pending => self.pending += 1,
            CascadeStatus::Active => self.active += 1,
            CascadeStatus::Acknowledged => self.acknowledged += 1,
            CascadeStatus::Escalated => self.escalated += 1,
            CascadeStatus::Cancelled => self.cancelled += 1,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StakeholderView {
    pub stakeholder: StakeholderId,
    pub route: Route,
    pub status: CascadeStatus,
    pub channels: Vec<Channel>,
    pub in_flight: Vec<Channel>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub acked_at: Option<Ts>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub acked_on: Option<Channel>,
    pub needs_review: bool,
    /// Contact details, masked.
    pub contacts: Vec<(Channel, String)>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct IncidentView {
    pub incident: Incident,
    pub counts: StateCounts,
    pub needs_review: u64,
    pub stakeholders: Vec<StakeholderView>,
}

pub async fn status(deps: &Deps, id: &IncidentId) -> Result<IncidentView> {
    let incident = deps
        .incidents
        .get_incident(id)
        .await?
        .ok_or_else(|| Error::NotFound(format!("incident {id}")))?;
    let mut counts = StateCounts::default();
    let mut needs_review = 0;
    let mut stakeholders = Vec::new();
    let mut cursor = None;
    loop {
        let page = deps.cascades.list_cascades(id, cursor, 500).await?;
        for rec in page.items {
            let c = &rec.cascade;
            counts.add(c.status);
            needs_review += u64::from(rec.needs_review);
            stakeholders.push(StakeholderView {
                stakeholder: c.key.stakeholder.clone(),
                route: c.key.route.clone(),
                status: c.status,
                channels: c.plan.as_slice().to_vec(),
                in_flight: c.in_flight.iter().map(|a| a.channel).collect(),
                acked_at: c.acked_at,
                acked_on: c.acked_on,
                needs_review: rec.needs_review,
                contacts: Channel::ALL
                    .iter()
                    .filter_map(|ch| rec.contacts.address(*ch).map(|a| (*ch, a.masked())))
                    .collect(),
            });
        }
        match page.next {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    Ok(IncidentView {
        incident,
        counts,
        needs_review,
        stakeholders,
    })
}
