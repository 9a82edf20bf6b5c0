//! What survives a restart (DESIGN §7.1): the engine's entries, each source's position, and
//! the outbox of events not yet held by every sink, in one embedded transactional store.
//!
//! They are one store, and each commit one transaction, on purpose. A position must never be
//! ahead of the engine state that contains its records' effect, and an event must never be
//! forgotten between "emitted by the engine" and "held by every sink". A commit writes what
//! changed — the changed entries, the moved positions, the events added and the events now
//! held removed — so its cost follows the changes, not what is held.
//!
//! - [`store`]: the store at `[state] dir`, its format version, a commit
//! - [`changelog`]: the Kafka topic a grouped kafka source's partition engines live in
//! - [`legacy`]: the single file of earlier releases, migrated once at startup

pub mod changelog;
pub mod legacy;
mod store;

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

pub use legacy::{decode, FormatError, State};
pub use store::{chunks, Chunk, Commit, Entry, StateStore, BACKUP, CHUNK_EVENTS, STORE_VERSION};

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

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: not a herald state file")]
    NotState { path: PathBuf },
    #[error("{path}: state format {found} is not supported (this herald reads format {}); move the file away to start afresh", legacy::STATE_VERSION)]
    Version { path: PathBuf, found: u32 },
    #[error("{path}: corrupt state: {reason}")]
    Corrupt { path: PathBuf, reason: String },
    #[error("{path}: state store format {found} is not supported (this herald reads format {STORE_VERSION}); move the directory away to start afresh")]
    StoreVersion { path: PathBuf, found: String },
    #[error("{path}: the state store: {reason}")]
    Store { path: PathBuf, reason: String },
    #[error("changelog topic {topic}: {reason}")]
    Changelog { topic: String, reason: String },
}
