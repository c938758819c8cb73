//! Simulated carriers and people. Each carrier has a latency distribution,
//! failure rates, a hidden capacity above which it answers 429 with
//! Retry-After, and receipts that may be late or never come. Each person
//! acknowledges a delivered message with a per-channel chance after a delay
//! drawn from their behaviour, or never. All draws come from one seeded
//! generator consumed in event order, so a seed gives one exact run.

use super::scenario::{CarrierSpec, ContactSourceSpec, Dist, Scenario};
use crate::adapters::memory::{Agenda, Item};
use crate::domain::{Channel, ContactMethods, Millis, StakeholderId, Ts};
use crate::drill::carrier::CarrierBucket;
use crate::engine::{CascadeKey, ReceiptStatus};
use crate::ports::{
    Accepted, ChannelSender, Clock, ContactLookup, LookupError, OutboundMessage, SendError,
};
use async_trait::async_trait;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, LogNormal};
use rustc_hash::{FxHashMap as HashMap, FxHashSet as HashSet};
use std::sync::{Arc, Mutex};

/// What the simulation schedules on the agenda.
#[derive(Debug, Clone)]
pub enum SimEvent {
    Receipt {
        provider_message_id: String,
        status: ReceiptStatus,
    },
    Ack {
        key: CascadeKey,
        channel: Channel,
        attempt: u32,
        /// One of the incident's own answers (its key); none: acknowledge.
        response: Option<String>,
    },
    CloseIncident(crate::domain::IncidentId),
    /// The operator posts the scenario's update `n` (`Scenario::updates`).
    Update(usize),
    /// The operator sends the scenario's all-clear with the close.
    AllClear(crate::domain::MessageTemplate),
    /// The monitoring system sends the scenario's trigger again.
    Retrigger,
    /// One of the scenario's further incidents (`Scenario::more`) begins.
    Trigger(usize),
    /// A text message from a person's phone (a reply, or STOP).
    InboundSms {
        from: crate::domain::PhoneNumber,
        body: String,
    },
}

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct CarrierCounters {
    pub offered: u64,
    pub accepted: u64,
    pub throttled_429: u64,
    pub transient: u64,
    pub failed: u64,
    pub peak_per_sec: u64,
    /// First and last accepted send, for throughput.
    pub first_at: Option<Ts>,
    pub last_at: Option<Ts>,
    /// Every accepted send, in time order.
    #[serde(skip)]
    pub accepted_at: Vec<Ts>,
    /// Sends for a cascade already acknowledged or cancelled.
    pub after_end: u64,
    /// Sends of an attempt the carrier had already taken once (the person
    /// told the same thing twice).
    pub twice: u64,
    sec: u64,
    in_sec: u64,
}

struct Carrier {
    spec: CarrierSpec,
    bucket: Option<CarrierBucket>,
    counters: CarrierCounters,
    next_id: u64,
    /// Steps of `spec.capacity_schedule` already applied.
    schedule_done: usize,
    /// Attempts (a hash of cascade and attempt) the carrier took.
    taken: HashSet<u64>,
}

struct Person {
    behaviour: usize,
    never: bool,
    /// Cascades (member and escalations) whose message the person will
    /// answer: one answer per cascade.
    answering: HashSet<CascadeKey>,
    /// Where the person really is; other addresses are dead.
    current: ContactMethods,
}

struct State {
    rng: ChaCha8Rng,
    carriers: Vec<Carrier>,
    people: HashMap<StakeholderId, Person>,
}

pub struct SimWorld {
    state: Mutex<State>,
    behaviours: Vec<super::scenario::Behaviour>,
    agenda: Arc<Agenda<SimEvent>>,
    clock: Arc<crate::adapters::memory::VirtualClock>,
    receipt_timeout: Millis,
    source: Option<ContactSourceSpec>,
    /// The drill's start, for the carriers' schedules.
    start: Ts,
    duplicate_acks: f64,
    sms_text_replies: f64,
    sms_stop: f64,
    /// Cascades that reached a terminal state (kept by the drill's observer).
    pub ended: Mutex<HashSet<CascadeKey>>,
    /// Receipts sent before the answer to the send that is in flight.
    early: Mutex<Vec<SimEvent>>,
    /// Where early receipts go (the drill's dependencies, set once built).
    pub(super) receipts: std::sync::OnceLock<std::sync::Weak<crate::ports::Deps>>,
    /// Early receipts that came before their message was recorded.
    pub held: std::sync::atomic::AtomicU64,
    /// Errors the receipt use case returned for early receipts.
    pub early_errors: Mutex<Vec<String>>,
}

