//! The file source: tails OpenZiti's JSON event log (or any JSON-lines file).

use std::path::PathBuf;

use serde::Deserialize;

use super::Common;
use crate::support::problems::Problems;

#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct Config {
    /// `cluster`, `reporter`, `format`: read apart, see [`Common`].
    #[serde(skip)]
    pub common: Common,
    /// The file to read; required.
    pub path: Option<PathBuf>,
    /// Where to start without a checkpoint: `beginning` (default) or `end`.
    #[serde(default)]
    pub start_at: StartAt,
    /// Lines longer than this are decode errors (default 1 MiB).
    #[serde(default = "default_max_line_bytes")]
    pub max_line_bytes: usize,
}

#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum StartAt {
    #[default]
    Beginning,
    End,
}

pub fn default_max_line_bytes() -> usize {
    crate::support::lines::MAX_LINE_BYTES
}

impl Config {
    pub(crate) fn validate(self, path: &str, p: &mut Problems) -> Option<Self> {
        if self.path.is_none() {
            p.push(format!("{path}.path"), "missing");
            return None;
        }
        if self.max_line_bytes == 0 {
            p.push(format!("{path}.max_line_bytes"), "must be at least 1");
            return None;
        }
        Some(self)
    }
}

// ---- running ------------------------------------------------------------------------------

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::Duration;

use tokio::sync::mpsc::Sender;

use super::{Source, SourceContext, SourceError};
use crate::decode::Context;
use crate::pipeline::feed::LineFeeder;
use crate::pipeline::{Input, Shutdown, Stop};
use crate::state::Position;

impl Source for Config {
    fn context(&self) -> Context {
        super::context(&self.common)
    }

    fn start(&self, ctx: SourceContext, tasks: &mut Shutdown) {
        let config = self.clone();
        tasks.spawn_blocking(ctx.name.clone(), move || {
            let (index, tx) = (ctx.index, ctx.tx.clone());
            if let Err(e) = tail(&config, index, ctx.start, tx.clone(), ctx.stop) {
                tracing::error!(source = %ctx.name, error = %e, "source failed");
                let _ =
                    tx.blocking_send(Input::Ended { source: index, error: Some(e.to_string()) });
            }
        });
    }
}

/// How often a caught-up tailer looks for new data and for a rotation.
const POLL: Duration = Duration::from_millis(50);

fn file_id(meta: &std::fs::Metadata) -> (u64, u64) {
    (meta.dev(), meta.ino())
}

/// The file a checkpoint names, if it was rotated away: OpenZiti renames the log to a backup
/// in the same directory and starts a new one.
fn find_by_id(path: &Path, id: (u64, u64)) -> Option<std::path::PathBuf> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .find(|p| std::fs::metadata(p).map(|m| m.is_file() && file_id(&m) == id).unwrap_or(false))
}

struct Tail {
    lines: LineFeeder,
    file: File,
}

impl Tail {
    /// Reads to the current end of the file; returns (bytes read, engine still there).
    fn drain(&mut self, buf: &mut [u8]) -> (u64, bool) {
        let mut total = 0;
        loop {
            match self.file.read(buf) {
                Ok(0) => return (total, true),
                Ok(n) => {
                    total += n as u64;
                    if !self.lines.arrived(n, buf.len()) || !self.lines.feed(&buf[..n]) {
                        return (total, false);
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    tracing::warn!(error = %e, "reading the log failed; retrying");
                    return (total, true);
                }
            }
        }
    }
}

/// Tails `config.path` from `start` until `stop` is set or the engine goes away. Runs on a
/// blocking thread: plain file IO, polling for growth and rotation.
pub fn tail(
    config: &Config,
    source: usize,
    start: Option<Position>,
    tx: Sender<Input>,
    stop: Stop,
) -> Result<(), SourceError> {
    let path = config.path.clone().unwrap_or_default();
    let shown = path.display().to_string();
    let io = |source| SourceError::Io { path: shown.clone(), source };
    let open = |p: &Path| -> std::io::Result<(File, (u64, u64))> {
        let f = File::open(p)?;
        let id = file_id(&f.metadata()?);
        Ok((f, id))
    };
    // Wait for the file to exist: herald may start before the controller.
    let mut announced = false;
    while !path.exists() {
        if stop.is_stopped() {
            return Ok(());
        }
        if !announced {
            tracing::info!(path = %shown, "waiting for the log to appear");
            let _ = tx.blocking_send(Input::CaughtUp { source, caught_up: true });
            announced = true;
        }
        std::thread::sleep(POLL);
    }
    let (mut file, id, mut offset, line, mut rotated_away) = {
        let (f, current) = open(&path).map_err(io)?;
        match start.as_ref().and_then(|p| p.file_id.map(|fid| (fid, p))) {
            Some((fid, pos)) if fid == current => (f, current, pos.offset, pos.line, false),
            Some((fid, pos)) => match find_by_id(&path, fid) {
                Some(old) => {
                    tracing::info!(path = %old.display(), "resuming in the rotated log first");
                    let (f, oid) = open(&old).map_err(io)?;
                    (f, oid, pos.offset, pos.line, true)
                }
                None => {
                    tracing::warn!(path = %shown, "the checkpointed log is gone; reading the current one from its start");
                    (f, current, 0, pos.line, false)
                }
            },
            None if config.start_at == StartAt::End => {
                let end = f.metadata().map_err(io)?.len();
                (f, current, end, 0, false)
            }
            None => (f, current, 0, 0, false),
        }
    };
    if file.metadata().map(|m| m.len()).unwrap_or(0) < offset {
        tracing::warn!(path = %shown, "the log is shorter than its checkpoint (truncated?); reading from its start");
        offset = 0;
    }
    file.seek(SeekFrom::Start(offset)).map_err(io)?;
    let mut t = Tail {
        lines: LineFeeder::new(source, config.max_line_bytes, tx, Some(id), offset, line),
        file,
    };
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let (_, alive) = t.drain(&mut buf);
        if !alive {
            return Ok(());
        }
        // At the end of what is there: has the log been rotated or truncated under us?
        let current = std::fs::metadata(&path).ok();
        let switched =
            rotated_away || current.as_ref().is_some_and(|m| Some(file_id(m)) != t.lines.file_id());
        if switched {
            // Whatever was written before the rename is in the old file: finish it first.
            if !t.drain(&mut buf).1 {
                return Ok(());
            }
            if !t.lines.finish() {
                return Ok(());
            }
            match open(&path) {
                Ok((f, nid)) => {
                    tracing::info!(path = %shown, "the log was rotated; following the new file");
                    t.file = f;
                    t.lines.restart_at(Some(nid), 0);
                    rotated_away = false;
                    continue;
                }
                Err(_) => rotated_away = false,
            }
        } else if current.as_ref().is_some_and(|m| m.len() < t.lines.offset()) {
            tracing::warn!(path = %shown, "the log was truncated; reading it from its start");
            t.file.seek(SeekFrom::Start(0)).map_err(io)?;
            t.lines.restart_at(t.lines.file_id(), 0);
            continue;
        }
        if !t.lines.set_caught_up(true) || stop.is_stopped() {
            return Ok(());
        }
        std::thread::sleep(POLL);
        if stop.is_stopped() {
            return Ok(());
        }
    }
}
