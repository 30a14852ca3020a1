//! The [`PolicySet`]: the policies that apply to one identity on one connection, deciding together.

use std::sync::Arc;

use sluice_crds::{Action, Detector, MaskStrategy, MaxRowsAction, PolicyMode, StatementKind};

use crate::detectors::DetectorSet;
use crate::http::{HttpRequest, RequestPath};
use crate::json_path::JsonPath;
use crate::mask_plan::{ColumnMask, ColumnMatcher, CopyPlan, MaskPlan, MaskReason, OutputColumn};
use crate::masker::Masker;
use crate::sql::{self, SqlDialect, Statement};

use super::Identity;
use super::compile::{CompiledMasking, CompiledPolicy};
use super::decision::{Decision, EffectiveLimits, SqlDecision, Verdict, covering};

// === impl PolicySet ===

/// The notes [`sql::SqlError`]'s messages end with.
const ON_PARSE_ERROR_NOTES: [&str; 2] = [
    " (statements Sluice cannot classify are handled by the policy's onParseError)",
    "; the policy's onParseError decides whether it may run",
];

/// The policies that apply to one identity on one Connection, with their
/// masking compiled together. Built once per session (and again when the
/// policies change); every decision of the session goes through it.
#[derive(Debug)]
pub struct PolicySet {
    connection: String,
    pub(super) policies: Vec<Arc<CompiledPolicy>>,
    maskers: Vec<Masker>,
    /// For each masking rule index: its policy and its index in `spec.masking`.
    mask_sources: Vec<(String, usize)>,
    columns: ColumnMatcher,
    json_paths: Vec<(JsonPath, usize)>,
    detectors: Option<(DetectorSet, usize)>,
    limits: EffectiveLimits,
    warnings: Vec<String>,
    /// Set when the column globs could not be combined: every column is masked.
    mask_everything: bool,
    /// Whether a rule that denies or holds names tables (asked for every
    /// statement: computed once).
    pub(super) restrictive_tables: bool,
    /// Whether a rule that denies or holds names functions (likewise).
    restrictive_functions: bool,
    /// Whether a rule that denies or holds names statement kinds or
    /// `withoutWhere` (likewise): a user-defined function's body may run
    /// such a statement for the one that calls it.
    restrictive_kinds: bool,
    /// Used for a rule index that is not this set's (never expected).
    fallback: Masker,
}

/// Masking strategies from strongest to weakest: when several rules mask the same
/// value, the strongest applies.
fn strategy_rank(s: MaskStrategy) -> u8 {
    match s {
        MaskStrategy::Redact => 0,
        MaskStrategy::Hash => 1,
        MaskStrategy::Fixed => 2,
        MaskStrategy::Partial => 3,
    }
}

impl PolicySet {
    /// The policies of `policies` that name both `identity` and `connection`.
    /// `None` when there are none: the identity is not bound and gets no session.
    /// `hash_key` is the Connection's `credentials.hashKeySecretRef` value, used by
    /// `hash` masking rules that name no key of their own.
    pub fn select(
        policies: &[Arc<CompiledPolicy>],
        identity: &Identity,
        connection: &str,
        hash_key: Option<&[u8]>,
    ) -> Option<PolicySet> {
        let mut applicable: Vec<Arc<CompiledPolicy>> = policies
            .iter()
            .filter(|p| p.names_connection(connection) && p.binds(identity))
            .cloned()
            .collect();
        if applicable.is_empty() {
            return None;
        }
        applicable.sort_by(|a, b| a.name.cmp(&b.name));
        Some(PolicySet::build(connection, applicable, hash_key))
    }

