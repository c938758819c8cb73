//! `muster serve`'s simulated phones and inboxes. The console carriers keep
//! the messages they "send" (the latest [`KEPT`]), and a person answers
//! one locally through the path the real carrier's event takes:
//!
//! | channel | answer | path |
//! | --- | --- | --- |
//! | voice | `{"digits": "1"}` | the call answered, then the key pressed: the Chime SDK SIP media application's CALL_ANSWERED and ACTION_SUCCESSFUL (SpeakAndGetDigits) events, through `app::voice_event` as the `receipt` function takes them |
//! | sms | `{"text": "ACK 4821"}` | End User Messaging's two-way SMS notification (`originationNumber`, `messageBody`...), through `receipt_from_inbound_sms` as the SNS path takes it |
//! | push, email | `{"action": "acknowledge"}` | the message's link: what `POST /v1/ack/{token}` does |
//!
//! `GET /local/messages` lists them (newest first, addresses masked);
//! `POST /local/messages/{n}/answer` answers one. With a shared secret the
//! requests are signed like the API's. Not part of the API on AWS.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use muster::api::v1::{self, ApiState, Problem};
use muster::app;
use muster::domain::{Address, Channel, Ts};
use muster::engine::CascadeKey;
use muster::events::sns::{InboundSmsMessage, receipt_from_inbound_sms};
use muster::ports::OutboundMessage;
use muster::secret::Secret;
use serde_json::{Value, json};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

/// Messages kept for answering; older ones are forgotten.
pub const KEPT: usize = 500;

/// One message a console carrier took.
#[derive(Clone)]
struct Kept {
    n: u64,
    /// The carrier's reference (a call's is `chime:<transaction id>`).
    reference: String,
    key: CascadeKey,
    attempt: u32,
    channel: Channel,
    to: Address,
    subject: String,
    body: String,
    sent_at: Ts,
    answers: Vec<String>,
}

