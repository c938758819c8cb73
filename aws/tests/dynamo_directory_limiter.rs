//! The directory, the trigger idempotency record and the distributed rate
//! limiter on DynamoDB, against moto.
#![allow(clippy::unwrap_used)]

mod support;

use muster::domain::*;
use muster::policy::Policy;
use muster::ports::{Admit, Directory, RateLimiter};
use muster::ratelimit::Ticket;
use muster_aws::crypto::KmsSealer;
use muster_aws::dynamo::limiter::DEFAULT_PAUSE_MS;
use muster_aws::dynamo::{
    DynamoDirectory, DynamoLimiter, DynamoStore, IdempotencyStore, Idempotent,
};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

fn person(id: &str, n: u32) -> Stakeholder {
    Stakeholder {
        id: StakeholderId::parse(id).unwrap(),
        name: format!("Person {n}"),
        tier: Tier::ALL[0],
        contacts: ContactMethods {
            phone: PhoneNumber::parse(&format!("+1415555{:04}", 2000 + n)).ok(),
            email: EmailAddress::parse(&format!("dir{n}@example.org")).ok(),
            ..Default::default()
        },
        preferences: vec![Channel::Sms],
        manager: StakeholderId::parse("boss").ok(),
        locale: None,
        user_name: None,
        external_id: None,
        active: true,
    }
}

#[tokio::test]
async fn directory_reads_groups_members_and_sealed_stakeholders() {
    let cfg = support::sdk_config().await;
    let ddb = aws_sdk_dynamodb::Client::new(&cfg);
    let table = support::unique("directory");
    DynamoDirectory::create_table(&ddb, &table).await.unwrap();
    let sealer = Arc::new(KmsSealer::new(
        aws_sdk_kms::Client::new(&cfg),
        support::kms_key(&cfg).await,
    ));
    let dir = DynamoDirectory::new(ddb, &table, sealer);
    let people: Vec<_> = (0..30).map(|i| person(&format!("d{i}"), i)).collect();
    for p in &people {
        dir.put_stakeholder(p).await.unwrap();
    }
    let mut group = Group {
        id: GroupId::parse("ops").unwrap(),
        name: "Operations".into(),
        members: people.iter().map(|p| p.id.clone()).collect(),
        on_call_manager: StakeholderId::parse("boss").ok(),
        escalation_channels: vec![Channel::Voice, Channel::Sms],
    };
    dir.put_group(&group).await.unwrap();
    let summary = dir.group(&group.id).await.unwrap().unwrap();
    assert_eq!(
        summary.escalation_channels,
        [Channel::Voice, Channel::Sms],
        "the high-priority route round-trips"
    );
    assert_eq!(summary.size, 30);
    assert_eq!(summary.name, "Operations");
    assert_eq!(summary.on_call_manager, group.on_call_manager);
    assert_eq!(dir.members(&group.id).await.unwrap(), group.members);
    assert_eq!(
        dir.stakeholder(&people[7].id).await.unwrap().as_ref(),
        Some(&people[7])
    );
    // A smaller group hides the members past its size without deleting them.
    group.members.truncate(4);
    group.on_call_manager = None;
    dir.put_group(&group).await.unwrap();
    assert_eq!(dir.members(&group.id).await.unwrap(), group.members);
    assert_eq!(
        dir.group(&group.id).await.unwrap().unwrap().on_call_manager,
        None
    );
    let unknown = GroupId::parse("nope").unwrap();
    assert!(dir.group(&unknown).await.unwrap().is_none());
    assert!(dir.members(&unknown).await.unwrap().is_empty());
    // No contact detail in plaintext in what moto stores.
    let dump = support::data_json().to_string();
    assert!(dump.contains(&table));
    let dump = support::scan_text(&support::sdk_config().await, &table).await;
    assert!(!dump.is_empty());
    for p in &people {
        assert!(!dump.contains(p.contacts.phone.as_ref().unwrap().expose()));
        assert!(!dump.contains(p.contacts.email.as_ref().unwrap().expose()));
    }
}

async fn idempotency() -> IdempotencyStore {
    let cfg = support::sdk_config().await;
    let ddb = aws_sdk_dynamodb::Client::new(&cfg);
    let table = support::unique("idem");
    IdempotencyStore::create_table(&ddb, &table).await.unwrap();
    IdempotencyStore::new(ddb, table, 3_600, 30_000)
}

