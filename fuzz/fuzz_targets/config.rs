//! Config text through `config::parse`: a config or the list of its problems, never a panic.
#![no_main]

use std::collections::BTreeMap;

use herald::config;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    // Some of the variables the sample configs name, so that `${…}` is followed both ways.
    let env: BTreeMap<String, String> =
        [("HERALD_TOKEN", "t0ken"), ("KAFKA_BROKERS", "127.0.0.1:9092")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
    if let Err(problems) = config::parse(text, &env) {
        assert!(!problems.0.is_empty(), "an error names at least one problem");
        for p in &problems.0 {
            let _ = p.to_string();
        }
    }
});
