//! The NATS source: a core subject, or a JetStream durable consumer.

use std::path::PathBuf;

use serde::Deserialize;

use super::Common;
use crate::support::problems::Problems;

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

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use async_nats::jetstream::consumer::{pull, AckPolicy};
use futures_util::StreamExt;

use super::broker::{self, drain, message_key, message_lines, Freshness, Link, Outstanding, QUIET};
use super::{Source, SourceContext, SourceError};
use crate::decode::Context;
use crate::pipeline::{Input, Shutdown};

impl Source for Config {
    fn context(&self) -> Context {
        super::context(&self.common)
    }

    fn start(&self, ctx: SourceContext, tasks: &mut Shutdown) {
        let config = self.clone();
        let server = broker::server("NATS", self.url.as_deref());
        tasks.spawn(ctx.name.clone(), async move {
            broker::reconnecting(&ctx, server, |link| session(&config, &ctx, link)).await
        });
    }
}

async fn client(config: &Config) -> Result<async_nats::Client, SourceError> {
    let url = config.url.clone().unwrap_or_default();
    let e = |e: std::io::Error| SourceError::broker(&url, e);
    let mut o = match &config.creds {
        Some(path) => {
            async_nats::ConnectOptions::with_credentials_file(path.clone()).await.map_err(e)?
        }
        None => async_nats::ConnectOptions::new(),
    };
    if let Some(t) = &config.token {
        o = o.token(t.clone());
    }
    if let (Some(u), Some(p)) = (&config.user, &config.password) {
        o = o.user_and_password(u.clone(), p.clone());
    }
    o.name("herald").connect(url.as_str()).await.map_err(|e| SourceError::broker(&url, e))
}

async fn session(
    config: &Config,
    ctx: &SourceContext,
    link: std::sync::Arc<Link>,
) -> Result<(), SourceError> {
    let (name, source, tx, stop) = (&ctx.name, ctx.index, &ctx.tx, &ctx.stop);
    let client = client(config).await?;
    let url = config.url.clone().unwrap_or_default();
    let e = |e: String| SourceError::broker(&url, e);
    let subject = config.subject.clone().unwrap_or_default();
    let outstanding = Arc::new(AtomicUsize::new(0));
    let mut fresh = Freshness { source, caught_up: false };
    let mut messages: std::pin::Pin<
        Box<dyn futures_util::Stream<Item = Result<Received, SourceError>> + Send>,
    > = match &config.stream {
        Some(stream) => {
            let js = async_nats::jetstream::new(client.clone());
            let stream = js.get_stream(stream).await.map_err(|x| e(x.to_string()))?;
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
                .map_err(|x| e(x.to_string()))?;
            let msgs = consumer.messages().await.map_err(|x| e(x.to_string()))?;
            let url = url.clone();
            Box::pin(msgs.map(move |m| {
                m.map(|m| Received::JetStream(Box::new(m)))
                    .map_err(|x| SourceError::broker(&url, x))
            }))
        }
        None => {
            let sub = client.subscribe(subject.clone()).await.map_err(|x| e(x.to_string()))?;
            Box::pin(sub.map(|m| Ok(Received::Core(m))))
        }
    };
    tracing::info!(source = %name, subject = %subject, jetstream = config.stream.is_some(), "consuming");
    link.up();
    loop {
        let next = tokio::select! {
            _ = stop.stopped() => {
                drain(&outstanding).await;
                let _ = client.flush().await;
                return Ok(());
            }
            next = tokio::time::timeout(QUIET, messages.next()) => next,
        };
        let received = match next {
            Err(_) => {
                if !fresh.quiet(tx).await {
                    return Ok(());
                }
                continue;
            }
            Ok(None) => return Err(e("the subscription ended".into())),
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
        let on_commit: crate::pipeline::OnCommit = Box::new(move || {
            tokio::spawn(async move {
                if let Received::JetStream(m) = received {
                    if let Err(e) = m.ack().await {
                        tracing::warn!(error = %e, "JetStream ack failed; the server will redeliver");
                    }
                }
                drop(settled);
            });
        });
        if tx
            .send(Input::Batch {
                source,
                lines,
                live,
                on_commit,
                key,
                redelivery,
                context: None,
                offset: None,
            })
            .await
            .is_err()
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
