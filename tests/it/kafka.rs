//! The Kafka sink against librdkafka's mock cluster: delivery with CloudEvents headers, order
//! per cluster, a broker outage, injected produce errors, an event too large to ever deliver.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::mocking::MockCluster;
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use tokio::sync::mpsc;

use herald::model::{ClusterEvent, EventKind, Timestamp};
use herald::pipeline::Delivery;
use herald::sinks::kafka::{self, Config};
use herald::telemetry::metrics::Metrics;

const TOPIC: &str = "herald-events";
const PARTITIONS: i32 = 3;

fn deliveries(n: u64, payload_pad: usize) -> Vec<Delivery> {
    (1..=n)
        .map(|seq| {
            let cluster = ["east", "west", "north"][(seq % 3) as usize];
            let mut e = ClusterEvent::new(
                EventKind::RouterOnline,
                cluster,
                Timestamp(seq as i64),
                Timestamp(seq as i64 + 1),
            );
            e.router = Some(format!("r{seq}{}", "x".repeat(payload_pad)));
            let e = e.seal(&[]);
            let line = serde_json::to_string(&e).unwrap();
            Delivery { seq, line: Arc::from(line), event: e.into() }
        })
        .collect()
}

fn config(bootstrap: &str, extra: &[(&str, &str)]) -> Config {
    let mut client: BTreeMap<String, String> =
        extra.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    client.insert("retry.backoff.ms".into(), "50".into());
    Config {
        brokers: Some(bootstrap.to_string()),
        topic: Some(TOPIC.into()),
        source: Some("urn:herald:test".into()),
        client,
        encoding: Default::default(),
    }
}

struct Running {
    tx: mpsc::Sender<Delivery>,
    acked: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<Result<(), herald::sinks::SinkError>>,
    metrics: Arc<Metrics>,
}

async fn start(cfg: Config) -> Running {
    let metrics = Arc::new(Metrics::new().unwrap());
    let sm = metrics.sink("kafka");
    let acked = Arc::new(AtomicU64::new(0));
    let connecting = kafka::connect("kafka", &cfg, &sm, acked.clone());
    let connected = tokio::time::timeout(Duration::from_secs(30), connecting)
        .await
        .expect("ready within 30 s")
        .expect("connect");
    let (tx, rx) = mpsc::channel(1000);
    let task = tokio::spawn(kafka::run(cfg, connected, rx, sm, kafka::Opaque::from));
    Running { tx, acked, task, metrics }
}

async fn acked_up_to(r: &Running, seq: u64, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if r.acked.load(Ordering::Acquire) >= seq {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

/// Everything in the topic, by partition, read with `assign()` (no group join).
fn consume(bootstrap: &str, want: usize) -> Vec<rdkafka::message::OwnedMessage> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "herald-test")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        tpl.add_partition_offset(TOPIC, p, Offset::Beginning).unwrap();
    }
    consumer.assign(&tpl).unwrap();
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while out.len() < want && Instant::now() < deadline {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
            out.push(m.detach());
        }
    }
    out
}

fn header(m: &rdkafka::message::OwnedMessage, key: &str) -> Option<String> {
    let h = m.headers()?;
    (0..h.count())
        .map(|i| h.get(i))
        .find(|h| h.key == key)
        .and_then(|h| h.value.map(|v| String::from_utf8_lossy(v).to_string()))
}

/// Per key, the events' sequence numbers in the order the topic holds them.
fn order_per_cluster(msgs: &[rdkafka::message::OwnedMessage]) -> BTreeMap<String, Vec<u64>> {
    let mut by: BTreeMap<String, Vec<(i32, i64, u64)>> = BTreeMap::new();
    for m in msgs {
        let key = String::from_utf8_lossy(m.key().unwrap()).to_string();
        let e: ClusterEvent = serde_json::from_slice(m.payload().unwrap()).unwrap();
        by.entry(key).or_default().push((m.partition(), m.offset(), e.at.as_unix_nanos() as u64));
    }
    by.into_iter()
        .map(|(k, mut v)| {
            v.sort();
            assert!(v.windows(2).all(|w| w[0].0 == w[1].0), "one cluster, one partition");
            (k, v.into_iter().map(|(_, _, s)| s).collect())
        })
        .collect()
}

