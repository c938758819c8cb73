//! The KMS contact vault and the KMS seal signer, against moto.
#![allow(clippy::unwrap_used)]

use crate::support;

use muster::audit::{self, Seal};
use muster::domain::*;
use muster::ports::{ContactVault, SealSigner};
use muster_aws::crypto::KmsContactVault;
use muster_aws::dynamo::DynamoDirectory;
use muster_aws::kms_seal::{ALGORITHM, KmsSealSigner};

#[tokio::test]
async fn contact_vault_round_trips_binds_the_incident_and_erases() {
    let cfg = support::sdk_config().await;
    let ddb = aws_sdk_dynamodb::Client::new(&cfg);
    let table = support::unique("directory");
    DynamoDirectory::create_table(&ddb, &table).await.unwrap();
    let key = support::kms_key(&cfg).await;
    let kms = aws_sdk_kms::Client::new(&cfg);
    let vault = KmsContactVault::new(kms.clone(), ddb.clone(), &table, &key);
    let who = StakeholderId::parse("vault-alice").unwrap();
    let (inc, other) = (
        IncidentId::parse("INC-V1").unwrap(),
        IncidentId::parse("INC-V2").unwrap(),
    );
    let address = "+13125550166";
    let ct = vault.encrypt(&who, &inc, address).await.unwrap();
    assert!(ct.starts_with("kms1:") && !ct.contains("3125550166"));
    let ct2 = vault.encrypt(&who, &inc, address).await.unwrap();
    assert_ne!(ct, ct2, "a fresh nonce per value");
    assert_eq!(
        vault.decrypt(&who, &inc, &ct).await.unwrap().as_deref(),
        Some(address)
    );
    assert!(
        vault.decrypt(&who, &other, &ct).await.is_err(),
        "bound to its incident"
    );
    // Another process (no cache) unwraps the stored key through KMS.
    let fresh = KmsContactVault::new(kms.clone(), ddb.clone(), &table, &key);
    assert_eq!(
        fresh.decrypt(&who, &inc, &ct2).await.unwrap().as_deref(),
        Some(address)
    );
    // One key per person: another person's vault key does not open it.
    let bob = StakeholderId::parse("vault-bob").unwrap();
    vault.encrypt(&bob, &inc, "x@example.com").await.unwrap();
    assert!(vault.decrypt(&bob, &inc, &ct).await.is_err());
    let stored = support::scan_text(&cfg, &table).await;
    assert!(stored.contains("DEK#vault-alice") && !stored.contains("3125550166"));
    // Erasure: the wrapped key is gone, old values are unreadable.
    assert!(vault.erase(&who).await.unwrap());
    assert!(!vault.erase(&who).await.unwrap());
    assert_eq!(vault.decrypt(&who, &inc, &ct).await.unwrap(), None);
    let later = KmsContactVault::new(kms, ddb, &table, &key);
    assert_eq!(later.decrypt(&who, &inc, &ct).await.unwrap(), None);
    assert!(
        !support::scan_text(&cfg, &table)
            .await
            .contains("DEK#vault-alice")
    );
}

#[tokio::test]
async fn kms_seals_verify_offline_and_tampering_fails() {
    let cfg = support::sdk_config().await;
    let kms = aws_sdk_kms::Client::new(&cfg);
    let key = KmsSealSigner::create_key(&kms).await.unwrap();
    let signer = KmsSealSigner::connect(kms.clone(), &key).await.unwrap();
    let muster::ports::SignerInfo {
        algorithm,
        key_id,
        public_key,
    } = signer.describe();
    assert_eq!(algorithm, ALGORITHM);
    assert!(key_id.contains(&key));
    assert!(public_key.starts_with("3059"), "DER SPKI of a P-256 key");
    let mut seal = Seal {
        incident: IncidentId::parse("INC-KMS").unwrap(),
        at: Ts::from_secs(1_700_000_000),
        chains: 3,
        entries: 11,
        heads_digest: "cd".repeat(32),
        algorithm,
        key_id,
        public_key,
        signature: String::new(),
    };
    seal.signature = signer.sign(&seal.message()).await.unwrap();
    assert_eq!(audit::verify_seal_signature(&seal), Ok(()));
    let mut cut = seal.clone();
    cut.entries = 10;
    assert!(audit::verify_seal_signature(&cut).is_err());
    // A symmetric key is refused when connecting, not at the first seal.
    let symmetric = support::kms_key(&cfg).await;
    assert!(KmsSealSigner::connect(kms, &symmetric).await.is_err());
}

/// KMS is called per data key, not per person: sealing the contacts of a
/// 10,000-person activation, then reading them all back in another
/// process, costs at most one KMS call per 100 people (counted on the
/// client), and every value still opens only in its own context.
#[tokio::test]
async fn contacts_of_ten_thousand_people_cost_at_most_one_kms_call_per_hundred() {
    use muster_aws::crypto::{CipherContext, ContactCipher as _, KmsContactCipher};
    let cfg = support::sdk_config().await;
    let key = support::kms_key(&cfg).await;
    let kms_calls = |rec: &support::iam::Recorder| {
        rec.0
            .lock()
            .unwrap()
            .iter()
            .filter(|c| c.action.starts_with("kms:"))
            .count()
    };
    let writer_calls = support::iam::Recorder::default();
    let writer = KmsContactCipher::new(support::recorded_clients(&cfg, &writer_calls).kms, &key);
    let people = 10_000;
    let incident = support::unique("INC-KMS");
    let mut sealed = Vec::with_capacity(people);
    for i in 0..people {
        let ctx = CipherContext::new(&incident, format!("p{i}"));
        sealed.push(
            writer
                .encrypt(&ctx, format!("+1212555{i:04}").as_bytes())
                .await
                .unwrap(),
        );
    }
    let reader_calls = support::iam::Recorder::default();
    let reader = KmsContactCipher::new(support::recorded_clients(&cfg, &reader_calls).kms, &key);
    for (i, v) in sealed.iter().enumerate() {
        let ctx = CipherContext::new(&incident, format!("p{i}"));
        assert_eq!(
            reader.decrypt(&ctx, v).await.unwrap(),
            format!("+1212555{i:04}").as_bytes()
        );
    }
    let (w, r) = (kms_calls(&writer_calls), kms_calls(&reader_calls));
    println!("KMS calls for {people} contacts: {w} to seal, {r} to open");
    assert!(
        w + r <= people / 100,
        "{w} calls to seal and {r} to open {people} contacts"
    );
    assert!(w >= 1 && r >= 1);
    // Bound to the person and the incident.
    let wrong_person = CipherContext::new(&incident, "p1");
    assert!(reader.decrypt(&wrong_person, &sealed[0]).await.is_err());
    let wrong_incident = CipherContext::new("INC-OTHER", "p0");
    assert!(reader.decrypt(&wrong_incident, &sealed[0]).await.is_err());
    // Two values never share a nonce under one key.
    let nonces: std::collections::HashSet<Vec<u8>> = sealed
        .iter()
        .map(|v| {
            let len = usize::from(u16::from_be_bytes([v[1], v[2]]));
            v[3 + len..3 + len + 12].to_vec()
        })
        .collect();
    assert_eq!(nonces.len(), people);
}
