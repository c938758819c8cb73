//! Keyed hashes for the lookup items that find things by a personal value
//! without storing it: open cascades (state table) and stakeholders
//! (directory table) by the phone number they text or call, and
//! stakeholders by their SCIM `userName` (often an email address).
//!
//! The tag of a number is `hex(HMAC-SHA256(k, E.164))`; the tag of a
//! userName is `hex(HMAC-SHA256(k, "userName\0" + lowercase(userName)))`
//! (userNames compare case-insensitively in SCIM; the prefix keeps the two
//! kinds of tag apart). `k = HMAC-SHA256(secret, "muster/number-index/v1")`:
//! the configured secret is never used directly, so it may be shared with
//! another purpose (the ack link secret) without the two uses meeting.
//! Without the secret a tag cannot be tested against the small space of
//! phone numbers or a list of likely addresses.

use hmac::{Hmac, Mac};
use muster::domain::{ContactMethods, PhoneNumber};
use muster::secret::Secret;
use sha2::Sha256;
use std::fmt;

type HmacSha256 = Hmac<Sha256>;

const CONTEXT: &[u8] = b"muster/number-index/v1";

/// The key of the number and userName indexes. Never printed.
#[derive(Clone)]
pub struct IndexKey([u8; 32]);

impl fmt::Debug for IndexKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("IndexKey(••••)")
    }
}

impl IndexKey {
    /// Derives the index key from a configured secret.
    pub fn derive(secret: &Secret) -> Self {
        IndexKey(mac(secret.expose().as_bytes(), CONTEXT))
    }

    /// The tag of a number: lowercase hex of its keyed hash.
    pub fn tag(&self, number: &PhoneNumber) -> String {
        hex::encode(mac(&self.0, number.expose().as_bytes()))
    }

    /// The tag of a SCIM `userName`, the same for any ASCII case of it.
    pub fn user_name_tag(&self, user_name: &str) -> String {
        let mut msg = b"userName\0".to_vec();
        msg.extend(user_name.to_ascii_lowercase().as_bytes());
        hex::encode(mac(&self.0, &msg))
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
        let a = IndexKey::derive(&Secret::new("one"));
        let b = IndexKey::derive(&Secret::new("two"));
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

    #[test]
    fn user_name_tags_ignore_case_and_hide_the_name() {
        let k = IndexKey::derive(&Secret::new("one"));
        let t = k.user_name_tag("Ana.Ops@Example.com");
        assert_eq!(t, k.user_name_tag("ana.ops@example.com"));
        assert_ne!(t, k.user_name_tag("ana.ops2@example.com"));
        assert_ne!(
            t,
            IndexKey::derive(&Secret::new("two")).user_name_tag("ana.ops@example.com")
        );
        assert!(!t.contains("example"));
        // A userName that looks like a number does not share the number's tag.
        let n = PhoneNumber::parse("+14155550100").unwrap();
        assert_ne!(k.tag(&n), k.user_name_tag("+14155550100"));
    }
}
