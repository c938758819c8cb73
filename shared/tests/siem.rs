//! SIEM export: every audit entry and seal an incident writes reaches every
//! SIEM receiver configured, at least once, each line with its dedup key; a
//! receiver that is down gets them once it is back, and a receiver that
//! took them is not sent them again because another failed. The lines a
//! receiver holds (repeats dropped by dedup key) are a trail `muster audit
//! verify` passes.
//!
//! Runs on the embedded driver with a virtual clock; the forwarder is the
//! one `muster serve` runs ([`muster::embedded::forward_written`]). The
//! real receivers (rsyslog over TLS, Splunk HEC) are exercised by
//! cli/tests/siem.rs.

mod support;
use support::*;

use muster::adapters::memory::{
    Agenda, Item, LocalSealSigner, MemoryDirectory, MemoryStore, SeededIds, VirtualClock, embedded,
};
use muster::app;
use muster::audit::{ExportLine, verify_export};
use muster::domain::*;
use muster::policy::Policy;
use muster::ports::*;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// A receiver that keeps every line it takes, in order, and is down while
/// `down` is set.
struct Receiver {
    name: &'static str,
    down: AtomicBool,
    got: Mutex<Vec<ExportLine>>,
    refused: Mutex<usize>,
}

impl Receiver {
    fn new(name: &'static str, down: bool) -> Arc<Receiver> {
        Arc::new(Receiver {
            name,
            down: AtomicBool::new(down),
            got: Mutex::new(Vec::new()),
            refused: Mutex::new(0),
        })
    }

    fn got(&self) -> Vec<ExportLine> {
        self.got.lock().map(|g| g.clone()).unwrap_or_default()
    }
}

#[async_trait::async_trait]
impl AuditSink for Receiver {
    fn name(&self) -> &str {
        self.name
    }
    async fn deliver(&self, lines: &[ExportLine]) -> Result<(), ExportError> {
        if self.down.load(Ordering::SeqCst) {
            *self.refused.lock().unwrap_or_else(|e| e.into_inner()) += 1;
            return Err(ExportError::Unavailable("connection refused".into()));
        }
        self.got
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(lines);
        Ok(())
    }
}

struct Env {
    deps: Deps,
    store: Arc<MemoryStore>,
    agenda: Arc<Agenda<()>>,
    clock: Arc<VirtualClock>,
    sent: Arc<Accept>,
    cursor: usize,
}

/// Group `g`: members `a`, `b`, `c` (email only), on-call manager `m`.
fn env(receivers: &[Arc<Receiver>]) -> Env {
    let person = |n: &str| {
        let contacts = ContactMethods {
            email: EmailAddress::parse(&format!("{n}@example.com")).ok(),
            ..Default::default()
        };
        Stakeholder::new(id(n), n, Tier::TWO, contacts)
    };
    let group = Group {
        id: GroupId::parse("g").unwrap_or_else(|e| panic!("{e}")),
        name: "G".into(),
        members: vec![id("a"), id("b"), id("c")],
        on_call_manager: Some(id("m")),
        escalation_channels: vec![],
        idp: None,
    };
    let clock = VirtualClock::new(Ts::from_secs(1_700_000_000));
    let agenda: Arc<Agenda<()>> = Agenda::new(clock.clone());
    let sent = Arc::new(Accept::default());
    let sender: Arc<dyn ChannelSender> = sent.clone();
    let store = Arc::new(MemoryStore::new());
    let deps = Deps {
        sealing: Some(Sealing {
            signer: Arc::new(LocalSealSigner::from_os()),
            store: store.clone(),
        }),
        siem: receivers
            .iter()
            .map(|r| r.clone() as Arc<dyn AuditSink>)
            .collect(),
        ..embedded(
            Arc::new(Policy::default()),
            &agenda,
            store.clone(),
            Arc::new(MemoryDirectory::new(
                vec![group],
                vec![person("a"), person("b"), person("c"), person("m")],
            )),
            Senders {
                voice: sender.clone(),
                sms: sender.clone(),
                email: sender.clone(),
                push: sender,
            },
            clock.clone(),
            Arc::new(SeededIds::new(1)),
        )
    };
    agenda.push(clock.now().plus(60_000), Item::Sweep);
    Env {
        deps,
        store,
        agenda,
        clock,
        sent,
        cursor: 0,
    }
}

