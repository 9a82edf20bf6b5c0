//! A sink's disk buffer (`buffer.type = "disk"`): events survive a crash of herald and an
//! outage of the sink's broker longer than any memory queue.
//!
//! ```text
//! pipeline ──► writer ──► segments on disk ──► reader ──► sink ──acks──► acker
//!              (append, fsync,                 (from the        (ack file, removes
//!               then "held")                    ack offset)      acknowledged segments)
//! ```
//!
//! **Format.** A directory of segment files named by the index of their first record
//! (`00000000000000000001.seg`); a record is `len: u32 LE`, `crc32c(payload): u32 LE`, then the
//! payload, the event's JSON line. Record indices count from 1 across segments. A separate
//! file `acked` holds the index up to which the sink acknowledged every record (8 bytes LE
//! and their CRC32C), replaced atomically. A segment every record of which is acknowledged is
//! removed whole.
//!
//! **Held.** The pipeline keeps an event in its outbox (the state file) until every sink holds
//! it; a disk-buffered sink holds an event once it is appended and synced under the `fsync`
//! policy. From then on the buffer is responsible for it: after a crash the reader starts
//! again at the acknowledged index, so an event may reach the broker twice (same id), never
//! not at all.
//!
//! **Recovery.** Opening scans every segment; a record that is cut short or fails its
//! checksum ends its segment: the file is truncated there, with a warning naming the file and
//! offset. Never a panic, never a refusal to start.

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

pub use super::segments::BufferError;
use super::segments::{
    err, event, recover, segment_path, write_acked, Segment, HEADER, MAX_RECORD,
};
use super::{BufferConfig, Fsync, WhenFull};
use crate::pipeline::Delivery;
use crate::telemetry::events::EventDropped;
use crate::telemetry::metrics::SinkMetrics;

/// The smallest `max_bytes` accepted.
pub const MIN_BYTES: u64 = 1 << 20;
/// Segment size at most: big enough to append in large writes, small enough that removing
/// acknowledged ones frees space while the sink catches up.
const SEGMENT_BYTES: u64 = 8 << 20;
/// How often acknowledgements are written down.
const ACK_EVERY: Duration = Duration::from_millis(100);

struct OnDisk {
    /// Oldest first; the last one is the writer's.
    segments: VecDeque<Segment>,
    bytes: u64,
    /// The writer has stopped: nothing more will be appended.
    closed: bool,
}

struct Inner {
    dir: PathBuf,
    state: Mutex<OnDisk>,
    /// Signalled when records are published or space is freed.
    changed: Condvar,
    /// Shutdown: the reader hands out nothing more.
    stop: AtomicBool,
    /// Handed to the sink and not yet acknowledged: (delivery sequence, record index). The
    /// sink sees contiguous sequence numbers from 1 even where indices have gaps.
    sent: Mutex<VecDeque<(u64, u64)>>,
}

