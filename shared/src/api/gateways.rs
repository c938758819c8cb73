//! `POST /v1/gateways/{gateway}/{event}`: the webhooks of the alternative
//! gateways ([`crate::adapters::gateways`]), each authenticated its own
//! way before anything is read; a gateway not configured is not served
//! (404).
//!
//! | event | from | does | answers |
//! |---|---|---|---|
//! | `twilio/voice` | Twilio, when a call is answered (`CallSid`) | DELIVERED; the prompt, one digit gathered | TwiML |
//! | `twilio/gather` | Twilio, the digit pressed (`CallSid`, `Digits`) | 1 acknowledges | TwiML |
//! | `twilio/call-status` | Twilio, the call ended (`CallSid`, `CallStatus`, `SipResponseCode`) | FAILED / UNREACHABLE when not answered | 204 |
//! | `twilio/sms-status` | Twilio, a message's status (`MessageSid`, `MessageStatus`, `ErrorCode`) | DELIVERED / FAILED / UNREACHABLE | 204 |
//! | `twilio/sms` | Twilio, a text to the number (`From`, `Body`) | a reply: ACK, STOP, START | empty TwiML |
//! | `sendgrid/events` | SendGrid's Signed Event Webhook (a JSON array) | DELIVERED / FAILED / UNREACHABLE | 200 |
//!
//! Twilio requests carry `X-Twilio-Signature`, checked against the URL
//! Twilio was given (`callback_url` and the path, with the query) and the
//! form parameters; SendGrid's carry an ECDSA signature of the timestamp
//! and body. A bad signature is 403 and changes nothing.

use super::v1::{ApiState, Problem};
use crate::app::{self, ReceiptEvent};
use crate::domain::{Channel, PhoneNumber};
use crate::events::{sendgrid, twilio};
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};

pub use crate::events::gateways::Hooks;

fn twiml(text: String) -> Response {
    ([(header::CONTENT_TYPE, "text/xml")], text).into_response()
}

fn refused() -> Problem {
    Problem::new(StatusCode::FORBIDDEN, "the signature does not match")
}

pub(super) async fn gateway(
    State(s): State<ApiState>,
    Path((gateway, event)): Path<(String, String)>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Problem> {
    let body = super::v1::body_of(body)?;
    let hooks = &s.integrations.gateways;
    let not_served = |what: &str| Problem::new(StatusCode::NOT_FOUND, what.to_string());
    match gateway.as_str() {
        "twilio" => {
            let Some(token) = &hooks.twilio else {
                return Err(not_served("the twilio gateway is not configured"));
            };
            if !matches!(
                event.as_str(),
                "voice" | "gather" | "call-status" | "sms-status" | "sms"
            ) {
                return Err(not_served(
                    "no twilio event of that name: expected voice, gather, call-status, sms-status or sms",
                ));
            }
            let params: Vec<(String, String)> =
                serde_urlencoded::from_bytes(&body).map_err(|_| {
                    Problem::new(
                        StatusCode::BAD_REQUEST,
                        "not a form (application/x-www-form-urlencoded)",
                    )
                })?;
            let mut url = format!("{}/v1/gateways/twilio/{event}", hooks.callback_url);
            if let Some(q) = query.as_deref().filter(|q| !q.is_empty()) {
                url.push('?');
                url.push_str(q);
            }
            let presented = headers
                .get("x-twilio-signature")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default();
            if !twilio::verify(token.expose(), &url, &params, presented) {
                tracing::warn!(event = %event, "twilio webhook refused: bad signature");
                return Err(refused());
            }
            twilio_event(&s, hooks, &event, &params).await
        }
        "sendgrid" => {
            let Some(key) = &hooks.sendgrid else {
                return Err(not_served("the sendgrid gateway is not configured"));
            };
            if event != "events" {
                return Err(not_served(
                    "no sendgrid event of that name: expected events",
                ));
            }
            let h = |k: &str| {
                headers
                    .get(k)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
            };
            if !sendgrid::verify(key, h(sendgrid::TIMESTAMP), &body, h(sendgrid::SIGNATURE)) {
                tracing::warn!("sendgrid webhook refused: bad signature");
                return Err(refused());
            }
            let events: Vec<serde_json::Value> = serde_json::from_slice(&body).map_err(|e| {
                Problem::new(
                    StatusCode::BAD_REQUEST,
                    format!("not a JSON array of events: {e}"),
                )
            })?;
            let mut applied = 0;
            for ev in &events {
                if let Some((provider_message_id, status)) = sendgrid::receipt(ev) {
                    app::receipt(
                        &s.deps,
                        ReceiptEvent::Delivery {
                            provider_message_id,
                            status,
                        },
                    )
                    .await?;
                    applied += 1;
                }
            }
            tracing::info!(events = events.len(), receipts = applied, "sendgrid events");
            Ok(
                axum::Json(serde_json::json!({"events": events.len(), "receipts": applied}))
                    .into_response(),
            )
        }
        _ => Err(not_served(
            "no gateway of that name: expected twilio or sendgrid",
        )),
    }
}

fn required<'a>(params: &'a [(String, String)], name: &str) -> Result<&'a str, Problem> {
    twilio::param(params, name)
        .filter(|v| !v.is_empty())
        .ok_or_else(|| {
            Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!("{name}: required"),
            )
        })
}

