//! The core group (DESIGN §10): core instances share a raw topic's partitions in one consumer
//! group, each partition's engine moving with its partition through the changelog topic.
//!
//! tansu (in memory: on SQLite storage, where it compacts, it stopped answering a core for a
//! minute at a time under a backlog's fetches and the changelog's appends) with eager
//! `range` assignment: with
//! `cooperative-sticky`, tansu 0.6.0 was seen letting two live members own one partition at
//! once, and it expires a killed member only once another one joins or leaves. A short
//! session timeout: tansu answers no heartbeat while a member joins, so with librdkafka's
//! 45 s default every join cost the other members their session. Two defects of its
//! in-memory storage shape the tests: ListOffsets gives the newest batch's first offset plus
//! one as a partition's end (herald reads a changelog on to the end a fetch reports), and a
//! fetch from inside a batch skips the rest of it (the edge here writes a record per batch).
//! Cooperative rebalancing and the exactly-once sequence run against MockCluster instead.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use herald::model::ClusterEvent;

use crate::durability::{herald_run_config, signal, Tansu};
use crate::edge::forwarded;
use crate::support::*;

/// The edge's records one to a batch. tansu's in-memory storage answers a fetch from an
/// offset inside a batch with the batches that begin at or after it, so a member that
/// resumed a partition from a committed offset inside a batch never got that batch's rest
/// (seen: resumed at 2550, first record 2615). Kafka returns the whole batch and the client
/// passes over what lies before the offset.
const ONE_RECORD_PER_BATCH: &str = "[sinks.edge.client]\n\"batch.num.messages\" = \"1\"\n";

const CLUSTERS: usize = 12;
const PARTITIONS: u32 = 6;

/// A core instance's config: its own state dir and output file (a file sink), the kafka
/// source `source` (its keys after `type` and `brokers`), and `sinks`.
fn core_toml(
    dir: &Path,
    bootstrap: &str,
    name: &str,
    source: &str,
    sinks: &str,
) -> (PathBuf, PathBuf) {
    let out = dir.join(format!("{name}.jsonl"));
    let cfg = write_temp(
        dir,
        &format!("{name}.toml"),
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n[state]\ndir = {:?}\n[engine]\nkey_ttl = \"87600h\"\n\
             [sources.raw]\ntype = \"kafka\"\nbrokers = \"{bootstrap}\"\n{source}\
             client.\"session.timeout.ms\" = \"6000\"\nclient.\"heartbeat.interval.ms\" = \"1000\"\n\
             {sinks}[sinks.out]\ntype = \"file\"\npath = {:?}\n",
            dir.join(format!("{name}-state")).to_str().unwrap(),
            out.to_str().unwrap(),
        )
        .as_bytes(),
    );
    (cfg, out)
}

/// A core instance in group `core` reading `raw`, with assignment `strategy`.
fn core_config(dir: &Path, bootstrap: &str, name: &str, strategy: &str) -> (PathBuf, PathBuf) {
    let source = format!(
        "topic = \"raw\"\ngroup_id = \"core\"\nclient.\"partition.assignment.strategy\" = \"{strategy}\"\n"
    );
    core_toml(dir, bootstrap, name, &source, "")
}

fn start(cfg: &Path, log: &Path) -> Child {
    herald()
        .args(["run", "--config", cfg.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).expect("log file"))
        .spawn()
        .expect("herald run")
}

/// The events of an instance's file, up to its last whole line: the file is read while the
/// instance writes it (or after a SIGKILL cut its last write short), so a last line without
/// its newline is not an event yet.
fn read(out: &Path) -> Vec<ClusterEvent> {
    let bytes = std::fs::read(out).unwrap_or_default();
    let whole = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    events(&bytes[..whole])
}

