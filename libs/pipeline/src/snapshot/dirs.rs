//! Directory records (issue 19, docs/snapshots.md "Directory records"):
//! each directory's children as the last snapshot stored them, so that an
//! unchanged child's node is taken whole, without a files-cache lookup, an
//! index lookup per chunk, or building and encoding its node again.
//!
//! A record is a chain of segments, one LMDB value each: the snapshot that
//! wrote or last saw it, the layout's version, the index's epoch then,
//! whether another segment follows, and its children in name order, each
//! with its flags, name, status (what `lstat` gave: [`status_of`]), its
//! node as stored, and the packs its chunks are in.

use std::ops::Range;

use bitdust_proto::format::v1 as pb;

use super::{Entry, EntryKind};
use crate::repo::{CachedFile, Time};
use bitdust_crypto::ChunkId;

/// A directory's record is cut into segments after a child whose name's
/// hash is a multiple of this (about this many children each; a new or
/// removed child rewrites its own segment, not the ones after it) ...
pub(super) const SEGMENT_CUT: u64 = 512;
/// ... or once a segment holds this many children ...
pub(super) const SEGMENT_CHILDREN: usize = 4096;
/// ... or this many bytes (a child larger alone is a segment alone).
pub(super) const SEGMENT_BYTES: usize = 1 << 20;
/// The segments being read and built for the open directories (those on
/// the path to the entry being added) together: a directory opened past
/// this keeps no record, and its files go through the files cache.
pub(super) const MAX_OPEN: usize = 16 << 20;

/// The layout of a segment, and of the nodes it keeps: a segment of
/// another version is not read (its directory's children are built
/// again), so a node stored before `Node` gained a field is never given
/// whole.
const VERSION: u8 = 2;

/// The child's content may be trusted next time (not changed while read,
/// not modified within a second of the run's start).
const VOUCHED: u8 = 1;
/// Every pack the child's chunks are in is named.
const RESOLVED: u8 = 2;
/// Its node may be taken whole when its status is the same (every
/// extended attribute was read, and its status is older than the second
/// before the run that stored it).
const WHOLE: u8 = 4;

/// The status of entry `e` as a record keeps it, into `out`: everything its
/// node keeps but its extended attributes (a change to those moves the
/// ctime, which is here) and what reading the file decides, plus its
/// ctime, inode, device and links. The first 48 bytes are a files-cache
/// record's fields ([`cached_of`]).
pub(super) fn status_of(e: &Entry, out: &mut Vec<u8>) {
    out.clear();
    out.extend_from_slice(&e.size.to_le_bytes());
    put_time(out, e.mtime);
    put_time(out, e.ctime);
    out.extend_from_slice(&e.ino.to_le_bytes());
    out.extend_from_slice(&e.dev.to_le_bytes());
    out.extend_from_slice(&e.nlink.to_le_bytes());
    out.extend_from_slice(&e.mode.to_le_bytes());
    match &e.kind {
        EntryKind::File => out.push(0),
        EntryKind::Directory => out.push(1),
        EntryKind::Symlink(t) => {
            out.push(2);
            put_bytes(out, t);
        }
        EntryKind::Fifo => out.push(3),
        EntryKind::Device { block, rdev } => {
            out.push(4 + u8::from(*block));
            out.extend_from_slice(&rdev.to_le_bytes());
        }
    }
    match e.atime {
        Some(t) => {
            out.push(1);
            put_time(out, t);
        }
        None => out.push(0),
    }
    match &e.owner {
        Some(o) => {
            out.push(1);
            out.extend_from_slice(&o.uid.to_le_bytes());
            out.extend_from_slice(&o.gid.to_le_bytes());
            put_bytes(out, o.user.as_bytes());
            put_bytes(out, o.group.as_bytes());
        }
        None => out.push(0),
    }
    out.extend_from_slice(&(e.holes.len() as u32).to_le_bytes());
    for h in &e.holes {
        out.extend_from_slice(&h.offset.to_le_bytes());
        out.extend_from_slice(&h.length.to_le_bytes());
    }
    // Attributes a source sent with the entry (the agent's caller reads
    // them with its own rights, which may change): their hash. A local
    // walk reads them only for a node it builds, and relies on the ctime.
    if !e.xattrs.is_empty() {
        let mut h = blake3::Hasher::new();
        for x in &e.xattrs {
            h.update(&(x.name.len() as u64).to_le_bytes());
            h.update(&x.name);
            h.update(&(x.value.len() as u64).to_le_bytes());
            h.update(&x.value);
        }
        out.extend_from_slice(&h.finalize().as_bytes()[..16]);
    }
}

