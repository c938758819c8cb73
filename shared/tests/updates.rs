//! Updates as the incident evolves, and the all-clear at its end: each
//! person of the audience a message reached gets it once, on their best
//! channel (the one they acknowledged on, else the first of their plan;
//! never a call), and their audit records it; nobody else gets it.

mod support;
use support::*;

use axum::http::StatusCode;
use muster::app::{self, ReceiptEvent};
use muster::domain::*;
use muster::engine::{AuditKind, CascadeKey, Route};
use muster::ports::Job;
use serde_json::{Value, json};

const INCIDENT: &str = "INC-U-1";

/// Group `g`: `e` (email), `s` (SMS), `p` (phone and email), `v` (a phone
/// to call only: opted out of SMS), `x` (nothing: never reached); on-call
/// manager `m` (email).
fn world() -> World {
    let person = |n: &str, c: ContactMethods| Stakeholder::new(id(n), n, Tier::TWO, c);
    let email = |n: &str| EmailAddress::parse(&format!("{n}@example.com")).ok();
    let phone = |n: &str| PhoneNumber::parse(n).ok();
    let people = vec![
        person(
            "e",
            ContactMethods {
                email: email("e"),
                ..Default::default()
            },
        ),
        person(
            "s",
            ContactMethods {
                sms: phone("+13125550102"),
                ..Default::default()
            },
        ),
        person(
            "p",
            ContactMethods {
                phone: phone("+13125550104"),
                email: email("p"),
                ..Default::default()
            },
        ),
        person(
            "v",
            ContactMethods {
                phone: phone("+13125550103"),
                sms_opted_out: true,
                ..Default::default()
            },
        ),
        person("x", ContactMethods::default()),
        person(
            "m",
            ContactMethods {
                email: email("m"),
                ..Default::default()
            },
        ),
    ];
    let group = Group {
        id: GroupId::parse("g").unwrap_or_else(|e| panic!("{e}")),
        name: "G".into(),
        members: ["e", "s", "p", "v", "x"].map(id).to_vec(),
        on_call_manager: Some(id("m")),
        escalation_channels: vec![],
        idp: None,
    };
    World::new(vec![group], people)
}

fn key(who: &str) -> CascadeKey {
    CascadeKey {
        incident: IncidentId::parse(INCIDENT).unwrap_or_else(|e| panic!("{e}")),
        stakeholder: id(who),
        route: Route::Member,
    }
}

trait Updates {
    async fn start(&self);
    async fn ack_on(&self, who: &str, channel: Channel);
    async fn update(&self, body: Value) -> (StatusCode, Value);
    /// (channel, body) of each update message `who` was sent.
    fn updates_to(&self, who: &str) -> Vec<(Channel, String)>;
    /// (kind, channel, note) of `who`'s member entries for updates.
    async fn update_entries(&self, who: &str) -> Vec<(AuditKind, Option<Channel>, String)>;
}

impl Updates for World {
    async fn start(&self) {
        let body = json!({"trigger": {
            "incidentId": INCIDENT, "severity": "P1", "stakeholderGroupId": "g",
            "messageTemplate": "Power lost in hall A. Stay out of hall A.",
        }});
        let (status, _) = self.request("POST", "/v1/incidents", Some(body)).await;
        assert_eq!(status, StatusCode::ACCEPTED);
        self.run_for(10).await;
    }

    async fn ack_on(&self, who: &str, channel: Channel) {
        let ev = ReceiptEvent::Ack {
            key: key(who),
            channel,
            attempt: None,
        };
        app::receipt(&self.deps, ev)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    }

    async fn update(&self, body: Value) -> (StatusCode, Value) {
        let out = self
            .request(
                "POST",
                &format!("/v1/incidents/{INCIDENT}/updates"),
                Some(body),
            )
            .await;
        self.run_for(5).await;
        out
    }

    fn updates_to(&self, who: &str) -> Vec<(Channel, String)> {
        self.sent_to(who)
            .into_iter()
            .filter(|m| m.attempt > muster::ports::OutboundMessage::UPDATE_BASE)
            .map(|m| (m.channel, m.body))
            .collect()
    }

    async fn update_entries(&self, who: &str) -> Vec<(AuditKind, Option<Channel>, String)> {
        self.trail(INCIDENT)
            .await
            .into_iter()
            .filter(|e| {
                e.stakeholder.as_str() == who
                    && e.route == Route::Member
                    && matches!(
                        e.record.kind,
                        AuditKind::UpdateSent | AuditKind::UpdateFailed
                    )
            })
            .map(|e| {
                (
                    e.record.kind,
                    e.record.channel,
                    e.record.note.unwrap_or_default(),
                )
            })
            .collect()
    }
}

