//! Engine time and what is scheduled on it, shared by every cluster: the clock, the source of
//! sequence numbers, the deadline heap, the eviction checks, and the counters.
//!
//! Deadlines of every key live in one binary heap ordered by `(due, at, seq)`, the output
//! order of DESIGN §5.2. A key that changes its candidate gets a new sequence number; the old
//! heap entry stays and is skipped when it surfaces (lazy invalidation). The cost of a record
//! is thus `O(log n)` in the number of pending deadlines, never a scan of the keys.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};

use super::cluster::StateKey;
use super::window::{Scheduled, Sequence};
use super::Stats;
use crate::model::{Nanos, Timestamp};

/// A key's deadline. Field order is the heap's order.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub(crate) struct Deadline {
    pub due: Timestamp,
    pub at: Timestamp,
    pub seq: u64,
    pub cluster: u32,
    pub key: StateKey,
}

/// When to look at whether a key may be evicted.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub(crate) struct EvictionCheck {
    pub due: Timestamp,
    pub cluster: u32,
    pub key: StateKey,
}

/// Persisted in snapshots in field order.
#[derive(Serialize, Deserialize)]
pub(crate) struct Schedule {
    pub now: Timestamp,
    pub seq: Sequence,
    pub deadlines: BinaryHeap<Reverse<Deadline>>,
    pub evictions: BinaryHeap<Reverse<EvictionCheck>>,
    pub stats: Stats,
    /// While the engine tracks changes: the heaps' entries pushed (`true`) and popped
    /// (`false`) since the last commit, by entry key ([`super::entries`]).
    #[serde(skip)]
    pub log: Option<FxHashMap<Vec<u8>, bool>>,
}

/// Entry key prefixes of the heaps' elements.
pub(crate) const DEADLINE: u8 = b'D';
pub(crate) const EVICTION: u8 = b'V';

/// Whether `key`'s deadline lives in its own entry, not in an entry of its own: a router's
/// pending candidate is its deadline. Routers are the keys a mesh has by the million; three
/// entries per new router were most of what a commit of a startup burst wrote. A router's
/// superseded deadlines are not kept: they fire nothing. (A terminator slot's deadlines stay
/// apart: which of them is current is not in the slot alone.)
pub(crate) fn deadline_in_own_entry(key: &StateKey) -> bool {
    matches!(key, StateKey::Router(_))
}

/// Whether `key`'s eviction check lives in its own entry: routers and terminator slots hold
/// their check's time ([`super::cluster::RouterState::check`], `SpinSlot::check`), so that a
/// new one is one entry.
pub(crate) fn check_in_own_entry(key: &StateKey) -> bool {
    matches!(key, StateKey::Router(_) | StateKey::Slot(_))
}

/// A heap element's entry key: its prefix, then the element itself.
pub(crate) fn heap_key<T: Serialize>(prefix: u8, item: &T) -> Vec<u8> {
    // Encoding these plain structs cannot fail; an empty key would only be skipped.
    postcard::to_extend(item, vec![prefix]).unwrap_or_default()
}

impl Schedule {
    pub fn new() -> Schedule {
        Schedule {
            now: Timestamp::MIN,
            seq: Sequence::default(),
            deadlines: BinaryHeap::new(),
            evictions: BinaryHeap::new(),
            stats: Stats::default(),
            log: None,
        }
    }

    pub fn push(&mut self, s: Scheduled, cluster: u32, key: StateKey) {
        let d = Deadline { due: s.due, at: s.at, seq: s.seq, cluster, key };
        if let Some(log) = self.log.as_mut().filter(|_| !deadline_in_own_entry(&d.key)) {
            log.insert(heap_key(DEADLINE, &d), true);
        }
        self.deadlines.push(Reverse(d));
    }

    pub fn push_eviction(&mut self, check: EvictionCheck) {
        if let Some(log) = self.log.as_mut().filter(|_| !check_in_own_entry(&check.key)) {
            log.insert(heap_key(EVICTION, &check), true);
        }
        self.evictions.push(Reverse(check));
    }

    /// A heap element left: an entry pushed since the last commit never reached the store
    /// and is forgotten; an older one becomes a tombstone. Elements are unique (a deadline
    /// by its sequence number, an eviction check by its key's one check), so a key pushed
    /// in this commit is never also an older one.
    fn popped(&mut self, own_entry: bool, key: impl FnOnce() -> Vec<u8>) {
        if let Some(log) = self.log.as_mut().filter(|_| !own_entry) {
            let key = key();
            if log.remove(&key) != Some(true) {
                log.insert(key, false);
            }
        }
    }

    /// Arms the one eviction check a key has; it re-arms itself until the key goes.
    /// Returns when it is due.
    pub fn arm_eviction(
        &mut self,
        last_record: Timestamp,
        cluster: u32,
        key: StateKey,
        ttl: Nanos,
    ) -> Timestamp {
        let due = last_record.saturating_add(ttl);
        self.push_eviction(EvictionCheck { due, cluster, key });
        due
    }

    /// The next deadline due by engine time.
    pub fn pop_due(&mut self) -> Option<Deadline> {
        let d = match self.deadlines.peek() {
            Some(Reverse(d)) if d.due <= self.now => self.deadlines.pop().map(|Reverse(d)| d),
            _ => None,
        }?;
        self.popped(deadline_in_own_entry(&d.key), || heap_key(DEADLINE, &d));
        Some(d)
    }

    /// The next eviction check due by engine time.
    pub fn pop_eviction_due(&mut self) -> Option<EvictionCheck> {
        let e = match self.evictions.peek() {
            Some(Reverse(e)) if e.due <= self.now => self.evictions.pop().map(|Reverse(e)| e),
            _ => None,
        }?;
        self.popped(check_in_own_entry(&e.key), || heap_key(EVICTION, &e));
        Some(e)
    }

    /// The earliest deadline or eviction check.
    pub fn next_due(&self) -> Option<Timestamp> {
        let deadline = self.deadlines.peek().map(|Reverse(d)| d.due);
        let eviction = self.evictions.peek().map(|Reverse(e)| e.due);
        match (deadline, eviction) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}
