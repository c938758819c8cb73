//! Incident and cascade store on DynamoDB, with the memory store's semantics.
//!
//! State table (`pk`, `sk`):
//! - incident: `INC#<id>` / `META`, `doc` (incident JSON), `version`;
//! - open incident marker: `OPEN` / `<id>`, present while the incident is
//!   open (written and deleted in the incident's own transaction), read by
//!   the sealing sweep;
//! - cascade state: `INC#<id>#<shard>` / `STK#<stakeholder>#<route>`, `doc`
//!   (record JSON without contacts), `version`, and while something is due,
//!   `due_shard` = `DUE#<shard>` and `due_at` (ms): the sparse GSI `due`;
//! - cascade contacts: `INC#<id>#<shard>` / `PII#<stakeholder>#<route>`,
//!   `contacts` (sealed with a KMS data key), written once at creation so a
//!   transition never rewrites it;
//! - tally: `INC#<id>#<shard>` / `TALLY#<bucket>`, one counter attribute
//!   per [`Tally`] slot (`m_active`, `t1_acknowledged`, ...), added to by
//!   the transaction that creates or changes a cascade of that shard;
//!   [`TALLY_BUCKETS`] items per shard (by a hash of the stakeholder) so
//!   that concurrent writers seldom meet on one item. The status reads the
//!   64 items, never the cascades;
//! - provider message reference: `MSG#<provider id>` / `REF`;
//! - number index (with a [`IndexKey`]): `NUM#<tag>` /
//!   `<created_at ms, 13 digits>#<cascade key>`, `cascade` (key JSON), one
//!   per distinct number the cascade texts or calls, written with the
//!   cascade and deleted by the transition that makes it terminal. The tag
//!   is a keyed hash of the number: the number itself is never stored in
//!   plaintext. Reads skip terminal cascades in any case. SMS replies
//!   ("ACK 4821") are matched through it: ack codes are four digits, unique
//!   only among one number's open cascades, so they need no index of their
//!   own.
//!
//! Audit table (`pk`, `sk`): `INC#<id>#<shard>` / `<stakeholder>#<route>#<seq>`
//! (seq zero-padded), `entry` (audit entry JSON); incident seals:
//! `INC#<id>#SEAL` / `<at ms, 13 digits>#<content hash>`, `seal` (seal
//! JSON), so the audit table's stream archives them with the entries. Seals
//! are only ever added; chain heads for sealing come from the cascade state
//! items (`audit_seq`, `audit_head`), never from the audit table.
//!
//! Expiry: every state item carries the table's TTL `expires_at` (epoch
//! seconds): its last write plus the audit retention (180 days unless
//! configured). Items are rewritten while their cascade or incident changes,
//! so an open incident's live items stay; once an incident is closed (its
//! cascades cancelled or ended, each rewritten then) nothing refreshes
//! them, and the whole incident, sealed contacts (`PII#`) and message
//! references included, is gone within the retention of its audit trail.
//! Contact holds expire with their hold.
//!
//! Guards: an incident or cascade is created only if absent
//! (`attribute_not_exists(pk)`); a transition replaces the state item only if
//! `version = :expected`, in one `TransactWriteItems` with the audit entry
//! (itself `attribute_not_exists(pk)`), so both land or neither. The due
//! index is spread over [`SHARDS`] partitions (`DUE#00`..`DUE#15`, the
//! cascade's shard) and queried as `due_shard = :s AND due_at <= :t` per
//! partition, so one activation never heats one index partition.

use super::index_key::IndexKey;
use super::{
    Item, Meter, SHARDS, TALLY_BUCKETS, build_err, get_n, get_s, json_err, n, s, shard,
    tally_bucket, write_units,
};
use crate::crypto::{CipherContext, ContactCipher};
use crate::error::map_sdk;
use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, ConditionCheck, Delete, GlobalSecondaryIndex,
    KeySchemaElement, KeyType, KeysAndAttributes, Projection, ProjectionType, Put, ReturnValue,
    ScalarAttributeType, TransactWriteItem, Update,
};
use muster::audit::{AuditEntry, ChainHead, Seal};
use muster::domain::{
    Channel, ContactMethods, Incident, IncidentId, IncidentStatus, Millis, PhoneNumber,
    StakeholderId, Ts,
};
use muster::engine::{CascadeKey, ChannelWaits, ReceiptStatus, Route, Tally, WaitCause};
use muster::ports::{
    CascadeRecord, CascadeStore, ContactEntry, ContactLedger, HELD_RECEIPTS, IncidentStore,
    NumberIndex, Page, Reservation, SealStore, SendClaim, guarded,
};
use muster::{Error, Result};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::Arc;

pub const DUE_INDEX: &str = "due";
/// Days audit items stay in the audit table unless configured.
pub const DEFAULT_RETENTION_DAYS: u32 = 180;
/// Partition of the open incident markers.
const OPEN_PK: &str = "OPEN";
/// Partition of every incident's listing item, `sk` = trigger time
/// (20 digits, Unix ms) `#` id: the incident list reads it newest first.
/// (Incidents are created a few an hour; one partition takes that.)
const RECENT_PK: &str = "RECENT";

fn recent_sk(incident: &Incident) -> String {
    format!("{:020}#{}", incident.triggered_at.0, incident.id())
}
/// Bounded retries of `UnprocessedKeys` in a batch read.
const BATCH_RETRIES: usize = 5;

/// Repeats of a transaction cancelled only because it met another one.
const TX_CONFLICT_RETRIES: u32 = 4;

/// The reasons a cancelled transaction gives, one per item (`None`: that
/// item was fine).
fn cancel_reasons(
    err: &SdkError<TransactWriteItemsError, aws_sdk_dynamodb::config::http::HttpResponse>,
) -> Option<Vec<&str>> {
    if let SdkError::ServiceError(se) = err
        && let TransactWriteItemsError::TransactionCanceledException(tc) = se.err()
    {
        return Some(
            tc.cancellation_reasons()
                .iter()
                .map(|r| r.code().unwrap_or("None"))
                .collect(),
        );
    }
    None
}

/// Cancelled only because it met another transaction in flight: no guard
/// failed, nothing was written.
fn only_met_another(
    err: &SdkError<TransactWriteItemsError, aws_sdk_dynamodb::config::http::HttpResponse>,
) -> bool {
    cancel_reasons(err).is_some_and(|r| {
        r.contains(&"TransactionConflict")
            && r.iter()
                .all(|c| *c == "TransactionConflict" || *c == "None")
    })
}

pub struct DynamoStore {
    client: Client,
    table: String,
    audit_table: String,
    cipher: Arc<dyn ContactCipher>,
    meter: Arc<Meter>,
    index_key: Option<IndexKey>,
    retention_days: u32,
}

fn parse_route(s: &str) -> Result<Route> {
    Route::decode(s).ok_or_else(|| Error::permanent(format!("unknown route {s:?} in a key")))
}

pub fn incident_pk(id: &IncidentId) -> String {
    format!("INC#{id}")
}

pub fn cascade_pk(incident: &IncidentId, shard: u8) -> String {
    format!("INC#{incident}#{shard:02}")
}

fn key_pk(key: &CascadeKey) -> String {
    cascade_pk(&key.incident, shard(key.stakeholder.as_str()))
}

fn state_sk(key: &CascadeKey) -> String {
    format!("STK#{}#{}", key.stakeholder, key.route.encode())
}

/// The prefix of every state `sk` of one person's cascades.
fn person_sk_prefix(stakeholder: &StakeholderId) -> String {
    format!("STK#{stakeholder}#")
}

fn tally_sk(bucket: u8) -> String {
    format!("TALLY#{bucket}")
}

