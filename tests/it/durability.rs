//! Durability under fire (DESIGN §7): the real binary, a 100,000-line log, and brokers this
//! test owns — killed, stopped for a minute, restarted. Every event must arrive, by id; the
//! duplicates at-least-once allows are counted and printed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use rand::{Rng, SeedableRng};

use herald::model::ClusterEvent;

use crate::support::*;

const LINES: &str = "100000";

/// The log and what a clean run emits for it (`run` over a complete file equals `replay`).
fn workload(dir: &Path) -> (PathBuf, Vec<ClusterEvent>) {
    let log = write_temp(
        dir,
        "events.log",
        &run(&["generate", "--seed", "9", "--lines", LINES, "--controllers", "3"], b"").stdout,
    );
    let want = events(&run(&["replay", "--cluster", "prod", log.to_str().unwrap()], b"").stdout);
    assert!(want.len() > 1000, "a workload with events: {}", want.len());
    (log, want)
}

pub fn herald_run(dir: &Path, log: &Path, sink: &str) -> Child {
    herald_run_config(dir, &tail_config(dir, log, sink))
}

/// `herald run` on `cfg`, logging to `dir/herald.log`.
pub fn herald_run_config(dir: &Path, cfg: &Path) -> Child {
    herald()
        .args(["run", "--config", cfg.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(dir.join("herald.log"))
                .expect("log file"),
        )
        .stdin(Stdio::null())
        .spawn()
        .expect("start herald run")
}

pub fn signal(child: &mut Child, sig: &str) {
    Command::new("kill").args([sig, &child.id().to_string()]).status().expect("kill");
    let _ = child.wait();
}

/// Every wanted event arrived, each equal to the clean run's; none that was not wanted.
/// Returns the number of duplicates.
fn check(what: &str, got: &[ClusterEvent], want: &[ClusterEvent]) -> usize {
    let want_by_id: BTreeMap<&str, &ClusterEvent> =
        want.iter().map(|e| (e.id.as_str(), e)).collect();
    let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
    for e in got {
        let w = want_by_id
            .get(e.id.as_str())
            .unwrap_or_else(|| panic!("{what}: an event no clean run emits: {e:?}"));
        assert_eq!(e, *w, "{what}: same id, same event");
        *seen.entry(e.id.as_str()).or_default() += 1;
    }
    let missing: Vec<&&ClusterEvent> =
        want_by_id.iter().filter(|(id, _)| !seen.contains_key(*id)).map(|(_, e)| e).collect();
    assert!(
        missing.is_empty(),
        "{what}: {} of {} events missing, e.g. {:?}",
        missing.len(),
        want.len(),
        missing.iter().take(3).collect::<Vec<_>>()
    );
    let duplicates: usize = seen.values().map(|n| n - 1).sum();
    let twice = seen.values().filter(|n| **n > 1).count();
    eprintln!(
        "{what}: {} events, every id at least once; {duplicates} duplicates ({twice} ids delivered more than once)",
        want.len()
    );
    duplicates
}

/// A broker this test owns: stopped and started at will, its contents read back.
pub trait Broker {
    fn up(&mut self);
    fn down(&mut self);
    /// herald's `[sinks.*]` table for it, with `extra` appended.
    fn sink(&self, extra: &str) -> String;
    /// Every event stored, duplicates included.
    fn events(&self) -> Vec<ClusterEvent>;
    /// Events stored so far (progress, for the log).
    fn count(&self) -> usize;
    /// Where a disk buffer for the sink lives under the state dir.
    fn buffer(&self) -> &'static str;

    fn wait_for(&self, want: usize, limit: Duration) -> Vec<ClusterEvent> {
        let deadline = Instant::now() + limit;
        loop {
            let got = self.events();
            let unique: std::collections::BTreeSet<&str> =
                got.iter().map(|e| e.id.as_str()).collect();
            if unique.len() >= want || Instant::now() > deadline {
                return got;
            }
            std::thread::sleep(Duration::from_secs(1));
        }
    }
}

// ---------------------------------------------------------------------------------------
// NATS JetStream, on a server this test starts.

struct NatsServer {
    child: Option<Child>,
    port: u16,
    store: PathBuf,
}

impl NatsServer {
    fn start(dir: &Path) -> NatsServer {
        let mut s = NatsServer { child: None, port: free_port(), store: dir.join("jetstream") };
        s.up();
        s
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }
}

impl Broker for NatsServer {
    fn buffer(&self) -> &'static str {
        "js"
    }

    fn up(&mut self) {
        let child = Command::new("nats-server")
            .args(["-a", "127.0.0.1", "-p", &self.port.to_string(), "-js", "-sd"])
            .arg(&self.store)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nats-server (scripts/services.sh installs it)");
        self.child = Some(child);
        let addr = format!("127.0.0.1:{}", self.port);
        assert!(
            eventually(|| std::net::TcpStream::connect(&addr).is_ok()),
            "nats-server listening on {addr}"
        );
    }

    fn down(&mut self) {
        if let Some(mut c) = self.child.take() {
            signal(&mut c, "-KILL");
        }
    }

    fn sink(&self, extra: &str) -> String {
        format!(
            "[sinks.js]\ntype = \"nats\"\nurl = \"{}\"\nsubject_prefix = \"herald\"\njetstream = true\nstream = \"HERALD\"\n{extra}",
            self.url()
        )
    }

    fn count(&self) -> usize {
        let url = self.url();
        let rt = tokio::runtime::Runtime::new().expect("runtime");
        rt.block_on(async move {
            let client = async_nats::connect(url).await.expect("connect");
            let js = async_nats::jetstream::new(client);
            let Ok(mut stream) = js.get_stream("HERALD").await else { return 0 };
            stream.info().await.map(|i| i.state.messages as usize).unwrap_or(0)
        })
    }

    /// Every message in the stream, as events.
    fn events(&self) -> Vec<ClusterEvent> {
        let url = self.url();
        let rt = tokio::runtime::Runtime::new().expect("runtime");
        rt.block_on(async move {
            let client = async_nats::connect(url).await.expect("connect");
            let js = async_nats::jetstream::new(client);
            let Ok(mut stream) = js.get_stream("HERALD").await else { return Vec::new() };
            let count = stream.info().await.expect("stream info").state.messages as usize;
            let consumer = stream
                .create_consumer(async_nats::jetstream::consumer::pull::Config {
                    ack_policy: async_nats::jetstream::consumer::AckPolicy::None,
                    ..Default::default()
                })
                .await
                .expect("consumer");
            let mut messages = consumer.messages().await.expect("messages");
            let mut out = Vec::with_capacity(count);
            while out.len() < count {
                let next = tokio::time::timeout(Duration::from_secs(10), messages.next()).await;
                let Ok(Some(Ok(m))) = next else { break };
                out.push(serde_json::from_slice(&m.payload).expect("an event"));
            }
            out
        })
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.down();
    }
}

