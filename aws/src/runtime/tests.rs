//! The handlers with recorded AWS event shapes (tests/fixtures/{apigw,sqs,
//! scheduler,chime}) on the memory adapters, in-process.
#![allow(clippy::unwrap_used)]

use super::config::{Config, Function, VARIABLES};
use super::handlers::{
    Dispatch, HandlerError, Receipt, Shape, Tick, Trigger, caller_from_jwt, shape, stop_at,
};
use async_trait::async_trait;
use muster::adapters::memory::{
    Agenda, Item, MemoryDirectory, MemoryLimiter, MemoryQueue, MemoryStore, MemoryTimers,
    SeededIds, VirtualClock,
};
use muster::api::sign::{SignedRequest, sign_request};
use muster::domain::*;
use muster::ports::*;
use muster::secret::Secret;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

const ACK_SECRET: &str = "ack-secret-for-tests-0001";
const WEBHOOK_SECRET: &str = "webhook-secret-for-tests-0001";
/// 2024-05-20T14:32:00Z, the fixtures' time.
const T0: Ts = Ts(1_716_215_520_000);

fn fixture(path: &str) -> Value {
    let full = format!("{}/../tests/fixtures/{path}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(&full).unwrap()).unwrap()
}

fn config(f: Function) -> Config {
    let env = env_of();
    Config::from_lookup(f, |n| env.get(n).cloned()).unwrap()
}

/// A complete environment for the functions (optional variables empty).
fn env_of() -> HashMap<&'static str, String> {
    let mut env: HashMap<&str, String> = HashMap::new();
    for (name, _) in VARIABLES {
        env.insert(name, format!("x-{}", name.to_ascii_lowercase()));
    }
    env.insert("MUSTER_DISPATCH_QUEUE_URL", "http://localhost/q/d".into());
    env.insert("MUSTER_PRIORITY_QUEUE_URL", "http://localhost/q/p".into());
    env.insert("MUSTER_TIMER_QUEUE_URL", "http://localhost/q/t".into());
    env.insert("MUSTER_TIMER_QUEUE_ARN", "arn:aws:sqs:us-east-1:1:t".into());
    env.insert("MUSTER_SCHEDULER_ROLE_ARN", "arn:aws:iam::1:role/s".into());
    env.insert("MUSTER_API_BASE_URL", "https://api.example.net".into());
    env.insert("MUSTER_ACK_SECRET", ACK_SECRET.into());
    env.insert("MUSTER_WEBHOOK_SECRET", WEBHOOK_SECRET.into());
    env.insert("MUSTER_SES_FROM", "alerts@example.net".into());
    env.insert(
        "MUSTER_SNS_TOPIC_ARNS",
        "arn:aws:sns:us-east-1:1:ses, arn:aws:sns:us-east-1:123456789012:muster-dev-ses-events"
            .into(),
    );
    env.insert("MUSTER_CONTACT_LOOKUP_URL", String::new());
    env.insert("MUSTER_CONTACT_LOOKUP_TOKEN", String::new());
    env.insert("MUSTER_CHIME_SMA_ID", String::new());
    env.insert("MUSTER_CHIME_FROM_NUMBER", String::new());
    env.insert("MUSTER_SCIM_TOKEN", String::new());
    env.insert("MUSTER_PUSH_ENABLED", String::new());
    env.insert("MUSTER_AUDIT_RETENTION_DAYS", String::new());
    env.insert("MUSTER_POLICY", String::new());
    env.insert("MUSTER_POLICY_FILE", String::new());
    env.insert("MUSTER_INTEGRATION_SECRETS", String::new());
    env.insert("MUSTER_CLOUDWATCH_TOPIC_ARNS", String::new());
    for board in [
        "MUSTER_BOARD_SIGN_IN_URL",
        "MUSTER_BOARD_CLIENT_ID",
        "MUSTER_BOARD_URL",
    ] {
        env.insert(board, String::new());
    }
    env.insert("MUSTER_SMS_ORIGINATION", "+12065550152".into());
    env.insert("MUSTER_SMS_CONFIGURATION_SET", "muster-dev".into());
    env
}

#[derive(Default)]
struct Carrier(Mutex<Vec<OutboundMessage>>);

