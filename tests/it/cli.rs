//! The real binary: `herald replay`, `herald check`, `herald generate`, exit codes.

use crate::support::*;
use herald::model::EventKind;

const SAMPLE: &str = "samples/openziti-ha.jsonl";

#[test]
fn replay_of_the_shipped_sample_tells_the_story() {
    let path = repo(SAMPLE);
    let out = run(&["replay", "--cluster", "prod", path.to_str().unwrap()], b"");
    assert!(out.status.success(), "{out:?}");
    let events = events(&out.stdout);
    let kinds: Vec<EventKind> = events.iter().map(|e| e.kind).collect();
    let count = |k: EventKind| kinds.iter().filter(|x| **x == k).count();
    assert_eq!(count(EventKind::LeaderElected), 2, "startup leader, then the failover");
    assert_eq!(
        count(EventKind::Leaderless),
        0,
        "startup and failover gaps are shorter than the windows"
    );
    assert_eq!(count(EventKind::SpinStarted), 1);
    assert_eq!(count(EventKind::SpinStopped), 1);
    assert_eq!(
        count(EventKind::RouterOffline),
        1,
        "the 300 ms flap is suppressed, the outage is not"
    );
    assert_eq!(count(EventKind::NodeDown), 1);
    assert_eq!(count(EventKind::NodeUp), 1);
    let failover = events.iter().filter(|e| e.kind == EventKind::LeaderElected).nth(1).unwrap();
    assert_eq!(failover.leader_id.as_deref(), Some("ctrl2"));
    assert_eq!(failover.previous.as_deref(), Some("ctrl1"));
    assert!(events.iter().all(|e| e.cluster == "prod" && e.schema == "herald.v1"));
    let s = summary(&out);
    assert_eq!(s["records"], 48);
    assert_eq!(s["events"], events.len() as u64);
    assert_eq!((s["decode_errors"], s["ignored"], s["stale"]), (0, 2, 2));
}

#[test]
fn replay_output_is_valid_json_lines_with_the_exact_timestamp_format() {
    let out = run(&["replay", repo(SAMPLE).to_str().unwrap()], b"");
    let text = String::from_utf8(out.stdout).unwrap();
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        for field in ["at", "stable_at"] {
            let ts = v[field].as_str().unwrap();
            assert_eq!(ts.len(), 30, "{ts}");
            assert!(ts.ends_with('Z') && ts.as_bytes()[19] == b'.', "{ts}");
        }
        assert!(!line.contains("null"), "{line}");
        assert_eq!(v["id"].as_str().unwrap().len(), 32);
        assert_eq!(v["cluster"], "default", "--cluster defaults to `default`");
    }
}

#[test]
fn replay_reads_stdin_with_a_dash() {
    let input = std::fs::read(repo(SAMPLE)).unwrap();
    let a = run(&["replay", "-"], &input);
    let b = run(&["replay", repo(SAMPLE).to_str().unwrap()], b"");
    assert!(a.status.success());
    assert_eq!(a.stdout, b.stdout);
}

#[test]
fn replay_reporter_names_records_without_event_src_id() {
    let line = br#"{"namespace":"fabric.cluster","event_type":"state.has_leader","timestamp":"2024-01-01T00:00:00Z","leaderId":"c1"}"#;
    let out = run(&["replay", "--reporter", "c9", "-"], line);
    let e = events(&out.stdout);
    assert_eq!(e[0].node.as_deref(), Some("c9"));
    let out = run(&["replay", "-"], line);
    assert_eq!(events(&out.stdout)[0].node.as_deref(), Some("unknown"));
}

#[test]
fn replay_window_override_zero_emits_every_change() {
    let mut input = String::new();
    for i in 0..10 {
        let kind = if i % 2 == 0 { "router-online" } else { "router-offline" };
        input.push_str(&format!(
            "{{\"namespace\":\"router\",\"event_src_id\":\"c1\",\"timestamp\":\"2024-01-01T00:00:{i:02}Z\",\"event_type\":\"{kind}\",\"router_id\":\"r1\"}}\n"
        ));
    }
    let out = run(&["replay", "--window", "0", "-"], input.as_bytes());
    let e = events(&out.stdout);
    assert_eq!(e.len(), 10, "--window 0 is pure dedupe: {e:?}");
    assert!(e.iter().all(|e| e.at == e.stable_at));
    let out = run(&["replay", "-"], input.as_bytes());
    assert_eq!(events(&out.stdout).len(), 1, "with W = 2 s only the first online holds");
}

