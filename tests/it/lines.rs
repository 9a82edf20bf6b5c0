//! One line splitter for every input: `replay`, `run` over a file (rotated away), stdin and
//! `/ingest` cut the same log into the same records and count them alike.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use herald::model::ClusterEvent;

use crate::support::*;

/// The sample log with blank lines (some only white space), CRLF endings on every other
/// line, and a last line without a newline.
fn awkward_log() -> Vec<u8> {
    let sample = std::fs::read_to_string(repo("samples/openziti-ha.jsonl")).unwrap();
    let mut out = String::new();
    for (i, line) in sample.lines().enumerate() {
        out.push_str(line);
        out.push_str(if i % 2 == 0 { "\r\n" } else { "\n" });
        if i % 5 == 0 {
            out.push_str(if i % 10 == 0 { "\n" } else { "  \t\r\n" });
        }
    }
    out.truncate(out.trim_end().len());
    assert!(!out.ends_with('\n'));
    out.into_bytes()
}

/// `herald_records_total` of source `source`, by outcome, from `/metrics`.
fn record_counters(port: u16, source: &str) -> Vec<(String, u64)> {
    let (_, text) = http(port, "GET", "/metrics", &[], b"");
    let mut out: Vec<(String, u64)> = text
        .lines()
        .filter(|l| {
            l.starts_with("herald_records_total{") && l.contains(&format!("source=\"{source}\""))
        })
        .filter_map(|l| {
            let outcome = l.split("outcome=\"").nth(1)?.split('"').next()?.to_string();
            let n = l.rsplit(' ').next()?.parse().ok()?;
            Some((outcome, n))
        })
        .filter(|(_, n)| *n > 0)
        .collect();
    out.sort();
    out
}

fn daemon(dir: &Path, port: u16, source: &str, stdin: bool) -> Daemon {
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:{port}\"\n[engine]\nkey_ttl = \"87600h\"\n[sources.s]\n{source}\ncluster = \"prod\"\n"
    );
    let cfg = write_temp(dir, "herald.toml", text.as_bytes());
    let mut child = herald()
        .args(["run", "--config", cfg.to_str().unwrap()])
        .stdin(if stdin { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    if stdin {
        child.stdin.take().unwrap().write_all(&awkward_log()).unwrap();
    }
    let lines = Arc::new(Mutex::new(Vec::new()));
    let (out, sink) = (child.stdout.take().unwrap(), lines.clone());
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            sink.lock().unwrap().push(line);
        }
    });
    // Ready, not only alive: /ingest is bound once the sinks and the state are up.
    let up = eventually(|| http(port, "GET", "/readyz", &[], b"").0 == 200);
    assert!(up, "herald ready on {port}");
    Daemon { child, lines }
}

/// Events and counters of one run, once `want` events came out.
fn finish(mut d: Daemon, port: u16, want: usize) -> (Vec<ClusterEvent>, Vec<(String, u64)>) {
    let events = d.wait_for(want);
    let counters = record_counters(port, "s");
    assert!(d.signal("-TERM").success());
    (events, counters)
}

#[test]
fn blank_lines_crlf_and_a_last_line_without_newline_count_alike_everywhere() {
    let dir = tempfile::tempdir().unwrap();
    let log = write_temp(dir.path(), "events.log", &awkward_log());

    let out = run(&["replay", "--cluster", "prod", log.to_str().unwrap()], b"");
    let want = events(&out.stdout);
    let s = summary(&out);
    assert_eq!(s["decode_errors"], 0, "blank lines are not decode errors");
    assert_eq!(s["records"], 48, "every record, the last one included, and no blank line");
    let mut want_counters = vec![("ok".to_string(), s["records"] - s["stale"] - s["ignored"])];
    want_counters.push(("ignored".into(), s["ignored"]));
    want_counters.push(("stale".into(), s["stale"]));
    want_counters.retain(|(_, n)| *n > 0);
    want_counters.sort();

    // run over the file: the last line is applied once the file is rotated away.
    let port = free_port();
    let d = daemon(
        dir.path(),
        port,
        &format!("type = \"file\"\npath = {:?}", log.to_str().unwrap()),
        false,
    );
    let applied = || record_counters(port, "s").iter().map(|(_, n)| n).sum::<u64>();
    assert!(eventually(|| applied() == s["records"] - 1), "all but the unfinished last line");
    std::fs::rename(&log, dir.path().join("events.log.1")).unwrap();
    std::fs::write(&log, b"").unwrap();
    let (got, counters) = finish(d, port, want.len());
    assert!(got == want, "run over a file differs from replay");
    assert_eq!(counters, want_counters, "run over a file counts differently");

    let port = free_port();
    let d = daemon(dir.path(), port, "type = \"stdin\"", true);
    let (got, counters) = finish(d, port, want.len());
    assert!(got == want, "stdin differs from replay");
    assert_eq!(counters, want_counters, "stdin counts differently");

    let port = free_port();
    let d = daemon(dir.path(), port, "type = \"http\"", false);
    let (status, body) = http(port, "POST", "/ingest", &[], &awkward_log());
    assert_eq!(status, 200, "{body}");
    std::thread::sleep(Duration::from_millis(100));
    let (got, counters) = finish(d, port, want.len());
    assert!(got == want, "/ingest differs from replay");
    assert_eq!(counters, want_counters, "/ingest counts differently");
}
