//! [`NetSource`]: the fragments of a restore, from the suppliers that
//! answer (issue 19, docs/architecture.md "Restores that do not wait for
//! the dead").
//!
//! Nothing waits for a supplier before the restore starts. Every fetch is
//! a task on the agent's runtime that reports to one channel; the restore
//! waits for a fragment only as long as the fetches of this restore have
//! been taking ([`Patience`]). A fragment later than that is read as an
//! erasure at once: the pipeline plans parity around it, and its position
//! is left out of the next blocks' plans (hedging), while a ping every
//! second watches for it to come back. A position whose supplier cannot be
//! reached at all is left out the same way.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bitdust_block::BackupId;
use bitdust_pipeline::{FragmentSource, SourceError};
use tokio::runtime::Handle;
use tokio::sync::mpsc;
use tokio::task::AbortHandle;

use super::patience::{MAX_PATIENCE, Patience};
use super::{Links, MAX_MANIFEST, WATCH_EVERY, fragment_object, manifest_object, record};
use crate::client::{PeerError, Received};
use crate::state::State;

/// The least a position that answered nothing is waited for once most
/// others answered their first ping.
const QUICK_MIN: Duration = Duration::from_millis(25);
/// Blocks asked for ahead whose fetches are kept (the restore asks for
/// fewer: 8 blocks, or 32 packs).
const ORDER_CAP: usize = 256;

/// What a position's supplier has shown in this restore.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Health {
    /// Nothing yet: asked like an answering one.
    Unknown,
    Up,
    /// A fragment came later than the restore's patience: left out until it
    /// answers again.
    Late,
    /// Could not be reached: left out until it answers again.
    Down,
}

type Fetched<T = Vec<u8>> = Result<Option<T>, PeerError>;

/// A task's report.
enum Arrival {
    /// A fragment fetched (or not) after `took`.
    Fragment {
        key: (u64, usize),
        position: usize,
        took: Duration,
        result: Fetched<Received>,
    },
    /// An object (a root, or the start of a fragment) fetched after `took`.
    Object {
        token: u64,
        position: usize,
        took: Duration,
        result: Fetched,
    },
    Pong {
        position: usize,
        answered: bool,
    },
}

struct Inflight {
    started: Instant,
    /// Asked of a position already left out (the plan needs it): waited
    /// for as long as [`MAX_PATIENCE`].
    patient: bool,
    task: AbortHandle,
}

/// The manifests (or roots) asked of every position at once.
struct Manifests {
    started: Instant,
    asked: usize,
    outstanding: usize,
    /// Copies that came.
    copies: usize,
    ready: VecDeque<Vec<u8>>,
}

/// Fetches fragments from the suppliers.
pub struct NetSource {
    rt: Handle,
    links: Links,
    id: BackupId,
    version: u64,
    max_object: u64,
    state: Arc<State>,
    health: Vec<Health>,
    watching: Vec<Option<AbortHandle>>,
    tx: mpsc::UnboundedSender<Arrival>,
    rx: mpsc::UnboundedReceiver<Arrival>,
    inflight: HashMap<(u64, usize), Inflight>,
    /// Fetched fragments not asked for yet (`None`: the supplier has none).
    arrived: HashMap<(u64, usize), Option<Received>>,
    /// Blocks in the order they were first asked for: the restore collects
    /// them in that order.
    order: VecDeque<u64>,
    /// Fetches given up on, still running until they end or the restore does.
    strays: Vec<AbortHandle>,
    fragments: Patience,
    objects: Patience,
    /// When the first pings went out, how long the first answers took
    /// (the slowest), and which positions answered anything (a ping, a
    /// root, a fragment).
    born: Instant,
    pong: Duration,
    ponged: Vec<bool>,
    /// Positions left out before they answered anything: at the quick
    /// deadline (see [`Self::unanswered_since`]), or unreachable.
    silent: Vec<bool>,
    manifests: Option<Manifests>,
    next_token: u64,
    objects_arrived: HashMap<u64, Fetched>,
    /// Objects given up on: their answers are dropped when they come.
    abandoned: HashSet<u64>,
    /// Fragments fetched.
    pub fetched: u64,
    /// Bytes of the starts of fragments read alone (ranged reads).
    pub prefix_bytes: u64,
    /// Fragments read around because they came later than the restore's
    /// patience.
    pub hedged: u64,
}

