//! SIEM export end to end: `muster serve` forwards an incident's audit
//! trail, as it is written, to Debian's rsyslog over TLS (started on
//! loopback by `scripts/syslog-server`: RFC 5425 octet-counted frames,
//! client certificates required) and to an HTTP Event Collector that
//! follows Splunk's documented contract (tests/fixtures/siem/, sources in
//! its README). Each receiver holds every entry and seal, each with its
//! dedup key, and the trail each holds verifies with `muster audit verify`.
#![allow(clippy::unwrap_used)]

use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use sha2::Digest;
use std::io::{BufRead, BufReader};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const HEC_TOKEN: &str = "3c1f0c6e-hec-token-0123";

fn root() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap()
}

fn fixture(name: &str) -> String {
    std::fs::read_to_string(root().join("tests/fixtures/siem").join(name)).unwrap()
}

/// Waits (bounded, 30 s) until `f` holds.
fn until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

struct Rsyslog {
    child: Child,
    dir: PathBuf,
    port: u16,
}

impl Drop for Rsyslog {
    fn drop(&mut self) {
        // SIGTERM to `timeout`, which passes it on to rsyslogd.
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Rsyslog {
    fn start() -> Rsyslog {
        assert!(
            Command::new("sh")
                .args(["-c", "command -v rsyslogd"])
                .output()
                .is_ok_and(|o| o.status.success()),
            "rsyslogd is not installed: apt-get install rsyslog rsyslog-gnutls (scripts/test does)"
        );
        let port = free_port();
        let dir = std::env::temp_dir().join(format!("muster-rsyslog-{port}"));
        let child = Command::new("timeout")
            .args(["600", "bash"])
            .arg(root().join("scripts/syslog-server"))
            .arg(&dir)
            .arg(port.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("scripts/syslog-server");
        let r = Rsyslog { child, dir, port };
        until("rsyslogd to listen", || {
            TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        r
    }

    /// (MSGID, structured data, message) of every message received.
    fn received(&self) -> Vec<(String, String, String)> {
        std::fs::read_to_string(self.dir.join("received.log"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| {
                let mut f = l.splitn(3, '\t');
                Some((
                    f.next()?.into(),
                    f.next()?.into(),
                    f.next()?.trim_start().into(),
                ))
            })
            .collect()
    }

    fn settings(&self, with_client_cert: bool) -> Value {
        let d = |f: &str| self.dir.join(f).to_str().unwrap().to_string();
        let mut s = json!({
            "address": format!("127.0.0.1:{}", self.port),
            "ca_file": d("ca.pem"),
            "hostname": "muster-test",
        });
        if with_client_cert {
            s["client_cert_file"] = json!(d("client.pem"));
            s["client_key_file"] = json!(d("client.key"));
        }
        s
    }
}

/// A Splunk HTTP Event Collector as documented: the token, the body of
/// concatenated event objects each with a non-blank `event`, and the
/// documented answers (tests/fixtures/siem/hec_responses.json).
#[derive(Default)]
struct Hec {
    events: Mutex<Vec<Value>>,
    busy: AtomicBool,
}

fn answer(name: &str) -> Response {
    let all: Value = serde_json::from_str(&fixture("hec_responses.json")).unwrap();
    let r = &all[name];
    let status = StatusCode::from_u16(r["status"].as_u64().unwrap() as u16).unwrap();
    (status, axum::Json(r["body"].clone())).into_response()
}

/// The events of a request body, or the documented refusal.
fn events_of(body: &str) -> Result<Vec<Value>, &'static str> {
    if body.trim().is_empty() {
        return Err("no_data");
    }
    let mut out = Vec::new();
    for v in serde_json::Deserializer::from_str(body).into_iter::<Value>() {
        let v = v.map_err(|_| "invalid_data_format")?;
        match v.get("event") {
            None => return Err("event_required"),
            Some(Value::String(s)) if s.is_empty() => return Err("event_blank"),
            Some(Value::Null) => return Err("event_blank"),
            Some(_) => {}
        }
        if let Some(f) = v.get("fields") {
            // Indexed fields: a flat object.
            if !f
                .as_object()
                .is_some_and(|o| o.values().all(|x| !x.is_object()))
            {
                return Err("invalid_data_format");
            }
        }
        out.push(v);
    }
    Ok(out)
}

async fn collector(
    axum::extract::State(hec): axum::extract::State<Arc<Hec>>,
    headers: HeaderMap,
    body: String,
) -> Response {
    match headers.get("authorization").and_then(|v| v.to_str().ok()) {
        None => return answer("token_required"),
        Some(a) => match a.strip_prefix("Splunk ") {
            None => return answer("invalid_authorization"),
            Some(t) if t != HEC_TOKEN => return answer("invalid_token"),
            Some(_) => {}
        },
    }
    if hec.busy.load(Ordering::SeqCst) {
        return answer("server_busy");
    }
    match events_of(&body) {
        Ok(evs) => {
            hec.events.lock().unwrap().extend(evs);
            answer("success")
        }
        Err(name) => answer(name),
    }
}

fn start_hec() -> (String, Arc<Hec>) {
    let hec = Arc::new(Hec::default());
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let state = hec.clone();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let app = axum::Router::new()
                .route("/services/collector/event", axum::routing::post(collector))
                .with_state(state);
            let l = tokio::net::TcpListener::from_std(listener).unwrap();
            let _ = axum::serve(l, app).await;
        });
    });
    (base, hec)
}

struct Serve(Child, Arc<Mutex<String>>);

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn serve(siem: &Value) -> (Serve, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_muster"))
        .args(["serve", "--port", "0"])
        .env("MUSTER_SIEM", siem.to_string())
        .env_remove("MUSTER_SHARED_SECRET")
        .current_dir(std::env::temp_dir())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let out = Arc::new(Mutex::new(String::new()));
    let stdout = child.stdout.take().unwrap();
    let sink = out.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let mut g = sink.lock().unwrap();
            g.push_str(&line);
            g.push('\n');
        }
    });
    let s = Serve(child, out.clone());
    let mut base = String::new();
    until("muster serve to listen", || {
        base = out
            .lock()
            .unwrap()
            .lines()
            .find_map(|l| l.strip_prefix("listening on ").map(str::to_string))
            .unwrap_or_default();
        !base.is_empty()
    });
    (s, base)
}

