//! The default configuration in a 512 MB container (issue 23, item 3): `run-once` and
//! `serve`, each put in a memory cgroup of 512 MiB that the test creates, convert six
//! JPEGs of 24–31 MP — three photos, three of noise (the encoder's worst case) — with
//! no OOM kill. Before, the fixed 6144 MB budget admitted them all at once and the
//! kernel killed the daemon within seconds.
//!
//! The cgroup is v2 where the unified hierarchy has the memory controller, else v1
//! (`/sys/fs/cgroup/memory`), with swap limited too where the kernel accounts it. Where
//! no writable memory controller exists (not root, a read-only `/sys/fs/cgroup`), each
//! test says so on stderr and returns: skipped, not passed.

use crate::common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::server::*;

const LIMIT: u64 = 512 << 20;

/// A memory cgroup of its own, removed when dropped (once its processes have exited).
struct Cgroup {
    dir: PathBuf,
    v2: bool,
}

impl Cgroup {
    /// Creates `name` with a `limit` on memory and swap; `Err` says why it cannot.
    fn create(name: &str, limit: u64) -> Result<Self, String> {
        let unified = ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"].into_iter().map(Path::new).find(|m| {
            std::fs::read_to_string(m.join("cgroup.subtree_control"))
                .is_ok_and(|c| c.split(' ').any(|c| c.trim() == "memory"))
        });
        let (dir, v2) = match unified {
            Some(mount) => (mount.join(name), true),
            None if Path::new("/sys/fs/cgroup/memory/memory.limit_in_bytes").exists() => {
                (Path::new("/sys/fs/cgroup/memory").join(name), false)
            }
            None => return Err("no cgroup memory controller (v2 or v1) is mounted".into()),
        };
        let _ = std::fs::remove_dir(&dir); // a leftover of an interrupted run
        std::fs::create_dir(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let group = Self { dir, v2 };
        let write = |file: &str, value: &str| {
            std::fs::write(group.dir.join(file), value).map_err(|e| format!("cannot write {file}: {e}"))
        };
        if v2 {
            write("memory.max", &limit.to_string())?;
            let _ = write("memory.swap.max", "0");
        } else {
            write("memory.limit_in_bytes", &limit.to_string())?;
            if group.dir.join("memory.memsw.limit_in_bytes").exists() {
                write("memory.memsw.limit_in_bytes", &limit.to_string())?;
            }
        }
        Ok(group)
    }

    /// The daemon binary with `args`, started inside this cgroup (a shell moves itself
    /// in, then execs it), without the test run's `ICS__*` and `R2_*` variables.
    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("sh");
        cmd.arg("-c").arg(r#"echo $$ > "$0" && exec "$@""#).arg(self.dir.join("cgroup.procs")).arg(BIN).args(args);
        for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("ICS__") || k.starts_with("R2_")) {
            cmd.env_remove(k);
        }
        cmd
    }

    /// OOM kills in this cgroup so far.
    fn oom_kills(&self) -> u64 {
        let file = if self.v2 { "memory.events" } else { "memory.oom_control" };
        let text = std::fs::read_to_string(self.dir.join(file)).unwrap_or_default();
        text.lines().find_map(|l| l.strip_prefix("oom_kill ")).and_then(|n| n.trim().parse().ok()).unwrap_or(0)
    }

    /// The cgroup's peak memory use in MiB, where the kernel keeps one.
    fn peak_mb(&self) -> Option<f64> {
        let file = if self.v2 { "memory.peak" } else { "memory.max_usage_in_bytes" };
        let bytes: u64 = std::fs::read_to_string(self.dir.join(file)).ok()?.trim().parse().ok()?;
        Some(bytes as f64 / f64::from(1 << 20))
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.dir);
    }
}

/// A cgroup for this test, or `None` after saying on stderr why the test is skipped.
fn cgroup(test: &str) -> Option<Cgroup> {
    match Cgroup::create(&format!("ics-test-{test}-{}", std::process::id()), LIMIT) {
        Ok(g) => Some(g),
        Err(why) => {
            eprintln!("SKIPPED {test}: cannot create a 512 MiB memory cgroup ({why}); run as root");
            None
        }
    }
}

/// A JPEG of `width`×`height` (quality 90): seeded RGB noise, or the repository's photo
/// upscaled (so every photo differs a little).
fn jpeg(width: u32, height: u32, noise: bool) -> Vec<u8> {
    let rgb = if noise {
        // Eight bytes a step (this file is built unoptimised).
        let mut state = 0x2545_f491_4f6c_dd1du64 ^ u64::from(width);
        let mut data = vec![0u8; width as usize * height as usize * 3];
        for chunk in data.chunks_mut(8) {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            chunk.copy_from_slice(&state.to_le_bytes()[..chunk.len()]);
        }
        image::RgbImage::from_raw(width, height, data).unwrap()
    } else {
        let base = image::load_from_memory(&common::fixture("reference_chelsea.png")).unwrap();
        base.resize_exact(width, height, image::imageops::FilterType::Triangle).into_rgb8()
    };
    common::jpeg_of(&rgb, 90)
}

