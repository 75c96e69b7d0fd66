//! The configuration file shared by every BitDust daemon:
//! `/etc/bitdust/bitdust.toml` by default, one section per daemon.
//!
//! Parsing is strict: an unknown key or a bad value stops the daemon at start
//! with the file, the key and the reason. Every key has a default, so an
//! empty (or, at the default path, absent) file is a valid configuration.
//!
//! ```toml
//! run_dir = "/run/bitdust"          # sockets: <run_dir>/supplier.sock, customer.sock
//! state_dir = "/var/lib/bitdust"    # state: <state_dir>/<daemon>/
//!
//! [dht]
//! listen = "0.0.0.0:7900"           # QUIC, for other DHT nodes
//! bootstrap = ["seed.example.org"]  # host:port, NODEID@host:port, or a domain (SRV)
//!
//! [supplier]
//! listen = "0.0.0.0:7800"           # QUIC, for customers
//! advertise = "192.0.2.10:7800"     # what customers dial (published in the DHT)
//! capacity = "100 GiB"              # donated space
//!
//! [customer]
//! suppliers = 7                     # positions: 2, 4, 7, 13, 18, 26 or 64
//! needed_space = "10 GiB"
//! supplier_addresses = ["NODEID@192.0.2.10:7800"]
//! ```

mod size;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

pub use size::{ByteSize, parse_size};

/// Where the configuration is read from when no `--config` is given.
pub const DEFAULT_PATH: &str = "/etc/bitdust/bitdust.toml";

/// The configuration could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read the config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML or has an unknown key or bad value.
    #[error("config file {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// toml's message, which names the line, the key and the reason.
        message: String,
    },
    /// A value parsed but is not usable.
    #[error("config file {path}: key {key}: {reason}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// The dotted key.
        key: String,
        /// Why.
        reason: String,
    },
}

/// The whole file.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Where the daemons' Unix sockets are.
    pub run_dir: PathBuf,
    /// Where each daemon keeps its state, in a directory of its own.
    pub state_dir: PathBuf,
    /// The dht-peer daemon.
    pub dht: DhtConfig,
    /// The supplier-store daemon.
    pub supplier: SupplierConfig,
    /// The customer-agent daemon.
    pub customer: CustomerConfig,
    /// The rebuilder daemon.
    pub rebuilder: RebuilderConfig,
    /// The router (relay) role of the dht-peer daemon.
    pub router: RouterConfig,
    /// Where the file was read from (not a key).
    #[serde(skip)]
    pub path: PathBuf,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            run_dir: PathBuf::from("/run/bitdust"),
            state_dir: PathBuf::from("/var/lib/bitdust"),
            dht: DhtConfig::default(),
            supplier: SupplierConfig::default(),
            customer: CustomerConfig::default(),
            rebuilder: RebuilderConfig::default(),
            router: RouterConfig::default(),
            path: PathBuf::from(DEFAULT_PATH),
        }
    }
}

/// `[dht]`
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DhtConfig {
    /// UDP address of the QUIC endpoint other DHT nodes connect to.
    pub listen: SocketAddr,
    /// `host:port` other nodes reach this one at; default: `listen` when
    /// its IP is a specific one; with an unspecified IP (0.0.0.0), the
    /// address a peer's dial-back reaches it at, and none (it only asks)
    /// while nobody does.
    pub advertise: Option<String>,
    /// The gRPC socket; default `<run_dir>/dht.sock`.
    pub socket: Option<PathBuf>,
    /// The state directory; default `<state_dir>/dht`.
    pub state_dir: Option<PathBuf>,
    /// Nodes to join through: `host:port` (A/AAAA), `NODEID@host:port`
    /// (pinned), or a bare domain name (SRV `_bitdust-dht._udp.<name>`).
    pub bootstrap: Vec<String>,
    /// The DNS server (`ip` or `ip:port`) that resolves `bootstrap`;
    /// default: the system's (/etc/resolv.conf).
    pub resolver: Option<String>,
    /// Seconds between refreshes of the routing table's buckets (and new
    /// bootstrap attempts while the table is empty).
    pub refresh_secs: u64,
    /// Seconds between republishes of the records this node publishes.
    pub republish_secs: u64,
    /// Records held for others at most.
    pub max_records: usize,
    /// Store requests one peer may send in a burst, refilled at 1 per second.
    pub store_burst: u32,
    /// Protocols to ask the home router for a mapping of `listen`'s port
    /// with (as `supplier.port_mapping`); asked only without `advertise`
    /// and with an unspecified `listen` IP. `[]`: never.
    pub port_mapping: Vec<PortMapping>,
}

