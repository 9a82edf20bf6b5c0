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
//! - `entries`: the state as per-key entries and their changes, what the store persists
//! - `snapshot`: the single-snapshot form of earlier releases, read to migrate them

mod cluster;
mod entries;
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
use cluster::{Cluster, StateKey};
use schedule::{EvictionCheck, Schedule};

pub use cluster::NodeId;
pub use entries::Change;
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

/// Caps on what input can create (DESIGN §5.2): whatever arrives, memory stays bounded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    pub max_clusters: usize,
    /// Keys in all clusters together.
    pub max_keys: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_clusters: 1000, max_keys: 10_000_000 }
    }
}

/// Parameters for every cluster, with per-cluster overrides.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EngineConfig {
    pub defaults: Params,
    pub clusters: HashMap<String, Params>,
    pub limits: Limits,
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
    /// Refused: it would create a cluster or a key beyond [`Limits`].
    OverLimit,
}

/// A cap that refused a record, reported once per cluster (per time the cluster cap is
/// reached, since the names of refused clusters are not kept).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    /// The cluster of the refused record.
    pub cluster: String,
    pub limit: Limit,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Limit {
    Clusters(usize),
    Keys(u64),
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
    /// Records refused at a cap (not counted in `stale`, `ignored` or `suppressed`).
    #[serde(skip)]
    pub over_limit: u64,
}

/// A key that was evicted after `key_ttl`: its metrics go with it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Evicted {
    pub cluster: String,
    /// `view`, `peer`, `router`, `alive` or `slot`; `cluster` for a spent cluster removed
    /// with its names and everything it held.
    pub key: &'static str,
    /// The key's own parts, as in event ids.
    pub subject: Vec<String>,
}

/// The engine. See the module documentation.
pub struct Engine {
    config: EngineConfig,
    /// By index. Indexes are never reused: deadlines of a removed cluster may still be on
    /// the schedule, and must find nothing.
    clusters: FxHashMap<u32, Cluster>,
    cluster_ids: FxHashMap<Arc<str>, u32>,
    next_cluster: u32,
    /// Keys held in all clusters.
    keys: u64,
    refusals: Vec<Refusal>,
    /// The cluster cap refused a record and said so; said again once it was left.
    clusters_full_noticed: bool,
    schedule: Schedule,
    /// Clusters with halves of two-phase changes waiting, so that a tick looks at those only.
    /// Derived from the clusters: rebuilt on restore, not persisted.
    staging: BTreeSet<u32>,
    evicted: Vec<Evicted>,
    /// Whether changes are tracked ([`Engine::track_changes`]); then, the clusters whose own
    /// entry changed and the ones removed since the last [`Engine::changes`].
    tracking: bool,
    changed_clusters: rustc_hash::FxHashSet<u32>,
    /// Tombstones of removed clusters' entries.
    removed: Vec<Change>,
}

impl Engine {
    pub fn new(config: EngineConfig) -> Engine {
        Engine {
            config,
            clusters: FxHashMap::default(),
            cluster_ids: FxHashMap::default(),
            next_cluster: 0,
            keys: 0,
            refusals: Vec::new(),
            clusters_full_noticed: false,
            schedule: Schedule::new(),
            staging: BTreeSet::new(),
            evicted: Vec::new(),
            tracking: false,
            changed_clusters: Default::default(),
            removed: Vec::new(),
        }
    }

