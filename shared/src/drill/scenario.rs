//! Drill scenarios (TOML): the incident as the seed's trigger payload, the
//! population (listed stakeholders and generated ones), carriers with their
//! hidden behaviour, people's behaviour, and policy overrides. Loading reports
//! every problem with its field path (and line, for syntax and type errors)
//! and yields nothing unless the whole file is valid.

use crate::domain::{
    Channel, ContactMethods, EmailAddress, GroupId, InvalidValue, Millis, PhoneNumber,
    PushEndpoint, StakeholderId, Tier, Trigger, Ts,
};
use crate::policy::Policy;
use serde::Deserialize;
use std::collections::BTreeMap;

/// A validated scenario.
#[derive(Debug, Clone)]
pub struct Scenario {
    pub name: String,
    pub seed: u64,
    pub trigger: Trigger,
    pub start: Ts,
    pub group_name: String,
    pub on_call_manager: Option<StakeholderId>,
    pub people: Vec<PersonSpec>,
    /// Members of the group, in order.
    pub members: Vec<StakeholderId>,
    pub behaviours: Vec<Behaviour>,
    pub carriers: [CarrierSpec; 4],
    pub policy: Policy,
    pub close_after: Option<Millis>,
    /// Sent with the close (`close_after`) to everyone reached.
    pub all_clear: Option<crate::domain::MessageTemplate>,
    /// Updates the operator posts to the first incident while it runs.
    pub updates: Vec<UpdateSpec>,
    pub max_virtual: Millis,
    /// Live contact validation against a simulated HRIS; `None`: directory only.
    pub contact_source: Option<ContactSourceSpec>,
    /// Faults of Muster's own machinery (lost jobs and timers, re-sent
    /// triggers, duplicate answers).
    pub faults: Faults,
    /// More incidents in the same drill (`[[incidents]]`), sharing its
    /// carriers, limiter, directory and people.
    pub more: Vec<MoreIncident>,
}

impl Scenario {
    /// Member cascades the drill's incidents start: every incident's group.
    pub fn member_cascades(&self) -> u64 {
        self.members.len() as u64
            + self
                .more
                .iter()
                .map(|m| m.members.len() as u64)
                .sum::<u64>()
    }
}

/// An update the operator posts, `after` the trigger.
#[derive(Debug, Clone)]
pub struct UpdateSpec {
    pub after: Millis,
    pub message: crate::domain::MessageTemplate,
    pub audience: crate::domain::Audience,
}

/// Another incident of a drill, triggered while the first runs.
#[derive(Debug, Clone)]
pub struct MoreIncident {
    pub trigger: Trigger,
    /// When it is triggered, after the drill's start.
    pub at: Millis,
    /// When it is closed, after its own trigger.
    pub close_after: Option<Millis>,
    /// Its group's members: the scenario's group when it names that group,
    /// else a group of its own made of the last `members` of it.
    pub members: Vec<StakeholderId>,
    /// Whether its group is one of its own (not the scenario's).
    pub own_group: bool,
}

/// Faults of the system around the cascades, beside the carriers' own.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Faults {
    /// Share of work-queue jobs lost before they run (a crash between the
    /// state write and the act, a message gone from a queue): the sweep
    /// must recover them.
    pub lost_jobs: f64,
    /// Share of timers lost before they fire.
    pub lost_timers: f64,
    /// Share of acknowledgements the person sends twice.
    pub duplicate_acks: f64,
    /// Share of SMS acknowledgements that come as a text reply (`1`, `ACK`,
    /// `ack <code>`, `OK`) from the person's phone, through the number
    /// index, rather than straight to the cascade.
    pub sms_text_replies: f64,
    /// Share of delivered SMS the person answers STOP (an opt-out).
    pub sms_stop: f64,
    /// When the monitoring system sends the same trigger again (after the
    /// start); each is a replay.
    pub retriggers: Vec<Millis>,
    /// Share of jobs, timers and events delivered to two workers at once,
    /// whose store calls interleave (concurrent writers on one cascade).
    pub concurrent_deliveries: f64,
}

#[derive(Debug, Clone)]
pub struct PersonSpec {
    pub id: StakeholderId,
    pub name: String,
    pub tier: Tier,
    /// What the directory holds (possibly stale).
    pub contacts: ContactMethods,
    /// What the system of record holds and where the person is really
    /// reachable; messages to any other address fail.
    pub current: ContactMethods,
    pub preferences: Vec<Channel>,
    pub behaviour: usize,
    /// Their manager in the directory (the next step of an escalation chain).
    pub manager: Option<StakeholderId>,
    /// Their locale in the directory (kept form).
    pub locale: Option<String>,
    /// Their time zone and quiet hours in the directory.
    pub quiet: Option<crate::domain::Quiet>,
}

/// The simulated HRIS answering live contact lookups.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ContactSourceSpec {
    /// Share of lookups that fail (5xx).
    pub failure_rate: f64,
    /// Share of lookups that time out.
    pub timeout_rate: f64,
    /// How long a lookup takes (none: at once). Lookups run
    /// `lookup_max_in_flight` at a time, so each holds the expansion for
    /// its latency divided by that.
    pub latency: Option<Dist>,
    /// The policy's `lookup_max_in_flight`, as the latency's divisor.
    pub in_flight: u32,
}

#[derive(Debug, Clone)]
pub struct Behaviour {
    pub name: String,
    /// Fraction of people who never acknowledge.
    pub never: f64,
    /// Chance of acknowledging once a message is delivered, per channel.
    pub ack: [f64; 4],
    pub ack_delay: Dist,
    /// Of those who answer, the share giving each of the incident's own
    /// answers (by key), in order; the rest acknowledge.
    pub answers: Vec<(String, f64)>,
}

