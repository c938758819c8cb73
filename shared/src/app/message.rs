//! What each channel says. The operator's message is used as given; Muster
//! adds the channel's way to acknowledge.

use crate::domain::{Channel, Incident};
use crate::engine::Route;
use crate::ports::CascadeRecord;

/// Subject and body for `channel`.
/// Subject and body for `channel`; `ack_link` is the signed one-click link
/// (email and push), when links are configured.
pub fn render(
    incident: &Incident,
    rec: &CascadeRecord,
    channel: Channel,
    ack_link: Option<&str>,
) -> (String, String) {
    let t = &incident.trigger;
    let id = &t.incident_id;
    let sev = t.severity;
    let text = t.message_template.as_str();
    let (subject, lead) = match (rec.cascade.key.route, &rec.about) {
        (Route::Manager, Some(about)) => (
            format!("[{sev} ESCALATION] {id}: {about} could not be reached"),
            format!("Escalation: {about} has not acknowledged {id} on any channel. "),
        ),
        _ => (
            format!("[{sev}] {id}: business continuity activation"),
            String::new(),
        ),
    };
    let code = &rec.ack_code;
    let body = match channel {
        Channel::Voice if text.to_ascii_lowercase().contains("press 1") => format!("{lead}{text}"),
        Channel::Voice => format!("{lead}{text} Press 1 to acknowledge."),
        Channel::Sms => format!("[{sev} {id}] {lead}{text} Reply ACK {code} to acknowledge."),
        Channel::Email => match ack_link {
            Some(link) => format!(
                "{lead}{text}\n\nAcknowledge: {link}\nor reply ACK {code} to the SMS.\nIncident: {id} ({sev})"
            ),
            None => format!(
                "{lead}{text}\n\nReply ACK {code} to the SMS to acknowledge.\nIncident: {id} ({sev})"
            ),
        },
        Channel::Push => match ack_link {
            Some(link) => format!("{lead}{text}\n{link}"),
            None => format!("{lead}{text}"),
        },
    };
    (subject, body)
}
