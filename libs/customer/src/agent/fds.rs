//! Descriptors `bitdustctl restore` passes (`RestoreRequest.pass_fds`), so
//! that the agent writes large files' content straight into the files the
//! caller created as itself, instead of streaming it over gRPC (issue 19:
//! the stream cost about 15% of a network restore's time).
//!
//! Each restore that asks gets a one-time token and the path of a second
//! Unix socket (`customer.fds.sock` beside the gRPC one, 0660 like it).
//! The caller connects there and sends the token; the connection is taken
//! only if its peer credentials are the same caller's as the restore's.
//! The agent then asks for one descriptor per large file and writes into
//! it only: it opens nothing of the caller's, and can write only into what
//! it is passed, which must be an empty regular file open for writing, not
//! in append mode, on a filesystem known to store writes on this host
//! itself (`bitdustctl` declines files on any other, FUSE and NFS among
//! them: their content streams).
//!
//! A restore run as root hands the agent (user bitdust under the packaged
//! unit) writable descriptors of files that end up root's: the agent is
//! trusted with their content at restore time in any case, but a
//! compromised agent could also keep a descriptor and change the file
//! later (docs/architecture.md says so).

use std::collections::HashMap;
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream as StdStream;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use bitdust_net::places::Places;
use bitdust_proto::customer::v1 as pb;
use tokio::io::AsyncReadExt;
use tokio::net::UnixListener;
use tokio::sync::oneshot;

use super::{Caller, lock};

/// How long a restore waits for its caller to connect before it streams
/// the content instead.
pub(super) const CONNECT_WAIT: Duration = Duration::from_secs(5);

/// How often the agent, waiting for a descriptor, looks whether its
/// caller is still there (a caller with many small entries queued before
/// the file may take long; one that went away ends the wait).
const WAIT_STEP: Duration = Duration::from_secs(1);

/// How long a new connection has to send its token.
const TOKEN_WAIT: Duration = Duration::from_secs(5);

/// At most this many connections are read for their token at once (only
/// local users of group bitdust reach the socket), and at most
/// [`AT_ONCE_PER_USER`] of one user's: a user who holds connections open
/// without a token delays only that user's own restores.
const AT_ONCE: usize = 32;
const AT_ONCE_PER_USER: usize = 4;

/// Files with at least this much content go through a passed descriptor;
/// smaller ones stream (a descriptor costs a round trip).
pub(super) const MIN_CONTENT: u64 = 256 << 10;

/// The descriptor socket beside the gRPC socket `socket`.
pub fn socket_beside(socket: &Path) -> PathBuf {
    socket.with_extension("fds.sock")
}

/// The offers waiting for their caller to connect.
#[derive(Default)]
pub(crate) struct FdOffers {
    socket: OnceLock<PathBuf>,
    pending: Mutex<HashMap<[u8; 16], Waiting>>,
}

/// An offer's caller, and where its connection goes.
type Waiting = (Caller, oneshot::Sender<StdStream>);

/// One restore's offer: its connection arrives on `rx`; dropped, the offer
/// is withdrawn.
pub(super) struct Offer<'a> {
    offers: &'a FdOffers,
    token: [u8; 16],
    pub(super) rx: oneshot::Receiver<StdStream>,
}

impl Drop for Offer<'_> {
    fn drop(&mut self) {
        lock(&self.offers.pending).remove(&self.token);
    }
}

impl FdOffers {
    /// An offer for `caller`, and the event that tells it; none when the
    /// agent serves no descriptor socket.
    pub(super) fn offer(&self, caller: Caller) -> Option<(pb::FdOffer, Offer<'_>)> {
        let socket = self.socket.get()?;
        let mut token = [0u8; 16];
        getrandom::fill(&mut token).ok()?;
        let (tx, rx) = oneshot::channel();
        lock(&self.pending).insert(token, (caller, tx));
        Some((
            pb::FdOffer {
                socket: socket.display().to_string(),
                token: token.to_vec(),
                declines: true,
            },
            Offer {
                offers: self,
                token,
                rx,
            },
        ))
    }

