//! A restore's packs fetched and opened on threads of their own, in the
//! order the restore will read them.
//!
//! The restore walks the snapshot's entries a little ahead of what it
//! writes ([`Planner`]): it looks up each file's chunks in the index and
//! replays, on the pack numbers alone, what the [`PackReader`]'s cache of
//! opened packs will do when the chunks are read. Every pack the cache
//! will miss is asked for then, in that order. A fetching thread owns the
//! fragment source and collects each asked pack's fragments (asking the
//! source for the next asked packs' fragments meanwhile); opening threads
//! (as many as `workers`, at most [`MOST_OPENERS`]) decode and decrypt
//! them. The restore's own thread sends the larger chunks ahead to
//! decompressing threads (`workers`, at most [`MOST_DECOMPRESSORS`]; see
//! [`Planner::send_ahead`]), decompresses the small ones, checks and
//! hands on chunks in order, and waits only when one is not ready yet.
//!
//! Memory: the packs asked for and not yet read are at most [`AHEAD`], and
//! their bodies (as the index records them) at most [`AHEAD_BYTES`]
//! together; that bounds the fragments a source fetches ahead. Of those,
//! one pack is collected, one per opening thread opened and [`OPENED`]
//! wait opened for the restoring thread, so a restore slower to write than
//! to fetch does not hold more. The planned entries are bounded by
//! [`AHEAD_STEPS`], the chunks sent ahead by [`SENT_PER_WORKER`] and
//! [`SENT_BYTES_PER_WORKER`] per decompressing thread.

use std::collections::{HashMap, VecDeque};
use std::sync::mpsc;

use bitdust_block::root::Root;
use bitdust_block::{BackupId, BlockOpener};
use bitdust_crypto::{BackupKey, ChunkId, DedupKeys};
use bitdust_ecc::Code;
use bitdust_proto::format::v1 as pb;

use super::{
    Bytes, Content, NodeSink, NodeStream, PACK_CACHE, PackReader, SnapshotError, chunk_id_of,
    collect_pack, open_fetched,
};
use crate::FragmentSource;
use crate::repo::{ChunkLoc, Repo};
use crate::stages::{Clocks, RestoreClocks};
use std::sync::Arc;

/// Packs asked for and not yet read, at most. Their fragments are fetched
/// while earlier packs are opened and read: over the devnet, restoring 300
/// MB in packs of about a MiB, the fetching thread spent 1.7-2.0 s
/// collecting fragments with 6 packs in flight, 1.0-1.2 s with 12 and
/// 0.6-0.9 s with 24.
const AHEAD: usize = 32;

/// Opened packs handed over and not yet taken, at most (besides one
/// being opened and one collected).
const OPENED: usize = 2;

/// Body bytes of the packs asked for and not yet read, at most.
const AHEAD_BYTES: u64 = 32 << 20;

/// The body size assumed for a pack the index does not know: the most a
/// pack grows to.
const UNKNOWN_PACK: u64 = 4 << 20;

/// Planned entries and chunks not yet written, at most (a pack of small
/// files holds thousands of them).
const AHEAD_STEPS: usize = 8192;

/// A pack as the loading threads hand it over.
pub(super) struct Loaded {
    pub(super) pack: u64,
    pub(super) data: Result<Vec<u8>, SnapshotError>,
    /// Fragment bytes read for it.
    pub(super) bytes: u64,
}

/// The restore's end of the loading threads.
pub(super) struct Loader {
    want: mpsc::Sender<u64>,
    done: mpsc::Receiver<Loaded>,
    /// Asked for and not yet handed over, in the order asked, with their
    /// body sizes.
    asked: VecDeque<(u64, u64)>,
    /// Handed over and not yet taken, with their body sizes.
    ready: HashMap<u64, (Loaded, u64)>,
    /// Body bytes asked for and not yet taken.
    bytes: u64,
    clocks: Arc<RestoreClocks>,
}

impl Loader {
    /// Whether as much is asked for as may be.
    fn full(&self) -> bool {
        self.asked.len() + self.ready.len() >= AHEAD || self.bytes >= AHEAD_BYTES
    }