fn muster(base: &str, args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_muster"))
        .args(args)
        .env("MUSTER_API_URL", base)
        .env("MUSTER_API_ROLES", "ComplianceOfficer")
        .env_remove("MUSTER_API_SECRET")
        .env_remove("MUSTER_API_TOKEN")
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "muster {args:?}: {text}");
    text
}

/// The dedup key a line must carry: an entry's hash; for a seal, SHA-256
/// of the statement it signs (docs/audit.md).
fn dedup_key(line: &Value) -> String {
    match line.get("seal") {
        Some(s) => {
            let statement = format!(
                "muster-seal-v1|{}|{}|{}|{}|{}",
                s["incident"].as_str().unwrap(),
                s["at"],
                s["chains"],
                s["entries"],
                s["heads_digest"].as_str().unwrap()
            );
            hex::encode(sha2::Sha256::digest(statement.as_bytes()))
        }
        None => line["hash"].as_str().unwrap().to_string(),
    }
}

/// Lines in the order `muster audit verify` reads: each chain by `seq`,
/// then the seals.
fn in_chain_order(mut lines: Vec<Value>) -> String {
    lines.sort_by_key(|l| match l.get("seal") {
        Some(s) => (
            1,
            s["incident"].to_string(),
            String::new(),
            String::new(),
            s["at"].as_u64().unwrap(),
        ),
        None => (
            0,
            l["incident"].to_string(),
            l["route"].to_string(),
            l["stakeholder"].to_string(),
            l["seq"].as_u64().unwrap(),
        ),
    });
    lines.iter().map(|l| l.to_string() + "\n").collect()
}

