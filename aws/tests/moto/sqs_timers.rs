//! The SQS work queue and the timers against moto. moto's EventBridge
//! Scheduler stores schedules but never fires them: the firing path (a
//! schedule delivering the timer 60 s early and `tick` re-arming the
//! remainder as an SQS delay) is covered by `tick`'s own tests in the muster
//! crate and by `a_fired_schedule_rearms_its_remainder_as_an_sqs_delay` below.
#![allow(clippy::unwrap_used)]

use crate::support;

use aws_sdk_sqs::types::QueueAttributeName;
use muster::adapters::memory::{SystemClock, VirtualClock};
use muster::domain::*;
use muster::engine::{CascadeKey, Route, TimerKind};
use muster::ports::*;
use muster_aws::sqs::SqsQueue;
use muster_aws::timers::{EARLY_MS, ScheduleTarget, SqsTimers, at_expression, schedule_name};
use std::sync::Arc;
use std::time::{Duration, Instant};

async fn queue(cfg: &aws_config::SdkConfig) -> (aws_sdk_sqs::Client, String, String) {
    let sqs = aws_sdk_sqs::Client::new(cfg);
    let url = sqs
        .create_queue()
        .queue_name(support::unique("jobs"))
        .send()
        .await
        .unwrap()
        .queue_url()
        .unwrap()
        .to_string();
    let arn = sqs
        .get_queue_attributes()
        .queue_url(&url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .unwrap()
        .attributes()
        .unwrap()[&QueueAttributeName::QueueArn]
        .clone();
    (sqs, url, arn)
}

/// Receives until `n` messages arrived or `within` passed.
async fn receive(sqs: &aws_sdk_sqs::Client, url: &str, n: usize, within: Duration) -> Vec<String> {
    let deadline = Instant::now() + within;
    let mut got = Vec::new();
    while got.len() < n && Instant::now() < deadline {
        let resp = sqs
            .receive_message()
            .queue_url(url)
            .max_number_of_messages(10)
            .wait_time_seconds(1)
            .send()
            .await
            .unwrap();
        for m in resp.messages() {
            got.push(m.body().unwrap().to_string());
            sqs.delete_message()
                .queue_url(url)
                .receipt_handle(m.receipt_handle().unwrap())
                .send()
                .await
                .unwrap();
        }
    }
    got
}

fn send_job(i: u32) -> Job {
    Job::Send {
        key: CascadeKey {
            incident: IncidentId::parse("INC-1").unwrap(),
            stakeholder: StakeholderId::parse(&format!("p{i}")).unwrap(),
            route: Route::Member,
        },
        attempt: 1,
        ticket: None,
    }
}

#[tokio::test]
async fn jobs_go_ten_to_a_batch_and_all_arrive() {
    let cfg = support::sdk_config().await;
    let (sqs, url, _) = queue(&cfg).await;
    let q = SqsQueue::new(sqs.clone(), &url);
    q.enqueue((0..23).map(|i| (send_job(i), 0)).collect())
        .await
        .unwrap();
    assert_eq!(q.meter().read().requests, 3, "23 jobs in 3 batches");
    assert_eq!(q.backlog().await.unwrap(), 23);
    let got = receive(&sqs, &url, 23, Duration::from_secs(20)).await;
    let mut jobs: Vec<Job> = got
        .iter()
        .map(|b| serde_json::from_str(b).unwrap())
        .collect();
    jobs.sort_by_key(|j| match j {
        Job::Send { key, .. } => key.stakeholder.as_str()[1..].parse::<u32>().unwrap(),
        _ => u32::MAX,
    });
    assert_eq!(jobs, (0..23).map(send_job).collect::<Vec<_>>());
}

#[tokio::test]
async fn a_delayed_job_is_invisible_until_its_delay() {
    let cfg = support::sdk_config().await;
    let (sqs, url, _) = queue(&cfg).await;
    let q = SqsQueue::new(sqs.clone(), &url);
    let start = Instant::now();
    // 5 s: wide enough that a loaded machine reads the queue before it.
    q.enqueue(vec![(send_job(1), 5_000)]).await.unwrap();
    assert_eq!(
        q.backlog().await.unwrap(),
        1,
        "a delayed job counts as backlog"
    );
    let early = sqs.receive_message().queue_url(&url).send().await.unwrap();
    assert!(
        early.messages().is_empty() || start.elapsed() >= Duration::from_millis(5_000),
        "visible before its delay ({:?})",
        start.elapsed()
    );
    let got = receive(&sqs, &url, 1, Duration::from_secs(20)).await;
    assert_eq!(got.len(), 1);
    assert!(
        start.elapsed() >= Duration::from_millis(4_900),
        "{:?}",
        start.elapsed()
    );
}

struct Sched {
    client: aws_sdk_scheduler::Client,
    group: String,
}

async fn timers(
    cfg: &aws_config::SdkConfig,
    clock: Arc<dyn Clock>,
) -> (SqsTimers, Sched, aws_sdk_sqs::Client, String) {
    let (sqs, url, arn) = queue(cfg).await;
    let sched = aws_sdk_scheduler::Client::new(cfg);
    let group = support::unique("timers");
    sched
        .create_schedule_group()
        .name(&group)
        .send()
        .await
        .unwrap();
    let t = SqsTimers::new(
        sqs.clone(),
        &url,
        sched.clone(),
        ScheduleTarget {
            group: group.clone(),
            queue_arn: arn,
            role_arn: "arn:aws:iam::123456789012:role/muster-scheduler".into(),
        },
        clock,
    );
    (
        t,
        Sched {
            client: sched,
            group,
        },
        sqs,
        url,
    )
}

fn timer(at: Ts, attempt: u32) -> TimerMsg {
    TimerMsg {
        key: CascadeKey {
            incident: IncidentId::parse("INC-2").unwrap(),
            stakeholder: StakeholderId::parse("alice").unwrap(),
            route: Route::Member,
        },
        attempt,
        kind: TimerKind::ReceiptTimeout,
        at,
    }
}

#[tokio::test]
async fn a_short_timer_is_an_sqs_delay() {
    let cfg = support::sdk_config().await;
    let clock = Arc::new(SystemClock);
    let (t, s, sqs, url) = timers(&cfg, clock.clone()).await;
    let start = Instant::now();
    let msg = timer(clock.now().plus(2_000), 1);
    t.arm(vec![msg.clone()]).await.unwrap();
    let got = receive(&sqs, &url, 1, Duration::from_secs(15)).await;
    assert_eq!(got.len(), 1);
    assert!(
        start.elapsed() >= Duration::from_millis(1_000),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(serde_json::from_str::<TimerMsg>(&got[0]).unwrap(), msg);
    let schedules = s
        .client
        .list_schedules()
        .group_name(&s.group)
        .send()
        .await
        .unwrap();
    assert!(
        schedules.schedules().is_empty(),
        "no schedule for a short timer"
    );
}

#[tokio::test]
async fn a_long_timer_is_one_schedule_and_arming_it_twice_is_a_no_op() {
    let cfg = support::sdk_config().await;
    let now = Ts::from_secs(1_900_000_000);
    let clock = VirtualClock::new(now);
    let (t, s, sqs, url) = timers(&cfg, clock).await;
    let msg = timer(now.plus(2 * 3_600_000 + 500), 3);
    t.arm(vec![msg.clone()]).await.unwrap();
    t.arm(vec![msg.clone()]).await.unwrap();
    let listed = s
        .client
        .list_schedules()
        .group_name(&s.group)
        .send()
        .await
        .unwrap();
    assert_eq!(
        listed.schedules().len(),
        1,
        "one schedule for a duplicate arm"
    );
    let body = serde_json::to_string(&msg).unwrap();
    let got = s
        .client
        .get_schedule()
        .group_name(&s.group)
        .name(schedule_name(&body))
        .send()
        .await
        .unwrap();
    // Fires 60 s early, in UTC, exactly once, then deletes itself.
    assert_eq!(
        got.schedule_expression(),
        Some(at_expression(Ts(msg.at.0 - EARLY_MS)).as_str())
    );
    assert_eq!(got.schedule_expression(), Some("at(2030-03-17T19:45:40)"));
    assert_eq!(got.schedule_expression_timezone(), Some("UTC"));
    assert_eq!(
        got.flexible_time_window().map(|w| w.mode().as_str()),
        Some("OFF")
    );
    assert_eq!(
        got.action_after_completion().map(|a| a.as_str()),
        Some("DELETE")
    );
    let target = got.target().unwrap();
    assert_eq!(target.input(), Some(body.as_str()));
    assert!(target.arn().ends_with(url.rsplit('/').next().unwrap()));
    // Nothing went to the queue directly.
    assert!(
        receive(&sqs, &url, 1, Duration::from_secs(1))
            .await
            .is_empty()
    );
}

#[tokio::test]
async fn a_fired_schedule_rearms_its_remainder_as_an_sqs_delay() {
    // Scheduler delivers a timer 60 s early; `tick` arms it again, and the
    // remainder becomes an SQS delay, not another schedule.
    let cfg = support::sdk_config().await;
    let now = SystemClock.now();
    let (t, s, sqs, url) = timers(&cfg, VirtualClock::new(now)).await;
    t.arm(vec![timer(now.plus(EARLY_MS), 2)]).await.unwrap();
    let attrs = sqs
        .get_queue_attributes()
        .queue_url(&url)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesDelayed)
        .send()
        .await
        .unwrap();
    assert_eq!(
        attrs.attributes().unwrap()[&QueueAttributeName::ApproximateNumberOfMessagesDelayed],
        "1"
    );
    let early = sqs.receive_message().queue_url(&url).send().await.unwrap();
    assert!(early.messages().is_empty());
    let listed = s
        .client
        .list_schedules()
        .group_name(&s.group)
        .send()
        .await
        .unwrap();
    assert!(listed.schedules().is_empty());
}
