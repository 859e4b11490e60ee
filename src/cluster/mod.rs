//! Several instances on one bucket (`state.backend: bucket`): the objects they share,
//! the shard of a key, and the state store that keeps each shard's state inside its
//! lease object.
//!
//! Under `state.prefix` (default `.image-converting-server/`) live:
//! - `shards/NNNN.json`: one [`crate::cluster::lease::LeaseRecord`] per shard; its `data` is the
//!   shard's [`State`] (ledger, cursor, watermark). Only the holder writes it, and only
//!   with `If-Match` on the ETag it last wrote, so every checkpoint is fenced by the lease.
//! - `instances/<id>.json`: each instance's heartbeat ([`InstanceRecord`]), rewritten by
//!   its owner only; the live ones decide each instance's fair share of shards.
//! - `trigger.json`: the latest run request ([`TriggerRecord`]), from a cron tick or
//!   `POST /api/runs` on any instance. A shard whose last complete run started before it
//!   is owed a run, whoever holds it (so a taken-over shard carries its owed run along).
//!
//! The [`Coordinator`] actor ([`coordinator`]) takes, renews and releases the leases,
//! as [`plan`] says; [`Shared`] is this mode's side of the [`crate::mode`]
//! seam; the StateKeeper reads and writes state through [`ClusterStore`] exactly as it
//! does with the local file, and the Lister and Uploader ask the cluster, as their
//! [`RunScope`], before every conversion and put.

pub mod coordinator;
pub mod lease;
mod mode;
pub mod plan;

pub use coordinator::Coordinator;
pub use mode::Shared;
pub use plan::fair_share;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::cluster::lease::Held;
use crate::config::ClusterConfig;
use crate::scope::{Cover, RunScope};
use crate::state::{LedgerDecision, LockError, PartRun, State, StateError, StateStore, Totals, UpdateError, Updated};

/// The lease object of `shard` under `prefix`.
pub fn shard_key(prefix: &str, shard: u32) -> String {
    format!("{prefix}shards/{shard:04}.json")
}

pub use crate::naming::shard_of;

/// The shards one run covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardSet {
    pub count: u32,
    pub ids: BTreeSet<u32>,
}

impl ShardSet {
    pub fn contains(&self, key: &str) -> bool {
        self.ids.contains(&shard_of(key, self.count))
    }
}

/// An instance's heartbeat object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InstanceRecord {
    pub id: String,
    pub started_at: DateTime<Utc>,
    pub heartbeat_at: DateTime<Utc>,
    /// Live until then (plus the clock-skew margin).
    pub expires_at: DateTime<Utc>,
    /// The shards it holds, with their leases' expiries (so every instance can show the
    /// whole cluster without reading every shard object).
    pub shards: Vec<ShardLease>,
    pub running: bool,
}

/// One held shard in a heartbeat.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShardLease {
    pub shard: u32,
    pub expires_at: DateTime<Utc>,
    pub epoch: u64,
}

/// The latest run request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TriggerRecord {
    pub at: DateTime<Utc>,
    pub by: String,
    #[serde(default)]
    pub force: bool,
}

/// A shard this instance holds: its lease (with the ETag to write over) and its state.
#[derive(Debug, Clone)]
pub struct HeldShard {
    pub lease: Held,
    pub state: State,
    /// Changed since last written.
    pub dirty: bool,
}

/// One shard as last seen in the bucket, for the status.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ShardView {
    pub shard: u32,
    pub holder: String,
    pub expires_at: Option<DateTime<Utc>>,
    pub epoch: u64,
    pub last_complete_run_started_at: Option<DateTime<Utc>>,
}

