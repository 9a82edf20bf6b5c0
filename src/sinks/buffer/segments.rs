//! The disk buffer's files: segments of length-prefixed, CRC32C-checked records, the ack
//! file, and recovery of a damaged tail (see [`super::disk`] for the format).
//!
//! [`read`] and [`event`] take a segment's bytes and a record's payload as they are found on
//! disk, which may be anything after a crash or a stranger's write.

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::model::ClusterEvent;

pub(super) const ACK_FILE: &str = "acked";
pub(super) const HEADER: usize = 8;
/// A record longer than this is corruption, not an event.
pub const MAX_RECORD: u32 = 64 << 20;

#[derive(Debug, thiserror::Error)]
#[error("disk buffer {path}: {source}")]
pub struct BufferError {
    pub path: PathBuf,
    pub source: std::io::Error,
}

pub(super) fn err(path: &Path) -> impl Fn(std::io::Error) -> BufferError + '_ {
    move |source| BufferError { path: path.to_path_buf(), source }
}

pub(super) struct Segment {
    pub first: u64,
    pub path: PathBuf,
    /// Records in it that the writer has published (written, and synced under the policy).
    pub records: u64,
    pub bytes: u64,
}

impl Segment {
    pub fn end(&self) -> u64 {
        self.first + self.records
    }
}

pub(super) fn segment_path(dir: &Path, first: u64) -> PathBuf {
    dir.join(format!("{first:020}.seg"))
}

pub(super) fn read_acked(dir: &Path) -> u64 {
    let path = dir.join(ACK_FILE);
    match fs::read(&path) {
        Ok(b) if b.len() == 12 => {
            let (v, c) = b.split_at(8);
            let ok = c == crc32c::crc32c(v).to_le_bytes();
            match (ok, <[u8; 8]>::try_from(v)) {
                (true, Ok(v)) => u64::from_le_bytes(v),
                _ => {
                    tracing::warn!(path = %path.display(), "disk buffer ack file is corrupt; delivering the whole buffer again");
                    0
                }
            }
        }
        Ok(_) => {
            tracing::warn!(path = %path.display(), "disk buffer ack file is corrupt; delivering the whole buffer again");
            0
        }
        Err(_) => 0,
    }
}

pub(super) fn write_acked(dir: &Path, acked: u64) -> Result<(), BufferError> {
    let path = dir.join(ACK_FILE);
    let tmp = dir.join(format!("{ACK_FILE}.tmp"));
    let mut bytes = acked.to_le_bytes().to_vec();
    bytes.extend_from_slice(&crc32c::crc32c(&acked.to_le_bytes()).to_le_bytes());
    let mut f = File::create(&tmp).map_err(err(&tmp))?;
    f.write_all(&bytes).map_err(err(&tmp))?;
    f.sync_data().map_err(err(&tmp))?;
    fs::rename(&tmp, &path).map_err(err(&path))?;
    Ok(())
}

/// A segment's contents: the records that read back whole, and where they end.
#[derive(Debug, PartialEq, Eq)]
pub struct Records<'a> {
    /// The payloads, in order.
    pub payloads: Vec<&'a [u8]>,
    /// Bytes taken by those records. Anything after them is a damaged tail.
    pub end: usize,
}

/// Reads a segment file's bytes. The first record that is cut short, longer than
/// [`MAX_RECORD`] or fails its checksum ends the segment: a crash cuts a write short, and
/// nothing after a bad record can be trusted to start where its length says.
pub fn read(bytes: &[u8]) -> Records<'_> {
    let mut records = Records { payloads: Vec::new(), end: 0 };
    while let Some(header) = bytes.get(records.end..records.end + HEADER) {
        let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
        let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
        if len > MAX_RECORD {
            break;
        }
        let start = records.end + HEADER;
        let Some(payload) = bytes.get(start..start + len as usize) else {
            break;
        };
        if crc32c::crc32c(payload) != crc {
            break;
        }
        records.payloads.push(payload);
        records.end = start + payload.len();
    }
    records
}

/// A record's payload as the event it holds, with its JSON line; `None` if it holds none.
pub fn event(payload: Vec<u8>) -> Option<(String, ClusterEvent)> {
    let line = String::from_utf8(payload).ok()?;
    let event = serde_json::from_str(&line).ok()?;
    Some((line, event))
}

/// Scans one segment: its valid records, truncating a damaged tail.
pub(super) fn scan(path: &Path) -> Result<(u64, u64), BufferError> {
    let bytes = fs::read(path).map_err(err(path))?;
    let Records { payloads, end } = read(&bytes);
    if end < bytes.len() {
        tracing::warn!(
            path = %path.display(),
            offset = end,
            dropped_bytes = bytes.len() - end,
            "disk buffer segment has a damaged tail (a write cut short by a crash, or corruption); truncated there"
        );
        let f = OpenOptions::new().write(true).open(path).map_err(err(path))?;
        f.set_len(end as u64).map_err(err(path))?;
        f.sync_all().map_err(err(path))?;
    }
    Ok((payloads.len() as u64, end as u64))
}

/// Opens (or creates) the buffer in `dir`: its segments, and the acknowledged index.
pub(super) fn recover(dir: &Path) -> Result<(VecDeque<Segment>, u64), BufferError> {
    fs::create_dir_all(dir).map_err(err(dir))?;
    let acked = read_acked(dir);
    let mut firsts: Vec<u64> = fs::read_dir(dir)
        .map_err(err(dir))?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name();
            name.to_str()?.strip_suffix(".seg")?.parse().ok()
        })
        .collect();
    firsts.sort_unstable();
    let mut segments = VecDeque::new();
    for first in firsts {
        let path = segment_path(dir, first);
        let (records, bytes) = scan(&path)?;
        let seg = Segment { first, path, records, bytes };
        if seg.end() <= acked + 1 && seg.records > 0 {
            // Every record acknowledged; the removal did not happen before the restart.
            fs::remove_file(&seg.path).map_err(err(&seg.path))?;
            continue;
        }
        if seg.records == 0 {
            fs::remove_file(&seg.path).map_err(err(&seg.path))?;
            continue;
        }
        segments.push_back(seg);
    }
    Ok((segments, acked))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(payload: &[u8]) -> Vec<u8> {
        let mut r = (payload.len() as u32).to_le_bytes().to_vec();
        r.extend_from_slice(&crc32c::crc32c(payload).to_le_bytes());
        r.extend_from_slice(payload);
        r
    }

    #[test]
    fn a_damaged_record_ends_the_segment_and_what_is_kept_reads_back_whole() {
        let mut bytes = [record(b"one"), record(b"two")].concat();
        let whole = bytes.len();
        let mut bad = record(b"three");
        bad[4] ^= 1; // its checksum
        bytes.extend_from_slice(&bad);
        bytes.extend_from_slice(&record(b"four"));
        let records = read(&bytes);
        assert_eq!(records.payloads, [b"one".as_slice(), b"two".as_slice()]);
        assert_eq!(records.end, whole);
        assert_eq!(read(&bytes[..records.end]), records);

        let cut = read(&bytes[..whole - 1]);
        assert_eq!((cut.payloads.len(), cut.end), (1, HEADER + 3));
        let huge =
            (MAX_RECORD + 1).to_le_bytes().iter().chain(&[0; 4]).copied().collect::<Vec<_>>();
        assert_eq!(read(&huge), Records { payloads: Vec::new(), end: 0 });
    }

    #[test]
    fn a_payload_that_is_not_an_event_is_none() {
        assert!(event(b"{\"kind\":".to_vec()).is_none());
        assert!(event(vec![0xff, 0xfe]).is_none());
    }
}
