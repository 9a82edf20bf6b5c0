//! Sources: where records come from. One file per source; each defines its config table
//! (`[sources.NAME]` with `type = "..."`) and, once the daemon runs it, its reader.
//!
//! Adding a source touches its own file, its line in [`SourceKind`] and in [`parse`].

pub mod amqp;
pub mod etcd;
pub mod file;
pub mod http;
pub mod nats;
pub mod probe;
pub mod stdin;
pub mod zookeeper;

use serde::Deserialize;

use crate::config::{section, Problems};
use crate::decode::Format;
use crate::state::Position;

/// What a running source hands the engine task.
pub enum Input {
    /// Consecutive lines, and the position just after the last. `live`: they arrived in real
    /// time (read right after the source had caught up), so their record times tell the
    /// reporter's clock offset.
    Lines { source: usize, lines: Lines, position: Position, live: bool },
    /// A line over the length limit was skipped.
    TooLong { source: usize, line: u64, len: usize, position: Position },
    /// Whether the source has nothing more to read right now (DESIGN §5.1: engine time
    /// follows the wall clock only while every source is caught up).
    CaughtUp { source: usize, caught_up: bool },
    /// Lines from a push source (an `/ingest` body, a broker delivery). `on_commit` runs once
    /// their effect is persisted and every event produced by then is acknowledged by every
    /// sink: the source acknowledges upstream only then.
    /// `redelivery`: the broker marked the message redelivered; `key`: a hash of its bytes, to
    /// recognise one whose effect is already applied.
    Batch {
        source: usize,
        lines: Vec<Vec<u8>>,
        live: bool,
        on_commit: OnCommit,
        key: Option<u64>,
        redelivery: bool,
    },
    /// The source stopped for good (end of stdin) or failed.
    Ended { source: usize, error: Option<String> },
    /// What a probe or poller found in one round: observations made now, by herald itself.
    Observed { source: usize, observations: Vec<crate::model::Observation<'static>> },
}

impl Input {
    /// How many records it carries.
    pub fn records(&self) -> usize {
        match self {
            Input::Lines { lines, .. } => lines.len(),
            Input::Batch { lines, .. } => lines.len(),
            Input::Observed { observations, .. } => observations.len(),
            Input::TooLong { .. } => 1,
            Input::CaughtUp { .. } | Input::Ended { .. } => 0,
        }
    }
}

/// Lines read in one go, back to back in one buffer: one message and one wake-up of the engine
/// task per read instead of per line.
#[derive(Debug, Default)]
pub struct Lines {
    /// The number of the first line.
    pub first: u64,
    data: Vec<u8>,
    /// Where each line ends in `data`.
    ends: Vec<usize>,
}

impl Lines {
    fn push(&mut self, line: &[u8]) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        self.data.extend_from_slice(line);
        self.ends.push(self.data.len());
    }

    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// Each line with its number.
    pub fn iter(&self) -> impl Iterator<Item = (u64, &[u8])> {
        let starts = std::iter::once(0).chain(self.ends.iter().copied());
        starts
            .zip(self.ends.iter().copied())
            .zip(self.first..)
            .map(|((start, end), n)| (n, self.data.get(start..end).unwrap_or_default()))
    }
}

/// Splits a byte stream into lines and hands them to the engine task with their positions.
/// Only complete lines leave it: a line still being written stays until its newline comes.
pub(crate) struct LineFeeder {
    source: usize,
    max_line: usize,
    tx: tokio::sync::mpsc::Sender<Input>,
    pub file_id: Option<(u64, u64)>,
    /// Bytes consumed, counting the partial line.
    pub offset: u64,
    line: u64,
    /// Bytes after the last newline.
    partial: Vec<u8>,
    /// The partial line is over the limit: skip to its end, keeping only its length.
    skipping: Option<usize>,
    caught_up: Option<bool>,
    /// The lines being fed arrived in real time.
    live: bool,
    /// Complete lines not yet handed over, and the position after the last of them.
    batch: Lines,
    batch_end: Position,
}

