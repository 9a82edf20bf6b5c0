//! The two shapes data takes inside herald.
//!
//! An [`Observation`] is one decoded input record: who reported what about which part of a
//! cluster, and when. A [`ClusterEvent`] is one normalized output event (`herald.v1`), the body
//! every sink carries. Between them sits the engine.
//!
//! Time is a [`Timestamp`]: nanoseconds since the Unix epoch in UTC. Integers keep the engine's
//! arithmetic exact, so a window edge can be tested to the nanosecond.

use std::borrow::Cow;
use std::fmt;

use chrono::DateTime;
#[cfg(test)]
use chrono::{SecondsFormat, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest, Sha256};

/// The schema tag every event carries.
pub const SCHEMA: &str = "herald.v1";

/// A point in time, in nanoseconds since the Unix epoch (UTC).
///
/// `i64` nanoseconds cover the years 1677 to 2262, which every record of a running control
/// plane falls in; a timestamp outside that range is a decode error, not a wrap-around.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp(pub i64);

/// Why a timestamp string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TimestampError {
    #[error("not an RFC 3339 timestamp: {0:?}")]
    Syntax(String),
    #[error("more than 9 fractional digits in {0:?}")]
    TooPrecise(String),
    #[error("timestamp {0:?} is outside the years 1677 to 2262")]
    OutOfRange(String),
}

impl Timestamp {
    pub const MIN: Timestamp = Timestamp(i64::MIN);
    pub const MAX: Timestamp = Timestamp(i64::MAX);

    /// Parses RFC 3339 with 0 to 9 fractional digits and any offset.
    pub fn parse(s: &str) -> Result<Timestamp, TimestampError> {
        if fraction_digits(s) > 9 {
            return Err(TimestampError::TooPrecise(clip(s)));
        }
        let dt = DateTime::parse_from_rfc3339(s).map_err(|_| TimestampError::Syntax(clip(s)))?;
        dt.timestamp_nanos_opt().map(Timestamp).ok_or_else(|| TimestampError::OutOfRange(clip(s)))
    }

    pub fn from_unix_nanos(nanos: i64) -> Timestamp {
        Timestamp(nanos)
    }

    pub fn as_unix_nanos(self) -> i64 {
        self.0
    }

    /// `self + d`, saturating instead of overflowing near the end of representable time.
    pub fn saturating_add(self, d: Nanos) -> Timestamp {
        Timestamp(self.0.saturating_add(d.0))
    }

    pub fn saturating_sub(self, other: Timestamp) -> Nanos {
        Nanos(self.0.saturating_sub(other.0))
    }

    /// RFC 3339 in UTC with exactly nine fractional digits and `Z`, as every event carries.
    pub fn to_rfc3339(self) -> String {
        self.rfc3339().as_str().to_string()
    }

    /// [`Timestamp::to_rfc3339`] without an allocation: every event carries several, and a
    /// general formatter was a visible share of the pipeline's time.
    pub fn rfc3339(self) -> Rfc3339 {
        const NANOS: i64 = 1_000_000_000;
        let (secs, nanos) = (self.0.div_euclid(NANOS), self.0.rem_euclid(NANOS));
        let (days, of_day) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
        // Days to a civil date (H. Hinnant's algorithm), exact for the whole i64 range.
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z.rem_euclid(146_097);
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = doy - (153 * mp + 2) / 5 + 1;
        let month = if mp < 10 { mp + 3 } else { mp - 9 };
        let year = yoe + era * 400 + i64::from(month <= 2);
        let mut b = *b"0000-00-00T00:00:00.000000000Z";
        let mut put = |at: usize, width: usize, mut v: i64| {
            for i in (at..at + width).rev() {
                b[i] = b'0' + (v % 10) as u8;
                v /= 10;
            }
        };
        put(0, 4, year);
        put(5, 2, month);
        put(8, 2, day);
        put(11, 2, of_day / 3600);
        put(14, 2, of_day / 60 % 60);
        put(17, 2, of_day % 60);
        put(20, 9, nanos);
        Rfc3339(b)
    }
}

/// A formatted [`Timestamp`], on the stack.
#[derive(Clone, Copy)]
pub struct Rfc3339([u8; 30]);

impl Rfc3339 {
    pub fn as_str(&self) -> &str {
        // Only ASCII digits and separators are ever written.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.rfc3339().as_str())
    }
}

