//! One test per precise reading of DESIGN §5.4a, named after the reading.

use super::*;

fn ro(read_only: bool) -> Signal<'static> {
    Signal::ReadOnly { read_only }
}

fn suppressed_of(h: &H, kind: EventKind) -> u64 {
    h.engine.suppressed_by_kind().filter(|(_, k, _)| *k == kind).map(|(_, _, n)| n).sum()
}

fn staged(id: &str, op: EntityOp) -> Signal<'static> {
    Signal::StagedEntity {
        event_id: Cow::Owned(id.to_string()),
        op,
        slot: Slot { service: "s".into(), router: "r".into(), host: "".into() },
    }
}

fn commit(id: &str) -> Signal<'static> {
    Signal::Commit { event_id: Cow::Owned(id.to_string()) }
}

// ---- reporters seen ---------------------------------------------------------------------

#[test]
fn reporters_seen_count_whatever_the_namespace_of_their_records() {
    // r1 sees c disconnected. With r1 alone that is "all the others"; every other namespace's
    // reporter joins the others, and one of two is not more than half.
    let others: [(&str, Signal<'static>); 4] = [
        ("cluster", has_leader("r1")),
        ("router", router("x", true)),
        ("terminator", entity(EntityOp::Created)),
        ("entityChange", commit("e1")),
    ];
    for (namespace, signal) in others {
        let mut h = H::new();
        h.at(t(0.0), "r2", signal);
        h.at(t(1.0), "r1", peer("c", false));
        let down = only(&h.all(), EventKind::NodeDown);
        assert!(down.is_empty(), "a {namespace} record's reporter was not counted: {down:?}");
    }
    // A probe is not a reporter of the cluster.
    let mut h = H::new();
    h.at(t(0.0), "herald", probe("n1", true));
    h.at(t(1.0), "r1", peer("c", false));
    assert_eq!(only(&h.all(), EventKind::NodeDown).len(), 1);
}

// ---- atomic records -----------------------------------------------------------------------

#[test]
fn atomic_records_a_new_reporters_first_record_does_not_restart_a_node_down_window() {
    // DESIGN §5.4a's example: B's first record is itself a disconnected report on C, so
    // registering B before applying it must not clear C's down for an instant.
    let mut h = H::new();
    h.at(t(0.0), "A", peer("C", false));
    h.at(t(1.0), "C", has_leader("A"));
    h.at(t(4.0), "B", peer("C", false));
    let down = only(&h.all(), EventKind::NodeDown);
    assert_eq!(down.len(), 1, "{down:?}");
    assert_eq!(down[0].node.as_deref(), Some("C"));
    assert_eq!((down[0].at, down[0].stable_at, down[0].suppressed), (t(0.0), t(10.0), 0));
    assert_eq!(suppressed_of(&h, EventKind::NodeDown), 0);
}

#[test]
fn atomic_records_a_new_reporters_first_is_leaderless_adds_no_revert_to_leader_elected() {
    let mut h = H::new();
    h.at(t(0.0), "B", has_leader("B"));
    h.at(t(0.5), "B", peer("A", false));
    // A is not live: its view does not count, and B alone keeps B the pending leader.
    h.at(t(1.0), "A", leaderless());
    // C joins the others (so A is live again) and says leaderless in the same record: the
    // cluster goes from pending B straight to pending leaderless, never through transition.
    h.at(t(1.5), "C", leaderless());
    let out = h.all();
    let leaderless = only(&out, EventKind::Leaderless);
    assert_eq!(leaderless.len(), 1, "{out:?}");
    assert_eq!((leaderless[0].at, leaderless[0].stable_at), (t(1.5), t(11.5)));
    assert_eq!(leaderless[0].suppressed, 0, "replacing a pending value is not a revert");
    assert_eq!(suppressed_of(&h, EventKind::LeaderElected), 0);
    assert!(only(&out, EventKind::LeaderElected).is_empty());
}

// ---- transition -----------------------------------------------------------------------------

#[test]
fn transition_no_majority_drops_a_pending_leader_as_one_revert_even_if_none_was_emitted() {
    let mut h = H::new();
    h.at(t(0.0), "r1", has_leader("a"));
    h.at(t(1.0), "r2", has_leader("b"));
    assert_eq!(suppressed_of(&h, EventKind::LeaderElected), 1);
    h.at(t(5.0), "r2", has_leader("a"));
    let elected = only(&h.all(), EventKind::LeaderElected);
    assert_eq!(elected.len(), 1);
    assert_eq!((elected[0].at, elected[0].suppressed, elected[0].initial), (t(5.0), 1, true));
}

#[test]
fn transition_no_live_known_view_drops_a_pending_leader_as_one_revert() {
    let mut h = H::new();
    h.at(t(0.0), "r1", has_leader("r1"));
    h.at(t(0.0), "r2", router("x", true));
    // r1 alone says r1; then r2 (the only other) sees r1 disconnected: no live known view.
    h.at(t(1.0), "r2", peer("r1", false));
    assert_eq!(suppressed_of(&h, EventKind::LeaderElected), 1);
    assert!(only(&h.all(), EventKind::LeaderElected).is_empty());
}

#[test]
fn transition_read_only_without_a_live_known_reporter_drops_the_pending_change() {
    let mut h = H::new();
    h.at(t(0.0), "r1", ro(false));
    h.at(t(0.0), "r2", router("x", true));
    h.tick(t(3.0));
    h.at(t(4.0), "r1", ro(true));
    h.at(t(5.0), "r2", peer("r1", false));
    assert_eq!(suppressed_of(&h, EventKind::ReadOnly), 1);
    let out = h.all();
    assert!(only(&out, EventKind::ReadOnly).is_empty(), "{out:?}");
    assert_eq!(only(&out, EventKind::ReadWrite).len(), 1);
}

#[test]
fn transition_a_router_only_not_live_reporters_say_online_drops_the_pending_change() {
    // Never emitted before...
    let mut h = H::new();
    h.at(t(0.0), "r2", has_leader("r2"));
    h.at(t(0.0), "r1", router("x", true));
    h.at(t(1.0), "r2", peer("r1", false));
    assert_eq!(suppressed_of(&h, EventKind::RouterOnline), 1);
    assert!(only(&h.all(), EventKind::RouterOnline).is_empty());
    // ...and emitted before.
    let mut h = H::new();
    h.at(t(0.0), "r2", has_leader("r2"));
    h.at(t(0.0), "r1", router("x", false));
    h.tick(t(11.0));
    h.at(t(12.0), "r1", router("x", true));
    h.at(t(13.0), "r2", peer("r1", false));
    assert_eq!(suppressed_of(&h, EventKind::RouterOnline), 1);
    h.at(t(30.0), "r2", peer("r1", true));
    let online = only(&h.all(), EventKind::RouterOnline);
    assert_eq!((online[0].at, online[0].suppressed), (t(30.0), 1));
}

// ---- pending order ---------------------------------------------------------------------------

#[test]
fn pending_order_own_key_liveness_leader_read_only_routers_split_brain() {
    let p = Params {
        windows: Windows::uniform(ns(2 * SEC)),
        startup_grace: Nanos::ZERO,
        split_window: ns(2 * SEC),
        ..Params::default()
    };
    let mut h = H::with(p);
    h.at(t(0.0), "r1", gained());
    h.at(t(0.0), "r1", ro(true));
    h.at(t(0.0), "r1", router("b", true));
    h.at(t(0.0), "r1", router("a", true));
    h.at(t(0.0), "r2", gained());
    h.at(t(0.0), "r3", has_leader("r1"));
    h.at(t(0.0), "r2", peer("r1", false));
    h.at(t(0.0), "r3", peer("r1", false));
    h.tick(t(10.0));
    // One record makes r1 live again: its claim, view, read-only and routers all return.
    let out = h.at(t(20.0), "r2", peer("r1", true));
    assert!(out.is_empty());
    let out = h.tick(t(22.0));
    assert_eq!(
        kinds(&out),
        [
            "peer.connected",
            "node.up",
            "cluster.leader_elected",
            "cluster.read_only",
            "router.online",
            "router.online",
            "cluster.split_brain"
        ]
    );
    assert!(out.iter().all(|e| (e.at, e.stable_at) == (t(20.0), t(22.0))), "{out:?}");
    assert_eq!(out[4].router.as_deref(), Some("a"));
    assert_eq!(out[5].router.as_deref(), Some("b"));
}

#[test]
fn pending_order_node_liveness_is_by_node_name() {
    let mut h = H::new();
    // Interned in the order zed, abe; emitted down after the grace.
    h.at(t(0.0), "r1", peer("zed", false));
    h.at(t(0.0), "r1", peer("abe", false));
    h.tick(t(11.0));
    // r2 joins the others: one of two is not more than half, for both nodes at once; its own
    // key comes first.
    h.at(t(20.0), "r2", peer("x", true));
    let out = h.tick(t(22.0));
    let order: Vec<String> = out
        .iter()
        .map(|e| {
            format!("{} {}", e.kind.as_str(), e.peer.clone().or(e.node.clone()).unwrap_or_default())
        })
        .collect();
    assert_eq!(order, ["peer.connected x", "node.up abe", "node.up zed"]);
}

// ---- split brain ------------------------------------------------------------------------------

#[test]
fn split_brain_a_candidate_ending_within_the_split_window_is_a_revert_carried_on_the_next() {
    let mut h = H::new();
    h.at(t(0.0), "r1", gained());
    h.at(t(1.0), "r2", gained());
    h.at(t(3.0), "r2", lost());
    assert_eq!(suppressed_of(&h, EventKind::SplitBrain), 1);
    h.at(t(10.0), "r2", gained());
    // Inside the episode, a resolution that does not hold for the window is a revert too.
    h.at(t(20.0), "r2", lost());
    h.at(t(22.0), "r2", gained());
    assert_eq!(suppressed_of(&h, EventKind::SplitBrainResolved), 1);
    h.at(t(30.0), "r2", lost());
    let out = h.all();
    let split = only(&out, EventKind::SplitBrain);
    assert_eq!((split.len(), split[0].at, split[0].stable_at), (1, t(10.0), t(15.0)));
    assert_eq!(split[0].suppressed, 1);
    let resolved = only(&out, EventKind::SplitBrainResolved);
    assert_eq!((resolved.len(), resolved[0].at, resolved[0].stable_at), (1, t(30.0), t(35.0)));
    assert_eq!(resolved[0].suppressed, 1);
}

#[test]
fn split_brain_reporters_and_leaders_are_the_live_claimants_when_stable() {
    let mut h = H::new();
    h.at(t(0.0), "r1", gained());
    h.at(t(0.0), "r2", gained());
    h.at(t(0.0), "r3", gained());
    // r3 stops being live before the split window ends; r1 and r2 still claim.
    h.at(t(1.0), "r1", peer("r3", false));
    h.at(t(1.0), "r2", peer("r3", false));
    let split = only(&h.tick(t(5.0)), EventKind::SplitBrain);
    assert_eq!(split[0].leaders, Some(vec!["r1".to_string(), "r2".into()]));
    assert_eq!(split[0].reporters, split[0].leaders);
    h.at(t(6.0), "r2", lost());
    let resolved = only(&h.all(), EventKind::SplitBrainResolved);
    assert_eq!(resolved[0].reporters, Some(vec!["r1".to_string()]));
    assert_eq!(resolved[0].leaders, None);
}

// ---- peers --------------------------------------------------------------------------------------

#[test]
fn peers_not_member_is_peer_disconnected_for_liveness_and_the_peer_key() {
    use crate::decode::{decode_line, Context, Decoded};
    let ctx = Context::new("c", "unknown");
    let line = r#"{"namespace":"cluster","eventType":"peer.not_member","event_src_id":"r2","timestamp":"2025-01-10T18:00:00Z","peers":[{"id":"r1"},{"id":"r3"}]}"#;
    let Ok(Decoded::Observation(obs)) = decode_line(line.as_bytes(), 1, &ctx) else {
        panic!("not decoded")
    };
    let mut out = Vec::new();
    h_observe(&mut out, &obs);
    assert_eq!(kinds(&out), ["peer.disconnected", "node.down"]);
    assert_eq!((out[0].node.as_deref(), out[0].peer.as_deref()), (Some("r2"), Some("r1")));
    assert_eq!(out[1].node.as_deref(), Some("r1"), "peers[0] only: r3 is not concerned");
}

fn h_observe(out: &mut Vec<ClusterEvent>, obs: &Observation<'_>) {
    let mut engine = Engine::new(EngineConfig::default());
    engine.observe(obs, obs.at, out);
    engine.finish(out);
}

// ---- two-phase entity changes ----------------------------------------------------------------

#[test]
fn two_phase_halves_waiting_at_end_of_input_are_dropped_and_counted_as_ignored() {
    let mut h = H::new();
    h.at(t(0.0), "c1", staged("never-committed", EntityOp::Created));
    h.at(t(1.0), "c1", commit("change-never-seen"));
    h.at(t(2.0), "c1", staged("done", EntityOp::Created));
    h.at(t(2.0), "c1", commit("done"));
    assert_eq!(h.engine.stats().ignored, 0);
    assert!(h.finish().is_empty());
    assert_eq!(h.engine.stats().ignored, 2);
}

#[test]
fn two_phase_halves_waiting_more_than_five_minutes_of_engine_time_are_dropped_and_counted() {
    let mut h = H::new();
    h.at(t(0.0), "c1", staged("rolled-back", EntityOp::Created));
    // Engine time moves on without another entity record: exactly five minutes is not more.
    h.at(t(300.0), "r1", router("x", true));
    assert_eq!(h.engine.stats().ignored, 0);
    h.tick(t(300.001));
    assert_eq!(h.engine.stats().ignored, 1);
    h.at(t(301.0), "c1", commit("rolled-back"));
    assert!(only(&h.all(), EventKind::SpinStarted).is_empty());
    assert_eq!(h.engine.stats().ignored, 2, "the late commit itself waits until the end");
}

// ---- spin --------------------------------------------------------------------------------------

#[test]
fn suppressed_on_spin_stopped_counts_the_records_of_the_spinning_slot_and_is_0_on_spin_started() {
    let cycle = |h: &mut H, at: f64| {
        let a = h.outcome(t(at), "c1", entity(EntityOp::Created));
        let b = h.outcome(t(at + 0.5), "c1", entity(EntityOp::Deleted));
        [a, b]
    };
    let mut h = H::new();
    for i in 0..3 {
        assert_eq!(cycle(&mut h, f64::from(i)), [Outcome::Applied; 2], "not spinning yet");
    }
    assert_eq!(cycle(&mut h, 3.0), [Outcome::Suppressed; 2]);
    h.tick(t(100.0));
    // A second episode: its start carries nothing of the first.
    for i in 0..3 {
        cycle(&mut h, 200.0 + f64::from(i));
    }
    h.at(t(210.0), "c1", entity(EntityOp::Created));
    let out = h.all();
    let started = only(&out, EventKind::SpinStarted);
    let stopped = only(&out, EventKind::SpinStopped);
    assert_eq!(started.iter().map(|e| e.suppressed).collect::<Vec<_>>(), [0, 0]);
    assert_eq!(stopped.iter().map(|e| e.suppressed).collect::<Vec<_>>(), [2, 1]);
}
