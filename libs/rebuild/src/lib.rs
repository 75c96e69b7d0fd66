//! The `bitdust-rebuilder` daemon (the seeds' "Automatic Rebuilding" and
//! "Supplier Change"): watches the customer's suppliers through the
//! customer-agent (pings, and audits now and then); when as many are
//! unreachable as the map's fire threshold, or one has been unreachable too
//! long, or fails audits, it fires the least reliable one, has the agent
//! hire a replacement found in the DHT, and rebuilds that position block by
//! block from a persistent queue, newest backups first.
//!
//! - [`queue`]: the persistent queue (heed).
//! - [`rebuild`]: one block of one position.
//! - [`run`]: the daemon.

pub mod queue;
pub mod rebuild;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use bitdust_block::BackupId;
use bitdust_config::Config;
use bitdust_crypto::NodeId;
use bitdust_customer::client::SupplierLink;
use bitdust_daemon::tonic::transport::Channel;
use bitdust_ecc::{Code, Scheme};
use bitdust_net::Endpoint;
use bitdust_proto::customer::v1 as cpb;
use bitdust_proto::customer::v1::customer_client::CustomerClient;
use bitdust_proto::rebuilder::v1 as pb;
use tonic::{Request, Response, Status};

use crate::queue::{Job, Queue};

/// The fire threshold of the seeds for `n` suppliers: how many may be
/// unreachable at once before the least reliable one is replaced.
pub fn default_fire_threshold(n: usize) -> u32 {
    match n {
        0..=4 => 1,
        5..=18 => 2,
        19..=26 => 3,
        _ => 5,
    }
}

/// What the status shows between checks.
#[derive(Default)]
struct Seen {
    positions: u32,
    hired: u32,
    reachable: u32,
    last_check: u64,
    last_error: String,
}

/// The running rebuilder.
pub struct Rebuilder {
    config: Config,
    customer: NodeId,
    endpoint: Endpoint,
    queue: Queue,
    seen: Mutex<Seen>,
    /// The suppliers as of the last check (reachable ones only).
    links: Mutex<Vec<Option<Arc<SupplierLink>>>>,
    /// The manifest of the job being worked on, fetched when the job (or
    /// its target) changes: it names each block's header.
    manifest: Mutex<Option<ManifestCache>>,
    /// How long fragments take, and the suppliers that answered late: read
    /// around until they answer a ping (issue 19).
    wary: bitdust_customer::netio::Wary,
}

/// A verified manifest and the job it was fetched for.
struct ManifestCache {
    backup_id: String,
    version: u64,
    position: u32,
    target: String,
    manifest: Arc<bitdust_block::Manifest>,
}

