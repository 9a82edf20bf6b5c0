//! The Kafka sink: idempotent producer, key = cluster, CloudEvents binary-mode headers.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::config::Problems;

#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct Config {
    /// `host:port[,host:port…]`; required.
    pub brokers: Option<String>,
    /// The topic events go to; required.
    pub topic: Option<String>,
    /// The CloudEvents `ce_source` header (default `herald`).
    pub source: Option<String>,
    /// librdkafka options passed through as they are (SASL, TLS, …).
    #[serde(default)]
    pub client: BTreeMap<String, String>,
}

impl Config {
    pub(crate) fn validate(self, path: &str, p: &mut Problems) -> Option<Self> {
        let mut ok = p.require(path, "brokers", self.brokers.is_some());
        ok &= p.require(path, "topic", self.topic.is_some());
        ok.then_some(self)
    }
}

// ---- running ------------------------------------------------------------------------------

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rdkafka::client::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer, ProducerContext};
use tokio::sync::mpsc::Receiver;

use super::{Delivery, SinkError};
use crate::metrics::SinkMetrics;

/// Deliveries awaiting their report at once; past it the sink stops taking new ones.
const IN_FLIGHT: usize = 10_000;

/// Logs the broker's reachability once per change and counts errors, not once per message.
pub struct Context {
    reach: Arc<Reachability>,
    errors: prometheus::IntCounter,
}

/// Whether the broker is known to be away; shared by the client's callbacks and the sink.
pub struct Reachability {
    name: String,
    down: AtomicBool,
}

impl ClientContext for Context {
    fn error(&self, error: KafkaError, reason: &str) {
        self.errors.inc();
        if !self.reach.down.swap(true, Ordering::Relaxed) {
            tracing::warn!(sink = %self.reach.name, error = %error, reason, "kafka unreachable; retrying, events wait in the queue");
        }
    }
}

impl ProducerContext for Context {
    type DeliveryOpaque = ();
    fn delivery(&self, _: &rdkafka::producer::DeliveryResult<'_>, _: ()) {}
}

impl Reachability {
    fn reachable(&self) {
        if self.down.swap(false, Ordering::Relaxed) {
            tracing::info!(sink = %self.name, "kafka reachable again");
        }
    }
}

/// The producer's settings: idempotent, every replica acknowledges, librdkafka retries for
/// ever (`message.timeout.ms = 0`); `client.*` options come last and win.
pub fn client_config(config: &Config) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", config.brokers.as_deref().unwrap_or_default())
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("message.timeout.ms", "0")
        .set("linger.ms", "5");
    for (k, v) in &config.client {
        c.set(k, v);
    }
    c
}

/// Messages that can never be delivered, whatever is retried: reported and passed over so that
/// one poison event does not stop every later one.
fn undeliverable(e: &KafkaError) -> bool {
    matches!(
        e.rdkafka_error_code(),
        Some(
            RDKafkaErrorCode::MessageSizeTooLarge
                | RDKafkaErrorCode::InvalidMessageSize
                | RDKafkaErrorCode::InvalidMessage
                | RDKafkaErrorCode::InvalidRecord
        )
    )
}

