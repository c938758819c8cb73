//! Cascade policy: every timing, order and limit the engine applies, with the
//! defaults of the BCP requirements, loadable from TOML where every value may
//! be overridden. Loading reports every error, each with its dotted path and
//! the offending value, and yields no policy unless all of it is valid.

use crate::domain::{Channel, Millis, Severity, StakeholderId, Tier};
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RetryPolicy {
    /// Retries of one channel after transient send errors (a 4th transient
    /// failure fails the channel).
    pub max_retries: u32,
    pub initial_delay: Millis,
    pub multiplier: f64,
    pub max_delay: Millis,
}

impl RetryPolicy {
    /// Delay before retry number `retry_count + 1`:
    /// `min(initial * multiplier^retry_count, max)`.
    pub fn delay(&self, retry_count: u32) -> Millis {
        let d = self.initial_delay as f64 * self.multiplier.powi(retry_count.min(64) as i32);
        if d.is_finite() && d < self.max_delay as f64 {
            d as Millis
        } else {
            self.max_delay
        }
    }
}

/// A carrier's default quota on AWS, for `rate_limit.endpoints`.
#[derive(Debug, Clone, Copy)]
pub struct QuotaPreset {
    pub name: &'static str,
    /// Sends per second (per origination number when `per_number`).
    pub per_sec: f64,
    pub per_number: bool,
    /// Where AWS documents it.
    pub source: &'static str,
}

/// AWS's default quotas (docs/policy.md, "Carrier quotas"). Raised quotas
/// are written as plain numbers.
pub const QUOTA_PRESETS: &[QuotaPreset] = &[
    QuotaPreset {
        name: "aws-chime-voice",
        per_sec: 1.0,
        per_number: false,
        source: "Amazon Chime SDK endpoints and quotas: CreateSipMediaApplicationCall, 1 per second per Region",
    },
    QuotaPreset {
        name: "aws-sms-10dlc",
        per_sec: 1.0,
        per_number: true,
        source: "AWS End User Messaging SMS user guide, MPS limits: 10DLC, 1 MPS per number by default",
    },
    QuotaPreset {
        name: "aws-sms-toll-free",
        per_sec: 3.0,
        per_number: true,
        source: "AWS End User Messaging SMS user guide, MPS limits: toll-free, 3 MPS per number",
    },
    QuotaPreset {
        name: "aws-sms-short-code",
        per_sec: 100.0,
        per_number: true,
        source: "AWS End User Messaging SMS user guide, MPS limits: short code, 100 MPS per number",
    },
    QuotaPreset {
        name: "aws-ses-sandbox",
        per_sec: 1.0,
        per_number: false,
        source: "Amazon SES developer guide, sandbox: 1 message per second",
    },
    QuotaPreset {
        name: "aws-ses-production",
        per_sec: 14.0,
        per_number: false,
        source: "Amazon SES developer guide, sending quotas: a new production account's maximum send rate, 14 per second (see the account's own in the SES console)",
    },
];

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Policy {
    /// Hold after DELIVERED without ACK before the next channel, by severity
    /// (row) and tier (column).
    pub escalation_delay: [[Millis; Tier::COUNT]; 4],
    /// Channel order by severity.
    pub channel_order: [Vec<Channel>; 4],
    pub retry: RetryPolicy,
    /// Consecutive channel failures that end a cascade as ESCALATED.
    pub hard_failure_threshold: u32,
    /// No receipt this long after acceptance: CHANNEL_TIMEOUT.
    pub receipt_timeout: Millis,
    /// Attempts in flight at once (only after UNREACHABLE), 1 or 2.
    pub max_in_flight: u32,
    /// A cascade whose next due time is this far past is re-driven by the sweep.
    pub reconciliation_age: Millis,
    pub sweep_interval: Millis,
    /// Same incident id within this window after a trigger: replay, no new cascades.
    pub dedup_window: Millis,
    /// Sends per second per carrier endpoint, unless the endpoint has its own.
    pub rate_limit_per_sec: f64,
    pub endpoint_limits: BTreeMap<String, f64>,
    /// The adaptive limiter never paces an endpoint below this (msgs/s;
    /// 0.1 to 1,000; capped at the endpoint's limit).
    pub rate_limit_floor: f64,
    /// Severity whose order and delays escalation cascades use (the high-priority route).
    pub manager_route: Severity,
    /// Live contact lookups in flight at once per expansion job.
    pub lookup_max_in_flight: u32,
    /// How failures escalate beyond the group's on-call manager.
    pub escalation: EscalationPolicy,
    /// A channel held back by carrier throttling (429) for longer than this
    /// fails for that person (CHANNEL_THROTTLED_OUT); `None`: the severity x
    /// tier escalation delay.
    pub throttle_bound: Option<Millis>,
    /// Severities whose plans follow carrier capacity: a member send whose
    /// channel's queue wait is past [`crate::engine::queue_bound`] moves to
    /// the next channel of the person's plan with room (default: all).
    pub queue_replan: [bool; 4],
    /// The queue-wait bound; `None`: the hold for the severity and tier.
    pub queue_wait_bound: Option<Millis>,
    /// Per severity: when a non-voice channel is DELIVERED and not
    /// acknowledged within the hold, a voice call goes alongside the next
    /// channel (the seed's parallel voice call).
    pub parallel_voice: [bool; 4],
    /// The next channel, when it is SMS, goes this long after the parallel
    /// call, so that voice and SMS are never sent at the same instant.
    pub parallel_voice_stagger: Millis,
    /// The text-to-speech voice a call is read in, by the locale of the
    /// message template chosen (`en` for the default template).
    pub voices: BTreeMap<String, Voice>,
    /// Severities whose messages go during a person's quiet hours (the
    /// others wait for the window to end), by severity.
    pub quiet_override: [bool; 4],
}