impl Default for DhtConfig {
    fn default() -> Self {
        DhtConfig {
            listen: SocketAddr::from(([0, 0, 0, 0], 7900)),
            advertise: None,
            socket: None,
            state_dir: None,
            bootstrap: Vec::new(),
            resolver: None,
            refresh_secs: 900,
            republish_secs: 1800,
            max_records: 100_000,
            store_burst: 60,
            port_mapping: vec![PortMapping::Pcp, PortMapping::NatPmp, PortMapping::Upnp],
        }
    }
}

/// `[router]`: the router (relay) role, run by the dht-peer daemon. A
/// router forwards the QUIC packets of connections between nodes that
/// proved their keys, so nodes nobody can dial still serve; it never sees
/// inside them.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RouterConfig {
    /// Whether this node is a router (and advertises itself in the DHT).
    pub enabled: bool,
    /// UDP address of the router's QUIC endpoint.
    pub listen: SocketAddr,
    /// `ip:port` other nodes dial, published in the DHT; default: `listen`
    /// when its IP is a specific one, else the DHT's advertised IP with
    /// `listen`'s port.
    pub advertise: Option<String>,
    /// Clients connected at once, in all.
    pub max_clients: usize,
    /// Reservations (nodes reachable through this router) held at once.
    pub max_reservations: usize,
    /// Clients from one source address (an IPv4 address or an IPv6 /64).
    pub max_clients_per_address: usize,
    /// Reservations from one source address.
    pub max_reservations_per_address: usize,
    /// What each client may send through the router, per second (a token
    /// bucket; beyond it packets are dropped).
    pub rate: ByteSize,
    /// The token bucket's size.
    pub burst: ByteSize,
    /// Bytes one connection may send through the router before the router
    /// ends it (0: no cap).
    pub max_bytes_per_connection: ByteSize,
    /// Seconds one connection may live (0: no cap); a node with a
    /// reservation links again.
    pub max_connection_secs: u64,
}

impl Default for RouterConfig {
    fn default() -> Self {
        RouterConfig {
            enabled: false,
            listen: SocketAddr::from(([0, 0, 0, 0], 7910)),
            advertise: None,
            max_clients: 512,
            max_reservations: 128,
            max_clients_per_address: 16,
            max_reservations_per_address: 4,
            rate: ByteSize(12 << 20),
            burst: ByteSize(4 << 20),
            max_bytes_per_connection: ByteSize(64 << 30),
            max_connection_secs: 6 * 3600,
        }
    }
}

