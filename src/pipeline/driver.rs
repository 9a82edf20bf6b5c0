//! The driver: decode → observe → count, one implementation for `herald run` and `herald
//! replay`, so the two cannot count a record differently.
//!
//! Blank lines are not records: not counted, not errors (their numbers are kept by the
//! splitter). A line over the length limit is a decode error. A record that decodes to
//! nothing does not move the clock (DESIGN §5.1): only observations reach the engine.

use crate::decode::{self, Context, DecodeError, Decoded, Reason};
use crate::engine::{Engine, Outcome};
use crate::model::{ClusterEvent, Observation, Timestamp};
use crate::support::lines::{is_blank, Line};
use crate::telemetry::metrics::RecordOutcome;

/// What a caller learns of each record, besides its counted outcome.
pub trait Watch {
    /// A record decoded to an observation the engine took (with its own record time,
    /// before any clamp); not called for a record refused at a cap.
    fn observed(&mut self, _obs: &Observation<'_>, _engine: &Engine) {}
    /// A record was a decode error.
    fn decode_error(&mut self, _error: &DecodeError) {}
}

/// Watches nothing.
pub struct Unwatched;
impl Watch for Unwatched {}

/// The engine and the events it emitted since they were last taken.
pub struct Driver {
    pub engine: Engine,
    pub events: Vec<ClusterEvent>,
}

impl Driver {
    pub fn new(engine: Engine) -> Driver {
        Driver { engine, events: Vec::new() }
    }

    /// One line of a source. `None` for a blank line, which is not a record. `clamp`: a
    /// record time later than this (the wall clock, live) is taken as this, so that a
    /// record from the future cannot drag engine time ahead of the wall clock.
    pub fn line(
        &mut self,
        context: &Context,
        number: u64,
        line: Line<'_>,
        clamp: Option<Timestamp>,
        watch: &mut impl Watch,
    ) -> Option<RecordOutcome> {
        let bytes = match line {
            Line::Text(b) if is_blank(b) => return None,
            Line::Text(b) => b,
            Line::TooLong(len) => {
                watch.decode_error(&DecodeError { line: number, reason: Reason::TooLong(len) });
                return Some(RecordOutcome::DecodeError);
            }
        };
        Some(match decode::decode_line(bytes, number, context) {
            Ok(Decoded::Observation(mut obs)) => {
                let at = obs.at;
                let outcome = self.observe_in_place(&mut obs, clamp);
                // A refused record leaves nothing behind, not even a series of its own.
                if outcome != RecordOutcome::OverLimit {
                    obs.at = at;
                    watch.observed(&obs, &self.engine);
                }
                outcome
            }
            Ok(Decoded::Ignored(_)) => RecordOutcome::Ignored,
            Err(e) => {
                watch.decode_error(&e);
                RecordOutcome::DecodeError
            }
        })
    }

    /// One observation (decoded, or made by a probe or poller).
    pub fn observe(&mut self, mut obs: Observation<'_>, clamp: Option<Timestamp>) -> RecordOutcome {
        self.observe_in_place(&mut obs, clamp)
    }

    fn observe_in_place(
        &mut self,
        obs: &mut Observation<'_>,
        clamp: Option<Timestamp>,
    ) -> RecordOutcome {
        if let Some(limit) = clamp {
            obs.at = obs.at.min(limit);
        }
        let at = obs.at;
        counted(self.engine.observe(obs, at, &mut self.events))
    }
}

/// How an engine outcome is counted in `herald_records_total` and replay's summary.
pub fn counted(outcome: Outcome) -> RecordOutcome {
    match outcome {
        Outcome::Stale => RecordOutcome::Stale,
        Outcome::Ignored => RecordOutcome::Ignored,
        Outcome::OverLimit => RecordOutcome::OverLimit,
        Outcome::Applied | Outcome::Suppressed => RecordOutcome::Ok,
    }
}
