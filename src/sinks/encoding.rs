//! How events read outside their JSON form: the sentence an operator reads in a log viewer
//! (the OTLP log body), the readable line of a terminal (`text`), and an event's key and
//! state for the tools that follow keys over time.

use crate::model::{ClusterEvent, EventKind, Severities, Severity};

/// The log body: one sentence an operator can read in a log viewer.
pub fn sentence(e: &ClusterEvent) -> String {
    let c = &e.cluster;
    let or = |v: &Option<String>| v.clone().unwrap_or_default();
    let list = |v: &Option<Vec<String>>| v.as_deref().unwrap_or_default().join(", ");
    match e.kind {
        EventKind::LeaderElected => match &e.previous {
            Some(p) => format!("cluster {c}: {} is the leader (was {p})", or(&e.leader_id)),
            None => format!("cluster {c}: {} is the leader", or(&e.leader_id)),
        },
        EventKind::Leaderless => format!("cluster {c} has no leader"),
        EventKind::SplitBrain => {
            format!("cluster {c}: split brain, {} all claim leadership", list(&e.leaders))
        }
        EventKind::SplitBrainResolved => format!("cluster {c}: split brain resolved"),
        EventKind::ReadOnly => format!("cluster {c} is read-only"),
        EventKind::ReadWrite => format!("cluster {c} is read-write"),
        EventKind::MembersChanged => format!(
            "cluster {c}: members are {} (added: {}; removed: {})",
            list(&e.members),
            list(&e.added),
            list(&e.removed)
        ),
        EventKind::NodeHasLeader => {
            format!("cluster {c}: node {} sees {} as leader", or(&e.node), or(&e.leader_id))
        }
        EventKind::NodeIsLeaderless => format!("cluster {c}: node {} sees no leader", or(&e.node)),
        EventKind::PeerConnected => {
            format!("cluster {c}: node {} is connected to {}", or(&e.node), or(&e.peer))
        }
        EventKind::PeerDisconnected => {
            format!("cluster {c}: node {} lost its connection to {}", or(&e.node), or(&e.peer))
        }
        EventKind::RouterOnline => format!("cluster {c}: router {} is online", or(&e.router)),
        EventKind::RouterOffline => format!("cluster {c}: router {} is offline", or(&e.router)),
        EventKind::SpinStarted => format!(
            "cluster {c}: terminator of service {} on router {} is spinning ({} cycles)",
            or(&e.service),
            or(&e.router),
            e.cycles.unwrap_or(0)
        ),
        EventKind::SpinStopped => format!(
            "cluster {c}: terminator of service {} on router {} stopped spinning after {} cycles",
            or(&e.service),
            or(&e.router),
            e.cycles.unwrap_or(0)
        ),
        EventKind::NodeDown => format!("cluster {c}: node {} is down", or(&e.node)),
        EventKind::NodeUp => format!("cluster {c}: node {} is up", or(&e.node)),
    }
}

/// ANSI colour of the kind on a terminal: only what needs attention stands out.
fn paint(severity: Severity) -> &'static str {
    match severity {
        Severity::Critical => "\x1b[1;31m",
        Severity::High => "\x1b[31m",
        Severity::Warning => "\x1b[33m",
        Severity::Info => "\x1b[32m",
    }
}

/// The width the kind column is padded to: the longest kind, `cluster.split_brain_resolved`.
const KIND_WIDTH: usize = 28;

