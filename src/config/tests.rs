//! A test for every config rule: layering, unknown keys, types, required keys, `${ENV}`.

use std::collections::BTreeMap;

use super::*;
use crate::engine::Windows;
use crate::sinks::{BufferKind, SinkKind, WhenFull};

fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

fn ok(text: &str) -> Config {
    match parse(text, &env(&[])) {
        Ok(c) => c,
        Err(p) => panic!("{p:?}"),
    }
}

fn problems(text: &str) -> Vec<String> {
    match parse(text, &env(&[])) {
        Ok(c) => panic!("accepted: {c:?}"),
        Err(p) => p.0.iter().map(|p| p.to_string()).collect(),
    }
}

const SEC: i64 = 1_000_000_000;

#[test]
fn an_empty_config_is_all_defaults() {
    let c = ok("");
    assert_eq!(c.engine.defaults, Params::default());
    assert_eq!(c.server.listen.to_string(), "127.0.0.1:9464");
    assert!(c.sources.is_empty() && c.sinks.is_empty());
}

#[test]
fn the_documented_example_parses() {
    let c = parse(
        r#"
[engine]
window = "2s"
startup_grace = "10s"
split_window = "5s"
spin_cycles = 3
spin_period = "60s"
key_ttl = "24h"
max_clusters = 1000
max_keys = 10000000
[engine.windows]
leader = "3s"
[clusters.prod.engine]
window = "500ms"

[server]
listen = "127.0.0.1:9464"
ingest_token = "${HERALD_INGEST_TOKEN}"

[state]
dir = "/var/lib/herald"

[sources.ziti_log]
type = "file"
path = "/var/log/ziti/events.log"
cluster = "prod"
reporter = "ctrl1"

[sinks.out]
type = "stdout"
[sinks.out.buffer]
type = "memory"
max_events = 10000
when_full = "block"
"#,
        &env(&[("HERALD_INGEST_TOKEN", "s3cret")]),
    )
    .unwrap();
    assert_eq!(c.engine.defaults.windows.leader, Nanos(3 * SEC));
    assert_eq!(c.engine.defaults.windows.peer, Nanos(2 * SEC));
    let prod = c.engine.params("prod");
    assert_eq!(
        prod.windows,
        Windows::uniform(Nanos(SEC / 2)),
        "a cluster's window wins over [engine]"
    );
    assert_eq!(prod.startup_grace, Nanos(10 * SEC));
    assert_eq!(c.engine.params("other"), c.engine.defaults);
    assert_eq!(c.server.ingest_token.as_deref(), Some("s3cret"));
    assert!(
        matches!(c.sources.get("ziti_log"), Some(SourceKind::File(f)) if f.common.reporter.as_deref() == Some("ctrl1"))
    );
    let out = &c.sinks["out"];
    assert_eq!(
        (out.buffer.kind, out.buffer.max_events, out.buffer.when_full),
        (BufferKind::Memory, 10_000, WhenFull::Block)
    );
    assert!(matches!(out.kind, SinkKind::Stdout(_)));
}

// Names a broker type, which a build without its feature refuses.
#[cfg(feature = "kafka")]
#[test]
fn every_problem_is_listed_with_its_key_path() {
    let p = problems(
        r#"
bogus = 1
[engine]
window = "2 fortnights"
colour = "blue"
[engine.windows]
routers = "1s"
[sources.a]
type = "file"
cluster = "prod"
extra = true
[sources.b]
type = "carrier-pigeon"
[sources.c]
path = "x"
[sinks.kafka_main]
type = "kafka"
brokers = "127.0.0.1:9092"
[sinks.f]
type = "file"
path = "/tmp/x"
[sinks.f.buffer]
when_full = "explode"
"#,
    );
    let want = [
        "bogus: unknown key",
        "engine.colour: unknown key",
        "engine.windows.routers: unknown key",
        "engine.window:",
        "sources.a.extra: unknown key",
        "sources.a.path: missing",
        "sources.b.type: unknown source type",
        "sources.c.type: missing",
        "sinks.kafka_main.topic: missing",
        "sinks.f.buffer.when_full:",
    ];
    for w in want {
        assert!(p.iter().any(|line| line.starts_with(w)), "no {w:?} in {p:#?}");
    }
    assert_eq!(p.len(), want.len(), "{p:#?}");
}

#[test]
fn type_errors_name_the_key() {
    let p = problems("[engine]\nspin_cycles = \"three\"\n");
    assert_eq!(p.len(), 1);
    assert!(p[0].starts_with("engine.spin_cycles: invalid type"), "{p:?}");
    let p = problems("[server]\nlisten = \"not an address\"\n");
    assert!(p[0].starts_with("server.listen: "), "{p:?}");
}

