//! Typed configuration (TOML, DESIGN §9.2), validated with the key path of every problem.
//!
//! serde stops at the first error, and an operator fixing a config wants them all at once. So
//! the file is read as a TOML table, `${ENV}` is substituted, and then each section (the
//! engine, each cluster, the server, the state, each source, each sink) is deserialized on
//! its own: unknown keys are collected everywhere with `serde_ignored`, the first type error
//! of each section is located with `serde_path_to_error`, and required keys are checked by
//! hand so that a missing one reads `sinks.kafka_main.topic: missing`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::engine::{EngineConfig, Limits, Params};
use crate::model::{EventKind, Nanos, Severities, Severity};
use crate::sinks::{self, SinkConfig};
use crate::sources::{self, SourceKind};
pub use crate::support::problems::{section, Problem, Problems};

/// The whole configuration.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    pub engine: EngineConfig,
    pub server: ServerConfig,
    pub state: StateConfig,
    pub sources: BTreeMap<String, SourceKind>,
    pub sinks: BTreeMap<String, SinkConfig>,
    /// `[severities]` and `[clusters.NAME.severities]` over the kinds' defaults (DESIGN §11).
    pub severities: Severities,
}

#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct ServerConfig {
    /// Where the HTTP server listens (default `127.0.0.1:9464`).
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Bearer token for `POST /ingest`; required when `listen` is not a loopback address.
    pub ingest_token: Option<String>,
    /// Serve HTTPS with this certificate and key (PEM).
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// How long a client has to send a request's line and headers (default 10 s); an idle
    /// connection is closed after as long.
    #[serde(default = "default_header_timeout", with = "humantime_serde")]
    pub header_timeout: Duration,
    /// How long a request may take from its headers to the answer (default 30 s); 408 after.
    #[serde(default = "default_request_timeout", with = "humantime_serde")]
    pub request_timeout: Duration,
    /// Requests handled at once per endpoint (`/ingest`, `/metrics`, `/state`; default
    /// 256); one more is answered 503 at once. The probes are not limited.
    #[serde(default = "default_max_requests")]
    pub max_requests: u32,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: default_listen(),
            ingest_token: None,
            tls_cert: None,
            tls_key: None,
            header_timeout: default_header_timeout(),
            request_timeout: default_request_timeout(),
            max_requests: default_max_requests(),
        }
    }
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9464))
}

fn default_header_timeout() -> Duration {
    Duration::from_secs(10)
}

fn default_request_timeout() -> Duration {
    Duration::from_secs(30)
}

fn default_max_requests() -> u32 {
    256
}

impl ServerConfig {
    fn validate(&self, p: &mut Problems) {
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            p.push("server.tls_key", "tls_cert and tls_key go together");
        }
        p.positive("server", "header_timeout", self.header_timeout);
        p.positive("server", "request_timeout", self.request_timeout);
        p.at_least_one("server", "max_requests", self.max_requests);
    }
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
pub struct StateConfig {
    /// Checkpoints and engine snapshots; without it nothing survives a restart.
    pub dir: Option<PathBuf>,
}

/// `[engine]` and `[clusters.NAME.engine]`: every key optional, layered over the defaults.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
struct EngineSection {
    #[serde(default, with = "humantime_serde")]
    window: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    startup_grace: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    split_window: Option<Duration>,
    spin_cycles: Option<u32>,
    #[serde(default, with = "humantime_serde")]
    spin_period: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    key_ttl: Option<Duration>,
    /// Caps on what input can create: `[engine]` only, they are not per cluster.
    max_clusters: Option<usize>,
    max_keys: Option<u64>,
    #[serde(default)]
    windows: WindowsSection,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
struct WindowsSection {
    #[serde(default, with = "humantime_serde")]
    leader: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    leader_view: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    peer: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    read_only: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    members: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    router: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    alive: Option<Duration>,
}

impl EngineSection {
    /// Layers this section over `base`: a kind's own window wins over this layer's `window`,
    /// which wins over whatever `base` had.
    fn apply(&self, base: Params) -> Params {
        let n = Nanos::from_std;
        let w = self.window.map(n);
        let pick = |own: Option<Duration>, before: Nanos| own.map(n).or(w).unwrap_or(before);
        let ws = &self.windows;
        let b = base.windows;
        Params {
            windows: crate::engine::Windows {
                leader: pick(ws.leader, b.leader),
                leader_view: pick(ws.leader_view, b.leader_view),
                peer: pick(ws.peer, b.peer),
                read_only: pick(ws.read_only, b.read_only),
                members: pick(ws.members, b.members),
                router: pick(ws.router, b.router),
                alive: pick(ws.alive, b.alive),
            },
            startup_grace: self.startup_grace.map(n).unwrap_or(base.startup_grace),
            split_window: self.split_window.map(n).unwrap_or(base.split_window),
            spin_cycles: self.spin_cycles.unwrap_or(base.spin_cycles),
            spin_period: self.spin_period.map(n).unwrap_or(base.spin_period),
            key_ttl: self.key_ttl.map(n).unwrap_or(base.key_ttl),
        }
    }

