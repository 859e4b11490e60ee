//! The raw client against real sockets on 127.0.0.1: addressing, an unreachable store,
//! and a throttled listing page retried inside the request window.

use std::time::Duration;

use futures::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;

fn config(endpoint: &str, virtual_hosted_style: bool) -> S3Config {
    S3Config {
        endpoint: endpoint.into(),
        bucket: "photos".into(),
        buckets: vec!["photos".into()],
        region: "auto".into(),
        access_key: crate::secret::Secret::new("AKID"),
        secret_key: crate::secret::Secret::new("very-secret"),
        virtual_hosted_style,
        retry: Default::default(),
    }
}

#[test]
fn the_bucket_is_addressed_as_object_store_addresses_it() {
    let raw = RawS3::new(&config("http://127.0.0.1:9000/", false), RequestLimiter::new(4)).unwrap();
    let i = &raw.inner;
    assert_eq!(
        (i.origin.as_str(), i.host.as_str(), i.base.as_str()),
        ("http://127.0.0.1:9000", "127.0.0.1:9000", "/photos")
    );
    let raw = RawS3::new(&config("https://photos.acc.r2.cloudflarestorage.com", true), RequestLimiter::new(4)).unwrap();
    let i = &raw.inner;
    assert_eq!(
        (i.origin.as_str(), i.host.as_str(), i.base.as_str()),
        ("https://photos.acc.r2.cloudflarestorage.com", "photos.acc.r2.cloudflarestorage.com", "")
    );
    assert!(!format!("{raw:?}").contains("very-secret"), "Debug never shows the secret");
}

#[tokio::test]
async fn a_store_that_cannot_be_reached_is_a_transient_error_naming_the_key_not_the_secret() {
    // Port 9 (discard) on 127.0.0.1: nothing listens, the connection is refused.
    let mut c = config("http://127.0.0.1:9", false);
    c.retry.max_retries = 1;
    c.retry.initial_backoff = Duration::from_millis(1);
    let limiter = RequestLimiter::new(4);
    let raw = RawS3::new(&c, limiter.clone()).unwrap();
    let err = raw.get("./x.jpg", 100).await.unwrap_err();
    assert!(err.is_transient(), "{err}");
    let text = format!("{err} {err:?}");
    assert!(text.contains("./x.jpg") && text.contains("after 2 attempts"), "{text}");
    assert!(!text.contains("very-secret") && !text.contains("AKID"), "{text}");
    assert_eq!(limiter.snapshot().open, 0, "no place in the window left taken");
    let listed: Vec<_> = raw.list(None, None, false).collect().await;
    assert_eq!(listed.len(), 1, "one error ends the listing: {listed:?}");
}

/// Serves one HTTP answer per connection from `answers`, in turn; returns the endpoint
/// and the request lines it received.
async fn serve(answers: Vec<(u16, &'static str)>) -> (String, Arc<std::sync::Mutex<Vec<String>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = seen.clone();
    tokio::spawn(async move {
        for (status, body) in answers {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut request = vec![0u8; 8192];
            let n = socket.read(&mut request).await.unwrap();
            let text = String::from_utf8_lossy(&request[..n]).into_owned();
            log.lock().unwrap().push(text.lines().next().unwrap_or_default().to_owned());
            let answer = format!(
                "HTTP/1.1 {status} X\r\ncontent-type: application/xml\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            socket.write_all(answer.as_bytes()).await.unwrap();
        }
    });
    (format!("http://{addr}"), seen)
}

const SLOW_DOWN: &str = "<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>";
const PAGE: &str = "<ListBucketResult><IsTruncated>false</IsTruncated><EncodingType>url</EncodingType>\
    <Contents><Key>./x.jpg</Key><LastModified>2026-01-02T03:04:05.000Z</LastModified><ETag>\"e\"</ETag>\
    <Size>3</Size></Contents></ListBucketResult>";

#[tokio::test]
async fn a_throttled_listing_page_is_retried_and_narrows_the_request_window() {
    let (endpoint, seen) = serve(vec![(503, SLOW_DOWN), (200, PAGE)]).await;
    let mut c = config(&endpoint, false);
    c.retry.initial_backoff = Duration::from_millis(1);
    let limiter = RequestLimiter::new(8);
    let raw = RawS3::new(&c, limiter.clone()).unwrap();
    let listed: Vec<_> = raw.list(None, Some("a b".into()), false).collect().await;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].as_ref().unwrap().key, "./x.jpg");
    let s = limiter.snapshot();
    assert_eq!((s.throttled, s.decreases, s.limit, s.open), (1, 1, 4, 0), "{s:?}");
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert_eq!(seen[0], "GET /photos?encoding-type=url&list-type=2&start-after=a%20b HTTP/1.1");
}

#[tokio::test]
async fn a_page_refused_for_good_ends_the_listing_with_the_stores_reason() {
    let (endpoint, seen) =
        serve(vec![(403, "<Error><Code>AccessDenied</Code><Message>Access Denied</Message></Error>")]).await;
    let raw = RawS3::new(&config(&endpoint, false), RequestLimiter::new(8)).unwrap();
    let listed: Vec<_> = raw.list(Some("p/".into()), None, true).collect().await;
    assert_eq!(listed.len(), 1, "{listed:?}");
    let err = listed[0].as_ref().unwrap_err().to_string();
    assert_eq!(err, "list p/: Generic S3 error: HTTP 403: AccessDenied: Access Denied");
    assert_eq!(seen.lock().unwrap().len(), 1, "a refusal is not retried");
}

#[tokio::test]
async fn an_object_key_goes_out_exactly_as_stored() {
    let (endpoint, seen) = serve(vec![(404, ""), (404, ""), (404, "")]).await;
    let raw = RawS3::new(&config(&endpoint, false), RequestLimiter::new(8)).unwrap();
    for key in ["./x.jpg", "../x.jpg", "a//b\tc.jpg"] {
        assert!(matches!(raw.head(key).await, Err(StorageError::NotFound { .. })));
    }
    let seen = seen.lock().unwrap().clone();
    assert_eq!(
        seen,
        ["HEAD /photos/./x.jpg HTTP/1.1", "HEAD /photos/../x.jpg HTTP/1.1", "HEAD /photos/a//b%09c.jpg HTTP/1.1"]
    );
}
