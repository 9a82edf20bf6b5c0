//! The OTLP sink against an OTLP receiver inside the test: the official collector services of
//! opentelemetry-proto, served over gRPC (tonic) and HTTP/protobuf (axum), recording every
//! request with its headers.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::logs::v1::logs_service_server::{
    LogsService, LogsServiceServer,
};
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{any_value::Value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::logs::v1::LogRecord;
use opentelemetry_proto::tonic::metrics::v1::{metric::Data, number_data_point::Value as Num};
use prost::Message;

use herald::model::{ClusterEvent, EventKind};

use crate::support::*;

/// What the receiver got: requests in arrival order, and the headers they came with.
#[derive(Clone, Default)]
struct Received {
    logs: Arc<Mutex<Vec<ExportLogsServiceRequest>>>,
    metrics: Arc<Mutex<Vec<ExportMetricsServiceRequest>>>,
    headers: Arc<Mutex<Vec<(String, String)>>>,
}

impl Received {
    fn header(&self, name: &str, value: &str) {
        self.headers.lock().unwrap().push((name.to_string(), value.to_string()));
    }

    fn records(&self) -> Vec<(BTreeMap<String, String>, LogRecord)> {
        let mut out = Vec::new();
        for req in self.logs.lock().unwrap().iter() {
            for rl in &req.resource_logs {
                let resource = rl
                    .resource
                    .as_ref()
                    .map(|r| flat(&r.attributes))
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(k, v)| (k, v.to_string()))
                    .collect::<BTreeMap<_, _>>();
                for sl in &rl.scope_logs {
                    for r in &sl.log_records {
                        out.push((resource.clone(), r.clone()));
                    }
                }
            }
        }
        out
    }

    /// The newest value of every series of `name`, by its attributes.
    fn series(&self, name: &str) -> BTreeMap<BTreeMap<String, String>, f64> {
        let mut out = BTreeMap::new();
        for req in self.metrics.lock().unwrap().iter() {
            for rm in &req.resource_metrics {
                for sm in &rm.scope_metrics {
                    for m in sm.metrics.iter().filter(|m| m.name == name) {
                        let points = match &m.data {
                            Some(Data::Gauge(g)) => &g.data_points,
                            Some(Data::Sum(s)) => &s.data_points,
                            _ => continue,
                        };
                        for p in points {
                            let attrs = flat(&p.attributes)
                                .into_iter()
                                .map(|(k, v)| (k, v.as_str().unwrap_or_default().to_string()))
                                .collect();
                            let v = match p.value {
                                Some(Num::AsDouble(d)) => d,
                                Some(Num::AsInt(i)) => i as f64,
                                None => f64::NAN,
                            };
                            out.insert(attrs, v);
                        }
                    }
                }
            }
        }
        out
    }
}

#[tonic::async_trait]
impl LogsService for Received {
    async fn export(
        &self,
        request: tonic::Request<ExportLogsServiceRequest>,
    ) -> Result<tonic::Response<ExportLogsServiceResponse>, tonic::Status> {
        for kv in request.metadata().iter() {
            if let tonic::metadata::KeyAndValueRef::Ascii(k, v) = kv {
                self.header(k.as_str(), v.to_str().unwrap_or_default());
            }
        }
        self.logs.lock().unwrap().push(request.into_inner());
        Ok(tonic::Response::new(ExportLogsServiceResponse::default()))
    }
}

#[tonic::async_trait]
impl MetricsService for Received {
    async fn export(
        &self,
        request: tonic::Request<ExportMetricsServiceRequest>,
    ) -> Result<tonic::Response<ExportMetricsServiceResponse>, tonic::Status> {
        self.metrics.lock().unwrap().push(request.into_inner());
        Ok(tonic::Response::new(ExportMetricsServiceResponse::default()))
    }
}

/// A receiver on `port`, in its own runtime thread; dropped with the test process.
fn serve(port: u16, grpc: bool) -> Received {
    let received = Received::default();
    let r = received.clone();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Runtime::new().expect("runtime");
        rt.block_on(async move {
            let listener =
                tokio::net::TcpListener::bind(("127.0.0.1", port)).await.expect("bind receiver");
            let _ = ready_tx.send(());
            if grpc {
                let incoming = tokio_stream_of(listener);
                tonic::transport::Server::builder()
                    .add_service(LogsServiceServer::new(r.clone()))
                    .add_service(MetricsServiceServer::new(r))
                    .serve_with_incoming(incoming)
                    .await
                    .expect("grpc receiver");
            } else {
                axum::serve(listener, http_app(r)).await.expect("http receiver");
            }
        });
    });
    ready_rx.recv_timeout(Duration::from_secs(10)).expect("receiver listening");
    received
}

fn tokio_stream_of(
    listener: tokio::net::TcpListener,
) -> impl futures_util::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    futures_util::stream::unfold(listener, |l| async move {
        let next = l.accept().await.map(|(s, _)| s);
        Some((next, l))
    })
}

