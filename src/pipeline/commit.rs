//! The commit: one transaction of the state store — the engine's changed entries, the
//! positions that moved, the outbox's added and removed events — written before any event of
//! it reaches a sink.
//!
//! The write is blocking IO (a write batch synced to disk): the engine task runs it on a
//! blocking thread, never on an async worker, so a slow disk cannot stall the HTTP server or
//! the broker clients that share the workers.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use super::PipelineError;
use crate::engine::{Engine, EngineConfig};
use crate::state::changelog::{Changelog, INPUT_KEY};
use crate::state::{Commit, Entry, Position, StateStore};

/// How long a restore reads on for the changelog to reach the group's committed offset:
/// a transaction's markers land within moments of its commit.
const STABLE_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// Where commits go; `None` without a `[state] dir` (nothing survives a restart).
#[derive(Clone)]
pub struct Store(Option<Arc<StateStore>>);

/// What the previous run left.
pub struct Restored {
    pub engine: Engine,
    pub positions: BTreeMap<String, Position>,
    /// The outbox, oldest first, by chunk: (its key in the store, its JSON lines).
    pub outbox: Vec<(u64, Vec<String>)>,
}

impl Store {
    pub fn none() -> Store {
        Store(None)
    }

    /// Opens the store under `dir`, migrating a single-file state of format 2 found there.
    pub fn open(dir: &Path, config: &EngineConfig) -> Result<Store, PipelineError> {
        let (store, legacy) = StateStore::open(dir)?;
        if let Some(state) = legacy {
            let engine = match state.engine.is_empty() {
                true => Engine::new(config.clone()),
                false => Engine::restore(config.clone(), &state.engine)?,
            };
            store.migrate(dir, engine.entries()?, state)?;
        }
        Ok(Store(Some(Arc::new(store))))
    }

    pub fn is_some(&self) -> bool {
        self.0.is_some()
    }

    /// The engine, positions and outbox the previous run committed, or fresh ones. The
    /// engine tracks its changes from here when there is a store.
    pub fn load(&self, config: EngineConfig) -> Result<Restored, PipelineError> {
        let Some(store) = &self.0 else {
            let engine = Engine::new(config);
            return Ok(Restored { engine, positions: BTreeMap::new(), outbox: Vec::new() });
        };
        let engine = restored(config, store.engine_entries())?;
        Ok(Restored { engine, positions: store.positions()?, outbox: store.outbox()? })
    }

    /// The engine of partition `partition` of a grouped kafka source as the store last held
    /// it (a fresh one if it never did, or without a store), tracking its changes.
    pub fn shard(&self, config: EngineConfig, partition: i32) -> Result<Engine, PipelineError> {
        match &self.0 {
            Some(store) => restored(config, store.shard_entries(partition)),
            None => Ok(Engine::new(config)),
        }
    }

