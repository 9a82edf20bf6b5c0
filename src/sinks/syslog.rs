//! The syslog sink: every event as one RFC 5424 message for a SIEM (DESIGN §11), over TCP with
//! octet counting (RFC 6587), TLS (RFC 5425) or UDP (RFC 5426).
//!
//! A message carries the event three ways: PRI from the kind's severity, MSGID = the kind and
//! TIMESTAMP = `stable_at` for a collector's filters; the structured data element
//! `herald@32473` with the fields a rule matches on; and MSG, the readable line or the JSON.
//!
//! Syslog over a stream has no acknowledgement. An event counts as held once it was written to
//! a connection that is still open a moment later: a peer that closed before (or while) herald
//! wrote has its FIN or RST arrive within that moment, and what was written is sent again on a
//! new connection, same ids. UDP is best effort: an event counts as held once sent.

use std::path::PathBuf;

use serde::{Deserialize, Deserializer};

use super::encoding::Encoding;
use crate::support::problems::Problems;

#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct Config {
    /// The collector, `host:port`; required.
    pub address: Option<String>,
    /// `tcp` (the default), `tls` or `udp`.
    #[serde(default)]
    pub protocol: Protocol,
    /// APP-NAME (default `herald`).
    #[serde(default = "default_app_name")]
    pub app_name: String,
    /// HOSTNAME (default the machine's).
    pub hostname: Option<String>,
    /// The facility every message has (default `daemon`): `kern`, `user`, …, `local0`–`local7`.
    #[serde(default = "default_facility", deserialize_with = "facility")]
    pub facility: fasyslog::Facility,
    /// MSG: `text` (the readable line, the default) or `json` (the ClusterEvent).
    #[serde(default = "default_encoding")]
    pub encoding: Encoding,
    /// With `tls`: the CA that signed the collector's certificate (default the system's roots).
    pub tls_ca: Option<PathBuf>,
    /// With `tls`: the name the collector's certificate has (default the host of `address`).
    pub tls_server_name: Option<String>,
}

#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Protocol {
    #[default]
    Tcp,
    Tls,
    Udp,
}

impl Protocol {
    fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Tls => "tls",
            Protocol::Udp => "udp",
        }
    }
}

fn default_app_name() -> String {
    "herald".to_string()
}

fn default_facility() -> fasyslog::Facility {
    fasyslog::Facility::DAEMON
}

fn default_encoding() -> Encoding {
    Encoding::Text
}

fn facility<'de, D: Deserializer<'de>>(d: D) -> Result<fasyslog::Facility, D::Error> {
    let name = String::deserialize(d)?;
    fasyslog::Facility::try_from(name.as_str()).map_err(|()| {
        serde::de::Error::custom(format!(
            "unknown facility {name:?} (kern, user, mail, daemon, auth, syslog, lpr, news, uucp, cron, authpriv, ftp, ntp, audit, alert, clock, local0 … local7)"
        ))
    })
}

/// RFC 5424 §6: HOSTNAME and APP-NAME are printable US-ASCII of at most 255 and 48 octets.
fn header_field(value: &str, max: usize) -> bool {
    !value.is_empty() && value.len() <= max && value.bytes().all(|b| (33..=126).contains(&b))
}

impl Config {
    pub(crate) fn validate(self, path: &str, p: &mut Problems) -> Option<Self> {
        let mut ok = p.require(path, "address", self.address.is_some());
        if !header_field(&self.app_name, 48) {
            p.push(format!("{path}.app_name"), "must be 1 to 48 printable ASCII characters");
            ok = false;
        }
        if self.hostname.as_deref().is_some_and(|h| !header_field(h, 255)) {
            p.push(format!("{path}.hostname"), "must be 1 to 255 printable ASCII characters");
            ok = false;
        }
        if self.protocol != Protocol::Tls {
            for (key, set) in [
                ("tls_ca", self.tls_ca.is_some()),
                ("tls_server_name", self.tls_server_name.is_some()),
            ] {
                if set {
                    p.push(format!("{path}.{key}"), "only with protocol = \"tls\"");
                    ok = false;
                }
            }
        }
        ok.then_some(self)
    }
}

