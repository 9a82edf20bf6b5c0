//! The OTLP sink: every event as a log record, the gauges as metrics.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::support::problems::Problems;

#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct Config {
    /// `http://collector:4317` (gRPC) or `http://collector:4318` (HTTP); required.
    pub endpoint: Option<String>,
    /// `grpc` (default) or `http/protobuf`.
    #[serde(default)]
    pub protocol: Protocol,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    #[serde(default = "default_interval", with = "humantime_serde")]
    pub metrics_interval: Duration,
    /// Extra resource attributes.
    #[serde(default)]
    pub resource: BTreeMap<String, String>,
    pub tls_ca: Option<PathBuf>,
}

#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
pub enum Protocol {
    #[default]
    #[serde(rename = "grpc")]
    Grpc,
    #[serde(rename = "http/protobuf")]
    HttpProtobuf,
}

fn default_timeout() -> Duration {
    Duration::from_secs(10)
}

fn default_interval() -> Duration {
    Duration::from_secs(10)
}

impl Config {
    pub(crate) fn validate(self, path: &str, p: &mut Problems) -> Option<Self> {
        let mut ok = p.require(path, "endpoint", self.endpoint.is_some());
        ok &= p.positive(path, "timeout", self.timeout);
        ok &= p.positive(path, "metrics_interval", self.metrics_interval);
        ok.then_some(self)
    }
}

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

use opentelemetry::logs::{AnyValue, LogRecord as _, Logger as _, LoggerProvider as _, Severity};
use opentelemetry::metrics::MeterProvider as _;
use opentelemetry::{InstrumentationScope, Key, KeyValue};
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig, WithTonicConfig};
use opentelemetry_sdk::logs::{LogBatch, LogExporter as _, SdkLogRecord, SdkLogger};
use opentelemetry_sdk::metrics::{SdkMeterProvider, Temporality};
use opentelemetry_sdk::Resource;
use prometheus::proto::MetricFamily;
use tokio::sync::mpsc::Receiver;

use super::encoding::sentence;
use super::SinkError;
use crate::pipeline::Delivery;
use crate::support::retry::Backoff;
use crate::telemetry::events::{DeliveryFailed, Reachability};
use crate::telemetry::metrics::{Family, SinkMetrics};
use crate::telemetry::view::View;

/// Log records per export request.
const BATCH: usize = 512;
/// After the queue has closed, how long undelivered events may still be retried; what is left
/// stays in the state file's outbox and goes out again after the restart.
const CLOSING_GRACE: Duration = Duration::from_secs(30);

/// A connected OTLP sink: the log exporter herald drives itself, and the meter provider
/// whose reader exports the gauges on its own schedule.
pub struct Connected {
    logs: opentelemetry_otlp::LogExporter,
    /// Whether the collector takes log records.
    reach: Reachability,
    logger: SdkLogger,
    scope: InstrumentationScope,
    meters: SdkMeterProvider,
}

impl std::fmt::Debug for Connected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("otlp::Connected")
    }
}

/// The resource every record and metric carries.
fn resource(config: &Config) -> Resource {
    let instance = config
        .resource
        .get("service.instance.id")
        .cloned()
        .or_else(|| std::env::var("HOSTNAME").ok().filter(|h| !h.is_empty()))
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok().map(|h| h.trim().to_string()))
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "herald".into());
    let mut attrs = vec![
        KeyValue::new("service.version", env!("CARGO_PKG_VERSION")),
        KeyValue::new("service.instance.id", instance),
    ];
    for (k, v) in &config.resource {
        if k != "service.instance.id" && k != "service.name" {
            attrs.push(KeyValue::new(k.clone(), v.clone()));
        }
    }
    Resource::builder_empty().with_service_name("herald").with_attributes(attrs).build()
}

/// How log lines and errors name the collector.
fn server(config: &Config) -> String {
    format!("otlp {}", config.endpoint.as_deref().unwrap_or(""))
}

