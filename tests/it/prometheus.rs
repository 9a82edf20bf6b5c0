//! The dashboards and alerts against a real Prometheus scraping a live herald every second
//! while a scripted scenario (startup, flaps, a spin, a failover, a node down) unfolds.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use crate::support::*;

fn percent(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Substitutes the dashboards' variables as Grafana would for "all" over the last minutes.
fn substitute(expr: &str) -> String {
    expr.replace("$cluster", "prod")
        .replace("$source", ".*")
        .replace("$__rate_interval", "30s")
        .replace("$__range", "5m")
        .replace("$__interval", "5s")
}

/// An alert expression without its final comparison: what the alert looks at.
fn without_comparison(expr: &str) -> String {
    let cut =
        [" == ", " != ", " >= ", " <= ", " > ", " < "].iter().filter_map(|op| expr.rfind(op)).max();
    match cut {
        Some(i) => expr[..i].to_string(),
        None => expr.to_string(),
    }
}

fn dashboard_queries() -> Vec<(String, String)> {
    let mut out = Vec::new();
    for file in ["dashboards/cluster-overview.json", "dashboards/pipeline.json"] {
        let d: serde_json::Value =
            serde_json::from_slice(&std::fs::read(repo(file)).unwrap()).unwrap();
        for p in d["panels"].as_array().unwrap() {
            for t in p["targets"].as_array().unwrap() {
                let title = format!("{file}: {}", p["title"].as_str().unwrap());
                out.push((title, substitute(t["expr"].as_str().unwrap())));
            }
        }
    }
    out
}

fn alert_expressions() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(repo("config/prometheus/alerts.yml")).unwrap();
    let mut out = Vec::new();
    let mut name = String::new();
    for line in text.lines().map(str::trim) {
        if let Some(n) = line.strip_prefix("- alert: ") {
            name = n.to_string();
        }
        if let Some(e) = line.strip_prefix("expr: ") {
            out.push((name.clone(), without_comparison(e)));
        }
    }
    out
}

fn router_line(r: &str, online: bool) -> String {
    let ty = if online { "router-online" } else { "router-offline" };
    format!("{{\"namespace\":\"router\",\"event_src_id\":\"ctrl1\",\"timestamp\":\"{}\",\"event_type\":\"{ty}\",\"router_id\":\"{r}\"}}\n", now_ts(0))
}

fn terminator_line(ty: &str, id: usize) -> String {
    format!("{{\"namespace\":\"terminator\",\"event_src_id\":\"ctrl1\",\"timestamp\":\"{}\",\"event_type\":\"{ty}\",\"service_id\":\"billing\",\"router_id\":\"edge-1\",\"host_id\":\"h7\",\"terminator_id\":\"t{id}\"}}\n", now_ts(0))
}

/// The scripted scenario, in real time.
fn scenario(log: &Path) {
    let ctrls = ["ctrl1", "ctrl2", "ctrl3"];
    let mut start = Vec::new();
    for c in ctrls {
        start.push(cluster_line(c, "members.changed", &format!(",\"index\":1{}", peers(&ctrls))));
        for p in ctrls.iter().filter(|p| **p != c) {
            start.push(cluster_line(c, "peer.connected", &peers(&[p])));
        }
        start.push(cluster_line(c, "state.has_leader", ",\"leaderId\":\"ctrl1\""));
        start.push(cluster_line(c, "state.rw", ""));
    }
    start.push(cluster_line("ctrl1", "leadership.gained", ""));
    start.push(router_line("edge-1", true));
    start.push(router_line("edge-2", true));
    start.push("this line is not JSON\n".into());
    start.push(
        "{\"namespace\":\"connect\",\"src_id\":\"x\",\"timestamp\":\"2025-01-01T00:00:00Z\"}\n"
            .into(),
    );
    append(log, &start);
    std::thread::sleep(Duration::from_millis(1500));
    // Flaps shorter than the window: suppressed.
    append(log, &[router_line("edge-2", false)]);
    std::thread::sleep(Duration::from_millis(100));
    append(log, &[router_line("edge-2", true), cluster_line("ctrl3", "state.is_leaderless", "")]);
    std::thread::sleep(Duration::from_millis(100));
    append(log, &[cluster_line("ctrl3", "state.has_leader", ",\"leaderId\":\"ctrl1\"")]);
    // A spin: four create/delete cycles in two seconds.
    for i in 0..4 {
        append(log, &[terminator_line("created", i)]);
        std::thread::sleep(Duration::from_millis(200));
        append(log, &[terminator_line("deleted", i)]);
        std::thread::sleep(Duration::from_millis(200));
    }
    // ctrl1 is partitioned: the others lose it and elect ctrl2.
    append(
        log,
        &[
            cluster_line("ctrl2", "peer.disconnected", &peers(&["ctrl1"])),
            cluster_line("ctrl3", "peer.disconnected", &peers(&["ctrl1"])),
            cluster_line("ctrl2", "state.is_leaderless", ""),
            cluster_line("ctrl3", "state.is_leaderless", ""),
        ],
    );
    std::thread::sleep(Duration::from_millis(300));
    append(
        log,
        &[
            cluster_line("ctrl2", "leadership.gained", ""),
            cluster_line("ctrl2", "state.has_leader", ",\"leaderId\":\"ctrl2\""),
            cluster_line("ctrl3", "state.has_leader", ",\"leaderId\":\"ctrl2\""),
        ],
    );
}