async fn twilio_event(
    s: &ApiState,
    hooks: &Hooks,
    event: &str,
    params: &[(String, String)],
) -> Result<Response, Problem> {
    let deps = &s.deps;
    match event {
        "voice" | "gather" => {
            let sid = required(params, "CallSid")?;
            let reference = twilio::provider_message_id(sid);
            let call = app::call_for(deps, &reference).await?;
            if event == "voice" {
                app::receipt(
                    deps,
                    ReceiptEvent::Delivery {
                        provider_message_id: reference,
                        status: crate::engine::ReceiptStatus::Delivered,
                    },
                )
                .await?;
                let action = format!("{}/v1/gateways/twilio/gather", hooks.callback_url);
                let voice = call.as_ref().map(|c| c.voice.clone());
                let bridged = call.as_ref().is_some_and(|c| c.bridge.is_some());
                let mut prompt = call.map(|c| c.prompt).unwrap_or_else(|| {
                    "This is Muster, the business continuity service. Press 1 to acknowledge."
                        .to_string()
                });
                if bridged {
                    prompt.push_str(" Press 0 to join the conference bridge.");
                }
                return Ok(twiml(twilio::gather(&prompt, &action, voice.as_ref())));
            }
            let digits = twilio::param(params, "Digits").unwrap_or_default();
            let Some(call) = call else {
                tracing::warn!("a key press on a call with no stored reference is not recorded");
                return Ok(twiml(twilio::say(
                    "Your response could not be recorded. Goodbye.",
                    None,
                )));
            };
            // 0: join the conference bridge (which acknowledges).
            if digits == "0"
                && let Some(phone) = call.bridge.as_ref().and_then(|b| b.phone.as_ref())
            {
                let ack = ReceiptEvent::Ack {
                    key: call.key.clone(),
                    channel: Channel::Voice,
                    attempt: Some(call.attempt),
                };
                let outcome = app::receipt(deps, ack).await?;
                tracing::info!(outcome = ?outcome, "twilio key press: the bridge");
                let pin = call.bridge.as_ref().and_then(|b| b.pin.as_deref());
                return Ok(twiml(twilio::dial(
                    "Thank you. Connecting you to the conference bridge.",
                    phone.expose(),
                    pin,
                    Some(&call.voice),
                )));
            }
            // The incident's own answers: any of their keys; else only 1.
            let event = if call.keys.is_empty() {
                (digits == "1").then(|| ReceiptEvent::Ack {
                    key: call.key.clone(),
                    channel: Channel::Voice,
                    attempt: Some(call.attempt),
                })
            } else {
                call.keys
                    .iter()
                    .any(|k| k == digits)
                    .then(|| ReceiptEvent::Respond {
                        key: call.key.clone(),
                        channel: Channel::Voice,
                        attempt: Some(call.attempt),
                        response: digits.to_string(),
                    })
            };
            let Some(event) = event else {
                let action = format!("{}/v1/gateways/twilio/gather", hooks.callback_url);
                let again = if call.keys.is_empty() {
                    "Only 1 acknowledges."
                } else {
                    "That is not one of the answers."
                };
                return Ok(twiml(twilio::gather(
                    &format!("{again} {}", call.prompt),
                    &action,
                    Some(&call.voice),
                )));
            };
            let outcome = app::receipt(deps, event).await?;
            tracing::info!(outcome = ?outcome, "twilio key press");
            Ok(twiml(twilio::say(
                if call.keys.is_empty() {
                    "Acknowledged. Thank you. Goodbye."
                } else {
                    "Thank you. Your answer has been recorded. Goodbye."
                },
                Some(&call.voice),
            )))
        }
        "call-status" | "sms-status" => {
            let (sid, status) = if event == "call-status" {
                (required(params, "CallSid")?, twilio::call_status(params))
            } else {
                (
                    required(params, "MessageSid")?,
                    twilio::message_status(params),
                )
            };
            if let Some(status) = status {
                let outcome = app::receipt(
                    deps,
                    ReceiptEvent::Delivery {
                        provider_message_id: twilio::provider_message_id(sid),
                        status,
                    },
                )
                .await?;
                tracing::info!(outcome = ?outcome, "twilio status");
            }
            Ok(StatusCode::NO_CONTENT.into_response())
        }
        _ => {
            // "sms": a text to the number.
            let from = PhoneNumber::parse(required(params, "From")?).map_err(|_| {
                Problem::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "From: not an E.164 number",
                )
            })?;
            let body = twilio::param(params, "Body")
                .unwrap_or_default()
                .to_string();
            let outcome = app::receipt(deps, ReceiptEvent::InboundSms { from, body }).await?;
            tracing::info!(outcome = ?outcome, "twilio text");
            Ok(twiml(twilio::EMPTY.to_string()))
        }
    }
}
