//! HTTP: `/metrics`, `/healthz`, `/readyz`, `/state`, `POST /ingest`.
//!
//! `/ingest` takes JSON lines (bearer token, 1 MiB). Every line is decoded before any is
//! accepted: a body with a bad line is refused whole (400, each bad line with its number), so
//! a client never has to work out which half of its request went in. An accepted body is
//! answered only once its records are applied and committed — the HTTP source's end-to-end
//! acknowledgement.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use axum::body::{to_bytes, Body};
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;
use tokio::sync::{mpsc, oneshot};

use crate::decode::{self, Context};
use crate::metrics::Metrics;
use crate::sinks::prometheus::StateGauges;
use crate::sources::Input;
use crate::view::View;

/// The body limit of `/ingest`.
pub const INGEST_LIMIT: usize = 1 << 20;

/// What the handlers share with the pipeline.
#[derive(Clone)]
pub struct Shared {
    pub ready: Arc<AtomicBool>,
    pub metrics: Arc<Metrics>,
    /// Present when a Prometheus sink is configured.
    pub gauges: Option<Arc<StateGauges>>,
    pub view: Arc<Mutex<View>>,
    pub ingest: Option<Ingest>,
    /// Scrapes reset and refill the state gauges: one at a time.
    pub scrape: Arc<Mutex<()>>,
}

/// The HTTP source.
#[derive(Clone)]
pub struct Ingest {
    pub source: usize,
    pub name: String,
    pub context: Context,
    pub token: Option<String>,
    pub tx: mpsc::Sender<Input>,
}

pub fn app(shared: Shared) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/state", get(state))
        .route("/ingest", post(ingest))
        .with_state(shared)
}

async fn readyz(State(s): State<Shared>) -> Response {
    if s.ready.load(Ordering::Acquire) {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "starting\n").into_response()
    }
}

async fn metrics(State(s): State<Shared>) -> Response {
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

async fn state(State(s): State<Shared>) -> Response {
    let view = s.view.lock().unwrap_or_else(|p| p.into_inner()).clone();
    Json(view).into_response()
}

fn refuse(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({ "error": message }))).into_response()
}

async fn ingest(State(s): State<Shared>, headers: HeaderMap, body: Body) -> Response {
    let Some(ingest) = s.ingest else {
        return refuse(StatusCode::NOT_FOUND, "no http source is configured");
    };
    if let Some(token) = &ingest.token {
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        // Same cost whatever the token's prefix: do not leak it byte by byte.
        let ok = given.is_some_and(|g| {
            g.len() == token.len()
                && g.bytes().zip(token.bytes()).fold(0, |acc, (a, b)| acc | (a ^ b)) == 0
        });
        if !ok {
            return refuse(
                StatusCode::UNAUTHORIZED,
                "missing or wrong bearer token (Authorization: Bearer …)",
            );
        }
    }
    let bytes = match to_bytes(body, INGEST_LIMIT).await {
        Ok(b) => b,
        Err(_) => {
            return refuse(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body over the 1 MiB limit: send fewer lines per request",
            )
        }
    };
    let mut lines = Vec::new();
    let mut errors = Vec::new();
    for (i, line) in bytes.split(|b| *b == b'\n').enumerate() {
        if crate::lines::is_blank(line) {
            continue;
        }
        if let Err(e) = decode::decode_line(line, i as u64 + 1, &ingest.context) {
            errors.push(json!({ "line": e.line, "error": e.reason.to_string() }));
            s.metrics.record(&ingest.name, crate::metrics::RecordOutcome::DecodeError);
            continue;
        }
        lines.push(line.to_vec());
    }
    if !errors.is_empty() {
        let body = json!({ "error": "bad lines; nothing was accepted", "lines": errors });
        return (StatusCode::BAD_REQUEST, Json(body)).into_response();
    }
    let accepted = lines.len();
    let (done, committed) = oneshot::channel();
    let on_commit = Box::new(move || {
        let _ = done.send(());
    });
    let batch = Input::Batch {
        source: ingest.source,
        lines,
        live: true,
        on_commit,
        key: None,
        redelivery: false,
    };
    if ingest.tx.send(batch).await.is_err() {
        return refuse(StatusCode::SERVICE_UNAVAILABLE, "herald is shutting down");
    }
    match committed.await {
        Ok(()) => (StatusCode::OK, Json(json!({ "accepted": accepted }))).into_response(),
        Err(_) => refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            "herald stopped before the records were committed",
        ),
    }
}
