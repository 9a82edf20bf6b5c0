//! Property tests over generated OpenZiti logs (DESIGN §5, §6).

use std::collections::{BTreeMap, HashMap};
use std::io::{self, BufRead, Read};

use proptest::prelude::*;

use herald::decode::Context;
use herald::engine::EngineConfig;
use herald::model::{event_id, ClusterEvent, EventKind, Timestamp};
use herald::replay::Replay;
use herald::telemetry::view::View;

const W: i64 = 2_000_000_000;
const GRACE: i64 = 10_000_000_000;
const T0: i64 = 1_736_532_000_000_000_000;

#[derive(Clone, Debug)]
enum Rec {
    View(u8, Option<u8>),
    Gained(u8),
    Lost(u8),
    Peer(u8, u8, bool),
    Router(u8, u8, bool),
    ReadOnly(u8, bool),
    Members(u64, Vec<u8>),
    Terminator(u8, bool),
}

fn rec() -> impl Strategy<Value = Rec> {
    let r = 1u8..=3;
    prop_oneof![
        4 => (r.clone(), proptest::option::of(1u8..=3)).prop_map(|(r, l)| Rec::View(r, l)),
        1 => r.clone().prop_map(Rec::Gained),
        1 => r.clone().prop_map(Rec::Lost),
        3 => (r.clone(), 1u8..=3, any::<bool>()).prop_map(|(r, p, c)| Rec::Peer(r, p, c)),
        3 => (r.clone(), 1u8..=2, any::<bool>()).prop_map(|(r, x, o)| Rec::Router(r, x, o)),
        1 => (r.clone(), any::<bool>()).prop_map(|(r, ro)| Rec::ReadOnly(r, ro)),
        1 => (1u64..6, proptest::collection::vec(1u8..=4, 1..4)).prop_map(|(i, m)| Rec::Members(i, m)),
        2 => (r, any::<bool>()).prop_map(|(r, c)| Rec::Terminator(r, c)),
    ]
}

/// A log: records with times on a 100 ms grid, so that window edges coincide often.
/// `jitter` lets some records step back in time (reordering).
fn log(jitter: bool) -> impl Strategy<Value = Vec<(i64, Rec)>> {
    let step = if jitter { -20i64..=30 } else { 0i64..=30 };
    proptest::collection::vec((step, rec()), 1..120).prop_map(|steps| {
        let mut t = T0;
        steps
            .into_iter()
            .map(|(dt, r)| {
                t += dt * 100_000_000;
                (t, r)
            })
            .collect()
    })
}

fn ts(nanos: i64) -> String {
    Timestamp(nanos).to_rfc3339()
}

