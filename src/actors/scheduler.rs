//! Scheduler: fires runs on `cron.schedule` in `cron.timezone`, and on demand.
//!
//! A run begins at the StateKeeper (which takes the lock) and is handed to the Lister.
//! A tick while a run is still going — in this process or another — is refused with the
//! Go server's `Error: cron job is already running`.

use actix::prelude::*;
use chrono::{DateTime, Utc};

use super::coordinator::{Coordinator, Trigger};
use super::lister::Lister;
use super::runs::{RunHandle, begin};
use super::state_keeper::{BeginError, StateKeeper};
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
    state_keeper: Addr<StateKeeper>,
    lister: Addr<Lister>,
    /// With `state.backend: bucket`, runs are requested of the whole cluster through it.
    coordinator: Option<Addr<Coordinator>>,
    next: Option<DateTime<Utc>>,
}

impl Scheduler {
    /// `schedule: None` runs only on demand; `run_on_start` also runs once at start.
    pub fn new(
        schedule: Option<Schedule>,
        run_on_start: bool,
        state_keeper: Addr<StateKeeper>,
        lister: Addr<Lister>,
    ) -> Self {
        Self { schedule, run_on_start, state_keeper, lister, coordinator: None, next: None }
    }

    /// Requests runs of the cluster through `coordinator` instead of beginning them here.
    pub fn with_coordinator(self, coordinator: Option<Addr<Coordinator>>) -> Self {
        Self { coordinator, ..self }
    }

    /// A run now: here, or (bucket mode) of the cluster, for the cron tick `tick` if any.
    fn request(&self, force: bool, tick: Option<DateTime<Utc>>) -> ResponseFuture<Result<RunHandle, BeginError>> {
        match &self.coordinator {
            Some(c) => {
                let sent = c.send(Trigger { force, at: tick });
                Box::pin(async move { sent.await.unwrap_or(Err(BeginError::AlreadyRunning)) })
            }
            None => Box::pin(begin(self.state_keeper.clone(), self.lister.clone(), force)),
        }
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