/// The cluster as this instance sees it (the status endpoint's `cluster`).
#[derive(Debug, Clone, Default, Serialize)]
pub struct ClusterView {
    pub instance_id: String,
    pub shards: u32,
    pub fair_share: u32,
    /// Shards this instance holds.
    pub held: Vec<ShardView>,
    /// Live instances (this one included), from their heartbeats.
    pub instances: Vec<InstanceRecord>,
    /// Every shard: its holder and lease expiry from the live instances' heartbeats (at
    /// most a third of a lease old), or as last read when no live instance lists it.
    pub all_shards: Vec<ShardView>,
    pub trigger: Option<TriggerRecord>,
    /// Shards whose object does not parse, as of the last look: nobody takes them (that
    /// would wipe their state) until a person repairs or deletes the object.
    pub unreadable: Vec<u32>,
    /// Leases this instance lost to another (a write refused, or expired while paused).
    pub leases_lost: u64,
}

/// What the Coordinator, the StateKeeper's store, the Uploader and the API share.
#[derive(Debug)]
pub struct Cluster {
    pub config: ClusterConfig,
    table: Mutex<Table>,
    /// Wakes the Coordinator to write dirty shards.
    pub flush: tokio::sync::Notify,
}

#[derive(Debug, Default)]
struct Table {
    held: BTreeMap<u32, HeldShard>,
    /// The shards of the run in progress, with the lease epoch each had when the run
    /// began (what `load` merges and `save` splits into). A shard lost and taken back
    /// meanwhile has another epoch: the run no longer speaks for it.
    scope: BTreeMap<u32, u64>,
    /// The run request the run in progress answers.
    scope_trigger: Option<DateTime<Utc>>,
    /// Scope shards the run skipped work of (their lease was briefly untrusted): they
    /// stay owed a run when it completes.
    tainted: BTreeSet<u32>,
    /// What the run now completing did per shard (its id, counts by shard), written
    /// into each covered shard's `last_run` by the run's last save.
    completed: Option<(String, BTreeMap<u32, PartRun>)>,
    totals_at_load: Totals,
    view: ClusterView,
}

impl Table {
    /// The run's shards still held at the epoch the run began with.
    fn in_scope(&self) -> impl Iterator<Item = (u32, &HeldShard)> {
        self.scope
            .iter()
            .filter_map(|(s, epoch)| self.held.get(s).filter(|h| h.lease.record.epoch == *epoch).map(|h| (*s, h)))
    }
}

impl Cluster {
    pub fn new(config: ClusterConfig) -> Arc<Self> {
        let view = ClusterView { instance_id: config.instance_id.clone(), shards: config.shards, ..Default::default() };
        let table = Table { view, ..Default::default() };
        Arc::new(Self { config, table: Mutex::new(table), flush: tokio::sync::Notify::new() })
    }

    fn table(&self) -> std::sync::MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The lease object's key for `shard`.
    pub fn shard_key(&self, shard: u32) -> String {
        shard_key(&self.config.prefix, shard)
    }

    pub fn instance_key(&self, id: &str) -> String {
        format!("{}instances/{id}.json", self.config.prefix)
    }

    pub fn trigger_key(&self) -> String {
        format!("{}trigger.json", self.config.prefix)
    }

    /// The held shards as a heartbeat lists them.
    pub fn held_leases(&self) -> Vec<ShardLease> {
        let t = self.table();
        t.held
            .iter()
            .map(|(s, h)| ShardLease { shard: *s, expires_at: h.lease.record.expires_at, epoch: h.lease.record.epoch })
            .collect()
    }

    pub fn held_ids(&self) -> BTreeSet<u32> {
        self.table().held.keys().copied().collect()
    }

    /// Held shards that changed, or whose lease expires within `renew_before` of `now`:
    /// the ones to write this turn (found without copying any state).
    pub fn due_for_write(&self, now: DateTime<Utc>, renew_before: chrono::Duration) -> Vec<u32> {
        let t = self.table();
        t.held
            .iter()
            .filter(|(_, h)| h.dirty || h.lease.record.expires_at - now < renew_before)
            .map(|(s, _)| *s)
            .collect()
    }

