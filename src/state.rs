//! What survives a restart: the engine snapshot, each source's position, and the outbox of
//! events not yet acknowledged by every sink — one file, written atomically, versioned.
//!
//! They are one file on purpose. A position must never be ahead of the engine state that
//! contains its records' effect, and an event must never be forgotten between "emitted by the
//! engine" and "acknowledged by every sink". Writing all three together (temp file, fsync,
//! rename, fsync of the directory) makes every state on disk a consistent cut.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Leads the file, so that a stranger's file is refused rather than misread.
const MAGIC: &[u8; 8] = b"HERALD\0S";
/// The state file format. Another version is a clear error, never a silent reset.
pub const STATE_VERSION: u32 = 2;
const FILE_NAME: &str = "state.bin";

/// Where a source is in its input.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Position {
    /// The file's identity (device, inode), to find it again after a rotation.
    pub file_id: Option<(u64, u64)>,
    /// Bytes consumed: everything before this offset has been applied.
    pub offset: u64,
    /// Lines consumed, for line numbers in errors after a restart.
    pub line: u64,
    /// For push sources (a broker's queue), which have no offset: hashes of the most recent
    /// messages applied. A message the broker redelivers after a crash whose effect is
    /// already in the state is acknowledged without being applied twice.
    pub applied: Vec<u64>,
}

/// The persisted state.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    /// [`crate::engine::Engine::snapshot`] bytes; empty before the first snapshot.
    pub engine: Vec<u8>,
    /// Per source name.
    pub positions: BTreeMap<String, Position>,
    /// Events (as their JSON lines) emitted but not yet acknowledged by every sink, oldest
    /// first. Redelivered after a restart, with the same ids.
    pub outbox: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: not a herald state file")]
    NotState { path: PathBuf },
    #[error("{path}: state format {found} is not supported (this herald reads format {STATE_VERSION}); move the file away to start afresh")]
    Version { path: PathBuf, found: u32 },
    #[error("{path}: corrupt state: {reason}")]
    Corrupt { path: PathBuf, reason: String },
}

/// The state directory.
#[derive(Clone, Debug)]
pub struct StateDir {
    dir: PathBuf,
}

impl StateDir {
    pub fn new(dir: impl Into<PathBuf>) -> StateDir {
        StateDir { dir: dir.into() }
    }

    pub fn path(&self) -> PathBuf {
        self.dir.join(FILE_NAME)
    }

    /// The persisted state, or `None` when there is none yet.
    pub fn load(&self) -> Result<Option<State>, StateError> {
        let path = self.path();
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(StateError::Io { path, source }),
        };
        decode(&bytes).map(Some).map_err(|e| match e {
            FormatError::NotState => StateError::NotState { path },
            FormatError::Version(found) => StateError::Version { path, found },
            FormatError::Corrupt(reason) => StateError::Corrupt { path, reason },
        })
    }

    /// Writes `state` atomically: a crash leaves either the old state or the new one.
    pub fn save(&self, state: &State) -> Result<(), StateError> {
        let io = |source, path: &Path| StateError::Io { path: path.to_path_buf(), source };
        fs::create_dir_all(&self.dir).map_err(|e| io(e, &self.dir))?;
        let tmp = self.dir.join(format!("{FILE_NAME}.tmp"));
        let mut bytes = Vec::with_capacity(state.engine.len() + 64);
        bytes.extend_from_slice(MAGIC);
        bytes.extend_from_slice(&STATE_VERSION.to_le_bytes());
        let body = postcard::to_stdvec(state)
            .map_err(|e| StateError::Corrupt { path: tmp.clone(), reason: e.to_string() })?;
        bytes.extend_from_slice(&body);
        let mut f = File::create(&tmp).map_err(|e| io(e, &tmp))?;
        f.write_all(&bytes).map_err(|e| io(e, &tmp))?;
        f.sync_all().map_err(|e| io(e, &tmp))?;
        drop(f);
        let path = self.path();
        fs::rename(&tmp, &path).map_err(|e| io(e, &path))?;
        // The rename itself must reach the disk, or a crash may resurrect the old file.
        File::open(&self.dir).and_then(|d| d.sync_all()).map_err(|e| io(e, &self.dir))?;
        Ok(())
    }
}

/// Why a state file's bytes are not a [`State`]; [`StateDir::load`] adds the file's path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    #[error("not a herald state file")]
    NotState,
    #[error("state format {0} is not supported (this herald reads format {STATE_VERSION})")]
    Version(u32),
    #[error("corrupt state: {0}")]
    Corrupt(String),
}

/// A state file's contents, as [`StateDir::load`] reads them. Whatever the bytes, the answer
/// is a state or an error: the file is outside herald's control once written.
pub fn decode(bytes: &[u8]) -> Result<State, FormatError> {
    let rest = bytes.strip_prefix(MAGIC.as_slice()).ok_or(FormatError::NotState)?;
    let (version, body) = rest.split_first_chunk::<4>().ok_or(FormatError::NotState)?;
    let version = u32::from_le_bytes(*version);
    if version != STATE_VERSION {
        return Err(FormatError::Version(version));
    }
    postcard::from_bytes(body).map_err(|e| FormatError::Corrupt(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> State {
        let mut s = State { engine: vec![1, 2, 3], ..State::default() };
        s.positions.insert(
            "log".into(),
            Position { file_id: Some((1, 2)), offset: 77, line: 3, applied: vec![9] },
        );
        s.outbox.push("{\"kind\":\"x\"}".into());
        s
    }

    #[test]
    fn state_round_trips_and_replaces_atomically() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateDir::new(dir.path().join("nested"));
        assert_eq!(store.load().unwrap(), None);
        store.save(&sample()).unwrap();
        assert_eq!(store.load().unwrap(), Some(sample()));
        store.save(&State::default()).unwrap();
        assert_eq!(store.load().unwrap(), Some(State::default()));
        assert!(!dir.path().join("nested/state.bin.tmp").exists());
    }

    #[test]
    fn another_version_is_a_clear_error_not_a_reset() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateDir::new(dir.path());
        store.save(&sample()).unwrap();
        let mut bytes = fs::read(store.path()).unwrap();
        bytes[8] = 7;
        fs::write(store.path(), &bytes).unwrap();
        let err = store.load().unwrap_err().to_string();
        assert!(err.contains("state format 7 is not supported"), "{err}");
        fs::write(store.path(), b"something else").unwrap();
        assert!(matches!(store.load(), Err(StateError::NotState { .. })));
        let mut truncated = MAGIC.to_vec();
        truncated.extend_from_slice(&STATE_VERSION.to_le_bytes());
        truncated.push(0xff);
        fs::write(store.path(), &truncated).unwrap();
        assert!(matches!(store.load(), Err(StateError::Corrupt { .. })));
    }
}
