//! The pipeline's [`FragmentSink`] and [`FragmentSource`] over the network:
//! every position's fragments go to (and come from) its supplier.
//!
//! The pipeline runs on plain threads; these adapters drive the async
//! supplier links through the agent's tokio runtime handle.

use std::collections::VecDeque;
use std::sync::Arc;

use bitdust_block::{BackupId, SealedBlock, fragment_head};
use bitdust_ecc::{AlignedBuf, Code};
use bitdust_pipeline::{FragmentSink, SinkError};
use bytes::Bytes;
use tokio::runtime::Handle;
use tokio::task::JoinSet;

mod patience;
mod source;
pub use patience::{MAX_PATIENCE, MIN_PATIENCE, Patience, Wary};
pub use source::NetSource;

use crate::client::{PeerError, SupplierLink};
use crate::state::State;

/// Objects of version `version` of backup `id` on a supplier start with this.
pub fn version_prefix(id: BackupId, version: u64) -> String {
    format!("v/{id}/{version:010}/")
}

/// Name of fragment `f` of `block`.
pub fn fragment_object(id: BackupId, version: u64, block: u64, f: usize) -> String {
    format!("{}b{block:010}.f{f:03}", version_prefix(id, version))
}

/// The block (pack) number of a fragment object named under `prefix`
/// (a [`version_prefix`]), if `name` is one.
pub fn pack_of(prefix: &str, name: &str) -> Option<u64> {
    let rest = name.strip_prefix(prefix)?.strip_prefix('b')?;
    let (digits, f) = rest.split_once(".f")?;
    (digits.len() == 10 && f.len() == 3 && f.bytes().all(|b| b.is_ascii_digit()))
        .then(|| digits.parse().ok())
        .flatten()
}

/// Name of the signed manifest.
pub fn manifest_object(id: BackupId, version: u64) -> String {
    format!("{}manifest", version_prefix(id, version))
}

/// Pack number `k` (from 0) of a snapshot's (first, count) pack ranges.
pub fn nth_pack(ranges: &[u64], mut k: u64) -> Option<u64> {
    for r in ranges.chunks_exact(2) {
        if k < r[1] {
            return r[0].checked_add(k);
        }
        k -= r[1];
    }
    None
}

/// Largest manifest accepted from a supplier.
const MAX_MANIFEST: u64 = bitdust_block::MAX_MANIFEST_BYTES;

/// The supplier links, one per position (`None`: nobody hired there).
pub type Links = Vec<Option<Arc<SupplierLink>>>;

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Records a call's outcome in the supplier statistics.
pub fn record(state: &State, position: usize, result: Result<(), &PeerError>) {
    let p = position as u32;
    let _ = state.update_stats(p, |s| match result {
        Ok(()) => {
            s.last_seen = now();
            s.failures_in_a_row = 0;
        }
        Err(e) => {
            if matches!(e, PeerError::Unreachable(_)) {
                s.failures += 1;
                s.failures_in_a_row += 1;
            }
            s.last_error = e.to_string();
        }
    });
}

/// How long a liveness probe waits for a supplier.
pub const PROBE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3);

/// Pings `link` once, waiting [`PROBE_TIMEOUT`] at most; a supplier that
/// does not answer, and was not heard on its connection meanwhile, has the
/// connection reset, so the next call dials anew
/// ([`SupplierLink::reset_if_silent`]).
pub async fn ping_once(link: &SupplierLink) -> Result<(), PeerError> {
    ping_pong(link).await.map(|_| ())
}

/// [`ping_once`], keeping the supplier's answer.
pub async fn ping_pong(link: &SupplierLink) -> Result<bitdust_proto::peer::v1::Pong, PeerError> {
    let mark = link.heard().await;
    let r = match tokio::time::timeout(PROBE_TIMEOUT, link.ping()).await {
        Ok(r) => r,
        Err(_) => Err(PeerError::Unreachable(format!(
            "supplier {} at {} did not answer a ping within {PROBE_TIMEOUT:?}",
            link.node_id, link.address
        ))),
    };
    if r.is_err() {
        link.reset_if_silent(mark).await;
    }
    r
}

/// How often a supplier left out (of a restore, or of the rebuilder's
/// reads) is pinged to see whether it is back.
pub const WATCH_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// Pings `link` after `first`, then every [`WATCH_EVERY`], until it
/// answers, `each` (told each answer) returns false, or `give_up` has
/// passed since the first ping. Whether it answered.
pub async fn watch(
    link: &SupplierLink,
    first: std::time::Duration,
    give_up: std::time::Duration,
    mut each: impl FnMut(bool) -> bool,
) -> bool {
    tokio::time::sleep(first).await;
    let started = tokio::time::Instant::now();
    loop {
        let answered = ping_once(link).await.is_ok();
        if !each(answered) || answered {
            return answered;
        }
        if started.elapsed() >= give_up {
            return false;
        }
        tokio::time::sleep(WATCH_EVERY).await;
    }
}