// ---- formatting ---------------------------------------------------------------------------

use crate::model::{ClusterEvent, Severity};

/// The structured data element's SD-ID. 32473 is the enterprise number RFC 5612 reserves for
/// documentation: herald has none registered with IANA, and an SD-ID must name one.
pub const SD_ID: &str = "herald@32473";

/// What every message of a sink has in its header.
#[derive(Clone, Debug)]
pub struct Header {
    pub facility: fasyslog::Facility,
    pub hostname: String,
    pub app_name: String,
    pub procid: String,
    /// Each event's severity, for PRI and the encodings that carry one.
    pub severities: Arc<crate::model::Severities>,
}

impl Header {
    pub fn of(config: &Config, severities: Arc<crate::model::Severities>) -> Header {
        Header {
            facility: config.facility,
            hostname: config.hostname.clone().unwrap_or_else(machine_hostname),
            app_name: config.app_name.clone(),
            procid: std::process::id().to_string(),
            severities,
        }
    }
}

/// The kernel's host name, else `-` (RFC 5424's NILVALUE); made printable ASCII if it is not.
fn machine_hostname() -> String {
    let name = ["/proc/sys/kernel/hostname", "/etc/hostname"]
        .iter()
        .find_map(|p| std::fs::read_to_string(p).ok().map(|h| h.trim().to_string()))
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "-".to_string());
    name.chars().map(|c| if c.is_ascii_graphic() { c } else { '_' }).take(255).collect()
}

/// critical / high / warning / info → 2 / 3 / 4 / 6 (DESIGN §11).
pub fn severity(s: Severity) -> fasyslog::Severity {
    match s {
        Severity::Critical => fasyslog::Severity::CRITICAL,
        Severity::High => fasyslog::Severity::ERROR,
        Severity::Warning => fasyslog::Severity::WARNING,
        Severity::Info => fasyslog::Severity::INFORMATIONAL,
    }
}

/// The `herald@32473` element: the fields a SIEM rule matches on, escaped by fasyslog as RFC
/// 5424 §6.3.3 says (`"`, `\` and `]`).
pub fn structured_data(e: &ClusterEvent) -> String {
    // The SD-ID and the parameter names are constants that a unit test proves valid.
    let Ok(mut sd) = fasyslog::SDElement::new(SD_ID) else {
        return "-".to_string();
    };
    let mut put = |name: &str, value: &str| {
        let _ = sd.add_param(name, value);
    };
    put("id", &e.id);
    put("kind", e.kind.as_str());
    put("cluster", &e.cluster);
    put("at", e.at.rfc3339().as_str());
    put("stable_at", e.stable_at.rfc3339().as_str());
    put("suppressed", &e.suppressed.to_string());
    put("initial", if e.initial { "true" } else { "false" });
    for (name, value) in [
        ("node", &e.node),
        ("peer", &e.peer),
        ("router", &e.router),
        ("service", &e.service),
        ("host", &e.host),
        ("leader_id", &e.leader_id),
        ("previous", &e.previous),
    ] {
        if let Some(v) = value {
            put(name, v);
        }
    }
    sd.to_string()
}

/// One RFC 5424 message. The header is written here rather than by a crate's formatter: the
/// kept ones (fasyslog, syslog) stamp the time of formatting, and TIMESTAMP must be the
/// event's `stable_at` so that a redelivered event reads the same.
pub fn message(h: &Header, e: &ClusterEvent, body: &str) -> String {
    let pri = (h.facility.code() << 3) | severity(h.severities.of(&e.cluster, e.kind)).code();
    // RFC 5424 allows six fractional digits, not the nine an event carries.
    let stable_at = e.stable_at.rfc3339();
    let ts = stable_at.as_str();
    let ts = format!("{}Z", ts.get(..26).unwrap_or(ts));
    // §6.4: a UTF-8 MSG starts with the BOM; plain ASCII needs none.
    let bom = if body.is_ascii() { "" } else { "\u{feff}" };
    format!(
        "<{pri}>1 {ts} {} {} {} {} {} {bom}{body}",
        h.hostname,
        h.app_name,
        h.procid,
        e.kind.as_str(),
        structured_data(e)
    )
}

