//! Random fault mixes: `muster bench faults`. Each seed builds one scenario
//! (a small P1 to P4 activation) with a random mix of every fault a drill
//! can express, runs it, and checks what must hold whatever the faults:
//! every invariant, every cascade ended, every failure taken up (an
//! escalation acknowledged or withdrawn, ESCALATION_UNDELIVERED recorded,
//! or cancelled with the incident), and no error from the use cases.

use super::report::DrillReport;
use super::scenario::{Scenario, ScenarioError};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::fmt::Write;

/// The scenario of fault mix `seed`, as TOML (what `muster drill` reads).
pub fn mix_toml(seed: u64) -> String {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    // Answers beyond acknowledge in a quarter of the mixes, drawn apart so
    // that every other part of a seed's mix stays what it was.
    let mut answers_rng = ChaCha8Rng::seed_from_u64(seed ^ 0x0A45_5745_5253);
    let answers = (answers_rng.random::<f64>() < 0.25).then(|| {
        let help = answers_rng.random::<f64>() * 0.5;
        (1.0 - help, help)
    });
    let mut s = String::new();
    let severity = ["P1", "P2", "P3", "P4"][rng.random_range(0..4)];
    let members = if rng.random::<f64>() < 0.03 {
        0
    } else {
        rng.random_range(1..=60)
    };
    let _ = writeln!(s, "name = \"fault mix {seed}\"\nseed = {seed}");
    if rng.random::<f64>() < 0.2 {
        let _ = writeln!(s, "close_after = \"{}s\"", rng.random_range(1..=1_800));
    }
    let _ = writeln!(
        s,
        "[incident]\nincidentId = \"INC-FAULTS-{seed}\"\nseverity = \"{severity}\"\n\
         stakeholderGroupId = \"all\"\nmessageTemplate = \"Fault drill {seed}.\"\n\
         timestamp = \"2024-05-20T14:32:00Z\""
    );
    if answers.is_some() {
        let _ = writeln!(
            s,
            "responses = [{{ key = \"1\", label = \"I am safe\" }}, \
             {{ key = \"2\", label = \"I need help\", acknowledges = false }}]"
        );
    }
    // Another incident at once, sharing the carriers (and people).
    if rng.random::<f64>() < 0.25 {
        let severity = ["P1", "P2", "P3", "P4"][rng.random_range(0..4)];
        let _ = writeln!(
            s,
            "[[incidents]]\nincidentId = \"INC-FAULTS-{seed}-B\"\nseverity = \"{severity}\"\n\
             messageTemplate = \"Second fault drill {seed}.\"\nat = \"{}s\"",
            rng.random_range(0..=300)
        );
        if rng.random::<f64>() < 0.5 {
            let _ = writeln!(s, "stakeholderGroupId = \"all\"");
        } else {
            let _ = writeln!(
                s,
                "stakeholderGroupId = \"some\"\nmembers = {}",
                rng.random_range(0..=members)
            );
        }
        if rng.random::<f64>() < 0.2 {
            let _ = writeln!(s, "close_after = \"{}s\"", rng.random_range(1..=1_800));
        }
    }
    let _ = writeln!(s, "[group]\non_call_manager = \"duty\"");
    let _ = writeln!(s, "[policy.escalation]\nfallback = [\"desk\"]");
    let mut faults = String::new();
    for (key, max) in [
        ("lost_jobs", 0.1),
        ("lost_timers", 0.1),
        ("duplicate_acks", 0.3),
        ("sms_text_replies", 1.0),
        ("sms_stop", 0.2),
        ("concurrent_deliveries", 0.05),
    ] {
        if rng.random::<f64>() < 0.5 {
            let _ = writeln!(faults, "{key} = {:.3}", rng.random::<f64>() * max);
        }
    }
    let retriggers: Vec<String> = (0..rng.random_range(0..=3))
        .map(|_| format!("\"{}s\"", rng.random_range(0..=240)))
        .collect();
    if !retriggers.is_empty() {
        let _ = writeln!(faults, "retriggers = [{}]", retriggers.join(", "));
    }
    if !faults.is_empty() {
        let _ = writeln!(s, "[faults]\n{faults}");
    }
    if rng.random::<f64>() < 0.3 {
        let _ = writeln!(
            s,
            "[contact_source]\nfailure_rate = {:.3}\ntimeout_rate = {:.3}\n\
             latency = {{ median = \"{}ms\", p95 = \"{}ms\" }}",
            rng.random::<f64>() * 0.3,
            rng.random::<f64>() * 0.3,
            rng.random_range(10..=2_000),
            rng.random_range(2_001..=8_000)
        );
    }
    for channel in ["voice", "sms", "email", "push"] {
        let _ = writeln!(s, "[carriers.{channel}]");
        let _ = writeln!(
            s,
            "latency = {{ median = \"{}s\", p95 = \"{}s\" }}",
            rng.random_range(1..=5),
            rng.random_range(6..=40)
        );
        let probs = [
            ("transient", 0.2),
            ("failed", 0.05),
            ("unreachable", 0.05),
            ("undelivered", 0.1),
            ("lost_receipts", 0.1),
            ("late_receipts", 0.1),
            ("duplicate_receipts", 0.3),
            ("unknown_receipts", 0.1),
            ("early_receipts", 0.3),
            ("lost_answers", 0.1),
        ];
        for (key, max) in probs {
            if rng.random::<f64>() < 0.4 {
                let _ = writeln!(s, "{key} = {:.3}", rng.random::<f64>() * max);
            }
        }
        if rng.random::<f64>() < 0.5 {
            let capacity = [0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0][rng.random_range(0..7)];
            let retry = rng.random_range(1..=30);
            let _ = writeln!(
                s,
                "capacity_per_sec = {capacity}\nburst = {}\nretry_after = \"{retry}s\"\n\
                 retry_after_max = \"{}s\"\nno_retry_after = {:.2}",
                rng.random_range(1..=20),
                retry + rng.random_range(0..=30),
                rng.random::<f64>() * 0.5
            );
            for _ in 0..rng.random_range(0..=2) {
                let _ = writeln!(
                    s,
                    "[[carriers.{channel}.capacity_schedule]]\nat = \"{}s\"\ncapacity_per_sec = {}",
                    rng.random_range(10..=900),
                    [0.0, 0.5, 2.0, 10.0, 50.0][rng.random_range(0..5)]
                );
            }
        }
        for _ in 0..rng.random_range(0..=2) {
            let from = rng.random_range(0..=900);
            let _ = writeln!(
                s,
                "[[carriers.{channel}.outages]]\nfrom = \"{from}s\"\nto = \"{}s\"",
                from + rng.random_range(1..=300)
            );
        }
    }
    let _ = writeln!(
        s,
        "[behaviours.staff]\nnever = {:.2}\nack = {{ voice = {:.2}, sms = {:.2}, email = {:.2}, push = {:.2} }}\n\
         ack_delay = {{ median = \"{}s\", p95 = \"{}s\" }}",
        rng.random::<f64>() * 0.5,
        rng.random::<f64>(),
        rng.random::<f64>(),
        rng.random::<f64>(),
        rng.random::<f64>(),
        rng.random_range(5..=60),
        rng.random_range(61..=1_200)
    );
    if let Some((safe, help)) = answers {
        let _ = writeln!(s, "answers = {{ \"1\" = {safe:.3}, \"2\" = {help:.3} }}");
    }
    let _ = writeln!(
        s,
        "[behaviours.desk]\nack = {{ voice = 1.0, sms = 1.0, email = 1.0, push = 1.0 }}\n\
         ack_delay = {{ median = \"20s\", p95 = \"1m\" }}"
    );
    let _ = writeln!(
        s,
        "[[stakeholders]]\nid = \"duty\"\ntier = 1\nphone = \"+1 202 555 0100\"\n\
         email = \"duty@example.com\"\nbehaviour = \"staff\"\nmember = false\n\
         [[stakeholders]]\nid = \"desk\"\ntier = 1\nphone = \"+44 20 7946 0900\"\n\
         email = \"desk@example.com\"\npush = \"device-desk\"\nbehaviour = \"desk\"\nmember = false"
    );
    {
        let _ = writeln!(
            s,
            "[[population]]\ncount = {members}\nprefix = \"p\"\ntiers = {{ 1 = 0.2, 2 = 0.3, 3 = 0.5 }}\n\
             channels = {{ voice = {:.2}, sms = {:.2}, email = {:.2}, push = {:.2} }}\n\
             behaviour = \"staff\"\nstale_directory = {:.2}\nmanager = \"duty\"",
            rng.random_range(0.3..=1.0),
            rng.random_range(0.3..=1.0),
            rng.random_range(0.3..=1.0),
            rng.random_range(0.0..=1.0),
            rng.random::<f64>() * 0.3
        );
    }
    s
}

/// Fault mix `seed` as a scenario.
pub fn mix(seed: u64) -> Result<Scenario, Vec<ScenarioError>> {
    Scenario::from_toml(&mix_toml(seed))
}

/// What did not hold in a run, whatever its faults (empty: all held).
pub fn problems(r: &DrillReport) -> Vec<String> {
    let mut out: Vec<String> = r.violations.clone();
    if r.invariant_violations > r.violations.len() as u64 {
        out.push(format!(
            "{} invariant violations in all",
            r.invariant_violations
        ));
    }
    if r.final_states.active > 0 {
        out.push(format!("{} cascades left active", r.final_states.active));
    }
    if r.timed_out {
        out.push("stopped at max_virtual with work pending".into());
    }
    if r.escalations.open > 0 {
        out.push(format!("{} failures not taken up", r.escalations.open));
    }
    if !r.audit_chains_verified {
        out.push("an audit chain does not verify".into());
    }
    out.extend(r.errors.iter().map(|e| format!("error: {e}")));
    out
}