    /// Notes that cluster `index`'s own entry changed, when tracking. An index with no
    /// cluster (a removed one's late deadline) is skipped by [`Engine::changes`].
    fn touch(&mut self, index: u32) {
        if self.tracking {
            self.changed_clusters.insert(index);
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
        self.schedule.stats.observed += 1;
        // A refused record is as if it never came: it does not move engine time either.
        let Some(index) = self.admit(obs) else {
            self.schedule.stats.over_limit += 1;
            return Outcome::OverLimit;
        };
        self.tick(now.max(obs.at), out);
        self.touch(index);
        let outcome = match self.clusters.get_mut(&index) {
            Some(cluster) => {
                let before = cluster.keys();
                let outcome = cluster.apply(obs, &mut self.schedule);
                self.keys = (self.keys + cluster.keys()).saturating_sub(before);
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
            Outcome::Applied | Outcome::Suppressed | Outcome::OverLimit => {}
        }
        self.fire_due(out);
        outcome
    }

    /// The index of `obs`'s cluster, created if need be — or `None` when a cap refuses it.
    fn admit(&mut self, obs: &Observation<'_>) -> Option<u32> {
        let limits = self.config.limits;
        let at_key_cap = self.keys >= limits.max_keys;
        if let Some(&i) = self.cluster_ids.get(&*obs.cluster) {
            let cluster = self.clusters.get_mut(&i)?;
            if at_key_cap && cluster.would_create_key(obs) {
                if !std::mem::replace(&mut cluster.over_limit_noticed, true) {
                    let limit = Limit::Keys(limits.max_keys);
                    self.refusals.push(Refusal { cluster: obs.cluster.to_string(), limit });
                }
                return None;
            }
            return Some(i);
        }
        let limit = match () {
            _ if self.clusters.len() >= limits.max_clusters => Limit::Clusters(limits.max_clusters),
            _ if at_key_cap || self.next_cluster == u32::MAX => Limit::Keys(limits.max_keys),
            _ => return Some(self.create_cluster(&obs.cluster, obs.at)),
        };
        if !std::mem::replace(&mut self.clusters_full_noticed, true) {
            self.refusals.push(Refusal { cluster: obs.cluster.to_string(), limit });
        }
        None
    }

    fn create_cluster(&mut self, name: &str, at: Timestamp) -> u32 {
        let i = self.next_cluster;
        self.next_cluster += 1;
        let name: Arc<str> = Arc::from(name);
        let params = self.config.params(&name);
        let mut cluster = Cluster::new(name.clone(), i, params);
        if self.tracking {
            cluster.track();
        }
        self.touch(i);
        self.clusters.insert(i, cluster);
        self.cluster_ids.insert(name, i);
        // The cluster's own check: it goes once it is spent (DESIGN §5.2).
        let due = self.schedule.now.max(at).saturating_add(params.key_ttl);
        self.schedule.push_eviction(EvictionCheck { due, cluster: i, key: StateKey::Leader });
        i
    }

    /// Advances engine time to `now` (never backwards) and emits everything due.
    pub fn tick(&mut self, now: Timestamp, out: &mut Vec<ClusterEvent>) {
        self.fire(now, out);
        self.tidy();
    }

    /// A tick's first half: advances engine time to `now` and fires the due deadlines. Its
    /// second half, [`Engine::tidy`], may come later, with nothing applied in between: the
    /// engine then passes through exactly the states one tick passes through.
    pub fn fire(&mut self, now: Timestamp, out: &mut Vec<ClusterEvent>) {
        if now > self.schedule.now {
            self.schedule.now = now;
        }
        self.fire_due(out);
    }

    /// A tick's second half, at the engine's time: the keys and staged halves due to go, go.
    /// It emits nothing.
    pub fn tidy(&mut self) {
        self.evict_due();
        self.expire_staged();
    }

    /// The earliest deadline: when the caller should tick next. It may name a deadline that
    /// turns out superseded; ticking then is harmless.
    pub fn next_deadline(&self) -> Option<Timestamp> {
        let staged = self.staging.iter().filter_map(|&i| self.clusters.get(&i)?.staged_expiry());
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
            self.touch(i);
            if let Some(cluster) = self.clusters.get_mut(&i) {
                cluster.drop_staged(&mut self.schedule);
            }
        }
    }

    /// Keys evicted since the last call.
    pub fn take_evictions(&mut self) -> Vec<Evicted> {
        std::mem::take(&mut self.evicted)
    }

    /// Refusals at a cap since the last call, each cluster's first (see [`Refusal`]).
    pub fn take_refusals(&mut self) -> Vec<Refusal> {
        std::mem::take(&mut self.refusals)
    }

    /// Clusters held.
    pub fn clusters(&self) -> usize {
        self.clusters.len()
    }

    /// The names of the clusters it holds.
    pub fn cluster_names(&self) -> impl Iterator<Item = &str> + '_ {
        self.clusters.values().map(|c| &*c.name)
    }

