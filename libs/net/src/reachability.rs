//! Whether strangers reach a node: the dial-back a router or a DHT peer
//! makes from a fresh socket, and what it means in words (docs/nat.md).

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use bitdust_crypto::{Identity, NodeId};

use crate::Endpoint;

/// How long a dial-back waits for the node's handshake.
pub const DIAL_BACK_TIMEOUT: Duration = Duration::from_secs(3);

/// Dials node `id` at `to` from a fresh socket (another port than any of
/// this node's, so a NAT that lets in only what the node sent to keeps it
/// out), speaking `alpn` and pinning `id`: `Ok` when the handshake
/// completes within [`DIAL_BACK_TIMEOUT`], else why not.
pub async fn dial_back(
    identity: &Identity,
    to: SocketAddr,
    id: NodeId,
    alpn: &[u8],
) -> Result<(), String> {
    let bind: SocketAddr = if to.is_ipv6() {
        (Ipv6Addr::UNSPECIFIED, 0).into()
    } else {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    };
    let ep = Endpoint::bind(identity, bind, alpn, false).map_err(|e| e.to_string())?;
    let r = tokio::time::timeout(DIAL_BACK_TIMEOUT, ep.connect(to, Some(id))).await;
    let out = match r {
        Ok(Ok(c)) => {
            c.close(0u32.into(), b"dial-back");
            Ok(())
        }
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no answer at {to} within {DIAL_BACK_TIMEOUT:?}")),
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), ep.shutdown()).await;
    out
}

/// The address this host sends from towards `to`, with `port` (no packet
/// is sent).
pub fn local_towards(to: SocketAddr, port: u16) -> Option<SocketAddr> {
    let any: SocketAddr = if to.is_ipv6() {
        (Ipv6Addr::UNSPECIFIED, 0).into()
    } else {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    };
    let s = std::net::UdpSocket::bind(any).ok()?;
    s.connect(to).ok()?;
    Some(SocketAddr::new(s.local_addr().ok()?.ip(), port))
}

/// A node's reachability in words, from what others saw of it:
/// `observed`, the addresses its packets came from as one or more peers
/// saw them (the first is the one dialed back); `reachable`, whether a
/// dial-back from a fresh socket reached it there; `local`, the address it
/// sends from (its IP towards them and its bound port); and `mapped`, the
/// port a mapping of the home router's keeps and the protocol that asked
/// for it, when the dial-back went there.
///
/// Behind a NAT that did not let the dial-back in, several observations
/// tell a cone NAT (one port for every peer) from a symmetric one (a port
/// per peer); with one, a kept port is taken for a cone NAT.
pub fn describe(
    observed: &[SocketAddr],
    reachable: bool,
    local: Option<SocketAddr>,
    mapped: Option<(u16, &str)>,
) -> String {
    let Some(&o) = observed.first() else {
        return "unknown: no peer said where it sees this node".into();
    };
    if let Some((port, protocol)) = mapped {
        let at = SocketAddr::new(o.ip(), port);
        return if reachable {
            format!(
                "mapped: reachable at {at} through the port mapping its home router keeps ({protocol})"
            )
        } else {
            format!(
                "{}; the home router's {protocol} mapping at {at} does not let strangers in (another NAT in front of it?)",
                describe(observed, false, local, None)
            )
        };
    }
    let same_ip = local.is_some_and(|l| l.ip() == o.ip());
    let one_port = if observed.len() > 1 {
        observed.iter().all(|a| a.port() == o.port())
    } else {
        local.is_some_and(|l| l.port() == o.port())
    };
    match (reachable, same_ip, one_port) {
        (true, true, _) => format!("public: reachable at {o}"),
        (true, false, _) => format!(
            "mapped: reachable at {o} through a NAT that lets strangers in (full cone, or a port mapping)"
        ),
        (false, true, _) => format!("firewalled: strangers cannot reach {o}"),
        (false, false, true) => format!(
            "behind a cone NAT (one mapping for every peer) at {o} that lets in only what it sent to: peers punch a hole or go through a router"
        ),
        (false, false, false) => format!(
            "behind a symmetric NAT (seen at {o}, another port for each peer): peers go through a router unless they can be dialed"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> SocketAddr {
        s.parse().unwrap_or_else(|_| unreachable!())
    }

    #[test]
    fn the_words_follow_what_peers_saw() {
        let local = Some(a("10.0.0.2:7900"));
        let public = describe(&[a("10.0.0.2:7900")], true, local, None);
        assert!(public.starts_with("public: reachable at 10.0.0.2:7900"));
        let natted = [a("203.0.114.5:7900"), a("203.0.114.5:7900")];
        assert!(describe(&natted, true, local, None).starts_with("mapped: reachable"));
        assert!(describe(&natted, false, local, None).starts_with("behind a cone NAT"));
        let symmetric = [a("203.0.114.5:4100"), a("203.0.114.5:5200")];
        assert!(describe(&symmetric, false, local, None).starts_with("behind a symmetric NAT"));
        // One observation: a port that is not kept means symmetric.
        assert!(
            describe(&symmetric[..1], false, local, None).starts_with("behind a symmetric NAT")
        );
        assert!(describe(&[a("10.0.0.2:7900")], false, local, None).starts_with("firewalled"));
        let m = describe(&natted, true, local, Some((7901, "PCP")));
        assert_eq!(
            m,
            "mapped: reachable at 203.0.114.5:7901 through the port mapping its home router keeps (PCP)"
        );
        let m = describe(&natted, false, local, Some((7901, "UPnP IGD")));
        assert!(
            m.starts_with("behind a cone NAT")
                && m.contains("UPnP IGD mapping at 203.0.114.5:7901")
        );
        assert!(describe(&[], true, local, None).starts_with("unknown"));
    }
}