    /// Asks for pack `pack`, of `bytes` body bytes, after those asked before.
    fn ask(&mut self, pack: u64, bytes: u64) {
        // A send fails only when the threads stopped; `take` says so.
        let _ = self.want.send(pack);
        self.asked.push_back((pack, bytes));
        self.bytes += bytes;
    }

    /// Whether pack `pack` is handed over (taking the next the threads
    /// handed over, without waiting, when none is held: it is the one
    /// asked for first, so the opened packs held stay as many as before).
    pub(super) fn ready(&mut self, pack: u64) -> bool {
        if self.ready.is_empty()
            && let Ok(l) = self.done.try_recv()
        {
            let bytes = self.arrived(&l);
            self.hold(l, bytes);
        }
        self.ready.contains_key(&pack)
    }

    /// Pack `l` arrived: no longer asked for; its body bytes.
    fn arrived(&mut self, l: &Loaded) -> u64 {
        match self.asked.iter().position(|(p, _)| *p == l.pack) {
            Some(i) => self.asked.remove(i).map_or(0, |(_, b)| b),
            None => 0,
        }
    }

    /// Holds pack `l` (of `bytes` body bytes) until taken; a pack asked
    /// twice (a plan gone astray) is held once.
    fn hold(&mut self, l: Loaded, bytes: u64) {
        if let Some((_, old)) = self.ready.insert(l.pack, (l, bytes)) {
            self.bytes -= old;
        }
    }

    /// Pack `pack`: the one handed over, or asked for now and waited for.
    pub(super) fn take(&mut self, pack: u64) -> Loaded {
        if let Some((l, bytes)) = self.ready.remove(&pack) {
            self.bytes -= bytes;
            return l;
        }
        if !self.asked.iter().any(|(p, _)| *p == pack) {
            self.ask(pack, 0);
        }
        loop {
            let Ok(l) = Clocks::time(&self.clocks.wait, || self.done.recv()) else {
                return Loaded {
                    pack,
                    data: Err(SnapshotError::Format(
                        "the threads loading packs stopped".into(),
                    )),
                    bytes: 0,
                };
            };
            let bytes = self.arrived(&l);
            if l.pack == pack {
                self.bytes -= bytes;
                return l;
            }
            self.hold(l, bytes);
        }
    }
}

