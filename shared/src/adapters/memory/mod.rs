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
pub use vault::{
    LocalSealSigner, MemoryVault, contact_ciphertext, decrypt_contact, encrypt_contact,
};

use std::sync::{Mutex, MutexGuard};

/// Locks, recovering from poisoning: the data is left consistent by every
/// critical section, which never panics midway.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The embedded runtime's dependencies: state, directory, queue and timers
/// in memory, on `agenda`'s clock. The optional capabilities that need no
/// key material (the number index and directory writes) are on; the rest
/// (`contacts`, `ack_links`, `vault`, `sealing`) are off: callers add them
/// with struct update syntax (`Deps { vault: Some(..), ..embedded(..) }`).
pub fn embedded<X: Send + 'static>(
    policy: std::sync::Arc<crate::policy::Policy>,
    agenda: &std::sync::Arc<Agenda<X>>,
    store: std::sync::Arc<MemoryStore>,
    directory: std::sync::Arc<MemoryDirectory>,
    senders: crate::ports::Senders,
    clock: std::sync::Arc<dyn crate::ports::Clock>,
    ids: std::sync::Arc<dyn crate::ports::IdGen>,
) -> crate::ports::Deps {
    use std::sync::Arc;
    crate::ports::Deps {
        limiter: Arc::new(MemoryLimiter::new(policy.clone())),
        policy,
        incidents: store.clone(),
        cascades: store.clone(),
        directory: directory.clone(),
        queue: Arc::new(MemoryQueue(agenda.clone())),
        timers: Arc::new(MemoryTimers(agenda.clone())),
        senders,
        clock,
        ids,
        observer: Arc::new(crate::ports::NoObserver),
        contacts: None,
        ack_links: None,
        vault: None,
        sealing: None,
        numbers: store.clone(),
        admin: directory,
        ledger: store,
        notes: None,
        siem: Vec::new(),
    }
}
