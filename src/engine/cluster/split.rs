//! Split brain (DESIGN §5.4): two or more live reporters claiming leadership at once.
//!
//! An episode starts when the claims have held for the split window, and ends when at most
//! one live reporter has claimed for the split window. Both transitions are candidates that
//! wait out the window like a key's pending value; a candidate that ends within it is a
//! revert, counted and carried on the next split event. The window is not applied again to
//! these events: they are already the product of one.

use serde::{Deserialize, Serialize};

use super::key::StateKey;
use super::names::NodeId;
use super::Cluster;
use crate::engine::schedule::Schedule;
use crate::engine::window::Scheduled;
use crate::model::{ClusterEvent, EventKind, Timestamp};

/// Persisted in snapshots in field order.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub(crate) struct SplitBrain {
    /// Inside an episode: `cluster.split_brain` was emitted, its resolution not yet.
    active: bool,
    /// When the second live claim began, and its deadline's sequence number.
    candidate: Option<(Timestamp, u64)>,
    /// When the claims fell to one or none during an episode, and its deadline's number.
    resolving: Option<(Timestamp, u64)>,
    /// Candidates that ended within the window since the last split event.
    suppressed: u32,
}

impl SplitBrain {
    /// Inside an episode, or a candidate waiting: the key has a value.
    pub fn holds(&self) -> bool {
        self.active || self.candidate.is_some()
    }

    pub fn is_active(&self) -> bool {
        self.active
    }

    /// Nothing waits out the split window.
    pub fn is_settled(&self) -> bool {
        self.candidate.is_none() && self.resolving.is_none()
    }
}

impl Cluster {
    /// The live reporters claiming leadership, by name.
    fn claimants(&self) -> Vec<NodeId> {
        let mut c: Vec<NodeId> =
            self.live_views().filter(|(r, v)| *v == Some(*r)).map(|(r, _)| r).collect();
        c.sort_by(|a, b| self.names.name(*a).cmp(self.names.name(*b)));
        c
    }

    /// Re-derives the split-brain candidate after the claims or the live reporters changed.
    pub(super) fn derive_split(&mut self, at: Timestamp, sched: &mut Schedule) {
        let claims = self.live_views().filter(|(r, v)| *v == Some(*r)).count();
        let split = &mut self.split;
        // Outside an episode the candidate is a split; inside one, its resolution.
        let (holds, candidate, kind) = if split.active {
            (claims <= 1, &mut split.resolving, EventKind::SplitBrainResolved)
        } else {
            (claims >= 2, &mut split.candidate, EventKind::SplitBrain)
        };
        if holds {
            if candidate.is_none() {
                let seq = sched.seq.issue();
                *candidate = Some((at, seq));
                let due = at.saturating_add(self.params.split_window);
                sched.push(Scheduled { due, at, seq }, self.index, StateKey::SplitBrain);
            }
        } else if candidate.take().is_some() {
            split.suppressed += 1;
            self.count_suppressed(kind, sched);
        }
    }

    /// Emits the episode's start or end if `seq` still names its candidate.
    pub(super) fn fire_split(&mut self, seq: u64) -> Option<ClusterEvent> {
        let window = self.params.split_window;
        let names = self.names.names_of(self.claimants());
        let split = &mut self.split;
        let (kind, at) = match (split.candidate, split.resolving) {
            (Some((at, s)), _) if s == seq => {
                split.candidate = None;
                split.active = true;
                (EventKind::SplitBrain, at)
            }
            (_, Some((at, s))) if s == seq => {
                split.resolving = None;
                split.active = false;
                (EventKind::SplitBrainResolved, at)
            }
            _ => return None,
        };
        let mut e = ClusterEvent::new(kind, &self.name, at, at.saturating_add(window));
        e.suppressed = std::mem::take(&mut split.suppressed);
        if kind == EventKind::SplitBrain {
            e.leaders = Some(names.clone());
        }
        e.reporters = Some(names);
        Some(StateKey::SplitBrain.stamp(e, &self.names))
    }
}
