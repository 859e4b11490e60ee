//! Records the git commit the binary is built from (`--version`, `ics_build_info`):
//! `ICS_BUILD_COMMIT` if set (a container build has no .git), else `git rev-parse`,
//! else "unknown" (a source tarball).

use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned()).filter(|s| !s.is_empty())
}

fn main() {
    println!("cargo:rerun-if-env-changed=ICS_BUILD_COMMIT");
    let commit = std::env::var("ICS_BUILD_COMMIT").ok().filter(|c| !c.is_empty()).or_else(|| {
        // Rebuild when HEAD moves (a commit, a checkout), not on every build: only files
        // that exist (a missing one would rerun this script, and rebuild the crate, always).
        let branch = git(&["rev-parse", "--symbolic-full-name", "HEAD"]).filter(|r| r.starts_with("refs/"));
        for name in ["HEAD", "packed-refs"].into_iter().map(str::to_owned).chain(branch) {
            if let Some(path) = git(&["rev-parse", "--git-path", &name]).filter(|p| std::path::Path::new(p).exists()) {
                println!("cargo:rerun-if-changed={path}");
            }
        }
        git(&["rev-parse", "--short=12", "HEAD"])
    });
    println!("cargo:rustc-env=ICS_BUILD_COMMIT={}", commit.unwrap_or_else(|| "unknown".to_owned()));
}