#[test]
fn replay_window_does_not_override_the_startup_grace() {
    let line = br#"{"namespace":"router","event_src_id":"c1","timestamp":"2024-01-01T00:00:00Z","event_type":"router-offline","router_id":"r1"}"#;
    let out = run(&["replay", "--window", "1s", "-"], line);
    let e = events(&out.stdout);
    assert_eq!(e[0].stable_at.as_unix_nanos() - e[0].at.as_unix_nanos(), 10_000_000_000);
}

#[test]
fn replay_counts_bad_lines_with_their_line_numbers_and_carries_on() {
    let mut input = Vec::new();
    let good = br#"{"namespace":"router","event_src_id":"c1","timestamp":"2024-01-01T00:00:00Z","event_type":"router-online","router_id":"r1"}"#;
    input.extend_from_slice(b"{not json\n"); // 1
    input.extend_from_slice(b"{\"namespace\":\"cluster\xff\xfe\"}\n"); // 2
    input.extend_from_slice(br#"{"namespace":"cluster","eventType":"state.has_leader","timestamp":"2024-01-01T00:00:00Z"}"#); // 3
    input.push(b'\n');
    input.extend_from_slice(
        br#"{"namespace":"cluster","eventType":"state.rw","timestamp":"yesterday"}"#,
    ); // 4
    input.push(b'\n');
    input.extend((0..100_000u32).map(|i| b"!@#$%^&*()x"[(i % 11) as usize])); // 5
    input.push(b'\n');
    let deep =
        format!("{{\"namespace\":\"cluster\",\"x\":{}{}}}\n", "[".repeat(5000), "]".repeat(5000));
    input.extend_from_slice(deep.as_bytes()); // 6
    input.extend_from_slice(br#"{"hello":"world"}"#); // 7
    input.push(b'\n');
    input.extend_from_slice(b"\n   \n"); // blank: not records
    input.extend_from_slice(br#"{"namespace":"usage","timestamp":"2024-01-01T00:00:00Z"}"#); // 10
    input.push(b'\n');
    input.extend_from_slice(good); // 11
    input.push(b'\n');
    let out = run(&["replay", "-"], &input);
    assert!(out.status.success(), "bad lines never stop replay: {out:?}");
    let err = stderr_lines(&out);
    for n in [1, 2, 3, 4, 5, 6, 7] {
        assert!(
            err.iter().any(|l| l.contains(&format!("line {n}:"))),
            "no error for line {n}: {err:#?}"
        );
    }
    assert!(err.iter().any(|l| l.contains("line 3:") && l.contains("leaderId")), "{err:#?}");
    let s = summary(&out);
    assert_eq!((s["records"], s["decode_errors"], s["ignored"], s["events"]), (9, 7, 1, 1));
    assert_eq!(events(&out.stdout)[0].router.as_deref(), Some("r1"));
}

#[test]
fn replay_summary_is_the_last_line_on_stderr() {
    let out = run(&["replay", "-"], b"garbage\n");
    let last = stderr_lines(&out).pop().unwrap();
    assert_eq!(last, "records=1 events=0 suppressed=0 stale=0 decode_errors=1 ignored=0");
}

#[test]
fn replay_of_a_missing_file_exits_66() {
    let out = run(&["replay", "/nonexistent/herald/log.jsonl"], b"");
    assert_eq!(out.status.code(), Some(66), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/herald/log.jsonl"));
}

#[test]
fn replay_with_a_bad_config_exits_78() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_temp(dir.path(), "bad.toml", b"[engine]\nwindow = \"soon\"\n");
    let out = run(&["replay", "--config", cfg.to_str().unwrap(), "-"], b"");
    assert_eq!(out.status.code(), Some(78), "{out:?}");
}

#[test]
fn replay_takes_engine_settings_from_the_config() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_temp(
        dir.path(),
        "c.toml",
        b"[engine.windows]\nrouter = \"7s\"\n[clusters.edge.engine]\nwindow = \"1s\"\n",
    );
    let line = br#"{"namespace":"router","event_src_id":"c1","timestamp":"2024-01-01T00:00:00Z","event_type":"router-online","router_id":"r1"}"#;
    let gap = |args: &[&str]| {
        let mut a = vec!["replay", "--config", cfg.to_str().unwrap()];
        a.extend_from_slice(args);
        a.push("-");
        let e = events(&run(&a, line).stdout);
        (e[0].stable_at.as_unix_nanos() - e[0].at.as_unix_nanos()) / 1_000_000_000
    };
    assert_eq!(gap(&[]), 7);
    assert_eq!(gap(&["--cluster", "edge"]), 1);
    assert_eq!(gap(&["--window", "3s"]), 3);
    assert_eq!(gap(&["--cluster", "edge", "--window", "3s"]), 3);
}

#[test]
fn replay_detects_the_generic_format_per_line() {
    let input = br#"{"ts":"2025-03-01T10:00:00Z","cluster":"etcd-a","reporter":"n1","signal":"leader","leader":"n2"}
{"namespace":"cluster","event_src_id":"ctrl1","timestamp":"2025-03-01T10:00:00Z","eventType":"state.has_leader","leaderId":"ctrl2"}
"#;
    let out = run(&["replay", "--cluster", "ziti", "-"], input);
    let e = events(&out.stdout);
    let clusters: std::collections::BTreeSet<_> = e.iter().map(|e| e.cluster.as_str()).collect();
    assert_eq!(clusters.into_iter().collect::<Vec<_>>(), ["etcd-a", "ziti"]);
}

#[test]
fn replay_into_a_closed_pipe_is_not_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("big.jsonl");
    let gen = run(&["generate", "--lines", "200000"], b"");
    std::fs::write(&log, &gen.stdout).unwrap();
    let mut child = herald()
        .args(["replay", "--window", "0", log.to_str().unwrap()])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut first = [0u8; 10];
    std::io::Read::read_exact(&mut stdout, &mut first).unwrap();
    drop(stdout);
    let status = child.wait().unwrap();
    assert!(status.success(), "{status:?}");
}

#[test]
fn check_accepts_a_good_config() {
    // The shipped examples: one instance, and an edge with a core that reads what it forwards.
    for file in ["config/example.toml", "config/edge.toml", "config/core.toml"] {
        let out = run(&["check", "--config", repo(file).to_str().unwrap()], b"");
        assert!(out.status.success(), "{file}: {}", String::from_utf8_lossy(&out.stderr));
    }
}

#[test]
fn check_lists_every_problem_with_its_key_path_and_exits_78() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_temp(
        dir.path(),
        "bad.toml",
        b"[sinks.kafka_main]\ntype = \"kafka\"\nbrokers = \"b:9092\"\n[sources.x]\ntype = \"file\"\nwat = 1\n",
    );
    let out = run(&["check", "--config", cfg.to_str().unwrap()], b"");
    assert_eq!(out.status.code(), Some(78));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("sinks.kafka_main.topic: missing"), "{err}");
    assert!(err.contains("sources.x.path: missing"), "{err}");
    assert!(err.contains("sources.x.wat: unknown key"), "{err}");
}

