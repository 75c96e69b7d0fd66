//! The commands that drive the customer-agent over its gRPC Unix socket.

use std::path::{Path, PathBuf};

use bitdust_proto::customer::v1 as pb;
use bitdust_proto::customer::v1::customer_client::CustomerClient;
use tonic::transport::Channel;

use bitdustctl::SuppliersCommand;

use crate::{Bar, EXIT_FAILED, EXIT_USAGE, EXIT_WARNINGS, report};

/// Exit status when the daemon does not answer.
pub(crate) const EXIT_NOT_RUNNING: u8 = 3;

/// A failure with its exit status.
pub(crate) struct Failure(pub(crate) u8, pub(crate) String);

impl From<tonic::Status> for Failure {
    fn from(s: tonic::Status) -> Self {
        let code = match s.code() {
            tonic::Code::InvalidArgument => EXIT_USAGE,
            tonic::Code::Unavailable
                if s.message().contains("tcp connect") || s.message().is_empty() =>
            {
                EXIT_NOT_RUNNING
            }
            _ => EXIT_FAILED,
        };
        Failure(code, s.message().to_owned())
    }
}

pub(crate) struct Client {
    inner: CustomerClient<Channel>,
}

pub(crate) async fn connect(run_dir: &Path) -> Result<Client, Failure> {
    let sock = run_dir.join("customer.sock");
    let channel = dial(&sock, "customer-agent", "bitdust-customer").await?;
    Ok(Client {
        inner: CustomerClient::new(channel).max_decoding_message_size(64 << 20),
    })
}

/// A channel to the daemon `what` (run by `unit`) on `sock`. A socket this
/// user may not open gets its own error: the daemon is running, and the
/// fix is group membership, not starting it.
async fn dial(sock: &Path, what: &str, unit: &str) -> Result<Channel, Failure> {
    if let Ok(channel) = bitdust_daemon::connect(sock).await {
        return Ok(channel);
    }
    // Only on failure: tell "may not" from "not running" with a plain connect.
    let denied = matches!(
        tokio::net::UnixStream::connect(sock).await,
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied
    );
    Err(if denied {
        Failure(
            EXIT_FAILED,
            format!(
                "permission denied on {}: only root and members of group bitdust may use the {what}; add this user to the group (adduser USER bitdust) and log in again",
                sock.display()
            ),
        )
    } else {
        Failure(
            EXIT_NOT_RUNNING,
            format!(
                "the {what} is not running (nothing answers on {}); start it (systemctl start {unit}) or point --run-dir at its sockets",
                sock.display()
            ),
        )
    })
}

/// Writing the output failed (a closed pipe, a full disk).
fn written(e: std::io::Error) -> Failure {
    Failure(EXIT_FAILED, format!("writing the output failed: {e}"))
}

/// Splits `ID[@VERSION]`.
fn split_which(which: Option<&str>) -> Result<(String, u64), Failure> {
    let Some(w) = which else {
        return Ok((String::new(), 0));
    };
    match w.split_once('@') {
        Some((id, v)) => {
            let v: u64 = v.parse().ok().filter(|v| *v > 0).ok_or_else(|| {
                Failure(
                    EXIT_USAGE,
                    format!("{w:?}: the version after @ must be a number from 1"),
                )
            })?;
            Ok((id.to_owned(), v))
        }
        None => Ok((w.to_owned(), 0)),
    }
}

/// The sources as absolute paths (see `source_path`), sorted, each one
/// readable by this user: a source it may not read is refused in one line
/// before anything is sent (entries below it it may not read are skipped,
/// each with a warning).
fn readable_sources(paths: &[PathBuf]) -> Result<Vec<PathBuf>, Failure> {
    let mut abs = Vec::new();
    for p in paths {
        let a = bitdust_pipeline::local::source_path(p).map_err(|e| {
            let code = if e.kind() == std::io::ErrorKind::PermissionDenied {
                EXIT_FAILED
            } else {
                EXIT_USAGE
            };
            Failure(code, format!("cannot back up {}: {e}", p.display()))
        })?;
        let readable = match std::fs::metadata(&a) {
            // Listed as the backup lists it, moving no atime.
            Ok(m) if m.is_dir() => bitdust_pipeline::meta::list_dir(&a).map(drop),
            Ok(m) if m.is_file() => {
                use std::os::unix::fs::OpenOptionsExt;
                std::fs::File::options()
                    .read(true)
                    .custom_flags(libc::O_NONBLOCK)
                    .open(&a)
                    .map(drop)
            }
            Ok(_) => Ok(()),
            Err(e) => Err(e),
        };
        if let Err(e) = readable {
            return Err(Failure(
                EXIT_FAILED,
                if e.kind() == std::io::ErrorKind::PermissionDenied {
                    format!(
                        "cannot back up {}: permission denied; you may back up only what you can read (ask its owner, or run as root)",
                        a.display()
                    )
                } else {
                    format!("cannot back up {}: {e}", a.display())
                },
            ));
        }
        abs.push(a);
    }
    abs.sort();
    abs.dedup();
    Ok(abs)
}

