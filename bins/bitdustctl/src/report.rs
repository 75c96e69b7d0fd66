//! What the daemon commands print, one typed value each: `--json` prints it
//! with serde and the text form is its `Display`, so the two forms come
//! from one list of fields and cannot disagree. Each is made from the
//! daemon's reply in one `From`.

use std::fmt;

use bitdust_proto::customer::v1 as pb;
use bitdust_proto::rebuilder::v1 as rpb;
use serde::Serialize;

/// Prints `r`: JSON with `json`, else its text unless `quiet`.
pub(crate) fn emit<R: Serialize + fmt::Display>(r: &R, json: bool, quiet: bool) {
    if json {
        // These types hold only strings, numbers, booleans and lists.
        println!("{}", serde_json::to_string(r).unwrap_or_default());
    } else if !quiet {
        print!("{r}");
    }
}

/// A byte count for people.
pub(crate) fn gib(b: u64) -> String {
    let b = b as f64;
    if b >= (1u64 << 30) as f64 {
        format!("{:.2} GiB", b / (1u64 << 30) as f64)
    } else if b >= (1u64 << 20) as f64 {
        format!("{:.1} MiB", b / (1u64 << 20) as f64)
    } else if b >= 1024.0 {
        format!("{:.1} KiB", b / 1024.0)
    } else {
        format!("{b} B")
    }
}

/// How long ago a Unix time was, for people.
pub(crate) fn when(unix: u64) -> String {
    if unix == 0 {
        return "never".into();
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let ago = now.saturating_sub(unix);
    match ago {
        0..=59 => format!("{ago}s ago"),
        60..=3599 => format!("{}m ago", ago / 60),
        3600..=86399 => format!("{}h ago", ago / 3600),
        _ => format!("{}d ago", ago / 86400),
    }
}

/// `bitdustctl status`.
#[derive(Serialize)]
pub(crate) struct Status {
    node_id: String,
    positions: u32,
    hired: u32,
    reachable: u32,
    needed_bytes: u64,
    backups: u32,
    versions: u32,
    missing_fragments: u64,
    scheme: String,
    tolerance: u32,
    recovering: bool,
    recovery: String,
    /// The supplier-store on this machine, if its socket answers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) supplier: Option<LocalSupplier>,
    /// The dht-peer on this machine, if its socket answers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) dht: Option<LocalDht>,
}

/// The supplier-store on this machine, as `bitdustctl status` shows it.
#[derive(Serialize)]
pub(crate) struct LocalSupplier {
    pub(crate) node_id: String,
    /// The address its offer names.
    pub(crate) address: String,
    /// Routers it holds a reservation on.
    pub(crate) routers: Vec<String>,
    /// Whether strangers reach it, as its routers found.
    pub(crate) reachability: String,
    /// The port mapping its home router keeps, or why none (empty when
    /// none is asked for).
    pub(crate) port_mapping: String,
    /// Connections other nodes hold open to it.
    pub(crate) connections: u32,
    /// Connections it refused since it started, at its cap.
    pub(crate) refused_connections: u64,
}

impl fmt::Display for LocalSupplier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let reach = if self.reachability.is_empty() {
            "no router asked (its address is configured)"
        } else {
            &self.reachability
        };
        writeln!(f, "supplier:   {} on this machine: {reach}", self.node_id)?;
        if !self.address.is_empty() {
            writeln!(f, "            offered at {}", self.address)?;
        }
        for r in &self.routers {
            writeln!(f, "            through router {r}")?;
        }
        if !self.port_mapping.is_empty() {
            writeln!(f, "            port mapping: {}", self.port_mapping)?;
        }
        write!(
            f,
            "            {} connections from other nodes",
            self.connections
        )?;
        if self.refused_connections > 0 {
            write!(
                f,
                "; {} refused since it started because it held as many as it keeps",
                self.refused_connections
            )?;
        }
        writeln!(f)
    }
}

/// The dht-peer on this machine, as `bitdustctl status` shows it.
#[derive(Serialize)]
pub(crate) struct LocalDht {
    pub(crate) node_id: String,
    /// The address it gives others (empty: it only asks).
    pub(crate) address: String,
    /// Whether strangers reach it, as its peers' dial-backs found (empty
    /// when its address is configured).
    pub(crate) reachability: String,
    /// The port mapping its home router keeps, or why none.
    pub(crate) port_mapping: String,
}

impl fmt::Display for LocalDht {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let reach = if self.reachability.is_empty() {
            "not checked (its address is configured)"
        } else {
            &self.reachability
        };
        writeln!(f, "dht-peer:   {} on this machine: {reach}", self.node_id)?;
        if self.address.is_empty() {
            writeln!(
                f,
                "            only asks: peers keep it out of their routing tables"
            )?;
        } else {
            writeln!(f, "            reached at {}", self.address)?;
        }
        if !self.port_mapping.is_empty() {
            writeln!(f, "            port mapping: {}", self.port_mapping)?;
        }
        Ok(())
    }
}

/// `bitdustctl status` on a machine with a supplier-store and no
/// customer-agent: the supplier-store, and the dht-peer if it answers.
#[derive(Serialize)]
pub(crate) struct SupplierOnly {
    pub(crate) supplier: LocalSupplier,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) dht: Option<LocalDht>,
}

impl fmt::Display for SupplierOnly {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.supplier)?;
        if let Some(d) = &self.dht {
            write!(f, "{d}")?;
        }
        Ok(())
    }
}

impl From<pb::StatusReply> for Status {
    fn from(s: pb::StatusReply) -> Self {
        Status {
            node_id: s.node_id,
            positions: s.positions,
            hired: s.hired,
            reachable: s.reachable,
            needed_bytes: s.needed_bytes,
            backups: s.backups,
            versions: s.versions,
            missing_fragments: s.missing_fragments,
            scheme: s.scheme,
            tolerance: s.tolerance,
            recovering: s.recovering,
            recovery: s.recovery,
            supplier: None,
            dht: None,
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "node id:    {}", self.node_id)?;
        if self.recovering {
            writeln!(
                f,
                "recovering: {} (nothing is hired or published until the old backups are found; bitdustctl start-afresh gives them up)",
                self.recovery
            )?;
        }
        writeln!(
            f,
            "suppliers:  {} of {} positions hired, {} reachable (the {} scheme survives losing {})",
            self.hired, self.positions, self.reachable, self.scheme, self.tolerance
        )?;
        writeln!(f, "space:      {} needed", gib(self.needed_bytes))?;
        writeln!(
            f,
            "backups:    {} ({} versions)",
            self.backups, self.versions
        )?;
        if self.missing_fragments > 0 {
            writeln!(
                f,
                "repair:     {} fragments await repair",
                self.missing_fragments
            )?;
        }
        if let Some(s) = &self.supplier {
            write!(f, "{s}")?;
        }
        if let Some(d) = &self.dht {
            write!(f, "{d}")?;
        }
        Ok(())
    }
}

/// `bitdustctl start-afresh --yes`.
#[derive(Serialize)]
pub(crate) struct GaveUp {
    gave_up: String,
}

impl From<pb::StartAfreshReply> for GaveUp {
    fn from(r: pb::StartAfreshReply) -> Self {
        GaveUp { gave_up: r.gave_up }
    }
}

impl fmt::Display for GaveUp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{}", self.gave_up)
    }
}

