//! A snapshot's entries from another process: the two-way backup stream
//! of docs/snapshots.md ("Backing up"). The caller (`bitdustctl`, with the
//! user's rights) walks the tree and sends entries ahead, a window at a
//! time; the writer (in the customer-agent) takes them in order through
//! [`RemoteEntries`], an [`EntrySource`], and asks for the content of the
//! files its files cache does not vouch for; the caller's [`Feeder`] reads
//! only those. The transport is a trait: gRPC in the agent, channels in
//! tests.

use std::collections::VecDeque;
use std::io::{self, Read};
use std::path::PathBuf;

use crate::snapshot::{Entry, EntryKind, EntrySource, LocalWalk, cmp_paths};

/// Entries the caller may send ahead of the writer.
pub const WINDOW: usize = 256;
/// The most content bytes in one message from the caller.
pub const MAX_CONTENT: usize = 1 << 20;
/// What the caller sends in one message: gRPC copies each message into a
/// buffer of its size, and one of 1 MiB was a fresh mapping each time (a
/// page fault per 4 KiB, on both sides), where 128 KiB comes back from
/// the heap (issue 19, session 24).
pub const CONTENT_PIECE: usize = 128 << 10;
/// The writer says how far it got after this many entries.
const ACK_EVERY: u64 = 64;

/// What the caller sends.
#[derive(Clone, Debug)]
pub enum FromCaller {
    /// Entries, numbered from 0 in snapshot order.
    Entries(Vec<(u64, Entry)>),
    /// Part of the content of file `seq`, which the writer asked for.
    Content {
        /// The entry.
        seq: u64,
        /// At most [`MAX_CONTENT`] bytes.
        data: crate::snapshot::Bytes,
        /// The file's last part.
        last: bool,
        /// On the last part: the file's size or mtime differed after it
        /// was read.
        changed: bool,
    },
    /// No more entries; what the caller could not read, with reasons.
    End {
        /// One line each.
        skipped: Vec<String>,
    },
}

/// What the writer sends back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ToCaller {
    /// Send the content of file `seq` now.
    Want(u64),
    /// Every entry before this one is taken: send more.
    Taken(u64),
}

/// The writer's side of the transport.
pub trait CallerLink {
    /// The next message; `None` when the caller hung up.
    fn recv(&mut self) -> io::Result<Option<FromCaller>>;
    /// Sends `m` to the caller.
    fn send(&mut self, m: ToCaller) -> io::Result<()>;
}

fn refused(why: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, why)
}

/// The entries a caller sends, checked: in order, numbered from 0, under
/// the paths the backup names, no `.`, `..` or empty component, at most a
/// window ahead, content only when asked for and never beyond the size
/// sent.
pub struct RemoteEntries<C> {
    link: C,
    roots: Vec<Vec<u8>>,
    queue: VecDeque<(u64, Entry)>,
    next_seq: u64,
    last_path: Option<Vec<u8>>,
    current: Option<(u64, u64)>,
    /// A file whose content was asked for and whose last part has not
    /// come yet (the writer may stop reading at the size it knows).
    draining: Option<u64>,
    /// The file read last changed while the caller read it.
    changed: bool,
    ended: bool,
    skipped: Vec<String>,
}

impl<C: CallerLink> RemoteEntries<C> {
    /// Entries of the backup of `roots` (raw paths without their leading
    /// `/`) from `link`.
    pub fn new(link: C, roots: Vec<Vec<u8>>) -> Self {
        RemoteEntries {
            link,
            roots,
            queue: VecDeque::new(),
            next_seq: 0,
            last_path: None,
            current: None,
            draining: None,
            changed: false,
            ended: false,
            skipped: Vec::new(),
        }
    }