    /// Held, still-trusted shards whose last complete run answered a request before
    /// `trigger_at`: the ones owed a run.
    pub fn owed(&self, trigger_at: DateTime<Utc>, now: DateTime<Utc>) -> BTreeSet<u32> {
        let t = self.table();
        t.held
            .iter()
            .filter(|(_, h)| h.lease.valid_at(now, self.config.max_clock_skew))
            .filter(|(_, h)| h.state.covered_trigger_at.is_none_or(|c| c < trigger_at))
            .map(|(s, _)| *s)
            .collect()
    }

    /// Held shards whose last complete run answered `trigger_at` or a later request.
    pub fn answered(&self, trigger_at: DateTime<Utc>) -> BTreeSet<u32> {
        let t = self.table();
        t.held.iter().filter(|(_, h)| answers(&h.state, trigger_at)).map(|(s, _)| *s).collect()
    }

    /// Each held shard's last run if it answered `trigger_at` (or a later request);
    /// `None` for a held shard still owed it.
    pub fn held_runs(&self, trigger_at: DateTime<Utc>) -> BTreeMap<u32, Option<PartRun>> {
        let t = self.table();
        t.held
            .iter()
            .map(|(s, h)| (*s, answers(&h.state, trigger_at).then(|| h.state.last_run.clone().unwrap_or_default())))
            .collect()
    }

    /// A copy of a held shard.
    pub fn held(&self, shard: u32) -> Option<HeldShard> {
        self.table().held.get(&shard).cloned()
    }

    pub fn insert(&self, shard: u32, held: HeldShard) {
        self.table().held.insert(shard, held);
    }

    /// Forgets a shard (lost or released).
    pub fn remove(&self, shard: u32) -> Option<HeldShard> {
        self.table().held.remove(&shard)
    }

    /// After a successful write: the new lease, clean unless the state changed meanwhile.
    pub fn written(&self, shard: u32, lease: Held, state_written: &State) {
        if let Some(h) = self.table().held.get_mut(&shard) {
            h.dirty = h.dirty && h.state != *state_written;
            h.lease = lease;
        }
    }

    /// Sets the shards the next run covers (at their current epochs), for the run
    /// request `trigger`.
    pub fn set_scope(&self, shards: &BTreeSet<u32>, trigger: Option<DateTime<Utc>>) {
        let mut t = self.table();
        t.scope = shards.iter().filter_map(|s| t.held.get(s).map(|h| (*s, h.lease.record.epoch))).collect();
        t.scope_trigger = trigger;
        t.tainted.clear();
        t.completed = None;
    }

    pub fn view(&self) -> ClusterView {
        let t = self.table();
        let mut view = t.view.clone();
        view.held = t.held.iter().map(|(s, h)| shard_view(*s, &h.lease, &h.state)).collect();
        view
    }

    pub fn update_view(&self, f: impl FnOnce(&mut ClusterView)) {
        f(&mut self.table().view);
    }
}

/// The run scope of an instance sharing the bucket: the run covers the shards set by
/// [`Cluster::set_scope`], each while held at the epoch the run began with and trusted.
impl RunScope for Cluster {
    fn covers(&self, key: &str, now: DateTime<Utc>) -> Cover {
        let shard = shard_of(key, self.config.shards);
        let t = self.table();
        let Some(&epoch) = t.scope.get(&shard) else { return Cover::NotInRun };
        let trusted = t
            .held
            .get(&shard)
            .is_some_and(|h| h.lease.record.epoch == epoch && h.lease.valid_at(now, self.config.max_clock_skew));
        if trusted { Cover::Yes } else { Cover::Untrusted }
    }

    fn mark_skipped(&self, key: &str) {
        let shard = shard_of(key, self.config.shards);
        self.table().tainted.insert(shard);
    }

    fn conditional_writes(&self) -> bool {
        true
    }
}

/// Whether a shard in `state` has had a complete run for the request `trigger_at` (or a later one).
pub fn answers(state: &State, trigger_at: DateTime<Utc>) -> bool {
    state.covered_trigger_at.is_some_and(|c| c >= trigger_at)
}

