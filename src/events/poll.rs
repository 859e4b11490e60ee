//! The steps every pulling event source (SQS, Cloudflare Queues) shares in its loop: take
//! free handling slots for the next batch, and back off after a failed receive.

use std::fmt::Display;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};

use super::status::SourceStatus;

/// Waits for one free handling slot, then takes as many more as are free, up to `max`:
/// a batch is asked for only when it can be handled at once. `None` once `stop` fires.
pub async fn batch_permits(
    slots: &Arc<Semaphore>,
    max: usize,
    stop: &mut watch::Receiver<bool>,
) -> Option<Vec<OwnedSemaphorePermit>> {
    let first = tokio::select! {
        p = slots.clone().acquire_owned() => p.expect("never closed"),
        _ = stop.changed() => return None,
    };
    let mut permits = vec![first];
    while permits.len() < max {
        match slots.clone().try_acquire_owned() {
            Ok(p) => permits.push(p),
            Err(_) => break,
        }
    }
    Some(permits)
}

/// The wait after a failed receive: 0.5 s, doubling to at most 30 s, back to 0.5 s after
/// a success.
pub struct Backoff(Duration);

impl Default for Backoff {
    fn default() -> Self {
        Self(Self::FIRST)
    }
}

impl Backoff {
    const FIRST: Duration = Duration::from_millis(500);
    const MAX: Duration = Duration::from_secs(30);

    /// A receive succeeded: the source is connected, the next failure waits 0.5 s.
    pub fn succeeded(&mut self, status: &SourceStatus) {
        status.connected(true);
        self.0 = Self::FIRST;
    }

    /// A receive failed: marks the source disconnected with `error`, logs `what` at WARN,
    /// and waits (cut short by `stop`) before the next attempt.
    pub async fn failed(
        &mut self,
        status: &SourceStatus,
        error: &dyn Display,
        what: &str,
        stop: &mut watch::Receiver<bool>,
    ) {
        status.connected(false);
        status.error(error.to_string());
        tracing::warn!(error = %error, retry_in_ms = self.0.as_millis() as u64, "{what}");
        tokio::select! {
            _ = tokio::time::sleep(self.0) => {}
            _ = stop.changed() => {}
        }
        self.0 = (self.0 * 2).min(Self::MAX);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_batch_takes_every_free_slot_up_to_its_maximum_and_none_after_stop() {
        let slots = Arc::new(Semaphore::new(3));
        let (tx, mut stop) = watch::channel(false);
        assert_eq!(batch_permits(&slots, 10, &mut stop).await.unwrap().len(), 3);
        let two = batch_permits(&slots, 2, &mut stop).await.unwrap();
        assert_eq!(two.len(), 2);
        let held = batch_permits(&slots, 10, &mut stop).await.unwrap();
        assert_eq!(held.len(), 1, "the third slot, the other two held");
        // No slot free: only stop ends the wait.
        tx.send(true).unwrap();
        assert!(batch_permits(&slots, 10, &mut stop).await.is_none());
    }

    #[tokio::test]
    async fn backoff_doubles_to_thirty_seconds_and_resets_after_a_success() {
        let status = SourceStatus::default();
        // A closed stop channel cuts every wait short.
        let (tx, mut stop) = watch::channel(false);
        drop(tx);
        let mut b = Backoff::default();
        let mut waits = Vec::new();
        for _ in 0..8 {
            waits.push(b.0.as_millis());
            b.failed(&status, &"refused", "Cannot receive", &mut stop).await;
        }
        assert_eq!(waits, [500, 1000, 2000, 4000, 8000, 16000, 30000, 30000]);
        b.succeeded(&status);
        assert_eq!(b.0, Backoff::FIRST);
    }
}
