//! The delivery protocol: what the pipeline hands a sink, and how the sink says what it
//! holds.
//!
//! Sinks acknowledge in order through a watermark: the outbox sequence number up to which
//! the sink holds every event. The pipeline reads the lowest watermark of all sinks to know
//! which events it may forget and which push-source messages it may acknowledge upstream.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::model::ClusterEvent;

/// One event on its way to a sink: its place in the outbox and its JSON line.
#[derive(Clone, Debug)]
pub struct Delivery {
    pub seq: u64,
    pub line: Arc<str>,
    /// The event itself, for sinks that need its fields (keys, headers, the ack histogram).
    pub event: Arc<ClusterEvent>,
}

/// One raw record on its way from an edge to Kafka (DESIGN §10): the line as a source read it
/// (or, for a probe's or poller's finding, its generic line), keyed by cluster.
#[derive(Clone, Debug)]
pub struct Forward {
    pub seq: u64,
    pub line: Arc<str>,
    /// The record's cluster: the source's for OpenZiti records, a generic record's own.
    pub cluster: Arc<str>,
    /// The record's reporter (OpenZiti records before v1.3 take the source's).
    pub reporter: Arc<str>,
}

/// A sink's acknowledgement watermark, shared between the sink (which raises it, with
/// `Release`) and the pipeline (which reads it, with `Acquire`).
pub type Acked = Arc<AtomicU64>;

/// The lowest watermark of `sinks`: every sink holds every event up to it.
pub fn held<'a>(sinks: impl IntoIterator<Item = &'a Acked>) -> u64 {
    sinks.into_iter().map(|a| a.load(Ordering::Acquire)).min().unwrap_or(u64::MAX)
}
