//! The memory this process may use — its cgroup's limit (v2 `memory.max`, v1
//! `memory.limit_in_bytes`) or else the machine's physical memory — and the default
//! `pipeline.memory_budget_mb` taken from it.
//!
//! A fixed default does not fit a container: 6144 MB of budget in a 512 MB container
//! admits a dozen large photos at once and the kernel kills the daemon, again after every
//! restart. The limit is read from `/proc/self/cgroup` and `/sys/fs/cgroup`: the
//! process's own cgroup and each of its ancestors (a parent's limit binds too; in a
//! container whose cgroup namespace hides the path, the mount's root is the container's
//! cgroup), the smallest limit winning, and never more than `MemTotal`. v1's "unlimited"
//! (a page-rounded `i64::MAX`) and v2's `max` are no limit.

use std::fmt;
use std::path::{Path, PathBuf};

const MIB: u64 = 1 << 20;

/// What the process's own memory (runtime, listing, HTTP, state, allocator slack) is
/// taken to be besides the budget. The process alone peaks at 24 MB over 100,000
/// objects (RELIABILITY.md); 64 MiB leaves room for the S3 client's buffers.
pub const OVERHEAD_MB: u64 = 64;

/// Where a limit was read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitSource {
    CgroupV2,
    CgroupV1,
    Physical,
}

/// The memory this process may use, and where that was read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemoryLimit {
    pub bytes: u64,
    pub source: LimitSource,
}

impl MemoryLimit {
    /// The default `pipeline.memory_budget_mb` under this limit: three quarters of
    /// what is left after [`OVERHEAD_MB`], at least 16 MiB (the setting's minimum).
    ///
    /// The budget bounds what images reserve, each by the cost model's estimate, which
    /// stays at or above what a conversion holds; the quarter held back covers what no
    /// estimate sees — allocator fragmentation between threads, the page cache a cgroup
    /// v1 charges for a local bucket's files, WebPs being written — so that peak RSS
    /// stays below the limit rather than at it.
    pub fn default_budget_mb(&self) -> u32 {
        let left = (self.bytes / MIB).saturating_sub(OVERHEAD_MB);
        (left * 3 / 4).clamp(16, 1 << 20) as u32
    }

    /// The warning for a budget set above what this limit leaves after the process's
    /// own memory: the kernel would kill the daemon before the budget stops it.
    pub fn warn_over(&self, budget_mb: u32) -> Option<String> {
        let room = (self.bytes / MIB).saturating_sub(OVERHEAD_MB);
        (u64::from(budget_mb) > room).then(|| {
            format!(
                "pipeline.memory_budget_mb ({budget_mb}) is more than {self} leaves after the process's own \
                 {OVERHEAD_MB} MiB ({room}): images admitted by it can get the daemon killed for lack of \
                 memory; leave it unset to use {}",
                self.default_budget_mb()
            )
        })
    }
}

impl fmt::Display for MemoryLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self.source {
            LimitSource::CgroupV2 => "the cgroup v2 limit (memory.max)",
            LimitSource::CgroupV1 => "the cgroup v1 limit (memory.limit_in_bytes)",
            LimitSource::Physical => "physical memory (no cgroup limit)",
        };
        write!(f, "{what} of {} MiB", self.bytes / MIB)
    }
}

/// Where `pipeline.memory_budget_mb`'s value came from, as the start-up log says it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BudgetFrom {
    /// Set explicitly (file, environment): it wins over any limit.
    Setting,
    /// Unset: [`MemoryLimit::default_budget_mb`] of this limit.
    Limit(MemoryLimit),
    /// Unset and no limit could be read (no `/proc`): the fixed default.
    Fixed,
}

impl BudgetFrom {
    /// The budget to use: `setting` when given, else one from the limit [`detect`] reads.
    pub fn choose(setting: Option<i64>) -> (i64, Self) {
        match (setting, detect()) {
            (Some(mb), _) => (mb, Self::Setting),
            (None, Some(limit)) => (i64::from(limit.default_budget_mb()), Self::Limit(limit)),
            (None, None) => (i64::from(crate::convert::cost::DEFAULT_BUDGET_MB), Self::Fixed),
        }
    }
}