fn put_time(out: &mut Vec<u8>, t: Time) {
    out.extend_from_slice(&t.secs.to_le_bytes());
    out.extend_from_slice(&t.nanos.to_le_bytes());
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&(b.len() as u32).to_le_bytes());
    out.extend_from_slice(b);
}

/// The files-cache view of a file child: its status's first fields and the
/// chunks of its node (`None` if the record is damaged).
pub(super) fn cached_of(status: &[u8], node: &[u8], vouched: bool) -> Option<CachedFile> {
    let u64_at = |at: usize| -> Option<u64> {
        Some(u64::from_le_bytes(status.get(at..at + 8)?.try_into().ok()?))
    };
    let time_at = |at: usize| -> Option<Time> {
        Some(Time {
            secs: u64_at(at)? as i64,
            nanos: u32::from_le_bytes(status.get(at + 8..at + 12)?.try_into().ok()?),
        })
    };
    let node = <pb::Node as prost::Message>::decode(node).ok()?;
    let mut chunks = Vec::with_capacity(node.chunks.len());
    for c in &node.chunks {
        chunks.push(ChunkId(c.as_slice().try_into().ok()?));
    }
    let mut f = CachedFile {
        size: u64_at(0)?,
        mtime: time_at(8)?,
        ctime: time_at(20)?,
        ino: u64_at(32)?,
        dev: u64_at(40)?,
        seen: 0,
        chunks,
    };
    if !vouched {
        f.not_vouched();
    }
    Some(f)
}

/// One child of a stored record: where its parts are in the record.
#[derive(Clone, Debug)]
pub(super) struct Child {
    flags: u8,
    /// The whole child, to copy into the next record unchanged.
    raw: Range<usize>,
    name: Range<usize>,
    status: Range<usize>,
    node: Range<usize>,
    packs: Range<usize>,
}

/// A stored record, read.
pub(super) struct Record {
    bytes: Vec<u8>,
    /// The snapshot that wrote or last saw it.
    pub(super) seen: u64,
    /// The index's epoch when it was written.
    pub(super) epoch: u64,
    /// Another segment follows.
    pub(super) more: bool,
    children: Vec<Child>,
}

impl Record {
    /// Reads a stored record; `None` if it is damaged (then it is ignored
    /// and written again).
    pub(super) fn decode(bytes: Vec<u8>) -> Option<Record> {
        let mut at = 0usize;
        let take = |at: &mut usize, n: usize| -> Option<Range<usize>> {
            let r = *at..at.checked_add(n)?;
            if r.end > bytes.len() {
                return None;
            }
            *at = r.end;
            Some(r)
        };
        let u32_of = |r: Range<usize>| u32::from_le_bytes(bytes[r].try_into().unwrap_or([0; 4]));
        let u64_of = |r: Range<usize>| u64::from_le_bytes(bytes[r].try_into().unwrap_or([0; 8]));
        let seen = u64_of(take(&mut at, 8)?);
        if bytes[take(&mut at, 1)?.start] != VERSION {
            return None;
        }
        let epoch = u64_of(take(&mut at, 8)?);
        let more = match bytes[take(&mut at, 1)?.start] {
            0 => false,
            1 => true,
            _ => return None,
        };
        let n = u32_of(take(&mut at, 4)?) as usize;
        let mut children = Vec::with_capacity(n.min(SEGMENT_CHILDREN));
        for _ in 0..n {
            let start = at;
            let flags = bytes[take(&mut at, 1)?.start];
            let len = u32_of(take(&mut at, 4)?) as usize;
            let name = take(&mut at, len)?;
            let len = u32_of(take(&mut at, 4)?) as usize;
            let status = take(&mut at, len)?;
            let len = u32_of(take(&mut at, 4)?) as usize;
            let node = take(&mut at, len)?;
            let len = u32_of(take(&mut at, 4)?) as usize;
            let packs = take(&mut at, len.checked_mul(8)?)?;
            children.push(Child {
                flags,
                raw: start..at,
                name,
                status,
                node,
                packs,
            });
        }
        if at != bytes.len() {
            return None;
        }
        Some(Record {
            bytes,
            seen,
            epoch,
            more,
            children,
        })
    }