struct Rec(Arc<Carrier>, &'static str);

#[async_trait]
impl ChannelSender for Rec {
    fn endpoint(&self) -> &str {
        self.1
    }
    async fn send(&self, msg: &OutboundMessage) -> Result<Accepted, SendError> {
        let mut g = self.0.0.lock().unwrap();
        g.push(msg.clone());
        Ok(Accepted {
            provider_message_id: format!("gateway:gw-{:06}", 122 + g.len()),
        })
    }
}

struct Env {
    deps: Deps,
    clock: Arc<VirtualClock>,
    agenda: Arc<Agenda<()>>,
    carrier: Arc<Carrier>,
}

fn env() -> Env {
    let clock = VirtualClock::new(T0);
    let agenda: Arc<Agenda<()>> = Agenda::new(clock.clone());
    let person = Stakeholder {
        id: StakeholderId::parse("ops-lead-amer").unwrap(),
        name: "Ops Lead Americas".into(),
        tier: Tier::ONE,
        contacts: ContactMethods {
            sms: PhoneNumber::parse("+12125550101").ok(),
            ..Default::default()
        },
        preferences: vec![Channel::Sms],
        manager: None,
        locale: None,
        quiet: None,
        idp: None,
        active: true,
    };
    let group = Group {
        id: GroupId::parse("ops-leads").unwrap(),
        name: "Ops leads".into(),
        members: vec![person.id.clone()],
        on_call_manager: None,
        escalation_channels: vec![],
        idp: None,
    };
    let policy = Arc::new(muster::policy::Policy::default());
    let store = Arc::new(MemoryStore::new());
    let carrier = Arc::new(Carrier::default());
    let directory = Arc::new(MemoryDirectory::new(vec![group], vec![person]));
    let deps = Deps {
        policy: policy.clone(),
        incidents: store.clone(),
        cascades: store.clone(),
        ledger: store.clone(),
        notes: None,
        siem: Vec::new(),
        numbers: store,
        admin: directory.clone(),
        directory,
        queue: Arc::new(MemoryQueue(agenda.clone())),
        timers: Arc::new(MemoryTimers(agenda.clone())),
        senders: Senders {
            voice: Arc::new(Rec(carrier.clone(), "voice")),
            sms: Arc::new(Rec(carrier.clone(), "sms")),
            email: Arc::new(Rec(carrier.clone(), "email")),
            push: Arc::new(Rec(carrier.clone(), "push")),
        },
        limiter: Arc::new(MemoryLimiter::new(policy)),
        clock: clock.clone(),
        ids: Arc::new(SeededIds::new(7)),
        observer: Arc::new(NoObserver),
        contacts: None,
        ack_links: None,
        vault: None,
        sealing: None,
    };
    Env {
        deps,
        clock,
        agenda,
        carrier,
    }
}

fn ctx() -> super::Context {
    super::Context::default()
}

/// Runs the queued jobs due by now through the dispatch handler, as SQS
/// batches of one.
async fn drain_jobs(e: &Env, dispatch: &Dispatch) -> usize {
    let mut n = 0;
    while let Some((_, item)) = e.agenda.pop_due(e.clock.now()) {
        match item {
            Item::Job(job) => {
                let mut batch = fixture("sqs/dispatch-batch.json");
                batch["Records"][0]["body"] = json!(serde_json::to_string(&job).unwrap());
                batch["Records"].as_array_mut().unwrap().truncate(1);
                let out = dispatch.handle(batch, ctx()).await.unwrap();
                assert_eq!(out["batchItemFailures"], json!([]), "{job:?}");
                n += 1;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    n
}

#[test]
fn every_fixture_has_the_shape_its_function_expects() {
    for (path, want) in [
        ("apigw/trigger-post-incident-jwt.json", Shape::Http),
        ("apigw/trigger-get-audit-jwt.json", Shape::Http),
        ("apigw/receipt-webhook-signed.json", Shape::Http),
        ("sqs/dispatch-batch.json", Shape::Sqs),
        ("sqs/tick-batch.json", Shape::Sqs),
        ("scheduler/sweep.json", Shape::Sweep),
        ("chime/call_answered.json", Shape::ChimeSma),
        ("chime/digits_1.json", Shape::ChimeSma),
    ] {
        assert_eq!(shape(&fixture(path)), want, "{path}");
    }
    let sns = json!({"Records": [{"EventSource": "aws:sns", "EventVersion": "1.0", "EventSubscriptionArn": "arn:aws:sns:us-east-1:1:t:s", "Sns": {"Type": "Notification"}}]});
    assert_eq!(shape(&sns), Shape::Sns);
    let logs = json!({"awslogs": {"data": "H4sIAAAAAAAAAHWPwQqCQBCGX0Xm7EFtK+smZBEUgXoLCdMhFtKV3akI8d0bLYmibvPPN3wz00CJxmQnTO41whwWQRIctmEcB6sQbFC3CjW3XW8kxpOpP+OC22d1Wml1qZkQGtoMsScxaczKN3plG8zlaHIta5KqWsozoTYw3/djzwhpLwivWFGHGpAFe7DL68JlBUk+l7KSN7tCOEJ4M3/qOI49vMHj+zCKdlFqLaU2ZHV2a4Ct/an0/ivdX8oYc1UVX860fQDQiMdxRQEAAA=="}});
    assert_eq!(shape(&logs), Shape::CloudWatchLogs);
    let stream = json!({"Records": [{"eventID": "1", "eventName": "INSERT", "eventSource": "aws:dynamodb", "dynamodb": {}}]});
    assert_eq!(shape(&stream), Shape::DynamoDbStream);
    assert_eq!(shape(&json!({"hello": "world"})), Shape::Unknown);
}

#[test]
fn jwt_claims_and_scopes_give_roles() {
    let claims: HashMap<String, String> = [
        ("sub".to_string(), "co-1".to_string()),
        (
            "cognito:groups".to_string(),
            "[ComplianceOfficer Auditors]".to_string(),
        ),
    ]
    .into();
    let c = caller_from_jwt(&claims, &["muster/BCPAdministrator".to_string()]);
    assert_eq!(c.subject, "co-1");
    assert_eq!(
        c.roles,
        ["Auditors", "BCPAdministrator", "ComplianceOfficer"]
    );
    assert!(caller_from_jwt(&HashMap::new(), &[]).roles.is_empty());
}

#[test]
fn the_sweep_stops_a_margin_before_the_lambda_deadline() {
    let mut c = ctx();
    assert_eq!(stop_at(&c, 10_000), None);
    c.deadline = 1_716_215_580_000;
    assert_eq!(stop_at(&c, 10_000), Some(Ts(1_716_215_570_000)));
}

#[tokio::test]
async fn trigger_serves_a_jwt_caller_and_dispatch_sends_through_sqs_batches() {
    let e = env();
    let trigger = Trigger::new(&config(Function::Trigger), e.deps.clone(), certs());
    let dispatch = Dispatch::new(e.deps.clone());
    let out = trigger
        .handle(fixture("apigw/trigger-post-incident-jwt.json"), ctx())
        .await
        .unwrap();
    assert_eq!(out["statusCode"], 202, "{out}");
    assert_eq!(out["headers"]["content-type"], "application/json");
    assert_eq!(out["headers"]["location"], "/v1/incidents/INC-2024-0892");
    let body: Value = serde_json::from_str(out["body"].as_str().unwrap()).unwrap();
    assert_eq!(body["incidentId"], "INC-2024-0892");
    assert_eq!(body["cascades"], 1);
    // Expansion, then the first send.
    assert_eq!(drain_jobs(&e, &dispatch).await, 2);
    let sent = e.carrier.0.lock().unwrap().clone();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].channel, Channel::Sms);
    assert_eq!(sent[0].key.stakeholder.as_str(), "ops-lead-amer");
    // The same trigger again is a replay.
    let again = trigger
        .handle(fixture("apigw/trigger-post-incident-jwt.json"), ctx())
        .await
        .unwrap();
    assert_eq!(again["statusCode"], 202);
    assert_eq!(again["headers"]["idempotent-replayed"], "true");
    assert_eq!(drain_jobs(&e, &dispatch).await, 0);
}

#[tokio::test]
async fn trigger_refuses_an_unsigned_request_without_an_authorizer() {
    let e = env();
    let trigger = Trigger::new(&config(Function::Trigger), e.deps.clone(), certs());
    let mut ev = fixture("apigw/trigger-post-incident-jwt.json");
    ev["requestContext"]
        .as_object_mut()
        .unwrap()
        .remove("authorizer");
    let out = trigger.handle(ev, ctx()).await.unwrap();
    assert_eq!(out["statusCode"], 401, "{out}");
    assert_eq!(out["headers"]["content-type"], "application/problem+json");
}

/// A SCIM request as API Gateway delivers it (the `/scim/v2/{proxy+}` route
/// has no JWT authorizer: the IdP's bearer token is checked by the function).
fn scim_request(method: &str, path: &str, token: &str, body: Option<Value>) -> Value {
    let mut ev = fixture("apigw/trigger-post-incident-jwt.json");
    ev["routeKey"] = json!(format!("{method} /scim/v2/{{proxy+}}"));
    ev["rawPath"] = json!(path);
    ev["requestContext"]["http"]["method"] = json!(method);
    ev["requestContext"]["http"]["path"] = json!(path);
    ev["requestContext"]["routeKey"] = json!(format!("{method} /scim/v2/{{proxy+}}"));
    ev["requestContext"]
        .as_object_mut()
        .unwrap()
        .remove("authorizer");
    ev["headers"]["authorization"] = json!(format!("Bearer {token}"));
    ev["headers"]["content-type"] = json!("application/scim+json");
    match body {
        Some(b) => {
            let text = b.to_string();
            ev["headers"]["content-length"] = json!(text.len().to_string());
            ev["body"] = json!(text);
        }
        None => {
            ev.as_object_mut().unwrap().remove("body");
            ev["headers"]
                .as_object_mut()
                .unwrap()
                .remove("content-length");
        }
    }
    ev
}

#[tokio::test]
async fn trigger_serves_scim_provisioning_with_its_bearer_token() {
    let e = env();
    let directory = Arc::new(MemoryDirectory::new(vec![], vec![]));
    let deps = Deps {
        admin: directory.clone(),
        directory,
        ..e.deps.clone()
    };
    let mut env_vars = config(Function::Trigger);
    env_vars.scim_token = Some(Secret::new("scim-token-for-tests-0001"));
    let trigger = Trigger::new(&env_vars, deps.clone(), certs());
    let user = json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
        "userName": "ana@example.com",
        "externalId": "00u1",
        "name": {"formatted": "Ana Silva"},
        "active": true,
        "phoneNumbers": [{"value": "+12125550188", "type": "mobile", "primary": true}],
        "emails": [{"value": "ana@example.com", "type": "work", "primary": true}]
    });
    let created = trigger
        .handle(
            scim_request(
                "POST",
                "/scim/v2/Users",
                "scim-token-for-tests-0001",
                Some(user),
            ),
            ctx(),
        )
        .await
        .unwrap();
    assert_eq!(created["statusCode"], 201, "{created}");
    let people = deps.admin.list_stakeholders().await.unwrap();
    assert_eq!(people.len(), 1);
    let c = &people[0].contacts;
    let numbers: Vec<&str> = [c.phone.as_ref(), c.sms.as_ref()]
        .into_iter()
        .flatten()
        .map(|p| p.expose())
        .collect();
    assert!(
        numbers.contains(&"+12125550188"),
        "the SCIM phone number is the person's"
    );
    // A wrong token changes nothing.
    let refused = trigger
        .handle(
            scim_request("GET", "/scim/v2/Users", "wrong-token-000000000", None),
            ctx(),
        )
        .await
        .unwrap();
    assert_eq!(refused["statusCode"], 401, "{refused}");
}

