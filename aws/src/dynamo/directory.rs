//! The directory on DynamoDB (`pk`, `sk`):
//! - stakeholder: `STK#<id>` / `META`, `doc` (the stakeholder JSON without
//!   contacts) and `contacts` sealed with a KMS data key under the context
//!   (`directory`, id);
//! - group: `GRP#<id>` / `META`, `name`, `size`, optional `manager` (the
//!   on-call manager);
//! - member `i` of a group: `GRP#<id>` / `MEM#<i, 8 digits>`, `sid`.
//!
//! A group is read as its `META` and the members `0..size` (a range query),
//! so shrinking a group needs no deletes: entries past `size` are never read.

use super::{Item, build_err, get_b, get_n, get_s, json_err, n, s};
use crate::crypto::{SealContext, Sealer};
use crate::error::map_sdk;
use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, KeySchemaElement, KeyType, PutRequest,
    ScalarAttributeType, WriteRequest,
};
use muster::domain::{ContactMethods, Group, GroupId, Stakeholder, StakeholderId};
use muster::ports::{Directory, GroupSummary};
use muster::{Error, Result};
use std::collections::HashMap;
use std::sync::Arc;

/// The encryption context "incident" of directory entries.
pub const DIRECTORY_CONTEXT: &str = "directory";
const WRITE_RETRIES: usize = 5;

pub struct DynamoDirectory {
    client: Client,
    table: String,
    sealer: Arc<dyn Sealer>,
}

fn member_sk(i: usize) -> String {
    format!("MEM#{i:08}")
}

impl DynamoDirectory {
    pub fn new(client: Client, table: impl Into<String>, sealer: Arc<dyn Sealer>) -> Self {
        DynamoDirectory {
            client,
            table: table.into(),
            sealer,
        }
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
        let bare = Stakeholder {
            contacts: ContactMethods::default(),
            ..p.clone()
        };
        let doc = serde_json::to_string(&bare).map_err(|e| json_err("stakeholder", e))?;
        let contacts = serde_json::to_vec(&p.contacts).map_err(|e| json_err("contacts", e))?;
        let sealed = self
            .sealer
            .seal(
                &SealContext::new(DIRECTORY_CONTEXT, p.id.as_str()),
                &contacts,
            )
            .await?;
        self.client
            .put_item()
            .table_name(&self.table)
            .item("pk", s(format!("STK#{}", p.id)))
            .item("sk", s("META"))
            .item("doc", s(doc))
            .item(
                "contacts",
                AttributeValue::B(aws_sdk_dynamodb::primitives::Blob::new(sealed)),
            )
            .send()
            .await
            .map_err(|e| map_sdk("writing a stakeholder", e))?;
        Ok(())
    }

    /// Writes a group: its members first (25 to a batch), then its `META`, so
    /// a reader never sees a size larger than the members written.
    pub async fn put_group(&self, g: &Group) -> Result<()> {
        let pk = format!("GRP#{}", g.id);
        let requests = g
            .members
            .iter()
            .enumerate()
            .map(|(i, m)| {
                let item: Item = HashMap::from([
                    ("pk".to_string(), s(pk.clone())),
                    ("sk".to_string(), s(member_sk(i))),
                    ("sid".to_string(), s(m.as_str())),
                ]);
                PutRequest::builder()
                    .set_item(Some(item))
                    .build()
                    .map(|p| WriteRequest::builder().put_request(p).build())
                    .map_err(|e| build_err("member write", e))
            })
            .collect::<Result<Vec<_>>>()?;
        for chunk in requests.chunks(25) {
            let mut pending = chunk.to_vec();
            for _ in 0..WRITE_RETRIES {
                if pending.is_empty() {
                    break;
                }
                let resp = self
                    .client
                    .batch_write_item()
                    .request_items(&self.table, pending.clone())
                    .send()
                    .await
                    .map_err(|e| map_sdk("writing group members", e))?;
                pending = resp
                    .unprocessed_items()
                    .and_then(|u| u.get(&self.table))
                    .cloned()
                    .unwrap_or_default();
            }
            if !pending.is_empty() {
                return Err(Error::Transient {
                    context: "writing group members: items left unprocessed".into(),
                    source: None,
                });
            }
        }
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
        req.send()
            .await
            .map_err(|e| map_sdk("writing a group", e))?;
        Ok(())
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
        let mut start = None;
        loop {
            let resp = self
                .client
                .query()
                .table_name(&self.table)
                .key_condition_expression("pk = :pk AND sk BETWEEN :a AND :b")
                .expression_attribute_values(":pk", s(format!("GRP#{id}")))
                .expression_attribute_values(":a", s(member_sk(0)))
                .expression_attribute_values(":b", s(member_sk(g.size as usize - 1)))
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(|e| map_sdk("reading group members", e))?;
            for it in resp.items() {
                out.push(parse_id(StakeholderId::parse(get_s(it, "sid")?))?);
            }
            match resp.last_evaluated_key() {
                Some(k) if !k.is_empty() => start = Some(k.clone()),
                _ => return Ok(out),
            }
        }
    }

    async fn stakeholder(&self, id: &StakeholderId) -> Result<Option<Stakeholder>> {
        let Some(it) = self.meta(format!("STK#{id}")).await? else {
            return Ok(None);
        };
        let mut p: Stakeholder =
            serde_json::from_str(get_s(&it, "doc")?).map_err(|e| json_err("stakeholder", e))?;
        let plain = self
            .sealer
            .open(
                &SealContext::new(DIRECTORY_CONTEXT, id.as_str()),
                get_b(&it, "contacts")?,
            )
            .await?;
        p.contacts = serde_json::from_slice(&plain).map_err(|e| json_err("contacts", e))?;
        Ok(Some(p))
    }
}
