//! The snapshot writer's worker stages (docs/snapshots.md, "Backing up";
//! issue 19): new chunks are compressed on a pool of threads, and full
//! packs are sealed (encrypted, erasure-coded, signed) and handed to the
//! pack sink on a thread of their own, while the caller's thread walks,
//! reads, cuts and looks chunks up. Every queue is bounded: the chunks out
//! with the compressors are at most `workers` + 1 and together at most
//! [`BYTES_PER_WORKER`] per worker (or one chunk alone, whatever its size),
//! each held twice (plain and compressed); and there are two packs, one
//! filling and one being sealed and stored (docs/snapshots.md, "Memory").
//! Making stored packs durable ([`FragmentSink::sync`]) runs on the
//! store's thread too, while the next packs fill.
//!
//! Results come back in the order the work went in (each compressor
//! serves its own queue, and jobs go round the compressors in turn), so
//! packs hold their chunks in the order the tree gave them, as on one
//! thread.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, Sender, SyncSender};
use std::thread::Scope;
use std::time::{Duration, Instant};

use bitdust_block::pack::{PackKind, PackWriter};
use bitdust_block::{BlockSealer, SealedBlock};
use bitdust_crypto::{ChunkId, DedupKeys};

use crate::snapshot::SnapshotError;
use crate::{FragmentSink, SinkError};

/// How many workers compress chunks: `requested`, or one per core for 0.
pub fn worker_count(requested: usize) -> usize {
    if requested > 0 {
        return requested;
    }
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Plain bytes the compressors may hold per worker: two average chunks.
/// A chunk that would pass it goes out only when nothing else is out, so
/// a run of 4 MiB chunks does not hold `workers` + 1 of them at once.
pub const BYTES_PER_WORKER: usize = 2 << 20;

/// Buffers kept for the next jobs are at most this large (an average
/// chunk); a larger one is given back to the allocator. Keeping buffers up
/// to 2 MiB measured 5 MiB more peak RSS on the bench tree and no less time;
/// keeping none, 1 s more system time (fresh pages for every chunk).
pub const KEEP_BUFFER: usize = 1 << 20;

struct Job {
    plain: Vec<u8>,
    out: Vec<u8>,
}

struct Done {
    plain: Vec<u8>,
    out: Vec<u8>,
    result: Result<(), String>,
}

/// A chunk compressed by the pool.
pub(crate) struct Compressed {
    pub(crate) id: ChunkId,
    pub(crate) plain_len: u32,
    /// The compressed bytes; give the buffer back with [`Compressors::recycle`].
    pub(crate) data: Vec<u8>,
}

/// The compressing workers, fed in turn.
pub(crate) struct Compressors {
    workers: Vec<(SyncSender<Job>, Receiver<Done>)>,
    /// The worker that takes the next job.
    next: usize,
    /// Jobs given out, oldest first: the worker and the chunk.
    queue: VecDeque<(usize, ChunkId)>,
    /// Buffers back from the workers, for the next jobs.
    spare: Vec<Vec<u8>>,
    /// Plain bytes of the jobs out.
    out_bytes: usize,
    clocks: Arc<Clocks>,
}

impl Compressors {
    /// `n` workers compressing chunks at zstd `level`, living in `scope`.
    pub(crate) fn spawn<'scope>(
        scope: &'scope Scope<'scope, '_>,
        n: usize,
        level: i32,
        clocks: Arc<Clocks>,
    ) -> Result<Compressors, SnapshotError> {
        let mut workers = Vec::with_capacity(n);
        for _ in 0..n.max(1) {
            let clocks = clocks.clone();
            let mut zstd = zstd::bulk::Compressor::new(level)
                .map_err(|e| SnapshotError::Format(format!("zstd: {e}")))?;
            let (job_tx, job_rx) = mpsc::sync_channel::<Job>(1);
            let (done_tx, done_rx) = mpsc::channel::<Done>();
            scope.spawn(move || {
                for mut job in job_rx {
                    job.out.clear();
                    job.out
                        .reserve_exact(zstd::zstd_safe::compress_bound(job.plain.len()));
                    let result = Clocks::time(&clocks.compress, || {
                        zstd.compress_to_buffer(&job.plain, &mut job.out)
                    })
                    .map(|_| ())
                    .map_err(|e| format!("zstd: {e}"));
                    let done = Done {
                        plain: job.plain,
                        out: job.out,
                        result,
                    };
                    if done_tx.send(done).is_err() {
                        return;
                    }
                }
            });
            workers.push((job_tx, done_rx));
        }
        Ok(Compressors {
            workers,
            next: 0,
            queue: VecDeque::new(),
            spare: Vec::new(),
            out_bytes: 0,
            clocks,
        })
    }

    /// Whether a chunk of `len` bytes must wait for the oldest job to be
    /// taken back: when `workers` + 1 jobs are out (one per worker, and the
    /// next queued while the oldest is packed), or when it would take the
    /// plain bytes out past [`BYTES_PER_WORKER`] per worker (unless
    /// nothing is out).
    pub(crate) fn full_for(&self, len: usize) -> bool {
        !self.queue.is_empty()
            && (self.queue.len() > self.workers.len()
                || self.out_bytes + len > BYTES_PER_WORKER * self.workers.len())
    }

    /// Gives `plain` (copied) to the next worker.
    pub(crate) fn submit(&mut self, id: ChunkId, plain: &[u8]) -> Result<(), SnapshotError> {
        // Buffers are made to the chunk's size (zstd's bound of it for the
        // compressed one) and reused while small; see [`KEEP_BUFFER`].
        let mut buf = self.spare.pop().unwrap_or_default();
        buf.clear();
        buf.reserve_exact(plain.len());
        buf.extend_from_slice(plain);
        let mut out = self.spare.pop().unwrap_or_default();
        out.clear();
        out.reserve_exact(zstd::zstd_safe::compress_bound(plain.len()));
        let w = self.next;
        self.next = (self.next + 1) % self.workers.len();
        self.workers[w]
            .0
            .send(Job { plain: buf, out })
            .map_err(|_| stopped("a compressing worker"))?;
        self.queue.push_back((w, id));
        self.out_bytes += plain.len();
        Ok(())
    }

    /// The oldest job's result, waited for; `None` when none is out.
    pub(crate) fn next_done(&mut self) -> Result<Option<Compressed>, SnapshotError> {
        let Some((w, id)) = self.queue.pop_front() else {
            return Ok(None);
        };
        let done = Clocks::time(&self.clocks.wait_compress, || self.workers[w].1.recv())
            .map_err(|_| stopped("a compressing worker"))?;
        let plain_len = done.plain.len() as u32;
        self.out_bytes -= done.plain.len();
        self.recycle(done.plain);
        done.result.map_err(SnapshotError::Format)?;
        Ok(Some(Compressed {
            id,
            plain_len,
            data: done.out,
        }))
    }

    /// Takes back a buffer [`Compressors::next_done`] lent.
    pub(crate) fn recycle(&mut self, buf: Vec<u8>) {
        if buf.capacity() <= KEEP_BUFFER {
            self.spare.push(buf);
        }
    }
}

