//! Sinks: where events go. One file per sink; each defines its config table
//! (`[sinks.NAME]` with `type = "..."`) and, once the daemon runs it, its writer.
//!
//! Every sink has a `[sinks.NAME.buffer]` table ([`buffer`]).
//!
//! Adding a sink touches its own file, its line in [`SinkKind`], in [`parse`] and in
//! [`SinkKind::start`] (the registry).

pub mod buffer;
pub mod encoding;
pub mod file;
#[cfg(feature = "kafka")]
pub mod kafka;
#[cfg(feature = "nats")]
pub mod nats;
#[cfg(feature = "otlp")]
pub mod otlp;
pub mod prometheus;
pub mod stdout;
pub mod syslog;

use std::future::Future;
use std::io::Write;
use std::sync::Arc;

use tokio::sync::mpsc::Receiver;
use tokio::task::JoinHandle;

use crate::pipeline::{Acked, Delivery};
use crate::support::problems::{section, Problems};
use crate::telemetry::events::DeliveryFailed;
use crate::telemetry::metrics::{Metrics, SinkMetrics};
use crate::telemetry::view::SharedView;
pub use buffer::{BufferConfig, BufferKind, Fsync, WhenFull};

/// What every sink is started with.
#[derive(Clone)]
pub struct SinkContext {
    pub name: String,
    pub metrics: SinkMetrics,
    /// The watermark this sink raises as it holds events.
    pub acked: Acked,
    /// herald's own metrics and the stable view (the OTLP sink exports both).
    pub telemetry: Arc<Metrics>,
    pub view: SharedView,
    /// Each event's severity, for the encodings and messages that carry one.
    pub severities: Arc<crate::model::Severities>,
}

/// A sink's running task.
pub type SinkTask = JoinHandle<Result<(), SinkError>>;
/// What a sink reads its deliveries from.
pub type Queue = Receiver<Delivery>;
/// A sink started, or why it could not be.
pub type Started = Result<SinkTask, SinkError>;

/// A configured sink.
pub trait Sink {
    /// Connects, and returns once the sink can take events (its readiness), with the task
    /// that delivers what arrives on `rx`.
    fn start(&self, ctx: SinkContext, rx: Queue) -> impl Future<Output = Started> + Send;
}

impl SinkKind {
    /// The Prometheus sink is a feature of the HTTP server, not a queue-fed sink: `/metrics`
    /// renders the stable view at each scrape. It holds no events and takes no part in
    /// acknowledgements.
    pub fn scraped(&self) -> bool {
        matches!(self, SinkKind::Prometheus(_))
    }

    /// A kafka sink with `encoding = "raw"`: it makes this instance an edge (DESIGN §10).
    pub fn raw(&self) -> bool {
        #[cfg(feature = "kafka")]
        if let SinkKind::Kafka(k) = self {
            return k.encoding == kafka::Encoding::Raw;
        }
        false
    }

    /// The registry: starts the configured type. `None` for a scraped sink.
    pub async fn start(&self, ctx: SinkContext, rx: Queue) -> Result<Option<SinkTask>, SinkError> {
        Ok(Some(match self {
            SinkKind::Stdout(c) => c.start(ctx, rx).await?,
            SinkKind::File(c) => c.start(ctx, rx).await?,
            #[cfg(feature = "kafka")]
            SinkKind::Kafka(c) => c.start(ctx, rx).await?,
            #[cfg(feature = "nats")]
            SinkKind::Nats(c) => c.start(ctx, rx).await?,
            #[cfg(feature = "otlp")]
            SinkKind::Otlp(c) => c.start(ctx, rx).await?,
            SinkKind::Syslog(c) => c.start(ctx, rx).await?,
            SinkKind::Prometheus(_) => return Ok(None),
        }))
    }
}

/// Any error a client library gives.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Why a sink stopped, with what it was using: its file, or its server.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("sink {name}: {source}")]
    Io { name: String, source: std::io::Error },
    /// `server` names it as log lines do (`kafka 127.0.0.1:9092`), without credentials.
    #[error("sink {name}: {server}: {source}")]
    Broker { name: String, server: String, source: BoxError },
    #[error("sink {name}: its task failed: {source}")]
    Task { name: String, source: tokio::task::JoinError },
}

impl SinkError {
    pub(crate) fn broker(name: &str, server: &str, source: impl Into<BoxError>) -> SinkError {
        SinkError::Broker {
            name: name.to_string(),
            server: server.to_string(),
            source: source.into(),
        }
    }
}

