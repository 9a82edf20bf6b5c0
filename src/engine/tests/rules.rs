//! One test per rule of DESIGN §5, named after the rule.

use super::*;

// ---- §5.1 time -----------------------------------------------------------------------

#[test]
fn time_engine_time_is_the_latest_record_time_and_never_runs_backwards() {
    let mut h = H::new();
    h.at(t(10.0), "r1", router("x", true));
    assert_eq!(h.engine.now(), Some(t(10.0)));
    // A late record from another reporter does not pull the clock back.
    h.at(t(5.0), "r2", router("y", true));
    assert_eq!(h.engine.now(), Some(t(10.0)));
}

#[test]
fn time_a_window_edge_is_exact_to_the_nanosecond() {
    // Reverting one nanosecond before at + W cancels the change...
    let mut h = H::new();
    h.at(t(0.0), "r1", router("x", true));
    h.at(t(10.0), "r1", router("x", false));
    let before_edge = Timestamp(t(12.0).0 - 1);
    assert!(h.at(before_edge, "r1", router("x", true)).is_empty());
    assert!(only(&h.finish(), EventKind::RouterOffline).is_empty());

    // ...and at exactly at + W the engine is ticked first: the change is already stable.
    let mut h = H::new();
    h.at(t(0.0), "r1", router("x", true));
    h.at(t(10.0), "r1", router("x", false));
    let out = h.at(t(12.0), "r1", router("x", true));
    assert_eq!(kinds(&out), ["router.offline"]);
    assert_eq!((out[0].at, out[0].stable_at), (t(10.0), t(12.0)));
}

#[test]
fn time_finish_runs_past_every_pending_deadline() {
    let mut h = H::new();
    h.at(t(0.0), "r1", router("x", true));
    assert!(h.tick(t(1.0)).is_empty());
    let out = h.finish();
    assert_eq!(kinds(&out), ["router.online"]);
    assert_eq!(out[0].stable_at, t(2.0));
}

#[test]
fn time_tick_emits_with_stable_at_not_when_noticed() {
    let mut h = H::new();
    h.at(t(0.0), "r1", router("x", true));
    let out = h.tick(t(100.0));
    assert_eq!(out[0].stable_at, t(2.0));
}

#[test]
fn time_next_deadline_names_the_earliest_pending_window() {
    let mut h = H::new();
    assert_eq!(h.engine.next_deadline(), None);
    h.at(t(0.0), "r1", router("x", true));
    h.at(t(1.0), "r1", router("y", true));
    assert_eq!(h.engine.next_deadline(), Some(t(2.0)));
}

// ---- §5.2 keys and the stability window -------------------------------------------------

#[test]
fn window_rule_1_a_repeat_of_the_pending_value_does_not_restart_the_window() {
    let mut h = H::new();
    h.at(t(0.0), "r1", router("x", true));
    h.at(t(1.5), "r1", router("x", true));
    let out = h.tick(t(2.0));
    assert_eq!((out[0].at, out[0].stable_at), (t(0.0), t(2.0)));
}

#[test]
fn window_rule_2_a_revert_cancels_and_is_counted_on_the_next_emission() {
    let mut h = H::new();
    h.at(t(0.0), "r1", router("x", true));
    h.tick(t(2.0));
    h.at(t(5.0), "r1", router("x", false));
    h.at(t(6.0), "r1", router("x", true));
    h.at(t(7.0), "r1", router("x", false));
    h.at(t(7.5), "r1", router("x", true));
    assert!(h.tick(t(20.0)).is_empty(), "both flaps were suppressed");
    assert_eq!(h.engine.stats().suppressed, 2);
    h.at(t(30.0), "r1", router("x", false));
    let out = h.tick(t(40.0));
    assert_eq!(kinds(&out), ["router.offline"]);
    assert_eq!(out[0].suppressed, 2);
    assert!(!out[0].initial);
}

#[test]
fn window_rule_3_a_new_candidate_replaces_the_pending_one_uncounted() {
    let mut h = H::new();
    h.at(t(0.0), "r1", has_leader("a"));
    h.at(t(1.0), "r1", has_leader("b"));
    let out = only(&h.finish(), EventKind::NodeHasLeader);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].leader_id.as_deref(), Some("b"));
    assert_eq!((out[0].at, out[0].stable_at, out[0].suppressed), (t(1.0), t(3.0), 0));
    assert_eq!(h.engine.stats().suppressed, 0);
}