fn broker(name: &str, config: &Config, reason: impl std::fmt::Display) -> SinkError {
    SinkError::broker(name, &server(config), reason.to_string())
}

/// The URL of one signal: gRPC takes the endpoint as it is, HTTP appends `/v1/logs` or
/// `/v1/metrics` as the OTLP specification does for a base endpoint.
fn signal_url(config: &Config, signal: &str) -> String {
    let base = config.endpoint.clone().unwrap_or_default();
    match config.protocol {
        Protocol::Grpc => base,
        Protocol::HttpProtobuf => format!("{}/v1/{signal}", base.trim_end_matches('/')),
    }
}

fn read_ca(name: &str, config: &Config) -> Result<Option<Vec<u8>>, SinkError> {
    match &config.tls_ca {
        None => Ok(None),
        Some(path) => std::fs::read(path)
            .map(Some)
            .map_err(|e| broker(name, config, format!("tls_ca {}: {e}", path.display()))),
    }
}

fn grpc_metadata(name: &str, config: &Config) -> Result<tonic::metadata::MetadataMap, SinkError> {
    let mut headers = http::HeaderMap::new();
    for (k, v) in &config.headers {
        let key = http::HeaderName::from_bytes(k.as_bytes())
            .map_err(|e| broker(name, config, format!("header {k:?}: {e}")))?;
        let value = http::HeaderValue::from_str(v)
            .map_err(|e| broker(name, config, format!("header {k:?}: {e}")))?;
        headers.insert(key, value);
    }
    Ok(tonic::metadata::MetadataMap::from_headers(headers))
}

fn grpc_tls(ca: Option<Vec<u8>>) -> tonic::transport::ClientTlsConfig {
    let tls = tonic::transport::ClientTlsConfig::new();
    match ca {
        Some(pem) => tls.ca_certificate(tonic::transport::Certificate::from_pem(pem)),
        None => tls.with_native_roots(),
    }
}

fn http_client(
    name: &str,
    config: &Config,
    ca: Option<Vec<u8>>,
) -> Result<reqwest::Client, SinkError> {
    let mut b = reqwest::Client::builder().timeout(config.timeout);
    if let Some(pem) = ca {
        let cert = reqwest::Certificate::from_pem(&pem).map_err(|e| broker(name, config, e))?;
        b = b.add_root_certificate(cert);
    }
    b.build().map_err(|e| broker(name, config, e))
}

impl super::Sink for Config {
    async fn start(&self, ctx: super::SinkContext, rx: super::Queue) -> super::Started {
        let connected =
            connect(&ctx.name, self, &ctx.telemetry, ctx.metrics.clone(), ctx.view).await?;
        let severities = ctx.severities.clone();
        Ok(tokio::spawn(run(ctx.name, connected, rx, ctx.acked, (ctx.metrics, severities))))
    }
}