    fn validate(&self, path: &str, p: &mut Problems) {
        if self.spin_cycles == Some(0) {
            p.push(format!("{path}.spin_cycles"), "must be at least 1");
        }
        if self.key_ttl == Some(Duration::ZERO) {
            p.push(format!("{path}.key_ttl"), "must be more than 0");
        }
        if path != "engine" {
            if self.max_clusters.is_some() {
                p.push(
                    format!("{path}.max_clusters"),
                    "only in [engine]: the caps are for all clusters together",
                );
            }
            if self.max_keys.is_some() {
                p.push(
                    format!("{path}.max_keys"),
                    "only in [engine]: the caps are for all clusters together",
                );
            }
        }
        if self.max_clusters == Some(0) {
            p.push(format!("{path}.max_clusters"), "must be at least 1");
        }
        if self.max_keys == Some(0) {
            p.push(format!("{path}.max_keys"), "must be at least 1");
        }
    }

    fn limits(&self) -> Limits {
        let d = Limits::default();
        Limits {
            max_clusters: self.max_clusters.unwrap_or(d.max_clusters),
            max_keys: self.max_keys.unwrap_or(d.max_keys),
        }
    }
}

/// Why a config could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{} problem(s) in {}:\n{}", .problems.0.len(), .path.display(), list(&.problems.0))]
    Invalid { path: PathBuf, problems: Problems },
}

fn list(problems: &[Problem]) -> String {
    problems.iter().map(|p| format!("  {p}")).collect::<Vec<_>>().join("\n")
}

/// Where `${NAME}` values come from. A trait, so tests never touch the process environment.
pub trait Env {
    fn var(&self, name: &str) -> Option<String>;
}

/// The process environment.
pub struct ProcessEnv;

impl Env for ProcessEnv {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
}

impl Env for BTreeMap<String, String> {
    fn var(&self, name: &str) -> Option<String> {
        self.get(name).cloned()
    }
}

/// Reads and validates a config file.
pub fn load(path: &Path, env: &dyn Env) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|source| ConfigError::Io { path: path.to_path_buf(), source })?;
    parse(&text, env)
        .map_err(|problems| ConfigError::Invalid { path: path.to_path_buf(), problems })
}