fn lognormal(d: Dist) -> Option<LogNormal<f64>> {
    let mu = (d.median.max(1) as f64).ln();
    let sigma = ((d.p95.max(1) as f64).ln() - mu).max(0.0) / 1.644_853_6;
    LogNormal::new(mu, sigma).ok()
}

fn draw(rng: &mut ChaCha8Rng, d: Dist) -> Millis {
    match lognormal(d) {
        Some(ln) => ln.sample(rng).round().clamp(1.0, 30.0 * 86_400_000.0) as Millis,
        None => d.median,
    }
}

impl SimWorld {
    pub fn new(
        scenario: &Scenario,
        seed: u64,
        agenda: Arc<Agenda<SimEvent>>,
        clock: Arc<crate::adapters::memory::VirtualClock>,
    ) -> Arc<Self> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let now = clock.now();
        let carriers = scenario
            .carriers
            .iter()
            .map(|spec| Carrier {
                bucket: spec
                    .capacity_per_sec
                    .map(|c| CarrierBucket::new(c, spec.burst, spec.retry_after, now)),
                spec: spec.clone(),
                counters: CarrierCounters::default(),
                next_id: 0,
                schedule_done: 0,
                taken: HashSet::default(),
            })
            .collect();
        let people = scenario
            .people
            .iter()
            .map(|p| {
                let never = rng.random::<f64>() < scenario.behaviours[p.behaviour].never;
                (
                    p.id.clone(),
                    Person {
                        behaviour: p.behaviour,
                        never,
                        answering: HashSet::default(),
                        current: p.current.clone(),
                    },
                )
            })
            .collect::<HashMap<_, _>>();
        Arc::new(SimWorld {
            state: Mutex::new(State {
                rng,
                carriers,
                people,
            }),
            behaviours: scenario.behaviours.clone(),
            agenda,
            clock,
            receipt_timeout: scenario.policy.receipt_timeout,
            source: scenario.contact_source,
            start: now,
            duplicate_acks: scenario.faults.duplicate_acks,
            sms_text_replies: scenario.faults.sms_text_replies,
            sms_stop: scenario.faults.sms_stop,
            ended: Mutex::new(HashSet::default()),
            early: Mutex::new(Vec::new()),
            receipts: std::sync::OnceLock::new(),
            held: std::sync::atomic::AtomicU64::new(0),
            early_errors: Mutex::new(Vec::new()),
        })
    }

    /// The simulated HRIS, if the scenario has one.
    pub fn contact_source(self: &Arc<Self>) -> Option<Arc<dyn ContactLookup>> {
        self.source.map(|spec| {
            Arc::new(SimContactSource {
                world: self.clone(),
                spec,
            }) as Arc<dyn ContactLookup>
        })
    }

    fn lookup(
        &self,
        spec: ContactSourceSpec,
        id: &StakeholderId,
    ) -> Result<Option<ContactMethods>, LookupError> {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(latency) = spec.latency {
            // The lookup takes its time: the expansion waiting on it (one
            // of `in_flight` side by side) goes on that much later.
            let took = draw(&mut st.rng, latency);
            self.clock.advance(took / u64::from(spec.in_flight.max(1)));
        }
        let u: f64 = st.rng.random();
        if u < spec.failure_rate {
            return Err(LookupError::Unavailable("simulated 503".into()));
        }
        if u < spec.failure_rate + spec.timeout_rate {
            return Err(LookupError::Timeout);
        }
        Ok(st.people.get(id).map(|p| p.current.clone()))
    }

    pub fn senders(self: &Arc<Self>) -> crate::ports::Senders {
        let s = |channel| -> Arc<dyn ChannelSender> {
            Arc::new(SimSender {
                world: self.clone(),
                channel,
            })
        };
        crate::ports::Senders {
            voice: s(Channel::Voice),
            sms: s(Channel::Sms),
            email: s(Channel::Email),
            push: s(Channel::Push),
        }
    }

    pub fn counters(&self) -> Vec<(Channel, CarrierCounters, Option<f64>)> {
        let st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        Channel::ALL
            .iter()
            .map(|c| {
                (
                    *c,
                    st.carriers[c.index()].counters.clone(),
                    st.carriers[c.index()].spec.capacity_per_sec,
                )
            })
            .collect()
    }

    fn send(&self, channel: Channel, msg: &OutboundMessage) -> Result<Accepted, SendError> {
        let now = self.clock.now();
        let ended = self
            .ended
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(&msg.key);
        let mut guard = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let st = &mut *guard;
        let carrier = &mut st.carriers[channel.index()];
        let c = &mut carrier.counters;
        c.offered += 1;
        if ended && !msg.is_notice() {
            c.after_end += 1;
        }
        let sec = now.0 / 1000;
        if sec != c.sec {
            c.sec = sec;
            c.in_sec = 0;
        }
        c.in_sec += 1;
        c.peak_per_sec = c.peak_per_sec.max(c.in_sec);
        while let Some(&(at, capacity)) = carrier.spec.capacity_schedule.get(carrier.schedule_done)
            && self.start.plus(at) <= now
        {
            if let Some(b) = carrier.bucket.as_mut() {
                b.set_capacity(self.start.plus(at), capacity);
            }
            carrier.schedule_done += 1;
        }
        if let Some(b) = carrier.bucket.as_mut()
            && b.offer(now).is_err()
        {
            c.throttled_429 += 1;
            let spec = &carrier.spec;
            let retry_after =
                if spec.no_retry_after > 0.0 && st.rng.random::<f64>() < spec.no_retry_after {
                    None
                } else if spec.retry_after_max > spec.retry_after {
                    Some(st.rng.random_range(spec.retry_after..=spec.retry_after_max))
                } else {
                    Some(spec.retry_after)
                };
            return Err(SendError::Throttled { retry_after });
        }
        let spec = &carrier.spec;
        let since = now.since(self.start);
        if spec.outages.iter().any(|(a, b)| (*a..*b).contains(&since)) {
            c.transient += 1;
            return Err(SendError::Transient("simulated outage (503)".into()));
        }
        let u: f64 = st.rng.random();
        if u < spec.transient {
            c.transient += 1;
            return Err(SendError::Transient("simulated 503".into()));
        }
        if u < spec.transient + spec.failed {
            c.failed += 1;
            return Err(SendError::Failed("simulated permanent refusal".into()));
        }
        c.accepted += 1;
        c.first_at.get_or_insert(now);
        c.last_at = Some(now);
        c.accepted_at.push(now);
        let attempt = {
            use std::hash::{Hash, Hasher};
            let mut h = rustc_hash::FxHasher::default();
            (&msg.key, msg.attempt).hash(&mut h);
            h.finish()
        };
        // (An update notice is tried again after an answer that never came,
        // as attempt 0 again: not counted.)
        if !msg.is_notice() && !carrier.taken.insert(attempt) {
            c.twice += 1;
        }
        carrier.next_id += 1;
        let id = format!("sim-{}-{}", channel.as_str(), carrier.next_id);
        let latency = draw(&mut st.rng, spec.latency);
        // Receipt outcome, by cumulative share: unreachable, undelivered,
        // lost, late, else delivered on time. A lost or late receipt still
        // means the person got the message after `latency`.
        let r: f64 = st.rng.random();
        let bounds = [
            spec.unreachable,
            spec.unreachable + spec.undelivered,
            spec.unreachable + spec.undelivered + spec.lost_receipts,
            spec.unreachable + spec.undelivered + spec.lost_receipts + spec.late_receipts,
        ];
        // A message to an address the person no longer has is undeliverable:
        // a dead number does not answer, an old mailbox bounces.
        let dead = st
            .people
            .get(&msg.key.stakeholder)
            .is_some_and(|p| p.current.address(channel).as_ref() != Some(&msg.to));
        let position = if dead {
            Some(if channel == Channel::Email { 1 } else { 0 })
        } else {
            bounds.iter().position(|b| r < *b)
        };
        let (receipt, delivered) = match position {
            Some(0) => (Some((latency, ReceiptStatus::Unreachable)), false),
            Some(1) => (Some((latency, ReceiptStatus::Failed)), false),
            Some(2) => (None, true),
            Some(3) => (
                Some((self.receipt_timeout + latency, ReceiptStatus::Delivered)),
                true,
            ),
            _ => (Some((latency, ReceiptStatus::Delivered)), true),
        };
        if let Some((after, status)) = receipt {
            let event = SimEvent::Receipt {
                provider_message_id: id.clone(),
                status,
            };
            if spec.duplicate_receipts > 0.0 && st.rng.random::<f64>() < spec.duplicate_receipts {
                let again = draw(&mut st.rng, spec.latency);
                self.agenda
                    .push(now.plus(after + again), Item::External(event.clone()));
            }
            if spec.early_receipts > 0.0 && st.rng.random::<f64>() < spec.early_receipts {
                // Sent before the carrier's answer to this send reaches
                // Muster (`SimSender::send` hands it over first).
                self.early
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(event);
            } else {
                self.agenda.push(now.plus(after), Item::External(event));
            }
        }
        if spec.unknown_receipts > 0.0 && st.rng.random::<f64>() < spec.unknown_receipts {
            let event = SimEvent::Receipt {
                provider_message_id: format!(
                    "sim-unknown-{}-{}",
                    channel.as_str(),
                    carrier.next_id
                ),
                status: ReceiptStatus::Delivered,
            };
            self.agenda.push(now.plus(latency), Item::External(event));
        }
        // (No draw for a fault a scenario does not have: existing seeds keep
        // their runs.)
        let answer_lost = spec.lost_answers > 0.0 && st.rng.random::<f64>() < spec.lost_answers;
        if delivered
            && let Some(person) = st.people.get_mut(&msg.key.stakeholder)
            && !person.never
            && !msg.is_notice()
            && !person.answering.contains(&msg.key)
        {
            let b = &self.behaviours[person.behaviour];
            if st.rng.random::<f64>() < b.ack[channel.index()] {
                person.answering.insert(msg.key.clone());
                let delay = draw(&mut st.rng, b.ack_delay);
                let phone = match &msg.to {
                    crate::domain::Address::Phone(p) if channel == Channel::Sms => Some(p.clone()),
                    _ => None,
                };
                // One of the incident's own answers, by the behaviour's
                // shares, to a member's message (no draw without answers:
                // existing seeds keep their runs).
                let response = if b.answers.is_empty() || msg.key.route.is_escalation() {
                    None
                } else {
                    let mut left = st.rng.random::<f64>();
                    b.answers.iter().find_map(|(k, p)| {
                        left -= p;
                        (left < 0.0).then(|| k.clone())
                    })
                };
                let event = match phone {
                    Some(from)
                        if self.sms_text_replies > 0.0
                            && st.rng.random::<f64>() < self.sms_text_replies =>
                    {
                        let body = match (&response, st.rng.random_range(0..4)) {
                            (Some(k), _) => k.clone(),
                            (None, 0) => "1".to_string(),
                            (None, 1) => "ACK".to_string(),
                            (None, 2) => format!("ack {}", msg.ack_code),
                            (None, _) => "Ok".to_string(),
                        };
                        SimEvent::InboundSms { from, body }
                    }
                    _ => SimEvent::Ack {
                        key: msg.key.clone(),
                        channel,
                        attempt: msg.attempt,
                        response,
                    },
                };
                if self.duplicate_acks > 0.0 && st.rng.random::<f64>() < self.duplicate_acks {
                    let again = draw(&mut st.rng, b.ack_delay);
                    self.agenda.push(
                        now.plus(latency + delay + again),
                        Item::External(event.clone()),
                    );
                }
                self.agenda
                    .push(now.plus(latency + delay), Item::External(event));
            }
        }
        if delivered
            && self.sms_stop > 0.0
            && channel == Channel::Sms
            && let crate::domain::Address::Phone(from) = &msg.to
            && st.rng.random::<f64>() < self.sms_stop
        {
            let event = SimEvent::InboundSms {
                from: from.clone(),
                body: "STOP".into(),
            };
            self.agenda
                .push(now.plus(latency + 5_000), Item::External(event));
        }
        if answer_lost {
            // Delivered, but Muster hears nothing until its send times out.
            return Err(SendError::Transient(
                "simulated: the carrier's answer never came".into(),
            ));
        }
        Ok(Accepted {
            provider_message_id: id,
        })
    }
}

