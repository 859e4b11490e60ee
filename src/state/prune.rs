//! Pruning the ledger of sources that are gone: without it, every source that once failed
//! and was then deleted from the bucket stays in the state for good, and the state grows
//! with the bucket's history instead of with the failures that still exist.
//!
//! While a run lists, [`LedgerSeen`] notes which keys of the ledger it met (its memory
//! is bounded by the ledger, not the bucket). Only a listing that covered the whole key
//! space — not stopped, not failed; a resumed run's two passes (after its cursor, then
//! from the start up to it) together count as one — may say what is gone: its
//! [`LedgerSeen::unseen`] keys are dropped by [`State::forget`] when the run completes.
//! Entries a run adds are for keys it listed, so they are never among the unseen ones.

use std::collections::BTreeSet;

use super::State;

/// The ledger keys a listing has met, out of those of the state it began with.
#[derive(Debug, Clone, Default)]
pub struct LedgerSeen {
    seen: BTreeSet<String>,
}

impl LedgerSeen {
    /// Notes a listed key (or a name the listing could not turn into a key, as shown).
    /// The entries of the source's other outputs (`key#avif`, `key#webp_w640`) are met
    /// with it.
    pub fn saw(&mut self, state: &State, key: &str) {
        if state.ledger.contains_key(key) && !self.seen.contains(key) {
            self.seen.insert(key.to_owned());
        }
        let after = (std::ops::Bound::Excluded(key), std::ops::Bound::Unbounded);
        for (k, _) in state.ledger.range::<str, _>(after) {
            let Some(rest) = k.strip_prefix(key) else { break };
            if rest.starts_with('#') && !self.seen.contains(k) {
                self.seen.insert(k.clone());
            }
        }
    }

    /// The keys of `state`'s ledger this listing did not meet: their sources are gone.
    pub fn unseen(&self, state: &State) -> Vec<String> {
        state.ledger.keys().filter(|k| !self.seen.contains(*k)).cloned().collect()
    }
}

impl State {
    /// Drops the ledger entries of `keys` (sources a complete listing did not find);
    /// returns how many there were.
    pub fn forget(&mut self, keys: &[String]) -> usize {
        keys.iter().filter(|k| self.ledger.remove(k.as_str()).is_some()).count()
    }
}

#[cfg(test)]
mod tests {
    use chrono::Utc;

    use super::*;
    use crate::state::{Failure, RetryPolicy};

    fn state_with(keys: &[&str]) -> State {
        let mut s = State::default();
        for k in keys {
            let failure = Failure { code: "decode_failed", reason: "bad", permanent: true };
            s.record_failure(k, None, failure, &RetryPolicy::default(), Utc::now());
        }
        s
    }

    #[test]
    fn ledger_entries_of_deleted_sources_are_unseen_and_forgotten() {
        let begun = state_with(&["a.jpg", "gone/b.png", "c.gif"]);
        let mut seen = LedgerSeen::default();
        for key in ["a.jpg", "a.webp", "c.gif", "new.jpg"] {
            seen.saw(&begun, key);
        }
        let unseen = seen.unseen(&begun);
        assert_eq!(unseen, ["gone/b.png"]);
        // By the run's end the ledger gained an entry for a listed key: it stays.
        let mut now = state_with(&["a.jpg", "gone/b.png", "c.gif", "new.jpg"]);
        assert_eq!(now.forget(&unseen), 1);
        assert_eq!(now.ledger.keys().collect::<Vec<_>>(), ["a.jpg", "c.gif", "new.jpg"]);
    }

    #[test]
    fn a_listed_source_keeps_the_entries_of_its_other_outputs() {
        let state = state_with(&["a.jpg#avif", "a.jpg#webp_w640", "a.jpg2#avif", "b.jpg#avif"]);
        let mut seen = LedgerSeen::default();
        seen.saw(&state, "a.jpg");
        assert_eq!(seen.unseen(&state), ["a.jpg2#avif", "b.jpg#avif"]);
    }
}