    /// The engine of partition `partition` of grouped kafka source `source`, restored from
    /// its changelog on top of what the store holds of it (DESIGN §10), and the input
    /// partition's next offset it reflects. The store is brought up to the changelog's end
    /// in one commit. Blocking.
    pub fn shard_from_changelog(
        &self,
        config: EngineConfig,
        changelog: &dyn Changelog,
        source: &str,
        partition: i32,
    ) -> Result<(Engine, u64), PipelineError> {
        let (log_name, input_name) = shard_positions(source, partition);
        let position = |name: &str| -> Result<Option<u64>, PipelineError> {
            match &self.0 {
                Some(store) => Ok(store.position(name)?.map(|p| p.offset)),
                None => Ok(None),
            }
        };
        let mut entries: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
        if let Some(store) = &self.0 {
            for kv in store.shard_entries(partition) {
                let (k, v) = kv?;
                entries.insert(k.as_ref().to_vec(), v.to_vec());
            }
        }
        let mut writes: BTreeMap<Vec<u8>, Option<Vec<u8>>> = BTreeMap::new();
        let mut input = position(&input_name)?;
        let mut from = position(&log_name)?.unwrap_or(0);
        let deadline = std::time::Instant::now() + STABLE_WAIT;
        let next = loop {
            let replayed = changelog.read(partition, from)?;
            if replayed.from_start {
                // A void cache: only the changelog's keys survive, the others go (those
                // held and those a read before this one took away alike).
                let held = std::mem::take(&mut entries).into_keys();
                writes = writes.into_keys().chain(held).map(|k| (k, None)).collect();
                input = Some(0);
            }
            for (key, value) in replayed.entries {
                if key == INPUT_KEY {
                    let offset = value.and_then(|v| <[u8; 8]>::try_from(v.as_slice()).ok());
                    input = offset.map(u64::from_be_bytes).or(input);
                    continue;
                }
                match &value {
                    Some(v) => entries.insert(key.clone(), v.clone()),
                    None => entries.remove(&key),
                };
                writes.insert(key, value);
            }
            from = replayed.next;
            // The group's committed offset is never ahead of the changelog (both go in one
            // transaction, or the offset after the entries). Ahead, it names a commit whose
            // changelog records are not readable yet (a transaction's markers still being
            // written): resuming from the offset on an engine without them would skip its
            // records. So read on until they are there.
            // An offset not settled yet (a transaction still open) reads as an error.
            let behind = match changelog.committed_input(partition) {
                Ok(Some(c)) if input.unwrap_or(0) < c => Some(c.to_string()),
                Ok(_) => None,
                Err(e) => Some(e.to_string()),
            };
            match behind {
                None => break from,
                Some(committed) if std::time::Instant::now() > deadline => {
                    tracing::warn!(partition, committed, input = input.unwrap_or(0), "the changelog does not reach the group's committed offset; the partition's engine resumes from what it holds");
                    break from;
                }
                Some(_) => std::thread::sleep(std::time::Duration::from_millis(100)),
            }
        };
        let input = input.unwrap_or(0);
        if let Some(store) = &self.0 {
            let at = |offset| Position { offset, ..Position::default() };
            store.commit(Commit {
                shards: vec![(partition, writes.into_iter().collect::<Vec<Entry>>())],
                positions: vec![(log_name, at(next)), (input_name, at(input))],
                ..Commit::default()
            })?;
        }
        let mut engine = Engine::from_entries(config, entries.iter())?;
        engine.track_changes();
        Ok((engine, input))
    }

    /// The sources' positions the previous run committed (an edge keeps nothing else).
    pub fn positions(&self) -> Result<BTreeMap<String, Position>, PipelineError> {
        match &self.0 {
            Some(store) => Ok(store.positions()?),
            None => Ok(BTreeMap::new()),
        }
    }

    /// Commits `commit` on this thread, which may block (nothing without a store).
    pub fn commit_blocking(&self, commit: Commit) -> Result<(), crate::state::StateError> {
        match &self.0 {
            Some(store) => store.commit(commit),
            None => Ok(()),
        }
    }
}

/// The names under which the store keeps how far partition `partition` of grouped kafka
/// source `source` is: in its changelog, and in its input.
pub fn shard_positions(source: &str, partition: i32) -> (String, String) {
    (format!("{source}#changelog{partition}"), format!("{source}#partition{partition}"))
}

