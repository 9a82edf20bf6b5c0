//! The NATS sink against real servers: the machine's nats-server (JetStream) and, for the
//! restart test, one this test starts on a free port.

use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use tokio::sync::mpsc;

use herald::model::{ClusterEvent, EventKind, Timestamp};
use herald::pipeline::Delivery;
use herald::sinks::nats::{self, Config};
use herald::telemetry::metrics::Metrics;

const SHARED: &str = "127.0.0.1:4222";

fn shared_server() -> String {
    assert!(
        std::net::TcpStream::connect(SHARED).is_ok(),
        "no NATS server on {SHARED}: run scripts/services.sh (it starts nats-server with JetStream)"
    );
    format!("nats://{SHARED}")
}

fn unique(tag: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    format!("{tag}{}x{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed))
}

fn deliveries(from: u64, n: u64, first_seq: u64) -> Vec<Delivery> {
    (0..n)
        .map(|i| {
            let k = from + i;
            let cluster = ["east", "west"][(k % 2) as usize];
            let mut e = ClusterEvent::new(
                EventKind::NodeDown,
                cluster,
                Timestamp(k as i64),
                Timestamp(k as i64 + 5),
            );
            e.node = Some(format!("n{k}"));
            let e = e.seal(&[]);
            Delivery {
                seq: first_seq + i,
                line: Arc::from(serde_json::to_string(&e).unwrap()),
                event: e.into(),
            }
        })
        .collect()
}

fn config(url: &str, prefix: &str, jetstream: bool, stream: Option<&str>) -> Config {
    let text = format!(
        "url = {url:?}\nsubject_prefix = {prefix:?}\njetstream = {jetstream}\n{}",
        stream.map(|s| format!("stream = {s:?}\n")).unwrap_or_default()
    );
    toml::from_str(&text).unwrap()
}

struct Running {
    tx: mpsc::Sender<Delivery>,
    acked: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<Result<(), herald::sinks::SinkError>>,
}

async fn start(cfg: Config) -> Running {
    let metrics = Metrics::new().unwrap();
    let connected = tokio::time::timeout(Duration::from_secs(20), nats::connect("nats", &cfg))
        .await
        .expect("ready")
        .expect("connect");
    let (tx, rx) = mpsc::channel(1000);
    let acked = Arc::new(AtomicU64::new(0));
    let task = tokio::spawn(nats::run(cfg, connected, rx, acked.clone(), metrics.sink("nats")));
    Running { tx, acked, task }
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

/// Every message of `stream`, as (subject, Nats-Msg-Id, payload).
async fn stream_messages(url: &str, stream: &str) -> Vec<(String, String, String)> {
    let client = async_nats::connect(url).await.unwrap();
    let js = async_nats::jetstream::new(client);
    let mut s = js.get_stream(stream).await.unwrap();
    let count = s.info().await.unwrap().state.messages;
    let mut out = Vec::new();
    for seq in 1..=count {
        let m = s.get_raw_message(seq).await.unwrap();
        let id = m.headers.get("Nats-Msg-Id").map(|v| v.to_string()).unwrap_or_default();
        out.push((m.subject.to_string(), id, String::from_utf8_lossy(&m.payload).to_string()));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jetstream_stores_each_event_once_with_its_id_even_when_sent_twice() {
    let url = shared_server();
    let (prefix, stream) = (unique("herald_t"), unique("HERALD_T"));
    let r = start(config(&url, &prefix, true, Some(&stream))).await;
    let first = deliveries(0, 100, 1);
    for d in first.clone() {
        r.tx.send(d).await.unwrap();
    }
    assert!(acked_up_to(&r, 100, Duration::from_secs(20)).await);
    // The same events again (a redelivery after a crash): JetStream drops the duplicates.
    for d in deliveries(0, 100, 101) {
        r.tx.send(d).await.unwrap();
    }
    assert!(acked_up_to(&r, 200, Duration::from_secs(20)).await);
    let msgs = stream_messages(&url, &stream).await;
    assert_eq!(msgs.len(), 100, "each event once");
    for ((subject, id, payload), d) in msgs.iter().zip(&first) {
        assert_eq!(id, &d.event.id);
        assert_eq!(subject, &format!("{prefix}.{}.node.down", d.event.cluster));
        assert_eq!(payload.as_str(), &*d.line);
    }
    drop(r.tx);
    r.task.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn core_mode_publishes_on_cluster_and_kind_subjects() {
    let url = shared_server();
    let prefix = unique("herald_c");
    let client = async_nats::connect(url.as_str()).await.unwrap();
    let mut sub = client.subscribe(format!("{prefix}.west.>")).await.unwrap();
    client.flush().await.unwrap();
    let r = start(config(&url, &prefix, false, None)).await;
    for d in deliveries(0, 10, 1) {
        r.tx.send(d).await.unwrap();
    }
    assert!(acked_up_to(&r, 10, Duration::from_secs(10)).await);
    let mut got = Vec::new();
    while got.len() < 5 {
        let m = tokio::time::timeout(Duration::from_secs(5), sub.next())
            .await
            .expect("message")
            .expect("open");
        got.push(m.subject.to_string());
    }
    assert!(got.iter().all(|s| s == &format!("{prefix}.west.node.down")), "{got:?}");
}

/// A nats-server with JetStream on a free port and its own store; killed on drop.
struct OwnServer {
    child: Option<Child>,
    port: u16,
    store: tempfile::TempDir,
}

impl OwnServer {
    fn start() -> OwnServer {
        let port = crate::support::free_port();
        let mut s = OwnServer { child: None, port, store: tempfile::tempdir().unwrap() };
        s.spawn();
        s
    }

    fn spawn(&mut self) {
        let child = Command::new("nats-server")
            .args(["-a", "127.0.0.1", "-p", &self.port.to_string(), "-js", "-sd"])
            .arg(self.store.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nats-server (Debian package nats-server)");
        self.child = Some(child);
        assert!(crate::support::eventually(|| std::net::TcpStream::connect((
            "127.0.0.1",
            self.port
        ))
        .is_ok()));
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }
}

impl Drop for OwnServer {
    fn drop(&mut self) {
        self.stop();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_restarted_mid_stream_loses_nothing() {
    let mut server = OwnServer::start();
    let url = server.url();
    let r = start(config(&url, "herald", true, Some("HERALD"))).await;
    for d in deliveries(0, 50, 1) {
        r.tx.send(d).await.unwrap();
    }
    assert!(acked_up_to(&r, 50, Duration::from_secs(20)).await);
    server.stop();
    for d in deliveries(50, 50, 51) {
        r.tx.send(d).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        r.acked.load(Ordering::Acquire) < 100,
        "nothing is acknowledged while the server is away"
    );
    server.spawn();
    assert!(
        acked_up_to(&r, 100, Duration::from_secs(60)).await,
        "everything delivered once it is back"
    );
    let msgs = stream_messages(&url, "HERALD").await;
    let ids: std::collections::BTreeSet<&str> = msgs.iter().map(|(_, id, _)| id.as_str()).collect();
    assert_eq!((msgs.len(), ids.len()), (100, 100), "every event, once");
}

// ---- the NATS source, through the binary ---------------------------------------------------

fn sample_lines() -> Vec<String> {
    std::fs::read_to_string(crate::support::repo("samples/openziti-ha.jsonl"))
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

fn replayed() -> Vec<ClusterEvent> {
    let path = crate::support::repo("samples/openziti-ha.jsonl");
    crate::support::events(
        &crate::support::run(&["replay", "--cluster", "prod", path.to_str().unwrap()], b"").stdout,
    )
}

fn herald_with(dir: &std::path::Path, source: &str) -> (Child, std::path::PathBuf) {
    let out = dir.join("events.jsonl");
    let cfg = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n[state]\ndir = {:?}\n[sources.nats]\ntype = \"nats\"\nurl = \"nats://{SHARED}\"\ncluster = \"prod\"\n{source}\n[sinks.file]\ntype = \"file\"\npath = {:?}\n",
        dir.join("state").to_str().unwrap(),
        out.to_str().unwrap()
    );
    let cfg = crate::support::write_temp(dir, "herald.toml", cfg.as_bytes());
    let child = crate::support::herald()
        .args(["run", "--config", cfg.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    (child, out)
}

fn written(path: &std::path::Path) -> Vec<ClusterEvent> {
    std::fs::read(path).map(|b| crate::support::events(&b)).unwrap_or_default()
}

fn terminate(mut child: Child) {
    Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(child.wait().unwrap().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jetstream_durable_consumer_feeds_herald_and_is_acknowledged() {
    let url = shared_server();
    let (stream, subject) = (unique("HZ_SRC"), unique("hzsrc"));
    let client = async_nats::connect(url.as_str()).await.unwrap();
    let js = async_nats::jetstream::new(client);
    js.get_or_create_stream(async_nats::jetstream::stream::Config {
        name: stream.clone(),
        subjects: vec![format!("{subject}.>")],
        ..Default::default()
    })
    .await
    .unwrap();
    for l in sample_lines() {
        js.publish(format!("{subject}.events"), l.into_bytes().into())
            .await
            .unwrap()
            .await
            .unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let (child, out) = herald_with(
        dir.path(),
        &format!("subject = \"{subject}.events\"\nstream = \"{stream}\"\ndurable = \"herald\"\n"),
    );
    let want = replayed();
    assert!(
        crate::support::eventually(|| written(&out).len() >= want.len()),
        "{} of {}",
        written(&out).len(),
        want.len()
    );
    let mut consumer: async_nats::jetstream::consumer::PullConsumer =
        js.get_stream(&stream).await.unwrap().get_consumer("herald").await.unwrap();
    let mut settled = false;
    for _ in 0..100 {
        let info = consumer.info().await.unwrap();
        if info.num_ack_pending == 0 && info.num_pending == 0 {
            settled = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    terminate(child);
    assert!(settled, "every message acknowledged");
    assert_eq!(written(&out), want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_core_subject_feeds_herald() {
    let url = shared_server();
    let subject = unique("hzcore");
    let dir = tempfile::tempdir().unwrap();
    let (child, out) = herald_with(dir.path(), &format!("subject = \"{subject}\"\n"));
    let client = async_nats::connect(url.as_str()).await.unwrap();
    // Core NATS keeps nothing: publish once herald listens (it has no interest before). Each
    // record is the first report of its own router, so each yields one event whatever the
    // timing (live records of 2025 are late, by design, for anything windowed).
    tokio::time::sleep(Duration::from_millis(800)).await;
    for i in 0..20 {
        let line = format!(
            "{{\"namespace\":\"router\",\"event_src_id\":\"c1\",\"timestamp\":\"2025-01-10T18:00:{i:02}Z\",\"event_type\":\"router-online\",\"router_id\":\"r{i}\"}}"
        );
        client.publish(subject.clone(), line.into_bytes().into()).await.unwrap();
    }
    client.flush().await.unwrap();
    let routers = |p: &std::path::Path| {
        written(p)
            .iter()
            .filter_map(|e| e.router.clone())
            .collect::<std::collections::BTreeSet<_>>()
            .len()
    };
    assert!(crate::support::eventually(|| routers(&out) >= 20), "{} of 20", routers(&out));
    terminate(child);
    assert_eq!(written(&out).len(), 20);
}
