//! `bitdust-dht-peer`: one node of the DHT (see `bitdust_dhtpeer`).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

/// A node of BitDust's distributed hash table: finds suppliers for
/// customers and keeps customers' supplier lists, with no central server;
/// reports on a local gRPC socket.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// Configuration file (section [dht]).
    #[arg(long, value_name = "FILE", env = "BITDUST_CONFIG")]
    config: Option<PathBuf>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    bitdust_daemon::main(
        "bitdust-dht-peer",
        args.config.as_deref(),
        bitdust_dhtpeer::run,
    )
}
