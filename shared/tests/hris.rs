//! Live contact validation against a fake HRIS: a real HTTP server on
//! loopback, speaking SCIM's `GET /Users/{id}` as the HTTP contact lookup
//! expects, that answers with changed contacts, with a phone only, with
//! the directory's own, does not know someone, fails, or never answers.
//! (The one HRIS fake: the engine's use of a lookup is tested through the
//! real HTTP adapter, not a stand-in for the port.)

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use muster::adapters::http_lookup::HttpContactLookup;
use muster::adapters::memory::{
    Agenda, Item, MemoryDirectory, MemoryStore, SeededIds, VirtualClock, embedded,
};
use muster::app;
use muster::domain::*;
use muster::policy::Policy;
use muster::ports::*;
use muster::secret::Secret;
use serde_json::json;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

#[derive(Default)]
struct Hris {
    in_flight: AtomicUsize,
    peak: AtomicUsize,
    never: tokio::sync::Notify,
}

async fn user(State(h): State<Arc<Hris>>, headers: HeaderMap, Path(id): Path<String>) -> Response {
    if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some("Bearer hris-token") {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    let now = h.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    h.peak.fetch_max(now, Ordering::SeqCst);
    // Counts down when the request ends, including when the client gives up.
    struct Done(Arc<Hris>);
    impl Drop for Done {
        fn drop(&mut self) {
            self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
        }
    }
    let _done = Done(h.clone());
    match id.split('-').next().unwrap_or_default() {
        "changed" => Json(json!({"id": id, "phoneNumbers": [{"value": "+44 20 7946 0999", "type": "mobile"}], "emails": [{"value": "new@example.com", "primary": true}]})).into_response(),
        "phoneonly" => Json(json!({"id": id, "phoneNumbers": [{"value": "+1 212 555 0199", "type": "mobile"}]})).into_response(),
        "same" => Json(json!({"id": id, "phoneNumbers": [{"value": "+12125550100", "type": "work"}], "emails": [{"value": format!("{id}@example.com")}]})).into_response(),
        "unknown" => StatusCode::NOT_FOUND.into_response(),
        "broken" => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
        _ => {
            // Never answers: the client's timeout ends the wait.
            h.never.notified().await;
            StatusCode::OK.into_response()
        }
    }
}

async fn serve() -> (String, Arc<Hris>) {
    let hris = Arc::new(Hris::default());
    let app = Router::new()
        .route("/scim/v2/Users/{id}", get(user))
        .with_state(hris.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let addr = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}/scim/v2"), hris)
}

fn id(s: &str) -> StakeholderId {
    StakeholderId::parse(s).unwrap_or_else(|e| panic!("{e}"))
}

#[tokio::test]
async fn each_answer_of_the_source_is_told_apart() {
    let (base, _) = serve().await;
    let lookup = HttpContactLookup::new(
        &base,
        Some(Secret::new("hris-token")),
        Duration::from_millis(300),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let changed = lookup.lookup(&id("changed-1")).await;
    let phone = changed
        .as_ref()
        .ok()
        .and_then(|c| c.as_ref())
        .and_then(|c| c.phone.as_ref())
        .map(|p| p.expose().to_string());
    assert_eq!(phone.as_deref(), Some("+442079460999"));
    assert_eq!(lookup.lookup(&id("unknown-1")).await, Ok(None));
    assert!(matches!(
        lookup.lookup(&id("broken-1")).await,
        Err(LookupError::Unavailable(_))
    ));
    assert_eq!(
        lookup.lookup(&id("slow-1")).await,
        Err(LookupError::Timeout)
    );
    let unauthorised = HttpContactLookup::new(
        &base,
        Some(Secret::new("wrong")),
        Duration::from_millis(300),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(matches!(
        unauthorised.lookup(&id("changed-1")).await,
        Err(LookupError::Unavailable(_))
    ));
    let nobody = HttpContactLookup::new(
        "http://127.0.0.1:9/scim/v2",
        None,
        Duration::from_millis(300),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        nobody.lookup(&id("changed-1")).await.is_err(),
        "connection refused is unavailable"
    );
}

#[tokio::test]
async fn cascades_start_with_live_contacts_or_flagged_directory_copies() {
    let (base, hris) = serve().await;
    let lookup = HttpContactLookup::new(
        &base,
        Some(Secret::new("hris-token")),
        Duration::from_millis(300),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let names: Vec<String> = ["changed", "same", "unknown", "broken"]
        .iter()
        .map(|k| format!("{k}-1"))
        .chain((1..=10).map(|n| format!("phoneonly-{n}")))
        .chain((1..=20).map(|n| format!("slow-{n}")))
        .collect();
    let people: Vec<Stakeholder> = names
        .iter()
        .map(|n| {
            let contacts = ContactMethods {
                phone: PhoneNumber::parse("+12125550100").ok(),
                email: EmailAddress::parse(&format!("{n}@example.com")).ok(),
                ..Default::default()
            };
            Stakeholder::new(id(n), n, Tier::TWO, contacts)
        })
        .collect();
    let group = Group {
        id: GroupId::parse("g").unwrap_or_else(|e| panic!("{e}")),
        name: "G".into(),
        members: people.iter().map(|p| p.id.clone()).collect(),
        on_call_manager: None,
        escalation_channels: vec![],
        idp: None,
    };
    let clock = VirtualClock::new(Ts::from_secs(1_700_000_000));
    let agenda: Arc<Agenda<()>> = Agenda::new(clock.clone());
    let store = Arc::new(MemoryStore::new());
    /// Accepts everything, keeping who was sent what where.
    #[derive(Default)]
    struct Accept(std::sync::Mutex<Vec<(String, Channel, String)>>);
    #[async_trait::async_trait]
    impl ChannelSender for Accept {
        fn endpoint(&self) -> &str {
            "any"
        }
        async fn send(&self, m: &OutboundMessage) -> Result<Accepted, SendError> {
            let mut sent = self.0.lock().unwrap_or_else(|e| e.into_inner());
            sent.push((
                m.key.stakeholder.as_str().to_string(),
                m.channel,
                m.to.expose().to_string(),
            ));
            Ok(Accepted {
                provider_message_id: format!("m{}", sent.len()),
            })
        }
    }
    let accept = Arc::new(Accept::default());
    let sender: Arc<dyn ChannelSender> = accept.clone();
    let policy = Arc::new(Policy::default());
    let directory = Arc::new(MemoryDirectory::new(vec![group], people));
    let senders = Senders {
        voice: sender.clone(),
        sms: sender.clone(),
        email: sender.clone(),
        push: sender,
    };
    let deps = Deps {
        contacts: Some(Arc::new(lookup)),
        ..embedded(
            policy,
            &agenda,
            store.clone(),
            directory,
            senders,
            clock.clone(),
            Arc::new(SeededIds::new(1)),
        )
    };
    let t = Trigger::from_json(&json!({"incidentId": "INC-H", "severity": "P1", "stakeholderGroupId": "g", "messageTemplate": "Outage"})).unwrap_or_else(|e| panic!("{e:?}"));
    app::trigger(&deps, t)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let Some((_, Item::Job(expand))) = agenda.pop() else {
        panic!("no expansion job")
    };
    app::dispatch(&deps, expand)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    // The sends the expansion queued, through the embedded driver on the
    // virtual clock (everyone shares one directory number, which is texted
    // at most once a second), until everyone has had a first message.
    let contacted = |sent: &[(String, Channel, String)]| {
        names
            .iter()
            .all(|n| sent.iter().any(|(who, _, _)| who == n))
    };
    for _ in 0..10_000 {
        if contacted(&accept.0.lock().map(|g| g.clone()).unwrap_or_default()) {
            break;
        }
        let Some((at, item)) = agenda.pop() else {
            break;
        };
        if at > clock.now() {
            clock.set(at);
        }
        if let muster::embedded::Ran::Handled(r) = muster::embedded::run(&deps, item).await {
            r.unwrap_or_else(|e| panic!("{e}"));
        }
    }

    let peak = hris.peak.load(Ordering::SeqCst);
    assert!(
        peak <= deps.policy.lookup_max_in_flight as usize && peak > 1,
        "lookups in flight at once: {peak}"
    );
    let view = app::status(
        &deps,
        &IncidentId::parse("INC-H").unwrap_or_else(|e| panic!("{e}")),
        &app::StatusQuery::default(),
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let review: Vec<&str> = view
        .stakeholders
        .iter()
        .filter(|s| s.needs_review)
        .map(|s| s.stakeholder.as_str())
        .collect();
    assert_eq!(
        view.needs_review, 22,
        "unknown, broken and 20 that never answered: {review:?}"
    );
    // Every cascade runs, flagged or not: each person's first message went
    // out, to the live number where the source had one.
    let sent = accept.0.lock().map(|g| g.clone()).unwrap_or_default();
    for n in &names {
        let first = sent.iter().find(|(who, _, _)| who == n);
        assert!(first.is_some(), "{n} was contacted");
        if n.starts_with("phoneonly") {
            assert_eq!(first.map(|f| f.2.as_str()), Some("+12125550199"), "{n}");
        }
    }
    let recs = store.all_cascades();
    let get = |n: &str| {
        recs.iter()
            .find(|r| r.cascade.key.stakeholder.as_str() == n)
            .unwrap_or_else(|| panic!("{n}"))
    };
    assert_eq!(
        get("changed-1").contacts.phone.as_ref().map(|p| p.expose()),
        Some("+442079460999")
    );
    assert!(!get("changed-1").needs_review && !get("same-1").needs_review);
    // The source knows a phone only: the email the directory had is not
    // used, so the plan is voice and SMS.
    let phone_only = get("phoneonly-4");
    assert!(!phone_only.needs_review && phone_only.contacts.email.is_none());
    assert_eq!(
        phone_only.cascade.plan.as_slice(),
        [Channel::Voice, Channel::Sms]
    );
    assert_eq!(
        get("slow-7").contacts.phone.as_ref().map(|p| p.expose()),
        Some("+12125550100"),
        "directory copy used"
    );
    let trail = deps
        .cascades
        .audit_trail(&IncidentId::parse("INC-H").unwrap_or_else(|e| panic!("{e}")))
        .await
        .unwrap_or_default();
    let check = |n: &str| {
        trail
            .iter()
            .find(|e| e.stakeholder.as_str() == n && e.seq == 0)
            .and_then(|e| e.contact_check)
    };
    assert_eq!(
        check("changed-1"),
        Some(muster::domain::ContactCheck::Changed)
    );
    assert_eq!(
        check("same-1"),
        Some(muster::domain::ContactCheck::Validated)
    );
    assert_eq!(
        check("phoneonly-9"),
        Some(muster::domain::ContactCheck::Changed)
    );
    assert_eq!(
        check("unknown-1"),
        Some(muster::domain::ContactCheck::Unknown)
    );
    assert_eq!(
        check("broken-1"),
        Some(muster::domain::ContactCheck::Unavailable)
    );
    assert_eq!(
        check("slow-3"),
        Some(muster::domain::ContactCheck::Unavailable)
    );
}
