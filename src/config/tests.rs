//! Config loading: the Go server's file and environment, overrides, validation messages.

use std::path::Path;

use super::*;
use crate::convert::LosslessPolicy;

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

fn write(dir: &tempfile::TempDir, yaml: &str) -> PathBuf {
    let p = dir.path().join("c.yaml");
    std::fs::write(&p, yaml).unwrap();
    p
}

fn load_yaml(yaml: &str, vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
    let dir = tempfile::tempdir().unwrap();
    let p = write(&dir, yaml);
    Config::load_with_env(Some(&p), &env(vars))
}

#[test]
fn the_go_servers_file_is_accepted_unchanged() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/examples/go-server.yaml");
    let c = Config::load_with_env(Some(&path), &[]).unwrap();
    let StorageConfig::S3(s3) = &c.storage else { panic!("a Go file with r2.bucket selects r2: {:?}", c.storage) };
    assert_eq!(s3.bucket, "your-bucket-name");
    assert_eq!(s3.region, "auto");
    assert!(!s3.virtual_hosted_style);
    assert_eq!(c.convert.quality, 85.0);
    assert_eq!(c.convert.limits.max_input_bytes, 50 * 1024 * 1024);
    assert_eq!(c.formats, ["jpeg", "jpg", "png", "gif", "bmp", "tiff", "tif"]);
    assert_eq!(c.presets["thumbnail"], ResizeSpec { width: Some(150), height: Some(150) });
    assert_eq!(c.presets["large"], ResizeSpec { width: Some(1920), height: Some(1920) });
    assert_eq!(c.cron.schedule, "0 13 * * *");
    assert_eq!(c.server.port, 4000);
    assert_eq!(c.server.host, "127.0.0.1");
    assert_eq!(c.webhook.url, None);
    assert_eq!(c.webhook.max_retries, 5);
    assert!(!c.webhook.retry_enabled, "the file says retry_enabled: false");
    assert_eq!(c.webhook.pending_dir, PathBuf::from("data/webhook_pending"));
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
}

#[test]
fn the_shipped_default_uses_the_local_bucket() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/config.yaml");
    let c = Config::load_with_env(Some(&path), &[]).unwrap();
    assert_eq!(c.storage, StorageConfig::Local { root: PathBuf::from("./bucket") });
    assert_eq!(c.bucket_name(), "bucket");
    assert_eq!(c.convert.lossless, LosslessPolicy::Auto);
}

#[test]
fn go_environment_variables_override_the_file() {
    let c = load_yaml(
        "r2: {bucket: from-file, endpoint: 'https://x.example', access_key: a, secret_key: b}\n",
        &[
            ("R2_BUCKET", "from-env"),
            ("R2_ENDPOINT", "http://127.0.0.1:9000"),
            ("R2_ACCESS_KEY", "AKIAENV"),
            ("R2_SECRET_KEY", "0123e5"),
            ("SERVER_PORT", "9090"),
            ("WEBHOOK_URL", "https://hooks.example/x"),
            ("WEBHOOK_MAX_RETRIES", "7"),
        ],
    )
    .unwrap();
    let StorageConfig::S3(s3) = &c.storage else { panic!() };
    assert_eq!(s3.bucket, "from-env");
    assert_eq!(s3.endpoint, "http://127.0.0.1:9000");
    assert_eq!(s3.access_key.expose(), "AKIAENV");
    // A numeric-looking secret stays the exact string.
    assert_eq!(s3.secret_key.expose(), "0123e5");
    assert_eq!(c.server.port, 9090);
    assert_eq!(c.webhook.url.as_deref(), Some("https://hooks.example/x"));
    assert_eq!(c.webhook.max_retries, 7);
}

