//! herald turns the noisy state transitions of raft-clustered control planes (OpenZiti
//! controllers, etcd, ZooKeeper, anything that emits JSON) into a clean, stable, ordered
//! stream of cluster events.
//!
//! # Layout
//! - [`model`]: [`model::Observation`] (decoded input) and [`model::ClusterEvent`] (output).
//! - [`decode`]: bytes to observations — OpenZiti events of every version, the generic format.
//! - [`engine`]: sans-IO state machines — stability windows, derived cluster state, spin and
//!   liveness detection. Time is passed in; nothing here does IO.
//! - [`config`]: the TOML configuration, validated with the key path of every problem.
//! - [`sources`], [`sinks`]: one file per source and per sink.
//! - [`replay`]: a recorded log through the engine on record time.
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
pub mod decode;
pub mod disk_buffer;
pub mod engine;
pub mod generate;
pub mod lines;
pub mod metrics;
pub mod model;
pub mod replay;
pub mod runtime;
pub mod server;
pub mod sinks;
pub mod sources;
pub mod state;
pub mod view;