    /// How many bytes it holds.
    pub(super) fn len(&self) -> usize {
        self.bytes.len()
    }

    pub(super) fn children(&self) -> usize {
        self.children.len()
    }

    pub(super) fn name(&self, i: usize) -> &[u8] {
        &self.bytes[self.children[i].name.clone()]
    }

    pub(super) fn status(&self, i: usize) -> &[u8] {
        &self.bytes[self.children[i].status.clone()]
    }

    pub(super) fn node(&self, i: usize) -> &[u8] {
        &self.bytes[self.children[i].node.clone()]
    }

    pub(super) fn raw(&self, i: usize) -> &[u8] {
        &self.bytes[self.children[i].raw.clone()]
    }

    pub(super) fn vouched(&self, i: usize) -> bool {
        self.children[i].flags & VOUCHED != 0
    }

    pub(super) fn resolved(&self, i: usize) -> bool {
        self.children[i].flags & RESOLVED != 0
    }

    pub(super) fn whole(&self, i: usize) -> bool {
        self.children[i].flags & WHOLE != 0
    }

    /// The packs child `i`'s chunks are in.
    pub(super) fn packs(&self, i: usize) -> impl Iterator<Item = u64> + '_ {
        self.bytes[self.children[i].packs.clone()]
            .chunks_exact(8)
            .map(|b| u64::from_le_bytes(b.try_into().unwrap_or([0; 8])))
    }
}

/// A child of a segment being built.
pub(super) enum NewChild {
    /// A stored child, unchanged: its bytes in [`OpenDir::kept`].
    Kept(Range<usize>),
    /// A child whose node was built this run.
    Fresh {
        name: Vec<u8>,
        status: Vec<u8>,
        node: Vec<u8>,
        vouched: bool,
        whole: bool,
        /// Its chunks, whose packs are found when the segment is written.
        chunks: Vec<ChunkId>,
    },
}

/// A directory whose children are being added.
pub(super) struct OpenDir {
    /// Its path (snapshot form).
    pub(super) path: Vec<u8>,
    /// The stored segment being matched, and its number.
    pub(super) old: Option<Record>,
    pub(super) old_segment: u32,
    /// The next stored child of `old` not yet matched.
    pub(super) cursor: usize,
    /// Of each stored segment read: when it was written or last seen, its
    /// children, and whether another followed.
    pub(super) old_segments: Vec<(u64, usize, bool)>,
    /// The number of the segment being built, its children, and the
    /// bytes of its kept children.
    pub(super) segment: u32,
    pub(super) new: Vec<NewChild>,
    pub(super) kept: Vec<u8>,
    /// The bytes of `new`, about.
    pub(super) new_len: usize,
    /// The new segment so far is stored segment `.0`'s first `.1`
    /// children, in order (else `None`).
    pub(super) same_as: Option<(u32, usize)>,
    /// It keeps no record this run (too much open): its files go through
    /// the files cache.
    pub(super) over: bool,
}

impl OpenDir {
    pub(super) fn new(path: Vec<u8>, old: Option<Record>, over: bool) -> OpenDir {
        let old_segments = old.iter().map(|r| (r.seen, r.children(), r.more)).collect();
        OpenDir {
            path,
            old,
            old_segment: 0,
            cursor: 0,
            old_segments,
            segment: 0,
            new: Vec::new(),
            kept: Vec::new(),
            new_len: 0,
            same_as: Some((0, 0)),
            over,
        }
    }

