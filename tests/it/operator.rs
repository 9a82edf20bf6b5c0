//! What an operator types and reads: readable lines, the window sweep, completions, the
//! manual page, the systemd unit (DESIGN §12).

use crate::support::*;

const SAMPLE: &str = "samples/openziti-ha.jsonl";

fn sample() -> String {
    repo(SAMPLE).to_str().unwrap().to_string()
}

/// `--format text` prints one readable line per event, in the order and number of the JSON
/// events, with no colour when stdout is not a terminal.
#[test]
fn replay_format_text_prints_one_readable_line_per_event() {
    let json = run(&["replay", "--cluster", "prod", &sample()], b"");
    let events = events(&json.stdout);
    let out = run(&["replay", "--cluster", "prod", "--format", "text", &sample()], b"");
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout.clone()).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), events.len(), "{text}");
    for (line, e) in lines.iter().zip(&events) {
        let time = e.stable_at.to_rfc3339();
        assert!(line.starts_with(&format!("{time} prod {}", e.kind)), "{line}");
        assert!(!line.contains('\x1b'), "no colour into a pipe: {line:?}");
        assert_eq!(line.contains("(initial)"), e.initial, "{line}");
    }
    let leaders: Vec<&&str> =
        lines.iter().filter(|l| l.contains("cluster.leader_elected")).collect();
    assert_eq!(leaders.len(), 2, "{text}");
    assert!(leaders[0].ends_with(" ctrl1 (initial)"), "{}", leaders[0]);
    assert!(leaders[1].contains(" ctrl1 → ctrl2"), "the failover: {}", leaders[1]);
    assert!(text.contains("cycles"), "the spin's cycles: {text}");
    // The summary stays the last line on stderr.
    assert_eq!(summary(&out)["events"], events.len() as u64);
}

/// Into a pipe, the default stays the JSON contract.
#[test]
fn replay_into_a_pipe_stays_json() {
    let out = run(&["replay", &sample()], b"");
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(!text.is_empty());
    assert!(text.lines().all(|l| serde_json::from_str::<serde_json::Value>(l).is_ok()), "{text}");
}

/// One row per window; W = 0 avoids nothing and delays nothing; a longer window avoids the
/// sample's flaps (it has a 300 ms router flap) and delays each state by about itself.
#[test]
fn replay_sweep_gives_a_row_per_window() {
    let out = run(&["replay", "--sweep", "0,500ms,2s", "--format", "json", &sample()], b"");
    assert!(out.status.success(), "{out:?}");
    let rows: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 3, "{rows:?}");
    assert_eq!(rows[0]["window"], "0");
    assert_eq!(rows[0]["avoided"], 0);
    assert_eq!(rows[0]["delay_median_ns"], 0);
    assert_eq!(rows[2]["window"], "2s");
    assert!(rows[2]["avoided"].as_i64().unwrap() > 0, "{rows:?}");
    assert!(rows[2]["suppressed"].as_u64().unwrap() > 0, "{rows:?}");
    assert_eq!(rows[2]["delay_median_ns"], 2_000_000_000i64, "{rows:?}");
    for r in &rows {
        let by_kind: u64 =
            r["by_kind"].as_object().unwrap().values().map(|v| v.as_u64().unwrap()).sum();
        assert_eq!(by_kind, r["events"].as_u64().unwrap(), "{r}");
    }
    // The plain run at the same window emits what the sweep counted.
    let plain = run(&["replay", "--window", "2s", &sample()], b"");
    assert_eq!(events(&plain.stdout).len() as u64, rows[2]["events"].as_u64().unwrap());
    // As a table: a header and a row per window.
    let table = run(&["replay", "--sweep", "0,500ms,2s", "--format", "text", &sample()], b"");
    let table = String::from_utf8(table.stdout).unwrap();
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 4, "{table}");
    assert!(lines[0].starts_with("window") && lines[0].contains("delay p99"), "{table}");
    assert!(lines[3].starts_with("2s "), "{table}");
}

