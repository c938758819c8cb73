//! Keyed hashes of phone numbers, the keys of the lookup items that find
//! open cascades (state table) and stakeholders (directory table) by the
//! number they text or call, without storing the number.
//!
//! The tag of a number is `hex(HMAC-SHA256(k, E.164))` with
//! `k = HMAC-SHA256(secret, "muster/number-index/v1")`: the configured
//! secret is never used directly, so it may be shared with another purpose
//! (the ack link secret) without the two uses meeting. Without the secret a
//! tag cannot be tested against the small space of phone numbers.

use hmac::{Hmac, Mac};
use muster::domain::{ContactMethods, PhoneNumber};
use muster::secret::Secret;
use sha2::Sha256;
use std::fmt;

type HmacSha256 = Hmac<Sha256>;

const CONTEXT: &[u8] = b"muster/number-index/v1";

/// The key of the number index. Never printed.
#[derive(Clone)]
pub struct NumberKey([u8; 32]);

impl fmt::Debug for NumberKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("NumberKey(••••)")
    }
}

impl NumberKey {
    /// Derives the index key from a configured secret.
    pub fn derive(secret: &Secret) -> Self {
        NumberKey(mac(secret.expose().as_bytes(), CONTEXT))
    }

    /// The tag of a number: lowercase hex of its keyed hash.
    pub fn tag(&self, number: &PhoneNumber) -> String {
        hex::encode(mac(&self.0, number.expose().as_bytes()))
    }

    /// Distinct tags of the numbers a contact snapshot texts or calls.
    pub fn tags(&self, contacts: &ContactMethods) -> Vec<String> {
        let mut tags: Vec<String> = [contacts.phone.as_ref(), contacts.sms.as_ref()]
            .into_iter()
            .flatten()
            .map(|n| self.tag(n))
            .collect();
        tags.sort();
        tags.dedup();
        tags
    }
}

fn mac(key: &[u8], msg: &[u8]) -> [u8; 32] {
    // HMAC accepts keys of any length; `new_from_slice` cannot fail for it.
    let mut m = match HmacSha256::new_from_slice(key) {
        Ok(m) => m,
        Err(_) => unreachable!("HMAC takes keys of any length"),
    };
    m.update(msg);
    m.finalize().into_bytes().into()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn tags_are_keyed_stable_and_hide_the_number() {
        let n = PhoneNumber::parse("+14155550100").unwrap();
        let a = NumberKey::derive(&Secret::new("one"));
        let b = NumberKey::derive(&Secret::new("two"));
        assert_eq!(a.tag(&n), a.tag(&n));
        assert_ne!(a.tag(&n), b.tag(&n));
        assert_eq!(a.tag(&n).len(), 64);
        assert!(!a.tag(&n).contains("4155550100"));
        let both = ContactMethods {
            phone: Some(n.clone()),
            sms: Some(n),
            ..Default::default()
        };
        assert_eq!(a.tags(&both).len(), 1);
        assert!(format!("{a:?}").contains("••••"));
    }
}
