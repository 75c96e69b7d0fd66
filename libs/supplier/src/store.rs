//! The supplier's storage: customers' objects as files, indexed in LMDB.
//!
//! Layout of the state directory:
//!
//! ```text
//! lock                      flock: one supplier per state directory
//! index/                    LMDB (heed): customers, objects
//! objects/<customer>/<file> object payloads, one file each
//! tmp/                      payloads being received
//! ```
//!
//! A put is crash-safe and acknowledged only once durable: the payload goes
//! to a file in `tmp/`, is checked against its declared size and BLAKE3 hash,
//! fsynced, renamed into `objects/<customer>/` under a fresh name, the
//! directory fsynced, and only then the index transaction (which LMDB makes
//! durable on commit) points the name at the file. Puts that land together
//! are made durable together ([`Store::finish_puts`]): the same steps, each
//! directory fsynced once after all the renames, one index transaction for
//! them all. The file an object replaces is removed after that commit. Whatever a crash leaves half-done
//! (a temp file, a renamed file the index never pointed at, an old file not
//! yet removed) is cleaned up by [`Store::open`]; an index entry whose file
//! is gone is dropped there too, so the index never promises what the disk
//! does not hold.

use std::collections::HashSet;
use std::fs::File;
use std::io::Read;
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::durable::{Fs, RealFs};
use bitdust_crypto::NodeId;
use bitdust_daemon::state::StateLock;
use heed::types::{Bytes, SerdeJson};
use heed::{Database, Env};
use serde::{Deserialize, Serialize};

/// Longest object name, in bytes.
pub const MAX_NAME: usize = 255;
/// Most objects one list call returns.
pub const MAX_LIST: usize = 1000;

/// Why a storage operation failed; each maps to a peer protocol error code.
#[derive(Clone, Debug, thiserror::Error)]
pub enum StoreError {
    /// The request is malformed or breaks a limit.
    #[error("{0}")]
    BadRequest(String),
    /// The peer has no storage service here.
    #[error("{0} has no storage service on this supplier; request service first")]
    NotACustomer(NodeId),
    /// The service request is refused.
    #[error("{0}")]
    Refused(String),
    /// The object does not fit the customer's quota.
    #[error(
        "storing {size} bytes would take the customer to {would} of its {quota}-byte quota; delete old versions or ask for more space"
    )]
    QuotaExceeded {
        /// Object size.
        size: u64,
        /// Usage after the put.
        would: u64,
        /// The quota.
        quota: u64,
    },
    /// The disk is full.
    #[error("the supplier's disk is full; nothing was stored")]
    DiskFull,
    /// No such object.
    #[error("no object named {0:?}")]
    NotFound(String),
    /// The payload does not match what was declared.
    #[error("{0}")]
    Corrupt(String),
    /// A local I/O or database failure.
    #[error("supplier storage failed: {0}")]
    Internal(String),
}

impl From<heed::Error> for StoreError {
    fn from(e: heed::Error) -> Self {
        StoreError::Internal(format!("index: {e}"))
    }
}

fn io_err(what: &str, e: std::io::Error) -> StoreError {
    if e.raw_os_error() == Some(libc::ENOSPC) || e.raw_os_error() == Some(libc::EDQUOT) {
        StoreError::DiskFull
    } else {
        StoreError::Internal(format!("{what}: {e}"))
    }
}

/// One customer's service.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct CustomerRecord {
    /// Bytes it may store.
    pub quota: u64,
    /// Bytes it stores.
    pub used: u64,
    /// Objects it stores.
    pub objects: u64,
    /// Unix seconds when the service began.
    pub since: u64,
    /// The source address the service was granted to (an IPv4 address, or
    /// an IPv6 /64 prefix), for the per-address limit on unused services.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub address: String,
}

impl CustomerRecord {
    /// A service that holds nothing yet.
    fn unused(&self) -> bool {
        self.objects == 0 && self.used == 0
    }
}

/// The key the per-address limits count by (shared with the DHT's store).
pub use bitdust_dht::store::address_key;

/// One stored object.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ObjectRecord {
    /// Payload size.
    pub size: u64,
    /// BLAKE3 of the payload.
    pub hash: [u8; 32],
    /// File name under `objects/<customer>/`.
    pub file: String,
}

/// Limits the store enforces.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Space promised to all customers together may not exceed this.
    pub capacity: u64,
    /// Largest object.
    pub max_object_size: u64,
    /// Most customers.
    pub max_customers: u32,
    /// A service that holds no object this many seconds after it was
    /// granted ends, so its quota goes back to the others.
    pub unused_secs: u64,
    /// Most services holding no object yet, per source address.
    pub max_unused_per_address: u32,
    /// Most services in all, per source address.
    pub max_services_per_address: u32,
}

/// The storage of one supplier.
pub struct Store {
    root: PathBuf,
    env: Env,
    customers: Database<Bytes, SerdeJson<CustomerRecord>>,
    objects: Database<Bytes, SerdeJson<ObjectRecord>>,
    limits: Limits,
    /// Bytes of puts in flight per customer (checked against the quota
    /// with what is stored, before a payload is accepted).
    reserved: Reservations,
    /// The durable file-system steps.
    fs: std::sync::Arc<dyn Fs>,
    _lock: StateLock,
}

type Reservations = std::sync::Arc<std::sync::Mutex<std::collections::HashMap<NodeId, u64>>>;

/// A put's share of its customer's quota, held until the put ends.
#[derive(Debug)]
struct Reservation {
    map: Reservations,
    customer: NodeId,
    size: u64,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        let mut m = self
            .map
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(r) = m.get_mut(&self.customer) {
            *r = r.saturating_sub(self.size);
            if *r == 0 {
                m.remove(&self.customer);
            }
        }
    }
}

