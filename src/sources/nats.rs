//! The NATS source: a core subject, or a JetStream durable consumer.

use std::path::PathBuf;

use serde::Deserialize;

use super::Common;
use crate::config::Problems;

#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct Config {
    /// `cluster`, `reporter`, `format`: read apart, see [`Common`].
    #[serde(skip)]
    pub common: Common,
    /// `nats://host:4222`; required.
    pub url: Option<String>,
    /// The subject to read; required.
    pub subject: Option<String>,
    /// With a stream, records are read through a JetStream durable consumer.
    pub stream: Option<String>,
    /// The durable consumer's name (default `herald`).
    pub durable: Option<String>,
    pub token: Option<String>,
    pub user: Option<String>,
    pub password: Option<String>,
    pub creds: Option<PathBuf>,
}

impl Config {
    pub(crate) fn validate(self, path: &str, p: &mut Problems) -> Option<Self> {
        let mut ok = p.require(path, "url", self.url.is_some());
        ok &= p.require(path, "subject", self.subject.is_some());
        ok.then_some(self)
    }
}