impl fmt::Display for BudgetFrom {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Setting => f.write_str("pipeline.memory_budget_mb"),
            Self::Limit(limit) => write!(f, "3/4 of {limit} less {OVERHEAD_MB} MiB"),
            Self::Fixed => f.write_str("the fixed default: no memory limit could be read"),
        }
    }
}

/// This process's limit, read from `/proc` and `/sys/fs/cgroup`; `None` when not even
/// `/proc/meminfo` can be read (not Linux).
pub fn detect() -> Option<MemoryLimit> {
    detect_under(Path::new("/"))
}

/// [`detect`] with `/proc` and `/sys` under `root` (for tests).
pub fn detect_under(root: &Path) -> Option<MemoryLimit> {
    let physical = physical_bytes(&std::fs::read_to_string(root.join("proc/meminfo")).ok()?)?;
    let own = std::fs::read_to_string(root.join("proc/self/cgroup")).unwrap_or_default();
    let mut best = MemoryLimit { bytes: physical, source: LimitSource::Physical };
    for (source, mount, path, file) in cgroup_limit_files(&own, &root.join("sys/fs/cgroup")) {
        let dir = mount.join(path);
        for limit in ancestors(&dir, &mount).filter_map(|d| read_limit(&d.join(file))) {
            if limit < best.bytes {
                best = MemoryLimit { bytes: limit, source };
            }
        }
    }
    Some(best)
}

/// `MemTotal` of a `/proc/meminfo` text, in bytes.
fn physical_bytes(meminfo: &str) -> Option<u64> {
    let kb = meminfo.lines().find_map(|l| l.strip_prefix("MemTotal:"))?;
    kb.trim().trim_end_matches("kB").trim().parse::<u64>().ok().map(|kb| kb * 1024)
}

/// Each memory controller this process is in: the controller's mount, the process's
/// cgroup under it and the limit file.
fn cgroup_limit_files<'a>(own: &'a str, cgroups: &Path) -> Vec<(LimitSource, PathBuf, &'a str, &'static str)> {
    let mut out = Vec::new();
    for line in own.lines() {
        // "hierarchy-ID:controller-list:cgroup-path"
        let mut parts = line.splitn(3, ':');
        let (Some(id), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next()) else { continue };
        let relative = path.trim_start_matches('/');
        if id == "0" && controllers.is_empty() {
            // v2: mounted at /sys/fs/cgroup (unified) or /sys/fs/cgroup/unified (hybrid).
            for mount in [cgroups.to_path_buf(), cgroups.join("unified")] {
                if mount.join("cgroup.controllers").is_file() {
                    out.push((LimitSource::CgroupV2, mount, relative, "memory.max"));
                }
            }
        } else if controllers.split(',').any(|c| c == "memory") {
            out.push((LimitSource::CgroupV1, cgroups.join("memory"), relative, "memory.limit_in_bytes"));
        }
    }
    out
}

/// `dir` and each of its parents up to the controller's `mount`, included.
fn ancestors<'a>(dir: &'a Path, mount: &'a Path) -> impl Iterator<Item = &'a Path> {
    dir.ancestors().take_while(move |d| d.starts_with(mount))
}

