//! Which listed objects need converting — decided from the listing alone, with no
//! request per object.
//!
//! The bucket is the source of truth: an output of a source (`conversion.outputs`; by
//! default its one WebP) is due when it does not exist or is older than the source (both
//! times from the storage's clock). Each output's key is the source's stem plus a fixed
//! suffix ([`crate::outputs`]), so it sits near its source in the key order — usually
//! after it (`cat.jpg` → `cat.webp`, `cat_w640.webp`), sometimes before (`cat.avif`).
//! Each output key the listing meets, as a source's claim or as a listed object, waits
//! in a small ordered map until the listing has passed both it and every key that could
//! still claim it (`stem.` + the largest source extension): then it is known whether it
//! exists and which sources claim it. A source is decided once all its outputs are; an
//! output claimed by several sources is a conflict, and none of them writes it. The
//! maps only ever hold the few keys between a source and its outputs. The ledger in the
//! state then says, per output, whether a failed one is due for a retry.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};

pub use crate::model::Due;
use crate::naming;
use crate::outputs::Outputs;
use crate::state::{LedgerDecision, State};
use crate::storage::ObjectInfo;

/// Why a candidate is not converted this run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum SkipReason {
    /// Its outputs exist and are not older than it.
    UpToDate,
    /// Given up, or kept on purpose; waits for the source to change.
    Ledgered,
    /// Failed before; its next retry is later.
    RetryLater,
    /// Last modified before `ignore_before` (`state.initial`).
    TooOld,
    /// Another pass's ([`PlanRules::defer`], [`PlanRules::only`]: a run makes every
    /// WebP before any AVIF).
    OtherPass,
}

/// The planner's verdict on one source.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Some of its outputs are due (the others are up to date, ledgered or in conflict).
    Convert { source: ObjectInfo, due: Vec<Due> },
    /// None of its outputs is due; `reason` is the weightiest of its outputs' reasons
    /// (the last in [`SkipReason`]'s order: a retry waiting says more than up to date).
    Skip { source: ObjectInfo, reason: SkipReason },
    /// Several sources would write `output`: none of them writes it. Each claimant with
    /// the place of its output in `conversion.outputs`.
    Conflict { claimants: Vec<(ObjectInfo, usize)>, output: String },
}

impl Decision {
    /// The source key the decision is released under (a conflict: its smallest).
    fn key(&self) -> &str {
        match self {
            Decision::Convert { source, .. } | Decision::Skip { source, .. } => &source.key,
            Decision::Conflict { claimants, .. } => claimants.iter().map(|(s, _)| s.key.as_str()).min().unwrap_or(""),
        }
    }
}

/// What the planner needs to know about this run.
#[derive(Debug, Clone)]
pub struct PlanRules {
    pub formats: Vec<String>,
    pub outputs: Outputs,
    pub ignore_before: Option<DateTime<Utc>>,
    /// Re-convert sources modified at or after this even with up-to-date outputs.
    pub reprocess_from: Option<DateTime<Utc>>,
    /// Re-convert everything (`run-once --force`).
    pub force: bool,
    pub now: DateTime<Utc>,
    /// Only sources at or before this key (the wrap-around pass of a resumed run).
    pub upto: Option<String>,
    /// Outputs of this format are not due in this pass, even when they would be: the
    /// run's first pass makes the WebPs and leaves the AVIFs to a second.
    pub defer: Option<crate::outputs::Format>,
    /// Only outputs of this format are considered (that second pass).
    pub only: Option<crate::outputs::Format>,
}

/// An output key the listing has met, waiting until no key to come can claim it.
#[derive(Debug, Default)]
struct OutputSlot {
    /// The object itself, if listed.
    seen: Option<ObjectInfo>,
    /// Sources claiming it, with the place of their output in `conversion.outputs`.
    claimants: Vec<(String, usize)>,
}

