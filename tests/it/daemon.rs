//! `herald run`: the real binary tailing real files, signalled and killed.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use herald::model::ClusterEvent;

use crate::support::*;

fn config(dir: &Path, log: &Path, extra: &str) -> PathBuf {
    config_on(dir, log, 0, extra)
}

fn config_on(dir: &Path, log: &Path, port: u16, extra: &str) -> PathBuf {
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:{port}\"\n[state]\ndir = {:?}\n[sources.log]\ntype = \"file\"\npath = {:?}\ncluster = \"prod\"\n{extra}",
        dir.join("state").to_str().unwrap(),
        log.to_str().unwrap()
    );
    write_temp(dir, "herald.toml", text.as_bytes())
}

fn replay_events(log: &Path) -> Vec<ClusterEvent> {
    events(&run(&["replay", "--cluster", "prod", log.to_str().unwrap()], b"").stdout)
}

fn generated(lines: u64, seed: u64) -> Vec<u8> {
    run(&["generate", "--seed", &seed.to_string(), "--lines", &lines.to_string()], b"").stdout
}

#[test]
fn run_over_a_complete_file_emits_exactly_what_replay_emits() {
    let dir = tempfile::tempdir().unwrap();
    let log = write_temp(dir.path(), "events.log", &generated(20_000, 11));
    let want = replay_events(&log);
    assert!(want.len() > 500, "a meaningful log: {}", want.len());
    let mut d = Daemon::start(&config(dir.path(), &log, ""));
    let got = d.wait_for(want.len());
    assert!(d.signal("-TERM").success(), "SIGTERM exits 0");
    assert_eq!(got.len(), want.len());
    assert!(got == want, "run and replay differ");
}

#[test]
fn a_restart_after_sigterm_re_emits_nothing_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let log = write_temp(dir.path(), "events.log", &generated(100_000, 5));
    let want = replay_events(&log);
    let cfg = config(dir.path(), &log, "");
    // Stopped in the middle of the backlog...
    let mut d = Daemon::start(&cfg);
    std::thread::sleep(Duration::from_millis(300));
    assert!(d.signal("-TERM").success());
    let first = d.events();
    assert!(first.len() < want.len(), "stopped before the end: make the log longer");
    // ...and restarted: it carries on where it stopped, on record time, as one replay would.
    let mut d = Daemon::start(&cfg);
    d.wait_for(want.len() - first.len());
    assert!(d.signal("-TERM").success());
    let mut both = first.clone();
    both.extend(d.events());
    check_same(&both, &want);
    assert_eq!(both.len(), want.len(), "a clean stop redelivers nothing");
    // A clean restart with nothing new to read emits nothing at all.
    let mut d = Daemon::start(&cfg);
    std::thread::sleep(Duration::from_millis(700));
    assert!(d.signal("-TERM").success());
    assert_eq!(d.events().len(), 0, "re-emitted after a clean restart");
}

#[test]
fn a_restart_after_sigkill_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let log = write_temp(dir.path(), "events.log", &generated(30_000, 9));
    let want = replay_events(&log);
    let cfg = config(dir.path(), &log, "");
    let mut seen: Vec<ClusterEvent> = Vec::new();
    for _ in 0..3 {
        let mut d = Daemon::start(&cfg);
        std::thread::sleep(Duration::from_millis(150));
        d.signal("-KILL");
        seen.extend(d.events());
    }
    let mut d = Daemon::start(&cfg);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut all = seen.clone();
        all.extend(d.events());
        if unique(&all) == unique(&want) || Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(d.signal("-TERM").success());
    seen.extend(d.events());
    check_same(&seen, &want);
    let dupes = seen.len() - unique(&seen).len();
    eprintln!("{} events, {} redelivered after SIGKILL", want.len(), dupes);
}

/// A log in which every line yields exactly one event, whenever it is read: each line is
/// the first report of its own router.
pub(crate) fn one_event_per_line(from: usize, to: usize) -> Vec<u8> {
    (from..to)
        .map(|i| {
            format!(
                "{{\"namespace\":\"router\",\"event_src_id\":\"c1\",\"timestamp\":\"2025-01-10T18:00:{:02}.{:09}Z\",\"event_type\":\"router-online\",\"router_id\":\"r{i}\"}}\n",
                i / 100_000 % 60,
                i % 100_000 * 1000
            )
        })
        .collect::<String>()
        .into_bytes()
}

