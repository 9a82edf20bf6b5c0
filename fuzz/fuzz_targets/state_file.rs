//! A state file's bytes loaded as a restart loads them: the file decoded, the engine
//! restored from its snapshot and run to the end, the outbox's events parsed back.
#![no_main]

use herald::engine::{Engine, EngineConfig};
use herald::model::ClusterEvent;
use herald::state;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let state = match state::decode(data) {
        Ok(s) => s,
        Err(e) => {
            let _ = e.to_string();
            return;
        }
    };
    for line in &state.outbox {
        let _ = serde_json::from_str::<ClusterEvent>(line);
    }
    if state.engine.is_empty() {
        return;
    }
    let Ok(mut engine) = Engine::restore(EngineConfig::default(), &state.engine) else {
        return;
    };
    // Whatever a restored engine holds, its own snapshot must restore again.
    let Ok(again) = engine.snapshot() else {
        panic!("a restored engine's state does not encode");
    };
    assert!(Engine::restore(EngineConfig::default(), &again).is_ok(), "a snapshot restores");
    let mut events = Vec::new();
    let _ = engine.next_deadline();
    if let Some(now) = engine.now() {
        engine.tick(now, &mut events);
    }
    engine.finish(&mut events);
    let _ = engine.take_evictions();
});
