//! The drill runner: wires the use cases to the memory adapters, a virtual
//! clock and the simulation, then processes the agenda in time order until
//! every cascade has ended (or the scenario's virtual-time bound is reached).

use super::report::{self, ChannelStats, DrillReport, LeftAtEnd};
use super::scenario::Scenario;
use super::sim::{SimEvent, SimWorld};
use crate::adapters::memory::{
    Agenda, Item, LocalSealSigner, MemoryDirectory, MemoryLimiter, MemoryStore, MemoryVault,
    SeededIds, VirtualClock, embedded,
};
use crate::app::{self, ReceiptEvent};
use crate::domain::{Channel, Group, GroupId, Stakeholder, Ts};
use crate::embedded::Ran;
use crate::engine::{AuditKind, Cascade, CascadeStatus, Decision, Event, invariants};
use crate::policy::Policy;
use crate::ports::{Deps, Observer, Sealing, SendOutcomeKind};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// Progress, for a progress bar.
#[derive(Debug, Clone, Copy)]
pub struct Progress {
    pub ended: u64,
    pub cascades: u64,
    pub virtual_secs: u64,
}

/// Live checks and counters over every transition and send.
pub(super) struct DrillObserver {
    policy: Arc<Policy>,
    world: Mutex<Option<Arc<SimWorld>>>,
    pub violations: Mutex<Vec<String>>,
    pub violation_count: AtomicU64,
    pub ended: AtomicU64,
    pub started: AtomicU64,
    /// Per channel (by `Channel::index`): what its attempts did.
    pub channel: Mutex<[ChannelStats; 4]>,
    /// Per channel: each send's wait from ready to offered (ms).
    pub queue_waits: Mutex<[Vec<u64>; 4]>,
    pub stale_jobs: AtomicU64,
    /// Jobs and timers the scenario's faults lost.
    pub lost_jobs: AtomicU64,
    pub lost_timers: AtomicU64,
    /// Items delivered twice at once (`faults.concurrent_deliveries`).
    pub concurrent: AtomicU64,
    pub stale_events: AtomicU64,
}

impl DrillObserver {
    fn violation(&self, v: String) {
        self.violation_count.fetch_add(1, Ordering::Relaxed);
        let mut g = self.violations.lock().unwrap_or_else(|e| e.into_inner());
        if g.len() < 50 {
            g.push(v);
        }
    }
}

impl Observer for DrillObserver {
    fn transition(&self, before: &Cascade, event: &Event, d: &Decision) {
        for v in invariants::check_transition(before, event, d, &self.policy) {
            self.violation(format!("{}: {v}", before.key));
        }
        if before.status == CascadeStatus::Pending && d.next.status != CascadeStatus::Pending {
            self.started.fetch_add(1, Ordering::Relaxed);
        }
        if !before.status.is_terminal() && d.next.status.is_terminal() {
            self.ended.fetch_add(1, Ordering::Relaxed);
            if let Some(w) = self
                .world
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .as_ref()
            {
                w.ended
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(before.key.clone());
            }
        }
        let a = &d.audit;
        let kind = if matches!(a.kind, AuditKind::CascadeFailure | AuditKind::Redriven) {
            a.cause.unwrap_or(a.kind)
        } else {
            a.kind
        };
        if kind == AuditKind::StaleIgnored {
            self.stale_events.fetch_add(1, Ordering::Relaxed);
        }
        let Some(ch) = a.channel else { return };
        let mut g = self.channel.lock().unwrap_or_else(|e| e.into_inner());
        let stats = &mut g[ch.index()];
        match kind {
            AuditKind::Delivered => stats.delivered += 1,
            AuditKind::ChannelFailed | AuditKind::ChannelUnreachable => stats.failed += 1,
            AuditKind::ChannelTimeout => stats.timeouts += 1,
            AuditKind::Throttled => stats.throttled += 1,
            AuditKind::Acknowledged => stats.acknowledged += 1,
            _ => {}
        }
    }

