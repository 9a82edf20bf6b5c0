//! Entries and their changes (DESIGN §7.1): a store that applies every commit's changes
//! holds exactly the engine's entries, and an engine rebuilt from them goes on as if never
//! interrupted.

use std::collections::BTreeMap;

use proptest::prelude::*;
use proptest::strategy::ValueTree;

use super::*;

/// One step of a generated log.
#[derive(Clone, Debug)]
enum Step {
    /// A record `ms` after the previous step, in cluster `cluster` (0 or 1).
    Record { ms: u32, cluster: u8, reporter: u8, signal: u8, arg: u8 },
    /// Live time moves on with no record.
    Tick { ms: u32 },
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        8 => (0u32..1500, 0u8..2, 0u8..3, 0u8..14, 0u8..4).prop_map(
            |(ms, cluster, reporter, signal, arg)| Step::Record { ms, cluster, reporter, signal, arg }
        ),
        1 => (0u32..40_000).prop_map(|ms| Step::Tick { ms }),
    ]
}

const NODES: [&str; 4] = ["n1", "n2", "n3", "n4"];

fn signal(kind: u8, arg: u8) -> Signal<'static> {
    let node = NODES[usize::from(arg) % NODES.len()];
    let slot = |a: u8| Slot {
        service: "svc".into(),
        router: Cow::Owned(format!("r{}", a % 2)),
        host: "h".into(),
    };
    match kind {
        0 => has_leader(node),
        1 => leaderless(),
        2 => gained(),
        3 => lost(),
        4 => peer(node, arg.is_multiple_of(2)),
        5 => router(&format!("edge-{}", arg % 3), arg < 2),
        6 => router(&format!("edge-{}", arg % 3), false),
        7 => members(u64::from(arg) + 1, &NODES[..usize::from(arg % 3) + 2]),
        8 => Signal::ReadOnly { read_only: arg.is_multiple_of(2) },
        9 => probe(node, !arg.is_multiple_of(3)),
        10 => Signal::Entity { op: EntityOp::Created, slot: slot(arg) },
        11 => Signal::Entity { op: EntityOp::Deleted, slot: slot(arg) },
        12 => Signal::StagedEntity {
            event_id: Cow::Owned(format!("e{}", arg % 2)),
            op: if arg < 2 { EntityOp::Created } else { EntityOp::Deleted },
            slot: slot(arg),
        },
        _ => Signal::Commit { event_id: Cow::Owned(format!("e{}", arg % 2)) },
    }
}

/// Short TTLs and spin periods, so that evictions, removed clusters and spins happen.
fn config() -> EngineConfig {
    let s = |secs: u64| Nanos::from_std(Duration::from_secs(secs));
    let params = Params {
        windows: Windows::uniform(s(2)),
        startup_grace: s(4),
        split_window: s(3),
        spin_cycles: 2,
        spin_period: s(20),
        key_ttl: s(30),
    };
    EngineConfig { defaults: params, ..Default::default() }
}

/// Runs `steps` on `engine` from `clock`, returning the events and the clock after.
fn run(engine: &mut Engine, steps: &[Step], mut clock: i64, out: &mut Vec<ClusterEvent>) -> i64 {
    for s in steps {
        match *s {
            Step::Record { ms, cluster, reporter, signal: kind, arg } => {
                clock += i64::from(ms) * 1_000_000;
                let obs = Observation {
                    cluster: Cow::Owned(["c", "d"][usize::from(cluster)].into()),
                    reporter: Cow::Owned(NODES[usize::from(reporter)].into()),
                    at: Timestamp(clock),
                    signal: signal(kind, arg),
                };
                engine.observe(&obs, Timestamp(clock), out);
            }
            Step::Tick { ms } => {
                clock += i64::from(ms) * 1_000_000;
                engine.tick(Timestamp(clock), out);
            }
        }
    }
    clock
}

fn apply(store: &mut BTreeMap<Vec<u8>, Vec<u8>>, changes: Vec<Change>) {
    let mut seen = std::collections::HashSet::new();
    for (key, value) in changes {
        assert!(seen.insert(key.clone()), "a key twice in one commit");
        match value {
            Some(v) => store.insert(key, v),
            None => store.remove(&key),
        };
    }
}

