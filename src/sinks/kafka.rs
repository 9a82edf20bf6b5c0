//! The Kafka sink: idempotent producer, key = cluster, CloudEvents binary-mode headers.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::support::problems::Problems;

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
    /// `json`, `ecs`, `cef` or `text` (the events, DESIGN §11) or `raw`: an edge's sink,
    /// which forwards the records its sources read, not events (DESIGN §10).
    #[serde(default)]
    pub encoding: Encoding,
}

#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Encoding {
    #[default]
    Json,
    Ecs,
    Cef,
    Text,
    Raw,
}

impl Encoding {
    /// How an event's message body is written; `None` for raw records.
    fn events(self) -> Option<super::encoding::Encoding> {
        use super::encoding::Encoding as E;
        match self {
            Encoding::Json => Some(E::Json),
            Encoding::Ecs => Some(E::Ecs),
            Encoding::Cef => Some(E::Cef),
            Encoding::Text => Some(E::Text),
            Encoding::Raw => None,
        }
    }
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
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::client::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use tokio::sync::mpsc::Receiver;

use super::encoding::LineFormat;
use super::SinkError;
use crate::model::ClusterEvent;
use crate::pipeline::{Delivery, EventRef, Forward};
use crate::support::retry::Backoff;
use crate::telemetry::events::{DeliveryFailed, Reachability};
use crate::telemetry::metrics::SinkMetrics;

/// Acknowledges in outbox order although deliveries complete per partition: the watermark
/// moves over a contiguous run of completed sequence numbers only.
struct InOrder {
    /// The next sequence number the watermark waits for.
    next: u64,
    /// Whether `next + i` is settled; as long as the deliveries in flight.
    done: VecDeque<bool>,
}

/// What the delivery callback needs: reachability, counters, the watermark.
pub struct DeliveryReports {
    name: String,
    reach: Reachability,
    metrics: SinkMetrics,
    acked: Arc<AtomicU64>,
    order: Mutex<InOrder>,
    /// Messages whose delivery failed for a reason a retry can cure (a reset connection that
    /// librdkafka gave up on, an idempotence sequence the broker refused): produced again.
    failed: Mutex<Vec<Opaque>>,
    /// The idempotent producer has its producer id, so what it is given goes out at once.
    has_producer_id: AtomicBool,
}

/// Rides along with each message to its delivery report.
pub struct Opaque {
    seq: u64,
    line: Arc<str>,
    record: Record,
}

/// What a message carries: an event, or an edge's raw record (DESIGN §10).
#[derive(Clone)]
enum Record {
    /// With the body's content type.
    Event(EventRef, &'static str),
    Raw {
        cluster: Arc<str>,
        reporter: Arc<str>,
    },
}

impl From<Delivery> for Opaque {
    fn from(d: Delivery) -> Opaque {
        Opaque { seq: d.seq, line: d.line, record: Record::Event(d.event, "application/json") }
    }
}

impl From<Forward> for Opaque {
    fn from(f: Forward) -> Opaque {
        Opaque {
            seq: f.seq,
            line: f.line,
            record: Record::Raw { cluster: f.cluster, reporter: f.reporter },
        }
    }
}

impl Record {
    /// The message key: the cluster, so that a cluster's records stay in order.
    fn key(&self) -> &str {
        match self {
            Record::Event(e, _) => &e.cluster,
            Record::Raw { cluster, .. } => cluster,
        }
    }

    fn headers(&self, source: &str) -> OwnedHeaders {
        match self {
            Record::Event(e, content_type) => headers(e, source, content_type),
            Record::Raw { cluster, reporter } => OwnedHeaders::new_with_capacity(2)
                .insert(Header { key: "herald-cluster", value: Some(&**cluster) })
                .insert(Header { key: "herald-reporter", value: Some(&**reporter) }),
        }
    }
}

impl DeliveryReports {
    /// `seq` is settled (delivered or passed over): advance the watermark if it can.
    fn settle(&self, seq: u64) {
        let mut o = self.order.lock().unwrap_or_else(|p| p.into_inner());
        let Some(at) = seq.checked_sub(o.next).and_then(|i| usize::try_from(i).ok()) else {
            return;
        };
        if o.done.len() <= at {
            o.done.resize(at + 1, false);
        }
        o.done[at] = true;
        let before = o.next;
        while o.done.front() == Some(&true) {
            o.done.pop_front();
            o.next += 1;
        }
        if o.next > before {
            self.acked.store(o.next - 1, Ordering::Release);
        }
    }