/// `bitdustctl backup`.
#[derive(Serialize)]
pub(crate) struct BackedUp {
    backup_id: String,
    version: u64,
    input_bytes: u64,
    stored_bytes: u64,
    blocks: u64,
    files: u32,
    pub(crate) failed_positions: Vec<u32>,
    pub(crate) warnings: Vec<String>,
    pruned_versions: Vec<u64>,
    /// Wall time of the whole run, as this process saw it.
    pub(crate) seconds: f64,
    /// A snapshot's counts (`--snapshot`).
    #[serde(skip_serializing_if = "Option::is_none")]
    snapshot: Option<SnapshotCounts>,
    /// Snapshots: the packs deleted after `pruned_versions` went.
    packs_deleted: u64,
    bytes_freed: u64,
    packs_pending: u64,
    /// Snapshots: where the agent's time went.
    #[serde(skip_serializing_if = "Option::is_none")]
    stages: Option<Stages>,
}

/// How a snapshot found its files and what it added.
#[derive(Serialize)]
pub(crate) struct SnapshotCounts {
    files_new: u64,
    files_changed: u64,
    files_unchanged: u64,
    bytes_read: u64,
    chunks_added: u64,
    added_bytes: u64,
    added_packed_bytes: u64,
    added_stored_bytes: u64,
    packs_added: u64,
    /// Files whose size or mtime differed after reading: stored as read,
    /// flagged, and named in the warnings.
    changed_while_read: u64,
    /// Names stored as hard links to an earlier name.
    hard_links: u64,
    /// FIFOs and device nodes.
    specials: u64,
    /// Entries whose nodes their directory's record gave whole (no
    /// lookup, no node built).
    entries_reused: u64,
}

impl From<bitdust_proto::format::v1::SnapshotStats> for SnapshotCounts {
    fn from(s: bitdust_proto::format::v1::SnapshotStats) -> Self {
        SnapshotCounts {
            files_new: s.files_new,
            files_changed: s.files_changed,
            files_unchanged: s.files_unchanged,
            bytes_read: s.bytes_read,
            chunks_added: s.chunks_added,
            added_bytes: s.added_plain,
            added_packed_bytes: s.added_packed,
            added_stored_bytes: s.added_stored,
            packs_added: s.packs_added,
            changed_while_read: s.changed_while_read,
            hard_links: s.hard_links,
            specials: s.specials,
            entries_reused: s.entries_reused,
        }
    }
}

impl From<pb::BackupDone> for BackedUp {
    fn from(d: pb::BackupDone) -> Self {
        BackedUp {
            backup_id: d.backup_id,
            version: d.version,
            input_bytes: d.input_bytes,
            stored_bytes: d.stored_bytes,
            blocks: d.blocks,
            files: d.files,
            failed_positions: d.failed_positions,
            warnings: d.warnings,
            pruned_versions: d.pruned_versions,
            seconds: 0.0,
            snapshot: d.snapshot.map(SnapshotCounts::from),
            packs_deleted: d.packs_deleted,
            bytes_freed: d.bytes_freed,
            packs_pending: d.packs_pending,
            stages: d.stages.map(Stages::from),
        }
    }
}

impl fmt::Display for BackedUp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Some(s) = &self.snapshot else {
            return writeln!(
                f,
                "backed up {} ({} files) as {}@{}: {} blocks, {} stored",
                gib(self.input_bytes),
                self.files,
                self.backup_id,
                self.version,
                self.blocks,
                gib(self.stored_bytes)
            );
        };
        writeln!(
            f,
            "snapshot {}@{}: {} ({} files: {} new, {} changed, {} unchanged); read {}, added {} in {} chunks -> {} packed -> {} stored in {} packs, in {:.1}s",
            self.backup_id,
            self.version,
            gib(self.input_bytes),
            self.files,
            s.files_new,
            s.files_changed,
            s.files_unchanged,
            gib(s.bytes_read),
            gib(s.added_bytes),
            s.chunks_added,
            gib(s.added_packed_bytes),
            gib(s.added_stored_bytes),
            s.packs_added,
            self.seconds
        )
    }
}

/// `bitdustctl restore`.
#[derive(Serialize)]
pub(crate) struct Restored {
    backup_id: String,
    version: u64,
    bytes: u64,
    files: u32,
    fragments_fetched: u64,
    blocks_repaired: u64,
    stale_fragments: u64,
    /// Snapshots: the packs fetched, and their fragments' bytes.
    packs_fetched: u64,
    bytes_fetched: u64,
    /// Fragments read around through parity because they came late.
    fragments_read_around: u64,
    /// Positions whose supplier the restore left out (late or away).
    positions_left_out: Vec<u32>,
    /// Of those, the ones that answered nothing while most others did.
    positions_silent: Vec<u32>,
    /// Files whose content the agent wrote into the files this process
    /// created and passed to it (the rest streamed).
    files_written_by_agent: u64,
    pub(crate) warnings: Vec<String>,
    to: String,
    /// Wall time of the whole restore, as this process saw it.
    pub(crate) seconds: f64,
}

impl Restored {
    /// The agent's result, with what this process extracted into `to`.
    pub(crate) fn new(
        d: pb::RestoreDone,
        to: &std::path::Path,
        extracted: &bitdust_pipeline::RestoreReport,
    ) -> Self {
        let mut warnings = d.warnings;
        warnings.extend(extracted.skipped.iter().cloned());
        Restored {
            backup_id: d.backup_id,
            version: d.version,
            bytes: extracted.bytes,
            files: extracted.files as u32,
            fragments_fetched: d.fragments_fetched,
            blocks_repaired: d.blocks_repaired,
            stale_fragments: d.stale_fragments,
            packs_fetched: d.packs_fetched,
            bytes_fetched: d.bytes_fetched,
            fragments_read_around: d.fragments_read_around,
            positions_left_out: d.positions_left_out,
            positions_silent: d.positions_silent,
            files_written_by_agent: d.files_written_in_place,
            warnings,
            to: to.display().to_string(),
            seconds: 0.0,
        }
    }
}

impl fmt::Display for Restored {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "restored {}@{} into {}: {} files, {}, {} fragments fetched, {} blocks rebuilt from parity",
            self.backup_id,
            self.version,
            self.to,
            self.files,
            gib(self.bytes),
            self.fragments_fetched,
            self.blocks_repaired,
        )?;
        if self.packs_fetched > 0 {
            write!(
                f,
                ", {} packs read ({} of fragments)",
                self.packs_fetched,
                gib(self.bytes_fetched)
            )?;
        }
        if self.stale_fragments > 0 {
            write!(
                f,
                ", {} stale fragments of a failed attempt read as lost",
                self.stale_fragments
            )?;
        }
        if !self.positions_left_out.is_empty() {
            let ps: Vec<String> = self.positions_left_out.iter().map(u32::to_string).collect();
            write!(
                f,
                ", positions {} not waited for ({} fragments read around through parity",
                ps.join(", "),
                self.fragments_read_around
            )?;
            if !self.positions_silent.is_empty() {
                let ps: Vec<String> = self.positions_silent.iter().map(u32::to_string).collect();
                write!(f, "; {} answered nothing", ps.join(", "))?;
            }
            write!(f, ")")?;
        }
        writeln!(f, ", in {:.1}s", self.seconds)
    }
}

/// `bitdustctl list`: every backup the caller may see.
#[derive(Serialize)]
#[serde(transparent)]
pub(crate) struct Listing(Vec<Backup>);

#[derive(Serialize)]
struct Backup {
    backup_id: String,
    /// Empty for the system's, else `uid N`.
    owner: String,
    paths: Vec<String>,
    versions: Vec<Version>,
}