fn lock<X>(m: &Mutex<X>) -> std::sync::MutexGuard<'_, X> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Rebuilder {
    async fn agent(&self) -> Result<CustomerClient<Channel>, String> {
        let sock = self.config.customer_socket();
        bitdust_daemon::connect(&sock)
            .await
            .map(CustomerClient::new)
            .map_err(|_| format!("the customer-agent does not answer at {}", sock.display()))
    }

    /// Suppliers that must answer for a position to be rebuilt: N minus
    /// what the configured code tolerates.
    fn rebuild_needs(&self, n: usize) -> usize {
        let tolerance = self
            .config
            .customer
            .scheme
            .parse::<Scheme>()
            .ok()
            .and_then(|s| Code::new(s, n).ok())
            .map_or(0, |c| c.tolerance());
        n - tolerance
    }

    fn threshold(&self, n: usize) -> u32 {
        match self.config.rebuilder.fire_threshold {
            0 => default_fire_threshold(n),
            t => t,
        }
    }

    /// One check: pings (and maybe audits) the suppliers, fires at most one,
    /// hires into free positions, and brings the queue up to date.
    async fn check(&self, audit: bool) -> Result<(), String> {
        let mut agent = self.agent().await?;
        let list = agent
            .check_suppliers(cpb::CheckSuppliersRequest { audit })
            .await
            .map_err(|e| format!("checking the suppliers: {}", e.message()))?
            .into_inner();
        let n = list.positions as usize;
        let t = now();
        let r = &self.config.rebuilder;
        let unreachable: Vec<&cpb::SupplierInfo> =
            list.suppliers.iter().filter(|s| !s.reachable).collect();
        {
            let mut seen = lock(&self.seen);
            seen.positions = list.positions;
            seen.hired = list.suppliers.len() as u32;
            seen.reachable = (list.suppliers.len() - unreachable.len()) as u32;
            seen.last_check = t;
        }
        let down_for = |s: &cpb::SupplierInfo| t.saturating_sub(s.last_seen.max(s.hired_at));
        let failing_audits = list
            .suppliers
            .iter()
            .filter(|s| s.audits_failed >= r.max_failed_audits)
            .max_by_key(|s| s.audits_failed);
        let least_reliable = unreachable
            .iter()
            .max_by_key(|s| (s.failures_in_a_row, down_for(s)))
            .copied();
        let overdue = unreachable
            .iter()
            .filter(|s| down_for(s) >= r.unreachable_secs)
            .max_by_key(|s| down_for(s))
            .copied();
        // Two guards keep a bad moment from costing suppliers: no firing
        // while a position still waits for a replacement (one empty
        // position at a time), and none when fewer suppliers answer than a
        // rebuild needs (this node is more likely offline than they are,
        // and a replacement could not be rebuilt anyway).
        let reachable = list.suppliers.len() - unreachable.len();
        let needed = self.rebuild_needs(n);
        let hold_fire = if list.suppliers.len() < n {
            Some(format!(
                "{} of {n} positions wait for a supplier; no more are fired until they are filled",
                n - list.suppliers.len()
            ))
        } else if reachable < needed {
            Some(format!(
                "only {reachable} of {n} suppliers answer and a rebuild needs {needed}; none is replaced (is this node offline?)"
            ))
        } else {
            None
        };
        let fire = if hold_fire.is_some() {
            None
        } else if let Some(s) = failing_audits {
            Some((s, format!("it failed {} audits", s.audits_failed)))
        } else if unreachable.len() as u32 >= self.threshold(n) {
            least_reliable.map(|s| {
                (
                    s,
                    format!(
                        "{} of {n} suppliers are unreachable (threshold {}) and it is the least reliable",
                        unreachable.len(),
                        self.threshold(n)
                    ),
                )
            })
        } else {
            overdue.map(|s| (s, format!("it has been unreachable for {} s", down_for(s))))
        };
        if let Some((s, why)) = &fire {
            tracing::warn!(position = s.position, supplier = %s.node_id, "firing the supplier: {why}");
            agent
                .fire_supplier(cpb::FireSupplierRequest {
                    position: s.position,
                })
                .await
                .map_err(|e| format!("firing position {}: {}", s.position, e.message()))?;
            let _ = self.queue.count(|c| c.fired += 1);
            // A fired supplier left out is pinged no more.
            if let Ok(id) = s.node_id.parse() {
                self.wary.forget(&id);
            }
        }
        // Hire into every free position (the one just fired included).
        let held: HashSet<u32> = list
            .suppliers
            .iter()
            .filter(|s| fire.as_ref().is_none_or(|(f, _)| f.position != s.position))
            .map(|s| s.position)
            .collect();
        let mut hire_error = None;
        for p in (0..list.positions).filter(|p| !held.contains(p)) {
            match agent
                .hire_supplier(cpb::HireSupplierRequest {
                    address: String::new(),
                    position: Some(p),
                })
                .await
            {
                Ok(s) => {
                    let s = s.into_inner();
                    tracing::info!(position = p, supplier = %s.node_id, "hired a replacement from the DHT");
                    let _ = self.queue.count(|c| c.hired += 1);
                }
                Err(e) => {
                    hire_error.get_or_insert(format!("hiring for position {p}: {}", e.message()));
                }
            }
        }
        // The suppliers now, for the rebuild.
        let now_list = agent
            .list_suppliers(cpb::ListSuppliersRequest {})
            .await
            .map_err(|e| e.message().to_owned())?
            .into_inner();
        // Suppliers fired since the last check, by hand too, are watched
        // no more.
        let holding: HashSet<NodeId> = now_list
            .suppliers
            .iter()
            .filter_map(|s| s.node_id.parse().ok())
            .collect();
        self.wary.forget_all_but(|id| holding.contains(id));
        let mut links: Vec<Option<Arc<SupplierLink>>> = vec![None; n];
        for s in &now_list.suppliers {
            if let (Ok(id), Some(slot)) = (
                s.node_id.parse::<NodeId>(),
                links.get_mut(s.position as usize),
            ) && s.reachable
            {
                *slot = Some(Arc::new(SupplierLink::new(
                    self.endpoint.clone(),
                    id,
                    s.address.clone(),
                    Duration::from_secs(self.config.customer.timeout_secs),
                )));
            }
        }
        let holder = |p: u32| {
            now_list
                .suppliers
                .iter()
                .find(|s| s.position == p)
                .map(|s| s.node_id.clone())
        };
        *lock(&self.links) = links;
        // Every (version, position) missing fragments becomes a job onto the
        // position's current supplier; jobs no longer needed go.
        let catalog = agent
            .list(cpb::ListRequest {})
            .await
            .map_err(|e| e.message().to_owned())?
            .into_inner();
        let mut wanted = HashSet::new();
        for b in &catalog.backups {
            for v in &b.versions {
                for &p in &v.missing_positions {
                    let Some(target) = holder(p) else { continue };
                    let job = Job {
                        backup_id: b.backup_id.clone(),
                        version: v.version,
                        position: p,
                        target,
                        // A snapshot's blocks are its packs.
                        blocks: if v.snapshot.is_some() {
                            v.packs
                        } else {
                            v.blocks
                        },
                        next_block: 0,
                        scheme: v.scheme.clone(),
                        suppliers: v.suppliers,
                        time: v.time,
                        pack_ranges: if v.snapshot.is_some() {
                            v.pack_ranges.clone()
                        } else {
                            Vec::new()
                        },
                    };
                    wanted.insert(job.key());
                    self.queue.ensure(&job).map_err(|e| e.to_string())?;
                }
            }
        }
        for j in self.queue.jobs().map_err(|e| e.to_string())? {
            if !wanted.contains(&j.key()) {
                self.queue.remove(&j).map_err(|e| e.to_string())?;
            }
        }
        match hire_error.or(hold_fire.filter(|_| !unreachable.is_empty())) {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Rebuilds the next block of the newest job; `false` when there is
    /// nothing to do now.
    async fn step(&self) -> Result<bool, String> {
        let links = lock(&self.links).clone();
        let jobs = self.queue.jobs().map_err(|e| e.to_string())?;
        // The newest job whose target is reachable now.
        let Some(mut job) = jobs.into_iter().find(|j| {
            links
                .get(j.position as usize)
                .and_then(|l| l.as_ref())
                .is_some_and(|l| l.node_id.to_string() == j.target)
        }) else {
            return Ok(false);
        };
        let id: BackupId = job
            .backup_id
            .parse()
            .map_err(|_| format!("a queued job names a bad backup id {:?}", job.backup_id))?;
        let code = job
            .scheme
            .parse::<Scheme>()
            .ok()
            .and_then(|s| Code::new(s, job.suppliers as usize).ok())
            .ok_or_else(|| {
                format!(
                    "a queued job has a bad code {} x {}",
                    job.scheme, job.suppliers
                )
            })?;
        if code.suppliers() != links.len() {
            return Err(format!(
                "backup {} version {} has {} positions, the customer now {}",
                job.backup_id,
                job.version,
                code.suppliers(),
                links.len()
            ));
        }
        let block = rebuild::Block {
            customer: self.customer,
            backup_id: id,
            version: job.version,
            code: &code,
            links: &links,
            position: job.position as usize,
            wary: &self.wary,
        };
        if !job.pack_ranges.is_empty() {
            return self.step_snapshot(job, &block).await;
        }
        // Fetched, and copied to the new supplier, once per job: it says
        // which header counts for each block.
        let cached = lock(&self.manifest).as_ref().and_then(|c| {
            (c.backup_id == job.backup_id
                && c.version == job.version
                && c.position == job.position
                && c.target == job.target)
                .then(|| c.manifest.clone())
        });
        let manifest = match cached {
            Some(m) => m,
            None => {
                let m = Arc::new(block.copy_manifest().await.map_err(|e| e.to_string())?);
                *lock(&self.manifest) = Some(ManifestCache {
                    backup_id: job.backup_id.clone(),
                    version: job.version,
                    position: job.position,
                    target: job.target.clone(),
                    manifest: m.clone(),
                });
                m
            }
        };
        if job.next_block < job.blocks {
            // `parallel_blocks` blocks at once; progress is saved in block
            // order, so a failure or crash redoes the later ones (an upload
            // of the same fragment again is harmless).
            let done = futures_util::future::join_all(
                (job.next_block..self.batch_end(&job)).map(|b| block.rebuild(&manifest, b)),
            )
            .await;
            self.advance(&mut job, done)?;
        }
        if job.next_block >= job.blocks {
            self.repaired(&job).await?;
        }
        Ok(true)
    }

    /// The end of the next batch of `job`: `parallel_blocks` blocks at
    /// once.
    fn batch_end(&self, job: &Job) -> u64 {
        let k = u64::from(self.config.rebuilder.parallel_blocks.max(1));
        job.next_block.saturating_add(k).min(job.blocks)
    }

    /// Saves `job`'s progress over a batch's outcomes, in block order, up
    /// to the first failure (which is returned).
    fn advance(
        &self,
        job: &mut Job,
        done: Vec<Result<rebuild::Done, rebuild::RebuildError>>,
    ) -> Result<(), String> {
        for d in done {
            let d = d.map_err(|e| e.to_string())?;
            job.next_block += 1;
            self.queue
                .advance(job, d.uploaded)
                .map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    /// One step of a snapshot's job: its root copied to the new supplier
    /// (at the start), then the next `parallel_blocks` of its packs, each
    /// rebuilt unless the new supplier holds it already (packs are shared
    /// by snapshots: the first job to reach a pack rebuilds it).
    async fn step_snapshot(
        &self,
        mut job: Job,
        block: &rebuild::Block<'_>,
    ) -> Result<bool, String> {
        if job.next_block == 0 {
            block.copy_root().await.map_err(|e| e.to_string())?;
        }
        let packs = rebuild::Block {
            version: 0,
            ..*block
        };
        if job.next_block < job.blocks {
            let numbers: Vec<u64> = (job.next_block..self.batch_end(&job))
                .map(|i| {
                    bitdust_customer::netio::nth_pack(&job.pack_ranges, i)
                        .ok_or_else(|| format!("a queued job names no pack {i}"))
                })
                .collect::<Result<_, _>>()?;
            let done =
                futures_util::future::join_all(numbers.iter().map(|&p| packs.rebuild_pack(p)))
                    .await;
            self.advance(&mut job, done)?;
        }
        if job.next_block >= job.blocks {
            self.repaired(&job).await?;
        }
        Ok(true)
    }

    /// Tells the agent that the job's position is whole again, and drops
    /// the job.
    async fn repaired(&self, job: &Job) -> Result<(), String> {
        let mut agent = self.agent().await?;
        agent
            .mark_repaired(cpb::MarkRepairedRequest {
                backup_id: job.backup_id.clone(),
                version: job.version,
                position: job.position,
                node_id: job.target.clone(),
            })
            .await
            .map_err(|e| e.message().to_owned())?;
        self.queue.remove(job).map_err(|e| e.to_string())?;
        tracing::info!(backup = %job.backup_id, version = job.version, position = job.position, blocks = job.blocks, "position rebuilt");
        Ok(())
    }

    /// Checks every `check_secs` and rebuilds in between, `parallel_blocks`
    /// blocks at a time.
    async fn work(self: Arc<Self>) {
        let r = &self.config.rebuilder;
        let every = Duration::from_secs(r.check_secs);
        let mut checks: u64 = 0;
        loop {
            checks += 1;
            let audit = r.audit_every > 0 && checks.is_multiple_of(u64::from(r.audit_every));
            let next = Instant::now() + every;
            match self.check(audit).await {
                Ok(()) => lock(&self.seen).last_error.clear(),
                Err(e) => {
                    tracing::warn!("{e}");
                    lock(&self.seen).last_error = e;
                }
            }
            while Instant::now() < next {
                match self.step().await {
                    Ok(true) => {}
                    Ok(false) => break,
                    Err(e) => {
                        tracing::warn!("rebuild: {e}");
                        lock(&self.seen).last_error = e;
                        break;
                    }
                }
            }
            tokio::time::sleep_until(next.into()).await;
        }
    }
}

/// The gRPC face.
pub struct RebuilderService(pub Arc<Rebuilder>);

#[tonic::async_trait]
impl pb::rebuilder_server::Rebuilder for RebuilderService {
    async fn status(
        &self,
        _: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusReply>, Status> {
        let r = &self.0;
        let c = r
            .queue
            .counters()
            .map_err(|e| Status::internal(e.to_string()))?;
        let jobs = r
            .queue
            .jobs()
            .map_err(|e| Status::internal(e.to_string()))?;
        let seen = lock(&r.seen);
        Ok(Response::new(pb::StatusReply {
            positions: seen.positions,
            hired: seen.hired,
            reachable: seen.reachable,
            fire_threshold: r.threshold(seen.positions as usize),
            last_check: seen.last_check,
            last_error: seen.last_error.clone(),
            suppliers_fired: c.fired,
            suppliers_hired: c.hired,
            blocks_rebuilt: c.blocks,
            bytes_uploaded: c.bytes,
            fragments_read_around: r.wary.read_around(),
            queue: jobs
                .into_iter()
                .map(|j| pb::Job {
                    backup_id: j.backup_id,
                    version: j.version,
                    position: j.position,
                    target: j.target,
                    blocks: j.blocks,
                    next_block: j.next_block,
                })
                .collect(),
        }))
    }
}

/// Runs the rebuilder daemon until SIGTERM/SIGINT.
pub async fn run(config: Config) -> anyhow::Result<()> {
    let state = config.rebuilder_state();
    let mut daemon = bitdust_daemon::Daemon::new("rebuilder");
    // Only the identity: the suppliers let the customer in by it. The
    // master key is never read; the rebuilder moves ciphertext only.
    let keys = bitdust_crypto::KeyRing::open(&config.customer_keys()).with_context(|| {
        "the rebuilder acts for the customer and needs its identity; start the customer-agent first"
    })?;
    let identity = keys.identity();
    let customer = identity.node_id();
    let queue = {
        let state = state.clone();
        tokio::task::spawn_blocking(move || Queue::open(&state)).await??
    };
    let bind = std::net::SocketAddr::new(config.customer.bind.ip(), 0);
    let endpoint = Endpoint::bind_with(
        identity,
        bind,
        bitdust_supplier::peer::ALPN,
        bitdust_net::Listen::Expected,
    )?;
    let rebuilder = Arc::new(Rebuilder {
        config: config.clone(),
        customer,
        endpoint: endpoint.clone(),
        queue,
        seen: Mutex::new(Seen::default()),
        links: Mutex::new(Vec::new()),
        manifest: Mutex::new(None),
        wary: bitdust_customer::netio::Wary::new(),
    });
    let socket = config.rebuilder_socket();
    let service = pb::rebuilder_server::RebuilderServer::new(RebuilderService(rebuilder.clone()));
    daemon
        .serve(&socket, &["bitdust.rebuilder.v1.Rebuilder"], |r| {
            r.add_service(service)
        })
        .await?;
    daemon.supervise("the rebuild worker", rebuilder.clone().work());
    tracing::info!(%customer, socket = %socket.display(), "rebuilder ready");
    let stopped = daemon.run("watching the customer's suppliers").await;
    let _ = tokio::time::timeout(Duration::from_secs(2), endpoint.shutdown()).await;
    Ok(stopped?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fire_thresholds_follow_the_seeds() {
        let t: Vec<u32> = bitdust_ecc::SUPPLIER_COUNTS
            .iter()
            .map(|&n| default_fire_threshold(n))
            .collect();
        assert_eq!(t, [1, 1, 2, 2, 2, 3, 5]);
    }
}