/// A listed source waiting for its outputs to be decided.
#[derive(Debug)]
struct Waiting {
    source: ObjectInfo,
    due: Vec<Due>,
    /// The reasons of its outputs not due (conflicting ones excepted).
    skipped: Vec<SkipReason>,
    /// Outputs not yet decided.
    left: usize,
}

/// Turns a key-ordered listing into decisions, released in source-key order.
#[derive(Debug)]
pub struct Planner {
    rules: PlanRules,
    state: Arc<State>,
    /// The largest key a source can have for a given stem: `stem.` + this.
    last_ext: String,
    slots: BTreeMap<String, OutputSlot>,
    /// Output keys by the key the listing must pass before they are decided.
    resolve: BTreeMap<String, Vec<String>>,
    waiting: BTreeMap<String, Waiting>,
    /// Decisions made, held until every smaller source is decided too (`cat.k.jpg` is
    /// decided, at `cat.k.webp`, before `cat.jpg`, at `cat.webp`), so that everything
    /// downstream sees sources in key order and a resume position is exact.
    ready: BTreeMap<(String, u64), Decision>,
    made: u64,
}

impl Planner {
    pub fn new(rules: PlanRules, state: Arc<State>) -> Self {
        let last_ext = rules.formats.iter().max().cloned().unwrap_or_default();
        Self {
            rules,
            state,
            last_ext,
            slots: BTreeMap::new(),
            resolve: BTreeMap::new(),
            waiting: BTreeMap::new(),
            ready: BTreeMap::new(),
            made: 0,
        }
    }

    fn hold(&mut self, d: Decision) {
        self.made += 1;
        self.ready.insert((d.key().to_owned(), self.made), d);
    }

    fn release(&mut self, out: &mut Vec<Decision>) {
        let limit = self.waiting.keys().next().cloned();
        while let Some(entry) = self.ready.first_entry() {
            if limit.as_deref().is_some_and(|l| entry.key().0.as_str() >= l) {
                break;
            }
            out.push(entry.remove());
        }
    }

    /// The key the listing must pass before output `key` is decided: itself, and the
    /// largest key of every source that could claim it.
    fn resolve_at(&self, key: &str) -> String {
        let claimant_max =
            self.rules.outputs.inversions(key).map(|(_, stem)| format!("{stem}.{}", self.last_ext)).max();
        claimant_max.map_or_else(|| key.to_owned(), |m| m.max(key.to_owned()))
    }

    /// The slot of output `key`, made (and queued for deciding) if new.
    fn slot(&mut self, key: &str) -> &mut OutputSlot {
        if !self.slots.contains_key(key) {
            let resolve_at = self.resolve_at(key);
            self.resolve.entry(resolve_at).or_default().push(key.to_owned());
            self.slots.insert(key.to_owned(), OutputSlot::default());
        }
        self.slots.get_mut(key).expect("just made")
    }

    /// Feeds the next listed object (keys must arrive in ascending order); decisions that
    /// became possible are appended to `out`.
    pub fn push(&mut self, obj: ObjectInfo, out: &mut Vec<Decision>) {
        let listed = obj.key.clone();
        let is_output = self.rules.outputs.inversions(&obj.key).next().is_some();
        if is_output {
            // Kept only while a source to come could claim it (or one already has).
            if self.slots.contains_key(&obj.key) || self.resolve_at(&obj.key) > obj.key {
                let key = obj.key.clone();
                self.slot(&key).seen = Some(obj);
            }
        } else if self.rules.upto.as_deref().is_some_and(|u| obj.key.as_str() > u) {
            // Past the wrap-around pass's end: the main pass saw it.
        } else if naming::is_candidate(&obj.key, &self.rules.formats) {
            if self.rules.ignore_before.is_some_and(|t| obj.last_modified < t) {
                self.hold(Decision::Skip { source: obj, reason: SkipReason::TooOld });
            } else {
                self.claim(obj);
            }
        }
        // Outputs the listing has now passed for good are decided: every key that could
        // claim them, and they themselves, are at or before this one.
        while let Some(entry) = self.resolve.first_entry() {
            if entry.key().as_str() > listed.as_str() {
                break;
            }
            for output in entry.remove() {
                self.decide_output(output);
            }
        }
        self.release(out);
    }

