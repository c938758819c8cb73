//! `muster`: drills, policy checks and audit verification on one machine.

mod bench;
mod incidents;
mod ldap;
mod phones;
mod serve;

use anyhow::Context;
use clap::{Parser, Subcommand};
use muster::drill::{Drill, Scenario};
use muster::policy::Policy;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "muster",
    version,
    about = "Business-continuity notification cascade"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a business-continuity activation in virtual time against simulated
    /// carriers and people, and report what happened.
    Drill {
        /// Scenario file (TOML), e.g. examples/drills/seed-p1-outage.toml
        scenario: PathBuf,
        /// Random seed (default: the scenario's own).
        #[arg(long)]
        seed: Option<u64>,
        /// Write the report as JSON to this file.
        #[arg(long)]
        json: Option<PathBuf>,
        /// Write every audit entry as JSON lines to this file.
        #[arg(long)]
        audit: Option<PathBuf>,
        /// Write the report as a self-contained HTML page with plots to
        /// this file.
        #[arg(long)]
        html: Option<PathBuf>,
    },
    /// Policy files.
    Policy {
        #[command(subcommand)]
        command: PolicyCommand,
    },
    /// Audit trails.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Serve the HTTP API on localhost with the embedded runtime (local
    /// development server: memory store, console carriers, real time).
    Serve {
        /// Port on 127.0.0.1 (0: any free port).
        #[arg(long, default_value_t = 8080)]
        port: u16,
        /// Directory file (YAML, CSV or JSON from `directory import`);
        /// default: the example directory built into the binary
        /// (examples/directory/ops-leadership.yaml).
        #[arg(long)]
        directory: Option<PathBuf>,
        /// Policy file (default: the built-in policy).
        #[arg(long)]
        policy: Option<PathBuf>,
        /// Log lines on stderr: `human` or `json` (one object per line).
        #[arg(long, value_enum, default_value_t = serve::LogFormat::Human)]
        log_format: serve::LogFormat,
        /// Most connections open at once (further clients wait to be
        /// accepted); capped below the process's open-file limit.
        #[arg(long, default_value_t = 256)]
        max_connections: usize,
        /// Seconds a client has to send a request's headers (and that a
        /// kept-alive connection may sit idle).
        #[arg(long, default_value_t = 10)]
        header_timeout: u64,
        /// Seconds a request may take, body included, before 408.
        #[arg(long, default_value_t = 30)]
        request_timeout: u64,
    },
    /// Incidents on a deployed API (or `muster serve`). Credentials from
    /// the environment: MUSTER_API_TOKEN (bearer token) or
    /// MUSTER_API_SECRET (shared secret the requests are signed with).
    Incidents {
        /// The API's base URL, e.g. https://abc123.execute-api.eu-west-1.amazonaws.com
        #[arg(long, env = "MUSTER_API_URL", global = true)]
        api: Option<String>,
        #[command(subcommand)]
        command: IncidentsCommand,
    },
    /// Benchmarks.
    Bench {
        #[command(subcommand)]
        command: BenchCommand,
    },
    /// Stakeholder directory files (YAML or CSV).
    Directory {
        #[command(subcommand)]
        command: DirectoryCommand,
    },
}

#[derive(Subcommand)]
enum BenchCommand {
    /// Latency of POST /v1/incidents for a large group on the local server.
    Trigger {
        #[arg(long, default_value_t = 10_000)]
        members: usize,
        #[arg(long, default_value_t = 200)]
        requests: usize,
    },
    /// One incident of a large group on the local server: the size and
    /// time of its status page, and how long a close takes to answer and
    /// to end every cascade.
    Status {
        #[arg(long, default_value_t = 100_000)]
        members: usize,
        /// Status reads to time.
        #[arg(long, default_value_t = 200)]
        samples: usize,
    },
    /// Run drill scenarios over many seeds and check that every
    /// CASCADE_FAILURE reached a person who acknowledged it (or was
    /// withdrawn, or recorded as ESCALATION_UNDELIVERED), that no chain
    /// named anyone twice and that nobody got two calls or two SMS within
    /// the hold from two cascades. Exits 1 on any violation.
    Escalation {
        /// Scenario files (TOML), e.g. examples/drills/*.toml
        #[arg(required = true)]
        scenarios: Vec<PathBuf>,
        /// Seeds per scenario (1..=N).
        #[arg(long, default_value_t = 100)]
        seeds: u64,
        /// Worker threads (default: the machine's cores).
        #[arg(long)]
        threads: Option<usize>,
    },
    /// Run random mixes of every fault a drill can express (carrier
    /// outages, 429s with and without Retry-After, capacity changes, lost,
    /// late, duplicate and unknown receipts, answers that never come, lost
    /// jobs and timers, re-sent triggers, duplicate acknowledgements, a
    /// failing directory lookup, early closes, empty groups) and check
    /// every invariant and that nobody is left active. Exits 1 on any
    /// violation.
    Faults {
        /// Number of fault mixes.
        #[arg(long, default_value_t = 1_000)]
        seeds: u64,
        /// First seed.
        #[arg(long, default_value_t = 1)]
        from: u64,
        /// Worker threads (default: the machine's cores).
        #[arg(long)]
        threads: Option<usize>,
        /// Print the scenario of seed `--from` instead of running.
        #[arg(long)]
        show: bool,
    },
}