/// `[supplier]`
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SupplierConfig {
    /// UDP address of the QUIC endpoint customers connect to.
    pub listen: SocketAddr,
    /// `host:port` customers dial, published in the supplier's offer in the
    /// DHT; default: `listen` when its IP is a specific one (with 0.0.0.0 no
    /// offer is published: set this).
    pub advertise: Option<String>,
    /// Publish a signed offer through the local dht-peer, so customers
    /// find this supplier.
    pub publish: bool,
    /// Seconds between fresh offers (each lives three times as long).
    pub publish_secs: u64,
    /// The gRPC socket; default `<run_dir>/supplier.sock`.
    pub socket: Option<PathBuf>,
    /// The state directory; default `<state_dir>/supplier`.
    pub state_dir: Option<PathBuf>,
    /// Space donated to customers in all.
    pub capacity: ByteSize,
    /// The largest object a customer may store.
    pub max_object_size: ByteSize,
    /// The most customers served at once.
    pub max_customers: u32,
    /// A customer's service that stores nothing this many seconds after it
    /// was granted ends, and its quota goes back to the others.
    pub unused_service_secs: u64,
    /// The most services that store nothing yet, per source address (an
    /// IPv4 address or an IPv6 /64): identities cost nothing, addresses do.
    pub max_unused_per_address: u32,
    /// The most services in all per source address: a host cannot reserve
    /// the whole capacity under many identities with a byte stored in each.
    pub max_services_per_address: u32,
    /// Routers (`NODEID@ip:port`) to hold a reservation on, for a supplier
    /// customers cannot dial (behind a NAT): its offer names them, and
    /// customers that cannot reach it directly go through one. Empty, with
    /// no `advertise` and an unspecified `listen` IP: found in the DHT.
    pub routers: Vec<String>,
    /// Protocols to ask the home router for a mapping of `listen`'s port
    /// with, tried in this order: `pcp`, `nat-pmp`, `upnp`. Asked only
    /// without `advertise` and with an unspecified `listen` IP; `[]`: never.
    pub port_mapping: Vec<PortMapping>,
}

/// A port mapping protocol (`supplier.port_mapping`).
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum PortMapping {
    /// Port Control Protocol (RFC 6887).
    Pcp,
    /// NAT-PMP (RFC 6886).
    NatPmp,
    /// UPnP IGD.
    Upnp,
}

impl PortMapping {
    /// Whether `list` allows PCP, NAT-PMP and UPnP IGD, in that order.
    pub fn allowed(list: &[PortMapping]) -> [bool; 3] {
        [Self::Pcp, Self::NatPmp, Self::Upnp].map(|p| list.contains(&p))
    }
}

impl Default for SupplierConfig {
    fn default() -> Self {
        SupplierConfig {
            listen: SocketAddr::from(([0, 0, 0, 0], 7800)),
            advertise: None,
            publish: true,
            publish_secs: 600,
            socket: None,
            state_dir: None,
            capacity: ByteSize(10 << 30),
            max_object_size: ByteSize(64 << 20),
            max_customers: 1000,
            unused_service_secs: 86_400,
            max_unused_per_address: 4,
            max_services_per_address: 16,
            routers: Vec::new(),
            port_mapping: vec![PortMapping::Pcp, PortMapping::NatPmp, PortMapping::Upnp],
        }
    }
}

/// `[customer]`
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CustomerConfig {
    /// The gRPC socket; default `<run_dir>/customer.sock`.
    pub socket: Option<PathBuf>,
    /// The state directory; default `<state_dir>/customer`.
    pub state_dir: Option<PathBuf>,
    /// The keys; default `<customer state dir>/keys`.
    pub keys_dir: Option<PathBuf>,
    /// Local UDP address the agent dials suppliers from (it accepts only the
    /// connections of suppliers it is punching a hole to).
    pub bind: SocketAddr,
    /// Number of supplier positions.
    pub suppliers: usize,
    /// Space the customer asks for in all (each supplier gets needed / N x 2).
    pub needed_space: ByteSize,
    /// `xor` (the ECC maps) or `rs` (Reed-Solomon).
    pub scheme: String,
    /// Versions of each backup kept; older ones are deleted from the suppliers.
    pub keep_versions: u32,
    /// Desired block size.
    pub block_size: ByteSize,
    /// zstd level, 1..=19.
    pub zstd_level: i32,
    /// Threads compressing a backup's new chunks and decompressing a
    /// restore's; 0 for one per core.
    pub workers: u32,
    /// Suppliers bound to positions 0, 1, ... at start when those are free:
    /// `NODEID@host:port`.
    pub supplier_addresses: Vec<String>,
    /// Seconds to wait for a supplier to answer before counting it down.
    pub timeout_secs: u64,
    /// Fill the positions the config lists no supplier for with suppliers
    /// found in the DHT (through the local dht-peer).
    pub hire_from_dht: bool,
    /// What `bitdustctl backup` backs up when given no path (and so what
    /// bitdust-backup.service backs up on its timer).
    pub backup_paths: Vec<PathBuf>,
}