fn http_app(r: Received) -> axum::Router {
    use axum::body::Bytes;
    use axum::http::{header, HeaderMap, StatusCode};
    use axum::routing::post;
    let record_headers = |r: &Received, h: &HeaderMap| {
        for (k, v) in h {
            r.header(k.as_str(), v.to_str().unwrap_or_default());
        }
    };
    let logs = {
        let r = r.clone();
        move |h: HeaderMap, body: Bytes| async move {
            record_headers(&r, &h);
            if h.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok())
                != Some("application/x-protobuf")
            {
                return (StatusCode::UNSUPPORTED_MEDIA_TYPE, Vec::new());
            }
            match ExportLogsServiceRequest::decode(body) {
                Ok(req) => {
                    r.logs.lock().unwrap().push(req);
                    (StatusCode::OK, ExportLogsServiceResponse::default().encode_to_vec())
                }
                Err(_) => (StatusCode::BAD_REQUEST, Vec::new()),
            }
        }
    };
    let metrics = move |body: Bytes| async move {
        match ExportMetricsServiceRequest::decode(body) {
            Ok(req) => {
                r.metrics.lock().unwrap().push(req);
                (StatusCode::OK, ExportMetricsServiceResponse::default().encode_to_vec())
            }
            Err(_) => (StatusCode::BAD_REQUEST, Vec::new()),
        }
    };
    axum::Router::new().route("/v1/logs", post(logs)).route("/v1/metrics", post(metrics))
}

/// Attributes as JSON values, for comparing with the event's own JSON.
fn flat(attrs: &[KeyValue]) -> BTreeMap<String, serde_json::Value> {
    attrs.iter().map(|kv| (kv.key.clone(), json(kv.value.as_ref()))).collect()
}

fn json(v: Option<&AnyValue>) -> serde_json::Value {
    match v.and_then(|v| v.value.as_ref()) {
        Some(Value::StringValue(s)) => s.clone().into(),
        Some(Value::BoolValue(b)) => (*b).into(),
        Some(Value::IntValue(i)) => (*i).into(),
        Some(Value::DoubleValue(d)) => (*d).into(),
        Some(Value::ArrayValue(a)) => a.values.iter().map(|v| json(Some(v))).collect(),
        other => panic!("unexpected attribute value {other:?}"),
    }
}