/// Kills herald at `kills` random moments of its run, restarting it each time, then lets it
/// finish.
fn kill_repeatedly(dir: &Path, log: &Path, sink: &str, kills: usize, progress: impl Fn() -> usize) {
    let seed: u64 = rand::rng().random();
    eprintln!("kill points from seed {seed}");
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    for _ in 0..kills {
        let mut child = herald_run(dir, log, sink);
        std::thread::sleep(Duration::from_millis(rng.random_range(100..500)));
        signal(&mut child, "-KILL");
        eprintln!("SIGKILL; {} events in the broker so far", progress());
    }
}

fn sigkilled_ten_times(
    broker: &impl Broker,
    dir: &Path,
    log: &Path,
    want: &[ClusterEvent],
    what: &str,
) {
    let sink = broker.sink("");
    kill_repeatedly(dir, log, &sink, 10, || broker.count());
    let mut child = herald_run(dir, log, &sink);
    let got = broker.wait_for(want.len(), Duration::from_secs(180));
    signal(&mut child, "-TERM");
    check(what, &got, want);
}

fn stopped_for_60s(
    broker: &mut impl Broker,
    dir: &Path,
    log: &Path,
    want: &[ClusterEvent],
    what: &str,
) {
    let mut child = herald_run(dir, log, &broker.sink(""));
    std::thread::sleep(Duration::from_millis(700));
    let before = broker.count();
    broker.down();
    std::thread::sleep(Duration::from_secs(60));
    broker.up();
    let got = broker.wait_for(want.len(), Duration::from_secs(180));
    signal(&mut child, "-TERM");
    let log_text = std::fs::read_to_string(dir.join("herald.log")).unwrap_or_default();
    eprintln!(
        "herald's log, last lines:\n{}",
        log_text
            .lines()
            .rev()
            .take(15)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(before < want.len(), "the broker stopped mid-stream: {before} of {}", want.len());
    check(what, &got, want);
    // An outage is logged when it starts and when it ends, not once per event or retry.
    let warnings = log_text.lines().filter(|l| l.contains(" WARN ")).count();
    assert!(warnings <= 6, "{what}: {warnings} warnings for one outage:\n{log_text}");
}

fn killed_during_outage_with_disk_buffer(
    broker: &mut impl Broker,
    dir: &Path,
    log: &Path,
    want: &[ClusterEvent],
    what: &str,
) {
    let sink = broker.sink(&format!("[sinks.{}.buffer]\ntype = \"disk\"\n", broker.buffer()));
    let mut child = herald_run(dir, log, &sink);
    std::thread::sleep(Duration::from_millis(700));
    broker.down();
    // herald keeps reading into its disk buffer while the broker is away; then it dies.
    std::thread::sleep(Duration::from_secs(3));
    signal(&mut child, "-KILL");
    let segments = std::fs::read_dir(dir.join("state/buffers").join(broker.buffer()))
        .map(|d| {
            d.filter_map(|e| e.ok())
                .filter(|e| e.path().extension().is_some_and(|x| x == "seg"))
                .count()
        })
        .unwrap_or(0);
    assert!(segments > 0, "the disk buffer holds segments");
    broker.up();
    let mut child = herald_run(dir, log, &sink);
    let got = broker.wait_for(want.len(), Duration::from_secs(180));
    signal(&mut child, "-TERM");
    check(what, &got, want);
}

#[test]
fn jetstream_sigkill_at_ten_random_points_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (log, want) = workload(dir.path());
    let nats = NatsServer::start(dir.path());
    sigkilled_ten_times(&nats, dir.path(), &log, &want, "jetstream after 10 SIGKILLs");
}

