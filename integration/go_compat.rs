//! A Go image-converting-server deployment switched over with no edit: the real binary
//! started in a directory holding only what the Go server used — a `.env`, its
//! `config/config.yaml`, its `data/state.json` — and the examples of the Go server's
//! README and docs that concern configuration.

use crate::common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Output, Stdio};
use std::time::{Duration, Instant, SystemTime};

use common::*;
use serde_json::Value;

/// Every variable the Go server reads, removed so the host's environment cannot leak in.
const GO_VARIABLES: [&str; 21] = [
    "R2_ACCESS_KEY",
    "R2_SECRET_KEY",
    "R2_ENDPOINT",
    "R2_BUCKET",
    "R2_BUCKETS",
    "CONVERSION_FORMATS",
    "CONVERSION_QUALITY",
    "CONVERSION_MAX_SIZE_MB",
    "RESIZE_PRESETS",
    "CRON_SCHEDULE",
    "CRON_ENABLED",
    "SERVER_PORT",
    "SERVER_TIMEOUT_SECONDS",
    "WEBHOOK_URL",
    "WEBHOOK_SECRET",
    "WEBHOOK_RETRY_ENABLED",
    "WEBHOOK_RETRY_INTERVAL_MINUTES",
    "WEBHOOK_MAX_RETRIES",
    "WEBHOOK_PENDING_DIR",
    "TZ",
    "RUST_LOG",
];

/// The binary in `dir` with a clean environment plus `env`.
fn command(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> std::process::Command {
    let mut cmd = binary();
    for var in GO_VARIABLES {
        cmd.env_remove(var);
    }
    cmd.current_dir(dir).args(args).envs(env.iter().copied());
    cmd
}

fn run(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    command(dir, args, env).output().expect("run the binary")
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

fn check_config_json(dir: &Path, env: &[(&str, &str)]) -> Value {
    let o = run(dir, &["check-config", "--json"], env);
    assert!(o.status.success(), "{}", text(&o));
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&o)))
}

/// A Go deployment's `.env`, pointing at `bucket` on the S3 test server.
fn go_dotenv(bucket: &str, secret: &str) -> String {
    let s3 = s3_env();
    format!(
        "# Cloudflare R2 (the Go server's .env)\nR2_ACCESS_KEY={}\nR2_SECRET_KEY={secret}\nR2_ENDPOINT={}\n\
         R2_BUCKET={bucket}\n# SERVER_PORT=4000\nCRON_SCHEDULE=0 13 * * *\nCRON_ENABLED=true\n",
        s3.access_key, s3.endpoint
    )
}

