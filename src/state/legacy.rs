//! The single-file state of earlier releases (format 2): the engine snapshot, each source's
//! position and the whole outbox in one file, rewritten at every commit. Read once, to be
//! migrated into the store (DESIGN §7.1); never written any more.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::{Position, StateError};

/// Leads the file, so that a stranger's file is refused rather than misread.
const MAGIC: &[u8; 8] = b"HERALD\0S";
/// The state file format. Another version is a clear error, never a silent reset.
pub const STATE_VERSION: u32 = 2;
pub const FILE_NAME: &str = "state.bin";

/// The state a format-2 file holds.
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

/// The state in the format-2 file at `path`, or `None` when there is none.
pub fn load(path: &Path) -> Result<Option<State>, StateError> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(StateError::Io { path: path.to_path_buf(), source }),
    };
    let path = path.to_path_buf();
    decode(&bytes).map(Some).map_err(|e| match e {
        FormatError::NotState => StateError::NotState { path },
        FormatError::Version(found) => StateError::Version { path, found },
        FormatError::Corrupt(reason) => StateError::Corrupt { path, reason },
    })
}

/// A format-2 file's bytes, for tests and the fuzz seeds: what the release before the store
/// wrote.
pub fn encode(state: &State) -> Result<Vec<u8>, postcard::Error> {
    let mut bytes = MAGIC.to_vec();
    bytes.extend_from_slice(&STATE_VERSION.to_le_bytes());
    postcard::to_extend(state, bytes)
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
    fn a_format_2_file_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE_NAME);
        assert_eq!(load(&path).unwrap(), None);
        std::fs::write(&path, encode(&sample()).unwrap()).unwrap();
        assert_eq!(load(&path).unwrap(), Some(sample()));
    }

    #[test]
    fn another_version_is_a_clear_error_not_a_reset() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE_NAME);
        let mut bytes = encode(&sample()).unwrap();
        bytes[8] = 7;
        std::fs::write(&path, &bytes).unwrap();
        let err = load(&path).unwrap_err().to_string();
        assert!(err.contains("state format 7 is not supported"), "{err}");
        std::fs::write(&path, b"something else").unwrap();
        assert!(matches!(load(&path), Err(StateError::NotState { .. })));
        let mut truncated = MAGIC.to_vec();
        truncated.extend_from_slice(&STATE_VERSION.to_le_bytes());
        truncated.push(0xff);
        std::fs::write(&path, &truncated).unwrap();
        assert!(matches!(load(&path), Err(StateError::Corrupt { .. })));
    }
}
