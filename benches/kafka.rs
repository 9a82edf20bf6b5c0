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

use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::ClientConfig;

const EVENTS: usize = 200_000;

/// The allocator herald runs with (it serves librdkafka too), so that both sides allocate alike.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

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

/// One body and, when the bare producer sends them, the CloudEvents headers herald would.
struct Body {
    json: String,
    /// `ce_id`, `ce_type`, `ce_time`.
    ce: Option<[String; 3]>,
}

fn ce_headers(ce: &[String; 3]) -> OwnedHeaders {
    OwnedHeaders::new_with_capacity(6)
        .insert(Header { key: "ce_specversion", value: Some("1.0") })
        .insert(Header { key: "ce_id", value: Some(ce[0].as_str()) })
        .insert(Header { key: "ce_source", value: Some("herald") })
        .insert(Header { key: "ce_type", value: Some(ce[1].as_str()) })
        .insert(Header { key: "ce_time", value: Some(ce[2].as_str()) })
        .insert(Header { key: "content-type", value: Some("application/json") })
}

fn bare(broker: &Broker, bodies: &[Body], topic: &str) -> Measured {
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
                let mut record = FutureRecord::to(topic).key("bench").payload(b.json.as_str());
                if let Some(ce) = &b.ce {
                    record = record.headers(ce_headers(ce));
                }
                match p.send_result(record) {
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
    let body = |line: &str, ce: bool| Body {
        json: line.to_string(),
        ce: ce.then(|| {
            let v: serde_json::Value = serde_json::from_str(line).unwrap_or_default();
            ["id", "kind", "stable_at"].map(|k| v[k].as_str().unwrap_or_default().to_string())
        }),
    };
    let replayed = String::from_utf8_lossy(&replay.stdout).into_owned();
    let bodies: Vec<Body> = replayed.lines().map(|l| body(l, false)).collect();
    let with_headers: Vec<Body> = replayed.lines().map(|l| body(l, true)).collect();
    assert_eq!(bodies.len(), EVENTS, "every line yields an event");
    let run = std::process::id();
    // The goal's comparison is herald against the bare producer; the bare producer with
    // herald's headers shows what the CloudEvents headers alone cost librdkafka.
    let sides = ["bare rdkafka", "bare + CloudEvents headers", "herald run"];
    let mut results: Vec<Vec<(f64, Measured)>> = sides.iter().map(|_| Vec::new()).collect();
    for round in 0..5 {
        // Each side gets a fresh broker and topic; the order rotates from round to round.
        for k in 0..sides.len() {
            let side = (round + k) % sides.len();
            let broker = Broker::start();
            let topic = format!("bench-{side}-{run}-{round}");
            create_topic(&broker.addr, &topic);
            let m = match side {
                0 => bare(&broker, &bodies, &topic),
                1 => bare(&broker, &with_headers, &topic),
                _ => herald(&broker, dir.path(), &log_path, &topic),
            };
            let rate = EVENTS as f64 / m.took.as_secs_f64();
            println!(
                "round {round}: {:<27} {rate:>9.0} events/s ({:.2} s); CPU µs/event: client {:.2}, broker {:.2}",
                sides[side],
                m.took.as_secs_f64(),
                per_event(m.client_cpu),
                per_event(m.broker_cpu)
            );
            results[side].push((rate, m));
        }
    }
    let medians: Vec<&(f64, Measured)> = results
        .iter_mut()
        .map(|r| {
            r.sort_by(|a, b| a.0.total_cmp(&b.0));
            &r[r.len() / 2]
        })
        .collect();
    for (side, (rate, m)) in sides.iter().zip(&medians) {
        println!(
            "median: {side:<27} {rate:>9.0} events/s; CPU µs/event: client {:.2}, broker {:.2}",
            per_event(m.client_cpu),
            per_event(m.broker_cpu)
        );
    }
    println!(
        "ratio herald / bare rdkafka: {:.2}; herald / bare + headers: {:.2}",
        medians[2].0 / medians[0].0,
        medians[2].0 / medians[1].0
    );
}

fn per_event(cpu_seconds: f64) -> f64 {
    cpu_seconds * 1e6 / EVENTS as f64
}
