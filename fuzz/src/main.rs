//! `muster-fuzz`: runs muster's fuzz targets (docs/testing.md).
//!
//! `muster-fuzz run --cases N` supervises: it runs the cases in chunks, each
//! in a child process (`muster-fuzz work`), so that a crash no catch can
//! stop (a stack overflow aborts the process) ends one chunk, not the run.
//! A chunk that crashes is bisected, in children on one thread, down to
//! the case that crashes it; every failing input is written to `--out`.
//! The summary names the cases run per target and the failures; the exit
//! status is 1 if there were any.

use anyhow::Context;
use clap::{Parser, Subcommand};
use muster_fuzz::{Outcome, Target, case, run_range};
use std::io::Write;
use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

#[derive(Parser)]
#[command(name = "muster-fuzz", about = "Fuzz muster's parsers of outside input")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run N cases across every target, supervising children.
    Run {
        #[arg(long, default_value_t = 1_000_000)]
        cases: u64,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        #[arg(long, default_value_t = 2)]
        threads: usize,
        /// Cases per child process.
        #[arg(long, default_value_t = 500_000)]
        chunk: u64,
        /// Where failing inputs are written.
        #[arg(long, default_value = "target/fuzz-failures")]
        out: PathBuf,
    },
    /// Run cases FROM..TO in this process (used by `run`).
    Work {
        #[arg(long)]
        seed: u64,
        #[arg(long)]
        from: u64,
        #[arg(long)]
        to: u64,
        #[arg(long, default_value_t = 1)]
        threads: usize,
    },
    /// List the targets and their seed counts.
    Targets,
}

fn targets() -> Vec<Target> {
    muster_fuzz::muster_targets()
}

fn main() -> anyhow::Result<std::process::ExitCode> {
    let cli = Cli::parse();
    match cli.command {
        Cmd::Targets => {
            for t in targets() {
                println!("{:18} {} seeds", t.name, t.seeds.len());
            }
            Ok(std::process::ExitCode::SUCCESS)
        }
        Cmd::Work {
            seed,
            from,
            to,
            threads,
        } => {
            // Panics are caught and reported; their messages would only repeat.
            std::panic::set_hook(Box::new(|_| {}));
            let t = targets();
            let out = run_range(&t, seed, from, to, threads, &|_| {});
            let mut stdout = std::io::stdout().lock();
            writeln!(
                stdout,
                "counts {}",
                out.per_target
                    .iter()
                    .map(u64::to_string)
                    .collect::<Vec<_>>()
                    .join(" ")
            )?;
            for (i, ti) in out.panics {
                writeln!(stdout, "panic {i} {ti}")?;
            }
            Ok(std::process::ExitCode::SUCCESS)
        }
        Cmd::Run {
            cases,
            seed,
            threads,
            chunk,
            out,
        } => supervise(cases, seed, threads, chunk.max(1), out),
    }
}

/// What a child reported, or `None` when it did not finish (it crashed).
fn child(seed: u64, from: u64, to: u64, threads: usize) -> anyhow::Result<Option<Outcome>> {
    let exe = std::env::current_exe().context("cannot find this program")?;
    let o = Command::new(exe)
        .args([
            "work",
            "--seed",
            &seed.to_string(),
            "--from",
            &from.to_string(),
            "--to",
            &to.to_string(),
            "--threads",
            &threads.to_string(),
        ])
        .stderr(std::process::Stdio::null())
        .output()
        .context("cannot start a worker")?;
    if !o.status.success() {
        return Ok(None);
    }
    let text = String::from_utf8_lossy(&o.stdout);
    let mut counts = Vec::new();
    let mut panics = Vec::new();
    for line in text.lines() {
        let mut w = line.split_whitespace();
        match w.next() {
            Some("counts") => counts = w.filter_map(|n| n.parse().ok()).collect(),
            Some("panic") => {
                if let (Some(Ok(i)), Some(Ok(t))) =
                    (w.next().map(str::parse), w.next().map(str::parse))
                {
                    panics.push((i, t));
                }
            }
            _ => {}
        }
    }
    Ok(Some(Outcome {
        per_target: counts,
        panics,
    }))
}

/// The first case in `from..to` that crashes a child, by bisection.
fn first_crash(seed: u64, mut from: u64, mut to: u64) -> anyhow::Result<Option<u64>> {
    if child(seed, from, to, 1)?.is_some() {
        return Ok(None);
    }
    while to - from > 1 {
        let mid = from + (to - from) / 2;
        if child(seed, from, mid, 1)?.is_none() {
            to = mid;
        } else {
            from = mid;
        }
    }
    Ok(Some(from))
}

fn supervise(
    cases: u64,
    seed: u64,
    threads: usize,
    chunk: u64,
    out: PathBuf,
) -> anyhow::Result<std::process::ExitCode> {
    let t = targets();
    let started = Instant::now();
    let mut counts = vec![0u64; t.len()];
    let mut failures: Vec<(u64, usize, &str)> = Vec::new();
    let mut from = 0;
    while from < cases {
        let to = (from + chunk).min(cases);
        match child(seed, from, to, threads)? {
            Some(Outcome {
                per_target: c,
                panics,
            }) => {
                for (a, b) in counts.iter_mut().zip(c) {
                    *a += b;
                }
                failures.extend(panics.into_iter().map(|(i, ti)| (i, ti, "panic")));
                from = to;
            }
            None => {
                // A crash: find it, count the cases before it, go on after it.
                let at = first_crash(seed, from, to)?.unwrap_or(from);
                if at > from
                    && let Some(Outcome {
                        per_target: c,
                        panics,
                    }) = child(seed, from, at, threads)?
                {
                    for (a, b) in counts.iter_mut().zip(c) {
                        *a += b;
                    }
                    failures.extend(panics.into_iter().map(|(i, ti)| (i, ti, "panic")));
                }
                let (ti, _) = case(seed, at, &t);
                counts[ti] += 1;
                failures.push((at, ti, "crash"));
                from = at + 1;
            }
        }
        let done = from;
        let secs = started.elapsed().as_secs_f64();
        eprintln!(
            "{done}/{cases} cases, {:.0} cases/s, {} failures",
            done as f64 / secs.max(1e-9),
            failures.len()
        );
    }
    if !failures.is_empty() {
        std::fs::create_dir_all(&out)
            .with_context(|| format!("cannot create {}", out.display()))?;
    }
    for (i, ti, kind) in &failures {
        let (_, input) = case(seed, *i, &t);
        let path = out.join(format!("{kind}-{}-{seed}-{i}.bin", t[*ti].name));
        std::fs::write(&path, input).with_context(|| format!("cannot write {}", path.display()))?;
        println!(
            "{kind}: target {} case {i} (seed {seed}): {}",
            t[*ti].name,
            path.display()
        );
    }
    let total: u64 = counts.iter().sum();
    println!(
        "{total} cases in {:.0} s ({:.0} cases/s), seed {seed}, {} targets:",
        started.elapsed().as_secs_f64(),
        total as f64 / started.elapsed().as_secs_f64().max(1e-9),
        t.len()
    );
    for (target, n) in t.iter().zip(&counts) {
        println!("  {:18} {n}", target.name);
    }
    println!("{} failures", failures.len());
    Ok(if failures.is_empty() {
        std::process::ExitCode::SUCCESS
    } else {
        std::process::ExitCode::FAILURE
    })
}
