//! Chime SDK PSTN audio: the SIP media application's events for an outbound
//! call, and the actions Muster answers with. The voice sender starts the
//! call with arguments `incident`, `stakeholder`, `route`, `attempt` and
//! `prompt`; they travel as transaction attributes from then on.
//!
//! | event | Muster does | answers |
//! | --- | --- | --- |
//! | NEW_OUTBOUND_CALL | keeps the arguments | no action, attributes set |
//! | RINGING | nothing | no action |
//! | CALL_ANSWERED | receipt DELIVERED | speak the prompt, collect one digit (twice) |
//! | ACTION_SUCCESSFUL, digit 1 | ACK on voice | "acknowledged", hang up |
//! | ACTION_SUCCESSFUL other digit, ACTION_FAILED | nothing (the hold timer runs) | "not recorded", hang up |
//! | HANGUP before an answer | receipt FAILED (no answer; 486 busy, 404/410/484/604 UNREACHABLE) | no action |
//! | HANGUP after an answer | nothing | no action |

use crate::app::ReceiptEvent;
use crate::domain::{Channel, IncidentId, InvalidValue, StakeholderId};
use crate::engine::{CascadeKey, ReceiptStatus, Route};
use serde_json::{Map, Value, json};

/// Provider message id under which the voice sender registers a call.
pub fn provider_message_id(transaction_id: &str) -> String {
    format!("chime:{transaction_id}")
}

/// What to do for one SIP media application event.
#[derive(Debug, Clone, PartialEq)]
pub struct SmaAnswer {
    pub receipts: Vec<ReceiptEvent>,
    pub response: Value,
}

fn attrs(event: &Value) -> Map<String, Value> {
    let details = &event["CallDetails"];
    match details
        .get("TransactionAttributes")
        .and_then(Value::as_object)
    {
        Some(a) => a.clone(),
        None => event["ActionData"]["Parameters"]["Arguments"]
            .as_object()
            .cloned()
            .unwrap_or_default(),
    }
}

fn text(a: &Map<String, Value>, k: &str) -> Option<String> {
    a.get(k).and_then(Value::as_str).map(str::to_string)
}

fn key_of(a: &Map<String, Value>) -> Result<(CascadeKey, Option<u32>), InvalidValue> {
    let incident = IncidentId::parse(&text(a, "incident").unwrap_or_default())
        .map_err(|e| e.within("TransactionAttributes.incident"))?;
    let stakeholder = StakeholderId::parse(&text(a, "stakeholder").unwrap_or_default())
        .map_err(|e| e.within("TransactionAttributes.stakeholder"))?;
    let route = text(a, "route")
        .and_then(|r| Route::decode(&r))
        .unwrap_or(Route::Member);
    let attempt = text(a, "attempt").and_then(|s| s.parse().ok());
    Ok((
        CascadeKey {
            incident,
            stakeholder,
            route,
        },
        attempt,
    ))
}

fn speak(call_id: &str, text: &str) -> Value {
    json!({"Type": "Speak", "Parameters": {"CallId": call_id, "Text": text, "Engine": "neural", "LanguageCode": "en-US", "TextType": "text", "VoiceId": "Joanna"}})
}

fn hangup(call_id: &str) -> Value {
    json!({"Type": "Hangup", "Parameters": {"CallId": call_id, "SipResponseCode": "0"}})
}

