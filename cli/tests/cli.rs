//! The `muster` binary: exit codes, messages and files.

use std::path::PathBuf;
use std::process::{Command, Output};

fn muster(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_muster"))
        .args(args)
        .current_dir(root())
        .output()
        .unwrap_or_else(|e| panic!("cannot run muster: {e}"))
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn tmp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("muster-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
    dir.join(name)
}

#[test]
fn policy_check_prints_the_effective_table() {
    let o = muster(&["policy", "check", "examples/policies/default.toml"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let out = text(&o);
    assert!(out.starts_with("ok"), "{out}");
    assert!(
        out.contains("P1") && out.contains("1m 30s") && out.contains("15s, 30s, 1m"),
        "{out}"
    );
}

#[test]
fn policy_check_lists_every_error_and_exits_1() {
    let bad = tmp("bad-policy.toml");
    std::fs::write(
        &bad,
        "[retry]\nmax_retries = 50\n[channel_order]\nP2 = [\"pigeon\"]\n",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let o = muster(&["policy", "check", bad.to_str().unwrap_or_default()]);
    assert_eq!(o.status.code(), Some(1));
    let out = text(&o);
    assert!(out.contains("retry.max_retries = 50"), "{out}");
    assert!(out.contains("channel_order.P2[0] = \"pigeon\""), "{out}");
}

#[test]
fn drill_with_a_bad_scenario_names_the_field_and_exits_1() {
    let bad = tmp("bad-scenario.toml");
    std::fs::write(&bad, "[incident]\nincidentId = \"INC-1\"\nseverity = \"P7\"\nstakeholderGroupId = \"g\"\nmessageTemplate = \"m\"\n[[stakeholders]]\nid = \"a\"\nemail = \"not-an-email\"\n")
        .unwrap_or_else(|e| panic!("{e}"));
    let o = muster(&["drill", bad.to_str().unwrap_or_default()]);
    assert_eq!(o.status.code(), Some(1));
    let out = text(&o);
    assert!(
        out.contains("incident.severity") && out.contains("stakeholders[0].email"),
        "{out}"
    );
}

#[test]
fn drill_writes_json_report_and_a_verifiable_audit_trail() {
    let json = tmp("report.json");
    let audit = tmp("audit.jsonl");
    let o = muster(&[
        "drill",
        "examples/drills/seed-p1-outage.toml",
        "--seed",
        "5",
        "--json",
        json.to_str().unwrap_or_default(),
        "--audit",
        audit.to_str().unwrap_or_default(),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(text(&o).contains("Invariants all held"));
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap_or_default())
            .unwrap_or_default();
    for key in [
        "stakeholders",
        "final_states",
        "first_contact_secs",
        "ack_secs",
        "channels",
        "carriers",
        "cascade_failures",
        "invariant_violations",
        "audit_entries",
        "virtual_secs",
        "wall_secs",
    ] {
        assert!(report.get(key).is_some(), "report lacks {key}");
    }
    for key in ["acknowledged", "escalated", "cancelled", "active"] {
        assert!(
            report["final_states"].get(key).is_some(),
            "final_states lacks {key}"
        );
    }
    for key in ["p50", "p95", "max"] {
        assert!(report["ack_secs"].get(key).is_some());
    }
    for key in ["attempts", "delivered", "failed", "timeouts", "throttled"] {
        assert!(
            report["channels"]["voice"].get(key).is_some(),
            "channels.voice lacks {key}"
        );
    }
    for key in ["limit_per_sec", "peak_per_sec", "throttled_429"] {
        assert!(
            report["carriers"]["sms"].get(key).is_some(),
            "carriers.sms lacks {key}"
        );
    }
    assert_eq!(report["invariant_violations"], 0);
    let trail = std::fs::read_to_string(&audit).unwrap_or_default();
    let lines: Vec<&str> = trail.lines().collect();
    let entry_count = lines.iter().filter(|l| !l.starts_with("{\"seal\"")).count() as u64;
    assert_eq!(entry_count, report["audit_entries"].as_u64().unwrap_or(0));
    assert!(
        lines.iter().any(|l| l.starts_with("{\"seal\"")),
        "the trail is sealed"
    );
    assert!(
        trail.contains("\"contact\":\"v1:"),
        "sent-to addresses are recorded, encrypted"
    );
    // No plaintext contact detail in the trail.
    assert!(
        !trail.contains("@example.com") && !trail.contains("+44"),
        "contact details in the audit trail"
    );

    let verify = |content: &str| {
        let f = tmp("verify.jsonl");
        std::fs::write(&f, content).unwrap_or_else(|e| panic!("{e}"));
        let o = muster(&["audit", "verify", f.to_str().unwrap_or_default()]);
        (o.status.code(), text(&o))
    };
    let (code, out) = verify(&trail);
    assert_eq!(code, Some(0), "{out}");
    // A modified entry.
    let modified = trail.replacen("\"DELIVERED\"", "\"CHANNEL_FAILED\"", 1);
    let (code, out) = verify(&modified);
    assert_eq!(code, Some(1));
    assert!(out.contains("modified"), "{out}");
    // A deleted entry.
    let mut deleted = lines.clone();
    deleted.remove(lines.len() / 2);
    let (code, out) = verify(&(deleted.join("\n") + "\n"));
    assert_eq!(code, Some(1), "{out}");
    // The last entry of a chain removed: only the seal can tell.
    let entry_lines: Vec<usize> = lines
        .iter()
        .enumerate()
        .filter(|(_, l)| !l.starts_with("{\"seal\""))
        .map(|(i, _)| i)
        .collect();
    let mut truncated = lines.clone();
    truncated.remove(*entry_lines.last().unwrap_or(&0));
    let (code, out) = verify(&(truncated.join("\n") + "\n"));
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("seal covers"), "{out}");
    // A forged seal.
    let seal_line = lines
        .iter()
        .rposition(|l| l.starts_with("{\"seal\""))
        .unwrap_or(0);
    let mut forged: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
    forged[seal_line] = forged[seal_line].replace("\"entries\":", "\"entries\":1");
    let (code, out) = verify(&(forged.join("\n") + "\n"));
    assert_eq!(code, Some(1), "{out}");
    // No seal at all: chains verify, but --require-seal refuses.
    let unsealed: Vec<&str> = lines
        .iter()
        .copied()
        .filter(|l| !l.starts_with("{\"seal\""))
        .collect();
    let (code, out) = verify(&(unsealed.join("\n") + "\n"));
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("not sealed"), "{out}");
    // Two entries of one cascade swapped.
    let first = lines
        .iter()
        .position(|l| l.contains("\"stakeholder\":\"cio\"") && l.contains("\"seq\":1,"))
        .unwrap_or(0);
    let second = lines
        .iter()
        .position(|l| l.contains("\"stakeholder\":\"cio\"") && l.contains("\"seq\":2,"))
        .unwrap_or(0);
    let mut swapped = lines.clone();
    swapped.swap(first, second);
    let (code, out) = verify(&(swapped.join("\n") + "\n"));
    assert_eq!(code, Some(1));
    assert!(out.contains("sequence"), "{out}");
}

#[test]
fn directory_check_and_import_validate_the_whole_file_first() {
    for f in [
        "examples/directory/ops-leadership.yaml",
        "examples/directory/ops-leadership.csv",
    ] {
        let o = muster(&["directory", "check", f]);
        assert_eq!(o.status.code(), Some(0), "{}", text(&o));
        assert!(
            text(&o).contains("5 stakeholders, 1 groups"),
            "{}",
            text(&o)
        );
    }
    let bad = tmp("bad-directory.csv");
    std::fs::write(
        &bad,
        "id,phone,email\na,+44 20 7946 0001,a@example.com\nb,+1 555,b@example\n",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let into = tmp("directory.json");
    let _ = std::fs::remove_file(&into);
    let o = muster(&[
        "directory",
        "import",
        bad.to_str().unwrap_or_default(),
        "--into",
        into.to_str().unwrap_or_default(),
    ]);
    assert_eq!(o.status.code(), Some(1));
    let out = text(&o);
    assert!(
        out.contains("row 2 (line 3): phone = \"+1 555\"")
            && out.contains("row 2 (line 3): email = \"b@example\""),
        "{out}"
    );
    assert!(!into.exists(), "nothing imported from an invalid file");
    let o = muster(&[
        "directory",
        "import",
        "examples/directory/ops-leadership.yaml",
        "--into",
        into.to_str().unwrap_or_default(),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let dir: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&into).unwrap_or_default())
            .unwrap_or_default();
    assert_eq!(
        dir["stakeholders"][0]["contacts"]["phone"], "+442079460001",
        "normalised to E.164"
    );
    assert_eq!(
        dir["groups"][0]["escalation_channels"],
        serde_json::json!(["voice", "sms"])
    );
}

#[test]
fn a_group_with_no_escalation_path_is_refused_naming_the_group() {
    let dir = tmp("no-path.yaml");
    std::fs::write(
        &dir,
        "stakeholders:\n  - id: a\n    name: A\n    tier: 1\n    email: a@example.com\n  - id: b\n    name: B\n    tier: 1\n    email: b@example.com\ngroups:\n  - id: night-shift\n    name: Night shift\n    members: [a]\n",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let path = dir.to_str().unwrap_or_default();
    let o = muster(&["directory", "check", path]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        text(&o).contains("group night-shift: on_call_manager")
            && text(&o).contains("no escalation path"),
        "{}",
        text(&o)
    );
    // The same directory under a policy with a fallback rota is fine ...
    let policy = tmp("fallback.toml");
    std::fs::write(&policy, "[escalation]\nfallback = [\"b\"]\n").unwrap_or_else(|e| panic!("{e}"));
    let p = policy.to_str().unwrap_or_default();
    let o = muster(&["directory", "check", path, "--policy", p]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let o = muster(&["policy", "check", p, "--directory", path]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    // ... and a fallback that is not in the directory is named.
    std::fs::write(&policy, "[escalation]\nfallback = [\"zed\"]\n")
        .unwrap_or_else(|e| panic!("{e}"));
    let o = muster(&["policy", "check", p, "--directory", path]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        text(&o).contains("escalation.fallback[0] = \"zed\""),
        "{}",
        text(&o)
    );
}

#[test]
fn bench_escalation_checks_every_seed_and_reports_the_share_reached() {
    let o = muster(&[
        "bench",
        "escalation",
        "--seeds",
        "3",
        "examples/drills/seed-p1-outage.toml",
        "examples/drills/escalation-chain.toml",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let out = text(&o);
    assert!(
        out.contains("seed-p1-outage") && out.contains("escalation-chain"),
        "{out}"
    );
    assert!(out.contains("(100.00%) reached a person"), "{out}");
}

#[test]
fn drill_html_writes_a_page_of_the_run() {
    let out = tmp("drill.html");
    let path = out.to_str().unwrap_or_default();
    let o = muster(&[
        "drill",
        "examples/drills/seed-p1-outage.toml",
        "--html",
        path,
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let page = std::fs::read_to_string(&out).unwrap_or_else(|e| panic!("{e}"));
    assert!(page.starts_with("<!doctype html>"));
    assert!(page.contains("<svg"));
}
