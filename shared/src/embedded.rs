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

/// Items [`run_virtual`] runs at most in one call.
pub const VIRTUAL_MAX_ITEMS: usize = 100_000;

/// Runs `agenda` on the virtual `clock` until `end`: each due item in
/// turn, the clock moved to it, the sweep scheduled again every sweep
/// interval as in production; `after` is called after each item with the
/// caller's own item, if it was one, to answer as people and carriers
/// would. Stops when nothing is due by `end` (the clock then at `end`),
/// or fails after [`VIRTUAL_MAX_ITEMS`] items or on the first item that
/// fails. The tests' and tools' virtual-time driver.
pub async fn run_virtual<X: Send + 'static>(
    deps: &Deps,
    agenda: &crate::adapters::memory::Agenda<X>,
    clock: &crate::adapters::memory::VirtualClock,
    end: crate::domain::Ts,
    mut after: impl AsyncFnMut(Option<X>),
) -> Result<()> {
    use crate::ports::Clock;
    for _ in 0..VIRTUAL_MAX_ITEMS {
        let Some((at, item)) = agenda.pop() else {
            if end > clock.now() {
                clock.set(end);
            }
            return Ok(());
        };
        if at > end {
            agenda.push(at, item);
            if end > clock.now() {
                clock.set(end);
            }
            return Ok(());
        }
        if at > clock.now() {
            clock.set(at);
        }
        let external = match run(deps, item).await {
            Ran::Handled(r) => {
                r?;
                None
            }
            Ran::Swept(r) => {
                r?;
                agenda.push(clock.now().plus(deps.policy.sweep_interval), Item::Sweep);
                None
            }
            Ran::External(x) => Some(x),
        };
        after(external).await;
    }
    Err(crate::error::Error::permanent(
        "the agenda did not settle within its bound",
    ))
}
