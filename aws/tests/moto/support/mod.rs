//! Test harness for the AWS adapters against moto server.
//!
//! The endpoint comes from `MUSTER_TEST_AWS_ENDPOINT` (scripts/test starts one
//! moto server for the whole run). Without it, the first test in a process
//! starts moto from the workspace's `.venv` on a free loopback port, under
//! `timeout 900` so that it never outlives the run by more than 15 minutes.
//! Tests are isolated by unique resource names; `data_json` reads what moto
//! really stored.
#![allow(dead_code, clippy::unwrap_used)]

use aws_config::{BehaviorVersion, Region};
use aws_sdk_dynamodb::config::Credentials;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

pub mod iam;

pub const ENDPOINT_VAR: &str = "MUSTER_TEST_AWS_ENDPOINT";

fn start_moto() -> String {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let python = format!("{root}/.venv/bin/python");
    let server = format!("{root}/scripts/moto-server.py");
    assert!(
        std::path::Path::new(&python).exists(),
        "moto is not installed: run `bash scripts/test` once, or \
         `python3 -m venv .venv && .venv/bin/pip install 'moto[server]==5.1.22'`, \
         or set {ENDPOINT_VAR}"
    );
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap();
    let child = Command::new("timeout")
        .args([
            "900",
            &python,
            &server,
            "-H",
            "127.0.0.1",
            "-p",
            &port.to_string(),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Kept for the life of the process; `timeout` ends the server after 15 min.
    static CHILD: OnceLock<Mutex<Child>> = OnceLock::new();
    let _ = CHILD.set(Mutex::new(child));
    let deadline = Instant::now() + Duration::from_secs(60);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "moto did not start within 60 s");
        std::thread::sleep(Duration::from_millis(100));
    }
    format!("http://127.0.0.1:{port}")
}

pub fn endpoint() -> &'static str {
    static EP: OnceLock<String> = OnceLock::new();
    EP.get_or_init(|| match std::env::var(ENDPOINT_VAR) {
        Ok(e) if !e.is_empty() => e,
        _ => start_moto(),
    })
}

pub async fn sdk_config() -> aws_config::SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .endpoint_url(endpoint())
        .credentials_provider(Credentials::new("testing", "testing", None, None, "moto"))
        .http_client(muster_aws::runtime::https_client())
        .load()
        .await
}

/// A name no other test uses: `prefix-<pid>-<nanos>-<n>`.
pub fn unique(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "{prefix}-{}-{nanos}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// `GET path` on moto, body as text.
pub fn http_get(path: &str) -> String {
    let hostport = endpoint().trim_start_matches("http://").to_string();
    let mut s = TcpStream::connect(&hostport).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.0\r\nHost: {hostport}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).unwrap();
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    assert!(head.contains(" 200 "), "moto answered {head}");
    body.to_string()
}

/// Everything moto holds, as JSON (`/moto-api/data.json`).
pub fn data_json() -> serde_json::Value {
    serde_json::from_str(&http_get("/moto-api/data.json")).unwrap()
}

/// Creates a KMS key for a test.
pub async fn kms_key(cfg: &aws_config::SdkConfig) -> String {
    let kms = aws_sdk_kms::Client::new(cfg);
    kms.create_key()
        .send()
        .await
        .unwrap()
        .key_metadata()
        .unwrap()
        .key_id()
        .to_string()
}

/// Every item of a DynamoDB table as moto stores it, as text (moto's
/// `data.json` lists items without their attributes, so a scan is what shows
/// what was really written).
pub async fn scan_text(cfg: &aws_config::SdkConfig, table: &str) -> String {
    let ddb = aws_sdk_dynamodb::Client::new(cfg);
    let mut out = String::new();
    let mut start = None;
    loop {
        let resp = ddb
            .scan()
            .table_name(table)
            .set_exclusive_start_key(start)
            .send()
            .await
            .unwrap();
        for it in resp.items() {
            out.push_str(&format!("{it:?}\n"));
        }
        match resp.last_evaluated_key() {
            Some(k) if !k.is_empty() => start = Some(k.clone()),
            _ => return out,
        }
    }
}

/// Clients like `Clients::new`, each recording its calls (IAM contract).
pub fn recorded_clients(
    cfg: &aws_config::SdkConfig,
    rec: &iam::Recorder,
) -> muster_aws::runtime::Clients {
    macro_rules! client {
        ($krate:ident) => {
            $krate::Client::from_conf(
                $krate::config::Builder::from(cfg)
                    .interceptor(rec.clone())
                    .build(),
            )
        };
    }
    muster_aws::runtime::Clients {
        dynamodb: client!(aws_sdk_dynamodb),
        sqs: client!(aws_sdk_sqs),
        scheduler: client!(aws_sdk_scheduler),
        sns: client!(aws_sdk_sns),
        sesv2: client!(aws_sdk_sesv2),
        chime: client!(aws_sdk_chimesdkvoice),
        sms: client!(aws_sdk_pinpointsmsvoicev2),
        kms: client!(aws_sdk_kms),
        s3: client!(aws_sdk_s3),
    }
}
