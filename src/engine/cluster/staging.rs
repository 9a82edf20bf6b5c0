//! Two-phase entity changes (DESIGN §4.1): a change applies once its `committed` arrives.
//!
//! Either half may come first: OpenZiti dispatches each event on its own goroutine. A half
//! that waits longer than [`STAGING_TTL`] of engine time, or beyond [`MAX_STAGED`], is
//! dropped, and so is every half still waiting at the end of a replay (DESIGN §5.4a), each
//! counted as ignored: rolled-back transactions and commits of entity types herald does not
//! track would otherwise be held forever.

use std::collections::VecDeque;

use rustc_hash::FxHashMap as HashMap;
use serde::{Deserialize, Serialize};

use super::names::NodeId;
use crate::model::{EntityOp, Nanos, Slot, Timestamp};

/// How many halves of two-phase changes wait for their other half before the oldest go.
const MAX_STAGED: usize = 65_536;
/// How long (engine time) a half waits: OpenZiti commits within milliseconds.
const STAGING_TTL: i64 = 300 * 1_000_000_000;

/// A staged entity change, applied on its commit.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct Staged {
    pub reporter: NodeId,
    pub at: Timestamp,
    pub op: EntityOp,
    pub slot: Slot<'static>,
}

/// The halves waiting for their other half.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub(crate) struct Staging {
    #[serde(serialize_with = "crate::support::sorted::in_key_order")]
    changes: HashMap<Box<str>, Staged>,
    #[serde(serialize_with = "crate::support::sorted::in_key_order")]
    commits: HashMap<Box<str>, Timestamp>,
    /// Arrival (engine time) of every waiting half, oldest first; resolved ones are skipped
    /// when they reach the front, so resolving never searches the queue.
    order: VecDeque<(Timestamp, Box<str>)>,
}

impl Staging {
    /// The first half of a change; returns it at once if its commit came first.
    pub fn stage(&mut self, id: &str, change: Staged, now: Timestamp) -> Option<Staged> {
        if self.commits.remove(id).is_some() {
            return Some(change);
        }
        let id: Box<str> = Box::from(id);
        self.order.push_back((now, id.clone()));
        self.changes.insert(id, change);
        None
    }

    /// The commit; returns the change it completes, if that came first.
    pub fn commit(&mut self, id: &str, now: Timestamp) -> Option<Staged> {
        if let Some(change) = self.changes.remove(id) {
            return Some(change);
        }
        let id: Box<str> = Box::from(id);
        self.order.push_back((now, id.clone()));
        self.commits.insert(id, now);
        None
    }

    /// Whether any half waits, resolved or not (resolved ones leave with the next prune).
    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    /// When the oldest entry will have waited more than [`STAGING_TTL`]. It may have been
    /// resolved meanwhile: looking then is harmless.
    pub fn expiry(&self) -> Option<Timestamp> {
        self.order.front().map(|(arrived, _)| arrived.saturating_add(Nanos(STAGING_TTL + 1)))
    }

    /// Drops every waiting half; returns how many were unresolved.
    pub fn drop_all(&mut self) -> u64 {
        let dropped = (self.changes.len() + self.commits.len()) as u64;
        *self = Staging::default();
        dropped
    }

    /// Drops halves that waited too long, and forgets resolved ones; returns how many
    /// unresolved halves were dropped.
    pub fn prune(&mut self, now: Timestamp) -> u64 {
        let mut dropped = 0;
        while let Some((arrived, _)) = self.order.front() {
            let waiting = self.changes.len() + self.commits.len();
            let expired = now.saturating_sub(*arrived).0 > STAGING_TTL;
            if !expired && waiting <= MAX_STAGED && self.order.len() <= 2 * waiting + 1024 {
                break;
            }
            let Some((_, id)) = self.order.pop_front() else {
                break;
            };
            let gone = self.changes.remove(&id).is_some() || self.commits.remove(&id).is_some();
            dropped += u64::from(gone);
        }
        dropped
    }
}
