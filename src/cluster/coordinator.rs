//! Coordinator (`state.backend: bucket` only): keeps this instance's share of the
//! shards and runs them when they are owed a run.
//!
//! Each turn (every `lease / 6`, at most a second, and whenever a checkpoint is saved)
//! it writes the shards whose state changed or whose lease is a third used (one
//! conditional PUT each: renewal and checkpoint at once). Each full turn (every period,
//! never put off by checkpoints) it also reads the trigger and, every third of a lease,
//! beats its heartbeat, reads the other instances' and rebalances: it releases shards
//! above its fair share (⌈shards / live instances⌉) and takes free or expired ones below
//! it. When no run is going on here and a held shard has not answered the latest
//! trigger, it begins a run over the shards owed one. A refused write means another
//! instance took the shard: it is dropped at once, and the Lister and Uploader stop
//! acting for it.
//!
//! One task owns the loop's state (`Turn`) and makes every storage call of it; the
//! actor's handlers only put a `Command` on its channel (and wait on a oneshot for the
//! answer when there is one). No lock is held across a storage call: there is none to
//! hold. A run request (`Trigger`, from `POST /api/runs` or a cron tick) is answered as
//! soon as it is on the channel, so the API never waits for the bucket nor for a turn.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use serde::Deserialize;
use tokio::sync::{mpsc, oneshot};

use crate::actors::lister::Lister;
use crate::actors::runs::{RunHandle, begin};
use crate::actors::state_keeper::{BeginError, StateKeeper};
use crate::cluster::lease::{LeaseError, LeaseRecord, Leases};
use crate::cluster::plan::{fair_share, plan};
use crate::cluster::{Cluster, HeldShard, InstanceRecord, ShardView, TriggerRecord, answers, shard_view};
use crate::config::Config;
use crate::model::{RunSummary, ShardReport};
use crate::state::State;
use crate::storage::{Storage, StorageError};

/// Records a run request for the whole cluster and runs this instance's owed shards.
/// Answers this instance's run, or [`BeginError::Queued`] when none could start now.
#[derive(Message)]
#[rtype(result = "Result<RunHandle, BeginError>")]
pub struct Trigger {
    pub force: bool,
    /// A cron tick's scheduled time (every instance writes the same one); `None` for now.
    pub at: Option<DateTime<Utc>>,
}

/// `run-once`: records a run request for the whole cluster, and from now on keeps the
/// shards still owed it (no release above the fair share) until they have answered it.
/// Answers the time of the request in force, which [`FinishRun`] then waits for.
#[derive(Message)]
#[rtype(result = "Result<DateTime<Utc>, BeginError>")]
pub struct RequestRun {
    pub force: bool,
}

/// `run-once`: where the whole run for the request `at` stands. Every shard still owed
/// it that no live instance holds (released, expired, never created) is taken here,
/// above the fair share, and run by this instance.
/// `None` once the Coordinator has stopped.
#[derive(Message)]
#[rtype(result = "Option<WholeRun>")]
pub struct FinishRun {
    pub at: DateTime<Utc>,
}

/// The whole cluster's run for one request, as [`FinishRun`] sees it.
#[derive(Debug, Clone, Default)]
pub struct WholeRun {
    /// Shards that have not answered the request yet (held by a live instance that is
    /// running them, or just taken here).
    pub pending: BTreeSet<u32>,
    /// Shards whose object does not parse: they cannot be run until repaired.
    pub unreadable: BTreeSet<u32>,
    /// Shards that have answered it: who ran each, and what it did there.
    pub done: Vec<ShardReport>,
    /// This instance's runs since the request.
    pub own: Vec<RunSummary>,
}

/// Starts no more runs (shutdown has begun). Send before stopping the pipeline.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Quiesce;

/// Leaves the cluster: releases every lease (with its state) and removes the heartbeat.
/// Send after the pipeline has stopped.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Leave;

