//! Time as integer milliseconds since the Unix epoch: exact, ordered, and the
//! same on a virtual clock and a real one. The engine never reads a clock; it
//! is handed `now`.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A duration in milliseconds.
pub type Millis = u64;

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default,
)]
#[serde(transparent)]
pub struct Ts(pub u64);

impl Ts {
    pub const fn from_secs(s: u64) -> Self {
        Ts(s * 1000)
    }
    pub fn plus(self, ms: Millis) -> Ts {
        Ts(self.0.saturating_add(ms))
    }
    /// Milliseconds from `earlier` to `self`, zero if `earlier` is later.
    pub fn since(self, earlier: Ts) -> Millis {
        self.0.saturating_sub(earlier.0)
    }
    pub fn from_system(t: SystemTime) -> Ts {
        Ts(t.duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0))
    }
    pub fn to_system(self) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(self.0)
    }
    /// Parses an RFC 3339 date-time (`2024-05-20T14:32:00Z`,
    /// `2024-05-20T16:32:00.5+02:00`; `t` and `z` in either case, as RFC
    /// 3339 section 5.6 allows). Times before the Unix epoch are refused.
    pub fn parse_rfc3339(s: &str) -> Result<Ts, super::InvalidValue> {
        Self::parse_rfc3339_any(s)?.ok_or_else(|| {
            super::InvalidValue::new(
                "",
                format!(
                    "invalid timestamp {:?}: before 1970",
                    s.chars().take(64).collect::<String>()
                ),
            )
        })
    }

    /// Parses any RFC 3339 date-time; `None` for a valid one before 1970,
    /// which a `Ts` cannot hold.
    pub fn parse_rfc3339_any(s: &str) -> Result<Option<Ts>, super::InvalidValue> {
        use time::format_description::well_known::Rfc3339;
        let invalid = |why: String| {
            super::InvalidValue::new(
                "",
                format!(
                    "invalid timestamp {:?}: {why}",
                    s.chars().take(64).collect::<String>()
                ),
            )
        };
        let upper = s.to_ascii_uppercase();
        let t = time::OffsetDateTime::parse(&upper, &Rfc3339)
            .map_err(|e| invalid(format!("expected an RFC 3339 date-time ({e})")))?;
        let ms = t.unix_timestamp_nanos().div_euclid(1_000_000);
        Ok(u64::try_from(ms).ok().map(Ts))
    }
    pub fn rfc3339(self) -> String {
        humantime::format_rfc3339_millis(self.to_system()).to_string()
    }
}

impl fmt::Display for Ts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.rfc3339())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_round_trips() {
        let t = Ts::parse_rfc3339("2024-05-20T14:32:00Z").ok();
        assert_eq!(
            t.map(|t| t.rfc3339()),
            Some("2024-05-20T14:32:00.000Z".to_string())
        );
        assert!(Ts::parse_rfc3339("yesterday").is_err());
    }

    #[test]
    fn rfc3339_offsets_fractions_and_lower_case_are_the_same_instant() {
        let utc = Ts::parse_rfc3339("2024-05-20T14:32:00Z").ok();
        for same in [
            "2024-05-20T16:32:00+02:00",
            "2024-05-20T09:32:00-05:00",
            "2024-05-20t14:32:00z",
            "2024-05-20T14:32:00.000Z",
            "2024-05-20T14:32:00+00:00",
        ] {
            assert_eq!(Ts::parse_rfc3339(same).ok(), utc, "{same}");
        }
        assert_eq!(
            Ts::parse_rfc3339("2024-05-20T14:32:00.250Z")
                .map(|t| t.0 % 1000)
                .ok(),
            Some(250)
        );
        for bad in [
            "2024-05-20 14:32:00",
            "2024-05-20T14:32:00",
            "2024-13-20T14:32:00Z",
            "1969-12-31T23:59:59Z",
            " 2024-05-20T14:32:00Z",
            "",
        ] {
            assert!(Ts::parse_rfc3339(bad).is_err(), "{bad}");
        }
    }
}
