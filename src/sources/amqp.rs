//! The AMQP source: consumes the queue OpenZiti's `amqp` event handler writes to.

use serde::Deserialize;

use super::Common;
use crate::config::Problems;

#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct Config {
    /// `cluster`, `reporter`, `format`: read apart, see [`Common`].
    #[serde(skip)]
    pub common: Common,
    /// `amqp://user:password@host:5672/vhost`; required.
    pub url: Option<String>,
    /// The queue to consume; required.
    pub queue: Option<String>,
    /// Unacknowledged deliveries in flight (default 256).
    #[serde(default = "default_prefetch")]
    pub prefetch: u16,
    /// Declare the queue durable, as OpenZiti's handler does by default.
    #[serde(default = "default_true")]
    pub durable: bool,
}

fn default_prefetch() -> u16 {
    256
}

fn default_true() -> bool {
    true
}

impl Config {
    pub(crate) fn validate(self, path: &str, p: &mut Problems) -> Option<Self> {
        let mut ok = p.require(path, "url", self.url.is_some());
        ok &= p.require(path, "queue", self.queue.is_some());
        ok.then_some(self)
    }
}
