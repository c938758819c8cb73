//! DynamoDB adapters: the state store (incidents, cascades, lookups, audit),
//! the directory and the distributed rate limiter. Keys and attribute helpers shared by them live here.

pub mod directory;
pub mod index_key;
pub mod limiter;
pub mod state;

pub use directory::DynamoDirectory;
pub use index_key::IndexKey;
pub use limiter::DynamoLimiter;
pub use state::DynamoStore;

use aws_sdk_dynamodb::types::AttributeValue;
use muster::Error;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};

pub(crate) type Item = HashMap<String, AttributeValue>;

/// How long past its last use a short-lived item (a contact reservation)
/// stays before the table's TTL (`expires_at`, epoch seconds) removes it.
pub const TTL_SLACK_SECS: u64 = 86_400;

/// Number of partitions an incident's cascades (and audit entries, and due
/// index entries) are spread over.
pub const SHARDS: u8 = 16;

/// The shard of a stakeholder: FNV-1a over the id, modulo [`SHARDS`]. Stable
/// across releases and platforms (it is part of every stored key).
pub fn shard(stakeholder: &str) -> u8 {
    (fnv1a(stakeholder) % u64::from(SHARDS)) as u8
}

/// Counter items per shard of an incident's tally: writers of one shard
/// spread over this many items, so concurrent transitions seldom meet on one.
pub const TALLY_BUCKETS: u8 = 4;

/// The tally item of a stakeholder's cascades within their shard.
pub fn tally_bucket(stakeholder: &str) -> u8 {
    (fnv1a(stakeholder) / u64::from(SHARDS) % u64::from(TALLY_BUCKETS)) as u8
}

fn fnv1a(s: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

pub(crate) fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

pub(crate) fn n(v: impl ToString) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

pub(crate) fn get_s<'a>(item: &'a Item, name: &str) -> Result<&'a str, Error> {
    match item.get(name) {
        Some(AttributeValue::S(v)) => Ok(v),
        _ => Err(Error::permanent(format!(
            "stored item lacks string attribute {name}"
        ))),
    }
}

pub(crate) fn get_n(item: &Item, name: &str) -> Result<u64, Error> {
    match item.get(name) {
        Some(AttributeValue::N(v)) => v
            .parse()
            .map_err(|_| Error::permanent(format!("attribute {name} is not an integer"))),
        _ => Err(Error::permanent(format!(
            "stored item lacks number attribute {name}"
        ))),
    }
}

pub(crate) fn get_b<'a>(item: &'a Item, name: &str) -> Result<&'a [u8], Error> {
    match item.get(name) {
        Some(AttributeValue::B(v)) => Ok(v.as_ref()),
        _ => Err(Error::permanent(format!(
            "stored item lacks binary attribute {name}"
        ))),
    }
}

pub(crate) fn build_err(what: &str, e: impl std::error::Error + Send + Sync + 'static) -> Error {
    Error::Permanent {
        context: format!("building {what} request"),
        source: Some(Box::new(e)),
    }
}

pub(crate) fn json_err(what: &str, e: serde_json::Error) -> Error {
    Error::Permanent {
        context: format!("decoding stored {what}"),
        source: Some(Box::new(e)),
    }
}

/// An item's size as DynamoDB bills it: attribute names plus values (numbers
/// approximated as one byte per two digits plus one).
pub fn item_size(item: &Item) -> usize {
    item.iter()
        .map(|(k, v)| {
            k.len()
                + match v {
                    AttributeValue::S(x) => x.len(),
                    AttributeValue::N(x) => x.len().div_ceil(2) + 1,
                    AttributeValue::B(x) => x.as_ref().len(),
                    AttributeValue::Bool(_) | AttributeValue::Null(_) => 1,
                    _ => 0,
                }
        })
        .sum()
}

/// Write capacity units of one write of `item` (1 KB each, rounded up).
pub fn write_units(item: &Item) -> u64 {
    (item_size(item).div_ceil(1024)).max(1) as u64
}

/// Requests and write units an adapter has made, for cost figures.
#[derive(Debug, Default)]
pub struct Meter {
    requests: AtomicU64,
    write_units: AtomicU64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MeterReading {
    pub requests: u64,
    pub write_units: u64,
}

impl Meter {
    pub(crate) fn request(&self, write_units: u64) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.write_units.fetch_add(write_units, Ordering::Relaxed);
    }
    pub fn read(&self) -> MeterReading {
        MeterReading {
            requests: self.requests.load(Ordering::Relaxed),
            write_units: self.write_units.load(Ordering::Relaxed),
        }
    }
}
