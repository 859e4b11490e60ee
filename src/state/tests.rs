//! State file and lock: atomic writes, corrupt files, the ledger's retry rules, the lock.

use std::time::Duration as StdDuration;

use chrono::{Duration, TimeZone, Utc};

use super::store::FileStateStore;
use super::*;

fn t(h: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2024, 1, 15, h, 0, 0).unwrap()
}

#[test]
fn the_go_servers_state_file_reads_and_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("state.json"),
        r#"{"last_processed_time": "2024-01-15T02:00:00Z", "last_run_time": "2024-01-15T02:05:30Z",
            "processed_count": 42, "failed_count": 0}"#,
    )
    .unwrap();
    let store = FileStateStore::new(dir.path()).unwrap();
    let mut s = store.load().unwrap().unwrap();
    assert_eq!(s.last_processed_time, Some(t(2)));
    assert_eq!(s.processed_count, 42);
    // A Go state file looks hand-edited (never written by us): that time re-processes.
    assert_eq!(s.notice_hand_edit(), Some(t(2)));
    store.save(&s).unwrap();
    let again = store.load().unwrap().unwrap();
    assert_eq!(again, s);
    let text = std::fs::read_to_string(store.path()).unwrap();
    assert!(text.contains("\"last_processed_time\": \"2024-01-15T02:00:00Z\""), "{text}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(store.path()).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
    // No temporary files are left beside it.
    let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(names.len(), 1, "{names:?}");
}

#[test]
fn a_corrupt_state_file_is_moved_aside_and_treated_as_missing() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("state.json"), b"{\"last_processed_time\": \"2024-01").unwrap();
    let store = FileStateStore::new(dir.path()).unwrap();
    assert_eq!(store.load().unwrap(), None);
    let names: Vec<String> =
        std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    assert_eq!(names.len(), 1);
    assert!(names[0].starts_with("state.json.corrupt-"), "{names:?}");
    assert_eq!(store.load().unwrap(), None);
}

#[test]
fn failures_back_off_then_give_up_until_the_source_changes() {
    let policy = RetryPolicy { max_attempts: 3, base_delay: Duration::minutes(10), max_delay: Duration::hours(1) };
    let mut s = State::default();
    let etag = Some("e1".to_string());
    assert_eq!(s.decide("a.jpg", Some("e1"), t(0)), LedgerDecision::Convert);
    assert_eq!(
        s.record_failure(
            "a.jpg",
            etag.clone(),
            Failure { code: "storage_error", reason: "503", permanent: false },
            &policy,
            t(0)
        ),
        LedgerKind::Failed
    );
    assert_eq!(s.ledger["a.jpg"].next_retry_at, Some(t(0) + Duration::minutes(10)));
    assert_eq!(s.decide("a.jpg", Some("e1"), t(0) + Duration::minutes(5)), LedgerDecision::Wait);
    assert_eq!(s.decide("a.jpg", Some("e1"), t(0) + Duration::minutes(10)), LedgerDecision::Retry);
    s.record_failure(
        "a.jpg",
        etag.clone(),
        Failure { code: "storage_error", reason: "503", permanent: false },
        &policy,
        t(1),
    );
    assert_eq!(s.ledger["a.jpg"].next_retry_at, Some(t(1) + Duration::minutes(20)));
    assert_eq!(
        s.record_failure(
            "a.jpg",
            etag.clone(),
            Failure { code: "storage_error", reason: "503", permanent: false },
            &policy,
            t(2)
        ),
        LedgerKind::GivenUp
    );
    assert_eq!(s.ledger["a.jpg"].attempts, 3);
    assert_eq!(s.decide("a.jpg", Some("e1"), t(23)), LedgerDecision::Leave);
    // A new upload of the source (new ETag) gets a fresh chance.
    assert_eq!(s.decide("a.jpg", Some("e2"), t(23)), LedgerDecision::Convert);
    // Permanent failures are given up at once; success clears the entry.
    assert_eq!(
        s.record_failure(
            "b.jpg",
            None,
            Failure { code: "not_an_image", reason: "text", permanent: true },
            &policy,
            t(0)
        ),
        LedgerKind::GivenUp
    );
    s.record_success("a.jpg");
    assert!(!s.ledger.contains_key("a.jpg"));
    assert_eq!(policy.delay(10), Duration::hours(1), "capped");
}

#[test]
fn hand_edits_of_last_processed_time_are_noticed_once() {
    let mut s = State::default();
    s.set_last_processed_time(t(5));
    assert_eq!(s.notice_hand_edit(), None);
    s.last_processed_time = Some(t(1));
    assert_eq!(s.notice_hand_edit(), Some(t(1)));
    assert_eq!(s.reprocess_from, Some(t(1)));
    assert_eq!(s.notice_hand_edit(), None);
    // Moved forward: older sources are ignored from now on.
    s.last_processed_time = Some(t(9));
    assert_eq!(s.notice_hand_edit(), Some(t(9)));
    assert_eq!(s.ignore_before, Some(t(9)));
}

#[test]
fn the_lock_admits_one_holder_and_frees_on_drop() {
    let dir = tempfile::tempdir().unwrap();
    let stale = StdDuration::from_secs(3600);
    let held = RunLock::acquire(dir.path(), stale).unwrap();
    let err = RunLock::acquire(dir.path(), stale).unwrap_err();
    assert_eq!(err.to_string(), "cron job is already running");
    assert!(matches!(err, LockError::Held { ref holder } if holder.contains(&format!("pid={}", std::process::id()))));
    drop(held);
    let again = RunLock::acquire(dir.path(), stale).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(again.path()).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
}

#[test]
fn a_lock_file_left_by_a_dead_process_is_taken_over_at_once() {
    let dir = tempfile::tempdir().unwrap();
    // A crashed holder leaves its line in the file but no OS lock.
    std::fs::write(dir.path().join(".lock"), "pid=999999 started=2024-01-15T02:00:00Z\n").unwrap();
    let lock = RunLock::acquire(dir.path(), StdDuration::from_secs(3600)).unwrap();
    let text = std::fs::read_to_string(lock.path()).unwrap();
    assert!(text.contains(&format!("pid={}", std::process::id())), "{text}");
}
