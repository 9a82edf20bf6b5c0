//! One cluster's state: raw per-reporter facts, the keys derived from them, and their windows
//! (DESIGN §5.2–§5.5).
//!
//! Raw facts (a reporter's latest view, read-only state, peer and router records) are applied
//! at once, last-writer-wins per `(reporter, key)` on record time ([`records`]). Every key —
//! fed directly by records (views, peers) or derived from many reporters (the cluster leader,
//! read-only, routers, liveness from peers, [`derive`]) — then goes through the same
//! [`StabilityWindow`]. A record is atomic: derived values are evaluated once, after the whole
//! record is applied, and only those whose inputs it changed, so a record costs work in
//! proportion to what it touches, not to the size of the cluster.
//!
//! - [`key`]: the keys, and what each kind of key is to events and metrics
//! - [`names`]: the node-name interner
//! - [`values`]: the values keys take and the raw facts behind them
//! - [`records`]: applying each kind of record
//! - [`staging`]: two-phase entity changes
//! - [`derive`]: liveness, leader, read-only and routers from the reporters' facts
//! - [`split`]: split-brain episodes
//! - [`events`]: the event a key emits when its deadline fires
//! - [`eviction`]: letting keys go after `key_ttl`
//! - [`held`]: the keys a cluster holds, whether it is spent, its stable state

mod derive;
mod entries;
mod events;
mod eviction;
mod held;
mod key;
mod keyed;
mod names;
mod records;
mod split;
mod staging;
mod values;

use std::sync::Arc;

use rustc_hash::FxHashMap as HashMap;
use serde::{Deserialize, Serialize};

use super::liveness::NodeLiveness;
use super::schedule::Schedule;
use super::spin::SpinSlot;
use super::window::{Observed, StabilityWindow};
use super::{Outcome, Params};
use crate::model::{EventKind, Observation, Signal, Timestamp};

use derive::Touched;
pub(crate) use entries::{
    cluster_key, decode, encode, parse_cluster_key, ClusterKey, OwnChecks, CLUSTER,
};
pub(crate) use key::StateKey;
use keyed::Keyed;
use names::Names;
pub use names::NodeId;
use split::SplitBrain;
use staging::{Staged, Staging};
pub(crate) use values::NO_CHECK;
use values::{Leader, Members, NodeView, PeerLink, ReadOnly, ReportedView, Reporter, RouterState};

/// Persisted in snapshots in field order; `index` and `params` are rebuilt on restore.
#[derive(Serialize, Deserialize)]
pub(crate) struct Cluster {
    pub name: Arc<str>,
    pub index: u32,
    /// Taken from the configuration on restore, not from the snapshot.
    #[serde(skip)]
    pub params: Params,
    names: Names,
    /// Reporters in the order first seen.
    reporters: Vec<NodeId>,
    reporter_state: HashMap<NodeId, Reporter>,
    leader: StabilityWindow<Leader>,
    read_only: StabilityWindow<ReadOnly>,
    members: StabilityWindow<Members>,
    members_index: Option<u64>,
    /// The last leader id ever emitted: `previous` skips leaderless periods.
    last_leader: Option<NodeId>,
    split: SplitBrain,
    views: HashMap<NodeId, NodeView>,
    peers: HashMap<(NodeId, NodeId), PeerLink>,
    /// Per node: how many other reporters' latest peer record for it says disconnected.
    disconnected_by: HashMap<NodeId, u32>,
    routers: Keyed<RouterState>,
    nodes: HashMap<NodeId, NodeLiveness>,
    slots: Keyed<SpinSlot>,
    staging: Staging,
    /// Reverts and suppressed records, by the kind they would have produced.
    pub suppressed_by_kind: [u64; EventKind::ALL.len()],
    #[serde(skip)]
    touched: Touched,
    /// Events emitted, by kind; persisted beside the cluster ([`ClusterExtras`]).
    #[serde(skip)]
    pub emitted_by_kind: [u64; EventKind::ALL.len()],
    /// The newest record time applied; persisted beside the cluster.
    #[serde(skip)]
    pub last_record: Timestamp,
    /// A record was refused at the key cap and said so: once per cluster.
    #[serde(skip)]
    pub over_limit_noticed: bool,
    /// Keys of members a membership change removed, not emitted since: the view dropped
    /// them with the change, so the view rebuilt after a restart leaves them out too.
    /// Persisted beside the cluster.
    #[serde(skip)]
    pub hidden: std::collections::BTreeSet<StateKey>,
}

