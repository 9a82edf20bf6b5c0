//! The event a key emits when its deadline fires (DESIGN §6).
//!
//! The window says when and with which value; this adds what the value means in the event
//! (the leader and `previous`, members added and removed, `via`, spin cycles), and the key's
//! own subject and id come from [`StateKey::stamp`].

use super::key::StateKey;
use super::names::NodeId;
use super::values::{Leader, Members};
use super::Cluster;
use crate::engine::window::{Fired, StateValue};
use crate::model::{ClusterEvent, EventKind};

impl Cluster {
    /// Emits what the deadline `seq` of `key` stands for, if it is still current.
    pub fn fire(&mut self, key: &StateKey, seq: u64) -> Option<ClusterEvent> {
        let e = match key {
            StateKey::Leader => {
                let f = self.leader.fire(seq)?;
                self.leader_event(f)
            }
            StateKey::ReadOnly => {
                let f = self.read_only.fire(seq)?;
                self.event(&f)
            }
            StateKey::Members => {
                let f = self.members.fire(seq)?;
                self.members_event(f)
            }
            StateKey::SplitBrain => return self.fire_split(seq),
            StateKey::LeaderView(node) => {
                let f = self.views.get_mut(node)?.window.fire(seq)?;
                let mut e = self.event(&f);
                e.leader_id = f.value.0.map(|l| self.names.name(l).to_string());
                e
            }
            StateKey::Peer(node, peer) => {
                let f = self.peers.get_mut(&(*node, *peer))?.window.fire(seq)?;
                self.event(&f)
            }
            StateKey::Router(router) => {
                let f = self.routers.get_mut(router)?.window.fire(seq)?;
                self.event(&f)
            }
            StateKey::Alive(node) => {
                let f = self.nodes.get_mut(node)?.window.fire(seq)?;
                let mut e = self.event(&f);
                e.via = Some(f.value.via);
                e
            }
            StateKey::Slot(slot) => {
                let period = self.params.spin_period;
                let f = self.slots.get_mut(slot)?.fire(seq, period)?;
                let kind = if f.started { EventKind::SpinStarted } else { EventKind::SpinStopped };
                let mut e = ClusterEvent::new(kind, &self.name, f.at, f.at);
                e.cycles = Some(f.cycles);
                e.suppressed = f.suppressed;
                e
            }
        };
        if !self.hidden.is_empty() {
            self.hidden.remove(key);
        }
        Some(key.stamp(e, &self.names))
    }

    /// An event with the window's common fields.
    fn event<V: StateValue>(&self, f: &Fired<V>) -> ClusterEvent {
        let mut e = ClusterEvent::new(f.value.kind(), &self.name, f.at, f.stable_at);
        e.initial = f.initial;
        e.suppressed = f.suppressed;
        e
    }

    fn leader_event(&mut self, f: Fired<Leader>) -> ClusterEvent {
        let mut e = self.event(&f);
        e.leader_id = f.value.0.map(|l| self.names.name(l).to_string());
        e.previous = self.last_leader_before(&f).map(|l| self.names.name(l).to_string());
        let agree = self.live_views().filter(|(_, v)| *v == f.value.0).map(|(r, _)| r);
        let mut reporters = self.names.names_of(agree);
        reporters.sort();
        e.reporters = Some(reporters);
        if let Some(l) = f.value.0 {
            self.last_leader = Some(l);
        }
        e
    }

    /// `previous` on leader events: the last emitted leader id, skipping leaderless periods.
    fn last_leader_before(&self, f: &Fired<Leader>) -> Option<NodeId> {
        match f.previous {
            Some(Leader(Some(l))) => Some(l),
            _ => self.last_leader,
        }
    }

    fn members_event(&mut self, f: Fired<Members>) -> ClusterEvent {
        let mut e = self.event(&f);
        let now = &f.value.0;
        let before: &[NodeId] = f.previous.as_ref().map(|m| m.0.as_slice()).unwrap_or(&[]);
        e.members = Some(self.names.names_of(now.iter().copied()));
        e.added = Some(self.names.names_of(now.iter().copied().filter(|m| !before.contains(m))));
        e.removed = Some(self.names.names_of(before.iter().copied().filter(|m| !now.contains(m))));
        for gone in before.iter().copied().filter(|m| !now.contains(m)) {
            self.hide_keys_of(gone);
        }
        e
    }

    /// A removed member's keys leave the view with the membership change (its views, peer
    /// links either way, liveness) until one of them emits again.
    fn hide_keys_of(&mut self, gone: NodeId) {
        let views = self.views.contains_key(&gone).then_some(StateKey::LeaderView(gone));
        let alive = self.nodes.contains_key(&gone).then_some(StateKey::Alive(gone));
        let peers = self
            .peers
            .keys()
            .filter(|(n, p)| *n == gone || *p == gone)
            .map(|(n, p)| StateKey::Peer(*n, *p));
        let keys: Vec<StateKey> = views.into_iter().chain(alive).chain(peers).collect();
        self.hidden.extend(keys);
    }
}
