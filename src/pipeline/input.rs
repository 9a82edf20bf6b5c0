//! The input protocol: what a running source hands the engine task.

use std::sync::Arc;

use crate::state::Position;

/// What a grouped kafka source owns, shared by the source and the engine task.
pub type Owned = Arc<super::ownership::Ownership>;

/// What a push source does once its records are safe (answer the client, ack the broker).
pub type OnCommit = Box<dyn FnOnce() + Send>;

/// What a running source hands the engine task. `source` is the source's index in the
/// order the daemon started them.
pub enum Input {
    /// Consecutive lines, and the position just after the last. `live`: they arrived in real
    /// time (read right after the source had caught up), so their record times tell the
    /// reporter's clock offset.
    Lines { source: usize, lines: Lines, position: Position, live: bool },
    /// A line over the length limit was skipped.
    TooLong { source: usize, line: u64, len: usize, position: Position },
    /// Whether the source has nothing more to read right now (DESIGN §5.1: engine time
    /// follows the wall clock only while every source is caught up).
    CaughtUp { source: usize, caught_up: bool },
    /// Lines from a push source (an `/ingest` body, a broker delivery), numbered from 1.
    /// `on_commit` runs once their effect is persisted and every event produced by then is
    /// acknowledged by every sink: the source acknowledges upstream only then.
    /// `redelivery`: the broker marked the message redelivered; `key`: a hash of its bytes, to
    /// recognise one whose effect is already applied. `context`: the cluster and reporter
    /// the message itself names (an edge's raw record), instead of the source's.
    /// `offset`: the message's partition and offset in a partitioned log (Kafka), which the
    /// state records so that a message read again after a crash is not applied twice.
    Batch {
        source: usize,
        lines: Vec<Vec<u8>>,
        live: bool,
        on_commit: OnCommit,
        key: Option<u64>,
        redelivery: bool,
        context: Option<crate::decode::Context>,
        offset: Option<(i32, u64)>,
    },
    /// A grouped kafka source's partition changed hands or caught up (DESIGN §10). Handed over
    /// in order with the partition's records: an assignment before its first record, a
    /// revocation after its last.
    Partition { source: usize, partition: i32, change: PartitionChange },
    /// The source stopped for good (end of stdin) or failed.
    Ended { source: usize, error: Option<String> },
    /// What a probe or poller found in one round: observations made now, by herald itself.
    Observed { source: usize, observations: Vec<crate::model::Observation<'static>> },
}

impl Input {
    /// How many records it carries.
    pub fn records(&self) -> usize {
        match self {
            Input::Lines { lines, .. } => lines.len(),
            Input::Batch { lines, .. } => lines.len(),
            Input::Observed { observations, .. } => observations.len(),
            Input::TooLong { .. } => 1,
            Input::CaughtUp { .. } | Input::Ended { .. } | Input::Partition { .. } => 0,
        }
    }
}

/// What happened to a partition of a grouped kafka source.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PartitionChange {
    /// The group gave it to this instance, under this assignment number: its engine is
    /// restored.
    Assigned(u64),
    /// The group took it away: its engine is committed, then dropped.
    Revoked,
    /// Whether every record of it has been read (its engine time may follow the wall clock).
    CaughtUp(bool),
}

/// Lines read in one go, back to back in one buffer: one message and one wake-up of the engine
/// task per read instead of per line.
#[derive(Debug, Default)]
pub struct Lines {
    /// The number of the first line.
    pub first: u64,
    data: Vec<u8>,
    /// Where each line ends in `data`.
    ends: Vec<usize>,
}

impl Lines {
    pub fn starting_at(first: u64) -> Lines {
        Lines { first, ..Lines::default() }
    }

    /// [`Lines::starting_at`], with room for as many lines and bytes as `like` holds: the
    /// next read is about the size of the last, and its lines go in without the buffers
    /// growing, and being copied, a dozen times on the way.
    pub fn sized_like(first: u64, like: &Lines) -> Lines {
        Lines {
            first,
            data: Vec::with_capacity(like.data.len()),
            ends: Vec::with_capacity(like.ends.len()),
        }
    }

    /// Appends the next line (numbered `first + len()`), without its line ending.
    pub fn push(&mut self, line: &[u8]) {
        self.data.extend_from_slice(line);
        self.ends.push(self.data.len());
    }

    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// Each line with its number.
    pub fn iter(&self) -> impl Iterator<Item = (u64, &[u8])> {
        let starts = std::iter::once(0).chain(self.ends.iter().copied());
        starts
            .zip(self.ends.iter().copied())
            .zip(self.first..)
            .map(|((start, end), n)| (n, self.data.get(start..end).unwrap_or_default()))
    }
}