fn all(engine: &Engine) -> BTreeMap<Vec<u8>, Vec<u8>> {
    engine
        .entries()
        .expect("entries")
        .into_iter()
        .map(|(k, v)| (k, v.unwrap_or_default()))
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// "Apply, take changes, restore into a fresh engine from the accumulated changes,
    /// apply the rest" gives exactly the events of an uninterrupted run, at every cut.
    #[test]
    fn an_engine_restored_from_its_changes_goes_on_as_an_uninterrupted_run(
        steps in proptest::collection::vec(step(), 1..160),
        cuts in proptest::collection::vec(0usize..160, 0..5),
    ) {
        let mut whole = Engine::new(config());
        let mut expected = Vec::new();
        let end = run(&mut whole, &steps, T0, &mut expected);
        whole.finish(&mut expected);

        let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(steps.len())).collect();
        cuts.sort_unstable();
        cuts.push(steps.len());
        let mut store = BTreeMap::new();
        let mut engine = Engine::new(config());
        engine.track_changes();
        let (mut got, mut from, mut clock) = (Vec::new(), 0, T0);
        for cut in cuts {
            clock = run(&mut engine, &steps[from..cut], clock, &mut got);
            from = cut;
            apply(&mut store, engine.changes().expect("changes"));
            // The store holds exactly what the engine holds: no change was missed.
            prop_assert_eq!(&store, &all(&engine));
            engine = Engine::from_entries(config(), store.clone()).expect("restore");
            engine.track_changes();
        }
        prop_assert_eq!(clock, end);
        engine.finish(&mut got);
        prop_assert_eq!(&got, &expected);
        prop_assert_eq!(engine.stats(), whole.stats());
        prop_assert_eq!(engine.keys(), whole.keys());
        prop_assert_eq!(engine.clusters(), whole.clusters());
    }
}

#[test]
fn a_store_of_entries_survives_a_cluster_going_and_a_key_being_evicted() {
    let mut engine = Engine::new(config());
    engine.track_changes();
    let mut store = BTreeMap::new();
    let mut out = Vec::new();
    let obs = |cluster: &'static str, at: f64, signal| Observation {
        cluster: Cow::Borrowed(cluster),
        reporter: Cow::Borrowed("n1"),
        at: t(at),
        signal,
    };
    engine.observe(&obs("c", 0.0, router("edge-1", true)), t(0.0), &mut out);
    engine.observe(&obs("c", 0.0, has_leader("n1")), t(0.0), &mut out);
    engine.observe(&obs("d", 0.0, Signal::ReadOnly { read_only: true }), t(0.0), &mut out);
    engine.tick(t(5.0), &mut out);
    apply(&mut store, engine.changes().expect("changes"));
    let routers = |s: &BTreeMap<Vec<u8>, Vec<u8>>| s.keys().filter(|k| k.contains(&b'r')).count();
    assert_eq!(routers(&store), 1);
    engine.observe(&obs("c", 6.0, router("edge-1", false)), t(6.0), &mut out);
    // Long after the key TTL: the offline router goes, and so does cluster d, spent; c
    // stays for its leader.
    engine.tick(t(200.0), &mut out);
    engine.tick(t(400.0), &mut out);
    apply(&mut store, engine.changes().expect("changes"));
    assert_eq!(store, all(&engine));
    assert_eq!(routers(&store), 0, "the evicted router's entry is a tombstone");
    assert_eq!(engine.clusters(), 1);
    let restored = Engine::from_entries(config(), store.clone()).expect("restore");
    assert_eq!(restored.clusters(), 1);
    assert_eq!(restored.keys(), engine.keys());
}

#[test]
fn a_store_written_when_routers_and_slots_kept_their_deadlines_and_checks_apart_goes_on_alike() {
    let mut engine = Engine::new(config());
    engine.track_changes();
    let mut out = Vec::new();
    let before = [
        (0.0, router("edge-1", true)),
        (0.0, router("edge-2", true)),
        (0.0, has_leader("n1")),
        (3.0, router("edge-1", false)),
        (3.5, router("edge-1", true)),
        (4.0, router("edge-2", false)),
        (4.0, entity(EntityOp::Created)),
        (4.2, entity(EntityOp::Deleted)),
    ];
    for (at, signal) in before {
        engine.observe(&obs(at, signal), t(at), &mut out);
    }
    engine.tick(t(4.5), &mut out);
    let old: BTreeMap<Vec<u8>, Vec<u8>> = engine
        .entries_with_router_schedule_apart()
        .expect("entries")
        .into_iter()
        .map(|(k, v)| (k, v.unwrap_or_default()))
        .collect();
    let apart = |s: &BTreeMap<Vec<u8>, Vec<u8>>| {
        s.keys().filter(|k| matches!(k.first(), Some(b'D' | b'V'))).count()
    };
    assert!(apart(&old) > apart(&all(&engine)), "the old store held routers' deadlines apart");
    assert!(
        old.keys().any(|k| k.first() == Some(&b'V') && k.ends_with(b"h")),
        "and a slot's check"
    );
    let mut restored = Engine::from_entries(config(), old.clone()).expect("restore");
    restored.track_changes();
    // Its first commit removes those entries and writes each router with its check.
    let mut store = old;
    apply(&mut store, restored.changes().expect("changes"));
    assert_eq!(store, all(&restored));
    let after = [(5.0, router("edge-2", true)), (40.0, router("edge-3", true))];
    let (mut expected, mut got) = (Vec::new(), Vec::new());
    for (at, signal) in after {
        engine.observe(&obs(at, signal.clone()), t(at), &mut expected);
        restored.observe(&obs(at, signal), t(at), &mut got);
    }
    for at in [60.0, 120.0, 400.0] {
        engine.tick(t(at), &mut expected);
        restored.tick(t(at), &mut got);
    }
    engine.finish(&mut expected);
    restored.finish(&mut got);
    assert!(!expected.is_empty());
    assert_eq!(got, expected);
    assert_eq!(restored.stats(), engine.stats(), "evictions alike too");
    assert_eq!(restored.keys(), engine.keys());
}