#[test]
fn completions_and_the_manual_page_are_generated() {
    for (shell, mark) in
        [("bash", "complete -F"), ("zsh", "#compdef herald"), ("fish", "complete -c herald")]
    {
        let out = run(&["completions", shell], b"");
        assert!(out.status.success(), "{shell}: {out:?}");
        let script = String::from_utf8(out.stdout).unwrap();
        assert!(script.contains(mark), "{shell}: {script}");
        assert!(script.contains("replay"), "{shell}: the subcommands are in it");
    }
    let bash = String::from_utf8(run(&["completions", "bash"], b"").stdout).unwrap();
    let checked = std::process::Command::new("bash").args(["-n", "-c", &bash]).output().unwrap();
    assert!(checked.status.success(), "bash parses its completions: {checked:?}");
    let man = run(&["man"], b"");
    assert!(man.status.success(), "{man:?}");
    let man = String::from_utf8(man.stdout).unwrap();
    assert!(man.starts_with(".ie") || man.contains(".TH herald"), "{}", &man[..200.min(man.len())]);
    assert!(man.contains("replay") && man.contains("run"), "the subcommands are in it");
}

/// The shipped unit passes `systemd-analyze verify` once its `ExecStart` names a real binary
/// (verify refuses a missing one), and keeps its sandboxing.
#[test]
fn the_systemd_unit_verifies() {
    let unit = std::fs::read_to_string(repo("config/herald.service")).unwrap();
    for setting in
        ["DynamicUser=yes", "StateDirectory=herald", "ProtectSystem=strict", "NoNewPrivileges=yes"]
    {
        assert!(unit.contains(setting), "{setting}");
    }
    let bin = env!("CARGO_BIN_EXE_herald");
    let dir = tempfile::tempdir().unwrap();
    let copy = unit.replace("/usr/local/bin/herald", bin);
    assert_ne!(copy, unit);
    let path = write_temp(dir.path(), "herald.service", copy.as_bytes());
    let out = std::process::Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&path)
        .output()
        .expect("systemd-analyze (Debian package systemd; scripts/services.sh installs it)");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "systemd-analyze verify: {stderr}");
    // Anything it says about the unit itself is a mistake in it.
    let about_unit: Vec<&str> = stderr.lines().filter(|l| l.contains("herald.service")).collect();
    assert!(about_unit.is_empty(), "{about_unit:?}");
}

/// `herald tap` against a running daemon: it prints the events the daemon emits from the
/// moment it connects, filtered by kind, while the stdout sink gets them all; the daemon
/// ends the stream when it stops.
#[test]
fn herald_tap_follows_a_running_daemon() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let log = write_temp(dir.path(), "events.log", b"");
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:{port}\"\n[state]\ndir = {:?}\n[sources.in]\ntype = \"http\"\ncluster = \"prod\"\n[sources.log]\ntype = \"file\"\npath = {:?}\n[engine]\nkey_ttl = \"87600h\"\n",
        dir.path().join("state").to_str().unwrap(),
        log.to_str().unwrap()
    );
    let cfg = write_temp(dir.path(), "herald.toml", text.as_bytes());
    let mut d = Daemon::start(&cfg);
    assert!(eventually(|| http(port, "GET", "/readyz", &[], b"").0 == 200));
    let server = format!("http://127.0.0.1:{port}");
    let tap = |args: &[&str]| {
        let mut c = herald();
        c.args(["tap", "--server", &server]).args(args);
        c.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped());
        c.spawn().expect("start herald tap")
    };
    let online = tap(&["--kind", "router.online", "--format", "json"]);
    let text_tap = tap(&["--cluster", "prod", "--format", "text"]);
    let readers = || {
        let (_, metrics) = http(port, "GET", "/metrics", &[], b"");
        metrics.contains("herald_tap_readers 2")
    };
    assert!(eventually(readers), "both taps connected");
    let (status, body) =
        http(port, "POST", "/ingest", &[], &crate::daemon::one_event_per_line(0, 5));
    assert_eq!(status, 200, "{body}");
    let all = d.wait_for(5);
    assert_eq!(all.len(), 5);
    // A kind nobody emits and a cluster nobody has: refused or empty, never an error.
    let (status, _) = http(port, "GET", "/events?kind=no.such", &[], b"");
    assert_eq!(status, 400);
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert!(d.signal("-TERM").success());
    // The daemon's stop ends the taps' streams: they exit by themselves.
    let online = online.wait_with_output().expect("tap ends");
    let text_tap = text_tap.wait_with_output().expect("tap ends");
    assert!(online.status.success(), "{online:?}");
    let tapped = events(&online.stdout);
    let ids =
        |v: &[herald::model::ClusterEvent]| v.iter().map(|e| e.id.clone()).collect::<Vec<_>>();
    assert_eq!(ids(&tapped), ids(&all), "the tap saw what the sink got, in order");
    let lines = String::from_utf8(text_tap.stdout).unwrap();
    assert_eq!(lines.lines().count(), 5, "{lines}");
    assert!(lines.lines().all(|l| l.contains(" prod router.online ")), "{lines}");
}

