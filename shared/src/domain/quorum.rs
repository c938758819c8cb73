//! How many acknowledgements an incident needs: `{"count": N}` (members of
//! any tier), `{"tiers": {"1": 2}}` (per tier), or both (each must hold).
//! Only an answer that acknowledges counts; "I need help" does not.

use super::{InvalidValue, Tier};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The largest count a quorum may ask for (a group's size is bounded well below).
pub const MAX_COUNT: u64 = 1_000_000;

#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Quorum {
    /// Acknowledged members needed, whatever their tier.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<u32>,
    /// Acknowledged members needed per tier (`"1"`, `"2"`, `"3"`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tiers: BTreeMap<String, u32>,
}

impl Quorum {
    /// Parses the trigger's `quorum` object; every problem is named under `field`.
    pub fn parse(v: &serde_json::Value, field: &str) -> Result<Quorum, Vec<InvalidValue>> {
        let Some(map) = v.as_object() else {
            return Err(vec![InvalidValue::new(
                field,
                "expected an object: {\"count\": N} or {\"tiers\": {\"1\": N}}",
            )]);
        };
        let mut errors = Vec::new();
        let mut q = Quorum::default();
        // In field order whatever the map keeps (errors read the same everywhere).
        let mut fields: Vec<_> = map.iter().collect();
        fields.sort_by(|a, b| a.0.cmp(b.0));
        for (name, value) in fields {
            match name.as_str() {
                "count" => match positive(value) {
                    Ok(n) => q.count = Some(n),
                    Err(m) => errors.push(InvalidValue::new(format!("{field}.count"), m)),
                },
                "tiers" => {
                    let Some(tiers) = value.as_object() else {
                        errors.push(InvalidValue::new(
                            format!("{field}.tiers"),
                            "expected an object of tier to count, e.g. {\"1\": 2}",
                        ));
                        continue;
                    };
                    if tiers.is_empty() {
                        errors.push(InvalidValue::new(
                            format!("{field}.tiers"),
                            "empty: name at least one tier, e.g. {\"1\": 2}",
                        ));
                    }
                    let mut tiers: Vec<_> = tiers.iter().collect();
                    tiers.sort_by(|a, b| a.0.cmp(b.0));
                    for (tier, n) in tiers {
                        let at = format!("{field}.tiers.{tier}");
                        if !Tier::ALL.iter().any(|t| t.get().to_string() == *tier) {
                            errors.push(InvalidValue::new(
                                at,
                                format!("unknown tier {tier:?}: expected \"1\", \"2\" or \"3\""),
                            ));
                            continue;
                        }
                        match positive(n) {
                            Ok(n) => {
                                q.tiers.insert(tier.clone(), n);
                            }
                            Err(m) => errors.push(InvalidValue::new(at, m)),
                        }
                    }
                }
                other => errors.push(InvalidValue::new(
                    format!("{field}.{other}"),
                    "unknown field: a quorum has count and tiers",
                )),
            }
        }
        if errors.is_empty() && q.count.is_none() && q.tiers.is_empty() {
            errors.push(InvalidValue::new(field, "empty: give count, tiers or both"));
        }
        if errors.is_empty() {
            Ok(q)
        } else {
            Err(errors)
        }
    }

    /// Needed in `tier` (0: the quorum does not ask for that tier).
    pub fn needs(&self, tier: Tier) -> u32 {
        self.tiers
            .get(&tier.get().to_string())
            .copied()
            .unwrap_or(0)
    }

    /// Whether `acknowledged` (members in total) and `by_tier` (acknowledged
    /// members of each tier, indexed by [`Tier::index`]) meet it.
    pub fn met(&self, acknowledged: u64, by_tier: [u64; Tier::COUNT]) -> bool {
        self.count.is_none_or(|n| acknowledged >= u64::from(n))
            && Tier::ALL
                .iter()
                .all(|t| by_tier[t.index()] >= u64::from(self.needs(*t)))
    }
}

fn positive(v: &serde_json::Value) -> Result<u32, String> {
    match v.as_u64() {
        Some(n) if (1..=MAX_COUNT).contains(&n) => Ok(n as u32),
        _ => Err(format!(
            "expected a whole number from 1 to {MAX_COUNT}, got {v}"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_count_a_tier_map_or_both_are_accepted() {
        let q = Quorum::parse(&json!({"count": 3}), "quorum").unwrap_or_default();
        assert_eq!(q.count, Some(3));
        let q =
            Quorum::parse(&json!({"tiers": {"1": 2}, "count": 4}), "quorum").unwrap_or_default();
        assert_eq!(
            (q.count, q.needs(Tier::ONE), q.needs(Tier::TWO)),
            (Some(4), 2, 0)
        );
    }

    #[test]
    fn every_bad_part_is_named() {
        let errs = Quorum::parse(
            &json!({"count": 0, "tiers": {"4": 1, "2": -1}, "size": 1}),
            "trigger.quorum",
        )
        .err()
        .unwrap_or_default();
        let fields: Vec<_> = errs.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "trigger.quorum.count",
                "trigger.quorum.size",
                "trigger.quorum.tiers.2",
                "trigger.quorum.tiers.4"
            ]
        );
        for bad in [
            json!({}),
            json!([]),
            json!(3),
            json!({"count": 1.5}),
            json!({"count": 1, "tiers": {}}),
        ] {
            assert!(Quorum::parse(&bad, "quorum").is_err(), "{bad}");
        }
    }

    #[test]
    fn met_only_when_every_part_holds() {
        let q = Quorum::parse(&json!({"tiers": {"1": 2}, "count": 3}), "q").unwrap_or_default();
        assert!(!q.met(3, [1, 2, 0]), "tier 1 has one of two");
        assert!(!q.met(2, [2, 0, 0]), "two of three in all");
        assert!(q.met(3, [2, 1, 0]));
    }
}