#[test]
fn invalid_values_are_rejected() {
    let p = problems("[engine]\nspin_cycles = 0\nkey_ttl = \"0s\"\n");
    assert_eq!(
        p,
        ["engine.spin_cycles: must be at least 1", "engine.key_ttl: must be more than 0"]
    );
    let p = problems("[sinks.x]\ntype = \"stdout\"\n[sinks.x.buffer]\nmax_events = 0\n");
    assert_eq!(p, ["sinks.x.buffer.max_events: must be at least 1"]);
    let p = problems("[sources.p]\ntype = \"probe\"\ncluster = \"c\"\ninterval = \"0s\"\n[sources.p.nodes]\nn1 = \"nocolon\"\n");
    assert!(p.contains(&"sources.p.nodes.n1: \"nocolon\" is not host:port".to_string()), "{p:?}");
    assert!(p.contains(&"sources.p.interval: must be more than 0".to_string()), "{p:?}");
}

#[test]
fn the_caps_on_what_input_creates_have_defaults_and_live_in_engine_only() {
    assert_eq!(ok("").engine.limits, Limits { max_clusters: 1000, max_keys: 10_000_000 });
    let c = ok("[engine]\nmax_clusters = 5\nmax_keys = 70\n");
    assert_eq!(c.engine.limits, Limits { max_clusters: 5, max_keys: 70 });
    let p =
        problems("[engine]\nmax_clusters = 0\nmax_keys = 0\n[clusters.a.engine]\nmax_keys = 9\n");
    assert_eq!(
        p,
        [
            "engine.max_clusters: must be at least 1",
            "engine.max_keys: must be at least 1",
            "clusters.a.engine.max_keys: only in [engine]: the caps are for all clusters together",
        ]
    );
}

#[test]
fn syntax_errors_are_reported_with_their_position() {
    let p = problems("[engine\nwindow = 1");
    assert_eq!(p.len(), 1);
    assert!(p[0].starts_with("(file): not valid TOML"), "{p:?}");
    assert!(p[0].contains("line 1"), "{p:?}");
}

// Names a broker type, which a build without its feature refuses.
#[cfg(feature = "kafka")]
#[test]
fn env_substitution_with_defaults_and_escapes() {
    let e = env(&[("TOPIC", "events"), ("EMPTY", "")]);
    let c = parse(
        r#"
[sinks.k]
type = "kafka"
brokers = "${BROKERS:-127.0.0.1:9092}"
topic = "herald-${TOPIC}"
source = "$$HOME ${EMPTY:-fallback}"
"#,
        &e,
    )
    .unwrap();
    let SinkKind::Kafka(k) = &c.sinks["k"].kind else { panic!() };
    assert_eq!(k.brokers.as_deref(), Some("127.0.0.1:9092"));
    assert_eq!(k.topic.as_deref(), Some("herald-events"));
    assert_eq!(k.source.as_deref(), Some("$HOME fallback"));
}

#[cfg(not(feature = "kafka"))]
#[test]
fn a_type_left_out_of_the_build_is_named_as_such() {
    let got = problems("[sinks.k]\ntype = \"kafka\"\n");
    assert_eq!(
        got,
        ["sinks.k.type: this herald was built without \"kafka\" (cargo feature `kafka`)"]
    );
}

#[test]
fn an_unset_variable_is_a_problem_that_does_not_print_values() {
    let p = match parse("[server]\ningest_token = \"${SECRET}\"\n", &env(&[("OTHER", "hunter2")])) {
        Err(p) => p.0,
        Ok(_) => panic!(),
    };
    assert_eq!(p[0].to_string(), "server.ingest_token: environment variable SECRET is not set");
    let p = problems("[server]\ningest_token = \"${bad name}\"\n");
    assert!(p[0].contains("not a valid variable reference"), "{p:?}");
}

#[test]
fn ingest_on_a_non_loopback_address_requires_a_token() {
    let p = problems("[server]\nlisten = \"0.0.0.0:9464\"\n[sources.in]\ntype = \"http\"\n");
    assert_eq!(
        p,
        ["server.ingest_token: missing: required for /ingest when listen is not loopback"]
    );
    ok("[server]\nlisten = \"0.0.0.0:9464\"\ningest_token = \"t\"\n[sources.in]\ntype = \"http\"\n");
    ok("[sources.in]\ntype = \"http\"\n");
}

