//! HTTP: `/metrics`, `/healthz`, `/readyz`, `/state`, and the routes sources bring
//! (`POST /ingest` of the HTTP source, [`crate::sources::http`]).
//!
//! The server answers from herald's first moment, before any sink has connected: a broker
//! that is away must not look to an orchestrator like a dead process. `/healthz` says it
//! lives, `/readyz` names what start still waits for ([`Readiness`]), `/metrics` shows it.
//! The sources' routes are bound only once the sinks and the state are up
//! ([`ServerState::routes`]); until then every other path answers 503.
//!
//! What one client can hold is bounded: the connection's header read timeout and header size
//! ([`HEADER_LIMIT`], set where the daemon binds), and here a request timeout and a
//! concurrency limit per endpoint that sheds load with a 503 rather than queueing it. The
//! probes are left out of the limit: an `/ingest` that is saturated must not fail them.

use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use axum::error_handling::HandleErrorLayer;
use std::convert::Infallible;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, Request, State};
use axum::http::{header, StatusCode};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use prometheus::{IntGauge, IntGaugeVec};
use tokio::sync::broadcast;
use tower::ServiceExt;

use crate::model::EventKind;
use crate::telemetry::gauges::StateGauges;
use crate::telemetry::metrics::Metrics;
use crate::telemetry::tap::{Filter, Tap};
use crate::telemetry::view::View;

/// The most a request's line and headers may take (431 beyond). hyper's read buffer is the
/// bound, so it is also the largest piece of a body read at once.
pub const HEADER_LIMIT: usize = 16 * 1024;

/// What the handlers share with the pipeline.
#[derive(Clone)]
pub struct ServerState {
    pub readiness: Arc<Readiness>,
    pub metrics: Arc<Metrics>,
    /// Present when a Prometheus sink is configured.
    pub gauges: Option<Arc<StateGauges>>,
    pub view: Arc<Mutex<View>>,
    /// Scrapes reset and refill the state gauges: one at a time.
    pub scrape: Arc<Mutex<()>>,
    /// The sources' routes, set once the sinks and the state are up.
    pub routes: Arc<OnceLock<Router>>,
    /// The live events of `GET /events`.
    pub tap: Arc<Tap>,
}

/// What the request handlers may take.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// From the headers read to the answer; 408 after.
    pub request_timeout: Duration,
    /// Requests at once per endpoint; one more is answered 503.
    pub max_requests: usize,
}

/// The server's routes; the sources' come in through `shared.routes`.
pub fn app(shared: ServerState, limits: Limits) -> Router {
    let tap_state = shared.clone();
    let probes = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .with_state(shared.clone());
    // axum layers each endpoint on its own, so each gets its own limit: a saturated
    // /ingest leaves /metrics answering.
    let shed = tower::ServiceBuilder::new()
        .layer(HandleErrorLayer::new(|_: tower::BoxError| async { busy() }))
        .load_shed()
        .concurrency_limit(limits.max_requests);
    let work = Router::new()
        .route("/metrics", get(metrics))
        .route("/state", get(state))
        .fallback(sources)
        .with_state(shared)
        .layer(shed);
    let timed = probes.merge(work).layer(tower_http::timeout::TimeoutLayer::with_status_code(
        StatusCode::REQUEST_TIMEOUT,
        limits.request_timeout,
    ));
    // A stream lasts as long as its reader wants: no request timeout, and the tap's own cap
    // on readers instead of the endpoints' limit.
    let live = Router::new().route("/events", get(events)).with_state(tap_state);
    live.merge(timed)
}

/// `GET /events?cluster=C&kind=K`: every event from now on as a server-sent event (`event:`
/// its kind, `id:` its id, `data:` its JSON line). A reader that falls behind gets an
/// `event: dropped` and the end of its stream.
async fn events(
    State(s): State<ServerState>,
    query: Result<Query<Filter>, QueryRejection>,
) -> Response {
    let filter = match query {
        Ok(Query(f)) => f,
        Err(e) => return bad_request(format!("{e}: the filters are cluster and kind")),
    };
    if let Some(kind) = &filter.kind {
        if serde_json::from_value::<EventKind>(serde_json::Value::String(kind.clone())).is_err() {
            return bad_request(format!("unknown kind {kind:?}"));
        }
    }
    let Some(sub) = s.tap.subscribe() else {
        let body = Json(serde_json::json!({ "error": "too many readers of /events at once" }));
        return (StatusCode::SERVICE_UNAVAILABLE, [(header::RETRY_AFTER, "5")], body)
            .into_response();
    };
    // A task of its own takes the reader's events off the broadcast into a short queue: a
    // reader whose socket stops draining stops its response being polled, and it must still
    // be dropped, counted and its place freed. What it had not read ends its stream with the
    // reason.
    let (tx, mut queue) = tokio::sync::mpsc::channel::<SseEvent>(READER_QUEUE);
    let dropped = s.tap.dropped.clone();
    tokio::spawn(async move {
        let mut sub = sub;
        let behind = loop {
            let next = tokio::select! {
                biased;
                next = sub.rx.recv() => next,
                () = sub.closed.cancelled() => return,
            };
            let t = match next {
                Ok(t) => t,
                Err(broadcast::error::RecvError::Lagged(n)) => break n,
                Err(broadcast::error::RecvError::Closed) => return,
            };
            if !filter.wants(&t.event) {
                continue;
            }
            let e = SseEvent::default()
                .event(t.event.kind.as_str())
                .id(t.event.id.as_str())
                .data(&*t.line);
            match tx.try_send(e) {
                Ok(()) => {}
                Err(tokio::sync::mpsc::error::TrySendError::Full(_)) => break READER_QUEUE as u64,
                Err(tokio::sync::mpsc::error::TrySendError::Closed(_)) => return,
            }
        };
        dropped.inc();
        tracing::warn!(behind, "a reader of /events fell behind and was dropped");
        let why = serde_json::json!({
            "dropped": behind,
            "reason": "this reader fell too far behind the events; reconnect",
        });
        // Its place is freed here; the reason goes out once the reader reads again.
        drop(sub);
        let _ = tx.send(SseEvent::default().event("dropped").data(why.to_string())).await;
    });
    let stream = futures_util::stream::poll_fn(move |cx| {
        queue.poll_recv(cx).map(|e| e.map(Ok::<_, Infallible>))
    });
    Sse::new(stream).keep_alive(KeepAlive::default()).into_response()
}