fn pii_sk(key: &CascadeKey) -> String {
    format!("PII#{}#{}", key.stakeholder, key.route.encode())
}

fn contact_sk(person: &StakeholderId, channel: Channel) -> String {
    format!("CONTACT#{person}#{}", channel.as_str())
}

pub fn seal_pk(id: &IncidentId) -> String {
    format!("INC#{id}#SEAL")
}

fn number_pk(tag: &str) -> String {
    format!("NUM#{tag}")
}

fn number_sk(record: &CascadeRecord) -> String {
    format!("{:013}#{}", record.cascade.created_at.0, record.cascade.key)
}

fn audit_sk(e: &AuditEntry) -> String {
    format!("{}#{}#{:012}", e.stakeholder, e.route.encode(), e.seq)
}

/// The cascade key of a state item, from its `pk` and `sk`.
fn key_of(pk: &str, sk: &str) -> Result<CascadeKey> {
    let bad = || Error::permanent(format!("malformed cascade key {pk:?} / {sk:?}"));
    let (inc, _shard) = pk
        .strip_prefix("INC#")
        .and_then(|p| p.rsplit_once('#'))
        .ok_or_else(bad)?;
    // Ids never contain `#`: the first one after the prefix ends the stakeholder.
    let (sid, route) = sk
        .strip_prefix("STK#")
        .and_then(|p| p.split_once('#'))
        .ok_or_else(bad)?;
    Ok(CascadeKey {
        incident: IncidentId::parse(inc).map_err(|_| bad())?,
        stakeholder: StakeholderId::parse(sid).map_err(|_| bad())?,
        route: parse_route(route)?,
    })
}

fn cipher_context(key: &CascadeKey) -> CipherContext {
    CipherContext::new(key.incident.as_str(), key.stakeholder.as_str())
}

/// Conflict for a failed condition (with the cancellation reasons of a
/// transaction); every other failure through [`map_sdk`].
fn map_tx(
    context: String,
    err: SdkError<TransactWriteItemsError, aws_sdk_dynamodb::config::http::HttpResponse>,
) -> Error {
    if let Some(reasons) = cancel_reasons(&err) {
        // A guard that failed is a conflict the caller resolves by reading
        // again. A transaction that only met another one in flight (on a
        // shared tally item, say) changed nothing and is worth repeating.
        if only_met_another(&err) {
            return Error::Transient {
                context: format!(
                    "{context}: transaction cancelled by a concurrent one, reasons [{}]",
                    reasons.join(", ")
                ),
                source: None,
            };
        }
        if reasons
            .iter()
            .any(|c| *c == "ConditionalCheckFailed" || *c == "TransactionConflict")
        {
            return Error::Conflict(format!(
                "{context}: transaction cancelled, reasons [{}]",
                reasons.join(", ")
            ));
        }
        // Cancelled for capacity: try again later (a 503, not a 500).
        if reasons.iter().any(|c| {
            matches!(
                *c,
                "ThrottlingError" | "ProvisionedThroughputExceeded" | "RequestLimitExceeded"
            )
        }) {
            return Error::Transient {
                context: format!(
                    "{context}: transaction cancelled for capacity, reasons [{}]",
                    reasons.join(", ")
                ),
                source: None,
            };
        }
    }
    map_sdk(context, err)
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_dynamodb::types::CancellationReason;
    use aws_sdk_dynamodb::types::error::TransactionCanceledException;

    fn cancelled(codes: &[&str]) -> Error {
        let mut e = TransactionCanceledException::builder();
        for c in codes {
            e = e.cancellation_reasons(CancellationReason::builder().code(*c).build());
        }
        let raw = aws_sdk_dynamodb::config::http::HttpResponse::new(
            400.try_into().unwrap_or_else(|_| unreachable!()),
            aws_smithy_types::body::SdkBody::empty(),
        );
        map_tx(
            "writing".into(),
            SdkError::service_error(
                TransactWriteItemsError::TransactionCanceledException(e.build()),
                raw,
            ),
        )
    }

    /// DynamoDB cancels a transaction for capacity with a ThrottlingError
    /// reason: that is worth retrying (503), unlike a broken request.
    #[test]
    fn a_transaction_cancelled_for_capacity_is_transient_and_a_failed_guard_a_conflict() {
        assert!(matches!(
            cancelled(&["None", "ThrottlingError"]),
            Error::Transient { .. }
        ));
        assert!(matches!(
            cancelled(&["ProvisionedThroughputExceeded"]),
            Error::Transient { .. }
        ));
        assert!(matches!(
            cancelled(&["ConditionalCheckFailed", "None"]),
            Error::Conflict(_)
        ));
        assert!(matches!(
            cancelled(&["ValidationError"]),
            Error::Permanent { .. }
        ));
    }

    /// Meeting a concurrent transaction (on a shared tally item) is no
    /// failed guard: it is worth repeating, never read as "it exists".
    #[test]
    fn a_transaction_that_only_met_another_is_transient_unless_a_guard_failed() {
        assert!(matches!(
            cancelled(&["None", "TransactionConflict"]),
            Error::Transient { .. }
        ));
        assert!(matches!(
            cancelled(&["ConditionalCheckFailed", "TransactionConflict"]),
            Error::Conflict(_)
        ));
    }
}

/// Where `overdue` resumes: the index partition and the last key read in it.
#[derive(Serialize, Deserialize)]
struct DueCursor {
    shard: u8,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    last: Option<(String, String, u64)>,
}

/// Where `list_cascades` resumes: the shard and the last state `sk` read in it.
#[derive(Serialize, Deserialize)]
struct ListCursor {
    shard: u8,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    last: Option<String>,
}

fn parse_cursor<T: for<'de> Deserialize<'de>>(c: &str) -> Result<T> {
    serde_json::from_str(c).map_err(|_| Error::invalid("cursor", "not a cursor this store issued"))
}

impl DynamoStore {
    pub fn new(
        client: Client,
        table: impl Into<String>,
        audit_table: impl Into<String>,
        cipher: Arc<dyn ContactCipher>,
    ) -> Self {
        DynamoStore {
            client,
            table: table.into(),
            audit_table: audit_table.into(),
            cipher,
            meter: Arc::new(Meter::default()),
            index_key: None,
            retention_days: DEFAULT_RETENTION_DAYS,
        }
    }

    /// Days an audit item stays in the audit table (its TTL `expires_at`);
    /// the archive keeps it beyond. Default [`DEFAULT_RETENTION_DAYS`].
    pub fn with_audit_retention_days(mut self, days: u32) -> Self {
        self.retention_days = days;
        self
    }

    /// Keeps the number index (see the module documentation) under `key`.
    /// Without it no index items are written and [`NumberIndex`] fails.
    pub fn with_index_key(mut self, key: IndexKey) -> Self {
        self.index_key = Some(key);
        self
    }

    /// Requests and write units this store has sent.
    pub fn meter(&self) -> Arc<Meter> {
        self.meter.clone()
    }

