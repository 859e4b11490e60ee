//! The binary end to end: `convert` on the local-directory backend and on the S3 test
//! server, its exit codes and messages, and `check-config`.

use crate::common;

use std::path::Path;
use std::process::Output;

use common::*;
use serde_json::Value;

fn run(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = binary();
    cmd.current_dir(dir).args(args);
    cmd.envs(env.iter().copied());
    cmd.output().expect("run the binary")
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// A working directory with the shipped config and a local bucket holding `files`.
fn local_setup(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("config")).unwrap();
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("config/config.yaml"),
        dir.path().join("config/config.yaml"),
    )
    .unwrap();
    for (key, name) in files {
        let p = dir.path().join("bucket").join(key);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, fixture(name)).unwrap();
    }
    dir
}

#[test]
fn convert_on_the_local_default_bucket() {
    let dir = local_setup(&[("photos/x.jpg", "jpeg_orient6.jpg"), ("photos/anim.gif", "gif_anim_loop3.gif")]);
    let o = run(dir.path(), &["convert", "photos/x.jpg"], &[]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("Converted image: r2://bucket/photos/x.jpg -> r2://bucket/photos/x.webp"),
        "{}",
        text(&o)
    );
    let webp = std::fs::read(dir.path().join("bucket/photos/x.webp")).unwrap();
    let img = ics::convert::decode_webp(&webp).unwrap();
    assert!(psnr(&displayed("jpeg_orient6.jpg"), &img) > 27.0);

    let o = run(dir.path(), &["convert", "--json", "r2://bucket/photos/anim.gif"], &[]);
    assert!(o.status.success(), "{}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["outcome"], "converted");
    assert_eq!(v["frames"], 4);
    assert_eq!(v["destination"], "r2://bucket/photos/anim.webp");
}

#[test]
fn exit_codes_and_messages_say_what_went_wrong() {
    let dir = local_setup(&[("a/text.jpg", "bad/text.jpg"), ("a/trunc.png", "bad/truncated.png")]);
    let cases: &[(&[&str], i32, &str)] = &[
        (&["convert", "a/text.jpg"], 2, "a/text.jpg: not a supported image: looks like text"),
        (&["convert", "a/trunc.png"], 2, "a/trunc.png: png decode failed"),
        (&["convert", "a/missing.jpg"], 2, "a/missing.jpg: object not found"),
        (&["convert", "a/../../etc/passwd.jpg"], 2, "unsafe object key"),
        (
            &["convert", "r2://other/a/text.jpg"],
            64,
            "names bucket \"other\", which is not configured (configured: bucket)",
        ),
        (&["convert", "a/readme.txt"], 2, "not a candidate"),
        (&["convert", "--preset", "nope", "a/text.jpg"], 64, "unknown preset \"nope\""),
        (&["frobnicate"], 64, "unrecognized subcommand"),
    ];
    for (args, code, message) in cases {
        let o = run(dir.path(), args, &[]);
        assert_eq!(o.status.code(), Some(*code), "{args:?}: {}", text(&o));
        assert!(text(&o).contains(message), "{args:?}: {}", text(&o));
    }
}

#[test]
fn bad_config_fails_at_start_with_the_key() {
    let dir = local_setup(&[]);
    let o = run(dir.path(), &["check-config"], &[("ICS__CONVERSION__QUALITY", "140")]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).contains("conversion.quality must be between 0 and 100, got 140"), "{}", text(&o));
    let o = run(dir.path(), &["--config", "nope.yaml", "check-config"], &[]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).contains("nope.yaml"), "{}", text(&o));
}

#[test]
fn check_config_hides_secrets() {
    let dir = local_setup(&[]);
    let o = run(
        dir.path(),
        &["check-config"],
        &[("R2_ACCESS_KEY", "AKIASHOWME"), ("R2_SECRET_KEY", "hunter2hunter2"), ("ICS__STORAGE__BACKEND", "local")],
    );
    assert!(o.status.success(), "{}", text(&o));
    assert!(!text(&o).contains("AKIASHOWME") && !text(&o).contains("hunter2hunter2"), "{}", text(&o));
}

