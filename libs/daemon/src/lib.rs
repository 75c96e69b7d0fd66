//! What every BitDust daemon shares.
//!
//! - [`abort_on_panic`]: a panic in any thread or task ends the process, so
//!   systemd restarts it instead of a dead task hiding behind a healthy
//!   gRPC service and watchdog.
//! - [`init_logging`]: `tracing` to stderr (the journal under systemd),
//!   filtered by `RUST_LOG` (default `info`).
//! - [`shutdown_signal`]: resolves on SIGTERM or SIGINT.
//! - [`notify_ready`] / [`spawn_watchdog`]: sd-notify, a no-op outside systemd.
//! - [`bind_socket`]: the gRPC Unix socket, created 0660, refusing to steal
//!   the socket of a daemon that is still running.
//! - [`grpc_server`]: a tonic server with reflection and health already on.
//! - [`connect`]: the client side, for `bitdustctl` and tests.
//! - [`Daemon`]: the skeleton all four daemons run in (identity, gRPC
//!   socket, supervised tasks, ready/watchdog, signals, stop).
//! - [`fds`]: a file's descriptor passed to another local process.
//! - [`state::StateLock`]: a state directory held by one process, and its
//!   LMDB environments.

pub mod cli;
pub mod fds;
pub mod memory;
pub mod skeleton;
pub mod state;

pub use skeleton::Daemon;

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::net::UnixListener;

pub use tonic;

/// A daemon could not start.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// The socket could not be created.
    #[error("cannot create the socket {path}: {reason}")]
    Socket {
        /// The socket path.
        path: PathBuf,
        /// Why, and what to do.
        reason: String,
    },
    /// A task that must run as long as the daemon ended on its own.
    #[error("{what} ended on its own; the daemon stops so that systemd restarts it")]
    Ended {
        /// Which ("the peer server").
        what: String,
    },
    /// The state directory could not be written.
    #[error("{what}")]
    State {
        /// What failed, and the path.
        what: String,
    },
}

/// The `main` of a daemon binary: its arguments, logging, the config file (exit status 2
/// and one line on stderr when it is bad), a tokio runtime, then `run`
/// (exit status 1 and one line on stderr when it fails).
pub fn main<F, Fut>(daemon: cli::Daemon, run: F) -> std::process::ExitCode
where
    F: FnOnce(bitdust_config::Config) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    memory::hand_back_large_buffers();
    let name = daemon.name();
    let config = daemon.parse_args();
    init_logging();
    abort_on_panic();
    let config = match bitdust_config::Config::load(config.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{name}: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("{name}: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(config)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("{name}: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Makes a panic anywhere in the process (any thread, any tokio task) end
/// the process with SIGABRT after the panic message is printed and logged.
/// tokio would otherwise catch a task's panic and keep serving without it:
/// a rebuild or publish loop could die while the gRPC service and the
/// watchdog task still look healthy. systemd's `Restart=on-failure` then
/// starts the daemon again from its durable state.
pub fn abort_on_panic() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        default(info);
        tracing::error!("a task panicked ({info}); aborting so the daemon is restarted");
        std::process::abort();
    }));
}

/// Logs to stderr, filtered by `RUST_LOG` (default `info`). Without a
/// terminal (journald) no colours and no timestamps (the journal adds them).
pub fn init_logging() {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let tty = std::io::stderr().is_terminal();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(tty)
        .with_target(false);
    if tty || std::env::var_os("JOURNAL_STREAM").is_none() {
        builder.init();
    } else {
        builder.without_time().init();
    }
}

/// Resolves when the process gets SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        // Without signal handlers there is nothing to wait for; never resolve.
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
        _ = int.recv() => tracing::info!("SIGINT: shutting down"),
    }
}

/// Tells systemd the daemon is ready (no-op when not started by systemd).
pub fn notify_ready(status: &str) {
    let _ = sd_notify::notify(&[
        sd_notify::NotifyState::Ready,
        sd_notify::NotifyState::Status(status),
    ]);
}

/// Tells systemd the daemon is stopping.
pub fn notify_stopping() {
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
}

/// Pings the systemd watchdog at half its interval, when one is set.
pub fn spawn_watchdog() {
    if let Some(interval) = sd_notify::watchdog_enabled() {
        let every = (interval / 2).max(Duration::from_millis(100));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                let _ = sd_notify::notify(&[sd_notify::NotifyState::Watchdog]);
            }
        });
    }
}

