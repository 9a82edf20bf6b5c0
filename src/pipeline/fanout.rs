//! Fan-out: a commit's events to every sink's bounded queue.
//!
//! A sink with `when_full = "block"` holds the pipeline while its queue is full
//! (backpressure); one with `drop_newest` drops, counted. A disk-buffered sink always takes
//! `block` here: its buffer applies `when_full` itself, at its size cap.

use tokio::sync::mpsc;

use super::delivery::{held, Acked, Delivery};
use super::PipelineError;
use crate::telemetry::metrics::SinkMetrics;

/// What happens to an event when a sink's queue is full.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Full {
    #[default]
    Block,
    DropNewest,
}

/// The pipeline's end of one sink.
pub struct SinkQueue {
    pub name: String,
    pub tx: mpsc::Sender<Delivery>,
    pub metrics: SinkMetrics,
    pub acked: Acked,
    pub when_full: Full,
}

#[derive(Default)]
pub struct Fanout {
    sinks: Vec<SinkQueue>,
    /// Closed at shutdown: nothing more is sent.
    closed: bool,
}

impl Fanout {
    pub fn new(sinks: Vec<SinkQueue>) -> Fanout {
        Fanout { sinks, closed: false }
    }

    pub fn len(&self) -> usize {
        self.sinks.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sinks.is_empty()
    }

    /// Up to where every sink holds every event.
    pub fn held(&self) -> u64 {
        held(self.sinks.iter().map(|s| &s.acked))
    }

    /// Closes every queue: each sink drains what it has and ends.
    pub fn close(&mut self) {
        self.closed = true;
        self.sinks.clear();
    }

    pub async fn dispatch(&mut self, deliveries: Vec<Delivery>) -> Result<(), PipelineError> {
        if self.closed {
            return Ok(());
        }
        for sink in &self.sinks {
            let depth = sink.tx.max_capacity() - sink.tx.capacity();
            sink.metrics.queue.set(i64::try_from(depth + deliveries.len()).unwrap_or(i64::MAX));
        }
        for sink in self.sinks.iter().filter(|s| s.when_full == Full::Block) {
            // Permits in runs rather than one at a time: a commit's events cross at once.
            for run in deliveries.chunks(sink.tx.max_capacity()) {
                let Ok(permits) = sink.tx.reserve_many(run.len()).await else {
                    return Err(PipelineError::SinkGone(sink.name.clone()));
                };
                for (permit, d) in permits.zip(run) {
                    permit.send(d.clone());
                }
            }
        }
        for sink in self.sinks.iter().filter(|s| s.when_full == Full::DropNewest) {
            for d in &deliveries {
                match sink.tx.try_send(d.clone()) {
                    Ok(()) => {}
                    Err(mpsc::error::TrySendError::Full(_)) => {
                        crate::telemetry::events::EventDropped { sink: &sink.name }
                            .emit(&sink.metrics);
                    }
                    Err(mpsc::error::TrySendError::Closed(_)) => {
                        return Err(PipelineError::SinkGone(sink.name.clone()));
                    }
                }
            }
        }
        Ok(())
    }
}