/// The actor: a front for the loop's task, which it starts and feeds with [`Command`]s.
pub struct Coordinator {
    commands: mpsc::UnboundedSender<Command>,
    /// The loop, until the actor starts it.
    task: Option<Task>,
}

/// What the handlers ask of the loop's task; each is done between two turns.
enum Command {
    /// [`Trigger`]: record a run request, begin a run over the owed shards held here.
    Trigger { force: bool, at: Option<DateTime<Utc>> },
    /// [`RequestRun`].
    RequestRun { force: bool, reply: oneshot::Sender<Result<DateTime<Utc>, BeginError>> },
    /// [`FinishRun`].
    FinishRun { at: DateTime<Utc>, reply: oneshot::Sender<WholeRun> },
    /// [`Quiesce`].
    Quiesce { reply: oneshot::Sender<()> },
    /// [`Leave`].
    Leave { reply: oneshot::Sender<()> },
    /// A run begun here ended (its summary, if it sent one).
    RunEnded(Option<Box<RunSummary>>),
}

/// The loop's task: owns what it remembers between turns, and does its storage calls.
struct Task {
    inner: Inner,
    turn: Turn,
    commands: mpsc::UnboundedReceiver<Command>,
    /// For a run begun here to say it ended; weak, so the channel closes (and the task
    /// ends) when the actor is gone.
    me: mpsc::WeakUnboundedSender<Command>,
}

/// What the loop works with (fixed at start).
struct Inner {
    cluster: Arc<Cluster>,
    storage: Storage,
    leases: Leases,
    config: Arc<Config>,
    state_keeper: Addr<StateKeeper>,
    lister: Addr<Lister>,
    metrics: Arc<crate::metrics::Metrics>,
    started_at: DateTime<Utc>,
}

/// What the loop remembers between turns.
#[derive(Default)]
struct Turn {
    /// Successful surveys so far.
    surveys: u64,
    running: bool,
    left: bool,
    trigger: Option<TriggerRecord>,
    live: usize,
    /// Shards other live instances list in their heartbeats (not worth reading).
    held_elsewhere: BTreeSet<u32>,
    /// Shutting down: no new runs.
    quiet: bool,
    /// When the heartbeat was last written and the others' last read.
    last_survey: Option<DateTime<Utc>>,
    /// `run-once`: the request whose whole run this instance waits for; shards still
    /// owed it are not released to rebalance.
    finishing: Option<DateTime<Utc>>,
    /// `run-once`: this instance's runs since then.
    finished: Vec<RunSummary>,
}

impl Coordinator {
    pub fn new(
        cluster: Arc<Cluster>,
        storage: Storage,
        config: Arc<Config>,
        state_keeper: Addr<StateKeeper>,
        lister: Addr<Lister>,
        metrics: Arc<crate::metrics::Metrics>,
    ) -> Self {
        let c = &cluster.config;
        let leases = Leases {
            storage: storage.clone(),
            holder: c.instance_id.clone(),
            duration: c.lease,
            skew: c.max_clock_skew,
        };
        let inner = Inner { cluster, storage, leases, config, state_keeper, lister, metrics, started_at: Utc::now() };
        let (commands, receiver) = mpsc::unbounded_channel();
        let task = Task { inner, turn: Turn::default(), commands: receiver, me: commands.downgrade() };
        Self { commands, task: Some(task) }
    }

    /// Hands `command` to the loop's task (dropped if the task has ended).
    fn tell(&self, command: Command) {
        let _ = self.commands.send(command);
    }

    /// Hands the loop a command that answers; the answer comes on the receiver (closed,
    /// if the task has ended).
    fn ask<T>(&self, command: impl FnOnce(oneshot::Sender<T>) -> Command) -> oneshot::Receiver<T> {
        let (reply, answer) = oneshot::channel();
        self.tell(command(reply));
        answer
    }
}

impl Actor for Coordinator {
    type Context = Context<Self>;