#[test]
fn ics_variables_set_any_key_and_win() {
    let c = load_yaml(
        "conversion: {quality: 70}\n",
        &[
            ("ICS__STORAGE__LOCAL_ROOT", "/data/images"),
            ("ICS__CONVERSION__QUALITY", "60"),
            ("ICS__CONVERSION__FORMATS", "jpg,png"),
            ("ICS__CONVERSION__PER_FORMAT__PNG__LOSSLESS", "always"),
            ("SERVER_PORT", "9090"),
            ("ICS__SERVER__PORT", "9191"),
        ],
    )
    .unwrap();
    assert_eq!(c.storage, StorageConfig::Local { root: PathBuf::from("/data/images") });
    assert_eq!(c.convert.quality, 60.0);
    assert_eq!(c.formats, ["jpg", "png"]);
    assert_eq!(c.convert.per_format[&crate::convert::SourceFormat::Png].lossless, Some(LosslessPolicy::Always));
    assert_eq!(c.server.port, 9191);
}

#[test]
fn invalid_values_name_the_key_the_value_and_what_is_allowed() {
    let cases = [
        ("conversion: {quality: 140}", "conversion.quality must be between 0 and 100, got 140"),
        ("conversion: {method: 9}", "conversion.method must be between 0 and 6, got 9"),
        ("conversion: {formats: [jpg, heic]}", "conversion.formats must be a list of"),
        ("conversion: {lossless: maybe}", "conversion.lossless must be never, always or auto, got maybe"),
        ("conversion: {max_size_mb: -1}", "conversion.max_size_mb must be greater than 0"),
        ("storage: {backend: ftp}", "storage.backend must be local, r2 (or s3) or memory, got ftp"),
        ("storage: {backend: r2}", "r2.bucket must be the bucket's name"),
        ("r2: {bucket: b, endpoint: 'not a url', access_key: a, secret_key: b}", "r2.endpoint must be an http(s) URL"),
        ("r2: {bucket: b, endpoint: 'https://x.example'}", "r2.access_key/r2.secret_key must be both set"),
        ("cron: {schedule: '* * *'}", "cron.schedule must be a 5-field cron expression"),
        ("server: {port: 70000}", "server.port must be between 0 and 65535, got 70000"),
        ("webhook: {url: 'ftp://x'}", "webhook.url must be an http:// or https:// URL"),
        ("state: {initial: yesterday}", "state.initial must be all, now or an RFC 3339 time, got yesterday"),
        ("resize: {presets: {tiny: {}}}", "resize.presets.tiny must be a preset with a width, a height or both"),
        ("resize: {presets: {big: {width: 20000}}}", "resize.presets.big.width must be between 1 and 16383"),
        ("log: {format: xml}", "log.format must be text or json, got xml"),
        ("log: {level: inf}", "log.level must be error, warn, info, debug, trace, off, or a filter"),
        ("log: {level: 'info,ics=verbose'}", "log.level must be"),
        ("cron: {timezone: Mars/Olympus}", "cron.timezone must be an IANA time zone"),
        ("cron: {schedule: '@fortnightly'}", "unknown descriptor"),
    ];
    for (yaml, expected) in cases {
        let err = load_yaml(yaml, &[]).unwrap_err().to_string();
        assert!(err.contains(expected), "{yaml}: got {err:?}, expected {expected:?}");
    }
}

#[test]
fn malformed_files_and_wrong_types_are_clear_errors() {
    let err = load_yaml("conversion: [unclosed", &[]).unwrap_err().to_string();
    assert!(err.contains("c.yaml"), "{err}");
    let err = load_yaml("conversion: {quality: high}", &[]).unwrap_err().to_string();
    assert!(err.contains("quality"), "{err}");
    let missing = Config::load_with_env(Some(Path::new("/nonexistent/c.yaml")), &[]).unwrap_err();
    assert!(missing.to_string().contains("/nonexistent/c.yaml"), "{missing}");
}

