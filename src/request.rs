//! The one per-image path of an object that arrives alone — a bucket event, the API's
//! `/api/convert`, the CLI's `convert` — through the same rules and stages as the runs
//! (which decide the same way over their listing, in the planner):
//!
//! 1. *decide* ([`decide`], [`job::check_source`]): a key the bucket can hold, an extension in
//!    `conversion.formats`, no other source claiming its WebP (one LIST, of the key's
//!    own stem, which also shows whether its WebP is up to date), and — unless forced —
//!    not a version the ledger leaves alone (given up or kept earlier);
//! 2. *convert* ([`convert_bytes`]) in the converter pool, under the memory budget, like
//!    every image;
//! 3. *finish*: a full-size WebP that would not be smaller than its source is not
//!    written (`conversion.skip_if_larger`), as a run keeps the source;
//! 4. *write* under the one naming rule ([`naming::output_key`]: a resized conversion
//!    has a name of its own and never replaces the full-size WebP) and the bucket's write
//!    rule (its Uploader: plain alone, conditional when shared or beside events; an
//!    event's write is conditional over the WebP it saw).
//!
//! [`convert_key`] chains them for the API and the CLI; an event takes [`decide`] and
//! [`convert_bytes`] with its own download and bookkeeping (`src/events/handle.rs`).

use std::sync::Arc;
use std::time::Instant;

use actix::Addr;
use bytes::Bytes;
use tokio::sync::OwnedSemaphorePermit;

use crate::actors::converter::{ConvertTargets, Converter};
use crate::actors::state_keeper::{AskLedger, StateKeeper};
use crate::actors::uploader::{PutWebp, Uploader};
use crate::config::Config;
use crate::convert::webp::Cancel;
use crate::convert::{ConvertError, ResizeSpec};
use crate::job::{self, JobError, Outcome, Report, Written};
use crate::memory::MemoryBudget;
use crate::model::Due;
use crate::naming;
use crate::outputs::{Format, full_size_ledger_key};
use crate::planner::{Decision, PlanRules, Planner};
use crate::reason::Reason;
use crate::state::{LedgerEntry, LedgerKind, State};
use crate::storage::{ObjectInfo, Storage};

/// What a request needs of one bucket: its storage and configuration, the shared pool
/// and budget, and the bucket's Uploader (its write rule).
#[derive(Clone)]
pub struct Target {
    pub config: Arc<Config>,
    pub storage: Storage,
    pub converter: Addr<Converter>,
    pub memory: MemoryBudget,
    pub uploader: Addr<Uploader>,
    /// The bucket's ledger.
    pub state_keeper: Addr<StateKeeper>,
}

/// How one request is to be done.
pub struct Ask {
    /// The output's format (WebP, the Go server's, by default).
    pub format: Format,
    pub resize: Option<ResizeSpec>,
    /// The requester's admission, held until the conversion has really ended.
    pub admitted: Arc<OwnedSemaphorePermit>,
    /// Set when the requester gave up: the encode stops early.
    pub cancel: Arc<Cancel>,
    /// Convert even when the WebP is up to date or the ledger leaves this version alone.
    pub force: bool,
    /// The WebP this conversion replaces, as the caller saw it (`Some(None)`: none), to
    /// write conditionally over exactly that; `None`: the bucket's write rule, on the
    /// WebP as it is now.
    pub replaces: Option<Option<String>>,
    /// The source's share of the memory budget, reserved before its download.
    pub file: Option<crate::memory::FileReservation>,
}

/// What the per-image rules decide for one object before it is downloaded.
#[derive(Debug)]
pub enum Decided {
    /// Convert it: what the LIST of its stem showed.
    Convert(job::Stem),
    /// Its WebP is at least as new as it.
    UpToDate(job::Stem),
    /// The ledger leaves this version alone (given up or kept earlier).
    Ledgered(job::Stem, crate::state::LedgerEntry),
}

