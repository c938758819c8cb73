//! No phone number or email address reaches a log line, at any level.

use muster::drill::{Scenario, run};
use std::io::Write;
use std::sync::{Arc, Mutex};

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn drills_log_ids_but_never_contact_details() {
    let capture = Capture::default();
    let sink = capture.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || sink.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let mut secrets = Vec::new();
    for name in ["seed-p1-outage", "webhook-timeout", "mass-activation-500"] {
        let path = format!(
            "{}/../examples/drills/{name}.toml",
            env!("CARGO_MANIFEST_DIR")
        );
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        let scenario = Scenario::from_toml(&text).unwrap_or_else(|e| panic!("{e:?}"));
        for p in &scenario.people {
            let c = &p.contacts;
            for phone in [&c.phone, &c.sms].into_iter().flatten() {
                let e164 = phone.expose().to_string();
                secrets.push(e164.trim_start_matches('+').to_string());
                // The national significant number too (last 9 digits).
                secrets.push(e164[e164.len().saturating_sub(9)..].to_string());
            }
            if let Some(e) = &c.email {
                secrets.push(e.expose().to_string());
                secrets.push(e.expose().split('@').next().unwrap_or_default().to_string() + "@");
            }
        }
        let seed = scenario.seed;
        let (_, report) = run(scenario, seed);
        assert!(report.passed());
    }
    let logs = String::from_utf8(capture.0.lock().unwrap_or_else(|e| e.into_inner()).clone())
        .unwrap_or_default();
    assert!(
        logs.contains("CASCADE_FAILURE") && logs.contains("incident_id"),
        "the logs say what happened"
    );
    assert!(
        logs.lines().count() > 100,
        "logs were captured: {} lines",
        logs.lines().count()
    );
    for s in &secrets {
        assert!(
            !logs.contains(s.as_str()),
            "a contact detail ({} characters) appears in the logs",
            s.len()
        );
    }
}
