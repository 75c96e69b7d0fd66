//! Who calls the agent, and the archive a caller streams to it.
//!
//! The agent reads no file: the caller (bitdustctl, with its own rights)
//! writes the tar archive and streams it. Each call's user comes from the
//! Unix socket's peer credentials (SO_PEERCRED). Root and the agent's own
//! user (the nightly timer runs as it) are the system: they see every
//! backup. Any other user owns the backups it makes, under ids of its own,
//! and sees, restores and deletes only those.

use std::io::{self, Write};
use std::path::{Component, Path};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bitdust_block::BackupId;
use bitdust_crypto::NodeId;
use bitdust_pipeline::{ArchiveInput, ArchiveSummary, Progress};
use bitdust_proto::customer::v1 as pb;
use tokio::runtime::Handle;
use tokio::sync::mpsc;
use tonic::transport::server::UdsConnectInfo;
use tonic::{Request, Status, Streaming};

use super::errors::{BackupError, NotSystem};

/// The user behind one gRPC call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Caller {
    /// Root, or the agent's own user.
    System,
    /// Any other user, by uid.
    User(u32),
}

impl Caller {
    /// The caller of `req`, from the socket's peer credentials.
    pub fn of<T>(req: &Request<T>) -> Result<Caller, Status> {
        let uid = req
            .extensions()
            .get::<UdsConnectInfo>()
            .and_then(|i| i.peer_cred)
            .map(|c| c.uid())
            .ok_or_else(|| {
                Status::permission_denied(
                    "the agent cannot tell which user is calling (no peer credentials); call it over its Unix socket",
                )
            })?;
        Ok(Caller::from_uid(uid))
    }

    /// Root and the agent's own user are the system.
    pub fn from_uid(uid: u32) -> Caller {
        if uid == 0 || uid == rustix::process::geteuid().as_raw() {
            Caller::System
        } else {
            Caller::User(uid)
        }
    }

    /// The owner recorded on the backups this caller makes.
    pub fn owner(self) -> Option<u32> {
        match self {
            Caller::System => None,
            Caller::User(u) => Some(u),
        }
    }

    /// Whether this caller may see (list, restore, delete) a backup owned by
    /// `owner`.
    pub fn may_see(self, owner: Option<u32>) -> bool {
        match self {
            Caller::System => true,
            Caller::User(u) => owner == Some(u),
        }
    }

    /// Refuses what only the system may do (hire, fire, start afresh,
    /// repair records, restoring into a directory as the agent).
    pub fn require_system(self, what: &str) -> Result<(), NotSystem> {
        match self {
            Caller::System => Ok(()),
            Caller::User(uid) => Err(NotSystem {
                what: what.to_owned(),
                uid,
            }),
        }
    }
}

/// How a backup's owner reads in `bitdustctl list`.
pub(super) fn owner_label(owner: Option<u32>) -> String {
    owner.map(|u| format!("uid {u}")).unwrap_or_default()
}

/// The id of the backup of `paths` (absolute, raw bytes) made by `owner`:
/// the system's ids are those of the paths alone; another user's paths get
/// an id of their own, so no user can add versions to (and so prune) the
/// system's or another user's backup of the same paths.
pub(super) fn backup_id(customer: &NodeId, owner: Option<u32>, paths: &[Vec<u8>]) -> BackupId {
    let mut parts = paths.to_vec();
    if let Some(u) = owner {
        // Never a path: paths are absolute, so they start with '/'.
        parts.push(format!("owner uid {u}").into_bytes());
    }
    BackupId::for_sources(customer.as_bytes(), &parts)
}

/// A source path as the caller named it: absolute and without `..` (and
/// written plainly: `.`, doubled and trailing slashes go).
pub(super) fn checked_path(p: &str) -> Result<Vec<u8>, BackupError> {
    let path = Path::new(p);
    let plain = path
        .components()
        .all(|c| matches!(c, Component::RootDir | Component::Normal(_)));
    if !path.is_absolute() || !plain {
        return Err(BackupError::BadRequest(format!(
            "{p} is not an absolute path without . or ..; give the absolute path to back up"
        )));
    }
    let normal: std::path::PathBuf = path.components().collect();
    Ok(std::os::unix::ffi::OsStrExt::as_bytes(normal.as_os_str()).to_vec())
}

/// The longest a caller may pause between two pieces of its archive.
pub(super) const ARCHIVE_IDLE: Duration = Duration::from_secs(600);

/// At most this many skipped entries of a caller's summary are kept.
const MAX_SKIPPED: usize = 1001;
/// And each is cut to this many bytes.
const MAX_SKIPPED_LEN: usize = 4096;

/// Reads the `start` of a backup stream.
pub(super) async fn read_start(
    stream: &mut Streaming<pb::BackupInput>,
) -> Result<pb::BackupStart, BackupError> {
    match tokio::time::timeout(ARCHIVE_IDLE, stream.message()).await {
        Err(_) => Err(BackupError::Idle),
        Ok(Err(s)) => Err(BackupError::Stream(s)),
        Ok(Ok(Some(pb::BackupInput {
            kind: Some(pb::backup_input::Kind::Start(s)),
        }))) => Ok(s),
        Ok(Ok(_)) => Err(BackupError::BadRequest(
            "a backup stream begins with start (the paths); send start, the archive, then end"
                .into(),
        )),
    }
}

/// The rest of a caller's backup stream, as the pipeline reads it: the tar
/// pieces are passed on in order, and only `end` makes the archive whole.
pub(super) struct StreamedArchive {
    paths: Vec<Vec<u8>>,
    rx: mpsc::Receiver<Result<pb::backup_input::Kind, Status>>,
    rt: Handle,
}

