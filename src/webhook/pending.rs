//! Undelivered webhooks on disk, in the Go server's format, so that either server
//! delivers what the other left.
//!
//! One JSON file per delivery, `YYYYMMDD-HHMMSS-xxxxxxxx.json` (local time and eight
//! random hex digits, as Go names them), holding `{url, payload, retry_count,
//! created_at}`; we add `last_error`, which Go ignores. Files are written atomically (a
//! temporary file that does not end in `.json`, then a rename), so neither server reads
//! half a record. A file's name without `.json` is the delivery's id, sent as
//! `X-Webhook-Delivery` on every attempt.
//!
//! Several processes may share one directory (a `serve` and a `run-once`): a delivery is
//! claimed with an advisory lock on its file before it is sent, and skipped by anyone
//! who cannot take it.

use std::fs::File;
use std::path::{Path, PathBuf};

use chrono::{DateTime, FixedOffset};
use serde::{Deserialize, Serialize};

/// The record inside a pending file; field names and types are the Go server's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PendingRecord {
    /// The webhook URL when the delivery was made (we always deliver to `webhook.url`).
    #[serde(default)]
    pub url: String,
    /// The JSON body, sent as it is.
    pub payload: serde_json::Value,
    /// Retries made so far: 0 after the first failed attempt. (Records of our earlier
    /// format, `{id, attempts, payload}`, load too: `attempts` counts toward it.)
    #[serde(default, alias = "attempts")]
    pub retry_count: u32,
    #[serde(default)]
    pub created_at: Option<DateTime<FixedOffset>>,
    /// Why the last attempt failed (ours; Go ignores it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

/// A delivery: its id (the file name without `.json`) and its record.
#[derive(Debug, Clone, PartialEq)]
pub struct Pending {
    pub id: String,
    pub record: PendingRecord,
}

/// Why a pending file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum PendingError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: not a pending webhook record: {source}")]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("{path}: not a pending webhook record: its payload is not a JSON object")]
    NotAnObject { path: PathBuf },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> PendingError + '_ {
    move |source| PendingError::Io { path: path.to_owned(), source }
}

impl Pending {
    /// A new delivery of `payload` to `url`, named after the local time as Go names it.
    pub fn new(url: &str, payload: serde_json::Value) -> Self {
        let now = chrono::Local::now();
        let id = format!("{}-{:08x}", now.format("%Y%m%d-%H%M%S"), random_u32());
        let record = PendingRecord {
            url: url.to_owned(),
            payload,
            retry_count: 0,
            created_at: Some(now.fixed_offset()),
            last_error: None,
        };
        Self { id, record }
    }

    /// The event the payload names (`X-Webhook-Event`), `batch.completed` if none.
    pub fn event(&self) -> &str {
        self.record.payload["event"].as_str().unwrap_or("batch.completed")
    }

    fn file_name(&self) -> String {
        format!("{}.json", self.id)
    }

    /// Writes the record into `dir` (created if missing) atomically; returns its path.
    pub fn write(&self, dir: &Path) -> Result<PathBuf, PendingError> {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let path = dir.join(self.file_name());
        let body = serde_json::to_vec_pretty(&self.record).expect("a record serialises");
        let mut tmp = tempfile::Builder::new().prefix(".tmp-").tempfile_in(dir).map_err(io(dir))?;
        std::io::Write::write_all(&mut tmp, &body).map_err(io(&path))?;
        tmp.as_file().sync_all().map_err(io(&path))?;
        tmp.persist(&path).map_err(|e| PendingError::Io { path: path.clone(), source: e.error })?;
        Ok(path)
    }

    /// Reads a pending file (ours or the Go server's).
    pub fn read(path: &Path) -> Result<Self, PendingError> {
        let bytes = std::fs::read(path).map_err(io(path))?;
        let record: PendingRecord =
            serde_json::from_slice(&bytes).map_err(|source| PendingError::Json { path: path.to_owned(), source })?;
        if !record.payload.is_object() {
            return Err(PendingError::NotAnObject { path: path.to_owned() });
        }
        let id = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        Ok(Self { id, record })
    }

    /// Moves the delivery to `dir/dead/` (written there, then removed from `dir`).
    pub fn bury(&self, dir: &Path) -> Result<PathBuf, PendingError> {
        let dead = self.write(&dir.join("dead"))?;
        let old = dir.join(self.file_name());
        match std::fs::remove_file(&old) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io(&old)(e)),
            _ => {}
        }
        Ok(dead)
    }

    /// Removes the delivered record from `dir`.
    pub fn remove(&self, dir: &Path) -> Result<(), PendingError> {
        let path = dir.join(self.file_name());
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io(&path)(e)),
            _ => Ok(()),
        }
    }
}

/// The pending files of `dir`, oldest name first: `*.json` regular files only (Go's
/// `.json.tmp` files, our temporary files and the `dead/` directory are left alone). A
/// missing directory has none.
pub fn list(dir: &Path) -> Result<Vec<PathBuf>, PendingError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io(dir)(e)),
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x.eq_ignore_ascii_case("json")))
        .collect();
    files.sort();
    Ok(files)
}

/// A pending file held by this process while it is delivered.
#[derive(Debug)]
pub struct Claim {
    _file: File,
}

/// Takes `path` for delivery, or `None` when another process holds it or it is gone
/// (delivered, or replaced by a newer version of the record, which is then claimed on
/// its own turn).
pub fn claim(path: &Path) -> Result<Option<Claim>, PendingError> {
    use std::os::unix::fs::MetadataExt;
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io(path)(e)),
    };
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => return Ok(None),
        Err(std::fs::TryLockError::Error(e)) => return Err(io(path)(e)),
    }
    // The holder before us may have delivered it (removed) or rewritten it (renamed a new
    // file over it) while we waited: only the file still at `path` counts.
    let held = file.metadata().map_err(io(path))?;
    match std::fs::metadata(path) {
        Ok(now) if now.ino() == held.ino() && now.dev() == held.dev() => Ok(Some(Claim { _file: file })),
        Ok(_) => Ok(None),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io(path)(e)),
    }
}

fn random_u32() -> u32 {
    let mut b = [0u8; 4];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b).expect("the system random source works");
    u32::from_be_bytes(b)
}