    fn pass_over(&self, opaque: &Opaque, error: &KafkaError) {
        DeliveryFailed.emit(&self.metrics);
        match &opaque.record {
            Record::Event(event, _) => {
                tracing::error!(sink = %self.name, id = %event.id, kind = %event.kind, error = %error, "kafka can never take this event: it is passed over")
            }
            Record::Raw { cluster, reporter } => {
                tracing::error!(sink = %self.name, cluster = %cluster, reporter = %reporter, bytes = opaque.line.len(), error = %error, "kafka can never take this record: it is passed over")
            }
        }
        self.settle(opaque.seq);
    }
}

/// The part of librdkafka's statistics readiness needs.
#[derive(Deserialize)]
struct Stats {
    eos: Option<Eos>,
}

#[derive(Deserialize)]
struct Eos {
    idemp_state: String,
}

impl ClientContext for DeliveryReports {
    /// Statistics serve readiness only: once the producer id is there, they are passed over.
    fn stats_raw(&self, statistics: &[u8]) {
        if self.has_producer_id.load(Ordering::Acquire) {
            return;
        }
        if let Ok(Stats { eos: Some(eos) }) = serde_json::from_slice::<Stats>(statistics) {
            if eos.idemp_state == "Assigned" {
                self.has_producer_id.store(true, Ordering::Release);
            }
        }
    }

    /// Events wait in librdkafka's queue meanwhile.
    fn error(&self, error: KafkaError, reason: &str) {
        DeliveryFailed.emit(&self.metrics);
        self.reach.failed(format_args!("{error} ({reason})"));
    }
}

impl ProducerContext for DeliveryReports {
    type DeliveryOpaque = Box<Opaque>;

    fn delivery(&self, result: &DeliveryResult<'_>, opaque: Box<Opaque>) {
        match result {
            Ok(_) => {
                self.reach.reached();
                if let Record::Event(event, _) = &opaque.record {
                    self.metrics.acked(event.stable_at);
                }
                self.settle(opaque.seq);
            }
            Err((e, _)) if undeliverable(e) => self.pass_over(&opaque, e),
            // librdkafka gave up on this message although the broker may take it (with
            // idempotence, a broker that lost a producer's state fails the queued batches):
            // it is produced again, same id. Only a local refusal is final.
            Err((e, _)) => {
                DeliveryFailed.emit(&self.metrics);
                self.reach.failed(e);
                self.failed.lock().unwrap_or_else(|p| p.into_inner()).push(*opaque);
            }
        }
    }
}

/// The producer's settings: idempotent, every replica acknowledges, librdkafka retries for
/// ever (`message.timeout.ms = 0`); `client.*` options come last and win. Statistics tell
/// readiness when the producer id arrives.
pub fn client_config(config: &Config) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", config.brokers.as_deref().unwrap_or_default())
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("message.timeout.ms", "0")
        .set("linger.ms", "5")
        .set("statistics.interval.ms", "100");
    for (k, v) in &config.client {
        c.set(k, v);
    }
    c
}

use crate::support::kafka::undeliverable;

/// A kafka sink's records as a transaction produces them (exactly once, DESIGN §10): the
/// same topic, key, body and headers as the sink's own.
pub struct Transactional {
    source: String,
    format: LineFormat,
    content_type: &'static str,
}

impl Transactional {
    /// The record of `event`, whose JSON line is `json`: (key, body, headers).
    pub fn record<'a>(
        &self,
        event: &'a ClusterEvent,
        json: &'a str,
        severities: &crate::model::Severities,
    ) -> (&'a str, std::borrow::Cow<'a, str>, OwnedHeaders) {
        let body = self.format.line(event, json, severities);
        (&event.cluster, body, headers(event, &self.source, self.content_type))
    }
}

impl Config {
    pub fn transactional(&self) -> Transactional {
        let format = LineFormat::body(self.encoding.events().unwrap_or_default());
        let content_type = match format {
            LineFormat::Json | LineFormat::Ecs => "application/json",
            LineFormat::Text { .. } | LineFormat::Cef => "text/plain; charset=utf-8",
        };
        Transactional {
            source: self.source.clone().unwrap_or_else(|| "herald".to_string()),
            format,
            content_type,
        }
    }
}

