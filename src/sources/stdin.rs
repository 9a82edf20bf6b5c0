//! The stdin source: JSON lines on standard input (a pipe from `ziti` or a test).

use serde::Deserialize;

use super::Common;

#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct Config {
    /// `cluster`, `reporter`, `format`: read apart, see [`Common`].
    #[serde(skip)]
    pub common: Common,
}
