//! The directory and the distributed rate
//! limiter on DynamoDB, against moto.
#![allow(clippy::unwrap_used)]

use crate::support;

use muster::domain::*;
use muster::policy::Policy;
use muster::ports::{Admission, Admit, Directory, Lane, RateLimiter};
use muster::ratelimit::{AdaptiveLimiter, LimiterConfig, Ticket};
use muster_aws::crypto::KmsContactCipher;
use muster_aws::dynamo::{DynamoDirectory, DynamoLimiter, DynamoStore};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

fn person(id: &str, n: u32) -> Stakeholder {
    Stakeholder {
        id: StakeholderId::parse(id).unwrap(),
        name: format!("Person {n}"),
        tier: Tier::ONE,
        contacts: ContactMethods {
            phone: PhoneNumber::parse(&format!("+1415555{:04}", 2000 + n)).ok(),
            email: EmailAddress::parse(&format!("dir{n}@example.org")).ok(),
            ..Default::default()
        },
        preferences: vec![Channel::Sms],
        manager: StakeholderId::parse("boss").ok(),
        locale: None,
        quiet: None,
        idp: None,
        active: true,
    }
}

#[tokio::test]
async fn directory_reads_groups_members_and_sealed_stakeholders() {
    let cfg = support::sdk_config().await;
    let ddb = aws_sdk_dynamodb::Client::new(&cfg);
    let table = support::unique("directory");
    DynamoDirectory::create_table(&ddb, &table).await.unwrap();
    let sealer = Arc::new(KmsContactCipher::new(
        aws_sdk_kms::Client::new(&cfg),
        support::kms_key(&cfg).await,
    ));
    let dir = DynamoDirectory::new(ddb, &table, sealer);
    let mut people: Vec<_> = (0..30).map(|i| person(&format!("d{i}"), i)).collect();
    // What an IdP wrote over SCIM (userName is an address) is sealed too.
    for (i, p) in people.iter_mut().enumerate().take(5) {
        let mut rec = serde_json::Map::new();
        rec.insert("userName".into(), format!("idp{i}@example.org").into());
        rec.insert("externalId".into(), format!("00u{i}").into());
        p.idp = Some(muster::domain::IdpRecord::new(rec));
    }
    for p in &people {
        dir.put_stakeholder(p).await.unwrap();
    }
    let mut group = Group {
        id: GroupId::parse("ops").unwrap(),
        name: "Operations".into(),
        members: people.iter().map(|p| p.id.clone()).collect(),
        on_call_manager: StakeholderId::parse("boss").ok(),
        escalation_channels: vec![Channel::Voice, Channel::Sms],
        idp: None,
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
        if let Some(u) = p.idp.as_ref().and_then(|r| r.user_name()) {
            assert!(
                !dump.contains(u),
                "plaintext userName in the directory table"
            );
        }
    }
    assert_eq!(
        dir.stakeholder(&people[2].id).await.unwrap().as_ref(),
        Some(&people[2]),
        "the record round-trips"
    );
}

const T0: Ts = Ts::from_secs(1_800_000_000);

async fn limiter(rate: f64) -> (Arc<DynamoLimiter>, Arc<DynamoLimiter>, Arc<Policy>) {
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
        Arc::new(DynamoLimiter::new(ddb, &table, policy.clone())),
        policy,
    )
}

fn decided(a: Admission) -> Admit {
    match a {
        Admission::Decided(a) => a,
        Admission::Retry { at } => panic!("contention with one caller (retry at {at:?})"),
    }
}

/// One call of the limiter's contract, to run against both stores.
#[derive(Clone, Copy, Debug)]
enum Call {
    Admit(u64, Lane, Option<usize>),
    Success(u64),
    Throttled(u64, Option<u64>),
}

