//! Leases held in the bucket itself (issue 7, first part): a lease object names its
//! holder, an expiry and an epoch, and every change to it is a conditional PUT — create
//! with `If-None-Match: *`, take over or renew with `If-Match` on the ETag read.
//!
//! Safety with clocks that disagree by at most `skew`: a holder treats its lease as
//! valid only until `expires_at − skew` by its own clock, and nobody takes a lease over
//! before `expires_at + skew` by theirs, so two live instances never both believe they
//! hold it. Fencing backs this up: the holder's next write is a compare-and-swap on the
//! ETag it last wrote, which fails once anyone else has written the lease.
//!
//! A lease object may carry data (`data`): a shard's state rides in its lease, so every
//! checkpoint is a renewal and is fenced by the same compare-and-swap. A holder that
//! leaves releases its leases (`holder` empty), and anyone may take a released lease at
//! once. `tests` simulates many instances and shards.

use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::storage::{Storage, StorageError};

/// The lease object's body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseRecord {
    /// The holder's instance id; empty when released.
    pub holder: String,
    pub expires_at: DateTime<Utc>,
    /// Bumped by each new holder.
    pub epoch: u64,
    /// What the holder keeps with the lease (a shard's state); carried over to the next holder.
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    pub data: serde_json::Value,
}

/// A lease this instance holds: what it wrote and the ETag to write over next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Held {
    pub key: String,
    pub record: LeaseRecord,
    pub etag: String,
}

/// Why a lease could not be kept.
#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    #[error("{0}: the lease was taken by another instance")]
    Lost(String),
    #[error("{0}: the lease object is not valid JSON: {1}")]
    Corrupt(String, String),
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// The largest lease object read (a shard's state included).
pub const MAX_LEASE_BYTES: u64 = 256 * 1024 * 1024;

/// Takes and renews leases on behalf of one instance.
#[derive(Debug, Clone)]
pub struct Leases {
    pub storage: Storage,
    pub holder: String,
    pub duration: Duration,
    /// The largest clock difference between instances that stays safe.
    pub skew: Duration,
}

impl Held {
    /// Whether the holder may still act on the lease at its own time `now`.
    pub fn valid_at(&self, now: DateTime<Utc>, skew: Duration) -> bool {
        now < self.record.expires_at - skew
    }
}

