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

#![forbid(unsafe_code)]
#![deny(rust_2018_idioms)]

pub mod config;
pub mod decode;
pub mod engine;
pub mod generate;
pub mod lines;
pub mod model;
pub mod replay;
pub mod sinks;
pub mod sources;
