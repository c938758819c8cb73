//! Receipt: delivery receipts, acknowledgements and SMS replies from
//! carriers and people. Late, duplicate and out-of-order receipts reach the
//! engine, which audits them as stale and changes nothing. A delivery
//! report that comes before its message's reference is written (the
//! carrier was quicker than its answer to the send) is held and applied by
//! the send when it records the reference; one for a message never sent
//! stays held, changes nothing and is never an error.
//!
//! SMS replies: `1`, `ACK` or `ACK 4821` (any case) acknowledge the open
//! cascade texting that number (the one whose ack code matches, else the
//! oldest); `STOP` (and the carriers' other opt-out words) opts the number
//! out of SMS: the directory records it, and every open cascade texting it
//! drops SMS (audited as OPT_OUT); `START` opts it back in for new cascades.

use super::{apply_event, apply_loaded};
use crate::domain::{Channel, PhoneNumber};
use crate::engine::{AuditKind, CascadeKey, Event, ReceiptStatus};
use crate::error::{Error, Result};
use crate::ports::Deps;

#[derive(Debug, Clone, PartialEq)]
pub enum ReceiptEvent {
    /// A carrier's delivery report for a message it accepted.
    Delivery {
        provider_message_id: String,
        status: ReceiptStatus,
    },
    /// A person acknowledged (DTMF 1, link, push action, API).
    Ack {
        key: CascadeKey,
        channel: Channel,
        attempt: Option<u32>,
    },
    /// A person answered with the key of one of the incident's options
    /// (a digit pressed, a button, the API). An escalation takes only an
    /// acknowledgement: any answer to one acknowledges it.
    Respond {
        key: CascadeKey,
        channel: Channel,
        attempt: Option<u32>,
        response: String,
    },
    /// A text message from a phone.
    InboundSms { from: PhoneNumber, body: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReceiptOutcome {
    /// Applied; the audit kind the engine recorded (STALE_IGNORED for a
    /// duplicate or late one).
    Applied(AuditKind),
    /// STOP: stakeholders opted out in the directory, open cascades changed.
    OptedOut {
        stakeholders: usize,
        cascades: usize,
    },
    /// START: stakeholders opted back in.
    OptedIn { stakeholders: usize },
    /// A text that is neither an acknowledgement nor a keyword.
    Unrecognised,
    /// A delivery report for a provider message id with no reference yet:
    /// held, and applied when the send that carried it is recorded (a
    /// carrier can report before its answer to the send reaches Muster).
    /// One for a message Muster never sent stays held and changes nothing.
    Held,
    /// Refers to no cascade Muster knows.
    Unknown,
}

/// What an SMS reply means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Ack { code: Option<String> },
    OptOut,
    OptIn,
    Other,
}

/// Parses an SMS reply. Opt-out and opt-in words are the ones carriers
/// honour (CTIA and SNS keywords).
pub fn parse_reply(body: &str) -> Reply {
    let upper = body.trim().to_ascii_uppercase();
    let mut words = upper
        .split(|c: char| c.is_whitespace() || c == ',' || c == '.' || c == '!')
        .filter(|w| !w.is_empty());
    match (words.next(), words.next(), words.next()) {
        (
            Some(
                "STOP" | "STOPALL" | "UNSUBSCRIBE" | "CANCEL" | "END" | "QUIT" | "OPTOUT" | "ARRET",
            ),
            _,
            _,
        ) => Reply::OptOut,
        (Some("START" | "UNSTOP" | "OPTIN"), None, _) => Reply::OptIn,
        (Some("1"), None, _) => Reply::Ack { code: None },
        (Some("ACK" | "OK" | "ACKNOWLEDGE" | "ACKNOWLEDGED"), None, _) => Reply::Ack { code: None },
        (Some("ACK"), Some(code), None)
            if code.len() <= 8 && code.chars().all(|c| c.is_ascii_digit()) =>
        {
            Reply::Ack {
                code: Some(code.to_string()),
            }
        }
        _ => Reply::Other,
    }
}

pub async fn receipt(deps: &Deps, event: ReceiptEvent) -> Result<ReceiptOutcome> {
    let (key, ev) = match event {
        ReceiptEvent::Delivery {
            provider_message_id,
            status,
        } => {
            let found = match deps.cascades.get_message_ref(&provider_message_id).await? {
                Some(r) => Some(r),
                // Early, or for a message never sent: held for its send
                // to apply, unless the reference came meanwhile.
                None => {
                    deps.cascades
                        .hold_receipt(&provider_message_id, status)
                        .await?
                }
            };
            match found {
                Some((key, attempt)) => (key, Event::Receipt { attempt, status }),
                None => {
                    tracing::info!("receipt held for a message not yet recorded");
                    return Ok(ReceiptOutcome::Held);
                }
            }
        }
        ReceiptEvent::Ack {
            key,
            channel,
            attempt,
        } => (key, Event::Ack { channel, attempt }),
        ReceiptEvent::Respond {
            key,
            channel,
            attempt,
            response,
        } => {
            let Some(inc) = deps.incidents.get_incident(&key.incident).await? else {
                return Ok(ReceiptOutcome::Unknown);
            };
            if key.route.is_escalation() {
                (key, Event::Ack { channel, attempt })
            } else {
                let Some(o) = inc.trigger.responses.by_key(&response) else {
                    tracing::info!("an answer that is none of the incident's options");
                    return Ok(ReceiptOutcome::Unrecognised);
                };
                let ev = Event::Respond {
                    channel,
                    attempt,
                    key: o.key.clone(),
                    acknowledges: o.acknowledges,
                };
                (key, ev)
            }
        }
        ReceiptEvent::InboundSms { from, body } => return inbound_sms(deps, &from, &body).await,
    };
    match apply_event(deps, &key, ev).await? {
        Some((_, kind)) => Ok(ReceiptOutcome::Applied(kind)),
        None => {
            tracing::warn!(incident_id = %key.incident, "acknowledgement for an unknown cascade");
            Ok(ReceiptOutcome::Unknown)
        }
    }
}

async fn inbound_sms(deps: &Deps, from: &PhoneNumber, body: &str) -> Result<ReceiptOutcome> {
    let reply = parse_reply(body);
    // An incident with answers of its own: a reply that is one of them
    // (its key or its label) answers the oldest open cascade texting the
    // number.
    if matches!(reply, Reply::Other | Reply::Ack { code: None })
        && let Some(rec) = deps
            .numbers
            .open_cascades_for_number(from)
            .await?
            .into_iter()
            .find(|r| !r.cascade.key.route.is_escalation())
        && let Some(inc) = deps
            .incidents
            .get_incident(&rec.cascade.key.incident)
            .await?
        && !inc.trigger.responses.is_default()
        && let Some(o) = inc.trigger.responses.by_reply(body)
    {
        let ev = Event::Respond {
            channel: Channel::Sms,
            attempt: None,
            key: o.key.clone(),
            acknowledges: o.acknowledges,
        };
        let (_, kind) = apply_loaded(deps, rec, ev).await?;
        return Ok(ReceiptOutcome::Applied(kind));
    }
    match reply {
        Reply::Ack { code } => {
            let open = deps.numbers.open_cascades_for_number(from).await?;
            let chosen = match &code {
                Some(code) => open.into_iter().find(|r| &r.ack_code == code),
                None => open.into_iter().next(),
            };
            let Some(rec) = chosen else {
                tracing::info!(
                    with_code = code.is_some(),
                    "SMS acknowledgement matches no open cascade"
                );
                return Ok(ReceiptOutcome::Unknown);
            };
            let (_, kind) = apply_loaded(
                deps,
                rec,
                Event::Ack {
                    channel: Channel::Sms,
                    attempt: None,
                },
            )
            .await?;
            Ok(ReceiptOutcome::Applied(kind))
        }
        Reply::OptOut => {
            let people = deps.admin.set_sms_opt_out(from, true).await?;
            let open = deps.numbers.open_cascades_for_number(from).await?;
            let cascades = open.len();
            for mut rec in open {
                // The snapshot is marked too, so no later send can text the number.
                rec.contacts.sms_opted_out = true;
                apply_loaded(
                    deps,
                    rec,
                    Event::OptOut {
                        channel: Channel::Sms,
                    },
                )
                .await?;
            }
            tracing::info!(
                stakeholders = people.len(),
                cascades,
                "SMS opt-out recorded"
            );
            Ok(ReceiptOutcome::OptedOut {
                stakeholders: people.len(),
                cascades,
            })
        }
        Reply::OptIn => {
            let people = deps.admin.set_sms_opt_out(from, false).await?;
            tracing::info!(stakeholders = people.len(), "SMS opt-in recorded");
            Ok(ReceiptOutcome::OptedIn {
                stakeholders: people.len(),
            })
        }
        Reply::Other => Ok(ReceiptOutcome::Unrecognised),
    }
}

/// One Chime SDK SIP media application event for an outbound call (the
/// `receipt` function's voice path, and `muster serve`'s simulated phone):
/// the call resolved from the message reference the voice sender stored
/// when the event needs it, its receipts applied, and the actions to answer
/// with. A receipt that fails fails the event, so that the caller is never
/// told an acknowledgement was recorded when it was not.
pub async fn voice_event(deps: &Deps, event: &serde_json::Value) -> Result<serde_json::Value> {
    use crate::events::chime;
    let call = if chime::needs_call(event) {
        resolve_call(deps, event).await?
    } else {
        None
    };
    let answer = chime::handle(event, call.as_ref()).map_err(|e| Error::Validation(vec![e]))?;
    for r in answer.receipts {
        let outcome = receipt(deps, r).await?;
        tracing::info!(outcome = ?outcome, "voice receipt");
    }
    Ok(answer.response)
}

/// The call an SMA event is about, from the message reference the voice
/// sender stored under its transaction id, with the voice prompt rendered
/// from the cascade. None when the reference is unknown (the call then
/// speaks a generic prompt and no key press is claimed).
async fn resolve_call(
    deps: &Deps,
    event: &serde_json::Value,
) -> Result<Option<crate::events::chime::Call>> {
    let Some(tx) = event["CallDetails"]["TransactionId"].as_str() else {
        return Ok(None);
    };
    call_for(deps, &crate::events::chime::provider_message_id(tx)).await
}

/// The call the voice sender registered under `reference` (its provider
/// message id), with the prompt rendered from its cascade; None when the
/// reference, the incident or the cascade is unknown.
pub async fn call_for(deps: &Deps, reference: &str) -> Result<Option<crate::events::chime::Call>> {
    let Some((key, attempt)) = deps.cascades.get_message_ref(reference).await? else {
        tracing::warn!("voice call with no stored reference");
        return Ok(None);
    };
    let incident = deps.incidents.get_incident(&key.incident).await?;
    let rec = deps.cascades.get_cascade(&key).await?;
    let (Some(inc), Some(rec)) = (incident, rec) else {
        return Ok(None);
    };
    let about: Vec<&str> = rec
        .cascade
        .key
        .route
        .about()
        .map(|s| s.as_str())
        .into_iter()
        .collect();
    let prompt = super::render(&inc, &rec, Channel::Voice, None, &about, true).1;
    let keys = if inc.trigger.responses.is_default() || rec.cascade.key.route.is_escalation() {
        Vec::new()
    } else {
        inc.trigger
            .responses
            .options()
            .iter()
            .map(|o| o.key.clone())
            .collect()
    };
    let voice = deps
        .policy
        .voice_for(inc.trigger.template_for(rec.locale.as_deref()).1);
    Ok(Some(crate::events::chime::Call {
        bridge: inc.trigger.bridge.clone().filter(|b| b.phone.is_some()),
        voice,
        keys,
        key,
        attempt,
        prompt,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_are_parsed_in_any_case() {
        let ack = |c: Option<&str>| Reply::Ack {
            code: c.map(str::to_string),
        };
        for (text, want) in [
            ("1", ack(None)),
            (" ack ", ack(None)),
            ("ACK 4821", ack(Some("4821"))),
            ("Ack 4821!", ack(Some("4821"))),
            ("ok", ack(None)),
            ("STOP", Reply::OptOut),
            ("stop please", Reply::OptOut),
            ("Unsubscribe", Reply::OptOut),
            ("start", Reply::OptIn),
            ("ACK 12 34", Reply::Other),
            ("ACK abc", Reply::Other),
            ("11", Reply::Other),
            ("who is this?", Reply::Other),
            ("", Reply::Other),
        ] {
            assert_eq!(parse_reply(text), want, "{text:?}");
        }
    }
}
