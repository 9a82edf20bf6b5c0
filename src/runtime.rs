//! `herald run`: wiring, start order, live engine time, group commit, shutdown.
//!
//! ```text
//! sources ──Input──► engine task ──► commit: state file ──► sinks ──acked watermark──┐
//! (threads)  bounded  (decode,       (engine snapshot,     (bounded    ▲              │
//!                      observe,       positions, outbox)    queues)     └──────────────┘
//!                      tick)
//! ```
//!
//! Start order is explicit (DESIGN §1): sinks first, then the engine state is restored and
//! its undelivered events are handed to the sinks again, then the sources start.
//!
//! **Group commit.** The engine task applies whatever records are ready, then persists one
//! consistent cut — the engine snapshot, the source positions of the records applied, and the
//! outbox of events not yet acknowledged by every sink — and only then hands the new events to
//! the sinks. An event therefore never reaches a sink before the state that produced it is on
//! disk, and a position never advances past a record whose events could still be lost. A
//! crash can cause a redelivery (same id), never a loss. Sinks acknowledge in order through a
//! watermark; the next commit drops what every sink holds from the outbox.
//!
//! **Live time** (DESIGN §5.1). Engine time is the latest record time, clamped to the wall
//! clock; while every source is caught up (nothing waiting to be read), it also follows the
//! wall clock, and the task sleeps exactly until the engine's next deadline. A backlog is
//! thus processed on its own record time, exactly as `herald replay` would.

use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::config::Config;
use crate::decode::{self, Context, Decoded};
use crate::engine::{Engine, Outcome, SnapshotError};
use crate::metrics::{Metrics, RecordOutcome};
use crate::model::{ClusterEvent, EventKind, Timestamp};
use crate::server::{self, Shared};
use crate::sinks::{self, Delivery, SinkError, SinkKind, WhenFull};
use crate::sources::{self, Input, SourceKind};
use crate::state::{Position, State, StateDir, StateError};
use crate::view::View;

/// How long a record's effect may wait before its commit when no event hurries it.
const COMMIT_INTERVAL: Duration = Duration::from_millis(200);
/// How many recent broker messages each push source remembers as applied: well above any
/// prefetch, so every message a broker can redeliver after a crash is among them.
const RECENT_MESSAGES: usize = 4096;