#[test]
fn window_startup_grace_a_never_emitted_negative_needs_max_w_grace() {
    let mut h = H::new();
    h.at(t(0.0), "r1", router("x", false));
    assert!(h.tick(t(9.999)).is_empty());
    let out = h.tick(t(10.0));
    assert_eq!(kinds(&out), ["router.offline"]);
    assert_eq!((out[0].at, out[0].stable_at, out[0].initial), (t(0.0), t(10.0), true));

    // A spurious startup "lost" that recovers within the grace is never emitted.
    let mut h = H::new();
    h.at(t(0.0), "r1", leaderless());
    h.at(t(9.0), "r1", has_leader("r1"));
    let out = h.finish();
    assert!(only(&out, EventKind::Leaderless).is_empty());
    assert!(only(&out, EventKind::NodeIsLeaderless).is_empty());
    assert_eq!(only(&out, EventKind::LeaderElected).len(), 1);
}

#[test]
fn window_startup_grace_does_not_apply_to_positive_or_already_emitted_keys() {
    let mut h = H::new();
    h.at(t(0.0), "r1", router("x", true));
    assert_eq!(h.tick(t(2.0))[0].stable_at, t(2.0));
    h.at(t(3.0), "r1", router("x", false));
    assert_eq!(h.tick(t(5.0))[0].stable_at, t(5.0), "emitted before: W, not the grace");
}

#[test]
fn window_startup_grace_is_max_not_sum() {
    let mut h = H::with(Params { windows: Windows::uniform(ns(30 * SEC)), ..Params::default() });
    h.at(t(0.0), "r1", router("x", false));
    assert_eq!(h.finish()[0].stable_at, t(30.0));
}

#[test]
fn window_zero_emits_at_once_on_change_and_still_dedupes() {
    let mut h = H::with(Params {
        windows: Windows::uniform(Nanos::ZERO),
        startup_grace: Nanos::ZERO,
        ..Params::default()
    });
    assert_eq!(kinds(&h.at(t(0.0), "r1", router("x", true))), ["router.online"]);
    assert!(h.at(t(1.0), "r1", router("x", true)).is_empty());
    assert_eq!(kinds(&h.at(t(2.0), "r1", router("x", false))), ["router.offline"]);
}

#[test]
fn window_same_tick_order_is_stable_at_then_at_then_creation() {
    let mut p = Params::default();
    p.windows.router = ns(3 * SEC);
    p.windows.peer = ns(SEC);
    let mut h = H::with(p);
    h.at(t(0.0), "r1", router("late", true)); // due 3.0
    h.at(t(1.0), "r1", peer("r2", true)); // due 2.0
    h.at(t(1.0), "r1", router("z", true)); // due 4.0
    h.at(t(1.0), "r1", router("a", true)); // due 4.0, created after z
    let out = h.tick(t(10.0));
    let subjects: Vec<String> =
        out.iter().map(|e| e.router.clone().or(e.peer.clone()).unwrap_or_default()).collect();
    assert_eq!(subjects, ["r2", "late", "z", "a"]);
}

#[test]
fn window_initial_is_true_only_on_the_first_event_of_a_key() {
    let mut h = H::new();
    h.at(t(0.0), "r1", router("x", true));
    h.at(t(5.0), "r1", router("x", false));
    let out = h.all();
    assert_eq!(out.iter().map(|e| e.initial).collect::<Vec<_>>(), [true, false]);
}

// ---- §5.3 order and staleness -------------------------------------------------------------

#[test]
fn stale_a_record_older_than_the_newest_applied_for_its_reporter_and_key_is_ignored() {
    let mut h = H::new();
    h.at(t(5.0), "r1", peer("r2", true));
    assert_eq!(h.outcome(t(4.0), "r1", peer("r2", false)), Outcome::Stale);
    assert_eq!(h.engine.stats().stale, 1);
    let out = h.finish();
    assert_eq!(kinds(&out), ["peer.connected"]);
    // The same time is not older: it applies.
    let mut h = H::new();
    h.at(t(5.0), "r1", peer("r2", true));
    assert_eq!(h.outcome(t(5.0), "r1", peer("r2", false)), Outcome::Applied);
}