/// What `herald replay` emits of each partition's records, in offset order, with the cluster
/// and reporter their headers name. A partition is one engine with one engine time (DESIGN
/// §10), so clusters that share a partition share its time: while an edge's backlog
/// interleaves their logs, replaying one cluster's log alone is not what the group owes.
fn replayed_per_partition(mut records: Vec<serde_json::Value>) -> BTreeMap<String, ClusterEvent> {
    use herald::decode::Context;
    use herald::engine::{Engine, EngineConfig};
    use herald::pipeline::driver::{Driver, Unwatched};
    use herald::support::lines::Line;
    records.sort_by_key(|r| (r["partition"].as_i64(), r["offset"].as_i64()));
    let mut config = EngineConfig::default();
    config.defaults.key_ttl = herald::model::Nanos::from_std(Duration::from_secs(87600 * 3600));
    let mut drivers: BTreeMap<i64, Driver> = BTreeMap::new();
    for r in &records {
        let partition = r["partition"].as_i64().expect("a partition");
        let driver =
            drivers.entry(partition).or_insert_with(|| Driver::new(Engine::new(config.clone())));
        let h = &r["headers"];
        let header = |k: &str| h[k].as_str().expect("herald headers").to_string();
        let context = Context::new(header("herald-cluster"), header("herald-reporter"));
        let line = serde_json::to_vec(&r["value"]).expect("a line");
        driver.line(&context, 1, Line::Text(&line), None, &mut Unwatched);
    }
    let mut out = BTreeMap::new();
    for driver in drivers.values_mut() {
        driver.engine.finish(&mut driver.events);
        out.extend(driver.events.drain(..).map(|e| (e.id.clone(), e)));
    }
    out
}

/// An edge forwarding `clusters` generated logs of `lines` lines each to topic `raw`, one
/// record per batch.
fn start_edge(dir: &Path, bootstrap: &str, topic: &str, clusters: usize, lines: &str) -> Child {
    let mut events_of_logs = 0;
    let mut sources = String::new();
    for i in 0..clusters {
        let seed = (40 + i).to_string();
        let log = write_temp(
            dir,
            &format!("c{i}.log"),
            &run(&["generate", "--seed", &seed, "--lines", lines], b"").stdout,
        );
        let replayed = run(&["replay", "--cluster", &format!("c{i}"), log.to_str().unwrap()], b"");
        events_of_logs += events(&replayed.stdout).len();
        sources += &format!(
            "[sources.c{i}]\ntype = \"file\"\npath = {:?}\ncluster = \"c{i}\"\n",
            log.to_str().unwrap()
        );
    }
    assert!(events_of_logs > clusters * 50, "a workload: {events_of_logs} events");
    let edge_dir = dir.join("edge");
    std::fs::create_dir(&edge_dir).unwrap();
    let sink = format!(
        "[sinks.edge]\ntype = \"kafka\"\nbrokers = \"{bootstrap}\"\ntopic = \"{topic}\"\nencoding = \"raw\"\n{ONE_RECORD_PER_BATCH}"
    );
    let edge_cfg = write_temp(
        &edge_dir,
        "edge.toml",
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n[state]\ndir = {:?}\n{sources}{sink}",
            edge_dir.join("state").to_str().unwrap(),
        )
        .as_bytes(),
    );
    herald_run_config(&edge_dir, &edge_cfg)
}

