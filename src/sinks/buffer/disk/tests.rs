use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::*;
use crate::model::{ClusterEvent, EventKind, Timestamp};
use crate::pipeline::Delivery;
use crate::sinks::buffer::segments::read_acked;
use crate::sinks::{BufferConfig, BufferKind, Fsync, WhenFull};

fn delivery(seq: u64) -> Delivery {
    let mut e = ClusterEvent::new(
        EventKind::NodeDown,
        "prod",
        Timestamp(seq as i64),
        Timestamp(seq as i64 + 5),
    );
    e.node = Some(format!("n{seq}"));
    let e = e.seal(&[]);
    Delivery { seq, line: Arc::from(serde_json::to_string(&e).expect("json")), event: e.into() }
}

fn config(max_bytes: u64, when_full: WhenFull) -> BufferConfig {
    BufferConfig {
        kind: BufferKind::Disk,
        max_events: 100,
        when_full,
        dir: None,
        max_bytes,
        fsync: Fsync::Batch,
        fsync_interval: Duration::from_secs(1),
    }
}

struct Running {
    tx: mpsc::Sender<Delivery>,
    held: Arc<AtomicU64>,
    from_buffer: mpsc::Receiver<Delivery>,
    sink_acked: Arc<AtomicU64>,
    handle: Handle,
    metrics: crate::telemetry::metrics::Metrics,
}

fn open(dir: &Path, cfg: &BufferConfig) -> Running {
    let (tx, rx) = mpsc::channel(100);
    let (to_sink, from_buffer) = mpsc::channel(16);
    let held = Arc::new(AtomicU64::new(0));
    let sink_acked = Arc::new(AtomicU64::new(0));
    let metrics = crate::telemetry::metrics::Metrics::new().expect("metrics");
    let handle = start(
        "t",
        dir.to_path_buf(),
        cfg,
        Queues { rx, held: held.clone(), to_sink, sink_acked: sink_acked.clone() },
        metrics.sink("t"),
    )
    .expect("start");
    Running { tx, held, from_buffer, sink_acked, handle, metrics }
}

impl Running {
    fn send(&self, from: u64, to: u64) {
        for seq in from..=to {
            self.tx.blocking_send(delivery(seq)).expect("send");
        }
    }

    /// Takes `n` deliveries from the buffer, acknowledging each.
    fn take(&mut self, n: usize) -> Vec<Delivery> {
        let mut got = Vec::new();
        while got.len() < n {
            let d = self.from_buffer.blocking_recv().expect("a delivery");
            self.sink_acked.store(d.seq, Ordering::Release);
            got.push(d);
        }
        got
    }

    fn stop(self) {
        drop(self.tx);
        let closing = self.handle.close();
        closing.finish();
    }
}

fn wait(what: &str, f: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(Instant::now() < deadline, "timed out: {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn nodes(ds: &[Delivery]) -> Vec<String> {
    ds.iter().map(|d| d.event.node.clone().unwrap_or_default()).collect()
}

fn names(from: u64, to: u64) -> Vec<String> {
    (from..=to).map(|i| format!("n{i}")).collect()
}

fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir)
        .expect("dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .collect();
    v.sort();
    v
}

#[test]
fn events_pass_through_in_order_and_are_held_once_on_disk() {
    let dir = tempfile::tempdir().expect("tmp");
    let mut r = open(dir.path(), &config(MIN_BYTES, WhenFull::Block));
    r.send(1, 50);
    wait("all held", || r.held.load(Ordering::Acquire) == 50);
    let got = r.take(50);
    assert_eq!(nodes(&got), names(1, 50));
    assert_eq!(got.iter().map(|d| d.seq).collect::<Vec<_>>(), (1..=50).collect::<Vec<_>>());
    wait("ack written", || read_acked(dir.path()) == 50);
    r.stop();
}