#[test]
fn the_tailer_follows_a_rotation_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("events.log");
    std::fs::write(&log, one_event_per_line(0, 1500)).unwrap();
    let mut d = Daemon::start(&config(dir.path(), &log, ""));
    d.wait_for(1500);
    // OpenZiti's rotation: a last write, the log renamed to a backup, a new log in its place.
    std::fs::OpenOptions::new()
        .append(true)
        .open(&log)
        .unwrap()
        .write_all(&one_event_per_line(1500, 2000))
        .unwrap();
    std::fs::rename(&log, dir.path().join("events-2025-01-10T18-00.log")).unwrap();
    std::fs::write(&log, one_event_per_line(2000, 3000)).unwrap();
    let got = d.wait_for(3000);
    assert!(d.signal("-TERM").success());
    let routers: std::collections::BTreeSet<String> =
        got.iter().filter_map(|e| e.router.clone()).collect();
    assert_eq!((got.len(), routers.len()), (3000, 3000), "every line once, across the rotation");
}

#[test]
fn a_partial_line_waits_for_its_newline() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("events.log");
    let line = one_event_per_line(0, 1);
    std::fs::write(&log, &line[..40]).unwrap();
    let mut d = Daemon::start(&config(dir.path(), &log, ""));
    std::thread::sleep(Duration::from_millis(400));
    std::fs::OpenOptions::new().append(true).open(&log).unwrap().write_all(&line[40..]).unwrap();
    let got = d.wait_for(1);
    assert!(d.signal("-TERM").success());
    assert_eq!(got.len(), 1, "the line was read whole, not as two broken halves");
}

/// The same events by id, every one at least once, none spurious; differences summarized.
fn check_same(got: &[ClusterEvent], want: &[ClusterEvent]) {
    let (g, w) = (unique(got), unique(want));
    let missing: Vec<_> = w.keys().filter(|k| !g.contains_key(*k)).take(3).collect();
    let spurious: Vec<_> = g.keys().filter(|k| !w.contains_key(*k)).take(3).collect();
    assert!(
        missing.is_empty() && spurious.is_empty(),
        "{} wanted, {} got; missing e.g. {:?}, spurious e.g. {:?}",
        w.len(),
        g.len(),
        missing.iter().map(|k| &w[*k]).collect::<Vec<_>>(),
        spurious.iter().map(|k| &g[*k]).collect::<Vec<_>>()
    );
}

fn unique(events: &[ClusterEvent]) -> BTreeMap<String, ClusterEvent> {
    events.iter().map(|e| (e.id.clone(), e.clone())).collect()
}

#[test]
fn the_http_server_serves_health_state_and_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    // The sample is from 2025: a long TTL keeps its negative keys from being evicted.
    let cfg = config_on(dir.path(), &repo("samples/openziti-ha.jsonl"), port, "[engine]\nkey_ttl = \"87600h\"\n[sinks.out]\ntype = \"stdout\"\n[sinks.m]\ntype = \"prometheus\"\n");
    let mut d = Daemon::start(&cfg);
    assert!(eventually(|| std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()));
    assert_eq!(http(port, "GET", "/healthz", &[], b"").0, 200);
    assert!(eventually(|| http(port, "GET", "/readyz", &[], b"").0 == 200));
    d.wait_for(26);
    let (status, metrics) = http(port, "GET", "/metrics", &[], b"");
    assert_eq!(status, 200);
    for line in [
        "herald_cluster_has_leader{cluster=\"prod\"} 1",
        "herald_cluster_leader{cluster=\"prod\",leader_id=\"ctrl2\"} 1",
        "herald_router_online{cluster=\"prod\",router=\"edge-east\"} 0",
        "herald_router_online{cluster=\"prod\",router=\"edge-west\"} 1",
        "herald_node_up{cluster=\"prod\",node=\"ctrl1\"} 1",
        "herald_peer_connected{cluster=\"prod\",node=\"ctrl2\",peer=\"ctrl1\"} 1",
        "herald_node_has_leader{cluster=\"prod\",node=\"ctrl3\"} 1",
        "herald_transitions_total{cluster=\"prod\",kind=\"cluster.leader_elected\",severity=\"info\"} 2",
        "herald_suppressed_total{cluster=\"prod\",kind=\"router.offline\"} 1",
        "herald_records_total{outcome=\"ok\",source=\"log\"} 44",
        "herald_records_total{outcome=\"stale\",source=\"log\"} 2",
        "herald_records_total{outcome=\"ignored\",source=\"log\"} 2",
        "herald_sink_events_total{sink=\"out\"} 26",
        "herald_build_info{version=",
    ] {
        assert!(metrics.contains(line), "no {line} in /metrics");
    }
    assert!(!metrics.contains("leader_id=\"ctrl1\""), "the old leader's series is gone");
    assert!(metrics.contains("herald_event_ack_delay_seconds_bucket"));
    let (status, state) = http(port, "GET", "/state", &[], b"");
    assert_eq!(status, 200);
    let v: serde_json::Value = serde_json::from_str(&state).unwrap();
    assert_eq!(v["clusters"]["prod"]["leader"], "ctrl2");
    assert_eq!(v["clusters"]["prod"]["routers"]["edge-east"], false);
    assert!(d.signal("-TERM").success());
}