fn stopped(what: &str) -> SnapshotError {
    SnapshotError::Format(format!("{what} stopped unexpectedly"))
}

enum ToStore {
    Put { number: u64, writer: PackWriter },
    Sync,
}

/// What storing one pack came to.
pub(crate) struct StoredPack {
    /// Positions that did not take their fragment, and why.
    pub(crate) failed: Vec<(usize, Option<String>)>,
    /// The pack body's length (the block's ciphertext).
    pub(crate) body_len: u64,
    /// One fragment's length.
    pub(crate) fragment_len: u64,
    /// The commitment to its signed header.
    pub(crate) header: [u8; 32],
}

/// One pack back from the store, with its writer (to reuse).
pub(crate) struct Stored {
    pub(crate) number: u64,
    pub(crate) writer: PackWriter,
    pub(crate) result: Result<StoredPack, SnapshotError>,
}

/// What the store reports, in the order it was asked.
pub(crate) enum Reply {
    /// A pack given with [`PackStore::put`].
    Stored(Stored),
    /// A [`PackStore::sync`]: the positions that failed to make their
    /// fragments durable.
    Synced(Result<Vec<usize>, SinkError>),
}

/// The thread that seals packs and hands them to the pack sink, in the
/// order they came.
pub(crate) struct PackStore {
    to: SyncSender<ToStore>,
    from: Receiver<Reply>,
    /// Requests not answered yet.
    outstanding: usize,
    clocks: Arc<Clocks>,
}

/// Packs queued to the store beyond the one it works on: none (the
/// caller fills the next pack meanwhile).
pub(crate) const STORE_QUEUE: usize = 0;

