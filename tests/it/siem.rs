//! The SIEM encodings (DESIGN §11): ECS and CEF for every kind against golden files, CEF read
//! back by an independent parser (pycef) and by a checker written from the CEF
//! specification, ECS checked against the field types of the ECS version it declares.
//! `HERALD_BLESS=1` rewrites the golden files.

use std::collections::BTreeMap;

use herald::model::{ClusterEvent, EventKind, Severity, Timestamp, Via};
use herald::sinks::encoding::{cef, ecs, text, ECS_VERSION};

use crate::support::*;

/// One event of `kind` with every field its kind carries; `odd` puts the characters CEF
/// escapes (`|`, `\`, `=`) and a line break into the names.
fn event(kind: EventKind, odd: bool) -> ClusterEvent {
    let name = |s: &str| if odd { format!("{s}|a\\b=c\nd") } else { s.to_string() };
    let at = Timestamp::parse("2025-01-10T18:54:48.151522421Z").unwrap();
    let stable = Timestamp::parse("2025-01-10T18:54:50.151522421Z").unwrap();
    let mut e = ClusterEvent::new(kind, &name("prod"), at, stable);
    let some = |s: &str| Some(name(s));
    let list = |v: &[&str]| Some(v.iter().map(|s| name(s)).collect::<Vec<_>>());
    let subject: Vec<String> = match kind {
        EventKind::LeaderElected => {
            e.leader_id = some("ctrl2");
            e.previous = some("ctrl1");
            e.reporters = list(&["ctrl1", "ctrl2", "ctrl3"]);
            vec![]
        }
        EventKind::Leaderless => {
            e.previous = some("ctrl1");
            vec![]
        }
        EventKind::SplitBrain => {
            e.leaders = list(&["ctrl1", "ctrl2"]);
            e.reporters = list(&["ctrl1", "ctrl2"]);
            vec![]
        }
        EventKind::MembersChanged => {
            e.members = list(&["ctrl1", "ctrl2", "ctrl4"]);
            e.added = list(&["ctrl4"]);
            e.removed = list(&["ctrl3"]);
            vec![]
        }
        EventKind::NodeHasLeader => {
            e.node = some("ctrl3");
            e.leader_id = some("ctrl2");
            vec![name("ctrl3")]
        }
        EventKind::NodeIsLeaderless => {
            e.node = some("ctrl3");
            vec![name("ctrl3")]
        }
        EventKind::PeerConnected | EventKind::PeerDisconnected => {
            e.node = some("ctrl1");
            e.peer = some("ctrl2");
            vec![name("ctrl1"), name("ctrl2")]
        }
        EventKind::RouterOnline | EventKind::RouterOffline => {
            e.router = some("edge-east");
            vec![name("edge-east")]
        }
        EventKind::SpinStarted | EventKind::SpinStopped => {
            e.service = some("svc-billing");
            e.router = some("edge-west");
            e.host = some("tunneller-7");
            e.cycles = Some(3);
            vec![name("svc-billing"), name("edge-west"), name("tunneller-7")]
        }
        EventKind::NodeDown | EventKind::NodeUp => {
            e.node = some("ctrl1");
            e.via = Some(Via::Peers);
            vec![name("ctrl1")]
        }
        _ => vec![],
    };
    e.suppressed = 2;
    e.initial = matches!(kind, EventKind::LeaderElected);
    let parts: Vec<&str> = subject.iter().map(String::as_str).collect();
    e.seal(&parts)
}

fn golden(name: &str, got: &str) {
    let path = repo(&format!("tests/golden/siem/{name}"));
    if std::env::var_os("HERALD_BLESS").is_some() {
        std::fs::write(&path, got).unwrap();
    }
    let want = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (HERALD_BLESS=1 writes it)", path.display()));
    assert_eq!(got, want, "{name} differs from its golden file");
}

#[test]
fn every_kind_has_its_golden_ecs_document_and_cef_line() {
    for kind in EventKind::ALL {
        let e = event(kind, false);
        let severity = Severity::of(kind);
        let doc: serde_json::Value = serde_json::from_str(&ecs(&e, severity)).unwrap();
        golden(&format!("{kind}.ecs.json"), &format!("{:#}\n", doc));
        golden(&format!("{kind}.cef"), &format!("{}\n", cef(&e, severity)));
    }
}

