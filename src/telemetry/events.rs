//! Internal events: one type per happening worth telling an operator about. Each `emit`
//! writes exactly one log line (where the happening is worth one) and bumps exactly one
//! counter, so the logs and `/metrics` cannot drift apart.

use std::fmt::Display;

use super::metrics::{Metrics, OutageCounters, RecordOutcome, SinkMetrics, SourceMetrics};
use crate::decode::DecodeError;
use crate::engine::{Limit, Refusal};
use crate::model::ClusterEvent;

/// A record was read and counted with its outcome (applied, stale, ignored): no log line,
/// one count per record is what `/metrics` is for.
pub struct RecordRead {
    pub outcome: RecordOutcome,
}

impl RecordRead {
    pub fn emit(self, metrics: &SourceMetrics) {
        metrics.record(self.outcome);
    }
}

/// A line could not be decoded (bad JSON, a missing field, over the length limit).
pub struct DecodeFailed<'a> {
    pub source: &'a str,
    pub error: &'a DecodeError,
}

impl DecodeFailed<'_> {
    pub fn emit(self, metrics: &SourceMetrics) {
        tracing::warn!(source = %self.source, line = self.error.line, error = %self.error.reason, "decode error");
        metrics.record(RecordOutcome::DecodeError);
    }
}

/// A broker redelivered a message whose effect was already applied before a crash: it is
/// acknowledged, not applied twice.
pub struct RedeliveryRecognised<'a> {
    pub source: &'a str,
}

impl RedeliveryRecognised<'_> {
    pub fn emit(self, metrics: &SourceMetrics) {
        tracing::info!(source = %self.source, "redelivered message already applied; acknowledged");
        metrics.record(RecordOutcome::Ignored);
    }
}

/// A sink's queue or disk buffer was full and the event was dropped (`when_full =
/// "drop_newest"`). Logged at the 1st, 2nd, 4th, 8th… drop: a full queue drops at the rate
/// events come, and the counter tells every one.
pub struct EventDropped {
    /// What was full: `queue` or `disk buffer`.
    pub full: &'static str,
}

impl EventDropped {
    pub fn emit(self, metrics: &SinkMetrics) {
        metrics.dropped.inc();
        let dropped = metrics.dropped.get();
        if dropped.is_power_of_two() {
            tracing::warn!(sink = %metrics.name, dropped, "{} full: event dropped (when_full = drop_newest)", self.full);
        }
    }
}

/// A cap refused records of a cluster (DESIGN §5.2). Said once per cluster — per time the
/// cluster cap is reached, for refused new clusters — each refused record is counted with
/// [`RecordRead`] (`outcome="over_limit"`).
pub struct LimitReached<'a> {
    pub refusal: &'a Refusal,
}

impl LimitReached<'_> {
    pub fn emit(self) {
        let cluster = &self.refusal.cluster;
        match self.refusal.limit {
            Limit::Clusters(max) => {
                tracing::warn!(%cluster, max_clusters = max, "engine.max_clusters reached: records of new clusters are refused and counted (outcome=\"over_limit\") until a cluster is let go")
            }
            Limit::Keys(max) => {
                tracing::warn!(%cluster, max_keys = max, "engine.max_keys reached: records that would create a key are refused and counted (outcome=\"over_limit\")")
            }
        }
    }
}

/// An event could not be serialized: it cannot be delivered, and says so.
pub struct EventUnserializable<'a, E: Display> {
    pub event: &'a ClusterEvent,
    pub error: E,
}

impl<E: Display> EventUnserializable<'_, E> {
    pub fn emit(self, metrics: &Metrics) {
        tracing::error!(id = %self.event.id, kind = self.event.kind.as_str(), cluster = %self.event.cluster, error = %self.error, "an event could not be serialized; not delivered");
        metrics.unserializable.inc();
    }
}

/// A delivery to a sink failed and will be retried (logged by the outage it belongs to).
pub struct DeliveryFailed;

impl DeliveryFailed {
    pub fn emit(self, metrics: &SinkMetrics) {
        metrics.errors.inc();
    }
}

/// Which side of herald a component is on, for outage lines.
#[derive(Clone, Copy, Debug)]
pub enum Side {
    Source,
    Sink,
}

impl Side {
    fn as_str(self) -> &'static str {
        match self {
            Side::Source => "source",
            Side::Sink => "sink",
        }
    }
}

/// A component lost its server (or never reached it): logged once per outage.
pub struct OutageBegan<'a, E: Display> {
    pub side: Side,
    pub name: &'a str,
    /// What it could not reach: a broker address, an endpoint.
    pub what: &'a str,
    pub error: E,
}

impl<E: Display> OutageBegan<'_, E> {
    pub fn emit(self, counters: &OutageCounters) {
        tracing::warn!(component = %self.name, side = self.side.as_str(), error = %self.error, "{} unreachable; retrying with backoff", self.what);
        counters.began.inc();
    }
}

/// A component reached its server again after an outage.
pub struct OutageEnded<'a> {
    pub side: Side,
    pub name: &'a str,
    pub what: &'a str,
}

impl OutageEnded<'_> {
    pub fn emit(self, counters: &OutageCounters) {
        tracing::info!(component = %self.name, side = self.side.as_str(), "{} reachable again", self.what);
        counters.ended.inc();
    }
}

/// Whether a component reaches its server: the one way every source and sink logs an
/// outage — when it begins and when it ends, never per retry or per event. Shared with
/// client callbacks on other threads.
pub struct Reachability {
    outage: crate::support::retry::Outage,
    side: Side,
    name: String,
    what: String,
    counters: OutageCounters,
    /// Outages ended so far.
    recoveries: std::sync::atomic::AtomicU64,
}

impl Reachability {
    /// `what` names the server in log lines (`kafka 127.0.0.1:9092`, `JetStream`).
    pub fn new(side: Side, name: &str, what: impl Into<String>, counters: OutageCounters) -> Self {
        Reachability {
            outage: Default::default(),
            side,
            name: name.to_string(),
            what: what.into(),
            counters,
            recoveries: Default::default(),
        }
    }

    /// A sink's: named and counted as the sink.
    pub fn of_sink(metrics: &SinkMetrics, what: impl Into<String>) -> Self {
        Reachability::new(Side::Sink, &metrics.name, what, metrics.outages.clone())
    }

    /// What log lines call the server.
    pub fn what(&self) -> &str {
        &self.what
    }

    /// A failure: logged and counted if it begins an outage.
    pub fn failed(&self, error: impl Display) {
        if self.outage.failed() {
            OutageBegan { side: self.side, name: &self.name, what: &self.what, error }
                .emit(&self.counters);
        }
    }

    /// Outages ended so far: an attempt made before the last recovery belongs to an outage
    /// already over (see [`Reachability::failed_since`]).
    pub fn recoveries(&self) -> u64 {
        self.recoveries.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The failure of an attempt made when [`Reachability::recoveries`] read `then`: an
    /// attempt made during an outage that has ended since (a publish whose acknowledgement
    /// was lost with the server) says nothing new, and begins no outage.
    pub fn failed_since(&self, then: u64, error: impl Display) {
        if then == self.recoveries() {
            self.failed(error);
        }
    }

    /// A success: logged and counted if it ends an outage.
    pub fn reached(&self) {
        if self.outage.ended() {
            self.recoveries.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            OutageEnded { side: self.side, name: &self.name, what: &self.what }
                .emit(&self.counters);
        }
    }
}