#[test]
fn secrets_never_show_in_debug_output_or_errors() {
    let c = load_yaml(
        "r2: {bucket: b, endpoint: 'https://x.example', access_key: AKIAVISIBLE, secret_key: s3cr3tvalue}\nwebhook: {secret: hooksecret}",
        &[],
    )
    .unwrap();
    let shown = format!("{c:?} {c:#?}");
    for secret in ["AKIAVISIBLE", "s3cr3tvalue", "hooksecret"] {
        assert!(!shown.contains(secret), "{secret} leaked");
    }
    let err = load_yaml("r2: {bucket: b, endpoint: 'nope', access_key: AKIAVISIBLE, secret_key: s3cr3tvalue}", &[])
        .unwrap_err()
        .to_string();
    assert!(!err.contains("s3cr3tvalue") && !err.contains("AKIAVISIBLE"), "{err}");
}

#[test]
fn the_bucket_state_backend_is_validated() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/examples/cluster.yaml");
    let c = Config::load_with_env(Some(&path), &env(&[("R2_ACCESS_KEY", "a"), ("R2_SECRET_KEY", "b")])).unwrap();
    let cluster = c.state.cluster.expect("the example is a cluster");
    assert_eq!((cluster.prefix.as_str(), cluster.shards), (".image-converting-server/", 16));
    assert_eq!(cluster.lease, std::time::Duration::from_secs(30));
    assert!(!cluster.instance_id.is_empty());
    assert!(load_yaml("state: {backend: local}", &[]).unwrap().state.cluster.is_none());
    let c = load_yaml("state: {backend: bucket, prefix: coord, instance_id: web-1}", &[]).unwrap();
    let cluster = c.state.cluster.unwrap();
    assert_eq!(cluster.prefix, "coord/");
    let suffix = format!("-{}-", std::process::id());
    assert!(cluster.instance_id.starts_with("web-1") && cluster.instance_id.contains(&suffix), "{cluster:?}");
    for (yaml, names) in [
        ("state: {backend: redis}", "state.backend must be local or bucket, got redis"),
        ("state: {backend: bucket, prefix: ../up}", "state.prefix"),
        ("state: {backend: bucket, shards: 0}", "state.shards"),
        (
            "state: {backend: bucket, lease_seconds: 8, max_clock_skew_ms: 3000}",
            "at most a quarter of state.lease_seconds (2000 ms)",
        ),
        ("state: {backend: bucket, instance_id: 'a b'}", "state.instance_id"),
    ] {
        let err = load_yaml(yaml, &[]).unwrap_err().to_string();
        assert!(err.contains(names), "{yaml}: {err}");
    }
}

#[test]
fn trusted_url_addresses_name_their_port_and_a_bare_ip_means_80_and_443() {
    let c = load_yaml("api: {trusted_url_addresses: ['10.0.0.5', '10.0.0.6:8080', '[fd00::1]:9000', 'fd00::2']}", &[])
        .unwrap();
    let want: Vec<std::net::SocketAddr> =
        ["10.0.0.5:80", "10.0.0.5:443", "10.0.0.6:8080", "[fd00::1]:9000", "[fd00::2]:80", "[fd00::2]:443"]
            .iter()
            .map(|a| a.parse().unwrap())
            .collect();
    assert_eq!(c.api.trusted_url_addresses, want);
    for bad in ["images.internal", "10.0.0.5:0", "10.0.0.5:http"] {
        let err = load_yaml(&format!("api: {{trusted_url_addresses: ['{bad}']}}"), &[]).unwrap_err().to_string();
        assert!(err.contains("api.trusted_url_addresses") && err.contains("IP:PORT"), "{bad}: {err}");
    }
}

#[test]
fn api_token_file_reads_the_first_line_and_refuses_ambiguity() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("token");
    std::fs::write(&file, "s3cr3t-from-a-file\n").unwrap();
    let path = file.to_str().unwrap();
    let c = load_yaml("", &[("ICS__API__TOKEN_FILE", path)]).unwrap();
    assert_eq!(c.api.token.expose(), "s3cr3t-from-a-file");

    let both = load_yaml("", &[("ICS__API__TOKEN_FILE", path), ("ICS__API__TOKEN", "x")]).unwrap_err();
    assert!(both.to_string().contains("api.token_file"), "{both}");
    let missing = load_yaml("", &[("ICS__API__TOKEN_FILE", "/nonexistent/token")]).unwrap_err();
    assert!(missing.to_string().contains("/nonexistent/token"), "{missing}");
    std::fs::write(&file, "\n").unwrap();
    let empty = load_yaml("", &[("ICS__API__TOKEN_FILE", path)]).unwrap_err();
    assert!(empty.to_string().contains("first line"), "{empty}");
}

