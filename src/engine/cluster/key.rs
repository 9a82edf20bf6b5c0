//! A cluster's state keys (DESIGN §5.2), and the one table that says what each kind of key is
//! to the rest of herald: its name in metrics and evictions, the events it emits, whether it
//! is evicted, and its subject (the parts that name it in events and in event ids).
//!
//! Everything that depends on a key's kind and not on its window — ids, subject fields,
//! eviction labels — reads it from here, so a new kind of key is added in one place.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::names::{Names, NodeId};
use crate::model::{ClusterEvent, EventKind, Slot};

/// A key, within its cluster. It owns its parts: deadlines and eviction checks hold it long
/// after the record that created it is gone.
///
/// Persisted in snapshots by variant index: new variants go at the end.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum StateKey {
    Leader,
    ReadOnly,
    Members,
    SplitBrain,
    /// `(cluster, node, "leader_view")`: one reporter's view of the leader.
    LeaderView(NodeId),
    /// `(cluster, node, peer)`.
    Peer(NodeId, NodeId),
    Router(Arc<str>),
    /// `(cluster, node, "alive")`.
    Alive(NodeId),
    /// A terminator slot, as [`slot_key`] joins it.
    Slot(Arc<str>),
}

/// What a kind of key is to the rest of herald.
#[derive(Debug)]
pub struct KeyKind {
    /// Its name in [`crate::engine::Evicted`], which the metrics view matches on.
    pub name: &'static str,
    /// The events its keys emit.
    pub events: &'static [EventKind],
    /// One key per entity (node, peer link, router, slot): evicted after `key_ttl` once its
    /// state lets it go. The others live as long as their cluster.
    pub per_entity: bool,
}

use EventKind as E;

const LEADER: KeyKind =
    KeyKind { name: "leader", events: &[E::LeaderElected, E::Leaderless], per_entity: false };
const READ_ONLY: KeyKind =
    KeyKind { name: "read_only", events: &[E::ReadOnly, E::ReadWrite], per_entity: false };
const MEMBERS: KeyKind =
    KeyKind { name: "members", events: &[E::MembersChanged], per_entity: false };
const SPLIT_BRAIN: KeyKind = KeyKind {
    name: "split_brain",
    events: &[E::SplitBrain, E::SplitBrainResolved],
    per_entity: false,
};
const LEADER_VIEW: KeyKind =
    KeyKind { name: "view", events: &[E::NodeHasLeader, E::NodeIsLeaderless], per_entity: true };
const PEER: KeyKind =
    KeyKind { name: "peer", events: &[E::PeerConnected, E::PeerDisconnected], per_entity: true };
const ROUTER: KeyKind =
    KeyKind { name: "router", events: &[E::RouterOnline, E::RouterOffline], per_entity: true };
const ALIVE: KeyKind =
    KeyKind { name: "alive", events: &[E::NodeDown, E::NodeUp], per_entity: true };
const SLOT: KeyKind =
    KeyKind { name: "slot", events: &[E::SpinStarted, E::SpinStopped], per_entity: true };

/// A key's own parts, at most three (a slot's service, router and host).
pub struct Subject<'a> {
    parts: [&'a str; 3],
    len: usize,
}

impl<'a> Subject<'a> {
    fn of(parts: &[&'a str]) -> Subject<'a> {
        let mut s = Subject { parts: [""; 3], len: parts.len().min(3) };
        s.parts[..s.len].copy_from_slice(&parts[..s.len]);
        s
    }

    pub fn parts(&self) -> &[&'a str] {
        &self.parts[..self.len]
    }

    pub fn to_strings(&self) -> Vec<String> {
        self.parts().iter().map(|p| p.to_string()).collect()
    }
}

impl StateKey {
    pub fn kind(&self) -> &'static KeyKind {
        match self {
            StateKey::Leader => &LEADER,
            StateKey::ReadOnly => &READ_ONLY,
            StateKey::Members => &MEMBERS,
            StateKey::SplitBrain => &SPLIT_BRAIN,
            StateKey::LeaderView(_) => &LEADER_VIEW,
            StateKey::Peer(..) => &PEER,
            StateKey::Router(_) => &ROUTER,
            StateKey::Alive(_) => &ALIVE,
            StateKey::Slot(_) => &SLOT,
        }
    }

    /// The key's parts as events name them; empty for cluster-level keys.
    pub fn subject<'a>(&'a self, names: &'a Names) -> Subject<'a> {
        match self {
            StateKey::Leader | StateKey::ReadOnly | StateKey::Members | StateKey::SplitBrain => {
                Subject::of(&[])
            }
            StateKey::LeaderView(n) | StateKey::Alive(n) => Subject::of(&[names.name(*n)]),
            StateKey::Peer(n, p) => Subject::of(&[names.name(*n), names.name(*p)]),
            StateKey::Router(r) => Subject::of(&[r]),
            StateKey::Slot(s) => Subject::of(&slot_parts(s)),
        }
    }

    /// Puts the key's subject on `e` (its node, peer, router or slot fields) and seals the
    /// event's id over it.
    pub fn stamp(&self, mut e: ClusterEvent, names: &Names) -> ClusterEvent {
        debug_assert!(self.kind().events.contains(&e.kind), "{self:?} emits no {:?}", e.kind);
        let subject = self.subject(names);
        let part = |i: usize| subject.parts().get(i).map(|p| p.to_string());
        match self {
            StateKey::Leader | StateKey::ReadOnly | StateKey::Members | StateKey::SplitBrain => {}
            StateKey::LeaderView(_) | StateKey::Alive(_) => e.node = part(0),
            StateKey::Peer(..) => (e.node, e.peer) = (part(0), part(1)),
            StateKey::Router(_) => e.router = part(0),
            StateKey::Slot(_) => (e.service, e.router, e.host) = (part(0), part(1), part(2)),
        }
        e.seal(subject.parts())
    }
}

/// The slot key: service, router and host joined by 0x1F, the same separator event ids use,
/// so one string per slot is both its key and its subject.
pub fn slot_key(slot: &Slot<'_>) -> String {
    let mut k = String::with_capacity(slot.service.len() + slot.router.len() + slot.host.len() + 2);
    k.push_str(&slot.service);
    k.push('\u{1f}');
    k.push_str(&slot.router);
    k.push('\u{1f}');
    k.push_str(&slot.host);
    k
}

fn slot_parts(key: &str) -> [&str; 3] {
    let mut it = key.splitn(3, '\u{1f}');
    [it.next().unwrap_or(""), it.next().unwrap_or(""), it.next().unwrap_or("")]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_event_kind_comes_from_exactly_one_kind_of_key() {
        let kinds =
            [LEADER, READ_ONLY, MEMBERS, SPLIT_BRAIN, LEADER_VIEW, PEER, ROUTER, ALIVE, SLOT];
        for e in EventKind::ALL {
            let from: Vec<&str> =
                kinds.iter().filter(|k| k.events.contains(&e)).map(|k| k.name).collect();
            assert_eq!(from.len(), 1, "{e:?} comes from {from:?}");
        }
    }

    #[test]
    fn a_slot_key_splits_back_into_its_parts() {
        let slot = Slot { service: "s".into(), router: "r".into(), host: "".into() };
        assert_eq!(slot_parts(&slot_key(&slot)), ["s", "r", ""]);
    }
}
