//! Membership planning as plain functions (STYLE.md item 15): from what an instance holds
//! and sees, which shards it gives back and which it looks at taking. No I/O: the
//! Coordinator reads the leases and carries the plan out, a lease at a time.

use std::collections::BTreeSet;

use super::shard_of;

/// Each live instance's share: the shards divided among them, rounded up, so that the
/// shares cover every shard.
pub fn fair_share(shards: u32, live: usize) -> u32 {
    shards.div_ceil(live.max(1) as u32)
}

/// What one turn of rebalancing does.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Plan {
    /// Held shards to release, above the fair share: the highest of those that may go.
    pub release: Vec<u32>,
    /// Shards to look at taking, in order, while below the fair share (each may turn
    /// out to be held by a live lease or unreadable).
    pub candidates: Vec<u32>,
}

/// The plan of instance `instance` holding `held` of `shards` among `live` instances.
/// `releasable`: the held shards it may give back (during `run-once`'s whole run, only
/// those that have answered its request). `held_elsewhere`: shards other live instances
/// say they hold (not worth reading). `quiet`: shutting down, nothing new is taken.
pub fn plan(
    instance: &str,
    shards: u32,
    live: usize,
    held: &BTreeSet<u32>,
    releasable: &BTreeSet<u32>,
    held_elsewhere: &BTreeSet<u32>,
    quiet: bool,
) -> Plan {
    let fair = fair_share(shards, live) as usize;
    let mut release = Vec::new();
    let mut releasable: BTreeSet<u32> = releasable.intersection(held).copied().collect();
    let mut kept = held.len();
    while kept > fair {
        let Some(shard) = releasable.pop_last() else { break };
        release.push(shard);
        kept -= 1;
    }
    let mut candidates = Vec::new();
    if kept < fair && !quiet {
        // Starting at a place of its own, so that instances joining together do not all
        // go for the same shards.
        let first = shard_of(instance, shards);
        candidates = (0..shards)
            .map(|i| (first + i) % shards.max(1))
            .filter(|s| !held.contains(s) && !held_elsewhere.contains(s))
            .collect();
    }
    Plan { release, candidates }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(ids: &[u32]) -> BTreeSet<u32> {
        ids.iter().copied().collect()
    }

    #[test]
    fn shares_cover_every_shard() {
        for shards in 1..40 {
            for live in 1..10 {
                assert!(fair_share(shards, live) as usize * live >= shards as usize);
            }
        }
        assert_eq!(fair_share(9, 0), 9, "alone even with no heartbeat seen");
    }

    #[test]
    fn above_the_share_the_highest_releasable_shards_go() {
        let held = set(&[0, 1, 2, 3, 4, 5]);
        let p = plan("a", 9, 3, &held, &held, &set(&[]), false);
        assert_eq!(p.release, [5, 4, 3]);
        assert!(p.candidates.is_empty());
        // During a whole run, only shards that answered its request may go.
        let p = plan("a", 9, 3, &held, &set(&[1]), &set(&[]), false);
        assert_eq!(p.release, [1]);
    }

    #[test]
    fn below_the_share_every_shard_not_held_by_anyone_is_a_candidate_once() {
        let p = plan("a", 8, 2, &set(&[0]), &set(&[0]), &set(&[1, 2, 3]), false);
        assert!(p.release.is_empty());
        let mut c = p.candidates.clone();
        c.sort_unstable();
        assert_eq!(c, [4, 5, 6, 7]);
        assert_eq!(p.candidates[0], (shard_of("a", 8)..).map(|s| s % 8).find(|s| c.contains(s)).unwrap());
        assert!(plan("a", 8, 2, &set(&[0]), &set(&[0]), &set(&[]), true).candidates.is_empty(), "quiet takes none");
    }

    #[test]
    fn instances_start_looking_at_different_places() {
        let starts: BTreeSet<u32> = ["i0", "i1", "i2", "i3", "i4"]
            .iter()
            .map(|i| plan(i, 16, 5, &set(&[]), &set(&[]), &set(&[]), false).candidates[0])
            .collect();
        assert!(starts.len() > 1, "{starts:?}");
    }
}
