//! herald's events/s into Kafka against a bare rdkafka producer sending the same event bodies
//! to the same broker (goal: a ratio of at least 0.9).
//!
//! `cargo bench --bench kafka` with `tansu` installed (`scripts/services.sh` installs it):
//! each round starts its own broker on a free port, so no round inherits another's stored
//! records. Every line of the log yields an event: alternating router states, replayed with
//! W = 0.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::ClientConfig;

const EVENTS: usize = 200_000;

/// A tansu broker of this bench's own, with memory storage; stopped when dropped.
struct Broker {
    child: std::process::Child,
    addr: String,
}

impl Broker {
    fn start() -> Broker {
        let addr = format!("127.0.0.1:{}", free_port());
        let url = format!("tcp://{addr}");
        let child = Command::new("tansu")
            .args(["broker", "--listener-url", &url, "--advertised-listener-url", &url])
            .args(["--storage-engine", "memory://tansu/"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("tansu (scripts/services.sh installs it)");
        let since = Instant::now();
        while std::net::TcpStream::connect(&addr).is_err() {
            assert!(since.elapsed() < Duration::from_secs(30), "tansu did not listen on {addr}");
            std::thread::sleep(Duration::from_millis(50));
        }
        Broker { child, addr }
    }
}

/// CPU seconds a process has used so far: user and system time, all threads.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // After the parenthesised command name: utime and stime are the 12th and 13th fields.
    let after = stat.rsplit(')').next().unwrap_or_default();
    let ticks: f64 =
        after.split_whitespace().skip(11).take(2).filter_map(|v| v.parse::<f64>().ok()).sum();
    ticks / clock_ticks()
}

fn clock_ticks() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// Whether the bare producer holds its producer id, from librdkafka's statistics (as herald's
/// readiness does).
#[derive(Default)]
struct Ready(std::sync::Arc<std::sync::atomic::AtomicBool>);

impl rdkafka::ClientContext for Ready {
    fn stats_raw(&self, statistics: &[u8]) {
        let stats: serde_json::Value = serde_json::from_slice(statistics).unwrap_or_default();
        if stats["eos"]["idemp_state"] == "Assigned" {
            self.0.store(true, std::sync::atomic::Ordering::Release);
        }
    }
}

/// One side's round: wall time from connected to every event acknowledged, and the CPU the
/// client (herald, or this process for the bare producer) and the broker used meanwhile.
struct Measured {
    took: Duration,
    client_cpu: f64,
    broker_cpu: f64,
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn log() -> String {
    (0..EVENTS)
        .map(|i| {
            // Each router alternates on every appearance, so every line changes its state.
            let kind = if (i / 64) % 2 == 0 { "router-online" } else { "router-offline" };
            let (s, ns) = (i / 1000, i % 1000 * 1_000_000);
            format!(
                "{{\"namespace\":\"router\",\"event_src_id\":\"c1\",\"timestamp\":\"2025-01-10T18:{:02}:{:02}.{ns:09}Z\",\"event_type\":\"{kind}\",\"router_id\":\"r{}\"}}\n",
                s / 60 % 60,
                s % 60,
                i % 64
            )
        })
        .collect()
}

fn create_topic(broker: &str, name: &str) {
    let ok = Command::new("tansu")
        .args([
            "topic",
            "create",
            name,
            "--partitions",
            "3",
            "--broker",
            &format!("tcp://{broker}"),
        ])
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(ok, "tansu topic create {name}");
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("port")
}

fn scrape(port: u16) -> String {
    scrape_path(port, "/metrics")
}

fn scrape_path(port: u16, path: &str) -> String {
    use std::io::Read;
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else { return String::new() };
    let _ = s.write_all(
        format!("GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").as_bytes(),
    );
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

fn delivered(port: u16) -> usize {
    scrape(port)
        .lines()
        .find(|l| l.starts_with("herald_sink_events_total{sink=\"kafka\"}"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<f64>().ok())
        .map(|v| v as usize)
        .unwrap_or(0)
}

fn herald(
    broker: &Broker,
    dir: &std::path::Path,
    log_path: &std::path::Path,
    topic: &str,
) -> Measured {
    let port = free_port();
    let cfg = dir.join("bench.toml");
    std::fs::write(
        &cfg,
        format!(
            "[engine]\nwindow = \"0s\"\nstartup_grace = \"0s\"\n[server]\nlisten = \"127.0.0.1:{port}\"\n\
             [sources.log]\ntype = \"file\"\npath = {:?}\ncluster = \"bench\"\n\
             [sinks.kafka]\ntype = \"kafka\"\nbrokers = \"{}\"\ntopic = \"{topic}\"\n",
            log_path.to_str().unwrap_or_default(),
            broker.addr
        ),
    )
    .expect("config");
    let exe = env!("CARGO_MANIFEST_DIR").to_string() + "/target/release/herald";
    let spawned = Instant::now();
    let mut child = Command::new(exe)
        .args(["run", "--config", cfg.to_str().unwrap_or_default()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("herald (cargo build --release first)");
    // Like the bare producer's metadata fetch: the clock starts once herald is connected and
    // ready (its sinks ready means a successful metadata fetch), before a record is read.
    while !scrape_path(port, "/readyz").contains("200 OK") {
        std::thread::sleep(Duration::from_millis(1));
        assert!(spawned.elapsed() < Duration::from_secs(60), "herald did not become ready");
    }
    let (cpu0, broker0) = (cpu_seconds(child.id()), cpu_seconds(broker.child.id()));
    let start = Instant::now();
    while delivered(port) < EVENTS {
        std::thread::sleep(Duration::from_millis(20));
        assert!(start.elapsed() < Duration::from_secs(300), "herald did not finish");
    }
    let took = start.elapsed();
    let (client_cpu, broker_cpu) =
        (cpu_seconds(child.id()) - cpu0, cpu_seconds(broker.child.id()) - broker0);
    let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    let _ = child.wait();
    Measured { took, client_cpu, broker_cpu }
}

fn bare(broker: &Broker, bodies: &[String], topic: &str) -> Measured {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    rt.block_on(async {
        let ready = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let p: FutureProducer<Ready> = ClientConfig::new()
            .set("bootstrap.servers", &broker.addr)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("message.timeout.ms", "0")
            .set("linger.ms", "5")
            .set("statistics.interval.ms", "100")
            .create_with_context(Ready(ready.clone()))
            .expect("producer");
        // Ready first, as herald is before its clock starts: connected (a metadata fetch) and
        // holding the idempotent producer's id.
        let since = Instant::now();
        while !ready.load(std::sync::atomic::Ordering::Acquire) {
            let _ = tokio::task::block_in_place(|| {
                p.client().fetch_metadata(Some(topic), Duration::from_secs(10))
            });
            tokio::time::sleep(Duration::from_millis(20)).await;
            assert!(since.elapsed() < Duration::from_secs(30), "no producer id");
        }
        let me = std::process::id();
        let (cpu0, broker0) = (cpu_seconds(me), cpu_seconds(broker.child.id()));
        let start = Instant::now();
        let mut futures = Vec::with_capacity(bodies.len());
        for b in bodies {
            loop {
                match p.send_result(FutureRecord::to(topic).key("bench").payload(b.as_str())) {
                    Ok(f) => {
                        futures.push(f);
                        break;
                    }
                    Err(_) => tokio::time::sleep(Duration::from_millis(1)).await,
                }
            }
        }
        for f in futures {
            let _ = f.await;
        }
        let took = start.elapsed();
        let (client_cpu, broker_cpu) =
            (cpu_seconds(me) - cpu0, cpu_seconds(broker.child.id()) - broker0);
        Measured { took, client_cpu, broker_cpu }
    })
}

fn main() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log_path = dir.path().join("alternating.jsonl");
    std::fs::write(&log_path, log()).expect("log");
    // The same bodies herald sends: replay with W = 0 (one event per line).
    let replay = Command::new(env!("CARGO_MANIFEST_DIR").to_string() + "/target/release/herald")
        .args([
            "replay",
            "--window",
            "0",
            "--cluster",
            "bench",
            log_path.to_str().unwrap_or_default(),
        ])
        .output()
        .expect("herald replay");
    let bodies: Vec<String> =
        String::from_utf8_lossy(&replay.stdout).lines().map(str::to_string).collect();
    assert_eq!(bodies.len(), EVENTS, "every line yields an event");
    let run = std::process::id();
    let (mut bares, mut heralds) = (Vec::new(), Vec::new());
    for round in 0..5 {
        let (t1, t2) = (format!("bench-bare-{run}-{round}"), format!("bench-herald-{run}-{round}"));
        // Each side gets a fresh broker; which goes first alternates.
        let measure_bare = || {
            let broker = Broker::start();
            create_topic(&broker.addr, &t1);
            bare(&broker, &bodies, &t1)
        };
        let measure_herald = || {
            let broker = Broker::start();
            create_topic(&broker.addr, &t2);
            herald(&broker, dir.path(), &log_path, &t2)
        };
        let (b, h) = if round % 2 == 0 {
            let b = measure_bare();
            (b, measure_herald())
        } else {
            let h = measure_herald();
            (measure_bare(), h)
        };
        let rate = |m: &Measured| EVENTS as f64 / m.took.as_secs_f64();
        let (bare_rate, herald_rate) = (rate(&b), rate(&h));
        println!(
            "round {round}: bare rdkafka {bare_rate:.0} events/s ({:.2} s), herald run {herald_rate:.0} events/s ({:.2} s), ratio {:.2}",
            b.took.as_secs_f64(),
            h.took.as_secs_f64(),
            herald_rate / bare_rate
        );
        println!(
            "         CPU µs/event: bare producer {:.2} + broker {:.2}; herald {:.2} + broker {:.2}",
            per_event(b.client_cpu),
            per_event(b.broker_cpu),
            per_event(h.client_cpu),
            per_event(h.broker_cpu)
        );
        bares.push((bare_rate, b));
        heralds.push((herald_rate, h));
    }
    bares.sort_by(|a, b| a.0.total_cmp(&b.0));
    heralds.sort_by(|a, b| a.0.total_cmp(&b.0));
    let ((b, bm), (h, hm)) = (&bares[2], &heralds[2]);
    println!(
        "median: bare rdkafka {b:.0} events/s, herald run {h:.0} events/s, ratio {:.2}",
        h / b
    );
    println!(
        "median rounds' CPU µs/event: bare producer {:.2} + broker {:.2}; herald {:.2} + broker {:.2}",
        per_event(bm.client_cpu),
        per_event(bm.broker_cpu),
        per_event(hm.client_cpu),
        per_event(hm.broker_cpu)
    );
}

fn per_event(cpu_seconds: f64) -> f64 {
    cpu_seconds * 1e6 / EVENTS as f64
}
