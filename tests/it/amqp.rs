//! OpenZiti events through RabbitMQ (the controllers' `amqp` handler) into herald, and out of
//! a JetStream stream: the real binary, real servers.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use lapin::options::{BasicPublishOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ConnectionProperties};

use crate::support::*;

const RABBIT: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
const NATS: &str = "nats://127.0.0.1:4222";

fn servers() {
    assert!(
        std::net::TcpStream::connect("127.0.0.1:5672").is_ok(),
        "no RabbitMQ on 127.0.0.1:5672: start it (rabbitmq-server -detached) or run scripts/services.sh"
    );
    assert!(
        std::net::TcpStream::connect("127.0.0.1:4222").is_ok(),
        "no NATS on 127.0.0.1:4222: run scripts/services.sh"
    );
}

/// Publishes each line as one message, as OpenZiti's amqp handler does (default exchange,
/// routed by queue name, durable queue, application/json).
async fn publish(queue: &str, lines: &[&str]) {
    let conn = Connection::connect(RABBIT, ConnectionProperties::default()).await.unwrap();
    let ch = conn.create_channel().await.unwrap();
    ch.queue_declare(
        queue.into(),
        QueueDeclareOptions { durable: true, ..Default::default() },
        FieldTable::default(),
    )
    .await
    .unwrap();
    for l in lines {
        ch.basic_publish(
            "".into(),
            queue.into(),
            BasicPublishOptions::default(),
            l.as_bytes(),
            BasicProperties::default().with_content_type("application/json".into()),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    }
    let _ = conn.close(200, "done".into()).await;
}

async fn queue_depth(queue: &str) -> u32 {
    let conn = Connection::connect(RABBIT, ConnectionProperties::default()).await.unwrap();
    let ch = conn.create_channel().await.unwrap();
    let q = ch
        .queue_declare(
            queue.into(),
            QueueDeclareOptions { durable: true, passive: true, ..Default::default() },
            FieldTable::default(),
        )
        .await
        .unwrap();
    let _ = conn.close(200, "done".into()).await;
    q.message_count()
}

async fn stream_ids(stream: &str) -> Vec<String> {
    let client = async_nats::connect(NATS).await.unwrap();
    let js = async_nats::jetstream::new(client);
    let Ok(mut s) = js.get_stream(stream).await else { return Vec::new() };
    let count = s.info().await.unwrap().state.messages;
    let mut out = Vec::new();
    for seq in 1..=count {
        let m = s.get_raw_message(seq).await.unwrap();
        out.push(m.headers.get("Nats-Msg-Id").map(|v| v.to_string()).unwrap_or_default());
    }
    out
}

/// herald with the AMQP source and a JetStream sink, its HTTP server on `port` (0: any).
fn start_on(
    port: u16,
    dir: &Path,
    queue: &str,
    prefix: &str,
    stream: Option<&str>,
    state: &str,
) -> Child {
    let stream_line = stream.map(|s| format!("stream = \"{s}\"\n")).unwrap_or_default();
    let cfg = format!(
        "[server]\nlisten = \"127.0.0.1:{port}\"\n[state]\ndir = {:?}\n\
         [sources.ziti]\ntype = \"amqp\"\nurl = \"{RABBIT}\"\nqueue = \"{queue}\"\ncluster = \"prod\"\n\
         [sinks.js]\ntype = \"nats\"\nurl = \"{NATS}\"\nsubject_prefix = \"{prefix}\"\njetstream = true\n{stream_line}",
        dir.join(state).to_str().unwrap()
    );
    let cfg = write_temp(dir, &format!("{state}.toml"), cfg.as_bytes());
    herald()
        .args(["run", "--config", cfg.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

fn start(dir: &Path, queue: &str, prefix: &str, stream: Option<&str>, state: &str) -> Child {
    start_on(0, dir, queue, prefix, stream, state)
}

/// The records herald has applied from the source, whatever their outcome.
fn records_read(port: u16) -> usize {
    http(port, "GET", "/metrics", &[], b"")
        .1
        .lines()
        .filter(|l| l.starts_with("herald_records_total{") && l.contains("source=\"ziti\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as usize
}

fn stop(mut child: Child, signal: &str) {
    Command::new("kill").args([signal, &child.id().to_string()]).status().unwrap();
    let _ = child.wait();
}

fn sample() -> (Vec<String>, Vec<String>) {
    let text = std::fs::read_to_string(repo("samples/openziti-ha.jsonl")).unwrap();
    let lines: Vec<String> = text.lines().map(str::to_string).collect();
    let ids = events(
        &run(
            &["replay", "--cluster", "prod", repo("samples/openziti-ha.jsonl").to_str().unwrap()],
            b"",
        )
        .stdout,
    )
    .into_iter()
    .map(|e| e.id)
    .collect();
    (lines, ids)
}

fn unique(tag: &str) -> String {
    format!("{tag}{}", std::process::id())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openziti_events_from_rabbitmq_come_out_of_jetstream_once_each() {
    servers();
    let dir = tempfile::tempdir().unwrap();
    let (lines, want) = sample();
    let (queue, prefix, stream) = (unique("herald-ziti-a"), unique("hz_a"), unique("HZ_A"));
    publish(&queue, &lines.iter().map(String::as_str).collect::<Vec<_>>()).await;
    let port = free_port();
    let child = start_on(port, dir.path(), &queue, &prefix, Some(&stream), "first");
    let mut got = Vec::new();
    assert!(
        eventually(|| {
            got = tokio::task::block_in_place(|| {
                tokio::runtime::Handle::current().block_on(stream_ids(&stream))
            });
            got.len() >= want.len()
        }),
        "{} of {} events in the stream",
        got.len(),
        want.len()
    );
    // The last messages make no event of their own: every event out does not mean every
    // message applied, and one still unapplied at the stop goes back to the queue (as it
    // should). Stop once all are applied.
    let records = lines.iter().filter(|l| !l.trim().is_empty()).count();
    assert!(
        eventually(|| tokio::task::block_in_place(|| records_read(port) >= records)),
        "herald applied {} of {records} messages",
        records_read(port)
    );
    stop(child, "-TERM");
    assert_eq!(got, want, "the stream holds what replay emits, in order");
    assert_eq!(queue_depth(&queue).await, 0, "every delivery was acknowledged");

    // The same input again, through a fresh herald (no state): the same events, the same ids —
    // JetStream keeps each once.
    publish(&queue, &lines.iter().map(String::as_str).collect::<Vec<_>>()).await;
    let child = start(dir.path(), &queue, &prefix, Some(&stream), "second");
    assert!(eventually(|| tokio::task::block_in_place(|| {
        tokio::runtime::Handle::current().block_on(queue_depth(&queue)) == 0
    })));
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop(child, "-TERM");
    assert_eq!(stream_ids(&stream).await, want, "each event once, after the same input twice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_unacknowledged_at_sigkill_is_redelivered_and_processed() {
    servers();
    let dir = tempfile::tempdir().unwrap();
    let (lines, want) = sample();
    let (queue, prefix, stream) = (unique("herald-ziti-k"), unique("hz_k"), unique("HZ_K"));
    publish(&queue, &lines.iter().map(String::as_str).collect::<Vec<_>>()).await;
    // No stream captures these subjects: the sink cannot deliver, so no delivery is acked.
    let child = start(dir.path(), &queue, &prefix, None, "stuck");
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop(child, "-KILL");
    assert_eq!(queue_depth(&queue).await as usize, lines.len(), "nothing was acknowledged");
    // Restarted with a stream: the broker redelivers, herald processes, the events arrive.
    let child = start(dir.path(), &queue, &prefix, Some(&stream), "stuck");
    let mut got = Vec::new();
    assert!(
        eventually(|| {
            got = tokio::task::block_in_place(|| {
                tokio::runtime::Handle::current().block_on(stream_ids(&stream))
            });
            got.len() >= want.len()
        }),
        "{} of {} events after the restart",
        got.len(),
        want.len()
    );
    // The events come back from herald's own outbox at once; the broker's redeliveries are
    // consumed (and acknowledged without being applied twice) as the source connects.
    assert!(
        eventually(|| tokio::task::block_in_place(|| {
            tokio::runtime::Handle::current().block_on(queue_depth(&queue)) == 0
        })),
        "the redelivered messages are consumed and acknowledged"
    );
    stop(child, "-TERM");
    let got = stream_ids(&stream).await;
    let unique_ids: std::collections::BTreeSet<&String> = got.iter().collect();
    let wanted: std::collections::BTreeSet<&String> = want.iter().collect();
    assert_eq!(unique_ids, wanted, "every event");
    assert_eq!(got.len(), want.len(), "each once");
}

/// Lines of `path` that contain `what`.
fn log_lines(path: &Path, what: &str) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(what))
        .map(str::to_string)
        .collect()
}

/// Regression: a broker source that reconnected never reset its "announced" flag or its
/// backoff, so a second outage was not logged, no recovery was ever logged, and after one
/// long outage every later reconnect started at 30 s.
#[test]
fn two_broker_outages_in_a_row_each_log_one_warning_and_one_recovery() {
    servers();
    let dir = tempfile::tempdir().unwrap();
    let proxy = Proxy::start(5672);
    let queue = format!("herald-outages-{}", std::process::id());
    let cfg = write_temp(
        dir.path(),
        "herald.toml",
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n[sources.q]\ntype = \"amqp\"\nurl = \"amqp://guest:guest@127.0.0.1:{}/%2f\"\nqueue = {queue:?}\ncluster = \"prod\"\n[sinks.out]\ntype = \"stdout\"\n",
            proxy.port
        )
        .as_bytes(),
    );
    let log = dir.path().join("herald.log");
    let mut child = herald()
        .args(["run", "--config", cfg.to_str().unwrap()])
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let since = |t: std::time::Instant| t.elapsed();
    assert!(eventually(|| !log_lines(&log, "consuming").is_empty()), "herald consumes");

    // A long first outage: the backoff grows to seconds.
    proxy.close();
    assert!(eventually(|| log_lines(&log, "unreachable").len() == 1), "first outage logged");
    std::thread::sleep(Duration::from_secs(7));
    proxy.open();
    assert!(eventually(|| log_lines(&log, "reachable again").len() == 1), "first recovery logged");

    // A healthy session, then a short second outage: the reconnect starts at the minimum.
    std::thread::sleep(Duration::from_secs(1));
    proxy.close();
    assert!(eventually(|| log_lines(&log, "unreachable").len() == 2), "second outage logged");
    std::thread::sleep(Duration::from_secs(1));
    let reopened = std::time::Instant::now();
    proxy.open();
    assert!(eventually(|| log_lines(&log, "reachable again").len() == 2), "second recovery logged");
    let took = since(reopened);
    // Without the reset the wait after the first outage's 6.4 s step is at least 3.2 s.
    assert!(took < Duration::from_secs(3), "reconnected {took:?} after the broker came back");

    let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    assert!(child.wait().unwrap().success());
    assert_eq!(log_lines(&log, "unreachable").len(), 2, "one warning per outage");
    assert_eq!(log_lines(&log, "reachable again").len(), 2, "one recovery per outage");
}