/// Builds the exporters. Nothing is sent yet: a collector that is not up is retried later,
/// so herald starts, and buffers, without it.
pub async fn connect(
    name: &str,
    config: &Config,
    metrics: &crate::telemetry::metrics::Metrics,
    sink: SinkMetrics,
    view: Arc<Mutex<View>>,
) -> Result<Connected, SinkError> {
    let resource = resource(config);
    let ca = read_ca(name, config)?;
    let tls = config.endpoint.as_deref().is_some_and(|e| e.starts_with("https://"));
    // herald's loop retries; the exporter's own retries would only hide the failures.
    let no_retry = opentelemetry_otlp::RetryPolicy::disabled();
    let (mut logs, metric_exporter) = match config.protocol {
        Protocol::Grpc => {
            let md = grpc_metadata(name, config)?;
            let mut lb = opentelemetry_otlp::LogExporter::builder()
                .with_tonic()
                .with_endpoint(signal_url(config, "logs"))
                .with_timeout(config.timeout)
                .with_metadata(md.clone())
                .with_retry_policy(no_retry.clone());
            let mut mb = opentelemetry_otlp::MetricExporter::builder()
                .with_tonic()
                .with_endpoint(signal_url(config, "metrics"))
                .with_timeout(config.timeout)
                .with_metadata(md)
                .with_retry_policy(no_retry)
                .with_temporality(Temporality::Cumulative);
            if tls {
                lb = lb.with_tls_config(grpc_tls(ca.clone()));
                mb = mb.with_tls_config(grpc_tls(ca));
            }
            (
                lb.build().map_err(|e| broker(name, config, e))?,
                mb.build().map_err(|e| broker(name, config, e))?,
            )
        }
        Protocol::HttpProtobuf => {
            let headers: std::collections::HashMap<String, String> =
                config.headers.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
            let client = http_client(name, config, ca)?;
            let l = opentelemetry_otlp::LogExporter::builder()
                .with_http()
                .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
                .with_endpoint(signal_url(config, "logs"))
                .with_timeout(config.timeout)
                .with_headers(headers.clone())
                .with_http_client(client.clone())
                .with_retry_policy(no_retry.clone())
                .build()
                .map_err(|e| broker(name, config, e))?;
            let m = opentelemetry_otlp::MetricExporter::builder()
                .with_http()
                .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
                .with_endpoint(signal_url(config, "metrics"))
                .with_timeout(config.timeout)
                .with_headers(headers)
                .with_http_client(client)
                .with_retry_policy(no_retry)
                .with_temporality(Temporality::Cumulative)
                .build()
                .map_err(|e| broker(name, config, e))?;
            (l, m)
        }
    };
    logs.set_resource(&resource);
    let exporter = CountingExporter {
        inner: metric_exporter,
        metrics: sink.clone(),
        reach: Reachability::of_sink(&sink, format!("{} (metrics)", server(config))),
    };
    let reader =
        opentelemetry_sdk::metrics::periodic_reader_with_async_runtime::PeriodicReader::builder(
            exporter,
            opentelemetry_sdk::runtime::Tokio,
        )
        .with_interval(config.metrics_interval)
        .build();
    let meters = SdkMeterProvider::builder().with_resource(resource).with_reader(reader).build();
    let source = Arc::new(Gathered::new(metrics, view).map_err(|e| broker(name, config, e))?);
    let meter = meters.meter("herald");
    for family in source.families.clone() {
        observe(&meter, family, source.clone());
    }
    let scope =
        InstrumentationScope::builder("herald").with_version(env!("CARGO_PKG_VERSION")).build();
    let logger = opentelemetry_sdk::logs::SdkLoggerProvider::builder().build().logger("herald");
    let reach = Reachability::of_sink(&sink, server(config));
    Ok(Connected { logs, reach, logger, scope, meters })
}

/// The Prometheus families herald already keeps — its pipeline metrics, and the state gauges
/// rendered from the stable view — read once per export and shared by every instrument.
struct Gathered {
    pipeline: prometheus::Registry,
    state: prometheus::Registry,
    gauges: crate::telemetry::gauges::StateGauges,
    view: Arc<Mutex<View>>,
    families: Vec<Family>,
    cache: Mutex<Option<(Instant, Arc<Vec<MetricFamily>>)>>,
}

impl Gathered {
    fn new(
        metrics: &crate::telemetry::metrics::Metrics,
        view: Arc<Mutex<View>>,
    ) -> Result<Self, prometheus::Error> {
        let state = prometheus::Registry::new();
        let gauges = crate::telemetry::gauges::StateGauges::register(&state)?;
        let mut families = gauges.families();
        families.extend(metrics.families());
        Ok(Gathered {
            pipeline: metrics.registry.clone(),
            state,
            gauges,
            view,
            families,
            cache: Mutex::new(None),
        })
    }

