//! The Go server's state files, adopted when this program has no state of its own yet.
//!
//! The Go server keeps `data/state.json` (relative to its working directory) — or, in its
//! multi-bucket version with several buckets, `data/state-<bucket>.json` — holding
//! `last_processed_time`, `last_run_time`, `processed_count` and `failed_count`. Its next
//! run would list only objects modified after `last_processed_time` (a zero time means a
//! full scan). Adopting the file keeps that lower bound (as `state.initial: <date>` sets
//! one), so the switch converts what the Go server would have converted, or more; the
//! result is saved as our `state.json` and the Go file is left untouched.

use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::Deserialize;

use super::{FileStateStore, State, StateError, StateStore};

/// The Go server's data directory, relative to the working directory.
pub const GO_DATA_DIR: &str = "data";

/// Why a Go state file could not be adopted.
#[derive(Debug, thiserror::Error)]
pub enum GoStateError {
    #[error("the Go server's state file {path} cannot be read: {message} (fix or remove it)")]
    Unreadable { path: PathBuf, message: String },
    #[error(transparent)]
    Save(#[from] StateError),
}

/// `state.State` of the Go server, as its `encoding/json` writes it.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct GoState {
    pub last_processed_time: Option<DateTime<Utc>>,
    pub last_run_time: Option<DateTime<Utc>>,
    pub processed_count: u64,
    pub failed_count: u64,
}

impl GoState {
    /// Parses a Go state file; Go's zero time (`0001-01-01T00:00:00Z`) reads as unset.
    pub fn parse(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        let mut s: GoState = serde_json::from_slice(bytes)?;
        let zero = |t: Option<DateTime<Utc>>| t.filter(|t| t.timestamp() != GO_ZERO_TIME);
        s.last_processed_time = zero(s.last_processed_time);
        s.last_run_time = zero(s.last_run_time);
        Ok(s)
    }

    /// Our state for a bucket the Go server left here: its lower bound and counters.
    pub fn into_state(self) -> State {
        let mut state = State { ignore_before: self.last_processed_time, ..State::default() };
        if let Some(t) = self.last_processed_time {
            state.set_last_processed_time(t);
        }
        state.last_run_time = self.last_run_time;
        state.processed_count = self.processed_count;
        state.failed_count = self.failed_count;
        state
    }
}

/// `0001-01-01T00:00:00Z`, Go's `time.Time{}`, in Unix seconds.
const GO_ZERO_TIME: i64 = -62_135_596_800;

/// The files the Go server would have kept for `bucket` in `dir`, most specific first:
/// `state-<bucket>.json` (several buckets; `\`, `/` and `:` become `_`), then — when this
/// daemon keeps one bucket (`several` false) — `state.json`. With several buckets the Go
/// server reads only the per-bucket files (its `state.json` is not any one bucket's
/// lower bound), and neither do we: adopting it would convert less than Go would.
pub fn candidates(dir: &Path, bucket: &str, several: bool) -> Vec<PathBuf> {
    let safe = crate::config::bucket_file_name(bucket);
    let mut files = vec![dir.join(format!("state-{safe}.json"))];
    if !several {
        files.push(dir.join("state.json"));
    }
    files
}

/// The Go state file that would be adopted for `bucket` when `ours` (our `state.json`)
/// does not exist, read and parsed — without writing anything (`check-config`).
pub fn pending(
    ours: &Path,
    go_dir: &Path,
    bucket: &str,
    several: bool,
) -> Result<Option<(PathBuf, GoState)>, GoStateError> {
    if ours.exists() {
        return Ok(None);
    }
    find(go_dir, bucket, several)
}

/// The Go state file the Go server would read for `bucket` in `go_dir`, read and parsed.
pub fn find(go_dir: &Path, bucket: &str, several: bool) -> Result<Option<(PathBuf, GoState)>, GoStateError> {
    let Some(path) = candidates(go_dir, bucket, several).into_iter().find(|p| p.is_file()) else { return Ok(None) };
    let unreadable = |message: String| GoStateError::Unreadable { path: path.clone(), message };
    let bytes = std::fs::read(&path).map_err(|e| unreadable(e.to_string()))?;
    let go = GoState::parse(&bytes).map_err(|e| unreadable(e.to_string()))?;
    Ok(Some((path, go)))
}

