//! Headless Chromium for the board's tests (Debian's `chromium`, which
//! scripts/test installs): a one-shot load that dumps the DOM, and a page
//! driven over the DevTools protocol. Screenshots go to
//! `target/test-artifacts/board/`.

#![allow(dead_code)]

use serde_json::{Value, json};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Collects a child's stream, line by line, into a shared buffer.
pub fn collect(stream: impl std::io::Read + Send + 'static) -> Arc<Mutex<String>> {
    let buf = Arc::new(Mutex::new(String::new()));
    let sink = buf.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines().map_while(Result::ok) {
            let mut g = sink.lock().unwrap_or_else(|e| e.into_inner());
            g.push_str(&line);
            g.push('\n');
        }
    });
    buf
}

pub fn artifacts() -> std::path::PathBuf {
    let dir =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/test-artifacts/board");
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
    dir
}

/// Loads `url` in headless Chromium (Debian's `chromium`, which
/// scripts/test installs), lets its script run for up to five seconds of
/// virtual time, writes a screenshot to the artifacts and returns the DOM.
pub fn browse(url: &str, shot: &str) -> String {
    let run = |extra: &[&str]| {
        let profile =
            std::env::temp_dir().join(format!("muster-chromium-{}-{shot}", std::process::id()));
        let out = Command::new("chromium")
            .args([
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--window-size=800,1400",
                "--virtual-time-budget=5000",
            ])
            .arg(format!("--user-data-dir={}", profile.display()))
            .args(extra)
            .arg(url)
            .output()
            .unwrap_or_else(|e| {
                panic!("cannot run chromium ({e}): scripts/test installs Debian's chromium package")
            });
        let _ = std::fs::remove_dir_all(&profile);
        assert!(
            out.status.success(),
            "chromium failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let png = artifacts().join(format!("{shot}.png"));
    run(&[&format!("--screenshot={}", png.display())]);
    assert!(png.metadata().is_ok_and(|m| m.len() > 0), "no screenshot");
    run(&["--dump-dom"])
}

/// Headless Chromium driven over the DevTools protocol: one page, its
/// script evaluated as a person's clicks and typing would act.
pub struct Browser {
    child: Child,
    ws: tungstenite::WebSocket<std::net::TcpStream>,
    session: String,
    next_id: u64,
    profile: std::path::PathBuf,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

impl Browser {
    pub fn open(url: &str) -> Browser {
        static OPENED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = OPENED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let profile = std::env::temp_dir().join(format!("muster-cdp-{}-{n}", std::process::id()));
        let mut child = Command::new("chromium")
            .args([
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--window-size=800,1400",
                "--remote-debugging-address=127.0.0.1",
                "--remote-debugging-port=0",
            ])
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg("about:blank")
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run chromium ({e}): scripts/test installs it"));
        let err = collect(child.stderr.take().unwrap_or_else(|| panic!("no stderr")));
        let deadline = Instant::now() + Duration::from_secs(20);
        let ws_url = loop {
            let text = err.lock().unwrap_or_else(|e| e.into_inner()).clone();
            if let Some(u) = text
                .lines()
                .find_map(|l| l.strip_prefix("DevTools listening on "))
            {
                break u.trim().to_string();
            }
            assert!(Instant::now() < deadline, "chromium did not start: {text}");
            std::thread::sleep(Duration::from_millis(50));
        };
        let hostport = ws_url
            .trim_start_matches("ws://")
            .split('/')
            .next()
            .unwrap_or_default();
        let tcp = std::net::TcpStream::connect(hostport).unwrap_or_else(|e| panic!("{e}"));
        tcp.set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap_or_else(|e| panic!("{e}"));
        let (ws, _) = tungstenite::client(ws_url.as_str(), tcp).unwrap_or_else(|e| panic!("{e}"));
        let mut b = Browser {
            child,
            ws,
            session: String::new(),
            next_id: 0,
            profile,
        };
        let target = b.call("Target.createTarget", json!({"url": url}));
        let attached = b.call(
            "Target.attachToTarget",
            json!({"targetId": target["targetId"], "flatten": true}),
        );
        b.session = attached["sessionId"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        b
    }

    /// One DevTools command (in the page's session once attached); its result.
    pub fn call(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut msg = json!({"id": id, "method": method, "params": params});
        if !self.session.is_empty() {
            msg["sessionId"] = json!(self.session);
        }
        self.ws
            .send(tungstenite::Message::text(msg.to_string()))
            .unwrap_or_else(|e| panic!("{e}"));
        loop {
            let m = self.ws.read().unwrap_or_else(|e| panic!("{e}"));
            let Ok(text) = m.to_text() else { continue };
            let v: Value = serde_json::from_str(text).unwrap_or_default();
            if v["id"] == id {
                assert!(v["error"].is_null(), "{method}: {v}");
                return v["result"].clone();
            }
        }
    }

    /// The value of a script expression in the page.
    pub fn eval(&mut self, expression: &str) -> Value {
        let r = self.call(
            "Runtime.evaluate",
            json!({"expression": expression, "returnByValue": true, "awaitPromise": true}),
        );
        r["result"]["value"].clone()
    }

    /// Waits (bounded) until `expression` is true in the page.
    pub fn until(&mut self, expression: &str) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.eval(expression) != json!(true) {
            assert!(Instant::now() < deadline, "never true: {expression}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn screenshot(&mut self, name: &str) {
        use base64::Engine as _;
        let shot = self.call("Page.captureScreenshot", json!({"format": "png"}));
        let png = base64::engine::general_purpose::STANDARD
            .decode(shot["data"].as_str().unwrap_or_default())
            .unwrap_or_default();
        assert!(!png.is_empty(), "no screenshot");
        std::fs::write(artifacts().join(format!("{name}.png")), png)
            .unwrap_or_else(|e| panic!("{e}"));
    }
}
