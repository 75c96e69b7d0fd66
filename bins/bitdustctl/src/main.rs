//! `bitdustctl`: the command-line client of BitDust.
//!
//! Exit status: 0 success; 1 the backup, restore or verify failed; 2 bad
//! arguments; 3 the customer-agent is not running; 4 done, with warnings
//! (entries skipped, a position that failed during a backup, or a verified
//! backup that has lost fragments but can still be restored).

mod net;
mod report;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context;
use bitdust_pipeline::Progress;
use bitdust_pipeline::local;
use bitdust_proto::customer::v1 as pb;
use bitdustctl::{Cli, Command, KeyCommand, KeysArg, LocalCommand};
use clap::Parser;
use indicatif::{ProgressBar, ProgressStyle};

const EXIT_FAILED: u8 = 1;
const EXIT_USAGE: u8 = 2;
const EXIT_WARNINGS: u8 = 4;

/// `bitdustctl key ...`: works on the key files directly, without the agent.
fn run_key(cmd: &KeyCommand, json: bool, quiet: bool) -> anyhow::Result<u8> {
    match cmd {
        KeyCommand::Export { file, keys } => {
            let dir = keys.dir()?;
            let ring = bitdust_crypto::KeyRing::open(&dir)?;
            if file.exists() {
                anyhow::bail!(
                    "{} exists; give a new file name (an export never overwrites)",
                    file.display()
                );
            }
            let text = ring.export()?;
            bitdust_crypto::keyfile::write_secret(file, text.as_bytes())?;
            let r = report::KeyExported {
                node_id: ring.identity().node_id().to_string(),
                file: file.display().to_string(),
            };
            report::emit(&r, json, quiet);
        }
        KeyCommand::Import { file, keys } => {
            let dir = keys.dir()?;
            let ring = bitdust_crypto::KeyRing::import(&dir, file)?;
            let r = report::KeyImported {
                node_id: ring.identity().node_id().to_string(),
                keys: dir.display().to_string(),
            };
            report::emit(&r, json, quiet);
        }
    }
    Ok(0)
}

/// How a restore run as root gives owners back.
fn owners(numeric: bool) -> bitdust_pipeline::snapshot::Owners {
    if numeric {
        bitdust_pipeline::snapshot::Owners::Numeric
    } else {
        bitdust_pipeline::snapshot::Owners::ByName
    }
}

/// The index and files cache of the local store `dir` (`DIR/state`), held
/// by this process while it runs.
fn open_state(
    dir: &std::path::Path,
) -> anyhow::Result<(
    bitdust_daemon::state::StateLock,
    bitdust_pipeline::repo::Repo,
)> {
    let lock = bitdust_daemon::state::StateLock::take(&dir.join("state"), "bitdustctl")?;
    let env = lock.open_env("repo", 16 << 30, bitdust_pipeline::repo::REPO_DATABASES)?;
    Ok((lock, bitdust_pipeline::repo::Repo::open(env)?))
}

fn keys_dir(arg: &KeysArg) -> anyhow::Result<PathBuf> {
    if let Some(k) = &arg.keys {
        return Ok(k.clone());
    }
    if let Some(k) = std::env::var_os("BITDUST_KEYS") {
        return Ok(k.into());
    }
    if let Some(d) = std::env::var_os("XDG_DATA_HOME").filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(d).join("bitdust/keys"));
    }
    let home = std::env::var_os("HOME")
        .context("neither --keys, BITDUST_KEYS nor HOME is set; pass --keys DIR")?;
    Ok(PathBuf::from(home).join(".local/share/bitdust/keys"))
}

/// A progress bar on a terminal, nothing elsewhere.
#[derive(Clone)]
struct Bar(Option<ProgressBar>);

