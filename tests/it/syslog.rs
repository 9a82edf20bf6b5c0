//! The syslog sink against a real rsyslog: each test starts its own rsyslogd, which writes
//! every message it receives, as received, to a file; herald's stdout tells what it emitted.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use syslog_rfc5424::SyslogMessage;

use crate::daemon::one_event_per_line;
use crate::support::{free_port, tail_config, write_temp, Daemon};

const SD_ID: &str = "herald@32473";

#[derive(Clone, Copy, PartialEq)]
enum Transport {
    Tcp,
    Tls,
    Udp,
}

/// One rsyslogd of a test's own, on its own port, that can be stopped and started again.
struct Rsyslog {
    child: Option<Child>,
    dir: PathBuf,
    conf: PathBuf,
    out: PathBuf,
    port: u16,
    transport: Transport,
}

fn rsyslogd() -> &'static str {
    if Path::new("/usr/sbin/rsyslogd").exists() {
        "/usr/sbin/rsyslogd"
    } else {
        "rsyslogd"
    }
}

/// A CA and a server certificate for 127.0.0.1 signed by it: (ca, cert, key).
fn certificates(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let openssl = |args: &[&str]| {
        let out = Command::new("openssl").args(args).current_dir(dir).output().expect("openssl");
        assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "1",
        "-subj",
        "/CN=herald test CA",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
    ]);
    openssl(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=127.0.0.1",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
    ]);
    write_temp(dir, "san.ext", b"subjectAltName=IP:127.0.0.1\n");
    openssl(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "1",
        "-extfile",
        "san.ext",
        "-out",
        "server.pem",
    ]);
    (dir.join("ca.pem"), dir.join("server.pem"), dir.join("server.key"))
}

impl Rsyslog {
    fn start(dir: &Path, transport: Transport) -> Rsyslog {
        let port = free_port();
        let work = dir.join("rsyslog");
        std::fs::create_dir_all(&work).unwrap();
        let out = dir.join("received.log");
        let (global, input) = match transport {
            Transport::Tcp => (
                String::new(),
                format!("module(load=\"imtcp\")\ninput(type=\"imtcp\" port=\"{port}\" address=\"127.0.0.1\")"),
            ),
            Transport::Tls => {
                let (ca, cert, key) = certificates(dir);
                (
                    format!(
                        " defaultNetstreamDriver=\"gtls\" defaultNetstreamDriverCAFile=\"{}\" defaultNetstreamDriverCertFile=\"{}\" defaultNetstreamDriverKeyFile=\"{}\"",
                        ca.display(),
                        cert.display(),
                        key.display()
                    ),
                    format!("module(load=\"imtcp\" streamDriver.name=\"gtls\" streamDriver.mode=\"1\" streamDriver.authMode=\"anon\")\ninput(type=\"imtcp\" port=\"{port}\" address=\"127.0.0.1\")"),
                )
            }
            Transport::Udp => (
                String::new(),
                format!("module(load=\"imudp\")\ninput(type=\"imudp\" port=\"{port}\" address=\"127.0.0.1\")"),
            ),
        };
        // %rawmsg%: the message exactly as received (without the octet count), one per line.
        let conf = format!(
            "global(workDirectory=\"{}\"{global})\n{input}\ntemplate(name=\"raw\" type=\"string\" string=\"%rawmsg%\\n\")\naction(type=\"omfile\" file=\"{}\" template=\"raw\" asyncWriting=\"off\" flushOnTXEnd=\"on\")\n",
            work.display(),
            out.display()
        );
        let conf = write_temp(dir, "rsyslog.conf", conf.as_bytes());
        let mut r = Rsyslog { child: None, dir: dir.to_path_buf(), conf, out, port, transport };
        r.spawn();
        r
    }

    fn spawn(&mut self) {
        let stderr = std::fs::File::create(self.dir.join("rsyslogd.stderr")).unwrap();
        let child = Command::new(rsyslogd())
            .arg("-n")
            .arg("-f")
            .arg(&self.conf)
            .arg("-i")
            .arg(self.dir.join("rsyslogd.pid"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start {}: {e} (scripts/services.sh installs rsyslog)", rsyslogd())
            });
        self.child = Some(child);
        self.wait_ready();
    }

