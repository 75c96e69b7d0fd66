//! `bitdustctl`: the command-line client of BitDust.
//!
//! Exit status: 0 success; 1 the backup, restore or verify failed; 2 bad
//! arguments; 3 the customer-agent is not running; 4 done, with warnings
//! (entries skipped, a position that failed during a backup, or a verified
//! backup that has lost fragments but can still be restored).

mod net;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context;
use bitdust_pipeline::local;
use bitdust_pipeline::{BackupOptions, Progress, RestoreOptions};
use bitdustctl::{Cli, Command, KeyCommand, KeysArg, LocalCommand};
use clap::Parser;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;

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
            let id = ring.identity().node_id();
            if json {
                println!(
                    "{}",
                    serde_json::json!({"node_id": id.to_string(), "file": file})
                );
            } else if !quiet {
                println!(
                    "exported the keys of {id} to {} (0600); keep it offline",
                    file.display()
                );
            }
        }
        KeyCommand::Import { file, keys } => {
            let dir = keys.dir()?;
            let ring = bitdust_crypto::KeyRing::import(&dir, file)?;
            let id = ring.identity().node_id();
            if json {
                println!(
                    "{}",
                    serde_json::json!({"node_id": id.to_string(), "keys": dir})
                );
            } else if !quiet {
                println!(
                    "imported the keys of {id} into {}; start (or restart) the customer-agent to recover its backups",
                    dir.display()
                );
            }
        }
    }
    Ok(0)
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
        let mut c = net::connect(&cli.run_dir).await?;
        match &cli.command {
            Command::Status => c.status(json, quiet).await,
            Command::Backup { paths, config } => {
                let paths = backup_paths(paths, config.as_deref())
                    .map_err(|e| net::Failure(EXIT_USAGE, format!("{e:#}")))?;
                c.backup(&paths, json, quiet).await
            }
            Command::List => c.list(json, quiet).await,
            Command::Restore { which, to } => c.restore(which.as_deref(), to, json, quiet).await,
            Command::Delete { which } => c.delete(which, json, quiet).await,
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
            max_block_size,
            keys,
        } => {
            let opts = BackupOptions {
                scheme: *scheme,
                suppliers: *suppliers,
                zstd_level: *zstd_level,
                block_size: *block_size,
                max_block_size: *max_block_size,
            };
            let keys = keys_dir(keys)?;
            let bar = Bar::new(
                show,
                if show { local::tree_size(paths) } else { 0 },
                "backup",
            );
            let start = Instant::now();
            let r = local::backup_to_dir(&keys, paths, to, &opts, &bar);
            bar.done();
            let r = r?;
            let secs = start.elapsed().as_secs_f64();
            let m = &r.manifest;
            for s in &r.skipped {
                eprintln!("bitdustctl: warning: skipped {s}");
            }
            if cli.json {
                println!(
                    "{}",
                    json!({
                        "backup_id": m.backup_id.to_string(), "version": m.version,
                        "suppliers": m.suppliers, "scheme": m.scheme.to_string(), "blocks": m.blocks,
                        "files": r.files, "directories": r.directories, "symlinks": r.symlinks,
                        "content_bytes": r.content_bytes, "archive_bytes": m.archive_bytes,
                        "compressed_bytes": m.compressed_bytes, "stored_bytes": m.stored_bytes,
                        "skipped": r.skipped, "degraded_positions": r.degraded_positions,
                        "seconds": secs, "to": to, "peak_rss_bytes": peak_rss_bytes(),
                    })
                );
            } else if !cli.quiet {
                println!(
                    "backup {}@{}: {} files, {} dirs, {} symlinks, {} bytes -> {} compressed -> {} stored in {} blocks over {} positions ({}) in {:.1}s",
                    m.backup_id,
                    m.version,
                    r.files,
                    r.directories,
                    r.symlinks,
                    r.content_bytes,
                    m.compressed_bytes,
                    m.stored_bytes,
                    m.blocks,
                    m.suppliers,
                    m.scheme,
                    secs
                );
                if !r.degraded_positions.is_empty() {
                    println!(
                        "positions that failed and need repair: {:?}",
                        r.degraded_positions
                    );
                }
            }
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
            keys,
        } => {
            let keys = keys_dir(keys)?;
            let bar = Bar::new(show, 0, "restore");
            let start = Instant::now();
            let r = local::restore_from_dir(
                &keys,
                dir,
                which.unwrap_or_default(),
                to,
                &RestoreOptions::default(),
                &bar,
            );
            bar.done();
            let (m, r) = r?;
            let secs = start.elapsed().as_secs_f64();
            if cli.json {
                println!(
                    "{}",
                    json!({
                        "backup_id": m.backup_id.to_string(), "version": m.version, "to": to,
                        "blocks": r.blocks, "decoded_blocks": r.decoded_blocks, "files": r.files,
                        "directories": r.directories, "symlinks": r.symlinks, "bytes": r.bytes,
                        "rejected_fragments": r.rejected_fragments, "stale_fragments": r.stale_fragments,
                        "skipped": r.skipped, "seconds": secs,
                        "peak_rss_bytes": peak_rss_bytes(),
                    })
                );
            } else if !cli.quiet {
                println!(
                    "restored {}@{} into {}: {} files, {} dirs, {} symlinks, {} bytes; {} of {} blocks needed the ECC decoder; {} fragments rejected, in {:.1}s",
                    m.backup_id,
                    m.version,
                    to.display(),
                    r.files,
                    r.directories,
                    r.symlinks,
                    r.bytes,
                    r.decoded_blocks,
                    r.blocks,
                    r.rejected_fragments.len(),
                    secs
                );
            }
            Ok(if r.skipped.is_empty() {
                0
            } else {
                EXIT_WARNINGS
            })
        }
        LocalCommand::Verify { dir, which, keys } => {
            let keys = keys_dir(keys)?;
            let r = local::verify_dir(&keys, dir, which.unwrap_or_default())?;
            let lost = r.unrecoverable();
            let damaged = r
                .blocks
                .iter()
                .filter(|b| !b.damaged_positions.is_empty())
                .count();
            if cli.json {
                let blocks: Vec<_> = r
                    .blocks
                    .iter()
                    .map(|b| {
                        json!({"block": b.block, "valid_fragments": b.valid_fragments,
                               "total_fragments": b.total_fragments, "damaged_positions": b.damaged_positions,
                               "margin": b.margin, "margin_exact": b.margin_exact})
                    })
                    .collect();
                println!(
                    "{}",
                    json!({"backup_id": r.manifest.backup_id.to_string(), "version": r.manifest.version,
                           "blocks": blocks, "unrecoverable_blocks": lost, "min_margin": r.min_margin(),
                           "rejected_fragments": r.rejected_fragments})
                );
            } else if !cli.quiet || !lost.is_empty() {
                println!(
                    "backup {}@{}: {} blocks over {} positions ({})",
                    r.manifest.backup_id,
                    r.manifest.version,
                    r.blocks.len(),
                    r.manifest.suppliers,
                    r.manifest.scheme
                );
                // Consecutive blocks in the same health are one line.
                let mut i = 0;
                while i < r.blocks.len() {
                    let b = &r.blocks[i];
                    let same = |o: &bitdust_pipeline::BlockHealth| {
                        (
                            o.valid_fragments,
                            &o.damaged_positions,
                            o.margin,
                            o.margin_exact,
                        ) == (
                            b.valid_fragments,
                            &b.damaged_positions,
                            b.margin,
                            b.margin_exact,
                        )
                    };
                    let mut j = i + 1;
                    while j < r.blocks.len() && same(&r.blocks[j]) {
                        j += 1;
                    }
                    let which = if j - i == 1 {
                        format!("block {}", b.block)
                    } else {
                        format!("blocks {}-{}", b.block, r.blocks[j - 1].block)
                    };
                    let m = match b.margin {
                        Some(m) if b.margin_exact => format!("{m} more positions may be lost"),
                        Some(m) => format!("at least {m} more positions may be lost"),
                        None => "CANNOT BE RECOVERED".into(),
                    };
                    let damage = if b.damaged_positions.is_empty() {
                        String::new()
                    } else {
                        format!(", damaged positions {:?}", b.damaged_positions)
                    };
                    println!(
                        "  {which}: {}/{} fragments ok{damage}: {m}",
                        b.valid_fragments, b.total_fragments
                    );
                    i = j;
                }
                for f in &r.rejected_fragments {
                    println!("  rejected {f}");
                }
            }
            if !lost.is_empty() {
                eprintln!(
                    "bitdustctl: {} blocks cannot be recovered (too many positions lost or damaged): {:?}; restore what you can from another copy, and back the data up again",
                    lost.len(),
                    lost
                );
                return Ok(EXIT_FAILED);
            }
            Ok(if damaged > 0 { EXIT_WARNINGS } else { 0 })
        }
        LocalCommand::List { dir } => {
            let all = local::LocalStore::new(dir).list();
            if cli.json {
                let v: Vec<_> = all
                    .iter()
                    .map(|l| json!({"backup_id": l.backup_id.to_string(), "version": l.version, "positions": l.positions}))
                    .collect();
                println!("{}", serde_json::Value::Array(v));
            } else if !cli.quiet {
                for l in &all {
                    println!("{}@{}  positions {:?}", l.backup_id, l.version, l.positions);
                }
            }
            Ok(0)
        }
    }
}