#[test]
fn check_of_a_missing_config_exits_66() {
    let out = run(&["check", "--config", "/nonexistent/herald.toml"], b"");
    assert_eq!(out.status.code(), Some(66));
}

#[test]
fn usage_errors_exit_1_and_help_exits_0() {
    assert_eq!(run(&["replay"], b"").status.code(), Some(1));
    assert_eq!(run(&["replay", "--window", "soon", "-"], b"").status.code(), Some(1));
    assert_eq!(run(&["--help"], b"").status.code(), Some(0));
}

#[test]
fn generate_is_deterministic_per_seed() {
    let a = run(&["generate", "--seed", "7", "--lines", "5000"], b"");
    let b = run(&["generate", "--seed", "7", "--lines", "5000"], b"");
    let c = run(&["generate", "--seed", "8", "--lines", "5000"], b"");
    assert_eq!(a.stdout, b.stdout);
    assert_ne!(a.stdout, c.stdout);
    assert_eq!(a.stdout.iter().filter(|&&b| b == b'\n').count(), 5000);
}

#[test]
fn generated_logs_have_the_promised_mix() {
    let log = run(&["generate", "--seed", "3", "--lines", "20000"], b"").stdout;
    let out = run(&["replay", "-"], &log);
    let s = summary(&out);
    assert_eq!(s["decode_errors"], 0);
    assert!(s["suppressed"] > 100, "flaps: {s:?}");
    assert!(s["stale"] > 10, "reordering and duplicate raft indexes: {s:?}");
    assert!(s["ignored"] > 1000, "noise namespaces: {s:?}");
    let e = events(&out.stdout);
    let has = |k: EventKind| e.iter().any(|x| x.kind == k);
    for k in [
        EventKind::LeaderElected,
        EventKind::SpinStarted,
        EventKind::SpinStopped,
        EventKind::RouterOffline,
        EventKind::MembersChanged,
    ] {
        assert!(has(k), "no {k} in a generated log");
    }
}
