//! The StateKeeper when the state cannot be saved (a full disk: ENOSPC): the run is not
//! complete and says why, the status shows the failure, and the next run resumes from
//! the last checkpoint that was saved.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use actix::prelude::*;
use tokio::sync::Semaphore;

use super::*;
use crate::state::FileStateStore;

/// The real state file, whose saves fail with ENOSPC while `full` is set.
struct FillingDisk {
    file: FileStateStore,
    full: Arc<AtomicBool>,
}

impl StateStore for FillingDisk {
    fn lock_run(&self, stale_after: std::time::Duration) -> Result<Option<crate::state::RunLock>, LockError> {
        self.file.lock_run(stale_after)
    }

    fn load(&self) -> Result<Option<State>, StateError> {
        self.file.load()
    }

    fn save(&self, state: &State) -> Result<(), StateError> {
        if self.full.load(Ordering::SeqCst) {
            let source = std::io::Error::from_raw_os_error(libc::ENOSPC);
            return Err(StateError::Io { path: self.file.path().to_owned(), source });
        }
        self.file.save(state)
    }
}

async fn finish_one(keeper: &Addr<StateKeeper>, slots: &Arc<Semaphore>, key: &str) {
    let slot = Slot::new(slots.clone().acquire_owned().await.unwrap());
    keeper.send(RecordQueued { key: key.into() }).await.unwrap();
    let outcome = ItemOutcome::Converted { bytes_in: 10, bytes_out: 5, megapixels: 0.1, convert_ms: 1 };
    let output = key.replace(".jpg", ".webp");
    keeper.send(RecordDone { key: key.into(), spec: 0, output, etag: None, outcome, slot }).await.unwrap();
}

#[test]
fn a_run_whose_state_cannot_be_saved_is_not_complete_and_the_next_resumes_from_the_last_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::validate(Default::default()).unwrap();
    config.state.dir = dir.path().join("state");
    config.state.checkpoint_every = 1;
    let full = Arc::new(AtomicBool::new(false));
    let store = FillingDisk { file: FileStateStore::new(&config.state.dir).unwrap(), full: full.clone() };
    let metrics = Arc::new(Metrics::default());
    actix::System::new().block_on(async {
        let keeper = StateKeeper::new(Arc::new(config), Box::new(store), metrics, Vec::new()).start();
        let slots = Arc::new(Semaphore::new(4));
        let mut first = keeper.send(BeginRun { force: false }).await.unwrap().unwrap();
        finish_one(&keeper, &slots, "a.jpg").await; // checkpoint saved: cursor a.jpg
        full.store(true, Ordering::SeqCst);
        finish_one(&keeper, &slots, "b.jpg").await; // checkpoint lost
        keeper.send(ListingFinished { error: None, unseen: Some(Vec::new()) }).await.unwrap();

        let summary = first.done.take().unwrap().await.unwrap();
        assert!(!summary.complete, "{summary:?}");
        let error = summary.error.unwrap_or_default();
        assert!(error.contains("not complete") && error.contains("No space left on device"), "{error}");
        let status = keeper.send(GetProgress).await.unwrap();
        let save_error = status.state_save_error.unwrap_or_default();
        assert!(save_error.contains("No space left on device"), "{save_error}");
        // Answers name the file, never the directory it lives in.
        let home = dir.path().to_str().unwrap();
        assert!(!error.contains(home) && !save_error.contains(home), "{error} / {save_error}");

        // Room again: the next run is the same run, resumed after the last saved checkpoint.
        full.store(false, Ordering::SeqCst);
        let next = keeper.send(BeginRun { force: false }).await.unwrap().unwrap();
        assert_eq!((&*next.id, next.cursor.as_deref()), (&*first.id, Some("a.jpg")));
        assert_eq!(keeper.send(GetProgress).await.unwrap().state_save_error, None);
    });
}

fn stored(dir: &std::path::Path) -> State {
    FileStateStore::new(dir).unwrap().load().unwrap().unwrap_or_default()
}

