//! End to end against moto: the four functions' handlers in-process, wired
//! by `build_deps` to DynamoDB, SQS, SNS and SESv2 on moto, with a virtual
//! clock the harness moves forward. What each simulated person received is
//! read back from moto (`/moto-api/data.json`: SNS SMS, SES email) and from
//! a recording Chime voice sender (moto has no Chime SDK voice); any message
//! not expected fails the test.
//!
//! SQS is real: every job and timer goes through the queues as the adapters
//! send it, and comes back as an SQS event built from the received message.
//! Delays are the harness's: jobs and timers are sent without an SQS delay
//! and held by the harness until the virtual clock reaches them.
#![allow(clippy::unwrap_used)]

use crate::support;

use async_trait::async_trait;
use muster::adapters::memory::VirtualClock;
use muster::api::sign::{SignedRequest, sign_request};
use muster::domain::*;
use muster::engine::{AuditKind, CascadeKey, CascadeStatus, Route};
use muster::ports::*;
use muster::secret::Secret;
use muster_aws::dynamo::{DynamoDirectory, DynamoStore};
use muster_aws::runtime::config::{Config, Function};
use muster_aws::runtime::{Clients, Context, Dispatch, Receipt, Tick, Trigger, build_deps};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

const ACK_SECRET: &str = "e2e-ack-secret-0123456789";
const WEBHOOK_SECRET: &str = "e2e-webhook-secret-0123456789";
const SCIM_TOKEN: &str = "e2e-scim-token-0123456789";
const T0: Ts = Ts(1_767_225_600_000); // 2026-01-01T00:00:00Z

