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
