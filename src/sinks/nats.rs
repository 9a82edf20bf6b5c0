//! The NATS sink: subject `<prefix>.<cluster>.<kind>`; JetStream mode deduplicates on the
//! event id (`Nats-Msg-Id`).

use std::path::PathBuf;

use serde::Deserialize;

use crate::config::Problems;

#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct Config {
    /// `nats://host:4222`; required.
    pub url: Option<String>,
    /// Subject prefix (default `herald`).
    #[serde(default = "default_prefix")]
    pub subject_prefix: String,
    /// Publish through JetStream and await each ack.
    #[serde(default)]
    pub jetstream: bool,
    /// With `jetstream`, a stream to create if missing.
    pub stream: Option<String>,
    pub token: Option<String>,
    pub user: Option<String>,
    pub password: Option<String>,
    pub nkey: Option<String>,
    pub creds: Option<PathBuf>,
    pub tls_ca: Option<PathBuf>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
}

fn default_prefix() -> String {
    "herald".to_string()
}

impl Config {
    pub(crate) fn validate(self, path: &str, p: &mut Problems) -> Option<Self> {
        p.require(path, "url", self.url.is_some()).then_some(self)
    }
}