    /// Every instrument's callback runs in one collection: gather once for all of them.
    fn gather(&self) -> Arc<Vec<MetricFamily>> {
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((at, families)) = cache.as_ref() {
            if at.elapsed() < Duration::from_millis(500) {
                return families.clone();
            }
        }
        {
            let view = self.view.lock().unwrap_or_else(|p| p.into_inner());
            self.gauges.set_from(&view);
        }
        let mut all = self.state.gather();
        all.extend(self.pipeline.gather());
        let all = Arc::new(all);
        *cache = Some((Instant::now(), all.clone()));
        all
    }

    fn series(&self, name: &str) -> Vec<(f64, Vec<KeyValue>)> {
        let all = self.gather();
        let Some(family) = all.iter().find(|f| f.name() == name) else { return Vec::new() };
        family
            .get_metric()
            .iter()
            .map(|m| {
                let attrs = m
                    .get_label()
                    .iter()
                    .map(|l| KeyValue::new(l.name().to_string(), l.value().to_string()))
                    .collect();
                let v = match family.get_field_type() {
                    prometheus::proto::MetricType::COUNTER => m.get_counter().get_value(),
                    _ => m.get_gauge().get_value(),
                };
                (v, attrs)
            })
            .collect()
    }
}

fn observe(meter: &opentelemetry::metrics::Meter, family: Family, source: Arc<Gathered>) {
    let name = family.name.clone();
    if family.counter {
        meter
            .f64_observable_counter(family.name)
            .with_description(family.help)
            .with_callback(move |o| {
                for (v, attrs) in source.series(&name) {
                    o.observe(v, &attrs);
                }
            })
            .build();
    } else {
        meter
            .f64_observable_gauge(family.name)
            .with_description(family.help)
            .with_callback(move |o| {
                for (v, attrs) in source.series(&name) {
                    o.observe(v, &attrs);
                }
            })
            .build();
    }
}

/// The metric exporter with its failures counted in herald's own metrics. Metrics are
/// cumulative: a failed export is made good by the next one.
struct CountingExporter {
    inner: opentelemetry_otlp::MetricExporter,
    metrics: SinkMetrics,
    /// Whether the collector takes metrics: logged when an outage begins and ends, not at
    /// every interval.
    reach: Reachability,
}

impl opentelemetry_sdk::metrics::exporter::PushMetricExporter for CountingExporter {
    async fn export(
        &self,
        metrics: &opentelemetry_sdk::metrics::data::ResourceMetrics,
    ) -> opentelemetry_sdk::error::OTelSdkResult {
        let r = self.inner.export(metrics).await;
        match &r {
            // Cumulative: the next export carries the same totals.
            Err(e) => {
                DeliveryFailed.emit(&self.metrics);
                self.reach.failed(e);
            }
            Ok(()) => self.reach.reached(),
        }
        r
    }

