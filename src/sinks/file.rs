//! The file sink: ClusterEvents as JSON lines (or readable lines) appended to a file.

use std::path::PathBuf;

use serde::Deserialize;

use super::encoding::{Encoding, LineFormat};

use crate::support::problems::Problems;

#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct Config {
    /// The file to append to; required.
    pub path: Option<PathBuf>,
    /// `json` (the default) or `text`, never in colour.
    #[serde(default)]
    pub encoding: Encoding,
}

impl Config {
    pub(crate) fn validate(self, path: &str, p: &mut Problems) -> Option<Self> {
        p.require(path, "path", self.path.is_some()).then_some(self)
    }
}

use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use tokio::sync::mpsc::Receiver;

use super::{write_lines, Sink, SinkContext, SinkError};
use crate::pipeline::Delivery;

impl Sink for Config {
    async fn start(&self, ctx: SinkContext, rx: super::Queue) -> super::Started {
        let config = self.clone();
        Ok(tokio::task::spawn_blocking(move || run(&ctx.name, &config, rx, ctx.acked, ctx.metrics)))
    }
}

/// Appends events to the configured file until the pipeline closes the queue.
pub fn run(
    name: &str,
    config: &Config,
    rx: Receiver<Delivery>,
    acked: Arc<AtomicU64>,
    metrics: crate::telemetry::metrics::SinkMetrics,
) -> Result<(), SinkError> {
    let path = config.path.clone().unwrap_or_default();
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .map_err(|source| SinkError::Io { name: name.to_string(), source })?;
    let format = LineFormat::for_stream(Some(config.encoding), false);
    write_lines(
        name,
        format,
        std::io::BufWriter::with_capacity(64 * 1024, file),
        rx,
        acked,
        metrics,
    )
}