    fn build(
        connection: &str,
        policies: Vec<Arc<CompiledPolicy>>,
        hash_key: Option<&[u8]>,
    ) -> Self {
        let mut warnings = Vec::new();
        let mut entries: Vec<(&CompiledPolicy, usize, &CompiledMasking)> = policies
            .iter()
            .flat_map(|p| {
                p.masking
                    .iter()
                    .enumerate()
                    .map(move |(j, m)| (p.as_ref(), j, m))
            })
            .collect();
        entries.sort_by_key(|(_, _, m)| strategy_rank(m.strategy));
        let mask_sources = entries
            .iter()
            .map(|(p, j, _)| (p.name.clone(), *j))
            .collect();
        let mut maskers = Vec::with_capacity(entries.len() + 1);
        for (p, _, m) in &entries {
            let key = m.hash_key.clone().or_else(|| hash_key.map(<[u8]>::to_vec));
            let masker = match Masker::new(m.strategy, m.keep, m.value.clone(), key) {
                Ok(masker) => masker,
                Err(e) => {
                    // Fail closed: a masking rule that cannot be built redacts.
                    warnings.push(format!(
                        "AccessPolicy {:?}: masking falls back to redact: {e}",
                        p.name
                    ));
                    redact_masker()
                }
            };
            maskers.push(masker);
        }
        let mut column_globs = Vec::new();
        let mut json_paths = Vec::new();
        let mut detector_list: Vec<Detector> = Vec::new();
        let mut detector_masker: Option<usize> = None;
        for (i, (_, _, m)) in entries.iter().enumerate() {
            column_globs.extend(m.columns.iter().map(|c| (c.clone(), i)));
            json_paths.extend(m.json_paths.iter().map(|p| (p.clone(), i)));
            if !m.detectors.is_empty() {
                detector_list.extend(m.detectors.iter().copied());
                // Entries are sorted strongest first, so the first is the strongest.
                detector_masker.get_or_insert(i);
            }
        }
        detector_list.sort();
        detector_list.dedup();
        let (columns, mask_everything) = match ColumnMatcher::new(&column_globs) {
            Ok(c) => (c, false),
            Err(e) => {
                // Patterns were validated at compile time; if combining them still
                // fails, mask every column rather than none.
                warnings.push(format!(
                    "column globs failed to compile, masking everything: {e}"
                ));
                (ColumnMatcher::default(), true)
            }
        };
        let detectors = detector_masker.map(|i| (DetectorSet::new(&detector_list), i));
        let limits = policies.iter().filter_map(|p| p.limits.as_ref()).fold(
            EffectiveLimits::default(),
            |acc, l| EffectiveLimits {
                max_rows: min_opt(acc.max_rows, l.max_rows),
                on_max_rows: if acc.on_max_rows == MaxRowsAction::Refuse {
                    MaxRowsAction::Refuse
                } else {
                    l.on_max_rows
                },
                statements_per_second: min_opt(acc.statements_per_second, l.statements_per_second),
                max_rows_affected: min_opt(acc.max_rows_affected, l.max_rows_affected),
            },
        );
        let restrictive_tables = policies.iter().any(|p| p.has_restrictive_table_rules());
        let restrictive_functions = policies.iter().any(|p| p.has_restrictive_function_rules());
        let restrictive_kinds = policies.iter().any(|p| p.has_restrictive_kind_rules());
        PolicySet {
            restrictive_tables,
            restrictive_functions,
            restrictive_kinds,
            connection: connection.to_string(),
            policies,
            maskers,
            mask_sources,
            columns,
            json_paths,
            detectors,
            limits,
            warnings,
            mask_everything,
            fallback: Masker::redact(),
        }
    }

    /// The Connection this set decides for.
    pub fn connection(&self) -> &str {
        &self.connection
    }

    /// Names of the applicable policies, in decision order.
    pub fn policy_names(&self) -> Vec<&str> {
        self.policies.iter().map(|p| p.name.as_str()).collect()
    }

    /// Problems found while building the set (masking that fell back to redact).
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// Decides one parsed statement. A statement Sluice refuses whatever the
    /// policies say ([`Statement::refused`]) is denied, dryRun or not.
    pub fn decide_statement(&self, stmt: &Statement) -> Decision {
        let verdicts: Vec<Verdict> = self
            .policies
            .iter()
            .map(|p| p.decide_statement(stmt))
            .collect();
        let decision = Decision::combine(&verdicts);
        // A rule that denies it already is the better reason to give.
        if decision.action == Action::Deny && decision.enforced == Action::Deny {
            return decision;
        }
        if let Some(why) = &stmt.refused {
            return Decision::refused_by_sluice(why);
        }
        if let Some(why) = self.laundering(stmt) {
            return Decision::refused_by_sluice(&why);
        }
        if let Some(refused) = self.renames_ruled_table(stmt) {
            return refused;
        }
        decision
    }

