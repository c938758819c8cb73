//! The DynamoDB state store against moto: conditional creates, versioned
//! transitions with their audit entry in one transaction, the due index,
//! lookups, paging across shards, sealed contacts, and a cascade run through
//! the use cases.
#![allow(clippy::unwrap_used)]

use crate::support;

use muster::adapters::memory::{
    Agenda, Item, MemoryDirectory, MemoryLimiter, MemoryQueue, MemoryTimers, SeededIds,
    VirtualClock,
};
use muster::app;
use muster::audit;
use muster::domain::*;
use muster::engine::{Cascade, CascadeKey, CascadeStatus, ChannelPlan, Event, Route, decide};
use muster::policy::Policy;
use muster::ports::*;
use muster_aws::crypto::{CipherContext, ContactCipher, KmsContactCipher};
use muster_aws::dynamo::{DynamoStore, MeterReading};
use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

struct Fixture {
    store: Arc<DynamoStore>,
    table: String,
    audit_table: String,
    cipher: Arc<KmsContactCipher>,
}

async fn fixture() -> Fixture {
    let cfg = support::sdk_config().await;
    let ddb = aws_sdk_dynamodb::Client::new(&cfg);
    let (table, audit_table) = (support::unique("state"), support::unique("audit"));
    DynamoStore::create_tables(&ddb, &table, &audit_table)
        .await
        .unwrap();
    let key = support::kms_key(&cfg).await;
    let cipher = Arc::new(KmsContactCipher::new(aws_sdk_kms::Client::new(&cfg), key));
    let store = Arc::new(DynamoStore::new(ddb, &table, &audit_table, cipher.clone()));
    Fixture {
        store,
        table,
        audit_table,
        cipher,
    }
}

fn id<T>(r: Result<T, InvalidValue>) -> T {
    r.unwrap_or_else(|e| panic!("{e}"))
}

fn contacts(n: u32) -> ContactMethods {
    ContactMethods {
        phone: PhoneNumber::parse(&format!("+1212555{:04}", 1000 + n)).ok(),
        email: EmailAddress::parse(&format!("person{n}@example.com")).ok(),
        ..Default::default()
    }
}

fn key(incident: &str, who: &str) -> CascadeKey {
    CascadeKey {
        incident: id(IncidentId::parse(incident)),
        stakeholder: id(StakeholderId::parse(who)),
        route: Route::Member,
    }
}

/// A new cascade started at `now`, with its first audit entry.
fn started(k: CascadeKey, n: u32, now: Ts) -> (CascadeRecord, audit::AuditEntry) {
    let policy = Policy::default();
    let c = Cascade::new(
        k,
        Severity::P1,
        Tier::TWO,
        ChannelPlan::new(&[Channel::Sms, Channel::Email]),
        now,
    );
    let d = decide(&c, &Event::Start, &policy, now);
    let blank = CascadeRecord {
        cascade: c,
        contacts: contacts(n),
        name: format!("Person {n}"),
        locale: None,
        ack_code: "4821".into(),
        escalation: None,
        named: Default::default(),
        needs_review: false,
        masked: CascadeRecord::mask(&contacts(n)),
        audit_seq: 0,
        audit_head: audit::GENESIS.to_string(),
    };
    app::audit::append(&blank, d.next.clone(), &d.audit, now, Default::default())
}

/// The record after `event`, with the audit entry recording it.
fn next(rec: &CascadeRecord, event: Event, now: Ts) -> (CascadeRecord, audit::AuditEntry) {
    let d = decide(&rec.cascade, &event, &Policy::default(), now);
    app::audit::append(rec, d.next.clone(), &d.audit, now, Default::default())
}

const T0: Ts = Ts::from_secs(1_700_000_000);

