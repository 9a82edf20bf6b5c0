//! The store: fjall, an LSM tree, at `<[state] dir>/store`.
//!
//! Chosen by measurement of bytes written per changed key (BENCHMARKS.md): a commit of a few
//! entries appends them to fjall's journal and, later, to one sorted table by compaction,
//! where a copy-on-write B-tree (redb) rewrites every page on the path to each changed key at
//! every commit — 8 to 11 KiB per changed key here at 20 to 100 changes per commit, against
//! a few hundred bytes for fjall.
//!
//! One keyspace; each key's first byte says what it is:
//! - `#version`: the store's format version ([`STORE_VERSION`]);
//! - `e` and an engine entry's key ([`crate::engine::Engine::changes`]): the engine of every
//!   source but a grouped kafka source;
//! - `s`, a partition of a grouped kafka source's topic (4 bytes, big-endian) and an entry key:
//!   that partition's engine (a shard, DESIGN §10), kept here when a rebalance takes the
//!   partition away, to resume from if it comes back;
//! - `p` and a source's name: its [`Position`] (postcard);
//! - `o` and an outbox sequence number (big-endian): a chunk of consecutive events, their
//!   JSON lines joined by newlines, the first numbered by the key.
//!
//! The outbox is stored by chunks, not by event: a commit that emits a million events (a
//! startup burst) writes two thousand entries, not a million, and removes as few once the
//! sinks hold them. A chunk goes once every sink holds its last event; after a crash its
//! events that were already held are delivered again (the same ids), as at-least-once allows.
//!
//! A commit is one write batch, synced to disk before it returns: all of it survives a
//! crash, or none of it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode};

use super::legacy::{self, State};
use super::{Position, StateError};

/// The store's format. Another one is refused with a clear message, never misread.
pub const STORE_VERSION: u32 = 3;
const DIR: &str = "store";
const VERSION_KEY: &[u8] = b"#version";
const ENGINE: u8 = b'e';
const SHARD: u8 = b's';
const POSITION: u8 = b'p';
const OUTBOX: u8 = b'o';
/// Beside the store once migrated: the format-2 file, kept as it was.
pub const BACKUP: &str = "state.bin.v2";

/// An entry's key, and its value or `None` to remove it.
pub type Entry = (Vec<u8>, Option<Vec<u8>>);

/// What one commit writes.
#[derive(Default)]
pub struct Commit {
    /// Changed engine entries; `None` removes one.
    pub engine: Vec<Entry>,
    /// Changed entries of each partition's engine.
    pub shards: Vec<(i32, Vec<Entry>)>,
    /// The positions that moved.
    pub positions: Vec<(String, Position)>,
    /// Chunks added to the outbox.
    pub added: Vec<Chunk>,
    /// Chunks every sink now holds, by their first sequence number.
    pub removed: Vec<u64>,
}

/// Consecutive outbox events stored as one entry.
#[derive(Debug, Clone, PartialEq)]
pub struct Chunk {
    /// The first event's sequence number; the others follow one by one.
    pub first: u64,
    pub lines: Vec<Arc<str>>,
}

/// Events per chunk at most: large enough that a burst costs few entries, small enough that
/// a chunk is never a large value, and that few held events are delivered again after a crash.
pub const CHUNK_EVENTS: usize = 512;

/// Cuts events, in ascending order, into chunks of consecutive sequence numbers.
pub fn chunks(events: impl IntoIterator<Item = (u64, Arc<str>)>) -> Vec<Chunk> {
    let mut out: Vec<Chunk> = Vec::new();
    for (seq, line) in events {
        match out.last_mut() {
            Some(c) if c.first + c.lines.len() as u64 == seq && c.lines.len() < CHUNK_EVENTS => {
                c.lines.push(line)
            }
            _ => out.push(Chunk { first: seq, lines: vec![line] }),
        }
    }
    out
}

impl Commit {
    pub fn is_empty(&self) -> bool {
        self.engine.is_empty()
            && self.shards.iter().all(|(_, e)| e.is_empty())
            && self.positions.is_empty()
            && self.added.is_empty()
            && self.removed.is_empty()
    }
}

/// An engine entry's key as the store holds it, read without its prefix: a view of the same
/// bytes, not a copy (a million entries are read at startup).
pub struct EntryKey(fjall::Slice, usize);

