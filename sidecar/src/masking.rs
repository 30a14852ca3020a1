//! A session's value masking, shared by the data planes: the maskers of
//! the masking rules in force, their constant replacements, the detectors,
//! and the limits that act on results. How a result's columns map to
//! masking rules is each plane's business (PostgreSQL:
//! [`crate::enforcement::masks`]; HTTP: JSON paths in `crate::http`).

use std::sync::Arc;

use sluice_crds::{MaskStrategy, MaxRowsAction};
use sluice_policy::audit::AuditMaskCount;
use sluice_policy::engine::PolicySet;
use sluice_policy::mask_plan::ColumnMatcher;

/// Limits that act on results.
#[derive(Debug, Clone, Default)]
pub struct ResultLimits {
    /// Most rows one result may return.
    pub max_rows: Option<u64>,
    /// Past `max_rows`: refuse (true) or truncate (false).
    pub refuse_past_max: bool,
    /// Most statements per second (one bucket per identity and Connection:
    /// see [`crate::rate`]).
    pub statements_per_second: Option<u32>,
    /// Most rows one write may change (`maxRowsAffected`), and the policy
    /// that sets it.
    pub max_rows_affected: Option<(u64, Arc<str>)>,
}

/// How many masking rules [`MaskCounts`] counts in place; a set with more
/// (not expected: a Connection's policies rarely carry that many) counts
/// the rest in a list.
const COUNTED_IN_PLACE: usize = 16;

/// The most masking rules counted apart; values of a rule past it (a
/// rule index no set produces) are counted as Sluice's own.
const MAX_COUNTED_RULES: usize = 4096;

/// Values masked in one result, by masking rule (the rule indices of
/// [`PolicySet::masker`]): counting a value is an add in a fixed array, no
/// map per row. [`Masking::mask_counts`] names the rules for the audit.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MaskCounts {
    first: [u64; COUNTED_IN_PLACE],
    more: Vec<u64>,
    /// Values masked by no rule (a row wider than its description).
    unruled: u64,
}

impl MaskCounts {
    /// One value masked by rule `rule` (`None`: by Sluice, no rule).
    pub fn add(&mut self, rule: Option<usize>) {
        let slot = match rule {
            Some(r) if r < COUNTED_IN_PLACE => &mut self.first[r],
            Some(r) if r < MAX_COUNTED_RULES => {
                let i = r - COUNTED_IN_PLACE;
                if self.more.len() <= i {
                    self.more.resize(i + 1, 0);
                }
                &mut self.more[i]
            }
            _ => &mut self.unruled,
        };
        *slot = slot.saturating_add(1);
    }

    /// Adds `other`'s counts (the results of one query string).
    pub fn add_all(&mut self, other: &MaskCounts) {
        for (a, b) in self.first.iter_mut().zip(&other.first) {
            *a = a.saturating_add(*b);
        }
        if self.more.len() < other.more.len() {
            self.more.resize(other.more.len(), 0);
        }
        for (a, b) in self.more.iter_mut().zip(&other.more) {
            *a = a.saturating_add(*b);
        }
        self.unruled = self.unruled.saturating_add(other.unruled);
    }

    /// Whether nothing was masked.
    pub fn is_empty(&self) -> bool {
        self.unruled == 0 && self.first.iter().chain(&self.more).all(|n| *n == 0)
    }

    /// These counts as the audit records them, the rules named from `set`
    /// (see [`Masking::mask_counts`]; the HTTP plane's response maskers
    /// count into one too).
    pub fn for_audit(&self, set: &PolicySet) -> Vec<AuditMaskCount> {
        let counts = self;
        if counts.is_empty() {
            return Vec::new();
        }
        let mut out: Vec<AuditMaskCount> = Vec::new();
        let mut unruled = counts.unruled;
        for (rule, count) in counts.by_rule() {
            match set.mask_rule_source(rule) {
                Some((policy, index)) => out.push(AuditMaskCount {
                    count,
                    index: Some(index as u64),
                    policy: Some(policy.to_string()),
                }),
                None => unruled = unruled.saturating_add(count),
            }
        }
        out.sort_by(|a, b| (&a.policy, a.index).cmp(&(&b.policy, b.index)));
        if unruled > 0 {
            out.push(AuditMaskCount {
                count: unruled,
                index: None,
                policy: None,
            });
        }
        out
    }

