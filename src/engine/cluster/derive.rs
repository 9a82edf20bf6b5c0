//! State derived from many reporters' facts (DESIGN §5.4): node liveness from peers, the
//! cluster leader, read-only and routers.
//!
//! Each is re-derived only when one of its inputs changed, and then goes through its key's
//! window like any observed value. "The live reporters" underlies leader, read-only, routers
//! and split brain, so a change of any reporter's liveness re-derives all of them.

use std::sync::Arc;

use super::key::StateKey;
use super::names::NodeId;
use super::values::{Leader, Online, ReadOnly, ReportedView};
use super::Cluster;
use crate::engine::liveness::NodeLiveness;
use crate::engine::schedule::Schedule;
use crate::model::Timestamp;

impl Cluster {
    pub(super) fn liveness_entry(
        &mut self,
        node: NodeId,
        at: Timestamp,
        sched: &mut Schedule,
    ) -> &mut NodeLiveness {
        let (index, ttl) = (self.index, self.params.key_ttl);
        self.nodes.entry(node).or_insert_with(|| {
            sched.arm_eviction(at, index, StateKey::Alive(node), ttl);
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
    pub(super) fn update_peer_evidence(
        &mut self,
        node: NodeId,
        at: Timestamp,
        sched: &mut Schedule,
    ) -> bool {
        let down = self.peers_say_down(node);
        let was = self.nodes.get(&node).is_some_and(|n| n.peers_down);
        if down == was {
            return false;
        }
        let (w, grace) = (self.params.windows.alive, self.params.startup_grace);
        let n = self.liveness_entry(node, at, sched);
        n.last_record = n.last_record.max(at);
        let observed = n.peer_evidence(down, at, w, grace, &mut sched.seq);
        self.handle(observed, StateKey::Alive(node), sched);
        true
    }

    pub(super) fn is_live(&self, node: NodeId) -> bool {
        match self.nodes.get(&node) {
            Some(n) => !n.verdict_down() && !n.peers_down,
            None => true,
        }
    }

    /// A reporter's liveness changed: everything derived from "the live reporters" follows.
    pub(super) fn liveness_changed(&mut self, at: Timestamp, sched: &mut Schedule) {
        self.derive_leader(at, sched);
        self.derive_read_only(at, sched);
        self.derive_split(at, sched);
        // Sorted: the order of re-evaluation decides sequence numbers, hence output order.
        let mut routers: Vec<Arc<str>> = self.routers.keys().cloned().collect();
        routers.sort_unstable();
        for r in routers {
            self.derive_router(&r, at, sched);
        }
    }

    pub(super) fn live_views(&self) -> impl Iterator<Item = (NodeId, Option<NodeId>)> + '_ {
        self.reporters.iter().filter_map(move |r| match self.reporter_state.get(r)?.view {
            ReportedView::Known(v) if self.is_live(*r) => Some((*r, v)),
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

    pub(super) fn derive_leader(&mut self, at: Timestamp, sched: &mut Schedule) {
        let observed = match self.derived_leader() {
            Some(v) => self.leader.observe(
                v,
                at,
                self.params.windows.leader,
                self.params.startup_grace,
                &mut sched.seq,
            ),
            None => self.leader.observe_emitted(),
        };
        self.handle(observed, StateKey::Leader, sched);
    }

    pub(super) fn derive_read_only(&mut self, at: Timestamp, sched: &mut Schedule) {
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
                &mut sched.seq,
            )
        };
        self.handle(observed, StateKey::ReadOnly, sched);
    }

    pub(super) fn derive_router(&mut self, router: &Arc<str>, at: Timestamp, sched: &mut Schedule) {
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
            state.window.observe(Online(true), at, w, grace, &mut sched.seq)
        } else if offline {
            state.window.observe(Online(false), at, w, grace, &mut sched.seq)
        } else {
            state.window.observe_emitted()
        };
        self.handle(observed, StateKey::Router(router.clone()), sched);
    }
}
