//! The core group (DESIGN §10): core instances share a raw topic's partitions in one consumer
//! group, each partition's engine moving with its partition through the changelog topic.
//!
//! tansu (in memory: on SQLite storage, where it compacts, it stopped answering a core for a
//! minute at a time under a backlog's fetches and the changelog's appends) with eager
//! `range` assignment: with
//! `cooperative-sticky`, tansu 0.6.0 was seen letting two live members own one partition at
//! once, and it expires a killed member only once another one joins or leaves. A short
//! session timeout: tansu answers no heartbeat while a member joins, so with librdkafka's
//! 45 s default every join cost the other members their session.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use herald::model::ClusterEvent;

use crate::durability::{herald_run_config, signal, Tansu};
use crate::edge::{forwarded, raw_sink};
use crate::support::*;

const CLUSTERS: usize = 12;
const PARTITIONS: u32 = 6;

/// A core instance's config: its own state dir and output file, one group.
fn core_config(dir: &Path, tansu: &Tansu, name: &str) -> (PathBuf, PathBuf) {
    let out = dir.join(format!("{name}.jsonl"));
    let cfg = write_temp(
        dir,
        &format!("{name}.toml"),
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n[state]\ndir = {:?}\n[engine]\nkey_ttl = \"87600h\"\n\
             [sources.raw]\ntype = \"kafka\"\nbrokers = \"{}\"\ntopic = \"raw\"\ngroup_id = \"core\"\n\
             client.\"partition.assignment.strategy\" = \"range\"\n\
             client.\"session.timeout.ms\" = \"6000\"\nclient.\"heartbeat.interval.ms\" = \"1000\"\n\
             [sinks.out]\ntype = \"file\"\npath = {:?}\n",
            dir.join(format!("{name}-state")).to_str().unwrap(),
            tansu.bootstrap(),
            out.to_str().unwrap(),
        )
        .as_bytes(),
    );
    (cfg, out)
}

fn start(cfg: &Path, log: &Path) -> Child {
    herald()
        .args(["run", "--config", cfg.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).expect("log file"))
        .spawn()
        .expect("herald run")
}

fn read(out: &Path) -> Vec<ClusterEvent> {
    std::fs::read(out).map(|b| events(&b)).unwrap_or_default()
}

/// What `herald replay` emits of each partition's records, in offset order, with the cluster
/// and reporter their headers name. A partition is one engine with one engine time (DESIGN
/// §10), so clusters that share a partition share its time: while an edge's backlog
/// interleaves their logs, replaying one cluster's log alone is not what the group owes.
fn replayed_per_partition(tansu: &Tansu) -> BTreeMap<String, ClusterEvent> {
    use herald::decode::Context;
    use herald::engine::{Engine, EngineConfig};
    use herald::pipeline::driver::{Driver, Unwatched};
    use herald::support::lines::Line;
    let mut records = tansu.records("raw");
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

/// Three core instances, one of them SIGKILLed mid-stream and another joining after: the
/// union of their events, by id, is what `herald replay` emits of each partition's records —
/// every id at least once, none that replay does not emit, each equal to replay's.
#[test]
#[ignore = "not yet true: in runs here none to 14 of 11,000 events are missing and 7 to 1,100 are not what replay emits: an instance given a partition (even back, in one eager rebalance) was seen to read first at an offset past the input offset its restored engine reflects, and a changelog append made just before a revocation was missing from a restore right after it; see the notes of issue 18"]
fn a_core_group_emits_what_replay_emits_though_an_instance_is_killed_and_another_joins() {
    let dir = tempfile::tempdir().unwrap();
    let tansu = Tansu::start();
    tansu.create_with("raw", PARTITIONS);
    let mut by_cluster: BTreeMap<String, ClusterEvent> = BTreeMap::new();
    let mut sources = String::new();
    for i in 0..CLUSTERS {
        let seed = (40 + i).to_string();
        let log = write_temp(
            dir.path(),
            &format!("c{i}.log"),
            &run(&["generate", "--seed", &seed, "--lines", "4000"], b"").stdout,
        );
        let replayed = run(&["replay", "--cluster", &format!("c{i}"), log.to_str().unwrap()], b"");
        by_cluster.extend(events(&replayed.stdout).into_iter().map(|e| (e.id.clone(), e)));
        sources += &format!(
            "[sources.c{i}]\ntype = \"file\"\npath = {:?}\ncluster = \"c{i}\"\n",
            log.to_str().unwrap()
        );
    }
    assert!(by_cluster.len() > 12 * 50, "a workload: {} events", by_cluster.len());
    let edge_dir = dir.path().join("edge");
    std::fs::create_dir(&edge_dir).unwrap();
    let edge_cfg = write_temp(
        &edge_dir,
        "edge.toml",
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n[state]\ndir = {:?}\n{sources}{}",
            edge_dir.join("state").to_str().unwrap(),
            raw_sink(&tansu, "raw")
        )
        .as_bytes(),
    );
    let mut edge = herald_run_config(&edge_dir, &edge_cfg);
    forwarded(&tansu.bootstrap(), "raw", PARTITIONS as i32);
    let want = replayed_per_partition(&tansu);
    assert!(want.len() > 12 * 50, "a workload: {} events", want.len());

    let names = ["a", "b", "c"];
    let configs: Vec<(PathBuf, PathBuf)> =
        names.iter().map(|n| core_config(dir.path(), &tansu, n)).collect();
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
    let c_log = std::fs::read_to_string(&logs[2]).unwrap_or_default();
    assert!(c_log.contains("partitions assigned"), "instance c took part:\n{c_log}");
}
