//! Real raft clusters on 127.0.0.1: a 3-member etcd cluster (Debian's etcd-server) polled by
//! herald; its leader is SIGKILLed and herald must report the dead node and the new leader,
//! checked against etcdctl. TCP probes against a listener that goes away.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use herald::model::{ClusterEvent, EventKind, Via};

use crate::support::*;

/// `herald run` on a config text, its events collected; stopped when dropped.
struct Running(Daemon);

impl Running {
    fn start(dir: &Path, config: &str) -> Running {
        Running(Daemon::start(&write_temp(dir, "herald.toml", config.as_bytes())))
    }

    fn events(&self) -> Vec<ClusterEvent> {
        self.0.events()
    }

    fn wait_for(
        &self,
        skip: usize,
        limit: Duration,
        f: impl Fn(&ClusterEvent) -> bool,
    ) -> Option<ClusterEvent> {
        self.0.wait_event(skip, limit, f)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.0.signal("-TERM");
    }
}

/// A 3-member etcd cluster on free ports.
pub struct Etcd {
    pub names: Vec<String>,
    pub clients: Vec<String>,
    children: Vec<Option<Child>>,
}

impl Etcd {
    pub fn start(dir: &Path) -> Etcd {
        let names: Vec<String> = (1..=3).map(|i| format!("etcd{i}")).collect();
        let clients: Vec<String> =
            (0..3).map(|_| format!("http://127.0.0.1:{}", free_port())).collect();
        let peers: Vec<String> =
            (0..3).map(|_| format!("http://127.0.0.1:{}", free_port())).collect();
        let initial: Vec<String> =
            names.iter().zip(&peers).map(|(n, p)| format!("{n}={p}")).collect();
        let mut children = Vec::new();
        for i in 0..3 {
            let data: PathBuf = dir.join(&names[i]);
            let child = Command::new("etcd")
                .args(["--name", &names[i], "--data-dir"])
                .arg(&data)
                .args([
                    "--listen-client-urls",
                    &clients[i],
                    "--advertise-client-urls",
                    &clients[i],
                    "--listen-peer-urls",
                    &peers[i],
                    "--initial-advertise-peer-urls",
                    &peers[i],
                    "--initial-cluster",
                    &initial.join(","),
                    "--initial-cluster-state",
                    "new",
                    "--initial-cluster-token",
                    "herald-test",
                ])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("etcd (scripts/services.sh installs Debian's etcd-server)");
            children.push(Some(child));
        }
        let e = Etcd { names, clients, children };
        assert!(eventually(|| e.leader(&e.clients).is_some()), "the etcd cluster elects a leader");
        e
    }

    /// The leader's name as `etcdctl endpoint status` on `endpoints` reports it, when they
    /// agree on one.
    pub fn leader(&self, endpoints: &[String]) -> Option<String> {
        let out = Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .args(["--endpoints", &endpoints.join(","), "--dial-timeout", "1s"])
            .args(["endpoint", "status", "-w", "json"])
            .output()
            .ok()?;
        let status: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        let leaders: std::collections::BTreeSet<u64> =
            status.as_array()?.iter().filter_map(|s| s["Status"]["leader"].as_u64()).collect();
        let [leader] = leaders.into_iter().collect::<Vec<_>>()[..] else { return None };
        if leader == 0 {
            return None;
        }
        let out = Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .args(["--endpoints", &endpoints.join(","), "member", "list", "-w", "json"])
            .output()
            .ok()?;
        let members: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        members["members"]
            .as_array()?
            .iter()
            .find(|m| m["ID"].as_u64() == Some(leader))
            .and_then(|m| m["name"].as_str().map(str::to_string))
    }

    pub fn index(&self, name: &str) -> usize {
        self.names.iter().position(|n| n == name).expect("a member")
    }

    pub fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.children[i].take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn config(&self, dir: &Path) -> String {
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n[state]\ndir = {:?}\n[sources.etcd]\ntype = \"etcd\"\ncluster = \"kv\"\nendpoints = {:?}\n",
            dir.join("state").to_str().unwrap(),
            self.clients
        )
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        for i in 0..self.children.len() {
            self.kill(i);
        }
    }
}

