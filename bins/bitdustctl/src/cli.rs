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
    },
    /// List the backups and their versions (root and the user bitdust see every backup; other users their own).
    List,
    /// Restore a backup version into a new or empty directory; bitdustctl writes the files, as the user running it.
    Restore {
        /// ID or ID@VERSION (an unambiguous prefix of the id will do) [default: the only backup, newest version].
        #[arg(value_name = "ID[@VERSION]")]
        which: Option<String>,
        /// New or empty directory to restore into.
        #[arg(long, value_name = "DIR")]
        to: PathBuf,
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
    /// List the snapshots in DIR (ID@VERSION).
    List {
        /// Directory holding the position directories.
        #[arg(value_name = "DIR")]
        dir: PathBuf,
    },
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