/// Runs `f` with `packs` reading through a fetching and opening threads;
/// `repo`'s pack records name the headers to expect.
pub(super) fn with_loader<T>(
    packs: &mut PackReader<'_>,
    repo: &Repo,
    f: impl FnOnce(&mut PackReader<'_>) -> Result<T, SnapshotError>,
) -> Result<T, SnapshotError> {
    let Some(source) = packs.source.take() else {
        return Err(SnapshotError::Format(
            "the pack reader has lost its fragment source".into(),
        ));
    };
    let root: &Root = packs.root;
    let code = packs.code.clone();
    let customer = packs.identity_node();
    let (keys, key) = (packs.keys.clone(), packs.key.clone());
    let clocks = packs.clocks.clone();
    let fetch_clocks = clocks.clone();
    let openers = opener_count(crate::stages::worker_count(packs.workers));
    std::thread::scope(|s| {
        let (want_tx, want_rx) = mpsc::channel();
        let (open_tx, open_rx) = crossbeam_channel::bounded(1);
        // Opened packs wait for the restoring thread two at most: asking
        // ahead is for the fetches, which a slow writer need not pile up.
        let (done_tx, done_rx) = mpsc::sync_channel(OPENED);
        let fetcher = std::thread::Builder::new()
            .name("restore-fetch".into())
            .spawn_scoped(s, move || {
                fetch_loop(
                    &mut *source,
                    repo,
                    root,
                    &code,
                    customer,
                    want_rx,
                    open_tx,
                    &fetch_clocks,
                );
                source
            })
            .map_err(|e| SnapshotError::Format(format!("starting a restore thread: {e}")))?;
        let turns = Arc::new(Turns::default());
        for _ in 0..openers {
            let (fetched, done, keys, key) = (open_rx.clone(), done_tx.clone(), &keys, &key);
            let (turns, clocks) = (turns.clone(), clocks.clone());
            std::thread::Builder::new()
                .name("restore-open".into())
                .spawn_scoped(s, move || {
                    open_loop(
                        fetched,
                        &turns,
                        done,
                        customer,
                        root.backup_id,
                        keys,
                        key,
                        &clocks,
                    )
                })
                .map_err(|e| SnapshotError::Format(format!("starting a restore thread: {e}")))?;
        }
        // Only the opening threads hold these: when they stop, the fetching
        // thread's sends fail and it stops too.
        drop((open_rx, done_tx));
        packs.loader = Some(Loader {
            want: want_tx,
            done: done_rx,
            asked: VecDeque::new(),
            ready: HashMap::new(),
            bytes: 0,
            clocks,
        });
        let r = f(packs);
        // Dropping the loader's channels ends the threads.
        packs.loader = None;
        match fetcher.join() {
            Ok(source) => packs.source = Some(source),
            Err(_) => {
                return Err(SnapshotError::Format(
                    "the thread fetching packs panicked".into(),
                ));
            }
        }
        r
    })
}

/// A pack's fragments, collected, with the pack's number in the order
/// collected and the fragment bytes read.
type Fetched = (u64, u64, Result<BlockOpener, SnapshotError>, u64);

/// Collects the fragments of each asked pack in turn, asking the source
/// for those of the packs asked after it meanwhile. A pack's fragments
/// count only under the header `repo` records for it, when it records one.
#[allow(clippy::too_many_arguments)]
fn fetch_loop(
    source: &mut dyn FragmentSource,
    repo: &Repo,
    root: &Root,
    code: &Code,
    customer: bitdust_crypto::NodeId,
    want: mpsc::Receiver<u64>,
    out: crossbeam_channel::Sender<Fetched>,
    clocks: &RestoreClocks,
) {
    let mut queue = VecDeque::new();
    for number in 0u64.. {
        if queue.is_empty() {
            match want.recv() {
                Ok(p) => queue.push_back(p),
                Err(_) => return,
            }
        }
        queue.extend(want.try_iter());
        let Some(pack) = queue.pop_front() else {
            continue;
        };
        let next: Vec<u64> = queue.iter().copied().collect();
        let r = Clocks::time(&clocks.fetch, || {
            super::pack_header(Some(repo), root.backup_id, pack).and_then(|header| {
                collect_pack(source, root, code, customer, pack, header, false, next)
            })
        });
        let bytes = match &r {
            Ok(opener) => opener.header().map_or(0, |h| {
                opener.present().iter().filter(|p| **p).count() as u64 * h.fragment_len
            }),
            Err(_) => 0,
        };
        if out.send((number, pack, r, bytes)).is_err() {
            return;
        }
    }
}

/// Threads opening packs for `workers`: as many, at most
/// [`MOST_OPENERS`] (each holds a pack's fragments and its opened data,
/// about 12 MiB for 4 MiB packs). On two cores, two opening threads
/// restored the bench tree in 0.91x the time of one (docs/performance.md,
/// session 29).
fn opener_count(workers: usize) -> usize {
    workers.clamp(1, MOST_OPENERS)
}

/// Threads opening packs, at most.
const MOST_OPENERS: usize = 4;

/// Threads decompressing chunks, at most (each adds 2 chunks sent ahead
/// and a spare buffer).
const MOST_DECOMPRESSORS: usize = 8;

/// Whose turn it is, among the opening threads, to hand over a pack: the
/// number, in the order collected, of the next pack to go.
#[derive(Default)]
struct Turns {
    next: std::sync::Mutex<u64>,
    turned: std::sync::Condvar,
}

/// Opens (decodes, decrypts) each collected pack and hands it over, in
/// the order the packs were collected whatever the number of such
/// threads: so at most one pack per thread is opened and [`OPENED`] wait
/// opened. A panic while opening (on a supplier's bytes) is that pack's
/// error.
#[allow(clippy::too_many_arguments)]
fn open_loop(
    fetched: crossbeam_channel::Receiver<Fetched>,
    turns: &Turns,
    done: mpsc::SyncSender<Loaded>,
    customer: bitdust_crypto::NodeId,
    backup: BackupId,
    keys: &DedupKeys,
    key: &BackupKey,
    clocks: &RestoreClocks,
) {
    for (number, pack, r, bytes) in fetched {
        let data = Clocks::time(&clocks.open, || {
            unpanicked(
                || format!("opening pack {pack}"),
                || {
                    r.and_then(|opener| {
                        open_fetched(opener, customer, backup, pack, keys, key)
                            .map(|(_, data)| data)
                    })
                },
            )
        });
        let Ok(mut next) = turns.next.lock() else {
            return;
        };
        while *next != number {
            next = match turns.turned.wait(next) {
                Ok(t) => t,
                Err(_) => return,
            };
        }
        let sent = done.send(Loaded { pack, data, bytes }).is_ok();
        *next += 1;
        drop(next);
        turns.turned.notify_all();
        if !sent {
            return;
        }
    }
}

/// `f`'s result, or, should it panic, an error saying that `what` failed
/// unexpectedly (the restore ends with it rather than hang).
fn unpanicked<T>(
    what: impl FnOnce() -> String,
    f: impl FnOnce() -> Result<T, SnapshotError>,
) -> Result<T, SnapshotError> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or_else(|_| {
        Err(SnapshotError::Format(format!(
            "{} failed unexpectedly (a panic)",
            what()
        )))
    })
}