#[tokio::test]
async fn audit_roles_come_from_the_authorizer_never_from_a_header() {
    let e = env();
    let trigger = Trigger::new(&config(Function::Trigger), e.deps.clone(), certs());
    trigger
        .handle(fixture("apigw/trigger-post-incident-jwt.json"), ctx())
        .await
        .unwrap();
    let ok = trigger
        .handle(fixture("apigw/trigger-get-audit-jwt.json"), ctx())
        .await
        .unwrap();
    assert_eq!(ok["statusCode"], 200, "{ok}");
    // Same request, claims without an audit role: the X-Muster-Roles header
    // (BCPAdministrator) it still carries counts for nothing.
    let mut ev = fixture("apigw/trigger-get-audit-jwt.json");
    ev["requestContext"]["authorizer"]["jwt"]["claims"]["cognito:groups"] = json!("[Auditors]");
    let refused = trigger.handle(ev, ctx()).await.unwrap();
    assert_eq!(refused["statusCode"], 403, "{refused}");
}

fn signed_webhook(body: &str, now: Ts) -> Value {
    let mut ev = fixture("apigw/receipt-webhook-signed.json");
    let ts = now.0 / 1000;
    let sig = sign_request(
        &Secret::new(WEBHOOK_SECRET),
        &SignedRequest {
            method: "POST",
            path: "/v1/webhooks/gateway",
            query: None,
            timestamp: ts,
            body: body.as_bytes(),
        },
    );
    ev["headers"]["x-muster-timestamp"] = json!(ts.to_string());
    ev["headers"]["x-muster-signature"] = json!(sig);
    ev["body"] = json!(body);
    ev
}

