//! A cluster as entries (DESIGN §7.1): one entry for the cluster itself (its names, its
//! reporters, its cluster-level and node keys, its counters) and one per router and per
//! terminator slot, the keys that can number millions. A record that flips one router
//! therefore rewrites that router's entry and the cluster's small one, never the others.
//!
//! Keys: `C`, the cluster's index (big-endian, so a cluster's entries sort together), then
//! nothing (the cluster), `r` and a router name, or `s` and a slot key. Values: the entry
//! format's version byte, then postcard. Node keys (views, peers, liveness) stay in the
//! cluster's entry: they name controllers and probe targets, a handful per cluster, and share
//! its interner of node names, which every entry that holds a node id depends on.

use std::collections::BTreeSet;
use std::sync::Arc;

use rustc_hash::FxHashMap as HashMap;
use serde::{Deserialize, Serialize};

use super::key::StateKey;
use super::names::{Names, NodeId};
use super::split::SplitBrain;
use super::staging::Staging;
use super::values::{
    Leader, Members, NodeView, PeerLink, ReadOnly, Reporter, RouterState, NO_CHECK,
};
use super::Cluster;
use crate::engine::liveness::NodeLiveness;
use crate::engine::schedule::{Deadline, EvictionCheck};
use crate::engine::spin::SpinSlot;
use crate::engine::window::StabilityWindow;
use crate::engine::Params;
use crate::model::{EventKind, Timestamp};
use crate::support::sorted::in_key_order;

/// Leads every entry's value. Another one is refused on restore, never misread.
pub const ENTRY_VERSION: u8 = 1;
pub const CLUSTER: u8 = b'C';
const ROUTER: u8 = b'r';
const SLOT: u8 = b's';

/// What a key of the `C` family names.
pub enum ClusterKey<'a> {
    Core(u32),
    Router(u32, &'a str),
    Slot(u32, &'a str),
}

impl ClusterKey<'_> {
    pub fn index(&self) -> u32 {
        match *self {
            ClusterKey::Core(i) | ClusterKey::Router(i, _) | ClusterKey::Slot(i, _) => i,
        }
    }
}

pub fn cluster_key(index: u32) -> Vec<u8> {
    let mut k = Vec::with_capacity(5);
    k.push(CLUSTER);
    k.extend_from_slice(&index.to_be_bytes());
    k
}

fn member_key(index: u32, tag: u8, name: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(6 + name.len());
    k.push(CLUSTER);
    k.extend_from_slice(&index.to_be_bytes());
    k.push(tag);
    k.extend_from_slice(name.as_bytes());
    k
}

/// Reads a key of the `C` family; `None` for anything else.
pub fn parse_cluster_key(key: &[u8]) -> Option<ClusterKey<'_>> {
    let rest = key.strip_prefix(&[CLUSTER])?;
    let (index, rest) = rest.split_first_chunk::<4>()?;
    let index = u32::from_be_bytes(*index);
    let Some((&tag, name)) = rest.split_first() else {
        return Some(ClusterKey::Core(index));
    };
    let name = std::str::from_utf8(name).ok()?;
    match tag {
        ROUTER => Some(ClusterKey::Router(index, name)),
        SLOT => Some(ClusterKey::Slot(index, name)),
        _ => None,
    }
}

/// A value: the version byte, then postcard.
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, String> {
    postcard::to_extend(value, versioned(ENTRY_VERSION)).map_err(|e| e.to_string())
}

/// A value's buffer: its version byte, and room for a router's or a slot's whole value.
/// Grown from one byte, each of a startup burst's million values was copied three times
/// on its way to fifty.
fn versioned(version: u8) -> Vec<u8> {
    let mut v = Vec::with_capacity(64);
    v.push(version);
    v
}

pub fn decode<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, String> {
    postcard::from_bytes(body(bytes)?).map_err(|e| e.to_string())
}

/// A value's postcard, after its version byte.
fn body(bytes: &[u8]) -> Result<&[u8], String> {
    match bytes.split_first() {
        Some((&ENTRY_VERSION, body)) => Ok(body),
        Some((v, _)) => Err(format!("entry format {v} (this herald reads {ENTRY_VERSION})")),
        None => Err("empty entry".into()),
    }
}