fn fixture(path: &str) -> Value {
    let full = format!("{}/../tests/fixtures/{path}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(&full).unwrap()).unwrap()
}

/// Sends jobs without an SQS delay, remembering when each is due.
struct HeldQueue {
    inner: muster_aws::sqs::SqsQueue,
    clock: Arc<VirtualClock>,
    /// Shared by every function's queue.
    due: Arc<Mutex<HashMap<String, Ts>>>,
}

#[async_trait]
impl WorkQueue for HeldQueue {
    async fn enqueue(&self, jobs: Vec<(Job, Millis)>) -> muster::Result<()> {
        let now = self.clock.now();
        {
            let mut due = self.due.lock().unwrap();
            for (job, delay) in &jobs {
                due.insert(serde_json::to_string(job).unwrap(), now.plus(*delay));
            }
        }
        self.inner
            .enqueue(jobs.into_iter().map(|(j, _)| (j, 0)).collect())
            .await
    }
    async fn backlog(&self) -> muster::Result<u64> {
        self.inner.backlog().await
    }
}

/// A clock far ahead: `SqsTimers` then sends every timer at once (its
/// `at` says when it is due; the harness holds it until then).
struct FarAhead;
impl Clock for FarAhead {
    fn now(&self) -> Ts {
        Ts(u64::MAX / 4)
    }
}

/// A call placed through the real voice sender: (transaction id, to,
/// ArgumentsMap).
type Placed = (String, String, HashMap<String, String>);

/// Calls placed through the real voice sender, whose Chime SDK client
/// answers as the API reference documents (`SipMediaApplicationCall` with
/// a `TransactionId`).
#[derive(Default)]
struct Calls(Mutex<Vec<Placed>>);

fn voice_sender(
    calls: Arc<Calls>,
    rec: &support::iam::Recorder,
) -> muster_aws::senders::VoiceSender {
    use aws_sdk_chimesdkvoice::operation::create_sip_media_application_call::CreateSipMediaApplicationCallOutput;
    use aws_sdk_chimesdkvoice::types::SipMediaApplicationCall;
    use aws_smithy_mocks::{RuleMode, mock, mock_client};
    let seen = calls.clone();
    let rule = mock!(aws_sdk_chimesdkvoice::Client::create_sip_media_application_call)
        .match_requests(move |r| {
            let mut c = seen.0.lock().unwrap();
            let tx = format!("7f1e2d3c-0000-4000-8000-{:012}", c.len() + 1);
            c.push((
                tx,
                r.to_phone_number().unwrap_or_default().to_string(),
                r.arguments_map().cloned().unwrap_or_default(),
            ));
            true
        })
        .then_output(move || {
            let tx = calls
                .0
                .lock()
                .unwrap()
                .last()
                .map(|c| c.0.clone())
                .unwrap_or_default();
            CreateSipMediaApplicationCallOutput::builder()
                .sip_media_application_call(
                    SipMediaApplicationCall::builder()
                        .transaction_id(tx)
                        .build(),
                )
                .build()
        });
    let rec = rec.clone();
    let client = mock_client!(aws_sdk_chimesdkvoice, RuleMode::MatchAny, [&rule], |c| c
        .interceptor(rec.clone()));
    muster_aws::senders::VoiceSender::new(
        &client,
        "voice",
        "+12125550199",
        "a1b2c3d4-5678-90ab-cdef-11111EXAMPLE",
    )
}

/// SMS sent through the real sender, whose End User Messaging client
/// answers as the API reference documents (`MessageId`): (message id, to,
/// body).
#[derive(Default)]
struct Texts(Mutex<Vec<(String, String, String)>>);

fn sms_sender(
    config: &Config,
    texts: Arc<Texts>,
    rec: &support::iam::Recorder,
) -> muster_aws::senders::SmsSender {
    use aws_sdk_pinpointsmsvoicev2::operation::send_text_message::SendTextMessageOutput;
    use aws_smithy_mocks::{RuleMode, mock, mock_client};
    let seen = texts.clone();
    let rule = mock!(aws_sdk_pinpointsmsvoicev2::Client::send_text_message)
        .match_requests(move |r| {
            let mut t = seen.0.lock().unwrap();
            let id = format!("862a8790-60c0-4430-9b2b-{:012}", t.len() + 1);
            t.push((
                id,
                r.destination_phone_number().unwrap_or_default().to_string(),
                r.message_body().unwrap_or_default().to_string(),
            ));
            true
        })
        .then_output(move || {
            let id = texts
                .0
                .lock()
                .unwrap()
                .last()
                .map(|t| t.0.clone())
                .unwrap_or_default();
            SendTextMessageOutput::builder().message_id(id).build()
        });
    let rec = rec.clone();
    let client = mock_client!(
        aws_sdk_pinpointsmsvoicev2,
        RuleMode::MatchAny,
        [&rule],
        |c| c.interceptor(rec.clone())
    );
    let mut sender = muster_aws::senders::SmsSender::new(&client, "sms");
    if let Some(o) = &config.sms_origination {
        sender = sender.with_origination(o.clone());
    }
    if let Some(set) = &config.sms_configuration_set {
        sender = sender.with_configuration_set(set);
    }
    sender
}

/// A message the harness holds until it is due.
struct Held {
    due: Ts,
    record: Value,
}

struct Harness {
    clock: Arc<VirtualClock>,
    sqs: aws_sdk_sqs::Client,
    jobs_url: String,
    /// The work queue's priority lane (escalation jobs).
    priority_url: String,
    timers_url: String,
    queue: Arc<HeldQueue>,
    held_jobs: Vec<Held>,
    /// Records per dispatch batch (SQS gives the function up to ten).
    batch: usize,
    held_timers: Vec<Held>,
    trigger: Trigger,
    dispatch: Dispatch,
    receipt: Receipt,
    tick: Tick,
    deps: Deps,
    calls: Arc<Calls>,
}

impl Harness {
    /// Takes every message off a queue (deleting it) as an SQS event record.
    async fn take(&self, url: &str, arn: &str) -> Vec<(String, Value)> {
        let mut out = Vec::new();
        loop {
            let r = self
                .sqs
                .receive_message()
                .queue_url(url)
                .max_number_of_messages(10)
                .send()
                .await
                .unwrap();
            let msgs = r.messages();
            if msgs.is_empty() {
                return out;
            }
            for m in msgs {
                let body = m.body().unwrap().to_string();
                out.push((
                    body.clone(),
                    json!({
                        "messageId": m.message_id().unwrap(),
                        "receiptHandle": m.receipt_handle().unwrap(),
                        "body": body,
                        "attributes": {"ApproximateReceiveCount": "1", "SentTimestamp": self.clock.now().0.to_string(), "SenderId": "AROAIWPX5BD2BHG722MW4:muster", "ApproximateFirstReceiveTimestamp": self.clock.now().0.to_string()},
                        "messageAttributes": {},
                        "md5OfBody": m.md5_of_body().unwrap_or_default(),
                        "eventSource": "aws:sqs",
                        "eventSourceARN": arn,
                        "awsRegion": "us-east-1"
                    }),
                ));
                self.sqs
                    .delete_message()
                    .queue_url(url)
                    .receipt_handle(m.receipt_handle().unwrap())
                    .send()
                    .await
                    .unwrap();
            }
        }
    }

    async fn collect(&mut self) {
        let mut jobs = self
            .take(
                &self.priority_url.clone(),
                "arn:aws:sqs:us-east-1:123456789012:priority",
            )
            .await;
        jobs.extend(
            self.take(
                &self.jobs_url.clone(),
                "arn:aws:sqs:us-east-1:123456789012:dispatch",
            )
            .await,
        );
        for (body, record) in jobs {
            let due = self
                .queue
                .due
                .lock()
                .unwrap()
                .get(&body)
                .copied()
                .unwrap_or(self.clock.now());
            self.held_jobs.push(Held { due, record });
        }
        for (body, record) in self
            .take(
                &self.timers_url.clone(),
                "arn:aws:sqs:us-east-1:123456789012:timers",
            )
            .await
        {
            let t: TimerMsg = serde_json::from_str(&body).unwrap();
            self.held_timers.push(Held { due: t.at, record });
        }
    }

    /// Delivers everything due by now, as SQS batches of up to ten, until
    /// nothing due is left. Returns the number of messages handled.
    async fn run_due(&mut self) -> usize {
        let mut handled = 0;
        loop {
            self.collect().await;
            let now = self.clock.now();
            let (jobs, rest): (Vec<Held>, Vec<Held>) =
                self.held_jobs.drain(..).partition(|h| h.due <= now);
            self.held_jobs = rest;
            let (timers, rest): (Vec<Held>, Vec<Held>) =
                self.held_timers.drain(..).partition(|h| h.due <= now);
            self.held_timers = rest;
            if jobs.is_empty() && timers.is_empty() {
                return handled;
            }
            handled += jobs.len() + timers.len();
            for chunk in jobs.chunks(self.batch) {
                let records: Vec<Value> = chunk.iter().map(|h| h.record.clone()).collect();
                let out = self
                    .dispatch
                    .handle(json!({"Records": records}), Context::default())
                    .await
                    .unwrap();
                assert_eq!(
                    out["batchItemFailures"],
                    json!([]),
                    "dispatch failed some of {records:?}"
                );
            }
            for chunk in timers.chunks(10) {
                let records: Vec<Value> = chunk.iter().map(|h| h.record.clone()).collect();
                let out = self
                    .tick
                    .handle(json!({"Records": records}), Context::default())
                    .await
                    .unwrap();
                assert_eq!(
                    out["batchItemFailures"],
                    json!([]),
                    "tick failed some of {records:?}"
                );
            }
        }
    }

    /// Moves the clock to `t`, delivering everything due on the way, in order.
    async fn advance_to(&mut self, t: Ts) {
        loop {
            self.run_due().await;
            let next = self
                .held_jobs
                .iter()
                .chain(self.held_timers.iter())
                .map(|h| h.due)
                .min();
            match next {
                Some(at) if at <= t => self.clock.set(at.max(self.clock.now())),
                _ => break,
            }
        }
        self.clock.set(t.max(self.clock.now()));
        self.run_due().await;
    }

    async fn http(&self, f: &Trigger, ev: Value) -> Value {
        f.handle(ev, Context::default()).await.unwrap()
    }

    async fn cascade(&self, incident: &str, who: &str, route: Route) -> CascadeRecord {
        let key = CascadeKey {
            incident: IncidentId::parse(incident).unwrap(),
            stakeholder: StakeholderId::parse(who).unwrap(),
            route,
        };
        self.deps.cascades.get_cascade(&key).await.unwrap().unwrap()
    }
}

/// A gateway's webhook to receipt, signed as docs/api.md says.
fn webhook(body: &str, now: Ts) -> Value {
    let mut wh = fixture("apigw/receipt-webhook-signed.json");
    wh["headers"]
        .as_object_mut()
        .unwrap()
        .remove("content-length");
    wh["headers"]["x-muster-timestamp"] = json!((now.0 / 1000).to_string());
    wh["headers"]["x-muster-signature"] = json!(sign_request(
        &Secret::new(WEBHOOK_SECRET),
        &SignedRequest {
            method: "POST",
            path: "/v1/webhooks/gateway",
            query: None,
            timestamp: now.0 / 1000,
            body: body.as_bytes(),
        }
    ));
    wh["body"] = json!(body);
    wh
}

/// A SCIM request to trigger, as API Gateway passes `ANY /scim/v2/{proxy+}`.
fn scim_request(method: &str, path: &str, body: &Value) -> Value {
    let mut ev = fixture("apigw/trigger-post-incident-jwt.json");
    let headers = ev["headers"].as_object_mut().unwrap();
    headers.remove("content-length");
    headers.remove("authorization");
    headers.insert(
        "authorization".into(),
        json!(format!("Bearer {SCIM_TOKEN}")),
    );
    headers.insert("content-type".into(), json!("application/scim+json"));
    ev["routeKey"] = json!("ANY /scim/v2/{proxy+}");
    ev["rawPath"] = json!(path);
    ev["requestContext"]["http"]["method"] = json!(method);
    ev["requestContext"]["http"]["path"] = json!(path);
    ev["requestContext"]["routeKey"] = json!("ANY /scim/v2/{proxy+}");
    ev["requestContext"]
        .as_object_mut()
        .unwrap()
        .remove("authorizer");
    ev["body"] = json!(body.to_string());
    ev
}

/// The function's logical id in infra/template.yaml.
fn function_name(f: Function) -> &'static str {
    match f {
        Function::Trigger => "TriggerFunction",
        Function::Dispatch => "DispatchFunction",
        Function::Receipt => "ReceiptFunction",
        Function::Tick => "TickFunction",
    }
}

