//! Bytes to [`Observation`]s.
//!
//! A line is parsed once into a [`RawObject`]: its top-level fields as borrowed raw JSON, in
//! input order. Each format then reads only the fields it needs, so a field of a namespace we
//! pass over can never turn that record into an error, and key order never matters.
//!
//! Decoding never panics: every failure is a [`DecodeError`] carrying the line number.

pub mod generic;
pub mod openziti;

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::model::{clip, Observation, Timestamp, TimestampError};

/// Which format a source's lines are in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    /// A line with a `namespace` field is OpenZiti, one with a `signal` field is generic.
    #[default]
    Auto,
    Openziti,
    Generic,
}

/// What a source knows that its records do not say.
#[derive(Clone, Debug)]
pub struct Context {
    /// OpenZiti records carry no cluster name.
    pub cluster: String,
    /// The reporter of records without `event_src_id` (OpenZiti before v1.3).
    pub reporter: String,
    pub format: Format,
}

impl Context {
    pub fn new(cluster: impl Into<String>, reporter: impl Into<String>) -> Self {
        Context { cluster: cluster.into(), reporter: reporter.into(), format: Format::Auto }
    }
}

/// A successfully read record: something to observe, or something counted and passed over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decoded<'a> {
    Observation(Observation<'a>),
    Ignored(Ignored),
}

/// Why a well-formed record was passed over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ignored {
    /// connect, sdk, link, alert, … : not about cluster state.
    Namespace,
    /// A type herald does not track within a namespace it reads.
    EventType,
    /// Terminator `updated` and terminator `router-online`/`router-offline`.
    TerminatorDetail,
    /// An entity change of an entity type that is not a terminator.
    EntityType,
}

impl Ignored {
    pub fn as_str(self) -> &'static str {
        match self {
            Ignored::Namespace => "namespace",
            Ignored::EventType => "event_type",
            Ignored::TerminatorDetail => "terminator_detail",
            Ignored::EntityType => "entity_type",
        }
    }
}

/// A record that could not be decoded, with its line number.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {reason}")]
pub struct DecodeError {
    pub line: u64,
    pub reason: Reason,
}

/// What was wrong with a record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Reason {
    #[error("not valid UTF-8 (at byte {0})")]
    Utf8(usize),
    #[error("not JSON: {0}")]
    Json(String),
    #[error("not a JSON object")]
    NotObject,
    #[error("line is {0} bytes, over the limit")]
    TooLong(usize),
    #[error("nested more than {MAX_DEPTH} levels deep")]
    TooDeep,
    #[error("neither a `namespace` (OpenZiti) nor a `signal` (generic) field")]
    UnknownFormat,
    #[error("missing field `{0}`")]
    Missing(&'static str),
    #[error("field `{field}` is not {expected}")]
    Mistyped { field: &'static str, expected: &'static str },
    #[error("field `{field}`: {why}")]
    Invalid { field: &'static str, why: String },
    #[error("field `{0}` appears twice")]
    Duplicate(String),
    #[error("field `{field}`: {source}")]
    Timestamp { field: &'static str, source: TimestampError },
}

/// Decodes one line (without its newline). `line` is its 1-based number, for errors.
pub fn decode_line<'a>(
    bytes: &'a [u8],
    line: u64,
    ctx: &'a Context,
) -> Result<Decoded<'a>, DecodeError> {
    decode_inner(bytes, ctx).map_err(|reason| DecodeError { line, reason })
}

fn decode_inner<'a>(bytes: &'a [u8], ctx: &'a Context) -> Result<Decoded<'a>, Reason> {
    let text = std::str::from_utf8(bytes).map_err(|e| Reason::Utf8(e.valid_up_to()))?;
    if too_deep(bytes) {
        return Err(Reason::TooDeep);
    }
    let obj = RawObject::parse(text)?;
    match ctx.format {
        Format::Openziti => openziti::decode(&obj, ctx),
        Format::Generic => generic::decode(&obj),
        Format::Auto => {
            if obj.has("namespace") {
                openziti::decode(&obj, ctx)
            } else if obj.has("signal") {
                generic::decode(&obj)
            } else {
                Err(Reason::UnknownFormat)
            }
        }
    }
}

/// No controller event nests anywhere near this deep; a record that does is hostile or broken.
pub const MAX_DEPTH: usize = 128;