/// When `store` has no state yet and the Go server left one for `bucket` in `go_dir`,
/// saves it as ours and says so in one INFO line. Returns the Go file adopted.
pub fn adopt(
    store: &FileStateStore,
    go_dir: &Path,
    bucket: &str,
    several: bool,
) -> Result<Option<PathBuf>, GoStateError> {
    let Some((path, go)) = pending(store.path(), go_dir, bucket, several)? else { return Ok(None) };
    let since = go.last_processed_time;
    store.save(&go.into_state())?;
    match since {
        Some(t) => tracing::info!(
            from = %path.display(),
            to = %store.path().display(),
            bucket,
            "Migrated the Go server's state: its last_processed_time {} is kept as the lower bound \
             (sources modified before it are left as the Go server left them; state.initial semantics)",
            t.to_rfc3339()
        ),
        None => tracing::info!(
            from = %path.display(),
            to = %store.path().display(),
            bucket,
            "Migrated the Go server's state: it had not completed a run, so every source is considered"
        ),
    }
    Ok(Some(path))
}

/// The Go server's `state/state_test.go`, ported (named after its tests), and the adoption.
#[cfg(test)]
#[allow(non_snake_case)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    /// A state file as the Go server writes it (`json.MarshalIndent`, RFC 3339 with nanoseconds and offset).
    const GO_FILE: &str = "{\n  \"last_processed_time\": \"2024-01-15T11:00:00.123456789+09:00\",\n  \
                           \"last_run_time\": \"2024-01-15T02:05:30Z\",\n  \"processed_count\": 42,\n  \"failed_count\": 2\n}";

    #[test]
    fn go_TestStateLoadSave() {
        // What the Go server saved is what we read: the four fields, to the nanosecond.
        let s = GoState::parse(GO_FILE.as_bytes()).unwrap();
        assert_eq!(s.last_processed_time, Some(at("2024-01-15T02:00:00.123456789Z")));
        assert_eq!(s.last_run_time, Some(at("2024-01-15T02:05:30Z")));
        assert_eq!((s.processed_count, s.failed_count), (42, 2));
        // Saved as ours and read back, the Go fields survive unchanged.
        let dir = tempfile::tempdir().unwrap();
        let store = FileStateStore::new(dir.path()).unwrap();
        store.save(&s.clone().into_state()).unwrap();
        let back = store.load().unwrap().unwrap();
        assert_eq!(back.last_processed_time, s.last_processed_time);
        assert_eq!((back.processed_count, back.failed_count), (42, 2));
        let ours: serde_json::Value = serde_json::from_slice(&std::fs::read(store.path()).unwrap()).unwrap();
        assert_eq!(ours["processed_count"], 42, "{ours}");
    }

    #[test]
    fn go_TestNewState() {
        // The newest Go server starts with zero times ("a full scan"): Go's zero time reads
        // as unset, and an adopted state with none considers every source.
        let zero = "{\"last_processed_time\":\"0001-01-01T00:00:00Z\",\"last_run_time\":\"0001-01-01T00:00:00Z\",\
                    \"processed_count\":0,\"failed_count\":0}";
        let s = GoState::parse(zero.as_bytes()).unwrap();
        assert_eq!(s, GoState::default());
        let state = s.into_state();
        assert_eq!((state.ignore_before, state.last_processed_time), (None, None));
        assert_eq!((state.processed_count, state.failed_count), (0, 0));
    }

    #[test]
    fn go_TestUpdateFunctions() {
        // UpdateLastProcessedTime's value is the lower bound of the next listing.
        let s = GoState { last_processed_time: Some(at("2024-01-01T00:00:00Z")), ..GoState::default() };
        let state = s.into_state();
        assert_eq!(state.ignore_before, Some(at("2024-01-01T00:00:00Z")));
        assert_eq!(state.last_processed_time, Some(at("2024-01-01T00:00:00Z")));
        // Written as this program writes it: not mistaken for a hand edit.
        let mut state = state;
        assert_eq!(state.notice_hand_edit(), None);
    }

    #[test]
    fn a_go_state_is_adopted_once_and_left_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let go_dir = dir.path().join("data");
        std::fs::create_dir_all(&go_dir).unwrap();
        std::fs::write(go_dir.join("state.json"), GO_FILE).unwrap();
        let store = FileStateStore::new(&dir.path().join("state")).unwrap();
        assert_eq!(adopt(&store, &go_dir, "images", false).unwrap(), Some(go_dir.join("state.json")));
        assert_eq!(store.load().unwrap().unwrap().ignore_before, Some(at("2024-01-15T02:00:00.123456789Z")));
        assert!(go_dir.join("state.json").is_file(), "the Go file is left for a roll-back");
        // Ours exists now: not adopted again, even if the Go file changes.
        std::fs::write(go_dir.join("state.json"), "{}").unwrap();
        assert_eq!(adopt(&store, &go_dir, "images", false).unwrap(), None);
    }

    #[test]
    fn the_multi_bucket_go_versions_file_for_this_bucket_wins() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("state.json"), "{\"last_processed_time\":\"2020-01-01T00:00:00Z\"}").unwrap();
        std::fs::write(dir.path().join("state-my_bucket.json"), "{\"last_processed_time\":\"2024-06-01T00:00:00Z\"}")
            .unwrap();
        let store = FileStateStore::new(&dir.path().join("ours")).unwrap();
        assert_eq!(
            adopt(&store, dir.path(), "my/bucket", false).unwrap(),
            Some(dir.path().join("state-my_bucket.json"))
        );
        assert_eq!(store.load().unwrap().unwrap().ignore_before, Some(at("2024-06-01T00:00:00Z")));
    }

    #[test]
    fn go_TestProcessImages_MultipleBuckets_state_files_are_adopted_per_bucket() {
        // The multi-bucket Go server (cron/job.go, statePathForBucket) keeps
        // data/state-<bucket>.json for each bucket when it has several; its test
        // TestProcessImages_MultipleBuckets expects state-images-a.json and
        // state-images-b.json. Each bucket of ours adopts its own, into its own file.
        let dir = tempfile::tempdir().unwrap();
        let go_dir = dir.path().join("data");
        std::fs::create_dir_all(&go_dir).unwrap();
        std::fs::write(go_dir.join("state-images-a.json"), "{\"last_processed_time\":\"2024-03-01T00:00:00Z\"}")
            .unwrap();
        std::fs::write(go_dir.join("state-images-b.json"), "{\"last_processed_time\":\"2024-04-01T00:00:00Z\"}")
            .unwrap();
        // A single-bucket Go deployment's file is no bucket's lower bound here.
        std::fs::write(go_dir.join("state.json"), "{\"last_processed_time\":\"2025-01-01T00:00:00Z\"}").unwrap();
        let ours = dir.path().join("state");
        for (bucket, since) in [("images-a", "2024-03-01T00:00:00Z"), ("images-b", "2024-04-01T00:00:00Z")] {
            let store =
                FileStateStore::named(&ours, &format!("state-{bucket}.json"), &format!(".lock-{bucket}")).unwrap();
            assert_eq!(
                adopt(&store, &go_dir, bucket, true).unwrap(),
                Some(go_dir.join(format!("state-{bucket}.json")))
            );
            assert_eq!(store.load().unwrap().unwrap().ignore_before, Some(at(since)), "{bucket}");
        }
        // A third bucket the Go server never kept starts from nothing (a full scan), as Go's would.
        let store = FileStateStore::named(&ours, "state-images-c.json", ".lock-images-c").unwrap();
        assert_eq!(adopt(&store, &go_dir, "images-c", true).unwrap(), None);
        assert!(!store.path().exists());
    }

    #[test]
    fn a_corrupt_go_state_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("state.json"), "{not json").unwrap();
        let store = FileStateStore::new(&dir.path().join("ours")).unwrap();
        let err = adopt(&store, dir.path(), "b", false).unwrap_err().to_string();
        assert!(err.contains("state.json") && err.contains("fix or remove it"), "{err}");
        assert!(!store.path().exists());
    }
}
