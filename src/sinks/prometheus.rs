//! The Prometheus sink: gauges of the current stable state and counters of transitions and
//! suppressed flaps, served on the server's `/metrics`.
//!
//! It is a feature of the HTTP server, not a queue-fed sink: the gauges are rendered from
//! the stable view at each scrape ([`crate::telemetry::gauges`]), so it holds no events and
//! takes no part in acknowledgements. Configuring it turns the gauges on.

use serde::Deserialize;

#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
pub struct Config {}
