//! The live event stream behind `GET /events` and `herald tap` (DESIGN §12).
//!
//! A broadcast, not a sink: it holds nothing, takes no part in acknowledgements and never
//! waits for a reader. A reader that falls [`BACKLOG`] events behind is dropped with a
//! message that says so, counted; the pipeline goes on.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use prometheus::{IntCounter, IntGauge};
use tokio::sync::broadcast;

use crate::model::ClusterEvent;

/// How far a reader may fall behind before it is dropped.
pub const BACKLOG: usize = 1024;
/// Readers at once; one more is answered 503.
pub const MAX_SUBSCRIBERS: usize = 16;

/// An event as the tap hands it out: the event and its JSON line.
#[derive(Clone, Debug)]
pub struct Tapped {
    pub event: Arc<ClusterEvent>,
    pub line: Arc<str>,
}

pub struct Tap {
    tx: broadcast::Sender<Tapped>,
    /// Ends every reader's stream at shutdown, so that none holds the server open.
    closed: tokio_util::sync::CancellationToken,
    subscribers: Arc<AtomicUsize>,
    max: usize,
    /// Readers dropped for falling behind.
    pub dropped: IntCounter,
    readers: IntGauge,
}

/// A reader's end; leaving frees its place.
pub struct Subscription {
    pub rx: broadcast::Receiver<Tapped>,
    pub closed: tokio_util::sync::CancellationToken,
    subscribers: Arc<AtomicUsize>,
    readers: IntGauge,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.subscribers.fetch_sub(1, Ordering::AcqRel);
        self.readers.dec();
    }
}

impl Tap {
    /// `readers` counts the readers there are, `dropped` those dropped for falling behind.
    pub fn new(readers: IntGauge, dropped: IntCounter, max: usize) -> Tap {
        let (tx, _) = broadcast::channel(BACKLOG);
        Tap { tx, closed: Default::default(), subscribers: Arc::default(), max, dropped, readers }
    }

    /// Hands `event` to every reader there is; costs nothing when there are none.
    pub fn publish(&self, event: &ClusterEvent, line: &Arc<str>) {
        if self.tx.receiver_count() > 0 {
            // A copy of its own: a reader's backlog holding a commit's event would hold all
            // of that commit's events (see `EventRef`).
            let event = Arc::new(event.clone());
            // An error only says that nobody listens any more.
            let _ = self.tx.send(Tapped { event, line: line.clone() });
        }
    }

    /// A new reader, unless [`Tap::new`]'s `max` are reading already.
    pub fn subscribe(&self) -> Option<Subscription> {
        let max = self.max;
        let taken = self
            .subscribers
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < max).then_some(n + 1));
        taken.ok()?;
        self.readers.inc();
        Some(Subscription {
            rx: self.tx.subscribe(),
            closed: self.closed.clone(),
            subscribers: self.subscribers.clone(),
            readers: self.readers.clone(),
        })
    }

    /// herald stops: every reader's stream ends.
    pub fn close(&self) {
        self.closed.cancel();
    }
}

/// What a reader asks for: `?cluster=C&kind=K`, each optional.
#[derive(Clone, Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Filter {
    pub cluster: Option<String>,
    pub kind: Option<String>,
}