/// Three core instances, one of them SIGKILLed mid-stream and another joining after: the
/// union of their events, by id, is what `herald replay` emits of each partition's records —
/// every id at least once, none that replay does not emit, each equal to replay's.
#[test]
fn a_core_group_emits_what_replay_emits_though_an_instance_is_killed_and_another_joins() {
    let dir = tempfile::tempdir().unwrap();
    let tansu = Tansu::start();
    tansu.create_with("raw", PARTITIONS);
    let mut edge = start_edge(dir.path(), &tansu.bootstrap(), "raw", CLUSTERS, "4000");
    forwarded(&tansu.bootstrap(), "raw", PARTITIONS as i32);
    let want = replayed_per_partition(tansu.records("raw"));
    assert!(want.len() > 12 * 50, "a workload: {} events", want.len());

    let names = ["a", "b", "c"];
    let configs: Vec<(PathBuf, PathBuf)> =
        names.iter().map(|n| core_config(dir.path(), &tansu.bootstrap(), n, "range")).collect();
    let logs: Vec<PathBuf> = names.iter().map(|n| dir.path().join(format!("{n}.log"))).collect();
    let logs_text = || {
        logs.iter()
            .map(|l| {
                format!("{}:\n{}", l.display(), std::fs::read_to_string(l).unwrap_or_default())
            })
            .collect::<Vec<_>>()
            .join("\n")
    };
    // One at a time: tansu 0.6.0 answers no heartbeat while a member joins, so members
    // joining together cost each other their sessions, a minute at a time.
    let emitted = |i: usize| {
        let deadline = Instant::now() + Duration::from_secs(120);
        while read(&configs[i].1).is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let n = read(&configs[i].1).len();
        assert!(n > 0, "instance {} emitted something within 120 s\n{}", names[i], logs_text());
        n
    };
    let mut a = start(&configs[0].0, &logs[0]);
    emitted(0);
    // Joins mid-stream: partitions move from a to b, through the changelog.
    let mut b = start(&configs[1].0, &logs[1]);
    emitted(1);
    let a_before = read(&configs[0].1).len();
    signal(&mut a, "-KILL");
    // Its join makes tansu let the killed member go: its partitions move to c.
    let mut c = start(&configs[2].0, &logs[2]);

    let union = || -> Vec<ClusterEvent> { configs.iter().flat_map(|(_, out)| read(out)).collect() };
    let ids = |v: &[ClusterEvent]| -> BTreeSet<String> { v.iter().map(|e| e.id.clone()).collect() };
    let wanted: BTreeSet<String> = want.keys().cloned().collect();
    let deadline = Instant::now() + Duration::from_secs(240);
    let mut got = union();
    while !wanted.is_subset(&ids(&got)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(500));
        got = union();
    }
    // A moment more, for anything spurious to show.
    std::thread::sleep(Duration::from_secs(2));
    got = union();
    // The group may have finished a's partitions on b before c's join settled; c is given
    // its share once it has.
    let c_log = || std::fs::read_to_string(&logs[2]).unwrap_or_default();
    let joined =
        eventually_for(Duration::from_secs(60), || c_log().contains("partitions assigned"));
    signal(&mut b, "-TERM");
    signal(&mut c, "-TERM");
    signal(&mut edge, "-TERM");
    let got_ids = ids(&got);
    let missing: Vec<&String> = wanted.difference(&got_ids).collect();
    let spurious: Vec<&ClusterEvent> = got.iter().filter(|e| !want.contains_key(&e.id)).collect();
    for e in spurious.iter().take(3) {
        let near: Vec<&ClusterEvent> = want
            .values()
            .filter(|w| {
                w.cluster == e.cluster
                    && w.kind == e.kind
                    && w.node == e.node
                    && w.router == e.router
            })
            .take(4)
            .collect();
        eprintln!("SPURIOUS {e:?}\n  WANTED ALIKE {near:?}");
    }
    let per: Vec<usize> = configs.iter().map(|(_, o)| read(o).len()).collect();
    let spurious_by: Vec<usize> = configs
        .iter()
        .map(|(_, o)| read(o).iter().filter(|e| !want.contains_key(&e.id)).count())
        .collect();
    eprintln!("spurious per instance {spurious_by:?}");
    eprintln!("per instance {per:?}");
    assert!(
        missing.is_empty() && spurious.is_empty(),
        "{} of {} events missing, {} spurious (first: {:?})\n{}",
        missing.len(),
        want.len(),
        spurious.len(),
        spurious.first(),
        logs_text()
    );
    for e in &got {
        assert_eq!(e, &want[&e.id], "same id, same event");
    }
    let duplicates = got.len() - got_ids.len();
    eprintln!(
        "{} events, {} duplicates; instance a emitted {a_before} before it was killed",
        got.len(),
        duplicates
    );
    assert!(joined, "instance c took part:\n{}", c_log());
}