#[test]
fn unknown_keys_are_refused_with_the_nearest_known_key() {
    for (yaml, expected) in [
        ("conversion: {qualty: 90}", "unknown key `conversion.qualty`: did you mean `conversion.quality`?"),
        ("webhok: {url: 'https://x.example'}", "unknown key `webhok`: did you mean `webhook`?"),
        ("resize: {presets: {small: {widht: 10}}}", "did you mean `resize.presets.small.width`?"),
        ("server: {quality: 90}", "did you mean `conversion.quality`?"),
    ] {
        let err = load_yaml(yaml, &[]).unwrap_err().to_string();
        assert!(err.contains(expected), "{yaml}: {err}");
        assert!(err.contains("c.yaml"), "the file is named: {err}");
    }
    let err = load_yaml("", &[("ICS__CONVERSION__QUALTY", "9")]).unwrap_err().to_string();
    assert!(err.contains("ICS__CONVERSION__QUALTY") && err.contains("did you mean `conversion.quality`?"), "{err}");
}

#[test]
fn go_zero_values_mean_gos_defaults_with_a_warning_naming_the_key() {
    let c = load_yaml(
        "conversion: {quality: 0, max_size_mb: 0}\nserver: {port: 0, timeout_seconds: 0}\n\
         webhook: {retry_interval_minutes: 0, max_retries: 0}\ncron: {schedule: ''}\n",
        &[],
    )
    .unwrap();
    assert_eq!(c.convert.quality, 85.0);
    assert_eq!(c.convert.limits.max_input_bytes, 50 * 1024 * 1024);
    assert_eq!((c.server.port, c.server.timeout_seconds), (4000, 30));
    assert_eq!(c.webhook.retry_interval, std::time::Duration::from_secs(300));
    assert_eq!(c.webhook.max_retries, 5);
    assert_eq!(c.cron.schedule, "0 2 * * *");
    for key in [
        "conversion.quality",
        "conversion.max_size_mb",
        "server.port",
        "server.timeout_seconds",
        "webhook.retry_interval_minutes",
        "webhook.max_retries",
        "cron.schedule",
    ] {
        assert!(c.warnings.iter().any(|w| w.starts_with(key)), "no warning for {key}: {:?}", c.warnings);
    }
    // A Go variable's zero means the same; an ICS__ variable keeps this program's meaning.
    let c = load_yaml("", &[("CONVERSION_QUALITY", "0"), ("ICS__SERVER__PORT", "0")]).unwrap();
    assert_eq!((c.convert.quality, c.server.port), (85.0, 0));
    assert_eq!(c.warnings.len(), 1, "{:?}", c.warnings);
    assert!(c.warnings[0].contains("environment CONVERSION_QUALITY"), "{:?}", c.warnings);
}

#[test]
fn r2_credentials_without_a_bucket_are_refused_not_sent_to_the_local_directory() {
    let err =
        load_yaml("", &[("R2_ACCESS_KEY", "AKIAX"), ("R2_SECRET_KEY", "s3cr3t"), ("R2_ENDPOINT", "https://x.example")])
            .unwrap_err()
            .to_string();
    assert!(err.contains("r2.bucket must be set with R2 credentials"), "{err}");
    assert!(err.contains("r2.access_key (environment R2_ACCESS_KEY)"), "{err}");
    assert!(!err.contains("AKIAX") && !err.contains("s3cr3t"), "{err}");
    // An explicit local backend beside a bucket is a contradiction, refused.
    let err = load_yaml("storage: {backend: local}", &[("R2_BUCKET", "images")]).unwrap_err().to_string();
    assert!(err.contains("storage.backend must be r2 when a bucket is set"), "{err}");
    assert!(err.contains("environment R2_BUCKET"), "{err}");
}

