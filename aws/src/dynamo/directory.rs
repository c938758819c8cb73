//! The directory on DynamoDB (`pk`, `sk`):
//! - stakeholder: `STK#<id>` / `META`, `doc` (the stakeholder JSON without
//!   contacts) and `contacts` sealed with a KMS data key under the context
//!   (`directory`, id);
//! - group: `GRP#<id>` / `META`, `name`, `size`, optional `manager` (the
//!   on-call manager);
//! - member `i` of a group: `GRP#<id>` / `MEM#<i, 8 digits>`, `sid`.
//!
//! - reverse membership: `STK#<id>` / `IN#<group>` while the person is a
//!   member of the group, `STK#<id>` / `MGR#<group>` while they are its
//!   on-call manager, kept by `put_group` (which diffs against the stored
//!   group), so removing a person touches only their groups;
//! - SMS number index (with a [`IndexKey`]): `NUM#<tag>` / `STK#<id>` for
//!   the number a person is texted at (sms, else phone); `tag` is a keyed
//!   hash of the number, also kept on the person's `META` as `num` so a
//!   changed number's item is deleted. No number is stored in plaintext;
//! - userName index (with the same key): `USR#<tag>` / `STK#<id>`, `tag` the
//!   keyed hash of the lowercased SCIM `userName` (else the id), kept on the
//!   `META` as `usr`, so a SCIM create checks uniqueness with one query and
//!   no userName (often an email address) is ever part of a key. The first
//!   look-up indexes the people written before the index existed (a scan,
//!   then a marker `IDX#USR` / `META`); an entry is believed only when the
//!   person it names still has that userName (a stale one is deleted).
//!
//! A group is read as its `META` and the members `0..size` (a range query),
//! so shrinking a group needs no deletes: entries past `size` are never read.
//! Listing people or groups scans the table (administration only: SCIM and
//! imports), and opens every listed person's contacts (one KMS call each).

use super::index_key::IndexKey;
use super::{Item, build_err, get_b, get_n, get_s, json_err, n, s};
use crate::crypto::{CipherContext, ContactCipher};
use crate::error::map_sdk;
use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, DeleteRequest, KeySchemaElement, KeyType,
    PutRequest, ScalarAttributeType, WriteRequest,
};
use muster::domain::{
    ContactMethods, Group, GroupId, IdpRecord, PhoneNumber, Stakeholder, StakeholderId,
};
use muster::ports::{Directory, DirectoryAdmin, GroupSummary};
use muster::{Error, Result};
use std::collections::BTreeSet;
use std::collections::HashMap;
use std::sync::Arc;

/// The encryption context "incident" of directory entries.
pub const DIRECTORY_CONTEXT: &str = "directory";
const WRITE_RETRIES: usize = 5;

pub struct DynamoDirectory {
    client: Client,
    table: String,
    cipher: Arc<dyn ContactCipher>,
    index_key: Option<IndexKey>,
    /// Whether the userName index is known to hold everyone.
    user_names_indexed: std::sync::atomic::AtomicBool,
}

/// Marks the userName index as holding everyone written before it existed.
const USER_INDEX_MARKER: &str = "IDX#USR";

fn key_item(pk: String, sk: String) -> Item {
    HashMap::from([("pk".to_string(), s(pk)), ("sk".to_string(), s(sk))])
}

fn put_req(item: Item) -> Result<WriteRequest> {
    PutRequest::builder()
        .set_item(Some(item))
        .build()
        .map(|p| WriteRequest::builder().put_request(p).build())
        .map_err(|e| build_err("directory write", e))
}

fn delete_req(pk: String, sk: String) -> Result<WriteRequest> {
    DeleteRequest::builder()
        .set_key(Some(key_item(pk, sk)))
        .build()
        .map(|d| WriteRequest::builder().delete_request(d).build())
        .map_err(|e| build_err("directory delete", e))
}

/// What is sealed of a person: the contacts and what the identity provider
/// wrote (addresses, `userName`). Blobs written before the record existed
/// hold the contacts alone and read the same.
#[derive(serde::Serialize, serde::Deserialize)]
struct Private {
    #[serde(flatten)]
    contacts: ContactMethods,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    idp: Option<IdpRecord>,
}