impl Filter {
    pub fn wants(&self, e: &ClusterEvent) -> bool {
        self.cluster.as_ref().is_none_or(|c| *c == e.cluster)
            && self.kind.as_ref().is_none_or(|k| k == e.kind.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{EventKind, Timestamp};

    fn event(kind: EventKind, cluster: &str) -> (Arc<ClusterEvent>, Arc<str>) {
        let e = ClusterEvent::new(kind, cluster, Timestamp(0), Timestamp(0));
        let line: Arc<str> = Arc::from(serde_json::to_string(&e).unwrap_or_default());
        (Arc::new(e), line)
    }

    #[test]
    fn a_reader_that_falls_behind_learns_it_and_the_publisher_never_waits() {
        let tap = Tap::new(IntGauge::new("r", "r").unwrap(), IntCounter::new("d", "d").unwrap(), 2);
        let mut slow = tap.subscribe().unwrap();
        let (e, line) = event(EventKind::RouterOnline, "c");
        for _ in 0..BACKLOG + 5 {
            tap.publish(&e, &line);
        }
        match slow.rx.try_recv() {
            Err(broadcast::error::TryRecvError::Lagged(n)) => assert_eq!(n, 5),
            other => panic!("expected the reader to lag, got {other:?}"),
        }
    }

    #[test]
    fn subscribers_are_capped_and_leaving_frees_a_place() {
        let readers = IntGauge::new("r", "r").unwrap();
        let tap = Tap::new(readers.clone(), IntCounter::new("d", "d").unwrap(), 2);
        let a = tap.subscribe().unwrap();
        let _b = tap.subscribe().unwrap();
        assert!(tap.subscribe().is_none());
        assert_eq!(readers.get(), 2);
        drop(a);
        assert_eq!(readers.get(), 1);
        assert!(tap.subscribe().is_some());
    }

    #[test]
    fn the_filter_picks_cluster_and_kind() {
        let (e, _) = event(EventKind::RouterOnline, "prod");
        assert!(Filter::default().wants(&e));
        let f = Filter { cluster: Some("prod".into()), kind: Some("router.online".into()) };
        assert!(f.wants(&e));
        assert!(!Filter { cluster: Some("dev".into()), kind: None }.wants(&e));
        assert!(!Filter { cluster: None, kind: Some("router.offline".into()) }.wants(&e));
    }
}

/// Why `herald tap` stopped reading.
#[derive(Debug, thiserror::Error)]
pub enum TapError {
    #[error("{url}: {source}")]
    Http { url: String, source: reqwest::Error },
    #[error("{url}: {status}: {body}")]
    Refused { url: String, status: reqwest::StatusCode, body: String },
    #[error("the daemon dropped this reader: it fell {behind} events behind")]
    Dropped { behind: u64 },
    #[error("{url}: not an address: {reason}")]
    Address { url: String, reason: String },
    #[error("an event that is not a ClusterEvent: {0}")]
    Malformed(serde_json::Error),
}

/// One server-sent event as it is read: its `event:` name and its `data:` lines.
#[derive(Default)]
struct Pending {
    name: String,
    data: String,
}

/// Follows `GET {server}/events` with `filter` until the daemon ends the stream, handing
/// each event to `each` (false stops). A drop for falling behind is an error.
pub async fn follow(
    server: &str,
    filter: &Filter,
    mut each: impl FnMut(ClusterEvent, &str) -> bool,
) -> Result<(), TapError> {
    let url = format!("{}/events", server.trim_end_matches('/'));
    let http = |source: reqwest::Error| TapError::Http { url: url.clone(), source };
    let mut query: Vec<(&str, &str)> = Vec::new();
    if let Some(c) = &filter.cluster {
        query.push(("cluster", c));
    }
    if let Some(k) = &filter.kind {
        query.push(("kind", k));
    }
    let address = reqwest::Url::parse_with_params(&url, &query)
        .map_err(|e| TapError::Address { url: url.clone(), reason: e.to_string() })?;
    let mut response = reqwest::Client::new()
        .get(address)
        .header(reqwest::header::ACCEPT, "text/event-stream")
        .send()
        .await
        .map_err(http)?;
    if !response.status().is_success() {
        let status = response.status();
        let body = response.text().await.unwrap_or_default();
        return Err(TapError::Refused { url: url.clone(), status, body: body.trim().into() });
    }
    let mut buf: Vec<u8> = Vec::new();
    let mut pending = Pending::default();
    while let Some(chunk) = response.chunk().await.map_err(http)? {
        buf.extend_from_slice(&chunk);
        while let Some(end) = buf.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = buf.drain(..=end).collect();
            let line = String::from_utf8_lossy(&line);
            let line = line.trim_end_matches(['\n', '\r']);
            if line.is_empty() {
                let done = std::mem::take(&mut pending);
                if !dispatch(done, &mut each)? {
                    return Ok(());
                }
            } else if let Some(v) = field(line, "event") {
                pending.name = v.to_string();
            } else if let Some(v) = field(line, "data") {
                if !pending.data.is_empty() {
                    pending.data.push('\n');
                }
                pending.data.push_str(v);
            }
            // `id:`, `retry:` and `:` comments (the keep-alives) carry nothing to print.
        }
    }
    Ok(())
}

fn field<'a>(line: &'a str, name: &str) -> Option<&'a str> {
    let rest = line.strip_prefix(name)?.strip_prefix(':')?;
    Some(rest.strip_prefix(' ').unwrap_or(rest))
}

fn dispatch(
    p: Pending,
    each: &mut impl FnMut(ClusterEvent, &str) -> bool,
) -> Result<bool, TapError> {
    if p.data.is_empty() {
        return Ok(true);
    }
    if p.name == "dropped" {
        let behind = serde_json::from_str::<serde_json::Value>(&p.data)
            .ok()
            .and_then(|v| v["dropped"].as_u64())
            .unwrap_or(0);
        return Err(TapError::Dropped { behind });
    }
    let event: ClusterEvent = serde_json::from_str(&p.data).map_err(TapError::Malformed)?;
    Ok(each(event, &p.data))
}