/// Regression: a restore read the changelog partition only to the end ListOffsets gave, and
/// tansu's in-memory storage gives there the newest batch's first offset plus one. A commit's
/// entries go out as one batch, so the restore right after a commit missed all of them but
/// the first (the `#input` among them): the engine the next owner built lacked the commit,
/// and it resumed its input from an earlier offset than the entries reflected.
#[test]
fn a_restore_reads_the_changelog_to_its_end_though_the_broker_gives_less() {
    use herald::state::changelog::{Changelog, KafkaChangelog};
    let tansu = Tansu::start();
    tansu.create_with("input", 2);
    let mut client = rdkafka::config::ClientConfig::new();
    client.set("bootstrap.servers", tansu.bootstrap());
    let changelog = KafkaChangelog::open(client, "input-changelog", "input").expect("opened");
    let entries: Vec<(Vec<u8>, Option<Vec<u8>>)> = (0..50u32)
        .map(|i| (format!("k{i}").into_bytes(), Some(i.to_be_bytes().to_vec())))
        .collect();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    for _ in 0..2 {
        let appended =
            runtime.block_on(changelog.append(vec![(1, entries.clone())])).expect("held");
        assert_eq!(appended.len(), 1, "one partition appended: {appended:?}");
    }
    let read = changelog.read(1, 0).expect("read");
    assert_eq!(read.entries.len(), 100, "every entry of both commits");
    assert_eq!(read.entries[99], entries[49]);
    assert_eq!(read.next, 100, "the offset after the last record");
    let rest = changelog.read(1, 50).expect("read from the second commit");
    assert_eq!(rest.entries.len(), 50, "the second commit alone");
    assert!(!rest.from_start);
}

