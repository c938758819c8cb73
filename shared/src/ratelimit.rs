//! Adaptive pacing per carrier endpoint. (The simulated carrier the drills
//! and this module's tests pace against is `drill::carrier`.)
//!
//! [`AdaptiveLimiter`] keeps three invariants:
//! - Never faster than the told limit: sends are spaced at least `1/rate`
//!   apart on a GCRA schedule (a theoretical arrival time, no burst
//!   allowance) and `rate` never exceeds `limit_per_sec`, so jobs that come
//!   back at their slots never put more than `limit_per_sec` sends (rounded
//!   up) into any one-second window.
//! - Never slower than the floor: `rate` never drops below `min_per_sec`.
//! - Never a herd: a job that cannot send now books the next free slot, so
//!   waiting jobs hold distinct, increasing slots. A 429 bumps the epoch,
//!   which voids the booked slots: each holder books again (after the pause)
//!   when it comes back at its old slot, so in the order of those slots.
//!
//! Adaptation. A 429 pauses the endpoint for its Retry-After and cuts the
//! rate. The knee, the rate at which throttling began, is the rate the
//! carrier was actually taking just before the 429 (an average over the last
//! sends, which may be well under the pacing rate while slots booked at an
//! older, lower rate are still going out). The rate restarts just under the
//! knee, or lower still at the accepted rate since the previous 429 when that
//! window is short and busy: a token bucket is empty at both 429s, so what it
//! took in between, pause included, is its refill rate, which is how a deep
//! bucket that let the rate run far past its capacity is found in one step.
//! One 429 never cuts by more than half, so a poor measurement cannot
//! collapse the rate, and a 429 with nothing measured halves it.
//!
//! With a long Retry-After (5 s or more) every 429 costs a pause, so a knee
//! a 429 proves too high (it came before the rate had grown past where the
//! last cut restarted it, as a deep bucket answers long after the rate
//! passed its capacity) is bisected instead: between two 429s the bucket
//! went from empty to empty, so what it took over that window is at most
//! its capacity, and the new knee lies three quarters of the way from that
//! to the rate that failed.
//!
//! Learning a long pause. The first 429s with a long Retry-After are
//! the costliest: told 50/s and taking 10/s with 30 s pauses, halving
//! needs three or four pauses to get near the capacity. So until a long
//! pause has given a capacity, each pause ends in a climb instead of a
//! flat rate: from an eighth of the rate that failed (a quarter after a
//! spell that measured the carrier), doubling every 3 s, with slots booked
//! at the climb's rate at their own time so a backlog booked at once still
//! climbs. A shallow bucket answers 429 as soon as the climb passes its
//! capacity, which is the pace the last accepted send had. A deep one lets
//! the climb run past it, but every spell of sending after a long pause
//! began with the bucket full (refilled in the pause), so two spells give
//! `accepted = depth + capacity x length` twice: the capacity follows from
//! the difference of counts over the difference of lengths, less the
//! refill the bucket wasted while the climb was still under it (and from
//! the pause's refill alone when the bucket is deeper than a pause
//! refills). The rate restarts just under the capacity found, and the
//! cuts described above take over.
//!
//! The rate then grows back along a cubic of busy time since the cut (as in
//! TCP CUBIC): quickly at first, flat on a plateau at the knee, then probing
//! beyond it ever faster, so a capacity that has come back is found again
//! within a minute or two. The curve is stretched by the Retry-After (in
//! seconds, at least 1, to the power 3.5), so a carrier that answers a probe
//! with a long pause is probed less often: with 30 s pauses about one probe
//! in 12 minutes. Busy time advances only with accepted sends, so an
//! idle endpoint keeps what it learned instead of drifting back up.
//!
//! Priority. Escalation sends take the priority lane. The lane has its own
//! pace, `priority_share` of the rate: a priority send that comes before the
//! lane's next slot waits for it without booking anything. At its slot it
//! is inserted at the head of the endpoint's schedule: it takes the next
//! slot after the last send granted, and every member slot booked so far
//! moves one interval later (tickets carry the shift they were booked
//! under). So the endpoint still never sees more than its pace, booked
//! members keep their order, and escalations never take more than their
//! share from members.
//!
//! Slots already booked keep the pace at which they were booked, so a rate
//! increase reaches the carrier only after the booked schedule
//! ([`AdaptiveLimiter::booked_until`]) has run out; a dispatcher that leaves
//! excess work in its queue rather than booking all of it keeps that lag
//! short.
//!
//! The module does no I/O, reads no clock and draws no random numbers: every
//! call is handed `now`, and the same calls always give the same answers.

use crate::domain::{Millis, Ts};
use serde::{Deserialize, Serialize};

/// Pause when a 429 carries no Retry-After.
pub const DEFAULT_RETRY_AFTER: Millis = 1_000;
/// The highest rate one endpoint can be paced at: slots are whole
/// milliseconds, and distinct slots need at least 1 ms between them.
pub const MAX_RATE_PER_SEC: f64 = 1_000.0;
/// The lowest rate accepted in a configuration.
const MIN_RATE_PER_SEC: f64 = 0.001;
/// After a cut, the rate restarts this far (relative) under the knee.
const MARGIN: f64 = 0.03;
/// One 429 never cuts the rate below this fraction of the knee.
const MAX_CUT: f64 = 0.5;
/// Gain of the cubic growth, relative to the rate it restarts from, per s^3.
const PROBE_GAIN: f64 = 1e-5;
/// The growth curve is stretched by the Retry-After (s) to this power: a
/// probe past the knee costs a pause, so with pauses P a probe comes about
/// every 25 P (for P = 30 s: one 429 in about 12 minutes, under 4 % of the
/// time paused).
const PROBE_STRETCH: f64 = 3.5;
/// The recent send rate is trusted once this many sends have been accepted
/// since the last pause.
const SHORT_MIN_SENDS: u32 = 8;
/// Weight of each new interval in the recent send rate (an average over
/// about the last 8 sends).
const SHORT_WEIGHT: f64 = 0.125;
/// The accepted rate since the previous 429 is trusted when that 429's pause
/// ended at most this long ago and the schedule was busy for at least 90% of
/// the window. (A shallow carrier bucket wastes the tokens of every moment
/// sent below capacity, so over a long window the count says more about what
/// was sent than about what the carrier can take.)
const LONG_TRUST_US: u64 = 20_000_000;
/// A pause this long makes each 429 costly: a knee proved too high by a
/// 429 is bisected toward what the carrier took instead of cut by the margin.
const LONG_PAUSE: Millis = 5_000;
/// Where the bisected knee lies between what the carrier took (0) and the
/// rate that failed (1): a window that held a long pause undercounts.
const BISECT: f64 = 0.75;
/// 429s closer together than this (or arriving during the pause that an
/// earlier one set) are one throttling event: the rate is cut once.
const MIN_CUT_SPACING: Millis = 1_000;
/// While a long pause is first being learned, the climb after it doubles
/// the rate this often (s of time since the pause ended).
const CLIMB_DOUBLING_S: f64 = 3.0;
/// A climb starts at this share of the rate that failed: a quarter after a
/// spell that measured the carrier (a deep bucket, which the climb drains
/// again), an eighth after one that did not (a shallow bucket, whose 429
/// comes as soon as the climb passes its capacity).
const CLIMB_START_MEASURED: f64 = 0.25;
const CLIMB_START_BLIND: f64 = 0.125;
/// Two spells give a capacity only this far apart in length (s).
const MIN_SPELL_SPREAD_S: f64 = 0.5;
/// A climb that has held its cap this long (s) without a 429 ends: the
/// capacity is at least the cap (a deep bucket drains well within it).
const CLIMB_HOLD_S: f64 = 60.0;