/// RFC 6587 octet counting: `MSG-LEN SP SYSLOG-MSG`, the length in bytes.
pub fn frame(msg: &str) -> Vec<u8> {
    let mut f = format!("{} ", msg.len()).into_bytes();
    f.extend_from_slice(msg.as_bytes());
    f
}

// ---- running ------------------------------------------------------------------------------

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufWriter};
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::mpsc::Receiver;
use tokio::time::Instant;

use super::SinkError;
use crate::model::Timestamp;
use crate::pipeline::Delivery;
use crate::support::retry::Backoff;
use crate::telemetry::events::{DeliveryFailed, Reachability};
use crate::telemetry::metrics::SinkMetrics;

/// How long a written event waits before a check that the connection is still open counts
/// it: the time a peer's FIN or RST needs to arrive, and tokio to see it.
const SETTLE: Duration = Duration::from_millis(100);
/// Events written and not yet held, at most; the queue waits beyond.
const MAX_UNHELD: usize = 4096;
/// Deliveries taken from the queue at a time.
const RECEIVE: usize = 512;
/// A connection (with its TLS handshake) must be up within this.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// A collector that takes nothing for this long is given up on, and written to anew.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long, at shutdown, herald keeps trying to have what it was handed held.
const CLOSING: Duration = Duration::from_secs(30);
/// How often reconnecting looks up to see whether herald stops.
const RECONNECT_LOOK: Duration = Duration::from_secs(1);
/// The largest UDP payload over IPv4.
const MAX_DATAGRAM: usize = 65_507;

/// A byte stream to the collector: TCP, or TLS over it.
trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

type Connection = BufWriter<Box<dyn Stream>>;

/// How log lines and errors name the collector.
fn server(config: &Config) -> String {
    format!("syslog {} {}", config.protocol.as_str(), config.address.as_deref().unwrap_or(""))
}

/// What connecting needs, made once: the address and, for TLS, the connector and the name.
pub struct Connector {
    name: String,
    address: String,
    server: String,
    tls: Option<(tokio_rustls::TlsConnector, rustls::pki_types::ServerName<'static>)>,
    reach: Reachability,
}

impl Connector {
    fn new(name: &str, config: &Config, metrics: &SinkMetrics) -> Result<Connector, SinkError> {
        let address = config.address.clone().unwrap_or_default();
        let server = server(config);
        let tls = match config.protocol {
            Protocol::Tls => Some(tls(name, &server, config, &address)?),
            _ => None,
        };
        let reach = Reachability::of_sink(metrics, server.clone());
        Ok(Connector { name: name.to_string(), address, server, tls, reach })
    }

    async fn try_connect(&self) -> std::io::Result<Connection> {
        let connect = async {
            let tcp = TcpStream::connect(&self.address).await?;
            tcp.set_nodelay(true)?;
            let stream: Box<dyn Stream> = match &self.tls {
                Some((connector, name)) => Box::new(connector.connect(name.clone(), tcp).await?),
                None => Box::new(tcp),
            };
            Ok(BufWriter::with_capacity(64 * 1024, stream))
        };
        tokio::time::timeout(CONNECT_TIMEOUT, connect).await.unwrap_or_else(|_| {
            Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out"))
        })
    }