/// A reader that does not read is dropped once it falls behind, counted, and the pipeline
/// goes on delivering to the sink meanwhile.
#[test]
fn a_tap_reader_that_falls_behind_is_dropped_and_the_pipeline_goes_on() {
    use std::io::{Read, Write};
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let log = dir.path().join("events.log");
    std::fs::write(&log, b"").unwrap();
    let cfg = tail_config(dir.path(), &log, "");
    let cfg_text =
        std::fs::read_to_string(&cfg).unwrap().replace("127.0.0.1:0", &format!("127.0.0.1:{port}"));
    std::fs::write(&cfg, cfg_text).unwrap();
    let mut d = Daemon::start(&cfg);
    assert!(eventually(|| http(port, "GET", "/readyz", &[], b"").0 == 200));
    // Connects and never reads: its socket buffers fill, then the tap's backlog.
    let mut stuck = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    stuck.write_all(b"GET /events HTTP/1.1\r\nhost: x\r\n\r\n").unwrap();
    assert!(eventually(|| http(port, "GET", "/metrics", &[], b"")
        .1
        .contains("herald_tap_readers 1")));
    let n = 60_000;
    std::fs::write(&log, crate::daemon::one_event_per_line(0, n)).unwrap();
    let all = d.wait_for(n);
    assert_eq!(all.len(), n, "the sink got every event");
    let dropped =
        || http(port, "GET", "/metrics", &[], b"").1.contains("herald_tap_dropped_total 1");
    assert!(eventually(dropped), "the stuck reader was dropped and counted");
    assert!(d.signal("-TERM").success());
    let mut rest = Vec::new();
    stuck.set_read_timeout(Some(std::time::Duration::from_secs(10))).unwrap();
    let _ = stuck.read_to_end(&mut rest);
    assert!(String::from_utf8_lossy(&rest).contains("event: dropped"), "it was told why");
}

/// A large file on a terminal shows a progress bar on stderr; with stderr not a terminal,
/// the summary is all there is.
#[test]
fn replay_shows_a_progress_bar_only_on_a_terminal() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("big.log");
    let generated = herald()
        .args(["generate", "--seed", "3", "--lines", "100000"])
        .stdout(std::fs::File::create(&log).unwrap())
        .status()
        .unwrap();
    assert!(generated.success());
    assert!(std::fs::metadata(&log).unwrap().len() > 16 << 20, "large enough for a bar");
    let piped = run(&["replay", log.to_str().unwrap()], b"");
    assert!(piped.status.success());
    let stderr = String::from_utf8(piped.stderr.clone()).unwrap();
    assert_eq!(stderr.lines().count(), 1, "only the summary: {stderr}");
    assert!(!stderr.contains('\x1b'));
    // `script` gives the command a terminal; stdout goes to /dev/null inside it.
    let command = format!("{} replay {} > /dev/null", env!("CARGO_BIN_EXE_herald"), log.display());
    let out = std::process::Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .output()
        .expect("script (util-linux)");
    assert!(out.status.success(), "{out:?}");
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(shown.contains("records,") && shown.contains("/s") && shown.contains("eta"), "{shown}");
    assert!(shown.contains("MiB"), "bytes read: {shown}");
    assert!(shown.trim_end().ends_with(stderr.trim_end()), "the summary is still last: {shown}");
}