#[test]
fn stale_is_per_reporter_and_key() {
    let mut h = H::new();
    h.at(t(5.0), "r1", router("x", true));
    // Another reporter's older record about the same router, another key of the same reporter.
    assert_eq!(h.outcome(t(4.0), "r2", router("x", true)), Outcome::Applied);
    assert_eq!(h.outcome(t(4.0), "r1", router("y", true)), Outcome::Applied);
    assert_eq!(h.outcome(t(4.0), "r1", has_leader("r1")), Outcome::Applied);
}

#[test]
fn stale_members_are_ordered_by_raft_index_whatever_their_time() {
    let mut h = H::new();
    h.at(t(5.0), "r1", members(7, &["a", "b"]));
    assert_eq!(h.outcome(t(6.0), "r2", members(7, &["a", "b"])), Outcome::Stale, "equal index");
    assert_eq!(h.outcome(t(7.0), "r2", members(6, &["a"])), Outcome::Stale, "lower index");
    assert_eq!(
        h.outcome(t(1.0), "r3", members(8, &["a", "b", "c"])),
        Outcome::Applied,
        "older time, newer index"
    );
    let out = only(&h.all(), EventKind::MembersChanged);
    assert_eq!(out.len(), 2);
    assert_eq!(out[0].added, out[0].members, "the initial event adds every member");
    assert_eq!(out[0].removed.as_deref(), Some(&[][..]));
    assert_eq!(out[1].members.as_deref(), Some(&["a".to_string(), "b".into(), "c".into()][..]));
    assert_eq!(out[1].added.as_deref(), Some(&["c".to_string()][..]));
}

#[test]
fn members_changed_reports_added_and_removed() {
    let mut h = H::new();
    h.at(t(0.0), "r1", members(1, &["b", "a"]));
    h.at(t(5.0), "r1", members(2, &["a", "c"]));
    let out = h.all();
    let last = &out[out.len() - 1];
    assert_eq!(last.members, Some(vec!["a".into(), "c".into()]));
    assert_eq!(last.added, Some(vec!["c".into()]));
    assert_eq!(last.removed, Some(vec!["b".into()]));
}

// ---- §5.4 views, claims, liveness, derived state ---------------------------------------------

#[test]
fn views_come_from_has_leader_and_is_leaderless() {
    let mut h = H::new();
    h.at(t(0.0), "r1", has_leader("r2"));
    h.at(t(5.0), "r1", leaderless());
    let out = h.all();
    let v: Vec<_> = out.iter().filter(|e| e.node.as_deref() == Some("r1")).collect();
    assert_eq!(v[0].kind, EventKind::NodeHasLeader);
    assert_eq!(v[0].leader_id.as_deref(), Some("r2"));
    assert_eq!(v[1].kind, EventKind::NodeIsLeaderless);
    assert_eq!(v[1].stable_at, t(7.0));
}

#[test]
fn views_leadership_gained_sets_the_view_to_self() {
    let mut h = H::new();
    let out = {
        h.at(t(0.0), "r1", gained());
        h.finish()
    };
    let v = only(&out, EventKind::NodeHasLeader);
    assert_eq!((v[0].node.as_deref(), v[0].leader_id.as_deref()), (Some("r1"), Some("r1")));
    assert_eq!(only(&out, EventKind::LeaderElected)[0].leader_id.as_deref(), Some("r1"));
}

#[test]
fn views_leadership_lost_makes_the_view_unknown_until_the_next_view() {
    let mut h = H::new();
    for r in ["r1", "r2", "r3"] {
        h.at(t(0.0), r, has_leader("r1"));
    }
    h.tick(t(3.0));
    // r1 lost leadership: its view no longer counts; r2 and r3 still agree on r1.
    h.at(t(4.0), "r1", lost());
    h.at(t(4.1), "r2", has_leader("r2"));
    // Known views: r2 -> r2, r3 -> r1: no majority, in transition; nothing is emitted.
    let out = h.tick(t(20.0));
    assert!(only(&out, EventKind::LeaderElected).is_empty(), "{out:?}");
    assert!(only(&out, EventKind::NodeIsLeaderless).is_empty(), "lost emits no view event");
    h.at(t(21.0), "r1", has_leader("r2"));
    let out = only(&h.finish(), EventKind::LeaderElected);
    assert_eq!(out[0].leader_id.as_deref(), Some("r2"));
    assert_eq!(out[0].previous.as_deref(), Some("r1"));
    assert_eq!(out[0].reporters, Some(vec!["r1".into(), "r2".into()]));
}

