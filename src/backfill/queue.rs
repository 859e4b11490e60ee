//! Sending `backfill --to-queue`'s batches: the queue behind one small trait ([`Queue`]:
//! SQS's `SendMessageBatch`, Cloudflare Queues' `messages/batch`), the retry rule for
//! what a queue did not take, and the rate limit.
//!
//! SQS answers per entry: the entries it lists as `Failed` are sent again (only those),
//! up to [`Retry::attempts`] calls in all, waiting longer each time; one SQS says is
//! wrong in itself (`SenderFault`) is not sent again. A call that fails whole (the queue
//! unreachable, a 5xx; Cloudflare's batch is all or nothing) is sent again whole by the
//! same rule. What is still not taken after the last attempt is reported, with the
//! queue's reason, never dropped silently.

use std::future::Future;
use std::time::Duration;

use super::message::{Entry, QueueKind, as_json};
use crate::events::cloudflare::QueueClient;
use crate::events::sqs::SqsClient;

/// One entry the queue did not take: its index in the call, why, and whether sending it
/// again can help.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    pub index: usize,
    pub reason: String,
    pub retryable: bool,
}

/// A queue messages can be sent to in batches.
pub trait Queue {
    fn kind(&self) -> QueueKind;
    /// The queue's name as the summary and the cursor file say it (an SQS queue URL,
    /// `<account>/<queue id>` on Cloudflare): never a credential.
    fn name(&self) -> String;
    /// Sends `bodies` in one call. `Ok`: the entries it did not take (none: all sent);
    /// `Err`: the call failed whole.
    fn send(&self, bodies: &[&str]) -> impl Future<Output = Result<Vec<Refused>, String>>;
}

impl Queue for SqsClient {
    fn kind(&self) -> QueueKind {
        QueueKind::Sqs
    }

    fn name(&self) -> String {
        self.queue_url().to_owned()
    }

    async fn send(&self, bodies: &[&str]) -> Result<Vec<Refused>, String> {
        let entries: Vec<(String, String)> =
            bodies.iter().enumerate().map(|(i, b)| (i.to_string(), (*b).to_owned())).collect();
        let rejected = self.send_batch(&entries).await.map_err(|e| e.to_string())?;
        Ok(rejected
            .into_iter()
            .map(|r| Refused {
                index: r.id.parse().unwrap_or(usize::MAX),
                reason: r.reason,
                retryable: !r.sender_fault,
            })
            .collect())
    }
}

impl Queue for QueueClient {
    fn kind(&self) -> QueueKind {
        QueueKind::Cloudflare
    }

    fn name(&self) -> String {
        QueueClient::name(self)
    }

    async fn send(&self, bodies: &[&str]) -> Result<Vec<Refused>, String> {
        let values: Vec<serde_json::Value> = bodies.iter().map(|b| as_json(b)).collect();
        self.send_batch(&values).await.map(|()| Vec::new()).map_err(|e| e.to_string())
    }
}

/// How often a batch is sent before what is left of it is reported failed.
#[derive(Debug, Clone, Copy)]
pub struct Retry {
    /// Calls in all (the first and the retries).
    pub attempts: u32,
    /// The wait before the first retry; doubled before each next one.
    pub backoff: Duration,
}

impl Default for Retry {
    fn default() -> Self {
        Self { attempts: 4, backoff: Duration::from_millis(250) }
    }
}

/// How one batch ended: how many were sent, and the entries that were not, with why.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Sent {
    pub sent: usize,
    pub failed: Vec<(String, String)>,
    /// The last attempt failed whole (the queue unreachable, or refusing every call):
    /// why. The backfill stops there rather than list on for a queue that takes nothing.
    pub down: Option<String>,
}

/// Sends `batch` to `queue`, sending what it does not take again by `retry`.
pub async fn send_batch(queue: &impl Queue, batch: &[Entry], retry: Retry) -> Sent {
    // Indices into `batch` still to send.
    let mut left: Vec<usize> = (0..batch.len()).collect();
    let mut failed = Vec::new();
    let mut down = None;
    let mut wait = retry.backoff;
    for attempt in 1..=retry.attempts.max(1) {
        let bodies: Vec<&str> = left.iter().map(|&i| batch[i].body.as_str()).collect();
        let last = attempt == retry.attempts.max(1);
        match queue.send(&bodies).await {
            Ok(refused) => {
                let mut again = Vec::new();
                for r in refused {
                    // An index the queue made up cannot be placed: count it against no entry.
                    let Some(&i) = left.get(r.index) else { continue };
                    if r.retryable && !last {
                        again.push(i);
                    } else {
                        failed.push((batch[i].key.clone(), r.reason));
                    }
                }
                left = again;
            }
            Err(e) if last => {
                failed.extend(left.drain(..).map(|i| (batch[i].key.clone(), e.clone())));
                down = Some(e);
            }
            Err(e) => {
                tracing::warn!(error = %e, attempt, "Cannot send a backfill batch; sending it again");
            }
        }
        if left.is_empty() {
            break;
        }
        tokio::time::sleep(wait).await;
        wait *= 2;
    }
    failed.sort();
    Sent { sent: batch.len() - failed.len(), failed, down }
}

/// A token bucket: `rate` messages a second on average, a second's worth at once at most
/// (at least one batch). Plain arithmetic over the time it is handed, so it is tested
/// without a clock.
#[derive(Debug)]
pub struct RateLimit {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Duration,
}

impl RateLimit {
    /// `rate` messages a second; `batch`: the largest take.
    pub fn new(rate: f64, batch: usize) -> Self {
        let burst = rate.max(batch as f64);
        Self { rate, burst, tokens: burst, last: Duration::ZERO }
    }

