//! `herald replay`: a recorded log through decode and the engine on record time, events out
//! as JSON lines (DESIGN §9.1).
//!
//! Engine time is the latest record time seen; at the end of input the engine runs past
//! every pending deadline, so the output is exactly what `herald run` emits over the same
//! complete file.

use std::io::{self, BufRead, Write};

use crate::decode::{self, Context, DecodeError, Decoded, Reason};
use crate::engine::{Engine, EngineConfig, Outcome};
use crate::lines::{is_blank, Line, LineReader};
use crate::model::ClusterEvent;

/// Replay's counters; `Display` is the summary line.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    pub records: u64,
    pub events: u64,
    pub suppressed: u64,
    pub stale: u64,
    pub decode_errors: u64,
    pub ignored: u64,
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "records={} events={} suppressed={} stale={} decode_errors={} ignored={}",
            self.records,
            self.events,
            self.suppressed,
            self.stale,
            self.decode_errors,
            self.ignored
        )
    }
}

pub struct Replay {
    pub engine: Engine,
    pub context: Context,
    pub max_line_bytes: usize,
}

impl Replay {
    pub fn new(engine: EngineConfig, context: Context) -> Self {
        Replay {
            engine: Engine::new(engine),
            context,
            max_line_bytes: crate::sources::file::default_max_line_bytes(),
        }
    }

    /// Runs `input` through; events go to `out`, each decode error to `on_error`.
    pub fn run<R: BufRead, W: Write>(
        mut self,
        input: R,
        out: &mut W,
        mut on_error: impl FnMut(&DecodeError),
    ) -> io::Result<Summary> {
        let mut summary = Summary::default();
        let mut reader = LineReader::new(input, self.max_line_bytes);
        let mut events: Vec<ClusterEvent> = Vec::new();
        let mut line_buf = Vec::with_capacity(512);
        while let Some((number, line)) = reader.next_line()? {
            let bytes = match line {
                Line::Text(b) if is_blank(b) => continue,
                Line::Text(b) => b,
                Line::TooLong(len) => {
                    summary.records += 1;
                    summary.decode_errors += 1;
                    on_error(&DecodeError { line: number, reason: Reason::TooLong(len) });
                    continue;
                }
            };
            summary.records += 1;
            match decode::decode_line(bytes, number, &self.context) {
                Ok(Decoded::Observation(obs)) => {
                    let at = obs.at;
                    if self.engine.observe(&obs, at, &mut events) == Outcome::Ignored {
                        summary.ignored += 1;
                    }
                }
                Ok(Decoded::Ignored(_)) => summary.ignored += 1,
                Err(e) => {
                    summary.decode_errors += 1;
                    on_error(&e);
                }
            }
            write_events(&mut events, out, &mut line_buf, &mut summary)?;
        }
        self.engine.finish(&mut events);
        write_events(&mut events, out, &mut line_buf, &mut summary)?;
        let stats = self.engine.stats();
        summary.suppressed = stats.suppressed;
        summary.stale = stats.stale;
        out.flush()?;
        Ok(summary)
    }
}

fn write_events<W: Write>(
    events: &mut Vec<ClusterEvent>,
    out: &mut W,
    buf: &mut Vec<u8>,
    summary: &mut Summary,
) -> io::Result<()> {
    for e in events.drain(..) {
        buf.clear();
        serde_json::to_writer(&mut *buf, &e).map_err(io::Error::other)?;
        buf.push(b'\n');
        out.write_all(buf)?;
        summary.events += 1;
    }
    Ok(())
}
