//! Stakeholders and groups as the directory holds them.

use super::{Channel, ContactMethods, EmailAddress, GroupId, StakeholderId, Tier};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::fmt;

/// A SCIM resource's attributes as the identity provider wrote them
/// (`userName`, `externalId`, `name`, every email and phone number, its
/// extensions), kept verbatim so that SCIM reads return what was written.
/// It holds contact details: `Debug` shows none of it, and the DynamoDB
/// directory seals it with the contacts.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct IdpRecord(Map<String, Value>);

impl IdpRecord {
    pub fn new(attributes: Map<String, Value>) -> Self {
        IdpRecord(attributes)
    }
    pub fn attributes(&self) -> &Map<String, Value> {
        &self.0
    }
    fn text(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(Value::as_str)
    }
    /// SCIM `userName` (often an email address: never log it).
    pub fn user_name(&self) -> Option<&str> {
        self.text("userName")
    }
    pub fn external_id(&self) -> Option<&str> {
        self.text("externalId")
    }
    /// `userName` masked as contacts are (`a•••@example.com`).
    pub fn masked_user_name(&self) -> Option<String> {
        self.user_name().map(|u| match EmailAddress::parse(u) {
            Ok(e) => e.masked(),
            Err(_) => format!("{}•••", u.chars().next().unwrap_or('•')),
        })
    }
}

impl fmt::Debug for IdpRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "IdpRecord({} attributes)", self.0.len())
    }
}

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
    /// Their time zone and quiet hours (a P3 or P4 waits for the window
    /// to end; the policy's severities override it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quiet: Option<Quiet>,
    /// The person as the identity provider last described them over SCIM.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idp: Option<IdpRecord>,
    /// Deprovisioned people stay on record but belong to no group.
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub active: bool,
}

/// A person's quiet hours: a window of local time in their time zone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quiet {
    /// IANA name ("Europe/London").
    pub time_zone: String,
    pub hours: super::QuietHours,
}

fn yes() -> bool {
    true
}

fn is_true(b: &bool) -> bool {
    *b
}

impl Stakeholder {
    /// The name a person signs in with over SCIM: the identity provider's
    /// `userName`, else the id (often an email address: never log it).
    pub fn scim_user_name(&self) -> &str {
        self.idp
            .as_ref()
            .and_then(IdpRecord::user_name)
            .unwrap_or(self.id.as_str())
    }

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
            quiet: None,
            idp: None,
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
    /// The group as the identity provider last described it over SCIM.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idp: Option<IdpRecord>,
}