/// Events queued for one reader of `/events` beyond what its socket takes.
const READER_QUEUE: usize = 256;

fn bad_request(why: String) -> Response {
    (StatusCode::BAD_REQUEST, Json(serde_json::json!({ "error": why }))).into_response()
}

fn busy() -> Response {
    let body = Json(serde_json::json!({ "error": "too many requests at once; try again" }));
    (StatusCode::SERVICE_UNAVAILABLE, [(header::RETRY_AFTER, "1")], body).into_response()
}

/// What herald's start still waits for, in start order; empty once everything is up.
pub struct Readiness {
    state: Mutex<Waiting>,
    ready: IntGauge,
    waiting_for: IntGaugeVec,
}

struct Waiting {
    components: Vec<String>,
    stopping: bool,
}

impl Readiness {
    /// Waits for `components` (`sink NAME`, `state`, `sources`), each shown on `/metrics` as
    /// `herald_waiting_for{component}` until it is [`Readiness::up`].
    pub fn new(metrics: &Metrics, components: Vec<String>) -> Readiness {
        let (ready, waiting_for) = metrics.readiness();
        for c in &components {
            waiting_for.with_label_values(&[c]).set(1);
        }
        ready.set(0);
        Readiness { state: Mutex::new(Waiting { components, stopping: false }), ready, waiting_for }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Waiting> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `component` is up; herald is ready once nothing is left.
    pub fn up(&self, component: &str) {
        let mut s = self.lock();
        s.components.retain(|c| c != component);
        let _ = self.waiting_for.remove_label_values(&[component]);
        if s.components.is_empty() && !s.stopping {
            self.ready.set(1);
        }
    }

    /// Shutdown began: not ready again.
    pub fn stopping(&self) {
        self.lock().stopping = true;
        self.ready.set(0);
    }

    /// Why herald is not ready (`None` if it is): what it waits for, or that it stops.
    pub fn not_ready(&self) -> Option<String> {
        let s = self.lock();
        match (s.stopping, s.components.is_empty()) {
            (true, _) => Some("stopping".into()),
            (false, true) => None,
            (false, false) => Some(format!("starting; waiting for: {}", s.components.join(", "))),
        }
    }
}

async fn readyz(State(s): State<ServerState>) -> Response {
    match s.readiness.not_ready() {
        None => (StatusCode::OK, "ready\n").into_response(),
        Some(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n")).into_response(),
    }
}

/// Any other path: the sources' routes once bound; until then, not yet.
async fn sources(State(s): State<ServerState>, request: Request) -> Response {
    match s.routes.get() {
        Some(routes) => {
            let Ok(response) = routes.clone().oneshot(request).await;
            response
        }
        None => {
            let why = s.readiness.not_ready().unwrap_or_else(|| "starting".into());
            let body = Json(serde_json::json!({ "error": why }));
            (StatusCode::SERVICE_UNAVAILABLE, [(header::RETRY_AFTER, "1")], body).into_response()
        }
    }
}

async fn metrics(State(s): State<ServerState>) -> Response {
    let _one_at_a_time = s.scrape.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(g) = &s.gauges {
        let view = s.view.lock().unwrap_or_else(|p| p.into_inner());
        g.set_from(&view);
    }
    let families = s.metrics.registry.gather();
    match prometheus::TextEncoder::new().encode_to_string(&families) {
        Ok(text) => ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "encoding metrics failed");
            (StatusCode::INTERNAL_SERVER_ERROR, "encoding metrics failed\n").into_response()
        }
    }
}

async fn state(State(s): State<ServerState>) -> Response {
    let view = s.view.lock().unwrap_or_else(|p| p.into_inner()).clone();
    Json(view).into_response()
}