/// The number a person is texted at, as the memory directory decides it.
fn texted_at(p: &Stakeholder) -> Option<&PhoneNumber> {
    p.contacts.sms.as_ref().or(p.contacts.phone.as_ref())
}

fn member_sk(i: usize) -> String {
    format!("MEM#{i:08}")
}

impl DynamoDirectory {
    pub fn new(client: Client, table: impl Into<String>, cipher: Arc<dyn ContactCipher>) -> Self {
        DynamoDirectory {
            client,
            table: table.into(),
            cipher,
            index_key: None,
            user_names_indexed: Default::default(),
        }
    }

    /// Indexes, once, the people written before the userName index existed
    /// (a scan; then a marker item `IDX#USR` / `META` says it is done).
    async fn index_user_names(&self) -> Result<()> {
        use std::sync::atomic::Ordering;
        if self.user_names_indexed.load(Ordering::Relaxed) {
            return Ok(());
        }
        if self.meta(USER_INDEX_MARKER.into()).await?.is_none() {
            let mut indexed = 0usize;
            for id in self.scan_ids("STK#").await? {
                let pk = format!("STK#{id}");
                let has = self
                    .meta(pk)
                    .await?
                    .is_some_and(|it| it.contains_key("usr"));
                if has {
                    continue;
                }
                if let Some(p) = self
                    .stakeholder(&parse_id(StakeholderId::parse(&id))?)
                    .await?
                {
                    self.write_person(&p, true).await?;
                    indexed += 1;
                }
            }
            self.client
                .put_item()
                .table_name(&self.table)
                .item("pk", s(USER_INDEX_MARKER))
                .item("sk", s("META"))
                .send()
                .await
                .map_err(|e| map_sdk("writing the directory", e))?;
            tracing::info!(indexed, "userName index built for people written before it");
        }
        self.user_names_indexed.store(true, Ordering::Relaxed);
        Ok(())
    }

    /// Keeps the SMS number index under `key` (needed by `set_sms_opt_out`).
    pub fn with_index_key(mut self, key: IndexKey) -> Self {
        self.index_key = Some(key);
        self
    }