/// A held shard as the status shows it.
pub fn shard_view(shard: u32, lease: &Held, state: &State) -> ShardView {
    ShardView {
        shard,
        holder: lease.record.holder.clone(),
        expires_at: Some(lease.record.expires_at),
        epoch: lease.record.epoch,
        last_complete_run_started_at: state.last_complete_run_started_at,
    }
}

/// The StateKeeper's store in bucket mode: `load` merges the states of the run's
/// shards, `save` splits the state back into them and wakes the Coordinator to write
/// them (each a conditional PUT on its lease).
#[derive(Debug, Clone)]
pub struct ClusterStore(pub Arc<Cluster>);

impl StateStore for ClusterStore {
    /// None: the shards' leases and conditional writes fence the state.
    fn lock_run(&self, _stale_after: std::time::Duration) -> Result<Option<crate::state::RunLock>, LockError> {
        Ok(None)
    }

    fn load(&self) -> Result<Option<State>, StateError> {
        let mut t = self.0.table();
        let states: Vec<&State> = t.in_scope().map(|(_, h)| &h.state).collect();
        if states.is_empty() {
            return Ok(None);
        }
        let merged = merge(&states);
        t.totals_at_load = merged.totals.clone();
        Ok(Some(merged))
    }

    fn save(&self, state: &State) -> Result<(), StateError> {
        let shards = self.0.config.shards;
        let mut t = self.0.table();
        let scope: Vec<u32> = t.in_scope().map(|(s, _)| s).collect();
        let delta = totals_delta(&state.totals, &t.totals_at_load);
        let (trigger, tainted) = (t.scope_trigger, t.tainted.clone());
        let completed = if state.run.is_none() { t.completed.take() } else { None };
        // The ledger split in one pass; the rest copied from one ledger-less template.
        let mut ledgers: BTreeMap<u32, BTreeMap<String, crate::state::LedgerEntry>> =
            scope.iter().map(|s| (*s, BTreeMap::new())).collect();
        for (k, e) in &state.ledger {
            if let Some(l) = ledgers.get_mut(&shard_of(k, shards)) {
                l.insert(k.clone(), e.clone());
            }
        }
        let mut template = state.clone();
        template.ledger = BTreeMap::new();
        for (i, shard) in scope.iter().enumerate() {
            let held = t.held.get_mut(shard).expect("filtered above");
            let mut next = State {
                ledger: ledgers.remove(shard).unwrap_or_default(),
                totals: held.state.totals.clone(),
                // Each shard keeps its own lower bound (`state.initial`).
                ignore_before: held.state.ignore_before,
                covered_trigger_at: held.state.covered_trigger_at,
                last_run: held.state.last_run.clone(),
                ..template.clone()
            };
            // A completed run answers its request, for the shards it fully covered, and
            // says who ran them and what it did there.
            if state.run.is_none() && !tainted.contains(shard) {
                next.covered_trigger_at = trigger.or(next.covered_trigger_at);
                if let Some((run_id, parts)) = &completed {
                    next.last_run = Some(PartRun {
                        trigger_at: trigger,
                        by: self.0.config.instance_id.clone(),
                        run_id: run_id.clone(),
                        ..parts.get(shard).cloned().unwrap_or_default()
                    });
                }
            }
            if i == 0 {
                add_totals(&mut next.totals, &delta);
            }
            if next != held.state {
                held.state = next;
                held.dirty = true;
            }
        }
        t.totals_at_load = state.totals.clone();
        drop(t);
        self.0.flush.notify_one();
        Ok(())
    }

    fn part_of(&self, key: &str) -> Option<u32> {
        Some(shard_of(key, self.0.config.shards))
    }

    fn record_parts(&self, run_id: &str, parts: &BTreeMap<u32, PartRun>) {
        self.0.table().completed = Some((run_id.to_owned(), parts.clone()));
    }

