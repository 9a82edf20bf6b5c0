//! Internal events: one type per happening worth telling an operator about. Each `emit`
//! writes exactly one log line (where the happening is worth one) and bumps exactly one
//! counter, so the logs and `/metrics` cannot drift apart.

use std::fmt::Display;

use super::metrics::{Metrics, RecordOutcome, SinkMetrics, SourceMetrics};
use crate::decode::DecodeError;

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

/// A sink's queue was full and the event was dropped (`when_full = "drop_newest"`).
pub struct EventDropped<'a> {
    pub sink: &'a str,
}

impl EventDropped<'_> {
    pub fn emit(self, metrics: &SinkMetrics) {
        metrics.dropped.inc();
        tracing::warn!(sink = %self.sink, dropped = metrics.dropped.get(), "queue full: event dropped (when_full = drop_newest)");
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
    pub fn emit(self, metrics: &Metrics) {
        tracing::warn!(component = %self.name, side = self.side.as_str(), error = %self.error, "{} unreachable; retrying with backoff", self.what);
        metrics.outage(self.name, true);
    }
}

/// A component reached its server again after an outage.
pub struct OutageEnded<'a> {
    pub side: Side,
    pub name: &'a str,
    pub what: &'a str,
}

impl OutageEnded<'_> {
    pub fn emit(self, metrics: &Metrics) {
        tracing::info!(component = %self.name, side = self.side.as_str(), "{} reachable again", self.what);
        metrics.outage(self.name, false);
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
    metrics: std::sync::Arc<Metrics>,
}

impl Reachability {
    /// `what` names the server in log lines (`kafka 127.0.0.1:9092`, `JetStream`).
    pub fn new(
        side: Side,
        name: &str,
        what: impl Into<String>,
        metrics: std::sync::Arc<Metrics>,
    ) -> Self {
        Reachability {
            outage: Default::default(),
            side,
            name: name.to_string(),
            what: what.into(),
            metrics,
        }
    }

    /// A failure: logged and counted if it begins an outage.
    pub fn failed(&self, error: impl Display) {
        if self.outage.failed() {
            OutageBegan { side: self.side, name: &self.name, what: &self.what, error }
                .emit(&self.metrics);
        }
    }

    /// A success: logged and counted if it ends an outage.
    pub fn reached(&self) {
        if self.outage.ended() {
            OutageEnded { side: self.side, name: &self.name, what: &self.what }.emit(&self.metrics);
        }
    }
}