impl Env {
    /// Runs the agenda for `secs` of virtual time, forwarding what is
    /// written after every item; `ackers` acknowledge each message they get.
    async fn run_for(&mut self, secs: u64, ackers: &[&str]) {
        let end = self.clock.now().plus(secs * 1000);
        let (deps, store, sent) = (&self.deps, &self.store, &self.sent);
        let mut cursor = muster::embedded::forward_written(deps, store, self.cursor).await;
        let mut answered = 0;
        muster::embedded::run_virtual(deps, &self.agenda, &self.clock, end, async |_| {
            cursor = muster::embedded::forward_written(deps, store, cursor).await;
            ack_new(deps, sent, &mut answered, ackers).await;
        })
        .await
        .unwrap_or_else(|e| panic!("{e}"));
        self.cursor = muster::embedded::forward_written(deps, store, cursor).await;
    }

    /// Every line the store holds, by dedup key.
    fn written(&self) -> BTreeMap<String, ExportLine> {
        let mut out = BTreeMap::new();
        self.store.for_each_audit(|e| {
            let line = ExportLine::Entry(Box::new(e.clone()));
            out.insert(line.dedup_key(), line);
        });
        for seal in self.store.all_seals() {
            let line = ExportLine::Seal { seal };
            out.insert(line.dedup_key(), line);
        }
        out
    }
}

fn trigger(n: &str) -> Trigger {
    Trigger {
        incident_id: IncidentId::parse(n).unwrap_or_else(|e| panic!("{e}")),
        severity: Severity::P1,
        stakeholder_group_id: GroupId::parse("g").unwrap_or_else(|e| panic!("{e}")),
        message_template: MessageTemplate::parse("Data centre power lost. Press 1.")
            .unwrap_or_else(|e| panic!("{e}")),
        timestamp: None,
        responses: Default::default(),
        quorum: None,
        stop_on_quorum: false,
        bridge: None,
        message_templates: Default::default(),
    }
}

/// Repeats dropped by dedup key, first seen kept.
fn unique(lines: &[ExportLine]) -> BTreeMap<String, ExportLine> {
    let mut out = BTreeMap::new();
    for l in lines {
        out.entry(l.dedup_key()).or_insert_with(|| l.clone());
    }
    out
}

