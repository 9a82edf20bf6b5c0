//! The Prometheus sink: gauges of the current stable state and counters of transitions and
//! suppressed flaps, served on the server's `/metrics`.

use serde::Deserialize;

#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
pub struct Config {}
