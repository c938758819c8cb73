//! A bounded sample of the fuzz run on every commit (the long runs are
//! `muster-fuzz run`, docs/testing.md), the engine's own promises, and
//! structured properties of the trigger parser.

use muster_fuzz::{Target, case, run_range};
use proptest::prelude::*;
use serde_json::json;

fn targets() -> Vec<Target> {
    muster_fuzz::muster_targets()
}

/// No parser of outside input panics or overflows its stack on 400 cases
/// each (mutated real inputs, random bytes, 20,000-fold repeats).
#[test]
fn every_parser_survives_a_sample_of_hostile_input() {
    let targets = targets();
    assert!(targets.len() >= 20, "{} targets", targets.len());
    for t in &targets {
        assert!(!t.seeds.is_empty(), "{} has no seed inputs", t.name);
    }
    let cases = 400 * targets.len() as u64;
    let out = run_range(&targets, 20261201, 0, cases, 2, &|_| {});
    let failed: Vec<_> = out
        .panics
        .iter()
        .map(|&(i, t)| (i, targets[t].name))
        .collect();
    assert!(failed.is_empty(), "panicked (case, target): {failed:?}");
    assert_eq!(out.per_target.iter().sum::<u64>(), cases);
    assert!(
        out.per_target.iter().all(|&n| n == 400),
        "{:?}",
        out.per_target
    );
}

fn planted() -> Vec<Target> {
    vec![
        Target {
            name: "calm",
            seeds: vec![b"{}".to_vec()],
            run: |_| {},
        },
        Target {
            name: "planted",
            seeds: vec![b"ok".to_vec()],
            // Panics on any input holding a zero byte: mutations make many.
            run: |b| assert!(!b.contains(&0), "planted"),
        },
    ]
}

/// The engine catches a panic, names its case, and that case's input,
/// made again from its index alone, still panics.
#[test]
fn a_planted_panic_is_found_and_reproduced_from_its_index() {
    let targets = planted();
    let out = run_range(&targets, 3, 0, 4_000, 2, &|_| {});
    assert!(!out.panics.is_empty(), "no case found the planted panic");
    for &(i, t) in &out.panics {
        assert_eq!(targets[t].name, "planted");
        let (again, input) = case(3, i, &targets);
        assert_eq!(again, t);
        assert!(input.contains(&0), "case {i} does not reproduce");
    }
    assert_eq!(out.per_target, vec![2_000, 2_000]);
}

#[test]
fn a_case_is_the_same_input_every_time_and_seeds_differ() {
    let targets = targets();
    for i in [0, 1, 77, 123_456, u64::MAX / 3] {
        assert_eq!(case(9, i, &targets), case(9, i, &targets));
    }
    let differ = (0..200)
        .filter(|&i| case(1, i, &targets) != case(2, i, &targets))
        .count();
    assert!(
        differ > 150,
        "seeds 1 and 2 share {} of 200 inputs",
        200 - differ
    );
    assert!((0..2_000).all(|i| case(5, i, &targets).1.len() <= muster_fuzz::MAX_INPUT));
}

fn valid_trigger() -> impl Strategy<Value = serde_json::Value> {
    (
        "[A-Za-z0-9][A-Za-z0-9._:@-]{0,40}",
        prop::sample::select(vec!["P1", "P2", "P3", "P4"]),
        "[a-z0-9][a-z0-9-]{0,30}",
        "[A-Za-z][ -~\n]{0,300}",
        prop::option::of((1970u32..9999, 1u32..13, 1u32..29, 0u32..24, 0u32..60, 0u32..60, -14i32..15)),
    )
        .prop_map(|(id, sev, group, msg, ts)| {
            let mut f = json!({"incidentId": id, "severity": sev, "stakeholderGroupId": group, "messageTemplate": msg});
            if let Some((y, mo, d, h, mi, s, off)) = ts {
                let zone = match off {
                    0 => "Z".to_string(),
                    o => format!("{}{:02}:00", if o < 0 { '-' } else { '+' }, o.unsigned_abs()),
                };
                f["timestamp"] = json!(format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}{zone}"));
            }
            f
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// A valid trigger is accepted, and is the same trigger, in each of the
    /// three body shapes the seed names.
    #[test]
    fn a_valid_trigger_means_the_same_in_every_shape(f in valid_trigger()) {
        let flat = muster::domain::Trigger::from_json(&f);
        prop_assert!(flat.is_ok(), "{f} refused: {flat:?}");
        let native = muster::domain::Trigger::from_json(&json!({"trigger": f}));
        let cxone = muster::domain::Trigger::from_json(&json!({"eventType": "bcp.cascade.trigger", "payload": f}));
        prop_assert_eq!(&flat, &native);
        prop_assert_eq!(&flat, &cxone);
    }

    /// Spoiling one field of a valid trigger is refused naming that field,
    /// under the prefix of the shape it came in.
    #[test]
    fn a_spoiled_field_is_named_in_every_shape(
        f in valid_trigger(),
        field in prop::sample::select(vec!["incidentId", "severity", "stakeholderGroupId", "messageTemplate", "timestamp"]),
        bad in prop::sample::select(vec![json!(""), json!(7), json!(null), json!(" ")]),
    ) {
        let mut f = f;
        // A null timestamp is absent, which is valid.
        prop_assume!(!(field == "timestamp" && bad.is_null()));
        f[field] = bad;
        for (body, prefix) in [
            (f.clone(), ""),
            (json!({"trigger": f}), "trigger."),
            (json!({"eventType": "bcp.cascade.trigger", "payload": f}), "payload."),
        ] {
            let errs = muster::domain::Trigger::from_json(&body).err().unwrap_or_default();
            let want = format!("{prefix}{field}");
            prop_assert!(errs.iter().any(|e| e.field == want), "{body}: {errs:?}");
        }
    }
}
