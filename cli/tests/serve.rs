//! End to end over HTTP against `muster serve`: the seed's two trigger
//! payloads, replay, 409, errors, status, the ack link, audit roles, close,
//! and signed requests.

mod browser;

use browser::{Browser, browse, collect};
use muster::api::sign::{SignedRequest, sign_request};
use muster::secret::Secret;
use serde_json::{Value, json};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

struct Server {
    child: Child,
    base: String,
    out: Arc<Mutex<String>>,
    err: Arc<Mutex<String>>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(secret: Option<&str>) -> Server {
    start_with(secret, &[])
}

fn start_with(secret: Option<&str>, extra: &[&str]) -> Server {
    // Email first: the ack link appears at once.
    start_policy(
        secret,
        "[channel_order]\nP1 = [\"email\", \"sms\", \"voice\"]\n",
        extra,
    )
}

fn start_policy(secret: Option<&str>, policy_text: &str, extra: &[&str]) -> Server {
    static STARTED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = STARTED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    // Started outside the source tree: the example directory is built in.
    let away = std::env::temp_dir().join(format!("muster-serve-cwd-{}", std::process::id()));
    std::fs::create_dir_all(&away).unwrap_or_else(|e| panic!("{e}"));
    let policy = std::env::temp_dir().join(format!(
        "muster-serve-policy-{}-{n}.toml",
        std::process::id()
    ));
    std::fs::write(&policy, policy_text).unwrap_or_else(|e| panic!("{e}"));
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_muster"));
    cmd.args([
        "serve",
        "--port",
        "0",
        "--policy",
        policy.to_str().unwrap_or_default(),
    ])
    .args(extra)
    .current_dir(&away)
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    match secret {
        Some(s) => cmd.env("MUSTER_SHARED_SECRET", s),
        None => cmd.env_remove("MUSTER_SHARED_SECRET"),
    };
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start muster serve: {e}"));
    let stdout = child.stdout.take().unwrap_or_else(|| panic!("no stdout"));
    let stderr = child.stderr.take().unwrap_or_else(|| panic!("no stderr"));
    let mut server = Server {
        child,
        base: String::new(),
        out: collect(stdout),
        err: collect(stderr),
    };
    server.base = server.wait_for(|o| {
        o.lines()
            .find_map(|l| l.strip_prefix("listening on ").map(str::to_string))
    });
    let out = server.out.lock().unwrap_or_else(|e| e.into_inner()).clone();
    if !extra.contains(&"--directory") {
        assert!(
            out.contains("directory: built-in example (ops-leadership.yaml"),
            "{out}"
        );
    }
    server
}

impl Server {
    /// Waits (bounded) until `find` sees what it looks for in the output.
    fn wait_for<T>(&self, find: impl Fn(&str) -> Option<T>) -> T {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(t) = find(&self.out.lock().unwrap_or_else(|e| e.into_inner())) {
                return t;
            }
            assert!(
                Instant::now() < deadline,
                "timed out; server output:\n{}",
                self.out.lock().unwrap_or_else(|e| e.into_inner())
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn seed_fields() -> Value {
    json!({
        "incidentId": "INC-2024-0892",
        "severity": "P1",
        "stakeholderGroupId": "ops-leadership",
        "messageTemplate": "System outage detected. Activate BCP protocol. Acknowledge by pressing 1.",
        "timestamp": "2024-05-20T14:32:00Z"
    })
}

/// `GET url` as JSON (`Null` if the body is not JSON).
async fn get_json(c: &reqwest::Client, url: &str) -> Value {
    c.get(url)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .json()
        .await
        .unwrap_or_default()
}

async fn post(c: &reqwest::Client, url: &str, body: &Value) -> reqwest::Response {
    c.post(url)
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

#[tokio::test]
async fn the_api_end_to_end() {
    let s = start(None);
    let c = reqwest::Client::new();
    let incidents = format!("{}/v1/incidents", s.base);

    let r = post(&c, &incidents, &json!({"trigger": seed_fields()})).await;
    assert_eq!(r.status(), 202);
    assert!(r.headers().get("idempotent-replayed").is_none());
    let first: Value = r.json().await.unwrap_or_default();
    assert_eq!(first["cascades"], 4);

    // The CXone envelope of the same trigger replays the first answer.
    let r = post(
        &c,
        &incidents,
        &json!({"eventType": "bcp.cascade.trigger", "payload": seed_fields()}),
    )
    .await;
    assert_eq!(r.status(), 202);
    assert_eq!(
        r.headers()
            .get("idempotent-replayed")
            .and_then(|v| v.to_str().ok()),
        Some("true")
    );
    assert_eq!(r.json::<Value>().await.unwrap_or_default(), first);

    let mut other = seed_fields();
    other["severity"] = json!("P2");
    let r = post(&c, &incidents, &other).await;
    assert_eq!(r.status(), 409);
    assert_eq!(
        r.headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("application/problem+json")
    );

    let r = c
        .post(&incidents)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.status(), 400);
    let r = c
        .post(&incidents)
        .header("content-type", "text/plain")
        .body("{}")
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.status(), 415);
    let r = post(
        &c,
        &incidents,
        &json!({"trigger": {"incidentId": "bad id", "severity": "P9"}}),
    )
    .await;
    assert_eq!(r.status(), 422);
    let problem: Value = r.json().await.unwrap_or_default();
    let fields: Vec<&str> = problem["errors"]
        .as_array()
        .map(|a| a.iter().filter_map(|e| e["field"].as_str()).collect())
        .unwrap_or_default();
    assert!(
        fields.contains(&"trigger.incidentId") && fields.contains(&"trigger.severity"),
        "{problem}"
    );
    let big = "x".repeat(70 * 1024);
    let r = c
        .post(&incidents)
        .header("content-type", "application/json")
        .body(big)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.status(), 413);
    let r = c
        .get(format!("{incidents}/INC-NOPE"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.status(), 404);

    // The email's link opens a page that changes nothing (mail scanners
    // fetch every link); its button's POST acknowledges.
    let link = s.wait_for(|o| {
        o.lines()
            .skip_while(|l| !l.contains("email to cio "))
            .find_map(|l| l.trim().strip_prefix("Acknowledge: ").map(str::to_string))
    });
    for _ in 0..3 {
        let r = c.get(&link).send().await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(r.status(), 200);
        let page = r.text().await.unwrap_or_default();
        assert!(page.contains("<form method=\"post\""), "{page}");
    }
    let r = c.head(&link).send().await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.status(), 200);
    let status: Value = get_json(&c, &format!("{incidents}/INC-2024-0892")).await;
    assert_eq!(
        status["counts"]["acknowledged"], 0,
        "a GET acknowledges nothing: {status}"
    );
    let r = c.post(&link).send().await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.status(), 200);
    assert!(
        r.text()
            .await
            .unwrap_or_default()
            .contains("has been recorded")
    );
    let r = c.post(&link).send().await.unwrap_or_else(|e| panic!("{e}"));
    assert!(
        r.text()
            .await
            .unwrap_or_default()
            .contains("Already recorded")
    );
    let r = c
        .get(format!("{}/v1/ack/forged.token", s.base))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.status(), 404);