    /// Creates the state table (with the `due` index) and the audit table,
    /// on demand. For tests and local setups; production uses the template.
    pub async fn create_tables(client: &Client, table: &str, audit_table: &str) -> Result<()> {
        let attr = |name: &str, t: ScalarAttributeType| {
            AttributeDefinition::builder()
                .attribute_name(name)
                .attribute_type(t)
                .build()
                .map_err(|e| build_err("attribute definition", e))
        };
        let key = |name: &str, t: KeyType| {
            KeySchemaElement::builder()
                .attribute_name(name)
                .key_type(t)
                .build()
                .map_err(|e| build_err("key schema", e))
        };
        let gsi = GlobalSecondaryIndex::builder()
            .index_name(DUE_INDEX)
            .key_schema(key("due_shard", KeyType::Hash)?)
            .key_schema(key("due_at", KeyType::Range)?)
            .projection(
                Projection::builder()
                    .projection_type(ProjectionType::KeysOnly)
                    .build(),
            )
            .build()
            .map_err(|e| build_err("index", e))?;
        client
            .create_table()
            .table_name(table)
            .billing_mode(BillingMode::PayPerRequest)
            .attribute_definitions(attr("pk", ScalarAttributeType::S)?)
            .attribute_definitions(attr("sk", ScalarAttributeType::S)?)
            .attribute_definitions(attr("due_shard", ScalarAttributeType::S)?)
            .attribute_definitions(attr("due_at", ScalarAttributeType::N)?)
            .key_schema(key("pk", KeyType::Hash)?)
            .key_schema(key("sk", KeyType::Range)?)
            .global_secondary_indexes(gsi)
            .send()
            .await
            .map_err(|e| map_sdk(format!("creating table {table}"), e))?;
        client
            .create_table()
            .table_name(audit_table)
            .billing_mode(BillingMode::PayPerRequest)
            .attribute_definitions(attr("pk", ScalarAttributeType::S)?)
            .attribute_definitions(attr("sk", ScalarAttributeType::S)?)
            .key_schema(key("pk", KeyType::Hash)?)
            .key_schema(key("sk", KeyType::Range)?)
            .send()
            .await
            .map_err(|e| map_sdk(format!("creating table {audit_table}"), e))?;
        Ok(())
    }

    fn state_item(&self, record: &CascadeRecord) -> Result<Item> {
        let key = &record.cascade.key;
        let stored = CascadeRecord {
            contacts: ContactMethods::default(),
            ..record.clone()
        };
        let doc = serde_json::to_string(&stored).map_err(|e| json_err("cascade", e))?;
        let sh = shard(key.stakeholder.as_str());
        let mut item = HashMap::from([
            ("pk".to_string(), s(cascade_pk(&key.incident, sh))),
            ("sk".to_string(), s(state_sk(key))),
            ("version".to_string(), n(record.cascade.version)),
            ("doc".to_string(), s(doc)),
        ]);
        if let Some(due) = record.cascade.next_due() {
            item.insert("due_shard".to_string(), s(format!("DUE#{sh:02}")));
            item.insert("due_at".to_string(), n(due.0));
        }
        Ok(item)
    }

    fn audit_item(&self, e: &AuditEntry) -> Result<Item> {
        let entry = serde_json::to_string(e).map_err(|e| json_err("audit entry", e))?;
        let mut item = HashMap::from([
            (
                "pk".to_string(),
                s(cascade_pk(&e.incident, shard(e.stakeholder.as_str()))),
            ),
            ("sk".to_string(), s(audit_sk(e))),
            ("entry".to_string(), s(entry)),
        ]);
        self.audit_extras(&mut item, e.at);
        Ok(item)
    }

    /// Attributes of every audit table item: the TTL `expires_at` (epoch
    /// seconds), the retention after the time the item records.
    fn audit_extras(&self, item: &mut Item, at: Ts) {
        let expires = at.0 / 1000 + u64::from(self.retention_days) * 86_400;
        item.insert("expires_at".to_string(), n(expires));
    }

    /// The TTL of a state item written now (see the module's Expiry).
    fn state_expiry(&self) -> AttributeValue {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        n(now + u64::from(self.retention_days) * 86_400)
    }

    fn put(
        &self,
        table: &str,
        mut item: Item,
        condition: &str,
        values: Option<HashMap<String, AttributeValue>>,
    ) -> Result<TransactWriteItem> {
        if table == self.table {
            item.entry("expires_at".to_string())
                .or_insert_with(|| self.state_expiry());
        }
        let condition = (!condition.is_empty()).then(|| condition.to_string());
        let put = Put::builder()
            .table_name(table)
            .set_item(Some(item))
            .set_condition_expression(condition)
            .set_expression_attribute_values(values)
            .build()
            .map_err(|e| build_err("put", e))?;
        Ok(TransactWriteItem::builder().put(put).build())
    }

    async fn transact(&self, context: String, items: Vec<(TransactWriteItem, u64)>) -> Result<()> {
        // A transactional write costs two write units per KB of each item.
        let units: u64 = items.iter().map(|(_, u)| 2 * u).sum();
        let items: Vec<TransactWriteItem> = items.into_iter().map(|(i, _)| i).collect();
        let mut attempt = 0;
        loop {
            self.meter.request(units);
            let sent = self
                .client
                .transact_write_items()
                .set_transact_items(Some(items.clone()))
                .send()
                .await;
            match sent {
                Ok(_) => return Ok(()),
                // Met a concurrent transaction: nothing was written; again
                // after a short, jittered pause, a few times.
                Err(e) if attempt < TX_CONFLICT_RETRIES && only_met_another(&e) => {
                    attempt += 1;
                    use rand::TryRngCore;
                    let jitter = rand::rngs::OsRng.try_next_u32().unwrap_or(0) % 20;
                    let ms = (5 + u64::from(jitter)) << attempt;
                    tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
                }
                Err(e) => return Err(map_tx(context, e)),
            }
        }
    }

    /// The addition of `change` to the tally item of `key`'s stakeholder,
    /// or nothing when it adds nothing.
    fn tally_update(
        &self,
        key: &CascadeKey,
        change: &Tally,
    ) -> Result<Option<(TransactWriteItem, u64)>> {
        if change.is_zero() {
            return Ok(None);
        }
        let mut adds = Vec::new();
        let mut names = HashMap::new();
        let mut values = HashMap::from([(":exp".to_string(), self.state_expiry())]);
        for (i, (name, by)) in change.nonzero().enumerate() {
            adds.push(format!("#n{i} :v{i}"));
            names.insert(format!("#n{i}"), name.to_string());
            values.insert(format!(":v{i}"), n(by));
        }
        let update = Update::builder()
            .table_name(&self.table)
            .key("pk", s(key_pk(key)))
            .key("sk", s(tally_sk(tally_bucket(key.stakeholder.as_str()))))
            .update_expression(format!("SET expires_at = :exp ADD {}", adds.join(", ")))
            .set_expression_attribute_names(Some(names))
            .set_expression_attribute_values(Some(values))
            .build()
            .map_err(|e| build_err("tally update", e))?;
        Ok(Some((
            TransactWriteItem::builder().update(update).build(),
            1,
        )))
    }

    /// The open incident marker: put while the incident is open, deleted
    /// once it is not.
    fn open_marker(&self, incident: &Incident) -> Result<Option<(TransactWriteItem, u64)>> {
        let id = incident.id().as_str();
        if incident.status == IncidentStatus::Open {
            let item: Item =
                HashMap::from([("pk".to_string(), s(OPEN_PK)), ("sk".to_string(), s(id))]);
            Ok(Some((self.put(&self.table, item, "", None)?, 1)))
        } else {
            let del = Delete::builder()
                .table_name(&self.table)
                .key("pk", s(OPEN_PK))
                .key("sk", s(id))
                .build()
                .map_err(|e| build_err("delete", e))?;
            Ok(Some((TransactWriteItem::builder().delete(del).build(), 1)))
        }
    }

    /// Number index items of a new open cascade (none without a key).
    fn number_puts(&self, record: &CascadeRecord) -> Result<Vec<(TransactWriteItem, u64)>> {
        let Some(nk) = &self.index_key else {
            return Ok(Vec::new());
        };
        if record.cascade.status.is_terminal() {
            return Ok(Vec::new());
        }
        let cascade =
            serde_json::to_string(&record.cascade.key).map_err(|e| json_err("cascade key", e))?;
        nk.tags(&record.contacts)
            .into_iter()
            .map(|tag| {
                let item: Item = HashMap::from([
                    ("pk".to_string(), s(number_pk(&tag))),
                    ("sk".to_string(), s(number_sk(record))),
                    ("cascade".to_string(), s(cascade.clone())),
                ]);
                let u = write_units(&item);
                Ok((
                    self.put(&self.table, item, "attribute_not_exists(pk)", None)?,
                    u,
                ))
            })
            .collect()
    }

