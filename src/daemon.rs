//! `herald run`: the wiring. It builds the sinks and sources from the config through their
//! registries and starts everything in the start order of DESIGN §1 — the one module that
//! knows them all.
//!
//! Start order: the sinks first (each ready), then the engine state restored and its
//! undelivered events handed to the sinks again, then the HTTP server, then the sources.
//! Stop order: the sources, then the engine task's last commit and the sinks drained, then
//! the final commit, then the server.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::config::{Config, ServerConfig};
use crate::pipeline::fanout::{Fanout, Full, SinkQueue};
use crate::pipeline::run::EngineTask;
use crate::pipeline::{commit::Store, Acked, Clock, Input, PipelineError, Shutdown};
use crate::server::{self, ServerState};
use crate::sinks::buffer::{disk, BufferKind, WhenFull};
use crate::sinks::{SinkConfig, SinkContext, SinkError, SinkKind, SinkTask};
use crate::sources::SourceContext;
use crate::state::StateDir;
use crate::telemetry::gauges::StateGauges;
use crate::telemetry::metrics::Metrics;
use crate::telemetry::view::{SharedView, View};

/// Inputs waiting for the engine task. A file source's input is one read's lines, so this
/// bounds memory to some megabytes while keeping the reader a read ahead.
const INPUTS: usize = 64;
/// How long stopping sources may take (broker sources send their last acknowledgements).
const SOURCES_STOP: Duration = Duration::from_secs(10);
/// How long a disk-buffered sink may take at shutdown to settle what it was handed; the rest
/// is on disk for the next run, so there is no reason to wait on a broker that is away.
const BUFFERED_DRAIN: Duration = Duration::from_secs(10);

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

/// Runs until `shutdown` completes, then stops the sources, delivers what is in flight,
/// persists the state and returns.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> Result<(), DaemonError> {
    // One process-wide TLS crypto provider for the server and every client (ring: no C
    // toolchain step beyond what ring needs); a second install is a harmless error.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let clock = Clock::system();
    let metrics = Arc::new(Metrics::with_clock(clock)?);
    let view: SharedView = Arc::new(std::sync::Mutex::new(View::default()));
    let (queues, running) = start_sinks(&config, &metrics, &view).await?;
    let store = Store::new(config.state.dir.clone().map(StateDir::new));
    if !store.is_some() {
        tracing::warn!("no [state] dir: a restart will start from scratch");
    }
    let mut task =
        EngineTask::restore(config.engine.clone(), store, metrics.clone(), view.clone(), clock)?;
    task.connect(Fanout::new(queues)).await?;

    let (tx, rx) = mpsc::channel::<Input>(INPUTS);
    let mut sources = Shutdown::new();
    let mut contexts = Vec::new();
    let mut routes = axum::Router::new();
    for (name, kind) in &config.sources {
        let source = kind.source();
        let index = task.add_source(name, source.context(), source.pushes());
        let ctx = SourceContext {
            index,
            name: name.clone(),
            tx: tx.clone(),
            stop: sources.token(),
            start: task.position(name),
            clock,
            metrics: metrics.clone(),
        };
        if let Some(r) = source.routes(&ctx, config.server.ingest_token.as_deref()) {
            routes = routes.merge(r);
        }
        contexts.push((kind, ctx));
    }

    // The HTTP server before the sources: /readyz says 503 until everything is up.
    let ready = Arc::new(AtomicBool::new(false));
    let gauges = match config.sinks.values().any(|s| s.kind.scraped()) {
        true => Some(Arc::new(StateGauges::register(&metrics.registry)?)),
        false => None,
    };
    let shared = ServerState {
        ready: ready.clone(),
        metrics: metrics.clone(),
        gauges,
        view,
        scrape: Arc::new(std::sync::Mutex::new(())),
    };
    let http = serve(&config.server, server::app(shared, routes)).await?;

    for (kind, ctx) in contexts {
        kind.source().start(ctx, &mut sources);
    }
    drop(tx);
    ready.store(true, Ordering::Release);
    tracing::info!(sources = config.sources.len(), sinks = task.sinks(), "herald is running");

    task.run(rx, shutdown).await?;

    tracing::info!("shutting down: stopping sources, delivering in-flight events");
    ready.store(false, Ordering::Release);
    // Told now, waited for last: a broker source keeps its connection until the
    // acknowledgements of what is committed below are out.
    sources.token().stop();
    task.drain().await?;
    for sink in running {
        match sink.task.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::error!(sink = %sink.name, error = %e, "sink failed while draining")
            }
            Err(e) => tracing::error!(sink = %sink.name, error = %e, "sink task failed"),
        }
    }
    let undelivered = task.finish().await?;
    http.handle.graceful_shutdown(Some(Duration::from_secs(5)));
    let _ = http.task.await;
    // Broker sources send their last acknowledgements before their connections close.
    sources.stop(SOURCES_STOP).await;
    tracing::info!(undelivered, "state persisted; bye");
    Ok(())
}

struct Http {
    handle: axum_server::Handle<std::net::SocketAddr>,
    task: JoinHandle<()>,
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

/// Starts every queue-fed sink, each ready before the next; stdout when none is configured.
async fn start_sinks(
    config: &Config,
    metrics: &Arc<Metrics>,
    view: &SharedView,
) -> Result<(Vec<SinkQueue>, Vec<Running>), DaemonError> {
    let mut configured: Vec<(String, SinkConfig)> = config
        .sinks
        .iter()
        .filter(|(_, s)| !s.kind.scraped())
        .map(|(n, s)| (n.clone(), s.clone()))
        .collect();
    if configured.is_empty() {
        // stdout is the default: herald is useful with no broker at all.
        configured.push((
            "stdout".into(),
            SinkConfig { kind: SinkKind::Stdout(Default::default()), buffer: Default::default() },
        ));
    }
    let (mut queues, mut running) = (Vec::new(), Vec::new());
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