    let status: Value = get_json(&c, &format!("{incidents}/INC-2024-0892")).await;
    assert_eq!(status["counts"]["acknowledged"], 1, "{status}");
    let shown = status.to_string();
    assert!(
        !shown.contains("cio@example.com") && !shown.contains("+442079460001"),
        "contacts are masked: {shown}"
    );

    let audit = format!("{incidents}/INC-2024-0892/audit");
    assert_eq!(
        c.get(&audit)
            .send()
            .await
            .map(|r| r.status().as_u16())
            .unwrap_or(0),
        403
    );
    assert_eq!(
        c.get(&audit)
            .header("x-muster-roles", "Responder")
            .send()
            .await
            .map(|r| r.status().as_u16())
            .unwrap_or(0),
        403
    );
    let r = c
        .get(&audit)
        .header("x-muster-roles", "ComplianceOfficer")
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.status(), 200);
    let trail: Value = r.json().await.unwrap_or_default();
    assert!(
        trail["entries"]
            .as_array()
            .is_some_and(|e| e.iter().any(|x| x["kind"] == "ACKNOWLEDGED"))
    );
    let sent_to_cio = |t: &Value| {
        t["entries"].as_array().and_then(|e| {
            e.iter()
                .find(|x| x["kind"] == "SEND_ACCEPTED" && x["stakeholder"] == "cio")
                .map(|x| x["address"].clone())
        })
    };
    assert_eq!(
        sent_to_cio(&trail),
        Some(json!("cio@example.com")),
        "the compliance officer may read addresses"
    );
    let r = c
        .get(&audit)
        .header("x-muster-roles", "BCPAdministrator")
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let masked: Value = r.json().await.unwrap_or_default();
    assert_eq!(
        sent_to_cio(&masked),
        Some(json!("c•••@example.com")),
        "others see them masked"
    );

    let r = post(&c, &format!("{incidents}/INC-2024-0892/close"), &json!({})).await;
    assert_eq!(r.status(), 202);
    let closing = r.json::<Value>().await.unwrap_or_default();
    assert!(
        closing["status"] == "closing" || closing["status"] == "closed",
        "{closing}"
    );
    // The server's jobs cancel the cascades: wait, boundedly, for closed.
    let mut status = Value::Null;
    for _ in 0..200 {
        status = get_json(&c, &format!("{incidents}/INC-2024-0892")).await;
        if status["incident"]["status"] == "closed" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    assert_eq!(status["incident"]["status"], "closed", "{status}");
    assert_eq!(
        (
            status["counts"]["acknowledged"].as_u64(),
            status["counts"]["cancelled"].as_u64()
        ),
        (Some(1), Some(3))
    );
}

/// What a client signs for `POST /v1/incidents`.
fn signed(timestamp: u64, body: &[u8]) -> SignedRequest<'_> {
    SignedRequest {
        method: "POST",
        path: "/v1/incidents",
        query: None,
        timestamp,
        body,
    }
}

#[tokio::test]
async fn with_a_shared_secret_requests_must_be_signed() {
    let secret = "serve-test-secret";
    let s = start(Some(secret));
    let c = reqwest::Client::new();
    let url = format!("{}/v1/incidents", s.base);
    let body = json!({"trigger": seed_fields()}).to_string();
    let r = c
        .post(&url)
        .header("content-type", "application/json")
        .body(body.clone())
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.status(), 401);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let stale = sign_request(&Secret::new(secret), &signed(now - 301, body.as_bytes()));
    let r = c
        .post(&url)
        .header("content-type", "application/json")
        .header("x-muster-timestamp", (now - 301).to_string())
        .header("x-muster-signature", stale)
        .body(body.clone())
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.status(), 401, "replays older than 300 s are refused");
    let sig = sign_request(&Secret::new(secret), &signed(now, body.as_bytes()));
    let r = c
        .post(&url)
        .header("content-type", "application/json")
        .header("x-muster-timestamp", now.to_string())
        .header("x-muster-signature", sig)
        .body(body)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.status(), 202);
    assert!(
        !s.out
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(secret),
        "the secret is never printed"
    );
}

