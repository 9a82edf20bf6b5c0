//! Applying each kind of record to the cluster's raw facts and the keys they feed directly.
//!
//! A record is last-writer-wins per `(reporter, key)` on its own time (DESIGN §5.3): an older
//! record than the newest applied for the pair is stale and changes nothing. The keys a record
//! feeds directly are observed here; what it changes among the inputs of derived state is
//! noted in [`Touched`](super::derive::Touched) and derived once the whole record is applied.

use std::borrow::Cow;
use std::sync::Arc;

use super::key::{slot_key, StateKey};
use super::names::NodeId;
use super::values::{
    Connected, LeaderView, Members, NodeView, PeerLink, ReportedView, Reporter, RouterState,
};
use super::Cluster;
use crate::engine::schedule::Schedule;
use crate::engine::spin::SpinSlot;
use crate::engine::window::StabilityWindow;
use crate::engine::Outcome;
use crate::model::{EntityOp, EventKind, Slot, Timestamp, Via};

impl Cluster {
    /// Makes `r` a reporter of this cluster. A new reporter changes "more than half of the
    /// other reporters" for every node, which [`Cluster::settle`] re-evaluates with the rest
    /// of the record.
    pub(super) fn register(&mut self, r: NodeId) {
        if self.reporter_state.contains_key(&r) {
            return;
        }
        self.reporter_state.insert(r, Reporter::default());
        self.reporters.push(r);
        self.touched.reporters = true;
    }

    pub(super) fn apply_view(
        &mut self,
        r: NodeId,
        view: ReportedView,
        at: Timestamp,
        sched: &mut Schedule,
    ) -> Outcome {
        let Some(rep) = self.reporter_state.get_mut(&r) else {
            return Outcome::Ignored;
        };
        if at < rep.view_ts {
            return Outcome::Stale;
        }
        rep.view_ts = at;
        let before = rep.view;
        rep.view = view;
        if let ReportedView::Known(leader) = view {
            let w = self.params.windows.leader_view;
            let grace = self.params.startup_grace;
            let key = self.views.entry(r).or_insert_with(|| {
                sched.arm_eviction(at, self.index, StateKey::LeaderView(r), self.params.key_ttl);
                NodeView { window: StabilityWindow::default(), last_record: at }
            });
            key.last_record = key.last_record.max(at);
            let observed = key.window.observe(LeaderView(leader), at, w, grace, &mut sched.seq);
            self.handle(observed, StateKey::LeaderView(r), sched);
        }
        self.touched.views |= before != view;
        Outcome::Applied
    }

    pub(super) fn apply_peer(
        &mut self,
        r: NodeId,
        peer: NodeId,
        connected: bool,
        at: Timestamp,
        sched: &mut Schedule,
    ) -> Outcome {
        let w = self.params.windows.peer;
        let grace = self.params.startup_grace;
        let link = self.peers.entry((r, peer)).or_insert_with(|| {
            sched.arm_eviction(at, self.index, StateKey::Peer(r, peer), self.params.key_ttl);
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
        let observed = link.window.observe(Connected(connected), at, w, grace, &mut sched.seq);
        self.handle(observed, StateKey::Peer(r, peer), sched);
        if was != connected && r != peer {
            let count = self.disconnected_by.entry(peer).or_insert(0);
            if connected {
                *count = count.saturating_sub(1);
            } else {
                *count += 1;
            }
            self.touched.nodes.push(peer);
        }
        Outcome::Applied
    }

    pub(super) fn apply_members(
        &mut self,
        index: u64,
        members: &[Cow<'_, str>],
        at: Timestamp,
        sched: &mut Schedule,
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
            self.members.observe(Members(ids), at, w, self.params.startup_grace, &mut sched.seq);
        self.handle(observed, StateKey::Members, sched);
        Outcome::Applied
    }

    pub(super) fn apply_read_only(&mut self, r: NodeId, read_only: bool, at: Timestamp) -> Outcome {
        let Some(rep) = self.reporter_state.get_mut(&r) else {
            return Outcome::Ignored;
        };
        if at < rep.ro_ts {
            return Outcome::Stale;
        }
        rep.ro_ts = at;
        self.touched.read_only |= rep.read_only != Some(read_only);
        rep.read_only = Some(read_only);
        Outcome::Applied
    }

    pub(super) fn apply_router(
        &mut self,
        r: NodeId,
        router: &str,
        online: bool,
        at: Timestamp,
        sched: &mut Schedule,
    ) -> Outcome {
        let key: Arc<str> = match self.routers.get_key_value(router) {
            Some((k, _)) => k.clone(),
            None => {
                let k: Arc<str> = Arc::from(router);
                let check = sched.arm_eviction(
                    at,
                    self.index,
                    StateKey::Router(k.clone()),
                    self.params.key_ttl,
                );
                self.routers.insert(k.clone(), RouterState { check, ..RouterState::default() });
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
                let mut reports = std::mem::take(&mut state.reports).into_vec();
                reports.reserve_exact(1);
                reports.push((r, online, at));
                state.reports = reports.into_boxed_slice();
            }
        }
        state.last_record = state.last_record.max(at);
        self.touched.router = Some(key);
        Outcome::Applied
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn apply_check(
        &mut self,
        node: NodeId,
        ok: bool,
        via: Via,
        down_after: u32,
        up_after: u32,
        at: Timestamp,
        sched: &mut Schedule,
    ) -> Outcome {
        let n = self.liveness_entry(node, at, sched);
        if n.last_check.is_some_and(|last| at < last) {
            return Outcome::Stale;
        }
        n.last_check = Some(at);
        n.last_record = n.last_record.max(at);
        let (observed, verdict_changed) =
            n.check(ok, via, down_after, up_after, at, &mut sched.seq);
        self.handle(observed, StateKey::Alive(node), sched);
        self.touched.verdict |= verdict_changed;
        Outcome::Applied
    }

    pub(super) fn apply_entity(
        &mut self,
        r: NodeId,
        op: EntityOp,
        slot: &Slot<'_>,
        at: Timestamp,
        sched: &mut Schedule,
    ) -> Outcome {
        let name = slot_key(slot);
        let key: Arc<str> = match self.slots.get_key_value(name.as_str()) {
            Some((k, _)) => k.clone(),
            None => {
                let k: Arc<str> = Arc::from(name);
                let key = StateKey::Slot(k.clone());
                let check = sched.arm_eviction(at, self.index, key, self.params.key_ttl);
                let mut slot = SpinSlot::default();
                slot.check = check;
                self.slots.insert(k.clone(), slot);
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
            state.record(op, at, self.params.spin_cycles, self.params.spin_period, &mut sched.seq);
        for d in due {
            sched.push(d, self.index, StateKey::Slot(key.clone()));
        }
        if suppressed {
            self.count_suppressed(EventKind::SpinStarted, sched);
            return Outcome::Suppressed;
        }
        Outcome::Applied
    }
}
