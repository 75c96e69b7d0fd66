//! The command line of `bitdustctl`, as clap types: the binary parses it,
//! and `bitdust-gen` makes the man pages and shell completions from it, so
//! they never drift from the CLI.
//!
//! The doc comments here are the help text users read; items that are
//! only plumbing (subcommand holders, flattened groups) carry none.
#![allow(missing_docs)]

use std::path::PathBuf;

use bitdust_ecc::Scheme;
use bitdust_pipeline::local::Selector;
use clap::{Args, Parser, Subcommand};

/// Command-line client of BitDust, the peer-to-peer encrypted backup network.
#[derive(Parser, Debug)]
#[command(
    name = "bitdustctl",
    version,
    about,
    long_about = None,
    after_long_help = "Exit status: 0 success; 1 the backup, restore or verify failed; 2 bad arguments; \
3 the customer-agent is not running; 4 done, with warnings (entries skipped, a position that failed \
during a backup, or a verified backup that has lost fragments but can still be restored). \
With --quiet nothing is printed on success and one line on stderr on failure, for cron: \
`30 2 * * * bitdustctl backup --quiet /home/alice/Documents`. \
Members of the group bitdust may use the sockets in /run/bitdust without root."
)]
pub struct Cli {
    /// Print machine-readable JSON instead of text.
    #[arg(long, global = true)]
    pub json: bool,
    /// Print nothing on success (for cron); errors still go to stderr.
    #[arg(long, short, global = true)]
    pub quiet: bool,
    /// Where the daemons' sockets are.
    #[arg(
        long,
        global = true,
        value_name = "DIR",
        env = "BITDUST_RUN_DIR",
        default_value = "/run/bitdust"
    )]
    pub run_dir: PathBuf,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// This customer's node id, suppliers and backups.
    Status,
    /// Back PATH... up to the suppliers (a new version of the backup of the same paths by the same user); bitdustctl reads the files, as the user running it.
    Backup {
        /// Files or directories to back up [default: customer.backup_paths
        /// of the configuration file].
        #[arg(value_name = "PATH")]
        paths: Vec<PathBuf>,
        /// The configuration file whose customer.backup_paths are backed up
        /// when no PATH is given.
        #[arg(long, value_name = "FILE", env = "BITDUST_CONFIG")]
        config: Option<PathBuf>,
        /// Store a full copy (the format before deduplicated snapshots; it
        /// will go) instead of a snapshot, which reads only the files the
        /// agent's files cache does not vouch for and sends only new chunks.
        #[arg(long)]
        full_copy: bool,
    },
    /// List the backups and their versions (root and the user bitdust see every backup; other users their own).
    List,
    /// Restore a backup version into a new or empty directory; bitdustctl creates the files, as the user running it, and writes them or has the customer-agent write the content of the large ones into them.
    Restore {
        /// ID or ID@VERSION (an unambiguous prefix of the id will do) [default: the only backup, newest version].
        #[arg(value_name = "ID[@VERSION]")]
        which: Option<String>,
        /// New or empty directory to restore into.
        #[arg(long, value_name = "DIR")]
        to: PathBuf,
        /// Snapshots: restore only this path (as backed up, absolute) and
        /// what is under it; repeatable. Only the packs holding it are
        /// fetched.
        #[arg(long, value_name = "PATH")]
        include: Vec<PathBuf>,
        /// Run as root: give owners back by their numeric ids, not by the
        /// user and group names the snapshot keeps.
        #[arg(long)]
        numeric_owner: bool,
    },
    /// List the entries of a snapshot, or those under PATH (the agent needs
    /// master.key). With --json, one JSON object per line.
    Ls {
        /// ID or ID@VERSION [default: the only backup, newest version].
        #[arg(value_name = "ID[@VERSION]")]
        which: Option<String>,
        /// Only this path (as backed up, absolute) and what is under it.
        #[arg(value_name = "PATH")]
        path: Option<PathBuf>,
    },
    /// What changed from snapshot A to snapshot B of one backup: "+" added,
    /// "-" removed, "M" modified (content, mode, mtime, kind or target).
    /// With --json, one JSON object per line.
    Diff {
        /// The older snapshot, ID@VERSION.
        #[arg(value_name = "ID@A")]
        a: String,
        /// The newer snapshot, ID@VERSION (or @VERSION: the same backup).
        #[arg(value_name = "ID@B")]
        b: String,
    },
    /// Forget snapshots by policy (restic's --keep-* flags) or one
    /// ID@VERSION: their roots are deleted, then the packs no snapshot
    /// left references, at every supplier (one that is away later).
    Forget {
        /// The backup (ID), or one snapshot to forget (ID@VERSION) [default: the only backup].
        #[arg(value_name = "ID[@VERSION]")]
        which: Option<String>,
        #[command(flatten)]
        policy: PolicyArgs,
        /// Say what would be forgotten, and change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Accepted as restic takes it: over the network forget always
        /// deletes the packs no snapshot left references.
        #[arg(long)]
        prune: bool,
    },
    /// Delete at every supplier the packs no snapshot references (those a
    /// supplier that was away still holds: backups, delete and forget
    /// prune as they go) and fragments of packs nothing knows, after
    /// repacking mostly-unused packs. Exits 4 when something is left for
    /// the next prune (a supplier away, or a backup running now).
    Prune {
        /// The backup (ID) [default: every backup you may see; one that
        /// is running is left for the next prune].
        #[arg(value_name = "ID")]
        which: Option<String>,
        /// Repack the most unused packs until at most this share of the
        /// referenced data is unused: their live chunks move into new
        /// packs at every supplier (needs master.key at the agent and
        /// every supplier answering; 100%: whole packs only).
        #[arg(long, default_value = "5%", value_parser = parse_share, value_name = "PCT")]
        max_unused: f64,
    },
    /// Check a snapshot backup: every root, every fragment of every pack
    /// (headers, signatures, hashes) at the suppliers, and every
    /// snapshot's entries against the index; --read-data-subset also
    /// decrypts packs and checks every chunk in them.
    Check {
        /// Which backup (ID) [default: the only one].
        #[arg(value_name = "ID")]
        which: Option<String>,
        /// Read back and verify this share of the packs (10%, chosen at
        /// random) or this part of them (1/7 … 7/7 on successive runs).
        #[arg(long, value_name = "N%|n/t")]
        read_data_subset: Option<bitdust_pipeline::local::DataSubset>,
    },
    /// Sizes of a snapshot backup: logical (all snapshots), unique,
    /// compressed, packed (before the erasure code) and stored (after it),
    /// and the deduplication ratio.
    Stats {
        /// Which backup (ID) [default: the only one].
        #[arg(value_name = "ID")]
        which: Option<String>,
    },
    /// Delete a version (ID@VERSION) or every version (ID) from the suppliers.
    Delete {
        /// The backup (ID, every version) or one version (ID@VERSION).
        #[arg(value_name = "ID[@VERSION]")]
        which: String,
    },
    /// List the suppliers, or hire or fire one.
    Suppliers {
        #[command(subcommand)]
        action: Option<SuppliersCommand>,
    },
    /// Offline backups to N local directories, one per would-be supplier.
    #[command(subcommand)]
    Local(LocalCommand),
    /// The rebuilder: its view of the suppliers and its queue.
    Rebuild {
        #[command(subcommand)]
        action: RebuildCommand,
    },
    /// Export this customer's keys, or import them on a new machine.
    #[command(subcommand)]
    Key(KeyCommand),
    /// Give up recovering the backups of imported keys and start as a new
    /// customer under the same key: the backups made before are no longer
    /// reachable from this agent, and the supplier list it publishes
    /// replaces the old one. Without --yes, says so and does nothing.
    StartAfresh {
        /// Really give the old backups up.
        #[arg(long)]
        yes: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum KeyCommand {
    /// Write the customer's identity and master key to FILE (created 0600;
    /// it must not exist). With it alone a new machine finds the suppliers
    /// and restores everything: keep it offline and safe.
    Export {
        /// The file to write.
        #[arg(value_name = "FILE")]
        file: PathBuf,
        #[command(flatten)]
        keys: AgentKeysArg,
    },
    /// Put the keys from FILE (written by `key export`) into the customer's
    /// key directory; then start the customer-agent, which finds its
    /// supplier list in the DHT and its catalog on the suppliers.
    Import {
        /// A file written by `bitdustctl key export`.
        #[arg(value_name = "FILE")]
        file: PathBuf,
        #[command(flatten)]
        keys: AgentKeysArg,
    },
}

#[derive(Args, Debug)]
pub struct AgentKeysArg {
    /// The customer-agent's key directory [default: customer.keys_dir of
    /// the config file].
    #[arg(long, value_name = "DIR")]
    pub keys: Option<PathBuf>,
    /// The configuration file whose key directory is meant.
    #[arg(long, value_name = "FILE", env = "BITDUST_CONFIG")]
    pub config: Option<PathBuf>,
}

impl AgentKeysArg {
    pub fn dir(&self) -> anyhow::Result<PathBuf> {
        if let Some(k) = &self.keys {
            return Ok(k.clone());
        }
        let c = bitdust_config::Config::load(self.config.as_deref())?;
        Ok(c.customer_keys())
    }
}

#[derive(Args, Debug)]
pub struct KeysArg {
    /// Key directory [default: $BITDUST_KEYS, else $XDG_DATA_HOME/bitdust/keys,
    /// else ~/.local/share/bitdust/keys]. Created on first backup.
    #[arg(long, value_name = "DIR")]
    pub keys: Option<PathBuf>,
}

#[derive(Subcommand, Debug)]
pub enum LocalCommand {
    /// Back PATH... up into DIR/<position>/ for positions 0..N-1: a
    /// deduplicated snapshot (only new content is stored; DIR/state keeps
    /// the index and the files cache).
    Backup {
        /// Files or directories to back up.
        #[arg(required = true, value_name = "PATH")]
        paths: Vec<PathBuf>,
        /// Directory that receives one subdirectory per position.
        #[arg(long, value_name = "DIR")]
        to: PathBuf,
        /// Number of suppliers (positions): 2, 4, 7, 13, 18, 26 or 64
        /// [default: the backup's own, 7 for a new one]. Every snapshot of
        /// a backup keeps its first code.
        #[arg(long, value_parser = parse_suppliers)]
        suppliers: Option<usize>,
        /// Erasure-coding scheme: xor (ECC maps, cheap repair) or rs
        /// (Reed-Solomon, any half restores) [default: the backup's own,
        /// xor for a new one].
        #[arg(long, value_parser = parse_scheme)]
        scheme: Option<Scheme>,
        /// zstd compression level (-7..=22).
        #[arg(long, default_value_t = bitdust_pipeline::DEFAULT_ZSTD_LEVEL, allow_negative_numbers = true,
              value_parser = clap::value_parser!(i32).range(-7..=22))]
        zstd_level: i32,
        /// Pack size: new chunks are packed into blocks of about this
        /// size, e.g. 4M, 512K.
        #[arg(long, default_value = "4M", value_parser = parse_size)]
        block_size: usize,
        /// Threads compressing new chunks [default: one per core].
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=256))]
        workers: Option<u16>,
        #[command(flatten)]
        keys: KeysArg,
    },
    /// Restore a backup from whatever positions of DIR are present.
    Restore {
        /// Directory holding the position directories.
        #[arg(value_name = "DIR")]
        dir: PathBuf,
        /// Which backup: ID or ID@VERSION [default: the only backup, newest version].
        #[arg(value_name = "ID[@VERSION]")]
        which: Option<Selector>,
        /// New or empty directory to restore into.
        #[arg(long, value_name = "OUT")]
        to: PathBuf,
        /// Restore only this path (as backed up, absolute) and what is under
        /// it; repeatable. Only the packs holding it are read.
        #[arg(long, value_name = "PATH")]
        include: Vec<PathBuf>,
        /// Run as root: give owners back by their numeric ids, not by the
        /// user and group names the snapshot keeps.
        #[arg(long)]
        numeric_owner: bool,
        /// Threads decompressing chunks of 64 KiB and more (at most 8; 1
        /// leaves it to the thread writing the files), and as many opening
        /// packs (at most 4) [default: one per core].
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=256))]
        workers: Option<u16>,
        #[command(flatten)]
        keys: KeysArg,
    },
    /// Check every fragment and report per pack how many more positions may be lost.
    Verify {
        /// Directory holding the position directories.
        #[arg(value_name = "DIR")]
        dir: PathBuf,
        /// Which backup: ID or ID@VERSION [default: the only backup, newest version].
        #[arg(value_name = "ID[@VERSION]")]
        which: Option<Selector>,
        #[command(flatten)]
        keys: KeysArg,
    },
    /// List the snapshots in DIR: ID@VERSION, time, size, what each added,
    /// and its paths (those need master.key).
    List {
        /// Directory holding the position directories.
        #[arg(value_name = "DIR")]
        dir: PathBuf,
        #[command(flatten)]
        keys: KeysArg,
    },
    /// List the entries of a snapshot, or those under PATH (needs
    /// master.key). With --json, one JSON object per line.
    Ls {
        /// Directory holding the position directories.
        #[arg(value_name = "DIR")]
        dir: PathBuf,
        /// Which snapshot: ID or ID@VERSION [default: the only backup, newest version].
        #[arg(value_name = "ID[@VERSION]")]
        which: Option<Selector>,
        /// Only this path (as backed up, absolute) and what is under it.
        #[arg(value_name = "PATH")]
        path: Option<PathBuf>,
        #[command(flatten)]
        keys: KeysArg,
    },
    /// What changed from snapshot A to snapshot B: "+" added, "-" removed,
    /// "M" modified (content, mode, mtime, kind or target); needs
    /// master.key. With --json, one JSON object per line.
    Diff {
        /// Directory holding the position directories.
        #[arg(value_name = "DIR")]
        dir: PathBuf,
        /// The older snapshot, ID@VERSION.
        #[arg(value_name = "ID@A")]
        a: Selector,
        /// The newer snapshot, ID@VERSION.
        #[arg(value_name = "ID@B")]
        b: Selector,
        #[command(flatten)]
        keys: KeysArg,
    },
    /// Forget snapshots by policy (restic's --keep-* flags) or one
    /// ID@VERSION: their roots are removed; their data stays until a
    /// prune (--prune runs one right after).
    Forget {
        /// Directory holding the position directories.
        #[arg(value_name = "DIR")]
        dir: PathBuf,
        /// The backup (ID), or one snapshot to forget (ID@VERSION) [default: the only backup].
        #[arg(value_name = "ID[@VERSION]")]
        which: Option<Selector>,
        #[command(flatten)]
        policy: PolicyArgs,
        /// Say what would be forgotten, and change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Prune right after forgetting.
        #[arg(long)]
        prune: bool,
        /// With --prune: see `prune --grace`.
        #[arg(long, default_value = "1d", value_parser = parse_grace, value_name = "SPAN")]
        grace: u64,
        /// With --prune: see `prune --max-unused`.
        #[arg(long, default_value = "5%", value_parser = parse_share, value_name = "PCT")]
        max_unused: f64,
        #[command(flatten)]
        keys: KeysArg,
    },
    /// Delete the packs no remaining snapshot references, at every
    /// position (a position directory that is missing now is done by a
    /// later prune). Safe to interrupt; needs no master.key.
    Prune {
        /// Directory holding the position directories.
        #[arg(value_name = "DIR")]
        dir: PathBuf,
        /// Keep unreferenced packs younger than this span (1y2m3d4h form;
        /// 0h: none): a failed backup's packs, which the next run reuses.
        #[arg(long, default_value = "1d", value_parser = parse_grace, value_name = "SPAN")]
        grace: u64,
        /// Repack the most unused packs until at most this share of the
        /// referenced data is unused (needs master.key; without it, or
        /// with 100%, only whole packs are deleted).
        #[arg(long, default_value = "5%", value_parser = parse_share, value_name = "PCT")]
        max_unused: f64,
        #[command(flatten)]
        keys: KeysArg,
    },
    /// Check a backup: every root, every fragment of every pack (headers,
    /// signatures, hashes), and with master.key every snapshot's entries
    /// against the index; --read-data-subset also decrypts packs and
    /// checks every chunk in them.
    Check {
        /// Directory holding the position directories.
        #[arg(value_name = "DIR")]
        dir: PathBuf,
        /// Which backup (ID) [default: the only one].
        #[arg(value_name = "ID")]
        which: Option<Selector>,
        /// Read back and verify this share of the packs (10%, chosen at
        /// random) or this part of them (1/7 … 7/7 on successive runs).
        #[arg(long, value_name = "N%|n/t")]
        read_data_subset: Option<bitdust_pipeline::local::DataSubset>,
        #[command(flatten)]
        keys: KeysArg,
    },
    /// Sizes of a backup: logical (all snapshots), unique, compressed,
    /// packed (before the erasure code) and stored (after it), and the
    /// deduplication ratio. Needs no master.key.
    Stats {
        /// Directory holding the position directories.
        #[arg(value_name = "DIR")]
        dir: PathBuf,
        /// Which backup (ID) [default: the only one].
        #[arg(value_name = "ID")]
        which: Option<Selector>,
        #[command(flatten)]
        keys: KeysArg,
    },
}

