//! Envelope encryption of contact details (PII) with KMS data keys.
//!
//! A data key from `GenerateDataKey` (AES-256, encryption context
//! `incident`: the incident, or the directory) encrypts up to
//! [`DATA_KEY_USES`] values within [`DATA_KEY_MS`], then a new one is made:
//! one KMS call per thousand people, not one per person. Each value is
//! AES-256-GCM under that key with a random 96-bit nonce (far inside GCM's
//! 2^32 random-nonce bound per key) and associated data naming incident
//! and stakeholder. Layout (format 2):
//! `[2][len: u16 BE][wrapped key][nonce: 12][ciphertext+tag]`. Opening
//! with another context fails: KMS refuses to unwrap the key for another
//! incident, and GCM refuses the associated data of another stakeholder.
//! Unwrapped keys are cached for opening, at most [`VAULT_CACHE`] for at
//! most [`VAULT_CACHE_MS`], so reading a 10,000-person incident costs one
//! `Decrypt` per key, not per person.
//!
//! Format 1 (`[1][len][wrapped key][ciphertext+tag]`, one key per value,
//! context incident and stakeholder, constant nonce) is still opened.

use crate::error::map_sdk;
use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use async_trait::async_trait;
use aws_sdk_kms::Client;
use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::DataKeySpec;
use muster::adapters::memory::{contact_ciphertext, decrypt_contact, encrypt_contact};
use muster::{Error, Result};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

const FORMAT_V1: u8 = 1;
const FORMAT: u8 = 2;
const NONCE_V1: [u8; 12] = [0; 12];
/// Values one data key encrypts before a new one is made.
pub const DATA_KEY_USES: u32 = 1000;
/// How long one data key encrypts values.
pub const DATA_KEY_MS: u128 = 300_000;
/// Incidents whose encrypting key a process keeps at once.
const DATA_KEYS: usize = 64;

/// What an encrypted value is bound to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CipherContext {
    pub incident: String,
    pub stakeholder: String,
}

impl CipherContext {
    pub fn new(incident: impl Into<String>, stakeholder: impl Into<String>) -> Self {
        CipherContext {
            incident: incident.into(),
            stakeholder: stakeholder.into(),
        }
    }
    fn aad(&self) -> Vec<u8> {
        format!(
            "incident={}\nstakeholder={}",
            self.incident, self.stakeholder
        )
        .into_bytes()
    }
}

#[async_trait]
pub trait ContactCipher: Send + Sync {
    async fn encrypt(&self, ctx: &CipherContext, plaintext: &[u8]) -> Result<Vec<u8>>;
    async fn decrypt(&self, ctx: &CipherContext, sealed: &[u8]) -> Result<Vec<u8>>;
}

/// The data key sealing an incident's values now.
struct SealingKey {
    key: [u8; 32],
    wrapped: Vec<u8>,
    uses: u32,
    made: Instant,
}

pub struct KmsContactCipher {
    client: Client,
    key_id: String,
    sealing: Mutex<HashMap<String, SealingKey>>,
    opening: Mutex<KeyCache>,
}

impl KmsContactCipher {
    pub fn new(client: Client, key_id: impl Into<String>) -> Self {
        KmsContactCipher {
            client,
            key_id: key_id.into(),
            sealing: Mutex::new(HashMap::new()),
            opening: Mutex::new(KeyCache::default()),
        }
    }

    /// A key for one more value of `incident`: the current one while it
    /// has uses and time left, else a new one from KMS.
    async fn sealing_key(&self, incident: &str) -> Result<([u8; 32], Vec<u8>)> {
        {
            let mut keys = self.sealing.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(k) = keys.get_mut(incident)
                && k.uses < DATA_KEY_USES
                && k.made.elapsed().as_millis() < DATA_KEY_MS
            {
                k.uses += 1;
                return Ok((k.key, k.wrapped.clone()));
            }
        }
        let dk = self
            .client
            .generate_data_key()
            .key_id(&self.key_id)
            .key_spec(DataKeySpec::Aes256)
            .encryption_context("incident", incident)
            .send()
            .await
            .map_err(|e| map_sdk("generating a data key", e))?;
        let (Some(key), Some(wrapped)) = (dk.plaintext(), dk.ciphertext_blob()) else {
            return Err(Error::permanent("KMS returned no data key"));
        };
        let key: [u8; 32] = key
            .as_ref()
            .try_into()
            .map_err(|_| crypto_err("data key size"))?;
        let wrapped = wrapped.as_ref().to_vec();
        let mut keys = self.sealing.lock().unwrap_or_else(|e| e.into_inner());
        if keys.len() >= DATA_KEYS && !keys.contains_key(incident) {
            // Forget the oldest incident's key (it is only ever made again).
            if let Some(old) = keys
                .iter()
                .min_by_key(|(_, k)| k.made)
                .map(|(i, _)| i.clone())
            {
                keys.remove(&old);
            }
        }
        // This process can open what it seals without asking KMS again.
        self.opening.lock().unwrap_or_else(|e| e.into_inner()).put(
            &format!("{incident}\n{}", hex::encode(Sha256::digest(&wrapped))),
            key,
        );
        keys.insert(
            incident.to_string(),
            SealingKey {
                key,
                wrapped: wrapped.clone(),
                uses: 1,
                made: Instant::now(),
            },
        );
        Ok((key, wrapped))
    }

