//! Domain values. Every value that crosses a trust boundary is a newtype with a
//! validating `parse`, so an invalid id, number or address cannot travel into
//! the engine or a store.

mod bridge;
mod contact;
mod ids;
mod incident;
pub mod locale;
mod origin;
mod quiet;
mod quorum;
mod response;
mod severity;
mod stakeholder;
mod time;
mod update;

pub use bridge::Bridge;
pub use contact::{Address, ContactCheck, ContactMethods, EmailAddress, PhoneNumber, PushEndpoint};
pub use ids::{GroupId, IncidentId, StakeholderId};
pub use incident::{Incident, IncidentStatus, MessageTemplate, Trigger};
pub use origin::{Milestone, Origin, OriginSource};
pub use quiet::{QuietHours, time_zone};
pub use quorum::Quorum;
pub use response::{ResponseOption, Responses};
pub use severity::{Channel, Severity, Tier};
pub use stakeholder::{Group, IdpRecord, Quiet, Stakeholder};
pub use time::{Millis, Ts};
pub use update::{Audience, IncidentUpdate, MAX_UPDATES};

/// A value from outside failed validation: names the field, the offending
/// value (never a contact detail) and what was expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct InvalidValue {
    pub field: String,
    pub message: String,
}

impl InvalidValue {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }

    /// Prefixes the field path, e.g. `stakeholders[3]` + `.phone`.
    pub fn within(mut self, prefix: &str) -> Self {
        self.field = if self.field.is_empty() {
            prefix.to_string()
        } else if self.field.starts_with('[') {
            format!("{prefix}{}", self.field)
        } else {
            format!("{prefix}.{}", self.field)
        };
        self
    }
}
