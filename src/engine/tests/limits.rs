//! The caps on what input can create, and letting spent clusters go (DESIGN §5.2).

use super::*;

fn limited(max_clusters: usize, max_keys: u64) -> H {
    let limits = Limits { max_clusters, max_keys };
    H { engine: Engine::new(EngineConfig { limits, ..Default::default() }), log: Vec::new() }
}

fn in_cluster(h: &mut H, cluster: &str, at: Timestamp, signal: Signal<'static>) -> Outcome {
    let obs = Observation {
        cluster: Cow::Owned(cluster.into()),
        reporter: Cow::Borrowed("ctrl1"),
        at,
        signal,
    };
    let mut out = Vec::new();
    let outcome = h.engine.observe(&obs, at, &mut out);
    h.log.extend(out);
    outcome
}

#[test]
fn records_of_clusters_beyond_max_clusters_are_refused_and_counted() {
    let mut h = limited(3, 1_000);
    for i in 0..10 {
        let outcome = in_cluster(&mut h, &format!("c{i}"), t(i as f64), has_leader("ctrl1"));
        assert_eq!(outcome, if i < 3 { Outcome::Applied } else { Outcome::OverLimit }, "c{i}");
    }
    assert_eq!(h.engine.clusters(), 3);
    assert_eq!(h.engine.stats().over_limit, 7);
    // A cluster held keeps working.
    assert_eq!(in_cluster(&mut h, "c1", t(20.0), leaderless()), Outcome::Applied);
    let events = h.all();
    assert!(events.iter().all(|e| ["c0", "c1", "c2"].contains(&e.cluster.as_str())));
}

#[test]
fn the_cluster_cap_is_reported_once_not_per_refused_record() {
    let mut h = limited(1, 1_000);
    in_cluster(&mut h, "a", t(0.0), has_leader("ctrl1"));
    for i in 0..100 {
        in_cluster(&mut h, &format!("new{i}"), t(1.0), has_leader("ctrl1"));
    }
    let refusals = h.engine.take_refusals();
    assert_eq!(refusals, [Refusal { cluster: "new0".into(), limit: Limit::Clusters(1) }]);
    assert!(h.engine.take_refusals().is_empty());
}

#[test]
fn records_that_would_create_a_key_beyond_max_keys_are_refused_and_updates_still_apply() {
    // Reporter ctrl1's view and the cluster leader: two keys.
    let mut h = limited(10, 4);
    assert_eq!(h.outcome(t(0.0), "ctrl1", has_leader("ctrl1")), Outcome::Applied);
    h.tick(t(3.0));
    assert_eq!(h.engine.keys(), 2);
    assert_eq!(h.outcome(t(4.0), "ctrl1", router("r1", true)), Outcome::Applied);
    assert_eq!(h.outcome(t(4.0), "ctrl1", router("r2", true)), Outcome::Applied);
    assert_eq!(h.engine.keys(), 4);
    assert_eq!(h.outcome(t(5.0), "ctrl1", router("r3", true)), Outcome::OverLimit);
    assert_eq!(h.outcome(t(5.0), "ctrl2", has_leader("ctrl1")), Outcome::OverLimit);
    // What exists is updated whatever the cap.
    assert_eq!(h.outcome(t(6.0), "ctrl1", router("r1", false)), Outcome::Applied);
    assert_eq!(h.engine.stats().over_limit, 2);
    let refusals = h.engine.take_refusals();
    assert_eq!(refusals, [Refusal { cluster: "c".into(), limit: Limit::Keys(4) }]);
    let events = h.all();
    assert!(events.iter().all(|e| e.router.as_deref() != Some("r3")));
    assert_eq!(only(&events, EventKind::RouterOffline).len(), 1);
}

#[test]
fn a_refused_record_does_not_move_engine_time() {
    let mut h = limited(1, 1_000);
    in_cluster(&mut h, "a", t(0.0), has_leader("ctrl1"));
    assert_eq!(in_cluster(&mut h, "b", t(100.0), has_leader("ctrl1")), Outcome::OverLimit);
    assert_eq!(h.engine.now(), Some(t(0.0)));
}

#[test]
fn a_spent_cluster_is_removed_with_its_names_and_comes_back_afresh() {
    let p = Params { key_ttl: Nanos(60 * SEC), ..Params::default() };
    let mut h = H::with(p);
    h.at(t(0.0), "ctrl1", router("r1", false));
    h.tick(t(20.0));
    assert_eq!(only(&h.log, EventKind::RouterOffline).len(), 1);
    assert_eq!((h.engine.clusters(), h.engine.keys()), (1, 1));
    // The router is evicted after the TTL; the cluster, spent, goes at its own check.
    h.tick(t(61.0));
    h.tick(t(200.0));
    assert_eq!((h.engine.clusters(), h.engine.keys()), (0, 0));
    let evicted = h.engine.take_evictions();
    let what: Vec<&str> = evicted.iter().map(|e| e.key).collect();
    assert_eq!(what, ["router", "cluster"]);
    // A cluster that comes back starts afresh: its first state is initial again.
    h.at(t(300.0), "ctrl1", router("r1", false));
    h.tick(t(320.0));
    let offline = only(&h.log, EventKind::RouterOffline);
    assert_eq!(offline.len(), 2);
    assert!(offline[1].initial);
    assert_eq!(h.engine.clusters(), 1);
}

#[test]
fn a_cluster_with_a_live_key_is_not_removed() {
    let p = Params { key_ttl: Nanos(60 * SEC), ..Params::default() };
    let mut h = H::with(p);
    h.at(t(0.0), "ctrl1", has_leader("ctrl1"));
    h.tick(t(1_000.0));
    assert_eq!(h.engine.clusters(), 1);
    assert!(h.engine.take_evictions().is_empty());
}

#[test]
fn a_cluster_whose_membership_was_emitted_is_not_removed() {
    let p = Params { key_ttl: Nanos(60 * SEC), ..Params::default() };
    let mut h = H::with(p);
    h.at(t(0.0), "ctrl1", members(1, &["ctrl1", "ctrl2"]));
    h.tick(t(1_000.0));
    assert_eq!(only(&h.log, EventKind::MembersChanged).len(), 1);
    assert_eq!(h.engine.clusters(), 1);
}

#[test]
fn a_snapshot_keeps_the_caps_count_and_never_reuses_a_removed_clusters_index() {
    let p = Params { key_ttl: Nanos(60 * SEC), ..Params::default() };
    let mut h = H::with(p);
    h.at(t(0.0), "ctrl1", router("r1", false));
    let obs = Observation {
        cluster: Cow::Borrowed("other"),
        reporter: Cow::Borrowed("ctrl1"),
        at: t(0.0),
        signal: has_leader("ctrl1"),
    };
    h.engine.observe(&obs, t(0.0), &mut Vec::new());
    // The router goes after the TTL, its spent cluster at the cluster's next check.
    h.tick(t(100.0));
    h.tick(t(500.0));
    assert_eq!(h.engine.clusters(), 1);
    let keys = h.engine.keys();
    let bytes = h.engine.snapshot().expect("snapshot");
    let config = EngineConfig { defaults: p, ..Default::default() };
    let restored = Engine::restore(config, &bytes).expect("restore");
    assert_eq!((restored.clusters(), restored.keys()), (1, keys));
    assert_eq!(restored.next_cluster, 2);
}
