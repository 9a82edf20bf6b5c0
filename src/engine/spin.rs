//! Spin detection for one terminator slot `(service, router, host)` (DESIGN §5.5).
//!
//! A cycle completes when a `deleted` follows a `created` in the slot (terminator ids differ
//! between cycles, so the slot, not the id, is what spins). N completions with at most T
//! between the first and the N-th start an episode (`terminator.spin_started` at the N-th);
//! T without a completion ends it (`terminator.spin_stopped` at last completion + T).
//! The window W is not applied again: these events are already the product of a window.

use super::window::{Scheduled, Sequence};
use crate::model::{EntityOp, Nanos, Timestamp};
use serde::{Deserialize, Serialize};

/// One slot's spin state.
///
/// Most slots never complete a cycle (a terminator that lives on), so what completions need
/// is boxed apart: at a million slots, every byte held inline counts twice (once more at the
/// hash table's load factor).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(from = "Persisted")]
pub struct SpinSlot {
    /// A `created` awaits its `deleted`.
    pub created: bool,
    pub spinning: bool,
    /// Records counted as suppressed since the last event of this slot.
    pub suppressed: u32,
    pub last_record: Timestamp,
    /// Newest record time per reporter, for staleness. A boxed slice: most slots have one
    /// reporter, and a `Vec`'s capacity word pays for [`SpinSlot::check`].
    pub seen: Box<[(u32, Timestamp)]>,
    /// From the first completed cycle on.
    cycles: Option<Box<Cycles>>,
    /// When the slot's one eviction check is due, so that its entry alone restores it (as a
    /// router's does). Snapshots of format 2 and entries of format 1 do not carry it.
    pub check: Timestamp,
}

// A mesh has slots by the million: the check came with `seen` losing its capacity word.
const _: () = assert!(std::mem::size_of::<SpinSlot>() == 48);

#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Cycles {
    /// Completion times while not spinning; never more than N.
    recent: Vec<Timestamp>,
    /// Completions in the current episode.
    episode_cycles: u32,
    last_completion: Timestamp,
    /// The deadline sequence number of the pending `spin_started`. It fires in the same
    /// flush as the completion that scheduled it, so its cycle count is `episode_cycles`.
    start: Option<u64>,
    /// The deadline sequence number of the episode's `spin_stopped`.
    stop_seq: Option<u64>,
}

/// A slot as snapshots hold it: the fields in their order of snapshot format 1.
#[derive(Deserialize)]
struct Persisted {
    created: bool,
    recent: Vec<Timestamp>,
    spinning: bool,
    episode_cycles: u32,
    last_completion: Timestamp,
    start: Option<u64>,
    stop_seq: Option<u64>,
    suppressed: u32,
    last_record: Timestamp,
    seen: Vec<(u32, Timestamp)>,
}

/// Written as [`Persisted`] reads it, from borrowed fields: every commit snapshots every
/// slot, and a copy of each on the way would cost an allocation per slot.
impl Serialize for SpinSlot {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let none = Cycles::default();
        let c = self.cycles.as_deref().unwrap_or(&none);
        let mut st = s.serialize_struct("Persisted", 10)?;
        st.serialize_field("created", &self.created)?;
        st.serialize_field("recent", &c.recent)?;
        st.serialize_field("spinning", &self.spinning)?;
        st.serialize_field("episode_cycles", &c.episode_cycles)?;
        st.serialize_field("last_completion", &c.last_completion)?;
        st.serialize_field("start", &c.start)?;
        st.serialize_field("stop_seq", &c.stop_seq)?;
        st.serialize_field("suppressed", &self.suppressed)?;
        st.serialize_field("last_record", &self.last_record)?;
        st.serialize_field("seen", &self.seen)?;
        st.end()
    }
}

impl From<Persisted> for SpinSlot {
    fn from(p: Persisted) -> SpinSlot {
        let c = Cycles {
            recent: p.recent,
            episode_cycles: p.episode_cycles,
            last_completion: p.last_completion,
            start: p.start,
            stop_seq: p.stop_seq,
        };
        SpinSlot {
            created: p.created,
            spinning: p.spinning,
            suppressed: p.suppressed,
            last_record: p.last_record,
            seen: p.seen.into_boxed_slice(),
            cycles: (c != Cycles::default()).then(|| Box::new(c)),
            check: crate::engine::cluster::NO_CHECK,
        }
    }
}

/// What a `spin_*` deadline produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpinFired {
    pub started: bool,
    pub at: Timestamp,
    pub cycles: u32,
    pub suppressed: u32,
}

impl SpinSlot {
    /// Whether a record of `reporter` at `at` is older than one already applied; if not, it
    /// becomes the newest.
    pub fn stale(&mut self, reporter: u32, at: Timestamp) -> bool {
        match self.seen.iter_mut().find(|(r, _)| *r == reporter) {
            Some((_, newest)) if at < *newest => true,
            Some((_, newest)) => {
                *newest = at;
                false
            }
            None => {
                let mut seen = std::mem::take(&mut self.seen).into_vec();
                seen.reserve_exact(1);
                seen.push((reporter, at));
                self.seen = seen.into_boxed_slice();
                false
            }
        }
    }