/// The told limit of one carrier endpoint and the floor under it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LimiterConfig {
    /// Sends per second the carrier says it accepts; never exceeded.
    pub limit_per_sec: f64,
    /// The rate is never cut below this.
    pub min_per_sec: f64,
    /// Share of the rate the priority lane may take ahead of member sends.
    pub priority_share: f64,
}

impl LimiterConfig {
    /// A told limit with the default floor of 1 msg/s and half the rate
    /// available to the priority lane.
    pub fn new(limit_per_sec: f64) -> Self {
        LimiterConfig {
            limit_per_sec,
            min_per_sec: 1.0,
            priority_share: 0.5,
        }
    }
}

/// A carrier throttling an endpoint: its first 429 since the last accepted
/// send, and the end of the pause it set, while that runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Throttling {
    pub since: Ts,
    pub paused_until: Option<Ts>,
}

/// Which lane a send waits in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Lane {
    Member,
    /// Escalations: ahead of member sends, within the priority share.
    Priority,
}

impl Default for LimiterConfig {
    /// 50 msg/s per carrier endpoint, floor 1 msg/s.
    fn default() -> Self {
        LimiterConfig::new(50.0)
    }
}

/// The answer to [`AdaptiveLimiter::admit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// Send now.
    Granted,
    /// Come back at `until` with `ticket`. `throttled_since`: the endpoint
    /// has been answering 429 since then without accepting anything, so the
    /// wait is the carrier's throttling, not only pacing.
    Wait {
        until: Ts,
        ticket: Ticket,
        throttled_since: Option<Ts>,
    },
}

/// A booked slot: the job that holds it is granted when it comes back at or
/// after `slot` (moved later by the priority sends inserted since it was
/// booked), unless a 429 has since moved the limiter to a new epoch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ticket {
    pub slot: Ts,
    pub epoch: u32,
    /// The limiter's priority shift (us) when the slot was booked; `None`
    /// for a priority slot, which priority insertions never move.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shift_us: Option<u64>,
    /// A priority send waiting for its lane's pace: nothing is booked; it
    /// asks again at `slot`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub queued: bool,
}

/// Paces the sends to one carrier endpoint and adapts the pace to the
/// carrier's 429s. See the module documentation for the invariants. Its
/// whole state serializes, so any store can hold it (the DynamoDB limiter
/// keeps it in one versioned item).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AdaptiveLimiter {
    limit: f64,
    floor: f64,
    /// Current pacing rate, msgs/s, within `floor..=limit`.
    rate: f64,
    /// Theoretical arrival time of the next free slot, in microseconds since
    /// the epoch; never earlier than the end of the current pause.
    next_free_us: u64,
    epoch: u32,
    paused_until: Option<Ts>,
    /// No further cut before this instant (same throttling event).
    cut_guard_until: Ts,
    /// The last cut: the start of the window the next cut measures.
    last_cut: Option<Ts>,
    accepted_since_cut: u64,
    /// Time since the last cut in which the schedule had no job waiting.
    idle_us_since_cut: u64,
    /// End of the pause the last 429 set.
    resumed_at: Option<Ts>,
    /// The last accepted send since the last pause, and the average interval
    /// between accepted sends since then (ms) over `sends_since_resume`.
    last_success: Option<Ts>,
    interval_avg_ms: f64,
    sends_since_resume: u32,
    /// Where throttling is believed to begin, msgs/s.
    knee: f64,
    /// Gain of the growth cubic, msgs/s per s^3.
    gain: f64,
    /// Busy time from the cut at which the cubic reaches the knee, s.
    plateau_s: f64,
    /// Busy time since the cut (one interval per accepted send), s.
    busy_s: f64,
    /// Priority insertions of this epoch, as time (us) every booked member
    /// slot has moved.
    shift_us: u64,
    /// The latest granted send, us.
    last_grant_us: u64,
    /// Theoretical arrival time of the priority lane's next slot, us.
    priority_next_us: u64,
    priority_share: f64,
    /// The first 429 since the carrier last accepted a send.
    throttled_since: Option<Ts>,
    /// The rate the last cut restarted at, and the pause it came with
    /// (absent from state stored before they were kept: no bisection until
    /// the next cut).
    #[serde(default)]
    restarted_at: f64,
    #[serde(default)]
    last_pause: Millis,
    /// Sends the carrier accepted and 429s it answered, since this state
    /// was created (absent from state stored before they were kept: 0).
    #[serde(default)]
    accepted: u64,
    #[serde(default)]
    throttled: u64,
    /// Learning a long pause (see the module documentation): the climb in
    /// progress, the spell before this one if it measured the carrier, and
    /// this spell's first accepted send and count (absent from state stored
    /// before they were kept: no climb, the cut as before).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    climb: Option<Climb>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    last_spell: Option<Spell>,
    #[serde(default)]
    spell_from: Option<Ts>,
    #[serde(default)]
    spell_accepted: u32,
}

/// The climb after a long pause while the capacity is still unknown: the
/// rate `start * 2^(t / CLIMB_DOUBLING_S)` at `t` seconds after `from_us`,
/// at most `cap` (the rate that failed). Slots are booked at the climb's
/// rate at their own time, so a backlog booked at the start still climbs.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
struct Climb {
    from_us: u64,
    start: f64,
    cap: f64,
}

impl Climb {
    fn rate_at(&self, at_us: u64) -> f64 {
        let s = at_us.saturating_sub(self.from_us) as f64 / 1e6;
        (self.start * (s / CLIMB_DOUBLING_S).exp2()).min(self.cap)
    }

    /// The rate the slot before one at `at_us` was paced at: the send
    /// accepted at `at_us` came one interval after it.
    fn rate_before(&self, at_us: u64) -> f64 {
        let rate = self.rate_at(at_us);
        self.rate_at(at_us.saturating_sub((1e6 / rate) as u64))
    }

    /// Tokens a bucket refilled at `capacity` (at most the cap) lost while
    /// the climb was slower than it: the bucket stays full, and wastes its
    /// refill, until the climb's rate passes the capacity.
    fn wasted(&self, capacity: f64) -> f64 {
        let c = capacity.min(self.cap);
        if c <= self.start {
            return 0.0;
        }
        let tau = CLIMB_DOUBLING_S * (c / self.start).log2();
        (c * tau - CLIMB_DOUBLING_S / std::f64::consts::LN_2 * (c - self.start)).max(0.0)
    }

