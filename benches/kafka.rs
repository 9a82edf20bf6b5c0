//! herald's events/s into Kafka against a bare rdkafka producer sending the same event bodies
//! to the same broker (goal: a ratio of at least 0.9).
//!
//! `cargo bench --bench kafka` with a Kafka-compatible broker on 127.0.0.1:9092
//! (`scripts/services.sh` starts tansu). Every line of the log yields an event: alternating
//! router states, replayed with W = 0.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;

const BROKER: &str = "127.0.0.1:9092";
const EVENTS: usize = 200_000;

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

fn create_topic(name: &str) {
    let ok = Command::new("tansu")
        .args([
            "topic",
            "create",
            name,
            "--partitions",
            "3",
            "--broker",
            &format!("tcp://{BROKER}"),
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

fn herald(dir: &std::path::Path, log_path: &std::path::Path, topic: &str) -> Duration {
    let port = free_port();
    let cfg = dir.join("bench.toml");
    std::fs::write(
        &cfg,
        format!(
            "[engine]\nwindow = \"0s\"\nstartup_grace = \"0s\"\n[server]\nlisten = \"127.0.0.1:{port}\"\n\
             [sources.log]\ntype = \"file\"\npath = {:?}\ncluster = \"bench\"\n\
             [sinks.kafka]\ntype = \"kafka\"\nbrokers = \"{BROKER}\"\ntopic = \"{topic}\"\n",
            log_path.to_str().unwrap_or_default()
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
    let start = Instant::now();
    while delivered(port) < EVENTS {
        std::thread::sleep(Duration::from_millis(20));
        assert!(start.elapsed() < Duration::from_secs(300), "herald did not finish");
    }
    let took = start.elapsed();
    let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    let _ = child.wait();
    took
}

fn bare(bodies: &[String], topic: &str) -> Duration {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    rt.block_on(async {
        let p: FutureProducer = ClientConfig::new()
            .set("bootstrap.servers", BROKER)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("message.timeout.ms", "0")
            .set("linger.ms", "5")
            .create()
            .expect("producer");
        // Connected first, as herald is before its clock starts.
        let _ = tokio::task::block_in_place(|| {
            rdkafka::producer::Producer::client(&p)
                .fetch_metadata(Some(topic), Duration::from_secs(10))
        });
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
        start.elapsed()
    })
}

fn main() {
    assert!(
        std::net::TcpStream::connect(BROKER).is_ok(),
        "no broker on {BROKER}: run scripts/services.sh"
    );
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
        create_topic(&t1);
        create_topic(&t2);
        let b = bare(&bodies, &t1);
        let h = herald(dir.path(), &log_path, &t2);
        let (bare_rate, herald_rate) =
            (EVENTS as f64 / b.as_secs_f64(), EVENTS as f64 / h.as_secs_f64());
        println!(
            "round {round}: bare rdkafka {bare_rate:.0} events/s ({:.2} s), herald run {herald_rate:.0} events/s ({:.2} s), ratio {:.2}",
            b.as_secs_f64(),
            h.as_secs_f64(),
            herald_rate / bare_rate
        );
        bares.push(bare_rate);
        heralds.push(herald_rate);
    }
    bares.sort_by(|a, b| a.total_cmp(b));
    heralds.sort_by(|a, b| a.total_cmp(b));
    let (b, h) = (bares[2], heralds[2]);
    println!(
        "median: bare rdkafka {b:.0} events/s, herald run {h:.0} events/s, ratio {:.2}",
        h / b
    );
}