fn line(at: i64, r: &Rec) -> String {
    let cluster = |src: u8, ty: &str, extra: String| {
        format!(
            r#"{{"namespace":"cluster","event_src_id":"n{src}","timestamp":"{}","eventType":"{ty}"{extra}}}"#,
            ts(at)
        )
    };
    match r {
        Rec::View(src, Some(l)) => {
            cluster(*src, "state.has_leader", format!(r#","leaderId":"n{l}""#))
        }
        Rec::View(src, None) => cluster(*src, "state.is_leaderless", String::new()),
        Rec::Gained(src) => cluster(*src, "leadership.gained", String::new()),
        Rec::Lost(src) => cluster(*src, "leadership.lost", String::new()),
        Rec::Peer(src, p, c) => {
            let ty = if *c { "peer.connected" } else { "peer.disconnected" };
            cluster(*src, ty, format!(r#","peers":[{{"id":"n{p}"}}]"#))
        }
        Rec::ReadOnly(src, ro) => {
            cluster(*src, if *ro { "state.ro" } else { "state.rw" }, String::new())
        }
        Rec::Members(index, m) => {
            let peers: Vec<String> = m.iter().map(|i| format!(r#"{{"id":"n{i}"}}"#)).collect();
            cluster(
                1,
                "members.changed",
                format!(r#","index":{index},"peers":[{}]"#, peers.join(",")),
            )
        }
        Rec::Router(src, x, online) => format!(
            r#"{{"namespace":"router","event_src_id":"n{src}","timestamp":"{}","event_type":"{}","router_id":"rt{x}"}}"#,
            ts(at),
            if *online { "router-online" } else { "router-offline" }
        ),
        Rec::Terminator(src, created) => format!(
            r#"{{"namespace":"terminator","event_src_id":"n{src}","timestamp":"{}","event_type":"{}","service_id":"s","router_id":"rt1","terminator_id":"t"}}"#,
            ts(at),
            if *created { "created" } else { "deleted" }
        ),
    }
}

fn text(log: &[(i64, Rec)]) -> String {
    log.iter().map(|(at, r)| line(*at, r) + "\n").collect()
}

/// A reader that hands out the input in the given chunk sizes.
struct Chunked {
    data: Vec<u8>,
    pos: usize,
    sizes: Vec<usize>,
    next: usize,
}

impl Read for Chunked {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let want = self.sizes.get(self.next % self.sizes.len().max(1)).copied().unwrap_or(1).max(1);
        self.next += 1;
        let n = want.min(buf.len()).min(self.data.len() - self.pos);
        buf[..n].copy_from_slice(&self.data[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

fn replay_from(input: impl BufRead) -> (Vec<ClusterEvent>, Vec<u8>) {
    let mut out = Vec::new();
    Replay::new(EngineConfig::default(), Context::new("p", "unknown"))
        .run(input, &mut out, |e| panic!("generated line failed to decode: {e}"))
        .expect("replay");
    let events = String::from_utf8_lossy(&out)
        .lines()
        .map(|l| serde_json::from_str(l).expect("event json"))
        .collect();
    (events, out)
}

fn replay(text: &str) -> Vec<ClusterEvent> {
    replay_from(text.as_bytes()).0
}

/// A key's identity in the output, and the value an event gives it.
fn key_and_value(e: &ClusterEvent) -> (String, String) {
    use EventKind::*;
    let s = |o: &Option<String>| o.clone().unwrap_or_default();
    let key = match e.kind {
        LeaderElected | Leaderless => "leader".to_string(),
        SplitBrain | SplitBrainResolved => "split".to_string(),
        ReadOnly | ReadWrite => "read_only".to_string(),
        MembersChanged => "members".to_string(),
        NodeHasLeader | NodeIsLeaderless => format!("view/{}", s(&e.node)),
        PeerConnected | PeerDisconnected => format!("peer/{}/{}", s(&e.node), s(&e.peer)),
        RouterOnline | RouterOffline => format!("router/{}", s(&e.router)),
        SpinStarted | SpinStopped => {
            format!("slot/{}/{}/{}", s(&e.service), s(&e.router), s(&e.host))
        }
        NodeDown | NodeUp => format!("alive/{}", s(&e.node)),
    };
    let value = match e.kind {
        LeaderElected | NodeHasLeader => format!("leader {}", s(&e.leader_id)),
        MembersChanged => format!("{:?}", e.members),
        k => k.as_str().to_string(),
    };
    (format!("{}/{key}", e.cluster), value)
}

fn is_negative(kind: EventKind) -> bool {
    use EventKind::*;
    matches!(
        kind,
        Leaderless | ReadOnly | NodeIsLeaderless | PeerDisconnected | RouterOffline | NodeDown
    )
}

/// The last applied raw value of every directly fed key: views and peers, under the
/// staleness rule (per reporter and key, on record time).
fn last_raw(log: &[(i64, Rec)]) -> BTreeMap<String, String> {
    let mut newest: HashMap<String, i64> = HashMap::new();
    let mut last = BTreeMap::new();
    for (at, r) in log {
        let (key, value) = match r {
            Rec::View(src, l) => (
                format!("p/view/n{src}"),
                Some(
                    l.map(|l| format!("leader n{l}"))
                        .unwrap_or_else(|| "node.is_leaderless".into()),
                ),
            ),
            Rec::Gained(src) => (format!("p/view/n{src}"), Some(format!("leader n{src}"))),
            Rec::Lost(src) => (format!("p/view/n{src}"), None),
            Rec::Peer(src, p, c) => (
                format!("p/peer/n{src}/n{p}"),
                Some(if *c { "peer.connected" } else { "peer.disconnected" }.to_string()),
            ),
            _ => continue,
        };
        if newest.get(&key).is_some_and(|n| at < n) {
            continue;
        }
        newest.insert(key.clone(), *at);
        if let Some(v) = value {
            last.insert(key, v);
        }
    }
    last
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn no_two_consecutive_events_of_a_key_carry_the_same_value(log in log(true)) {
        let mut last: HashMap<String, String> = HashMap::new();
        for e in replay(&text(&log)) {
            let (key, value) = key_and_value(&e);
            prop_assert_ne!(last.insert(key.clone(), value.clone()), Some(value), "{} repeated", key);
        }
    }

    #[test]
    fn windowed_keys_become_stable_exactly_one_window_after_at(log in log(true)) {
        let mut seen: HashMap<String, ()> = HashMap::new();
        for e in replay(&text(&log)) {
            let (key, _) = key_and_value(&e);
            let first = seen.insert(key.clone(), ()).is_none();
            if matches!(e.kind, EventKind::SpinStarted | EventKind::SpinStopped | EventKind::SplitBrain | EventKind::SplitBrainResolved) {
                continue;
            }
            let want = if first && is_negative(e.kind) { W.max(GRACE) } else { W };
            let got = e.stable_at.as_unix_nanos() - e.at.as_unix_nanos();
            prop_assert_eq!(got, want, "{:?}", e);
            prop_assert_eq!(e.initial, first, "{:?}", e);
        }
    }

    #[test]
    fn no_contrary_record_lies_inside_an_emitted_window(log in log(false)) {
        let events = replay(&text(&log));
        for e in &events {
            let (key, value) = key_and_value(e);
            let (from, to) = (e.at.as_unix_nanos(), e.stable_at.as_unix_nanos());
            for (at, r) in &log {
                if *at <= from || *at >= to {
                    continue;
                }
                let contrary = match (r, key.strip_prefix("p/")) {
                    (Rec::View(src, l), Some(k)) if k == format!("view/n{src}") => {
                        value != l.map(|l| format!("leader n{l}")).unwrap_or_else(|| "node.is_leaderless".into())
                    }
                    (Rec::Gained(src), Some(k)) if k == format!("view/n{src}") => value != format!("leader n{src}"),
                    (Rec::Peer(src, p, c), Some(k)) if k == format!("peer/n{src}/n{p}") => {
                        value != if *c { "peer.connected" } else { "peer.disconnected" }
                    }
                    _ => false,
                };
                prop_assert!(!contrary, "{:?} at {} inside {:?}", r, at, e);
            }
        }
    }

    #[test]
    fn after_the_input_goes_quiet_direct_keys_end_on_their_last_raw_value(log in log(true)) {
        let mut last_emitted: BTreeMap<String, String> = BTreeMap::new();
        for e in replay(&text(&log)) {
            let (key, value) = key_and_value(&e);
            last_emitted.insert(key, value);
        }
        for (key, raw) in last_raw(&log) {
            prop_assert_eq!(last_emitted.get(&key), Some(&raw), "{}", key);
        }
    }

    #[test]
    fn routers_end_online_iff_a_reporter_last_said_online(
        steps in proptest::collection::vec((0i64..=30, 1u8..=3, 1u8..=2, any::<bool>()), 1..80)
    ) {
        // Without peer records every reporter is live.
        let mut t = T0;
        let log: Vec<(i64, Rec)> = steps
            .into_iter()
            .map(|(dt, r, x, on)| { t += dt * 100_000_000; (t, Rec::Router(r, x, on)) })
            .collect();
        let mut latest: BTreeMap<(u8, u8), bool> = BTreeMap::new();
        for (_, r) in &log {
            if let Rec::Router(src, x, on) = r { latest.insert((*x, *src), *on); }
        }
        let mut last_emitted: BTreeMap<String, String> = BTreeMap::new();
        for e in replay(&text(&log)) {
            let (key, value) = key_and_value(&e);
            last_emitted.insert(key, value);
        }
        for x in 1u8..=2 {
            let reports: Vec<bool> = latest.iter().filter(|((r, _), _)| *r == x).map(|(_, on)| *on).collect();
            if reports.is_empty() { continue; }
            let want = if reports.iter().any(|on| *on) { "router.online" } else { "router.offline" };
            prop_assert_eq!(last_emitted.get(&format!("p/router/rt{x}")).map(String::as_str), Some(want));
        }
    }

    #[test]
    fn output_does_not_depend_on_how_the_input_is_split_into_reads(
        log in log(true),
        sizes in proptest::collection::vec(1usize..200, 1..20),
        capacity in 1usize..64,
    ) {
        let input = text(&log);
        let whole = replay_from(input.as_bytes()).1;
        let reader = Chunked { data: input.into_bytes(), pos: 0, sizes, next: 0 };
        let split = replay_from(io::BufReader::with_capacity(capacity, reader)).1;
        prop_assert_eq!(whole, split);
    }

    #[test]
    fn the_same_input_gives_the_same_ids(log in log(true)) {
        let input = text(&log);
        let (a, b) = (replay(&input), replay(&input));
        prop_assert_eq!(&a, &b);
        for e in &a {
            let s = |o: &Option<String>| o.clone().unwrap_or_default();
            let subject: Vec<String> = match e.kind {
                EventKind::PeerConnected | EventKind::PeerDisconnected => vec![s(&e.node), s(&e.peer)],
                EventKind::NodeHasLeader | EventKind::NodeIsLeaderless | EventKind::NodeUp | EventKind::NodeDown => vec![s(&e.node)],
                EventKind::RouterOnline | EventKind::RouterOffline => vec![s(&e.router)],
                EventKind::SpinStarted | EventKind::SpinStopped => vec![s(&e.service), s(&e.router), s(&e.host)],
                _ => vec![],
            };
            let parts: Vec<&str> = subject.iter().map(String::as_str).collect();
            prop_assert_eq!(&e.id, &event_id(&e.cluster, e.kind, &parts, e.at));
        }
    }
}

/// Replays `lines` through the engine, snapshotting and restoring after `split` of them.
fn replay_with_restart(input: &str, split: usize) -> Vec<ClusterEvent> {
    use herald::decode::{decode_line, Decoded};
    use herald::engine::Engine;
    let ctx = Context::new("p", "unknown");
    let mut engine = Engine::new(EngineConfig::default());
    let mut out = Vec::new();
    for (i, line) in input.lines().enumerate() {
        if i == split {
            let bytes = engine.snapshot().expect("snapshot");
            engine = Engine::restore(EngineConfig::default(), &bytes).expect("restore");
        }
        if let Ok(Decoded::Observation(obs)) = decode_line(line.as_bytes(), i as u64 + 1, &ctx) {
            engine.observe(&obs, obs.at, &mut out);
        }
    }
    engine.finish(&mut out);
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn a_snapshot_and_restore_at_any_point_changes_nothing(log in log(true), at in 0usize..120) {
        let input = text(&log);
        let whole = replay(&input);
        prop_assert_eq!(replay_with_restart(&input, at.min(log.len())), whole);
    }
}

#[test]
fn a_snapshot_of_another_format_is_refused_not_reset() {
    use herald::engine::{Engine, SnapshotError};
    let mut bytes = Engine::new(EngineConfig::default()).snapshot().expect("snapshot");
    bytes[0] = 9;
    match Engine::restore(EngineConfig::default(), &bytes) {
        Err(SnapshotError::Version { found: 9 }) => {}
        Err(e) => panic!("{e}"),
        Ok(_) => panic!("a format 9 snapshot was accepted"),
    }
    match Engine::restore(EngineConfig::default(), &[1, 200, 7]) {
        Err(SnapshotError::Corrupt(_)) => {}
        Err(e) => panic!("{e}"),
        Ok(_) => panic!("a corrupt snapshot was accepted"),
    }
}

/// The view built from every event emitted, and the one a restart rebuilds from the engine.
fn views_from_events_and_from_the_engine(input: &str, split: usize) -> (View, View) {
    use herald::decode::{decode_line, Decoded};
    use herald::engine::Engine;
    let ctx = Context::new("p", "unknown");
    let mut engine = Engine::new(EngineConfig::default());
    let mut out = Vec::new();
    for (i, line) in input.lines().enumerate().take(split) {
        if let Ok(Decoded::Observation(obs)) = decode_line(line.as_bytes(), i as u64 + 1, &ctx) {
            engine.observe(&obs, obs.at, &mut out);
        }
    }
    let mut from_events = View::default();
    for e in &out {
        from_events.apply(e);
    }
    let bytes = engine.snapshot().expect("snapshot");
    let restored = Engine::restore(EngineConfig::default(), &bytes).expect("restore");
    (from_events, View::restored(restored.stable_state()))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn after_a_restart_the_view_is_what_the_events_before_it_built(log in log(true), at in 1usize..120) {
        let input = text(&log);
        let (from_events, restored) = views_from_events_and_from_the_engine(&input, at);
        prop_assert_eq!(restored, from_events);
    }
}

/// How a record's line is written in a messy log file.
#[derive(Clone, Debug)]
enum Messy {
    Plain,
    Crlf,
    BlankAfter,
    GarbageAfter(String),
    Twice,
}

fn messy() -> impl Strategy<Value = Messy> {
    prop_oneof![
        6 => Just(Messy::Plain),
        2 => Just(Messy::Crlf),
        1 => Just(Messy::BlankAfter),
        1 => "[ -~]{0,40}".prop_map(Messy::GarbageAfter),
        1 => Just(Messy::Twice),
    ]
}

fn messy_text(log: &[(i64, Rec)], how: &[Messy]) -> String {
    let mut out = String::new();
    for (i, (at, r)) in log.iter().enumerate() {
        let l = line(*at, r);
        match how.get(i).unwrap_or(&Messy::Plain) {
            Messy::Plain => out += &format!("{l}\n"),
            Messy::Crlf => out += &format!("{l}\r\n"),
            Messy::BlankAfter => out += &format!("{l}\n  \n\n"),
            // Garbage of its own: never a record, whatever the generator wrote.
            Messy::GarbageAfter(g) => out += &format!("{l}\nnot a record {g}\n"),
            Messy::Twice => out += &format!("{l}\n{l}\n"),
        }
    }
    out
}

/// `herald replay`'s events and summary over `log`.
fn replay_binary(log: &std::path::Path) -> (Vec<ClusterEvent>, BTreeMap<String, u64>) {
    let out = crate::support::run(&["replay", "--cluster", "p", log.to_str().unwrap()], b"");
    assert!(out.status.success());
    (crate::support::events(&out.stdout), crate::support::summary(&out))
}

/// `herald run` over `log` to its end: its events and its record counters by outcome.
fn run_binary(
    dir: &std::path::Path,
    log: &std::path::Path,
    want: usize,
    records: u64,
) -> (Vec<ClusterEvent>, BTreeMap<String, u64>) {
    use crate::support::{eventually, free_port, http, write_temp, Daemon};
    let port = free_port();
    let out = dir.join("out.jsonl");
    let cfg = write_temp(
        dir,
        "herald.toml",
        format!("[server]\nlisten = \"127.0.0.1:{port}\"\n[sources.log]\ntype = \"file\"\npath = {log:?}\ncluster = \"p\"\n[sinks.out]\ntype = \"file\"\npath = {out:?}\n").as_bytes(),
    );
    let mut d = Daemon::start(&cfg);
    let counters = || -> BTreeMap<String, u64> {
        let metrics = http(port, "GET", "/metrics", &[], b"").1;
        metrics
            .lines()
            .filter_map(|l| l.strip_prefix("herald_records_total{outcome=\""))
            .filter_map(|l| {
                let (outcome, rest) = l.split_once('"')?;
                Some((outcome.to_string(), rest.rsplit(' ').next()?.parse().ok()?))
            })
            .collect()
    };
    let lines = || std::fs::read_to_string(&out).unwrap_or_default().lines().count();
    assert!(eventually(|| counters().values().sum::<u64>() == records && lines() >= want));
    // A moment more, to see that nothing else follows.
    std::thread::sleep(std::time::Duration::from_millis(300));
    let got = crate::support::events(&std::fs::read(&out).unwrap_or_default());
    let counted = counters();
    assert!(d.signal("-TERM").success());
    (got, counted)
}

proptest! {
    // Each case runs the real binary twice: a few dozen.
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn run_over_a_messy_file_equals_replay_same_ids_same_counters(
        log in log(true),
        how in proptest::collection::vec(messy(), 120),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.log");
        std::fs::write(&path, messy_text(&log, &how)).unwrap();
        let (want, summary) = replay_binary(&path);
        let (got, counted) = run_binary(dir.path(), &path, want.len(), summary["records"]);
        let ids = |events: &[ClusterEvent]| events.iter().map(|e| e.id.clone()).collect::<Vec<_>>();
        prop_assert_eq!(ids(&got), ids(&want));
        prop_assert_eq!(&got, &want);
        let n = |k: &str| counted.get(k).copied().unwrap_or(0);
        prop_assert_eq!(n("decode_error"), summary["decode_errors"]);
        prop_assert_eq!(n("ignored"), summary["ignored"]);
        prop_assert_eq!(n("stale"), summary["stale"]);
        prop_assert_eq!(n("ok") + n("stale") + n("ignored") + n("decode_error"), summary["records"]);
    }
}
