//! An `/ingest` body as the HTTP source and the pipeline take it: read (split, every line
//! decoded), then each line through the driver into an engine on record time, then the end
//! of input. Also checks what every run must keep: no event stable before it happened, and
//! an engine snapshot that resumes to the same output.
#![no_main]

use herald::decode::Context;
use herald::engine::{Engine, EngineConfig};
use herald::model::ClusterEvent;
use herald::pipeline::driver::{Driver, Unwatched};
use herald::sources::http::read_body;
use herald::support::lines::Line;
use libfuzzer_sys::fuzz_target;

/// Order by `stable_at` holds only among events that become stable at one tick: a late
/// record's window runs on its own record time, so its event may be stable before the last
/// one emitted. That an event is never stable before it happened holds for all.
fn check(events: &[ClusterEvent]) {
    for e in events {
        assert!(e.stable_at >= e.at, "stable before it happened: {e:?}");
    }
}

fn json(events: &[ClusterEvent]) -> Vec<String> {
    events.iter().map(|e| serde_json::to_string(e).unwrap_or_default()).collect()
}

fuzz_target!(|data: &[u8]| {
    let ctx = Context::new("fuzz", "unknown");
    let Ok(body) = read_body(data, &ctx) else { return };
    let mut driver = Driver::new(Engine::new(EngineConfig::default()));
    for (i, line) in body.lines.iter().enumerate() {
        driver.line(&ctx, i as u64 + 1, Line::Text(line), None, &mut Unwatched);
    }
    let mut events = std::mem::take(&mut driver.events);
    let Ok(snapshot) = driver.engine.snapshot() else {
        panic!("the engine's state does not encode");
    };
    let before = events.len();
    driver.engine.finish(&mut events);
    check(&events);

    let Ok(mut resumed) = Engine::restore(EngineConfig::default(), &snapshot) else {
        panic!("the engine's own snapshot does not restore");
    };
    let mut rest = Vec::new();
    resumed.finish(&mut rest);
    assert_eq!(json(&rest), json(&events[before..]), "a resumed engine finishes differently");
});
