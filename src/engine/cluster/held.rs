//! What a cluster holds (DESIGN §5.2): its keys, for the caps on what input can create; when
//! it holds nothing worth keeping; its stable state, for the view a restart shows; and a
//! check that every node id it holds is one its interner knows.

use super::key::{slot_key, StateKey};
use super::names::NodeId;
use super::values::ReportedView;
use super::Cluster;
use crate::engine::window::{StabilityWindow, StateValue};
use crate::model::{ClusterEvent, EventKind, Observation, Signal, Timestamp};

fn holds<V: StateValue>(w: &StabilityWindow<V>) -> bool {
    w.emitted().is_some() || w.pending().is_some()
}

impl Cluster {
    /// The state keys this cluster holds: one per entity (view, peer link, router, node,
    /// slot), and each cluster-level key (leader, read-only, members, split brain) once it
    /// has a value, emitted or pending.
    pub fn keys(&self) -> u64 {
        let cluster_level =
            [holds(&self.leader), holds(&self.read_only), holds(&self.members), self.split.holds()]
                .into_iter()
                .filter(|h| *h)
                .count();
        let per_entity = self.views.len()
            + self.peers.len()
            + self.routers.len()
            + self.nodes.len()
            + self.slots.len();
        (per_entity + cluster_level) as u64
    }

    /// Whether applying `obs` could create a key (or a reporter, whose keys follow): what a
    /// cluster at the key cap refuses. A record that only updates what exists is applied
    /// whatever the cap, so a cluster at the cap keeps working for what it already holds.
    /// Liveness keys derived from peer records are not foreseen here: they can take the
    /// total past the cap by the few nodes one record names.
    pub fn would_create_key(&self, obs: &Observation<'_>) -> bool {
        if let Signal::NodeCheck { node, .. } = &obs.signal {
            return self.names.get(node).is_none_or(|n| !self.nodes.contains_key(&n));
        }
        let Some(r) = self.names.get(&obs.reporter).filter(|r| self.reporter_state.contains_key(r))
        else {
            return true;
        };
        match &obs.signal {
            Signal::View { .. } | Signal::SelfLeader { is_leader: true } => {
                !self.views.contains_key(&r)
            }
            Signal::Peer { peer, .. } => {
                self.names.get(peer).is_none_or(|p| !self.peers.contains_key(&(r, p)))
            }
            Signal::Router { router, .. } => !self.routers.contains_key(router),
            Signal::Entity { slot, .. } | Signal::StagedEntity { slot, .. } => {
                !self.slots.contains_key(slot_key(slot).as_str())
            }
            Signal::SelfLeader { is_leader: false }
            | Signal::Members { .. }
            | Signal::ReadOnly { .. }
            | Signal::Commit { .. }
            | Signal::NodeCheck { .. } => false,
        }
    }

    /// Nothing left worth keeping: every per-entity key evicted, nothing pending, no half of
    /// a two-phase change waiting, no record for the key TTL, and every cluster-level key
    /// none or negative (leaderless, read-only, no split) — the eviction rule of DESIGN §5.2
    /// applied to the keys a cluster has once. A membership list is not negative: a cluster
    /// that emitted one stays. What a spent cluster's keys last emitted goes with it: a
    /// cluster that comes back starts afresh.
    pub fn is_spent(&self, now: Timestamp) -> bool {
        self.views.is_empty()
            && self.peers.is_empty()
            && self.routers.is_empty()
            && self.nodes.is_empty()
            && self.slots.is_empty()
            && self.staging.is_empty()
            && self.leader.pending().is_none()
            && self.read_only.pending().is_none()
            && self.members.pending().is_none()
            && self.split.is_settled()
            && !self.split.is_active()
            && self.leader.emitted().is_none_or(|v| v.is_negative())
            && self.read_only.emitted().is_none_or(|v| v.is_negative())
            && self.members.emitted().is_none()
            && self.last_record.saturating_add(self.params.key_ttl) <= now
    }