#[derive(Serialize)]
struct Version {
    version: u64,
    time: u64,
    input_bytes: u64,
    stored_bytes: u64,
    blocks: u64,
    scheme: String,
    suppliers: u32,
    missing_fragments: u64,
    /// Snapshots: the packs its root references, and its counts.
    #[serde(skip_serializing_if = "Option::is_none")]
    packs: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    snapshot: Option<SnapshotCounts>,
}

impl From<pb::ListReply> for Listing {
    fn from(l: pb::ListReply) -> Self {
        Listing(
            l.backups
                .into_iter()
                .map(|b| Backup {
                    backup_id: b.backup_id,
                    owner: b.owner,
                    paths: b.paths,
                    versions: b
                        .versions
                        .into_iter()
                        .map(|v| Version {
                            version: v.version,
                            time: v.time,
                            input_bytes: v.input_bytes,
                            stored_bytes: v.stored_bytes,
                            blocks: v.blocks,
                            scheme: v.scheme,
                            suppliers: v.suppliers,
                            missing_fragments: v.missing_fragments,
                            packs: v.snapshot.is_some().then_some(v.packs),
                            snapshot: v.snapshot.map(SnapshotCounts::from),
                        })
                        .collect(),
                })
                .collect(),
        )
    }
}

impl fmt::Display for Listing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            writeln!(f, "no backups yet")?;
        }
        for b in &self.0 {
            let owner = if b.owner.is_empty() {
                String::new()
            } else {
                format!("  ({})", b.owner)
            };
            writeln!(f, "{}  {}{owner}", b.backup_id, b.paths.join(" "))?;
            for v in &b.versions {
                let missing = if v.missing_fragments > 0 {
                    format!(", {} fragments await repair", v.missing_fragments)
                } else {
                    String::new()
                };
                if let (Some(packs), Some(s)) = (v.packs, &v.snapshot) {
                    writeln!(
                        f,
                        "  @{:<4} {:>10}  snapshot of {}, {} added, {} packs, {} over {}{missing}",
                        v.version,
                        when(v.time),
                        gib(v.input_bytes),
                        gib(s.added_stored_bytes),
                        packs,
                        v.scheme,
                        v.suppliers
                    )?;
                    continue;
                }
                writeln!(
                    f,
                    "  @{:<4} {:>10}  {} input, {} stored, {} blocks, {} over {}{missing}",
                    v.version,
                    when(v.time),
                    gib(v.input_bytes),
                    gib(v.stored_bytes),
                    v.blocks,
                    v.scheme,
                    v.suppliers
                )?;
            }
        }
        Ok(())
    }
}

/// `bitdustctl delete`.
#[derive(Serialize)]
pub(crate) struct Deleted {
    deleted_versions: Vec<u64>,
    packs_deleted: u64,
    bytes_freed: u64,
    packs_pending: u64,
}

impl From<pb::DeleteReply> for Deleted {
    fn from(d: pb::DeleteReply) -> Self {
        Deleted {
            deleted_versions: d.deleted_versions,
            packs_deleted: d.packs_deleted,
            bytes_freed: d.bytes_freed,
            packs_pending: d.packs_pending,
        }
    }
}

impl fmt::Display for Deleted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "deleted versions {:?}", self.deleted_versions)?;
        if self.packs_deleted + self.packs_pending > 0 {
            writeln!(
                f,
                "deleted {} packs no snapshot references ({}); {} wait for suppliers that are away",
                self.packs_deleted,
                gib(self.bytes_freed),
                self.packs_pending
            )?;
        }
        Ok(())
    }
}

/// One supplier, as `bitdustctl suppliers` lists it (a line) and as
/// `suppliers hire` reports it.
#[derive(Serialize)]
pub(crate) struct Supplier {
    position: u32,
    node_id: String,
    address: String,
    reachable: bool,
    last_seen: u64,
    failures: u64,
    audits_passed: u64,
    audits_failed: u64,
    quota_bytes: u64,
    used_bytes: u64,
    last_error: String,
    /// "direct", "router NODEID", or empty (no connection now).
    path: String,
}

impl From<pb::SupplierInfo> for Supplier {
    fn from(s: pb::SupplierInfo) -> Self {
        Supplier {
            position: s.position,
            node_id: s.node_id,
            address: s.address,
            reachable: s.reachable,
            last_seen: s.last_seen,
            failures: s.failures,
            audits_passed: s.audits_passed,
            audits_failed: s.audits_failed,
            quota_bytes: s.quota_bytes,
            used_bytes: s.used_bytes,
            last_error: s.last_error,
            path: s.path,
        }
    }
}

impl fmt::Display for Supplier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "  {:>2}  {}  {:<21}  {:<11}  seen {:<8}  {} of {} used",
            self.position,
            self.node_id,
            self.address,
            if self.reachable {
                "reachable"
            } else {
                "UNREACHABLE"
            },
            when(self.last_seen),
            gib(self.used_bytes),
            gib(self.quota_bytes)
        )?;
        if let Some(router) = self.path.strip_prefix("router ") {
            writeln!(f, "      through router {router}")?;
        }
        Ok(())
    }
}

/// `bitdustctl suppliers`.
#[derive(Serialize)]
pub(crate) struct Suppliers {
    positions: u32,
    suppliers: Vec<Supplier>,
}

impl From<pb::ListSuppliersReply> for Suppliers {
    fn from(l: pb::ListSuppliersReply) -> Self {
        Suppliers {
            positions: l.positions,
            suppliers: l.suppliers.into_iter().map(Supplier::from).collect(),
        }
    }
}

impl fmt::Display for Suppliers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{} of {} positions hired",
            self.suppliers.len(),
            self.positions
        )?;
        self.suppliers.iter().try_for_each(|s| write!(f, "{s}"))
    }
}

/// One supplier just hired (`bitdustctl suppliers hire`, one position).
#[derive(Serialize)]
#[serde(transparent)]
pub(crate) struct HiredOne(pub(crate) Supplier);

impl fmt::Display for HiredOne {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = &self.0;
        writeln!(
            f,
            "hired {} at {} for position {} (quota {})",
            s.node_id,
            s.address,
            s.position,
            gib(s.quota_bytes)
        )
    }
}

/// Suppliers just hired (`bitdustctl suppliers hire` with no address and
/// no position: every free position).
#[derive(Serialize)]
pub(crate) struct Hired {
    pub(crate) hired: Vec<HiredOne>,
}

impl fmt::Display for Hired {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.hired.iter().try_for_each(|h| write!(f, "{h}"))
    }
}

/// `bitdustctl suppliers fire`.
#[derive(Serialize)]
pub(crate) struct Fired {
    position: u32,
    node_id: String,
    objects_deleted: u64,
}

impl Fired {
    pub(crate) fn new(position: u32, r: pb::FireSupplierReply) -> Self {
        Fired {
            position,
            node_id: r.node_id,
            objects_deleted: r.objects_deleted,
        }
    }
}

impl fmt::Display for Fired {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "fired {} from position {}; it deleted {} objects",
            self.node_id, self.position, self.objects_deleted
        )
    }
}

/// `bitdustctl rebuild status`.
#[derive(Serialize)]
pub(crate) struct RebuildStatus {
    positions: u32,
    hired: u32,
    reachable: u32,
    fire_threshold: u32,
    last_check: u64,
    last_error: String,
    suppliers_fired: u64,
    suppliers_hired: u64,
    blocks_rebuilt: u64,
    bytes_uploaded: u64,
    /// Since the rebuilder started: fragments read around for being late.
    fragments_read_around: u64,
    queue: Vec<RebuildJob>,
}

