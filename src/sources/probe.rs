//! The probe source: TCP connects to configured nodes, feeding node liveness (`via: probe`).

use std::time::Duration;

use serde::Deserialize;

use crate::support::problems::Problems;

#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct Config {
    /// The cluster the nodes belong to; required.
    pub cluster: Option<String>,
    /// Node name to `host:port`; required, at least one.
    #[serde(default)]
    pub nodes: std::collections::BTreeMap<String, String>,
    #[serde(default = "default_interval", with = "humantime_serde")]
    pub interval: Duration,
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// Consecutive failures that make a node down.
    #[serde(default = "default_down_after")]
    pub down_after: u32,
    /// Consecutive successes that make it up again.
    #[serde(default = "default_up_after")]
    pub up_after: u32,
}

fn default_interval() -> Duration {
    Duration::from_secs(1)
}

fn default_timeout() -> Duration {
    Duration::from_millis(500)
}

fn default_down_after() -> u32 {
    2
}

fn default_up_after() -> u32 {
    1
}

impl Config {
    pub(crate) fn validate(self, path: &str, p: &mut Problems) -> Option<Self> {
        let mut ok = p.require(path, "cluster", self.cluster.is_some());
        ok &= p.require(path, "nodes", !self.nodes.is_empty());
        for (name, addr) in &self.nodes {
            if !addr.contains(':') {
                p.push(format!("{path}.nodes.{name}"), format!("{addr:?} is not host:port"));
                ok = false;
            }
        }
        ok &= p.positive(path, "interval", self.interval);
        ok &= p.positive(path, "timeout", self.timeout);
        ok &= p.at_least_one(path, "down_after", self.down_after);
        ok &= p.at_least_one(path, "up_after", self.up_after);
        ok.then_some(self)
    }
}

use std::sync::Arc;

use super::poll::{polling, Checker};
use super::{Source, SourceContext};
use crate::decode::Context;
use crate::model::Via;
use crate::pipeline::Shutdown;

/// One connect attempt: whether `addr` accepted a TCP connection within `timeout`.
pub async fn attempt(addr: &str, timeout: Duration) -> bool {
    matches!(tokio::time::timeout(timeout, tokio::net::TcpStream::connect(addr)).await, Ok(Ok(_)))
}

impl Source for Config {
    fn context(&self) -> Context {
        super::poller_context(self.cluster.as_deref())
    }

    fn pushes(&self) -> bool {
        true
    }

    fn start(&self, ctx: SourceContext, tasks: &mut Shutdown) {
        tasks.spawn(ctx.name.clone(), run(self.clone(), ctx));
    }
}

/// Probes every node each interval, all at once, until `stop`.
async fn run(config: Config, ctx: SourceContext) {
    let name = ctx.name.clone();
    let checker = Checker::new(
        config.cluster.as_deref(),
        Via::Probe,
        config.down_after,
        config.up_after,
        ctx.clock,
    );
    tracing::info!(source = %name, nodes = config.nodes.len(), interval = ?config.interval, "probing");
    let config = Arc::new(config);
    polling(&ctx, config.interval, || {
        let config = config.clone();
        let checker = checker.clone();
        async move {
            let at = checker.now();
            let attempts = config.nodes.iter().map(|(node, addr)| {
                let timeout = config.timeout;
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
