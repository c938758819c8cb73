//! Incidents declared by the systems around a BCP programme, with the
//! deliveries their documentation shows (tests/fixtures/integrations/,
//! sources in its README): each source's own authentication, the group and
//! severity mapping, a repeat is a replay, a resolve closes, the same alert
//! after it was resolved is a new incident, and a bad delivery changes
//! nothing.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use base64::Engine;
use hmac::Mac;
use http_body_util::BodyExt;
use muster::api::integrations::Integrations;
use muster::api::v1;
use muster::domain::{IncidentId, IncidentStatus, Severity};
use muster::events::sns::{CertFetcher, SnsError, SnsMessage, SnsVerifier, string_to_sign};
use muster::ports::Deps;
use muster::secret::Secret;
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use tower::ServiceExt;

const TOPIC: &str = "arn:aws:sns:us-east-1:123456789012:muster-dev-alarms";

fn fixture_path(rel: &str) -> String {
    format!("{}/../tests/fixtures/{rel}", env!("CARGO_MANIFEST_DIR"))
}

fn fixture(rel: &str) -> Value {
    let path = fixture_path(rel);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// The SNS fixture certificate for any URL; counts subscription visits.
#[derive(Default)]
struct Certs {
    confirmed: AtomicUsize,
}

#[async_trait::async_trait]
impl CertFetcher for Certs {
    async fn fetch_pem(&self, _url: &str) -> Result<String, SnsError> {
        let path = fixture_path("sns/cert.pem");
        Ok(std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}")))
    }
    async fn confirm(&self, _url: &str) -> Result<(), SnsError> {
        self.confirmed.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

/// Signs an SNS message (SignatureVersion 2) with the fixture key.
fn sns_signed(mut m: Value) -> Value {
    m["SignatureVersion"] = json!("2");
    m["SigningCertURL"] = json!(
        "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-0000000000000000000000.pem"
    );
    let msg: SnsMessage = serde_json::from_value(m.clone()).unwrap_or_else(|e| panic!("{e}"));
    let text = string_to_sign(&msg).unwrap_or_else(|e| panic!("{e}"));
    let der = std::fs::read(fixture_path("sns/key.pk8.der")).unwrap_or_else(|e| panic!("{e}"));
    let key = ring::rsa::KeyPair::from_pkcs8(&der).unwrap_or_else(|e| panic!("{e}"));
    let mut sig = vec![0; key.public().modulus_len()];
    key.sign(
        &ring::signature::RSA_PKCS1_SHA256,
        &ring::rand::SystemRandom::new(),
        text.as_bytes(),
        &mut sig,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    m["Signature"] = json!(base64::engine::general_purpose::STANDARD.encode(sig));
    m
}

fn hmac_hex(secret: &str, body: &[u8]) -> String {
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes())
        .unwrap_or_else(|e| panic!("{e}"));
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

struct Env {
    deps: Deps,
    app: axum::Router,
    certs: Arc<Certs>,
}

fn env() -> Env {
    let drill = muster::drill::Drill::new(
        muster::drill::Scenario::from_toml(
            "[incident]\nincidentId = \"INC-1\"\nseverity = \"P1\"\nstakeholderGroupId = \"g\"\nmessageTemplate = \"m\"\n[group]\non_call_manager = \"b\"\n[[stakeholders]]\nid = \"a\"\nemail = \"a@example.com\"\n[[stakeholders]]\nid = \"b\"\nemail = \"b@example.com\"\nmember = false\n",
        )
        .unwrap_or_else(|e| panic!("{e:?}")),
        1,
    );
    let deps = drill.deps();
    let certs = Arc::new(Certs::default());
    let mut integrations = Integrations::from_lookup(|k| {
        Some(
            match k {
                "MUSTER_ALERTMANAGER_TOKEN" => "am-token-0123456789",
                "MUSTER_PAGERDUTY_SECRET" => "pd-secret-0123456789",
                "MUSTER_JIRA_SECRET" => "jira-secret-0123456789",
                "MUSTER_SERVICENOW_TOKEN" => "sn-token-0123456789",
                _ => return None,
            }
            .to_string(),
        )
    })
    .unwrap_or_else(|e| panic!("{e}"));
    integrations.cloudwatch = Some(Arc::new(SnsVerifier::new(
        [TOPIC.to_string()],
        certs.clone(),
    )));
    let app = muster::api::finish(v1::router(v1::ApiState {
        deps: deps.clone(),
        // The API's own HMAC does not apply to the sources.
        secret: Some(Secret::new("api-secret")),
        tokens: muster::api::sign::AckTokens::new(Secret::new("k"), 1000),
        integrations,
    }));
    Env { deps, app, certs }
}

impl Env {
    async fn post(
        &self,
        uri: &str,
        headers: &[(&str, String)],
        body: &[u8],
    ) -> (StatusCode, Value) {
        let mut req = Request::builder()
            .method("POST")
            .uri(uri)
            .header("content-type", "application/json");
        for (k, v) in headers {
            req = req.header(*k, v);
        }
        let resp = self
            .app
            .clone()
            .oneshot(
                req.body(Body::from(body.to_vec()))
                    .unwrap_or_else(|e| panic!("{e}")),
            )
            .await
            .unwrap_or_else(|e| match e {});
        let status = resp.status();
        let bytes = resp
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    async fn alertmanager(&self, body: &Value) -> (StatusCode, Value) {
        let b = serde_json::to_vec(body).unwrap_or_default();
        self.post(
            "/v1/integrations/alertmanager?group=g",
            &[("authorization", "Bearer am-token-0123456789".into())],
            &b,
        )
        .await
    }

    async fn incident(&self, id: &Value) -> muster::domain::Incident {
        let id =
            IncidentId::parse(id.as_str().unwrap_or_default()).unwrap_or_else(|e| panic!("{e}"));
        self.deps
            .incidents
            .get_incident(&id)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .unwrap_or_else(|| panic!("no incident {id}"))
    }

    async fn incidents(&self) -> usize {
        self.deps
            .incidents
            .recent_incidents(None, 1000)
            .await
            .map(|p| p.items.len())
            .unwrap_or_else(|e| panic!("{e}"))
    }
}

#[tokio::test]
async fn an_alertmanager_group_fires_once_resolves_and_fires_again_as_a_new_incident() {
    let e = env();
    let firing = fixture("integrations/alertmanager_firing.json");
    let (status, first) = e.alertmanager(&firing).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{first}");
    assert_eq!(first["result"], "TRIGGERED");
    let inc = e.incident(&first["incidentId"]).await;
    assert_eq!(
        inc.trigger.severity,
        Severity::P1,
        "label severity=critical"
    );
    assert_eq!(inc.trigger.stakeholder_group_id.as_str(), "g", "?group=");
    assert_eq!(
        inc.trigger.message_template.as_str(),
        "High 5xx error rate on api-1.example.com:9100",
        "the group's summary annotation"
    );
    // Alertmanager repeats a firing group every repeat_interval, with more
    // alerts as they join: the same incident.
    let mut repeat = firing.clone();
    let extra = repeat["alerts"][0].clone();
    if let Some(a) = repeat["alerts"].as_array_mut() {
        a.push(extra);
    }
    let (status, again) = e.alertmanager(&repeat).await;
    assert_eq!(
        (status, &again["result"]),
        (StatusCode::OK, &json!("REPLAYED"))
    );
    assert_eq!(again["incidentId"], first["incidentId"]);
    assert_eq!(e.incidents().await, 1);

    let (status, resolved) = e
        .alertmanager(&fixture("integrations/alertmanager_resolved.json"))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{resolved}");
    assert_eq!(resolved["result"], "CLOSING");
    assert_eq!(resolved["incidentId"], first["incidentId"]);
    assert_ne!(
        e.incident(&first["incidentId"]).await.status,
        IncidentStatus::Open
    );
    // Resolved twice: nothing left open.
    let (status, none) = e
        .alertmanager(&fixture("integrations/alertmanager_resolved.json"))
        .await;
    assert_eq!(
        (status, &none["result"]),
        (StatusCode::OK, &json!("NOTHING_OPEN"))
    );

    // The same group firing after it resolved is a new outage.
    let (status, second) = e.alertmanager(&firing).await;
    assert_eq!(
        (status, &second["result"]),
        (StatusCode::ACCEPTED, &json!("TRIGGERED"))
    );
    assert_ne!(second["incidentId"], first["incidentId"]);
    assert_eq!(
        e.incident(&second["incidentId"]).await.status,
        IncidentStatus::Open
    );
}

#[tokio::test]
async fn each_source_is_authenticated_its_own_way_and_a_refused_delivery_changes_nothing() {
    let e = env();
    let am =
        serde_json::to_vec(&fixture("integrations/alertmanager_firing.json")).unwrap_or_default();
    let pd = serde_json::to_vec(&fixture("integrations/pagerduty_incident_triggered.json"))
        .unwrap_or_default();
    let jira =
        serde_json::to_vec(&fixture("integrations/jira_issue_created.json")).unwrap_or_default();
    let sn =
        serde_json::to_vec(&fixture("integrations/servicenow_incident.json")).unwrap_or_default();
    type Delivery<'a> = (&'a str, Vec<(&'a str, String)>, &'a [u8]);
    let refused: Vec<Delivery> = vec![
        ("alertmanager", vec![], &am),
        (
            "alertmanager",
            vec![("authorization", "Bearer wrong".into())],
            &am,
        ),
        (
            "alertmanager",
            vec![("authorization", "am-token-0123456789".into())],
            &am,
        ),
        ("pagerduty", vec![], &pd),
        (
            "pagerduty",
            vec![(
                "x-pagerduty-signature",
                format!("v1={}", hmac_hex("other", &pd)),
            )],
            &pd,
        ),
        // Signed, then changed.
        (
            "pagerduty",
            vec![(
                "x-pagerduty-signature",
                format!("v1={}", hmac_hex("pd-secret-0123456789", &pd)),
            )],
            &jira,
        ),
        (
            "jira",
            vec![(
                "x-hub-signature",
                format!("sha256={}", hmac_hex("other", &jira)),
            )],
            &jira,
        ),
        (
            "jira",
            vec![("x-hub-signature", hmac_hex("jira-secret-0123456789", &jira))],
            &jira,
        ),
        (
            "servicenow",
            vec![("authorization", "Bearer am-token-0123456789".into())],
            &sn,
        ),
        // The API's own HMAC headers are not a source's credentials.
        (
            "servicenow",
            vec![("x-muster-signature", "v1=00".into())],
            &sn,
        ),
    ];
    for (source, headers, body) in &refused {
        let (status, err) = e
            .post(
                &format!("/v1/integrations/{source}?group=g&severity=P2"),
                headers,
                body,
            )
            .await;
        assert_eq!(
            status,
            StatusCode::UNAUTHORIZED,
            "{source} {headers:?}: {err}"
        );
    }
    // An SNS message whose signature does not hold.
    let mut forged = sns_signed(fixture("integrations/cloudwatch_alarm_sns.json"));
    forged["Message"] = json!(
        forged["Message"]
            .as_str()
            .unwrap_or_default()
            .replace("ALARM", "OK")
    );
    let (status, _) = e
        .post(
            "/v1/integrations/cloudwatch?group=g&severity=P1",
            &[],
            &serde_json::to_vec(&forged).unwrap_or_default(),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(e.incidents().await, 0, "nothing refused was declared");

    // Not a source, or one without a secret: not served.
    let (status, _) = e.post("/v1/integrations/opsgenie", &[], b"{}").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let bare = muster::api::finish(v1::router(v1::ApiState {
        deps: e.deps.clone(),
        secret: None,
        tokens: muster::api::sign::AckTokens::new(Secret::new("k"), 1000),
        integrations: Integrations::default(),
    }));
    let resp = bare
        .oneshot(
            Request::builder()
                .method("POST")
                .uri("/v1/integrations/alertmanager?group=g")
                .header("content-type", "application/json")
                .body(Body::from(am.clone()))
                .unwrap_or_else(|e| panic!("{e}")),
        )
        .await
        .unwrap_or_else(|e| match e {});
    assert_eq!(
        resp.status(),
        StatusCode::NOT_FOUND,
        "an unconfigured source is never open"
    );
    assert_eq!(e.incidents().await, 0);
}

#[tokio::test]
async fn pagerduty_jira_and_servicenow_map_their_priorities_and_close_on_resolve() {
    let e = env();
    // PagerDuty: priority P1 beats the URL's default.
    let pd = serde_json::to_vec(&fixture("integrations/pagerduty_incident_triggered.json"))
        .unwrap_or_default();
    let (status, got) = e
        .post(
            "/v1/integrations/pagerduty?group=g&severity=P3",
            &[(
                "x-pagerduty-signature",
                format!("v1=0000, v1={}", hmac_hex("pd-secret-0123456789", &pd)),
            )],
            &pd,
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{got}");
    let inc = e.incident(&got["incidentId"]).await;
    assert_eq!(inc.trigger.severity, Severity::P1);
    assert!(
        inc.trigger
            .message_template
            .as_str()
            .starts_with("[PagerDuty #42]"),
        "{}",
        inc.trigger.message_template.as_str()
    );
    let pd_done = serde_json::to_vec(&fixture("integrations/pagerduty_incident_resolved.json"))
        .unwrap_or_default();
    let (status, closed) = e
        .post(
            "/v1/integrations/pagerduty?group=g",
            &[(
                "x-pagerduty-signature",
                format!("v1={}", hmac_hex("pd-secret-0123456789", &pd_done)),
            )],
            &pd_done,
        )
        .await;
    assert_eq!(
        (status, &closed["result"]),
        (StatusCode::ACCEPTED, &json!("CLOSING")),
        "{closed}"
    );
    assert_eq!(closed["incidentId"], got["incidentId"]);

    // Jira: priority Highest; another webhook event is acknowledged, ignored.
    let jira_body = fixture("integrations/jira_issue_created.json");
    let jira = serde_json::to_vec(&jira_body).unwrap_or_default();
    let (status, got) = e
        .post(
            "/v1/integrations/jira?group=g",
            &[(
                "x-hub-signature",
                format!("sha256={}", hmac_hex("jira-secret-0123456789", &jira)),
            )],
            &jira,
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{got}");
    let inc = e.incident(&got["incidentId"]).await;
    let want = match jira_body["issue"]["fields"]["priority"]["name"].as_str() {
        Some("Highest") => Severity::P1,
        Some("High") => Severity::P2,
        other => panic!("fixture priority {other:?}"),
    };
    assert_eq!(inc.trigger.severity, want);
    assert!(
        inc.trigger
            .message_template
            .as_str()
            .starts_with("[OPS-42]")
    );
    let mut updated = jira_body.clone();
    updated["webhookEvent"] = json!("jira:issue_updated");
    let upd = serde_json::to_vec(&updated).unwrap_or_default();
    let (status, ignored) = e
        .post(
            "/v1/integrations/jira?group=g",
            &[(
                "x-hub-signature",
                format!("sha256={}", hmac_hex("jira-secret-0123456789", &upd)),
            )],
            &upd,
        )
        .await;
    assert_eq!(
        (status, &ignored["result"]),
        (StatusCode::OK, &json!("IGNORED"))
    );

    // ServiceNow: priority 1, then state 6 (Resolved) closes it.
    let sn_body = fixture("integrations/servicenow_incident.json");
    let auth = [("authorization", "Bearer sn-token-0123456789".to_string())];
    let (status, got) = e
        .post(
            "/v1/integrations/servicenow?group=g",
            &auth,
            &serde_json::to_vec(&sn_body).unwrap_or_default(),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{got}");
    assert_eq!(
        e.incident(&got["incidentId"]).await.trigger.severity,
        Severity::P1
    );
    let mut resolved = sn_body.clone();
    resolved["state"] = json!("6");
    let (status, closed) = e
        .post(
            "/v1/integrations/servicenow?group=g",
            &auth,
            &serde_json::to_vec(&resolved).unwrap_or_default(),
        )
        .await;
    assert_eq!(
        (status, &closed["incidentId"]),
        (StatusCode::ACCEPTED, &got["incidentId"])
    );
    assert_eq!(e.incidents().await, 3);
}

#[tokio::test]
async fn a_cloudwatch_alarm_through_sns_confirms_its_subscription_triggers_and_closes_on_ok() {
    let e = env();
    let confirmation = sns_signed(json!({
        "Type": "SubscriptionConfirmation",
        "MessageId": "165545c9-2a5c-472c-8df2-7ff2be2b3b1b",
        "Token": "2336412f37fb687f5d51e6e2425dacbba1a2bb1c1e7e2b4b7c3a0d8f1e6c5b4a",
        "TopicArn": TOPIC,
        "Message": "You have chosen to subscribe to the topic. To confirm the subscription, visit the SubscribeURL included in this message.",
        "SubscribeURL": format!("https://sns.us-east-1.amazonaws.com/?Action=ConfirmSubscription&TopicArn={TOPIC}&Token=2336412f"),
        "Timestamp": "2026-11-27T20:00:00.000Z",
        "Signature": "",
    }));
    let (status, got) = e
        .post(
            "/v1/integrations/cloudwatch",
            &[],
            &serde_json::to_vec(&confirmation).unwrap_or_default(),
        )
        .await;
    assert_eq!(
        (status, &got["result"]),
        (StatusCode::OK, &json!("SUBSCRIBED")),
        "{got}"
    );
    assert_eq!(e.certs.confirmed.load(Ordering::SeqCst), 1);

    // SNS posts its JSON as text/plain.
    let alarm = serde_json::to_vec(&sns_signed(fixture(
        "integrations/cloudwatch_alarm_sns.json",
    )))
    .unwrap_or_default();
    let (status, err) = e
        .post(
            "/v1/integrations/cloudwatch?group=g",
            &[("content-type", "text/plain; charset=UTF-8".into())],
            &alarm,
        )
        .await;
    assert_eq!(
        status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "an alarm has no severity of its own"
    );
    assert_eq!(err["errors"][0]["field"], "severity", "{err}");
    let (status, got) = e
        .post(
            "/v1/integrations/cloudwatch?group=g&severity=P1",
            &[],
            &alarm,
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{got}");
    let inc = e.incident(&got["incidentId"]).await;
    assert!(
        inc.trigger
            .message_template
            .as_str()
            .starts_with("muster-api-5xx-rate: Threshold Crossed")
    );
    // SNS delivers at least once: the same notification again is a replay.
    let (status, again) = e
        .post(
            "/v1/integrations/cloudwatch?group=g&severity=P1",
            &[],
            &alarm,
        )
        .await;
    assert_eq!(
        (status, &again["incidentId"]),
        (StatusCode::OK, &got["incidentId"])
    );
    let ok = serde_json::to_vec(&sns_signed(fixture("integrations/cloudwatch_ok_sns.json")))
        .unwrap_or_default();
    let (status, closed) = e
        .post("/v1/integrations/cloudwatch?group=g&severity=P1", &[], &ok)
        .await;
    assert_eq!(
        (status, &closed["incidentId"]),
        (StatusCode::ACCEPTED, &got["incidentId"]),
        "{closed}"
    );
}

#[tokio::test]
async fn a_delivery_without_what_muster_needs_is_refused_naming_it() {
    let e = env();
    let am =
        serde_json::to_vec(&fixture("integrations/alertmanager_firing.json")).unwrap_or_default();
    let auth = [("authorization", "Bearer am-token-0123456789".to_string())];
    for (uri, status, field) in [
        (
            "/v1/integrations/alertmanager",
            StatusCode::UNPROCESSABLE_ENTITY,
            "group",
        ),
        (
            "/v1/integrations/alertmanager?group=no%20spaces",
            StatusCode::UNPROCESSABLE_ENTITY,
            "group",
        ),
        (
            "/v1/integrations/alertmanager?group=g&severityMap=critical",
            StatusCode::UNPROCESSABLE_ENTITY,
            "severityMap",
        ),
        (
            "/v1/integrations/alertmanager?group=g&colour=red",
            StatusCode::BAD_REQUEST,
            "",
        ),
    ] {
        let (got, err) = e.post(uri, &auth, &am).await;
        assert_eq!(got, status, "{uri}: {err}");
        if !field.is_empty() {
            assert_eq!(err["errors"][0]["field"], field, "{uri}: {err}");
        }
    }
    let (got, _) = e
        .post("/v1/integrations/alertmanager?group=g", &auth, b"{not json")
        .await;
    assert_eq!(got, StatusCode::BAD_REQUEST);
    let (got, err) = e
        .post(
            "/v1/integrations/alertmanager?group=g",
            &auth,
            br#"{"version": "4", "status": "firing"}"#,
        )
        .await;
    assert_eq!(
        (got, &err["errors"][0]["field"]),
        (StatusCode::UNPROCESSABLE_ENTITY, &json!("groupKey"))
    );
    assert_eq!(e.incidents().await, 0);
    // The URL's severity table replaces the default one.
    let (got, ok) = e
        .post(
            "/v1/integrations/alertmanager?group=g&severityMap=critical:P2",
            &auth,
            &am,
        )
        .await;
    assert_eq!(got, StatusCode::ACCEPTED, "{ok}");
    assert_eq!(
        e.incident(&ok["incidentId"]).await.trigger.severity,
        Severity::P2
    );
}
