//! A restore's files written on a thread of their own (issue 19: "restore
//! is parallel in the same way").
//!
//! The restoring thread plans, decompresses and checks each chunk; a
//! writing thread takes the entries and their content from it, in order,
//! and hands them to the sink (writing the files and their attributes).
//! The two overlap: a chunk is decompressed while the one before it is
//! written.
//!
//! Memory: the content handed over and not yet written is at most
//! [`BEHIND_BYTES`] (or one part, when a part is larger), on top of the
//! part being written; entries wait [`BEHIND_MESSAGES`] at most.

use std::sync::mpsc;
use std::sync::{Condvar, Mutex};
use std::time::Instant;

use bitdust_proto::format::v1 as pb;

use super::{Bytes, Content, NodeSink, SnapshotError};
use crate::stages::RestoreClocks;

/// Content bytes handed to the writing thread and not yet taken, at most.
const BEHIND_BYTES: usize = 4 << 20;

/// Messages handed to the writing thread and not yet taken, at most.
const BEHIND_MESSAGES: usize = 256;

/// The largest part asked of a file's content at once: a whole chunk.
const PART: usize = crate::chunker::FILE_CHUNKS.max;

/// What the restoring thread hands the writing thread.
// Entries move one at a time; boxing each would only add an allocation.
#[allow(clippy::large_enum_variant)]
enum Handed {
    Node(pb::Node),
    Part(Bytes),
    /// The end of the last entry's content.
    End,
}

/// The content bytes in flight, and whether the writing thread stopped.
#[derive(Default)]
struct Budget {
    state: Mutex<(usize, bool)>,
    freed: Condvar,
}

impl Budget {
    /// Waits until `n` more bytes fit (or nothing is in flight); false
    /// when the writing thread stopped.
    fn take(&self, n: usize) -> bool {
        let mut g = self.state.lock().unwrap_or_else(|e| e.into_inner());
        while !g.1 && g.0 > 0 && g.0 + n > BEHIND_BYTES {
            g = self.freed.wait(g).unwrap_or_else(|e| e.into_inner());
        }
        g.0 += n;
        !g.1
    }

    fn give(&self, n: usize) {
        let mut g = self.state.lock().unwrap_or_else(|e| e.into_inner());
        g.0 = g.0.saturating_sub(n);
        self.freed.notify_all();
    }

    fn stop(&self) {
        let mut g = self.state.lock().unwrap_or_else(|e| e.into_inner());
        g.1 = true;
        self.freed.notify_all();
    }
}

/// The restoring thread's sink: hands each entry and its content on.
struct Forward<'a> {
    tx: mpsc::SyncSender<Handed>,
    budget: &'a Budget,
    /// The writing thread stopped (its error is the restore's).
    gone: bool,
}

impl Forward<'_> {
    fn send(&mut self, m: Handed) -> Result<(), SnapshotError> {
        if self.tx.send(m).is_err() {
            self.gone = true;
            return Err(SnapshotError::Format(
                "the thread writing the files stopped".into(),
            ));
        }
        Ok(())
    }
}

impl NodeSink for Forward<'_> {
    fn node(&mut self, node: &pb::Node, content: &mut dyn Content) -> Result<(), SnapshotError> {
        self.send(Handed::Node(node.clone()))?;
        while let Some(part) = content.next_part(PART).map_err(|e| {
            SnapshotError::Format(format!(
                "reading /{}: {e}",
                String::from_utf8_lossy(&node.path)
            ))
        })? {
            if !self.budget.take(part.len()) {
                self.gone = true;
                return Err(SnapshotError::Format(
                    "the thread writing the files stopped".into(),
                ));
            }
            self.send(Handed::Part(part))?;
        }
        self.send(Handed::End)
    }
}

/// The writing thread's view of an entry's content: the parts handed
/// over, until its end.
struct Incoming<'a> {
    rx: &'a mpsc::Receiver<Handed>,
    budget: &'a Budget,
    current: Bytes,
    ended: bool,
    /// Time spent waiting for parts.
    waited: std::time::Duration,
}

impl Incoming<'_> {
    fn recv(&mut self) -> std::io::Result<Handed> {
        let t = Instant::now();
        let m = self.rx.recv();
        self.waited += t.elapsed();
        m.map_err(|_| std::io::Error::other("the restore stopped in the middle of a file"))
    }

    /// Takes what is left of the entry's content (a sink may skip it).
    fn drain(&mut self) -> std::io::Result<()> {
        self.current = Bytes::new();
        while !self.ended {
            match self.recv()? {
                Handed::Part(p) => self.budget.give(p.len()),
                Handed::End => self.ended = true,
                Handed::Node(_) => {
                    return Err(std::io::Error::other("an entry came amid a file's content"));
                }
            }
        }
        Ok(())
    }
}

