//! Alert routing: the rules' severity words, config/alertmanager/ checked by amtool, and a
//! split brain carried from a live herald through a real Prometheus and Alertmanager to a
//! webhook, with the same cluster's leaderless alert inhibited on the way.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use herald::model::{EventKind, Severity};
use serde_json::Value;

use crate::support::*;

const ALERTMANAGER: &str = "prometheus-alertmanager";
const PACKAGE: &str = "prometheus-alertmanager";
const SIEM_URL: &str = "http://siem.example:8080/herald";
const PAGER_URL: &str = "http://pager.example:8080/herald";

/// Each kind's default severity, written out so that changing one is a deliberate act: the
/// rules and the events share it.
const KIND_SEVERITY: [(&str, &str); 17] = [
    ("cluster.split_brain", "critical"),
    ("cluster.leaderless", "critical"),
    ("node.down", "high"),
    ("router.offline", "high"),
    ("cluster.read_only", "high"),
    ("terminator.spin_started", "warning"),
    ("peer.disconnected", "warning"),
    ("node.is_leaderless", "warning"),
    ("cluster.leader_elected", "info"),
    ("cluster.split_brain_resolved", "info"),
    ("cluster.read_write", "info"),
    ("cluster.members_changed", "info"),
    ("node.has_leader", "info"),
    ("peer.connected", "info"),
    ("router.online", "info"),
    ("terminator.spin_stopped", "info"),
    ("node.up", "info"),
];

/// The rules that alert on what an event kind reports, and that kind.
const RULE_KIND: [(&str, &str); 4] = [
    ("HeraldClusterLeaderless", "cluster.leaderless"),
    ("HeraldSplitBrain", "cluster.split_brain"),
    ("HeraldTerminatorSpinning", "terminator.spin_started"),
    ("HeraldNodeDown", "node.down"),
];

/// The rules about herald itself (or one reporter's clock): no kind, their severity is chosen
/// in alerts.yml.
const RULES_WITHOUT_KIND: [&str; 4] = [
    "HeraldSourceSilent",
    "HeraldSinkFailing",
    "HeraldDecodeErrorsRising",
    "HeraldReporterClockSkew",
];

/// Each rule of alerts.yml with its `severity` label (None when it has none).
fn rule_severities() -> Vec<(String, Option<String>)> {
    let text = std::fs::read_to_string(repo("config/prometheus/alerts.yml")).unwrap();
    let mut out: Vec<(String, Option<String>)> = Vec::new();
    for line in text.lines().map(str::trim) {
        if let Some(name) = line.strip_prefix("- alert: ") {
            out.push((name.to_string(), None));
        } else if let (Some(word), Some(last)) = (line.strip_prefix("severity: "), out.last_mut()) {
            last.1 = Some(word.to_string());
        }
    }
    out
}

#[test]
fn rules_use_the_four_severity_words_and_their_kinds_defaults() {
    for kind in EventKind::ALL {
        let word = KIND_SEVERITY.iter().find(|(k, _)| *k == kind.as_str()).map(|(_, w)| *w);
        assert_eq!(
            word,
            Some(Severity::of(kind).as_str()),
            "{kind}: the table and herald disagree"
        );
    }
    let rules = rule_severities();
    assert_eq!(rules.len(), RULE_KIND.len() + RULES_WITHOUT_KIND.len(), "{rules:?}");
    for (name, severity) in &rules {
        let severity = severity.as_deref().unwrap_or_else(|| panic!("{name} has no severity"));
        assert!(
            ["critical", "high", "warning", "info"].contains(&severity),
            "{name}: severity {severity:?} is not one of critical / high / warning / info"
        );
        match RULE_KIND.iter().find(|(rule, _)| rule == name) {
            Some((_, kind)) => {
                let default = KIND_SEVERITY.iter().find(|(k, _)| k == kind).unwrap().1;
                assert_eq!(
                    severity, default,
                    "{name} alerts on {kind}, whose default is {default}"
                );
            }
            None => assert!(
                RULES_WITHOUT_KIND.contains(&name.as_str()),
                "{name}: add it to RULE_KIND or RULES_WITHOUT_KIND"
            ),
        }
    }
}

