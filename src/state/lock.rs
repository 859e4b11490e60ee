//! One run at a time (of each bucket): `state/.lock` (`.lock-<bucket>` with several
//! buckets), held with an OS advisory lock for the whole run.
//!
//! The kernel releases an advisory lock when its holder dies, so a lock left by a
//! crashed process is taken over at once (logged at WARN with the dead holder's pid and
//! age). On a file system without advisory locks the Go server's age rule applies: a
//! lock file younger than `stale_after` (1 hour by default) means a run is going on.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// Why the lock was not taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another live run holds it. The message is the Go server's.
    #[error("cron job is already running")]
    Held { holder: String },
    #[error("lock file {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl LockError {
    /// The failure without the lock file's directory, for answers (the log has it all).
    pub fn reason(&self) -> String {
        match self {
            Self::Held { .. } => self.to_string(),
            Self::Io { path, source } => format!("lock file {}: {source}", file_name(path)),
        }
    }
}

/// A held run lock; dropping it empties the file and releases the lock. The file itself
/// stays: removing it would let a process that opened the old file and one that creates
/// a new one both "hold" the lock.
#[derive(Debug)]
pub struct RunLock {
    file: Option<File>,
    path: PathBuf,
}

impl RunLock {
    /// Takes `dir/.lock`, or fails with [`LockError::Held`] if a live run has it.
    pub fn acquire(dir: &Path, stale_after: Duration) -> Result<Self, LockError> {
        Self::acquire_named(dir, ".lock", stale_after)
    }

    /// Takes `dir/<name>` (with several buckets, each bucket's `.lock-<bucket>`).
    pub fn acquire_named(dir: &Path, name: &str, stale_after: Duration) -> Result<Self, LockError> {
        let path = dir.join(name);
        let io = |source| LockError::Io { path: path.clone(), source };
        std::fs::create_dir_all(dir).map_err(io)?;
        let mut file =
            OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&path).map_err(io)?;
        set_private(&path).map_err(io)?;
        let mut previous = String::new();
        let _ = file.read_to_string(&mut previous);
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => return Err(LockError::Held { holder: previous.trim().to_owned() }),
            Err(TryLockError::Error(e)) if e.kind() == std::io::ErrorKind::Unsupported => {
                let age = file
                    .metadata()
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|m| SystemTime::now().duration_since(m).ok());
                if !previous.trim().is_empty() && age.is_some_and(|a| a < stale_after) {
                    return Err(LockError::Held { holder: previous.trim().to_owned() });
                }
            }
            Err(TryLockError::Error(e)) => return Err(io(e)),
        }
        if !previous.trim().is_empty() {
            tracing::warn!(previous_holder = %previous.trim(), "Taking over a lock left by a process that is gone");
        }
        file.set_len(0).map_err(io)?;
        file.rewind().map_err(io)?;
        writeln!(file, "pid={} started={}", std::process::id(), chrono::Utc::now().to_rfc3339()).map_err(io)?;
        file.sync_all().map_err(io)?;
        Ok(Self { file: Some(file), path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for RunLock {
    fn drop(&mut self) {
        // Empty the file before unlocking, so an empty file means "released cleanly".
        if let Some(file) = self.file.take() {
            let _ = file.set_len(0);
            let _ = file.unlock();
        }
    }
}

/// A path's last component, as shown in answers.
pub(super) fn file_name(path: &Path) -> String {
    path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
}

/// Owner read/write only (0600).
pub(crate) fn set_private(path: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    }
    Ok(())
}
