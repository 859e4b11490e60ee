//! The command line: flags parsed here, commands dispatched to the library.
//!
//! The process's edges live here: `serve` binds its port and turns SIGTERM/SIGINT into
//! the shutdown future the library's modes take ([`crate::daemon`]), and every exit
//! code is chosen here.
//!
//! Exit codes: 0 success; 1 a fatal error (configuration, storage); 2 the image could
//! not be converted (bad input, limits); 3 another run holds the lock; 64 bad usage.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::Config;
use crate::convert::ResizeSpec;
use crate::job::Outcome;
use crate::naming;
use crate::storage::Storage;

/// Keeps an S3-compatible bucket (or a local directory) WebP-complete.
#[derive(Debug, Parser)]
#[command(name = "image-converting-server", version, long_version = long_version(), about)]
pub struct Cli {
    /// Configuration file (YAML). Default: config/config.yaml, if present.
    #[arg(long, global = true, value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// Variables file read at start-up (values apply where the environment has none).
    /// Default: .env in the working directory, if present.
    #[arg(long, global = true, value_name = "PATH")]
    pub env_file: Option<PathBuf>,
    /// The command; none runs `serve`, as the Go server's binary did when started bare.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Convert one object of a configured bucket to WebP and upload it beside the source.
    Convert {
        /// A key (`photos/cat.jpg`) of the primary bucket (or of --bucket's), or
        /// `r2://bucket/key` / `s3://bucket/key` of any configured bucket.
        source: String,
        /// The bucket a bare key belongs to (one of r2.buckets; default: the primary).
        #[arg(long, value_name = "NAME")]
        bucket: Option<String>,
        /// Resize to this width (keeps the aspect ratio unless --height is given too).
        #[arg(long)]
        width: Option<u32>,
        /// Resize to this height.
        #[arg(long)]
        height: Option<u32>,
        /// Resize with a named preset from resize.presets.
        #[arg(long, conflicts_with_all = ["width", "height"])]
        preset: Option<String>,
        /// The output's format: webp (the default) or avif (p/cat.jpg -> p/cat.avif).
        #[arg(long, value_name = "FORMAT", default_value = "webp")]
        format: String,
        /// Convert even when the WebP is up to date, or the ledger leaves this version of
        /// the source alone (given up or kept earlier).
        #[arg(long)]
        force: bool,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Run the daemon: the cron scheduler and the conversion pipeline, until SIGTERM/SIGINT.
    Serve,
    /// Do one run now and exit (0 all converted or skipped, 2 some failed, 3 locked, 1 fatal).
    RunOnce {
        /// Print a JSON summary (listed, converted, skipped, failed, bytes_in, bytes_out, duration_ms).
        #[arg(long)]
        json: bool,
        /// Only list what would be converted.
        #[arg(long)]
        dry_run: bool,
        /// Re-convert every source, even those with an up-to-date WebP (e.g. after a quality change).
        #[arg(long)]
        force: bool,
        /// Run only this bucket (one of r2.buckets; default: every configured bucket).
        #[arg(long, value_name = "NAME")]
        bucket: Option<String>,
        /// Run only static shard I of N (0 <= I < N) of the key space, with a state file
        /// of its own and nothing shared: for Kubernetes Indexed Jobs, AWS Batch array jobs
        /// or a CI matrix. `--shard 3/8`, or `--shard 8` to take I from JOB_COMPLETION_INDEX
        /// or AWS_BATCH_JOB_ARRAY_INDEX.
        #[arg(long, value_name = "I/N")]
        shard: Option<String>,
    },
    /// Put a message per due source in the queue `serve` consumes (events.sqs or
    /// events.cloudflare_queue), for any number of consumers to convert; resumable.
    /// Exit 0 all sent, 2 some not sent, 1 fatal, 64 usage.
    Backfill {
        /// Required: the backfill goes through the queue (the only kind there is).
        #[arg(long, required = true)]
        to_queue: bool,
        /// The bucket (one of r2.buckets; default: the primary).
        #[arg(long, value_name = "NAME")]
        bucket: Option<String>,
        /// Which queue, when both events.sqs and events.cloudflare_queue are configured.
        #[arg(long, value_enum)]
        queue: Option<backfill::QueueArg>,
        /// Where it stands (default: backfill-<bucket>.cursor in state.dir).
        #[arg(long, value_name = "FILE")]
        cursor: Option<PathBuf>,
        /// Ignore the cursor: list from the first key.
        #[arg(long)]
        from_start: bool,
        /// Messages a second at most (0: as fast as the queue takes them).
        #[arg(long, value_name = "N", default_value_t = backfill::DEFAULT_RATE)]
        rate: f64,
        /// Only list and count what would be sent.
        #[arg(long)]
        dry_run: bool,
        /// Print a JSON summary (listed, due, sent, failed, skipped, cursor, duration_ms).
        #[arg(long)]
        json: bool,
    },
    /// Print the next fire times of the configured schedule, one RFC 3339 time a line.
    Schedule {
        /// How many.
        #[arg(long, default_value_t = 5)]
        count: usize,
        /// Start after this time (RFC 3339; default: now).
        #[arg(long)]
        after: Option<String>,
    },
    /// Run every check `serve` runs and print the configuration in effect, with where each
    /// value came from (secrets hidden).
    CheckConfig {
        /// One JSON object (sections as in the Go server's file, then ours, then `sources`).
        #[arg(long)]
        json: bool,
    },
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell) to stdout.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff) to stdout: `man -l <(image-converting-server man)`.
    Man,
    /// Ask a running daemon whether it is ready (`GET /ready`): exit 0 if so, 1 if not.
    /// For container health checks.
    Health {
        /// The URL to ask (default: http://127.0.0.1:<server.port>/ready).
        #[arg(long)]
        url: Option<String>,
    },
}