impl AsRef<[u8]> for EntryKey {
    fn as_ref(&self) -> &[u8] {
        self.0.get(self.1..).unwrap_or_default()
    }
}

pub struct StateStore {
    db: Database,
    ks: Keyspace,
    path: PathBuf,
}

fn prefixed(prefix: u8, key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(1 + key.len());
    k.push(prefix);
    k.extend_from_slice(key);
    k
}

fn shard_prefix(partition: i32) -> [u8; 5] {
    let [a, b, c, d] = partition.to_be_bytes();
    [SHARD, a, b, c, d]
}

fn outbox_key(seq: u64) -> Vec<u8> {
    prefixed(OUTBOX, &seq.to_be_bytes())
}

impl StateStore {
    /// Opens (or creates) the store under `dir`. A format-2 file found beside a new store is
    /// returned to be migrated with [`StateStore::migrate`]; the caller turns its engine
    /// snapshot into entries.
    pub fn open(dir: &Path) -> Result<(StateStore, Option<State>), StateError> {
        let path = dir.join(DIR);
        std::fs::create_dir_all(dir)
            .map_err(|source| StateError::Io { path: dir.to_path_buf(), source })?;
        let fail =
            |e: fjall::Error| StateError::Store { path: path.clone(), reason: e.to_string() };
        // One background worker. With two, fjall's first worker hands every compaction on
        // to the second and, while that one is busy, takes it back from the queue and hands
        // it on again: a core spent spinning for as long as a compaction runs.
        let db = Database::builder(&path).worker_threads(1).open().map_err(fail)?;
        let ks = db.keyspace("state", KeyspaceCreateOptions::default).map_err(fail)?;
        let store = StateStore { db, ks, path: path.clone() };
        let legacy_path = dir.join(legacy::FILE_NAME);
        match store.ks.get(VERSION_KEY).map_err(fail)? {
            Some(v) if *v == STORE_VERSION.to_le_bytes() => {
                // Migrated before a crash that came ahead of the backup's rename.
                store.keep_backup(&legacy_path)?;
                Ok((store, None))
            }
            Some(v) => {
                let found = match <[u8; 4]>::try_from(&*v) {
                    Ok(b) => u32::from_le_bytes(b).to_string(),
                    Err(_) => format!("{:?}", String::from_utf8_lossy(&v)),
                };
                Err(StateError::StoreVersion { path, found })
            }
            None if !store.ks.is_empty().map_err(fail)? => Err(StateError::Store {
                path,
                reason: "it holds no format version: not a herald state store".into(),
            }),
            None => match legacy::load(&legacy_path)? {
                Some(state) => Ok((store, Some(state))),
                None => {
                    store.write(Commit::default(), true)?;
                    Ok((store, None))
                }
            },
        }
    }

    /// Writes a format-2 state into this new store in one transaction — the engine's
    /// entries, the positions, the outbox — then keeps the old file beside it.
    pub fn migrate(
        &self,
        dir: &Path,
        engine: Vec<(Vec<u8>, Option<Vec<u8>>)>,
        state: State,
    ) -> Result<(), StateError> {
        let commit = Commit {
            engine,
            shards: Vec::new(),
            positions: state.positions.into_iter().collect(),
            added: chunks(state.outbox.into_iter().zip(1..).map(|(l, i)| (i, Arc::from(l)))),
            removed: Vec::new(),
        };
        self.write(commit, true)?;
        self.keep_backup(&dir.join(legacy::FILE_NAME))
    }

    fn keep_backup(&self, legacy_path: &Path) -> Result<(), StateError> {
        if !legacy_path.exists() {
            return Ok(());
        }
        let backup = legacy_path.with_file_name(BACKUP);
        std::fs::rename(legacy_path, &backup)
            .map_err(|source| StateError::Io { path: backup.clone(), source })?;
        tracing::info!(backup = %backup.display(), "state migrated from the single-file format 2 into the store; the old file is kept");
        Ok(())
    }

    fn fail(&self, e: fjall::Error) -> StateError {
        StateError::Store { path: self.path.clone(), reason: e.to_string() }
    }

    fn corrupt(&self, reason: String) -> StateError {
        StateError::Corrupt { path: self.path.clone(), reason }
    }

