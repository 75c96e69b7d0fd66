//! Port mapping: asks the home router to forward a UDP port of its public
//! address to this host's port, over PCP, NAT-PMP or UPnP IGD (the
//! `portmapper` crate), keeps the mapping renewed at half its lifetime, and
//! removes it at shutdown (docs/nat.md).
//!
//! The gateway is probed first, and the mapping is then asked for and
//! renewed over one protocol only: the first of PCP, NAT-PMP and UPnP IGD
//! that is allowed and that the gateway answers. (Left to itself,
//! `portmapper` asks over UPnP until a probe says otherwise, and would renew
//! a PCP mapping over UPnP once its probe is 10 minutes old.)

use std::net::SocketAddrV4;
use std::num::NonZeroU16;
use std::time::Duration;

use tokio::sync::watch;

/// The protocols a node may ask its home router for a mapping with.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Protocols {
    /// Port Control Protocol (RFC 6887).
    pub pcp: bool,
    /// NAT-PMP (RFC 6886).
    pub nat_pmp: bool,
    /// UPnP IGD (`WANIPConnection`'s `AddAnyPortMapping`).
    pub upnp: bool,
}

impl From<[bool; 3]> for Protocols {
    /// PCP, NAT-PMP and UPnP IGD, in that order.
    fn from([pcp, nat_pmp, upnp]: [bool; 3]) -> Self {
        Protocols { pcp, nat_pmp, upnp }
    }
}

impl Protocols {
    /// Whether any is allowed.
    pub fn any(self) -> bool {
        self.pcp || self.nat_pmp || self.upnp
    }
}

/// What the mapping is at a moment.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct State {
    /// The public address the gateway forwards to this host's port.
    pub external: Option<SocketAddrV4>,
    /// The protocol it was asked with (`"PCP"`, `"NAT-PMP"`, `"UPnP IGD"`).
    pub protocol: Option<&'static str>,
    /// When there is none, why, in words (empty before the first probe).
    pub why_not: String,
}

/// How long to wait before probing a gateway that answered none of the
/// allowed protocols again, and between asks while there is no mapping.
const RETRY: Duration = Duration::from_secs(120);

/// A port mapping kept in the background for as long as this lives.
pub struct PortMap {
    state: watch::Receiver<State>,
    client: watch::Receiver<Option<portmapper::Client>>,
    task: tokio::task::JoinHandle<()>,
}

impl PortMap {
    /// Starts keeping a mapping of this host's UDP `port`, asked over the
    /// first of `protocols` (PCP, NAT-PMP, UPnP IGD, in that order) the
    /// gateway answers. `None` when `port` is 0 or no protocol is allowed.
    pub fn start(port: u16, protocols: Protocols) -> Option<PortMap> {
        let port = NonZeroU16::new(port)?;
        if !protocols.any() {
            return None;
        }
        let (state_tx, state) = watch::channel(State::default());
        let (client_tx, client) = watch::channel(None);
        let task = tokio::spawn(keep(port, protocols, state_tx, client_tx));
        Some(PortMap {
            state,
            client,
            task,
        })
    }

    /// The mapping now, and every change.
    pub fn state(&self) -> watch::Receiver<State> {
        self.state.clone()
    }

    /// Removes the mapping at the gateway and stops, waiting at most
    /// `within` for the gateway's answer.
    pub async fn release(self, within: Duration) {
        self.task.abort();
        let client = self.client.borrow().clone();
        let Some(client) = client else { return };
        // Deactivated even when the last state said no mapping: a renewal
        // in flight may have one at the gateway all the same.
        client.deactivate();
        // The client's service takes one message at a time, and a
        // deactivation is done (the gateway told to remove the mapping)
        // before the probe after it is looked at.
        let _ = tokio::time::timeout(within, client.probe()).await;
        tracing::info!("removed the port mapping");
    }
}

/// The background task of [`PortMap`].
async fn keep(
    port: NonZeroU16,
    allowed: Protocols,
    state: watch::Sender<State>,
    client_tx: watch::Sender<Option<portmapper::Client>>,
) {
    let config = |p: Protocols| portmapper::Config {
        enable_upnp: p.upnp,
        enable_pcp: p.pcp,
        enable_nat_pmp: p.nat_pmp,
        protocol: portmapper::Protocol::Udp,
    };
    // Which protocol the gateway speaks.
    let (chosen, name) = loop {
        let prober = portmapper::Client::new(config(allowed));
        let probe = match prober.probe().await {
            Ok(Ok(p)) => Ok(p),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("the port mapping service stopped".to_owned()),
        };
        drop(prober);
        let pick = probe.as_ref().ok().and_then(|p| {
            if allowed.pcp && p.pcp {
                Some((
                    Protocols {
                        pcp: true,
                        ..Default::default()
                    },
                    "PCP",
                ))
            } else if allowed.nat_pmp && p.nat_pmp {
                Some((
                    Protocols {
                        nat_pmp: true,
                        ..Default::default()
                    },
                    "NAT-PMP",
                ))
            } else if allowed.upnp && p.upnp {
                Some((
                    Protocols {
                        upnp: true,
                        ..Default::default()
                    },
                    "UPnP IGD",
                ))
            } else {
                None
            }
        });
        if let Some(pick) = pick {
            break pick;
        }
        let why = match probe {
            Ok(_) => format!(
                "no port mapping: the home router answers none of {}",
                names(allowed)
            ),
            Err(e) => format!("no port mapping: {e}"),
        };
        tracing::info!("{why}; probing again in {} s", RETRY.as_secs());
        state.send_replace(State {
            why_not: why,
            ..State::default()
        });
        tokio::time::sleep(RETRY).await;
    };
    let client = portmapper::Client::new(config(chosen));
    let mut external = client.watch_external_address();
    client.update_local_port(port);
    client_tx.send_replace(Some(client.clone()));
    tracing::info!(
        protocol = name,
        "the home router speaks {name}: asking it to map UDP port {port}"
    );
    let mut had = None;
    loop {
        let now = *external.borrow_and_update();
        state.send_replace(State {
            external: now,
            protocol: now.map(|_| name),
            why_not: if now.is_some() {
                String::new()
            } else {
                format!("no port mapping yet: asked the home router over {name}")
            },
        });
        match (now, had) {
            (Some(a), _) => {
                tracing::info!(protocol = name, external = %a, "the home router maps {a} to UDP port {port}")
            }
            (None, Some(a)) => tracing::warn!(
                protocol = name,
                "the home router's mapping at {a} is gone; asking again"
            ),
            (None, None) => {}
        }
        had = now;
        // The client renews a mapping by itself; one that failed or
        // expired is asked for again here.
        tokio::select! {
            r = external.changed() => if r.is_err() { return },
            _ = tokio::time::sleep(RETRY), if now.is_none() => client.procure_mapping(),
        }
    }
}

/// The allowed protocols, in words.
fn names(p: Protocols) -> String {
    [(p.pcp, "PCP"), (p.nat_pmp, "NAT-PMP"), (p.upnp, "UPnP IGD")]
        .iter()
        .filter(|(on, _)| *on)
        .map(|(_, n)| *n)
        .collect::<Vec<_>>()
        .join(", ")
}