/// The binary started with no command (it serves) and its log, read on a thread.
struct Serve {
    child: Child,
    log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Serve {
    fn start(dir: &Path, env: &[(&str, &str)]) -> Self {
        // Bare, as the Go binary was started (`ExecStart=/path/to/image-converting-server`): serve.
        let mut child = command(dir, &[], env).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
        let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (sink, stderr) = (log.clone(), child.stderr.take().unwrap());
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        Self { child, log }
    }

    /// Waits (at most 60 s) until a log line contains `needle`.
    fn wait_for(&mut self, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(line) = self.log.lock().unwrap().iter().find(|l| l.contains(needle)) {
                return line.clone();
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("serve exited ({status}) before logging {needle:?}: {:#?}", self.log.lock().unwrap());
            }
            assert!(Instant::now() < deadline, "no {needle:?} in: {:#?}", self.log.lock().unwrap());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn log(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
#[ignore = "needs the S3 test server: bash scripts/test.sh"]
fn a_dotenv_alone_configures_serve_against_s3_and_its_secrets_stay_out_of_the_log() {
    need_s3!();
    let bucket = new_bucket("go-dotenv");
    let storage = ics::storage::Storage::open(&s3_config(&bucket).storage, &bucket).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(storage.put("uploads/photo.jpg", fixture("jpeg_orient6.jpg").into(), "image/jpeg")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    // The test server accepts any secret; this one must never be printed.
    let secret = "go-dotenv-secret-7f3a9c";
    std::fs::write(dir.path().join(".env"), go_dotenv(&bucket, secret)).unwrap();
    // Only what the harness needs besides the .env: a free port, moto's region.
    let s3 = s3_env();
    let harness = [("ICS__SERVER__PORT", "0"), ("ICS__R2__REGION", s3.region.as_str())];

    let json = check_config_json(dir.path(), &harness);
    assert_eq!(json["storage"]["backend"], "r2");
    assert_eq!(json["r2"]["bucket"], bucket.as_str());
    assert_eq!(json["r2"]["secret_key"], "***");
    assert_eq!(json["sources"]["r2.bucket"], ".env R2_BUCKET");
    assert_eq!(json["sources"]["storage.backend"], "default (a bucket is set: .env R2_BUCKET)");
    assert_eq!(json["sources"]["cron.schedule"], ".env CRON_SCHEDULE");
    assert_eq!(json["server"]["port"], 0, "the harness's ICS__SERVER__PORT=0 wins");

    let mut serve = Serve::start(dir.path(), &harness);
    serve.wait_for("Listening on http://");
    // cron.run_on_start: the bucket is made WebP-complete at once.
    let deadline = Instant::now() + Duration::from_secs(60);
    while rt.block_on(storage.head("uploads/photo.webp")).is_err() {
        assert!(Instant::now() < deadline, "no uploads/photo.webp: {}", serve.log());
        std::thread::sleep(Duration::from_millis(100));
    }
    serve.wait_for("Next scheduled run");
    let log = serve.log();
    assert!(!log.contains(secret), "the .env secret reached the log:\n{log}");
}

#[test]
#[ignore = "needs the S3 test server: bash scripts/test.sh"]
fn a_go_deployment_copied_as_is_runs_once_against_s3_and_says_what_it_migrated() {
    need_s3!();
    let bucket = new_bucket("go-copied");
    let storage = ics::storage::Storage::open(&s3_config(&bucket).storage, &bucket).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(storage.put("gallery/1.jpg", fixture("jpeg_progressive.jpg").into(), "image/jpeg")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(".env"), go_dotenv(&bucket, "go-copied-secret-51d2")).unwrap();
    // The rest of a Go deployment: its newest shipped config/config.yaml (no r2 section) and
    // the state of a Go server that never completed a run (zero times: a full scan).
    std::fs::create_dir_all(dir.path().join("config")).unwrap();
    std::fs::write(
        dir.path().join("config/config.yaml"),
        "# R2 접속 정보는 .env 파일 또는 환경 변수로 설정하세요.\nconversion:\n  formats: [\"jpeg\", \"jpg\", \"png\"]\n  \
         quality: 85\n  max_size_mb: 50\nresize:\n  presets:\n    thumbnail:\n      width: 150\n      height: 150\n\
         cron:\n  schedule: \"0 13 * * *\"\n  enabled: true\nserver:\n  port: 4000\n  timeout_seconds: 30\n",
    )
    .unwrap();
    std::fs::create_dir_all(dir.path().join("data")).unwrap();
    std::fs::write(
        dir.path().join("data/state.json"),
        "{\"last_processed_time\":\"0001-01-01T00:00:00Z\",\"last_run_time\":\"0001-01-01T00:00:00Z\",\"processed_count\":0,\"failed_count\":0}",
    )
    .unwrap();
    let s3 = s3_env();
    let o = run(dir.path(), &["run-once", "--json"], &[("ICS__R2__REGION", s3.region.as_str())]);
    assert!(o.status.success(), "{}", text(&o));
    let summary: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(summary["converted"], 1, "{summary}");
    assert!(rt.block_on(storage.head("gallery/1.webp")).is_ok());
    let stderr = String::from_utf8_lossy(&o.stderr);
    let migrated: Vec<&str> = stderr.lines().filter(|l| l.contains("Migrated the Go server's state")).collect();
    assert_eq!(migrated.len(), 1, "{stderr}");
    assert!(migrated[0].contains("every source is considered") && migrated[0].contains("data/state.json"), "{stderr}");
    assert!(!stderr.contains("go-copied-secret-51d2"), "{stderr}");
    // The file's values are in effect beside the .env's.
    let json = check_config_json(dir.path(), &[]);
    assert_eq!(json["sources"]["resize.presets.thumbnail.width"], "file");
    assert_eq!(json["conversion"]["formats"], serde_json::json!(["jpeg", "jpg", "png"]));
}

#[test]
fn a_go_state_json_is_adopted_once_and_its_lower_bound_honoured() {
    // The local bucket stands in for R2: what matters is each source's modification time.
    let dir = tempfile::tempdir().unwrap();
    let bucket = dir.path().join("bucket");
    std::fs::create_dir_all(bucket.join("old")).unwrap();
    std::fs::create_dir_all(bucket.join("new")).unwrap();
    std::fs::write(bucket.join("old/before.jpg"), fixture("jpeg_orient6.jpg")).unwrap();
    std::fs::write(bucket.join("new/after.jpg"), fixture("jpeg_progressive.jpg")).unwrap();
    let long_ago = SystemTime::UNIX_EPOCH + Duration::from_secs(1_577_836_800); // 2020-01-01
    std::fs::File::options().write(true).open(bucket.join("old/before.jpg")).unwrap().set_modified(long_ago).unwrap();
    // The Go server's last run started 2024-01-15; its next run lists only what changed since.
    std::fs::create_dir_all(dir.path().join("data")).unwrap();
    std::fs::write(
        dir.path().join("data/state.json"),
        "{\n  \"last_processed_time\": \"2024-01-15T11:00:00.5+09:00\",\n  \"last_run_time\": \"2024-01-15T02:05:30Z\",\n  \
         \"processed_count\": 42,\n  \"failed_count\": 0\n}",
    )
    .unwrap();

    // check-config runs serve's checks on it without adopting it.
    let o = run(dir.path(), &["check-config"], &[]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("data/state.json (the Go server's state) will be adopted at start"), "{}", text(&o));
    assert!(!dir.path().join("state/state.json").exists());

    let o = run(dir.path(), &["run-once", "--json"], &[]);
    assert!(o.status.success(), "{}", text(&o));
    let summary: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(summary["converted"], 1, "{summary}");
    assert!(bucket.join("new/after.webp").is_file());
    assert!(!bucket.join("old/before.webp").exists(), "the Go server would not have converted it");
    let stderr = String::from_utf8_lossy(&o.stderr);
    let migrated: Vec<&str> = stderr.lines().filter(|l| l.contains("Migrated the Go server's state")).collect();
    assert_eq!(migrated.len(), 1, "{stderr}");
    assert!(
        migrated[0].contains("2024-01-15T02:00:00.500+00:00") && migrated[0].contains("data/state.json"),
        "{stderr}"
    );
    let ours: Value = serde_json::from_slice(&std::fs::read(dir.path().join("state/state.json")).unwrap()).unwrap();
    assert_eq!(ours["ignore_before"], "2024-01-15T02:00:00.500Z", "{ours}");
    assert!(dir.path().join("data/state.json").is_file(), "the Go file stays for a roll-back");

    // Ours exists now: the next start neither migrates again nor converts the old source.
    let o = run(dir.path(), &["run-once", "--json"], &[]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(!text(&o).contains("Migrated"), "{}", text(&o));
    assert!(!bucket.join("old/before.webp").exists());
}

#[test]
fn check_config_json_mirrors_the_go_file_and_names_each_source() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("config")).unwrap();
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("config/examples/go-server.yaml"),
        dir.path().join("config/config.yaml"),
    )
    .unwrap();
    std::fs::write(dir.path().join(".env"), "R2_SECRET_KEY=from-dotenv-0123\nSERVER_PORT=5000\nCONVERSION_QUALITY=0\n")
        .unwrap();
    let o = run(dir.path(), &["check-config", "--json"], &[("SERVER_PORT", "6000"), ("TZ", "Asia/Seoul")]);
    assert!(o.status.success(), "{}", text(&o));
    let json: Value = serde_json::from_slice(&o.stdout).unwrap();
    for section in
        ["r2", "conversion", "resize", "cron", "server", "webhook", "storage", "state", "pipeline", "api", "log"]
    {
        assert!(json[section].is_object(), "no {section} in {json}");
    }
    assert_eq!(json["r2"]["bucket"], "your-bucket-name");
    assert_eq!(json["r2"]["buckets"], serde_json::json!(["your-bucket-name"]));
    assert_eq!((&json["r2"]["access_key"], &json["r2"]["secret_key"]), (&"***".into(), &"***".into()));
    assert_eq!(json["resize"]["presets"]["medium"], serde_json::json!({"width": 800, "height": 800}));
    assert_eq!(json["server"]["port"], 6000);
    assert_eq!(json["conversion"]["quality"], 85);
    assert_eq!(json["cron"]["schedule"], "0 13 * * *");
    assert_eq!(json["cron"]["timezone"], "Asia/Seoul");
    assert_eq!(json["webhook"]["pending_dir"], "data/webhook_pending");
    let sources = &json["sources"];
    assert_eq!(sources["r2.bucket"], "file");
    assert_eq!(sources["r2.secret_key"], ".env R2_SECRET_KEY");
    assert_eq!(sources["server.port"], "environment SERVER_PORT");
    assert_eq!(sources["cron.timezone"], "environment TZ");
    assert_eq!(sources["pipeline.workers"], "default");
    assert!(!text(&o).contains("from-dotenv-0123"), "{}", text(&o));
    // The Go zero value is read as Go reads it, and said so on stderr.
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("conversion.quality is 0 (.env CONVERSION_QUALITY)"),
        "{}",
        text(&o)
    );
    // The YAML form says the same, with each origin as a comment.
    let o = run(dir.path(), &["check-config"], &[("SERVER_PORT", "6000")]);
    let yaml = String::from_utf8_lossy(&o.stdout);
    assert!(yaml.contains("  port: 6000  # environment SERVER_PORT"), "{yaml}");
    assert!(yaml.contains("  secret_key: \"***\"  # .env R2_SECRET_KEY"), "{yaml}");
    // And every check serve runs: a public address without a token.
    let o = run(dir.path(), &["check-config"], &[("ICS__SERVER__HOST", "0.0.0.0")]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("api.token is empty"), "{}", text(&o));
}

#[test]
fn loud_configuration_errors_name_the_file_line_key_or_variable() {
    let dir = tempfile::tempdir().unwrap();
    /// (file written, its content, variables, expected message)
    type Case<'a> = (&'a str, &'a str, &'a [(&'a str, &'a str)], &'a str);
    let cases: &[Case] = &[
        (".env", "R2_BUCKET=b\nR2_SECRET_KEY hunter2\n", &[], "env file .env, line 2: expected KEY=VALUE"),
        ("c.yaml", "conversion: {qualty: 90}\n", &[], "did you mean `conversion.quality`?"),
        ("c.yaml", "log: {level: inf}\n", &[], "log.level must be"),
        ("c.yaml", "", &[("CRON_ENABLED", "yes")], "CRON_ENABLED (environment) must be true, 1, false or 0"),
        (
            "c.yaml",
            "",
            &[("R2_ACCESS_KEY", "AKIA"), ("R2_SECRET_KEY", "hunter2")],
            "r2.bucket must be set with R2 credentials",
        ),
    ];
    for (file, content, env, expected) in cases {
        let _ = std::fs::remove_file(dir.path().join(".env"));
        std::fs::write(dir.path().join(file), content).unwrap();
        let o = run(dir.path(), &["--config", "c.yaml", "check-config"], env);
        assert_eq!(o.status.code(), Some(1), "{file}: {}", text(&o));
        assert!(text(&o).contains(expected), "{file} {content:?}: {}", text(&o));
        assert!(!text(&o).contains("hunter2"), "a secret leaked: {}", text(&o));
    }
    // A Go state that cannot be parsed stops check-config as it stops serve.
    std::fs::write(dir.path().join("c.yaml"), "").unwrap();
    std::fs::create_dir_all(dir.path().join("data")).unwrap();
    std::fs::write(dir.path().join("data/state.json"), "{\"last_processed_time\": 7").unwrap();
    let o = run(dir.path(), &["--config", "c.yaml", "check-config"], &[]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("data/state.json cannot be read"), "{}", text(&o));
    std::fs::remove_dir_all(dir.path().join("data")).unwrap();
    // --env-file names another file, which must exist.
    std::fs::write(dir.path().join("c.yaml"), "").unwrap();
    std::fs::write(dir.path().join("prod.env"), "SERVER_PORT=4321\n").unwrap();
    let json = check_config_json(dir.path(), &[]);
    assert_eq!(json["server"]["port"], 4000);
    let o = run(dir.path(), &["--config", "c.yaml", "--env-file", "prod.env", "check-config", "--json"], &[]);
    assert_eq!(serde_json::from_slice::<Value>(&o.stdout).unwrap()["server"]["port"], 4321, "{}", text(&o));
    let o = run(dir.path(), &["--env-file", "missing.env", "check-config"], &[]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).contains("missing.env"), "{}", text(&o));
}

/// The Go server's README, `.env.example` and docs/ examples that concern configuration,
/// each run through `check-config` or `schedule` (MIGRATING.md lists the ones that
/// cannot run and why).
#[test]
fn the_go_servers_documented_configuration_examples_run() {
    let dir = tempfile::tempdir().unwrap();
    // README: "cp .env.example .env" — the example as shipped, placeholders and Korean comments included.
    let env_example = "# Cloudflare R2 설정\n# cp .env.example .env\n\nR2_ACCESS_KEY=your-access-key-here\n\
                       R2_SECRET_KEY=your-secret-key-here\nR2_ENDPOINT=https://your-account-id.r2.cloudflarestorage.com\n\
                       R2_BUCKET=your-bucket-name\n# R2_BUCKETS=bucket-a,bucket-b,bucket-c\n# SERVER_PORT=4000\n\
                       # CRON_SCHEDULE=0 2 * * *\n# CRON_ENABLED=true\n# WEBHOOK_PENDING_DIR=data/webhook_pending\n";
    std::fs::write(dir.path().join(".env"), env_example).unwrap();
    let json = check_config_json(dir.path(), &[]);
    assert_eq!((&json["r2"]["bucket"], &json["server"]["port"]), (&"your-bucket-name".into(), &4000.into()));
    // README: "SERVER_PORT=9000 docker-compose up -d".
    assert_eq!(check_config_json(dir.path(), &[("SERVER_PORT", "9000")])["server"]["port"], 9000);
    // README: RESIZE_PRESETS, CONVERSION_*, CRON_*.
    let json = check_config_json(
        dir.path(),
        &[
            ("RESIZE_PRESETS", "thumbnail:150x150,medium:800x800"),
            ("CONVERSION_FORMATS", "jpeg,jpg,png,gif,bmp,tiff"),
            ("CONVERSION_QUALITY", "85"),
            ("CONVERSION_MAX_SIZE_MB", "50"),
            ("CRON_SCHEDULE", "0 12 * * *"),
            ("CRON_ENABLED", "true"),
            ("SERVER_TIMEOUT_SECONDS", "30"),
        ],
    );
    assert_eq!(json["resize"]["presets"].as_object().unwrap().len(), 2, "{json}");
    assert_eq!(json["cron"]["schedule"], "0 12 * * *");
    // A CRON_TZ= prefix is the zone in effect, and said so.
    let json = check_config_json(dir.path(), &[("CRON_SCHEDULE", "CRON_TZ=Asia/Seoul 0 13 * * *"), ("TZ", "UTC")]);
    assert_eq!(json["cron"]["timezone"], "Asia/Seoul");
    assert_eq!(json["sources"]["cron.timezone"], "environment CRON_SCHEDULE (the schedule's prefix)");
    // README: "R2_BUCKETS=bucket-a,bucket-b" — every bucket kept, the first the primary
    // (integration/buckets.rs runs it against the S3 test server).
    let json = check_config_json(dir.path(), &[("R2_BUCKETS", "bucket-a,bucket-b")]);
    assert_eq!(
        (&json["r2"]["bucket"], &json["r2"]["buckets"]),
        (&"bucket-a".into(), &serde_json::json!(["bucket-a", "bucket-b"]))
    );
    // docs/USAGE.md's .env, values in double quotes.
    std::fs::write(
        dir.path().join(".env"),
        "# .env 파일 예시\nR2_ACCESS_KEY=\"your-access-key\"\nR2_SECRET_KEY=\"your-secret-key\"\n\
         R2_ENDPOINT=\"https://your-account-id.r2.cloudflarestorage.com\"\nR2_BUCKET=\"your-bucket-name\"\n",
    )
    .unwrap();
    let json = check_config_json(dir.path(), &[]);
    assert_eq!(json["r2"]["endpoint"], "https://your-account-id.r2.cloudflarestorage.com");
    // docs/CONFIG.md's full file (R2 from .env), port 8080 as it writes it.
    std::fs::create_dir_all(dir.path().join("config")).unwrap();
    std::fs::write(
        dir.path().join("config/config.yaml"),
        "# R2 관련 설정은 .env 파일 또는 환경 변수로 설정하세요.\nconversion:\n  formats: [\"jpeg\", \"jpg\", \"png\", \"gif\", \"bmp\", \"tiff\"]\n  \
         quality: 85\n  max_size_mb: 50\nresize:\n  presets:\n    thumbnail:\n      width: 150\n      height: 150\n    \
         custom_small:\n      width: 400\n      height: 300\ncron:\n  schedule: \"0 2 * * *\"  # 매일 새벽 2시\n  enabled: true\n\
         server:\n  port: 8080\n  timeout_seconds: 30\n",
    )
    .unwrap();
    let json = check_config_json(dir.path(), &[]);
    assert_eq!(
        (&json["server"]["port"], &json["resize"]["presets"]["custom_small"]["height"]),
        (&8080.into(), &300.into())
    );
    // docs/CRON.md's schedule table, through `schedule` (2024-01-15 is a Monday).
    for (expr, first) in [
        ("0 2 * * *", "2024-01-16T02:00:00Z"),
        ("0 */6 * * *", "2024-01-15T06:00:00Z"),
        ("0 0 * * 0", "2024-01-21T00:00:00Z"),
        ("0 0 1 * *", "2024-02-01T00:00:00Z"),
        ("*/30 * * * *", "2024-01-15T02:30:00Z"),
        ("0 9-17 * * 1-5", "2024-01-15T09:00:00Z"),
        ("@every 1h30m", "2024-01-15T03:40:00Z"),
        ("CRON_TZ=Asia/Seoul 0 13 * * *", "2024-01-15T04:00:00Z"),
    ] {
        let o = run(
            dir.path(),
            &["schedule", "--count", "1", "--after", "2024-01-15T02:10:00Z"],
            &[("CRON_SCHEDULE", expr), ("TZ", "UTC")],
        );
        assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), first, "{expr}: {}", text(&o));
    }
}