    pub async fn create_table(client: &Client, table: &str) -> Result<()> {
        let attr = |name: &str| {
            AttributeDefinition::builder()
                .attribute_name(name)
                .attribute_type(ScalarAttributeType::S)
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
        client
            .create_table()
            .table_name(table)
            .billing_mode(BillingMode::PayPerRequest)
            .attribute_definitions(attr("pk")?)
            .attribute_definitions(attr("sk")?)
            .key_schema(key("pk", KeyType::Hash)?)
            .key_schema(key("sk", KeyType::Range)?)
            .send()
            .await
            .map_err(|e| map_sdk(format!("creating table {table}"), e))?;
        Ok(())
    }

    /// Writes a stakeholder, its contact details sealed.
    pub async fn put_stakeholder(&self, p: &Stakeholder) -> Result<()> {
        self.write_person(p, true).await
    }

    /// Writes a stakeholder; with `reindex` false the userName index is left
    /// as it is (an SMS opt-out changes neither the number nor the name, and
    /// the receipt function may not batch-write).
    async fn write_person(&self, p: &Stakeholder, reindex: bool) -> Result<()> {
        let bare = Stakeholder {
            contacts: ContactMethods::default(),
            idp: None,
            ..p.clone()
        };
        let doc = serde_json::to_string(&bare).map_err(|e| json_err("stakeholder", e))?;
        let private = Private {
            contacts: p.contacts.clone(),
            idp: p.idp.clone(),
        };
        let contacts = serde_json::to_vec(&private).map_err(|e| json_err("contacts", e))?;
        let sealed = self
            .cipher
            .encrypt(
                &CipherContext::new(DIRECTORY_CONTEXT, p.id.as_str()),
                &contacts,
            )
            .await?;
        let pk = format!("STK#{}", p.id);
        let tag = match (&self.index_key, texted_at(p)) {
            (Some(k), Some(num)) => Some(k.tag(num)),
            _ => None,
        };
        let old = self.meta(pk.clone()).await?;
        let stored = |attr: &str| match old.as_ref().and_then(|it| it.get(attr)) {
            Some(AttributeValue::S(t)) => Some(t.clone()),
            _ => None,
        };
        let (old_tag, old_user_tag) = (stored("num"), stored("usr"));
        let user_tag = match &self.index_key {
            Some(k) if reindex => Some(k.user_name_tag(p.scim_user_name())),
            _ => old_user_tag.clone(),
        };
        let mut req = self
            .client
            .put_item()
            .table_name(&self.table)
            .item("pk", s(pk.clone()))
            .item("sk", s("META"))
            .item("doc", s(doc))
            .item(
                "contacts",
                AttributeValue::B(aws_sdk_dynamodb::primitives::Blob::new(sealed)),
            );
        if let Some(tag) = &tag {
            req = req.item("num", s(tag.clone()));
        }
        if let Some(t) = &user_tag {
            req = req.item("usr", s(t.clone()));
        }
        req.send()
            .await
            .map_err(|e| map_sdk("writing a stakeholder", e))?;
        // The number index changes only when the number does (an opt-out
        // rewrites the person, not the index: receipt may not batch-write).
        let mut writes = Vec::new();
        if let Some(tag) = tag.as_ref().filter(|t| old_tag.as_ref() != Some(*t)) {
            writes.push(put_req(key_item(format!("NUM#{tag}"), pk.clone()))?);
        }
        if let Some(old) = old_tag.filter(|o| Some(o) != tag.as_ref()) {
            writes.push(delete_req(format!("NUM#{old}"), pk.clone())?);
        }
        if let Some(t) = user_tag
            .as_ref()
            .filter(|t| old_user_tag.as_ref() != Some(*t))
        {
            writes.push(put_req(key_item(format!("USR#{t}"), pk.clone()))?);
        }
        if let Some(old) = old_user_tag.filter(|o| Some(o) != user_tag.as_ref()) {
            writes.push(delete_req(format!("USR#{old}"), pk)?);
        }
        self.batch_write(writes).await
    }

    /// Writes and deletes, 25 to a batch, retrying unprocessed ones a bounded
    /// number of times with exponential backoff (50 ms doubling, as AWS
    /// advises for `UnprocessedItems`: they are left when the table or a
    /// partition is throttled, and retrying at once meets the same limit).
    async fn batch_write(&self, requests: Vec<WriteRequest>) -> Result<()> {
        for chunk in requests.chunks(25) {
            let mut pending = chunk.to_vec();
            for round in 0..WRITE_RETRIES {
                if pending.is_empty() {
                    break;
                }
                if round > 0 {
                    tokio::time::sleep(std::time::Duration::from_millis(50 << round)).await;
                }
                let resp = self
                    .client
                    .batch_write_item()
                    .request_items(&self.table, pending.clone())
                    .send()
                    .await
                    .map_err(|e| map_sdk("writing the directory", e))?;
                pending = resp
                    .unprocessed_items()
                    .and_then(|u| u.get(&self.table))
                    .cloned()
                    .unwrap_or_default();
            }
            if !pending.is_empty() {
                return Err(Error::Transient {
                    context: "writing the directory: items left unprocessed".into(),
                    source: None,
                });
            }
        }
        Ok(())
    }

    /// Every item of a partition whose `sk` begins with `prefix` (the SDK's
    /// paginator).
    async fn query_prefix(&self, pk: String, prefix: &str) -> Result<Vec<Item>> {
        let mut req = self
            .client
            .query()
            .table_name(&self.table)
            .expression_attribute_values(":pk", s(pk));
        req = if prefix.is_empty() {
            req.key_condition_expression("pk = :pk")
        } else {
            req.key_condition_expression("pk = :pk AND begins_with(sk, :p)")
                .expression_attribute_values(":p", s(prefix))
        };
        let mut pages = req.consistent_read(true).into_paginator().send();
        let mut out = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| map_sdk("reading the directory", e))?;
            out.extend(page.items().iter().cloned());
        }
        Ok(out)
    }

    /// Ids of the `META` items whose `pk` begins with `prefix` (a scan, the
    /// SDK's paginator).
    async fn scan_ids(&self, prefix: &str) -> Result<Vec<String>> {
        let mut pages = self
            .client
            .scan()
            .table_name(&self.table)
            .filter_expression("sk = :m AND begins_with(pk, :p)")
            .expression_attribute_values(":m", s("META"))
            .expression_attribute_values(":p", s(prefix))
            .consistent_read(true)
            .into_paginator()
            .send();
        let mut out = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| map_sdk("listing the directory", e))?;
            for it in page.items() {
                if let Some(id) = get_s(it, "pk")?.strip_prefix(prefix) {
                    out.push(id.to_string());
                }
            }
        }
        out.sort();
        Ok(out)
    }

    /// Reverse membership writes for a group going from `old` to `new`.
    fn reverse_writes(
        &self,
        id: &GroupId,
        old: Option<&Group>,
        new: Option<&Group>,
    ) -> Result<Vec<WriteRequest>> {
        let members = |g: Option<&Group>| -> BTreeSet<StakeholderId> {
            g.map(|g| g.members.iter().cloned().collect())
                .unwrap_or_default()
        };
        let manager = |g: Option<&Group>| -> BTreeSet<StakeholderId> {
            g.and_then(|g| g.on_call_manager.clone())
                .into_iter()
                .collect()
        };
        let mut out = Vec::new();
        for (prefix, was, now) in [
            ("IN#", members(old), members(new)),
            ("MGR#", manager(old), manager(new)),
        ] {
            for sid in now.difference(&was) {
                out.push(put_req(key_item(
                    format!("STK#{sid}"),
                    format!("{prefix}{id}"),
                ))?);
            }
            for sid in was.difference(&now) {
                out.push(delete_req(format!("STK#{sid}"), format!("{prefix}{id}"))?);
            }
        }
        Ok(out)
    }

    /// Writes a group: its members first (25 to a batch), then its `META`, so
    /// a reader never sees a size larger than the members written.
    pub async fn put_group(&self, g: &Group) -> Result<()> {
        let old = self.get_group_full(&g.id).await?;
        let pk = format!("GRP#{}", g.id);
        let requests = g
            .members
            .iter()
            .enumerate()
            .map(|(i, m)| {
                put_req(HashMap::from([
                    ("pk".to_string(), s(pk.clone())),
                    ("sk".to_string(), s(member_sk(i))),
                    ("sid".to_string(), s(m.as_str())),
                ]))
            })
            .collect::<Result<Vec<_>>>()?;
        self.batch_write(requests).await?;
        let mut req = self
            .client
            .put_item()
            .table_name(&self.table)
            .item("pk", s(pk))
            .item("sk", s("META"))
            .item("name", s(g.name.clone()))
            .item("size", n(g.members.len()));
        if let Some(m) = &g.on_call_manager {
            req = req.item("manager", s(m.as_str()));
        }
        if !g.escalation_channels.is_empty() {
            let route: Vec<&str> = g.escalation_channels.iter().map(|c| c.as_str()).collect();
            req = req.item("escalation", s(route.join(",")));
        }
        if let Some(r) = &g.idp {
            let text = serde_json::to_string(r).map_err(|e| json_err("group record", e))?;
            req = req.item("idp", s(text));
        }
        req.send()
            .await
            .map_err(|e| map_sdk("writing a group", e))?;
        self.batch_write(self.reverse_writes(&g.id, old.as_ref(), Some(g))?)
            .await
    }

    /// The whole group: summary and members.
    async fn get_group_full(&self, id: &GroupId) -> Result<Option<Group>> {
        let Some(g) = self.group(id).await? else {
            return Ok(None);
        };
        let idp = match self.meta(format!("GRP#{id}")).await? {
            Some(it) => match it.get("idp") {
                Some(AttributeValue::S(t)) => {
                    Some(serde_json::from_str(t).map_err(|e| json_err("group record", e))?)
                }
                _ => None,
            },
            None => None,
        };
        Ok(Some(Group {
            id: g.id,
            name: g.name,
            members: self.members(id).await?,
            on_call_manager: g.on_call_manager,
            escalation_channels: g.escalation_channels,
            idp,
        }))
    }

    async fn meta(&self, pk: String) -> Result<Option<Item>> {
        let resp = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("pk", s(pk))
            .key("sk", s("META"))
            .send()
            .await
            .map_err(|e| map_sdk("reading the directory", e))?;
        Ok(resp.item().cloned())
    }
}