/// A put in progress: the payload is being written to `tmp_path`.
#[derive(Debug)]
pub struct PutTicket {
    customer: NodeId,
    name: String,
    size: u64,
    hash: [u8; 32],
    /// Where the payload goes until it is complete.
    pub tmp_path: PathBuf,
    /// Released when the put ends, whichever way.
    _reservation: Reservation,
}

/// Sums over all customers.
#[derive(Clone, Copy, Debug, Default)]
pub struct Totals {
    /// Quota promised.
    pub allocated: u64,
    /// Bytes stored.
    pub used: u64,
    /// Customers.
    pub customers: u32,
    /// Objects.
    pub objects: u64,
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn key(customer: &NodeId, name: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(32 + name.len());
    k.extend_from_slice(customer.as_bytes());
    k.extend_from_slice(name.as_bytes());
    k
}

/// Checks an object name: 1 to 255 bytes of `A-Z a-z 0-9 . _ - /`, no
/// empty, `.` or `..` path segment, no leading `/`.
pub fn check_name(name: &str) -> Result<(), StoreError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-/".contains(&b))
        && name
            .split('/')
            .all(|seg| !seg.is_empty() && seg != "." && seg != "..");
    if ok {
        Ok(())
    } else {
        Err(StoreError::BadRequest(format!(
            "{name:?} is not a valid object name (1-{MAX_NAME} bytes of A-Z a-z 0-9 . _ - /, no empty, . or .. segments)"
        )))
    }
}

/// Checks a listing or deletion prefix (may be empty).
fn check_prefix(prefix: &str) -> Result<(), StoreError> {
    if prefix.is_empty() {
        return Ok(());
    }
    let ok = prefix.len() <= MAX_NAME
        && prefix
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-/".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(StoreError::BadRequest(format!(
            "{prefix:?} is not a valid name prefix"
        )))
    }
}

fn random_hex() -> String {
    let mut b = [0u8; 8];
    // The OS random source failing leaves no unique name to pick.
    getrandom::fill(&mut b).expect("the operating system's random source failed");
    data_encoding::HEXLOWER.encode(&b)
}

impl Store {
    /// Opens (creating) the store in `root` and repairs what a crash left.
    pub fn open(root: &Path, limits: Limits) -> Result<Store, StoreError> {
        Store::open_with(root, limits, std::sync::Arc::new(RealFs))
    }

    /// [`Store::open`], taking the durable steps through `fs`.
    pub fn open_with(
        root: &Path,
        limits: Limits,
        fs: std::sync::Arc<dyn Fs>,
    ) -> Result<Store, StoreError> {
        let lock =
            StateLock::take(root, "supplier-store").map_err(|e| StoreError::Internal(e.0))?;
        for d in ["objects", "tmp"] {
            std::fs::create_dir_all(root.join(d))
                .map_err(|e| io_err("creating the state directory", e))?;
        }
        let env = lock
            .open_env("index", 64 << 30, 4)
            .map_err(|e| StoreError::Internal(e.0))?;
        let mut wtxn = env.write_txn()?;
        let customers = env.create_database(&mut wtxn, Some("customers"))?;
        let objects = env.create_database(&mut wtxn, Some("objects"))?;
        wtxn.commit()?;
        let store = Store {
            root: root.to_owned(),
            env,
            customers,
            objects,
            limits,
            reserved: Default::default(),
            fs,
            _lock: lock,
        };
        store.recover()?;
        Ok(store)
    }

    fn customer_dir(&self, customer: &NodeId) -> PathBuf {
        self.root.join("objects").join(customer.to_string())
    }