#[derive(Serialize)]
struct RebuildJob {
    backup_id: String,
    version: u64,
    position: u32,
    target: String,
    blocks: u64,
    next_block: u64,
}

impl From<rpb::StatusReply> for RebuildStatus {
    fn from(s: rpb::StatusReply) -> Self {
        RebuildStatus {
            positions: s.positions,
            hired: s.hired,
            reachable: s.reachable,
            fire_threshold: s.fire_threshold,
            last_check: s.last_check,
            last_error: s.last_error,
            suppliers_fired: s.suppliers_fired,
            suppliers_hired: s.suppliers_hired,
            blocks_rebuilt: s.blocks_rebuilt,
            bytes_uploaded: s.bytes_uploaded,
            fragments_read_around: s.fragments_read_around,
            queue: s
                .queue
                .into_iter()
                .map(|j| RebuildJob {
                    backup_id: j.backup_id,
                    version: j.version,
                    position: j.position,
                    target: j.target,
                    blocks: j.blocks,
                    next_block: j.next_block,
                })
                .collect(),
        }
    }
}

impl fmt::Display for RebuildStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "suppliers: {} of {} hired, {} reachable at the last check ({}); fire threshold {}",
            self.hired,
            self.positions,
            self.reachable,
            when(self.last_check),
            self.fire_threshold
        )?;
        writeln!(
            f,
            "since start of its state: {} fired, {} hired, {} blocks rebuilt, {} uploaded",
            self.suppliers_fired,
            self.suppliers_hired,
            self.blocks_rebuilt,
            gib(self.bytes_uploaded)
        )?;
        if self.fragments_read_around > 0 {
            writeln!(
                f,
                "since it started: {} fragments came late and were read around",
                self.fragments_read_around
            )?;
        }
        if !self.last_error.is_empty() {
            writeln!(f, "last error: {}", self.last_error)?;
        }
        if self.queue.is_empty() {
            return writeln!(
                f,
                "queue: empty (every position of every version is complete)"
            );
        }
        writeln!(f, "queue ({} jobs, newest first):", self.queue.len())?;
        for j in &self.queue {
            writeln!(
                f,
                "  {}@{}  position {:>2} -> {}  block {} of {}",
                j.backup_id, j.version, j.position, j.target, j.next_block, j.blocks
            )?;
        }
        Ok(())
    }
}

/// `bitdustctl key export`.
#[derive(Serialize)]
pub(crate) struct KeyExported {
    pub(crate) node_id: String,
    pub(crate) file: String,
}

impl fmt::Display for KeyExported {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "exported the keys of {} to {} (0600); keep it offline",
            self.node_id, self.file
        )
    }
}

/// `bitdustctl key import`.
#[derive(Serialize)]
pub(crate) struct KeyImported {
    pub(crate) node_id: String,
    pub(crate) keys: String,
}

impl fmt::Display for KeyImported {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "imported the keys of {} into {}; start (or restart) the customer-agent to recover its backups",
            self.node_id, self.keys
        )
    }
}

/// `bitdustctl local backup`: one deduplicated snapshot.
#[derive(Serialize)]
pub(crate) struct LocalBackedUp {
    backup_id: String,
    version: u64,
    suppliers: usize,
    scheme: String,
    files: u64,
    directories: u64,
    symlinks: u64,
    content_bytes: u64,
    #[serde(flatten)]
    counts: SnapshotCounts,
    pub(crate) skipped: Vec<String>,
    pub(crate) degraded_positions: Vec<usize>,
    seconds: f64,
    to: String,
    peak_rss_bytes: Option<u64>,
    /// Where the time went: seconds per stage, each stage's threads
    /// together (`--json` only).
    stages: Stages,
}

/// Seconds rounded to the microsecond, as stage times are printed (a
/// stage of a small backup, such as handing its fragments to the
/// connections, can take less than a millisecond).
fn us(s: f64) -> f64 {
    (s * 1e6).round() / 1e6
}

/// [`bitdust_pipeline::stages::StageTimes`], as printed.
#[derive(Serialize)]
struct Stages {
    wall: f64,
    read_and_cut: f64,
    hash_index_pack: f64,
    wait_compress: f64,
    wait_store: f64,
    compress: f64,
    seal: f64,
    store: f64,
    sync: f64,
}

impl From<pb::StageTimes> for Stages {
    fn from(t: pb::StageTimes) -> Self {
        Stages::from(bitdust_pipeline::stages::StageTimes {
            wall: t.wall,
            read_and_cut: t.read_and_cut,
            hash_index_pack: t.hash_index_pack,
            wait_compress: t.wait_compress,
            wait_store: t.wait_store,
            compress: t.compress,
            seal: t.seal,
            store: t.store,
            sync: t.sync,
        })
    }
}

impl From<bitdust_pipeline::stages::StageTimes> for Stages {
    fn from(t: bitdust_pipeline::stages::StageTimes) -> Self {
        Stages {
            wall: us(t.wall),
            read_and_cut: us(t.read_and_cut),
            hash_index_pack: us(t.hash_index_pack),
            wait_compress: us(t.wait_compress),
            wait_store: us(t.wait_store),
            compress: us(t.compress),
            seal: us(t.seal),
            store: us(t.store),
            sync: us(t.sync),
        }
    }
}

impl LocalBackedUp {
    pub(crate) fn new(
        id: bitdust_block::BackupId,
        snapshot: u64,
        opts: &bitdust_pipeline::snapshot::SnapshotOptions,
        r: bitdust_pipeline::snapshot::SnapshotReport,
        to: &std::path::Path,
        seconds: f64,
        peak_rss_bytes: Option<u64>,
    ) -> Self {
        let s = &r.stats;
        LocalBackedUp {
            backup_id: id.to_string(),
            version: snapshot,
            suppliers: opts.suppliers,
            scheme: opts.scheme.to_string(),
            files: s.files,
            directories: s.directories,
            symlinks: s.symlinks,
            content_bytes: s.content_bytes,
            counts: SnapshotCounts::from(*s),
            skipped: r.skipped,
            degraded_positions: r.degraded_positions,
            seconds,
            to: to.display().to_string(),
            peak_rss_bytes,
            stages: r.times.into(),
        }
    }
}

impl fmt::Display for LocalBackedUp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "backup {}@{}: {} files ({} new, {} changed, {} unchanged), {} dirs, {} symlinks, {} bytes ({} entries taken whole from their directory's record); read {} bytes, added {} bytes in {} chunks -> {} packed -> {} stored in {} packs over {} positions ({}) in {:.1}s",
            self.backup_id,
            self.version,
            self.files,
            self.counts.files_new,
            self.counts.files_changed,
            self.counts.files_unchanged,
            self.directories,
            self.symlinks,
            self.content_bytes,
            self.counts.entries_reused,
            self.counts.bytes_read,
            self.counts.added_bytes,
            self.counts.chunks_added,
            self.counts.added_packed_bytes,
            self.counts.added_stored_bytes,
            self.counts.packs_added,
            self.suppliers,
            self.scheme,
            self.seconds
        )?;
        if !self.degraded_positions.is_empty() {
            writeln!(
                f,
                "positions that failed and need repair: {:?}",
                self.degraded_positions
            )?;
        }
        Ok(())
    }
}

