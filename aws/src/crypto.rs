//! Envelope encryption of contact details (PII) with KMS data keys.
//!
//! Each sealed value has its own data key from `GenerateDataKey` (AES-256),
//! bound to an encryption context of incident and stakeholder; the value is
//! encrypted with AES-256-GCM under that key, with the same context as
//! associated data. Layout: `[1][len: u16 BE][wrapped key][ciphertext+tag]`.
//! A data key encrypts exactly one value, so the constant nonce never
//! repeats under a key. Opening with another context fails twice over: KMS
//! refuses to unwrap the key, and GCM refuses the associated data.

use crate::error::map_sdk;
use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use async_trait::async_trait;
use aws_sdk_kms::Client;
use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::DataKeySpec;
use muster::{Error, Result};

const FORMAT: u8 = 1;
const NONCE: [u8; 12] = [0; 12];

/// What a sealed value is bound to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealContext {
    pub incident: String,
    pub stakeholder: String,
}

impl SealContext {
    pub fn new(incident: impl Into<String>, stakeholder: impl Into<String>) -> Self {
        SealContext {
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
pub trait Sealer: Send + Sync {
    async fn seal(&self, ctx: &SealContext, plaintext: &[u8]) -> Result<Vec<u8>>;
    async fn open(&self, ctx: &SealContext, sealed: &[u8]) -> Result<Vec<u8>>;
}

pub struct KmsSealer {
    client: Client,
    key_id: String,
}

impl KmsSealer {
    pub fn new(client: Client, key_id: impl Into<String>) -> Self {
        KmsSealer {
            client,
            key_id: key_id.into(),
        }
    }
}

fn crypto_err(what: &str) -> Error {
    Error::permanent(format!("{what}: sealed contact details rejected"))
}

#[async_trait]
impl Sealer for KmsSealer {
    async fn seal(&self, ctx: &SealContext, plaintext: &[u8]) -> Result<Vec<u8>> {
        let dk = self
            .client
            .generate_data_key()
            .key_id(&self.key_id)
            .key_spec(DataKeySpec::Aes256)
            .encryption_context("incident", &ctx.incident)
            .encryption_context("stakeholder", &ctx.stakeholder)
            .send()
            .await
            .map_err(|e| map_sdk("generating a data key", e))?;
        let (Some(key), Some(wrapped)) = (dk.plaintext(), dk.ciphertext_blob()) else {
            return Err(Error::permanent("KMS returned no data key"));
        };
        let cipher =
            Aes256Gcm::new_from_slice(key.as_ref()).map_err(|_| crypto_err("data key size"))?;
        let ct = cipher
            .encrypt(
                Nonce::from_slice(&NONCE),
                Payload {
                    msg: plaintext,
                    aad: &ctx.aad(),
                },
            )
            .map_err(|_| crypto_err("encrypting"))?;
        let wrapped = wrapped.as_ref();
        let len = u16::try_from(wrapped.len()).map_err(|_| crypto_err("wrapped key size"))?;
        let mut out = Vec::with_capacity(3 + wrapped.len() + ct.len());
        out.push(FORMAT);
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(wrapped);
        out.extend_from_slice(&ct);
        Ok(out)
    }

    async fn open(&self, ctx: &SealContext, sealed: &[u8]) -> Result<Vec<u8>> {
        let [FORMAT, a, b, rest @ ..] = sealed else {
            return Err(crypto_err("unknown format"));
        };
        let len = usize::from(u16::from_be_bytes([*a, *b]));
        if rest.len() < len {
            return Err(crypto_err("truncated"));
        }
        let (wrapped, ct) = rest.split_at(len);
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
                Nonce::from_slice(&NONCE),
                Payload {
                    msg: ct,
                    aad: &ctx.aad(),
                },
            )
            .map_err(|_| crypto_err("decrypting"))
    }
}
