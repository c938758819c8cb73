//! Contact vault and seal signer in process: per-stakeholder AES-256-GCM
//! data keys held in memory, and an Ed25519 signing key, both derived from a
//! seed (drills) or the operating system's randomness.

use super::lock;
use crate::domain::{IncidentId, StakeholderId};
use crate::error::{Error, Result};
use crate::ports::{ContactVault, SealSigner};
use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use async_trait::async_trait;
use base64::Engine;
use base64::engine::general_purpose::STANDARD_NO_PAD;
use ed25519_dalek::{Signer, SigningKey};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;
use std::collections::HashMap;
use std::sync::Mutex;

/// Ciphertexts are [`encrypt_contact`]'s, tagged `v1:`.
pub struct MemoryVault {
    inner: Mutex<(ChaCha20Rng, HashMap<StakeholderId, [u8; 32]>)>,
}

const FORMAT: &str = "v1:";

impl MemoryVault {
    pub fn new(seed: u64) -> Self {
        MemoryVault {
            inner: Mutex::new((ChaCha20Rng::seed_from_u64(seed), HashMap::new())),
        }
    }
    pub fn from_os() -> Self {
        MemoryVault {
            inner: Mutex::new((ChaCha20Rng::from_os_rng(), HashMap::new())),
        }
    }
}

/// The contact ciphertext every `ContactVault` writes: `format` (the
/// vault's own tag, `v1:` here) + base64(nonce(12) || AES-256-GCM
/// ciphertext), additional data `incident|stakeholder`. `key` is the
/// person's 32-byte data key.
pub fn encrypt_contact(
    format: &str,
    key: &[u8],
    nonce: [u8; 12],
    stakeholder: &StakeholderId,
    incident: &IncidentId,
    plaintext: &str,
) -> Result<String> {
    let cipher =
        Aes256Gcm::new_from_slice(key).map_err(|_| Error::permanent("bad data key length"))?;
    let ad = format!("{incident}|{stakeholder}");
    let ct = cipher
        .encrypt(
            Nonce::from_slice(&nonce),
            Payload {
                msg: plaintext.as_bytes(),
                aad: ad.as_bytes(),
            },
        )
        .map_err(|_| Error::permanent("encryption failed"))?;
    let mut out = nonce.to_vec();
    out.extend(ct);
    Ok(format!("{format}{}", STANDARD_NO_PAD.encode(out)))
}

/// The bytes of a contact ciphertext [`encrypt_contact`] wrote, or an error
/// naming it as not one.
pub fn contact_ciphertext(format: &str, ciphertext: &str) -> Result<Vec<u8>> {
    ciphertext
        .strip_prefix(format)
        .and_then(|b| STANDARD_NO_PAD.decode(b).ok())
        .filter(|r| r.len() > 12)
        .ok_or_else(|| Error::invalid("contact", "not a ciphertext this vault wrote"))
}

/// Opens the bytes of a contact ciphertext with the person's data key,
/// bound to `incident`.
pub fn decrypt_contact(
    key: &[u8],
    raw: &[u8],
    stakeholder: &StakeholderId,
    incident: &IncidentId,
) -> Result<String> {
    let cipher =
        Aes256Gcm::new_from_slice(key).map_err(|_| Error::permanent("bad data key length"))?;
    let ad = format!("{incident}|{stakeholder}");
    if raw.len() <= 12 {
        return Err(Error::invalid(
            "contact",
            "not a ciphertext this vault wrote",
        ));
    }
    let (nonce, msg) = raw.split_at(12);
    let pt = cipher
        .decrypt(
            Nonce::from_slice(nonce),
            Payload {
                msg,
                aad: ad.as_bytes(),
            },
        )
        .map_err(|_| {
            Error::invalid(
                "contact",
                "does not decrypt under this person's key and incident",
            )
        })?;
    String::from_utf8(pt).map_err(|_| Error::permanent("decrypted contact is not text"))
}

