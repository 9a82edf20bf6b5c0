//! The engine task's engines: one for every source but a grouped kafka source (the whole
//! input), and one per partition of a grouped kafka source's topic (a shard, DESIGN §10).
//!
//! A cluster never spans two partitions (an edge keys its records by cluster), so each
//! partition's clusters live in an engine of their own, with engine time on that partition's
//! record time: a partition that lags keeps its windows on its own records while another,
//! caught up, follows the wall clock. A shard is created when its partition is assigned (or
//! its first record arrives), from what the store last held of it, and dropped once a
//! revocation is committed; what it held leaves `/state` and the gauges with it.

use std::collections::BTreeMap;

use super::driver::Driver;
use crate::engine::{Change, Engine, Evicted, SnapshotError};
use crate::model::{ClusterEvent, Timestamp};

/// Which engine a record belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Shard {
    Whole,
    Partition(i32),
}

/// One engine and what the task knows of its input.
pub struct ShardEngine {
    pub driver: Driver,
    /// Every record of its partition is read: its engine time may follow the wall clock.
    /// Unused for [`Shard::Whole`], which follows every source.
    pub caught_up: bool,
    /// Applied or ticked since the last commit: its entries may have changed.
    pub touched: bool,
    /// Its partition was taken away: the next commit writes it, then drops it.
    pub revoked: bool,
    /// Ticked by [`Shards::fire`], its tick's second half not run yet.
    pub untidy: bool,
    /// The assignment of its partition it runs under.
    pub assignment: u64,
}

impl ShardEngine {
    fn new(engine: Engine) -> ShardEngine {
        ShardEngine {
            driver: Driver::new(engine),
            caught_up: false,
            touched: false,
            revoked: false,
            untidy: false,
            assignment: 0,
        }
    }
}

/// What one commit writes of the engines: the whole input's changes, and each touched
/// partition's.
pub type ShardChanges = (Vec<Change>, Vec<(i32, Vec<Change>)>);

pub struct Shards {
    whole: ShardEngine,
    partitions: BTreeMap<i32, ShardEngine>,
}

impl Shards {
    pub fn new(whole: Engine) -> Shards {
        Shards { whole: ShardEngine::new(whole), partitions: BTreeMap::new() }
    }

    pub fn whole(&mut self) -> &mut ShardEngine {
        &mut self.whole
    }

    pub fn get_mut(&mut self, shard: Shard) -> Option<&mut ShardEngine> {
        match shard {
            Shard::Whole => Some(&mut self.whole),
            Shard::Partition(p) => self.partitions.get_mut(&p),
        }
    }

    pub fn contains(&self, shard: Shard) -> bool {
        match shard {
            Shard::Whole => true,
            Shard::Partition(p) => self.partitions.contains_key(&p),
        }
    }

    /// Adds partition `p`'s engine, restored by the caller.
    pub fn insert(&mut self, p: i32, engine: Engine) {
        self.partitions.insert(p, ShardEngine::new(engine));
    }

    pub fn remove(&mut self, p: i32) -> Option<ShardEngine> {
        self.partitions.remove(&p)
    }

    /// Every engine, the whole input's first.
    pub fn iter(&self) -> impl Iterator<Item = &ShardEngine> {
        std::iter::once(&self.whole).chain(self.partitions.values())
    }

    fn iter_mut(&mut self) -> impl Iterator<Item = &mut ShardEngine> {
        std::iter::once(&mut self.whole).chain(self.partitions.values_mut())
    }

    /// The engines whose time follows the wall clock now: the whole input's while every
    /// source is caught up, a partition's while it is.
    fn live_mut(&mut self, whole: bool) -> impl Iterator<Item = &mut ShardEngine> {
        let whole = whole.then_some(&mut self.whole);
        whole.into_iter().chain(self.partitions.values_mut().filter(|s| s.caught_up))
    }

    /// Moves the live engines' time to `now`, firing what is due.
    pub fn tick(&mut self, now: Timestamp, whole: bool) {
        self.fire(now, whole);
        self.tidy();
    }

