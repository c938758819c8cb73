//! A fuzzing engine on stable Rust that knows nothing of what it fuzzes: a
//! target is a name, seed inputs and a function of bytes that must not
//! panic. Case `i` of a run with seed `s` is always the same input (random
//! bytes, or a seed mutated a few times), so any failure is reproduced
//! from its index alone.
//!
//! Mutations are the usual byte-level ones (bit flips, byte sets, inserts,
//! deletions, duplications, splices, truncation) plus two aimed at parsers:
//! tokens from a dictionary of syntax (`{`, `[`, `"`, `- `, `=`, escapes,
//! extreme numbers) and a short chunk repeated up to 20,000 times, which
//! nests brackets or indentation deeper than any parser should recurse.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicU64, Ordering};

/// What is fuzzed.
pub struct Target {
    pub name: &'static str,
    pub seeds: Vec<Vec<u8>>,
    pub run: fn(&[u8]),
}

/// Largest input generated.
pub const MAX_INPUT: usize = 256 * 1024;

const TOKENS: &[&[u8]] = &[
    b"{",
    b"}",
    b"[",
    b"]",
    b"\"",
    b"'",
    b":",
    b",",
    b"null",
    b"true",
    b"false",
    b"-",
    b"0",
    b"-1",
    b"1e999",
    b"-0.0",
    b"18446744073709551616",
    b"9223372036854775807",
    b"\\",
    b"\\u0000",
    b"\\ud800",
    b"\n",
    b"\r\n",
    b"\t",
    b" ",
    b"=",
    b"#",
    b"- ",
    b": ",
    b"  ",
    b"[[",
    b"]]",
    b"\"\"\"",
    b"&",
    b"%",
    b"%00",
    b"%FF",
    b"|",
    b"*",
    b"\x00",
    b"\xff",
    b"\xc3\x28",
    b"\xf0\x9f\x92\xa9",
    b"e",
    b"eq",
    b" eq ",
    b"\"Operations\"",
    b"\"path\"",
    b"\"value\"",
    b"\"op\"",
    b"urn:ietf:params:scim:schemas:core:2.0:User:",
    b"P1",
    b"+44",
    b"@",
    b".",
    b"..",
    b"T",
    b"Z",
    b"+02:00",
    b"1970-01-01",
    b"9999-12-31T23:59:60Z",
];

/// The input of case `index` for `targets`: (target index, bytes).
pub fn case(seed: u64, index: u64, targets: &[Target]) -> (usize, Vec<u8>) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ index.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let t = (index % targets.len().max(1) as u64) as usize;
    let Some(target) = targets.get(t) else {
        return (0, Vec::new());
    };
    let input = if target.seeds.is_empty() || rng.random_ratio(15, 100) {
        random_input(&mut rng)
    } else {
        let mut base = target.seeds[rng.random_range(0..target.seeds.len())].clone();
        // Sometimes another target's seed, spliced in.
        if rng.random_ratio(1, 10) {
            let other = &targets[rng.random_range(0..targets.len())];
            if let Some(s) = other
                .seeds
                .get(rng.random_range(0..other.seeds.len().max(1)))
            {
                let at = rng.random_range(0..=base.len());
                base.splice(at..at, s.iter().copied());
            }
        }
        for _ in 0..rng.random_range(1..=8) {
            mutate(&mut rng, &mut base);
        }
        base
    };
    (t, input)
}

fn random_input(rng: &mut ChaCha8Rng) -> Vec<u8> {
    let len = match rng.random_range(0..3) {
        0 => rng.random_range(0..16),
        1 => rng.random_range(16..256),
        _ => rng.random_range(256..4096),
    };
    match rng.random_range(0..3) {
        0 => (0..len).map(|_| rng.random()).collect(),
        1 => (0..len).map(|_| rng.random_range(0x20..0x7f)).collect(),
        _ => {
            let mut v = Vec::with_capacity(len);
            while v.len() < len {
                v.extend_from_slice(TOKENS[rng.random_range(0..TOKENS.len())]);
            }
            v
        }
    }
}