#[test]
fn bucket_events_are_recorded_in_the_ledger_inside_and_outside_runs() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::validate(Default::default()).unwrap();
    config.state.dir = dir.path().join("state");
    let state_dir = config.state.dir.clone();
    let store = FileStateStore::new(&state_dir).unwrap();
    actix::System::new().block_on(async {
        let keeper =
            StateKeeper::new(Arc::new(config), Box::new(store.clone()), Default::default(), Vec::new()).start();
        let record =
            |key: &str, outcome: ItemOutcome| RecordEvent { key: key.into(), etag: Some("\"e1\"".into()), outcome };
        let kept = || ItemOutcome::Kept { bytes_in: 100, bytes_out: 120 };
        let bad =
            || ItemOutcome::Failed { code: crate::reason::Reason::DecodeFailed, reason: "bad".into(), permanent: true };
        let decide = |key: &str, etag: &str| AskLedger { key: key.into(), etag: Some(etag.into()) };

        // Outside a run: stored at once, under the run lock.
        assert_eq!(keeper.send(record("k.png", kept())).await.unwrap(), Ok(EventRecorded::Stored));
        assert_eq!(keeper.send(record("bad.png", bad())).await.unwrap(), Ok(EventRecorded::Stored));
        let on_disk = stored(&state_dir);
        assert_eq!(on_disk.ledger["k.png"].kind, crate::state::LedgerKind::Kept);
        assert_eq!(on_disk.ledger["k.png"].code, "webp_larger");
        assert_eq!(on_disk.ledger["bad.png"].kind, crate::state::LedgerKind::GivenUp);
        let leaves = |e: Option<crate::state::LedgerEntry>| e.map(|e| e.kind);
        assert_eq!(leaves(keeper.send(decide("k.png", "\"e1\"")).await.unwrap()), Some(crate::state::LedgerKind::Kept));
        let given_up = keeper.send(decide("bad.png", "\"e1\"")).await.unwrap().unwrap();
        assert_eq!((given_up.kind, given_up.code.as_str()), (crate::state::LedgerKind::GivenUp, "decode_failed"));
        assert_eq!(keeper.send(decide("k.png", "\"e2\"")).await.unwrap(), None, "a new version");

        // What another process wrote meanwhile is kept: the state is read again under the lock.
        let mut theirs = stored(&state_dir);
        theirs.record_kept("theirs.png", None, "webp_larger", "larger", Utc::now());
        store.save(&theirs).unwrap();
        assert_eq!(keeper.send(record("k2.png", kept())).await.unwrap(), Ok(EventRecorded::Stored));
        let on_disk = stored(&state_dir);
        assert!(["k.png", "bad.png", "theirs.png", "k2.png"].iter().all(|k| on_disk.ledger.contains_key(*k)));

        // Another process's run holds the lock: nothing is stored, and the event comes back.
        let held = store.lock_run(std::time::Duration::from_secs(3600)).unwrap();
        let refused = keeper.send(record("k3.png", kept())).await.unwrap();
        assert!(refused.is_err(), "{refused:?}");
        assert!(!stored(&state_dir).ledger.contains_key("k3.png"));
        drop(held);

        // A conversion drops the entry of an earlier failure.
        let converted = ItemOutcome::Converted { bytes_in: 10, bytes_out: 5, megapixels: 0.1, convert_ms: 1 };
        assert_eq!(keeper.send(record("bad.png", converted)).await.unwrap(), Ok(EventRecorded::Stored));
        assert!(!stored(&state_dir).ledger.contains_key("bad.png"));

        // Inside a run: with the run's state, saved before the answer, and kept by the run's end.
        let mut run = keeper.send(BeginRun { force: false }).await.unwrap().unwrap();
        assert_eq!(keeper.send(record("in-run.png", kept())).await.unwrap(), Ok(EventRecorded::Stored));
        let on_disk = stored(&state_dir);
        assert!(on_disk.run.is_some() && on_disk.ledger.contains_key("in-run.png"));
        keeper.send(ListingFinished { error: None, unseen: Some(Vec::new()) }).await.unwrap();
        assert!(run.done.take().unwrap().await.unwrap().complete);
        let on_disk = stored(&state_dir);
        assert!(on_disk.run.is_none());
        assert!(["k.png", "theirs.png", "k2.png", "in-run.png"].iter().all(|k| on_disk.ledger.contains_key(*k)));
    });
}