impl Content for Incoming<'_> {
    fn next_part(&mut self, max: usize) -> std::io::Result<Option<Bytes>> {
        while self.current.is_empty() {
            if self.ended {
                return Ok(None);
            }
            match self.recv()? {
                Handed::Part(p) => {
                    self.budget.give(p.len());
                    self.current = p;
                }
                Handed::End => self.ended = true,
                Handed::Node(_) => {
                    return Err(std::io::Error::other("an entry came amid a file's content"));
                }
            }
        }
        Ok(Some(self.current.split_to(max.min(self.current.len()))))
    }
}

/// Runs `restore` (which hands entries to the sink it is given) with
/// `out` on a writing thread of its own. The writing thread's error is
/// the restore's when it stopped first.
pub(super) fn write_behind<S: NodeSink + Send>(
    out: &mut S,
    clocks: &RestoreClocks,
    restore: impl FnOnce(&mut dyn NodeSink) -> Result<(), SnapshotError>,
) -> Result<(), SnapshotError> {
    let budget = Budget::default();
    let (tx, rx) = mpsc::sync_channel::<Handed>(BEHIND_MESSAGES);
    std::thread::scope(|s| {
        let budget = &budget;
        let writer = std::thread::Builder::new()
            .name("restore-write".into())
            .spawn_scoped(s, move || {
                let r = write_loop(out, &rx, budget, clocks);
                // The restoring thread waits no longer for room.
                budget.stop();
                r
            })
            .map_err(|e| SnapshotError::Format(format!("starting a restore thread: {e}")))?;
        let mut forward = Forward {
            tx,
            budget,
            gone: false,
        };
        let r = restore(&mut forward);
        let gone = forward.gone;
        // The channel closes: the writing thread ends.
        drop(forward);
        let w = writer.join().unwrap_or_else(|_| {
            Err(SnapshotError::Format(
                "the thread writing the files panicked".into(),
            ))
        });
        match (r, w) {
            (Ok(()), w) => w,
            (Err(_), Err(w)) if gone => Err(w),
            (Err(e), _) => Err(e),
        }
    })
}