/// Whether brackets outside strings nest deeper than [`MAX_DEPTH`]. serde_json skips the
/// values we do not read without a depth limit, so the limit is enforced here. Counting
/// brackets first (vectorized) keeps the exact scan off the path of ordinary lines.
fn too_deep(bytes: &[u8]) -> bool {
    if memchr::memchr2_iter(b'{', b'[', bytes).count() <= MAX_DEPTH {
        return false;
    }
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for &b in bytes {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'{' | b'[' => {
                depth += 1;
                if depth > MAX_DEPTH {
                    return true;
                }
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    false
}

/// Declares the fields any decoder reads, once. serde's derive turns them into a single
/// key-matching state machine: duplicate keys are caught by it, unknown keys are skipped
/// without being looked at, and each known value is kept as raw JSON for the decoder to
/// read (or not) with its own error message.
macro_rules! known_fields {
    ($($field:ident => $name:literal),* $(,)?) => {
        /// A JSON object's known fields, each kept as borrowed raw JSON (`null` included, so
        /// that "present but null" differs from "absent").
        #[derive(Deserialize, Default)]
        pub struct RawObject<'a> {
            $(
                #[serde(rename = $name, default, borrow, deserialize_with = "present")]
                $field: Option<&'a RawValue>,
            )*
        }

        impl<'a> RawObject<'a> {
            const NAMES: &'static [&'static str] = &[$($name),*];

            #[inline]
            fn field(&self, name: &str) -> Option<&'a RawValue> {
                match name {
                    $( $name => self.$field, )*
                    _ => None,
                }
            }
        }
    };
}

known_fields! {
    // OpenZiti
    namespace => "namespace",
    event_type_camel => "eventType",
    event_type => "event_type",
    event_src_id => "event_src_id",
    timestamp => "timestamp",
    leader_id => "leaderId",
    index => "index",
    peers => "peers",
    router_id => "router_id",
    service_id => "service_id",
    host_id => "host_id",
    event_id => "eventId",
    entity_type_camel => "entityType",
    final_state => "finalState",
    initial_state => "initialState",
    id => "id",
    service => "service",
    router => "router",
    host_id_camel => "hostId",
    // generic
    ts => "ts",
    cluster => "cluster",
    reporter => "reporter",
    signal => "signal",
    leader => "leader",
    is_leader => "is_leader",
    peer => "peer",
    connected => "connected",
    members => "members",
    read_only => "read_only",
    node => "node",
    online => "online",
    via => "via",
    down_after => "down_after",
    up_after => "up_after",
    entity_type => "entity_type",
    entity_id => "entity_id",
    slot => "slot",
    op => "op",
    host => "host",
}

fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<&'de RawValue>, D::Error> {
    <&'de RawValue>::deserialize(d).map(Some)
}

impl<'a> RawObject<'a> {
    pub fn parse(text: &'a str) -> Result<Self, Reason> {
        // serde's derive also reads a struct from a JSON array; a record must be an object.
        if !text.trim_start().starts_with('{') {
            return Err(match serde_json::from_str::<serde::de::IgnoredAny>(text) {
                Ok(_) => Reason::NotObject,
                Err(e) => Reason::Json(json_error(&e)),
            });
        }
        let mut de = serde_json::Deserializer::from_str(text);
        let obj = RawObject::deserialize(&mut de).map_err(|e| object_error(&e))?;
        de.end().map_err(|e| Reason::Json(json_error(&e)))?;
        Ok(obj)
    }

    pub fn has(&self, name: &'static str) -> bool {
        self.get(name).is_some()
    }

    /// The raw value of `name`. Only names declared in `known_fields!` are ever present;
    /// a key given twice was already refused by the parse.
    pub fn get(&self, name: &'static str) -> Option<&'a RawValue> {
        debug_assert!(Self::NAMES.contains(&name), "`{name}` is not in known_fields!");
        self.field(name)
    }

    /// A string field; JSON `null` counts as absent.
    pub fn opt_str(&self, name: &'static str) -> Result<Option<Cow<'a, str>>, Reason> {
        match self.get(name) {
            None => Ok(None),
            Some(raw) => raw_opt_str(raw, name),
        }
    }

    pub fn req_str(&self, name: &'static str) -> Result<Cow<'a, str>, Reason> {
        self.opt_str(name)?.ok_or(Reason::Missing(name))
    }

    /// A string field that must also be non-empty (ids).
    pub fn req_id(&self, name: &'static str) -> Result<Cow<'a, str>, Reason> {
        let s = self.req_str(name)?;
        if s.is_empty() {
            return Err(Reason::Invalid { field: name, why: "empty".into() });
        }
        Ok(s)
    }

    pub fn req_bool(&self, name: &'static str) -> Result<bool, Reason> {
        let raw = self.get(name).ok_or(Reason::Missing(name))?;
        serde_json::from_str::<bool>(raw.get())
            .map_err(|_| Reason::Mistyped { field: name, expected: "a boolean" })
    }

    pub fn req_u64(&self, name: &'static str) -> Result<u64, Reason> {
        let raw = self.get(name).ok_or(Reason::Missing(name))?;
        serde_json::from_str::<u64>(raw.get())
            .map_err(|_| Reason::Mistyped { field: name, expected: "a non-negative integer" })
    }

    pub fn req_time(&self, name: &'static str) -> Result<Timestamp, Reason> {
        let s = self.req_str(name)?;
        Timestamp::parse(&s).map_err(|source| Reason::Timestamp { field: name, source })
    }
}

/// Sorts a failed object parse into "not an object", "a key twice" or plain bad JSON.
fn object_error(e: &serde_json::Error) -> Reason {
    if e.classify() != serde_json::error::Category::Data {
        return Reason::Json(json_error(e));
    }
    let msg = e.to_string();
    if let Some(rest) = msg.strip_prefix("duplicate field `") {
        if let Some(end) = rest.find('`') {
            return Reason::Duplicate(rest[..end].to_string());
        }
    }
    Reason::NotObject
}

/// Reads a raw value as a string (or null), borrowing when it has no escapes.
pub(crate) fn raw_opt_str<'a>(
    raw: &'a RawValue,
    field: &'static str,
) -> Result<Option<Cow<'a, str>>, Reason> {
    let mistyped = || Reason::Mistyped { field, expected: "a string" };
    let text = raw.get();
    if text == "null" {
        return Ok(None);
    }
    let mut de = serde_json::Deserializer::from_str(text);
    let s = de.deserialize_any(StrVisitor).map_err(|_| mistyped())?;
    Ok(Some(s))
}

/// Reads a raw JSON array into its elements, still raw.
pub(crate) fn raw_array<'a>(
    raw: &'a RawValue,
    field: &'static str,
) -> Result<Vec<&'a RawValue>, Reason> {
    serde_json::from_str::<Vec<&'a RawValue>>(raw.get())
        .map_err(|_| Reason::Mistyped { field, expected: "an array" })
}

