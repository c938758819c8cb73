//! Provider event shapes and what Muster answers, as pure functions over
//! JSON: no SDK, so the Lambda handlers and the tests share them.

pub mod chime;
pub mod cwlogs;
pub mod gateways;
pub mod integrations;
pub mod sendgrid;
pub mod ses;
pub mod sms;
pub mod sns;
pub mod twilio;