    /// Until rsyslogd takes messages: a probe message of its own comes out.
    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        let probe = format!("<14>1 - - probe - probe - {}", Instant::now().elapsed().as_nanos());
        loop {
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().unwrap()) {
                let err =
                    std::fs::read_to_string(self.dir.join("rsyslogd.stderr")).unwrap_or_default();
                panic!("rsyslogd exited ({status}): {err}");
            }
            let sent = match self.transport {
                Transport::Udp => std::net::UdpSocket::bind("127.0.0.1:0")
                    .and_then(|s| s.send_to(probe.as_bytes(), ("127.0.0.1", self.port)))
                    .is_ok(),
                // A connection is enough: the first message follows from herald itself (and a
                // TLS listener would take a plain one as a failed handshake).
                _ => std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok(),
            };
            let ready = match self.transport {
                Transport::Udp => {
                    sent && std::fs::read_to_string(&self.out)
                        .unwrap_or_default()
                        .contains(" probe ")
                }
                _ => sent,
            };
            if ready {
                return;
            }
            assert!(Instant::now() < deadline, "rsyslogd did not listen on {}", self.port);
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGTERM, as a service manager stops it: it writes what it received, then exits.
    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let status =
                Command::new("kill").args(["-TERM", &c.id().to_string()]).status().expect("kill");
            assert!(status.success());
            c.wait().unwrap();
        }
    }

    fn lines(&self) -> Vec<String> {
        std::fs::read_to_string(&self.out)
            .unwrap_or_default()
            .lines()
            .filter(|l| !l.contains(" probe "))
            .map(str::to_string)
            .collect()
    }

    fn messages(&self) -> Vec<SyslogMessage> {
        self.lines()
            .iter()
            .map(|l| {
                syslog_rfc5424::parse_message(l)
                    .unwrap_or_else(|e| panic!("not RFC 5424: {l:?}: {e}"))
            })
            .collect()
    }
}

impl Drop for Rsyslog {
    fn drop(&mut self) {
        if let Some(c) = self.child.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn param<'a>(m: &'a SyslogMessage, name: &str) -> &'a str {
    m.sd.find_tuple(SD_ID, name).map(String::as_str).unwrap_or_else(|| panic!("no {name} in {m:?}"))
}

/// The herald config: stdout (JSON, what the test compares with) and the syslog sink.
fn config(dir: &Path, log: &Path, r: &Rsyslog, extra: &str) -> PathBuf {
    let protocol = match r.transport {
        Transport::Tcp => "tcp",
        Transport::Tls => "tls",
        Transport::Udp => "udp",
    };
    tail_config(
        dir,
        log,
        &format!(
            "[sinks.out]\ntype = \"stdout\"\nencoding = \"json\"\n[sinks.siem]\ntype = \"syslog\"\naddress = \"127.0.0.1:{}\"\nprotocol = \"{protocol}\"\nhostname = \"herald-test\"\n{extra}",
            r.port
        ),
    )
}

#[test]
fn syslog_tcp_delivers_every_event_once_as_rfc5424_with_its_structured_data() {
    let dir = tempfile::tempdir().unwrap();
    let r = Rsyslog::start(dir.path(), Transport::Tcp);
    let n = 300;
    let mut input = one_event_per_line(0, n);
    // A router id with every character structured data escapes.
    let nasty = r#"r"]\x"#;
    input.extend_from_slice(
        format!(
            "{{\"namespace\":\"router\",\"event_src_id\":\"c1\",\"timestamp\":\"2025-01-10T18:00:59.000000000Z\",\"event_type\":\"router-online\",\"router_id\":{}}}\n",
            serde_json::to_string(nasty).unwrap()
        )
        .as_bytes(),
    );
    let log = write_temp(dir.path(), "events.log", &input);
    let mut d = Daemon::start(&config(dir.path(), &log, &r, ""));
    let events = d.wait_for(n + 1);
    assert_eq!(events.len(), n + 1);
    let deadline = Instant::now() + Duration::from_secs(30);
    while r.lines().len() < events.len() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(300));
    let messages = r.messages();
    assert_eq!(messages.len(), events.len(), "one message per event, no more");
    let by_id: BTreeMap<&str, &herald::model::ClusterEvent> =
        events.iter().map(|e| (e.id.as_str(), e)).collect();
    let mut seen = BTreeSet::new();
    for m in &messages {
        let id = param(m, "id");
        let e = by_id
            .get(id)
            .unwrap_or_else(|| panic!("rsyslog has an id herald never emitted: {m:?}"));
        assert!(seen.insert(id), "{id} twice");
        assert_eq!(m.severity as u8, 6, "router.online is info");
        assert_eq!(m.facility as u8, 3, "daemon");
        assert_eq!(m.msgid.as_deref(), Some(e.kind.as_str()));
        assert_eq!(m.hostname.as_deref(), Some("herald-test"));
        assert_eq!(m.appname.as_deref(), Some("herald"));
        assert_eq!(param(m, "kind"), e.kind.as_str());
        assert_eq!(param(m, "cluster"), e.cluster);
        assert_eq!(param(m, "router"), e.router.as_deref().unwrap());
        assert_eq!(param(m, "stable_at"), e.stable_at.to_rfc3339());
        assert_eq!(m.timestamp, Some(e.stable_at.as_unix_nanos().div_euclid(1_000_000_000)));
        assert_eq!(m.msg, herald::sinks::encoding::text(e, false));
    }
    let escaped = messages.iter().filter(|m| param(m, "router") == nasty).count();
    assert_eq!(escaped, 1, "the escaped router id reads back as it was");
    d.signal("-TERM");
}

