//! The one line splitter, for files, stdin, `/ingest` bodies and broker messages.
//!
//! Every input is cut into lines the same way, so `herald run` and `herald replay` cannot
//! disagree about one: a line ends at `\n` (a `\r` before it is dropped), every line gets the
//! next number, blank lines included (they are not records, but an error on line 7 must say
//! 7), and a line longer than the limit costs its length, not the machine's memory — a
//! 10 GB line without a newline is one counted decode error.
//!
//! A stream's last line without a newline is not a line yet: a writer may still be completing
//! it. It becomes one only when the caller says the input is finished ([`Splitter::finish`]).
//! A message (an `/ingest` body, a broker delivery) is finished by definition
//! ([`split_message`]).

use std::io::{self, BufRead};

/// The default longest line (1 MiB): longer ones are decode errors.
pub const MAX_LINE_BYTES: usize = 1 << 20;

/// One line of input, without its `\n` (and without a `\r` before it).
#[derive(Debug, PartialEq, Eq)]
pub enum Line<'a> {
    Text(&'a [u8]),
    /// The line was longer than the limit; its bytes were skipped. Carries its length.
    TooLong(usize),
}

/// A line as the splitter hands it out: its 1-based number, its content, and the stream
/// offset just after it (its newline included).
#[derive(Debug, PartialEq, Eq)]
pub struct Cut<'a> {
    pub number: u64,
    pub line: Line<'a>,
    pub end: u64,
}

/// Whether a line holds nothing but white space: not a record (not counted, still numbered).
pub fn is_blank(line: &[u8]) -> bool {
    line.iter().all(|b| b.is_ascii_whitespace())
}

fn strip_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// Splits a byte stream fed in chunks of any size.
#[derive(Debug)]
pub struct Splitter {
    max: usize,
    /// The number of the last line handed out.
    number: u64,
    /// Bytes consumed, counting the partial line.
    offset: u64,
    /// Bytes after the last newline.
    partial: Vec<u8>,
    /// The partial line is over the limit: skip to its end, keeping only its length.
    skipping: Option<usize>,
}

impl Splitter {
    /// Starts at `offset` in the stream, after line `number`.
    pub fn new(max_line_bytes: usize, offset: u64, number: u64) -> Splitter {
        Splitter { max: max_line_bytes, number, offset, partial: Vec::new(), skipping: None }
    }

    /// Bytes consumed, the partial line included.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Reads from `offset` on (a file reopened or rewound); the partial line is dropped.
    pub fn restart_at(&mut self, offset: u64) {
        self.offset = offset;
        self.partial.clear();
        self.skipping = None;
    }

