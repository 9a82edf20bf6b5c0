//! `herald replay`: a recorded log through decode and the engine on record time, events out
//! as JSON lines or readable lines (DESIGN §9.1, §12).
//!
//! Engine time is the latest record time seen; at the end of input the engine runs past
//! every pending deadline, so the output is exactly what `herald run` emits over the same
//! complete file.

use std::io::{self, BufRead, Write};

use crate::decode::{Context, DecodeError};
use crate::engine::{Engine, EngineConfig, Windows};
use crate::model::{ClusterEvent, Nanos, Severities};
use crate::pipeline::driver::{Driver, Watch};
use crate::sinks::encoding::{text, LineFormat};
use crate::support::lines::read_lines;
use crate::telemetry::metrics::RecordOutcome;

/// Replay's counters; `Display` is the summary line.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    pub records: u64,
    pub events: u64,
    pub suppressed: u64,
    pub stale: u64,
    pub decode_errors: u64,
    pub ignored: u64,
    /// Refused at a cap (DESIGN §5.2); shown only when some were.
    pub over_limit: u64,
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
        )?;
        if self.over_limit > 0 {
            write!(f, " over_limit={}", self.over_limit)?;
        }
        Ok(())
    }
}

pub struct Replay {
    pub engine: Engine,
    pub context: Context,
    pub max_line_bytes: usize,
    /// JSON lines (the contract) or readable lines.
    pub format: LineFormat,
    /// Told the records read so far, every [`PROGRESS_EVERY`] records (a progress bar).
    pub on_records: Option<Box<dyn FnMut(u64)>>,
}

/// How often [`Replay::on_records`] hears.
pub const PROGRESS_EVERY: u64 = 1 << 14;

/// Overrides W of every kind in every cluster: not the startup grace, not the split window
/// (DESIGN §9.1).
pub fn set_window(engine: &mut EngineConfig, w: Nanos) {
    let w = Windows::uniform(w);
    engine.defaults.windows = w;
    for params in engine.clusters.values_mut() {
        params.windows = w;
    }
}

/// The events of `input`, kept, with the summary.
pub fn collect<R: BufRead>(
    engine: EngineConfig,
    context: Context,
    input: R,
    on_error: impl FnMut(&DecodeError),
) -> io::Result<(Vec<ClusterEvent>, Summary)> {
    let mut events = Vec::new();
    let summary = Replay::new(engine, context).run_with(input, on_error, |e, _| {
        events.push(e.clone());
        Ok(())
    })?;
    Ok((events, summary))
}

/// Writes `e` as one line in `format`, through `buf`.
pub fn write_line<W: Write>(
    format: LineFormat,
    e: &ClusterEvent,
    buf: &mut Vec<u8>,
    out: &mut W,
) -> io::Result<()> {
    buf.clear();
    match format {
        LineFormat::Json => serde_json::to_writer(&mut *buf, e).map_err(io::Error::other)?,
        LineFormat::Text { colour } => buf.extend_from_slice(text(e, colour).as_bytes()),
        other => {
            let json = serde_json::to_string(e).map_err(io::Error::other)?;
            buf.extend_from_slice(other.line(e, &json, &Severities::default()).as_bytes());
        }
    }
    buf.push(b'\n');
    out.write_all(buf)
}

impl Replay {
    pub fn new(engine: EngineConfig, context: Context) -> Self {
        Replay {
            engine: Engine::new(engine),
            context,
            max_line_bytes: crate::support::lines::MAX_LINE_BYTES,
            format: LineFormat::Json,
            on_records: None,
        }
    }

    /// Runs `input` through; events go to `out`, each decode error to `on_error`.
    pub fn run<R: BufRead, W: Write>(
        self,
        input: R,
        out: &mut W,
        on_error: impl FnMut(&DecodeError),
    ) -> io::Result<Summary> {
        let format = self.format;
        self.run_with(input, on_error, |e, buf| write_line(format, e, buf, out))
            .and_then(|summary| out.flush().map(|()| summary))
    }

    /// Runs `input` through, handing each event to `emit` (with a buffer to reuse).
    pub fn run_with<R: BufRead>(
        mut self,
        input: R,
        on_error: impl FnMut(&DecodeError),
        mut emit: impl FnMut(&ClusterEvent, &mut Vec<u8>) -> io::Result<()>,
    ) -> io::Result<Summary> {
        struct Errors<F>(F);
        impl<F: FnMut(&DecodeError)> Watch for Errors<F> {
            fn decode_error(&mut self, e: &DecodeError) {
                (self.0)(e)
            }
        }
        let mut watch = Errors(on_error);
        let mut summary = Summary::default();
        let mut driver = Driver::new(self.engine);
        let mut line_buf = Vec::with_capacity(512);
        let mut written = Ok(());
        read_lines(input, self.max_line_bytes, |cut| {
            let Some(outcome) = driver.line(&self.context, cut.number, cut.line, None, &mut watch)
            else {
                return true;
            };
            summary.records += 1;
            if summary.records % PROGRESS_EVERY == 0 {
                if let Some(tell) = &mut self.on_records {
                    tell(summary.records);
                }
            }
            match outcome {
                RecordOutcome::DecodeError => summary.decode_errors += 1,
                RecordOutcome::Ignored => summary.ignored += 1,
                RecordOutcome::OverLimit => summary.over_limit += 1,
                RecordOutcome::Ok | RecordOutcome::Stale => {}
            }
            written = write_events(&mut driver.events, &mut emit, &mut line_buf, &mut summary);
            written.is_ok()
        })?;
        written?;
        driver.engine.finish(&mut driver.events);
        write_events(&mut driver.events, &mut emit, &mut line_buf, &mut summary)?;
        let stats = driver.engine.stats();
        summary.suppressed = stats.suppressed;
        summary.stale = stats.stale;
        Ok(summary)
    }
}

fn write_events(
    events: &mut Vec<ClusterEvent>,
    emit: &mut impl FnMut(&ClusterEvent, &mut Vec<u8>) -> io::Result<()>,
    buf: &mut Vec<u8>,
    summary: &mut Summary,
) -> io::Result<()> {
    for e in events.drain(..) {
        emit(&e, buf)?;
        summary.events += 1;
    }
    Ok(())
}
