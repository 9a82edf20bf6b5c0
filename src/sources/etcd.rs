//! The etcd poller: `/v3/maintenance/status` and `/v3/cluster/member/list` on each endpoint.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::config::Problems;

#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct Config {
    /// The cluster name herald gives this etcd cluster; required.
    pub cluster: Option<String>,
    /// Client URLs (`http://127.0.0.1:2379`); required, at least one.
    #[serde(default)]
    pub endpoints: Vec<String>,
    #[serde(default = "default_interval", with = "humantime_serde")]
    pub interval: Duration,
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// Failed polls in a row that make an endpoint's member down.
    #[serde(default = "default_down_after")]
    pub down_after: u32,
    pub username: Option<String>,
    pub password: Option<String>,
    pub ca_file: Option<PathBuf>,
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
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
        ok &= p.require(path, "endpoints", !self.endpoints.is_empty());
        ok &= p.positive(path, "interval", self.interval);
        ok &= p.positive(path, "timeout", self.timeout);
        ok &= p.at_least_one(path, "down_after", self.down_after);
        ok.then_some(self)
    }
}
