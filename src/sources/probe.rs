//! The probe source: TCP connects to configured nodes, feeding node liveness (`via: probe`).

use std::time::Duration;

use serde::Deserialize;

use super::poll::Timing;
use crate::support::problems::Problems;

#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct Config {
    /// `cluster`, `interval`, `timeout`, `down_after`: read apart, see [`Timing`].
    #[serde(skip)]
    pub timing: Timing,
    /// Node name to `host:port`; required, at least one.
    #[serde(default)]
    pub nodes: std::collections::BTreeMap<String, String>,
    /// Consecutive successes that make it up again.
    #[serde(default = "default_up_after")]
    pub up_after: u32,
}

fn default_up_after() -> u32 {
    1
}

impl Config {
    pub(crate) fn validate(self, path: &str, p: &mut Problems) -> Option<Self> {
        let mut ok = self.timing.validate(path, p);
        ok &= p.require(path, "nodes", !self.nodes.is_empty());
        for (name, addr) in &self.nodes {
            if !addr.contains(':') {
                p.push(format!("{path}.nodes.{name}"), format!("{addr:?} is not host:port"));
                ok = false;
            }
        }
        ok &= p.at_least_one(path, "up_after", self.up_after);
        ok.then_some(self)
    }
}

use std::sync::Arc;

use super::poll::{polling, Checker};
use super::SourceContext;
use crate::model::Via;

/// One connect attempt: whether `addr` accepted a TCP connection within `timeout`.
pub async fn attempt(addr: &str, timeout: Duration) -> bool {
    matches!(tokio::time::timeout(timeout, tokio::net::TcpStream::connect(addr)).await, Ok(Ok(_)))
}

super::poll::poller!(run);

/// Probes every node each interval, all at once, until `stop`.
async fn run(config: Config, ctx: SourceContext) {
    let name = ctx.name.clone();
    let checker = Checker::new(&config.timing, Via::Probe, config.up_after, ctx.clock);
    tracing::info!(source = %name, nodes = config.nodes.len(), interval = ?config.timing.interval(), "probing");
    let config = Arc::new(config);
    polling(&ctx, config.timing.interval(), || {
        let config = config.clone();
        let checker = checker.clone();
        async move {
            let at = checker.now();
            let attempts = config.nodes.iter().map(|(node, addr)| {
                let timeout = config.timing.timeout();
                async move { (node, attempt(addr, timeout).await) }
            });
            futures_util::future::join_all(attempts)
                .await
                .into_iter()
                .map(|(node, ok)| checker.check(node, ok, at))
                .collect()
        }
    })
    .await;
}
