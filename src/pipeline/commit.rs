//! The commit: one consistent cut on disk — the engine snapshot, each source's position and
//! the outbox — written before any event of it reaches a sink.
//!
//! The write is blocking file IO (temp file, fsync, rename, fsync of the directory): it runs
//! on a blocking thread, never on an async worker, so a slow disk cannot stall the HTTP
//! server or the broker clients that share the workers.

use std::sync::Arc;

use super::PipelineError;
use crate::state::{State, StateDir};

/// Where commits go; `None` without a `[state] dir` (nothing survives a restart).
#[derive(Clone)]
pub struct Store(Option<Arc<StateDir>>);

impl Store {
    pub fn new(dir: Option<StateDir>) -> Store {
        Store(dir.map(Arc::new))
    }

    pub fn is_some(&self) -> bool {
        self.0.is_some()
    }

    /// The state persisted by the previous run, or an empty one.
    pub fn load(&self) -> Result<State, PipelineError> {
        match &self.0 {
            Some(dir) => Ok(dir.load()?.unwrap_or_default()),
            None => Ok(State::default()),
        }
    }

    /// Writes `state` on a blocking thread (nothing without a store).
    pub async fn save(&self, state: State) -> Result<(), PipelineError> {
        let Some(dir) = self.0.clone() else { return Ok(()) };
        tokio::task::spawn_blocking(move || dir.save(&state))
            .await
            .map_err(|e| PipelineError::Commit(e.to_string()))??;
        Ok(())
    }
}
