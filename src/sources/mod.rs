//! Sources: where records come from. One file per source; each defines its config table
//! (`[sources.NAME]` with `type = "..."`), parses it, and implements [`Source`].
//!
//! Adding a source touches its own file, its line in [`SourceKind`], in [`parse_kind`] and in
//! [`SourceKind::start`] (the registry).

#[cfg(feature = "amqp")]
pub mod amqp;
#[cfg(any(feature = "amqp", feature = "nats", feature = "kafka"))]
mod broker;
pub mod etcd;
pub mod file;
pub mod http;
#[cfg(feature = "kafka")]
pub mod kafka;
#[cfg(feature = "nats")]
pub mod nats;
mod poll;
pub mod probe;
pub mod stdin;
pub mod zookeeper;

use std::sync::Arc;

use serde::Deserialize;
use tokio::sync::mpsc::Sender;

use crate::decode::{Context, Format};
use crate::pipeline::{Clock, Input, Shutdown, Stop};
use crate::state::Position;
use crate::support::problems::{section, Problems};
use crate::telemetry::metrics::Metrics;

/// What every source is started with.
#[derive(Clone)]
pub struct SourceContext {
    /// The source's index in the engine task.
    pub index: usize,
    pub name: String,
    pub tx: Sender<Input>,
    pub stop: Stop,
    /// Where the previous run left it (files).
    pub start: Option<Position>,
    pub clock: Clock,
    pub metrics: Arc<Metrics>,
    /// What a grouped kafka source owns, shared with the engine task.
    pub owned: crate::pipeline::Owned,
}

/// A configured source.
pub trait Source {
    /// How its lines are decoded: the cluster and reporter of records that name neither.
    fn context(&self) -> Context;
    /// A push source (HTTP, pollers) has nothing waiting to be read: it is always caught up.
    fn pushes(&self) -> bool {
        false
    }
    /// Starts it; every task it runs is registered with `tasks` so that shutdown waits for it.
    fn start(&self, ctx: SourceContext, tasks: &mut Shutdown);
    /// Routes it serves on herald's HTTP server (the http source's `path`), guarded by the
    /// server's `ingest_token`. They are bound once the sinks and the state are up.
    fn routes(&self, _ctx: &SourceContext, _ingest_token: Option<&str>) -> Option<axum::Router> {
        None
    }
}

/// The context of a record source's lines.
pub(crate) fn context(c: &Common) -> Context {
    Context {
        cluster: c.cluster.clone().unwrap_or_else(|| "default".into()),
        reporter: c.reporter.clone().unwrap_or_else(|| "unknown".into()),
        format: c.format,
    }
}

/// Pollers make their observations themselves; the context only names their cluster.
pub(crate) fn poller_context(cluster: Option<&str>) -> Context {
    Context {
        cluster: cluster.unwrap_or("default").to_string(),
        reporter: "herald".into(),
        format: Default::default(),
    }
}

impl SourceKind {
    /// The registry: each configured type to its implementation.
    pub fn source(&self) -> &dyn Source {
        match self {
            SourceKind::File(c) => c,
            SourceKind::Stdin(c) => c,
            SourceKind::Http(c) => c,
            #[cfg(feature = "amqp")]
            SourceKind::Amqp(c) => c,
            #[cfg(feature = "nats")]
            SourceKind::Nats(c) => c,
            #[cfg(feature = "kafka")]
            SourceKind::Kafka(c) => c,
            SourceKind::Probe(c) => c,
            SourceKind::Etcd(c) => c,
            SourceKind::Zookeeper(c) => c,
        }
    }
}

/// Why a source could not run, with where: the file, or the broker.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("{path}: {source}")]
    Io { path: String, source: std::io::Error },
    /// `url` is fit for logs (no user information).
    #[error("{url}: {source}")]
    Broker { url: String, source: Box<dyn std::error::Error + Send + Sync> },
    /// An HTTP server (etcd's gateway) answered with an error status.
    #[error("{url}: HTTP {status}: {body}")]
    Refused { url: String, status: u16, body: String },
    /// A certificate or key in `path` that the TLS client refuses.
    #[error("{path}: {source}")]
    Tls { path: String, source: Box<dyn std::error::Error + Send + Sync> },
}

impl SourceError {
    pub(crate) fn broker(
        url: &str,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        SourceError::Broker { url: crate::support::url::redacted(url), source: source.into() }
    }
}

