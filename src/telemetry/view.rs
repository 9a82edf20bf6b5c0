//! The current stable view of every cluster, kept from the events herald emitted.
//!
//! It answers `/state` and is what the Prometheus gauges are rendered from at each scrape. It
//! is built only from emitted events (and the engine's evictions), so what a dashboard shows
//! is exactly what consumers of the event stream saw — and a key that goes (a member removed,
//! a key evicted, a leader replaced) leaves no series behind.

use std::collections::BTreeMap;

use rustc_hash::FxHashMap;
use serde::Serialize;

use crate::engine::Evicted;
use crate::model::{ClusterEvent, EventKind, Via};

/// The view as the engine task, the server and the sinks share it.
pub type SharedView = std::sync::Arc<std::sync::Mutex<View>>;

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct View {
    pub clusters: BTreeMap<String, ClusterView>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ClusterView {
    /// `Some(None)`: leaderless; `None`: not known yet.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub leader: Option<Option<String>>,
    pub split_brain: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub read_only: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub members: Option<Vec<String>>,
    /// Each node's view of the leader (`None`: it sees none).
    pub views: BTreeMap<String, Option<String>>,
    /// node → peer → connected.
    pub peers: BTreeMap<String, BTreeMap<String, bool>>,
    /// A hash map, written in key order: a mesh has routers by the million, and a sorted
    /// tree's every update compared a score of names (a fifth of `herald run`'s time on a
    /// million routers coming online).
    #[serde(serialize_with = "crate::support::sorted::in_key_order")]
    pub routers: FxHashMap<String, bool>,
    pub nodes_up: BTreeMap<String, NodeLiveness>,
    /// Spinning terminator slots: (service, router, host).
    pub spinning: Vec<[String; 3]>,
    /// Events emitted, by kind.
    pub transitions: BTreeMap<String, u64>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct NodeLiveness {
    pub up: bool,
    pub via: Via,
}

impl View {
    /// Applies one event. Names are copied only when first seen: this runs once per event.
    pub fn apply(&mut self, e: &ClusterEvent) {
        if !self.clusters.contains_key(&e.cluster) {
            self.clusters.insert(e.cluster.clone(), ClusterView::default());
        }
        let Some(c) = self.clusters.get_mut(&e.cluster) else { return };
        match c.transitions.get_mut(e.kind.as_str()) {
            Some(n) => *n += 1,
            None => {
                c.transitions.insert(e.kind.as_str().to_string(), 1);
            }
        }
        let s = |o: &Option<String>| o.clone().unwrap_or_default();
        match e.kind {
            EventKind::LeaderElected => c.leader = Some(e.leader_id.clone()),
            EventKind::Leaderless => c.leader = Some(None),
            EventKind::SplitBrain => c.split_brain = true,
            EventKind::SplitBrainResolved => c.split_brain = false,
            EventKind::ReadOnly => c.read_only = Some(true),
            EventKind::ReadWrite => c.read_only = Some(false),
            EventKind::MembersChanged => {
                let members = e.members.clone().unwrap_or_default();
                // A removed member's keys go with it, at once.
                for gone in e.removed.iter().flatten() {
                    c.views.remove(gone);
                    c.peers.remove(gone);
                    for peers in c.peers.values_mut() {
                        peers.remove(gone);
                    }
                    // As an eviction does: a node with no peer left is no entry at all.
                    c.peers.retain(|_, peers| !peers.is_empty());
                    c.nodes_up.remove(gone);
                }
                c.members = Some(members);
            }
            EventKind::NodeHasLeader => {
                c.views.insert(s(&e.node), e.leader_id.clone());
            }
            EventKind::NodeIsLeaderless => {
                c.views.insert(s(&e.node), None);
            }
            EventKind::PeerConnected | EventKind::PeerDisconnected => {
                let up = e.kind == EventKind::PeerConnected;
                c.peers.entry(s(&e.node)).or_default().insert(s(&e.peer), up);
            }
            EventKind::RouterOnline | EventKind::RouterOffline => {
                let online = e.kind == EventKind::RouterOnline;
                let router = e.router.as_deref().unwrap_or_default();
                match c.routers.get_mut(router) {
                    Some(up) => *up = online,
                    None => {
                        c.routers.insert(router.to_string(), online);
                    }
                }
            }
            EventKind::NodeUp | EventKind::NodeDown => {
                let up = e.kind == EventKind::NodeUp;
                c.nodes_up
                    .insert(s(&e.node), NodeLiveness { up, via: e.via.unwrap_or(Via::Probe) });
            }
            EventKind::SpinStarted | EventKind::SpinStopped => {
                let slot = [s(&e.service), s(&e.router), s(&e.host)];
                c.spinning.retain(|x| x != &slot);
                if e.kind == EventKind::SpinStarted {
                    c.spinning.push(slot);
                    c.spinning.sort();
                }
            }
        }
    }

    /// The view a restart resumes with: each cluster's stable state as the events that
    /// emitted it, and its events emitted by kind — what the view showed before the stop.
    pub fn restored<'a>(
        clusters: impl IntoIterator<Item = (&'a str, Vec<ClusterEvent>, [u64; EventKind::ALL.len()])>,
    ) -> View {
        let mut view = View::default();
        view.restore(clusters);
        view
    }

    /// Adds restored clusters (a partition's engine, restored on its assignment).
    pub fn restore<'a>(
        &mut self,
        clusters: impl IntoIterator<Item = (&'a str, Vec<ClusterEvent>, [u64; EventKind::ALL.len()])>,
    ) {
        for (name, events, emitted) in clusters {
            if events.is_empty() && emitted.iter().all(|n| *n == 0) {
                continue;
            }
            for e in &events {
                self.apply(e);
            }
            let c = self.clusters.entry(name.to_string()).or_default();
            c.transitions = EventKind::ALL
                .iter()
                .zip(emitted)
                .filter(|(_, n)| *n > 0)
                .map(|(k, n)| (k.as_str().to_string(), n))
                .collect();
        }
    }

    pub fn evict(&mut self, ev: &Evicted) {
        if ev.key == "cluster" {
            self.clusters.remove(&ev.cluster);
            return;
        }
        let Some(c) = self.clusters.get_mut(&ev.cluster) else { return };
        let part = |i: usize| ev.subject.get(i).cloned().unwrap_or_default();
        match ev.key {
            "view" => {
                c.views.remove(&part(0));
            }
            "peer" => {
                if let Some(p) = c.peers.get_mut(&part(0)) {
                    p.remove(&part(1));
                    if p.is_empty() {
                        c.peers.remove(&part(0));
                    }
                }
            }
            "router" => {
                c.routers.remove(&part(0));
            }
            "alive" => {
                c.nodes_up.remove(&part(0));
            }
            "slot" => {
                let slot = [part(0), part(1), part(2)];
                c.spinning.retain(|x| x != &slot);
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Timestamp;

    fn ev(kind: EventKind) -> ClusterEvent {
        ClusterEvent::new(kind, "prod", Timestamp(0), Timestamp(0))
    }

    #[test]
    fn a_removed_member_leaves_nothing_behind() {
        let mut v = View::default();
        let mut e = ev(EventKind::NodeHasLeader);
        e.node = Some("c3".into());
        e.leader_id = Some("c1".into());
        v.apply(&e);
        let mut p = ev(EventKind::PeerConnected);
        p.node = Some("c1".into());
        p.peer = Some("c3".into());
        v.apply(&p);
        let mut m = ev(EventKind::MembersChanged);
        m.members = Some(vec!["c1".into(), "c2".into()]);
        m.removed = Some(vec!["c3".into()]);
        v.apply(&m);
        let c = &v.clusters["prod"];
        assert!(c.views.is_empty());
        assert!(!c.peers.contains_key("c1"), "{:?}", c.peers);
        assert_eq!(c.transitions["cluster.members_changed"], 1);
    }

    #[test]
    fn leader_and_spin_state_follow_events() {
        let mut v = View::default();
        let mut e = ev(EventKind::LeaderElected);
        e.leader_id = Some("c2".into());
        v.apply(&e);
        assert_eq!(v.clusters["prod"].leader, Some(Some("c2".into())));
        v.apply(&ev(EventKind::Leaderless));
        assert_eq!(v.clusters["prod"].leader, Some(None));
        let mut s = ev(EventKind::SpinStarted);
        (s.service, s.router, s.host) = (Some("s".into()), Some("r".into()), Some("".into()));
        v.apply(&s);
        assert_eq!(v.clusters["prod"].spinning.len(), 1);
        s.kind = EventKind::SpinStopped;
        v.apply(&s);
        assert!(v.clusters["prod"].spinning.is_empty());
    }
}