/// One step of a planned restore: an entry (its chunk ids left out), or
/// the next chunk of the last file entry.
// One entry at a time moves through here; boxing its node would add an
// allocation per entry and save nothing.
#[allow(clippy::large_enum_variant)]
enum Step {
    Node(pb::Node, usize),
    Chunk(ChunkId, ChunkLoc),
    /// A chunk sent ahead (see [`Planner::send_ahead`]), and its plain
    /// length.
    Sent(Sent, u64),
}

/// A chunk sent ahead: decompressed already, or coming from a
/// decompressing thread.
enum Sent {
    Done(Result<Bytes, SnapshotError>),
    Coming(mpsc::Receiver<Result<Bytes, SnapshotError>>),
}

/// Chunks of less plain bytes than this are decompressed on the restoring
/// thread as they are sent ahead: handing one over costs about what it
/// does.
const SMALL_CHUNK: u64 = 64 << 10;

/// Chunks sent ahead and not yet taken, at most, per decompressing thread.
const SENT_PER_WORKER: usize = 2;

/// Their plain bytes, at most, per decompressing thread (a larger chunk
/// is sent alone).
const SENT_BYTES_PER_WORKER: u64 = 2 << 20;

/// A chunk for a decompressing thread: the opened pack it lies in, and
/// where its content goes.
struct Job {
    data: Arc<Vec<u8>>,
    id: ChunkId,
    loc: ChunkLoc,
    out: mpsc::SyncSender<Result<Bytes, SnapshotError>>,
}

/// The restoring thread's end of the decompressing threads.
struct Pool {
    jobs: crossbeam_channel::Sender<Job>,
    /// Chunks sent ahead and not yet taken, and their plain bytes.
    held: usize,
    bytes: u64,
    most: usize,
    most_bytes: u64,
}

/// Decompresses and checks the chunks `jobs` hands over, until the
/// restoring thread drops its end.
fn decompress_loop(
    jobs: crossbeam_channel::Receiver<Job>,
    keys: &DedupKeys,
    spare: &super::Spare,
    clocks: &RestoreClocks,
) {
    let mut zstd = match zstd::bulk::Decompressor::new() {
        Ok(z) => z,
        Err(e) => {
            // Each job this thread takes fails with the reason (another
            // thread's may still succeed).
            let why = format!("cannot start a zstd decompressor: {e}");
            for job in jobs {
                let _ = job.out.send(Err(SnapshotError::Format(why.clone())));
            }
            return;
        }
    };
    for job in jobs {
        let r = Clocks::time(&clocks.pool, || {
            unpanicked(
                || format!("decompressing chunk {}", job.id),
                || {
                    let mut buf = spare.take();
                    buf.clear();
                    buf.reserve_exact(job.loc.plain_len as usize);
                    super::check_chunk(keys, &mut zstd, &job.data, &job.id, &job.loc, &mut buf)?;
                    Ok(Bytes::from_owner(super::Pooled {
                        buf,
                        spare: spare.clone(),
                    }))
                },
            )
        });
        drop(job.data);
        // Its receiver is gone when the restore failed or skipped it.
        let _ = job.out.send(r);
    }
}

