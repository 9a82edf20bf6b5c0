//! The NATS sink: subject `<prefix>.<cluster>.<kind>`; JetStream mode deduplicates on the
//! event id (`Nats-Msg-Id`).

use std::path::PathBuf;

use serde::Deserialize;

use crate::support::problems::Problems;

#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct Config {
    /// `nats://host:4222`; required.
    pub url: Option<String>,
    /// Subject prefix (default `herald`).
    #[serde(default = "default_prefix")]
    pub subject_prefix: String,
    /// Publish through JetStream and await each ack.
    #[serde(default)]
    pub jetstream: bool,
    /// With `jetstream`, a stream to create if missing.
    pub stream: Option<String>,
    /// The subjects that stream captures (default `<subject_prefix>.>`).
    #[serde(default)]
    pub stream_subjects: Vec<String>,
    pub token: Option<String>,
    pub user: Option<String>,
    pub password: Option<String>,
    pub nkey: Option<String>,
    pub creds: Option<PathBuf>,
    pub tls_ca: Option<PathBuf>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// The message body: `json` (default), `ecs`, `cef` or `text` (DESIGN §11).
    #[serde(default)]
    pub encoding: super::encoding::Encoding,
}

fn default_prefix() -> String {
    "herald".to_string()
}

impl Config {
    pub(crate) fn validate(self, path: &str, p: &mut Problems) -> Option<Self> {
        p.require(path, "url", self.url.is_some()).then_some(self)
    }
}

// ---- running ------------------------------------------------------------------------------

use std::future::IntoFuture;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::context::{PublishAckFuture, PublishError};
use async_nats::jetstream::{self, publish::PublishAck};
use futures_util::stream::{FuturesOrdered, StreamExt};
use tokio::sync::mpsc::Receiver;

use super::SinkError;
use crate::pipeline::Delivery;
use crate::support::retry::Backoff;
use crate::telemetry::events::{DeliveryFailed, Reachability};
use crate::telemetry::metrics::SinkMetrics;

/// A PubAck on its way.
type AckFuture = <PublishAckFuture as IntoFuture>::IntoFuture;

/// A publish awaiting its PubAck, with the recoveries counted when it was made (see
/// `failed_since`).
async fn pending(
    d: Delivery,
    ack: AckFuture,
    recoveries: u64,
) -> (Delivery, Result<PublishAck, PublishError>, u64) {
    (d, ack.await, recoveries)
}

/// JetStream publishes awaiting their PubAck at once.
const IN_FLIGHT: usize = 1024;

/// A connected sink: the client, and JetStream when configured.
pub struct Connected {
    client: async_nats::Client,
    jetstream: Option<jetstream::Context>,
}

/// How log lines and errors name the server.
fn server(config: &Config) -> String {
    format!("nats {}", crate::support::url::redacted(config.url.as_deref().unwrap_or("")))
}

/// A subject token from a cluster name: NATS separates tokens with dots and reserves `*`, `>`
/// and white space.
fn token(s: &str) -> String {
    s.chars()
        .map(|c| if c == '.' || c == '*' || c == '>' || c.is_whitespace() { '_' } else { c })
        .collect()
}

/// `<prefix>.<cluster>.<kind>`; the kind keeps its dot (`cluster.leader_elected`), so
/// `herald.prod.cluster.>` selects a cluster's cluster-level events.
pub fn subject(prefix: &str, cluster: &str, kind: &str) -> String {
    format!("{prefix}.{}.{kind}", token(cluster))
}

async fn options(config: &Config) -> Result<async_nats::ConnectOptions, std::io::Error> {
    let mut o = match &config.creds {
        Some(path) => async_nats::ConnectOptions::with_credentials_file(path.clone()).await?,
        None => async_nats::ConnectOptions::new(),
    };
    if let Some(t) = &config.token {
        o = o.token(t.clone());
    }
    if let (Some(u), Some(p)) = (&config.user, &config.password) {
        o = o.user_and_password(u.clone(), p.clone());
    }
    if let Some(seed) = &config.nkey {
        o = o.nkey(seed.clone());
    }
    if let Some(ca) = &config.tls_ca {
        o = o.add_root_certificates(ca.clone()).require_tls(true);
    }
    if let (Some(cert), Some(key)) = (&config.tls_cert, &config.tls_key) {
        o = o.add_client_certificate(cert.clone(), key.clone());
    }
    Ok(o.name("herald").retry_on_initial_connect())
}

impl super::Sink for Config {
    async fn start(&self, ctx: super::SinkContext, rx: super::Queue) -> super::Started {
        let connected = connect(&ctx.name, self).await?;
        let format = super::encoding::LineFormat::body(self.encoding);
        let rx = super::encoded(rx, format, ctx.severities.clone());
        Ok(tokio::spawn(run(self.clone(), connected, rx, ctx.acked, ctx.metrics)))
    }
}