#[tokio::test]
async fn the_shared_limiter_decides_exactly_as_the_one_in_memory() {
    // The adapter only stores the pure limiter: one script of calls gives
    // the same answers from DynamoDB (two processes taking turns) as from
    // the in-memory limiter the drills use.
    let (a, b, policy) = limiter(20.0).await;
    let mut pure = AdaptiveLimiter::new(
        LimiterConfig {
            limit_per_sec: 20.0,
            min_per_sec: 1.0,
            priority_share: policy.escalation.priority_share,
        },
        T0,
    );
    // (process, call). A process's acceptances are applied with its own
    // next change (the adapter batches them), so each is followed by a call
    // of the same process.
    let mut script = Vec::new();
    for i in 0..30u64 {
        script.push((i % 2, Call::Admit(i * 10, Lane::Member, None)));
    }
    script.push((1, Call::Admit(305, Lane::Priority, None)));
    script.push((0, Call::Admit(320, Lane::Member, Some(3))));
    script.push((0, Call::Success(330)));
    script.push((0, Call::Throttled(340, Some(2_000))));
    script.push((1, Call::Admit(500, Lane::Member, Some(10))));
    script.push((0, Call::Admit(2_400, Lane::Member, None)));
    script.push((1, Call::Admit(2_400, Lane::Priority, None)));
    script.push((1, Call::Success(2_450)));
    script.push((1, Call::Admit(2_500, Lane::Member, None)));
    script.push((0, Call::Admit(2_500, Lane::Priority, None)));
    let mut tickets: Vec<Option<Ticket>> = Vec::new();
    let mut pure_tickets: Vec<Option<Ticket>> = Vec::new();
    for (i, (process, call)) in script.iter().enumerate() {
        let l = if *process == 0 { &a } else { &b };
        match *call {
            Call::Admit(t, lane, held) => {
                let now = T0.plus(t);
                let (ticket, pure_ticket) = match held {
                    Some(k) => (tickets[k], pure_tickets[k]),
                    None => (None, None),
                };
                let got = decided(l.admit("sms", now, ticket, lane).await.unwrap());
                let want = match lane {
                    Lane::Member => pure.admit(now, pure_ticket),
                    Lane::Priority => pure.admit_priority(now, pure_ticket),
                };
                assert_eq!(got, want, "call {i}: {call:?}");
                let t = |a: Admit| match a {
                    Admit::Wait { ticket, .. } => Some(ticket),
                    Admit::Granted => None,
                };
                tickets.push(t(got));
                pure_tickets.push(t(want));
            }
            Call::Success(t) => {
                l.on_success("sms", T0.plus(t)).await;
                pure.on_success(T0.plus(t));
                tickets.push(None);
                pure_tickets.push(None);
            }
            Call::Throttled(t, after) => {
                l.on_throttled("sms", T0.plus(t), after).await;
                pure.on_throttled(T0.plus(t), after);
                tickets.push(None);
                pure_tickets.push(None);
            }
        }
    }
}

#[tokio::test]
async fn a_throttle_reaches_every_process_and_an_acceptance_reported_late_does_not_end_it() {
    let (a, b, _) = limiter(20.0).await;
    assert_eq!(
        decided(a.admit("sms", T0, None, Lane::Member).await.unwrap()),
        Admit::Granted
    );
    // a's acceptance at T0 is still unwritten when b records a 429.
    a.on_success("sms", T0).await;
    b.on_throttled("sms", T0.plus(10), Some(3_000)).await;
    let seen = a.throttling("sms", T0.plus(20)).await.unwrap();
    assert_eq!(
        seen.map(|t| (t.since, t.paused_until)),
        Some((T0.plus(10), Some(T0.plus(3_010))))
    );
    // a's next change applies its earlier acceptance: the carrier is still
    // throttling, and a waits out b's pause.
    match decided(
        a.admit("sms", T0.plus(20), None, Lane::Member)
            .await
            .unwrap(),
    ) {
        Admit::Wait {
            until,
            throttled_since,
            ..
        } => {
            assert!(until >= T0.plus(3_010), "{until:?}");
            assert_eq!(throttled_since, Some(T0.plus(10)));
        }
        Admit::Granted => panic!("granted during another process's pause"),
    }
    // An acceptance after the pause ends the episode for everyone at once.
    a.on_success("sms", T0.plus(3_100)).await;
    assert_eq!(b.throttling("sms", T0.plus(3_100)).await.unwrap(), None);
}