    /// Hands every complete line in `chunk` to `each`, in order; stops early (returning
    /// false) when `each` does.
    pub fn feed(&mut self, chunk: &[u8], mut each: impl FnMut(Cut<'_>) -> bool) -> bool {
        let mut rest = chunk;
        while let Some(i) = memchr::memchr(b'\n', rest) {
            let (line, after) = (&rest[..i], &rest[i + 1..]);
            rest = after;
            if self.partial.is_empty() && self.skipping.is_none() && line.len() <= self.max {
                // The common case: a whole line inside the chunk, handed out without a copy.
                self.offset += line.len() as u64 + 1;
                self.number += 1;
                let cut =
                    Cut { number: self.number, line: Line::Text(strip_cr(line)), end: self.offset };
                if !each(cut) {
                    return false;
                }
                continue;
            }
            self.take(line);
            self.offset += 1;
            if !self.complete(&mut each) {
                return false;
            }
        }
        self.take(rest);
        true
    }

    /// The input is finished: its last line, if it has no newline, is a line now.
    pub fn finish(&mut self, mut each: impl FnMut(Cut<'_>) -> bool) -> bool {
        if self.partial.is_empty() && self.skipping.is_none() {
            return true;
        }
        self.complete(&mut each)
    }

    fn take(&mut self, bytes: &[u8]) {
        self.offset += bytes.len() as u64;
        match &mut self.skipping {
            Some(len) => *len += bytes.len(),
            None if self.partial.len() + bytes.len() > self.max => {
                self.skipping = Some(self.partial.len() + bytes.len());
                self.partial = Vec::new();
            }
            None => self.partial.extend_from_slice(bytes),
        }
    }

    fn complete(&mut self, each: &mut impl FnMut(Cut<'_>) -> bool) -> bool {
        self.number += 1;
        let (number, end) = (self.number, self.offset);
        let ok = match self.skipping.take() {
            Some(len) => each(Cut { number, line: Line::TooLong(len), end }),
            None => each(Cut { number, line: Line::Text(strip_cr(&self.partial)), end }),
        };
        self.partial.clear();
        ok
    }
}

/// Every line of a finished input (`BufRead`), the last one without a newline included.
/// Stops early when `each` returns false.
pub fn read_lines<R: BufRead>(
    mut input: R,
    max_line_bytes: usize,
    mut each: impl FnMut(Cut<'_>) -> bool,
) -> io::Result<()> {
    let mut splitter = Splitter::new(max_line_bytes, 0, 0);
    loop {
        let chunk = match input.fill_buf() {
            Ok(c) => c,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if chunk.is_empty() {
            splitter.finish(&mut each);
            return Ok(());
        }
        let n = chunk.len();
        let go_on = splitter.feed(chunk, &mut each);
        input.consume(n);
        if !go_on {
            return Ok(());
        }
    }
}

/// The lines of a whole message (an `/ingest` body, a broker delivery), numbered from 1; a
/// last line without a newline is a line.
pub fn split_message(data: &[u8], max_line_bytes: usize) -> Vec<(u64, Line<'_>)> {
    let mut out = Vec::new();
    let mut number = 0;
    let mut pieces = data.split(|b| *b == b'\n').peekable();
    while let Some(piece) = pieces.next() {
        // The empty piece after a final newline is not a line.
        if pieces.peek().is_none() && piece.is_empty() {
            break;
        }
        number += 1;
        let line = match piece.len() > max_line_bytes {
            true => Line::TooLong(piece.len()),
            false => Line::Text(strip_cr(piece)),
        };
        out.push((number, line));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cuts(splitter: &mut Splitter, chunks: &[&[u8]], finish: bool) -> Vec<(u64, String, u64)> {
        let mut out = Vec::new();
        let mut push = |c: Cut<'_>| {
            let text = match c.line {
                Line::Text(t) => String::from_utf8_lossy(t).into_owned(),
                Line::TooLong(n) => format!("<{n} bytes>"),
            };
            out.push((c.number, text, c.end));
            true
        };
        for chunk in chunks {
            splitter.feed(chunk, &mut push);
        }
        if finish {
            splitter.finish(&mut push);
        }
        out
    }

    #[test]
    fn splits_lines_across_chunks_and_enforces_the_limit() {
        let mut s = Splitter::new(8, 0, 0);
        let got = cuts(&mut s, &[b"ab\ncd", b"e\r\n0123456789\nf", b"g\n", b"tail"], false);
        let want = [
            (1, "ab".to_string(), 3),
            (2, "cde".to_string(), 8),
            (3, "<10 bytes>".to_string(), 19),
            (4, "fg".to_string(), 22),
        ];
        assert_eq!(got, want);
        assert_eq!(cuts(&mut s, &[], true), [(5, "tail".to_string(), 26)]);
    }

    #[test]
    fn blank_lines_are_numbered_like_any_other() {
        let mut s = Splitter::new(64, 0, 0);
        let got = cuts(&mut s, &[b"a\n\n \r\nb\n"], false);
        let numbers: Vec<u64> = got.iter().map(|c| c.0).collect();
        assert_eq!(numbers, [1, 2, 3, 4]);
        assert!(is_blank(got[2].1.as_bytes()));
    }

    #[test]
    fn a_message_and_a_stream_cut_alike() {
        let data = b"a\r\n\nbb\n0123456789\nlast";
        let msg: Vec<_> =
            split_message(data, 5).into_iter().map(|(n, l)| format!("{n}:{l:?}")).collect();
        let mut streamed = Vec::new();
        read_lines(io::BufReader::with_capacity(4, &data[..]), 5, |c| {
            streamed.push(format!("{}:{:?}", c.number, c.line));
            true
        })
        .unwrap();
        assert_eq!(msg, streamed);
        assert_eq!(msg.len(), 5);
    }
}
