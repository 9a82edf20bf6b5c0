//! Engine snapshots: everything the engine knows, as bytes a restart resumes from (DESIGN §7).
//!
//! postcard writes structs as their fields in order and enums as variant indexes, with no
//! names: renaming a persisted type or field is free, reordering or inserting one is a new
//! format. A snapshot of another version is refused, never silently reset, since a reset
//! would re-emit every state as initial.

use serde::{Deserialize, Serialize};

use super::cluster::Cluster;
use super::schedule::Schedule;
use super::{Engine, EngineConfig};

/// The version of the engine snapshot format.
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
    schedule: &'a Schedule,
}

#[derive(Deserialize)]
struct SnapshotOwned {
    version: u32,
    clusters: Vec<Cluster>,
    schedule: Schedule,
}

impl Engine {
    /// Everything the engine knows — emitted values, pending windows, spin counters,
    /// per-reporter record times, deadlines — as bytes, for a restart to resume from.
    pub fn snapshot(&self) -> Vec<u8> {
        let state = SnapshotRef {
            version: SNAPSHOT_VERSION,
            clusters: &self.clusters,
            schedule: &self.schedule,
        };
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
        engine.schedule = state.schedule;
        for (i, mut cluster) in state.clusters.into_iter().enumerate() {
            cluster.index = i as u32;
            cluster.params = engine.config.params(&cluster.name);
            engine.cluster_ids.insert(cluster.name.clone(), i as u32);
            if cluster.staged_expiry().is_some() {
                engine.staging.insert(i as u32);
            }
            engine.clusters.push(cluster);
        }
        debug_assert_eq!(state.version, SNAPSHOT_VERSION);
        Ok(engine)
    }
}
