//! The file source: tails OpenZiti's JSON event log (or any JSON-lines file).

use std::path::PathBuf;

use serde::Deserialize;

use super::Common;
use crate::config::Problems;

#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct Config {
    /// `cluster`, `reporter`, `format`: read apart, see [`Common`].
    #[serde(skip)]
    pub common: Common,
    /// The file to read; required.
    pub path: Option<PathBuf>,
    /// Where to start without a checkpoint: `beginning` (default) or `end`.
    #[serde(default)]
    pub start_at: StartAt,
    /// Lines longer than this are decode errors (default 1 MiB).
    #[serde(default = "default_max_line_bytes")]
    pub max_line_bytes: usize,
}

#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum StartAt {
    #[default]
    Beginning,
    End,
}

pub fn default_max_line_bytes() -> usize {
    1 << 20
}

impl Config {
    pub(crate) fn validate(self, path: &str, p: &mut Problems) -> Option<Self> {
        if self.path.is_none() {
            p.push(format!("{path}.path"), "missing");
            return None;
        }
        if self.max_line_bytes == 0 {
            p.push(format!("{path}.max_line_bytes"), "must be at least 1");
            return None;
        }
        Some(self)
    }
}