impl LineFeeder {
    pub fn new(
        source: usize,
        max_line: usize,
        tx: tokio::sync::mpsc::Sender<Input>,
        line: u64,
    ) -> Self {
        LineFeeder {
            source,
            max_line,
            tx,
            file_id: None,
            offset: 0,
            line,
            partial: Vec::new(),
            skipping: None,
            caught_up: None,
            live: false,
            batch: Lines { first: line + 1, ..Lines::default() },
            batch_end: Position::default(),
        }
    }

    fn send(&self, input: Input) -> bool {
        self.tx.blocking_send(input).is_ok()
    }

    /// Reports a change of "nothing more to read"; false when the engine is gone.
    pub fn set_caught_up(&mut self, caught_up: bool) -> bool {
        if self.caught_up == Some(caught_up) {
            return true;
        }
        self.caught_up = Some(caught_up);
        self.flush() && self.send(Input::CaughtUp { source: self.source, caught_up })
    }

    /// Hands over the complete lines collected so far; false when the engine is gone.
    fn flush(&mut self) -> bool {
        if self.batch.is_empty() {
            return true;
        }
        let next = Lines { first: self.line + 1, ..Lines::default() };
        let lines = std::mem::replace(&mut self.batch, next);
        let position = std::mem::take(&mut self.batch_end);
        self.send(Input::Lines { source: self.source, lines, position, live: self.live })
    }

    /// Where the last complete line ends.
    fn position(&self) -> Position {
        let pending = self.skipping.unwrap_or(self.partial.len()) as u64;
        Position {
            file_id: self.file_id,
            offset: self.offset - pending,
            line: self.line,
            applied: Vec::new(),
        }
    }

    /// Marks what is read next: a short read right after catching up arrived in real time; a
    /// full buffer is backlog. Reports "not caught up" for the time it is being handed over.
    pub fn arrived(&mut self, n: usize, capacity: usize) -> bool {
        self.live = self.caught_up == Some(true) && n < capacity;
        self.set_caught_up(false)
    }

    /// Emits the complete lines in `chunk`; false when the engine is gone.
    pub fn feed(&mut self, chunk: &[u8]) -> bool {
        let mut rest = chunk;
        while let Some(i) = memchr::memchr(b'\n', rest) {
            let (line, after) = (&rest[..i], &rest[i + 1..]);
            rest = after;
            if self.partial.is_empty() && self.skipping.is_none() && line.len() <= self.max_line {
                // The common case: a whole line inside the chunk goes straight to the batch.
                self.offset += line.len() as u64 + 1;
                self.line += 1;
                self.batch.push(line);
                self.batch_end = self.position();
                continue;
            }
            self.take(line);
            self.offset += 1;
            if !self.finish_line() {
                return false;
            }
        }
        self.take(rest);
        self.flush()
    }

    fn take(&mut self, bytes: &[u8]) {
        self.offset += bytes.len() as u64;
        match &mut self.skipping {
            Some(len) => *len += bytes.len(),
            None if self.partial.len() + bytes.len() > self.max_line => {
                self.skipping = Some(self.partial.len() + bytes.len());
                self.partial = Vec::new();
            }
            None => self.partial.extend_from_slice(bytes),
        }
    }

    /// Emits a last line that has no newline (its file is finished); false when the engine
    /// is gone.
    pub fn finish_partial(&mut self) -> bool {
        if self.partial.is_empty() && self.skipping.is_none() {
            return self.flush();
        }
        self.finish_line() && self.flush()
    }

    pub fn discard_partial(&mut self) {
        self.partial.clear();
        self.skipping = None;
    }

    fn finish_line(&mut self) -> bool {
        match self.skipping.take() {
            Some(len) => {
                // In order: the lines before it first.
                if !self.flush() {
                    return false;
                }
                self.line += 1;
                let (source, line, position) = (self.source, self.line, self.position());
                self.batch.first = self.line + 1;
                self.send(Input::TooLong { source, line, len, position })
            }
            None => {
                self.line += 1;
                self.batch.push(&self.partial);
                self.partial.clear();
                self.batch_end = self.position();
                true
            }
        }
    }
}