/// Cooperative rebalancing (item 6c), against librdkafka's MockCluster: its group
/// coordinator runs `cooperative-sticky` (tansu 0.6.0 was seen letting two live members own
/// a partition at once with it). A second member's join moves only some partitions: the
/// first member is never told to give up all of them, only those that move, and the two
/// together emit what replay emits of each partition's records.
#[test]
fn cooperative_rebalancing_moves_only_the_partitions_that_change_owner() {
    let dir = tempfile::tempdir().unwrap();
    let mock = rdkafka::mocking::MockCluster::new(1).expect("a mock cluster");
    mock.create_topic("raw", 4, 1).expect("the raw topic");
    // The mock answers no CreateTopics: the changelog is there before the core starts.
    mock.create_topic("core-changelog", 4, 1).expect("the changelog topic");
    let bootstrap = mock.bootstrap_servers();
    let mut edge = start_edge(dir.path(), &bootstrap, "raw", 8, "3000");
    forwarded(&bootstrap, "raw", 4);
    // kafka-python cannot bootstrap from the mock: read it with librdkafka.
    let records = records_of(&bootstrap, "raw", 4);
    let want = replayed_per_partition(records);
    assert!(want.len() > 8 * 50, "a workload: {} events", want.len());
    let configs: Vec<(PathBuf, PathBuf)> = ["a", "b"]
        .iter()
        .map(|n| core_config(dir.path(), &bootstrap, n, "cooperative-sticky"))
        .collect();
    let logs: Vec<PathBuf> =
        ["a", "b"].iter().map(|n| dir.path().join(format!("{n}.log"))).collect();
    let log = |i: usize| std::fs::read_to_string(&logs[i]).unwrap_or_default();
    let mut a = start(&configs[0].0, &logs[0]);
    assert!(
        eventually_for(Duration::from_secs(60), || !read(&configs[0].1).is_empty()),
        "a emitted something\n{}",
        log(0)
    );
    let mut b = start(&configs[1].0, &logs[1]);
    assert!(
        eventually_for(Duration::from_secs(60), || log(0).contains("partitions revoked")
            && log(1).contains("partitions assigned")),
        "the join moved partitions\na:\n{}\nb:\n{}",
        log(0),
        log(1)
    );
    let wanted: BTreeSet<String> = want.keys().cloned().collect();
    let union = || -> Vec<ClusterEvent> { configs.iter().flat_map(|(_, o)| read(o)).collect() };
    let ids = |v: &[ClusterEvent]| -> BTreeSet<String> { v.iter().map(|e| e.id.clone()).collect() };
    eventually_for(Duration::from_secs(120), || wanted.is_subset(&ids(&union())));
    std::thread::sleep(Duration::from_secs(2));
    let got = union();
    signal(&mut a, "-TERM");
    signal(&mut b, "-TERM");
    signal(&mut edge, "-TERM");
    let (a_log, b_log) = (log(0), log(1));
    let missing = wanted.difference(&ids(&got)).count();
    assert_eq!(missing, 0, "of {} events\na:\n{a_log}\nb:\n{b_log}", want.len());
    for e in &got {
        assert_eq!(Some(e), want.get(&e.id), "an event replay emits, the same\na:\n{a_log}");
    }
    // What a gave up, each time: never all four (an eager rebalance revokes everything).
    let revoked: Vec<&str> = a_log.lines().filter(|l| l.contains("partitions revoked")).collect();
    assert!(!revoked.is_empty());
    eprintln!("a revoked: {revoked:?}");
    for line in &revoked {
        assert!(!line.contains("[0, 1, 2, 3]"), "only the partitions that move: {line}");
    }
    let owned_b = b_log.lines().filter(|l| l.contains("partitions assigned")).count();
    assert!(owned_b > 0, "b took part:\n{b_log}");
}

/// Every record of `topic`, as `Tansu::records` gives them: partition, offset, headers, value.
fn records_of(bootstrap: &str, topic: &str, partitions: i32) -> Vec<serde_json::Value> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::message::{Headers, Message};
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "records")
        .set("enable.partition.eof", "true")
        .create()
        .expect("a consumer");
    let mut tpl = rdkafka::TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, rdkafka::Offset::Beginning).unwrap();
    }
    consumer.assign(&tpl).unwrap();
    let (mut out, mut ended) = (Vec::new(), BTreeSet::new());
    let deadline = Instant::now() + Duration::from_secs(60);
    while ended.len() < partitions as usize && Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => {
                let headers: serde_json::Map<String, serde_json::Value> = m
                    .headers()
                    .map(|h| {
                        h.iter()
                            .map(|h| {
                                let v = String::from_utf8_lossy(h.value.unwrap_or_default());
                                (h.key.to_string(), serde_json::Value::String(v.into_owned()))
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                out.push(serde_json::json!({
                    "partition": m.partition(),
                    "offset": m.offset(),
                    "headers": headers,
                    "value": serde_json::from_slice::<serde_json::Value>(m.payload().unwrap_or_default()).expect("a JSON line"),
                }));
            }
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(p))) => {
                ended.insert(p);
            }
            _ => {}
        }
    }
    assert_eq!(ended.len(), partitions as usize, "read every partition to its end");
    out
}

/// A core's config with `processing = "exactly_once"`: a kafka sink on the source's brokers
/// (written in the transactions) and a file sink (at least once).
fn exactly_once_config(
    dir: &Path,
    bootstrap: &str,
    name: &str,
    prefix: &str,
) -> (PathBuf, PathBuf) {
    let source = format!(
        "topic = \"{prefix}raw\"\ngroup_id = \"{prefix}core\"\nprocessing = \"exactly_once\"\n\
         transactional_id = \"{prefix}core-{name}\"\n"
    );
    let sinks = format!(
        "[sinks.events]\ntype = \"kafka\"\nbrokers = \"{bootstrap}\"\ntopic = \"{prefix}events\"\n"
    );
    core_toml(dir, bootstrap, name, &source, &sinks)
}