    /// The stored child named `name` in the segment read, if any (children
    /// come in name order, so the search only moves forward). `Err` when
    /// the segment is passed and another follows: read it and ask again.
    pub(super) fn find(&mut self, name: &[u8]) -> Result<Option<usize>, u32> {
        let Some(old) = self.old.as_ref() else {
            return Ok(None);
        };
        while self.cursor < old.children() {
            let i = self.cursor;
            match old.name(i).cmp(name) {
                std::cmp::Ordering::Less => self.cursor += 1,
                std::cmp::Ordering::Equal => {
                    self.cursor += 1;
                    return Ok(Some(i));
                }
                std::cmp::Ordering::Greater => return Ok(None),
            }
        }
        if old.more {
            Err(self.old_segment + 1)
        } else {
            Ok(None)
        }
    }

    /// Reads on with stored segment `number` (`None`: missing or damaged).
    pub(super) fn next_segment(&mut self, number: u32, record: Option<Record>) {
        if let Some(r) = &record {
            self.old_segments.push((r.seen, r.children(), r.more));
        }
        self.old = record;
        self.old_segment = number;
        self.cursor = 0;
    }

    /// The bytes it holds in memory.
    pub(super) fn held(&self) -> usize {
        let old = self
            .old
            .as_ref()
            .map_or(0, |r| r.len() + r.children() * std::mem::size_of::<Child>());
        old + self.new_len + self.new.len() * std::mem::size_of::<NewChild>()
    }

    /// Adds child `i` of the stored segment read, unchanged.
    pub(super) fn keep(&mut self, i: usize) {
        let Some(old) = &self.old else {
            return;
        };
        let raw = old.raw(i);
        let at = self.kept.len();
        self.kept.extend_from_slice(raw);
        self.new_len += raw.len();
        self.same_as = match self.same_as {
            Some((seg, n)) if seg == self.old_segment && n == i => Some((seg, n + 1)),
            Some((_, 0)) if i == 0 => Some((self.old_segment, 1)),
            _ => None,
        };
        self.new.push(NewChild::Kept(at..self.kept.len()));
    }

    /// Adds a child built this run.
    pub(super) fn add_fresh(&mut self, child: NewChild) {
        if let NewChild::Fresh {
            name,
            status,
            node,
            chunks,
            ..
        } = &child
        {
            self.new_len += 17 + name.len() + status.len() + node.len() + 8 * chunks.len();
        }
        self.same_as = None;
        self.new.push(child);
    }

    /// Whether the segment being built ends after child `name`.
    pub(super) fn cut_after(&self, name: &[u8]) -> bool {
        self.new.len() >= SEGMENT_CHILDREN
            || self.new_len >= SEGMENT_BYTES
            || name_hash(name).is_multiple_of(SEGMENT_CUT)
    }

    /// Whether the segment built, ending here (`more`: another follows),
    /// is the stored one of its number, child for child; then its stamp.
    pub(super) fn unchanged(&self, more: bool) -> Option<u64> {
        let (seg, n) = self.same_as?;
        let (seen, children, was_more) = *self.old_segments.get(seg as usize)?;
        (seg == self.segment && n == children && n == self.new.len() && was_more == more)
            .then_some(seen)
    }

    /// Starts the next segment.
    pub(super) fn next_new_segment(&mut self) {
        self.segment += 1;
        self.new.clear();
        self.kept.clear();
        self.new_len = 0;
        self.same_as = Some((self.segment, 0));
    }
}