impl Leases {
    /// The lease object `key` as stored, with its ETag; `None` if there is none yet.
    pub async fn read(&self, key: &str) -> Result<Option<(LeaseRecord, String)>, LeaseError> {
        match self.storage.get(key, MAX_LEASE_BYTES).await {
            Ok((info, body)) => {
                let record: LeaseRecord =
                    serde_json::from_slice(&body).map_err(|e| LeaseError::Corrupt(key.to_owned(), e.to_string()))?;
                Ok(Some((record, info.etag.unwrap_or_default())))
            }
            Err(StorageError::NotFound { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Takes the lease `key` if it is free or expired (by `expires_at + skew`), or
    /// already ours; `None` if someone else holds it or won the race to take it.
    pub async fn acquire(&self, key: &str, now: DateTime<Utc>) -> Result<Option<Held>, LeaseError> {
        let current = self.read(key).await?;
        self.take(key, current, now).await
    }

    /// [`Leases::acquire`] with the lease object already read (`current`, from [`Leases::read`]).
    pub async fn take(
        &self,
        key: &str,
        current: Option<(LeaseRecord, String)>,
        now: DateTime<Utc>,
    ) -> Result<Option<Held>, LeaseError> {
        let epoch = match &current {
            Some((r, _)) if !self.is_free(r, now) => return Ok(None),
            Some((r, _)) => r.epoch + 1,
            None => 1,
        };
        let data = current.as_ref().map(|(r, _)| r.data.clone()).unwrap_or_default();
        let record = LeaseRecord { holder: self.holder.clone(), expires_at: now + self.duration, epoch, data };
        let written = match &current {
            None => self.storage.put_new(key, body(&record), "application/json").await,
            Some((_, etag)) => self.storage.put_if_match(key, body(&record), "application/json", etag).await,
        };
        match written {
            Ok(etag) => Ok(Some(Held { key: key.to_owned(), record, etag: etag.unwrap_or_default() })),
            Err(StorageError::AlreadyExists { .. } | StorageError::Changed { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Whether this instance may take a lease in state `r` at `now`: released, ours, or
    /// expired by more than the skew margin.
    pub fn is_free(&self, r: &LeaseRecord, now: DateTime<Utc>) -> bool {
        r.holder.is_empty() || r.holder == self.holder || now >= r.expires_at + self.skew
    }

    /// Extends a held lease; [`LeaseError::Lost`] if anyone wrote it meanwhile.
    pub async fn renew(&self, held: &Held, now: DateTime<Utc>) -> Result<Held, LeaseError> {
        self.write(held, now, held.record.data.clone()).await
    }

    /// Extends a held lease and replaces its data in one conditional write (a fenced
    /// checkpoint); [`LeaseError::Lost`] if anyone wrote it meanwhile.
    pub async fn write(&self, held: &Held, now: DateTime<Utc>, data: serde_json::Value) -> Result<Held, LeaseError> {
        let record = LeaseRecord { expires_at: now + self.duration, data, ..held.record.clone() };
        self.put(held, record).await
    }

    /// Gives a lease up (keeping `data` for the next holder), so that others may take it at once.
    pub async fn release(&self, held: &Held, now: DateTime<Utc>, data: serde_json::Value) -> Result<(), LeaseError> {
        let record = LeaseRecord { holder: String::new(), expires_at: now, data, ..held.record.clone() };
        self.put(held, record).await.map(|_| ())
    }

    async fn put(&self, held: &Held, record: LeaseRecord) -> Result<Held, LeaseError> {
        let mut etag = held.etag.clone();
        for attempt in 0..2 {
            match self.storage.put_if_match(&held.key, body(&record), "application/json", &etag).await {
                Ok(e) => return Ok(Held { key: held.key.clone(), record, etag: e.unwrap_or_default() }),
                Err(StorageError::Changed { .. }) if attempt == 0 => {
                    // A write of ours that timed out but landed changed the ETag: still our
                    // holding (same holder, same epoch) means nobody took it; go on from there.
                    match self.read(&held.key).await? {
                        Some((r, e)) if r.holder == self.holder && r.epoch == held.record.epoch => etag = e,
                        _ => return Err(LeaseError::Lost(held.key.clone())),
                    }
                }
                Err(StorageError::Changed { .. }) => return Err(LeaseError::Lost(held.key.clone())),
                Err(e) => return Err(e.into()),
            }
        }
        Err(LeaseError::Lost(held.key.clone()))
    }
}

fn body(record: &LeaseRecord) -> Bytes {
    Bytes::from(serde_json::to_vec(record).expect("a lease record serialises"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small deterministic generator (xorshift64*), so a failing run can be replayed.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self, n: u64) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n
        }
    }

    /// One simulated instance: its clock offset, whether it is paused, what it believes it holds.
    struct Instance {
        leases: Leases,
        offset: chrono::Duration,
        paused_until: u64,
        held: Vec<Option<Held>>,
    }

    #[tokio::test]
    async fn no_shard_is_ever_held_by_two_live_instances() {
        const SHARDS: usize = 64;
        const INSTANCES: usize = 12;
        const STEPS: u64 = 50_000;
        let skew = Duration::from_secs(2);
        let storage = Storage::in_memory("sim");
        let start = Utc::now();
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        let mut instances: Vec<Instance> = (0..INSTANCES)
            .map(|i| Instance {
                leases: Leases {
                    storage: storage.clone(),
                    holder: format!("i{i}"),
                    duration: Duration::from_secs(10),
                    skew,
                },
                // Clocks spread over the whole documented margin: −1 s … +1 s.
                offset: chrono::Duration::milliseconds(rng.next(2001) as i64 - 1000),
                paused_until: 0,
                held: vec![None; SHARDS],
            })
            .collect();
        let (mut takeovers, mut lost, mut released) = (0, 0, 0);
        // Each step is 100 ms of true time; one random instance acts.
        for step in 0..STEPS {
            let true_now = start + chrono::Duration::milliseconds(step as i64 * 100);
            let i = rng.next(INSTANCES as u64) as usize;
            let inst = &mut instances[i];
            let now = true_now + inst.offset;
            if step < inst.paused_until {
                continue;
            }
            if rng.next(200) == 0 {
                // A pause (GC, SIGSTOP, partition) of up to 30 s: leases run out meanwhile.
                inst.paused_until = step + rng.next(300);
                continue;
            }
            let shard = rng.next(SHARDS as u64) as usize;
            let key = format!("leases/{shard}.json");
            match inst.held[shard].take() {
                // Now and then a holder gives a shard back (rebalancing, shutdown).
                Some(h) if rng.next(20) == 0 => match inst.leases.release(&h, now, serde_json::Value::Null).await {
                    Ok(()) => released += 1,
                    Err(LeaseError::Lost(_)) => lost += 1,
                    Err(e) => panic!("{e}"),
                },
                Some(h) => match inst.leases.renew(&h, now).await {
                    Ok(h) => inst.held[shard] = Some(h),
                    Err(LeaseError::Lost(_)) => lost += 1,
                    Err(e) => panic!("{e}"),
                },
                None => {
                    if let Some(h) = inst.leases.acquire(&key, now).await.unwrap() {
                        takeovers += u64::from(h.record.epoch > 1);
                        inst.held[shard] = Some(h);
                    }
                }
            }
            // The invariant, at true time: at most one instance believes it holds each shard.
            for s in 0..SHARDS {
                let believers: Vec<usize> = (0..INSTANCES)
                    .filter(|&j| {
                        let me = &instances[j];
                        me.held[s].as_ref().is_some_and(|h| h.valid_at(true_now + me.offset, skew))
                    })
                    .collect();
                assert!(believers.len() <= 1, "step {step}: shard {s} held by {believers:?}");
            }
        }
        // The simulation exercised what it is about.
        assert!(
            takeovers > 50 && lost > 10 && released > 50,
            "takeovers {takeovers}, lost {lost}, released {released}"
        );
    }

    #[tokio::test]
    async fn a_paused_holder_cannot_renew_after_a_takeover() {
        let storage = Storage::in_memory("pause");
        let lease = |holder: &str| Leases {
            storage: storage.clone(),
            holder: holder.into(),
            duration: Duration::from_secs(10),
            skew: Duration::from_secs(1),
        };
        let (a, b) = (lease("a"), lease("b"));
        let t0 = Utc::now();
        let held = a.acquire("l.json", t0).await.unwrap().unwrap();
        assert!(b.acquire("l.json", t0 + chrono::Duration::seconds(10)).await.unwrap().is_none(), "within skew");
        let taken = b.acquire("l.json", t0 + chrono::Duration::seconds(12)).await.unwrap().unwrap();
        assert_eq!(taken.record.epoch, 2);
        // a wakes up and tries to write: refused (fencing).
        assert!(matches!(a.renew(&held, t0 + chrono::Duration::seconds(13)).await, Err(LeaseError::Lost(_))));
    }
}