    /// Serves the descriptor socket bound at `path`: each connection that
    /// sends a pending token as that offer's caller goes to its restore.
    pub(crate) async fn serve(self: Arc<Self>, listener: UnixListener, path: PathBuf) {
        let _ = self.socket.set(path);
        let reading = Places::new(AT_ONCE, AT_ONCE_PER_USER);
        loop {
            let Ok((conn, _)) = listener.accept().await else {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            };
            let Ok(uid) = conn.peer_cred().map(|c| c.uid()) else {
                continue;
            };
            let Ok(place) = reading.take(uid) else {
                tracing::debug!(
                    "too many connections on the descriptor socket at once (of user {uid} or in all); closed one"
                );
                continue;
            };
            let me = self.clone();
            tokio::spawn(async move {
                // Another user's token is worth a warning; the rest (no
                // token, an unknown one) any member of group bitdust can
                // cause as often as it likes.
                match me.take(conn, uid).await {
                    Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
                        tracing::warn!("a connection on the descriptor socket was refused: {e}")
                    }
                    Err(e) => {
                        tracing::debug!("a connection on the descriptor socket was refused: {e}")
                    }
                    Ok(()) => {}
                }
                drop(place);
            });
        }
    }

    async fn take(&self, mut conn: tokio::net::UnixStream, uid: u32) -> io::Result<()> {
        let mut token = [0u8; 16];
        tokio::time::timeout(TOKEN_WAIT, conn.read_exact(&mut token))
            .await
            .map_err(|_| io::Error::other("it sent no token in time"))??;
        let Some((caller, tx)) = lock(&self.pending).remove(&token) else {
            return Err(io::Error::other(
                "its token is no restore's (or came too late)",
            ));
        };
        if Caller::from_uid(uid) != caller {
            // The offer is withdrawn: its token is known to another user.
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!("user {uid} sent the token of another user's restore"),
            ));
        }
        let conn = conn.into_std()?;
        conn.set_nonblocking(false)?;
        conn.set_read_timeout(Some(WAIT_STEP))?;
        let _ = tx.send(conn);
        Ok(())
    }
}

/// The descriptor the caller passed for entry `number`, checked: an empty
/// regular file, open for writing, not in append mode, on a filesystem
/// that stores what is written and answers writes itself (not FUSE, not a
/// network filesystem: [`bitdust_daemon::fds::not_passable`]). `None`
/// when the caller declined (the content then streams). Waits for as long
/// as `gone` says the caller is still there.
pub(super) fn receive(
    conn: &StdStream,
    number: u64,
    gone: impl Fn() -> bool,
) -> io::Result<Option<std::fs::File>> {
    let (n, fd): (u64, Option<OwnedFd>) = loop {
        match bitdust_daemon::fds::recv_fd(conn) {
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                if gone() {
                    return Err(io::Error::other("bitdustctl went away"));
                }
            }
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                return Err(io::Error::other(
                    "bitdustctl closed its descriptor connection (see its error)",
                ));
            }
            r => break r?,
        }
    };
    if n != number {
        return Err(io::Error::other(format!(
            "bitdustctl passed the descriptor of entry {n} where entry {number} was due"
        )));
    }
    let Some(fd) = fd else {
        return Ok(None);
    };
    let not_passable = || -> io::Result<()> {
        match bitdust_daemon::fds::not_passable(std::os::fd::AsFd::as_fd(&fd))? {
            Some(why) => Err(io::Error::other(format!(
                "bitdustctl passed a file on {why} instead of declining it; update bitdustctl"
            ))),
            None => Ok(()),
        }
    };
    // A FUSE mount that does not let the agent in fails fstat, but tells
    // its type (without asking its server): that is the error to give.
    let st = rustix::fs::fstat(&fd).map_err(|e| not_passable().err().unwrap_or(e.into()))?;
    if rustix::fs::FileType::from_raw_mode(st.st_mode) != rustix::fs::FileType::RegularFile
        || st.st_size != 0
    {
        return Err(io::Error::other(
            "bitdustctl passed a descriptor that is not an empty regular file",
        ));
    }
    not_passable()?;
    let flags = rustix::fs::fcntl_getfl(&fd)?;
    let mode = flags & rustix::fs::OFlags::RWMODE;
    if mode == rustix::fs::OFlags::RDONLY || flags.contains(rustix::fs::OFlags::APPEND) {
        return Err(io::Error::other(
            "bitdustctl passed a descriptor not open for writing at its offsets",
        ));
    }
    Ok(Some(std::fs::File::from(fd)))
}