fn person(id: &str, contacts: ContactMethods, channel: Channel) -> Stakeholder {
    Stakeholder {
        id: StakeholderId::parse(id).unwrap(),
        name: id.to_string(),
        tier: Tier::ONE,
        contacts,
        preferences: vec![channel],
        manager: None,
        locale: None,
        quiet: None,
        idp: None,
        active: true,
    }
}

/// A SIP media application event for the call `tx`, as the service sends
/// it: the attributes the handler's previous answer stored, if any.
fn chime_event(fixture_name: &str, tx: &str, stored: Option<&Value>) -> Value {
    let mut ev = fixture(&format!("chime/{fixture_name}.json"));
    ev["CallDetails"]["TransactionId"] = json!(tx);
    let details = ev["CallDetails"].as_object_mut().unwrap();
    match stored {
        Some(a) => {
            details.insert("TransactionAttributes".into(), a.clone());
        }
        None => {
            details.remove("TransactionAttributes");
        }
    }
    ev
}

#[tokio::test]
async fn trigger_dispatch_receipt_and_tick_through_ack_escalation_and_cascade_failure() {
    let cfg = support::sdk_config().await;
    let clients = Clients::new(&cfg);
    let (state, audit, directory) = (
        support::unique("e2e-state"),
        support::unique("e2e-audit"),
        support::unique("e2e-dir"),
    );
    DynamoStore::create_tables(&clients.dynamodb, &state, &audit)
        .await
        .unwrap();
    DynamoDirectory::create_table(&clients.dynamodb, &directory)
        .await
        .unwrap();
    let mut urls = Vec::new();
    for q in ["e2e-dispatch", "e2e-timers", "e2e-priority"] {
        let r = clients
            .sqs
            .create_queue()
            .queue_name(support::unique(q))
            .send()
            .await
            .unwrap();
        urls.push(r.queue_url().unwrap().to_string());
    }
    let group_name = support::unique("e2e-sched");
    clients
        .scheduler
        .create_schedule_group()
        .name(&group_name)
        .send()
        .await
        .unwrap();
    let pii_key = support::kms_key(&cfg).await;
    let seal_key = muster_aws::kms_seal::KmsSealSigner::create_key(&clients.kms)
        .await
        .unwrap();
    let from = format!("{}@muster.example.net", support::unique("alerts"));
    clients
        .sesv2
        .create_email_identity()
        .email_identity(&from)
        .send()
        .await
        .unwrap();

    // Unique people and incident: moto's data is shared by every test.
    let run = support::unique("r").replace('-', "");
    let n = std::process::id() % 9000;
    let phone =
        |i: u32| PhoneNumber::parse(&format!("+1212555{:04}", (n + i * 7) % 10000)).unwrap();
    let alice_phone = phone(1);
    let carol_phone = phone(2);
    let dave_phone = phone(3);
    let bob_email = EmailAddress::parse(&format!("bob.{run}@example.com")).unwrap();
    let incident = format!("INC-E2E-{run}");
    let group_id = format!("grp-{run}");

    let env: HashMap<&str, String> = [
        ("MUSTER_STAGE", "e2e".to_string()),
        ("MUSTER_STATE_TABLE", state.clone()),
        ("MUSTER_AUDIT_TABLE", audit.clone()),
        ("MUSTER_DIRECTORY_TABLE", directory.clone()),
        ("MUSTER_DISPATCH_QUEUE_URL", urls[0].clone()),
        ("MUSTER_PRIORITY_QUEUE_URL", urls[2].clone()),
        ("MUSTER_TIMER_QUEUE_URL", urls[1].clone()),
        (
            "MUSTER_TIMER_QUEUE_ARN",
            "arn:aws:sqs:us-east-1:123456789012:timers".into(),
        ),
        ("MUSTER_SCHEDULER_GROUP", group_name),
        (
            "MUSTER_SCHEDULER_ROLE_ARN",
            "arn:aws:iam::123456789012:role/muster-scheduler".into(),
        ),
        ("MUSTER_PII_KEY_ID", pii_key.clone()),
        ("MUSTER_SEAL_KEY_ID", seal_key.clone()),
        ("MUSTER_API_BASE_URL", "https://api.example.net".into()),
        ("MUSTER_ACK_SECRET", ACK_SECRET.into()),
        ("MUSTER_WEBHOOK_SECRET", WEBHOOK_SECRET.into()),
        ("MUSTER_SES_FROM", from.clone()),
        ("MUSTER_SES_CONFIGURATION_SET", "muster-events".into()),
        ("MUSTER_SMS_CONFIGURATION_SET", "muster-e2e".into()),
        ("MUSTER_SMS_ORIGINATION", "+12125550100".into()),
        (
            "MUSTER_CHIME_SMA_ID",
            "a1b2c3d4-5678-90ab-cdef-11111EXAMPLE".into(),
        ),
        ("MUSTER_CHIME_FROM_NUMBER", "+12125550199".into()),
        (
            "MUSTER_SNS_TOPIC_ARNS",
            "arn:aws:sns:us-east-1:123456789012:muster-events".into(),
        ),
        ("MUSTER_AUDIT_ARCHIVE_BUCKET", "muster-archive".into()),
        ("MUSTER_SCIM_TOKEN", SCIM_TOKEN.into()),
    ]
    .into();
    // Each function sees only the variables the template gives it.
    let load = |f: Function| {
        let vars = support::iam::variables_of(function_name(f));
        Config::from_lookup(f, |name| {
            vars.contains(name)
                .then(|| env.get(name).cloned())
                .flatten()
        })
        .unwrap()
    };

    // The directory: alice (voice), bob (email) and carol (SMS) in the
    // group; dave, its on-call manager (SMS), outside it.
    let seed_dir = DynamoDirectory::new(
        clients.dynamodb.clone(),
        &directory,
        Arc::new(muster_aws::crypto::KmsContactCipher::new(
            clients.kms.clone(),
            &pii_key,
        )),
    )
    .with_index_key(muster_aws::dynamo::IndexKey::derive(&Secret::new(
        ACK_SECRET,
    )));
    let people = [
        person(
            "alice",
            ContactMethods {
                phone: Some(alice_phone.clone()),
                ..Default::default()
            },
            Channel::Voice,
        ),
        person(
            "bob",
            ContactMethods {
                email: Some(bob_email.clone()),
                ..Default::default()
            },
            Channel::Email,
        ),
        person(
            "carol",
            ContactMethods {
                sms: Some(carol_phone.clone()),
                ..Default::default()
            },
            Channel::Sms,
        ),
        person(
            "dave",
            ContactMethods {
                sms: Some(dave_phone.clone()),
                ..Default::default()
            },
            Channel::Sms,
        ),
    ];
    for p in &people {
        seed_dir.put_stakeholder(p).await.unwrap();
    }
    seed_dir
        .put_group(&Group {
            id: GroupId::parse(&group_id).unwrap(),
            name: "Ops".into(),
            members: people[..3].iter().map(|p| p.id.clone()).collect(),
            on_call_manager: Some(people[3].id.clone()),
            escalation_channels: vec![Channel::Sms],
            idp: None,
        })
        .await
        .unwrap();

    // One set of dependencies per function, as in Lambda, sharing the
    // virtual clock; the queue and timers hold delays for the harness, and
    // voice is the recorder.
    let clock = VirtualClock::new(T0);
    let calls = Arc::new(Calls::default());
    let texts = Arc::new(Texts::default());
    let due = Arc::new(Mutex::new(HashMap::new()));
    // Every function's AWS calls are recorded on its own clients and
    // checked against its role in infra/template.yaml at the end.
    let recorders: HashMap<&str, support::iam::Recorder> = [
        "TriggerFunction",
        "DispatchFunction",
        "ReceiptFunction",
        "TickFunction",
    ]
    .into_iter()
    .map(|f| (f, support::iam::Recorder::default()))
    .collect();
    let queue = Arc::new(HeldQueue {
        inner: muster_aws::sqs::SqsQueue::new(clients.sqs.clone(), &urls[0])
            .with_priority_lane(&urls[2]),
        clock: clock.clone(),
        due: due.clone(),
    });
    let deps_for = async |f: Function| {
        let config = load(f);
        let fc = support::recorded_clients(&cfg, &recorders[function_name(f)]);
        let mut deps = if f == Function::Dispatch {
            muster_aws::runtime::wiring::build_dispatch_deps(&config, &fc, clock.clone()).await
        } else {
            build_deps(&config, &fc, clock.clone()).await
        }
        .unwrap();
        deps.queue = Arc::new(HeldQueue {
            inner: muster_aws::sqs::SqsQueue::new(fc.sqs.clone(), &urls[0])
                .with_priority_lane(&urls[2]),
            clock: clock.clone(),
            due: due.clone(),
        });
        deps.timers = Arc::new(muster_aws::timers::SqsTimers::new(
            fc.sqs.clone(),
            &urls[1],
            fc.scheduler.clone(),
            muster_aws::timers::ScheduleTarget {
                group: config.scheduler_group.clone(),
                queue_arn: config.timer_queue_arn.clone(),
                role_arn: config.scheduler_role_arn.clone(),
            },
            Arc::new(FarAhead),
        ));
        let rec = &recorders[function_name(f)];
        deps.senders.voice = Arc::new(voice_sender(calls.clone(), rec));
        deps.senders.sms = Arc::new(sms_sender(&config, texts.clone(), rec));
        (config, deps)
    };
    let (tc, td) = deps_for(Function::Trigger).await;
    let (_, dd) = deps_for(Function::Dispatch).await;
    let (rc, rd) = deps_for(Function::Receipt).await;
    let (_, kd) = deps_for(Function::Tick).await;
    let mut h = Harness {
        clock: clock.clone(),
        sqs: clients.sqs.clone(),
        jobs_url: urls[0].clone(),
        priority_url: urls[2].clone(),
        timers_url: urls[1].clone(),
        queue: queue.clone(),
        held_jobs: Vec::new(),
        batch: 10,
        held_timers: Vec::new(),
        trigger: Trigger::new(
            &tc,
            td.clone(),
            Arc::new(muster_aws::runtime::sns_cert_fetcher().unwrap()),
        ),
        dispatch: Dispatch::new(dd),
        receipt: Receipt::new(
            &rc,
            rd,
            Arc::new(muster_aws::runtime::sns_cert_fetcher().unwrap()),
        ),
        tick: Tick::new(kd),
        deps: td,
        calls: calls.clone(),
    };

    // 1. The trigger, as API Gateway delivers it after the JWT authorizer.
    let mut ev = fixture("apigw/trigger-post-incident-jwt.json");
    ev["headers"]
        .as_object_mut()
        .unwrap()
        .remove("content-length");
    ev["body"] = json!(json!({"trigger": {"incidentId": incident, "severity": "P1", "stakeholderGroupId": group_id, "messageTemplate": "Data centre outage. Activate the BCP."}}).to_string());
    let out = h.http(&h.trigger, ev).await;
    assert_eq!(out["statusCode"], 202, "{out}");
    let answer: Value = serde_json::from_str(out["body"].as_str().unwrap()).unwrap();
    assert_eq!(answer["cascades"], 3);

    // 2. Dispatch drains the queue: expansion, then one first send each.
    h.run_due().await;
    let voice = calls.0.lock().unwrap().clone();
    assert_eq!(voice.len(), 1, "one call, to alice");
    let (tx, to, args) = voice[0].clone();
    assert_eq!(to, alice_phone.expose());
    assert_eq!(args.get("stakeholder").map(String::as_str), Some("alice"));
    assert!(
        args.values().all(|v| !v.contains("Data centre")),
        "the message is not an argument"
    );

    // 3. Alice answers and presses 1: the SMA's events through receipt, as
    //    the service sends them. The call is found by its transaction id;
    //    what the answer to CALL_ANSWERED stores comes back on the key press.
    let new_call = h
        .receipt
        .handle(
            chime_event("new_outbound_call", &tx, None),
            Context::default(),
        )
        .await
        .unwrap();
    assert_eq!(new_call["Actions"], json!([]));
    let answered = h
        .receipt
        .handle(chime_event("call_answered", &tx, None), Context::default())
        .await
        .unwrap();
    assert_eq!(answered["Actions"][0]["Type"], "SpeakAndGetDigits");
    let said = answered["Actions"][0]["Parameters"]["SpeechParameters"]["Text"]
        .as_str()
        .unwrap();
    assert!(said.contains("Data centre outage"), "{said}");
    let pressed = h
        .receipt
        .handle(
            chime_event("digits_1", &tx, Some(&answered["TransactionAttributes"])),
            Context::default(),
        )
        .await
        .unwrap();
    assert_eq!(pressed["Actions"][1]["Type"], "Hangup");
    assert_eq!(
        h.cascade(&incident, "alice", Route::Member)
            .await
            .cascade
            .status,
        CascadeStatus::Acknowledged
    );

    // 4. Bob's email carries a one-click link; he opens it (trigger serves it).
    let dump = support::data_json();
    let emails: Vec<Value> = dump["ses"]["Message"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m.to_string().contains(&incident))
        .cloned()
        .collect();
    assert_eq!(emails.len(), 1, "one email, to bob: {emails:?}");
    assert_eq!(
        emails[0]["destinations"]["ToAddresses"][0],
        bob_email.expose()
    );
    let text = emails[0].to_string();
    let start = text.find("/v1/ack/").unwrap() + "/v1/ack/".len();
    let token: String = text[start..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '~' | '='))
        .collect();
    let mut ack = fixture("apigw/trigger-get-audit-jwt.json");
    let path = format!("/v1/ack/{token}");
    ack["routeKey"] = json!("GET /v1/ack/{token}");
    ack["rawPath"] = json!(path);
    ack["requestContext"]["http"]["path"] = json!(path);
    ack["requestContext"]["routeKey"] = json!("GET /v1/ack/{token}");
    ack["requestContext"]
        .as_object_mut()
        .unwrap()
        .remove("authorizer");
    ack["pathParameters"] = json!({"token": token});
    // Opening the link (as a mail scanner does) shows a button and changes
    // nothing; the button's POST acknowledges.
    let page = h.http(&h.trigger, ack.clone()).await;
    assert_eq!(page["statusCode"], 200, "{page}");
    assert!(
        page["body"]
            .as_str()
            .unwrap()
            .contains("<form method=\"post\"")
    );
    assert_ne!(
        h.cascade(&incident, "bob", Route::Member)
            .await
            .cascade
            .status,
        CascadeStatus::Acknowledged
    );
    ack["routeKey"] = json!("POST /v1/ack/{token}");
    ack["requestContext"]["routeKey"] = json!("POST /v1/ack/{token}");
    ack["requestContext"]["http"]["method"] = json!("POST");
    let page = h.http(&h.trigger, ack).await;
    assert_eq!(page["statusCode"], 200, "{page}");
    assert!(page["body"].as_str().unwrap().contains("has been recorded"));
    assert_eq!(
        h.cascade(&incident, "bob", Route::Member)
            .await
            .cascade
            .status,
        CascadeStatus::Acknowledged
    );

    // 5. A gateway's signed webhook about a message Muster has no record of
    //    is accepted and changes nothing: it is held (in case the send it
    //    reports on is still being recorded), and says so.
    let body = json!({"messageId": "gw-unknown-1", "status": "delivered"}).to_string();
    let wh = webhook(&body, clock.now());
    let out = h.receipt.handle(wh, Context::default()).await.unwrap();
    assert_eq!(out["statusCode"], 200, "{out}");
    assert!(out["body"].as_str().unwrap().contains("HELD"), "{out}");

    // 6. Carol never answers her SMS: time runs (timers through tick) until
    //    her cascade fails and escalates to dave, whose cascade fails too.
    h.advance_to(T0.plus(30 * 60_000)).await;
    let carol = h.cascade(&incident, "carol", Route::Member).await;
    assert_eq!(carol.cascade.status, CascadeStatus::Escalated);
    let carol_id = StakeholderId::parse("carol").unwrap();
    let dave = h
        .cascade(&incident, "dave", Route::escalation(carol_id.clone()))
        .await;
    assert_eq!(dave.cascade.status, CascadeStatus::Escalated);
    assert_eq!(dave.cascade.key.route.about(), Some(&carol_id));
    let trail = h
        .deps
        .cascades
        .audit_trail(&IncidentId::parse(&incident).unwrap())
        .await
        .unwrap();
    let failures: Vec<String> = trail
        .iter()
        .filter(|e| e.record.kind == AuditKind::CascadeFailure)
        .map(|e| e.stakeholder.to_string())
        .collect();
    assert_eq!(failures, ["carol", "dave"]);

    // 7. Exactly what each person received, and nothing else.
    let dump = support::data_json();
    let sms: Vec<(String, String)> = texts
        .0
        .lock()
        .unwrap()
        .iter()
        .map(|(_, to, body)| (to.clone(), body.clone()))
        .collect();
    assert_eq!(sms.len(), 2, "{sms:?}");
    assert_eq!(sms[0].0, carol_phone.expose());
    assert!(
        sms[0]
            .1
            .starts_with(&format!("[P1 {incident}] Data centre outage")),
        "{}",
        sms[0].1
    );
    assert_eq!(sms[1].0, dave_phone.expose());
    assert!(
        sms[1].1.contains("Escalation: carol has not acknowledged"),
        "{}",
        sms[1].1
    );
    let emails = dump["ses"]["Message"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m.to_string().contains(&incident))
        .count();
    assert_eq!(emails, 1, "only bob's email");
    assert_eq!(h.calls.0.lock().unwrap().len(), 1, "only alice's call");
    assert!(h.held_jobs.is_empty(), "no job left");

    // 8. The sweep finds nothing to re-drive; a sweep already past its
    //    deadline stops at once.
    let r = h.tick.sweep(None).await.unwrap();
    assert_eq!(r["redriven"], 0, "{r}");
    // Every member has a cascade: nothing is expanded again (the check
    // reads the incident's cascades and group under the tick role).
    assert_eq!(r["reexpanded"], 0, "{r}");
    let r = h.tick.sweep(Some(Ts(0))).await.unwrap();
    assert_eq!(r["examined"], 0, "{r}");

    // 9. Closing seals the incident with the KMS key; the exported trail
    //    (entries and seal) verifies offline, and the address each entry
    //    recorded is ciphertext that only the vault opens.
    //    The close answers at once; its jobs, one per shard through the
    //    queue and the dispatcher, cancel and then seal.
    let id = IncidentId::parse(&incident).unwrap();
    let closing = muster::app::close(&h.deps, &id).await.unwrap();
    assert_eq!(closing.status, IncidentStatus::Closing);
    // One job per batch here: the sixteen jobs each record their shard on
    // the incident item under its version guard, and moto does not isolate
    // transactions that run at once (two can both pass the guard; DynamoDB
    // serialises them). docs/aws.md lists the gap.
    h.batch = 1;
    h.run_due().await;
    h.batch = 10;
    let closed = h.deps.incidents.get_incident(&id).await.unwrap().unwrap();
    assert_eq!(closed.status, IncidentStatus::Closed);
    let sealing = h.deps.sealing.clone().expect("sealing is wired");
    let seals = sealing.store.seals(&id).await.unwrap();
    assert!(!seals.is_empty(), "closing wrote a seal");
    assert_eq!(seals[0].algorithm, "ecdsa-p256-sha256");
    let trail = h.deps.cascades.audit_trail(&id).await.unwrap();
    let mut lines: Vec<muster::audit::ExportLine> = seals
        .into_iter()
        .map(|seal| muster::audit::ExportLine::Seal { seal })
        .collect();
    lines.extend(
        trail
            .iter()
            .cloned()
            .map(|e| muster::audit::ExportLine::Entry(Box::new(e))),
    );
    let verified = muster::audit::verify_export(&lines).unwrap();
    assert_eq!(verified.sealed, std::slice::from_ref(&id));
    assert!(verified.unsealed.is_empty());
    let vault = h.deps.vault.clone().expect("the vault is wired");
    let carol_sent = trail
        .iter()
        .find(|e| e.stakeholder.as_str() == "carol" && e.contact.is_some())
        .expect("carol's SMS recorded its address");
    let cipher = carol_sent.contact.clone().unwrap();
    assert!(!cipher.contains(carol_phone.expose()));
    let plain = vault
        .decrypt(&carol_sent.stakeholder, &id, &cipher)
        .await
        .unwrap();
    assert_eq!(plain.as_deref(), Some(carol_phone.expose()));

    // 8. Carol texts STOP, then START (receipt writes the opt-out to the
    //    directory); an identity provider creates a user (trigger's SCIM).
    for (text, opted_out) in [("STOP", true), ("START", false)] {
        let body = json!({"from": carol_phone.expose(), "text": text}).to_string();
        let out = h
            .receipt
            .handle(webhook(&body, clock.now()), Context::default())
            .await
            .unwrap();
        assert_eq!(out["statusCode"], 200, "{text}: {out}");
        let carol = seed_dir.stakeholder(&carol_id).await.unwrap().unwrap();
        assert_eq!(carol.contacts.sms_opted_out, opted_out, "after {text}");
    }
    let user = json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
        "userName": format!("erin.{run}@example.com"),
        "displayName": "Erin",
        "phoneNumbers": [{"value": "+12125550142", "type": "mobile"}],
    });
    let out = h
        .http(&h.trigger, scim_request("POST", "/scim/v2/Users", &user))
        .await;
    assert_eq!(out["statusCode"], 201, "{out}");
    let again = h
        .http(&h.trigger, scim_request("POST", "/scim/v2/Users", &user))
        .await;
    assert_eq!(
        again["statusCode"], 409,
        "a second user with the same userName: {again}"
    );

    // The IAM contract: each function called only what its role allows.
    let mut denied = Vec::new();
    for (function, rec) in &recorders {
        let calls = rec.0.lock().unwrap().clone();
        assert!(!calls.is_empty(), "{function} made no AWS call");
        denied.extend(support::iam::role_of(function).denied(&calls, &env));
    }
    assert!(
        denied.is_empty(),
        "calls the roles do not allow:\n{}",
        denied.join("\n")
    );
}
