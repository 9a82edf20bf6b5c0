//! herald's own metrics, served on `/metrics` beside the state gauges of the Prometheus sink.
//!
//! Every counted happening has exactly one counter here, bumped where the happening is logged,
//! so logs and metrics never drift apart.

use prometheus::{
    Gauge, GaugeVec, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec,
    Opts, Registry,
};

use crate::model::Timestamp;
use crate::support::clock::Clock;

/// The outcome of one record, as counted in `herald_records_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecordOutcome {
    Ok,
    Stale,
    Ignored,
    DecodeError,
    /// Refused at `engine.max_clusters` or `engine.max_keys` (DESIGN §5.2).
    OverLimit,
}

impl RecordOutcome {
    fn label(self) -> &'static str {
        match self {
            RecordOutcome::Ok => "ok",
            RecordOutcome::Stale => "stale",
            RecordOutcome::Ignored => "ignored",
            RecordOutcome::DecodeError => "decode_error",
            RecordOutcome::OverLimit => "over_limit",
        }
    }
}

pub struct Metrics {
    pub registry: Registry,
    records: IntCounterVec,
    last_record: GaugeVec,
    clock_offset: GaugeVec,
    sink_events: IntCounterVec,
    sink_errors: IntCounterVec,
    sink_dropped: IntCounterVec,
    sink_queue: IntGaugeVec,
    sink_buffer_bytes: IntGaugeVec,
    ack_delay: HistogramVec,
    pub suppressed: IntCounterVec,
    transitions: IntCounterVec,
    /// The severity label of the transition counters (DESIGN §11); the defaults until set.
    severities: std::sync::OnceLock<crate::model::Severities>,
    outages: IntCounterVec,
    build: IntGaugeVec,
    /// What the engine holds (DESIGN §5.2): `herald_clusters`, `herald_keys`.
    pub clusters: IntGauge,
    pub keys: IntGauge,
    /// Events that could not be serialized, never delivered: each one logged and counted.
    pub unserializable: IntCounter,
    /// `GET /events` readers dropped for falling behind, and those there are.
    pub tap_dropped: IntCounter,
    pub tap_readers: IntGauge,
    ready: IntGauge,
    waiting_for: IntGaugeVec,
    /// A kafka source's partitions (DESIGN §10): 1 for each this instance owns.
    pub partition_owned: IntGaugeVec,
    /// A kafka source's rebalances, by what they did (`assign`, `revoke`).
    pub rebalances: IntCounterVec,
    /// Exactly once: transactions, by outcome (`committed`, `aborted`).
    pub transactions: IntCounterVec,
    /// Exactly once: events a transaction passed over because Kafka can never take them.
    pub transaction_events_dropped: IntCounter,
    /// How long restoring an assigned partition's engine took.
    pub restore_seconds: HistogramVec,
    /// A kafka source's lag per owned partition: the high watermark minus the committed
    /// offset.
    pub consumer_lag: IntGaugeVec,
    clock: Clock,
}

/// A metric family as another exporter (OTLP) announces it before it has any series.
#[derive(Clone, Debug)]
pub struct Family {
    pub name: String,
    pub help: String,
    pub counter: bool,
}

/// The families `collectors` export, named as registered.
pub(crate) fn families(collectors: &[(&dyn prometheus::core::Collector, bool)]) -> Vec<Family> {
    collectors
        .iter()
        .flat_map(|(c, counter)| {
            c.desc().into_iter().map(move |d| Family {
                name: d.fq_name.clone(),
                help: d.help.clone(),
                counter: *counter,
            })
        })
        .collect()
}

/// One sink's handles.
/// One component's outage counters (`herald_outages_total{component, transition}`),
/// resolved once.
#[derive(Clone, Debug)]
pub struct OutageCounters {
    pub began: IntCounter,
    pub ended: IntCounter,
}

