//! The command line of the four daemons, in one place: each binary parses
//! it, and `bitdust-gen` makes their man pages from the same definitions.

use std::path::PathBuf;

use clap::{Arg, Command};

/// One of the daemons.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Daemon {
    /// `bitdust-dht-peer`.
    DhtPeer,
    /// `bitdust-supplier-store`.
    SupplierStore,
    /// `bitdust-customer-agent`.
    CustomerAgent,
    /// `bitdust-rebuilder`.
    Rebuilder,
}

impl Daemon {
    /// Every daemon.
    pub const ALL: [Daemon; 4] = [
        Daemon::DhtPeer,
        Daemon::SupplierStore,
        Daemon::CustomerAgent,
        Daemon::Rebuilder,
    ];

    /// The binary's name.
    pub fn name(self) -> &'static str {
        match self {
            Daemon::DhtPeer => "bitdust-dht-peer",
            Daemon::SupplierStore => "bitdust-supplier-store",
            Daemon::CustomerAgent => "bitdust-customer-agent",
            Daemon::Rebuilder => "bitdust-rebuilder",
        }
    }

    fn about(self) -> &'static str {
        match self {
            Daemon::DhtPeer => {
                "A node of BitDust's distributed hash table: finds suppliers for customers and keeps customers' supplier lists, with no central server"
            }
            Daemon::SupplierStore => {
                "Stores customers' encrypted fragments on this machine and serves them over QUIC"
            }
            Daemon::CustomerAgent => {
                "Holds this customer's keys and suppliers; backs folders up to the suppliers and restores them, driven by bitdustctl"
            }
            Daemon::Rebuilder => {
                "Watches this customer's suppliers, replaces failing ones with suppliers found in the DHT and regenerates their fragments"
            }
        }
    }

    fn long_about(self) -> &'static str {
        match self {
            Daemon::DhtPeer => concat!(
                "A node of BitDust's distributed hash table (Kademlia over QUIC). Suppliers publish signed offers through it, ",
                "customers find suppliers and publish their supplier lists through it; there is no central server.\n\n",
                "It listens on dht.listen (UDP, default 0.0.0.0:7900) for other nodes, bootstraps from dht.bootstrap, ",
                "and serves gRPC (bitdust.dht.v1.Dht, reflection, health) on <run_dir>/dht.sock. ",
                "Its identity and routing table are kept under <state_dir>/dht. ",
                "Under systemd it runs as bitdust-dht.service."
            ),
            Daemon::SupplierStore => concat!(
                "The supplier: stores customers' encrypted fragments on this machine and serves them over QUIC to the ",
                "customers who hired it, each customer seeing only its own. It publishes a signed offer (address, free space) ",
                "through the local dht-peer.\n\n",
                "It listens on supplier.listen (UDP, default 0.0.0.0:7800) and serves gRPC (bitdust.supplier.v1.Supplier, ",
                "reflection, health) on <run_dir>/supplier.sock. Its identity and the fragments are kept under <state_dir>/supplier. ",
                "Under systemd it runs as bitdust-supplier.service."
            ),
            Daemon::CustomerAgent => concat!(
                "The customer: holds this customer's keys and supplier set, hires suppliers (from the config or the DHT), ",
                "and backs folders up to them and restores them, driven by bitdustctl. It listens on no network port: it only dials.\n\n",
                "It serves gRPC (bitdust.customer.v1.Customer, reflection, health) on <run_dir>/customer.sock; ",
                "its keys and state are kept under <state_dir>/customer. Under systemd it runs as bitdust-customer.service, ",
                "with no capability: it opens no user's file. bitdustctl reads the files to back up and streams them; on restore ",
                "it writes the files, or creates the large ones and passes them on <run_dir>/customer.fds.sock for the agent ",
                "to write into (only files on local filesystems: on FUSE, NFS and the like their content streams). ",
                "Each caller runs at most 2 backups, 2 restores and 2 listings at once, users together 8 of each ",
                "(root's and the agent's user's apart); one more is refused at once."
            ),
            Daemon::Rebuilder => concat!(
                "Watches this customer's suppliers through the customer-agent (pings, and audits of random fragments). ",
                "When too many are unreachable, or one has been unreachable too long, or fails audits, it fires the least ",
                "reliable one, has the agent hire a replacement found in the DHT, and regenerates the lost fragments from ",
                "the other suppliers (ciphertext only: it never reads the master key).\n\n",
                "It serves gRPC (bitdust.rebuilder.v1.Rebuilder, reflection, health) on <run_dir>/rebuilder.sock; its ",
                "queue is kept under <state_dir>/rebuilder. Under systemd it runs as bitdust-rebuilder.service."
            ),
        }
    }

    /// The daemon's command line.
    pub fn command(self) -> Command {
        Command::new(self.name())
            .version(env!("CARGO_PKG_VERSION"))
            .about(self.about())
            .long_about(self.long_about())
            .after_long_help(
                "Exit status: 0 after SIGTERM or SIGINT; 1 when it cannot run (the reason is logged and printed on stderr); 2 when the configuration is bad. See bitdust.toml(5).",
            )
            .arg(
                Arg::new("config")
                    .long("config")
                    .value_name("FILE")
                    .env("BITDUST_CONFIG")
                    .value_parser(clap::value_parser!(PathBuf))
                    .help("Configuration file [default: /etc/bitdust/bitdust.toml; absent means every default]"),
            )
    }

    /// Parses this process's arguments (exits with help, version or a usage
    /// error as clap does); the config file given, if any.
    pub fn parse_args(self) -> Option<PathBuf> {
        self.command()
            .get_matches()
            .get_one::<PathBuf>("config")
            .cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_daemon_command_is_well_formed() {
        for d in Daemon::ALL {
            d.command().debug_assert();
        }
    }
}