    /// A source: each of its outputs claimed.
    fn claim(&mut self, source: ObjectInfo) {
        let specs = self.rules.outputs.specs().len();
        for spec in 0..specs {
            let output = self.rules.outputs.specs()[spec].key(&source.key);
            self.slot(&output).claimants.push((source.key.clone(), spec));
        }
        let key = source.key.clone();
        self.waiting.insert(key, Waiting { source, due: Vec::new(), skipped: Vec::new(), left: specs });
    }

    /// The listing ended: every output still waiting is decided.
    pub fn finish(&mut self, out: &mut Vec<Decision>) {
        for (_, outputs) in std::mem::take(&mut self.resolve) {
            for output in outputs {
                self.decide_output(output);
            }
        }
        self.release(out);
    }

    /// The smallest key a resumed listing must not start after: the first source still
    /// waiting for its outputs, or an output listed before a source that may claim it.
    /// Every listed key below it has been decided.
    pub fn first_pending(&self) -> Option<&str> {
        let source = self.waiting.keys().next().map(String::as_str);
        let early = self.slots.iter().find(|(_, s)| s.seen.is_some()).map(|(k, _)| k.as_str());
        source.into_iter().chain(early).min()
    }

    /// Output `key` is known: whether it exists, and who claims it.
    fn decide_output(&mut self, key: String) {
        let Some(slot) = self.slots.remove(&key) else { return };
        if slot.claimants.len() > 1 {
            let mut claimants = Vec::with_capacity(slot.claimants.len());
            for (source, spec) in &slot.claimants {
                if let Some(w) = self.waiting.get(source) {
                    claimants.push((w.source.clone(), *spec));
                }
            }
            self.hold(Decision::Conflict { claimants, output: key });
            for (source, _) in slot.claimants {
                self.output_done(&source, None);
            }
            return;
        }
        let Some((source, spec)) = slot.claimants.into_iter().next() else { return };
        let verdict = match self.waiting.get(&source) {
            Some(w) => self.verdict(&w.source, spec, key, slot.seen.as_ref()),
            None => return,
        };
        self.output_done(&source, Some(verdict));
    }

    /// One output of `source` decided (`None`: in conflict); the source is decided when
    /// its last one is.
    fn output_done(&mut self, source: &str, verdict: Option<Result<Due, SkipReason>>) {
        let Some(w) = self.waiting.get_mut(source) else { return };
        match verdict {
            Some(Ok(due)) => w.due.push(due),
            Some(Err(reason)) => w.skipped.push(reason),
            None => {}
        }
        w.left -= 1;
        if w.left > 0 {
            return;
        }
        let mut w = self.waiting.remove(source).expect("present");
        let d = if !w.due.is_empty() {
            w.due.sort_by_key(|d| d.spec);
            Decision::Convert { source: w.source, due: w.due }
        } else if let Some(reason) = w.skipped.iter().max() {
            Decision::Skip { source: w.source, reason: *reason }
        } else {
            // Every output in conflict: the conflicts speak for it.
            return;
        };
        self.hold(d);
    }

