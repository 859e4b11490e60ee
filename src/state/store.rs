//! Reading and writing `state.json`: atomic (temp file in the same directory, fsync,
//! rename, fsync of the directory), mode 0600, and a corrupt file moved aside.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use chrono::Utc;

use super::State;
use super::lock::{LockError, RunLock, file_name, set_private};

/// Why the state could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("state file {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Where the state lives. The local file is the only backend today; the bucket-backed
/// store for several instances implements the same two calls.
pub trait StateStore: Send + Sync {
    /// The stored state, or `None` when there is none yet. A corrupt state is moved
    /// aside, logged at WARN, and reported as `None`.
    fn load(&self) -> Result<Option<State>, StateError>;
    /// Replaces the stored state atomically: a reader sees the old or the new state whole.
    fn save(&self, state: &State) -> Result<(), StateError>;
    /// Takes the lock that keeps two processes from running on this state at once, when
    /// the store needs one: the state file's OS lock beside it ([`RunLock`]). `None` for
    /// a store whose writes are fenced otherwise (bucket mode: leases and conditional
    /// writes). A lock older than `stale_after` with no live holder counts as free.
    fn lock_run(&self, stale_after: std::time::Duration) -> Result<Option<RunLock>, LockError>;
    /// Removes what a writer killed mid-save left behind (call while holding the run lock).
    fn clean_up(&self) {}
    /// The part of the bucket `key` belongs to, when the store keeps parts apart (a
    /// shard, in bucket mode): the run counts its outcomes per part.
    fn part_of(&self, _key: &str) -> Option<u32> {
        None
    }
    /// What the run now completing did in each part, recorded with the next
    /// [`StateStore::save`] (the run's last).
    fn record_parts(&self, _run_id: &str, _parts: &std::collections::BTreeMap<u32, super::PartRun>) {}
    /// Outside a run (bucket events): applies `change` to the stored state of `key`'s
    /// part and stores it when `change` says it changed something. A store with one
    /// state does so under the run lock, so no other process's run writes in between,
    /// starting from `initial` when nothing is stored yet.
    fn update(
        &self,
        _key: &str,
        stale_after: std::time::Duration,
        initial: State,
        change: &mut dyn FnMut(&mut State) -> bool,
    ) -> Result<Updated, UpdateError> {
        let _lock = self.lock_run(stale_after)?;
        let mut state = self.load()?.unwrap_or(initial);
        if change(&mut state) {
            self.save(&state)?;
        }
        Ok(Updated::Whole(state))
    }
    /// What the stored state of `key`'s part says of it, when the store keeps parts
    /// apart (bucket mode: the held shard's ledger); `None` otherwise.
    fn decide_stored(
        &self,
        _key: &str,
        _etag: Option<&str>,
        _now: chrono::DateTime<Utc>,
    ) -> Option<super::LedgerDecision> {
        None
    }
    /// The ledger entry of `key` in the stored state of its part, when the store keeps
    /// parts apart (bucket mode: the held shard's); `None` otherwise.
    fn entry_stored(&self, _key: &str) -> Option<super::LedgerEntry> {
        None
    }
    /// Whether a save of the run in progress writes `key`'s part (a store with one state:
    /// always; bucket mode: when the run covers the key's shard).
    fn in_run_scope(&self, _key: &str) -> bool {
        true
    }
}

/// What [`StateStore::update`] stored.
#[derive(Debug)]
// One value per ledger update, moved once: boxing the state would cost an allocation
// for nothing.
#[allow(clippy::large_enum_variant)]
pub enum Updated {
    /// The whole state, as now stored.
    Whole(State),
    /// The part of the state `key` belongs to (bucket mode: its shard, written with the
    /// shard's lease).
    Part,
    /// Nothing: the part is another's (bucket mode: a shard held by another instance,
    /// whose runs decide the key).
    NotHeld,
}

