//! `herald run`: the wiring. It builds the sinks and sources from the config through their
//! registries and starts everything in the start order of DESIGN §1 — the one module that
//! knows them all.
//!
//! Start order: the HTTP server first, with only its probes and `/metrics` (a broker that is
//! away must not make herald look dead); then the sinks (each ready), then the engine state
//! restored and its undelivered events handed to the sinks again (an edge, whose sinks are
//! raw, restores only its sources' positions: it runs no engine), then the sources' routes
//! and the sources. `/readyz` names what is still waited for. A signal during start stops
//! herald at once.
//! Stop order: the sources, then the engine task's last commit and the sinks drained, then
//! the final commit, then the server.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::config::{Config, ServerConfig};
use crate::pipeline::edge::EdgeTask;
use crate::pipeline::fanout::{Fanout, Full, SinkQueue};
use crate::pipeline::run::EngineTask;
use crate::pipeline::{commit::Store, Acked, Clock, Forward, Input, PipelineError, Shutdown};
use crate::server::{self, Limits, Readiness, ServerState};
use crate::sinks::buffer::{disk, BufferKind, WhenFull};
use crate::sinks::{SinkConfig, SinkContext, SinkError, SinkKind, SinkTask};
use crate::sources::SourceContext;
use crate::telemetry::gauges::StateGauges;
use crate::telemetry::metrics::Metrics;
use crate::telemetry::tap::{self, Tap};
use crate::telemetry::view::{SharedView, View};

/// Inputs waiting for the engine task. A file source's input is one read's lines, so this
/// bounds memory to some megabytes while keeping the reader a read ahead.
const INPUTS: usize = 64;
/// How long stopping sources may take (broker sources send their last acknowledgements).
const SOURCES_STOP: Duration = Duration::from_secs(10);
/// How long a disk-buffered sink may take at shutdown to settle what it was handed; the rest
/// is on disk for the next run, so there is no reason to wait on a broker that is away.
const BUFFERED_DRAIN: Duration = Duration::from_secs(10);
/// How long requests in progress may take to finish once the server stops.
const SERVER_STOP: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Pipeline(#[from] PipelineError),
    #[error(transparent)]
    Sink(#[from] SinkError),
    #[error("cannot listen on {addr}: {source}")]
    Listen { addr: std::net::SocketAddr, source: std::io::Error },
    #[error("TLS certificate {cert} or its key: {source}")]
    Tls { cert: std::path::PathBuf, source: std::io::Error },
    #[error(transparent)]
    Buffer(#[from] disk::BufferError),
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
}

/// A started sink: its task, for shutdown to wait on.
struct Running {
    name: String,
    task: SinkTask,
}

/// What runs between the sources and the sinks: the engine, or an edge's forwarding
/// (DESIGN §10), which has no engine.
enum Task {
    // One per process: boxed so that the enum is as small as the edge.
    Engine(Box<EngineTask>),
    Edge(EdgeTask),
}

impl Task {
    fn position(&self, name: &str) -> Option<crate::state::Position> {
        match self {
            Task::Engine(t) => t.position(name),
            Task::Edge(t) => t.position(name),
        }
    }

    fn add_source(&mut self, name: &str, context: crate::decode::Context, pushes: bool) -> usize {
        match self {
            Task::Engine(t) => t.add_source(name, context, pushes),
            Task::Edge(t) => t.add_source(name, context),
        }
    }

    fn sinks(&self) -> usize {
        match self {
            Task::Engine(t) => t.sinks(),
            Task::Edge(t) => t.sinks(),
        }
    }

    async fn run(
        &mut self,
        rx: mpsc::Receiver<Input>,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), PipelineError> {
        match self {
            Task::Engine(t) => t.run(rx, shutdown).await,
            Task::Edge(t) => t.run(rx, shutdown).await,
        }
    }

    async fn drain(&mut self) -> Result<(), PipelineError> {
        match self {
            Task::Engine(t) => t.drain().await,
            Task::Edge(t) => t.drain().await,
        }
    }

    async fn finish(&mut self) -> Result<usize, PipelineError> {
        match self {
            Task::Engine(t) => t.finish().await,
            Task::Edge(t) => t.finish().await,
        }
    }
}

/// Everything started: what the run and the stop need.
struct Started {
    task: Task,
    rx: mpsc::Receiver<Input>,
    sinks: Vec<Running>,
    sources: Shutdown,
}

/// Runs until `shutdown` completes, then stops the sources, delivers what is in flight,
/// persists the state and returns.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> Result<(), DaemonError> {
    // One process-wide TLS crypto provider for the server and every client (ring: no C
    // toolchain step beyond what ring needs); a second install is a harmless error.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let clock = Clock::system();
    let metrics = Arc::new(Metrics::with_clock(clock)?);
    let view: SharedView = Arc::new(std::sync::Mutex::new(View::default()));
    let sinks = queue_fed(&config);
    let mut components: Vec<String> = sinks.iter().map(|(n, _)| format!("sink {n}")).collect();
    components.extend(["state".to_string(), "sources".to_string()]);
    let gauges = match config.sinks.values().any(|s| s.kind.scraped()) {
        true => Some(Arc::new(StateGauges::register(&metrics.registry)?)),
        false => None,
    };
    metrics.set_severities(config.severities.clone());
    let tap = Arc::new(Tap::new(
        metrics.tap_readers.clone(),
        metrics.tap_dropped.clone(),
        tap::MAX_SUBSCRIBERS,
    ));
    let shared = ServerState {
        readiness: Arc::new(Readiness::new(&metrics, components)),
        tap,
        metrics,
        gauges,
        view,
        scrape: Arc::default(),
        routes: Arc::default(),
    };
    let limits = Limits {
        request_timeout: config.server.request_timeout,
        max_requests: config.server.max_requests as usize,
    };
    let http = serve(&config.server, server::app(shared.clone(), limits)).await?;

    // An orchestrator stops a herald that never gets ready: a signal must not wait for a
    // broker that is away.
    tokio::pin!(shutdown);
    let started = tokio::select! {
        started = start(&config, sinks, &shared, clock) => started?,
        () = &mut shutdown => {
            tracing::info!("stopped while starting");
            http.stop().await;
            return Ok(());
        }
    };
    let Started { mut task, rx, sinks, sources } = started;
    tracing::info!(sources = config.sources.len(), sinks = task.sinks(), "herald is running");

    task.run(rx, &mut shutdown).await?;

    tracing::info!("shutting down: stopping sources, delivering in-flight events");
    shared.readiness.stopping();
    shared.tap.close();
    // Told now, waited for last: a broker source keeps its connection until the
    // acknowledgements of what is committed below are out.
    sources.token().stop();
    task.drain().await?;
    for sink in sinks {
        match sink.task.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::error!(sink = %sink.name, error = %e, "sink failed while draining")
            }
            Err(e) => tracing::error!(sink = %sink.name, error = %e, "sink task failed"),
        }
    }
    let undelivered = task.finish().await?;
    http.stop().await;
    // Broker sources send their last acknowledgements before their connections close.
    sources.stop(SOURCES_STOP).await;
    tracing::info!(undelivered, "state persisted; bye");
    Ok(())
}

