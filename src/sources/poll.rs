//! What the pollers (probe, etcd, ZooKeeper) share: the round loop and turning attempts into
//! node-liveness observations.

use std::borrow::Cow;
use std::time::Duration;

use serde::Deserialize;

use super::{Source, SourceContext};
use crate::decode::Context;
use crate::model::{Observation, Signal, Timestamp, Via};
use crate::pipeline::Shutdown;
use crate::pipeline::{Clock, Input};
use crate::support::problems::Problems;

/// The keys every poller has, read apart from its own (like [`super::Common`]).
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
pub struct Timing {
    /// The cluster herald gives what it polls; required.
    pub cluster: Option<String>,
    /// How often a round runs (default 1 s for probes, 500 ms for the raft pollers).
    #[serde(default, with = "humantime_serde")]
    pub interval: Option<Duration>,
    /// How long one attempt may take (default 500 ms).
    #[serde(default, with = "humantime_serde")]
    pub timeout: Option<Duration>,
    /// Failed attempts in a row that make a node down (default 2).
    pub down_after: Option<u32>,
}

pub(crate) const TIMING_KEYS: [&str; 4] = ["cluster", "interval", "timeout", "down_after"];

impl Timing {
    pub fn interval(&self) -> Duration {
        self.interval.unwrap_or(Duration::from_millis(500))
    }

    pub fn timeout(&self) -> Duration {
        self.timeout.unwrap_or(Duration::from_millis(500))
    }

    pub fn down_after(&self) -> u32 {
        self.down_after.unwrap_or(2)
    }

    pub(crate) fn validate(&self, path: &str, p: &mut Problems) -> bool {
        let mut ok = p.require(path, "cluster", self.cluster.is_some());
        ok &= p.positive(path, "interval", self.interval());
        ok &= p.positive(path, "timeout", self.timeout());
        ok &= p.at_least_one(path, "down_after", self.down_after());
        ok
    }
}

/// A poller: its timing, and the round loop it runs.
pub(crate) trait Poller: Clone + Send + Sync + 'static {
    fn timing(&self) -> &Timing;
    fn run(self, ctx: SourceContext) -> impl std::future::Future<Output = ()> + Send;
}

/// Makes a poller's `Config` (with its `timing` field) a [`Poller`] running `$run`.
macro_rules! poller {
    ($run:ident) => {
        impl super::poll::Poller for Config {
            fn timing(&self) -> &super::poll::Timing {
                &self.timing
            }

            fn run(self, ctx: SourceContext) -> impl std::future::Future<Output = ()> + Send {
                $run(self, ctx)
            }
        }
    };
}
pub(crate) use poller;

impl<P: Poller> Source for P {
    fn context(&self) -> Context {
        super::poller_context(self.timing().cluster.as_deref())
    }

    fn pushes(&self) -> bool {
        true
    }

    fn start(&self, ctx: SourceContext, tasks: &mut Shutdown) {
        tasks.spawn(ctx.name.clone(), self.clone().run(ctx));
    }
}

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
    pub fn new(timing: &Timing, via: Via, up_after: u32, clock: Clock) -> Self {
        let down_after = timing.down_after();
        Checker {
            cluster: timing.cluster.as_deref().unwrap_or("default").to_string(),
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
