//! A line reader with a length limit: a 10 GB line without a newline must cost a counted
//! decode error, not the machine's memory.

use std::io::{self, BufRead};

/// One line of input, without its `\n` (and without a `\r` before it).
#[derive(Debug, PartialEq, Eq)]
pub enum Line<'a> {
    Text(&'a [u8]),
    /// The line was longer than the limit; its bytes were skipped. Carries its length.
    TooLong(usize),
}

pub struct LineReader<R> {
    inner: R,
    max: usize,
    number: u64,
    buf: Vec<u8>,
}

impl<R: BufRead> LineReader<R> {
    pub fn new(inner: R, max_line_bytes: usize) -> Self {
        LineReader { inner, max: max_line_bytes, number: 0, buf: Vec::with_capacity(1024) }
    }

    /// The next line and its 1-based number, or `None` at end of input.
    pub fn next_line(&mut self) -> io::Result<Option<(u64, Line<'_>)>> {
        self.buf.clear();
        let mut len = 0usize;
        let mut any = false;
        loop {
            let avail = match self.inner.fill_buf() {
                Ok(a) => a,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if avail.is_empty() {
                if !any {
                    return Ok(None);
                }
                break;
            }
            any = true;
            let (chunk, used, done) = match memchr::memchr(b'\n', avail) {
                Some(i) => (&avail[..i], i + 1, true),
                None => (avail, avail.len(), false),
            };
            if len + chunk.len() <= self.max {
                self.buf.extend_from_slice(chunk);
            }
            len += chunk.len();
            self.inner.consume(used);
            if done {
                break;
            }
        }
        self.number += 1;
        if len > self.max {
            return Ok(Some((self.number, Line::TooLong(len))));
        }
        if self.buf.last() == Some(&b'\r') {
            self.buf.pop();
        }
        Ok(Some((self.number, Line::Text(&self.buf))))
    }

    /// Lines read so far.
    pub fn line_number(&self) -> u64 {
        self.number
    }
}

/// Whether a line holds nothing but white space (skipped, not a record).
pub fn is_blank(line: &[u8]) -> bool {
    line.iter().all(|b| b.is_ascii_whitespace())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_lines_and_enforces_the_limit() {
        let input = b"a\r\nbb\n0123456789\nlast";
        let mut r = LineReader::new(io::BufReader::with_capacity(4, &input[..]), 5);
        assert_eq!(r.next_line().unwrap(), Some((1, Line::Text(b"a"))));
        assert_eq!(r.next_line().unwrap(), Some((2, Line::Text(b"bb"))));
        assert_eq!(r.next_line().unwrap(), Some((3, Line::TooLong(10))));
        assert_eq!(r.next_line().unwrap(), Some((4, Line::Text(b"last"))));
        assert_eq!(r.next_line().unwrap(), None);
    }
}
