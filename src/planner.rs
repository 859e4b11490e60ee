//! Which listed objects need converting — decided from the listing alone, with no
//! request per object.
//!
//! The bucket is the source of truth: a source needs converting when it has no WebP, or
//! its WebP is older than it (both times come from the storage's clock). Outputs sit
//! beside their sources, and every source extension sorts before `webp`, so a source's
//! WebP is listed *after* it (not always right after: `cat.k.jpg` sorts between
//! `cat.jpg` and `cat.webp`). Each source waits in a small ordered map under its output
//! key; a `.webp` key resolves its entry; once the listing has passed an output key, that
//! source has no WebP. The map only ever holds the few keys between a source and its
//! output. The ledger in the state then says whether a failed source is due for a retry.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};

use crate::naming;
use crate::state::{LedgerDecision, State};
use crate::storage::ObjectInfo;

/// Why a candidate is not converted this run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SkipReason {
    /// Its WebP exists and is not older than it.
    UpToDate,
    /// Failed before; its next retry is later.
    RetryLater,
    /// Given up, or kept on purpose; waits for the source to change.
    Ledgered,
    /// Last modified before `ignore_before` (`state.initial`).
    TooOld,
}

/// The planner's verdict on one source.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    Convert {
        source: ObjectInfo,
        output: String,
        /// The ETag of the WebP it replaces, if one exists (stale, or forced).
        replaces: Option<String>,
    },
    Skip {
        source: ObjectInfo,
        reason: SkipReason,
    },
    /// Several sources would write the same WebP: none is converted.
    Conflict {
        sources: Vec<ObjectInfo>,
        output: String,
    },
}

/// What the planner needs to know about this run.
#[derive(Debug, Clone)]
pub struct PlanRules {
    pub formats: Vec<String>,
    pub ignore_before: Option<DateTime<Utc>>,
    /// Re-convert sources modified at or after this even with an up-to-date WebP.
    pub reprocess_from: Option<DateTime<Utc>>,
    /// Re-convert everything (`run-once --force`).
    pub force: bool,
    pub now: DateTime<Utc>,
    /// Only sources at or before this key (the wrap-around pass of a resumed run).
    pub upto: Option<String>,
}

/// Turns a key-ordered listing into decisions, released in source-key order.
#[derive(Debug)]
pub struct Planner {
    rules: PlanRules,
    state: Arc<State>,
    pending: BTreeMap<String, Vec<ObjectInfo>>,
    /// Decisions made, held until every smaller source is decided too: `cat.k.jpg` is
    /// decided (at `cat.k.webp`) before `cat.jpg` (at `cat.webp`), but released after it,
    /// so everything downstream sees sources in key order and a resume position is exact.
    ready: BTreeMap<String, Decision>,
}

impl Planner {
    pub fn new(rules: PlanRules, state: Arc<State>) -> Self {
        Self { rules, state, pending: BTreeMap::new(), ready: BTreeMap::new() }
    }

    fn hold(&mut self, d: Decision) {
        let key = match &d {
            Decision::Convert { source, .. } | Decision::Skip { source, .. } => source.key.clone(),
            Decision::Conflict { sources, .. } => sources.iter().map(|s| s.key.clone()).min().unwrap_or_default(),
        };
        self.ready.insert(key, d);
    }

    fn release(&mut self, out: &mut Vec<Decision>) {
        let limit = self.first_pending().map(str::to_owned);
        while let Some(entry) = self.ready.first_entry() {
            if limit.as_deref().is_some_and(|l| entry.key().as_str() >= l) {
                break;
            }
            out.push(entry.remove());
        }
    }

    /// Feeds the next listed object (keys must arrive in ascending order); decisions that
    /// became possible are appended to `out`.
    pub fn push(&mut self, obj: ObjectInfo, out: &mut Vec<Decision>) {
        // Outputs the listing has passed have no WebP.
        while let Some(entry) = self.pending.first_entry() {
            if entry.key().as_str() >= obj.key.as_str() {
                break;
            }
            let (output, sources) = entry.remove_entry();
            let d = self.decide(output, sources, None);
            self.hold(d);
        }
        if obj.key.ends_with(".webp") {
            if let Some(sources) = self.pending.remove(&obj.key) {
                let output = obj.key.clone();
                let d = self.decide(output, sources, Some(&obj));
                self.hold(d);
            }
        } else if self.rules.upto.as_deref().is_some_and(|u| obj.key.as_str() > u) {
            // Past the wrap-around pass's end: the main pass saw it.
        } else if naming::is_candidate(&obj.key, &self.rules.formats) {
            if self.rules.ignore_before.is_some_and(|t| obj.last_modified < t) {
                self.hold(Decision::Skip { source: obj, reason: SkipReason::TooOld });
            } else {
                self.pending.entry(naming::webp_key(&obj.key)).or_default().push(obj);
            }
        }
        self.release(out);
    }

