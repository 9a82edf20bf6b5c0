//! The outbox: events emitted but not yet held by every sink, and the push-source
//! acknowledgements that wait for them.
//!
//! Every event gets the next sequence number. Sinks acknowledge through watermarks (see
//! [`super::delivery`]); the lowest one, `held`, says up to where every sink holds every
//! event. A commit drops what is held from the outbox (and so from the state on disk), and a
//! push source's message is acknowledged upstream only once every event produced up to its
//! commit is held.

use std::collections::VecDeque;
use std::sync::Arc;

use super::delivery::{Delivery, EventRef};
use super::input::OnCommit;
use crate::state::{chunks, Chunk};

/// The batches of one commit, and the last event it holds.
pub struct Sealed {
    mark: u64,
    batches: Vec<OnCommit>,
}

#[derive(Default)]
pub struct Outbox {
    /// Events not yet held by every sink, oldest first: (sequence number, JSON line).
    events: VecDeque<(u64, Arc<str>)>,
    next_seq: u64,
    /// After-commit actions of batches applied since the last commit.
    uncommitted: Vec<OnCommit>,
    /// Committed batches waiting for every sink to hold the events produced by then: (the
    /// sequence number to wait for, what to do then).
    waiting: VecDeque<(u64, OnCommit)>,
    /// The chunks the store holds (or will, once the commit under way is written), oldest
    /// first: (first, last sequence number).
    chunks: VecDeque<(u64, u64)>,
    /// The last sequence number given to the store in a chunk.
    chunked: u64,
}

impl Outbox {
    /// Gives events sequence numbers; returns them as deliveries.
    pub fn enqueue(&mut self, events: Vec<(Arc<str>, EventRef)>) -> Vec<Delivery> {
        events
            .into_iter()
            .map(|(line, event)| {
                self.next_seq += 1;
                self.events.push_back((self.next_seq, line.clone()));
                Delivery { seq: self.next_seq, line, event }
            })
            .collect()
    }

    /// A batch was applied; `f` runs once it is committed and its events are held.
    pub fn after_commit(&mut self, f: OnCommit) {
        self.uncommitted.push(f);
    }

    /// The batches applied so far, and the events emitted until now, as one commit whose
    /// write is under way: batches applied meanwhile belong to the next one.
    pub fn seal(&mut self) -> Sealed {
        Sealed { mark: self.next_seq, batches: std::mem::take(&mut self.uncommitted) }
    }

    /// [`Outbox::seal`], with the batches handed to `then`, which gives what runs in their
    /// place once the commit's events are held.
    pub fn seal_with(&mut self, then: impl FnOnce(Vec<OnCommit>) -> OnCommit) -> Sealed {
        let batches = std::mem::take(&mut self.uncommitted);
        Sealed { mark: self.next_seq, batches: vec![then(batches)] }
    }

    /// A sealed commit is on disk: its batches wait for its events.
    pub fn committed_sealed(&mut self, sealed: Sealed) {
        for f in sealed.batches {
            self.waiting.push_back((sealed.mark, f));
        }
    }

    /// Runs the after-commit actions whose events every sink now holds.
    pub fn release(&mut self, held: u64) {
        while self.waiting.front().is_some_and(|(mark, _)| *mark <= held) {
            if let Some((_, f)) = self.waiting.pop_front() {
                f();
            }
        }
    }

    /// Forgets the events every sink holds; returns the stored chunks that go with them
    /// (all of whose events are held), by their first sequence number.
    pub fn trim(&mut self, held: u64) -> Vec<u64> {
        while self.events.front().is_some_and(|(seq, _)| *seq <= held) {
            self.events.pop_front();
        }
        let mut gone = Vec::new();
        while self.chunks.front().is_some_and(|(_, last)| *last <= held) {
            if let Some((first, _)) = self.chunks.pop_front() {
                gone.push(first);
            }
        }
        gone
    }

    /// Cuts the events not yet given to the store into chunks of consecutive sequence
    /// numbers, remembered until [`Outbox::trim`] lets them go. After a restart the first
    /// call takes the redelivered events too, under their new numbers.
    pub fn chunk_new(&mut self) -> Vec<Chunk> {
        let start = self.events.partition_point(|(seq, _)| *seq <= self.chunked);
        let out = chunks(self.events.range(start..).map(|(seq, l)| (*seq, l.clone())));
        self.chunks.extend(out.iter().map(|c| (c.first, c.first + c.lines.len() as u64 - 1)));
        self.chunked = self.next_seq;
        out
    }