#[test]
fn unexpanded_placeholders_from_the_go_docs_are_refused() {
    let err =
        load_yaml("r2: {access_key: '${R2_ACCESS_KEY}', secret_key: x, endpoint: 'https://x.example', bucket: b}", &[])
            .unwrap_err()
            .to_string();
    assert!(err.contains("r2.access_key") && err.contains("set the environment variable R2_ACCESS_KEY"), "{err}");
    // With the variable set, the environment wins over the placeholder, as in Go.
    let c = load_yaml(
        "r2: {access_key: '${R2_ACCESS_KEY}', secret_key: x, endpoint: 'https://x.example', bucket: b}",
        &[("R2_ACCESS_KEY", "AKIAREAL")],
    )
    .unwrap();
    let StorageConfig::S3(s3) = &c.storage else { panic!() };
    assert_eq!(s3.access_key.expose(), "AKIAREAL");
}

#[test]
fn the_time_zone_comes_from_the_prefix_the_key_tz_or_the_host() {
    let c = load_yaml("cron: {schedule: 'CRON_TZ=Asia/Seoul 0 13 * * *'}", &[("TZ", "UTC")]).unwrap();
    assert_eq!(c.cron.schedule.timezone(), chrono_tz::Asia::Seoul);
    let c = load_yaml("", &[("TZ", "Europe/Berlin")]).unwrap();
    assert_eq!(c.cron.timezone, chrono_tz::Europe::Berlin);
    assert_eq!(c.origins.of("cron.timezone"), Origin::Env("TZ".into()));
    let c = load_yaml("", &[("TZ", ""), ("ICS__CRON__TIMEZONE", "Asia/Tokyo")]).unwrap();
    assert_eq!(c.cron.timezone, chrono_tz::Asia::Tokyo);
    let c = load_yaml("", &[("TZ", "")]).unwrap();
    assert_eq!(c.cron.timezone, chrono_tz::UTC);
    // A zone file, as some images set TZ (Go reads it too).
    let c = load_yaml("", &[("TZ", ":/usr/share/zoneinfo/Asia/Seoul")]).unwrap();
    assert_eq!(c.cron.timezone, chrono_tz::Asia::Seoul);
    let err = load_yaml("", &[("TZ", "Mars/Olympus")]).unwrap_err().to_string();
    assert!(err.contains("cron.timezone") && err.contains("environment TZ"), "{err}");
}

#[test]
fn max_in_flight_still_caps_but_warns_and_max_requests_sizes_the_s3_window() {
    // Unset: derived from the request and queue limits, no warning.
    let c = load_yaml("pipeline: {workers: 2}\n", &[]).unwrap();
    let p = &c.pipeline;
    assert_eq!((p.max_requests, p.upload_concurrency, p.max_queued), (64, 64, 8));
    assert_eq!(p.max_in_flight, 64 + 8 + 2 + 64);
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    // Set: honoured, and deprecated loudly.
    let c = load_yaml("pipeline: {workers: 2, max_in_flight: 6}\n", &[]).unwrap();
    assert_eq!(c.pipeline.max_in_flight, 6);
    assert!(
        c.warnings.iter().any(|w| w.starts_with("pipeline.max_in_flight is deprecated") && w.contains("max_requests")),
        "{:?}",
        c.warnings
    );
    // The S3 request window is pipeline.max_requests.
    let vars =
        [("R2_ENDPOINT", "http://127.0.0.1:9"), ("R2_BUCKET", "b"), ("R2_ACCESS_KEY", "a"), ("R2_SECRET_KEY", "s")];
    let c = load_yaml("storage: {backend: r2}\npipeline: {max_requests: 16}\n", &vars).unwrap();
    let StorageConfig::S3(s3) = &c.storage else { panic!("{:?}", c.storage) };
    assert_eq!((s3.retry.max_requests, c.pipeline.upload_concurrency), (16, 16));
    let e = load_yaml("pipeline: {max_requests: 0}\n", &[]).unwrap_err().to_string();
    assert!(e.contains("pipeline.max_requests"), "{e}");
}

