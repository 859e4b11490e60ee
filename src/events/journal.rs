//! The `webhook` source's journal: event bodies that `POST /api/events` accepted, one file
//! each under `<state.dir>/events/`, written atomically (temp file, fsync, rename, fsync
//! of the directory) before the 202 — so a crash after the answer loses nothing — and
//! removed once every record in them is handled.
//!
//! [`replay`] is the consumer: it handles the files in name (arrival) order when
//! [`Journal::append`] wakes it, at start (what a crash left) and every few seconds for
//! files whose events failed transiently.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::{Notify, watch};

use super::handle::Handled;
use super::record::{self, Parsed};
use super::route::Router;
use super::status::SourceStatus;

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
            Parsed::Events(e) => e.len(),
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
    loop {
        for path in journal.files() {
            if *stop.borrow() {
                return;
            }
            handle_file(&path, &router, &status).await;
        }
        tokio::select! {
            _ = journal.wake.notified() => {}
            _ = tokio::time::sleep(Duration::from_secs(5)) => {}
            _ = stop.changed() => return,
        }
    }
}

async fn handle_file(path: &Path, router: &Router, status: &SourceStatus) {
    let id = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let body = match tokio::fs::read_to_string(path).await {
        Ok(b) => b,
        Err(e) => {
            status.error(format!("cannot read {}: {e}", path.display()));
            return;
        }
    };
    status.received(&id, chrono::Utc::now());
    router.primary().metrics.event_received("webhook");
    let events = match record::parse(&body) {
        Ok(Parsed::Events(e)) => e,
        Ok(Parsed::Test) => Vec::new(),
        Err(e) => {
            // Checked before it was written: only a hand-edited file gets here. Set aside.
            let aside = path.with_extension("bad");
            let _ = std::fs::rename(path, &aside);
            status.error(format!("{}: {e} (moved to {})", path.display(), aside.display()));
            status.finished(&id, false);
            return;
        }
    };
    for ev in &events {
        if let Handled::Retry(e) = router.handle(ev, status).await {
            status.error(format!("{}: {e}", ev.key));
            status.finished(&id, false);
            return;
        }
    }
    match std::fs::remove_file(path) {
        Ok(()) => status.finished(&id, true),
        Err(e) => {
            status.error(format!("cannot remove {}: {e}", path.display()));
            status.finished(&id, false);
        }
    }
}