impl NetSource {
    /// A source for version `version` of `id`; objects above `max_object`
    /// bytes are refused. Every supplier is pinged, and none waited for.
    pub fn new(
        rt: Handle,
        links: Links,
        id: BackupId,
        version: u64,
        max_object: u64,
        state: Arc<State>,
    ) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        let n = links.len();
        let mut s = NetSource {
            rt,
            links,
            id,
            version,
            max_object,
            state,
            health: vec![Health::Unknown; n],
            watching: (0..n).map(|_| None).collect(),
            tx,
            rx,
            inflight: HashMap::new(),
            arrived: HashMap::new(),
            order: VecDeque::new(),
            strays: Vec::new(),
            fragments: Patience::default(),
            objects: Patience::default(),
            born: Instant::now(),
            pong: Duration::ZERO,
            ponged: vec![false; n],
            silent: vec![false; n],
            manifests: None,
            next_token: 0,
            objects_arrived: HashMap::new(),
            abandoned: HashSet::new(),
            fetched: 0,
            prefix_bytes: 0,
            hedged: 0,
        };
        for p in 0..n {
            s.watch(p, Duration::ZERO);
        }
        s
    }

    /// Pings `position` after `first`, then every [`WATCH_EVERY`] until it
    /// answers, unless it is watched already.
    fn watch(&mut self, position: usize, first: Duration) {
        if self.watching[position]
            .as_ref()
            .is_some_and(|w| !w.is_finished())
        {
            return;
        }
        let Some(link) = self.links[position].clone() else {
            return;
        };
        let tx = self.tx.clone();
        let task = self.rt.spawn(async move {
            super::watch(&link, first, Duration::MAX, |answered| {
                tx.send(Arrival::Pong { position, answered }).is_ok()
            })
            .await;
        });
        self.watching[position] = Some(task.abort_handle());
    }

    /// Whether `position` is left out of plans.
    fn left_out(&self, position: usize) -> bool {
        matches!(self.health[position], Health::Late | Health::Down)
    }

    /// Marks `position` answering. Its first answer of any kind counts
    /// towards the first answers [`Self::unanswered_since`] waits on: an
    /// answer to a root or fragment stops its ping (the ping's answer would
    /// never come), so counting pings alone left a dead position waited
    /// for the whole patience (150 ms at least) in most degraded restores
    /// (issue 19, session 24).
    fn up(&mut self, position: usize) {
        if !self.ponged[position] {
            self.ponged[position] = true;
            self.pong = self.pong.max(self.born.elapsed());
        }
        if self.left_out(position) {
            tracing::info!(position, "a supplier left out of the restore answers again");
        }
        self.silent[position] = false;
        self.health[position] = Health::Up;
        // Its watcher would only ping (and reset its link) again.
        if let Some(w) = self.watching[position].take() {
            w.abort();
        }
    }

    /// Leaves `position` out as `how` and watches for it to come back.
    fn leave_out(&mut self, position: usize, how: Health) {
        if !self.left_out(position) {
            tracing::warn!(
                position,
                state = ?how,
                "a supplier is left out of the restore: its fragments are read around"
            );
        }
        if self.health[position] != Health::Down {
            self.health[position] = how;
        }
        // Unreachable before it answered anything: as silent as one
        // left out at the quick deadline.
        self.silent[position] |= how == Health::Down && !self.ponged[position];
        self.watch(position, WATCH_EVERY);
    }

    /// Takes in one task's report.
    fn take(&mut self, a: Arrival) {
        match a {
            Arrival::Fragment {
                key,
                position,
                took,
                result,
            } => {
                // Any answer for a fragment still wanted is taken (a fetch
                // given up on and asked again brings the same object); only
                // those count towards the patience.
                let wanted = self.inflight.remove(&key).is_some();
                if wanted && let Ok(Some(_)) = &result {
                    self.fragments.saw(took);
                }
                let bytes = self.settle(position, result);
                if wanted {
                    self.arrived.insert(key, bytes);
                }
            }
            Arrival::Object {
                token,
                position,
                took,
                result,
            } => {
                let abandoned = self.abandoned.remove(&token);
                if !abandoned && let Ok(Some(_)) = &result {
                    self.objects.saw(took);
                }
                match &mut self.manifests {
                    Some(m) if token == u64::MAX => {
                        m.outstanding = m.outstanding.saturating_sub(1);
                        if let Some(b) = self.settle(position, result)
                            && let Some(m) = &mut self.manifests
                        {
                            m.copies += 1;
                            m.ready.push_back(b);
                        }
                    }
                    _ if abandoned => {
                        self.settle(position, result);
                    }
                    _ => {
                        self.objects_arrived.insert(token, result);
                    }
                }
            }
            Arrival::Pong { position, answered } => {
                if answered {
                    record(&self.state, position, Ok(()));
                    self.up(position);
                } else if self.health[position] == Health::Unknown {
                    // Never answered in this restore: a failed ping says
                    // it is away. One that answered since is not marked
                    // down by an older ping.
                    self.leave_out(position, Health::Down);
                }
            }
        }
    }

    /// Records the outcome of a fetch from `position` and gives its bytes.
    fn settle<T>(&mut self, position: usize, r: Fetched<T>) -> Option<T> {
        match r {
            Ok(x) => {
                record(&self.state, position, Ok(()));
                self.up(position);
                x
            }
            Err(e) => {
                tracing::warn!(position, error = %e, "supplier failed during restore");
                record(&self.state, position, Err(&e));
                if matches!(e, PeerError::Unreachable(_)) {
                    self.leave_out(position, Health::Down);
                }
                None
            }
        }
    }

    /// Takes in every report that has come.
    fn drain(&mut self) {
        while let Ok(a) = self.rx.try_recv() {
            self.take(a);
        }
    }

    /// Waits for one report until `deadline`; false when none came.
    fn wait_until(&mut self, deadline: Instant) -> bool {
        let rx = &mut self.rx;
        // The timer is made inside the runtime (a restore's threads are not).
        let deadline = tokio::time::Instant::from_std(deadline);
        match self
            .rt
            .block_on(async { tokio::time::timeout_at(deadline, rx.recv()).await })
        {
            Ok(Some(a)) => {
                self.take(a);
                true
            }
            _ => false,
        }
    }

    /// Starts fetching fragment `f` of `block` from `position`.
    fn start(&mut self, position: usize, block: u64, f: usize, patient: bool) {
        let Some(link) = self.links[position].clone() else {
            return;
        };
        let name = fragment_object(self.id, self.version, block, f);
        let max = self.max_object;
        let tx = self.tx.clone();
        let started = Instant::now();
        let key = (block, f);
        let task = self.rt.spawn(async move {
            let result = link.get_fragment(&name, max).await;
            let _ = tx.send(Arrival::Fragment {
                key,
                position,
                took: started.elapsed(),
                result,
            });
        });
        self.inflight.insert(
            key,
            Inflight {
                started,
                patient,
                task: task.abort_handle(),
            },
        );
    }

    /// Notes that `block` is wanted, after those asked for before it.
    fn ordered(&mut self, block: u64) {
        if !self.order.contains(&block) {
            self.strays.retain(|t| !t.is_finished());
            self.order.push_back(block);
            if self.order.len() > ORDER_CAP
                && let Some(b) = self.order.pop_front()
            {
                self.forget(b);
            }
        }
    }

    /// Drops what was fetched for `block` and stops its fetches.
    fn forget(&mut self, block: u64) {
        self.inflight.retain(|k, i| {
            let keep = k.0 != block;
            if !keep {
                i.task.abort();
            }
            keep
        });
        self.arrived.retain(|k, _| k.0 != block);
    }

    /// Blocks are collected in the order first asked for: those before
    /// `block` are done.
    fn done_before(&mut self, block: u64) {
        if !self.order.contains(&block) {
            return;
        }
        while let Some(&b) = self.order.front() {
            if b == block {
                break;
            }
            self.order.pop_front();
            self.forget(b);
        }
    }

    /// Waits for fragment `key` from `position`: its bytes, or `None` when
    /// it is missing, failed, or came later than the patience allows (then
    /// the position is left out).
    fn wait_for(&mut self, key: (u64, usize), position: usize) -> Option<Received> {
        let since = Instant::now();
        let r = self.wait_for_inner(key, position);
        tracing::debug!(block = key.0, fragment = key.1, position, got = r.is_some(), waited = ?since.elapsed(), "fragment");
        r
    }

    fn wait_for_inner(&mut self, key: (u64, usize), position: usize) -> Option<Received> {
        loop {
            if let Some(r) = self.arrived.remove(&key) {
                return r;
            }
            let (started, patient) = match self.inflight.get(&key) {
                Some(i) => (i.started, i.patient),
                None => return None,
            };
            if self.health[position] == Health::Down && !patient {
                if let Some(i) = self.inflight.remove(&key) {
                    self.strays.push(i.task);
                }
                return None;
            }
            let patience = if patient {
                MAX_PATIENCE
            } else {
                self.fragments.wait()
            };
            let mut deadline = started + patience;
            let mut quick = false;
            if !patient && let Some(q) = self.unanswered_since(position) {
                quick = q < deadline;
                deadline = deadline.min(q);
            }
            if Instant::now() >= deadline {
                self.drain();
                if self.arrived.contains_key(&key) {
                    continue;
                }
                if let Some(i) = self.inflight.remove(&key) {
                    self.strays.push(i.task);
                }
                self.hedged += 1;
                self.leave_out(position, Health::Late);
                self.silent[position] |= quick;
                return None;
            }
            self.wait_until(deadline);
        }
    }

    /// For a position that has answered nothing in this restore while
    /// most others answered the first ping: when it counts as late (four
    /// times the slowest of those answers, at least [`QUICK_MIN`]). A
    /// supplier that is gone costs a restore no more than that.
    fn unanswered_since(&self, position: usize) -> Option<Instant> {
        let answered = self.ponged.iter().filter(|a| **a).count();
        let linked = self.links.iter().filter(|l| l.is_some()).count();
        (self.health[position] == Health::Unknown && answered * 2 > linked)
            .then(|| self.born + (self.pong * 4).max(QUICK_MIN))
    }

    /// Fetches object `name` from `position` (ranged: its first `len` bytes
    /// when given), waiting as long as the restore's objects have taken.
    fn object(&mut self, position: usize, name: String, len: Option<u64>) -> Option<Vec<u8>> {
        if self.left_out(position) {
            return None;
        }
        let link = self.links[position].clone()?;
        let token = self.next_token;
        self.next_token += 1;
        let tx = self.tx.clone();
        let started = Instant::now();
        let task = self.rt.spawn(async move {
            let result = match len {
                Some(l) => link.get_prefix(&name, l).await,
                None => link.get(&name, MAX_MANIFEST).await,
            };
            let _ = tx.send(Arrival::Object {
                token,
                position,
                took: started.elapsed(),
                result,
            });
        });
        loop {
            if let Some(r) = self.objects_arrived.remove(&token) {
                return self.settle(position, r);
            }
            let deadline = started + self.object_patience();
            if Instant::now() >= deadline || self.health[position] == Health::Down {
                self.abandoned.insert(token);
                self.strays.push(task.abort_handle());
                self.leave_out(position, Health::Late);
                return None;
            }
            self.wait_until(deadline);
        }
    }

    /// The next copy of the manifest (see [`FragmentSource::manifest`]).
    fn manifest_inner(&mut self) -> Result<Option<Vec<u8>>, SourceError> {
        if self.manifests.is_none() {
            let name = manifest_object(self.id, self.version);
            let started = Instant::now();
            let mut outstanding = 0;
            for p in 0..self.links.len() {
                let Some(link) = self.links[p].clone() else {
                    continue;
                };
                let (tx, name) = (self.tx.clone(), name.clone());
                let task = self.rt.spawn(async move {
                    let result = link.get(&name, MAX_MANIFEST).await;
                    let _ = tx.send(Arrival::Object {
                        token: u64::MAX,
                        position: p,
                        took: started.elapsed(),
                        result,
                    });
                });
                self.strays.push(task.abort_handle());
                outstanding += 1;
            }
            self.manifests = Some(Manifests {
                started,
                asked: outstanding,
                outstanding,
                copies: 0,
                ready: VecDeque::new(),
            });
        }
        loop {
            let Some(m) = &mut self.manifests else {
                return Ok(None);
            };
            if let Some(b) = m.ready.pop_front() {
                return Ok(Some(b));
            }
            // Once most positions gave a copy, the rest are not waited for:
            // a root is written to every position, so the newest is among
            // the copies of a majority.
            if m.outstanding == 0 || m.copies * 2 > m.asked {
                m.outstanding = 0;
                return Ok(None);
            }
            let started = m.started;
            let deadline = started + self.object_patience();
            if Instant::now() >= deadline {
                self.drain();
                let Some(m) = &mut self.manifests else {
                    return Ok(None);
                };
                if m.ready.is_empty() {
                    m.outstanding = 0;
                }
                continue;
            }
            self.wait_until(deadline);
        }
    }

    /// How long an object is waited for: as long as objects have taken,
    /// or fragments before any object came.
    fn object_patience(&self) -> Duration {
        match self.objects.0 {
            Some(_) => self.objects.wait(),
            None => self.fragments.wait(),
        }
    }

    /// Lowers the largest object fetched to what `manifest` allows for one
    /// fragment file (see [`bitdust_pipeline::fragment_object_bound`]), once
    /// the manifest is known.
    pub fn bound_by(&mut self, manifest: &bitdust_block::Manifest, max_block_size: usize) {
        self.max_object = self.max_object.min(bitdust_pipeline::fragment_object_bound(
            manifest,
            max_block_size,
        ));
    }

    /// The positions left out of this restore so far.
    pub fn left_out_positions(&self) -> Vec<usize> {
        (0..self.links.len())
            .filter(|&p| self.left_out(p))
            .collect()
    }

    /// Of [`Self::left_out_positions`], those left out before they
    /// answered anything, without waiting the restore's patience: they
    /// were unreachable, or answered nothing while most positions had
    /// (gone, most likely); and they have not answered since.
    pub fn silent_positions(&self) -> Vec<usize> {
        (0..self.links.len())
            .filter(|&p| self.left_out(p) && self.silent[p])
            .collect()
    }
}