    /// The unwrapped key of a format 2 value: cached, else one `Decrypt`.
    async fn opening_key(&self, incident: &str, wrapped: &[u8]) -> Result<[u8; 32]> {
        let id = format!("{incident}\n{}", hex::encode(Sha256::digest(wrapped)));
        if let Some(k) = self
            .opening
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&id)
        {
            return Ok(k);
        }
        let dk = self
            .client
            .decrypt()
            .key_id(&self.key_id)
            .ciphertext_blob(Blob::new(wrapped))
            .encryption_context("incident", incident)
            .send()
            .await
            .map_err(|e| map_sdk("unwrapping a data key", e))?;
        let key: [u8; 32] = dk
            .plaintext()
            .ok_or_else(|| Error::permanent("KMS returned no plaintext key"))?
            .as_ref()
            .try_into()
            .map_err(|_| crypto_err("data key size"))?;
        self.opening
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .put(&id, key);
        Ok(key)
    }

    async fn open_v1(&self, ctx: &CipherContext, wrapped: &[u8], ct: &[u8]) -> Result<Vec<u8>> {
        let dk = self
            .client
            .decrypt()
            .key_id(&self.key_id)
            .ciphertext_blob(Blob::new(wrapped))
            .encryption_context("incident", &ctx.incident)
            .encryption_context("stakeholder", &ctx.stakeholder)
            .send()
            .await
            .map_err(|e| map_sdk("unwrapping a data key", e))?;
        let key = dk
            .plaintext()
            .ok_or_else(|| Error::permanent("KMS returned no plaintext key"))?;
        let cipher =
            Aes256Gcm::new_from_slice(key.as_ref()).map_err(|_| crypto_err("data key size"))?;
        cipher
            .decrypt(
                Nonce::from_slice(&NONCE_V1),
                Payload {
                    msg: ct,
                    aad: &ctx.aad(),
                },
            )
            .map_err(|_| crypto_err("decrypting"))
    }
}

fn crypto_err(what: &str) -> Error {
    Error::permanent(format!("{what}: sealed contact details rejected"))
}

fn random_nonce() -> Result<[u8; 12]> {
    use rand::TryRngCore;
    let mut nonce = [0u8; 12];
    rand::rngs::OsRng
        .try_fill_bytes(&mut nonce)
        .map_err(|_| Error::permanent("no randomness for a nonce"))?;
    Ok(nonce)
}

#[async_trait]
impl ContactCipher for KmsContactCipher {
    async fn encrypt(&self, ctx: &CipherContext, plaintext: &[u8]) -> Result<Vec<u8>> {
        let (key, wrapped) = self.sealing_key(&ctx.incident).await?;
        let nonce = random_nonce()?;
        let cipher = Aes256Gcm::new_from_slice(&key).map_err(|_| crypto_err("data key size"))?;
        let ct = cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: plaintext,
                    aad: &ctx.aad(),
                },
            )
            .map_err(|_| crypto_err("encrypting"))?;
        let len = u16::try_from(wrapped.len()).map_err(|_| crypto_err("wrapped key size"))?;
        let mut out = Vec::with_capacity(3 + wrapped.len() + nonce.len() + ct.len());
        out.push(FORMAT);
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(&wrapped);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ct);
        Ok(out)
    }

    async fn decrypt(&self, ctx: &CipherContext, sealed: &[u8]) -> Result<Vec<u8>> {
        let [format, a, b, rest @ ..] = sealed else {
            return Err(crypto_err("unknown format"));
        };
        let len = usize::from(u16::from_be_bytes([*a, *b]));
        if rest.len() < len {
            return Err(crypto_err("truncated"));
        }
        let (wrapped, body) = rest.split_at(len);
        match *format {
            FORMAT_V1 => self.open_v1(ctx, wrapped, body).await,
            FORMAT => {
                if body.len() < 12 {
                    return Err(crypto_err("truncated"));
                }
                let (nonce, ct) = body.split_at(12);
                let key = self.opening_key(&ctx.incident, wrapped).await?;
                let cipher =
                    Aes256Gcm::new_from_slice(&key).map_err(|_| crypto_err("data key size"))?;
                cipher
                    .decrypt(
                        Nonce::from_slice(nonce),
                        Payload {
                            msg: ct,
                            aad: &ctx.aad(),
                        },
                    )
                    .map_err(|_| crypto_err("decrypting"))
            }
            _ => Err(crypto_err("unknown format")),
        }
    }
}