/// Writes deliveries as lines, in order, and acknowledges each one once it is flushed: the
/// `acked` watermark is the outbox sequence number up to which this sink holds every event.
/// Shared by the line sinks (stdout, file); runs on a blocking thread.
pub(crate) fn write_lines(
    name: &str,
    (format, severities): (encoding::LineFormat, &crate::model::Severities),
    mut out: impl Write,
    mut rx: Queue,
    acked: Acked,
    metrics: SinkMetrics,
) -> Result<(), SinkError> {
    let err = |source: std::io::Error| {
        DeliveryFailed.emit(&metrics);
        SinkError::Io { name: name.to_string(), source }
    };
    let mut written: Vec<(u64, crate::model::Timestamp)> = Vec::new();
    let ack = |written: &mut Vec<(u64, crate::model::Timestamp)>| {
        for (_, stable_at) in written.iter() {
            metrics.acked(*stable_at);
        }
        if let Some((seq, _)) = written.last() {
            acked.store(*seq, std::sync::atomic::Ordering::Release);
        }
        written.clear();
    };
    while let Some(d) = rx.blocking_recv() {
        out.write_all(format.line(&d.event, &d.line, severities).as_bytes()).map_err(err)?;
        out.write_all(b"\n").map_err(err)?;
        written.push((d.seq, d.event.stable_at));
        // Flush whenever the queue runs dry: batches under load, prompt when quiet.
        if rx.is_empty() {
            out.flush().map_err(err)?;
            ack(&mut written);
        }
    }
    out.flush().map_err(err)?;
    ack(&mut written);
    Ok(())
}

/// `rx` with each delivery's line in `format`, for a sink whose body is not the JSON line;
/// `rx` itself for JSON. Order and sequence numbers stay, so acknowledgements do too.
#[cfg(any(feature = "kafka", feature = "nats"))]
pub(crate) fn encoded(
    mut rx: Queue,
    format: encoding::LineFormat,
    severities: Arc<crate::model::Severities>,
) -> Queue {
    if format == encoding::LineFormat::Json {
        return rx;
    }
    // One in hand: the sink's queue stays the bound its buffer configures.
    let (tx, out) = tokio::sync::mpsc::channel(1);
    tokio::spawn(async move {
        while let Some(d) = rx.recv().await {
            if tx.send(encoding::reencode(format, &severities, d)).await.is_err() {
                break;
            }
        }
    });
    out
}

/// A configured sink: its type-specific part and its buffer.
#[derive(Clone, Debug, PartialEq)]
pub struct SinkConfig {
    pub kind: SinkKind,
    pub buffer: BufferConfig,
}

#[derive(Clone, Debug, PartialEq)]
pub enum SinkKind {
    Stdout(stdout::Config),
    File(file::Config),
    #[cfg(feature = "kafka")]
    Kafka(kafka::Config),
    #[cfg(feature = "nats")]
    Nats(nats::Config),
    Prometheus(prometheus::Config),
    #[cfg(feature = "otlp")]
    Otlp(otlp::Config),
    Syslog(syslog::Config),
}

pub const TYPES: &str = "stdout, file, kafka, nats, prometheus, otlp, syslog";

/// Reads `[sinks.NAME]` by its `type`; `buffer` has been taken out of `table` already.
pub(crate) fn parse(
    kind: &str,
    table: toml::Value,
    path: &str,
    p: &mut Problems,
) -> Option<SinkKind> {
    Some(match kind {
        "stdout" => SinkKind::Stdout(section(table, path, p)?),
        "file" => SinkKind::File(section::<file::Config>(table, path, p)?.validate(path, p)?),
        #[cfg(feature = "kafka")]
        "kafka" => SinkKind::Kafka(section::<kafka::Config>(table, path, p)?.validate(path, p)?),
        #[cfg(feature = "nats")]
        "nats" => SinkKind::Nats(section::<nats::Config>(table, path, p)?.validate(path, p)?),
        "prometheus" => SinkKind::Prometheus(section(table, path, p)?),
        #[cfg(feature = "otlp")]
        "otlp" => SinkKind::Otlp(section::<otlp::Config>(table, path, p)?.validate(path, p)?),
        "syslog" => SinkKind::Syslog(section::<syslog::Config>(table, path, p)?.validate(path, p)?),
        #[cfg(not(feature = "kafka"))]
        "kafka" => return p.not_built(path, kind),
        #[cfg(not(feature = "nats"))]
        "nats" => return p.not_built(path, kind),
        #[cfg(not(feature = "otlp"))]
        "otlp" => return p.not_built(path, kind),
        other => {
            p.push(format!("{path}.type"), format!("unknown sink type {other:?} (one of {TYPES})"));
            return None;
        }
    })
}
