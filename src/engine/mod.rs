//! The engine: sans-IO state machines that turn observations into cluster events.
//!
//! ```text
//! observe(obs, now) ─┐                       ┌─► ClusterEvent, in order of
//! tick(now) ─────────┼─► clusters ─► timers ─┤   (stable_at, at, creation)
//! finish() ──────────┘   (window,            └─► evictions (for metrics)
//!                         cluster, spin,
//!                         liveness)
//! ```
//!
//! No tokio, no IO, no clock: engine time is what the caller passes in (DESIGN §5.1). In
//! replay that is the latest record time; live, the runtime also advances it with the wall
//! clock once every source has caught up. Everything here is therefore deterministic and
//! tested on a virtual clock.
//!
//! Deadlines of every key live in one binary heap ordered by `(due, at, seq)`. A key that
//! changes its candidate gets a new sequence number; the old heap entry stays and is skipped
//! when it surfaces (lazy invalidation). The cost of a record is thus `O(log n)` in the number
//! of pending deadlines, never a scan of the keys.

mod cluster;
pub mod liveness;
pub mod spin;
pub mod window;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};

use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;

use crate::model::{ClusterEvent, EventKind, Nanos, Observation, Timestamp};
use cluster::Cluster;
use window::{Scheduled, Sequence};

pub use cluster::NodeId;

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

/// A key, within its cluster.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum KeyRef {
    Leader,
    ReadOnly,
    Members,
    SplitBrain,
    View(NodeId),
    Peer(NodeId, NodeId),
    Router(Arc<str>),
    Alive(NodeId),
    Slot(Arc<str>),
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

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
struct Timer {
    due: Timestamp,
    at: Timestamp,
    seq: u64,
    cluster: u32,
    key: KeyRef,
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
struct EvictionCheck {
    due: Timestamp,
    cluster: u32,
    key: KeyRef,
}

/// What the clusters share: time, sequence numbers, deadlines, counters.
#[derive(Serialize, Deserialize)]
pub(crate) struct Core {
    now: Timestamp,
    seq: Sequence,
    timers: BinaryHeap<Reverse<Timer>>,
    evictions: BinaryHeap<Reverse<EvictionCheck>>,
    stats: Stats,
}

impl Core {
    fn schedule(&mut self, s: Scheduled, cluster: u32, key: KeyRef) {
        self.timers.push(Reverse(Timer { due: s.due, at: s.at, seq: s.seq, cluster, key }));
    }

    /// Arms the one eviction check a key has; it re-arms itself until the key goes.
    fn arm_eviction(&mut self, last_record: Timestamp, cluster: u32, key: KeyRef, ttl: Nanos) {
        let due = last_record.saturating_add(ttl);
        self.evictions.push(Reverse(EvictionCheck { due, cluster, key }));
    }
}

/// The version of the engine snapshot format. A snapshot of another version is refused,
/// never silently reset.
pub const SNAPSHOT_VERSION: u32 = 1;

/// Why a snapshot could not be read.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("engine snapshot format {found} is not supported (this herald reads format {SNAPSHOT_VERSION})")]
    Version { found: u32 },
    #[error("engine snapshot is corrupt: {0}")]
    Corrupt(String),
}

#[derive(Serialize)]
struct SnapshotRef<'a> {
    version: u32,
    clusters: &'a [Cluster],
    core: &'a Core,
}

#[derive(Deserialize)]
struct SnapshotOwned {
    version: u32,
    clusters: Vec<Cluster>,
    core: Core,
}

/// The engine. See the module documentation.
pub struct Engine {
    config: EngineConfig,
    clusters: Vec<Cluster>,
    cluster_ids: FxHashMap<Arc<str>, u32>,
    core: Core,
    evicted: Vec<Evicted>,
}

impl Engine {
    pub fn new(config: EngineConfig) -> Engine {
        Engine {
            config,
            clusters: Vec::new(),
            cluster_ids: FxHashMap::default(),
            core: Core {
                now: Timestamp::MIN,
                seq: Sequence::default(),
                timers: BinaryHeap::new(),
                evictions: BinaryHeap::new(),
                stats: Stats::default(),
            },
            evicted: Vec::new(),
        }
    }

    /// Everything the engine knows — emitted values, pending windows, spin counters,
    /// per-reporter record times, deadlines — as bytes, for a restart to resume from.
    pub fn snapshot(&self) -> Vec<u8> {
        let state =
            SnapshotRef { version: SNAPSHOT_VERSION, clusters: &self.clusters, core: &self.core };
        // Serializing plain data into a Vec cannot fail; an empty snapshot would be refused
        // on restore rather than mistaken for an empty engine.
        postcard::to_stdvec(&state).unwrap_or_default()
    }

