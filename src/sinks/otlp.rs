//! The OTLP sink: every event as a log record, the gauges as metrics.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::config::Problems;

#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct Config {
    /// `http://collector:4317` (gRPC) or `http://collector:4318` (HTTP); required.
    pub endpoint: Option<String>,
    /// `grpc` (default) or `http/protobuf`.
    #[serde(default)]
    pub protocol: Protocol,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    #[serde(default = "default_interval", with = "humantime_serde")]
    pub metrics_interval: Duration,
    /// Extra resource attributes.
    #[serde(default)]
    pub resource: BTreeMap<String, String>,
    pub tls_ca: Option<PathBuf>,
}

#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
pub enum Protocol {
    #[default]
    #[serde(rename = "grpc")]
    Grpc,
    #[serde(rename = "http/protobuf")]
    HttpProtobuf,
}

fn default_timeout() -> Duration {
    Duration::from_secs(10)
}

fn default_interval() -> Duration {
    Duration::from_secs(10)
}

impl Config {
    pub(crate) fn validate(self, path: &str, p: &mut Problems) -> Option<Self> {
        let mut ok = p.require(path, "endpoint", self.endpoint.is_some());
        ok &= p.positive(path, "timeout", self.timeout);
        ok &= p.positive(path, "metrics_interval", self.metrics_interval);
        ok.then_some(self)
    }
}