fn name_hash(name: &[u8]) -> u64 {
    name.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Appends one fresh child to a record being encoded.
pub(super) fn encode_fresh(
    out: &mut Vec<u8>,
    name: &[u8],
    status: &[u8],
    node: &[u8],
    (vouched, whole): (bool, bool),
    packs: Option<&[u64]>,
) {
    let mut flags = 0;
    if vouched {
        flags |= VOUCHED;
    }
    if whole {
        flags |= WHOLE;
    }
    if packs.is_some() {
        flags |= RESOLVED;
    }
    out.push(flags);
    put_bytes(out, name);
    put_bytes(out, status);
    put_bytes(out, node);
    let packs = packs.unwrap_or_default();
    out.extend_from_slice(&(packs.len() as u32).to_le_bytes());
    for p in packs {
        out.extend_from_slice(&p.to_le_bytes());
    }
}

/// The start of a segment: the snapshot writing it, the layout's version, the epoch, whether
/// another follows, and the number of children.
pub(super) fn encode_head(out: &mut Vec<u8>, seen: u64, epoch: u64, more: bool, children: usize) {
    out.extend_from_slice(&seen.to_le_bytes());
    out.push(VERSION);
    out.extend_from_slice(&epoch.to_le_bytes());
    out.push(u8::from(more));
    out.extend_from_slice(&(children as u32).to_le_bytes());
}

/// Whether segment `segment` of a record, seen unchanged by snapshot
/// `snapshot`, must be written again to move its stamp: in its turn (one
/// segment in [`crate::repo::SEEN_REFRESH`] each snapshot, by path and
/// number), or when its stamp is that old already, so the sweep never
/// drops a segment a snapshot saw.
pub(super) fn stamp_due(path: &[u8], segment: u32, seen: u64, snapshot: u64) -> bool {
    let turn = name_hash(path).wrapping_add(u64::from(segment));
    snapshot
        .wrapping_add(turn)
        .is_multiple_of(crate::repo::SEEN_REFRESH)
        || snapshot.saturating_sub(seen) >= crate::repo::SEEN_REFRESH
}

/// `path`'s parent and name (snapshot form: no leading `/`; a top-level
/// name's parent is empty).
pub(super) fn split(path: &[u8]) -> (&[u8], &[u8]) {
    match path.iter().rposition(|b| *b == b'/') {
        Some(i) => (&path[..i], &path[i + 1..]),
        None => (&[], path),
    }
}

/// Whether directory `inner` is `outer` or inside it.
pub(super) fn within(inner: &[u8], outer: &[u8]) -> bool {
    outer.is_empty()
        || inner == outer
        || (inner.len() > outer.len() && inner.starts_with(outer) && inner[outer.len()] == b'/')
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_record_reads_back_what_was_written_and_refuses_a_cut_one() {
        let mut v = Vec::new();
        encode_head(&mut v, 7, 3, true, 2);
        encode_fresh(&mut v, b"a", b"sa", b"na", (true, true), Some(&[1, 2]));
        encode_fresh(&mut v, b"b", b"sb", b"nb", (false, false), None);
        let r = Record::decode(v.clone()).unwrap();
        assert_eq!((r.seen, r.epoch, r.more, r.children()), (7, 3, true, 2));
        assert_eq!(
            (r.name(0), r.status(0), r.node(0)),
            (&b"a"[..], &b"sa"[..], &b"na"[..])
        );
        assert!(r.vouched(0) && r.whole(0) && r.resolved(0));
        assert_eq!(r.packs(0).collect::<Vec<_>>(), vec![1, 2]);
        assert!(!r.vouched(1) && !r.whole(1) && !r.resolved(1));
        assert_eq!(r.packs(1).count(), 0);
        let mut again = Vec::new();
        encode_head(&mut again, 7, 3, true, 2);
        again.extend_from_slice(r.raw(0));
        again.extend_from_slice(r.raw(1));
        assert_eq!(again, v);
        for cut in 0..v.len() {
            assert!(Record::decode(v[..cut].to_vec()).is_none(), "cut at {cut}");
        }
        let mut longer = v.clone();
        longer.push(0);
        assert!(Record::decode(longer).is_none());
        let mut other = v.clone();
        other[8] = VERSION + 1;
        assert!(Record::decode(other).is_none());
    }

    #[test]
    fn paths_split_into_parent_and_name() {
        assert_eq!(split(b"a/b/c"), (&b"a/b"[..], &b"c"[..]));
        assert_eq!(split(b"a"), (&b""[..], &b"a"[..]));
        assert!(within(b"a/b", b"a") && within(b"a", b"a") && within(b"a", b""));
        assert!(!within(b"ab", b"a") && !within(b"a", b"a/b"));
    }
}
