//! The agenda: one time-ordered list of everything due (queued jobs, armed
//! timers, the periodic sweep, and whatever a simulation schedules), on a
//! clock, kept in a binary heap. At one instant, priority jobs (escalations,
//! `Job::is_priority`) come first; other ties are broken by insertion order,
//! so a run is deterministic.

use super::lock;
use crate::domain::{Millis, Ts};
use crate::error::Result;
use crate::ports::{Clock, Job, TimerMsg, Timers, WorkQueue};
use async_trait::async_trait;
use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering as AtomicOrdering};
use std::sync::{Condvar, Mutex};

#[derive(Debug, Clone)]
pub enum Item<X> {
    Job(Job),
    Timer(TimerMsg),
    Sweep,
    /// Something a simulation scheduled (a receipt, an acknowledgement).
    External(X),
}

struct Entry<X> {
    at: Ts,
    /// 0: the priority lane; 1: everything else.
    lane: u8,
    seq: u64,
    item: Item<X>,
}

impl<X> PartialEq for Entry<X> {
    fn eq(&self, o: &Self) -> bool {
        (self.at, self.lane, self.seq) == (o.at, o.lane, o.seq)
    }
}
impl<X> Eq for Entry<X> {}
impl<X> PartialOrd for Entry<X> {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl<X> Ord for Entry<X> {
    fn cmp(&self, o: &Self) -> Ordering {
        (o.at, o.lane, o.seq).cmp(&(self.at, self.lane, self.seq))
    }
}

struct Inner<X> {
    heap: BinaryHeap<Entry<X>>,
    seq: u64,
    jobs: u64,
    external: u64,
}

pub struct Agenda<X> {
    inner: Mutex<Inner<X>>,
    clock: Arc<dyn Clock>,
    /// Signalled on every push, so a real-time waiter re-checks the earliest due time.
    pushed: Condvar,
}

impl<X: Send + 'static> Agenda<X> {
    pub fn new(clock: Arc<dyn Clock>) -> Arc<Self> {
        Arc::new(Agenda {
            inner: Mutex::new(Inner {
                heap: BinaryHeap::new(),
                seq: 0,
                jobs: 0,
                external: 0,
            }),
            clock,
            pushed: Condvar::new(),
        })
    }

    pub fn push(&self, at: Ts, item: Item<X>) {
        let mut g = lock(&self.inner);
        g.seq += 1;
        let seq = g.seq;
        let lane = match &item {
            Item::Job(job) if job.is_priority() => 0,
            _ => 1,
        };
        match item {
            Item::Job(_) => g.jobs += 1,
            Item::External(_) => g.external += 1,
            _ => {}
        }
        g.heap.push(Entry {
            at,
            lane,
            seq,
            item,
        });
        drop(g);
        self.pushed.notify_all();
    }

    /// Real-time delivery: blocks until the earliest item is due on the
    /// agenda's clock (a wall clock) and returns it, or returns `None` once
    /// `deadline` passes first. Wakes early when something is pushed.
    pub fn wait_due(&self, deadline: std::time::Instant) -> Option<(Ts, Item<X>)> {
        let mut g = lock(&self.inner);
        loop {
            let now = self.clock.now();
            let wait = match g.heap.peek() {
                Some(e) if e.at <= now => {
                    let e = g.heap.pop()?;
                    match e.item {
                        Item::Job(_) => g.jobs -= 1,
                        Item::External(_) => g.external -= 1,
                        _ => {}
                    }
                    return Some((e.at, e.item));
                }
                Some(e) => std::time::Duration::from_millis(e.at.since(now)),
                None => std::time::Duration::from_secs(3600),
            };
            let left = deadline.checked_duration_since(std::time::Instant::now())?;
            g = self
                .pushed
                .wait_timeout(g, wait.min(left))
                .map(|(g, _)| g)
                .unwrap_or_else(|e| e.into_inner().0);
        }
    }

    pub fn push_after(&self, delay: Millis, item: Item<X>) {
        let at = self.clock.now().plus(delay);
        self.push(at, item);
    }

    /// Removes and returns the earliest item, whatever its time.
    pub fn pop(&self) -> Option<(Ts, Item<X>)> {
        let mut g = lock(&self.inner);
        let e = g.heap.pop()?;
        match e.item {
            Item::Job(_) => g.jobs -= 1,
            Item::External(_) => g.external -= 1,
            _ => {}
        }
        Some((e.at, e.item))
    }

    /// Removes and returns the earliest item if it is due at `now`.
    pub fn pop_due(&self, now: Ts) -> Option<(Ts, Item<X>)> {
        {
            let g = lock(&self.inner);
            if g.heap.peek().is_none_or(|e| e.at > now) {
                return None;
            }
        }
        self.pop()
    }

    pub fn next_at(&self) -> Option<Ts> {
        lock(&self.inner).heap.peek().map(|e| e.at)
    }

