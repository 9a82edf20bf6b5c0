//! The HTTP source: JSON lines POSTed to a path of herald's server (`/ingest` unless `path`
//! says otherwise; bearer token, 1 MiB limit).
//!
//! Every line is decoded before any is accepted: a body with a bad line is refused whole
//! (400, each bad line with its number), so a client never has to work out which half of
//! its request went in. An accepted body is answered only once its records are applied and
//! committed — the HTTP source's end-to-end acknowledgement.

use serde::Deserialize;

use super::Common;
use crate::support::problems::Problems;

#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct Config {
    /// `cluster`, `reporter`, `format`: read apart, see [`Common`].
    #[serde(skip)]
    pub common: Common,
    /// Where records are POSTed on herald's server (default `/ingest`); each http source has
    /// its own.
    #[serde(default = "default_path")]
    pub path: String,
}

fn default_path() -> String {
    "/ingest".into()
}

/// The server's own paths, which no source may take.
const SERVER_PATHS: [&str; 4] = ["/healthz", "/readyz", "/metrics", "/state"];

impl Config {
    pub(crate) fn validate(self, path: &str, p: &mut Problems) -> Option<Self> {
        let at = format!("{path}.path");
        // Plain segments only: the router would read `{name}` and `*rest` as patterns.
        let plain = |c: char| c.is_ascii_alphanumeric() || "/-._~".contains(c);
        if !self.path.starts_with('/') || self.path.len() < 2 || !self.path.chars().all(plain) {
            p.push(
                at,
                format!("{:?} is not a path like /ingest (letters, digits, / - . _ ~)", self.path),
            );
            return None;
        }
        if SERVER_PATHS.contains(&self.path.as_str()) {
            p.push(at, format!("{:?} is one of the server's own paths", self.path));
            return None;
        }
        Some(self)
    }
}

use axum::body::to_bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::json;
use subtle::ConstantTimeEq;
use tokio::sync::oneshot;

use super::{Source, SourceContext};
use crate::decode::{self, Context, DecodeError, Reason};
use crate::pipeline::{Input, Shutdown};
use crate::support::lines::{is_blank, split_message, Line};
use crate::telemetry::metrics::RecordOutcome;

/// The body limit of `/ingest`.
pub const INGEST_LIMIT: usize = 1 << 20;

impl Source for Config {
    fn context(&self) -> Context {
        super::context(&self.common)
    }

    fn pushes(&self) -> bool {
        true
    }

    /// Its records come through the HTTP server's `path` ([`Source::routes`]).
    fn start(&self, _ctx: SourceContext, _tasks: &mut Shutdown) {}

    fn routes(&self, ctx: &SourceContext, ingest_token: Option<&str>) -> Option<Router> {
        let ingest = Ingest {
            ctx: ctx.clone(),
            context: self.context(),
            token: ingest_token.filter(|t| !t.is_empty()).map(str::to_string),
        };
        Some(Router::new().route(&self.path, post(ingest_body)).with_state(ingest))
    }
}

/// What `/ingest` needs: the source's context in the pipeline, how its lines decode, the
/// token that guards it.
#[derive(Clone)]
struct Ingest {
    ctx: SourceContext,
    context: Context,
    token: Option<String>,
}

fn refuse(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({ "error": message }))).into_response()
}

/// An `/ingest` body that decoded: its lines for the pipeline, and how many are records.
#[derive(Debug, PartialEq, Eq)]
pub struct Body {
    /// Every line, blank ones included: the pipeline numbers them by their place here.
    pub lines: Vec<Vec<u8>>,
    /// The lines that are not blank.
    pub records: usize,
}

/// Reads a body as `/ingest` does: split into lines, each one not blank decoded with
/// `context`. Every bad line is returned, so that one answer names them all.
pub fn read_body(body: &[u8], context: &Context) -> Result<Body, Vec<DecodeError>> {
    let (mut lines, mut bad, mut records) = (Vec::new(), Vec::new(), 0);
    for (number, line) in split_message(body, INGEST_LIMIT) {
        let line = match line {
            Line::Text(line) => line,
            Line::TooLong(len) => {
                bad.push(DecodeError { line: number, reason: Reason::TooLong(len) });
                continue;
            }
        };
        // Blank lines are not records, but keep their numbers (the driver passes over them).
        if !is_blank(line) {
            if let Err(e) = decode::decode_line(line, number, context) {
                bad.push(e);
                continue;
            }
            records += 1;
        }
        lines.push(line.to_vec());
    }
    match bad.is_empty() {
        true => Ok(Body { lines, records }),
        false => Err(bad),
    }
}

async fn ingest_body(
    State(ingest): State<Ingest>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Response {
    if let Some(token) = &ingest.token {
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        // In constant time: the answer's timing must not tell how much of a guess was right.
        // (A length mismatch answers early; the length is the least of the secret.)
        let ok = given.is_some_and(|g| bool::from(g.as_bytes().ct_eq(token.as_bytes())));
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
    let Body { lines, records: accepted } = match read_body(&bytes, &ingest.context) {
        Ok(body) => body,
        Err(bad) => {
            for _ in &bad {
                ingest.ctx.metrics.record(&ingest.ctx.name, RecordOutcome::DecodeError);
            }
            let lines: Vec<_> = bad
                .iter()
                .map(|e| json!({ "line": e.line, "error": e.reason.to_string() }))
                .collect();
            let body = json!({ "error": "bad lines; nothing was accepted", "lines": lines });
            return (StatusCode::BAD_REQUEST, Json(body)).into_response();
        }
    };
    let (done, committed) = oneshot::channel();
    let on_commit = Box::new(move || {
        let _ = done.send(());
    });
    let batch = Input::Batch {
        source: ingest.ctx.index,
        lines,
        live: true,
        on_commit,
        key: None,
        redelivery: false,
        context: None,
        offset: None,
    };
    if ingest.ctx.tx.send(batch).await.is_err() {
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

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"{"ts":"2025-03-01T10:00:00Z","cluster":"c","reporter":"n1","signal":"leader","leader":"n2"}"#;

    #[test]
    fn a_body_keeps_blank_lines_for_their_numbers_and_counts_records() {
        let ctx = Context::new("c", "r");
        let body = format!("{GOOD}\n\n  \r\n{GOOD}\r\n");
        let read = read_body(body.as_bytes(), &ctx).expect("good body");
        assert_eq!(read.lines.len(), 4);
        assert_eq!(read.records, 2);
        assert_eq!(read.lines[3], GOOD.as_bytes());
    }

    #[test]
    fn a_body_with_bad_lines_names_every_one() {
        let ctx = Context::new("c", "r");
        let body = format!("{GOOD}\nnot json\n\n[1]\n{GOOD}");
        let bad = read_body(body.as_bytes(), &ctx).expect_err("bad lines");
        let lines: Vec<u64> = bad.iter().map(|e| e.line).collect();
        assert_eq!(lines, [2, 4]);
    }
}