#[test]
fn jetstream_stopped_for_60s_mid_stream_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (log, want) = workload(dir.path());
    let mut nats = NatsServer::start(dir.path());
    stopped_for_60s(&mut nats, dir.path(), &log, &want, "jetstream after a 60 s outage");
}

/// The connection drops while a thousand PubAcks are on their way: every one of them is lost.
/// They time out together, so the stream is complete soon after; awaited one after another
/// (as they once were), the lost acks alone took 1,024 × 5 s.
#[test]
fn jetstream_acks_lost_with_the_connection_time_out_together_not_one_after_another() {
    let dir = tempfile::tempdir().unwrap();
    let (log, want) = workload(dir.path());
    let nats = NatsServer::start(dir.path());
    let proxy = Proxy::start(nats.port);
    // A few hundred events in, the connection stalls while herald keeps publishing up to its
    // in-flight limit; then it goes, and every ack herald waits for with it.
    proxy.stall_after(256 * 1024);
    let sink = nats.sink("").replace(&nats.url(), &format!("nats://127.0.0.1:{}", proxy.port));
    let mut child = herald_run(dir.path(), &log, &sink);
    assert!(eventually(|| proxy.stalled()), "herald publishes through the proxy");
    std::thread::sleep(Duration::from_secs(2));
    let stalled_at = nats.count();
    proxy.close();
    std::thread::sleep(Duration::from_secs(1));
    proxy.open();
    let got = nats.wait_for(want.len(), Duration::from_secs(120));
    // Not a shutdown test: with acks awaited one after another, it would take as long.
    signal(&mut child, "-KILL");
    assert!(stalled_at < want.len(), "the acks stopped mid-stream: {stalled_at} of {}", want.len());
    check("jetstream after a thousand lost acks", &got, &want);
}