/// Leads a router's or a terminator slot's value since they hold their eviction check's
/// time. A value of [`ENTRY_VERSION`] is still read (its check comes from the store's `V`
/// entries); a release that reads only that one refuses this, rather than restoring keys
/// whose deadlines and checks it would find nowhere.
const OWN_CHECK_VERSION: u8 = 2;

/// A router's or a slot's value: [`OWN_CHECK_VERSION`], its state, then when its eviction
/// check is due.
fn encode_with_check<T: Serialize>(value: &T, check: Timestamp) -> Result<Vec<u8>, String> {
    let state =
        postcard::to_extend(value, versioned(OWN_CHECK_VERSION)).map_err(|e| e.to_string())?;
    postcard::to_extend(&check, state).map_err(|e| e.to_string())
}

/// A router's or a slot's value, of either version, and its check's time if it holds one:
/// stores written before these held it keep it in a `V` entry of its own, which
/// [`super::Cluster::adopt_own_schedule`] gives the key.
fn decode_with_check<T: serde::de::DeserializeOwned>(
    bytes: &[u8],
) -> Result<(T, Option<Timestamp>), String> {
    let Some((&OWN_CHECK_VERSION, body)) = bytes.split_first() else {
        return Ok((decode(bytes)?, None));
    };
    let (value, rest) = postcard::take_from_bytes(body).map_err(|e| e.to_string())?;
    let (check, rest) = postcard::take_from_bytes(rest).map_err(|e| e.to_string())?;
    if !rest.is_empty() {
        return Err(format!("{} bytes after the key's check", rest.len()));
    }
    Ok((value, Some(check)))
}

/// The checks an old schedule held for routers and slots, by cluster and key.
pub type OwnChecks = HashMap<(u32, StateKey), Timestamp>;

/// [`in_key_order`] of a borrowed map, for the borrowed fields of [`CoreRef`].
fn sorted_ref<S, K, V>(map: &&HashMap<K, V>, s: S) -> Result<S::Ok, S::Error>
where
    S: serde::Serializer,
    K: Ord + Serialize,
    V: Serialize,
{
    in_key_order(map, s)
}

/// The cluster's own entry, borrowed from it. Field order is the format.
#[derive(Serialize)]
struct CoreRef<'a> {
    name: &'a str,
    names: &'a Names,
    reporters: &'a [NodeId],
    #[serde(serialize_with = "sorted_ref")]
    reporter_state: &'a HashMap<NodeId, Reporter>,
    leader: &'a StabilityWindow<Leader>,
    read_only: &'a StabilityWindow<ReadOnly>,
    members: &'a StabilityWindow<Members>,
    members_index: Option<u64>,
    last_leader: Option<NodeId>,
    split: &'a SplitBrain,
    #[serde(serialize_with = "sorted_ref")]
    views: &'a HashMap<NodeId, NodeView>,
    #[serde(serialize_with = "sorted_ref")]
    peers: &'a HashMap<(NodeId, NodeId), PeerLink>,
    #[serde(serialize_with = "sorted_ref")]
    disconnected_by: &'a HashMap<NodeId, u32>,
    #[serde(serialize_with = "sorted_ref")]
    nodes: &'a HashMap<NodeId, NodeLiveness>,
    staging: &'a Staging,
    suppressed_by_kind: &'a [u64; EventKind::ALL.len()],
    emitted_by_kind: &'a [u64; EventKind::ALL.len()],
    last_record: Timestamp,
    hidden: &'a BTreeSet<StateKey>,
}

#[derive(Deserialize)]
struct Core {
    name: Arc<str>,
    names: Names,
    reporters: Vec<NodeId>,
    reporter_state: HashMap<NodeId, Reporter>,
    leader: StabilityWindow<Leader>,
    read_only: StabilityWindow<ReadOnly>,
    members: StabilityWindow<Members>,
    members_index: Option<u64>,
    last_leader: Option<NodeId>,
    split: SplitBrain,
    views: HashMap<NodeId, NodeView>,
    peers: HashMap<(NodeId, NodeId), PeerLink>,
    disconnected_by: HashMap<NodeId, u32>,
    nodes: HashMap<NodeId, NodeLiveness>,
    staging: Staging,
    suppressed_by_kind: [u64; EventKind::ALL.len()],
    emitted_by_kind: [u64; EventKind::ALL.len()],
    last_record: Timestamp,
    hidden: BTreeSet<StateKey>,
}

