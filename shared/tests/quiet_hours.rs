//! Quiet hours: a person's time zone and quiet window from the directory.
//! A P3 or P4 message waits for the window to end (audited, and shown in
//! the status); P1 and P2 override it (the policy's default).

mod support;
use support::*;

use axum::http::StatusCode;
use muster::domain::*;
use muster::engine::{AuditKind, Route};
use serde_json::json;

const INCIDENT: &str = "INC-QH-1";

/// The clock starts at 2023-11-14 22:13:20 UTC: 22:13 in London (quiet
/// 22:00-07:00), 07:13 the next morning in Tokyo (the same window: over).
fn world() -> World {
    let person = |n: &str, quiet: Option<(&str, &str)>| {
        let mut p = Stakeholder::new(
            id(n),
            n,
            Tier::TWO,
            ContactMethods {
                email: EmailAddress::parse(&format!("{n}@example.com")).ok(),
                ..Default::default()
            },
        );
        p.quiet = quiet.map(|(zone, hours)| Quiet {
            time_zone: zone.into(),
            hours: QuietHours::parse(hours).unwrap_or_else(|e| panic!("{e}")),
        });
        p
    };
    let people = vec![
        person("london", Some(("Europe/London", "22:00-07:00"))),
        person("tokyo", Some(("Asia/Tokyo", "22:00-07:00"))),
        person("anyone", None),
    ];
    let group = Group {
        id: GroupId::parse("g").unwrap_or_else(|e| panic!("{e}")),
        name: "G".into(),
        members: ["london", "tokyo", "anyone"].map(id).to_vec(),
        on_call_manager: None,
        escalation_channels: vec![],
        idp: None,
    };
    World::new(vec![group], people)
}

async fn start(w: &World, severity: &str) {
    let body = json!({"trigger": {
        "incidentId": INCIDENT, "severity": severity, "stakeholderGroupId": "g",
        "messageTemplate": "The weekly backup failed; it will be retried tonight.",
    }});
    let (status, answer) = w.request("POST", "/v1/incidents", Some(body)).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
    w.run_for(60).await;
}

/// 07:00 in London on 2023-11-15 (UTC+0 in winter).
const LONDON_MORNING: u64 = 1_700_031_600_000;

#[tokio::test]
async fn a_p3_waits_for_the_end_of_the_person_s_quiet_hours_and_says_so() {
    let w = world();
    start(&w, "P3").await;
    assert!(w.sent_to("london").is_empty(), "22:13 in London: quiet");
    assert_eq!(
        w.sent_to("tokyo").len(),
        1,
        "07:13 in Tokyo: the window is over"
    );
    assert_eq!(w.sent_to("anyone").len(), 1, "no quiet hours");
    // The audit and the status say why, and until when.
    let trail = w.trail(INCIDENT).await;
    let started = trail
        .iter()
        .find(|e| e.stakeholder.as_str() == "london" && e.record.kind == AuditKind::CascadeStarted)
        .unwrap_or_else(|| panic!("no start"));
    assert!(
        started
            .record
            .note
            .as_deref()
            .is_some_and(|n| n.contains("quiet hours")),
        "{:?}",
        started.record.note
    );
    assert_eq!(
        started.at.0 + started.record.wait_ms.unwrap_or_default(),
        LONDON_MORNING
    );
    let (_, view) = w
        .request("GET", &format!("/v1/incidents/{INCIDENT}?limit=10"), None)
        .await;
    let london = view["stakeholders"]
        .as_array()
        .and_then(|s| s.iter().find(|p| p["stakeholder"] == "london").cloned())
        .unwrap_or_default();
    assert_eq!(london["quietUntil"], LONDON_MORNING, "{london}");
    // At 07:00 London time it goes, audited as the deferred send.
    let wait = (LONDON_MORNING - w.clock_now()) / 1000;
    w.run_for(wait - 5).await;
    assert!(w.sent_to("london").is_empty(), "not a moment before");
    w.run_for(10).await;
    assert_eq!(w.sent_to("london").len(), 1);
    let trail = w.trail(INCIDENT).await;
    assert!(trail.iter().any(|e| e.stakeholder.as_str() == "london"
        && e.route == Route::Member
        && e.record.kind == AuditKind::DeferredSent
        && e.at.0 >= LONDON_MORNING));
}

#[tokio::test]
async fn a_p1_overrides_quiet_hours() {
    let w = world();
    start(&w, "P1").await;
    for who in ["london", "tokyo", "anyone"] {
        assert_eq!(w.sent_to(who).len(), 1, "{who}");
    }
    let trail = w.trail(INCIDENT).await;
    assert!(!trail.iter().any(|e| {
        e.record
            .note
            .as_deref()
            .is_some_and(|n| n.contains("quiet hours"))
    }));
}

#[test]
fn the_directory_file_gives_time_zone_and_quiet_hours_each_checked() {
    let good = "stakeholders:\n  - id: ann\n    email: ann@example.com\n    time_zone: Europe/London\n    quiet_hours: \"22:00-07:00\"\n";
    let file = muster::directory::parse_yaml(good).unwrap_or_else(|e| panic!("{e:?}"));
    let q = file.stakeholders[0]
        .quiet
        .clone()
        .unwrap_or_else(|| panic!("no quiet hours"));
    assert_eq!(q.time_zone, "Europe/London");
    assert_eq!(String::from(q.hours), "22:00-07:00");
    let csv = "id,email,time_zone,quiet_hours\nann,ann@example.com,Mars/Base,22:00-07:00\nbob,bob@example.com,,23:00-06:00\ncat,cat@example.com,Asia/Tokyo,late\n";
    let errors = muster::directory::parse_csv(csv).err().unwrap_or_default();
    let found: Vec<(String, String)> = errors
        .iter()
        .map(|e| (e.location.clone(), e.field.clone()))
        .collect();
    assert!(
        found.contains(&("row 1 (line 2)".into(), "time_zone".into())),
        "{found:?}"
    );
    assert!(
        found.contains(&("row 2 (line 3)".into(), "quiet_hours".into())),
        "{found:?}"
    );
    assert!(
        found.contains(&("row 3 (line 4)".into(), "quiet_hours".into())),
        "{found:?}"
    );
}

#[test]
fn the_policy_says_which_severities_override_quiet_hours() {
    let p = muster::policy::Policy::default();
    assert!(p.overrides_quiet(Severity::P1) && p.overrides_quiet(Severity::P2));
    assert!(!p.overrides_quiet(Severity::P3) && !p.overrides_quiet(Severity::P4));
    let p = muster::policy::Policy::from_toml("[quiet_hours]\noverride = [\"P1\"]\n")
        .unwrap_or_else(|e| panic!("{e:?}"));
    assert!(p.overrides_quiet(Severity::P1) && !p.overrides_quiet(Severity::P2));
    let errors =
        muster::policy::Policy::from_toml("[quiet_hours]\noverride = [\"P9\"]\nsoon = 1\n")
            .err()
            .unwrap_or_default();
    let paths: Vec<&str> = errors.iter().map(|e| e.path.as_str()).collect();
    assert!(
        paths.iter().any(|p| p.starts_with("quiet_hours.override")),
        "{paths:?}"
    );
    assert!(paths.contains(&"quiet_hours.soon"), "{paths:?}");
}
