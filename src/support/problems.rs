//! Config problems with their key paths, and reading one config section so that every
//! problem in it is reported at once.
//!
//! A leaf: every source and sink reads its own section with [`section`], and the config
//! module gathers them, so none of them has to import the config module.

use std::fmt;
use std::time::Duration;

use serde::de::DeserializeOwned;

/// One problem, at its key path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    pub path: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// Problems collected while reading a config.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Problems(pub Vec<Problem>);

impl Problems {
    pub fn push(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(Problem { path: path.into(), message: message.into() });
    }

    /// Records `table.key: missing` unless `present`; returns `present`.
    pub fn require(&mut self, table: &str, key: &str, present: bool) -> bool {
        let path = format!("{table}.{key}");
        // A key that failed to read is absent now; its first problem already says why.
        if !present && !self.0.iter().any(|p| p.path == path) {
            self.push(path, "missing");
        }
        present
    }

    pub fn positive(&mut self, table: &str, key: &str, d: Duration) -> bool {
        if d.is_zero() {
            self.push(format!("{table}.{key}"), "must be more than 0");
        }
        !d.is_zero()
    }

    /// A `type` whose feature this herald was built without: said as such, not as unknown.
    /// Always `None`, the section's value.
    #[cfg(not(all(feature = "kafka", feature = "nats", feature = "amqp", feature = "otlp")))]
    pub(crate) fn not_built<T>(&mut self, path: &str, kind: &str) -> Option<T> {
        self.push(
            format!("{path}.type"),
            format!("this herald was built without {kind:?} (cargo feature `{kind}`)"),
        );
        None
    }

    pub fn at_least_one(&mut self, table: &str, key: &str, n: u32) -> bool {
        if n == 0 {
            self.push(format!("{table}.{key}"), "must be at least 1");
        }
        n > 0
    }
}

/// Deserializes one section, recording every unknown key and every type error in it.
///
/// serde stops at the first error; to report them all, the offending key is taken out and
/// the section read again, until it reads or nothing more can be taken out.
pub fn section<T: DeserializeOwned>(
    mut value: toml::Value,
    path: &str,
    p: &mut Problems,
) -> Option<T> {
    let mut unknown = std::collections::BTreeSet::new();
    let mut failed = false;
    for _ in 0..64 {
        let result: Result<T, _> = {
            let mut on_unknown = |key: serde_ignored::Path<'_>| {
                unknown.insert(key.to_string());
            };
            let de = serde_ignored::Deserializer::new(value.clone(), &mut on_unknown);
            serde_path_to_error::deserialize(de)
        };
        match result {
            Ok(v) => {
                for key in &unknown {
                    p.push(join(path, key), "unknown key");
                }
                return (!failed).then_some(v);
            }
            Err(e) => {
                failed = true;
                let segments: Vec<String> = e.path().iter().map(|s| s.to_string()).collect();
                let at = segments.join(".");
                let msg = e.into_inner().to_string();
                // toml appends "in `key`" lines; the key path already says where.
                let msg = msg.lines().next().unwrap_or("").to_string();
                p.push(join(path, &at), msg);
                if segments.is_empty() || !remove_path(&mut value, &segments) {
                    break;
                }
            }
        }
    }
    for key in &unknown {
        p.push(join(path, key), "unknown key");
    }
    None
}

/// Removes the value at `segments` (table keys or array indexes); false if there is none.
fn remove_path(value: &mut toml::Value, segments: &[String]) -> bool {
    let Some((last, parents)) = segments.split_last() else {
        return false;
    };
    let mut v = value;
    for seg in parents {
        v = match v {
            toml::Value::Table(t) => match t.get_mut(seg) {
                Some(next) => next,
                None => return false,
            },
            toml::Value::Array(a) => match seg.parse::<usize>().ok().and_then(|i| a.get_mut(i)) {
                Some(next) => next,
                None => return false,
            },
            _ => return false,
        };
    }
    match v {
        toml::Value::Table(t) => t.remove(last).is_some(),
        toml::Value::Array(a) => match last.parse::<usize>() {
            Ok(i) if i < a.len() => {
                a.remove(i);
                true
            }
            _ => false,
        },
        _ => false,
    }
}

fn join(path: &str, key: &str) -> String {
    if key.is_empty() {
        path.to_string()
    } else {
        format!("{path}.{key}")
    }
}
