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

use tokio::sync::mpsc::Receiver;

use super::{write_lines, Sink, SinkContext, SinkError};
use crate::pipeline::Delivery;

impl Sink for Config {
    async fn start(&self, ctx: SinkContext, rx: super::Queue) -> super::Started {
        let config = self.clone();
        Ok(tokio::task::spawn_blocking(move || run(ctx, &config, rx)))
    }
}

/// Appends events to the configured file until the pipeline closes the queue.
fn run(ctx: SinkContext, config: &Config, rx: Receiver<Delivery>) -> Result<(), SinkError> {
    let path = config.path.clone().unwrap_or_default();
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .map_err(|source| SinkError::Io { name: ctx.name.clone(), source })?;
    let format = LineFormat::for_stream(Some(config.encoding), false);
    let out = std::io::BufWriter::with_capacity(64 * 1024, file);
    write_lines(&ctx.name, (format, &ctx.severities), out, rx, ctx.acked, ctx.metrics)
}
