//! The edge (DESIGN §10): herald next to a controller, forwarding raw records to Kafka for the
//! core instances to read. It runs no engine.
//!
//! Every record a source reads that decodes goes to the raw sinks as it was read, keyed by
//! its cluster; a probe's or poller's finding goes as its generic line. A record that does
//! not decode is counted and reported here, where its line number means something, and not
//! forwarded; nor is one the engine would pass over (another namespace or event type).
//!
//! Nothing is kept on disk but the sources' positions, and a position moves only once every
//! sink holds the records read before it; a push source's message is acknowledged upstream
//! only then. Kafka, not herald, holds what is in flight, so an edge needs no outbox and no
//! disk buffer: a crash forwards the same lines again, never loses one.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;

use super::commit::Store;
use super::delivery::Forward;
use super::fanout::Fanout;
use super::input::{Input, OnCommit};
use super::PipelineError;
use crate::decode::{decode_line, generic, Context, DecodeError, Decoded, Reason};
use crate::model::Observation;
use crate::state::{Commit, Position};
use crate::telemetry::events::{DecodeFailed, RecordRead};
use crate::telemetry::metrics::{Metrics, RecordOutcome, SourceMetrics};

/// How often positions the sinks now cover are written.
const COMMIT_INTERVAL: Duration = super::run::COMMIT_INTERVAL;

struct Source {
    name: String,
    context: Context,
    metrics: SourceMetrics,
}

/// What waits for every sink to hold the records forwarded before it.
enum Waiting {
    Position(String, Position),
    Ack(OnCommit),
}

pub struct EdgeTask {
    sources: Vec<Source>,
    /// What the store holds, or will with the next commit.
    positions: BTreeMap<String, Position>,
    moved: BTreeSet<String>,
    /// Oldest first: (the last record forwarded before it, what then).
    waiting: VecDeque<(u64, Waiting)>,
    /// The sequence number of the last record forwarded.
    seq: u64,
    store: Store,
    sinks: Fanout<Forward>,
    metrics: Arc<Metrics>,
}

impl EdgeTask {
    /// The positions the previous run persisted in `store`.
    pub fn restore(store: Store, metrics: Arc<Metrics>) -> Result<EdgeTask, PipelineError> {
        Ok(EdgeTask {
            sources: Vec::new(),
            positions: store.positions()?,
            moved: BTreeSet::new(),
            waiting: VecDeque::new(),
            seq: 0,
            store,
            sinks: Fanout::default(),
            metrics,
        })
    }

    /// Where the previous run left source `name`.
    pub fn position(&self, name: &str) -> Option<Position> {
        self.positions.get(name).cloned()
    }

    /// Registers the next source (its index is the order of registration).
    pub fn add_source(&mut self, name: &str, context: Context) -> usize {
        let metrics = self.metrics.source(name);
        self.sources.push(Source { name: name.to_string(), context, metrics });
        self.sources.len() - 1
    }

    pub fn connect(&mut self, sinks: Fanout<Forward>) {
        self.sinks = sinks;
    }

    pub fn sinks(&self) -> usize {
        self.sinks.len()
    }

    /// Runs until `shutdown` completes.
    pub async fn run(
        &mut self,
        mut rx: mpsc::Receiver<Input>,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), PipelineError> {
        tokio::pin!(shutdown);
        let mut last_commit = Instant::now();
        let mut open = true;
        loop {
            let input = tokio::select! {
                biased;
                _ = &mut shutdown => break,
                msg = rx.recv(), if open => msg,
                _ = tokio::time::sleep(COMMIT_INTERVAL) => None,
            };
            match input {
                Some(input) => self.forward(input).await?,
                None if rx.is_closed() && rx.is_empty() => open = false,
                None => {}
            }
            self.release();
            if !self.moved.is_empty() && last_commit.elapsed() >= COMMIT_INTERVAL {
                self.commit().await?;
                last_commit = Instant::now();
            }
        }
        Ok(())
    }

    /// After the run: closes the sinks' queues so that each sink delivers what it has and
    /// ends.
    pub async fn drain(&mut self) -> Result<(), PipelineError> {
        self.sinks.close();
        Ok(())
    }

    /// Once the sinks have ended: the positions they now cover. Returns how many records no
    /// sink acknowledged (the sources read them again next time).
    pub async fn finish(&mut self) -> Result<usize, PipelineError> {
        self.release();
        self.commit().await?;
        let held = self.sinks.held().min(self.seq);
        Ok(usize::try_from(self.seq - held).unwrap_or(usize::MAX))
    }

