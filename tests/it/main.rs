//! Integration tests: the real binary and the library's public API, end to end.

mod alertmanager;
mod amqp;
mod cli;
mod corpus;
mod daemon;
mod durability;
mod edge;
mod group;
mod kafka;
mod limits;
mod lines;
mod nats;
mod operator;
mod otlp;
mod prometheus;
mod props;
mod raft;
mod server;
mod siem;
mod support;
mod syslog;
mod timeline;