/// A log-normal distribution given by its median and 95th percentile.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Dist {
    pub median: Millis,
    pub p95: Millis,
}

#[derive(Debug, Clone)]
pub struct CarrierSpec {
    pub latency: Dist,
    /// Hidden capacity: above it the carrier answers 429 (None = unlimited).
    pub capacity_per_sec: Option<f64>,
    pub burst: f64,
    pub retry_after: Millis,
    pub transient: f64,
    pub failed: f64,
    pub unreachable: f64,
    pub undelivered: f64,
    pub lost_receipts: f64,
    pub late_receipts: f64,
    /// Retry-After varies between `retry_after` and this.
    pub retry_after_max: Millis,
    /// Share of 429s that carry no Retry-After.
    pub no_retry_after: f64,
    /// The hidden capacity changes to `.1` at `.0` after the start.
    pub capacity_schedule: Vec<(Millis, f64)>,
    /// Windows (from, to after the start) in which every send is a 5xx.
    pub outages: Vec<(Millis, Millis)>,
    /// Share of receipts the carrier sends twice.
    pub duplicate_receipts: f64,
    /// Share of sends followed by a receipt for a message Muster never sent.
    pub unknown_receipts: f64,
    /// Share of receipts the carrier sends before its answer to the send
    /// has reached Muster (the message's reference not yet written).
    pub early_receipts: f64,
    /// Share of sends the carrier accepts (and delivers) but whose answer
    /// never reaches Muster (a send that hangs until its timeout): Muster
    /// sees a transient failure.
    pub lost_answers: f64,
}

impl Default for CarrierSpec {
    fn default() -> Self {
        CarrierSpec {
            latency: Dist {
                median: 3_000,
                p95: 10_000,
            },
            capacity_per_sec: None,
            burst: 0.0,
            retry_after: 1_000,
            transient: 0.0,
            failed: 0.0,
            unreachable: 0.0,
            undelivered: 0.0,
            lost_receipts: 0.0,
            late_receipts: 0.0,
            retry_after_max: 1_000,
            no_retry_after: 0.0,
            capacity_schedule: Vec::new(),
            outages: Vec::new(),
            duplicate_receipts: 0.0,
            unknown_receipts: 0.0,
            early_receipts: 0.0,
            lost_answers: 0.0,
        }
    }
}

/// One problem with a scenario file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScenarioError {
    pub field: String,
    pub message: String,
}

impl std::fmt::Display for ScenarioError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

