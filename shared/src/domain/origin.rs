//! Where an incident came from, when it came from a system Muster writes
//! its progress back to (a PagerDuty incident, a Jira issue, a ServiceNow
//! incident), and the milestones it writes.

use super::StakeholderId;
use serde::{Deserialize, Serialize};
use std::fmt;

/// The systems Muster writes progress back to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OriginSource {
    Pagerduty,
    Jira,
    Servicenow,
}

impl OriginSource {
    pub const ALL: [OriginSource; 3] = [
        OriginSource::Pagerduty,
        OriginSource::Jira,
        OriginSource::Servicenow,
    ];

    /// The integration's name (`/v1/integrations/{name}`).
    pub fn name(self) -> &'static str {
        match self {
            OriginSource::Pagerduty => "pagerduty",
            OriginSource::Jira => "jira",
            OriginSource::Servicenow => "servicenow",
        }
    }

    pub fn parse(name: &str) -> Option<OriginSource> {
        Self::ALL.into_iter().find(|s| s.name() == name)
    }
}

impl fmt::Display for OriginSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The source's own record of the incident: a PagerDuty incident id
/// (`PT4KHLK`), a Jira issue key (`OPS-42`), a ServiceNow `sys_id`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Origin {
    pub source: OriginSource,
    pub reference: String,
}

/// The longest reference kept (the sources' own ids are far shorter).
pub const REFERENCE_MAX: usize = 128;

impl Origin {
    /// A reference as the source gave it, if it can be put in a URL path
    /// segment safely: ASCII letters, digits, `-`, `_` and `.`, at most
    /// [`REFERENCE_MAX`] characters.
    pub fn new(source: OriginSource, reference: &str) -> Option<Origin> {
        let ok = !reference.is_empty()
            && reference.len() <= REFERENCE_MAX
            && reference
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
            && reference != "."
            && reference != "..";
        ok.then(|| Origin {
            source,
            reference: reference.to_string(),
        })
    }
}

/// A moment of an incident's progress told to its source.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "milestone")]
pub enum Milestone {
    /// The incident was declared and its group's members are being reached.
    Started,
    /// `about` was not reached; their failure was named to `to`
    /// (`level` 1: the first person told).
    Escalated {
        about: StakeholderId,
        to: StakeholderId,
        level: u32,
    },
    /// `about` was not reached and nobody on the escalation chain was left
    /// to tell.
    Undelivered { about: StakeholderId },
    /// Every member acknowledged.
    AllAcknowledged,
    /// The incident was closed and nothing of it is open.
    Closed,
}

impl Milestone {
    /// A short name for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Milestone::Started => "started",
            Milestone::Escalated { .. } => "escalated",
            Milestone::Undelivered { .. } => "undelivered",
            Milestone::AllAcknowledged => "all_acknowledged",
            Milestone::Closed => "closed",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reference_that_could_leave_its_path_segment_is_refused() {
        for bad in [
            "",
            ".",
            "..",
            "a/b",
            "a?b",
            "a b",
            "%2e%2e",
            &"x".repeat(129),
        ] {
            assert!(Origin::new(OriginSource::Jira, bad).is_none(), "{bad:?}");
        }
        for good in ["OPS-42", "PT4KHLK", "9d7f2c1a4f411200adf9f8e18110c7b2"] {
            assert_eq!(
                Origin::new(OriginSource::Jira, good).map(|o| o.reference),
                Some(good.to_string())
            );
        }
    }
}