/// What the console carriers sent, to be answered.
#[derive(Default)]
pub struct Phones {
    kept: Mutex<VecDeque<Kept>>,
    next: std::sync::atomic::AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Phones {
    /// The number of the next message.
    pub fn number(&self) -> u64 {
        self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1
    }

    /// Keeps `msg`, number `n`, sent under `reference`.
    pub fn keep(&self, n: u64, msg: &OutboundMessage, reference: &str, now: Ts) {
        let mut g = lock(&self.kept);
        if g.len() == KEPT {
            g.pop_front();
        }
        g.push_back(Kept {
            n,
            reference: reference.to_string(),
            key: msg.key.clone(),
            attempt: msg.attempt,
            channel: msg.channel,
            to: msg.to.clone(),
            subject: msg.subject.clone(),
            body: msg.body.clone(),
            sent_at: now,
            answers: Vec::new(),
        });
    }

    fn get(&self, n: u64) -> Option<Kept> {
        lock(&self.kept).iter().find(|k| k.n == n).cloned()
    }

    fn answered(&self, n: u64, what: String) {
        if let Some(k) = lock(&self.kept).iter_mut().find(|k| k.n == n) {
            k.answers.push(what);
        }
    }
}

/// A call's transaction id for the SIP media application events.
pub fn transaction_id(n: u64) -> String {
    format!("console-call-{n:06}")
}

#[derive(Clone)]
struct Local {
    phones: Arc<Phones>,
    api: ApiState,
}

/// `GET /local/messages` and `POST /local/messages/{n}/answer`.
pub fn router(phones: Arc<Phones>, api: ApiState) -> axum::Router {
    axum::Router::new()
        .route("/local/messages", get(list))
        .route("/local/messages/{n}/answer", post(answer))
        .with_state(Local { phones, api })
}

fn signed(
    s: &Local,
    headers: &HeaderMap,
    method: &Method,
    uri: &Uri,
    body: &[u8],
) -> Result<(), Problem> {
    let Some(secret): Option<&Secret> = s.api.secret.as_ref() else {
        return Ok(());
    };
    muster::api::sign::verify_headers(
        secret,
        headers,
        method.as_str(),
        uri,
        body,
        s.api.deps.clock.now(),
    )
    .map_err(|e| Problem::new(StatusCode::UNAUTHORIZED, e.to_string()))
}

async fn list(State(s): State<Local>, method: Method, uri: Uri, headers: HeaderMap) -> Response {
    if let Err(p) = signed(&s, &headers, &method, &uri, b"") {
        return p.into_response();
    }
    let g = lock(&s.phones.kept);
    let messages: Vec<Value> = g
        .iter()
        .rev()
        .map(|k| {
            json!({
                "n": k.n,
                "channel": k.channel,
                "incidentId": k.key.incident,
                "stakeholder": k.key.stakeholder,
                "route": k.key.route.encode(),
                "attempt": k.attempt,
                "to": k.to.masked(),
                "subject": k.subject,
                "body": k.body,
                "sentAt": k.sent_at,
                "answers": k.answers,
            })
        })
        .collect();
    Json(json!({ "messages": messages })).into_response()
}

/// 422 naming the field.
fn unprocessable(field: &str, message: &str) -> Problem {
    Problem::from(muster::Error::invalid(field, message))
}

/// A SIP media application event for the simulated call `k`, in the
/// shape of tests/fixtures/chime (Amazon Chime SDK Developer Guide).
fn sma_event(k: &Kept, n: u64, kind: &str, sequence: u32) -> Value {
    let to = match &k.to {
        Address::Phone(p) => p.expose().to_string(),
        _ => String::new(),
    };
    json!({
        "SchemaVersion": "1.0",
        "Sequence": sequence,
        "InvocationEventType": kind,
        "CallDetails": {
            "TransactionId": transaction_id(n),
            "AwsAccountId": "000000000000",
            "AwsRegion": "local",
            "SipMediaApplicationId": "muster-serve",
            "Participants": [{
                "CallId": format!("console-leg-{n:06}"),
                "ParticipantTag": "LEG-A",
                "To": to,
                "From": "+15555550100",
                "Direction": "Outbound",
                "StartTimeInMilliseconds": k.sent_at.0.to_string(),
                "Status": "Connected"
            }]
        }
    })
}

/// What the call's answer to an event says (its Speak actions' texts).
fn said(response: &Value) -> Vec<String> {
    response["Actions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|a| {
            a["Parameters"]["Text"]
                .as_str()
                .or_else(|| a["Parameters"]["SpeechParameters"]["Text"].as_str())
                .map(str::to_string)
        })
        .collect()
}

/// A 500 whose body says nothing more; the cause goes to the log (it
/// names a field, never a number).
fn internal(cause: &str) -> Problem {
    tracing::error!(cause, "a simulated answer could not be built");
    Problem::new(StatusCode::INTERNAL_SERVER_ERROR, "internal error")
}

fn failed(e: muster::Error) -> Problem {
    Problem::from(e)
}

async fn answer(
    State(s): State<Local>,
    Path(n): Path<u64>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    match answer_one(&s, n, &method, &uri, &headers, &body).await {
        Ok(v) => Json(v).into_response(),
        Err(p) => p.into_response(),
    }
}