    /// The engine's entries, in key order, without the store's prefix.
    pub fn engine_entries(
        &self,
    ) -> impl Iterator<Item = Result<(EntryKey, fjall::Slice), StateError>> + '_ {
        self.ks.prefix([ENGINE]).map(|g| {
            let (k, v) = g.into_inner().map_err(|e| self.fail(e))?;
            Ok((EntryKey(k, 1), v))
        })
    }

    /// The entries of partition `partition`'s engine, in key order, without the prefix.
    pub fn shard_entries(
        &self,
        partition: i32,
    ) -> impl Iterator<Item = Result<(EntryKey, fjall::Slice), StateError>> + '_ {
        let prefix = shard_prefix(partition);
        self.ks.prefix(prefix).map(move |g| {
            let (k, v) = g.into_inner().map_err(|e| self.fail(e))?;
            Ok((EntryKey(k, prefix.len()), v))
        })
    }

    pub fn positions(&self) -> Result<BTreeMap<String, Position>, StateError> {
        let mut out = BTreeMap::new();
        for g in self.ks.prefix([POSITION]) {
            let (k, v) = g.into_inner().map_err(|e| self.fail(e))?;
            let name = String::from_utf8(k[1..].to_vec())
                .map_err(|_| self.corrupt("a source name is not UTF-8".into()))?;
            let position = postcard::from_bytes(&v)
                .map_err(|e| self.corrupt(format!("position of source {name}: {e}")))?;
            out.insert(name, position);
        }
        Ok(out)
    }

    /// Source `name`'s position, if one was committed.
    pub fn position(&self, name: &str) -> Result<Option<Position>, StateError> {
        let Some(v) = self.ks.get(prefixed(POSITION, name.as_bytes())).map_err(|e| self.fail(e))?
        else {
            return Ok(None);
        };
        let position = postcard::from_bytes(&v)
            .map_err(|e| self.corrupt(format!("position of source {name}: {e}")))?;
        Ok(Some(position))
    }

    /// The outbox, oldest first, by chunk: (its first sequence number, its JSON lines).
    pub fn outbox(&self) -> Result<Vec<(u64, Vec<String>)>, StateError> {
        let mut out = Vec::new();
        for g in self.ks.prefix([OUTBOX]) {
            let (k, v) = g.into_inner().map_err(|e| self.fail(e))?;
            let seq = <[u8; 8]>::try_from(&k[1..])
                .map(u64::from_be_bytes)
                .map_err(|_| self.corrupt("an outbox key is not a sequence number".into()))?;
            let text = std::str::from_utf8(&v)
                .map_err(|_| self.corrupt(format!("outbox chunk {seq} is not UTF-8")))?;
            out.push((seq, text.split('\n').map(str::to_string).collect()));
        }
        Ok(out)
    }

    /// Commits `c` as one transaction, synced before it returns.
    pub fn commit(&self, c: Commit) -> Result<(), StateError> {
        self.write(c, false)
    }

    fn write(&self, c: Commit, version: bool) -> Result<(), StateError> {
        if c.is_empty() && !version {
            return Ok(());
        }
        let mut batch = self.db.batch().durability(Some(PersistMode::SyncAll));
        if version {
            batch.insert(&self.ks, VERSION_KEY, STORE_VERSION.to_le_bytes());
        }
        // In key order: each insert's search through the memtable's skip list then walks
        // the nodes the previous one just visited, still in cache. In hash order a large
        // commit spent most of its time in cache misses there.
        let shards = c.shards.into_iter().map(|(p, e)| (shard_prefix(p).to_vec(), e));
        for (prefix, mut entries) in std::iter::once((vec![ENGINE], c.engine)).chain(shards) {
            entries.sort_unstable_by(|a, b| a.0.cmp(&b.0));
            for (key, value) in entries {
                let mut k = Vec::with_capacity(prefix.len() + key.len());
                k.extend_from_slice(&prefix);
                k.extend_from_slice(&key);
                match value {
                    Some(v) => batch.insert(&self.ks, k, v),
                    None => batch.remove(&self.ks, k),
                }
            }
        }
        for (name, position) in c.positions {
            let value = postcard::to_stdvec(&position)
                .map_err(|e| self.corrupt(format!("position of source {name}: {e}")))?;
            batch.insert(&self.ks, prefixed(POSITION, name.as_bytes()), value);
        }
        for seq in c.removed {
            batch.remove(&self.ks, outbox_key(seq));
        }
        for chunk in c.added {
            let mut value = Vec::with_capacity(chunk.lines.iter().map(|l| l.len() + 1).sum());
            for (i, line) in chunk.lines.iter().enumerate() {
                if i > 0 {
                    value.push(b'\n');
                }
                value.extend_from_slice(line.as_bytes());
            }
            batch.insert(&self.ks, outbox_key(chunk.first), value);
        }
        batch.commit().map_err(|e| self.fail(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(first: u64, lines: &[&str]) -> Chunk {
        Chunk { first, lines: lines.iter().map(|l| Arc::from(*l)).collect() }
    }

    fn position(offset: u64) -> Position {
        Position { file_id: Some((1, 2)), offset, line: 3, applied: vec![9, 10] }
    }

    #[test]
    fn a_commit_reads_back_after_the_store_is_reopened() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (store, legacy) = StateStore::open(dir.path()).unwrap();
            assert!(legacy.is_none());
            let c = Commit {
                engine: vec![(b"E".to_vec(), Some(vec![1, 2])), (b"Cx".to_vec(), Some(vec![3]))],
                shards: vec![(2, vec![(b"E".to_vec(), Some(vec![4]))])],
                positions: vec![("log".into(), position(77))],
                added: vec![chunk(1, &["one", "two"]), chunk(3, &["three"])],
                removed: vec![],
            };
            store.commit(c).unwrap();
            let c = Commit {
                engine: vec![(b"Cx".to_vec(), None)],
                shards: vec![(3, vec![(b"E".to_vec(), Some(vec![5]))])],
                positions: vec![("log".into(), position(99))],
                added: vec![chunk(4, &["four", "five"])],
                removed: vec![1],
            };
            store.commit(c).unwrap();
        }
        let (store, _) = StateStore::open(dir.path()).unwrap();
        let entries: Vec<(Vec<u8>, Vec<u8>)> = store
            .engine_entries()
            .map(|r| r.map(|(k, v)| (k.as_ref().to_vec(), v.to_vec())))
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(entries, vec![(b"E".to_vec(), vec![1, 2])]);
        let shard = |p| -> Vec<(Vec<u8>, Vec<u8>)> {
            store
                .shard_entries(p)
                .map(|r| r.map(|(k, v)| (k.as_ref().to_vec(), v.to_vec())))
                .collect::<Result<_, _>>()
                .unwrap()
        };
        assert_eq!(shard(2), vec![(b"E".to_vec(), vec![4])], "each partition's engine apart");
        assert_eq!(shard(3), vec![(b"E".to_vec(), vec![5])]);
        assert!(shard(0).is_empty());
        assert_eq!(store.positions().unwrap()["log"], position(99));
        let outbox = store.outbox().unwrap();
        assert_eq!(
            outbox,
            vec![(3, vec!["three".into()]), (4, vec!["four".into(), "five".into()])]
        );
    }

    #[test]
    fn a_store_of_another_format_is_refused_with_a_clear_message() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (store, _) = StateStore::open(dir.path()).unwrap();
            let mut batch = store.db.batch().durability(Some(PersistMode::SyncAll));
            batch.insert(&store.ks, VERSION_KEY, 9u32.to_le_bytes());
            batch.commit().unwrap();
        }
        let err = StateStore::open(dir.path()).err().expect("refused").to_string();
        assert!(err.contains("state store format 9 is not supported"), "{err}");
        assert!(err.contains("reads format 3"), "{err}");
    }

    #[test]
    fn a_format_2_file_of_another_version_is_refused_not_migrated() {
        let dir = tempfile::tempdir().unwrap();
        let mut bytes = legacy::encode(&State::default()).unwrap();
        bytes[8] = 7;
        std::fs::write(dir.path().join(legacy::FILE_NAME), bytes).unwrap();
        let err = StateStore::open(dir.path()).err().expect("refused").to_string();
        assert!(err.contains("state format 7 is not supported"), "{err}");
        assert!(dir.path().join(legacy::FILE_NAME).exists(), "the file is left as it was");
    }
}