    /// The stable state: one event per key with an emitted value, as the event that emitted
    /// it would show it (subject, leader, members, `via`). Times are not kept: what matters
    /// to the view is the state. Transitions are counted apart ([`Cluster::emitted_by_kind`]).
    pub fn stable_events(&self) -> Vec<ClusterEvent> {
        let mut out = Vec::new();
        let event =
            |kind: EventKind| ClusterEvent::new(kind, &self.name, Timestamp(0), Timestamp(0));
        let name = |id: NodeId| self.names.name(id).to_string();
        let mut push = |key: StateKey, e: ClusterEvent| {
            if !self.hidden.contains(&key) {
                out.push(key.stamp(e, &self.names))
            }
        };
        if let Some(v) = self.leader.emitted() {
            let mut e = event(v.kind());
            e.leader_id = v.0.map(name);
            push(StateKey::Leader, e);
        }
        if let Some(v) = self.read_only.emitted() {
            push(StateKey::ReadOnly, event(v.kind()));
        }
        if let Some(v) = self.members.emitted() {
            let mut e = event(EventKind::MembersChanged);
            e.members = Some(self.names.names_of(v.0.iter().copied()));
            push(StateKey::Members, e);
        }
        if self.split.is_active() {
            push(StateKey::SplitBrain, event(EventKind::SplitBrain));
        }
        let mut views: Vec<_> = self.views.iter().collect();
        views.sort_by_key(|(n, _)| self.names.name(**n));
        for (n, v) in views {
            if let Some(value) = v.window.emitted() {
                let mut e = event(value.kind());
                e.leader_id = value.0.map(name);
                push(StateKey::LeaderView(*n), e);
            }
        }
        for ((n, p), link) in &self.peers {
            if let Some(value) = link.window.emitted() {
                push(StateKey::Peer(*n, *p), event(value.kind()));
            }
        }
        for (r, router) in &self.routers {
            if let Some(value) = router.window.emitted() {
                let e = event(value.kind());
                push(StateKey::Router(r.clone()), e);
            }
        }
        for (n, node) in &self.nodes {
            if let Some(value) = node.window.emitted() {
                let mut e = event(value.kind());
                e.via = Some(value.via);
                push(StateKey::Alive(*n), e);
            }
        }
        for (s, slot) in &self.slots {
            if slot.spinning {
                push(StateKey::Slot(s.clone()), event(EventKind::SpinStarted));
            }
        }
        out
    }

    /// The first node id held anywhere that the interner does not know: only a corrupt
    /// snapshot can hold one, and restoring refuses it rather than name a node `""`.
    pub fn unknown_node(&self) -> Option<NodeId> {
        let known = |id: &NodeId| self.names.knows(*id);
        let leader = |v: Option<NodeId>| v.into_iter();
        let views = self.reporter_state.values().filter_map(|r| match r.view {
            ReportedView::Known(l) => l,
            ReportedView::Unknown => None,
        });
        let members = self
            .members
            .emitted()
            .into_iter()
            .chain(self.members.pending().map(|p| &p.value))
            .flat_map(|m| m.0.iter().copied());
        let windows = self
            .leader
            .emitted()
            .and_then(|l| l.0)
            .into_iter()
            .chain(self.leader.pending().and_then(|p| p.value.0))
            .chain(self.views.values().flat_map(|v| {
                leader(v.window.emitted().and_then(|l| l.0))
                    .chain(v.window.pending().and_then(|p| p.value.0))
            }));
        self.reporters
            .iter()
            .copied()
            .chain(self.reporter_state.keys().copied())
            .chain(views)
            .chain(members)
            .chain(windows)
            .chain(self.last_leader)
            .chain(self.views.keys().copied())
            .chain(self.peers.keys().flat_map(|(n, p)| [*n, *p]))
            .chain(self.disconnected_by.keys().copied())
            .chain(self.nodes.keys().copied())
            .chain(self.routers.values().flat_map(|r| r.reports.iter().map(|(n, _, _)| *n)))
            .chain(self.hidden.iter().flat_map(|k| match k {
                StateKey::LeaderView(n) | StateKey::Alive(n) => vec![*n],
                StateKey::Peer(n, p) => vec![*n, *p],
                _ => Vec::new(),
            }))
            .find(|id| !known(id))
    }
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;

    use super::*;
    use crate::engine::{Engine, EngineConfig, Params, SnapshotError};

    #[test]
    fn a_snapshot_holding_a_node_id_without_a_name_is_refused() {
        let mut engine = Engine::new(EngineConfig::default());
        let obs = Observation {
            cluster: Cow::Borrowed("c"),
            reporter: Cow::Borrowed("ctrl1"),
            at: Timestamp(0),
            signal: Signal::View { leader: Some(Cow::Borrowed("ctrl2")) },
        };
        engine.observe(&obs, Timestamp(0), &mut Vec::new());
        let cluster = engine.clusters.values_mut().next().expect("one cluster");
        assert_eq!(cluster.unknown_node(), None);
        // Names lost, ids kept: what a corrupt snapshot would hold.
        cluster.names = Default::default();
        assert!(cluster.unknown_node().is_some());
        let bytes = engine.snapshot().expect("snapshot");
        match Engine::restore(EngineConfig::default(), &bytes) {
            Err(SnapshotError::Corrupt(why)) => assert!(why.contains("no name"), "{why}"),
            Err(e) => panic!("{e}"),
            Ok(_) => panic!("a snapshot with unnamed node ids was accepted"),
        }
    }

    #[test]
    fn a_cluster_counts_its_per_entity_keys_and_its_cluster_keys_once_they_hold_a_value() {
        let mut c = Cluster::new("c".into(), 0, Params::default());
        assert_eq!(c.keys(), 0);
        let mut sched = crate::engine::schedule::Schedule::new();
        let obs = Observation {
            cluster: Cow::Borrowed("c"),
            reporter: Cow::Borrowed("ctrl1"),
            at: Timestamp(0),
            signal: Signal::View { leader: Some(Cow::Borrowed("ctrl1")) },
        };
        assert!(c.would_create_key(&obs));
        c.apply(&obs, &mut sched);
        // ctrl1's view and the pending cluster leader.
        assert_eq!(c.keys(), 2);
        assert!(!c.would_create_key(&obs));
    }
}