#[test]
fn a_webhook_to_the_listener_serve_is_handed_is_refused_and_another_port_is_not() {
    // `serve` in-process is handed a bound listener: its address is the one to keep off.
    let c = load_yaml("webhook: {url: 'http://localhost:4321/api/runs'}\n", &[]).unwrap();
    let e = c.check_listener("127.0.0.1:4321".parse().unwrap()).unwrap_err().to_string();
    assert!(e.contains("webhook.url") && e.contains("127.0.0.1:4321, this daemon's own API"), "{e}");
    assert!(!e.contains("/api/runs"), "the path is not shown: {e}");
    assert!(c.check_listener("127.0.0.1:4322".parse().unwrap()).is_ok());
}

#[test]
fn check_config_shows_the_region_the_file_says_with_any_backend() {
    // The shipped file says `region: auto` with the local backend; check-config said "".
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/config.yaml");
    let c = Config::load_with_env(Some(&path), &[]).unwrap();
    let v = explain::to_json(&c);
    assert_eq!((v["r2"]["region"].as_str(), v["sources"]["r2.region"].as_str()), (Some("auto"), Some("file")));
    assert!(explain::to_yaml(&c).contains("  region: \"auto\"  # file\n"), "{}", explain::to_yaml(&c));
    // Set, unset or empty, the region shown is the one an r2 backend signs with.
    let c =
        load_yaml("storage: {backend: local}\nr2: {region: eu-west-1, endpoint: 'https://h.example'}\n", &[]).unwrap();
    assert_eq!(
        (explain::to_json(&c)["r2"]["region"].as_str(), c.r2.endpoint.as_str()),
        (Some("eu-west-1"), "https://h.example")
    );
    for yaml in ["r2: {region: ''}\n", "{}\n"] {
        assert_eq!(explain::to_json(&load_yaml(yaml, &[]).unwrap())["r2"]["region"], "auto", "{yaml}");
    }
    let s3 = "r2: {bucket: b, endpoint: 'https://x.example', access_key: a, secret_key: s, region: ''}\n";
    let StorageConfig::S3(s3) = load_yaml(s3, &[]).unwrap().storage else { panic!("r2") };
    assert_eq!(s3.region, "auto");
}

#[test]
fn an_empty_pending_dir_means_gos_default_not_the_working_directory() {
    for (yaml, vars) in [
        ("webhook: {pending_dir: ''}\n", &[][..]),
        ("{}\n", &[("ICS__WEBHOOK__PENDING_DIR", "")][..]),
        ("{}\n", &[("WEBHOOK_PENDING_DIR", "")][..]),
    ] {
        let c = load_yaml(yaml, vars).unwrap();
        assert_eq!(c.webhook.pending_dir, PathBuf::from("data/webhook_pending"), "{yaml} {vars:?}");
        assert_eq!(explain::to_json(&c)["webhook"]["pending_dir"], "data/webhook_pending");
    }
    let c = load_yaml("webhook: {pending_dir: /var/spool/hooks}\n", &[]).unwrap();
    assert_eq!(c.webhook.pending_dir, PathBuf::from("/var/spool/hooks"));
}