/// What snapshots of format 2 keep per cluster beside [`Cluster`] itself, so that the
/// cluster's own layout stays the one format 1 wrote.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub(crate) struct ClusterExtras {
    pub emitted_by_kind: [u64; EventKind::ALL.len()],
    pub last_record: Timestamp,
    pub hidden: Vec<StateKey>,
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
            routers: Keyed::default(),
            nodes: HashMap::default(),
            slots: Keyed::default(),
            staging: Staging::default(),
            suppressed_by_kind: [0; EventKind::ALL.len()],
            touched: Touched::default(),
            emitted_by_kind: [0; EventKind::ALL.len()],
            last_record: Timestamp::MIN,
            over_limit_noticed: false,
            hidden: Default::default(),
        }
    }

    /// Applies one record of this cluster, then derives what it changed, once (DESIGN
    /// §5.4a, atomic records).
    pub fn apply(&mut self, obs: &Observation<'_>, sched: &mut Schedule) -> Outcome {
        self.last_record = self.last_record.max(obs.at);
        let outcome = self.apply_record(obs, sched);
        self.settle(obs.at, sched);
        outcome
    }

    fn apply_record(&mut self, obs: &Observation<'_>, sched: &mut Schedule) -> Outcome {
        let at = obs.at;
        let reporter = self.names.id(&obs.reporter);
        // A probe is not a member of the cluster: it must not change "half of the others".
        // Every other record's reporter is one, whatever the record's namespace.
        if let Signal::NodeCheck { node, ok, via, down_after, up_after } = &obs.signal {
            let node = self.names.id(node);
            return self.apply_check(node, *ok, *via, *down_after, *up_after, at, sched);
        }
        self.register(reporter);
        match &obs.signal {
            Signal::View { leader } => {
                let leader = leader.as_deref().map(|l| self.names.id(l));
                self.apply_view(reporter, ReportedView::Known(leader), at, sched)
            }
            Signal::SelfLeader { is_leader: true } => {
                self.apply_view(reporter, ReportedView::Known(Some(reporter)), at, sched)
            }
            Signal::SelfLeader { is_leader: false } => {
                self.apply_view(reporter, ReportedView::Unknown, at, sched)
            }
            Signal::Peer { peer, connected } => {
                let peer = self.names.id(peer);
                self.apply_peer(reporter, peer, *connected, at, sched)
            }
            Signal::Members { index, members } => self.apply_members(*index, members, at, sched),
            Signal::ReadOnly { read_only } => self.apply_read_only(reporter, *read_only, at),
            Signal::Router { router, online } => {
                self.apply_router(reporter, router, *online, at, sched)
            }
            Signal::Entity { op, slot } => self.apply_entity(reporter, *op, slot, at, sched),
            Signal::StagedEntity { event_id, op, slot } => {
                sched.stats.ignored += self.staging.prune(sched.now);
                let slot = slot.clone().into_owned();
                let change = Staged { reporter, at, op: *op, slot };
                match self.staging.stage(event_id, change, sched.now) {
                    Some(c) => self.apply_entity(c.reporter, c.op, &c.slot, c.at, sched),
                    None => Outcome::Applied,
                }
            }
            Signal::Commit { event_id } => {
                sched.stats.ignored += self.staging.prune(sched.now);
                match self.staging.commit(event_id, sched.now) {
                    Some(c) => self.apply_entity(c.reporter, c.op, &c.slot, c.at, sched),
                    None => Outcome::Applied,
                }
            }
            Signal::NodeCheck { .. } => Outcome::Ignored,
        }
    }

    /// Halves of two-phase changes that waited too long go, counted as ignored; returns
    /// whether any still wait.
    pub fn expire_staged(&mut self, sched: &mut Schedule) -> bool {
        sched.stats.ignored += self.staging.prune(sched.now);
        !self.staging.is_empty()
    }

    /// End of input: no waiting half will meet its other half any more.
    pub fn drop_staged(&mut self, sched: &mut Schedule) {
        sched.stats.ignored += self.staging.drop_all();
    }

    /// When the oldest waiting half of a two-phase change has waited too long.
    pub fn staged_expiry(&self) -> Option<Timestamp> {
        self.staging.expiry()
    }

    /// Puts what a window did on the schedule or the counters.
    fn handle(&mut self, observed: Observed, key: StateKey, sched: &mut Schedule) {
        match observed {
            Observed::Nothing => {}
            Observed::Reverted(kind) => self.count_suppressed(kind, sched),
            Observed::Scheduled(s) => sched.push(s, self.index, key),
        }
    }

    pub fn count_emitted(&mut self, kind: EventKind) {
        if let Some(i) = EventKind::ALL.iter().position(|k| *k == kind) {
            self.emitted_by_kind[i] += 1;
        }
    }

    fn count_suppressed(&mut self, kind: EventKind, sched: &mut Schedule) {
        sched.stats.suppressed += 1;
        if let Some(i) = EventKind::ALL.iter().position(|k| *k == kind) {
            self.suppressed_by_kind[i] += 1;
        }
    }
}