/// Reads a raw JSON object into its fields.
pub(crate) fn raw_object<'a>(
    raw: &'a RawValue,
    field: &'static str,
) -> Result<RawObject<'a>, Reason> {
    RawObject::parse(raw.get()).map_err(|_| Reason::Mistyped { field, expected: "an object" })
}

fn json_error(e: &serde_json::Error) -> String {
    // serde_json reports line 1 for a single line; the column is what helps.
    let msg = e.to_string();
    match msg.find(" at line ") {
        Some(i) => format!("{} (column {})", &msg[..i], e.column()),
        None => msg,
    }
}

struct StrVisitor;

impl<'de> Visitor<'de> for StrVisitor {
    type Value = Cow<'de, str>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string")
    }

    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Cow::Borrowed(v))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v.to_string()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v))
    }
}

/// A short, safe rendering of an offending value for error messages.
pub(crate) fn show(raw: &RawValue) -> String {
    clip(raw.get())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> Context {
        Context::new("prod", "unknown")
    }

    fn err(line: &[u8]) -> Reason {
        let c = ctx();
        match decode_line(line, 7, &c) {
            Err(e) => {
                assert_eq!(e.line, 7);
                e.reason
            }
            Ok(d) => panic!("decoded {d:?}"),
        }
    }

    #[test]
    fn malformed_lines_are_errors_with_their_line_number() {
        assert!(matches!(err(b"{"), Reason::Json(_)));
        assert!(matches!(err(b"not json"), Reason::Json(_)));
        assert!(matches!(err(b"[1,2]"), Reason::NotObject));
        assert!(matches!(err(b"\"x\""), Reason::NotObject));
        assert!(matches!(err(b"{} {}"), Reason::Json(_)));
        assert!(matches!(err(b"{\"a\":1}"), Reason::UnknownFormat));
        assert!(matches!(err(b"{\"namespace\":\"cluster\xff\"}"), Reason::Utf8(21)));
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_stack_overflow() {
        let mut line = String::from("{\"namespace\":\"cluster\",\"x\":");
        line.push_str(&"[".repeat(5000));
        line.push_str(&"]".repeat(5000));
        line.push('}');
        assert_eq!(err(line.as_bytes()), Reason::TooDeep);
        let objs = "{\"a\":".repeat(5000) + "1" + &"}".repeat(5000);
        assert_eq!(err(objs.as_bytes()), Reason::TooDeep);
        // Brackets inside strings are text, not nesting.
        let text = format!(
            r#"{{"namespace":"cluster","eventType":"state.rw","timestamp":"2024-01-01T00:00:00Z","note":"{}"}}"#,
            "[{".repeat(5000)
        );
        let c = ctx();
        assert!(decode_line(text.as_bytes(), 1, &c).is_ok());
        let wide = format!(r#"{{"signal":"x","a":[{}]}}"#, vec!["[]"; 5000].join(","));
        assert!(decode_line(wide.as_bytes(), 1, &c).is_ok(), "many brackets, shallow");
    }

    #[test]
    fn junk_of_100_kb_is_an_error() {
        let junk: Vec<u8> = (0..100_000u32).map(|i| (i * 7919 % 251) as u8).collect();
        let c = ctx();
        assert!(decode_line(&junk, 3, &c).is_err());
        let ascii = "x".repeat(100_000);
        assert!(decode_line(ascii.as_bytes(), 3, &c).is_err());
    }

    #[test]
    fn duplicate_fields_are_errors() {
        let line = br#"{"namespace":"router","namespace":"cluster","timestamp":"2025-01-10T13:54:44Z","eventType":"state.is_leaderless"}"#;
        assert_eq!(err(line), Reason::Duplicate("namespace".into()));
    }
}
