//! What herald tells about itself: its metrics, the stable view behind `/state` and the
//! state gauges, and the internal events that keep its logs and counters in step.

pub mod events;
pub mod gauges;
pub mod metrics;
pub mod tap;
pub mod view;
