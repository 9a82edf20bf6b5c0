//! How events read outside their JSON form: the sentence an operator reads in a log viewer
//! (the OTLP log body).

use crate::model::{ClusterEvent, EventKind};

/// The log body: one sentence an operator can read in a log viewer.
pub fn sentence(e: &ClusterEvent) -> String {
    let c = &e.cluster;
    let or = |v: &Option<String>| v.clone().unwrap_or_default();
    let list = |v: &Option<Vec<String>>| v.as_deref().unwrap_or_default().join(", ");
    match e.kind {
        EventKind::LeaderElected => match &e.previous {
            Some(p) => format!("cluster {c}: {} is the leader (was {p})", or(&e.leader_id)),
            None => format!("cluster {c}: {} is the leader", or(&e.leader_id)),
        },
        EventKind::Leaderless => format!("cluster {c} has no leader"),
        EventKind::SplitBrain => {
            format!("cluster {c}: split brain, {} all claim leadership", list(&e.leaders))
        }
        EventKind::SplitBrainResolved => format!("cluster {c}: split brain resolved"),
        EventKind::ReadOnly => format!("cluster {c} is read-only"),
        EventKind::ReadWrite => format!("cluster {c} is read-write"),
        EventKind::MembersChanged => format!(
            "cluster {c}: members are {} (added: {}; removed: {})",
            list(&e.members),
            list(&e.added),
            list(&e.removed)
        ),
        EventKind::NodeHasLeader => {
            format!("cluster {c}: node {} sees {} as leader", or(&e.node), or(&e.leader_id))
        }
        EventKind::NodeIsLeaderless => format!("cluster {c}: node {} sees no leader", or(&e.node)),
        EventKind::PeerConnected => {
            format!("cluster {c}: node {} is connected to {}", or(&e.node), or(&e.peer))
        }
        EventKind::PeerDisconnected => {
            format!("cluster {c}: node {} lost its connection to {}", or(&e.node), or(&e.peer))
        }
        EventKind::RouterOnline => format!("cluster {c}: router {} is online", or(&e.router)),
        EventKind::RouterOffline => format!("cluster {c}: router {} is offline", or(&e.router)),
        EventKind::SpinStarted => format!(
            "cluster {c}: terminator of service {} on router {} is spinning ({} cycles)",
            or(&e.service),
            or(&e.router),
            e.cycles.unwrap_or(0)
        ),
        EventKind::SpinStopped => format!(
            "cluster {c}: terminator of service {} on router {} stopped spinning after {} cycles",
            or(&e.service),
            or(&e.router),
            e.cycles.unwrap_or(0)
        ),
        EventKind::NodeDown => format!("cluster {c}: node {} is down", or(&e.node)),
        EventKind::NodeUp => format!("cluster {c}: node {} is up", or(&e.node)),
    }
}
