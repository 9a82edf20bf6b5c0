//! What the broker sources (AMQP, NATS) share: the reconnect loop, the drain on stop, the
//! caught-up flag, and recognising a redelivered message.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc::Sender;

use super::{SourceContext, SourceError};
use crate::pipeline::Input;
use crate::support::lines::{split_message, Line};
use crate::support::retry::Backoff;
use crate::telemetry::events::{Reachability, Side};

/// With no message for this long a broker source counts as drained: it is caught up.
pub(crate) const QUIET: Duration = Duration::from_millis(50);

/// How long a stopping source keeps its connection for acknowledgements still on their way.
pub(crate) const DRAIN: Duration = Duration::from_secs(5);

/// The first wait after a lost connection.
const FIRST_RETRY: Duration = Duration::from_millis(200);

/// One delivery not yet settled; dropping it (acknowledged, or discarded at shutdown and so
/// left to the broker to redeliver) settles it.
pub(crate) struct Outstanding(pub(crate) Arc<AtomicUsize>);

impl Drop for Outstanding {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A message's identity for redelivery detection: the first 8 bytes of its SHA-256. Two
/// byte-identical messages are the same record twice, so sharing a key is harmless.
pub(crate) fn message_key(data: &[u8]) -> u64 {
    use sha2::{Digest, Sha256};
    let d = Sha256::digest(data);
    u64::from_le_bytes([d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7]])
}

/// A broker message's lines, numbered from 1 as the engine task numbers them (blank lines
/// included: the driver passes over them). The broker bounds a message's size, so its lines
/// take no limit of their own.
pub(crate) fn message_lines(data: &[u8]) -> Vec<Vec<u8>> {
    split_message(data, usize::MAX)
        .into_iter()
        .map(|(_, line)| match line {
            Line::Text(t) => t.to_vec(),
            Line::TooLong(_) => Vec::new(),
        })
        .collect()
}

/// A session's link to the reconnect loop: the session says when it is connected, which
/// ends an outage and resets the backoff.
pub(crate) struct Link {
    reach: Reachability,
    connected: AtomicBool,
}

impl Link {
    /// The session is connected (and consuming).
    pub(crate) fn up(&self) {
        self.connected.store(true, Ordering::Relaxed);
        self.reach.reached();
    }
}

/// Runs `session` until it ends cleanly (stop, or the engine gone), reconnecting with
/// backoff. An outage is logged once when it begins and once when it ends; a session that
/// had connected starts the next wait at the minimum again. While the broker is away,
/// nothing waits to be read (caught up).
pub(crate) async fn reconnecting<F, Fut>(ctx: &SourceContext, server: String, mut session: F)
where
    F: FnMut(Arc<Link>) -> Fut,
    Fut: std::future::Future<Output = Result<(), SourceError>>,
{
    let (source, tx, stop) = (ctx.index, &ctx.tx, &ctx.stop);
    let reach = Reachability::new(Side::Source, &ctx.name, server, ctx.metrics.outages(&ctx.name));
    let link = Arc::new(Link { reach, connected: AtomicBool::new(false) });
    let mut backoff = Backoff::new(FIRST_RETRY);
    while !stop.is_stopped() {
        link.connected.store(false, Ordering::Relaxed);
        let running = session(link.clone());
        tokio::pin!(running);
        let ended = tokio::select! {
            _ = stop.stopped() => {
                // The session sees the stop too, and keeps its connection while the
                // acknowledgements of what is committed go out ([`drain`]): dropping it here
                // closed the channel under them, and the broker delivered them all again.
                let _ = tokio::time::timeout(DRAIN + FIRST_RETRY, &mut running).await;
                return;
            }
            ended = &mut running => ended,
        };
        match ended {
            Ok(()) => return,
            Err(e) => {
                if link.connected.load(Ordering::Relaxed) {
                    backoff.reset();
                }
                link.reach.failed(&e);
                if tx.send(Input::CaughtUp { source, caught_up: true }).await.is_err() {
                    return;
                }
                tokio::select! {
                    _ = stop.stopped() => return,
                    _ = backoff.wait() => {}
                }
            }
        }
    }
}

/// On stop, keeps a broker connection open (at most [`DRAIN`]) while acknowledgements of
/// committed messages are still on their way over it.
pub(crate) async fn drain(outstanding: &AtomicUsize) {
    let until = tokio::time::Instant::now() + DRAIN;
    while outstanding.load(Ordering::Acquire) > 0 && tokio::time::Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A broker source's "caught up" flag, reported on each change.
pub(crate) struct Freshness {
    pub source: usize,
    pub caught_up: bool,
}

impl Freshness {
    /// Nothing came for [`QUIET`]: caught up. False when the engine is gone.
    pub async fn quiet(&mut self, tx: &Sender<Input>) -> bool {
        self.set(tx, true).await
    }

    /// A message came: returns whether it arrived in real time (the source was caught up),
    /// or `None` when the engine is gone.
    pub async fn arrived(&mut self, tx: &Sender<Input>) -> Option<bool> {
        let live = self.caught_up;
        self.set(tx, false).await.then_some(live)
    }

    pub async fn set(&mut self, tx: &Sender<Input>, caught_up: bool) -> bool {
        if self.caught_up == caught_up {
            return true;
        }
        self.caught_up = caught_up;
        tx.send(Input::CaughtUp { source: self.source, caught_up }).await.is_ok()
    }
}

/// How log lines name a broker: its kind and its URL without user information.
pub(crate) fn server(kind: &str, url: Option<&str>) -> String {
    format!("{kind} {}", crate::support::url::redacted(url.unwrap_or("")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_lines_keep_the_numbers_of_blank_lines() {
        let lines = message_lines(b"a\n\r\n\nb\r\nc");
        assert_eq!(lines, [b"a".to_vec(), vec![], vec![], b"b".to_vec(), b"c".to_vec()]);
    }
}