    /// Makes the index and the files agree after a crash.
    fn recover(&self) -> Result<(), StoreError> {
        let tmp = self.root.join("tmp");
        for entry in std::fs::read_dir(&tmp).map_err(|e| io_err("reading tmp", e))? {
            let entry = entry.map_err(|e| io_err("reading tmp", e))?;
            let _ = std::fs::remove_file(entry.path());
        }
        let mut wtxn = self.env.write_txn()?;
        let ids: Vec<Vec<u8>> = self
            .customers
            .iter(&wtxn)?
            .map(|r| r.map(|(k, _)| k.to_vec()))
            .collect::<Result<_, _>>()?;
        let mut known_dirs = HashSet::new();
        for id in ids {
            let Ok(customer) = NodeId::try_from(id.as_slice()) else {
                continue;
            };
            let dir = self.customer_dir(&customer);
            known_dirs.insert(customer.to_string());
            if !dir.is_dir() {
                self.make_customer_dir(&customer)?;
            }
            let mut files = HashSet::new();
            let mut gone = Vec::new();
            let (mut used, mut count) = (0u64, 0u64);
            for r in self.objects.prefix_iter(&wtxn, &id)? {
                let (k, rec) = r?;
                if dir.join(&rec.file).is_file() {
                    files.insert(rec.file);
                    used += rec.size;
                    count += 1;
                } else {
                    gone.push(k.to_vec());
                }
            }
            for k in gone {
                tracing::warn!(
                    customer = %customer,
                    name = %String::from_utf8_lossy(&k[32..]),
                    "object file missing; dropped from the index"
                );
                self.objects.delete(&mut wtxn, &k)?;
            }
            if let Some(mut rec) = self.customers.get(&wtxn, &id)? {
                rec.used = used;
                rec.objects = count;
                self.customers.put(&mut wtxn, &id, &rec)?;
            }
            if let Ok(entries) = std::fs::read_dir(&dir) {
                for entry in entries.flatten() {
                    let name = entry.file_name().to_string_lossy().into_owned();
                    if !files.contains(&name) {
                        let _ = std::fs::remove_file(entry.path());
                    }
                }
            }
        }
        wtxn.commit()?;
        self.fs.committed();
        // Directories of customers whose service ended.
        if let Ok(entries) = std::fs::read_dir(self.root.join("objects")) {
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if !known_dirs.contains(&name) {
                    let _ = std::fs::remove_dir_all(entry.path());
                }
            }
        }
        Ok(())
    }

    /// The customer's record, if it has service.
    pub fn customer(&self, customer: &NodeId) -> Result<Option<CustomerRecord>, StoreError> {
        let rtxn = self.env.read_txn()?;
        Ok(self.customers.get(&rtxn, customer.as_bytes())?)
    }

    fn require(
        &self,
        rtxn: &heed::RoTxn<'_>,
        customer: &NodeId,
    ) -> Result<CustomerRecord, StoreError> {
        self.customers
            .get(rtxn, customer.as_bytes())?
            .ok_or(StoreError::NotACustomer(*customer))
    }

    /// Every customer with its record.
    pub fn customers(&self) -> Result<Vec<(NodeId, CustomerRecord)>, StoreError> {
        let rtxn = self.env.read_txn()?;
        let mut out = Vec::new();
        for r in self.customers.iter(&rtxn)? {
            let (k, v) = r?;
            if let Ok(id) = NodeId::try_from(k) {
                out.push((id, v));
            }
        }
        Ok(out)
    }

    /// Sums over all customers.
    pub fn totals(&self) -> Result<Totals, StoreError> {
        let mut t = Totals::default();
        for (_, c) in self.customers()? {
            t.allocated += c.quota;
            t.used += c.used;
            t.customers += 1;
            t.objects += c.objects;
        }
        Ok(t)
    }

    /// The limits.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Ends every service that still holds no object `unused_secs` after
    /// it was granted, and returns how many. Identities cost nothing, so
    /// without this a host could reserve every supplier's space and never
    /// use it.
    pub fn expire_unused(&self) -> Result<u64, StoreError> {
        let mut wtxn = self.env.write_txn()?;
        let gone = self.expire_unused_in(&mut wtxn, None, now())?;
        wtxn.commit()?;
        self.fs.committed();
        for c in &gone {
            let _ = self.fs.remove_dir_all(&self.customer_dir(c));
        }
        Ok(gone.len() as u64)
    }

    fn expire_unused_in(
        &self,
        wtxn: &mut heed::RwTxn<'_>,
        keep: Option<&NodeId>,
        now: u64,
    ) -> Result<Vec<NodeId>, StoreError> {
        let busy: HashSet<NodeId> = self
            .reserved
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .keys()
            .copied()
            .collect();
        let mut gone = Vec::new();
        for r in self.customers.iter(wtxn)? {
            let (k, v) = r?;
            if v.unused()
                && v.since.saturating_add(self.limits.unused_secs) <= now
                && let Ok(id) = NodeId::try_from(k)
                && Some(&id) != keep
                && !busy.contains(&id)
            {
                gone.push(id);
            }
        }
        for id in &gone {
            tracing::info!(customer = %id, "storage service ended: it stored nothing since it was granted");
            self.customers.delete(wtxn, id.as_bytes())?;
        }
        Ok(gone)
    }

    /// Grants (or resizes) service: quota = needed / suppliers x 2, per the
    /// seeds. Refused when the capacity left or the customer limit does not
    /// allow it, or when `from` (the request's source address) already
    /// holds `max_unused_per_address` services that store nothing, or
    /// `max_services_per_address` services in all (an identity costs
    /// nothing, an address does: one host cannot reserve the whole
    /// capacity with a byte stored under each of many identities).
    pub fn request_service(
        &self,
        customer: &NodeId,
        needed: u64,
        suppliers: u32,
        from: std::net::IpAddr,
    ) -> Result<CustomerRecord, StoreError> {
        self.request_service_at(customer, needed, suppliers, from, now())
    }

    fn request_service_at(
        &self,
        customer: &NodeId,
        needed: u64,
        suppliers: u32,
        from: std::net::IpAddr,
        now: u64,
    ) -> Result<CustomerRecord, StoreError> {
        if suppliers == 0 || needed == 0 {
            return Err(StoreError::BadRequest(
                "a service request needs a needed space and a supplier count above 0".into(),
            ));
        }
        let quota = needed
            .div_ceil(u64::from(suppliers))
            .checked_mul(2)
            .ok_or_else(|| StoreError::BadRequest("the needed space is out of range".into()))?;
        let address = address_key(from);
        let mut wtxn = self.env.write_txn()?;
        let expired = self.expire_unused_in(&mut wtxn, Some(customer), now)?;
        let existing = self.customers.get(&wtxn, customer.as_bytes())?;
        let (mut others, mut count, mut unused_here, mut here) = (0u64, 0u32, 0u32, 0u32);
        for r in self.customers.iter(&wtxn)? {
            let (k, v) = r?;
            if k != customer.as_bytes() {
                others += v.quota;
                count += 1;
                if v.address == address {
                    here += 1;
                    if v.unused() {
                        unused_here += 1;
                    }
                }
            }
        }
        if existing.is_none() && here >= self.limits.max_services_per_address {
            return Err(StoreError::Refused(format!(
                "{address} already holds {here} services here, the most one address may; cancel one of them first"
            )));
        }
        if existing.is_none() && unused_here >= self.limits.max_unused_per_address {
            return Err(StoreError::Refused(format!(
                "{address} already holds {unused_here} services here that store nothing yet; use them, or ask again when they end ({} s after they were granted)",
                self.limits.unused_secs
            )));
        }
        if existing.is_none() && count >= self.limits.max_customers {
            return Err(StoreError::Refused(format!(
                "this supplier already serves its maximum of {} customers",
                self.limits.max_customers
            )));
        }
        let free = self.limits.capacity.saturating_sub(others);
        if quota > free {
            return Err(StoreError::Refused(format!(
                "this supplier has {free} bytes free of its {} capacity and the service needs a quota of {quota}; hire another supplier or ask for less space",
                self.limits.capacity
            )));
        }
        let new_customer = existing.is_none();
        let rec = match existing {
            Some(mut r) => {
                if quota < r.used {
                    return Err(StoreError::Refused(format!(
                        "a quota of {quota} bytes is below the {} bytes already stored; delete objects first",
                        r.used
                    )));
                }
                r.quota = quota;
                r
            }
            None => CustomerRecord {
                quota,
                used: 0,
                objects: 0,
                since: now,
                address,
            },
        };
        // Record, then act, the other way round here: the directory
        // objects go into exists (durably) before the record that lets them
        // come, so no crash leaves a customer whose puts cannot land. A
        // directory left without a record is removed at the next start.
        if new_customer {
            self.make_customer_dir(customer)?;
        }
        self.customers.put(&mut wtxn, customer.as_bytes(), &rec)?;
        wtxn.commit()?;
        self.fs.committed();
        for c in &expired {
            let _ = self.fs.remove_dir_all(&self.customer_dir(c));
        }
        Ok(rec)
    }

    /// Creates `objects/<customer>/`, durably.
    fn make_customer_dir(&self, customer: &NodeId) -> Result<(), StoreError> {
        let dir = self.customer_dir(customer);
        if !dir.is_dir() {
            self.fs
                .create_dir(&dir)
                .map_err(|e| io_err("creating the customer's directory", e))?;
        }
        self.fs
            .sync_dir(&self.root.join("objects"))
            .map_err(|e| io_err("fsync of a directory", e))
    }

    /// Ends the service: every object of the customer is deleted. Returns
    /// how many objects there were.
    pub fn cancel_service(&self, customer: &NodeId) -> Result<u64, StoreError> {
        let mut wtxn = self.env.write_txn()?;
        self.require(&wtxn, customer)?;
        let keys = self.keys_with_prefix(&wtxn, customer, "")?;
        for k in &keys {
            self.objects.delete(&mut wtxn, k)?;
        }
        self.customers.delete(&mut wtxn, customer.as_bytes())?;
        wtxn.commit()?;
        self.fs.committed();
        let _ = self.fs.remove_dir_all(&self.customer_dir(customer));
        Ok(keys.len() as u64)
    }

    fn keys_with_prefix(
        &self,
        txn: &heed::RoTxn<'_>,
        customer: &NodeId,
        prefix: &str,
    ) -> Result<Vec<Vec<u8>>, StoreError> {
        let p = key(customer, prefix);
        let mut out = Vec::new();
        for r in self.objects.prefix_iter(txn, &p)? {
            out.push(r?.0.to_vec());
        }
        Ok(out)
    }

    /// Checks a put before its payload is read; the payload then goes to
    /// the ticket's `tmp_path`.
    pub fn begin_put(
        &self,
        customer: &NodeId,
        name: &str,
        size: u64,
        hash: &[u8],
    ) -> Result<PutTicket, StoreError> {
        check_name(name)?;
        let hash: [u8; 32] = hash.try_into().map_err(|_| {
            StoreError::BadRequest("a put needs the 32-byte BLAKE3 hash of its payload".into())
        })?;
        if size > self.limits.max_object_size {
            return Err(StoreError::BadRequest(format!(
                "an object of {size} bytes is over this supplier's limit of {} bytes",
                self.limits.max_object_size
            )));
        }
        let rtxn = self.env.read_txn()?;
        let rec = self.require(&rtxn, customer)?;
        let old = self
            .objects
            .get(&rtxn, &key(customer, name))?
            .map_or(0, |o| o.size);
        // Puts in flight count against the quota too, so concurrent puts
        // can neither exceed it nor fill tmp/ beyond it.
        let mut reserved = self
            .reserved
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let in_flight = reserved.get(customer).copied().unwrap_or(0);
        let would = rec.used - old.min(rec.used) + in_flight + size;
        if would > rec.quota {
            return Err(StoreError::QuotaExceeded {
                size,
                would,
                quota: rec.quota,
            });
        }
        *reserved.entry(*customer).or_default() += size;
        drop(reserved);
        Ok(PutTicket {
            customer: *customer,
            name: name.to_owned(),
            size,
            hash,
            tmp_path: self.root.join("tmp").join(random_hex()),
            _reservation: Reservation {
                map: self.reserved.clone(),
                customer: *customer,
                size,
            },
        })
    }

    /// Makes a received payload durable and indexes it. The payload must
    /// already be in `ticket.tmp_path`, fsynced, of the declared size and
    /// hash (checked by the caller while receiving). Returns the customer's
    /// record after the put.
    pub fn finish_put(&self, ticket: PutTicket) -> Result<CustomerRecord, StoreError> {
        self.finish_puts(vec![ticket])
            .pop()
            .unwrap_or_else(|| Err(StoreError::Internal("a put went missing".into())))
    }

    /// [`Store::finish_put`] for several puts at once, one result each, in
    /// order: every payload is fsynced and renamed into place, each
    /// directory they went to is fsynced once, and one index transaction
    /// records them all. Puts that land together (a customer's fragments
    /// arrive several at a time) share the directory fsyncs and the
    /// index's commit, which costs two more.
    pub fn finish_puts(&self, tickets: Vec<PutTicket>) -> Vec<Result<CustomerRecord, StoreError>> {
        let mut results: Vec<Option<Result<CustomerRecord, StoreError>>> =
            (0..tickets.len()).map(|_| None).collect();
        // The data, then its name, then the index that points at it.
        let mut placed: Vec<(usize, PathBuf, String)> = Vec::new();
        for (i, t) in tickets.iter().enumerate() {
            let dir = self.customer_dir(&t.customer);
            let name_hash = blake3::hash(t.name.as_bytes()).to_hex();
            let file = format!("{}-{}", &name_hash[..16], random_hex());
            let moved = self
                .fs
                .sync_file(&t.tmp_path)
                .map_err(|e| io_err("fsync of an object", e))
                .and_then(|()| {
                    self.fs
                        .rename(&t.tmp_path, &dir.join(&file))
                        .map_err(|e| io_err("moving the object into place", e))
                });
            match moved {
                Ok(()) => placed.push((i, dir, file)),
                Err(e) => {
                    let _ = std::fs::remove_file(&t.tmp_path);
                    results[i] = Some(Err(e));
                }
            }
        }
        let mut dirs: Vec<&PathBuf> = placed.iter().map(|(_, d, _)| d).collect();
        dirs.sort();
        dirs.dedup();
        let mut unsynced = Vec::new();
        for d in dirs {
            if let Err(e) = self.fs.sync_dir(d) {
                unsynced.push((d.clone(), io_err("fsync of a directory", e)));
            }
        }
        let mut indexed = Vec::new();
        for (i, dir, file) in placed {
            if let Some((_, why)) = unsynced.iter().find(|(d, _)| *d == dir) {
                let _ = std::fs::remove_file(dir.join(&file));
                results[i] = Some(Err(why.clone()));
            } else {
                indexed.push((i, dir, file));
            }
        }
        match self.index_puts(&tickets, indexed, &mut results) {
            Ok(old_files) => {
                for f in old_files {
                    let _ = self.fs.remove_file(&f);
                }
            }
            Err((e, files, committing)) => {
                for (i, f) in files {
                    // A commit that failed may still have reached the disk
                    // (its meta page written, its sync failed): the files
                    // stay, and the next start keeps what the index points
                    // at and removes the rest.
                    if !committing {
                        let _ = std::fs::remove_file(&f);
                    }
                    results[i] = Some(Err(e.clone()));
                }
            }
        }
        results
            .into_iter()
            .map(|r| r.unwrap_or_else(|| Err(StoreError::Internal("a put went missing".into()))))
            .collect()
    }

    /// Records the placed puts (ticket number, directory, file name) in one
    /// transaction, setting their results. Returns the files they replaced,
    /// to be removed now that the commit is durable; or, when the
    /// transaction failed, why, every placed file with its ticket, and
    /// whether the commit itself failed.
    #[allow(clippy::type_complexity)]
    fn index_puts(
        &self,
        tickets: &[PutTicket],
        placed: Vec<(usize, PathBuf, String)>,
        results: &mut [Option<Result<CustomerRecord, StoreError>>],
    ) -> Result<Vec<PathBuf>, (StoreError, Vec<(usize, PathBuf)>, bool)> {
        if placed.is_empty() {
            return Ok(Vec::new());
        }
        let files: Vec<(usize, PathBuf)> = placed.iter().map(|(i, d, f)| (*i, d.join(f))).collect();
        let mut done = Vec::new();
        let mut old_files = Vec::new();
        let mut committing = false;
        let attempt = (|| -> Result<(), StoreError> {
            let mut wtxn = self.env.write_txn()?;
            for (i, dir, file) in placed {
                let t = &tickets[i];
                let k = key(&t.customer, &t.name);
                let mut rec = match self.require(&wtxn, &t.customer) {
                    Ok(r) => r,
                    Err(e) => {
                        let _ = std::fs::remove_file(dir.join(&file));
                        results[i] = Some(Err(e));
                        continue;
                    }
                };
                let old = self.objects.get(&wtxn, &k)?;
                let old_size = old.as_ref().map_or(0, |o| o.size);
                let would = rec.used - old_size.min(rec.used) + t.size;
                if would > rec.quota {
                    let _ = std::fs::remove_file(dir.join(&file));
                    results[i] = Some(Err(StoreError::QuotaExceeded {
                        size: t.size,
                        would,
                        quota: rec.quota,
                    }));
                    continue;
                }
                rec.used = would;
                if old.is_none() {
                    rec.objects += 1;
                }
                self.objects.put(
                    &mut wtxn,
                    &k,
                    &ObjectRecord {
                        size: t.size,
                        hash: t.hash,
                        file,
                    },
                )?;
                self.customers.put(&mut wtxn, t.customer.as_bytes(), &rec)?;
                if let Some(old) = old {
                    old_files.push(dir.join(old.file));
                }
                done.push((i, rec));
            }
            committing = true;
            wtxn.commit()?;
            self.fs.committed();
            Ok(())
        })();
        match attempt {
            Ok(()) => {
                for (i, rec) in done {
                    results[i] = Some(Ok(rec));
                }
                Ok(old_files)
            }
            Err(e) => Err((
                e,
                files
                    .into_iter()
                    .filter(|(i, _)| results[*i].is_none())
                    .collect(),
                committing,
            )),
        }
    }

    /// Throws a put away.
    pub fn abort_put(&self, ticket: PutTicket) {
        let _ = std::fs::remove_file(&ticket.tmp_path);
    }

    /// The record of an object and the path of its payload.
    pub fn get(
        &self,
        customer: &NodeId,
        name: &str,
    ) -> Result<(ObjectRecord, PathBuf), StoreError> {
        check_name(name)?;
        let rtxn = self.env.read_txn()?;
        self.require(&rtxn, customer)?;
        let rec = self
            .objects
            .get(&rtxn, &key(customer, name))?
            .ok_or_else(|| StoreError::NotFound(name.to_owned()))?;
        let path = self.customer_dir(customer).join(&rec.file);
        Ok((rec, path))
    }

    /// Objects under `prefix` after `start_after`, at most `limit`; and
    /// whether more follow.
    pub fn list(
        &self,
        customer: &NodeId,
        prefix: &str,
        start_after: &str,
        limit: usize,
    ) -> Result<(Vec<(String, ObjectRecord)>, bool), StoreError> {
        check_prefix(prefix)?;
        check_prefix(start_after)?;
        let limit = limit.clamp(1, MAX_LIST);
        let rtxn = self.env.read_txn()?;
        self.require(&rtxn, customer)?;
        let p = key(customer, prefix);
        let start = key(customer, start_after);
        let lower = if start_after.is_empty() || start < p {
            Bound::Included(p.as_slice())
        } else {
            Bound::Excluded(start.as_slice())
        };
        let mut out = Vec::new();
        for r in self
            .objects
            .range(&rtxn, &(lower, Bound::<&[u8]>::Unbounded))?
        {
            let (k, v) = r?;
            if !k.starts_with(&p) {
                break;
            }
            if out.len() == limit {
                return Ok((out, true));
            }
            out.push((String::from_utf8_lossy(&k[32..]).into_owned(), v));
        }
        Ok((out, false))
    }

    /// Deletes the named objects and everything under `prefix` (when not
    /// empty). Returns the number deleted and the customer's record after.
    pub fn delete(
        &self,
        customer: &NodeId,
        names: &[String],
        prefix: &str,
    ) -> Result<(u64, CustomerRecord), StoreError> {
        for n in names {
            check_name(n)?;
        }
        check_prefix(prefix)?;
        let mut wtxn = self.env.write_txn()?;
        let mut rec = self.require(&wtxn, customer)?;
        let mut keys: Vec<Vec<u8>> = names.iter().map(|n| key(customer, n)).collect();
        if !prefix.is_empty() {
            keys.extend(self.keys_with_prefix(&wtxn, customer, prefix)?);
        }
        let mut files = Vec::new();
        for k in keys {
            if let Some(o) = self.objects.get(&wtxn, &k)? {
                self.objects.delete(&mut wtxn, &k)?;
                rec.used = rec.used.saturating_sub(o.size);
                rec.objects = rec.objects.saturating_sub(1);
                files.push(o.file);
            }
        }
        self.customers.put(&mut wtxn, customer.as_bytes(), &rec)?;
        wtxn.commit()?;
        self.fs.committed();
        let dir = self.customer_dir(customer);
        for f in &files {
            let _ = self.fs.remove_file(&dir.join(f));
        }
        Ok((files.len() as u64, rec))
    }

    /// BLAKE3(nonce || payload) of an object, read from disk now.
    pub fn audit(
        &self,
        customer: &NodeId,
        name: &str,
        nonce: &[u8],
    ) -> Result<[u8; 32], StoreError> {
        if nonce.len() < 16 || nonce.len() > 64 {
            return Err(StoreError::BadRequest(
                "an audit nonce is 16 to 64 bytes".into(),
            ));
        }
        let (_, path) = self.get(customer, name)?;
        let mut h = blake3::Hasher::new();
        h.update(nonce);
        let mut f = File::open(&path).map_err(|e| io_err("opening an object", e))?;
        let mut buf = vec![0u8; 64 << 10];
        loop {
            let n = f
                .read(&mut buf)
                .map_err(|e| io_err("reading an object", e))?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
        }
        Ok(*h.finalize().as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bitdust_crypto::Identity;
    use std::io::Write;

    /// Writes `data` to a new file at `path` and fsyncs it.
    fn write_durable(path: &Path, data: &[u8]) -> Result<(), StoreError> {
        let mut f = File::create(path).map_err(|e| io_err("creating a file", e))?;
        f.write_all(data).map_err(|e| io_err("writing a file", e))?;
        f.sync_all().map_err(|e| io_err("fsync of a file", e))
    }

    const LIMITS: Limits = Limits {
        capacity: 1 << 20,
        max_object_size: 1 << 20,
        max_customers: 2,
        unused_secs: 3600,
        max_unused_per_address: 2,
        max_services_per_address: 100,
    };

    const HOME: std::net::IpAddr = std::net::IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 1));

    fn ids(n: usize) -> Vec<NodeId> {
        (0..n).map(|_| Identity::generate().node_id()).collect()
    }

    #[test]
    fn one_address_holds_at_most_two_unused_services_and_they_expire() {
        let dir = tempfile::tempdir().unwrap();
        let limits = Limits {
            max_customers: 100,
            ..LIMITS
        };
        let store = Store::open(dir.path(), limits).unwrap();
        let c = ids(5);
        let v6 = |last: u16| {
            std::net::IpAddr::V6(std::net::Ipv6Addr::new(0x2001, 0xdb8, 1, 2, 0, 0, 0, last))
        };
        let t0 = 1_000_000;
        store.request_service_at(&c[0], 100, 2, HOME, t0).unwrap();
        store.request_service_at(&c[1], 100, 2, HOME, t0).unwrap();
        // A third identity from the same host is refused, and says why.
        let e = store
            .request_service_at(&c[2], 100, 2, HOME, t0 + 1)
            .unwrap_err();
        assert!(
            matches!(e, StoreError::Refused(ref m) if m.contains("store nothing yet")),
            "{e}"
        );
        // Asking again (a resize) is not a new service.
        store
            .request_service_at(&c[0], 200, 2, HOME, t0 + 1)
            .unwrap();
        // Once one of them stores something, it no longer counts.
        put(&store, &c[0], "o", b"data").unwrap();
        store
            .request_service_at(&c[2], 100, 2, HOME, t0 + 2)
            .unwrap();
        // One IPv6 /64 is one address.
        store.request_service_at(&c[3], 100, 2, v6(1), t0).unwrap();
        store.request_service_at(&c[4], 100, 2, v6(2), t0).unwrap();
        let extra = Identity::generate().node_id();
        assert!(store.request_service_at(&extra, 100, 2, v6(3), t0).is_err());
        // After unused_secs the unused services end; the used one stays.
        store
            .request_service_at(&extra, 100, 2, v6(3), t0 + LIMITS.unused_secs)
            .unwrap();
        assert!(store.customer(&c[3]).unwrap().is_none());
        assert!(store.customer(&c[4]).unwrap().is_none());
        assert!(store.customer(&c[1]).unwrap().is_none());
        assert!(store.customer(&c[0]).unwrap().is_some());
        assert!(store.customer(&extra).unwrap().is_some());
    }

    #[test]
    fn one_address_holds_at_most_its_share_of_services_even_when_each_stores_a_byte() {
        let dir = tempfile::tempdir().unwrap();
        let limits = Limits {
            max_customers: 100,
            max_unused_per_address: 100,
            max_services_per_address: 3,
            ..LIMITS
        };
        let store = Store::open(dir.path(), limits).unwrap();
        let c = ids(5);
        for id in &c[..3] {
            store.request_service_at(id, 100, 2, HOME, 0).unwrap();
            put(&store, id, "o", b"x").unwrap();
        }
        let e = store
            .request_service_at(&c[3], 100, 2, HOME, 1)
            .unwrap_err();
        assert!(
            matches!(e, StoreError::Refused(ref m) if m.contains("the most one address may")),
            "{e}"
        );
        // A resize of a held service is not a new one; another address
        // is served.
        store.request_service_at(&c[0], 200, 2, HOME, 1).unwrap();
        let other = std::net::IpAddr::V4(std::net::Ipv4Addr::new(198, 51, 100, 7));
        store.request_service_at(&c[4], 100, 2, other, 1).unwrap();
        // A cancelled service makes room.
        store.cancel_service(&c[1]).unwrap();
        store.request_service_at(&c[3], 100, 2, HOME, 2).unwrap();
    }

    #[test]
    fn an_unused_service_with_a_put_in_flight_does_not_expire() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), LIMITS).unwrap();
        let c = ids(2);
        store.request_service_at(&c[0], 100, 2, HOME, 0).unwrap();
        let data = b"slow upload";
        let ticket = store
            .begin_put(&c[0], "o", data.len() as u64, blake3::hash(data).as_bytes())
            .unwrap();
        // Long past unused_secs, another customer's request sweeps.
        assert_eq!(store.expire_unused().unwrap(), 0);
        write_durable(&ticket.tmp_path, data).unwrap();
        store.finish_put(ticket).unwrap();
        assert_eq!(store.customer(&c[0]).unwrap().unwrap().objects, 1);
    }

    fn put(
        store: &Store,
        c: &NodeId,
        name: &str,
        data: &[u8],
    ) -> Result<CustomerRecord, StoreError> {
        let hash = blake3::hash(data);
        let t = store.begin_put(c, name, data.len() as u64, hash.as_bytes())?;
        write_durable(&t.tmp_path, data)?;
        store.finish_put(t)
    }

    #[test]
    fn puts_in_flight_count_against_the_quota() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open(tmp.path(), LIMITS).unwrap();
        let a = Identity::generate().node_id();
        let b = Identity::generate().node_id();
        store.request_service(&a, 700, 7, HOME).unwrap(); // quota 200
        store.request_service(&b, 700, 7, HOME).unwrap();
        let h = [0u8; 32];
        // Two concurrent puts of 150 bytes: the second is refused before
        // its payload is read, though nothing is stored yet.
        let first = store.begin_put(&a, "x/1", 150, &h).unwrap();
        let e = store.begin_put(&a, "x/2", 150, &h).unwrap_err();
        assert!(
            matches!(e, StoreError::QuotaExceeded { would: 300, .. }),
            "{e}"
        );
        // Another customer's quota is its own.
        let other = store.begin_put(&b, "x/1", 150, &h).unwrap();
        // An aborted put gives its share back; so does a finished one,
        // which then counts as stored.
        store.abort_put(first);
        let second = store.begin_put(&a, "x/2", 150, &h).unwrap();
        write_durable(&second.tmp_path, &[9u8; 150]).unwrap();
        let second = PutTicket {
            hash: *blake3::hash(&[9u8; 150]).as_bytes(),
            ..second
        };
        assert_eq!(store.finish_put(second).unwrap().used, 150);
        assert!(store.begin_put(&a, "x/3", 51, &h).is_err());
        store.begin_put(&a, "x/3", 50, &h).unwrap();
        drop(other);
        assert!(store.reserved.lock().unwrap().get(&b).is_none());
    }

    #[test]
    fn puts_committed_together_each_get_their_own_answer() {
        let tmp = tempfile::tempdir().unwrap();
        let limits = Limits {
            max_customers: 3,
            ..LIMITS
        };
        let store = Store::open(tmp.path(), limits).unwrap();
        let [a, b, gone] = [(); 3].map(|()| Identity::generate().node_id());
        for (i, c) in [&a, &b, &gone].into_iter().enumerate() {
            let from = std::net::IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 10 + i as u8));
            store.request_service(c, 700, 7, from).unwrap(); // quota 200
        }
        let landed = |c: &NodeId, name: &str, data: &[u8]| {
            let t = store
                .begin_put(c, name, data.len() as u64, blake3::hash(data).as_bytes())
                .unwrap();
            write_durable(&t.tmp_path, data).unwrap();
            t
        };
        let group = vec![
            landed(&a, "x/1", &[1; 100]),
            landed(&b, "y/1", &[2; 50]),
            // The same name again in the same group: the later one stands.
            landed(&a, "x/1", &[3; 60]),
            landed(&gone, "z/1", &[4; 10]),
        ];
        store.cancel_service(&gone).unwrap();
        let results = store.finish_puts(group);
        assert_eq!(results.len(), 4);
        assert_eq!(results[0].as_ref().unwrap().used, 100);
        assert_eq!(results[1].as_ref().unwrap().used, 50);
        assert_eq!(results[2].as_ref().unwrap().used, 60);
        // Its customer's service ended while it landed (its directory
        // went with it).
        assert!(results[3].is_err(), "{:?}", results[3]);
        let (rec, path) = store.get(&a, "x/1").unwrap();
        assert_eq!((rec.size, std::fs::read(path).unwrap()), (60, vec![3; 60]));
        let a_rec = store.customer(&a).unwrap().unwrap();
        assert_eq!((a_rec.used, a_rec.objects), (60, 1));
        // The replaced payload's file is gone; nothing is left in tmp/.
        assert_eq!(
            std::fs::read_dir(store.customer_dir(&a)).unwrap().count(),
            1
        );
        assert_eq!(
            std::fs::read_dir(tmp.path().join("tmp")).unwrap().count(),
            0
        );
        assert!(store.reserved.lock().unwrap().is_empty());
    }

    #[test]
    fn service_quota_put_get_list_delete_audit_cancel() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open(tmp.path(), LIMITS).unwrap();
        let a = Identity::generate().node_id();
        let b = Identity::generate().node_id();
        // Not a customer yet.
        assert!(matches!(
            put(&store, &a, "x", b"1"),
            Err(StoreError::NotACustomer(_))
        ));
        // quota = needed / suppliers x 2 = 700 / 7 x 2 = 200.
        let rec = store.request_service(&a, 700, 7, HOME).unwrap();
        assert_eq!(rec.quota, 200);
        // Over capacity: refused with a reason.
        let e = store.request_service(&b, 10 << 20, 2, HOME).unwrap_err();
        assert!(
            matches!(e, StoreError::Refused(ref m) if m.contains("free")),
            "{e}"
        );
        put(&store, &a, "b/1/0", &[1u8; 100]).unwrap();
        put(&store, &a, "b/1/1", &[2u8; 50]).unwrap();
        let e = put(&store, &a, "b/1/2", &[3u8; 51]).unwrap_err();
        assert!(
            matches!(e, StoreError::QuotaExceeded { would: 201, .. }),
            "{e}"
        );
        // Replacing an object counts only the difference.
        let rec = put(&store, &a, "b/1/1", &[4u8; 100]).unwrap();
        assert_eq!((rec.used, rec.objects), (200, 2));
        let (o, path) = store.get(&a, "b/1/1").unwrap();
        assert_eq!(std::fs::read(path).unwrap(), vec![4u8; 100]);
        assert_eq!(o.hash, *blake3::hash(&[4u8; 100]).as_bytes());
        let (list, more) = store.list(&a, "b/", "", 1).unwrap();
        assert_eq!((list.len(), more, list[0].0.as_str()), (1, true, "b/1/0"));
        let (list, more) = store.list(&a, "b/", "b/1/0", 10).unwrap();
        assert_eq!((list.len(), more, list[0].0.as_str()), (1, false, "b/1/1"));
        let nonce = [7u8; 16];
        let mut h = blake3::Hasher::new();
        h.update(&nonce);
        h.update(&[1u8; 100]);
        assert_eq!(
            store.audit(&a, "b/1/0", &nonce).unwrap(),
            *h.finalize().as_bytes()
        );
        // Another customer sees nothing of a's.
        store.request_service(&b, 100, 2, HOME).unwrap();
        assert!(matches!(
            store.get(&b, "b/1/0"),
            Err(StoreError::NotFound(_))
        ));
        assert!(store.list(&b, "", "", 10).unwrap().0.is_empty());
        assert_eq!(store.delete(&b, &[], "b/").unwrap().0, 0);
        assert_eq!(store.list(&a, "", "", 10).unwrap().0.len(), 2);
        // Delete by prefix.
        let (n, rec) = store.delete(&a, &[], "b/1/").unwrap();
        assert_eq!((n, rec.used, rec.objects), (2, 0, 0));
        put(&store, &a, "m/1", b"manifest").unwrap();
        assert_eq!(store.cancel_service(&a).unwrap(), 1);
        assert!(store.customer(&a).unwrap().is_none());
        assert!(!tmp.path().join("objects").join(a.to_string()).exists());
    }

    #[test]
    fn bad_names_and_hashes_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open(tmp.path(), LIMITS).unwrap();
        let a = Identity::generate().node_id();
        store.request_service(&a, 1000, 2, HOME).unwrap();
        for bad in ["", "../x", "a//b", "/a", "a/./b", "a b", "é"] {
            assert!(
                matches!(put(&store, &a, bad, b"x"), Err(StoreError::BadRequest(_))),
                "{bad:?}"
            );
        }
        assert!(store.begin_put(&a, "x", 1, &[0u8; 5]).is_err());
        assert!(store.begin_put(&a, "x", 2 << 20, &[0u8; 32]).is_err());
    }

    #[test]
    fn recovery_drops_what_a_crash_left_half_done() {
        let tmp = tempfile::tempdir().unwrap();
        let a = Identity::generate().node_id();
        {
            let store = Store::open(tmp.path(), LIMITS).unwrap();
            store.request_service(&a, 1000, 2, HOME).unwrap();
            put(&store, &a, "keep", b"kept").unwrap();
            put(&store, &a, "lose", b"lost").unwrap();
            let (_, lose) = store.get(&a, "lose").unwrap();
            std::fs::remove_file(lose).unwrap();
            // A renamed file the index never pointed at, and a temp file.
            let dir = tmp.path().join("objects").join(a.to_string());
            std::fs::write(dir.join("orphan"), b"x").unwrap();
            std::fs::write(tmp.path().join("tmp/partial"), b"x").unwrap();
        }
        let store = Store::open(tmp.path(), LIMITS).unwrap();
        let dir = tmp.path().join("objects").join(a.to_string());
        assert!(!dir.join("orphan").exists());
        assert!(!tmp.path().join("tmp/partial").exists());
        assert!(matches!(
            store.get(&a, "lose"),
            Err(StoreError::NotFound(_))
        ));
        let rec = store.customer(&a).unwrap().unwrap();
        assert_eq!((rec.used, rec.objects), (4, 1));
        // A second store on the same directory is refused.
        assert!(Store::open(tmp.path(), LIMITS).is_err());
    }
}