#[test]
fn spurious_startup_lost_and_duplicate_gained_emit_one_leader() {
    // OpenZiti #2684: queued raft observations replayed at startup.
    let mut h = H::new();
    h.at(t(0.0), "c1", gained());
    h.at(t(0.001), "c1", lost());
    h.at(t(0.002), "c1", gained());
    h.at(t(0.003), "c1", gained());
    let out = h.finish();
    assert_eq!(kinds(&out), ["node.has_leader", "cluster.leader_elected"]);
    assert!(out.iter().all(|e| e.initial));
}

#[test]
fn leader_is_x_when_more_than_half_of_the_live_known_views_say_x() {
    let mut h = H::new();
    h.at(t(0.0), "r1", has_leader("r1"));
    h.at(t(0.1), "r2", has_leader("r1"));
    h.at(t(0.2), "r3", has_leader("r3"));
    let out = only(&h.finish(), EventKind::LeaderElected);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].leader_id.as_deref(), Some("r1"));
    assert_eq!(out[0].at, t(0.0), "r1 alone was a majority of one known view");
    assert_eq!(out[0].previous, None);
    assert_eq!(out[0].reporters, Some(vec!["r1".into(), "r2".into()]));
}

#[test]
fn leader_none_when_more_than_half_say_none() {
    let mut h = H::new();
    for r in ["r1", "r2", "r3"] {
        h.at(t(0.0), r, has_leader("r1"));
    }
    h.tick(t(5.0));
    h.at(t(10.0), "r2", leaderless());
    h.at(t(10.5), "r3", leaderless());
    let out = only(&h.finish(), EventKind::Leaderless);
    assert_eq!(out.len(), 1);
    assert_eq!((out[0].at, out[0].stable_at), (t(10.5), t(12.5)));
    assert_eq!(out[0].previous.as_deref(), Some("r1"));
    assert_eq!(out[0].reporters, Some(vec!["r2".into(), "r3".into()]));
}

#[test]
fn leader_transition_without_a_majority_cancels_the_pending_change() {
    let mut h = H::new();
    h.at(t(0.0), "r1", has_leader("a"));
    h.tick(t(5.0));
    h.at(t(10.0), "r1", has_leader("b")); // one reporter: pending b
    h.at(t(10.5), "r2", has_leader("a")); // 1 vs 1: transition
    let out = h.finish();
    assert!(only(&out, EventKind::LeaderElected).is_empty(), "{out:?}");
    assert_eq!(h.engine.stats().suppressed, 1);
}

#[test]
fn leader_previous_skips_leaderless_periods() {
    let mut h = H::new();
    h.at(t(0.0), "r1", has_leader("a"));
    h.at(t(5.0), "r1", leaderless());
    h.at(t(10.0), "r1", has_leader("b"));
    let out: Vec<_> = h
        .all()
        .into_iter()
        .filter(|e| matches!(e.kind, EventKind::LeaderElected | EventKind::Leaderless))
        .collect();
    assert_eq!(
        kinds(&out),
        ["cluster.leader_elected", "cluster.leaderless", "cluster.leader_elected"]
    );
    assert_eq!(out[1].previous.as_deref(), Some("a"));
    assert_eq!(out[2].previous.as_deref(), Some("a"));
}

#[test]
fn liveness_a_reporter_is_not_live_when_more_than_half_of_the_others_say_disconnected() {
    let mut h = H::new();
    for r in ["r1", "r2", "r3"] {
        h.at(t(0.0), r, has_leader("r1"));
    }
    h.tick(t(5.0));
    // r1 is partitioned and keeps claiming; the others lose it and elect r2.
    h.at(t(10.0), "r2", peer("r1", false));
    h.at(t(10.0), "r3", peer("r1", false));
    h.at(t(10.1), "r2", has_leader("r2"));
    h.at(t(10.2), "r3", has_leader("r2"));
    let out = h.finish();
    let elected = only(&out, EventKind::LeaderElected);
    assert_eq!(elected.last().and_then(|e| e.leader_id.as_deref()), Some("r2"));
    assert_eq!(
        elected.last().and_then(|e| e.reporters.clone()),
        Some(vec!["r2".into(), "r3".into()])
    );
    let down = only(&out, EventKind::NodeDown);
    assert_eq!(down.len(), 1);
    assert_eq!((down[0].node.as_deref(), down[0].via), (Some("r1"), Some(Via::Peers)));
    assert_eq!(
        (down[0].at, down[0].stable_at),
        (t(10.0), t(20.0)),
        "first down of a key: max(W, grace)"
    );
}