// ---- raw file shape -------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawScenario {
    name: Option<String>,
    #[serde(default)]
    description: Option<String>,
    seed: Option<u64>,
    close_after: Option<RawDuration>,
    all_clear: Option<String>,
    #[serde(default)]
    updates: Vec<RawUpdate>,
    max_virtual: Option<RawDuration>,
    incident: toml::Table,
    #[serde(default)]
    group: RawGroup,
    #[serde(default)]
    stakeholders: Vec<RawPerson>,
    #[serde(default)]
    population: Vec<RawPopulation>,
    #[serde(default)]
    behaviours: BTreeMap<String, RawBehaviour>,
    #[serde(default)]
    carriers: BTreeMap<String, RawCarrier>,
    #[serde(default)]
    policy: Option<toml::Table>,
    contact_source: Option<RawContactSource>,
    faults: Option<RawFaults>,
    /// More incidents: each a trigger payload plus `at`, `close_after` and
    /// `members`.
    #[serde(default)]
    incidents: Vec<toml::Table>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUpdate {
    after: RawDuration,
    message: String,
    audience: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFaults {
    lost_jobs: Option<f64>,
    lost_timers: Option<f64>,
    duplicate_acks: Option<f64>,
    sms_text_replies: Option<f64>,
    sms_stop: Option<f64>,
    #[serde(default)]
    retriggers: Vec<RawDuration>,
    concurrent_deliveries: Option<f64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCapacityStep {
    at: RawDuration,
    capacity_per_sec: f64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWindow {
    from: RawDuration,
    to: RawDuration,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawContactSource {
    failure_rate: Option<f64>,
    timeout_rate: Option<f64>,
    latency: Option<RawDist>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawGroup {
    name: Option<String>,
    on_call_manager: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPerson {
    id: String,
    name: Option<String>,
    tier: Option<i64>,
    phone: Option<String>,
    sms: Option<String>,
    email: Option<String>,
    push: Option<String>,
    channels: Option<Vec<String>>,
    behaviour: Option<String>,
    member: Option<bool>,
    /// The number the HRIS holds now, when the directory's `phone` is stale.
    current_phone: Option<String>,
    current_email: Option<String>,
    /// Their manager (a listed stakeholder).
    manager: Option<String>,
    /// Their locale in the directory (fr, fr-CA).
    locale: Option<String>,
    /// Their time zone (IANA) and quiet hours ("22:00-07:00"), together.
    time_zone: Option<String>,
    quiet_hours: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPopulation {
    count: u64,
    prefix: Option<String>,
    #[serde(default)]
    tiers: BTreeMap<String, f64>,
    #[serde(default)]
    channels: BTreeMap<String, f64>,
    behaviour: Option<String>,
    #[serde(default)]
    behaviours: BTreeMap<String, f64>,
    preferences: Option<Vec<String>>,
    /// Share of people whose directory phone number is out of date.
    stale_directory: Option<f64>,
    /// Everyone's manager (a listed stakeholder).
    manager: Option<String>,
    /// Share of people with each directory locale (the rest: none).
    #[serde(default)]
    locales: BTreeMap<String, f64>,
    /// Everyone's time zone (IANA) and quiet hours ("22:00-07:00"), together.
    time_zone: Option<String>,
    quiet_hours: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBehaviour {
    never: Option<f64>,
    #[serde(default)]
    ack: BTreeMap<String, f64>,
    ack_delay: Option<RawDist>,
    /// Answer key -> share of those who answer that give it.
    #[serde(default)]
    answers: BTreeMap<String, f64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDist {
    median: RawDuration,
    p95: RawDuration,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCarrier {
    latency: Option<RawDist>,
    capacity_per_sec: Option<f64>,
    burst: Option<f64>,
    retry_after: Option<RawDuration>,
    transient: Option<f64>,
    failed: Option<f64>,
    unreachable: Option<f64>,
    undelivered: Option<f64>,
    lost_receipts: Option<f64>,
    late_receipts: Option<f64>,
    retry_after_max: Option<RawDuration>,
    no_retry_after: Option<f64>,
    #[serde(default)]
    capacity_schedule: Vec<RawCapacityStep>,
    #[serde(default)]
    outages: Vec<RawWindow>,
    duplicate_receipts: Option<f64>,
    unknown_receipts: Option<f64>,
    early_receipts: Option<f64>,
    lost_answers: Option<f64>,
}

/// Whole seconds or a duration string ("90s", "15m").
#[derive(Deserialize, Clone)]
#[serde(untagged)]
enum RawDuration {
    Secs(i64),
    Text(String),
}

/// Population members are numbered from 1; their fictional numbers use the
/// +1 NXX-555-01XX range set aside for fiction.
const AREA_CODES: [u32; 20] = [
    201, 202, 206, 212, 213, 305, 312, 404, 415, 503, 512, 602, 617, 702, 713, 720, 808, 816, 907,
    919,
];

impl Scenario {
    pub fn from_toml(text: &str) -> Result<Scenario, Vec<ScenarioError>> {
        let raw: RawScenario = toml::from_str(text).map_err(|e| {
            let line = e
                .span()
                .map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1);
            vec![ScenarioError {
                field: line
                    .map(|l| format!("line {l}"))
                    .unwrap_or_else(|| "file".into()),
                message: e.message().to_string(),
            }]
        })?;
        let mut v = Validator::default();
        let s = v.scenario(raw);
        match s {
            Some(s) if v.errors.is_empty() => Ok(s),
            _ => Err(v.errors),
        }
    }
}

#[derive(Default)]
struct Validator {
    errors: Vec<ScenarioError>,
}

impl Validator {
    fn err(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.errors.push(ScenarioError {
            field: field.into(),
            message: message.into(),
        });
    }

    fn invalid(&mut self, field: &str, e: InvalidValue) {
        self.err(field, e.message);
    }

    /// A person's (or population's) `time_zone` and `quiet_hours`, which go together.
    fn quiet(
        &mut self,
        f: &str,
        zone: Option<&str>,
        hours: Option<&str>,
    ) -> Option<crate::domain::Quiet> {
        match (zone, hours) {
            (None, None) => None,
            (Some(z), Some(h)) => {
                let z = crate::domain::time_zone(z)
                    .map_err(|e| self.err(format!("{f}.time_zone"), e.message))
                    .ok();
                let h = crate::domain::QuietHours::parse(h)
                    .map_err(|e| self.err(format!("{f}.quiet_hours"), e.message))
                    .ok();
                Some(crate::domain::Quiet {
                    time_zone: z?,
                    hours: h?,
                })
            }
            _ => {
                self.err(
                    format!("{f}.quiet_hours"),
                    "time_zone and quiet_hours go together",
                );
                None
            }
        }
    }

    fn duration(&mut self, field: &str, d: &RawDuration) -> Option<Millis> {
        match d {
            RawDuration::Secs(s) if *s >= 0 => Some(*s as u64 * 1000),
            RawDuration::Text(t) => match humantime::parse_duration(t) {
                Ok(d) => Some(d.as_millis() as u64),
                Err(e) => {
                    self.err(field, format!("invalid duration {t:?}: {e}"));
                    None
                }
            },
            RawDuration::Secs(s) => {
                self.err(field, format!("invalid duration {s}: must not be negative"));
                None
            }
        }
    }

    fn dist(&mut self, field: &str, d: &RawDist) -> Option<Dist> {
        let median = self.duration(&format!("{field}.median"), &d.median)?;
        let p95 = self.duration(&format!("{field}.p95"), &d.p95)?;
        if p95 < median {
            self.err(format!("{field}.p95"), "must be at least the median");
            return None;
        }
        Some(Dist { median, p95 })
    }

    fn prob(&mut self, field: &str, p: Option<f64>) -> f64 {
        match p {
            None => 0.0,
            Some(p) if (0.0..=1.0).contains(&p) => p,
            Some(p) => {
                self.err(field, format!("{p} is not a probability between 0 and 1"));
                0.0
            }
        }
    }

    fn channel_map(&mut self, field: &str, m: &BTreeMap<String, f64>, default: f64) -> [f64; 4] {
        let mut out = [default; 4];
        for (k, p) in m {
            let f = format!("{field}.{k}");
            match Channel::parse(k) {
                Ok(c) => out[c.index()] = self.prob(&f, Some(*p)),
                Err(e) => self.invalid(&f, e),
            }
        }
        out
    }

    fn channels(&mut self, field: &str, list: &[String]) -> Vec<Channel> {
        let mut out = Vec::new();
        for (i, c) in list.iter().enumerate() {
            match Channel::parse(c) {
                Ok(ch) if !out.contains(&ch) => out.push(ch),
                Ok(_) => self.err(
                    format!("{field}[{i}]"),
                    format!("channel {c:?} listed twice"),
                ),
                Err(e) => self.invalid(&format!("{field}[{i}]"), e),
            }
        }
        out
    }

    fn scenario(&mut self, raw: RawScenario) -> Option<Scenario> {
        let _ = raw.description;
        let trigger =
            match Trigger::from_json(&serde_json::to_value(&raw.incident).unwrap_or_default()) {
                Ok(t) => Some(t),
                Err(es) => {
                    for e in es {
                        self.err(format!("incident.{}", e.field), e.message);
                    }
                    None
                }
            };
        let start = trigger
            .as_ref()
            .and_then(|t| t.timestamp)
            .unwrap_or(Ts(1_716_215_520_000));

        let mut policy = Policy::default();
        if let Some(p) = &raw.policy
            && let Err(es) = policy.apply(p, "policy.")
        {
            for e in es {
                self.err(
                    e.path,
                    if e.value.is_empty() {
                        e.message
                    } else {
                        format!("{} ({})", e.message, e.value)
                    },
                );
            }
        }

        let mut names: BTreeMap<String, usize> = BTreeMap::new();
        let mut behaviours = Vec::new();
        for (name, b) in &raw.behaviours {
            let f = format!("behaviours.{name}");
            let never = self.prob(&format!("{f}.never"), b.never);
            let ack = self.channel_map(&format!("{f}.ack"), &b.ack, 0.0);
            let ack_delay = match &b.ack_delay {
                Some(d) => self.dist(&format!("{f}.ack_delay"), d).unwrap_or(Dist {
                    median: 30_000,
                    p95: 120_000,
                }),
                None => Dist {
                    median: 30_000,
                    p95: 120_000,
                },
            };
            let mut answers = Vec::new();
            let mut total = 0.0;
            for (k, p) in &b.answers {
                let field = format!("{f}.answers.{k}");
                let p = self.prob(&field, Some(*p));
                if trigger
                    .as_ref()
                    .is_some_and(|t| t.responses.by_key(k).is_none())
                {
                    self.err(&field, format!("{k:?} is none of the incident's responses"));
                }
                total += p;
                answers.push((k.clone(), p));
            }
            if total > 1.0 + 1e-9 {
                self.err(
                    format!("{f}.answers"),
                    format!("the shares add up to {total}, more than 1"),
                );
            }
            names.insert(name.clone(), behaviours.len());
            behaviours.push(Behaviour {
                name: name.clone(),
                never,
                ack,
                ack_delay,
                answers,
            });
        }
        if !names.contains_key("default") {
            names.insert("default".into(), behaviours.len());
            behaviours.push(Behaviour {
                name: "default".into(),
                never: 0.0,
                ack: [0.7, 0.6, 0.4, 0.5],
                ack_delay: Dist {
                    median: 30_000,
                    p95: 120_000,
                },
                answers: Vec::new(),
            });
        }
        let behaviour = |v: &mut Self, field: &str, name: Option<&String>| -> usize {
            let name = name.map(String::as_str).unwrap_or("default");
            match names.get(name) {
                Some(i) => *i,
                None => {
                    v.err(
                        field,
                        format!("unknown behaviour {name:?}: define it under [behaviours.{name}]"),
                    );
                    0
                }
            }
        };

        let mut carriers: [CarrierSpec; 4] = Default::default();
        for (name, c) in &raw.carriers {
            let f = format!("carriers.{name}");
            let ch = match Channel::parse(name) {
                Ok(ch) => ch,
                Err(e) => {
                    self.invalid(&f, e);
                    continue;
                }
            };
            let mut spec = CarrierSpec::default();
            if let Some(l) = &c.latency
                && let Some(d) = self.dist(&format!("{f}.latency"), l)
            {
                spec.latency = d;
            }
            // 0: a carrier that answers 429 to everything.
            match c.capacity_per_sec {
                Some(cap) if cap >= 0.0 && cap.is_finite() => spec.capacity_per_sec = Some(cap),
                Some(cap) => self.err(
                    format!("{f}.capacity_per_sec"),
                    format!("{cap} must be a number of 0 or more"),
                ),
                None => {}
            }
            spec.burst = match c.burst {
                Some(b) if b >= 1.0 => b,
                Some(b) => {
                    self.err(format!("{f}.burst"), format!("{b} must be at least 1"));
                    1.0
                }
                // A carrier with no capacity takes nothing, not even a first burst.
                None if spec.capacity_per_sec == Some(0.0) => 0.0,
                None => spec.capacity_per_sec.unwrap_or(1.0).max(1.0),
            };
            if let Some(r) = &c.retry_after
                && let Some(ms) = self.duration(&format!("{f}.retry_after"), r)
            {
                spec.retry_after = ms.max(1);
            }
            spec.transient = self.prob(&format!("{f}.transient"), c.transient);
            spec.failed = self.prob(&format!("{f}.failed"), c.failed);
            spec.unreachable = self.prob(&format!("{f}.unreachable"), c.unreachable);
            spec.undelivered = self.prob(&format!("{f}.undelivered"), c.undelivered);
            spec.lost_receipts = self.prob(&format!("{f}.lost_receipts"), c.lost_receipts);
            spec.late_receipts = self.prob(&format!("{f}.late_receipts"), c.late_receipts);
            spec.retry_after_max = spec.retry_after;
            if let Some(r) = &c.retry_after_max
                && let Some(ms) = self.duration(&format!("{f}.retry_after_max"), r)
            {
                if ms < spec.retry_after {
                    self.err(
                        format!("{f}.retry_after_max"),
                        "must be at least retry_after",
                    );
                }
                spec.retry_after_max = ms.max(spec.retry_after);
            }
            spec.no_retry_after = self.prob(&format!("{f}.no_retry_after"), c.no_retry_after);
            for (i, step) in c.capacity_schedule.iter().enumerate() {
                let sf = format!("{f}.capacity_schedule[{i}]");
                if spec.capacity_per_sec.is_none() {
                    self.err(
                        &sf,
                        "a capacity schedule needs capacity_per_sec to start from",
                    );
                }
                let at = self.duration(&format!("{sf}.at"), &step.at);
                if !(step.capacity_per_sec >= 0.0 && step.capacity_per_sec.is_finite()) {
                    self.err(
                        format!("{sf}.capacity_per_sec"),
                        format!("{} must be a number of 0 or more", step.capacity_per_sec),
                    );
                } else if let Some(at) = at {
                    spec.capacity_schedule.push((at, step.capacity_per_sec));
                }
            }
            spec.capacity_schedule.sort_by_key(|(at, _)| *at);
            for (i, w) in c.outages.iter().enumerate() {
                let wf = format!("{f}.outages[{i}]");
                let from = self.duration(&format!("{wf}.from"), &w.from);
                let to = self.duration(&format!("{wf}.to"), &w.to);
                match (from, to) {
                    (Some(a), Some(b)) if a < b => spec.outages.push((a, b)),
                    (Some(_), Some(_)) => self.err(&wf, "`to` must come after `from`"),
                    _ => {}
                }
            }
            spec.duplicate_receipts =
                self.prob(&format!("{f}.duplicate_receipts"), c.duplicate_receipts);
            spec.unknown_receipts = self.prob(&format!("{f}.unknown_receipts"), c.unknown_receipts);
            spec.early_receipts = self.prob(&format!("{f}.early_receipts"), c.early_receipts);
            spec.lost_answers = self.prob(&format!("{f}.lost_answers"), c.lost_answers);
            if spec.transient + spec.failed > 1.0 {
                self.err(&f, "transient + failed exceed 1");
            }
            if spec.unreachable + spec.undelivered + spec.lost_receipts + spec.late_receipts > 1.0 {
                self.err(
                    &f,
                    "unreachable + undelivered + lost_receipts + late_receipts exceed 1",
                );
            }
            carriers[ch.index()] = spec;
        }

        let mut people = Vec::new();
        let mut members = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for (i, p) in raw.stakeholders.iter().enumerate() {
            let f = format!("stakeholders[{i}]");
            let id = match StakeholderId::parse(&p.id) {
                Ok(id) => id,
                Err(e) => {
                    self.invalid(&format!("{f}.id"), e);
                    continue;
                }
            };
            if !seen.insert(id.clone()) {
                self.err(
                    format!("{f}.id"),
                    format!("stakeholder {:?} listed twice", p.id),
                );
            }
            let tier = match Tier::new(p.tier.unwrap_or(2)) {
                Ok(t) => t,
                Err(e) => {
                    self.invalid(&format!("{f}.tier"), e);
                    Tier::TWO
                }
            };
            let mut contacts = ContactMethods::default();
            if let Some(s) = &p.phone {
                contacts.phone = PhoneNumber::parse(s)
                    .map_err(|e| self.invalid(&format!("{f}.phone"), e))
                    .ok();
            }
            if let Some(s) = &p.sms {
                contacts.sms = PhoneNumber::parse(s)
                    .map_err(|e| self.invalid(&format!("{f}.sms"), e))
                    .ok();
            }
            if let Some(s) = &p.email {
                contacts.email = EmailAddress::parse(s)
                    .map_err(|e| self.invalid(&format!("{f}.email"), e))
                    .ok();
            }
            if let Some(s) = &p.push {
                contacts.push = PushEndpoint::parse(s)
                    .map_err(|e| self.invalid(&format!("{f}.push"), e))
                    .ok();
            }
            let preferences = p
                .channels
                .as_ref()
                .map(|c| self.channels(&format!("{f}.channels"), c))
                .unwrap_or_default();
            let mut current = contacts.clone();
            if let Some(s) = &p.current_phone {
                current.phone = PhoneNumber::parse(s)
                    .map_err(|e| self.invalid(&format!("{f}.current_phone"), e))
                    .ok();
                if contacts.sms.is_none() {
                    current.sms = None;
                }
            }
            if let Some(s) = &p.current_email {
                current.email = EmailAddress::parse(s)
                    .map_err(|e| self.invalid(&format!("{f}.current_email"), e))
                    .ok();
            }
            let b = behaviour(self, &format!("{f}.behaviour"), p.behaviour.as_ref());
            if p.member.unwrap_or(true) {
                members.push(id.clone());
            }
            let manager = p.manager.as_ref().and_then(|m| {
                StakeholderId::parse(m)
                    .map_err(|e| self.invalid(&format!("{f}.manager"), e))
                    .ok()
            });
            let quiet = self.quiet(&f, p.time_zone.as_deref(), p.quiet_hours.as_deref());
            let locale = p.locale.as_ref().and_then(|l| {
                crate::domain::locale::normalise(l)
                    .map_err(|e| self.err(format!("{f}.locale"), e.message))
                    .ok()
            });
            people.push(PersonSpec {
                id,
                name: p.name.clone().unwrap_or_else(|| p.id.clone()),
                tier,
                contacts,
                current,
                preferences,
                behaviour: b,
                manager,
                locale,
                quiet,
            });
        }

        let mut total: u64 = 0;
        for (i, pop) in raw.population.iter().enumerate() {
            let f = format!("population[{i}]");
            total += pop.count;
            if total > 1_000_000 {
                self.err(
                    format!("{f}.count"),
                    "populations above 1,000,000 stakeholders are not supported by drills",
                );
                break;
            }
            let prefix = pop.prefix.clone().unwrap_or_else(|| format!("p{i}"));
            if StakeholderId::parse(&format!("{prefix}-1")).is_err() {
                self.err(
                    format!("{f}.prefix"),
                    format!("{prefix:?} does not make valid stakeholder ids"),
                );
                continue;
            }
            let mut tiers = [0.0; 3];
            for (k, p) in &pop.tiers {
                match k
                    .trim_start_matches("tier")
                    .parse::<i64>()
                    .ok()
                    .and_then(|n| Tier::new(n).ok())
                {
                    Some(t) => tiers[t.index()] = self.prob(&format!("{f}.tiers.{k}"), Some(*p)),
                    None => self.err(format!("{f}.tiers.{k}"), "unknown tier: expected 1, 2 or 3"),
                }
            }
            if pop.tiers.is_empty() {
                tiers = [0.0, 0.0, 1.0];
            }
            let stale = self.prob(&format!("{f}.stale_directory"), pop.stale_directory);
            let manager = pop.manager.as_ref().and_then(|m| {
                StakeholderId::parse(m)
                    .map_err(|e| self.invalid(&format!("{f}.manager"), e))
                    .ok()
            });
            let has = self.channel_map(&format!("{f}.channels"), &pop.channels, 1.0);
            let quiet = self.quiet(&f, pop.time_zone.as_deref(), pop.quiet_hours.as_deref());
            let mut locales: Vec<(Option<String>, f64)> = Vec::new();
            for (tag, share) in &pop.locales {
                let at = format!("{f}.locales.{tag}");
                let share = self.prob(&at, Some(*share));
                match crate::domain::locale::normalise(tag) {
                    Ok(t) => locales.push((Some(t), share)),
                    Err(e) => self.err(at, e.message),
                }
            }
            let rest = 1.0 - locales.iter().map(|(_, p)| p).sum::<f64>();
            if rest < -1e-9 {
                self.err(format!("{f}.locales"), "shares add up to more than 1");
            }
            locales.push((None, rest.max(0.0)));
            let prefs = pop
                .preferences
                .as_ref()
                .map(|c| self.channels(&format!("{f}.preferences"), c))
                .unwrap_or_default();
            let mix: Vec<(usize, f64)> = if pop.behaviours.is_empty() {
                vec![(
                    behaviour(self, &format!("{f}.behaviour"), pop.behaviour.as_ref()),
                    1.0,
                )]
            } else {
                pop.behaviours
                    .iter()
                    .map(|(k, p)| {
                        (
                            behaviour(self, &format!("{f}.behaviours.{k}"), Some(k)),
                            self.prob(&format!("{f}.behaviours.{k}"), Some(*p)),
                        )
                    })
                    .collect()
            };
            // Deterministic spread: person n gets the tier, channels and
            // behaviour at the quantile n/count, so counts follow the fractions exactly.
            for n in 0..pop.count {
                let id_s = format!("{prefix}-{}", n + 1);
                let Ok(id) = StakeholderId::parse(&id_s) else {
                    continue;
                };
                if !seen.insert(id.clone()) {
                    self.err(
                        format!("{f}.prefix"),
                        format!("generated id {id_s:?} clashes with another stakeholder"),
                    );
                    break;
                }
                let q = (n as f64 + 0.5) / pop.count as f64;
                let tier = Tier::ALL[pick(&tiers, q)];
                let idx = n as usize;
                let area = AREA_CODES[(idx / 100) % AREA_CODES.len()];
                let phone = PhoneNumber::parse(&format!("+1{area}55501{:02}", idx % 100)).ok();
                let mut contacts = ContactMethods::default();
                // Channel availability: stripes with different strides so that the mixes are independent.
                let strides = [7.0, 11.0, 13.0, 17.0];
                let have = |c: usize| {
                    ((n as f64 * strides[c] + 0.5) / pop.count as f64).fract() < has[c]
                        || has[c] >= 1.0
                };
                if have(0) {
                    contacts.phone = phone.clone();
                }
                if have(1) && contacts.phone.is_none() {
                    contacts.sms = phone;
                }
                if have(2) {
                    contacts.email = EmailAddress::parse(&format!("{id_s}@example.com")).ok();
                }
                if have(3) {
                    contacts.push = PushEndpoint::parse(&format!("sim-device-{id_s}")).ok();
                }
                if !have(1) {
                    contacts.sms_opted_out = true;
                }
                // A stale directory entry: the directory still has the old
                // number, the HRIS (and the person's phone) the new one.
                let current = contacts.clone();
                if ((n as f64 * 19.0 + 0.5) / pop.count as f64).fract() < stale {
                    let old_area = AREA_CODES[(idx / 100 + 7) % AREA_CODES.len()];
                    let old =
                        PhoneNumber::parse(&format!("+1{old_area}55501{:02}", (idx + 37) % 100))
                            .ok();
                    if contacts.phone.is_some() {
                        contacts.phone = old.clone();
                    }
                    if contacts.sms.is_some() {
                        contacts.sms = old;
                    }
                }
                let weights: Vec<f64> = mix.iter().map(|(_, p)| *p).collect();
                let b = mix[pick(&weights, ((n as f64 * 0.618_033_988_75) + 0.5).fract())].0;
                members.push(id.clone());
                let shares: Vec<f64> = locales.iter().map(|(_, p)| *p).collect();
                let locale = locales[pick(
                    &shares,
                    ((n as f64 * 23.0 + 0.5) / pop.count as f64).fract(),
                )]
                .0
                .clone();
                people.push(PersonSpec {
                    id,
                    name: id_s,
                    tier,
                    contacts,
                    current,
                    preferences: prefs.clone(),
                    behaviour: b,
                    manager: manager.clone(),
                    locale,
                    quiet: quiet.clone(),
                });
            }
        }
        // An empty group is refused unless it is asked for (a population
        // of 0: the drill of a trigger for an empty group).
        if members.is_empty() && !raw.population.iter().any(|p| p.count == 0) {
            self.err(
                "stakeholders",
                "the group has no members: list [[stakeholders]] or add a [[population]] (count = 0 for an empty group)",
            );
        }
        let on_call_manager = match &raw.group.on_call_manager {
            Some(m) => match StakeholderId::parse(m) {
                Ok(id) if people.iter().any(|p| p.id == id) => Some(id),
                Ok(_) => {
                    self.err(
                        "group.on_call_manager",
                        format!("{m:?} is not a listed stakeholder"),
                    );
                    None
                }
                Err(e) => {
                    self.invalid("group.on_call_manager", e);
                    None
                }
            },
            None => None,
        };
        self.escalation_paths(&raw, &people, &members, on_call_manager.as_ref(), &policy);
        let close_after = raw
            .close_after
            .as_ref()
            .and_then(|d| self.duration("close_after", d));
        let all_clear = raw.all_clear.as_deref().and_then(|m| {
            if close_after.is_none() {
                self.err("all_clear", "goes with the close: set close_after too");
            }
            crate::domain::MessageTemplate::parse(m)
                .map_err(|e| self.err("all_clear", e.message))
                .ok()
        });
        let mut updates = Vec::new();
        for (i, u) in raw.updates.iter().enumerate() {
            let at = format!("updates[{i}]");
            let after = self.duration(&format!("{at}.after"), &u.after);
            let message = crate::domain::MessageTemplate::parse(&u.message)
                .map_err(|e| self.err(format!("{at}.message"), e.message))
                .ok();
            let audience = match &u.audience {
                None => Some(crate::domain::Audience::All),
                Some(a) => crate::domain::Audience::parse(a)
                    .map_err(|e| self.err(format!("{at}.audience"), e.message))
                    .ok(),
            };
            if let (Some(after), Some(message), Some(audience)) = (after, message, audience) {
                updates.push(UpdateSpec {
                    after,
                    message,
                    audience,
                });
            }
        }
        if updates.len() + usize::from(all_clear.is_some()) > crate::domain::MAX_UPDATES {
            self.err(
                "updates",
                format!(
                    "at most {} updates, the all-clear included",
                    crate::domain::MAX_UPDATES
                ),
            );
        }
        let max_virtual = raw
            .max_virtual
            .as_ref()
            .and_then(|d| self.duration("max_virtual", d))
            .unwrap_or(24 * 3_600_000);
        let contact_source = raw.contact_source.as_ref().map(|c| ContactSourceSpec {
            failure_rate: self.prob("contact_source.failure_rate", c.failure_rate),
            timeout_rate: self.prob("contact_source.timeout_rate", c.timeout_rate),
            latency: c
                .latency
                .as_ref()
                .and_then(|l| self.dist("contact_source.latency", l)),
            in_flight: policy.lookup_max_in_flight.max(1),
        });
        let faults = match &raw.faults {
            None => Faults::default(),
            Some(f) => Faults {
                lost_jobs: self.prob("faults.lost_jobs", f.lost_jobs),
                lost_timers: self.prob("faults.lost_timers", f.lost_timers),
                duplicate_acks: self.prob("faults.duplicate_acks", f.duplicate_acks),
                sms_text_replies: self.prob("faults.sms_text_replies", f.sms_text_replies),
                sms_stop: self.prob("faults.sms_stop", f.sms_stop),
                retriggers: f
                    .retriggers
                    .iter()
                    .enumerate()
                    .filter_map(|(i, d)| self.duration(&format!("faults.retriggers[{i}]"), d))
                    .collect(),
                concurrent_deliveries: self
                    .prob("faults.concurrent_deliveries", f.concurrent_deliveries),
            },
        };
        let trigger = trigger?;
        let _ = GroupId::parse(trigger.stakeholder_group_id.as_str());
        let more = self.more_incidents(&raw.incidents, &trigger, &members);
        Some(Scenario {
            name: raw.name.unwrap_or_else(|| trigger.incident_id.to_string()),
            seed: raw.seed.unwrap_or(1),
            group_name: raw
                .group
                .name
                .unwrap_or_else(|| trigger.stakeholder_group_id.to_string()),
            trigger,
            start,
            on_call_manager,
            people,
            members,
            behaviours,
            carriers,
            policy,
            close_after,
            all_clear,
            updates,
            max_virtual,
            contact_source,
            faults,
            more,
        })
    }

    /// `[[incidents]]`: each a trigger payload with its own id, triggered
    /// `at` after the start (default at once), closed `close_after` its
    /// trigger, for the scenario's group or one of its own made of the last
    /// `members` of the scenario's group (default all).
    fn more_incidents(
        &mut self,
        raw: &[toml::Table],
        first: &Trigger,
        members: &[StakeholderId],
    ) -> Vec<MoreIncident> {
        let mut out: Vec<MoreIncident> = Vec::new();
        for (i, table) in raw.iter().enumerate() {
            let f = format!("incidents[{i}]");
            let mut table = table.clone();
            let mut duration = |v: &mut Self, key: &str| -> Option<Millis> {
                let value = table.remove(key)?;
                match value.try_into::<RawDuration>() {
                    Ok(d) => v.duration(&format!("{f}.{key}"), &d),
                    Err(_) => {
                        v.err(
                            format!("{f}.{key}"),
                            "expected seconds or a duration (\"90s\")",
                        );
                        None
                    }
                }
            };
            let at = duration(self, "at").unwrap_or(0);
            let close_after = duration(self, "close_after");
            let count = match table.remove("members") {
                None => None,
                Some(toml::Value::Integer(n)) if n >= 0 && n as usize <= members.len() => {
                    Some(n as usize)
                }
                Some(v) => {
                    self.err(
                        format!("{f}.members"),
                        format!(
                            "{v} must be a whole number from 0 to the group's {} members",
                            members.len()
                        ),
                    );
                    None
                }
            };
            let trigger =
                match Trigger::from_json(&serde_json::to_value(&table).unwrap_or_default()) {
                    Ok(t) => t,
                    Err(es) => {
                        for e in es {
                            self.err(format!("{f}.{}", e.field), e.message);
                        }
                        continue;
                    }
                };
            if trigger.incident_id == first.incident_id
                || out
                    .iter()
                    .any(|m| m.trigger.incident_id == trigger.incident_id)
            {
                self.err(
                    format!("{f}.incidentId"),
                    format!("{} is already another incident's id", trigger.incident_id),
                );
                continue;
            }
            let own_group = trigger.stakeholder_group_id != first.stakeholder_group_id;
            if !own_group && count.is_some() {
                self.err(
                    format!("{f}.members"),
                    "only an incident for a group of its own (another stakeholderGroupId) takes members",
                );
            }
            if let Some(other) = out.iter().find(|m| {
                m.own_group
                    && m.trigger.stakeholder_group_id == trigger.stakeholder_group_id
                    && m.members.len() != count.unwrap_or(members.len())
            }) {
                self.err(
                    format!("{f}.members"),
                    format!(
                        "group {} already has {} members (incident {})",
                        trigger.stakeholder_group_id,
                        other.members.len(),
                        other.trigger.incident_id
                    ),
                );
            }
            let take = if own_group {
                count.unwrap_or(members.len())
            } else {
                members.len()
            };
            out.push(MoreIncident {
                trigger,
                at,
                close_after,
                members: members[members.len() - take..].to_vec(),
                own_group,
            });
        }
        out
    }
}

impl Validator {
    /// Every manager and fallback is a listed stakeholder, and the group has
    /// an escalation path (an on-call manager or the policy's fallback).
    fn escalation_paths(
        &mut self,
        raw: &RawScenario,
        people: &[PersonSpec],
        members: &[StakeholderId],
        on_call: Option<&StakeholderId>,
        policy: &Policy,
    ) {
        let known = |id: &StakeholderId| people.iter().any(|p| &p.id == id);
        for (i, p) in raw.stakeholders.iter().enumerate() {
            if let Some(m) = &p.manager
                && StakeholderId::parse(m).is_ok_and(|id| !known(&id))
            {
                self.err(
                    format!("stakeholders[{i}].manager"),
                    format!("{m:?} is not a listed stakeholder"),
                );
            }
        }
        for (i, p) in raw.population.iter().enumerate() {
            if let Some(m) = &p.manager
                && StakeholderId::parse(m).is_ok_and(|id| !known(&id))
            {
                self.err(
                    format!("population[{i}].manager"),
                    format!("{m:?} is not a listed stakeholder"),
                );
            }
        }
        // The directory's rule, on the scenario's directory.
        let stakeholders: Vec<crate::domain::Stakeholder> = people
            .iter()
            .map(|p| {
                let mut s = crate::domain::Stakeholder::new(
                    p.id.clone(),
                    p.name.clone(),
                    p.tier,
                    ContactMethods::default(),
                );
                s.manager = p.manager.clone();
                s
            })
            .collect();
        let groups: Vec<crate::domain::Group> = trigger_group(raw)
            .map(|id| crate::domain::Group {
                id,
                name: String::new(),
                members: members.to_vec(),
                on_call_manager: on_call.cloned(),
                escalation_channels: Vec::new(),
                idp: None,
            })
            .into_iter()
            .collect();
        for e in crate::directory::escalation_paths(&stakeholders, &groups, policy) {
            let field = if e.location == "policy" {
                format!("policy.{}", e.field)
            } else {
                "group.on_call_manager".to_string()
            };
            let message = if e.value.is_empty() {
                e.message
            } else {
                format!("{:?} {}", e.value, e.message)
            };
            self.err(field, message);
        }
    }
}

/// The group id the scenario's incident names, if it is valid (an invalid
/// one is reported with the incident).
fn trigger_group(raw: &RawScenario) -> Option<GroupId> {
    raw.incident
        .get("stakeholderGroupId")
        .and_then(toml::Value::as_str)
        .and_then(|g| GroupId::parse(g).ok())
}

/// Index of the bucket of `weights` (not necessarily normalised) at quantile `q`.
fn pick(weights: &[f64], q: f64) -> usize {
    let total: f64 = weights.iter().sum();
    if total <= 0.0 {
        return weights.len().saturating_sub(1);
    }
    let mut acc = 0.0;
    for (i, w) in weights.iter().enumerate() {
        acc += w / total;
        if q < acc {
            return i;
        }
    }
    weights.len() - 1
}
