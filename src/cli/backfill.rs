//! `backfill --to-queue` on the command line: its flags checked, the library's
//! [`Summary`] printed as text or JSON, and the exit code (0 every due source sent, 2 some
//! could not be sent, 1 fatal, 64 usage).

use std::path::PathBuf;
use std::process::ExitCode;

use super::exit;
use crate::backfill::message::QueueKind;
use crate::backfill::{Options, Summary, backfill};
use crate::config::Config;
use crate::storage::Storage;

/// `--rate`'s default, in messages a second: ~8.6 million a day, so a backlog is not
/// enqueued much faster than a few consumers convert it (messages left in a queue
/// longer than its retention, 4 days by default on SQS and Cloudflare, are lost).
pub const DEFAULT_RATE: f64 = 100.0;

/// `--queue`.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum QueueArg {
    Sqs,
    Cloudflare,
}

/// The command's flags.
pub struct Args {
    pub bucket: Option<String>,
    pub queue: Option<QueueArg>,
    pub cursor: Option<PathBuf>,
    pub from_start: bool,
    pub rate: f64,
    pub dry_run: bool,
    pub json: bool,
}

pub fn run(config: &Config, storage: &Storage, a: Args) -> ExitCode {
    if !a.rate.is_finite() || a.rate < 0.0 {
        eprintln!("Error: --rate must be a number of messages a second, 0 or more (0: no limit), got {}", a.rate);
        return ExitCode::from(exit::USAGE);
    }
    let opts = Options {
        bucket: a.bucket,
        queue: a.queue.map(|q| match q {
            QueueArg::Sqs => QueueKind::Sqs,
            QueueArg::Cloudflare => QueueKind::Cloudflare,
        }),
        cursor: a.cursor,
        from_start: a.from_start,
        rate: (a.rate > 0.0).then_some(a.rate),
        dry_run: a.dry_run,
    };
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("Error: cannot start the async runtime: {e}");
            return ExitCode::from(exit::FATAL);
        }
    };
    match rt.block_on(backfill(config, storage, opts)) {
        Ok(s) => {
            print(&s, a.json);
            ExitCode::from(code(&s))
        }
        Err(e) => {
            eprintln!("Error: {e}");
            ExitCode::from(if e.is_usage() { exit::USAGE } else { exit::FATAL })
        }
    }
}

/// The exit code of a backfill that ran: fatal when it stopped early, failed when some
/// message could not be sent.
pub fn code(s: &Summary) -> u8 {
    match s {
        s if s.error.is_some() => exit::FATAL,
        s if s.failed > 0 => exit::FAILED,
        _ => exit::OK,
    }
}

fn print(s: &Summary, json: bool) {
    if json {
        println!("{}", serde_json::to_string(s).expect("the summary serialises"));
        return;
    }
    let k = &s.skipped;
    let verb = if s.dry_run { "would send" } else { "sent" };
    println!(
        "Backfill of {} into {} {}: listed {}, due {}, {verb} {}, failed {}, skipped {} (up to date {}, retry later {}, \
         ledgered {}, too old {}, conflict {}, invalid key {}) in {} ms",
        s.bucket,
        s.queue,
        s.queue_name,
        s.listed,
        s.due,
        if s.dry_run { s.due } else { s.sent },
        s.failed,
        k.up_to_date + k.retry_later + k.ledgered + k.too_old + k.conflict + k.invalid_key,
        k.up_to_date,
        k.retry_later,
        k.ledgered,
        k.too_old,
        k.conflict,
        k.invalid_key,
        s.duration_ms
    );
    if let Some(after) = &s.resumed_after {
        println!("  resumed after {after:?}");
    }
    for f in &s.failures {
        println!("  not sent: {} - {}", f.key, f.error);
    }
    if let Some(e) = &s.error {
        println!("Error: {e}");
    }
    match (&s.cursor, s.complete) {
        (_, true) => {}
        (Some(c), false) => println!("  the next backfill resumes after {c:?} ({})", s.cursor_file),
        (None, false) if !s.dry_run => println!("  the next backfill starts from the first key"),
        (None, false) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(failed: u64, error: Option<&str>) -> Summary {
        Summary {
            bucket: "b".into(),
            queue: "sqs".into(),
            queue_name: "q".into(),
            dry_run: false,
            listed: 3,
            due: 2,
            sent: 2 - failed,
            failed,
            skipped: Default::default(),
            resumed_after: None,
            cursor: None,
            cursor_file: "c".into(),
            complete: failed == 0 && error.is_none(),
            error: error.map(str::to_owned),
            failures: Vec::new(),
            duration_ms: 1,
        }
    }

    #[test]
    fn a_message_not_sent_is_exit_2_and_a_backfill_stopped_early_exit_1() {
        assert_eq!(code(&summary(0, None)), exit::OK);
        assert_eq!(code(&summary(1, None)), exit::FAILED);
        assert_eq!(code(&summary(1, Some("listing failed"))), exit::FATAL);
    }
}
