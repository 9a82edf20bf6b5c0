//! The pipeline: what every source and sink speaks, and the engine task between them.
//!
//! ```text
//! sources ──Input──► engine task ──► commit: state ──► fan-out ──► sinks ──acked──┐
//! (tasks)  bounded   (driver: decode,  (snapshot,       (bounded            ▲      │
//!                     observe, count)   positions,       queues)            └──────┘
//!                                       outbox)
//! ```
//!
//! It knows no concrete source or sink: `herald run`'s wiring (which sources and sinks, in
//! which order) is [`crate::daemon`], above it.

pub mod appender;
pub mod commit;
pub mod delivery;
pub mod driver;
pub mod edge;
pub mod fanout;
pub mod feed;
pub mod input;
pub mod outbox;
pub mod ownership;
pub mod run;
pub mod shards;
pub mod shutdown;
#[cfg(feature = "kafka")]
pub mod transaction;

pub use crate::support::clock::Clock;
pub use delivery::{Acked, Delivery, EventRef, Forward};
pub use input::{Input, Lines, OnCommit, Owned, PartitionChange};
pub use shutdown::{Shutdown, Stop};

/// Why the pipeline stopped.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error(transparent)]
    State(#[from] crate::state::StateError),
    #[error(transparent)]
    Snapshot(#[from] crate::engine::SnapshotError),
    #[error("sink {0} stopped")]
    SinkGone(String),
    #[error("commit: {0}")]
    Commit(String),
}
