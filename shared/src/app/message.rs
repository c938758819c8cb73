//! What each channel says. The operator's message is used as given; Muster
//! adds the channel's way to acknowledge. An escalation message names the
//! failure it reports and every other failure still open for the same
//! person (`named`: the cascade's own first).

use super::escalation::BUNDLE_NAMES;
use crate::domain::{Channel, Incident};
use crate::engine::Route;
use crate::ports::CascadeRecord;

/// "A", "A and B", "A, B and C", "A, B and 3 others".
fn list(names: &[&str]) -> String {
    let (shown, more) = if names.len() > BUNDLE_NAMES {
        (&names[..BUNDLE_NAMES], names.len() - BUNDLE_NAMES)
    } else {
        (names, 0)
    };
    match (shown, more) {
        ([], _) => String::new(),
        ([one], 0) => (*one).to_string(),
        (_, 0) => {
            let (last, rest) = shown.split_last().unwrap_or((&"", &[]));
            format!("{} and {last}", rest.join(", "))
        }
        (_, n) => format!("{} and {n} others", shown.join(", ")),
    }
}

/// Subject and body for `channel`; `ack_link` is the signed one-click link
/// (email and push), when links are configured; `named` the failures an
/// escalation message names; `sms_replies` whether SMS replies reach
/// Muster (not from a sender id): only then does a message ask for one.
pub fn render(
    incident: &Incident,
    rec: &CascadeRecord,
    channel: Channel,
    ack_link: Option<&str>,
    named: &[&str],
    sms_replies: bool,
) -> (String, String) {
    let (subject, body) = render_plain(incident, rec, channel, ack_link, named, sms_replies);
    // The bridge: named in every written message; a call offers it as a
    // key instead ("press 0", added where the call is answered).
    match (&incident.trigger.bridge, channel) {
        (Some(b), Channel::Sms) => (subject, format!("{body} {}", b.line())),
        (Some(b), Channel::Email | Channel::Push) => (subject, format!("{body}\n{}", b.line())),
        _ => (subject, body),
    }
}

fn render_plain(
    incident: &Incident,
    rec: &CascadeRecord,
    channel: Channel,
    ack_link: Option<&str>,
    named: &[&str],
    sms_replies: bool,
) -> (String, String) {
    let t = &incident.trigger;
    let id = &t.incident_id;
    let sev = t.severity;
    let text = t.template_for(rec.locale.as_deref()).0.as_str();
    let answer = rec.escalation.as_ref().and_then(|e| e.answer.as_deref());
    let (subject, lead) = match (&rec.cascade.key.route, named) {
        (Route::Escalation { .. }, [who]) if answer.is_some() => {
            let said = answer.unwrap_or_default();
            (
                format!("[{sev} ESCALATION] {id}: {who} answered \"{said}\""),
                format!("Escalation: {who} answered \"{said}\" to {id}. "),
            )
        }
        (Route::Escalation { .. }, [_, ..]) => {
            let who = list(named);
            let verb = if named.len() == 1 { "has" } else { "have" };
            (
                format!("[{sev} ESCALATION] {id}: {who} could not be reached"),
                format!("Escalation: {who} {verb} not acknowledged {id} on any channel. "),
            )
        }
        _ => (
            format!("[{sev}] {id}: business continuity activation"),
            String::new(),
        ),
    };
    let code = &rec.ack_code;
    // A member's message offers the incident's answers when it has its own;
    // an escalation's only an acknowledgement.
    let options = &t.responses;
    if !options.is_default() && !rec.cascade.key.route.is_escalation() {
        let body = match channel {
            Channel::Voice => format!("{lead}{text} {}.", capitalise(&options.menu("press "))),
            Channel::Sms if sms_replies => {
                format!("[{sev} {id}] {lead}{text} Reply {}.", options.menu(""))
            }
            Channel::Sms | Channel::Push => match ack_link {
                Some(link) => format!("[{sev} {id}] {lead}{text} Answer: {link}"),
                None => format!("[{sev} {id}] {lead}{text}"),
            },
            Channel::Email => {
                let labels: Vec<&str> =
                    options.options().iter().map(|o| o.label.as_str()).collect();
                match ack_link {
                    Some(link) => format!(
                        "{lead}{text}\n\nAnswer ({}): {link}\nIncident: {id} ({sev})",
                        labels.join(", ")
                    ),
                    None => format!("{lead}{text}\n\nIncident: {id} ({sev})"),
                }
            }
        };
        return (subject, body);
    }
    let body = match channel {
        Channel::Voice if text.to_ascii_lowercase().contains("press 1") => format!("{lead}{text}"),
        Channel::Voice => format!("{lead}{text} Press 1 to acknowledge."),
        Channel::Sms if sms_replies => {
            format!("[{sev} {id}] {lead}{text} Reply ACK {code} to acknowledge.")
        }
        Channel::Sms => match ack_link {
            Some(link) => format!("[{sev} {id}] {lead}{text} Acknowledge: {link}"),
            None => format!("[{sev} {id}] {lead}{text}"),
        },
        Channel::Email => match (ack_link, sms_replies) {
            (Some(link), true) => format!(
                "{lead}{text}\n\nAcknowledge: {link}\nor reply ACK {code} to the SMS.\nIncident: {id} ({sev})"
            ),
            (Some(link), false) => {
                format!("{lead}{text}\n\nAcknowledge: {link}\nIncident: {id} ({sev})")
            }
            (None, true) => format!(
                "{lead}{text}\n\nReply ACK {code} to the SMS to acknowledge.\nIncident: {id} ({sev})"
            ),
            (None, false) => format!("{lead}{text}\n\nIncident: {id} ({sev})"),
        },
        Channel::Push => match ack_link {
            Some(link) => format!("{lead}{text}\n{link}"),
            None => format!("{lead}{text}"),
        },
    };
    (subject, body)
}