#[test]
fn liveness_half_is_not_more_than_half() {
    let mut h = H::new();
    for r in ["r1", "r2", "r3"] {
        h.at(t(0.0), r, has_leader("r1"));
    }
    h.at(t(1.0), "r2", peer("r1", false));
    assert!(only(&h.finish(), EventKind::NodeDown).is_empty());
}

#[test]
fn liveness_not_member_counts_as_disconnected() {
    let mut h = H::new();
    h.at(t(0.0), "r2", Signal::Peer { peer: "r1".into(), connected: false });
    // (the OpenZiti decoder maps peer.not_member to connected: false)
    let out = h.finish();
    assert_eq!(only(&out, EventKind::NodeDown).len(), 1, "{out:?}");
}

#[test]
fn liveness_reports_from_reporters_that_are_not_live_still_count() {
    let mut h = H::new();
    // r1 and r2 see each other disconnected; with three reporters neither has a majority...
    h.at(t(0.0), "r3", has_leader("r3"));
    h.at(t(0.0), "r1", peer("r2", false));
    h.at(t(0.0), "r2", peer("r1", false));
    h.at(t(0.0), "r3", peer("r1", false));
    // r1 is now not live (r2 and r3), yet its report about r2 still counts with r3's.
    h.at(t(0.0), "r3", peer("r2", false));
    let down: Vec<_> =
        only(&h.finish(), EventKind::NodeDown).into_iter().filter_map(|e| e.node).collect();
    assert_eq!(down, ["r1", "r2"]);
}

#[test]
fn liveness_peers_up_only_after_an_emitted_down() {
    let mut h = H::new();
    h.at(t(0.0), "r2", peer("r1", false));
    h.at(t(5.0), "r2", peer("r1", true));
    let out = h.finish();
    assert!(only(&out, EventKind::NodeDown).is_empty(), "cleared within the grace: cancelled");
    assert!(only(&out, EventKind::NodeUp).is_empty(), "no up for a down never emitted");

    let mut h = H::new();
    h.at(t(0.0), "r2", peer("r1", false));
    h.tick(t(11.0));
    h.at(t(20.0), "r2", peer("r1", true));
    let out = h.finish();
    let up = only(&out, EventKind::NodeUp);
    assert_eq!((up[0].via, up[0].at, up[0].stable_at), (Some(Via::Peers), t(20.0), t(22.0)));
}

#[test]
fn liveness_probe_down_at_the_kth_failure_dated_from_the_first() {
    let mut h = H::new();
    h.at(t(0.0), "herald", probe("n1", false));
    let out = h.at(t(1.0), "herald", probe("n1", false));
    assert_eq!(kinds(&out), ["node.down"], "no window, no grace");
    assert_eq!((out[0].at, out[0].stable_at, out[0].initial), (t(0.0), t(1.0), true));
    assert_eq!(out[0].via, Some(Via::Probe));
    assert!(h.at(t(2.0), "herald", probe("n1", false)).is_empty());
    let out = h.at(t(3.0), "herald", probe("n1", true));
    assert_eq!(kinds(&out), ["node.up"]);
    assert_eq!((out[0].at, out[0].stable_at, out[0].initial), (t(3.0), t(3.0), false));
}

#[test]
fn liveness_probe_first_success_is_the_initial_state() {
    let mut h = H::new();
    let out = h.at(t(0.0), "herald", probe("n1", true));
    assert_eq!(kinds(&out), ["node.up"]);
    assert!(out[0].initial);
    assert!(h.at(t(1.0), "herald", probe("n1", true)).is_empty());
}