    /// The listing ended: every source still waiting has no WebP.
    pub fn finish(&mut self, out: &mut Vec<Decision>) {
        for (output, sources) in std::mem::take(&mut self.pending) {
            let d = self.decide(output, sources, None);
            self.hold(d);
        }
        self.release(out);
    }

    /// The smallest key still waiting for its WebP, if any. Every listed key below it
    /// has been decided.
    pub fn first_pending(&self) -> Option<&str> {
        self.pending.values().flatten().map(|o| o.key.as_str()).min()
    }

    fn decide(&self, output: String, mut sources: Vec<ObjectInfo>, webp: Option<&ObjectInfo>) -> Decision {
        if sources.len() > 1 {
            return Decision::Conflict { sources, output };
        }
        let source = sources.pop().expect("a pending entry has a source");
        let replaces = webp.map(|w| w.etag.clone().unwrap_or_default());
        let forced = self.rules.force || self.rules.reprocess_from.is_some_and(|t| source.last_modified >= t);
        if !forced && webp.is_some_and(|w| w.last_modified >= source.last_modified) {
            return Decision::Skip { source, reason: SkipReason::UpToDate };
        }
        match self.state.decide(&source.key, source.etag.as_deref(), self.rules.now) {
            LedgerDecision::Convert | LedgerDecision::Retry => Decision::Convert { source, output, replaces },
            LedgerDecision::Wait => Decision::Skip { source, reason: SkipReason::RetryLater },
            LedgerDecision::Leave if forced => Decision::Convert { source, output, replaces },
            LedgerDecision::Leave => Decision::Skip { source, reason: SkipReason::Ledgered },
        }
    }
}

#[cfg(test)]
mod tests {
    use chrono::{Duration, TimeZone};

    use super::*;
    use crate::state::{Failure, RetryPolicy};

    fn obj(key: &str, minute: i64) -> ObjectInfo {
        ObjectInfo {
            key: key.into(),
            size: 10,
            last_modified: Utc.with_ymd_and_hms(2024, 1, 1, 0, 0, 0).unwrap() + Duration::minutes(minute),
            etag: Some(format!("etag-{key}")),
        }
    }

    fn rules() -> PlanRules {
        PlanRules {
            formats: ["jpg", "jpeg", "png", "gif"].iter().map(|s| s.to_string()).collect(),
            ignore_before: None,
            reprocess_from: None,
            force: false,
            now: Utc.with_ymd_and_hms(2024, 1, 2, 0, 0, 0).unwrap(),
            upto: None,
        }
    }

    fn plan(mut objects: Vec<ObjectInfo>, rules: PlanRules, state: State) -> Vec<Decision> {
        objects.sort_by(|a, b| a.key.cmp(&b.key));
        let mut p = Planner::new(rules, Arc::new(state));
        let mut out = Vec::new();
        for o in objects {
            p.push(o, &mut out);
        }
        p.finish(&mut out);
        out
    }

