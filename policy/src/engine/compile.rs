//! Compiling an AccessPolicy: rules, name globs and masking.

use globset::{GlobBuilder, GlobMatcher};
use regex::Regex;
use sluice_crds::{
    AccessPolicy, Action, Approval, Detector, MaskStrategy, ParseErrorAction, PolicyMode,
    RuleMatch, SecretKeyRef, StatementKind, Subject,
};

use crate::http::{HttpMatcher, HttpRequest, RequestPath};
use crate::json_path::JsonPath;
use crate::mask_plan::ColumnMatcher;
use crate::sql::Statement;

use super::decision::{Verdict, VerdictReason};
use super::{CompileError, Identity};

// === impl CompiledPolicy ===

/// One AccessPolicy, validated and compiled for fast decisions.
#[derive(Debug)]
pub struct CompiledPolicy {
    /// Namespace of the policy.
    pub namespace: String,
    /// Name of the policy.
    pub name: String,
    /// `enforce` or `dryRun`.
    pub mode: PolicyMode,
    subjects: Vec<Subject>,
    connections: Vec<String>,
    rules: Vec<CompiledRule>,
    default_action: Action,
    on_parse_error: ParseErrorAction,
    pub(super) masking: Vec<CompiledMasking>,
    pub(super) limits: Option<sluice_crds::Limits>,
    /// `spec.readOnly`.
    pub(super) read_only: bool,
    /// `spec.recording`.
    pub(super) recording: sluice_crds::Recording,
}

#[derive(Debug)]
pub(super) struct CompiledRule {
    name: String,
    action: Action,
    approval: Option<Approval>,
    matcher: RuleMatcher,
}

/// Which protocol family a rule applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Family {
    Both,
    Sql,
    Http,
}

#[derive(Debug)]
struct RuleMatcher {
    family: Family,
    statements: Vec<StatementKind>,
    tables: Vec<NameGlob>,
    functions: Vec<NameGlob>,
    without_where: Option<bool>,
    text_pattern: Option<Regex>,
    http: Option<HttpMatcher>,
}

#[derive(Debug)]
pub(super) struct CompiledMasking {
    pub(super) columns: Vec<String>,
    pub(super) json_paths: Vec<JsonPath>,
    pub(super) detectors: Vec<Detector>,
    pub(super) strategy: MaskStrategy,
    pub(super) keep: Option<u32>,
    pub(super) value: Option<String>,
    /// Resolved from `keySecretRef`; `None` defers to the Connection's hash key.
    pub(super) hash_key: Option<Vec<u8>>,
}

/// Reads a Secret key while compiling (hash keys). Returns `None` when absent.
pub trait SecretSource {
    /// The bytes of `key` in Secret `name` of the policy's namespace.
    fn secret_key(&self, name: &str, key: &str) -> Option<Vec<u8>>;
}

/// A [`SecretSource`] with no Secrets at all.
pub struct NoSecrets;

impl SecretSource for NoSecrets {
    fn secret_key(&self, _: &str, _: &str) -> Option<Vec<u8>> {
        None
    }
}