impl Drop for NetSource {
    fn drop(&mut self) {
        for i in self.inflight.values() {
            i.task.abort();
        }
        for t in self.strays.iter().chain(self.watching.iter().flatten()) {
            t.abort();
        }
    }
}

impl FragmentSource for NetSource {
    /// The manifest (or root) is asked of every position at once; copies
    /// are given in the order they come, and those later than the
    /// restore's patience after the first are not waited for.
    fn manifest(&mut self, attempt: usize) -> Result<Option<Vec<u8>>, SourceError> {
        let since = Instant::now();
        let r = self.manifest_inner();
        tracing::debug!(attempt, got = ?r.as_ref().map(Option::is_some), waited = ?since.elapsed(), "manifest");
        r
    }

    fn wary_positions(&self) -> Vec<usize> {
        (0..self.links.len())
            .filter(|&p| self.links[p].is_some() && self.health[p] == Health::Late)
            .collect()
    }

    fn positions(&self) -> Vec<usize> {
        (0..self.links.len())
            .filter(|&p| self.links[p].is_some() && !self.left_out(p))
            .collect()
    }

    fn fragment(
        &mut self,
        position: usize,
        block: u64,
        fragment: usize,
    ) -> Result<Option<Box<dyn std::io::Read + '_>>, SourceError> {
        self.done_before(block);
        self.drain();
        let key = (block, fragment);
        // A fragment asked of a position left out is one the block cannot
        // do without: waited for as long as the most patience allows.
        let patient = self.left_out(position);
        if let Some(i) = self.inflight.get_mut(&key) {
            i.patient |= patient;
        } else if !self.arrived.contains_key(&key) {
            if self.health[position] == Health::Down {
                return Ok(None);
            }
            self.ordered(block);
            self.start(position, block, fragment, patient);
        }
        let bytes = self.wait_for(key, position);
        Ok(bytes.map(|b| {
            self.fetched += 1;
            Box::new(b) as Box<dyn std::io::Read>
        }))
    }

    fn fragment_prefix(
        &mut self,
        position: usize,
        block: u64,
        fragment: usize,
        len: usize,
    ) -> Result<Option<Vec<u8>>, SourceError> {
        let name = fragment_object(self.id, self.version, block, fragment);
        let bytes = self.object(position, name, Some(len as u64));
        if let Some(b) = &bytes {
            self.prefix_bytes += b.len() as u64;
        }
        Ok(bytes)
    }

    /// Starts fetching these fragments of `block` in parallel; none from a
    /// position left out.
    fn prefetch(&mut self, block: u64, fragments: &[(usize, usize)]) {
        self.ordered(block);
        for &(p, f) in fragments {
            let key = (block, f);
            if self.left_out(p)
                || self.inflight.contains_key(&key)
                || self.arrived.contains_key(&key)
            {
                continue;
            }
            self.start(p, block, f, false);
        }
        self.strays.retain(|t| !t.is_finished());
    }

    fn describe(&self, position: usize, block: u64, fragment: usize) -> String {
        let who = self.links[position].as_ref().map_or_else(
            || "nobody".to_owned(),
            |l| format!("supplier {} ({})", l.node_id, l.address),
        );
        format!("fragment {fragment} of block {block} at position {position}, {who}")
    }

    fn backup_id(&self) -> BackupId {
        self.id
    }

    fn version(&self) -> u64 {
        self.version
    }
}
