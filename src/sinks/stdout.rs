//! The stdout sink: one ClusterEvent JSON object per line. The default, so herald is useful
//! with no broker at all.

use serde::Deserialize;

#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
pub struct Config {}

use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use tokio::sync::mpsc::Receiver;

use super::{write_lines, Sink, SinkContext, SinkError};
use crate::pipeline::Delivery;

impl Sink for Config {
    async fn start(&self, ctx: SinkContext, rx: super::Queue) -> super::Started {
        Ok(tokio::task::spawn_blocking(move || run(&ctx.name, rx, ctx.acked, ctx.metrics)))
    }
}

/// Writes events to standard output until the pipeline closes the queue.
pub fn run(
    name: &str,
    rx: Receiver<Delivery>,
    acked: Arc<AtomicU64>,
    metrics: crate::telemetry::metrics::SinkMetrics,
) -> Result<(), SinkError> {
    let out = std::io::BufWriter::with_capacity(64 * 1024, std::io::stdout().lock());
    write_lines(name, out, rx, acked, metrics)
}