#[test]
fn liveness_probe_down_makes_a_reporter_not_live() {
    let mut h = H::new();
    h.at(t(0.0), "r1", has_leader("r1"));
    h.at(t(0.0), "r2", has_leader("r1"));
    h.at(t(0.0), "r3", has_leader("r1"));
    h.tick(t(3.0));
    h.at(t(4.0), "herald", probe("r1", false));
    h.at(t(5.0), "herald", probe("r1", false));
    h.at(t(5.5), "r2", has_leader("r2"));
    // Live known views: r2 -> r2, r3 -> r1: transition, until r3 follows.
    h.at(t(6.0), "r3", has_leader("r2"));
    let out = only(&h.finish(), EventKind::LeaderElected);
    assert_eq!(out.last().and_then(|e| e.leader_id.as_deref()), Some("r2"));
    assert_eq!(out.last().map(|e| e.at), Some(t(6.0)));
}

#[test]
fn read_only_when_more_than_half_of_the_live_known_say_ro() {
    let mut h = H::new();
    h.at(t(0.0), "r1", Signal::ReadOnly { read_only: false });
    h.at(t(0.0), "r2", Signal::ReadOnly { read_only: false });
    h.tick(t(3.0));
    h.at(t(4.0), "r1", Signal::ReadOnly { read_only: true });
    assert!(only(&h.tick(t(10.0)), EventKind::ReadOnly).is_empty(), "1 of 2 is not more than half");
    h.at(t(11.0), "r2", Signal::ReadOnly { read_only: true });
    let out = h.finish();
    let ro = only(&out, EventKind::ReadOnly);
    assert_eq!((ro[0].at, ro[0].stable_at, ro[0].initial), (t(11.0), t(13.0), false));
}

#[test]
fn read_write_is_the_first_stable_state_when_reporters_say_rw() {
    let mut h = H::new();
    h.at(t(0.0), "r1", Signal::ReadOnly { read_only: false });
    let out = h.finish();
    assert_eq!(kinds(&out), ["cluster.read_write"]);
    assert!(out[0].initial);
}

#[test]
fn routers_online_while_one_live_reporter_says_online_offline_when_all_say_offline() {
    let mut h = H::new();
    h.at(t(0.0), "r1", router("x", true));
    h.at(t(0.0), "r2", router("x", true));
    h.tick(t(3.0));
    h.at(t(4.0), "r1", router("x", false));
    assert!(h.tick(t(10.0)).is_empty(), "r2 still sees it online");
    h.at(t(11.0), "r2", router("x", false));
    let out = h.finish();
    assert_eq!(kinds(&out), ["router.offline"]);
    assert_eq!(out[0].at, t(11.0));
}

#[test]
fn split_brain_two_live_claims_for_the_split_window() {
    let mut h = H::new();
    h.at(t(0.0), "r1", gained());
    h.at(t(1.0), "r2", gained());
    let out = h.tick(t(5.999));
    assert!(only(&out, EventKind::SplitBrain).is_empty());
    let out = only(&h.tick(t(6.0)), EventKind::SplitBrain);
    assert_eq!(out.len(), 1);
    let e = &out[0];
    assert_eq!((e.at, e.stable_at, e.initial), (t(1.0), t(6.0), false));
    assert_eq!(e.leaders, Some(vec!["r1".into(), "r2".into()]));
    // Once per episode.
    h.at(t(7.0), "r3", gained());
    assert!(only(&h.tick(t(30.0)), EventKind::SplitBrain).is_empty());
    // Resolved when at most one claims for the split window, dated when the claims fell.
    h.at(t(31.0), "r2", lost());
    h.at(t(32.0), "r3", lost());
    let out = only(&h.finish(), EventKind::SplitBrainResolved);
    assert_eq!((out[0].at, out[0].stable_at, out[0].initial), (t(32.0), t(37.0), false));
}

#[test]
fn split_brain_shorter_than_the_split_window_is_suppressed() {
    let mut h = H::new();
    h.at(t(0.0), "r1", gained());
    h.at(t(1.0), "r2", gained());
    h.at(t(5.9), "r1", lost());
    let out = h.finish();
    assert!(only(&out, EventKind::SplitBrain).is_empty());
}

#[test]
fn split_brain_counts_only_live_claims() {
    let mut h = H::new();
    h.at(t(0.0), "r1", gained());
    h.at(t(0.0), "r3", peer("r1", false));
    h.at(t(0.0), "r2", peer("r1", false));
    h.at(t(1.0), "r2", gained());
    assert!(only(&h.finish(), EventKind::SplitBrain).is_empty());
}

// ---- §5.5 spin detection --------------------------------------------------------------------