    fn send(
        &self,
        channel: Channel,
        _severity: crate::domain::Severity,
        _outcome: SendOutcomeKind,
    ) {
        self.channel.lock().unwrap_or_else(|e| e.into_inner())[channel.index()].attempts += 1;
    }

    fn offered(&self, channel: Channel, waited: crate::domain::Millis) {
        self.queue_waits.lock().unwrap_or_else(|e| e.into_inner())[channel.index()].push(waited);
    }

    fn stale_job(&self) {
        self.stale_jobs.fetch_add(1, Ordering::Relaxed);
    }
}

/// A prepared drill; `run` it, then read the store for exports.
pub struct Drill {
    pub scenario: Scenario,
    pub seed: u64,
    pub store: Arc<MemoryStore>,
    clock: Arc<VirtualClock>,
    agenda: Arc<Agenda<SimEvent>>,
    world: Arc<SimWorld>,
    limiter: Arc<MemoryLimiter>,
    observer: Arc<DrillObserver>,
    deps: Deps,
    /// The dependencies early receipts are applied with (the world holds
    /// them weakly: no cycle through the senders).
    _receipts: Arc<Deps>,
}

impl Drill {
    pub fn new(scenario: Scenario, seed: u64) -> Drill {
        let policy = Arc::new(scenario.policy.clone());
        let clock = VirtualClock::new(scenario.start);
        let agenda: Arc<Agenda<SimEvent>> = Agenda::new(clock.clone());
        let store = Arc::new(MemoryStore::new());
        let people: Vec<Stakeholder> = scenario
            .people
            .iter()
            .map(|p| Stakeholder {
                id: p.id.clone(),
                name: p.name.clone(),
                tier: p.tier,
                contacts: p.contacts.clone(),
                preferences: p.preferences.clone(),
                manager: p.manager.clone(),
                locale: p.locale.clone(),
                quiet: p.quiet.clone(),
                idp: None,
                active: true,
            })
            .collect();
        let group = Group {
            id: GroupId::clone(&scenario.trigger.stakeholder_group_id),
            name: scenario.group_name.clone(),
            members: scenario.members.clone(),
            on_call_manager: scenario.on_call_manager.clone(),
            escalation_channels: Vec::new(),
            idp: None,
        };
        let mut groups = vec![group];
        for more in scenario.more.iter().filter(|m| m.own_group) {
            let id = &more.trigger.stakeholder_group_id;
            if groups.iter().any(|g| &g.id == id) {
                continue;
            }
            groups.push(Group {
                id: GroupId::clone(id),
                name: id.to_string(),
                members: more.members.clone(),
                on_call_manager: scenario.on_call_manager.clone(),
                escalation_channels: Vec::new(),
                idp: None,
            });
        }
        let directory = Arc::new(MemoryDirectory::new(groups, people));
        let world = SimWorld::new(
            &scenario,
            seed ^ 0x005e_ed0f_5eed,
            agenda.clone(),
            clock.clone(),
        );
        let limiter = Arc::new(MemoryLimiter::new(policy.clone()));
        let observer = Arc::new(DrillObserver {
            policy: policy.clone(),
            world: Mutex::new(Some(world.clone())),
            violations: Mutex::new(Vec::new()),
            violation_count: AtomicU64::new(0),
            ended: AtomicU64::new(0),
            started: AtomicU64::new(0),
            channel: Mutex::new(Default::default()),
            queue_waits: Mutex::new(Default::default()),
            stale_jobs: AtomicU64::new(0),
            lost_jobs: AtomicU64::new(0),
            lost_timers: AtomicU64::new(0),
            concurrent: AtomicU64::new(0),
            stale_events: AtomicU64::new(0),
        });
        let deps = Deps {
            limiter: limiter.clone(),
            observer: observer.clone(),
            contacts: world.contact_source(),
            vault: Some(Arc::new(MemoryVault::new(seed))),
            sealing: Some(Sealing {
                signer: Arc::new(LocalSealSigner::new(seed)),
                store: store.clone(),
            }),
            ..embedded(
                policy,
                &agenda,
                store.clone(),
                directory.clone(),
                world.senders(),
                clock.clone(),
                Arc::new(SeededIds::new(seed)),
            )
        };
        // Concurrent writers: every cascade-store call yields, so two
        // workers handling one item interleave (drill::interleave).
        let deps = if scenario.faults.concurrent_deliveries > 0.0 {
            Deps {
                cascades: Arc::new(super::interleave::Interleaved(store.clone())),
                numbers: Arc::new(super::interleave::Interleaved(store.clone())),
                ..deps
            }
        } else {
            deps
        };
        // Early receipts are applied from inside a send (drill::sim).
        let receipts = Arc::new(deps.clone());
        let _ = world.receipts.set(Arc::downgrade(&receipts));
        Drill {
            _receipts: receipts,
            scenario,
            seed,
            store,
            clock,
            agenda,
            world,
            limiter,
            observer,
            deps,
        }
    }