/// Connects (and, in JetStream mode, makes sure the stream exists): the sink's readiness.
pub async fn connect(name: &str, config: &Config) -> Result<Connected, SinkError> {
    let url = config.url.clone().unwrap_or_default();
    let client = options(config)
        .await
        .map_err(|e| SinkError::broker(name, &server(config), e))?
        .connect(url.as_str())
        .await
        .map_err(|e| SinkError::broker(name, &server(config), e))?;
    let jetstream = if config.jetstream {
        let js = jetstream::new(client.clone());
        if let Some(stream) = &config.stream {
            // Only the fields nats-server 2.9 knows: newer ones are left at their defaults.
            let cfg = jetstream::stream::Config {
                name: stream.clone(),
                subjects: if config.stream_subjects.is_empty() {
                    vec![format!("{}.>", config.subject_prefix)]
                } else {
                    config.stream_subjects.clone()
                },
                ..Default::default()
            };
            js.get_or_create_stream(cfg)
                .await
                .map_err(|e| SinkError::broker(name, &server(config), e))?;
        } else {
            // Ready means a stream captures what herald publishes: wait for one.
            let probe = format!("{}.probe.readiness", config.subject_prefix);
            let mut backoff = Backoff::new(Duration::from_millis(200));
            let mut logged = false;
            while js.stream_by_subject(probe.clone()).await.is_err() {
                if !logged {
                    tracing::warn!(sink = %name, subjects = %format!("{}.>", config.subject_prefix), "no JetStream stream captures herald's subjects yet; waiting");
                    logged = true;
                }
                backoff.wait().await;
            }
        }
        Some(js)
    } else {
        None
    };
    tracing::info!(sink = %name, url = %url, jetstream = config.jetstream, "nats ready");
    Ok(Connected { client, jetstream })
}

/// Publishes with `Nats-Msg-Id` = the event id, retrying with backoff: JetStream drops a
/// duplicate id within its window, so a retry never stores an event twice.
async fn publish(
    js: &jetstream::Context,
    subject: &str,
    d: &Delivery,
    metrics: &SinkMetrics,
    reach: &Reachability,
) -> AckFuture {
    let mut backoff = Backoff::new(Duration::from_millis(100));
    loop {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Nats-Msg-Id", d.event.id.as_str());
        let payload = bytes::Bytes::copy_from_slice(d.line.as_bytes());
        match js.publish_with_headers(subject.to_string(), headers, payload).await {
            Ok(f) => return f.into_future(),
            Err(e) => {
                DeliveryFailed.emit(metrics);
                reach.failed(e);
                backoff.wait().await;
            }
        }
    }
}

/// Delivers events; acknowledges each once the server has it: core mode after a flush,
/// JetStream mode on its PubAck (in order).
pub async fn run(
    config: Config,
    connected: Connected,
    mut rx: Receiver<Delivery>,
    acked: Arc<AtomicU64>,
    metrics: SinkMetrics,
) -> Result<(), SinkError> {
    let prefix = config.subject_prefix.clone();
    let Connected { client, jetstream } = connected;
    let reach = Reachability::of_sink(&metrics, server(&config));
    let Some(js) = jetstream else {
        let mut pending: Vec<Delivery> = Vec::new();
        let mut backoff = Backoff::new(Duration::from_millis(100));
        loop {
            let d = rx.recv().await;
            let closing = d.is_none();
            if let Some(d) = d {
                let subject = subject(&prefix, &d.event.cluster, d.event.kind.as_str());
                // The client buffers while disconnected and reconnects on its own.
                if let Err(e) =
                    client.publish(subject, bytes::Bytes::copy_from_slice(d.line.as_bytes())).await
                {
                    DeliveryFailed.emit(&metrics);
                    reach.failed(e);
                }
                pending.push(d);
            }
            if (closing || rx.is_empty()) && !pending.is_empty() {
                match client.flush().await {
                    Ok(()) => {
                        backoff.reset();
                        reach.reached();
                        for d in pending.drain(..) {
                            metrics.acked(d.event.stable_at);
                            acked.store(d.seq, Ordering::Release);
                        }
                    }
                    Err(e) => {
                        DeliveryFailed.emit(&metrics);
                        reach.failed(e);
                        backoff.wait().await;
                        continue;
                    }
                }
            }
            if closing {
                return Ok(());
            }
        }
    };
    // Every PubAck is awaited at once, not only the oldest: async-nats starts an ack's
    // timeout when the future is first polled, so awaiting them one by one turned the acks a
    // broker restart lost into one timeout after another (1,024 × 5 s). Results still come
    // out in publish order, which the watermark needs.
    let mut in_flight = FuturesOrdered::new();
    let mut open = true;
    while open || !in_flight.is_empty() {
        tokio::select! {
            d = rx.recv(), if open && in_flight.len() < IN_FLIGHT => match d {
                Some(d) => {
                    let subject = subject(&prefix, &d.event.cluster, d.event.kind.as_str());
                    let f = publish(&js, &subject, &d, &metrics, &reach).await;
                    in_flight.push_back(pending(d, f, reach.recoveries()));
                }
                None => open = false,
            },
            Some((d, ack, then)) = in_flight.next(), if !in_flight.is_empty() => match ack {
                Ok(_) => {
                    reach.reached();
                    metrics.acked(d.event.stable_at);
                    acked.store(d.seq, Ordering::Release);
                }
                Err(e) => {
                    // No ack (timeout, the server restarted): publish again; the Msg-Id
                    // keeps the stream from storing it twice.
                    DeliveryFailed.emit(&metrics);
                    reach.failed_since(then, format_args!("no PubAck for {}: {e}", d.event.id));
                    let subject = subject(&prefix, &d.event.cluster, d.event.kind.as_str());
                    let f = publish(&js, &subject, &d, &metrics, &reach).await;
                    in_flight.push_front(pending(d, f, reach.recoveries()));
                }
            },
        }
    }
    let _ = client.flush().await;
    Ok(())
}