/// Records applied per commit at most (give or take one input), so that a backlog still
/// commits regularly.
const BATCH: usize = 4096;
/// Inputs waiting for the engine task. A file source's input is one read's lines, so this
/// bounds memory to some megabytes while keeping the reader a read ahead.
const INPUTS: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
    #[error(transparent)]
    Sink(#[from] SinkError),
    #[error("sink {0} stopped")]
    SinkGone(String),
    #[error("cannot listen on {addr}: {source}")]
    Listen { addr: std::net::SocketAddr, source: std::io::Error },
    #[error("TLS certificate {cert} or its key: {source}")]
    Tls { cert: std::path::PathBuf, source: std::io::Error },
    #[error(transparent)]
    Buffer(#[from] crate::disk_buffer::BufferError),
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
}

struct Sink {
    name: String,
    tx: Option<mpsc::Sender<Delivery>>,
    metrics: crate::metrics::SinkMetrics,
    acked: Arc<AtomicU64>,
    task: JoinHandle<Result<(), SinkError>>,
    when_full: WhenFull,
    dropped: u64,
}

struct Source {
    name: String,
    context: Context,
    caught_up: bool,
    metrics: crate::metrics::SourceMetrics,
}

/// Runs until `shutdown` completes, then stops the sources, delivers what is in flight,
/// persists the state and returns.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> Result<(), RuntimeError> {
    // One process-wide TLS crypto provider for the server and every client (ring: no C
    // toolchain step beyond what ring needs); a second install is a harmless error.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let metrics = Arc::new(Metrics::new()?);
    let view = Arc::new(std::sync::Mutex::new(View::default()));
    let mut sinks = start_sinks(&config, &metrics, &view).await?;
    let store = config.state.dir.clone().map(StateDir::new);
    if store.is_none() {
        tracing::warn!("no [state] dir: a restart will start from scratch");
    }
    let state = match &store {
        Some(s) => s.load()?.unwrap_or_default(),
        None => State::default(),
    };
    let engine = if state.engine.is_empty() {
        Engine::new(config.engine.clone())
    } else {
        Engine::restore(config.engine.clone(), &state.engine)?
    };
    let mut pipeline = Pipeline {
        engine,
        positions: state.positions,
        outbox: VecDeque::new(),
        next_seq: 0,
        events: Vec::new(),
        dirty: false,
        store,
        uncommitted: Vec::new(),
        waiting: VecDeque::new(),
        metrics: metrics.clone(),
        view: view.clone(),
        suppressed_seen: BTreeMap::new(),
        evicted: Vec::new(),
        skew_warned: Default::default(),
    };
    // Events a previous run emitted but did not see delivered everywhere: again, same ids.
    // The outbox holds lines herald wrote itself: one that does not parse back is a corrupt
    // state file, reported, not delivered half-known.
    let mut redeliver: Vec<(Arc<str>, Arc<ClusterEvent>)> = Vec::new();
    for line in state.outbox {
        match serde_json::from_str::<ClusterEvent>(&line) {
            Ok(e) => redeliver.push((Arc::from(line), Arc::new(e))),
            Err(e) => {
                tracing::error!(error = %e, "an undelivered event in the state file is corrupt; skipped")
            }
        }
    }
    if !redeliver.is_empty() {
        tracing::info!(
            events = redeliver.len(),
            "redelivering events not acknowledged before the restart"
        );
    }
    let fresh = pipeline.enqueue(redeliver);
    dispatch(&mut sinks, fresh).await?;

    let (tx, mut rx) = mpsc::channel::<Input>(INPUTS);
    let stop = Arc::new(AtomicBool::new(false));

    // The HTTP server before the sources: /readyz says 503 until everything is up.
    let ready = Arc::new(AtomicBool::new(false));
    let ingest = config.sources.iter().enumerate().find_map(|(i, (name, s))| match s {
        SourceKind::Http(c) => Some(server::Ingest {
            source: i,
            name: name.clone(),
            context: context(&c.common),
            token: config.server.ingest_token.clone().filter(|t| !t.is_empty()),
            tx: tx.clone(),
        }),
        _ => None,
    });
    let gauges = match config.sinks.values().any(|s| matches!(s.kind, SinkKind::Prometheus(_))) {
        true => Some(Arc::new(sinks::prometheus::StateGauges::register(&metrics.registry)?)),
        false => None,
    };
    let shared = Shared {
        ready: ready.clone(),
        metrics: metrics.clone(),
        gauges,
        view,
        ingest,
        scrape: Arc::new(std::sync::Mutex::new(())),
    };
    let http = serve(&config.server, server::app(shared)).await?;

    let mut inputs = Vec::new();
    let mut source_tasks = Vec::new();
    for (i, (name, source)) in config.sources.iter().enumerate() {
        let start = pipeline.positions.get(name).cloned();
        let context =
            start_source(i, name, source, start, tx.clone(), stop.clone(), &mut source_tasks)?;
        // A push source has nothing waiting to be read: it is always caught up.
        let caught_up = matches!(
            source,
            SourceKind::Http(_)
                | SourceKind::Probe(_)
                | SourceKind::Etcd(_)
                | SourceKind::Zookeeper(_)
        );
        inputs.push(Source {
            name: name.clone(),
            context,
            caught_up,
            metrics: metrics.source(name),
        });
    }
    drop(tx);
    ready.store(true, Ordering::Release);
    tracing::info!(sources = inputs.len(), sinks = sinks.len(), "herald is running");

    tokio::pin!(shutdown);
    let mut last_commit = Instant::now();
    let mut open = true;
    loop {
        let wake = pipeline.wake_in(&inputs, last_commit);
        let first = tokio::select! {
            biased;
            _ = &mut shutdown => break,
            msg = rx.recv(), if open => msg,
            _ = tokio::time::sleep(wake) => None,
        };
        // Every input counts at least 1 towards the batch, so that a commit always comes.
        let mut applied = 0;
        match first {
            Some(input) => {
                applied += input.records().max(1);
                pipeline.apply(input, &mut inputs);
            }
            None if rx.is_closed() && rx.is_empty() => open = false,
            None => {}
        }
        while applied < BATCH {
            let Ok(input) = rx.try_recv() else { break };
            applied += input.records().max(1);
            pipeline.apply(input, &mut inputs);
        }
        if inputs.iter().all(|s| s.caught_up) && rx.is_empty() {
            pipeline.engine.tick(Timestamp::now(), &mut pipeline.events);
            pipeline.evictions();
        }
        pipeline.release(&sinks);
        let due = (pipeline.dirty || pipeline.trimmable(&sinks))
            && last_commit.elapsed() >= COMMIT_INTERVAL;
        if !pipeline.events.is_empty() || due {
            let fresh = pipeline.commit(&sinks)?;
            dispatch(&mut sinks, fresh).await?;
            last_commit = Instant::now();
        }
    }

    tracing::info!("shutting down: stopping sources, delivering in-flight events");
    ready.store(false, Ordering::Release);
    stop.store(true, Ordering::Relaxed);
    drop(rx);
    let fresh = pipeline.commit(&sinks)?;
    dispatch(&mut sinks, fresh).await?;
    for sink in &mut sinks {
        sink.tx = None;
    }
    for sink in &mut sinks {
        let task = std::mem::replace(&mut sink.task, tokio::spawn(async { Ok(()) }));
        match task.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::error!(sink = %sink.name, error = %e, "sink failed while draining")
            }
            Err(e) => tracing::error!(sink = %sink.name, error = %e, "sink task failed"),
        }
    }
    pipeline.dirty = true;
    pipeline.commit(&sinks)?;
    http.handle.graceful_shutdown(Some(Duration::from_secs(5)));
    let _ = http.task.await;
    // Broker sources send their last acknowledgements before their connections close.
    for task in source_tasks {
        let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
    }
    tracing::info!(undelivered = pipeline.outbox.len(), "state persisted; bye");
    Ok(())
}

