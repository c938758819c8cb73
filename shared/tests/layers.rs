//! The layers point one way (docs/design-notes.md, "Layers"): domain <-
//! engine <- audit <- ports <- app <- api and adapters. A module names
//! only modules below it; adapters never name `app` or `api`.

use std::path::{Path, PathBuf};

/// Each layer's source (files or folders under shared/src) and the
/// modules it must not name.
const RULES: &[(&str, &[&str])] = &[
    (
        "secret.rs",
        &[
            "domain", "engine", "audit", "ports", "app", "api", "adapters", "events", "drill",
        ],
    ),
    (
        "domain",
        &[
            "engine", "audit", "ports", "app", "api", "adapters", "events", "drill", "policy",
        ],
    ),
    (
        "engine",
        &[
            "audit", "ports", "app", "api", "adapters", "events", "drill",
        ],
    ),
    (
        "audit.rs",
        &["ports", "app", "api", "adapters", "events", "drill"],
    ),
    ("ports.rs", &["app", "api", "adapters", "events", "drill"]),
    ("adapters", &["app", "api", "drill"]),
];

fn sources(p: &Path, out: &mut Vec<PathBuf>) {
    if p.is_dir() {
        let mut entries: Vec<_> = std::fs::read_dir(p)
            .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
            .filter_map(Result::ok)
            .map(|e| e.path())
            .collect();
        entries.sort();
        for e in entries {
            sources(&e, out);
        }
    } else if p.extension().is_some_and(|x| x == "rs") {
        out.push(p.to_path_buf());
    }
}

#[test]
fn every_module_names_only_the_layers_below_it() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut broken = Vec::new();
    for (layer, forbidden) in RULES {
        let mut files = Vec::new();
        sources(&root.join(layer), &mut files);
        assert!(!files.is_empty(), "{layer}: no sources");
        for f in files {
            let text = std::fs::read_to_string(&f).unwrap_or_else(|e| panic!("{e}"));
            for (n, line) in text.lines().enumerate() {
                let code = line.split("//").next().unwrap_or_default();
                for m in *forbidden {
                    if code.contains(&format!("crate::{m}::"))
                        || code.contains(&format!("crate::{m};"))
                        || code.contains(&format!("crate::{m}}}"))
                    {
                        broken.push(format!(
                            "{}:{}: {layer} names {m}: {}",
                            f.display(),
                            n + 1,
                            line.trim()
                        ));
                    }
                }
            }
        }
    }
    assert!(
        broken.is_empty(),
        "layers pointing the wrong way:\n{}",
        broken.join("\n")
    );
}
