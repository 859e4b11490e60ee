//! Converter pool: decode + WebP encode on dedicated threads (a `SyncArbiter`, one
//! worker per core by default), never on the async threads.
//!
//! A worker converts one image at a time and passes the WebP on to the Uploader, or the
//! failure (or a "kept source") straight to the StateKeeper — of the bucket the image
//! came from ([`Route`]): one pool serves every bucket's pipeline and the API. A panic in the codecs is
//! caught and reported as that image's failure; the worker lives on. A worker that
//! starts an image while every other worker is idle (an API request on an idle daemon,
//! the last image of a run) lets libwebp use a second thread for it.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use actix::prelude::*;
use bytes::Bytes;
use tokio::sync::OwnedSemaphorePermit;

use super::state_keeper::{RecordDone, StateKeeper};
use super::uploader::{UploadWebp, Uploader};
use crate::convert::{self, ConvertError, ConvertOptions};
use crate::memory::Reservation;
use crate::model::{Candidate, ItemOutcome, Slot};
use crate::reason::Reason;

/// What converting one image yields: each due output or its error, or the error of the
/// source itself.
type Converted = Result<Vec<Result<convert::Converted, ConvertError>>, ConvertError>;

/// Where a run's image goes after the pool: its bucket's Uploader (a WebP), or its
/// StateKeeper (a failure, a kept source).
#[derive(Clone)]
pub struct Route {
    pub uploader: Addr<Uploader>,
    pub state_keeper: Addr<StateKeeper>,
}

/// Converts one downloaded source.
#[derive(Message)]
#[rtype(result = "()")]
pub struct ConvertImage {
    pub candidate: Candidate,
    /// What to make of each of `candidate.due`, in its order.
    pub targets: Vec<convert::Target>,
    pub bytes: Bytes,
    pub slot: Slot,
    /// Its working memory is released as soon as the WebP is made (decoded pixels
    /// freed); the file's share goes on with the WebP to the Uploader.
    pub memory: Reservation,
    /// The pipeline (bucket) the image belongs to.
    pub route: Route,
    /// Its place among the downloaded images waiting for a converter
    /// (`pipeline.max_queued`), given up when a worker takes it.
    pub queued: OwnedSemaphorePermit,
}

/// Converts bytes for a conversion on request (the API, `convert`: one target) or a
/// bucket event (every output of `conversion.outputs`): decoded once, each of `targets`
/// encoded; answers each output's result, or the source's error. It queues in the same
/// mailbox as the runs' images, so neither starves the other.
///
/// The request's memory reservation and its admission travel with the message: they
/// are released when the conversion has really ended — or, when the requester gave up
/// (a 504) before a worker took the message, when the worker skips it — never while
/// a worker still holds the pixels.
#[derive(Message)]
#[rtype(result = "Result<Vec<Result<convert::Converted, ConvertError>>, ConvertError>")]
pub struct ConvertTargets {
    pub bytes: Bytes,
    pub targets: Vec<convert::Target>,
    pub memory: Reservation,
    pub admitted: Arc<OwnedSemaphorePermit>,
    /// Set when the requester gave up (a 504): the encode stops early.
    pub cancel: Arc<convert::webp::Cancel>,
}

/// One worker of the pool.
pub struct Converter {
    opts: ConvertOptions,
    /// Workers converting right now, shared by the pool.
    busy: Arc<AtomicUsize>,
    workers: usize,
    skip_if_larger: bool,
}

impl Converter {
    pub fn new(opts: ConvertOptions, pool: (Arc<AtomicUsize>, usize), skip_if_larger: bool) -> Self {
        Self { opts, busy: pool.0, workers: pool.1, skip_if_larger }
    }

    /// Runs `work` (a panic caught as `Err`) with the options in force: libwebp's second
    /// thread when no other worker is busy.
    fn convert<T>(&self, work: impl FnOnce(&ConvertOptions) -> T) -> std::thread::Result<T> {
        let others_busy = self.busy.fetch_add(1, Ordering::SeqCst);
        let threaded;
        let opts = if others_busy == 0 && self.workers > 1 && !self.opts.multithread {
            threaded = ConvertOptions { multithread: true, ..self.opts.clone() };
            &threaded
        } else {
            &self.opts
        };
        let result = catch_unwind(AssertUnwindSafe(|| work(opts)));
        self.busy.fetch_sub(1, Ordering::SeqCst);
        result
    }
}

