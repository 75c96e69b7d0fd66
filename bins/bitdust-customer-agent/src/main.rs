//! `bitdust-customer-agent`: the customer daemon (see `bitdust_customer`).
//! The command line is in `bitdust_daemon::cli`.

fn main() -> std::process::ExitCode {
    bitdust_daemon::main(
        bitdust_daemon::cli::Daemon::CustomerAgent,
        bitdust_customer::run,
    )
}