    /// The key's shard, when this instance holds it: its state changed in place and
    /// written with its lease at the Coordinator's next turn (woken now).
    fn update(
        &self,
        key: &str,
        _stale_after: std::time::Duration,
        _initial: State,
        change: &mut dyn FnMut(&mut State) -> bool,
    ) -> Result<Updated, UpdateError> {
        let shard = shard_of(key, self.0.config.shards);
        let mut t = self.0.table();
        let Some(held) = t.held.get_mut(&shard) else { return Ok(Updated::NotHeld) };
        if change(&mut held.state) {
            held.dirty = true;
            drop(t);
            self.0.flush.notify_one();
        }
        Ok(Updated::Part)
    }

    fn decide_stored(&self, key: &str, etag: Option<&str>, now: DateTime<Utc>) -> Option<LedgerDecision> {
        let t = self.0.table();
        t.held.get(&shard_of(key, self.0.config.shards)).map(|h| h.state.decide(key, etag, now))
    }

    fn entry_stored(&self, key: &str) -> Option<crate::state::LedgerEntry> {
        let t = self.0.table();
        t.held.get(&shard_of(key, self.0.config.shards)).and_then(|h| h.state.ledger.get(key).cloned())
    }

    fn in_run_scope(&self, key: &str) -> bool {
        let shard = shard_of(key, self.0.config.shards);
        self.0.table().in_scope().any(|(s, _)| s == shard)
    }
}

/// One state over several shards: their ledgers together, totals summed, the rest
/// (watermark, run progress) from the shard that is furthest behind.
pub fn merge(states: &[&State]) -> State {
    let behind = states.iter().min_by_key(|s| s.last_complete_run_started_at).expect("merge needs at least one state");
    let mut merged = State { ledger: BTreeMap::new(), totals: Totals::default(), last_run: None, ..(*behind).clone() };
    // The least restrictive lower bound: a shard with none must not be bounded by another's.
    merged.ignore_before = states.iter().map(|s| s.ignore_before).min().flatten();
    // Resume only when every shard was left mid-run; start from the earliest cursor.
    merged.run = if states.iter().all(|s| s.run.is_some()) {
        let cursor = states.iter().map(|s| s.run.as_ref().and_then(|r| r.cursor.clone())).min().flatten();
        behind.run.clone().map(|r| crate::state::RunProgress { cursor, ..r })
    } else {
        None
    };
    for s in states {
        merged.ledger.extend(s.ledger.iter().map(|(k, e)| (k.clone(), e.clone())));
        add_totals(&mut merged.totals, &s.totals);
    }
    merged
}

fn totals_delta(now: &Totals, then: &Totals) -> Totals {
    Totals {
        runs: now.runs.saturating_sub(then.runs),
        converted: now.converted.saturating_sub(then.converted),
        failed: now.failed.saturating_sub(then.failed),
        bytes_in: now.bytes_in.saturating_sub(then.bytes_in),
        bytes_out: now.bytes_out.saturating_sub(then.bytes_out),
    }
}

fn add_totals(into: &mut Totals, d: &Totals) {
    into.runs += d.runs;
    into.converted += d.converted;
    into.failed += d.failed;
    into.bytes_in += d.bytes_in;
    into.bytes_out += d.bytes_out;
}