impl Actor for Converter {
    type Context = SyncContext<Self>;
}

/// Whether retrying can help: input problems and limits fail the same way every time.
fn is_permanent(e: &ConvertError) -> bool {
    !matches!(e, ConvertError::Encode(_))
}

impl Handler<ConvertImage> for Converter {
    type Result = ();

    fn handle(&mut self, msg: ConvertImage, _: &mut SyncContext<Self>) {
        let ConvertImage { candidate, targets, bytes, slot, memory, route, queued } = msg;
        // Taken off the queue: the Lister may ready the next image.
        drop(queued);
        let started = Instant::now();
        let cancel = convert::webp::Cancel::new(false);
        let result: std::thread::Result<Converted> =
            self.convert(|opts| convert::convert_targets(&bytes, opts, &targets, &cancel));
        let convert_ms = started.elapsed().as_millis() as u64;
        let bytes_in = bytes.len() as u64;
        drop(bytes);
        let file = memory.into_file().map(Arc::new);
        let fail = |code: Reason, reason: String, permanent: bool| ItemOutcome::Failed { code, reason, permanent };
        let answers: Vec<Result<convert::Converted, ItemOutcome>> = match result {
            Ok(Ok(answers)) => answers.into_iter().map(|a| a.map_err(|e| outcome_of(&e))).collect(),
            Ok(Err(e)) => targets.iter().map(|_| Err(outcome_of(&e))).collect(),
            Err(_) => {
                let panicked = || fail(Reason::WorkerFailed, "the image decoder or encoder panicked".into(), true);
                targets.iter().map(|_| Err(panicked())).collect()
            }
        };
        let Candidate { source, due, .. } = candidate;
        for (d, answer) in due.into_iter().zip(answers) {
            let outcome = match answer {
                Ok(c) if self.skip_if_larger && c.webp.len() as u64 >= bytes_in => {
                    ItemOutcome::Kept { bytes_in, bytes_out: c.webp.len() as u64 }
                }
                Ok(c) => {
                    route.uploader.do_send(UploadWebp {
                        source: source.clone(),
                        due: d,
                        webp: c.webp.into(),
                        bytes_in,
                        megapixels: c.source_megapixels,
                        convert_ms,
                        slot: slot.clone(),
                        file: file.clone(),
                    });
                    continue;
                }
                Err(outcome) => outcome,
            };
            route.state_keeper.do_send(RecordDone {
                key: source.key.clone(),
                spec: d.spec,
                output: d.output,
                etag: source.etag.clone(),
                outcome,
                slot: slot.clone(),
            });
        }
    }
}

/// What a conversion error makes of an output: not made on purpose, or failed.
fn outcome_of(e: &ConvertError) -> ItemOutcome {
    match e.reason() {
        Reason::NotApplicable => ItemOutcome::NotMade { code: Reason::NotApplicable, reason: e.to_string() },
        code => ItemOutcome::Failed { code, reason: e.to_string(), permanent: is_permanent(e) },
    }
}

impl Handler<ConvertTargets> for Converter {
    type Result = Result<Vec<Result<convert::Converted, ConvertError>>, ConvertError>;

    fn handle(&mut self, msg: ConvertTargets, _: &mut SyncContext<Self>) -> Self::Result {
        let ConvertTargets { bytes, targets, memory, admitted, cancel } = msg;
        let result = self.convert(|opts| convert::convert_targets(&bytes, opts, &targets, &cancel));
        // Only a request that timed out sets `cancel`; its waiter is gone, so it is said here.
        let cancelled = |r: &Result<convert::Converted, ConvertError>| matches!(r, Err(ConvertError::Cancelled));
        if matches!(&result, Ok(Err(ConvertError::Cancelled)))
            || matches!(&result, Ok(Ok(v)) if v.iter().any(cancelled))
        {
            tracing::info!("Cancelled an API conversion: its request timed out");
        }
        drop((bytes, memory, admitted));
        result.unwrap_or_else(|_| {
            Err(ConvertError::Encode(convert::webp::EncodeError("the image decoder or encoder panicked".into())))
        })
    }
}