#[tokio::test]
async fn receipt_takes_signed_webhooks_only_on_the_webhook_path() {
    let e = env();
    let trigger = Trigger::new(&config(Function::Trigger), e.deps.clone(), certs());
    let dispatch = Dispatch::new(e.deps.clone());
    let receipt = Receipt::new(&config(Function::Receipt), e.deps.clone(), certs());
    trigger
        .handle(fixture("apigw/trigger-post-incident-jwt.json"), ctx())
        .await
        .unwrap();
    drain_jobs(&e, &dispatch).await;
    // The recorded body names the message the gateway accepted (gw-000123).
    let body = fixture("apigw/receipt-webhook-signed.json")["body"]
        .as_str()
        .unwrap()
        .to_string();
    let out = receipt
        .handle(signed_webhook(&body, e.clock.now()), ctx())
        .await
        .unwrap();
    assert_eq!(out["statusCode"], 200, "{out}");
    let answer: Value = serde_json::from_str(out["body"].as_str().unwrap()).unwrap();
    assert_eq!(answer["result"], "DELIVERED");
    // A bad signature is 401; another route is not served by receipt.
    let mut forged = signed_webhook(&body, e.clock.now());
    forged["headers"]["x-muster-signature"] = json!("sha256=00");
    assert_eq!(
        receipt.handle(forged, ctx()).await.unwrap()["statusCode"],
        401
    );
    let other = receipt
        .handle(fixture("apigw/trigger-post-incident-jwt.json"), ctx())
        .await
        .unwrap();
    assert_eq!(other["statusCode"], 404);
}