    /// An engine resumed from [`Engine::snapshot`], with the parameters of `config`.
    pub fn restore(config: EngineConfig, bytes: &[u8]) -> Result<Engine, SnapshotError> {
        // The version leads the snapshot: read it alone first, so a future format is
        // reported as such and not as corruption.
        let (found, _) = postcard::take_from_bytes::<u32>(bytes)
            .map_err(|e| SnapshotError::Corrupt(e.to_string()))?;
        if found != SNAPSHOT_VERSION {
            return Err(SnapshotError::Version { found });
        }
        let state: SnapshotOwned =
            postcard::from_bytes(bytes).map_err(|e| SnapshotError::Corrupt(e.to_string()))?;
        let mut engine = Engine::new(config);
        engine.core = state.core;
        for (i, mut cluster) in state.clusters.into_iter().enumerate() {
            cluster.index = i as u32;
            cluster.params = engine.config.params(&cluster.name);
            engine.cluster_ids.insert(cluster.name.clone(), i as u32);
            engine.clusters.push(cluster);
        }
        debug_assert_eq!(state.version, SNAPSHOT_VERSION);
        Ok(engine)
    }

    /// Engine time: the latest time passed in or observed (`None` before the first).
    pub fn now(&self) -> Option<Timestamp> {
        (self.core.now != Timestamp::MIN).then_some(self.core.now)
    }

    /// The parameters in force for `cluster`.
    pub fn params(&self, cluster: &str) -> Params {
        self.config.params(cluster)
    }

    pub fn stats(&self) -> &Stats {
        &self.core.stats
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
        self.core.stats.observed += 1;
        let index = self.cluster_index(&obs.cluster);
        let outcome = match self.clusters.get_mut(index as usize) {
            Some(cluster) => cluster.apply(obs, &mut self.core),
            None => Outcome::Ignored,
        };
        match outcome {
            Outcome::Stale => self.core.stats.stale += 1,
            Outcome::Ignored => self.core.stats.ignored += 1,
            Outcome::Applied | Outcome::Suppressed => {}
        }
        self.fire_due(out);
        outcome
    }

    /// Advances engine time to `now` (never backwards) and emits everything due.
    pub fn tick(&mut self, now: Timestamp, out: &mut Vec<ClusterEvent>) {
        if now > self.core.now {
            self.core.now = now;
        }
        self.fire_due(out);
        self.evict_due();
    }

    /// The earliest deadline: when the caller should tick next. It may name a deadline that
    /// turns out superseded; ticking then is harmless.
    pub fn next_deadline(&self) -> Option<Timestamp> {
        let timer = self.core.timers.peek().map(|Reverse(t)| t.due);
        let eviction = self.core.evictions.peek().map(|Reverse(e)| e.due);
        match (timer, eviction) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// End of a replay: runs past every pending deadline, in order.
    pub fn finish(&mut self, out: &mut Vec<ClusterEvent>) {
        while let Some(Reverse(t)) = self.core.timers.peek() {
            if t.due > self.core.now {
                self.core.now = t.due;
            }
            self.fire_due(out);
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
        while let Some(Reverse(t)) = self.core.timers.peek() {
            if t.due > self.core.now {
                break;
            }
            let Some(Reverse(t)) = self.core.timers.pop() else {
                break;
            };
            let Some(cluster) = self.clusters.get_mut(t.cluster as usize) else {
                continue;
            };
            if let Some(event) = cluster.fire(&t.key, t.seq) {
                self.core.stats.events += 1;
                out.push(event);
            }
        }
    }

    fn evict_due(&mut self) {
        while let Some(Reverse(e)) = self.core.evictions.peek() {
            if e.due > self.core.now {
                break;
            }
            let Some(Reverse(e)) = self.core.evictions.pop() else {
                break;
            };
            let Some(cluster) = self.clusters.get_mut(e.cluster as usize) else {
                continue;
            };
            let subject = cluster.subject(&e.key);
            match cluster.try_evict(&e.key, self.core.now) {
                Ok(true) => {
                    self.core.stats.evicted += 1;
                    self.evicted.push(Evicted {
                        cluster: cluster.name.to_string(),
                        key: key_name(&e.key),
                        subject,
                    });
                }
                Ok(false) => {}
                Err(next) => {
                    self.core.evictions.push(Reverse(EvictionCheck { due: next, ..e }));
                }
            }
        }
    }
}

fn key_name(key: &KeyRef) -> &'static str {
    match key {
        KeyRef::Leader => "leader",
        KeyRef::ReadOnly => "read_only",
        KeyRef::Members => "members",
        KeyRef::SplitBrain => "split_brain",
        KeyRef::View(_) => "view",
        KeyRef::Peer(..) => "peer",
        KeyRef::Router(_) => "router",
        KeyRef::Alive(_) => "alive",
        KeyRef::Slot(_) => "slot",
    }
}

#[cfg(test)]
mod tests;
