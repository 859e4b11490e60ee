//! A deadline on request bodies: a client that sends its headers and then trickles (or
//! stops sending) the body is cut off `server.timeout_seconds` after the request began.
//!
//! actix-web bounds the time to receive a request's head (`client_request_timeout`) but
//! not its body, so without this a slow client could hold a connection and a handler
//! forever. The body stream fails with `TimedOut`, which the JSON extractor's error
//! handler turns into `408 request_timeout`.

use std::time::Duration;

use actix_web::dev::{Payload, ServiceRequest, ServiceResponse};
use actix_web::error::PayloadError;
use actix_web::middleware::Next;
use actix_web::{Error, HttpMessage, body::MessageBody};
use futures::StreamExt;

/// The message a timed-out body reports.
const TIMED_OUT: &str = "request body not received within server.timeout_seconds";

/// Middleware body (for `actix_web::middleware::from_fn`): wraps the payload in the deadline.
pub async fn limit_body_time(
    timeout: Duration,
    mut req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, Error> {
    let payload = req.take_payload();
    let deadline = tokio::time::Instant::now() + timeout;
    let stream = futures::stream::unfold(Some(payload), move |payload| async move {
        let mut payload = payload?;
        match tokio::time::timeout_at(deadline, payload.next()).await {
            Ok(item) => item.map(|chunk| (chunk, Some(payload))),
            Err(_) => {
                let e = std::io::Error::new(std::io::ErrorKind::TimedOut, TIMED_OUT);
                Some((Err(PayloadError::Io(e)), None))
            }
        }
    });
    req.set_payload(Payload::Stream { payload: Box::pin(stream) });
    next.call(req).await
}

/// True when a payload error is this deadline's.
pub fn is_timeout(e: &PayloadError) -> bool {
    matches!(e, PayloadError::Io(io) if io.kind() == std::io::ErrorKind::TimedOut)
}
