//! Chime SDK PSTN audio: the SIP media application's events for an outbound
//! call, and the actions Muster answers with (Amazon Chime SDK Administrator
//! and Developer Guides, "Using the PSTN audio service").
//!
//! The voice sender registers each call under
//! [`provider_message_id`]`(transaction id)`. The service ignores the
//! answers to NEW_OUTBOUND_CALL and RINGING (attributes set there do not
//! persist, and NEW_OUTBOUND_CALL can arrive before the sender has the
//! transaction id), so the call is resolved from that stored reference at
//! CALL_ANSWERED, by the caller of [`handle`] ([`Call`]): the cascade, the
//! attempt and the prompt rendered from the cascade. The answer to
//! CALL_ANSWERED stores them as transaction attributes, which every later
//! event carries; a digit event without them is resolved again.
//!
//! | event | Muster does | answers |
//! | --- | --- | --- |
//! | NEW_OUTBOUND_CALL | nothing (the answer is ignored) | no action |
//! | RINGING | nothing (the answer is ignored) | no action |
//! | CALL_ANSWERED | receipt DELIVERED (a person or voicemail answered: only a key press acknowledges) | speak the prompt (at most 1,000 characters), collect one digit (twice); attributes set |
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

/// Longest `Text` of a Speak action the service accepts.
pub const MAX_SPEAK_CHARS: usize = 1000;

/// An outbound call, resolved from its stored message reference.
#[derive(Debug, Clone, PartialEq)]
pub struct Call {
    pub key: CascadeKey,
    pub attempt: u32,
    /// What to say (the voice message rendered for the cascade).
    pub prompt: String,
    /// The keys of the incident's own answers ("1", "2"...); empty: the
    /// default, where only 1 (acknowledge) counts.
    pub keys: Vec<String>,
    /// The voice to read it in (the locale of the message template chosen).
    pub voice: crate::policy::Voice,
    /// The incident's conference bridge, when it has a number: the call
    /// offers "press 0" to be connected to it.
    pub bridge: Option<crate::domain::Bridge>,
}

/// Whether `event` needs its call resolved before [`handle`]: an answer
/// (to say the prompt), or a key press whose attributes do not name it.
pub fn needs_call(event: &Value) -> bool {
    match event["InvocationEventType"].as_str() {
        Some("CALL_ANSWERED") => true,
        Some("ACTION_SUCCESSFUL") => text(&attrs(event), "incident").is_none(),
        _ => false,
    }
}

/// `prompt`, cut to fit a Speak action, always ending with how to answer.
/// What a call with a conference bridge says last.
const BRIDGE_TAIL: &str = " Press 0 to join the conference bridge.";

fn fit_prompt(prompt: &str, answers: bool, bridge: bool) -> String {
    let fitted = fit_menu(
        prompt,
        answers,
        if bridge {
            BRIDGE_TAIL.chars().count()
        } else {
            0
        },
    );
    if bridge {
        format!("{fitted}{BRIDGE_TAIL}")
    } else {
        fitted
    }
}