/// Walks a snapshot's entries ahead of the restore and asks for the packs
/// their chunks will need.
struct Planner<'r, 'i> {
    repo: &'r Repo,
    backup: BackupId,
    nodes: NodeStream,
    include: &'i [Vec<u8>],
    steps: VecDeque<Step>,
    /// The file entry being planned: its chunk ids and how many are planned.
    file: Option<(Vec<Vec<u8>>, usize)>,
    /// The pack cache as it will be when the planned chunks are read.
    cache: VecDeque<u64>,
    /// Hard links whose first name the restore leaves out: that name, and
    /// the name restored in its place (the first one wanted).
    relinked: std::collections::HashMap<Vec<u8>, Vec<u8>>,
    ended: bool,
    /// The decompressing threads, when there are any.
    pool: Option<Pool>,
    /// Steps at the front of `steps` already looked at for sending ahead.
    looked: usize,
}

impl Planner<'_, '_> {
    fn wanted(&self, path: &[u8]) -> bool {
        self.include.is_empty()
            || self.include.iter().any(|i| {
                path == i.as_slice() || (path.starts_with(i) && path.get(i.len()) == Some(&b'/'))
            })
    }

    /// Plans until enough packs are asked for or enough steps are waiting.
    fn plan(&mut self, packs: &mut PackReader<'_>) -> Result<(), SnapshotError> {
        loop {
            let full = packs.loader.as_ref().is_some_and(Loader::full);
            // At least one step is always planned while entries are left,
            // however many packs a plan gone astray left asked.
            let enough = full || self.steps.len() >= AHEAD_STEPS;
            if self.ended || (enough && !self.steps.is_empty()) {
                return Ok(());
            }
            if let Some((ids, at)) = &mut self.file {
                if let Some(raw) = ids.get(*at) {
                    *at += 1;
                    let id = chunk_id_of(raw)?;
                    let loc = {
                        let txn = self.repo.read()?;
                        self.repo.chunk(&txn, self.backup, &id)?
                    }
                    .ok_or_else(|| {
                        SnapshotError::Format(format!("chunk {id} is not in the index"))
                    })?;
                    self.touch(packs, loc.pack)?;
                    self.steps.push_back(Step::Chunk(id, loc));
                    continue;
                }
                self.file = None;
            }
            match self.nodes.next(packs)? {
                None => self.ended = true,
                Some(node) => self.push_node(node),
            }
        }
    }

    /// Plans entry `node` when it is wanted; its chunks are planned next.
    fn push_node(&mut self, mut node: pb::Node) {
        if !self.wanted(&node.path) {
            return;
        }
        let mut chunks = std::mem::take(&mut node.chunks);
        if !node.link.is_empty() {
            if self.wanted(&node.link) {
                // A link to a name restored before it.
                chunks.clear();
            } else if let Some(instead) = self.relinked.get(&node.link) {
                node.link = instead.clone();
                chunks.clear();
            } else {
                // The first name is left out: this one is restored with
                // the content, and later names link to it.
                let first = std::mem::take(&mut node.link);
                self.relinked.insert(first, node.path.clone());
            }
        }
        let n = if node.kind == pb::NodeKind::File as i32 && node.link.is_empty() {
            let n = chunks.len();
            self.file = Some((chunks, 0));
            n
        } else {
            0
        };
        self.steps.push_back(Step::Node(node, n));
    }

    /// Replays a read of pack `pack` on the cache as it will be, asking for
    /// the pack when that read will miss.
    fn touch(&mut self, packs: &mut PackReader<'_>, pack: u64) -> Result<(), SnapshotError> {
        if let Some(i) = self.cache.iter().position(|p| *p == pack) {
            self.cache.remove(i);
        } else {
            if self.cache.len() >= PACK_CACHE {
                self.cache.pop_front();
            }
            if let Some(l) = packs.loader.as_mut() {
                let bytes = self
                    .repo
                    .pack(self.backup, pack)?
                    .map_or(UNKNOWN_PACK, |r| r.body_len);
                l.ask(pack, bytes);
            }
        }
        self.cache.push_back(pack);
        Ok(())
    }

