//! Stakeholders and groups as the directory holds them.

use super::{Channel, ContactMethods, GroupId, StakeholderId, Tier};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stakeholder {
    pub id: StakeholderId,
    pub name: String,
    pub tier: Tier,
    pub contacts: ContactMethods,
    /// Channels this person accepts, in no particular order; empty = all.
    /// The order comes from the policy for the incident's severity.
    #[serde(default)]
    pub preferences: Vec<Channel>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manager: Option<StakeholderId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locale: Option<String>,
    /// Identity-provider names (SCIM `userName`, `externalId`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_id: Option<String>,
    /// Deprovisioned people stay on record but belong to no group.
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub active: bool,
}

fn yes() -> bool {
    true
}

fn is_true(b: &bool) -> bool {
    *b
}

impl Stakeholder {
    /// A person with only the required fields set.
    pub fn new(
        id: StakeholderId,
        name: impl Into<String>,
        tier: Tier,
        contacts: ContactMethods,
    ) -> Self {
        Stakeholder {
            id,
            name: name.into(),
            tier,
            contacts,
            preferences: Vec::new(),
            manager: None,
            locale: None,
            user_name: None,
            external_id: None,
            active: true,
        }
    }
}

impl Stakeholder {
    /// The channel plan for this person: `order` (the severity's channel order)
    /// filtered by the channels they have an address for and accept.
    pub fn plan(&self, order: &[Channel]) -> Vec<Channel> {
        order
            .iter()
            .copied()
            .filter(|c| {
                self.contacts.has(*c)
                    && (self.preferences.is_empty() || self.preferences.contains(c))
            })
            .collect()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Group {
    pub id: GroupId,
    pub name: String,
    pub members: Vec<StakeholderId>,
    /// Who is told, on the high-priority route, when a member's cascade fails.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_call_manager: Option<StakeholderId>,
    /// The high-priority route for escalations: the channel order of the
    /// escalation cascades of its failures (empty: the policy's manager route).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub escalation_channels: Vec<Channel>,
}