impl CompiledPolicy {
    /// Validates and compiles an AccessPolicy. Errors name the offending field.
    pub fn compile(ap: &AccessPolicy, secrets: &dyn SecretSource) -> Result<Self, CompileError> {
        let spec = &ap.spec;
        if spec.subjects.is_empty() {
            return Err(CompileError::Empty {
                field: "spec.subjects".into(),
                message: "a policy needs at least one subject (serviceAccount or group)".into(),
            });
        }
        if spec.connections.is_empty() {
            return Err(CompileError::Empty {
                field: "spec.connections".into(),
                message: "a policy needs at least one Connection name".into(),
            });
        }
        for (i, s) in spec.subjects.iter().enumerate() {
            if s.service_account.is_some() == s.group.is_some() {
                return Err(CompileError::InvalidRule {
                    field: format!("spec.subjects[{i}]"),
                    message: "set exactly one of serviceAccount and group".into(),
                });
            }
        }
        let rules = spec
            .rules
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let field = format!("spec.rules[{i}]");
                if r.action == Action::RequireApproval && r.approval.is_none() {
                    return Err(CompileError::InvalidRule {
                        field,
                        message: "action requireApproval needs approval.approvers".into(),
                    });
                }
                Ok(CompiledRule {
                    name: r.name.clone(),
                    action: r.action,
                    approval: r.approval.clone(),
                    matcher: RuleMatcher::compile(&r.match_, &format!("{field}.match"))?,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let masking = spec
            .masking
            .iter()
            .enumerate()
            .map(|(i, m)| compile_masking(m, &format!("spec.masking[{i}]"), secrets))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(CompiledPolicy {
            namespace: ap.metadata.namespace.clone().unwrap_or_default(),
            name: ap.metadata.name.clone().unwrap_or_default(),
            mode: spec.mode,
            subjects: spec.subjects.clone(),
            connections: spec.connections.clone(),
            rules,
            default_action: spec.default_action,
            on_parse_error: spec.on_parse_error,
            masking,
            limits: spec.limits.clone(),
            read_only: spec.read_only,
            recording: spec.recording,
        })
    }

    /// Whether this policy names `identity` as a subject.
    pub fn binds(&self, identity: &Identity) -> bool {
        self.subjects
            .iter()
            .any(|s| match (&s.service_account, &s.group) {
                (Some(sa), _) => {
                    let ns = s.namespace.as_deref().unwrap_or(&self.namespace);
                    *sa == identity.service_account && ns == identity.namespace
                }
                (None, Some(g)) => identity.groups.iter().any(|ig| ig == g),
                (None, None) => false,
            })
    }

    /// Whether this policy names the Connection.
    pub fn names_connection(&self, connection: &str) -> bool {
        self.connections.iter().any(|c| c == connection)
    }

    /// The Connection names this policy grants.
    pub fn connections(&self) -> &[String] {
        &self.connections
    }

    pub(super) fn verdict_for<'a>(
        &'a self,
        rule: Option<&'a CompiledRule>,
        reason: VerdictReason,
    ) -> Verdict<'a> {
        match rule {
            Some(r) => Verdict {
                action: r.action,
                policy: &self.name,
                rule: Some(&r.name),
                approval: r.approval.as_ref(),
                dry_run: self.mode == PolicyMode::DryRun,
                reason,
            },
            None => Verdict {
                action: match reason {
                    VerdictReason::ParseError => match self.on_parse_error {
                        ParseErrorAction::Deny => Action::Deny,
                        ParseErrorAction::Allow => Action::Allow,
                    },
                    _ => self.default_action,
                },
                policy: &self.name,
                rule: None,
                approval: None,
                dry_run: self.mode == PolicyMode::DryRun,
                reason,
            },
        }
    }