    /// The next step, planning further first when few are waiting.
    fn next(&mut self, packs: &mut PackReader<'_>) -> Result<Option<Step>, SnapshotError> {
        if self.steps.len() < AHEAD_STEPS / 2 {
            self.plan(packs)?;
        }
        let step = self.steps.pop_front();
        self.looked = self.looked.saturating_sub(1);
        if let (Some(Step::Sent(_, n)), Some(pool)) = (&step, self.pool.as_mut()) {
            pool.held -= 1;
            pool.bytes -= n;
        }
        Ok(step)
    }

    /// Sends the planned chunks ahead, in order, while the decompressing
    /// threads hold less than their share: each chunk's pack is loaded
    /// (the cache replays the plan as before), and the chunk handed to a
    /// thread, or decompressed here when it is small. A pack not at hand
    /// yet is waited for only when nothing is sent ahead, so that the
    /// restoring thread writes what is ready meanwhile.
    fn send_ahead(&mut self, packs: &mut PackReader<'_>) -> Result<(), SnapshotError> {
        let Some(pool) = self.pool.as_mut() else {
            return Ok(());
        };
        while let Some(step) = self.steps.get_mut(self.looked) {
            let Step::Chunk(_, loc) = step else {
                self.looked += 1;
                continue;
            };
            let plain = u64::from(loc.plain_len);
            if pool.held > 0
                && (pool.held >= pool.most
                    || pool.bytes + plain > pool.most_bytes
                    || !packs.at_hand(loc.pack))
            {
                break;
            }
            let Step::Chunk(id, loc) =
                std::mem::replace(step, Step::Sent(Sent::Done(Ok(Bytes::new())), plain))
            else {
                unreachable!("matched as a chunk above");
            };
            // An error is this chunk's, told when its file is read.
            let sent = if plain < SMALL_CHUNK {
                Sent::Done(packs.chunk_bytes(&id, &loc))
            } else {
                match packs.pack_data(loc.pack) {
                    Err(e) => Sent::Done(Err(e)),
                    Ok(data) => {
                        let (out, rx) = mpsc::sync_channel(1);
                        match pool.jobs.send(Job { data, id, loc, out }) {
                            Ok(()) => Sent::Coming(rx),
                            Err(_) => Sent::Done(Err(SnapshotError::Format(
                                "the threads decompressing chunks stopped".into(),
                            ))),
                        }
                    }
                }
            };
            self.steps[self.looked] = Step::Sent(sent, plain);
            pool.held += 1;
            pool.bytes += plain;
            self.looked += 1;
        }
        Ok(())
    }
}

