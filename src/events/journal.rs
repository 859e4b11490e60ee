//! The `webhook` source's journal: event bodies that `POST /api/events` accepted, one file
//! each under `<state.dir>/events/`, written atomically (temp file, fsync, rename, fsync
//! of the directory) before the 202 — so a crash after the answer loses nothing — and
//! removed once every record in them is handled.
//!
//! [`replay`] is the consumer: it handles the files in name (arrival) order when
//! [`Journal::append`] wakes it, at start (what a crash left) and every few seconds for
//! files whose events failed transiently. A file's records are handled side by side;
//! when some are left (a transient failure, or a stop), the file is rewritten atomically
//! with only those, so the next pass — or the next process, after a SIGTERM — resumes
//! where this one stopped and does not redo what is done. A record that can never succeed
//! is given up by the router; a file whose records still fail after
//! `events.max_receives` passes is given up (its images' failures ledgered, said once).
//! Each file is counted received once, however often it is retried; the backlog (files,
//! records, the oldest file's age) is in the source's status.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::StreamExt;
use tokio::sync::{Notify, watch};

use super::handle::Handled;
use super::record::{self, ObjectEvent, Parsed};
use super::route::Router;
use super::status::{Backlog as BacklogView, SourceStatus};

/// The journal directory and the consumer's wake-up.
#[derive(Debug)]
pub struct Journal {
    dir: PathBuf,
    seq: AtomicU64,
    wake: Notify,
}

/// Why a body could not be journaled.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("{0}")]
    Invalid(#[from] record::RecordError),
    #[error("cannot write the event journal {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
}

impl Journal {
    /// Opens (creates) the journal directory.
    pub fn open(dir: &Path) -> Result<Self, JournalError> {
        std::fs::create_dir_all(dir).map_err(|source| JournalError::Io { path: dir.to_owned(), source })?;
        Ok(Self { dir: dir.to_owned(), seq: AtomicU64::new(0), wake: Notify::new() })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Checks that `body` holds S3 event records, writes it durably, and wakes the
    /// consumer; returns how many object events it holds.
    pub fn append(&self, body: &[u8]) -> Result<usize, JournalError> {
        let text = std::str::from_utf8(body).map_err(|_| record::RecordError("the body is not UTF-8".into()))?;
        let count = match record::parse(text)? {
            Parsed::Test => return Ok(0),
            Parsed::Events { events, .. } => events.len(),
        };
        let name = format!(
            "{}-{:06}-{}.json",
            chrono::Utc::now().format("%Y%m%dT%H%M%S%.6fZ"),
            self.seq.fetch_add(1, Ordering::SeqCst) % 1_000_000,
            std::process::id()
        );
        let path = self.dir.join(&name);
        let io = |source| JournalError::Io { path: path.clone(), source };
        let mut tmp = tempfile::NamedTempFile::new_in(&self.dir).map_err(io)?;
        std::io::Write::write_all(&mut tmp, body).map_err(io)?;
        tmp.as_file().sync_all().map_err(io)?;
        tmp.persist(&path).map_err(|e| io(e.error))?;
        std::fs::File::open(&self.dir).and_then(|d| d.sync_all()).map_err(io)?;
        self.wake.notify_one();
        Ok(count)
    }

    /// The journal's files, oldest first.
    fn files(&self) -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(&self.dir)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .collect();
        files.sort();
        files
    }
}

/// Handles the journal's files until `stop`.
pub async fn replay(journal: Arc<Journal>, router: Router, status: Arc<SourceStatus>, mut stop: watch::Receiver<bool>) {
    status.connected(true);
    // Files seen by this process (received once) and their failed passes.
    let mut passes: HashMap<String, u32> = HashMap::new();
    let max_passes = router.primary().config.events.max_receives;
    loop {
        let mut backlog = journal.scan();
        status.backlog(backlog.view());
        while let Some(file) = backlog.pop() {
            if *stop.borrow() {
                return;
            }
            let failed = passes.get(&file.id).copied();
            if failed.is_none() {
                status.received(&file.id, file.since);
                router.primary().metrics.event_received("webhook");
            }
            let last = failed.unwrap_or(0) + 1 >= max_passes;
            let left = handle_file(&file, &router, &status, last, &mut stop).await;
            match left {
                Some(left) => {
                    passes.insert(file.id.clone(), failed.unwrap_or(0) + 1);
                    backlog.left(left);
                }
                None => {
                    passes.remove(&file.id);
                }
            }
            status.backlog(backlog.view());
        }
        tokio::select! {
            _ = journal.wake.notified() => {}
            _ = tokio::time::sleep(Duration::from_secs(5)) => {}
            _ = stop.changed() => return,
        }
    }
}