    /// Takes in one message that is not content.
    fn take(&mut self, m: Option<FromCaller>) -> io::Result<()> {
        match m {
            None => Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the caller hung up before the end of the entries",
            )),
            Some(FromCaller::Entries(batch)) => {
                if self.ended {
                    return Err(refused("entries after the end".into()));
                }
                for (seq, e) in batch {
                    self.check(seq, &e)?;
                    self.queue.push_back((seq, e));
                }
                if self.queue.len() > WINDOW {
                    return Err(refused(format!(
                        "the caller sent more than {WINDOW} entries ahead"
                    )));
                }
                Ok(())
            }
            Some(FromCaller::End { skipped }) => {
                if self.ended {
                    return Err(refused("a second end of the entries".into()));
                }
                self.ended = true;
                self.skipped.extend(skipped.into_iter().take(10_000));
                Ok(())
            }
            Some(FromCaller::Content { seq, .. }) => Err(refused(format!(
                "content of entry {seq}, which was not asked for"
            ))),
        }
    }

    fn check(&mut self, seq: u64, e: &Entry) -> io::Result<()> {
        let name = || String::from_utf8_lossy(&e.path).into_owned();
        if seq != self.next_seq {
            return Err(refused(format!(
                "entry {seq} came where entry {} was due",
                self.next_seq
            )));
        }
        if e.path
            .split(|c| *c == b'/')
            .any(|c| c.is_empty() || c == b"." || c == b"..")
            || e.path.contains(&0)
        {
            return Err(refused(format!("/{} is not a plain path", name())));
        }
        let under = self
            .roots
            .iter()
            .any(|r| e.path == *r || (e.path.starts_with(r) && e.path.get(r.len()) == Some(&b'/')));
        if !under {
            return Err(refused(format!(
                "/{} is outside the paths this backup names",
                name()
            )));
        }
        if let Some(last) = &self.last_path
            && cmp_paths(last, &e.path) != std::cmp::Ordering::Less
        {
            return Err(refused(format!("/{} is out of order", name())));
        }
        if let EntryKind::Symlink(t) = &e.kind
            && t.len() > 64 << 10
        {
            return Err(refused(format!("/{}: a symlink target too long", name())));
        }
        crate::meta::check_xattrs(&e.xattrs)
            .map_err(|why| refused(format!("/{}: {why}", name())))?;
        if !e.holes.is_empty() && e.kind != EntryKind::File {
            return Err(refused(format!(
                "/{}: holes in an entry that is not a file",
                name()
            )));
        }
        crate::meta::check_holes(e.size, &e.holes)
            .map_err(|why| refused(format!("/{}: {why}", name())))?;
        if e.owner
            .as_ref()
            .is_some_and(|o| o.user.len() > 256 || o.group.len() > 256)
        {
            return Err(refused(format!(
                "/{}: an owner's name over 256 bytes",
                name()
            )));
        }
        self.last_path = Some(e.path.clone());
        self.next_seq += 1;
        Ok(())
    }
}

impl<C: CallerLink> EntrySource for RemoteEntries<C> {
    fn next_entry(&mut self) -> io::Result<Option<Entry>> {
        if let Some(seq) = self.current.map(|c| c.0)
            && self.draining == Some(seq)
        {
            let mut rest = Content {
                from: &mut *self,
                seq,
                left: 0,
                buf: crate::snapshot::Bytes::new(),
                at: 0,
                last: false,
            };
            // Only an empty last part may be left.
            if rest.read(&mut [0u8; 1])? != 0 {
                return Err(refused(format!("entry {seq}: more content than its size")));
            }
        }
        while self.queue.is_empty() && !self.ended {
            let m = self.link.recv()?;
            self.take(m)?;
        }
        let Some((seq, e)) = self.queue.pop_front() else {
            return Ok(None);
        };
        if seq > 0 && seq % ACK_EVERY == 0 {
            self.link.send(ToCaller::Taken(seq))?;
        }
        self.current = Some((seq, e.data_len()));
        Ok(Some(e))
    }

    fn content(&mut self) -> io::Result<Box<dyn Read + '_>> {
        let (seq, size) = self
            .current
            .ok_or_else(|| io::Error::other("no current file"))?;
        self.link.send(ToCaller::Want(seq))?;
        self.draining = Some(seq);
        self.changed = false;
        Ok(Box::new(Content {
            from: self,
            seq,
            left: size,
            buf: crate::snapshot::Bytes::new(),
            at: 0,
            last: false,
        }))
    }

    fn take_skipped(&mut self) -> Vec<String> {
        std::mem::take(&mut self.skipped)
    }

    fn changed(&mut self) -> bool {
        self.changed
    }
}

/// The content of one file, as its parts arrive.
struct Content<'a, C> {
    from: &'a mut RemoteEntries<C>,
    seq: u64,
    left: u64,
    buf: crate::snapshot::Bytes,
    at: usize,
    last: bool,
}

