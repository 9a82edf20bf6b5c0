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

fn herald_run(dir: &Path, log: &Path, sink: &str) -> Child {
    let cfg = write_temp(
        dir,
        "herald.toml",
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n[state]\ndir = {:?}\n[sources.log]\ntype = \"file\"\npath = {:?}\ncluster = \"prod\"\n[engine]\nkey_ttl = \"87600h\"\n{sink}",
            dir.join("state").to_str().unwrap(),
            log.to_str().unwrap()
        )
        .as_bytes(),
    );
    herald()
        .args(["run", "--config", cfg.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .stdin(Stdio::null())
        .spawn()
        .expect("start herald run")
}

fn signal(child: &mut Child, sig: &str) {
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

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
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

    fn wait_for(&self, want: usize, limit: Duration) -> Vec<ClusterEvent> {
        let deadline = Instant::now() + limit;
        loop {
            let got = self.events();
            let unique: std::collections::BTreeSet<&str> =
                got.iter().map(|e| e.id.as_str()).collect();
            if unique.len() >= want || Instant::now() > deadline {
                return got;
            }
            std::thread::sleep(Duration::from_millis(500));
        }
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

#[test]
fn jetstream_sigkill_at_ten_random_points_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (log, want) = workload(dir.path());
    let nats = NatsServer::start(dir.path());
    let sink = nats.sink("");
    kill_repeatedly(dir.path(), &log, &sink, 10, || nats.count());
    let mut child = herald_run(dir.path(), &log, &sink);
    let got = nats.wait_for(want.len(), Duration::from_secs(120));
    signal(&mut child, "-TERM");
    check("jetstream after 10 SIGKILLs", &got, &want);
}

#[test]
fn jetstream_stopped_for_60s_mid_stream_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (log, want) = workload(dir.path());
    let mut nats = NatsServer::start(dir.path());
    let mut child = herald_run(dir.path(), &log, &nats.sink(""));
    std::thread::sleep(Duration::from_millis(700));
    nats.down();
    std::thread::sleep(Duration::from_secs(60));
    nats.up();
    let got = nats.wait_for(want.len(), Duration::from_secs(120));
    signal(&mut child, "-TERM");
    check("jetstream after a 60 s outage", &got, &want);
}

#[test]
fn disk_buffer_killed_while_jetstream_is_down_delivers_everything_after() {
    let dir = tempfile::tempdir().unwrap();
    let (log, want) = workload(dir.path());
    let mut nats = NatsServer::start(dir.path());
    let sink = nats.sink("[sinks.js.buffer]\ntype = \"disk\"\n");
    let mut child = herald_run(dir.path(), &log, &sink);
    std::thread::sleep(Duration::from_millis(700));
    nats.down();
    // Herald keeps reading into its disk buffer while the server is away; then it dies.
    std::thread::sleep(Duration::from_secs(3));
    signal(&mut child, "-KILL");
    let buffered = std::fs::read_dir(dir.path().join("state/buffers/js"))
        .map(|d| {
            d.filter_map(|e| e.ok())
                .filter(|e| e.path().extension().is_some_and(|x| x == "seg"))
                .count()
        })
        .unwrap_or(0);
    assert!(buffered > 0, "the disk buffer holds segments");
    nats.up();
    let mut child = herald_run(dir.path(), &log, &sink);
    let got = nats.wait_for(want.len(), Duration::from_secs(120));
    signal(&mut child, "-TERM");
    check("jetstream with a disk buffer, killed during an outage", &got, &want);
}