    /// Forwards one input's records, then queues what waits for them.
    async fn forward(&mut self, input: Input) -> Result<(), PipelineError> {
        let mut out = Vec::new();
        let waiting = match input {
            Input::Lines { source, lines, position, .. } => {
                for (number, bytes) in lines.iter() {
                    out.extend(self.line(source, None, number, bytes));
                }
                self.name(source).map(|name| Waiting::Position(name, position))
            }
            Input::TooLong { source, line, len, position } => {
                if let Some(src) = self.sources.get(source) {
                    let error = DecodeError { line, reason: Reason::TooLong(len) };
                    DecodeFailed { source: &src.name, error: &error }.emit(&src.metrics);
                }
                self.name(source).map(|name| Waiting::Position(name, position))
            }
            Input::Batch { source, lines, on_commit, context, .. } => {
                for (i, bytes) in lines.iter().enumerate() {
                    out.extend(self.line(source, context.as_ref(), i as u64 + 1, bytes));
                }
                Some(Waiting::Ack(on_commit))
            }
            Input::Observed { source, observations } => {
                for obs in observations {
                    out.extend(self.observed(source, &obs));
                }
                None
            }
            Input::CaughtUp { .. } | Input::Partition { .. } => None,
            Input::Ended { source, error } => {
                if let Some(src) = self.sources.get(source) {
                    match error {
                        Some(e) => {
                            tracing::error!(source = %src.name, error = %e, "source stopped")
                        }
                        None => tracing::info!(source = %src.name, "source reached its end"),
                    }
                }
                None
            }
        };
        if let Some(w) = waiting {
            self.waiting.push_back((self.seq, w));
        }
        if !out.is_empty() {
            self.sinks.dispatch(out).await?;
        }
        Ok(())
    }

    fn name(&self, source: usize) -> Option<String> {
        self.sources.get(source).map(|s| s.name.clone())
    }

    /// The record to forward for one line, if it decodes to something the engine observes.
    /// `context`: the cluster and reporter the message names itself, if it does.
    fn line(
        &mut self,
        source: usize,
        context: Option<&Context>,
        number: u64,
        bytes: &[u8],
    ) -> Option<Forward> {
        let src = self.sources.get(source)?;
        let obs = match decode_line(bytes, number, context.unwrap_or(&src.context)) {
            Ok(Decoded::Observation(obs)) => obs,
            Ok(Decoded::Ignored(_)) => {
                RecordRead { outcome: RecordOutcome::Ignored }.emit(&src.metrics);
                return None;
            }
            Err(error) => {
                DecodeFailed { source: &src.name, error: &error }.emit(&src.metrics);
                return None;
            }
        };
        // It decoded, so it is UTF-8.
        let line = std::str::from_utf8(bytes).ok()?;
        RecordRead { outcome: RecordOutcome::Ok }.emit(&src.metrics);
        Some(next(&mut self.seq, Arc::from(line), &obs))
    }

    /// A probe's or poller's finding, as its generic line.
    fn observed(&mut self, source: usize, obs: &Observation<'_>) -> Option<Forward> {
        let src = self.sources.get(source)?;
        let Some(line) = generic::line(obs) else {
            // Probes and pollers find only what the generic format says.
            RecordRead { outcome: RecordOutcome::Ignored }.emit(&src.metrics);
            return None;
        };
        RecordRead { outcome: RecordOutcome::Ok }.emit(&src.metrics);
        Some(next(&mut self.seq, Arc::from(line), obs))
    }

    /// Moves the positions, and acknowledges the messages, that every sink now covers.
    fn release(&mut self) {
        let held = self.sinks.held();
        while self.waiting.front().is_some_and(|(mark, _)| *mark <= held) {
            match self.waiting.pop_front() {
                Some((_, Waiting::Position(name, position))) => {
                    self.positions.insert(name.clone(), position);
                    self.moved.insert(name);
                }
                Some((_, Waiting::Ack(f))) => f(),
                None => break,
            }
        }
    }

    /// Writes the positions that moved.
    async fn commit(&mut self) -> Result<(), PipelineError> {
        if self.moved.is_empty() || !self.store.is_some() {
            self.moved.clear();
            return Ok(());
        }
        let positions = std::mem::take(&mut self.moved)
            .into_iter()
            .filter_map(|name| Some((name.clone(), self.positions.get(&name)?.clone())))
            .collect();
        let commit = Commit { positions, ..Commit::default() };
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || store.commit_blocking(commit))
            .await
            .map_err(|e| PipelineError::Commit(e.to_string()))??;
        Ok(())
    }
}

