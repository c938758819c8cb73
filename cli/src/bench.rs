//! Benchmarks. `muster bench trigger`: latency of `POST /v1/incidents` for a
//! large group on the local server, over real HTTP on loopback, while the
//! incidents already triggered are being expanded and sent in the
//! background. `muster bench escalation`: the escalation guarantees over
//! many seeds of drill scenarios.

use muster::directory::DirectoryFile;
use muster::domain::{
    ContactMethods, EmailAddress, Group, GroupId, PhoneNumber, Stakeholder, StakeholderId, Tier,
};
use muster::policy::Policy;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

fn directory(members: usize) -> anyhow::Result<DirectoryFile> {
    let mut people = Vec::with_capacity(members);
    for n in 0..members {
        let id = StakeholderId::parse(&format!("m{n}")).map_err(|e| anyhow::anyhow!("{e}"))?;
        let contacts = ContactMethods {
            phone: PhoneNumber::parse(&format!("+1212555{:04}", 100 + n % 100)).ok(),
            email: EmailAddress::parse(&format!("m{n}@example.com")).ok(),
            ..Default::default()
        };
        people.push(Stakeholder::new(
            id,
            format!("Member {n}"),
            Tier::THREE,
            contacts,
        ));
    }
    let members = people.iter().map(|p| p.id.clone()).collect();
    // The on-call manager is not a member, so every failure reaches someone.
    let lead = Stakeholder::new(
        StakeholderId::parse("lead").map_err(|e| anyhow::anyhow!("{e}"))?,
        "Bench lead",
        Tier::ONE,
        ContactMethods {
            phone: PhoneNumber::parse("+12125550999").ok(),
            email: EmailAddress::parse("lead@example.com").ok(),
            ..Default::default()
        },
    );
    let group = Group {
        id: GroupId::parse("bench").map_err(|e| anyhow::anyhow!("{e}"))?,
        name: "Bench".into(),
        members,
        on_call_manager: Some(lead.id.clone()),
        escalation_channels: vec![],
        idp: None,
    };
    people.push(lead);
    Ok(DirectoryFile {
        stakeholders: people,
        groups: vec![group],
    })
}

/// Starts `muster serve`'s router on loopback, with a group `bench` of
/// `members`, on its own thread; its base URL.
fn local_server(members: usize) -> anyhow::Result<String> {
    let dir = directory(members)?;
    let server_rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let listener = server_rt.block_on(tokio::net::TcpListener::bind(SocketAddr::from((
        [127, 0, 0, 1],
        0,
    ))))?;
    let base = format!("http://{}", listener.local_addr()?);
    let router = crate::serve::app(
        &dir,
        Policy::default(),
        &base,
        crate::serve::Access {
            secret: None,
            scim_token: None,
            ack_secret: "bench-ack-key".into(),
            integrations: Default::default(),
            notes: None,
            siem: Vec::new(),
            gateways: None,
        },
        Duration::from_secs(30),
        true,
    )?;
    std::thread::spawn(move || {
        server_rt.block_on(async move { axum::serve(listener, router).await })
    });
    Ok(base)
}

/// A runtime and an HTTP client for a benchmark's requests.
fn http_client() -> anyhow::Result<(tokio::runtime::Runtime, reqwest::Client)> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()?;
    Ok((rt, client))
}

