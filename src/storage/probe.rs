//! A test probe between an instance and its bucket (tests only): counts each key's
//! successful PUTs, records each PUT's mode, and can hold every call at a gate — a paused instance, or a slow
//! bucket — until the test opens it. Several instances share one bucket through probes
//! of their own over one in-memory store, and one shared PUT count.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use futures::stream::{BoxStream, StreamExt};
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore, PutMultipartOptions,
    PutOptions, PutPayload, PutResult, Result,
};
use tokio::sync::watch;

/// Successful PUTs per key, shared by the probes of one bucket.
pub type PutCounts = Arc<Mutex<BTreeMap<String, u32>>>;

/// Each PUT's key and mode (`Overwrite`, `Create`, `Update`), in order.
pub type PutModes = Arc<Mutex<Vec<(String, String)>>>;

/// The probe.
#[derive(Debug, Clone)]
pub struct Probe {
    inner: Arc<dyn ObjectStore>,
    puts: PutCounts,
    /// Every PUT's key and mode.
    pub modes: PutModes,
    open: Arc<watch::Sender<bool>>,
    /// Calls that reached the bucket (passed the gate) and calls that finished there.
    passed: Arc<AtomicUsize>,
    finished: Arc<AtomicUsize>,
    /// Reads of keys containing this fail, as a store that keeps failing them would.
    failing_reads: Arc<Mutex<Option<String>>>,
}

impl std::fmt::Display for Probe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Probe({})", self.inner)
    }
}

impl Probe {
    /// A probe over `inner`, counting into `puts`; the gate starts open.
    pub fn new(inner: Arc<dyn ObjectStore>, puts: PutCounts) -> Self {
        Self {
            inner,
            puts,
            modes: Default::default(),
            open: Arc::new(watch::channel(true).0),
            passed: Default::default(),
            finished: Default::default(),
            failing_reads: Default::default(),
        }
    }

    /// From now on every read (GET, not HEAD) of a key containing `needle` fails with a
    /// backend error, a transient one to the daemon.
    pub fn fail_reads_of(&self, needle: &str) {
        *self.failing_reads.lock().unwrap() = Some(needle.to_owned());
    }

    /// Holds every call from now on (calls already at the bucket finish).
    pub fn close(&self) {
        self.open.send_replace(false);
    }

    /// Lets calls through again, the held ones first.
    pub fn open(&self) {
        self.open.send_replace(true);
    }

    /// Calls that finished at the bucket so far.
    pub fn finished(&self) -> usize {
        self.finished.load(Ordering::SeqCst)
    }

    async fn gate(&self) {
        let mut open = self.open.subscribe();
        let _ = open.wait_for(|o| *o).await;
        self.passed.fetch_add(1, Ordering::SeqCst);
    }

    fn done<T>(&self, r: Result<T>) -> Result<T> {
        self.finished.fetch_add(1, Ordering::SeqCst);
        r
    }
}

#[async_trait]
impl ObjectStore for Probe {
    async fn put_opts(&self, location: &Path, payload: PutPayload, opts: PutOptions) -> Result<PutResult> {
        self.gate().await;
        let mode = match &opts.mode {
            object_store::PutMode::Overwrite => "Overwrite",
            object_store::PutMode::Create => "Create",
            object_store::PutMode::Update(_) => "Update",
        };
        self.modes.lock().unwrap().push((location.to_string(), mode.to_owned()));
        let r = self.inner.put_opts(location, payload, opts).await;
        if r.is_ok() {
            *self.puts.lock().unwrap().entry(location.to_string()).or_default() += 1;
        }
        self.done(r)
    }

    async fn put_multipart_opts(&self, location: &Path, opts: PutMultipartOptions) -> Result<Box<dyn MultipartUpload>> {
        self.gate().await;
        let r = self.inner.put_multipart_opts(location, opts).await;
        self.done(r)
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        self.gate().await;
        let failing = self.failing_reads.lock().unwrap().clone();
        if !options.head && failing.is_some_and(|n| location.as_ref().contains(&n)) {
            let source = format!("{location}: the probe fails this read").into();
            return self.done(Err(object_store::Error::Generic { store: "probe", source }));
        }
        let r = self.inner.get_opts(location, options).await;
        self.done(r)
    }

    fn delete_stream(&self, locations: BoxStream<'static, Result<Path>>) -> BoxStream<'static, Result<Path>> {
        let (probe, inner) = (self.clone(), self.inner.clone());
        futures::stream::once(async move {
            probe.gate().await;
            inner.delete_stream(locations)
        })
        .flatten()
        .boxed()
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        let (probe, inner, prefix) = (self.clone(), self.inner.clone(), prefix.cloned());
        futures::stream::once(async move {
            probe.gate().await;
            inner.list(prefix.as_ref())
        })
        .flatten()
        .boxed()
    }

    fn list_with_offset(&self, prefix: Option<&Path>, offset: &Path) -> BoxStream<'static, Result<ObjectMeta>> {
        let (probe, inner, prefix, offset) = (self.clone(), self.inner.clone(), prefix.cloned(), offset.clone());
        futures::stream::once(async move {
            probe.gate().await;
            inner.list_with_offset(prefix.as_ref(), &offset)
        })
        .flatten()
        .boxed()
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        self.gate().await;
        let r = self.inner.list_with_delimiter(prefix).await;
        self.done(r)
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        self.gate().await;
        let r = self.inner.copy_opts(from, to, options).await;
        self.done(r)
    }
}
