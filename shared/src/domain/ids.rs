//! Identifiers: 1 to 128 characters of `A-Z a-z 0-9 . _ - : @`, the first a
//! letter or digit, cheap to clone.

use super::InvalidValue;
use serde::{Deserialize, Deserializer, Serialize};
use std::fmt;
use std::sync::Arc;

/// 1 to 128 of the allowed characters, the first a letter or digit (so no
/// id is `.` or `..`, path segments a URL would collapse, breaking the
/// links that name the id). The pattern `docs/openapi.json` declares:
/// `^[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}$`.
fn valid_id(s: &str) -> bool {
    s.len() <= 128
        && s.as_bytes().first().is_some_and(u8::is_ascii_alphanumeric)
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b':' | b'@'))
}

macro_rules! id_type {
    ($name:ident, $what:literal) => {
        #[doc = concat!("A validated ", $what, " identifier.")]
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
        #[serde(transparent)]
        pub struct $name(Arc<str>);

        impl $name {
            pub fn parse(s: &str) -> Result<Self, InvalidValue> {
                if valid_id(s) {
                    Ok(Self(Arc::from(s)))
                } else {
                    Err(InvalidValue::new(
                        "",
                        format!(
                            concat!("invalid ", $what, " id {:?}: expected 1 to 128 characters of letters, digits, '.', '_', '-', ':' or '@', starting with a letter or digit"),
                            s.chars().take(140).collect::<String>()
                        ),
                    ))
                }
            }
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({:?})", stringify!($name), &*self.0)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                Self::parse(&s).map_err(serde::de::Error::custom)
            }
        }
    };
}

id_type!(IncidentId, "incident");
id_type!(StakeholderId, "stakeholder");
id_type!(GroupId, "group");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_seed_incident_id() {
        assert_eq!(
            IncidentId::parse("INC-2024-0892")
                .map(|i| i.to_string())
                .ok(),
            Some("INC-2024-0892".into())
        );
    }

    #[test]
    fn rejects_empty_spaces_and_overlong_ids() {
        assert!(IncidentId::parse("").is_err());
        assert!(StakeholderId::parse("a b").is_err());
        assert!(GroupId::parse(&"x".repeat(129)).is_err());
        assert!(GroupId::parse("ops/leadership").is_err());
        assert!(IncidentId::parse(".").is_err());
        assert!(IncidentId::parse("..").is_err());
        assert!(IncidentId::parse(".x").is_err() && IncidentId::parse("-x").is_err());
        assert!(IncidentId::parse("x..").is_ok());
    }
}
