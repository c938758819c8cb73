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
    /// Parses RFC 3339 (`2024-05-20T14:32:00Z`).
    pub fn parse_rfc3339(s: &str) -> Result<Ts, super::InvalidValue> {
        humantime::parse_rfc3339_weak(s.trim())
            .map(Ts::from_system)
            .map_err(|e| super::InvalidValue::new("", format!("invalid timestamp {s:?}: {e}")))
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
}