    fn started(&mut self, _: &mut Context<Self>) {
        let Some(task) = self.task.take() else { return };
        let c = &task.inner.cluster.config;
        tracing::info!(instance = %c.instance_id, shards = c.shards, lease_s = c.lease.as_secs(), "Joining the cluster");
        actix::spawn(task.run());
    }
}

impl Handler<Trigger> for Coordinator {
    type Result = Result<RunHandle, BeginError>;

    /// Answers at once, before any storage call (so `POST /api/runs` never waits for
    /// the bucket nor for a turn of the loop): the loop's task writes the request, and
    /// begins a run over the owed shards held here, when it comes to it.
    fn handle(&mut self, msg: Trigger, _: &mut Context<Self>) -> Self::Result {
        self.tell(Command::Trigger { force: msg.force, at: msg.at });
        Err(BeginError::Queued)
    }
}

impl Handler<RequestRun> for Coordinator {
    type Result = ResponseFuture<Result<DateTime<Utc>, BeginError>>;

    fn handle(&mut self, msg: RequestRun, _: &mut Context<Self>) -> Self::Result {
        let answer = self.ask(move |reply| Command::RequestRun { force: msg.force, reply });
        Box::pin(async move {
            answer.await.unwrap_or_else(|_| Err(BeginError::Request("the coordinator has stopped".into())))
        })
    }
}

impl Handler<FinishRun> for Coordinator {
    type Result = ResponseFuture<Option<WholeRun>>;

    fn handle(&mut self, msg: FinishRun, _: &mut Context<Self>) -> Self::Result {
        let answer = self.ask(move |reply| Command::FinishRun { at: msg.at, reply });
        Box::pin(async move { answer.await.ok() })
    }
}

impl Handler<Quiesce> for Coordinator {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, _: Quiesce, _: &mut Context<Self>) -> Self::Result {
        let answer = self.ask(|reply| Command::Quiesce { reply });
        Box::pin(async move {
            let _ = answer.await;
        })
    }
}

impl Handler<Leave> for Coordinator {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, _: Leave, _: &mut Context<Self>) -> Self::Result {
        let answer = self.ask(|reply| Command::Leave { reply });
        Box::pin(async move {
            let _ = answer.await;
        })
    }
}

/// What woke the loop.
enum Wake {
    /// A full turn is due.
    Period,
    /// A checkpoint was saved: write the shards.
    Flush,
    Command(Command),
    /// The actor is gone.
    Closed,
}

impl Task {
    /// The loop: a turn every `lease / 6` (at most a second: a run request is seen
    /// within a second; heartbeats and leases are written only every third of a lease),
    /// shard writes whenever a checkpoint is saved, and the commands in between. Ends
    /// when the actor is gone; after [`Leave`] it only answers.
    async fn run(mut self) {
        let period = (self.inner.cluster.config.lease / 6).clamp(Duration::from_millis(200), Duration::from_secs(1));
        let mut next_full = tokio::time::Instant::now() + period;
        loop {
            let active = !self.turn.left;
            let wake = tokio::select! {
                command = self.commands.recv() => command.map_or(Wake::Closed, Wake::Command),
                _ = tokio::time::sleep_until(next_full), if active => Wake::Period,
                _ = self.inner.cluster.flush.notified(), if active => Wake::Flush,
            };
            // Checkpoint wake-ups only write shards; they never put off the full turn.
            let full = match wake {
                Wake::Closed => break,
                Wake::Command(command) => {
                    if !self.command(command).await {
                        continue;
                    }
                    true
                }
                Wake::Period => true,
                Wake::Flush => tokio::time::Instant::now() >= next_full,
            };
            if full {
                next_full = tokio::time::Instant::now() + period;
            }
            self.turn(full).await;
        }
    }