#[tokio::test]
async fn create_is_conditional_and_get_round_trips_sealed_contacts() {
    let f = fixture().await;
    let (rec, entry) = started(key("INC-1", "alice"), 1, T0);
    f.store.create_cascade(&rec, &entry).await.unwrap();
    let got = f.store.get_cascade(&rec.cascade.key).await.unwrap();
    assert_eq!(got.as_ref(), Some(&rec));
    let again = f.store.create_cascade(&rec, &entry).await.unwrap_err();
    assert!(again.is_conflict(), "{again}");
    assert!(
        f.store
            .get_cascade(&key("INC-1", "bob"))
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test]
async fn incident_create_and_update_are_conditional() {
    let f = fixture().await;
    let trig = Trigger::from_json(&serde_json::json!({
        "incidentId": "INC-7", "severity": "P1", "stakeholderGroupId": "ops", "messageTemplate": "Outage"
    }))
    .unwrap();
    let mut inc = Incident {
        trigger: trig,
        status: IncidentStatus::Open,
        triggered_at: T0,
        closed_at: None,
        cascades: 3,
        expanded: 0,
        version: 0,
        close_passes: 0,
        close_done: Vec::new(),
        tallied: true,
        origin: None,
        all_acknowledged_told: false,
        quorum_reached_at: None,
        updates: Vec::new(),
        reseal_at: None,
    };
    f.store.create_incident(&inc).await.unwrap();
    assert!(
        f.store
            .create_incident(&inc)
            .await
            .unwrap_err()
            .is_conflict()
    );
    inc.expanded = 3;
    inc.version = 1;
    f.store.update_incident(&inc, 0).await.unwrap();
    let stale = f.store.update_incident(&inc, 0).await.unwrap_err();
    assert!(stale.is_conflict(), "{stale}");
    assert_eq!(
        f.store.get_incident(inc.id()).await.unwrap().as_ref(),
        Some(&inc)
    );
}

#[tokio::test]
async fn stale_transition_is_a_conflict_and_its_audit_entry_is_not_written() {
    let f = fixture().await;
    let (rec, entry) = started(key("INC-2", "alice"), 1, T0);
    f.store.create_cascade(&rec, &entry).await.unwrap();
    let (a, ea) = next(
        &rec,
        Event::Ack {
            channel: Channel::Sms,
            attempt: None,
        },
        T0.plus(5_000),
    );
    f.store.transition(&rec, &a, &ea).await.unwrap();
    // A writer that read the old version loses, and writes nothing.
    let (b, eb) = next(
        &rec,
        Event::Ack {
            channel: Channel::Email,
            attempt: None,
        },
        T0.plus(6_000),
    );
    let err = f.store.transition(&rec, &b, &eb).await.unwrap_err();
    match &err {
        muster::Error::Conflict(why) => assert!(why.contains("ConditionalCheckFailed"), "{why}"),
        other => panic!("expected a conflict, got {other}"),
    }
    let trail = f
        .store
        .audit_trail(&rec.cascade.key.incident)
        .await
        .unwrap();
    assert_eq!(trail, vec![entry, ea]);
    assert_eq!(audit::verify_chains(trail.iter()).unwrap(), 2);
    assert_eq!(
        f.store.get_cascade(&rec.cascade.key).await.unwrap(),
        Some(a)
    );
}

#[tokio::test]
async fn overdue_reads_the_sparse_index_a_page_at_a_time() {
    let f = fixture().await;
    let mut due_by = BTreeSet::new();
    for i in 0..30u32 {
        let now = T0.plus(u64::from(i) * 1_000);
        let (rec, entry) = started(key("INC-3", &format!("p{i}")), i, now);
        f.store.create_cascade(&rec, &entry).await.unwrap();
        let rec = if i % 5 == 0 {
            // Acknowledged: terminal, so absent from the index.
            let (a, ea) = next(
                &rec,
                Event::Ack {
                    channel: Channel::Sms,
                    attempt: None,
                },
                now,
            );
            f.store.transition(&rec, &a, &ea).await.unwrap();
            a
        } else {
            rec
        };
        if let Some(due) = rec.cascade.next_due() {
            due_by.insert((due, rec.cascade.key.stakeholder.to_string()));
        }
    }
    let cutoff = due_by.iter().nth(15).unwrap().0;
    let expected: BTreeSet<String> = due_by
        .iter()
        .filter(|(d, _)| *d <= cutoff)
        .map(|(_, s)| s.clone())
        .collect();
    let mut seen = Vec::new();
    let mut cursor = None;
    let mut pages = 0;
    loop {
        let page = f.store.overdue(cutoff, cursor, 4).await.unwrap();
        assert!(page.items.len() <= 4);
        seen.extend(page.items.iter().map(|k| k.stakeholder.to_string()));
        pages += 1;
        match page.next {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    assert!(pages >= 4, "{pages} pages");
    let got: BTreeSet<String> = seen.iter().cloned().collect();
    assert_eq!(got.len(), seen.len(), "no key twice");
    assert_eq!(got, expected);
}

#[tokio::test]
async fn list_cascades_pages_across_all_shards_in_a_stable_order() {
    let f = fixture().await;
    let mut all = BTreeSet::new();
    for i in 0..37u32 {
        let (rec, entry) = started(key("INC-4", &format!("s{i}")), i, T0);
        f.store.create_cascade(&rec, &entry).await.unwrap();
        all.insert(rec.cascade.key.stakeholder.to_string());
    }
    let (other, e) = started(key("INC-5", "s1"), 1, T0);
    f.store.create_cascade(&other, &e).await.unwrap();
    let incident = id(IncidentId::parse("INC-4"));
    let mut seen = Vec::new();
    let mut cursor = None;
    loop {
        let page = f.store.list_cascades(&incident, cursor, 10).await.unwrap();
        assert!(page.items.len() <= 10);
        for r in &page.items {
            // A listing decrypts nothing: the masked contacts are there.
            assert_eq!(r.contacts, ContactMethods::default());
            assert_eq!(
                r.masked,
                CascadeRecord::mask(&contacts(r.name[7..].parse().unwrap()))
            );
            seen.push(r.cascade.key.stakeholder.to_string());
        }
        match page.next {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    assert_eq!(seen.len(), 37);
    assert_eq!(seen.iter().cloned().collect::<BTreeSet<_>>(), all);
    let again: Vec<String> = f
        .store
        .list_cascades(&incident, None, 100)
        .await
        .unwrap()
        .items
        .iter()
        .map(|r| r.cascade.key.stakeholder.to_string())
        .collect();
    assert_eq!(again, seen, "one order for every page size");
}

#[tokio::test]
async fn message_references_round_trip() {
    let f = fixture().await;
    let k = key("INC-6", "alice");
    f.store.put_message_ref("sns-abc-123", &k, 2).await.unwrap();
    assert_eq!(
        f.store.get_message_ref("sns-abc-123").await.unwrap(),
        Some((k, 2))
    );
    assert_eq!(f.store.get_message_ref("nope").await.unwrap(), None);
}

#[tokio::test]
async fn a_receipt_before_its_reference_is_held_for_the_send_to_apply() {
    // A carrier can report on a message before its answer to the send has
    // reached Muster: the receipt is held on the message's item and handed
    // back by the write of the reference; one that comes after the
    // reference gets the reference at once. At most HELD_RECEIPTS are kept.
    use muster::engine::ReceiptStatus::{Delivered, Failed};
    let f = fixture().await;
    let k = key("INC-EARLY", "alice");
    assert_eq!(f.store.hold_receipt("ses-1", Failed).await.unwrap(), None);
    assert_eq!(
        f.store.hold_receipt("ses-1", Delivered).await.unwrap(),
        None
    );
    assert_eq!(f.store.get_message_ref("ses-1").await.unwrap(), None);
    assert_eq!(
        f.store.put_message_ref("ses-1", &k, 3).await.unwrap(),
        vec![Failed, Delivered]
    );
    assert_eq!(
        f.store.hold_receipt("ses-1", Delivered).await.unwrap(),
        Some((k.clone(), 3))
    );
    // Handed back once: the send took them.
    assert_eq!(
        f.store.put_message_ref("ses-1", &k, 3).await.unwrap(),
        vec![]
    );
    assert_eq!(
        f.store.put_message_ref("ses-2", &k, 4).await.unwrap(),
        vec![]
    );
    for _ in 0..muster::ports::HELD_RECEIPTS + 2 {
        assert_eq!(
            f.store.hold_receipt("ses-3", Delivered).await.unwrap(),
            None
        );
    }
    assert_eq!(
        f.store.put_message_ref("ses-3", &k, 5).await.unwrap().len(),
        muster::ports::HELD_RECEIPTS
    );
}

#[tokio::test]
async fn sealed_contacts_open_only_with_their_context() {
    let f = fixture().await;
    let ctx = CipherContext::new("INC-8", "alice");
    let sealed = f.cipher.encrypt(&ctx, b"+12125551234").await.unwrap();
    assert_eq!(
        f.cipher.decrypt(&ctx, &sealed).await.unwrap(),
        b"+12125551234"
    );
    let wrong = CipherContext::new("INC-8", "mallory");
    assert!(f.cipher.decrypt(&wrong, &sealed).await.is_err());
    let mut tampered = sealed.clone();
    let last = tampered.len() - 1;
    tampered[last] ^= 1;
    assert!(f.cipher.decrypt(&ctx, &tampered).await.is_err());
}

/// The work queue and timers on SQS (counting requests) and in memory (for
/// the test to run them).
struct TeeQueue(muster_aws::sqs::SqsQueue, MemoryQueue<()>);
#[async_trait::async_trait]
impl WorkQueue for TeeQueue {
    async fn enqueue(&self, jobs: Vec<(Job, u64)>) -> muster::Result<()> {
        self.0.enqueue(jobs.clone()).await?;
        self.1.enqueue(jobs).await
    }
    async fn backlog(&self) -> muster::Result<u64> {
        self.1.backlog().await
    }
}
struct TeeTimers(muster_aws::timers::SqsTimers, MemoryTimers<()>);
#[async_trait::async_trait]
impl Timers for TeeTimers {
    async fn arm(&self, timers: Vec<TimerMsg>) -> muster::Result<()> {
        self.0.arm(timers.clone()).await?;
        self.1.arm(timers).await
    }
}

async fn sqs_queue(cfg: &aws_config::SdkConfig) -> (aws_sdk_sqs::Client, String) {
    let sqs = aws_sdk_sqs::Client::new(cfg);
    let url = sqs
        .create_queue()
        .queue_name(support::unique("q"))
        .send()
        .await
        .unwrap()
        .queue_url()
        .unwrap()
        .to_string();
    (sqs, url)
}

/// A carrier that accepts everything and remembers what it was given.
#[derive(Default)]
struct Carrier(Mutex<Vec<OutboundMessage>>);
struct Rec(Arc<Carrier>, &'static str);

/// The use cases on the fixture's DynamoDB store: the directory given,
/// every channel on `carrier`, and the queue and timers given.
fn deps_on(
    f: &Fixture,
    directory: Arc<MemoryDirectory>,
    queue: Arc<dyn WorkQueue>,
    timers: Arc<dyn Timers>,
    carrier: &Arc<Carrier>,
    clock: Arc<VirtualClock>,
) -> Deps {
    let policy = Arc::new(Policy::default());
    Deps {
        policy: policy.clone(),
        incidents: f.store.clone(),
        cascades: f.store.clone(),
        ledger: f.store.clone(),
        notes: None,
        siem: Vec::new(),
        numbers: f.store.clone(),
        admin: directory.clone(),
        directory,
        queue,
        timers,
        senders: Senders {
            voice: Arc::new(Rec(carrier.clone(), "voice")),
            sms: Arc::new(Rec(carrier.clone(), "sms")),
            email: Arc::new(Rec(carrier.clone(), "email")),
            push: Arc::new(Rec(carrier.clone(), "push")),
        },
        limiter: Arc::new(MemoryLimiter::new(policy)),
        clock,
        ids: Arc::new(SeededIds::new(1)),
        observer: Arc::new(NoObserver),
        contacts: None,
        ack_links: None,
        vault: None,
        sealing: None,
    }
}
#[async_trait::async_trait]
impl ChannelSender for Rec {
    fn endpoint(&self) -> &str {
        self.1
    }
    async fn send(&self, msg: &OutboundMessage) -> Result<Accepted, SendError> {
        let mut g = self.0.0.lock().unwrap();
        g.push(msg.clone());
        Ok(Accepted {
            provider_message_id: format!("{}-m-{}", msg.key.stakeholder, g.len()),
        })
    }
}

/// Trigger, expand, send and acknowledge through the use cases with the
/// DynamoDB store; no contact detail reaches moto in plaintext, and each
/// transition costs at most 4 write units with its audit entry.
#[tokio::test]
async fn a_cascade_runs_through_the_use_cases_on_dynamodb() {
    let f = fixture().await;
    let clock = VirtualClock::new(T0);
    let agenda: Arc<Agenda<()>> = Agenda::new(clock.clone());
    let people: Vec<Stakeholder> = (0..3u32)
        .map(|i| Stakeholder {
            id: id(StakeholderId::parse(&format!("m{i}"))),
            name: format!("Person {i}"),
            tier: Tier::TWO,
            contacts: contacts(i),
            preferences: vec![],
            manager: None,
            locale: None,
            quiet: None,
            idp: None,
            active: true,
        })
        .collect();
    let group = Group {
        id: id(GroupId::parse("ops")),
        name: "Ops".into(),
        members: people.iter().map(|p| p.id.clone()).collect(),
        on_call_manager: None,
        escalation_channels: vec![],
        idp: None,
    };
    let carrier = Arc::new(Carrier::default());
    let cfg = support::sdk_config().await;
    let (sqs, jobs_url) = sqs_queue(&cfg).await;
    let (_, timers_url) = sqs_queue(&cfg).await;
    let group_name = support::unique("timers");
    let sched = aws_sdk_scheduler::Client::new(&cfg);
    sched
        .create_schedule_group()
        .name(&group_name)
        .send()
        .await
        .unwrap();
    let queue = Arc::new(TeeQueue(
        muster_aws::sqs::SqsQueue::new(sqs.clone(), &jobs_url),
        MemoryQueue(agenda.clone()),
    ));
    let tee_timers = Arc::new(TeeTimers(
        muster_aws::timers::SqsTimers::new(
            sqs,
            &timers_url,
            sched,
            muster_aws::timers::ScheduleTarget {
                group: group_name,
                queue_arn: "arn:aws:sqs:us-east-1:123456789012:timers".into(),
                role_arn: "arn:aws:iam::123456789012:role/muster-scheduler".into(),
            },
            clock.clone(),
        ),
        MemoryTimers(agenda.clone()),
    ));
    let directory = Arc::new(MemoryDirectory::new(vec![group], people));
    let deps = deps_on(
        &f,
        directory,
        queue.clone(),
        tee_timers.clone(),
        &carrier,
        clock.clone(),
    );
    let trig = Trigger::from_json(&serde_json::json!({
        "incidentId": "INC-9", "severity": "P1", "stakeholderGroupId": "ops", "messageTemplate": "Outage"
    }))
    .unwrap();
    app::trigger(&deps, trig).await.unwrap();
    // Run the jobs due in the next second (expansion, then the first sends).
    let horizon = T0.plus(1_000);
    let mut timers = Vec::new();
    while let Some((at, item)) = agenda.pop_due(horizon) {
        clock.set(at);
        match item {
            Item::Job(j) => app::dispatch(&deps, j).await.unwrap(),
            other => timers.push(other),
        }
    }
    let sent = carrier.0.lock().unwrap().clone();
    assert_eq!(sent.len(), 3, "one first-channel message each");
    let incident = id(IncidentId::parse("INC-9"));
    let before: MeterReading = f.store.meter().read();
    for m in &sent {
        let r = app::receipt(
            &deps,
            app::ReceiptEvent::Ack {
                key: m.key.clone(),
                channel: m.channel,
                attempt: Some(m.attempt),
            },
        )
        .await
        .unwrap();
        assert!(matches!(r, app::ReceiptOutcome::Applied(_)), "{r:?}");
    }
    let after = f.store.meter().read();
    // Each ack: one consistent read (state + contacts) and one transaction
    // of the state, its audit entry and the incident's tally item.
    let per_ack_units = (after.write_units - before.write_units) / 3;
    assert!(
        per_ack_units <= 6,
        "{per_ack_units} write units per transition"
    );
    let total = f.store.meter().read();
    let sqs_requests = queue.0.meter().read().requests + tee_timers.0.meter().read().requests;
    println!(
        "per stakeholder, trigger to ack on the first channel: {:.1} DynamoDB write units, \
         {:.1} DynamoDB requests, {:.1} SQS send requests",
        total.write_units as f64 / 3.0,
        total.requests as f64 / 3.0,
        sqs_requests as f64 / 3.0
    );
    let page = f.store.list_cascades(&incident, None, 10).await.unwrap();
    assert_eq!(page.items.len(), 3);
    assert!(
        page.items
            .iter()
            .all(|r| r.cascade.status == CascadeStatus::Acknowledged)
    );
    for (i, m) in sent.iter().enumerate() {
        let provider_id = format!("{}-m-{}", m.key.stakeholder, i + 1);
        assert_eq!(
            f.store.get_message_ref(&provider_id).await.unwrap(),
            Some((m.key.clone(), m.attempt))
        );
    }
    let trail = f.store.audit_trail(&incident).await.unwrap();
    assert!(audit::verify_chains(trail.iter()).unwrap() >= 3 * 3);
    // No contact detail anywhere in what moto stores.
    let dump = support::data_json().to_string();
    assert!(dump.contains(&f.table) && dump.contains(&f.audit_table));
    let cfg = support::sdk_config().await;
    let dump = format!(
        "{}{}",
        support::scan_text(&cfg, &f.table).await,
        support::scan_text(&cfg, &f.audit_table).await
    );
    assert!(dump.contains("PII#"), "the scan sees the items");
    for i in 0..3u32 {
        let c = contacts(i);
        for secret in [
            c.phone.as_ref().unwrap().expose(),
            c.email.as_ref().unwrap().expose(),
        ] {
            assert!(!dump.contains(secret), "plaintext contact in moto's items");
        }
    }
    // Nothing is kept for ever: every state item (incident, cascades,
    // sealed contacts, message references, markers) expires within the
    // audit retention of its last write; contact holds with their hold.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let retention = u64::from(muster_aws::dynamo::state::DEFAULT_RETENTION_DAYS) * 86_400;
    let items = aws_sdk_dynamodb::Client::new(&cfg)
        .scan()
        .table_name(&f.table)
        .send()
        .await
        .unwrap();
    let items = items.items();
    assert!(items.len() > 10, "{} items", items.len());
    for it in items {
        let sk = it["sk"].as_s().unwrap();
        let at: u64 = it
            .get("expires_at")
            .unwrap_or_else(|| panic!("{sk}: no expires_at"))
            .as_n()
            .unwrap()
            .parse()
            .unwrap();
        if !sk.starts_with("CONTACT#") {
            assert!(
                at > now && at <= now + retention + 600,
                "{sk}: expires {at}, now {now}"
            );
        }
    }
}

#[tokio::test]
async fn transition_of_a_cascade_never_created_is_not_found() {
    let f = fixture().await;
    let (rec, _) = started(key("INC-NF", "alice"), 1, T0);
    let (a, ea) = next(
        &rec,
        Event::Ack {
            channel: Channel::Sms,
            attempt: None,
        },
        T0.plus(5_000),
    );
    let err = f.store.transition(&rec, &a, &ea).await.unwrap_err();
    assert!(
        matches!(err, muster::Error::NotFound(_)),
        "expected NotFound, got {err}"
    );
    // Nothing was written: no cascade, no audit entry.
    assert!(f.store.get_cascade(&a.cascade.key).await.unwrap().is_none());
    assert!(
        f.store
            .audit_trail(&a.cascade.key.incident)
            .await
            .unwrap()
            .is_empty()
    );
}

fn phone(n: &str) -> PhoneNumber {
    id(PhoneNumber::parse(n))
}

#[tokio::test]
async fn number_index_finds_open_cascades_by_keyed_hash_only() {
    use muster_aws::dynamo::IndexKey;
    let cfg = support::sdk_config().await;
    let ddb = aws_sdk_dynamodb::Client::new(&cfg);
    let (table, audit_table) = (support::unique("state"), support::unique("audit"));
    DynamoStore::create_tables(&ddb, &table, &audit_table)
        .await
        .unwrap();
    let sealer = Arc::new(KmsContactCipher::new(
        aws_sdk_kms::Client::new(&cfg),
        support::kms_key(&cfg).await,
    ));
    let nk = IndexKey::derive(&muster::secret::Secret::new("number-index-test-secret"));
    let store = DynamoStore::new(ddb.clone(), &table, &audit_table, sealer.clone())
        .with_index_key(nk.clone());
    let (n1, n2) = (phone("+13125550191"), phone("+13125550192"));
    let mut made = Vec::new();
    for (i, (who, c)) in [
        ("alice", (Some(n1.clone()), None)),
        ("bob", (Some(n2.clone()), Some(n1.clone()))),
        ("carol", (Some(n2.clone()), Some(n2.clone()))),
    ]
    .into_iter()
    .enumerate()
    {
        let (mut rec, entry) = started(key("INC-NUM", who), i as u32, T0.plus(1_000 * i as u64));
        rec.contacts = ContactMethods {
            phone: c.0,
            sms: c.1,
            email: None,
            ..Default::default()
        };
        store.create_cascade(&rec, &entry).await.unwrap();
        made.push(rec);
    }
    let (alice, bob, carol) = (&made[0], &made[1], &made[2]);
    assert_eq!(
        store.open_cascades_for_number(&n1).await.unwrap(),
        vec![alice.clone(), bob.clone()]
    );
    assert_eq!(
        store.open_cascades_for_number(&n2).await.unwrap(),
        vec![bob.clone(), carol.clone()]
    );
    assert!(
        store
            .open_cascades_for_number(&phone("+13125550193"))
            .await
            .unwrap()
            .is_empty()
    );
    // Alice acknowledges: her cascade is terminal, and its index item goes.
    let (acked, e) = next(
        alice,
        Event::Ack {
            channel: Channel::Sms,
            attempt: None,
        },
        T0.plus(5_000),
    );
    assert!(acked.cascade.status.is_terminal());
    store.transition(alice, &acked, &e).await.unwrap();
    assert_eq!(
        store.open_cascades_for_number(&n1).await.unwrap(),
        vec![bob.clone()]
    );
    let left = ddb
        .query()
        .table_name(&table)
        .key_condition_expression("pk = :pk")
        .expression_attribute_values(
            ":pk",
            aws_sdk_dynamodb::types::AttributeValue::S(format!("NUM#{}", nk.tag(&n1))),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(left.count(), 1, "only bob's index item is left for n1");
    // Another key finds nothing; no key is an error, not an empty answer.
    let other = DynamoStore::new(ddb.clone(), &table, &audit_table, sealer.clone())
        .with_index_key(IndexKey::derive(&muster::secret::Secret::new("other")));
    assert!(
        other
            .open_cascades_for_number(&n2)
            .await
            .unwrap()
            .is_empty()
    );
    let none = DynamoStore::new(ddb, &table, &audit_table, sealer);
    assert!(none.open_cascades_for_number(&n2).await.is_err());
    // What moto stores holds the tags, never the numbers.
    let dump = support::data_json().to_string();
    assert!(dump.contains(&table) && dump.contains(&audit_table));
    let dump = format!(
        "{}{}",
        support::scan_text(&cfg, &table).await,
        support::scan_text(&cfg, &audit_table).await
    );
    assert!(dump.contains(&nk.tag(&n2)) && dump.contains("NUM#"));
    for n in [&n1, &n2] {
        assert!(
            !dump.contains(n.expose()),
            "plaintext number in moto's items"
        );
        assert!(
            !dump.contains(&n.expose()[2..]),
            "national number in moto's items"
        );
    }
}

fn incident(id: &str, status: IncidentStatus) -> Incident {
    let trig = Trigger::from_json(&serde_json::json!({
        "incidentId": id, "severity": "P1", "stakeholderGroupId": "ops", "messageTemplate": "Outage"
    }))
    .unwrap();
    Incident {
        trigger: trig,
        status,
        triggered_at: T0,
        closed_at: None,
        cascades: 2,
        expanded: 0,
        version: 0,
        close_passes: 0,
        close_done: Vec::new(),
        tallied: true,
        origin: None,
        all_acknowledged_told: false,
        quorum_reached_at: None,
        updates: Vec::new(),
        reseal_at: None,
    }
}

#[tokio::test]
async fn seal_store_keeps_open_incidents_heads_and_seals_in_the_audit_table() {
    use muster::adapters::memory::LocalSealSigner;
    use muster::ports::SealSigner as _;
    let f = fixture().await;
    let (s1, s2) = ("INC-SEAL-1", "INC-SEAL-2");
    f.store
        .create_incident(&incident(s1, IncidentStatus::Open))
        .await
        .unwrap();
    let mut closing = incident(s2, IncidentStatus::Open);
    f.store.create_incident(&closing).await.unwrap();
    assert_eq!(
        f.store.open_incidents().await.unwrap(),
        vec![id(IncidentId::parse(s1)), id(IncidentId::parse(s2))]
    );
    closing.status = IncidentStatus::Closed;
    closing.version = 1;
    f.store.update_incident(&closing, 0).await.unwrap();
    assert_eq!(
        f.store.open_incidents().await.unwrap(),
        vec![id(IncidentId::parse(s1))]
    );
    // A missing incident is NotFound, as in the memory store.
    let ghost = incident("INC-GHOST", IncidentStatus::Closed);
    assert!(matches!(
        f.store.update_incident(&ghost, 0).await.unwrap_err(),
        muster::Error::NotFound(_)
    ));
    // Two cascades, one of them moved on: heads from the state items.
    let (a, ea) = started(key(s1, "alice"), 1, T0);
    let (b, eb) = started(key(s1, "bob"), 2, T0);
    f.store.create_cascade(&a, &ea).await.unwrap();
    f.store.create_cascade(&b, &eb).await.unwrap();
    let (a2, ea2) = next(
        &a,
        Event::Ack {
            channel: Channel::Sms,
            attempt: None,
        },
        T0.plus(1_000),
    );
    f.store.transition(&a, &a2, &ea2).await.unwrap();
    let inc = id(IncidentId::parse(s1));
    let mut heads = f.store.chain_heads(&inc).await.unwrap();
    heads.sort_by(|x, y| x.stakeholder.cmp(&y.stakeholder));
    assert_eq!(
        heads,
        vec![
            audit::ChainHead {
                route: Route::Member,
                stakeholder: a2.cascade.key.stakeholder.clone(),
                seq: 1,
                hash: ea2.hash.clone()
            },
            audit::ChainHead {
                route: Route::Member,
                stakeholder: b.cascade.key.stakeholder.clone(),
                seq: 0,
                hash: eb.hash.clone()
            },
        ]
    );
    let trail = f.store.audit_trail(&inc).await.unwrap();
    assert_eq!(
        audit::heads_digest_of(&heads),
        audit::heads_digest(trail.iter())
    );
    // Heads never read the audit table: a store whose audit table does not
    // exist gives the same.
    let cfg = support::sdk_config().await;
    let blind = DynamoStore::new(
        aws_sdk_dynamodb::Client::new(&cfg),
        &f.table,
        "no-such-audit-table",
        f.cipher.clone(),
    );
    assert_eq!(blind.chain_heads(&inc).await.unwrap().len(), 2);
    // Seals accumulate in the audit table under INC#<id>#SEAL.
    let sealer = LocalSealSigner::new(3);
    let mut seal = audit::Seal::unsigned(
        inc.clone(),
        T0.plus(2_000),
        audit::heads_digest_of(&heads),
        sealer.describe(),
    );
    seal.signature = sealer.sign(&seal.message()).await.unwrap();
    f.store.put_seal(&seal).await.unwrap();
    f.store.put_seal(&seal).await.unwrap();
    let mut later = seal.clone();
    later.at = T0.plus(3_000);
    later.signature = sealer.sign(&later.message()).await.unwrap();
    f.store.put_seal(&later).await.unwrap();
    assert_eq!(
        f.store.seals(&inc).await.unwrap(),
        vec![seal.clone(), later.clone()]
    );
    assert!(
        f.store
            .seals(&id(IncidentId::parse(s2)))
            .await
            .unwrap()
            .is_empty()
    );
    let mut lines: Vec<audit::ExportLine> = trail
        .into_iter()
        .map(|e| audit::ExportLine::Entry(Box::new(e)))
        .collect();
    lines.push(audit::ExportLine::Seal { seal: later });
    let verified = audit::verify_export(&lines).unwrap();
    assert_eq!(verified.sealed, vec![inc.clone()]);
    let stored = support::scan_text(&cfg, &f.audit_table).await;
    assert!(stored.contains(&format!("INC#{s1}#SEAL")));
    assert_eq!(stored.matches("#SEAL").count(), 2);
    assert!(stored.contains("expires_at"));
    assert!(!support::scan_text(&cfg, &f.table).await.contains("#SEAL"));
}

#[tokio::test]
async fn a_person_s_member_and_escalation_cascades_are_stored_apart_and_read_together() {
    let f = fixture().await;
    let inc = "INC-ESC";
    let member = key(inc, "duty");
    let about = |who: &str| CascadeKey {
        route: Route::escalation(id(StakeholderId::parse(who))),
        ..key(inc, "duty")
    };
    for (n, k) in [(1, member.clone()), (2, about("carol")), (3, about("dan"))] {
        let (rec, entry) = started(k, n, T0);
        f.store.create_cascade(&rec, &entry).await.unwrap();
    }
    // Someone else in the same shard is not the person's.
    let (other, e) = started(key(inc, "carol"), 4, T0);
    f.store.create_cascade(&other, &e).await.unwrap();
    let incident = id(IncidentId::parse(inc));
    let mine = f
        .store
        .person_cascades(&incident, &id(StakeholderId::parse("duty")))
        .await
        .unwrap();
    let routes: BTreeSet<String> = mine.iter().map(|r| r.cascade.key.route.encode()).collect();
    assert_eq!(
        routes,
        BTreeSet::from([
            "member".to_string(),
            "escalation:carol".to_string(),
            "escalation:dan".to_string()
        ])
    );
    // Each key reads back whole, with its contacts, and lists with the rest.
    let got = f.store.get_cascade(&about("dan")).await.unwrap().unwrap();
    assert_eq!(got.contacts, contacts(3));
    let listed = f.store.list_cascades(&incident, None, 100).await.unwrap();
    assert_eq!(listed.items.len(), 4);
}

#[tokio::test]
async fn open_escalations_name_a_person_s_unended_escalations_oldest_first() {
    let f = fixture().await;
    let inc = "INC-OPEN";
    let about = |who: &str| CascadeKey {
        route: Route::escalation(id(StakeholderId::parse(who))),
        ..key(inc, "duty")
    };
    let (member, e) = started(key(inc, "duty"), 1, T0);
    f.store.create_cascade(&member, &e).await.unwrap();
    // Created newest first: the answer is ordered by creation, not by key.
    for (n, who) in [(2, "zoe"), (3, "yan"), (4, "xia"), (5, "wes")] {
        let (rec, entry) = started(about(who), n, T0.plus(10_000 - u64::from(n) * 1_000));
        f.store.create_cascade(&rec, &entry).await.unwrap();
    }
    // One has ended (acknowledged): it is not open.
    let yan = f.store.get_cascade(&about("yan")).await.unwrap().unwrap();
    let (acked, entry) = next(
        &yan,
        Event::Ack {
            channel: Channel::Sms,
            attempt: None,
        },
        T0.plus(20_000),
    );
    f.store.transition(&yan, &acked, &entry).await.unwrap();
    let incident = id(IncidentId::parse(inc));
    let duty = id(StakeholderId::parse("duty"));
    let open = f
        .store
        .open_escalations(&incident, &duty, 10)
        .await
        .unwrap();
    let names: Vec<String> = open.iter().map(|o| o.key.route.encode()).collect();
    assert_eq!(
        names,
        ["escalation:wes", "escalation:xia", "escalation:zoe"],
        "oldest first, the ended one left out, the member cascade not an escalation"
    );
    let two = f.store.open_escalations(&incident, &duty, 2).await.unwrap();
    assert_eq!(two.len(), 2);
    assert_eq!(two[0].key, about("wes"));
}

#[tokio::test]
async fn the_contact_ledger_lets_one_cascade_hold_a_channel_of_a_person_at_a_time() {
    let f = fixture().await;
    let incident = id(IncidentId::parse("INC-LEDGER"));
    let who = id(StakeholderId::parse("duty"));
    let member = key("INC-LEDGER", "duty");
    let escalation = CascadeKey {
        route: Route::escalation(id(StakeholderId::parse("carol"))),
        ..member.clone()
    };
    let hold = 90_000;
    let reserve = |holder: &CascadeKey, channel, now| {
        let (store, incident, who, holder) = (
            f.store.clone(),
            incident.clone(),
            who.clone(),
            holder.clone(),
        );
        async move {
            store
                .reserve(&incident, &who, channel, &holder, now, hold)
                .await
                .unwrap()
        }
    };
    assert_eq!(
        reserve(&member, Channel::Voice, T0).await,
        Reservation::Granted
    );
    // The member cascade may call again (its own retry); the escalation may
    // not, and learns when voice frees and that SMS is free.
    assert_eq!(
        reserve(&member, Channel::Voice, T0.plus(15_000)).await,
        Reservation::Granted
    );
    match reserve(&escalation, Channel::Voice, T0.plus(20_000)).await {
        Reservation::Busy(waits) => {
            assert_eq!(
                waits.free_at[Channel::Voice.index()],
                Some(T0.plus(105_000))
            );
            assert_eq!(waits.free_at[Channel::Sms.index()], None);
        }
        Reservation::Granted => panic!("two cascades held one channel"),
    }
    assert_eq!(
        reserve(&escalation, Channel::Sms, T0.plus(20_000)).await,
        Reservation::Granted
    );
    // Once the hold is over, the other cascade may call.
    assert_eq!(
        reserve(&escalation, Channel::Voice, T0.plus(105_000)).await,
        Reservation::Granted
    );

    // Ten dispatchers race for one free channel: exactly one wins.
    let racers: Vec<CascadeKey> = (0..10)
        .map(|i| CascadeKey {
            route: Route::escalation(id(StakeholderId::parse(&format!("p{i}")))),
            ..member.clone()
        })
        .collect();
    let at = T0.plus(600_000);
    let results =
        futures::future::join_all(racers.iter().map(|k| reserve(k, Channel::Sms, at))).await;
    let won = results
        .iter()
        .filter(|r| **r == Reservation::Granted)
        .count();
    assert_eq!(won, 1, "{results:?}");
}

#[tokio::test]
async fn the_incident_list_reads_open_incidents_first_then_ended_ones_newest_first() {
    let f = fixture().await;
    // Five incidents a minute apart, and a sixth in the same millisecond as
    // the fifth; the second, fourth, fifth and sixth end.
    for (n, name) in ["INC-L1", "INC-L2", "INC-L3", "INC-L4", "INC-L5", "INC-L6"]
        .iter()
        .enumerate()
    {
        let mut inc = incident(name, IncidentStatus::Open);
        inc.triggered_at = T0.plus(n.min(4) as u64 * 60_000);
        f.store.create_incident(&inc).await.unwrap();
        if matches!(*name, "INC-L2" | "INC-L4" | "INC-L5" | "INC-L6") {
            let mut closed = inc.clone();
            closed.status = IncidentStatus::Closed;
            closed.closed_at = Some(T0.plus(3_600_000));
            closed.version = inc.version + 1;
            f.store.update_incident(&closed, inc.version).await.unwrap();
        }
    }
    let ids = |p: &Page<Incident>| -> Vec<String> {
        p.items.iter().map(|i| i.id().to_string()).collect()
    };
    let all = f.store.recent_incidents(None, 100).await.unwrap();
    // Within one millisecond, by id descending (the order of the key).
    assert_eq!(
        ids(&all),
        ["INC-L3", "INC-L1", "INC-L6", "INC-L5", "INC-L4", "INC-L2"]
    );
    assert_eq!(all.next, None);
    // A page at a time, each size: the same order, nothing twice.
    for limit in [1, 2, 3, 4] {
        let mut seen = Vec::new();
        let mut cursor = None;
        for _ in 0..20 {
            let page = f.store.recent_incidents(cursor, limit).await.unwrap();
            assert!(page.items.len() <= limit);
            seen.extend(ids(&page));
            match page.next {
                Some(c) => cursor = Some(c),
                None => break,
            }
        }
        assert_eq!(seen, ids(&all), "limit {limit}");
    }
    let bad = f
        .store
        .recent_incidents(Some("nonsense".into()), 10)
        .await
        .unwrap_err();
    assert!(bad.to_string().contains("cursor"), "{bad}");
}

/// Counts the contact openings (KMS decrypts) a store asks for.
struct CountingCipher(Arc<KmsContactCipher>, std::sync::atomic::AtomicU64);

#[async_trait::async_trait]
impl ContactCipher for CountingCipher {
    async fn encrypt(&self, ctx: &CipherContext, plaintext: &[u8]) -> muster::Result<Vec<u8>> {
        self.0.encrypt(ctx, plaintext).await
    }
    async fn decrypt(&self, ctx: &CipherContext, sealed: &[u8]) -> muster::Result<Vec<u8>> {
        self.1.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.0.decrypt(ctx, sealed).await
    }
}

/// People in the at-scale test (`MUSTER_TEST_SCALE` overrides 120;
/// scripts/test runs 1,000). On scripts/moto-server.py a 10,000-person run
/// takes about 13 minutes; see docs/aws.md.
fn scale() -> u32 {
    std::env::var("MUSTER_TEST_SCALE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(120)
}

/// docs/api.md: the status of an incident of any size is its counts and one
/// page, read without decrypting a contact; close answers at once and its
/// jobs cancel everyone, after which the status says closed.
#[tokio::test]
async fn status_and_close_of_a_large_incident_on_dynamodb() {
    use futures::StreamExt as _;
    let f = fixture().await;
    let cfg = support::sdk_config().await;
    let counting = Arc::new(CountingCipher(
        f.cipher.clone(),
        std::sync::atomic::AtomicU64::new(0),
    ));
    let store = Arc::new(DynamoStore::new(
        aws_sdk_dynamodb::Client::new(&cfg),
        &f.table,
        &f.audit_table,
        counting.clone(),
    ));
    let n = scale();
    let mut inc = incident("INC-BIG", IncidentStatus::Open);
    inc.cascades = n;
    inc.expanded = n;
    store.create_incident(&inc).await.unwrap();
    let started_at = std::time::Instant::now();
    let made: Vec<CascadeRecord> = futures::stream::iter(0..n)
        .map(|i| {
            let store = store.clone();
            async move {
                let (rec, entry) = started(key("INC-BIG", &format!("p{i:05}")), i, T0);
                store.create_cascade(&rec, &entry).await.unwrap();
                rec
            }
        })
        // One at a time: moto's transactions are not safe side by side
        // (its rollback copy fails with "dictionary changed size").
        .buffered(1)
        .collect()
        .await;
    let create_secs = started_at.elapsed().as_secs_f64();
    println!("created {n} in {create_secs:.1} s");
    // Every 100th person acknowledges by SMS.
    let every_100th: Vec<&CascadeRecord> = made
        .iter()
        .filter(|r| r.cascade.key.stakeholder.as_str().ends_with("00"))
        .collect();
    for rec in &every_100th {
        let (acked, e) = next(
            rec,
            Event::Ack {
                channel: Channel::Sms,
                attempt: None,
            },
            T0.plus(5_000),
        );
        store.transition(rec, &acked, &e).await.unwrap();
    }
    let acked = every_100th.len() as u64;
    println!(
        "acknowledged {acked} at {:.1} s",
        started_at.elapsed().as_secs_f64()
    );

    let agenda: Arc<Agenda<()>> = Agenda::new(VirtualClock::new(T0.plus(10_000)));
    let clock = VirtualClock::new(T0.plus(10_000));
    let policy = Arc::new(Policy::default());
    let directory = Arc::new(MemoryDirectory::new(vec![], vec![]));
    let deps = Deps {
        policy: policy.clone(),
        incidents: store.clone(),
        cascades: store.clone(),
        ledger: store.clone(),
        notes: None,
        siem: Vec::new(),
        numbers: store.clone(),
        admin: directory.clone(),
        directory,
        queue: Arc::new(MemoryQueue(agenda.clone())),
        timers: Arc::new(MemoryTimers(agenda.clone())),
        senders: Senders {
            voice: Arc::new(Rec(Arc::default(), "voice")),
            sms: Arc::new(Rec(Arc::default(), "sms")),
            email: Arc::new(Rec(Arc::default(), "email")),
            push: Arc::new(Rec(Arc::default(), "push")),
        },
        limiter: Arc::new(MemoryLimiter::new(policy)),
        clock: clock.clone(),
        ids: Arc::new(SeededIds::new(1)),
        observer: Arc::new(NoObserver),
        contacts: None,
        ack_links: None,
        vault: None,
        sealing: None,
    };
    let big = id(IncidentId::parse("INC-BIG"));
    let opened = counting.1.load(std::sync::atomic::Ordering::Relaxed);
    let t = std::time::Instant::now();
    let view = app::status(&deps, &big, &app::StatusQuery::default())
        .await
        .unwrap();
    let status_ms = t.elapsed().as_millis();
    let body = serde_json::to_vec(&view).unwrap();
    assert_eq!(view.progress.members.total(), u64::from(n));
    assert_eq!(view.counts.acknowledged, acked);
    assert_eq!(view.progress.by_channel[&Channel::Sms].acknowledged, acked);
    assert_eq!(view.stakeholders.len(), 100);
    assert!(view.next.is_some());
    assert!(
        view.stakeholders.iter().all(|s| !s.contacts.is_empty()),
        "masked contacts are shown"
    );
    assert_eq!(
        counting.1.load(std::sync::atomic::Ordering::Relaxed),
        opened,
        "the status decrypts no contact"
    );
    // A filtered page finds the acknowledged ones, a page at a time.
    let mut q = app::StatusQuery {
        filter: app::StakeholderFilter {
            state: Some(CascadeStatus::Acknowledged),
            ..Default::default()
        },
        ..Default::default()
    };
    let mut found = 0;
    let mut pages = 0;
    loop {
        let page = app::status(&deps, &big, &q).await.unwrap();
        assert!(
            page.stakeholders
                .iter()
                .all(|s| s.status == CascadeStatus::Acknowledged)
        );
        found += page.stakeholders.len() as u64;
        pages += 1;
        match page.next {
            Some(c) => q.cursor = Some(c),
            None => break,
        }
    }
    assert_eq!(found, acked);

    // Close: at once, then the jobs (one per shard, a page each).
    let t = std::time::Instant::now();
    let closing = app::close(&deps, &big).await.unwrap();
    let close_ms = t.elapsed().as_millis();
    assert_eq!(closing.status, IncidentStatus::Closing);
    let t = std::time::Instant::now();
    let mut jobs = 0;
    while let Some((_, item)) = agenda.pop_due(T0.plus(3_600_000)) {
        if let Item::Job(j) = item {
            jobs += 1;
            app::dispatch(&deps, j).await.unwrap();
        }
    }
    let cancel_secs = t.elapsed().as_secs_f64();
    let view = app::status(&deps, &big, &app::StatusQuery::default())
        .await
        .unwrap();
    assert_eq!(view.incident.status, IncidentStatus::Closed);
    assert_eq!(view.counts.cancelled, u64::from(n) - acked);
    assert_eq!(view.counts.acknowledged, acked);
    // Against a recount of every stored cascade.
    let mut recount = muster::engine::Tally::default();
    let mut cursor = None;
    loop {
        let page = store.list_cascades(&big, cursor, 100).await.unwrap();
        for r in &page.items {
            recount.add(&muster::engine::Tally::of(&r.cascade, r.needs_review));
        }
        match page.next {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    assert_eq!(recount, store.tally(&big).await.unwrap());
    // The audit trail a page at a time is the whole trail, in its order.
    let whole: Vec<String> = store
        .audit_trail(&big)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.hash)
        .collect();
    let (mut paged, mut cursor, mut audit_pages) = (Vec::new(), None, 0);
    loop {
        let page = store.audit_page(&big, cursor, 100).await.unwrap();
        assert!(page.items.len() <= 100);
        audit_pages += 1;
        paged.extend(page.items.into_iter().map(|e| e.hash));
        match page.next {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    assert_eq!(paged, whole);
    assert!(audit_pages > 1);
    println!(
        "{n} people on moto: created in {create_secs:.1} s; status page {} bytes in {status_ms} ms, \
         0 decrypts; {pages} filtered pages for {acked} acknowledged; close answered in {close_ms} ms, \
         {jobs} jobs cancelled {} in {cancel_secs:.1} s",
        body.len(),
        u64::from(n) - acked
    );
    // moto's transactions copy every table it holds: leave it lighter for
    // the tests that share it.
    let ddb = aws_sdk_dynamodb::Client::new(&cfg);
    for table in [&f.table, &f.audit_table] {
        ddb.delete_table()
            .table_name(table.as_str())
            .send()
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn a_send_is_claimed_once_per_sending_phase_and_only_from_a_current_read() {
    // Two workers handed the same send job: the first claim wins, the
    // second is held off while the lease runs; a worker whose read another
    // write has overtaken is told the cascade changed; a lease that ran out
    // (its worker died before writing) can be claimed again.
    let f = fixture().await;
    let (rec, entry) = started(key("INC-CLAIM", "alice"), 1, T0);
    f.store.create_cascade(&rec, &entry).await.unwrap();
    let claim = |r: &CascadeRecord, now: Ts| {
        let store = f.store.clone();
        let r = r.clone();
        async move { store.claim_send(&r, 1, T0, now, 60_000).await.unwrap() }
    };
    assert_eq!(claim(&rec, T0).await, SendClaim::Claimed);
    assert_eq!(claim(&rec, T0.plus(1)).await, SendClaim::Held);
    // Another phase of the same attempt is another claim.
    assert_eq!(
        f.store
            .claim_send(&rec, 1, T0.plus(5), T0.plus(5), 60_000)
            .await
            .unwrap(),
        SendClaim::Claimed
    );
    let (after, entry) = next(&rec, Event::Cancel, T0.plus(10));
    f.store.transition(&rec, &after, &entry).await.unwrap();
    assert_eq!(claim(&rec, T0.plus(70_000)).await, SendClaim::Changed);
    assert_eq!(claim(&after, T0.plus(30_000)).await, SendClaim::Held);
    assert_eq!(claim(&after, T0.plus(60_000)).await, SendClaim::Claimed);
}

/// A quorum on DynamoDB: acknowledgements written side by side record the
/// moment once (one conditional write wins; the stop is queued once per
/// store partition), the status view reads its progress from the tally,
/// and the stop cancels those still open.
#[tokio::test]
async fn a_quorum_met_by_concurrent_acknowledgements_is_recorded_once_and_stops_the_rest() {
    let f = fixture().await;
    let clock = VirtualClock::new(T0);
    let agenda: Arc<Agenda<()>> = Agenda::new(clock.clone());
    let people: Vec<Stakeholder> = (0..6u32)
        .map(|i| {
            let mut p = Stakeholder::new(
                id(StakeholderId::parse(&format!("q{i}"))),
                format!("Person {i}"),
                if i < 2 { Tier::ONE } else { Tier::TWO },
                contacts(i),
            );
            p.preferences = vec![Channel::Email];
            p
        })
        .collect();
    let group = Group {
        id: id(GroupId::parse("ops")),
        name: "Ops".into(),
        members: people.iter().map(|p| p.id.clone()).collect(),
        on_call_manager: None,
        escalation_channels: vec![],
        idp: None,
    };
    let carrier = Arc::new(Carrier::default());
    let directory = Arc::new(MemoryDirectory::new(vec![group], people));
    let deps = deps_on(
        &f,
        directory,
        Arc::new(MemoryQueue(agenda.clone())),
        Arc::new(MemoryTimers(agenda.clone())),
        &carrier,
        clock.clone(),
    );
    let trig = Trigger::from_json(&serde_json::json!({
        "incidentId": "INC-Q", "severity": "P1", "stakeholderGroupId": "ops",
        "messageTemplate": "Outage", "quorum": {"count": 3, "tiers": {"1": 1}}, "stopOnQuorum": true
    }))
    .unwrap();
    app::trigger(&deps, trig).await.unwrap();
    let run_jobs = async |horizon: Ts| {
        let mut stops = 0;
        while let Some((at, item)) = agenda.pop_due(horizon) {
            clock.set(at.max(clock.now()));
            if let Item::Job(j) = item {
                stops += usize::from(matches!(j, Job::Stop { .. }));
                app::dispatch(&deps, j).await.unwrap();
            }
        }
        stops
    };
    assert_eq!(run_jobs(T0.plus(1_000)).await, 0);
    let sent = carrier.0.lock().unwrap().clone();
    assert_eq!(sent.len(), 6, "one message each");
    // q0 (tier 1), q2 and q3 answer at the same moment: three acks written
    // side by side, each followed by its quorum check.
    let acks = sent
        .iter()
        .filter(|m| ["q0", "q2", "q3"].contains(&m.key.stakeholder.as_str()))
        .map(|m| {
            app::receipt(
                &deps,
                app::ReceiptEvent::Ack {
                    key: m.key.clone(),
                    channel: m.channel,
                    attempt: Some(m.attempt),
                },
            )
        });
    for r in futures::future::join_all(acks).await {
        assert!(matches!(r.unwrap(), app::ReceiptOutcome::Applied(_)));
    }
    let incident = id(IncidentId::parse("INC-Q"));
    let inc = f.store.get_incident(&incident).await.unwrap().unwrap();
    assert!(inc.quorum_reached_at.is_some(), "recorded");
    let stops = run_jobs(clock.now().plus(5_000)).await;
    assert_eq!(stops, usize::from(f.store.parts()), "the stop queued once");
    let view = app::status(&deps, &incident, &app::StatusQuery::default())
        .await
        .unwrap();
    let q = view.quorum.unwrap();
    assert!(q.met && q.reached_at == inc.quorum_reached_at);
    assert_eq!((q.acknowledged, q.by_tier["1"].acknowledged), (3, 1));
    assert_eq!(view.progress.members.cancelled, 3, "q1, q4, q5 stood down");
    let trail = f.store.audit_trail(&incident).await.unwrap();
    let stood_down = trail
        .iter()
        .filter(|e| {
            e.record.kind == muster::engine::AuditKind::Cancelled
                && e.record
                    .note
                    .as_deref()
                    .is_some_and(|n| n.contains("quorum"))
        })
        .count();
    assert_eq!(stood_down, 3);
}