/// The ids of the events in `topic`, as the kafka sink wrote them (`ce_id`).
fn event_ids(bootstrap: &str, topic: &str) -> Vec<String> {
    records_of(bootstrap, topic, 1)
        .iter()
        .map(|r| r["headers"]["ce_id"].as_str().expect("a ce_id").to_string())
        .collect()
}

/// Exactly once (item 6d), against MockCluster, whose EndTxn and TxnOffsetCommit do
/// nothing: what this proves is herald's side of the sequence — each commit begins a
/// transaction, produces the events and changelog records, sends the offsets with the
/// group's metadata and commits — and that an abortable error and a fenced producer each
/// rewind the partitions to their last committed state and the work is done again, losing
/// nothing. That a read_committed consumer then sees each event once needs a broker with
/// transactions (`exactly_once_against_a_real_kafka`).
#[test]
fn exactly_once_rewinds_after_an_aborted_or_fenced_transaction_and_loses_nothing() {
    use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
    let dir = tempfile::tempdir().unwrap();
    let mock = rdkafka::mocking::MockCluster::new(3).expect("a mock cluster");
    for (topic, partitions) in [("raw", 2), ("core-changelog", 2), ("events", 1)] {
        mock.create_topic(topic, partitions, 1).expect("a topic");
    }
    let bootstrap = mock.bootstrap_servers();
    let mut edge = start_edge(dir.path(), &bootstrap, "raw", 4, "2000");
    forwarded(&bootstrap, "raw", 2);
    let want = replayed_per_partition(records_of(&bootstrap, "raw", 2));
    assert!(want.len() > 4 * 50, "a workload: {} events", want.len());
    // The first transaction fails where an abort cures it, and its abort finds the producer
    // fenced, which takes a new producer.
    mock.request_errors(
        RDKafkaApiKey::AddPartitionsToTxn,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED],
    );
    mock.request_errors(
        RDKafkaApiKey::EndTxn,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_PRODUCER_FENCED],
    );
    let (cfg, out) = exactly_once_config(dir.path(), &bootstrap, "a", "");
    let log_path = dir.path().join("a.log");
    let mut a = start(&cfg, &log_path);
    let log = || std::fs::read_to_string(&log_path).unwrap_or_default();
    let wanted: BTreeSet<String> = want.keys().cloned().collect();
    let complete = eventually_for(Duration::from_secs(180), || {
        let ids: BTreeSet<String> = event_ids(&bootstrap, "events").into_iter().collect();
        wanted.is_subset(&ids)
    });
    std::thread::sleep(Duration::from_secs(1));
    let in_topic = event_ids(&bootstrap, "events");
    let in_file = read(&out);
    signal(&mut a, "-TERM");
    signal(&mut edge, "-TERM");
    let text = log();
    assert!(complete, "every event reached the events topic\n{text}");
    assert!(
        text.contains("transaction aborted"),
        "the injected failure aborted a transaction\n{text}"
    );
    assert!(
        text.contains("transactional producer made anew"),
        "the fenced producer was replaced\n{text}"
    );
    assert!(text.contains("partition read again from its committed offset"), "rewound\n{text}");
    for id in &in_topic {
        assert!(want.contains_key(id), "{id}: an event replay emits\n{text}");
    }
    // The failed transaction wrote nothing (its partitions were never added), so even on
    // the mock each event is in the topic once: the rewound engines' events are not sent
    // twice.
    let unique: BTreeSet<&String> = in_topic.iter().collect();
    assert_eq!(unique.len(), in_topic.len(), "each event once in the topic\n{text}");
    for e in &in_file {
        assert_eq!(Some(e), want.get(&e.id), "the file sink's events are replay's");
    }
    let file_ids: BTreeSet<String> = in_file.iter().map(|e| e.id.clone()).collect();
    assert!(wanted.is_subset(&file_ids), "the file sink got every event too");
    eprintln!(
        "{} events: {} records in the topic, {} lines in the file",
        want.len(),
        in_topic.len(),
        in_file.len()
    );
}

