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
    bitdust_daemon::init_logging();
    let config = match bitdust_config::Config::load(args.config.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("bitdust-supplier-store: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("bitdust-supplier-store: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(bitdust_supplier::run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bitdust-supplier-store: {e:#}");
            ExitCode::FAILURE
        }
    }
}
