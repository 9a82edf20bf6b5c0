//! The ZooKeeper poller: the `srvr` four-letter word on each server (`Mode: leader|follower`).

use serde::Deserialize;

use super::poll::Timing;
use crate::support::problems::Problems;

#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct Config {
    /// `cluster`, `interval`, `timeout`, `down_after`: read apart, see [`Timing`].
    #[serde(skip)]
    pub timing: Timing,
    /// Server name to `host:port` (the client port); required, at least one.
    #[serde(default)]
    pub servers: std::collections::BTreeMap<String, String>,
}

impl Config {
    pub(crate) fn validate(self, path: &str, p: &mut Problems) -> Option<Self> {
        let mut ok = self.timing.validate(path, p);
        ok &= p.require(path, "servers", !self.servers.is_empty());
        ok.then_some(self)
    }
}

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::poll::{polling, Checker};
use super::{SourceContext, SourceError};
use crate::model::{Observation, Signal, Timestamp, Via};

/// A server's role as `srvr` reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Leader,
    Follower,
    Standalone,
    /// Answering, but not serving: an election is on (or `srvr` is not whitelisted).
    NotServing,
}

/// Reads `Mode:` from a `srvr` answer.
pub fn mode(answer: &str) -> Mode {
    for line in answer.lines() {
        if let Some(m) = line.strip_prefix("Mode:") {
            return match m.trim() {
                "leader" => Mode::Leader,
                "follower" | "observer" => Mode::Follower,
                "standalone" => Mode::Standalone,
                _ => Mode::NotServing,
            };
        }
    }
    Mode::NotServing
}

/// Sends `srvr` and reads the answer, all within `timeout`.
async fn srvr(addr: &str, timeout: std::time::Duration) -> Result<String, SourceError> {
    let e = |e: std::io::Error| SourceError::broker(addr, e);
    let exchange = async {
        let mut s = tokio::net::TcpStream::connect(addr).await.map_err(e)?;
        s.write_all(b"srvr").await.map_err(e)?;
        let mut out = Vec::new();
        // The server closes the connection after its answer; a 4 KiB answer is plenty.
        s.take(4096).read_to_end(&mut out).await.map_err(e)?;
        Ok(String::from_utf8_lossy(&out).into_owned())
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| SourceError::broker(addr, "timed out"))?
}

super::poll::poller!(run);

/// Polls every server each interval until `stop`. The leader is the server that says so;
/// a follower's view is that leader (or, when no server said leader this round, the last one
/// seen: a follower has not yet noticed a leader's death); a server that answers but does not
/// serve sees no leader.
async fn run(config: Config, ctx: SourceContext) {
    let name = ctx.name.clone();
    let checker = Checker::new(&config.timing, Via::Poll, 1, ctx.clock);
    tracing::info!(source = %name, servers = config.servers.len(), interval = ?config.timing.interval(), "polling zookeeper");
    let last_leader: Arc<Mutex<Option<String>>> = Arc::default();
    let config = Arc::new(config);
    let warned = Arc::new(AtomicBool::new(false));
    polling(&ctx, config.timing.interval(), || {
        let (config, checker, last_leader, warned, name) =
            (config.clone(), checker.clone(), last_leader.clone(), warned.clone(), name.clone());
        async move {
            let at = checker.now();
            let answers = futures_util::future::join_all(
                config.servers.iter().map(|(server, addr)| {
                    let timeout = config.timing.timeout();
                    async move { (server.clone(), srvr(addr, timeout).await) }
                }),
            )
            .await;
            let modes: Vec<(String, Option<Mode>)> = answers
                .into_iter()
                .map(|(server, a)| {
                    let m = a.ok().map(|text| {
                        if text.contains("is not executed because it is not in the whitelist")
                            && !warned.swap(true, std::sync::atomic::Ordering::Relaxed)
                        {
                            tracing::warn!(source = %name, server = %server, "srvr is not whitelisted (4lw.commands.whitelist=srvr)");
                        }
                        mode(&text)
                    });
                    (server, m)
                })
                .collect();
            round(&checker, &modes, &last_leader, at)
        }
    })
    .await;
}

/// One round's observations from each server's mode (`None`: no answer).
pub(crate) fn round(
    checker: &Checker,
    modes: &[(String, Option<Mode>)],
    last_leader: &Mutex<Option<String>>,
    at: Timestamp,
) -> Vec<Observation<'static>> {
    let mut last = last_leader.lock().unwrap_or_else(|p| p.into_inner());
    let leaders: Vec<&String> =
        modes.iter().filter(|(_, m)| *m == Some(Mode::Leader)).map(|(s, _)| s).collect();
    if let [one] = leaders.as_slice() {
        *last = Some((*one).clone());
    }
    let mut out = Vec::new();
    for (server, m) in modes {
        out.push(checker.check(server, m.is_some(), at));
        let Some(m) = m else { continue };
        let view = match m {
            Mode::Leader | Mode::Standalone => Some(server.clone()),
            Mode::Follower => last.clone(),
            Mode::NotServing => None,
        };
        out.push(Observation {
            cluster: checker.cluster.clone().into(),
            reporter: server.clone().into(),
            at,
            signal: Signal::View { leader: view.map(Into::into) },
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_from_srvr_answers() {
        let answer = "Zookeeper version: 3.8.0\nLatency min/avg/max: 0/0.0/0\nReceived: 3\nSent: 2\nConnections: 1\nOutstanding: 0\nZxid: 0x100000000\nMode: leader\nNode count: 5\n";
        assert_eq!(mode(answer), Mode::Leader);
        assert_eq!(mode(&answer.replace("leader", "follower")), Mode::Follower);
        assert_eq!(mode("Mode: standalone\n"), Mode::Standalone);
        assert_eq!(
            mode("This ZooKeeper instance is not currently serving requests\n"),
            Mode::NotServing
        );
        assert_eq!(
            mode("srvr is not executed because it is not in the whitelist.\n"),
            Mode::NotServing
        );
    }

    #[test]
    fn followers_see_the_server_that_says_leader() {
        let checker = Checker::new(
            &Timing { cluster: Some("zk".into()), ..Default::default() },
            Via::Poll,
            1,
            crate::pipeline::Clock::system(),
        );
        let last = Mutex::new(None);
        let modes = vec![
            ("z1".to_string(), Some(Mode::Follower)),
            ("z2".to_string(), Some(Mode::Leader)),
            ("z3".to_string(), None),
        ];
        let obs = round(&checker, &modes, &last, Timestamp(1));
        let views: Vec<(String, Option<String>)> = obs
            .iter()
            .filter_map(|o| match &o.signal {
                Signal::View { leader } => {
                    Some((o.reporter.to_string(), leader.as_ref().map(|l| l.to_string())))
                }
                _ => None,
            })
            .collect();
        assert_eq!(views, vec![("z1".into(), Some("z2".into())), ("z2".into(), Some("z2".into()))]);
        let down: Vec<&Observation<'_>> = obs
            .iter()
            .filter(|o| matches!(&o.signal, Signal::NodeCheck { ok: false, .. }))
            .collect();
        assert_eq!(down.len(), 1, "the silent server counts as a failed attempt");
    }
}
