//! Escalation over random directories and random event sequences (carrier
//! faults, lost receipts, people who answer late or never), each run as a
//! whole drill. From the audit trail of every run:
//! - every member who ends in CASCADE_FAILURE is named in a message a
//!   carrier accepted, or acknowledged after all, or the incident records
//!   ESCALATION_UNDELIVERED for them;
//! - whoever acknowledged a failure had been told about it;
//! - the chain follows the rule (on-call manager, or their manager when they
//!   are the one who failed; then managers; then the fallback rota) and
//!   never names anyone twice; undelivered means that chain was exhausted;
//! - nobody gets two calls or two SMS from two cascades within the hold
//!   (checked by every drill), and every cascade ends.
//!
//! A directory with no escalation path at all is refused.

use muster::app::EscalationOutcome;
use muster::drill::{Scenario, run};
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;

#[derive(Debug, Clone)]
struct Person {
    member: bool,
    /// Index of their manager among all people.
    manager: Option<usize>,
    channels: Vec<&'static str>,
    never: bool,
    ack: [f64; 4],
}

#[derive(Debug, Clone)]
struct World {
    people: Vec<Person>,
    on_call: Option<usize>,
    fallback: Vec<usize>,
    max_depth: u32,
    faults: [f64; 3],
    seed: u64,
}

fn name(i: usize) -> String {
    format!("p{i}")
}

impl World {
    fn toml(&self) -> String {
        let mut s = String::from(
            "seed = 1\nmax_virtual = \"12h\"\n[incident]\nincidentId = \"INC-PROP\"\nseverity = \"P1\"\nstakeholderGroupId = \"g\"\nmessageTemplate = \"Outage.\"\ntimestamp = \"2024-05-20T14:32:00Z\"\n[group]\n",
        );
        if let Some(m) = self.on_call {
            s += &format!("on_call_manager = \"{}\"\n", name(m));
        }
        let fallback: Vec<String> = self
            .fallback
            .iter()
            .map(|i| format!("\"{}\"", name(*i)))
            .collect();
        s += &format!(
            "[policy.escalation]\nfallback = [{}]\nmax_depth = {}\n",
            fallback.join(", "),
            self.max_depth
        );
        let [transient, unreachable, lost] = self.faults;
        for c in ["voice", "sms", "email", "push"] {
            s += &format!(
                "[carriers.{c}]\nlatency = {{ median = \"3s\", p95 = \"20s\" }}\ntransient = {transient}\nunreachable = {unreachable}\nlost_receipts = {lost}\n"
            );
        }
        for (i, p) in self.people.iter().enumerate() {
            let [v, sm, e, pu] = p.ack;
            s += &format!(
                "[behaviours.b{i}]\nnever = {}\nack = {{ voice = {v}, sms = {sm}, email = {e}, push = {pu} }}\nack_delay = {{ median = \"20s\", p95 = \"5m\" }}\n",
                if p.never { 1.0 } else { 0.0 }
            );
        }
        for (i, p) in self.people.iter().enumerate() {
            s += &format!(
                "[[stakeholders]]\nid = \"{}\"\ntier = {}\nbehaviour = \"b{i}\"\nmember = {}\n",
                name(i),
                1 + i % 3,
                p.member
            );
            for c in &p.channels {
                s += &match *c {
                    "voice" => format!("phone = \"+1 212 555 01{:02}\"\n", i),
                    "sms" => format!("sms = \"+1 202 555 01{:02}\"\n", i),
                    "email" => format!("email = \"{}@example.com\"\n", name(i)),
                    _ => format!("push = \"device-{}\"\n", name(i)),
                };
            }
            if let Some(m) = p.manager {
                s += &format!("manager = \"{}\"\n", name(m));
            }
        }
        s
    }

    /// The chain the rule gives for the failure of person `x`, read from
    /// the directory as the policy file states it.
    fn chain(&self, x: usize) -> Vec<usize> {
        let mut told: Vec<usize> = Vec::new();
        let fresh = |i: usize, told: &[usize]| i != x && !told.contains(&i);
        let mut in_fallback = false;
        while (told.len() as u32) < self.max_depth {
            let from_directory = if in_fallback {
                None
            } else {
                match told.last() {
                    None => match self.on_call {
                        Some(m) if m == x => self.people[x].manager,
                        other => other,
                    },
                    Some(last) => self.people[*last].manager,
                }
            };
            let next = from_directory
                .filter(|i| fresh(*i, &told))
                .or_else(|| self.fallback.iter().copied().find(|i| fresh(*i, &told)));
            let Some(next) = next else { break };
            // Once the chain reaches a member of the rota, it goes on through
            // the rota (not that member's manager).
            in_fallback = self.fallback.contains(&next);
            told.push(next);
        }
        told
    }
}

