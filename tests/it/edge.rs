//! The edge (DESIGN §10): `herald run` with a raw kafka sink forwards the records its sources
//! read, not events, to a tansu broker this test starts; kafka-python reads them back.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use crate::durability::{herald_run, signal, Tansu};
use crate::support::*;

const ZITI_NEW: &str = r#"{"namespace":"cluster","event_src_id":"ctrl1","timestamp":"2025-01-17T10:00:00.000000001Z","eventType":"state.has_leader","leaderId":"ctrl2","index":7}"#;
/// Before v1.3: no `event_src_id`, and `event_type`; the source's `reporter` applies.
const ZITI_OLD: &str = r#"{"namespace":"fabric.cluster","timestamp":"2025-01-17T10:00:01Z","event_type":"leadership.gained"}"#;
const GENERIC: &str = r#"{"ts":"2025-01-17T10:00:02Z","cluster":"etcd-a","reporter":"n1","signal":"leader","leader":"n2"}"#;
const CONNECT: &str =
    r#"{"namespace":"connect","src_id":"id1","timestamp":"2025-01-17T10:00:03Z"}"#;

pub fn raw_sink(tansu: &Tansu, topic: &str) -> String {
    format!(
        "[sinks.edge]\ntype = \"kafka\"\nbrokers = \"{}\"\ntopic = \"{topic}\"\nencoding = \"raw\"\n",
        tansu.bootstrap()
    )
}

/// Each record's value, by its key, in offset order.
fn by_key(records: &[serde_json::Value]) -> BTreeMap<String, Vec<serde_json::Value>> {
    let mut sorted: Vec<&serde_json::Value> = records.iter().collect();
    sorted.sort_by_key(|r| (r["partition"].as_i64(), r["offset"].as_i64()));
    let mut out: BTreeMap<String, Vec<serde_json::Value>> = BTreeMap::new();
    for r in sorted {
        let key = r["key"].as_str().expect("a key").to_string();
        out.entry(key).or_default().push(r["value"].clone());
    }
    out
}

/// Waits until the edge has forwarded everything to `topic` (its record count holds still
/// for a second). A core that catches up with an edge still forwarding goes live, on the
/// wall clock, which is not what replay does.
pub fn forwarded(bootstrap: &str, topic: &str, partitions: i32) {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .expect("a consumer");
    let count = || -> i64 {
        (0..partitions)
            .map(|p| {
                consumer
                    .fetch_watermarks(topic, p, Duration::from_secs(5))
                    .map(|(_, high)| high)
                    .unwrap_or(0)
            })
            .sum()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    let (mut before, mut now) = (0, count());
    while (now == 0 || now != before) && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_secs(1));
        (before, now) = (now, count());
    }
    assert!(now > 0 && now == before, "the edge forwarded its log: {now} records");
}

/// A core instance on `cfg`.
fn core(cfg: &std::path::Path) -> std::process::Child {
    herald()
        .args(["run", "--config", cfg.to_str().unwrap()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("herald run")
}

/// The events in the file sink's `out` once it holds `want` of them, or after 120 s.
fn written(out: &std::path::Path, want: usize) -> Vec<herald::model::ClusterEvent> {
    let read = || std::fs::read(out).map(|b| events(&b)).unwrap_or_default();
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    let mut got = read();
    while got.len() < want && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(500));
        got = read();
    }
    got
}

fn json(line: &str) -> serde_json::Value {
    serde_json::from_str(line).expect("a JSON line")
}