    /// Takes `n` tokens at `now` (time since any fixed start); how long to wait before
    /// sending them.
    pub fn take(&mut self, n: usize, now: Duration) -> Duration {
        let elapsed = now.saturating_sub(self.last).as_secs_f64();
        self.last = self.last.max(now);
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst) - n as f64;
        if self.tokens >= 0.0 { Duration::ZERO } else { Duration::from_secs_f64(-self.tokens / self.rate) }
    }
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;

    use super::*;

    /// For call N and a body: `Some((retryable, reason))` to refuse it.
    type Refuse = Box<dyn Fn(usize, &str) -> Option<(bool, &'static str)>>;

    /// A queue that refuses what `refuse` says for each call (all calls below
    /// `fail_calls` fail whole), recording the bodies of every call.
    struct Fake {
        calls: RefCell<Vec<Vec<String>>>,
        refuse: Refuse,
        fail_calls: usize,
    }

    impl Queue for Fake {
        fn kind(&self) -> QueueKind {
            QueueKind::Sqs
        }
        fn name(&self) -> String {
            "fake".into()
        }
        async fn send(&self, bodies: &[&str]) -> Result<Vec<Refused>, String> {
            let call = self.calls.borrow().len();
            self.calls.borrow_mut().push(bodies.iter().map(|b| b.to_string()).collect());
            if call < self.fail_calls {
                return Err("HTTP 503: unavailable".into());
            }
            Ok(bodies
                .iter()
                .enumerate()
                .filter_map(|(index, b)| {
                    (self.refuse)(call, b).map(|(retryable, reason)| Refused {
                        index,
                        reason: reason.into(),
                        retryable,
                    })
                })
                .collect())
        }
    }

    fn batch(n: usize) -> Vec<Entry> {
        (0..n).map(|i| Entry { key: format!("k{i}"), body: format!("b{i}") }).collect()
    }

    const NOW: Retry = Retry { attempts: 4, backoff: Duration::ZERO };

    #[tokio::test]
    async fn failed_entries_alone_are_sent_again_and_a_sender_fault_is_reported_at_once() {
        // Call 0 refuses b1 (throttled) and b3 (its own fault); call 1 takes b1.
        let fake = Fake {
            calls: Default::default(),
            refuse: Box::new(|call, b| match (call, b) {
                (0, "b1") => Some((true, "ThrottlingException: slow down")),
                (_, "b3") => Some((false, "InvalidMessageContents: bad")),
                _ => None,
            }),
            fail_calls: 0,
        };
        let sent = send_batch(&fake, &batch(5), NOW).await;
        let failed = vec![("k3".into(), "InvalidMessageContents: bad".into())];
        assert_eq!(sent, Sent { sent: 4, failed, down: None });
        assert_eq!(*fake.calls.borrow(), [vec!["b0", "b1", "b2", "b3", "b4"], vec!["b1"]]);
    }

    #[tokio::test]
    async fn an_entry_refused_every_time_is_reported_after_the_last_attempt() {
        let fake = Fake {
            calls: Default::default(),
            refuse: Box::new(|_, b| (b == "b2").then_some((true, "InternalError: try again"))),
            fail_calls: 0,
        };
        let sent = send_batch(&fake, &batch(3), NOW).await;
        let failed = vec![("k2".into(), "InternalError: try again".into())];
        assert_eq!(sent, Sent { sent: 2, failed, down: None }, "the queue answered: not down");
        assert_eq!(fake.calls.borrow().len(), 4, "attempts in all");
        assert!(fake.calls.borrow()[1..].iter().all(|c| c == &["b2"]));
    }

    #[tokio::test]
    async fn a_call_that_fails_whole_is_sent_again_whole_then_reported() {
        let flaky = Fake { calls: Default::default(), refuse: Box::new(|_, _| None), fail_calls: 2 };
        assert_eq!(send_batch(&flaky, &batch(3), NOW).await, Sent { sent: 3, failed: vec![], down: None });
        assert_eq!(flaky.calls.borrow().len(), 3);
        let down = Fake { calls: Default::default(), refuse: Box::new(|_, _| None), fail_calls: 99 };
        let sent = send_batch(&down, &batch(2), NOW).await;
        assert_eq!(sent.sent, 0);
        assert_eq!(
            sent.failed,
            [("k0".into(), "HTTP 503: unavailable".into()), ("k1".into(), "HTTP 503: unavailable".into())]
        );
        assert_eq!(sent.down.as_deref(), Some("HTTP 503: unavailable"), "the backfill stops on it");
    }

    #[test]
    fn the_rate_limit_averages_its_rate_after_a_burst_of_one_second() {
        let secs = Duration::from_secs_f64;
        let mut r = RateLimit::new(100.0, 10);
        // A second's worth at once, then each batch of 10 waits 0.1 s more.
        for _ in 0..10 {
            assert_eq!(r.take(10, Duration::ZERO), Duration::ZERO);
        }
        assert_eq!(r.take(10, Duration::ZERO), secs(0.1));
        assert_eq!(r.take(10, secs(0.1)), secs(0.1), "sent at 0.1 s: the next waits to 0.2 s");
        // After a long pause it never saves more than a second's worth.
        let mut r = RateLimit::new(100.0, 10);
        r.take(100, Duration::ZERO);
        assert_eq!(r.take(100, secs(60.0)), Duration::ZERO);
        assert_eq!(r.take(10, secs(60.0)), secs(0.1));
        // A rate below one batch a second: a batch at once, then a batch's time each.
        let mut r = RateLimit::new(2.0, 10);
        assert_eq!(r.take(10, Duration::ZERO), Duration::ZERO);
        assert_eq!(r.take(10, Duration::ZERO), secs(5.0));
    }
}