#[test]
fn amtool_checks_the_config_and_its_routes() {
    let config = repo("config/alertmanager/alertmanager.yml");
    let check = tool("amtool", PACKAGE).arg("check-config").arg(&config).output().unwrap();
    let out = String::from_utf8_lossy(&check.stdout).to_string();
    assert!(check.status.success(), "{out}{}", String::from_utf8_lossy(&check.stderr));
    assert!(out.contains("SUCCESS") && out.contains("1 inhibit rules"), "{out}");
    // Every alert reaches the SIEM; only critical ones also page.
    for (labels, receivers) in [
        (&["severity=critical", "alertname=HeraldSplitBrain", "cluster=prod"][..], "siem,pager"),
        (&["severity=high", "alertname=HeraldNodeDown", "cluster=prod"], "siem"),
        (&["severity=warning", "alertname=HeraldSourceSilent"], "siem"),
        (&["severity=info", "alertname=Other", "cluster=prod"], "siem"),
        (&["alertname=WithoutSeverity"], "siem"),
    ] {
        let test = tool("amtool", PACKAGE)
            .args(["config", "routes", "test"])
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--verify.receivers={receivers}"))
            .args(labels)
            .output()
            .unwrap();
        assert!(
            test.status.success(),
            "{labels:?} should reach {receivers}: {}{}",
            String::from_utf8_lossy(&test.stdout),
            String::from_utf8_lossy(&test.stderr)
        );
    }
}

/// A webhook receiver standing in for the SIEM and the pager: records every alert each POST
/// carries, with the path it came to, and answers 200.
struct Webhook {
    port: u16,
    alerts: Arc<Mutex<Vec<(String, Value)>>>,
    stop: Arc<AtomicBool>,
}

impl Webhook {
    fn start() -> Webhook {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let alerts = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (seen, stopped) = (alerts.clone(), stop.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stopped.load(Ordering::SeqCst) {
                    break;
                }
                if let Some((path, body)) = conn.ok().and_then(answer) {
                    let batch = body["alerts"].as_array().cloned().unwrap_or_default();
                    seen.lock().unwrap().extend(batch.into_iter().map(|a| (path.clone(), a)));
                }
            }
        });
        Webhook { port, alerts, stop }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// The alerts named `alertname` that reached `path`.
    fn received(&self, path: &str, alertname: &str) -> Vec<Value> {
        self.alerts
            .lock()
            .unwrap()
            .iter()
            .filter(|(p, a)| p == path && a["labels"]["alertname"] == alertname)
            .map(|(_, a)| a.clone())
            .collect()
    }

    fn all(&self) -> Vec<(String, Value)> {
        self.alerts.lock().unwrap().clone()
    }
}

