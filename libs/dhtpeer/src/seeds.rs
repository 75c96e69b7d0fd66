//! Bootstrap seeds from the config, resolved through DNS with
//! hickory-resolver:
//!
//! - `host:port`: the A and AAAA records of `host` (an IP needs no DNS);
//! - `NODEID@host:port`: the same, and the node must prove that id;
//! - `name` (no port): the SRV records `_bitdust-dht._udp.<name>`, whose
//!   targets are then resolved to A/AAAA.
//!
//! The DNS server is the system's (/etc/resolv.conf) unless the config
//! names one (`dht.resolver`), as the tests do with a DNS server on
//! loopback.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use bitdust_crypto::NodeId;
use hickory_resolver::config::{NameServerConfig, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::RData;
use hickory_resolver::{Resolver, TokioResolver};

/// The SRV service label of DHT seeds.
pub const SRV_PREFIX: &str = "_bitdust-dht._udp.";

/// A seed as written in the config.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Seed {
    /// `host:port`, maybe with the node id it must prove.
    Address {
        /// The pinned node id.
        id: Option<NodeId>,
        /// The host name or IP.
        host: String,
        /// The port.
        port: u16,
    },
    /// A domain name whose SRV records list the seeds.
    Domain(String),
}

/// A seed that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SeedError {
    /// Not a seed.
    #[error("{0:?} is not host:port, NODEID@host:port or a domain name")]
    Syntax(String),
    /// DNS had no answer.
    #[error("cannot resolve the seed {seed}: {reason}")]
    Resolve {
        /// The seed.
        seed: String,
        /// Why.
        reason: String,
    },
    /// The resolver could not be set up.
    #[error("cannot set up the DNS resolver: {0}; check /etc/resolv.conf or set dht.resolver")]
    Resolver(String),
}

impl Seed {
    /// Parses one entry of `dht.bootstrap`.
    pub fn parse(s: &str) -> Result<Seed, SeedError> {
        let bad = || SeedError::Syntax(s.to_owned());
        let (id, rest) = match s.split_once('@') {
            Some((id, rest)) => (Some(id.parse::<NodeId>().map_err(|_| bad())?), rest),
            None => (None, s),
        };
        if let Ok(a) = rest.parse::<SocketAddr>() {
            return Ok(Seed::Address {
                id,
                host: a.ip().to_string(),
                port: a.port(),
            });
        }
        match rest.rsplit_once(':') {
            Some((host, port)) if !host.is_empty() && !host.contains(':') => Ok(Seed::Address {
                id,
                host: host.to_owned(),
                port: port.parse().map_err(|_| bad())?,
            }),
            Some(_) => Err(bad()),
            None if id.is_none() && valid_name(rest) => Ok(Seed::Domain(rest.to_owned())),
            None => Err(bad()),
        }
    }
}

fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        })
}

/// Resolves seeds to addresses.
pub struct SeedResolver {
    resolver: TokioResolver,
}

impl SeedResolver {
    /// A resolver asking `server` (`ip` or `ip:port`), or the system's
    /// servers when `None`.
    pub fn new(server: Option<&str>) -> Result<SeedResolver, SeedError> {
        let mut builder = match server {
            Some(s) => {
                let addr = s
                    .parse::<SocketAddr>()
                    .or_else(|_| s.parse::<IpAddr>().map(|ip| SocketAddr::new(ip, 53)))
                    .map_err(|_| SeedError::Resolver(format!("{s:?} is not ip or ip:port")))?;
                let mut ns = NameServerConfig::udp_and_tcp(addr.ip());
                for c in &mut ns.connections {
                    c.port = addr.port();
                }
                Resolver::builder_with_config(
                    ResolverConfig::from_name_servers(vec![ns]),
                    TokioRuntimeProvider::default(),
                )
            }
            None => Resolver::builder_tokio().map_err(|e| SeedError::Resolver(e.to_string()))?,
        };
        let opts = builder.options_mut();
        opts.timeout = Duration::from_secs(3);
        opts.attempts = 2;
        let resolver = builder
            .build()
            .map_err(|e| SeedError::Resolver(e.to_string()))?;
        Ok(SeedResolver { resolver })
    }

    /// The addresses of `seed`, each with the node id it must prove when
    /// the seed pins one.
    pub async fn resolve(
        &self,
        seed: &Seed,
    ) -> Result<Vec<(Option<NodeId>, SocketAddr)>, SeedError> {
        match seed {
            Seed::Address { id, host, port } => Ok(self
                .ips(host)
                .await?
                .into_iter()
                .map(|ip| (*id, SocketAddr::new(ip, *port)))
                .collect()),
            Seed::Domain(name) => {
                let srv_name = format!("{SRV_PREFIX}{name}.");
                let err = |reason: String| SeedError::Resolve {
                    seed: name.clone(),
                    reason,
                };
                let lookup = self
                    .resolver
                    .srv_lookup(srv_name.as_str())
                    .await
                    .map_err(|e| err(format!("no SRV record {srv_name}: {e}")))?;
                let mut targets: Vec<(u16, u16, String, u16)> = lookup
                    .answers()
                    .iter()
                    .filter_map(|r| match &r.data {
                        RData::SRV(srv) => Some((
                            srv.priority,
                            u16::MAX - srv.weight,
                            srv.target.to_ascii(),
                            srv.port,
                        )),
                        _ => None,
                    })
                    .collect();
                if targets.is_empty() {
                    return Err(err(format!("{srv_name} has no SRV records")));
                }
                targets.sort();
                let mut out = Vec::new();
                for (_, _, target, port) in targets {
                    match self.ips(&target).await {
                        Ok(ips) => {
                            out.extend(ips.into_iter().map(|ip| (None, SocketAddr::new(ip, port))))
                        }
                        Err(e) => tracing::warn!("{e}"),
                    }
                }
                if out.is_empty() {
                    return Err(err("no SRV target resolves to an address".into()));
                }
                Ok(out)
            }
        }
    }

    async fn ips(&self, host: &str) -> Result<Vec<IpAddr>, SeedError> {
        if let Ok(ip) = host.parse::<IpAddr>() {
            return Ok(vec![ip]);
        }
        let fqdn = if host.ends_with('.') {
            host.to_owned()
        } else {
            format!("{host}.")
        };
        let ips: Vec<IpAddr> = self
            .resolver
            .lookup_ip(fqdn.as_str())
            .await
            .map_err(|e| SeedError::Resolve {
                seed: host.to_owned(),
                reason: e.to_string(),
            })?
            .iter()
            .collect();
        Ok(ips)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn seeds_parse() {
        let id = bitdust_crypto::Identity::generate().node_id();
        assert_eq!(
            Seed::parse("127.0.0.1:7900").unwrap(),
            Seed::Address {
                id: None,
                host: "127.0.0.1".into(),
                port: 7900
            }
        );
        assert_eq!(
            Seed::parse(&format!("{id}@seed.example.org:7901")).unwrap(),
            Seed::Address {
                id: Some(id),
                host: "seed.example.org".into(),
                port: 7901
            }
        );
        assert_eq!(
            Seed::parse("[::1]:7900").unwrap(),
            Seed::Address {
                id: None,
                host: "::1".into(),
                port: 7900
            }
        );
        assert_eq!(
            Seed::parse("bitdust.example.org").unwrap(),
            Seed::Domain("bitdust.example.org".into())
        );
        for bad in ["", "host:", "host:port", "x@host:1", "a b", "::1"] {
            let e = Seed::parse(bad).unwrap_err().to_string();
            assert!(e.contains("is not host:port"), "{bad}: {e}");
        }
    }
}
