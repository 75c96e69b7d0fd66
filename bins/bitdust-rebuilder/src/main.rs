//! `bitdust-rebuilder`: replaces the customer's failing suppliers and
//! rebuilds their fragments (see `bitdust_rebuild`).
//! The command line is in `bitdust_daemon::cli`.

fn main() -> std::process::ExitCode {
    bitdust_daemon::main(bitdust_daemon::cli::Daemon::Rebuilder, bitdust_rebuild::run)
}
