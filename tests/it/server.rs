//! The HTTP server against real sockets: the bounds on what a client can hold, the token, the
//! sources' paths, and probes that answer while a sink waits for its broker.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::daemon::one_event_per_line;
use crate::support::*;

/// `herald run` with `config` (a `[server]` on `port` is put first), its stderr in `log`.
fn start(dir: &Path, port: u16, server: &str, rest: &str) -> (Child, std::path::PathBuf) {
    let text = format!("[server]\nlisten = \"127.0.0.1:{port}\"\n{server}\n{rest}");
    let cfg = write_temp(dir, "herald.toml", text.as_bytes());
    let log = dir.join("herald.log");
    let child = herald()
        .args(["run", "--config", cfg.to_str().unwrap()])
        .env("RUST_LOG", "trace")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("start herald run");
    (child, log)
}

fn stop(mut child: Child) -> std::process::ExitStatus {
    Command::new("kill").args(["-TERM", &child.id().to_string()]).status().expect("kill");
    child.wait().expect("wait")
}

fn ready(port: u16) -> bool {
    eventually(|| http(port, "GET", "/readyz", &[], b"").0 == 200)
}

/// A GET that gives up after `limit`: (status, body), status 0 if there was no answer.
fn get_within(port: u16, path: &str, limit: Duration) -> (u16, String) {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else { return (0, String::new()) };
    s.set_read_timeout(Some(limit)).unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).unwrap();
    let mut resp = Vec::new();
    let _ = s.read_to_end(&mut resp);
    let text = String::from_utf8_lossy(&resp).to_string();
    let status = text.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    (status, text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default())
}

/// The soft limit on open files, from `/proc/self/limits`.
fn open_files_limit() -> u64 {
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
    limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

#[test]
fn a_client_sending_its_headers_a_byte_a_second_is_cut_off_at_the_header_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let (child, _) = start(dir.path(), port, "header_timeout = \"2s\"", "");
    assert!(ready(port));
    let mut slow = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let mut writer = slow.try_clone().unwrap();
    let began = Instant::now();
    // Each byte arrives well within any idle timeout: only a bound on the whole head cuts it.
    std::thread::spawn(move || {
        for b in b"GET /healthz HTTP/1.1\r\nhost: 127.0.0.1\r\nx-slow: abcdefghijklmnopqrstuvwxyz\r\n\r\n" {
            if writer.write_all(&[*b]).is_err() {
                return;
            }
            std::thread::sleep(Duration::from_secs(1));
        }
    });
    slow.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut answer = Vec::new();
    let closed = match slow.read_to_end(&mut answer) {
        Ok(_) => true,
        Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
    };
    let held = began.elapsed();
    assert!(closed, "the server closed the connection");
    assert!(
        answer.is_empty(),
        "no answer to an unfinished head: {:?}",
        String::from_utf8_lossy(&answer)
    );
    assert!(held >= Duration::from_millis(1500), "not before the timeout: {held:?}");
    assert!(held < Duration::from_secs(20), "long before the head was complete: {held:?}");
    assert_eq!(http(port, "GET", "/healthz", &[], b"").0, 200, "others are served");
    assert!(stop(child).success());
}

#[test]
fn a_thousand_idle_connections_do_not_stop_healthz_from_answering() {
    let need = 2_500;
    assert!(
        open_files_limit() >= need,
        "this test holds 1,000 connections on each side: raise `ulimit -n` to {need} or more"
    );
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    // Longer than the test: the idle connections stay open while /healthz is asked.
    let (child, _) = start(dir.path(), port, "header_timeout = \"5m\"", "");
    assert!(ready(port));
    let idle: Vec<TcpStream> = (0..1_000)
        .map(|i| {
            let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
            // Half say nothing at all, half start a request and stop.
            if i % 2 == 1 {
                s.write_all(b"GET /heal").unwrap();
            }
            s
        })
        .collect();
    let (status, body) = get_within(port, "/healthz", Duration::from_secs(10));
    assert_eq!((status, body.as_str()), (200, "ok\n"));
    assert_eq!(get_within(port, "/readyz", Duration::from_secs(10)).0, 200);
    // They were all held open meanwhile: none was closed to make room.
    for s in &idle {
        s.set_nonblocking(true).unwrap();
        let mut b = [0u8; 1];
        let e = (&*s).read(&mut b).expect_err("still open, nothing to read");
        assert_eq!(e.kind(), std::io::ErrorKind::WouldBlock);
    }
    drop(idle);
    assert!(stop(child).success());
}

#[test]
fn headers_over_the_limit_get_431() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let (child, _) = start(dir.path(), port, "", "");
    assert!(ready(port));
    let big = "a".repeat(8 * 1024);
    assert_eq!(http(port, "GET", "/healthz", &[("x-big", &big)], b"").0, 200, "8 KiB is fine");
    // 16 KiB of request head and still no end to it. Exactly the limit is sent, so the
    // server has read every byte when it answers and its close is clean.
    let start = "GET /healthz HTTP/1.1\r\nhost: 127.0.0.1\r\nx-big: ";
    let mut head = start.as_bytes().to_vec();
    head.resize(16 * 1024, b'a');
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.write_all(&head).unwrap();
    let mut answer = Vec::new();
    let _ = s.read_to_end(&mut answer);
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer:?}");
    assert!(stop(child).success());
}