#[test]
fn serve_forwards_the_whole_trail_to_rsyslog_over_tls_and_to_hec_and_each_copy_verifies() {
    let rsyslog = Rsyslog::start();
    let (hec_url, hec) = start_hec();
    let siem = json!({
        "syslog": rsyslog.settings(true),
        "hec": {"url": hec_url, "token": HEC_TOKEN, "index": "bcp"},
    });
    let (server, base) = serve(&siem);
    assert!(
        server
            .1
            .lock()
            .unwrap()
            .contains("audit trail to SIEM: syslog, hec"),
        "{}",
        server.1.lock().unwrap()
    );
    let trigger = [
        "incidents",
        "trigger",
        "--group",
        "ops-leadership",
        "--severity",
        "P1",
        "--message",
        "Outage.",
        "--id",
        "INC-SIEM-E2E",
    ];
    muster(&base, &trigger);
    muster(&base, &["incidents", "close", "INC-SIEM-E2E"]);
    muster(
        &base,
        &[
            "incidents",
            "watch",
            "INC-SIEM-E2E",
            "--interval",
            "1",
            "--timeout",
            "60",
        ],
    );
    let file = std::env::temp_dir().join(format!("muster-siem-{}.jsonl", std::process::id()));
    let path = file.to_str().unwrap().to_string();
    muster(
        &base,
        &["incidents", "audit", "INC-SIEM-E2E", "--out", &path],
    );
    let exported: Vec<Value> = std::fs::read_to_string(&file)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let mut keys: Vec<String> = exported.iter().map(dedup_key).collect();
    keys.sort();
    assert!(keys.len() > 10 && exported.iter().any(|l| l.get("seal").is_some()));

    // Within seconds both hold every line (the forwarder runs every second).
    let holds = |got: &[Value]| {
        let mut k: Vec<String> = got.iter().map(dedup_key).collect();
        k.sort();
        k.dedup();
        k == keys
    };
    let syslog_lines = || -> Vec<Value> {
        rsyslog
            .received()
            .iter()
            .map(|(_, _, msg)| serde_json::from_str(msg).unwrap_or_else(|e| panic!("{e}: {msg}")))
            .collect()
    };
    until("rsyslog to hold the trail", || holds(&syslog_lines()));
    let hec_lines = || -> Vec<Value> {
        hec.events
            .lock()
            .unwrap()
            .iter()
            .map(|e| e["event"].clone())
            .collect()
    };
    until("HEC to hold the trail", || holds(&hec_lines()));

    // Each syslog message: MSGID the kind, the dedup key in the structured
    // data, the line as exported.
    for (msgid, sd, msg) in rsyslog.received() {
        let line: Value = serde_json::from_str(&msg).unwrap();
        let kind = line["kind"].as_str().unwrap_or("SEAL");
        assert_eq!(msgid, kind);
        assert!(
            sd.starts_with("[muster@32473 incident=\"INC-SIEM-E2E\""),
            "{sd}"
        );
        assert!(
            sd.contains(&format!("hash=\"{}\"]", dedup_key(&line))),
            "{sd}"
        );
        assert!(exported.contains(&line), "sent as exported: {msg}");
    }
    // Each HEC event: the line, its key and kind as indexed fields, its time.
    for e in hec.events.lock().unwrap().iter() {
        let line = &e["event"];
        assert_eq!(e["fields"]["muster_hash"], json!(dedup_key(line)));
        assert_eq!(e["fields"]["muster_incident"], json!("INC-SIEM-E2E"));
        assert_eq!(e["sourcetype"], json!("muster:audit"));
        assert_eq!(e["index"], json!("bcp"));
        let at = line
            .get("seal")
            .map_or(&line["at"], |s| &s["at"])
            .as_f64()
            .unwrap();
        assert!((e["time"].as_f64().unwrap() - at / 1000.0).abs() < 0.001);
        assert!(exported.contains(line));
    }
    // The copy each receiver holds is a trail that verifies with its seal.
    for (name, lines) in [("syslog", syslog_lines()), ("hec", hec_lines())] {
        let copy =
            std::env::temp_dir().join(format!("muster-siem-{name}-{}.jsonl", std::process::id()));
        std::fs::write(&copy, in_chain_order(lines)).unwrap();
        let out = muster(
            &base,
            &["audit", "verify", copy.to_str().unwrap(), "--require-seal"],
        );
        assert!(out.contains("sealed: INC-SIEM-E2E"), "{name}: {out}");
        let _ = std::fs::remove_file(&copy);
    }
    let _ = std::fs::remove_file(&file);
    drop(server);
}

