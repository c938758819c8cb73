//! The audit archive against moto: real audit items of a small cascade,
//! shaped as a DynamoDB Stream event, written to an Object Lock bucket,
//! fetched back by incident and verified as `muster audit verify` does.
#![allow(clippy::unwrap_used)]

use crate::support;

use aws_sdk_dynamodb::types::AttributeValue;
use muster::audit::{self, ExportLine};
use muster::domain::*;
use muster::engine::{Cascade, CascadeKey, ChannelPlan, Event, Route, decide};
use muster::policy::Policy;
use muster::ports::*;
use muster_aws::archive::{AuditArchive, StreamEvent};
use muster_aws::crypto::KmsContactCipher;
use muster_aws::dynamo::DynamoStore;
use muster_aws::kms_seal::KmsSealSigner;
use std::sync::Arc;

const T0: Ts = Ts::from_secs(1_700_000_000);

fn started(who: &str, n: u32) -> (CascadeRecord, audit::AuditEntry) {
    let k = CascadeKey {
        incident: IncidentId::parse("INC-ARCH").unwrap(),
        stakeholder: StakeholderId::parse(who).unwrap(),
        route: Route::Member,
    };
    let c = Cascade::new(
        k,
        Severity::P1,
        Tier::TWO,
        ChannelPlan::new(&[Channel::Sms, Channel::Email]),
        T0,
    );
    let d = decide(&c, &Event::Start, &Policy::default(), T0);
    let blank = CascadeRecord {
        cascade: c,
        contacts: ContactMethods {
            phone: PhoneNumber::parse(&format!("+1312555{:04}", 7000 + n)).ok(),
            email: EmailAddress::parse(&format!("archived{n}@example.com")).ok(),
            ..Default::default()
        },
        name: format!("Person {n}"),
        locale: None,
        ack_code: "1234".into(),
        escalation: None,
        named: Default::default(),
        needs_review: false,
        masked: Vec::new(),
        audit_seq: 0,
        audit_head: audit::GENESIS.to_string(),
    };
    muster::app::audit::append(&blank, d.next.clone(), &d.audit, T0, Default::default())
}

fn next(rec: &CascadeRecord, event: Event, now: Ts) -> (CascadeRecord, audit::AuditEntry) {
    let d = decide(&rec.cascade, &event, &Policy::default(), now);
    muster::app::audit::append(rec, d.next.clone(), &d.audit, now, Default::default())
}

/// DynamoDB JSON of an item's string and number attributes.
fn image(item: &std::collections::HashMap<String, AttributeValue>) -> serde_json::Value {
    let mut m = serde_json::Map::new();
    for (k, v) in item {
        match v {
            AttributeValue::S(s) => m.insert(k.clone(), serde_json::json!({ "S": s })),
            AttributeValue::N(n) => m.insert(k.clone(), serde_json::json!({ "N": n })),
            _ => None,
        };
    }
    serde_json::Value::Object(m)
}

fn event(records: &[(String, serde_json::Value)]) -> StreamEvent {
    serde_json::from_value(serde_json::json!({
        "Records": records.iter().map(|(seq, img)| serde_json::json!({
            "eventID": seq, "eventName": "INSERT", "eventSource": "aws:dynamodb",
            "awsRegion": "us-east-1",
            "dynamodb": {"SequenceNumber": seq, "NewImage": img, "StreamViewType": "NEW_IMAGE",
                         "SizeBytes": 100, "Keys": {}}
        })).collect::<Vec<_>>()
    }))
    .unwrap()
}

/// A small incident's audit items as the audit table's stream delivers
/// them: three cascades, one acknowledged, then a KMS seal.
struct Written {
    incident: IncidentId,
    recs: Vec<CascadeRecord>,
    records: Vec<(String, serde_json::Value)>,
}