/// A text-to-speech voice: Amazon Polly's language code and voice id (the
/// Chime SDK's Speak action; Twilio says `Polly.<voice>-Neural`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Voice {
    pub language: String,
    pub voice: String,
}

/// Polly neural voices by locale (Amazon Polly developer guide, "Available
/// voices"), the defaults a policy's `[voices]` overrides or adds to.
const VOICES: &[(&str, &str, &str)] = &[
    ("en", "en-US", "Joanna"),
    ("en-GB", "en-GB", "Amy"),
    ("en-AU", "en-AU", "Olivia"),
    ("fr", "fr-FR", "Lea"),
    ("fr-CA", "fr-CA", "Gabrielle"),
    ("de", "de-DE", "Vicki"),
    ("es", "es-ES", "Lucia"),
    ("es-US", "es-US", "Lupe"),
    ("it", "it-IT", "Bianca"),
    ("pt", "pt-PT", "Ines"),
    ("pt-BR", "pt-BR", "Camila"),
    ("nl", "nl-NL", "Laura"),
    ("ja", "ja-JP", "Takumi"),
    ("ko", "ko-KR", "Seoyeon"),
    ("pl", "pl-PL", "Ola"),
];

/// The escalation chain of a failure: the group's on-call manager, then each
/// person's manager from the directory, then the fallback rota in order,
/// never naming anyone twice and at most `max_depth` people deep.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EscalationPolicy {
    /// People to escalate to when the directory offers nobody (next): a BCP
    /// administrator rota, in order.
    pub fallback: Vec<StakeholderId>,
    /// People told about one failure at most (levels of the chain).
    pub max_depth: u32,
    /// Share of an endpoint's rate escalation sends may take ahead of member
    /// sends (the high-priority route's reserved share).
    pub priority_share: f64,
}

impl Default for EscalationPolicy {
    fn default() -> Self {
        EscalationPolicy {
            fallback: Vec::new(),
            max_depth: 3,
            priority_share: 0.5,
        }
    }
}

impl Default for Policy {
    fn default() -> Self {
        let order = vec![Channel::Voice, Channel::Sms, Channel::Email, Channel::Push];
        Policy {
            escalation_delay: [
                [60_000, 90_000, 90_000],
                [180_000, 300_000, 300_000],
                [900_000, 900_000, 900_000],
                [1_800_000, 3_600_000, 3_600_000],
            ],
            channel_order: [order.clone(), order.clone(), order.clone(), order],
            retry: RetryPolicy {
                max_retries: 3,
                initial_delay: 15_000,
                multiplier: 2.0,
                max_delay: 120_000,
            },
            hard_failure_threshold: 3,
            receipt_timeout: 120_000,
            max_in_flight: 2,
            reconciliation_age: 300_000,
            sweep_interval: 60_000,
            dedup_window: 300_000,
            rate_limit_per_sec: 50.0,
            endpoint_limits: BTreeMap::new(),
            rate_limit_floor: 1.0,
            manager_route: Severity::P1,
            lookup_max_in_flight: 8,
            escalation: EscalationPolicy::default(),
            throttle_bound: None,
            queue_replan: [true; 4],
            queue_wait_bound: None,
            parallel_voice: [true, false, false, false],
            parallel_voice_stagger: 30_000,
            quiet_override: [true, true, false, false],
            voices: VOICES
                .iter()
                .map(|(tag, language, voice)| {
                    let v = Voice {
                        language: language.to_string(),
                        voice: voice.to_string(),
                    };
                    (tag.to_string(), v)
                })
                .collect(),
        }
    }
}

impl Policy {
    pub fn escalation_delay(&self, severity: Severity, tier: Tier) -> Millis {
        self.escalation_delay[severity.index()][tier.index()]
    }
    /// The voice for a message in `locale` (that of the template chosen;
    /// `None`: the default template, read in `en`'s voice): the locale's
    /// own, else its language's, else `en`'s.
    pub fn voice_for(&self, locale: Option<&str>) -> Voice {
        crate::domain::locale::pick(&self.voices, locale)
            .map(|(_, v)| v)
            .or_else(|| self.voices.get("en"))
            .cloned()
            .unwrap_or_else(|| Voice {
                language: "en-US".into(),
                voice: "Joanna".into(),
            })
    }