impl Inner {
    fn lock(&self) -> std::sync::MutexGuard<'_, OnDisk> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Starts a disk buffer in front of a sink. `rx` and `held` face the pipeline; `to_sink` and
/// `sink_acked` face the sink, which sees sequence numbers counted from 1 in this run. Returns when
/// the threads run; the handle finishes once the pipeline has closed `rx` and the buffer has
/// stopped.
pub fn start(
    name: &str,
    dir: PathBuf,
    config: &BufferConfig,
    queues: Queues,
    metrics: SinkMetrics,
) -> Result<Handle, BufferError> {
    let Queues { rx, held, to_sink, sink_acked } = queues;
    let (mut segments, acked) = recover(&dir)?;
    let next = segments.back().map_or(acked + 1, |s| s.end()).max(acked + 1);
    // A fresh segment for this run: the old tail may have been truncated mid-file, and a new
    // file keeps record indices and files in step.
    let first = next;
    let path = segment_path(&dir, first);
    let file = OpenOptions::new().create(true).append(true).open(&path).map_err(err(&path))?;
    let bytes: u64 = segments.iter().map(|s| s.bytes).sum();
    let pending = segments.iter().map(|s| s.records).sum::<u64>();
    if pending > 0 {
        tracing::info!(sink = %name, events = pending, "disk buffer holds events from before the restart; delivering them first");
    }
    segments.push_back(Segment { first, path, records: 0, bytes: 0 });
    sink_acked.store(0, Ordering::Release);
    let inner = Arc::new(Inner {
        dir: dir.clone(),
        state: Mutex::new(OnDisk { segments, bytes, closed: false }),
        changed: Condvar::new(),
        stop: AtomicBool::new(false),
        sent: Mutex::new(VecDeque::new()),
    });
    metrics.buffer_bytes.set(i64::try_from(bytes).unwrap_or(i64::MAX));
    let writer = Writer {
        name: name.to_string(),
        inner: inner.clone(),
        file,
        next,
        max_bytes: config.max_bytes,
        segment_bytes: SEGMENT_BYTES.min(config.max_bytes / 4).max(64 << 10),
        fsync: config.fsync,
        fsync_interval: config.fsync_interval,
        when_full: config.when_full,
        held,
        metrics: metrics.clone(),
    };
    let writer = std::thread::Builder::new()
        .name(format!("buffer-w-{name}"))
        .spawn(move || writer.run(rx))
        .map_err(err(&dir))?;
    let r_inner = inner.clone();
    let r_name = name.to_string();
    let reader = std::thread::Builder::new()
        .name(format!("buffer-r-{name}"))
        .spawn(move || read(&r_name, &r_inner, acked + 1, to_sink))
        .map_err(err(&dir))?;
    let a_inner = inner.clone();
    let a_name = name.to_string();
    let acker = std::thread::Builder::new()
        .name(format!("buffer-a-{name}"))
        .spawn(move || ack(&a_name, &a_inner, acked, &sink_acked, &metrics))
        .map_err(err(&dir))?;
    Ok(Handle { inner, writer, reader, acker })
}

/// What a buffer connects: the pipeline's queue and watermark, the sink's queue and
/// acknowledgements.
pub struct Queues {
    pub rx: mpsc::Receiver<Delivery>,
    pub held: Arc<AtomicU64>,
    pub to_sink: mpsc::Sender<Delivery>,
    pub sink_acked: Arc<AtomicU64>,
}

pub struct Handle {
    inner: Arc<Inner>,
    writer: std::thread::JoinHandle<()>,
    reader: std::thread::JoinHandle<()>,
    acker: std::thread::JoinHandle<()>,
}

impl Handle {
    /// Waits for the writer to finish what the pipeline sent, then stops handing events to the
    /// sink: what the sink has not acknowledged stays on disk for the next run.
    pub fn close(self) -> Closing {
        let _ = self.writer.join();
        self.inner.stop.store(true, Ordering::Release);
        self.inner.changed.notify_all();
        let _ = self.reader.join();
        Closing { inner: self.inner, acker: self.acker }
    }
}

/// A buffer that hands out nothing more; its acker runs until [`Closing::finish`].
pub struct Closing {
    inner: Arc<Inner>,
    acker: std::thread::JoinHandle<()>,
}

impl Closing {
    /// Writes down the last acknowledgements and stops.
    pub fn finish(self) {
        {
            let mut s = self.inner.lock();
            s.closed = true;
        }
        self.inner.changed.notify_all();
        let _ = self.acker.join();
    }
}

struct Writer {
    name: String,
    inner: Arc<Inner>,
    file: File,
    next: u64,
    max_bytes: u64,
    segment_bytes: u64,
    fsync: Fsync,
    fsync_interval: Duration,
    when_full: WhenFull,
    held: Arc<AtomicU64>,
    metrics: SinkMetrics,
}

impl Writer {
    fn run(mut self, mut rx: mpsc::Receiver<Delivery>) {
        let mut last_sync = Instant::now();
        // Outbox sequence written but not yet synced (interval policy).
        let mut unsynced: Option<u64> = None;
        loop {
            let first = match self.fsync {
                Fsync::Interval if unsynced.is_some() => {
                    let wait = self.fsync_interval.saturating_sub(last_sync.elapsed());
                    match recv_timeout(&mut rx, wait) {
                        Recv::Got(d) => Some(d),
                        Recv::Timeout => None,
                        Recv::Closed => break,
                    }
                }
                _ => match rx.blocking_recv() {
                    Some(d) => Some(d),
                    None => break,
                },
            };
            let mut batch: Vec<Delivery> = first.into_iter().collect();
            while batch.len() < 4096 {
                match rx.try_recv() {
                    Ok(d) => batch.push(d),
                    Err(_) => break,
                }
            }
            let mut buf = Vec::new();
            // Records encoded in `buf` and not yet appended.
            let mut pending = 0u64;
            let mut last_seq = None;
            for d in &batch {
                let len = (HEADER + d.line.len()) as u64;
                if !self.room_for(len + buf.len() as u64) {
                    // Write what we have, then wait for the sink to free space, or drop.
                    if let Err(e) = self.append(&mut buf, &mut pending) {
                        return self.fail(e);
                    }
                    if self.when_full == WhenFull::DropNewest {
                        EventDropped { full: "disk buffer" }.emit(&self.metrics);
                        last_seq = Some(d.seq);
                        continue;
                    }
                    if !self.wait_for_room(len) {
                        break;
                    }
                }
                buf.extend_from_slice(&(d.line.len() as u32).to_le_bytes());
                buf.extend_from_slice(&crc32c::crc32c(d.line.as_bytes()).to_le_bytes());
                buf.extend_from_slice(d.line.as_bytes());
                pending += 1;
                last_seq = Some(d.seq);
            }
            if let Err(e) = self.append(&mut buf, &mut pending) {
                return self.fail(e);
            }
            let seq = last_seq.or(unsynced);
            let sync_now = match self.fsync {
                Fsync::Batch => true,
                Fsync::Never => false,
                Fsync::Interval => last_sync.elapsed() >= self.fsync_interval,
            };
            if self.fsync == Fsync::Interval && !sync_now {
                unsynced = seq;
                continue;
            }
            if sync_now {
                if let Err(e) = self.file.sync_data() {
                    return self.fail(BufferError { path: self.inner.dir.clone(), source: e });
                }
                last_sync = Instant::now();
            }
            unsynced = None;
            if let Some(seq) = seq {
                self.held.store(seq, Ordering::Release);
            }
        }
        // Closed: what was written reaches the disk before the pipeline's last commit.
        let _ = self.file.sync_data();
        if let Some(seq) = unsynced {
            self.held.store(seq, Ordering::Release);
        }
    }