/// `bitdustctl local restore`.
#[derive(Serialize)]
pub(crate) struct LocalRestored {
    backup_id: String,
    version: u64,
    to: String,
    files: u64,
    directories: u64,
    symlinks: u64,
    /// FIFOs and device nodes.
    specials: u64,
    /// Names restored as hard links (counted in `files`).
    hard_links: u64,
    bytes: u64,
    packs_fetched: u64,
    fragment_bytes_fetched: u64,
    seconds: f64,
    peak_rss_bytes: Option<u64>,
    /// What was given back only in part (owners, extended attributes).
    pub(crate) warnings: Vec<String>,
    /// Where the time went: seconds per stage, each on its thread
    /// (`--json` only).
    stages: RestoreStages,
}

/// [`bitdust_pipeline::stages::RestoreTimes`], as printed.
#[derive(Serialize)]
struct RestoreStages {
    wall: f64,
    fetch: f64,
    open: f64,
    wait_packs: f64,
    decompress: f64,
    decompress_threads: f64,
    write: f64,
    plan: f64,
}

impl From<bitdust_pipeline::stages::RestoreTimes> for RestoreStages {
    fn from(t: bitdust_pipeline::stages::RestoreTimes) -> Self {
        RestoreStages {
            wall: us(t.wall),
            fetch: us(t.fetch),
            open: us(t.open),
            wait_packs: us(t.wait_packs),
            decompress: us(t.decompress),
            decompress_threads: us(t.decompress_threads),
            write: us(t.write),
            plan: us(t.plan),
        }
    }
}

impl LocalRestored {
    pub(crate) fn new(
        root: &bitdust_block::root::Root,
        r: bitdust_pipeline::snapshot::SnapshotRestoreReport,
        to: &std::path::Path,
        seconds: f64,
        peak_rss_bytes: Option<u64>,
    ) -> Self {
        LocalRestored {
            backup_id: root.backup_id.to_string(),
            version: root.root.snapshot,
            to: to.display().to_string(),
            files: r.files,
            directories: r.directories,
            symlinks: r.symlinks,
            specials: r.specials,
            hard_links: r.hard_links,
            bytes: r.bytes,
            packs_fetched: r.packs_fetched,
            fragment_bytes_fetched: r.bytes_fetched,
            seconds,
            peak_rss_bytes,
            warnings: r.warnings,
            stages: r.times.into(),
        }
    }
}

impl fmt::Display for LocalRestored {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "restored {}@{} into {}: {} files, {} dirs, {} symlinks, {} bytes; read {} packs ({} bytes of fragments) in {:.1}s",
            self.backup_id,
            self.version,
            self.to,
            self.files,
            self.directories,
            self.symlinks,
            self.bytes,
            self.packs_fetched,
            self.fragment_bytes_fetched,
            self.seconds
        )
    }
}

/// `bitdustctl local verify`.
#[derive(Serialize)]
pub(crate) struct Verified {
    backup_id: String,
    version: u64,
    #[serde(skip)]
    suppliers: usize,
    #[serde(skip)]
    scheme: String,
    blocks: Vec<Health>,
    pub(crate) unrecoverable_blocks: Vec<u64>,
    min_margin: Option<usize>,
    rejected_fragments: Vec<String>,
}

#[derive(Serialize, PartialEq)]
struct Health {
    block: u64,
    valid_fragments: usize,
    total_fragments: usize,
    damaged_positions: Vec<usize>,
    margin: Option<usize>,
    margin_exact: bool,
}

impl Verified {
    /// Blocks with a damaged position (still recoverable or not).
    pub(crate) fn damaged(&self) -> usize {
        self.blocks
            .iter()
            .filter(|b| !b.damaged_positions.is_empty())
            .count()
    }
}

impl Verified {
    pub(crate) fn new(
        root: &bitdust_block::root::Root,
        r: bitdust_pipeline::snapshot::PackVerifyReport,
    ) -> Self {
        Verified {
            backup_id: root.backup_id.to_string(),
            version: root.root.snapshot,
            suppliers: root.root.suppliers as usize,
            scheme: root.scheme.to_string(),
            unrecoverable_blocks: r.unrecoverable(),
            min_margin: r.min_margin(),
            blocks: r
                .packs
                .into_iter()
                .map(|b| Health {
                    block: b.block,
                    valid_fragments: b.valid_fragments,
                    total_fragments: b.total_fragments,
                    damaged_positions: b.damaged_positions,
                    margin: b.margin,
                    margin_exact: b.margin_exact,
                })
                .collect(),
            rejected_fragments: r.rejected_fragments,
        }
    }
}

impl fmt::Display for Verified {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "backup {}@{}: {} packs over {} positions ({})",
            self.backup_id,
            self.version,
            self.blocks.len(),
            self.suppliers,
            self.scheme
        )?;
        // Consecutive blocks in the same health are one line.
        let same = |a: &Health, b: &Health| {
            (
                a.valid_fragments,
                &a.damaged_positions,
                a.margin,
                a.margin_exact,
            ) == (
                b.valid_fragments,
                &b.damaged_positions,
                b.margin,
                b.margin_exact,
            )
        };
        let mut i = 0;
        while i < self.blocks.len() {
            let b = &self.blocks[i];
            let mut j = i + 1;
            while j < self.blocks.len() && same(&self.blocks[j], b) {
                j += 1;
            }
            let which = if j - i == 1 {
                format!("pack {}", b.block)
            } else {
                format!("packs {}-{}", b.block, self.blocks[j - 1].block)
            };
            let m = match b.margin {
                Some(m) if b.margin_exact => format!("{m} more positions may be lost"),
                Some(m) => format!("at least {m} more positions may be lost"),
                None => "CANNOT BE RECOVERED".into(),
            };
            let damage = if b.damaged_positions.is_empty() {
                String::new()
            } else {
                format!(", damaged positions {:?}", b.damaged_positions)
            };
            writeln!(
                f,
                "  {which}: {}/{} fragments ok{damage}: {m}",
                b.valid_fragments, b.total_fragments
            )?;
            i = j;
        }
        for r in &self.rejected_fragments {
            writeln!(f, "  rejected {r}")?;
        }
        Ok(())
    }
}

/// `bitdustctl local list`.
#[derive(Serialize)]
#[serde(transparent)]
pub(crate) struct LocalListing(Vec<LocalVersion>);

#[derive(Serialize)]
struct LocalVersion {
    backup_id: String,
    version: u64,
    time: String,
    created_unix: i64,
    /// `None` without master.key.
    paths: Option<Vec<String>>,
    files: u64,
    size_bytes: u64,
    added_bytes: u64,
    added_stored_bytes: u64,
    positions: Vec<usize>,
}

/// A Unix time as `2026-12-03T17:40:00Z`.
pub(crate) fn utc(unix: i64) -> String {
    let t =
        time::OffsetDateTime::from_unix_timestamp(unix).unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

impl From<Vec<bitdust_pipeline::local::SnapshotInfo>> for LocalListing {
    fn from(all: Vec<bitdust_pipeline::local::SnapshotInfo>) -> Self {
        LocalListing(
            all.into_iter()
                .map(|l| LocalVersion {
                    backup_id: l.backup_id.to_string(),
                    version: l.snapshot,
                    time: utc(l.created_unix),
                    created_unix: l.created_unix,
                    paths: l.paths.map(|p| p.iter().map(|p| lossy(p)).collect()),
                    files: l.stats.files,
                    size_bytes: l.stats.content_bytes,
                    added_bytes: l.stats.added_plain,
                    added_stored_bytes: l.stats.added_stored,
                    positions: l.positions,
                })
                .collect(),
        )
    }
}

impl fmt::Display for LocalListing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for l in &self.0 {
            let paths = match &l.paths {
                Some(p) => p.join(" "),
                None => "(paths need master.key)".into(),
            };
            writeln!(
                f,
                "{}@{}  {}  {} files  {}  added {} ({} stored)  {}",
                l.backup_id,
                l.version,
                l.time.replace('T', " ").trim_end_matches('Z'),
                l.files,
                gib(l.size_bytes),
                gib(l.added_bytes),
                gib(l.added_stored_bytes),
                paths
            )?;
        }
        Ok(())
    }
}