fn parse_id<T>(r: std::result::Result<T, muster::domain::InvalidValue>) -> Result<T> {
    r.map_err(|e| Error::permanent(format!("stored directory id is invalid: {e}")))
}

#[async_trait]
impl Directory for DynamoDirectory {
    async fn group(&self, id: &GroupId) -> Result<Option<GroupSummary>> {
        let Some(it) = self.meta(format!("GRP#{id}")).await? else {
            return Ok(None);
        };
        let on_call_manager = match it.get("manager") {
            Some(AttributeValue::S(m)) => Some(parse_id(StakeholderId::parse(m))?),
            _ => None,
        };
        let escalation_channels = match it.get("escalation") {
            Some(AttributeValue::S(r)) => r
                .split(',')
                .map(|c| {
                    muster::domain::Channel::parse(c).map_err(|e| {
                        Error::permanent(format!("stored escalation route is invalid: {e}"))
                    })
                })
                .collect::<Result<Vec<_>>>()?,
            _ => Vec::new(),
        };
        Ok(Some(GroupSummary {
            id: id.clone(),
            name: get_s(&it, "name")?.to_string(),
            on_call_manager,
            escalation_channels,
            size: u32::try_from(get_n(&it, "size")?)
                .map_err(|_| Error::permanent("group size out of range"))?,
        }))
    }