    /// Connects, retrying with backoff until the collector takes the connection.
    async fn connect(&self, metrics: &SinkMetrics) -> Connection {
        let mut backoff = Backoff::new(Duration::from_millis(100));
        loop {
            match self.try_connect().await {
                Ok(c) => return c,
                Err(e) => {
                    DeliveryFailed.emit(metrics);
                    self.reach.failed(e);
                    backoff.wait().await;
                }
            }
        }
    }
}

/// The TLS connector (rustls with ring, as everywhere in herald) and the name the collector's
/// certificate must have.
fn tls(
    name: &str,
    server: &str,
    config: &Config,
    address: &str,
) -> Result<(tokio_rustls::TlsConnector, rustls::pki_types::ServerName<'static>), SinkError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, ServerName};
    let err = |e: String| SinkError::broker(name, server, e);
    let mut roots = rustls::RootCertStore::empty();
    match &config.tls_ca {
        Some(path) => {
            let certs = CertificateDer::pem_file_iter(path)
                .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
                .map_err(|e| err(format!("tls_ca {}: {e}", path.display())))?;
            if certs.is_empty() {
                return Err(err(format!("tls_ca {}: no certificate in it", path.display())));
            }
            for cert in certs {
                roots.add(cert).map_err(|e| err(format!("tls_ca {}: {e}", path.display())))?;
            }
        }
        None => {
            let (added, _) =
                roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
            if added == 0 {
                return Err(err("no system root certificates: set tls_ca".to_string()));
            }
        }
    }
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| err(e.to_string()))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let host = match &config.tls_server_name {
        Some(n) => n.clone(),
        None => host_of(address).to_string(),
    };
    let server_name = ServerName::try_from(host.clone())
        .map_err(|e| err(format!("tls server name {host:?}: {e}")))?;
    Ok((tokio_rustls::TlsConnector::from(Arc::new(tls)), server_name))
}

/// The host of `host:port` or `[v6]:port`.
fn host_of(address: &str) -> &str {
    let host = address.rsplit_once(':').map_or(address, |(h, _)| h);
    host.trim_start_matches('[').trim_end_matches(']')
}

/// Whether the peer has closed the connection (or it broke): what a non-blocking read sees.
/// A collector says nothing over syslog, so whatever it sends is passed over.
fn broken(conn: &mut Connection) -> Option<std::io::Error> {
    let mut buf = [0u8; 1024];
    loop {
        match conn.read(&mut buf).now_or_never() {
            None => return None,
            Some(Ok(0)) => {
                return Some(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "the collector closed the connection",
                ))
            }
            Some(Ok(_)) => continue,
            Some(Err(e)) => return Some(e),
        }
    }
}

impl super::Sink for Config {
    async fn start(&self, ctx: super::SinkContext, rx: super::Queue) -> super::Started {
        let connector = Connector::new(&ctx.name, self, &ctx.metrics)?;
        let header = Header::of(self, ctx.severities.clone());
        let body = self.encoding;
        // Ready means the collector took a connection (UDP: a socket to it).
        if self.protocol == Protocol::Udp {
            let socket = udp(&connector).await?;
            tracing::info!(sink = %ctx.name, address = %connector.address, "syslog ready (udp, best effort)");
            let run = run_udp(socket, header, body, connector, rx, ctx.acked, ctx.metrics);
            return Ok(tokio::spawn(run));
        }
        let conn = connector.connect(&ctx.metrics).await;
        connector.reach.reached();
        tracing::info!(sink = %ctx.name, server = %connector.server, "syslog ready");
        let run = run_stream(Some(conn), header, body, connector, rx, ctx.acked, ctx.metrics);
        Ok(tokio::spawn(run))
    }
}

/// MSG of a delivery.
fn body(encoding: Encoding, header: &Header, d: &Delivery) -> String {
    let format = super::encoding::LineFormat::body(encoding);
    format.line(&d.event, &d.line, &header.severities).into_owned()
}

/// An event on its way: its frame, and when it was written on the current connection.
struct Unheld {
    seq: u64,
    stable_at: Timestamp,
    frame: Vec<u8>,
    written: Option<Instant>,
}