/// Binds the Unix socket at `path` with mode 0660 (owner and group only).
///
/// A socket file left by a daemon that died is replaced; one that a running
/// daemon still answers on is not (two daemons on one socket would be a
/// misconfiguration).
pub async fn bind_socket(path: &Path) -> Result<UnixListener, DaemonError> {
    let err = |reason: String| DaemonError::Socket {
        path: path.to_owned(),
        reason,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| err(format!("cannot create its directory: {e}")))?;
    }
    if path.exists() {
        if tokio::net::UnixStream::connect(path).await.is_ok() {
            return Err(err(
                "another daemon is already serving on it; stop it or set another socket path in the config".into(),
            ));
        }
        std::fs::remove_file(path)
            .map_err(|e| err(format!("cannot remove the stale socket: {e}")))?;
    }
    // Created with no permissions for others from the start (umask), then
    // set to exactly 0660.
    let old = rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o117));
    let bound = UnixListener::bind(path);
    rustix::process::umask(old);
    let listener = bound.map_err(|e| err(e.to_string()))?;
    rustix::fs::chmod(path, rustix::fs::Mode::from_raw_mode(0o660))
        .map_err(|e| err(format!("cannot set its mode to 0660: {e}")))?;
    Ok(listener)
}

/// The standard services every daemon's socket carries, added to `server`:
/// gRPC server reflection (v1, and v1alpha for older clients such as
/// grpcurl 1.8) over every BitDust proto, and health. Returns the router
/// and the health reporter the daemon marks its services serving with.
///
/// Reflection lists `services` (the daemon's own, full names) and health.
pub fn with_standard_services(
    mut server: tonic::transport::Server,
    services: &[&'static str],
) -> (
    tonic::transport::server::Router,
    tonic_health::server::HealthReporter,
) {
    // The descriptor sets are generated by our own build; they always parse.
    let builder = || {
        let mut b = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(bitdust_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .with_service_name("grpc.health.v1.Health");
        for s in services {
            b = b.with_service_name(*s);
        }
        b
    };
    let v1 = builder()
        .build_v1()
        .expect("the compiled-in descriptor set is valid");
    let v1alpha = builder()
        .build_v1alpha()
        .expect("the compiled-in descriptor set is valid");
    let (reporter, health) = tonic_health::server::health_reporter();
    let router = server
        .add_service(health)
        .add_service(v1)
        .add_service(v1alpha);
    (router, reporter)
}

/// A stream of connections on `listener`, for `serve_with_incoming`.
pub fn incoming(listener: UnixListener) -> tokio_stream::wrappers::UnixListenerStream {
    tokio_stream::wrappers::UnixListenerStream::new(listener)
}

/// A gRPC channel to the Unix socket at `path`. Fails only when the
/// socket does not answer.
pub async fn connect(path: &Path) -> Result<tonic::transport::Channel, std::io::Error> {
    let path = path.to_owned();
    // The URI is required by the API but unused: the connector below dials
    // the socket.
    let endpoint = tonic::transport::Endpoint::from_static("http://localhost")
        .connect_timeout(Duration::from_secs(5))
        // A restore streams hundreds of megabytes from the agent: windows
        // of a few MiB let it run ahead of this side's reads without a
        // window update every 2 MiB (this side holds at most 16 MiB).
        .initial_stream_window_size(8 << 20)
        .initial_connection_window_size(16 << 20);
    endpoint
        .connect_with_connector(tower::service_fn(move |_: tonic::transport::Uri| {
            let path = path.clone();
            async move {
                let stream = tokio::net::UnixStream::connect(path).await?;
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(stream))
            }
        }))
        .await
        .map_err(|e| {
            let source = std::error::Error::source(&e)
                .map(ToString::to_string)
                .unwrap_or_default();
            std::io::Error::new(
                std::io::ErrorKind::ConnectionRefused,
                format!("{e} {source}"),
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[tokio::test]
    async fn socket_is_0660_and_a_live_one_is_not_stolen() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("run/x.sock");
        let l = bind_socket(&path).await.unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o660);
        let accept = tokio::spawn(async move { l.accept().await.map(|_| ()) });
        let e = bind_socket(&path).await.unwrap_err().to_string();
        assert!(e.contains("already serving"), "{e}");
        accept.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn a_stale_socket_is_replaced() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("x.sock");
        drop(bind_socket(&path).await.unwrap());
        assert!(path.exists());
        bind_socket(&path).await.unwrap();
    }
}