/// One journal file to handle.
struct File {
    path: PathBuf,
    /// Its name: the message id in the status.
    id: String,
    /// Its object events.
    records: usize,
    /// When it was accepted.
    since: DateTime<Utc>,
}

/// The files of one pass, oldest last (popped first), and the records left in those done.
#[derive(Default)]
struct Backlog {
    files: Vec<File>,
    records: usize,
    /// Files handled in this pass but left (with their records still to do).
    left: (usize, usize, Option<DateTime<Utc>>),
}

impl Backlog {
    fn pop(&mut self) -> Option<File> {
        let f = self.files.pop()?;
        self.records -= f.records;
        Some(f)
    }

    /// The file just popped was left with `records` to do.
    fn left(&mut self, (records, since): (usize, DateTime<Utc>)) {
        let (files, r, oldest) = self.left;
        self.left = (files + 1, r + records, Some(oldest.map_or(since, |o| o.min(since))));
    }

    fn view(&self) -> BacklogView {
        let (files, records, oldest) = self.left;
        let waiting = self.files.last().map(|f| f.since);
        BacklogView {
            files: self.files.len() + files,
            records: self.records + records,
            oldest: [oldest, waiting].into_iter().flatten().min(),
            oldest_age_seconds: None,
        }
    }
}

impl Journal {
    /// The journal's files and how many object events each holds (an unreadable file
    /// counts none), for one pass.
    fn scan(&self) -> Backlog {
        let mut files: Vec<File> = self
            .files()
            .into_iter()
            .map(|path| {
                let id = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
                let since = accepted_at(&id).unwrap_or_else(|| {
                    std::fs::metadata(&path)
                        .and_then(|m| m.modified())
                        .map(DateTime::from)
                        .unwrap_or_else(|_| Utc::now())
                });
                let records = match std::fs::read_to_string(&path).map(|b| record::parse(&b)) {
                    Ok(Ok(Parsed::Events { events, .. })) => events.len(),
                    _ => 0,
                };
                File { path, id, records, since }
            })
            .collect();
        files.reverse();
        let records = files.iter().map(|f| f.records).sum();
        Backlog { files, records, left: (0, 0, None) }
    }
}

/// When the file `name` was accepted: the time its name starts with (a rewritten file
/// keeps its name, not its modification time).
fn accepted_at(name: &str) -> Option<DateTime<Utc>> {
    let stamp = name.split('-').next()?;
    chrono::NaiveDateTime::parse_from_str(stamp, "%Y%m%dT%H%M%S%.fZ").ok().map(|t| t.and_utc())
}