/// Parses and validates config text.
pub fn parse(text: &str, env: &dyn Env) -> Result<Config, Problems> {
    let mut p = Problems::default();
    let mut root: toml::Table = match text.parse() {
        Ok(t) => t,
        Err(e) => {
            p.push("(file)", format!("not valid TOML: {}", e.to_string().trim_end()));
            return Err(p);
        }
    };
    for (key, value) in root.iter_mut() {
        substitute(value, key, env, &mut p);
    }

    let engine = root.remove("engine");
    let clusters = root.remove("clusters");
    let server = root.remove("server");
    let state = root.remove("state");
    let sources = root.remove("sources");
    let sinks = root.remove("sinks");
    let mut severities = Severities {
        kinds: root
            .remove("severities")
            .map(|v| severity_table(v, "severities", &mut p))
            .unwrap_or_default(),
        clusters: BTreeMap::new(),
    };
    for key in root.keys() {
        p.push(
            key.clone(),
            "unknown key (expected engine, clusters, server, state, sources, sinks, severities)",
        );
    }

    let engine_section: EngineSection = match engine {
        Some(v) => section(v, "engine", &mut p).unwrap_or_default(),
        None => EngineSection::default(),
    };
    engine_section.validate("engine", &mut p);
    let defaults = engine_section.apply(Params::default());
    let limits = engine_section.limits();
    let mut engine = EngineConfig { defaults, clusters: Default::default(), limits };
    for (name, table) in named_tables(clusters, "clusters", &mut p) {
        let path = format!("clusters.{name}");
        let toml::Value::Table(mut t) = table else {
            continue;
        };
        let overrides = t.remove("engine");
        if let Some(v) = t.remove("severities") {
            let table = severity_table(v, &format!("{path}.severities"), &mut p);
            severities.clusters.insert(name.clone(), table);
        }
        for key in t.keys() {
            p.push(format!("{path}.{key}"), "unknown key (expected engine, severities)");
        }
        if let Some(v) = overrides {
            let path = format!("{path}.engine");
            if let Some(s) = section::<EngineSection>(v, &path, &mut p) {
                s.validate(&path, &mut p);
                engine.clusters.insert(name, s.apply(defaults));
            }
        }
    }

    let server: ServerConfig = match server {
        Some(v) => section(v, "server", &mut p).unwrap_or_default(),
        None => ServerConfig::default(),
    };
    server.validate(&mut p);
    let state: StateConfig = match state {
        Some(v) => section(v, "state", &mut p).unwrap_or_default(),
        None => StateConfig::default(),
    };

    let mut source_map = BTreeMap::new();
    for (name, table) in named_tables(sources, "sources", &mut p) {
        let path = format!("sources.{name}");
        let Some((kind, table)) = take_type(table, &path, &mut p) else {
            continue;
        };
        if let Some(s) = sources::parse(&kind, table, &path, &mut p) {
            source_map.insert(name, s);
        }
    }
    let mut sink_map = BTreeMap::new();
    for (name, table) in named_tables(sinks, "sinks", &mut p) {
        let path = format!("sinks.{name}");
        let Some((kind, table)) = take_type(table, &path, &mut p) else {
            continue;
        };
        let toml::Value::Table(mut t) = table else {
            continue;
        };
        let buffer = sinks::buffer::parse_buffer(t.remove("buffer"), &path, &mut p);
        let kind = sinks::parse(&kind, toml::Value::Table(t), &path, &mut p);
        if let (Some(kind), Some(buffer)) = (kind, buffer) {
            sink_map.insert(name, SinkConfig { kind, buffer });
        }
    }

    for (name, sink) in &sink_map {
        if sink.buffer.kind == sinks::BufferKind::Disk
            && sink.buffer.dir.is_none()
            && state.dir.is_none()
        {
            p.push(
                format!("sinks.{name}.buffer.dir"),
                "missing: a disk buffer needs a dir, or [state] dir to put it under",
            );
        }
    }

    // Each instance in a group owns the clusters of its partitions: a record from anywhere
    // else would give a cluster a second engine on another instance (DESIGN §10).
    #[cfg(feature = "kafka")]
    if let Some(grouped) =
        source_map.iter().find(|(_, s)| matches!(s, SourceKind::Kafka(_))).map(|(n, _)| n.clone())
    {
        for name in source_map.keys().filter(|n| **n != grouped) {
            p.push(
                format!("sources.{name}"),
                format!("sources.{grouped} reads a Kafka consumer group, and an instance in a group takes no other source"),
            );
        }
        // One transaction holds a commit's events, entries and offsets: on one Kafka.
        if let Some(SourceKind::Kafka(k)) = source_map.get(&grouped) {
            if k.processing == crate::sources::kafka::Processing::ExactlyOnce {
                for (name, sink) in &sink_map {
                    if let sinks::SinkKind::Kafka(s) = &sink.kind {
                        if s.brokers != k.brokers {
                            p.push(
                                format!("sinks.{name}.brokers"),
                                format!("with sources.{grouped}.processing = \"exactly_once\" a kafka sink writes in the source's transactions, so it takes the source's brokers ({})", k.brokers.as_deref().unwrap_or("")),
                            );
                        }
                        if sink.buffer.kind == sinks::BufferKind::Disk {
                            p.push(
                                format!("sinks.{name}.buffer.type"),
                                "exactly once: a kafka sink's events go in the source's transactions, not through a buffer",
                            );
                        }
                    }
                }
            }
        }
    }

    // An edge runs no engine (DESIGN §10): there are no events for another sink to take.
    if sink_map.values().any(|s| s.kind.raw()) {
        for (name, sink) in &sink_map {
            if !sink.kind.raw() {
                p.push(
                    format!("sinks.{name}.type"),
                    "a kafka sink with encoding = \"raw\" makes this an edge, which forwards records and emits no events: every sink must be a raw kafka sink",
                );
            } else if sink.buffer.kind == sinks::BufferKind::Disk {
                p.push(
                    format!("sinks.{name}.buffer.type"),
                    "a raw kafka sink takes no disk buffer: a source's position moves only once Kafka holds its records, so the source itself keeps what Kafka does not have yet",
                );
            }
        }
    }

    // The sources' routes share the server: one path, one source.
    let mut paths: BTreeMap<&str, &str> = BTreeMap::new();
    for (name, source) in &source_map {
        let SourceKind::Http(http) = source else { continue };
        match paths.get(http.path.as_str()) {
            Some(first) => p.push(
                format!("sources.{name}.path"),
                format!(
                    "{:?} is already the path of sources.{first}: give each http source its own",
                    http.path
                ),
            ),
            None => {
                paths.insert(&http.path, name);
            }
        }
    }

    let has_http = !paths.is_empty();
    if has_http
        && !server.listen.ip().is_loopback()
        && server.ingest_token.as_deref().unwrap_or("").is_empty()
    {
        p.push("server.ingest_token", "missing: required for /ingest when listen is not loopback");
    }

    if p.0.is_empty() {
        Ok(Config { engine, server, state, sources: source_map, sinks: sink_map, severities })
    } else {
        Err(p)
    }
}