/// The record after `seq` to forward: `line`, keyed by what `obs` says of it.
fn next(seq: &mut u64, line: Arc<str>, obs: &Observation<'_>) -> Forward {
    *seq += 1;
    Forward {
        seq: *seq,
        line,
        cluster: Arc::from(&*obs.cluster),
        reporter: Arc::from(&*obs.reporter),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::fanout::{Full, SinkQueue};
    use crate::pipeline::{Acked, Lines};
    use std::sync::atomic::Ordering;

    const ZITI: &str = r#"{"namespace":"cluster","event_src_id":"ctrl1","timestamp":"2025-01-01T00:00:00Z","eventType":"state.has_leader","leaderId":"ctrl2"}"#;
    const GENERIC: &str = r#"{"ts":"2025-01-01T00:00:01Z","cluster":"etcd-a","reporter":"n1","signal":"leader","leader":"n2"}"#;
    const OTHER: &str =
        r#"{"namespace":"connect","timestamp":"2025-01-01T00:00:02Z","event_type":"x"}"#;

    fn task(dir: &std::path::Path) -> (EdgeTask, mpsc::Receiver<Forward>, Acked) {
        let store = Store::open(dir, &Default::default()).expect("store");
        let metrics = Arc::new(Metrics::new().expect("metrics"));
        let mut t = EdgeTask::restore(store, metrics.clone()).expect("restore");
        t.add_source("log", Context::new("prod", "edge1"));
        let (tx, rx) = mpsc::channel(16);
        let acked = Acked::default();
        let queue = SinkQueue {
            name: "raw".into(),
            tx: Some(tx),
            metrics: metrics.sink("raw"),
            acked: acked.clone(),
            when_full: Full::Block,
        };
        t.connect(Fanout::new(vec![queue]));
        (t, rx, acked)
    }

    fn lines(text: &[&str]) -> Lines {
        let mut l = Lines::starting_at(1);
        for t in text {
            l.push(t.as_bytes());
        }
        l
    }

    fn at(offset: u64) -> Position {
        Position { offset, ..Position::default() }
    }

    /// One read of a file source: `text`, and the position after it.
    fn read(text: &[&str], offset: u64) -> Input {
        Input::Lines { source: 0, lines: lines(text), position: at(offset), live: false }
    }

    /// What decodes goes as it was read, with the cluster and reporter that apply to it; what
    /// does not, or what the engine would pass over, stays.
    #[tokio::test]
    async fn decodable_lines_go_as_read_with_their_cluster_and_reporter() {
        let dir = tempfile::tempdir().unwrap();
        let (mut t, mut rx, _) = task(dir.path());
        t.forward(read(&[ZITI, "not json", OTHER, GENERIC], 9)).await.unwrap();
        let a = rx.try_recv().unwrap();
        assert_eq!((&*a.line, &*a.cluster, &*a.reporter), (ZITI, "prod", "ctrl1"));
        let b = rx.try_recv().unwrap();
        assert_eq!((&*b.line, &*b.cluster, &*b.reporter), (GENERIC, "etcd-a", "n1"));
        assert_eq!((a.seq, b.seq), (1, 2));
        assert!(rx.try_recv().is_err(), "nothing else");
    }

    /// Regression guard for the edge's one promise: a position is written only once every
    /// sink holds the records read before it, so a crash forwards again and never loses.
    #[tokio::test]
    async fn a_position_moves_only_once_the_sinks_hold_what_was_read_before_it() {
        let dir = tempfile::tempdir().unwrap();
        let (mut t, _rx, acked) = task(dir.path());
        t.forward(read(&[ZITI], 100)).await.unwrap();
        t.forward(read(&[GENERIC], 200)).await.unwrap();
        t.release();
        t.commit().await.unwrap();
        assert_eq!(t.store.positions().unwrap().get("log"), None, "nothing held yet");

        acked.store(1, Ordering::Release);
        t.release();
        t.commit().await.unwrap();
        assert_eq!(t.store.positions().unwrap()["log"].offset, 100);

        acked.store(2, Ordering::Release);
        assert_eq!(t.finish().await.unwrap(), 0);
        assert_eq!(t.store.positions().unwrap()["log"].offset, 200);
    }

    /// A broker's message is acknowledged once its records are held, not when read.
    #[tokio::test]
    async fn a_push_source_message_is_acknowledged_once_its_records_are_held() {
        let dir = tempfile::tempdir().unwrap();
        let (mut t, _rx, acked) = task(dir.path());
        let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = done.clone();
        let batch = Input::Batch {
            source: 0,
            lines: vec![ZITI.as_bytes().to_vec()],
            live: true,
            on_commit: Box::new(move || flag.store(true, Ordering::SeqCst)),
            key: None,
            redelivery: false,
            context: None,
            offset: None,
        };
        t.forward(batch).await.unwrap();
        t.release();
        assert!(!done.load(Ordering::SeqCst));
        acked.store(1, Ordering::Release);
        t.release();
        assert!(done.load(Ordering::SeqCst));
    }
}
