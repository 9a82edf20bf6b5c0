//! Bounded memory and a view that survives restarts (DESIGN §5.2, §7.1), on the real binary.

use std::path::Path;

use crate::support::{eventually, free_port, http, repo, write_temp, Daemon};

fn metric(metrics: &str, series: &str) -> Option<f64> {
    metrics.lines().find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
}

#[test]
fn a_flood_of_new_cluster_names_is_capped_at_max_clusters_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let cfg = write_temp(
        dir.path(),
        "herald.toml",
        format!("[server]\nlisten = \"127.0.0.1:{port}\"\n[engine]\nmax_clusters = 1000\n[sources.in]\ntype = \"http\"\n[sinks.out]\ntype = \"file\"\npath = {:?}\n", dir.path().join("out.jsonl")).as_bytes(),
    );
    let mut d = Daemon::start(&cfg);
    assert!(eventually(|| http(port, "GET", "/readyz", &[], b"").0 == 200));
    const NAMES: usize = 100_000;
    // Bodies well under the 1 MiB limit.
    for chunk in (0..NAMES).collect::<Vec<_>>().chunks(8_000) {
        let body: String = chunk
            .iter()
            .map(|i| format!("{{\"ts\":\"2025-01-10T18:00:00Z\",\"cluster\":\"flood-{i}\",\"reporter\":\"r\",\"signal\":\"leader\",\"leader\":\"r\"}}\n"))
            .collect();
        let (status, answer) = http(port, "POST", "/ingest", &[], body.as_bytes());
        // Refused records do not make a body bad: it is accepted, every line counted.
        assert_eq!(status, 200, "{answer}");
        let answer: serde_json::Value = serde_json::from_str(&answer).unwrap();
        assert_eq!(answer["accepted"], chunk.len());
    }
    let metrics = http(port, "GET", "/metrics", &[], b"").1;
    assert_eq!(metric(&metrics, "herald_clusters"), Some(1_000.0), "{metrics}");
    assert_eq!(
        metric(&metrics, "herald_records_total{outcome=\"over_limit\",source=\"in\"}"),
        Some(99_000.0)
    );
    assert_eq!(
        metric(&metrics, "herald_records_total{outcome=\"ok\",source=\"in\"}"),
        Some(1_000.0)
    );
    // Each cluster held has its reporter's view and its leader.
    assert_eq!(metric(&metrics, "herald_keys"), Some(2_000.0));
    // Refused records leave no series of their own behind.
    assert!(!metrics.contains("flood-99999"));
    assert!(d.signal("-TERM").success());
}

fn restart_config(dir: &Path, port: u16) -> std::path::PathBuf {
    write_temp(
        dir,
        "herald.toml",
        format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\n[state]\ndir = {:?}\n[engine]\nkey_ttl = \"87600h\"\n[sources.log]\ntype = \"file\"\npath = {:?}\ncluster = \"prod\"\n[sinks.out]\ntype = \"file\"\npath = {:?}\n[sinks.m]\ntype = \"prometheus\"\n",
            dir.join("state"),
            repo("samples/openziti-ha.jsonl"),
            dir.join("out.jsonl"),
        )
        .as_bytes(),
    )
}

/// The state gauges and the transitions of `/metrics`, sorted: what a dashboard shows.
fn state_series(metrics: &str) -> Vec<String> {
    let gauges = [
        "herald_cluster_",
        "herald_node_has_leader",
        "herald_peer_connected",
        "herald_router_online",
        "herald_node_up",
        "herald_terminator_spinning",
        "herald_clusters ",
        "herald_keys ",
    ];
    let mut lines: Vec<String> = metrics
        .lines()
        .filter(|l| gauges.iter().any(|g| l.starts_with(g)))
        .map(str::to_string)
        .collect();
    lines.sort();
    lines
}

fn view_survives(signal: &str) {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let cfg = restart_config(dir.path(), port);
    let mut d = Daemon::start(&cfg);
    // The sample's windows have all run out once engine time follows the wall clock.
    assert!(eventually(|| {
        let out = std::fs::read_to_string(dir.path().join("out.jsonl")).unwrap_or_default();
        out.lines().count() == 26
    }));
    // A commit comes at most 200 ms after the events; give it time to reach the disk.
    std::thread::sleep(std::time::Duration::from_secs(1));
    let state = http(port, "GET", "/state", &[], b"").1;
    let series = state_series(&http(port, "GET", "/metrics", &[], b"").1);
    assert!(state.contains("\"leader\":\"ctrl2\""), "{state}");
    assert!(series.iter().any(|l| l.starts_with("herald_router_online")), "{series:?}");
    d.signal(signal);

    let mut d = Daemon::start(&cfg);
    assert!(eventually(|| http(port, "GET", "/readyz", &[], b"").0 == 200));
    // At once, before anything changes.
    let (status, after) = http(port, "GET", "/state", &[], b"");
    assert_eq!(status, 200);
    let before: serde_json::Value = serde_json::from_str(&state).unwrap();
    let after: serde_json::Value = serde_json::from_str(&after).unwrap();
    assert_eq!(after, before);
    assert_eq!(state_series(&http(port, "GET", "/metrics", &[], b"").1), series);
    assert!(d.signal("-TERM").success());
}

#[test]
fn after_a_sigterm_restart_state_and_gauges_show_what_they_showed_before() {
    view_survives("-TERM");
}

#[test]
fn after_a_sigkill_restart_state_and_gauges_show_what_they_showed_before() {
    view_survives("-KILL");
}
