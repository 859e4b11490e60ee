//! Resolving a key inside the local bucket's root at the moment of the I/O.
//!
//! A check of the key's string (`check_key`) cannot keep a read or write inside the root:
//! a directory on the key's path may be a symbolic link to somewhere else, or be swapped
//! for one between a listing and the read that follows it. So every file-system call of
//! the local backend is relative to a directory handle and follows no link:
//!
//! - the root is opened (by its configured path, which the operator chose) once per
//!   operation, then a key's directory is opened *beneath* it with
//!   `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)`: the kernel refuses any symbolic link
//!   and any step out of the root, atomically with the lookup;
//! - where `openat2` is missing (Linux before 5.6, or a seccomp filter answering
//!   `ENOSYS`) the directory is walked one component at a time with
//!   `openat(O_NOFOLLOW | O_DIRECTORY)`, each step relative to the previous handle;
//! - the last component (the file) is opened, created, renamed, linked, removed or
//!   examined relative to the directory's handle with no-follow semantics (`O_NOFOLLOW`,
//!   `AT_SYMLINK_NOFOLLOW`, `renameat`, which replaces a link rather than following it).
//!
//! Either way, a symbolic link anywhere on the path is [`Refused::Link`]: the operation
//! fails with `UnsafeKey` and touches nothing outside the root. What this cannot see: a
//! real directory *moved* out of the root (not replaced by a link) while an operation
//! holds its handle — moving it needs write access to both places.

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use rustix::fs::{AtFlags, Mode, OFlags, ResolveFlags};
use rustix::io::Errno;

/// Set once `openat2` answered `ENOSYS`: walk from then on.
static OPENAT2_MISSING: AtomicBool = AtomicBool::new(false);

/// How directories beneath the root are resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Resolver {
    /// `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)`, falling back to [`Resolver::Walk`]
    /// where the kernel lacks it.
    Openat2,
    /// One `openat(O_NOFOLLOW | O_DIRECTORY)` per component (the fallback; tests use it
    /// directly so that both paths are exercised on any kernel).
    #[cfg_attr(not(test), allow(dead_code))]
    Walk,
}

/// Why a path could not be used.
#[derive(Debug)]
pub(crate) enum Refused {
    /// A symbolic link (or a step out of the root) is on the path.
    Link,
    /// Any other failure of the file system.
    Io(io::Error),
}

impl From<Errno> for Refused {
    fn from(e: Errno) -> Self {
        match e {
            // ELOOP: a link met under RESOLVE_NO_SYMLINKS or O_NOFOLLOW; EXDEV: a step out
            // of the root under RESOLVE_BENEATH.
            Errno::LOOP | Errno::XDEV => Self::Link,
            e => Self::Io(e.into()),
        }
    }
}

impl From<io::Error> for Refused {
    fn from(e: io::Error) -> Self {
        Self::Io(e)
    }
}

impl Refused {
    pub(crate) fn is_not_found(&self) -> bool {
        matches!(self, Self::Io(e) if e.kind() == io::ErrorKind::NotFound)
    }
}

/// The root's handle for one operation.
pub(crate) struct Beneath {
    root: OwnedFd,
    resolver: Resolver,
}

impl Beneath {
    /// Opens the root (its own path may be a link: the operator chose it).
    pub(crate) fn open(root: &Path, resolver: Resolver) -> Result<Self, Refused> {
        let root = rustix::fs::open(root, dir_flags() & !OFlags::NOFOLLOW, Mode::empty())?;
        Ok(Self { root, resolver })
    }

    /// A new handle on the root directory itself.
    pub(crate) fn root(&self) -> Result<OwnedFd, Refused> {
        Ok(rustix::fs::openat(&self.root, ".", dir_flags(), Mode::empty())?)
    }

    /// Opens directory `rel` (`/`-separated components, none empty, `.` or `..`; `""` is
    /// the root) without following any link. With `create`, missing directories are made.
    pub(crate) fn dir(&self, rel: &str, create: bool) -> Result<OwnedFd, Refused> {
        if rel.is_empty() {
            return self.root();
        }
        if self.resolver == Resolver::Openat2 && !OPENAT2_MISSING.load(Ordering::Relaxed) {
            let how = ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS;
            match rustix::fs::openat2(&self.root, rel, dir_flags(), Mode::empty(), how) {
                Err(Errno::NOSYS) => OPENAT2_MISSING.store(true, Ordering::Relaxed),
                Err(Errno::NOENT) if create => {}
                // The kernel asks to retry when a rename raced the lookup; ENOTDIR is also
                // what a link as the last component gives: the walk tells which it was.
                Err(Errno::AGAIN | Errno::NOTDIR) => {}
                r => return Ok(r?),
            }
        }
        self.walk(rel, create)
    }

    /// The fallback: one component at a time, each relative to the handle before it.
    fn walk(&self, rel: &str, create: bool) -> Result<OwnedFd, Refused> {
        let mut at = self.root()?;
        for part in rel.split('/') {
            if part.is_empty() || part == "." || part == ".." {
                return Err(Refused::Link);
            }
            at = match rustix::fs::openat(&at, part, dir_flags(), Mode::empty()) {
                Err(Errno::NOENT) if create => {
                    match rustix::fs::mkdirat(&at, part, Mode::from_raw_mode(0o755)) {
                        Ok(()) | Err(Errno::EXIST) => {}
                        Err(e) => return Err(e.into()),
                    }
                    rustix::fs::openat(&at, part, dir_flags(), Mode::empty())?
                }
                // O_DIRECTORY | O_NOFOLLOW on a link answers ENOTDIR on some kernels: tell
                // a link apart from a file.
                Err(Errno::NOTDIR) => return Err(not_a_dir(&at, part)),
                r => r?,
            };
        }
        Ok(at)
    }
}

fn not_a_dir(at: &OwnedFd, part: &str) -> Refused {
    match rustix::fs::statat(at, part, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) if rustix::fs::FileType::from_raw_mode(st.st_mode) == rustix::fs::FileType::Symlink => Refused::Link,
        _ => Refused::Io(io::Error::new(io::ErrorKind::NotADirectory, "a file is where a directory should be")),
    }
}

/// Flags for opening a directory handle: no following, close on exec.
fn dir_flags() -> OFlags {
    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC
}

/// Splits a key into its directory (`""` at the root) and its file name.
pub(crate) fn split(rel: &str) -> (&str, &str) {
    rel.rsplit_once('/').unwrap_or(("", rel))
}

/// What `name` in `dir` is, without following a link; `None` when missing.
pub(crate) fn stat(dir: &impl AsFd, name: &str) -> Result<Option<rustix::fs::Stat>, Refused> {
    match rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) => Ok(Some(st)),
        Err(Errno::NOENT) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// The kind of file a stat describes.
pub(crate) fn kind(st: &rustix::fs::Stat) -> rustix::fs::FileType {
    rustix::fs::FileType::from_raw_mode(st.st_mode)
}