#[test]
fn etcd_leader_killed_herald_reports_the_dead_node_and_the_new_leader() {
    let dir = tempfile::tempdir().unwrap();
    let mut etcd = Etcd::start(dir.path());
    let herald = Running::start(dir.path(), &etcd.config(dir.path()));
    let first = etcd.leader(&etcd.clients).expect("a leader");
    let elected = |leader: &str| {
        let leader = leader.to_string();
        move |e: &ClusterEvent| {
            e.kind == EventKind::LeaderElected && e.leader_id.as_deref() == Some(leader.as_str())
        }
    };
    herald
        .wait_for(0, Duration::from_secs(20), elected(&first))
        .unwrap_or_else(|| panic!("herald reports {first} as leader: {:?}", herald.events()));
    let up = herald.wait_for(0, Duration::from_secs(10), |e| e.kind == EventKind::NodeUp);
    assert!(up.is_some_and(|e| e.via == Some(Via::Poll)), "initial node.up via poll");

    let seen = herald.events().len();
    let killed = etcd.index(&first);
    etcd.kill(killed);
    let rest: Vec<String> =
        (0..3).filter(|i| *i != killed).map(|i| etcd.clients[i].clone()).collect();
    let down = herald
        .wait_for(seen, Duration::from_secs(20), |e| {
            e.kind == EventKind::NodeDown && e.node.as_deref() == Some(first.as_str())
        })
        .unwrap_or_else(|| panic!("node.down for {first}: {:?}", herald.events()));
    assert_eq!(down.via, Some(Via::Poll));
    let mut new = None;
    assert!(
        eventually(|| {
            // The survivors name the dead leader until their election timeout.
            new = etcd.leader(&rest).filter(|l| *l != first);
            new.is_some()
        }),
        "the survivors elect a new leader"
    );
    let new = new.unwrap();
    assert_ne!(new, first);
    let e = herald
        .wait_for(seen, Duration::from_secs(20), elected(&new))
        .unwrap_or_else(|| panic!("herald reports {new} as the new leader: {:?}", herald.events()));
    assert_eq!(e.previous.as_deref(), Some(first.as_str()));
    let reporters = e.reporters.clone().unwrap_or_default();
    assert!(!reporters.contains(&first), "a dead member is not among the live reporters");
}

#[test]
fn a_probe_reports_a_node_down_after_two_failures_and_up_again() {
    let dir = tempfile::tempdir().unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let dead = format!("127.0.0.1:{}", free_port());
    let herald = Running::start(
        dir.path(),
        &format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n[sources.p]\ntype = \"probe\"\ncluster = \"prod\"\ninterval = \"200ms\"\n[sources.p.nodes]\nctrl1 = \"{addr}\"\nctrl2 = \"{dead}\"\n"
        ),
    );
    let of = |kind: EventKind, node: &'static str| {
        move |e: &ClusterEvent| e.kind == kind && e.node.as_deref() == Some(node)
    };
    let up = herald.wait_for(0, Duration::from_secs(10), of(EventKind::NodeUp, "ctrl1"));
    assert!(up.is_some_and(|e| e.initial && e.via == Some(Via::Probe)), "{:?}", herald.events());
    let down = herald
        .wait_for(0, Duration::from_secs(10), of(EventKind::NodeDown, "ctrl2"))
        .expect("a never-reachable node is down from the start");
    assert!(down.initial);
    let gap = down.stable_at.0 - down.at.0;
    assert!(
        (150_000_000..1_000_000_000).contains(&gap),
        "down at the 2nd failure, one interval after the first: {gap} ns"
    );
    let seen = herald.events().len();
    drop(listener);
    let down = herald
        .wait_for(seen, Duration::from_secs(10), of(EventKind::NodeDown, "ctrl1"))
        .expect("ctrl1 down once its listener is gone");
    assert!(!down.initial);
    let listener = std::net::TcpListener::bind(addr).unwrap();
    let up = herald
        .wait_for(seen, Duration::from_secs(10), of(EventKind::NodeUp, "ctrl1"))
        .expect("ctrl1 up at the first success");
    assert_eq!(up.at, up.stable_at, "up after 1 success");
    drop(listener);
}