    /// Whether a commit would drop held events from the outbox on disk.
    pub fn trimmable(&self, held: u64) -> bool {
        self.events.front().is_some_and(|(seq, _)| *seq <= held)
    }

    /// Anything still out: events not held, or acknowledgements waiting.
    pub fn is_busy(&self) -> bool {
        !self.events.is_empty() || !self.waiting.is_empty()
    }

    /// The last sequence number handed out.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    pub fn len(&self) -> usize {
        self.events.len()
    }

    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    /// The events not yet held, oldest first, as the state stores them.
    pub fn lines(&self) -> impl Iterator<Item = (u64, &Arc<str>)> {
        self.events.iter().map(|(seq, l)| (*seq, l))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{ClusterEvent, EventKind, Timestamp};
    use crate::state::CHUNK_EVENTS;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn events(n: usize) -> Vec<(Arc<str>, EventRef)> {
        (0..n)
            .map(|i| {
                let e = ClusterEvent::new(
                    EventKind::RouterOnline,
                    "c",
                    Timestamp(i as i64),
                    Timestamp(i as i64),
                )
                .seal(&[]);
                (Arc::from(format!("line {i}")), EventRef::from(e))
            })
            .collect()
    }

    #[test]
    fn sequence_numbers_count_on_and_held_events_are_trimmed() {
        let mut o = Outbox::default();
        let first: Vec<u64> = o.enqueue(events(3)).iter().map(|d| d.seq).collect();
        let second: Vec<u64> = o.enqueue(events(2)).iter().map(|d| d.seq).collect();
        assert_eq!(first, [1, 2, 3]);
        assert_eq!(second, [4, 5]);
        assert!(!o.trimmable(0));
        assert!(o.trimmable(2));
        o.trim(2);
        let lines: Vec<&str> = o.lines().map(|(_, l)| &**l).collect();
        assert_eq!(lines, ["line 2", "line 0", "line 1"]);
        assert_eq!(o.len(), 3);
        o.trim(u64::MAX);
        assert!(o.is_empty());
    }

    #[test]
    fn a_stored_chunk_goes_once_every_sink_holds_its_last_event() {
        let mut o = Outbox::default();
        let n = CHUNK_EVENTS + 2;
        o.enqueue(events(n));
        let chunks = o.chunk_new();
        let sizes: Vec<(u64, usize)> = chunks.iter().map(|c| (c.first, c.lines.len())).collect();
        assert_eq!(sizes, [(1, CHUNK_EVENTS), (CHUNK_EVENTS as u64 + 1, 2)]);
        assert_eq!(&*chunks[1].lines[1], format!("line {}", n - 1));
        assert!(o.trim(CHUNK_EVENTS as u64 - 1).is_empty(), "its last event is not held");
        assert_eq!(o.len(), 3);
        assert_eq!(o.trim(CHUNK_EVENTS as u64 + 1), [1]);
        assert_eq!(o.trim(n as u64), [CHUNK_EVENTS as u64 + 1]);
        assert!(!o.is_busy());
    }

    #[test]
    fn a_batch_is_acknowledged_only_once_committed_and_its_events_are_held() {
        let mut o = Outbox::default();
        let ran = Arc::new(AtomicUsize::new(0));
        let r = ran.clone();
        o.after_commit(Box::new(move || {
            r.fetch_add(1, Ordering::SeqCst);
        }));
        o.enqueue(events(2));
        o.release(u64::MAX);
        assert_eq!(ran.load(Ordering::SeqCst), 0, "not committed yet");
        let sealed = o.seal();
        o.committed_sealed(sealed);
        o.release(1);
        assert_eq!(ran.load(Ordering::SeqCst), 0, "event 2 is not held yet");
        assert!(o.is_busy());
        o.release(2);
        assert_eq!(ran.load(Ordering::SeqCst), 1);
        o.trim(2);
        assert!(!o.is_busy());
    }
}