/// `--version`: the crate version, the commit it was built from and libwebp's version.
fn long_version() -> &'static str {
    static TEXT: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    TEXT.get_or_init(|| {
        format!(
            "{} (commit {}, libwebp {})",
            env!("CARGO_PKG_VERSION"),
            env!("ICS_BUILD_COMMIT"),
            crate::convert::webp::version()
        )
    })
}

/// Exit codes.
pub mod exit {
    pub const OK: u8 = 0;
    pub const FATAL: u8 = 1;
    pub const FAILED: u8 = 2;
    pub const LOCKED: u8 = 3;
    pub const USAGE: u8 = 64;
}

mod backfill;
mod report;

/// `--shard I/N` (or `--shard N`, I from the engine's environment: Kubernetes'
/// JOB_COMPLETION_INDEX, AWS Batch's AWS_BATCH_JOB_ARRAY_INDEX) as (I, N).
fn parse_shard(spec: &str, env: impl Fn(&str) -> Option<String>) -> Result<(u32, u32), String> {
    let number =
        |what: &str, v: &str| v.trim().parse::<u32>().map_err(|_| format!("{what} must be a whole number, got {v:?}"));
    let (index, count) = match spec.split_once('/') {
        Some((i, n)) => (number("I", i)?, number("N", n)?),
        None => {
            let count = number("N", spec)?;
            let (name, value) = ["JOB_COMPLETION_INDEX", "AWS_BATCH_JOB_ARRAY_INDEX"]
                .iter()
                .find_map(|name| env(name).map(|v| (*name, v)))
                .ok_or("--shard N takes I from JOB_COMPLETION_INDEX or AWS_BATCH_JOB_ARRAY_INDEX; neither is set")?;
            (number(name, &value)?, count)
        }
    };
    if count == 0 || index >= count {
        return Err(format!("shard {index}/{count}: I must be from 0 to N-1"));
    }
    Ok((index, count))
}