/// `prompt` with its menu, cut (before the menu) to leave `room` characters.
fn fit_menu(prompt: &str, answers: bool, room: usize) -> String {
    const TAIL: &str = " Press 1 to acknowledge.";
    // With the incident's own answers the prompt ends with their menu
    // ("Press 1 for ..., press 2 for ..."): that is what must be heard, so
    // the message before it is what gets cut.
    let (head, tail) = match (answers, prompt.rfind(" Press ")) {
        (true, Some(i)) => (&prompt[..i], &prompt[i..]),
        _ => (prompt, TAIL),
    };
    let p = if answers || prompt.to_ascii_lowercase().contains("press 1") {
        prompt.to_string()
    } else {
        format!("{prompt}{TAIL}")
    };
    let max = MAX_SPEAK_CHARS.saturating_sub(room);
    if p.chars().count() <= max {
        return p;
    }
    let keep = max.saturating_sub(tail.chars().count() + 1);
    let cut: String = head.chars().take(keep).collect();
    format!("{}…{tail}", cut.trim_end())
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

/// Polly's speech parameters for `text` in the call's voice (kept in the
/// call's TransactionAttributes from its answer; else the default voice).
fn speech(a: &Map<String, Value>, text: &str) -> Value {
    let language = self::text(a, "language").unwrap_or_else(|| "en-US".into());
    let voice = self::text(a, "voice").unwrap_or_else(|| "Joanna".into());
    json!({"Text": text, "Engine": "neural", "LanguageCode": language, "TextType": "text", "VoiceId": voice})
}

fn speak(call_id: &str, a: &Map<String, Value>, text: &str) -> Value {
    let mut p = speech(a, text);
    p["CallId"] = json!(call_id);
    json!({"Type": "Speak", "Parameters": p})
}

fn hangup(call_id: &str) -> Value {
    json!({"Type": "Hangup", "Parameters": {"CallId": call_id, "SipResponseCode": "0"}})
}

/// Handles one event; `call` is the call resolved from its stored
/// reference when [`needs_call`] says so (None if it could not be).
pub fn handle(event: &Value, call: Option<&Call>) -> Result<SmaAnswer, InvalidValue> {
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
            if let Some(c) = call {
                a.insert("incident".into(), json!(c.key.incident.as_str()));
                a.insert("stakeholder".into(), json!(c.key.stakeholder.as_str()));
                a.insert("route".into(), json!(c.key.route.encode()));
                a.insert("attempt".into(), json!(c.attempt.to_string()));
                if !c.keys.is_empty() {
                    a.insert("keys".into(), json!(c.keys.concat()));
                }
                a.insert("language".into(), json!(c.voice.language));
                a.insert("voice".into(), json!(c.voice.voice));
                if let Some(phone) = c.bridge.as_ref().and_then(|b| b.phone.as_ref()) {
                    a.insert("bridge".into(), json!(phone.expose()));
                    if let Some(pin) = c.bridge.as_ref().and_then(|b| b.pin.as_ref()) {
                        a.insert("pin".into(), json!(pin));
                    }
                }
            }
            let answers = call.is_some_and(|c| !c.keys.is_empty());
            let prompt = fit_prompt(
                call.map(|c| c.prompt.as_str())
                    .unwrap_or("This is an urgent business continuity notification from Muster."),
                answers,
                a.contains_key("bridge"),
            );
            let not_one = if answers {
                "Sorry, that is not one of the answers."
            } else {
                "Sorry, that was not 1."
            };
            actions.push(json!({
                "Type": "SpeakAndGetDigits",
                "Parameters": {
                    "CallId": call_id,
                    "InputDigitsRegex": "^[0-9]$",
                    "SpeechParameters": speech(&a, &prompt),
                    "FailureSpeechParameters": speech(&a, not_one),
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
            let key = match (key_of(&a), call) {
                (Ok(k), _) => Some(k),
                (Err(_), Some(c)) => Some((c.key.clone(), Some(c.attempt))),
                (Err(e), None) if a.contains_key("incident") => return Err(e),
                (Err(_), None) => None,
            };
            // The incident's own answers: any of their keys; else only 1.
            let keys = call
                .map(|c| c.keys.concat())
                .filter(|k| !k.is_empty())
                .or_else(|| text(&a, "keys"))
                .unwrap_or_default();
            let digit = event["ActionData"]["ReceivedDigits"]
                .as_str()
                .unwrap_or_default();
            let answered_with =
                (digit.len() == 1 && !keys.is_empty() && keys.contains(digit)).then_some(digit);
            // 0: joining the conference bridge, which acknowledges (the
            // person heard the message and is taking part).
            if digit == "0"
                && let (Some(phone), Some((key, attempt))) = (text(&a, "bridge"), key.clone())
            {
                receipts.push(ReceiptEvent::Ack {
                    key,
                    channel: Channel::Voice,
                    attempt,
                });
                actions.push(speak(
                    &call_id,
                    &a,
                    "Thank you. Connecting you to the conference bridge.",
                ));
                let caller = details["Participants"][0]["From"]
                    .as_str()
                    .unwrap_or_default();
                actions.push(json!({
                    "Type": "CallAndBridge",
                    "Parameters": {
                        "CallTimeoutSeconds": 30,
                        "CallerIdNumber": caller,
                        "Endpoints": [{"BridgeEndpointType": "PSTN", "Uri": phone}]
                    }
                }));
            } else if let (Some(d), Some((key, attempt))) = (answered_with, key.clone()) {
                receipts.push(ReceiptEvent::Respond {
                    key,
                    channel: Channel::Voice,
                    attempt,
                    response: d.to_string(),
                });
                actions.push(speak(
                    &call_id,
                    &a,
                    "Thank you. Your answer has been recorded. Goodbye.",
                ));
            } else if keys.is_empty()
                && digit == "1"
                && let Some((key, attempt)) = key
            {
                receipts.push(ReceiptEvent::Ack {
                    key,
                    channel: Channel::Voice,
                    attempt,
                });
                actions.push(speak(
                    &call_id,
                    &a,
                    "Thank you. Your acknowledgement has been recorded. Goodbye.",
                ));
            } else {
                actions.push(speak(
                    &call_id,
                    &a,
                    "Your acknowledgement was not recorded. You will be contacted again.",
                ));
            }
            // A bridged call goes on; any other ends here.
            if !actions.iter().any(|x| x["Type"] == "CallAndBridge") {
                actions.push(hangup(&call_id));
            }
        }
        // Bridged: the bridge's PIN is dialled on its leg once it answers.
        "ACTION_SUCCESSFUL" if event["ActionData"]["Type"] == "CallAndBridge" => {
            let leg_b = details["Participants"]
                .as_array()
                .and_then(|p| p.iter().find(|x| x["ParticipantTag"] == "LEG-B"))
                .and_then(|x| x["CallId"].as_str());
            if let (Some(pin), Some(leg)) = (text(&a, "pin"), leg_b) {
                actions.push(json!({
                    "Type": "SendDigits",
                    "Parameters": {"CallId": leg, "Digits": format!(",,,,{pin}#"), "ToneDurationInMilliseconds": 100}
                }));
            }
        }
        "ACTION_FAILED" if event["ActionData"]["Type"] == "CallAndBridge" => {
            actions.push(speak(
                &call_id,
                &a,
                "The conference bridge could not be reached. Your acknowledgement has been recorded. Goodbye.",
            ));
            actions.push(hangup(&call_id));
        }
        "ACTION_FAILED" if event["ActionData"]["Type"] == "SpeakAndGetDigits" => {
            actions.push(speak(
                &call_id,
                &a,
                "Your acknowledgement was not recorded. You will be contacted again.",
            ));
            actions.push(hangup(&call_id));
        }
        "HANGUP" if !answered => {
            // A number in the guide's samples; a string is accepted too.
            let code = match &event["ActionData"]["Parameters"]["SipResponseCode"] {
                Value::Number(n) => n.to_string(),
                Value::String(s) => s.clone(),
                _ => String::new(),
            };
            let status = if matches!(code.as_str(), "404" | "410" | "484" | "604") {
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

    fn the_call() -> Call {
        Call {
            keys: Vec::new(),
            key: CascadeKey {
                incident: IncidentId::parse("INC-2024-0892").unwrap_or_else(|e| panic!("{e}")),
                stakeholder: StakeholderId::parse("ops-lead-amer")
                    .unwrap_or_else(|e| panic!("{e}")),
                route: Route::Member,
            },
            attempt: 1,
            prompt: "System outage detected. Activate BCP protocol. Acknowledge by pressing 1."
                .into(),
            voice: crate::policy::Policy::default().voice_for(None),
            bridge: None,
        }
    }

    /// A call of an incident with a conference bridge ends its prompt with
    /// "press 0"; 0 acknowledges and bridges the call to the bridge's number
    /// (CallAndBridge, PSTN, from the call's own number); once bridged, the
    /// PIN is dialled on the bridge's leg (SendDigits to LEG-B).
    #[test]
    fn press_0_acknowledges_and_connects_the_call_to_the_bridge_with_its_pin() {
        let bridge = crate::domain::Bridge::parse(
            &json!({"phone": "+44 20 7946 0000", "pin": "4821"}),
            "bridge",
        )
        .unwrap_or_else(|e| panic!("{e:?}"));
        let call = Call {
            bridge: Some(bridge),
            ..the_call()
        };
        let answered =
            handle(&fixture("call_answered"), Some(&call)).unwrap_or_else(|e| panic!("{e}"));
        let prompt = answered.response["Actions"][0]["Parameters"]["SpeechParameters"]["Text"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        assert!(
            prompt.ends_with("Press 0 to join the conference bridge."),
            "{prompt}"
        );
        let mut pressed = fixture("digits_1");
        pressed["CallDetails"]["TransactionAttributes"] =
            answered.response["TransactionAttributes"].clone();
        pressed["ActionData"]["ReceivedDigits"] = json!("0");
        let r = handle(&pressed, None).unwrap_or_else(|e| panic!("{e}"));
        assert!(
            matches!(
                &r.receipts[..],
                [ReceiptEvent::Ack {
                    channel: Channel::Voice,
                    ..
                }]
            ),
            "{:?}",
            r.receipts
        );
        let actions = r.response["Actions"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let types: Vec<&str> = actions.iter().filter_map(|a| a["Type"].as_str()).collect();
        assert_eq!(
            types,
            ["Speak", "CallAndBridge"],
            "no hangup: the call goes on"
        );
        let p = &actions[1]["Parameters"];
        assert_eq!(
            p["Endpoints"][0],
            json!({"BridgeEndpointType": "PSTN", "Uri": "+442079460000"})
        );
        assert_eq!(p["CallerIdNumber"], "+12125550199", "the call's own number");
        let bridged =
            handle(&fixture("call_and_bridge_successful"), None).unwrap_or_else(|e| panic!("{e}"));
        let send = &bridged.response["Actions"][0];
        assert_eq!(send["Type"], "SendDigits");
        assert_eq!(send["Parameters"]["CallId"], "call-leg-b-0002");
        assert!(
            send["Parameters"]["Digits"]
                .as_str()
                .is_some_and(|d| d.ends_with("4821#"))
        );
        // Without a bridge, 0 is no answer.
        let mut plain = fixture("digits_1");
        plain["ActionData"]["ReceivedDigits"] = json!("0");
        assert!(
            handle(&plain, Some(&the_call()))
                .map(|r| r.receipts.is_empty())
                .unwrap_or(false)
        );
    }

    /// The Chime SDK's Speak and SpeakAndGetDigits take Polly's
    /// `LanguageCode` and `VoiceId` (Chime SDK developer guide, "Speak"):
    /// the call is read in its message's voice, and the answer after the
    /// press in the same one.
    #[test]
    fn a_call_in_another_language_is_read_in_its_voice_to_the_end() {
        let call = Call {
            voice: crate::policy::Policy::default().voice_for(Some("fr-CA")),
            ..the_call()
        };
        let answered =
            handle(&fixture("call_answered"), Some(&call)).unwrap_or_else(|e| panic!("{e}"));
        let p = &answered.response["Actions"][0]["Parameters"];
        for part in ["SpeechParameters", "FailureSpeechParameters"] {
            assert_eq!(p[part]["LanguageCode"], "fr-CA", "{p}");
            assert_eq!(p[part]["VoiceId"], "Gabrielle", "{p}");
        }
        let mut pressed = fixture("digits_1");
        pressed["CallDetails"]["TransactionAttributes"] =
            answered.response["TransactionAttributes"].clone();
        let r = handle(&pressed, None).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(r.response["Actions"][0]["Type"], "Speak");
        assert_eq!(
            r.response["Actions"][0]["Parameters"]["VoiceId"],
            "Gabrielle"
        );
    }

    #[test]
    fn a_call_answered_and_acknowledged_with_1() {
        // The service ignores answers to NEW_OUTBOUND_CALL: nothing is kept.
        let start = handle(&fixture("new_outbound_call"), None).unwrap_or_else(|e| panic!("{e}"));
        assert!(start.receipts.is_empty());
        assert_eq!(start.response["Actions"], json!([]));
        let call = the_call();
        assert!(needs_call(&fixture("call_answered")));
        assert!(
            !needs_call(&fixture("digits_1")),
            "its attributes name the call"
        );
        let answered =
            handle(&fixture("call_answered"), Some(&call)).unwrap_or_else(|e| panic!("{e}"));
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
        // The answer stores the call as the attributes later events carry.
        let kept = &answered.response["TransactionAttributes"];
        assert_eq!(
            (
                &kept["incident"],
                &kept["stakeholder"],
                &kept["route"],
                &kept["attempt"],
                &kept["answered"]
            ),
            (
                &json!("INC-2024-0892"),
                &json!("ops-lead-amer"),
                &json!("member"),
                &json!("1"),
                &json!("true")
            )
        );

        let pressed = handle(&fixture("digits_1"), None).unwrap_or_else(|e| panic!("{e}"));
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
        let silent = handle(&fixture("no_input"), None).unwrap_or_else(|e| panic!("{e}"));
        assert!(silent.receipts.is_empty(), "no ACK without a 1");
        assert_eq!(silent.response["Actions"][1]["Type"], "Hangup");

        let unanswered =
            handle(&fixture("hangup_unanswered"), None).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            unanswered.receipts,
            [ReceiptEvent::Delivery {
                provider_message_id: "chime:7f1e2d3c-4b5a-6978-8a9b-0c1d2e3f4a5b".into(),
                status: ReceiptStatus::Failed
            }]
        );
        let mut gone = fixture("hangup_unanswered");
        gone["ActionData"]["Parameters"]["SipResponseCode"] = json!(404);
        let r = handle(&gone, None).unwrap_or_else(|e| panic!("{e}"));
        assert!(matches!(
            r.receipts[0],
            ReceiptEvent::Delivery {
                status: ReceiptStatus::Unreachable,
                ..
            }
        ));
        // After an answer, a hangup is just the end of the call.
        let mut after = fixture("hangup_unanswered");
        after["CallDetails"]["TransactionAttributes"] = json!({"answered": "true"});
        assert!(
            handle(&after, None)
                .map(|r| r.receipts.is_empty())
                .unwrap_or(false)
        );
    }

    #[test]
    fn with_the_incident_s_own_answers_each_key_is_an_answer_and_the_call_keeps_them() {
        let call = Call {
            keys: vec!["1".into(), "2".into()],
            ..the_call()
        };
        let answered =
            handle(&fixture("call_answered"), Some(&call)).unwrap_or_else(|e| panic!("{e}"));
        let kept = answered.response["TransactionAttributes"].clone();
        assert_eq!(kept["keys"], json!("12"));
        // The press comes back with the attributes the answer stored.
        let mut pressed = fixture("digits_1");
        pressed["CallDetails"]["TransactionAttributes"] = kept;
        pressed["ActionData"]["ReceivedDigits"] = json!("2");
        let r = handle(&pressed, None).unwrap_or_else(|e| panic!("{e}"));
        assert!(
            matches!(&r.receipts[..], [ReceiptEvent::Respond { response, channel: Channel::Voice, .. }] if response == "2"),
            "{:?}",
            r.receipts
        );
        // A long message is cut before the menu, never the menu.
        let long = Call {
            keys: vec!["1".into(), "2".into()],
            prompt: format!(
                "{} Press 1 for I am safe, press 2 for I need help.",
                "Evacuate now. ".repeat(90)
            ),
            ..the_call()
        };
        let said = handle(&fixture("call_answered"), Some(&long)).unwrap_or_else(|e| panic!("{e}"));
        let text = said.response["Actions"][0]["Parameters"]["SpeechParameters"]["Text"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        assert!(text.chars().count() <= MAX_SPEAK_CHARS, "{}", text.len());
        assert!(
            text.ends_with("… Press 1 for I am safe, press 2 for I need help."),
            "{text}"
        );
        assert_eq!(
            said.response["Actions"][0]["Parameters"]["FailureSpeechParameters"]["Text"],
            json!("Sorry, that is not one of the answers.")
        );
        // A key that is none of them, or 2 where only 1 counts: nothing.
        pressed["ActionData"]["ReceivedDigits"] = json!("7");
        assert!(
            handle(&pressed, None)
                .unwrap_or_else(|e| panic!("{e}"))
                .receipts
                .is_empty()
        );
        let mut plain = fixture("digits_1");
        plain["ActionData"]["ReceivedDigits"] = json!("2");
        assert!(
            handle(&plain, Some(&the_call()))
                .unwrap_or_else(|e| panic!("{e}"))
                .receipts
                .is_empty()
        );
    }

    #[test]
    fn malformed_events_are_refused_with_the_field() {
        let e = handle(&json!({"CallDetails": {}}), None)
            .err()
            .map(|e| e.field);
        assert_eq!(e.as_deref(), Some("InvocationEventType"));
        let mut bad = fixture("digits_1");
        bad["CallDetails"]["TransactionAttributes"]["incident"] = json!("bad id");
        assert_eq!(
            handle(&bad, None).err().map(|e| e.field).as_deref(),
            Some("TransactionAttributes.incident")
        );
    }

    #[test]
    fn a_hangup_without_a_code_before_an_answer_is_a_failed_call() {
        let r = handle(&fixture("hangup_no_code"), None).unwrap_or_else(|e| panic!("{e}"));
        assert!(matches!(
            r.receipts[..],
            [ReceiptEvent::Delivery {
                status: ReceiptStatus::Failed,
                ..
            }]
        ));
    }

    #[test]
    fn a_key_press_without_attributes_is_resolved_from_the_call() {
        let mut pressed = fixture("digits_1");
        pressed["CallDetails"]
            .as_object_mut()
            .map(|d| d.remove("TransactionAttributes"));
        assert!(needs_call(&pressed));
        let r = handle(&pressed, Some(&the_call())).unwrap_or_else(|e| panic!("{e}"));
        assert!(matches!(
            &r.receipts[..],
            [ReceiptEvent::Ack {
                attempt: Some(1),
                ..
            }]
        ));
        // Unresolvable: no acknowledgement is claimed.
        let r = handle(&pressed, None).unwrap_or_else(|e| panic!("{e}"));
        assert!(r.receipts.is_empty());
        let said = r.response["Actions"][0]["Parameters"]["Text"]
            .as_str()
            .unwrap_or_default();
        assert!(said.contains("not recorded"), "{said}");
    }

    #[test]
    fn the_spoken_prompt_fits_a_speak_action_and_says_how_to_answer() {
        let mut call = the_call();
        call.prompt = "Évacuez le bâtiment. ".repeat(200);
        let r = handle(&fixture("call_answered"), Some(&call)).unwrap_or_else(|e| panic!("{e}"));
        let text = r.response["Actions"][0]["Parameters"]["SpeechParameters"]["Text"]
            .as_str()
            .unwrap_or_default();
        assert!(
            text.chars().count() <= MAX_SPEAK_CHARS,
            "{} characters",
            text.chars().count()
        );
        assert!(text.ends_with("Press 1 to acknowledge."), "{text}");
    }
}