impl<C: CallerLink> Read for Content<'_, C> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.at == self.buf.len() && !self.last {
            match self.from.link.recv()? {
                Some(FromCaller::Content {
                    seq,
                    data,
                    last,
                    changed,
                }) if seq == self.seq => {
                    if data.len() > MAX_CONTENT || data.len() as u64 > self.left {
                        return Err(refused(format!(
                            "entry {seq}: more content than its size, or a part over {MAX_CONTENT} bytes"
                        )));
                    }
                    self.left -= data.len() as u64;
                    (self.buf, self.at, self.last) = (data, 0, last);
                    if last {
                        self.from.draining = None;
                        self.from.changed = changed;
                    }
                }
                Some(FromCaller::Content { seq, .. }) => {
                    return Err(refused(format!(
                        "content of entry {seq} came while entry {} was being read",
                        self.seq
                    )));
                }
                // Entries sent ahead arrive between the parts.
                other => self.from.take(other)?,
            }
        }
        let n = out.len().min(self.buf.len() - self.at);
        out[..n].copy_from_slice(&self.buf[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

/// The caller's side: walks the tree with the caller's rights, sends the
/// entries a window ahead, and reads a file only when the writer wants it.
pub struct Feeder {
    walk: LocalWalk,
    /// Entries sent and not yet taken: their number and absolute path, and
    /// what to read of them.
    pending: VecDeque<(u64, PathBuf, Sent)>,
    next_seq: u64,
    walked: bool,
    end_sent: bool,
    /// Files this process may not read, with the reason: left out.
    skipped: Vec<String>,
}

impl Feeder {
    /// Feeds the entries of `sources` (absolute paths).
    pub fn new(sources: Vec<PathBuf>) -> Feeder {
        Feeder {
            walk: LocalWalk::new(sources),
            pending: VecDeque::new(),
            next_seq: 0,
            walked: false,
            end_sent: false,
            skipped: Vec::new(),
        }
    }

    /// Runs until the writer stops asking: `send` takes each message,
    /// `recv` gives the writer's (`None` when it is done or gone).
    pub fn run(
        mut self,
        mut send: impl FnMut(FromCaller) -> io::Result<()>,
        mut recv: impl FnMut() -> io::Result<Option<ToCaller>>,
    ) -> io::Result<()> {
        loop {
            self.fill(&mut send)?;
            match recv()? {
                None => return Ok(()),
                Some(ToCaller::Taken(upto)) => self.drop_before(upto),
                Some(ToCaller::Want(seq)) => {
                    self.drop_before(seq);
                    let Some((s, path, sent)) = self.pending.pop_front() else {
                        return Err(refused(format!("the writer wants entry {seq}, not sent")));
                    };
                    if s != seq {
                        return Err(refused(format!("the writer wants entry {seq}, not sent")));
                    }
                    Self::send_file(&path, sent, seq, &mut send)?;
                }
            }
        }
    }

    fn drop_before(&mut self, seq: u64) {
        while self.pending.front().is_some_and(|(s, _, _)| *s < seq) {
            self.pending.pop_front();
        }
    }

    /// Sends entries until a window is pending or the walk is done.
    fn fill(&mut self, send: &mut impl FnMut(FromCaller) -> io::Result<()>) -> io::Result<()> {
        let mut batch = Vec::new();
        while !self.walked && self.pending.len() < WINDOW {
            match self.walk.next_entry()? {
                Some(e) => {
                    let path = self.walk.current_path().unwrap_or_default();
                    // A file this user may not read is left out and named,
                    // as the archive does, never sent as an empty file.
                    if matches!(e.kind, EntryKind::File)
                        && let Err(err) = rustix::fs::accessat(
                            rustix::fs::CWD,
                            &path,
                            rustix::fs::Access::READ_OK,
                            rustix::fs::AtFlags::EACCESS,
                        )
                    {
                        let err = io::Error::from(err);
                        self.skipped.push(format!("{}: {err}", path.display()));
                        continue;
                    }
                    let sent = Sent {
                        size: e.size,
                        mtime: e.mtime,
                        holes: e.holes.clone(),
                    };
                    self.pending.push_back((self.next_seq, path, sent));
                    batch.push((self.next_seq, e));
                    self.next_seq += 1;
                    if batch.len() == 64 {
                        send(FromCaller::Entries(std::mem::take(&mut batch)))?;
                    }
                }
                None => self.walked = true,
            }
        }
        if !batch.is_empty() {
            send(FromCaller::Entries(batch))?;
        }
        if self.walked && !self.end_sent {
            self.end_sent = true;
            let mut skipped = std::mem::take(&mut self.skipped);
            skipped.extend(self.walk.take_skipped());
            send(FromCaller::End { skipped })?;
        }
        Ok(())
    }

    fn send_file(
        path: &std::path::Path,
        sent: Sent,
        seq: u64,
        send: &mut impl FnMut(FromCaller) -> io::Result<()>,
    ) -> io::Result<()> {
        // Opened without following a symlink; the data outside the holes
        // sent, up to the size sent. A file that cannot be opened now is
        // sent empty (the writer stores what it got and names it).
        let size = crate::meta::data_len(sent.size, &sent.holes);
        let file = crate::meta::open_for_reading(path);
        let mut reader: Box<dyn Read> = match file {
            Ok(f) => Box::new(crate::meta::DataReader::new(f, sent.size, sent.holes).take(size)),
            Err(_) => Box::new(io::empty()),
        };
        let piece = CONTENT_PIECE.min(size as usize).max(1);
        let mut read = 0u64;
        loop {
            // Each piece is read into a buffer of its own, which the
            // message takes over (no copy).
            let mut buf = vec![0u8; piece];
            let mut n = 0;
            while n < buf.len() {
                match reader.read(&mut buf[n..]) {
                    Ok(0) => break,
                    Ok(k) => n += k,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => break,
                }
            }
            read += n as u64;
            let last = n < buf.len() || read == size;
            let changed = last
                && path.symlink_metadata().map_or(true, |m| {
                    use std::os::unix::fs::MetadataExt;
                    m.len() != sent.size
                        || m.mtime() != sent.mtime.secs
                        || m.mtime_nsec() != i64::from(sent.mtime.nanos)
                });
            buf.truncate(n);
            send(FromCaller::Content {
                seq,
                data: buf.into(),
                last,
                changed,
            })?;
            if last {
                return Ok(());
            }
        }
    }
}

/// What the caller reads of a file the writer asks for: its size, mtime
/// and holes as sent.
#[derive(Debug)]
struct Sent {
    size: u64,
    mtime: crate::repo::Time,
    holes: Vec<bitdust_proto::format::v1::Extent>,
}