/// Connects and waits for a successful metadata fetch of the topic: the sink's readiness.
pub async fn connect(
    name: &str,
    config: &Config,
    metrics: &SinkMetrics,
) -> Result<Connected, SinkError> {
    let reach = Arc::new(Reachability { name: name.to_string(), down: AtomicBool::new(false) });
    let context = Context { reach: reach.clone(), errors: metrics.errors.clone() };
    let producer: FutureProducer<Context> = client_config(config)
        .create_with_context(context)
        .map_err(|e| SinkError::Broker { name: name.to_string(), reason: e.to_string() })?;
    let topic = config.topic.clone().unwrap_or_default();
    let mut backoff = Duration::from_millis(100);
    loop {
        let p = producer.clone();
        let t = topic.clone();
        let fetched = tokio::task::spawn_blocking(move || {
            p.client().fetch_metadata(Some(&t), Duration::from_secs(5))
        })
        .await
        .map_err(|e| SinkError::Broker { name: name.to_string(), reason: e.to_string() })?;
        match fetched {
            Ok(_) => {
                tracing::info!(sink = %name, topic = %topic, "kafka ready");
                return Ok(Connected { producer, reach });
            }
            Err(e) => {
                tracing::warn!(sink = %name, error = %e, "kafka not ready yet; retrying");
                tokio::time::sleep(jitter(backoff)).await;
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
        }
    }
}

/// A connected producer and its reachability.
pub struct Connected {
    pub producer: FutureProducer<Context>,
    reach: Arc<Reachability>,
}

fn jitter(d: Duration) -> Duration {
    use rand::Rng;
    d.mul_f64(rand::rng().random_range(0.5..1.5))
}

fn headers(d: &Delivery, source: &str) -> OwnedHeaders {
    let e = &d.event;
    let time = e.stable_at.to_rfc3339();
    OwnedHeaders::new_with_capacity(6)
        .insert(Header { key: "ce_specversion", value: Some("1.0") })
        .insert(Header { key: "ce_id", value: Some(e.id.as_str()) })
        .insert(Header { key: "ce_source", value: Some(source) })
        .insert(Header { key: "ce_type", value: Some(e.kind.as_str()) })
        .insert(Header { key: "ce_time", value: Some(time.as_str()) })
        .insert(Header { key: "content-type", value: Some("application/json") })
}

/// Hands one event to librdkafka, waiting while its local queue is full.
async fn enqueue(
    producer: &FutureProducer<Context>,
    topic: &str,
    source: &str,
    d: &Delivery,
) -> Result<DeliveryFuture, KafkaError> {
    loop {
        let record = FutureRecord::to(topic)
            .key(d.event.cluster.as_str())
            .payload(d.line.as_bytes())
            .headers(headers(d, source));
        match producer.send_result(record) {
            Ok(f) => return Ok(f),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            Err((e, _)) => return Err(e),
        }
    }
}

/// Hands `d` to librdkafka, retrying with backoff while it refuses. `None`: it can never be
/// delivered (reported and counted here).
async fn enqueue_retrying(
    producer: &FutureProducer<Context>,
    topic: &str,
    source: &str,
    d: &Delivery,
    name: &str,
    metrics: &SinkMetrics,
) -> Option<DeliveryFuture> {
    let mut backoff = Duration::from_millis(100);
    let mut logged = false;
    loop {
        match enqueue(producer, topic, source, d).await {
            Ok(f) => return Some(f),
            Err(e) if undeliverable(&e) => {
                metrics.errors.inc();
                tracing::error!(sink = %name, id = %d.event.id, kind = %d.event.kind, error = %e, "kafka can never take this event (too large or invalid): it is passed over");
                return None;
            }
            Err(e) => {
                metrics.errors.inc();
                if !logged {
                    tracing::warn!(sink = %name, id = %d.event.id, error = %e, "kafka refused an event; retrying with backoff");
                    logged = true;
                }
                tokio::time::sleep(jitter(backoff)).await;
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
        }
    }
}

/// Delivers events to the topic, keyed by cluster, acknowledging each on its delivery report,
/// in order. An event passed over as undeliverable still waits its turn in the queue, so the
/// acknowledgement watermark never jumps over an event still in flight.
pub async fn run(
    name: String,
    config: Config,
    connected: Connected,
    mut rx: Receiver<Delivery>,
    acked: Arc<AtomicU64>,
    metrics: SinkMetrics,
) -> Result<(), SinkError> {
    let Connected { producer, reach } = connected;
    let topic = config.topic.clone().unwrap_or_default();
    let source = config.source.clone().unwrap_or_else(|| "herald".to_string());
    let mut in_flight: VecDeque<(Delivery, Option<DeliveryFuture>)> = VecDeque::new();
    let mut open = true;
    let mut backoff = Duration::from_millis(100);
    loop {
        while matches!(in_flight.front(), Some((_, None))) {
            if let Some((d, _)) = in_flight.pop_front() {
                acked.store(d.seq, Ordering::Release);
            }
        }
        if !open && in_flight.is_empty() {
            break;
        }
        tokio::select! {
            d = rx.recv(), if open && in_flight.len() < IN_FLIGHT => match d {
                Some(d) => {
                    let f = enqueue_retrying(&producer, &topic, &source, &d, &name, &metrics).await;
                    in_flight.push_back((d, f));
                }
                None => open = false,
            },
            report = async {
                match in_flight.front_mut() {
                    Some((_, Some(f))) => f.await,
                    _ => std::future::pending().await,
                }
            }, if !in_flight.is_empty() => {
                let Some((d, _)) = in_flight.pop_front() else { continue };
                match report {
                    Ok(Ok(_)) => {
                        reach.reachable();
                        backoff = Duration::from_millis(100);
                        metrics.acked(d.event.stable_at);
                        acked.store(d.seq, Ordering::Release);
                    }
                    Ok(Err((e, _))) if undeliverable(&e) => {
                        metrics.errors.inc();
                        tracing::error!(sink = %name, id = %d.event.id, kind = %d.event.kind, error = %e, "kafka can never take this event (too large or invalid): it is passed over");
                        acked.store(d.seq, Ordering::Release);
                    }
                    Ok(Err((e, _))) => {
                        metrics.errors.inc();
                        tracing::warn!(sink = %name, id = %d.event.id, error = %e, "delivery failed; retrying with backoff");
                        tokio::time::sleep(jitter(backoff)).await;
                        backoff = (backoff * 2).min(Duration::from_secs(30));
                        let f = enqueue_retrying(&producer, &topic, &source, &d, &name, &metrics).await;
                        in_flight.push_front((d, f));
                    }
                    Err(_) => return Err(SinkError::Broker { name, reason: "the producer went away".into() }),
                }
            }
        }
    }
    let p = producer.clone();
    let _ = tokio::task::spawn_blocking(move || p.flush(Duration::from_secs(10))).await;
    Ok(())
}