/// Runs a parsed command with a loaded configuration.
pub fn run(cli: Cli, config: Config) -> ExitCode {
    match cli.command.unwrap_or(Command::Serve) {
        Command::CheckConfig { json } => match crate::config::explain::check_config(&config, json) {
            Ok(text) => {
                // serve's last check: a Go state it would adopt (or, in bucket mode, take
                // a lower bound from) must parse.
                match crate::lanes::go_state_notes(&config) {
                    Ok(notes) => notes.iter().for_each(|n| eprintln!("Note: {n}")),
                    Err(e) => {
                        eprintln!("Error: {e}");
                        return ExitCode::from(exit::FATAL);
                    }
                }
                print!("{text}");
                ExitCode::from(exit::OK)
            }
            Err(e) => {
                eprintln!("Error: {e}");
                ExitCode::from(exit::FATAL)
            }
        },
        Command::Serve => serve(config),
        Command::RunOnce { shard: Some(spec), json, dry_run, force, bucket } => {
            let mut config = config;
            match parse_shard(&spec, |name| std::env::var(name).ok()) {
                Ok(shard) => config.state.static_shard = Some(shard),
                Err(e) => {
                    eprintln!("Error: --shard: {e}");
                    return ExitCode::from(exit::USAGE);
                }
            }
            run(Cli { command: Some(Command::RunOnce { shard: None, json, dry_run, force, bucket }), ..cli }, config)
        }
        Command::RunOnce { json, dry_run: true, force, bucket, .. } => {
            let _ = json;
            let Some(storage) = open_bucket(&config) else { return ExitCode::from(exit::FATAL) };
            match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(rt) => {
                    let planned =
                        crate::daemon::dry_run(config, storage, force, bucket.as_deref(), report::print_planned);
                    match rt.block_on(planned) {
                        Ok(counts) => {
                            report::print_plan_counts(counts);
                            ExitCode::from(exit::OK)
                        }
                        Err(e) => {
                            eprintln!("Error: {e}");
                            ExitCode::from(exit::FATAL)
                        }
                    }
                }
                Err(e) => {
                    eprintln!("Error: cannot start the async runtime: {e}");
                    ExitCode::from(exit::FATAL)
                }
            }
        }
        Command::RunOnce { json, dry_run: false, force, bucket, .. } => {
            let Some(storage) = open_bucket(&config) else { return ExitCode::from(exit::FATAL) };
            actix::System::new().block_on(async move {
                // A spinner with live counts when a person watches stderr.
                let (progress, spinner) = if !json && std::io::IsTerminal::is_terminal(&std::io::stderr()) {
                    let (tx, rx) = tokio::sync::watch::channel(Default::default());
                    (Some(tx), Some(report::spinner(rx)))
                } else {
                    (None, None)
                };
                let opts = crate::daemon::RunOnceOptions { force, bucket, progress };
                let ends = crate::daemon::run_once(config, storage, opts, shutdown_signal()).await;
                drop(spinner);
                match ends {
                    Ok(ends) => {
                        report::print_run_once(&ends, json);
                        ExitCode::from(report::run_once_code(&ends))
                    }
                    Err(e) => {
                        eprintln!("Error: {e}");
                        ExitCode::from(exit::FATAL)
                    }
                }
            })
        }
        Command::Backfill { to_queue: _, bucket, queue, cursor, from_start, rate, dry_run, json } => {
            let Some(storage) = open_bucket(&config) else { return ExitCode::from(exit::FATAL) };
            let args = backfill::Args { bucket, queue, cursor, from_start, rate, dry_run, json };
            backfill::run(&config, &storage, args)
        }
        Command::Schedule { count, after } => print_schedule(&config, count, after.as_deref()),
        Command::Completions { shell } => {
            let mut text = Vec::new();
            let mut command = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut command, "image-converting-server", &mut text);
            print_bytes(&text)
        }
        Command::Man => {
            let mut text = Vec::new();
            match clap_mangen::Man::new(<Cli as clap::CommandFactory>::command()).render(&mut text) {
                Ok(()) => print_bytes(&text),
                Err(e) => {
                    eprintln!("Error: cannot render the manual page: {e}");
                    ExitCode::from(exit::FATAL)
                }
            }
        }
        Command::Health { url } => {
            let url = url.unwrap_or_else(|| crate::health::default_url(&config));
            let answer = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| format!("cannot start the async runtime: {e}"))
                .and_then(|rt| rt.block_on(crate::health::probe(&url)));
            match answer {
                Ok(body) => {
                    println!("{}", body.trim());
                    ExitCode::from(exit::OK)
                }
                Err(e) => {
                    eprintln!("Not ready: {e}");
                    ExitCode::from(exit::FATAL)
                }
            }
        }
        Command::Convert { source, bucket, width, height, preset, format, force, json } => {
            let Some(format) = crate::outputs::Format::parse(&format) else {
                eprintln!("Error: --format must be webp or avif, got {format:?}");
                return ExitCode::from(exit::USAGE);
            };
            let resize = match (preset, width, height) {
                (Some(name), _, _) => match config.presets.get(&name) {
                    Some(spec) => Some(*spec),
                    None => {
                        let known: Vec<&str> = config.presets.keys().map(String::as_str).collect();
                        eprintln!("Error: unknown preset {name:?} (resize.presets has: {})", known.join(", "));
                        return ExitCode::from(exit::USAGE);
                    }
                },
                (None, None, None) => None,
                (None, w, h) => Some(ResizeSpec { width: w, height: h }),
            };
            let ask = (format, resize, force);
            actix::System::new().block_on(convert_one(config, &source, bucket.as_deref(), ask, json))
        }
    }
}