#[test]
fn a_restart_delivers_what_the_sink_had_not_acknowledged() {
    let dir = tempfile::tempdir().expect("tmp");
    let mut r = open(dir.path(), &config(MIN_BYTES, WhenFull::Block));
    r.send(1, 40);
    let first = r.take(15);
    assert_eq!(nodes(&first), names(1, 15));
    wait("ack written", || read_acked(dir.path()) == 15);
    r.stop();

    let mut r = open(dir.path(), &config(MIN_BYTES, WhenFull::Block));
    let again = r.take(25);
    assert_eq!(nodes(&again), names(16, 40), "the unacknowledged rest, in order, nothing twice");
    // New events follow the old ones.
    r.send(1, 3);
    let more = r.take(3);
    assert_eq!(nodes(&more), names(1, 3));
    r.stop();
}

/// A buffer that held ten events and stopped: its directory and its last segment.
fn ten_held_then_stopped() -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().expect("tmp");
    let r = open(dir.path(), &config(MIN_BYTES, WhenFull::Block));
    r.send(1, 10);
    wait("held", || r.held.load(Ordering::Acquire) == 10);
    r.stop();
    let seg = segments(dir.path()).into_iter().last().expect("a segment");
    (dir, seg)
}

#[test]
fn a_damaged_tail_is_truncated_with_a_warning_and_the_rest_delivered() {
    let (dir, seg) = ten_held_then_stopped();
    // A write cut short: a header promising more than follows.
    let mut f = OpenOptions::new().append(true).open(&seg).expect("open");
    f.write_all(&[200, 0, 0, 0, 1, 2, 3, 4, b'{']).expect("garbage");
    drop(f);
    let mut r = open(dir.path(), &config(MIN_BYTES, WhenFull::Block));
    assert_eq!(nodes(&r.take(10)), names(1, 10));
    r.stop();
}

#[test]
fn a_record_failing_its_checksum_ends_its_segment_without_a_panic() {
    let (dir, seg) = ten_held_then_stopped();
    let mut bytes = fs::read(&seg).expect("read");
    let one = bytes.len() / 10;
    // Flip a byte inside the sixth record's payload.
    bytes[5 * one + HEADER + 3] ^= 0xff;
    fs::write(&seg, &bytes).expect("write");
    let mut r = open(dir.path(), &config(MIN_BYTES, WhenFull::Block));
    assert_eq!(nodes(&r.take(5)), names(1, 5));
    r.send(11, 12);
    assert_eq!(nodes(&r.take(2)), names(11, 12), "new events still flow");
    r.stop();
}

#[test]
fn a_full_buffer_drops_newest_counted_when_configured() {
    let dir = tempfile::tempdir().expect("tmp");
    let r = open(dir.path(), &config(MIN_BYTES, WhenFull::DropNewest));
    let line = delivery(1).line.len() as u64 + HEADER as u64;
    let fits = MIN_BYTES / line;
    let n = fits + 500;
    // The sink takes nothing: the buffer fills.
    r.send(1, n);
    wait("every event settled", || r.held.load(Ordering::Acquire) == n);
    let dropped = r.metrics.sink("t").dropped.get();
    assert!((400..=600).contains(&dropped), "about 500 dropped, counted: {dropped}");
    drop(r.from_buffer);
    drop(r.tx);
    r.handle.close().finish();
}

#[test]
fn a_full_buffer_blocks_until_the_sink_acknowledges() {
    let dir = tempfile::tempdir().expect("tmp");
    let mut r = open(dir.path(), &config(MIN_BYTES, WhenFull::Block));
    let line = delivery(1).line.len() as u64 + HEADER as u64;
    let n = 2 * MIN_BYTES / line;
    let tx = r.tx.clone();
    let sender = std::thread::spawn(move || {
        for seq in 1..=n {
            tx.blocking_send(delivery(seq)).expect("send");
        }
    });
    std::thread::sleep(Duration::from_millis(500));
    let held = r.held.load(Ordering::Acquire);
    assert!(held < n, "blocked short of the end while the sink is away: {held} of {n}");
    let got = r.take(n as usize);
    assert_eq!(nodes(&got), names(1, n), "nothing lost, in order");
    sender.join().expect("sender");
    wait("all held", || r.held.load(Ordering::Acquire) == n);
    r.stop();
    assert!(segments(dir.path()).len() <= 2, "acknowledged segments removed");
}
