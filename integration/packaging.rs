//! What a deployment relies on: the systemd unit checked by `systemd-analyze verify`
//! (its exposure score printed), and the readiness answer (`GET /ready`, the `health`
//! subcommand) that container health checks use. A check whose tool is missing on this
//! machine says so and passes; the tools are on every Debian with systemd.

use crate::common;

use std::path::PathBuf;
use std::process::Command;

use common::server::Server;

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

/// `health --url URL`: its exit code and what it printed.
fn health(url: &str) -> (i32, String) {
    let out = common::binary().args(["health", "--url", url]).output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.code().unwrap_or(-1), text)
}

#[test]
fn ready_and_health_follow_the_storage() {
    // A reachable bucket (the local directory): ready.
    let up = Server::start(None, "");
    let r = up.get("/ready");
    assert_eq!(r.status, 200, "{}", r.json());
    assert_eq!(r.json()["status"], "ready");
    assert_eq!(up.get("/health").status, 200);
    let (code, text) = health(&format!("{}/ready", up.base));
    assert_eq!(code, 0, "{text}");

    // A bucket whose server does not answer (nothing listens on the port): alive, not ready.
    let down = Server::start(
        None,
        "storage: {backend: r2}\nr2: {endpoint: 'http://127.0.0.1:9', bucket: gone, region: us-east-1, access_key: a, secret_key: b}\n",
    );
    assert_eq!(down.get("/health").status, 200, "liveness does not depend on the storage");
    let r = down.get("/ready");
    assert_eq!(r.status, 503, "{}", r.json());
    assert_eq!(r.json()["status"], "not_ready");
    assert!(r.json()["reason"].as_str().unwrap().contains("storage did not answer"), "{}", r.json());
    let (code, text) = health(&format!("{}/ready", down.base));
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("503"), "{text}");

    // Nothing listening at all: not ready, and it says so.
    let (code, text) = health("http://127.0.0.1:9/ready");
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("no answer"), "{text}");
}

/// Runs `podman ARGS`; its exit code and output.
fn podman(args: &[&str]) -> (i32, String) {
    let out = Command::new("podman").args(args).output().expect("podman runs");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.code().unwrap_or(-1), text)
}

/// Why podman cannot run containers here, if it cannot.
fn podman_unusable() -> Option<String> {
    match Command::new("podman").args(["image", "exists", "docker.io/library/debian:bookworm-slim"]).status() {
        Err(e) => Some(format!("podman is not installed ({e})")),
        Ok(s) if !s.success() => Some("podman has no debian:bookworm-slim image (run container-base.sh)".into()),
        Ok(_) => None,
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Removes the container and the image at the end, whatever happened.
struct Cleanup(String, String);
impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = podman(&["rm", "-f", "-t", "0", &self.0]);
        let _ = podman(&["rmi", "-f", &self.1]);
    }
}

