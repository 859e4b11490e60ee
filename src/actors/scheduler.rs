//! Scheduler: fires runs on `cron.schedule` in `cron.timezone`, and on demand.
//!
//! A run begins at the StateKeeper (which takes the lock) and is handed to the Lister.
//! A tick while a run is still going — in this process or another — is refused with the
//! Go server's `Error: cron job is already running`.

use actix::prelude::*;
use chrono::{DateTime, Utc};

use std::sync::Arc;

use super::runs::RunHandle;
use super::state_keeper::BeginError;
use crate::mode::Mode;
use crate::schedule::Schedule;

/// Starts a run now.
#[derive(Message)]
#[rtype(result = "Result<RunHandle, BeginError>")]
pub struct RunNow {
    pub force: bool,
}

/// The next scheduled fire time, if the schedule is on.
#[derive(Message)]
#[rtype(result = "Option<DateTime<Utc>>")]
pub struct NextRun;

/// The actor.
pub struct Scheduler {
    schedule: Option<Schedule>,
    run_on_start: bool,
    /// Where runs begin: here, or for every instance sharing the bucket.
    mode: Arc<dyn Mode>,
    next: Option<DateTime<Utc>>,
}

impl Scheduler {
    /// `schedule: None` runs only on demand; `run_on_start` also runs once at start.
    pub fn new(schedule: Option<Schedule>, run_on_start: bool, mode: Arc<dyn Mode>) -> Self {
        Self { schedule, run_on_start, mode, next: None }
    }

    /// A run now, through the mode, for the cron tick `tick` if any.
    fn request(&self, force: bool, tick: Option<DateTime<Utc>>) -> ResponseFuture<Result<RunHandle, BeginError>> {
        self.mode.request_run(force, tick)
    }

    fn fire(&mut self, ctx: &mut Context<Self>, tick: Option<DateTime<Utc>>) {
        let start = self.request(false, tick);
        ctx.spawn(
            async move {
                if let Err(e) = start.await
                    && !matches!(e, BeginError::Queued)
                {
                    tracing::error!("Error: {e}");
                }
            }
            .into_actor(self),
        );
    }

    fn arm(&mut self, ctx: &mut Context<Self>) {
        let Some(schedule) = &self.schedule else { return };
        let now = Utc::now();
        self.next = schedule.next_after(now);
        let Some(next) = self.next else { return };
        tracing::info!(next = %next.to_rfc3339(), schedule = schedule.expression(), "Next scheduled run");
        let wait = (next - now).to_std().unwrap_or_default();
        ctx.run_later(wait, move |act, ctx| {
            act.fire(ctx, Some(next));
            act.arm(ctx);
        });
    }
}

impl Actor for Scheduler {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        if self.run_on_start {
            self.fire(ctx, None);
        }
        self.arm(ctx);
    }
}

impl Handler<RunNow> for Scheduler {
    type Result = ResponseFuture<Result<RunHandle, BeginError>>;

    fn handle(&mut self, msg: RunNow, _: &mut Context<Self>) -> Self::Result {
        self.request(msg.force, None)
    }
}

impl Handler<NextRun> for Scheduler {
    type Result = Option<DateTime<Utc>>;

    fn handle(&mut self, _: NextRun, _: &mut Context<Self>) -> Self::Result {
        self.next
    }
}