fn spin_cycle(h: &mut H, at: f64) -> Vec<ClusterEvent> {
    let mut out = h.at(t(at), "c1", entity(EntityOp::Created));
    out.extend(h.at(t(at + 0.5), "c1", entity(EntityOp::Deleted)));
    out
}

#[test]
fn spin_n_cycles_within_t_start_an_episode_at_the_nth_completion() {
    let mut h = H::new();
    assert!(spin_cycle(&mut h, 0.0).is_empty());
    assert!(spin_cycle(&mut h, 10.0).is_empty());
    let out = spin_cycle(&mut h, 20.0);
    assert_eq!(kinds(&out), ["terminator.spin_started"]);
    let e = &out[0];
    assert_eq!((e.at, e.stable_at, e.cycles, e.initial), (t(20.5), t(20.5), Some(3), false));
    assert_eq!(
        (e.service.as_deref(), e.router.as_deref(), e.host.as_deref()),
        (Some("svc"), Some("rtr"), Some("h"))
    );
}

#[test]
fn spin_completions_more_than_t_apart_do_not_spin() {
    let mut h = H::new();
    spin_cycle(&mut h, 0.0);
    spin_cycle(&mut h, 30.0);
    assert!(spin_cycle(&mut h, 60.001).is_empty(), "first completion 0.5, third 60.501: over T");
}

#[test]
fn spin_stops_after_t_without_a_completion_counting_the_episode() {
    let mut h = H::new();
    for i in 0..5 {
        spin_cycle(&mut h, f64::from(i));
    }
    let out = h.finish();
    let stop = only(&out, EventKind::SpinStopped);
    assert_eq!(stop.len(), 1);
    assert_eq!((stop[0].at, stop[0].stable_at, stop[0].cycles), (t(64.5), t(64.5), Some(5)));
    assert_eq!(stop[0].suppressed, 4, "records while spinning are counted as suppressed");
}

#[test]
fn spin_created_and_deleted_records_are_never_events() {
    let mut h = H::new();
    spin_cycle(&mut h, 0.0);
    assert!(h.finish().is_empty());
}

#[test]
fn spin_staged_entity_changes_apply_only_once_committed() {
    let mut h = H::new();
    let staged = |op, id: &str| Signal::StagedEntity {
        event_id: Cow::Owned(id.to_string()),
        op,
        slot: Slot { service: "s".into(), router: "r".into(), host: "".into() },
    };
    for i in 0..3 {
        let at = f64::from(i);
        h.at(t(at), "c1", staged(EntityOp::Created, &format!("c{i}")));
        h.at(t(at + 0.1), "c1", staged(EntityOp::Deleted, &format!("d{i}")));
    }
    assert!(h.tick(t(10.0)).is_empty(), "nothing committed yet");
    let commit = |id: &str| Signal::Commit { event_id: Cow::Owned(id.to_string()) };
    let mut out = Vec::new();
    for i in 0..3 {
        out.extend(h.at(t(10.0), "c1", commit(&format!("c{i}"))));
        out.extend(h.at(t(10.0), "c1", commit(&format!("d{i}"))));
    }
    assert_eq!(kinds(&out), ["terminator.spin_started"]);
    assert_eq!(out[0].host.as_deref(), Some(""));
}

#[test]
fn spin_a_commit_may_arrive_before_its_change() {
    let mut h = H::new();
    let staged = |op, id: &str| Signal::StagedEntity {
        event_id: Cow::Owned(id.to_string()),
        op,
        slot: Slot { service: "s".into(), router: "r".into(), host: "h".into() },
    };
    let commit = |id: &str| Signal::Commit { event_id: Cow::Owned(id.to_string()) };
    let mut out = Vec::new();
    for i in 0..3 {
        let at = f64::from(i);
        out.extend(h.at(t(at), "c1", commit(&format!("c{i}"))));
        out.extend(h.at(t(at), "c1", staged(EntityOp::Created, &format!("c{i}"))));
        out.extend(h.at(t(at + 0.1), "c1", staged(EntityOp::Deleted, &format!("d{i}"))));
        out.extend(h.at(t(at + 0.1), "c1", commit(&format!("d{i}"))));
    }
    assert_eq!(kinds(&out), ["terminator.spin_started"]);
}

