//! The embedded default: every port in memory, for drills, tests and
//! `muster serve`. Semantics match the AWS adapters where it matters: writes
//! are conditional (a stale version is `Error::Conflict`), the work queue and
//! timers deliver at their due time on a virtual or real clock, and nothing
//! is lost while the process lives.

mod agenda;
mod directory;
mod ids;
mod limiter;
mod store;
mod vault;

pub use agenda::{Agenda, Item, MemoryQueue, MemoryTimers, SystemClock, VirtualClock};
pub use directory::MemoryDirectory;
pub use ids::SeededIds;
pub use limiter::MemoryLimiter;
pub use store::MemoryStore;
pub use vault::{LocalSealer, MemoryVault};

use std::sync::{Mutex, MutexGuard};

/// Locks, recovering from poisoning: the data is left consistent by every
/// critical section, which never panics midway.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
