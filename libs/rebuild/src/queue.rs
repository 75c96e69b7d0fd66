//! The rebuild queue, in LMDB (heed) under `<state>/queue`: one job per
//! (backup, version, position) with the next block to rebuild, saved after
//! every block, so a rebuild interrupted by a crash or restart continues
//! where it stopped. Counters for the status live beside it.

use std::path::Path;

use bitdust_daemon::state::StateLock;
use heed::types::{Bytes, SerdeJson};
use heed::{Database, Env};
use serde::{Deserialize, Serialize};

/// A rebuild of one position of one backup version.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Job {
    /// The backup (text form).
    pub backup_id: String,
    /// Its version.
    pub version: u64,
    /// The position rebuilt.
    pub position: u32,
    /// The supplier the fragments go to (node id, text form).
    pub target: String,
    /// Blocks in the version.
    pub blocks: u64,
    /// The next block to rebuild; `blocks` when done.
    pub next_block: u64,
    /// `xor` or `rs`.
    pub scheme: String,
    /// Positions of the version's code.
    pub suppliers: u32,
    /// When the version was made (Unix seconds): newest first.
    pub time: u64,
    /// A snapshot's packs, as (first, count) pairs: blocks of version 0,
    /// which `blocks` counts and `next_block` indexes (empty: a full
    /// copy's own blocks).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pack_ranges: Vec<u64>,
}

impl Job {
    /// The queue key: backup id text, version, position.
    pub fn key(&self) -> Vec<u8> {
        key(&self.backup_id, self.version, self.position)
    }
}

fn key(backup_id: &str, version: u64, position: u32) -> Vec<u8> {
    let mut k = backup_id.as_bytes().to_vec();
    k.push(0);
    k.extend_from_slice(&version.to_be_bytes());
    k.extend_from_slice(&position.to_be_bytes());
    k
}

/// Counters shown in the status.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    /// Suppliers fired.
    pub fired: u64,
    /// Replacements hired.
    pub hired: u64,
    /// Blocks rebuilt.
    pub blocks: u64,
    /// Fragment bytes uploaded.
    pub bytes: u64,
}

/// The queue could not be used.
#[derive(Debug, thiserror::Error)]
#[error("the rebuild queue: {0}")]
pub struct QueueError(String);

impl From<heed::Error> for QueueError {
    fn from(e: heed::Error) -> Self {
        QueueError(e.to_string())
    }
}

/// The persistent queue.
pub struct Queue {
    env: Env,
    jobs: Database<Bytes, SerdeJson<Job>>,
    meta: Database<Bytes, SerdeJson<Counters>>,
    _lock: StateLock,
}

impl Queue {
    /// Opens (creating) the queue in `dir`; refuses when another rebuilder
    /// uses it.
    pub fn open(dir: &Path) -> Result<Queue, QueueError> {
        let lock = StateLock::take(dir, "rebuilder").map_err(|e| QueueError(e.0))?;
        let env = lock
            .open_env("queue", 1 << 30, 4)
            .map_err(|e| QueueError(e.0))?;
        let mut w = env.write_txn()?;
        let jobs = env.create_database(&mut w, Some("jobs"))?;
        let meta = env.create_database(&mut w, Some("meta"))?;
        w.commit()?;
        Ok(Queue {
            env,
            jobs,
            meta,
            _lock: lock,
        })
    }

    /// Every job, newest version first.
    pub fn jobs(&self) -> Result<Vec<Job>, QueueError> {
        let r = self.env.read_txn()?;
        let mut out = Vec::new();
        for item in self.jobs.iter(&r)? {
            out.push(item?.1);
        }
        out.sort_by(|a, b| {
            b.time
                .cmp(&a.time)
                .then(b.version.cmp(&a.version))
                .then(a.position.cmp(&b.position))
        });
        Ok(out)
    }

    /// Adds `job`, or keeps the queued one when it rebuilds onto the same
    /// supplier (its progress stands); a job for another supplier, or of a
    /// snapshot whose packs changed since (a repack), starts over (the
    /// packs the supplier holds already are skipped).
    pub fn ensure(&self, job: &Job) -> Result<(), QueueError> {
        let mut w = self.env.write_txn()?;
        let k = job.key();
        match self.jobs.get(&w, &k)? {
            Some(held) if held.target == job.target && held.pack_ranges == job.pack_ranges => {}
            _ => self.jobs.put(&mut w, &k, job)?,
        }
        Ok(w.commit()?)
    }

