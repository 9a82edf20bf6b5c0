//! The stdout sink: one ClusterEvent JSON object per line. The default, so herald is useful
//! with no broker at all.

use serde::Deserialize;

#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
pub struct Config {}
