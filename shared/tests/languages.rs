//! Each person in their own language: the trigger's `messageTemplates`
//! beside `messageTemplate`, picked by the person's directory locale (its
//! own tag, else its language, else the default), and calls read in the
//! voice of the message chosen.

mod support;
use support::*;

use axum::http::StatusCode;
use muster::domain::*;
use serde_json::{Value, json};

const INCIDENT: &str = "INC-L-1";
const EN: &str = "Fire at the Montreal office. Leave the building now.";
const FR: &str = "Incendie au bureau de Montréal. Quittez le bâtiment.";
const FR_CA: &str = "Feu au bureau de Montréal. Sortez de l'édifice.";

/// Group `g`: email people of locales fr-CA, fr-BE, de and none; `v`, a
/// phone in fr-CA.
fn world() -> World {
    let person = |n: &str, locale: Option<&str>, c: ContactMethods| {
        let mut p = Stakeholder::new(id(n), n, Tier::TWO, c);
        p.locale = locale.map(str::to_string);
        p
    };
    let email = |n: &str| ContactMethods {
        email: EmailAddress::parse(&format!("{n}@example.com")).ok(),
        ..Default::default()
    };
    let people = vec![
        person("qc", Some("fr_CA"), email("qc")),
        person("be", Some("fr-BE"), email("be")),
        person("de", Some("de"), email("de")),
        person("xx", None, email("xx")),
        person(
            "v",
            Some("fr-CA"),
            ContactMethods {
                phone: PhoneNumber::parse("+15145550100").ok(),
                ..Default::default()
            },
        ),
    ];
    let group = Group {
        id: GroupId::parse("g").unwrap_or_else(|e| panic!("{e}")),
        name: "G".into(),
        members: ["qc", "be", "de", "xx", "v"].map(id).to_vec(),
        on_call_manager: None,
        escalation_channels: vec![],
        idp: None,
    };
    World::new(vec![group], people)
}

async fn start(w: &World, templates: Value) -> (StatusCode, Value) {
    let body = json!({"trigger": {
        "incidentId": INCIDENT, "severity": "P1", "stakeholderGroupId": "g",
        "messageTemplate": EN, "messageTemplates": templates,
    }});
    let out = w.request("POST", "/v1/incidents", Some(body)).await;
    w.run_for(5).await;
    out
}

#[tokio::test]
async fn each_person_gets_the_message_of_their_locale_else_their_language_else_the_default() {
    let w = world();
    let (status, body) = start(&w, json!({"fr": FR, "FR-ca": FR_CA})).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let body_of = |who: &str| {
        w.sent_to(who)
            .first()
            .map(|m| m.body.clone())
            .unwrap_or_default()
    };
    assert!(body_of("qc").contains(FR_CA), "its own tag");
    assert!(
        body_of("be").contains(FR) && !body_of("be").contains(EN),
        "its language"
    );
    assert!(body_of("de").contains(EN), "no German: the default");
    assert!(body_of("xx").contains(EN), "no locale: the default");
    // The call is read in the voice of the message chosen.
    let call = w.call_to("v").await;
    assert!(call.prompt.contains(FR_CA), "{}", call.prompt);
    assert_eq!(
        (call.voice.language.as_str(), call.voice.voice.as_str()),
        ("fr-CA", "Gabrielle")
    );
}

#[tokio::test]
async fn a_person_without_a_message_in_their_language_hears_the_default_voice() {
    let w = world();
    let (status, _) = start(&w, json!({"de": "Feuer im Büro Montreal."})).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let call = w.call_to("v").await;
    // fr-CA has no message: the English text, in the English voice (never
    // English read by a French voice).
    assert!(call.prompt.contains(EN));
    assert_eq!(call.voice.language, "en-US");
}

#[tokio::test]
async fn bad_message_templates_are_refused_naming_the_field() {
    let w = world();
    for (templates, field) in [
        (json!({"french": FR}), "trigger.messageTemplates.french"),
        (json!({"fr": ""}), "trigger.messageTemplates.fr"),
        (json!({"fr": 3}), "trigger.messageTemplates.fr"),
        (json!({"fr": FR, "FR": FR}), "trigger.messageTemplates.fr"),
        (json!(["fr"]), "trigger.messageTemplates"),
    ] {
        let (status, body) = start(&w, templates.clone()).await;
        assert_eq!(
            status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{templates}: {body}"
        );
        let fields: Vec<&str> = body["errors"]
            .as_array()
            .map(|e| e.iter().filter_map(|x| x["field"].as_str()).collect())
            .unwrap_or_default();
        assert!(
            fields.iter().any(|f| f.eq_ignore_ascii_case(field)),
            "{templates}: {body}"
        );
    }
    assert!(w.sent.sent().is_empty());
}
