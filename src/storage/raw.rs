//! The raw S3 client: the bucket's listing, and every request for a key that
//! `object_store` cannot name, sent as signed HTTP requests of our own.
//!
//! S3 and R2 allow any UTF-8 key: `a//b.jpg`, `./x.jpg`, `../x.jpg`, a TAB or another
//! control character. `object_store`'s `Path` refuses such keys, so its listing of a
//! bucket holding one fails outright, and its URLs would change them (`a//b` collapsed,
//! `.` and `..` percent-encoded into other keys; its HTTP client's URL parser removes
//! dot segments). Here the listing is a ListObjectsV2 of our own (`encoding-type=url`,
//! read by [`page`]), and a key that `object_store` cannot round-trip goes out with its
//! path exactly as stored, percent-encoded but never normalised, signed by [`sign`]
//! (SigV4) and sent through hyper, whose `Uri` keeps the path as given. Every other key
//! stays on `object_store`.
//!
//! The same rules hold as for `object_store`'s requests: each attempt takes a place in
//! the bucket's request window ([`RequestLimiter`]) until its body is read and reports a
//! throttle to it; 5xx, 429, timeouts and connection errors are retried with doubling,
//! jittered backoff within `max_retries` and `retry_timeout`; the answer becomes the same
//! [`StorageError`]s (404 not found, 412 a lost condition, the rest a transient backend
//! error). Errors name the operation, the key and the store's status and code, never a
//! header: the credentials appear in none of them.