    /// Why `stmt` (or SQL it runs as text) writes values derived from masked
    /// columns where the workload can read them back, or passes them to a
    /// side-effecting function ([`crate::mask_plan::laundering`]). Only run
    /// when column masking applies and the statement can write or has such a
    /// function: plain reads pay nothing.
    fn laundering(&self, stmt: &Statement) -> Option<String> {
        use StatementKind as K;
        if self.columns.is_empty() {
            return None;
        }
        let writes = stmt.kinds.iter().any(|k| {
            matches!(
                k,
                K::Insert | K::Update | K::Merge | K::Create | K::Copy | K::Call | K::Alter
            )
        });
        let effects = stmt
            .functions
            .iter()
            .any(|f| crate::mask_plan::is_side_effect_function(f.rsplit('.').next().unwrap_or(f)));
        if !writes && !effects {
            return None;
        }
        crate::mask_plan::laundering(&stmt.ast, &self.columns).or_else(|| {
            stmt.embedded.iter().find_map(|inner| {
                crate::mask_plan::laundering(&inner.ast, &self.columns)
                    .map(|why| format!("in the SQL it runs as text: {why}"))
            })
        })
    }

    /// Decides a SQL string: each statement on its own, the string as the most
    /// restrictive of them. A string that does not parse gets each policy's
    /// onParseError.
    pub fn decide_sql(&self, text: &str, dialect: SqlDialect) -> SqlDecision {
        match sql::parse(text, dialect) {
            Ok(statements) => {
                // PostgreSQL's grammar reads it otherwise: refused (see crate::pg_grammar).
                if let Some(d) = crate::pg_grammar::gate(text, dialect, &statements) {
                    return crate::pg_grammar::refused(text, dialect, d);
                }
                let decided: Vec<(Statement, Decision)> = statements
                    .into_iter()
                    .map(|s| {
                        let d = self.decide_statement(&s);
                        (s, d)
                    })
                    .collect();
                let decision = self.combine_statements(&decided);
                let redacted = decided
                    .iter()
                    .map(|(s, _)| s.redacted.as_str())
                    .collect::<Vec<_>>()
                    .join("; ");
                let fingerprint = decided
                    .iter()
                    .map(|(s, _)| s.fingerprint.as_str())
                    .collect::<Vec<_>>()
                    .join(",");
                SqlDecision {
                    decision,
                    statements: decided,
                    parse_error: None,
                    redacted,
                    fingerprint,
                    too_complex: false,
                    disagreement: None,
                }
            }
            Err(e) => {
                let too_complex = matches!(
                    e,
                    sql::SqlError::TooLarge { .. } | sql::SqlError::TooComplex { .. }
                );
                // The kinds PostgreSQL reads, when it reads what sqlparser
                // cannot; of a MySQL text, the kinds and names its words may
                // be (see crate::sql::mysql_words).
                let (kinds, words) = match dialect {
                    SqlDialect::Mysql if !too_complex => {
                        let words = sql::mysql_words(text);
                        (sql::mysql_kinds(&words), words)
                    }
                    _ => (
                        crate::pg_grammar::unparsed_kinds(text, dialect, too_complex),
                        Vec::new(),
                    ),
                };
                let verdicts: Vec<Verdict> = self
                    .policies
                    .iter()
                    .map(|p| p.verdict_unparsed(&kinds, &words))
                    .collect();
                // Too large or complex: refused whatever onParseError says,
                // or padding a statement would take it past every rule.
                // Under masking of result values, a text Sluice cannot read
                // could copy masked values out (`COPY (…) TO STDOUT`), store
                // them where no rule looks (`INSERT … SELECT`, `DO`), or move
                // a table out of the rules' sight (`DETACH PARTITION`,
                // `SET SCHEMA`): refused whatever onParseError says (a text
                // the policies deny already stays theirs).
                let combined = Decision::combine(&verdicts);
                let mut decision = if too_complex {
                    Decision::refused_by_sluice("the statement is too large or too complex")
                } else if self.masks_sql_values() && combined.enforced != Action::Deny {
                    Decision::refused_by_sluice(
                        "masking applies on this Connection and Sluice cannot parse the statement, \
                         so it cannot tell which values it reads or where it sends them \
                         (onParseError: allow does not apply under column masking or detectors)",
                    )
                } else {
                    combined
                };
                decision.reason = if decision.policy.is_none() {
                    // Refused whatever onParseError says: the parse error's
                    // note that onParseError decides would contradict it.
                    let why = ON_PARSE_ERROR_NOTES
                        .iter()
                        .fold(e.to_string(), |why, note| why.replace(note, ""));
                    format!("{}: {why}", decision.reason)
                } else {
                    format!("{}: {e}", decision.reason)
                };
                // Redacting tokenizes: not for text past the token bound.
                let redacted = if too_complex {
                    format!("<statement too complex to classify: {} bytes>", text.len())
                } else {
                    sql::redact(text, dialect)
                };
                SqlDecision {
                    decision,
                    statements: Vec::new(),
                    parse_error: Some(e.to_string()),
                    redacted,
                    fingerprint: String::new(),
                    too_complex,
                    disagreement: None,
                }
            }
        }
    }

