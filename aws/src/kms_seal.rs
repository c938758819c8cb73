//! Incident seals signed by a KMS asymmetric key ([`muster::ports::SealSigner`]).
//!
//! The key is `ECC_NIST_P256` with usage `SIGN_VERIFY`; seals are signed
//! with `ECDSA_SHA_256` over the raw seal message (KMS hashes it), and the
//! signature is KMS's DER encoding, hex. `describe` names the algorithm
//! `ecdsa-p256-sha256`, the key's ARN and its public key (DER
//! SubjectPublicKeyInfo from `GetPublicKey`, hex), so an exported trail is
//! verified offline (`muster audit verify`) without AWS credentials.
//! The private key never leaves KMS.

use crate::error::map_sdk;
use async_trait::async_trait;
use aws_sdk_kms::Client;
use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::{KeySpec, KeyUsageType, MessageType, SigningAlgorithmSpec};
use muster::{Error, Result};

/// The seal algorithm name these seals carry.
pub const ALGORITHM: &str = "ecdsa-p256-sha256";

pub struct KmsSealSigner {
    client: Client,
    key_id: String,
    public_key: String,
}

impl KmsSealSigner {
    /// Reads the key's public key once (`GetPublicKey`) and checks that it is
    /// a P-256 signing key that signs with ECDSA_SHA_256.
    pub async fn connect(client: Client, key_id: impl Into<String>) -> Result<Self> {
        let key_id = key_id.into();
        let resp = client
            .get_public_key()
            .key_id(&key_id)
            .send()
            .await
            .map_err(|e| map_sdk(format!("reading the public key of {key_id}"), e))?;
        #[allow(deprecated)]
        let spec = resp.key_spec().cloned().or_else(|| {
            resp.customer_master_key_spec()
                .map(|s| KeySpec::from(s.as_str()))
        });
        if spec != Some(KeySpec::EccNistP256) {
            return Err(Error::permanent(format!(
                "seal key {key_id} is {spec:?}, not ECC_NIST_P256"
            )));
        }
        if resp.key_usage() != Some(&KeyUsageType::SignVerify)
            || !resp
                .signing_algorithms()
                .contains(&SigningAlgorithmSpec::EcdsaSha256)
        {
            return Err(Error::permanent(format!(
                "seal key {key_id} does not sign with ECDSA_SHA_256"
            )));
        }
        let public_key = resp
            .public_key()
            .map(|k| hex::encode(k.as_ref()))
            .ok_or_else(|| Error::permanent(format!("KMS gave no public key for {key_id}")))?;
        Ok(KmsSealSigner {
            client,
            key_id: resp.key_id().map_or(key_id, str::to_string),
            public_key,
        })
    }

    /// Creates a P-256 signing key (tests and local setups; production keys
    /// come from the template). Returns its key id.
    pub async fn create_key(client: &Client) -> Result<String> {
        let resp = client
            .create_key()
            .key_spec(KeySpec::EccNistP256)
            .key_usage(KeyUsageType::SignVerify)
            .description("muster incident seals")
            .send()
            .await
            .map_err(|e| map_sdk("creating a seal key", e))?;
        resp.key_metadata()
            .map(|m| m.key_id().to_string())
            .ok_or_else(|| Error::permanent("KMS created a key without metadata"))
    }
}

#[async_trait]
impl muster::ports::SealSigner for KmsSealSigner {
    fn describe(&self) -> muster::ports::SignerInfo {
        muster::ports::SignerInfo {
            algorithm: ALGORITHM.to_string(),
            key_id: self.key_id.clone(),
            public_key: self.public_key.clone(),
        }
    }

    async fn sign(&self, message: &[u8]) -> Result<String> {
        let resp = self
            .client
            .sign()
            .key_id(&self.key_id)
            .message(Blob::new(message))
            .message_type(MessageType::Raw)
            .signing_algorithm(SigningAlgorithmSpec::EcdsaSha256)
            .send()
            .await
            .map_err(|e| map_sdk("signing a seal", e))?;
        resp.signature()
            .map(|s| hex::encode(s.as_ref()))
            .ok_or_else(|| Error::permanent("KMS returned no signature"))
    }
}