/// RFC 3339 in human-readable formats (events), plain nanoseconds in binary ones (snapshots).
impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            s.serialize_str(self.rfc3339().as_str())
        } else {
            s.serialize_i64(self.0)
        }
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        if d.is_human_readable() {
            let s = Cow::<str>::deserialize(d)?;
            Timestamp::parse(&s).map_err(serde::de::Error::custom)
        } else {
            i64::deserialize(d).map(Timestamp)
        }
    }
}

/// A span of engine time in nanoseconds.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
pub struct Nanos(pub i64);

impl Nanos {
    pub const ZERO: Nanos = Nanos(0);

    pub fn from_std(d: std::time::Duration) -> Nanos {
        Nanos(i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
    }

    pub fn to_std(self) -> std::time::Duration {
        std::time::Duration::from_nanos(u64::try_from(self.0).unwrap_or(0))
    }
}

/// Counts the digits after the seconds' decimal point; chrono accepts any number of them,
/// the contract accepts at most nine.
fn fraction_digits(s: &str) -> usize {
    let b = s.as_bytes();
    // "YYYY-MM-DDTHH:MM:SS" is 19 bytes; a fraction, if any, starts right after it.
    if b.len() > 19 && b[19] == b'.' {
        b[20..].iter().take_while(|c| c.is_ascii_digit()).count()
    } else {
        0
    }
}

/// Keeps error messages short when the offending input is large.
pub(crate) fn clip(s: &str) -> String {
    const MAX: usize = 64;
    if s.len() <= MAX {
        return s.to_string();
    }
    let mut end = MAX;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// One decoded input record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Observation<'a> {
    pub cluster: Cow<'a, str>,
    /// The node that reported the record (OpenZiti's `event_src_id`, the generic `reporter`,
    /// an etcd member, or the probe source).
    pub reporter: Cow<'a, str>,
    /// The record's own time.
    pub at: Timestamp,
    pub signal: Signal<'a>,
}

impl Observation<'_> {
    pub fn into_owned(self) -> Observation<'static> {
        Observation {
            cluster: Cow::Owned(self.cluster.into_owned()),
            reporter: Cow::Owned(self.reporter.into_owned()),
            at: self.at,
            signal: self.signal.into_owned(),
        }
    }
}

/// Where a liveness verdict on a node came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Via {
    Probe,
    Peers,
    Poll,
}

impl Via {
    pub fn as_str(self) -> &'static str {
        match self {
            Via::Probe => "probe",
            Via::Peers => "peers",
            Via::Poll => "poll",
        }
    }
}

/// A terminator slot: the place a terminator occupies, whatever its id.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub struct Slot<'a> {
    pub service: Cow<'a, str>,
    pub router: Cow<'a, str>,
    /// Empty when the record names no host.
    pub host: Cow<'a, str>,
}

impl Slot<'_> {
    pub fn into_owned(self) -> Slot<'static> {
        Slot {
            service: Cow::Owned(self.service.into_owned()),
            router: Cow::Owned(self.router.into_owned()),
            host: Cow::Owned(self.host.into_owned()),
        }
    }
}

/// A create or delete of an entity that occupies a slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum EntityOp {
    Created,
    Deleted,
}

