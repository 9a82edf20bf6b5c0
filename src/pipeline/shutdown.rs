//! Shutdown: one token that tells every task to stop, and the tasks to wait for.
//!
//! Each task the daemon starts is registered here with its name. Stopping cancels the token
//! — an async task sees it at its next `select!`, a blocking one at its next look — and then
//! waits for each task, up to a bound, naming any that did not finish.

use std::future::Future;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// A task's view of shutdown.
#[derive(Clone, Debug, Default)]
pub struct Stop(CancellationToken);

impl Stop {
    /// Whether stopping was asked for (for blocking tasks, between reads).
    pub fn is_stopped(&self) -> bool {
        self.0.is_cancelled()
    }

    /// Completes once stopping is asked for.
    pub async fn stopped(&self) {
        self.0.cancelled().await
    }

    /// Asks every holder to stop.
    pub fn stop(&self) {
        self.0.cancel()
    }
}

/// The tasks to stop and wait for.
#[derive(Default)]
pub struct Shutdown {
    stop: Stop,
    tasks: Vec<(String, JoinHandle<()>)>,
}

impl Shutdown {
    pub fn new() -> Shutdown {
        Shutdown::default()
    }

    /// What each task watches.
    pub fn token(&self) -> Stop {
        self.stop.clone()
    }

    pub fn spawn(
        &mut self,
        name: impl Into<String>,
        task: impl Future<Output = ()> + Send + 'static,
    ) {
        self.tasks.push((name.into(), tokio::spawn(task)));
    }

    pub fn spawn_blocking(
        &mut self,
        name: impl Into<String>,
        task: impl FnOnce() + Send + 'static,
    ) {
        self.tasks.push((name.into(), tokio::task::spawn_blocking(task)));
    }

    /// A thread that is not waited for: a blocking read of standard input cannot be
    /// interrupted, so waiting for it would wait for the next line a terminal types.
    pub fn detach(name: &str, task: impl FnOnce() + Send + 'static) {
        let spawned = std::thread::Builder::new().name(name.to_string()).spawn(task);
        if let Err(e) = spawned {
            tracing::error!(task = %name, error = %e, "cannot start a thread");
        }
    }

    /// Stops every task and waits for each, at most `within` in all.
    pub async fn stop(self, within: Duration) {
        self.stop.stop();
        let until = tokio::time::Instant::now() + within;
        for (name, task) in self.tasks {
            match tokio::time::timeout_at(until, task).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::error!(task = %name, error = %e, "task failed"),
                Err(_) => tracing::warn!(task = %name, "task did not stop in time; left behind"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    #[tokio::test(start_paused = true)]
    async fn stop_cancels_every_task_and_waits_for_each() {
        let mut s = Shutdown::new();
        let done = Arc::new(AtomicUsize::new(0));
        for i in 0..3 {
            let (stop, done) = (s.token(), done.clone());
            s.spawn(format!("t{i}"), async move {
                stop.stopped().await;
                tokio::time::sleep(Duration::from_millis(10)).await;
                done.fetch_add(1, Ordering::SeqCst);
            });
        }
        s.stop(Duration::from_secs(5)).await;
        assert_eq!(done.load(Ordering::SeqCst), 3);
    }
}