#[test]
fn a_wrong_token_gets_401_and_no_token_reaches_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let (right, wrong) = ("the-right-t0ken", "a-wrong-guess-t0ken");
    let (child, log) = start(
        dir.path(),
        port,
        &format!("ingest_token = \"{right}\""),
        "[sources.in]\ntype = \"http\"\ncluster = \"prod\"\n",
    );
    assert!(ready(port));
    let body = one_event_per_line(0, 2);
    let bearer = |t: &str| format!("Bearer {t}");
    for auth in [bearer(wrong), bearer(&right[..right.len() - 1]), right.to_string()] {
        let (status, answer) = http(port, "POST", "/ingest", &[("authorization", &auth)], &body);
        assert_eq!(status, 401, "{auth}: {answer}");
        assert!(!answer.contains("t0ken"), "the answer repeats no token: {answer}");
    }
    let (status, answer) =
        http(port, "POST", "/ingest", &[("authorization", &bearer(right))], &body);
    assert_eq!((status, answer.trim()), (200, "{\"accepted\":2}"));
    assert!(stop(child).success());
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(logged.contains("herald is running"), "the log was written: {logged}");
    assert!(!logged.contains("t0ken"), "a token in the log: {logged}");
}

#[test]
fn two_http_sources_on_one_path_are_a_config_error() {
    let dir = tempfile::tempdir().unwrap();
    let text = "[sources.a]\ntype = \"http\"\n[sources.b]\ntype = \"http\"\n[sources.c]\ntype = \"http\"\npath = \"/metrics\"\n";
    let cfg = write_temp(dir.path(), "herald.toml", text.as_bytes());
    let out = run(&["check", "--config", cfg.to_str().unwrap()], b"");
    assert_eq!(out.status.code(), Some(78), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("sources.b.path: \"/ingest\" is already the path of sources.a"), "{err}");
    assert!(err.contains("sources.c.path: \"/metrics\" is one of the server's own paths"), "{err}");
}

#[test]
fn two_http_sources_on_their_own_paths_each_take_their_records() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let (child, _) = start(
        dir.path(),
        port,
        "",
        "[sources.a]\ntype = \"http\"\ncluster = \"east\"\n[sources.b]\ntype = \"http\"\npath = \"/ingest/west\"\ncluster = \"west\"\n",
    );
    assert!(ready(port));
    let body = one_event_per_line(0, 1);
    assert_eq!(http(port, "POST", "/ingest", &[], &body).0, 200);
    assert_eq!(http(port, "POST", "/ingest/west", &[], &body).0, 200);
    assert_eq!(http(port, "POST", "/ingest/north", &[], &body).0, 404);
    let (_, metrics) = http(port, "GET", "/metrics", &[], b"");
    for source in ["a", "b"] {
        let line = format!("herald_records_total{{outcome=\"ok\",source=\"{source}\"}} 1");
        assert!(metrics.contains(&line), "no {line} in /metrics");
    }
    assert!(stop(child).success());
}

#[test]
fn probes_answer_while_a_sink_waits_for_its_broker() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let cluster = rdkafka::mocking::MockCluster::new(1).unwrap();
    cluster.create_topic("t", 1, 1).unwrap();
    let bootstrap = cluster.bootstrap_servers();
    let upstream = bootstrap.rsplit(':').next().and_then(|p| p.parse().ok()).expect("a port");
    // The broker is away until the proxy opens: nothing listens on its port.
    let proxy = Proxy::start(upstream);
    proxy.close();
    let (child, _) = start(
        dir.path(),
        port,
        "",
        &format!(
            "[sources.in]\ntype = \"http\"\n[sinks.k]\ntype = \"kafka\"\nbrokers = \"127.0.0.1:{}\"\ntopic = \"t\"\n",
            proxy.port
        ),
    );
    assert!(eventually(|| http(port, "GET", "/healthz", &[], b"").0 == 200), "/healthz answers");
    let (status, why) = http(port, "GET", "/readyz", &[], b"");
    assert_eq!((status, why.as_str()), (503, "starting; waiting for: sink k, state, sources\n"));
    let (status, metrics) = http(port, "GET", "/metrics", &[], b"");
    assert_eq!(status, 200);
    for line in [
        "herald_ready 0",
        "herald_waiting_for{component=\"sink k\"} 1",
        "herald_waiting_for{component=\"state\"} 1",
    ] {
        assert!(metrics.contains(line), "no {line} in /metrics");
    }
    assert!(
        eventually(|| http(port, "GET", "/metrics", &[], b"")
            .1
            .contains("herald_outages_total{component=\"k\",transition=\"began\"} 1")),
        "the sink's outage is counted"
    );
    let body = one_event_per_line(0, 1);
    let (status, answer) = http(port, "POST", "/ingest", &[], &body);
    assert_eq!(status, 503, "not yet: {answer}");
    assert!(answer.contains("waiting for: sink k"), "{answer}");

    // The broker comes: herald gets ready and takes records.
    proxy.open();
    assert!(ready(port), "ready once the broker is reachable");
    let (status, answer) = http(port, "POST", "/ingest", &[], &body);
    assert_eq!((status, answer.trim()), (200, "{\"accepted\":1}"));
    let (_, metrics) = http(port, "GET", "/metrics", &[], b"");
    assert!(metrics.contains("herald_ready 1") && !metrics.contains("herald_waiting_for{"));
    assert!(stop(child).success());
}

#[test]
fn a_signal_while_a_sink_waits_for_its_broker_stops_herald() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let kafka = free_port();
    let (child, log) = start(
        dir.path(),
        port,
        "",
        &format!("[sinks.k]\ntype = \"kafka\"\nbrokers = \"127.0.0.1:{kafka}\"\ntopic = \"t\"\n"),
    );
    assert!(eventually(|| http(port, "GET", "/readyz", &[], b"").0 == 503));
    assert!(stop(child).success(), "SIGTERM while starting exits 0");
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(logged.contains("stopped while starting"), "{logged}");
}