    /// The capacity `c` for which a spell of this climb, one that began
    /// with the bucket full, accepted `accepted` more sends than `before`
    /// (a spell sent faster than `c` throughout) in `spread` more seconds:
    /// `accepted - before = c * spread - wasted(c)`, solved by bisection.
    /// The climb passed `c` before it failed at `failed`, so `c` is below
    /// that; the left side grows with `c` while the climb spent less than
    /// `spread` under it, which bounds the search too.
    fn capacity(&self, target: f64, spread: f64, floor: f64, failed: f64) -> f64 {
        let gained = |c: f64| c * spread - self.wasted(c);
        let rising_until = self.rate_at(self.from_us + (spread * 1e6) as u64);
        let hi = failed.min(rising_until).max(floor);
        let (mut lo, mut hi) = (floor.min(hi), hi);
        if gained(hi) <= target {
            return hi;
        }
        for _ in 0..60 {
            let mid = 0.5 * (lo + hi);
            if gained(mid) < target {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        0.5 * (lo + hi)
    }

    /// Whether the climb has held its cap for [`CLIMB_HOLD_S`] at `at_us`.
    fn held(&self, at_us: u64) -> bool {
        let to_cap_s = CLIMB_DOUBLING_S * (self.cap / self.start).max(1.0).log2();
        at_us.saturating_sub(self.from_us) as f64 / 1e6 >= to_cap_s + CLIMB_HOLD_S
    }
}

/// One spell of sending that began with the carrier's bucket full (the
/// first, or one after a long pause) and ended in a 429: how many sends it
/// accepted and for how long it sent. A token bucket of depth `b` and
/// refill `c` gives `accepted = b + c * secs`, so two spells of different
/// lengths give `c` whatever `b` is.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
struct Spell {
    accepted: u32,
    secs: f64,
}

/// What an endpoint's limiter says of its carrier now, for operators: the
/// told limit, the pace it sends at, how long a send asking now waits, the
/// carrier's pause, and the carrier's answers counted.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Gauge {
    pub limit_per_sec: f64,
    pub pace_per_sec: f64,
    pub queue_wait: Millis,
    pub paused_until: Option<Ts>,
    pub accepted: u64,
    pub throttled: u64,
}

impl AdaptiveLimiter {
    /// Starts at the told limit. Out-of-range values are clamped: the limit
    /// to `0.001..=1000` msg/s, the floor to `0.001..=limit`.
    pub fn new(cfg: LimiterConfig, now: Ts) -> Self {
        let limit = clamp_rate(cfg.limit_per_sec, MAX_RATE_PER_SEC);
        let floor = clamp_rate(cfg.min_per_sec, limit);
        AdaptiveLimiter {
            limit,
            floor,
            rate: limit,
            next_free_us: micros(now),
            epoch: 0,
            paused_until: None,
            cut_guard_until: now,
            last_cut: None,
            accepted_since_cut: 0,
            idle_us_since_cut: 0,
            resumed_at: None,
            last_success: None,
            interval_avg_ms: 0.0,
            sends_since_resume: 0,
            knee: limit,
            gain: PROBE_GAIN * limit,
            plateau_s: 0.0,
            busy_s: 0.0,
            shift_us: 0,
            last_grant_us: 0,
            priority_next_us: micros(now),
            priority_share: if cfg.priority_share.is_nan() {
                0.5
            } else {
                cfg.priority_share.clamp(0.01, 1.0)
            },
            throttled_since: None,
            restarted_at: limit,
            last_pause: 0,
            accepted: 0,
            throttled: 0,
            climb: None,
            last_spell: None,
            spell_from: None,
            spell_accepted: 0,
        }
    }

    /// Ask to send one message now, in the member lane. `ticket` is what an
    /// earlier Wait handed out for this same job. A job that comes back at
    /// (or after) its ticket's slot, moved by the priority sends inserted
    /// since, with the limiter's epoch unchanged, is Granted without drawing
    /// again; one that comes back early is told its slot again.
    /// Otherwise: Granted if a send fits now; else books the next free slot
    /// (advancing the schedule, so N waiting jobs get N distinct slots, with
    /// no thundering herd and O(1) work per call) and returns
    /// `Wait { until: slot, ticket }`.
    pub fn admit(&mut self, now: Ts, ticket: Option<Ticket>) -> Admit {
        self.expire_pause(now);
        if let Some(ticket) = ticket.filter(|t| t.epoch == self.epoch) {
            let moved = ticket
                .shift_us
                .map_or(0, |at| self.shift_us.saturating_sub(at));
            let slot = Ts((micros(ticket.slot) + moved).div_ceil(1000));
            return if now >= slot {
                self.granted(now)
            } else {
                self.wait(slot, ticket)
            };
        }
        let now_us = micros(now);
        let interval_us = self.interval_us(self.next_free_us.max(now_us));
        if self.next_free_us <= now_us {
            self.idle_us_since_cut += now_us - self.next_free_us;
            self.next_free_us = now_us + interval_us;
            return self.granted(now);
        }
        let slot = Ts(self.next_free_us.div_ceil(1000));
        self.next_free_us += interval_us;
        let ticket = Ticket {
            slot,
            epoch: self.epoch,
            shift_us: Some(self.shift_us),
            queued: false,
        };
        self.wait(slot, ticket)
    }

    /// Ask to send one message now, in the priority lane (see the module
    /// documentation): before the lane's next slot, wait for it without
    /// booking; at it, the next slot after the last granted send, ahead of
    /// every booked member slot, which all move one interval later.
    pub fn admit_priority(&mut self, now: Ts, ticket: Option<Ticket>) -> Admit {
        self.expire_pause(now);
        if let Some(ticket) =
            ticket.filter(|t| t.epoch == self.epoch && t.shift_us.is_none() && !t.queued)
        {
            return if now >= ticket.slot {
                self.granted(now)
            } else {
                self.wait(ticket.slot, ticket)
            };
        }
        let now_us = micros(now);
        let interval_us = self.interval_us(self.next_free_us.max(now_us));
        let lane_us = (interval_us as f64 / self.priority_share) as u64;
        let lane_free_us = self
            .priority_next_us
            .max(self.paused_until.map_or(0, micros));
        if lane_free_us > now_us {
            let slot = Ts(lane_free_us.div_ceil(1000));
            let ticket = Ticket {
                slot,
                epoch: self.epoch,
                shift_us: None,
                queued: true,
            };
            return self.wait(slot, ticket);
        }
        if self.next_free_us <= now_us {
            self.idle_us_since_cut += now_us - self.next_free_us;
            self.next_free_us = now_us + interval_us;
            self.priority_next_us = now_us + lane_us;
            return self.granted(now);
        }
        let slot_us = now_us.max(self.last_grant_us + interval_us);
        self.priority_next_us = slot_us + lane_us;
        self.shift_us += interval_us;
        self.next_free_us += interval_us;
        if slot_us <= now_us {
            return self.granted(now);
        }
        let slot = Ts(slot_us.div_ceil(1000));
        let ticket = Ticket {
            slot,
            epoch: self.epoch,
            shift_us: None,
            queued: false,
        };
        self.wait(slot, ticket)
    }

    fn granted(&mut self, now: Ts) -> Admit {
        self.last_grant_us = self.last_grant_us.max(micros(now));
        Admit::Granted
    }

    fn wait(&self, until: Ts, ticket: Ticket) -> Admit {
        Admit::Wait {
            until,
            ticket,
            throttled_since: self.throttled_since,
        }
    }

    /// The first 429 since the carrier last accepted a send, if it has not
    /// accepted one since.
    pub fn throttled_since(&self) -> Option<Ts> {
        self.throttled_since
    }

    /// Whether the carrier is throttling the endpoint at `now`, and how.
    pub fn throttling(&self, now: Ts) -> Option<Throttling> {
        self.throttled_since.map(|since| Throttling {
            since,
            paused_until: self.paused_until.filter(|p| *p > now),
        })
    }

