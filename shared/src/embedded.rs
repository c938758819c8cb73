//! The embedded runtime's one driver: an agenda item to its use case, as
//! the Lambda functions map their events (a job to `dispatch`, a timer to
//! `tick`, the schedule to `sweep`). Drills, `muster serve` and the tests
//! run their agendas through it; what they schedule of their own (a
//! simulated receipt, a console carrier's delivery) comes back to them.

use crate::adapters::memory::Item;
use crate::app::{self, SweepReport};
use crate::error::Result;
use crate::ports::Deps;

/// What running one item did.
#[derive(Debug)]
pub enum Ran<X> {
    /// A job or a timer, handled by its use case.
    Handled(Result<()>),
    /// The reconciliation sweep ran; scheduling the next one is the
    /// caller's (production runs it every minute; a drill while work is
    /// left).
    Swept(Result<SweepReport>),
    /// The caller's own item, for it to apply.
    External(X),
}

/// Runs one due item.
pub async fn run<X>(deps: &Deps, item: Item<X>) -> Ran<X> {
    match item {
        Item::Job(job) => Ran::Handled(app::dispatch(deps, job).await),
        Item::Timer(t) => Ran::Handled(app::tick(deps, t).await),
        Item::Sweep => Ran::Swept(app::sweep(deps, None).await),
        Item::External(x) => Ran::External(x),
    }
}

/// Lines the SIEM forwarder takes from the store per call.
pub const FORWARD_BATCH: usize = 2_000;

/// Queues for the SIEM receivers what `store` wrote from position `cursor`
/// of its log ([`MemoryStore::written_since`]), at most [`FORWARD_BATCH`]
/// lines; returns the position to go on from (`cursor` again when nothing
/// could be queued, so that nothing is skipped). The embedded runtime's
/// counterpart of the audit table's stream on AWS.
///
/// [`MemoryStore::written_since`]: crate::adapters::memory::MemoryStore::written_since
pub async fn forward_written(
    deps: &Deps,
    store: &crate::adapters::memory::MemoryStore,
    cursor: usize,
) -> usize {
    let (lines, next) = store.written_since(cursor, FORWARD_BATCH);
    if lines.is_empty() {
        return next;
    }
    match app::export::queue(deps, lines).await {
        Ok(()) => next,
        Err(e) => {
            tracing::error!(error = %e, "audit lines not queued for the SIEM; trying again");
            cursor
        }
    }
}