#[tokio::test]
async fn an_update_goes_once_to_its_audience_on_each_person_s_best_channel() {
    let w = world();
    w.start().await;
    w.ack_on("e", Channel::Email).await;
    w.ack_on("p", Channel::Voice).await;
    let (status, body) = w
        .update(json!({"message": "Power is back in hall B.", "audience": "acknowledged"}))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["update"], 1, "{body}");
    // Those who acknowledged: on the channel they answered on; p answered a
    // call, so theirs goes on the next channel of their plan (never a
    // call): SMS to the same number.
    let e = w.updates_to("e");
    assert_eq!(e.len(), 1, "{e:?}");
    assert_eq!(e[0].0, Channel::Email);
    assert!(e[0].1.contains("Power is back in hall B."), "{e:?}");
    assert_eq!(
        w.updates_to("p").iter().map(|u| u.0).collect::<Vec<_>>(),
        [Channel::Sms]
    );
    // Not those who have not acknowledged, nor anyone never reached.
    for who in ["s", "v", "x"] {
        assert!(w.updates_to(who).is_empty(), "{who}");
    }
    assert_eq!(
        w.update_entries("e").await,
        [(
            AuditKind::UpdateSent,
            Some(Channel::Email),
            "update 1".into()
        )]
    );

    let (status, _) = w
        .update(json!({"message": "Please confirm you are safe.", "audience": "unacknowledged"}))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    // s on their first channel; v has only a phone: recorded as not sent.
    assert_eq!(
        w.updates_to("s").iter().map(|u| u.0).collect::<Vec<_>>(),
        [Channel::Sms]
    );
    assert!(w.updates_to("v").is_empty());
    let v = w.update_entries("v").await;
    assert_eq!(v.len(), 1, "{v:?}");
    assert_eq!((v[0].0, v[0].1), (AuditKind::UpdateFailed, None));
    assert!(v[0].2.contains("only a phone"), "{v:?}");
    assert_eq!(w.updates_to("e").len(), 1, "e acknowledged: not in it");
    assert!(w.updates_to("x").is_empty(), "x was never reached");
    // A redelivered job sends nothing more.
    let again = Job::Update {
        key: key("s"),
        seq: 2,
        ticket: None,
    };
    app::dispatch(&w.deps, again)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    w.run_for(5).await;
    assert_eq!(w.updates_to("s").len(), 1);
    // The status lists the updates posted.
    let (_, view) = w
        .request("GET", &format!("/v1/incidents/{INCIDENT}"), None)
        .await;
    let updates = view["incident"]["updates"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(updates.len(), 2, "{view}");
    assert_eq!(updates[1]["audience"], "unacknowledged");
}

#[tokio::test]
async fn the_all_clear_goes_with_the_close_to_everyone_reached_once() {
    let w = world();
    w.start().await;
    w.ack_on("e", Channel::Email).await;
    let close = format!("/v1/incidents/{INCIDENT}/close");
    let (status, body) = w
        .request(
            "POST",
            &close,
            Some(json!({"allClear": "Power is restored. Resume work."})),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["allClear"]["update"], 1, "{body}");
    w.run_for(10).await;
    for (who, channel) in [
        ("e", Channel::Email),
        ("s", Channel::Sms),
        ("p", Channel::Sms),
    ] {
        let u = w.updates_to(who);
        assert_eq!(u.len(), 1, "{who}: {u:?}");
        assert_eq!(u[0].0, channel, "{who}");
        assert!(
            u[0].1
                .starts_with("All clear for INC-U-1: Power is restored."),
            "{u:?}"
        );
        assert_eq!(
            w.update_entries(who).await,
            [(AuditKind::UpdateSent, Some(channel), "the all-clear".into())]
        );
    }
    assert!(w.updates_to("x").is_empty(), "never reached");
    // Closing again with an all-clear sends no second one.
    let (status, body) = w
        .request("POST", &close, Some(json!({"allClear": "Again."})))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(body["allClear"]["update"], 1, "{body}");
    w.run_for(10).await;
    assert_eq!(w.updates_to("e").len(), 1);
    // A closed incident takes no update.
    let (status, body) = w.update(json!({"message": "More."})).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
}

#[tokio::test]
async fn a_bad_update_or_close_is_refused_naming_the_field_and_sends_nothing() {
    let w = world();
    w.start().await;
    let before = w.sent.sent().len();
    for (body, field) in [
        (json!({}), "message"),
        (json!({"message": "  "}), "message"),
        (json!({"message": 3}), "message"),
        (json!({"message": "x", "audience": "everyone"}), "audience"),
        (json!({"message": "x", "to": "all"}), "to"),
    ] {
        let (status, answer) = w.update(body.clone()).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}: {answer}");
        assert_eq!(answer["errors"][0]["field"], field, "{body}: {answer}");
    }
    let close = format!("/v1/incidents/{INCIDENT}/close");
    for body in [
        json!({"allClear": ""}),
        json!({"allClear": 1}),
        json!({"all": "x"}),
        json!([]),
    ] {
        let (status, answer) = w.request("POST", &close, Some(body.clone())).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}: {answer}");
    }
    let (status, _) = w
        .request(
            "POST",
            "/v1/incidents/INC-NONE/updates",
            Some(json!({"message": "x"})),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    w.run_for(5).await;
    let (_, view) = w
        .request("GET", &format!("/v1/incidents/{INCIDENT}"), None)
        .await;
    assert_eq!(
        view["incident"]["status"], "open",
        "a refused close closes nothing"
    );
    assert!(view["incident"].get("updates").is_none(), "{view}");
    assert_eq!(w.sent.sent().len(), before);
}

#[tokio::test]
async fn an_incident_sends_at_most_twenty_updates() {
    let w = world();
    w.start().await;
    for n in 1..=MAX_UPDATES {
        let (status, body) = w.update(json!({"message": format!("Update {n}.")})).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{n}: {body}");
    }
    let (status, body) = w.update(json!({"message": "One more."})).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(w.updates_to("e").len(), MAX_UPDATES);
}