/// The writing thread: each entry handed over, to `out`, with its content.
fn write_loop<S: NodeSink>(
    out: &mut S,
    rx: &mpsc::Receiver<Handed>,
    budget: &Budget,
    clocks: &RestoreClocks,
) -> Result<(), SnapshotError> {
    let mut incoming = Incoming {
        rx,
        budget,
        current: Bytes::new(),
        ended: true,
        waited: std::time::Duration::ZERO,
    };
    let mut busy = std::time::Duration::ZERO;
    let r = loop {
        let node = match rx.recv() {
            Err(_) => break Ok(()),
            Ok(Handed::Node(n)) => n,
            Ok(_) => {
                break Err(SnapshotError::Format(
                    "content came where an entry was due".into(),
                ));
            }
        };
        let t = Instant::now();
        incoming.ended = false;
        incoming.waited = std::time::Duration::ZERO;
        let r = out.node(&node, &mut incoming).and_then(|()| {
            incoming
                .drain()
                .map_err(|e| SnapshotError::Format(e.to_string()))
        });
        busy += t.elapsed().saturating_sub(incoming.waited);
        if let Err(e) = r {
            break Err(e);
        }
    };
    clocks
        .written
        .fetch_add(busy.as_nanos() as u64, std::sync::atomic::Ordering::Relaxed);
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A file entry of `parts` parts of `len` bytes, numbered `n`.
    fn file(n: usize) -> pb::Node {
        pb::Node {
            path: format!("f{n}").into_bytes(),
            kind: pb::NodeKind::File as i32,
            ..Default::default()
        }
    }

    /// A part's bytes, counted as freed when the last of them goes.
    struct Counted(Vec<u8>, Arc<AtomicUsize>);

    impl AsRef<[u8]> for Counted {
        fn as_ref(&self) -> &[u8] {
            &self.0
        }
    }

    impl Drop for Counted {
        fn drop(&mut self) {
            self.1.fetch_add(self.0.len(), Ordering::SeqCst);
        }
    }

    /// Content handed out in parts of `len` bytes, counting the bytes made
    /// and the most alive at once (made and not yet freed).
    struct Parts {
        left: usize,
        /// Fails when this many parts are left.
        fail_at: Option<usize>,
        len: usize,
        made: Arc<AtomicUsize>,
        freed: Arc<AtomicUsize>,
        most: Arc<AtomicUsize>,
    }

    impl Content for Parts {
        fn next_part(&mut self, _max: usize) -> std::io::Result<Option<Bytes>> {
            if self.left == 0 {
                return Ok(None);
            }
            if self.fail_at == Some(self.left) {
                return Err(std::io::Error::other("a pack cannot be recovered"));
            }
            self.left -= 1;
            let made = self.made.fetch_add(self.len, Ordering::SeqCst) + self.len;
            let alive = made - self.freed.load(Ordering::SeqCst);
            self.most.fetch_max(alive, Ordering::SeqCst);
            Ok(Some(Bytes::from_owner(Counted(
                vec![self.left as u8; self.len],
                self.freed.clone(),
            ))))
        }
    }

    /// Records what it is given; skips the content of every third entry;
    /// fails at entry `fail_at`.
    struct Record {
        seen: Vec<(Vec<u8>, usize)>,
        fail_at: Option<usize>,
    }

    impl NodeSink for Record {
        fn node(
            &mut self,
            node: &pb::Node,
            content: &mut dyn Content,
        ) -> Result<(), SnapshotError> {
            let n = self.seen.len();
            if self.fail_at == Some(n) {
                return Err(SnapshotError::Format("the disk is full".into()));
            }
            let mut bytes = 0;
            if n % 3 != 2 {
                while let Some(p) = content
                    .next_part(1 << 20)
                    .map_err(|e| SnapshotError::Format(e.to_string()))?
                {
                    bytes += p.len();
                    std::thread::sleep(std::time::Duration::from_micros(200));
                }
            }
            self.seen.push((node.path.clone(), bytes));
            Ok(())
        }
    }

    /// What a run gave: its result, the entries the sink saw (path and
    /// content bytes), and the most content bytes alive at once.
    type Ran = (Result<(), SnapshotError>, Vec<(Vec<u8>, usize)>, usize);

    fn run(
        files: usize,
        parts: usize,
        len: usize,
        fail_at: Option<usize>,
        fail_after: Option<usize>,
    ) -> Ran {
        let (made, freed, most) = (
            Arc::default(),
            Arc::default(),
            Arc::<AtomicUsize>::default(),
        );
        let mut out = Record {
            seen: Vec::new(),
            fail_at,
        };
        let clocks = RestoreClocks::default();
        let r = write_behind(&mut out, &clocks, |sink| {
            for n in 0..files {
                let mut content = Parts {
                    left: parts,
                    // Amid the file's content: the writer is waiting for
                    // the rest of it when the restore stops.
                    fail_at: (fail_after == Some(n)).then_some(parts / 2),
                    len,
                    made: Arc::clone(&made),
                    freed: Arc::clone(&freed),
                    most: Arc::clone(&most),
                };
                sink.node(&file(n), &mut content)?;
            }
            Ok(())
        });
        (r, out.seen, most.load(Ordering::SeqCst))
    }

    #[test]
    fn entries_reach_the_writer_in_order_and_content_in_flight_stays_bounded() {
        let (r, seen, most) = run(12, 8, 512 << 10, None, None);
        r.unwrap();
        let want: Vec<(Vec<u8>, usize)> = (0..12)
            .map(|n| {
                let bytes = if n % 3 == 2 { 0 } else { 8 * (512 << 10) };
                (format!("f{n}").into_bytes(), bytes)
            })
            .collect();
        assert_eq!(seen, want);
        // Alive at once: the budget, the part the writer holds and the
        // one being handed over.
        assert!(
            most <= BEHIND_BYTES + 2 * (512 << 10),
            "{most} bytes were ahead of the writer"
        );
    }

    #[test]
    fn the_writers_error_is_the_restores_when_it_stops_first() {
        let (r, seen, _) = run(50, 4, 256 << 10, Some(3), None);
        assert_eq!(seen.len(), 3);
        let e = r.unwrap_err().to_string();
        assert!(e.contains("the disk is full"), "{e}");
    }

    #[test]
    fn the_restores_error_is_its_own_when_it_stops_first() {
        let (r, seen, _) = run(50, 4, 256 << 10, None, Some(4));
        // The fifth entry never finished.
        assert_eq!(seen.len(), 4);
        let e = r.unwrap_err().to_string();
        assert!(e.contains("a pack cannot be recovered"), "{e}");
    }
}