    /// The carrier accepted a send (or answered anything but throttling) at
    /// `now`: counts toward the accepted rate, and advances the rate along
    /// its growth curve by one send interval of busy time.
    pub fn on_success(&mut self, now: Ts) {
        self.expire_pause(now);
        // An acceptance ends a throttling episode only if it came after the
        // episode's first 429 (one reported late does not).
        if self.throttled_since.is_some_and(|t| now >= t) {
            self.throttled_since = None;
        }
        self.accepted_since_cut += 1;
        self.accepted += 1;
        if let Some(prev) = self.last_success {
            let dt = now.since(prev) as f64;
            self.interval_avg_ms = if self.sends_since_resume == 0 {
                dt
            } else {
                self.interval_avg_ms + SHORT_WEIGHT * (dt - self.interval_avg_ms)
            };
            self.sends_since_resume += 1;
        }
        self.last_success = Some(self.last_success.map_or(now, |p| p.max(now)));
        // A send accepted before the last pause ended but told late belongs
        // to the spell before it.
        if self.resumed_at.is_none_or(|r| now >= r) {
            self.spell_accepted = self.spell_accepted.saturating_add(1);
            self.spell_from = Some(self.spell_from.map_or(now, |f| f.min(now)));
        }
        if let Some(climb) = self.climb {
            if !climb.held(micros(now)) {
                self.rate = climb.rate_at(micros(now)).clamp(self.floor, self.limit);
                return;
            }
            // The climb held the rate that failed without a 429: the
            // capacity is back at least that high.
            self.climb = None;
            self.last_spell = None;
            self.knee = climb.cap;
            self.restarted_at = climb.cap;
            self.plateau_s = 0.0;
            self.busy_s = 0.0;
        }
        // Busy time, at most a second per send: below 1 msg/s the curve
        // advances per send, so probing costs a share of the sends, not of
        // the time (a carrier at 0.25/s would otherwise be probed as often
        // per minute as one at 25/s).
        self.busy_s += (1.0 / self.rate).min(1.0);
        let d = self.busy_s - self.plateau_s;
        self.rate = (self.knee + self.gain * d * d * d).clamp(self.floor, self.limit);
    }

    /// The carrier answered 429 (`retry_after`: its Retry-After, if any).
    /// Pauses the endpoint until `now + retry_after`, lowers the rate, bumps
    /// the epoch (so booked tickets are re-booked in order), and remembers
    /// the rate at which throttling began. Further 429s within the same
    /// throttling event (during its pause, or within a second) extend the
    /// pause but do not cut again.
    pub fn on_throttled(&mut self, now: Ts, retry_after: Option<Millis>) {
        let pause = retry_after.unwrap_or(DEFAULT_RETRY_AFTER);
        self.throttled += 1;
        self.throttled_since.get_or_insert(now);
        let until = now.plus(pause);
        let until = self.paused_until.map_or(until, |p| p.max(until));
        self.paused_until = Some(until);
        self.epoch = self.epoch.wrapping_add(1);
        if now >= self.cut_guard_until {
            self.cut(now, pause);
        }
        if let Some(climb) = &mut self.climb {
            climb.from_us = climb.from_us.max(micros(until));
        }
        self.spell_from = None;
        self.spell_accepted = 0;
        // Booked slots are void; the next send comes after the pause, and
        // at least one interval after any send already made.
        self.next_free_us = micros(until).max(micros(now) + self.interval_us(micros(until)));
        self.shift_us = 0;
        self.priority_next_us = self.priority_next_us.max(self.next_free_us);
        self.resumed_at = Some(until);
        self.last_success = None;
        self.sends_since_resume = 0;
        self.cut_guard_until = self
            .cut_guard_until
            .max(until)
            .max(now.plus(MIN_CUT_SPACING));
    }

    /// Applies a (possibly changed) configuration to a stored limiter: the
    /// limit, floor and priority share, the rate clamped into the new range.
    pub fn reconfigure(&mut self, cfg: LimiterConfig) {
        let fresh = AdaptiveLimiter::new(cfg, Ts(0));
        if (fresh.limit, fresh.floor, fresh.priority_share)
            != (self.limit, self.floor, self.priority_share)
        {
            self.limit = fresh.limit;
            self.floor = fresh.floor;
            self.priority_share = fresh.priority_share;
            self.rate = self.rate.clamp(self.floor, self.limit);
            self.knee = self.knee.clamp(self.floor, self.limit);
            if let Some(climb) = &mut self.climb {
                climb.cap = climb.cap.clamp(self.floor, self.limit);
                climb.start = climb.start.clamp(self.floor, climb.cap);
            }
        }
    }

    /// Current pacing rate, msgs/s: the spacing of the slots booked from now
    /// on.
    pub fn rate(&self) -> f64 {
        self.rate
    }

    /// The end of the booked schedule: a job asking now would be booked at
    /// about this time (or granted, if it is not later than now).
    pub fn booked_until(&self) -> Ts {
        Ts(self.next_free_us.div_ceil(1000))
    }

    /// How long a member send asking at `now` would wait for its slot (the
    /// booked schedule or the carrier's pause, whichever ends later), without
    /// booking anything.
    pub fn queue_wait(&self, now: Ts) -> Millis {
        let pause = self.paused_until.filter(|p| *p > now).unwrap_or(now);
        self.booked_until().max(pause).since(now)
    }

    /// The endpoint as an operator sees it at `now`.
    pub fn gauge(&self, now: Ts) -> Gauge {
        Gauge {
            limit_per_sec: self.limit,
            pace_per_sec: self.rate,
            queue_wait: self.queue_wait(now),
            paused_until: self.paused_until.filter(|p| *p > now),
            accepted: self.accepted,
            throttled: self.throttled,
        }
    }

    /// End of the Retry-After pause, while one is known to be running
    /// (cleared by the first call at or after its end).
    pub fn paused_until(&self) -> Option<Ts> {
        self.paused_until
    }

    /// The current estimate of where throttling begins, msgs/s (the told
    /// limit until the first 429).
    pub fn knee(&self) -> f64 {
        self.knee
    }

    fn cut(&mut self, now: Ts, pause: Millis) {
        if pause >= LONG_PAUSE && (self.last_cut.is_none() || self.climb.is_some()) {
            return self.learn(now, pause);
        }
        // Throttling began at the rate the carrier was taking just before
        // this 429 (while slots booked at a lower pacing rate are still going
        // out, that is well under the pacing rate).
        let recent = (self.sends_since_resume >= SHORT_MIN_SENDS)
            .then(|| 1000.0 / self.interval_avg_ms.max(1e-3));
        let knee = recent.map_or(self.rate, |r| r.min(self.rate));
        // What the carrier took since the previous 429, pause included: a
        // token bucket refills during the pause (a shallow one wastes part of
        // that), so this is at most its capacity.
        let since_last = self
            .last_cut
            .zip(self.resumed_at)
            .and_then(|(cut, resumed)| {
                let window_us = micros(now).saturating_sub(micros(cut)).max(1);
                let sending_us = micros(now).saturating_sub(micros(resumed)).max(1);
                let trusted =
                    sending_us <= LONG_TRUST_US && self.idle_us_since_cut <= window_us / 10;
                trusted.then(|| self.accepted_since_cut as f64 * 1e6 / window_us as f64)
            });
        // A 429 before the rate grew past where the last cut restarted it:
        // the knee was too high (a deep bucket takes a rate past its
        // capacity for a long while before it answers 429). Between two
        // 429s the bucket went from empty to empty, so what it took over
        // the whole window, pause included, is at most its capacity: the
        // new knee lies BISECT of the way from that to the rate that
        // failed, each 429 narrowing the gap. Only with long pauses (each
        // 429 costly), and over a window mostly spent sending (a bucket
        // refilled in a long pause wastes what it cannot hold).
        let sent_long = self
            .resumed_at
            .is_some_and(|r| now.since(r) >= 2 * self.last_pause.max(MIN_CUT_SPACING));
        let knee_proved_high = self.last_cut.is_some()
            && pause >= LONG_PAUSE
            && recent.is_some()
            && sent_long
            && self.rate <= self.knee * (1.0 + MARGIN)
            && self.rate <= self.restarted_at * (1.0 + 2.0 * MARGIN);
        let bisect = self.last_cut.filter(|_| knee_proved_high).map(|cut| {
            let window_us = micros(now).saturating_sub(micros(cut)).max(1);
            let floor = self.accepted_since_cut as f64 * 1e6 / window_us as f64;
            let floor = floor.min(knee);
            floor + BISECT * (knee - floor)
        });
        let restart = match (recent, since_last, bisect) {
            (_, _, Some(mid)) => since_last.map_or(mid, |lower| lower.min(mid)),
            (None, None, None) => knee * MAX_CUT,
            (_, Some(lower), None) => lower.min(knee * (1.0 - MARGIN)),
            (Some(_), None, None) => knee * (1.0 - MARGIN),
        }
        .max(knee * MAX_CUT)
        .clamp(self.floor, self.limit);
        let knee = if bisect.is_some() { restart } else { knee };
        self.restart(now, pause, knee.max(restart), restart);
    }