#[test]
fn disk_buffer_killed_while_jetstream_is_down_delivers_everything_after() {
    let dir = tempfile::tempdir().unwrap();
    let (log, want) = workload(dir.path());
    let mut nats = NatsServer::start(dir.path());
    let what = "jetstream with a disk buffer, killed during an outage";
    killed_during_outage_with_disk_buffer(&mut nats, dir.path(), &log, &want, what);
}

// ---------------------------------------------------------------------------------------
// Kafka: a tansu broker this test starts, reached through a TCP proxy that the test opens
// and closes. tansu advertises the proxy's address, so every connection — herald's and the
// reading client's — goes through it; closing it is a broker outage (connections reset, new
// ones refused) while tansu keeps the topic in memory.

pub struct Tansu {
    child: Child,
    pub proxy: Proxy,
    pub topic: String,
    listen: String,
}

impl Tansu {
    pub fn start() -> Tansu {
        Tansu::start_on("memory://tansu/")
    }

    fn start_on(storage: &str) -> Tansu {
        let port = free_port();
        let proxy = Proxy::start(port);
        let listen = format!("tcp://127.0.0.1:{port}");
        let advertised = format!("tcp://127.0.0.1:{}", proxy.port);
        let child = Command::new("tansu")
            .args(["broker", "--listener-url", &listen, "--advertised-listener-url", &advertised])
            .args(["--storage-engine", storage])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("tansu (scripts/services.sh installs it)");
        let addr = format!("127.0.0.1:{port}");
        assert!(
            eventually(|| std::net::TcpStream::connect(&addr).is_ok()),
            "tansu listening on {addr}"
        );
        let t = Tansu { child, proxy, topic: "herald".into(), listen };
        t.create(&t.topic);
        t
    }

    /// Creates a topic of three partitions.
    pub fn create(&self, topic: &str) {
        self.create_with(topic, 3)
    }

    pub fn create_with(&self, topic: &str, partitions: u32) {
        let partitions = partitions.to_string();
        let out = Command::new("tansu")
            .args(["topic", "create", topic, "--partitions", &partitions, "--broker", &self.listen])
            .output()
            .expect("tansu topic create");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }

    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.proxy.port)
    }

    /// Every record of `topic`, duplicates included, as kafka-python reads it: partition,
    /// offset, key, headers, value.
    pub fn records(&self, topic: &str) -> Vec<serde_json::Value> {
        let out = Command::new("python3")
            .arg(repo("tests/kafka_consume.py"))
            .args([&self.bootstrap(), topic, "0", "60"])
            .output()
            .expect("python3 with kafka-python (scripts/services.sh installs it)");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| serde_json::from_str(l).expect("a record"))
            .collect()
    }
}

impl Broker for Tansu {
    fn buffer(&self) -> &'static str {
        "kafka"
    }

    fn up(&mut self) {
        self.proxy.open();
    }

    fn down(&mut self) {
        self.proxy.close();
    }

    fn sink(&self, extra: &str) -> String {
        format!(
            "[sinks.kafka]\ntype = \"kafka\"\nbrokers = \"{}\"\ntopic = \"{}\"\n{extra}",
            self.bootstrap(),
            self.topic,
        )
    }

    fn events(&self) -> Vec<ClusterEvent> {
        self.records(&self.topic)
            .into_iter()
            .map(|r| serde_json::from_value(r["value"].clone()).expect("an event"))
            .collect()
    }

    fn count(&self) -> usize {
        // Progress only: a broker that is away counts as nothing yet.
        Command::new("python3")
            .arg(repo("tests/kafka_consume.py"))
            .args([&self.bootstrap(), &self.topic, "-1", "20"])
            .output()
            .ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
            .unwrap_or(0)
    }
}

impl Drop for Tansu {
    fn drop(&mut self) {
        self.proxy.close();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn kafka_sigkill_at_ten_random_points_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (log, want) = workload(dir.path());
    let tansu = Tansu::start();
    sigkilled_ten_times(&tansu, dir.path(), &log, &want, "kafka after 10 SIGKILLs");
}

#[test]
fn kafka_stopped_for_60s_mid_stream_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (log, want) = workload(dir.path());
    let mut tansu = Tansu::start();
    stopped_for_60s(&mut tansu, dir.path(), &log, &want, "kafka after a 60 s outage");
}

