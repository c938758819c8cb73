//! SIEM export: the audit trail forwarded, as it is written, to the SIEM
//! receivers configured (syslog over TLS, Splunk HEC), at least once.
//!
//! Whatever sees entries written (the audit table's stream on AWS, the
//! memory store's log under `muster serve`) queues them with [`queue`] as
//! [`Job::Export`] jobs of at most [`CHUNK_BYTES`] each, on the member lane:
//! forwarding never holds up a cascade or the archive. A job delivers its
//! lines to each receiver it names; those that fail get the lines again in
//! a job of their own after a growing delay (30 s doubling to 15 min) until
//! they take them, however long that is: a line is never given up. A
//! receiver that refuses (credentials, a certificate) is logged as an error
//! on every try, so that its settings get fixed. Every line carries its
//! dedup key ([`ExportLine::dedup_key`]): a line delivered twice (a retried
//! job, a redelivered stream batch) is recognisable as one.

use crate::audit::ExportLine;
use crate::domain::Millis;
use crate::error::Result;
use crate::ports::{Deps, ExportError, Job};

/// The most line bytes (as JSON) per job: ten jobs fit one SQS batch
/// (256 KiB).
pub const CHUNK_BYTES: usize = 20_000;

/// The delay before try `attempt + 1` after try `attempt` failed.
pub fn backoff(attempt: u32) -> Millis {
    super::writeback::backoff(attempt)
}

/// `lines` cut into jobs of at most [`CHUNK_BYTES`] (a longer line is a
/// job of its own), in order, for every receiver.
pub fn jobs(lines: Vec<ExportLine>) -> Vec<Job> {
    let mut out = Vec::new();
    let mut chunk = Vec::new();
    let mut bytes = 0;
    for line in lines {
        let n = line.to_json().len();
        if !chunk.is_empty() && bytes + n > CHUNK_BYTES {
            out.push(job(std::mem::take(&mut chunk), Vec::new(), 0));
            bytes = 0;
        }
        bytes += n;
        chunk.push(line);
    }
    if !chunk.is_empty() {
        out.push(job(chunk, Vec::new(), 0));
    }
    out
}

fn job(lines: Vec<ExportLine>, sinks: Vec<String>, attempt: u32) -> Job {
    Job::Export {
        lines,
        sinks,
        attempt,
    }
}

/// Queues `lines` for every receiver configured (none: nothing to do). An
/// error means some were not queued: the caller delivers them again.
pub async fn queue(deps: &Deps, lines: Vec<ExportLine>) -> Result<()> {
    if deps.siem.is_empty() || lines.is_empty() {
        return Ok(());
    }
    let jobs = jobs(lines).into_iter().map(|j| (j, 0)).collect();
    deps.queue.enqueue(jobs).await
}

/// One export job: the lines to each receiver named (all when none is);
/// those that fail are queued again, delayed.
#[tracing::instrument(skip_all, fields(lines = lines.len(), attempt))]
pub(super) async fn export(
    deps: &Deps,
    lines: Vec<ExportLine>,
    sinks: Vec<String>,
    attempt: u32,
) -> Result<()> {
    let mut failed = Vec::new();
    for sink in &deps.siem {
        let name = sink.name();
        if !sinks.is_empty() && !sinks.iter().any(|s| s == name) {
            continue;
        }
        match sink.deliver(&lines).await {
            Ok(()) => tracing::info!(sink = name, "audit lines forwarded"),
            Err(ExportError::Unavailable(why)) => {
                tracing::warn!(sink = name, why, "audit lines not forwarded; retrying");
                failed.push(name.to_string());
            }
            Err(ExportError::Refused(why)) => {
                tracing::error!(
                    sink = name,
                    why,
                    "the SIEM refuses audit lines; fix its settings (retrying)"
                );
                failed.push(name.to_string());
            }
        }
    }
    for name in &sinks {
        if !deps.siem.iter().any(|s| s.name() == name) {
            tracing::warn!(sink = %name, "audit lines for a SIEM receiver no longer configured are dropped");
        }
    }
    if failed.is_empty() {
        return Ok(());
    }
    let delay = backoff(attempt);
    let retry = job(lines, failed, attempt.saturating_add(1));
    deps.queue.enqueue(vec![(retry, delay)]).await
}