fn world() -> impl Strategy<Value = World> {
    (1usize..=6, 0usize..=3).prop_flat_map(|(members, others)| {
        let n = members + others;
        let person = |member: bool| {
            (
                prop::option::weighted(0.6, 0..n),
                proptest::sample::subsequence(vec!["voice", "sms", "email", "push"], 0..=4),
                prop::bool::weighted(0.35),
                prop::array::uniform4(prop::sample::select(vec![0.0, 0.3, 0.9, 1.0])),
            )
                .prop_map(move |(manager, channels, never, ack)| Person {
                    member,
                    manager,
                    channels,
                    never,
                    ack,
                })
        };
        let people = (
            prop::collection::vec(person(true), members),
            prop::collection::vec(person(false), others),
        )
            .prop_map(|(mut m, o)| {
                m.extend(o);
                m
            });
        (
            people,
            prop::option::weighted(0.8, 0..n),
            prop::collection::vec(0..n, 0..=3),
            1u32..=4,
            prop::array::uniform3(prop::sample::select(vec![0.0, 0.02, 0.2])),
            any::<u64>(),
        )
            .prop_map(|(people, on_call, mut fallback, max_depth, faults, seed)| {
                fallback.dedup();
                let mut seen = Vec::new();
                fallback.retain(|f| {
                    let fresh = !seen.contains(f);
                    seen.push(*f);
                    fresh
                });
                World {
                    people,
                    on_call,
                    fallback,
                    max_depth,
                    faults,
                    seed,
                }
            })
    })
}

fn config(cases: u32) -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(cases);
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

fn check(w: &World) -> Result<(), TestCaseError> {
    let text = w.toml();
    let scenario = match Scenario::from_toml(&text) {
        Ok(s) => s,
        Err(errors) => {
            // The only scenario refused is one whose group has no path: no
            // on-call manager, or one who is a member with no manager of
            // their own, and no fallback.
            let on_call_alone = w
                .on_call
                .is_none_or(|m| w.people[m].member && w.people[m].manager.is_none_or(|b| b == m));
            prop_assert!(
                on_call_alone && w.fallback.is_empty(),
                "refused: {errors:?}\n{text}"
            );
            prop_assert!(
                errors.iter().any(|e| e.field == "group.on_call_manager"
                    && (e.message.contains("no escalation path")
                        || e.message.contains("would reach nobody"))),
                "{errors:?}"
            );
            return Ok(());
        }
    };
    prop_assert!(
        w.on_call.is_some() || !w.fallback.is_empty(),
        "accepted without a path"
    );
    let (_, r) = run(scenario, w.seed);
    prop_assert!(r.passed(), "{}\n{text}", r.render());
    prop_assert_eq!(r.escalations.failures, r.final_states.escalated);
    for st in &r.escalation_stories {
        let x: usize = st.about.as_str()[1..].parse().unwrap_or(usize::MAX);
        let want: Vec<String> = w.chain(x).into_iter().map(name).collect();
        let told: Vec<String> = st.told.iter().map(|t| t.to.to_string()).collect();
        prop_assert!(
            want.starts_with(&told),
            "{}: told {told:?}, the rule's chain is {want:?}\n{text}",
            st.about
        );
        match &st.outcome {
            EscalationOutcome::Acknowledged { by, .. } => {
                prop_assert!(told.contains(&by.to_string()), "{by} acknowledged untold");
            }
            EscalationOutcome::Undelivered { .. } => {
                prop_assert_eq!(&told, &want, "undelivered before the chain was exhausted");
            }
            EscalationOutcome::Withdrawn { .. } => {}
            other => prop_assert!(false, "{}: {other:?} at the end of a drill", st.about),
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(config(96))]

    #[test]
    fn every_failure_reaches_a_person_up_the_rule_s_chain_or_is_recorded(w in world()) {
        check(&w)?;
    }
}

#[test]
fn a_cycle_of_managers_ends_in_the_fallback_and_names_nobody_twice() {
    // p0 (who never answers) -> on-call p1 -> p2 -> p1 (a cycle) ...
    let silent = Person {
        member: false,
        manager: None,
        channels: vec!["voice"],
        never: true,
        ack: [0.0; 4],
    };
    let mut people = vec![silent.clone(); 4];
    people[0].member = true;
    people[1].manager = Some(2);
    people[2].manager = Some(1);
    people[3] = Person {
        never: false,
        ack: [1.0; 4],
        ..silent
    };
    let w = World {
        people,
        on_call: Some(1),
        fallback: vec![3],
        max_depth: 4,
        faults: [0.0; 3],
        seed: 3,
    };
    assert_eq!(w.chain(0), [1, 2, 3]);
    check(&w).unwrap_or_else(|e| panic!("{e}"));
}

/// The property is only as good as its reach: random worlds must give
/// refused directories, failures acknowledged deep in a chain, withdrawn
/// and undelivered escalations, and bundled messages.
#[test]
fn random_worlds_reach_every_escalation_outcome() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let mut runner = TestRunner::deterministic();
    let strategy = world();
    let (mut refused, mut deep, mut withdrawn, mut undelivered, mut bundled) = (0, 0, 0, 0, 0);
    for _ in 0..200 {
        let w = strategy.new_tree(&mut runner).expect("a world").current();
        let Ok(s) = Scenario::from_toml(&w.toml()) else {
            refused += 1;
            continue;
        };
        let (d, r) = run(s, w.seed);
        for st in &r.escalation_stories {
            match st.outcome {
                EscalationOutcome::Acknowledged { .. } if st.told.len() >= 2 => deep += 1,
                EscalationOutcome::Withdrawn { .. } => withdrawn += 1,
                EscalationOutcome::Undelivered { .. } => undelivered += 1,
                _ => {}
            }
        }
        d.store
            .for_each_audit(|e| bundled += usize::from(e.named.len() > 1));
    }
    for (what, n) in [
        ("refused", refused),
        ("acknowledged at level 2 or deeper", deep),
        ("withdrawn", withdrawn),
        ("undelivered", undelivered),
        ("bundled messages", bundled),
    ] {
        assert!(n > 0, "no random world gave {what}");
    }
}