async fn written(cfg: &aws_config::SdkConfig) -> Written {
    let ddb = aws_sdk_dynamodb::Client::new(cfg);
    let (table, audit_table) = (support::unique("state"), support::unique("audit"));
    DynamoStore::create_tables(&ddb, &table, &audit_table)
        .await
        .unwrap();
    let kms = aws_sdk_kms::Client::new(cfg);
    let sealer = Arc::new(KmsContactCipher::new(
        kms.clone(),
        support::kms_key(cfg).await,
    ));
    let store =
        DynamoStore::new(ddb.clone(), &table, &audit_table, sealer).with_audit_retention_days(30);
    // A small incident: three cascades, one acknowledged, then a KMS seal.
    let mut recs = Vec::new();
    for (i, who) in ["ann", "ben", "cat"].iter().enumerate() {
        let (r, e) = started(who, i as u32);
        store.create_cascade(&r, &e).await.unwrap();
        recs.push(r);
    }
    let (acked, e) = next(
        &recs[1],
        Event::Ack {
            channel: Channel::Sms,
            attempt: None,
        },
        T0.plus(4_000),
    );
    store.transition(&recs[1], &acked, &e).await.unwrap();
    let incident = IncidentId::parse("INC-ARCH").unwrap();
    let signer =
        KmsSealSigner::connect(kms.clone(), KmsSealSigner::create_key(&kms).await.unwrap())
            .await
            .unwrap();
    let heads = store.chain_heads(&incident).await.unwrap();
    let mut seal = audit::Seal::unsigned(
        incident.clone(),
        T0.plus(5_000),
        audit::heads_digest_of(&heads),
        signer.describe(),
    );
    seal.signature = signer.sign(&seal.message()).await.unwrap();
    store.put_seal(&seal).await.unwrap();
    // The audit table's items, as its stream would deliver them (in key
    // order: each chain in sequence), with the TTL attribute.
    let mut items = ddb
        .scan()
        .table_name(&audit_table)
        .send()
        .await
        .unwrap()
        .items()
        .to_vec();
    let key = |it: &std::collections::HashMap<String, AttributeValue>| {
        (
            it["pk"].as_s().unwrap().clone(),
            it["sk"].as_s().unwrap().clone(),
        )
    };
    items.sort_by_key(key);
    assert_eq!(items.len(), 3 + 1 + 1);
    let expires = items[0]["expires_at"]
        .as_n()
        .unwrap()
        .parse::<u64>()
        .unwrap();
    assert_eq!(expires, 1_700_000_000 + 30 * 86_400);
    let records: Vec<(String, serde_json::Value)> = items
        .iter()
        .enumerate()
        .map(|(i, it)| {
            (
                format!("{}", 4_000_000_000_000_000u64 + i as u64 * 7),
                image(it),
            )
        })
        .collect();
    Written {
        incident,
        recs,
        records,
    }
}

async fn lock_bucket(cfg: &aws_config::SdkConfig) -> (aws_sdk_s3::Client, String) {
    // An Object Lock bucket (which refuses puts without a checksum).
    let s3 = aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::from(cfg)
            .force_path_style(true)
            .build(),
    );
    let bucket = support::unique("archive").to_lowercase();
    s3.create_bucket()
        .bucket(&bucket)
        .object_lock_enabled_for_bucket(true)
        .send()
        .await
        .unwrap();
    (s3, bucket)
}

#[tokio::test]
async fn archived_trail_of_an_incident_fetches_back_and_verifies() {
    let cfg = support::sdk_config().await;
    let Written {
        incident,
        recs,
        records,
    } = written(&cfg).await;
    let (s3, bucket) = lock_bucket(&cfg).await;
    let archive = AuditArchive::new(s3.clone(), &bucket);
    // Two batches, and the second delivered again from a later record (as
    // after a partial failure): the fetched trail still verifies.
    let (first, second) = records.split_at(2);
    assert!(archive.archive(&event(first)).await.is_empty());
    assert!(archive.archive(&event(second)).await.is_empty());
    assert!(archive.archive(&event(&second[1..])).await.is_empty());
    let listed = s3
        .list_objects_v2()
        .bucket(&bucket)
        .prefix("incidents/INC-ARCH/2023-11-14/")
        .send()
        .await
        .unwrap();
    assert_eq!(listed.contents().len(), 3);
    let text = archive.fetch_incident(&incident).await.unwrap();
    let lines: Vec<ExportLine> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 5);
    let verified = audit::verify_export(&lines).unwrap();
    assert_eq!(verified.entries, 4);
    assert_eq!(verified.sealed, vec![incident.clone()]);
    // No contact detail in plaintext in the archive.
    for r in &recs {
        assert!(!text.contains(r.contacts.phone.as_ref().unwrap().expose()));
        assert!(!text.contains(r.contacts.email.as_ref().unwrap().expose()));
    }
    // A tampered archive fails verification.
    let tampered = text.replacen("\"seq\":1", "\"seq\":2", 1);
    let bad: Vec<ExportLine> = tampered
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(audit::verify_export(&bad).is_err());
    // A bucket that does not exist: every record is reported failed.
    let nowhere = AuditArchive::new(s3, "no-such-archive-bucket");
    let failed = nowhere.archive(&event(first)).await;
    assert_eq!(
        failed,
        first.iter().map(|(s, _)| s.clone()).collect::<Vec<_>>()
    );
}

/// A SIEM receiver that keeps every line it takes.
#[derive(Default)]
struct Receiver(std::sync::Mutex<Vec<ExportLine>>);

#[async_trait::async_trait]
impl AuditSink for Receiver {
    fn name(&self) -> &str {
        "syslog"
    }
    async fn deliver(&self, lines: &[ExportLine]) -> Result<(), ExportError> {
        self.0.lock().unwrap().extend_from_slice(lines);
        Ok(())
    }
}

/// Tick sends nothing.
struct NoSends;

