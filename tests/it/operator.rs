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