#[test]
fn check_config_masks_passwords_and_secret_query_values_in_urls() {
    let vars = [
        ("WEBHOOK_URL", "https://hook:hunter2pass@hooks.example.com/in?token=tok-secret-1&x=1"),
        ("ICS__STORAGE__BACKEND", "local"),
        ("ICS__R2__ENDPOINT", "https://r2user:r2-password-9@acc.r2.cloudflarestorage.com"),
        (
            "ICS__EVENTS__SQS__QUEUE_URL",
            "https://sqsuser:sqs-pass-7@sqs.eu-west-1.amazonaws.com/1/q?X-Amz-Signature=sig-0",
        ),
        ("ICS__EVENTS__SQS__ACCESS_KEY", "AKIAQUEUE"),
        ("ICS__EVENTS__SQS__SECRET_KEY", "queue-secret-4"),
        ("ICS__EVENTS__CLOUDFLARE_QUEUE__ACCOUNT_ID", "acc"),
        ("ICS__EVENTS__CLOUDFLARE_QUEUE__QUEUE_ID", "q"),
        ("ICS__EVENTS__CLOUDFLARE_QUEUE__API_TOKEN", "cf-token-2"),
        ("ICS__EVENTS__CLOUDFLARE_QUEUE__API", "https://api.example/client/v4?apiKey=api-key-3&page=2"),
    ];
    let c = load_yaml("{}\n", &vars).unwrap();
    let (json, yaml) = (explain::to_json(&c).to_string(), explain::to_yaml(&c));
    for shown in [&json, &yaml] {
        for secret in [
            "hunter2pass",
            "tok-secret-1",
            "r2-password-9",
            "sqs-pass-7",
            "sig-0",
            "cf-token-2",
            "api-key-3",
            "queue-secret-4",
        ] {
            assert!(!shown.contains(secret), "{secret} shown in:\n{shown}");
        }
    }
    let v = explain::to_json(&c);
    assert_eq!(v["webhook"]["url"], "https://hook:***@hooks.example.com/in?token=***&x=1");
    assert_eq!(v["r2"]["endpoint"], "https://r2user:***@acc.r2.cloudflarestorage.com");
    assert_eq!(v["events"]["cloudflare_queue"]["api"], "https://api.example/client/v4?apiKey=***&page=2");
    // What is used is the URL itself.
    assert_eq!(c.webhook.url.as_deref(), Some(vars[0].1));
    // An invalid URL's error masks it too.
    let err = load_yaml("webhook: {url: 'ftp://u:hunter2pass@h/?sig=sig-0'}\n", &[]).unwrap_err().to_string();
    assert!(err.contains("webhook.url") && !err.contains("hunter2pass") && !err.contains("sig-0"), "{err}");
}

#[test]
fn the_memory_budget_follows_the_machine_s_limit_unless_set() {
    // Issue 23: a fixed 6144 MB default got the daemon OOM-killed in a 512 MB container.
    let c = load_yaml("storage: {backend: local}\n", &[]).unwrap();
    let limit = crate::memory_limit::detect().expect("a Linux test machine has /proc/meminfo");
    assert_eq!(c.pipeline.memory_budget_mb, limit.default_budget_mb());
    assert_eq!(c.pipeline.memory_budget_from, crate::memory_limit::BudgetFrom::Limit(limit.clone()));
    assert_eq!(c.convert.limits.memory_budget_mb, c.pipeline.memory_budget_mb);
    let sources = super::explain::to_json(&c);
    assert!(sources["sources"]["pipeline.memory_budget_mb"].as_str().unwrap().starts_with("default: 3/4 of "));
    // An explicit setting wins, from the file or the environment.
    let c = load_yaml("pipeline: {memory_budget_mb: 100}\n", &[]).unwrap();
    assert_eq!(
        (c.pipeline.memory_budget_mb, &c.pipeline.memory_budget_from),
        (100, &crate::memory_limit::BudgetFrom::Setting)
    );
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    // One above what the machine has is taken, and warned about.
    let over = (limit.bytes >> 20) + 1;
    let c = load_yaml("", &[("ICS__PIPELINE__MEMORY_BUDGET_MB", &over.to_string())]).unwrap();
    assert_eq!(u64::from(c.pipeline.memory_budget_mb), over);
    assert!(
        c.warnings.iter().any(|w| w.starts_with(&format!("pipeline.memory_budget_mb ({over}) is more than"))),
        "{:?}",
        c.warnings
    );
    assert!(load_yaml("pipeline: {memory_budget_mb: 8}\n", &[]).unwrap_err().to_string().contains("memory_budget_mb"));
}

