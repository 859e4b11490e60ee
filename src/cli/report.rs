//! What `run-once` prints and the exit code it ends with: the daemon's typed reports
//! ([`BucketEnd`], [`Planned`], [`Tally`]) turned into text, JSON and a spinner.
//!
//! One bucket prints as the one-bucket daemon always has (the Go server's lines); several
//! each under its name, or as one JSON object `{"buckets": [{"bucket", …}]}`.

use std::time::Duration;

use tokio::sync::watch;

use super::exit;
use crate::daemon::{BucketEnd, PlanCounts, Planned, Tally};
use crate::mode::NoRun;
use crate::model::RunSummary;

/// `run-once`'s exit code: over several buckets the worst end (fatal, then failed, then
/// locked, then ok).
pub fn run_once_code(ends: &[BucketEnd]) -> u8 {
    let of = |end: &Result<RunSummary, NoRun>| match end {
        Err(NoRun::Fatal(_)) => exit::FATAL,
        Err(NoRun::Locked) => exit::LOCKED,
        Ok(s) if s.error.is_some() => exit::FATAL,
        Ok(s) if s.counts.failed > 0 => exit::FAILED,
        Ok(_) => exit::OK,
    };
    let rank = |code: u8| match code {
        exit::FATAL => 3,
        exit::FAILED => 2,
        exit::LOCKED => 1,
        _ => 0,
    };
    ends.iter().map(|e| of(&e.end)).max_by_key(|c| rank(*c)).unwrap_or(exit::OK)
}

/// Prints why buckets had no run (stderr, as the Go server's `Error:` lines), then every
/// bucket's summary (stdout).
pub fn print_run_once(ends: &[BucketEnd], json: bool) {
    let several = ends.len() > 1;
    for BucketEnd { bucket, end } in ends {
        if let Err(e) = end {
            if several { eprintln!("Error: bucket {bucket}: {e}") } else { eprintln!("Error: {e}") }
        }
    }
    if let [BucketEnd { end: Ok(summary), .. }] = ends {
        return print_summary(summary, json);
    }
    if json {
        let buckets: Vec<serde_json::Value> = ends
            .iter()
            .map(|BucketEnd { bucket, end }| {
                let mut v = match end {
                    Ok(s) => serde_json::to_value(s).expect("summary serialises"),
                    Err(e) => serde_json::json!({"complete": false, "error": no_run_word(e)}),
                };
                v["bucket"] = serde_json::json!(bucket);
                v
            })
            .collect();
        println!("{}", serde_json::json!({ "buckets": buckets }));
        return;
    }
    for BucketEnd { bucket, end } in ends {
        println!("Bucket {bucket}:");
        match end {
            Ok(s) => print_summary(s, false),
            Err(e) => println!("  no run ({})", no_run_word(e)),
        }
    }
}

/// One word for a bucket with no run, in the JSON and text summaries.
fn no_run_word(e: &NoRun) -> &'static str {
    match e {
        NoRun::Locked => "locked",
        NoRun::Fatal(_) => "fatal",
    }
}

fn print_summary(s: &RunSummary, json: bool) {
    if json {
        println!("{}", serde_json::to_string(s).expect("summary serialises"));
        return;
    }
    let c = &s.counts;
    println!(
        "Run {}: listed {}, converted {}, skipped {}, kept {}, failed {} ({} -> {} bytes) in {} ms{}",
        s.run_id,
        c.listed,
        c.converted,
        c.skipped,
        c.kept,
        c.failed,
        c.bytes_in,
        c.bytes_out,
        s.duration_ms,
        if s.complete { "" } else { " (interrupted: the next run resumes)" }
    );
    for r in &s.shards {
        let p = &r.run;
        println!(
            "  shard {}: run by {}, converted {}, kept {}, failed {}, superseded {}",
            r.shard, p.by, p.converted, p.kept, p.failed, p.superseded
        );
    }
    for f in &s.failures {
        println!("  failed: {} - {} ({})", f.key, f.reason, f.code);
    }
    if let Some(e) = &s.error {
        println!("Error: {e}");
    }
}

/// One line of `run-once --dry-run`.
pub fn print_planned(p: Planned) {
    match p {
        Planned::Convert { source, output } => println!("{source} -> {output}"),
        Planned::Conflict { output, sources } => println!("conflict: {output} claimed by {}", sources.join(", ")),
    }
}

/// `run-once --dry-run`'s closing line.
pub fn print_plan_counts(c: PlanCounts) {
    eprintln!("{} would be converted, {} skipped", c.convert, c.skip);
}

/// A spinner on stderr showing the live counts `rx` receives, until the returned guard
/// is dropped.
pub fn spinner(mut rx: watch::Receiver<Tally>) -> impl Drop {
    let bar = indicatif::ProgressBar::new_spinner();
    bar.set_style(indicatif::ProgressStyle::with_template("{spinner} {elapsed} {msg}").expect("valid template"));
    bar.enable_steady_tick(Duration::from_millis(200));
    let shown = bar.clone();
    let task = actix::spawn(async move {
        while rx.changed().await.is_ok() {
            let t = *rx.borrow_and_update();
            shown.set_message(format!(
                "listed {} · converted {} · skipped {} · failed {} · in flight {}",
                t.listed, t.converted, t.skipped, t.failed, t.in_flight
            ));
        }
    });
    struct Clear(indicatif::ProgressBar, tokio::task::JoinHandle<()>);
    impl Drop for Clear {
        fn drop(&mut self) {
            self.1.abort();
            self.0.finish_and_clear();
        }
    }
    Clear(bar, task)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(failed: u64, error: Option<&str>) -> RunSummary {
        let now = chrono::Utc::now();
        RunSummary {
            run_id: "r".into(),
            started_at: now,
            finished_at: now,
            counts: crate::model::RunCounts { failed, ..Default::default() },
            duration_ms: 0,
            complete: true,
            error: error.map(str::to_owned),
            failures: Vec::new(),
            shards: Vec::new(),
        }
    }

    fn end(bucket: &str, end: Result<RunSummary, NoRun>) -> BucketEnd {
        BucketEnd { bucket: bucket.into(), end }
    }

    #[test]
    fn the_worst_bucket_chooses_the_exit_code() {
        assert_eq!(run_once_code(&[end("a", Ok(summary(0, None)))]), exit::OK);
        assert_eq!(run_once_code(&[end("a", Ok(summary(2, None)))]), exit::FAILED);
        assert_eq!(run_once_code(&[end("a", Ok(summary(0, Some("x"))))]), exit::FATAL);
        assert_eq!(run_once_code(&[end("a", Err(NoRun::Locked)), end("b", Ok(summary(0, None)))]), exit::LOCKED);
        assert_eq!(run_once_code(&[end("a", Err(NoRun::Locked)), end("b", Ok(summary(1, None)))]), exit::FAILED);
        assert_eq!(
            run_once_code(&[end("a", Ok(summary(1, None))), end("b", Err(NoRun::Fatal("no".into())))]),
            exit::FATAL
        );
    }
}