    /// Runs the drill to the end; `progress` is called now and then.
    pub fn run(&mut self, progress: &mut dyn FnMut(Progress)) -> DrillReport {
        futures::executor::block_on(self.run_async(progress))
    }

    async fn run_async(&mut self, progress: &mut dyn FnMut(Progress)) -> DrillReport {
        let wall = Instant::now();
        let deps = self.deps.clone();
        let start = self.clock_now();
        let mut errors: Vec<String> = Vec::new();
        let note_err = |e: crate::Error, errors: &mut Vec<String>| {
            if errors.len() < 20 {
                errors.push(e.to_string());
            }
        };
        let trigger = self.scenario.trigger.clone();
        if let Err(e) = app::trigger(&deps, trigger).await {
            note_err(e, &mut errors);
        }
        self.agenda
            .push(start.plus(deps.policy.sweep_interval), Item::Sweep);
        let first = self.scenario.trigger.incident_id.clone();
        if let Some(after) = self.scenario.close_after {
            self.agenda.push(
                start.plus(after),
                Item::External(SimEvent::CloseIncident(first)),
            );
            if let Some(m) = &self.scenario.all_clear {
                self.agenda.push(
                    start.plus(after),
                    Item::External(SimEvent::AllClear(m.clone())),
                );
            }
        }
        for (i, u) in self.scenario.updates.iter().enumerate() {
            self.agenda
                .push(start.plus(u.after), Item::External(SimEvent::Update(i)));
        }
        for (i, more) in self.scenario.more.iter().enumerate() {
            let at = start.plus(more.at);
            self.agenda.push(at, Item::External(SimEvent::Trigger(i)));
            if let Some(after) = more.close_after {
                let id = more.trigger.incident_id.clone();
                self.agenda
                    .push(at.plus(after), Item::External(SimEvent::CloseIncident(id)));
            }
        }
        for after in &self.scenario.faults.retriggers {
            self.agenda
                .push(start.plus(*after), Item::External(SimEvent::Retrigger));
        }
        // Lost jobs and timers are drawn apart from the world's generator,
        // so a scenario without them keeps its runs.
        let faults = self.scenario.faults.clone();
        let mut lose = ChaCha8Rng::seed_from_u64(self.seed ^ 0x6c6f_7374_6a6f_6273);
        let mut lost = |share: f64| share > 0.0 && lose.random::<f64>() < share;
        // Concurrent deliveries are drawn apart again.
        let mut race = ChaCha8Rng::seed_from_u64(self.seed ^ 0x7261_6365_7261_6365);
        let mut twice = |share: f64| share > 0.0 && race.random::<f64>() < share;
        let deadline = start.plus(self.scenario.max_virtual);
        let cascades = self.scenario.member_cascades();
        let mut steps: u64 = 0;
        let mut timed_out = false;
        let mut left = LeftAtEnd::default();
        while let Some((at, item)) = self.agenda.pop() {
            if at > deadline {
                // Past the drill's window. Only people acting late (their
                // acknowledgements, their carriers' receipts) left over is
                // the end of the drill; a job or timer left is a timeout.
                let (work, acks, receipts) = match &item {
                    Item::Job(_) | Item::Timer(_) => (1, 0, 0),
                    Item::External(SimEvent::Ack { .. }) => (0, 1, 0),
                    Item::External(SimEvent::Receipt { .. }) => (0, 0, 1),
                    _ => (0, 0, 0),
                };
                let count = |f: fn(&SimEvent) -> bool| self.agenda.count_external(f) as u64;
                left = LeftAtEnd {
                    work: work + self.agenda.queued_work() as u64,
                    acks: acks + count(|x| matches!(x, SimEvent::Ack { .. })),
                    receipts: receipts + count(|x| matches!(x, SimEvent::Receipt { .. })),
                };
                // Judged by the cascades: leftover timers of ended cascades
                // are no timeout.
                timed_out = left.work > 0
                    && self
                        .store
                        .with_cascades(|all| all.iter().any(|c| !c.cascade.status.is_terminal()));
                break;
            }
            self.clock.set(at);
            let r = match item {
                Item::Job(_) if lost(faults.lost_jobs) => {
                    self.observer.lost_jobs.fetch_add(1, Ordering::Relaxed);
                    Ok(())
                }
                Item::Timer(_) if lost(faults.lost_timers) => {
                    self.observer.lost_timers.fetch_add(1, Ordering::Relaxed);
                    Ok(())
                }
                Item::Sweep => self.apply(&deps, at, Item::Sweep).await,
                item if twice(faults.concurrent_deliveries) => {
                    // Delivered to two workers at once (see drill::interleave).
                    self.observer.concurrent.fetch_add(1, Ordering::Relaxed);
                    let (a, b) = futures::future::join(
                        self.apply(&deps, at, item.clone()),
                        self.apply(&deps, at, item),
                    )
                    .await;
                    a.and(b)
                }
                item => self.apply(&deps, at, item).await,
            };
            if let Err(e) = r {
                note_err(e, &mut errors);
            }
            steps += 1;
            if steps.is_multiple_of(4096) {
                progress(Progress {
                    ended: self.observer.ended.load(Ordering::Relaxed),
                    cascades,
                    virtual_secs: at.since(start) / 1000,
                });
            }
        }
        for id in self.incident_ids() {
            if let Err(e) = app::seal(&deps, id).await {
                note_err(e, &mut errors);
            }
        }
        for e in std::mem::take(
            &mut *self
                .world
                .early_errors
                .lock()
                .unwrap_or_else(|e| e.into_inner()),
        ) {
            if errors.len() < 20 {
                errors.push(e);
            }
        }
        let end = self.clock_now();
        progress(Progress {
            ended: self.observer.ended.load(Ordering::Relaxed),
            cascades,
            virtual_secs: end.since(start) / 1000,
        });
        let mut r = report::build(self, start, end, wall, errors, timed_out, steps);
        r.left_at_end = left;
        r.lost_jobs = self.observer.lost_jobs.load(Ordering::Relaxed);
        r.lost_timers = self.observer.lost_timers.load(Ordering::Relaxed);
        r.concurrent_deliveries = self.observer.concurrent.load(Ordering::Relaxed);
        r.early_receipts_held = self.world.held.load(Ordering::Relaxed);
        r
    }

