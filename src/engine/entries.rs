//! The engine's state as entries (DESIGN §7.1), and what changed since the last commit.
//!
//! An entry is a stable byte key and a versioned value. The families, by the key's first
//! byte:
//! - `E`: the engine's own (engine time, the sequence numbers, counters, the next cluster
//!   index), one entry;
//! - `C`: each cluster's entry, and one per router and per terminator slot
//!   (`cluster::entries`);
//! - `D`, `V`: each deadline and each eviction check on the schedule but a router's (and a
//!   terminator slot's check), the element itself as the key and an empty value, so that
//!   restoring puts back exactly the heaps the engine had, superseded deadlines included. A
//!   router's entry holds its own (`schedule::deadline_in_own_entry`): its pending candidate
//!   is its deadline, and it keeps its check's time, as a slot's does
//!   (`schedule::check_in_own_entry`). A router's superseded deadlines are not kept, since
//!   they fire nothing; so after
//!   [`Engine::finish`], which runs engine time past every deadline on the heap, a restored
//!   engine's time may be earlier than an uninterrupted one's, its events the same.
//!
//! [`Engine::changes`] hands over the entries changed since the last call, a tombstone
//! (`None`) for each that is gone; a store that applies them in order holds what
//! [`Engine::entries`] would give, and [`Engine::from_entries`] rebuilds an engine that
//! behaves exactly as this one. The same records are what a changelog topic carries.

use std::cmp::Reverse;

use serde::{Deserialize, Serialize};

use super::cluster::{parse_cluster_key, Cluster, ClusterKey, CLUSTER};
use super::schedule::{
    check_in_own_entry, deadline_in_own_entry, heap_key, Deadline, EvictionCheck, Schedule,
    DEADLINE, EVICTION,
};
use super::window::Sequence;
use super::{Engine, EngineConfig, SnapshotError, Stats};
use crate::model::Timestamp;

/// An entry's key, and its value or `None` for a tombstone.
pub type Change = (Vec<u8>, Option<Vec<u8>>);

const ENGINE: &[u8] = b"E";

/// The engine's own entry. Field order is the format.
#[derive(Serialize, Deserialize)]
struct Meta {
    now: Timestamp,
    seq: Sequence,
    stats: Stats,
    next_cluster: u32,
}

fn encode_error(e: String) -> SnapshotError {
    SnapshotError::Encode(e)
}

impl Engine {
    /// From now on the engine remembers what changes, for [`Engine::changes`]. Until then
    /// (as in `herald replay`) it pays nothing for it.
    pub fn track_changes(&mut self) {
        if self.tracking {
            return;
        }
        self.tracking = true;
        self.schedule.log = Some(Default::default());
        for cluster in self.clusters.values_mut() {
            cluster.track();
        }
    }

    /// The entries changed since the last call (or since tracking began), tombstones for
    /// the gone ones, in no particular order; each key at most once.
    pub fn changes(&mut self) -> Result<Vec<Change>, SnapshotError> {
        // Before anything is taken: a meta entry that cannot be encoded leaves the changes
        // where they were.
        let meta = self.meta_entry()?;
        let mut changed: Vec<u32> = self.changed_clusters.drain().collect();
        changed.sort_unstable();
        // Sized once: a startup burst changes a million routers, and a vector doubling its
        // way there copied itself a score of times into fresh memory.
        let members: usize =
            changed.iter().filter_map(|i| self.clusters.get(i)).map(|c| 1 + c.changed_len()).sum();
        let log = self.schedule.log.as_ref().map_or(0, |l| l.len());
        let mut out = Vec::with_capacity(1 + self.removed.len() + members + log);
        out.push(meta);
        out.append(&mut self.removed);
        for index in changed {
            let Some(cluster) = self.clusters.get_mut(&index) else { continue };
            out.push(cluster.core_entry().map_err(encode_error)?);
            cluster.changed_entries(&mut out).map_err(encode_error)?;
        }
        if let Some(log) = &mut self.schedule.log {
            out.extend(log.drain().map(|(k, put)| (k, put.then(Vec::new))));
        }
        Ok(out)
    }

    /// Every entry the engine holds, as puts: what a fresh store starts from.
    pub fn entries(&self) -> Result<Vec<Change>, SnapshotError> {
        let mut out = vec![self.meta_entry()?];
        let mut clusters: Vec<&Cluster> = self.clusters.values().collect();
        clusters.sort_by_key(|c| c.index);
        for cluster in clusters {
            cluster.all_entries(&mut out).map_err(encode_error)?;
        }
        self.heap_entries(false, &mut out);
        Ok(out)
    }

    /// The heaps' elements as entries, under the keys the schedule logs its pushes under
    /// (so that a store built from changes and one built from [`Engine::entries`] hold the
    /// same bytes): those kept apart, or (`own`) those their keys' entries hold instead.
    fn heap_entries(&self, own: bool, out: &mut Vec<Change>) {
        let deadlines = self.schedule.deadlines.iter().map(|Reverse(d)| d);
        for d in deadlines.filter(|d| deadline_in_own_entry(&d.key) == own) {
            out.push((heap_key(DEADLINE, d), Some(Vec::new())));
        }
        let checks = self.schedule.evictions.iter().map(|Reverse(e)| e);
        for e in checks.filter(|e| check_in_own_entry(&e.key) == own) {
            out.push((heap_key(EVICTION, e), Some(Vec::new())));
        }
    }