    /// Does one command; true when a full turn should follow at once.
    async fn command(&mut self, command: Command) -> bool {
        match command {
            Command::Trigger { force, at } => {
                if let Err(e) = self.trigger(force, at).await {
                    tracing::error!(error = %e, "Cannot request a run of the cluster");
                }
                false
            }
            Command::RequestRun { force, reply } => {
                let _ = reply.send(self.request_run(force).await);
                // The turn begins a run over the owed shards held here.
                true
            }
            Command::FinishRun { at, reply } => {
                let (whole, took) = self.finish_run(at).await;
                let _ = reply.send(whole);
                took
            }
            Command::Quiesce { reply } => {
                self.turn.quiet = true;
                let _ = reply.send(());
                false
            }
            Command::Leave { reply } => {
                if !self.turn.left {
                    self.inner.leave().await;
                    self.turn.left = true;
                }
                let _ = reply.send(());
                false
            }
            Command::RunEnded(summary) => {
                self.turn.running = false;
                if let (Some(s), true) = (summary, self.turn.finishing.is_some()) {
                    self.turn.finished.push(*s);
                }
                true
            }
        }
    }

    /// One turn of the loop: writes dirty shards and renews leases; with `full`, also
    /// reads the trigger and looks for owed shards, and every third of a lease beats the
    /// heartbeat, reads the others' and rebalances. Nothing once the instance has left.
    async fn turn(&mut self, full: bool) {
        if self.turn.left {
            return;
        }
        let inner = &self.inner;
        let turn = &mut self.turn;
        inner.write_held(Utc::now()).await;
        if !full {
            return;
        }
        let now = Utc::now();
        let survey_due = turn.last_survey.is_none_or(|t| now - t >= inner.lease() / 3);
        if survey_due {
            match inner.survey(turn).await {
                Ok(()) => {
                    turn.surveys += 1;
                    turn.last_survey = Some(now);
                    // From the second survey on, when the others have had time to show up.
                    if turn.surveys > 1 {
                        inner.rebalance(turn).await;
                    }
                }
                Err(e) => tracing::warn!(error = %e, "Cluster survey failed; retrying"),
            }
        }
        inner.read_trigger(turn).await;
        self.maybe_run().await;
        self.inner.publish(&self.turn);
    }

    /// Begins a run over the owed shards, if no run is going on here; its end comes back
    /// as [`Command::RunEnded`].
    async fn maybe_run(&mut self) -> Option<String> {
        let turn = &mut self.turn;
        if turn.running || turn.quiet {
            return None;
        }
        let Some(trigger) = &turn.trigger else { return None };
        let owed = self.inner.cluster.owed(trigger.at, Utc::now());
        if owed.is_empty() {
            return None;
        }
        let force = trigger.force;
        self.inner.cluster.set_scope(&owed, Some(trigger.at));
        tracing::info!(shards = ?owed, "Running the shards owed a run");
        match begin(self.inner.state_keeper.clone(), self.inner.lister.clone(), force).await {
            Ok(handle) => {
                turn.running = true;
                let me = self.me.clone();
                actix::spawn(async move {
                    let summary = handle.done.await.ok().map(Box::new);
                    if let Some(me) = me.upgrade() {
                        let _ = me.send(Command::RunEnded(summary));
                    }
                });
                Some(handle.run_id)
            }
            Err(e) => {
                tracing::error!(error = %e, "Cannot begin a run");
                None
            }
        }
    }

    /// Records a run request (its time taken now, or the cron tick's) and begins a run
    /// over the owed shards held here, if none is going on.
    async fn trigger(&mut self, force: bool, tick: Option<DateTime<Utc>>) -> Result<(), StorageError> {
        let at = tick.unwrap_or_else(Utc::now);
        let record = TriggerRecord { at, by: self.inner.cluster.config.instance_id.clone(), force };
        self.turn.trigger = Some(self.inner.write_trigger(record).await?);
        self.maybe_run().await;
        self.inner.publish(&self.turn);
        Ok(())
    }

    /// `run-once`: records a run request and waits for its whole run ([`RequestRun`]).
    async fn request_run(&mut self, force: bool) -> Result<DateTime<Utc>, BeginError> {
        let record = TriggerRecord { at: Utc::now(), by: self.inner.cluster.config.instance_id.clone(), force };
        let trigger = self.inner.write_trigger(record).await.map_err(|e| BeginError::Request(e.to_string()))?;
        let at = trigger.at;
        self.turn.trigger = Some(trigger);
        self.turn.finishing = Some(at);
        Ok(at)
    }