#[test]
fn check_config_shows_the_event_sources_in_effect_without_their_secrets() {
    let dir = local_setup(&[]);
    let env = [
        ("ICS__STORAGE__BACKEND", "local"),
        ("ICS__EVENTS__SQS__QUEUE_URL", "https://sqs.eu-west-1.amazonaws.com/123456789012/uploads"),
        ("ICS__EVENTS__SQS__ACCESS_KEY", "AKIAQUEUEKEY"),
        ("ICS__EVENTS__SQS__SECRET_KEY", "queue-secret-value"),
        ("ICS__EVENTS__CLOUDFLARE_QUEUE__ACCOUNT_ID", "acc123"),
        ("ICS__EVENTS__CLOUDFLARE_QUEUE__QUEUE_ID", "q456"),
        ("ICS__EVENTS__CLOUDFLARE_QUEUE__API_TOKEN", "cf-token-value"),
        ("ICS__EVENTS__WEBHOOK_ENABLED", "true"),
        ("ICS__EVENTS__WEBHOOK_TOKEN", "hook-token-value"),
    ];
    let yaml = run(dir.path(), &["check-config"], &env);
    let json = run(dir.path(), &["check-config", "--json"], &env);
    for o in [&yaml, &json] {
        assert!(o.status.success(), "{}", text(o));
        for secret in ["AKIAQUEUEKEY", "queue-secret-value", "cf-token-value", "hook-token-value"] {
            assert!(!text(o).contains(secret), "{secret} shown: {}", text(o));
        }
    }
    assert!(text(&yaml).contains("\nevents:\n"), "{}", text(&yaml));
    let v: Value = serde_json::from_slice(&json.stdout).unwrap();
    let e = &v["events"];
    // What the queue URL implies is shown as it is used.
    assert_eq!(e["sqs"]["endpoint"], "https://sqs.eu-west-1.amazonaws.com", "{e}");
    assert_eq!(e["sqs"]["region"], "eu-west-1", "{e}");
    assert_eq!(e["sqs"]["access_key"], "***");
    assert_eq!(e["sqs"]["wait_seconds"], 20);
    assert_eq!(e["cloudflare_queue"]["queue_id"], "q456");
    assert_eq!(e["cloudflare_queue"]["api_token"], "***");
    assert_eq!((e["webhook_enabled"].as_bool(), e["webhook_token"].as_str()), (Some(true), Some("***")));
    assert_eq!(e["max_receives"], 5);
    assert!(
        v["sources"]["events.sqs.queue_url"].as_str().unwrap_or_default().contains("ICS__EVENTS__SQS__QUEUE_URL"),
        "{}",
        v["sources"]
    );
    assert_eq!(v["sources"]["events.max_receives"], "default");
}

#[test]
#[ignore = "needs the S3 test server: bash scripts/test.sh"]
fn convert_through_the_s3_server_with_go_environment_variables() {
    need_s3!();
    let env = s3_env();
    let bucket = new_bucket("cli");
    let dir = local_setup(&[]);
    let go_env = [
        ("R2_ENDPOINT", env.endpoint.as_str()),
        ("R2_BUCKET", bucket.as_str()),
        ("R2_ACCESS_KEY", env.access_key.as_str()),
        ("R2_SECRET_KEY", env.secret_key.as_str()),
        ("ICS__STORAGE__BACKEND", "r2"),
        ("ICS__R2__REGION", env.region.as_str()),
    ];
    let config = s3_config(&bucket);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let s = ics::storage::Storage::open(&config.storage, &bucket).unwrap();
    rt.block_on(s.put("photos/x.jpg", fixture("jpeg_cmyk.jpg").into(), "image/jpeg")).unwrap();

    let o = run(dir.path(), &["convert", &format!("s3://{bucket}/photos/x.jpg")], &go_env);
    assert!(o.status.success(), "{}", text(&o));
    let (_, body) = rt.block_on(s.get("photos/x.webp", 1 << 30)).unwrap();
    let img = ics::convert::decode_webp(&body).unwrap();
    assert!(psnr(&image::load_from_memory(&fixture("reference_chelsea.png")).unwrap(), &img) > 25.0);
    assert_eq!(rt.block_on(s.content_type("photos/x.webp")).unwrap().as_deref(), Some("image/webp"));
}

