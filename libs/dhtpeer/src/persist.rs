//! What a dht-peer keeps across restarts, in LMDB (heed) under
//! `<state>/db`: the routing table's contacts, the records held for
//! others, and the records this node publishes.

use std::path::Path;

use bitdust_crypto::NodeId;
use bitdust_daemon::state::StateLock;
use bitdust_dht::{Contact, Record};
use bitdust_proto::dht::v1 as pb;
use heed::types::{Bytes, Str};
use heed::{Database, Env};
use prost::Message;

/// The database could not be used.
#[derive(Debug, thiserror::Error)]
#[error("the DHT state database: {0}")]
pub struct DbError(String);

impl From<heed::Error> for DbError {
    fn from(e: heed::Error) -> Self {
        DbError(e.to_string())
    }
}

/// The dht-peer's database.
pub struct Db {
    env: Env,
    contacts: Database<Bytes, Str>,
    held: Database<Bytes, Bytes>,
    published: Database<Bytes, Bytes>,
    _lock: StateLock,
}

/// Which set of records.
#[derive(Clone, Copy, Debug)]
pub enum Records {
    /// Held for others.
    Held,
    /// Published by this node.
    Published,
}

impl Db {
    /// Opens (creating) the database in `dir`; refuses when another
    /// dht-peer uses it.
    pub fn open(dir: &Path) -> Result<Db, DbError> {
        let lock = StateLock::take(dir, "dht-peer").map_err(|e| DbError(e.0))?;
        let env = lock.open_env("db", 4 << 30, 4).map_err(|e| DbError(e.0))?;
        let mut wtxn = env.write_txn()?;
        let contacts = env.create_database(&mut wtxn, Some("contacts"))?;
        let held = env.create_database(&mut wtxn, Some("held"))?;
        let published = env.create_database(&mut wtxn, Some("published"))?;
        wtxn.commit()?;
        Ok(Db {
            env,
            contacts,
            held,
            published,
            _lock: lock,
        })
    }

    /// The saved routing table (entries that no longer parse are skipped).
    pub fn contacts(&self) -> Result<Vec<Contact>, DbError> {
        let rtxn = self.env.read_txn()?;
        let mut out = Vec::new();
        for item in self.contacts.iter(&rtxn)? {
            let (id, address) = item?;
            if let Ok(id) = <[u8; 32]>::try_from(id) {
                out.push(Contact::new(NodeId::from_bytes(id), address));
            }
        }
        Ok(out)
    }

    /// Replaces the saved routing table with `contacts`.
    pub fn save_contacts(&self, contacts: &[Contact]) -> Result<(), DbError> {
        let mut wtxn = self.env.write_txn()?;
        self.contacts.clear(&mut wtxn)?;
        for c in contacts {
            self.contacts
                .put(&mut wtxn, c.id.as_bytes(), c.address.as_str())?;
        }
        wtxn.commit()?;
        Ok(())
    }

    fn db(&self, which: Records) -> Database<Bytes, Bytes> {
        match which {
            Records::Held => self.held,
            Records::Published => self.published,
        }
    }

    /// Saves `records` (each replacing the one at its key).
    pub fn put(&self, which: Records, records: &[Record]) -> Result<(), DbError> {
        let db = self.db(which);
        let mut wtxn = self.env.write_txn()?;
        for r in records {
            db.put(&mut wtxn, &r.key().0, &r.to_proto().encode_to_vec())?;
        }
        wtxn.commit()?;
        Ok(())
    }

    /// The saved records that are still valid at `now`; the others (expired,
    /// unreadable, or failing their signature) are deleted. For start-up.
    pub fn load(&self, which: Records, now: u64) -> Result<Vec<Record>, DbError> {
        self.sweep(which, |r| r.verify(now).is_ok())
    }

    /// Deletes the saved records that expired by `now` (or are
    /// unreadable), without checking signatures again: for the periodic
    /// sweep, over records that were checked when they came in.
    pub fn drop_expired(&self, which: Records, now: u64) -> Result<usize, DbError> {
        Ok(self.sweep(which, |r| r.expires > now)?.len())
    }

    /// Keeps the records that decode and pass `keep`, deletes the rest,
    /// and returns the kept ones.
    fn sweep(
        &self,
        which: Records,
        keep: impl Fn(&Record) -> bool,
    ) -> Result<Vec<Record>, DbError> {
        let db = self.db(which);
        let mut kept = Vec::new();
        let mut drop = Vec::new();
        {
            let rtxn = self.env.read_txn()?;
            for item in db.iter(&rtxn)? {
                let (key, bytes) = item?;
                match pb::Record::decode(bytes)
                    .ok()
                    .and_then(|p| Record::from_proto(p).ok())
                {
                    Some(r) if keep(&r) => kept.push(r),
                    _ => drop.push(key.to_vec()),
                }
            }
        }
        if !drop.is_empty() {
            let mut wtxn = self.env.write_txn()?;
            for k in &drop {
                db.delete(&mut wtxn, k)?;
            }
            wtxn.commit()?;
        }
        Ok(kept)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use bitdust_crypto::Identity;

    #[test]
    fn contacts_and_records_survive_a_reopen_and_expired_ones_go() {
        let tmp = tempfile::tempdir().unwrap();
        let owner = Identity::generate();
        let live = Record::sign(&owner, "supplier", 1, 3600, b"x".to_vec());
        let short = Record::sign(&owner, "short", 1, 1, b"y".to_vec());
        let contact = Contact::new(Identity::generate().node_id(), "127.0.0.1:7900");
        {
            let db = Db::open(tmp.path()).unwrap();
            assert!(Db::open(tmp.path()).is_err(), "a second opener is refused");
            db.save_contacts(std::slice::from_ref(&contact)).unwrap();
            db.put(Records::Held, &[live.clone(), short.clone()])
                .unwrap();
            db.put(Records::Published, std::slice::from_ref(&live))
                .unwrap();
        }
        let db = Db::open(tmp.path()).unwrap();
        let c = db.contacts().unwrap();
        assert_eq!(c.len(), 1);
        assert_eq!(
            (c[0].id, c[0].address.as_str()),
            (contact.id, "127.0.0.1:7900")
        );
        let later = short.expires + 1;
        assert_eq!(db.drop_expired(Records::Held, later).unwrap(), 1);
        assert_eq!(db.load(Records::Held, later).unwrap(), vec![live.clone()]);
        assert_eq!(db.load(Records::Published, later).unwrap(), vec![live]);
    }
}
