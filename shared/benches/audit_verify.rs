//! Verifying the exported audit trail of a 10,000-stakeholder incident:
//! every hash chain and the seal. Target: 2 s or less.

use criterion::{Criterion, criterion_group, criterion_main};
use muster::audit::{ExportLine, verify_export};
use muster::drill::{Scenario, run};

fn bench(c: &mut Criterion) {
    let path = format!(
        "{}/../examples/drills/mass-activation-10k.toml",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let scenario = Scenario::from_toml(&text).unwrap_or_else(|e| panic!("{e:?}"));
    let seed = scenario.seed;
    let (drill, _) = run(scenario, seed);
    let mut lines = Vec::new();
    drill
        .store
        .for_each_audit(|e| lines.push(ExportLine::Entry(Box::new(e.clone()))));
    for seal in drill.store.all_seals() {
        lines.push(ExportLine::Seal { seal });
    }
    // As an auditor gets it: JSON lines, parsed and verified.
    let exported: String = lines
        .iter()
        .map(|l| serde_json::to_string(l).unwrap_or_default() + "\n")
        .collect();
    println!("trail: {} lines, {} bytes", lines.len(), exported.len());
    let mut g = c.benchmark_group("audit");
    g.sample_size(10);
    g.bench_function("verify_10k_stakeholder_trail", |b| {
        b.iter(|| {
            let parsed: Vec<ExportLine> = exported
                .lines()
                .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}")))
                .collect();
            let v = verify_export(&parsed).unwrap_or_else(|e| panic!("{e:?}"));
            assert_eq!(v.sealed.len(), 1);
            v
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
