//! The ZooKeeper poller: the `srvr` four-letter word on each server (`Mode: leader|follower`).

use std::time::Duration;

use serde::Deserialize;

use crate::config::Problems;

#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct Config {
    /// The cluster name herald gives this ensemble; required.
    pub cluster: Option<String>,
    /// Server name to `host:port` (the client port); required, at least one.
    #[serde(default)]
    pub servers: std::collections::BTreeMap<String, String>,
    #[serde(default = "default_interval", with = "humantime_serde")]
    pub interval: Duration,
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    #[serde(default = "default_down_after")]
    pub down_after: u32,
}

fn default_interval() -> Duration {
    Duration::from_millis(500)
}

fn default_timeout() -> Duration {
    Duration::from_millis(500)
}

fn default_down_after() -> u32 {
    2
}

impl Config {
    pub(crate) fn validate(self, path: &str, p: &mut Problems) -> Option<Self> {
        let mut ok = p.require(path, "cluster", self.cluster.is_some());
        ok &= p.require(path, "servers", !self.servers.is_empty());
        ok &= p.positive(path, "interval", self.interval);
        ok &= p.positive(path, "timeout", self.timeout);
        ok &= p.at_least_one(path, "down_after", self.down_after);
        ok.then_some(self)
    }
}
