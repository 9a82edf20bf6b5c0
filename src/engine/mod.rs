//! The engine: sans-IO state machines that turn observations into cluster events.
//!
//! ```text
//! observe(obs, now) ─┐                         ┌─► ClusterEvent, in order of
//! tick(now) ─────────┼─► clusters ─► schedule ─┤   (stable_at, at, creation)
//! finish() ──────────┘   (window,              └─► evictions (for metrics)
//!                         cluster, spin,
//!                         liveness)
//! ```
//!
//! No tokio, no IO, no clock: engine time is what the caller passes in (DESIGN §5.1). In
//! replay that is the latest record time; live, the runtime also advances it with the wall
//! clock once every source has caught up. Everything here is therefore deterministic and
//! tested on a virtual clock.
//!
//! - [`window`]: the per-key stability window every key goes through
//! - `cluster`: one cluster's keys, the facts they come from, and the events they emit
//! - [`liveness`], [`spin`]: the node-liveness and terminator-spin state machines
//! - `schedule`: engine time, the one deadline heap, eviction checks, counters
//! - `snapshot`: the persisted form a restart resumes from

mod cluster;
pub mod liveness;
mod schedule;
mod snapshot;
pub mod spin;
pub mod window;

use std::cmp::Reverse;
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};

use crate::model::{ClusterEvent, EventKind, Nanos, Observation, Timestamp};
use cluster::Cluster;
use schedule::{EvictionCheck, Schedule};

pub use cluster::NodeId;
pub use snapshot::{SnapshotError, SNAPSHOT_VERSION};

/// Window lengths per kind of key (DESIGN §5.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Windows {
    pub leader: Nanos,
    pub leader_view: Nanos,
    pub peer: Nanos,
    pub read_only: Nanos,
    pub members: Nanos,
    pub router: Nanos,
    pub alive: Nanos,
}

impl Windows {
    pub fn uniform(w: Nanos) -> Windows {
        Windows {
            leader: w,
            leader_view: w,
            peer: w,
            read_only: w,
            members: w,
            router: w,
            alive: w,
        }
    }
}

/// One cluster's engine parameters (DESIGN §5.6 for the defaults).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Params {
    pub windows: Windows,
    pub startup_grace: Nanos,
    pub split_window: Nanos,
    pub spin_cycles: u32,
    pub spin_period: Nanos,
    pub key_ttl: Nanos,
}

impl Default for Params {
    fn default() -> Self {
        let s = |secs: u64| Nanos::from_std(Duration::from_secs(secs));
        Params {
            windows: Windows::uniform(s(2)),
            startup_grace: s(10),
            split_window: s(5),
            spin_cycles: 3,
            spin_period: s(60),
            key_ttl: s(24 * 3600),
        }
    }
}

/// Parameters for every cluster, with per-cluster overrides.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EngineConfig {
    pub defaults: Params,
    pub clusters: HashMap<String, Params>,
}

impl EngineConfig {
    pub fn params(&self, cluster: &str) -> Params {
        self.clusters.get(cluster).copied().unwrap_or(self.defaults)
    }
}

/// What happened to one observation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Applied,
    /// Older than what was already applied for its `(reporter, key)`, or a raft index not
    /// above the newest.
    Stale,
    /// Applied, and counted as suppressed (a record of a spinning slot).
    Suppressed,
    /// Nothing to apply (a commit with no staged change).
    Ignored,
}

/// The engine's counters.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    pub observed: u64,
    pub stale: u64,
    /// Reverts, cancelled split-brain candidates and records of spinning slots.
    pub suppressed: u64,
    pub ignored: u64,
    pub events: u64,
    pub evicted: u64,
}

/// A key that was evicted after `key_ttl`: its metrics go with it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Evicted {
    pub cluster: String,
    /// `view`, `peer`, `router`, `alive` or `slot`.
    pub key: &'static str,
    /// The key's own parts, as in event ids.
    pub subject: Vec<String>,
}

/// The engine. See the module documentation.
pub struct Engine {
    config: EngineConfig,
    clusters: Vec<Cluster>,
    cluster_ids: FxHashMap<Arc<str>, u32>,
    schedule: Schedule,
    /// Clusters with halves of two-phase changes waiting, so that a tick looks at those only.
    /// Derived from the clusters: rebuilt on restore, not persisted.
    staging: BTreeSet<u32>,
    evicted: Vec<Evicted>,
}

impl Engine {
    pub fn new(config: EngineConfig) -> Engine {
        Engine {
            config,
            clusters: Vec::new(),
            cluster_ids: FxHashMap::default(),
            schedule: Schedule::new(),
            staging: BTreeSet::new(),
            evicted: Vec::new(),
        }
    }

    /// Engine time: the latest time passed in or observed (`None` before the first).
    pub fn now(&self) -> Option<Timestamp> {
        (self.schedule.now != Timestamp::MIN).then_some(self.schedule.now)
    }