/// Handles one event.
pub fn handle(event: &Value) -> Result<SmaAnswer, InvalidValue> {
    let kind = event["InvocationEventType"]
        .as_str()
        .ok_or_else(|| InvalidValue::new("InvocationEventType", "missing"))?;
    let details = &event["CallDetails"];
    let transaction = details["TransactionId"]
        .as_str()
        .ok_or_else(|| InvalidValue::new("CallDetails.TransactionId", "missing"))?;
    let call_id = details["Participants"][0]["CallId"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let mut a = attrs(event);
    let answered = text(&a, "answered").as_deref() == Some("true");
    let mut receipts = Vec::new();
    let mut actions = Vec::new();
    match kind {
        "NEW_OUTBOUND_CALL" | "RINGING" => {}
        "CALL_ANSWERED" => {
            receipts.push(ReceiptEvent::Delivery {
                provider_message_id: provider_message_id(transaction),
                status: ReceiptStatus::Delivered,
            });
            a.insert("answered".into(), json!("true"));
            let prompt = text(&a, "prompt").unwrap_or_else(|| {
                "This is an urgent business continuity notification. Press 1 to acknowledge.".into()
            });
            actions.push(json!({
                "Type": "SpeakAndGetDigits",
                "Parameters": {
                    "CallId": call_id,
                    "InputDigitsRegex": "^[0-9]$",
                    "SpeechParameters": {"Text": format!("{prompt} Press 1 to acknowledge."), "Engine": "neural", "LanguageCode": "en-US", "TextType": "text", "VoiceId": "Joanna"},
                    "FailureSpeechParameters": {"Text": "Sorry, that was not 1.", "Engine": "neural", "LanguageCode": "en-US", "TextType": "text", "VoiceId": "Joanna"},
                    "MinNumberOfDigits": 1,
                    "MaxNumberOfDigits": 1,
                    "TerminatorDigits": ["#"],
                    "InBetweenDigitsDurationInMilliseconds": 5000,
                    "Repeat": 2,
                    "RepeatDurationInMilliseconds": 10000
                }
            }));
        }
        "ACTION_SUCCESSFUL" if event["ActionData"]["Type"] == "SpeakAndGetDigits" => {
            if event["ActionData"]["ReceivedDigits"].as_str() == Some("1") {
                let (key, attempt) = key_of(&a)?;
                receipts.push(ReceiptEvent::Ack {
                    key,
                    channel: Channel::Voice,
                    attempt,
                });
                actions.push(speak(
                    &call_id,
                    "Thank you. Your acknowledgement has been recorded. Goodbye.",
                ));
            } else {
                actions.push(speak(
                    &call_id,
                    "Your acknowledgement was not recorded. You will be contacted again.",
                ));
            }
            actions.push(hangup(&call_id));
        }
        "ACTION_FAILED" if event["ActionData"]["Type"] == "SpeakAndGetDigits" => {
            actions.push(speak(
                &call_id,
                "Your acknowledgement was not recorded. You will be contacted again.",
            ));
            actions.push(hangup(&call_id));
        }
        "HANGUP" if !answered => {
            let code = event["ActionData"]["Parameters"]["SipResponseCode"]
                .as_str()
                .unwrap_or_default();
            let status = if matches!(code, "404" | "410" | "484" | "604") {
                ReceiptStatus::Unreachable
            } else {
                ReceiptStatus::Failed
            };
            receipts.push(ReceiptEvent::Delivery {
                provider_message_id: provider_message_id(transaction),
                status,
            });
        }
        _ => {}
    }
    Ok(SmaAnswer {
        receipts,
        response: json!({"SchemaVersion": "1.0", "Actions": actions, "TransactionAttributes": Value::Object(a)}),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> Value {
        let path = format!(
            "{}/../tests/fixtures/chime/{name}.json",
            env!("CARGO_MANIFEST_DIR")
        );
        serde_json::from_str(
            &std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}")),
        )
        .unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn a_call_answered_and_acknowledged_with_1() {
        let start = handle(&fixture("new_outbound_call")).unwrap_or_else(|e| panic!("{e}"));
        assert!(start.receipts.is_empty());
        assert_eq!(
            start.response["TransactionAttributes"]["stakeholder"], "ops-lead-amer",
            "arguments become attributes"
        );

        let answered = handle(&fixture("call_answered")).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            answered.receipts,
            [ReceiptEvent::Delivery {
                provider_message_id: "chime:7f1e2d3c-4b5a-6978-8a9b-0c1d2e3f4a5b".into(),
                status: ReceiptStatus::Delivered
            }]
        );
        let action = &answered.response["Actions"][0];
        assert_eq!(action["Type"], "SpeakAndGetDigits");
        assert_eq!(
            (
                action["Parameters"]["MinNumberOfDigits"].as_u64(),
                action["Parameters"]["MaxNumberOfDigits"].as_u64()
            ),
            (Some(1), Some(1))
        );
        assert!(
            action["Parameters"]["SpeechParameters"]["Text"]
                .as_str()
                .unwrap_or_default()
                .starts_with("System outage detected.")
        );
        assert_eq!(
            answered.response["TransactionAttributes"]["answered"],
            "true"
        );

        let pressed = handle(&fixture("digits_1")).unwrap_or_else(|e| panic!("{e}"));
        let key = CascadeKey {
            incident: IncidentId::parse("INC-2024-0892").unwrap_or_else(|e| panic!("{e}")),
            stakeholder: StakeholderId::parse("ops-lead-amer").unwrap_or_else(|e| panic!("{e}")),
            route: Route::Member,
        };
        assert_eq!(
            pressed.receipts,
            [ReceiptEvent::Ack {
                key,
                channel: Channel::Voice,
                attempt: Some(1)
            }]
        );
        assert_eq!(pressed.response["Actions"][1]["Type"], "Hangup");
    }

    #[test]
    fn no_digit_is_not_an_ack_and_an_unanswered_call_is_a_failed_receipt() {
        let silent = handle(&fixture("no_input")).unwrap_or_else(|e| panic!("{e}"));
        assert!(silent.receipts.is_empty(), "no ACK without a 1");
        assert_eq!(silent.response["Actions"][1]["Type"], "Hangup");

        let unanswered = handle(&fixture("hangup_unanswered")).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            unanswered.receipts,
            [ReceiptEvent::Delivery {
                provider_message_id: "chime:7f1e2d3c-4b5a-6978-8a9b-0c1d2e3f4a5b".into(),
                status: ReceiptStatus::Failed
            }]
        );
        let mut gone = fixture("hangup_unanswered");
        gone["ActionData"]["Parameters"]["SipResponseCode"] = json!("404");
        let r = handle(&gone).unwrap_or_else(|e| panic!("{e}"));
        assert!(matches!(
            r.receipts[0],
            ReceiptEvent::Delivery {
                status: ReceiptStatus::Unreachable,
                ..
            }
        ));
        // After an answer, a hangup is just the end of the call.
        let mut after = fixture("hangup_unanswered");
        after["CallDetails"]["TransactionAttributes"]["answered"] = json!("true");
        assert!(
            handle(&after)
                .map(|r| r.receipts.is_empty())
                .unwrap_or(false)
        );
    }

    #[test]
    fn malformed_events_are_refused_with_the_field() {
        let e = handle(&json!({"CallDetails": {}})).err().map(|e| e.field);
        assert_eq!(e.as_deref(), Some("InvocationEventType"));
        let mut bad = fixture("digits_1");
        bad["CallDetails"]["TransactionAttributes"]["incident"] = json!("bad id");
        assert_eq!(
            handle(&bad).err().map(|e| e.field).as_deref(),
            Some("TransactionAttributes.incident")
        );
    }
}