/// Everything after the server, in start order: the sinks, the state, the sources' routes and
/// the sources. Each marks itself up in `shared.readiness`.
async fn start(
    config: &Config,
    sinks: Vec<(String, SinkConfig)>,
    shared: &ServerState,
    clock: Clock,
) -> Result<Started, DaemonError> {
    let (metrics, view, readiness) = (&shared.metrics, &shared.view, &shared.readiness);
    let edge = sinks.iter().any(|(_, s)| s.kind.raw());
    let (queues, raw, running) = match edge {
        true => {
            let (raw, running) = start_raw_sinks(sinks, metrics, view, readiness).await?;
            (Vec::new(), raw, running)
        }
        false => {
            let (queues, running) = start_sinks(config, sinks, metrics, view, readiness).await?;
            (queues, Vec::new(), running)
        }
    };
    let store = match &config.state.dir {
        // Opening reads nothing but the store's format; a migration writes once.
        Some(dir) => {
            let (dir, engine) = (dir.clone(), config.engine.clone());
            tokio::task::spawn_blocking(move || Store::open(&dir, &engine))
                .await
                .map_err(|e| PipelineError::Commit(e.to_string()))??
        }
        None => {
            tracing::warn!("no [state] dir: a restart will start from scratch");
            Store::none()
        }
    };
    let mut task = if edge {
        let mut task = EdgeTask::restore(store, metrics.clone())?;
        task.connect(Fanout::new(raw));
        Task::Edge(task)
    } else {
        let mut task = EngineTask::restore(
            config.engine.clone(),
            store,
            metrics.clone(),
            view.clone(),
            clock,
        )?;
        task.connect(Fanout::new(queues)).await?;
        task.tap(shared.tap.clone());
        Task::Engine(Box::new(task))
    };
    readiness.up("state");

    let (tx, rx) = mpsc::channel::<Input>(INPUTS);
    let mut sources = Shutdown::new();
    let mut contexts = Vec::new();
    let mut routes = axum::Router::new();
    let owned = crate::pipeline::Owned::default();
    for (name, kind) in &config.sources {
        let source = kind.source();
        let index = task.add_source(name, source.context(), source.pushes());
        #[cfg(feature = "kafka")]
        if let (crate::sources::SourceKind::Kafka(kafka), Task::Engine(engine)) = (kind, &mut task)
        {
            let kafka = kafka.clone();
            let exactly_once = kafka.processing == crate::sources::kafka::Processing::ExactlyOnce;
            let k = kafka.clone();
            let changelog = tokio::task::spawn_blocking(move || k.changelog())
                .await
                .map_err(|e| PipelineError::Commit(e.to_string()))?
                .map_err(PipelineError::from)?;
            let changelog = std::sync::Arc::new(changelog);
            if exactly_once {
                let records = event_records(config);
                let (o, m) = (owned.clone(), metrics.clone());
                let txn = tokio::task::spawn_blocking(move || kafka.transactor(records, o, m))
                    .await
                    .map_err(|e| PipelineError::Commit(e.to_string()))?
                    .map_err(|e| PipelineError::Commit(e.to_string()))?;
                let mode = crate::pipeline::appender::Mode::ExactlyOnce(Arc::new(txn));
                engine.set_grouped(name, changelog, owned.clone(), mode);
            } else {
                engine.set_changelog(name, changelog, owned.clone());
            }
        }
        let ctx = SourceContext {
            index,
            name: name.clone(),
            tx: tx.clone(),
            stop: sources.token(),
            start: task.position(name),
            clock,
            metrics: metrics.clone(),
            owned: owned.clone(),
        };
        if let Some(r) = source.routes(&ctx, config.server.ingest_token.as_deref()) {
            routes = routes.merge(r);
        }
        contexts.push((kind, ctx));
    }
    // Set once: nothing else sets it.
    let _ = shared.routes.set(routes);
    for (kind, ctx) in contexts {
        kind.source().start(ctx, &mut sources);
    }
    drop(tx);
    readiness.up("sources");
    Ok(Started { task, rx, sinks: running, sources })
}

