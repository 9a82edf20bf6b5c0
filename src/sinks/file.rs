//! The file sink: ClusterEvents as JSON lines appended to a file.

use std::path::PathBuf;

use serde::Deserialize;

use crate::config::Problems;

#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct Config {
    /// The file to append to; required.
    pub path: Option<PathBuf>,
}

impl Config {
    pub(crate) fn validate(self, path: &str, p: &mut Problems) -> Option<Self> {
        p.require(path, "path", self.path.is_some()).then_some(self)
    }
}