impl Bar {
    fn new(show: bool, total: u64, what: &str) -> Bar {
        if !show || !std::io::stderr().is_terminal() {
            return Bar(None);
        }
        // With a known total: a bar with rate and ETA; without: a spinner.
        let (pb, template) = if total > 0 {
            (
                ProgressBar::new(total),
                format!(
                    "{what} [{{bar:30}}] {{bytes}}/{{total_bytes}} {{bytes_per_sec}} ETA {{eta}}"
                ),
            )
        } else {
            (
                ProgressBar::new_spinner(),
                format!("{{spinner}} {what} {{bytes}} {{bytes_per_sec}} {{elapsed}}"),
            )
        };
        pb.set_style(
            ProgressStyle::with_template(&template)
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        pb.enable_steady_tick(std::time::Duration::from_millis(200));
        Bar(Some(pb))
    }
    fn done(&self) {
        if let Some(pb) = &self.0 {
            pb.finish_and_clear();
        }
    }
    /// Sets how far it got (the agent's count).
    fn set(&self, done: u64) {
        if let Some(pb) = &self.0 {
            pb.set_position(done);
        }
    }
}

impl Progress for Bar {
    fn advance(&self, bytes: u64) {
        if let Some(pb) = &self.0 {
            pb.inc(bytes);
        }
    }
}

/// This process's peak resident set size (Linux `VmHWM`), for `--json`.
fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

fn main() -> ExitCode {
    bitdust_daemon::memory::hand_back_large_buffers();
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { EXIT_USAGE } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    match run(&cli) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("bitdustctl: {e:#}");
            ExitCode::from(EXIT_FAILED)
        }
    }
}

/// Runs a command against the customer-agent.
fn run_net(cli: &Cli) -> Result<u8, net::Failure> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| net::Failure(EXIT_FAILED, format!("cannot start the async runtime: {e}")))?;
    let (json, quiet) = (cli.json, cli.quiet);
    rt.block_on(async {
        if let Command::Rebuild { action } = &cli.command {
            return match action {
                bitdustctl::RebuildCommand::Status => {
                    net::rebuild_status(&cli.run_dir, json, quiet).await
                }
            };
        }
        let mut c = match net::connect(&cli.run_dir).await {
            Ok(c) => c,
            // A machine that only supplies: its supplier's status.
            Err(e) if matches!(cli.command, Command::Status) => {
                return net::supplier_status(&cli.run_dir, json, quiet, e).await;
            }
            Err(e) => return Err(e),
        };
        match &cli.command {
            Command::Status => c.status(&cli.run_dir, json, quiet).await,
            Command::Backup {
                paths,
                config,
                full_copy,
            } => {
                let paths = backup_paths(paths, config.as_deref())
                    .map_err(|e| net::Failure(EXIT_USAGE, format!("{e:#}")))?;
                c.backup(&paths, !*full_copy, json, quiet).await
            }
            Command::List => c.list(json, quiet).await,
            Command::Restore {
                which,
                to,
                include,
                numeric_owner,
            } => {
                c.restore(
                    which.as_deref(),
                    to,
                    include,
                    owners(*numeric_owner),
                    json,
                    quiet,
                )
                .await
            }
            Command::Delete { which } => c.delete(which, json, quiet).await,
            Command::Ls { which, path } => {
                c.ls(which.as_deref(), path.as_deref(), json, quiet).await
            }
            Command::Diff { a, b } => c.diff(a, b, json, quiet).await,
            Command::Forget {
                which,
                policy,
                dry_run,
                prune: _,
            } => {
                c.forget(which.as_deref(), policy, *dry_run, json, quiet)
                    .await
            }
            Command::Prune { which, max_unused } => {
                c.prune(which.as_deref(), *max_unused, json, quiet).await
            }
            Command::Check {
                which,
                read_data_subset,
            } => {
                c.check(which.as_deref(), *read_data_subset, json, quiet)
                    .await
            }
            Command::Stats { which } => c.stats(which.as_deref(), json, quiet).await,
            Command::Suppliers { action } => c.suppliers(action.as_ref(), json, quiet).await,
            Command::StartAfresh { yes } => c.start_afresh(*yes, json, quiet).await,
            Command::Local(_) | Command::Key(_) | Command::Rebuild { .. } => Ok(0),
        }
    })
}

/// The paths to back up: those given, else the config's
/// `customer.backup_paths` (what bitdust-backup.service runs).
fn backup_paths(
    given: &[PathBuf],
    config: Option<&std::path::Path>,
) -> anyhow::Result<Vec<PathBuf>> {
    if !given.is_empty() {
        return Ok(given.to_vec());
    }
    let c = bitdust_config::Config::load(config)?;
    anyhow::ensure!(
        !c.customer.backup_paths.is_empty(),
        "no PATH given and customer.backup_paths in {} is empty; give the paths to back up or set that key",
        c.path.display()
    );
    Ok(c.customer.backup_paths)
}