/// `bucket/link -> /outside` and `bucket/sfile.jpg -> /outside/secret.jpg`: `convert`
/// refuses both keys and a run converts around them; nothing outside is read or written.
/// The same run lists `a#1.jpg` (converted) and a name that is not UTF-8 (counted in
/// `listed` and ledgered as `invalid_key`), which were silently never listed before.
#[test]
fn symlinks_out_of_the_local_bucket_are_refused_by_convert_and_a_run() {
    use std::os::unix::ffi::OsStrExt;

    let dir = local_setup(&[("photos/x.jpg", "jpeg_orient1.jpg"), ("photos/a#1.jpg", "jpeg_orient1.jpg")]);
    let (bucket, outside) = (dir.path().join("bucket"), dir.path().join("outside"));
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("secret.jpg"), fixture("jpeg_orient1.jpg")).unwrap();
    std::os::unix::fs::symlink(&outside, bucket.join("link")).unwrap();
    std::os::unix::fs::symlink(outside.join("secret.jpg"), bucket.join("sfile.jpg")).unwrap();
    let bad_name = std::ffi::OsStr::from_bytes(b"photos/bad\xff.jpg");
    std::fs::write(bucket.join(bad_name), fixture("jpeg_orient1.jpg")).unwrap();

    for key in ["link/secret.jpg", "sfile.jpg"] {
        let o = run(dir.path(), &["convert", key], &[]);
        assert_eq!(o.status.code(), Some(2), "{key}: {}", text(&o));
        assert!(text(&o).contains("unsafe object key: a symbolic link is on its path"), "{key}: {}", text(&o));
        assert!(!text(&o).contains(dir.path().to_str().unwrap()), "an absolute path in: {}", text(&o));
    }

    // Exit 2: the non-UTF-8 name is a failure of its own.
    let o = run(dir.path(), &["run-once", "--json"], &[]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let summary: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(summary["converted"], 2, "{summary}");
    assert_eq!(summary["failed"], 1, "{summary}");
    // x.jpg, a#1.jpg, the non-UTF-8 name; links are not listed.
    assert_eq!(summary["listed"], 3, "{summary}");
    assert!(bucket.join("photos/x.webp").exists() && bucket.join("photos/a#1.webp").exists());
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("state/state.json")).unwrap()).unwrap();
    let entry = &state["ledger"][r"photos/bad\xFF.jpg"];
    assert_eq!(entry["code"], "invalid_key", "{state}");

    let outside_names: Vec<_> = std::fs::read_dir(&outside).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(outside_names, ["secret.jpg"], "something was written outside the bucket");
    assert_eq!(std::fs::read(outside.join("secret.jpg")).unwrap(), fixture("jpeg_orient1.jpg"));
}

