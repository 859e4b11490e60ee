//! Where a backfill stands: the last source key whose message the queue confirmed, every
//! due source before it sent too, in a small JSON file (`--cursor FILE`; by default
//! `backfill-<bucket>.cursor` in `state.dir`) rewritten atomically after each confirmed
//! batch. A backfill stopped (killed, the queue down, the listing failed) resumes after
//! it; sending a message again would cost nothing anyway, since the consumers skip a
//! source that is up to date. A finished backfill removes the file.
//!
//! The file names the bucket and the queue it was written for: resuming into another
//! queue would leave the sources before the cursor unsent there, so it is refused, and
//! `--from-start` says to begin again.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The cursor file could not be read, does not fit this backfill, or cannot be written.
#[derive(Debug, thiserror::Error)]
pub enum CursorError {
    #[error("backfill cursor {}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("backfill cursor {}: not a cursor file ({reason}); remove it or pass --from-start", path.display())]
    Unreadable { path: PathBuf, reason: String },
    #[error(
        "backfill cursor {} was written for {what} {theirs:?}, this backfill is of {ours:?}: \
         pass --from-start to begin again, or another --cursor",
        path.display()
    )]
    Mismatch { path: PathBuf, what: &'static str, theirs: String, ours: String },
}

/// What the file holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Position {
    pub bucket: String,
    pub queue: String,
    /// The last source key confirmed sent, every due source before it sent too.
    pub after: String,
}

/// One backfill's cursor file.
#[derive(Debug, Clone)]
pub struct Cursor {
    path: PathBuf,
    bucket: String,
    queue: String,
}

impl Cursor {
    pub fn new(path: PathBuf, bucket: &str, queue: &str) -> Self {
        Self { path, bucket: bucket.to_owned(), queue: queue.to_owned() }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Where to resume: the key to list after, `None` with no file. A file of another
    /// bucket or queue is refused.
    pub fn load(&self) -> Result<Option<String>, CursorError> {
        let text = match std::fs::read_to_string(&self.path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(CursorError::Io { path: self.path.clone(), source }),
        };
        let p: Position = serde_json::from_str(&text)
            .map_err(|e| CursorError::Unreadable { path: self.path.clone(), reason: e.to_string() })?;
        for (what, theirs, ours) in [("bucket", &p.bucket, &self.bucket), ("queue", &p.queue, &self.queue)] {
            if theirs != ours {
                let (theirs, ours) = (theirs.clone(), ours.clone());
                return Err(CursorError::Mismatch { path: self.path.clone(), what, theirs, ours });
            }
        }
        Ok(Some(p.after))
    }

    /// Records that everything up to `after` was sent: written to a temporary file,
    /// synced, then renamed over the cursor, so a crash leaves the old or the new one.
    pub fn save(&self, after: &str) -> Result<(), CursorError> {
        let io = |source| CursorError::Io { path: self.path.clone(), source };
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let p = Position { bucket: self.bucket.clone(), queue: self.queue.clone(), after: after.to_owned() };
        let tmp = self.path.with_extension("cursor.tmp");
        {
            use std::io::Write;
            let mut f = std::fs::File::create(&tmp).map_err(io)?;
            f.write_all(serde_json::to_string(&p).expect("serialises").as_bytes()).map_err(io)?;
            f.sync_all().map_err(io)?;
        }
        std::fs::rename(&tmp, &self.path).map_err(io)
    }

    /// The backfill finished: nothing to resume.
    pub fn remove(&self) -> Result<(), CursorError> {
        match std::fs::remove_file(&self.path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(CursorError::Io { path: self.path.clone(), source: e })
            }
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_saved_cursor_loads_back_and_is_refused_for_another_queue_or_bucket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/backfill-b.cursor");
        let c = Cursor::new(path.clone(), "b", "http://q/1/a");
        assert_eq!(c.load().unwrap(), None, "no file: from the start");
        c.save("p/a b.jpg").unwrap();
        c.save("p/c.jpg").unwrap();
        assert_eq!(c.load().unwrap().as_deref(), Some("p/c.jpg"));
        let other = Cursor::new(path.clone(), "b", "http://q/1/other");
        let e = other.load().unwrap_err().to_string();
        assert!(e.contains("queue") && e.contains("--from-start"), "{e}");
        let e = Cursor::new(path.clone(), "c", "http://q/1/a").load().unwrap_err().to_string();
        assert!(e.contains("bucket"), "{e}");
        c.remove().unwrap();
        assert_eq!(c.load().unwrap(), None);
        c.remove().unwrap();
        std::fs::write(&path, "garbage").unwrap();
        assert!(c.load().unwrap_err().to_string().contains("not a cursor file"));
    }
}