#[derive(Clone)]
pub struct SinkMetrics {
    /// The sink's name.
    pub name: String,
    pub events: IntCounter,
    pub errors: IntCounter,
    pub dropped: IntCounter,
    pub queue: IntGauge,
    /// Bytes in the sink's disk buffer (0 without one).
    pub buffer_bytes: IntGauge,
    pub outages: OutageCounters,
    ack_delay: prometheus::Histogram,
    clock: Clock,
}

impl SinkMetrics {
    /// An event was acknowledged: how long after it became stable.
    pub fn acked(&self, stable_at: Timestamp) {
        self.events.inc();
        let delay = self.clock.now().saturating_sub(stable_at).0 as f64 / 1e9;
        self.ack_delay.observe(delay.max(0.0));
    }
}

/// One source's handles.
pub struct SourceMetrics {
    /// By [`RecordOutcome`], in its order.
    outcomes: [IntCounter; 5],
    last_record: GaugeVec,
    name: String,
    /// The series appears with the first record: a 0 would claim a record at 1970.
    last_record_gauge: std::sync::OnceLock<Gauge>,
}

impl SourceMetrics {
    pub fn record(&self, outcome: RecordOutcome) {
        self.outcomes[outcome as usize].inc();
    }

    pub fn record_time(&self, at: Timestamp) {
        self.last_record_gauge
            .get_or_init(|| self.last_record.with_label_values(&[&self.name]))
            .set(at.0 as f64 / 1e9);
    }
}

fn counter(
    r: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
) -> prometheus::Result<IntCounterVec> {
    let c = IntCounterVec::new(Opts::new(name, help), labels)?;
    r.register(Box::new(c.clone()))?;
    Ok(c)
}

fn gauge(r: &Registry, name: &str, help: &str, labels: &[&str]) -> prometheus::Result<GaugeVec> {
    let g = GaugeVec::new(Opts::new(name, help), labels)?;
    r.register(Box::new(g.clone()))?;
    Ok(g)
}

impl Metrics {
    /// Metrics on the system clock.
    pub fn new() -> prometheus::Result<Metrics> {
        Metrics::with_clock(Clock::system())
    }

