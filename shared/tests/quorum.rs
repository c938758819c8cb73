//! Quorum: "we need three people, one of them from tier 1". The status view
//! shows how far the quorum has got and the moment it was reached (the
//! acknowledgement that met it); with `stopOnQuorum` the cascades still
//! open are cancelled, each audited with the reason, while escalations
//! about failures go on. Only an answer that acknowledges counts.

mod support;
use support::*;

use axum::http::StatusCode;
use muster::app::{self, ReceiptEvent};
use muster::domain::*;
use muster::engine::{AuditKind, CascadeKey, CascadeStatus, Route};
use serde_json::{Value, json};

const INCIDENT: &str = "INC-Q-1";

/// Group `g`: `a` and `b` in tier 1, `c` and `d` in tier 2 (all email),
/// `x` with no contact at all (fails at once); on-call manager `m`.
fn env() -> World {
    let email = |n: &str| ContactMethods {
        email: EmailAddress::parse(&format!("{n}@example.com")).ok(),
        ..Default::default()
    };
    let person = |n: &str, tier: Tier, c: ContactMethods| Stakeholder::new(id(n), n, tier, c);
    let people = vec![
        person("a", Tier::ONE, email("a")),
        person("b", Tier::ONE, email("b")),
        person("c", Tier::TWO, email("c")),
        person("d", Tier::TWO, email("d")),
        person("x", Tier::TWO, ContactMethods::default()),
        person("m", Tier::ONE, email("m")),
    ];
    let group = Group {
        id: GroupId::parse("g").unwrap_or_else(|e| panic!("{e}")),
        name: "G".into(),
        members: ["a", "b", "c", "d", "x"].map(id).to_vec(),
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

trait Quorum {
    async fn start(&self, extra: Value) -> (StatusCode, Value);
    async fn quorum(&self) -> Value;
    async fn ack(&self, who: &str);
    async fn status(&self, who: &str) -> CascadeStatus;
    fn count_to(&self, who: &str) -> usize;
}

impl Quorum for World {
    /// Declares the incident through the API with these extra trigger fields.
    async fn start(&self, extra: Value) -> (StatusCode, Value) {
        let mut trigger = json!({
            "incidentId": INCIDENT, "severity": "P1", "stakeholderGroupId": "g",
            "messageTemplate": "Flood at the Leeds office. Who can come in?",
        });
        if let (Some(t), Some(e)) = (trigger.as_object_mut(), extra.as_object()) {
            t.extend(e.clone());
        }
        let out = self
            .request("POST", "/v1/incidents", Some(json!({ "trigger": trigger })))
            .await;
        self.run_for(5).await;
        out
    }

    async fn quorum(&self) -> Value {
        let (status, view) = self
            .request("GET", &format!("/v1/incidents/{INCIDENT}"), None)
            .await;
        assert_eq!(status, StatusCode::OK, "{view}");
        view["quorum"].clone()
    }

    async fn ack(&self, who: &str) {
        let ev = ReceiptEvent::Ack {
            key: key(who),
            channel: Channel::Email,
            attempt: None,
        };
        app::receipt(&self.deps, ev)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    }

    async fn status(&self, who: &str) -> CascadeStatus {
        self.deps
            .cascades
            .get_cascade(&key(who))
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .map(|r| r.cascade.status)
            .unwrap_or_else(|| panic!("no cascade for {who}"))
    }

    fn count_to(&self, who: &str) -> usize {
        self.sent_to(who).len()
    }
}

#[tokio::test]
async fn the_status_shows_the_quorum_s_progress_and_the_moment_it_was_reached() {
    let env = env();
    let q = json!({"quorum": {"count": 3, "tiers": {"1": 1}}});
    assert_eq!(env.start(q).await.0, StatusCode::ACCEPTED);
    let view = env.quorum().await;
    assert_eq!(view["acknowledged"], 0, "{view}");
    assert_eq!(view["met"], false, "{view}");
    assert_eq!(
        view["byTier"]["1"],
        json!({"required": 1, "acknowledged": 0})
    );
    assert!(view.get("reachedAt").is_none(), "{view}");

    // Three in all, but none from tier 1: not reached.
    env.ack("c").await;
    env.ack("d").await;
    env.run_for(30).await;
    let view = env.quorum().await;
    assert_eq!(
        (view["acknowledged"].as_u64(), view["met"].as_bool()),
        (Some(2), Some(false))
    );
    env.ack("a").await;
    let view = env.quorum().await;
    assert_eq!(view["met"], true, "{view}");
    assert_eq!(view["byTier"]["1"]["acknowledged"], 1, "{view}");
    // The moment: the acknowledgement that met it.
    let trail = env.trail(INCIDENT).await;
    let acked_a = trail
        .iter()
        .find(|e| e.stakeholder.as_str() == "a" && e.record.kind == AuditKind::Acknowledged)
        .map(|e| e.at.0);
    assert!(acked_a.is_some(), "a's acknowledgement is audited");
    assert_eq!(view["reachedAt"].as_u64(), acked_a, "{view}");
    // Without stopOnQuorum, the rest goes on.
    assert_eq!(env.status("b").await, CascadeStatus::Active);
    // Recorded once: a later acknowledgement does not move the moment.
    env.run_for(10).await;
    env.ack("b").await;
    assert_eq!(env.quorum().await["reachedAt"].as_u64(), acked_a);
}

#[tokio::test]
async fn stop_on_quorum_cancels_those_still_open_each_audited_and_escalations_go_on() {
    let env = env();
    let q = json!({"quorum": {"count": 2}, "stopOnQuorum": true});
    assert_eq!(env.start(q).await.0, StatusCode::ACCEPTED);
    // x has no contact: failed, and named to the manager.
    assert_eq!(env.status("x").await, CascadeStatus::Escalated);
    env.ack("a").await;
    env.ack("c").await;
    env.run_for(5).await;
    assert_eq!(env.quorum().await["met"], true);
    for who in ["b", "d"] {
        assert_eq!(env.status(who).await, CascadeStatus::Cancelled, "{who}");
    }
    let trail = env.trail(INCIDENT).await;
    for who in ["b", "d"] {
        let cancel = trail
            .iter()
            .find(|e| e.stakeholder.as_str() == who && e.record.kind == AuditKind::Cancelled);
        let note = cancel
            .and_then(|e| e.record.note.clone())
            .unwrap_or_default();
        assert!(note.contains("quorum"), "{who}: {note:?}");
    }
    // Nothing more goes to those stopped, however long it runs.
    let (b, d) = (env.count_to("b"), env.count_to("d"));
    env.run_for(30 * 60).await;
    assert_eq!((env.count_to("b"), env.count_to("d")), (b, d));
    // The escalation about x was not stopped: the manager was told.
    let about_x = CascadeKey {
        route: Route::Escalation { about: id("x") },
        ..key("m")
    };
    let esc = env
        .deps
        .cascades
        .get_cascade(&about_x)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(esc.is_some(), "the manager's escalation exists");
    assert!(env.count_to("m") > 0, "the manager was told of x");
    assert!(
        !trail
            .iter()
            .any(|e| e.route != Route::Member && e.record.kind == AuditKind::Cancelled),
        "no escalation was cancelled"
    );
}

#[tokio::test]
async fn only_an_answer_that_acknowledges_counts() {
    let env = env();
    let q = json!({
        "quorum": {"count": 1},
        "responses": [{"key": "1", "label": "I can come in"}, {"key": "2", "label": "I cannot", "acknowledges": false}],
    });
    assert_eq!(env.start(q).await.0, StatusCode::ACCEPTED);
    let no = ReceiptEvent::Respond {
        key: key("a"),
        channel: Channel::Email,
        attempt: None,
        response: "2".into(),
    };
    app::receipt(&env.deps, no)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(env.quorum().await["met"], false);
    let yes = ReceiptEvent::Respond {
        key: key("b"),
        channel: Channel::Email,
        attempt: None,
        response: "1".into(),
    };
    app::receipt(&env.deps, yes)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(env.quorum().await["met"], true);
}

#[tokio::test]
async fn a_bad_quorum_is_refused_naming_the_field_and_changes_nothing() {
    let env = env();
    for (extra, field) in [
        (json!({"quorum": {"count": 0}}), "trigger.quorum.count"),
        (
            json!({"quorum": {"tiers": {"4": 1}}}),
            "trigger.quorum.tiers.4",
        ),
        (json!({"quorum": {}}), "trigger.quorum"),
        (json!({"quorum": 2}), "trigger.quorum"),
        (json!({"stopOnQuorum": true}), "trigger.stopOnQuorum"),
        (
            json!({"quorum": {"count": 1}, "stopOnQuorum": "yes"}),
            "trigger.stopOnQuorum",
        ),
    ] {
        let (status, body) = env.start(extra.clone()).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{extra}: {body}");
        assert!(body.to_string().contains(field), "{extra}: {body}");
    }
    let (status, _) = env
        .request("GET", &format!("/v1/incidents/{INCIDENT}"), None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "nothing was declared");
    assert!(env.sent.sent().is_empty());
}

#[tokio::test]
async fn an_incident_without_a_quorum_says_so() {
    let env = env();
    assert_eq!(env.start(json!({})).await.0, StatusCode::ACCEPTED);
    assert_eq!(env.quorum().await, Value::Null);
}
