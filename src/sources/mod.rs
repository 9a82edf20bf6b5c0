//! Sources: where records come from. One file per source; each defines its config table
//! (`[sources.NAME]` with `type = "..."`) and, once the daemon runs it, its reader.
//!
//! Adding a source touches its own file, its line in [`SourceKind`] and in [`parse`].

pub mod amqp;
pub mod etcd;
pub mod file;
pub mod http;
pub mod nats;
pub mod probe;
pub mod stdin;
pub mod zookeeper;

use serde::Deserialize;

use crate::config::{section, Problems};
use crate::decode::Format;

/// Keys every source that reads records has.
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

/// Reads `[sources.NAME]` by its `type`.
pub(crate) fn parse(
    kind: &str,
    table: toml::Value,
    path: &str,
    p: &mut Problems,
) -> Option<SourceKind> {
    Some(match kind {
        "file" => SourceKind::File(section::<file::Config>(table, path, p)?.validate(path, p)?),
        "stdin" => SourceKind::Stdin(section(table, path, p)?),
        "http" => SourceKind::Http(section(table, path, p)?),
        "amqp" => SourceKind::Amqp(section::<amqp::Config>(table, path, p)?.validate(path, p)?),
        "nats" => SourceKind::Nats(section::<nats::Config>(table, path, p)?.validate(path, p)?),
        "probe" => SourceKind::Probe(section::<probe::Config>(table, path, p)?.validate(path, p)?),
        "etcd" => SourceKind::Etcd(section::<etcd::Config>(table, path, p)?.validate(path, p)?),
        "zookeeper" => {
            SourceKind::Zookeeper(section::<zookeeper::Config>(table, path, p)?.validate(path, p)?)
        }
        other => {
            p.push(
                format!("{path}.type"),
                format!("unknown source type {other:?} (one of {TYPES})"),
            );
            return None;
        }
    })
}