/// Pings every linked supplier at once; the error of each that did not
/// answer within [`PROBE_TIMEOUT`] (`None`: it answered, or no link).
pub async fn probe(links: &Links, state: &Arc<State>) -> Vec<Option<String>> {
    let mut set = JoinSet::new();
    for (p, l) in links.iter().enumerate() {
        if let Some(l) = l.clone() {
            set.spawn(async move { (p, ping_once(&l).await) });
        }
    }
    let mut out = vec![None; links.len()];
    while let Some(Ok((p, r))) = set.join_next().await {
        record(state, p, r.as_ref().map(|_| ()));
        if let Err(e) = r {
            out[p] = Some(e.to_string());
        }
    }
    out
}

/// Sends fragments to the suppliers.
pub struct NetSink {
    rt: Handle,
    links: Links,
    code: Code,
    id: BackupId,
    version: u64,
    failed: Vec<Option<String>>,
    state: Arc<State>,
    /// Uploads of earlier blocks still running while the pipeline seals
    /// the next ones, oldest first, with their sizes in bytes.
    inflight: VecDeque<(u64, Uploads)>,
    /// Fragment buffers the connections are done with.
    spares: Spares,
}

type Uploads = JoinSet<(usize, Result<(), PeerError>)>;

/// Fragment buffers handed back by the connections once they have sent
/// (and had acknowledged) every fragment in them: a few are kept, so
/// blocks are sealed in memory that is mapped already.
#[derive(Clone, Default)]
struct Spares(Arc<std::sync::Mutex<Vec<AlignedBuf>>>);

/// Spare buffers kept at most.
const SPARES: usize = 4;

impl Spares {
    fn take(&self) -> AlignedBuf {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .pop()
            .unwrap_or_default()
    }

    fn give(&self, buf: AlignedBuf) {
        let mut spares = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if spares.len() < SPARES {
            spares.push(buf);
        }
    }
}

/// One block's fragment payloads, lent to the connections; back to the
/// spares when the last of them is done.
struct Lent {
    buf: AlignedBuf,
    spares: Spares,
}

impl Drop for Lent {
    fn drop(&mut self) {
        self.spares.give(std::mem::take(&mut self.buf));
    }
}

/// One fragment's payload in a [`Lent`] buffer, as the bytes a connection
/// sends.
struct FragmentBytes {
    lent: Arc<Lent>,
    range: std::ops::Range<usize>,
}

impl AsRef<[u8]> for FragmentBytes {
    fn as_ref(&self) -> &[u8] {
        &self.lent.buf[self.range.clone()]
    }
}

/// Bytes of fragments a backup keeps in flight to the suppliers at most
/// (one block more when a single block is larger).
const INFLIGHT_BYTES: u64 = 32 << 20;

impl NetSink {
    /// A sink for version `version` of `id`.
    pub fn new(
        rt: Handle,
        links: Links,
        code: Code,
        id: BackupId,
        version: u64,
        state: Arc<State>,
    ) -> Self {
        // Suppliers that do not answer a ping now are left out of this
        // backup (their fragments are recorded as missing) instead of
        // slowing every block down.
        let down = rt.block_on(probe(&links, &state));
        let failed = links
            .iter()
            .zip(down)
            .map(|(l, d)| match l {
                None => Some("no supplier is hired at this position".to_owned()),
                Some(_) => d,
            })
            .collect();
        NetSink {
            rt,
            links,
            code,
            id,
            version,
            failed,
            state,
            inflight: VecDeque::new(),
            spares: Spares::default(),
        }
    }

    /// Starts sending `objects` (position, name, bytes) to their suppliers,
    /// every position in parallel, once the uploads in flight leave room.
    fn send_all(&mut self, objects: Vec<(usize, String, Vec<Bytes>)>) {
        let size: u64 = objects
            .iter()
            .flat_map(|(_, _, parts)| parts)
            .map(|b| b.len() as u64)
            .sum();
        while !self.inflight.is_empty()
            && self.inflight.iter().map(|(s, _)| s).sum::<u64>() + size > INFLIGHT_BYTES
        {
            self.wait_oldest();
        }
        let mut per_position: Vec<Vec<(String, Vec<Bytes>)>> = vec![Vec::new(); self.links.len()];
        for (p, name, bytes) in objects {
            per_position[p].push((name, bytes));
        }
        let _guard = self.rt.enter();
        let mut set = JoinSet::new();
        for (p, objs) in per_position.into_iter().enumerate() {
            let Some(link) = self.links[p].clone() else {
                continue;
            };
            if objs.is_empty() {
                continue;
            }
            set.spawn(async move {
                for (name, parts) in objs {
                    if let Err(e) = link.put_parts(&name, parts).await {
                        return (p, Err(e));
                    }
                }
                (p, Ok(()))
            });
        }
        self.inflight.push_back((size, set));
    }

