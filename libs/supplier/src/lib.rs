//! The supplier role of BitDust: stores customers' objects (fragments and
//! manifests) on request over QUIC, within the quota each customer was
//! granted, and reports on a local gRPC socket.
//!
//! - [`store`]: crash-safe files plus an LMDB index (heed).
//! - [`durable`]: the durable file-system steps the store takes, behind a
//!   trait a test records and replays crash points through.
//! - [`peer`]: the peer protocol over QUIC.
//! - [`grpc`]: the local `bitdust.supplier.v1.Supplier` service.
//! - [`offer`]: the signed offer it publishes in the DHT.
//! - [`run`]: the whole daemon, for the thin `bitdust-supplier-store` binary.

pub use bitdust_durable as durable;
pub mod grpc;
pub mod offer;
pub mod peer;
pub mod reach;
pub mod store;

use std::sync::Arc;
use std::time::Duration;

use bitdust_config::Config;
use bitdust_proto::supplier::v1::supplier_server::SupplierServer;

/// Runs the supplier daemon until SIGTERM/SIGINT.
pub async fn run(config: Config) -> anyhow::Result<()> {
    let state = config.supplier_state();
    let mut daemon = bitdust_daemon::Daemon::new("supplier-store");
    let identity = daemon.identity(&state)?;
    let node_id = identity.node_id();
    let s = &config.supplier;
    let limits = store::Limits {
        capacity: s.capacity.0,
        max_object_size: s.max_object_size.0,
        max_customers: s.max_customers,
        unused_secs: s.unused_service_secs,
        max_unused_per_address: s.max_unused_per_address,
        max_services_per_address: s.max_services_per_address,
    };
    let store = Arc::new(
        tokio::task::spawn_blocking({
            let state = state.clone();
            move || store::Store::open(&state, limits)
        })
        .await??,
    );
    let endpoint = bitdust_net::Endpoint::bind(&identity, s.listen, peer::ALPN, true)?;
    let listen = endpoint.local_addr()?;
    let routers = s
        .routers
        .iter()
        .map(|r| bitdust_net::relay::parse_router(r))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| {
            anyhow::anyhow!(
                "config file {}: supplier.routers: {e}",
                config.path.display()
            )
        })?;
    let address = advertised(&config, listen);
    let configured = address.is_some();
    let (reach_tx, reach_rx) = tokio::sync::watch::channel(reach::Reach {
        address,
        ..reach::Reach::default()
    });
    // Nobody is told where to dial it: its home router may map a port.
    let portmap = if configured {
        None
    } else {
        bitdust_net::portmap::PortMap::start(
            listen.port(),
            bitdust_config::PortMapping::allowed(&s.port_mapping).into(),
        )
    };
    let mapping = portmap
        .as_ref()
        .map_or_else(reach::no_mapping, |m| m.state());
    if portmap.is_some() {
        daemon.supervise(
            "the port mapping",
            reach::follow_mapping(mapping.clone(), reach_tx.clone()),
        );
    }
    let socket = config.supplier_socket();
    let connections = peer::Connections::default();
    let service = SupplierServer::new(grpc::SupplierService {
        store: store.clone(),
        node_id,
        listen: listen.to_string(),
        reach: reach_rx.clone(),
        connections: connections.clone(),
    });
    daemon
        .serve(&socket, &["bitdust.supplier.v1.Supplier"], |r| {
            r.add_service(service)
        })
        .await?;
    if !routers.is_empty() {
        daemon.supervise(
            "the router reservations",
            reach::hold_reservations(endpoint.clone(), routers, reach_tx, configured, mapping),
        );
    } else if !configured {
        // Nobody knows where to dial it: routers found in the DHT tell it
        // whether strangers reach it, and carry customers to it if not.
        daemon.supervise(
            "the router finder",
            reach::find_and_hold(endpoint.clone(), config.dht_socket(), reach_tx, mapping),
        );
    }
    if s.publish {
        daemon.supervise(
            "the offer publisher",
            offer::Publisher {
                identity: bitdust_crypto::Identity::from_secret(&identity.secret()),
                store: store.clone(),
                reach: reach_rx,
                dht_socket: config.dht_socket(),
                every: Duration::from_secs(s.publish_secs),
            }
            .run(),
        );
    }
    daemon.supervise(
        "the peer server",
        peer::serve(endpoint.clone(), store, connections),
    );
    tracing::info!(%node_id, %listen, socket = %socket.display(), "supplier-store ready");
    let stopped = daemon.run(&format!("serving customers on {listen}")).await;
    if let Some(m) = portmap {
        m.release(Duration::from_secs(3)).await;
    }
    let _ = tokio::time::timeout(Duration::from_secs(5), endpoint.shutdown()).await;
    Ok(stopped?)
}

/// The address published in the offer: `supplier.advertise`, or the bound
/// address when its IP is a specific one.
fn advertised(config: &Config, listen: std::net::SocketAddr) -> Option<String> {
    match &config.supplier.advertise {
        Some(a) => Some(a.clone()),
        None if listen.ip().is_unspecified() => None,
        None => Some(listen.to_string()),
    }
}
