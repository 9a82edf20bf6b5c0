//! The stdout sink: one event per line, the ClusterEvent JSON or, on a terminal, the readable
//! line. The default, so herald is useful with no broker at all.

use serde::Deserialize;

use super::encoding::{Encoding, LineFormat};

#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
pub struct Config {
    /// `json` or `text`; by default text on a terminal and JSON otherwise (DESIGN §12).
    pub encoding: Option<Encoding>,
}

use tokio::sync::mpsc::Receiver;

use super::{write_lines, Sink, SinkContext, SinkError};
use crate::pipeline::Delivery;

impl Sink for Config {
    async fn start(&self, ctx: SinkContext, rx: super::Queue) -> super::Started {
        let format = LineFormat::for_stream(
            self.encoding,
            std::io::IsTerminal::is_terminal(&std::io::stdout()),
        );
        Ok(tokio::task::spawn_blocking(move || run(ctx, format, rx)))
    }
}

/// Writes events to standard output until the pipeline closes the queue.
fn run(ctx: SinkContext, format: LineFormat, rx: Receiver<Delivery>) -> Result<(), SinkError> {
    let out = std::io::BufWriter::with_capacity(64 * 1024, std::io::stdout().lock());
    write_lines(&ctx.name, (format, &ctx.severities), out, rx, ctx.acked, ctx.metrics)
}