    /// Applies one created/deleted record. Returns the deadlines to schedule (spin_started
    /// due now, spin_stopped later) and whether the record was suppressed (slot spinning).
    pub fn record(
        &mut self,
        op: EntityOp,
        at: Timestamp,
        cycles_needed: u32,
        period: Nanos,
        seq: &mut Sequence,
    ) -> (Vec<Scheduled>, bool) {
        let suppressed = self.spinning;
        if suppressed {
            self.suppressed = self.suppressed.saturating_add(1);
        }
        let mut due = Vec::new();
        match op {
            EntityOp::Created => self.created = true,
            EntityOp::Deleted if self.created => {
                self.created = false;
                self.complete(at, cycles_needed.max(1), period, seq, &mut due);
            }
            EntityOp::Deleted => {}
        }
        (due, suppressed)
    }

    fn complete(
        &mut self,
        at: Timestamp,
        cycles_needed: u32,
        period: Nanos,
        seq: &mut Sequence,
        due: &mut Vec<Scheduled>,
    ) {
        let c = self.cycles.get_or_insert_with(Box::default);
        if self.spinning {
            c.episode_cycles = c.episode_cycles.saturating_add(1);
        } else {
            c.recent.push(at);
            c.recent.retain(|&f| at.saturating_sub(f) <= period);
            let excess = c.recent.len().saturating_sub(cycles_needed as usize);
            c.recent.drain(..excess);
            if c.recent.len() < cycles_needed as usize {
                return;
            }
            self.spinning = true;
            c.episode_cycles = u32::try_from(c.recent.len()).unwrap_or(u32::MAX);
            c.recent = Vec::new();
            let s = seq.issue();
            c.start = Some(s);
            due.push(Scheduled { due: at, at, seq: s });
        }
        c.last_completion = c.last_completion.max(at);
        let stop_at = c.last_completion.saturating_add(period);
        let s = seq.issue();
        c.stop_seq = Some(s);
        due.push(Scheduled { due: stop_at, at: stop_at, seq: s });
    }

    /// Fires the deadline `seq` if it is still current.
    pub fn fire(&mut self, seq: u64, period: Nanos) -> Option<SpinFired> {
        let c = self.cycles.as_mut()?;
        if c.start == Some(seq) {
            c.start = None;
            return Some(SpinFired {
                started: true,
                at: c.last_completion,
                cycles: c.episode_cycles,
                suppressed: std::mem::take(&mut self.suppressed),
            });
        }
        if self.spinning && c.stop_seq == Some(seq) {
            self.spinning = false;
            c.stop_seq = None;
            let cycles = std::mem::take(&mut c.episode_cycles);
            return Some(SpinFired {
                started: false,
                at: c.last_completion.saturating_add(period),
                cycles,
                suppressed: std::mem::take(&mut self.suppressed),
            });
        }
        None
    }

    /// A quiet slot keeps nothing worth remembering past the key TTL.
    pub fn is_quiet(&self) -> bool {
        !self.spinning && self.cycles.as_ref().is_none_or(|c| c.start.is_none())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Nanos = Nanos(60);

    fn cycle(s: &mut SpinSlot, at: i64, seq: &mut Sequence) -> Vec<Scheduled> {
        s.record(EntityOp::Created, Timestamp(at), 3, T, seq);
        s.record(EntityOp::Deleted, Timestamp(at), 3, T, seq).0
    }

    #[test]
    fn n_cycles_within_t_start_an_episode_at_the_nth() {
        let mut seq = Sequence::default();
        let mut s = SpinSlot::default();
        assert!(cycle(&mut s, 0, &mut seq).is_empty());
        assert!(cycle(&mut s, 30, &mut seq).is_empty());
        let due = cycle(&mut s, 60, &mut seq);
        assert_eq!(due.len(), 2);
        assert_eq!((due[0].due, due[1].due), (Timestamp(60), Timestamp(120)));
        let f = s.fire(due[0].seq, T).unwrap();
        assert_eq!((f.started, f.at, f.cycles), (true, Timestamp(60), 3));
    }

    #[test]
    fn completions_further_apart_than_t_do_not_spin() {
        let mut seq = Sequence::default();
        let mut s = SpinSlot::default();
        cycle(&mut s, 0, &mut seq);
        cycle(&mut s, 30, &mut seq);
        assert!(cycle(&mut s, 61, &mut seq).is_empty());
        assert!(!s.spinning);
    }

    #[test]
    fn quiet_for_t_stops_with_the_whole_episode_counted() {
        let mut seq = Sequence::default();
        let mut s2 = SpinSlot::default();
        cycle(&mut s2, 0, &mut seq);
        cycle(&mut s2, 1, &mut seq);
        let start = cycle(&mut s2, 2, &mut seq);
        s2.fire(start[0].seq, T).unwrap();
        let later = cycle(&mut s2, 50, &mut seq);
        assert_eq!(later.len(), 1);
        assert!(s2.fire(start[1].seq, T).is_none(), "superseded stop deadline");
        let f = s2.fire(later[0].seq, T).unwrap();
        assert_eq!((f.started, f.at, f.cycles), (false, Timestamp(110), 4));
        assert_eq!(f.suppressed, 2, "both records of the cycle while spinning");
    }
}
