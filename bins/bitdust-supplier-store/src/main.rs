//! `bitdust-supplier-store`: the supplier daemon (see `bitdust_supplier`).
//! The command line is in `bitdust_daemon::cli`.

fn main() -> std::process::ExitCode {
    bitdust_daemon::main(
        bitdust_daemon::cli::Daemon::SupplierStore,
        bitdust_supplier::run,
    )
}
