//! How long a read waits for a supplier before reading around it (issue
//! 19): as long as this run's fetches have been taking, a few times over.
//! Restores ([`super::NetSource`]) and the rebuilder ([`Wary`]) share it.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The least a read waits for a fragment before reading around it.
pub const MIN_PATIENCE: Duration = Duration::from_millis(150);
/// The most it waits, and what it waits before anything arrived.
pub const MAX_PATIENCE: Duration = Duration::from_secs(5);
/// How many times the typical fetch a fragment may take.
const PATIENCE_FACTOR: u32 = 4;
/// Positions a [`Wary`] tracks at most (codes have 64 at most).
const MAX_POSITIONS: usize = 1024;
/// How long the rebuilder leaves out a position that answered late.
const LEFT_OUT_FOR: Duration = Duration::from_secs(10);

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

/// The rebuilder's [`Patience`], and the positions it leaves out for a
/// while after one answered late (shared by the blocks rebuilt at once).
#[derive(Debug)]
pub struct Wary {
    inner: Mutex<(Patience, Vec<Option<Instant>>)>,
    /// Fragments that came late and were read around.
    read_around: std::sync::atomic::AtomicU64,
}

impl Wary {
    /// For `positions` positions.
    pub fn new(positions: usize) -> Self {
        Wary {
            inner: Mutex::new((Patience::default(), vec![None; positions])),
            read_around: std::sync::atomic::AtomicU64::new(0),
        }
    }

    fn with<T>(&self, f: impl FnOnce(&mut (Patience, Vec<Option<Instant>>)) -> T) -> T {
        let mut g = self
            .inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        f(&mut g)
    }

    /// How long to wait for a fetch.
    pub fn wait(&self) -> Duration {
        self.with(|(p, _)| p.wait())
    }

    /// A fetch from `position` that took `took` and answered.
    pub fn saw(&self, position: usize, took: Duration) {
        self.with(|(p, late)| {
            p.saw(took);
            if let Some(l) = late.get_mut(position) {
                *l = None;
            }
        });
    }

    /// `position` did not answer within [`Wary::wait`]: its fragment is
    /// read around.
    pub fn late(&self, position: usize) {
        self.read_around
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.with(|(_, late)| {
            if position < MAX_POSITIONS {
                if late.len() <= position {
                    late.resize(position + 1, None);
                }
                late[position] = Some(Instant::now());
            }
        });
    }

    /// Fragments read around for being late so far.
    pub fn read_around(&self) -> u64 {
        self.read_around.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Whether `position` answered late in the last [`LEFT_OUT_FOR`].
    pub fn left_out(&self, position: usize) -> bool {
        self.with(|(_, late)| {
            late.get(position)
                .copied()
                .flatten()
                .is_some_and(|t| t.elapsed() < LEFT_OUT_FOR)
        })
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

    #[test]
    fn a_late_position_is_left_out_until_it_answers() {
        let w = Wary::new(3);
        assert!(!w.left_out(1));
        w.late(1);
        assert!(w.left_out(1) && !w.left_out(0));
        w.saw(1, Duration::from_millis(5));
        assert!(!w.left_out(1));
        // Beyond the first count: tracked too; far beyond: never a panic.
        w.late(9);
        assert!(w.left_out(9));
        w.late(usize::MAX);
        assert!(!w.left_out(usize::MAX));
    }
}
