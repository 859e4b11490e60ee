//! Where a run may act: the seam between the pipeline's stages and the way this
//! instance shares the bucket, chosen once at start-up ([`crate::actors::Pipeline::start`])
//! and handed to the stages as an `Arc<dyn RunScope>`.
//!
//! - [`Solo`]: one instance owns the bucket (state file + OS lock): every key is in the
//!   run, and WebPs are written with a plain PUT.
//! - [`crate::cluster::Cluster`] (`state.backend: bucket`): the run covers the shards
//!   owed a run that this instance holds at the epoch the run began with; a key is acted
//!   on only while its shard's lease is trusted, and WebPs are written conditionally
//!   (`If-None-Match: *` or `If-Match`), so each is stored once.
//!
//! The Lister and the Uploader ask only this interface; they never name the cluster.
//! [`RunScope::covers`] is a pure query; the one state change a stage may make,
//! [`RunScope::mark_skipped`], says so in its name. [`admit`] combines the two, as the
//! stages use them.

use chrono::{DateTime, Utc};

/// Whether the run in progress may act for a key now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cover {
    /// In the run, and the run may act for it.
    Yes,
    /// Not in the run (another instance's shard, or one not owed a run).
    NotInRun,
    /// In the run, but not now: its lease is untrusted (about to expire, or lost and
    /// taken back at another epoch). Work skipped for it must leave it owed a run.
    Untrusted,
}

/// What the stages of a run need to know about where they may act.
pub trait RunScope: Send + Sync + std::fmt::Debug {
    /// Whether the run in progress covers `key` and may act for it at `now`. Pure.
    fn covers(&self, key: &str, now: DateTime<Utc>) -> Cover;
    /// Records that the run skipped work for `key` because its part was untrusted: when
    /// the run completes, that part is not recorded as having answered the request.
    fn mark_skipped(&self, key: &str);
    /// Whether several writers may race for a WebP, so that it must be written
    /// conditionally (`If-None-Match: *` for a new one, `If-Match` over the one it replaces).
    fn conditional_writes(&self) -> bool;
}

/// One instance owns the bucket: every key is in the run, writes are plain.
#[derive(Debug, Clone, Copy, Default)]
pub struct Solo;

impl RunScope for Solo {
    fn covers(&self, _key: &str, _now: DateTime<Utc>) -> Cover {
        Cover::Yes
    }

    fn mark_skipped(&self, _key: &str) {}

    fn conditional_writes(&self) -> bool {
        false
    }
}

/// A static shard (`run-once --shard I/N`): the run acts on the keys of shard `index`
/// of `count` ([`crate::naming::shard_of`]) and on no other; nothing coordinates the
/// shards, since no two of them share a key. Its writes are conditional all the same: a
/// shard re-run after its pod was killed races that pod's last write, which may land
/// after the re-run has listed (seen through moto: the killed run's PUT of
/// `img/023.webp` logged after the re-run's LIST, and the re-run stored it again), as
/// does a second copy of an index that an engine starts while the first still runs.
#[derive(Debug, Clone, Copy)]
pub struct OneShard {
    pub index: u32,
    pub count: u32,
}

impl RunScope for OneShard {
    fn covers(&self, key: &str, _now: DateTime<Utc>) -> Cover {
        if crate::naming::shard_of(key, self.count) == self.index { Cover::Yes } else { Cover::NotInRun }
    }

    fn mark_skipped(&self, _key: &str) {}

    fn conditional_writes(&self) -> bool {
        true
    }
}

/// A run's scope beside bucket events (`events:` configured): an event may convert and
/// write the same WebP while the run does, so the run writes conditionally too — on the
/// WebP it listed — and each WebP is stored once, whichever comes first. Otherwise the
/// scope it wraps decides.
#[derive(Debug)]
pub struct BesideEvents(pub std::sync::Arc<dyn RunScope>);

impl RunScope for BesideEvents {
    fn covers(&self, key: &str, now: DateTime<Utc>) -> Cover {
        self.0.covers(key, now)
    }

    fn mark_skipped(&self, key: &str) {
        self.0.mark_skipped(key)
    }

    fn conditional_writes(&self) -> bool {
        true
    }
}

/// Whether a stage may act for `key` now; an untrusted key is marked skipped (its part
/// stays owed a run). The one call the stages make.
pub fn admit(scope: &dyn RunScope, key: &str, now: DateTime<Utc>) -> bool {
    match scope.covers(key, now) {
        Cover::Yes => true,
        Cover::NotInRun => false,
        Cover::Untrusted => {
            scope.mark_skipped(key);
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    /// A scope of two keys: `a` trusted, `b` untrusted; records what it was told.
    #[derive(Debug, Default)]
    struct Two(Mutex<Vec<String>>);

    impl RunScope for Two {
        fn covers(&self, key: &str, _now: DateTime<Utc>) -> Cover {
            match key {
                "a" => Cover::Yes,
                "b" => Cover::Untrusted,
                _ => Cover::NotInRun,
            }
        }

        fn mark_skipped(&self, key: &str) {
            self.0.lock().unwrap().push(key.to_owned());
        }

        fn conditional_writes(&self) -> bool {
            true
        }
    }

    #[test]
    fn admit_marks_only_untrusted_keys_skipped() {
        let scope = Two::default();
        let now = Utc::now();
        assert!(admit(&scope, "a", now));
        assert!(!admit(&scope, "b", now));
        assert!(!admit(&scope, "c", now), "not in the run: not skipped work");
        assert_eq!(*scope.0.lock().unwrap(), ["b"]);
    }

    #[test]
    fn static_shards_split_the_keys_between_them() {
        let now = Utc::now();
        let shards: Vec<OneShard> = (0..4).map(|index| OneShard { index, count: 4 }).collect();
        for i in 0..200 {
            let key = format!("p/{i}.jpg");
            let covering = shards.iter().filter(|s| s.covers(&key, now) == Cover::Yes).count();
            assert_eq!(covering, 1, "{key}: exactly one shard acts on it");
        }
    }

    #[test]
    fn solo_covers_every_key_and_writes_plainly() {
        assert_eq!(Solo.covers("any/key.jpg", Utc::now()), Cover::Yes);
        assert!(!Solo.conditional_writes());
    }
}
