//! A session's value masking, shared by the data planes: the maskers of
//! the masking rules in force, their constant replacements, the detectors,
//! and the limits that act on results. How a result's columns map to
//! masking rules is each plane's business (PostgreSQL:
//! [`crate::enforcement::masks`]; HTTP: JSON paths in `crate::http`).

use std::sync::Arc;

use sluice_crds::{MaskStrategy, MaxRowsAction};
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

    /// The column matcher of the masking rules in force (for
    /// [`crate::postgres::catalog::Catalog::extended_matcher`]).
    pub fn column_matcher(&self) -> &ColumnMatcher {
        self.set.column_matcher()
    }
}

fn has_column_globs(set: &PolicySet) -> bool {
    !set.column_matcher().is_empty()
}
