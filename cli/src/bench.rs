//! `muster bench trigger`: latency of `POST /v1/incidents` for a large group
//! on the local server, over real HTTP on loopback, while the incidents
//! already triggered are being expanded and sent in the background.

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
            Tier::ALL[2],
            contacts,
        ));
    }
    let group = Group {
        id: GroupId::parse("bench").map_err(|e| anyhow::anyhow!("{e}"))?,
        name: "Bench".into(),
        members: people.iter().map(|p| p.id.clone()).collect(),
        on_call_manager: None,
        escalation_channels: vec![],
    };
    Ok(DirectoryFile {
        stakeholders: people,
        groups: vec![group],
    })
}

pub fn trigger(members: usize, requests: usize) -> anyhow::Result<()> {
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
        None,
        None,
        "bench-ack-key",
        true,
    )?;
    std::thread::spawn(move || {
        server_rt.block_on(async move { axum::serve(listener, router).await })
    });

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()?;
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