#[async_trait::async_trait]
impl ChannelSender for NoSends {
    fn endpoint(&self) -> &str {
        "none"
    }
    async fn send(&self, _: &OutboundMessage) -> Result<Accepted, SendError> {
        Err(SendError::Failed("tick sends nothing".into()))
    }
}

/// Jobs waiting on the queue at `url`, taken off it.
async fn drain(sqs: &aws_sdk_sqs::Client, url: &str) -> Vec<Job> {
    let mut jobs = Vec::new();
    // Bounded: the queue holds a few messages.
    for _ in 0..20 {
        let got = sqs
            .receive_message()
            .queue_url(url)
            .max_number_of_messages(10)
            .send()
            .await
            .unwrap();
        if got.messages().is_empty() {
            break;
        }
        for m in got.messages() {
            jobs.push(serde_json::from_str(m.body().unwrap()).unwrap());
            sqs.delete_message()
                .queue_url(url)
                .receipt_handle(m.receipt_handle().unwrap())
                .send()
                .await
                .unwrap();
        }
    }
    jobs
}

/// The SIEM export on AWS: tick archives a stream batch and queues its
/// lines on the work queue (SQS); dispatch delivers them to the receiver.
/// Records the archive could not take are not queued: the stream delivers
/// them again.
#[tokio::test]
async fn tick_queues_each_archived_line_for_the_siem_and_dispatch_delivers_it() {
    use muster::adapters::memory::{
        Agenda, MemoryDirectory, MemoryStore, SeededIds, VirtualClock, embedded,
    };
    let cfg = support::sdk_config().await;
    let Written { records, .. } = written(&cfg).await;
    let (s3, bucket) = lock_bucket(&cfg).await;
    let sqs = aws_sdk_sqs::Client::new(&cfg);
    let url = sqs
        .create_queue()
        .queue_name(support::unique("work"))
        .send()
        .await
        .unwrap()
        .queue_url()
        .unwrap()
        .to_string();
    let receiver = Arc::new(Receiver::default());
    let clock = VirtualClock::new(T0);
    let agenda: Arc<Agenda<()>> = Agenda::new(clock.clone());
    let none: Arc<dyn ChannelSender> = Arc::new(NoSends);
    let deps = Deps {
        queue: Arc::new(muster_aws::sqs::SqsQueue::new(sqs.clone(), &url)),
        siem: vec![receiver.clone()],
        ..embedded(
            Arc::new(Policy::default()),
            &agenda,
            Arc::new(MemoryStore::new()),
            Arc::new(MemoryDirectory::new(vec![], vec![])),
            Senders {
                voice: none.clone(),
                sms: none.clone(),
                email: none.clone(),
                push: none,
            },
            clock,
            Arc::new(SeededIds::new(1)),
        )
    };
    let tick = muster_aws::runtime::Tick::new(deps.clone())
        .with_archive(AuditArchive::new(s3.clone(), &bucket));
    let batch = serde_json::to_value(serde_json::json!({
        "Records": records.iter().map(|(seq, img)| serde_json::json!({
            "eventID": seq, "eventName": "INSERT", "eventSource": "aws:dynamodb",
            "awsRegion": "us-east-1",
            "dynamodb": {"SequenceNumber": seq, "NewImage": img, "StreamViewType": "NEW_IMAGE",
                         "SizeBytes": 100, "Keys": {}}
        })).collect::<Vec<_>>()
    }))
    .unwrap();
    let out = tick
        .handle(batch.clone(), lambda_runtime::Context::default())
        .await
        .unwrap();
    assert_eq!(out["batchItemFailures"], serde_json::json!([]));
    let jobs = drain(&sqs, &url).await;
    assert!(!jobs.is_empty());
    for job in jobs {
        assert!(matches!(job, Job::Export { .. }), "{job:?}");
        muster::app::dispatch(&deps, job).await.unwrap();
    }
    let got = receiver.0.lock().unwrap().clone();
    let expected: Vec<ExportLine> = event(&records)
        .records
        .iter()
        .map(|r| {
            muster_aws::archive::export_line(&r.dynamodb)
                .unwrap()
                .unwrap()
        })
        .collect();
    assert_eq!(got, expected, "every entry and the seal, in stream order");
    assert_eq!(got.iter().filter(|l| l.kind() == "SEAL").count(), 1);

    // An archive that cannot be written: every record failed, none queued.
    let nowhere = muster_aws::runtime::Tick::new(deps.clone())
        .with_archive(AuditArchive::new(s3, "no-such-archive-bucket"));
    let out = nowhere
        .handle(batch, lambda_runtime::Context::default())
        .await
        .unwrap();
    assert_eq!(
        out["batchItemFailures"].as_array().map(Vec::len),
        Some(records.len())
    );
    assert!(drain(&sqs, &url).await.is_empty());
}