/// One entry of `bitdustctl local ls`, as a JSON line.
#[derive(Serialize)]
pub(crate) struct LsEntry {
    path: String,
    kind: &'static str,
    mode: u32,
    size: u64,
    mtime: String,
    mtime_unix: i64,
    mtime_nanos: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    target: Option<String>,
    /// Owner and group ids and names (snapshots made since issue 18).
    #[serde(skip_serializing_if = "Option::is_none")]
    uid: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    gid: Option<u32>,
    #[serde(skip_serializing_if = "String::is_empty")]
    user: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    group: String,
    /// A hard link's first name.
    #[serde(skip_serializing_if = "Option::is_none")]
    link: Option<String>,
    /// Names of its extended attributes.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    xattrs: Vec<String>,
    /// Bytes of holes (a sparse file).
    #[serde(skip_serializing_if = "is_zero")]
    hole_bytes: u64,
    /// Its size or mtime moved while the backup read it.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    changed_while_read: bool,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

fn kind_name(k: i32) -> &'static str {
    use bitdust_proto::format::v1::NodeKind;
    match NodeKind::try_from(k) {
        Ok(NodeKind::File) => "file",
        Ok(NodeKind::Directory) => "dir",
        Ok(NodeKind::Symlink) => "symlink",
        Ok(NodeKind::Fifo) => "fifo",
        Ok(NodeKind::CharDevice) => "char-device",
        Ok(NodeKind::BlockDevice) => "block-device",
        _ => "unknown",
    }
}

impl From<&bitdust_proto::format::v1::Node> for LsEntry {
    fn from(n: &bitdust_proto::format::v1::Node) -> Self {
        let kind = kind_name(n.kind);
        LsEntry {
            path: format!("/{}", lossy(&n.path)),
            kind,
            mode: n.mode,
            size: n.size,
            mtime: utc(n.mtime),
            mtime_unix: n.mtime,
            mtime_nanos: n.mtime_nanos,
            target: (kind == "symlink").then(|| lossy(&n.target)),
            uid: n.uid,
            gid: n.gid,
            user: n.user.clone(),
            group: n.group.clone(),
            link: (!n.link.is_empty()).then(|| format!("/{}", lossy(&n.link))),
            xattrs: n.xattrs.iter().map(|x| lossy(&x.name)).collect(),
            hole_bytes: n.holes.iter().map(|h| h.length).sum(),
            changed_while_read: n.changed,
        }
    }
}

/// `ls -l`'s first column, setuid, setgid and sticky bits included.
fn mode_string(kind: &str, mode: u32) -> String {
    let mut s = String::with_capacity(10);
    s.push(match kind {
        "dir" => 'd',
        "symlink" => 'l',
        "fifo" => 'p',
        "char-device" => 'c',
        "block-device" => 'b',
        _ => '-',
    });
    for (i, c) in "rwxrwxrwx".chars().enumerate() {
        let on = mode & (0o400 >> i) != 0;
        let special = match i {
            2 => mode & 0o4000 != 0,
            5 => mode & 0o2000 != 0,
            8 => mode & 0o1000 != 0,
            _ => false,
        };
        s.push(match (special, on) {
            (false, true) => c,
            (false, false) => '-',
            (true, true) if i == 8 => 't',
            (true, false) if i == 8 => 'T',
            (true, true) => 's',
            (true, false) => 'S',
        });
    }
    s
}

/// The text line of one entry: raw path bytes, as they are on disk.
pub(crate) fn ls_line(n: &bitdust_proto::format::v1::Node) -> Vec<u8> {
    let e = LsEntry::from(n);
    let who = |name: &str, id: Option<u32>| match (name, id) {
        ("", Some(id)) => id.to_string(),
        ("", None) => "-".to_string(),
        (name, _) => name.to_string(),
    };
    let mut line = format!(
        "{} {:<8} {:<8} {:>12} {} /",
        mode_string(e.kind, e.mode),
        who(&e.user, e.uid),
        who(&e.group, e.gid),
        e.size,
        e.mtime.replace('T', " ").trim_end_matches('Z')
    )
    .into_bytes();
    line.extend_from_slice(&n.path);
    if e.kind == "symlink" {
        line.extend_from_slice(b" -> ");
        line.extend_from_slice(&n.target);
    }
    if !n.link.is_empty() {
        line.extend_from_slice(b" link to /");
        line.extend_from_slice(&n.link);
    }
    line.push(b'\n');
    line
}

/// One change of `bitdustctl local diff`, as a JSON line.
#[derive(Serialize)]
pub(crate) struct DiffLine {
    change: &'static str,
    path: String,
}

impl DiffLine {
    pub(crate) fn new(c: &bitdust_pipeline::snapshot::Change) -> (Self, Vec<u8>) {
        use bitdust_pipeline::snapshot::Change;
        let (sign, node) = match c {
            Change::Added(n) => ("+", n),
            Change::Removed(n) => ("-", n),
            Change::Modified { after, .. } => ("M", after),
        };
        let mut text = format!("{sign}    /").into_bytes();
        text.extend_from_slice(&node.path);
        text.push(b'\n');
        (
            DiffLine {
                change: sign,
                path: format!("/{}", lossy(&node.path)),
            },
            text,
        )
    }
}

/// The last line of `bitdustctl local diff`.
#[derive(Serialize, Default)]
pub(crate) struct DiffSummary {
    pub(crate) from: String,
    pub(crate) to: String,
    pub(crate) added: u64,
    pub(crate) removed: u64,
    pub(crate) modified: u64,
    pub(crate) unchanged: u64,
}

impl fmt::Display for DiffSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{} -> {}: {} added, {} removed, {} modified, {} unchanged",
            self.from, self.to, self.added, self.removed, self.modified, self.unchanged
        )
    }
}

/// The output of `ls` and `diff` (local or through the agent): one text
/// line or JSON object per entry or change as it comes, never the whole
/// listing in memory; `diff` ends with its summary.
pub(crate) struct Lines {
    out: std::io::BufWriter<std::io::StdoutLock<'static>>,
    json: bool,
    quiet: bool,
    /// The counts of a diff so far.
    pub(crate) sum: DiffSummary,
}

impl Lines {
    pub(crate) fn new(json: bool, quiet: bool) -> Lines {
        Lines {
            out: std::io::BufWriter::new(std::io::stdout().lock()),
            json,
            quiet,
            sum: DiffSummary::default(),
        }
    }

    fn put(&mut self, json: impl Serialize, text: &[u8]) -> std::io::Result<()> {
        use std::io::Write;
        if self.quiet {
            return Ok(());
        }
        if self.json {
            serde_json::to_writer(&mut self.out, &json).map_err(std::io::Error::other)?;
            self.out.write_all(b"\n")
        } else {
            self.out.write_all(text)
        }
    }

    /// One entry of `ls`.
    pub(crate) fn node(&mut self, n: &bitdust_proto::format::v1::Node) -> std::io::Result<()> {
        self.put(LsEntry::from(n), &ls_line(n))
    }

