//! A sink's buffer (`[sinks.NAME.buffer]`): a bounded queue in memory that blocks the
//! pipeline when full (default), or a disk buffer that spills, or — only when configured —
//! drops the newest events, counted.

pub mod disk;
pub mod segments;

use serde::Deserialize;

use crate::support::problems::{section, Problems};

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
    if b.kind == BufferKind::Disk && b.max_bytes < disk::MIN_BYTES {
        p.push(
            format!("{path}.max_bytes"),
            format!("must be at least {} (1 MiB)", disk::MIN_BYTES),
        );
        return None;
    }
    if b.fsync == Fsync::Interval && b.fsync_interval.is_zero() {
        p.push(format!("{path}.fsync_interval"), "must be more than 0");
        return None;
    }
    Some(b)
}