#[test]
fn an_evicted_key_loses_its_series_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    // The sample's records are from 2025: with a one-hour TTL, a negative key is evicted as
    // soon as engine time follows the wall clock.
    let cfg = config_on(dir.path(), &repo("samples/openziti-ha.jsonl"), port, "[engine]\nkey_ttl = \"1h\"\n[sinks.out]\ntype = \"stdout\"\n[sinks.m]\ntype = \"prometheus\"\n");
    let mut d = Daemon::start(&cfg);
    d.wait_for(26);
    assert!(
        eventually(|| {
            let m = http(port, "GET", "/metrics", &[], b"").1;
            m.contains("router=\"edge-west\"") && !m.contains("router=\"edge-east\"")
        }),
        "edge-east (offline, silent) evicted; edge-west (online) kept"
    );
    assert!(d.signal("-TERM").success());
}

#[test]
fn ingest_accepts_good_lines_and_refuses_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let log = write_temp(dir.path(), "events.log", b"");
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:{port}\"\ningest_token = \"s3cret\"\n[state]\ndir = {:?}\n[sources.in]\ntype = \"http\"\ncluster = \"prod\"\n[sources.log]\ntype = \"file\"\npath = {:?}\n",
        dir.path().join("state").to_str().unwrap(),
        log.to_str().unwrap()
    );
    let cfg = write_temp(dir.path(), "herald.toml", text.as_bytes());
    let mut d = Daemon::start(&cfg);
    assert!(eventually(|| http(port, "GET", "/readyz", &[], b"").0 == 200));
    let auth = [("authorization", "Bearer s3cret")];
    let good = one_event_per_line(0, 3);
    let (status, body) = http(port, "POST", "/ingest", &[], &good);
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("bearer token"), "{body}");
    assert_eq!(http(port, "POST", "/ingest", &[("authorization", "Bearer wrong")], &good).0, 401);
    let (status, body) = http(port, "POST", "/ingest", &auth, &vec![b'x'; (1 << 20) + 1]);
    assert_eq!(status, 413, "{body}");
    let mut bad = good.clone();
    bad.extend_from_slice(b"{\"namespace\":\"router\"}\nnot json\n");
    let (status, body) = http(port, "POST", "/ingest", &auth, &bad);
    assert_eq!(status, 400, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let lines: Vec<u64> =
        v["lines"].as_array().unwrap().iter().map(|l| l["line"].as_u64().unwrap()).collect();
    assert_eq!(lines, [4, 5], "{body}");
    assert!(d.events().is_empty(), "a refused body accepts nothing");
    let (status, body) = http(port, "POST", "/ingest", &auth, &good);
    assert_eq!((status, body.trim()), (200, "{\"accepted\":3}"));
    let got = d.wait_for(3);
    assert_eq!(got.len(), 3);
    assert!(got
        .iter()
        .all(|e| e.cluster == "prod" && e.kind == herald::model::EventKind::RouterOnline));
    assert!(d.signal("-TERM").success());
}

/// `promtool`, which `scripts/services.sh` installs; its absence fails loudly.
fn promtool() -> Command {
    assert!(
        Command::new("promtool").arg("--version").output().is_ok(),
        "promtool is missing: run scripts/services.sh (Debian package `prometheus`)"
    );
    Command::new("promtool")
}

#[test]
fn metric_names_pass_promtool_check_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let cfg = config_on(dir.path(), &repo("samples/openziti-ha.jsonl"), port, "[engine]\nkey_ttl = \"87600h\"\n[sinks.out]\ntype = \"stdout\"\n[sinks.m]\ntype = \"prometheus\"\n");
    let mut d = Daemon::start(&cfg);
    d.wait_for(26);
    let (status, metrics) = http(port, "GET", "/metrics", &[], b"");
    assert!(d.signal("-TERM").success());
    assert_eq!(status, 200);
    let mut check = promtool()
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    check.stdin.take().unwrap().write_all(metrics.as_bytes()).unwrap();
    let out = check.wait_with_output().unwrap();
    let report =
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "promtool check metrics: {report}");
    assert!(report.trim().is_empty(), "promtool has remarks: {report}");
}