/// Sends the entries of the snapshot `packs` reads whose path is one of
/// `include` or under it (all when empty) to `out`, with the files'
/// content, reading packs ahead on threads (see the module's notes).
pub(super) fn restore_planned(
    repo: &Repo,
    packs: &mut PackReader<'_>,
    include: &[Vec<u8>],
    out: &mut dyn NodeSink,
) -> Result<(), SnapshotError> {
    let began = std::time::Instant::now();
    let clocks = packs.clocks.clone();
    let nodes = NodeStream::new(packs.meta_chunks()?);
    let backup = packs.root.backup_id;
    let workers = crate::stages::worker_count(packs.workers).min(MOST_DECOMPRESSORS);
    let r = with_loader(packs, repo, |packs| {
        std::thread::scope(|s| {
            let pool = if workers > 1 {
                let most = SENT_PER_WORKER * workers;
                let (jobs, rx) = crossbeam_channel::bounded(most);
                packs.spare = packs.spare.keeping_more(workers);
                for _ in 0..workers {
                    let (rx, keys, spare) = (rx.clone(), packs.keys.clone(), packs.spare.clone());
                    let clocks = clocks.clone();
                    std::thread::Builder::new()
                        .name("restore-unzstd".into())
                        .spawn_scoped(s, move || decompress_loop(rx, &keys, &spare, &clocks))
                        .map_err(|e| {
                            SnapshotError::Format(format!("starting a restore thread: {e}"))
                        })?;
                }
                // Only the threads hold the jobs' end: should they all
                // stop, the jobs waiting are dropped and their chunks
                // fail ("stopped") rather than wait.
                drop(rx);
                Some(Pool {
                    jobs,
                    held: 0,
                    bytes: 0,
                    most,
                    most_bytes: SENT_BYTES_PER_WORKER * workers as u64,
                })
            } else {
                None
            };
            // Dropping the plan (its end of the jobs) ends the threads.
            let mut plan = Planner {
                repo,
                backup,
                nodes,
                include,
                steps: VecDeque::new(),
                file: None,
                cache: VecDeque::new(),
                relinked: Default::default(),
                ended: false,
                pool,
                looked: 0,
            };
            while let Some(step) = plan.next(packs)? {
                let Step::Node(node, chunks) = step else {
                    return Err(SnapshotError::Format(
                        "a chunk was planned where an entry was due".into(),
                    ));
                };
                let mut content = PlannedChunks {
                    plan: &mut plan,
                    packs: &mut *packs,
                    left: chunks,
                    current: Bytes::new(),
                    clocks: &clocks,
                };
                Clocks::time(&clocks.nodes, || out.node(&node, &mut content))?;
                // Chunks a sink did not read (an entry it skipped) still
                // pass through the cache, as the plan has them.
                content.skip_rest()?;
            }
            Ok(())
        })
    });
    clocks.wall.fetch_add(
        began.elapsed().as_nanos() as u64,
        std::sync::atomic::Ordering::Relaxed,
    );
    r
}

/// A file's content, from the planned chunks that follow its entry.
struct PlannedChunks<'x, 'r, 'i, 'p> {
    plan: &'x mut Planner<'r, 'i>,
    packs: &'x mut PackReader<'p>,
    left: usize,
    current: Bytes,
    clocks: &'x RestoreClocks,
}

impl PlannedChunks<'_, '_, '_, '_> {
    /// The file's next chunk step (a chunk, or a chunk sent ahead).
    fn next_chunk(&mut self) -> Result<Option<Step>, SnapshotError> {
        if self.left == 0 {
            return Ok(None);
        }
        self.left -= 1;
        let (plan, packs) = (&mut *self.plan, &mut *self.packs);
        Clocks::time(&self.clocks.chunks, || plan.send_ahead(packs))?;
        match self.plan.next(self.packs)? {
            Some(Step::Node(..)) | None => Err(SnapshotError::Format(
                "an entry was planned where a chunk was due".into(),
            )),
            step => Ok(step),
        }
    }

    fn skip_rest(&mut self) -> Result<(), SnapshotError> {
        while let Some(step) = self.next_chunk()? {
            // A chunk sent ahead has passed through the cache already (its
            // pack's failure ends the restore, as a load here would).
            match step {
                Step::Chunk(_, loc) => self.packs.load(loc.pack)?,
                Step::Sent(Sent::Done(Err(e)), _) => return Err(e),
                _ => {}
            }
        }
        Ok(())
    }
}

impl Content for PlannedChunks<'_, '_, '_, '_> {
    fn next_part(&mut self, max: usize) -> std::io::Result<Option<Bytes>> {
        let clocks = self.clocks;
        Clocks::time(&clocks.parts, || {
            while self.current.is_empty() {
                let Some(step) = self.next_chunk().map_err(std::io::Error::other)? else {
                    return Ok(None);
                };
                let packs = &mut *self.packs;
                self.current = Clocks::time(&clocks.chunks, || match step {
                    Step::Chunk(id, loc) => packs.chunk_bytes(&id, &loc),
                    Step::Sent(Sent::Done(r), _) => r,
                    Step::Sent(Sent::Coming(rx), _) => rx.recv().unwrap_or_else(|_| {
                        Err(SnapshotError::Format(
                            "the threads decompressing chunks stopped".into(),
                        ))
                    }),
                    Step::Node(..) => Err(SnapshotError::Format(
                        "an entry was planned where a chunk was due".into(),
                    )),
                })
                .map_err(std::io::Error::other)?;
            }
            Ok(Some(self.current.split_to(max.min(self.current.len()))))
        })
    }
}