#[test]
fn twenty_concurrent_dispatchers_never_spend_a_slot_twice_nor_exceed_the_limit() {
    // Twenty real threads, each its own process (its own client and
    // runtime), admit at once. Every grant or booked slot is a distinct
    // instant of the 20/s schedule: no slot given twice (no lost update),
    // none skipped; a caller that lost every race is told to come back,
    // never refused.
    const THREADS: usize = 20;
    const EACH: usize = 8;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (a, _, policy) = rt.block_on(limiter(20.0));
    let table = a.table().to_string();
    let slots = std::sync::Mutex::new(Vec::new());
    let retries = AtomicU32::new(0);
    std::thread::scope(|s| {
        for _ in 0..THREADS {
            let (table, policy, slots, retries) = (&table, &policy, &slots, &retries);
            s.spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(async {
                    let cfg = support::sdk_config().await;
                    let l = DynamoLimiter::new(
                        aws_sdk_dynamodb::Client::new(&cfg),
                        table,
                        policy.clone(),
                    );
                    for _ in 0..EACH {
                        loop {
                            match l.admit("sms", T0, None, Lane::Member).await.unwrap() {
                                Admission::Decided(Admit::Granted) => {
                                    slots.lock().unwrap().push(T0);
                                    break;
                                }
                                Admission::Decided(Admit::Wait { until, .. }) => {
                                    slots.lock().unwrap().push(until);
                                    break;
                                }
                                Admission::Retry { .. } => {
                                    retries.fetch_add(1, Ordering::Relaxed);
                                }
                            }
                        }
                    }
                });
            });
        }
    });
    let mut slots = slots.into_inner().unwrap();
    slots.sort();
    let n = THREADS * EACH;
    assert_eq!(slots.len(), n);
    let want: Vec<Ts> = (0..n as u64).map(|k| T0.plus(k * 50)).collect();
    assert_eq!(slots, want, "every send its own slot, 50 ms apart");
    // At most 20 in any one-second window, by construction of the slots.
    for w in slots.windows(21) {
        assert!(w[20].since(w[0]) >= 1_000);
    }
    println!(
        "{n} admissions from {THREADS} threads, {} came back after losing every race",
        retries.load(Ordering::Relaxed)
    );
}

#[tokio::test]
async fn directory_admin_has_the_memory_directory_semantics() {
    use muster::ports::DirectoryAdmin;
    use muster_aws::dynamo::IndexKey;
    let cfg = support::sdk_config().await;
    let ddb = aws_sdk_dynamodb::Client::new(&cfg);
    let table = support::unique("directory");
    DynamoDirectory::create_table(&ddb, &table).await.unwrap();
    let sealer = Arc::new(KmsContactCipher::new(
        aws_sdk_kms::Client::new(&cfg),
        support::kms_key(&cfg).await,
    ));
    let nk = IndexKey::derive(&muster::secret::Secret::new("directory-test"));
    let dir = DynamoDirectory::new(ddb, &table, sealer).with_index_key(nk.clone());
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
        // A SCIM group's record (member display names, externalId) round-trips.
        idp: serde_json::from_value(serde_json::json!({"externalId": "e-1", "members": [{"value": "adm0", "display": "Person 60"}]})).ok(),
    };
    let g2 = Group {
        id: GroupId::parse("adm-b").unwrap(),
        name: "B".into(),
        members: vec![ids[1].clone(), ids[3].clone()],
        on_call_manager: None,
        escalation_channels: vec![],
        idp: None,
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
        Arc::new(KmsContactCipher::new(
            aws_sdk_kms::Client::new(&cfg),
            "unused",
        )),
    );
    assert!(plain.set_sms_opt_out(&shared, true).await.is_err());
}