/// The Go server's `cron/job_test.go` `TestProcessImages`, ported: a run converts the
/// listed sources of the configured formats, skips `.webp` objects and other files.
/// `conversion.skip_if_larger: false` stands in for Go, which always uploads.
#[test]
#[allow(non_snake_case)]
fn go_TestProcessImages() {
    let dir = tempfile::tempdir().unwrap();
    let bucket = dir.path().join("bucket");
    std::fs::create_dir_all(&bucket).unwrap();
    std::fs::write(bucket.join("image1.jpg"), fixture("jpeg_baseline.jpg")).unwrap();
    std::fs::write(bucket.join("image2.png"), fixture("png_rgb.png")).unwrap();
    std::fs::write(bucket.join("image3.webp"), b"RIFF....WEBP untouched").unwrap();
    std::fs::write(bucket.join("other.txt"), b"not an image").unwrap();
    let env =
        [("CONVERSION_FORMATS", "jpg,png"), ("CONVERSION_QUALITY", "85"), ("ICS__CONVERSION__SKIP_IF_LARGER", "false")];
    let o = run(dir.path(), &["run-once", "--json"], &env);
    assert!(o.status.success(), "{}", text(&o));
    for converted in ["image1.webp", "image2.webp"] {
        let webp = std::fs::read(bucket.join(converted)).unwrap_or_else(|e| panic!("{converted}: {e}"));
        ics::convert::decode_webp(&webp).unwrap_or_else(|| panic!("{converted} does not decode"));
    }
    assert_eq!(
        std::fs::read(bucket.join("image3.webp")).unwrap(),
        b"RIFF....WEBP untouched",
        "a .webp is not re-uploaded"
    );
    assert!(!bucket.join("other.webp").exists(), "a non-image is not converted");
}

/// The Go server's `TestLocking`, ported: while one run holds the lock another is refused
/// ("cron job is already running", exit 3); released, the next one runs.
#[test]
#[allow(non_snake_case)]
fn go_TestLocking() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("bucket")).unwrap();
    let held = ics::state::RunLock::acquire(&dir.path().join("state"), Duration::from_secs(3600)).unwrap();
    let o = run(dir.path(), &["run-once"], &[]);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    assert!(text(&o).contains("cron job is already running"), "{}", text(&o));
    drop(held);
    let o = run(dir.path(), &["run-once"], &[]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
}