    pub fn len(&self) -> usize {
        lock(&self.inner).heap.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Items other than the sweep: jobs, timers and external events.
    pub fn pending_work(&self) -> usize {
        let g = lock(&self.inner);
        g.heap.len()
            - g.heap
                .iter()
                .filter(|e| matches!(e.item, Item::Sweep))
                .count()
    }

    /// Jobs and timers on the agenda (what the system itself still has to
    /// do, as against the sweep and what a simulation scheduled).
    pub fn queued_work(&self) -> usize {
        let g = lock(&self.inner);
        g.heap
            .iter()
            .filter(|e| matches!(e.item, Item::Job(_) | Item::Timer(_)))
            .count()
    }

    pub fn jobs(&self) -> u64 {
        lock(&self.inner).jobs
    }

    /// External events on the agenda that `f` picks.
    pub fn count_external(&self, f: impl Fn(&X) -> bool) -> usize {
        let g = lock(&self.inner);
        g.heap
            .iter()
            .filter(|e| matches!(&e.item, Item::External(x) if f(x)))
            .count()
    }
}

/// The work queue on the agenda.
pub struct MemoryQueue<X>(pub Arc<Agenda<X>>);

#[async_trait]
impl<X: Send + 'static> WorkQueue for MemoryQueue<X> {
    async fn enqueue(&self, jobs: Vec<(Job, Millis)>) -> Result<()> {
        for (job, delay) in jobs {
            self.0.push_after(delay, Item::Job(job));
        }
        Ok(())
    }
    async fn backlog(&self) -> Result<u64> {
        Ok(self.0.jobs())
    }
}

/// Timers on the agenda (one binary heap of due items, jobs and timers alike).
pub struct MemoryTimers<X>(pub Arc<Agenda<X>>);

#[async_trait]
impl<X: Send + 'static> Timers for MemoryTimers<X> {
    async fn arm(&self, timers: Vec<TimerMsg>) -> Result<()> {
        for t in timers {
            self.0.push(t.at, Item::Timer(t));
        }
        Ok(())
    }
}

/// A clock that moves only when told: an hour of cascade in milliseconds.
#[derive(Debug, Default)]
pub struct VirtualClock(AtomicU64);

impl VirtualClock {
    pub fn new(start: Ts) -> Arc<Self> {
        Arc::new(VirtualClock(AtomicU64::new(start.0)))
    }
    /// Moves the clock to `t` (never backwards).
    pub fn set(&self, t: Ts) {
        self.0.fetch_max(t.0, AtomicOrdering::SeqCst);
    }
    pub fn advance(&self, ms: Millis) {
        self.0.fetch_add(ms, AtomicOrdering::SeqCst);
    }
}

impl Clock for VirtualClock {
    fn now(&self) -> Ts {
        Ts(self.0.load(AtomicOrdering::SeqCst))
    }
}

/// Wall-clock time.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Ts {
        Ts::from_system(std::time::SystemTime::now())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    fn timer(_at: Ts) -> Item<()> {
        Item::Sweep
    }

    #[test]
    fn virtual_time_delivers_in_time_order_then_insertion_order() {
        let clock = VirtualClock::new(Ts(1_000));
        let a: Arc<Agenda<u32>> = Agenda::new(clock.clone());
        a.push(Ts(3_000), Item::External(3));
        a.push(Ts(2_000), Item::External(1));
        a.push(Ts(2_000), Item::External(2));
        let order: Vec<_> = std::iter::from_fn(|| a.pop())
            .map(|(t, i)| (t.0, matches!(i, Item::External(n) if n > 0)))
            .collect();
        assert_eq!(order, [(2_000, true), (2_000, true), (3_000, true)]);
        a.push(Ts(5_000), Item::External(9));
        assert!(a.pop_due(Ts(4_999)).is_none());
        assert!(a.pop_due(Ts(5_000)).is_some());
    }

    #[test]
    fn real_clock_waits_until_due_and_wakes_on_push() {
        let a: Arc<Agenda<()>> = Agenda::new(Arc::new(SystemClock));
        let start = Instant::now();
        let due = SystemClock.now().plus(30);
        a.push(due, timer(due));
        let got = a.wait_due(start + Duration::from_secs(5));
        assert!(got.is_some());
        assert!(SystemClock.now() >= due, "delivered before it was due");
        // Nothing pending: gives up at the deadline.
        assert!(
            a.wait_due(Instant::now() + Duration::from_millis(20))
                .is_none()
        );
        // A push from another thread wakes a waiter that had nothing to wait for.
        let waiter = {
            let a = a.clone();
            std::thread::spawn(move || {
                a.wait_due(Instant::now() + Duration::from_secs(5))
                    .is_some()
            })
        };
        let now = SystemClock.now();
        a.push(now, timer(now));
        assert!(waiter.join().unwrap_or(false));
    }
}