async fn answer_one(
    s: &Local,
    n: u64,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Value, Problem> {
    signed(s, headers, method, uri, body)?;
    let k = s
        .phones
        .get(n)
        .ok_or_else(|| Problem::new(StatusCode::NOT_FOUND, format!("no message {n} is kept")))?;
    let v: Value = serde_json::from_slice(body).map_err(|e| {
        Problem::new(
            StatusCode::BAD_REQUEST,
            format!("malformed JSON at line {}, column {}", e.line(), e.column()),
        )
    })?;
    let deps = &s.api.deps;
    let out = match k.channel {
        Channel::Voice => {
            let digits = v["digits"]
                .as_str()
                .filter(|d| d.len() == 1 && d.bytes().all(|b| b.is_ascii_digit()))
                .ok_or_else(|| unprocessable("digits", "one key, 0 to 9"))?;
            // The person picks up: CALL_ANSWERED, whose answer sets the
            // transaction attributes every later event carries.
            let answered = app::voice_event(deps, &sma_event(&k, n, "CALL_ANSWERED", 3))
                .await
                .map_err(failed)?;
            let attributes = answered["TransactionAttributes"].clone();
            let mut pressed = sma_event(&k, n, "ACTION_SUCCESSFUL", 4);
            pressed["CallDetails"]["TransactionAttributes"] = attributes;
            pressed["ActionData"] = json!({
                "Type": "SpeakAndGetDigits",
                "Parameters": {"CallId": format!("console-leg-{n:06}"), "InputDigitsRegex": "^[0-9]$", "MinNumberOfDigits": 1, "MaxNumberOfDigits": 1},
                "ReceivedDigits": digits
            });
            let r = app::voice_event(deps, &pressed).await.map_err(failed)?;
            s.phones.answered(n, format!("pressed {digits}"));
            let mut words = said(&answered);
            words.extend(said(&r));
            json!({"n": n, "channel": "voice", "pressed": digits, "said": words})
        }
        Channel::Sms => {
            let text = v["text"]
                .as_str()
                .map(str::trim)
                .filter(|t| !t.is_empty() && t.len() <= 1600)
                .ok_or_else(|| unprocessable("text", "the reply's text, 1 to 1,600 characters"))?;
            let Address::Phone(phone) = &k.to else {
                return Err(unprocessable("n", "this message went to no phone"));
            };
            // End User Messaging's two-way SMS notification, as published
            // to SNS ("Two-way SMS messaging", AWS End User Messaging SMS
            // User Guide).
            let inbound: InboundSmsMessage = serde_json::from_value(json!({
                "originationNumber": phone.expose(),
                "destinationNumber": "+15555550100",
                "messageKeyword": "KEYWORD_000000000000",
                "messageBody": text,
                "inboundMessageId": format!("console-inbound-{n:06}"),
                "previousPublishedMessageId": k.reference,
            }))
            .map_err(|e| internal(&e.to_string()))?;
            let receipt = receipt_from_inbound_sms(&inbound).map_err(|e| internal(&e))?;
            let outcome = app::receipt(deps, receipt).await.map_err(failed)?;
            s.phones.answered(n, format!("replied {text:?}"));
            json!({"n": n, "channel": "sms", "replied": text, "outcome": format!("{outcome:?}")})
        }
        Channel::Push | Channel::Email => {
            if v["action"] != "acknowledge" {
                return Err(unprocessable("action", "\"acknowledge\""));
            }
            let token = link_token(&k.body).ok_or_else(|| {
                unprocessable("n", "this message carries no acknowledgement link")
            })?;
            // One of the incident's own answers, when it has them.
            let response = v["response"].as_str();
            let (_, recorded) = v1::acknowledge(&s.api, token, response).await?;
            s.phones.answered(
                n,
                match response {
                    Some(r) => format!("answered {r}"),
                    None => "acknowledged".into(),
                },
            );
            json!({"n": n, "channel": k.channel, "acknowledged": true, "alreadyRecorded": !recorded})
        }
    };
    Ok(out)
}

/// The token of the acknowledgement link in a message's body.
fn link_token(body: &str) -> Option<&str> {
    let at = body.find("/v1/ack/")? + "/v1/ack/".len();
    let token = body[at..].split(|c: char| c.is_whitespace()).next()?;
    (!token.is_empty()).then_some(token)
}

#[cfg(test)]
mod tests {
    use super::link_token;

    #[test]
    fn the_link_token_is_read_from_a_message_body() {
        assert_eq!(
            link_token("Outage.\n\nAcknowledge: http://127.0.0.1:8080/v1/ack/abc.def\nIncident: X"),
            Some("abc.def")
        );
        assert_eq!(link_token("Outage. Press 1 to acknowledge."), None);
    }
}