    /// `run-once`: where the whole run for `at` stands ([`FinishRun`]); takes the owed
    /// shards that no live instance holds. Also says whether it took any.
    async fn finish_run(&mut self, at: DateTime<Utc>) -> (WholeRun, bool) {
        let inner = &self.inner;
        let mut whole = WholeRun { own: self.turn.finished.clone(), ..WholeRun::default() };
        let held = inner.cluster.held_runs(at);
        let mut took = false;
        for shard in 0..inner.cluster.config.shards {
            let report = |run: crate::state::PartRun| ShardReport { shard, run };
            match held.get(&shard) {
                Some(Some(run)) => whole.done.push(report(run.clone())),
                Some(None) => {
                    whole.pending.insert(shard);
                }
                None => match inner.look_or_take(shard, at, self.turn.quiet).await {
                    Look::Done(run) => whole.done.push(report(run)),
                    Look::Pending { took: t } => {
                        took |= t;
                        whole.pending.insert(shard);
                    }
                    Look::Unreadable => {
                        whole.unreadable.insert(shard);
                    }
                },
            }
        }
        (whole, took)
    }
}

impl Inner {
    fn skew(&self) -> chrono::Duration {
        chrono::Duration::from_std(self.cluster.config.max_clock_skew).unwrap_or_default()
    }

    fn lease(&self) -> chrono::Duration {
        chrono::Duration::from_std(self.cluster.config.lease).unwrap_or_default()
    }

    /// Writes every held shard whose state changed or whose lease is a third used: a
    /// renewal and a checkpoint in one conditional PUT.
    async fn write_held(&self, now: DateTime<Utc>) {
        for shard in self.cluster.due_for_write(now, self.lease() * 2 / 3) {
            let Some(h) = self.cluster.held(shard) else { continue };
            let data = serde_json::to_value(&h.state).expect("state serialises");
            match self.leases.write(&h.lease, now, data).await {
                Ok(lease) => self.cluster.written(shard, lease, &h.state),
                Err(e) => self.write_failed(shard, &h, e, now),
            }
        }
    }

    fn write_failed(&self, shard: u32, h: &HeldShard, e: LeaseError, now: DateTime<Utc>) {
        match e {
            LeaseError::Lost(key) => {
                self.cluster.remove(shard);
                self.metrics.lease_lost();
                self.cluster.update_view(|v| v.leases_lost += 1);
                tracing::warn!(shard, key = %key, "Lease lost to another instance: write refused; dropping the shard");
            }
            e if !h.lease.valid_at(now, self.cluster.config.max_clock_skew) => {
                tracing::warn!(shard, error = %e, "Cannot renew the lease and it has run out: no more writes for this shard until it is renewed");
            }
            e => tracing::warn!(shard, error = %e, "Cannot write the shard's lease; retrying"),
        }
    }

    /// Writes this instance's heartbeat: alive for another lease, holding these shards.
    async fn beat(&self, running: bool) -> Result<(), StorageError> {
        let now = Utc::now();
        let id = &self.cluster.config.instance_id;
        let me = InstanceRecord {
            id: id.clone(),
            started_at: self.started_at,
            heartbeat_at: now,
            expires_at: now + self.lease(),
            shards: self.cluster.held_leases(),
            running,
        };
        let body = serde_json::to_vec(&me).expect("record serialises");
        self.storage.put(&self.cluster.instance_key(id), body.into(), "application/json").await.map(|_| ())
    }

