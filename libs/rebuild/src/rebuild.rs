//! Rebuilding one block of one position onto a new supplier: fetch only the
//! fragments the decoder needs for that position (the ECC library's minimal
//! plan), check each against the block's signed header, regenerate the
//! position's Data and Parity fragments, check them against the same
//! signed hashes, and upload them. Ciphertext only: no key but the
//! customer's identity (to be let in by the suppliers) is needed.

use std::sync::Arc;

use bitdust_block::{BackupId, Manifest, SignedHeader, check_fragment, write_fragment};
use bitdust_crypto::NodeId;
use bitdust_customer::client::SupplierLink;
use bitdust_customer::netio::{MAX_PATIENCE, Wary, fragment_object, manifest_object};
use bitdust_ecc::Code;

/// The largest fragment object fetched.
const MAX_OBJECT: u64 = (bitdust_block::MAX_BLOCK_LEN / 2) + (1 << 20);
/// The largest manifest fetched.
const MAX_MANIFEST: u64 = bitdust_block::MAX_MANIFEST_BYTES;

/// One block could not be rebuilt.
#[derive(Debug, thiserror::Error)]
pub enum RebuildError {
    /// Too few fragments can be had from the other suppliers now.
    #[error("block {block}: too few fragments are available from the other suppliers ({0}); waiting for more of them to be reachable", .reason)]
    NotEnough {
        /// The block.
        block: u64,
        /// What was missing.
        reason: String,
    },
    /// The new supplier did not take a fragment.
    #[error("uploading to the new supplier {target} failed: {reason}")]
    Upload {
        /// The supplier.
        target: NodeId,
        /// Why.
        reason: String,
    },
    /// A regenerated fragment does not match its signed hash (never
    /// uploaded).
    #[error(
        "block {block}: the regenerated fragment {fragment} does not match the hash in its signed header; it was not uploaded"
    )]
    Mismatch {
        /// The block.
        block: u64,
        /// The fragment.
        fragment: usize,
    },
}

/// What one rebuild step needs.
pub struct Block<'a> {
    /// The customer (signer of every header).
    pub customer: NodeId,
    /// The backup.
    pub backup_id: BackupId,
    /// Its version.
    pub version: u64,
    /// The version's code.
    pub code: &'a Code,
    /// The suppliers by position (`None`: none, or known unreachable).
    pub links: &'a [Option<Arc<SupplierLink>>],
    /// The position rebuilt.
    pub position: usize,
    /// How long to wait for a fragment, and who answered late.
    pub wary: &'a Wary,
}

/// What a rebuilt block cost.
#[derive(Debug, Default, Clone, Copy)]
pub struct Done {
    /// Fragments fetched.
    pub fetched: usize,
    /// Bytes uploaded.
    pub uploaded: u64,
}

