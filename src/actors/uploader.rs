//! Uploader: puts each WebP beside its source with `Content-Type: image/webp`, at most
//! `pipeline.upload_concurrency` at once, and reports the result to the StateKeeper.

use std::sync::Arc;

use actix::prelude::*;
use bytes::Bytes;
use tokio::sync::Semaphore;

use super::state_keeper::{RecordDone, StateKeeper};
use crate::model::{Candidate, ItemOutcome, Slot};
use crate::storage::{Storage, WEBP_CONTENT_TYPE};

/// Uploads one converted image.
#[derive(Message)]
#[rtype(result = "()")]
pub struct UploadWebp {
    pub candidate: Candidate,
    pub webp: Bytes,
    pub bytes_in: u64,
    pub megapixels: f64,
    pub convert_ms: u64,
    pub slot: Slot,
}

/// Puts one WebP for an on-demand request and answers with the result.
#[derive(Message)]
#[rtype(result = "Result<(), crate::storage::StorageError>")]
pub struct PutWebp {
    pub key: String,
    pub webp: Bytes,
}

/// The actor.
pub struct Uploader {
    storage: Storage,
    state_keeper: Addr<StateKeeper>,
    uploads: Arc<Semaphore>,
}

impl Uploader {
    pub fn new(storage: Storage, state_keeper: Addr<StateKeeper>, concurrency: usize) -> Self {
        Self { storage, state_keeper, uploads: Arc::new(Semaphore::new(concurrency)) }
    }
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
        actix::spawn(async move {
            let _permit = uploads.acquire_owned().await.expect("never closed");
            let UploadWebp { candidate, webp, bytes_in, megapixels, convert_ms, slot } = msg;
            let bytes_out = webp.len() as u64;
            let outcome = match storage.put(&candidate.output, webp, WEBP_CONTENT_TYPE).await {
                Ok(_) => ItemOutcome::Converted { bytes_in, bytes_out, megapixels, convert_ms },
                Err(e) => ItemOutcome::Failed { code: "upload_failed".into(), reason: e.to_string(), permanent: false },
            };
            state_keeper.do_send(RecordDone {
                key: candidate.source.key,
                output: candidate.output,
                etag: candidate.source.etag,
                outcome,
                slot,
            });
        });
    }
}

impl Handler<PutWebp> for Uploader {
    type Result = ResponseFuture<Result<(), crate::storage::StorageError>>;

    fn handle(&mut self, msg: PutWebp, _: &mut Context<Self>) -> Self::Result {
        let storage = self.storage.clone();
        let uploads = self.uploads.clone();
        Box::pin(async move {
            let _permit = uploads.acquire_owned().await.expect("never closed");
            storage.put(&msg.key, msg.webp, WEBP_CONTENT_TYPE).await.map(|_| ())
        })
    }
}
