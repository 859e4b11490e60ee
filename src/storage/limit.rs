//! The request limiter: at most a window of S3 requests open at once, the window sized
//! by AIMD — halved when the store throttles (`503 SlowDown`, `429`), grown back by one
//! for each window of requests that went through.
//!
//! It wraps object_store's HTTP client ([`LimitedConnector`]), so it sees every attempt
//! — listing pages, GETs, PUTs, the state's and the cluster's requests, and each retry
//! of a throttled request — and the status the store answered, before object_store's
//! own retry (which backs off and tries again, as before) decides anything. A request
//! holds its permit until its response body has been read or dropped, so a window of
//! 64 means 64 transfers, not 64 request headers.
//!
//! Only the first throttle of a burst counts: a store that throttles answers many of the
//! window's requests at once, and halving once per answer would collapse the window to
//! one. So the window is halved at most once per [`COOLDOWN`]; later throttles in it are
//! counted but change nothing.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use object_store::client::{
    ClientOptions, HttpClient, HttpConnector, HttpError, HttpRequest, HttpResponse, HttpResponseBody, HttpService,
    ReqwestConnector,
};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// After a decrease, throttles are not acted on again for this long.
pub const COOLDOWN: Duration = Duration::from_secs(1);

/// Where the window stands (for `/metrics` and logs).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LimitSnapshot {
    /// Requests allowed at once now.
    pub limit: usize,
    /// The ceiling (`pipeline.max_requests`).
    pub max: usize,
    /// Requests open now.
    pub open: usize,
    /// Throttled answers seen (503 SlowDown, 429), acted on or not.
    pub throttled: u64,
    /// Times the window was halved.
    pub decreases: u64,
}

/// The shared limiter. Cheap to clone.
#[derive(Debug, Clone)]
pub struct RequestLimiter {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    max: usize,
    /// Holds `limit + debt` permits: permits owed back are forgotten as they return.
    permits: Arc<Semaphore>,
    window: Mutex<Window>,
    throttled: AtomicU64,
    decreases: AtomicU64,
}

#[derive(Debug)]
struct Window {
    limit: usize,
    /// Permits handed out while the window was larger, to forget when they come back.
    debt: usize,
    /// Requests that went through since the window last grew (or shrank).
    successes: usize,
    last_decrease: Option<Instant>,
}

/// One open request's place in the window; returned when dropped.
#[derive(Debug)]
pub struct RequestPermit {
    permit: Option<OwnedSemaphorePermit>,
    inner: Arc<Inner>,
}

impl Drop for RequestPermit {
    fn drop(&mut self) {
        let Some(permit) = self.permit.take() else { return };
        let mut w = self.inner.window.lock().expect("never poisoned");
        if w.debt > 0 {
            w.debt -= 1;
            permit.forget();
        }
    }
}

impl RequestLimiter {
    /// A window of `max` requests (at least 1), starting full.
    pub fn new(max: usize) -> Self {
        let max = max.max(1);
        let window = Window { limit: max, debt: 0, successes: 0, last_decrease: None };
        Self {
            inner: Arc::new(Inner {
                max,
                permits: Arc::new(Semaphore::new(max)),
                window: Mutex::new(window),
                throttled: AtomicU64::new(0),
                decreases: AtomicU64::new(0),
            }),
        }
    }

    /// Waits for a place in the window (first come, first served).
    pub async fn acquire(&self) -> RequestPermit {
        let permit = self.inner.permits.clone().acquire_owned().await.expect("the semaphore is never closed");
        RequestPermit { permit: Some(permit), inner: self.inner.clone() }
    }

    /// The store throttled a request: halves the window, unless it was halved within
    /// [`COOLDOWN`] (the same burst).
    pub fn throttled(&self, status: u16) {
        self.inner.throttled.fetch_add(1, Ordering::Relaxed);
        let mut w = self.inner.window.lock().expect("never poisoned");
        let now = Instant::now();
        if w.last_decrease.is_some_and(|t| now.duration_since(t) < COOLDOWN) {
            return;
        }
        w.last_decrease = Some(now);
        w.successes = 0;
        let from = w.limit;
        let to = (from / 2).max(1);
        if to == from {
            return;
        }
        w.limit = to;
        // Take back the free permits at once; the ones in use are forgotten on return.
        let freed = self.inner.permits.forget_permits(from - to);
        w.debt += from - to - freed;
        self.inner.decreases.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(status, from, to, max = self.inner.max, "Storage throttled: request concurrency lowered");
    }

