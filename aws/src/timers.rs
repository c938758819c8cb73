//! Timers. A timer due within SQS's 15 minutes is an SQS message delay on
//! the timer queue. A later one is an EventBridge Scheduler one-time
//! schedule (`at(...)` in UTC, FlexibleTimeWindow OFF, ActionAfterCompletion
//! DELETE) that fires [`EARLY_MS`] before the timer into the same queue; the
//! `tick` use case re-arms the remainder, which is then an SQS delay.
//!
//! A schedule's name is derived from the timer message (key, attempt, kind,
//! time), so arming the same timer twice is a no-op: the second create gets
//! `ConflictException`, which is success. Timers are never cancelled: a
//! stale one is fenced out by the engine.

use crate::dynamo::Meter;
use crate::error::map_sdk;
use crate::sqs::{MAX_DELAY_SECS, send_batched};
use async_trait::async_trait;
use aws_sdk_scheduler::types::{
    ActionAfterCompletion, FlexibleTimeWindow, FlexibleTimeWindowMode, Target,
};
use muster::domain::Ts;
use muster::ports::{Clock, TimerMsg, Timers};
use muster::{Error, Result};
use sha2::{Digest, Sha256};
use std::sync::Arc;

/// How early a schedule fires before its timer.
pub const EARLY_MS: u64 = 60_000;

/// Where long timers are scheduled.
#[derive(Debug, Clone)]
pub struct ScheduleTarget {
    /// Schedule group (one per deployment).
    pub group: String,
    /// ARN of the timer queue.
    pub queue_arn: String,
    /// Role Scheduler assumes to send to the queue.
    pub role_arn: String,
}

pub struct SqsTimers {
    sqs: aws_sdk_sqs::Client,
    queue_url: String,
    scheduler: aws_sdk_scheduler::Client,
    target: ScheduleTarget,
    clock: Arc<dyn Clock>,
    meter: Arc<Meter>,
}

/// The deterministic schedule name of a timer: `muster-` and 48 hex digits
/// of SHA-256 over the timer's JSON (names allow 64 characters).
pub fn schedule_name(body: &str) -> String {
    let digest = Sha256::digest(body.as_bytes());
    format!("muster-{}", &hex::encode(digest)[..48])
}

/// `at(...)` expression for a time, in UTC, to the second (rounded down).
pub fn at_expression(t: Ts) -> String {
    let s = Ts(t.0 - t.0 % 1000).rfc3339();
    format!("at({})", &s[..19])
}

impl SqsTimers {
    pub fn new(
        sqs: aws_sdk_sqs::Client,
        queue_url: impl Into<String>,
        scheduler: aws_sdk_scheduler::Client,
        target: ScheduleTarget,
        clock: Arc<dyn Clock>,
    ) -> Self {
        SqsTimers {
            sqs,
            queue_url: queue_url.into(),
            scheduler,
            target,
            clock,
            meter: Arc::new(Meter::default()),
        }
    }

    /// Requests made to SQS and Scheduler.
    pub fn meter(&self) -> Arc<Meter> {
        self.meter.clone()
    }

    async fn schedule(&self, body: String, fire_at: Ts) -> Result<()> {
        let name = schedule_name(&body);
        let target = Target::builder()
            .arn(&self.target.queue_arn)
            .role_arn(&self.target.role_arn)
            .input(body)
            .build()
            .map_err(|e| crate::dynamo::build_err("schedule target", e))?;
        let window = FlexibleTimeWindow::builder()
            .mode(FlexibleTimeWindowMode::Off)
            .build()
            .map_err(|e| crate::dynamo::build_err("time window", e))?;
        self.meter.request(0);
        match self
            .scheduler
            .create_schedule()
            .name(&name)
            .group_name(&self.target.group)
            .schedule_expression(at_expression(fire_at))
            .schedule_expression_timezone("UTC")
            .flexible_time_window(window)
            .action_after_completion(ActionAfterCompletion::Delete)
            .target(target)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|se| se.is_conflict_exception()) =>
            {
                Ok(())
            }
            Err(e) => Err(map_sdk("creating a schedule", e)),
        }
    }
}

#[async_trait]
impl Timers for SqsTimers {
    async fn arm(&self, timers: Vec<TimerMsg>) -> Result<()> {
        let now = self.clock.now();
        let mut short = Vec::new();
        for t in timers {
            let body =
                serde_json::to_string(&t).map_err(|e| crate::dynamo::json_err("timer", e))?;
            let delay = t.at.since(now);
            if delay <= MAX_DELAY_SECS * 1000 {
                short.push((body, delay));
            } else {
                self.schedule(body, Ts(t.at.0 - EARLY_MS)).await?;
            }
        }
        if short.is_empty() {
            return Ok(());
        }
        send_batched(&self.sqs, &self.queue_url, &self.meter, short)
            .await
            .map_err(|e| match e {
                Error::Permanent { context, source } => Error::Permanent {
                    context: format!("arming timers: {context}"),
                    source,
                },
                other => other,
            })
    }
}
