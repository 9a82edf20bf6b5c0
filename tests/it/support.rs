//! Helpers shared by the integration tests.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use herald::model::ClusterEvent;

pub fn herald() -> Command {
    Command::new(env!("CARGO_BIN_EXE_herald"))
}

pub fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// Runs herald with `args`, feeding `stdin`.
pub fn run(args: &[&str], stdin: &[u8]) -> Output {
    let mut child = herald()
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn herald");
    let mut input = child.stdin.take().expect("stdin");
    let data = stdin.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = input.write_all(&data);
    });
    let out = child.wait_with_output().expect("wait for herald");
    let _ = writer.join();
    out
}

pub fn events(stdout: &[u8]) -> Vec<ClusterEvent> {
    String::from_utf8_lossy(stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad event line {l:?}: {e}")))
        .collect()
}

pub fn stderr_lines(out: &Output) -> Vec<String> {
    String::from_utf8_lossy(&out.stderr).lines().map(str::to_string).collect()
}

/// The summary line's counters, by name.
pub fn summary(out: &Output) -> std::collections::BTreeMap<String, u64> {
    let lines = stderr_lines(out);
    let last = lines.last().cloned().unwrap_or_default();
    last.split_whitespace()
        .filter_map(|kv| {
            let (k, v) = kv.split_once('=')?;
            Some((k.to_string(), v.parse().ok()?))
        })
        .collect()
}

pub fn write_temp(dir: &Path, name: &str, contents: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, contents).expect("write temp file");
    p
}

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// A minimal HTTP/1.1 exchange: (status, body).
pub fn http(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, String) {
    use std::io::Read;
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return (0, String::new());
    };
    let mut req = format!("{method} {path} HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\ncontent-length: {}\r\n", body.len());
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).expect("send");
    // The server may answer (413, 401) before reading a large body; a reset then is fine.
    let _ = s.write_all(body);
    let mut resp = Vec::new();
    let _ = s.read_to_end(&mut resp);
    let text = String::from_utf8_lossy(&resp).to_string();
    let status = text.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    (status, body)
}

/// Waits until `f` holds (30 s at most).
pub fn eventually(f: impl FnMut() -> bool) -> bool {
    eventually_for(std::time::Duration::from_secs(30), f)
}

/// Waits until `f` holds, `limit` at most.
pub fn eventually_for(limit: std::time::Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + limit;
    while std::time::Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    false
}

/// A running `herald run` whose stdout lines are collected as they come.
pub struct Daemon {
    pub child: Child,
    pub lines: Arc<Mutex<Vec<String>>>,
}

impl Daemon {
    /// The first event after the `skip` first ones that satisfies `f`, within `limit`.
    pub fn wait_event(
        &self,
        skip: usize,
        limit: Duration,
        f: impl Fn(&ClusterEvent) -> bool,
    ) -> Option<ClusterEvent> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Some(e) = self.events().into_iter().skip(skip).find(|e| f(e)) {
                return Some(e);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    pub fn start(config: &Path) -> Daemon {
        let mut child = herald()
            .args(["run", "--config", config.to_str().unwrap()])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .stdin(Stdio::null())
            .spawn()
            .expect("start herald run");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let out = child.stdout.take().unwrap();
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        Daemon { child, lines }
    }

    pub fn events(&self) -> Vec<ClusterEvent> {
        self.lines.lock().unwrap().iter().map(|l| serde_json::from_str(l).expect("event")).collect()
    }

    /// Waits until `n` events came out (and a moment more, to see that no others follow).
    pub fn wait_for(&self, n: usize) -> Vec<ClusterEvent> {
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.lines.lock().unwrap().len() < n && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        std::thread::sleep(Duration::from_millis(300));
        self.events()
    }

    pub fn signal(&mut self, sig: &str) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        Command::new("kill").args([sig, &pid]).status().expect("kill");
        let status = self.child.wait().expect("wait");
        std::thread::sleep(Duration::from_millis(50));
        status
    }
}

/// A `herald run` config in `dir`: a state dir there, `log` tailed as cluster `prod`, keys
/// kept for good, and the given sink tables.
pub fn tail_config(dir: &Path, log: &Path, sink: &str) -> PathBuf {
    write_temp(
        dir,
        "herald.toml",
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n[state]\ndir = {:?}\n[sources.log]\ntype = \"file\"\npath = {:?}\ncluster = \"prod\"\n[engine]\nkey_ttl = \"87600h\"\n{sink}",
            dir.join("state").to_str().unwrap(),
            log.to_str().unwrap()
        )
        .as_bytes(),
    )
}

/// A TCP forwarder that can be taken down (listener closed, live connections shut) and up.
pub struct Proxy {
    pub port: u16,
    upstream: u16,
    up: Arc<std::sync::atomic::AtomicBool>,
    /// While set, nothing crosses in either direction.
    stalled: Arc<std::sync::atomic::AtomicBool>,
    /// Once the clients have sent this many bytes since `stall_after`, `stalled` is set.
    stall_after: Arc<std::sync::atomic::AtomicUsize>,
    sent: Arc<std::sync::atomic::AtomicUsize>,
    conns: Arc<Mutex<Vec<std::net::TcpStream>>>,
}

impl Proxy {
    pub fn start(upstream: u16) -> Proxy {
        let p = Proxy {
            port: free_port(),
            upstream,
            up: Arc::new(std::sync::atomic::AtomicBool::new(false)),
            stalled: Arc::default(),
            stall_after: Arc::new(std::sync::atomic::AtomicUsize::new(usize::MAX)),
            sent: Arc::default(),
            conns: Arc::default(),
        };
        p.open();
        p
    }