/// The readable line (DESIGN §12): time (`stable_at`), cluster, kind, subject, the
/// essentials, `(initial)`. One implementation for every sink and for `replay --format
/// text`; `colour` only for a terminal.
pub fn text(e: &ClusterEvent, colour: bool) -> String {
    use std::fmt::Write as _;
    let mut line = String::with_capacity(128);
    let (dim, bold, reset) = if colour { ("\x1b[2m", "\x1b[1m", "\x1b[0m") } else { ("", "", "") };
    let _ =
        write!(line, "{dim}{}{reset} {bold}{}{reset} ", e.stable_at.rfc3339().as_str(), e.cluster);
    let kind = e.kind.as_str();
    if colour {
        let _ = write!(line, "{}{kind:<KIND_WIDTH$}{reset}", paint(Severity::of(e.kind)));
    } else {
        let _ = write!(line, "{kind:<KIND_WIDTH$}");
    }
    let subject = subject(e);
    if !subject.is_empty() {
        line.push(' ');
        line.push_str(&subject);
    }
    // The essentials read as one clause after the subject: `ctrl1 → ctrl2, 1 flap suppressed`.
    let mut essentials: Vec<String> = essentials(e).into_iter().collect();
    match e.suppressed {
        0 => {}
        1 => essentials.push("1 flap suppressed".to_string()),
        n => essentials.push(format!("{n} flaps suppressed")),
    }
    if !essentials.is_empty() {
        line.push_str(if subject.is_empty() { " " } else { "  " });
        line.push_str(&essentials.join(", "));
    }
    if e.initial {
        line.push_str(" (initial)");
    }
    line
}

/// What the event is about, beyond its cluster: the key's own parts as an operator names them.
fn subject(e: &ClusterEvent) -> String {
    let or = |v: &Option<String>| v.as_deref().unwrap_or_default().to_string();
    match e.kind {
        EventKind::NodeHasLeader
        | EventKind::NodeIsLeaderless
        | EventKind::NodeDown
        | EventKind::NodeUp => or(&e.node),
        EventKind::PeerConnected | EventKind::PeerDisconnected => {
            format!("{} → {}", or(&e.node), or(&e.peer))
        }
        EventKind::RouterOnline | EventKind::RouterOffline => or(&e.router),
        EventKind::SpinStarted | EventKind::SpinStopped => {
            format!("{}@{}", or(&e.service), or(&e.router))
        }
        _ => String::new(),
    }
}

fn essentials(e: &ClusterEvent) -> Option<String> {
    let list = |v: &Option<Vec<String>>| v.as_deref().unwrap_or_default().join(", ");
    match e.kind {
        EventKind::LeaderElected => Some(match &e.previous {
            Some(p) => format!("{p} → {}", e.leader_id.as_deref().unwrap_or_default()),
            None => e.leader_id.clone().unwrap_or_default(),
        }),
        EventKind::Leaderless => e.previous.as_ref().map(|p| format!("{p} → none")),
        EventKind::SplitBrain => Some(list(&e.leaders)),
        EventKind::MembersChanged => {
            let mut s = list(&e.members);
            let changes: Vec<String> = (e.added.iter().flatten().map(|a| format!("+{a}")))
                .chain(e.removed.iter().flatten().map(|r| format!("-{r}")))
                .collect();
            if !changes.is_empty() && !e.initial {
                s.push_str(&format!(" ({})", changes.join(" ")));
            }
            Some(s)
        }
        EventKind::NodeHasLeader => e.leader_id.as_ref().map(|l| format!("leader {l}")),
        EventKind::SpinStarted | EventKind::SpinStopped => {
            let cycles = e.cycles.unwrap_or(0);
            let host = e.host.as_deref().filter(|h| !h.is_empty());
            Some(match host {
                Some(h) => format!("host {h}, {cycles} cycles"),
                None => format!("{cycles} cycles"),
            })
        }
        EventKind::NodeDown | EventKind::NodeUp => e.via.map(|v| format!("via {}", v.as_str())),
        _ => None,
    }
}

/// The state key an event reports on, for tools that follow a key's states over time (the
/// sweep, the timeline): its cluster, its family and its subject.
pub fn key(e: &ClusterEvent) -> String {
    let family = match e.kind {
        EventKind::LeaderElected | EventKind::Leaderless => "leader",
        EventKind::SplitBrain | EventKind::SplitBrainResolved => "split_brain",
        EventKind::ReadOnly | EventKind::ReadWrite => "read_only",
        EventKind::MembersChanged => "members",
        EventKind::NodeHasLeader | EventKind::NodeIsLeaderless => "leader_view",
        EventKind::PeerConnected | EventKind::PeerDisconnected => "peer",
        EventKind::RouterOnline | EventKind::RouterOffline => "router",
        EventKind::SpinStarted | EventKind::SpinStopped => "terminator",
        EventKind::NodeDown | EventKind::NodeUp => "alive",
    };
    let subject = slot_subject(e);
    if subject.is_empty() {
        format!("{} {family}", e.cluster)
    } else {
        format!("{} {family} {subject}", e.cluster)
    }
}