impl Default for CustomerConfig {
    fn default() -> Self {
        CustomerConfig {
            socket: None,
            state_dir: None,
            keys_dir: None,
            bind: SocketAddr::from(([0, 0, 0, 0], 0)),
            suppliers: 7,
            needed_space: ByteSize(1 << 30),
            scheme: "xor".into(),
            keep_versions: 10,
            block_size: ByteSize(4 << 20),
            zstd_level: 2, // bitdust_pipeline::DEFAULT_ZSTD_LEVEL
            workers: 0,
            supplier_addresses: Vec::new(),
            timeout_secs: 10,
            hire_from_dht: true,
            backup_paths: Vec::new(),
        }
    }
}

/// `[rebuilder]`
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RebuilderConfig {
    /// The gRPC socket; default `<run_dir>/rebuilder.sock`.
    pub socket: Option<PathBuf>,
    /// The state directory (the rebuild queue); default `<state_dir>/rebuilder`.
    pub state_dir: Option<PathBuf>,
    /// Seconds between checks (pings) of the customer's suppliers.
    pub check_secs: u64,
    /// Every how many checks the suppliers are also audited (0: never).
    pub audit_every: u32,
    /// Unreachable suppliers at which the least reliable one is fired; 0:
    /// the map's (1 for 2 and 4 suppliers, 2 for 7, 13 and 18, 3 for 26,
    /// 5 for 64).
    pub fire_threshold: u32,
    /// A supplier unreachable this many seconds is fired whatever the
    /// threshold.
    pub unreachable_secs: u64,
    /// A supplier that failed this many audits is fired.
    pub max_failed_audits: u64,
    /// Blocks rebuilt at once (1 to 64); each holds one block's fragments
    /// in memory, so memory grows with it.
    pub parallel_blocks: u32,
}

impl Default for RebuilderConfig {
    fn default() -> Self {
        RebuilderConfig {
            socket: None,
            state_dir: None,
            check_secs: 60,
            audit_every: 10,
            fire_threshold: 0,
            unreachable_secs: 24 * 3600,
            max_failed_audits: 3,
            parallel_blocks: 1,
        }
    }
}

