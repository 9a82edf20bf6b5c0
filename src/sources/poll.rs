//! What the pollers (probe, etcd, ZooKeeper) share: the round loop and turning attempts into
//! node-liveness observations.

use std::borrow::Cow;
use std::time::Duration;

use super::SourceContext;
use crate::model::{Observation, Signal, Timestamp, Via};
use crate::pipeline::{Clock, Input};

/// Runs `round` every `interval` until stopped, sending what it observes. The first round
/// runs at once (DESIGN: every node is probed at start); a round that overruns the interval
/// is followed by the next straight away, never by a burst of missed ones.
pub(crate) async fn polling<F, Fut>(ctx: &SourceContext, interval: Duration, mut round: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Vec<Observation<'static>>>,
{
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let observations = tokio::select! {
            _ = ctx.stop.stopped() => return,
            observations = async { ticks.tick().await; round().await } => observations,
        };
        if observations.is_empty() {
            continue;
        }
        let input = Input::Observed { source: ctx.index, observations };
        if ctx.tx.send(input).await.is_err() {
            return;
        }
    }
}

/// Turns a poller's attempts into the engine's node-liveness observations.
#[derive(Clone, Debug)]
pub(crate) struct Checker {
    pub cluster: String,
    /// The engine keeps node checks apart from the cluster's reporters: this name never
    /// counts among "the other reporters".
    pub reporter: &'static str,
    pub via: Via,
    pub down_after: u32,
    pub up_after: u32,
    clock: Clock,
}

impl Checker {
    /// Probes name themselves `herald-probe`, pollers `herald-poll`.
    pub fn new(
        cluster: Option<&str>,
        via: Via,
        down_after: u32,
        up_after: u32,
        clock: Clock,
    ) -> Self {
        Checker {
            cluster: cluster.unwrap_or("default").to_string(),
            reporter: match via {
                Via::Probe => "herald-probe",
                _ => "herald-poll",
            },
            via,
            down_after,
            up_after,
            clock,
        }
    }

    /// When a round's attempts are made.
    pub fn now(&self) -> Timestamp {
        self.clock.now()
    }

    pub fn check(&self, node: &str, ok: bool, at: Timestamp) -> Observation<'static> {
        Observation {
            cluster: Cow::Owned(self.cluster.clone()),
            reporter: Cow::Borrowed(self.reporter),
            at,
            signal: Signal::NodeCheck {
                node: Cow::Owned(node.to_string()),
                ok,
                via: self.via,
                down_after: self.down_after,
                up_after: self.up_after,
            },
        }
    }
}