    /// The rules that masked values, with their counts, in rule order.
    fn by_rule(&self) -> impl Iterator<Item = (usize, u64)> + '_ {
        self.first
            .iter()
            .chain(&self.more)
            .copied()
            .enumerate()
            .filter(|(_, n)| *n > 0)
    }
}

/// A session's masking: builds masks for results and applies maskers.
#[derive(Debug)]
pub struct Masking {
    pub(crate) set: Arc<PolicySet>,
    /// Per masking rule, the replacement when it does not depend on the
    /// value (redact, fixed).
    constants: Vec<Option<bytes::Bytes>>,
    active: bool,
    pub(crate) column_rules: bool,
    pub(crate) detectors: bool,
    /// The masking rule whose masker masks what the detectors find.
    detector_rule: Option<usize>,
    limits: ResultLimits,
}

impl Masking {
    /// The masking of `set`'s rules.
    pub fn new(set: Arc<PolicySet>) -> Self {
        let limits = set.limits();
        let detectors = set.detectors().is_some();
        let constants = set
            .maskers()
            .iter()
            .map(|m| match m.strategy() {
                MaskStrategy::Redact | MaskStrategy::Fixed => {
                    Some(bytes::Bytes::from(m.mask("").into_bytes()))
                }
                MaskStrategy::Partial | MaskStrategy::Hash => None,
            })
            .collect();
        Masking {
            constants,
            active: set.has_masking(),
            column_rules: has_column_globs(&set),
            detectors,
            detector_rule: set.detectors_indexed().map(|(_, rule)| rule),
            limits: ResultLimits {
                max_rows: limits.max_rows,
                refuse_past_max: limits.on_max_rows == MaxRowsAction::Refuse,
                statements_per_second: limits.statements_per_second,
                max_rows_affected: limits
                    .max_rows_affected
                    .map(|n| (n, Arc::from(set.max_rows_affected_policy().unwrap_or("-")))),
            },
            set,
        }
    }

    /// Whether any masking applies (otherwise rows pass untouched).
    pub fn active(&self) -> bool {
        self.active
    }

    /// Whether column rules apply (result columns must be resolved to tables).
    pub fn has_column_rules(&self) -> bool {
        self.column_rules
    }

    /// The result limits.
    pub fn limits(&self) -> &ResultLimits {
        &self.limits
    }

    /// The policy that makes the session read-only (`spec.readOnly`), if any.
    pub fn read_only(&self) -> Option<&str> {
        self.set.read_only()
    }

    /// How much of the session is recorded (`spec.recording`, see [`crate::recording`]).
    pub fn recording(&self) -> sluice_crds::Recording {
        self.set.recording()
    }

    /// The masked form of a value under masking rule `rule`.
    pub fn mask(&self, rule: usize, value: &str) -> String {
        self.set.masker(rule).mask(value)
    }

    /// The replacement of rule `rule` when it is the same for every value.
    pub fn constant_mask(&self, rule: usize) -> Option<bytes::Bytes> {
        self.constants.get(rule).cloned().flatten()
    }

    /// `text` with what the detectors find masked, or `None` when they find nothing.
    pub fn detect(&self, text: &str) -> Option<String> {
        let (detectors, masker) = self.set.detectors()?;
        let findings = detectors.find(text);
        (!findings.is_empty()).then(|| masker.mask_findings(text, &findings))
    }

    /// The masking rule the detectors' findings are masked by (counted
    /// under it in [`MaskCounts`]).
    pub fn detector_rule(&self) -> Option<usize> {
        self.detector_rule
    }

    /// `counts` as the audit records them: per masking rule that masked
    /// values, its AccessPolicy, its index in that policy's `spec.masking`
    /// and the count (sorted by policy and index); values no rule masked
    /// last, without either. Empty (no allocation) when nothing was masked.
    pub fn mask_counts(&self, counts: &MaskCounts) -> Vec<AuditMaskCount> {
        counts.for_audit(&self.set)
    }

    /// The column matcher of the masking rules in force (for
    /// [`crate::postgres::catalog::Catalog::extended_matcher`]).
    pub fn column_matcher(&self) -> &ColumnMatcher {
        self.set.column_matcher()
    }
}

fn has_column_globs(set: &PolicySet) -> bool {
    !set.column_matcher().is_empty()
}