    /// One change of `diff`.
    pub(crate) fn change(&mut self, c: &bitdust_pipeline::snapshot::Change) -> std::io::Result<()> {
        use bitdust_pipeline::snapshot::Change;
        match c {
            Change::Added(_) => self.sum.added += 1,
            Change::Removed(_) => self.sum.removed += 1,
            Change::Modified { .. } => self.sum.modified += 1,
        }
        let (line, text) = DiffLine::new(c);
        self.put(line, &text)
    }

    /// The end of `diff`: its summary (as JSON with --json; nothing with
    /// --quiet).
    pub(crate) fn diff_done(
        mut self,
        from: String,
        to: String,
        unchanged: u64,
    ) -> std::io::Result<()> {
        use std::io::Write;
        self.sum.from = from;
        self.sum.to = to;
        self.sum.unchanged = unchanged;
        if self.json {
            serde_json::to_writer(&mut self.out, &self.sum).map_err(std::io::Error::other)?;
            self.out.write_all(b"\n")?;
        } else if !self.quiet {
            write!(self.out, "{}", self.sum)?;
        }
        self.out.flush()
    }

    /// The end of `ls`.
    pub(crate) fn finish(mut self) -> std::io::Result<()> {
        use std::io::Write;
        self.out.flush()
    }
}

/// `bitdustctl local forget`.
#[derive(Serialize)]
pub(crate) struct Forgot {
    backup_id: String,
    dry_run: bool,
    kept: Vec<KeptSnapshot>,
    forgotten: Vec<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) prune: Option<Pruned>,
}

#[derive(Serialize)]
struct KeptSnapshot {
    version: u64,
    reasons: Vec<String>,
}

impl From<bitdust_pipeline::local::ForgetReport> for Forgot {
    fn from(r: bitdust_pipeline::local::ForgetReport) -> Self {
        let (kept, gone): (Vec<_>, Vec<_>) =
            r.decisions.into_iter().partition(|d| !d.kept_by.is_empty());
        Forgot {
            backup_id: r.backup_id.to_string(),
            dry_run: !r.removed,
            kept: kept
                .into_iter()
                .map(|d| KeptSnapshot {
                    version: d.snapshot,
                    reasons: d.kept_by.iter().map(|r| r.to_string()).collect(),
                })
                .collect(),
            forgotten: gone.into_iter().map(|d| d.snapshot).collect(),
            prune: None,
        }
    }
}

impl From<pb::ForgetReply> for Forgot {
    fn from(r: pb::ForgetReply) -> Self {
        let (kept, gone): (Vec<_>, Vec<_>) =
            r.decisions.into_iter().partition(|d| !d.kept_by.is_empty());
        Forgot {
            backup_id: r.backup_id.clone(),
            dry_run: r.dry_run,
            kept: kept
                .into_iter()
                .map(|d| KeptSnapshot {
                    version: d.version,
                    reasons: d.kept_by,
                })
                .collect(),
            forgotten: gone.into_iter().map(|d| d.version).collect(),
            prune: r.prune.map(|p| Pruned::of_suppliers(r.backup_id, p)),
        }
    }
}

impl fmt::Display for Forgot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for k in &self.kept {
            writeln!(
                f,
                "keep   {}@{} ({})",
                self.backup_id,
                k.version,
                k.reasons.join(", ")
            )?;
        }
        let verb = if self.dry_run {
            "would forget"
        } else {
            "forget"
        };
        for n in &self.forgotten {
            writeln!(f, "{verb} {}@{n}", self.backup_id)?;
        }
        writeln!(
            f,
            "{} kept, {} {}",
            self.kept.len(),
            self.forgotten.len(),
            if self.dry_run {
                "would be forgotten (dry run: nothing changed)"
            } else {
                "forgotten"
            }
        )?;
        if let Some(p) = &self.prune {
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

/// `bitdustctl local prune`.
#[derive(Serialize)]
#[serde(transparent)]
pub(crate) struct Pruned(Vec<PrunedBackup>);

#[derive(Serialize)]
struct PrunedBackup {
    backup_id: String,
    packs_condemned: u64,
    chunks_dropped: u64,
    packs_deleted: u64,
    bytes_freed: u64,
    packs_pending: u64,
    packs_young: u64,
    data_bytes: u64,
    unused_bytes_before: u64,
    unused_bytes_after: u64,
    packs_repacked: u64,
    packs_written: u64,
    chunks_moved: u64,
    bytes_moved: u64,
    repack_skipped: Option<String>,
    unknown_files_deleted: u64,
    unknown_bytes_freed: u64,
    /// Backups a run held, left for the next prune (over the agent).
    busy: Vec<String>,
}

impl Pruned {
    pub(crate) fn new(all: Vec<bitdust_pipeline::local::Pruned>) -> Self {
        Pruned(
            all.into_iter()
                .map(|p| {
                    (
                        p.backup_id,
                        p.prune,
                        p.repack,
                        p.repack_skipped,
                        (p.unknown_files, p.unknown_bytes),
                    )
                })
                .map(|(id, r, k, skipped, unknown)| PrunedBackup {
                    unknown_files_deleted: unknown.0,
                    unknown_bytes_freed: unknown.1,
                    data_bytes: k.data_bytes,
                    unused_bytes_before: k.unused_before,
                    unused_bytes_after: k.unused_after,
                    packs_repacked: k.packs_repacked,
                    packs_written: k.packs_written,
                    chunks_moved: k.chunks_moved,
                    bytes_moved: k.bytes_moved,
                    repack_skipped: skipped,
                    backup_id: id.to_string(),
                    packs_condemned: r.packs_condemned,
                    chunks_dropped: r.chunks_dropped,
                    packs_deleted: r.packs_deleted,
                    bytes_freed: r.bytes_freed,
                    packs_pending: r.packs_pending,
                    packs_young: r.packs_young,
                    busy: Vec::new(),
                })
                .collect(),
        )
    }

    /// A prune through the agent (whole packs, at every supplier).
    pub(crate) fn of_suppliers(backup_id: String, p: pb::PruneReply) -> Self {
        Pruned(vec![PrunedBackup {
            backup_id,
            packs_condemned: p.packs_condemned,
            chunks_dropped: p.chunks_dropped,
            packs_deleted: p.packs_deleted,
            bytes_freed: p.bytes_freed,
            packs_pending: p.packs_pending,
            packs_young: 0,
            data_bytes: p.data_bytes,
            unused_bytes_before: p.unused_before,
            unused_bytes_after: p.unused_after,
            packs_repacked: p.packs_repacked,
            packs_written: p.packs_written,
            chunks_moved: p.chunks_moved,
            bytes_moved: p.bytes_moved,
            repack_skipped: (!p.repack_skipped.is_empty()).then_some(p.repack_skipped),
            unknown_files_deleted: p.unknown_objects_deleted,
            unknown_bytes_freed: p.unknown_bytes_freed,
            busy: p.busy,
        }])
    }

    /// Packs some position still holds, and backups left because a run
    /// held them: what the next prune is for.
    pub(crate) fn pending(&self) -> u64 {
        self.0
            .iter()
            .map(|b| b.packs_pending + b.busy.len() as u64)
            .sum()
    }
}

impl fmt::Display for Pruned {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in &self.0 {
            match &b.repack_skipped {
                None => writeln!(
                    f,
                    "repack {}: {} of {} unused; {} packs repacked into {} ({} chunks, {} moved); {} unused left",
                    b.backup_id,
                    gib(b.unused_bytes_before),
                    gib(b.data_bytes),
                    b.packs_repacked,
                    b.packs_written,
                    b.chunks_moved,
                    gib(b.bytes_moved),
                    gib(b.unused_bytes_after)
                )?,
                Some(why) => writeln!(f, "repack {}: skipped ({why})", b.backup_id)?,
            }
            writeln!(
                f,
                "prune {}: {} packs no snapshot references ({} chunks left the index); {} packs deleted, {} freed before the erasure code",
                b.backup_id,
                b.packs_condemned,
                b.chunks_dropped,
                b.packs_deleted,
                gib(b.bytes_freed)
            )?;
            if b.unknown_files_deleted > 0 {
                writeln!(
                    f,
                    "  {} fragment files of packs nothing knows (an interrupted run's) deleted, {} freed",
                    b.unknown_files_deleted,
                    gib(b.unknown_bytes_freed)
                )?;
            }
            if b.packs_young > 0 {
                writeln!(
                    f,
                    "  {} unreferenced packs are younger than the grace period and stay (--grace 0h deletes them)",
                    b.packs_young
                )?;
            }
            if b.packs_pending > 0 {
                writeln!(
                    f,
                    "  {} packs are still held by a position that is missing now; run prune again when it is back",
                    b.packs_pending
                )?;
            }
            for id in &b.busy {
                writeln!(
                    f,
                    "  backup {id} is running and was not pruned; run prune again after it finishes"
                )?;
            }
        }
        Ok(())
    }
}