    /// Whether a rule that denies or holds names tables: which relations a
    /// name stands for then matters to the decision (see
    /// [`PolicySet::through_relations`]).
    pub fn has_restrictive_table_rules(&self) -> bool {
        self.restrictive_tables
    }

    /// Whether a rule that denies or holds names functions: which functions
    /// the views a statement reads call then matters to the decision (see
    /// [`PolicySet::through_relations`]).
    pub fn has_restrictive_function_rules(&self) -> bool {
        self.restrictive_functions
    }

    /// Whether what a statement's names stand for (views, partitions, the
    /// bodies of user-defined functions) can make its decision stricter: a
    /// rule that denies or holds names tables, functions, statement kinds
    /// or `withoutWhere`. When not, nothing need be looked up.
    pub fn follows_names(&self) -> bool {
        self.restrictive_tables || self.restrictive_functions || self.restrictive_kinds
    }

    /// The most restrictive of per-statement decisions (the first on ties). An
    /// empty string decides as allow: it runs nothing.
    pub(super) fn combine_statements(&self, decided: &[(Statement, Decision)]) -> Decision {
        let mut best: Option<&Decision> = None;
        for (_, d) in decided {
            best = match best {
                Some(b) if (b.enforced, b.action) >= (d.enforced, d.action) => Some(b),
                _ => Some(d),
            };
        }
        if let Some(b) = best.filter(|b| b.enforced == Action::RequireApproval) {
            let held: Vec<&Decision> = decided
                .iter()
                .map(|(_, d)| d)
                .filter(|d| d.enforced == Action::RequireApproval)
                .collect();
            let Some(cover) = covering(&held, |d| d.approval.as_ref()) else {
                return Decision::mixed_approvals(held.iter().map(|d| {
                    (
                        d.enforced_policy.as_deref().unwrap_or_default(),
                        d.enforced_rule.as_deref(),
                    )
                }));
            };
            let mut chosen = cover.clone();
            chosen.action = chosen.action.max(b.action);
            chosen.dry_run = chosen.action != chosen.enforced;
            return chosen;
        }
        best.cloned()
            .unwrap_or_else(|| Decision::unattributed(Action::Allow, "empty statement".into()))
    }

    /// Decides an HTTP request.
    ///
    /// A path that decodes ambiguously (double encoding, malformed escapes,
    /// control characters) is refused outright: servers disagree on what it
    /// means, so no rule can be trusted to have seen the path the upstream will.
    /// The HTTP proxy answers such a request with 400 before asking.
    pub fn decide_http(&self, req: &HttpRequest<'_>) -> Decision {
        match RequestPath::parse(req.path) {
            Ok(path) => self.decide_http_at(req, &path),
            Err(e) => Decision::denied(format!("deny: {e}")),
        }
    }

    /// [`PolicySet::decide_http`] of a request whose path was decoded
    /// already (`path`: `req.path`'s, which the caller refused when it was
    /// ambiguous): the path is not decoded again.
    pub fn decide_http_at(&self, req: &HttpRequest<'_>, path: &RequestPath) -> Decision {
        let verdicts: Vec<Verdict> = self
            .policies
            .iter()
            .map(|p| p.decide_http(req, path))
            .collect();
        Decision::combine(&verdicts)
    }

    /// Whether any masking applies on this Connection (columns, paths or detectors).
    pub fn has_masking(&self) -> bool {
        !self.maskers.is_empty()
    }

    /// Whether SQL results are masked on this Connection: column rules,
    /// detectors, or everything (JSONPath rules apply to HTTP only).
    pub fn masks_sql_values(&self) -> bool {
        !self.columns.is_empty() || self.detectors.is_some() || self.mask_everything
    }