    /// Metrics whose ack delays are measured on `clock`.
    pub fn with_clock(clock: Clock) -> prometheus::Result<Metrics> {
        let r = Registry::new();
        let build = IntGaugeVec::new(
            Opts::new("herald_build_info", "herald's version; always 1"),
            &["version"],
        )?;
        r.register(Box::new(build.clone()))?;
        build.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
        let sink_queue = IntGaugeVec::new(
            Opts::new("herald_sink_queue_depth", "Events waiting in a sink's queue"),
            &["sink"],
        )?;
        r.register(Box::new(sink_queue.clone()))?;
        let ack_delay = HistogramVec::new(
            HistogramOpts::new(
                "herald_event_ack_delay_seconds",
                "From an event's stable_at to its acknowledgement by a sink",
            )
            .buckets(vec![0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0]),
            &["sink"],
        )?;
        r.register(Box::new(ack_delay.clone()))?;
        let plain_gauge = |name: &str, help: &str| -> prometheus::Result<IntGauge> {
            let g = IntGauge::new(name, help)?;
            r.register(Box::new(g.clone()))?;
            Ok(g)
        };
        let clusters = plain_gauge("herald_clusters", "Clusters the engine holds")?;
        let keys = plain_gauge("herald_keys", "State keys the engine holds, in all clusters")?;
        let unserializable = IntCounter::new(
            "herald_events_unserializable_total",
            "Events that could not be serialized and so were not delivered",
        )?;
        r.register(Box::new(unserializable.clone()))?;
        let tap_dropped = IntCounter::new(
            "herald_tap_dropped_total",
            "Readers of GET /events dropped because they fell too far behind",
        )?;
        r.register(Box::new(tap_dropped.clone()))?;
        let tap_readers = plain_gauge("herald_tap_readers", "Readers of GET /events now")?;
        let ready = IntGauge::new(
            "herald_ready",
            "1 once everything started, 0 while starting or stopping",
        )?;
        r.register(Box::new(ready.clone()))?;
        let waiting_for = IntGaugeVec::new(
            Opts::new(
                "herald_waiting_for",
                "1 for each component start still waits for (sink NAME, state, sources)",
            ),
            &["component"],
        )?;
        r.register(Box::new(waiting_for.clone()))?;
        Ok(Metrics {
            clusters,
            keys,
            unserializable,
            tap_dropped,
            tap_readers,
            records: counter(&r, "herald_records_total", "Records read, by source and outcome", &["source", "outcome"])?,
            last_record: gauge(&r, "herald_source_last_record_timestamp_seconds", "Record time of the newest record per source", &["source"])?,
            clock_offset: gauge(&r, "herald_reporter_clock_offset_seconds", "Wall clock minus record time, on records read while caught up", &["cluster", "reporter"])?,
            sink_events: counter(&r, "herald_sink_events_total", "Events acknowledged by a sink", &["sink"])?,
            sink_errors: counter(&r, "herald_sink_errors_total", "Failed deliveries to a sink", &["sink"])?,
            sink_dropped: counter(&r, "herald_sink_dropped_total", "Events dropped because a sink's queue was full (when_full = drop_newest)", &["sink"])?,
            suppressed: counter(&r, "herald_suppressed_total", "Reverts inside a window and other suppressed flaps, by the kind they would have produced", &["cluster", "kind"])?,
            transitions: counter(&r, "herald_transitions_total", "Events emitted, by kind and severity", &["cluster", "kind", "severity"])?,
            severities: std::sync::OnceLock::new(),
            outages: counter(&r, "herald_outages_total", "Outages of a source's or sink's server, as they began and ended", &["component", "transition"])?,
            sink_queue,
            sink_buffer_bytes: {
                let g = IntGaugeVec::new(
                    Opts::new("herald_sink_buffer_bytes", "Bytes in a sink's disk buffer"),
                    &["sink"],
                )?;
                r.register(Box::new(g.clone()))?;
                g
            },
            partition_owned: {
                let g = IntGaugeVec::new(
                    Opts::new(
                        "herald_partition_owned",
                        "1 for each partition of a kafka source's topic this instance owns",
                    ),
                    &["source", "partition"],
                )?;
                r.register(Box::new(g.clone()))?;
                g
            },
            consumer_lag: {
                let g = IntGaugeVec::new(
                    Opts::new(
                        "herald_consumer_lag",
                        "Records of an owned partition past the committed offset (high watermark minus committed offset)",
                    ),
                    &["source", "partition"],
                )?;
                r.register(Box::new(g.clone()))?;
                g
            },
            rebalances: counter(&r, "herald_rebalances_total", "Partitions a kafka source's group assigned to or revoked from this instance", &["source", "change"])?,
            transactions: counter(&r, "herald_transactions_total", "Kafka transactions of the exactly-once mode, by outcome", &["outcome"])?,
            transaction_events_dropped: {
                let c = IntCounter::new("herald_transaction_events_dropped_total", "Events a transaction of the exactly-once mode passed over because Kafka can never take them")?;
                r.register(Box::new(c.clone()))?;
                c
            },
            restore_seconds: {
                let h = HistogramVec::new(
                    HistogramOpts::new(
                        "herald_restore_seconds",
                        "Time to restore the engine of a partition a kafka source's group assigned to this instance",
                    )
                    .buckets(vec![0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0]),
                    &["source"],
                )?;
                r.register(Box::new(h.clone()))?;
                h
            },
            ack_delay,
            build,
            ready,
            waiting_for,
            clock,
            registry: r,
        })
    }

    /// The counters and gauges of the pipeline; the ack-delay histogram has no OTLP
    /// observable counterpart and stays on `/metrics`.
    pub fn families(&self) -> Vec<Family> {
        families(&[
            (&self.build, false),
            (&self.records, true),
            (&self.last_record, false),
            (&self.clock_offset, false),
            (&self.sink_events, true),
            (&self.sink_errors, true),
            (&self.sink_dropped, true),
            (&self.sink_queue, false),
            (&self.sink_buffer_bytes, false),
            (&self.suppressed, true),
            (&self.transitions, true),
            (&self.outages, true),
            (&self.clusters, false),
            (&self.keys, false),
            (&self.unserializable, true),
            (&self.ready, false),
            (&self.waiting_for, false),
        ])
    }