/// Contact addresses in the audit trail, encrypted under a per-stakeholder
/// data key ([`muster::ports::ContactVault`]).
///
/// The key is made once per person by KMS `GenerateDataKey` (AES-256, under
/// the configured symmetric key, encryption context `purpose` =
/// [`VAULT_PURPOSE`] and `stakeholder`), and only its wrapped form is kept:
/// item `DEK#<stakeholder>` / `KEY`, attribute `wrapped`, in the given table
/// (the directory table). Values are AES-256-GCM with a random 96-bit nonce,
/// associated data `incident|stakeholder`; format `kms1:` +
/// base64(nonce || ciphertext). `erase` deletes the wrapped key: every value
/// written under it becomes unreadable (`decrypt` gives `Ok(None)`).
///
/// Unwrapped keys are cached per process, at most [`VAULT_CACHE`] of them,
/// each for at most [`VAULT_CACHE_MS`]: an erase in one process reaches the
/// caches of the others within that time.
pub struct KmsContactVault {
    kms: Client,
    ddb: aws_sdk_dynamodb::Client,
    table: String,
    key_id: String,
    cache: std::sync::Mutex<KeyCache>,
}

/// Encryption context `purpose` of the vault's data keys.
pub const VAULT_PURPOSE: &str = "muster-contact-vault";
/// Unwrapped data keys a process keeps.
pub const VAULT_CACHE: usize = 1024;
/// How long a process keeps an unwrapped data key.
pub const VAULT_CACHE_MS: u128 = 300_000;
const VAULT_FORMAT: &str = "kms1:";

/// A bounded cache of unwrapped keys, oldest evicted first.
#[derive(Default)]
struct KeyCache {
    keys: std::collections::HashMap<String, (std::time::Instant, [u8; 32])>,
    order: std::collections::VecDeque<String>,
}

impl KeyCache {
    fn get(&mut self, who: &str) -> Option<[u8; 32]> {
        match self.keys.get(who) {
            Some((at, k)) if at.elapsed().as_millis() < VAULT_CACHE_MS => Some(*k),
            Some(_) => {
                self.remove(who);
                None
            }
            None => None,
        }
    }
    fn put(&mut self, who: &str, key: [u8; 32]) {
        if self
            .keys
            .insert(who.to_string(), (std::time::Instant::now(), key))
            .is_none()
        {
            self.order.push_back(who.to_string());
        }
        while self.keys.len() > VAULT_CACHE {
            match self.order.pop_front() {
                Some(old) => {
                    self.keys.remove(&old);
                }
                None => break,
            }
        }
    }
    fn remove(&mut self, who: &str) {
        self.keys.remove(who);
        self.order.retain(|k| k != who);
    }
}