struct SimSender {
    world: Arc<SimWorld>,
    channel: Channel,
}

#[async_trait]
impl ChannelSender for SimSender {
    fn endpoint(&self) -> &str {
        self.channel.as_str()
    }
    async fn send(&self, msg: &OutboundMessage) -> Result<Accepted, SendError> {
        let answer = self.world.send(self.channel, msg);
        // An early receipt is applied while the send is still in flight,
        // as a receipt function invoked before the sender has its answer.
        let early =
            std::mem::take(&mut *self.world.early.lock().unwrap_or_else(|e| e.into_inner()));
        if let Some(deps) = self.world.receipts.get().and_then(std::sync::Weak::upgrade) {
            for event in early {
                if let SimEvent::Receipt {
                    provider_message_id,
                    status,
                } = event
                {
                    let r = crate::app::receipt(
                        &deps,
                        crate::app::ReceiptEvent::Delivery {
                            provider_message_id,
                            status,
                        },
                    )
                    .await;
                    match r {
                        Ok(crate::app::ReceiptOutcome::Held) => {
                            self.world
                                .held
                                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        }
                        Ok(_) => {}
                        Err(e) => self
                            .world
                            .early_errors
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .push(e.to_string()),
                    }
                }
            }
        }
        answer
    }
}

struct SimContactSource {
    world: Arc<SimWorld>,
    spec: ContactSourceSpec,
}

#[async_trait]
impl ContactLookup for SimContactSource {
    async fn lookup(&self, id: &StakeholderId) -> Result<Option<ContactMethods>, LookupError> {
        self.world.lookup(self.spec, id)
    }
}
