//! One cluster's state: raw per-reporter facts, the keys derived from them, and their windows
//! (DESIGN §5.2–§5.5).
//!
//! Raw facts (a reporter's latest view, read-only state, peer and router records) are applied
//! at once, last-writer-wins per `(reporter, key)` on record time. Every key — fed directly by
//! records (views, peers) or derived from many reporters (the cluster leader, read-only,
//! routers, liveness from peers) — then goes through the same [`StabilityWindow`]. Derived
//! values are recomputed only when one of their inputs changed, so a record costs work in
//! proportion to what it touches, not to the size of the cluster.

use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::sync::Arc;

use rustc_hash::FxHashMap as HashMap;

use super::liveness::NodeLiveness;
use super::spin::SpinSlot;
use super::window::{Fired, Observed, Scheduled, StabilityWindow, StateValue};
use super::{Core, KeyRef, Outcome, Params};
use crate::model::{ClusterEvent, EntityOp, EventKind, Observation, Signal, Slot, Timestamp, Via};

/// A node's name, interned per cluster. Nodes (controllers, members, peers, probe targets)
/// are few; routers and slots, which can be many, are keyed by name instead.
pub type NodeId = u32;

/// Persisted as the list of names; the index is rebuilt on restore.
#[derive(Default, Debug, Clone, Serialize, Deserialize)]
#[serde(from = "Vec<Arc<str>>", into = "Vec<Arc<str>>")]
pub(crate) struct Names {
    ids: HashMap<Arc<str>, NodeId>,
    names: Vec<Arc<str>>,
}

impl From<Vec<Arc<str>>> for Names {
    fn from(names: Vec<Arc<str>>) -> Self {
        let ids = names.iter().enumerate().map(|(i, n)| (n.clone(), i as NodeId)).collect();
        Names { ids, names }
    }
}

impl From<Names> for Vec<Arc<str>> {
    fn from(n: Names) -> Self {
        n.names
    }
}

impl Names {
    pub fn id(&mut self, name: &str) -> NodeId {
        if let Some(&id) = self.ids.get(name) {
            return id;
        }
        let id = NodeId::try_from(self.names.len()).unwrap_or(NodeId::MAX);
        let name: Arc<str> = Arc::from(name);
        self.names.push(name.clone());
        self.ids.insert(name, id);
        id
    }

    pub fn name(&self, id: NodeId) -> &str {
        self.names.get(id as usize).map(|n| &**n).unwrap_or("")
    }
}

/// The cluster leader as derived from the reporters' views.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Leader(pub Option<NodeId>);

impl StateValue for Leader {
    fn is_negative(&self) -> bool {
        self.0.is_none()
    }
    fn kind(&self) -> EventKind {
        if self.0.is_some() {
            EventKind::LeaderElected
        } else {
            EventKind::Leaderless
        }
    }
}

/// One reporter's view of the leader.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct View(pub Option<NodeId>);