/// Handles one file's records side by side until they are done or `stop` fires; the file
/// is removed when none is left, else rewritten with those left and `Some((left, since))`
/// answered. `last` (its passes are past `events.max_receives`): what fails is given up.
async fn handle_file(
    file: &File,
    router: &Router,
    status: &SourceStatus,
    last: bool,
    stop: &mut watch::Receiver<bool>,
) -> Option<(usize, DateTime<Utc>)> {
    let path = &file.path;
    let body = match tokio::fs::read_to_string(path).await {
        Ok(b) => b,
        Err(e) => {
            status.error(format!("cannot read {}: {e}", file.id));
            return Some((file.records, file.since));
        }
    };
    let (events, unreadable) = match record::parse(&body) {
        Ok(Parsed::Events { events, unreadable }) => (events, unreadable),
        Ok(Parsed::Test) => (Vec::new(), Vec::new()),
        Err(e) => {
            // Checked before it was written: only a hand-edited file gets here. Set aside.
            let aside = path.with_extension("bad");
            let _ = std::fs::rename(path, &aside);
            router.unreadable(&record::RecordError(format!("{}: {e} (moved to {})", file.id, aside.display())), status);
            status.finished(&file.id, false);
            return None;
        }
    };
    for e in &unreadable {
        router.unreadable(e, status);
    }
    let concurrency = router.primary().config.events.concurrency;
    let mut done = vec![false; events.len()];
    let mut errors = Vec::new();
    {
        let mut work = futures::stream::iter(events.iter().enumerate())
            .map(|(i, ev)| async move { (i, router.handle(ev, status).await) })
            .buffer_unordered(concurrency);
        loop {
            tokio::select! {
                next = work.next() => match next {
                    Some((i, Handled::Done(_))) => done[i] = true,
                    Some((i, Handled::Retry(e))) => errors.push(format!("{:?}: {e}", events[i].key)),
                    None => break,
                },
                // Stopping: what is in hand is dropped and redone by the next process.
                Ok(_) = stop.wait_for(|s| *s) => break,
            }
        }
    }
    let left: Vec<ObjectEvent> = events.iter().zip(&done).filter(|(_, d)| !**d).map(|(e, _)| e.clone()).collect();
    if !left.is_empty() && last && !*stop.borrow() {
        let why = format!(
            "{} still failed after {} passes (events.max_receives)",
            file.id,
            router.primary().config.events.max_receives
        );
        tracing::warn!(file = %file.id, records = left.len(), "Journal file given up: {why}: {}", errors.join("; "));
        let not_ledgered = router.give_up_message(&left, &why, status).await;
        if not_ledgered.is_empty() {
            status.error(why);
            return remove(file, status, false);
        }
        errors = not_ledgered;
    }
    if left.is_empty() {
        return remove(file, status, true);
    }
    if let Some(e) = errors.first() {
        status.error(format!("{}: {e}", file.id));
    }
    if left.len() < events.len() + unreadable.len() {
        // Only what is left, so nothing done is done again.
        if let Err(e) = rewrite(path, &record::to_body(&left)) {
            status.error(format!("cannot rewrite {}: {e}", file.id));
        }
    }
    Some((left.len(), file.since))
}

/// Removes a file that is done (`acked`) or given up.
fn remove(file: &File, status: &SourceStatus, acked: bool) -> Option<(usize, DateTime<Utc>)> {
    match std::fs::remove_file(&file.path) {
        Ok(()) => {
            status.finished(&file.id, acked);
            None
        }
        Err(e) => {
            status.error(format!("cannot remove {}: {e}", file.id));
            Some((0, file.since))
        }
    }
}

/// Replaces `path`'s contents with `body` atomically (temp file, fsync, rename).
fn rewrite(path: &Path, body: &str) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    std::io::Write::write_all(&mut tmp, body.as_bytes())?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    std::fs::File::open(dir).and_then(|d| d.sync_all())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(keys: &[&str]) -> String {
        let records: Vec<_> = keys
            .iter()
            .map(|k| serde_json::json!({"eventName": "ObjectCreated:Put", "s3": {"object": {"key": k}}}))
            .collect();
        serde_json::json!({ "Records": records }).to_string()
    }

    #[test]
    fn the_backlog_counts_the_files_and_records_left_and_the_oldest_acceptance() {
        let dir = tempfile::tempdir().unwrap();
        let journal = Journal::open(dir.path()).unwrap();
        let before = Utc::now() - chrono::Duration::milliseconds(1);
        assert_eq!(journal.append(body(&["a.jpg", "b.jpg"]).as_bytes()).unwrap(), 2);
        assert_eq!(journal.append(body(&["c.jpg"]).as_bytes()).unwrap(), 1);
        let mut backlog = journal.scan();
        let view = backlog.view();
        assert_eq!((view.files, view.records), (2, 3));
        let first = backlog.pop().unwrap();
        assert_eq!(first.records, 2, "oldest first");
        // Its name says when it was accepted (a rewrite keeps the name, not the mtime).
        assert_eq!(accepted_at(&first.id), Some(first.since));
        assert!(first.since >= before && first.since <= Utc::now(), "{}", first.since);
        assert_eq!(view.oldest, Some(first.since));
        // Left with one record to do: still counted, still the oldest.
        backlog.left((1, first.since));
        let view = backlog.view();
        assert_eq!((view.files, view.records, view.oldest), (2, 2, Some(first.since)));
        let second = backlog.pop().unwrap();
        assert_eq!(second.records, 1);
        let view = backlog.view();
        assert_eq!((view.files, view.records, view.oldest), (1, 1, Some(first.since)));
        assert!(backlog.pop().is_none());
    }
}