    /// onParseError's verdict on a text Sluice could not parse, made
    /// stricter by the deny and requireApproval rules that name a kind
    /// PostgreSQL reads in it (`kinds`; their other conditions cannot be
    /// checked and are taken to match; see [`crate::pg_grammar`]). Of a
    /// MySQL text, `kinds` are those its words may name and `words` those
    /// words ([`crate::sql::mysql_words`]): a rule without `statements` is
    /// stricter too when one of the words may be a table or a function it
    /// names (`HANDLER customers READ FIRST` under a rule denying every
    /// statement on `customers`).
    pub(super) fn verdict_unparsed(
        &self,
        kinds: &[StatementKind],
        words: &[String],
    ) -> Verdict<'_> {
        let base = self.verdict_for(None, VerdictReason::ParseError);
        let sql_rules = || {
            self.rules
                .iter()
                .filter(|r| r.matcher.family != Family::Http)
        };
        let by_kind = crate::pg_grammar::strictest_rule(
            sql_rules(),
            |r| (r.action, r.matcher.statements.as_slice()),
            base.action,
            kinds,
        );
        // Dynamic SQL may name any table or function.
        let dynamic = crate::sql::mysql_dynamic(words);
        let names_word = |r: &CompiledRule| {
            let m = &r.matcher;
            m.statements.is_empty()
                && (dynamic && (!m.tables.is_empty() || !m.functions.is_empty())
                    || words.iter().any(|w| {
                        m.tables.iter().any(|g| g.matches(w))
                            || m.functions.iter().any(|g| g.matches(w))
                    }))
        };
        let by_name = sql_rules()
            .filter(|r| r.action > base.action && names_word(r))
            .fold(None::<&CompiledRule>, |best, r| match best {
                Some(b) if b.action >= r.action => Some(b),
                _ => Some(r),
            });
        let rule = match (by_kind, by_name) {
            (Some(k), Some(n)) if n.action > k.action => Some(n),
            (Some(k), _) => Some(k),
            (None, n) => n,
        };
        rule.map_or(base, |r| self.verdict_for(Some(r), VerdictReason::Rule))
    }

    /// Whether a rule of this policy that denies or holds names tables.
    pub(super) fn has_restrictive_table_rules(&self) -> bool {
        self.restrictive_table_rules().next().is_some()
    }

    /// Whether a rule of this policy that denies or holds names functions.
    pub(super) fn has_restrictive_function_rules(&self) -> bool {
        self.rules.iter().any(|r| {
            r.action != Action::Allow
                && r.matcher.family != Family::Http
                && !r.matcher.functions.is_empty()
        })
    }

    /// Whether a rule of this policy that denies or holds names statement
    /// kinds or `withoutWhere`.
    pub(super) fn has_restrictive_kind_rules(&self) -> bool {
        self.rules.iter().any(|r| {
            r.action != Action::Allow
                && r.matcher.family != Family::Http
                && (!r.matcher.statements.is_empty() || r.matcher.without_where.is_some())
        })
    }

    /// The name of a rule of this policy that denies or holds, names
    /// tables, and applies to statements of `kind` (it names the kind, or
    /// none), if any.
    pub(super) fn restrictive_table_rule_for(&self, kind: StatementKind) -> Option<&str> {
        self.restrictive_table_rules()
            .find(|r| r.matcher.statements.is_empty() || r.matcher.statements.contains(&kind))
            .map(|r| r.name.as_str())
    }

    /// The name of this policy's first rule that denies or holds and names
    /// a table qualified with its schema (`public.customers`, `s.*`):
    /// renaming a schema takes its tables out of such a rule.
    pub(super) fn restrictive_qualified_table_rule(&self) -> Option<&str> {
        self.restrictive_table_rules()
            .find(|r| r.matcher.tables.iter().any(|t| t.qualified))
            .map(|r| r.name.as_str())
    }

    /// The verdict of this policy's rule named `rule`, if it has one.
    pub(super) fn verdict_of(&self, rule: &str) -> Option<Verdict<'_>> {
        let r = self.rules.iter().find(|r| r.name == rule)?;
        Some(self.verdict_for(Some(r), VerdictReason::Rule))
    }

    /// This policy's SQL rules that deny or hold and name tables.
    fn restrictive_table_rules(&self) -> impl Iterator<Item = &CompiledRule> {
        self.rules.iter().filter(|r| {
            r.action != Action::Allow
                && r.matcher.family != Family::Http
                && !r.matcher.tables.is_empty()
        })
    }

    /// The names of this policy's rules that deny or hold, name tables and
    /// match `stmt` (every one, not only the first).
    pub(super) fn restrictive_table_rules_matching(&self, stmt: &Statement) -> Vec<&str> {
        self.restrictive_table_rules()
            .filter(|r| r.matcher.matches_sql(stmt, r.action))
            .map(|r| r.name.as_str())
            .collect()
    }

    /// The verdict of the first rule that denies or holds and matches
    /// `stmt`, if any (allow rules skipped: see
    /// [`super::PolicySet::through_relations`]).
    pub(super) fn restrictive_verdict(&self, stmt: &Statement) -> Option<Verdict<'_>> {
        let rule = self.rules.iter().find(|r| {
            r.action != Action::Allow
                && r.matcher.family != Family::Http
                && r.matcher.matches_sql(stmt, r.action)
        })?;
        Some(self.verdict_for(Some(rule), VerdictReason::Rule))
    }

    pub(super) fn decide_statement(&self, stmt: &Statement) -> Verdict<'_> {
        let rule = self
            .rules
            .iter()
            .find(|r| r.matcher.family != Family::Http && r.matcher.matches_sql(stmt, r.action));
        let reason = if rule.is_some() {
            VerdictReason::Rule
        } else {
            VerdictReason::Default
        };
        self.verdict_for(rule, reason)
    }

    /// `path`: `req.path`, decoded.
    pub(super) fn decide_http(&self, req: &HttpRequest<'_>, path: &RequestPath) -> Verdict<'_> {
        let rule = self.rules.iter().find(|r| {
            r.matcher.family != Family::Sql
                && r.matcher
                    .http
                    .as_ref()
                    .is_none_or(|m| m.matches_at(req, path))
        });
        let reason = if rule.is_some() {
            VerdictReason::Rule
        } else {
            VerdictReason::Default
        };
        self.verdict_for(rule, reason)
    }
}