    /// Whether a message of `severity` goes during quiet hours.
    pub fn overrides_quiet(&self, severity: Severity) -> bool {
        self.quiet_override[severity.index()]
    }

    pub fn channels(&self, severity: Severity) -> &[Channel] {
        &self.channel_order[severity.index()]
    }
    /// Whether the seed's parallel voice call is on for `severity`.
    /// Whether plans of this severity follow carrier capacity.
    pub fn queue_replan(&self, severity: Severity) -> bool {
        self.queue_replan[severity.index()]
    }

    pub fn parallel_voice(&self, severity: Severity) -> bool {
        self.parallel_voice[severity.index()]
    }
    pub fn rate_limit(&self, endpoint: &str) -> f64 {
        self.endpoint_limits
            .get(endpoint)
            .copied()
            .unwrap_or(self.rate_limit_per_sec)
    }

    /// The adaptive limiter's configuration for one endpoint: its told
    /// limit, the floor, and the escalations' priority share (the same in
    /// every store that keeps limiter state).
    pub fn limiter_config(&self, endpoint: &str) -> crate::ratelimit::LimiterConfig {
        let limit = self.rate_limit(endpoint);
        crate::ratelimit::LimiterConfig {
            limit_per_sec: limit,
            min_per_sec: self.rate_limit_floor.min(limit),
            priority_share: self.escalation.priority_share,
        }
    }

    /// Parses a policy file: defaults overridden by the file.
    pub fn from_toml(text: &str) -> Result<Policy, Vec<PolicyError>> {
        let table: toml::Table = text
            .parse()
            .map_err(|e: toml::de::Error| vec![PolicyError::syntax(text, &e)])?;
        let mut p = Policy::default();
        p.apply(&table, "")?;
        Ok(p)
    }