#[test]
fn the_server_speaks_https_with_a_configured_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let made = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
        ])
        .args(["-addext", "subjectAltName=IP:127.0.0.1", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl");
    assert!(made.status.success(), "{made:?}");
    let port = free_port();
    let log = write_temp(dir.path(), "events.log", b"");
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:{port}\"\ningest_token = \"t\"\ntls_cert = {:?}\ntls_key = {:?}\n[sources.in]\ntype = \"http\"\ncluster = \"prod\"\n[sources.log]\ntype = \"file\"\npath = {:?}\n",
        cert.to_str().unwrap(),
        key.to_str().unwrap(),
        log.to_str().unwrap()
    );
    let cfg = write_temp(dir.path(), "herald.toml", text.as_bytes());
    let mut d = Daemon::start(&cfg);
    let url = format!("https://127.0.0.1:{port}");
    let curl = |args: &[&str]| {
        let out = Command::new("curl")
            .args(["-s", "--cacert"])
            .arg(&cert)
            .args(args)
            .output()
            .expect("curl");
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    assert!(eventually(|| curl(&[&format!("{url}/readyz")]) == "ready\n"), "HTTPS /readyz");
    let body = String::from_utf8(one_event_per_line(0, 2)).unwrap();
    let answer =
        curl(&["-H", "authorization: Bearer t", "--data-binary", &body, &format!("{url}/ingest")]);
    assert_eq!(answer, "{\"accepted\":2}");
    assert_eq!(d.wait_for(2).len(), 2);
    assert!(d.signal("-TERM").success());
}

#[test]
fn run_reads_stdin_and_emits_what_replay_emits() {
    let dir = tempfile::tempdir().unwrap();
    let text =
        "[server]\nlisten = \"127.0.0.1:0\"\n[sources.in]\ntype = \"stdin\"\ncluster = \"prod\"\n";
    let cfg = write_temp(dir.path(), "herald.toml", text.as_bytes());
    let sample = std::fs::read(repo("samples/openziti-ha.jsonl")).unwrap();
    let mut child = herald()
        .args(["run", "--config", cfg.to_str().unwrap()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(&sample).unwrap(); // and closed: end of input
    let lines = Arc::new(Mutex::new(Vec::new()));
    let out = child.stdout.take().unwrap();
    let sink = lines.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            sink.lock().unwrap().push(line);
        }
    });
    let mut d = Daemon { child, lines };
    let got = d.wait_for(26);
    assert!(d.signal("-TERM").success());
    assert!(
        got == replay_events(&repo("samples/openziti-ha.jsonl")),
        "stdin run differs from replay"
    );
}

#[test]
fn a_disk_buffered_sink_emits_exactly_what_replay_emits_and_cleans_up() {
    let dir = tempfile::tempdir().unwrap();
    let log = write_temp(dir.path(), "events.log", &generated(20_000, 11));
    let want = replay_events(&log);
    let mut d = Daemon::start(&config(
        dir.path(),
        &log,
        "[sinks.out]\ntype = \"stdout\"\n[sinks.out.buffer]\ntype = \"disk\"\nfsync = \"batch\"\n",
    ));
    let got = d.wait_for(want.len());
    assert!(d.signal("-TERM").success(), "SIGTERM exits 0");
    assert!(got == want, "run through a disk buffer and replay differ");
    let buffer = dir.path().join("state/buffers/out");
    let acked = std::fs::read(buffer.join("acked")).expect("an ack file");
    assert_eq!(acked.len(), 12, "8 bytes and a CRC32C");
    let segments: Vec<_> = std::fs::read_dir(&buffer)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.path().extension().is_some_and(|x| x == "seg"))
        .collect();
    assert_eq!(segments.len(), 1, "acknowledged segments removed; the writer's remains");
}

#[test]
fn a_disk_buffer_needs_a_directory_and_a_sane_size() {
    let dir = tempfile::tempdir().unwrap();
    let check = |name: &str, text: &str| {
        let cfg = write_temp(dir.path(), name, text.as_bytes());
        let out = run(&["check", "--config", cfg.to_str().unwrap()], b"");
        assert_eq!(out.status.code(), Some(78), "{out:?}");
        String::from_utf8_lossy(&out.stderr).to_string()
    };
    let err =
        check("a.toml", "[sinks.out]\ntype = \"stdout\"\n[sinks.out.buffer]\ntype = \"disk\"\n");
    assert!(err.contains("sinks.out.buffer.dir: missing"), "{err}");
    let err = check(
        "b.toml",
        "[state]\ndir = \"/tmp/x\"\n[sinks.out]\ntype = \"stdout\"\n[sinks.out.buffer]\ntype = \"disk\"\nmax_bytes = 1000\n",
    );
    assert!(err.contains("sinks.out.buffer.max_bytes"), "{err}");
}
