//! The one shape all four daemons run in.
//!
//! ```text
//! let mut d = Daemon::new("supplier-store");
//! let identity = d.identity(&state_dir)?;        // identity.key + node-id
//! ... open the state (its StateLock), bind QUIC ...
//! d.serve(&socket, &[NAME], |r| r.add_service(..)).await?;  // gRPC, health
//! d.supervise("the peer server", peer::serve(..));           // must not end
//! let stopped = d.run("serving customers on ...").await;     // ready .. signal
//! ... the daemon's own last words (QUIC close, flushing) ...
//! stopped?;
//! ```
//!
//! `run` tells systemd the daemon is ready, keeps its watchdog fed, and
//! waits for SIGTERM/SIGINT. A supervised task, or the gRPC service, that
//! ends on its own is a failure: `run` then stops the daemon with an error
//! naming it, so that the process exits non-zero and systemd restarts it,
//! instead of serving gRPC and feeding the watchdog with a dead loop behind
//! them. A panic anywhere already aborts the process ([`crate::abort_on_panic`]).
//! On the way out the gRPC service is stopped (5 s for calls in flight),
//! the tasks are aborted and the socket file is removed.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::task::{JoinHandle, JoinSet};

use crate::DaemonError;

type GrpcTask = JoinHandle<Result<(), tonic::transport::Error>>;

/// A daemon between its start and its stop.
pub struct Daemon {
    name: &'static str,
    tasks: JoinSet<&'static str>,
    grpc: Option<(GrpcTask, oneshot::Sender<()>)>,
    socket: Option<PathBuf>,
}

impl Daemon {
    /// A daemon called `name` (as in its log lines: "supplier-store").
    pub fn new(name: &'static str) -> Daemon {
        Daemon {
            name,
            tasks: JoinSet::new(),
            grpc: None,
            socket: None,
        }
    }

    /// The node identity kept in `state_dir/identity.key` (created 0600,
    /// with its directory, on the first start), recorded in
    /// `state_dir/node-id` for people and scripts.
    pub fn identity(&self, state_dir: &Path) -> anyhow::Result<bitdust_crypto::Identity> {
        let (identity, created) =
            bitdust_crypto::load_or_create_identity(&state_dir.join("identity.key"))?;
        if created {
            tracing::info!(node_id = %identity.node_id(), "created a new node identity");
        }
        record_node_id(state_dir, &identity.node_id())?;
        Ok(identity)
    }

    /// Serves gRPC on the Unix socket `socket` (0660, see
    /// [`crate::bind_socket`]): the standard services (reflection, health)
    /// plus what `add` adds, whose full names are `services`; health says
    /// they are serving.
    pub async fn serve(
        &mut self,
        socket: &Path,
        services: &[&'static str],
        add: impl FnOnce(tonic::transport::server::Router) -> tonic::transport::server::Router,
    ) -> Result<(), DaemonError> {
        let listener = crate::bind_socket(socket).await?;
        self.socket = Some(socket.to_owned());
        let (router, health) =
            crate::with_standard_services(tonic::transport::Server::builder(), services);
        for s in services {
            health
                .set_service_status(*s, tonic_health::ServingStatus::Serving)
                .await;
        }
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let task = tokio::spawn(add(router).serve_with_incoming_shutdown(
            crate::incoming(listener),
            async {
                let _ = stop_rx.await;
            },
        ));
        self.grpc = Some((task, stop_tx));
        Ok(())
    }

    /// Runs `task`, which must not end while the daemon runs: if it does,
    /// the daemon stops with an error naming `what` ("the peer server").
    pub fn supervise<F>(&mut self, what: &'static str, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.tasks.spawn(async move {
            task.await;
            what
        });
    }

    /// Tells systemd the daemon is ready (`status`), feeds the watchdog and
    /// runs until SIGTERM/SIGINT (`Ok`) or until a supervised task or the
    /// gRPC service ends on its own (`Err`, naming it); then stops.
    pub async fn run(self, status: &str) -> Result<(), DaemonError> {
        crate::notify_ready(status);
        crate::spawn_watchdog();
        self.run_until(crate::shutdown_signal()).await
    }

    /// [`Daemon::run`] with another stop signal than SIGTERM/SIGINT.
    pub async fn run_until(self, stop: impl Future<Output = ()>) -> Result<(), DaemonError> {
        let Daemon {
            name,
            mut tasks,
            grpc,
            socket,
        } = self;
        let (mut grpc, grpc_stop) = match grpc {
            Some((task, stop)) => (Some(task), Some(stop)),
            None => (None, None),
        };
        let grpc_ended = async {
            match grpc.as_mut() {
                Some(task) => match task.await {
                    Ok(Ok(())) => "the gRPC service".to_string(),
                    Ok(Err(e)) => format!("the gRPC service ({e})"),
                    Err(e) => format!("the gRPC service ({e})"),
                },
                None => std::future::pending().await,
            }
        };
        let ended: Option<String> = tokio::select! {
            () = stop => None,
            Some(r) = tasks.join_next() => Some(match r {
                Ok(what) => what.to_string(),
                Err(e) => format!("a task ({e})"),
            }),
            what = grpc_ended => {
                grpc = None;
                Some(what)
            }
        };
        if let Some(what) = &ended {
            tracing::error!("{what} ended on its own; stopping {name} so that it is restarted");
        }
        crate::notify_stopping();
        if let Some(stop) = grpc_stop {
            let _ = stop.send(());
        }
        if let Some(task) = grpc {
            let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
        }
        tasks.shutdown().await;
        if let Some(socket) = socket {
            let _ = std::fs::remove_file(socket);
        }
        match ended {
            None => {
                tracing::info!("{name} stopped");
                Ok(())
            }
            Some(what) => Err(DaemonError::Ended { what }),
        }
    }
}