/// Keys every source that reads records has. They are read from the table before the
/// source's own keys (serde's `flatten` would hide unknown keys from validation).
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
pub struct Common {
    /// The cluster OpenZiti records belong to (they do not name it). Generic records carry
    /// their own.
    pub cluster: Option<String>,
    /// The reporter of records without `event_src_id` (OpenZiti before v1.3).
    pub reporter: Option<String>,
    /// `auto` (the default), `openziti` or `generic`.
    #[serde(default)]
    pub format: Format,
}

/// A configured source, by type.
#[derive(Clone, Debug, PartialEq)]
pub enum SourceKind {
    File(file::Config),
    Stdin(stdin::Config),
    Http(http::Config),
    #[cfg(feature = "amqp")]
    Amqp(amqp::Config),
    #[cfg(feature = "nats")]
    Nats(nats::Config),
    #[cfg(feature = "kafka")]
    Kafka(kafka::Config),
    Probe(probe::Config),
    Etcd(etcd::Config),
    Zookeeper(zookeeper::Config),
}

pub const TYPES: &str = "file, stdin, http, amqp, nats, kafka, probe, etcd, zookeeper";

const COMMON_KEYS: [&str; 3] = ["cluster", "reporter", "format"];

/// Takes `keys` out of a source's table and reads them as `T` (serde's `flatten` would hide
/// unknown keys from validation).
fn apart<T: serde::de::DeserializeOwned>(
    table: &mut toml::Value,
    keys: &[&str],
    path: &str,
    p: &mut Problems,
) -> Option<T> {
    let mut taken = toml::Table::new();
    if let toml::Value::Table(t) = table {
        for k in keys {
            if let Some(v) = t.remove(*k) {
                taken.insert(k.to_string(), v);
            }
        }
    }
    section(toml::Value::Table(taken), path, p)
}

/// Reads `[sources.NAME]` by its `type`. The keys several sources share (a record
/// source's [`Common`], a poller's [`poll::Timing`]) are read apart, then put into the
/// source's own config before it validates. Every problem of both is reported.
pub(crate) fn parse(
    kind: &str,
    mut table: toml::Value,
    path: &str,
    p: &mut Problems,
) -> Option<SourceKind> {
    let record_source = matches!(kind, "file" | "stdin" | "http" | "amqp" | "nats" | "kafka");
    let (common, timing) = match record_source {
        true => (apart::<Common>(&mut table, &COMMON_KEYS, path, p), Some(Default::default())),
        false => (
            Some(Common::default()),
            apart::<poll::Timing>(&mut table, &poll::TIMING_KEYS, path, p),
        ),
    };
    let (Some(common), Some(mut timing)) = (common, timing) else {
        // Still read the source's own keys, so that their problems are listed too.
        let _ = parse_kind(kind, table, Common::default(), poll::Timing::default(), path, p);
        return None;
    };
    if kind == "probe" {
        timing.interval.get_or_insert(std::time::Duration::from_secs(1));
    }
    parse_kind(kind, table, common, timing, path, p)
}

fn parse_kind(
    kind: &str,
    table: toml::Value,
    common: Common,
    timing: poll::Timing,
    path: &str,
    p: &mut Problems,
) -> Option<SourceKind> {
    // A source's own section, with the keys read apart (`$shared`) put back before it
    // validates.
    macro_rules! read {
        ($m:ident, $shared:ident) => {
            section::<$m::Config>(table, path, p)
                .map(|c| $m::Config { $shared, ..c })?
                .validate(path, p)?
        };
    }
    Some(match kind {
        "file" => SourceKind::File(read!(file, common)),
        "stdin" => {
            section::<stdin::Config>(table, path, p)?;
            SourceKind::Stdin(stdin::Config { common })
        }
        "http" => SourceKind::Http(read!(http, common)),
        #[cfg(feature = "amqp")]
        "amqp" => SourceKind::Amqp(read!(amqp, common)),
        #[cfg(feature = "nats")]
        "nats" => SourceKind::Nats(read!(nats, common)),
        #[cfg(feature = "kafka")]
        "kafka" => SourceKind::Kafka(read!(kafka, common)),
        #[cfg(not(feature = "kafka"))]
        "kafka" => return p.not_built(path, kind),
        #[cfg(not(feature = "amqp"))]
        "amqp" => return p.not_built(path, kind),
        #[cfg(not(feature = "nats"))]
        "nats" => return p.not_built(path, kind),
        "probe" => SourceKind::Probe(read!(probe, timing)),
        "etcd" => SourceKind::Etcd(read!(etcd, timing)),
        "zookeeper" => SourceKind::Zookeeper(read!(zookeeper, timing)),
        other => {
            p.push(
                format!("{path}.type"),
                format!("unknown source type {other:?} (one of {TYPES})"),
            );
            return None;
        }
    })
}