    /// Which result columns of `stmt` to mask, given the server's description of
    /// them. `matcher`: this set's [`PolicySet::column_matcher`], or that matcher
    /// extended ([`ColumnMatcher::with_columns`], [`ColumnMatcher::with_functions`])
    /// with what the statement reads out of its own sight (views, user-defined
    /// functions).
    pub fn mask_plan(
        &self,
        stmt: &Statement,
        output: &[OutputColumn],
        matcher: &ColumnMatcher,
    ) -> MaskPlan {
        if self.mask_everything {
            let all = ColumnMask::Mask {
                rule: self.maskers.len(),
                reason: MaskReason::Uncertain("masking rules could not be combined".into()),
            };
            return MaskPlan {
                columns: vec![all; output.len()],
            };
        }
        crate::mask_plan::plan_rows(&stmt.ast, output, matcher)
    }

    /// How to mask `COPY … TO STDOUT`, or why it must be refused; `matcher` as
    /// in [`PolicySet::mask_plan`].
    pub fn copy_plan(
        &self,
        stmt: &Statement,
        table_columns: Option<&[String]>,
        matcher: &ColumnMatcher,
    ) -> CopyPlan {
        if self.mask_everything {
            return CopyPlan::Deny("masking rules could not be combined".into());
        }
        crate::mask_plan::plan_copy(&stmt.ast, matcher, table_columns)
    }

    /// The column matcher (for callers that resolve origins themselves).
    pub fn column_matcher(&self) -> &ColumnMatcher {
        &self.columns
    }

    /// The masker of a rule index from a [`MaskPlan`] or a JSONPath entry.
    pub fn masker(&self, rule: usize) -> &Masker {
        // Indices come from this set's own matcher; the fallback only guards
        // against a caller mixing sets, and the strongest masker is the safe choice.
        self.maskers.get(rule).unwrap_or(&self.fallback)
    }

    /// Where masking rule `rule` comes from: its AccessPolicy's name and its
    /// index in that policy's `spec.masking`. `None` for the fallback index
    /// (masking rules that could not be combined).
    pub fn mask_rule_source(&self, rule: usize) -> Option<(&str, usize)> {
        self.mask_sources
            .get(rule)
            .map(|(policy, index)| (policy.as_str(), *index))
    }

    /// All maskers, indexed by rule.
    pub fn maskers(&self) -> &[Masker] {
        &self.maskers
    }

    /// The detectors to run on every text value, and the masker for what they find.
    pub fn detectors(&self) -> Option<(&DetectorSet, &Masker)> {
        self.detectors.as_ref().map(|(d, i)| (d, self.masker(*i)))
    }

    /// The detectors with the index of their masker (for [`crate::json_mask::mask_json`]).
    pub fn detectors_indexed(&self) -> Option<(&DetectorSet, usize)> {
        self.detectors.as_ref().map(|(d, i)| (d, *i))
    }

    /// JSONPaths to mask in HTTP responses, each with its masker index.
    pub fn json_paths(&self) -> &[(JsonPath, usize)] {
        &self.json_paths
    }

    /// The limits in force.
    pub fn limits(&self) -> EffectiveLimits {
        self.limits
    }

    /// The name of the applicable policy whose `maxRowsAffected` is in force
    /// (the smallest; the first such policy on a tie).
    pub fn max_rows_affected_policy(&self) -> Option<&str> {
        let limit = self.limits.max_rows_affected?;
        self.policies
            .iter()
            .find(|p| p.limits.as_ref().and_then(|l| l.max_rows_affected) == Some(limit))
            .map(|p| p.name.as_str())
    }

    /// The name of an applicable policy in `enforce` mode that makes the
    /// session read-only (`spec.readOnly`; most restrictive wins), if any.
    /// A `dryRun` policy never blocks, so its readOnly does not apply.
    pub fn read_only(&self) -> Option<&str> {
        self.policies
            .iter()
            .find(|p| p.read_only && p.mode == PolicyMode::Enforce)
            .map(|p| p.name.as_str())
    }

    /// How much of a session is recorded (`spec.recording`): the most of any
    /// applicable policy, `dryRun` ones included (recording blocks nothing).
    pub fn recording(&self) -> sluice_crds::Recording {
        self.policies
            .iter()
            .map(|p| p.recording)
            .max()
            .unwrap_or_default()
    }
}

fn redact_masker() -> Masker {
    Masker::redact()
}

fn min_opt<T: Ord>(a: Option<T>, b: Option<T>) -> Option<T> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}