#[test]
fn an_edge_forwards_each_decodable_line_as_read_keyed_by_cluster_with_its_headers() {
    let tansu = Tansu::start();
    let dir = tempfile::tempdir().unwrap();
    let log = write_temp(
        dir.path(),
        "controller.log",
        [ZITI_NEW, "not json {", ZITI_OLD, CONNECT, GENERIC, ""].join("\n").as_bytes(),
    );
    // A probe of a port that listens (the broker's own): its finding travels as a generic line.
    let probe = format!(
        "[sources.probe]\ntype = \"probe\"\ncluster = \"probed\"\ninterval = \"200ms\"\ndown_after = 2\n[sources.probe.nodes]\nb1 = \"{}\"\n",
        tansu.bootstrap()
    );
    let cfg = tail_config(dir.path(), &log, &format!("{}{probe}", raw_sink(&tansu, "herald")));
    let text = std::fs::read_to_string(&cfg).unwrap().replace(
        "cluster = \"prod\"\n[engine]",
        "cluster = \"prod\"\nreporter = \"edge-a\"\n[engine]",
    );
    std::fs::write(&cfg, text).unwrap();
    let mut child = herald()
        .args(["run", "--config", cfg.to_str().unwrap()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("herald run");
    let mut records = Vec::new();
    assert!(
        eventually(|| {
            records = tansu.records("herald");
            let keys: BTreeSet<&str> = records.iter().filter_map(|r| r["key"].as_str()).collect();
            records.len() >= 4 && keys.contains("probed")
        }),
        "the edge forwarded its lines and a probe's finding: {records:?}"
    );
    signal(&mut child, "-TERM");
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();

    let keyed = by_key(&records);
    assert_eq!(keyed["prod"], [json(ZITI_NEW), json(ZITI_OLD)], "as read, in order");
    assert_eq!(keyed["etcd-a"], [json(GENERIC)], "a generic record's key is its own cluster");
    let probed = &keyed["probed"][0];
    assert_eq!(probed["signal"], "node");
    assert_eq!(probed["node"], "b1");
    assert_eq!(probed["online"], true);
    assert_eq!(probed["via"], "probe");
    assert_eq!(probed["down_after"], 2, "the probe's thresholds travel with it");
    assert_eq!(keyed.len(), 3, "no record for the line that is not JSON, nor for `connect`");
    for r in &records {
        let (h, v) = (&r["headers"], &r["value"]);
        assert_eq!(h["herald-cluster"], r["key"]);
        let reporter = h["herald-reporter"].as_str().unwrap();
        let want = match v["namespace"].as_str() {
            Some("cluster") => "ctrl1",
            Some(_) => "edge-a",
            None => v["reporter"].as_str().unwrap(),
        };
        assert_eq!(reporter, want, "{r}");
        assert!(h.get("ce_id").is_none(), "no CloudEvents headers: these are not events");
    }
    assert!(
        stderr.contains("line=2") && stderr.contains("decode error"),
        "the bad line is reported where it was read:\n{stderr}"
    );
}

/// Kafka stops answering mid-stream, goes away, and herald is killed meanwhile: nothing it
/// read but Kafka did not acknowledge is lost, because the file position had not moved past
/// it.
#[test]
fn an_edge_killed_while_kafka_is_away_forwards_the_rest_after_a_restart() {
    let mut tansu = Tansu::start();
    let dir = tempfile::tempdir().unwrap();
    let log = write_temp(
        dir.path(),
        "events.log",
        &run(&["generate", "--seed", "5", "--lines", "100000", "--controllers", "3"], b"").stdout,
    );
    // What a clean run forwards.
    tansu.create("clean");
    let clean_dir = dir.path().join("clean");
    std::fs::create_dir(&clean_dir).unwrap();
    let mut clean = herald_run(&clean_dir, &log, &raw_sink(&tansu, "clean"));
    let mut want = Vec::new();
    let mut last = usize::MAX;
    // Done once two reads a second apart find the same number of records.
    while want.len() != last || want.is_empty() {
        last = want.len();
        std::thread::sleep(Duration::from_secs(1));
        want = tansu.records("clean");
    }
    signal(&mut clean, "-TERM");
    let want: BTreeSet<String> = want.iter().map(|r| r["value"].to_string()).collect();
    assert!(want.len() > 10_000, "a workload: {} records", want.len());

    // A few hundred records in, the connection stalls: nothing after reaches Kafka, while
    // herald reads on. Then Kafka goes, and herald is killed while it is away.
    tansu.proxy.stall_after(256 * 1024);
    let sink = raw_sink(&tansu, "herald");
    let mut child = herald_run(dir.path(), &log, &sink);
    assert!(eventually(|| tansu.proxy.stalled()), "forwarding started");
    std::thread::sleep(Duration::from_secs(3));
    crate::durability::Broker::down(&mut tansu);
    signal(&mut child, "-KILL");
    crate::durability::Broker::up(&mut tansu);
    let before = crate::durability::Broker::count(&tansu);
    assert!(before > 0 && before < want.len(), "stalled mid-stream: {before} of {}", want.len());
    let mut child = herald_run(dir.path(), &log, &sink);
    let mut got = BTreeSet::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(180);
    while got.len() < want.len() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_secs(1));
        got = tansu.records("herald").iter().map(|r| r["value"].to_string()).collect();
    }
    signal(&mut child, "-TERM");
    let missing: Vec<&String> = want.difference(&got).collect();
    assert!(
        missing.is_empty(),
        "{} of {} records missing, e.g. {:?}",
        missing.len(),
        want.len(),
        &missing[..missing.len().min(2)]
    );
    let extra: Vec<&String> = got.difference(&want).collect();
    assert!(
        extra.is_empty(),
        "records a clean run does not forward: {:?}",
        &extra[..extra.len().min(2)]
    );
}