    /// Beats the heartbeat and reads the live instances'.
    async fn survey(&self, turn: &mut Turn) -> Result<(), StorageError> {
        let now = Utc::now();
        let c = &self.cluster.config;
        self.beat(turn.running).await?;
        let mut live = Vec::new();
        let mut listing = self.storage.list(Some(&format!("{}instances/", c.prefix)));
        while let Some(info) = listing.next().await {
            let info = info?;
            // One unreadable heartbeat must not stop the survey: skip it.
            let record = match self.storage.get(&info.key, 1 << 20).await {
                Ok((_, body)) => serde_json::from_slice::<InstanceRecord>(&body).ok(),
                Err(StorageError::NotFound { .. }) => None,
                Err(e) => {
                    tracing::warn!(key = %info.key, error = %e, "Cannot read a heartbeat; skipping it");
                    None
                }
            };
            match record {
                Some(r) if now < r.expires_at + self.skew() || r.id == c.instance_id => live.push(r),
                // Long dead: tidy up (any instance may; without delete rights it just stays).
                Some(r) if now > r.expires_at + chrono::Duration::hours(1) => {
                    if let Err(e) = self.storage.delete(&info.key).await {
                        tracing::debug!(key = %info.key, error = %e, "Cannot remove a long-dead heartbeat");
                    }
                }
                _ => {}
            }
        }
        turn.live = live.len().max(1);
        turn.held_elsewhere = live
            .iter()
            .filter(|r| r.id != c.instance_id)
            .flat_map(|r| r.shards.iter().filter(|l| now < l.expires_at + self.skew()).map(|l| l.shard))
            .collect();
        self.cluster.update_view(|v| {
            v.all_shards = (0..c.shards)
                .map(|shard| {
                    let listed = live.iter().find_map(|r| r.shards.iter().find(|l| l.shard == shard).map(|l| (r, l)));
                    match listed {
                        Some((r, l)) => ShardView {
                            shard,
                            holder: r.id.clone(),
                            expires_at: Some(l.expires_at),
                            epoch: l.epoch,
                            ..Default::default()
                        },
                        None => v
                            .all_shards
                            .iter()
                            .find(|x| x.shard == shard)
                            .cloned()
                            .unwrap_or(ShardView { shard, ..Default::default() }),
                    }
                })
                .collect();
            v.instances = live;
            v.fair_share = fair_share(c.shards, turn.live);
        });
        Ok(())
    }

    /// The latest run request, from `trigger.json` (one small GET a turn).
    async fn read_trigger(&self, turn: &mut Turn) {
        match self.storage.get(&self.cluster.trigger_key(), 1 << 20).await {
            Ok((_, body)) => match serde_json::from_slice(&body) {
                Ok(t) => turn.trigger = Some(t),
                Err(e) => tracing::warn!(error = %e, "trigger.json is not valid; ignoring it"),
            },
            Err(StorageError::NotFound { .. }) => turn.trigger = None,
            Err(e) => tracing::warn!(error = %e, "Cannot read trigger.json; retrying"),
        }
    }