impl Config {
    /// Reads `path`, or the default path when `None` (whose absence means
    /// "all defaults"; an explicitly given file must exist).
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        let (path, required) = match path {
            Some(p) => (p.to_owned(), true),
            None => (PathBuf::from(DEFAULT_PATH), false),
        };
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if !required && e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(source) => return Err(ConfigError::Read { path, source }),
        };
        Config::parse(&text, &path)
    }

    /// Parses `text` as the file at `path` (for messages).
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let mut config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: one_line(&e, text),
        })?;
        config.path = path.to_owned();
        config.validate()?;
        Ok(config)
    }

    fn invalid(&self, key: &str, reason: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            path: self.path.clone(),
            key: key.into(),
            reason: reason.into(),
        }
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let c = &self.customer;
        if !bitdust_ecc::SUPPLIER_COUNTS.contains(&c.suppliers) {
            return Err(self.invalid(
                "customer.suppliers",
                format!("{} is not one of 2, 4, 7, 13, 18, 26, 64", c.suppliers),
            ));
        }
        if c.scheme.parse::<bitdust_ecc::Scheme>().is_err() {
            return Err(self.invalid(
                "customer.scheme",
                format!("{:?} is not a scheme; use \"xor\" or \"rs\"", c.scheme),
            ));
        }
        if c.keep_versions == 0 {
            return Err(self.invalid("customer.keep_versions", "must keep at least 1 version"));
        }
        if !(1..=19).contains(&c.zstd_level) {
            return Err(self.invalid("customer.zstd_level", "must be between 1 and 19"));
        }
        if c.workers > 256 {
            return Err(self.invalid("customer.workers", "must be from 0 (one per core) to 256"));
        }
        if c.block_size.0 < 64 << 10 || c.block_size.0 > 64 << 20 {
            return Err(self.invalid("customer.block_size", "must be between 64 KiB and 64 MiB"));
        }
        if c.needed_space.0 == 0 {
            return Err(self.invalid("customer.needed_space", "must be more than 0"));
        }
        if c.timeout_secs == 0 {
            return Err(self.invalid("customer.timeout_secs", "must be at least 1"));
        }
        for (i, a) in c.supplier_addresses.iter().enumerate() {
            if !a.contains('@') || !a.contains(':') {
                return Err(self.invalid(
                    &format!("customer.supplier_addresses[{i}]"),
                    format!("{a:?} is not NODEID@host:port"),
                ));
            }
        }
        if c.supplier_addresses.len() > c.suppliers {
            return Err(self.invalid(
                "customer.supplier_addresses",
                format!(
                    "lists {} suppliers for {} positions",
                    c.supplier_addresses.len(),
                    c.suppliers
                ),
            ));
        }
        let d = &self.dht;
        for (i, b) in d.bootstrap.iter().enumerate() {
            if b.is_empty() || b.contains(char::is_whitespace) {
                return Err(self.invalid(
                    &format!("dht.bootstrap[{i}]"),
                    format!("{b:?} is not host:port, NODEID@host:port or a domain name"),
                ));
            }
        }
        if let Some(r) = &d.resolver
            && r.parse::<std::net::IpAddr>().is_err()
            && r.parse::<SocketAddr>().is_err()
        {
            return Err(self.invalid(
                "dht.resolver",
                format!("{r:?} is not an IP address or ip:port"),
            ));
        }
        for (key, a) in [
            ("dht.advertise", &d.advertise),
            ("supplier.advertise", &self.supplier.advertise),
            ("router.advertise", &self.router.advertise),
        ] {
            // Peers accept only IP literals (they never resolve names
            // another node sent them).
            if let Some(a) = a
                && a.parse::<SocketAddr>().is_err()
            {
                return Err(self.invalid(
                    key,
                    format!("{a:?} is not an IP address and port (peers do not resolve names)"),
                ));
            }
            if let Some(a) = a
                && a.rsplit_once(':')
                    .is_none_or(|(h, p)| h.is_empty() || p.parse::<u16>().is_err())
            {
                return Err(self.invalid(key, format!("{a:?} is not host:port")));
            }
        }
        if d.refresh_secs == 0 || d.republish_secs == 0 {
            return Err(self.invalid("dht.refresh_secs", "intervals must be at least 1 second"));
        }
        if d.max_records == 0 || d.store_burst == 0 {
            return Err(self.invalid("dht.max_records", "limits must be at least 1"));
        }
        let ro = &self.router;
        for (key, v) in [
            ("router.max_clients", ro.max_clients),
            ("router.max_reservations", ro.max_reservations),
            ("router.max_clients_per_address", ro.max_clients_per_address),
            (
                "router.max_reservations_per_address",
                ro.max_reservations_per_address,
            ),
        ] {
            if v == 0 {
                return Err(self.invalid(key, "must be at least 1"));
            }
        }
        if ro.rate.0 < 64 << 10 {
            return Err(self.invalid("router.rate", "must be at least 64 KiB (per second)"));
        }
        if ro.burst.0 < 64 << 10 {
            return Err(self.invalid("router.burst", "must be at least 64 KiB"));
        }
        let r = &self.rebuilder;
        if r.check_secs == 0 || r.unreachable_secs == 0 {
            return Err(self.invalid(
                "rebuilder.check_secs",
                "intervals must be at least 1 second",
            ));
        }
        if r.fire_threshold as usize > c.suppliers {
            return Err(self.invalid(
                "rebuilder.fire_threshold",
                format!(
                    "{} is more than the {} positions",
                    r.fire_threshold, c.suppliers
                ),
            ));
        }
        if r.max_failed_audits == 0 {
            return Err(self.invalid("rebuilder.max_failed_audits", "must be at least 1"));
        }
        if !(1..=64).contains(&r.parallel_blocks) {
            return Err(self.invalid("rebuilder.parallel_blocks", "must be from 1 to 64"));
        }
        let s = &self.supplier;
        if s.publish_secs == 0 {
            return Err(self.invalid("supplier.publish_secs", "must be at least 1"));
        }
        if s.max_object_size.0 < 1 << 20 {
            return Err(self.invalid("supplier.max_object_size", "must be at least 1 MiB"));
        }
        if s.max_customers == 0 {
            return Err(self.invalid("supplier.max_customers", "must be at least 1"));
        }
        if s.unused_service_secs == 0 {
            return Err(self.invalid("supplier.unused_service_secs", "must be at least 1"));
        }
        if s.max_unused_per_address == 0 {
            return Err(self.invalid("supplier.max_unused_per_address", "must be at least 1"));
        }
        if s.max_services_per_address == 0 {
            return Err(self.invalid("supplier.max_services_per_address", "must be at least 1"));
        }
        for (i, r) in s.routers.iter().enumerate() {
            let ok = r.split_once('@').is_some_and(|(id, a)| {
                id.len() == 52 && a.parse::<SocketAddr>().is_ok_and(|a| a.port() > 0)
            });
            if !ok {
                return Err(self.invalid(
                    &format!("supplier.routers[{i}]"),
                    format!("{r:?} is not NODEID@ip:port (an IP literal)"),
                ));
            }
        }
        Ok(())
    }

    /// The dht-peer's gRPC socket.
    pub fn dht_socket(&self) -> PathBuf {
        self.dht
            .socket
            .clone()
            .unwrap_or_else(|| self.run_dir.join("dht.sock"))
    }

    /// The dht-peer's state directory.
    pub fn dht_state(&self) -> PathBuf {
        self.dht
            .state_dir
            .clone()
            .unwrap_or_else(|| self.state_dir.join("dht"))
    }

    /// The rebuilder's gRPC socket.
    pub fn rebuilder_socket(&self) -> PathBuf {
        self.rebuilder
            .socket
            .clone()
            .unwrap_or_else(|| self.run_dir.join("rebuilder.sock"))
    }

    /// The rebuilder's state directory.
    pub fn rebuilder_state(&self) -> PathBuf {
        self.rebuilder
            .state_dir
            .clone()
            .unwrap_or_else(|| self.state_dir.join("rebuilder"))
    }

    /// The supplier's gRPC socket.
    pub fn supplier_socket(&self) -> PathBuf {
        self.supplier
            .socket
            .clone()
            .unwrap_or_else(|| self.run_dir.join("supplier.sock"))
    }

    /// The supplier's state directory.
    pub fn supplier_state(&self) -> PathBuf {
        self.supplier
            .state_dir
            .clone()
            .unwrap_or_else(|| self.state_dir.join("supplier"))
    }

    /// The customer's gRPC socket.
    pub fn customer_socket(&self) -> PathBuf {
        self.customer
            .socket
            .clone()
            .unwrap_or_else(|| self.run_dir.join("customer.sock"))
    }

    /// The customer's state directory.
    pub fn customer_state(&self) -> PathBuf {
        self.customer
            .state_dir
            .clone()
            .unwrap_or_else(|| self.state_dir.join("customer"))
    }

    /// The customer's key directory.
    pub fn customer_keys(&self) -> PathBuf {
        self.customer
            .keys_dir
            .clone()
            .unwrap_or_else(|| self.customer_state().join("keys"))
    }
}