impl StreamedArchive {
    /// Forwards `stream` (after its start) on a short queue, so a slow
    /// pipeline slows the caller down (gRPC flow control) instead of
    /// buffering.
    pub(super) fn new(paths: Vec<Vec<u8>>, stream: Streaming<pb::BackupInput>, rt: Handle) -> Self {
        let rx = forward(stream, &rt, true);
        StreamedArchive { paths, rx, rt }
    }
}

/// The rest of a backup stream (after its start) on a short queue, so a
/// slow pipeline slows the caller down (gRPC flow control) instead of
/// buffering; the queue ends after an error, the stream's end, or (with
/// `stop_at_end`: an archive) after `end`. A snapshot stream goes on after
/// `end` with the content the agent still asks for.
pub(super) fn forward(
    mut stream: Streaming<pb::BackupInput>,
    rt: &Handle,
    stop_at_end: bool,
) -> mpsc::Receiver<Result<pb::backup_input::Kind, Status>> {
    let (tx, rx) = mpsc::channel(4);
    {
        rt.spawn(async move {
            loop {
                let item = match stream.message().await {
                    Ok(Some(pb::BackupInput { kind: Some(k) })) => Ok(k),
                    Ok(Some(_)) => continue,
                    Ok(None) => return,
                    Err(s) => Err(s),
                };
                let last = item.is_err()
                    || (stop_at_end && matches!(item, Ok(pb::backup_input::Kind::End(_))));
                if tx.send(item).await.is_err() || last {
                    return;
                }
            }
        });
    }
    rx
}

/// A caller's skipped entries, bounded in number and length.
pub(super) fn cut_skipped(skipped: Vec<String>) -> Vec<String> {
    let mut out: Vec<String> = skipped.into_iter().take(MAX_SKIPPED).map(cut).collect();
    out.truncate(MAX_SKIPPED);
    out
}

fn cut(mut s: String) -> String {
    if s.len() > MAX_SKIPPED_LEN {
        let mut at = MAX_SKIPPED_LEN;
        while !s.is_char_boundary(at) {
            at -= 1;
        }
        s.truncate(at);
    }
    s
}

impl ArchiveInput for StreamedArchive {
    fn source_paths(&self) -> Vec<Vec<u8>> {
        self.paths.clone()
    }

    fn write_to(
        &mut self,
        out: &mut dyn Write,
        progress: &dyn Progress,
        cancel: &AtomicBool,
    ) -> io::Result<ArchiveSummary> {
        use pb::backup_input::Kind;
        loop {
            if cancel.load(Ordering::Relaxed) {
                return Err(io::Error::from(io::ErrorKind::BrokenPipe));
            }
            let next = self
                .rt
                .block_on(async { tokio::time::timeout(ARCHIVE_IDLE, self.rx.recv()).await });
            match next {
                Err(_) => {
                    return Err(io::Error::other(format!(
                        "the caller sent nothing for {} s; nothing was committed",
                        ARCHIVE_IDLE.as_secs()
                    )));
                }
                Ok(None) => {
                    return Err(io::Error::other(
                        "the caller stopped sending the archive before its end; nothing was committed",
                    ));
                }
                Ok(Some(Err(s))) => {
                    return Err(io::Error::other(format!(
                        "the caller's archive stream broke ({}); nothing was committed",
                        s.message()
                    )));
                }
                Ok(Some(Ok(Kind::Start(_)))) => {
                    return Err(io::Error::other(
                        "the caller sent a second start; a backup stream is start, the archive, then end",
                    ));
                }
                Ok(Some(Ok(Kind::Entries(_) | Kind::Content(_)))) => {
                    return Err(io::Error::other(
                        "the caller sent snapshot entries in an archive stream; start with snapshot set to send entries",
                    ));
                }
                Ok(Some(Ok(Kind::Archive(piece)))) => {
                    out.write_all(&piece)?;
                    progress.advance(piece.len() as u64);
                }
                Ok(Some(Ok(Kind::End(e)))) => {
                    let skipped = cut_skipped(e.skipped);
                    return Ok(ArchiveSummary {
                        files: e.files,
                        directories: e.directories,
                        symlinks: e.symlinks,
                        skipped_count: skipped.len() as u64,
                        skipped,
                        content_bytes: e.content_bytes,
                    });
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_must_be_absolute_and_plain() {
        assert_eq!(checked_path("/home/a/docs").unwrap(), b"/home/a/docs");
        assert_eq!(checked_path("/home//a/docs/").unwrap(), b"/home/a/docs");
        assert_eq!(checked_path("/home/./a").unwrap(), b"/home/a");
        for bad in ["docs", "/home/../etc", "./a", ""] {
            assert!(checked_path(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn each_user_has_its_own_ids_and_the_system_keeps_the_old_ones() {
        let node = NodeId::from_bytes([7; 32]);
        let paths = vec![b"/etc".to_vec()];
        let system = backup_id(&node, None, &paths);
        assert_eq!(system, BackupId::for_sources(node.as_bytes(), &paths));
        let alice = backup_id(&node, Some(1000), &paths);
        let bob = backup_id(&node, Some(1001), &paths);
        assert_ne!(system, alice);
        assert_ne!(alice, bob);
    }

    #[test]
    fn only_the_system_sees_every_backup() {
        assert!(Caller::System.may_see(None));
        assert!(Caller::System.may_see(Some(1000)));
        assert!(Caller::User(1000).may_see(Some(1000)));
        assert!(!Caller::User(1000).may_see(Some(1001)));
        assert!(!Caller::User(1000).may_see(None));
        assert_eq!(Caller::from_uid(0), Caller::System);
    }
}