    fn force_flush(&self) -> opentelemetry_sdk::error::OTelSdkResult {
        self.inner.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> opentelemetry_sdk::error::OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn temporality(&self) -> Temporality {
        self.inner.temporality()
    }
}

/// The log record's severity (DESIGN §11): critical / high / warning / info as FATAL /
/// ERROR / WARN / INFO.
pub fn severity(s: crate::model::Severity) -> Severity {
    match s {
        crate::model::Severity::Critical => Severity::Fatal,
        crate::model::Severity::High => Severity::Error,
        crate::model::Severity::Warning => Severity::Warn,
        crate::model::Severity::Info => Severity::Info,
    }
}

/// Every field of the event's JSON, under `herald.`; `id` becomes `herald.event_id`.
pub fn attributes(line: &str) -> Vec<(Key, AnyValue)> {
    fn any(v: serde_json::Value) -> Option<AnyValue> {
        Some(match v {
            serde_json::Value::String(s) => AnyValue::from(s),
            serde_json::Value::Bool(b) => AnyValue::from(b),
            serde_json::Value::Number(n) => match n.as_i64() {
                Some(i) => AnyValue::from(i),
                None => AnyValue::from(n.as_f64()?),
            },
            serde_json::Value::Array(items) => {
                AnyValue::ListAny(Box::new(items.into_iter().filter_map(any).collect()))
            }
            serde_json::Value::Null | serde_json::Value::Object(_) => return None,
        })
    }
    let Ok(fields) = serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(line)
    else {
        return Vec::new();
    };
    fields
        .into_iter()
        .filter_map(|(k, v)| {
            let key = match k.as_str() {
                "id" => "herald.event_id".to_string(),
                _ => format!("herald.{k}"),
            };
            Some((Key::new(key), any(v)?))
        })
        .collect()
}

fn record(logger: &SdkLogger, d: &Delivery, severities: &crate::model::Severities) -> SdkLogRecord {
    let e = &d.event;
    let mut r = logger.create_log_record();
    let nanos = u64::try_from(e.stable_at.0).unwrap_or(0);
    r.set_timestamp(SystemTime::UNIX_EPOCH + Duration::from_nanos(nanos));
    r.set_observed_timestamp(SystemTime::now());
    let severity = severity(severities.of(&e.cluster, e.kind));
    r.set_severity_number(severity);
    r.set_severity_text(severity.name());
    r.set_event_name(e.kind.as_str());
    r.set_body(AnyValue::from(sentence(e)));
    r.add_attributes(attributes(&d.line));
    r
}

/// Exports the events in order, a batch at a time, each batch until the collector takes it;
/// the watermark moves only past exported events.
pub async fn run(
    name: String,
    connected: Connected,
    mut rx: Receiver<Delivery>,
    acked: Arc<AtomicU64>,
    (metrics, severities): (SinkMetrics, Arc<crate::model::Severities>),
) -> Result<(), SinkError> {
    let Connected { logs, reach, logger, scope, meters } = connected;
    let mut batch: Vec<Delivery> = Vec::with_capacity(BATCH);
    let mut closed_at: Option<tokio::time::Instant> = None;
    let result = loop {
        if batch.is_empty() {
            match rx.recv().await {
                Some(d) => batch.push(d),
                None => break Ok(()),
            }
        }
        while batch.len() < BATCH {
            match rx.try_recv() {
                Ok(d) => batch.push(d),
                Err(_) => break,
            }
        }
        let records: Vec<SdkLogRecord> =
            batch.iter().map(|d| record(&logger, d, &severities)).collect();
        let refs: Vec<(&SdkLogRecord, &InstrumentationScope)> =
            records.iter().map(|r| (r, &scope)).collect();
        let mut backoff = Backoff::new(Duration::from_millis(100));
        let exported = loop {
            match logs.export(LogBatch::new(&refs)).await {
                Ok(()) => break true,
                Err(e) => {
                    DeliveryFailed.emit(&metrics);
                    reach.failed(e);
                    let mut pause = crate::support::retry::jitter(backoff.step());
                    if rx.is_closed() {
                        let since = *closed_at.get_or_insert_with(tokio::time::Instant::now);
                        let left = CLOSING_GRACE.saturating_sub(since.elapsed());
                        if left.is_zero() {
                            break false;
                        }
                        pause = pause.min(left);
                    }
                    tokio::time::sleep(pause).await;
                }
            }
        };
        if !exported {
            break Err(SinkError::broker(
                &name,
                reach.what(),
                "collector unreachable at shutdown; undelivered events stay in the state file",
            ));
        }
        reach.reached();
        for d in batch.drain(..) {
            metrics.acked(d.event.stable_at);
            acked.store(d.seq, Ordering::Release);
        }
    };
    // A last export of the gauges, so the collector sees the final state. The provider's
    // calls block until its reader task answers: off the runtime's workers, and bounded.
    let flush = tokio::task::spawn_blocking(move || {
        let _ = meters.force_flush();
        let _ = meters.shutdown();
    });
    let _ = tokio::time::timeout(Duration::from_secs(5), flush).await;
    result
}