#[test]
fn disk_buffer_killed_while_kafka_is_down_delivers_everything_after() {
    let dir = tempfile::tempdir().unwrap();
    let (log, want) = workload(dir.path());
    let mut tansu = Tansu::start();
    let what = "kafka with a disk buffer, killed during an outage";
    killed_during_outage_with_disk_buffer(&mut tansu, dir.path(), &log, &want, what);
}

/// Item 4 of the incremental state store: herald killed at random points while it commits a
/// state of 100,000 keys. After each restart the store opens (herald is still running when
/// the next kill comes); across all runs no event appears that `replay` of the same input
/// would not produce (the same id again is allowed), and every event `replay` produces
/// appears, so no pending window was forgotten.
#[test]
fn killed_at_random_points_while_committing_100k_keys_the_store_opens_and_nothing_is_spurious_or_forgotten(
) {
    let dir = tempfile::tempdir().expect("tempdir");
    let dir = dir.path();
    let generated =
        run(&["generate", "--routers", "100000", "--router-flips", "--lines", "130000"], b"");
    let log = write_temp(dir, "routers.log", &generated.stdout);
    let want = events(&run(&["replay", "--cluster", "prod", log.to_str().unwrap()], b"").stdout);
    assert!(want.len() > 100_000, "a workload of 100,000 keys: {} events", want.len());
    let out = dir.join("events.jsonl");
    let sink = format!("[sinks.out]\ntype = \"file\"\npath = {:?}\n", out.to_str().unwrap());
    let count = || std::fs::read(&out).map(|b| b.iter().filter(|c| **c == b'\n').count());
    let seed: u64 = rand::rng().random();
    eprintln!("kill points from seed {seed}");
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    for kill in 0..6 {
        let mut child = herald_run(dir, &log, &sink);
        std::thread::sleep(Duration::from_millis(rng.random_range(300..2500)));
        let alive = child.try_wait().expect("try_wait").is_none();
        let log_text = std::fs::read_to_string(dir.join("herald.log")).unwrap_or_default();
        assert!(alive, "restart {kill}: herald exited; its log:\n{log_text}");
        signal(&mut child, "-KILL");
        eprintln!("SIGKILL {kill}; {} events out so far", count().unwrap_or(0));
    }
    let mut child = herald_run(dir, &log, &sink);
    let deadline = Instant::now() + Duration::from_secs(300);
    while count().unwrap_or(0) < want.len() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_millis(500));
    signal(&mut child, "-TERM");
    let got: Vec<ClusterEvent> = std::fs::read_to_string(&out)
        .expect("events")
        .lines()
        .map(|l| serde_json::from_str(l).expect("an event"))
        .collect();
    check("100,000 keys, 6 SIGKILLs during commits", &got, &want);
}

/// fjall's first of two background workers hands every compaction on to the second, and
/// while that one is busy takes it back from the queue and hands it on again: a core spent
/// spinning for as long as a compaction runs. The store runs one worker.
#[test]
fn the_state_store_runs_one_background_worker_so_none_spins_handing_compactions_on() {
    let dir = tempfile::tempdir().expect("dir");
    let log = write_temp(
        dir.path(),
        "ctrl.log",
        cluster_line("ctrl1", "peer.connected", &peers(&["ctrl2"])).as_bytes(),
    );
    let cfg = tail_config(dir.path(), &log, "[sinks.out]\ntype = \"stdout\"\n");
    let mut d = Daemon::start(&cfg);
    let pid = d.child.id();
    let workers = || {
        std::fs::read_dir(format!("/proc/{pid}/task"))
            .map(|tasks| {
                tasks
                    .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
                    .filter(|comm| comm.trim() == "fjall:worker")
                    .count()
            })
            .unwrap_or(0)
    };
    assert!(eventually(|| workers() > 0), "the store's worker started");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(workers(), 1);
    d.signal("-TERM");
}