    /// Deletes of the number index items of a cascade that is now terminal.
    fn number_deletes(&self, record: &CascadeRecord) -> Result<Vec<(TransactWriteItem, u64)>> {
        let Some(nk) = &self.index_key else {
            return Ok(Vec::new());
        };
        if !record.cascade.status.is_terminal() {
            return Ok(Vec::new());
        }
        nk.tags(&record.contacts)
            .into_iter()
            .map(|tag| {
                let del = Delete::builder()
                    .table_name(&self.table)
                    .key("pk", s(number_pk(&tag)))
                    .key("sk", s(number_sk(record)))
                    .build()
                    .map_err(|e| build_err("delete", e))?;
                Ok((TransactWriteItem::builder().delete(del).build(), 1))
            })
            .collect()
    }

    /// Records by key, with their contacts, in the order of `keys`; keys
    /// without a stored cascade are skipped.
    async fn load_records(&self, keys: &[CascadeKey]) -> Result<Vec<CascadeRecord>> {
        let mut got = self
            .batch_get(
                keys.iter()
                    .flat_map(|k| [(key_pk(k), state_sk(k)), (key_pk(k), pii_sk(k))])
                    .collect(),
            )
            .await?;
        let mut out = Vec::with_capacity(keys.len());
        for key in keys {
            let Some(state) = got.remove(&(key_pk(key), state_sk(key))) else {
                continue;
            };
            let mut rec = self.record_from(&state)?;
            if let Some(pii) = got.remove(&(key_pk(key), pii_sk(key))) {
                rec.contacts = self.open_contacts(key, &pii).await?;
            }
            out.push(rec);
        }
        Ok(out)
    }

    /// Whether the cascade's state item exists (consistent read of its key).
    async fn state_exists(&self, key: &CascadeKey) -> Result<bool> {
        self.meter.request(0);
        let resp = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("pk", s(key_pk(key)))
            .key("sk", s(state_sk(key)))
            .projection_expression("pk")
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| map_sdk(format!("reading cascade {key}"), e))?;
        Ok(resp.item().is_some())
    }

    fn record_from(&self, state: &Item) -> Result<CascadeRecord> {
        let doc = get_s(state, "doc")?;
        serde_json::from_str(doc).map_err(|e| json_err("cascade", e))
    }

    async fn open_contacts(&self, key: &CascadeKey, pii: &Item) -> Result<ContactMethods> {
        let sealed = super::get_b(pii, "contacts")?;
        let plain = self.cipher.decrypt(&cipher_context(key), sealed).await?;
        serde_json::from_slice(&plain).map_err(|e| json_err("contacts", e))
    }

    /// Reads items by key, consistently, retrying unprocessed keys a bounded
    /// number of times. Returns them keyed by (`pk`, `sk`).
    async fn batch_get(
        &self,
        keys: Vec<(String, String)>,
    ) -> Result<HashMap<(String, String), Item>> {
        let mut out = HashMap::new();
        for chunk in keys.chunks(100) {
            let mut pending = Some(
                KeysAndAttributes::builder()
                    .set_keys(Some(
                        chunk
                            .iter()
                            .map(|(pk, sk)| {
                                HashMap::from([
                                    ("pk".to_string(), s(pk.clone())),
                                    ("sk".to_string(), s(sk.clone())),
                                ])
                            })
                            .collect(),
                    ))
                    .consistent_read(true)
                    .build()
                    .map_err(|e| build_err("batch get", e))?,
            );
            for _ in 0..BATCH_RETRIES {
                let Some(req) = pending.take() else { break };
                self.meter.request(0);
                let resp = self
                    .client
                    .batch_get_item()
                    .request_items(&self.table, req)
                    .send()
                    .await
                    .map_err(|e| map_sdk("reading cascades", e))?;
                if let Some(items) = resp.responses().and_then(|r| r.get(&self.table)) {
                    for it in items {
                        let k = (get_s(it, "pk")?.to_string(), get_s(it, "sk")?.to_string());
                        out.insert(k, it.clone());
                    }
                }
                pending = resp
                    .unprocessed_keys()
                    .and_then(|u| u.get(&self.table))
                    .filter(|k| !k.keys().is_empty())
                    .cloned();
            }
            if pending.is_some() {
                return Err(Error::Transient {
                    context: "reading cascades: keys left unprocessed".into(),
                    source: None,
                });
            }
        }
        Ok(out)
    }

    /// Cascade states of every shard (`only`: of one shard), a page at a time.
    async fn list_shards(
        &self,
        incident: &IncidentId,
        cursor: Option<String>,
        limit: usize,
        only: Option<u8>,
    ) -> Result<Page<CascadeRecord>> {
        let (states, next) = self
            .page_shards(&self.table, Some("STK#"), incident, cursor, limit, only)
            .await?;
        // Without contacts: a listing decrypts nothing (`masked` is there).
        let items = states
            .iter()
            .map(|state| self.record_from(state))
            .collect::<Result<Vec<_>>>()?;
        Ok(Page { items, next })
    }

    /// Items of the incident's shard partitions of `table` (every shard, or
    /// `only` one), whose sort key begins with `prefix`, a page of at most
    /// `limit` (1 to 1,000) at a time, in shard then key order; and the
    /// cursor of the next page.
    async fn page_shards(
        &self,
        table: &str,
        prefix: Option<&str>,
        incident: &IncidentId,
        cursor: Option<String>,
        limit: usize,
        only: Option<u8>,
    ) -> Result<(Vec<Item>, Option<String>)> {
        let limit = limit.clamp(1, 1_000);
        let mut at: ListCursor = match cursor {
            Some(c) => parse_cursor(&c)?,
            None => ListCursor {
                shard: only.unwrap_or(0),
                last: None,
            },
        };
        let end = only.map_or(SHARDS, |s| s + 1);
        // A cursor names a key this listing gave: of its shard range, under
        // its prefix (DynamoDB would refuse any other start key as a 500).
        let foreign = only.is_some_and(|s| at.shard != s)
            || at.shard >= SHARDS
            || at
                .last
                .as_deref()
                .is_some_and(|sk| sk.is_empty() || prefix.is_some_and(|p| !sk.starts_with(p)));
        if foreign {
            return Err(Error::invalid("cursor", "not a cursor this store issued"));
        }
        let mut states: Vec<Item> = Vec::new();
        let mut next = None;
        while at.shard < end {
            let pk = cascade_pk(incident, at.shard);
            let start = at.last.take().map(|sk| {
                HashMap::from([("pk".to_string(), s(pk.clone())), ("sk".to_string(), s(sk))])
            });
            self.meter.request(0);
            let resp = self
                .client
                .query()
                .table_name(table)
                .key_condition_expression(match prefix {
                    Some(_) => "pk = :pk AND begins_with(sk, :p)",
                    None => "pk = :pk",
                })
                .set_expression_attribute_values(Some(
                    std::iter::once((":pk".to_string(), s(pk.clone())))
                        .chain(prefix.map(|p| (":p".to_string(), s(p))))
                        .collect(),
                ))
                .consistent_read(true)
                .limit((limit - states.len()) as i32)
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(|e| map_sdk(format!("listing {table} items of {incident}"), e))?;
            states.extend(resp.items().iter().cloned());
            let lek = resp
                .last_evaluated_key()
                .filter(|k| !k.is_empty())
                .map(|k| get_s(k, "sk").map(str::to_string))
                .transpose()?;
            match lek {
                Some(sk) => at.last = Some(sk),
                None => at.shard += 1,
            }
            if states.len() >= limit {
                if at.shard < end {
                    next = Some(serde_json::to_string(&at).map_err(|e| json_err("cursor", e))?);
                }
                break;
            }
        }
        Ok((states, next))
    }

    /// Every item of partition `pk` (consistent reads, the SDK's paginator;
    /// each page counted).
    async fn query_all(&self, table: &str, pk: String) -> Result<Vec<Item>> {
        let mut pages = self
            .client
            .query()
            .table_name(table)
            .key_condition_expression("pk = :pk")
            .expression_attribute_values(":pk", s(pk.clone()))
            .consistent_read(true)
            .into_paginator()
            .send();
        let mut out = Vec::new();
        while let Some(page) = pages.next().await {
            self.meter.request(0);
            let page = page.map_err(|e| map_sdk(format!("querying {pk}"), e))?;
            out.extend(page.items().iter().cloned());
        }
        Ok(out)
    }
}

