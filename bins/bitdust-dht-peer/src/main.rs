//! `bitdust-dht-peer`: one node of the DHT (see `bitdust_dhtpeer`).
//! The command line is in `bitdust_daemon::cli`.

fn main() -> std::process::ExitCode {
    bitdust_daemon::main(bitdust_daemon::cli::Daemon::DhtPeer, bitdust_dhtpeer::run)
}