fn line() -> muster::audit::ExportLine {
    let text = r#"{"incident":"INC-1","stakeholder":"cio","route":"member","seq":0,"at":1733338552123,"kind":"CASCADE_STARTED","status":"active","in_flight":0,"prev":"0000000000000000000000000000000000000000000000000000000000000000","hash":"ab"}"#;
    serde_json::from_str(text).unwrap()
}

fn deliver(siem: Value) -> Result<(), muster::ports::ExportError> {
    let sinks = muster::adapters::siem::from_json(&siem.to_string()).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(sinks[0].deliver(&[line()]))
}

#[test]
fn a_receiver_that_refuses_or_is_down_has_not_taken_the_lines() {
    use muster::ports::ExportError::{Refused, Unavailable};
    let rsyslog = Rsyslog::start();
    // rsyslog requires a client certificate: without one, nothing is taken.
    assert!(deliver(json!({"syslog": rsyslog.settings(false)})).is_err());
    // A receiver whose certificate is not of the CA configured: refused.
    let mut wrong_ca = rsyslog.settings(true);
    wrong_ca["ca_file"] = json!(root().join("tests/fixtures/sns/cert.pem"));
    assert!(matches!(
        deliver(json!({"syslog": wrong_ca})),
        Err(Refused(_))
    ));
    // With its certificate, the line is taken.
    assert_eq!(deliver(json!({"syslog": rsyslog.settings(true)})), Ok(()));
    until("rsyslog to write the line", || {
        rsyslog.received().len() == 1
    });
    assert_eq!(rsyslog.received()[0].0, "CASCADE_STARTED");
    // Nobody listening: unavailable (tried again later).
    let mut down = rsyslog.settings(true);
    down["address"] = json!(format!("127.0.0.1:{}", free_port()));
    assert!(matches!(
        deliver(json!({"syslog": down})),
        Err(Unavailable(_))
    ));

    let (url, hec) = start_hec();
    let bad_token = json!({"hec": {"url": url, "token": "not-the-token"}});
    assert!(
        matches!(deliver(bad_token), Err(Refused(why)) if why.contains("Invalid token (code 4)"))
    );
    hec.busy.store(true, Ordering::SeqCst);
    let good = json!({"hec": {"url": url, "token": HEC_TOKEN}});
    assert!(
        matches!(deliver(good.clone()), Err(Unavailable(why)) if why.contains("Server is busy"))
    );
    hec.busy.store(false, Ordering::SeqCst);
    assert_eq!(deliver(good), Ok(()));
    assert_eq!(hec.events.lock().unwrap().len(), 1);
}

#[test]
fn the_fake_collector_reads_splunks_documented_batch_and_refuses_what_splunk_refuses() {
    let evs = events_of(&fixture("hec_batch.json")).unwrap();
    assert_eq!(evs.len(), 2);
    assert_eq!(events_of(""), Err("no_data"));
    assert_eq!(events_of("{\"time\": 1}"), Err("event_required"));
    assert_eq!(events_of("{\"event\": \"\"}"), Err("event_blank"));
    assert_eq!(events_of("{\"event\": 1} nope"), Err("invalid_data_format"));
}