// Names a broker type, which a build without its feature refuses.
#[cfg(all(feature = "amqp", feature = "nats", feature = "otlp"))]
#[test]
fn every_source_and_sink_type_has_its_required_keys() {
    let p = problems(
        r#"
[sources.a]
type = "amqp"
[sources.n]
type = "nats"
[sources.p]
type = "probe"
[sources.e]
type = "etcd"
[sources.z]
type = "zookeeper"
[sinks.f]
type = "file"
[sinks.n]
type = "nats"
[sinks.o]
type = "otlp"
"#,
    );
    for key in [
        "sources.a.url",
        "sources.a.queue",
        "sources.n.url",
        "sources.n.subject",
        "sources.p.cluster",
        "sources.p.nodes",
        "sources.e.cluster",
        "sources.e.endpoints",
        "sources.z.cluster",
        "sources.z.servers",
        "sinks.f.path",
        "sinks.n.url",
        "sinks.o.endpoint",
    ] {
        assert!(p.contains(&format!("{key}: missing")), "no {key} in {p:#?}");
    }
    ok(r#"
[sources.s]
type = "stdin"
cluster = "c"
format = "generic"
[sinks.p]
type = "prometheus"
[sinks.o]
type = "otlp"
endpoint = "http://127.0.0.1:4317"
protocol = "http/protobuf"
"#);
}

#[test]
fn durations_are_humantime() {
    let c = ok("[engine]\nwindow = \"1m 30s\"\nstartup_grace = \"250ms\"\n");
    assert_eq!(c.engine.defaults.windows.alive, Nanos(90 * SEC));
    assert_eq!(c.engine.defaults.startup_grace, Nanos(SEC / 4));
}

#[test]
fn the_server_bounds_have_defaults_and_are_validated() {
    let c = ok("");
    assert_eq!(
        (c.server.header_timeout, c.server.request_timeout, c.server.max_requests),
        (Duration::from_secs(10), Duration::from_secs(30), 256)
    );
    let c = ok("[server]\nheader_timeout = \"1s\"\nrequest_timeout = \"2m\"\nmax_requests = 8\n");
    assert_eq!(
        (c.server.header_timeout, c.server.request_timeout, c.server.max_requests),
        (Duration::from_secs(1), Duration::from_secs(120), 8)
    );
    let p = problems(
        "[server]\nheader_timeout = \"0s\"\nrequest_timeout = \"0s\"\nmax_requests = 0\nmax_conns = 1\n",
    );
    assert_eq!(
        p,
        [
            "server.max_conns: unknown key",
            "server.header_timeout: must be more than 0",
            "server.request_timeout: must be more than 0",
            "server.max_requests: must be at least 1",
        ]
    );
}

#[test]
fn an_http_source_takes_records_on_its_own_path() {
    let c =
        ok("[sources.a]\ntype = \"http\"\n[sources.b]\ntype = \"http\"\npath = \"/ingest/b\"\n");
    let path = |name: &str| match &c.sources[name] {
        SourceKind::Http(h) => h.path.clone(),
        other => panic!("{other:?}"),
    };
    assert_eq!((path("a"), path("b")), ("/ingest".to_string(), "/ingest/b".to_string()));
}

#[test]
fn two_http_sources_on_one_path_are_refused() {
    let p = problems(
        "[sources.a]\ntype = \"http\"\n[sources.b]\ntype = \"http\"\n[sources.c]\ntype = \"http\"\npath = \"/ingest\"\n",
    );
    let taken = "\"/ingest\" is already the path of sources.a: give each http source its own";
    assert_eq!(p, [format!("sources.b.path: {taken}"), format!("sources.c.path: {taken}")]);
}

#[test]
fn an_http_source_path_is_a_plain_path_of_its_own() {
    for bad in ["ingest", "/", "/in/{x}", "/in/*rest", "/in gest", "/in?x=1"] {
        let p = problems(&format!("[sources.a]\ntype = \"http\"\npath = {bad:?}\n"));
        assert!(
            p.len() == 1 && p[0].starts_with("sources.a.path: ") && p[0].contains("is not a path"),
            "{bad}: {p:?}"
        );
    }
    for server in ["/healthz", "/readyz", "/metrics", "/state"] {
        let p = problems(&format!("[sources.a]\ntype = \"http\"\npath = {server:?}\n"));
        assert_eq!(p, [format!("sources.a.path: {server:?} is one of the server's own paths")]);
    }
}

/// An edge forwards records and emits no events: a sink that takes events beside a raw kafka
/// sink, or a disk buffer in front of one, is refused with its key path.
#[cfg(feature = "kafka")]
#[test]
fn a_raw_kafka_sink_makes_an_edge_that_takes_no_other_sink() {
    let raw = "[sinks.edge]\ntype = \"kafka\"\nbrokers = \"b:9092\"\ntopic = \"records\"\nencoding = \"raw\"\n";
    let c = ok(raw);
    assert!(c.sinks["edge"].kind.raw());
    let got = problems(&format!("{raw}[sinks.out]\ntype = \"stdout\"\n"));
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(got[0].starts_with("sinks.out.type: a kafka sink with encoding = \"raw\""), "{got:?}");
    let got = problems(&format!("{raw}[sinks.edge.buffer]\ntype = \"disk\"\ndir = \"/tmp/b\"\n"));
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(got[0].starts_with("sinks.edge.buffer.type: a raw kafka sink takes no disk buffer"));
    let got = problems(&raw.replace("\"raw\"\n", "\"avro\"\n"));
    assert!(got[0].starts_with("sinks.edge.encoding"), "{got:?}");
}

/// An instance in a consumer group owns its partitions' clusters: another source beside the
/// kafka source is refused, and the offsets herald commits itself cannot be configured away.
#[cfg(feature = "kafka")]
#[test]
fn a_kafka_group_source_takes_no_other_source() {
    let kafka = "[sources.group]\ntype = \"kafka\"\nbrokers = \"b:9092\"\ntopic = \"raw\"\ngroup_id = \"core\"\n";
    assert!(matches!(ok(kafka).sources["group"], SourceKind::Kafka(_)));
    let got = problems(&format!("{kafka}[sources.tail]\ntype = \"stdin\"\n"));
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(
        got[0].starts_with("sources.tail: sources.group reads a Kafka consumer group"),
        "{got:?}"
    );
    let got =
        problems(&format!("{kafka}[sources.group.client]\n\"enable.auto.commit\" = \"true\"\n"));
    assert!(
        got[0].starts_with("sources.group.client.enable.auto.commit: herald sets this itself"),
        "{got:?}"
    );
    let got =
        problems("[sources.group]\ntype = \"kafka\"\nbrokers = \"b:9092\"\ntopic = \"raw\"\n");
    assert_eq!(got, ["sources.group.group_id: missing"]);
}

/// Exactly once puts a commit's events, entries and offsets in one transaction: every kafka
/// sink is on the source's brokers and takes no buffer; the isolation level and the
/// transactional id are herald's to set.
#[cfg(feature = "kafka")]
#[test]
fn exactly_once_keeps_every_kafka_sink_in_the_sources_transactions() {
    let kafka = "[sources.group]\ntype = \"kafka\"\nbrokers = \"b:9092\"\ntopic = \"raw\"\ngroup_id = \"core\"\nprocessing = \"exactly_once\"\n";
    let sink = "[sinks.events]\ntype = \"kafka\"\nbrokers = \"b:9092\"\ntopic = \"events\"\n";
    let SourceKind::Kafka(k) = &ok(&format!("{kafka}{sink}")).sources["group"] else {
        panic!("a kafka source")
    };
    assert_eq!(k.processing, crate::sources::kafka::Processing::ExactlyOnce);
    let got = problems(&format!("{kafka}{}", sink.replace("b:9092", "other:9092")));
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(got[0].starts_with("sinks.events.brokers: with sources.group.processing"), "{got:?}");
    let got = problems(&format!(
        "{kafka}{sink}[sinks.events.buffer]\ntype = \"disk\"\ndir = \"/tmp/b\"\n"
    ));
    assert!(got.iter().any(|g| g.starts_with("sinks.events.buffer.type: exactly once")), "{got:?}");
    let got = problems(&format!(
        "{kafka}[sources.group.client]\n\"isolation.level\" = \"read_uncommitted\"\n"
    ));
    assert!(got[0].starts_with("sources.group.client.isolation.level"), "{got:?}");
    let got = problems(&format!("{kafka}[sources.group.client]\n\"transactional.id\" = \"x\"\n"));
    assert!(got[0].starts_with("sources.group.client.transactional.id: herald sets"), "{got:?}");
    let at_least_once =
        kafka.replace("processing = \"exactly_once\"\n", "transactional_id = \"x\"\n");
    let got = problems(&at_least_once);
    assert!(got[0].starts_with("sources.group.transactional_id: only with"), "{got:?}");
    let got = problems(&kafka.replace("exactly_once", "twice"));
    assert!(got[0].starts_with("sources.group"), "{got:?}");
}