fn run(cli: &Cli) -> anyhow::Result<u8> {
    if let Command::Key(cmd) = &cli.command {
        return run_key(cmd, cli.json, cli.quiet);
    }
    let Command::Local(cmd) = &cli.command else {
        return match run_net(cli) {
            Ok(code) => Ok(code),
            Err(net::Failure(code, message)) => {
                eprintln!("bitdustctl: {message}");
                Ok(code)
            }
        };
    };
    let show = !cli.quiet && !cli.json;
    match cmd {
        LocalCommand::Backup {
            paths,
            to,
            suppliers,
            scheme,
            zstd_level,
            block_size,
            workers,
            keys,
        } => {
            let opts = bitdust_pipeline::snapshot::SnapshotOptions {
                zstd_level: *zstd_level,
                pack_size: *block_size,
                workers: workers.map_or(0, usize::from),
                ..Default::default()
            };
            let given = local::CodeGiven {
                scheme: *scheme,
                suppliers: *suppliers,
            };
            let keys = keys_dir(keys)?;
            let (_lock, repo) = open_state(to)?;
            let bar = Bar::new(
                show,
                if show { local::tree_size(paths) } else { 0 },
                "backup",
            );
            let start = Instant::now();
            let r = local::snapshot_to_dir(&keys, paths, to, &repo, &opts, given, &bar);
            bar.done();
            let (id, snapshot, opts, r) = r?;
            let secs = start.elapsed().as_secs_f64();
            let r = report::LocalBackedUp::new(id, snapshot, &opts, r, to, secs, peak_rss_bytes());
            for s in &r.skipped {
                eprintln!("bitdustctl: warning: skipped {s}");
            }
            report::emit(&r, cli.json, cli.quiet);
            Ok(if r.skipped.is_empty() && r.degraded_positions.is_empty() {
                0
            } else {
                EXIT_WARNINGS
            })
        }
        LocalCommand::Restore {
            dir,
            which,
            to,
            include,
            numeric_owner,
            workers,
            keys,
        } => {
            let keys = keys_dir(keys)?;
            let (_lock, repo) = open_state(dir)?;
            let include: Vec<Vec<u8>> = include.iter().map(|p| as_backed_up(p)).collect();
            let start = Instant::now();
            let (root, r) = local::restore_snapshot_from_dir_on(
                &keys,
                dir,
                &repo,
                which.unwrap_or_default(),
                to,
                &include,
                owners(*numeric_owner),
                workers.map_or(0, usize::from),
            )?;
            let secs = start.elapsed().as_secs_f64();
            let r = report::LocalRestored::new(&root, r, to, secs, peak_rss_bytes());
            for w in &r.warnings {
                if !cli.quiet {
                    eprintln!("bitdustctl: warning: {w}");
                }
            }
            report::emit(&r, cli.json, cli.quiet);
            Ok(if r.warnings.is_empty() {
                0
            } else {
                EXIT_WARNINGS
            })
        }
        LocalCommand::Verify { dir, which, keys } => {
            let keys = keys_dir(keys)?;
            let (root, r) = local::verify_snapshot_dir(&keys, dir, which.unwrap_or_default())?;
            let r = report::Verified::new(&root, r);
            let lost = &r.unrecoverable_blocks;
            // Even --quiet shows the packs when some are lost.
            report::emit(&r, cli.json, cli.quiet && lost.is_empty());
            if !lost.is_empty() {
                eprintln!(
                    "bitdustctl: {} packs cannot be recovered (too many positions lost or damaged): {:?}; restore what you can from another copy, and back the data up again",
                    lost.len(),
                    lost
                );
                return Ok(EXIT_FAILED);
            }
            Ok(if r.damaged() > 0 { EXIT_WARNINGS } else { 0 })
        }
        LocalCommand::List { dir, keys } => {
            let opened = local::Opened::new(&keys_dir(keys)?, dir)?;
            let all = local::list_snapshots(&opened)?;
            report::emit(&report::LocalListing::from(all), cli.json, cli.quiet);
            Ok(0)
        }
        LocalCommand::Ls {
            dir,
            which,
            path,
            keys,
        } => {
            let opened = local::Opened::new(&keys_dir(keys)?, dir)?;
            let under = path.as_deref().map(as_backed_up).unwrap_or_default();
            let mut out = report::Lines::new(cli.json, cli.quiet);
            local::ls(&opened, which.unwrap_or_default(), &under, |n| {
                out.node(n).map_err(output_failed)
            })?;
            out.finish()?;
            Ok(0)
        }
        LocalCommand::Diff { dir, a, b, keys } => {
            let opened = local::Opened::new(&keys_dir(keys)?, dir)?;
            let mut out = report::Lines::new(cli.json, cli.quiet);
            let (ra, rb, same) =
                local::diff(&opened, *a, *b, |c| out.change(&c).map_err(output_failed))?;
            out.diff_done(
                format!("{}@{}", ra.backup_id, ra.root.snapshot),
                format!("{}@{}", rb.backup_id, rb.root.snapshot),
                same,
            )?;
            Ok(0)
        }
        LocalCommand::Forget {
            dir,
            which,
            policy,
            dry_run,
            prune,
            grace,
            max_unused,
            keys,
        } => {
            let opened = local::Opened::new(&keys_dir(keys)?, dir)?;
            let (_lock, repo) = open_state(dir)?;
            let sel = which.unwrap_or_default();
            let policy = policy.policy();
            if sel.version.is_some() && !policy.is_empty() {
                anyhow::bail!("give either a snapshot (ID@VERSION) or --keep-* rules, not both");
            }
            let r = local::forget(&opened, sel.backup_id, &policy, sel.version, *dry_run)?;
            let id = r.backup_id;
            let mut r = report::Forgot::from(r);
            if *prune && !*dry_run {
                let p = local::prune(
                    &opened,
                    &repo,
                    Some(id),
                    &prune_options(*grace, *max_unused),
                )?;
                r.prune = Some(report::Pruned::new(p));
            }
            report::emit(&r, cli.json, cli.quiet);
            Ok(match &r.prune {
                Some(p) if p.pending() > 0 => EXIT_WARNINGS,
                _ => 0,
            })
        }
        LocalCommand::Prune {
            dir,
            grace,
            max_unused,
            keys,
        } => {
            let opened = local::Opened::new(&keys_dir(keys)?, dir)?;
            let (_lock, repo) = open_state(dir)?;
            let r = report::Pruned::new(local::prune(
                &opened,
                &repo,
                None,
                &prune_options(*grace, *max_unused),
            )?);
            report::emit(&r, cli.json, cli.quiet);
            Ok(if r.pending() > 0 { EXIT_WARNINGS } else { 0 })
        }
        LocalCommand::Stats { dir, which, keys } => {
            let opened = local::Opened::new(&keys_dir(keys)?, dir)?;
            let (_lock, repo) = open_state(dir)?;
            let sel = which.unwrap_or_default();
            let r = report::LocalStats::from(pb::StatsReply::from(local::stats(
                &opened,
                &repo,
                sel.backup_id,
            )?));
            report::emit(&r, cli.json, cli.quiet);
            Ok(0)
        }
        LocalCommand::Check {
            dir,
            which,
            read_data_subset,
            keys,
        } => {
            let opened = local::Opened::new(&keys_dir(keys)?, dir)?;
            let (_lock, repo) = open_state(dir)?;
            let sel = which.unwrap_or_default();
            let r = report::Checked::from(pb::CheckReply::from(local::check(
                &opened,
                &repo,
                sel.backup_id,
                *read_data_subset,
            )?));
            Ok(checked(r, cli.json, cli.quiet))
        }
    }
}