struct Http {
    handle: axum_server::Handle<std::net::SocketAddr>,
    task: JoinHandle<()>,
}

impl Http {
    /// Stops accepting, lets requests in progress finish for a moment, and waits.
    async fn stop(self) {
        self.handle.graceful_shutdown(Some(SERVER_STOP));
        let _ = self.task.await;
    }
}

/// Binds the HTTP server (HTTPS with `tls_cert`/`tls_key`) and serves `app` in a task.
async fn serve(cfg: &ServerConfig, app: axum::Router) -> Result<Http, DaemonError> {
    let listen = |source| DaemonError::Listen { addr: cfg.listen, source };
    let listener = std::net::TcpListener::bind(cfg.listen).map_err(listen)?;
    listener.set_nonblocking(true).map_err(listen)?;
    let addr = listener.local_addr().map_err(listen)?;
    let handle = axum_server::Handle::new();
    let service = app.into_make_service();
    let task = match (&cfg.tls_cert, &cfg.tls_key) {
        (Some(cert), Some(key)) => {
            let tls = axum_server::tls_rustls::RustlsConfig::from_pem_file(cert, key)
                .await
                .map_err(|source| DaemonError::Tls { cert: cert.clone(), source })?;
            // HTTP/1.1 only, so ALPN must not offer h2.
            let mut inner = (*tls.get_inner()).clone();
            inner.alpn_protocols = vec![b"http/1.1".to_vec()];
            tls.reload_from_config(Arc::new(inner));
            let server = axum_server::from_tcp_rustls(listener, tls).map_err(listen)?;
            let server = bounded(server, cfg).handle(handle.clone());
            tracing::info!(listen = %addr, "HTTPS server listening");
            tokio::spawn(async move {
                if let Err(e) = server.serve(service).await {
                    tracing::error!(error = %e, "HTTP server failed");
                }
            })
        }
        _ => {
            let server = axum_server::from_tcp(listener).map_err(listen)?;
            let server = bounded(server, cfg).handle(handle.clone());
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

/// What a connection may hold before a handler sees it: its headers within `header_timeout`
/// (an idle connection is closed after as long) and [`server::HEADER_LIMIT`]. HTTP/1.1 only:
/// its clients (probes, scrapers, `/ingest` posters) need no more, and hyper's
/// protocol detection would wait on a silent connection without a timeout.
fn bounded<A: axum_server::Address, Acc>(
    mut server: axum_server::Server<A, Acc>,
    cfg: &ServerConfig,
) -> axum_server::Server<A, Acc> {
    server
        .http_builder()
        .http1()
        .header_read_timeout(cfg.header_timeout)
        .max_buf_size(server::HEADER_LIMIT);
    server.http1_only()
}

/// The sinks fed through a queue, by name: the configured ones but the scraped, or stdout
/// when none is configured.
fn queue_fed(config: &Config) -> Vec<(String, SinkConfig)> {
    // Exactly once, the kafka sinks are written in the source's transactions.
    let transactional = exactly_once(config) && config.sinks.values().any(|s| kafka(&s.kind));
    let mut configured: Vec<(String, SinkConfig)> = config
        .sinks
        .iter()
        .filter(|(_, s)| !s.kind.scraped())
        .filter(|(_, s)| !(transactional && kafka(&s.kind)))
        .map(|(n, s)| (n.clone(), s.clone()))
        .collect();
    if configured.is_empty() && !transactional {
        // stdout is the default: herald is useful with no broker at all.
        configured.push((
            "stdout".into(),
            SinkConfig { kind: SinkKind::Stdout(Default::default()), buffer: Default::default() },
        ));
    }
    configured
}

fn kafka(kind: &SinkKind) -> bool {
    #[cfg(feature = "kafka")]
    {
        matches!(kind, SinkKind::Kafka(_))
    }
    #[cfg(not(feature = "kafka"))]
    {
        let _ = kind;
        false
    }
}

/// Whether a grouped kafka source runs exactly once: its kafka sinks are then written in its
/// transactions, not fed through a queue.
fn exactly_once(config: &Config) -> bool {
    #[cfg(feature = "kafka")]
    {
        use crate::sources::kafka::Processing;
        config.sources.values().any(
            |s| matches!(s, crate::sources::SourceKind::Kafka(k) if k.processing == Processing::ExactlyOnce),
        )
    }
    #[cfg(not(feature = "kafka"))]
    {
        let _ = config;
        false
    }
}

/// Exactly once: an event's records for the kafka sinks, as each sink writes them.
#[cfg(feature = "kafka")]
fn event_records(config: &Config) -> crate::pipeline::transaction::EventRecords {
    use crate::pipeline::transaction::EventRecord;
    let sinks: Vec<_> = config
        .sinks
        .values()
        .filter_map(|s| match &s.kind {
            SinkKind::Kafka(k) => {
                Some((Arc::<str>::from(k.topic.as_deref().unwrap_or("")), k.transactional()))
            }
            _ => None,
        })
        .collect();
    let severities = config.severities.clone();
    Box::new(move |event, json| {
        let record = |(topic, sink): &(Arc<str>, crate::sinks::kafka::Transactional)| {
            let (key, body, headers) = sink.record(event, json, &severities);
            EventRecord {
                topic: topic.clone(),
                key: key.to_string(),
                body: body.into_owned(),
                headers,
            }
        };
        sinks.iter().map(record).collect()
    })
}

/// Starts every queue-fed sink, each ready before the next.
async fn start_sinks(
    config: &Config,
    configured: Vec<(String, SinkConfig)>,
    metrics: &Arc<Metrics>,
    view: &SharedView,
    readiness: &Readiness,
) -> Result<(Vec<SinkQueue>, Vec<Running>), DaemonError> {
    let (mut queues, mut running) = (Vec::new(), Vec::new());
    let severities = Arc::new(config.severities.clone());
    for (name, sink) in configured {
        let (tx, rx) = mpsc::channel(sink.buffer.max_events);
        // What the pipeline reads: up to where this sink holds every event.
        let acked = Acked::default();
        let sm = metrics.sink(&name);
        let disk = sink.buffer.kind == BufferKind::Disk;
        let ctx = |acked: Acked| SinkContext {
            name: name.clone(),
            metrics: sm.clone(),
            acked,
            telemetry: metrics.clone(),
            view: view.clone(),
            severities: severities.clone(),
        };
        let task = if disk {
            // The sink is fed by the buffer and acknowledges to it; the pipeline counts an
            // event held once the buffer has it on disk.
            let dir = match (&sink.buffer.dir, &config.state.dir) {
                (Some(d), _) => d.clone(),
                (None, Some(state)) => state.join("buffers").join(&name),
                // `herald check` refuses this; a config built in code gets the same answer.
                (None, None) => {
                    return Err(DaemonError::Buffer(disk::BufferError {
                        path: "buffer.dir".into(),
                        source: std::io::Error::other("no dir and no [state] dir"),
                    }))
                }
            };
            let (to_sink, sink_rx) = mpsc::channel(1024);
            let sink_acked = Acked::default();
            let ends =
                disk::Queues { rx, held: acked.clone(), to_sink, sink_acked: sink_acked.clone() };
            let handle = disk::start(&name, dir, &sink.buffer, ends, sm.clone())?;
            let task = sink.kind.start(ctx(sink_acked), sink_rx).await?;
            task.map(|t| tokio::spawn(buffered(name.clone(), handle, t)))
        } else {
            sink.kind.start(ctx(acked.clone()), rx).await?
        };
        readiness.up(&format!("sink {name}"));
        let Some(task) = task else { continue };
        queues.push(SinkQueue {
            name: name.clone(),
            tx: Some(tx),
            metrics: sm.clone(),
            acked,
            // A disk buffer applies `when_full` itself, at its size cap.
            when_full: match (disk, sink.buffer.when_full) {
                (false, WhenFull::DropNewest) => Full::DropNewest,
                _ => Full::Block,
            },
        });
        running.push(Running { name, task });
    }
    Ok((queues, running))
}

/// Starts an edge's raw sinks (`herald check` refuses any other sink beside them, and a
/// disk buffer in front of them), each ready before the next.
#[cfg(feature = "kafka")]
async fn start_raw_sinks(
    configured: Vec<(String, SinkConfig)>,
    metrics: &Arc<Metrics>,
    view: &SharedView,
    readiness: &Readiness,
) -> Result<(Vec<SinkQueue<Forward>>, Vec<Running>), DaemonError> {
    let (mut queues, mut running) = (Vec::new(), Vec::new());
    for (name, sink) in configured {
        let SinkKind::Kafka(kafka) = &sink.kind else { continue };
        let (tx, rx) = mpsc::channel(sink.buffer.max_events);
        let acked = Acked::default();
        let sm = metrics.sink(&name);
        let ctx = SinkContext {
            name: name.clone(),
            metrics: sm.clone(),
            acked: acked.clone(),
            telemetry: metrics.clone(),
            view: view.clone(),
            // An edge's raw records carry no event, hence no severity.
            severities: Arc::default(),
        };
        let task = kafka.start_raw(ctx, rx).await?;
        readiness.up(&format!("sink {name}"));
        let when_full = match sink.buffer.when_full {
            WhenFull::DropNewest => Full::DropNewest,
            _ => Full::Block,
        };
        queues.push(SinkQueue { name: name.clone(), tx: Some(tx), metrics: sm, acked, when_full });
        running.push(Running { name, task });
    }
    Ok((queues, running))
}

/// Without Kafka there is no raw sink, so no edge.
#[cfg(not(feature = "kafka"))]
async fn start_raw_sinks(
    _: Vec<(String, SinkConfig)>,
    _: &Arc<Metrics>,
    _: &SharedView,
    _: &Readiness,
) -> Result<(Vec<SinkQueue<Forward>>, Vec<Running>), DaemonError> {
    Ok((Vec::new(), Vec::new()))
}

/// Runs a disk-buffered sink to its end: once the pipeline has closed the queue and the
/// buffer has everything on disk, the sink settles what it holds, and the buffer writes down
/// the last acknowledgements.
async fn buffered(name: String, handle: disk::Handle, mut task: SinkTask) -> Result<(), SinkError> {
    let closing = match tokio::task::spawn_blocking(move || handle.close()).await {
        Ok(c) => Some(c),
        Err(e) => {
            tracing::error!(sink = %name, error = %e, "disk buffer thread failed");
            None
        }
    };
    let result = match tokio::time::timeout(BUFFERED_DRAIN, &mut task).await {
        Ok(Ok(r)) => r,
        Ok(Err(source)) => Err(SinkError::Task { name: name.clone(), source }),
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