/// Feeds the log 10 events every 100 ms while the collector goes away for 30 s and comes back
/// on the same port; afterwards rsyslog has every id herald emitted (duplicates allowed).
fn outage(transport: Transport, extra: impl Fn(&Path) -> String) {
    let dir = tempfile::tempdir().unwrap();
    let mut r = Rsyslog::start(dir.path(), transport);
    let log = write_temp(dir.path(), "events.log", b"");
    let mut d = Daemon::start(&config(dir.path(), &log, &r, &extra(dir.path())));
    let stop = Arc::new(AtomicBool::new(false));
    let written = Arc::new(AtomicUsize::new(0));
    let writer = {
        let (stop, written, log) = (stop.clone(), written.clone(), log.clone());
        std::thread::spawn(move || {
            let mut f = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                f.write_all(&one_event_per_line(i, i + 10)).unwrap();
                i += 10;
                written.store(i, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    };
    std::thread::sleep(Duration::from_secs(4));
    let before = r.lines().len();
    assert!(before > 0, "rsyslog received nothing before the outage");
    r.stop();
    let stopped = Instant::now();
    std::thread::sleep(Duration::from_secs(30));
    r.spawn();
    println!("rsyslog down {:?}", stopped.elapsed());
    std::thread::sleep(Duration::from_secs(3));
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    let n = written.load(Ordering::Relaxed);
    let events = d.wait_for(n);
    assert_eq!(events.len(), n, "herald emitted every event on stdout");
    let ids: BTreeSet<String> = events.iter().map(|e| e.id.clone()).collect();
    // herald's backoff after a 30 s outage may wait up to about 40 s more before it retries.
    let deadline = Instant::now() + Duration::from_secs(90);
    let missing = loop {
        let got: BTreeSet<String> =
            r.messages().iter().map(|m| param(m, "id").to_string()).collect();
        let missing: Vec<&String> = ids.iter().filter(|id| !got.contains(*id)).collect();
        if missing.is_empty() || Instant::now() > deadline {
            break missing.len();
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let messages = r.messages();
    let duplicates =
        messages.len() - messages.iter().map(|m| param(m, "id")).collect::<BTreeSet<_>>().len();
    println!(
        "{n} events, {} messages at rsyslog ({before} before the outage), {duplicates} duplicates, {missing} missing",
        messages.len()
    );
    assert_eq!(missing, 0, "events lost across the outage");
    d.signal("-TERM");
}

#[test]
fn syslog_tcp_loses_nothing_while_rsyslog_is_down_for_30s() {
    outage(Transport::Tcp, |_| String::new());
}

#[test]
fn syslog_tls_loses_nothing_while_rsyslog_is_down_for_30s() {
    outage(Transport::Tls, |dir| format!("tls_ca = {:?}\n", dir.join("ca.pem").to_str().unwrap()));
}

#[test]
fn syslog_udp_delivers_best_effort_one_datagram_per_event() {
    let dir = tempfile::tempdir().unwrap();
    let r = Rsyslog::start(dir.path(), Transport::Udp);
    let n = 50;
    let log = write_temp(dir.path(), "events.log", &one_event_per_line(0, n));
    let mut d = Daemon::start(&config(dir.path(), &log, &r, "encoding = \"json\"\n"));
    let events = d.wait_for(n);
    assert_eq!(events.len(), n);
    let deadline = Instant::now() + Duration::from_secs(10);
    while r.lines().len() < n && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let messages = r.messages();
    println!("{} of {n} datagrams arrived", messages.len());
    assert!(messages.len() * 10 >= n * 9, "most datagrams arrive on loopback: {}", messages.len());
    let ids: BTreeSet<&str> = events.iter().map(|e| e.id.as_str()).collect();
    for m in &messages {
        assert!(ids.contains(param(m, "id")), "{m:?}");
        let json: herald::model::ClusterEvent =
            serde_json::from_str(&m.msg).expect("MSG is the JSON");
        assert_eq!(json.id, param(m, "id"));
    }
    d.signal("-TERM");
}

/// Regression: with the collector gone, the sink reconnected for ever and never saw the
/// pipeline close its queue, so SIGTERM waited on it without end. Now herald stops within
/// the sink's bounded wait and exits 0, keeping what the collector did not take.
#[test]
fn a_stop_while_the_collector_is_away_ends_within_the_bounded_wait() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let listener = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
    let log = dir.path().join("events.log");
    std::fs::write(&log, b"").unwrap();
    let sink = format!("[sinks.siem]\ntype = \"syslog\"\naddress = \"127.0.0.1:{port}\"\n");
    let cfg = tail_config(dir.path(), &log, &sink);
    let mut d = Daemon::start(&cfg);
    // The collector takes the first connection (herald's readiness), then goes away.
    let (conn, _) = listener.accept().unwrap();
    drop(conn);
    drop(listener);
    std::fs::write(&log, one_event_per_line(0, 20)).unwrap();
    std::thread::sleep(Duration::from_secs(2));
    let started = Instant::now();
    let status = d.signal("-TERM");
    assert!(status.success(), "{status:?}");
    assert!(started.elapsed() < Duration::from_secs(50), "stopped in {:?}", started.elapsed());
}