impl StateValue for View {
    fn is_negative(&self) -> bool {
        self.0.is_none()
    }
    fn kind(&self) -> EventKind {
        if self.0.is_some() {
            EventKind::NodeHasLeader
        } else {
            EventKind::NodeIsLeaderless
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Connected(pub bool);

impl StateValue for Connected {
    fn is_negative(&self) -> bool {
        !self.0
    }
    fn kind(&self) -> EventKind {
        if self.0 {
            EventKind::PeerConnected
        } else {
            EventKind::PeerDisconnected
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadOnly(pub bool);

impl StateValue for ReadOnly {
    fn is_negative(&self) -> bool {
        self.0
    }
    fn kind(&self) -> EventKind {
        if self.0 {
            EventKind::ReadOnly
        } else {
            EventKind::ReadWrite
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Online(pub bool);

impl StateValue for Online {
    fn is_negative(&self) -> bool {
        !self.0
    }
    fn kind(&self) -> EventKind {
        if self.0 {
            EventKind::RouterOnline
        } else {
            EventKind::RouterOffline
        }
    }
}

/// The raft membership, sorted by name.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Members(pub Vec<NodeId>);

impl StateValue for Members {
    fn is_negative(&self) -> bool {
        false
    }
    fn kind(&self) -> EventKind {
        EventKind::MembersChanged
    }
}

/// A reporter's latest view: unknown after `leadership.lost` until its next has_leader or
/// is_leaderless.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RawView {
    Unknown,
    Known(Option<NodeId>),
}

/// What one reporter last said about itself.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct Reporter {
    pub view: RawView,
    pub view_ts: Timestamp,
    pub read_only: Option<bool>,
    pub ro_ts: Timestamp,
}

impl Default for Reporter {
    fn default() -> Self {
        Reporter {
            view: RawView::Unknown,
            view_ts: Timestamp::MIN,
            read_only: None,
            ro_ts: Timestamp::MIN,
        }
    }
}

/// A key fed directly by one reporter's records.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub(crate) struct Direct<V> {
    pub window: StabilityWindow<V>,
    pub last_record: Timestamp,
}

/// `(cluster, node, peer)`: the raw latest record and the windowed key.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct PeerLink {
    pub window: StabilityWindow<Connected>,
    pub connected: bool,
    pub last_record: Timestamp,
}

/// `(cluster, router)`: every reporter's latest record for it, and the derived key.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub(crate) struct RouterState {
    pub window: StabilityWindow<Online>,
    pub reports: Vec<(NodeId, bool, Timestamp)>,
    pub last_record: Timestamp,
}

/// A staged two-phase entity change, applied on its commit.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct Staged {
    pub reporter: NodeId,
    pub at: Timestamp,
    pub op: EntityOp,
    pub slot: Slot<'static>,
}

/// Split-brain episodes (§5.4).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub(crate) struct SplitBrain {
    pub active: bool,
    /// When the second live claim began, and its deadline's sequence number.
    pub candidate: Option<(Timestamp, u64)>,
    /// When the claims fell to one or none during an episode.
    pub resolving: Option<(Timestamp, u64)>,
    pub suppressed: u32,
}

/// How many halves of two-phase changes wait for their other half before the oldest go.
const MAX_STAGED: usize = 65_536;
/// How long (engine time) a half waits: OpenZiti commits within milliseconds.
const STAGING_TTL: i64 = 300 * 1_000_000_000;

/// Two-phase entity changes (§4.1): a change applies once its `committed` arrives. Either half
/// may come first (OpenZiti dispatches each event on its own goroutine). A half that waits
/// longer than [`STAGING_TTL`], or beyond [`MAX_STAGED`], is dropped (rolled-back
/// transactions, commits of entity types herald does not track).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub(crate) struct Staging {
    pub changes: HashMap<Box<str>, Staged>,
    pub commits: HashMap<Box<str>, Timestamp>,
    /// Arrival (engine time) of every waiting half, oldest first; resolved ones are skipped
    /// when they reach the front.
    pub order: VecDeque<(Timestamp, Box<str>)>,
}

impl Staging {
    /// The first half of a change; returns it at once if its commit came first.
    fn stage(&mut self, id: &str, change: Staged, now: Timestamp) -> Option<Staged> {
        if self.commits.remove(id).is_some() {
            return Some(change);
        }
        let id: Box<str> = Box::from(id);
        self.order.push_back((now, id.clone()));
        self.changes.insert(id, change);
        None
    }

    /// The commit; returns the change it completes, if that came first.
    fn commit(&mut self, id: &str, now: Timestamp) -> Option<Staged> {
        if let Some(change) = self.changes.remove(id) {
            return Some(change);
        }
        let id: Box<str> = Box::from(id);
        self.order.push_back((now, id.clone()));
        self.commits.insert(id, now);
        None
    }