#[test]
fn a_router_whose_check_is_nowhere_is_given_one_a_key_ttl_after_its_last_record() {
    let mut engine = Engine::new(config());
    let mut out = Vec::new();
    engine.observe(&obs(0.0, has_leader("n1")), t(0.0), &mut out);
    engine.observe(&obs(0.0, router("edge-1", true)), t(0.0), &mut out);
    engine.observe(&obs(6.0, router("edge-1", false)), t(6.0), &mut out);
    engine.tick(t(10.0), &mut out);
    // An old store's router value without the `V` entry that held its check.
    let lost: BTreeMap<Vec<u8>, Vec<u8>> = engine
        .entries_with_router_schedule_apart()
        .expect("entries")
        .into_iter()
        .filter(|(k, _)| k.first() != Some(&b'V') || !k.ends_with(b"edge-1"))
        .map(|(k, v)| (k, v.unwrap_or_default()))
        .collect();
    let mut restored = Engine::from_entries(config(), lost).expect("restore");
    let keys = restored.keys();
    // The configured key TTL (30 s) after its last record, not the default's day.
    restored.tick(t(35.0), &mut out);
    assert_eq!(restored.keys(), keys, "not before");
    restored.tick(t(37.0), &mut out);
    assert_eq!(restored.keys(), keys - 1, "the offline router goes at 36 s");
}

/// A record of reporter n1 in cluster c at `at` seconds.
fn obs(at: f64, signal: Signal<'static>) -> Observation<'static> {
    Observation { cluster: Cow::Borrowed("c"), reporter: Cow::Borrowed("n1"), at: t(at), signal }
}

/// The entries of an engine that saw one router, and that router's key.
fn one_router() -> (BTreeMap<Vec<u8>, Vec<u8>>, Vec<u8>) {
    let mut engine = Engine::new(config());
    let mut out = Vec::new();
    engine.observe(&obs(0.0, router("edge-1", true)), t(0.0), &mut out);
    let store = all(&engine);
    let key = store.keys().find(|k| k.ends_with(b"edge-1")).expect("router").clone();
    (store, key)
}

#[test]
fn a_router_value_of_a_newer_format_or_with_bytes_after_its_check_is_refused() {
    let (mut store, key) = one_router();
    let value = store[&key].clone();
    let mut longer = value.clone();
    longer.push(0);
    store.insert(key.clone(), longer);
    let err = Engine::from_entries(config(), store.clone()).err().expect("refused").to_string();
    assert!(err.contains("edge-1") && err.contains("after the key's check"), "{err}");
    let mut newer = value;
    newer[0] = 3;
    store.insert(key, newer);
    let err = Engine::from_entries(config(), store).err().expect("refused").to_string();
    assert!(err.contains("entry format 3"), "{err}");
}

#[test]
fn entries_that_do_not_read_back_are_refused_with_their_key() {
    let (mut store, router_key) = one_router();
    let router_value = store[&router_key].clone();
    store.insert(router_key.clone(), vec![1, 0xff]);
    let err = Engine::from_entries(config(), store.clone()).err().expect("refused").to_string();
    assert!(err.contains("edge-1"), "{err}");
    store.remove(&router_key);
    store.insert(b"Zzz".to_vec(), vec![]);
    let err = Engine::from_entries(config(), store.clone()).err().expect("refused").to_string();
    assert!(err.contains("not an entry key"), "{err}");
    store.remove(&b"Zzz"[..]);
    let core = store.keys().find(|k| k.len() == 5).expect("cluster entry").clone();
    store.remove(&core);
    store.insert(router_key, router_value);
    assert!(Engine::from_entries(config(), store).is_err(), "a router without its cluster");
}

/// Not a test: writes the `entries` fuzz target's seeds (run by `fuzz/make-seeds.py`) into
/// `$HERALD_FUZZ_SEEDS`: the entries of engines after generated logs, each entry's key and
/// value preceded by their lengths (two bytes each, little-endian).
#[test]
#[ignore]
fn write_entries_fuzz_seeds() {
    let Some(dir) = std::env::var_os("HERALD_FUZZ_SEEDS") else { return };
    let runner = proptest::test_runner::TestRunner::deterministic();
    let mut runner = runner;
    for n in 0..16 {
        let steps = proptest::collection::vec(step(), 1..120)
            .new_tree(&mut runner)
            .expect("steps")
            .current();
        let mut engine = Engine::new(config());
        run(&mut engine, &steps, T0, &mut Vec::new());
        let mut bytes = Vec::new();
        for (k, v) in all(&engine) {
            let (Ok(kl), Ok(vl)) = (u16::try_from(k.len()), u16::try_from(v.len())) else {
                continue;
            };
            bytes.extend_from_slice(&kl.to_le_bytes());
            bytes.extend_from_slice(&vl.to_le_bytes());
            bytes.extend_from_slice(&k);
            bytes.extend_from_slice(&v);
        }
        std::fs::write(std::path::Path::new(&dir).join(format!("generated-{n}")), bytes)
            .expect("seed");
    }
}