#[test]
#[ignore = "needs the S3 test server: bash scripts/test.sh"]
fn container_converts_a_bucket_answers_health_and_stops_on_sigterm() {
    need_s3!();
    if let Some(why) = podman_unusable() {
        eprintln!("SKIPPED: the container test needs podman with a local debian:bookworm-slim: {why}");
        return;
    }
    // The image from this build's binary (SOURCE=prebuilt), not a second compilation.
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let binary = PathBuf::from(env!("CARGO_BIN_EXE_image-converting-server"));
    let Ok(relative) = binary.strip_prefix(&root) else {
        eprintln!("SKIPPED: the binary {} is outside the build context {}", binary.display(), root.display());
        return;
    };
    let tag = format!("localhost/ics-container-test:{}", std::process::id());
    let name = format!("ics-container-test-{}", std::process::id());
    let _cleanup = Cleanup(name.clone(), tag.clone());
    let binary_arg = format!("BINARY={}", relative.display());
    let (code, text) = podman(&[
        "build",
        "--pull=never",
        "--format",
        "docker",
        "--network",
        "host",
        "--build-arg",
        "SOURCE=prebuilt",
        "--build-arg",
        &binary_arg,
        "-t",
        &tag,
        root.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "podman build: {text}");

    // It runs as a non-root user.
    let out = Command::new("podman")
        .args([
            "run",
            "--rm",
            "--pull=never",
            "--network",
            "host",
            "--health-cmd",
            "none",
            "--entrypoint",
            "id",
            &tag,
            "-u",
        ])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "10001", "the container's user");

    // Public (its default 0.0.0.0) with no token: refused at start.
    let (code, text) = podman(&["run", "--rm", "--pull=never", "--network", "host", "--health-cmd", "none", &tag]);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("api.token is empty"), "{text}");

    // A bucket with three images on the S3 test server, the Go server's variables, a
    // token from a mounted file.
    let s3 = common::s3_env();
    let bucket = common::new_bucket("container");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let storage = ics::storage::Storage::open(&common::s3_config(&bucket).storage, &bucket).unwrap();
    common::fill_cycled(&rt, &storage, "photos", 3, &["jpeg_progressive.jpg", "png_rgb.png", "gif_anim_loop3.gif"]);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("token"), "container-test-token\n").unwrap();
    let port = free_port().to_string();
    let mount = format!("{}:/run/secrets/ics:ro", dir.path().display());
    let env = [
        format!("R2_ENDPOINT={}", s3.endpoint),
        format!("R2_BUCKET={bucket}"),
        format!("R2_ACCESS_KEY={}", s3.access_key),
        format!("R2_SECRET_KEY={}", s3.secret_key),
        format!("ICS__R2__REGION={}", s3.region),
        format!("ICS__SERVER__PORT={port}"),
        // Host networking: keep the API on loopback in the test.
        "ICS__SERVER__HOST=127.0.0.1".to_owned(),
        "ICS__API__TOKEN_FILE=/run/secrets/ics/token".to_owned(),
        "ICS__PIPELINE__SHUTDOWN_TIMEOUT_SECONDS=20".to_owned(),
    ];
    let mut args = vec!["run", "-d", "--pull=never", "--network", "host", "--name", &name, "-v", &mount];
    for e in &env {
        args.extend(["-e", e.as_str()]);
    }
    args.push(&tag);
    let (code, text) = podman(&args);
    assert_eq!(code, 0, "podman run: {text}");

    // It converts the bucket (cron.run_on_start).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(90);
    loop {
        let keys: Vec<String> = rt.block_on(async {
            use futures::StreamExt;
            storage.list(None).filter_map(|o| async { o.ok().map(|o| o.key) }).collect().await
        });
        if keys.iter().filter(|k| k.ends_with(".webp")).count() == 3 {
            break;
        }
        if std::time::Instant::now() > deadline {
            panic!("no 3 WebPs after 90 s: {keys:?}\n{}", podman(&["logs", &name]).1);
        }
        std::thread::sleep(std::time::Duration::from_millis(300));
    }

    // /health, the image's HEALTHCHECK (the binary's `health`), the token from the file.
    let base = format!("http://127.0.0.1:{port}");
    assert_eq!(common::server::http("GET", &format!("{base}/health"), None, &[]).status, 200);
    let (code, text) = podman(&["healthcheck", "run", &name]);
    assert_eq!(code, 0, "HEALTHCHECK: {text}\n{}", podman(&["logs", &name]).1);
    assert_eq!(common::server::http("GET", &format!("{base}/api/status"), None, &[]).status, 401);
    let auth = [("Authorization", "Bearer container-test-token")];
    assert_eq!(common::server::http("GET", &format!("{base}/api/status"), None, &auth).status, 200);

    // SIGTERM (`podman stop`, the image's STOPSIGNAL): a clean exit 0 before the kill.
    let (code, text) = podman(&["stop", "-t", "60", &name]);
    assert_eq!(code, 0, "podman stop: {text}");
    let exit = Command::new("podman").args(["inspect", "-f", "{{.State.ExitCode}}", &name]).output().unwrap();
    let exit = String::from_utf8_lossy(&exit.stdout).to_string();
    let logs = podman(&["logs", &name]).1;
    assert_eq!(exit.trim(), "0", "exit code after SIGTERM (137 = killed after the timeout)\n{logs}");
    assert!(logs.contains("Daemon stopped"), "{logs}");
}

#[test]
fn version_names_the_commit_and_libwebp() {
    let out = common::binary().arg("--version").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.starts_with(&format!("image-converting-server {}", env!("CARGO_PKG_VERSION"))), "{text}");
    assert!(text.contains(&format!("libwebp {}", ics::convert::webp::version())), "{text}");
    let commit = text.split("commit ").nth(1).and_then(|s| s.split(',').next()).unwrap_or("");
    assert!(commit == "unknown" || commit.chars().all(|c| c.is_ascii_hexdigit()) && commit.len() >= 7, "{text}");
}

#[test]
fn completions_and_man_page_are_generated_from_the_flags() {
    let out = common::binary().args(["completions", "bash"]).output().unwrap();
    assert!(out.status.success());
    let script = String::from_utf8(out.stdout).unwrap();
    for word in ["run-once", "check-config", "--dry-run", "health"] {
        assert!(script.contains(word), "bash completions lack {word}");
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("c.bash"), &script).unwrap();
    let syntax = Command::new("bash").arg("-n").arg(dir.path().join("c.bash")).status().unwrap();
    assert!(syntax.success(), "the bash completion script does not parse");
    for shell in ["zsh", "fish"] {
        assert!(common::binary().args(["completions", shell]).output().unwrap().status.success(), "{shell}");
    }
    assert!(!common::binary().args(["completions", "tcsh"]).output().unwrap().status.success());

    let out = common::binary().arg("man").output().unwrap();
    assert!(out.status.success());
    let page = String::from_utf8(out.stdout).unwrap();
    assert!(page.contains(".TH image-converting-server 1"), "{page}");
    for word in ["serve", "run\\-once", "\\-\\-config"] {
        assert!(page.contains(word), "the man page lacks {word}");
    }
}