#[derive(Subcommand)]
enum IncidentsCommand {
    /// Declare an incident; prints its id and links.
    Trigger {
        /// Stakeholder group to notify.
        #[arg(long)]
        group: String,
        /// P1 to P4.
        #[arg(long)]
        severity: String,
        /// The message (at most 1,000 characters).
        #[arg(long)]
        message: String,
        /// Incident id (default: INC-<now in ms>).
        #[arg(long)]
        id: Option<String>,
    },
    /// An incident's counts, as JSON.
    Status { id: String },
    /// Close an incident (answers at once; `watch` shows the cancellation).
    Close {
        id: String,
        /// Also send this all-clear to everyone a message reached.
        #[arg(long)]
        all_clear: Option<String>,
    },
    /// Send an update to those a message reached, once, on their best channel.
    Update {
        id: String,
        /// The update (at most 1,000 characters).
        #[arg(long)]
        message: String,
        /// all, acknowledged or unacknowledged.
        #[arg(long, default_value = "all")]
        audience: String,
    },
    /// Export the whole audit trail (seals, then entries) as JSON lines,
    /// page by page, for `muster audit verify`. Needs the
    /// ComplianceOfficer or BCPAdministrator role.
    Audit {
        id: String,
        /// Write to this file (default: stdout).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Progress bars, redrawn until the incident ends.
    Watch {
        id: String,
        /// Seconds between reads.
        #[arg(long, default_value_t = 2)]
        interval: u64,
        /// Give up (exit 1) after this many seconds.
        #[arg(long)]
        timeout: Option<u64>,
    },
}

#[derive(Subcommand)]
enum DirectoryCommand {
    /// Validate a directory file: every error with its line or row and
    /// value, and every group without an escalation path under the policy.
    Check {
        file: PathBuf,
        /// Policy file whose escalation fallback applies (default: the built-in policy).
        #[arg(long)]
        policy: Option<PathBuf>,
    },
    /// Read people and groups from an LDAP server (LDAPS, or StartTLS) and,
    /// only if all of it is valid, write the directory as `import` does.
    /// Bind DN and password: MUSTER_LDAP_BIND_DN, MUSTER_LDAP_PASSWORD.
    Sync {
        /// ldaps://host[:port], or ldap://host[:port] with --starttls.
        #[arg(long)]
        ldap: String,
        #[arg(long)]
        starttls: bool,
        /// PEM file of the CA that signed the server's certificate
        /// (default: the system's roots).
        #[arg(long)]
        ca_file: Option<PathBuf>,
        /// Search base of people (and of groups, unless --group-base).
        #[arg(long)]
        base: String,
        #[arg(long, default_value = "(objectClass=inetOrgPerson)")]
        filter: String,
        #[arg(long)]
        group_base: Option<String>,
        #[arg(long, default_value = "(objectClass=groupOfNames)")]
        group_filter: String,
        /// field=attribute pairs over the defaults (id=uid, name=cn,
        /// tier=employeeType, phone=telephoneNumber, sms=mobile, email=mail,
        /// manager=manager, group_id=cn, group_name=description,
        /// group_members=member, group_on_call=owner).
        #[arg(long, default_value = "")]
        map: String,
        /// Where to write the directory.
        #[arg(long, default_value = ".muster/directory.json")]
        into: PathBuf,
        /// Policy file whose escalation fallback applies (default: the built-in policy).
        #[arg(long)]
        policy: Option<PathBuf>,
    },
    /// Validate a directory file and, only if all of it is valid, write the
    /// normalised directory (E.164 numbers) as JSON.
    Import {
        file: PathBuf,
        /// Where to write the directory.
        #[arg(long, default_value = ".muster/directory.json")]
        into: PathBuf,
        /// Policy file whose escalation fallback applies (default: the built-in policy).
        #[arg(long)]
        policy: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum PolicyCommand {
    /// Validate a policy file and print the effective policy, or every error.
    Check {
        file: PathBuf,
        /// Also check that every group of this directory file has an
        /// escalation path under the policy.
        #[arg(long)]
        directory: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Verify an exported trail (JSON lines): every hash chain, and each
    /// incident's latest seal (signature and chain heads).
    Verify {
        file: PathBuf,
        /// Fail when an incident in the file has no seal.
        #[arg(long)]
        require_seal: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Drill {
            scenario,
            seed,
            json,
            audit,
            html,
        } => drill(scenario, seed, json, audit, html),
        Command::Policy {
            command: PolicyCommand::Check { file, directory },
        } => policy_check(file, directory),
        Command::Audit {
            command: AuditCommand::Verify { file, require_seal },
        } => audit_verify(file, require_seal),
        Command::Serve {
            port,
            directory,
            policy,
            log_format,
            max_connections,
            header_timeout,
            request_timeout,
        } => serve::run(serve::Options {
            port,
            directory,
            policy,
            log_format,
            max_connections,
            header_timeout: std::time::Duration::from_secs(header_timeout.max(1)),
            request_timeout: std::time::Duration::from_secs(request_timeout.max(1)),
        })
        .map(|()| ExitCode::SUCCESS),
        Command::Bench {
            command: BenchCommand::Trigger { members, requests },
        } => bench::trigger(members, requests).map(|()| ExitCode::SUCCESS),
        Command::Bench {
            command: BenchCommand::Status { members, samples },
        } => bench::status(members, samples).map(|()| ExitCode::SUCCESS),
        Command::Bench {
            command:
                BenchCommand::Escalation {
                    scenarios,
                    seeds,
                    threads,
                },
        } => bench::escalation(&scenarios, seeds, threads),
        Command::Bench {
            command:
                BenchCommand::Faults {
                    seeds,
                    from,
                    threads,
                    show,
                },
        } => bench::faults(seeds, from, threads, show),
        Command::Incidents { api, command } => incidents(api, command),
        Command::Directory {
            command: DirectoryCommand::Check { file, policy },
        } => directory(file, None, policy),
        Command::Directory {
            command: DirectoryCommand::Import { file, into, policy },
        } => directory(file, Some(into), policy),
        Command::Directory {
            command:
                DirectoryCommand::Sync {
                    ldap,
                    starttls,
                    ca_file,
                    base,
                    filter,
                    group_base,
                    group_filter,
                    map,
                    into,
                    policy,
                },
        } => {
            let src = ldap::Source {
                url: ldap,
                starttls,
                ca_file,
                group_base: group_base.unwrap_or_else(|| base.clone()),
                people_base: base,
                people_filter: filter,
                group_filter,
                mapping: Default::default(),
            };
            directory_sync(src, &map, into, policy)
        }
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn incidents(api: Option<String>, command: IncidentsCommand) -> anyhow::Result<ExitCode> {
    let api = api.context("--api URL (or MUSTER_API_URL) is required")?;
    let client = incidents::Client::new(&api)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let show = |v: &serde_json::Value| -> anyhow::Result<ExitCode> {
        println!("{}", serde_json::to_string_pretty(v)?);
        Ok(ExitCode::SUCCESS)
    };
    rt.block_on(async {
        match command {
            IncidentsCommand::Trigger {
                group,
                severity,
                message,
                id,
            } => {
                let args = incidents::TriggerArgs {
                    id,
                    group,
                    severity,
                    message,
                };
                show(&incidents::trigger(&client, args).await?)
            }
            IncidentsCommand::Status { id } => {
                let v = incidents::status(&client, &id).await?;
                show(&serde_json::json!({
                    "incident": v["incident"],
                    "counts": v["counts"],
                    "needsReview": v["needsReview"],
                    "progress": v["progress"],
                }))
            }
            IncidentsCommand::Close { id, all_clear } => {
                show(&incidents::close(&client, &id, all_clear.as_deref()).await?)
            }
            IncidentsCommand::Update {
                id,
                message,
                audience,
            } => show(&incidents::update(&client, &id, &message, &audience).await?),
            IncidentsCommand::Audit { id, out } => {
                let n = match out {
                    Some(path) => {
                        let f = std::fs::File::create(&path)
                            .with_context(|| format!("cannot write {}", path.display()))?;
                        incidents::export(&client, &id, &mut std::io::BufWriter::new(f)).await?
                    }
                    None => incidents::export(&client, &id, &mut std::io::stdout().lock()).await?,
                };
                eprintln!("{n} audit entries exported");
                Ok(ExitCode::SUCCESS)
            }
            IncidentsCommand::Watch {
                id,
                interval,
                timeout,
            } => {
                let every = std::time::Duration::from_secs(interval.max(1));
                let limit = timeout.map(std::time::Duration::from_secs);
                incidents::watch(&client, &id, every, limit).await?;
                println!("ended");
                Ok(ExitCode::SUCCESS)
            }
        }
    })
}

pub(crate) fn read(path: &PathBuf) -> anyhow::Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))
}

fn drill(
    path: PathBuf,
    seed: Option<u64>,
    json: Option<PathBuf>,
    audit: Option<PathBuf>,
    html: Option<PathBuf>,
) -> anyhow::Result<ExitCode> {
    let text = read(&path)?;
    let scenario = match Scenario::from_toml(&text) {
        Ok(s) => s,
        Err(errors) => {
            eprintln!("{}: invalid scenario", path.display());
            for e in errors {
                eprintln!("  {e}");
            }
            return Ok(ExitCode::from(1));
        }
    };
    let seed = seed.unwrap_or(scenario.seed);
    let total = scenario.member_cascades();
    let mut drill = Drill::new(scenario, seed);
    let bar = indicatif::ProgressBar::with_draw_target(
        Some(total),
        indicatif::ProgressDrawTarget::stderr(),
    );
    if std::io::stderr().is_terminal() {
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{spinner} {bar:40} {pos}/{len} cascades ended  {msg}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
    } else {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    let report = drill.run(&mut |p| {
        bar.set_position(p.ended.min(total));
        bar.set_message(format!("virtual {}s", p.virtual_secs));
    });
    bar.finish_and_clear();
    print!("{}", report.render());
    if let Some(file) = json {
        let body = serde_json::to_string_pretty(&report)?;
        std::fs::write(&file, body + "\n")
            .with_context(|| format!("cannot write {}", file.display()))?;
    }
    if let Some(file) = html {
        std::fs::write(&file, muster::drill::html::render(&report))
            .with_context(|| format!("cannot write {}", file.display()))?;
    }
    if let Some(file) = audit {
        let f = std::fs::File::create(&file)
            .with_context(|| format!("cannot write {}", file.display()))?;
        let mut w = std::io::BufWriter::new(f);
        let mut result = Ok(());
        drill.store.for_each_audit(|e| {
            if result.is_ok() {
                result = serde_json::to_writer(&mut w, e)
                    .map_err(anyhow::Error::from)
                    .and_then(|()| w.write_all(b"\n").map_err(Into::into));
            }
        });
        for seal in drill.store.all_seals() {
            if result.is_ok() {
                let line = muster::audit::ExportLine::Seal { seal };
                result = serde_json::to_writer(&mut w, &line)
                    .map_err(anyhow::Error::from)
                    .and_then(|()| w.write_all(b"\n").map_err(Into::into));
            }
        }
        result
            .and_then(|()| w.flush().map_err(Into::into))
            .with_context(|| format!("cannot write {}", file.display()))?;
    }
    Ok(if report.passed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    })
}

fn policy_check(path: PathBuf, directory: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    let text = read(&path)?;
    match Policy::from_toml(&text) {
        Ok(p) => {
            if let Some(dir_path) = directory {
                let dir_text = read(&dir_path)?;
                let dir =
                    muster::directory::parse_file(&dir_path, &dir_text).map_err(|errors| {
                        let lines: Vec<String> = errors.iter().map(|e| format!("  {e}")).collect();
                        anyhow::anyhow!(
                            "{}: invalid directory\n{}",
                            dir_path.display(),
                            lines.join("\n")
                        )
                    })?;
                let problems =
                    muster::directory::escalation_paths(&dir.stakeholders, &dir.groups, &p);
                if !problems.is_empty() {
                    println!(
                        "{}: {} error(s) with {}",
                        path.display(),
                        problems.len(),
                        dir_path.display()
                    );
                    for e in problems {
                        println!("  {e}");
                    }
                    return Ok(ExitCode::from(1));
                }
            }
            println!("ok: {}", path.display());
            println!("{}", p.describe());
            Ok(ExitCode::SUCCESS)
        }
        Err(errors) => {
            println!("{}: {} error(s)", path.display(), errors.len());
            for e in errors {
                println!("  {e}");
            }
            Ok(ExitCode::from(1))
        }
    }
}

fn audit_verify(path: PathBuf, require_seal: bool) -> anyhow::Result<ExitCode> {
    use muster::audit::{ExportLine, verify_export};
    let text = read(&path)?;
    let mut lines = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<ExportLine>(line) {
            Ok(l) => lines.push(l),
            Err(e) => {
                println!("FAIL line {}: not an audit entry or seal ({e})", i + 1);
                return Ok(ExitCode::from(1));
            }
        }
    }
    match verify_export(&lines) {
        Ok(v) => {
            println!(
                "ok: {} entries in {} chains, every chain verified",
                v.entries, v.chains
            );
            for id in &v.sealed {
                println!("sealed: {id}: the latest seal's signature and chain heads match");
            }
            for id in &v.unsealed {
                println!(
                    "not sealed: {id}: entries removed from the end of a chain would not be detected"
                );
            }
            Ok(if require_seal && !v.unsealed.is_empty() {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            })
        }
        Err(b) => {
            println!(
                "FAIL line {} ({} seq {}): {}",
                b.line, b.cascade, b.seq, b.problem
            );
            Ok(ExitCode::from(1))
        }
    }
}

fn load_policy(path: Option<&PathBuf>) -> anyhow::Result<Result<Policy, ExitCode>> {
    let Some(path) = path else {
        return Ok(Ok(Policy::default()));
    };
    let text = read(path)?;
    Ok(Policy::from_toml(&text).map_err(|errors| {
        println!("{}: {} error(s)", path.display(), errors.len());
        for e in errors {
            println!("  {e}");
        }
        ExitCode::from(1)
    }))
}

fn directory(
    path: PathBuf,
    into: Option<PathBuf>,
    policy: Option<PathBuf>,
) -> anyhow::Result<ExitCode> {
    let policy = match load_policy(policy.as_ref())? {
        Ok(p) => p,
        Err(code) => return Ok(code),
    };
    let text = read(&path)?;
    let parsed = muster::directory::parse_file(&path, &text);
    write_directory(parsed, &path.display().to_string(), into, &policy)
}

/// `directory sync --ldap`: the server's people and groups, validated and
/// written all or nothing.
fn directory_sync(
    mut src: ldap::Source,
    map: &str,
    into: PathBuf,
    policy: Option<PathBuf>,
) -> anyhow::Result<ExitCode> {
    src.mapping = match muster::directory::ldap::LdapMapping::parse(map) {
        Ok(m) => m,
        Err(e) => {
            println!("--map: {e}");
            return Ok(ExitCode::from(1));
        }
    };
    let policy = match load_policy(policy.as_ref())? {
        Ok(p) => p,
        Err(code) => return Ok(code),
    };
    let (people, groups) = ldap::search(&src)?;
    // A search that finds nobody (a wrong base or filter, entries the bind
    // may not read) must not replace a directory with an empty one.
    if people.is_empty() || groups.is_empty() {
        println!(
            "{}: the search found {} people and {} groups; nothing imported \
             (check --base, --filter, --group-base, --group-filter and the bind's rights)",
            src.url,
            people.len(),
            groups.len()
        );
        return Ok(ExitCode::from(1));
    }
    let parsed = muster::directory::ldap::from_ldap(&people, &groups, &src.mapping);
    write_directory(parsed, &src.url, Some(into), &policy)
}

/// A parsed directory checked for escalation paths and, when all of it
/// is valid and `into` is given, written there (renamed over the old one).
fn write_directory(
    parsed: Result<muster::directory::DirectoryFile, Vec<muster::directory::DirectoryError>>,
    source: &str,
    into: Option<PathBuf>,
    policy: &Policy,
) -> anyhow::Result<ExitCode> {
    let parsed = parsed.and_then(|d| {
        let paths = muster::directory::escalation_paths(&d.stakeholders, &d.groups, policy);
        if paths.is_empty() { Ok(d) } else { Err(paths) }
    });
    let dir = match parsed {
        Ok(d) => d,
        Err(errors) => {
            println!("{source}: {} error(s); nothing imported", errors.len());
            for e in errors {
                println!("  {e}");
            }
            return Ok(ExitCode::from(1));
        }
    };
    let members: usize = dir.groups.iter().map(|g| g.members.len()).sum();
    let summary = format!(
        "{} stakeholders, {} groups ({} memberships)",
        dir.stakeholders.len(),
        dir.groups.len(),
        members
    );
    let Some(into) = into else {
        println!("ok: {source}: {summary}");
        return Ok(ExitCode::SUCCESS);
    };
    if let Some(parent) = into.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
    }
    // Written beside the target and renamed over it: a reader never sees half a file.
    let tmp = into.with_extension("json.partial");
    std::fs::write(&tmp, serde_json::to_vec_pretty(&dir)?)
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, &into).with_context(|| format!("cannot write {}", into.display()))?;
    println!("imported {summary} into {}", into.display());
    Ok(ExitCode::SUCCESS)
}
