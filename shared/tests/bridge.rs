//! A conference bridge: every message of the incident names it, and a call
//! offers "press 0", which acknowledges and connects the call to it.

mod support;
use support::*;

use axum::http::StatusCode;
use muster::app;
use muster::domain::*;
use muster::engine::{CascadeKey, CascadeStatus, Route};
use serde_json::{Value, json};

const INCIDENT: &str = "INC-B-1";

fn world() -> World {
    let person = |n: &str, c: ContactMethods| Stakeholder::new(id(n), n, Tier::ONE, c);
    let people = vec![
        person(
            "e",
            ContactMethods {
                email: EmailAddress::parse("e@example.com").ok(),
                ..Default::default()
            },
        ),
        person(
            "s",
            ContactMethods {
                sms: PhoneNumber::parse("+13125550102").ok(),
                ..Default::default()
            },
        ),
        person(
            "v",
            ContactMethods {
                phone: PhoneNumber::parse("+13125550103").ok(),
                sms_opted_out: true,
                ..Default::default()
            },
        ),
    ];
    let group = Group {
        id: GroupId::parse("g").unwrap_or_else(|e| panic!("{e}")),
        name: "G".into(),
        members: ["e", "s", "v"].map(id).to_vec(),
        on_call_manager: Some(id("e")),
        escalation_channels: vec![],
        idp: None,
    };
    World::new(vec![group], people)
}

async fn start(w: &World, bridge: Value) -> (StatusCode, Value) {
    let body = json!({"trigger": {
        "incidentId": INCIDENT, "severity": "P1", "stakeholderGroupId": "g",
        "messageTemplate": "Core network outage. Join the bridge.", "bridge": bridge,
    }});
    let out = w.request("POST", "/v1/incidents", Some(body)).await;
    w.run_for(5).await;
    out
}

const LINE: &str = "Conference bridge: +442079460000, PIN 4821, https://meet.example.com/bcp";

#[tokio::test]
async fn every_message_names_the_bridge_and_press_0_on_a_call_joins_it() {
    let w = world();
    let bridge =
        json!({"phone": "+44 20 7946 0000", "pin": "4821", "url": "https://meet.example.com/bcp"});
    let (status, body) = start(&w, bridge).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    for who in ["e", "s"] {
        let m = w.sent_to(who);
        assert!(
            m.first().is_some_and(|m| m.body.contains(LINE)),
            "{who}: {m:?}"
        );
    }
    // The call: its prompt offers 0, and 0 acknowledges and bridges.
    let call = w.call_to("v").await;
    let fixture = |name: &str| -> Value {
        let path = format!(
            "{}/../tests/fixtures/chime/{name}.json",
            env!("CARGO_MANIFEST_DIR")
        );
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap_or_default())
            .unwrap_or_else(|e| panic!("{path}: {e}"))
    };
    let answered = muster::events::chime::handle(&fixture("call_answered"), Some(&call))
        .unwrap_or_else(|e| panic!("{e}"));
    let prompt = answered.response["Actions"][0]["Parameters"]["SpeechParameters"]["Text"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        prompt.contains("Press 0 to join the conference bridge."),
        "{prompt}"
    );
    let mut pressed = fixture("digits_1");
    pressed["CallDetails"]["TransactionAttributes"] =
        answered.response["TransactionAttributes"].clone();
    pressed["ActionData"]["ReceivedDigits"] = json!("0");
    let r = muster::events::chime::handle(&pressed, None).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.response["Actions"][1]["Type"], "CallAndBridge");
    for receipt in r.receipts {
        app::receipt(&w.deps, receipt)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    }
    let key = CascadeKey {
        incident: IncidentId::parse(INCIDENT).unwrap_or_else(|e| panic!("{e}")),
        stakeholder: id("v"),
        route: Route::Member,
    };
    let rec = w.deps.cascades.get_cascade(&key).await.ok().flatten();
    assert_eq!(
        rec.map(|r| r.cascade.status),
        Some(CascadeStatus::Acknowledged)
    );
}

#[tokio::test]
async fn a_bad_bridge_is_refused_naming_the_field() {
    let w = world();
    for (bridge, field) in [
        (json!({"phone": "nope"}), "trigger.bridge.phone"),
        (
            json!({"url": "http://insecure.example.com"}),
            "trigger.bridge.url",
        ),
        (
            json!({"pin": "12", "url": "https://m.example.com"}),
            "trigger.bridge.pin",
        ),
        (json!({}), "trigger.bridge"),
        (json!("+442079460000"), "trigger.bridge"),
    ] {
        let (status, body) = start(&w, bridge.clone()).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{bridge}: {body}");
        assert_eq!(body["errors"][0]["field"], field, "{bridge}: {body}");
    }
    assert!(w.sent.sent().is_empty());
}