pub fn trigger(members: usize, requests: usize) -> anyhow::Result<()> {
    let base = local_server(members)?;
    let (rt, client) = http_client()?;
    let url = format!("{base}/v1/incidents");
    let mut times = Vec::with_capacity(requests);
    let mut replays = Vec::with_capacity(requests);
    rt.block_on(async {
        for i in 0..requests {
            let body = format!(
                r#"{{"trigger": {{"incidentId": "BENCH-{i}", "severity": "P1", "stakeholderGroupId": "bench", "messageTemplate": "Benchmark activation {i}."}}}}"#
            );
            for (attempt, out) in [(0, &mut times), (1, &mut replays)] {
                let t = Instant::now();
                let r = client.post(&url).header("content-type", "application/json").body(body.clone()).send().await?;
                let status = r.status().as_u16();
                out.push(t.elapsed());
                anyhow::ensure!(status == 202, "request {i}.{attempt} answered {status}");
            }
        }
        Ok::<_, anyhow::Error>(())
    })?;
    let show = |name: &str, v: &mut Vec<Duration>| {
        v.sort();
        let at = |q: f64| {
            v[((q * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1].as_secs_f64() * 1000.0
        };
        println!(
            "{name:<22} p50 {:7.2} ms  p95 {:7.2} ms  p99 {:7.2} ms  max {:7.2} ms  (n={})",
            at(0.5),
            at(0.95),
            at(0.99),
            at(1.0),
            v.len()
        );
    };
    println!("POST /v1/incidents, group of {members} members, {requests} incidents, on loopback:");
    show("new incident (202)", &mut times);
    show("replay (202)", &mut replays);
    Ok(())
}

/// How long `bench status` waits for an expansion or a close at most.
const STATUS_WAIT: Duration = Duration::from_secs(600);

/// `muster bench status`: one incident of `members` people on the local
/// server; the size and time of its status page (`samples` reads, while
/// its cascades run), then how long the close takes to answer and until
/// the status says closed with every cascade ended.
pub fn status(members: usize, samples: usize) -> anyhow::Result<()> {
    use serde_json::Value;
    let base = local_server(members)?;
    let (rt, client) = http_client()?;
    let url = format!("{base}/v1/incidents/BENCH-STATUS");
    rt.block_on(async {
        let body = r#"{"trigger": {"incidentId": "BENCH-STATUS", "severity": "P1", "stakeholderGroupId": "bench", "messageTemplate": "Benchmark activation."}}"#;
        let r = client
            .post(format!("{base}/v1/incidents"))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await?;
        anyhow::ensure!(r.status() == 202, "the trigger answered {}", r.status());
        // Wait for the group to be expanded (bounded).
        let t = Instant::now();
        let total = |v: &Value| -> u64 {
            ["pending", "active", "acknowledged", "escalated", "cancelled"]
                .iter()
                .filter_map(|s| v["progress"]["members"][s].as_u64())
                .sum()
        };
        loop {
            let v: Value = client.get(&url).send().await?.json().await?;
            if total(&v) >= members as u64 {
                break;
            }
            anyhow::ensure!(t.elapsed() < STATUS_WAIT, "not expanded within {STATUS_WAIT:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        println!(
            "{members} members expanded in {:.1} s",
            t.elapsed().as_secs_f64()
        );
        let mut times = Vec::with_capacity(samples);
        let mut bytes = 0;
        for _ in 0..samples {
            let t = Instant::now();
            let r = client.get(&url).send().await?;
            anyhow::ensure!(r.status() == 200, "the status answered {}", r.status());
            let b = r.bytes().await?;
            times.push(t.elapsed());
            bytes = bytes.max(b.len());
        }
        times.sort();
        let at = |q: f64| {
            times[((q * times.len() as f64).ceil() as usize).clamp(1, times.len()) - 1]
                .as_secs_f64()
                * 1000.0
        };
        println!(
            "GET status (first page of 100): p50 {:.2} ms  p95 {:.2} ms  max {:.2} ms  (n={samples}), at most {bytes} bytes",
            at(0.5),
            at(0.95),
            at(1.0),
        );
        let t = Instant::now();
        let r = client
            .post(format!("{url}/close"))
            .header("content-type", "application/json")
            .body("{}")
            .send()
            .await?;
        let answered = t.elapsed();
        anyhow::ensure!(r.status() == 202, "the close answered {}", r.status());
        println!("POST close answered 202 in {:.2} ms", answered.as_secs_f64() * 1000.0);
        loop {
            let v: Value = client.get(&url).send().await?.json().await?;
            let m = &v["progress"]["members"];
            let open = m["pending"].as_u64().unwrap_or(0) + m["active"].as_u64().unwrap_or(0);
            if v["incident"]["status"] == "closed" {
                anyhow::ensure!(open == 0, "closed with {open} members still open");
                println!(
                    "closed, every cascade ended, {:.2} s after the close ({} cancelled)",
                    t.elapsed().as_secs_f64(),
                    v["counts"]["cancelled"]
                );
                return Ok(());
            }
            anyhow::ensure!(t.elapsed() < STATUS_WAIT, "not closed within {STATUS_WAIT:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
}

/// `--threads`, else the machine's cores (at least one).
fn worker_threads(asked: Option<usize>) -> usize {
    asked
        .or_else(|| std::thread::available_parallelism().ok().map(usize::from))
        .unwrap_or(1)
        .max(1)
}

/// Totals of one scenario over its seeds.
#[derive(Default)]
struct EscalationTotals {
    runs: u64,
    failed_runs: u64,
    failures: u64,
    acknowledged: u64,
    withdrawn: u64,
    undelivered: u64,
    cancelled: u64,
    open: u64,
    violations: u64,
    first_offer_ms: Vec<u64>,
    deepest: u32,
    examples: Vec<String>,
}

pub fn escalation(
    paths: &[std::path::PathBuf],
    seeds: u64,
    threads: Option<usize>,
) -> anyhow::Result<std::process::ExitCode> {
    use muster::app::EscalationOutcome as O;
    use muster::drill::{Scenario, run};
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicU64, Ordering};
    anyhow::ensure!(seeds > 0, "--seeds must be at least 1");
    let mut scenarios = Vec::new();
    for p in paths {
        let text = crate::read(p)?;
        let s = Scenario::from_toml(&text).map_err(|errors| {
            let list: Vec<String> = errors.iter().map(ToString::to_string).collect();
            anyhow::anyhow!("{}: invalid scenario: {}", p.display(), list.join("; "))
        })?;
        scenarios.push((p.display().to_string(), s));
    }
    let jobs: Vec<(usize, u64)> = (0..scenarios.len())
        .flat_map(|i| (1..=seeds).map(move |seed| (i, seed)))
        .collect();
    let next = AtomicU64::new(0);
    let totals: Vec<Mutex<EscalationTotals>> = scenarios
        .iter()
        .map(|_| Mutex::new(EscalationTotals::default()))
        .collect();
    let threads = worker_threads(threads);
    let started = Instant::now();
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| {
                loop {
                    let n = next.fetch_add(1, Ordering::Relaxed) as usize;
                    let Some(&(i, seed)) = jobs.get(n) else { break };
                    let (_, report) = run(scenarios[i].1.clone(), seed);
                    let mut t = totals[i].lock().unwrap_or_else(|e| e.into_inner());
                    t.runs += 1;
                    let e = &report.escalations;
                    t.failures += e.failures;
                    t.acknowledged += e.acknowledged;
                    t.withdrawn += e.withdrawn;
                    t.undelivered += e.undelivered;
                    t.cancelled += e.cancelled;
                    t.open += e.open;
                    t.deepest = t.deepest.max(e.deepest_level);
                    t.violations += report.invariant_violations;
                    for st in &report.escalation_stories {
                        t.first_offer_ms.extend(st.first_offer_ms);
                        if matches!(st.outcome, O::Undelivered { .. }) && t.examples.len() < 3 {
                            t.examples
                                .push(format!("seed {seed}: {} reached nobody", st.about));
                        }
                    }
                    if !report.passed() {
                        t.failed_runs += 1;
                        if t.examples.len() < 3 {
                            let why = report
                                .violations
                                .first()
                                .cloned()
                                .or_else(|| report.errors.first().cloned())
                                .unwrap_or_else(|| "cascades still active".into());
                            t.examples.push(format!("seed {seed}: {why}"));
                        }
                    }
                }
            });
        }
    });
    println!(
        "Escalation over {seeds} seed(s) per scenario, {} runs on {threads} thread(s) in {:.1}s",
        jobs.len(),
        started.elapsed().as_secs_f64()
    );
    println!(
        "{:<44} {:>6} {:>9} {:>6} {:>9} {:>10} {:>6}  {:>10}  {:>5} {:>5}",
        "scenario",
        "runs",
        "failures",
        "acked",
        "withdrawn",
        "undeliverd",
        "open",
        "offer p99/max",
        "depth",
        "bad"
    );
    let mut bad = 0;
    for ((name, _), t) in scenarios.iter().zip(&totals) {
        let mut t = t.lock().unwrap_or_else(|e| e.into_inner());
        t.first_offer_ms.sort_unstable();
        let q = |v: &[u64], q: f64| {
            if v.is_empty() {
                0.0
            } else {
                v[((q * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1] as f64 / 1000.0
            }
        };
        let name = std::path::Path::new(name)
            .file_stem()
            .map(|s| s.to_string_lossy().to_string())
            .unwrap_or_default();
        println!(
            "{:<44} {:>6} {:>9} {:>6} {:>9} {:>10} {:>6}  {:>5.1}/{:<5.1}s  {:>5} {:>5}",
            name,
            t.runs,
            t.failures,
            t.acknowledged,
            t.withdrawn,
            t.undelivered,
            t.open,
            q(&t.first_offer_ms, 0.99),
            q(&t.first_offer_ms, 1.0),
            t.deepest,
            t.failed_runs
        );
        for ex in &t.examples {
            println!("    {ex}");
        }
        bad += t.failed_runs + t.violations + t.undelivered;
    }
    let reached: u64 = totals
        .iter()
        .map(|t| {
            let t = t.lock().unwrap_or_else(|e| e.into_inner());
            t.acknowledged + t.withdrawn + t.cancelled
        })
        .sum();
    let failures: u64 = totals
        .iter()
        .map(|t| t.lock().unwrap_or_else(|e| e.into_inner()).failures)
        .sum();
    println!(
        "{reached} of {failures} failures ({:.2}%) reached a person who acknowledged (or the person acknowledged after all)",
        if failures == 0 {
            100.0
        } else {
            100.0 * reached as f64 / failures as f64
        }
    );
    Ok(if bad == 0 {
        std::process::ExitCode::SUCCESS
    } else {
        std::process::ExitCode::from(1)
    })
}

/// `muster bench faults`: seeds `from..from+seeds` of the random fault mixes
/// (`muster::drill::faults`), each run to its end and checked.
pub fn faults(
    seeds: u64,
    from: u64,
    threads: Option<usize>,
    show: bool,
) -> anyhow::Result<std::process::ExitCode> {
    use muster::drill::{faults, run};
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicU64, Ordering};
    anyhow::ensure!(seeds > 0, "--seeds must be at least 1");
    if show {
        print!("{}", faults::mix_toml(from));
        return Ok(std::process::ExitCode::SUCCESS);
    }
    let next = AtomicU64::new(0);
    let bad: Mutex<Vec<(u64, Vec<String>)>> = Mutex::new(Vec::new());
    /// What the runs did, summed.
    #[derive(Default, Clone, Copy)]
    struct FaultTotals {
        people: u64,
        failures: u64,
        responded: u64,
        undelivered: u64,
        lost: u64,
        throttled: u64,
        early: u64,
    }
    let totals: Mutex<FaultTotals> = Mutex::new(FaultTotals::default());
    let threads = worker_threads(threads);
    let started = Instant::now();
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| {
                loop {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    if n >= seeds {
                        break;
                    }
                    let seed = from + n;
                    let problems = match faults::mix(seed) {
                        Ok(s) => {
                            let (_, r) = run(s, seed);
                            let mut t = totals.lock().unwrap_or_else(|e| e.into_inner());
                            t.people += r.stakeholders;
                            t.failures += r.escalations.failures - r.escalations.responded;
                            t.responded += r.escalations.responded;
                            t.undelivered += r.escalations.undelivered;
                            t.lost += r.lost_jobs + r.lost_timers;
                            t.early += r.early_receipts_held;
                            t.throttled +=
                                r.carriers.values().map(|c| c.throttled_429).sum::<u64>();
                            faults::problems(&r)
                        }
                        Err(errors) => errors.iter().map(|e| format!("scenario: {e}")).collect(),
                    };
                    if !problems.is_empty() {
                        bad.lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .push((seed, problems));
                    }
                }
            });
        }
    });
    let t = *totals.lock().unwrap_or_else(|e| e.into_inner());
    let mut bad = bad.into_inner().unwrap_or_else(|e| e.into_inner());
    bad.sort();
    println!(
        "Fault mixes {from}..{}: {seeds} runs on {threads} thread(s) in {:.1}s; {} member cascades, {} failures escalated and {} answers that need help named ({} ESCALATION_UNDELIVERED, recorded), {} jobs and timers lost, {} 429s, {} receipts before their send was recorded",
        from + seeds - 1,
        started.elapsed().as_secs_f64(),
        t.people,
        t.failures,
        t.responded,
        t.undelivered,
        t.lost,
        t.throttled,
        t.early
    );
    for (seed, problems) in bad.iter().take(10) {
        println!("  seed {seed}: {}", problems.join("; "));
    }
    println!(
        "{} of {seeds} runs broke a rule (see one with `muster bench faults --show --from SEED > f.toml && muster drill f.toml`)",
        bad.len()
    );
    Ok(if bad.is_empty() {
        std::process::ExitCode::SUCCESS
    } else {
        std::process::ExitCode::from(1)
    })
}
