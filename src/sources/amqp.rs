//! The AMQP source: consumes the queue OpenZiti's `amqp` event handler writes to.

use serde::Deserialize;

use super::Common;
use crate::support::problems::Problems;

#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct Config {
    /// `cluster`, `reporter`, `format`: read apart, see [`Common`].
    #[serde(skip)]
    pub common: Common,
    /// `amqp://user:password@host:5672/vhost`; required.
    pub url: Option<String>,
    /// The queue to consume; required.
    pub queue: Option<String>,
    /// Unacknowledged deliveries in flight (default 256).
    #[serde(default = "default_prefetch")]
    pub prefetch: u16,
    /// Declare the queue durable, as OpenZiti's handler does by default.
    #[serde(default = "default_true")]
    pub durable: bool,
}

fn default_prefetch() -> u16 {
    256
}

fn default_true() -> bool {
    true
}

impl Config {
    pub(crate) fn validate(self, path: &str, p: &mut Problems) -> Option<Self> {
        let mut ok = p.require(path, "url", self.url.is_some());
        ok &= p.require(path, "queue", self.queue.is_some());
        ok.then_some(self)
    }
}

// ---- running ------------------------------------------------------------------------------

use std::sync::atomic::{AtomicUsize, Ordering};

use std::sync::Arc;

use futures_util::StreamExt;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{Connection, ConnectionProperties};

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
        let server = broker::server("AMQP", self.url.as_deref());
        tasks.spawn(ctx.name.clone(), async move {
            broker::reconnecting(&ctx, server, |link| session(&config, &ctx, link)).await
        });
    }
}

async fn session(
    config: &Config,
    ctx: &SourceContext,
    link: std::sync::Arc<Link>,
) -> Result<(), SourceError> {
    let (name, source, tx, stop) = (&ctx.name, ctx.index, &ctx.tx, &ctx.stop);
    let url = config.url.clone().unwrap_or_default();
    let e = |e: lapin::Error| SourceError::broker(&url, e);
    let queue = config.queue.clone().unwrap_or_default();
    let conn = Connection::connect(&url, ConnectionProperties::default()).await.map_err(e)?;
    let channel = conn.create_channel().await.map_err(e)?;
    channel.basic_qos(config.prefetch, BasicQosOptions::default()).await.map_err(e)?;
    // OpenZiti's amqp handler declares the queue durable by default; declaring it the same
    // way is harmless and lets herald start first.
    let declared = channel
        .queue_declare(
            queue.as_str().into(),
            QueueDeclareOptions { durable: config.durable, ..Default::default() },
            FieldTable::default(),
        )
        .await
        .map_err(e)?;
    let mut consumer = channel
        .basic_consume(
            queue.as_str().into(),
            "herald".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .map_err(e)?;
    tracing::info!(source = %name, queue = %queue, waiting = declared.message_count(), "consuming");
    link.up();
    let outstanding = Arc::new(AtomicUsize::new(0));
    let mut fresh = Freshness { source, caught_up: false };
    if !fresh.set(tx, declared.message_count() == 0).await {
        return Ok(());
    }
    loop {
        let next = tokio::select! {
            _ = stop.stopped() => {
                drain(&outstanding).await;
                return Ok(());
            }
            next = tokio::time::timeout(QUIET, consumer.next()) => next,
        };
        let delivery = match next {
            Err(_) => {
                if !fresh.quiet(tx).await {
                    return Ok(());
                }
                continue;
            }
            Ok(None) => return Err(SourceError::broker(&url, "the broker closed the consumer")),
            Ok(Some(d)) => d.map_err(e)?,
        };
        let Some(live) = fresh.arrived(tx).await else { return Ok(()) };
        let lines = message_lines(&delivery.data);
        let key = Some(message_key(&delivery.data));
        let redelivery = delivery.redelivered;
        let acker = delivery.acker;
        outstanding.fetch_add(1, Ordering::AcqRel);
        let settled = Outstanding(outstanding.clone());
        let on_commit = Box::new(move || {
            tokio::spawn(async move {
                if let Err(e) = acker.ack(BasicAckOptions::default()).await {
                    tracing::warn!(error = %e, "AMQP ack failed; the broker will redeliver");
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
