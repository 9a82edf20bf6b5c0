//! The Kafka sink: idempotent producer, key = cluster, CloudEvents binary-mode headers.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::config::Problems;

#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct Config {
    /// `host:port[,host:port…]`; required.
    pub brokers: Option<String>,
    /// The topic events go to; required.
    pub topic: Option<String>,
    /// The CloudEvents `ce_source` header (default `herald`).
    pub source: Option<String>,
    /// librdkafka options passed through as they are (SASL, TLS, …).
    #[serde(default)]
    pub client: BTreeMap<String, String>,
}

impl Config {
    pub(crate) fn validate(self, path: &str, p: &mut Problems) -> Option<Self> {
        let mut ok = p.require(path, "brokers", self.brokers.is_some());
        ok &= p.require(path, "topic", self.topic.is_some());
        ok.then_some(self)
    }
}