    /// [`Shards::tick`]'s first half: the live engines' time moves to `now` and their due
    /// deadlines fire; what else is due waits for [`Shards::tidy`].
    pub fn fire(&mut self, now: Timestamp, whole: bool) {
        for s in self.live_mut(whole) {
            s.driver.engine.fire(now, &mut s.driver.events);
            s.touched = true;
            s.untidy = true;
        }
    }

    /// The second half of the ticks [`Shards::fire`] began: due keys are evicted.
    pub fn tidy(&mut self) {
        for s in self.iter_mut().filter(|s| s.untidy) {
            s.driver.engine.tidy();
            s.untidy = false;
        }
    }

    /// Whether a tick's second half waits.
    pub fn untidy(&self) -> bool {
        self.iter().any(|s| s.untidy)
    }

    /// The earliest deadline of a live engine.
    pub fn next_deadline(&self, whole: bool) -> Option<Timestamp> {
        let whole = whole.then_some(&self.whole);
        let partitions = self.partitions.values().filter(|s| s.caught_up);
        whole.into_iter().chain(partitions).filter_map(|s| s.driver.engine.next_deadline()).min()
    }

    pub fn has_events(&self) -> bool {
        self.iter().any(|s| !s.driver.events.is_empty())
    }

    /// The events every engine emitted since the last call.
    pub fn take_events(&mut self) -> Vec<ClusterEvent> {
        self.take_events_by_partition().0
    }

    /// As [`Shards::take_events`], with the partition each came from: `(from, to, p)`
    /// gives the range of the events partition `p`'s engine emitted.
    pub fn take_events_by_partition(&mut self) -> (Vec<ClusterEvent>, Vec<(usize, usize, i32)>) {
        let mut out = std::mem::take(&mut self.whole.driver.events);
        let mut ranges = Vec::new();
        for (p, s) in &mut self.partitions {
            let from = out.len();
            out.append(&mut s.driver.events);
            if out.len() > from {
                ranges.push((from, out.len(), *p));
            }
        }
        (out, ranges)
    }

    pub fn take_evictions(&mut self) -> Vec<Evicted> {
        self.iter_mut().flat_map(|s| s.driver.engine.take_evictions()).collect()
    }

    pub fn take_refusals(&mut self) -> Vec<crate::engine::Refusal> {
        self.iter_mut().flat_map(|s| s.driver.engine.take_refusals()).collect()
    }

    pub fn clusters(&self) -> usize {
        self.iter().map(|s| s.driver.engine.clusters()).sum()
    }

    pub fn keys(&self) -> u64 {
        self.iter().map(|s| s.driver.engine.keys()).sum()
    }

    /// The entries changed since the last call: the whole input's always (as one engine
    /// alone did), a partition's only when it was touched. `revoked`: whether a revoked
    /// partition's are wanted; if not, they are let go with it.
    pub fn changes(&mut self, revoked: bool) -> Result<ShardChanges, SnapshotError> {
        self.whole.touched = false;
        let whole = self.whole.driver.engine.changes()?;
        let mut partitions = Vec::new();
        for (p, s) in &mut self.partitions {
            if std::mem::take(&mut s.touched) && (revoked || !s.revoked) {
                partitions.push((*p, s.driver.engine.changes()?));
            }
        }
        Ok((whole, partitions))
    }

    /// The partitions revoked, to drop with the next commit.
    pub fn revoked(&self) -> impl Iterator<Item = i32> + '_ {
        self.partitions.iter().filter(|(_, s)| s.revoked).map(|(p, _)| *p)
    }

    /// Drops the revoked partitions' engines, giving the clusters they held.
    pub fn drop_revoked(&mut self) -> Vec<String> {
        let revoked: Vec<i32> = self.revoked().collect();
        let mut clusters = Vec::new();
        for p in revoked {
            if let Some(s) = self.partitions.remove(&p) {
                clusters.extend(s.driver.engine.cluster_names().map(str::to_string));
            }
        }
        clusters
    }
}