    fn fail(&self, e: BufferError) {
        // Without its buffer the sink cannot hold events: the pipeline's outbox keeps them
        // (nothing is marked held any more), and the next run delivers them.
        self.metrics.errors.inc();
        tracing::error!(sink = %self.name, error = %e, "disk buffer write failed; events stay in the state file's outbox");
    }

    fn room_for(&self, len: u64) -> bool {
        let s = self.inner.lock();
        // A record bigger than the whole buffer still goes into an empty one.
        s.bytes + len <= self.max_bytes || s.bytes == 0
    }

    /// Blocks until `len` more bytes fit; false if herald is stopping.
    fn wait_for_room(&self, len: u64) -> bool {
        let mut warned = false;
        let mut s = self.inner.lock();
        while s.bytes + len > self.max_bytes && s.bytes > 0 {
            if self.inner.stop.load(Ordering::Acquire) {
                return false;
            }
            if !warned {
                tracing::warn!(sink = %self.name, bytes = s.bytes, "disk buffer full: holding the pipeline (when_full = block)");
                warned = true;
            }
            s = self
                .inner
                .changed
                .wait_timeout(s, Duration::from_millis(200))
                .map(|(g, _)| g)
                .unwrap_or_else(|p| p.into_inner().0);
        }
        true
    }