/// Exactly once end to end (item 6e), against a Kafka with transactions: two core
/// instances, one SIGKILLed mid-stream; a read_committed consumer of the events topic sees
/// every event replay emits exactly once. Neither test broker here can run it: tansu 0.6.0
/// advertises no EndTxn, and MockCluster's EndTxn and TxnOffsetCommit do nothing. Run it
/// against any Kafka with `HERALD_KAFKA=host:port cargo test --test it exactly_once_against
/// -- --ignored` (it creates topics named `herald-eos-<pid>-*`; a single broker needs
/// `transaction.state.log.replication.factor=1` and `…min.isr=1`).
#[test]
#[ignore = "needs a Kafka with transactions (HERALD_KAFKA=host:port): tansu 0.6.0 has no EndTxn, MockCluster's EndTxn and TxnOffsetCommit do nothing"]
fn exactly_once_against_a_real_kafka() {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    let bootstrap = std::env::var("HERALD_KAFKA").expect("HERALD_KAFKA=host:port of a Kafka");
    let prefix = format!("herald-eos-{}-", std::process::id());
    let admin: AdminClient<rdkafka::client::DefaultClientContext> =
        rdkafka::ClientConfig::new().set("bootstrap.servers", &bootstrap).create().unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let names = [format!("{prefix}raw"), format!("{prefix}events")];
    let topics = [
        NewTopic::new(&names[0], 2, TopicReplication::Fixed(1)),
        NewTopic::new(&names[1], 1, TopicReplication::Fixed(1)),
    ];
    for r in runtime.block_on(admin.create_topics(&topics, &AdminOptions::new())).unwrap() {
        r.expect("a topic created");
    }
    let dir = tempfile::tempdir().unwrap();
    let mut edge = start_edge(dir.path(), &bootstrap, &names[0], 4, "4000");
    forwarded(&bootstrap, &names[0], 2);
    let want = replayed_per_partition(records_of(&bootstrap, &names[0], 2));
    let configs: Vec<(PathBuf, PathBuf)> = ["a", "b"]
        .iter()
        .map(|n| exactly_once_config(dir.path(), &bootstrap, n, &prefix))
        .collect();
    let logs: Vec<PathBuf> =
        ["a", "b"].iter().map(|n| dir.path().join(format!("{n}.log"))).collect();
    let mut a = start(&configs[0].0, &logs[0]);
    assert!(eventually_for(Duration::from_secs(120), || !read(&configs[0].1).is_empty()));
    signal(&mut a, "-KILL");
    let mut b = start(&configs[1].0, &logs[1]);
    let wanted: BTreeSet<String> = want.keys().cloned().collect();
    let complete = eventually_for(Duration::from_secs(300), || {
        let ids: BTreeSet<String> = event_ids(&bootstrap, &names[1]).into_iter().collect();
        wanted.is_subset(&ids)
    });
    std::thread::sleep(Duration::from_secs(5));
    let ids = event_ids(&bootstrap, &names[1]);
    signal(&mut b, "-TERM");
    signal(&mut edge, "-TERM");
    let b_log = std::fs::read_to_string(&logs[1]).unwrap_or_default();
    assert!(complete, "every event reached the events topic\n{b_log}");
    let unique: BTreeSet<&String> = ids.iter().collect();
    assert_eq!(unique.len(), ids.len(), "each event once for a read_committed consumer");
    assert!(ids.iter().all(|id| want.contains_key(id)), "only events replay emits");
}
