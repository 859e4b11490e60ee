//! Uploader: puts each WebP beside its source with `Content-Type: image/webp`, at most
//! `pipeline.upload_concurrency` at once (default `pipeline.max_requests`: uploads run
//! concurrently with the downloads, inside the storage's request window), and reports the
//! result to the StateKeeper.
//!
//! Every write goes by the one write rule (`job::write_webp`), the API's too. In
//! bucket mode a run's put happens only while this instance holds the source's shard,
//! and it is conditional: `If-None-Match: *` for a new WebP, `If-Match` on the ETag of the
//! one it replaces. Two instances that both converted an image (one of them paused past
//! its lease) therefore store it once: the second put is refused and counted as
//! superseded, not as a failure.

use std::sync::Arc;

use actix::prelude::*;
use bytes::Bytes;
use tokio::sync::Semaphore;

use super::state_keeper::{RecordDone, StateKeeper};
use crate::job::{self, WriteRule, Written};
use crate::memory::FileReservation;
use crate::model::{Due, ItemOutcome, Slot};
use crate::reason::Reason;
use crate::scope::{RunScope, admit};
use crate::storage::{ObjectInfo, Storage, StorageError};

/// Uploads one output of a run's source.
#[derive(Message)]
#[rtype(result = "()")]
pub struct UploadWebp {
    pub source: ObjectInfo,
    pub due: Due,
    /// The encoded output (WebP or AVIF, by its key's extension).
    pub webp: Bytes,
    pub bytes_in: u64,
    pub megapixels: f64,
    pub convert_ms: u64,
    pub slot: Slot,
    /// The source's share of the files pool, standing for its outputs until the last is
    /// put (shared by a source's outputs).
    pub file: Option<Arc<FileReservation>>,
}

/// Puts one WebP for an on-demand request (the API) by the same write rule as the runs,
/// on the WebP as it is now; answers whether it was stored.
#[derive(Message)]
#[rtype(result = "Result<Written, StorageError>")]
pub struct PutWebp {
    pub key: String,
    /// The key it was made from (named in the output's metadata).
    pub source: String,
    pub webp: Bytes,
    /// The WebP it replaces as the requester saw it (`Some(None)`: none): written
    /// conditionally over exactly that. `None`: the bucket's rule, on the WebP as it is now.
    pub replaces: Option<Option<String>>,
}

/// The actor.
pub struct Uploader {
    storage: Storage,
    /// Where runs' uploads are recorded; `None` for an Uploader of requests only.
    state_keeper: Option<Addr<StateKeeper>>,
    uploads: Arc<Semaphore>,
    scope: Arc<dyn RunScope>,
}

impl Uploader {
    pub fn new(
        storage: Storage,
        state_keeper: Addr<StateKeeper>,
        concurrency: usize,
        scope: Arc<dyn RunScope>,
    ) -> Self {
        Self { storage, state_keeper: Some(state_keeper), uploads: Arc::new(Semaphore::new(concurrency)), scope }
    }

    /// An Uploader of conversions on request only (`PutWebp`; the CLI's `convert`): no
    /// run, so nothing to record.
    pub fn for_requests(storage: Storage, concurrency: usize, scope: Arc<dyn RunScope>) -> Self {
        Self { storage, state_keeper: None, uploads: Arc::new(Semaphore::new(concurrency)), scope }
    }
}

/// Puts one run's WebP by the one write rule ([`job::write_webp`]): plainly, or (when
/// several writers may race: bucket mode) only while the scope admits its source, and
/// conditionally on the WebP the listing saw.
async fn put_run_webp(
    storage: &Storage,
    scope: &dyn RunScope,
    source: &ObjectInfo,
    d: &Due,
    webp: Bytes,
) -> Result<(), Put> {
    let rule = if scope.conditional_writes() {
        if !admit(scope, &source.key, chrono::Utc::now()) {
            return Err(Put::Superseded("this instance no longer holds the shard's lease".into()));
        }
        WriteRule::Conditional { replaces: Some(d.replaces.clone()) }
    } else {
        WriteRule::Plain
    };
    match job::write_webp(storage, &d.output, &source.key, webp, rule).await {
        Ok(Written::Stored) => Ok(()),
        Ok(Written::Superseded) => Err(Put::Superseded(format!("{} was written by another instance first", d.output))),
        Err(e) => Err(Put::Failed(e)),
    }
}

enum Put {
    Superseded(String),
    Failed(StorageError),
}

impl Actor for Uploader {
    type Context = Context<Self>;
}

impl Handler<UploadWebp> for Uploader {
    type Result = ();

    fn handle(&mut self, msg: UploadWebp, _: &mut Context<Self>) {
        let storage = self.storage.clone();
        let state_keeper = self.state_keeper.clone();
        let uploads = self.uploads.clone();
        let scope = self.scope.clone();
        actix::spawn(async move {
            let _permit = uploads.acquire_owned().await.expect("never closed");
            let UploadWebp { source, due, webp, bytes_in, megapixels, convert_ms, slot, file } = msg;
            let bytes_out = webp.len() as u64;
            let put = put_run_webp(&storage, scope.as_ref(), &source, &due, webp).await;
            drop(file);
            let outcome = match put {
                Ok(()) => ItemOutcome::Converted { bytes_in, bytes_out, megapixels, convert_ms },
                Err(Put::Superseded(reason)) => ItemOutcome::Superseded { reason },
                Err(Put::Failed(e)) => {
                    ItemOutcome::Failed { code: Reason::UploadFailed, reason: e.to_string(), permanent: false }
                }
            };
            let done =
                RecordDone { key: source.key, spec: due.spec, output: due.output, etag: source.etag, outcome, slot };
            match state_keeper {
                Some(state_keeper) => state_keeper.do_send(done),
                None => tracing::error!(key = %done.key, "A run's upload reached an Uploader of requests only"),
            }
        });
    }
}

impl Handler<PutWebp> for Uploader {
    type Result = ResponseFuture<Result<Written, StorageError>>;

    fn handle(&mut self, msg: PutWebp, _: &mut Context<Self>) -> Self::Result {
        let storage = self.storage.clone();
        let uploads = self.uploads.clone();
        let rule = match msg.replaces {
            Some(seen) => WriteRule::Conditional { replaces: Some(seen) },
            None => WriteRule::current(self.scope.conditional_writes()),
        };
        Box::pin(async move {
            let _permit = uploads.acquire_owned().await.expect("never closed");
            job::write_webp(&storage, &msg.key, &msg.source, msg.webp, rule).await
        })
    }
}
