//! HTTP: `/metrics`, `/healthz`, `/readyz`, `/state`, and the routes sources bring
//! (`POST /ingest` of the HTTP source, [`crate::sources::http`]).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};

use crate::telemetry::gauges::StateGauges;
use crate::telemetry::metrics::Metrics;
use crate::telemetry::view::View;

/// What the handlers share with the pipeline.
#[derive(Clone)]
pub struct ServerState {
    pub ready: Arc<AtomicBool>,
    pub metrics: Arc<Metrics>,
    /// Present when a Prometheus sink is configured.
    pub gauges: Option<Arc<StateGauges>>,
    pub view: Arc<Mutex<View>>,
    /// Scrapes reset and refill the state gauges: one at a time.
    pub scrape: Arc<Mutex<()>>,
}

/// The server's routes, with `extra` (the sources' routes) merged in.
pub fn app(shared: ServerState, extra: Router) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/state", get(state))
        .with_state(shared)
        .merge(extra)
}

async fn readyz(State(s): State<ServerState>) -> Response {
    if s.ready.load(Ordering::Acquire) {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "starting\n").into_response()
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
