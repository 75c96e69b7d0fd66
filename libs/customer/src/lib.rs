//! The customer role of BitDust.
//!
//! - [`client`]: the peer protocol towards one supplier.
//! - [`discovery`]: the DHT, through the local dht-peer: supplier offers and
//!   the customer's own supplier list.
//! - [`netio`]: the pipeline's fragment sink and source over those links.
//! - [`state`]: supplier set, supplier statistics and the catalog (heed).
//! - [`agent`]: the agent and its `bitdust.customer.v1.Customer` service.
//! - [`run`]: the whole daemon, for the thin `bitdust-customer-agent` binary.

pub mod agent;
pub mod client;
pub mod discovery;
pub mod netio;
pub mod state;

use std::sync::Arc;
use std::time::Duration;

use bitdust_config::Config;
use bitdust_proto::customer::v1::customer_server::CustomerServer;

/// The meta key set when this agent created its keys (nothing to recover).
const OWN_KEYS: &str = "own_keys";

/// How often changed supplier statistics are written to the database.
const STATS_FLUSH: Duration = Duration::from_secs(5);

/// Runs the customer-agent daemon until SIGTERM/SIGINT.
pub async fn run(config: Config) -> anyhow::Result<()> {
    let state_dir = config.customer_state();
    let mut daemon = bitdust_daemon::Daemon::new("customer-agent");
    let lock = bitdust_daemon::state::StateLock::take(&state_dir, "customer-agent")?;
    let (keys, created) = bitdust_crypto::KeyRing::open_or_create(&config.customer_keys())?;
    let node_id = keys.identity().node_id();
    if created {
        tracing::info!(%node_id, keys = %config.customer_keys().display(), "created new keys; export them (they are the only way to restore)");
    }
    bitdust_daemon::skeleton::record_node_id(&state_dir, &node_id)?;
    let state = Arc::new(state::State::open(&lock)?);
    let repo = Arc::new(bitdust_pipeline::repo::Repo::open(lock.open_env(
        "repo",
        16 << 30,
        bitdust_pipeline::repo::REPO_DATABASES,
    )?)?);
    // It takes only the connections of suppliers it is punching a hole to
    // (behind NATs), and closes any other at once.
    let endpoint = bitdust_net::Endpoint::bind_with(
        keys.identity(),
        config.customer.bind,
        bitdust_supplier::peer::ALPN,
        bitdust_net::Listen::Expected,
    )?;
    // A state with no suppliers and no backups, under keys that this
    // agent did not create (imported), is a machine being recovered; it
    // stays so (across restarts too) until recovery succeeds or is given up.
    if created {
        state.set_meta(OWN_KEYS, 1)?;
    }
    let fresh = state.positions()?.is_empty() && state.versions()?.is_empty();
    if fresh && state.meta(OWN_KEYS)?.is_none() && state.meta(agent::RECOVERING)?.is_none() {
        state.set_meta(agent::RECOVERING, 1)?;
    }
    let agent = Arc::new(
        agent::Agent::new(config.clone(), endpoint.clone(), keys, state.clone(), repo).await?,
    );
    let socket = config.customer_socket();
    let service = CustomerServer::new(agent::CustomerService(agent.clone()));
    daemon
        .serve(&socket, &["bitdust.customer.v1.Customer"], |r| {
            r.add_service(service)
        })
        .await?;
    // The second socket, where `bitdustctl restore` passes the files it
    // creates for the agent to write into.
    // Without it, restores stream all content, as before.
    let fds_socket = agent::fds::socket_beside(&socket);
    match bitdust_daemon::bind_socket(&fds_socket).await {
        Ok(listener) => daemon.supervise(
            "the descriptor socket",
            agent.clone().serve_fds(listener, fds_socket.clone()),
        ),
        Err(e) => tracing::warn!("{e}; restores stream every file's content instead"),
    }
    // Recovery, hiring the listed suppliers, collecting failed attempts
    // and filling positions from the DHT: done once, then it ends.
    tokio::spawn(agent.clone().start_network());
    // Supplier statistics are batched: written every few seconds, and at
    // shutdown, instead of one fsync per ping and fragment.
    daemon.supervise("the statistics flusher", {
        let state = state.clone();
        async move {
            let mut tick = tokio::time::interval(STATS_FLUSH);
            loop {
                tick.tick().await;
                if let Err(e) = state.flush_stats() {
                    tracing::warn!("cannot save the supplier statistics: {e}");
                }
            }
        }
    });
    tracing::info!(%node_id, socket = %socket.display(), "customer-agent ready");
    let stopped = daemon.run("ready").await;
    let _ = tokio::time::timeout(Duration::from_secs(2), endpoint.shutdown()).await;
    if let Err(e) = state.flush_stats() {
        tracing::warn!("cannot save the supplier statistics: {e}");
    }
    let _ = std::fs::remove_file(&fds_socket);
    drop(lock);
    Ok(stopped?)
}