/// Pieces of the archive sent to the agent.
const PIECE: usize = 1 << 20;

/// Writes the archive of `sources` to the agent, piece by piece, then its
/// summary. On an error no `end` is sent, so the agent never commits it.
fn archive_to(
    sources: &[PathBuf],
    tx: tokio::sync::mpsc::Sender<pb::BackupInput>,
    bar: &Bar,
    cancel: &std::sync::atomic::AtomicBool,
) -> std::io::Result<()> {
    struct Pieces {
        tx: tokio::sync::mpsc::Sender<pb::BackupInput>,
        buf: Vec<u8>,
    }
    impl Pieces {
        fn send(&mut self) -> std::io::Result<()> {
            if self.buf.is_empty() {
                return Ok(());
            }
            let piece = std::mem::replace(&mut self.buf, Vec::with_capacity(PIECE));
            self.tx
                .blocking_send(pb::BackupInput {
                    kind: Some(pb::backup_input::Kind::Archive(piece)),
                })
                .map_err(|_| std::io::Error::from(std::io::ErrorKind::BrokenPipe))
        }
    }
    impl std::io::Write for Pieces {
        fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
            let n = data.len().min(PIECE - self.buf.len());
            self.buf.extend_from_slice(&data[..n]);
            if self.buf.len() == PIECE {
                self.send()?;
            }
            Ok(n)
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let out = Pieces {
        tx,
        buf: Vec::with_capacity(PIECE),
    };
    let (mut out, summary) = bitdust_pipeline::write_archive(sources, out, bar, cancel)?;
    out.send()?;
    out.tx
        .blocking_send(pb::BackupInput {
            kind: Some(pb::backup_input::Kind::End(pb::ArchiveEnd {
                files: summary.files,
                directories: summary.directories,
                symlinks: summary.symlinks,
                content_bytes: summary.content_bytes,
                skipped: summary.skipped,
            })),
        })
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::BrokenPipe))
}

/// A walked entry as the agent takes it.
fn entry_message(seq: u64, e: bitdust_pipeline::snapshot::Entry) -> pb::Entry {
    use bitdust_pipeline::snapshot::EntryKind;
    use bitdust_proto::format::v1::NodeKind;
    let (kind, target, rdev) = match e.kind {
        EntryKind::File => (NodeKind::File, Vec::new(), 0),
        EntryKind::Directory => (NodeKind::Directory, Vec::new(), 0),
        EntryKind::Symlink(t) => (NodeKind::Symlink, t, 0),
        EntryKind::Fifo => (NodeKind::Fifo, Vec::new(), 0),
        EntryKind::Device { block: false, rdev } => (NodeKind::CharDevice, Vec::new(), rdev),
        EntryKind::Device { block: true, rdev } => (NodeKind::BlockDevice, Vec::new(), rdev),
    };
    let has_owner = e.owner.is_some();
    let owner = e.owner.unwrap_or_default();
    pb::Entry {
        seq,
        path: e.path,
        kind: kind as i32,
        mode: e.mode,
        mtime: e.mtime.secs,
        mtime_nanos: e.mtime.nanos,
        ctime: e.ctime.secs,
        ctime_nanos: e.ctime.nanos,
        size: e.size,
        ino: e.ino,
        dev: e.dev,
        target,
        atime: e.atime.map(|t| t.secs),
        atime_nanos: e.atime.map_or(0, |t| t.nanos),
        uid: has_owner.then_some(owner.uid),
        gid: has_owner.then_some(owner.gid),
        user: owner.user,
        group: owner.group,
        xattrs: e.xattrs,
        rdev,
        nlink: e.nlink,
        holes: e.holes,
    }
}

/// Walks `sources` and sends their entries to the agent a window ahead,
/// and the content of each file the agent asks for (`wants`), read with
/// this process's rights. Ends when `wants` closes (the agent is done).
fn feed_to(
    sources: &[PathBuf],
    tx: tokio::sync::mpsc::Sender<pb::BackupInput>,
    wants: std::sync::mpsc::Receiver<bitdust_pipeline::remote::ToCaller>,
) -> std::io::Result<()> {
    use bitdust_pipeline::remote::{Feeder, FromCaller};
    use pb::backup_input::Kind;
    Feeder::new(sources.to_vec()).run(
        |m| {
            let kind = match m {
                FromCaller::Entries(batch) => Kind::Entries(pb::EntryBatch {
                    entries: batch
                        .into_iter()
                        .map(|(seq, e)| entry_message(seq, e))
                        .collect(),
                }),
                FromCaller::Content {
                    seq,
                    data,
                    last,
                    changed,
                } => Kind::Content(pb::Content {
                    seq,
                    data,
                    last,
                    changed,
                }),
                FromCaller::End { skipped } => Kind::End(pb::ArchiveEnd {
                    skipped,
                    ..Default::default()
                }),
            };
            tx.blocking_send(pb::BackupInput { kind: Some(kind) })
                .map_err(|_| std::io::Error::from(std::io::ErrorKind::BrokenPipe))
        },
        || Ok(wants.recv().ok()),
    )
}

