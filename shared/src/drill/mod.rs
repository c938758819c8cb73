//! Drills: a whole business-continuity activation on the embedded runtime,
//! in virtual time, against simulated carriers and people, with a report of
//! what happened and a check of every invariant.

pub mod carrier;
pub mod faults;
pub mod html;
mod interleave;
mod report;
mod run;
pub mod scenario;
pub mod sim;

pub use report::{
    CarrierStats, ChannelStats, DrillReport, EscalationSummary, FinalStates, IncidentOutcome,
    LeftAtEnd, Percentiles, Series, escalation_checks,
};
pub use run::{Drill, Progress, run};
pub use scenario::{MoreIncident, Scenario, ScenarioError};
