//! The state gauges: the current stable view as Prometheus gauges, for `/metrics` and the
//! OTLP sink's metrics.

use prometheus::{IntGaugeVec, Opts, Registry};

use super::view::View;

/// The state gauges, rendered from the stable view at each scrape: reset, then set from what
/// is current. A leader that changed, a member removed, a key evicted simply is not there any
/// more — no ghost series, no expiry gap.
pub struct StateGauges {
    has_leader: IntGaugeVec,
    leader: IntGaugeVec,
    split_brain: IntGaugeVec,
    read_only: IntGaugeVec,
    node_has_leader: IntGaugeVec,
    peer_connected: IntGaugeVec,
    router_online: IntGaugeVec,
    node_up: IntGaugeVec,
    spinning: IntGaugeVec,
}

fn gauge(r: &Registry, name: &str, help: &str, labels: &[&str]) -> prometheus::Result<IntGaugeVec> {
    let g = IntGaugeVec::new(Opts::new(name, help), labels)?;
    r.register(Box::new(g.clone()))?;
    Ok(g)
}

impl StateGauges {
    pub fn register(r: &Registry) -> prometheus::Result<StateGauges> {
        Ok(StateGauges {
            has_leader: gauge(
                r,
                "herald_cluster_has_leader",
                "1 while the cluster has a stable leader",
                &["cluster"],
            )?,
            leader: gauge(
                r,
                "herald_cluster_leader",
                "1 for the cluster's current stable leader",
                &["cluster", "leader_id"],
            )?,
            split_brain: gauge(
                r,
                "herald_cluster_split_brain",
                "1 during a split-brain episode",
                &["cluster"],
            )?,
            read_only: gauge(
                r,
                "herald_cluster_read_only",
                "1 while the cluster is read-only",
                &["cluster"],
            )?,
            node_has_leader: gauge(
                r,
                "herald_node_has_leader",
                "1 while the node sees a leader",
                &["cluster", "node"],
            )?,
            peer_connected: gauge(
                r,
                "herald_peer_connected",
                "1 while the node is connected to the peer",
                &["cluster", "node", "peer"],
            )?,
            router_online: gauge(
                r,
                "herald_router_online",
                "1 while the router is online",
                &["cluster", "router"],
            )?,
            node_up: gauge(r, "herald_node_up", "1 while the node is up", &["cluster", "node"])?,
            spinning: gauge(
                r,
                "herald_terminator_spinning",
                "1 while the terminator slot spins",
                &["cluster", "service", "router", "host"],
            )?,
        })
    }

    pub fn families(&self) -> Vec<super::metrics::Family> {
        let all: Vec<(&dyn prometheus::core::Collector, bool)> = self
            .all()
            .into_iter()
            .map(|g| (g as &dyn prometheus::core::Collector, false))
            .collect();
        super::metrics::families(&all)
    }

    fn all(&self) -> [&IntGaugeVec; 9] {
        [
            &self.has_leader,
            &self.leader,
            &self.split_brain,
            &self.read_only,
            &self.node_has_leader,
            &self.peer_connected,
            &self.router_online,
            &self.node_up,
            &self.spinning,
        ]
    }

    /// Sets every gauge from `view`. The caller serializes scrapes.
    pub fn set_from(&self, view: &View) {
        for g in self.all() {
            g.reset();
        }
        let b = |v: bool| i64::from(v);
        for (name, c) in &view.clusters {
            let n = name.as_str();
            if let Some(leader) = &c.leader {
                self.has_leader.with_label_values(&[n]).set(b(leader.is_some()));
                if let Some(l) = leader {
                    self.leader.with_label_values(&[n, l]).set(1);
                }
            }
            self.split_brain.with_label_values(&[n]).set(b(c.split_brain));
            if let Some(ro) = c.read_only {
                self.read_only.with_label_values(&[n]).set(b(ro));
            }
            for (node, v) in &c.views {
                self.node_has_leader.with_label_values(&[n, node]).set(b(v.is_some()));
            }
            for (node, peers) in &c.peers {
                for (peer, up) in peers {
                    self.peer_connected.with_label_values(&[n, node, peer]).set(b(*up));
                }
            }
            for (router, up) in &c.routers {
                self.router_online.with_label_values(&[n, router]).set(b(*up));
            }
            for (node, l) in &c.nodes_up {
                self.node_up.with_label_values(&[n, node]).set(b(l.up));
            }
            for [service, router, host] in &c.spinning {
                self.spinning.with_label_values(&[n, service, router, host]).set(1);
            }
        }
    }
}