/// `[severities]`: kind = word. A kind may be written quoted (`"node.down" = "high"`) or as
/// TOML's dotted key (`node.down = "high"`), which is a nested table.
fn severity_table(
    value: toml::Value,
    path: &str,
    p: &mut Problems,
) -> BTreeMap<EventKind, Severity> {
    fn flatten(prefix: &str, value: toml::Value, out: &mut Vec<(String, toml::Value)>) {
        match value {
            toml::Value::Table(t) => {
                for (k, v) in t {
                    let key = if prefix.is_empty() { k } else { format!("{prefix}.{k}") };
                    flatten(&key, v, out);
                }
            }
            other => out.push((prefix.to_string(), other)),
        }
    }
    let mut out = BTreeMap::new();
    if !value.is_table() {
        p.push(path, "must be a table of kind = severity");
        return out;
    }
    let mut pairs = Vec::new();
    flatten("", value, &mut pairs);
    for (key, v) in pairs {
        let kind = serde_json::from_value::<EventKind>(serde_json::Value::String(key.clone()));
        let Ok(kind) = kind else {
            p.push(
                format!("{path}.{key}"),
                "not a kind of event (cluster.leaderless, node.down, …)",
            );
            continue;
        };
        let word = v.as_str().map(|w| serde_json::Value::String(w.to_string()));
        match word.and_then(|w| serde_json::from_value::<Severity>(w).ok()) {
            Some(s) => {
                out.insert(kind, s);
            }
            None => p.push(format!("{path}.{key}"), "must be critical, high, warning or info"),
        }
    }
    out
}

/// The tables under `[sources]`, `[sinks]` or `[clusters]`, by name.
fn named_tables(
    value: Option<toml::Value>,
    path: &str,
    p: &mut Problems,
) -> Vec<(String, toml::Value)> {
    match value {
        None => Vec::new(),
        Some(toml::Value::Table(t)) => t
            .into_iter()
            .filter_map(|(name, v)| {
                if v.is_table() {
                    Some((name, v))
                } else {
                    p.push(format!("{path}.{name}"), "must be a table");
                    None
                }
            })
            .collect(),
        Some(_) => {
            p.push(path, "must be a table of named tables");
            Vec::new()
        }
    }
}

fn take_type(table: toml::Value, path: &str, p: &mut Problems) -> Option<(String, toml::Value)> {
    let toml::Value::Table(mut t) = table else {
        return None;
    };
    match t.remove("type") {
        Some(toml::Value::String(kind)) => Some((kind, toml::Value::Table(t))),
        Some(_) => {
            p.push(format!("{path}.type"), "must be a string");
            None
        }
        None => {
            p.push(format!("{path}.type"), "missing");
            None
        }
    }
}

/// Replaces `${NAME}` and `${NAME:-default}` in every string; `$$` is a literal `$`.
fn substitute(value: &mut toml::Value, path: &str, env: &dyn Env, p: &mut Problems) {
    match value {
        toml::Value::String(s) if s.contains('$') => match expand(s, env) {
            Ok(out) => *s = out,
            Err(msg) => p.push(path, msg),
        },
        toml::Value::Array(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                substitute(item, &format!("{path}[{i}]"), env, p);
            }
        }
        toml::Value::Table(t) => {
            for (k, v) in t.iter_mut() {
                substitute(v, &format!("{path}.{k}"), env, p);
            }
        }
        _ => {}
    }
}

fn expand(s: &str, env: &dyn Env) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(body) = after.strip_prefix('{') {
            let end = body.find('}').ok_or_else(|| "unclosed ${ in value".to_string())?;
            let expr = &body[..end];
            let (name, default) = match expr.split_once(":-") {
                Some((n, d)) => (n, Some(d)),
                None => (expr, None),
            };
            let valid =
                !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !valid {
                return Err(format!("${{{expr}}} is not a valid variable reference"));
            }
            match env.var(name).filter(|v| !v.is_empty()).or(default.map(str::to_string)) {
                Some(v) => out.push_str(&v),
                // The name is safe to print; the value never is.
                None => return Err(format!("environment variable {name} is not set")),
            }
            rest = &body[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests;