/// The update a withdrawn escalation's person receives.
pub fn render_notice(incident: &Incident, rec: &CascadeRecord) -> (String, String) {
    let t = &incident.trigger;
    let who = rec.about_name();
    (
        format!(
            "[{} UPDATE] {}: {who} has acknowledged",
            t.severity, t.incident_id
        ),
        format!(
            "Update on {}: {who}, whom we told you could not be reached, has now acknowledged. No action is needed for {who}.",
            t.incident_id
        ),
    )
}

/// An update's (or the all-clear's) subject and text: what the operator
/// wrote, under the incident's id; it asks nothing.
pub fn render_update(incident: &Incident, u: &crate::domain::IncidentUpdate) -> (String, String) {
    let t = &incident.trigger;
    if u.all_clear {
        (
            format!("[{} ALL CLEAR] {}", t.severity, t.incident_id),
            format!(
                "All clear for {}: {} No answer is needed.",
                t.incident_id,
                u.message.as_str()
            ),
        )
    } else if let Some(b) = &t.bridge {
        (
            format!("[{} UPDATE {}] {}", t.severity, u.seq, t.incident_id),
            format!(
                "Update {} on {}: {} No answer is needed.\n{}",
                u.seq,
                t.incident_id,
                u.message.as_str(),
                b.line()
            ),
        )
    } else {
        (
            format!("[{} UPDATE {}] {}", t.severity, u.seq, t.incident_id),
            format!(
                "Update {} on {}: {} No answer is needed.",
                u.seq,
                t.incident_id,
                u.message.as_str()
            ),
        )
    }
}

/// `text` with its first letter in capitals.
fn capitalise(text: &str) -> String {
    let mut c = text.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::list;

    #[test]
    fn names_read_as_a_sentence() {
        assert_eq!(list(&["A"]), "A");
        assert_eq!(list(&["A", "B"]), "A and B");
        assert_eq!(list(&["A", "B", "C"]), "A, B and C");
        let many: Vec<String> = (0..13).map(|i| format!("P{i}")).collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        assert_eq!(
            list(&many),
            "P0, P1, P2, P3, P4, P5, P6, P7, P8, P9 and 3 others"
        );
    }
}