#[cfg(test)]
mod tests {
    use axum::body::{to_bytes, Body};
    use axum::routing::post;

    use super::*;

    fn shared(components: &[&str]) -> ServerState {
        let metrics = Arc::new(Metrics::new().unwrap());
        let components = components.iter().map(|c| c.to_string()).collect();
        ServerState {
            readiness: Arc::new(Readiness::new(&metrics, components)),
            metrics,
            gauges: None,
            view: Arc::default(),
            scrape: Arc::default(),
            routes: Arc::default(),
            tap: Arc::new(Tap::new(
                prometheus::IntGauge::new("tap_readers", "test").unwrap(),
                prometheus::IntCounter::new("tap_dropped", "test").unwrap(),
                2,
            )),
        }
    }

    const LIMITS: Limits = Limits { request_timeout: Duration::from_secs(30), max_requests: 1 };

    async fn ask(app: &Router, method: &str, path: &str) -> (StatusCode, String) {
        let request = Request::builder().method(method).uri(path).body(Body::empty()).unwrap();
        let Ok(response) = app.clone().oneshot(request).await;
        let status = response.status();
        let body = to_bytes(response.into_body(), 1 << 20).await.unwrap();
        (status, String::from_utf8_lossy(&body).to_string())
    }

    #[tokio::test]
    async fn readyz_names_what_start_waits_for_in_start_order() {
        let s = shared(&["sink k", "state", "sources"]);
        let app = app(s.clone(), LIMITS);
        let want = "starting; waiting for: sink k, state, sources\n";
        assert_eq!(
            ask(&app, "GET", "/readyz").await,
            (StatusCode::SERVICE_UNAVAILABLE, want.into())
        );
        assert_eq!(ask(&app, "GET", "/healthz").await, (StatusCode::OK, "ok\n".into()));
        let (_, metrics) = ask(&app, "GET", "/metrics").await;
        assert!(metrics.contains("herald_waiting_for{component=\"sink k\"} 1"), "{metrics}");
        assert!(metrics.contains("herald_ready 0"), "{metrics}");
        s.readiness.up("sink k");
        s.readiness.up("state");
        let (_, why) = ask(&app, "GET", "/readyz").await;
        assert_eq!(why, "starting; waiting for: sources\n");
        s.readiness.up("sources");
        assert_eq!(ask(&app, "GET", "/readyz").await, (StatusCode::OK, "ready\n".into()));
        let (_, metrics) = ask(&app, "GET", "/metrics").await;
        assert!(!metrics.contains("herald_waiting_for{"), "{metrics}");
        assert!(metrics.contains("herald_ready 1"), "{metrics}");
        s.readiness.stopping();
        assert_eq!(ask(&app, "GET", "/readyz").await.1, "stopping\n");
    }

    #[tokio::test]
    async fn the_sources_routes_answer_503_until_they_are_bound() {
        let s = shared(&["state"]);
        let app = app(s.clone(), LIMITS);
        let (status, body) = ask(&app, "POST", "/ingest").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(body.contains("waiting for: state"), "{body}");
        let _ = s.routes.set(Router::new().route("/ingest", post(|| async { "taken" })));
        assert_eq!(ask(&app, "POST", "/ingest").await, (StatusCode::OK, "taken".into()));
        assert_eq!(ask(&app, "POST", "/elsewhere").await.0, StatusCode::NOT_FOUND);
    }

    #[tokio::test]
    async fn a_request_over_the_limit_is_shed_and_the_probes_still_answer() {
        let s = shared(&[]);
        let app = app(s.clone(), LIMITS);
        let (entered, release) =
            (Arc::new(tokio::sync::Notify::new()), Arc::new(tokio::sync::Notify::new()));
        let (e, r) = (entered.clone(), release.clone());
        let held = move || async move {
            e.notify_one();
            r.notified().await;
            "done"
        };
        let _ = s.routes.set(Router::new().route("/ingest", post(held)));
        let first = tokio::spawn({
            let app = app.clone();
            async move { ask(&app, "POST", "/ingest").await }
        });
        entered.notified().await;
        let (status, body) = ask(&app, "POST", "/ingest").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
        assert_eq!(ask(&app, "GET", "/healthz").await.0, StatusCode::OK);
        assert_eq!(ask(&app, "GET", "/metrics").await.0, StatusCode::OK, "its own limit");
        release.notify_one();
        assert_eq!(first.await.unwrap(), (StatusCode::OK, "done".into()));
        // Let the next one through at once.
        release.notify_one();
        assert_eq!(ask(&app, "POST", "/ingest").await.0, StatusCode::OK, "room again");
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_that_takes_too_long_gets_408() {
        let s = shared(&[]);
        let app = app(s.clone(), LIMITS);
        let _ = s.routes.set(Router::new().route("/ingest", post(std::future::pending::<()>)));
        assert_eq!(ask(&app, "POST", "/ingest").await.0, StatusCode::REQUEST_TIMEOUT);
    }
}