/// The state an event reports its key to be in, in a word or two.
pub fn state(e: &ClusterEvent) -> String {
    let list = |v: &Option<Vec<String>>| v.as_deref().unwrap_or_default().join(",");
    match e.kind {
        EventKind::LeaderElected | EventKind::NodeHasLeader => {
            e.leader_id.clone().unwrap_or_default()
        }
        EventKind::Leaderless | EventKind::NodeIsLeaderless => "none".to_string(),
        EventKind::SplitBrain => format!("split {}", list(&e.leaders)),
        EventKind::SplitBrainResolved => "resolved".to_string(),
        EventKind::ReadOnly => "read-only".to_string(),
        EventKind::ReadWrite => "read-write".to_string(),
        EventKind::MembersChanged => list(&e.members),
        EventKind::PeerConnected => "connected".to_string(),
        EventKind::PeerDisconnected => "disconnected".to_string(),
        EventKind::RouterOnline => "online".to_string(),
        EventKind::RouterOffline => "offline".to_string(),
        EventKind::SpinStarted => "spinning".to_string(),
        EventKind::SpinStopped => "steady".to_string(),
        EventKind::NodeDown => "down".to_string(),
        EventKind::NodeUp => "up".to_string(),
    }
}

/// How a line sink writes an event (`encoding = "..."`).
#[derive(Clone, Copy, Debug, Default, serde::Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Encoding {
    /// The ClusterEvent (DESIGN §6): the contract for pipes and files.
    #[default]
    Json,
    /// The readable line of [`text`].
    Text,
    /// An Elastic Common Schema document ([`ecs`]).
    Ecs,
    /// An ArcSight CEF line ([`cef`]).
    Cef,
}

/// An [`Encoding`] as it is written: text in colour only on a terminal that wants it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LineFormat {
    Json,
    Text { colour: bool },
    Ecs,
    Cef,
}

impl LineFormat {
    /// `encoding` for a stream; none given means text on a terminal and JSON otherwise, so
    /// pipes and files keep the contract (DESIGN §12).
    pub fn for_stream(encoding: Option<Encoding>, is_terminal: bool) -> LineFormat {
        match encoding.unwrap_or(if is_terminal { Encoding::Text } else { Encoding::Json }) {
            Encoding::Json => LineFormat::Json,
            Encoding::Text => LineFormat::Text { colour: is_terminal && wants_colour() },
            Encoding::Ecs => LineFormat::Ecs,
            Encoding::Cef => LineFormat::Cef,
        }
    }

    /// `encoding` for a message body: never in colour.
    pub fn body(encoding: Encoding) -> LineFormat {
        LineFormat::for_stream(Some(encoding), false)
    }

    /// The line of `event`, whose JSON is `json` already.
    pub fn line<'a>(
        &self,
        event: &ClusterEvent,
        json: &'a str,
        severities: &Severities,
    ) -> std::borrow::Cow<'a, str> {
        use std::borrow::Cow;
        let severity = || severities.of(&event.cluster, event.kind);
        match *self {
            LineFormat::Json => Cow::Borrowed(json),
            LineFormat::Text { colour } => Cow::Owned(text(event, colour)),
            LineFormat::Ecs => Cow::Owned(ecs(event, severity())),
            LineFormat::Cef => Cow::Owned(cef(event, severity())),
        }
    }
}

/// `d` with its line in `format`: a sink whose body is not the JSON line re-encodes it once,
/// as it takes the delivery.
pub fn reencode(
    format: LineFormat,
    severities: &Severities,
    d: crate::pipeline::Delivery,
) -> crate::pipeline::Delivery {
    if format == LineFormat::Json {
        return d;
    }
    let line = std::sync::Arc::from(format.line(&d.event, &d.line, severities).into_owned());
    crate::pipeline::Delivery { line, ..d }
}