/// `serve`: binds `server.host:server.port` (port 0 picks a free one) and serves until
/// SIGTERM or SIGINT.
fn serve(config: Config) -> ExitCode {
    if let Err(e) = config.check_serve() {
        eprintln!("Error: {e}");
        return ExitCode::from(exit::FATAL);
    }
    let Some(storage) = open_bucket(&config) else { return ExitCode::from(exit::FATAL) };
    let listener = match std::net::TcpListener::bind((config.server.host.as_str(), config.server.port)) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("Error: cannot listen on {}:{}: {e}", config.server.host, config.server.port);
            return ExitCode::from(exit::FATAL);
        }
    };
    match actix::System::new().block_on(crate::daemon::serve(config, storage, listener, shutdown_signal())) {
        Ok(()) => ExitCode::from(exit::OK),
        Err(e) => {
            eprintln!("Error: {e}");
            ExitCode::from(exit::FATAL)
        }
    }
}

/// The configured bucket; `None` (the error printed) when it cannot be opened.
fn open_bucket(config: &Config) -> Option<Storage> {
    Storage::open(&config.storage, &config.bucket_name()).map_err(|e| eprintln!("Error: {e}")).ok()
}

/// Resolves on SIGTERM or SIGINT: the shutdown of `serve` and `run-once`.
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("install SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("install SIGINT handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

/// The bucket and key `source` names: `r2://<bucket>/<key>` of a configured bucket, or a
/// bare key of `--bucket`'s bucket (default: the primary). An address naming another
/// bucket than `--bucket` is refused rather than guessed.
fn route(config: &Config, source: &str, only: Option<&str>) -> Result<(String, String), String> {
    let buckets = crate::lanes::select(config, None).map_err(|e| e.to_string())?;
    if let Some(b) = only {
        crate::lanes::select(config, Some(b)).map_err(|e| e.to_string())?;
    }
    let (i, key) = naming::route_source(source, &buckets).map_err(|e| e.to_string())?;
    let named = source.contains("://");
    match only {
        Some(b) if named && buckets[i] != b => {
            Err(format!("source {source:?} names bucket {:?}, but --bucket is {b:?}", buckets[i]))
        }
        Some(b) => Ok((b.to_owned(), key)),
        None => Ok((buckets[i].clone(), key)),
    }
}

/// `ask`: the output's format, its size and whether to force it.
async fn convert_one(
    config: Config,
    source: &str,
    only: Option<&str>,
    ask: (crate::outputs::Format, Option<ResizeSpec>, bool),
    json: bool,
) -> ExitCode {
    let (bucket, key) = match route(&config, source, only) {
        Ok(x) => x,
        Err(e) => {
            eprintln!("Error: {e}");
            return ExitCode::from(exit::USAGE);
        }
    };
    let Some(storage) = open_bucket(&config) else { return ExitCode::from(exit::FATAL) };
    let converted = match crate::daemon::convert(config, storage, &bucket, &key, ask).await {
        Ok(c) => c,
        Err(e) => {
            eprintln!("Error: {e}");
            return ExitCode::from(exit::FATAL);
        }
    };
    match converted {
        Ok(outcome) => {
            if json {
                println!("{}", serde_json::to_string(&outcome).expect("outcome serialises"));
            } else {
                match &outcome {
                    Outcome::Converted(r) => println!(
                        "Converted image: {} -> {} ({} -> {} bytes, {}x{}, {} frame(s), {}, {} ms)",
                        r.source,
                        r.destination,
                        r.original_size,
                        r.converted_size,
                        r.width,
                        r.height,
                        r.frames,
                        if r.lossless { "lossless" } else { "lossy" },
                        r.duration_ms
                    ),
                    // Kept by the ledger earlier: no WebP was made now.
                    Outcome::KeptSource(r) if r.converted_size == 0 => println!(
                        "Kept source: {} (the ledger keeps this version: its WebP was not smaller; --force converts again)",
                        r.source
                    ),
                    Outcome::KeptSource(r) => println!(
                        "Kept source: {} (WebP would be {} bytes, not smaller than the source's {}; conversion.skip_if_larger)",
                        r.source, r.converted_size, r.original_size
                    ),
                    Outcome::UpToDate(r) => println!(
                        "Up to date: {} -> {} (the WebP is as new as the source; --force converts again)",
                        r.source, r.destination
                    ),
                    Outcome::Superseded(r) => println!(
                        "Converted image: {} -> {}, but another writer stored that WebP first; theirs was kept",
                        r.source, r.destination
                    ),
                }
            }
            ExitCode::from(exit::OK)
        }
        Err(e) => {
            eprintln!("Error: {e}");
            use crate::reason::Reason as R;
            ExitCode::from(match e.reason() {
                R::MissingSource | R::UnknownBucket | R::InvalidSource => exit::USAGE,
                R::StorageError | R::DownloadFailed | R::UploadFailed | R::WorkerFailed => exit::FATAL,
                _ => exit::FAILED,
            })
        }
    }
}

/// Writes generated text to stdout; a reader that closed early (`| head`) is not an error.
fn print_bytes(text: &[u8]) -> ExitCode {
    use std::io::Write;
    match std::io::stdout().write_all(text) {
        Ok(()) => ExitCode::from(exit::OK),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::from(exit::OK),
        Err(e) => {
            eprintln!("Error: cannot write to stdout: {e}");
            ExitCode::from(exit::FATAL)
        }
    }
}

fn print_schedule(config: &Config, count: usize, after: Option<&str>) -> ExitCode {
    let schedule = &config.cron.schedule;
    let after = match after.map(chrono::DateTime::parse_from_rfc3339) {
        None => chrono::Utc::now(),
        Some(Ok(t)) => t.with_timezone(&chrono::Utc),
        Some(Err(e)) => {
            eprintln!("Error: --after must be an RFC 3339 time such as 2024-01-15T02:00:00Z: {e}");
            return ExitCode::from(exit::USAGE);
        }
    };
    if !config.cron.enabled {
        eprintln!("Note: cron.enabled is false; serve will not fire on this schedule");
    }
    for t in schedule.upcoming(after, count) {
        println!("{}", t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
    }
    ExitCode::from(exit::OK)
}
