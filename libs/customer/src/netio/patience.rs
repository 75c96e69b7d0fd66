//! How long a read waits for a supplier before reading around it (issue
//! 19): as long as this run's fetches have been taking, a few times over.
//! Restores ([`super::NetSource`]) and the rebuilder ([`Wary`]) share it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bitdust_crypto::NodeId;
use tokio::task::AbortHandle;

use crate::client::SupplierLink;

/// The least a read waits for a fragment before reading around it.
pub const MIN_PATIENCE: Duration = Duration::from_millis(150);
/// The most it waits, and what it waits before anything arrived.
pub const MAX_PATIENCE: Duration = Duration::from_secs(5);
/// How many times the typical fetch a fragment may take.
const PATIENCE_FACTOR: u32 = 4;
/// Suppliers a [`Wary`] leaves out at once at most (beyond that, a late
/// one is only read around).
const MAX_WATCHED: usize = 1024;
/// How long a supplier that never answers a ping stays left out: then it
/// is asked again (once, at one patience's cost) and watched anew if late.
const GIVE_UP_AFTER: Duration = Duration::from_secs(600);

/// How long the fetches of a run take: the slowest recent one, decaying
/// by an eighth towards each faster one.
#[derive(Clone, Copy, Debug, Default)]
pub struct Patience(pub(crate) Option<Duration>);

impl Patience {
    /// A fetch that took `took`.
    pub fn saw(&mut self, took: Duration) {
        self.0 = Some(match self.0 {
            Some(t) if took < t => t - (t - took) / 8,
            _ => took,
        });
    }

    /// How long to wait for a fetch.
    pub fn wait(&self) -> Duration {
        self.0.map_or(MAX_PATIENCE, |t| {
            (t * PATIENCE_FACTOR).clamp(MIN_PATIENCE, MAX_PATIENCE)
        })
    }
}

/// What a [`Wary`] knows: the patience, and the suppliers left out, each
/// with the task that pings it.
#[derive(Debug, Default)]
struct Known {
    patience: Patience,
    left_out: HashMap<NodeId, AbortHandle>,
}

/// The rebuilder's [`Patience`], and the suppliers it leaves out (shared by
/// the blocks rebuilt at once). A supplier whose fragment came late is not
/// asked again until it answers a ping (tried every second), as a restore
/// does ([`super::NetSource`]): a dead one costs one patience, not one per
/// round.
#[derive(Debug, Default)]
pub struct Wary {
    known: Arc<Mutex<Known>>,
    /// Fragments that came late and were read around.
    read_around: std::sync::atomic::AtomicU64,
}

fn lock(m: &Mutex<Known>) -> std::sync::MutexGuard<'_, Known> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Wary {
    /// Knowing nothing yet.
    pub fn new() -> Self {
        Wary::default()
    }

    /// How long to wait for a fetch.
    pub fn wait(&self) -> Duration {
        lock(&self.known).patience.wait()
    }

    /// A fetch from `supplier` that took `took` and answered: it is asked
    /// again.
    pub fn saw(&self, supplier: &NodeId, took: Duration) {
        let mut k = lock(&self.known);
        k.patience.saw(took);
        if let Some(w) = k.left_out.remove(supplier) {
            w.abort();
        }
    }

    /// `link`'s supplier did not answer within [`Wary::wait`]: its fragment
    /// is read around, and it is left out until it answers a ping. Called
    /// within a tokio runtime (the pinging is a task on it).
    pub fn late(&self, link: &Arc<SupplierLink>) {
        self.read_around
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut k = lock(&self.known);
        if k.left_out.contains_key(&link.node_id) || k.left_out.len() >= MAX_WATCHED {
            return;
        }
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let (known, link) = (Arc::downgrade(&self.known), link.clone());
        let id = link.node_id;
        let task = rt.spawn(async move {
            super::watch(&link, super::WATCH_EVERY, GIVE_UP_AFTER, |_| true).await;
            // Only its own entry: one `saw` removed, and a later `late`
            // replaced, while this task was finishing is another's.
            if let Some(known) = known.upgrade() {
                let mut k = lock(&known);
                if k.left_out.get(&id).map(AbortHandle::id) == Some(tokio::task::id()) {
                    k.left_out.remove(&id);
                }
            }
        });
        k.left_out.insert(id, task.abort_handle());
    }

    /// Stops watching `supplier` (it was fired: nothing will be asked of
    /// it again), letting go of its link.
    pub fn forget(&self, supplier: &NodeId) {
        if let Some(w) = lock(&self.known).left_out.remove(supplier) {
            w.abort();
        }
    }

    /// Stops watching every supplier `holds` says no longer holds a
    /// position (fired by the rebuilder or by hand), letting go of their
    /// links.
    pub fn forget_all_but(&self, holds: impl Fn(&NodeId) -> bool) {
        lock(&self.known).left_out.retain(|id, w| {
            let keep = holds(id);
            if !keep {
                w.abort();
            }
            keep
        });
    }

    /// Fragments read around for being late so far.
    pub fn read_around(&self) -> u64 {
        self.read_around.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Whether `supplier` is left out: it came late, and has not answered
    /// since.
    pub fn left_out(&self, supplier: &NodeId) -> bool {
        lock(&self.known).left_out.contains_key(supplier)
    }
}

impl Drop for Wary {
    fn drop(&mut self) {
        for (_, w) in lock(&self.known).left_out.drain() {
            w.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patience_follows_the_slowest_recent_fetch_and_stays_in_bounds() {
        let mut p = Patience::default();
        assert_eq!(p.wait(), MAX_PATIENCE, "nothing seen: the most");
        p.saw(Duration::from_millis(10));
        assert_eq!(p.wait(), MIN_PATIENCE);
        p.saw(Duration::from_millis(400));
        assert_eq!(
            p.wait(),
            Duration::from_millis(1600),
            "a slower one counts at once"
        );
        p.saw(Duration::from_millis(80));
        assert_eq!(
            p.wait(),
            Duration::from_millis(1440),
            "a faster one an eighth"
        );
        p.saw(Duration::from_secs(60));
        assert_eq!(p.wait(), MAX_PATIENCE);
    }
}