/// The `NO_COLOR` convention (no-color.org): set and not empty, no colour.
fn wants_colour() -> bool {
    std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// The ECS version whose field types [`ecs`] documents follow (`ecs.version`).
pub const ECS_VERSION: &str = "8.11.0";

/// An Elastic Common Schema document (DESIGN §11): `@timestamp` = `stable_at`, the event's
/// facts under `event.*`, `observer.product: herald`, the readable line as `message`, and the
/// ClusterEvent itself under `herald`.
pub fn ecs(e: &ClusterEvent, severity: Severity) -> String {
    let doc = serde_json::json!({
        "@timestamp": e.stable_at.rfc3339().as_str(),
        "ecs": { "version": ECS_VERSION },
        "event": {
            "kind": "event",
            "type": ["change"],
            "action": e.kind.as_str(),
            "id": e.id,
            "start": e.at.rfc3339().as_str(),
            "severity": severity.number(),
            "dataset": "herald.events",
        },
        "observer": { "product": "herald", "vendor": "herald", "version": env!("CARGO_PKG_VERSION") },
        "log": { "level": severity.as_str() },
        "message": text(e, false),
        "herald": e,
    });
    doc.to_string()
}

/// CEF's header fields at most this many characters (the CEF specification's limits).
const CEF_VENDOR_MAX: usize = 63;
const CEF_SIGNATURE_MAX: usize = 1023;
const CEF_NAME_MAX: usize = 512;
/// `msg` in CEF's extension dictionary: 1023 characters.
const CEF_MSG_MAX: usize = 1023;

/// An ArcSight CEF line (DESIGN §11): `CEF:0|herald|herald|VERSION|kind|summary|severity|`
/// then `rt` (`stable_at`), `start` (`at`), both in milliseconds since the epoch, `externalId`,
/// `cs1` the cluster, `cnt` the suppressed flaps, `cs2` the subject and `msg` the readable
/// line. Escaped as the specification says: `\` and `|` in the header, `\`, `=` and line
/// breaks in the extensions.
pub fn cef(e: &ClusterEvent, severity: Severity) -> String {
    let header = |s: &str, max: usize| escape_header(&truncate(s, max));
    let millis = |t: crate::model::Timestamp| t.0.div_euclid(1_000_000);
    let mut out = format!(
        "CEF:0|{}|{}|{}|{}|{}|{}|",
        header("herald", CEF_VENDOR_MAX),
        header("herald", CEF_VENDOR_MAX),
        header(env!("CARGO_PKG_VERSION"), CEF_VENDOR_MAX),
        header(e.kind.as_str(), CEF_SIGNATURE_MAX),
        header(&sentence(e), CEF_NAME_MAX),
        severity.number(),
    );
    let mut fields: Vec<(&str, String)> = vec![
        ("rt", millis(e.stable_at).to_string()),
        ("start", millis(e.at).to_string()),
        ("externalId", e.id.clone()),
        ("cs1Label", "cluster".into()),
        ("cs1", e.cluster.clone()),
        ("cnt", e.suppressed.to_string()),
    ];
    let subject = slot_subject(e);
    if !subject.is_empty() {
        fields.push(("cs2Label", "subject".into()));
        fields.push(("cs2", subject));
    }
    fields.push(("msg", truncate(&text(e, false), CEF_MSG_MAX)));
    let extensions: Vec<String> =
        fields.into_iter().map(|(k, v)| format!("{k}={}", escape_extension(&v))).collect();
    out.push_str(&extensions.join(" "));
    out
}

/// [`subject`], with a terminator slot's host: the whole of the key's own parts.
fn slot_subject(e: &ClusterEvent) -> String {
    match (e.kind, e.host.as_deref()) {
        (EventKind::SpinStarted | EventKind::SpinStopped, Some(h)) if !h.is_empty() => {
            format!("{} {h}", subject(e))
        }
        _ => subject(e),
    }
}

/// At most `max` characters, cut on a character boundary.
fn truncate(s: &str, max: usize) -> String {
    s.chars().take(max).collect()
}

fn escape_header(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '|' => out.push_str("\\|"),
            // A header is one line: a break would end the record.
            '\n' | '\r' => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

fn escape_extension(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '=' => out.push_str("\\="),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c => out.push(c),
        }
    }
    out
}