/// Prints what `check` found (even with --quiet when something is wrong)
/// and gives the exit status.
fn checked(r: report::Checked, json: bool, quiet: bool) -> u8 {
    let bad = !r.errors.is_empty() || !r.unrecoverable_packs.is_empty();
    report::emit(&r, json, quiet && !bad && r.damaged_packs == 0);
    if bad {
        eprintln!(
            "bitdustctl: the check found damage that loses data (see above); restore what you can, and back the data up again"
        );
        return EXIT_FAILED;
    }
    if r.damaged_packs > 0 {
        EXIT_WARNINGS
    } else {
        0
    }
}

/// Writing `ls` or `diff` output failed.
fn output_failed(e: std::io::Error) -> local::LocalError {
    local::LocalError::Store(format!("writing the output failed: {e}"))
}

/// A path as snapshots store it: raw bytes without the leading `/`.
pub(crate) fn as_backed_up(p: &std::path::Path) -> Vec<u8> {
    let b = std::os::unix::ffi::OsStrExt::as_bytes(p.as_os_str());
    b.strip_prefix(b"/").unwrap_or(b).to_vec()
}

fn prune_options(grace: u64, max_unused: f64) -> local::PruneOptions {
    local::PruneOptions {
        grace,
        now: now_unix(),
        // 100% unused allowed: nothing to repack for.
        max_unused: (max_unused < 1.0).then_some(max_unused),
        pack_size: bitdust_pipeline::DEFAULT_BLOCK_SIZE,
        stop_after_steps: None,
    }
}

fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