/// The *decide* step, the same for a conversion on request and a bucket event: a key
/// the bucket can hold, a candidate's extension, no second claimant of its WebP (one
/// LIST of its stem), then — unless `force` — up to date (full size only: a resize has
/// a name of its own) and the ledger. A missing source is decided `Convert` (its
/// download then says not found).
pub async fn decide(
    target: &Target,
    key: &str,
    format: Format,
    force: bool,
    resize: bool,
) -> Result<Decided, JobError> {
    let stem = job::check_source(&target.storage, &target.config.formats, key, format).await?;
    let Some(listed) = stem.source.clone().filter(|_| !force) else { return Ok(Decided::Convert(stem)) };
    if !resize && stem.up_to_date() {
        return Ok(Decided::UpToDate(stem));
    }
    let asked = AskLedger { key: full_size_ledger_key(key, format), etag: listed.etag.clone() };
    match target.state_keeper.send(asked).await {
        Ok(Some(entry)) if entry.kind == LedgerKind::GivenUp || !resize => Ok(Decided::Ledgered(stem, entry)),
        _ => Ok(Decided::Convert(stem)),
    }
}

/// Converts the object `key` of `target`'s bucket: decide, download, convert, write.
/// (A bucket event takes [`decide`] and [`convert_bytes`] too, with its own download.)
pub async fn convert_key(target: &Target, key: &str, mut ask: Ask) -> Result<Outcome, JobError> {
    let started = Instant::now();
    let source = naming::address(target.storage.bucket(), key);
    let unconverted = |listed: &ObjectInfo, webp: Option<&ObjectInfo>| Report {
        source: source.clone(),
        destination: naming::address(target.storage.bucket(), &naming::output_key(key, ask.format.ext(), None)),
        original_size: listed.size,
        converted_size: webp.map_or(0, |w| w.size),
        width: 0,
        height: 0,
        frames: 0,
        lossless: false,
        source_megapixels: 0.0,
        duration_ms: elapsed_ms(started),
    };
    match decide(target, key, ask.format, ask.force, ask.resize.is_some()).await? {
        // The source's share of the memory budget, before its download.
        Decided::Convert(stem) => {
            if let (None, Some(listed)) = (&ask.file, &stem.source) {
                ask.file = Some(target.memory.reserve_file(listed.size).await);
            }
        }
        Decided::UpToDate(stem) => {
            let listed = stem.source.as_ref().expect("an up-to-date source was listed");
            return Ok(Outcome::UpToDate(unconverted(listed, stem.output.as_ref())));
        }
        Decided::Ledgered(stem, entry) => {
            let listed = stem.source.as_ref().expect("a ledgered source was listed");
            if entry.kind == LedgerKind::Kept {
                return Ok(Outcome::KeptSource(unconverted(listed, None)));
            }
            let reason = Reason::from_code(&entry.code).unwrap_or(Reason::WorkerFailed);
            return Err(JobError::Ledgered { key: key.to_owned(), reason, message: entry.reason });
        }
    }
    let (_, bytes) = job::fetch(&target.storage, key, &target.config.convert).await?;
    convert_bytes(target, key, source, bytes, ask, started).await
}

/// Converts `bytes` (the object `key`, or a URL's body stored under `key`) and writes
/// its output beside `key`; `source` is how the report names where they came from.
pub async fn convert_bytes(
    target: &Target,
    key: &str,
    source: String,
    bytes: Bytes,
    mut ask: Ask,
    started: Instant,
) -> Result<Outcome, JobError> {
    let opts = &target.config.convert;
    let worker = |message: String| JobError::Worker { key: key.to_owned(), message };
    let convert_error = |error| JobError::Convert { key: key.to_owned(), error };
    let original_size = bytes.len() as u64;
    let file = ask.file.take();
    let Ask { format, resize, admitted, cancel, replaces, .. } = ask;
    // As the Go server: a resize may upscale.
    let targets = vec![crate::convert::Target { format, resize, upscale: true, quality: None }];
    let memory = target.memory.reserve_targets(file, &bytes, &targets, opts).await.map_err(convert_error)?;
    let msg = ConvertTargets { bytes, targets, memory, admitted, cancel: cancel.clone() };
    let answer = target.converter.send(msg).await.map_err(|_| worker("the converter pool is stopping".into()))?;
    let converted = answer
        .map_err(convert_error)?
        .into_iter()
        .next()
        .ok_or_else(|| worker("the converter answered no output".into()))?
        .map_err(convert_error)?;
    let output = naming::output_key(key, format.ext(), resize.map(|_| (converted.width, converted.height)));
    let webp = Bytes::from(converted.webp);
    let report = |duration_ms| Report {
        source: source.clone(),
        destination: naming::address(target.storage.bucket(), &output),
        original_size,
        converted_size: webp.len() as u64,
        width: converted.width,
        height: converted.height,
        frames: converted.frames,
        lossless: converted.lossless,
        source_megapixels: converted.source_megapixels,
        duration_ms,
    };
    let kept = target.config.skip_if_larger && resize.is_none() && webp.len() as u64 >= original_size;
    if kept {
        return Ok(Outcome::KeptSource(report(elapsed_ms(started))));
    }
    let put = PutWebp { key: output.clone(), source: key.to_owned(), webp: webp.clone(), replaces };
    let written = target
        .uploader
        .send(put)
        .await
        .map_err(|_| worker("the uploader is stopping".into()))?
        .map_err(|error| JobError::Upload { key: output.clone(), error })?;
    Ok(match written {
        Written::Stored => Outcome::Converted(report(elapsed_ms(started))),
        Written::Superseded => Outcome::Superseded(report(elapsed_ms(started))),
    })
}

