//! The values a cluster's keys take, and the raw per-reporter facts they are derived from.
//!
//! Each value knows whether it is negative (it then needs the startup grace before a key's
//! first emission, DESIGN §5.2) and which event emitting it produces. Values and facts are
//! persisted in snapshots by field and variant order: renaming is free, reordering is not.

use serde::{Deserialize, Serialize};

use super::names::NodeId;
use crate::engine::window::{StabilityWindow, StateValue};
use crate::model::{EventKind, Timestamp};

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

/// One reporter's view of the leader, as its `leader_view` key emits it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaderView(pub Option<NodeId>);

impl StateValue for LeaderView {
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

/// A reporter's latest view as its records state it: unknown after `leadership.lost` until
/// its next has_leader or is_leaderless, which is not a view to emit but does leave the
/// leader tally.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReportedView {
    Unknown,
    Known(Option<NodeId>),
}

/// What one reporter last said about itself, with the record times that make later records
/// of the same kind stale.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct Reporter {
    pub view: ReportedView,
    pub view_ts: Timestamp,
    pub read_only: Option<bool>,
    pub ro_ts: Timestamp,
}

impl Default for Reporter {
    fn default() -> Self {
        Reporter {
            view: ReportedView::Unknown,
            view_ts: Timestamp::MIN,
            read_only: None,
            ro_ts: Timestamp::MIN,
        }
    }
}

/// `(cluster, node, "leader_view")`: the windowed view, fed by one reporter's records.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub(crate) struct NodeView {
    pub window: StabilityWindow<LeaderView>,
    pub last_record: Timestamp,
}

/// `(cluster, node, peer)`: the raw latest record (liveness counts it) and the windowed key.
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
    /// A boxed slice, not a `Vec`: most routers have one reporter, and the capacity word a
    /// `Vec` carries pays for [`RouterState::check`] at a million routers.
    pub reports: Box<[(NodeId, bool, Timestamp)]>,
    pub last_record: Timestamp,
    /// When the router's one eviction check is due. The schedule holds the check; the router
    /// holds its time too, so that its entry alone restores it and a store writes one entry
    /// per new router, not three (DESIGN §7.1). Snapshots of format 2 do not carry it: the
    /// check on their schedule sets it ([`super::Cluster::adopt_own_schedule`]).
    #[serde(skip, default = "no_check")]
    pub check: Timestamp,
}

/// A check's time not known yet. No real one is: a check is due a key TTL after a record.
pub const NO_CHECK: Timestamp = Timestamp::MIN;

fn no_check() -> Timestamp {
    NO_CHECK
}

// A million routers are a million of these, at a hash table's load factor: the check's time
// came with the reporters' slice losing its capacity word, not with more bytes.
const _: () = assert!(std::mem::size_of::<RouterState>() == 48);