impl DynamoStore {
    /// Every item of partition `pk` whose sort key begins with `prefix`,
    /// with the attributes of `projection` (consistent reads, the SDK's
    /// paginator; each page counted).
    async fn query_prefix(
        &self,
        pk: String,
        prefix: String,
        projection: &str,
        what: String,
    ) -> Result<Vec<Item>> {
        let mut pages = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("pk = :pk AND begins_with(sk, :p)")
            .expression_attribute_values(":pk", s(pk))
            .expression_attribute_values(":p", s(prefix))
            .projection_expression(projection)
            .consistent_read(true)
            .into_paginator()
            .send();
        let mut out = Vec::new();
        while let Some(page) = pages.next().await {
            self.meter.request(0);
            let page = page.map_err(|e| map_sdk(what.clone(), e))?;
            out.extend(page.items().iter().cloned());
        }
        Ok(out)
    }

    /// The incidents of `ids` that exist, read by key (in no order).
    async fn incidents_by_id(&self, ids: &[IncidentId]) -> Result<Vec<Incident>> {
        let got = self
            .batch_get(
                ids.iter()
                    .map(|id| (incident_pk(id), "META".to_string()))
                    .collect(),
            )
            .await?;
        got.values()
            .map(|it| serde_json::from_str(get_s(it, "doc")?).map_err(|e| json_err("incident", e)))
            .collect()
    }
}

/// The incident's item: key, version (the condition of every update) and the
/// incident as a JSON document.
fn incident_item(incident: &Incident) -> Result<Item> {
    let doc = serde_json::to_string(incident).map_err(|e| json_err("incident", e))?;
    Ok(HashMap::from([
        ("pk".to_string(), s(incident_pk(incident.id()))),
        ("sk".to_string(), s("META")),
        ("version".to_string(), n(incident.version)),
        ("doc".to_string(), s(doc)),
    ]))
}

#[async_trait]
impl IncidentStore for DynamoStore {
    async fn open_incidents(&self) -> Result<Vec<IncidentId>> {
        let mut out = Vec::new();
        for it in self.query_all(&self.table, OPEN_PK.to_string()).await? {
            let id = get_s(&it, "sk")?;
            out.push(
                IncidentId::parse(id).map_err(|_| {
                    Error::permanent(format!("malformed open incident marker {id:?}"))
                })?,
            );
        }
        out.sort();
        Ok(out)
    }

    async fn create_incident(&self, incident: &Incident) -> Result<()> {
        let item = incident_item(incident)?;
        let u = write_units(&item);
        let mut items = vec![(
            self.put(&self.table, item, "attribute_not_exists(pk)", None)?,
            u,
        )];
        items.extend(self.open_marker(incident)?);
        let listed: Item = HashMap::from([
            ("pk".to_string(), s(RECENT_PK)),
            ("sk".to_string(), s(recent_sk(incident))),
            ("id".to_string(), s(incident.id().as_str())),
        ]);
        items.push((self.put(&self.table, listed, "", None)?, 1));
        self.transact(format!("incident {} exists", incident.id()), items)
            .await
    }

    /// Open incidents from the open markers (few), then the ended ones from
    /// the listing partition, newest first, a query page at a time; each
    /// incident read by key. (Incidents created before the listing item
    /// existed are listed while open only.)
    async fn recent_incidents(
        &self,
        cursor: Option<String>,
        limit: usize,
    ) -> Result<muster::ports::Page<Incident>> {
        use muster::ports::{IncidentCursor, Page};
        let after = cursor.as_deref().map(IncidentCursor::decode).transpose()?;
        let limit = limit.max(1);
        let mut items = Vec::new();
        if after.as_ref().is_none_or(|a| !a.ended) {
            let ids = self.open_incidents().await?;
            let mut open = self.incidents_by_id(&ids).await?;
            open.retain(|i| i.status == IncidentStatus::Open);
            let page = IncidentCursor::page(open, after.as_ref(), limit);
            if page.next.is_some() {
                return Ok(page);
            }
            if let Some(last) = page.items.get(limit - 1) {
                // The open part filled the page: the ended part follows,
                // from its start (that page may be empty).
                let next = IncidentCursor {
                    ended: true,
                    // Later than any trigger, and 19 digits like every cursor.
                    triggered_at: std::cmp::Reverse(muster::domain::Ts(9_999_999_999_999_999_999)),
                    id: last.id().clone(),
                };
                return Ok(Page {
                    next: Some(next.encode()),
                    ..page
                });
            }
            items = page.items;
        }
        // The ended part: from the start, or after the cursor's place.
        let mut start = after.as_ref().filter(|a| a.ended).map(|a| {
            HashMap::from([
                ("pk".to_string(), s(RECENT_PK)),
                (
                    "sk".to_string(),
                    s(format!("{:020}#{}", a.triggered_at.0.0, a.id)),
                ),
            ])
        });
        // Each turn reads one query page; bounded by the partition's size.
        loop {
            let want = limit - items.len();
            self.meter.request(0);
            let resp = self
                .client
                .query()
                .table_name(&self.table)
                .key_condition_expression("pk = :pk")
                .expression_attribute_values(":pk", s(RECENT_PK))
                .scan_index_forward(false)
                .limit(i32::try_from(want).unwrap_or(i32::MAX))
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| map_sdk("reading the incident list", e))?;
            let mut ids = Vec::new();
            for it in resp.items() {
                let id = get_s(it, "id")?;
                ids.push(
                    IncidentId::parse(id).map_err(|_| {
                        Error::permanent(format!("malformed incident listing {id:?}"))
                    })?,
                );
            }
            let mut page = self.incidents_by_id(&ids).await?;
            page.retain(|i| i.status != IncidentStatus::Open);
            page.sort_by_key(IncidentCursor::of);
            items.extend(page);
            match resp.last_evaluated_key() {
                Some(k) if !k.is_empty() && items.len() < limit => start = Some(k.clone()),
                Some(k) if !k.is_empty() => {
                    let next = items.last().map(|i| IncidentCursor::of(i).encode());
                    return Ok(Page { items, next });
                }
                _ => return Ok(Page { items, next: None }),
            }
        }
    }

    async fn get_incident(&self, id: &IncidentId) -> Result<Option<Incident>> {
        self.meter.request(0);
        let resp = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("pk", s(incident_pk(id)))
            .key("sk", s("META"))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| map_sdk(format!("reading incident {id}"), e))?;
        match resp.item() {
            Some(it) => Ok(Some(
                serde_json::from_str(get_s(it, "doc")?).map_err(|e| json_err("incident", e))?,
            )),
            None => Ok(None),
        }
    }

    async fn update_incident(&self, incident: &Incident, expected_version: u64) -> Result<()> {
        let item = incident_item(incident)?;
        let u = write_units(&item);
        let mut items = vec![(
            self.put(
                &self.table,
                item,
                "version = :expected",
                Some(HashMap::from([(
                    ":expected".to_string(),
                    n(expected_version),
                )])),
            )?,
            u,
        )];
        items.extend(self.open_marker(incident)?);
        let id = incident.id();
        match self
            .transact(
                format!("incident {id} is not at version {expected_version}"),
                items,
            )
            .await
        {
            Err(Error::Conflict(why)) => match self.get_incident(id).await? {
                Some(_) => Err(Error::Conflict(why)),
                None => Err(Error::NotFound(format!("incident {id}"))),
            },
            other => other,
        }
    }
}