#[tokio::test]
async fn every_entry_and_seal_reaches_each_receiver_and_one_that_was_down_gets_them_when_back() {
    let syslog = Receiver::new("syslog", true);
    let hec = Receiver::new("hec", false);
    let mut env = env(&[syslog.clone(), hec.clone()]);
    app::trigger(&env.deps, trigger("INC-SIEM-1"))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    // a and b acknowledge; c never does and is escalated to m, who does.
    env.run_for(20 * 60, &["a", "b", "m"]).await;
    let inc = IncidentId::parse("INC-SIEM-1").unwrap_or_else(|e| panic!("{e}"));
    app::close(&env.deps, &inc)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    env.run_for(5 * 60, &[]).await;
    assert!(*syslog.refused.lock().unwrap_or_else(|e| e.into_inner()) > 0);
    assert!(syslog.got().is_empty(), "the receiver was down throughout");

    // Back after 25 minutes: the retries (at most 15 min apart) bring
    // everything within the next 15 minutes, while nothing new is written.
    syslog.down.store(false, Ordering::SeqCst);
    env.run_for(16 * 60, &[]).await;

    let written = env.written();
    let kinds: BTreeSet<&str> = written.values().map(ExportLine::kind).collect();
    for k in ["CASCADE_STARTED", "ACKNOWLEDGED", "CASCADE_FAILURE", "SEAL"] {
        assert!(kinds.contains(k), "the incident wrote {k}: {kinds:?}");
    }
    for r in [&syslog, &hec] {
        let got = unique(&r.got());
        assert_eq!(
            got.keys().collect::<Vec<_>>(),
            written.keys().collect::<Vec<_>>(),
            "{} holds every entry and seal written, by dedup key",
            r.name
        );
        assert_eq!(got, written, "{}: each line as written", r.name);
        // Received in any order (retries): each chain in sequence order, as
        // a SIEM search sorts them, then the seals.
        let mut lines: Vec<ExportLine> = got.into_values().collect();
        lines.sort_by_key(|l| match l {
            ExportLine::Entry(e) => (
                0,
                e.incident.to_string(),
                e.route.encode(),
                e.stakeholder.to_string(),
                e.seq,
            ),
            ExportLine::Seal { seal } => (
                1,
                seal.incident.to_string(),
                String::new(),
                String::new(),
                seal.at.0,
            ),
        });
        let v = verify_export(&lines).unwrap_or_else(|e| panic!("{}: {e:?}", r.name));
        assert_eq!(
            v.sealed,
            vec![inc.clone()],
            "{}: the trail verifies with its seal",
            r.name
        );
    }
    // The receiver that was up took each line once: the other's retries
    // were its own.
    assert_eq!(hec.got().len(), written.len());
}

#[tokio::test]
async fn a_dedup_key_is_the_same_for_a_line_however_often_it_is_sent_and_differs_between_lines() {
    let hec = Receiver::new("hec", false);
    let mut env = env(std::slice::from_ref(&hec));
    app::trigger(&env.deps, trigger("INC-SIEM-2"))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    env.run_for(20 * 60, &["a", "b", "c"]).await;
    let written = env.written();
    let mut entries = 0;
    env.store.for_each_audit(|_| entries += 1);
    let seals = env.store.all_seals().len();
    assert!(seals > 0);
    assert_eq!(written.len(), entries + seals, "no two lines share a key");
    // A line sent again, as a receiver reads it back from its JSON, has
    // the same key.
    for l in hec.got() {
        let read: ExportLine = serde_json::from_str(&l.to_json()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(read.dedup_key(), l.dedup_key());
        assert!(written.contains_key(&read.dedup_key()));
    }
}

#[test]
fn export_jobs_keep_every_line_in_order_and_each_fits_an_sqs_batch() {
    let hec = Receiver::new("hec", false);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    let mut env = env(std::slice::from_ref(&hec));
    rt.block_on(async {
        app::trigger(&env.deps, trigger("INC-SIEM-3"))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        env.run_for(30 * 60, &[]).await;
    });
    let (lines, _) = env.store.written_since(0, usize::MAX);
    // Many copies: well past one job.
    let many: Vec<ExportLine> = (0..20).flat_map(|_| lines.clone()).collect();
    let jobs = app::export::jobs(many.clone());
    assert!(jobs.len() > 1);
    let mut back = Vec::new();
    for job in &jobs {
        let Job::Export {
            lines,
            sinks,
            attempt,
        } = job
        else {
            panic!("an export job")
        };
        assert!(sinks.is_empty() && *attempt == 0);
        let bytes: usize = lines.iter().map(|l| l.to_json().len()).sum();
        assert!(bytes <= app::export::CHUNK_BYTES, "{bytes}");
        // Ten jobs, as queued, fit one SQS batch (256 KiB).
        let json = serde_json::to_string(job).unwrap_or_default();
        assert!(json.len() * 10 < 256 * 1024, "{}", json.len());
        back.extend(lines.iter().cloned());
    }
    assert_eq!(back, many);
}