fn query(port: u16, expr: &str) -> Option<usize> {
    let (status, body) =
        http(port, "GET", &format!("/api/v1/query?query={}", percent(expr)), &[], b"");
    if status != 200 {
        return None;
    }
    let v: serde_json::Value = serde_json::from_str(&body).ok()?;
    v["data"]["result"].as_array().map(Vec::len)
}

#[test]
fn every_panel_and_alert_query_returns_data_from_a_real_prometheus() {
    let dir = tempfile::tempdir().unwrap();
    let (hport, pport) = (free_port(), free_port());
    let log = write_temp(dir.path(), "events.log", b"");
    let sinks = format!(
        "[sinks.out]\ntype = \"file\"\npath = {:?}\n[sinks.metrics]\ntype = \"prometheus\"\n",
        dir.path().join("events.out").to_str().unwrap()
    );
    let _herald = live_herald(dir.path(), hport, &log, "spin_period = \"10m\"\n", &sinks);
    let prom_cfg = format!(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - {:?}\n\
         scrape_configs:\n  - job_name: herald\n    static_configs:\n      - targets: ['127.0.0.1:{hport}']\n",
        repo("config/prometheus/alerts.yml").to_str().unwrap()
    );
    let prom_cfg = write_temp(dir.path(), "prometheus.yml", prom_cfg.as_bytes());
    let _prometheus = Reaper(
        tool("prometheus", "prometheus")
            .arg(format!("--config.file={}", prom_cfg.display()))
            .arg(format!("--storage.tsdb.path={}", dir.path().join("tsdb").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{pport}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    assert!(eventually(|| http(hport, "GET", "/readyz", &[], b"").0 == 200), "herald ready");
    assert!(eventually(|| http(pport, "GET", "/-/ready", &[], b"").0 == 200), "prometheus ready");
    scenario(&log);

    let mut queries = dashboard_queries();
    queries.extend(alert_expressions().into_iter().map(|(n, e)| (format!("alert {n}"), e)));
    assert!(queries.len() >= 25, "{} queries", queries.len());
    let mut empty = Vec::new();
    let all_answer = eventually(|| {
        empty =
            queries.iter().filter(|(_, q)| query(pport, q).unwrap_or(0) == 0).cloned().collect();
        empty.is_empty()
    });
    assert!(all_answer, "queries without data: {empty:#?}");

    // The dashboards' variable queries find the cluster and the source.
    let (_, clusters) = http(
        pport,
        "GET",
        "/api/v1/label/cluster/values?match[]=herald_cluster_split_brain",
        &[],
        b"",
    );
    assert!(clusters.contains("\"prod\""), "{clusters}");
    let (_, sources) =
        http(pport, "GET", "/api/v1/label/source/values?match[]=herald_records_total", &[], b"");
    assert!(sources.contains("\"log\""), "{sources}");
    // And the scenario shows: a failover, a spin, a node down, flaps suppressed.
    let one = |q: &str| query(pport, q).unwrap_or(0) == 1;
    assert!(one("herald_cluster_leader{cluster=\"prod\",leader_id=\"ctrl2\"} == 1"));
    assert!(one("herald_terminator_spinning == 1"));
    assert!(one("herald_node_up{node=\"ctrl1\"} == 0"));
    assert!(one("herald_suppressed_total{kind=\"router.offline\"} >= 1"));
    assert!(
        eventually(|| one("ALERTS{alertname=\"HeraldTerminatorSpinning\",alertstate=\"firing\"}")),
        "the spin alert fires"
    );
}

#[test]
fn promtool_checks_and_tests_the_rules() {
    let check = tool("promtool", "prometheus")
        .args(["check", "rules"])
        .arg(repo("config/prometheus/alerts.yml"))
        .output()
        .unwrap();
    assert!(check.status.success(), "{}", String::from_utf8_lossy(&check.stdout));
    assert!(String::from_utf8_lossy(&check.stdout).contains("SUCCESS: 8 rules found"));
    let test = tool("promtool", "prometheus")
        .args(["test", "rules", "alerts_test.yml"])
        .current_dir(repo("config/prometheus"))
        .output()
        .unwrap();
    assert!(
        test.status.success(),
        "{}{}",
        String::from_utf8_lossy(&test.stdout),
        String::from_utf8_lossy(&test.stderr)
    );
}

#[test]
fn every_alert_has_a_unit_test_firing_and_not_firing() {
    let tests = std::fs::read_to_string(repo("config/prometheus/alerts_test.yml")).unwrap();
    for (name, _) in alert_expressions() {
        let evals: Vec<&str> = tests
            .split("- eval_time:")
            .filter(|t| t.contains(&format!("alertname: {name}\n")))
            .collect();
        assert!(evals.iter().any(|t| t.contains("exp_alerts")), "{name} never tested firing");
        assert!(evals.iter().any(|t| !t.contains("exp_alerts")), "{name} never tested not firing");
    }
}