    /// Appends the `pending` records encoded in `buf` and publishes them to the reader.
    fn append(&mut self, buf: &mut Vec<u8>, pending: &mut u64) -> Result<(), BufferError> {
        if buf.is_empty() {
            return Ok(());
        }
        let n = std::mem::take(pending);
        self.file
            .write_all(buf)
            .map_err(|e| BufferError { path: self.inner.dir.clone(), source: e })?;
        let len = buf.len() as u64;
        buf.clear();
        self.next += n;
        let rotate = {
            let mut s = self.inner.lock();
            s.bytes += len;
            let bytes = s.bytes;
            let seg = s.segments.back_mut();
            let rotate = match seg {
                Some(seg) => {
                    seg.records += n;
                    seg.bytes += len;
                    seg.bytes >= self.segment_bytes
                }
                None => false,
            };
            self.metrics.buffer_bytes.set(i64::try_from(bytes).unwrap_or(i64::MAX));
            rotate
        };
        self.inner.changed.notify_all();
        if rotate {
            self.file
                .sync_data()
                .map_err(|e| BufferError { path: self.inner.dir.clone(), source: e })?;
            let path = segment_path(&self.inner.dir, self.next);
            self.file =
                OpenOptions::new().create(true).append(true).open(&path).map_err(err(&path))?;
            File::open(&self.inner.dir).and_then(|d| d.sync_all()).map_err(err(&self.inner.dir))?;
            self.inner.lock().segments.push_back(Segment {
                first: self.next,
                path,
                records: 0,
                bytes: 0,
            });
        }
        Ok(())
    }
}

enum Recv {
    Got(Delivery),
    Timeout,
    Closed,
}

fn recv_timeout(rx: &mut mpsc::Receiver<Delivery>, wait: Duration) -> Recv {
    let deadline = Instant::now() + wait;
    loop {
        match rx.try_recv() {
            Ok(d) => return Recv::Got(d),
            Err(mpsc::error::TryRecvError::Disconnected) => return Recv::Closed,
            Err(mpsc::error::TryRecvError::Empty) => {}
        }
        if Instant::now() >= deadline {
            return Recv::Timeout;
        }
        std::thread::sleep(Duration::from_millis(5).min(wait));
    }
}

/// Hands the records from index `from` on to the sink, in order, as they are published.
fn read(name: &str, inner: &Inner, from: u64, to_sink: mpsc::Sender<Delivery>) {
    let mut next = from;
    let mut seq = 0u64;
    let mut open: Option<(u64, File)> = None;
    loop {
        // The segment holding `next` and how many of its records are published.
        let target = {
            let mut s = inner.lock();
            loop {
                if inner.stop.load(Ordering::Acquire) {
                    return;
                }
                let found = s
                    .segments
                    .iter()
                    .find(|seg| next < seg.end())
                    .map(|seg| (seg.first, seg.path.clone(), seg.end()));
                // A segment past a gap (a truncated tail) is found too: `next` moves to its start.
                if let Some(t) = found {
                    break t;
                }
                s = inner
                    .changed
                    .wait_timeout(s, Duration::from_millis(200))
                    .map(|(g, _)| g)
                    .unwrap_or_else(|p| p.into_inner().0);
            }
        };
        let (first, path, end) = target;
        if next < first {
            next = first;
        }
        if open.as_ref().map(|(f, _)| *f) != Some(first) {
            let mut f = match File::open(&path) {
                Ok(f) => f,
                Err(e) => {
                    tracing::error!(sink = %name, path = %path.display(), error = %e, "disk buffer segment unreadable; skipped");
                    next = end;
                    continue;
                }
            };
            // Skip the records before `next` (acknowledged before a restart).
            let mut skip = next - first;
            let mut header = [0u8; HEADER];
            while skip > 0 {
                if f.read_exact(&mut header).is_err() {
                    break;
                }
                let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
                if f.seek(SeekFrom::Current(i64::from(len))).is_err() {
                    break;
                }
                skip -= 1;
            }
            open = Some((first, f));
        }
        let Some((_, f)) = open.as_mut() else { continue };
        while next < end {
            let mut header = [0u8; HEADER];
            let record = f.read_exact(&mut header).ok().and_then(|()| {
                let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
                let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
                let mut payload = vec![0u8; len.min(MAX_RECORD) as usize];
                f.read_exact(&mut payload).ok()?;
                (crc32c::crc32c(&payload) == crc).then_some(payload)
            });
            let Some(payload) = record else {
                tracing::error!(sink = %name, path = %path.display(), index = next, "disk buffer record unreadable; the rest of its segment is skipped");
                next = end;
                break;
            };
            let index = next;
            next += 1;
            let Some((line, event)) = event(payload) else {
                tracing::error!(sink = %name, path = %path.display(), index, "disk buffer record is not an event; skipped");
                continue;
            };
            seq += 1;
            inner.sent.lock().unwrap_or_else(|p| p.into_inner()).push_back((seq, index));
            let d = Delivery { seq, line: Arc::from(line), event: event.into() };
            // Not a blocking send: a sink whose broker is away stops taking events, and
            // shutdown must still be able to stop this thread.
            let mut d = d;
            loop {
                match to_sink.try_send(d) {
                    Ok(()) => break,
                    Err(mpsc::error::TrySendError::Closed(_)) => return,
                    Err(mpsc::error::TrySendError::Full(back)) => {
                        if inner.stop.load(Ordering::Acquire) {
                            return;
                        }
                        d = back;
                        std::thread::sleep(Duration::from_millis(2));
                    }
                }
            }
        }
    }
}

/// Writes the sink's acknowledgements down and removes fully acknowledged segments.
fn ack(name: &str, inner: &Inner, mut written: u64, sink_acked: &AtomicU64, metrics: &SinkMetrics) {
    loop {
        let closed = {
            let s = inner.lock();
            let (s, _) =
                inner.changed.wait_timeout(s, ACK_EVERY).unwrap_or_else(|p| p.into_inner());
            s.closed
        };
        let acked_seq = sink_acked.load(Ordering::Acquire);
        let mut acked = written;
        {
            let mut sent = inner.sent.lock().unwrap_or_else(|p| p.into_inner());
            while sent.front().is_some_and(|(seq, _)| *seq <= acked_seq) {
                if let Some((_, index)) = sent.pop_front() {
                    acked = index;
                }
            }
        }
        if acked > written {
            if let Err(e) = write_acked(&inner.dir, acked) {
                tracing::error!(sink = %name, error = %e, "disk buffer ack file not written; those events will be delivered again");
            } else {
                written = acked;
                let mut freed = Vec::new();
                {
                    let mut s = inner.lock();
                    // Never the writer's segment (the last).
                    while s.segments.len() > 1
                        && s.segments.front().is_some_and(|seg| seg.end() <= acked + 1)
                    {
                        if let Some(seg) = s.segments.pop_front() {
                            s.bytes = s.bytes.saturating_sub(seg.bytes);
                            freed.push(seg.path);
                        }
                    }
                    metrics.buffer_bytes.set(i64::try_from(s.bytes).unwrap_or(i64::MAX));
                }
                for path in freed {
                    if let Err(e) = fs::remove_file(&path) {
                        tracing::warn!(sink = %name, path = %path.display(), error = %e, "acknowledged disk buffer segment not removed");
                    }
                }
                inner.changed.notify_all();
            }
        }
        if closed {
            return;
        }
    }
}

#[cfg(test)]
mod tests;