/// CEF as its specification reads: the header's seven `|`-separated fields (with `\|` and
/// `\\` escaped), then `key=value` extensions whose values run to the next unescaped
/// ` key=` (with `\=`, `\\`, `\n`, `\r` escaped).
fn parse_cef(line: &str) -> (Vec<String>, BTreeMap<String, String>) {
    let rest = line.strip_prefix("CEF:").expect("starts with CEF:");
    let (mut header, mut field, mut chars) = (Vec::new(), String::new(), rest.chars());
    while header.len() < 7 {
        match chars.next().expect("seven header fields") {
            '\\' => match chars.next() {
                Some(c @ ('\\' | '|')) => field.push(c),
                other => panic!("a header escapes only \\ and |, not {other:?}: {line}"),
            },
            '|' => header.push(std::mem::take(&mut field)),
            c => field.push(c),
        }
    }
    let ext: String = chars.collect();
    // Split on unescaped spaces followed by `key=`.
    let mut pairs = BTreeMap::new();
    let (mut key, mut value, mut it) = (String::new(), String::new(), ext.chars().peekable());
    let mut in_key = true;
    while let Some(c) = it.next() {
        if in_key {
            match c {
                '=' => in_key = false,
                c if c.is_ascii_alphanumeric() || c == '_' => key.push(c),
                c => panic!("bad extension key character {c:?} in {line}"),
            }
            continue;
        }
        match c {
            '\\' => match it.next() {
                Some('\\') => value.push('\\'),
                Some('=') => value.push('='),
                Some('n') => value.push('\n'),
                Some('r') => value.push('\r'),
                other => panic!("an extension escapes \\ = n r, not {other:?}: {line}"),
            },
            '=' => panic!("an unescaped = in a value: {line}"),
            ' ' => {
                // A space ends the value only if a key and `=` follow.
                let ahead: String = it.clone().take_while(|c| *c != ' ' && *c != '=').collect();
                let after = it.clone().nth(ahead.chars().count());
                let is_key = !ahead.is_empty()
                    && ahead.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                    && after == Some('=');
                if is_key {
                    pairs.insert(std::mem::take(&mut key), std::mem::take(&mut value));
                    in_key = true;
                } else {
                    value.push(' ');
                }
            }
            c => value.push(c),
        }
    }
    pairs.insert(key, value);
    (header, pairs)
}

#[test]
fn cef_reads_back_by_its_specification_even_with_pipes_backslashes_and_equals_in_names() {
    for odd in [false, true] {
        for kind in EventKind::ALL {
            let e = event(kind, odd);
            let line = cef(&e, Severity::of(kind));
            assert!(!line.contains('\n') && !line.contains('\r'), "one line: {line:?}");
            let (header, ext) = parse_cef(&line);
            assert_eq!(header[0], "0");
            assert_eq!((header[1].as_str(), header[2].as_str()), ("herald", "herald"));
            assert_eq!(header[3], env!("CARGO_PKG_VERSION"));
            assert_eq!(header[4], kind.as_str());
            assert!(header[5].chars().count() <= 512 && !header[5].is_empty(), "{line}");
            assert_eq!(header[6], Severity::of(kind).number().to_string());
            assert_eq!(ext["externalId"], e.id);
            assert_eq!(ext["cs1Label"], "cluster");
            assert_eq!(ext["cs1"], e.cluster, "the cluster round-trips: {line}");
            assert_eq!(ext["rt"], (e.stable_at.0 / 1_000_000).to_string());
            assert_eq!(ext["start"], (e.at.0 / 1_000_000).to_string());
            assert_eq!(ext["cnt"], "2");
            assert_eq!(ext["msg"], text(&e, false), "the readable line round-trips: {line}");
            if let Some(node) = &e.node {
                assert!(ext["cs2"].starts_with(node.as_str()), "{line}");
            }
            if let Some(router) = e.router.as_ref().filter(|_| e.service.is_none()) {
                assert_eq!(&ext["cs2"], router);
            }
        }
    }
}

