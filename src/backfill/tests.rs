//! The backfill over an in-memory bucket and a queue that goes down mid-way: what is
//! due is sent once across a stop and a resume, the cursor says where, and the skips
//! are counted by reason.

use std::cell::RefCell;
use std::time::Duration;

use super::queue::Refused;
use super::*;
use crate::events::record::{self, Parsed};

/// A queue that takes `up_calls` calls, then fails every call whole; it never takes the
/// message of `refused` (as SQS answers an entry it calls the sender's fault).
struct Flaky {
    up_calls: usize,
    refused: Option<String>,
    calls: RefCell<usize>,
    keys: RefCell<Vec<String>>,
}

impl Flaky {
    fn new(up_calls: usize) -> Self {
        Self { up_calls, refused: None, calls: RefCell::new(0), keys: RefCell::default() }
    }
}

impl Queue for Flaky {
    fn kind(&self) -> QueueKind {
        QueueKind::Sqs
    }

    fn name(&self) -> String {
        "http://127.0.0.1:1/123456789012/q".into()
    }

    async fn send(&self, bodies: &[&str]) -> Result<Vec<Refused>, String> {
        *self.calls.borrow_mut() += 1;
        if *self.calls.borrow() > self.up_calls {
            return Err("SQS SendMessageBatch: cannot reach the queue".into());
        }
        let mut refused = Vec::new();
        for (index, b) in bodies.iter().enumerate() {
            // What a consumer would read.
            let Ok(Parsed::Events { events, .. }) = record::parse(b) else { panic!("not an S3 notification: {b}") };
            if self.refused.as_ref() == Some(&events[0].key) {
                let reason = "InvalidMessageContents: refused".into();
                refused.push(Refused { index, reason, retryable: false });
            } else {
                self.keys.borrow_mut().push(events[0].key.clone());
            }
        }
        Ok(refused)
    }
}

struct Bucket {
    rt: tokio::runtime::Runtime,
    storage: Storage,
    config: Config,
    dir: tempfile::TempDir,
}

impl Bucket {
    fn new() -> Self {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let storage = Storage::in_memory("b");
        let config = Config::validate(Default::default()).unwrap();
        Self { rt, storage, config, dir: tempfile::tempdir().unwrap() }
    }

    fn put(&self, key: &str) {
        let put = self.storage.put(key, bytes::Bytes::from_static(b"x"), "application/octet-stream");
        self.rt.block_on(put).unwrap();
    }

    fn run(&self, queue: &Flaky, opts: Options) -> Summary {
        let job =
            Job { config: &self.config, storage: &self.storage, bucket: "b", opts: &opts, state: State::default() };
        let retry = Retry { attempts: 2, backoff: Duration::ZERO };
        self.rt.block_on(job.run(queue, "", self.cursor_file(), retry)).unwrap()
    }

    fn cursor_file(&self) -> PathBuf {
        self.dir.path().join("backfill-b.cursor")
    }
}

fn due_key(i: usize) -> String {
    format!("p/{i:02} x+y.jpg")
}

#[test]
fn a_backfill_stopped_by_the_queue_resumes_after_its_cursor_and_sends_each_due_source_once() {
    let b = Bucket::new();
    for i in 0..35 {
        b.put(&due_key(i));
    }
    // Not due: an up-to-date source, two sources of one WebP, a file that is no image.
    b.put("q/up.jpg");
    b.put("q/up.webp");
    b.put("q/two.jpg");
    b.put("q/two.png");
    b.put("q/readme.txt");
    let expected: Vec<String> = (0..35).map(due_key).collect();

    // The queue takes two batches (20 messages), then goes down: the third batch is
    // tried twice and the backfill stops there instead of listing on.
    let down = Flaky::new(2);
    let s = b.run(&down, Options::default());
    assert_eq!((s.due, s.sent, s.failed), (30, 20, 10), "{s:?}");
    assert_eq!(*down.calls.borrow(), 4);
    assert_eq!(*down.keys.borrow(), expected[..20]);
    assert!(!s.complete && s.error.as_deref().is_some_and(|e| e.contains("stopped")), "{s:?}");
    assert_eq!(s.cursor.as_deref(), Some(expected[19].as_str()), "the last key of the last confirmed batch");
    assert_eq!(s.failures.len(), 10);
    assert!(s.failures[0].error.contains("cannot reach"), "{:?}", s.failures[0]);
    assert!(b.cursor_file().exists());

    // A dry run from the cursor lists the rest, sends nothing, moves nothing.
    let nothing = Flaky::new(0);
    let dry = b.run(&nothing, Options { dry_run: true, ..Default::default() });
    assert_eq!((dry.resumed_after.as_deref(), dry.due, dry.sent), (Some(expected[19].as_str()), 15, 0), "{dry:?}");
    assert_eq!(*nothing.calls.borrow(), 0);

    // Resumed: only what was not sent goes, and the finished backfill removes its cursor.
    let up = Flaky::new(usize::MAX);
    let s = b.run(&up, Options::default());
    assert_eq!(s.resumed_after.as_deref(), Some(expected[19].as_str()));
    assert_eq!((s.due, s.sent, s.failed), (15, 15, 0), "{s:?}");
    assert_eq!(*up.keys.borrow(), expected[20..]);
    assert!(s.complete && s.cursor.is_none(), "{s:?}");
    assert!(!b.cursor_file().exists());
    assert_eq!(s.skipped, Skipped { up_to_date: 1, conflict: 2, ..Default::default() });

    // --from-start lists everything again (nothing converted them: all still due).
    let again = Flaky::new(usize::MAX);
    let s = b.run(&again, Options { from_start: true, ..Default::default() });
    assert_eq!((s.resumed_after, s.sent), (None, 35));
    assert_eq!(*again.keys.borrow(), expected);
}

#[test]
fn a_cursor_of_another_queue_is_refused_not_resumed() {
    let b = Bucket::new();
    b.put("a.jpg");
    Cursor::new(b.cursor_file(), "b", "http://127.0.0.1:1/123456789012/other").save("a.jpg").unwrap();
    let job =
        Job { config: &b.config, storage: &b.storage, bucket: "b", opts: &Options::default(), state: State::default() };
    let e = b.rt.block_on(job.run(&Flaky::new(9), "", b.cursor_file(), Retry::default())).unwrap_err();
    assert!(e.to_string().contains("--from-start"), "{e}");
}

#[test]
fn a_message_the_queue_refuses_is_reported_and_holds_the_cursor_before_it_while_the_rest_is_sent() {
    let b = Bucket::new();
    for i in 0..25 {
        b.put(&due_key(i));
    }
    let expected: Vec<String> = (0..25).map(due_key).collect();
    let picky = Flaky { refused: Some(expected[12].clone()), ..Flaky::new(usize::MAX) };
    let s = b.run(&picky, Options::default());
    assert_eq!((s.due, s.sent, s.failed, s.error.as_deref()), (25, 24, 1, None), "{s:?}");
    assert_eq!(s.failures, [Failure { key: expected[12].clone(), error: "InvalidMessageContents: refused".into() }]);
    assert_eq!(s.cursor.as_deref(), Some(expected[9].as_str()), "the batch before the refused message");
    assert!(!s.complete);
    // The next backfill sends from there: the refused one again, and (at no cost) the rest.
    let up = Flaky::new(usize::MAX);
    let s = b.run(&up, Options::default());
    assert_eq!(*up.keys.borrow(), expected[10..]);
    assert!(s.complete, "{s:?}");
}
