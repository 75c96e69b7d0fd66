//! `bitdust-supplier-store`: the supplier daemon (see `bitdust_supplier`).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

/// Stores customers' encrypted fragments on this machine and serves them over
/// QUIC; reports on a local gRPC socket.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// Configuration file (section [supplier]).
    #[arg(long, value_name = "FILE", env = "BITDUST_CONFIG")]
    config: Option<PathBuf>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    bitdust_daemon::main(
        "bitdust-supplier-store",
        args.config.as_deref(),
        bitdust_supplier::run,
    )
}