fn mock() -> MockCluster<'static, rdkafka::producer::DefaultProducerContext> {
    let m = MockCluster::new(3).unwrap();
    m.create_topic(TOPIC, PARTITIONS, 3).unwrap();
    m
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_arrive_with_cloudevents_headers_keyed_and_ordered_by_cluster() {
    let m = mock();
    let r = start(config(&m.bootstrap_servers(), &[])).await;
    let ds = deliveries(300, 0);
    for d in ds.clone() {
        r.tx.send(d).await.unwrap();
    }
    assert!(acked_up_to(&r, 300, Duration::from_secs(30)).await, "all acknowledged");
    let msgs = tokio::task::spawn_blocking({
        let b = m.bootstrap_servers();
        move || consume(&b, 300)
    })
    .await
    .unwrap();
    assert_eq!(msgs.len(), 300);
    for (k, seqs) in order_per_cluster(&msgs) {
        assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{k} out of order");
    }
    let byid: BTreeMap<String, &Delivery> = ds.iter().map(|d| (d.event.id.clone(), d)).collect();
    for msg in &msgs {
        let id = header(msg, "ce_id").unwrap();
        let d = byid[&id];
        assert_eq!(msg.payload().unwrap(), d.line.as_bytes());
        assert_eq!(header(msg, "ce_specversion").as_deref(), Some("1.0"));
        assert_eq!(header(msg, "ce_type").as_deref(), Some("router.online"));
        assert_eq!(header(msg, "ce_source").as_deref(), Some("urn:herald:test"));
        assert_eq!(header(msg, "ce_time"), Some(d.event.stable_at.to_rfc3339()));
        assert_eq!(header(msg, "content-type").as_deref(), Some("application/json"));
        assert_eq!(msg.key().unwrap(), d.event.cluster.as_bytes());
    }
    drop(r.tx);
    r.task.await.unwrap().unwrap();
    assert_eq!(r.metrics.sink("kafka").events.get(), 300);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_outage_loses_nothing_and_keeps_order() {
    let m = mock();
    let r = start(config(&m.bootstrap_servers(), &[])).await;
    let ds = deliveries(200, 0);
    for d in ds[..50].iter().cloned() {
        r.tx.send(d).await.unwrap();
    }
    assert!(acked_up_to(&r, 50, Duration::from_secs(30)).await);
    for b in 1..=3 {
        m.broker_down(b).unwrap();
    }
    for d in ds[50..].iter().cloned() {
        r.tx.send(d).await.unwrap();
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        r.acked.load(Ordering::Acquire) < 200,
        "nothing can be acknowledged while every broker is down"
    );
    for b in 1..=3 {
        m.broker_up(b).unwrap();
    }
    assert!(
        acked_up_to(&r, 200, Duration::from_secs(60)).await,
        "delivered once the brokers are back"
    );
    let msgs = tokio::task::spawn_blocking({
        let b = m.bootstrap_servers();
        move || consume(&b, 200)
    })
    .await
    .unwrap();
    let ids: std::collections::BTreeSet<String> =
        msgs.iter().filter_map(|m| header(m, "ce_id")).collect();
    assert_eq!(ids.len(), 200, "every event, once (idempotent producer)");
    assert_eq!(msgs.len(), 200);
    for (k, seqs) in order_per_cluster(&msgs) {
        assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{k} out of order after the outage");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn injected_produce_errors_are_retried_without_loss() {
    let m = mock();
    // Transient errors on the next produce requests: librdkafka retries them.
    m.request_errors(
        RDKafkaApiKey::Produce,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS; 4],
    );
    let r = start(config(&m.bootstrap_servers(), &[])).await;
    for d in deliveries(60, 0) {
        r.tx.send(d).await.unwrap();
    }
    assert!(acked_up_to(&r, 60, Duration::from_secs(30)).await);
    let msgs = tokio::task::spawn_blocking({
        let b = m.bootstrap_servers();
        move || consume(&b, 60)
    })
    .await
    .unwrap();
    assert_eq!(msgs.len(), 60, "every event, despite the injected errors");
    for (k, seqs) in order_per_cluster(&msgs) {
        assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{k} out of order");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_that_can_never_be_delivered_is_reported_and_passed_over() {
    let m = mock();
    let r = start(config(&m.bootstrap_servers(), &[("message.max.bytes", "2000")])).await;
    let mut ds = deliveries(20, 0);
    // Event 10 is larger than the producer may ever send.
    let big = &deliveries(10, 5000)[9];
    ds[9] = Delivery { seq: 10, line: big.line.clone(), event: big.event.clone() };
    for d in ds {
        r.tx.send(d).await.unwrap();
    }
    assert!(acked_up_to(&r, 20, Duration::from_secs(30)).await, "the sink goes on past it");
    assert_eq!(r.metrics.sink("kafka").errors.get(), 1, "counted once, as an error");
    assert_eq!(r.metrics.sink("kafka").events.get(), 19, "the other 19 were delivered");
    let msgs = tokio::task::spawn_blocking({
        let b = m.bootstrap_servers();
        move || consume(&b, 1)
    })
    .await
    .unwrap();
    assert!(!msgs.is_empty());
    assert!(msgs.iter().all(|m| header(m, "ce_id").as_deref() != Some(big.event.id.as_str())));
}

// ---- end to end, with a real broker ---------------------------------------------------------

/// The broker `scripts/services.sh` runs (tansu on 127.0.0.1:9092); its absence fails loudly.
fn broker() -> &'static str {
    let addr = "127.0.0.1:9092";
    assert!(
        std::net::TcpStream::connect(addr).is_ok(),
        "no Kafka-compatible broker on {addr}: run scripts/services.sh (it starts tansu)"
    );
    addr
}

fn create_topic(name: &str) {
    let out = std::process::Command::new("tansu")
        .args(["topic", "create", name, "--partitions", "3", "--broker", "tcp://127.0.0.1:9092"])
        .output()
        .expect("tansu topic create (scripts/services.sh installs tansu)");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn herald_to_tansu_read_back_by_an_independent_client() {
    use crate::support::*;
    use std::process::{Command, Stdio};
    let bootstrap = broker();
    let topic = format!("herald-e2e-{}", std::process::id());
    create_topic(&topic);
    let dir = tempfile::tempdir().unwrap();
    let log = write_temp(
        dir.path(),
        "events.log",
        &run(&["generate", "--seed", "21", "--lines", "8000"], b"").stdout,
    );
    let out_path = dir.path().join("events.jsonl");
    let cfg = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n[state]\ndir = {:?}\n\
         [sources.log]\ntype = \"file\"\npath = {:?}\ncluster = \"prod\"\n\
         [sinks.file]\ntype = \"file\"\npath = {:?}\n\
         [sinks.kafka]\ntype = \"kafka\"\nbrokers = \"{bootstrap}\"\ntopic = \"{topic}\"\nsource = \"urn:herald:e2e\"\n",
        dir.path().join("state").to_str().unwrap(),
        log.to_str().unwrap(),
        out_path.to_str().unwrap()
    );
    let cfg = write_temp(dir.path(), "herald.toml", cfg.as_bytes());
    let want = events(&run(&["replay", "--cluster", "prod", log.to_str().unwrap()], b"").stdout);
    let mut child = herald()
        .args(["run", "--config", cfg.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let written =
        || std::fs::read(&out_path).map(|b| b.iter().filter(|c| **c == b'\n').count()).unwrap_or(0);
    assert!(
        eventually(|| written() >= want.len()),
        "file sink got {} of {}",
        written(),
        want.len()
    );
    std::thread::sleep(std::time::Duration::from_millis(500));
    Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(child.wait().unwrap().success());

    let consumed = Command::new("python3")
        .arg(repo("tests/kafka_consume.py"))
        .args([bootstrap, &topic, &want.len().to_string(), "60"])
        .output()
        .expect("python3 with kafka-python (scripts/services.sh installs it)");
    assert!(consumed.status.success(), "{}", String::from_utf8_lossy(&consumed.stderr));
    let records: Vec<serde_json::Value> = String::from_utf8_lossy(&consumed.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let sunk = events(&std::fs::read(&out_path).unwrap());
    assert_eq!(sunk, want, "the file sink holds exactly what replay emits");
    assert_eq!(records.len(), want.len(), "one Kafka record per event");
    // Per cluster (the key), the topic holds the events in the order they were emitted.
    let mut by_partition: BTreeMap<i64, Vec<&serde_json::Value>> = BTreeMap::new();
    for r in &records {
        by_partition.entry(r["partition"].as_i64().unwrap()).or_default().push(r);
    }
    let mut from_kafka: Vec<String> = Vec::new();
    for rs in by_partition.values_mut() {
        rs.sort_by_key(|r| r["offset"].as_i64().unwrap());
        from_kafka.extend(rs.iter().map(|r| r["value"]["id"].as_str().unwrap().to_string()));
    }
    let expected_order: Vec<String> = want.iter().map(|e| e.id.clone()).collect();
    let clusters: std::collections::BTreeSet<&str> =
        records.iter().map(|r| r["key"].as_str().unwrap()).collect();
    assert_eq!(clusters.into_iter().collect::<Vec<_>>(), ["prod"]);
    assert_eq!(from_kafka, expected_order, "same ids, same order for the cluster");
    for r in &records {
        let (h, v) = (&r["headers"], &r["value"]);
        assert_eq!(h["ce_specversion"], "1.0");
        assert_eq!(h["ce_source"], "urn:herald:e2e");
        assert_eq!(h["content-type"], "application/json");
        assert_eq!(h["ce_id"], v["id"]);
        assert_eq!(h["ce_type"], v["kind"]);
        assert_eq!(h["ce_time"], v["stable_at"]);
    }
}