    /// Runs one due item through the embedded driver and applies what comes
    /// back to the drill (its own events; the next sweep).
    async fn apply(&self, deps: &Deps, at: Ts, item: Item<SimEvent>) -> crate::Result<()> {
        match crate::embedded::run(deps, item).await {
            Ran::Handled(r) => r,
            Ran::Swept(r) => {
                let r = r.map(|_| ());
                // The sweep runs on a schedule in production, whatever
                // else is queued: here while anything is queued or a
                // cascade still has something due (its job or timer
                // may have been lost).
                let due = deps
                    .cascades
                    .overdue(Ts(u64::MAX / 4), None, 1)
                    .await
                    .map(|p| !p.items.is_empty())
                    .unwrap_or(true);
                let mut expanding = false;
                for id in self.incident_ids() {
                    expanding |= deps
                        .incidents
                        .get_incident(id)
                        .await
                        .ok()
                        .flatten()
                        .is_some_and(|i| {
                            i.status == crate::domain::IncidentStatus::Open
                                && i.expanded < i.cascades
                        });
                }
                if self.agenda.pending_work() > 0 || due || expanding {
                    self.agenda
                        .push(at.plus(deps.policy.sweep_interval), Item::Sweep);
                }
                r
            }
            Ran::External(SimEvent::Receipt {
                provider_message_id,
                status,
            }) => app::receipt(
                deps,
                ReceiptEvent::Delivery {
                    provider_message_id,
                    status,
                },
            )
            .await
            .map(|_| ()),
            Ran::External(SimEvent::Ack {
                key,
                channel,
                attempt,
                response,
            }) => {
                let event = match response {
                    Some(response) => ReceiptEvent::Respond {
                        key,
                        channel,
                        attempt: Some(attempt),
                        response,
                    },
                    None => ReceiptEvent::Ack {
                        key,
                        channel,
                        attempt: Some(attempt),
                    },
                };
                app::receipt(deps, event).await.map(|_| ())
            }
            Ran::External(SimEvent::CloseIncident(id)) => app::close(deps, &id).await.map(|_| ()),
            Ran::External(SimEvent::AllClear(m)) => {
                let id = &self.scenario.trigger.incident_id;
                app::update::all_clear(deps, id, m).await.map(|_| ())
            }
            Ran::External(SimEvent::Update(i)) => match self.scenario.updates.get(i) {
                Some(u) => {
                    let id = &self.scenario.trigger.incident_id;
                    app::update::post(deps, id, u.message.clone(), u.audience)
                        .await
                        .map(|_| ())
                }
                None => Ok(()),
            },
            Ran::External(SimEvent::Trigger(i)) => match self.scenario.more.get(i) {
                Some(more) => app::trigger(deps, more.trigger.clone()).await.map(|_| ()),
                None => Ok(()),
            },
            Ran::External(SimEvent::InboundSms { from, body }) => {
                app::receipt(deps, ReceiptEvent::InboundSms { from, body })
                    .await
                    .map(|_| ())
            }
            Ran::External(SimEvent::Retrigger) => app::trigger(deps, self.scenario.trigger.clone())
                .await
                .map(|_| ()),
        }
    }

    /// Every incident of the scenario, the first first.
    pub fn incident_ids(&self) -> impl Iterator<Item = &crate::domain::IncidentId> {
        std::iter::once(&self.scenario.trigger.incident_id)
            .chain(self.scenario.more.iter().map(|m| &m.trigger.incident_id))
    }

    /// The drill's dependencies (for serving its state over the API in tests).
    pub fn deps(&self) -> Deps {
        self.deps.clone()
    }

    fn clock_now(&self) -> Ts {
        use crate::ports::Clock;
        self.clock.now()
    }

    pub(super) fn parts(&self) -> (&Arc<SimWorld>, &Arc<MemoryLimiter>, &Arc<DrillObserver>) {
        (&self.world, &self.limiter, &self.observer)
    }
}

/// Loads nothing, runs everything: a drill of `scenario` with `seed`.
pub fn run(scenario: Scenario, seed: u64) -> (Drill, DrillReport) {
    let mut d = Drill::new(scenario, seed);
    let r = d.run(&mut |_| {});
    (d, r)
}