    fn meta_entry(&self) -> Result<Change, SnapshotError> {
        let meta = Meta {
            now: self.schedule.now,
            seq: self.schedule.seq.clone(),
            stats: self.schedule.stats.clone(),
            next_cluster: self.next_cluster,
        };
        let value = super::cluster::encode(&meta).map_err(encode_error)?;
        Ok((ENGINE.to_vec(), Some(value)))
    }

    /// An engine rebuilt from the entries a store holds (any order), with the parameters
    /// of `config`. Whatever the bytes, the answer is an engine or an error naming the entry.
    pub fn from_entries<K, V>(
        config: EngineConfig,
        entries: impl IntoIterator<Item = (K, V)>,
    ) -> Result<Engine, SnapshotError>
    where
        K: AsRef<[u8]>,
        V: AsRef<[u8]>,
    {
        let mut schedule = Schedule::new();
        let mut next_cluster = 0;
        let mut clusters: rustc_hash::FxHashMap<u32, Cluster> = Default::default();
        let mut members: Vec<(Vec<u8>, V)> = Vec::new();
        let mut stale: Vec<Vec<u8>> = Vec::new();
        for (key, value) in entries {
            let key = key.as_ref();
            let corrupt = |why: String| {
                SnapshotError::Corrupt(format!("entry {}: {why}", String::from_utf8_lossy(key)))
            };
            match key.first() {
                Some(b'E') if key == ENGINE => {
                    let meta: Meta = super::cluster::decode(value.as_ref()).map_err(corrupt)?;
                    schedule.now = meta.now;
                    schedule.seq = meta.seq;
                    schedule.stats = meta.stats;
                    next_cluster = meta.next_cluster;
                }
                Some(&CLUSTER) => match parse_cluster_key(key) {
                    Some(ClusterKey::Core(index)) => {
                        let params = EngineConfig::default().defaults;
                        let cluster =
                            Cluster::from_core(index, value.as_ref(), params).map_err(corrupt)?;
                        if clusters.insert(index, cluster).is_some() {
                            return Err(corrupt("a cluster's entry twice".into()));
                        }
                    }
                    // A store gives a cluster's own entry before its routers' and slots':
                    // those are attached at once, and only others wait.
                    Some(member) => match clusters.get_mut(&member.index()) {
                        Some(c) => c.restore_member(&member, value.as_ref()).map_err(corrupt)?,
                        None => members.push((key.to_vec(), value)),
                    },
                    None => return Err(corrupt("not an entry key".into())),
                },
                Some(&DEADLINE) => {
                    let d: Deadline = postcard::from_bytes(&key[1..])
                        .map_err(|e| corrupt(format!("deadline: {e}")))?;
                    if deadline_in_own_entry(&d.key) {
                        // Written before routers held their own: the router's entry now
                        // says it, and this one goes with the next commit.
                        stale.push(key.to_vec());
                    }
                    schedule.deadlines.push(Reverse(d));
                }
                Some(&EVICTION) => {
                    let e: EvictionCheck = postcard::from_bytes(&key[1..])
                        .map_err(|e| corrupt(format!("eviction check: {e}")))?;
                    if check_in_own_entry(&e.key) {
                        stale.push(key.to_vec());
                    }
                    schedule.evictions.push(Reverse(e));
                }
                _ => return Err(corrupt("not an entry key".into())),
            }
        }
        for (key, value) in members {
            let corrupt = |why: String| {
                SnapshotError::Corrupt(format!("entry {}: {why}", String::from_utf8_lossy(&key)))
            };
            let Some(parsed) = parse_cluster_key(&key) else { continue };
            let (ClusterKey::Router(index, _)
            | ClusterKey::Slot(index, _)
            | ClusterKey::Core(index)) = parsed;
            let cluster = clusters
                .get_mut(&index)
                .ok_or_else(|| corrupt(format!("no entry for its cluster {index}")))?;
            cluster.restore_member(&parsed, value.as_ref()).map_err(corrupt)?;
        }
        let mut clusters: Vec<Cluster> = clusters.into_values().collect();
        clusters.sort_by_key(|c| c.index);
        let mut engine = Engine::assemble(config, schedule, clusters)?;
        engine.next_cluster = engine.next_cluster.max(next_cluster);
        engine.removed.extend(stale.into_iter().map(|k| (k, None)));
        Ok(engine)
    }
}

#[cfg(test)]
impl Engine {
    /// The entries as a store written before routers held their deadline and check (and
    /// slots their check): those in `D` and `V` entries of their own, and each router's and
    /// slot's value without its check.
    pub(crate) fn entries_with_router_schedule_apart(&self) -> Result<Vec<Change>, SnapshotError> {
        let mut out = self.entries()?;
        for (key, value) in &mut out {
            if let Some(member @ (ClusterKey::Router(..) | ClusterKey::Slot(..))) =
                parse_cluster_key(key)
            {
                let cluster = self.clusters.get(&member.index());
                *value = cluster.and_then(|c| c.value_without_check(&member));
            }
        }
        self.heap_entries(true, &mut out);
        Ok(out)
    }
}
