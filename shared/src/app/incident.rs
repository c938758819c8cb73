//! Incident operations: close (cancel every open cascade) and status.

use super::apply_event;
use crate::domain::{Channel, Incident, IncidentId, IncidentStatus, StakeholderId, Tier, Ts};
use crate::engine::{CascadeStatus, Event, Route, StateCounts, Tally};
use crate::error::{Error, Result};
use crate::ports::CascadeRecord;
use crate::ports::{Deps, Job};
use serde::Serialize;

/// Cascades a close job cancels before it hands on to the next job.
pub const CLOSE_PAGE: usize = 100;
/// Passes a close makes over the cascades at most: a pass that ends with
/// cascades still open (started while the first pass ran) begins another.
pub const CLOSE_PASSES: u8 = 5;

/// Closes the incident: marks it closing at once and queues one
/// cancellation job per store partition; the last job of a pass seals the
/// incident and marks it closed once nothing of it is open. Returns the
/// incident as it now is. Closing a closed incident changes nothing;
/// closing a closing one queues again the jobs of the partitions its pass
/// has not finished (a job lost, or a pass whose enqueue failed: a job
/// that runs twice does nothing more), or, when its passes all ended with
/// cascades still open, begins them again.
#[tracing::instrument(skip_all, fields(incident_id = %id))]
pub async fn close(deps: &Deps, id: &IncidentId) -> Result<Incident> {
    let parts = deps.cascades.parts();
    loop {
        let inc = deps
            .incidents
            .get_incident(id)
            .await?
            .ok_or_else(|| Error::NotFound(format!("incident {id}")))?;
        let stalled = inc.status == IncidentStatus::Closing
            && inc.close_done.len() >= usize::from(parts)
            && inc.close_passes >= CLOSE_PASSES;
        match inc.status {
            IncidentStatus::Closed => return Ok(inc),
            IncidentStatus::Closing if !stalled => {
                enqueue_pass(deps, &inc, parts).await?;
                return Ok(inc);
            }
            _ => {}
        }
        let mut next = inc.clone();
        next.status = IncidentStatus::Closing;
        next.closed_at = next.closed_at.or(Some(deps.clock.now()));
        next.close_passes = 1;
        next.close_done.clear();
        next.version += 1;
        match deps.incidents.update_incident(&next, inc.version).await {
            Ok(()) => {
                enqueue_pass(deps, &next, parts).await?;
                return Ok(next);
            }
            Err(e) if e.is_conflict() => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Queues the current pass's job for every partition it has not finished.
async fn enqueue_pass(deps: &Deps, inc: &Incident, parts: u16) -> Result<()> {
    let jobs = (0..parts)
        .filter(|p| !inc.close_done.contains(p))
        .map(|part| {
            let job = Job::Close {
                incident: inc.id().clone(),
                pass: inc.close_passes,
                part,
                cursor: None,
            };
            (job, 0)
        })
        .collect();
    deps.queue.enqueue(jobs).await
}

/// The incident's counts: its tally, or for an incident triggered before
/// the stores kept one, a count of its cascades.
pub(super) async fn counts(deps: &Deps, inc: &Incident) -> Result<Tally> {
    if inc.tallied {
        return deps.cascades.tally(inc.id()).await;
    }
    let mut t = Tally::default();
    let mut cursor = None;
    loop {
        let page = deps.cascades.list_cascades(inc.id(), cursor, 500).await?;
        for r in &page.items {
            t.add(&Tally::of(&r.cascade, r.needs_review));
        }
        match page.next {
            Some(c) => cursor = Some(c),
            None => return Ok(t),
        }
    }
}

/// One close job: cancels a page of one partition's open cascades (and
/// hands on, closed, failures not yet escalated), then queues the next
/// page, or, at the partition's end, records the partition done. A job of
/// a pass that is over, or of an incident no longer closing, does nothing.
pub(crate) async fn cancel_page(
    deps: &Deps,
    id: &IncidentId,
    pass: u8,
    part: u16,
    cursor: Option<String>,
) -> Result<()> {
    let Some(inc) = deps.incidents.get_incident(id).await? else {
        return Ok(());
    };
    if inc.status != IncidentStatus::Closing || inc.close_passes != pass {
        return Ok(());
    }
    let page = deps
        .cascades
        .list_part(id, part, cursor, CLOSE_PAGE)
        .await?;
    for rec in page.items {
        if !rec.cascade.status.is_terminal() {
            apply_event(deps, &rec.cascade.key, Event::Cancel).await?;
        } else if rec.cascade.escalation_pending() {
            // A failure not yet taken up needs nobody now.
            let event = Event::HandedOn { closed: true };
            apply_event(deps, &rec.cascade.key, event).await?;
        }
    }
    match page.next {
        Some(c) => {
            let job = Job::Close {
                incident: id.clone(),
                pass,
                part,
                cursor: Some(c),
            };
            deps.queue.enqueue(vec![(job, 0)]).await
        }
        None => part_done(deps, id, pass, part).await,
    }
}

/// Partition `part` finished pass `pass` (counted once, however often its
/// job runs). The last partition of a pass seals the incident and marks it
/// closed when nothing is open, else begins another pass.
async fn part_done(deps: &Deps, id: &IncidentId, pass: u8, part: u16) -> Result<()> {
    let parts = deps.cascades.parts();
    loop {
        let Some(inc) = deps.incidents.get_incident(id).await? else {
            return Ok(());
        };
        if inc.status != IncidentStatus::Closing
            || inc.close_passes != pass
            || inc.close_done.contains(&part)
        {
            return Ok(());
        }
        let mut next = inc.clone();
        next.close_done.push(part);
        next.version += 1;
        let mut again = false;
        if next.close_done.len() >= usize::from(parts) {
            let open = counts(deps, &inc).await?.open();
            if open == 0 {
                // Sealed before it says closed: a closed incident always
                // has its final seal (a retry after a lost race seals again;
                // seals accumulate).
                super::seal(deps, id).await?;
                next.status = IncidentStatus::Closed;
            } else if inc.close_passes >= CLOSE_PASSES {
                // It stays closing (the truth); closing it again begins anew.
                tracing::error!(open, "cascades still open after the last close pass");
            } else {
                next.close_passes += 1;
                next.close_done.clear();
                again = true;
            }
        }
        match deps.incidents.update_incident(&next, inc.version).await {
            Ok(()) if again => return enqueue_pass(deps, &next, parts).await,
            Ok(()) => {
                if next.status == IncidentStatus::Closed {
                    super::writeback::queue(deps, &next, crate::domain::Milestone::Closed).await;
                }
                return Ok(());
            }
            Err(e) if e.is_conflict() => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Which stakeholders a status page lists.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StakeholderFilter {
    pub state: Option<CascadeStatus>,
    pub tier: Option<Tier>,
    /// A message on this channel in flight now, or acknowledged on it.
    pub channel: Option<Channel>,
    pub needs_review: Option<bool>,
    /// `Some(false)`: members only; `Some(true)`: escalations only.
    pub escalation: Option<bool>,
}

impl StakeholderFilter {
    fn admits(&self, rec: &CascadeRecord) -> bool {
        let c = &rec.cascade;
        self.state.is_none_or(|s| s == c.status)
            && self.tier.is_none_or(|t| t == c.tier)
            && self.channel.is_none_or(|ch| {
                c.acked_on == Some(ch) || c.in_flight.iter().any(|a| a.channel == ch)
            })
            && self.needs_review.is_none_or(|r| r == rec.needs_review)
            && self
                .escalation
                .is_none_or(|e| e == c.key.route.is_escalation())
    }
}

/// Page size of a status page's stakeholders: default and most.
pub const PAGE_DEFAULT: usize = 100;
pub const PAGE_MAX: usize = 1_000;
/// Most cascades one filtered status page reads: a page may come back with
/// fewer than `limit` stakeholders (even none) and a `next` to go on from.
pub const SCAN_MAX: usize = 5_000;

/// What a status page asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusQuery {
    pub filter: StakeholderFilter,
    /// `next` of the page before.
    pub cursor: Option<String>,
    pub limit: usize,
}

impl Default for StatusQuery {
    fn default() -> Self {
        StatusQuery {
            filter: StakeholderFilter::default(),
            cursor: None,
            limit: PAGE_DEFAULT,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StakeholderView {
    pub stakeholder: StakeholderId,
    pub name: String,
    pub route: Route,
    pub tier: Tier,
    pub status: CascadeStatus,
    pub channels: Vec<Channel>,
    pub in_flight: Vec<Channel>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_contact_at: Option<Ts>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub acked_at: Option<Ts>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub acked_on: Option<Channel>,
    /// For a member whose cascade failed: whom it was escalated to, in order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub escalated_to: Vec<StakeholderId>,
    pub needs_review: bool,
    /// Contact details, masked when the cascade was created.
    pub contacts: Vec<(Channel, String)>,
    /// The key of the answer the person gave (the incident's `responses`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response: Option<String>,
    /// The person's quiet hours held their first message until then.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quiet_until: Option<Ts>,
}

impl StakeholderView {
    fn of(rec: &CascadeRecord) -> Self {
        let c = &rec.cascade;
        StakeholderView {
            stakeholder: c.key.stakeholder.clone(),
            name: rec.name.clone(),
            route: c.key.route.clone(),
            tier: c.tier,
            status: c.status,
            channels: c.plan.as_slice().to_vec(),
            in_flight: c.in_flight.iter().map(|a| a.channel).collect(),
            first_contact_at: c.first_contact_at,
            acked_at: c.acked_at,
            acked_on: c.acked_on,
            escalated_to: c.escalated_to.clone(),
            needs_review: rec.needs_review,
            contacts: rec.masked.clone(),
            response: c.response.clone(),
            quiet_until: c.quiet_until,
        }
    }
}

/// Member counts by channel.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ChannelCounts {
    /// A message on the channel in flight now.
    pub trying: u64,
    pub acknowledged: u64,
}

/// An incident's counts, from the store's tally (no cascade is read).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Progress {
    /// One per person of the group (as expanded so far).
    pub members: StateCounts,
    /// Managers told of failures.
    pub escalations: StateCounts,
    /// Members by tier: `{"1": {...}, "2": ..., "3": ...}`.
    pub by_tier: std::collections::BTreeMap<String, StateCounts>,
    pub by_channel: std::collections::BTreeMap<Channel, ChannelCounts>,
    /// Members a first message has reached a carrier for.
    pub contacted: u64,
    /// Members whose failure no one in their escalation chain acknowledged.
    pub undelivered: u64,
    /// Failed cascades whose failure has not been taken up yet.
    pub awaiting_escalation: u64,
}

impl Progress {
    pub fn of(t: &Tally) -> Self {
        Progress {
            members: t.members(),
            escalations: t.escalations(),
            by_tier: Tier::ALL
                .iter()
                .map(|tier| (tier.get().to_string(), t.tier(*tier)))
                .collect(),
            by_channel: Channel::ALL
                .iter()
                .map(|ch| {
                    let counts = ChannelCounts {
                        trying: t.trying(*ch),
                        acknowledged: t.acknowledged_on(*ch),
                    };
                    (*ch, counts)
                })
                .collect(),
            contacted: t.contacted(),
            undelivered: t.undelivered(),
            awaiting_escalation: t.awaiting_escalation(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct IncidentView {
    pub incident: Incident,
    /// Every cascade (members and escalations) by state.
    pub counts: StateCounts,
    #[serde(rename = "needsReview")]
    pub needs_review: u64,
    pub progress: Progress,
    /// One page of stakeholders, in the store's stable order.
    pub stakeholders: Vec<StakeholderView>,
    /// Cursor of the next page; `None` on the last.
    pub next: Option<String>,
    /// The trigger's quorum and how far it has got (`None`: it set none).
    pub quorum: Option<QuorumView>,
}

/// A quorum's progress, from the stored counts.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct QuorumView {
    pub required: crate::domain::Quorum,
    /// Members acknowledged, every tier.
    pub acknowledged: u64,
    /// Each tier the quorum names.
    pub by_tier: std::collections::BTreeMap<String, TierQuorum>,
    /// Whether the counts meet it now.
    pub met: bool,
    /// When it was reached (recorded once).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reached_at: Option<Ts>,
    pub stop_on_quorum: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct TierQuorum {
    pub required: u32,
    pub acknowledged: u64,
}

impl QuorumView {
    pub fn of(inc: &Incident, t: &Tally) -> Option<Self> {
        let q = inc.trigger.quorum.as_ref()?;
        let (acknowledged, by_tier) = super::quorum::acknowledged(t);
        Some(QuorumView {
            required: q.clone(),
            acknowledged,
            by_tier: Tier::ALL
                .iter()
                .filter(|tier| q.needs(**tier) > 0)
                .map(|tier| {
                    let tq = TierQuorum {
                        required: q.needs(*tier),
                        acknowledged: by_tier[tier.index()],
                    };
                    (tier.get().to_string(), tq)
                })
                .collect(),
            met: q.met(acknowledged, by_tier),
            reached_at: inc.quorum_reached_at,
            stop_on_quorum: inc.trigger.stop_on_quorum,
        })
    }
}

fn bad_cursor() -> Error {
    Error::invalid("cursor", "not a cursor this API returned")
}

/// A store's cursor as the API hands it out: base64url, so it travels in a
/// query string as it is.
pub fn api_cursor(store: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(store)
}

/// The store's cursor in one the API handed out; 422 (`cursor`) for any
/// other string.
pub fn store_cursor(api: &str) -> Result<String> {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(api)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or_else(bad_cursor)
}

/// A store call with a cursor from the API: the store's refusal of it is
/// the API's 422 for `cursor`.
pub fn cursor_refused(e: Error) -> Error {
    match e {
        Error::Validation(_) => bad_cursor(),
        other => other,
    }
}

/// The incident's counts (from its tally) and one page of its stakeholders.
pub async fn status(deps: &Deps, id: &IncidentId, q: &StatusQuery) -> Result<IncidentView> {
    let incident = deps
        .incidents
        .get_incident(id)
        .await?
        .ok_or_else(|| Error::NotFound(format!("incident {id}")))?;
    let tally = counts(deps, &incident).await?;
    let mut cursor = q.cursor.as_deref().map(store_cursor).transpose()?;
    let limit = q.limit.clamp(1, PAGE_MAX);
    let mut stakeholders = Vec::new();
    let mut scanned = 0;
    let mut next = None;
    loop {
        let want = limit - stakeholders.len();
        let page = deps
            .cascades
            .list_cascades(id, cursor.take(), want)
            .await
            .map_err(cursor_refused)?;
        scanned += page.items.len();
        stakeholders.extend(
            page.items
                .iter()
                .filter(|r| q.filter.admits(r))
                .map(StakeholderView::of),
        );
        match page.next {
            Some(c) if stakeholders.len() < limit && scanned < SCAN_MAX => cursor = Some(c),
            Some(c) => {
                next = Some(api_cursor(&c));
                break;
            }
            None => break,
        }
    }
    let (m, e) = (tally.members(), tally.escalations());
    Ok(IncidentView {
        quorum: QuorumView::of(&incident, &tally),
        incident,
        counts: m.plus(&e),
        needs_review: tally.needs_review(),
        progress: Progress::of(&tally),
        stakeholders,
        next,
    })
}