impl KmsContactVault {
    /// `table`: where wrapped keys live (the directory table); `key_id`: the
    /// KMS symmetric key (`MUSTER_PII_KEY_ID`).
    pub fn new(
        kms: Client,
        ddb: aws_sdk_dynamodb::Client,
        table: impl Into<String>,
        key_id: impl Into<String>,
    ) -> Self {
        KmsContactVault {
            kms,
            ddb,
            table: table.into(),
            key_id: key_id.into(),
            cache: std::sync::Mutex::new(KeyCache::default()),
        }
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, KeyCache> {
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn pk(who: &str) -> aws_sdk_dynamodb::types::AttributeValue {
        aws_sdk_dynamodb::types::AttributeValue::S(format!("DEK#{who}"))
    }

    fn sk() -> aws_sdk_dynamodb::types::AttributeValue {
        aws_sdk_dynamodb::types::AttributeValue::S("KEY".into())
    }

    async fn unwrap_key(&self, who: &str, wrapped: &[u8]) -> Result<[u8; 32]> {
        let dk = self
            .kms
            .decrypt()
            .key_id(&self.key_id)
            .ciphertext_blob(Blob::new(wrapped))
            .encryption_context("purpose", VAULT_PURPOSE)
            .encryption_context("stakeholder", who)
            .send()
            .await
            .map_err(|e| map_sdk("unwrapping a contact data key", e))?;
        dk.plaintext()
            .and_then(|k| <[u8; 32]>::try_from(k.as_ref()).ok())
            .ok_or_else(|| Error::permanent("KMS returned no 32-byte data key"))
    }

    /// The person's key: cached, stored (unwrapped by KMS), or `None`.
    async fn load(&self, who: &str) -> Result<Option<[u8; 32]>> {
        if let Some(k) = self.cache().get(who) {
            return Ok(Some(k));
        }
        let resp = self
            .ddb
            .get_item()
            .table_name(&self.table)
            .key("pk", Self::pk(who))
            .key("sk", Self::sk())
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| map_sdk("reading a contact data key", e))?;
        let Some(it) = resp.item() else {
            return Ok(None);
        };
        let Some(aws_sdk_dynamodb::types::AttributeValue::B(wrapped)) = it.get("wrapped") else {
            return Err(Error::permanent("stored contact data key lacks `wrapped`"));
        };
        let key = self.unwrap_key(who, wrapped.as_ref()).await?;
        self.cache().put(who, key);
        Ok(Some(key))
    }

    /// The person's key, made (and stored) if they have none.
    async fn load_or_make(&self, who: &str) -> Result<[u8; 32]> {
        if let Some(k) = self.load(who).await? {
            return Ok(k);
        }
        let dk = self
            .kms
            .generate_data_key()
            .key_id(&self.key_id)
            .key_spec(DataKeySpec::Aes256)
            .encryption_context("purpose", VAULT_PURPOSE)
            .encryption_context("stakeholder", who)
            .send()
            .await
            .map_err(|e| map_sdk("generating a contact data key", e))?;
        let (Some(key), Some(wrapped)) = (dk.plaintext(), dk.ciphertext_blob()) else {
            return Err(Error::permanent("KMS returned no data key"));
        };
        let key = <[u8; 32]>::try_from(key.as_ref())
            .map_err(|_| Error::permanent("KMS returned a data key that is not 32 bytes"))?;
        let put = self
            .ddb
            .put_item()
            .table_name(&self.table)
            .item("pk", Self::pk(who))
            .item("sk", Self::sk())
            .item(
                "wrapped",
                aws_sdk_dynamodb::types::AttributeValue::B(
                    aws_sdk_dynamodb::primitives::Blob::new(wrapped.as_ref()),
                ),
            )
            .condition_expression("attribute_not_exists(pk)")
            .send()
            .await;
        match put {
            Ok(_) => {
                self.cache().put(who, key);
                Ok(key)
            }
            // Another process made the key first: use theirs.
            Err(e)
                if e.as_service_error()
                    .is_some_and(|se| se.is_conditional_check_failed_exception()) =>
            {
                self.load(who).await?.ok_or_else(|| {
                    Error::Conflict(format!("contact data key of {who} made and erased at once"))
                })
            }
            Err(e) => Err(map_sdk("storing a contact data key", e)),
        }
    }
}

#[async_trait]
impl muster::ports::ContactVault for KmsContactVault {
    async fn encrypt(
        &self,
        stakeholder: &muster::domain::StakeholderId,
        incident: &muster::domain::IncidentId,
        plaintext: &str,
    ) -> Result<String> {
        use rand::TryRngCore;
        let key = self.load_or_make(stakeholder.as_str()).await?;
        let mut nonce = [0u8; 12];
        rand::rngs::OsRng
            .try_fill_bytes(&mut nonce)
            .map_err(|_| Error::permanent("no randomness for a nonce"))?;
        encrypt_contact(VAULT_FORMAT, &key, nonce, stakeholder, incident, plaintext)
    }

    async fn decrypt(
        &self,
        stakeholder: &muster::domain::StakeholderId,
        incident: &muster::domain::IncidentId,
        ciphertext: &str,
    ) -> Result<Option<String>> {
        let raw = contact_ciphertext(VAULT_FORMAT, ciphertext)?;
        let Some(key) = self.load(stakeholder.as_str()).await? else {
            return Ok(None);
        };
        decrypt_contact(&key, &raw, stakeholder, incident).map(Some)
    }

    async fn erase(&self, stakeholder: &muster::domain::StakeholderId) -> Result<bool> {
        let who = stakeholder.as_str();
        self.cache().remove(who);
        let resp = self
            .ddb
            .delete_item()
            .table_name(&self.table)
            .key("pk", Self::pk(who))
            .key("sk", Self::sk())
            .return_values(aws_sdk_dynamodb::types::ReturnValue::AllOld)
            .send()
            .await
            .map_err(|e| map_sdk("erasing a contact data key", e))?;
        self.cache().remove(who);
        Ok(resp.attributes().is_some_and(|a| !a.is_empty()))
    }
}