/// restic's keep rules.
#[derive(Args, Debug, Default)]
pub struct PolicyArgs {
    /// Keep the N newest snapshots.
    #[arg(long, value_name = "N")]
    pub keep_last: Option<u32>,
    /// Keep the newest snapshot of each of the N newest hours that have one.
    #[arg(long, value_name = "N")]
    pub keep_hourly: Option<u32>,
    /// Keep the newest snapshot of each of the N newest days (UTC) that have one.
    #[arg(long, value_name = "N")]
    pub keep_daily: Option<u32>,
    /// Keep the newest snapshot of each of the N newest ISO weeks that have one.
    #[arg(long, value_name = "N")]
    pub keep_weekly: Option<u32>,
    /// Keep the newest snapshot of each of the N newest months that have one.
    #[arg(long, value_name = "N")]
    pub keep_monthly: Option<u32>,
    /// Keep the newest snapshot of each of the N newest years that have one.
    #[arg(long, value_name = "N")]
    pub keep_yearly: Option<u32>,
    /// Keep every snapshot taken within SPAN of the newest (1y2m3d4h form).
    #[arg(long, value_name = "SPAN")]
    pub keep_within: Option<bitdust_pipeline::forget::Within>,
}

impl PolicyArgs {
    pub fn policy(&self) -> bitdust_pipeline::forget::Policy {
        bitdust_pipeline::forget::Policy {
            last: self.keep_last,
            hourly: self.keep_hourly,
            daily: self.keep_daily,
            weekly: self.keep_weekly,
            monthly: self.keep_monthly,
            yearly: self.keep_yearly,
            within: self.keep_within,
        }
    }
}