/// Why [`StateStore::update`] stored nothing.
#[derive(Debug, thiserror::Error)]
pub enum UpdateError {
    #[error(transparent)]
    Lock(#[from] LockError),
    #[error(transparent)]
    State(#[from] StateError),
}

impl UpdateError {
    /// The failure without the state directory's path.
    pub fn reason(&self) -> String {
        match self {
            Self::Lock(e) => e.reason(),
            Self::State(e) => e.reason(),
        }
    }
}

impl StateError {
    /// The failure without the directory it happened in, for answers, summaries and the
    /// status (the log has the full path).
    pub fn reason(&self) -> String {
        match self {
            Self::Io { path, source } => format!("state file {}: {source}", file_name(path)),
        }
    }
}

/// The error a run ends with when its final save failed: such a run is not complete, and
/// the next one resumes from the last checkpoint that was saved.
pub fn unsaved_run_error(e: &StateError) -> String {
    format!(
        "the state could not be saved, so the run is not complete (the next run resumes from the last saved checkpoint): {}",
        e.reason()
    )
}

/// `state.json` in a directory, and its run lock `.lock` beside it.
#[derive(Debug, Clone)]
pub struct FileStateStore {
    path: PathBuf,
    /// The run lock's file name in the same directory.
    lock: String,
}

impl FileStateStore {
    /// The store for `dir/state.json`; the directory is created (0700) if missing.
    pub fn new(dir: &Path) -> Result<Self, StateError> {
        Self::named(dir, "state.json", ".lock")
    }

    /// The store for `dir/<file>` locked by `dir/<lock>` (with several buckets,
    /// `state-<bucket>.json` and `.lock-<bucket>`: each bucket's own).
    pub fn named(dir: &Path, file: &str, lock: &str) -> Result<Self, StateError> {
        fs::create_dir_all(dir).map_err(|source| StateError::Io { path: dir.to_owned(), source })?;
        Ok(Self { path: dir.join(file), lock: lock.to_owned() })
    }

    /// The temp files of this store's saves: `.<file>.…` (each bucket's own, so one
    /// bucket's clean-up never removes another's save in progress).
    fn temp_prefix(&self) -> String {
        format!(".{}.", file_name(&self.path))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn io(&self, source: std::io::Error) -> StateError {
        StateError::Io { path: self.path.clone(), source }
    }
}

impl StateStore for FileStateStore {
    fn lock_run(&self, stale_after: std::time::Duration) -> Result<Option<RunLock>, LockError> {
        let dir = self.path.parent().unwrap_or(Path::new("."));
        RunLock::acquire_named(dir, &self.lock, stale_after).map(Some)
    }

    fn load(&self) -> Result<Option<State>, StateError> {
        let bytes = match fs::read(&self.path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(self.io(e)),
        };
        match serde_json::from_slice::<State>(&bytes) {
            Ok(state) => Ok(Some(state)),
            Err(parse) => {
                let aside = self.path.with_file_name(format!(
                    "{}.corrupt-{}",
                    file_name(&self.path),
                    Utc::now().format("%Y%m%dT%H%M%SZ")
                ));
                fs::rename(&self.path, &aside).map_err(|e| self.io(e))?;
                tracing::warn!(
                    path = %self.path.display(),
                    moved_to = %aside.display(),
                    error = %parse,
                    "State file is corrupt; moved aside and starting as if there were none"
                );
                Ok(None)
            }
        }
    }

    fn clean_up(&self) {
        let dir = self.path.parent().unwrap_or(Path::new("."));
        let Ok(entries) = fs::read_dir(dir) else { return };
        for e in entries.flatten() {
            if e.file_name().to_string_lossy().starts_with(&self.temp_prefix()) {
                tracing::warn!(path = %e.path().display(), "Removing a state temp file left by a killed process");
                let _ = fs::remove_file(e.path());
            }
        }
    }

    fn save(&self, state: &State) -> Result<(), StateError> {
        let dir = self.path.parent().unwrap_or(Path::new("."));
        let mut tmp = tempfile::Builder::new().prefix(&self.temp_prefix()).tempfile_in(dir).map_err(|e| self.io(e))?;
        let json = serde_json::to_vec_pretty(state).expect("state serialises");
        tmp.write_all(&json).and_then(|_| tmp.write_all(b"\n")).map_err(|e| self.io(e))?;
        set_private(tmp.path()).map_err(|e| self.io(e))?;
        tmp.as_file().sync_all().map_err(|e| self.io(e))?;
        tmp.persist(&self.path).map_err(|e| self.io(e.error))?;
        // The rename is durable only once the directory entry is on disk.
        if let Ok(d) = fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    }
}