struct Http {
    handle: axum_server::Handle<std::net::SocketAddr>,
    task: JoinHandle<()>,
}

/// Binds the HTTP server (HTTPS with `tls_cert`/`tls_key`) and serves `app` in a task.
async fn serve(cfg: &crate::config::ServerConfig, app: axum::Router) -> Result<Http, RuntimeError> {
    let listen = |source| RuntimeError::Listen { addr: cfg.listen, source };
    let listener = std::net::TcpListener::bind(cfg.listen).map_err(listen)?;
    listener.set_nonblocking(true).map_err(listen)?;
    let addr = listener.local_addr().map_err(listen)?;
    let handle = axum_server::Handle::new();
    let service = app.into_make_service();
    let task = match (&cfg.tls_cert, &cfg.tls_key) {
        (Some(cert), Some(key)) => {
            let tls = axum_server::tls_rustls::RustlsConfig::from_pem_file(cert, key)
                .await
                .map_err(|source| RuntimeError::Tls { cert: cert.clone(), source })?;
            let server =
                axum_server::from_tcp_rustls(listener, tls).map_err(listen)?.handle(handle.clone());
            tracing::info!(listen = %addr, "HTTPS server listening");
            tokio::spawn(async move {
                if let Err(e) = server.serve(service).await {
                    tracing::error!(error = %e, "HTTP server failed");
                }
            })
        }
        _ => {
            let server = axum_server::from_tcp(listener).map_err(listen)?.handle(handle.clone());
            tracing::info!(listen = %addr, "HTTP server listening");
            tokio::spawn(async move {
                if let Err(e) = server.serve(service).await {
                    tracing::error!(error = %e, "HTTP server failed");
                }
            })
        }
    };
    Ok(Http { handle, task })
}

/// Pollers make their observations themselves; the context only names their cluster.
fn poller_context(cluster: Option<&str>) -> Context {
    Context {
        cluster: cluster.unwrap_or("default").to_string(),
        reporter: "herald".into(),
        format: Default::default(),
    }
}