fn start(dir: &Path, sink: &str) -> Child {
    let cfg = tail_config(dir, &repo("samples/openziti-ha.jsonl"), sink);
    herald()
        .args(["run", "--config", cfg.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .stdin(Stdio::null())
        .spawn()
        .expect("start herald run")
}

fn stop(mut child: Child) {
    Command::new("kill").args(["-TERM", &child.id().to_string()]).status().expect("kill");
    let status = child.wait().expect("wait");
    assert!(status.success(), "herald exits 0 on SIGTERM: {status}");
}

fn wait(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn expected() -> Vec<ClusterEvent> {
    let out = run(
        &["replay", "--cluster", "prod", repo("samples/openziti-ha.jsonl").to_str().unwrap()],
        b"",
    );
    let events = events(&out.stdout);
    assert!(events.len() > 20, "the sample yields events");
    events
}

/// Every event arrived as exactly one log record carrying all of its fields.
fn check_logs(received: &Received, want: &[ClusterEvent]) {
    let records = received.records();
    let mut by_id: BTreeMap<String, Vec<&LogRecord>> = BTreeMap::new();
    for (resource, r) in &records {
        assert_eq!(resource.get("service.name").map(String::as_str), Some("\"herald\""));
        assert_eq!(
            resource.get("service.version"),
            Some(&format!("\"{}\"", env!("CARGO_PKG_VERSION")))
        );
        assert!(resource.get("service.instance.id").is_some_and(|v| v.len() > 2), "{resource:?}");
        assert_eq!(resource.get("deployment.environment").map(String::as_str), Some("\"test\""));
        let attrs = flat(&r.attributes);
        let id = attrs["herald.event_id"].as_str().expect("event id").to_string();
        by_id.entry(id).or_default().push(r);
    }
    let dups: Vec<_> = by_id.iter().filter(|(_, v)| v.len() > 1).map(|(k, _)| k).collect();
    assert!(dups.is_empty(), "log records delivered twice: {dups:?}");
    assert_eq!(by_id.len(), want.len(), "one log record per event");
    for e in want {
        let r = by_id.get(&e.id).unwrap_or_else(|| panic!("no log record for {e:?}"))[0];
        let mut fields: BTreeMap<String, serde_json::Value> = match serde_json::to_value(e).unwrap()
        {
            serde_json::Value::Object(m) => m.into_iter().collect(),
            _ => unreachable!(),
        };
        let id = fields.remove("id").unwrap();
        fields.insert("event_id".into(), id);
        let want_attrs: BTreeMap<String, serde_json::Value> =
            fields.into_iter().map(|(k, v)| (format!("herald.{k}"), v)).collect();
        assert_eq!(flat(&r.attributes), want_attrs, "attributes of {}", e.id);
        assert_eq!(r.time_unix_nano, e.stable_at.0 as u64, "timestamp = stable_at");
        assert!(r.observed_time_unix_nano > r.time_unix_nano, "observed now, after stable_at");
        // DESIGN §11: critical / high / warning / info as FATAL / ERROR / WARN / INFO.
        let (number, text) = match e.kind {
            EventKind::Leaderless | EventKind::SplitBrain => (21, "FATAL"),
            EventKind::NodeDown | EventKind::RouterOffline | EventKind::ReadOnly => (17, "ERROR"),
            EventKind::SpinStarted | EventKind::PeerDisconnected | EventKind::NodeIsLeaderless => {
                (13, "WARN")
            }
            _ => (9, "INFO"),
        };
        assert_eq!((r.severity_number, r.severity_text.as_str()), (number, text), "{:?}", e.kind);
        let body = json(r.body.as_ref());
        let body = body.as_str().unwrap_or_default();
        assert!(body.contains("prod") && body.len() > 12, "a sentence: {body:?}");
        assert_eq!(r.event_name, e.kind.as_str());
    }
}

/// The gauges and counters of the Prometheus sink, with the values the events imply.
fn check_metrics(received: &Received, want: &[ClusterEvent], sink: &str) {
    let mut transitions: BTreeMap<BTreeMap<String, String>, f64> = BTreeMap::new();
    for e in want {
        let key = BTreeMap::from([
            ("cluster".to_string(), "prod".to_string()),
            ("kind".to_string(), e.kind.as_str().to_string()),
            ("severity".to_string(), herald::model::Severity::of(e.kind).as_str().to_string()),
        ]);
        *transitions.entry(key).or_default() += 1.0;
    }
    let leader = want
        .iter()
        .rev()
        .find(|e| e.kind == EventKind::LeaderElected)
        .and_then(|e| e.leader_id.clone())
        .expect("a leader");
    let complete = || {
        received.series("herald_transitions_total") == transitions
            && received
                .series("herald_sink_events_total")
                .get(&BTreeMap::from([("sink".to_string(), sink.to_string())]))
                == Some(&(want.len() as f64))
    };
    wait("metrics that count every event", Duration::from_secs(30), complete);
    let leaders = received.series("herald_cluster_leader");
    assert_eq!(
        leaders,
        BTreeMap::from([(
            BTreeMap::from([
                ("cluster".to_string(), "prod".to_string()),
                ("leader_id".to_string(), leader)
            ]),
            1.0
        )])
    );
    let has_leader = received.series("herald_cluster_has_leader");
    assert_eq!(has_leader.values().copied().collect::<Vec<_>>(), vec![1.0]);
    let routers = received.series("herald_router_online");
    assert!(!routers.is_empty(), "router gauges exported");
    let records = received.series("herald_records_total");
    let ok = records
        .iter()
        .find(|(k, _)| k.get("outcome").map(String::as_str) == Some("ok"))
        .map(|(_, v)| *v);
    assert!(ok.is_some_and(|v| v > 0.0), "pipeline counters exported: {records:?}");
    let build = received.series("herald_build_info");
    assert_eq!(build.values().copied().collect::<Vec<_>>(), vec![1.0]);
}

#[test]
fn grpc_receiver_started_10s_late_still_gets_every_event_with_every_field() {
    let want = expected();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let child = start(
        dir.path(),
        &format!(
            "[sinks.otel]\ntype = \"otlp\"\nendpoint = \"http://127.0.0.1:{port}\"\nmetrics_interval = \"1s\"\ntimeout = \"2s\"\n[sinks.otel.headers]\nx-tenant = \"t1\"\n[sinks.otel.resource]\n\"deployment.environment\" = \"test\"\n"
        ),
    );
    // The collector is away: herald must hold every event and keep trying.
    std::thread::sleep(Duration::from_secs(10));
    let received = serve(port, true);
    wait("every log record", Duration::from_secs(60), || received.records().len() >= want.len());
    check_logs(&received, &want);
    check_metrics(&received, &want, "otel");
    assert!(
        received.headers.lock().unwrap().iter().any(|(k, v)| k == "x-tenant" && v == "t1"),
        "configured headers sent as gRPC metadata"
    );
    stop(child);
}

#[test]
fn http_protobuf_receiver_gets_logs_and_metrics() {
    let want = expected();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let received = serve(port, false);
    let child = start(
        dir.path(),
        &format!(
            "[sinks.otel]\ntype = \"otlp\"\nprotocol = \"http/protobuf\"\nendpoint = \"http://127.0.0.1:{port}\"\nmetrics_interval = \"1s\"\n[sinks.otel.headers]\nx-tenant = \"t2\"\n[sinks.otel.resource]\n\"deployment.environment\" = \"test\"\n"
        ),
    );
    wait("every log record", Duration::from_secs(30), || received.records().len() >= want.len());
    check_logs(&received, &want);
    check_metrics(&received, &want, "otel");
    assert!(
        received.headers.lock().unwrap().iter().any(|(k, v)| k == "x-tenant" && v == "t2"),
        "configured headers sent"
    );
    stop(child);
}