/// Delivers over TCP or TLS, holding events as the module doc says: each check that finds the
/// connection open counts what was written at least [`SETTLE`] before it; a connection found
/// closed, or a write that fails, makes everything not yet held go again on a new connection.
async fn run_stream(
    mut conn: Option<Connection>,
    header: Header,
    encoding: Encoding,
    connector: Connector,
    mut rx: Receiver<Delivery>,
    acked: Arc<AtomicU64>,
    metrics: SinkMetrics,
) -> Result<(), SinkError> {
    let mut unheld: VecDeque<Unheld> = VecDeque::new();
    let mut batch = Vec::with_capacity(RECEIVE);
    let mut open = true;
    let mut closing_until: Option<Instant> = None;
    let mut backoff = Backoff::new(Duration::from_millis(100));
    loop {
        if !open && unheld.is_empty() {
            break;
        }
        if closing_until.is_some_and(|t| Instant::now() >= t) {
            tracing::warn!(sink = %connector.name, unheld = unheld.len(), "stopping with events the collector may not have; they are sent again after the restart");
            break;
        }
        // Wait for deliveries, or for the oldest written event to settle.
        let settles = unheld.iter().find_map(|u| u.written).map(|t| t + SETTLE);
        let room = open && unheld.len() < MAX_UNHELD;
        let unwritten = unheld.iter().any(|u| u.written.is_none());
        tokio::select! {
            n = rx.recv_many(&mut batch, RECEIVE), if room => {
                if n == 0 {
                    open = false;
                    closing_until = Some(Instant::now() + CLOSING);
                }
                for d in batch.drain(..) {
                    let msg = message(&header, &d.event, &body(encoding, &header, &d));
                    unheld.push_back(Unheld {
                        seq: d.seq,
                        stable_at: d.event.stable_at,
                        frame: frame(&msg),
                        written: None,
                    });
                }
            }
            _ = sleep_until(settles), if settles.is_some() => {}
            // Events to write again (or nothing to wait for but a full or closed queue): go on.
            _ = std::future::ready(()), if unwritten || (!room && settles.is_none()) => {}
        }
        let c = match conn.as_mut() {
            Some(c) => c,
            None if unheld.is_empty() => continue,
            None => {
                // Reconnecting gives way now and then, so that a queue closed meanwhile (a
                // stop while the collector is away) starts the bounded wait of a close.
                let until = closing_until.unwrap_or_else(|| Instant::now() + RECONNECT_LOOK);
                match tokio::time::timeout_at(until, connector.connect(&metrics)).await {
                    Ok(c) => conn.insert(c),
                    Err(_) => {
                        if open && rx.is_closed() && rx.is_empty() {
                            open = false;
                            closing_until = Some(Instant::now() + CLOSING);
                        }
                        continue;
                    }
                }
            }
        };
        // The check comes before anything is counted, and before the next write.
        if let Some(e) = broken(c) {
            lost(&mut conn, &mut unheld, &connector, &metrics, e, &mut backoff).await;
            continue;
        }
        let now = Instant::now();
        let mut last = None;
        while let Some(u) = unheld.front() {
            match u.written {
                Some(t) if t + SETTLE <= now => {
                    metrics.acked(u.stable_at);
                    last = Some(u.seq);
                    unheld.pop_front();
                }
                _ => break,
            }
        }
        if let Some(seq) = last {
            acked.store(seq, Ordering::Release);
            connector.reach.reached();
            backoff.reset();
        }
        if let Err(e) = write(c, &mut unheld).await {
            lost(&mut conn, &mut unheld, &connector, &metrics, e, &mut backoff).await;
        }
    }
    if let Some(mut c) = conn {
        let _ = c.shutdown().await;
    }
    Ok(())
}

async fn sleep_until(t: Option<Instant>) {
    if let Some(t) = t {
        tokio::time::sleep_until(t).await;
    }
}

/// Writes what was not written on this connection yet, and flushes.
async fn write(c: &mut Connection, unheld: &mut VecDeque<Unheld>) -> std::io::Result<()> {
    let fresh: Vec<usize> = (0..unheld.len()).filter(|&i| unheld[i].written.is_none()).collect();
    if fresh.is_empty() {
        return Ok(());
    }
    let writing = async {
        for &i in &fresh {
            c.write_all(&unheld[i].frame).await?;
        }
        c.flush().await
    };
    tokio::time::timeout(WRITE_TIMEOUT, writing).await.unwrap_or_else(|_| {
        Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "the collector takes nothing"))
    })?;
    let now = Instant::now();
    for i in fresh {
        unheld[i].written = Some(now);
    }
    Ok(())
}