#[test]
fn spin_halves_that_never_meet_are_dropped_and_counted() {
    let mut h = H::new();
    let staged = Signal::StagedEntity {
        event_id: "rolled-back".into(),
        op: EntityOp::Created,
        slot: Slot { service: "s".into(), router: "r".into(), host: "".into() },
    };
    h.at(t(0.0), "c1", staged);
    h.at(t(0.0), "c1", Signal::Commit { event_id: "a-service-change".into() });
    assert_eq!(h.engine.stats().ignored, 0);
    h.at(t(301.0), "c1", Signal::Commit { event_id: "late".into() });
    assert_eq!(h.engine.stats().ignored, 2, "both waited more than five minutes");
    // The dropped change no longer completes when its commit finally shows up.
    h.at(t(302.0), "c1", Signal::Commit { event_id: "rolled-back".into() });
    assert!(h.finish().is_empty());
}

// ---- §5.6 defaults, ids, eviction -----------------------------------------------------------

#[test]
fn defaults_are_those_of_the_design() {
    let p = Params::default();
    assert_eq!(p.windows, Windows::uniform(ns(2 * SEC)));
    assert_eq!(p.startup_grace, ns(10 * SEC));
    assert_eq!(p.split_window, ns(5 * SEC));
    assert_eq!((p.spin_cycles, p.spin_period), (3, ns(60 * SEC)));
    assert_eq!(p.key_ttl, ns(24 * 3600 * SEC));
}

#[test]
fn ids_are_deterministic_and_cover_cluster_kind_subject_and_at() {
    let run = || {
        let mut h = H::new();
        h.at(t(0.0), "r1", peer("r2", true));
        h.at(t(0.0), "r2", peer("r1", true));
        h.finish()
    };
    let (a, b) = (run(), run());
    assert_eq!(a, b);
    assert_ne!(a[0].id, a[1].id, "the subject (node, peer) is part of the id");
    assert_eq!(
        a[0].id,
        crate::model::event_id("c", EventKind::PeerConnected, &["r1", "r2"], t(0.0))
    );
}

#[test]
fn eviction_a_negative_key_without_records_for_key_ttl_is_evicted() {
    let mut h = H::with(Params { key_ttl: ns(100 * SEC), ..Params::default() });
    h.at(t(0.0), "r1", router("gone", false));
    h.at(t(0.0), "r1", router("here", true));
    h.tick(t(50.0));
    assert!(h.engine.take_evictions().is_empty());
    h.tick(t(100.0));
    let ev = h.engine.take_evictions();
    assert_eq!(ev.len(), 1);
    assert_eq!((ev[0].key, ev[0].subject.clone()), ("router", vec!["gone".to_string()]));
    // A later record starts the key afresh.
    h.at(t(200.0), "r1", router("gone", true));
    let out = h.finish();
    assert_eq!(out.last().map(|e| (e.kind, e.initial)), Some((EventKind::RouterOnline, true)));
}

#[test]
fn eviction_a_quiet_slot_goes_a_spinning_one_stays() {
    let mut h = H::with(Params { key_ttl: ns(10 * SEC), ..Params::default() });
    spin_cycle(&mut h, 0.0);
    h.tick(t(11.0));
    assert_eq!(h.engine.take_evictions().len(), 1);
}

#[test]
fn clusters_are_independent() {
    let mut h = H::new();
    let obs = |cluster: &'static str, leader: &'static str| Observation {
        cluster: Cow::Borrowed(cluster),
        reporter: Cow::Borrowed("r1"),
        at: t(0.0),
        signal: has_leader(leader),
    };
    let mut out = Vec::new();
    h.engine.observe(&obs("a", "x"), t(0.0), &mut out);
    h.engine.observe(&obs("b", "y"), t(0.0), &mut out);
    h.engine.finish(&mut out);
    let leaders: Vec<_> = only(&out, EventKind::LeaderElected)
        .into_iter()
        .map(|e| (e.cluster, e.leader_id.unwrap_or_default()))
        .collect();
    assert_eq!(leaders, [("a".to_string(), "x".to_string()), ("b".into(), "y".into())]);
}

#[test]
fn per_cluster_params_override_the_defaults() {
    let mut cfg = EngineConfig::default();
    let mut fast = Params::default();
    fast.windows.router = ns(SEC / 2);
    cfg.clusters.insert("c".into(), fast);
    let mut h = H { engine: Engine::new(cfg), log: Vec::new() };
    h.at(t(0.0), "r1", router("x", true));
    assert_eq!(h.finish()[0].stable_at, t(0.5));
}