/// An entry as [`super::super::entries::Change`] carries it: key, value or tombstone.
pub type Entry = (Vec<u8>, Option<Vec<u8>>);

impl Cluster {
    /// From now on, routers and slots remember what changed.
    pub fn track(&mut self) {
        self.routers.track();
        self.slots.track();
    }

    /// Tombstones for the routers and slots that went since the last call, when the
    /// cluster itself goes (it goes only once they are all gone).
    pub fn removed_entries(&mut self, out: &mut Vec<Entry>) {
        let index = self.index;
        for (name, _) in self.routers.take_changed() {
            out.push((member_key(index, ROUTER, &name), None));
        }
        for (name, _) in self.slots.take_changed() {
            out.push((member_key(index, SLOT, &name), None));
        }
    }

    /// The cluster's own entry.
    pub fn core_entry(&self) -> Result<Entry, String> {
        let core = CoreRef {
            name: &self.name,
            names: &self.names,
            reporters: &self.reporters,
            reporter_state: &self.reporter_state,
            leader: &self.leader,
            read_only: &self.read_only,
            members: &self.members,
            members_index: self.members_index,
            last_leader: self.last_leader,
            split: &self.split,
            views: &self.views,
            peers: &self.peers,
            disconnected_by: &self.disconnected_by,
            nodes: &self.nodes,
            staging: &self.staging,
            suppressed_by_kind: &self.suppressed_by_kind,
            emitted_by_kind: &self.emitted_by_kind,
            last_record: self.last_record,
            hidden: &self.hidden,
        };
        Ok((cluster_key(self.index), Some(encode(&core)?)))
    }

    /// How many entries [`Cluster::changed_entries`] would give.
    pub fn changed_len(&self) -> usize {
        self.routers.changed_len() + self.slots.changed_len()
    }

    /// The router and slot entries changed since the last call (tombstones for the gone).
    pub fn changed_entries(&mut self, out: &mut Vec<Entry>) -> Result<(), String> {
        let index = self.index;
        for (name, router) in self.routers.take_changed() {
            let value = router.map(|r| encode_with_check(r, r.check)).transpose()?;
            out.push((member_key(index, ROUTER, &name), value));
        }
        for (name, slot) in self.slots.take_changed() {
            let value = slot.map(|s| encode_with_check(s, s.check)).transpose()?;
            out.push((member_key(index, SLOT, &name), value));
        }
        Ok(())
    }

    /// Every entry of this cluster, its own first.
    pub fn all_entries(&self, out: &mut Vec<Entry>) -> Result<(), String> {
        out.push(self.core_entry()?);
        for (name, router) in &self.routers {
            let value = encode_with_check(router, router.check)?;
            out.push((member_key(self.index, ROUTER, name), Some(value)));
        }
        for (name, slot) in &self.slots {
            out.push((
                member_key(self.index, SLOT, name),
                Some(encode_with_check(slot, slot.check)?),
            ));
        }
        Ok(())
    }

    /// A cluster from its own entry; its routers and slots follow with
    /// [`Cluster::restore_member`].
    pub fn from_core(index: u32, value: &[u8], params: Params) -> Result<Cluster, String> {
        let c: Core = decode(value)?;
        let mut cluster = Cluster::new(c.name, index, params);
        cluster.names = c.names;
        cluster.reporters = c.reporters;
        cluster.reporter_state = c.reporter_state;
        cluster.leader = c.leader;
        cluster.read_only = c.read_only;
        cluster.members = c.members;
        cluster.members_index = c.members_index;
        cluster.last_leader = c.last_leader;
        cluster.split = c.split;
        cluster.views = c.views;
        cluster.peers = c.peers;
        cluster.disconnected_by = c.disconnected_by;
        cluster.nodes = c.nodes;
        cluster.staging = c.staging;
        cluster.suppressed_by_kind = c.suppressed_by_kind;
        cluster.emitted_by_kind = c.emitted_by_kind;
        cluster.last_record = c.last_record;
        cluster.hidden = c.hidden;
        Ok(cluster)
    }