/// Writes `state_dir/node-id` (the id and a newline).
pub fn record_node_id(
    state_dir: &Path,
    node_id: &impl std::fmt::Display,
) -> Result<(), DaemonError> {
    let path = state_dir.join("node-id");
    std::fs::write(&path, format!("{node_id}\n")).map_err(|e| DaemonError::State {
        what: format!("cannot write {}: {e}", path.display()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const NAME: &str = "grpc.health.v1.Health";

    async fn health_answers(socket: &Path) -> bool {
        let Ok(channel) = crate::connect(socket).await else {
            return false;
        };
        let mut c = tonic_health::pb::health_client::HealthClient::new(channel);
        c.check(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        })
        .await
        .is_ok()
    }

    #[tokio::test]
    async fn a_supervised_task_that_ends_stops_the_daemon_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("d.sock");
        let mut d = Daemon::new("test-daemon");
        d.serve(&socket, &[], |r| r).await.unwrap();
        let (_keep, held) = oneshot::channel::<()>();
        d.supervise("the forever loop", async {
            let _ = held.await;
        });
        d.supervise("the publish loop", async {
            tokio::time::sleep(Duration::from_millis(50)).await;
        });
        assert!(health_answers(&socket).await);
        // Never stopped from outside: only the ended task can end the run
        // (the timeout only keeps a regression from hanging the suite).
        let r = tokio::time::timeout(Duration::from_secs(60), d.run_until(std::future::pending()))
            .await
            .expect("the daemon noticed the ended task");
        let e = r.unwrap_err().to_string();
        assert!(e.contains("the publish loop ended on its own"), "{e}");
        assert!(!socket.exists(), "the socket is removed");
    }

    #[tokio::test]
    async fn a_stop_serves_no_more_aborts_the_tasks_and_removes_the_socket() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("d.sock");
        let mut d = Daemon::new("test-daemon");
        d.serve(&socket, &[NAME], |r| r).await.unwrap();
        let (alive, mut aborted) = oneshot::channel::<()>();
        d.supervise("the worker", async move {
            let _alive = alive;
            std::future::pending::<()>().await;
        });
        assert!(health_answers(&socket).await);
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let run = tokio::spawn(d.run_until(async {
            let _ = stop_rx.await;
        }));
        assert!(aborted.try_recv().is_err(), "the worker runs");
        stop_tx.send(()).unwrap();
        run.await.unwrap().unwrap();
        // The worker's future was dropped: its sender is gone.
        assert!(matches!(
            aborted.try_recv(),
            Err(oneshot::error::TryRecvError::Closed)
        ));
        assert!(!socket.exists());
        assert!(!health_answers(&socket).await);
    }
}