// ---- shared by the broker sources ----------------------------------------------------------

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// With no message for this long a broker source counts as drained: it is caught up.
pub(crate) const QUIET: Duration = Duration::from_millis(50);

/// How long a stopping source keeps its connection for acknowledgements still on their way.
pub(crate) const DRAIN: Duration = Duration::from_secs(5);

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

/// Runs `session` until it ends cleanly (stop, or the engine gone), reconnecting with backoff;
/// an outage is logged once, and while it lasts nothing waits to be read (caught up).
pub(crate) async fn reconnecting<F, Fut>(
    name: &str,
    source: usize,
    tx: &tokio::sync::mpsc::Sender<Input>,
    stop: &std::sync::atomic::AtomicBool,
    mut session: F,
) where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    let mut backoff = Duration::from_millis(200);
    let mut announced = false;
    while !stop.load(Ordering::Relaxed) {
        match session().await {
            Ok(()) => return,
            Err(e) => {
                if !announced {
                    tracing::warn!(source = %name, error = %e, "broker connection lost or refused; reconnecting with backoff");
                    announced = true;
                }
                if tx.send(Input::CaughtUp { source, caught_up: true }).await.is_err() {
                    return;
                }
                tokio::time::sleep(jitter(backoff)).await;
                backoff = (backoff * 2).min(Duration::from_secs(30));
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

/// A broker message's records: one per non-blank line.
pub(crate) fn message_lines(data: &[u8]) -> Vec<Vec<u8>> {
    data.split(|b| *b == b'\n').filter(|l| !crate::lines::is_blank(l)).map(<[u8]>::to_vec).collect()
}

/// A broker source's "caught up" flag, reported on each change.
pub(crate) struct Freshness {
    pub source: usize,
    pub caught_up: bool,
}

impl Freshness {
    /// Nothing came for [`QUIET`]: caught up. False when the engine is gone.
    pub async fn quiet(&mut self, tx: &tokio::sync::mpsc::Sender<Input>) -> bool {
        self.set(tx, true).await
    }

    /// A message came: returns whether it arrived in real time (the source was caught up),
    /// or `None` when the engine is gone.
    pub async fn arrived(&mut self, tx: &tokio::sync::mpsc::Sender<Input>) -> Option<bool> {
        let live = self.caught_up;
        self.set(tx, false).await.then_some(live)
    }

    pub async fn set(&mut self, tx: &tokio::sync::mpsc::Sender<Input>, caught_up: bool) -> bool {
        if self.caught_up == caught_up {
            return true;
        }
        self.caught_up = caught_up;
        tx.send(Input::CaughtUp { source: self.source, caught_up }).await.is_ok()
    }
}

/// Runs `round` every `interval` until `stop`, sending what it observes. The first round runs
/// at once (DESIGN: every node is probed at start); a round that overruns the interval is
/// followed by the next straight away, never by a burst of missed ones.
pub(crate) async fn polling<F, Fut>(
    source: usize,
    interval: Duration,
    tx: tokio::sync::mpsc::Sender<Input>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    mut round: F,
) where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Vec<crate::model::Observation<'static>>>,
{
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while !stop.load(Ordering::Relaxed) {
        ticks.tick().await;
        let observations = round().await;
        if observations.is_empty() {
            continue;
        }
        if tx.send(Input::Observed { source, observations }).await.is_err() {
            return;
        }
    }
}

/// Turns a poller's attempts into the engine's node-liveness observations.
#[derive(Clone, Debug)]
pub(crate) struct Checker {
    pub cluster: String,
    /// The engine keeps node checks apart from the cluster's reporters: this name never
    /// counts among "the other reporters".
    pub reporter: &'static str,
    pub via: crate::model::Via,
    pub down_after: u32,
    pub up_after: u32,
}

impl Checker {
    /// Probes name themselves `herald-probe`, pollers `herald-poll`.
    pub fn new(
        cluster: Option<&str>,
        via: crate::model::Via,
        down_after: u32,
        up_after: u32,
    ) -> Self {
        Checker {
            cluster: cluster.unwrap_or("default").to_string(),
            reporter: match via {
                crate::model::Via::Probe => "herald-probe",
                _ => "herald-poll",
            },
            via,
            down_after,
            up_after,
        }
    }

    pub fn check(
        &self,
        node: &str,
        ok: bool,
        at: crate::model::Timestamp,
    ) -> crate::model::Observation<'static> {
        use std::borrow::Cow;
        crate::model::Observation {
            cluster: Cow::Owned(self.cluster.clone()),
            reporter: Cow::Borrowed(self.reporter),
            at,
            signal: crate::model::Signal::NodeCheck {
                node: Cow::Owned(node.to_string()),
                ok,
                via: self.via,
                down_after: self.down_after,
                up_after: self.up_after,
            },
        }
    }
}

/// Spreads retries of many clients apart: ±50%.
pub(crate) fn jitter(d: Duration) -> Duration {
    use rand::Rng;
    d.mul_f64(rand::rng().random_range(0.5..1.5))
}

/// What a push source does once its records are safe (answer the client, ack the broker).
pub type OnCommit = Box<dyn FnOnce() + Send>;

/// Why a source could not run.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("{path}: {source}")]
    Io { path: String, source: std::io::Error },
}

/// Keys every source that reads records has. They are read from the table before the
/// source's own keys (serde's `flatten` would hide unknown keys from validation).
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
pub struct Common {
    /// The cluster OpenZiti records belong to (they do not name it). Generic records carry
    /// their own.
    pub cluster: Option<String>,
    /// The reporter of records without `event_src_id` (OpenZiti before v1.3).
    pub reporter: Option<String>,
    /// `auto` (the default), `openziti` or `generic`.
    #[serde(default)]
    pub format: Format,
}

/// A configured source, by type.
#[derive(Clone, Debug, PartialEq)]
pub enum SourceKind {
    File(file::Config),
    Stdin(stdin::Config),
    Http(http::Config),
    Amqp(amqp::Config),
    Nats(nats::Config),
    Probe(probe::Config),
    Etcd(etcd::Config),
    Zookeeper(zookeeper::Config),
}

pub const TYPES: &str = "file, stdin, http, amqp, nats, probe, etcd, zookeeper";

const COMMON_KEYS: [&str; 3] = ["cluster", "reporter", "format"];

/// Splits the common keys out of a record source's table and reads them.
fn common(table: &mut toml::Value, path: &str, p: &mut Problems) -> Option<Common> {
    let mut keys = toml::Table::new();
    if let toml::Value::Table(t) = table {
        for k in COMMON_KEYS {
            if let Some(v) = t.remove(k) {
                keys.insert(k.to_string(), v);
            }
        }
    }
    section(toml::Value::Table(keys), path, p)
}

/// Reads `[sources.NAME]` by its `type`.
pub(crate) fn parse(
    kind: &str,
    mut table: toml::Value,
    path: &str,
    p: &mut Problems,
) -> Option<SourceKind> {
    let record_source = matches!(kind, "file" | "stdin" | "http" | "amqp" | "nats");
    let common = if record_source { common(&mut table, path, p) } else { Some(Common::default()) };
    let source = parse_kind(kind, table, path, p)?;
    let common = common?;
    Some(match source {
        SourceKind::File(c) => SourceKind::File(file::Config { common, ..c }),
        SourceKind::Stdin(_) => SourceKind::Stdin(stdin::Config { common }),
        SourceKind::Http(_) => SourceKind::Http(http::Config { common }),
        SourceKind::Amqp(c) => SourceKind::Amqp(amqp::Config { common, ..c }),
        SourceKind::Nats(c) => SourceKind::Nats(nats::Config { common, ..c }),
        other => other,
    })
}

fn parse_kind(kind: &str, table: toml::Value, path: &str, p: &mut Problems) -> Option<SourceKind> {
    Some(match kind {
        "file" => SourceKind::File(section::<file::Config>(table, path, p)?.validate(path, p)?),
        "stdin" => SourceKind::Stdin(section(table, path, p)?),
        "http" => SourceKind::Http(section(table, path, p)?),
        "amqp" => SourceKind::Amqp(section::<amqp::Config>(table, path, p)?.validate(path, p)?),
        "nats" => SourceKind::Nats(section::<nats::Config>(table, path, p)?.validate(path, p)?),
        "probe" => SourceKind::Probe(section::<probe::Config>(table, path, p)?.validate(path, p)?),
        "etcd" => SourceKind::Etcd(section::<etcd::Config>(table, path, p)?.validate(path, p)?),
        "zookeeper" => {
            SourceKind::Zookeeper(section::<zookeeper::Config>(table, path, p)?.validate(path, p)?)
        }
        other => {
            p.push(
                format!("{path}.type"),
                format!("unknown source type {other:?} (one of {TYPES})"),
            );
            return None;
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the engine task would see, lines flattened: (line number, text or length, offset
    /// after it as its input's position says).
    fn received(rx: &mut tokio::sync::mpsc::Receiver<Input>) -> Vec<(u64, String, u64)> {
        let mut out = Vec::new();
        while let Ok(input) = rx.try_recv() {
            match input {
                Input::Lines { lines, position, .. } => {
                    let n = lines.len();
                    for (i, (number, bytes)) in lines.iter().enumerate() {
                        // Only a batch's last line carries the batch's position.
                        let at = if i + 1 == n { position.offset } else { 0 };
                        out.push((number, String::from_utf8_lossy(bytes).into_owned(), at));
                    }
                }
                Input::TooLong { line, len, position, .. } => {
                    out.push((line, format!("<{len} bytes>"), position.offset))
                }
                _ => {}
            }
        }
        out
    }

    #[test]
    fn lines_split_across_reads_keep_their_numbers_and_positions() {
        let (tx, mut rx) = tokio::sync::mpsc::channel(64);
        let mut f = LineFeeder::new(0, 8, tx, 0);
        assert!(f.feed(b"ab\ncd"));
        assert!(f.feed(b"e\r\n0123456789\nf"));
        assert!(f.feed(b"g\n"));
        assert!(f.feed(b"tail"));
        assert!(f.finish_partial());
        let want = [
            (1, "ab".to_string(), 3),
            (2, "cde".to_string(), 8),
            (3, "<10 bytes>".to_string(), 19),
            (4, "fg".to_string(), 22),
            (5, "tail".to_string(), 26),
        ];
        assert_eq!(received(&mut rx), want);
    }

    #[test]
    fn a_read_of_many_lines_is_one_input_and_a_long_line_splits_it_in_order() {
        let (tx, mut rx) = tokio::sync::mpsc::channel(64);
        let mut f = LineFeeder::new(0, 4, tx, 10);
        assert!(f.feed(b"a\nb\ntoolong\nc\nd\n"));
        let mut kinds = Vec::new();
        while let Ok(input) = rx.try_recv() {
            kinds.push(match input {
                Input::Lines { lines, .. } => {
                    format!("lines from {} x{}", lines.first, lines.len())
                }
                Input::TooLong { line, .. } => format!("too long {line}"),
                _ => "other".into(),
            });
        }
        assert_eq!(kinds, ["lines from 11 x2", "too long 13", "lines from 14 x2"]);
    }

    #[test]
    fn caught_up_follows_the_lines_read_before_it() {
        let (tx, mut rx) = tokio::sync::mpsc::channel(64);
        let mut f = LineFeeder::new(0, 64, tx, 0);
        assert!(f.arrived(4, 64));
        assert!(f.feed(b"x\ny"));
        assert!(f.set_caught_up(true));
        let order: Vec<&str> = std::iter::from_fn(|| rx.try_recv().ok())
            .map(|i| match i {
                Input::CaughtUp { caught_up: false, .. } => "behind",
                Input::CaughtUp { caught_up: true, .. } => "caught up",
                Input::Lines { .. } => "lines",
                _ => "other",
            })
            .collect();
        assert_eq!(order, ["behind", "lines", "caught up"]);
    }
}
