//! Fan-out: a commit's events (or an edge's raw records) to every sink's bounded queue.
//!
//! A sink with `when_full = "block"` holds the pipeline while its queue is full
//! (backpressure); one with `drop_newest` drops, counted. A disk-buffered sink always takes
//! `block` here: its buffer applies `when_full` itself, at its size cap.

use tokio::sync::mpsc;

use super::delivery::{held, Acked, Delivery};
use super::PipelineError;
use crate::telemetry::events::EventDropped;
use crate::telemetry::metrics::SinkMetrics;

/// What happens to an event when a sink's queue is full.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Full {
    #[default]
    Block,
    DropNewest,
}

/// The pipeline's end of one sink.
pub struct SinkQueue<T = Delivery> {
    pub name: String,
    /// `None` once closed at shutdown.
    pub tx: Option<mpsc::Sender<T>>,
    pub metrics: SinkMetrics,
    pub acked: Acked,
    pub when_full: Full,
}

pub struct Fanout<T = Delivery> {
    sinks: Vec<SinkQueue<T>>,
}

impl<T> Default for Fanout<T> {
    fn default() -> Self {
        Fanout { sinks: Vec::new() }
    }
}

impl<T: Clone> Fanout<T> {
    pub fn new(sinks: Vec<SinkQueue<T>>) -> Fanout<T> {
        Fanout { sinks }
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

    /// Closes every queue: each sink drains what it has and ends. The watermarks stay, so
    /// that what a sink did not acknowledge stays in the outbox for the next run.
    pub fn close(&mut self) {
        for sink in &mut self.sinks {
            sink.tx = None;
        }
    }

    pub async fn dispatch(&mut self, deliveries: Vec<T>) -> Result<(), PipelineError> {
        let open = || self.sinks.iter().filter_map(|s| Some((s, s.tx.as_ref()?)));
        for (sink, tx) in open() {
            let depth = tx.max_capacity() - tx.capacity();
            sink.metrics.queue.set(i64::try_from(depth + deliveries.len()).unwrap_or(i64::MAX));
        }
        for (sink, tx) in open().filter(|(s, _)| s.when_full == Full::Block) {
            // Permits in runs rather than one at a time: a commit's events cross at once.
            for run in deliveries.chunks(tx.max_capacity()) {
                let Ok(permits) = tx.reserve_many(run.len()).await else {
                    return Err(PipelineError::SinkGone(sink.name.clone()));
                };
                for (permit, d) in permits.zip(run) {
                    permit.send(d.clone());
                }
            }
        }
        for (sink, tx) in open().filter(|(s, _)| s.when_full == Full::DropNewest) {
            for d in &deliveries {
                match tx.try_send(d.clone()) {
                    Ok(()) => {}
                    Err(mpsc::error::TrySendError::Full(_)) => {
                        EventDropped { full: "queue" }.emit(&sink.metrics);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::metrics::Metrics;

    /// Regression: closing the queues at shutdown used to forget the sinks, so the last
    /// commit read "every sink holds everything" and dropped unacknowledged events from the
    /// outbox instead of keeping them for the next run.
    #[test]
    fn closing_the_queues_keeps_the_watermarks() {
        let metrics = Metrics::new().expect("metrics");
        let queue = |name: &str, acked: u64| {
            let a = Acked::default();
            a.store(acked, std::sync::atomic::Ordering::Release);
            let (tx, _rx) = mpsc::channel::<Delivery>(4);
            SinkQueue {
                name: name.into(),
                tx: Some(tx),
                metrics: metrics.sink(name),
                acked: a,
                when_full: Full::Block,
            }
        };
        let mut f = Fanout::new(vec![queue("a", 5), queue("b", 3)]);
        assert_eq!(f.held(), 3);
        f.close();
        assert_eq!(f.held(), 3, "what sink b did not acknowledge is still not held");
    }
}
