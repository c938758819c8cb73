//! Severity (P1 to P4), stakeholder tier (1 to 3) and notification channel.

use super::InvalidValue;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Severity {
    P1,
    P2,
    P3,
    P4,
}

impl Severity {
    pub const ALL: [Severity; 4] = [Severity::P1, Severity::P2, Severity::P3, Severity::P4];

    /// Exactly `P1`, `P2`, `P3` or `P4` (the documented enum).
    pub fn parse(s: &str) -> Result<Self, InvalidValue> {
        match s {
            "P1" => Ok(Self::P1),
            "P2" => Ok(Self::P2),
            "P3" => Ok(Self::P3),
            "P4" => Ok(Self::P4),
            _ => Err(InvalidValue::new(
                "",
                format!("invalid severity {s:?}: expected P1, P2, P3 or P4"),
            )),
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Self::P1 => "P1",
            Self::P2 => "P2",
            Self::P3 => "P3",
            Self::P4 => "P4",
        }
    }
    pub fn index(self) -> usize {
        self as usize
    }
}

/// Stakeholder tier: 1 (executives, first responders) to 3 (wider staff).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Tier(u8);

impl Tier {
    pub const ONE: Tier = Tier(1);
    pub const TWO: Tier = Tier(2);
    pub const THREE: Tier = Tier(3);
    pub const ALL: [Tier; 3] = [Tier::ONE, Tier::TWO, Tier::THREE];
    pub const COUNT: usize = 3;
    /// Tier 1: the first to be told.
    pub const HIGHEST: Tier = Tier::ONE;
    /// Tier 3: a group member the directory does not know.
    pub const LOWEST: Tier = Tier::THREE;
    /// Tier 2: a directory entry (file or SCIM) that names no tier.
    pub const DEFAULT: Tier = Tier::TWO;

    pub fn new(n: i64) -> Result<Self, InvalidValue> {
        if (1..=3).contains(&n) {
            Ok(Self(n as u8))
        } else {
            Err(InvalidValue::new(
                "",
                format!("invalid tier {n}: expected 1, 2 or 3"),
            ))
        }
    }
    pub fn get(self) -> u8 {
        self.0
    }
    pub fn index(self) -> usize {
        usize::from(self.0 - 1)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Channel {
    Voice,
    Sms,
    Email,
    Push,
}

impl Channel {
    pub const ALL: [Channel; 4] = [Channel::Voice, Channel::Sms, Channel::Email, Channel::Push];

    pub fn parse(s: &str) -> Result<Self, InvalidValue> {
        match s.trim().to_ascii_lowercase().as_str() {
            "voice" => Ok(Self::Voice),
            "sms" => Ok(Self::Sms),
            "email" => Ok(Self::Email),
            "push" => Ok(Self::Push),
            _ => Err(InvalidValue::new(
                "",
                format!("invalid channel {s:?}: expected voice, sms, email or push"),
            )),
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Voice => "voice",
            Self::Sms => "sms",
            Self::Email => "email",
            Self::Push => "push",
        }
    }
    pub fn index(self) -> usize {
        self as usize
    }
}

macro_rules! serde_via_str {
    ($t:ty) => {
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
        impl Serialize for $t {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }
        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                Self::parse(&s).map_err(serde::de::Error::custom)
            }
        }
    };
}
serde_via_str!(Severity);
serde_via_str!(Channel);

impl fmt::Display for Tier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "tier{}", self.0)
    }
}
impl Serialize for Tier {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u8(self.0)
    }
}
impl<'de> Deserialize<'de> for Tier {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let n = i64::deserialize(d)?;
        Tier::new(n).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn severity_is_exactly_the_documented_enum_and_channels_any_case() {
        assert_eq!(Severity::parse("P1").ok(), Some(Severity::P1));
        for bad in ["p1", "1", " P2 ", "P5", ""] {
            assert!(Severity::parse(bad).is_err(), "{bad:?}");
        }
        assert_eq!(Channel::parse("SMS").ok(), Some(Channel::Sms));
        assert!(Channel::parse("fax").is_err());
        assert!(Tier::new(0).is_err() && Tier::new(4).is_err());
    }
}
