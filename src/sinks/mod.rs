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

use serde::Deserialize;

use crate::config::{section, Problems};

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
}

impl Default for BufferConfig {
    fn default() -> Self {
        BufferConfig {
            kind: BufferKind::Memory,
            max_events: default_max_events(),
            when_full: WhenFull::Block,
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
    Some(b)
}