fn context(c: &sources::Common) -> Context {
    Context {
        cluster: c.cluster.clone().unwrap_or_else(|| "default".into()),
        reporter: c.reporter.clone().unwrap_or_else(|| "unknown".into()),
        format: c.format,
    }
}

/// How an engine outcome is counted in `herald_records_total`.
fn counted(outcome: Outcome) -> RecordOutcome {
    match outcome {
        Outcome::Stale => RecordOutcome::Stale,
        Outcome::Ignored => RecordOutcome::Ignored,
        Outcome::Applied | Outcome::Suppressed => RecordOutcome::Ok,
    }
}

/// The engine task's state between commits.
struct Pipeline {
    engine: Engine,
    positions: BTreeMap<String, Position>,
    /// Events not yet acknowledged by every sink, by outbox sequence number.
    outbox: VecDeque<(u64, Arc<str>)>,
    next_seq: u64,
    /// Emitted since the last commit.
    events: Vec<ClusterEvent>,
    /// Records applied since the last commit.
    dirty: bool,
    store: Option<StateDir>,
    /// Push-source batches applied since the last commit.
    uncommitted: Vec<sources::OnCommit>,
    /// Committed batches waiting for every sink to hold the events produced by then: (outbox
    /// sequence number to wait for, what to do then).
    waiting: VecDeque<(u64, sources::OnCommit)>,
    metrics: Arc<Metrics>,
    view: Arc<std::sync::Mutex<View>>,
    /// The engine's suppressed counts already passed to the metrics.
    suppressed_seen: BTreeMap<(String, EventKind), u64>,
    /// Evicted keys not yet removed from the view.
    evicted: Vec<crate::engine::Evicted>,
    /// Reporters whose clock offset was already reported (once each).
    skew_warned: std::collections::BTreeSet<(String, String)>,
}

impl Pipeline {
    fn apply(&mut self, input: Input, sources: &mut [Source]) {
        match input {
            Input::Lines { source, lines, position, live } => {
                let Some(src) = sources.get(source) else { return };
                for (line, bytes) in lines.iter() {
                    self.observe_line(src, bytes, line, live);
                }
                self.set_position(src, position);
                self.dirty = true;
            }
            Input::Batch { source, lines, live, on_commit, key, redelivery } => {
                let Some(src) = sources.get(source) else { return };
                let position = self.positions.entry(src.name.clone()).or_default();
                let seen = key.is_some_and(|k| position.applied.contains(&k));
                if redelivery && seen {
                    // Applied before a crash, its ack lost: acknowledge, do not apply twice.
                    tracing::info!(source = %src.name, "redelivered message already applied; acknowledged");
                    src.metrics.record(RecordOutcome::Ignored);
                } else {
                    if let Some(k) = key {
                        position.applied.push(k);
                        let excess = position.applied.len().saturating_sub(RECENT_MESSAGES);
                        position.applied.drain(..excess);
                    }
                    for (i, bytes) in lines.iter().enumerate() {
                        self.observe_line(src, bytes, i as u64 + 1, live);
                    }
                }
                self.uncommitted.push(on_commit);
                self.dirty = true;
            }
            Input::TooLong { source, line, len, position } => {
                let Some(src) = sources.get(source) else { return };
                tracing::warn!(source = %src.name, line, len, "decode error: line over the length limit");
                src.metrics.record(RecordOutcome::DecodeError);
                self.set_position(src, position);
                self.dirty = true;
            }
            Input::Observed { source, observations } => {
                let Some(src) = sources.get(source) else { return };
                let now = Timestamp::now();
                for obs in observations {
                    let outcome = self.engine.observe(&obs, obs.at.min(now), &mut self.events);
                    src.metrics.record(counted(outcome));
                }
                self.dirty = true;
            }
            Input::CaughtUp { source, caught_up } => {
                if let Some(src) = sources.get_mut(source) {
                    src.caught_up = caught_up;
                }
            }
            Input::Ended { source, error } => {
                if let Some(src) = sources.get_mut(source) {
                    src.caught_up = true;
                    match error {
                        Some(e) => {
                            tracing::error!(source = %src.name, error = %e, "source stopped")
                        }
                        None => tracing::info!(source = %src.name, "source reached its end"),
                    }
                }
            }
        }
    }