#[async_trait]
impl CascadeStore for DynamoStore {
    async fn create_cascade(&self, record: &CascadeRecord, audit: &AuditEntry) -> Result<()> {
        let key = &record.cascade.key;
        let state = self.state_item(record)?;
        let contacts = serde_json::to_vec(&record.contacts).map_err(|e| json_err("contacts", e))?;
        let sealed = self.cipher.encrypt(&cipher_context(key), &contacts).await?;
        let pii: Item = HashMap::from([
            ("pk".to_string(), s(key_pk(key))),
            ("sk".to_string(), s(pii_sk(key))),
            (
                "contacts".to_string(),
                AttributeValue::B(aws_sdk_dynamodb::primitives::Blob::new(sealed)),
            ),
        ]);
        let audit = self.audit_item(audit)?;
        let (u1, u2, u3) = (write_units(&state), write_units(&pii), write_units(&audit));
        let mut items = self.number_puts(record)?;
        items.extend(self.tally_update(key, &Tally::of(&record.cascade, record.needs_review))?);
        items.extend([
            (
                self.put(&self.table, state, "attribute_not_exists(pk)", None)?,
                u1,
            ),
            (
                self.put(&self.table, pii, "attribute_not_exists(pk)", None)?,
                u2,
            ),
            (
                self.put(&self.audit_table, audit, "attribute_not_exists(pk)", None)?,
                u3,
            ),
        ]);
        self.transact(format!("creating cascade {key}"), items)
            .await
    }

    async fn get_cascade(&self, key: &CascadeKey) -> Result<Option<CascadeRecord>> {
        let pk = key_pk(key);
        let (ssk, psk) = (state_sk(key), pii_sk(key));
        let mut got = self
            .batch_get(vec![(pk.clone(), ssk.clone()), (pk.clone(), psk.clone())])
            .await?;
        let Some(state) = got.remove(&(pk.clone(), ssk)) else {
            return Ok(None);
        };
        let mut rec = self.record_from(&state)?;
        if let Some(pii) = got.remove(&(pk, psk)) {
            rec.contacts = self.open_contacts(key, &pii).await?;
        }
        Ok(Some(rec))
    }

    async fn transition(
        &self,
        before: &CascadeRecord,
        record: &CascadeRecord,
        audit: &AuditEntry,
    ) -> Result<()> {
        let key = &record.cascade.key;
        let expected_version = before.cascade.version;
        let change = Tally::change(
            Some((&before.cascade, before.needs_review)),
            (&record.cascade, record.needs_review),
        );
        let state = self.state_item(record)?;
        let audit = self.audit_item(audit)?;
        let (u1, u2) = (write_units(&state), write_units(&audit));
        let mut items = vec![
            (
                self.put(
                    &self.table,
                    state,
                    "version = :expected",
                    Some(HashMap::from([(
                        ":expected".to_string(),
                        n(expected_version),
                    )])),
                )?,
                u1,
            ),
            (
                self.put(&self.audit_table, audit, "attribute_not_exists(pk)", None)?,
                u2,
            ),
        ];
        items.extend(self.number_deletes(record)?);
        items.extend(self.tally_update(key, &change)?);
        match self
            .transact(
                format!("cascade {key} is not at version {expected_version}"),
                items,
            )
            .await
        {
            // A failed condition on a cascade that was never created is
            // `NotFound`, as in the memory store (one read, on failure only).
            Err(Error::Conflict(why)) => {
                if self.state_exists(key).await? {
                    Err(Error::Conflict(why))
                } else {
                    Err(Error::NotFound(format!("cascade {key}")))
                }
            }
            other => other,
        }
    }

    async fn tally(&self, incident: &IncidentId) -> Result<Tally> {
        let keys = (0..SHARDS)
            .flat_map(|sh| (0..TALLY_BUCKETS).map(move |b| (cascade_pk(incident, sh), tally_sk(b))))
            .collect();
        let mut tally = Tally::default();
        for item in self.batch_get(keys).await?.values() {
            for (name, v) in item {
                if let AttributeValue::N(v) = v
                    && let Ok(v) = v.parse::<i64>()
                {
                    // `expires_at` is no counter, and is skipped.
                    tally.add_named(name, v);
                }
            }
        }
        Ok(tally)
    }

    async fn list_cascades(
        &self,
        incident: &IncidentId,
        cursor: Option<String>,
        limit: usize,
    ) -> Result<Page<CascadeRecord>> {
        self.list_shards(incident, cursor, limit, None).await
    }

    fn parts(&self) -> u16 {
        u16::from(SHARDS)
    }

    async fn list_part(
        &self,
        incident: &IncidentId,
        part: u16,
        cursor: Option<String>,
        limit: usize,
    ) -> Result<Page<CascadeRecord>> {
        match u8::try_from(part) {
            Ok(shard) if shard < SHARDS => {
                self.list_shards(incident, cursor, limit, Some(shard)).await
            }
            _ => Ok(Page {
                items: Vec::new(),
                next: None,
            }),
        }
    }

    async fn overdue(
        &self,
        due_before: Ts,
        cursor: Option<String>,
        limit: usize,
    ) -> Result<Page<CascadeKey>> {
        let limit = limit.max(1);
        let mut at: DueCursor = match cursor {
            Some(c) => parse_cursor(&c)?,
            None => DueCursor {
                shard: 0,
                last: None,
            },
        };
        let mut items = Vec::new();
        let mut next = None;
        while at.shard < SHARDS {
            let due_shard = format!("DUE#{:02}", at.shard);
            let start = at.last.take().map(|(pk, sk, due)| {
                HashMap::from([
                    ("pk".to_string(), s(pk)),
                    ("sk".to_string(), s(sk)),
                    ("due_shard".to_string(), s(due_shard.clone())),
                    ("due_at".to_string(), n(due)),
                ])
            });
            self.meter.request(0);
            let resp = self
                .client
                .query()
                .table_name(&self.table)
                .index_name(DUE_INDEX)
                .key_condition_expression("due_shard = :s AND due_at <= :t")
                .expression_attribute_values(":s", s(due_shard.clone()))
                .expression_attribute_values(":t", n(due_before.0))
                .limit(i32::try_from(limit - items.len()).unwrap_or(i32::MAX))
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(|e| map_sdk("reading the due index", e))?;
            for it in resp.items() {
                items.push(key_of(get_s(it, "pk")?, get_s(it, "sk")?)?);
            }
            match resp.last_evaluated_key().filter(|k| !k.is_empty()) {
                Some(k) => {
                    at.last = Some((
                        get_s(k, "pk")?.to_string(),
                        get_s(k, "sk")?.to_string(),
                        get_n(k, "due_at")?,
                    ))
                }
                None => at.shard += 1,
            }
            if items.len() >= limit {
                if at.shard < SHARDS {
                    next = Some(serde_json::to_string(&at).map_err(|e| json_err("cursor", e))?);
                }
                break;
            }
        }
        Ok(Page { items, next })
    }