#[test]
fn conversion_outputs_are_read_from_the_file() {
    let c = load_yaml(
        "conversion:\n  outputs:\n    - format: webp\n    - {format: webp, width: 640, quality: 60}\n    - {format: avif, width: 320, name: \"{stem}-{width}.{format}\"}\n    - format: avif\n",
        &[],
    )
    .unwrap();
    let keys: Vec<String> = c.outputs.specs().iter().map(|s| s.key("p/cat.jpg")).collect();
    assert_eq!(keys, ["p/cat.webp", "p/cat_w640.webp", "p/cat-320.avif", "p/cat.avif"]);
    assert_eq!(c.outputs.specs()[1].quality, Some(60.0));
    // Absent: the Go server's one WebP.
    assert!(load_yaml("conversion: {quality: 70}\n", &[]).unwrap().outputs.is_go_default());
}

#[test]
fn conversion_outputs_that_would_be_misread_are_refused() {
    for (yaml, want) in [
        ("conversion: {outputs: [{format: webp, widht: 640}]}", "unknown field `widht`"),
        ("conversion: {outputs: [{format: gif}]}", "conversion.outputs[0].format must be webp or avif"),
        (
            "conversion: {outputs: [{format: webp, width: 320}, {format: webp, width: 320}]}",
            "conversion.outputs[0] and conversion.outputs[1] both write \"photos/cat_w320.webp\"",
        ),
        ("conversion: {outputs: []}", "conversion.outputs is empty"),
    ] {
        let err = load_yaml(yaml, &[]).unwrap_err().to_string();
        assert!(err.contains(want), "{yaml}: {err}");
    }
}

#[test]
fn a_bucket_of_several_may_have_outputs_of_its_own() {
    let yaml = "r2: {endpoint: \"http://127.0.0.1:9\", access_key: a, secret_key: b, buckets: [photos, media]}\n\
                conversion:\n  outputs: [{format: webp}]\n  per_bucket:\n    media:\n      outputs: [{format: webp}, {format: avif, width: 640}]\n";
    let c = load_yaml(yaml, &[]).unwrap();
    let keys = |c: &Config| c.outputs.specs().iter().map(|s| s.key("p/cat.jpg")).collect::<Vec<_>>();
    assert_eq!(keys(&c.for_bucket("photos")), ["p/cat.webp"]);
    assert!(c.for_bucket("photos").outputs.is_go_default());
    assert_eq!(keys(&c.for_bucket("media")), ["p/cat.webp", "p/cat_w640.avif"]);
    let shown = super::explain::to_json(&c);
    assert_eq!(shown["conversion"]["per_bucket"]["media"]["outputs"][1]["format"], "avif", "{shown}");
}

#[test]
fn a_bucket_entry_that_would_be_misread_is_refused_naming_it() {
    let r2 = "r2: {endpoint: \"http://127.0.0.1:9\", access_key: a, secret_key: b, buckets: [photos, media]}\n";
    for (conversion, want) in [
        (
            "conversion: {per_bucket: {medai: {outputs: [{format: avif}]}}}",
            "conversion.per_bucket.medai: \"medai\" is not a bucket this daemon keeps (photos, media)",
        ),
        (
            "conversion: {per_bucket: {media: {outputs: [{format: gif}]}}}",
            "conversion.per_bucket.media.outputs[0].format",
        ),
        ("conversion: {per_bucket: {media: {outputs: []}}}", "conversion.per_bucket.media.outputs is empty"),
        ("conversion: {per_bucket: {media: {}}}", "conversion.per_bucket.media.outputs is missing"),
        ("conversion: {per_bucket: {media: {output: [{format: avif}]}}}", "output"),
    ] {
        let err = load_yaml(&format!("{r2}{conversion}\n"), &[]).unwrap_err().to_string();
        assert!(err.contains(want), "{conversion}: {err}");
    }
}