    /// Decodes and observes one line, counting its outcome. `live`: the record arrived in real
    /// time, so it tells the reporter's clock offset.
    fn observe_line(&mut self, src: &Source, bytes: &[u8], line: u64, live: bool) {
        let outcome = match decode::decode_line(bytes, line, &src.context) {
            Ok(Decoded::Observation(mut obs)) => {
                let now = Timestamp::now();
                if live {
                    let offset = now.saturating_sub(obs.at);
                    let seconds = offset.0 as f64 / 1e9;
                    self.metrics.clock_offset(&obs.cluster, &obs.reporter).set(seconds);
                    // Windows run on record time: a clock off by more than W misplaces them.
                    let w = self.engine.params(&obs.cluster).windows.leader;
                    if offset.0.abs() > w.0
                        && self
                            .skew_warned
                            .insert((obs.cluster.to_string(), obs.reporter.to_string()))
                    {
                        tracing::warn!(cluster = %obs.cluster, reporter = %obs.reporter, offset_seconds = seconds, "reporter clock offset is larger than the stability window; windows are unreliable for it");
                    }
                }
                src.metrics.record_time(obs.at);
                // A record from the future would drag engine time past the wall clock.
                obs.at = obs.at.min(now);
                let at = obs.at;
                counted(self.engine.observe(&obs, at, &mut self.events))
            }
            Ok(Decoded::Ignored(_)) => RecordOutcome::Ignored,
            Err(e) => {
                tracing::warn!(source = %src.name, error = %e, "decode error");
                RecordOutcome::DecodeError
            }
        };
        src.metrics.record(outcome);
    }

    fn set_position(&mut self, src: &Source, position: Position) {
        match self.positions.get_mut(&src.name) {
            Some(p) => *p = position,
            None => {
                self.positions.insert(src.name.clone(), position);
            }
        }
    }

    /// Keys the engine forgot after `key_ttl`: they leave the view (and so their series) with
    /// the next commit, after the events emitted before them.
    fn evictions(&mut self) {
        let evicted = self.engine.take_evictions();
        if !evicted.is_empty() {
            self.evicted.extend(evicted);
            self.dirty = true;
        }
    }

    /// How long the engine task may sleep: until the engine's next deadline while every
    /// source is caught up, and no longer than a pending commit may wait.
    fn wake_in(&self, sources: &[Source], last_commit: Instant) -> Duration {
        let mut wake = Duration::from_secs(3600);
        // Delivered events leave the outbox on disk only with a commit: without one, a crash
        // would redeliver them. While some are out, look again within the interval.
        if self.dirty || !self.outbox.is_empty() || !self.waiting.is_empty() {
            wake = wake.min(COMMIT_INTERVAL.saturating_sub(last_commit.elapsed()));
        }
        if sources.iter().all(|s| s.caught_up) {
            if let Some(deadline) = self.engine.next_deadline() {
                let ahead = deadline.saturating_sub(Timestamp::now()).to_std();
                wake = wake.min(ahead);
            }
        }
        wake
    }

    /// Runs the after-commit actions whose events every sink now holds.
    fn release(&mut self, sinks: &[Sink]) {
        let held = Self::held(sinks);
        while self.waiting.front().is_some_and(|(mark, _)| *mark <= held) {
            if let Some((_, f)) = self.waiting.pop_front() {
                f();
            }
        }
    }

    /// The outbox sequence number up to which every sink holds every event.
    fn held(sinks: &[Sink]) -> u64 {
        sinks.iter().map(|s| s.acked.load(Ordering::Acquire)).min().unwrap_or(u64::MAX)
    }

    /// Whether a commit would drop delivered events from the outbox on disk.
    fn trimmable(&self, sinks: &[Sink]) -> bool {
        self.outbox.front().is_some_and(|(seq, _)| *seq <= Self::held(sinks))
    }