const T0: Ts = Ts::from_secs(1_800_000_000);

#[tokio::test]
async fn a_completed_key_replays_its_stored_response() {
    let store = idempotency().await;
    let runs = AtomicU32::new(0);
    let handler = || async {
        runs.fetch_add(1, Ordering::SeqCst);
        Ok::<_, muster::Error>(serde_json::json!({"incident": "INC-1", "cascades": 3}))
    };
    let first = store
        .run("trigger#INC-1", b"payload", T0, handler)
        .await
        .unwrap();
    let second = store
        .run("trigger#INC-1", b"payload", T0.plus(10_000), handler)
        .await
        .unwrap();
    assert!(matches!(first, Idempotent::Fresh(_)));
    assert_eq!(second, Idempotent::Replay(first.into_inner()));
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    // A different payload under the same key is a conflict.
    let other = store
        .run("trigger#INC-1", b"other", T0.plus(20_000), handler)
        .await
        .unwrap_err();
    assert!(other.is_conflict(), "{other}");
    // After the TTL the key is fresh again.
    let later = store
        .run("trigger#INC-1", b"payload", T0.plus(3_601_000), handler)
        .await
        .unwrap();
    assert!(matches!(later, Idempotent::Fresh(_)));
    assert_eq!(runs.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn an_in_progress_key_is_a_conflict_until_its_claim_lapses_and_a_failure_releases_it() {
    let store = idempotency().await;
    // A claim whose handler never completes (a crashed invocation).
    let store = Arc::new(store);
    let inner = store.clone();
    let during = store
        .run("k", b"p", T0, || async move {
            let e = inner
                .run("k", b"p", T0.plus(1_000), || async { Ok(1u32) })
                .await
                .unwrap_err();
            assert!(e.is_conflict(), "{e}");
            // The claim lapses after 30 s: another invocation may then run.
            let after = inner
                .run("k", b"p", T0.plus(31_000), || async { Ok(2u32) })
                .await
                .unwrap();
            assert_eq!(after, Idempotent::Fresh(2));
            Err::<u32, _>(muster::Error::permanent("the first invocation failed"))
        })
        .await;
    assert!(during.is_err());
    // The failed handler released its claim: the next call runs.
    let next = store
        .run("k2", b"p", T0, || async {
            Err::<u32, _>(muster::Error::permanent("boom"))
        })
        .await;
    assert!(next.is_err());
    let retried = store
        .run("k2", b"p", T0.plus(1), || async { Ok(7u32) })
        .await
        .unwrap();
    assert_eq!(retried, Idempotent::Fresh(7));
}

async fn limiter(rate: f64) -> (Arc<DynamoLimiter>, Arc<DynamoLimiter>) {
    let cfg = support::sdk_config().await;
    let ddb = aws_sdk_dynamodb::Client::new(&cfg);
    let (table, audit) = (support::unique("limits"), support::unique("audit"));
    DynamoStore::create_tables(&ddb, &table, &audit)
        .await
        .unwrap();
    let policy = Arc::new(Policy {
        rate_limit_per_sec: rate,
        ..Policy::default()
    });
    (
        Arc::new(DynamoLimiter::new(ddb.clone(), &table, policy.clone())),
        Arc::new(DynamoLimiter::new(ddb, &table, policy)),
    )
}

async fn granted(l: &DynamoLimiter, now: Ts, n: u32) -> u32 {
    let mut ok = 0;
    for _ in 0..n {
        if l.admit("sms", now, None).await.unwrap() == Admit::Granted {
            ok += 1;
        }
    }
    ok
}

/// Admits `n` sends at `now`: how many were granted, and the tickets of the rest.
async fn admit_n(l: &DynamoLimiter, now: Ts, n: u32) -> (u32, Vec<Ticket>) {
    let (mut ok, mut tickets) = (0, Vec::new());
    for _ in 0..n {
        match l.admit("sms", now, None).await.unwrap() {
            Admit::Granted => ok += 1,
            Admit::Wait { until, ticket } => {
                assert_eq!(until, ticket.slot);
                tickets.push(ticket);
            }
        }
    }
    (ok, tickets)
}

#[tokio::test]
async fn two_processes_share_one_bucket_and_book_distinct_slots() {
    let (a, b) = limiter(20.0).await;
    // The bucket holds one second at 20/s. The first process takes it in
    // chunks of ten and spends them locally; the second finds it empty and
    // books the next tokens, 50 ms apart.
    assert_eq!(granted(&a, T0, 15).await, 15);
    let (ok, tickets) = admit_n(&b, T0, 4).await;
    assert_eq!(ok, 0);
    let slots: Vec<u64> = tickets.iter().map(|t| t.slot.since(T0)).collect();
    assert_eq!(slots, vec![50, 100, 150, 200]);
    assert_eq!(granted(&a, T0, 5).await, 5, "the rest of a's chunk");
    // The next booking, from either process, comes after b's.
    let (_, more) = admit_n(&a, T0, 1).await;
    assert_eq!(more[0].slot, T0.plus(250));
    // A ticket is granted at its slot without another token, and told to
    // wait (keeping its slot) before it.
    let t = tickets[1];
    assert_eq!(
        b.admit("sms", T0.plus(60), Some(t)).await.unwrap(),
        Admit::Wait {
            until: t.slot,
            ticket: t
        }
    );
    for t in &tickets {
        assert_eq!(
            a.admit("sms", t.slot, Some(*t)).await.unwrap(),
            Admit::Granted
        );
    }
    // The booked tokens were paid for: 300 ms after T0 the bucket has just
    // refilled the five booked, so a send without a ticket books again.
    let (ok, after) = admit_n(&b, T0.plus(250), 1).await;
    assert_eq!(ok, 0);
    assert_eq!(after[0].slot, T0.plus(300));
}

#[tokio::test]
async fn a_throttle_pauses_every_process_voids_tickets_and_halves_the_rate() {
    let (a, b) = limiter(20.0).await;
    assert_eq!(granted(&a, T0, 1).await, 1);
    let (_, booked) = admit_n(&b, T0, 20).await;
    let last = *booked.last().unwrap();
    a.on_throttled("sms", T0, Some(3_000)).await;
    // During the pause both processes book after it, at the halved rate (10/s).
    let (ok, t) = admit_n(&b, T0.plus(1_000), 2).await;
    assert_eq!(ok, 0);
    assert_eq!(
        t.iter().map(|t| t.slot).collect::<Vec<_>>(),
        vec![T0.plus(3_100), T0.plus(3_200)]
    );
    let (ok, _) = admit_n(&a, T0.plus(1_000), 1).await;
    assert_eq!(ok, 0, "a drops its lease and waits out the pause");
    // A ticket booked before the throttle is void: it books again.
    match b.admit("sms", last.slot, Some(last)).await.unwrap() {
        Admit::Wait { until, ticket } => {
            assert_eq!(until, T0.plus(3_300));
            assert_ne!(ticket.epoch, last.epoch);
        }
        Admit::Granted => panic!("a void ticket was granted"),
    }
    // The new tickets are honoured at their slots.
    assert_eq!(
        b.admit("sms", t[0].slot, Some(t[0])).await.unwrap(),
        Admit::Granted
    );
    // Without Retry-After, the default pause.
    let after = T0.plus(10_000);
    b.on_throttled("sms", after, None).await;
    match b.admit("sms", after, None).await.unwrap() {
        Admit::Wait { until, .. } => assert_eq!(until, after.plus(DEFAULT_PAUSE_MS)),
        Admit::Granted => panic!("granted during the pause"),
    }
}

#[tokio::test]
async fn directory_admin_has_the_memory_directory_semantics() {
    use muster::ports::DirectoryAdmin;
    use muster_aws::dynamo::NumberKey;
    let cfg = support::sdk_config().await;
    let ddb = aws_sdk_dynamodb::Client::new(&cfg);
    let table = support::unique("directory");
    DynamoDirectory::create_table(&ddb, &table).await.unwrap();
    let sealer = Arc::new(KmsSealer::new(
        aws_sdk_kms::Client::new(&cfg),
        support::kms_key(&cfg).await,
    ));
    let nk = NumberKey::derive(&muster::api::Secret::new("directory-test"));
    let dir = DynamoDirectory::new(ddb, &table, sealer).with_number_key(nk.clone());
    let shared = PhoneNumber::parse("+13125550177").unwrap();
    let mut people: Vec<_> = (0..5).map(|i| person(&format!("adm{i}"), 60 + i)).collect();
    people[3].contacts.sms = Some(shared.clone());
    people[4].contacts.phone = Some(shared.clone());
    people[2].contacts.phone = Some(shared.clone());
    people[2].contacts.sms = PhoneNumber::parse("+13125550178").ok();
    for p in &people {
        DirectoryAdmin::put_stakeholder(&dir, p.clone())
            .await
            .unwrap();
    }
    assert_eq!(dir.list_stakeholders().await.unwrap(), people);
    let ids: Vec<StakeholderId> = people.iter().map(|p| p.id.clone()).collect();
    let g1 = Group {
        id: GroupId::parse("adm-a").unwrap(),
        name: "A".into(),
        members: vec![ids[0].clone(), ids[1].clone(), ids[2].clone()],
        on_call_manager: Some(ids[1].clone()),
        escalation_channels: vec![Channel::Voice],
    };
    let g2 = Group {
        id: GroupId::parse("adm-b").unwrap(),
        name: "B".into(),
        members: vec![ids[1].clone(), ids[3].clone()],
        on_call_manager: None,
        escalation_channels: vec![],
    };
    DirectoryAdmin::put_group(&dir, g1.clone()).await.unwrap();
    DirectoryAdmin::put_group(&dir, g2.clone()).await.unwrap();
    assert_eq!(dir.get_group(&g1.id).await.unwrap().as_ref(), Some(&g1));
    assert_eq!(
        dir.list_groups().await.unwrap(),
        vec![g1.clone(), g2.clone()]
    );
    // Removing a person removes them from every group and as manager.
    assert!(dir.remove_stakeholder(&ids[1]).await.unwrap());
    assert!(!dir.remove_stakeholder(&ids[1]).await.unwrap());
    assert!(dir.stakeholder(&ids[1]).await.unwrap().is_none());
    let a = dir.get_group(&g1.id).await.unwrap().unwrap();
    assert_eq!(a.members, vec![ids[0].clone(), ids[2].clone()]);
    assert_eq!(a.on_call_manager, None);
    assert_eq!(a.escalation_channels, vec![Channel::Voice]);
    assert_eq!(
        dir.get_group(&g2.id).await.unwrap().unwrap().members,
        vec![ids[3].clone()]
    );
    assert_eq!(dir.list_stakeholders().await.unwrap().len(), 4);
    // Opt-outs reach whoever is texted at the number (sms, else phone).
    assert_eq!(
        dir.set_sms_opt_out(&shared, true).await.unwrap(),
        vec![ids[3].clone(), ids[4].clone()]
    );
    assert!(dir.set_sms_opt_out(&shared, true).await.unwrap().is_empty());
    let p3 = dir.stakeholder(&ids[3]).await.unwrap().unwrap();
    assert!(p3.contacts.sms_opted_out);
    assert!(
        !dir.stakeholder(&ids[2])
            .await
            .unwrap()
            .unwrap()
            .contacts
            .sms_opted_out
    );
    // A changed number leaves the old number's index.
    let mut p4 = dir.stakeholder(&ids[4]).await.unwrap().unwrap();
    p4.contacts.phone = PhoneNumber::parse("+13125550179").ok();
    DirectoryAdmin::put_stakeholder(&dir, p4).await.unwrap();
    assert_eq!(
        dir.set_sms_opt_out(&shared, false).await.unwrap(),
        vec![ids[3].clone()]
    );
    // Removing a group removes its members' reverse entries.
    assert!(dir.remove_group(&g2.id).await.unwrap());
    assert!(!dir.remove_group(&g2.id).await.unwrap());
    assert!(dir.get_group(&g2.id).await.unwrap().is_none());
    assert_eq!(dir.list_groups().await.unwrap().len(), 1);
    let dump = support::scan_text(&cfg, &table).await;
    assert!(!dump.contains("IN#adm-b") && dump.contains("IN#adm-a"));
    assert_eq!(dump.matches(&format!("NUM#{}", nk.tag(&shared))).count(), 1);
    for n in ["+13125550177", "+13125550178", "+13125550179", "3125550177"] {
        assert!(!dump.contains(n), "plaintext number in the directory table");
    }
    // Without a number key, opt-outs are an error, not a silent no-op.
    let plain = DynamoDirectory::new(
        aws_sdk_dynamodb::Client::new(&cfg),
        &table,
        Arc::new(KmsSealer::new(aws_sdk_kms::Client::new(&cfg), "unused")),
    );
    assert!(plain.set_sms_opt_out(&shared, true).await.is_err());
}