    /// The parameters in force for `cluster`.
    pub fn params(&self, cluster: &str) -> Params {
        self.config.params(cluster)
    }

    pub fn stats(&self) -> &Stats {
        &self.schedule.stats
    }

    /// Observes one record. Engine time first advances to `max(now, obs.at)` and everything
    /// due by then is emitted; then the record is applied, and what it made due (a late
    /// record's window, a probe verdict, a spin start, `W = 0`) is emitted too.
    pub fn observe(
        &mut self,
        obs: &Observation<'_>,
        now: Timestamp,
        out: &mut Vec<ClusterEvent>,
    ) -> Outcome {
        self.tick(now.max(obs.at), out);
        self.schedule.stats.observed += 1;
        let index = self.cluster_index(&obs.cluster);
        let outcome = match self.clusters.get_mut(index as usize) {
            Some(cluster) => {
                let outcome = cluster.apply(obs, &mut self.schedule);
                if cluster.staged_expiry().is_some() {
                    self.staging.insert(index);
                }
                outcome
            }
            None => Outcome::Ignored,
        };
        match outcome {
            Outcome::Stale => self.schedule.stats.stale += 1,
            Outcome::Ignored => self.schedule.stats.ignored += 1,
            Outcome::Applied | Outcome::Suppressed => {}
        }
        self.fire_due(out);
        outcome
    }

    /// Advances engine time to `now` (never backwards) and emits everything due.
    pub fn tick(&mut self, now: Timestamp, out: &mut Vec<ClusterEvent>) {
        if now > self.schedule.now {
            self.schedule.now = now;
        }
        self.fire_due(out);
        self.evict_due();
        self.expire_staged();
    }

    /// The earliest deadline: when the caller should tick next. It may name a deadline that
    /// turns out superseded; ticking then is harmless.
    pub fn next_deadline(&self) -> Option<Timestamp> {
        let staged =
            self.staging.iter().filter_map(|&i| self.clusters.get(i as usize)?.staged_expiry());
        self.schedule.next_due().into_iter().chain(staged).min()
    }

    /// End of a replay: runs past every pending deadline, in order.
    pub fn finish(&mut self, out: &mut Vec<ClusterEvent>) {
        while let Some(Reverse(d)) = self.schedule.deadlines.peek() {
            if d.due > self.schedule.now {
                self.schedule.now = d.due;
            }
            self.fire_due(out);
        }
        // No waiting half will meet its other half now (DESIGN §5.4a).
        for i in std::mem::take(&mut self.staging) {
            if let Some(cluster) = self.clusters.get_mut(i as usize) {
                cluster.drop_staged(&mut self.schedule);
            }
        }
    }

    /// Keys evicted since the last call.
    pub fn take_evictions(&mut self) -> Vec<Evicted> {
        std::mem::take(&mut self.evicted)
    }

    /// Reverts and suppressed records per cluster and kind, for metrics.
    pub fn suppressed_by_kind(&self) -> impl Iterator<Item = (&str, EventKind, u64)> + '_ {
        self.clusters.iter().flat_map(|c| {
            EventKind::ALL
                .iter()
                .zip(c.suppressed_by_kind.iter())
                .filter(|(_, n)| **n > 0)
                .map(move |(k, n)| (&*c.name, *k, *n))
        })
    }

    fn cluster_index(&mut self, name: &str) -> u32 {
        if let Some(&i) = self.cluster_ids.get(name) {
            return i;
        }
        let i = u32::try_from(self.clusters.len()).unwrap_or(u32::MAX);
        let name: Arc<str> = Arc::from(name);
        let params = self.config.params(&name);
        self.clusters.push(Cluster::new(name.clone(), i, params));
        self.cluster_ids.insert(name, i);
        i
    }

    fn fire_due(&mut self, out: &mut Vec<ClusterEvent>) {
        while let Some(d) = self.schedule.pop_due() {
            let Some(cluster) = self.clusters.get_mut(d.cluster as usize) else {
                continue;
            };
            if let Some(event) = cluster.fire(&d.key, d.seq) {
                self.schedule.stats.events += 1;
                out.push(event);
            }
        }
    }

    fn expire_staged(&mut self) {
        let (clusters, schedule) = (&mut self.clusters, &mut self.schedule);
        self.staging
            .retain(|&i| clusters.get_mut(i as usize).is_some_and(|c| c.expire_staged(schedule)));
    }

    fn evict_due(&mut self) {
        while let Some(check) = self.schedule.pop_eviction_due() {
            let Some(cluster) = self.clusters.get_mut(check.cluster as usize) else {
                continue;
            };
            match cluster.try_evict(&check.key, self.schedule.now) {
                Ok(Some(evicted)) => {
                    self.schedule.stats.evicted += 1;
                    self.evicted.push(evicted);
                }
                Ok(None) => {}
                Err(next) => {
                    self.schedule.evictions.push(Reverse(EvictionCheck { due: next, ..check }))
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