/// A piece of a restore stream.
// Pieces move one at a time; boxing each node would only add an allocation.
#[allow(clippy::large_enum_variant)]
enum Piece {
    Archive(Vec<u8>),
    Node(bitdust_proto::format::v1::Node),
    Content(prost::bytes::Bytes),
    /// The agent asks for the descriptor of the file just created, as its
    /// `n`th.
    WantFd(u64),
    /// The agent wrote this many bytes into it.
    Written(u64),
}

/// Connects to the agent's descriptor socket as its `offer` says.
async fn take_fd_offer(offer: &pb::FdOffer) -> std::io::Result<std::os::unix::net::UnixStream> {
    use tokio::io::AsyncWriteExt;
    let mut conn = tokio::net::UnixStream::connect(&offer.socket).await?;
    conn.write_all(&offer.token).await?;
    let conn = conn.into_std()?;
    conn.set_nonblocking(false)?;
    Ok(conn)
}

/// The thread that writes a restore stream into the target, as this user.
struct Extractor {
    tx: tokio::sync::mpsc::Sender<std::io::Result<Piece>>,
    thread: std::thread::JoinHandle<
        Result<bitdust_pipeline::RestoreReport, bitdust_pipeline::RestoreError>,
    >,
}

impl Extractor {
    /// An archive's extractor, or a snapshot's when `first` is an entry.
    /// (`fds`: the connection the agent takes descriptors on, if made, and
    /// whether it takes declines.)
    fn start(
        first: &Piece,
        to: &Path,
        bar: &Bar,
        owners: bitdust_pipeline::snapshot::Owners,
        fds: Option<(std::os::unix::net::UnixStream, bool)>,
    ) -> Extractor {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<std::io::Result<Piece>>(4);
        let (to, bar) = (to.to_owned(), bar.clone());
        let snapshot = !matches!(first, Piece::Archive(_));
        let thread = std::thread::spawn(move || {
            if snapshot {
                use bitdust_pipeline::snapshot::Streamed;
                // The number of the descriptor the agent asked for last.
                let wanted = std::cell::Cell::new(0);
                let r = bitdust_pipeline::snapshot::extract_nodes(
                    &to,
                    || match rx.blocking_recv() {
                        None => Ok(None),
                        Some(Err(e)) => Err(e),
                        Some(Ok(Piece::Node(n))) => Ok(Some(Streamed::Node(n))),
                        Some(Ok(Piece::Content(c))) => Ok(Some(Streamed::Content(c))),
                        Some(Ok(Piece::WantFd(n))) => {
                            wanted.set(n);
                            Ok(Some(Streamed::WantFd))
                        }
                        Some(Ok(Piece::Written(n))) => Ok(Some(Streamed::Written(n))),
                        Some(Ok(Piece::Archive(_))) => Err(std::io::Error::other(
                            "the agent mixed an archive into a snapshot's entries",
                        )),
                    },
                    |fd| match &fds {
                        // A file whose writes another process or host
                        // answers is declined: its content streams, and
                        // no server can hold the agent in a write.
                        Some((conn, true)) if bitdust_daemon::fds::not_passable(fd)?.is_some() => {
                            bitdust_daemon::fds::send_decline(conn, wanted.get()).map(|()| false)
                        }
                        Some((conn, _)) => {
                            bitdust_daemon::fds::send_fd(conn, wanted.get(), fd).map(|()| true)
                        }
                        None => Err(std::io::Error::other(
                            "the agent asked for a file's descriptor, which this restore did not offer",
                        )),
                    },
                    &bar,
                    owners,
                );
                if r.is_err() {
                    // Closed before the descriptor connection, so that the
                    // stream's end (the agent's error, which follows this
                    // one) is known to come from this failure.
                    rx.close();
                }
                drop(fds);
                let r = r?;
                Ok(bitdust_pipeline::RestoreReport {
                    files: r.files,
                    directories: r.directories,
                    symlinks: r.symlinks,
                    bytes: r.bytes,
                    // Owners or attributes given back only in part.
                    skipped: r.warnings,
                    ..Default::default()
                })
            } else {
                let reader = bitdust_pipeline::chunk_reader(move || match rx.blocking_recv() {
                    None => None,
                    Some(Err(e)) => Some(Err(e)),
                    Some(Ok(Piece::Archive(a))) => Some(Ok(a)),
                    Some(Ok(_)) => Some(Err(std::io::Error::other(
                        "the agent mixed snapshot entries into an archive",
                    ))),
                });
                bitdust_pipeline::extract_archive(reader, &to, &bar)
            }
        });
        Extractor { tx, thread }
    }