    /// Saves `job`'s progress.
    pub fn save(&self, job: &Job) -> Result<(), QueueError> {
        let mut w = self.env.write_txn()?;
        self.jobs.put(&mut w, &job.key(), job)?;
        Ok(w.commit()?)
    }

    /// Saves `job`'s progress after one more block, and counts the block
    /// and its `bytes`, in one transaction (a crash keeps both or neither).
    pub fn advance(&self, job: &Job, bytes: u64) -> Result<(), QueueError> {
        let mut w = self.env.write_txn()?;
        self.jobs.put(&mut w, &job.key(), job)?;
        let mut c = self.meta.get(&w, b"counters")?.unwrap_or_default();
        c.blocks += 1;
        c.bytes += bytes;
        self.meta.put(&mut w, b"counters", &c)?;
        Ok(w.commit()?)
    }

    /// Drops `job`.
    pub fn remove(&self, job: &Job) -> Result<(), QueueError> {
        let mut w = self.env.write_txn()?;
        self.jobs.delete(&mut w, &job.key())?;
        Ok(w.commit()?)
    }

    /// The counters.
    pub fn counters(&self) -> Result<Counters, QueueError> {
        let r = self.env.read_txn()?;
        Ok(self.meta.get(&r, b"counters")?.unwrap_or_default())
    }

    /// Updates the counters.
    pub fn count(&self, f: impl FnOnce(&mut Counters)) -> Result<(), QueueError> {
        let mut w = self.env.write_txn()?;
        let mut c = self.meta.get(&w, b"counters")?.unwrap_or_default();
        f(&mut c);
        self.meta.put(&mut w, b"counters", &c)?;
        Ok(w.commit()?)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn job(version: u64, position: u32, target: &str, time: u64) -> Job {
        Job {
            backup_id: "b1".into(),
            version,
            position,
            target: target.into(),
            blocks: 10,
            next_block: 0,
            scheme: "xor".into(),
            suppliers: 7,
            time,
            pack_ranges: Vec::new(),
        }
    }

    #[test]
    fn progress_survives_a_reopen_and_a_new_target_starts_over() {
        let tmp = tempfile::tempdir().unwrap();
        {
            let q = Queue::open(tmp.path()).unwrap();
            assert!(Queue::open(tmp.path()).is_err(), "one rebuilder per queue");
            let mut a = job(1, 3, "A", 100);
            q.ensure(&a).unwrap();
            q.ensure(&job(2, 3, "A", 200)).unwrap();
            a.next_block = 4;
            q.save(&a).unwrap();
            // The same job again keeps its progress.
            q.ensure(&job(1, 3, "A", 100)).unwrap();
            q.count(|c| c.blocks += 4).unwrap();
        }
        let q = Queue::open(tmp.path()).unwrap();
        let jobs = q.jobs().unwrap();
        assert_eq!(jobs.len(), 2);
        assert_eq!(jobs[0].version, 2, "newest first");
        assert_eq!(jobs[1].next_block, 4);
        assert_eq!(q.counters().unwrap().blocks, 4);
        // Another supplier at the position: from block 0 again.
        q.ensure(&job(1, 3, "B", 100)).unwrap();
        let j = q
            .jobs()
            .unwrap()
            .into_iter()
            .find(|j| j.version == 1)
            .unwrap();
        assert_eq!((j.target.as_str(), j.next_block), ("B", 0));
        q.remove(&j).unwrap();
        assert_eq!(q.jobs().unwrap().len(), 1);
    }

    #[test]
    fn a_snapshot_job_whose_packs_changed_starts_over() {
        let tmp = tempfile::tempdir().unwrap();
        let q = Queue::open(tmp.path()).unwrap();
        let mut a = job(1, 3, "A", 100);
        a.pack_ranges = vec![0, 10];
        q.ensure(&a).unwrap();
        a.next_block = 6;
        q.save(&a).unwrap();
        q.ensure(&Job {
            next_block: 0,
            ..a.clone()
        })
        .unwrap();
        assert_eq!(q.jobs().unwrap()[0].next_block, 6, "the same packs");
        // A repack moved packs 2..5 into pack 10: the old ones are gone.
        q.ensure(&Job {
            next_block: 0,
            pack_ranges: vec![0, 2, 5, 6],
            ..a.clone()
        })
        .unwrap();
        let j = &q.jobs().unwrap()[0];
        assert_eq!((j.next_block, &j.pack_ranges), (0, &vec![0, 2, 5, 6]));
    }
}