    /// Gives events outbox sequence numbers; returns them as deliveries.
    fn enqueue(&mut self, events: Vec<(Arc<str>, Arc<ClusterEvent>)>) -> Vec<Delivery> {
        events
            .into_iter()
            .map(|(line, event)| {
                self.next_seq += 1;
                self.outbox.push_back((self.next_seq, line.clone()));
                Delivery { seq: self.next_seq, line, event }
            })
            .collect()
    }

    /// Persists a consistent cut and returns the new events to deliver.
    fn commit(&mut self, sinks: &[Sink]) -> Result<Vec<Delivery>, RuntimeError> {
        if !self.events.is_empty() || !self.evicted.is_empty() {
            let mut view = self.view.lock().unwrap_or_else(|p| p.into_inner());
            // Counted per commit, not per event: a label lookup per event showed in profiles.
            let mut transitions: BTreeMap<(&str, EventKind), u64> = BTreeMap::new();
            for e in &self.events {
                view.apply(e);
                *transitions.entry((e.cluster.as_str(), e.kind)).or_default() += 1;
            }
            for ((cluster, kind), n) in transitions {
                self.metrics.transitions.with_label_values(&[cluster, kind.as_str()]).inc_by(n);
            }
            for e in self.evicted.drain(..) {
                view.evict(&e);
            }
        }
        for (cluster, kind, n) in self.engine.suppressed_by_kind() {
            let seen = self.suppressed_seen.entry((cluster.to_string(), kind)).or_insert(0);
            if n > *seen {
                self.metrics
                    .suppressed
                    .with_label_values(&[cluster, kind.as_str()])
                    .inc_by(n - *seen);
                *seen = n;
            }
        }
        // One buffer for every line: a fresh String per event grew, and copied, several times.
        let mut buf = Vec::with_capacity(1024);
        let lines: Vec<(Arc<str>, Arc<ClusterEvent>)> = self
            .events
            .drain(..)
            .filter_map(|e| {
                buf.clear();
                serde_json::to_writer(&mut buf, &e).ok()?;
                let line = std::str::from_utf8(&buf).ok()?;
                Some((Arc::from(line), Arc::new(e)))
            })
            .collect();
        let fresh = self.enqueue(lines);
        let held = Self::held(sinks);
        while self.outbox.front().is_some_and(|(seq, _)| *seq <= held) {
            self.outbox.pop_front();
        }
        if let Some(store) = &self.store {
            let state = State {
                engine: self.engine.snapshot(),
                positions: self.positions.clone(),
                outbox: self.outbox.iter().map(|(_, l)| l.to_string()).collect(),
            };
            store.save(&state)?;
        }
        self.dirty = false;
        let mark = self.next_seq;
        for f in self.uncommitted.drain(..) {
            self.waiting.push_back((mark, f));
        }
        self.release(sinks);
        Ok(fresh)
    }
}

async fn dispatch(sinks: &mut [Sink], deliveries: Vec<Delivery>) -> Result<(), RuntimeError> {
    for sink in sinks.iter() {
        if let Some(tx) = &sink.tx {
            let depth = tx.max_capacity() - tx.capacity();
            sink.metrics.queue.set(i64::try_from(depth + deliveries.len()).unwrap_or(i64::MAX));
        }
    }
    for sink in sinks.iter_mut() {
        let Some(tx) = &sink.tx else { continue };
        if sink.when_full == WhenFull::Block {
            // Permits in runs rather than one at a time: a commit's events cross at once.
            for run in deliveries.chunks(tx.max_capacity()) {
                let Ok(permits) = tx.reserve_many(run.len()).await else {
                    return Err(RuntimeError::SinkGone(sink.name.clone()));
                };
                for (permit, d) in permits.zip(run) {
                    permit.send(d.clone());
                }
            }
        }
    }
    for sink in sinks.iter_mut().filter(|s| s.when_full == WhenFull::DropNewest) {
        let Some(tx) = &sink.tx else { continue };
        for d in &deliveries {
            match tx.try_send(d.clone()) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(_)) => {
                    sink.dropped += 1;
                    sink.metrics.dropped.inc();
                    tracing::warn!(sink = %sink.name, dropped = sink.dropped, "queue full: event dropped (when_full = drop_newest)");
                }
                Err(mpsc::error::TrySendError::Closed(_)) => {
                    return Err(RuntimeError::SinkGone(sink.name.clone()));
                }
            }
        }
    }
    Ok(())
}

