//! The delivery protocol: what the pipeline hands a sink, and how the sink says what it
//! holds.
//!
//! Sinks acknowledge in order through a watermark: the outbox sequence number up to which
//! the sink holds every event. The pipeline reads the lowest watermark of all sinks to know
//! which events it may forget and which push-source messages it may acknowledge upstream.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::model::ClusterEvent;

/// One event of a commit, whose events share one allocation: the engine's own list of them,
/// moved, not copied. An allocation per event copied each (about 400 bytes) into fresh
/// memory; at a startup burst of a million events that was a tenth of the engine task's time.
/// The commit's events are freed together, once the last of them is let go. They were held
/// together before too: the commit's deliveries stay with the engine task until the slowest
/// sink's queue has taken the last of them. Now they stay until that sink has sent it.
#[derive(Clone)]
pub struct EventRef {
    events: Arc<Vec<ClusterEvent>>,
    index: usize,
}

impl EventRef {
    /// Each of `events`, in order, sharing one allocation.
    pub fn all(events: Vec<ClusterEvent>) -> impl Iterator<Item = EventRef> {
        let n = events.len();
        let events = Arc::new(events);
        (0..n).map(move |index| EventRef { events: events.clone(), index })
    }
}

impl From<ClusterEvent> for EventRef {
    fn from(event: ClusterEvent) -> EventRef {
        EventRef { events: Arc::new(vec![event]), index: 0 }
    }
}

impl std::ops::Deref for EventRef {
    type Target = ClusterEvent;

    fn deref(&self) -> &ClusterEvent {
        &self.events[self.index]
    }
}

impl std::fmt::Debug for EventRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        (**self).fmt(f)
    }
}

/// One event on its way to a sink: its place in the outbox and its JSON line.
#[derive(Clone, Debug)]
pub struct Delivery {
    pub seq: u64,
    pub line: Arc<str>,
    /// The event itself, for sinks that need its fields (keys, headers, the ack histogram).
    pub event: EventRef,
}

/// One raw record on its way from an edge to Kafka (DESIGN §10): the line as a source read it
/// (or, for a probe's or poller's finding, its generic line), keyed by cluster.
#[derive(Clone, Debug)]
pub struct Forward {
    pub seq: u64,
    pub line: Arc<str>,
    /// The record's cluster: the source's for OpenZiti records, a generic record's own.
    pub cluster: Arc<str>,
    /// The record's reporter (OpenZiti records before v1.3 take the source's).
    pub reporter: Arc<str>,
}

/// A sink's acknowledgement watermark, shared between the sink (which raises it, with
/// `Release`) and the pipeline (which reads it, with `Acquire`).
pub type Acked = Arc<AtomicU64>;

/// The lowest watermark of `sinks`: every sink holds every event up to it.
pub fn held<'a>(sinks: impl IntoIterator<Item = &'a Acked>) -> u64 {
    sinks.into_iter().map(|a| a.load(Ordering::Acquire)).min().unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{EventKind, Timestamp};

    #[test]
    fn a_commit_s_events_share_one_allocation_and_each_reads_as_its_own() {
        let events: Vec<ClusterEvent> = (0..3)
            .map(|i| ClusterEvent::new(EventKind::RouterOnline, "c", Timestamp(i), Timestamp(i)))
            .collect();
        let refs: Vec<EventRef> = EventRef::all(events).collect();
        let at: Vec<i64> = refs.iter().map(|e| e.at.0).collect();
        assert_eq!(at, [0, 1, 2]);
        assert!(refs.iter().all(|e| Arc::ptr_eq(&e.events, &refs[0].events)));
        // The allocation lives while any of its events does.
        let last = refs[2].clone();
        drop(refs);
        assert_eq!(last.at, Timestamp(2));
        assert_eq!(Arc::strong_count(&last.events), 1);
    }
}