    /// Whether output `spec` of `source` (key `output`; `existing` if listed) is due.
    fn verdict(
        &self,
        source: &ObjectInfo,
        spec: usize,
        output: String,
        existing: Option<&ObjectInfo>,
    ) -> Result<Due, SkipReason> {
        if self.rules.only.is_some_and(|f| self.rules.outputs.specs()[spec].format != f) {
            return Err(SkipReason::OtherPass);
        }
        let replaces = existing.map(|w| w.etag.clone().unwrap_or_default());
        let forced = self.rules.force || self.rules.reprocess_from.is_some_and(|t| source.last_modified >= t);
        if !forced && existing.is_some_and(|w| w.last_modified >= source.last_modified) {
            return Err(SkipReason::UpToDate);
        }
        let ledger_key = self.rules.outputs.ledger_key(&source.key, spec);
        let due = match self.state.decide(&ledger_key, source.etag.as_deref(), self.rules.now) {
            LedgerDecision::Convert | LedgerDecision::Retry => Due { spec, output, replaces },
            LedgerDecision::Wait => return Err(SkipReason::RetryLater),
            LedgerDecision::Leave if forced => Due { spec, output, replaces },
            LedgerDecision::Leave => return Err(SkipReason::Ledgered),
        };
        if self.rules.defer.is_some_and(|f| self.rules.outputs.specs()[spec].format == f) {
            return Err(SkipReason::OtherPass);
        }
        Ok(due)
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
            outputs: Outputs::default(),
            ignore_before: None,
            reprocess_from: None,
            force: false,
            now: Utc.with_ymd_and_hms(2024, 1, 2, 0, 0, 0).unwrap(),
            upto: None,
            defer: None,
            only: None,
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
        let keys: Vec<&str> = d.iter().map(|d| d.key()).collect();
        assert_eq!(keys, ["a/cat.jpg", "a/cat.k.jpg", "a/dog.png", "a/eel.gif", "b.jpeg"]);
        assert!(d.contains(&Decision::Skip { source: obj("a/cat.jpg", 5), reason: SkipReason::UpToDate }));
        assert_eq!(d.len(), 5);
    }