/// One mutation of `b`, in place.
pub fn mutate(rng: &mut ChaCha8Rng, b: &mut Vec<u8>) {
    let n = b.len();
    let pos = |rng: &mut ChaCha8Rng, n: usize| rng.random_range(0..=n);
    match rng.random_range(0..10) {
        0 if n > 0 => {
            let i = rng.random_range(0..n);
            b[i] ^= 1 << rng.random_range(0..8);
        }
        1 if n > 0 => {
            let i = rng.random_range(0..n);
            b[i] = rng.random();
        }
        2 if n > 0 => {
            let at = rng.random_range(0..n);
            let len = rng.random_range(1..=(n - at).min(n / 4 + 1));
            b.drain(at..at + len);
        }
        3 => {
            let at = pos(rng, n);
            let bytes: Vec<u8> = (0..rng.random_range(1..32)).map(|_| rng.random()).collect();
            b.splice(at..at, bytes);
        }
        4 => {
            let at = pos(rng, n);
            let t = TOKENS[rng.random_range(0..TOKENS.len())];
            b.splice(at..at, t.iter().copied());
        }
        5 if n > 0 => {
            let from = rng.random_range(0..n);
            let len = rng.random_range(1..=(n - from).min(256));
            let chunk = b[from..from + len].to_vec();
            let at = pos(rng, n);
            b.splice(at..at, chunk);
        }
        6 => {
            // A short chunk repeated: deep nesting, long runs.
            let chunk: Vec<u8> = if n > 0 && rng.random_bool(0.5) {
                let from = rng.random_range(0..n);
                b[from..(from + rng.random_range(1..=4)).min(n)].to_vec()
            } else {
                TOKENS[rng.random_range(0..TOKENS.len())].to_vec()
            };
            let times = [2, 10, 100, 1_000, 20_000][rng.random_range(0..5)];
            let at = pos(rng, n);
            let rep: Vec<u8> = chunk
                .iter()
                .copied()
                .cycle()
                .take(chunk.len() * times)
                .collect();
            b.splice(at..at, rep);
        }
        7 if n > 0 => {
            b.truncate(rng.random_range(0..n));
        }
        8 if n > 1 => {
            let i = rng.random_range(0..n);
            let j = rng.random_range(0..n);
            b.swap(i, j);
        }
        _ => {
            let at = pos(rng, n);
            b.insert(at, rng.random());
        }
    }
    b.truncate(MAX_INPUT);
}

/// Cases run per target, and the cases that panicked: (index, target).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub per_target: Vec<u64>,
    pub panics: Vec<(u64, usize)>,
}

/// Runs cases `from..to` on `threads` threads (2 MiB stacks, as Lambda's
/// and tokio's threads have), calling `progress` with the cases done so
/// far now and then. A panic is caught and recorded; a stack overflow
/// ends the process (the caller finds the case by bisection).
pub fn run_range(
    targets: &[Target],
    seed: u64,
    from: u64,
    to: u64,
    threads: usize,
    progress: &(dyn Fn(u64) + Sync),
) -> Outcome {
    let threads = threads.max(1) as u64;
    let done = AtomicU64::new(0);
    let results: Vec<Outcome> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let done = &done;
                std::thread::Builder::new()
                    .stack_size(2 << 20)
                    .spawn_scoped(s, move || {
                        let mut out = Outcome {
                            per_target: vec![0; targets.len()],
                            panics: Vec::new(),
                        };
                        let mut i = from + t;
                        while i < to {
                            let (ti, input) = case(seed, i, targets);
                            if let Some(target) = targets.get(ti) {
                                if catch_unwind(AssertUnwindSafe(|| (target.run)(&input))).is_err()
                                {
                                    out.panics.push((i, ti));
                                }
                                out.per_target[ti] += 1;
                            }
                            let d = done.fetch_add(1, Ordering::Relaxed) + 1;
                            if d.is_multiple_of(10_000) {
                                progress(d);
                            }
                            i += threads;
                        }
                        out
                    })
            })
            .collect();
        handles
            .into_iter()
            .filter_map(|h| h.ok())
            .filter_map(|h| h.join().ok())
            .collect()
    });
    let mut total = Outcome {
        per_target: vec![0; targets.len()],
        panics: Vec::new(),
    };
    for r in results {
        for (a, b) in total.per_target.iter_mut().zip(r.per_target) {
            *a += b;
        }
        total.panics.extend(r.panics);
    }
    total.panics.sort_unstable();
    total
}

/// muster's own targets (`muster::fuzz`), for this engine: the one place
/// the engine meets muster.
pub fn muster_targets() -> Vec<Target> {
    muster::fuzz::targets()
        .into_iter()
        .map(|t| Target {
            name: t.name,
            seeds: (t.seeds)(),
            run: t.run,
        })
        .collect()
}