    /// `herald_ready` and `herald_waiting_for{component}`, kept by the server's readiness.
    pub fn readiness(&self) -> (IntGauge, IntGaugeVec) {
        (self.ready.clone(), self.waiting_for.clone())
    }

    /// One source's handles, resolved once: the engine task counts every record.
    pub fn source(&self, name: &str) -> SourceMetrics {
        let outcome = |o: RecordOutcome| self.records.with_label_values(&[name, o.label()]);
        SourceMetrics {
            outcomes: [
                outcome(RecordOutcome::Ok),
                outcome(RecordOutcome::Stale),
                outcome(RecordOutcome::Ignored),
                outcome(RecordOutcome::DecodeError),
                outcome(RecordOutcome::OverLimit),
            ],
            last_record: self.last_record.clone(),
            name: name.to_string(),
            last_record_gauge: std::sync::OnceLock::new(),
        }
    }

    pub fn record(&self, source: &str, outcome: RecordOutcome) {
        self.records.with_label_values(&[source, outcome.label()]).inc();
    }

    /// The clock ack delays are measured on.
    pub fn clock(&self) -> Clock {
        self.clock
    }

    /// The outage counters of `component` (a source or a sink, by name).
    pub fn outages(&self, component: &str) -> OutageCounters {
        OutageCounters {
            began: self.outages.with_label_values(&[component, "began"]),
            ended: self.outages.with_label_values(&[component, "ended"]),
        }
    }

    /// The configured severities, for the transition counters' label; once, at start.
    pub fn set_severities(&self, severities: crate::model::Severities) {
        let _ = self.severities.set(severities);
    }

    fn severity(&self, cluster: &str, kind: crate::model::EventKind) -> crate::model::Severity {
        match self.severities.get() {
            Some(s) => s.of(cluster, kind),
            None => crate::model::Severity::of(kind),
        }
    }

    /// `n` events of `kind` were emitted in `cluster`.
    pub fn transitions(&self, cluster: &str, kind: crate::model::EventKind, n: u64) {
        let severity = self.severity(cluster, kind).as_str();
        self.transitions.with_label_values(&[cluster, kind.as_str(), severity]).inc_by(n);
    }

    /// A cluster the engine let go takes its series with it.
    pub fn forget_cluster(&self, cluster: &str) {
        for kind in crate::model::EventKind::ALL {
            let severity = self.severity(cluster, kind).as_str();
            let _ = self.transitions.remove_label_values(&[cluster, kind.as_str(), severity]);
            let _ = self.suppressed.remove_label_values(&[cluster, kind.as_str()]);
        }
        use prometheus::core::Collector;
        let reporters: Vec<String> = self
            .clock_offset
            .collect()
            .iter()
            .flat_map(|family| family.get_metric())
            .filter(|m| m.get_label().iter().any(|l| l.name() == "cluster" && l.value() == cluster))
            .filter_map(|m| {
                m.get_label().iter().find(|l| l.name() == "reporter").map(|l| l.value().to_string())
            })
            .collect();
        for r in reporters {
            let _ = self.clock_offset.remove_label_values(&[cluster, &r]);
        }
    }

    pub fn clock_offset(&self, cluster: &str, reporter: &str) -> Gauge {
        self.clock_offset.with_label_values(&[cluster, reporter])
    }

    pub fn sink(&self, name: &str) -> SinkMetrics {
        SinkMetrics {
            name: name.to_string(),
            outages: self.outages(name),
            events: self.sink_events.with_label_values(&[name]),
            errors: self.sink_errors.with_label_values(&[name]),
            dropped: self.sink_dropped.with_label_values(&[name]),
            queue: self.sink_queue.with_label_values(&[name]),
            buffer_bytes: self.sink_buffer_bytes.with_label_values(&[name]),
            ack_delay: self.ack_delay.with_label_values(&[name]),
            clock: self.clock,
        }
    }
}
