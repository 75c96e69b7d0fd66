//! `bitdust-rebuilder`: replaces the customer's failing suppliers and
//! rebuilds their fragments (see `bitdust_rebuild`).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

/// Watches this customer's suppliers; fires the failing ones, hires
/// replacements through the DHT and regenerates the lost fragments from
/// the others (ciphertext only); reports on a local gRPC socket.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// Configuration file (sections [rebuilder] and [customer]).
    #[arg(long, value_name = "FILE", env = "BITDUST_CONFIG")]
    config: Option<PathBuf>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    bitdust_daemon::main(
        "bitdust-rebuilder",
        args.config.as_deref(),
        bitdust_rebuild::run,
    )
}