impl Drop for Webhook {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the accept loop so that it sees the flag.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

/// Reads one request, answers 200 and closes: (path, JSON body).
fn answer(mut conn: TcpStream) -> Option<(String, Value)> {
    conn.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let mut reader = BufReader::new(conn.try_clone().ok()?);
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let path = line.split_whitespace().nth(1)?.to_string();
    let mut length = 0;
    loop {
        let mut header = String::new();
        reader.read_line(&mut header).ok()?;
        let header = header.trim_end();
        if header.is_empty() {
            break;
        }
        if let Some((k, v)) = header.split_once(':') {
            if k.eq_ignore_ascii_case("content-length") {
                length = v.trim().parse().ok()?;
            }
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok()?;
    conn.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n").ok()?;
    Some((path, serde_json::from_slice(&body).ok()?))
}

/// GET as HTTP/1.0, so that the answer is never chunked: its JSON body.
fn get_json(port: u16, path: &str) -> Option<Value> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nhost: 127.0.0.1\r\n\r\n").as_bytes()).ok()?;
    let mut resp = String::new();
    s.read_to_string(&mut resp).ok()?;
    let (head, body) = resp.split_once("\r\n\r\n")?;
    (head.split_whitespace().nth(1) == Some("200")).then_some(())?;
    serde_json::from_str(body).ok()
}

/// Alertmanager's alerts named `alertname` in cluster `prod`, inhibited ones included.
fn alertmanager_alerts(port: u16, alertname: &str) -> Vec<Value> {
    let all = get_json(port, "/api/v2/alerts").and_then(|v| v.as_array().cloned());
    all.unwrap_or_default()
        .into_iter()
        .filter(|a| a["labels"]["alertname"] == alertname && a["labels"]["cluster"] == "prod")
        .collect()
}

/// Replaces the value of every `key:` line, keeping its indentation.
fn set_all(yaml: &str, key: &str, value: &str) -> String {
    yaml.lines()
        .map(|l| {
            let indent = &l[..l.len() - l.trim_start().len()];
            if l.trim_start().starts_with(&format!("{key}:")) {
                format!("{indent}{key}: {value}\n")
            } else {
                format!("{l}\n")
            }
        })
        .collect()
}

/// Waits until `f` holds, `secs` at most.
fn within(secs: u64, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

/// Five controllers. ctrl1 leads; then ctrl2 claims leadership too (a partitioned controller
/// that elected itself), and once that split brain has been alerted, ctrl3..ctrl5 lose their
/// leader. Both claims go on: a split brain and, with three of five seeing no leader, a
/// leaderless cluster at once — the case the inhibition exists for. The split brain comes first
/// so that its alert is at Alertmanager before the leaderless one, as when the leaderless
/// alert's `for` holds it back in production.
#[test]
fn split_brain_reaches_the_siem_and_inhibits_the_same_clusters_leaderless_alert() {
    let dir = tempfile::tempdir().unwrap();
    let (hport, pport, aport) = (free_port(), free_port(), free_port());
    let webhook = Webhook::start();

    // The shipped rules with every `for:` cut to 2 s, so that the leaderless alert fires in
    // seconds; expressions and labels are untouched.
    let rules = std::fs::read_to_string(repo("config/prometheus/alerts.yml")).unwrap();
    assert!(rules.contains("for: 30s"), "the leaderless rule's `for` moved");
    let rules = write_temp(dir.path(), "alerts.yml", set_all(&rules, "for", "2s").as_bytes());
    // The shipped routing with the webhooks pointed here and notifications flushed each second.
    let routing = std::fs::read_to_string(repo("config/alertmanager/alertmanager.yml")).unwrap();
    assert!(routing.contains(SIEM_URL) && routing.contains(PAGER_URL), "webhook URLs moved");
    let routing =
        routing.replace(SIEM_URL, &webhook.url("/siem")).replace(PAGER_URL, &webhook.url("/pager"));
    let routing = set_all(&routing, "group_wait", "1s");
    let routing = set_all(&routing, "group_interval", "1s");
    let routing = set_all(&routing, "repeat_interval", "1h");
    let routing = write_temp(dir.path(), "alertmanager.yml", routing.as_bytes());

    let log = write_temp(dir.path(), "events.log", b"");
    let sinks = "[sinks.metrics]\ntype = \"prometheus\"\n";
    let _herald = live_herald(dir.path(), hport, &log, "", sinks);
    let am_log = dir.path().join("alertmanager.log");
    let _alertmanager = Reaper(
        tool(ALERTMANAGER, PACKAGE)
            .arg(format!("--config.file={}", routing.display()))
            .arg(format!("--storage.path={}", dir.path().join("alertmanager").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{aport}"))
            // No gossip: one instance, and no fixed port shared with other tests.
            .arg("--cluster.listen-address=")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&am_log).unwrap())
            .spawn()
            .unwrap(),
    );
    let prom_cfg = format!(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - {:?}\n\
         alerting:\n  alertmanagers:\n    - static_configs:\n        - targets: ['127.0.0.1:{aport}']\n\
         scrape_configs:\n  - job_name: herald\n    static_configs:\n      - targets: ['127.0.0.1:{hport}']\n",
        rules.to_str().unwrap()
    );
    let prom_cfg = write_temp(dir.path(), "prometheus.yml", prom_cfg.as_bytes());
    let prom_log = dir.path().join("prometheus.log");
    let _prometheus = Reaper(
        tool("prometheus", "prometheus")
            .arg(format!("--config.file={}", prom_cfg.display()))
            .arg(format!("--storage.tsdb.path={}", dir.path().join("tsdb").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{pport}"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&prom_log).unwrap())
            .spawn()
            .unwrap(),
    );
    assert!(eventually(|| http(hport, "GET", "/readyz", &[], b"").0 == 200), "herald ready");
    assert!(
        eventually(|| http(aport, "GET", "/-/ready", &[], b"").0 == 200),
        "alertmanager ready: {}",
        tail(&am_log)
    );
    assert!(
        eventually(|| http(pport, "GET", "/-/ready", &[], b"").0 == 200),
        "prometheus ready: {}",
        tail(&prom_log)
    );

    let ctrls = ["ctrl1", "ctrl2", "ctrl3", "ctrl4", "ctrl5"];
    let mut start = Vec::new();
    for c in ctrls {
        start.push(cluster_line(c, "members.changed", &format!(",\"index\":1{}", peers(&ctrls))));
        start.push(cluster_line(c, "state.has_leader", ",\"leaderId\":\"ctrl1\""));
    }
    start.push(cluster_line("ctrl1", "leadership.gained", ""));
    append(&log, &start);
    std::thread::sleep(Duration::from_millis(1500));
    append(
        &log,
        &[
            cluster_line("ctrl2", "leadership.gained", ""),
            cluster_line("ctrl2", "state.has_leader", ",\"leaderId\":\"ctrl2\""),
        ],
    );

    let arrived = within(30, || {
        !webhook.received("/siem", "HeraldSplitBrain").is_empty()
            && !webhook.received("/pager", "HeraldSplitBrain").is_empty()
    });
    assert!(
        arrived,
        "the split brain reaches the SIEM and the pager: {:#?}\nalertmanager: {}\nprometheus: {}",
        webhook.all(),
        tail(&am_log),
        tail(&prom_log)
    );
    let split = &webhook.received("/siem", "HeraldSplitBrain")[0];
    assert_eq!(split["status"], "firing", "{split}");
    assert_eq!(split["labels"]["cluster"], "prod", "{split}");
    assert_eq!(split["labels"]["severity"], "critical", "{split}");

    append(&log, &["ctrl3", "ctrl4", "ctrl5"].map(|c| cluster_line(c, "state.is_leaderless", "")));
    // Prometheus fires the leaderless alert and Alertmanager holds it, inhibited by the split
    // brain: proof that it is the inhibition, not a missing alert, that keeps it from the SIEM.
    let mut leaderless = Vec::new();
    let inhibited = within(30, || {
        leaderless = alertmanager_alerts(aport, "HeraldClusterLeaderless");
        leaderless.iter().any(|a| a["status"]["state"] == "suppressed")
    });
    assert!(inhibited, "the leaderless alert is at Alertmanager, suppressed: {leaderless:#?}");
    let source = alertmanager_alerts(aport, "HeraldSplitBrain");
    let source = source.first().map(|a| a["fingerprint"].clone());
    let by = leaderless[0]["status"]["inhibitedBy"].as_array().cloned().unwrap_or_default();
    assert!(
        source.is_some() && by.contains(source.as_ref().unwrap()),
        "inhibited by the split brain ({source:?}): {leaderless:#?}"
    );
    assert_eq!(leaderless[0]["status"]["silencedBy"], serde_json::json!([]), "{leaderless:#?}");

    // Group wait and interval are 1 s: an alert that got through would be here well within 10 s.
    std::thread::sleep(Duration::from_secs(10));
    for path in ["/siem", "/pager"] {
        let got = webhook.received(path, "HeraldClusterLeaderless");
        assert!(got.is_empty(), "the inhibited leaderless alert reached {path}: {got:#?}");
    }
    let still = alertmanager_alerts(aport, "HeraldClusterLeaderless");
    assert!(still.iter().all(|a| a["status"]["state"] == "suppressed"), "{still:#?}");
}