    #[test]
    fn two_sources_for_one_webp_are_a_conflict() {
        let d = plan(vec![obj("p/x.jpg", 1), obj("p/x.png", 1), obj("p/x.webp", 2)], rules(), State::default());
        assert_eq!(d.len(), 1);
        assert!(
            matches!(&d[0], Decision::Conflict { claimants, output } if claimants.len() == 2 && output == "p/x.webp")
        );
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

    fn outputs_of(which: &[(&str, Option<i64>)]) -> Outputs {
        let raw: Vec<crate::outputs::RawOutput> = which
            .iter()
            .map(|(f, w)| crate::outputs::RawOutput { format: Some((*f).into()), width: *w, ..Default::default() })
            .collect();
        Outputs::parse(Some(&raw)).unwrap()
    }

    fn dues(d: &[Decision]) -> Vec<(String, Vec<String>)> {
        d.iter()
            .filter_map(|d| match d {
                Decision::Convert { source, due } => {
                    Some((source.key.clone(), due.iter().map(|d| d.output.clone()).collect()))
                }
                _ => None,
            })
            .collect()
    }

    #[test]
    fn each_output_is_decided_on_its_own_and_an_avif_listed_before_its_source_counts() {
        let rules =
            PlanRules { outputs: outputs_of(&[("webp", None), ("avif", None), ("webp", Some(640))]), ..rules() };
        let d = plan(
            vec![
                obj("p/cat.avif", 9), // listed before its source, up to date
                obj("p/cat.jpg", 5),
                obj("p/cat.webp", 1), // stale
                // no p/cat_w640.webp
                obj("p/dog.avif", 1),
                obj("p/dog.png", 5),
                obj("p/dog.webp", 6),
                obj("p/dog_w640.webp", 6),
            ],
            rules,
            State::default(),
        );
        assert_eq!(
            dues(&d),
            [
                ("p/cat.jpg".to_owned(), vec!["p/cat.webp".to_owned(), "p/cat_w640.webp".to_owned()]),
                ("p/dog.png".to_owned(), vec!["p/dog.avif".to_owned()])
            ]
        );
        let Decision::Convert { due, .. } = &d[0] else { panic!() };
        assert_eq!(due[0].replaces.as_deref(), Some("etag-p/cat.webp"));
        assert_eq!(due[1].replaces, None);
    }

    #[test]
    fn a_first_pass_makes_the_webps_and_a_second_only_the_avifs() {
        use crate::outputs::Format;
        let outputs = outputs_of(&[("webp", None), ("avif", None)]);
        let first = PlanRules { outputs: outputs.clone(), defer: Some(Format::Avif), ..rules() };
        let second = PlanRules { outputs, only: Some(Format::Avif), ..rules() };
        let listing = vec![obj("a.jpg", 1), obj("b.jpg", 1), obj("b.webp", 2), obj("c.avif", 2), obj("c.jpg", 1)];
        let d = plan(listing.clone(), first, State::default());
        assert_eq!(
            dues(&d),
            [("a.jpg".to_owned(), vec!["a.webp".to_owned()]), ("c.jpg".to_owned(), vec!["c.webp".to_owned()])]
        );
        // b's WebP is up to date and its AVIF left for later; c's AVIF is up to date.
        assert!(d.contains(&Decision::Skip { source: obj("b.jpg", 1), reason: SkipReason::OtherPass }));
        let d = plan(listing, second, State::default());
        assert_eq!(
            dues(&d),
            [("a.jpg".to_owned(), vec!["a.avif".to_owned()]), ("b.jpg".to_owned(), vec!["b.avif".to_owned()])]
        );
    }

    #[test]
    fn the_ledger_is_kept_per_output() {
        let outputs = outputs_of(&[("webp", None), ("avif", None)]);
        let mut state = State::default();
        let failure = Failure { code: "encode_failed", reason: "x", permanent: true };
        let key = outputs.ledger_key("a.jpg", 1);
        state.record_failure(&key, Some("etag-a.jpg".into()), failure, &RetryPolicy::default(), rules().now);
        let d = plan(vec![obj("a.jpg", 1)], PlanRules { outputs, ..rules() }, state);
        assert_eq!(dues(&d), [("a.jpg".to_owned(), vec!["a.webp".to_owned()])], "the AVIF given up alone");
    }

    #[test]
    fn an_output_two_stems_claim_is_a_conflict_for_that_output_only() {
        let rules = PlanRules { outputs: outputs_of(&[("webp", None), ("webp", Some(64))]), ..rules() };
        // cat_w64.webp: the 64 px WebP of cat.jpg and the WebP of cat_w64.jpg.
        let d = plan(vec![obj("cat.jpg", 1), obj("cat_w64.jpg", 1)], rules, State::default());
        let conflicts: Vec<&Decision> = d.iter().filter(|d| matches!(d, Decision::Conflict { .. })).collect();
        assert_eq!(conflicts.len(), 1);
        assert!(
            matches!(conflicts[0], Decision::Conflict { output, claimants } if output == "cat_w64.webp" && claimants.len() == 2)
        );
        assert_eq!(
            dues(&d),
            [
                ("cat.jpg".to_owned(), vec!["cat.webp".to_owned()]),
                ("cat_w64.jpg".to_owned(), vec!["cat_w64_w64.webp".to_owned()])
            ]
        );
    }

    use crate::test_rng::Rng;

    /// What the planner must decide, worked out from the whole listing at once.
    /// (source, its due outputs) and (output, its claimants).
    type Keyed = Vec<(String, Vec<String>)>;

    fn oracle(objects: &[ObjectInfo], rules: &PlanRules) -> (Keyed, Keyed) {
        let by_key: BTreeMap<&str, &ObjectInfo> = objects.iter().map(|o| (o.key.as_str(), o)).collect();
        let specs = rules.outputs.specs();
        let sources: Vec<&ObjectInfo> = objects
            .iter()
            .filter(|o| rules.outputs.inversions(&o.key).next().is_none())
            .filter(|o| naming::is_candidate(&o.key, &rules.formats))
            .collect();
        let mut claims: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for s in &sources {
            for spec in specs {
                claims.entry(spec.key(&s.key)).or_default().push(s.key.clone());
            }
        }
        let mut due = Vec::new();
        for s in &sources {
            let outs: Vec<String> = specs
                .iter()
                .map(|spec| spec.key(&s.key))
                .filter(|o| claims[o].len() == 1)
                .filter(|o| by_key.get(o.as_str()).is_none_or(|w| w.last_modified < s.last_modified))
                .collect();
            if !outs.is_empty() {
                due.push((s.key.clone(), outs));
            }
        }
        let conflicts = claims.into_iter().filter(|(_, c)| c.len() > 1).collect();
        (due, conflicts)
    }

    #[test]
    fn any_listing_is_planned_as_the_whole_listing_says_over_seeds() {
        let suffixes = [".jpg", ".png", ".JPG", ".webp", ".avif", "_w64.webp", "_w64.avif", ".txt", ".k.jpg"];
        let stems = ["a", "a_w64", "a.k", "ab", "a-b", "b", "p/a", "p/a_w64"];
        let choices: [&[(&str, Option<i64>)]; 4] = [
            &[("webp", None)],
            &[("webp", None), ("avif", None)],
            &[("webp", None), ("webp", Some(64)), ("avif", Some(64))],
            &[("avif", None), ("webp", Some(64)), ("webp", None), ("avif", Some(64))],
        ];
        let (mut seen_due, mut seen_conflicts, mut seen_early) = (0, 0, 0);
        for seed in 1..=400u64 {
            let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
            let rules = PlanRules { outputs: outputs_of(choices[rng.below(choices.len())]), ..rules() };
            let mut keys = BTreeMap::new();
            for _ in 0..rng.below(14) {
                let key = format!("{}{}", stems[rng.below(stems.len())], suffixes[rng.below(suffixes.len())]);
                keys.insert(key.clone(), obj(&key, rng.below(3) as i64));
            }
            let objects: Vec<ObjectInfo> = keys.into_values().collect();
            let d = plan(objects.clone(), rules.clone(), State::default());
            let (want_due, want_conflicts) = oracle(&objects, &rules);
            seen_due += want_due.iter().map(|(_, o)| o.len()).sum::<usize>();
            seen_conflicts += want_conflicts.len();
            let listed: std::collections::BTreeSet<&str> = objects.iter().map(|o| o.key.as_str()).collect();
            seen_early += objects
                .iter()
                .filter(|o| naming::is_candidate(&o.key, &rules.formats))
                .flat_map(|o| rules.outputs.specs().iter().map(move |s| (s.key(&o.key), o.key.clone())))
                .filter(|(out, src)| out < src && listed.contains(out.as_str()))
                .count();
            assert_eq!(dues(&d), want_due, "seed {seed}: {:?}", objects.iter().map(|o| &o.key).collect::<Vec<_>>());
            let mut conflicts: Vec<(String, Vec<String>)> = d
                .iter()
                .filter_map(|d| match d {
                    Decision::Conflict { claimants, output } => {
                        let mut c: Vec<String> = claimants.iter().map(|(s, _)| s.key.clone()).collect();
                        c.sort();
                        Some((output.clone(), c))
                    }
                    _ => None,
                })
                .collect();
            conflicts.sort();
            let mut want_conflicts = want_conflicts;
            want_conflicts.iter_mut().for_each(|(_, c)| c.sort());
            assert_eq!(conflicts, want_conflicts, "seed {seed}");
            let order: Vec<&str> = d.iter().map(|d| d.key()).collect();
            assert!(order.windows(2).all(|w| w[0] <= w[1]), "seed {seed}: released out of order: {order:?}");
        }
        // The seeds reach every case: due outputs, conflicts, and outputs listed before
        // their source.
        assert!(seen_due > 200 && seen_conflicts > 20 && seen_early > 5, "{seen_due} {seen_conflicts} {seen_early}");
    }
}
