//! The state store's engine entries as a restart reads them: whatever the store holds, the
//! answer is an engine or an error, and a restored engine's own entries restore again.
//!
//! The input is a run of entries, each a key and a value preceded by their lengths (two
//! bytes each, little-endian), as `fuzz/make-seeds.py` writes the seeds.
#![no_main]

use herald::engine::{Engine, EngineConfig};
use libfuzzer_sys::fuzz_target;

fn entries(mut data: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut out = Vec::new();
    while let [k0, k1, v0, v1, rest @ ..] = data {
        let k = usize::from(u16::from_le_bytes([*k0, *k1]));
        let v = usize::from(u16::from_le_bytes([*v0, *v1]));
        if rest.len() < k + v {
            break;
        }
        out.push((rest[..k].to_vec(), rest[k..k + v].to_vec()));
        data = &rest[k + v..];
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let Ok(mut engine) = Engine::from_entries(EngineConfig::default(), entries(data)) else {
        return;
    };
    let Ok(again) = engine.entries() else {
        panic!("a restored engine's entries do not encode");
    };
    let again = again.into_iter().map(|(k, v)| (k, v.unwrap_or_default()));
    assert!(Engine::from_entries(EngineConfig::default(), again).is_ok(), "entries restore");
    engine.track_changes();
    let mut events = Vec::new();
    let _ = engine.next_deadline();
    if let Some(now) = engine.now() {
        engine.tick(now, &mut events);
    }
    engine.finish(&mut events);
    let _ = engine.changes();
});