    /// The first 429s of a long pause, while the capacity is unknown: each
    /// costs a whole pause, so one spell of sending must tell as much as it
    /// can. A climb (from a quarter or an eighth of the rate that failed,
    /// doubling every few seconds, slots booked at the climb's rate at their
    /// time) ends in a 429 just past the capacity of a shallow bucket: the
    /// capacity is the rate the last accepted send was paced at. A deep
    /// bucket lets the climb run past it; but each spell began with the
    /// bucket full, so two spells that each accepted enough give the
    /// capacity from the difference of their counts over the difference of
    /// their lengths. Either way the rate restarts just under it, and
    /// probing goes on as after any cut.
    fn learn(&mut self, now: Ts, pause: Millis) {
        let spell = self.spell_from.map(|from| Spell {
            accepted: self.spell_accepted,
            secs: now.since(from) as f64 / 1000.0,
        });
        // A spell measures the carrier when it accepted enough and was busy
        // throughout (an endpoint idle for a while had its bucket refilled
        // along the way).
        let idle_s = self.idle_us_since_cut as f64 / 1e6;
        let measured = spell.filter(|s| s.accepted >= SHORT_MIN_SENDS && idle_s <= s.secs / 10.0);
        let failed = self.climb.map_or(self.rate, |c| c.rate_at(micros(now)));
        let from_two = self
            .last_spell
            .zip(measured)
            .filter(|(a, b)| (b.secs - a.secs).abs() >= MIN_SPELL_SPREAD_S)
            .map(|(a, b)| {
                let (before, after) = (a.accepted as f64, b.accepted as f64);
                let Some(climb) = self.climb.filter(|_| b.secs > a.secs) else {
                    return (after - before) / (b.secs - a.secs);
                };
                // The bucket refilled in the pause: both spells began full.
                let full = climb.capacity(after - before, b.secs - a.secs, self.floor, failed);
                if before - full * a.secs <= full * self.last_pause as f64 / 1000.0 {
                    return full;
                }
                // A bucket deeper than the pause refills: this spell began
                // with only the pause's refill.
                let pause_s = self.last_pause as f64 / 1000.0;
                climb.capacity(after, pause_s + b.secs, self.floor, failed)
            });
        let from_climb = self
            .climb
            .zip(self.last_success)
            .filter(|_| self.spell_accepted >= 2)
            .map(|(climb, at)| climb.rate_before(micros(at)))
            // A climb from the floor that failed at once: the floor it is
            // (a lower start is not allowed).
            .or_else(|| {
                self.climb
                    .filter(|c| c.start <= self.floor * (1.0 + MARGIN))
                    .map(|_| self.floor)
            });
        match from_two
            .filter(|c| c.is_finite() && *c > 0.0)
            .or(from_climb)
        {
            Some(capacity) => {
                self.climb = None;
                self.last_spell = None;
                let knee = capacity.clamp(self.floor, self.limit);
                let restart = (knee * (1.0 - MARGIN)).clamp(self.floor, self.limit);
                self.restart(now, pause, knee, restart);
            }
            None => {
                let share = if measured.is_some() {
                    CLIMB_START_MEASURED
                } else {
                    CLIMB_START_BLIND
                };
                let start = (failed * share).clamp(self.floor, self.limit);
                self.climb = Some(Climb {
                    from_us: micros(now.plus(pause)),
                    start,
                    cap: failed.clamp(start, self.limit),
                });
                self.last_spell = measured;
                self.restart(now, pause, failed, start);
            }
        }
    }

    /// The rate after a cut: `restart` now, growing back toward `knee`.
    fn restart(&mut self, now: Ts, pause: Millis, knee: f64, restart: f64) {
        let probe_cost_s = (pause as f64 / 1000.0).max(1.0);
        self.knee = knee;
        self.rate = restart;
        self.restarted_at = restart;
        self.last_pause = pause;
        self.gain = PROBE_GAIN * restart / probe_cost_s.powf(PROBE_STRETCH);
        self.plateau_s = ((self.knee - restart).max(0.0) / self.gain).cbrt();
        self.busy_s = 0.0;
        self.last_cut = Some(now);
        self.accepted_since_cut = 0;
        self.idle_us_since_cut = 0;
    }

    /// Slot spacing for a slot at `at_us`: at the climb's rate then, if one
    /// runs, else at the current rate; rounded up so never faster.
    fn interval_us(&self, at_us: u64) -> u64 {
        let rate = self
            .climb
            .map_or(self.rate, |c| c.rate_at(at_us).max(self.floor));
        (1e6 / rate).ceil() as u64
    }