    async fn members(&self, id: &GroupId) -> Result<Vec<StakeholderId>> {
        let Some(g) = self.group(id).await? else {
            return Ok(Vec::new());
        };
        if g.size == 0 {
            return Ok(Vec::new());
        }
        let mut out = Vec::with_capacity(g.size as usize);
        let mut pages = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("pk = :pk AND sk BETWEEN :a AND :b")
            .expression_attribute_values(":pk", s(format!("GRP#{id}")))
            .expression_attribute_values(":a", s(member_sk(0)))
            .expression_attribute_values(":b", s(member_sk(g.size as usize - 1)))
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| map_sdk("reading group members", e))?;
            for it in page.items() {
                out.push(parse_id(StakeholderId::parse(get_s(it, "sid")?))?);
            }
        }
        Ok(out)
    }

    async fn stakeholder(&self, id: &StakeholderId) -> Result<Option<Stakeholder>> {
        let Some(it) = self.meta(format!("STK#{id}")).await? else {
            return Ok(None);
        };
        let mut p: Stakeholder =
            serde_json::from_str(get_s(&it, "doc")?).map_err(|e| json_err("stakeholder", e))?;
        let plain = self
            .cipher
            .decrypt(
                &CipherContext::new(DIRECTORY_CONTEXT, id.as_str()),
                get_b(&it, "contacts")?,
            )
            .await?;
        let private: Private =
            serde_json::from_slice(&plain).map_err(|e| json_err("contacts", e))?;
        p.contacts = private.contacts;
        p.idp = private.idp;
        Ok(Some(p))
    }
}

#[async_trait]
impl DirectoryAdmin for DynamoDirectory {
    async fn put_stakeholder(&self, person: Stakeholder) -> Result<()> {
        DynamoDirectory::put_stakeholder(self, &person).await
    }

    async fn remove_stakeholder(&self, id: &StakeholderId) -> Result<bool> {
        let pk = format!("STK#{id}");
        // Out of every group first, as the memory directory does.
        for it in self.query_prefix(pk.clone(), "").await? {
            let sk = get_s(&it, "sk")?;
            let Some(gid) = sk.strip_prefix("IN#").or_else(|| sk.strip_prefix("MGR#")) else {
                continue;
            };
            let gid = parse_id(GroupId::parse(gid))?;
            if let Some(mut g) = self.get_group_full(&gid).await? {
                let before = (g.members.len(), g.on_call_manager.clone());
                g.members.retain(|m| m != id);
                if g.on_call_manager.as_ref() == Some(id) {
                    g.on_call_manager = None;
                }
                if (g.members.len(), g.on_call_manager.clone()) != before {
                    DynamoDirectory::put_group(self, &g).await?;
                }
            }
        }
        let meta = self.meta(pk.clone()).await?;
        let mut deletes = Vec::new();
        for it in self.query_prefix(pk.clone(), "").await? {
            deletes.push(delete_req(pk.clone(), get_s(&it, "sk")?.to_string())?);
        }
        if let Some(AttributeValue::S(tag)) = meta.as_ref().and_then(|m| m.get("num")) {
            deletes.push(delete_req(format!("NUM#{tag}"), pk.clone())?);
        }
        if let Some(AttributeValue::S(tag)) = meta.as_ref().and_then(|m| m.get("usr")) {
            deletes.push(delete_req(format!("USR#{tag}"), pk.clone())?);
        }
        self.batch_write(deletes).await?;
        Ok(meta.is_some())
    }