    /// Applies overrides from a TOML table (a policy file, or a drill
    /// scenario's `[policy]`), then validates the whole. `prefix` is prepended
    /// to error paths.
    pub fn apply(&mut self, table: &toml::Table, prefix: &str) -> Result<(), Vec<PolicyError>> {
        let mut w = Walker {
            errors: Vec::new(),
            prefix,
        };
        let mut next = self.clone();
        for (key, value) in table {
            match key.as_str() {
                "escalation_delay" => w.severity_table(value, key, |sev, v, w, path| {
                    let Some(t) = w.table(v, path) else { return };
                    for (tk, tv) in t {
                        let tpath = format!("{path}.{tk}");
                        match tk.strip_prefix("tier").and_then(|n| n.parse::<i64>().ok()).and_then(|n| Tier::new(n).ok()) {
                            Some(tier) => {
                                if let Some(ms) = w.duration(tv, &tpath, 1_000, 7 * 86_400_000) {
                                    next.escalation_delay[sev.index()][tier.index()] = ms;
                                }
                            }
                            None => w.err(&tpath, tv, "unknown tier: expected tier1, tier2 or tier3"),
                        }
                    }
                }),
                "channel_order" => w.severity_table(value, key, |sev, v, w, path| {
                    if let Some(order) = w.channels(v, path) {
                        next.channel_order[sev.index()] = order;
                    }
                }),
                "retry" => {
                    let Some(t) = w.table(value, key) else { continue };
                    for (k, v) in t {
                        let path = format!("retry.{k}");
                        match k.as_str() {
                            "max_retries" => w.int(v, &path, 0, 10).map(|n| next.retry.max_retries = n as u32).unwrap_or(()),
                            "initial_delay" => w.duration(v, &path, 1_000, 3_600_000).map(|d| next.retry.initial_delay = d).unwrap_or(()),
                            "max_delay" => w.duration(v, &path, 1_000, 3_600_000).map(|d| next.retry.max_delay = d).unwrap_or(()),
                            "multiplier" => w.float(v, &path, 1.0, 10.0).map(|f| next.retry.multiplier = f).unwrap_or(()),
                            _ => w.err(&path, v, "unknown key: expected max_retries, initial_delay, multiplier or max_delay"),
                        }
                    }
                }
                "cascade" => {
                    let Some(t) = w.table(value, key) else { continue };
                    for (k, v) in t {
                        let path = format!("cascade.{k}");
                        match k.as_str() {
                            "hard_failure_threshold" => w.int(v, &path, 1, 10).map(|n| next.hard_failure_threshold = n as u32).unwrap_or(()),
                            "receipt_timeout" => w.duration(v, &path, 1_000, 3_600_000).map(|d| next.receipt_timeout = d).unwrap_or(()),
                            "max_in_flight" => w.int(v, &path, 1, 2).map(|n| next.max_in_flight = n as u32).unwrap_or(()),
                            "reconciliation_age" => w.duration(v, &path, 60_000, 86_400_000).map(|d| next.reconciliation_age = d).unwrap_or(()),
                            "sweep_interval" => w.duration(v, &path, 10_000, 3_600_000).map(|d| next.sweep_interval = d).unwrap_or(()),
                            "manager_route" => match v.as_str().map(Severity::parse) {
                                Some(Ok(s)) => next.manager_route = s,
                                _ => w.err(&path, v, "expected a severity: P1, P2, P3 or P4"),
                            },
                            "throttle_bound" => w.duration(v, &path, 1_000, 86_400_000).map(|d| next.throttle_bound = Some(d)).unwrap_or(()),
                            "parallel_voice" => {
                                if let Some(list) = w.severities(v, &path) {
                                    next.parallel_voice = [false; 4];
                                    for sev in list {
                                        next.parallel_voice[sev.index()] = true;
                                    }
                                }
                            }
                            "parallel_voice_stagger" => w.duration(v, &path, 0, 600_000).map(|d| next.parallel_voice_stagger = d).unwrap_or(()),
                            "queue_replan" => {
                                if let Some(list) = w.severities(v, &path) {
                                    next.queue_replan = [false; 4];
                                    for sev in list {
                                        next.queue_replan[sev.index()] = true;
                                    }
                                }
                            }
                            "queue_wait_bound" => w.duration(v, &path, 1_000, 86_400_000).map(|d| next.queue_wait_bound = Some(d)).unwrap_or(()),
                            _ => w.err(
                                &path,
                                v,
                                "unknown key: expected hard_failure_threshold, receipt_timeout, max_in_flight, reconciliation_age, sweep_interval, manager_route, throttle_bound, parallel_voice, parallel_voice_stagger, queue_replan or queue_wait_bound",
                            ),
                        }
                    }
                }
                "escalation" => {
                    let Some(t) = w.table(value, key) else { continue };
                    for (k, v) in t {
                        let path = format!("escalation.{k}");
                        match k.as_str() {
                            "fallback" => {
                                if let Some(ids) = w.stakeholders(v, &path) {
                                    next.escalation.fallback = ids;
                                }
                            }
                            "max_depth" => w.int(v, &path, 1, 10).map(|n| next.escalation.max_depth = n as u32).unwrap_or(()),
                            "priority_share" => w.float(v, &path, 0.05, 1.0).map(|f| next.escalation.priority_share = f).unwrap_or(()),
                            _ => w.err(&path, v, "unknown key: expected fallback, max_depth or priority_share"),
                        }
                    }
                }
                "quiet_hours" => {
                    let Some(t) = w.table(value, key) else { continue };
                    for (k, v) in t {
                        let path = format!("quiet_hours.{k}");
                        match k.as_str() {
                            "override" => {
                                if let Some(list) = w.severities(v, &path) {
                                    next.quiet_override = [false; 4];
                                    for sev in list {
                                        next.quiet_override[sev.index()] = true;
                                    }
                                }
                            }
                            _ => w.err(&path, v, "unknown key: expected override"),
                        }
                    }
                }
                "voices" => {
                    let Some(t) = w.table(value, key) else { continue };
                    for (tag, v) in t {
                        let path = format!("voices.{tag}");
                        let Ok(tag) = crate::domain::locale::normalise(tag) else {
                            w.err(&path, v, "not a locale: expected a language, optionally with a region (fr, fr-CA)");
                            continue;
                        };
                        let Some(vt) = w.table(v, &path) else { continue };
                        let field = |name: &str| vt.get(name).and_then(|x| x.as_str()).filter(|s| !s.trim().is_empty() && s.len() <= 40 && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'));
                        match (field("language"), field("voice"), vt.len()) {
                            (Some(language), Some(voice), 2) => {
                                next.voices.insert(tag, Voice { language: language.to_string(), voice: voice.to_string() });
                            }
                            _ => w.err(&path, v, "expected { language = \"fr-FR\", voice = \"Lea\" }: a Polly language code and voice id"),
                        }
                    }
                }
                "trigger" => {
                    let Some(t) = w.table(value, key) else { continue };
                    for (k, v) in t {
                        let path = format!("trigger.{k}");
                        match k.as_str() {
                            "dedup_window" => w.duration(v, &path, 0, 86_400_000).map(|d| next.dedup_window = d).unwrap_or(()),
                            _ => w.err(&path, v, "unknown key: expected dedup_window"),
                        }
                    }
                }
                "contact_lookup" => {
                    let Some(t) = w.table(value, key) else { continue };
                    for (k, v) in t {
                        let path = format!("contact_lookup.{k}");
                        match k.as_str() {
                            "max_in_flight" => w.int(v, &path, 1, 100).map(|n| next.lookup_max_in_flight = n as u32).unwrap_or(()),
                            _ => w.err(&path, v, "unknown key: expected max_in_flight"),
                        }
                    }
                }
                "rate_limit" => {
                    let Some(t) = w.table(value, key) else { continue };
                    for (k, v) in t {
                        let path = format!("rate_limit.{k}");
                        match k.as_str() {
                            "per_second" => w.float(v, &path, 0.1, 100_000.0).map(|f| next.rate_limit_per_sec = f).unwrap_or(()),
                            "floor" => w.float(v, &path, 0.1, 1_000.0).map(|f| next.rate_limit_floor = f).unwrap_or(()),
                            "endpoints" => {
                                let Some(et) = w.table(v, &path) else { continue };
                                for (ek, ev) in et {
                                    let epath = format!("{path}.{ek}");
                                    let limit = match ev {
                                        toml::Value::Table(t) => w.preset(t, &epath),
                                        _ => w.float(ev, &epath, 0.1, 100_000.0),
                                    };
                                    if let Some(f) = limit {
                                        next.endpoint_limits.insert(ek.clone(), f);
                                    }
                                }
                            }
                            _ => w.err(&path, v, "unknown key: expected per_second, floor or endpoints"),
                        }
                    }
                }
                _ => w.err(key, value, "unknown section: expected escalation_delay, channel_order, retry, cascade, escalation, trigger, contact_lookup, rate_limit, quiet_hours or voices"),
            }
        }
        next.validate(&mut w);
        if w.errors.is_empty() {
            *self = next;
            Ok(())
        } else {
            Err(w.errors)
        }
    }

    fn validate(&self, w: &mut Walker<'_>) {
        if self.retry.initial_delay > self.retry.max_delay {
            w.errors.push(PolicyError::at(
                w.prefix,
                "retry.initial_delay",
                &format!("{}s", self.retry.initial_delay / 1000),
                &format!(
                    "is greater than retry.max_delay ({}s)",
                    self.retry.max_delay / 1000
                ),
            ));
        }
        for sev in Severity::ALL {
            for tier in Tier::ALL {
                if self.escalation_delay(sev, tier) == 0 {
                    w.errors.push(PolicyError::at(
                        w.prefix,
                        &format!("escalation_delay.{sev}.{tier}"),
                        "0",
                        "must be positive",
                    ));
                }
            }
        }
    }

    /// A readable table of the effective policy.
    pub fn describe(&self) -> String {
        use std::fmt::Write;
        let secs = |ms: Millis| {
            humantime::format_duration(std::time::Duration::from_millis(ms)).to_string()
        };
        let mut s = String::new();
        let _ = writeln!(
            s,
            "escalation delay (DELIVERED without ACK, then next channel)"
        );
        let _ = writeln!(
            s,
            "  severity   tier1      tier2      tier3      channel order"
        );
        for sev in Severity::ALL {
            let order: Vec<_> = self.channels(sev).iter().map(|c| c.as_str()).collect();
            let _ = writeln!(
                s,
                "  {:<10} {:<10} {:<10} {:<10} {}",
                sev.as_str(),
                secs(self.escalation_delay(sev, Tier::ONE)),
                secs(self.escalation_delay(sev, Tier::TWO)),
                secs(self.escalation_delay(sev, Tier::THREE)),
                order.join(" -> ")
            );
        }
        let r = &self.retry;
        let delays: Vec<_> = (0..r.max_retries).map(|i| secs(r.delay(i))).collect();
        let _ = writeln!(
            s,
            "retries per channel   {} (initial {}, x{}, cap {}: {})",
            r.max_retries,
            secs(r.initial_delay),
            r.multiplier,
            secs(r.max_delay),
            if delays.is_empty() {
                "none".to_string()
            } else {
                delays.join(", ")
            }
        );
        let _ = writeln!(
            s,
            "hard failure          {} consecutive channel failures",
            self.hard_failure_threshold
        );
        let _ = writeln!(s, "receipt timeout       {}", secs(self.receipt_timeout));
        let _ = writeln!(
            s,
            "attempts in flight    at most {} (parallel only after UNREACHABLE)",
            self.max_in_flight
        );
        let _ = writeln!(s, "dedup window          {}", secs(self.dedup_window));
        let _ = writeln!(
            s,
            "reconciliation age    {} (sweep every {})",
            secs(self.reconciliation_age),
            secs(self.sweep_interval)
        );
        let _ = writeln!(
            s,
            "manager route         {} order and delays",
            self.manager_route
        );
        let e = &self.escalation;
        let fallback: Vec<&str> = e.fallback.iter().map(StakeholderId::as_str).collect();
        let _ = writeln!(
            s,
            "escalation chain      on-call manager, their managers, then fallback {}; at most {} people; {}% of each endpoint's rate reserved ahead of members",
            if fallback.is_empty() {
                "(none)".to_string()
            } else {
                fallback.join(" -> ")
            },
            e.max_depth,
            (e.priority_share * 100.0).round()
        );
        let _ = writeln!(
            s,
            "throttling bound      {} per person",
            match self.throttle_bound {
                Some(b) => secs(b),
                None => "the severity x tier escalation delay".into(),
            }
        );
        // "off", or "on for P1, P2" for the severities a flag is set for.
        let on_for = |flags: &[bool; 4]| {
            let on: Vec<&str> = Severity::ALL
                .iter()
                .filter(|sev| flags[sev.index()])
                .map(|sev| sev.as_str())
                .collect();
            if on.is_empty() {
                "off".to_string()
            } else {
                format!("on for {}", on.join(", "))
            }
        };
        let _ = writeln!(
            s,
            "capacity-aware plans  {}; a channel whose queue waits past {} moves later for that person",
            on_for(&self.queue_replan),
            match self.queue_wait_bound {
                Some(b) => secs(b),
                None => "the severity x tier escalation delay".into(),
            }
        );
        let _ = writeln!(
            s,
            "parallel voice call   {} (next channel, if SMS, {} later)",
            on_for(&self.parallel_voice),
            secs(self.parallel_voice_stagger)
        );
        let _ = writeln!(
            s,
            "contact lookups       at most {} in flight per expansion job",
            self.lookup_max_in_flight
        );
        let _ = writeln!(
            s,
            "quiet hours           {} (the others wait for the person's window to end)",
            match on_for(&self.quiet_override).strip_prefix("on for ") {
                Some(list) => format!("overridden by {list}"),
                None => "every severity waits".to_string(),
            }
        );
        let _ = writeln!(
            s,
            "voices                {} locales; the default read by {} ({})",
            self.voices.len(),
            self.voice_for(None).voice,
            self.voice_for(None).language
        );
        let _ = write!(
            s,
            "rate limit            {} msg/s per carrier endpoint; the adaptive pace never below {} msg/s",
            self.rate_limit_per_sec, self.rate_limit_floor
        );
        for (e, l) in &self.endpoint_limits {
            let _ = write!(s, "\n  endpoint {e:<12} {l} msg/s");
        }
        s
    }
}

/// One problem in a policy: where, what value, what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyError {
    pub path: String,
    pub value: String,
    pub message: String,
}

