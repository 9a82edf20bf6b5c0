//! Turns a byte stream (a tailed file, stdin) into [`Input`]s with their positions, cut by
//! the one line splitter. Only complete lines leave it: a line still being written stays
//! until its newline comes, or until its input is finished.

use tokio::sync::mpsc::Sender;

use super::input::{Input, Lines};
use crate::state::Position;
use crate::support::lines::{Cut, Line, Splitter};

pub struct LineFeeder {
    splitter: Splitter,
    caught_up: Option<bool>,
    out: Batcher,
}

/// Collects the splitter's lines into inputs; apart from the splitter so that the splitter
/// can hand it lines while both are borrowed.
struct Batcher {
    source: usize,
    tx: Sender<Input>,
    file_id: Option<(u64, u64)>,
    /// The lines being fed arrived in real time.
    live: bool,
    /// Complete lines not yet handed over, and the position after the last of them.
    batch: Lines,
    batch_end: Position,
}

impl LineFeeder {
    /// Feeds `source`'s lines to `tx`, starting after line `line` at byte `offset` of the
    /// file `file_id` (none for a pipe).
    pub fn new(
        source: usize,
        max_line: usize,
        tx: Sender<Input>,
        file_id: Option<(u64, u64)>,
        offset: u64,
        line: u64,
    ) -> Self {
        LineFeeder {
            splitter: Splitter::new(max_line, offset, line),
            caught_up: None,
            out: Batcher {
                source,
                tx,
                file_id,
                live: false,
                batch: Lines::starting_at(line + 1),
                batch_end: Position::default(),
            },
        }
    }

    /// Bytes consumed, the partial line included.
    pub fn offset(&self) -> u64 {
        self.splitter.offset()
    }

    pub fn file_id(&self) -> Option<(u64, u64)> {
        self.out.file_id
    }

    /// Reads `file_id` from `offset` on (rotation, truncation): the partial line is dropped.
    pub fn restart_at(&mut self, file_id: Option<(u64, u64)>, offset: u64) {
        self.out.file_id = file_id;
        self.splitter.restart_at(offset);
    }

    /// Reports a change of "nothing more to read"; false when the engine is gone.
    pub fn set_caught_up(&mut self, caught_up: bool) -> bool {
        if self.caught_up == Some(caught_up) {
            return true;
        }
        self.caught_up = Some(caught_up);
        let source = self.out.source;
        self.out.flush() && self.out.send(Input::CaughtUp { source, caught_up })
    }

    /// Marks what is read next: a short read right after catching up arrived in real time; a
    /// full buffer is backlog. Reports "not caught up" for the time it is being handed over.
    pub fn arrived(&mut self, n: usize, capacity: usize) -> bool {
        self.out.live = self.caught_up == Some(true) && n < capacity;
        self.set_caught_up(false)
    }

    /// Emits the complete lines in `chunk`; false when the engine is gone.
    pub fn feed(&mut self, chunk: &[u8]) -> bool {
        self.splitter.feed(chunk, |cut| self.out.take(cut)) && self.out.flush()
    }

    /// The input is finished (rotated away, end of stdin): a last line without a newline is
    /// a line now. False when the engine is gone.
    pub fn finish(&mut self) -> bool {
        self.splitter.finish(|cut| self.out.take(cut)) && self.out.flush()
    }
}

impl Batcher {
    fn send(&self, input: Input) -> bool {
        self.tx.blocking_send(input).is_ok()
    }

    /// Hands over the complete lines collected so far; false when the engine is gone.
    fn flush(&mut self) -> bool {
        if self.batch.is_empty() {
            return true;
        }
        let next = Lines::sized_like(self.batch.first + self.batch.len() as u64, &self.batch);
        let lines = std::mem::replace(&mut self.batch, next);
        let position = std::mem::take(&mut self.batch_end);
        self.send(Input::Lines { source: self.source, lines, position, live: self.live })
    }

    fn take(&mut self, cut: Cut<'_>) -> bool {
        let position = Position {
            file_id: self.file_id,
            offset: cut.end,
            line: cut.number,
            applied: Vec::new(),
        };
        match cut.line {
            Line::Text(bytes) => {
                self.batch.push(bytes);
                self.batch_end = position;
                true
            }
            Line::TooLong(len) => {
                // In order: the lines before it first.
                if !self.flush() {
                    return false;
                }
                self.batch.first = cut.number + 1;
                self.send(Input::TooLong { source: self.source, line: cut.number, len, position })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the engine task would see, lines flattened: (line number, text or length, offset
    /// after it as its input's position says).
    fn received(rx: &mut tokio::sync::mpsc::Receiver<Input>) -> Vec<(u64, String, u64)> {
        let mut out = Vec::new();
        while let Ok(input) = rx.try_recv() {
            match input {
                Input::Lines { lines, position, .. } => {
                    let n = lines.len();
                    for (i, (number, bytes)) in lines.iter().enumerate() {
                        // Only a batch's last line carries the batch's position.
                        let at = if i + 1 == n { position.offset } else { 0 };
                        out.push((number, String::from_utf8_lossy(bytes).into_owned(), at));
                    }
                }
                Input::TooLong { line, len, position, .. } => {
                    out.push((line, format!("<{len} bytes>"), position.offset))
                }
                _ => {}
            }
        }
        out
    }

    #[test]
    fn lines_split_across_reads_keep_their_numbers_and_positions() {
        let (tx, mut rx) = tokio::sync::mpsc::channel(64);
        let mut f = LineFeeder::new(0, 8, tx, None, 0, 0);
        assert!(f.feed(b"ab\ncd"));
        assert!(f.feed(b"e\r\n0123456789\nf"));
        assert!(f.feed(b"g\n"));
        assert!(f.feed(b"tail"));
        assert!(f.finish());
        let want = [
            (1, "ab".to_string(), 3),
            (2, "cde".to_string(), 8),
            (3, "<10 bytes>".to_string(), 19),
            (4, "fg".to_string(), 22),
            (5, "tail".to_string(), 26),
        ];
        assert_eq!(received(&mut rx), want);
    }

    #[test]
    fn a_read_of_many_lines_is_one_input_and_a_long_line_splits_it_in_order() {
        let (tx, mut rx) = tokio::sync::mpsc::channel(64);
        let mut f = LineFeeder::new(0, 4, tx, None, 0, 10);
        assert!(f.feed(b"a\nb\ntoolong\nc\nd\n"));
        let mut kinds = Vec::new();
        while let Ok(input) = rx.try_recv() {
            kinds.push(match input {
                Input::Lines { lines, .. } => {
                    format!("lines from {} x{}", lines.first, lines.len())
                }
                Input::TooLong { line, .. } => format!("too long {line}"),
                _ => "other".into(),
            });
        }
        assert_eq!(kinds, ["lines from 11 x2", "too long 13", "lines from 14 x2"]);
    }

    #[test]
    fn caught_up_follows_the_lines_read_before_it() {
        let (tx, mut rx) = tokio::sync::mpsc::channel(64);
        let mut f = LineFeeder::new(0, 64, tx, None, 0, 0);
        assert!(f.arrived(4, 64));
        assert!(f.feed(b"x\ny"));
        assert!(f.set_caught_up(true));
        let order: Vec<&str> = std::iter::from_fn(|| rx.try_recv().ok())
            .map(|i| match i {
                Input::CaughtUp { caught_up: false, .. } => "behind",
                Input::CaughtUp { caught_up: true, .. } => "caught up",
                Input::Lines { .. } => "lines",
                _ => "other",
            })
            .collect();
        assert_eq!(order, ["behind", "lines", "caught up"]);
    }
}