mod page;
mod reply;
mod sign;
#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::Utc;
use futures::stream::{self, BoxStream, StreamExt};
use http::{HeaderMap, Method, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use self::page::Entry;
use self::reply::{content_length, generic, info_of, jittered, s3_error, transport};
use self::sign::Credentials;
use super::error::{ObjectInfo, StorageError};
use super::limit::RequestLimiter;
use crate::config::{RetrySettings, S3Config};

/// The longest backoff between two attempts (as object_store's).
const MAX_BACKOFF: Duration = Duration::from_secs(15);
/// The largest listing page read (1,000 keys of 1,024 bytes, XML-escaped, fit easily).
const MAX_PAGE_BYTES: usize = 16 << 20;

/// What a write requires of the object there (`If-None-Match: *`, `If-Match`).
#[derive(Debug, Clone)]
pub(crate) enum Write {
    Overwrite,
    Create,
    Update(String),
}

/// A bucket's raw client. Cheap to clone.
#[derive(Clone, Debug)]
pub(crate) struct RawS3 {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    client: Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>,
    /// `scheme://authority` of every request (the bucket's host when virtual-hosted).
    origin: String,
    /// The `Host` header, as signed.
    host: String,
    /// `/bucket` (path style) or empty (virtual-hosted).
    base: String,
    creds: Credentials,
    limiter: RequestLimiter,
    retry: RetrySettings,
}

/// A finished request: its status, headers and (for a body that was read) body.
struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

/// One request, before it is signed.
struct Call<'a> {
    op: &'static str,
    method: Method,
    key: Option<&'a str>,
    query: Vec<(&'a str, &'a str)>,
    headers: Vec<(&'a str, String)>,
    body: Bytes,
    /// The largest body read; a larger one is left unread (`get` answers `TooLarge`).
    max_body: usize,
}

impl RawS3 {
    /// The raw client of `c`'s bucket, its requests in `limiter`'s window.
    pub(crate) fn new(c: &S3Config, limiter: RequestLimiter) -> Result<Self, StorageError> {
        let setup = |e: String| StorageError::Setup(format!("S3 bucket {} at {}: {e}", c.bucket, c.endpoint));
        let url = url::Url::parse(&c.endpoint).map_err(|e| setup(format!("endpoint: {e}")))?;
        let host = url.host_str().ok_or_else(|| setup("the endpoint has no host".into()))?;
        let authority = match url.port() {
            Some(port) => format!("{host}:{port}"),
            None => host.to_owned(),
        };
        // As object_store addresses the bucket: virtual-hosted, the endpoint names the
        // bucket already (`https://bucket.host`); path style, the bucket follows it.
        let path = url.path().trim_end_matches('/');
        let base = if c.virtual_hosted_style { path.to_owned() } else { format!("{path}/{}", c.bucket) };
        let host = authority;
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
            .with_safe_default_protocol_versions()
            .and_then(rustls_platform_verifier::BuilderVerifierExt::with_platform_verifier)
            .map_err(|e| setup(format!("TLS: {e}")))?
            .with_no_client_auth();
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        // As reqwest (object_store's client) does: a request is never held back waiting
        // for the previous packet's acknowledgement.
        http.set_nodelay(true);
        http.set_connect_timeout(Some(c.retry.request_timeout));
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let client =
            Client::builder(TokioExecutor::new()).pool_max_idle_per_host(c.retry.max_requests.max(1)).build(connector);
        let creds = Credentials {
            access_key: c.access_key.expose().to_owned(),
            secret_key: c.secret_key.expose().to_owned(),
            region: c.region.clone(),
        };
        let origin = format!("{}://{host}", url.scheme());
        let retry = c.retry.clone();
        Ok(Self { inner: Arc::new(Inner { client, origin, host, base, creds, limiter, retry }) })
    }

    /// Streams the objects whose keys start with `prefix`, after `start_after`, in key
    /// order, page by page; with `one_level`, only those with no further `/` after the
    /// prefix. An entry that cannot be read comes as a [`StorageError::Unlistable`] item
    /// and the listing goes on; a page that fails (after its retries) ends the listing
    /// with its error.
    pub(crate) fn list(
        &self,
        prefix: Option<String>,
        start_after: Option<String>,
        one_level: bool,
    ) -> BoxStream<'static, Result<ObjectInfo, StorageError>> {
        let me = self.clone();
        // None: the listing is over.
        let first = Some(None::<String>);
        stream::unfold(first, move |token| {
            let (me, prefix, start_after) = (me.clone(), prefix.clone(), start_after.clone());
            async move {
                let token = token?;
                let shown = prefix.clone().unwrap_or_default();
                let mut query = vec![("list-type", "2"), ("encoding-type", "url")];
                if let Some(p) = prefix.as_deref() {
                    query.push(("prefix", p));
                }
                if one_level {
                    // The sub-folders come as CommonPrefixes, which the page skips.
                    query.push(("delimiter", "/"));
                }
                match token.as_deref() {
                    Some(t) => query.push(("continuation-token", t)),
                    None => {
                        if let Some(s) = start_after.as_deref() {
                            query.push(("start-after", s));
                        }
                    }
                }
                let call = Call::new("list", Method::GET, None).query(query).max_body(MAX_PAGE_BYTES);
                let page = match me.send(call, &shown).await {
                    Ok(answer) => std::str::from_utf8(&answer.body).map_err(|e| e.to_string()).and_then(page::parse),
                    Err(e) => return Some((vec![Err(e)], None)),
                };
                match page {
                    Ok(page) => {
                        let items = page.entries.into_iter().map(|e| match e {
                            Entry::Object(info) => Ok(info),
                            Entry::Unreadable { key, reason } => Err(StorageError::Unlistable { key, reason }),
                        });
                        Some((items.collect(), page.next.map(Some)))
                    }
                    Err(e) => Some((vec![Err(generic("list", &shown, format!("unreadable listing page: {e}")))], None)),
                }
            }
        })
        .flat_map(stream::iter)
        .boxed()
    }

    /// Metadata of `key` and its Content-Type.
    pub(crate) async fn head(&self, key: &str) -> Result<(ObjectInfo, Option<String>), StorageError> {
        let answer = self.send(Call::new("head", Method::HEAD, Some(key)), key).await?;
        let content_type = answer.headers.get(http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok());
        Ok((info_of(key, &answer.headers)?, content_type.map(str::to_owned)))
    }

    /// Reads `key` whole, refusing (before reading the body) one over `max_bytes`.
    pub(crate) async fn get(&self, key: &str, max_bytes: u64) -> Result<(ObjectInfo, Bytes), StorageError> {
        let max = usize::try_from(max_bytes).unwrap_or(usize::MAX);
        let answer = self.send(Call::new("get", Method::GET, Some(key)).max_body(max), key).await?;
        let info = info_of(key, &answer.headers)?;
        if info.size > max_bytes {
            return Err(StorageError::TooLarge { key: key.to_owned(), size: info.size, max: max_bytes });
        }
        if answer.body.len() as u64 != info.size {
            // A short read must never become a short WebP.
            let e = format!("body was {} bytes, expected {}", answer.body.len(), info.size);
            return Err(generic("get", key, e));
        }
        Ok((info, answer.body))
    }

    /// The user metadata `name` of `key` (`x-amz-meta-<name>`), as stored.
    pub(crate) async fn metadata(&self, key: &str, name: &str) -> Result<Option<String>, StorageError> {
        let answer = self.send(Call::new("head", Method::HEAD, Some(key)), key).await?;
        let header = format!("x-amz-meta-{name}");
        Ok(answer.headers.get(header.as_str()).and_then(|v| v.to_str().ok()).map(str::to_owned))
    }

    /// Writes `data` under `key` with `content_type` (and the user metadata `meta`, as
    /// `x-amz-meta-<name>: <value>`, values ASCII) if `mode` allows; the new ETag.
    pub(crate) async fn put(
        &self,
        key: &str,
        data: Bytes,
        content_type: &str,
        mode: Write,
        meta: Option<(&str, String)>,
    ) -> Result<Option<String>, StorageError> {
        let op = if matches!(mode, Write::Update(_)) { "update" } else { "put" };
        let mut headers = vec![("content-type", content_type.to_owned())];
        let meta_header = meta.as_ref().map(|(name, _)| format!("x-amz-meta-{name}"));
        if let (Some(header), Some((_, value))) = (&meta_header, meta) {
            headers.push((header.as_str(), value));
        }
        match mode {
            Write::Overwrite => {}
            Write::Create => headers.push(("if-none-match", "*".to_owned())),
            Write::Update(etag) => headers.push(("if-match", etag)),
        }
        let call = Call { headers, body: data, ..Call::new(op, Method::PUT, Some(key)) };
        let answer = self.send(call, key).await?;
        Ok(answer.headers.get(http::header::ETAG).and_then(|v| v.to_str().ok()).map(str::to_owned))
    }

    /// Deletes `key`; a missing one is not an error.
    pub(crate) async fn delete(&self, key: &str) -> Result<(), StorageError> {
        match self.send(Call::new("delete", Method::DELETE, Some(key)), key).await {
            Ok(_) | Err(StorageError::NotFound { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Sends `call` with its retries; a 2xx answer, or the error its last attempt became.
    async fn send(&self, call: Call<'_>, shown: &str) -> Result<Answer, StorageError> {
        let retry = &self.inner.retry;
        let started = Instant::now();
        let mut backoff = retry.initial_backoff;
        let mut attempt = 0;
        loop {
            let result = match tokio::time::timeout(retry.request_timeout, self.attempt(&call)).await {
                Ok(r) => r,
                Err(_) => Err(format!("no answer within {:?}", retry.request_timeout)),
            };
            let retryable = match &result {
                Ok(a) => a.status.is_server_error() || a.status == StatusCode::TOO_MANY_REQUESTS,
                Err(_) => true,
            };
            attempt += 1;
            if !retryable || attempt > retry.max_retries || started.elapsed() + backoff > retry.retry_timeout {
                return self.finish(&call, shown, result, attempt);
            }
            tokio::time::sleep(jittered(backoff)).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    /// What the last attempt's result means for the caller.
    fn finish(
        &self,
        call: &Call<'_>,
        key: &str,
        result: Result<Answer, String>,
        attempts: usize,
    ) -> Result<Answer, StorageError> {
        let answer = match result {
            Ok(a) => a,
            Err(e) => return Err(generic(call.op, key, format!("{e} (after {attempts} attempts)"))),
        };
        let status = answer.status;
        if status.is_success() {
            return Ok(answer);
        }
        let source = || s3_error(status, &answer.body);
        Err(match status {
            // A listing answered 404 names no object: the bucket itself is missing.
            StatusCode::NOT_FOUND if call.op == "list" => StorageError::NoBucket,
            StatusCode::NOT_FOUND => StorageError::NotFound { key: key.to_owned() },
            StatusCode::PRECONDITION_FAILED => StorageError::backend(
                call.op,
                key,
                object_store::Error::Precondition { path: key.to_owned(), source: source().into() },
            ),
            _ if attempts > 1 => generic(call.op, key, format!("{} (after {attempts} attempts)", source())),
            _ => generic(call.op, key, source()),
        })
    }

    /// One attempt, inside the request window until its body has been read.
    async fn attempt(&self, call: &Call<'_>) -> Result<Answer, String> {
        let inner = &self.inner;
        let path = match call.key {
            Some(key) => format!("{}/{}", inner.base, sign::encode_path(key)),
            None if inner.base.is_empty() => "/".to_owned(),
            None => inner.base.clone(),
        };
        let query = sign::canonical_query(&call.query);
        let payload = if call.body.is_empty() { sign::EMPTY_SHA256.to_owned() } else { sign::sha256_hex(&call.body) };
        let headers: Vec<(&str, &str)> = call.headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let signed = sign::Request {
            method: call.method.as_str(),
            path: &path,
            query: &call.query,
            headers: &headers,
            host: &inner.host,
            payload_sha256: &payload,
        };
        let auth = sign::sign(&signed, &inner.creds, Utc::now());
        let uri = if query.is_empty() {
            format!("{}{path}", inner.origin)
        } else {
            format!("{}{path}?{query}", inner.origin)
        };
        let mut builder = http::Request::builder().method(call.method.clone()).uri(&uri).header("host", &inner.host);
        for (k, v) in headers.iter().copied().chain(auth.iter().map(|(k, v)| (*k, v.as_str()))) {
            builder = builder.header(k, v);
        }
        let request =
            builder.body(Full::new(call.body.clone())).map_err(|e| format!("cannot build the request: {e}"))?;

        let _permit = inner.limiter.acquire().await;
        let response = inner.client.request(request).await.map_err(|e| transport(&e))?;
        let status = response.status();
        if status == StatusCode::SERVICE_UNAVAILABLE || status == StatusCode::TOO_MANY_REQUESTS {
            inner.limiter.throttled(status.as_u16());
        } else {
            inner.limiter.succeeded();
        }
        let (parts, body) = response.into_parts();
        // Over the limit: the body is left unread (the caller answers `TooLarge`).
        if status.is_success() && content_length(&parts.headers).is_some_and(|n| n > call.max_body as u64) {
            return Ok(Answer { status, headers: parts.headers, body: Bytes::new() });
        }
        let limit = if status.is_success() { call.max_body } else { 64 << 10 };
        let body = http_body_util::Limited::new(body, limit)
            .collect()
            .await
            .map_err(|e| format!("reading the answer: {e}"))?
            .to_bytes();
        Ok(Answer { status, headers: parts.headers, body })
    }
}

impl<'a> Call<'a> {
    fn new(op: &'static str, method: Method, key: Option<&'a str>) -> Self {
        Self { op, method, key, query: Vec::new(), headers: Vec::new(), body: Bytes::new(), max_body: 64 << 10 }
    }

    fn query(self, query: Vec<(&'a str, &'a str)>) -> Self {
        Self { query, ..self }
    }

    fn max_body(self, max_body: usize) -> Self {
        Self { max_body, ..self }
    }
}
