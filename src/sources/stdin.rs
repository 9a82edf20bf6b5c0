//! The stdin source: JSON lines on standard input (a pipe from `ziti` or a test).

use serde::Deserialize;

use super::Common;

#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct Config {
    /// `cluster`, `reporter`, `format`: read apart, see [`Common`].
    #[serde(skip)]
    pub common: Common,
}

use std::io::Read;

use tokio::sync::mpsc::Sender;

use super::{Source, SourceContext};
use crate::decode::Context;
use crate::pipeline::feed::LineFeeder;
use crate::pipeline::{Input, Shutdown};

impl Source for Config {
    fn context(&self) -> Context {
        super::context(&self.common)
    }

    fn start(&self, ctx: SourceContext, _tasks: &mut Shutdown) {
        // The one task shutdown does not wait for: a read from a terminal cannot be
        // interrupted.
        Shutdown::detach(&ctx.name, move || read(ctx.index, ctx.tx));
    }
}

/// Reads standard input until its end. Runs on a blocking thread. A read that returns less
/// than a full buffer drained what the pipe held, so the source counts as caught up until
/// more arrives (DESIGN §5.1: then engine time may follow the wall clock).
pub fn read(source: usize, tx: Sender<Input>) {
    let mut lines =
        LineFeeder::new(source, crate::support::lines::MAX_LINE_BYTES, tx.clone(), None, 0, 0);
    let mut stdin = std::io::stdin().lock();
    let mut buf = vec![0u8; 64 * 1024];
    let error = loop {
        match stdin.read(&mut buf) {
            Ok(0) => break None,
            Ok(n) => {
                if !lines.arrived(n, buf.len()) || !lines.feed(&buf[..n]) {
                    return;
                }
                if n < buf.len() && !lines.set_caught_up(true) {
                    return;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => break Some(e.to_string()),
        }
    };
    if lines.finish() {
        let _ = tx.blocking_send(Input::Ended { source, error });
    }
}
