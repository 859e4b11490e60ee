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

/// What converting one image yields: its WebP or its error.
type Converted = Result<convert::Converted, ConvertError>;

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

/// Converts bytes for an on-demand request (the API) and answers with the result.
/// It queues in the same mailbox as the runs' images, so neither starves the other.
///
/// The request's memory reservation and its admission travel with the message: they
/// are released when the conversion has really ended — or, when the requester gave up
/// (a 504) before a worker took the message, when the worker skips it — never while
/// a worker still holds the pixels.
#[derive(Message)]
#[rtype(result = "Result<convert::Converted, ConvertError>")]
pub struct ConvertBytes {
    pub bytes: Bytes,
    pub resize: Option<convert::ResizeSpec>,
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

    /// Converts (a panic caught as `Err`), with libwebp's second thread when no other
    /// worker is busy.
    fn convert(
        &self,
        bytes: &[u8],
        resize: Option<convert::ResizeSpec>,
        cancel: &convert::webp::Cancel,
    ) -> std::thread::Result<Converted> {
        let others_busy = self.busy.fetch_add(1, Ordering::SeqCst);
        let threaded;
        let opts = if others_busy == 0 && self.workers > 1 && !self.opts.multithread {
            threaded = ConvertOptions { multithread: true, ..self.opts.clone() };
            &threaded
        } else {
            &self.opts
        };
        let result = catch_unwind(AssertUnwindSafe(|| convert::convert_cancellable(bytes, opts, resize, cancel)));
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
        let ConvertImage { candidate, bytes, slot, memory, route, queued } = msg;
        // Taken off the queue: the Lister may ready the next image.
        drop(queued);
        let started = Instant::now();
        let result = self.convert(&bytes, None, &convert::webp::Cancel::new(false));
        let bytes_in = bytes.len() as u64;
        drop(bytes);
        let file = memory.into_file();
        let fail = |code: Reason, reason: String, permanent: bool| ItemOutcome::Failed { code, reason, permanent };
        let outcome = match result {
            Ok(Ok(c)) if self.skip_if_larger && c.webp.len() as u64 >= bytes_in => {
                ItemOutcome::Kept { bytes_in, bytes_out: c.webp.len() as u64 }
            }
            Ok(Ok(c)) => {
                let convert_ms = started.elapsed().as_millis() as u64;
                route.uploader.do_send(UploadWebp {
                    candidate,
                    webp: c.webp.into(),
                    bytes_in,
                    megapixels: c.source_megapixels,
                    convert_ms,
                    slot,
                    file,
                });
                return;
            }
            Ok(Err(e)) => fail(e.reason(), e.to_string(), is_permanent(&e)),
            Err(_) => fail(Reason::WorkerFailed, "the image decoder or encoder panicked".into(), true),
        };
        route.state_keeper.do_send(RecordDone {
            key: candidate.source.key,
            output: candidate.output,
            etag: candidate.source.etag,
            outcome,
            slot,
        });
    }
}

impl Handler<ConvertBytes> for Converter {
    type Result = Result<convert::Converted, ConvertError>;

    fn handle(&mut self, msg: ConvertBytes, _: &mut SyncContext<Self>) -> Self::Result {
        let ConvertBytes { bytes, resize, memory, admitted, cancel } = msg;
        let result = self.convert(&bytes, resize, &cancel);
        if matches!(result, Ok(Err(ConvertError::Cancelled))) {
            tracing::info!("Cancelled an API conversion: its request timed out");
        }
        // The pixels are gone: only now may another conversion use their memory.
        drop((bytes, memory, admitted));
        result.unwrap_or_else(|_| {
            Err(ConvertError::Encode(convert::webp::EncodeError("the image decoder or encoder panicked".into())))
        })
    }
}
