//! `bitdust-customer-agent`: the customer daemon (see `bitdust_customer`).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

/// Holds this customer's keys and supplier set; backs folders up to the
/// suppliers over QUIC and restores them, driven by bitdustctl over a local
/// gRPC socket.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// Configuration file (section [customer]).
    #[arg(long, value_name = "FILE", env = "BITDUST_CONFIG")]
    config: Option<PathBuf>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    bitdust_daemon::main(
        "bitdust-customer-agent",
        args.config.as_deref(),
        bitdust_customer::run,
    )
}