    async fn send(&self, p: Piece) -> Result<(), ()> {
        self.tx.send(Ok(p)).await.map_err(|_| ())
    }

    /// Ends the stream (`whole`: it ended cleanly; else it is cut and the
    /// staging directory goes) and waits for the thread.
    async fn finish(
        self,
        whole: bool,
        bar: &Bar,
    ) -> Result<bitdust_pipeline::RestoreReport, bitdust_pipeline::RestoreError> {
        if !whole {
            let _ = self
                .tx
                .send(Err(std::io::Error::other("the restore stream was cut")))
                .await;
        }
        drop(self.tx);
        bar.done();
        self.thread.join().unwrap_or_else(|_| {
            Err(bitdust_pipeline::RestoreError::Stream(
                std::io::Error::other("the extractor panicked"),
            ))
        })
    }
}

/// The archiver's error, if it failed for a reason of its own. An archiver
/// still waiting to send (the agent failed first) is left to the exit.
fn archive_failure(archiver: std::thread::JoinHandle<std::io::Result<()>>) -> Option<Failure> {
    for _ in 0..100 {
        if archiver.is_finished() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    if !archiver.is_finished() {
        return None;
    }
    match archiver.join() {
        Ok(Err(e)) if e.kind() != std::io::ErrorKind::BrokenPipe => Some(Failure(
            EXIT_FAILED,
            format!("reading the files to back up failed: {e}"),
        )),
        _ => None,
    }
}

fn absolute(p: &Path) -> Result<PathBuf, Failure> {
    std::path::absolute(p).map_err(|e| Failure(EXIT_USAGE, format!("{}: {e}", p.display())))
}

impl Client {
    pub(crate) async fn status(
        &mut self,
        run_dir: &Path,
        json: bool,
        quiet: bool,
    ) -> Result<u8, Failure> {
        let s = self.inner.status(pb::StatusRequest {}).await?.into_inner();
        let mut report = report::Status::from(s);
        report.supplier = local_supplier(run_dir).await;
        report.dht = local_dht(run_dir).await;
        report::emit(&report, json, quiet);
        Ok(0)
    }

    pub(crate) async fn start_afresh(
        &mut self,
        yes: bool,
        json: bool,
        quiet: bool,
    ) -> Result<u8, Failure> {
        if !yes {
            return Err(Failure(
                EXIT_FAILED,
                "start-afresh gives up every backup made before under this key (this agent will not reach them, and its new supplier list replaces the old one); run it again with --yes to do so".into(),
            ));
        }
        let r = self
            .inner
            .start_afresh(pb::StartAfreshRequest {})
            .await?
            .into_inner();
        report::emit(&report::GaveUp::from(r), json, quiet);
        Ok(0)
    }

    pub(crate) async fn backup(
        &mut self,
        paths: &[PathBuf],
        snapshot: bool,
        json: bool,
        quiet: bool,
    ) -> Result<u8, Failure> {
        let started = std::time::Instant::now();
        let abs = readable_sources(paths)?;
        let show = !json && !quiet;
        // The progress bar's total: a walk of its own, only when shown.
        let total = if show {
            tokio::task::spawn_blocking({
                let abs = abs.clone();
                move || bitdust_pipeline::local::tree_size(&abs)
            })
            .await
            .unwrap_or(0)
        } else {
            0
        };
        let bar = Bar::new(show, total, "backup");
        // This process reads the files, with the rights of the user who
        // runs it, and streams the archive; the agent reads no file.
        let (tx, rx) = tokio::sync::mpsc::channel::<pb::BackupInput>(4);
        let start = pb::BackupInput {
            kind: Some(pb::backup_input::Kind::Start(pb::BackupStart {
                paths: abs.iter().map(|p| p.display().to_string()).collect(),
                bytes_total: total,
                snapshot,
            })),
        };
        tx.send(start)
            .await
            .map_err(|_| Failure(EXIT_FAILED, "the backup stream closed at once".into()))?;
        let cancel = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        // A snapshot: the agent asks for the files it needs (`wants`).
        let (wants_tx, wants_rx) = std::sync::mpsc::channel();
        let mut wants = snapshot.then_some(wants_tx);
        let archiver = if snapshot {
            std::thread::spawn(move || feed_to(&abs, tx, wants_rx))
        } else {
            let (bar, cancel) = (bar.clone(), cancel.clone());
            std::thread::spawn(move || archive_to(&abs, tx, &bar, &cancel))
        };
        let finish = |bar: &Bar, cancel: &std::sync::atomic::AtomicBool| {
            bar.done();
            cancel.store(true, std::sync::atomic::Ordering::Relaxed);
        };
        let mut stream = match self
            .inner
            .backup(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
        {
            Ok(r) => r.into_inner(),
            Err(s) => {
                finish(&bar, &cancel);
                return Err(s.into());
            }
        };
        let done = loop {
            let ev = match stream.message().await {
                Ok(Some(ev)) => ev,
                Ok(None) => {
                    finish(&bar, &cancel);
                    drop(wants);
                    return Err(archive_failure(archiver).unwrap_or_else(|| {
                        Failure(
                            EXIT_FAILED,
                            "the customer-agent ended the backup without a result; see its log"
                                .into(),
                        )
                    }));
                }
                Err(s) => {
                    finish(&bar, &cancel);
                    drop(wants);
                    // The archiver's own error (a file that could not be
                    // read) says more than the agent's "stream broke".
                    return Err(archive_failure(archiver).unwrap_or_else(|| s.into()));
                }
            };
            use bitdust_pipeline::remote::ToCaller;
            let want = match ev.kind {
                Some(pb::backup_event::Kind::Done(d)) => break d,
                Some(pb::backup_event::Kind::Want(seq)) => ToCaller::Want(seq),
                Some(pb::backup_event::Kind::Taken(seq)) => ToCaller::Taken(seq),
                Some(pb::backup_event::Kind::Progress(p)) if snapshot => {
                    bar.set(p.bytes_done);
                    continue;
                }
                _ => continue,
            };
            if let Some(w) = &wants
                && w.send(want).is_err()
            {
                // The feeder stopped; its error says why.
                wants = None;
            }
        };
        drop(wants);
        finish(&bar, &cancel);
        let _ = archiver.join();
        let mut done = report::BackedUp::from(done);
        done.seconds = started.elapsed().as_secs_f64();
        for w in &done.warnings {
            eprintln!("bitdustctl: warning: skipped {w}");
        }
        if !done.failed_positions.is_empty() && !quiet {
            eprintln!(
                "bitdustctl: warning: positions {:?} did not take their fragments; they are recorded for repair",
                done.failed_positions
            );
        }
        report::emit(&done, json, quiet);
        Ok(
            if done.warnings.is_empty() && done.failed_positions.is_empty() {
                0
            } else {
                EXIT_WARNINGS
            },
        )
    }

    pub(crate) async fn restore(
        &mut self,
        which: Option<&str>,
        to: &Path,
        include: &[PathBuf],
        owners: bitdust_pipeline::snapshot::Owners,
        json: bool,
        quiet: bool,
    ) -> Result<u8, Failure> {
        let started = std::time::Instant::now();
        let (backup_id, version) = split_which(which)?;
        let to = absolute(to)?;
        let include = include
            .iter()
            .map(|p| {
                let p = absolute(p)?;
                Ok(std::os::unix::ffi::OsStrExt::as_bytes(p.as_os_str())
                    .strip_prefix(b"/")
                    .unwrap_or_default()
                    .to_vec())
            })
            .collect::<Result<Vec<_>, Failure>>()?;
        // The agent streams the archive (or a snapshot's entries) and this
        // process extracts it, so the files are written as the user who
        // asked, wherever they may write (the packaged agent itself may
        // write nowhere outside its state).
        let mut stream = self
            .inner
            .restore(pb::RestoreRequest {
                backup_id,
                version,
                to: String::new(),
                include,
                pass_fds: true,
            })
            .await?
            .into_inner();
        // The agent's first event gives the total for the progress bar.
        let mut first = stream.message().await?;
        let total = match &first {
            Some(pb::RestoreEvent {
                kind: Some(pb::restore_event::Kind::Progress(p)),
            }) => p.bytes_total,
            _ => 0,
        };
        let bar = Bar::new(!json && !quiet, total, "restore");
        // Started at the first piece: an archive's extractor, or a
        // snapshot's (entries and content).
        let mut extractor: Option<Extractor> = None;
        // Where large files' descriptors go, if the agent offered it.
        let mut fds = None;
        let ended = loop {
            let ev = match first.take() {
                Some(ev) => Ok(Some(ev)),
                None => stream.message().await,
            };
            let piece = match ev {
                Ok(Some(pb::RestoreEvent {
                    kind: Some(pb::restore_event::Kind::Done(d)),
                })) => break Ok(d),
                Ok(Some(pb::RestoreEvent {
                    kind: Some(pb::restore_event::Kind::Archive(piece)),
                })) => Piece::Archive(piece),
                Ok(Some(pb::RestoreEvent {
                    kind: Some(pb::restore_event::Kind::Node(n)),
                })) => Piece::Node(n),
                Ok(Some(pb::RestoreEvent {
                    kind: Some(pb::restore_event::Kind::Content(c)),
                })) => Piece::Content(c),
                Ok(Some(pb::RestoreEvent {
                    kind: Some(pb::restore_event::Kind::WantFd(n)),
                })) => Piece::WantFd(n),
                Ok(Some(pb::RestoreEvent {
                    kind: Some(pb::restore_event::Kind::Written(n)),
                })) => Piece::Written(n),
                Ok(Some(pb::RestoreEvent {
                    kind: Some(pb::restore_event::Kind::FdOffer(offer)),
                })) => {
                    // Not taken up, the offer only delays the restore by
                    // the agent's wait: it streams the content then.
                    fds = match take_fd_offer(&offer).await {
                        Ok(conn) => Some((conn, offer.declines)),
                        Err(e) => {
                            if !quiet {
                                eprintln!(
                                    "bitdustctl: warning: cannot pass the files to the customer-agent ({}: {e}); their content streams instead",
                                    offer.socket
                                );
                            }
                            None
                        }
                    };
                    continue;
                }
                Ok(Some(_)) => continue,
                Ok(None) => {
                    break Err(Some(Failure(
                        EXIT_FAILED,
                        "the customer-agent ended the restore without a result; see its log".into(),
                    )));
                }
                // The extractor stopped on its own before (it closed its
                // end): its error, not the agent's, says why.
                Err(_) if extractor.as_ref().is_some_and(|x| x.tx.is_closed()) => break Err(None),
                Err(s) => break Err(Some(s.into())),
            };
            let x = extractor
                .get_or_insert_with(|| Extractor::start(&piece, &to, &bar, owners, fds.take()));
            if x.send(piece).await.is_err() {
                // The extractor stopped early; its error says why.
                break Err(None);
            }
        };
        // Nothing came before the result: a snapshot restore that matched
        // no entry leaves an empty directory.
        let extractor = extractor.unwrap_or_else(|| {
            Extractor::start(&Piece::Content(Default::default()), &to, &bar, owners, None)
        });
        let done = match ended {
            Ok(d) => d,
            Err(why) => {
                // Whatever was extracted is thrown away with the staging
                // directory: an incomplete stream is never left as a restore.
                let extracted = extractor.finish(false, &bar).await;
                return Err(match (why, extracted) {
                    (Some(f), _) => f,
                    (None, Err(e)) => Failure(EXIT_FAILED, e.to_string()),
                    (None, Ok(_)) => Failure(
                        EXIT_FAILED,
                        "the stream ended before the customer-agent finished; see its log".into(),
                    ),
                });
            }
        };
        let extracted = extractor
            .finish(true, &bar)
            .await
            .map_err(|e| Failure(EXIT_FAILED, e.to_string()))?;
        let mut done = report::Restored::new(done, &to, &extracted);
        done.seconds = started.elapsed().as_secs_f64();
        for w in &done.warnings {
            if !quiet {
                eprintln!("bitdustctl: warning: {w}");
            }
        }
        report::emit(&done, json, quiet);
        Ok(if done.warnings.is_empty() {
            0
        } else {
            EXIT_WARNINGS
        })
    }

    pub(crate) async fn list(&mut self, json: bool, quiet: bool) -> Result<u8, Failure> {
        let l = self.inner.list(pb::ListRequest {}).await?.into_inner();
        report::emit(&report::Listing::from(l), json, quiet);
        Ok(0)
    }

    pub(crate) async fn delete(
        &mut self,
        which: &str,
        json: bool,
        quiet: bool,
    ) -> Result<u8, Failure> {
        let (backup_id, version) = split_which(Some(which))?;
        let d = self
            .inner
            .delete(pb::DeleteRequest { backup_id, version })
            .await?
            .into_inner();
        report::emit(&report::Deleted::from(d), json, quiet);
        Ok(0)
    }

    pub(crate) async fn ls(
        &mut self,
        which: Option<&str>,
        path: Option<&Path>,
        json: bool,
        quiet: bool,
    ) -> Result<u8, Failure> {
        let (backup_id, version) = split_which(which)?;
        let path = path.map(crate::as_backed_up).unwrap_or_default();
        let mut stream = self
            .inner
            .ls(pb::LsRequest {
                backup_id,
                version,
                path,
            })
            .await?
            .into_inner();
        let mut out = report::Lines::new(json, quiet);
        while let Some(batch) = stream.message().await? {
            for n in &batch.nodes {
                out.node(n).map_err(written)?;
            }
        }
        out.finish().map_err(written)?;
        Ok(0)
    }

    pub(crate) async fn diff(
        &mut self,
        a: &str,
        b: &str,
        json: bool,
        quiet: bool,
    ) -> Result<u8, Failure> {
        let (id, from) = split_which(Some(a))?;
        let (id_b, to) = split_which(Some(b))?;
        if from == 0 || to == 0 {
            return Err(Failure(
                EXIT_USAGE,
                "diff needs two snapshots, as ID@A ID@B (or ID@A @B)".into(),
            ));
        }
        if !id_b.is_empty() && !id.starts_with(&id_b) && !id_b.starts_with(&id) {
            return Err(Failure(
                EXIT_USAGE,
                format!(
                    "{a} and {b} are snapshots of two backups; diff compares two snapshots of one"
                ),
            ));
        }
        let backup_id = if id.len() >= id_b.len() { id } else { id_b };
        let mut stream = self
            .inner
            .diff(pb::DiffRequest {
                backup_id,
                from,
                to,
            })
            .await?
            .into_inner();
        let mut out = report::Lines::new(json, quiet);
        use bitdust_pipeline::snapshot::Change;
        while let Some(ev) = stream.message().await? {
            match ev.kind {
                Some(pb::diff_event::Kind::Change(c)) => {
                    let c = match (c.before, c.after) {
                        (None, Some(n)) => Change::Added(n),
                        (Some(n), None) => Change::Removed(n),
                        (Some(before), Some(after)) => Change::Modified { before, after },
                        (None, None) => continue,
                    };
                    out.change(&c).map_err(written)?;
                }
                Some(pb::diff_event::Kind::Done(d)) => {
                    out.diff_done(
                        format!("{}@{}", d.backup_id, d.from),
                        format!("{}@{}", d.backup_id, d.to),
                        d.unchanged,
                    )
                    .map_err(written)?;
                    return Ok(0);
                }
                None => {}
            }
        }
        Err(Failure(
            EXIT_FAILED,
            "the customer-agent ended the diff without its summary; see its log (journalctl -u bitdust-customer)".into(),
        ))
    }

    pub(crate) async fn forget(
        &mut self,
        which: Option<&str>,
        policy: &bitdustctl::PolicyArgs,
        dry_run: bool,
        json: bool,
        quiet: bool,
    ) -> Result<u8, Failure> {
        let (backup_id, version) = split_which(which)?;
        let r = self
            .inner
            .forget(pb::ForgetRequest {
                backup_id,
                version,
                keep_last: policy.keep_last,
                keep_hourly: policy.keep_hourly,
                keep_daily: policy.keep_daily,
                keep_weekly: policy.keep_weekly,
                keep_monthly: policy.keep_monthly,
                keep_yearly: policy.keep_yearly,
                keep_within: policy
                    .keep_within
                    .map(|w| w.to_string())
                    .unwrap_or_default(),
                dry_run,
            })
            .await?
            .into_inner();
        let r = report::Forgot::from(r);
        report::emit(&r, json, quiet);
        Ok(match &r.prune {
            Some(p) if p.pending() > 0 => EXIT_WARNINGS,
            _ => 0,
        })
    }

    pub(crate) async fn prune(
        &mut self,
        which: Option<&str>,
        max_unused: f64,
        json: bool,
        quiet: bool,
    ) -> Result<u8, Failure> {
        let backup_id = which.unwrap_or_default().to_owned();
        let p = self
            .inner
            .prune(pb::PruneRequest {
                backup_id: backup_id.clone(),
                max_unused: (max_unused < 1.0).then_some(max_unused),
            })
            .await?
            .into_inner();
        let label = if backup_id.is_empty() {
            "(all)".to_owned()
        } else {
            backup_id
        };
        let r = report::Pruned::of_suppliers(label, p);
        report::emit(&r, json, quiet);
        Ok(if r.pending() > 0 { EXIT_WARNINGS } else { 0 })
    }

    pub(crate) async fn check(
        &mut self,
        which: Option<&str>,
        subset: Option<bitdust_pipeline::local::DataSubset>,
        json: bool,
        quiet: bool,
    ) -> Result<u8, Failure> {
        let r = self
            .inner
            .check(pb::CheckRequest {
                backup_id: which.unwrap_or_default().to_owned(),
                read_data_subset: subset.map(|s| s.to_string()).unwrap_or_default(),
            })
            .await?
            .into_inner();
        Ok(crate::checked(report::Checked::from(r), json, quiet))
    }

    pub(crate) async fn stats(
        &mut self,
        which: Option<&str>,
        json: bool,
        quiet: bool,
    ) -> Result<u8, Failure> {
        let r = self
            .inner
            .stats(pb::StatsRequest {
                backup_id: which.unwrap_or_default().to_owned(),
            })
            .await?
            .into_inner();
        report::emit(&report::LocalStats::from(r), json, quiet);
        Ok(0)
    }

    pub(crate) async fn suppliers(
        &mut self,
        cmd: Option<&SuppliersCommand>,
        json: bool,
        quiet: bool,
    ) -> Result<u8, Failure> {
        match cmd {
            None => {
                let l = self
                    .inner
                    .list_suppliers(pb::ListSuppliersRequest {})
                    .await?
                    .into_inner();
                report::emit(&report::Suppliers::from(l), json, quiet);
            }
            Some(SuppliersCommand::Hire { address, position }) => {
                // Without an address or position: every free position, one
                // supplier from the DHT each.
                let targets: Vec<Option<u32>> = if address.is_none() && position.is_none() {
                    let l = self
                        .inner
                        .list_suppliers(pb::ListSuppliersRequest {})
                        .await?
                        .into_inner();
                    let held: Vec<u32> = l.suppliers.iter().map(|s| s.position).collect();
                    let free: Vec<Option<u32>> = (0..l.positions)
                        .filter(|p| !held.contains(p))
                        .map(Some)
                        .collect();
                    if free.is_empty() {
                        return Err(Failure(
                            EXIT_FAILED,
                            format!(
                                "all {} positions have a supplier; fire one first (bitdustctl suppliers fire POSITION)",
                                l.positions
                            ),
                        ));
                    }
                    free
                } else {
                    vec![*position]
                };
                let mut done = report::Hired { hired: Vec::new() };
                for p in &targets {
                    let r = self
                        .inner
                        .hire_supplier(pb::HireSupplierRequest {
                            address: address.clone().unwrap_or_default(),
                            position: *p,
                        })
                        .await;
                    let s = match r {
                        Ok(s) => report::HiredOne(s.into_inner().into()),
                        Err(e) if done.hired.is_empty() => return Err(e.into()),
                        Err(e) => {
                            // What was hired is said, then why the rest was not.
                            if json {
                                report::emit(&done, json, quiet);
                            }
                            return Err(Failure(
                                EXIT_FAILED,
                                format!(
                                    "hired {} of {} free positions, then: {}",
                                    done.hired.len(),
                                    targets.len(),
                                    e.message()
                                ),
                            ));
                        }
                    };
                    // Said as each one is hired; JSON once, at the end.
                    if !json {
                        report::emit(&s, json, quiet);
                    }
                    done.hired.push(s);
                }
                if json {
                    match done.hired.as_slice() {
                        [one] if targets.len() == 1 => report::emit(one, json, quiet),
                        _ => report::emit(&done, json, quiet),
                    }
                }
            }
            Some(SuppliersCommand::Fire { position }) => {
                let f = self
                    .inner
                    .fire_supplier(pb::FireSupplierRequest {
                        position: *position,
                    })
                    .await?
                    .into_inner();
                report::emit(&report::Fired::new(*position, f), json, quiet);
            }
        }
        Ok(0)
    }
}

/// What the daemon on this machine whose socket is `run_dir/socket`
/// answers `ask` (given a channel to it), when it answers within 2 s.
async fn ask_local<T, F, Fut>(run_dir: &Path, socket: &str, ask: F) -> Option<T>
where
    F: FnOnce(tonic::transport::Channel) -> Fut,
    Fut: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
{
    let asked = async {
        let ch = bitdust_daemon::connect(&run_dir.join(socket)).await.ok()?;
        ask(ch).await.ok()
    };
    Some(
        tokio::time::timeout(std::time::Duration::from_secs(2), asked)
            .await
            .ok()??
            .into_inner(),
    )
}

/// The supplier-store on this machine, when its socket answers within 2 s:
/// how customers reach it.
async fn local_supplier(run_dir: &Path) -> Option<report::LocalSupplier> {
    use bitdust_proto::supplier::v1 as spb;
    let s = ask_local(run_dir, "supplier.sock", |ch| async move {
        spb::supplier_client::SupplierClient::new(ch)
            .status(spb::StatusRequest {})
            .await
    })
    .await?;
    Some(report::LocalSupplier {
        node_id: s.node_id,
        address: s.address,
        routers: s.routers,
        reachability: s.reachability,
        port_mapping: s.port_mapping,
        connections: s.connections,
        refused_connections: s.refused_connections,
    })
}

/// The dht-peer on this machine, when its socket answers within 2 s:
/// whether strangers reach it.
async fn local_dht(run_dir: &Path) -> Option<report::LocalDht> {
    use bitdust_proto::dht::v1 as dpb;
    let s = ask_local(run_dir, "dht.sock", |ch| async move {
        dpb::dht_client::DhtClient::new(ch)
            .status(dpb::StatusRequest {})
            .await
    })
    .await?;
    Some(report::LocalDht {
        node_id: s.node_id,
        address: s.address,
        reachability: s.reachability,
        port_mapping: s.port_mapping,
    })
}

/// `bitdustctl status` with no customer-agent: on a supplier's machine,
/// the supplier-store's status and the dht-peer's; else the agent's error
/// (a customer's agent that is down is a failure, whatever else runs).
pub(crate) async fn supplier_status(
    run_dir: &Path,
    json: bool,
    quiet: bool,
    no_agent: Failure,
) -> Result<u8, Failure> {
    let Some(supplier) = local_supplier(run_dir).await else {
        return Err(no_agent);
    };
    let dht = local_dht(run_dir).await;
    report::emit(&report::SupplierOnly { supplier, dht }, json, quiet);
    Ok(0)
}

/// `bitdustctl rebuild status`, from the rebuilder's socket.
pub(crate) async fn rebuild_status(run_dir: &Path, json: bool, quiet: bool) -> Result<u8, Failure> {
    use bitdust_proto::rebuilder::v1 as rpb;
    let sock = run_dir.join("rebuilder.sock");
    let channel = dial(&sock, "rebuilder", "bitdust-rebuilder").await?;
    let s = rpb::rebuilder_client::RebuilderClient::new(channel)
        .status(rpb::StatusRequest {})
        .await?
        .into_inner();
    report::emit(&report::RebuildStatus::from(s), json, quiet);
    Ok(0)
}
