//! Sources: where records come from. One file per source; each defines its config table
//! (`[sources.NAME]` with `type = "..."`), parses it, and implements [`Source`].
//!
//! Adding a source touches its own file, its line in [`SourceKind`], in [`parse_kind`] and in
//! [`SourceKind::start`] (the registry).

pub mod amqp;
mod broker;
pub mod etcd;
pub mod file;
pub mod http;
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
            SourceKind::Amqp(c) => c,
            SourceKind::Nats(c) => c,
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
}

impl SourceError {
    pub(crate) fn broker(
        url: &str,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        SourceError::Broker { url: broker::redacted(url), source: source.into() }
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
    Amqp(amqp::Config),
    Nats(nats::Config),
    Probe(probe::Config),
    Etcd(etcd::Config),
    Zookeeper(zookeeper::Config),
}

pub const TYPES: &str = "file, stdin, http, amqp, nats, probe, etcd, zookeeper";

const COMMON_KEYS: [&str; 3] = ["cluster", "reporter", "format"];

/// Splits the common keys out of a record source's table and reads them.
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

/// Reads `[sources.NAME]` by its `type`.
pub(crate) fn parse(
    kind: &str,
    mut table: toml::Value,
    path: &str,
    p: &mut Problems,
) -> Option<SourceKind> {
    let record_source = matches!(kind, "file" | "stdin" | "http" | "amqp" | "nats");
    let common = match record_source {
        true => apart(&mut table, &COMMON_KEYS, path, p),
        false => Some(Common::default()),
    };
    let mut timing: poll::Timing = match record_source {
        true => poll::Timing::default(),
        false => apart(&mut table, &poll::TIMING_KEYS, path, p)?,
    };
    if kind == "probe" {
        timing.interval.get_or_insert(std::time::Duration::from_secs(1));
    }
    let source = parse_kind(kind, table, timing, path, p)?;
    let common = common?;
    Some(match source {
        SourceKind::File(c) => SourceKind::File(file::Config { common, ..c }),
        SourceKind::Stdin(_) => SourceKind::Stdin(stdin::Config { common }),
        SourceKind::Http(_) => SourceKind::Http(http::Config { common }),
        SourceKind::Amqp(c) => SourceKind::Amqp(amqp::Config { common, ..c }),
        SourceKind::Nats(c) => SourceKind::Nats(nats::Config { common, ..c }),
        other => other,
    })
}

fn parse_kind(
    kind: &str,
    table: toml::Value,
    timing: poll::Timing,
    path: &str,
    p: &mut Problems,
) -> Option<SourceKind> {
    macro_rules! poller {
        ($m:ident) => {
            section::<$m::Config>(table, path, p)
                .map(|c| $m::Config { timing, ..c })?
                .validate(path, p)?
        };
    }
    Some(match kind {
        "file" => SourceKind::File(section::<file::Config>(table, path, p)?.validate(path, p)?),
        "stdin" => SourceKind::Stdin(section(table, path, p)?),
        "http" => SourceKind::Http(section(table, path, p)?),
        "amqp" => SourceKind::Amqp(section::<amqp::Config>(table, path, p)?.validate(path, p)?),
        "nats" => SourceKind::Nats(section::<nats::Config>(table, path, p)?.validate(path, p)?),
        "probe" => SourceKind::Probe(poller!(probe)),
        "etcd" => SourceKind::Etcd(poller!(etcd)),
        "zookeeper" => SourceKind::Zookeeper(poller!(zookeeper)),
        other => {
            p.push(
                format!("{path}.type"),
                format!("unknown source type {other:?} (one of {TYPES})"),
            );
            return None;
        }
    })
}