/// A local bucket of the six JPEGs: photos of 24, 27 and 31 MP, noise of 24 MP (three
/// seeds; noise at 90 is ~1.6 bytes a pixel, so 24 MP stays under the 50 MB file cap).
/// The JPEGs are made once for both tests, each on a thread of its own: the JPEG encoder
/// takes 4–9 s for each (140 MB of JPEG in all).
fn bucket() -> tempfile::TempDir {
    static JPEGS: std::sync::OnceLock<Vec<(&str, Vec<u8>)>> = std::sync::OnceLock::new();
    let jpegs = JPEGS.get_or_init(|| {
        std::thread::scope(|s| {
            let made: Vec<_> = [
                ("photo-24mp.jpg", (6000, 4000, false)),
                ("photo-27mp.jpg", (6400, 4220, false)),
                ("photo-31mp.jpg", (6800, 4560, false)),
                ("noise-24mp-a.jpg", (6000, 4000, true)),
                ("noise-24mp-b.jpg", (6002, 4000, true)),
                ("noise-24mp-c.jpg", (6004, 4000, true)),
            ]
            .into_iter()
            .map(|(name, (w, h, noise))| (name, s.spawn(move || jpeg(w, h, noise))))
            .collect();
            made.into_iter().map(|(name, t)| (name, t.join().unwrap())).collect()
        })
    });
    let root = tempfile::tempdir().unwrap();
    for (name, bytes) in jpegs {
        std::fs::write(root.path().join(name), bytes).unwrap();
    }
    root
}

fn webps(root: &Path) -> usize {
    std::fs::read_dir(root)
        .unwrap()
        .filter(|e| e.as_ref().unwrap().path().extension().is_some_and(|x| x == "webp"))
        .count()
}

#[test]
fn run_once_with_the_default_budget_converts_six_large_jpegs_in_512_mb_without_an_oom_kill() {
    let Some(group) = cgroup("run-once") else { return };
    let root = bucket();
    let state = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let out = group
        .command(&["run-once", "--json"])
        .env("ICS__STORAGE__BACKEND", "local")
        .env("ICS__STORAGE__LOCAL_ROOT", root.path())
        .env("ICS__STATE__DIR", state.path())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let kills = group.oom_kills();
    eprintln!(
        "run-once in 512 MiB: {:?} in {:.1} s, cgroup peak {:?} MiB, OOM kills {kills}\n{stdout}",
        out.status,
        started.elapsed().as_secs_f64(),
        group.peak_mb()
    );
    assert_eq!(kills, 0, "OOM-killed: {stderr}");
    assert!(out.status.success(), "{:?}: {stdout}{stderr}", out.status);
    let summary: serde_json::Value = serde_json::from_str(&stdout).unwrap_or_else(|_| panic!("{stdout}{stderr}"));
    assert_eq!(summary["converted"], 6, "{summary}");
    assert_eq!(webps(root.path()), 6);
}

#[test]
fn serve_with_the_default_budget_converts_six_large_jpegs_in_512_mb_without_an_oom_kill() {
    let Some(group) = cgroup("serve") else { return };
    let root = bucket();
    let state = tempfile::tempdir().unwrap();
    let mut cmd = group.command(&["serve"]);
    cmd.env("ICS__STORAGE__BACKEND", "local")
        .env("ICS__STORAGE__LOCAL_ROOT", root.path())
        .env("ICS__STATE__DIR", state.path())
        .env("ICS__SERVER__PORT", "0")
        .env("ICS__CRON__RUN_ON_START", "true")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let (mut child, base, log) = spawn_serve(cmd);
    let deadline = Instant::now() + Duration::from_secs(600);
    while webps(root.path()) < 6 && Instant::now() < deadline {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("serve exited ({status:?}), OOM kills {}:\n{}", group.oom_kills(), log.lock().unwrap().join("\n"));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let ready = http("GET", &format!("{base}/health"), None, &[]).status;
    let kills = group.oom_kills();
    let _ = child.kill();
    let _ = child.wait();
    let log = log.lock().unwrap().join("\n");
    eprintln!("serve in 512 MiB: cgroup peak {:?} MiB, OOM kills {kills}", group.peak_mb());
    // The start-up line says where the budget came from: the cgroup's limit.
    let started = log.lines().find(|l| l.contains("Daemon started")).unwrap_or_else(|| panic!("{log}"));
    assert!(started.contains("limit") && started.contains("of 512 MiB"), "{started}");
    assert_eq!(kills, 0, "OOM-killed:\n{log}");
    assert_eq!(webps(root.path()), 6, "{log}");
    assert_eq!(ready, 200);
}