impl PackStore {
    /// The store thread, living in `scope`, writing to `sink`.
    pub(crate) fn spawn<'scope, 'env>(
        scope: &'scope Scope<'scope, 'env>,
        sink: &'env mut (dyn FragmentSink + Send),
        sealer: BlockSealer,
        keys: DedupKeys,
        clocks: Arc<Clocks>,
    ) -> PackStore {
        let (to, rx) = mpsc::sync_channel::<ToStore>(STORE_QUEUE);
        let (tx, from) = mpsc::channel::<Reply>();
        let theirs = clocks.clone();
        scope.spawn(move || store_loop(sink, sealer, keys, rx, tx, &theirs));
        PackStore {
            to,
            from,
            outstanding: 0,
            clocks,
        }
    }

    /// Gives pack `number` to be sealed and stored.
    pub(crate) fn put(&mut self, number: u64, writer: PackWriter) -> Result<(), SnapshotError> {
        self.send(ToStore::Put { number, writer })
    }

    /// Asks for every pack stored so far to be made durable
    /// ([`FragmentSink::sync`]); answered in turn with [`Reply::Synced`].
    pub(crate) fn sync(&mut self) -> Result<(), SnapshotError> {
        self.send(ToStore::Sync)
    }

    fn send(&mut self, msg: ToStore) -> Result<(), SnapshotError> {
        Clocks::time(&self.clocks.wait_store, || self.to.send(msg))
            .map_err(|_| stopped("the pack store"))?;
        self.outstanding += 1;
        Ok(())
    }

    /// The next answer: waited for when `wait`, else only if it is ready.
    /// `None` when there is none (yet).
    pub(crate) fn reply(&mut self, wait: bool) -> Result<Option<Reply>, SnapshotError> {
        if self.outstanding == 0 {
            return Ok(None);
        }
        let reply = if wait {
            Clocks::time(&self.clocks.wait_store, || self.from.recv())
                .map_err(|_| stopped("the pack store"))?
        } else {
            match self.from.try_recv() {
                Ok(r) => r,
                Err(mpsc::TryRecvError::Empty) => return Ok(None),
                Err(mpsc::TryRecvError::Disconnected) => return Err(stopped("the pack store")),
            }
        };
        self.outstanding -= 1;
        Ok(Some(reply))
    }
}

fn store_loop(
    sink: &mut (dyn FragmentSink + Send),
    sealer: BlockSealer,
    keys: DedupKeys,
    rx: Receiver<ToStore>,
    tx: Sender<Reply>,
    clocks: &Clocks,
) {
    let mut sealed = SealedBlock::default();
    for msg in rx {
        let reply = match msg {
            ToStore::Put { number, writer } => {
                let result = (|| {
                    Clocks::time(&clocks.seal, || {
                        sealer.seal_pack(number, &writer, &keys, &mut sealed)
                    })
                    .map_err(|e| SnapshotError::Format(e.to_string()))?;
                    let Some(h) = sealed.header() else {
                        return Err(SnapshotError::Format("the pack was not sealed".into()));
                    };
                    let (body_len, fragment_len) = (h.header.cipher_len, h.header.fragment_len);
                    let header = h.commitment();
                    let failed = Clocks::time(&clocks.store, || sink.put_block(&mut sealed))?;
                    Ok(StoredPack {
                        failed: failed.into_iter().map(|p| (p, sink.failure(p))).collect(),
                        body_len,
                        fragment_len,
                        header,
                    })
                })();
                Reply::Stored(Stored {
                    number,
                    writer,
                    result,
                })
            }
            ToStore::Sync => Reply::Synced(Clocks::time(&clocks.sync, || sink.sync())),
        };
        if tx.send(reply).is_err() {
            return;
        }
    }
}

/// An empty writer of `kind`, reusing the buffers of a spare one that
/// came back from the store.
pub(crate) fn fresh_writer(spare: &mut Vec<PackWriter>, kind: PackKind) -> PackWriter {
    match spare.iter().position(|w| w.kind() == kind) {
        Some(i) => {
            let mut w = spare.swap_remove(i);
            w.clear();
            w
        }
        None => PackWriter::new(kind),
    }
}

/// Where a snapshot run's time went, in seconds: each stage's threads
/// together (docs/performance.md has them for the bench tree).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct StageTimes {
    /// The whole run, wall clock.
    pub wall: f64,
    /// The caller's thread: reading files and cutting them into chunks.
    pub read_and_cut: f64,
    /// The caller's thread, the rest of its work: keyed hashes, index and
    /// files-cache lookups and records, packing, the metadata stream.
    pub hash_index_pack: f64,
    /// The caller's thread waiting for a compressor's result.
    pub wait_compress: f64,
    /// The caller's thread waiting for the pack store.
    pub wait_store: f64,
    /// The compressors, together.
    pub compress: f64,
    /// The pack store: encrypting, erasure coding, signing.
    pub seal: f64,
    /// The pack store: handing the fragments to the sink.
    pub store: f64,
    /// The pack store: making the stored packs durable.
    pub sync: f64,
}

