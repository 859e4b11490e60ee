//! The packaging files checked by the tools that read them: the systemd unit by
//! `systemd-analyze verify` (and its exposure score printed), the Grafana dashboard as
//! JSON naming only series the daemon exports. A check whose tool is missing on this
//! machine says so and passes; the tools are on every Debian with systemd.

use std::path::PathBuf;
use std::process::Command;

fn repo(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn have(tool: &str) -> bool {
    Command::new(tool).arg("--version").output().map(|o| o.status.success()).unwrap_or(false)
}

/// The unit as installed, with `ExecStart` pointing at this build's binary (verify checks
/// that the program exists and is executable).
fn unit_for_this_build(dir: &std::path::Path) -> PathBuf {
    let unit = std::fs::read_to_string(repo("packaging/image-converting-server.service")).unwrap();
    let unit = unit.replace("/usr/local/bin/image-converting-server", env!("CARGO_BIN_EXE_image-converting-server"));
    let path = dir.join("image-converting-server.service");
    std::fs::write(&path, unit).unwrap();
    path
}

#[test]
fn systemd_unit_passes_systemd_analyze_verify() {
    if !have("systemd-analyze") {
        eprintln!("SKIPPED: systemd-analyze is not installed (apt-get install systemd)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let unit = unit_for_this_build(dir.path());
    let out = Command::new("systemd-analyze").arg("verify").arg(&unit).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && stderr.trim().is_empty(), "systemd-analyze verify: {stderr}");

    // The hardening the unit promises is there (so a later edit cannot drop it quietly).
    let text = std::fs::read_to_string(&unit).unwrap();
    for line in [
        "DynamicUser=yes",
        "StateDirectory=image-converting-server",
        "ProtectSystem=strict",
        "NoNewPrivileges=yes",
        "PrivateTmp=yes",
        "CapabilityBoundingSet=\n",
        "SystemCallFilter=@system-service",
        "EnvironmentFile=-/etc/image-converting-server/env",
    ] {
        assert!(text.contains(line), "the unit lacks {line:?}");
    }

    // The exposure score (USAGE.md quotes it); `--offline` needs systemd 252 or newer.
    let out = Command::new("systemd-analyze").args(["security", "--offline=yes"]).arg(&unit).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    match text.lines().find(|l| l.contains("Overall exposure level")) {
        Some(line) => {
            eprintln!("{line}");
            let score: f64 =
                line.split(": ").nth(1).and_then(|s| s.split_whitespace().next()).unwrap().parse().unwrap();
            assert!(score <= 2.0, "exposure {score} (was 1.5 when the unit was written): {line}");
        }
        None => eprintln!("SKIPPED the exposure score: {}", String::from_utf8_lossy(&out.stderr).trim()),
    }
}
