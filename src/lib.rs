//! herald turns the noisy state transitions of raft-clustered control planes (OpenZiti
//! controllers, etcd, ZooKeeper, anything that emits JSON) into a clean, stable, ordered
//! stream of cluster events.
//!
//! # Layout
//! Dependencies run one way: `daemon` → {`config`, `server`, `sources`, `sinks`} →
//! `pipeline` → {`engine`, `state`, `telemetry`} → `decode` → `model`, with `support` a leaf
//! under all.
//! - [`daemon`]: `herald run`'s wiring — sources and sinks from the config, the start order.
//! - [`config`]: the TOML configuration, validated with the key path of every problem.
//! - [`server`]: the HTTP server — `/healthz`, `/readyz`, `/metrics`, `/state`, sources' routes.
//! - [`sources`]: the `Source` trait, its registry, one file per source.
//! - [`sinks`]: the `Sink` trait, its registry, the buffers, one file per sink.
//! - [`pipeline`]: the protocol sources and sinks speak, the driver shared with replay, the
//!   outbox, commit, fan-out, an edge's forwarding (no engine) and shutdown; knows no
//!   concrete source or sink.
//! - [`engine`]: sans-IO state machines — stability windows, derived cluster state, spin and
//!   liveness detection. Time is passed in; nothing here does IO.
//! - [`state`]: what survives a restart — engine entries, positions, outbox, in one store.
//! - [`telemetry`]: metrics, the stable view, the state gauges, internal events.
//! - [`decode`]: bytes to observations — OpenZiti events of every version, the generic format.
//! - [`model`]: [`model::Observation`] (decoded input) and [`model::ClusterEvent`] (output).
//! - [`support`]: leaves — config problems, retry (backoff, outage), the line splitter, the
//!   clock, URLs fit for logs.
//! - [`replay`]: a recorded log through the driver on record time.
//! - [`timeline`]: `replay --timeline`'s page, each key's states over time.
//! - [`generate`]: synthetic OpenZiti logs for tests and benchmarks.
//!
//! # The engine in five lines
//!
//! A controller's startup replays a spurious `leadership.lost` (OpenZiti #2684); the engine
//! absorbs it and emits one leader, once it has held for the window:
//!
//! ```
//! use herald::decode::{decode_line, Context, Decoded};
//! use herald::engine::{Engine, EngineConfig};
//!
//! let log = [
//!     r#"{"namespace":"cluster","event_src_id":"ctrl1","timestamp":"2025-01-10T18:00:00Z","eventType":"leadership.gained"}"#,
//!     r#"{"namespace":"cluster","event_src_id":"ctrl1","timestamp":"2025-01-10T18:00:00.001Z","eventType":"leadership.lost"}"#,
//!     r#"{"namespace":"cluster","event_src_id":"ctrl1","timestamp":"2025-01-10T18:00:00.002Z","eventType":"leadership.gained"}"#,
//! ];
//! let ctx = Context::new("prod", "unknown");
//! let mut engine = Engine::new(EngineConfig::default());
//! let mut events = Vec::new();
//! for (i, line) in log.iter().enumerate() {
//!     if let Ok(Decoded::Observation(obs)) = decode_line(line.as_bytes(), i as u64 + 1, &ctx) {
//!         engine.observe(&obs, obs.at, &mut events); // replay: engine time is record time
//!     }
//! }
//! engine.finish(&mut events); // end of input: run past every pending window
//! let kinds: Vec<&str> = events.iter().map(|e| e.kind.as_str()).collect();
//! assert_eq!(kinds, ["node.has_leader", "cluster.leader_elected"]);
//! assert_eq!(events[1].leader_id.as_deref(), Some("ctrl1"));
//! assert!(events[1].initial);
//! ```

#![forbid(unsafe_code)]
#![deny(rust_2018_idioms)]

pub mod config;
pub mod daemon;
pub mod decode;
pub mod engine;
pub mod generate;
pub mod model;
pub mod pipeline;
pub mod replay;
pub mod server;
pub mod sinks;
pub mod sources;
pub mod state;
pub mod support;
pub mod sweep;
pub mod telemetry;
pub mod timeline;