/// Edge to core through Kafka: an edge forwards a controller's log, a core instance reads the
/// topic in a consumer group, and emits what `herald replay` of the log emits.
#[test]
fn a_core_in_a_consumer_group_emits_from_an_edges_records_what_replay_emits() {
    let tansu = Tansu::start();
    tansu.create("raw");
    let dir = tempfile::tempdir().unwrap();
    let log = write_temp(
        dir.path(),
        "controller.log",
        &run(&["generate", "--seed", "21", "--lines", "20000"], b"").stdout,
    );
    let want = events(&run(&["replay", "--cluster", "prod", log.to_str().unwrap()], b"").stdout);
    assert!(want.len() > 100, "a workload: {} events", want.len());
    let edge_dir = dir.path().join("edge");
    std::fs::create_dir(&edge_dir).unwrap();
    let mut edge = herald_run(&edge_dir, &log, &raw_sink(&tansu, "raw"));
    forwarded(&tansu.bootstrap(), "raw", 3);

    let out = dir.path().join("events.jsonl");
    let port = free_port();
    let cfg = write_temp(
        dir.path(),
        "core.toml",
        format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\n[state]\ndir = {:?}\n[engine]\nkey_ttl = \"87600h\"\n\
             [sources.raw]\ntype = \"kafka\"\nbrokers = \"{}\"\ntopic = \"raw\"\ngroup_id = \"core\"\n\
             [sinks.out]\ntype = \"file\"\npath = {:?}\n",
            dir.path().join("core-state").to_str().unwrap(),
            tansu.bootstrap(),
            out.to_str().unwrap(),
        )
        .as_bytes(),
    );
    let mut core = core(&cfg);
    let got = written(&out, want.len());
    let mut metrics = String::new();
    // Lag comes with librdkafka's statistics, once a second.
    eventually(|| {
        metrics = http(port, "GET", "/metrics", &[], b"").1;
        metrics.contains("herald_consumer_lag{")
    });
    signal(&mut core, "-TERM");
    signal(&mut edge, "-TERM");
    let ids = |v: &[herald::model::ClusterEvent]| -> BTreeSet<String> {
        v.iter().map(|e| e.id.clone()).collect()
    };
    assert_eq!(ids(&got), ids(&want), "{} events of {}", got.len(), want.len());
    let unique: BTreeMap<&str, &herald::model::ClusterEvent> =
        got.iter().map(|e| (e.id.as_str(), e)).collect();
    for e in &want {
        assert_eq!(unique[e.id.as_str()], e, "same id, same event");
    }
    assert!(metrics.contains("herald_consumer_lag{partition="), "lag per partition:\n{metrics}");
    // The only member of its group owns every partition.
    for p in 0..3 {
        let line = format!("herald_partition_owned{{partition=\"{p}\",source=\"raw\"}} 1");
        assert!(metrics.contains(&line), "no {line} in /metrics:\n{metrics}");
    }
}

/// Plain OpenZiti lines in a topic (no herald headers: not from an edge) are read with the
/// source's configured cluster.
#[test]
fn a_kafka_source_reads_plain_lines_with_its_configured_cluster() {
    use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
    let tansu = Tansu::start();
    tansu.create("plain");
    let dir = tempfile::tempdir().unwrap();
    let log = run(&["generate", "--seed", "4", "--lines", "5000"], b"").stdout;
    let log_path = write_temp(dir.path(), "controller.log", &log);
    let want =
        events(&run(&["replay", "--cluster", "east", log_path.to_str().unwrap()], b"").stdout);
    let producer: ThreadedProducer<DefaultProducerContext> = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", tansu.bootstrap())
        .create()
        .expect("a producer");
    for line in log.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
        // One key: one partition, so the lines stay in the log's order.
        let mut record = BaseRecord::<str, [u8]>::to("plain").key("k").payload(line);
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((_, r)) => {
                    record = r;
                    producer.poll(Duration::from_millis(10));
                }
            }
        }
    }
    producer.flush(Duration::from_secs(30)).expect("the lines are in the topic");

    let out = dir.path().join("events.jsonl");
    let cfg = write_temp(
        dir.path(),
        "core.toml",
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n[engine]\nkey_ttl = \"87600h\"\n\
             [sources.plain]\ntype = \"kafka\"\nbrokers = \"{}\"\ntopic = \"plain\"\ngroup_id = \"core\"\ncluster = \"east\"\n\
             [sinks.out]\ntype = \"file\"\npath = {:?}\n",
            tansu.bootstrap(),
            out.to_str().unwrap(),
        )
        .as_bytes(),
    );
    let mut core = core(&cfg);
    let got = written(&out, want.len());
    signal(&mut core, "-TERM");
    assert!(want.len() > 50, "a workload: {} events", want.len());
    assert_eq!(got, want, "what replay emits, in its order");
}