/// Nanoseconds each stage spent, added to from every thread.
#[derive(Default, Debug)]
pub(crate) struct Clocks {
    pub(crate) read: AtomicU64,
    pub(crate) wait_compress: AtomicU64,
    pub(crate) wait_store: AtomicU64,
    pub(crate) compress: AtomicU64,
    pub(crate) seal: AtomicU64,
    pub(crate) store: AtomicU64,
    pub(crate) sync: AtomicU64,
}

impl Clocks {
    /// Runs `f`, adding its time to `clock`.
    pub(crate) fn time<T>(clock: &AtomicU64, f: impl FnOnce() -> T) -> T {
        let t = Instant::now();
        let r = f();
        clock.fetch_add(t.elapsed().as_nanos() as u64, Ordering::Relaxed);
        r
    }

    /// The times, for a run of `wall` on the whole.
    pub(crate) fn times(&self, wall: Duration) -> StageTimes {
        let s = |c: &AtomicU64| c.load(Ordering::Relaxed) as f64 / 1e9;
        let wall = wall.as_secs_f64();
        let (read, wc, ws) = (s(&self.read), s(&self.wait_compress), s(&self.wait_store));
        StageTimes {
            wall,
            read_and_cut: read,
            hash_index_pack: (wall - read - wc - ws).max(0.0),
            wait_compress: wc,
            wait_store: ws,
            compress: s(&self.compress),
            seal: s(&self.seal),
            store: s(&self.store),
            sync: s(&self.sync),
        }
    }
}

/// Where a snapshot restore's time went, in seconds: each thread's share
/// (`local restore --json` prints them as `stages`).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct RestoreTimes {
    /// The whole restore, wall clock.
    pub wall: f64,
    /// The fetching thread collecting each pack's fragments: reading them
    /// from the positions, or waiting for the suppliers.
    pub fetch: f64,
    /// The opening threads decoding and decrypting packs, together.
    pub open: f64,
    /// The restoring thread waiting for an opened pack.
    pub wait_packs: f64,
    /// The restoring thread decompressing and checking chunks, or waiting
    /// for the decompressing threads (its time taking chunks, less
    /// `wait_packs`: a wait for the packs of an entry the sink skipped is
    /// taken from this too, so a partial restore may read a little low).
    pub decompress: f64,
    /// The decompressing threads decompressing and checking the chunks
    /// handed to them, together (0 when the restoring thread does it all).
    pub decompress_threads: f64,
    /// The restoring thread in the sink: writing files and their
    /// attributes, or handing entries on to a stream.
    pub write: f64,
    /// The restoring thread's rest: reading the metadata stream, index
    /// lookups, planning which packs to ask for.
    pub plan: f64,
}

/// The clocks of one restore's threads (see [`RestoreTimes`]).
#[derive(Default)]
pub(crate) struct RestoreClocks {
    pub(crate) wall: AtomicU64,
    pub(crate) fetch: AtomicU64,
    pub(crate) open: AtomicU64,
    pub(crate) wait: AtomicU64,
    /// Chunks taken from packs (decompressing, checking, and waiting for a
    /// pack not opened yet).
    pub(crate) chunks: AtomicU64,
    /// Entries in the sink (writing, and the content it pulled).
    pub(crate) nodes: AtomicU64,
    /// Content pulled by the sink.
    pub(crate) parts: AtomicU64,
    /// The decompressing threads, together.
    pub(crate) pool: AtomicU64,
}

impl RestoreClocks {
    /// The times so far.
    pub(crate) fn times(&self) -> RestoreTimes {
        let s = |c: &AtomicU64| c.load(Ordering::Relaxed) as f64 / 1e9;
        let (wall, wait, nodes) = (s(&self.wall), s(&self.wait), s(&self.nodes));
        RestoreTimes {
            wall,
            fetch: s(&self.fetch),
            open: s(&self.open),
            wait_packs: wait,
            decompress: (s(&self.chunks) - wait).max(0.0),
            decompress_threads: s(&self.pool),
            write: (nodes - s(&self.parts)).max(0.0),
            plan: (wall - nodes).max(0.0),
        }
    }
}