/// `bitdustctl local stats`.
#[derive(Serialize)]
pub(crate) struct LocalStats {
    backup_id: String,
    snapshots: u64,
    logical_bytes: u64,
    chunks: u64,
    unique_bytes: u64,
    compressed_bytes: u64,
    packs: u64,
    packed_bytes: u64,
    stored_bytes: u64,
    packs_pending_delete: u64,
    dedup_ratio: f64,
}

impl From<pb::StatsReply> for LocalStats {
    fn from(s: pb::StatsReply) -> Self {
        LocalStats {
            dedup_ratio: if s.unique_bytes == 0 {
                0.0
            } else {
                s.logical_bytes as f64 / s.unique_bytes as f64
            },
            backup_id: s.backup_id,
            snapshots: s.snapshots,
            logical_bytes: s.logical_bytes,
            chunks: s.chunks,
            unique_bytes: s.unique_bytes,
            compressed_bytes: s.compressed_bytes,
            packs: s.packs,
            packed_bytes: s.packed_bytes,
            stored_bytes: s.stored_bytes,
            packs_pending_delete: s.packs_pending_delete,
        }
    }
}

impl fmt::Display for LocalStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "backup {}: {} snapshots", self.backup_id, self.snapshots)?;
        writeln!(
            f,
            "  logical size (all snapshots):    {}",
            gib(self.logical_bytes)
        )?;
        writeln!(
            f,
            "  unique content:                  {} in {} chunks (deduplication {:.2}x)",
            gib(self.unique_bytes),
            self.chunks,
            self.dedup_ratio
        )?;
        writeln!(
            f,
            "  compressed and encrypted:        {}",
            gib(self.compressed_bytes)
        )?;
        writeln!(
            f,
            "  packed, before the erasure code: {} in {} packs",
            gib(self.packed_bytes),
            self.packs
        )?;
        writeln!(
            f,
            "  stored, after the erasure code:  {}",
            gib(self.stored_bytes)
        )?;
        if self.packs_pending_delete > 0 {
            writeln!(
                f,
                "  {} pruned packs are still held by a missing position",
                self.packs_pending_delete
            )?;
        }
        Ok(())
    }
}

/// `bitdustctl local check`.
#[derive(Serialize)]
pub(crate) struct Checked {
    backup_id: String,
    snapshots: u64,
    packs: usize,
    pub(crate) unrecoverable_packs: Vec<u64>,
    pub(crate) damaged_packs: usize,
    min_margin: Option<usize>,
    rejected_fragments: Vec<String>,
    fragments_listed: bool,
    metadata_checked: bool,
    entries: u64,
    packs_read: u64,
    chunks_verified: u64,
    pub(crate) errors: Vec<String>,
}

impl From<pb::CheckReply> for Checked {
    fn from(r: pb::CheckReply) -> Self {
        Checked {
            backup_id: r.backup_id,
            snapshots: r.snapshots,
            packs: r.packs as usize,
            unrecoverable_packs: r.unrecoverable_packs,
            damaged_packs: r.damaged_packs as usize,
            min_margin: r.min_margin.map(|m| m as usize),
            rejected_fragments: r.rejected_fragments,
            fragments_listed: r.fragments_listed,
            metadata_checked: r.metadata_checked,
            entries: r.entries,
            packs_read: r.packs_read,
            chunks_verified: r.chunks_verified,
            errors: r.errors,
        }
    }
}

impl fmt::Display for Checked {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "backup {}: {} snapshots, {} packs; every fragment {}: {} damaged, {} cannot be recovered{}",
            self.backup_id,
            self.snapshots,
            self.packs,
            if self.fragments_listed {
                "listed at the suppliers"
            } else {
                "read"
            },
            self.damaged_packs,
            self.unrecoverable_packs.len(),
            match self.min_margin {
                Some(m) => format!(", at least {m} more positions may be lost"),
                None => String::new(),
            }
        )?;
        if self.metadata_checked {
            writeln!(
                f,
                "  metadata: {} entries read, every chunk found in a pack its snapshot names{}",
                self.entries,
                if self.errors.is_empty() {
                    ""
                } else {
                    " except as below"
                }
            )?;
        } else {
            writeln!(f, "  metadata not read (it needs master.key)")?;
        }
        if self.packs_read > 0 {
            writeln!(
                f,
                "  data: {} packs read back, {} chunks decrypted and verified",
                self.packs_read, self.chunks_verified
            )?;
        }
        for r in &self.rejected_fragments {
            writeln!(f, "  rejected {r}")?;
        }
        for e in &self.errors {
            writeln!(f, "  ERROR {e}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Scripts read these names: a rename is a breaking change.
    #[test]
    fn the_json_names_are_the_documented_ones() {
        let s = Status::from(pb::StatusReply {
            node_id: "n".into(),
            positions: 7,
            hired: 6,
            scheme: "xor".into(),
            ..Default::default()
        });
        assert_eq!(
            serde_json::to_string(&s).unwrap(),
            r#"{"node_id":"n","positions":7,"hired":6,"reachable":0,"needed_bytes":0,"backups":0,"versions":0,"missing_fragments":0,"scheme":"xor","tolerance":0,"recovering":false,"recovery":""}"#
        );
        let l = Listing::from(pb::ListReply {
            backups: vec![pb::BackupInfo {
                backup_id: "b".into(),
                paths: vec!["/p".into()],
                owner: "uid 1000".into(),
                versions: vec![pb::VersionInfo {
                    version: 1,
                    ..Default::default()
                }],
            }],
        });
        assert_eq!(
            serde_json::to_string(&l).unwrap(),
            r#"[{"backup_id":"b","owner":"uid 1000","paths":["/p"],"versions":[{"version":1,"time":0,"input_bytes":0,"stored_bytes":0,"blocks":0,"scheme":"","suppliers":0,"missing_fragments":0}]}]"#
        );
        // The text form is made from the same value.
        assert!(l.to_string().starts_with("b  /p  (uid 1000)\n  @1"));
    }
}