fn elapsed_ms(t: Instant) -> u64 {
    t.elapsed().as_millis() as u64
}

/// What the per-image rules decide for every output of one source
/// (`conversion.outputs`; a bucket event makes them all).
#[derive(Debug, Default)]
pub struct OutputsPlan {
    /// The source as listed; `None` when it was not (every output is then due, and its
    /// download says why).
    pub source: Option<ObjectInfo>,
    /// The outputs to make, in `conversion.outputs` order.
    pub due: Vec<Due>,
    /// Outputs another source claims too: its place, its key and every claimant.
    pub conflicts: Vec<(usize, String, Vec<String>)>,
    /// Outputs at least as new as the source.
    pub up_to_date: usize,
    /// Outputs the ledger leaves alone (this version given up or kept), with the entry.
    pub ledgered: Vec<(usize, LedgerEntry)>,
}

/// The *decide* step for every output of `key`: a key the bucket can hold, a
/// candidate's extension, then the planner's own decision over what the bucket holds
/// around the key ([`job::neighbourhood`]: for the Go server's one WebP, the one LIST of
/// its stem) — each output due, up to date, or claimed by another source too — and,
/// unless `force`, the ledger, output by output.
pub async fn decide_outputs(target: &Target, key: &str, force: bool) -> Result<OutputsPlan, JobError> {
    let config = &target.config;
    target.storage.check(key)?;
    if !naming::is_candidate(key, &config.formats) {
        let ext = naming::extension(key).unwrap_or("").to_owned();
        return Err(JobError::NotCandidate { key: key.to_owned(), ext });
    }
    let listed = job::neighbourhood(&target.storage, key, &config.outputs).await?;
    let mut plan = OutputsPlan { source: listed.iter().find(|o| o.key == key).cloned(), ..OutputsPlan::default() };
    let rules = PlanRules {
        formats: config.formats.clone(),
        outputs: config.outputs.clone(),
        ignore_before: None,
        reprocess_from: None,
        force,
        now: chrono::Utc::now(),
        upto: None,
        defer: None,
        only: None,
    };
    let mut planner = Planner::new(rules, Arc::new(State::default()));
    let mut decisions = Vec::new();
    for o in listed {
        planner.push(o, &mut decisions);
    }
    planner.finish(&mut decisions);
    for d in decisions {
        match d {
            Decision::Convert { source, due } if source.key == key => plan.due = due,
            Decision::Conflict { claimants, output } => {
                if let Some((_, spec)) = claimants.iter().find(|(s, _)| s.key == key) {
                    let names = claimants.iter().map(|(s, _)| s.key.clone()).collect();
                    plan.conflicts.push((*spec, output, names));
                }
            }
            _ => {}
        }
    }
    let specs = config.outputs.specs();
    let Some(source) = plan.source.clone() else {
        plan.due = (0..specs.len())
            .filter(|i| !plan.conflicts.iter().any(|(spec, ..)| spec == i))
            .map(|spec| Due { spec, output: specs[spec].key(key), replaces: None })
            .collect();
        return Ok(plan);
    };
    plan.up_to_date = specs.len() - plan.due.len() - plan.conflicts.len();
    if !force {
        let mut due = Vec::with_capacity(plan.due.len());
        for d in std::mem::take(&mut plan.due) {
            let asked = AskLedger { key: config.outputs.ledger_key(key, d.spec), etag: source.etag.clone() };
            match target.state_keeper.send(asked).await {
                Ok(Some(entry)) => plan.ledgered.push((d.spec, entry)),
                _ => due.push(d),
            }
        }
        plan.due = due;
    }
    Ok(plan)
}