    async fn person_cascades(
        &self,
        incident: &IncidentId,
        stakeholder: &StakeholderId,
    ) -> Result<Vec<CascadeRecord>> {
        let items = self
            .query_prefix(
                cascade_pk(incident, shard(stakeholder.as_str())),
                person_sk_prefix(stakeholder),
                "pk, sk",
                format!("reading the cascades of one person in {incident}"),
            )
            .await?;
        let keys = items
            .iter()
            .map(|it| key_of(get_s(it, "pk")?, get_s(it, "sk")?))
            .collect::<Result<Vec<_>>>()?;
        self.load_records(&keys).await
    }

    /// Reads the state items of the person's escalation cascades only (one
    /// key prefix), without their contacts: no personal data is read and
    /// nothing is decrypted to name a failure in a bundle.
    async fn open_escalations(
        &self,
        incident: &IncidentId,
        stakeholder: &StakeholderId,
        limit: usize,
    ) -> Result<Vec<muster::ports::OpenEscalation>> {
        let items = self
            .query_prefix(
                cascade_pk(incident, shard(stakeholder.as_str())),
                format!("{}escalation:", person_sk_prefix(stakeholder)),
                "doc",
                format!("reading the open escalations of one person in {incident}"),
            )
            .await?;
        let mut open = Vec::new();
        for it in &items {
            let rec = self.record_from(it)?;
            if !rec.cascade.status.is_terminal() {
                open.push(rec);
            }
        }
        open.sort_by(|a, b| {
            (a.cascade.created_at, &a.cascade.key).cmp(&(b.cascade.created_at, &b.cascade.key))
        });
        Ok(open
            .iter()
            .take(limit)
            .map(muster::ports::OpenEscalation::of)
            .collect())
    }

    async fn audit_trail(&self, incident: &IncidentId) -> Result<Vec<AuditEntry>> {
        let mut out = Vec::new();
        for sh in 0..SHARDS {
            for it in self
                .query_all(&self.audit_table, cascade_pk(incident, sh))
                .await?
            {
                out.push(
                    serde_json::from_str(get_s(&it, "entry")?)
                        .map_err(|e| json_err("audit entry", e))?,
                );
            }
        }
        Ok(out)
    }

    async fn audit_page(
        &self,
        incident: &IncidentId,
        cursor: Option<String>,
        limit: usize,
    ) -> Result<Page<AuditEntry>> {
        let table = self.audit_table.clone();
        let (items, next) = self
            .page_shards(&table, None, incident, cursor, limit, None)
            .await?;
        let items = items
            .iter()
            .map(|it| {
                serde_json::from_str(get_s(it, "entry")?).map_err(|e| json_err("audit entry", e))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Page { items, next })
    }

    /// One update of the `MSG#<id>` / `REF` item: the reference set and the
    /// receipts held on it (`early`) taken, read back from its old image.
    async fn put_message_ref(
        &self,
        provider_message_id: &str,
        key: &CascadeKey,
        attempt: u32,
    ) -> Result<Vec<ReceiptStatus>> {
        let cascade = serde_json::to_string(key).map_err(|e| json_err("cascade key", e))?;
        let values = HashMap::from([
            (":c".to_string(), s(cascade)),
            (":a".to_string(), n(attempt)),
            (":e".to_string(), self.state_expiry()),
        ]);
        self.meter.request(write_units(&values));
        let resp = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", s(format!("MSG#{provider_message_id}")))
            .key("sk", s("REF"))
            .update_expression("SET #c = :c, #a = :a, expires_at = :e REMOVE #h")
            .expression_attribute_names("#h", "early")
            .expression_attribute_names("#c", "cascade")
            .expression_attribute_names("#a", "attempt")
            .set_expression_attribute_values(Some(values))
            .return_values(ReturnValue::AllOld)
            .send()
            .await
            .map_err(|e| map_sdk("writing a message reference", e))?;
        let Some(AttributeValue::L(early)) = resp.attributes().and_then(|a| a.get("early")) else {
            return Ok(Vec::new());
        };
        // The reference is written: an entry this version cannot read is
        // skipped (its attempt is left to the receipt timeout), not an error.
        Ok(early
            .iter()
            .filter_map(|v| {
                let parsed = match v {
                    AttributeValue::S(text) => serde_json::from_str(text).ok(),
                    _ => None,
                };
                if parsed.is_none() {
                    tracing::warn!("a held receipt could not be read: skipped");
                }
                parsed
            })
            .collect())
    }

    /// One conditional update of the same item: the receipt appended to
    /// `early` (at most `HELD_RECEIPTS`) unless the reference is there,
    /// which is then read and returned for the caller to apply the receipt
    /// to. The put and the hold are each one write of this item, so
    /// whichever comes second sees the other.
    async fn hold_receipt(
        &self,
        provider_message_id: &str,
        status: ReceiptStatus,
    ) -> Result<Option<(CascadeKey, u32)>> {
        let text = serde_json::to_string(&status).map_err(|e| json_err("receipt", e))?;
        let values = HashMap::from([
            (":r".to_string(), AttributeValue::L(vec![s(text)])),
            (":none".to_string(), AttributeValue::L(Vec::new())),
            (":max".to_string(), n(HELD_RECEIPTS)),
            (":e".to_string(), self.state_expiry()),
        ]);
        self.meter.request(1);
        let resp = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", s(format!("MSG#{provider_message_id}")))
            .key("sk", s("REF"))
            .update_expression(
                "SET #h = list_append(if_not_exists(#h, :none), :r), \
                 expires_at = if_not_exists(expires_at, :e)",
            )
            .condition_expression(
                "attribute_not_exists(#c) AND (attribute_not_exists(#h) OR size(#h) < :max)",
            )
            .expression_attribute_names("#h", "early")
            .expression_attribute_names("#c", "cascade")
            .set_expression_attribute_values(Some(values))
            .send()
            .await;
        match resp {
            Ok(_) => Ok(None),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|se| se.is_conditional_check_failed_exception()) =>
            {
                // The reference is there (the caller applies the receipt),
                // or as many are held as are kept (this one is dropped).
                self.get_message_ref(provider_message_id).await
            }
            Err(e) => Err(map_sdk("holding a receipt", e)),
        }
    }

    /// One transaction: a condition check that the cascade's state item is
    /// still at the version read, and a put of the claim item
    /// (`SEND#<cascade>#<attempt>#<phase start>` / `CLAIM`, no contact in
    /// it) unless one exists whose lease has not run out.
    async fn claim_send(
        &self,
        record: &CascadeRecord,
        attempt: u32,
        phase_since: Ts,
        now: Ts,
        lease: Millis,
    ) -> Result<SendClaim> {
        let key = &record.cascade.key;
        let check = ConditionCheck::builder()
            .table_name(&self.table)
            .key("pk", s(key_pk(key)))
            .key("sk", s(state_sk(key)))
            .condition_expression("version = :v")
            .expression_attribute_values(":v", n(record.cascade.version))
            .build()
            .map_err(|e| build_err("condition check", e))?;
        let claim: Item = HashMap::from([
            (
                "pk".to_string(),
                s(format!(
                    "SEND#{}#{}#{attempt}#{}",
                    key_pk(key),
                    state_sk(key),
                    phase_since.0
                )),
            ),
            ("sk".to_string(), s("CLAIM")),
            ("lease_until".to_string(), n(now.plus(lease).0)),
        ]);
        let units = write_units(&claim);
        let put = self.put(
            &self.table,
            claim,
            "attribute_not_exists(pk) OR lease_until <= :now",
            Some(HashMap::from([(":now".to_string(), n(now.0))])),
        )?;
        self.meter.request(2 * (1 + units));
        let sent = self
            .client
            .transact_write_items()
            .transact_items(TransactWriteItem::builder().condition_check(check).build())
            .transact_items(put)
            .send()
            .await;
        match sent {
            Ok(_) => Ok(SendClaim::Claimed),
            Err(e) => match cancel_reasons(&e).as_deref() {
                // The claim's own guard failed: another worker holds it.
                Some([first, "ConditionalCheckFailed"]) if *first != "ConditionalCheckFailed" => {
                    Ok(SendClaim::Held)
                }
                // The version moved, or another transaction met this one:
                // read again.
                Some(_) => Ok(SendClaim::Changed),
                None => Err(map_sdk("claiming a send", e)),
            },
        }
    }