/// A limit file's value in bytes; `None` when absent, unreadable or unlimited.
fn read_limit(file: &Path) -> Option<u64> {
    let text = std::fs::read_to_string(file).ok()?;
    let value: u64 = text.trim().parse().ok()?; // v2's "max" fails here: no limit
    // v1 writes "unlimited" as i64::MAX rounded down to a page.
    (value < 1 << 62).then_some(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fake `/` holding `files` (path → contents).
    fn root(files: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (path, text) in files {
            let p = dir.path().join(path);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        }
        dir
    }

    const MEMINFO: (&str, &str) = ("proc/meminfo", "MemTotal:       24683772 kB\nMemFree:  1 kB\n");
    const GIB: u64 = 1 << 30;

    #[test]
    fn a_cgroup_v1_limit_in_a_hybrid_layout_beats_physical_memory() {
        // This machine's layout: v1 memory controller, an empty v2 hierarchy beside it.
        let r = root(&[
            MEMINFO,
            ("proc/self/cgroup", "9:name=systemd:/\n4:memory:/jobs/a\n0::/\n"),
            ("sys/fs/cgroup/memory/jobs/a/memory.limit_in_bytes", "536870912\n"),
            ("sys/fs/cgroup/memory/jobs/memory.limit_in_bytes", "9223372036854771712\n"),
            ("sys/fs/cgroup/memory/memory.limit_in_bytes", "9223372036854771712\n"),
            ("sys/fs/cgroup/unified/cgroup.controllers", ""),
        ]);
        let limit = detect_under(r.path()).unwrap();
        assert_eq!(limit, MemoryLimit { bytes: 512 * MIB, source: LimitSource::CgroupV1 });
        assert_eq!(limit.to_string(), "the cgroup v1 limit (memory.limit_in_bytes) of 512 MiB");
        assert_eq!(limit.default_budget_mb(), 336); // (512 - 64) * 3 / 4
    }

    #[test]
    fn v1_s_unlimited_value_is_no_limit_and_physical_memory_is_used() {
        let r = root(&[
            MEMINFO,
            ("proc/self/cgroup", "4:cpu,memory:/x\n"),
            ("sys/fs/cgroup/memory/x/memory.limit_in_bytes", "9223372036854771712\n"),
        ]);
        let limit = detect_under(r.path()).unwrap();
        assert_eq!(limit, MemoryLimit { bytes: 24683772 * 1024, source: LimitSource::Physical });
        assert_eq!(limit.default_budget_mb(), ((24683772 / 1024 - 64) * 3 / 4) as u32);
    }

    #[test]
    fn a_cgroup_v2_parent_s_limit_binds_its_child() {
        let r = root(&[
            MEMINFO,
            ("proc/self/cgroup", "0::/app/worker\n"),
            ("sys/fs/cgroup/cgroup.controllers", "cpu memory\n"),
            ("sys/fs/cgroup/app/worker/memory.max", "max\n"),
            ("sys/fs/cgroup/app/memory.max", "1073741824\n"),
        ]);
        assert_eq!(detect_under(r.path()).unwrap(), MemoryLimit { bytes: GIB, source: LimitSource::CgroupV2 });
    }

    #[test]
    fn a_container_s_namespaced_cgroup_is_read_at_the_mount_s_root() {
        // Docker on v1 without a cgroup namespace: /proc names the host's path, which
        // does not exist inside; the container's own cgroup is the mount's root.
        let r = root(&[
            MEMINFO,
            ("proc/self/cgroup", "5:memory:/docker/0123abcd\n"),
            ("sys/fs/cgroup/memory/memory.limit_in_bytes", "268435456\n"),
        ]);
        let limit = detect_under(r.path()).unwrap();
        assert_eq!(limit, MemoryLimit { bytes: 256 * MIB, source: LimitSource::CgroupV1 });
        assert_eq!(limit.default_budget_mb(), 144);
    }

    #[test]
    fn a_limit_above_physical_memory_is_physical_memory_and_a_tiny_one_keeps_the_minimum_budget() {
        let r = root(&[
            ("proc/meminfo", "MemTotal: 2097152 kB\n"),
            ("proc/self/cgroup", "0::/\n"),
            ("sys/fs/cgroup/cgroup.controllers", "memory\n"),
            ("sys/fs/cgroup/memory.max", "8589934592\n"),
        ]);
        let limit = detect_under(r.path()).unwrap();
        assert_eq!(limit, MemoryLimit { bytes: 2 * GIB, source: LimitSource::Physical });
        assert_eq!(MemoryLimit { bytes: 64 * MIB, source: LimitSource::CgroupV2 }.default_budget_mb(), 16);
        assert_eq!(detect_under(Path::new("/nonexistent")), None);
    }

    #[test]
    fn a_budget_set_above_the_container_s_limit_is_warned_about() {
        let limit = MemoryLimit { bytes: 512 * MIB, source: LimitSource::CgroupV1 };
        let warning = limit.warn_over(6144).unwrap();
        assert!(
            warning.contains("(6144)") && warning.contains("cgroup v1") && warning.contains("use 336"),
            "{warning}"
        );
        assert!(!warning.contains("  "), "{warning}");
        assert_eq!(limit.warn_over(448), None);
        assert!(limit.warn_over(449).is_some());
    }
}