    /// Releases shards above the fair share, takes free ones below it.
    async fn rebalance(&self, turn: &Turn) {
        let c = &self.cluster.config;
        let fair = fair_share(c.shards, turn.live) as usize;
        let now = Utc::now();
        let mut held = self.cluster.held_ids();
        // A `run-once` gives back only shards that have answered its request: the others
        // it runs itself.
        let releasable = match turn.finishing {
            Some(at) => self.cluster.answered(at),
            None => held.clone(),
        };
        let plan = plan(&c.instance_id, c.shards, turn.live, &held, &releasable, &turn.held_elsewhere, turn.quiet);
        // Above the share: give back the highest shards (their state goes with them),
        // then say so in the heartbeat at once, or others would not look at them for a
        // third of a lease.
        for &shard in &plan.release {
            held.remove(&shard);
            let Some(h) = self.cluster.remove(shard) else { continue };
            let data = serde_json::to_value(&h.state).expect("state serialises");
            match self.leases.release(&h.lease, now, data).await {
                Ok(()) => tracing::info!(shard, fair, "Released a shard to rebalance"),
                Err(e) => tracing::warn!(shard, error = %e, "Could not release a shard; it expires instead"),
            }
        }
        if !plan.release.is_empty()
            && let Err(e) = self.beat(turn.running).await
        {
            tracing::warn!(error = %e, "Cannot write the heartbeat");
        }
        if held.len() >= fair {
            return;
        }
        // Below it: look at the candidates in the plan's order, until the share is held.
        let (mut seen, mut unreadable) = (Vec::new(), Vec::new());
        for shard in plan.candidates {
            if held.len() >= fair {
                break;
            }
            let key = self.cluster.shard_key(shard);
            let current = match self.leases.read(&key).await {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(shard, error = %e, "Cannot read the shard's lease");
                    if matches!(e, LeaseError::Corrupt(..)) {
                        unreadable.push(shard);
                    }
                    continue;
                }
            };
            // A shard whose state does not parse is left alone (taking it would wipe it).
            let state = match current.as_ref().map(|(r, _)| &r.data) {
                None | Some(serde_json::Value::Null) => None,
                Some(data) => match State::deserialize(data) {
                    Ok(s) => Some(s),
                    Err(e) => {
                        unreadable.push(shard);
                        seen.push(view_of(shard, current.as_ref().map(|(r, _)| r), None));
                        tracing::error!(shard, key = %key, error = %e, "The shard's state does not parse: not taking it (delete the object to start the shard afresh)");
                        continue;
                    }
                },
            };
            seen.push(view_of(shard, current.as_ref().map(|(r, _)| r), state.as_ref()));
            if current.as_ref().is_some_and(|(r, _)| !self.leases.is_free(r, now)) {
                continue;
            }
            if let Some((r, _)) = &current
                && !r.holder.is_empty()
                && r.holder != c.instance_id
            {
                tracing::warn!(shard, from = %r.holder, "Taking over an expired lease");
            }
            match self.leases.take(&key, current, now).await {
                Ok(Some(lease)) => {
                    let created = state.is_none();
                    let state = state.unwrap_or_else(|| State::initial(&self.config.state.initial, now));
                    tracing::info!(shard, epoch = lease.record.epoch, "Took a shard");
                    seen.push(shard_view(shard, &lease, &state));
                    self.cluster.insert(shard, HeldShard { lease, state, dirty: created });
                    held.insert(shard);
                }
                Ok(None) => {}
                Err(e) => tracing::warn!(shard, error = %e, "Cannot take the shard's lease"),
            }
        }
        self.cluster.update_view(|v| {
            unreadable.sort_unstable();
            v.unreadable = unreadable;
            for s in seen {
                match v.all_shards.iter_mut().find(|x| x.shard == s.shard) {
                    Some(x) => *x = s,
                    None => v.all_shards.push(s),
                }
            }
            v.all_shards.sort_by_key(|s| s.shard);
        });
    }

    /// A shard this instance does not hold: has it answered `at`? If not and it is free
    /// (released, expired, or never created), take it (unless `quiet`).
    async fn look_or_take(&self, shard: u32, at: DateTime<Utc>, quiet: bool) -> Look {
        let key = self.cluster.shard_key(shard);
        let current = match self.leases.read(&key).await {
            Ok(c) => c,
            Err(LeaseError::Corrupt(..)) => return Look::Unreadable,
            Err(e) => {
                tracing::warn!(shard, error = %e, "Cannot read the shard's lease; looking again");
                return Look::Pending { took: false };
            }
        };
        let state = match current.as_ref().map(|(r, _)| &r.data) {
            None | Some(serde_json::Value::Null) => None,
            Some(data) => match State::deserialize(data) {
                Ok(s) => Some(s),
                Err(_) => return Look::Unreadable,
            },
        };
        if let Some(s) = &state
            && answers(s, at)
        {
            return Look::Done(s.last_run.clone().unwrap_or_default());
        }
        let now = Utc::now();
        if quiet || current.as_ref().is_some_and(|(r, _)| !self.leases.is_free(r, now)) {
            return Look::Pending { took: false };
        }
        match self.leases.take(&key, current, now).await {
            Ok(Some(lease)) => {
                let created = state.is_none();
                let state = state.unwrap_or_else(|| State::initial(&self.config.state.initial, now));
                tracing::info!(
                    shard,
                    epoch = lease.record.epoch,
                    "Took a shard owed the run that no live instance holds"
                );
                self.cluster.insert(shard, HeldShard { lease, state, dirty: created });
                Look::Pending { took: true }
            }
            Ok(None) => Look::Pending { took: false },
            Err(e) => {
                tracing::warn!(shard, error = %e, "Cannot take the shard's lease");
                Look::Pending { took: false }
            }
        }
    }

    /// Records a run request in `trigger.json` unless one as recent is there (every
    /// instance fires the same cron tick; the first write is enough). A compare-and-swap,
    /// retried on conflict, so a request never goes back in time. Answers the request
    /// now in force.
    async fn write_trigger(&self, record: TriggerRecord) -> Result<TriggerRecord, StorageError> {
        let key = self.cluster.trigger_key();
        for _ in 0..10 {
            let current = match self.storage.get(&key, 1 << 20).await {
                Ok((info, body)) => Some((serde_json::from_slice::<TriggerRecord>(&body).ok(), info.etag)),
                Err(StorageError::NotFound { .. }) => None,
                Err(e) => return Err(e),
            };
            // Never back in time: a request as recent is there already.
            if let Some((Some(t), _)) = &current
                && t.at >= record.at
            {
                return Ok(t.clone());
            }
            let body = bytes::Bytes::from(serde_json::to_vec(&record).expect("record serialises"));
            let written = match &current {
                None => self.storage.put_new(&key, body, "application/json").await,
                Some((_, Some(etag))) => self.storage.put_if_match(&key, body, "application/json", etag).await,
                Some((_, None)) => self.storage.put(&key, body, "application/json").await,
            };
            match written {
                Ok(_) => {
                    tracing::info!(force = record.force, at = %record.at.to_rfc3339(), "Run requested for the whole cluster");
                    return Ok(record);
                }
                // Another instance wrote it meanwhile: look again.
                Err(StorageError::AlreadyExists { .. } | StorageError::Changed { .. }) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(StorageError::Changed { key })
    }

    /// Releases every lease (with its state) and removes the heartbeat.
    async fn leave(&self) {
        let now = Utc::now();
        // Each release writes the shard's latest state too.
        for shard in self.cluster.held_ids() {
            let Some(h) = self.cluster.remove(shard) else { continue };
            let data = serde_json::to_value(&h.state).expect("state serialises");
            if let Err(e) = self.leases.release(&h.lease, now, data).await {
                tracing::warn!(shard, error = %e, "Could not release a shard; it expires instead");
            }
        }
        let key = self.cluster.instance_key(&self.cluster.config.instance_id);
        if let Err(e) = self.storage.delete(&key).await {
            tracing::warn!(error = %e, "Could not remove this instance's heartbeat; it expires instead");
        }
        tracing::info!("Left the cluster");
    }

    fn publish(&self, turn: &Turn) {
        self.cluster.update_view(|v| v.trigger = turn.trigger.clone());
        self.metrics.set_cluster(self.cluster.held_ids().len(), turn.live);
    }
}

/// A shard not held here, as [`Inner::look_or_take`] found it.
enum Look {
    /// It answered the request: its last run.
    Done(crate::state::PartRun),
    /// Still owed it; `took`: taken here just now.
    Pending {
        took: bool,
    },
    Unreadable,
}

/// A shard as read from its object (lease record and parsed state).
fn view_of(shard: u32, r: Option<&LeaseRecord>, state: Option<&State>) -> ShardView {
    match r {
        Some(r) => ShardView {
            shard,
            holder: r.holder.clone(),
            expires_at: Some(r.expires_at),
            epoch: r.epoch,
            last_complete_run_started_at: state.and_then(|s| s.last_complete_run_started_at),
        },
        None => ShardView { shard, ..Default::default() },
    }
}
