//! Sinks: where events go. One file per sink; each defines its config table
//! (`[sinks.NAME]` with `type = "..."`) and, once the daemon runs it, its writer.
//!
//! Every sink has a `[sinks.NAME.buffer]` table: a bounded queue that blocks the pipeline
//! when full (default), or spills to disk, or — only when configured — drops the newest
//! events, counted.

pub mod file;
pub mod kafka;
pub mod nats;
pub mod otlp;
pub mod prometheus;
pub mod stdout;

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use serde::Deserialize;
use tokio::sync::mpsc::Receiver;

use crate::config::{section, Problems};

/// One event on its way to a sink: its place in the outbox and its JSON line.
#[derive(Clone, Debug)]
pub struct Delivery {
    pub seq: u64,
    pub line: Arc<str>,
    /// The event itself, for sinks that need its fields (keys, headers, the ack histogram).
    pub event: Arc<crate::model::ClusterEvent>,
}

/// Whether a sink's server is in trouble: trouble is logged when it starts and when it ends,
/// not once per event or retry. Shared with client callbacks on other threads, so atomic.
#[derive(Debug, Default)]
pub(crate) struct Outage {
    on: std::sync::atomic::AtomicBool,
}

impl Outage {
    /// A failure; true when it starts an outage.
    pub(crate) fn failed(&self) -> bool {
        !self.on.swap(true, Ordering::Relaxed)
    }

    /// A success; true when it ends an outage.
    pub(crate) fn ended(&self) -> bool {
        self.on.swap(false, Ordering::Relaxed)
    }
}

/// Why a sink stopped.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("sink {name}: {source}")]
    Io { name: String, source: std::io::Error },
    #[error("sink {name}: {reason}")]
    Broker { name: String, reason: String },
}

/// Writes deliveries as lines, in order, and acknowledges each one once it is flushed: the
/// `acked` watermark is the outbox sequence number up to which this sink holds every event.
/// Shared by the line sinks (stdout, file); runs on a blocking thread.
pub(crate) fn write_lines(
    name: &str,
    mut out: impl Write,
    mut rx: Receiver<Delivery>,
    acked: Arc<AtomicU64>,
    metrics: crate::metrics::SinkMetrics,
) -> Result<(), SinkError> {
    let err = |source: std::io::Error| {
        metrics.errors.inc();
        SinkError::Io { name: name.to_string(), source }
    };
    let mut written: Vec<(u64, crate::model::Timestamp)> = Vec::new();
    let ack = |written: &mut Vec<(u64, crate::model::Timestamp)>| {
        for (_, stable_at) in written.iter() {
            metrics.acked(*stable_at);
        }
        if let Some((seq, _)) = written.last() {
            acked.store(*seq, Ordering::Release);
        }
        written.clear();
    };
    while let Some(d) = rx.blocking_recv() {
        out.write_all(d.line.as_bytes()).map_err(err)?;
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
    Kafka(kafka::Config),
    Nats(nats::Config),
    Prometheus(prometheus::Config),
    Otlp(otlp::Config),
}

pub const TYPES: &str = "stdout, file, kafka, nats, prometheus, otlp";

#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct BufferConfig {
    /// `memory` (default) or `disk`.
    #[serde(default, rename = "type")]
    pub kind: BufferKind,
    /// Events the queue holds before `when_full` applies.
    #[serde(default = "default_max_events")]
    pub max_events: usize,
    /// `block` (default) or `drop_newest` (counted).
    #[serde(default)]
    pub when_full: WhenFull,
    /// Disk only: the buffer's directory; default `<state.dir>/buffers/<sink>`.
    pub dir: Option<std::path::PathBuf>,
    /// Disk only: bytes on disk before `when_full` applies.
    #[serde(default = "default_max_bytes")]
    pub max_bytes: u64,
    /// Disk only: when appended events reach the disk (see [`Fsync`]).
    #[serde(default)]
    pub fsync: Fsync,
    /// Disk only, with `fsync = "interval"`: how often.
    #[serde(default = "default_fsync_interval", with = "humantime_serde")]
    pub fsync_interval: std::time::Duration,
}

/// When a disk buffer syncs what it appended. An event counts as held by the sink — so the
/// pipeline may forget it and a broker source may acknowledge its message — only once synced
/// (`never`: once written, which survives a crash of herald but not of the machine).
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Fsync {
    /// One fsync per appended batch (each commit's events).
    #[default]
    Batch,
    /// One fsync every `fsync_interval`.
    Interval,
    /// Leave it to the operating system.
    Never,
}

fn default_max_bytes() -> u64 {
    256 << 20
}

fn default_fsync_interval() -> std::time::Duration {
    std::time::Duration::from_secs(1)
}

impl Default for BufferConfig {
    fn default() -> Self {
        BufferConfig {
            kind: BufferKind::Memory,
            max_events: default_max_events(),
            when_full: WhenFull::Block,
            dir: None,
            max_bytes: default_max_bytes(),
            fsync: Fsync::Batch,
            fsync_interval: default_fsync_interval(),
        }
    }
}

fn default_max_events() -> usize {
    10_000
}

#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum BufferKind {
    #[default]
    Memory,
    Disk,
}

#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum WhenFull {
    #[default]
    Block,
    DropNewest,
}

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
        "kafka" => SinkKind::Kafka(section::<kafka::Config>(table, path, p)?.validate(path, p)?),
        "nats" => SinkKind::Nats(section::<nats::Config>(table, path, p)?.validate(path, p)?),
        "prometheus" => SinkKind::Prometheus(section(table, path, p)?),
        "otlp" => SinkKind::Otlp(section::<otlp::Config>(table, path, p)?.validate(path, p)?),
        other => {
            p.push(format!("{path}.type"), format!("unknown sink type {other:?} (one of {TYPES})"));
            return None;
        }
    })
}

pub(crate) fn parse_buffer(
    table: Option<toml::Value>,
    path: &str,
    p: &mut Problems,
) -> Option<BufferConfig> {
    let Some(table) = table else {
        return Some(BufferConfig::default());
    };
    let path = format!("{path}.buffer");
    let b: BufferConfig = section(table, &path, p)?;
    if b.max_events == 0 {
        p.push(format!("{path}.max_events"), "must be at least 1");
        return None;
    }
    if b.kind == BufferKind::Disk && b.max_bytes < crate::disk_buffer::MIN_BYTES {
        p.push(
            format!("{path}.max_bytes"),
            format!("must be at least {} (1 MiB)", crate::disk_buffer::MIN_BYTES),
        );
        return None;
    }
    if b.fsync == Fsync::Interval && b.fsync_interval.is_zero() {
        p.push(format!("{path}.fsync_interval"), "must be more than 0");
        return None;
    }
    Some(b)
}