/// An engine rebuilt from a store's entries, tracking its changes from here.
fn restored<K: AsRef<[u8]>, V: AsRef<[u8]>>(
    config: EngineConfig,
    entries: impl Iterator<Item = Result<(K, V), crate::state::StateError>>,
) -> Result<Engine, PipelineError> {
    let mut failed = None;
    let entries = entries.map_while(|r| match r {
        Ok(kv) => Some(kv),
        Err(e) => {
            failed = Some(e);
            None
        }
    });
    let engine = Engine::from_entries(config, entries);
    if let Some(e) = failed {
        return Err(e.into());
    }
    let mut engine = engine?;
    engine.track_changes();
    Ok(engine)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{legacy, BACKUP};

    /// A state file written by the release before the store, by `herald run` with a NATS
    /// source (so with its applied messages' hashes), a stdout sink and a NATS sink that was
    /// down (so with an outbox), killed while a router's window was pending.
    const V2: &[u8] = include_bytes!("../../tests/data/state-v2.bin");

    #[test]
    fn a_format_2_state_file_is_migrated_once_and_kept_as_a_backup() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(legacy::FILE_NAME), V2).unwrap();
        let old = legacy::decode(V2).unwrap();
        assert!(!old.outbox.is_empty() && !old.positions["bus"].applied.is_empty());
        let config = EngineConfig::default();
        let before = Engine::restore(config.clone(), &old.engine).unwrap();

        let store = Store::open(dir.path(), &config).unwrap();
        assert!(!dir.path().join(legacy::FILE_NAME).exists());
        assert_eq!(std::fs::read(dir.path().join(BACKUP)).unwrap(), V2, "kept as it was");
        let restored = store.load(config.clone()).unwrap();
        let sorted = |e: &Engine| {
            let mut entries = e.entries().unwrap();
            entries.sort();
            entries
        };
        assert_eq!(sorted(&restored.engine), sorted(&before));
        assert_eq!(restored.positions, old.positions);
        let lines: Vec<String> = restored.outbox.into_iter().flat_map(|(_, l)| l).collect();
        assert_eq!(lines, old.outbox);
        let pending = restored.engine.next_deadline();
        assert!(pending.is_some(), "the pending window is still there");
        drop(store);

        // Once: the next start opens the store and finds no file to migrate.
        let again = Store::open(dir.path(), &config).unwrap().load(config).unwrap();
        assert_eq!(again.positions, old.positions);
        assert_eq!(again.engine.next_deadline(), pending);
    }

    /// A changelog whose last transaction's records become readable only on the second
    /// read (its markers still being written at the first), while the group's committed
    /// offset, from the same transaction, is already there.
    struct LateMarkers(std::sync::atomic::AtomicUsize);

    impl Changelog for LateMarkers {
        fn append(&self, _: Vec<(i32, Vec<Entry>)>) -> crate::state::changelog::Appended {
            Box::pin(async { Ok(Vec::new()) })
        }

        fn read(
            &self,
            _: i32,
            from: u64,
        ) -> Result<crate::state::changelog::Replayed, crate::state::StateError> {
            let input = |o: u64| (INPUT_KEY.to_vec(), Some(o.to_be_bytes().to_vec()));
            let reads = self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let records = match reads {
                0 => vec![input(3)],
                _ => vec![input(3), input(5)],
            };
            let entries = records.get(from as usize..).unwrap_or_default().to_vec();
            let next = records.len() as u64;
            Ok(crate::state::changelog::Replayed { entries, next, from_start: false })
        }

        fn committed_input(&self, _: i32) -> Result<Option<u64>, crate::state::StateError> {
            // Not settled yet at the first look (the transaction still open): an error.
            match self.0.load(std::sync::atomic::Ordering::SeqCst) {
                1 => Err(crate::state::StateError::Changelog {
                    topic: "raw-changelog".into(),
                    reason: "unstable offset".into(),
                }),
                _ => Ok(Some(5)),
            }
        }
    }

    /// Regression: a restore that ended before the last transaction's records were
    /// readable gave an engine older than the group's committed offset, and the partition
    /// resumed from that offset: the records between were never applied. An offset not
    /// settled yet is waited for too, not taken for a failure.
    #[test]
    fn a_restore_reads_on_until_the_changelog_reaches_the_committed_offset() {
        let changelog = LateMarkers(Default::default());
        let (_, input) = Store::none()
            .shard_from_changelog(EngineConfig::default(), &changelog, "raw", 0)
            .unwrap();
        assert_eq!(input, 5, "the input offset of the committed transaction");
        assert_eq!(changelog.0.load(std::sync::atomic::Ordering::SeqCst), 2, "read twice");
    }
}
