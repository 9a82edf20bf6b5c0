//! Engine snapshots: everything the engine knows, as bytes a restart resumes from (DESIGN §7).
//!
//! postcard writes structs as their fields in order and enums as variant indexes, with no
//! names: renaming a persisted type or field is free, reordering or inserting one is a new
//! format. A snapshot of another version is refused, never silently reset, since a reset
//! would re-emit every state as initial. Format 1 (no per-cluster extras) is still read.

use std::cmp::Reverse;

use serde::{Deserialize, Serialize};

use super::cluster::{Cluster, ClusterExtras, OwnChecks, StateKey};
use super::schedule::{check_in_own_entry, deadline_in_own_entry, EvictionCheck, Schedule};
use super::{Engine, EngineConfig};

/// The version of the engine snapshot format.
pub const SNAPSHOT_VERSION: u32 = 2;

/// Why a snapshot could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("engine snapshot format {found} is not supported (this herald reads formats 1 and {SNAPSHOT_VERSION})")]
    Version { found: u32 },
    #[error("engine snapshot is corrupt: {0}")]
    Corrupt(String),
    #[error("engine state could not be encoded: {0}")]
    Encode(String),
}

#[derive(Serialize)]
struct SnapshotRef<'a> {
    version: u32,
    clusters: Vec<&'a Cluster>,
    schedule: &'a Schedule,
    extras: Vec<ClusterExtras>,
}

#[derive(Deserialize)]
struct SnapshotV1 {
    _version: u32,
    clusters: Vec<Cluster>,
    schedule: Schedule,
}

#[derive(Deserialize)]
struct SnapshotV2 {
    _version: u32,
    clusters: Vec<Cluster>,
    schedule: Schedule,
    extras: Vec<ClusterExtras>,
}

impl Engine {
    /// Everything the engine knows — emitted values, pending windows, spin counters,
    /// per-reporter record times, deadlines — as bytes, for a restart to resume from.
    pub fn snapshot(&self) -> Result<Vec<u8>, SnapshotError> {
        let mut clusters: Vec<&Cluster> = self.clusters.values().collect();
        clusters.sort_by_key(|c| c.index);
        let extras = clusters
            .iter()
            .map(|c| ClusterExtras {
                emitted_by_kind: c.emitted_by_kind,
                last_record: c.last_record,
                hidden: c.hidden.iter().cloned().collect(),
            })
            .collect();
        let state =
            SnapshotRef { version: SNAPSHOT_VERSION, clusters, schedule: &self.schedule, extras };
        // An empty snapshot would restart from nothing and re-emit every state: refuse.
        postcard::to_stdvec(&state).map_err(|e| SnapshotError::Encode(e.to_string()))
    }

    /// An engine resumed from [`Engine::snapshot`], with the parameters of `config`.
    pub fn restore(config: EngineConfig, bytes: &[u8]) -> Result<Engine, SnapshotError> {
        let corrupt = |e: postcard::Error| SnapshotError::Corrupt(e.to_string());
        // The version leads the snapshot: read it alone first, so a future format is
        // reported as such and not as corruption.
        let (found, _) = postcard::take_from_bytes::<u32>(bytes).map_err(corrupt)?;
        let (clusters, schedule, extras) = match found {
            1 => {
                let s: SnapshotV1 = postcard::from_bytes(bytes).map_err(corrupt)?;
                // Format 1 kept no record time per cluster: count from the last one seen.
                let extras = s
                    .clusters
                    .iter()
                    .map(|_| ClusterExtras { last_record: s.schedule.now, ..Default::default() })
                    .collect();
                // Format 1 never removed a cluster: its index was its position.
                let mut clusters = s.clusters;
                for (i, c) in clusters.iter_mut().enumerate() {
                    c.index = i as u32;
                }
                (clusters, s.schedule, extras)
            }
            SNAPSHOT_VERSION => {
                let s: SnapshotV2 = postcard::from_bytes(bytes).map_err(corrupt)?;
                (s.clusters, s.schedule, s.extras)
            }
            found => return Err(SnapshotError::Version { found }),
        };
        if extras.len() != clusters.len() {
            return Err(SnapshotError::Corrupt(format!(
                "{} clusters but {} cluster records",
                clusters.len(),
                extras.len()
            )));
        }
        let clusters = clusters
            .into_iter()
            .zip(extras)
            .map(|(mut cluster, extra)| {
                cluster.hidden = extra.hidden.into_iter().collect();
                cluster.emitted_by_kind = extra.emitted_by_kind;
                cluster.last_record = extra.last_record;
                cluster
            })
            .collect();
        Engine::assemble(config, schedule, clusters)
    }