/// Converts `bytes` (the source `key`) into each of `due` — decoded once, in the
/// converter pool, under the memory budget — and writes each beside it by the bucket's
/// Uploader, conditionally over the output seen ([`Due::replaces`]). One answer per
/// output, in `due`'s order; `Err` when the source itself could not be converted.
pub async fn convert_outputs(
    target: &Target,
    key: &str,
    bytes: Bytes,
    due: &[Due],
    admitted: Arc<OwnedSemaphorePermit>,
    file: Option<crate::memory::FileReservation>,
    started: Instant,
) -> Result<Vec<Result<Outcome, JobError>>, JobError> {
    let config = &target.config;
    let worker = |message: String| JobError::Worker { key: key.to_owned(), message };
    let convert_error = |error: ConvertError| JobError::Convert { key: key.to_owned(), error };
    let all: Vec<crate::convert::Target> =
        due.iter().map(|d| crate::convert::Target::from(&config.outputs.specs()[d.spec])).collect();
    // Outputs that cannot fit beside the others are answered alone; the rest go on.
    let (kept, refused) = target.memory.fit(&bytes, &all, &config.convert).await;
    let mut answers: Vec<Option<Result<Outcome, JobError>>> = (0..due.len()).map(|_| None).collect();
    for (i, error) in refused {
        answers[i] = Some(Err(convert_error(error)));
    }
    let targets: Vec<crate::convert::Target> = kept.iter().map(|&i| all[i]).collect();
    let original_size = bytes.len() as u64;
    let memory = target.memory.reserve_targets(file, &bytes, &targets, &config.convert).await.map_err(convert_error)?;
    let cancel = Arc::new(Cancel::new(false));
    let msg = ConvertTargets { bytes, targets, memory, admitted, cancel };
    let converted = target
        .converter
        .send(msg)
        .await
        .map_err(|_| worker("the converter pool is stopping".into()))?
        .map_err(convert_error)?;
    let bucket = target.storage.bucket();
    for (&i, answer) in kept.iter().zip(converted) {
        let d = &due[i];
        let converted = match answer {
            Ok(c) => c,
            Err(error) => {
                answers[i] = Some(Err(convert_error(error)));
                continue;
            }
        };
        let data = Bytes::from(converted.webp);
        let report = Report {
            source: naming::address(bucket, key),
            destination: naming::address(bucket, &d.output),
            original_size,
            converted_size: data.len() as u64,
            width: converted.width,
            height: converted.height,
            frames: converted.frames,
            lossless: converted.lossless,
            source_megapixels: converted.source_megapixels,
            duration_ms: elapsed_ms(started),
        };
        if config.skip_if_larger && data.len() as u64 >= original_size {
            answers[i] = Some(Ok(Outcome::KeptSource(report)));
            continue;
        }
        let put =
            PutWebp { key: d.output.clone(), source: key.to_owned(), webp: data, replaces: Some(d.replaces.clone()) };
        answers[i] = Some(match target.uploader.send(put).await {
            Err(_) => Err(worker("the uploader is stopping".into())),
            Ok(Err(error)) => Err(JobError::Upload { key: d.output.clone(), error }),
            Ok(Ok(Written::Stored)) => Ok(Outcome::Converted(report)),
            Ok(Ok(Written::Superseded)) => Ok(Outcome::Superseded(report)),
        });
    }
    let mut out = Vec::with_capacity(answers.len());
    for answer in answers {
        out.push(match answer {
            Some(a) => a,
            None => Err(worker("the converter answered no output".into())),
        });
    }
    Ok(out)
}
