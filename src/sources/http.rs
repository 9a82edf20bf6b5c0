//! The HTTP source: JSON lines POSTed to the server's `/ingest` (bearer token, 1 MiB limit).

use serde::Deserialize;

use super::Common;

#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct Config {
    /// `cluster`, `reporter`, `format`: read apart, see [`Common`].
    #[serde(skip)]
    pub common: Common,
}