    async fn get_message_ref(
        &self,
        provider_message_id: &str,
    ) -> Result<Option<(CascadeKey, u32)>> {
        self.meter.request(0);
        let resp = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("pk", s(format!("MSG#{provider_message_id}")))
            .key("sk", s("REF"))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| map_sdk("reading a message reference", e))?;
        resp.item()
            .map(message_ref)
            .transpose()
            .map(Option::flatten)
    }
}

/// The reference a `MSG#` item holds, if it has one yet (an item with only
/// held receipts has none).
fn message_ref(it: &Item) -> Result<Option<(CascadeKey, u32)>> {
    if !it.contains_key("cascade") {
        return Ok(None);
    }
    let key =
        serde_json::from_str(get_s(it, "cascade")?).map_err(|e| json_err("cascade key", e))?;
    let attempt = u32::try_from(get_n(it, "attempt")?)
        .map_err(|_| Error::permanent("attempt out of range"))?;
    Ok(Some((key, attempt)))
}

#[async_trait]
impl NumberIndex for DynamoStore {
    async fn open_cascades_for_number(&self, number: &PhoneNumber) -> Result<Vec<CascadeRecord>> {
        let nk = self.index_key.as_ref().ok_or_else(|| {
            Error::permanent("the number index needs a number key (DynamoStore::with_index_key)")
        })?;
        let mut keys: Vec<CascadeKey> = Vec::new();
        for it in self
            .query_all(&self.table, number_pk(&nk.tag(number)))
            .await?
        {
            keys.push(
                serde_json::from_str(get_s(&it, "cascade")?)
                    .map_err(|e| json_err("cascade key", e))?,
            );
        }
        keys.dedup();
        let mut out: Vec<CascadeRecord> = self
            .load_records(&keys)
            .await?
            .into_iter()
            .filter(|r| !r.cascade.status.is_terminal())
            .collect();
        out.sort_by(|a, b| {
            (a.cascade.created_at, &a.cascade.key).cmp(&(b.cascade.created_at, &b.cascade.key))
        });
        Ok(out)
    }
}

#[async_trait]
impl SealStore for DynamoStore {
    async fn chain_heads(&self, incident: &IncidentId) -> Result<Vec<ChainHead>> {
        let mut out = Vec::new();
        for sh in 0..SHARDS {
            let mut pages = self
                .client
                .query()
                .table_name(&self.table)
                .key_condition_expression("pk = :pk AND begins_with(sk, :p)")
                .expression_attribute_values(":pk", s(cascade_pk(incident, sh)))
                .expression_attribute_values(":p", s("STK#"))
                .consistent_read(true)
                .into_paginator()
                .send();
            while let Some(page) = pages.next().await {
                self.meter.request(0);
                let page =
                    page.map_err(|e| map_sdk(format!("reading chain heads of {incident}"), e))?;
                for it in page.items() {
                    let r = self.record_from(it)?;
                    if r.audit_seq > 0 {
                        out.push(ChainHead {
                            route: r.cascade.key.route.clone(),
                            stakeholder: r.cascade.key.stakeholder.clone(),
                            seq: r.audit_seq - 1,
                            hash: r.audit_head.clone(),
                        });
                    }
                }
            }
        }
        Ok(out)
    }

    async fn put_seal(&self, seal: &Seal) -> Result<()> {
        let doc = serde_json::to_string(seal).map_err(|e| json_err("seal", e))?;
        // The same seal twice is one item; two different seals never share a key.
        let digest = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(doc.as_bytes()));
        let mut item: Item = HashMap::from([
            ("pk".to_string(), s(seal_pk(&seal.incident))),
            (
                "sk".to_string(),
                s(format!("{:013}#{}", seal.at.0, &digest[..32])),
            ),
            ("seal".to_string(), s(doc)),
        ]);
        self.audit_extras(&mut item, seal.at);
        self.meter.request(write_units(&item));
        self.client
            .put_item()
            .table_name(&self.audit_table)
            .set_item(Some(item))
            .send()
            .await
            .map_err(|e| map_sdk(format!("storing a seal of {}", seal.incident), e))?;
        Ok(())
    }

    async fn seals(&self, incident: &IncidentId) -> Result<Vec<Seal>> {
        self.query_all(&self.audit_table, seal_pk(incident))
            .await?
            .iter()
            .map(|it| serde_json::from_str(get_s(it, "seal")?).map_err(|e| json_err("seal", e)))
            .collect()
    }
}

/// The contact ledger: one item per (incident, person, channel) beside the
/// person's cascades (`INC#<id>#<shard>` / `CONTACT#<person>#<channel>`),
/// with `holder` (cascade key JSON) and `until` (ms). A reservation is one
/// conditional put: `attribute_not_exists(pk) OR holder = :me OR until <=
/// :now`, so two dispatchers can never both hold one channel of one person.
#[async_trait]
impl ContactLedger for DynamoStore {
    async fn reserve(
        &self,
        incident: &IncidentId,
        person: &StakeholderId,
        channel: Channel,
        holder: &CascadeKey,
        now: Ts,
        hold: Millis,
    ) -> Result<Reservation> {
        let pk = cascade_pk(incident, shard(person.as_str()));
        let me = serde_json::to_string(holder).map_err(|e| json_err("cascade key", e))?;
        self.meter.request(1);
        let put = self
            .client
            .put_item()
            .table_name(&self.table)
            .item("pk", s(pk.clone()))
            .item("sk", s(contact_sk(person, channel)))
            .item("holder", s(me.clone()))
            .item("until", n(now.plus(hold).0))
            .item(
                "expires_at",
                n(now.plus(hold).0 / 1000 + super::TTL_SLACK_SECS),
            )
            .condition_expression("attribute_not_exists(pk) OR holder = :me OR #until <= :now")
            .expression_attribute_names("#until", "until")
            .expression_attribute_values(":me", s(me))
            .expression_attribute_values(":now", n(now.0))
            .send()
            .await;
        match put {
            Ok(_) => return Ok(Reservation::Granted),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|se| se.is_conditional_check_failed_exception()) => {}
            Err(e) => return Err(map_sdk("reserving a contact", e)),
        }
        let keys = Channel::ALL
            .into_iter()
            .filter(|c| guarded(*c))
            .map(|c| (pk.clone(), contact_sk(person, c)))
            .collect();
        let got = self.batch_get(keys).await?;
        let mut waits = ChannelWaits {
            cause: WaitCause::Contact,
            ..Default::default()
        };
        for c in Channel::ALL.into_iter().filter(|c| guarded(*c)) {
            let Some(item) = got.get(&(pk.clone(), contact_sk(person, c))) else {
                continue;
            };
            let entry = ContactEntry {
                holder: serde_json::from_str(get_s(item, "holder")?)
                    .map_err(|e| json_err("contact holder", e))?,
                until: Ts(get_n(item, "until")?),
            };
            if !entry.admits(holder, now) {
                waits.free_at[c.index()] = Some(entry.until);
            }
        }
        Ok(Reservation::Busy(waits))
    }
}