    pub fn open(&self) {
        let listener =
            std::net::TcpListener::bind(("127.0.0.1", self.port)).expect("proxy listens");
        listener.set_nonblocking(true).expect("nonblocking");
        self.up.store(true, std::sync::atomic::Ordering::SeqCst);
        self.stalled.store(false, std::sync::atomic::Ordering::SeqCst);
        self.stall_after.store(usize::MAX, std::sync::atomic::Ordering::SeqCst);
        let (up, conns, upstream) = (self.up.clone(), self.conns.clone(), self.upstream);
        let (stalled, stall_after) = (self.stalled.clone(), self.stall_after.clone());
        let sent = self.sent.clone();
        std::thread::spawn(move || {
            while up.load(std::sync::atomic::Ordering::SeqCst) {
                let Ok((client, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                };
                let Ok(server) = std::net::TcpStream::connect(("127.0.0.1", upstream)) else {
                    continue;
                };
                let _ = client.set_nonblocking(false);
                for upstream_side in [false, true] {
                    let (from, to) =
                        if upstream_side { (&server, &client) } else { (&client, &server) };
                    let (mut from, mut to) = (from.try_clone().unwrap(), to.try_clone().unwrap());
                    let (stalled, stall_after, sent) =
                        (stalled.clone(), stall_after.clone(), sent.clone());
                    std::thread::spawn(move || {
                        use std::io::{Read, Write};
                        use std::sync::atomic::Ordering::SeqCst;
                        let mut buf = vec![0u8; 64 * 1024];
                        while let Ok(n @ 1..) = from.read(&mut buf) {
                            while stalled.load(SeqCst) {
                                std::thread::sleep(Duration::from_millis(5));
                            }
                            if to.write_all(&buf[..n]).is_err() {
                                break;
                            }
                            if !upstream_side
                                && sent.fetch_add(n, SeqCst) + n >= stall_after.load(SeqCst)
                            {
                                stalled.store(true, SeqCst);
                            }
                        }
                        let _ = to.shutdown(std::net::Shutdown::Both);
                    });
                }
                conns.lock().unwrap().extend([client, server]);
            }
            // The listener is dropped here: new connections are refused.
        });
    }

    /// Holds back what either side sends, from the moment the clients have sent `bytes` more,
    /// until `close` (which drops it) or `open`.
    pub fn stall_after(&self, bytes: usize) {
        self.sent.store(0, std::sync::atomic::Ordering::SeqCst);
        self.stall_after.store(bytes, std::sync::atomic::Ordering::SeqCst);
    }

    pub fn stalled(&self) -> bool {
        self.stalled.load(std::sync::atomic::Ordering::SeqCst)
    }

    pub fn close(&self) {
        self.up.store(false, std::sync::atomic::Ordering::SeqCst);
        for c in self.conns.lock().unwrap().drain(..) {
            let _ = c.shutdown(std::net::Shutdown::Both);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Kills the child when the test ends, however it ends.
pub struct Reaper(pub Child);

/// `herald run` tailing `log` as cluster `prod` with short windows, its server on `port`, a
/// state dir in `dir`, `engine` added to `[engine]` and the given sink tables; killed when
/// dropped.
pub fn live_herald(dir: &Path, port: u16, log: &Path, engine: &str, sinks: &str) -> Reaper {
    let cfg = format!(
        "[engine]\nwindow = \"500ms\"\nstartup_grace = \"1s\"\nsplit_window = \"1s\"\n{engine}\
         [server]\nlisten = \"127.0.0.1:{port}\"\n[state]\ndir = {:?}\n\
         [sources.log]\ntype = \"file\"\npath = {:?}\ncluster = \"prod\"\n{sinks}",
        dir.join("state").to_str().unwrap(),
        log.to_str().unwrap(),
    );
    let cfg = write_temp(dir, "herald.toml", cfg.as_bytes());
    Reaper(
        herald()
            .args(["run", "--config", cfg.to_str().unwrap()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start herald run"),
    )
}

impl Drop for Reaper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// An outside program a test needs. A missing one fails the test: a skipped test would hide
/// that what it proves went unproven.
pub fn tool(name: &str, package: &str) -> Command {
    assert!(
        Command::new(name).arg("--version").output().is_ok(),
        "{name} is missing: run scripts/services.sh (Debian package `{package}`)"
    );
    Command::new(name)
}

/// The wall clock `offset_ms` from now, as live OpenZiti lines carry it.
pub fn now_ts(offset_ms: i64) -> String {
    herald::model::Timestamp(herald::pipeline::Clock::system().now().0 + offset_ms * 1_000_000)
        .to_rfc3339()
}

/// A live OpenZiti cluster record of `src`; `extra` goes on as more fields.
pub fn cluster_line(src: &str, ty: &str, extra: &str) -> String {
    format!("{{\"namespace\":\"cluster\",\"event_src_id\":\"{src}\",\"timestamp\":\"{}\",\"eventType\":\"{ty}\"{extra}}}\n", now_ts(0))
}

/// The `peers` field of a cluster record, as `extra` for [`cluster_line`].
pub fn peers(ids: &[&str]) -> String {
    let list: Vec<String> = ids.iter().map(|i| format!("{{\"id\":\"{i}\"}}")).collect();
    format!(",\"peers\":[{}]", list.join(","))
}

/// Appends `lines` to the log herald tails, in one write.
pub fn append(log: &Path, lines: &[String]) {
    let mut f = std::fs::OpenOptions::new().append(true).open(log).unwrap();
    f.write_all(lines.concat().as_bytes()).unwrap();
}