    /// An engine from restored clusters and schedule, whether from a snapshot or from
    /// entries: checks what the bytes could not, and rebuilds what is derived.
    pub(super) fn assemble(
        config: EngineConfig,
        schedule: Schedule,
        mut clusters: Vec<Cluster>,
    ) -> Result<Engine, SnapshotError> {
        let mut engine = Engine::new(config);
        let mut schedule = schedule;
        // A removed cluster's index is never handed out again, not even after a restart:
        // its deadlines may still be on the schedule. Taken before routers' leave it.
        let scheduled = schedule.deadlines.iter().map(|Reverse(d)| d.cluster);
        let checks = schedule.evictions.iter().map(|Reverse(e)| e.cluster);
        let mut next = scheduled.chain(checks).map(|i| i.saturating_add(1)).max().unwrap_or(0);
        // A router's deadline, and a router's and a slot's check, live in their entries
        // (`schedule::deadline_in_own_entry`, `check_in_own_entry`). Any the schedule came
        // with (from a format-2 snapshot, or a store written before) give the keys their
        // check's time, then make way for what the keys say.
        let mut own_checks = OwnChecks::default();
        if schedule.evictions.iter().any(|Reverse(e)| check_in_own_entry(&e.key)) {
            let all = std::mem::take(&mut schedule.evictions).into_vec();
            for Reverse(e) in all {
                if check_in_own_entry(&e.key) {
                    // A key has one check; were there two, the sooner is the one its entry
                    // would have said.
                    let due = own_checks.entry((e.cluster, e.key)).or_insert(e.due);
                    *due = (*due).min(e.due);
                } else {
                    schedule.evictions.push(Reverse(e));
                }
            }
        }
        schedule.deadlines.retain(|Reverse(d)| !deadline_in_own_entry(&d.key));
        let mut deadlines = Vec::new();
        let mut checks = Vec::new();
        for cluster in &mut clusters {
            // Its parameters first: a key without a check is given one a key TTL on.
            cluster.params = engine.config.params(&cluster.name);
            if cluster.adopt_own_schedule(&own_checks, &mut deadlines, &mut checks) {
                engine.changed_clusters.insert(cluster.index);
            }
        }
        schedule.deadlines.extend(deadlines.into_iter().map(Reverse));
        schedule.evictions.extend(checks.into_iter().map(Reverse));
        engine.schedule = schedule;
        let checked: std::collections::HashSet<u32> = engine
            .schedule
            .evictions
            .iter()
            .filter(|Reverse(e)| e.key == StateKey::Leader)
            .map(|Reverse(e)| e.cluster)
            .collect();
        for cluster in clusters {
            let i = cluster.index;
            if engine.clusters.contains_key(&i) || engine.cluster_ids.contains_key(&cluster.name) {
                return Err(SnapshotError::Corrupt(format!("cluster {} twice", cluster.name)));
            }
            if let Some(id) = cluster.unknown_node() {
                return Err(SnapshotError::Corrupt(format!(
                    "cluster {} holds node id {id}, which it has no name for",
                    cluster.name
                )));
            }
            next = next.max(i.saturating_add(1));
            if !checked.contains(&i) {
                let due = cluster.last_record.saturating_add(cluster.params.key_ttl);
                let check = EvictionCheck { due, cluster: i, key: StateKey::Leader };
                engine.schedule.evictions.push(Reverse(check));
            }
            engine.keys += cluster.keys();
            engine.cluster_ids.insert(cluster.name.clone(), i);
            if cluster.staged_expiry().is_some() {
                engine.staging.insert(i);
            }
            engine.clusters.insert(i, cluster);
        }
        engine.next_cluster = next;
        Ok(engine)
    }
}
