//! Synthetic OpenZiti controller logs, for tests and benchmarks.
//!
//! A seeded simulation of one controller cluster writes the records a real one would: the
//! startup burst (members, peers, views, leadership), then a stream of scenes drawn at random:
//! noise from namespaces herald passes over, duplicated records, view flaps shorter than the
//! window, router and peer flaps, real router changes, leader failovers, membership changes,
//! read-only blips, terminator churn and terminator spins (legacy and v2.0 entity changes),
//! with adjacent records occasionally swapped (OpenZiti dispatches each event on its own
//! goroutine). The same seed always gives the same log.

use std::io::{self, Write};

use chrono::{DateTime, FixedOffset, Offset, SecondsFormat, Utc};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// What to generate.
#[derive(Clone, Debug)]
pub struct Options {
    pub seed: u64,
    pub lines: u64,
    pub controllers: u32,
    pub routers: u32,
    pub services: u32,
    /// After the startup, only router flips.
    pub router_flips: bool,
    /// Start of the log, in Unix nanoseconds.
    pub start: i64,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            seed: 1,
            lines: 10_000,
            controllers: 3,
            routers: 20,
            services: 10,
            router_flips: false,
            // 2025-01-10T18:00:00Z
            start: 1_736_532_000_000_000_000,
        }
    }
}

const MS: i64 = 1_000_000;

struct Sim<'a, W: Write> {
    rng: ChaCha8Rng,
    out: &'a mut W,
    opts: Options,
    written: u64,
    t: i64,
    leader: u32,
    members: Vec<u32>,
    index: u64,
    offline: Vec<bool>,
    recent: Vec<String>,
    scene: Vec<(i64, String)>,
    event_id: u64,
    terminator: u64,
}

/// Writes `opts.lines` lines of log to `out`.
pub fn write<W: Write>(opts: &Options, out: &mut W) -> io::Result<()> {
    let controllers = opts.controllers.max(1);
    let mut sim = Sim {
        rng: ChaCha8Rng::seed_from_u64(opts.seed),
        out,
        opts: Options {
            controllers,
            routers: opts.routers.max(1),
            services: opts.services.max(1),
            ..opts.clone()
        },
        written: 0,
        t: opts.start,
        leader: 1,
        members: (1..=controllers).collect(),
        index: 1,
        offline: vec![false; opts.routers.max(1) as usize + 1],
        recent: Vec::new(),
        scene: Vec::new(),
        event_id: 0,
        terminator: 0,
    };
    sim.startup();
    sim.flush()?;
    while sim.written < sim.opts.lines {
        if sim.opts.router_flips {
            sim.t += sim.rng.random_range(1..10) * MS;
            let r = sim.rng.random_range(1..=sim.opts.routers);
            let Some(offline) = sim.offline.get_mut(r as usize) else { continue };
            let online = std::mem::replace(offline, !*offline);
            sim.router(sim.t, r, online);
            sim.flush()?;
            continue;
        }
        sim.t += sim.rng.random_range(5..100) * MS;
        sim.scene()?;
        sim.flush()?;
    }
    Ok(())
}

fn ts(nanos: i64) -> String {
    // OpenZiti writes local time with its offset; any offset must decode to the same instant.
    let offset = FixedOffset::west_opt(5 * 3600).unwrap_or_else(|| Utc.fix());
    DateTime::<Utc>::from_timestamp_nanos(nanos)
        .with_timezone(&offset)
        .to_rfc3339_opts(SecondsFormat::Nanos, false)
}