/// toml's multi-line message ("TOML parse error at line 3, column 1", the
/// line, a caret, the reason) folded into one line.
/// The dotted key whose value is being read, when the error has a position.
fn one_line(e: &toml::de::Error, text: &str) -> String {
    let reason = e.message().trim().to_owned();
    let Some(span) = e.span() else {
        return reason;
    };
    let before = &text[..span.start.min(text.len())];
    let line_no = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let line = text[line_start..].lines().next().unwrap_or("");
    let key = line
        .split_once('=')
        .map(|(k, _)| k.trim())
        .filter(|_| span.start > line_start + line.find('=').unwrap_or(0));
    let section = before[..line_start]
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.starts_with('['))
        .map(|l| l.trim_matches(|c| c == '[' || c == ']').trim().to_owned());
    match key {
        Some(k) if !reason.contains(k) => {
            let dotted = section.map_or_else(|| k.to_owned(), |s| format!("{s}.{k}"));
            format!("line {line_no}: key {dotted}: {reason}")
        }
        _ => format!("line {line_no}: {reason}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("/etc/bitdust/bitdust.toml"))
    }

    #[test]
    fn empty_is_all_defaults() {
        let c = parse("").unwrap();
        assert_eq!(c.supplier_socket(), Path::new("/run/bitdust/supplier.sock"));
        assert_eq!(c.customer_state(), Path::new("/var/lib/bitdust/customer"));
        assert_eq!(c.customer.suppliers, 7);
    }

    #[test]
    fn values_and_overrides_parse() {
        let c = parse(
            "run_dir = \"/tmp/r\"\n[supplier]\ncapacity = \"2 GiB\"\nlisten = \"127.0.0.1:9000\"\n\
             [customer]\nsuppliers = 18\nneeded_space = 1048576\nscheme = \"rs\"\n",
        )
        .unwrap();
        assert_eq!(c.supplier.capacity.0, 2 << 30);
        assert_eq!(c.customer.needed_space.0, 1 << 20);
        assert_eq!(c.customer_socket(), Path::new("/tmp/r/customer.sock"));
        assert_eq!(c.supplier.listen.port(), 9000);
    }

    #[test]
    fn unknown_keys_and_bad_values_name_file_key_and_reason() {
        let e = parse("[supplier]\ncapacty = \"1G\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("/etc/bitdust/bitdust.toml") && e.contains("capacty"),
            "{e}"
        );
        assert!(e.contains("line 2"), "{e}");
        assert!(!e.contains('\n'), "{e}");
        let e = parse("[customer]\nsuppliers = 5\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("customer.suppliers") && e.contains("5 is not one of"),
            "{e}"
        );
        let e = parse("[supplier]\ncapacity = \"lots\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("capacity") && e.contains("not a size"), "{e}");
        let e = parse("[supplier]\nlisten = \"nowhere\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("listen"), "{e}");
        let e = parse("[supplier]\nport_mapping = [\"upnp\", \"stun\"]\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("port_mapping") && e.contains("`stun`") && e.contains("`nat-pmp`"),
            "{e}"
        );
        let c = parse("[supplier]\nport_mapping = [\"nat-pmp\"]\n").unwrap();
        assert_eq!(c.supplier.port_mapping, vec![PortMapping::NatPmp]);
        assert_eq!(parse("").unwrap().supplier.port_mapping.len(), 3);
        let e = parse("[customer]\nscheme = \"raid\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("customer.scheme"), "{e}");
        let e = parse("[customer]\nworkers = 1000\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("customer.workers") && e.contains("one per core"),
            "{e}"
        );
        assert_eq!(
            parse("[customer]\nworkers = 3\n").unwrap().customer.workers,
            3
        );
    }

    #[test]
    fn a_missing_default_file_is_defaults_but_a_named_one_is_an_error() {
        let tmp = tempfile::tempdir().unwrap();
        let e = Config::load(Some(&tmp.path().join("nope.toml"))).unwrap_err();
        assert!(e.to_string().contains("nope.toml"), "{e}");
    }
}