    /// Keys held in all clusters (DESIGN §5.2).
    pub fn keys(&self) -> u64 {
        self.keys
    }

    /// Every cluster's stable state as the events that emitted it, for a view rebuilt after
    /// a restart, with the events each cluster emitted by kind.
    #[allow(clippy::type_complexity)]
    pub fn stable_state(
        &self,
    ) -> impl Iterator<Item = (&str, Vec<ClusterEvent>, [u64; EventKind::ALL.len()])> + '_ {
        let mut clusters: Vec<&Cluster> = self.clusters.values().collect();
        clusters.sort_by_key(|c| c.index);
        clusters.into_iter().map(|c| (&*c.name, c.stable_events(), c.emitted_by_kind))
    }

    /// Reverts and suppressed records per cluster and kind, for metrics.
    pub fn suppressed_by_kind(&self) -> impl Iterator<Item = (&str, EventKind, u64)> + '_ {
        self.clusters.values().flat_map(|c| {
            EventKind::ALL
                .iter()
                .zip(c.suppressed_by_kind.iter())
                .filter(|(_, n)| **n > 0)
                .map(move |(k, n)| (&*c.name, *k, *n))
        })
    }

    fn fire_due(&mut self, out: &mut Vec<ClusterEvent>) {
        while let Some(d) = self.schedule.pop_due() {
            self.touch(d.cluster);
            let Some(cluster) = self.clusters.get_mut(&d.cluster) else {
                continue;
            };
            let before = cluster.keys();
            if let Some(event) = cluster.fire(&d.key, d.seq) {
                cluster.count_emitted(event.kind);
                self.schedule.stats.events += 1;
                out.push(event);
            }
            self.keys = (self.keys + cluster.keys()).saturating_sub(before);
        }
    }

    fn expire_staged(&mut self) {
        let (clusters, schedule) = (&mut self.clusters, &mut self.schedule);
        if self.tracking {
            self.changed_clusters.extend(self.staging.iter().copied());
        }
        self.staging.retain(|&i| clusters.get_mut(&i).is_some_and(|c| c.expire_staged(schedule)));
    }

    fn evict_due(&mut self) {
        while let Some(check) = self.schedule.pop_eviction_due() {
            let now = self.schedule.now;
            self.touch(check.cluster);
            let Some(cluster) = self.clusters.get_mut(&check.cluster) else {
                continue;
            };
            if check.key == StateKey::Leader {
                // The cluster's own check.
                if cluster.is_spent(now) {
                    self.remove_cluster(check.cluster);
                } else {
                    let due = cluster.last_record.saturating_add(cluster.params.key_ttl);
                    let due =
                        if due > now { due } else { now.saturating_add(cluster.params.key_ttl) };
                    self.schedule.push_eviction(EvictionCheck { due, ..check });
                }
                continue;
            }
            let before = cluster.keys();
            match cluster.try_evict(&check.key, now) {
                Ok(Some(evicted)) => {
                    self.schedule.stats.evicted += 1;
                    self.evicted.push(evicted);
                }
                Ok(None) => {}
                Err(next) => self.schedule.push_eviction(EvictionCheck { due: next, ..check }),
            }
            self.keys = (self.keys + cluster.keys()).saturating_sub(before);
        }
    }

    /// A spent cluster goes with its interned names; its metrics go with the eviction.
    fn remove_cluster(&mut self, index: u32) {
        let Some(mut cluster) = self.clusters.remove(&index) else { return };
        self.cluster_ids.remove(&cluster.name);
        self.staging.remove(&index);
        if self.tracking {
            self.changed_clusters.remove(&index);
            cluster.removed_entries(&mut self.removed);
            self.removed.push((cluster::cluster_key(index), None));
        }
        self.keys = self.keys.saturating_sub(cluster.keys());
        self.clusters_full_noticed = false;
        self.schedule.stats.evicted += 1;
        self.evicted.push(Evicted {
            cluster: cluster.name.to_string(),
            key: "cluster",
            subject: Vec::new(),
        });
    }
}

#[cfg(test)]
mod tests;