    /// Drops halves that waited too long, and forgets resolved ones; returns how many
    /// unresolved halves were dropped.
    fn prune(&mut self, now: Timestamp) -> u64 {
        let mut dropped = 0;
        while let Some((arrived, _)) = self.order.front() {
            let waiting = self.changes.len() + self.commits.len();
            let expired = now.saturating_sub(*arrived).0 > STAGING_TTL;
            if !expired && waiting <= MAX_STAGED && self.order.len() <= 2 * waiting + 1024 {
                break;
            }
            let Some((_, id)) = self.order.pop_front() else {
                break;
            };
            let gone = self.changes.remove(&id).is_some() || self.commits.remove(&id).is_some();
            dropped += u64::from(gone);
        }
        dropped
    }
}

/// The slot key: service, router and host joined by 0x1F, the same separator event ids use.
fn slot_key(slot: &Slot<'_>) -> String {
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

#[derive(Serialize, Deserialize)]
pub(crate) struct Cluster {
    pub name: Arc<str>,
    pub index: u32,
    /// Taken from the configuration on restore, not from the snapshot.
    #[serde(skip)]
    pub params: Params,
    pub names: Names,
    /// Reporters in the order first seen.
    pub reporters: Vec<NodeId>,
    pub reporter_state: HashMap<NodeId, Reporter>,
    pub leader: StabilityWindow<Leader>,
    pub read_only: StabilityWindow<ReadOnly>,
    pub members: StabilityWindow<Members>,
    pub members_index: Option<u64>,
    /// The last leader id ever emitted: `previous` skips leaderless periods.
    pub last_leader: Option<NodeId>,
    pub split: SplitBrain,
    pub views: HashMap<NodeId, Direct<View>>,
    pub peers: HashMap<(NodeId, NodeId), PeerLink>,
    /// Per node: how many other reporters' latest peer record for it says disconnected.
    pub disconnected_by: HashMap<NodeId, u32>,
    pub routers: HashMap<Arc<str>, RouterState>,
    pub nodes: HashMap<NodeId, NodeLiveness>,
    pub slots: HashMap<Arc<str>, SpinSlot>,
    pub staging: Staging,
    /// Reverts and suppressed records, by the kind they would have produced.
    pub suppressed_by_kind: [u64; EventKind::ALL.len()],
}

impl Cluster {
    pub fn new(name: Arc<str>, index: u32, params: Params) -> Self {
        Cluster {
            name,
            index,
            params,
            names: Names::default(),
            reporters: Vec::new(),
            reporter_state: HashMap::default(),
            leader: StabilityWindow::default(),
            read_only: StabilityWindow::default(),
            members: StabilityWindow::default(),
            members_index: None,
            last_leader: None,
            split: SplitBrain::default(),
            views: HashMap::default(),
            peers: HashMap::default(),
            disconnected_by: HashMap::default(),
            routers: HashMap::default(),
            nodes: HashMap::default(),
            slots: HashMap::default(),
            staging: Staging::default(),
            suppressed_by_kind: [0; EventKind::ALL.len()],
        }
    }

    // ---- applying records -------------------------------------------------------------

    pub fn apply(&mut self, obs: &Observation<'_>, core: &mut Core) -> Outcome {
        let at = obs.at;
        let reporter = self.names.id(&obs.reporter);
        match &obs.signal {
            // A probe is not a member of the cluster: it must not change "half of the others".
            Signal::NodeCheck { node, ok, via, down_after, up_after } => {
                let node = self.names.id(node);
                return self.apply_check(node, *ok, *via, *down_after, *up_after, at, core);
            }
            Signal::Commit { event_id } => {
                core.stats.ignored += self.staging.prune(core.now);
                return match self.staging.commit(event_id, core.now) {
                    Some(c) => self.apply_entity(c.reporter, c.op, &c.slot, c.at, core),
                    None => Outcome::Applied,
                };
            }
            _ => {}
        }
        self.register(reporter, at, core);
        match &obs.signal {
            Signal::View { leader } => {
                let leader = leader.as_deref().map(|l| self.names.id(l));
                self.apply_view(reporter, RawView::Known(leader), at, core)
            }
            Signal::SelfLeader { is_leader: true } => {
                self.apply_view(reporter, RawView::Known(Some(reporter)), at, core)
            }
            Signal::SelfLeader { is_leader: false } => {
                self.apply_view(reporter, RawView::Unknown, at, core)
            }
            Signal::Peer { peer, connected } => {
                let peer = self.names.id(peer);
                self.apply_peer(reporter, peer, *connected, at, core)
            }
            Signal::Members { index, members } => self.apply_members(*index, members, at, core),
            Signal::ReadOnly { read_only } => self.apply_read_only(reporter, *read_only, at, core),
            Signal::Router { router, online } => {
                self.apply_router(reporter, router, *online, at, core)
            }
            Signal::Entity { op, slot } => self.apply_entity(reporter, *op, slot, at, core),
            Signal::StagedEntity { event_id, op, slot } => {
                core.stats.ignored += self.staging.prune(core.now);
                let slot = slot.clone().into_owned();
                let change = Staged { reporter, at, op: *op, slot };
                match self.staging.stage(event_id, change, core.now) {
                    Some(c) => self.apply_entity(c.reporter, c.op, &c.slot, c.at, core),
                    None => Outcome::Applied,
                }
            }
            Signal::NodeCheck { .. } | Signal::Commit { .. } => Outcome::Ignored,
        }
    }

    /// Makes `r` a reporter of this cluster. A new reporter changes "more than half of the
    /// other reporters" for every node, so liveness from peers is re-evaluated.
    fn register(&mut self, r: NodeId, at: Timestamp, core: &mut Core) {
        if self.reporter_state.contains_key(&r) {
            return;
        }
        self.reporter_state.insert(r, Reporter::default());
        self.reporters.push(r);
        // Sorted: the order of re-evaluation decides sequence numbers, hence output order.
        let mut nodes: Vec<NodeId> = self.disconnected_by.keys().copied().collect();
        nodes.sort_unstable();
        let mut changed = false;
        for n in nodes {
            changed |= self.update_peer_evidence(n, at, core);
        }
        if changed {
            self.liveness_changed(at, core);
        }
    }

    fn apply_view(&mut self, r: NodeId, view: RawView, at: Timestamp, core: &mut Core) -> Outcome {
        let Some(rep) = self.reporter_state.get_mut(&r) else {
            return Outcome::Ignored;
        };
        if at < rep.view_ts {
            return Outcome::Stale;
        }
        rep.view_ts = at;
        let before = rep.view;
        rep.view = view;
        if let RawView::Known(leader) = view {
            let w = self.params.windows.leader_view;
            let grace = self.params.startup_grace;
            let key = self.views.entry(r).or_insert_with(|| {
                core.arm_eviction(at, self.index, KeyRef::View(r), self.params.key_ttl);
                Direct { window: StabilityWindow::default(), last_record: at }
            });
            key.last_record = key.last_record.max(at);
            let observed = key.window.observe(View(leader), at, w, grace, &mut core.seq);
            self.handle(observed, KeyRef::View(r), core);
        }
        if before != view {
            self.derive_leader(at, core);
            self.derive_split(at, core);
        }
        Outcome::Applied
    }

    fn apply_peer(
        &mut self,
        r: NodeId,
        peer: NodeId,
        connected: bool,
        at: Timestamp,
        core: &mut Core,
    ) -> Outcome {
        let w = self.params.windows.peer;
        let grace = self.params.startup_grace;
        let link = self.peers.entry((r, peer)).or_insert_with(|| {
            core.arm_eviction(at, self.index, KeyRef::Peer(r, peer), self.params.key_ttl);
            // Until a record says otherwise, nobody is counted as disconnected.
            PeerLink {
                window: StabilityWindow::default(),
                connected: true,
                last_record: Timestamp::MIN,
            }
        });
        if at < link.last_record {
            return Outcome::Stale;
        }
        link.last_record = at;
        let was = link.connected;
        link.connected = connected;
        let observed = link.window.observe(Connected(connected), at, w, grace, &mut core.seq);
        self.handle(observed, KeyRef::Peer(r, peer), core);
        if was != connected && r != peer {
            let count = self.disconnected_by.entry(peer).or_insert(0);
            if connected {
                *count = count.saturating_sub(1);
            } else {
                *count += 1;
            }
            if self.update_peer_evidence(peer, at, core) {
                self.liveness_changed(at, core);
            }
        }
        Outcome::Applied
    }

    fn apply_members(
        &mut self,
        index: u64,
        members: &[std::borrow::Cow<'_, str>],
        at: Timestamp,
        core: &mut Core,
    ) -> Outcome {
        // Raft indexes order membership cluster-wide, whatever the records' times say.
        if self.members_index.is_some_and(|newest| index <= newest) {
            return Outcome::Stale;
        }
        self.members_index = Some(index);
        let mut ids: Vec<NodeId> = members.iter().map(|m| self.names.id(m)).collect();
        ids.sort_by(|a, b| self.names.name(*a).cmp(self.names.name(*b)));
        ids.dedup();
        let w = self.params.windows.members;
        let observed =
            self.members.observe(Members(ids), at, w, self.params.startup_grace, &mut core.seq);
        self.handle(observed, KeyRef::Members, core);
        Outcome::Applied
    }

    fn apply_read_only(
        &mut self,
        r: NodeId,
        read_only: bool,
        at: Timestamp,
        core: &mut Core,
    ) -> Outcome {
        let Some(rep) = self.reporter_state.get_mut(&r) else {
            return Outcome::Ignored;
        };
        if at < rep.ro_ts {
            return Outcome::Stale;
        }
        rep.ro_ts = at;
        let changed = rep.read_only != Some(read_only);
        rep.read_only = Some(read_only);
        if changed {
            self.derive_read_only(at, core);
        }
        Outcome::Applied
    }

    fn apply_router(
        &mut self,
        r: NodeId,
        router: &str,
        online: bool,
        at: Timestamp,
        core: &mut Core,
    ) -> Outcome {
        let key: Arc<str> = match self.routers.get_key_value(router) {
            Some((k, _)) => k.clone(),
            None => {
                let k: Arc<str> = Arc::from(router);
                core.arm_eviction(at, self.index, KeyRef::Router(k.clone()), self.params.key_ttl);
                self.routers.insert(k.clone(), RouterState::default());
                k
            }
        };
        let Some(state) = self.routers.get_mut(&key) else {
            return Outcome::Ignored;
        };
        match state.reports.iter_mut().find(|(rep, _, _)| *rep == r) {
            Some(report) if at < report.2 => return Outcome::Stale,
            Some(report) => *report = (r, online, at),
            None => {
                // Most routers are reported by one controller: no spare capacity per router.
                state.reports.reserve_exact(1);
                state.reports.push((r, online, at));
            }
        }
        state.last_record = state.last_record.max(at);
        self.derive_router(&key, at, core);
        Outcome::Applied
    }

    #[allow(clippy::too_many_arguments)]
    fn apply_check(
        &mut self,
        node: NodeId,
        ok: bool,
        via: Via,
        down_after: u32,
        up_after: u32,
        at: Timestamp,
        core: &mut Core,
    ) -> Outcome {
        let n = self.liveness_entry(node, at, core);
        if n.last_check.is_some_and(|last| at < last) {
            return Outcome::Stale;
        }
        n.last_check = Some(at);
        n.last_record = n.last_record.max(at);
        let (observed, verdict_changed) = n.check(ok, via, down_after, up_after, at, &mut core.seq);
        self.handle(observed, KeyRef::Alive(node), core);
        if verdict_changed {
            self.liveness_changed(at, core);
        }
        Outcome::Applied
    }

    fn apply_entity(
        &mut self,
        r: NodeId,
        op: EntityOp,
        slot: &Slot<'_>,
        at: Timestamp,
        core: &mut Core,
    ) -> Outcome {
        let name = slot_key(slot);
        let key: Arc<str> = match self.slots.get_key_value(name.as_str()) {
            Some((k, _)) => k.clone(),
            None => {
                let k: Arc<str> = Arc::from(name);
                core.arm_eviction(at, self.index, KeyRef::Slot(k.clone()), self.params.key_ttl);
                self.slots.insert(k.clone(), SpinSlot::default());
                k
            }
        };
        let Some(state) = self.slots.get_mut(&key) else {
            return Outcome::Ignored;
        };
        if state.stale(r, at) {
            return Outcome::Stale;
        }
        state.last_record = state.last_record.max(at);
        let (due, suppressed) =
            state.record(op, at, self.params.spin_cycles, self.params.spin_period, &mut core.seq);
        for d in due {
            core.schedule(d, self.index, KeyRef::Slot(key.clone()));
        }
        if suppressed {
            self.count_suppressed(EventKind::SpinStarted, core);
            return Outcome::Suppressed;
        }
        Outcome::Applied
    }

    // ---- liveness -----------------------------------------------------------------------

    fn liveness_entry(
        &mut self,
        node: NodeId,
        at: Timestamp,
        core: &mut Core,
    ) -> &mut NodeLiveness {
        let (index, ttl) = (self.index, self.params.key_ttl);
        self.nodes.entry(node).or_insert_with(|| {
            core.arm_eviction(at, index, KeyRef::Alive(node), ttl);
            NodeLiveness { last_record: at, ..NodeLiveness::default() }
        })
    }

    /// Whether more than half of the other reporters' latest peer record for `node` says
    /// disconnected (raw records, whoever reported them, live or not).
    fn peers_say_down(&self, node: NodeId) -> bool {
        let disconnected = self.disconnected_by.get(&node).copied().unwrap_or(0) as usize;
        let others = self.reporters.len() - usize::from(self.reporter_state.contains_key(&node));
        disconnected * 2 > others
    }

    /// Re-evaluates the peers' evidence on `node`; returns whether it changed.
    fn update_peer_evidence(&mut self, node: NodeId, at: Timestamp, core: &mut Core) -> bool {
        let down = self.peers_say_down(node);
        let was = self.nodes.get(&node).is_some_and(|n| n.peers_down);
        if down == was {
            return false;
        }
        let (w, grace) = (self.params.windows.alive, self.params.startup_grace);
        let n = self.liveness_entry(node, at, core);
        n.last_record = n.last_record.max(at);
        let observed = n.peer_evidence(down, at, w, grace, &mut core.seq);
        self.handle(observed, KeyRef::Alive(node), core);
        true
    }

    pub fn is_live(&self, node: NodeId) -> bool {
        match self.nodes.get(&node) {
            Some(n) => !n.verdict_down() && !n.peers_down,
            None => true,
        }
    }

    /// A reporter's liveness changed: everything derived from "the live reporters" follows.
    fn liveness_changed(&mut self, at: Timestamp, core: &mut Core) {
        self.derive_leader(at, core);
        self.derive_read_only(at, core);
        self.derive_split(at, core);
        // Sorted: the order of re-evaluation decides sequence numbers, hence output order.
        let mut routers: Vec<Arc<str>> = self.routers.keys().cloned().collect();
        routers.sort_unstable();
        for r in routers {
            self.derive_router(&r, at, core);
        }
    }

    // ---- derived state -----------------------------------------------------------------

    fn live_views(&self) -> impl Iterator<Item = (NodeId, Option<NodeId>)> + '_ {
        self.reporters.iter().filter_map(move |r| match self.reporter_state.get(r)?.view {
            RawView::Known(v) if self.is_live(*r) => Some((*r, v)),
            _ => None,
        })
    }

    /// X when more than half of the live reporters whose view is known say X; none when more
    /// than half say none; otherwise in transition (`None`).
    fn derived_leader(&self) -> Option<Leader> {
        let mut known = 0usize;
        let mut tally: Vec<(Option<NodeId>, usize)> = Vec::with_capacity(4);
        for (_, v) in self.live_views() {
            known += 1;
            match tally.iter_mut().find(|(x, _)| *x == v) {
                Some((_, c)) => *c += 1,
                None => tally.push((v, 1)),
            }
        }
        tally.into_iter().find(|(_, c)| c * 2 > known).map(|(v, _)| Leader(v))
    }

    fn derive_leader(&mut self, at: Timestamp, core: &mut Core) {
        let observed = match self.derived_leader() {
            Some(v) => self.leader.observe(
                v,
                at,
                self.params.windows.leader,
                self.params.startup_grace,
                &mut core.seq,
            ),
            None => self.leader.observe_emitted(),
        };
        self.handle(observed, KeyRef::Leader, core);
    }

    fn derive_read_only(&mut self, at: Timestamp, core: &mut Core) {
        let (mut known, mut ro) = (0usize, 0usize);
        for r in &self.reporters {
            if let Some(Some(v)) = self.reporter_state.get(r).map(|s| s.read_only) {
                if self.is_live(*r) {
                    known += 1;
                    ro += usize::from(v);
                }
            }
        }
        let observed = if known == 0 {
            self.read_only.observe_emitted()
        } else {
            let v = ReadOnly(ro * 2 > known);
            self.read_only.observe(
                v,
                at,
                self.params.windows.read_only,
                self.params.startup_grace,
                &mut core.seq,
            )
        };
        self.handle(observed, KeyRef::ReadOnly, core);
    }

    fn derive_router(&mut self, router: &Arc<str>, at: Timestamp, core: &mut Core) {
        let Some(state) = self.routers.get(router) else {
            return;
        };
        let online = state.reports.iter().any(|&(r, on, _)| on && self.is_live(r));
        let offline = state.reports.iter().all(|&(_, on, _)| !on);
        let (w, grace) = (self.params.windows.router, self.params.startup_grace);
        let Some(state) = self.routers.get_mut(router) else {
            return;
        };
        let observed = if online {
            state.window.observe(Online(true), at, w, grace, &mut core.seq)
        } else if offline {
            state.window.observe(Online(false), at, w, grace, &mut core.seq)
        } else {
            state.window.observe_emitted()
        };
        self.handle(observed, KeyRef::Router(router.clone()), core);
    }

    fn claimants(&self) -> Vec<NodeId> {
        let mut c: Vec<NodeId> =
            self.live_views().filter(|(r, v)| *v == Some(*r)).map(|(r, _)| r).collect();
        c.sort_by(|a, b| self.names.name(*a).cmp(self.names.name(*b)));
        c
    }

    fn derive_split(&mut self, at: Timestamp, core: &mut Core) {
        let claims = self.live_views().filter(|(r, v)| *v == Some(*r)).count();
        let window = self.params.split_window;
        let split = &mut self.split;
        if !split.active {
            if claims >= 2 {
                if split.candidate.is_none() {
                    let seq = core.seq.issue();
                    split.candidate = Some((at, seq));
                    core.schedule(
                        Scheduled { due: at.saturating_add(window), at, seq },
                        self.index,
                        KeyRef::SplitBrain,
                    );
                }
            } else if split.candidate.take().is_some() {
                split.suppressed += 1;
                self.count_suppressed(EventKind::SplitBrain, core);
            }
        } else if claims <= 1 {
            if split.resolving.is_none() {
                let seq = core.seq.issue();
                split.resolving = Some((at, seq));
                core.schedule(
                    Scheduled { due: at.saturating_add(window), at, seq },
                    self.index,
                    KeyRef::SplitBrain,
                );
            }
        } else if split.resolving.take().is_some() {
            split.suppressed += 1;
            self.count_suppressed(EventKind::SplitBrainResolved, core);
        }
    }

    // ---- bookkeeping -------------------------------------------------------------------

    fn handle(&mut self, observed: Observed, key: KeyRef, core: &mut Core) {
        match observed {
            Observed::Nothing => {}
            Observed::Reverted(kind) => self.count_suppressed(kind, core),
            Observed::Scheduled(s) => core.schedule(s, self.index, key),
        }
    }

    fn count_suppressed(&mut self, kind: EventKind, core: &mut Core) {
        core.stats.suppressed += 1;
        if let Some(i) = EventKind::ALL.iter().position(|k| *k == kind) {
            self.suppressed_by_kind[i] += 1;
        }
    }

    // ---- deadlines ---------------------------------------------------------------------

    /// Emits what the deadline `seq` of `key` stands for, if it is still current.
    pub fn fire(&mut self, key: &KeyRef, seq: u64) -> Option<ClusterEvent> {
        match key {
            KeyRef::Leader => {
                let f = self.leader.fire(seq)?;
                Some(self.leader_event(f))
            }
            KeyRef::ReadOnly => {
                let f = self.read_only.fire(seq)?;
                Some(self.event(f.value.kind(), &f).seal(&[]))
            }
            KeyRef::Members => {
                let f = self.members.fire(seq)?;
                Some(self.members_event(f))
            }
            KeyRef::SplitBrain => self.fire_split(seq),
            KeyRef::View(node) => {
                let f = self.views.get_mut(node)?.window.fire(seq)?;
                let n = self.names.name(*node).to_string();
                let mut e = self.event(f.value.kind(), &f);
                e.leader_id = f.value.0.map(|l| self.names.name(l).to_string());
                e.node = Some(n.clone());
                Some(e.seal(&[&n]))
            }
            KeyRef::Peer(node, peer) => {
                let f = self.peers.get_mut(&(*node, *peer))?.window.fire(seq)?;
                let (n, p) =
                    (self.names.name(*node).to_string(), self.names.name(*peer).to_string());
                let mut e = self.event(f.value.kind(), &f);
                e.node = Some(n.clone());
                e.peer = Some(p.clone());
                Some(e.seal(&[&n, &p]))
            }
            KeyRef::Router(router) => {
                let f = self.routers.get_mut(router)?.window.fire(seq)?;
                let mut e = self.event(f.value.kind(), &f);
                e.router = Some(router.to_string());
                Some(e.seal(&[router]))
            }
            KeyRef::Alive(node) => {
                let f = self.nodes.get_mut(node)?.window.fire(seq)?;
                let n = self.names.name(*node).to_string();
                let mut e = self.event(f.value.kind(), &f);
                e.node = Some(n.clone());
                e.via = Some(f.value.via);
                Some(e.seal(&[&n]))
            }
            KeyRef::Slot(slot) => {
                let period = self.params.spin_period;
                let f = self.slots.get_mut(slot)?.fire(seq, period)?;
                let kind = if f.started { EventKind::SpinStarted } else { EventKind::SpinStopped };
                let [service, router, host] = slot_parts(slot);
                let mut e = ClusterEvent::new(kind, &self.name, f.at, f.at);
                e.service = Some(service.to_string());
                e.router = Some(router.to_string());
                e.host = Some(host.to_string());
                e.cycles = Some(f.cycles);
                e.suppressed = f.suppressed;
                Some(e.seal(&[service, router, host]))
            }
        }
    }

    /// An event with the window's common fields; the caller adds its own and seals it.
    fn event<V>(&self, kind: EventKind, f: &Fired<V>) -> ClusterEvent {
        let mut e = ClusterEvent::new(kind, &self.name, f.at, f.stable_at);
        e.initial = f.initial;
        e.suppressed = f.suppressed;
        e
    }

    fn names_of(&self, ids: impl IntoIterator<Item = NodeId>) -> Vec<String> {
        ids.into_iter().map(|i| self.names.name(i).to_string()).collect()
    }

    fn leader_event(&mut self, f: Fired<Leader>) -> ClusterEvent {
        let kind = f.value.kind();
        let mut e = self.event(kind, &f);
        e.leader_id = f.value.0.map(|l| self.names.name(l).to_string());
        e.previous = self.last_leader_before(&f).map(|l| self.names.name(l).to_string());
        let mut reporters: Vec<String> =
            self.names_of(self.live_views().filter(|(_, v)| *v == f.value.0).map(|(r, _)| r));
        reporters.sort();
        e.reporters = Some(reporters);
        if let Some(l) = f.value.0 {
            self.last_leader = Some(l);
        }
        e.seal(&[])
    }

    /// `previous` on leader events: the last emitted leader id, skipping leaderless periods.
    fn last_leader_before(&self, f: &Fired<Leader>) -> Option<NodeId> {
        match f.previous {
            Some(Leader(Some(l))) => Some(l),
            _ => self.last_leader,
        }
    }

    fn members_event(&self, f: Fired<Members>) -> ClusterEvent {
        let mut e = self.event(EventKind::MembersChanged, &f);
        let now = &f.value.0;
        let before: &[NodeId] = f.previous.as_ref().map(|m| m.0.as_slice()).unwrap_or(&[]);
        e.members = Some(self.names_of(now.iter().copied()));
        e.added = Some(self.names_of(now.iter().copied().filter(|m| !before.contains(m))));
        e.removed = Some(self.names_of(before.iter().copied().filter(|m| !now.contains(m))));
        e.seal(&[])
    }

    fn fire_split(&mut self, seq: u64) -> Option<ClusterEvent> {
        let window = self.params.split_window;
        let claimants = self.claimants();
        let names = self.names_of(claimants.iter().copied());
        let split = &mut self.split;
        let (kind, at) = match (split.candidate, split.resolving) {
            (Some((at, s)), _) if s == seq => {
                split.candidate = None;
                split.active = true;
                (EventKind::SplitBrain, at)
            }
            (_, Some((at, s))) if s == seq => {
                split.resolving = None;
                split.active = false;
                (EventKind::SplitBrainResolved, at)
            }
            _ => return None,
        };
        let mut e = ClusterEvent::new(kind, &self.name, at, at.saturating_add(window));
        e.suppressed = std::mem::take(&mut split.suppressed);
        if kind == EventKind::SplitBrain {
            e.leaders = Some(names.clone());
        }
        e.reporters = Some(names);
        Some(e.seal(&[]))
    }

    // ---- eviction ----------------------------------------------------------------------

    fn removed_member(&self, node: NodeId) -> bool {
        self.members.emitted().is_some_and(|m| !m.0.contains(&node))
    }

    /// The last record time of `key`, and whether its state lets it go: negative, removed or
    /// quiet, with nothing pending.
    fn eviction_state(&self, key: &KeyRef) -> Option<(Timestamp, bool)> {
        fn negative<V: StateValue>(w: &StabilityWindow<V>) -> bool {
            w.pending().is_none() && w.emitted().is_none_or(|v| v.is_negative())
        }
        match key {
            KeyRef::View(n) => {
                let k = self.views.get(n)?;
                let idle = k.window.pending().is_none();
                Some((k.last_record, idle && (negative(&k.window) || self.removed_member(*n))))
            }
            KeyRef::Peer(n, p) => {
                let k = self.peers.get(&(*n, *p))?;
                let idle = k.window.pending().is_none();
                let gone = self.removed_member(*n) || self.removed_member(*p);
                Some((k.last_record, idle && (negative(&k.window) || gone)))
            }
            KeyRef::Router(r) => {
                let k = self.routers.get(r)?;
                Some((k.last_record, negative(&k.window)))
            }
            KeyRef::Alive(n) => {
                let k = self.nodes.get(n)?;
                let idle = k.window.pending().is_none();
                Some((k.last_record, idle && (negative(&k.window) || self.removed_member(*n))))
            }
            KeyRef::Slot(s) => {
                let k = self.slots.get(s)?;
                Some((k.last_record, k.is_quiet()))
            }
            KeyRef::Leader | KeyRef::ReadOnly | KeyRef::Members | KeyRef::SplitBrain => None,
        }
    }

    /// Evicts `key` if it has had no record for the key TTL and may go. Returns `Err(next)`
    /// with when to look again, or `Ok(true)` when it was evicted.
    pub fn try_evict(&mut self, key: &KeyRef, now: Timestamp) -> Result<bool, Timestamp> {
        let ttl = self.params.key_ttl;
        let Some((last, may_go)) = self.eviction_state(key) else {
            return Ok(false);
        };
        let expires = last.saturating_add(ttl);
        if expires > now {
            return Err(expires);
        }
        if !may_go {
            return Err(now.saturating_add(ttl));
        }
        match key {
            KeyRef::View(n) => {
                self.views.remove(n);
            }
            KeyRef::Peer(n, p) => {
                if let Some(link) = self.peers.remove(&(*n, *p)) {
                    if !link.connected && n != p {
                        if let Some(c) = self.disconnected_by.get_mut(p) {
                            *c = c.saturating_sub(1);
                        }
                    }
                }
            }
            KeyRef::Router(r) => {
                self.routers.remove(r);
            }
            KeyRef::Alive(n) => {
                self.nodes.remove(n);
            }
            KeyRef::Slot(s) => {
                self.slots.remove(s);
            }
            KeyRef::Leader | KeyRef::ReadOnly | KeyRef::Members | KeyRef::SplitBrain => {
                return Ok(false)
            }
        }
        Ok(true)
    }

    /// The key's subject parts as they appear in events (for the metrics of an evicted key).
    pub fn subject(&self, key: &KeyRef) -> Vec<String> {
        match key {
            KeyRef::View(n) | KeyRef::Alive(n) => vec![self.names.name(*n).to_string()],
            KeyRef::Peer(n, p) => {
                vec![self.names.name(*n).to_string(), self.names.name(*p).to_string()]
            }
            KeyRef::Router(r) => vec![r.to_string()],
            KeyRef::Slot(s) => slot_parts(s).iter().map(|p| p.to_string()).collect(),
            KeyRef::Leader | KeyRef::ReadOnly | KeyRef::Members | KeyRef::SplitBrain => Vec::new(),
        }
    }
}
