//! Tick: fired timers and the reconciliation sweep.
//!
//! A timer that fires early (EventBridge Scheduler fires long timers 60 s
//! ahead) is re-armed for the remainder. Timers are never cancelled, so most
//! cascades leave some behind (a receipt-timeout timer after the receipt
//! came); a timer whose fence no longer matches is dropped after one read,
//! without a write or an audit entry: it is a leftover of the mechanism, not
//! an event. Stale receipts, acks and send results, which come from outside,
//! are audited. The sweep re-drives every cascade whose next due time is
//! more than the reconciliation age past; a cascade whose overdue item is a
//! send still waiting in a non-empty work queue is left to the queue.

use super::{apply_event, apply_loaded};
use crate::domain::Ts;
use crate::engine::{Event, Phase, timer_is_live};
use crate::error::Result;
use crate::ports::{Deps, TimerMsg};

/// Early by more than this: re-arm instead of applying.
const EARLY_TOLERANCE_MS: u64 = 1_000;

pub async fn tick(deps: &Deps, msg: TimerMsg) -> Result<()> {
    let now = deps.clock.now();
    if msg.at > now.plus(EARLY_TOLERANCE_MS) {
        return deps.timers.arm(vec![msg]).await;
    }
    let Some(rec) = deps.cascades.get_cascade(&msg.key).await? else {
        deps.observer.stale_job();
        return Ok(());
    };
    if !timer_is_live(&rec.cascade, msg.attempt, msg.kind) {
        deps.observer.stale_job();
        return Ok(());
    }
    let event = Event::Timer {
        attempt: msg.attempt,
        kind: msg.kind,
    };
    apply_loaded(deps, rec, event).await?;
    Ok(())
}

/// How often an open incident is sealed again.
pub const SEAL_INTERVAL_MS: u64 = 15 * 60_000;

/// Expansion that was lost: an open incident older than the
/// reconciliation age whose expansion is not known to be complete is
/// compared with its group, and members without a cascade (their expansion
/// job lost: a crash after the trigger, a message gone to a dead-letter
/// queue) are expanded again, idempotently. Once every member has a
/// cascade the incident records its expansion complete and is not read
/// again. Runs only with the work queue empty, so a slow expansion is not
/// taken for a lost one.
async fn recover_expansions(deps: &Deps, now: Ts, age: crate::domain::Millis) -> Result<u64> {
    use crate::domain::StakeholderId;
    use std::collections::BTreeSet;
    let mut reexpanded = 0;
    for id in deps.incidents.open_incidents().await? {
        let Some(mut inc) = deps.incidents.get_incident(&id).await? else {
            continue;
        };
        if inc.expanded >= inc.cascades || now.since(inc.triggered_at) < age {
            continue;
        }
        let mut have: BTreeSet<StakeholderId> = BTreeSet::new();
        let mut cursor = None;
        loop {
            let page = deps.cascades.list_cascades(&id, cursor, 500).await?;
            have.extend(
                page.items
                    .into_iter()
                    .filter(|r| r.cascade.key.route == crate::engine::Route::Member)
                    .map(|r| r.cascade.key.stakeholder),
            );
            match page.next {
                Some(c) => cursor = Some(c),
                None => break,
            }
        }
        let members = deps
            .directory
            .members(&inc.trigger.stakeholder_group_id)
            .await?;
        let missing: Vec<StakeholderId> =
            members.into_iter().filter(|m| !have.contains(m)).collect();
        if missing.is_empty() {
            let version = inc.version;
            inc.expanded = inc.cascades;
            inc.version += 1;
            match deps.incidents.update_incident(&inc, version).await {
                Err(e) if !e.is_conflict() => return Err(e),
                _ => {}
            }
            continue;
        }
        tracing::warn!(incident_id = %id, members = missing.len(), "expanding again members whose expansion job was lost");
        reexpanded += missing.len() as u64;
        let jobs = missing
            .chunks(super::EXPAND_CHUNK as usize)
            .map(|c| {
                let job = crate::ports::Job::Expand {
                    incident: id.clone(),
                    members: c.to_vec(),
                };
                (job, 0)
            })
            .collect();
        deps.queue.enqueue(jobs).await?;
    }
    Ok(reexpanded)
}

/// Seals every open incident whose last seal is older than the interval.
async fn reseal(deps: &Deps) -> Result<()> {
    let Some(sealing) = &deps.sealing else {
        return Ok(());
    };
    let now = deps.clock.now();
    for id in deps.incidents.open_incidents().await? {
        let last = sealing.store.seals(&id).await?.iter().map(|s| s.at).max();
        if last.is_none_or(|at| at.plus(SEAL_INTERVAL_MS) <= now) {
            super::seal(deps, &id).await?;
        }
    }
    Ok(())
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SweepReport {
    pub examined: u64,
    pub redriven: u64,
    pub deferred: u64,
    /// The sweep stopped at its deadline with more to examine.
    pub incomplete: bool,
    /// Members given the cascade their lost expansion job never created.
    pub reexpanded: u64,
}

/// One reconciliation pass; stops early once `deadline` (if any) has passed.
pub async fn sweep(deps: &Deps, deadline: Option<Ts>) -> Result<SweepReport> {
    let now = deps.clock.now();
    let age = deps.policy.reconciliation_age;
    let Some(due_before) = now.0.checked_sub(age).map(Ts) else {
        return Ok(SweepReport::default());
    };
    let backlog = deps.queue.backlog().await?;
    let mut report = SweepReport::default();
    let mut cursor = None;
    loop {
        let page = deps.cascades.overdue(due_before, cursor, 200).await?;
        for key in page.items {
            if deadline.is_some_and(|d| deps.clock.now() >= d) {
                report.incomplete = true;
                return Ok(report);
            }
            report.examined += 1;
            let Some(rec) = deps.cascades.get_cascade(&key).await? else {
                continue;
            };
            let first = rec.cascade.in_flight.iter().min_by_key(|a| a.phase.due());
            if backlog > 0 && first.is_some_and(|a| matches!(a.phase, Phase::Sending { .. })) {
                report.deferred += 1;
                continue;
            }
            if rec.cascade.overdue(now, age) {
                tracing::warn!(incident_id = %key.incident, stakeholder_id = %key.stakeholder, "re-driving an overdue cascade");
                apply_event(deps, &key, Event::Reconcile).await?;
                report.redriven += 1;
            }
        }
        match page.next {
            Some(c) => cursor = Some(c),
            None => {
                if backlog == 0 {
                    report.reexpanded = recover_expansions(deps, now, age).await?;
                }
                reseal(deps).await?;
                super::writeback::all_acknowledged(deps).await?;
                super::quorum::sweep(deps).await?;
                return Ok(report);
            }
        }
    }
}