/// Every shard's state as stored, merged (read-only: `run-once --dry-run`).
pub async fn read_all_states(
    storage: &crate::storage::Storage,
    config: &ClusterConfig,
) -> Result<State, crate::cluster::lease::LeaseError> {
    let leases = crate::cluster::lease::Leases {
        storage: storage.clone(),
        holder: config.instance_id.clone(),
        duration: config.lease,
        skew: config.max_clock_skew,
    };
    let mut states = Vec::new();
    for shard in 0..config.shards {
        if let Some((record, _)) = leases.read(&shard_key(&config.prefix, shard)).await? {
            states.push(serde_json::from_value::<State>(record.data).unwrap_or_default());
        }
    }
    let refs: Vec<&State> = states.iter().collect();
    Ok(if refs.is_empty() { State::default() } else { merge(&refs) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{Failure, RetryPolicy};

    #[test]
    fn shards_are_stable_and_spread() {
        assert_eq!(shard_of("photos/cat.jpg", 16), shard_of("photos/cat.jpg", 16));
        let mut counts = [0u32; 8];
        for i in 0..8000 {
            counts[shard_of(&format!("img/{i:05}.jpg"), 8) as usize] += 1;
        }
        assert!(counts.iter().all(|&c| (800..1200).contains(&c)), "{counts:?}");
    }

    #[test]
    fn fair_share_rounds_up() {
        assert_eq!(fair_share(16, 3), 6);
        assert_eq!(fair_share(16, 0), 16);
        assert_eq!(fair_share(2, 3), 1);
    }

    fn test_cluster(shards: u32) -> Arc<Cluster> {
        Cluster::new(ClusterConfig {
            prefix: "p/".into(),
            shards,
            lease: std::time::Duration::from_secs(10),
            max_clock_skew: std::time::Duration::from_secs(1),
            instance_id: "a".into(),
        })
    }

    fn hold(cluster: &Cluster, shard: u32, epoch: u64) {
        let lease = Held {
            key: cluster.shard_key(shard),
            record: crate::cluster::lease::LeaseRecord {
                holder: "a".into(),
                expires_at: Utc::now() + chrono::Duration::seconds(10),
                epoch,
                data: serde_json::Value::Null,
            },
            etag: "e".into(),
        };
        cluster.insert(shard, HeldShard { lease, state: State::default(), dirty: false });
    }

    /// A key of `shard` (of 4).
    fn key_in(shard: u32) -> String {
        (0..).map(|i| format!("k{i}.jpg")).find(|k| shard_of(k, 4) == shard).unwrap()
    }

    #[test]
    fn an_event_outside_the_run_changes_its_held_shard_only() {
        let cluster = test_cluster(4);
        hold(&cluster, 0, 1);
        hold(&cluster, 1, 1);
        cluster.set_scope(&[0].into(), None);
        let store = ClusterStore(cluster.clone());
        let (k0, k1, k2) = (key_in(0), key_in(1), key_in(2));
        assert!(store.in_run_scope(&k0) && !store.in_run_scope(&k1) && !store.in_run_scope(&k2));
        let keep = |key: &str| {
            let key = key.to_owned();
            move |s: &mut State| {
                s.record_kept(&key, Some("e".into()), "webp_larger", "larger", Utc::now());
                true
            }
        };
        let stale = std::time::Duration::from_secs(60);
        let updated = store.update(&k1, stale, State::default(), &mut keep(&k1)).unwrap();
        assert!(matches!(updated, Updated::Part), "{updated:?}");
        let held = cluster.held(1).unwrap();
        assert!(held.dirty && held.state.ledger.contains_key(&k1));
        assert_eq!(store.decide_stored(&k1, Some("e"), Utc::now()), Some(LedgerDecision::Leave));
        assert_eq!(store.decide_stored(&k1, Some("other"), Utc::now()), Some(LedgerDecision::Convert));
        // A shard another instance holds is its runs' to decide.
        let updated = store.update(&k2, stale, State::default(), &mut keep(&k2)).unwrap();
        assert!(matches!(updated, Updated::NotHeld), "{updated:?}");
        assert_eq!(store.decide_stored(&k2, Some("e"), Utc::now()), None);
        // Nothing changed: the shard is not written again.
        hold(&cluster, 3, 1);
        let k3 = key_in(3);
        store.update(&k3, stale, State::default(), &mut |_| false).unwrap();
        assert!(!cluster.held(3).unwrap().dirty);
    }

    #[test]
    fn a_completed_run_answers_its_request_only_for_shards_it_fully_covered() {
        let cluster = test_cluster(4);
        for s in 0..4 {
            hold(&cluster, s, 1);
        }
        let trigger = Utc::now();
        cluster.set_scope(&[0, 1, 2].into(), Some(trigger));
        let store = ClusterStore(cluster.clone());
        let mut state = store.load().unwrap().unwrap();
        // Shard 1's lease was briefly untrusted when the run reached one of its keys.
        let admit = |k: &str| crate::scope::admit(cluster.as_ref(), k, Utc::now());
        assert_eq!(cluster.covers(&key_in(1), Utc::now()), Cover::Yes, "a query changes nothing");
        assert!(admit(&key_in(0)));
        let mut h1 = cluster.held(1).unwrap();
        h1.lease.record.expires_at = Utc::now();
        cluster.insert(1, h1);
        assert_eq!(cluster.covers(&key_in(1), Utc::now()), Cover::Untrusted);
        assert!(!admit(&key_in(1)));
        // Shard 2 was lost and taken back: another epoch; the run no longer speaks for it.
        hold(&cluster, 2, 3);
        assert!(!admit(&key_in(2)));
        assert_eq!(cluster.covers(&key_in(3), Utc::now()), Cover::NotInRun);
        assert!(!admit(&key_in(3)), "not in the run");
        state.run = None;
        state.last_complete_run_started_at = Some(trigger);
        store.save(&state).unwrap();
        assert_eq!(cluster.held(0).unwrap().state.covered_trigger_at, Some(trigger));
        assert_eq!(cluster.held(1).unwrap().state.covered_trigger_at, None, "tainted: still owed");
        assert!(!cluster.held(2).unwrap().dirty, "another epoch: not written by this run");
        assert!(!cluster.held(3).unwrap().dirty);
    }

    #[test]
    fn merged_lower_bound_is_the_least_restrictive() {
        let t = Utc::now();
        let (a, b) = (State { ignore_before: Some(t), ..State::default() }, State::default());
        assert_eq!(merge(&[&a, &b]).ignore_before, None);
        let c = State { ignore_before: Some(t - chrono::Duration::days(1)), ..State::default() };
        assert_eq!(merge(&[&a, &c]).ignore_before, c.ignore_before);
    }

    #[test]
    fn save_splits_what_load_merged() {
        let config = ClusterConfig {
            prefix: "p/".into(),
            shards: 4,
            lease: std::time::Duration::from_secs(10),
            max_clock_skew: std::time::Duration::from_secs(1),
            instance_id: "a".into(),
        };
        let cluster = Cluster::new(config);
        let lease = |s: u32| Held {
            key: cluster.shard_key(s),
            record: crate::cluster::lease::LeaseRecord {
                holder: "a".into(),
                expires_at: Utc::now(),
                epoch: 1,
                data: serde_json::Value::Null,
            },
            etag: "e".into(),
        };
        for s in 0..4 {
            let state = State { totals: Totals { converted: 10, ..Default::default() }, ..Default::default() };
            cluster.insert(s, HeldShard { lease: lease(s), state, dirty: false });
        }
        cluster.set_scope(&[0, 1, 2].into(), None);
        let store = ClusterStore(cluster.clone());
        let mut state = store.load().unwrap().unwrap();
        assert_eq!(state.totals.converted, 30);
        let now = Utc::now();
        let keys: Vec<String> = (0..40).map(|i| format!("k{i}.jpg")).filter(|k| shard_of(k, 4) != 3).collect();
        for k in &keys {
            let f = Failure { code: "decode_failed", reason: "bad", permanent: true };
            state.record_failure(k, None, f, &RetryPolicy::default(), now);
        }
        state.totals.converted += 5;
        store.save(&state).unwrap();
        for s in 0..3 {
            let h = cluster.held(s).unwrap();
            assert!(h.dirty);
            assert!(h.state.ledger.keys().all(|k| shard_of(k, 4) == s));
        }
        assert!(!cluster.held(3).unwrap().dirty, "a shard outside the run is not written");
        let again = store.load().unwrap().unwrap();
        assert_eq!(again.ledger.len(), keys.len());
        assert_eq!(again.totals.converted, 35);
    }
}
