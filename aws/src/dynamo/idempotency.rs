//! The trigger idempotency record, by Lambda Powertools' idempotency
//! algorithm. One item per key (`id`): `status` (`INPROGRESS` or
//! `COMPLETED`), `expiration` (epoch seconds, the table's TTL attribute),
//! `in_progress_expiration` (epoch ms: when a crashed invocation's claim
//! lapses), `validation` (SHA-256 of the payload) and, once completed,
//! `data` (the response JSON).
//!
//! A call claims the key with a put conditional on
//! `attribute_not_exists(id) OR expiration < :now OR (status = INPROGRESS
//! AND in_progress_expiration < :now_ms)`; only the claimant runs the
//! handler, then stores its response as `COMPLETED` (or deletes the claim if
//! the handler failed, so a retry runs it again). A call that loses the
//! claim replays the stored response when completed, and gets `Conflict`
//! while another call is in progress or when the payload differs.

use super::{get_n, get_s, json_err, n, s};
use crate::error::map_sdk;
use aws_sdk_dynamodb::Client;
use muster::domain::Ts;
use muster::{Error, Result};
use serde::Serialize;
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};
use std::future::Future;

const IN_PROGRESS: &str = "INPROGRESS";
const COMPLETED: &str = "COMPLETED";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Idempotent<T> {
    /// The handler ran in this call.
    Fresh(T),
    /// An earlier call's stored response.
    Replay(T),
}

impl<T> Idempotent<T> {
    pub fn into_inner(self) -> T {
        match self {
            Idempotent::Fresh(v) | Idempotent::Replay(v) => v,
        }
    }
}

pub struct IdempotencyStore {
    client: Client,
    table: String,
    /// How long a completed response is replayed.
    ttl_secs: u64,
    /// How long a claim holds without completing (the function's timeout).
    in_progress_ms: u64,
}

impl IdempotencyStore {
    pub fn new(
        client: Client,
        table: impl Into<String>,
        ttl_secs: u64,
        in_progress_ms: u64,
    ) -> Self {
        IdempotencyStore {
            client,
            table: table.into(),
            ttl_secs,
            in_progress_ms,
        }
    }

    pub async fn create_table(client: &Client, table: &str) -> Result<()> {
        use aws_sdk_dynamodb::types::{
            AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType,
        };
        let build = |e| super::build_err("idempotency table", e);
        client
            .create_table()
            .table_name(table)
            .billing_mode(BillingMode::PayPerRequest)
            .attribute_definitions(
                AttributeDefinition::builder()
                    .attribute_name("id")
                    .attribute_type(ScalarAttributeType::S)
                    .build()
                    .map_err(build)?,
            )
            .key_schema(
                KeySchemaElement::builder()
                    .attribute_name("id")
                    .key_type(KeyType::Hash)
                    .build()
                    .map_err(build)?,
            )
            .send()
            .await
            .map_err(|e| map_sdk(format!("creating table {table}"), e))?;
        Ok(())
    }

    /// Runs `handler` once per `key` within the TTL; see the module doc.
    pub async fn run<T, F, Fut>(
        &self,
        key: &str,
        payload: &[u8],
        now: Ts,
        handler: F,
    ) -> Result<Idempotent<T>>
    where
        T: Serialize + DeserializeOwned,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let validation = hex::encode(Sha256::digest(payload));
        let now_s = now.0 / 1000;
        let claim = self
            .client
            .put_item()
            .table_name(&self.table)
            .item("id", s(key))
            .item("status", s(IN_PROGRESS))
            .item("expiration", n(now_s + self.ttl_secs))
            .item("in_progress_expiration", n(now.0 + self.in_progress_ms))
            .item("validation", s(validation.clone()))
            .condition_expression(
                "attribute_not_exists(id) OR expiration < :now OR \
                 (#status = :inprogress AND in_progress_expiration < :now_ms)",
            )
            .expression_attribute_names("#status", "status")
            .expression_attribute_values(":now", n(now_s))
            .expression_attribute_values(":now_ms", n(now.0))
            .expression_attribute_values(":inprogress", s(IN_PROGRESS))
            .send()
            .await;
        match claim {
            Ok(_) => {}
            Err(e)
                if e.as_service_error()
                    .is_some_and(|se| se.is_conditional_check_failed_exception()) =>
            {
                return self.existing(key, &validation).await;
            }
            Err(e) => return Err(map_sdk("claiming an idempotency key", e)),
        }
        match handler().await {
            Ok(v) => {
                let data = serde_json::to_string(&v).map_err(|e| json_err("response", e))?;
                self.client
                    .put_item()
                    .table_name(&self.table)
                    .item("id", s(key))
                    .item("status", s(COMPLETED))
                    .item("expiration", n(now_s + self.ttl_secs))
                    .item("validation", s(validation))
                    .item("data", s(data))
                    .send()
                    .await
                    .map_err(|e| map_sdk("completing an idempotency record", e))?;
                Ok(Idempotent::Fresh(v))
            }
            Err(err) => {
                // Release the claim so that a retry runs the handler; if the
                // delete fails, the claim lapses at in_progress_expiration.
                if let Err(e) = self
                    .client
                    .delete_item()
                    .table_name(&self.table)
                    .key("id", s(key))
                    .send()
                    .await
                {
                    tracing::warn!(error = %map_sdk("releasing an idempotency claim", e), "claim left to lapse");
                }
                Err(err)
            }
        }
    }

    async fn existing<T: DeserializeOwned>(
        &self,
        key: &str,
        validation: &str,
    ) -> Result<Idempotent<T>> {
        let resp = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("id", s(key))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| map_sdk("reading an idempotency record", e))?;
        let Some(it) = resp.item() else {
            return Err(Error::Conflict(format!(
                "idempotency record {key} changed while claiming it"
            )));
        };
        if get_s(it, "validation")? != validation {
            return Err(Error::Conflict(format!(
                "idempotency key {key} was used with a different payload"
            )));
        }
        match get_s(it, "status")? {
            COMPLETED => {
                let v = serde_json::from_str(get_s(it, "data")?)
                    .map_err(|e| json_err("response", e))?;
                Ok(Idempotent::Replay(v))
            }
            _ => Err(Error::Conflict(format!(
                "idempotency key {key} is in progress until {}",
                get_n(it, "in_progress_expiration").unwrap_or(0)
            ))),
        }
    }
}