#[tokio::test]
async fn slow_clients_are_cut_off_and_idle_connections_cannot_starve_the_server() {
    use std::io::{Read, Write};
    let s = start_with(None, &["--header-timeout", "1", "--max-connections", "8"]);
    let addr = s.base.trim_start_matches("http://").to_string();
    // Forty clients that send half a request's headers and then nothing.
    let mut idle = Vec::new();
    for _ in 0..40 {
        let mut c = std::net::TcpStream::connect(&addr).unwrap_or_else(|e| panic!("{e}"));
        c.write_all(b"GET /v1/incidents/x HTTP/1.1\r\nHost: a\r\n")
            .unwrap_or_else(|e| panic!("{e}"));
        idle.push(c);
    }
    // The server still answers a real client (after the idle ones time out,
    // eight at a time), well before the client gives up.
    let c = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    let r = c
        .get(format!("{}/v1/incidents/INC-NONE", s.base))
        .send()
        .await
        .unwrap_or_else(|e| panic!("the server stopped answering: {e}"));
    assert_eq!(r.status(), 404);
    // And the first idle client was cut off: its read ends (EOF), not hangs.
    let first = &mut idle[0];
    first
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap_or_else(|e| panic!("{e}"));
    let mut buf = [0u8; 64];
    let n = first
        .read(&mut buf)
        .unwrap_or_else(|e| panic!("not closed: {e}"));
    assert_eq!(n, 0, "closed without an answer");
}

#[tokio::test]
async fn serve_logs_one_json_line_per_request_and_no_contact_details() {
    let s = start_with(None, &["--log-format", "json"]);
    let c = reqwest::Client::new();
    let incidents = format!("{}/v1/incidents", s.base);
    assert_eq!(
        post(&c, &incidents, &json!({"trigger": seed_fields()}))
            .await
            .status(),
        202
    );
    for path in ["/v1/incidents/INC-2024-0892", "/nope"] {
        c.get(format!("{}{path}", s.base))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    }
    let lines = |err: &str| -> Vec<Value> {
        err.lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|v| v["fields"]["message"] == "request")
            .collect()
    };
    let wanted = |v: &Vec<Value>| {
        let has = |route: &str, status: u64| {
            v.iter()
                .any(|l| l["fields"]["route"] == route && l["fields"]["status"] == status)
        };
        has("/v1/incidents", 202) && has("/v1/incidents/{id}", 200) && has("(none)", 404)
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let err = s.err.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let reqs = lines(&err);
        if wanted(&reqs) {
            for l in &reqs {
                assert!(l["fields"]["latency_ms"].is_number(), "{l}");
            }
            for contact in ["cio@example.com", "+442079460001", "INC-2024-0892"] {
                assert!(
                    !reqs.iter().any(|l| l.to_string().contains(contact)),
                    "request lines name routes, not ids or contacts: {contact}"
                );
            }
            assert!(
                !err.contains("cio@example.com") && !err.contains("+442079460001"),
                "no contact details anywhere in the log"
            );
            break;
        }
        assert!(Instant::now() < deadline, "request lines missing:\n{err}");
        tokio::task::yield_now().await;
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `muster incidents ...` against the server, with the shared secret from
/// the environment; (exit code, stdout, stderr).
fn client(s: &Server, secret: &str, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_muster"))
        .arg("incidents")
        .args(["--api", &s.base])
        .args(args)
        .env("MUSTER_API_SECRET", secret)
        .env_remove("MUSTER_API_TOKEN")
        .env_remove("MUSTER_API_URL")
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn the_incidents_client_triggers_reads_closes_and_watches_a_signed_api() {
    let secret = "cli-client-secret";
    let s = start(Some(secret));
    let (code, out, err) = client(
        &s,
        secret,
        &[
            "trigger",
            "--group",
            "ops-leadership",
            "--severity",
            "P1",
            "--message",
            "Data centre power lost.",
            "--id",
            "INC-CLI-1",
        ],
    );
    assert_eq!(code, 0, "{out}{err}");
    let answer: Value = serde_json::from_str(&out).unwrap_or_default();
    assert_eq!(answer["incidentId"], "INC-CLI-1", "{out}");

    let (code, out, err) = client(&s, secret, &["status", "INC-CLI-1"]);
    assert_eq!(code, 0, "{out}{err}");
    let status: Value = serde_json::from_str(&out).unwrap_or_default();
    assert_eq!(status["incident"]["status"], "open", "{out}");
    assert!(status["progress"]["members"].is_object(), "{out}");

    let (code, out, err) = client(&s, secret, &["close", "INC-CLI-1"]);
    assert_eq!(code, 0, "{out}{err}");
    let closed: Value = serde_json::from_str(&out).unwrap_or_default();
    assert!(
        closed["status"] == "closing" || closed["status"] == "closed",
        "{out}"
    );
    // Watch draws the progress and exits once the incident has ended.
    let (code, out, err) = client(
        &s,
        secret,
        &["watch", "INC-CLI-1", "--interval", "1", "--timeout", "60"],
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("INC-CLI-1 closed"), "{out}");
    assert!(out.contains("acknowledged  ["), "{out}");
    assert!(out.trim_end().ends_with("ended"), "{out}");

    // Refusals say what the API said, and the client exits 1.
    let (code, _, err) = client(&s, "not-the-secret", &["status", "INC-CLI-1"]);
    assert_eq!(code, 1);
    assert!(err.contains("401"), "{err}");
    let (code, _, err) = client(
        &s,
        secret,
        &[
            "trigger",
            "--group",
            "ops-leadership",
            "--severity",
            "P9",
            "--message",
            "x",
        ],
    );
    assert_eq!(code, 1);
    assert!(
        err.contains("422") && err.contains("trigger.severity"),
        "{err}"
    );
    let (code, _, err) = client(&s, secret, &["status", "no such/id"]);
    assert_eq!(code, 1);
    assert!(err.contains("incident id"), "{err}");
}

#[test]
fn an_exported_audit_trail_verifies_offline_with_its_seal() {
    let s = start(None);
    let run = |args: &[&str], roles: Option<&str>| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_muster"));
        cmd.args(args)
            .env_remove("MUSTER_API_SECRET")
            .env_remove("MUSTER_API_TOKEN")
            .env("MUSTER_API_URL", &s.base);
        match roles {
            Some(r) => cmd.env("MUSTER_API_ROLES", r),
            None => cmd.env_remove("MUSTER_API_ROLES"),
        };
        let out = cmd.output().unwrap_or_else(|e| panic!("{e}"));
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr),
        )
    };
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
        "INC-EXP-1",
    ];
    assert_eq!(run(&trigger, None).0, 0);
    assert_eq!(run(&["incidents", "close", "INC-EXP-1"], None).0, 0);
    let watch = [
        "incidents",
        "watch",
        "INC-EXP-1",
        "--interval",
        "1",
        "--timeout",
        "60",
    ];
    let (code, out) = run(&watch, None);
    assert_eq!(code, 0, "{out}");
    let file = std::env::temp_dir().join(format!("muster-export-{}.jsonl", std::process::id()));
    let path = file.to_str().unwrap_or_default();
    let export = ["incidents", "audit", "INC-EXP-1", "--out", path];
    // Without an audit role: refused.
    let (code, out) = run(&export, None);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("403"), "{out}");
    let (code, out) = run(&export, Some("ComplianceOfficer"));
    assert_eq!(code, 0, "{out}");
    let text = std::fs::read_to_string(&file).unwrap_or_default();
    assert!(
        text.lines()
            .last()
            .is_some_and(|l| l.starts_with("{\"seal\"")),
        "{text}"
    );
    assert!(!text.contains("\"address\""), "no addresses in the export");
    let (code, out) = run(&["audit", "verify", path, "--require-seal"], None);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("sealed: INC-EXP-1"), "{out}");
    let _ = std::fs::remove_file(&file);
}