    /// Waits for every upload in flight.
    fn wait(&mut self) {
        while !self.inflight.is_empty() {
            self.wait_oldest();
        }
    }

    /// Waits for the oldest block's uploads, marking the positions that
    /// failed.
    fn wait_oldest(&mut self) {
        let Some((_, mut set)) = self.inflight.pop_front() else {
            return;
        };
        let results = self.rt.block_on(async {
            let mut out = Vec::new();
            while let Some(r) = set.join_next().await {
                if let Ok(x) = r {
                    out.push(x);
                }
            }
            out
        });
        for (p, r) in results {
            record(&self.state, p, r.as_ref().map(|_| ()));
            if let Err(e) = r {
                tracing::warn!(position = p, error = %e, "supplier failed during backup");
                self.failed[p] = Some(e.to_string());
            }
        }
    }
}

impl Drop for NetSink {
    /// A failed backup drops its sink with uploads still in flight. They
    /// are waited for, not cut: a put the supplier already has could
    /// otherwise land after the failed attempt's fragments were deleted,
    /// and stay behind. (The sink lives on a blocking thread, like its
    /// `block_on` calls.)
    fn drop(&mut self) {
        self.wait();
    }
}

impl FragmentSink for NetSink {
    fn put_block(&mut self, block: &mut SealedBlock) -> Result<Vec<usize>, SinkError> {
        let header = block
            .header()
            .ok_or_else(|| SinkError("the block was not sealed".into()))?
            .clone();
        let fl = block.fragment_len();
        // The fragments go to the connections as they lie in the sealer's
        // buffer; it comes back to `spares` once every connection is done
        // with it, and the block after next is sealed in it.
        let spare = self.spares.take();
        let lent = Arc::new(Lent {
            buf: block.take_fragments(spare),
            spares: self.spares.clone(),
        });
        let mut objects = Vec::new();
        for f in 0..self.code.fragment_count() {
            let p = self.code.fragment_position(f);
            if self.failed[p].is_some() {
                continue;
            }
            let head = fragment_head(&header, f, self.code.fragment_kind(f), fl)
                .map_err(|e| SinkError(format!("encoding a fragment failed: {e}")))?;
            let payload = Bytes::from_owner(FragmentBytes {
                lent: lent.clone(),
                range: f * fl..(f + 1) * fl,
            });
            objects.push((
                p,
                fragment_object(self.id, self.version, header.header.block, f),
                vec![Bytes::from(head), payload],
            ));
        }
        drop(lent);
        self.send_all(objects);
        Ok((0..self.links.len())
            .filter(|&p| self.failed[p].is_some())
            .collect())
    }

    fn sync(&mut self) -> Result<Vec<usize>, SinkError> {
        // A supplier acknowledges a fragment only once it is durable on its
        // disk: waiting for the acknowledgements is enough.
        self.wait();
        Ok((0..self.links.len())
            .filter(|&p| self.failed[p].is_some())
            .collect())
    }

    fn commit(&mut self, manifest: &[u8]) -> Result<Vec<usize>, SinkError> {
        // Every fragment a supplier acknowledged is already durable on its
        // disk (it acknowledges only after fsync), so the manifest, which
        // makes the version visible, can go now.
        self.wait();
        let name = manifest_object(self.id, self.version);
        let manifest = Bytes::copy_from_slice(manifest);
        let objects = (0..self.links.len())
            .filter(|&p| self.failed[p].is_none())
            .map(|p| (p, name.clone(), vec![manifest.clone()]))
            .collect();
        self.send_all(objects);
        self.wait();
        let failed: Vec<usize> = (0..self.links.len())
            .filter(|&p| self.failed[p].is_some())
            .collect();
        if failed.len() == self.links.len() {
            let why = self
                .failed
                .iter()
                .flatten()
                .next()
                .cloned()
                .unwrap_or_default();
            return Err(SinkError(format!("no supplier took the manifest ({why})")));
        }
        Ok(failed)
    }

    fn failure(&self, position: usize) -> Option<String> {
        self.failed.get(position).cloned().flatten()
    }
}