/// Ledger entries of deleted sources are dropped when a run completes — here a resumed
/// run, whose two passes (after its cursor, then from the start up to it) together cover
/// the bucket — while the entries of sources still there stay.
#[test]
fn ledger_entries_of_deleted_sources_are_pruned_by_a_complete_resumed_run() {
    let dir = local_setup(&[("a/t.jpg", "bad/text.jpg"), ("m/t.jpg", "bad/text.jpg"), ("z/t.jpg", "bad/text.jpg")]);
    let state_path = dir.path().join("state/state.json");
    let ledger_keys = || {
        let state: serde_json::Value = serde_json::from_slice(&std::fs::read(&state_path).unwrap()).unwrap();
        state["ledger"].as_object().unwrap().keys().cloned().collect::<Vec<_>>()
    };
    let o = run(dir.path(), &["run-once", "--json"], &[]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert_eq!(ledger_keys(), ["a/t.jpg", "m/t.jpg", "z/t.jpg"]);

    // m/t.jpg is deleted, and the state says a run was interrupted with its cursor there.
    std::fs::remove_file(dir.path().join("bucket/m/t.jpg")).unwrap();
    let mut state: serde_json::Value = serde_json::from_slice(&std::fs::read(&state_path).unwrap()).unwrap();
    state["run"] = serde_json::json!({"id": "interrupted", "cursor": "m/t.jpg"});
    std::fs::write(&state_path, state.to_string()).unwrap();

    let o = run(dir.path(), &["run-once", "--json"], &[]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let summary: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!((summary["run_id"].as_str(), summary["complete"].as_bool()), (Some("interrupted"), Some(true)));
    assert_eq!(ledger_keys(), ["a/t.jpg", "z/t.jpg"], "{summary}");
}

/// A 64 KiB tmpfs mounted over the state directory, unmounted on drop.
struct TinyDisk(std::path::PathBuf);

impl TinyDisk {
    /// `None` when this process may not mount (not root): the in-process test
    /// (`state_keeper::tests`) covers the logic without a real disk.
    fn mount(at: &Path) -> Option<Self> {
        std::fs::create_dir_all(at).unwrap();
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=64k,mode=0700", "tmpfs"])
            .arg(at)
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| Self(at.to_owned()))
    }
}

impl Drop for TinyDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

/// The state directory's disk fills up (room for the lock, not for the state):
/// `run-once` exits 1 with `complete: false` and the
/// reason in its summary (before: exit 0, `complete: true`, the state never written);
/// with room again, the next run starts from the state last saved and completes.
#[test]
fn a_full_state_disk_makes_run_once_exit_1_with_an_incomplete_run() {
    let dir = local_setup(&[("photos/x.jpg", "jpeg_orient1.jpg")]);
    let Some(_disk) = TinyDisk::mount(&dir.path().join("state")) else {
        eprintln!("skipped: mounting a tmpfs needs root");
        return;
    };
    let o = run(dir.path(), &["run-once", "--json"], &[]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));

    std::fs::write(dir.path().join("bucket/photos/y.jpg"), fixture("jpeg_orient2.jpg")).unwrap();
    let filler = dir.path().join("state/filler");
    let mut file = std::fs::File::create(&filler).unwrap();
    while std::io::Write::write_all(&mut file, &[0u8; 4096]).is_ok() {}
    // One page free: the lock file's pid fits, the state's next version does not.
    let len = file.metadata().unwrap().len();
    file.set_len(len - len % 4096 - 4096).unwrap();
    drop(file);
    let o = run(dir.path(), &["run-once", "--json"], &[]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let summary: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_else(|_| panic!("{}", text(&o)));
    assert_eq!(summary["complete"], false, "{summary}");
    assert!(summary["error"].as_str().is_some_and(|e| e.contains("No space left on device")), "{summary}");

    std::fs::remove_file(&filler).unwrap();
    let o = run(dir.path(), &["run-once", "--json"], &[]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let summary: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(summary["complete"], true, "{summary}");
}

#[test]
fn check_config_reads_the_dotenv_as_godotenv_and_shows_no_url_secret() {
    let dir = local_setup(&[]);
    // A `$` before lower case is kept (godotenv), a comment after ` #` dropped, single
    // quotes literal; the webhook URL's password and token are masked in both outputs.
    let dotenv = "WEBHOOK_PENDING_DIR=spool/p$dir # a comment\n\
                  export WEBHOOK_URL='https://hook:Tr0ub$dor&3@hooks.example.com/in?token=t0k3n-value&x=1'\n";
    std::fs::write(dir.path().join(".env"), dotenv).unwrap();
    let yaml = run(dir.path(), &["check-config"], &[]);
    let json = run(dir.path(), &["check-config", "--json"], &[]);
    for o in [&yaml, &json] {
        assert!(o.status.success(), "{}", text(o));
        assert!(!text(o).contains("Tr0ub") && !text(o).contains("t0k3n-value"), "{}", text(o));
    }
    let v: Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(v["webhook"]["pending_dir"], "spool/p$dir");
    assert_eq!(v["webhook"]["url"], "https://hook:***@hooks.example.com/in?token=***&x=1");
    assert_eq!(v["sources"]["webhook.url"], ".env WEBHOOK_URL");
    assert_eq!(v["r2"]["region"], "auto");

    // A line godotenv refuses stops the program, naming the file and line, not the value.
    std::fs::write(dir.path().join(".env"), "A=1\nR2_SECRET_KEY hunter2\nB=2\n").unwrap();
    let o = run(dir.path(), &["check-config"], &[]);
    assert!(!o.status.success());
    assert!(text(&o).contains(".env, line 2") && !text(&o).contains("hunter2"), "{}", text(&o));
}