#[tokio::test]
async fn user_names_are_found_by_index_in_any_case_and_no_key_holds_one() {
    use muster::ports::DirectoryAdmin;
    use muster_aws::dynamo::IndexKey;
    let cfg = support::sdk_config().await;
    let ddb = aws_sdk_dynamodb::Client::new(&cfg);
    let table = support::unique("usernames");
    DynamoDirectory::create_table(&ddb, &table).await.unwrap();
    let sealer = Arc::new(KmsContactCipher::new(
        aws_sdk_kms::Client::new(&cfg),
        support::kms_key(&cfg).await,
    ));
    let key = IndexKey::derive(&muster::secret::Secret::new("user-name-test"));
    let dir = DynamoDirectory::new(ddb, &table, sealer).with_index_key(key);
    let named = |id: &str, n: u32, user_name: &str| Stakeholder {
        idp: serde_json::from_value(serde_json::json!({"userName": user_name})).ok(),
        ..person(id, n)
    };
    let ana = named("u-ana", 1, "Ana.Ops@Example.com");
    let ben = named("u-ben", 2, "ben@example.com");
    let plain = person("carol", 3); // no SCIM record: the id is the userName
    for p in [&ana, &ben, &plain] {
        DirectoryAdmin::put_stakeholder(&dir, p.clone())
            .await
            .unwrap();
    }
    assert_eq!(
        dir.find_by_user_name("ana.ops@example.com").await.unwrap(),
        vec![ana.id.clone()]
    );
    assert_eq!(
        dir.find_by_user_name("CAROL").await.unwrap(),
        vec![plain.id.clone()]
    );
    assert!(
        dir.find_by_user_name("nobody@example.com")
            .await
            .unwrap()
            .is_empty()
    );
    // A rename moves the entry; a removal drops it.
    DirectoryAdmin::put_stakeholder(&dir, named("u-ana", 1, "ana@example.com"))
        .await
        .unwrap();
    assert!(
        dir.find_by_user_name("ana.ops@example.com")
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        dir.find_by_user_name("ANA@example.com").await.unwrap(),
        vec![ana.id.clone()]
    );
    assert!(dir.remove_stakeholder(&ben.id).await.unwrap());
    assert!(
        dir.find_by_user_name("ben@example.com")
            .await
            .unwrap()
            .is_empty()
    );
    // Ids are asked by key.
    assert!(dir.contains(&ana.id).await.unwrap());
    assert!(!dir.contains(&ben.id).await.unwrap());
    let dump = support::scan_text(&cfg, &table).await.to_ascii_lowercase();
    for name in ["ana.ops@example.com", "ana@example.com", "ben@example.com"] {
        assert!(!dump.contains(name), "a userName in the directory table");
    }
    assert_eq!(dump.matches("usr#").count(), 2, "one entry per person left");
}

#[tokio::test]
async fn people_written_before_the_user_name_index_are_found_and_stale_entries_are_not_believed() {
    use muster::ports::DirectoryAdmin;
    use muster_aws::dynamo::IndexKey;
    let cfg = support::sdk_config().await;
    let ddb = aws_sdk_dynamodb::Client::new(&cfg);
    let table = support::unique("usernames-old");
    DynamoDirectory::create_table(&ddb, &table).await.unwrap();
    let cipher = || {
        let cfg = cfg.clone();
        async move {
            Arc::new(KmsContactCipher::new(
                aws_sdk_kms::Client::new(&cfg),
                support::kms_key(&cfg).await,
            ))
        }
    };
    // Written by a version without the index (no key: no index items).
    let old = DynamoDirectory::new(ddb.clone(), &table, cipher().await);
    let mut legacy = person("u-old", 7);
    legacy.idp =
        serde_json::from_value(serde_json::json!({"userName": "old.timer@example.com"})).ok();
    DirectoryAdmin::put_stakeholder(&old, legacy.clone())
        .await
        .unwrap();
    let key = IndexKey::derive(&muster::secret::Secret::new("user-name-test"));
    let dir = DynamoDirectory::new(ddb.clone(), &table, cipher().await).with_index_key(key.clone());
    assert_eq!(
        dir.find_by_user_name("OLD.TIMER@example.com")
            .await
            .unwrap(),
        vec![legacy.id.clone()],
        "found on the first look-up, which indexes everyone"
    );
    // An entry naming someone who no longer has that userName is not
    // believed (and is removed).
    ddb.put_item()
        .table_name(&table)
        .item(
            "pk",
            aws_sdk_dynamodb::types::AttributeValue::S(format!(
                "USR#{}",
                key.user_name_tag("taken@example.com")
            )),
        )
        .item(
            "sk",
            aws_sdk_dynamodb::types::AttributeValue::S("STK#u-old".into()),
        )
        .send()
        .await
        .unwrap();
    assert!(
        dir.find_by_user_name("taken@example.com")
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        dir.find_by_user_name("taken@example.com")
            .await
            .unwrap()
            .is_empty()
    );
    let dump = support::scan_text(&cfg, &table).await;
    assert!(
        !dump.contains(&key.user_name_tag("taken@example.com")),
        "the stale entry is gone"
    );
    // An opt-out leaves the userName index as it is.
    let number = legacy.contacts.phone.clone().unwrap();
    assert_eq!(
        dir.set_sms_opt_out(&number, true).await.unwrap(),
        vec![legacy.id.clone()]
    );
    assert_eq!(
        dir.find_by_user_name("old.timer@example.com")
            .await
            .unwrap(),
        vec![legacy.id.clone()]
    );
}
