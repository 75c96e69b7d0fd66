//! A daemon's state directory: held by one process at a time (flock on
//! `DIR/lock`), and the LMDB environments in it opened only by that holder.
//! Every daemon opens its state through here, so the one `unsafe` that
//! opening LMDB takes has one argument, in one place.

use std::fs::File;
use std::path::{Path, PathBuf};

use heed::{Env, EnvOpenOptions};

/// The state directory could not be taken or opened; says which and why.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct StateError(pub String);

/// The exclusive hold of a state directory, for as long as it lives.
#[derive(Debug)]
pub struct StateLock {
    dir: PathBuf,
    _file: File,
}

impl StateLock {
    /// Creates `dir` if need be and takes its lock; refused, naming
    /// `who` (the daemon), when another process holds it.
    pub fn take(dir: &Path, who: &str) -> Result<StateLock, StateError> {
        std::fs::create_dir_all(dir).map_err(|e| {
            StateError(format!(
                "cannot create the state directory {}: {e}",
                dir.display()
            ))
        })?;
        let path = dir.join("lock");
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| StateError(format!("cannot open {}: {e}", path.display())))?;
        rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive).map_err(
            |_| {
                StateError(format!(
                    "another {who} is using {}; stop it or give this one another state_dir",
                    dir.display()
                ))
            },
        )?;
        Ok(StateLock {
            dir: dir.to_owned(),
            _file: file,
        })
    }

    /// The directory held.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Opens (creating) the LMDB environment in the subdirectory `sub` of
    /// the held directory (`""`: the directory itself), mapping at most
    /// `map_size` bytes with up to `max_dbs` named databases.
    pub fn open_env(&self, sub: &str, map_size: usize, max_dbs: u32) -> Result<Env, StateError> {
        let path = if sub.is_empty() {
            self.dir.clone()
        } else {
            self.dir.join(sub)
        };
        std::fs::create_dir_all(&path)
            .map_err(|e| StateError(format!("cannot create {}: {e}", path.display())))?;
        // SAFETY: LMDB maps the file. Only the holder of this directory's
        // lock (one process) opens environments in it, each once per
        // process: the daemons open theirs once at start.
        #[allow(unsafe_code)]
        let env = unsafe {
            EnvOpenOptions::new()
                .map_size(map_size)
                .max_dbs(max_dbs)
                .open(&path)
        };
        env.map_err(|e| {
            StateError(format!(
                "cannot open the database in {}: {e}",
                path.display()
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_is_refused_by_name_and_the_first_opens_its_env() {
        let dir = tempfile::tempdir().unwrap();
        let first = StateLock::take(dir.path(), "supplier-store").unwrap();
        let e = StateLock::take(dir.path(), "supplier-store").unwrap_err();
        assert!(e.0.contains("another supplier-store is using"), "{e}");
        let env = first.open_env("index", 1 << 20, 2).unwrap();
        let mut w = env.write_txn().unwrap();
        let db: heed::Database<heed::types::Bytes, heed::types::Bytes> =
            env.create_database(&mut w, Some("t")).unwrap();
        db.put(&mut w, b"k", b"v").unwrap();
        w.commit().unwrap();
        drop(env);
        drop(first);
        // Released on drop.
        StateLock::take(dir.path(), "supplier-store").unwrap();
    }

    #[test]
    fn every_environment_commits_durably() {
        // LMDB fsyncs its data and meta pages at every commit unless told
        // not to: the catalog, the store's index, the rebuild queue and the
        // DHT's records rely on that (batching is done above LMDB, e.g. the
        // supplier statistics). No flag that trades a commit's durability
        // for speed may creep into the one place environments are opened.
        let dir = tempfile::tempdir().unwrap();
        let lock = StateLock::take(dir.path(), "customer-agent").unwrap();
        let env = lock.open_env("", 1 << 20, 2).unwrap();
        let flags = env.get_flags().unwrap();
        for (name, bad) in [
            ("NO_SYNC", heed::EnvFlags::NO_SYNC),
            ("NO_META_SYNC", heed::EnvFlags::NO_META_SYNC),
            ("MAP_ASYNC", heed::EnvFlags::MAP_ASYNC),
            ("WRITE_MAP", heed::EnvFlags::WRITE_MAP),
        ] {
            assert_eq!(flags & bad.bits(), 0, "environments are opened with {name}");
        }
    }
}