    /// One query of the userName index (with an index key; without one,
    /// the whole directory is read).
    async fn find_by_user_name(&self, user_name: &str) -> Result<Vec<StakeholderId>> {
        let Some(k) = &self.index_key else {
            let people = self.list_stakeholders().await?;
            return Ok(muster::ports::with_user_name(&people, user_name));
        };
        self.index_user_names().await?;
        let pk = format!("USR#{}", k.user_name_tag(user_name));
        let mut ids = Vec::new();
        for it in self.query_prefix(pk.clone(), "STK#").await? {
            let Some(id) = get_s(&it, "sk")?.strip_prefix("STK#") else {
                continue;
            };
            let id = parse_id(StakeholderId::parse(id))?;
            // The index is written beside the person, not with them: an
            // entry is believed only when the person still has that name.
            match self.stakeholder(&id).await? {
                Some(p) if p.scim_user_name().eq_ignore_ascii_case(user_name) => ids.push(id),
                _ => {
                    tracing::warn!(stakeholder = %id, "stale userName index entry removed");
                    self.batch_write(vec![delete_req(pk.clone(), format!("STK#{id}"))?])
                        .await?;
                }
            }
        }
        ids.sort();
        Ok(ids)
    }

    /// A `GetItem` of the person's `META` key alone: no contacts, no KMS.
    async fn contains(&self, id: &StakeholderId) -> Result<bool> {
        let resp = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("pk", s(format!("STK#{id}")))
            .key("sk", s("META"))
            .projection_expression("pk")
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| map_sdk("reading the directory", e))?;
        Ok(resp.item().is_some())
    }

    async fn list_stakeholders(&self) -> Result<Vec<Stakeholder>> {
        let mut out = Vec::new();
        for id in self.scan_ids("STK#").await? {
            let id = parse_id(StakeholderId::parse(&id))?;
            if let Some(p) = self.stakeholder(&id).await? {
                out.push(p);
            }
        }
        Ok(out)
    }

    async fn get_group(&self, id: &GroupId) -> Result<Option<Group>> {
        self.get_group_full(id).await
    }

    async fn put_group(&self, group: Group) -> Result<()> {
        DynamoDirectory::put_group(self, &group).await
    }

    async fn remove_group(&self, id: &GroupId) -> Result<bool> {
        let Some(old) = self.get_group_full(id).await? else {
            return Ok(false);
        };
        let pk = format!("GRP#{id}");
        let mut writes = vec![delete_req(pk.clone(), "META".to_string())?];
        for it in self.query_prefix(pk.clone(), "MEM#").await? {
            writes.push(delete_req(pk.clone(), get_s(&it, "sk")?.to_string())?);
        }
        writes.extend(self.reverse_writes(id, Some(&old), None)?);
        self.batch_write(writes).await?;
        Ok(true)
    }

    async fn list_groups(&self) -> Result<Vec<Group>> {
        let mut out = Vec::new();
        for id in self.scan_ids("GRP#").await? {
            if let Some(g) = self.get_group_full(&parse_id(GroupId::parse(&id))?).await? {
                out.push(g);
            }
        }
        Ok(out)
    }

    async fn set_sms_opt_out(
        &self,
        number: &PhoneNumber,
        opted_out: bool,
    ) -> Result<Vec<StakeholderId>> {
        let nk = self.index_key.as_ref().ok_or_else(|| {
            Error::permanent("SMS opt-outs need a number key (DynamoDirectory::with_index_key)")
        })?;
        let mut changed = Vec::new();
        for it in self
            .query_prefix(format!("NUM#{}", nk.tag(number)), "STK#")
            .await?
        {
            let sk = get_s(&it, "sk")?;
            let id = parse_id(StakeholderId::parse(sk.trim_start_matches("STK#")))?;
            let Some(mut p) = self.stakeholder(&id).await? else {
                continue;
            };
            if texted_at(&p) == Some(number) && p.contacts.sms_opted_out != opted_out {
                p.contacts.sms_opted_out = opted_out;
                self.write_person(&p, false).await?;
                changed.push(id);
            }
        }
        changed.sort();
        Ok(changed)
    }
}