    fn converted(d: &[Decision]) -> Vec<&str> {
        d.iter()
            .filter_map(|d| match d {
                Decision::Convert { source, .. } => Some(source.key.as_str()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn sources_without_an_up_to_date_webp_are_converted() {
        let d = plan(
            vec![
                obj("a/cat.jpg", 5),
                obj("a/cat.k.jpg", 5),
                obj("a/cat.webp", 6), // newer: up to date
                obj("a/dog.png", 9),
                obj("a/dog.webp", 1), // older than its source: stale
                obj("a/eel.gif", 1),  // no WebP at all
                obj("a/readme.txt", 1),
                obj("a/orphan.webp", 1),
                obj("b.jpeg", 3),
            ],
            rules(),
            State::default(),
        );
        assert_eq!(converted(&d), ["a/cat.k.jpg", "a/dog.png", "a/eel.gif", "b.jpeg"]);
        // Decisions come out in source-key order although cat.k.jpg is decided first.
        let keys: Vec<&str> = d
            .iter()
            .map(|d| match d {
                Decision::Convert { source, .. } | Decision::Skip { source, .. } => source.key.as_str(),
                Decision::Conflict { .. } => "",
            })
            .collect();
        assert_eq!(keys, ["a/cat.jpg", "a/cat.k.jpg", "a/dog.png", "a/eel.gif", "b.jpeg"]);
        assert!(d.contains(&Decision::Skip { source: obj("a/cat.jpg", 5), reason: SkipReason::UpToDate }));
        assert_eq!(d.len(), 5);
    }

    #[test]
    fn two_sources_for_one_webp_are_a_conflict() {
        let d = plan(vec![obj("p/x.jpg", 1), obj("p/x.png", 1), obj("p/x.webp", 2)], rules(), State::default());
        assert_eq!(d.len(), 1);
        assert!(matches!(&d[0], Decision::Conflict { sources, output } if sources.len() == 2 && output == "p/x.webp"));
    }

    #[test]
    fn the_ledger_delays_retries_and_leaves_given_up_sources() {
        let mut state = State::default();
        let policy = RetryPolicy::default();
        let now = rules().now;
        state.record_failure(
            "f.jpg",
            Some("etag-f.jpg".into()),
            Failure { code: "storage_error", reason: "503", permanent: false },
            &policy,
            now,
        );
        state.record_failure(
            "g.jpg",
            Some("etag-g.jpg".into()),
            Failure { code: "not_an_image", reason: "text", permanent: true },
            &policy,
            now,
        );
        state.record_failure(
            "h.jpg",
            Some("old-etag".into()),
            Failure { code: "not_an_image", reason: "text", permanent: true },
            &policy,
            now,
        );
        let d = plan(vec![obj("f.jpg", 1), obj("g.jpg", 1), obj("h.jpg", 1)], rules(), state.clone());
        assert_eq!(converted(&d), ["h.jpg"], "a changed source gets a fresh chance");
        let later = PlanRules { now: now + Duration::hours(1), ..rules() };
        assert_eq!(converted(&plan(vec![obj("f.jpg", 1), obj("g.jpg", 1)], later, state)), ["f.jpg"]);
    }

    #[test]
    fn force_reprocess_and_ignore_before() {
        let objects = vec![obj("a.jpg", 1), obj("a.webp", 2), obj("b.jpg", 10), obj("b.webp", 11)];
        let forced = PlanRules { force: true, ..rules() };
        assert_eq!(converted(&plan(objects.clone(), forced, State::default())), ["a.jpg", "b.jpg"]);
        let from = PlanRules { reprocess_from: Some(obj("x", 5).last_modified), ..rules() };
        assert_eq!(converted(&plan(objects.clone(), from, State::default())), ["b.jpg"]);
        let newer = PlanRules { ignore_before: Some(obj("x", 5).last_modified), ..rules() };
        let d = plan(vec![obj("old.jpg", 1), obj("new.jpg", 9)], newer, State::default());
        assert_eq!(converted(&d), ["new.jpg"]);
    }

    #[test]
    fn pending_is_small_and_tracks_the_first_undecided_key() {
        let mut p = Planner::new(rules(), Arc::new(State::default()));
        let mut out = Vec::new();
        p.push(obj("a.jpg", 1), &mut out);
        p.push(obj("a.k.jpg", 1), &mut out);
        assert_eq!(p.first_pending(), Some("a.jpg"));
        // "a.k.webp" sorts before "a.webp": it resolves the later source first, but its
        // decision waits for a.jpg's.
        p.push(obj("a.k.webp", 2), &mut out);
        assert_eq!(p.first_pending(), Some("a.jpg"));
        assert!(out.is_empty());
        p.push(obj("a.webp", 2), &mut out);
        assert_eq!(p.first_pending(), None);
        assert_eq!(out.len(), 2);
        assert!(out.iter().all(|d| matches!(d, Decision::Skip { reason: SkipReason::UpToDate, .. })));
    }
}
