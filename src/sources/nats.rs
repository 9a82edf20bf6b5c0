//! The NATS source: a core subject, or a JetStream durable consumer.

use std::path::PathBuf;

use serde::Deserialize;

use super::Common;
use crate::config::Problems;

#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct Config {
    /// `cluster`, `reporter`, `format`: read apart, see [`Common`].
    #[serde(skip)]
    pub common: Common,
    /// `nats://host:4222`; required.
    pub url: Option<String>,
    /// The subject to read; required.
    pub subject: Option<String>,
    /// With a stream, records are read through a JetStream durable consumer.
    pub stream: Option<String>,
    /// The durable consumer's name (default `herald`).
    pub durable: Option<String>,
    pub token: Option<String>,
    pub user: Option<String>,
    pub password: Option<String>,
    pub creds: Option<PathBuf>,
}

impl Config {
    pub(crate) fn validate(self, path: &str, p: &mut Problems) -> Option<Self> {
        let mut ok = p.require(path, "url", self.url.is_some());
        ok &= p.require(path, "subject", self.subject.is_some());
        ok.then_some(self)
    }
}

// ---- running ------------------------------------------------------------------------------

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use async_nats::jetstream::consumer::{pull, AckPolicy};
use futures_util::StreamExt;
use tokio::sync::mpsc::Sender;

use super::{
    drain, message_key, message_lines, reconnecting, Freshness, Input, Outstanding, QUIET,
};

async fn client(config: &Config) -> Result<async_nats::Client, String> {
    let mut o = match &config.creds {
        Some(path) => async_nats::ConnectOptions::with_credentials_file(path.clone())
            .await
            .map_err(|e| e.to_string())?,
        None => async_nats::ConnectOptions::new(),
    };
    if let Some(t) = &config.token {
        o = o.token(t.clone());
    }
    if let (Some(u), Some(p)) = (&config.user, &config.password) {
        o = o.user_and_password(u.clone(), p.clone());
    }
    let url = config.url.clone().unwrap_or_default();
    o.name("herald").connect(url.as_str()).await.map_err(|e| e.to_string())
}

/// Reads the subject until `stop` is set, reconnecting with backoff. With a `stream`, a
/// JetStream durable consumer whose messages are acknowledged only after their effect is
/// committed and every event they produced is held by every sink; a message unacknowledged
/// when herald dies is redelivered, and one already applied is acknowledged, not applied twice.
/// Without one, a core subscription (at most once: core NATS keeps nothing).
pub async fn consume(
    config: Config,
    name: String,
    source: usize,
    tx: Sender<Input>,
    stop: Arc<AtomicBool>,
) {
    reconnecting(&name, source, &tx, &stop, || session(&config, &name, source, &tx, &stop)).await;
}

async fn session(
    config: &Config,
    name: &str,
    source: usize,
    tx: &Sender<Input>,
    stop: &AtomicBool,
) -> Result<(), String> {
    let client = client(config).await?;
    let subject = config.subject.clone().unwrap_or_default();
    let outstanding = Arc::new(AtomicUsize::new(0));
    let mut fresh = Freshness { source, caught_up: false };
    let mut messages: std::pin::Pin<
        Box<dyn futures_util::Stream<Item = Result<Received, String>> + Send>,
    > =
        match &config.stream {
            Some(stream) => {
                let js = async_nats::jetstream::new(client.clone());
                let stream = js.get_stream(stream).await.map_err(|e| e.to_string())?;
                let durable = config.durable.clone().unwrap_or_else(|| "herald".to_string());
                let consumer = stream
                    .get_or_create_consumer(
                        &durable,
                        pull::Config {
                            durable_name: Some(durable.clone()),
                            filter_subject: subject.clone(),
                            ack_policy: AckPolicy::Explicit,
                            ..Default::default()
                        },
                    )
                    .await
                    .map_err(|e| e.to_string())?;
                let msgs = consumer.messages().await.map_err(|e| e.to_string())?;
                Box::pin(msgs.map(|m| {
                    m.map(|m| Received::JetStream(Box::new(m))).map_err(|e| e.to_string())
                }))
            }
            None => {
                let sub = client.subscribe(subject.clone()).await.map_err(|e| e.to_string())?;
                Box::pin(sub.map(|m| Ok(Received::Core(m))))
            }
        };
    tracing::info!(source = %name, subject = %subject, jetstream = config.stream.is_some(), "consuming");
    loop {
        if stop.load(Ordering::Relaxed) {
            drain(&outstanding).await;
            let _ = client.flush().await;
            return Ok(());
        }
        let received = match tokio::time::timeout(QUIET, messages.next()).await {
            Err(_) => {
                if !fresh.quiet(tx).await {
                    return Ok(());
                }
                continue;
            }
            Ok(None) => return Err("the subscription ended".into()),
            Ok(Some(m)) => m?,
        };
        let Some(live) = fresh.arrived(tx).await else { return Ok(()) };
        let payload = received.payload().to_vec();
        let lines = message_lines(&payload);
        let (key, redelivery) = match &received {
            Received::JetStream(m) => {
                (Some(message_key(&payload)), m.info().map(|i| i.delivered > 1).unwrap_or(false))
            }
            Received::Core(_) => (None, false),
        };
        outstanding.fetch_add(1, Ordering::AcqRel);
        let settled = Outstanding(outstanding.clone());
        let on_commit: super::OnCommit = Box::new(move || {
            tokio::spawn(async move {
                if let Received::JetStream(m) = received {
                    if let Err(e) = m.ack().await {
                        tracing::warn!(error = %e, "JetStream ack failed; the server will redeliver");
                    }
                }
                drop(settled);
            });
        });
        if tx.send(Input::Batch { source, lines, live, on_commit, key, redelivery }).await.is_err()
        {
            return Ok(());
        }
    }
}

enum Received {
    // Boxed: a JetStream message is twice the size of a core one.
    JetStream(Box<async_nats::jetstream::Message>),
    Core(async_nats::Message),
}

impl Received {
    fn payload(&self) -> &[u8] {
        match self {
            Received::JetStream(m) => &m.payload,
            Received::Core(m) => &m.payload,
        }
    }
}