/// What a record says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Signal<'a> {
    /// The reporter sees `leader` as the cluster's leader (`None`: it sees no leader).
    View { leader: Option<Cow<'a, str>> },
    /// The reporter became leader (`true`) or stopped being leader (`false`).
    SelfLeader { is_leader: bool },
    /// The reporter's connection to `peer`. `not_member` counts as disconnected.
    Peer { peer: Cow<'a, str>, connected: bool },
    /// The raft membership at a raft log index.
    Members { index: u64, members: Vec<Cow<'a, str>> },
    /// The reporter's store is read-only (`true`) or read-write.
    ReadOnly { read_only: bool },
    /// The reporter sees a router online or offline.
    Router { router: Cow<'a, str>, online: bool },
    /// One liveness check of `node`: a probe attempt, a poll, or a verdict from elsewhere.
    /// `down_after` consecutive failures make it down, `up_after` successes up again.
    NodeCheck { node: Cow<'a, str>, ok: bool, via: Via, down_after: u32, up_after: u32 },
    /// A created/deleted entity in a slot, applied now.
    Entity { op: EntityOp, slot: Slot<'a> },
    /// The first phase of a two-phase entity change; applied when `Commit` names its id.
    StagedEntity { event_id: Cow<'a, str>, op: EntityOp, slot: Slot<'a> },
    /// The second phase: apply the staged change with this id.
    Commit { event_id: Cow<'a, str> },
}

fn own(c: Cow<'_, str>) -> Cow<'static, str> {
    Cow::Owned(c.into_owned())
}

impl Signal<'_> {
    pub fn into_owned(self) -> Signal<'static> {
        match self {
            Signal::View { leader } => Signal::View { leader: leader.map(own) },
            Signal::SelfLeader { is_leader } => Signal::SelfLeader { is_leader },
            Signal::Peer { peer, connected } => Signal::Peer { peer: own(peer), connected },
            Signal::Members { index, members } => {
                Signal::Members { index, members: members.into_iter().map(own).collect() }
            }
            Signal::ReadOnly { read_only } => Signal::ReadOnly { read_only },
            Signal::Router { router, online } => Signal::Router { router: own(router), online },
            Signal::NodeCheck { node, ok, via, down_after, up_after } => {
                Signal::NodeCheck { node: own(node), ok, via, down_after, up_after }
            }
            Signal::Entity { op, slot } => Signal::Entity { op, slot: slot.into_owned() },
            Signal::StagedEntity { event_id, op, slot } => {
                Signal::StagedEntity { event_id: own(event_id), op, slot: slot.into_owned() }
            }
            Signal::Commit { event_id } => Signal::Commit { event_id: own(event_id) },
        }
    }
}

/// Every kind of event herald emits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum EventKind {
    #[serde(rename = "cluster.leader_elected")]
    LeaderElected,
    #[serde(rename = "cluster.leaderless")]
    Leaderless,
    #[serde(rename = "cluster.split_brain")]
    SplitBrain,
    #[serde(rename = "cluster.split_brain_resolved")]
    SplitBrainResolved,
    #[serde(rename = "cluster.read_only")]
    ReadOnly,
    #[serde(rename = "cluster.read_write")]
    ReadWrite,
    #[serde(rename = "cluster.members_changed")]
    MembersChanged,
    #[serde(rename = "node.has_leader")]
    NodeHasLeader,
    #[serde(rename = "node.is_leaderless")]
    NodeIsLeaderless,
    #[serde(rename = "peer.connected")]
    PeerConnected,
    #[serde(rename = "peer.disconnected")]
    PeerDisconnected,
    #[serde(rename = "router.online")]
    RouterOnline,
    #[serde(rename = "router.offline")]
    RouterOffline,
    #[serde(rename = "terminator.spin_started")]
    SpinStarted,
    #[serde(rename = "terminator.spin_stopped")]
    SpinStopped,
    #[serde(rename = "node.down")]
    NodeDown,
    #[serde(rename = "node.up")]
    NodeUp,
}

impl EventKind {
    pub const ALL: [EventKind; 17] = [
        EventKind::LeaderElected,
        EventKind::Leaderless,
        EventKind::SplitBrain,
        EventKind::SplitBrainResolved,
        EventKind::ReadOnly,
        EventKind::ReadWrite,
        EventKind::MembersChanged,
        EventKind::NodeHasLeader,
        EventKind::NodeIsLeaderless,
        EventKind::PeerConnected,
        EventKind::PeerDisconnected,
        EventKind::RouterOnline,
        EventKind::RouterOffline,
        EventKind::SpinStarted,
        EventKind::SpinStopped,
        EventKind::NodeDown,
        EventKind::NodeUp,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::LeaderElected => "cluster.leader_elected",
            EventKind::Leaderless => "cluster.leaderless",
            EventKind::SplitBrain => "cluster.split_brain",
            EventKind::SplitBrainResolved => "cluster.split_brain_resolved",
            EventKind::ReadOnly => "cluster.read_only",
            EventKind::ReadWrite => "cluster.read_write",
            EventKind::MembersChanged => "cluster.members_changed",
            EventKind::NodeHasLeader => "node.has_leader",
            EventKind::NodeIsLeaderless => "node.is_leaderless",
            EventKind::PeerConnected => "peer.connected",
            EventKind::PeerDisconnected => "peer.disconnected",
            EventKind::RouterOnline => "router.online",
            EventKind::RouterOffline => "router.offline",
            EventKind::SpinStarted => "terminator.spin_started",
            EventKind::SpinStopped => "terminator.spin_stopped",
            EventKind::NodeDown => "node.down",
            EventKind::NodeUp => "node.up",
        }
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How bad an event is for whoever is paged (DESIGN §11).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Info,
    Warning,
    High,
    Critical,
}

impl Severity {
    /// A kind's severity unless configured otherwise.
    pub fn of(kind: EventKind) -> Severity {
        match kind {
            EventKind::SplitBrain | EventKind::Leaderless => Severity::Critical,
            EventKind::NodeDown | EventKind::RouterOffline | EventKind::ReadOnly => Severity::High,
            EventKind::SpinStarted | EventKind::PeerDisconnected | EventKind::NodeIsLeaderless => {
                Severity::Warning
            }
            _ => Severity::Info,
        }
    }

    /// CEF's severity and ECS `event.severity` (0–10).
    pub fn number(self) -> u8 {
        match self {
            Severity::Critical => 10,
            Severity::High => 8,
            Severity::Warning => 5,
            Severity::Info => 3,
        }
    }

    /// The syslog severity (RFC 5424: 2 critical, 3 error, 4 warning, 6 informational).
    pub fn syslog(self) -> u8 {
        match self {
            Severity::Critical => 2,
            Severity::High => 3,
            Severity::Warning => 4,
            Severity::Info => 6,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }
}

/// The severity of each kind: the defaults of DESIGN §11, then `[severities]`, then a
/// cluster's `[clusters.NAME.severities]`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Severities {
    pub kinds: std::collections::BTreeMap<EventKind, Severity>,
    pub clusters:
        std::collections::BTreeMap<String, std::collections::BTreeMap<EventKind, Severity>>,
}

impl Severities {
    pub fn of(&self, cluster: &str, kind: EventKind) -> Severity {
        self.clusters
            .get(cluster)
            .and_then(|k| k.get(&kind))
            .or_else(|| self.kinds.get(&kind))
            .copied()
            .unwrap_or_else(|| Severity::of(kind))
    }
}

/// One normalized output event, schema `herald.v1`.
///
/// Field order follows the documented example; absent fields are omitted, never null.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterEvent {
    pub schema: Cow<'static, str>,
    pub id: String,
    pub kind: EventKind,
    pub cluster: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub router: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leader_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leaders: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub members: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub added: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub removed: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cycles: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub via: Option<Via>,
    pub at: Timestamp,
    pub stable_at: Timestamp,
    pub initial: bool,
    pub suppressed: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reporters: Option<Vec<String>>,
}

impl ClusterEvent {
    /// An event with only the fields every kind carries; the engine fills in the rest and
    /// then calls [`ClusterEvent::seal`].
    pub fn new(kind: EventKind, cluster: &str, at: Timestamp, stable_at: Timestamp) -> Self {
        ClusterEvent {
            schema: Cow::Borrowed(SCHEMA),
            id: String::new(),
            kind,
            cluster: cluster.to_string(),
            node: None,
            peer: None,
            service: None,
            router: None,
            host: None,
            leader_id: None,
            previous: None,
            leaders: None,
            members: None,
            added: None,
            removed: None,
            cycles: None,
            via: None,
            at,
            stable_at,
            initial: false,
            suppressed: 0,
            reporters: None,
        }
    }

    /// Computes the deterministic id over `subject` (the key's own parts).
    pub fn seal(mut self, subject: &[&str]) -> Self {
        self.id = event_id(&self.cluster, self.kind, subject, self.at);
        self
    }
}

/// Lowercase hex of the first 16 bytes of SHA-256 over `cluster`, `kind`, the subject (the
/// key's own parts joined by 0x1F) and `at` as formatted in the output, joined by 0x1F.
///
/// Stable across releases: consumers and JetStream deduplicate on it.
pub fn event_id(cluster: &str, kind: EventKind, subject: &[&str], at: Timestamp) -> String {
    const SEP: [u8; 1] = [0x1F];
    let mut h = Sha256::new();
    h.update(cluster.as_bytes());
    h.update(SEP);
    h.update(kind.as_str().as_bytes());
    h.update(SEP);
    for (i, part) in subject.iter().enumerate() {
        if i > 0 {
            h.update(SEP);
        }
        h.update(part.as_bytes());
    }
    h.update(SEP);
    h.update(at.rfc3339().as_str().as_bytes());
    let digest = h.finalize();
    let mut out = String::with_capacity(32);
    for b in &digest[..16] {
        out.push(hex_digit(b >> 4));
        out.push(hex_digit(b & 0x0F));
    }
    out
}

fn hex_digit(n: u8) -> char {
    char::from(if n < 10 { b'0' + n } else { b'a' + n - 10 })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A cluster's table wins over `[severities]`, which wins over the kind's default.
    #[test]
    fn severities_are_layered_cluster_then_global_then_default() {
        let mut s = Severities::default();
        s.kinds.insert(EventKind::RouterOnline, Severity::Warning);
        s.clusters.insert("prod".into(), [(EventKind::RouterOnline, Severity::High)].into());
        assert_eq!(s.of("prod", EventKind::RouterOnline), Severity::High);
        assert_eq!(s.of("dev", EventKind::RouterOnline), Severity::Warning);
        assert_eq!(s.of("prod", EventKind::NodeDown), Severity::High, "the default");
        assert_eq!(s.of("dev", EventKind::RouterOffline), Severity::High, "the default");
        assert_eq!(s.of("dev", EventKind::LeaderElected), Severity::Info, "the default");
    }

    proptest::proptest! {
        /// The hand-written formatter agrees with chrono over the whole representable range.
        #[test]
        fn rfc3339_matches_chrono(nanos in proptest::num::i64::ANY) {
            let chrono = DateTime::<Utc>::from_timestamp_nanos(nanos)
                .to_rfc3339_opts(SecondsFormat::Nanos, true);
            proptest::prop_assert_eq!(Timestamp(nanos).to_rfc3339(), chrono);
        }
    }

    #[test]
    fn rfc3339_at_the_edges() {
        for nanos in [i64::MIN, i64::MAX, 0, -1, 951_782_400_000_000_000, 4_107_542_399_999_999_999]
        {
            let chrono = DateTime::<Utc>::from_timestamp_nanos(nanos)
                .to_rfc3339_opts(SecondsFormat::Nanos, true);
            assert_eq!(Timestamp(nanos).to_rfc3339(), chrono);
        }
    }

    #[test]
    fn timestamps_accept_any_offset_and_up_to_nine_digits() {
        let a = Timestamp::parse("2025-01-10T13:54:48.151522421-05:00").unwrap();
        assert_eq!(a.to_rfc3339(), "2025-01-10T18:54:48.151522421Z");
        let b = Timestamp::parse("2025-01-10T18:54:48Z").unwrap();
        assert_eq!(b.to_rfc3339(), "2025-01-10T18:54:48.000000000Z");
        let c = Timestamp::parse("2021-01-08T16:26:08.0005535-05:00").unwrap();
        assert_eq!(c.to_rfc3339(), "2021-01-08T21:26:08.000553500Z");
        let d = Timestamp::parse("2025-01-10T18:54:48.1+02:30").unwrap();
        assert_eq!(d.to_rfc3339(), "2025-01-10T16:24:48.100000000Z");
    }

    #[test]
    fn timestamps_refuse_junk_and_excess_precision() {
        for bad in [
            "",
            "yesterday",
            "2025-01-10",
            "2025-01-10T18:54:48",
            "2025-13-10T18:54:48Z",
            "2025-01-10T18:54:48.1234567891Z",
            "3000-01-01T00:00:00Z",
        ] {
            assert!(Timestamp::parse(bad).is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn event_id_is_sha256_prefix_over_unit_separated_fields() {
        let at = Timestamp::parse("2025-01-10T18:54:48.151522421Z").unwrap();
        let id = event_id("prod", EventKind::LeaderElected, &[], at);
        let mut h = Sha256::new();
        h.update(b"prod\x1fcluster.leader_elected\x1f\x1f2025-01-10T18:54:48.151522421Z");
        let want: String = h.finalize()[..16].iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(id, want);
        let peer = event_id("prod", EventKind::PeerConnected, &["ctrl1", "ctrl2"], at);
        let mut h = Sha256::new();
        h.update(b"prod\x1fpeer.connected\x1fctrl1\x1fctrl2\x1f2025-01-10T18:54:48.151522421Z");
        let want: String = h.finalize()[..16].iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(peer, want);
    }

    #[test]
    fn absent_fields_are_omitted_not_null() {
        let at = Timestamp(0);
        let mut e = ClusterEvent::new(EventKind::LeaderElected, "prod", at, at);
        e.leader_id = Some("ctrl2".into());
        let e = e.seal(&[]);
        let json = serde_json::to_string(&e).unwrap();
        assert!(!json.contains("null"), "{json}");
        assert!(json.starts_with(r#"{"schema":"herald.v1","id":""#), "{json}");
        assert!(json.contains(r#""at":"1970-01-01T00:00:00.000000000Z""#), "{json}");
        let back: ClusterEvent = serde_json::from_str(&json).unwrap();
        assert_eq!(back, e);
    }
}