impl Block<'_> {
    fn target(&self) -> Result<&Arc<SupplierLink>, RebuildError> {
        self.links[self.position]
            .as_ref()
            .ok_or_else(|| RebuildError::NotEnough {
                block: 0,
                reason: "the position has no supplier".into(),
            })
    }

    /// Fetches the version's signed manifest from the other suppliers (the
    /// first copy that verifies and names this version) and makes sure the
    /// new supplier holds the same bytes. The manifest says which block
    /// header counts for each block ([`Manifest::block_header`]).
    pub async fn copy_manifest(&self) -> Result<Manifest, RebuildError> {
        let target = self.target()?;
        let name = manifest_object(self.backup_id, self.version);
        for (p, l) in self.links.iter().enumerate() {
            let Some(l) = l.as_ref().filter(|_| p != self.position) else {
                continue;
            };
            let Ok(Some(bytes)) = l.get(&name, MAX_MANIFEST).await else {
                continue;
            };
            match Manifest::from_signed_bytes(&bytes, &self.customer) {
                Ok(m) if m.backup_id == self.backup_id && m.version == self.version => {
                    self.place(target, &name, &bytes).await?;
                    return Ok(m);
                }
                _ => tracing::warn!(position = p, "a manifest copy does not verify; skipped"),
            }
        }
        Err(RebuildError::NotEnough {
            block: 0,
            reason: format!("no other supplier returned the manifest {name}"),
        })
    }

    /// Copies the snapshot root of this version (the highest revision
    /// that verifies among the other suppliers' copies) to the new
    /// supplier, unless it holds the same bytes.
    pub async fn copy_root(&self) -> Result<(), RebuildError> {
        let target = self.target()?;
        let name = manifest_object(self.backup_id, self.version);
        let mut best: Option<(u32, Vec<u8>)> = None;
        for (p, l) in self.links.iter().enumerate() {
            let Some(l) = l.as_ref().filter(|_| p != self.position) else {
                continue;
            };
            let Ok(Some(bytes)) = l.get(&name, MAX_MANIFEST).await else {
                continue;
            };
            match bitdust_block::root::verify_root(
                &bytes,
                &self.customer,
                self.backup_id,
                self.version,
            ) {
                Ok(r) if best.as_ref().is_none_or(|(rev, _)| r.root.revision > *rev) => {
                    best = Some((r.root.revision, bytes));
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(position = p, "a root copy does not verify ({e}); skipped")
                }
            }
        }
        let Some((_, bytes)) = best else {
            return Err(RebuildError::NotEnough {
                block: 0,
                reason: format!("no other supplier returned the root {name}"),
            });
        };
        self.place(target, &name, &bytes).await
    }

    /// Puts `bytes` as `name` on `target`, unless it holds them already.
    async fn place(
        &self,
        target: &SupplierLink,
        name: &str,
        bytes: &[u8],
    ) -> Result<(), RebuildError> {
        if let Ok(Some(held)) = target.get(name, MAX_MANIFEST).await
            && held == bytes
        {
            return Ok(());
        }
        target
            .put(name, bytes)
            .await
            .map_err(|e| RebuildError::Upload {
                target: target.node_id,
                reason: e.to_string(),
            })?;
        Ok(())
    }

    /// Rebuilds pack `pack` (a block of version 0) of the position onto
    /// its supplier, unless the supplier holds every fragment of it for
    /// the position already. No manifest commits to a pack's header: a
    /// fragment under a validly signed header is used, and the rebuilt
    /// fragments must match the hashes in that header.
    pub async fn rebuild_pack(&self, pack: u64) -> Result<Done, RebuildError> {
        let target = self.target()?;
        let prefix = format!(
            "{}b{pack:010}.",
            bitdust_customer::netio::version_prefix(self.backup_id, self.version)
        );
        let held = target.list(&prefix).await.unwrap_or_default();
        let whole = self
            .code
            .position_fragments(self.position)
            .iter()
            .all(|&f| {
                let name = fragment_object(self.backup_id, self.version, pack, f);
                held.iter().any(|o| o.name == name && o.size > 0)
            });
        if whole {
            return Ok(Done::default());
        }
        self.rebuild_committed(pack, None).await
    }

    /// Rebuilds `block` of the position onto its supplier. Only fragments
    /// carrying the header `manifest` commits to for the block are used: a
    /// stale fragment of a failed attempt under the same name is an erasure.
    pub async fn rebuild(&self, manifest: &Manifest, block: u64) -> Result<Done, RebuildError> {
        let committed = *manifest
            .block_header(block)
            .ok_or_else(|| RebuildError::NotEnough {
                block,
                reason: format!(
                    "the manifest names {} blocks, not block {block}",
                    manifest.blocks
                ),
            })?;
        self.rebuild_committed(block, Some(&committed)).await
    }

    /// Rebuilds `block`, using only fragments under the header `committed`
    /// names when it names one.
    async fn rebuild_committed(
        &self,
        block: u64,
        committed: Option<&[u8; 32]>,
    ) -> Result<Done, RebuildError> {
        let code = self.code;
        let count = code.fragment_count();
        let target = self.target()?;
        // A fragment is worth asking for when another supplier holds it and
        // it has not failed yet.
        let mut failed = vec![false; count];
        let mut got: Vec<Option<Vec<u8>>> = vec![None; count];
        let mut header: Option<SignedHeader> = None;
        let mut done = Done::default();
        loop {
            // Positions that answered late are asked only when the plan
            // cannot do without them.
            let plan_with = |wary_too: bool| {
                let available: Vec<bool> = (0..count)
                    .map(|f| {
                        let p = code.fragment_position(f);
                        p != self.position
                            && self.links[p]
                                .as_ref()
                                .is_some_and(|l| wary_too || !self.wary.left_out(&l.node_id))
                            && !failed[f]
                    })
                    .collect();
                code.rebuild_plan(self.position, &available)
            };
            // A round that needs a late position waits for it as long as
            // the most patience allows.
            let (plan, patience) = match plan_with(false) {
                Ok(plan) => (plan, None),
                Err(_) => (
                    plan_with(true).map_err(|e| RebuildError::NotEnough {
                        block,
                        reason: e.to_string(),
                    })?,
                    Some(MAX_PATIENCE),
                ),
            };
            let wait = || patience.unwrap_or_else(|| self.wary.wait());
            let wanted: Vec<usize> = plan.into_iter().filter(|&f| got[f].is_none()).collect();
            if wanted.is_empty() {
                break;
            }
            let started = std::time::Instant::now();
            let mut set = tokio::task::JoinSet::new();
            let mut outstanding = Vec::new();
            for f in wanted {
                let Some(link) = self.links[code.fragment_position(f)].clone() else {
                    failed[f] = true;
                    continue;
                };
                let name = fragment_object(self.backup_id, self.version, block, f);
                set.spawn(async move { (f, link.get(&name, MAX_OBJECT).await) });
                outstanding.push(f);
            }
            loop {
                // A fragment later than the fetches have been taking is read
                // around: its position is left out for a while, and the
                // plan is made again without it.
                let deadline = tokio::time::Instant::from_std(started + wait());
                let next = match tokio::time::timeout_at(deadline, set.join_next()).await {
                    Ok(Some(Ok(n))) => n,
                    // A fetch that panicked: its fragment stays outstanding
                    // and counts as failed once the rest are in.
                    Ok(Some(Err(_))) => continue,
                    Ok(None) => {
                        for &f in &outstanding {
                            failed[f] = true;
                        }
                        break;
                    }
                    Err(_) if started.elapsed() < wait() => continue,
                    Err(_) => {
                        for &f in &outstanding {
                            failed[f] = true;
                            if let Some(link) = &self.links[code.fragment_position(f)] {
                                self.wary.late(link);
                            }
                            tracing::warn!(
                                fragment = f,
                                block,
                                position = code.fragment_position(f),
                                "a fragment came late; read around"
                            );
                        }
                        set.abort_all();
                        break;
                    }
                };
                let (f, r) = next;
                outstanding.retain(|&o| o != f);
                done.fetched += 1;
                let bytes = match r {
                    Ok(Some(b)) => {
                        if let Some(link) = &self.links[code.fragment_position(f)] {
                            self.wary.saw(&link.node_id, started.elapsed());
                        }
                        b
                    }
                    Ok(None) => {
                        failed[f] = true;
                        continue;
                    }
                    Err(e) => {
                        tracing::debug!(fragment = f, block, error = %e, "a fragment could not be fetched");
                        failed[f] = true;
                        continue;
                    }
                };
                match check_fragment(
                    &bytes,
                    &self.customer,
                    self.backup_id,
                    self.version,
                    block,
                    f,
                    committed,
                ) {
                    // With no commitment (a pack), every fragment used must
                    // carry the first one's header: one under another
                    // signed header (a stale sealing) is an erasure.
                    Ok((h, _)) if header.as_ref().is_some_and(|first| first.bytes != h.bytes) => {
                        tracing::warn!(
                            fragment = f,
                            block,
                            "a fetched fragment carries another header; read as missing"
                        );
                        failed[f] = true;
                    }
                    Ok((h, payload)) => {
                        got[f] = Some(payload.to_vec());
                        header.get_or_insert(h);
                    }
                    Err(e) => {
                        tracing::warn!(fragment = f, block, "a fetched fragment is rejected: {e}");
                        failed[f] = true;
                    }
                }
            }
        }
        let header = header.ok_or_else(|| RebuildError::NotEnough {
            block,
            reason: "no fragment of the block could be fetched".into(),
        })?;
        let flen = header.header.fragment_len as usize;
        let mut buf = vec![0u8; count * flen];
        let mut present = vec![false; count];
        for (f, g) in got.iter().enumerate() {
            // Every accepted fragment carries the committed header, so its
            // length is `flen`; anything else is an erasure, never a panic.
            if let Some(payload) = g.as_ref().filter(|p| p.len() == flen) {
                buf[f * flen..(f + 1) * flen].copy_from_slice(payload);
                present[f] = true;
            }
        }
        drop(got);
        code.reconstruct_position(self.position, &mut buf, flen, &mut present)
            .map_err(|e| RebuildError::NotEnough {
                block,
                reason: e.to_string(),
            })?;
        let mut out = Vec::with_capacity(flen + 8192);
        for f in code.position_fragments(self.position) {
            let payload = &buf[f * flen..(f + 1) * flen];
            if header.header.fragment_hashes.get(f) != Some(blake3::hash(payload).as_bytes()) {
                return Err(RebuildError::Mismatch { block, fragment: f });
            }
            out.clear();
            write_fragment(&mut out, &header, f, code.fragment_kind(f), payload).map_err(|e| {
                RebuildError::Upload {
                    target: target.node_id,
                    reason: e.to_string(),
                }
            })?;
            let name = fragment_object(self.backup_id, self.version, block, f);
            target
                .put(&name, &out)
                .await
                .map_err(|e| RebuildError::Upload {
                    target: target.node_id,
                    reason: e.to_string(),
                })?;
            done.uploaded += out.len() as u64;
        }
        Ok(done)
    }
}