impl<W: Write> Sim<'_, W> {
    fn ctrl(n: u32) -> String {
        format!("ctrl{n}")
    }

    fn router_id(n: u32) -> String {
        format!("rtr{n:03}")
    }

    fn cluster(&mut self, at: i64, reporter: u32, event_type: &str, extra: &str) {
        let line = format!(
            r#"{{"namespace":"cluster","event_src_id":"{}","timestamp":"{}","eventType":"{}"{}}}"#,
            Self::ctrl(reporter),
            ts(at),
            event_type,
            extra
        );
        self.push(at, line);
    }

    fn push(&mut self, at: i64, line: String) {
        self.scene.push((at, line));
    }

    fn peers(ids: &[u32]) -> String {
        let list: Vec<String> = ids
            .iter()
            .map(|i| format!(r#"{{"id":"ctrl{i}","addr":"tls:ctrl{i}:6262","version":"v1.6.0"}}"#))
            .collect();
        format!(r#","peers":[{}]"#, list.join(","))
    }

    fn startup(&mut self) {
        let t = self.t;
        let members = self.members.clone();
        for &c in &members {
            let at = t + i64::from(c) * MS;
            self.cluster(
                at,
                c,
                "members.changed",
                &format!(r#","index":{}{}"#, self.index, Self::peers(&members)),
            );
            for &p in members.iter().filter(|&&p| p != c) {
                self.cluster(at + MS, c, "peer.connected", &Self::peers(&[p]));
            }
            self.cluster(
                at + 2 * MS,
                c,
                "state.has_leader",
                &format!(r#","leaderId":"ctrl{}""#, self.leader),
            );
        }
        self.cluster(t + 10 * MS, self.leader, "leadership.gained", "");
        for r in 1..=self.opts.routers {
            self.router(t + 20 * MS + i64::from(r), r, true);
        }
    }

    fn router(&mut self, at: i64, r: u32, online: bool) {
        let kind = if online { "router-online" } else { "router-offline" };
        let line = format!(
            r#"{{"namespace":"router","event_src_id":"ctrl{}","timestamp":"{}","event_type":"{}","router_id":"{}","router_online":{}}}"#,
            self.leader,
            ts(at),
            kind,
            Self::router_id(r),
            online
        );
        self.offline[r as usize] = !online;
        self.push(at, line);
    }

    fn terminator(&mut self, at: i64, created: bool, service: u32, router: u32, v2: bool) {
        let (svc, rtr) = (format!("svc{service:02}"), Self::router_id(router));
        if created {
            self.terminator += 1;
        }
        let id = format!("term{:06}", self.terminator);
        if v2 {
            self.event_id += 1;
            let eid = format!("evt-{:08}", self.event_id);
            let (kind, state) =
                if created { ("created", "finalState") } else { ("deleted", "initialState") };
            let line = format!(
                r#"{{"namespace":"entityChange","event_src_id":"ctrl{}","timestamp":"{}","eventId":"{eid}","eventType":"{kind}","entityType":"terminators","isParentEvent":false,"{state}":{{"id":"{id}","service":"{svc}","router":"{rtr}","hostId":"host1","binding":"tunnel"}}}}"#,
                self.leader,
                ts(at)
            );
            self.push(at, line);
            let commit = format!(
                r#"{{"namespace":"entityChange","event_src_id":"ctrl{}","timestamp":"{}","eventId":"{eid}","eventType":"committed","isParentEvent":false}}"#,
                self.leader,
                ts(at + MS / 10)
            );
            self.push(at + MS / 10, commit);
        } else {
            let kind = if created { "created" } else { "deleted" };
            let line = format!(
                r#"{{"namespace":"terminator","event_type":"{kind}","event_src_id":"ctrl{}","timestamp":"{}","service_id":"{svc}","terminator_id":"{id}","router_id":"{rtr}","host_id":"host1","router_online":true,"precedence":"default","static_cost":0,"dynamic_cost":0}}"#,
                self.leader,
                ts(at)
            );
            self.push(at, line);
        }
    }

    fn noise(&mut self, at: i64) {
        let line = if self.rng.random_bool(0.5) {
            format!(
                r#"{{"namespace":"connect","src_type":"identity","src_id":"id{}","src_addr":"127.0.0.1:{}","dst_id":"ctrl{}","dst_addr":"localhost:1280/edge/management/v1/services","timestamp":"{}"}}"#,
                self.rng.random_range(1..500),
                self.rng.random_range(30000..60000),
                self.leader,
                ts(at)
            )
        } else {
            let kinds = ["sdk-online", "sdk-offline", "sdk-status-unknown"];
            format!(
                r#"{{"namespace":"sdk","event_type":"{}","identity_id":"id{}","timestamp":"{}"}}"#,
                kinds[self.rng.random_range(0..kinds.len())],
                self.rng.random_range(1..500),
                ts(at)
            )
        };
        self.push(at, line);
    }

    fn any_ctrl(&mut self) -> u32 {
        self.members[self.rng.random_range(0..self.members.len())]
    }

    fn scene(&mut self) -> io::Result<()> {
        let t = self.t;
        let roll = self.rng.random_range(0..1000);
        match roll {
            0..=299 => self.noise(t),
            300..=399 => {
                // A record delivered twice.
                if let Some(line) = self.recent.last().cloned() {
                    self.push(t, line);
                } else {
                    self.noise(t);
                }
            }
            400..=499 => {
                // A view flap shorter than the window.
                let c = self.any_ctrl();
                self.cluster(t, c, "state.is_leaderless", "");
                let back = t + self.rng.random_range(100..900) * MS;
                self.cluster(
                    back,
                    c,
                    "state.has_leader",
                    &format!(r#","leaderId":"ctrl{}""#, self.leader),
                );
            }
            500..=649 => {
                let r = self.rng.random_range(1..=self.opts.routers);
                let online = !self.offline[r as usize];
                self.router(t, r, !online);
                let back = t + self.rng.random_range(50..500) * MS;
                self.router(back, r, online);
            }
            650..=699 => {
                let r = self.rng.random_range(1..=self.opts.routers);
                let online = self.offline[r as usize];
                self.router(t, r, online);
                self.t += 3_000 * MS;
            }
            700..=779 => {
                let c = self.any_ctrl();
                let others: Vec<u32> = self.members.iter().copied().filter(|&p| p != c).collect();
                if let Some(&p) = others.first() {
                    self.cluster(t, c, "peer.disconnected", &Self::peers(&[p]));
                    let back = t + self.rng.random_range(100..1500) * MS;
                    self.cluster(back, c, "peer.connected", &Self::peers(&[p]));
                }
            }
            780..=809 => self.failover(t),
            810..=819 => {
                // Membership changes at a new raft index; every controller reports it.
                self.index += 1;
                let n = self.opts.controllers + 1;
                if self.members.len() > self.opts.controllers as usize {
                    self.members.retain(|&m| m != n);
                } else {
                    self.members.push(n);
                }
                let members = self.members.clone();
                for (i, &c) in members.iter().enumerate() {
                    self.cluster(
                        t + i as i64 * MS,
                        c,
                        "members.changed",
                        &format!(r#","index":{}{}"#, self.index, Self::peers(&members)),
                    );
                }
                self.t += 3_000 * MS;
            }
            820..=839 => {
                let c = self.any_ctrl();
                self.cluster(t, c, "state.ro", "");
                let back = t + self.rng.random_range(100..800) * MS;
                self.cluster(back, c, "state.rw", "");
            }
            840..=979 => {
                // Ordinary terminator churn: one create now, its delete much later.
                let (s, r) = (
                    self.rng.random_range(1..=self.opts.services),
                    self.rng.random_range(1..=self.opts.routers),
                );
                let v2 = self.rng.random_bool(0.3);
                self.terminator(t, true, s, r, v2);
                self.terminator(t + 90_000 * MS, false, s, r, v2);
            }
            _ => {
                // A spin: a tunneller's terminator created and deleted in a loop.
                let (s, r) = (
                    self.rng.random_range(1..=self.opts.services),
                    self.rng.random_range(1..=self.opts.routers),
                );
                let v2 = self.rng.random_bool(0.3);
                let cycles = self.rng.random_range(3..8);
                for i in 0..cycles {
                    let at = t + i * 800 * MS;
                    self.terminator(at, true, s, r, v2);
                    self.terminator(at + 300 * MS, false, s, r, v2);
                }
            }
        }
        Ok(())
    }

    /// The leader fails over: leadership lost, everyone briefly leaderless, a new leader.
    fn failover(&mut self, t: i64) {
        let old = self.leader;
        let candidates: Vec<u32> = self.members.iter().copied().filter(|&c| c != old).collect();
        let Some(&new) = candidates.get(self.rng.random_range(0..candidates.len().max(1))) else {
            return;
        };
        self.cluster(t, old, "leadership.lost", "");
        let members = self.members.clone();
        for (i, &c) in members.iter().enumerate() {
            self.cluster(t + (i as i64 + 1) * 5 * MS, c, "state.is_leaderless", "");
        }
        let elected = t + self.rng.random_range(200..1500) * MS;
        self.cluster(elected, new, "leadership.gained", "");
        for (i, &c) in members.iter().enumerate() {
            self.cluster(
                elected + (i as i64 + 1) * 3 * MS,
                c,
                "state.has_leader",
                &format!(r#","leaderId":"ctrl{new}""#),
            );
        }
        self.leader = new;
        self.t = elected + 3_000 * MS;
    }

    /// Writes the scene's records in time order, except that adjacent ones are sometimes
    /// swapped, as goroutine dispatch does.
    fn flush(&mut self) -> io::Result<()> {
        let mut scene = std::mem::take(&mut self.scene);
        scene.sort_by_key(|(at, _)| *at);
        for i in 1..scene.len() {
            if self.rng.random_bool(0.05) {
                scene.swap(i - 1, i);
            }
        }
        for (at, line) in scene {
            if self.written >= self.opts.lines {
                break;
            }
            self.out.write_all(line.as_bytes())?;
            self.out.write_all(b"\n")?;
            self.written += 1;
            self.t = self.t.max(at);
            if line.contains(r#""namespace":"cluster""#) {
                if self.recent.len() >= 16 {
                    self.recent.remove(0);
                }
                self.recent.push(line);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_log_and_exact_length() {
        let opts = Options { lines: 2_000, ..Options::default() };
        let (mut a, mut b) = (Vec::new(), Vec::new());
        write(&opts, &mut a).unwrap();
        write(&opts, &mut b).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.iter().filter(|&&c| c == b'\n').count(), 2_000);
        let mut c = Vec::new();
        write(&Options { seed: 2, ..opts }, &mut c).unwrap();
        assert_ne!(a, c);
    }
}