impl super::Sink for Config {
    async fn start(&self, ctx: super::SinkContext, rx: super::Queue) -> super::Started {
        // Ready means a successful metadata fetch: wait for it before anything is read.
        let connected = connect(&ctx.name, self, &ctx.metrics, ctx.acked).await?;
        // The body as a transaction writes it too (exactly once).
        let body = self.transactional();
        let content_type = body.content_type;
        let rx = super::encoded(rx, body.format, ctx.severities.clone());
        let encode = move |d: Delivery| {
            let mut opaque = Opaque::from(d);
            if let Record::Event(_, ct) = &mut opaque.record {
                *ct = content_type;
            }
            opaque
        };
        Ok(tokio::spawn(run(self.clone(), connected, rx, ctx.metrics, encode)))
    }
}

impl Config {
    /// Starts an edge's raw sink: what it forwards are records, not events.
    pub async fn start_raw(
        &self,
        ctx: super::SinkContext,
        rx: Receiver<Forward>,
    ) -> super::Started {
        let connected = connect(&ctx.name, self, &ctx.metrics, ctx.acked).await?;
        Ok(tokio::spawn(run(self.clone(), connected, rx, ctx.metrics, Opaque::from)))
    }
}

/// A connected producer.
pub struct Connected {
    producer: ThreadedProducer<DeliveryReports>,
}

/// Connects and waits for a successful metadata fetch of the topic: the sink's readiness.
/// `acked` is the watermark the delivery reports move.
pub async fn connect(
    name: &str,
    config: &Config,
    metrics: &SinkMetrics,
    acked: Arc<AtomicU64>,
) -> Result<Connected, SinkError> {
    let start = acked.load(Ordering::Acquire) + 1;
    let server = format!("kafka {}", config.brokers.as_deref().unwrap_or(""));
    let broker = |e: String| SinkError::broker(name, &server, e);
    let context = DeliveryReports {
        name: name.to_string(),
        reach: Reachability::of_sink(metrics, server.clone()),
        metrics: metrics.clone(),
        acked,
        order: Mutex::new(InOrder { next: start, done: VecDeque::new() }),
        failed: Mutex::new(Vec::new()),
        has_producer_id: AtomicBool::new(false),
    };
    let producer: ThreadedProducer<DeliveryReports> =
        client_config(config).create_with_context(context).map_err(|e| broker(e.to_string()))?;
    let producer = Arc::new(producer);
    let topic = config.topic.clone().unwrap_or_default();
    let mut backoff = Backoff::new(Duration::from_millis(100));
    let mut waited_for_id = 0;
    loop {
        let (p, t) = (producer.clone(), topic.clone());
        let fetched = tokio::task::spawn_blocking(move || {
            p.client().fetch_metadata(Some(&t), Duration::from_secs(5)).map(|_| ())
        })
        .await
        .map_err(|e| broker(e.to_string()))?;
        match fetched {
            Ok(()) if !has_producer_id(&producer, config, &mut waited_for_id) => {
                // librdkafka asks for a producer id after a metadata reply from a broker it is
                // connected to, else only every 500 ms: ask again rather than wait.
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Ok(()) => {
                producer.context().reach.reached();
                tracing::info!(sink = %name, topic = %topic, "kafka ready");
                let producer = Arc::try_unwrap(producer)
                    .map_err(|_| broker("producer still shared".into()))?;
                return Ok(Connected { producer });
            }
            Err(e) => {
                producer.context().reach.failed(e);
                backoff.wait().await;
            }
        }
    }
}

/// Attempts made waiting for the producer id before the sink counts as ready without it (the
/// events then wait in librdkafka's queue instead).
const PRODUCER_ID_ATTEMPTS: u32 = 250;

/// Whether the producer can deliver at once: an idempotent producer needs its producer id
/// first. Gives up waiting, with a warning, after [`PRODUCER_ID_ATTEMPTS`].
fn has_producer_id(
    producer: &ThreadedProducer<DeliveryReports>,
    config: &Config,
    waited: &mut u32,
) -> bool {
    let idempotent = config.client.get("enable.idempotence").is_none_or(|v| v != "false");
    let stats = config.client.get("statistics.interval.ms").is_none_or(|v| v != "0");
    if !idempotent || !stats || producer.context().has_producer_id.load(Ordering::Acquire) {
        return true;
    }
    *waited += 1;
    if *waited >= PRODUCER_ID_ATTEMPTS {
        tracing::warn!(sink = %producer.context().name, "kafka has not given a producer id yet; events wait in the producer's queue until it does");
        return true;
    }
    false
}

fn headers(e: &ClusterEvent, source: &str, content_type: &str) -> OwnedHeaders {
    let time = e.stable_at.rfc3339();
    OwnedHeaders::new_with_capacity(6)
        .insert(Header { key: "ce_specversion", value: Some("1.0") })
        .insert(Header { key: "ce_id", value: Some(e.id.as_str()) })
        .insert(Header { key: "ce_source", value: Some(source) })
        .insert(Header { key: "ce_type", value: Some(e.kind.as_str()) })
        .insert(Header { key: "ce_time", value: Some(time.as_str()) })
        .insert(Header { key: "content-type", value: Some(content_type) })
}

/// Delivers events to the topic, keyed by cluster (a cluster's events stay in order), with
/// CloudEvents binary-mode headers (an edge's raw records with `herald-cluster` and
/// `herald-reporter`). Each is acknowledged on its delivery report, in outbox order.
/// librdkafka retries while the broker is away; the queue waits meanwhile.
pub async fn run<T>(
    config: Config,
    connected: Connected,
    mut rx: Receiver<T>,
    metrics: SinkMetrics,
    encode: impl Fn(T) -> Opaque,
) -> Result<(), SinkError> {
    let producer = connected.producer;
    let topic = config.topic.clone().unwrap_or_default();
    let source = config.source.clone().unwrap_or_else(|| "herald".to_string());
    let mut last: Option<u64> = None;
    let out = Out { producer: &producer, topic: &topic, source: &source, metrics: &metrics };
    let mut batch = Vec::with_capacity(RECEIVE);
    loop {
        let received = tokio::select! {
            n = rx.recv_many(&mut batch, RECEIVE) => n,
            _ = tokio::time::sleep(Duration::from_millis(100)) => {
                out.again().await;
                continue;
            }
        };
        if received == 0 {
            break;
        }
        out.again().await;
        for d in batch.drain(..) {
            let opaque = encode(d);
            // Sequence numbers this sink never saw were dropped upstream (when_full =
            // "drop_newest"): settle them, or the watermark would wait on them for ever.
            if let Some(last) = last {
                for skipped in last + 1..opaque.seq {
                    producer.context().settle(skipped);
                }
            }
            last = Some(opaque.seq);
            out.send(Box::new(opaque)).await;
        }
    }
    // Closing: everything handed over is delivered (or reported) before the state is saved;
    // what fails meanwhile is produced again, for a while.
    let until = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        out.again().await;
        let p = producer.clone();
        let _ = tokio::task::spawn_blocking(move || p.flush(Duration::from_secs(5))).await;
        let pending =
            !producer.context().failed.lock().unwrap_or_else(|e| e.into_inner()).is_empty();
        if !pending || tokio::time::Instant::now() >= until {
            break;
        }
    }
    Ok(())
}