async fn start_sinks(
    config: &Config,
    metrics: &Metrics,
    view: &Arc<std::sync::Mutex<View>>,
) -> Result<Vec<Sink>, RuntimeError> {
    // The Prometheus sink is the stable view rendered at each scrape, in this process: it has
    // no queue to wait on, so it takes no part in acknowledgements.
    let mut configured: Vec<(String, sinks::SinkConfig)> = config
        .sinks
        .iter()
        .filter(|(_, s)| !matches!(s.kind, SinkKind::Prometheus(_)))
        .map(|(n, s)| (n.clone(), s.clone()))
        .collect();
    if configured.is_empty() {
        // stdout is the default: herald is useful with no broker at all.
        configured.push((
            "stdout".into(),
            sinks::SinkConfig {
                kind: SinkKind::Stdout(Default::default()),
                buffer: Default::default(),
            },
        ));
    }
    let mut out = Vec::new();
    for (name, sink) in configured {
        let (tx, rx) = mpsc::channel(sink.buffer.max_events);
        // What the pipeline reads: up to where this sink holds every event.
        let acked = Arc::new(AtomicU64::new(0));
        let sm = metrics.sink(&name);
        let disk = sink.buffer.kind == sinks::BufferKind::Disk;
        // With a disk buffer the sink is fed by the buffer and acknowledges to it; the
        // pipeline counts an event held once the buffer has it on disk.
        let (rx, ack, buffer) = if disk {
            let dir = match (&sink.buffer.dir, &config.state.dir) {
                (Some(d), _) => d.clone(),
                (None, Some(state)) => state.join("buffers").join(&name),
                // `herald check` refuses this; a config built in code gets the same answer.
                (None, None) => {
                    return Err(RuntimeError::Buffer(crate::disk_buffer::BufferError {
                        path: "buffer.dir".into(),
                        source: std::io::Error::other("no dir and no [state] dir"),
                    }))
                }
            };
            let (to_sink, sink_rx) = mpsc::channel(1024);
            let sink_acked = Arc::new(AtomicU64::new(0));
            let handle = crate::disk_buffer::start(
                &name,
                dir,
                &sink.buffer,
                crate::disk_buffer::Ends {
                    rx,
                    held: acked.clone(),
                    to_sink,
                    sink_acked: sink_acked.clone(),
                },
                sm.clone(),
            )?;
            (sink_rx, sink_acked, Some(handle))
        } else {
            (rx, acked.clone(), None)
        };
        let n = name.clone();
        let m = sm.clone();
        let task = match sink.kind {
            SinkKind::Stdout(_) => {
                tokio::task::spawn_blocking(move || sinks::stdout::run(&n, rx, ack, m))
            }
            SinkKind::File(c) => {
                tokio::task::spawn_blocking(move || sinks::file::run(&n, &c, rx, ack, m))
            }
            SinkKind::Kafka(c) => {
                // Ready means a successful metadata fetch: wait for it before anything is read.
                let connected = sinks::kafka::connect(&name, &c, &sm, ack).await?;
                tokio::spawn(sinks::kafka::run(n, c, connected, rx, m))
            }
            SinkKind::Nats(c) => {
                let connected = sinks::nats::connect(&name, &c).await?;
                tokio::spawn(sinks::nats::run(n, c, connected, rx, ack, m))
            }
            SinkKind::Otlp(c) => {
                let connected =
                    sinks::otlp::connect(&name, &c, metrics, sm.clone(), view.clone()).await?;
                tokio::spawn(sinks::otlp::run(n, connected, rx, ack, m))
            }
            SinkKind::Prometheus(_) => continue,
        };
        let task = match buffer {
            None => task,
            Some(handle) => tokio::spawn(buffered(name.clone(), handle, task)),
        };
        out.push(Sink {
            name,
            tx: Some(tx),
            metrics: sm,
            acked,
            task,
            // A disk buffer applies `when_full` itself, at its size cap.
            when_full: if disk { WhenFull::Block } else { sink.buffer.when_full },
            dropped: 0,
        });
    }
    Ok(out)
}