fn compile_masking(
    m: &sluice_crds::MaskingRule,
    field: &str,
    secrets: &dyn SecretSource,
) -> Result<CompiledMasking, CompileError> {
    if m.columns.is_empty() && m.json_paths.is_empty() && m.detectors.is_empty() {
        return Err(CompileError::InvalidRule {
            field: field.into(),
            message: "a masking rule needs columns, jsonPaths or detectors".into(),
        });
    }
    if m.strategy == MaskStrategy::Fixed && m.value.is_none() {
        return Err(CompileError::InvalidRule {
            field: format!("{field}.value"),
            message: "strategy fixed needs value".into(),
        });
    }
    for (i, c) in m.columns.iter().enumerate() {
        let parts = c.split('.').count();
        if !(2..=3).contains(&parts) || c.split('.').any(str::is_empty) {
            return Err(CompileError::InvalidPattern {
                field: format!("{field}.columns[{i}]"),
                pattern: c.clone(),
                message: "write table.column or schema.table.column (globs allowed)".into(),
            });
        }
        // Validate the glob syntax once here so the error names the field.
        ColumnMatcher::new(&[(c.clone(), 0)]).map_err(|e| CompileError::InvalidPattern {
            field: format!("{field}.columns[{i}]"),
            pattern: c.clone(),
            message: e.to_string(),
        })?;
    }
    let json_paths = m
        .json_paths
        .iter()
        .enumerate()
        .map(|(i, p)| {
            JsonPath::parse(p).map_err(|e| CompileError::InvalidPattern {
                field: format!("{field}.jsonPaths[{i}]"),
                pattern: p.clone(),
                message: e.to_string(),
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let hash_key = match &m.key_secret_ref {
        Some(SecretKeyRef { name, key }) => Some(secrets.secret_key(name, key).ok_or_else(
            || CompileError::SecretNotFound {
                field: format!("{field}.keySecretRef"),
                secret: name.clone(),
                key: key.clone(),
            },
        )?),
        None => None,
    };
    Ok(CompiledMasking {
        columns: m.columns.clone(),
        json_paths,
        detectors: m.detectors.clone(),
        strategy: m.strategy,
        keep: m.keep,
        value: m.value.clone(),
        hash_key,
    })
}

// === impl RuleMatcher ===

impl RuleMatcher {
    fn compile(m: &RuleMatch, field: &str) -> Result<Self, CompileError> {
        let (sql, http) = (m.has_sql_fields(), m.has_http_fields());
        let family = match (sql, http) {
            (false, false) => Family::Both,
            (true, false) => Family::Sql,
            (false, true) => Family::Http,
            (true, true) => {
                return Err(CompileError::InvalidRule {
                    field: field.into(),
                    message: "a rule matches SQL (statements, tables, functions, withoutWhere, \
                              textPattern) or HTTP (methods, paths, query, jsonBody), not both; \
                              split it into two rules"
                        .into(),
                });
            }
        };
        let globs = |list: &[String], name: &str| {
            list.iter()
                .enumerate()
                .map(|(i, p)| NameGlob::new(p, &format!("{field}.{name}[{i}]")))
                .collect::<Result<Vec<_>, _>>()
        };
        let text_pattern = m
            .text_pattern
            .as_ref()
            .map(|p| {
                regex::RegexBuilder::new(p)
                    .size_limit(1 << 20)
                    .build()
                    .map_err(|e| CompileError::InvalidPattern {
                        field: format!("{field}.textPattern"),
                        pattern: p.clone(),
                        message: e.to_string(),
                    })
            })
            .transpose()?;
        let http_matcher = if http {
            Some(
                HttpMatcher::compile(m).map_err(|e| CompileError::InvalidPattern {
                    field: field.into(),
                    pattern: String::new(),
                    message: e.to_string(),
                })?,
            )
        } else {
            None
        };
        Ok(RuleMatcher {
            family,
            statements: m.statements.clone(),
            tables: globs(&m.tables, "tables")?,
            functions: globs(&m.functions, "functions")?,
            without_where: m.without_where,
            text_pattern,
            http: http_matcher,
        })
    }

    /// Whether the rule's SQL conditions hold for `st`. A statement's
    /// kinds, tables and functions are supersets (a statement nested in it
    /// adds its own): a rule that denies or holds matches when a list of it
    /// names any of them, a rule that allows only when it names all of them
    /// (and there is one): an allow rule naming `select` let `UPDATE t SET
    /// x = (SELECT 0)` through under `defaultAction: deny`, and one naming
    /// table `customers` a join reading `orders`.
    fn matches_sql(&self, st: &Statement, action: Action) -> bool {
        let allow = action == Action::Allow;
        (self.statements.is_empty() || covers(&st.kinds, allow, |k| self.statements.contains(k)))
            && (self.tables.is_empty()
                || covers(&st.tables, allow, |t| {
                    self.tables.iter().any(|g| g.matches(t))
                }))
            && (self.functions.is_empty()
                || covers(&st.functions, allow, |f| {
                    self.functions.iter().any(|g| g.matches(f))
                }))
            && self.without_where.is_none_or(|w| w == st.without_where)
            && self
                .text_pattern
                .as_ref()
                .is_none_or(|re| re.is_match(&st.text))
    }
}

/// Whether a rule's list matches a statement's `values`: for a rule that
/// allows, `named` holds for each of them (at least one); otherwise for any.
fn covers<T>(values: &[T], allow: bool, named: impl Fn(&T) -> bool) -> bool {
    if allow {
        !values.is_empty() && values.iter().all(named)
    } else {
        values.iter().any(named)
    }
}

/// A case-insensitive glob over dotted SQL names (`public.orders`, `lo_*`).
///
/// `*` never crosses a dot. A glob without a schema matches the last segment of a
/// name (any schema). A schema-qualified glob matches a qualified name in full;
/// against an unqualified name only its last segment is compared, because the
/// search_path could resolve the name to that schema: for deny rules that is the
/// safe reading.
#[derive(Debug)]
struct NameGlob {
    full: GlobMatcher,
    last: GlobMatcher,
    qualified: bool,
}

impl NameGlob {
    pub(super) fn new(pattern: &str, field: &str) -> Result<Self, CompileError> {
        let build = |p: &str| {
            GlobBuilder::new(&p.replace('.', "/"))
                .case_insensitive(true)
                .literal_separator(true)
                .build()
                .map(|g| g.compile_matcher())
                .map_err(|e| CompileError::InvalidPattern {
                    field: field.into(),
                    pattern: pattern.into(),
                    message: e.to_string(),
                })
        };
        if pattern.is_empty() || pattern.split('.').any(str::is_empty) {
            return Err(CompileError::InvalidPattern {
                field: field.into(),
                pattern: pattern.into(),
                message: "empty name segment".into(),
            });
        }
        let last = pattern.rsplit('.').next().unwrap_or(pattern);
        Ok(NameGlob {
            full: build(pattern)?,
            last: build(last)?,
            qualified: pattern.contains('.'),
        })
    }

    fn matches(&self, name: &str) -> bool {
        let name_last = name.rsplit('.').next().unwrap_or(name);
        match (self.qualified, name.contains('.')) {
            (true, true) => self.full.is_match(name.replace('.', "/")),
            _ => self.last.is_match(name_last),
        }
    }
}
