//! State derived from many reporters' facts (DESIGN §5.4): node liveness from peers, the
//! cluster leader, read-only and routers.
//!
//! Records are atomic (DESIGN §5.4a): applying one only notes which inputs it changed
//! ([`Touched`]); the derived state is then evaluated once, from the state the whole record
//! produced. Registering a new reporter and applying its first record are thus one step, and
//! no intermediate state that no record produced starts, restarts or cancels a window.
//!
//! Each value is re-derived only when one of its inputs changed, and then goes through its
//! key's window like any observed value. "The live reporters" underlies leader, read-only,
//! routers and split brain, so a change of any reporter's liveness re-derives all of them.

use std::sync::Arc;

use super::key::StateKey;
use super::names::NodeId;
use super::values::{Leader, Online, ReadOnly, ReportedView};
use super::Cluster;
use crate::engine::liveness::NodeLiveness;
use crate::engine::schedule::Schedule;
use crate::model::Timestamp;

/// What a record changed among the inputs of derived state. Empty between records.
#[derive(Debug, Default)]
pub(super) struct Touched {
    /// A reporter seen for the first time: every node's "half of the other reporters" moved.
    pub reporters: bool,
    /// Nodes whose tally of disconnected reports changed.
    pub nodes: Vec<NodeId>,
    /// A probe or poll verdict changed, and with it a node's liveness.
    pub verdict: bool,
    /// A reporter's view changed (also its claim of leadership).
    pub views: bool,
    /// A reporter's read-only state changed.
    pub read_only: bool,
    /// The router a router record reported.
    pub router: Option<Arc<str>>,
}

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

    /// Derives everything the record just applied touched, once and in the pending order of
    /// DESIGN §5.4a: node liveness (by node name), leader, read-only, routers (by id), split
    /// brain. The record's own key came first, as it was applied. The order decides sequence
    /// numbers, hence the output order of events with equal `stable_at` and `at`.
    pub(super) fn settle(&mut self, at: Timestamp, sched: &mut Schedule) {
        let touched = std::mem::take(&mut self.touched);
        let mut nodes = touched.nodes;
        if touched.reporters {
            nodes.extend(self.disconnected_by.keys().copied());
        }
        nodes.sort_by(|a, b| self.names.name(*a).cmp(self.names.name(*b)));
        nodes.dedup();
        let mut liveness = touched.verdict;
        for n in nodes {
            liveness |= self.update_peer_evidence(n, at, sched);
        }
        // "The live reporters" underlies all that follows.
        if liveness || touched.views {
            self.derive_leader(at, sched);
        }
        if liveness || touched.read_only {
            self.derive_read_only(at, sched);
        }
        if liveness {
            let mut routers: Vec<Arc<str>> = self.routers.keys().cloned().collect();
            routers.sort_unstable();
            for r in routers {
                self.derive_router(&r, at, sched);
            }
        } else if let Some(r) = touched.router {
            self.derive_router(&r, at, sched);
        }
        if liveness || touched.views {
            self.derive_split(at, sched);
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