/// A share written `5%` or `5`, as a fraction.
pub fn parse_share(s: &str) -> Result<f64, String> {
    let v: f64 = s
        .trim_end_matches('%')
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a share; write e.g. 5%"))?;
    if !(0.0..=100.0).contains(&v) {
        return Err(format!("{s:?}: a share is between 0% and 100%"));
    }
    Ok(v / 100.0)
}

/// A span in seconds (a month is 30 days, a year 365).
pub fn parse_grace(s: &str) -> Result<u64, String> {
    let w: bitdust_pipeline::forget::Within = s.parse()?;
    Ok(u64::from(w.years) * 365 * 86400
        + u64::from(w.months) * 30 * 86400
        + u64::from(w.days) * 86400
        + u64::from(w.hours) * 3600)
}

pub fn parse_suppliers(s: &str) -> Result<usize, String> {
    let n: usize = s.parse().map_err(|_| format!("{s:?} is not a number"))?;
    if bitdust_ecc::SUPPLIER_COUNTS.contains(&n) {
        Ok(n)
    } else {
        Err(format!(
            "{n} suppliers is not supported; use one of 2, 4, 7, 13, 18, 26, 64"
        ))
    }
}

pub fn parse_scheme(s: &str) -> Result<Scheme, String> {
    s.parse::<Scheme>()
        .map_err(|_| format!("{s:?} is not a scheme; use xor or rs"))
}

pub fn parse_size(s: &str) -> Result<usize, String> {
    bitdust_config::parse_size(s)
        .ok()
        .and_then(|v| usize::try_from(v).ok())
        .filter(|v| *v > 0)
        .ok_or_else(|| format!("{s:?} is not a size; write e.g. 4M, 512K or 1048576"))
}

#[derive(Subcommand, Debug)]
pub enum SuppliersCommand {
    /// Hire the supplier at ADDR (host:port, or NODEID@host:port to pin its key)
    /// for the first free position, or --position. Without ADDR, hire
    /// suppliers found in the DHT: for --position, or for every free position.
    Hire {
        /// host:port, or NODEID@host:port [default: found in the DHT].
        #[arg(value_name = "ADDR")]
        address: Option<String>,
        /// Position to bind (0-based).
        #[arg(long)]
        position: Option<u32>,
    },
    /// Fire the supplier at POSITION: it deletes our fragments, the position
    /// becomes free.
    Fire {
        /// The position (0-based) whose supplier is fired.
        #[arg(value_name = "POSITION")]
        position: u32,
    },
}

#[derive(Subcommand, Debug)]
pub enum RebuildCommand {
    /// The rebuilder's view of the suppliers, its counters and its queue.
    Status,
}