/// Where the board tests write their screenshots (test artifacts).
/// The number a board cell with this id shows.
fn cell(dom: &str, id: &str) -> Option<u64> {
    let at = dom.find(&format!("id=\"{id}\">"))? + id.len() + 6;
    dom[at..].split('<').next()?.trim().parse().ok()
}

#[tokio::test]
async fn the_board_shows_an_incident_its_acknowledgements_and_its_close_in_a_real_browser() {
    let s = start(None);
    let c = reqwest::Client::new();
    let r = post(
        &c,
        &format!("{}/v1/incidents", s.base),
        &json!({"trigger": seed_fields()}),
    )
    .await;
    assert_eq!(r.status(), 202);
    // The list shows it.
    let dom = browse(&format!("{}/", s.base), "1-incident-list");
    assert!(dom.contains("href=\"#/incidents/INC-2024-0892\""), "{dom}");
    assert!(dom.contains("status-open"), "{dom}");
    // Its page counts nobody acknowledged yet, and lists who is waiting.
    let page = format!("{}/#/incidents/INC-2024-0892", s.base);
    let dom = browse(&page, "2-incident-open");
    assert_eq!(cell(&dom, "acknowledged"), Some(0), "{dom}");
    assert!(dom.contains("Chief Information Officer"), "{dom}");
    assert!(!dom.contains("cio@example.com"), "contacts are masked");
    // Someone acknowledges (the email link's button): the count changes.
    let link = s.wait_for(|o| {
        o.lines()
            .find_map(|l| l.trim().strip_prefix("Acknowledge: ").map(str::to_string))
    });
    assert_eq!(
        c.post(&link).send().await.map(|r| r.status().as_u16()).ok(),
        Some(200)
    );
    let dom = browse(&page, "3-incident-acknowledged");
    assert_eq!(cell(&dom, "acknowledged"), Some(1), "{dom}");
    // Closed: the page says so and counts the cancelled.
    let r = post(
        &c,
        &format!("{}/v1/incidents/INC-2024-0892/close", s.base),
        &json!({}),
    )
    .await;
    assert_eq!(r.status(), 202);
    let dom = browse(&page, "4-incident-closed");
    assert!(dom.contains("status-closed"), "{dom}");
    assert_eq!(cell(&dom, "cancelled"), Some(3), "{dom}");
    assert!(!dom.contains("id=\"close\""), "no close button once closed");
}

