//! Places counted in all and per key, each held while its [`Place`]
//! lives, with a cap on both: handshakes in flight per source IP, the
//! connections a supplier or a DHT peer serves per source address.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

/// Which cap a refused place met.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Full {
    /// Every place is taken.
    Total,
    /// Every place one key may hold is taken.
    PerKey,
}

/// Places counted in all and per key (see the module's text).
#[derive(Debug)]
pub struct Places<K: Hash + Eq> {
    counts: Arc<Mutex<Counts<K>>>,
    total: usize,
    per_key: usize,
}

impl<K: Hash + Eq> Clone for Places<K> {
    fn clone(&self) -> Self {
        Places {
            counts: self.counts.clone(),
            total: self.total,
            per_key: self.per_key,
        }
    }
}

#[derive(Debug)]
struct Counts<K> {
    held: usize,
    refused: u64,
    per_key: HashMap<K, usize>,
}

/// One place counted in its [`Places`] until dropped.
#[derive(Debug)]
pub struct Place<K: Hash + Eq> {
    counts: Arc<Mutex<Counts<K>>>,
    key: K,
}

fn lock<K>(m: &Mutex<Counts<K>>) -> MutexGuard<'_, Counts<K>> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl<K: Hash + Eq + Clone> Places<K> {
    /// At most `total` places, and `per_key` for any one key.
    pub fn new(total: usize, per_key: usize) -> Self {
        Places {
            counts: Arc::new(Mutex::new(Counts {
                held: 0,
                refused: 0,
                per_key: HashMap::new(),
            })),
            total,
            per_key,
        }
    }

    /// A place for `key`, or the cap that refused it (counted in
    /// [`Self::refused`]).
    pub fn take(&self, key: K) -> Result<Place<K>, Full> {
        let mut c = lock(&self.counts);
        let here = c.per_key.get(&key).copied().unwrap_or(0);
        let full = if c.held >= self.total {
            Some(Full::Total)
        } else if here >= self.per_key {
            Some(Full::PerKey)
        } else {
            None
        };
        if let Some(full) = full {
            c.refused += 1;
            return Err(full);
        }
        c.held += 1;
        *c.per_key.entry(key.clone()).or_default() += 1;
        Ok(Place {
            counts: self.counts.clone(),
            key,
        })
    }

    /// Places held now.
    pub fn held(&self) -> usize {
        lock(&self.counts).held
    }

    /// Places refused since these were made.
    pub fn refused(&self) -> u64 {
        lock(&self.counts).refused
    }
}

impl<K: Hash + Eq> Drop for Place<K> {
    fn drop(&mut self) {
        let mut c = lock(&self.counts);
        c.held = c.held.saturating_sub(1);
        if let Some(n) = c.per_key.get_mut(&self.key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                c.per_key.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn places_are_capped_in_all_and_per_key_and_freed_when_dropped() {
        let p = Places::new(3, 2);
        let a1 = p.take("a").unwrap();
        let _a2 = p.take("a").unwrap();
        assert_eq!(p.take("a").unwrap_err(), Full::PerKey);
        let _b1 = p.take("b").unwrap();
        assert_eq!(p.take("c").unwrap_err(), Full::Total);
        assert_eq!((p.held(), p.refused()), (3, 2));
        drop(a1);
        assert_eq!(p.held(), 2);
        let c1 = p.take("c").unwrap();
        assert_eq!(p.take("a").unwrap_err(), Full::Total);
        // A key's count goes when its last place does.
        drop(c1);
        drop(p.take("x").unwrap());
        assert_eq!(lock(&p.counts).per_key.len(), 2);
        assert_eq!((p.held(), p.refused()), (2, 3));
    }
}