#[async_trait]
impl ContactVault for MemoryVault {
    async fn encrypt(
        &self,
        stakeholder: &StakeholderId,
        incident: &IncidentId,
        plaintext: &str,
    ) -> Result<String> {
        let mut g = lock(&self.inner);
        let (rng, keys) = &mut *g;
        let key = *keys
            .entry(stakeholder.clone())
            .or_insert_with(|| rng.random());
        let nonce: [u8; 12] = rng.random();
        encrypt_contact(FORMAT, &key, nonce, stakeholder, incident, plaintext)
    }

    async fn decrypt(
        &self,
        stakeholder: &StakeholderId,
        incident: &IncidentId,
        ciphertext: &str,
    ) -> Result<Option<String>> {
        let Some(key) = lock(&self.inner).1.get(stakeholder).copied() else {
            return Ok(None);
        };
        let raw = contact_ciphertext(FORMAT, ciphertext)?;
        decrypt_contact(&key, &raw, stakeholder, incident).map(Some)
    }

    async fn erase(&self, stakeholder: &StakeholderId) -> Result<bool> {
        Ok(lock(&self.inner).1.remove(stakeholder).is_some())
    }
}

/// An Ed25519 seal signer with a key held in process.
pub struct LocalSealSigner {
    key: SigningKey,
}

impl LocalSealSigner {
    pub fn new(seed: u64) -> Self {
        LocalSealSigner {
            key: SigningKey::from_bytes(&ChaCha20Rng::seed_from_u64(seed ^ 0x5ea1).random()),
        }
    }
    pub fn from_os() -> Self {
        LocalSealSigner {
            key: SigningKey::from_bytes(&ChaCha20Rng::from_os_rng().random()),
        }
    }
}

#[async_trait]
impl SealSigner for LocalSealSigner {
    fn describe(&self) -> crate::ports::SignerInfo {
        let public = hex::encode(self.key.verifying_key().to_bytes());
        crate::ports::SignerInfo {
            algorithm: "ed25519".into(),
            key_id: format!("local:{}", &public[..16]),
            public_key: public,
        }
    }
    async fn sign(&self, message: &[u8]) -> Result<String> {
        Ok(hex::encode(self.key.sign(message).to_bytes()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids() -> (StakeholderId, IncidentId) {
        (
            StakeholderId::parse("a").unwrap_or_else(|e| panic!("{e}")),
            IncidentId::parse("INC-1").unwrap_or_else(|e| panic!("{e}")),
        )
    }

    #[test]
    fn contacts_round_trip_bound_to_incident_and_erasable() {
        futures::executor::block_on(async {
            let v = MemoryVault::new(1);
            let (who, inc) = ids();
            let ct = v
                .encrypt(&who, &inc, "+442079460001")
                .await
                .unwrap_or_default();
            assert!(ct.starts_with("v1:") && !ct.contains("2079460001"));
            assert_eq!(
                v.decrypt(&who, &inc, &ct).await.ok().flatten().as_deref(),
                Some("+442079460001")
            );
            let other = IncidentId::parse("INC-2").unwrap_or_else(|e| panic!("{e}"));
            assert!(
                v.decrypt(&who, &other, &ct).await.is_err(),
                "bound to its incident"
            );
            let mut tampered = ct.clone();
            tampered.pop();
            assert!(v.decrypt(&who, &inc, &tampered).await.is_err());
            assert_eq!(v.erase(&who).await.ok(), Some(true));
            assert_eq!(
                v.decrypt(&who, &inc, &ct).await.ok(),
                Some(None),
                "erased: unreadable"
            );
        });
    }

    #[test]
    fn seals_sign_and_verify() {
        futures::executor::block_on(async {
            let s = LocalSealSigner::new(7);
            let crate::ports::SignerInfo {
                algorithm: alg,
                public_key: public,
                ..
            } = s.describe();
            let mut seal = crate::audit::Seal {
                incident: ids().1,
                at: crate::domain::Ts(1),
                chains: 1,
                entries: 2,
                heads_digest: "00".into(),
                algorithm: alg,
                key_id: "k".into(),
                public_key: public,
                signature: String::new(),
            };
            seal.signature = s.sign(&seal.message()).await.unwrap_or_default();
            assert_eq!(crate::audit::verify_seal_signature(&seal), Ok(()));
            seal.entries = 3;
            assert!(crate::audit::verify_seal_signature(&seal).is_err());
        });
    }
}