    fn expire_pause(&mut self, now: Ts) {
        if self.paused_until.is_some_and(|p| now >= p) {
            self.paused_until = None;
        }
    }
}

fn micros(t: Ts) -> u64 {
    t.0.saturating_mul(1000)
}

/// `rate` within `MIN_RATE_PER_SEC..=max`; NaN becomes the minimum.
fn clamp_rate(rate: f64, max: f64) -> f64 {
    if rate.is_nan() {
        MIN_RATE_PER_SEC
    } else {
        rate.clamp(MIN_RATE_PER_SEC, max.max(MIN_RATE_PER_SEC))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::drill::carrier::CarrierBucket;
    use std::cmp::Reverse;
    use std::collections::BinaryHeap;

    const SEC: Millis = 1_000;
    const T0: Ts = Ts::from_secs(1_700_000_000);

    /// How many of `times` fall in `[from_s, to_s)` seconds after `T0`.
    fn between(times: &[Ts], from_s: u64, to_s: u64) -> usize {
        let (a, b) = (T0.plus(from_s * SEC), T0.plus(to_s * SEC));
        times.iter().filter(|t| (a..b).contains(*t)).count()
    }

    /// A dispatcher in virtual time: `backlog` jobs are always waiting (each
    /// accepted send is replaced by a new job at once). A job calls `admit`;
    /// on Wait it comes back at `until` with its ticket; on Granted it offers
    /// to the carrier; on 429 the limiter is told and the job asks again.
    struct Sim {
        limiter: AdaptiveLimiter,
        carrier: CarrierBucket,
        /// (when, sequence, job): the sequence keeps same-instant events FIFO.
        due: BinaryHeap<Reverse<(Ts, u64, usize)>>,
        tickets: Vec<Option<Ticket>>,
        seq: u64,
        offered: Vec<Ts>,
        accepted: Vec<Ts>,
        throttled: Vec<Ts>,
        /// (time, rate) after every accepted send.
        rates: Vec<(Ts, f64)>,
        /// Jobs still to be created (`u64::MAX`: an endless backlog).
        remaining: u64,
    }

    impl Sim {
        fn new(limit: f64, capacity: f64, burst: f64, backlog: usize, jobs: u64) -> Sim {
            Sim::with(
                LimiterConfig::new(limit),
                CarrierBucket::new(capacity, burst, SEC, T0),
                backlog,
                jobs,
            )
        }

        fn with(cfg: LimiterConfig, carrier: CarrierBucket, backlog: usize, jobs: u64) -> Sim {
            let mut sim = Sim {
                limiter: AdaptiveLimiter::new(cfg, T0),
                carrier,
                due: BinaryHeap::new(),
                tickets: Vec::new(),
                seq: 0,
                offered: Vec::new(),
                accepted: Vec::new(),
                throttled: Vec::new(),
                rates: Vec::new(),
                remaining: jobs,
            };
            for _ in 0..backlog {
                sim.new_job(T0);
            }
            sim
        }

        fn new_job(&mut self, now: Ts) {
            if self.remaining == 0 {
                return;
            }
            self.remaining = self.remaining.saturating_sub(1);
            self.tickets.push(None);
            self.schedule(now, self.tickets.len() - 1);
        }

        fn schedule(&mut self, at: Ts, job: usize) {
            self.seq += 1;
            self.due.push(Reverse((at, self.seq, job)));
        }

        /// Runs every event due before `end` (seconds after start).
        fn run_until(&mut self, end_s: u64) {
            let end = T0.plus(end_s * SEC);
            while let Some(&Reverse((now, _, job))) = self.due.peek() {
                if now >= end {
                    break;
                }
                self.due.pop();
                match self.limiter.admit(now, self.tickets[job]) {
                    Admit::Wait { until, ticket, .. } => {
                        assert!(until > now, "a wait must end in the future");
                        self.tickets[job] = Some(ticket);
                        self.schedule(until, job);
                    }
                    Admit::Granted => {
                        self.tickets[job] = None;
                        self.offered.push(now);
                        match self.carrier.offer(now) {
                            Ok(()) => {
                                self.limiter.on_success(now);
                                self.accepted.push(now);
                                self.rates.push((now, self.limiter.rate()));
                                self.new_job(now);
                            }
                            Err(retry_after) => {
                                self.limiter.on_throttled(now, Some(retry_after));
                                self.throttled.push(now);
                                self.schedule(now, job);
                            }
                        }
                    }
                }
                let rate = self.limiter.rate();
                assert!(
                    rate <= self.limiter.limit && rate >= self.limiter.floor,
                    "rate {rate} out of bounds"
                );
            }
        }

        /// The most sends offered to the carrier in any window of one second.
        fn max_offered_per_second(&self) -> usize {
            let mut most = 0;
            let mut lo = 0;
            for hi in 0..self.offered.len() {
                while self.offered[hi].since(self.offered[lo]) >= SEC {
                    lo += 1;
                }
                most = most.max(hi - lo + 1);
            }
            most
        }
    }

    #[test]
    fn paced_sends_never_exceed_the_told_limit() {
        for burst in [1.0, 50.0] {
            let mut sim = Sim::new(50.0, 50.0, burst, 10_000, 10_000);
            sim.run_until(10_000);
            assert_eq!(sim.accepted.len(), 10_000, "burst {burst}");
            assert!(
                sim.throttled.is_empty(),
                "burst {burst}: {} 429s",
                sim.throttled.len()
            );
            assert!(sim.max_offered_per_second() <= 50, "burst {burst}");
            let took = sim.accepted[9_999].since(T0) as f64 / 1000.0;
            println!(
                "capacity 50/s = told limit, burst {burst}: 10000 sends in {took:.2} s, 0 429s"
            );
            assert!(took <= 1.02 * 200.0, "took {took} s");
        }
    }

    /// Runs one endless-backlog scenario for 10 minutes and reports
    /// (accepted throughput after the first minute as % of capacity,
    /// 429s per minute after the first minute, 429s in the first minute).
    fn hidden_capacity_run(capacity: f64, burst: f64) -> (f64, f64, usize, Sim) {
        let mut sim = Sim::new(50.0, capacity, burst, 500, u64::MAX);
        sim.run_until(600);
        let accepted = between(&sim.accepted, 60, 600) as f64;
        let pct = 100.0 * accepted / (540.0 * capacity);
        let per_min = between(&sim.throttled, 60, 600) as f64 / 9.0;
        let first_min = between(&sim.throttled, 0, 60);
        (pct, per_min, first_min, sim)
    }

    #[test]
    fn adapts_to_hidden_lower_capacity() {
        let mut failures = Vec::new();
        for burst in [1.0, 10.0, 150.0] {
            for capacity in [10.0, 30.0, 37.0] {
                let (pct, per_min, first_min, sim) = hidden_capacity_run(capacity, burst);
                println!(
                    "told 50/s, hidden capacity {capacity}/s burst {burst}: throughput {pct:.1}% of capacity \
                     (60-600 s), 429s {per_min:.2}/min after the first minute, {first_min} in it, \
                     final rate {:.2}/s, knee {:.2}/s",
                    sim.limiter.rate(),
                    sim.limiter.knee()
                );
                if pct < 90.0 || per_min > 4.0 {
                    failures.push(format!(
                        "capacity {capacity} burst {burst}: {pct:.1}%, {per_min:.2} 429s/min"
                    ));
                }
                assert!(sim.max_offered_per_second() <= 50);
            }
        }
        assert!(failures.is_empty(), "{failures:?}");
    }

    #[test]
    fn with_a_long_retry_after_throughput_is_near_the_capacity_after_the_first_minute() {
        // Told 50/s, the carrier takes 10/s and answers 429 with a 30 s
        // Retry-After: each 429 costs 30 s of nothing, so the limiter must
        // find the capacity within the first minute's two pauses and then
        // probe past it rarely. From the first minute on (1 to 10 minutes)
        // and settled (10 to 30 minutes) it sends at least 90 % of the
        // capacity, whatever the carrier's burst.
        let mut failures = Vec::new();
        for burst in [1.0, 10.0, 150.0] {
            let carrier = CarrierBucket::new(10.0, burst, 30 * SEC, T0);
            let mut sim = Sim::with(LimiterConfig::new(50.0), carrier, 500, u64::MAX);
            sim.run_until(1_800);
            let learning = between(&sim.accepted, 60, 600) as f64 / (540.0 * 10.0);
            let settled = between(&sim.accepted, 600, 1_800) as f64 / (1_200.0 * 10.0);
            let throttles = between(&sim.throttled, 600, 1_800);
            println!(
                "told 50/s, capacity 10/s, burst {burst}, Retry-After 30 s: {:.1}% of capacity \
                 from 1 to 10 min, {:.1}% from 10 to 30 min ({throttles} 429s), final rate {:.2}/s",
                100.0 * learning,
                100.0 * settled,
                sim.limiter.rate()
            );
            if learning < 0.90 || settled < 0.90 {
                failures.push(format!(
                    "burst {burst}: {:.1}% then {:.1}%",
                    100.0 * learning,
                    100.0 * settled
                ));
            }
            assert!(sim.max_offered_per_second() <= 50);
        }
        assert!(failures.is_empty(), "{failures:?}");
    }

    #[test]
    fn a_carrier_slower_than_one_a_second_is_not_hammered() {
        // Told 1/s, the carrier takes one every 4 s (0.25/s) or every 2 s:
        // with the floor set to 0.1/s, 429s are at most 5% of sends.
        for capacity in [0.25, 0.5] {
            let cfg = LimiterConfig {
                min_per_sec: 0.1,
                ..LimiterConfig::new(1.0)
            };
            let carrier = CarrierBucket::new(capacity, 1.0, SEC, T0);
            let mut sim = Sim::with(cfg, carrier, 300, 300);
            sim.run_until(7_200);
            let (sent, throttled) = (sim.offered.len(), sim.throttled.len());
            println!(
                "told 1/s, capacity {capacity}/s, floor 0.1/s: {} accepted, {throttled} 429s of {sent} sends, final rate {:.3}/s",
                sim.accepted.len(),
                sim.limiter.rate()
            );
            assert_eq!(sim.accepted.len(), 300, "capacity {capacity}");
            assert!(
                throttled as f64 <= 0.05 * sent as f64,
                "capacity {capacity}: {throttled} 429s of {sent} sends"
            );
        }
    }

    #[test]
    fn recovers_when_capacity_returns() {
        for burst in [1.0, 150.0] {
            let mut sim = Sim::new(50.0, 50.0, burst, 500, u64::MAX);
            sim.run_until(120);
            sim.carrier.set_capacity(T0.plus(120 * SEC), 20.0);
            sim.run_until(300);
            sim.carrier.set_capacity(T0.plus(300 * SEC), 50.0);
            sim.run_until(600);
            let per_s = |from_s: u64| between(&sim.accepted, from_s, from_s + 10) as f64 / 10.0;
            let profile: Vec<String> = (0..60).map(|w| format!("{:.0}", per_s(w * 10))).collect();
            let low = between(&sim.accepted, 180, 300) as f64 / 120.0;
            // Seconds from the capacity's return to the end of the first 10 s
            // window with at least 45 sends/s accepted, and until the pacing
            // rate is back to 45/s.
            let back_s = (30..60)
                .map(|w| w * 10)
                .find(|&from| per_s(from) >= 45.0)
                .map(|from| from + 10 - 300);
            let returned = T0.plus(300 * SEC);
            let paced_s = sim
                .rates
                .iter()
                .find(|(t, r)| *t >= returned && *r >= 45.0)
                .map(|(t, _)| t.since(returned) / SEC);
            println!(
                "capacity 50 -> 20 at 120 s -> 50 at 300 s, burst {burst}: {low:.1}/s accepted in 180-300 s; \
                 back to >= 45/s accepted {back_s:?} s and paced {paced_s:?} s after the return; \
                 accepted/s per 10 s: {}",
                profile.join(" ")
            );
            assert!(
                low >= 0.9 * 20.0,
                "burst {burst}: {low:.1}/s at capacity 20"
            );
            assert!(
                back_s.is_some_and(|s| s <= 120),
                "burst {burst}: {back_s:?}"
            );
            assert!(
                per_s(590) >= 49.0,
                "burst {burst}: settles at the told limit again"
            );
        }
    }

    fn booked(admit: Admit) -> Ticket {
        match admit {
            Admit::Wait { until, ticket, .. } => {
                assert_eq!(until, ticket.slot);
                ticket
            }
            Admit::Granted => panic!("expected a wait"),
        }
    }

    /// Members booked deep into the future, escalations arriving now and
    /// then: every job comes back at its slot. Returns the grant times (ms)
    /// of (members, priority) and each priority send's wait.
    fn priority_run(rate: f64, members: usize, arrivals: &[u64]) -> (Vec<Ts>, Vec<Ts>, Vec<u64>) {
        /// (when, sequence, priority?, job index, asked at)
        type Due = Reverse<(Ts, u64, bool, usize, Ts)>;
        let mut l = AdaptiveLimiter::new(LimiterConfig::new(rate), T0);
        let mut due: BinaryHeap<Due> = BinaryHeap::new();
        let mut seq = 0;
        let mut tickets: Vec<Option<Ticket>> = vec![None; members + arrivals.len()];
        for i in 0..members {
            seq += 1;
            due.push(Reverse((T0, seq, false, i, T0)));
        }
        for (k, at) in arrivals.iter().enumerate() {
            seq += 1;
            let t = T0.plus(*at);
            due.push(Reverse((t, seq, true, members + k, t)));
        }
        let (mut m, mut p, mut waits) = (Vec::new(), Vec::new(), Vec::new());
        while let Some(Reverse((now, _, priority, job, asked))) = due.pop() {
            let admit = if priority {
                l.admit_priority(now, tickets[job])
            } else {
                l.admit(now, tickets[job])
            };
            match admit {
                Admit::Granted => {
                    l.on_success(now);
                    if priority {
                        p.push(now);
                        waits.push(now.since(asked));
                    } else {
                        m.push(now);
                    }
                }
                Admit::Wait { until, ticket, .. } => {
                    tickets[job] = Some(ticket);
                    seq += 1;
                    due.push(Reverse((until, seq, priority, job, asked)));
                }
            }
        }
        (m, p, waits)
    }

    #[test]
    fn priority_sends_go_ahead_of_booked_members_without_exceeding_the_pace() {
        // 50/s, 2,000 members booked 40 s deep; 30 escalations, some in
        // bursts, arriving while the backlog lasts.
        let arrivals: Vec<u64> = (0..30u64)
            .map(|k| 1_000 + (k / 3) * 2_500 + (k % 3))
            .collect();
        let (members, priority, waits) = priority_run(50.0, 2_000, &arrivals);
        assert_eq!((members.len(), priority.len()), (2_000, 30));
        let mut all: Vec<Ts> = members.iter().chain(&priority).copied().collect();
        all.sort();
        for pair in all.windows(2) {
            assert!(
                pair[1].since(pair[0]) >= 20,
                "two sends closer than the pace: {pair:?}"
            );
        }
        for w in all.windows(51) {
            assert!(w[50].since(w[0]) >= 1_000, "51 sends within a second");
        }
        // The lane's pace is half the rate: a burst of three waits at most
        // two lane intervals (80 ms) and one slot.
        assert!(waits.iter().all(|w| *w <= 100), "{waits:?}");
        // Members keep their order and are all sent, about 30 slots later.
        let last = members.iter().max().copied().unwrap_or(T0);
        assert!(last.since(T0) <= (2_000 + 30) * 20, "{:?}", last.since(T0));

        // At 1 call/s, an escalation waits at most one second and the lane
        // takes no more than its share.
        let (members, priority, waits) = priority_run(1.0, 60, &[5_000, 5_001, 5_002, 30_000]);
        assert!(waits.iter().all(|w| *w <= 5_000), "{waits:?}");
        let mut all: Vec<Ts> = members.iter().chain(&priority).copied().collect();
        all.sort();
        for pair in all.windows(2) {
            assert!(pair[1].since(pair[0]) >= 1_000, "{pair:?}");
        }
        assert!(
            waits[0] <= 1_000,
            "the next slot after the last grant: {waits:?}"
        );
    }

    #[test]
    fn waiting_jobs_get_distinct_ordered_slots() {
        let mut limiter = AdaptiveLimiter::new(LimiterConfig::default(), T0);
        assert_eq!(
            limiter.admit(T0, None),
            Admit::Granted,
            "an idle endpoint sends at once"
        );
        let tickets: Vec<Ticket> = (0..1_000)
            .map(|_| booked(limiter.admit(T0, None)))
            .collect();
        assert_eq!(tickets[0].slot, T0.plus(20));
        for pair in tickets.windows(2) {
            assert_eq!(
                pair[1].slot.since(pair[0].slot),
                20,
                "paced at 1/50 s, distinct and increasing"
            );
        }
        assert_eq!(limiter.booked_until(), tickets[999].slot.plus(20));
        // Coming back early: the same slot again, nothing drawn.
        let early = limiter.admit(T0.plus(5), Some(tickets[0]));
        assert_eq!(
            early,
            Admit::Wait {
                until: tickets[0].slot,
                ticket: tickets[0],
                throttled_since: None,
            }
        );
        // A newcomer queues behind every booked job.
        assert_eq!(
            booked(limiter.admit(T0.plus(10), None)).slot,
            tickets[999].slot.plus(20)
        );
        for ticket in &tickets {
            assert_eq!(limiter.admit(ticket.slot, Some(*ticket)), Admit::Granted);
            limiter.on_success(ticket.slot);
        }
        assert_eq!(limiter.rate(), 50.0);
    }

    #[test]
    fn throttle_rebooks_outstanding_tickets() {
        let mut limiter = AdaptiveLimiter::new(LimiterConfig::default(), T0);
        assert_eq!(limiter.admit(T0, None), Admit::Granted);
        limiter.on_success(T0);
        let tickets: Vec<Ticket> = (0..10).map(|_| booked(limiter.admit(T0, None))).collect();
        let now = tickets[0].slot;
        assert_eq!(limiter.admit(now, Some(tickets[0])), Admit::Granted);
        // (A pause under LONG_PAUSE: after a long one the slots climb, see
        // `after_a_first_long_pause_the_slots_climb_within_the_limit`.)
        limiter.on_throttled(now, Some(4_000));
        let pause_end = now.plus(4_000);
        assert_eq!(limiter.paused_until(), Some(pause_end));
        assert!(limiter.rate() < 50.0, "a 429 lowers the rate");

        // The throttled job asks again: first in line after the pause.
        let retry = booked(limiter.admit(now, None));
        assert_eq!(retry.slot, pause_end);
        assert_ne!(retry.epoch, tickets[0].epoch);
        // Holders of old-epoch tickets, coming back at their old slots (all
        // inside the pause), are booked again after it, in their order, at
        // the new rate.
        let spacing = (1000.0 / limiter.rate()).floor() as u64;
        let mut last = retry;
        let mut rebooked = Vec::new();
        for old in &tickets[1..] {
            let new = booked(limiter.admit(old.slot, Some(*old)));
            assert_eq!(new.epoch, retry.epoch);
            assert!(
                new.slot.since(last.slot) >= spacing,
                "{new:?} after {last:?}"
            );
            last = new;
            rebooked.push(new);
        }
        // A new ticket is honoured at its slot.
        for ticket in &rebooked {
            assert_eq!(limiter.admit(ticket.slot, Some(*ticket)), Admit::Granted);
        }
        assert_eq!(limiter.paused_until(), None, "the pause is over");
    }

    #[test]
    fn after_a_first_long_pause_the_slots_climb_within_the_limit() {
        // The first 429 comes with a 30 s pause and nothing measured: the
        // jobs booked after it are spaced ever closer (the climb), never
        // closer than the told limit allows, and the first is booked at
        // the pause's end.
        let mut limiter = AdaptiveLimiter::new(LimiterConfig::new(50.0), T0);
        assert_eq!(limiter.admit(T0, None), Admit::Granted);
        limiter.on_success(T0);
        limiter.on_throttled(T0.plus(20), Some(30 * SEC));
        let resume = T0.plus(20 + 30 * SEC);
        let slots: Vec<Ts> = (0..400)
            .map(|_| booked(limiter.admit(T0.plus(20), None)).slot)
            .collect();
        assert_eq!(slots[0], resume);
        let gaps: Vec<u64> = slots.windows(2).map(|w| w[1].since(w[0])).collect();
        assert!(gaps.iter().all(|g| *g >= 20), "faster than 50/s");
        assert!(
            gaps.windows(2).all(|w| w[1] <= w[0] + 1),
            "the spacing only shrinks (slots are whole ms): {gaps:?}"
        );
        // It starts at an eighth of the rate that failed and reaches it.
        assert_eq!(gaps[0], 160);
        assert_eq!(*gaps.last().unwrap_or(&0), 20);
    }

    #[test]
    fn limiter_state_stored_before_the_climb_reads_back() {
        // A DynamoDB item written by the previous version has no climb
        // fields: it reads back and goes on pacing as before.
        let mut limiter = AdaptiveLimiter::new(LimiterConfig::new(50.0), T0);
        limiter.on_throttled(T0, Some(2 * SEC));
        let mut doc = serde_json::to_value(&limiter).expect("encodes");
        let map = doc.as_object_mut().expect("an object");
        for field in ["climb", "last_spell", "spell_from", "spell_accepted"] {
            map.remove(field);
        }
        let back: AdaptiveLimiter = serde_json::from_value(doc).expect("old state reads");
        assert_eq!(back, limiter);
    }

    #[test]
    fn throttles_of_one_event_cut_once() {
        let mut limiter = AdaptiveLimiter::new(LimiterConfig::default(), T0);
        limiter.on_throttled(T0, None);
        assert_eq!(limiter.paused_until(), Some(T0.plus(DEFAULT_RETRY_AFTER)));
        let once = limiter.rate();
        // Sends already in flight come back 429 during the pause: the pause
        // may grow, the rate is not cut again.
        limiter.on_throttled(T0.plus(300), Some(2_000));
        assert_eq!(limiter.rate(), once);
        assert_eq!(limiter.paused_until(), Some(T0.plus(2_300)));
        limiter.on_throttled(T0.plus(2_300), Some(1_000));
        assert!(
            limiter.rate() < once,
            "a 429 after the pause is a new event"
        );
    }

    #[test]
    fn never_below_floor() {
        let cfg = LimiterConfig {
            min_per_sec: 2.0,
            ..LimiterConfig::new(50.0)
        };
        let mut limiter = AdaptiveLimiter::new(cfg, T0);
        let mut now = T0;
        for _ in 0..40 {
            // One send gets through after each pause, then the next 429.
            assert_eq!(limiter.admit(now, None), Admit::Granted);
            limiter.on_success(now);
            limiter.on_throttled(now, Some(1_000));
            assert!(limiter.rate() >= 2.0);
            now = now.plus(1_000);
        }
        assert_eq!(limiter.rate(), 2.0);
        // Paced at the floor: 500 ms between sends.
        assert_eq!(limiter.admit(now, None), Admit::Granted);
        let a = booked(limiter.admit(now, None));
        let b = booked(limiter.admit(now, None));
        assert_eq!((a.slot.since(now), b.slot.since(a.slot)), (500, 500));

        // A carrier that takes less than the floor: the limiter stays at the
        // floor (and the carrier keeps answering 429) rather than stalling.
        let mut sim = Sim::new(50.0, 0.25, 1.0, 50, u64::MAX);
        sim.run_until(600);
        assert_eq!(sim.limiter.rate(), 1.0);
        assert!(sim.rates.iter().all(|(_, r)| *r >= 1.0));

        // Out-of-range configurations are clamped.
        let odd = AdaptiveLimiter::new(
            LimiterConfig {
                limit_per_sec: 5_000.0,
                min_per_sec: 9_000.0,
                priority_share: 0.5,
            },
            T0,
        );
        assert_eq!(
            (odd.rate(), odd.floor),
            (MAX_RATE_PER_SEC, MAX_RATE_PER_SEC)
        );
        let nan = AdaptiveLimiter::new(
            LimiterConfig {
                limit_per_sec: f64::NAN,
                min_per_sec: -1.0,
                priority_share: f64::NAN,
            },
            T0,
        );
        assert!(nan.rate() > 0.0 && nan.rate() <= nan.limit && nan.floor <= nan.limit);
    }

    #[test]
    fn carrier_bucket_answers_429_after_its_burst() {
        let mut carrier = CarrierBucket::new(10.0, 150.0, 1_000, T0);
        assert!((0..150).all(|_| carrier.offer(T0).is_ok()));
        assert_eq!(carrier.offer(T0), Err(1_000));
        assert_eq!(carrier.offer(T0.plus(99)), Err(1_000));
        assert_eq!(
            carrier.offer(T0.plus(100)),
            Ok(()),
            "one token per 100 ms at 10/s"
        );
        assert_eq!(carrier.offer(T0.plus(100)), Err(1_000));
    }

    #[test]
    fn same_calls_give_same_answers() {
        let (_, _, _, a) = hidden_capacity_run(37.0, 150.0);
        let (_, _, _, b) = hidden_capacity_run(37.0, 150.0);
        assert_eq!((&a.offered, &a.throttled), (&b.offered, &b.throttled));
        assert_eq!(a.limiter.rate().to_bits(), b.limiter.rate().to_bits());
    }
}
