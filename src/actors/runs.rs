//! Where runs begin: the one function that begins a run at the StateKeeper and hands
//! it to the Lister. The Scheduler calls it for a run of this instance's own state (the
//! state file), the Coordinator for a run over the shards owed one (bucket mode).

use actix::prelude::*;
use tokio::sync::oneshot;

use super::lister::{ListBucket, Lister};
use super::state_keeper::{BeginError, BeginRun, StateKeeper};
use crate::model::RunSummary;

/// A started run.
#[derive(Debug)]
pub struct RunHandle {
    pub run_id: String,
    /// Resolves with the run's summary when it ends.
    pub done: oneshot::Receiver<RunSummary>,
}

/// Begins a run at the StateKeeper and hands it to the Lister. What the run covers is
/// the pipeline's [`crate::scope::RunScope`] (bucket mode: the Coordinator sets the
/// shards first).
pub(crate) async fn begin(
    state_keeper: Addr<StateKeeper>,
    lister: Addr<Lister>,
    force: bool,
) -> Result<RunHandle, BeginError> {
    let mut start = match state_keeper.send(BeginRun { force }).await {
        Ok(r) => r?,
        Err(_) => return Err(BeginError::AlreadyRunning),
    };
    let done = start.done.take().expect("a new run has a receiver");
    let run_id = start.id.to_string();
    lister.do_send(ListBucket { start });
    Ok(RunHandle { run_id, done })
}