/// How long a disk-buffered sink may take at shutdown to settle what it was handed; the rest
/// is on disk for the next run, so there is no reason to wait on a broker that is away.
const BUFFERED_DRAIN: Duration = Duration::from_secs(10);

/// Runs a disk-buffered sink to its end: once the pipeline has closed the queue and the
/// buffer has everything on disk, the sink settles what it holds, and the buffer writes down
/// the last acknowledgements.
async fn buffered(
    name: String,
    handle: crate::disk_buffer::Handle,
    mut task: JoinHandle<Result<(), SinkError>>,
) -> Result<(), SinkError> {
    let closing = match tokio::task::spawn_blocking(move || handle.close()).await {
        Ok(c) => Some(c),
        Err(e) => {
            tracing::error!(sink = %name, error = %e, "disk buffer thread failed");
            None
        }
    };
    let result = match tokio::time::timeout(BUFFERED_DRAIN, &mut task).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => Err(SinkError::Broker { name: name.clone(), reason: e.to_string() }),
        Err(_) => {
            tracing::warn!(sink = %name, "sink did not settle in time; its events stay in the disk buffer for the next run");
            task.abort();
            Ok(())
        }
    };
    if let Some(c) = closing {
        let _ = tokio::task::spawn_blocking(move || c.finish()).await;
    }
    result
}

fn start_source(
    index: usize,
    name: &str,
    source: &SourceKind,
    start: Option<Position>,
    tx: mpsc::Sender<Input>,
    stop: Arc<AtomicBool>,
    tasks: &mut Vec<JoinHandle<()>>,
) -> Result<Context, RuntimeError> {
    let ctx = match source {
        SourceKind::File(c) => {
            let (c2, n) = (c.clone(), name.to_string());
            tokio::task::spawn_blocking(move || {
                if let Err(e) = sources::file::tail(&c2, index, start, tx.clone(), stop) {
                    tracing::error!(source = %n, error = %e, "source failed");
                    let _ = tx
                        .blocking_send(Input::Ended { source: index, error: Some(e.to_string()) });
                }
            });
            context(&c.common)
        }
        SourceKind::Stdin(c) => {
            // Not awaited on shutdown: a read from a terminal cannot be interrupted.
            std::thread::spawn(move || sources::stdin::read(index, tx));
            context(&c.common)
        }
        // Its records come through the HTTP server's /ingest.
        SourceKind::Http(c) => context(&c.common),
        SourceKind::Amqp(c) => {
            let task =
                tokio::spawn(sources::amqp::consume(c.clone(), name.to_string(), index, tx, stop));
            tasks.push(task);
            context(&c.common)
        }
        SourceKind::Nats(c) => {
            let task =
                tokio::spawn(sources::nats::consume(c.clone(), name.to_string(), index, tx, stop));
            tasks.push(task);
            context(&c.common)
        }
        SourceKind::Probe(c) => {
            let task =
                tokio::spawn(sources::probe::run(c.clone(), name.to_string(), index, tx, stop));
            tasks.push(task);
            poller_context(c.cluster.as_deref())
        }
        SourceKind::Etcd(c) => {
            let task =
                tokio::spawn(sources::etcd::run(c.clone(), name.to_string(), index, tx, stop));
            tasks.push(task);
            poller_context(c.cluster.as_deref())
        }
        SourceKind::Zookeeper(c) => {
            let task =
                tokio::spawn(sources::zookeeper::run(c.clone(), name.to_string(), index, tx, stop));
            tasks.push(task);
            poller_context(c.cluster.as_deref())
        }
    };
    Ok(ctx)
}
