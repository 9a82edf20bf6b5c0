//! A disk-buffer segment file's bytes read as recovery and the reader read them: its
//! records, each payload parsed back to an event.
#![no_main]

use herald::sinks::buffer::segments;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let records = segments::read(data);
    assert!(records.end <= data.len());
    // Recovery truncates a segment at `end`: what it leaves must read back whole.
    let kept = segments::read(&data[..records.end]);
    assert_eq!(kept, records);
    for payload in records.payloads {
        let _ = segments::event(payload.to_vec());
    }
});