/// The connection broke: what it carried and was not held goes again on the next one.
async fn lost(
    conn: &mut Option<Connection>,
    unheld: &mut VecDeque<Unheld>,
    connector: &Connector,
    metrics: &SinkMetrics,
    error: std::io::Error,
    backoff: &mut Backoff,
) {
    DeliveryFailed.emit(metrics);
    connector.reach.failed(error);
    *conn = None;
    let again = unheld.iter_mut().filter_map(|u| u.written.take()).count();
    if again > 0 {
        tracing::debug!(sink = %connector.name, events = again, "sent again on the next connection");
    }
    backoff.wait().await;
}

/// A UDP socket connected to the collector, so that sends name no address and a refusal
/// (ICMP) shows.
async fn udp(connector: &Connector) -> Result<UdpSocket, SinkError> {
    let err = |e: std::io::Error| SinkError::broker(&connector.name, &connector.server, e);
    let target = tokio::net::lookup_host(&connector.address)
        .await
        .map_err(err)?
        .next()
        .ok_or_else(|| err(std::io::Error::other("the address resolves to nothing")))?;
    let local = if target.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" };
    let socket = UdpSocket::bind(local).await.map_err(err)?;
    socket.connect(target).await.map_err(err)?;
    Ok(socket)
}

/// Best effort: one datagram per message, held once sent. A send that fails is retried; a
/// message too large for a datagram is passed over, and said.
async fn run_udp(
    socket: UdpSocket,
    header: Header,
    encoding: Encoding,
    connector: Connector,
    mut rx: Receiver<Delivery>,
    acked: Arc<AtomicU64>,
    metrics: SinkMetrics,
) -> Result<(), SinkError> {
    let mut batch = Vec::with_capacity(RECEIVE);
    while rx.recv_many(&mut batch, RECEIVE).await > 0 {
        for d in batch.drain(..) {
            let msg = message(&header, &d.event, &body(encoding, &header, &d));
            if msg.len() > MAX_DATAGRAM {
                DeliveryFailed.emit(&metrics);
                tracing::error!(sink = %connector.name, id = %d.event.id, kind = %d.event.kind, bytes = msg.len(), "too large for a syslog datagram: passed over");
            } else {
                let mut backoff = Backoff::new(Duration::from_millis(100));
                let mut sent = true;
                while let Err(e) = socket.send(msg.as_bytes()).await {
                    DeliveryFailed.emit(&metrics);
                    connector.reach.failed(e);
                    // Best effort: once herald stops, a datagram that cannot go is let go.
                    if rx.is_closed() {
                        sent = false;
                        break;
                    }
                    backoff.wait().await;
                }
                if sent {
                    connector.reach.reached();
                    metrics.acked(d.event.stable_at);
                }
            }
            acked.store(d.seq, Ordering::Release);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{EventKind, Timestamp};

    fn event(kind: EventKind) -> ClusterEvent {
        let at = Timestamp::parse("2025-01-10T18:00:01.123456789Z").unwrap();
        let stable_at = Timestamp::parse("2025-01-10T18:00:03.987654321Z").unwrap();
        let mut e = ClusterEvent::new(kind, "prod", at, stable_at);
        e.id = "0123abcd".to_string();
        e
    }

    fn header() -> Header {
        Header {
            facility: fasyslog::Facility::DAEMON,
            hostname: "h1".into(),
            app_name: "herald".into(),
            procid: "42".into(),
            severities: Arc::default(),
        }
    }

    /// A configured severity decides PRI, and `encoding = "cef"` puts the CEF line in MSG.
    #[test]
    fn configured_severities_and_cef_reach_the_message() {
        let mut severities = crate::model::Severities::default();
        severities.clusters.insert(
            "prod".into(),
            [(EventKind::RouterOnline, crate::model::Severity::Critical)].into(),
        );
        let h = Header { severities: Arc::new(severities), ..header() };
        let e = event(EventKind::RouterOnline);
        let line: Arc<str> = Arc::from(serde_json::to_string(&e).unwrap());
        let d = Delivery { seq: 1, line, event: e.clone().into() };
        let msg = message(&h, &e, &body(Encoding::Cef, &h, &d));
        // daemon (3) << 3 | critical (2) = 26; CEF severity 10.
        assert!(msg.starts_with("<26>1 "), "{msg}");
        let m = parse(&msg);
        assert!(m.msg.starts_with("CEF:0|herald|herald|"), "{}", m.msg);
        assert!(m.msg.contains("|router.online|") && m.msg.contains("|10|"), "{}", m.msg);
    }

    /// The sink's mapping is the one of DESIGN §11 that `Severity::syslog` states.
    #[test]
    fn the_sinks_severity_is_the_designs() {
        use crate::model::Severity as S;
        for s in [S::Critical, S::High, S::Warning, S::Info] {
            assert_eq!(severity(s).code(), s.syslog(), "{s:?}");
        }
    }

    fn parse(msg: &str) -> syslog_rfc5424::SyslogMessage {
        syslog_rfc5424::parse_message(msg).unwrap_or_else(|e| panic!("{msg:?}: {e}"))
    }

    #[test]
    fn pri_is_the_facility_and_the_kinds_severity() {
        let h = header();
        for (kind, sev) in [
            (EventKind::SplitBrain, 2),
            (EventKind::Leaderless, 2),
            (EventKind::NodeDown, 3),
            (EventKind::RouterOffline, 3),
            (EventKind::PeerDisconnected, 4),
            (EventKind::RouterOnline, 6),
            (EventKind::SplitBrainResolved, 6),
        ] {
            let msg = message(&h, &event(kind), "x");
            assert!(msg.starts_with(&format!("<{}>1 ", 3 * 8 + sev)), "{msg}");
            let m = parse(&msg);
            assert_eq!(m.severity as u8, sev);
            assert_eq!(m.msgid.as_deref(), Some(kind.as_str()));
        }
        let local7 = Header { facility: fasyslog::Facility::LOCAL7, ..header() };
        assert!(message(&local7, &event(EventKind::NodeDown), "x").starts_with("<187>1 "));
    }

    #[test]
    fn the_header_has_stable_at_to_the_microsecond_and_the_message_reads_back() {
        let mut e = event(EventKind::RouterOnline);
        e.router = Some("r1".into());
        let msg = message(&header(), &e, "the body");
        assert!(msg.starts_with("<30>1 2025-01-10T18:00:03.987654Z h1 herald 42 router.online [herald@32473 id=\"0123abcd\" kind=\"router.online\" cluster=\"prod\" at=\"2025-01-10T18:00:01.123456789Z\" stable_at=\"2025-01-10T18:00:03.987654321Z\" suppressed=\"0\" initial=\"false\" router=\"r1\"] the body"), "{msg}");
        let m = parse(&msg);
        assert_eq!(m.timestamp, Some(1_736_532_003));
        assert_eq!(m.timestamp_nanos, Some(987_654_000));
        assert_eq!((m.hostname.as_deref(), m.appname.as_deref()), (Some("h1"), Some("herald")));
        assert_eq!(m.msg, "the body");
        assert_eq!(m.sd.find_tuple(SD_ID, "router"), Some(&"r1".to_string()));
    }

    #[test]
    fn structured_data_values_are_escaped_and_round_trip() {
        let mut e = event(EventKind::NodeHasLeader);
        let nasty = r#"a"b\c]d"#;
        e.node = Some(nasty.into());
        e.leader_id = Some("ctrl1".into());
        let sd = structured_data(&e);
        assert!(sd.contains(r#"node="a\"b\\c\]d""#), "{sd}");
        let m = parse(&message(&header(), &e, "x"));
        assert_eq!(m.sd.find_tuple(SD_ID, "node"), Some(&nasty.to_string()));
        assert_eq!(m.sd.find_tuple(SD_ID, "leader_id"), Some(&"ctrl1".to_string()));
        assert_eq!(m.sd.find_tuple(SD_ID, "peer"), None, "absent fields are left out");
    }

    #[test]
    fn every_parameter_name_is_valid() {
        let mut e = event(EventKind::SpinStarted);
        for f in [
            &mut e.node,
            &mut e.peer,
            &mut e.router,
            &mut e.service,
            &mut e.host,
            &mut e.leader_id,
            &mut e.previous,
        ] {
            *f = Some("v".into());
        }
        let sd = structured_data(&e);
        for name in [
            "id",
            "kind",
            "cluster",
            "at",
            "stable_at",
            "suppressed",
            "initial",
            "node",
            "peer",
            "router",
            "service",
            "host",
            "leader_id",
            "previous",
        ] {
            assert!(sd.contains(&format!(" {name}=\"")), "{name} missing from {sd}");
        }
    }

    #[test]
    fn a_utf8_body_starts_with_the_bom() {
        let e = event(EventKind::PeerConnected);
        assert!(message(&header(), &e, "ctrl1 → ctrl2").ends_with(" \u{feff}ctrl1 → ctrl2"));
        assert!(message(&header(), &e, "plain").ends_with("] plain"));
    }

    #[test]
    fn octet_counting_counts_bytes() {
        assert_eq!(frame("abc"), b"3 abc");
        let f = frame("→");
        assert_eq!(f, "3 →".as_bytes());
        let msg = message(&header(), &event(EventKind::NodeUp), "é");
        let f = frame(&msg);
        let (len, rest) = f.split_at(f.iter().position(|&b| b == b' ').unwrap());
        assert_eq!(std::str::from_utf8(len).unwrap().parse::<usize>().unwrap(), rest.len() - 1);
    }

    #[test]
    fn the_host_of_an_address() {
        assert_eq!(host_of("siem.example:6514"), "siem.example");
        assert_eq!(host_of("127.0.0.1:514"), "127.0.0.1");
        assert_eq!(host_of("[::1]:6514"), "::1");
    }

    fn read(text: &str) -> (Option<Config>, Problems) {
        let mut p = Problems::default();
        let table: toml::Value = toml::from_str(text).unwrap();
        let c = crate::support::problems::section::<Config>(table, "sinks.siem", &mut p)
            .and_then(|c| c.validate("sinks.siem", &mut p));
        (c, p)
    }

    #[test]
    fn config_defaults_and_problems() {
        let (c, p) = read("address = \"127.0.0.1:514\"");
        assert!(p.0.is_empty(), "{p:?}");
        let c = c.unwrap();
        assert_eq!(c.protocol, Protocol::Tcp);
        assert_eq!(c.app_name, "herald");
        assert_eq!(c.facility, fasyslog::Facility::DAEMON);
        assert_eq!(c.encoding, Encoding::Text);

        let (c, p) = read("protocol = \"tls\"\nfacility = \"local3\"\nencoding = \"json\"\ntls_ca = \"ca.pem\"\naddress = \"a:6514\"");
        assert!(p.0.is_empty(), "{p:?}");
        assert_eq!(c.unwrap().facility, fasyslog::Facility::LOCAL3);

        let (c, p) = read("address = \"a:514\"\nfacility = \"nope\"\nport = 1");
        assert!(c.is_none());
        let paths: Vec<&str> = p.0.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(paths, ["sinks.siem.facility", "sinks.siem.port"], "{p:?}");

        let (c, p) = read("app_name = \"two words\"\ntls_ca = \"x\"");
        assert!(c.is_none());
        let paths: Vec<&str> = p.0.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(
            paths,
            ["sinks.siem.address", "sinks.siem.app_name", "sinks.siem.tls_ca"],
            "{p:?}"
        );
    }
}