/// A quorum in `muster serve`: the status view and the board show its
/// progress; the first acknowledgement meets it, the moment is recorded,
/// and (stopOnQuorum) everyone still being called is stood down.
#[tokio::test]
async fn a_quorum_is_shown_reached_and_stops_the_rest_in_serve_and_on_the_board() {
    let s = start(None);
    let c = reqwest::Client::new();
    let mut fields = seed_fields();
    fields["quorum"] = json!({"count": 1});
    fields["stopOnQuorum"] = json!(true);
    let r = post(
        &c,
        &format!("{}/v1/incidents", s.base),
        &json!({ "trigger": fields }),
    )
    .await;
    assert_eq!(r.status(), 202);
    let status = format!("{}/v1/incidents/INC-2024-0892", s.base);
    let v = get_json(&c, &status).await;
    assert_eq!(v["quorum"]["met"], false, "{v}");
    let page = format!("{}/#/incidents/INC-2024-0892", s.base);
    let dom = browse(&page, "quorum-1-waiting");
    assert!(dom.contains("Quorum not reached yet"), "{dom}");
    let link = s.wait_for(|o| {
        o.lines()
            .find_map(|l| l.trim().strip_prefix("Acknowledge: ").map(str::to_string))
    });
    assert_eq!(
        c.post(&link).send().await.map(|r| r.status().as_u16()).ok(),
        Some(200)
    );
    let v = get_json(&c, &status).await;
    assert_eq!(v["quorum"]["met"], true, "{v}");
    assert!(v["quorum"]["reachedAt"].as_u64().is_some(), "{v}");
    // The three others are stood down (the stop runs in the background).
    let deadline = Instant::now() + Duration::from_secs(20);
    while get_json(&c, &status).await["progress"]["members"]["cancelled"] != 3 {
        assert!(Instant::now() < deadline, "{}", get_json(&c, &status).await);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let dom = browse(&page, "quorum-2-reached");
    assert!(dom.contains("id=\"quorum-reached\""), "{dom}");
    assert_eq!(cell(&dom, "cancelled"), Some(3), "{dom}");
    // Each stand-down is audited with its reason.
    let trail: Value = c
        .get(format!("{}/v1/incidents/INC-2024-0892/audit", s.base))
        .header("x-muster-roles", "ComplianceOfficer")
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .json()
        .await
        .unwrap_or_default();
    let stood_down = trail["entries"].as_array().map_or(0, |e| {
        e.iter()
            .filter(|x| {
                x["kind"] == "CANCELLED" && x["note"].as_str().is_some_and(|n| n.contains("quorum"))
            })
            .count()
    });
    assert_eq!(stood_down, 3, "{trail}");
}

/// Updates and the all-clear in `muster serve`: the update goes to those
/// who acknowledged, the all-clear with the close to everyone reached, each
/// printed by the console carriers and audited, and the exported trail,
/// grown after the close, still verifies under its latest seal.
#[tokio::test]
async fn updates_and_the_all_clear_reach_people_and_the_trail_stays_sealed() {
    let s = start(None);
    let c = reqwest::Client::new();
    let r = post(
        &c,
        &format!("{}/v1/incidents", s.base),
        &json!({"trigger": seed_fields()}),
    )
    .await;
    assert_eq!(r.status(), 202);
    let link = s.wait_for(|o| {
        o.lines()
            .find_map(|l| l.trim().strip_prefix("Acknowledge: ").map(str::to_string))
    });
    assert_eq!(
        c.post(&link).send().await.map(|r| r.status().as_u16()).ok(),
        Some(200)
    );
    let base = format!("{}/v1/incidents/INC-2024-0892", s.base);
    let body =
        json!({"message": "Failover to the second site is under way.", "audience": "acknowledged"});
    let r = post(&c, &format!("{base}/updates"), &body).await;
    assert_eq!(r.status(), 202);
    s.wait_for(|o| {
        o.contains("Update 1 on INC-2024-0892: Failover to the second site is under way.")
            .then_some(())
    });
    let r = post(
        &c,
        &format!("{base}/close"),
        &json!({"allClear": "Service restored."}),
    )
    .await;
    assert_eq!(r.status(), 202);
    s.wait_for(|o| {
        o.contains("All clear for INC-2024-0892: Service restored.")
            .then_some(())
    });
    // The export verifies under its latest seal once the all-clear's
    // entries are sealed (within the reseal delay).
    let file = std::env::temp_dir().join(format!("muster-all-clear-{}.jsonl", std::process::id()));
    let path = file.to_str().unwrap_or_default().to_string();
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let out = Command::new(env!("CARGO_BIN_EXE_muster"))
            .args(["incidents", "audit", "INC-2024-0892", "--out", &path])
            .env_remove("MUSTER_API_SECRET")
            .env_remove("MUSTER_API_TOKEN")
            .env("MUSTER_API_URL", &s.base)
            .env("MUSTER_API_ROLES", "ComplianceOfficer")
            .output()
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = std::fs::read_to_string(&file).unwrap_or_default();
        let verify = Command::new(env!("CARGO_BIN_EXE_muster"))
            .args(["audit", "verify", &path, "--require-seal"])
            .output()
            .unwrap_or_else(|e| panic!("{e}"));
        let all_clear = text
            .lines()
            .filter(|l| l.contains("\"UPDATE_SENT\"") && l.contains("the all-clear"))
            .count();
        if verify.status.success() && all_clear > 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not sealed: {}",
            String::from_utf8_lossy(&verify.stdout)
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let _ = std::fs::remove_file(&file);
}

/// Languages in `muster serve`: the example directory's CIO has locale
/// en-GB, so of the incident's messages they are sent the en-GB one, the
/// others the default; the audit says which.
#[tokio::test]
async fn each_person_is_sent_the_message_of_their_locale_in_serve() {
    let s = start(None);
    let c = reqwest::Client::new();
    let mut fields = seed_fields();
    fields["messageTemplates"] = json!({"en-GB": "Outage: see the UK BCP runbook, section 4."});
    let r = post(
        &c,
        &format!("{}/v1/incidents", s.base),
        &json!({ "trigger": fields }),
    )
    .await;
    assert_eq!(r.status(), 202);
    s.wait_for(|o| {
        o.contains("Outage: see the UK BCP runbook, section 4.")
            .then_some(())
    });
    s.wait_for(|o| {
        o.contains("email to coo")
            .then_some(())
            .filter(|_| o.matches("System outage detected.").count() >= 4)
    });
    let trail: Value = c
        .get(format!("{}/v1/incidents/INC-2024-0892/audit", s.base))
        .header("x-muster-roles", "ComplianceOfficer")
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .json()
        .await
        .unwrap_or_default();
    let started = |who: &str| {
        trail["entries"].as_array().and_then(|e| {
            e.iter()
                .find(|x| x["stakeholder"] == who && x["kind"] == "CASCADE_STARTED")
                .map(|x| x["locale"].clone())
        })
    };
    assert_eq!(started("cio"), Some(json!("en-GB")), "{trail}");
    assert_eq!(started("coo"), Some(Value::Null), "no locale: the default");
}

/// Quiet hours in `muster serve`: a person whose window (in their time
/// zone) holds now is not sent a P3 (the status says until when), while
/// everyone else is; a P1 goes to them at once.
#[tokio::test]
async fn quiet_hours_hold_a_p3_but_not_a_p1_in_serve() {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default();
    // A window of UTC wall time from an hour ago to an hour from now.
    let hhmm = |secs: u64| format!("{:02}:{:02}", (secs / 3600) % 24, (secs / 60) % 60);
    let window = format!("{}-{}", hhmm(now - 3600), hhmm(now + 3600));
    let yaml = format!(
        "stakeholders:\n  - {{ id: night, name: Night Owl, email: night@example.com, time_zone: Etc/UTC, quiet_hours: \"{window}\" }}\n  - {{ id: day, name: Day Lark, email: day@example.com }}\n  - {{ id: boss, name: Boss, email: boss@example.com }}\ngroups:\n  - {{ id: team, name: Team, members: [night, day], on_call_manager: boss }}\n"
    );
    let dir = std::env::temp_dir().join(format!("muster-serve-quiet-{}.yaml", std::process::id()));
    std::fs::write(&dir, yaml).unwrap_or_else(|e| panic!("{e}"));
    let s = start_policy(None, "", &["--directory", dir.to_str().unwrap_or_default()]);
    let c = reqwest::Client::new();
    let trigger = |id: &str, severity: &str| {
        json!({"trigger": {"incidentId": id, "severity": severity, "stakeholderGroupId": "team",
            "messageTemplate": format!("{severity} maintenance notice.")}})
    };
    let r = post(
        &c,
        &format!("{}/v1/incidents", s.base),
        &trigger("INC-QUIET-3", "P3"),
    )
    .await;
    assert_eq!(r.status(), 202);
    s.wait_for(|o| o.contains("email to day").then_some(()));
    let view = get_json(&c, &format!("{}/v1/incidents/INC-QUIET-3", s.base)).await;
    let night = view["stakeholders"]
        .as_array()
        .and_then(|p| p.iter().find(|x| x["stakeholder"] == "night").cloned())
        .unwrap_or_default();
    let until = night["quietUntil"].as_u64().unwrap_or_default() / 1000;
    assert!(until > now && until <= now + 3660, "{night}");
    let r = post(
        &c,
        &format!("{}/v1/incidents", s.base),
        &trigger("INC-QUIET-1", "P1"),
    )
    .await;
    assert_eq!(r.status(), 202);
    s.wait_for(|o| o.contains("email to night").then_some(()));
    let out = s.out.lock().map(|o| o.clone()).unwrap_or_default();
    assert_eq!(
        out.matches("email to night").count(),
        1,
        "only the P1: {out}"
    );
    let _ = std::fs::remove_file(&dir);
}

/// A conference bridge in `muster serve`: the console carriers show it at
/// the end of every written message.
#[tokio::test]
async fn every_written_message_names_the_conference_bridge_in_serve() {
    let s = start(None);
    let c = reqwest::Client::new();
    let mut fields = seed_fields();
    fields["bridge"] =
        json!({"phone": "+44 20 7946 0000", "pin": "4821", "url": "https://meet.example.com/bcp"});
    let r = post(
        &c,
        &format!("{}/v1/incidents", s.base),
        &json!({ "trigger": fields }),
    )
    .await;
    assert_eq!(r.status(), 202);
    let line = "Conference bridge: +442079460000, PIN 4821, https://meet.example.com/bcp";
    // The four members' first messages (email for each of them here).
    s.wait_for(|o| (o.matches(line).count() >= 4).then_some(()));
    let bad = json!({"trigger": {"incidentId": "INC-BAD-BRIDGE", "severity": "P1",
        "stakeholderGroupId": "ops-leadership", "messageTemplate": "x", "bridge": {"pin": "1"}}});
    let r = post(&c, &format!("{}/v1/incidents", s.base), &bad).await;
    assert_eq!(r.status(), 422);
}

#[tokio::test]
async fn the_board_is_one_self_contained_page() {
    let s = start(None);
    let c = reqwest::Client::new();
    for (path, kind) in [
        ("/", "text/html"),
        ("/board.js", "text/javascript"),
        ("/board.css", "text/css"),
    ] {
        let r = c
            .get(format!("{}{path}", s.base))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(r.status(), 200, "{path}");
        let h = r.headers().clone();
        let ct = h
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        assert!(ct.starts_with(kind), "{path}: {ct}");
        let csp = h
            .get("content-security-policy")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        assert!(
            csp.contains("default-src 'none'") && csp.contains("connect-src 'self'"),
            "{csp}"
        );
        let body = r.text().await.unwrap_or_default();
        // Works offline: nothing is fetched from anywhere else.
        assert!(
            !body.contains("http://") && !body.contains("https://"),
            "{path} names another origin"
        );
    }
}

#[test]
fn an_operator_closes_an_incident_from_the_board_after_confirming_it() {
    let s = start(None);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    let c = reqwest::Client::new();
    let r = rt.block_on(post(
        &c,
        &format!("{}/v1/incidents", s.base),
        &json!({"trigger": seed_fields()}),
    ));
    assert_eq!(r.status(), 202);
    let current = || -> Value {
        rt.block_on(async {
            c.get(format!("{}/v1/incidents/INC-2024-0892", s.base))
                .send()
                .await?
                .json()
                .await
        })
        .unwrap_or_default()
    };
    let mut b = Browser::open(&format!("{}/#/incidents/INC-2024-0892", s.base));
    b.until("!!document.getElementById('close')");
    b.eval("document.getElementById('close').click()");
    b.until("document.getElementById('confirm-close').open");
    b.screenshot("5-close-confirmation");
    // The wrong id is refused: the dialog stays, saying why.
    b.eval("document.getElementById('confirm-id').value = 'INC-OTHER'; document.getElementById('confirm-go').click()");
    b.until("document.getElementById('confirm-close').open && document.getElementById('confirm-error').textContent.includes('not this incident')");
    let status: Value = current();
    assert_eq!(status["incident"]["status"], "open", "nothing closed yet");
    // Confirmed: closed, and the page shows it.
    b.eval("document.getElementById('confirm-id').value = 'INC-2024-0892'; document.getElementById('confirm-go').click()");
    b.until("!!document.querySelector('h1 .status-closed')");
    b.screenshot("6-closed-from-the-board");
    let status: Value = current();
    assert_eq!(status["incident"]["status"], "closed");
    assert_eq!(status["counts"]["cancelled"], 4, "{status}");
}

#[test]
fn the_drill_report_page_renders_its_plots_in_a_real_browser() {
    let out = std::env::temp_dir().join(format!("muster-drill-{}.html", std::process::id()));
    let o = Command::new(env!("CARGO_BIN_EXE_muster"))
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
        .args(["drill", "examples/drills/seed-p1-outage.toml", "--html"])
        .arg(&out)
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let mut b = Browser::open(&format!("file://{}", out.display()));
    // Laid out: every plot has a size, and the page names no other origin.
    // (The new tab starts at about:blank, complete at once.)
    b.until("location.protocol === 'file:' && document.readyState === 'complete'");
    let plots = b.eval(
        "Array.from(document.querySelectorAll('svg')).filter(s => s.getBoundingClientRect().width > 100).length",
    );
    assert!(plots.as_u64().unwrap_or(0) >= 2, "{plots}");
    assert_eq!(
        b.eval("performance.getEntriesByType('resource').length"),
        json!(0),
        "the report loads nothing"
    );
    b.screenshot("7-drill-report");
    let _ = std::fs::remove_file(&out);
}

/// One person per channel, each reachable on it alone, and their manager.
const ONE_PER_CHANNEL: &str = r#"
stakeholders:
  - { id: vera, name: Vera Voice, tier: 1, phone: "+44 20 7946 0301", channels: [voice], manager: max }
  - { id: sam, name: Sam Sms, tier: 1, phone: "+44 20 7946 0302", channels: [sms], manager: max }
  - { id: emma, name: Emma Email, tier: 2, email: emma@example.com, manager: max }
  - { id: pat, name: Pat Push, tier: 3, push: device-pat, manager: max }
  - { id: max, name: Max Manager, tier: 1, phone: "+44 20 7946 0399", email: max@example.com }
groups:
  - { id: local, name: Local answers, members: [vera, sam, emma, pat], on_call_manager: max, escalation_channels: [voice, sms] }
"#;

fn one_per_channel() -> Server {
    let dir = std::env::temp_dir().join(format!("muster-serve-local-{}.yaml", std::process::id()));
    std::fs::write(&dir, ONE_PER_CHANNEL).unwrap_or_else(|e| panic!("{e}"));
    // The default P1 order, push included.
    start_policy(None, "", &["--directory", dir.to_str().unwrap_or_default()])
}

/// The simulated phones' messages, waiting (bounded) until `n` are kept.
async fn messages(c: &reqwest::Client, s: &Server, n: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let v = get_json(c, &format!("{}/local/messages", s.base)).await;
        let list = v["messages"].as_array().cloned().unwrap_or_default();
        if list.len() >= n {
            return list;
        }
        assert!(
            Instant::now() < deadline,
            "only {} messages: {v}",
            list.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn every_channel_is_answered_locally_through_its_carriers_path() {
    let s = one_per_channel();
    let c = reqwest::Client::new();
    let mut trigger = seed_fields();
    trigger["stakeholderGroupId"] = json!("local");
    let r = post(
        &c,
        &format!("{}/v1/incidents", s.base),
        &json!({"trigger": trigger}),
    )
    .await;
    assert_eq!(r.status(), 202);
    let list = messages(&c, &s, 4).await;
    let of = |ch: &str| {
        list.iter()
            .find(|m| m["channel"] == ch)
            .cloned()
            .unwrap_or_else(|| panic!("no {ch} message: {list:?}"))
    };
    let email = of("email")["body"].as_str().unwrap_or_default().to_string();
    assert!(
        email.contains("/v1/ack/") && !email.contains("reply ACK"),
        "someone with no phone is not asked to text: {email}"
    );
    for m in &list {
        let to = m["to"].as_str().unwrap_or_default();
        assert!(
            !to.contains("7946 030") && !to.contains("emma@"),
            "masked: {to}"
        );
    }
    let answer = |m: &Value, body: Value| {
        let url = format!("{}/local/messages/{}/answer", s.base, m["n"]);
        let c = c.clone();
        async move {
            let r = post(&c, &url, &body).await;
            (
                r.status().as_u16(),
                r.json::<Value>().await.unwrap_or_default(),
            )
        }
    };
    // Bad answers are refused, naming what is wrong, and change nothing.
    let voice = of("voice");
    for (body, field) in [(json!({"digits": "12"}), "digits"), (json!({}), "digits")] {
        let (status, v) = answer(&voice, body).await;
        assert_eq!(
            (status, v["errors"][0]["field"].as_str()),
            (422, Some(field)),
            "{v}"
        );
    }
    let (status, _) = answer(&json!({"n": 99_999}), json!({"digits": "1"})).await;
    assert_eq!(status, 404);
    let sms = of("sms");
    let (status, v) = answer(&sms, json!({"text": ""})).await;
    assert_eq!(
        (status, v["errors"][0]["field"].as_str()),
        (422, Some("text")),
        "{v}"
    );
    let status_now =
        || async { get_json(&c, &format!("{}/v1/incidents/INC-2024-0892", s.base)).await };
    assert_eq!(status_now().await["progress"]["members"]["acknowledged"], 0);

    // A key that is not 1 is not an acknowledgement: the call says so.
    let (status, v) = answer(&voice, json!({"digits": "2"})).await;
    assert_eq!(status, 200, "{v}");
    assert!(format!("{v}").contains("not recorded"), "{v}");
    assert_eq!(status_now().await["progress"]["members"]["acknowledged"], 0);
    // Each person answers on the channel that reached them.
    let (status, v) = answer(&voice, json!({"digits": "1"})).await;
    assert_eq!(status, 200, "{v}");
    assert!(format!("{v}").contains("has been recorded"), "{v}");
    let code = sms["body"]
        .as_str()
        .and_then(|b| b.split("Reply ").nth(1))
        .and_then(|r| r.split(" to acknowledge").next())
        .unwrap_or_else(|| panic!("the SMS asks for a reply: {sms}"))
        .to_string();
    let (status, v) = answer(&sms, json!({"text": code})).await;
    assert_eq!(status, 200, "{v}");
    for ch in ["email", "push"] {
        let (status, v) = answer(&of(ch), json!({"action": "acknowledge"})).await;
        assert_eq!(
            (status, v["acknowledged"].as_bool()),
            (200, Some(true)),
            "{ch}: {v}"
        );
    }
    // Each counted on its own channel, as the carriers' events would be.
    let v = status_now().await;
    assert_eq!(v["progress"]["members"]["acknowledged"], 4, "{v}");
    for ch in ["voice", "sms", "email", "push"] {
        assert_eq!(
            v["progress"]["byChannel"][ch]["acknowledged"], 1,
            "{ch}: {v}"
        );
    }
    let audit = c
        .get(format!("{}/v1/incidents/INC-2024-0892/audit", s.base))
        .header("x-muster-roles", "ComplianceOfficer")
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .json::<Value>()
        .await
        .unwrap_or_default();
    let acks: Vec<&Value> = audit["entries"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["kind"] == "ACKNOWLEDGED")
        .collect();
    assert_eq!(acks.len(), 4, "{audit}");
    // The messages remember their answers.
    let list = messages(&c, &s, 4).await;
    assert!(
        list.iter()
            .any(|m| m["answers"] == json!(["pressed 2", "pressed 1"])),
        "{list:?}"
    );
}

#[test]
fn a_person_presses_1_on_the_boards_phones_page() {
    let s = one_per_channel();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    let c = reqwest::Client::new();
    let mut trigger = seed_fields();
    trigger["stakeholderGroupId"] = json!("local");
    let r = rt.block_on(post(
        &c,
        &format!("{}/v1/incidents", s.base),
        &json!({"trigger": trigger}),
    ));
    assert_eq!(r.status(), 202);
    rt.block_on(messages(&c, &s, 4));
    let mut b = Browser::open(&format!("{}/#/phones", s.base));
    b.until("!!document.querySelector('li[data-stakeholder=\"vera\"] button[data-digits=\"1\"]')");
    b.screenshot("8-phones");
    b.eval(
        "document.querySelector('li[data-stakeholder=\"vera\"] button[data-digits=\"1\"]').click()",
    );
    b.until("document.querySelector('.answered') && document.querySelector('.answered').textContent.includes('pressed 1')");
    b.screenshot("9-phones-answered");
    let v: Value = rt.block_on(get_json(
        &c,
        &format!("{}/v1/incidents/INC-2024-0892", s.base),
    ));
    assert_eq!(
        v["progress"]["byChannel"]["voice"]["acknowledged"], 1,
        "{v}"
    );
}

/// "Are you safe?" under `muster serve`: the console call offers the
/// incident's answers, a 2 ("I need help") ends that person's cascade as
/// RESPONDED and the on-call manager is told at once, with the answer; an
/// SMS reply in words and an email button each record their answer.
#[tokio::test]
async fn serve_takes_the_incident_s_own_answers_on_every_channel() {
    let s = one_per_channel();
    let c = reqwest::Client::new();
    let mut trigger = seed_fields();
    trigger["stakeholderGroupId"] = json!("local");
    trigger["messageTemplate"] = json!("Fire alarm at the office. Are you safe?");
    trigger["responses"] = json!([
        {"key": "1", "label": "I am safe"},
        {"key": "2", "label": "I need help", "acknowledges": false}
    ]);
    let r = post(
        &c,
        &format!("{}/v1/incidents", s.base),
        &json!({"trigger": trigger}),
    )
    .await;
    assert_eq!(r.status(), 202);
    let list = messages(&c, &s, 4).await;
    let of = |ch: &str| {
        list.iter()
            .find(|m| m["channel"] == ch)
            .cloned()
            .unwrap_or_else(|| panic!("no {ch} message: {list:?}"))
    };
    let answer = |m: &Value, body: Value| {
        let url = format!("{}/local/messages/{}/answer", s.base, m["n"]);
        let c = c.clone();
        async move { post(&c, &url, &body).await.status().as_u16() }
    };
    let voice = of("voice");
    assert!(
        voice["body"]
            .as_str()
            .unwrap_or_default()
            .contains("press 2 for I need help"),
        "{voice}"
    );
    assert_eq!(answer(&voice, json!({"digits": "2"})).await, 200);
    assert_eq!(answer(&of("sms"), json!({"text": "I am safe"})).await, 200);
    assert_eq!(
        answer(
            &of("email"),
            json!({"action": "acknowledge", "response": "1"})
        )
        .await,
        200
    );
    let v = get_json(&c, &format!("{}/v1/incidents/INC-2024-0892", s.base)).await;
    let people = v["stakeholders"].as_array().cloned().unwrap_or_default();
    let member = |ch: &str| {
        let who = of(ch)["stakeholder"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        people
            .iter()
            .find(|p| p["stakeholder"] == json!(who) && p["route"] == json!("member"))
            .cloned()
            .unwrap_or_else(|| panic!("{who}: {v}"))
    };
    assert_eq!(member("voice")["response"], json!("2"), "{v}");
    assert_eq!(member("voice")["status"], json!("escalated"), "{v}");
    assert_eq!(member("sms")["response"], json!("1"), "{v}");
    assert_eq!(member("email")["response"], json!("1"), "{v}");
    // The manager's message says what the answer was.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let all = get_json(&c, &format!("{}/local/messages", s.base)).await;
        let told = all["messages"].as_array().into_iter().flatten().any(|m| {
            m["body"]
                .as_str()
                .unwrap_or_default()
                .contains("answered \"I need help\"")
        });
        if told {
            break;
        }
        assert!(Instant::now() < deadline, "the manager was not told: {all}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