/// pycef (PyPI) reads plain lines: names without the characters it does not unescape.
#[test]
fn cef_lines_are_read_by_pycef() {
    let lines: Vec<String> =
        EventKind::ALL.iter().map(|k| cef(&event(*k, false), Severity::of(*k))).collect();
    let script = r#"
import json, sys, pycef
for line in sys.stdin:
    print(json.dumps(pycef.parse(line.rstrip("\n"))))
"#;
    let mut child = std::process::Command::new("python3")
        .args(["-c", script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all((lines.join("\n") + "\n").as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "pycef (scripts/services.sh installs it): {out:?}");
    let parsed: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(parsed.len(), lines.len());
    for (kind, p) in EventKind::ALL.iter().zip(&parsed) {
        let e = event(*kind, false);
        assert_eq!(p["DeviceVendor"], "herald", "{p}");
        assert_eq!(p["DeviceEventClassID"], kind.as_str(), "{p}");
        assert_eq!(p["Severity"], Severity::of(*kind).number().to_string(), "{p}");
        assert_eq!(p["externalId"], e.id.as_str(), "{p}");
        // pycef names a custom string by its label.
        assert_eq!(p["cluster"], "prod", "{p}");
        assert_eq!(p["msg"], text(&e, false).as_str(), "{p}");
    }
}

/// The ECS fields herald writes and their types in ECS 8.11 (the `ecs.version` it states).
const ECS_FIELDS: &[(&str, &str)] = &[
    ("@timestamp", "date"),
    ("ecs.version", "keyword"),
    ("event.kind", "keyword"),
    ("event.type", "keyword"),
    ("event.action", "keyword"),
    ("event.id", "keyword"),
    ("event.start", "date"),
    ("event.severity", "long"),
    ("event.dataset", "keyword"),
    ("observer.product", "keyword"),
    ("observer.vendor", "keyword"),
    ("observer.version", "keyword"),
    ("log.level", "keyword"),
    ("message", "match_only_text"),
];

/// ECS's allowed values of the categorization fields herald uses.
const ECS_EVENT_KIND: &[&str] =
    &["alert", "asset", "enrichment", "event", "metric", "state", "pipeline_error", "signal"];
const ECS_EVENT_TYPE: &[&str] = &[
    "access",
    "admin",
    "allowed",
    "change",
    "connection",
    "creation",
    "deletion",
    "denied",
    "end",
    "error",
    "group",
    "indicator",
    "info",
    "installation",
    "protocol",
    "start",
    "user",
];

fn flatten(prefix: &str, v: &serde_json::Value, out: &mut BTreeMap<String, serde_json::Value>) {
    match v {
        serde_json::Value::Object(m) if prefix != "herald" => {
            for (k, v) in m {
                let key = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
                flatten(&key, v, out);
            }
        }
        other => {
            out.insert(prefix.to_string(), other.clone());
        }
    }
}

#[test]
fn ecs_documents_follow_the_field_types_of_their_ecs_version() {
    assert_eq!(ECS_VERSION, "8.11.0", "the table above is ECS 8.11's");
    for kind in EventKind::ALL {
        let e = event(kind, true);
        let severity = Severity::of(kind);
        let doc: serde_json::Value = serde_json::from_str(&ecs(&e, severity)).unwrap();
        let mut fields = BTreeMap::new();
        flatten("", &doc, &mut fields);
        for (name, value) in &fields {
            if name == "herald" {
                continue;
            }
            let ty = ECS_FIELDS.iter().find(|(f, _)| f == name).map(|(_, t)| *t);
            let ty = ty.unwrap_or_else(|| panic!("{name} is not in the ECS table"));
            let values: Vec<&serde_json::Value> = match value {
                serde_json::Value::Array(a) => a.iter().collect(),
                v => vec![v],
            };
            for v in values {
                match ty {
                    "keyword" | "match_only_text" => assert!(v.is_string(), "{name}: {v}"),
                    "long" => assert!(v.is_i64(), "{name}: {v}"),
                    "date" => {
                        assert!(
                            Timestamp::parse(v.as_str().unwrap_or_default()).is_ok(),
                            "{name}: {v}"
                        )
                    }
                    other => panic!("type {other}"),
                }
            }
        }
        assert!(ECS_EVENT_KIND.contains(&doc["event"]["kind"].as_str().unwrap()));
        for t in doc["event"]["type"].as_array().unwrap() {
            assert!(ECS_EVENT_TYPE.contains(&t.as_str().unwrap()));
        }
        assert_eq!(doc["@timestamp"], e.stable_at.to_rfc3339());
        assert_eq!(doc["event"]["start"], e.at.to_rfc3339());
        assert_eq!(doc["event"]["action"], kind.as_str());
        assert_eq!(doc["event"]["id"], e.id.as_str());
        assert_eq!(doc["event"]["severity"], severity.number());
        assert_eq!(doc["observer"]["product"], "herald");
        let inner: ClusterEvent = serde_json::from_value(doc["herald"].clone()).unwrap();
        assert_eq!(inner, e, "the ClusterEvent itself under herald");
    }
}

/// The severities of DESIGN §11 and their numbers, and a config that changes one per kind
/// and one per cluster; every sink's encoding through the daemon.
#[test]
fn a_file_sink_writes_cef_with_configured_severities() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("events.log");
    std::fs::write(&log, crate::daemon::one_event_per_line(0, 3)).unwrap();
    let cef_out = dir.path().join("out.cef");
    let ecs_out = dir.path().join("out.ecs");
    let sinks = format!(
        "[severities]\n\"router.online\" = \"warning\"\n[clusters.prod.severities]\nrouter.online = \"high\"\n[sinks.cef]\ntype = \"file\"\npath = {:?}\nencoding = \"cef\"\n[sinks.ecs]\ntype = \"file\"\npath = {:?}\nencoding = \"ecs\"\n[sinks.out]\ntype = \"stdout\"\n",
        cef_out.to_str().unwrap(),
        ecs_out.to_str().unwrap()
    );
    let cfg = tail_config(dir.path(), &log, &sinks);
    let mut d = Daemon::start(&cfg);
    let events = d.wait_for(3);
    assert_eq!(events.len(), 3);
    assert!(eventually(
        || std::fs::read_to_string(&cef_out).unwrap_or_default().lines().count() == 3
    ));
    assert!(eventually(
        || std::fs::read_to_string(&ecs_out).unwrap_or_default().lines().count() == 3
    ));
    assert!(d.signal("-TERM").success());
    let cef_lines = std::fs::read_to_string(&cef_out).unwrap();
    for (line, e) in cef_lines.lines().zip(&events) {
        let (header, ext) = parse_cef(line);
        assert_eq!(header[6], "8", "the cluster's severity (high) wins: {line}");
        assert_eq!(ext["externalId"], e.id);
    }
    for (line, e) in std::fs::read_to_string(&ecs_out).unwrap().lines().zip(&events) {
        let doc: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(doc["event"]["severity"], 8);
        assert_eq!(doc["log"]["level"], "high");
        assert_eq!(doc["event"]["id"], e.id.as_str());
    }
    // A word that is not a severity is a config error with its path.
    let bad = write_temp(
        dir.path(),
        "bad.toml",
        b"[severities]\nnode.down = \"loud\"\n\"no.such\" = \"high\"\n",
    );
    let out = run(&["check", "--config", bad.to_str().unwrap()], b"");
    assert_eq!(out.status.code(), Some(78));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("severities.node.down: must be critical, high, warning or info"), "{err}");
    assert!(err.contains("severities.no.such: not a kind of event"), "{err}");
}

#[test]
fn the_severities_and_their_numbers_are_those_of_the_design() {
    use EventKind::*;
    let want = [
        (SplitBrain, "critical"),
        (Leaderless, "critical"),
        (NodeDown, "high"),
        (RouterOffline, "high"),
        (ReadOnly, "high"),
        (SpinStarted, "warning"),
        (PeerDisconnected, "warning"),
        (NodeIsLeaderless, "warning"),
        (SplitBrainResolved, "info"),
        (SpinStopped, "info"),
        (LeaderElected, "info"),
        (RouterOnline, "info"),
    ];
    for (kind, word) in want {
        assert_eq!(Severity::of(kind).as_str(), word, "{kind}");
    }
    let numbers: Vec<(u8, u8)> =
        [Severity::Critical, Severity::High, Severity::Warning, Severity::Info]
            .iter()
            .map(|s| (s.number(), s.syslog()))
            .collect();
    assert_eq!(numbers, [(10, 2), (8, 3), (5, 4), (3, 6)]);
}
