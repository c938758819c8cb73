//! Throughput of the pure engine: `decide` over the transitions of a typical
//! cascade (start, accepted, delivered, hold expired, ...), on one core.
//! Target: 1,000,000 decisions per second or more.

use criterion::{BatchSize, Criterion, Throughput, black_box, criterion_group, criterion_main};
use muster::domain::{Channel, IncidentId, Severity, StakeholderId, Tier, Ts};
use muster::engine::{
    Cascade, CascadeKey, ChannelPlan, Event, ReceiptStatus, Route, SendOutcome, TimerKind, decide,
};
use muster::policy::Policy;

fn fresh() -> Cascade {
    let key = CascadeKey {
        incident: IncidentId::parse("INC-2024-0892").unwrap_or_else(|e| panic!("{e}")),
        stakeholder: StakeholderId::parse("ops-lead-emea").unwrap_or_else(|e| panic!("{e}")),
        route: Route::Member,
    };
    Cascade::new(
        key,
        Severity::P1,
        Tier::TWO,
        ChannelPlan::new(&Channel::ALL),
        Ts::from_secs(1_716_215_520),
    )
}

/// A full cascade: voice delivered but not acknowledged, SMS transient then
/// retried, delivered, acknowledged: 10 transitions.
fn script() -> Vec<(u64, Event)> {
    vec![
        (0, Event::Start),
        (
            1,
            Event::SendResult {
                attempt: 1,
                result: SendOutcome::Accepted,
            },
        ),
        (
            6,
            Event::Receipt {
                attempt: 1,
                status: ReceiptStatus::Delivered,
            },
        ),
        (
            121,
            Event::Timer {
                attempt: 1,
                kind: TimerKind::ReceiptTimeout,
            },
        ),
        (
            96,
            Event::Timer {
                attempt: 1,
                kind: TimerKind::EscalationHold,
            },
        ),
        (
            97,
            Event::SendResult {
                attempt: 2,
                result: SendOutcome::Transient,
            },
        ),
        (
            112,
            Event::Timer {
                attempt: 3,
                kind: TimerKind::Retry,
            },
        ),
        (
            113,
            Event::SendResult {
                attempt: 3,
                result: SendOutcome::Accepted,
            },
        ),
        (
            115,
            Event::Receipt {
                attempt: 3,
                status: ReceiptStatus::Delivered,
            },
        ),
        (
            130,
            Event::Ack {
                channel: Channel::Sms,
                attempt: Some(3),
            },
        ),
    ]
}

fn bench(c: &mut Criterion) {
    let policy = Policy::default();
    let steps = script();
    let base = Ts::from_secs(1_716_215_520);
    let mut g = c.benchmark_group("decide");
    g.throughput(Throughput::Elements(steps.len() as u64));
    g.bench_function("full_cascade_10_transitions", |b| {
        b.iter_batched(
            fresh,
            |mut cascade| {
                for (t, e) in &steps {
                    let d = decide(
                        black_box(&cascade),
                        black_box(e),
                        &policy,
                        base.plus(t * 1000),
                    );
                    cascade = d.next;
                }
                cascade
            },
            BatchSize::SmallInput,
        )
    });
    let mut active = fresh();
    for (t, e) in &steps[..2] {
        active = decide(&active, e, &policy, base.plus(t * 1000)).next;
    }
    g.throughput(Throughput::Elements(1));
    g.bench_function("receipt_delivered", |b| {
        let e = Event::Receipt {
            attempt: 1,
            status: ReceiptStatus::Delivered,
        };
        b.iter(|| decide(black_box(&active), black_box(&e), &policy, base.plus(6_000)))
    });
    g.bench_function("stale_timer", |b| {
        let e = Event::Timer {
            attempt: 9,
            kind: TimerKind::Retry,
        };
        b.iter(|| decide(black_box(&active), black_box(&e), &policy, base.plus(6_000)))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