/// Deliveries taken from the queue at a time.
const RECEIVE: usize = 1024;

/// What producing needs, borrowed from the run loop.
struct Out<'a> {
    producer: &'a ThreadedProducer<DeliveryReports>,
    topic: &'a str,
    source: &'a str,
    metrics: &'a SinkMetrics,
}

impl Out<'_> {
    /// Produces again what failed since the last call.
    async fn again(&self) {
        let failed: Vec<Opaque> = std::mem::take(
            &mut *self.producer.context().failed.lock().unwrap_or_else(|p| p.into_inner()),
        );
        for opaque in failed {
            self.send(Box::new(opaque)).await;
        }
    }

    /// Hands one event to librdkafka, waiting while its queue is full or the broker refuses.
    async fn send(&self, mut opaque: Box<Opaque>) {
        let mut backoff = Backoff::new(Duration::from_millis(100));
        loop {
            let (what, line) = (opaque.record.clone(), opaque.line.clone());
            let record = BaseRecord::with_opaque_to(self.topic, opaque)
                .key(what.key())
                .payload(line.as_bytes())
                .headers(what.headers(self.source));
            match self.producer.send(record) {
                Ok(()) => return,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    opaque = r.delivery_opaque;
                    // librdkafka's own queue is full: let its threads drain it.
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                Err((e, r)) if undeliverable(&e) => {
                    self.producer.context().pass_over(&r.delivery_opaque, &e);
                    return;
                }
                Err((e, r)) => {
                    opaque = r.delivery_opaque;
                    DeliveryFailed.emit(self.metrics);
                    self.producer.context().reach.failed(e);
                    backoff.wait().await;
                }
            }
        }
    }
}