/// The metric names a PromQL expression uses (identifiers followed by `{`, `[` or `)`
/// that are not PromQL functions or keywords).
fn metric_names(expr: &str) -> Vec<String> {
    const PROMQL: &[&str] =
        &["sum", "rate", "increase", "histogram_quantile", "by", "max", "time", "le", "route", "reason", "status"];
    let mut names = Vec::new();
    let mut word = String::new();
    for c in expr.chars().chain(std::iter::once(' ')) {
        if c.is_ascii_alphanumeric() || c == '_' {
            word.push(c);
            continue;
        }
        if matches!(c, '{' | '[' | ')' | ' ') && word.contains('_') && !PROMQL.contains(&word.as_str()) {
            names.push(std::mem::take(&mut word));
        }
        word.clear();
    }
    names
}

#[test]
fn grafana_dashboard_is_json_and_names_only_exported_series() {
    let text = std::fs::read_to_string(repo("packaging/grafana-dashboard.json")).unwrap();
    let dash: serde_json::Value = serde_json::from_str(&text).expect("the dashboard is JSON");
    let metrics = ics::metrics::Metrics::default();
    // Per-bucket series exist once the daemon has registered its bucket, as serve does at
    // start; per-route series once a route has answered.
    let _bucket = metrics.for_bucket("images");
    metrics.http_request("/health", "GET", 200, 0.001);
    let exported = metrics.render();
    let panels = dash["panels"].as_array().expect("panels");
    assert!(panels.len() >= 6, "throughput, failures, queue, latency, RSS, HTTP at least");
    let mut seen = std::collections::BTreeSet::new();
    for panel in panels {
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"].as_str().unwrap();
            for name in metric_names(expr) {
                let base = name.trim_end_matches("_bucket");
                assert!(
                    exported.contains(&format!("# TYPE {base} ")),
                    "panel {:?} uses {name}, which /metrics does not export",
                    panel["title"]
                );
                seen.insert(base.to_owned());
            }
        }
    }
    for needed in [
        "ics_images_converted_total",
        "ics_images_failed_total",
        "ics_images_in_flight",
        "ics_conversion_duration_seconds",
        "process_resident_memory_bytes",
        "ics_http_request_duration_seconds",
    ] {
        assert!(seen.contains(needed), "no panel shows {needed}");
    }
}

#[test]
fn compose_files_run_the_daemon_with_the_go_servers_variables() {
    if !have("podman-compose") {
        eprintln!("SKIPPED: the compose check needs podman-compose (apt-get install podman-compose)");
        return;
    }
    // What `up -d` would run, without running it (podman-compose has no `config`); the
    // dry run still makes the project's network and volumes, removed at the end.
    struct RemoveProject;
    impl Drop for RemoveProject {
        fn drop(&mut self) {
            for volume in ["ics-data", "ics-state", "minio-data"] {
                let _ = podman(&["volume", "rm", "-f", &format!("ics-compose-check_{volume}")]);
            }
            let _ = podman(&["network", "rm", "-f", "ics-compose-check_default"]);
        }
    }
    let _remove = RemoveProject;
    for (file, endpoint) in [("compose.yaml", "http://minio:9000"), ("compose.offline.yaml", "http://s3:9000")] {
        let out = Command::new("podman-compose")
            .args(["--dry-run", "-p", "ics-compose-check", "-f", file, "up", "-d"])
            .current_dir(repo("."))
            .output()
            .expect("podman-compose runs");
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success(), "{file}: {text}");
        let daemon = text
            .lines()
            .find(|l| l.starts_with("podman run") && l.contains("image-converting-server:latest"))
            .unwrap_or_else(|| panic!("{file}: no `podman run` of the daemon in:\n{text}"));
        for expected in [
            format!("-e R2_ENDPOINT={endpoint}"),
            "-e R2_BUCKET=images".into(),
            "-e R2_ACCESS_KEY=".into(),
            "-e CRON_SCHEDULE=".into(),
            "-e ICS__API__TOKEN=".into(),
            "--stop-signal SIGTERM".into(),
            "-p 127.0.0.1:4000:4000".into(),
        ] {
            assert!(daemon.contains(&expected), "{file}: the daemon's `podman run` lacks {expected}: {daemon}");
        }
    }
}
