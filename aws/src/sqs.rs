//! Work queue on SQS, in two lanes: the priority lane (escalations,
//! `Job::is_priority`) is its own queue, which `dispatch` polls with its own
//! event source, so an escalation never waits behind a mass activation's
//! member sends. Jobs are sent ten to a `SendMessageBatch`; entries SQS
//! fails for its own reasons are sent again (bounded), and an entry refused
//! as the sender's fault fails the call. A delay longer than SQS's 15
//! minutes is capped: a job delivered early is re-admitted by the rate
//! limiter in `dispatch`, so early is safe and late is not.

use crate::dynamo::Meter;
use crate::error::map_sdk;
use async_trait::async_trait;
use aws_sdk_sqs::Client;
use aws_sdk_sqs::types::{QueueAttributeName, SendMessageBatchRequestEntry};
use muster::domain::Millis;
use muster::ports::{Job, WorkQueue};
use muster::{Error, Result};
use std::sync::Arc;

/// SQS's longest message delay.
pub const MAX_DELAY_SECS: u64 = 900;
/// Entries in one `SendMessageBatch`.
pub const BATCH: usize = 10;
/// Rounds of resending entries SQS failed on its side.
const RESEND_ROUNDS: usize = 4;

/// Whole seconds of SQS delay for `ms`, rounded up (never early), capped at 900.
pub fn delay_secs(ms: Millis) -> i32 {
    ms.div_ceil(1000).min(MAX_DELAY_SECS) as i32
}

/// The most body bytes in one `SendMessageBatch` (SQS takes 256 KiB for
/// the whole batch; a margin for the attributes).
pub const BATCH_BYTES: usize = 240 * 1024;

/// `messages` cut into batches of at most [`BATCH`] entries and
/// [`BATCH_BYTES`] of bodies (a larger message is a batch of its own), in
/// order.
pub fn batches(messages: &[(String, Millis)]) -> Vec<&[(String, Millis)]> {
    let mut out = Vec::new();
    let (mut start, mut bytes) = (0, 0);
    for (i, (body, _)) in messages.iter().enumerate() {
        if i > start && (i - start == BATCH || bytes + body.len() > BATCH_BYTES) {
            out.push(&messages[start..i]);
            start = i;
            bytes = 0;
        }
        bytes += body.len();
    }
    if start < messages.len() {
        out.push(&messages[start..]);
    }
    out
}

/// Sends `(body, delay ms)` messages in batches of ten (and at most
/// [`BATCH_BYTES`]), resending failed entries. Shared by the work queue
/// and the timers.
pub(crate) async fn send_batched(
    client: &Client,
    queue_url: &str,
    meter: &Meter,
    messages: Vec<(String, Millis)>,
) -> Result<()> {
    for chunk in batches(&messages) {
        let mut pending: Vec<SendMessageBatchRequestEntry> = chunk
            .iter()
            .enumerate()
            .map(|(i, (body, delay))| {
                SendMessageBatchRequestEntry::builder()
                    .id(i.to_string())
                    .message_body(body)
                    .delay_seconds(delay_secs(*delay))
                    .build()
                    .map_err(|e| crate::dynamo::build_err("batch entry", e))
            })
            .collect::<Result<_>>()?;
        for _ in 0..RESEND_ROUNDS {
            if pending.is_empty() {
                break;
            }
            meter.request(0);
            let resp = client
                .send_message_batch()
                .queue_url(queue_url)
                .set_entries(Some(pending.clone()))
                .send()
                .await
                .map_err(|e| map_sdk("sending jobs", e))?;
            if let Some(f) = resp.failed().iter().find(|f| f.sender_fault()) {
                return Err(Error::permanent(format!(
                    "SQS refused a message: {}",
                    f.code()
                )));
            }
            let failed: Vec<&str> = resp.failed().iter().map(|f| f.id()).collect();
            pending.retain(|e| failed.contains(&e.id()));
        }
        if !pending.is_empty() {
            return Err(Error::Transient {
                context: format!("SQS kept failing {} messages", pending.len()),
                source: None,
            });
        }
    }
    Ok(())
}

pub struct SqsQueue {
    client: Client,
    queue_url: String,
    /// The priority lane's queue (`None`: one queue for both lanes).
    priority_url: Option<String>,
    meter: Arc<Meter>,
}

impl SqsQueue {
    pub fn new(client: Client, queue_url: impl Into<String>) -> Self {
        SqsQueue {
            client,
            queue_url: queue_url.into(),
            priority_url: None,
            meter: Arc::new(Meter::default()),
        }
    }
    /// Priority jobs go to `url`.
    pub fn with_priority_lane(mut self, url: impl Into<String>) -> Self {
        self.priority_url = Some(url.into());
        self
    }
    /// SQS requests this queue has made.
    pub fn meter(&self) -> Arc<Meter> {
        self.meter.clone()
    }
}

#[async_trait]
impl WorkQueue for SqsQueue {
    async fn enqueue(&self, jobs: Vec<(Job, Millis)>) -> Result<()> {
        let (mut member, mut priority) = (Vec::new(), Vec::new());
        for (job, delay) in jobs {
            let body =
                serde_json::to_string(&job).map_err(|e| crate::dynamo::json_err("job", e))?;
            match (&self.priority_url, job.is_priority()) {
                (Some(_), true) => priority.push((body, delay)),
                _ => member.push((body, delay)),
            }
        }
        if let Some(url) = &self.priority_url
            && !priority.is_empty()
        {
            send_batched(&self.client, url, &self.meter, priority).await?;
        }
        if member.is_empty() {
            return Ok(());
        }
        send_batched(&self.client, &self.queue_url, &self.meter, member).await
    }

    async fn backlog(&self) -> Result<u64> {
        let mut total = self.depth(&self.queue_url).await?;
        if let Some(url) = &self.priority_url {
            total += self.depth(url).await?;
        }
        Ok(total)
    }
}

impl SqsQueue {
    async fn depth(&self, queue_url: &str) -> Result<u64> {
        self.meter.request(0);
        let resp = self
            .client
            .get_queue_attributes()
            .queue_url(queue_url)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesDelayed)
            .send()
            .await
            .map_err(|e| map_sdk("reading the queue's backlog", e))?;
        let attrs = resp.attributes();
        let count = |name: QueueAttributeName| -> u64 {
            attrs
                .and_then(|a| a.get(&name))
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        Ok(count(QueueAttributeName::ApproximateNumberOfMessages)
            + count(QueueAttributeName::ApproximateNumberOfMessagesDelayed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_hold_ten_messages_and_fit_sqs_s_size_limit() {
        let m = |n: usize| ("x".repeat(n), 0);
        let small: Vec<_> = (0..25).map(|_| m(100)).collect();
        assert_eq!(
            batches(&small).iter().map(|b| b.len()).collect::<Vec<_>>(),
            [10, 10, 5]
        );
        let big: Vec<_> = (0..10).map(|_| m(65_000)).collect();
        let b = batches(&big);
        assert!(
            b.iter()
                .all(|b| b.iter().map(|(s, _)| s.len()).sum::<usize>() <= BATCH_BYTES)
        );
        assert_eq!(b.iter().map(|b| b.len()).sum::<usize>(), 10);
        let huge = vec![m(300_000), m(10)];
        assert_eq!(
            batches(&huge).len(),
            2,
            "a message larger than a batch goes alone"
        );
    }
}
