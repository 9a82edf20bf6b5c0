//! Leaves every other module may use, importing nothing of herald's own above `model`:
//! config problems with key paths, retrying, splitting lines, the clock, hash maps written
//! in key order.

pub mod clock;
#[cfg(feature = "kafka")]
pub mod kafka;
pub mod lines;
pub mod problems;
pub mod retry;
pub mod sorted;
pub mod url;