    /// Once every entry is in, and the cluster has its parameters: each router's pending
    /// deadline, and each router's and slot's eviction check, for the schedule. A key whose
    /// entry did not hold its check's time (written before keys held it) takes it from
    /// `checks`, what the old schedule said, and is marked to be written again. Returns
    /// whether any was.
    pub fn adopt_own_schedule(
        &mut self,
        checks: &OwnChecks,
        deadlines: &mut Vec<Deadline>,
        evictions: &mut Vec<EvictionCheck>,
    ) -> bool {
        let (index, ttl) = (self.index, self.params.key_ttl);
        let mut adopted = false;
        let mut adopt = |key: StateKey, check: &mut Timestamp, last_record: Timestamp| {
            let unknown = *check == NO_CHECK;
            if unknown {
                *check = match checks.get(&(index, key.clone())) {
                    Some(&due) => due,
                    // No check anywhere (a store cut short by hand): the soonest the key
                    // could be evicted.
                    None => last_record.saturating_add(ttl),
                };
            }
            evictions.push(EvictionCheck { due: *check, cluster: index, key });
            adopted |= unknown;
            unknown
        };
        self.routers.restore_each(|name, router| {
            let key = StateKey::Router(name.clone());
            if let Some(p) = router.window.pending() {
                let (due, at, seq) = (p.due, p.at, p.seq);
                deadlines.push(Deadline { due, at, seq, cluster: index, key: key.clone() });
            }
            adopt(key, &mut router.check, router.last_record)
        });
        self.slots.restore_each(|name, slot| {
            adopt(StateKey::Slot(name.clone()), &mut slot.check, slot.last_record)
        });
        adopted
    }

    /// A router's or a slot's value as written before they held their check's time.
    #[cfg(test)]
    pub fn value_without_check(&self, key: &ClusterKey<'_>) -> Option<Vec<u8>> {
        match key {
            ClusterKey::Router(_, name) => self.routers.get(name).and_then(|r| encode(r).ok()),
            ClusterKey::Slot(_, name) => self.slots.get(name).and_then(|s| encode(s).ok()),
            ClusterKey::Core(_) => None,
        }
    }

    /// A router's or a slot's entry, into this cluster.
    pub fn restore_member(&mut self, key: &ClusterKey<'_>, value: &[u8]) -> Result<(), String> {
        match key {
            ClusterKey::Router(_, name) => {
                let (mut router, check): (RouterState, _) = decode_with_check(value)?;
                router.check = check.unwrap_or(NO_CHECK);
                self.routers.restore(Arc::from(*name), router)
            }
            ClusterKey::Slot(_, name) => {
                let (mut slot, check): (SpinSlot, _) = decode_with_check(value)?;
                slot.check = check.unwrap_or(NO_CHECK);
                self.slots.restore(Arc::from(*name), slot)
            }
            ClusterKey::Core(_) => return Err("a cluster's entry twice".into()),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_keys_read_back_and_sort_by_cluster() {
        let core = cluster_key(7);
        let router = member_key(7, ROUTER, "edge-1");
        let slot = member_key(7, SLOT, "svc/r/h");
        assert!(matches!(parse_cluster_key(&core), Some(ClusterKey::Core(7))));
        assert!(matches!(parse_cluster_key(&router), Some(ClusterKey::Router(7, "edge-1"))));
        assert!(matches!(parse_cluster_key(&slot), Some(ClusterKey::Slot(7, "svc/r/h"))));
        assert!(core < router && router < cluster_key(8));
        assert!(parse_cluster_key(b"Cxx").is_none());
        assert!(parse_cluster_key(&member_key(1, b'?', "x")).is_none());
    }

    #[test]
    fn an_entry_of_another_format_is_refused() {
        let mut bytes = encode(&5u32).unwrap();
        assert_eq!(decode::<u32>(&bytes), Ok(5));
        bytes[0] = 9;
        assert!(decode::<u32>(&bytes).unwrap_err().contains("entry format 9"));
        assert!(decode::<u32>(&[]).is_err());
    }
}