impl PolicyError {
    fn at(prefix: &str, path: &str, value: &str, message: &str) -> Self {
        PolicyError {
            path: format!("{prefix}{path}"),
            value: value.to_string(),
            message: message.to_string(),
        }
    }
    pub fn syntax(text: &str, e: &toml::de::Error) -> Self {
        let line = e
            .span()
            .map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1);
        PolicyError {
            path: line
                .map(|l| format!("line {l}"))
                .unwrap_or_else(|| "file".into()),
            value: String::new(),
            message: e.message().to_string(),
        }
    }
}

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.value.is_empty() {
            write!(f, "{}: {}", self.path, self.message)
        } else {
            write!(f, "{} = {}: {}", self.path, self.value, self.message)
        }
    }
}

struct Walker<'a> {
    errors: Vec<PolicyError>,
    prefix: &'a str,
}

impl Walker<'_> {
    fn err(&mut self, path: &str, value: &toml::Value, message: &str) {
        let mut shown = value.to_string();
        if shown.chars().count() > 80 {
            shown = shown.chars().take(77).collect::<String>() + "...";
        }
        self.errors
            .push(PolicyError::at(self.prefix, path, &shown, message));
    }
    fn table<'v>(&mut self, v: &'v toml::Value, path: &str) -> Option<&'v toml::Table> {
        let t = v.as_table();
        if t.is_none() {
            self.err(path, v, "expected a table");
        }
        t
    }
    fn severity_table(
        &mut self,
        v: &toml::Value,
        key: &str,
        mut each: impl FnMut(Severity, &toml::Value, &mut Self, &str),
    ) {
        let Some(t) = self.table(v, key) else { return };
        for (k, v) in t {
            let path = format!("{key}.{k}");
            match Severity::parse(k) {
                Ok(sev) => each(sev, v, self, &path),
                Err(_) => self.err(&path, v, "unknown severity: expected P1, P2, P3 or P4"),
            }
        }
    }
    fn int(&mut self, v: &toml::Value, path: &str, min: i64, max: i64) -> Option<i64> {
        match v.as_integer() {
            Some(n) if (min..=max).contains(&n) => Some(n),
            _ => {
                self.err(
                    path,
                    v,
                    &format!("expected a whole number from {min} to {max}"),
                );
                None
            }
        }
    }
    fn float(&mut self, v: &toml::Value, path: &str, min: f64, max: f64) -> Option<f64> {
        let f = v.as_float().or_else(|| v.as_integer().map(|i| i as f64));
        match f {
            Some(f) if f >= min && f <= max => Some(f),
            _ => {
                self.err(path, v, &format!("expected a number from {min} to {max}"));
                None
            }
        }
    }
    /// Whole seconds (`90`) or a duration string (`"90s"`, `"15m"`, `"1h 30m"`).
    fn duration(
        &mut self,
        v: &toml::Value,
        path: &str,
        min: Millis,
        max: Millis,
    ) -> Option<Millis> {
        let ms = match v {
            toml::Value::Integer(n) if *n >= 0 => Some(*n as u64 * 1000),
            toml::Value::String(s) => humantime::parse_duration(s)
                .ok()
                .map(|d| d.as_millis() as u64),
            _ => None,
        };
        let show = |ms: Millis| {
            humantime::format_duration(std::time::Duration::from_millis(ms)).to_string()
        };
        match ms {
            Some(ms) if ms >= min && ms <= max => Some(ms),
            _ => {
                self.err(path, v, &format!("expected a duration from {} to {} (seconds, or a string like \"90s\" or \"15m\")", show(min), show(max)));
                None
            }
        }
    }
    fn severities(&mut self, v: &toml::Value, path: &str) -> Option<Vec<Severity>> {
        let Some(arr) = v.as_array() else {
            self.err(
                path,
                v,
                "expected a list of severities, e.g. [\"P1\", \"P2\"]",
            );
            return None;
        };
        let mut out = Vec::new();
        let mut ok = true;
        for (i, x) in arr.iter().enumerate() {
            match x.as_str().map(Severity::parse) {
                Some(Ok(sev)) if !out.contains(&sev) => out.push(sev),
                Some(Ok(_)) => {
                    self.err(&format!("{path}[{i}]"), x, "severity listed twice");
                    ok = false;
                }
                _ => {
                    self.err(
                        &format!("{path}[{i}]"),
                        x,
                        "expected a severity: P1, P2, P3 or P4",
                    );
                    ok = false;
                }
            }
        }
        ok.then_some(out)
    }
    fn stakeholders(&mut self, v: &toml::Value, path: &str) -> Option<Vec<StakeholderId>> {
        let Some(arr) = v.as_array() else {
            self.err(
                path,
                v,
                "expected a list of stakeholder ids, e.g. [\"bcp-admin-1\"]",
            );
            return None;
        };
        let mut out = Vec::new();
        let mut ok = true;
        for (i, x) in arr.iter().enumerate() {
            let ipath = format!("{path}[{i}]");
            match x.as_str().map(StakeholderId::parse) {
                Some(Ok(id)) if out.contains(&id) => {
                    self.err(&ipath, x, "stakeholder listed twice");
                    ok = false;
                }
                Some(Ok(id)) => out.push(id),
                Some(Err(e)) => {
                    self.err(&ipath, x, &e.message);
                    ok = false;
                }
                None => {
                    self.err(&ipath, x, "expected a stakeholder id (a string)");
                    ok = false;
                }
            }
        }
        ok.then_some(out)
    }
    /// `{ preset = "...", numbers = N }`: a carrier quota from
    /// [`QUOTA_PRESETS`], times the origination numbers in the pool.
    fn preset(&mut self, t: &toml::Table, path: &str) -> Option<f64> {
        for k in t.keys() {
            if k != "preset" && k != "numbers" {
                let v = &t[k];
                self.err(
                    &format!("{path}.{k}"),
                    v,
                    "unknown key: expected preset or numbers",
                );
            }
        }
        let Some(v) = t.get("preset") else {
            let v = toml::Value::Table(t.clone());
            self.err(
                path,
                &v,
                "expected a number of msg/s or { preset = \"...\", numbers = N }",
            );
            return None;
        };
        let numbers = match t.get("numbers") {
            Some(n) => self.int(n, &format!("{path}.numbers"), 1, 10_000)?,
            None => 1,
        };
        match QUOTA_PRESETS.iter().find(|p| Some(p.name) == v.as_str()) {
            Some(p) if p.per_number || numbers == 1 => Some(p.per_sec * numbers as f64),
            Some(p) => {
                self.err(
                    &format!("{path}.numbers"),
                    &t["numbers"],
                    &format!("{} is one quota for the account, not per number", p.name),
                );
                None
            }
            None => {
                let names: Vec<&str> = QUOTA_PRESETS.iter().map(|p| p.name).collect();
                self.err(
                    &format!("{path}.preset"),
                    v,
                    &format!("unknown preset: expected one of {}", names.join(", ")),
                );
                None
            }
        }
    }

    fn channels(&mut self, v: &toml::Value, path: &str) -> Option<Vec<Channel>> {
        let Some(arr) = v.as_array() else {
            self.err(
                path,
                v,
                "expected a list of channels, e.g. [\"voice\", \"sms\", \"email\", \"push\"]",
            );
            return None;
        };
        let mut out = Vec::new();
        let mut ok = true;
        for (i, c) in arr.iter().enumerate() {
            let cpath = format!("{path}[{i}]");
            match c.as_str().map(Channel::parse) {
                Some(Ok(ch)) if out.contains(&ch) => {
                    self.err(&cpath, c, "channel listed twice");
                    ok = false;
                }
                Some(Ok(ch)) => out.push(ch),
                _ => {
                    self.err(&cpath, c, "expected voice, sms, email or push");
                    ok = false;
                }
            }
        }
        if out.is_empty() && ok {
            self.err(path, v, "at least one channel is required");
            ok = false;
        }
        ok.then_some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_requirements() {
        let p = Policy::default();
        assert!(p.escalation_delay(Severity::P1, Tier::THREE) <= 90_000);
        assert_eq!(p.escalation_delay(Severity::P3, Tier::TWO), 900_000);
        assert_eq!(
            p.channels(Severity::P2),
            [Channel::Voice, Channel::Sms, Channel::Email, Channel::Push]
        );
        assert_eq!(
            (0..4).map(|r| p.retry.delay(r)).collect::<Vec<_>>(),
            [15_000, 30_000, 60_000, 120_000]
        );
        assert_eq!(p.retry.delay(9), 120_000);
        assert_eq!(
            (
                p.retry.max_retries,
                p.hard_failure_threshold,
                p.receipt_timeout
            ),
            (3, 3, 120_000)
        );
        assert_eq!(
            (p.dedup_window, p.reconciliation_age, p.rate_limit_per_sec),
            (300_000, 300_000, 50.0)
        );
    }

    #[test]
    fn file_overrides_any_value() {
        let p = Policy::from_toml(
            r#"
            [escalation_delay.P3]
            tier1 = "10m"
            [channel_order]
            P3 = ["sms", "email", "push"]
            [retry]
            max_retries = 2
            [rate_limit.endpoints]
            sms = 30
            "#,
        );
        let p = p.ok();
        assert_eq!(
            p.as_ref()
                .map(|p| p.escalation_delay(Severity::P3, Tier::ONE)),
            Some(600_000)
        );
        assert_eq!(p.as_ref().map(|p| p.channels(Severity::P3).len()), Some(3));
        assert_eq!(
            p.as_ref().map(|p| (
                p.retry.max_retries,
                p.rate_limit("sms"),
                p.rate_limit("voice")
            )),
            Some((2, 30.0, 50.0))
        );
    }

    #[test]
    fn every_error_is_reported_with_path_and_value() {
        let errs = Policy::from_toml(
            r#"
            [retry]
            max_retries = -1
            multiplier = "x"
            initial_delay = 500
            [channel_order]
            P1 = ["voice", "fax"]
            P7 = ["sms"]
            [colour]
            x = 1
            "#,
        )
        .err()
        .unwrap_or_default();
        let mut paths: Vec<_> = errs.iter().map(|e| e.path.as_str()).collect();
        paths.sort_unstable();
        assert_eq!(
            paths,
            [
                "channel_order.P1[1]",
                "channel_order.P7",
                "colour",
                "retry.initial_delay",
                "retry.max_retries",
                "retry.multiplier"
            ]
        );
        assert!(
            errs.iter()
                .any(|e| e.path == "channel_order.P1[1]" && e.value == "\"fax\"")
        );
        assert!(
            errs.iter()
                .any(|e| e.path == "retry.max_retries" && e.value == "-1")
        );
    }

    #[test]
    fn carrier_quotas_come_from_aws_presets_and_pools() {
        // A pool of twenty 10DLC numbers takes 20 msg/s; a short code 100;
        // Chime SDK voice 1 call/s; the floor reaches the limiters.
        let p = Policy::from_toml(
            r#"
            [rate_limit]
            floor = 0.1
            [rate_limit.endpoints]
            voice = { preset = "aws-chime-voice" }
            sms = { preset = "aws-sms-10dlc", numbers = 20 }
            alerts = { preset = "aws-sms-short-code" }
            email = { preset = "aws-ses-production" }
            "#,
        )
        .unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(
            ["voice", "sms", "alerts", "email"].map(|e| p.rate_limit(e)),
            [1.0, 20.0, 100.0, 14.0]
        );
        let cfg = p.limiter_config("voice");
        assert_eq!((cfg.limit_per_sec, cfg.min_per_sec), (1.0, 0.1));
        // The default floor, 1 msg/s, is capped at an endpoint's limit.
        let p = Policy::from_toml(
            "[rate_limit.endpoints]
slow = 0.5
",
        )
        .unwrap_or_default();
        assert_eq!(p.limiter_config("slow").min_per_sec, 0.5);
        assert_eq!(p.limiter_config("other").min_per_sec, 1.0);

        let errs = Policy::from_toml(
            r#"
            [rate_limit]
            floor = 0.01
            [rate_limit.endpoints]
            a = { preset = "aws-sms-lots" }
            b = { preset = "aws-chime-voice", numbers = 5 }
            c = { preset = "aws-sms-10dlc", numbers = 0 }
            d = { numbers = 2 }
            e = { preset = "aws-sms-10dlc", colour = 1 }
            "#,
        )
        .err()
        .unwrap_or_default();
        let mut paths: Vec<_> = errs.iter().map(|e| e.path.as_str()).collect();
        paths.sort_unstable();
        assert_eq!(
            paths,
            [
                "rate_limit.endpoints.a.preset",
                "rate_limit.endpoints.b.numbers",
                "rate_limit.endpoints.c.numbers",
                "rate_limit.endpoints.d",
                "rate_limit.endpoints.e.colour",
                "rate_limit.floor"
            ],
            "{errs:?}"
        );
    }

    #[test]
    fn syntax_errors_name_the_line() {
        let errs = Policy::from_toml("[retry]\nmax_retries = = 3\n")
            .err()
            .unwrap_or_default();
        assert_eq!(errs.first().map(|e| e.path.as_str()), Some("line 2"));
    }

    #[test]
    fn initial_delay_above_cap_is_refused() {
        let errs = Policy::from_toml("[retry]\ninitial_delay = 200\nmax_delay = 100\n")
            .err()
            .unwrap_or_default();
        assert_eq!(
            errs.first().map(|e| e.path.as_str()),
            Some("retry.initial_delay")
        );
    }
}
