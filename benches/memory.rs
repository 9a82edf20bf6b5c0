//! Heap bytes per tracked key with 1,000,000 keys (goal: at most 300 B), and the heap
//! after 1,000,000 distinct cluster names (goal: bounded by `engine.max_clusters`).
//!
//! `cargo bench --bench memory`. A counting allocator measures live heap bytes exactly, so
//! the figure does not depend on the allocator's page reuse or on RSS sampling.

use std::alloc::{GlobalAlloc, Layout, System};
use std::borrow::Cow;
use std::sync::atomic::{AtomicUsize, Ordering};

use herald::engine::{Engine, EngineConfig, Params};
use herald::model::Nanos;
use herald::model::{EntityOp, Observation, Signal, Slot, Timestamp};

struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator unchanged; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size(), Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        LIVE.fetch_add(new_size, Ordering::Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

const KEYS: usize = 1_000_000;
const SEC: i64 = 1_000_000_000;

fn measure(name: &str, signal: impl Fn(usize) -> Signal<'static>) {
    let before = LIVE.load(Ordering::Relaxed);
    let mut engine = Engine::new(EngineConfig::default());
    let mut out = Vec::new();
    let t0 = 1_736_532_000 * SEC;
    for i in 0..KEYS {
        let at = Timestamp(t0 + i as i64 * 1_000);
        let obs = Observation {
            cluster: Cow::Borrowed("prod"),
            reporter: Cow::Borrowed("ctrl1"),
            at,
            signal: signal(i),
        };
        engine.observe(&obs, at, &mut out);
        out.clear();
    }
    // Every window has run out: what remains is the steady state of the keys.
    engine.tick(Timestamp(t0 + 3_600 * SEC), &mut out);
    drop(out);
    let live = LIVE.load(Ordering::Relaxed) - before;
    println!("{name}: {KEYS} keys, {live} B live heap, {} B per key", live / KEYS);
    drop(engine);
}

/// 1,000,000 records, each of a cluster never seen before: the first `max_clusters` are
/// held, the rest refused. The heap after all of them is the heap after the first 1,000.
/// With `ttl`, engine time moves a second per record, as the wall clock moves it live (a
/// refused record does not move it), and a spent cluster (a router gone offline, silent for
/// the TTL) is let go, so names keep coming in and going out.
fn flood(name: &str, ttl: Option<Nanos>) {
    const NAMES: usize = 1_000_000;
    let before = LIVE.load(Ordering::Relaxed);
    let mut config = EngineConfig::default();
    if let Some(key_ttl) = ttl {
        config.defaults = Params { key_ttl, ..Params::default() };
    }
    let mut engine = Engine::new(config);
    let mut out = Vec::new();
    let t0 = 1_736_532_000 * SEC;
    let (mut at_1k, mut peak, mut refused) = (0, 0, 0);
    for i in 0..NAMES {
        let step = if ttl.is_some() { SEC } else { 1_000 };
        let at = Timestamp(t0 + i as i64 * step);
        let obs = Observation {
            cluster: Cow::Owned(format!("cluster-{i:07}")),
            reporter: Cow::Borrowed("ctrl1"),
            at,
            signal: Signal::Router { router: Cow::Borrowed("edge"), online: false },
        };
        if ttl.is_some() {
            engine.tick(at, &mut out);
        }
        if engine.observe(&obs, at, &mut out) == herald::engine::Outcome::OverLimit {
            refused += 1;
        }
        out.clear();
        // What the daemon takes after every batch, for the view and the log.
        drop(engine.take_evictions());
        drop(engine.take_refusals());
        let live = LIVE.load(Ordering::Relaxed) - before;
        peak = peak.max(live);
        if i + 1 == 1_000 {
            at_1k = live;
        }
    }
    let live = LIVE.load(Ordering::Relaxed) - before;
    println!(
        "{name}: {NAMES} cluster names, {} held, {refused} refused; live heap after 1,000 names {at_1k} B, after {NAMES} {live} B, peak {peak} B",
        engine.clusters()
    );
    drop(engine);
}

fn main() {
    // Criterion's flags (`--bench`) are accepted and ignored.
    flood("cluster names, no TTL passes", None);
    flood("cluster names, 10 min TTL", Some(Nanos(600 * SEC)));
    measure("router keys", |i| Signal::Router {
        router: Cow::Owned(format!("router-{i:07}")),
        online: true,
    });
    measure("terminator slots", |i| Signal::Entity {
        op: EntityOp::Created,
        slot: Slot {
            service: Cow::Owned(format!("svc-{:04}", i % 1000)),
            router: Cow::Owned(format!("r-{:04}", i / 1000)),
            host: Cow::Borrowed(""),
        },
    });
}