    /// A request went through (any answer but a throttle): after a whole window of
    /// them, the window grows by one, up to the ceiling.
    pub fn succeeded(&self) {
        let mut w = self.inner.window.lock().expect("never poisoned");
        if w.limit >= self.inner.max {
            return;
        }
        w.successes += 1;
        if w.successes < w.limit {
            return;
        }
        w.successes = 0;
        w.limit += 1;
        if w.debt > 0 {
            w.debt -= 1;
        } else {
            self.inner.permits.add_permits(1);
        }
        if w.limit == self.inner.max {
            tracing::info!(limit = w.limit, "Storage request concurrency recovered to its maximum");
        } else {
            tracing::debug!(limit = w.limit, "Storage request concurrency raised");
        }
    }

    pub fn snapshot(&self) -> LimitSnapshot {
        let w = self.inner.window.lock().expect("never poisoned");
        let available = self.inner.permits.available_permits();
        LimitSnapshot {
            limit: w.limit,
            max: self.inner.max,
            open: (w.limit + w.debt).saturating_sub(available),
            throttled: self.inner.throttled.load(Ordering::Relaxed),
            decreases: self.inner.decreases.load(Ordering::Relaxed),
        }
    }
}

/// Whether an answer is the store asking us to slow down.
fn is_throttle(status: u16) -> bool {
    status == 503 || status == 429
}

/// object_store's reqwest client, each request inside the window.
#[derive(Debug)]
pub struct LimitedConnector {
    pub limiter: RequestLimiter,
}

impl HttpConnector for LimitedConnector {
    fn connect(&self, options: &ClientOptions) -> object_store::Result<HttpClient> {
        let inner = ReqwestConnector::default().connect(options)?;
        Ok(HttpClient::new(Limited { inner, limiter: self.limiter.clone() }))
    }
}

#[derive(Debug)]
struct Limited {
    inner: HttpClient,
    limiter: RequestLimiter,
}

type Answer<'a> = Pin<Box<dyn Future<Output = Result<HttpResponse, HttpError>> + Send + 'a>>;

impl HttpService for Limited {
    // `HttpService` is an `async_trait`: this is the signature it expands to.
    fn call<'s, 'a>(&'s self, req: HttpRequest) -> Answer<'a>
    where
        's: 'a,
        Self: 'a,
    {
        Box::pin(async move {
            let permit = self.limiter.acquire().await;
            let res = self.inner.execute(req).await?;
            let status = res.status().as_u16();
            if is_throttle(status) {
                self.limiter.throttled(status);
            } else {
                self.limiter.succeeded();
            }
            // The permit stays with the body until it has been read or dropped.
            Ok(res.map(|body| HttpResponseBody::new(Held { body, _permit: permit })))
        })
    }
}

/// A response body that keeps its request's place in the window.
struct Held {
    body: HttpResponseBody,
    _permit: RequestPermit,
}

impl Body for Held {
    type Data = Bytes;
    type Error = HttpError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, HttpError>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_throttle_halves_the_window_once_per_burst_and_successes_grow_it_back() {
        let l = RequestLimiter::new(8);
        let held: Vec<_> = futures::future::join_all((0..6).map(|_| l.acquire())).await;
        l.throttled(503);
        l.throttled(503); // same burst: ignored
        let s = l.snapshot();
        assert_eq!((s.limit, s.max, s.open, s.throttled, s.decreases), (4, 8, 6, 2, 1));
        // 6 open, limit 4: nothing more until 3 have returned (2 forgotten as debt).
        drop(held);
        let s = l.snapshot();
        assert_eq!((s.limit, s.open), (4, 0));
        let four: Vec<_> = futures::future::join_all((0..4).map(|_| l.acquire())).await;
        let fifth = tokio::time::timeout(Duration::from_millis(50), l.acquire()).await;
        assert!(fifth.is_err(), "the window is 4");
        // A window of successes adds one.
        for _ in 0..4 {
            l.succeeded();
        }
        assert_eq!(l.snapshot().limit, 5);
        let fifth = tokio::time::timeout(Duration::from_millis(50), l.acquire()).await;
        assert!(fifth.is_ok(), "the window grew to 5");
        drop(four);
        for _ in 0..100 {
            l.succeeded();
        }
        assert_eq!(l.snapshot().limit, 8, "never past the ceiling");
    }

    #[tokio::test]
    async fn the_window_never_falls_below_one() {
        let l = RequestLimiter::new(2);
        l.throttled(429);
        assert_eq!(l.snapshot().limit, 1);
        l.inner.window.lock().unwrap().last_decrease = None;
        l.throttled(429);
        assert_eq!(l.snapshot().limit, 1);
        let _one = l.acquire().await;
        assert!(tokio::time::timeout(Duration::from_millis(50), l.acquire()).await.is_err());
    }
}