#[tokio::test]
async fn receipt_answers_chime_with_actions_and_records_the_ack() {
    let e = env();
    let receipt = Receipt::new(&config(Function::Receipt), e.deps.clone(), certs());
    let answered = receipt
        .handle(fixture("chime/call_answered.json"), ctx())
        .await
        .unwrap();
    assert_eq!(answered["SchemaVersion"], "1.0");
    assert_eq!(answered["Actions"][0]["Type"], "SpeakAndGetDigits");
    let digits = receipt
        .handle(fixture("chime/digits_1.json"), ctx())
        .await
        .unwrap();
    let types: Vec<&str> = digits["Actions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["Type"].as_str().unwrap())
        .collect();
    assert_eq!(types, ["Speak", "Hangup"]);
}

/// Serves the test signing certificate (tests/fixtures/sns/cert.pem) for
/// any URL the verifier accepts.
struct FixtureCert;

#[async_trait]
impl muster::events::sns::CertFetcher for FixtureCert {
    async fn fetch_pem(&self, _url: &str) -> Result<String, muster::events::sns::SnsError> {
        let path = format!(
            "{}/../tests/fixtures/sns/cert.pem",
            env!("CARGO_MANIFEST_DIR")
        );
        Ok(std::fs::read_to_string(path).unwrap())
    }
}

fn certs() -> Arc<dyn muster::events::sns::CertFetcher> {
    Arc::new(FixtureCert)
}

#[tokio::test]
async fn receipt_verifies_sns_notifications_before_applying_them() {
    let e = env();
    let receipt = Receipt::new(&config(Function::Receipt), e.deps.clone(), certs());
    // A signed SES delivery event for a message Muster has no record of:
    // verified, understood, and held for its send (nothing changes).
    let event = fixture("sns/lambda_ses_delivery.json");
    let out = receipt.handle(event.clone(), ctx()).await.unwrap();
    assert_eq!(out, json!({"applied": 0, "held": 1, "unknown": 0}));
    // One changed byte of the message: the signature fails, nothing applied.
    let mut forged = event.clone();
    let msg = forged["Records"][0]["Sns"]["Message"]
        .as_str()
        .unwrap()
        .replace("Delivery", "Bounce");
    forged["Records"][0]["Sns"]["Message"] = json!(msg);
    assert!(matches!(
        receipt.handle(forged, ctx()).await,
        Err(HandlerError::BadEvent(m)) if m.contains("SNS")
    ));
    // A topic the deployment does not list is refused.
    let mut foreign = event;
    foreign["Records"][0]["Sns"]["TopicArn"] = json!("arn:aws:sns:us-east-1:999999999999:other");
    assert!(receipt.handle(foreign, ctx()).await.is_err());
}

#[tokio::test]
async fn receipt_reads_sms_delivery_logs_and_tick_refuses_unknown_events() {
    let e = env();
    let receipt = Receipt::new(&config(Function::Receipt), e.deps.clone(), certs());
    let tick = Tick::new(e.deps.clone());
    let out = receipt
        .handle(fixture("cloudwatch/subscription_event.json"), ctx())
        .await
        .unwrap();
    assert_eq!(out["applied"], 0, "{out}");
    assert!(out["held"].as_u64().unwrap() >= 1, "{out}");
    let logs = json!({"awslogs": {"data": "not base64 gzip"}});
    assert!(matches!(
        receipt.handle(logs, ctx()).await,
        Err(HandlerError::BadEvent(_))
    ));
    let stream = json!({"Records": [{"eventSource": "aws:dynamodb"}]});
    assert!(matches!(
        tick.handle(stream, ctx()).await,
        Err(HandlerError::NotConfigured(_))
    ));
    assert!(matches!(
        tick.handle(json!({"muster": "other"}), ctx()).await,
        Err(HandlerError::BadEvent(_))
    ));
}

#[tokio::test]
async fn malformed_records_are_batch_item_failures_and_the_rest_is_done() {
    let e = env();
    let dispatch = Dispatch::new(e.deps.clone());
    let tick = Tick::new(e.deps.clone());
    // A send for a cascade that does not exist is a stale job, done.
    let out = dispatch
        .handle(fixture("sqs/dispatch-batch.json"), ctx())
        .await
        .unwrap();
    assert_eq!(
        out,
        json!({"batchItemFailures": [{"itemIdentifier": "2e1424d4-f796-459a-8184-9c92662be6da"}]})
    );
    let out = tick
        .handle(fixture("sqs/tick-batch.json"), ctx())
        .await
        .unwrap();
    assert_eq!(
        out,
        json!({"batchItemFailures": [{"itemIdentifier": "9d3f1c2b-5a4e-4f6d-8c7b-1a2b3c4d5e6f"}]})
    );
}

#[tokio::test]
async fn the_scheduled_sweep_reports_what_it_did() {
    let e = env();
    let tick = Tick::new(e.deps.clone());
    let out = tick
        .handle(fixture("scheduler/sweep.json"), ctx())
        .await
        .unwrap();
    assert_eq!(
        out,
        json!({"examined": 0, "redriven": 0, "deferred": 0, "reexpanded": 0, "incomplete": false})
    );
}

/// Throttles its first send with Retry-After 30 s, accepts the next.
struct Busy(Mutex<u32>);

#[async_trait]
impl ChannelSender for Busy {
    fn endpoint(&self) -> &str {
        "sms"
    }
    async fn send(&self, _msg: &OutboundMessage) -> Result<Accepted, SendError> {
        let mut n = self.0.lock().unwrap();
        *n += 1;
        if *n == 1 {
            Err(SendError::Throttled {
                retry_after: Some(30_000),
            })
        } else {
            Ok(Accepted {
                provider_message_id: "sns-1".into(),
            })
        }
    }
}

#[tokio::test]
async fn a_carrier_throttle_is_not_a_batch_failure_and_waits_for_retry_after() {
    let mut e = env();
    e.deps.senders.sms = Arc::new(Busy(Mutex::new(0)));
    let trigger = Trigger::new(&config(Function::Trigger), e.deps.clone(), certs());
    let dispatch = Dispatch::new(e.deps.clone());
    let tick = Tick::new(e.deps.clone());
    trigger
        .handle(fixture("apigw/trigger-post-incident-jwt.json"), ctx())
        .await
        .unwrap();
    // Expansion and the throttled send: both records done, nothing to retry now.
    assert_eq!(drain_jobs(&e, &dispatch).await, 2);
    let (at, item) = e.agenda.pop().unwrap();
    let Item::Timer(timer) = item else {
        panic!("expected the throttle timer, got {item:?}")
    };
    assert_eq!(timer.kind, muster::engine::TimerKind::ThrottleWait);
    assert_eq!(at, T0.plus(30_000));
    // At Retry-After, tick re-sends through the queue and the carrier accepts.
    e.clock.set(at);
    let mut batch = fixture("sqs/tick-batch.json");
    batch["Records"][0]["body"] = json!(serde_json::to_string(&timer).unwrap());
    batch["Records"].as_array_mut().unwrap().truncate(1);
    let out = tick.handle(batch, ctx()).await.unwrap();
    assert_eq!(out["batchItemFailures"], json!([]));
    assert_eq!(drain_jobs(&e, &dispatch).await, 1);
    let rec = e
        .deps
        .cascades
        .get_cascade(&timer.key)
        .await
        .unwrap()
        .unwrap();
    assert!(
        rec.cascade
            .in_flight
            .iter()
            .all(|a| !matches!(a.phase, muster::engine::Phase::Throttled { .. })),
        "{rec:?}"
    );
}

/// A public GET as API Gateway delivers it (a route with no authorizer).
fn public_get(path: &str) -> Value {
    let mut ev = fixture("apigw/trigger-get-audit-jwt.json");
    ev["routeKey"] = json!(format!("GET {path}"));
    ev["rawPath"] = json!(path);
    ev["requestContext"]["http"]["path"] = json!(path);
    ev["requestContext"]["routeKey"] = json!(format!("GET {path}"));
    ev["requestContext"]
        .as_object_mut()
        .unwrap()
        .remove("authorizer");
    ev.as_object_mut().unwrap().remove("pathParameters");
    ev["headers"]
        .as_object_mut()
        .unwrap()
        .remove("authorization");
    ev
}

#[tokio::test]
async fn trigger_serves_the_board_with_the_cognito_sign_in_it_is_configured_with() {
    let e = env();
    // Without a board app client: the page is served and says so.
    let plain = Trigger::new(&config(Function::Trigger), e.deps.clone(), certs());
    let out = plain
        .handle(public_get("/board/config.json"), ctx())
        .await
        .unwrap();
    assert_eq!(out["statusCode"], 200, "{out}");
    let told: Value = serde_json::from_str(out["body"].as_str().unwrap()).unwrap();
    assert_eq!(told["auth"], "unconfigured");
    assert_eq!(told["localPhones"], false);

    let mut c = config(Function::Trigger);
    c.board = Some(muster::api::board::CognitoSignIn {
        domain: "https://muster-prod-1.auth.us-east-1.amazoncognito.com".into(),
        client_id: "4lh2boardclient9".into(),
        redirect_uri: "https://a1b2c3d4e5.execute-api.us-east-1.amazonaws.com/board".into(),
        scopes: crate::runtime::config::BOARD_SCOPES
            .iter()
            .map(|s| s.to_string())
            .collect(),
    });
    let board = Trigger::new(&c, e.deps.clone(), certs());
    let out = board
        .handle(public_get("/board/config.json"), ctx())
        .await
        .unwrap();
    let told: Value = serde_json::from_str(out["body"].as_str().unwrap()).unwrap();
    assert_eq!(told["auth"], "cognito");
    assert_eq!(told["cognito"]["clientId"], "4lh2boardclient9");
    assert_eq!(
        told["cognito"]["redirectUri"],
        "https://a1b2c3d4e5.execute-api.us-east-1.amazonaws.com/board"
    );
    let page = board.handle(public_get("/board"), ctx()).await.unwrap();
    assert_eq!(page["statusCode"], 200, "{page}");
    let csp = page["headers"]["content-security-policy"]
        .as_str()
        .unwrap_or_default();
    assert!(
        csp.contains("connect-src 'self' https://muster-prod-1.auth.us-east-1.amazoncognito.com;"),
        "the page may call only its API and the user pool's token endpoint: {csp}"
    );
    // The API itself still wants the authorizer's caller.
    let out = board
        .handle(public_get("/v1/incidents"), ctx())
        .await
        .unwrap();
    assert_eq!(out["statusCode"], 401, "{out}");
}

/// An incident source's delivery as API Gateway sends it on the
/// `/v1/integrations/{source}` route (no JWT authorizer).
fn integration_request(source: &str, query: &str, headers: &[(&str, &str)], body: &str) -> Value {
    let mut ev = fixture("apigw/trigger-post-incident-jwt.json");
    let path = format!("/v1/integrations/{source}");
    ev["routeKey"] = json!("POST /v1/integrations/{source}");
    ev["rawPath"] = json!(path);
    ev["rawQueryString"] = json!(query);
    ev["requestContext"]["http"]["path"] = json!(path);
    ev["requestContext"]["routeKey"] = json!("POST /v1/integrations/{source}");
    ev["requestContext"]
        .as_object_mut()
        .unwrap()
        .remove("authorizer");
    ev["headers"]
        .as_object_mut()
        .unwrap()
        .remove("authorization");
    for (k, v) in headers {
        ev["headers"][*k] = json!(v);
    }
    ev["headers"]["content-length"] = json!(body.len().to_string());
    ev["body"] = json!(body);
    ev
}

#[tokio::test]
async fn trigger_declares_incidents_from_the_sources_its_secrets_configure() {
    let e = env();
    let mut c = config(Function::Trigger);
    c.integration_secrets = muster::api::integrations::secrets_from_json(
        r#"{"alertmanager": "alertmanager-token-0001"}"#,
    )
    .0;
    let trigger = Trigger::new(&c, e.deps.clone(), certs());
    let body = fixture("integrations/alertmanager_firing.json").to_string();
    let refused = trigger
        .handle(
            integration_request(
                "alertmanager",
                "group=ops-leads",
                &[("authorization", "Bearer wrong")],
                &body,
            ),
            ctx(),
        )
        .await
        .unwrap();
    assert_eq!(refused["statusCode"], 401, "{refused}");
    let out = trigger
        .handle(
            integration_request(
                "alertmanager",
                "group=ops-leads",
                &[("authorization", "Bearer alertmanager-token-0001")],
                &body,
            ),
            ctx(),
        )
        .await
        .unwrap();
    assert_eq!(out["statusCode"], 202, "{out}");
    let answer: Value = serde_json::from_str(out["body"].as_str().unwrap()).unwrap();
    assert_eq!(answer["result"], "TRIGGERED");
    let id = muster::domain::IncidentId::parse(answer["incidentId"].as_str().unwrap()).unwrap();
    let inc = e.deps.incidents.get_incident(&id).await.unwrap().unwrap();
    assert_eq!(inc.trigger.stakeholder_group_id.as_str(), "ops-leads");
    // A source the secrets do not name is not served.
    let pd = trigger
        .handle(
            integration_request("pagerduty", "group=ops-leads", &[], "{}"),
            ctx(),
        )
        .await
        .unwrap();
    assert_eq!(pd["statusCode"], 404, "{pd}");
}

#[test]
fn a_bad_integration_secret_leaves_its_source_unserved_not_the_function_down() {
    for (text, served) in [
        (
            r#"{"alertmanager": "short", "jira": "jira-secret-value-0001"}"#,
            vec!["jira"],
        ),
        (
            r#"{"opsgenie": "opsgenie-secret-value-0001", "pagerduty": "pd-secret-value-00001"}"#,
            vec!["pagerduty"],
        ),
        ("not json, secret-value-0002", vec![]),
    ] {
        let (good, problems) = muster::api::integrations::secrets_from_json(text);
        let names: Vec<&str> = good.iter().map(|(s, _)| *s).collect();
        assert_eq!(names, served, "{text}");
        assert_eq!(problems.len(), 1, "{text}: {problems:?}");
        for secret in [
            "\"short\"",
            "opsgenie-secret-value-0001",
            "secret-value-0002",
        ] {
            assert!(!problems[0].contains(secret), "{}", problems[0]);
        }
        // The function still starts, serving the good entries.
        let mut env = env_of();
        env.insert("MUSTER_INTEGRATION_SECRETS", text.into());
        let c = Config::from_lookup(Function::Trigger, |n| env.get(n).cloned()).unwrap();
        let names: Vec<&str> = c.integration_secrets.iter().map(|(s, _)| *s).collect();
        assert_eq!(names, served, "{text}");
    }
}
