//! Compiled policies and the decision semantics of DESIGN §2.
//!
//! For an identity I and a Connection C, the applicable policies are those naming
//! both. None: the session is refused at connect time. Per statement (or HTTP
//! request) each applicable policy yields the action of its first matching rule,
//! or its `defaultAction`; across policies the most restrictive wins
//! (deny > requireApproval > allow); between approval requirements (across
//! policies, and across the statements of one string) the one covering all the
//! others decides, and when none does the text is denied. Policies in `dryRun` are decided and
//! recorded like the others, but what happens is decided by the `enforce`
//! policies alone. Masking rules of all applicable policies apply together.

use std::sync::Arc;

use globset::{GlobBuilder, GlobMatcher};
use regex::Regex;
use serde::Serialize;
use sluice_crds::{
    AccessPolicy, Action, Approval, Detector, MaskStrategy, MaxRowsAction, ParseErrorAction,
    PolicyMode, RuleMatch, SecretKeyRef, StatementKind, Subject,
};

use crate::detectors::DetectorSet;
use crate::http::{HttpMatcher, HttpRequest, JsonPath};
use crate::mask_plan::{ColumnMask, ColumnMatcher, CopyPlan, MaskPlan, MaskReason, OutputColumn};
use crate::masker::Masker;
use crate::sql::{self, SqlDialect, Statement};

/// Why a policy could not be compiled. `reason()` is the CamelCase condition
/// reason the operator writes into `status.conditions`.
#[derive(Debug, thiserror::Error)]
pub enum CompileError {
    /// A glob, regular expression or JSONPath does not compile.
    #[error("{field}: invalid pattern {pattern:?}: {message}")]
    InvalidPattern {
        /// Path of the offending field, e.g. `spec.rules[2].match.tables[0]`.
        field: String,
        /// The pattern as written.
        pattern: String,
        /// What is wrong with it.
        message: String,
    },
    /// A rule or masking entry is self-contradictory.
    #[error("{field}: {message}")]
    InvalidRule {
        /// Path of the offending field.
        field: String,
        /// What is wrong and how to fix it.
        message: String,
    },
    /// A referenced Secret key (e.g. a hash key) could not be read.
    #[error("{field}: Secret {secret:?} has no key {key:?} (create it, or fix the reference)")]
    SecretNotFound {
        /// Path of the field holding the reference.
        field: String,
        /// Secret name.
        secret: String,
        /// Key in the Secret.
        key: String,
    },
    /// The policy has no subjects or no connections.
    #[error("{field}: {message}")]
    Empty {
        /// `spec.subjects` or `spec.connections`.
        field: String,
        /// What to add.
        message: String,
    },
}

impl CompileError {
    /// The CamelCase reason for the policy's `Ready=False` / `Invalid=True` condition.
    pub fn reason(&self) -> &'static str {
        match self {
            CompileError::InvalidPattern { .. } => "InvalidPattern",
            CompileError::InvalidRule { .. } => "InvalidRule",
            CompileError::SecretNotFound { .. } => "SecretNotFound",
            CompileError::Empty { .. } => "EmptySelection",
        }
    }
}

/// A workload identity: a Kubernetes service account and its groups.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Identity {
    /// Namespace of the service account.
    pub namespace: String,
    /// Service account name.
    pub service_account: String,
    /// Groups, including the implicit service-account groups.
    pub groups: Vec<String>,
    /// The pod the identity was bound to, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
}

impl Identity {
    /// A service account with the groups Kubernetes gives every service-account
    /// token: `system:serviceaccounts`, `system:serviceaccounts:NS` and
    /// `system:authenticated`.
    pub fn service_account(namespace: &str, name: &str) -> Self {
        Identity {
            namespace: namespace.to_string(),
            service_account: name.to_string(),
            groups: vec![
                "system:serviceaccounts".to_string(),
                format!("system:serviceaccounts:{namespace}"),
                "system:authenticated".to_string(),
            ],
            pod: None,
        }
    }

    /// Parses `NAMESPACE/SERVICEACCOUNT`.
    pub fn parse(text: &str) -> Option<Self> {
        let (ns, sa) = text.split_once('/')?;
        let valid = |s: &str| {
            !s.is_empty()
                && s.len() <= 253
                && s.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        };
        (valid(ns) && valid(sa)).then(|| Identity::service_account(ns, sa))
    }

    /// The Kubernetes user name of the identity.
    pub fn username(&self) -> String {
        format!(
            "system:serviceaccount:{}:{}",
            self.namespace, self.service_account
        )
    }

    /// Short form used in status and audit: `serviceaccount:NS/NAME`.
    pub fn subject(&self) -> String {
        format!("serviceaccount:{}/{}", self.namespace, self.service_account)
    }
}

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
    masking: Vec<CompiledMasking>,
    limits: Option<sluice_crds::Limits>,
    /// `spec.readOnly`.
    read_only: bool,
}

#[derive(Debug)]
struct CompiledRule {
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
struct CompiledMasking {
    columns: Vec<String>,
    json_paths: Vec<JsonPath>,
    detectors: Vec<Detector>,
    strategy: MaskStrategy,
    keep: Option<u32>,
    value: Option<String>,
    /// Resolved from `keySecretRef`; `None` defers to the Connection's hash key.
    hash_key: Option<Vec<u8>>,
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

    fn verdict_for(&self, rule: Option<&CompiledRule>, reason: VerdictReason) -> Verdict {
        match rule {
            Some(r) => Verdict {
                action: r.action,
                policy: self.name.clone(),
                rule: Some(r.name.clone()),
                approval: r.approval.clone(),
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
                policy: self.name.clone(),
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
    /// checked and are taken to match; see [`crate::pg_grammar`]).
    fn verdict_unparsed(&self, kinds: &[StatementKind]) -> Verdict {
        let base = self.verdict_for(None, VerdictReason::ParseError);
        let rule = crate::pg_grammar::strictest_rule(
            self.rules
                .iter()
                .filter(|r| r.matcher.family != Family::Http),
            |r| (r.action, r.matcher.statements.as_slice()),
            base.action,
            kinds,
        );
        rule.map_or(base, |r| self.verdict_for(Some(r), VerdictReason::Rule))
    }

    fn decide_statement(&self, stmt: &Statement) -> Verdict {
        let rule = self
            .rules
            .iter()
            .find(|r| r.matcher.family != Family::Http && r.matcher.matches_sql(stmt));
        let reason = if rule.is_some() {
            VerdictReason::Rule
        } else {
            VerdictReason::Default
        };
        self.verdict_for(rule, reason)
    }

    fn decide_http(&self, req: &HttpRequest<'_>) -> Verdict {
        let rule = self.rules.iter().find(|r| {
            r.matcher.family != Family::Sql
                && r.matcher.http.as_ref().is_none_or(|m| m.matches(req))
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

    fn matches_sql(&self, st: &Statement) -> bool {
        (self.statements.is_empty() || st.kinds.iter().any(|k| self.statements.contains(k)))
            && (self.tables.is_empty()
                || st
                    .tables
                    .iter()
                    .any(|t| self.tables.iter().any(|g| g.matches(t))))
            && (self.functions.is_empty()
                || st
                    .functions
                    .iter()
                    .any(|f| self.functions.iter().any(|g| g.matches(f))))
            && self.without_where.is_none_or(|w| w == st.without_where)
            && self
                .text_pattern
                .as_ref()
                .is_none_or(|re| re.is_match(&st.text))
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
    fn new(pattern: &str, field: &str) -> Result<Self, CompileError> {
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

// === Decisions ===

/// Why a policy reached its verdict.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum VerdictReason {
    /// A rule matched.
    Rule,
    /// No rule matched: the policy's defaultAction.
    Default,
    /// The statement could not be parsed: the policy's onParseError.
    ParseError,
}

/// One policy's verdict on one statement or request.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Verdict {
    /// The action.
    pub action: Action,
    /// The policy.
    pub policy: String,
    /// The matching rule; `None` for defaultAction or onParseError.
    pub rule: Option<String>,
    /// The approval settings of the rule, for requireApproval.
    #[serde(skip)]
    pub approval: Option<Approval>,
    /// Whether the policy is in dryRun.
    pub dry_run: bool,
    /// Why.
    pub reason: VerdictReason,
}

/// The decision on a statement, a statement string or an HTTP request.
#[derive(Clone, Debug, PartialEq)]
pub struct Decision {
    /// The decided action: the most restrictive verdict of all applicable policies,
    /// dryRun ones included. This is what `policy eval` reports and audit records.
    pub action: Action,
    /// What happens: the most restrictive verdict of the `enforce` policies
    /// (allow when every applicable policy is in dryRun).
    pub enforced: Action,
    /// The policy of the decided verdict.
    pub policy: Option<String>,
    /// The rule of the decided verdict (`None`: defaultAction or onParseError).
    pub rule: Option<String>,
    /// The policy and rule of the enforced verdict (they differ from `policy`
    /// and `rule` only when a dryRun policy decided more strictly).
    pub enforced_policy: Option<String>,
    /// See `enforced_policy`.
    pub enforced_rule: Option<String>,
    /// True when the decided verdict came from a dryRun policy and is stricter
    /// than what happens.
    pub dry_run: bool,
    /// Approval settings when `enforced` is requireApproval.
    pub approval: Option<Approval>,
    /// A human sentence: which policy and rule decided, and why.
    pub reason: String,
}

impl Decision {
    /// Combines verdicts (one per policy) into the decision.
    fn combine(verdicts: &[Verdict]) -> Decision {
        // The strictest verdict wins; among equals the first (policies are kept in name order).
        let decided = strictest(verdicts.iter());
        let mut enforced = strictest(verdicts.iter().filter(|v| !v.dry_run));
        // Approvals never tie (issue 18): the requirement that covers all the
        // others decides, or no single AccessRequest can satisfy them and it is a deny.
        if enforced.is_some_and(|e| e.action == Action::RequireApproval) {
            let held: Vec<&Verdict> = verdicts
                .iter()
                .filter(|v| !v.dry_run && v.action == Action::RequireApproval)
                .collect();
            match covering(&held, |v| v.approval.as_ref()) {
                Some(v) => enforced = Some(v),
                None => {
                    return Decision::mixed_approvals(
                        held.iter().map(|v| (v.policy.as_str(), v.rule.as_deref())),
                    );
                }
            }
        }
        let action = decided.map_or(Action::Deny, |v| v.action);
        let enforced_action = match (decided, enforced) {
            (None, _) => Action::Deny,
            (Some(_), None) => Action::Allow,
            (Some(_), Some(e)) => e.action,
        };
        let dry_run = action != enforced_action;
        // When the decisive verdict is a dry-run one, report it; otherwise prefer
        // the enforced verdict (same action, but it is the one that acted).
        let shown = if dry_run {
            decided
        } else {
            enforced.or(decided)
        };
        let reason = match shown {
            None => "no applicable policy".to_string(),
            Some(v) => describe(v, dry_run),
        };
        Decision {
            action,
            enforced: enforced_action,
            policy: shown.map(|v| v.policy.clone()),
            rule: shown.and_then(|v| v.rule.clone()),
            enforced_policy: enforced.map(|v| v.policy.clone()),
            enforced_rule: enforced.and_then(|v| v.rule.clone()),
            dry_run,
            approval: enforced
                .filter(|e| e.action == Action::RequireApproval)
                .and_then(|e| e.approval.clone()),
            reason,
        }
    }

    /// The decision on a statement Sluice cannot decide soundly, whatever the
    /// policies say (denied even when they are in dryRun): `why` says what
    /// and what to do instead.
    pub fn refused_by_sluice(why: &str) -> Decision {
        Decision::denied(format!(
            "refused by Sluice itself, whatever the policies say: {why}"
        ))
    }

    /// An enforced deny that names no policy or rule, for `reason`.
    fn denied(reason: String) -> Decision {
        Decision {
            action: Action::Deny,
            enforced: Action::Deny,
            policy: None,
            rule: None,
            enforced_policy: None,
            enforced_rule: None,
            dry_run: false,
            approval: None,
            reason,
        }
    }

    /// A deny for a text whose approval requirements no single one covers.
    fn mixed_approvals<'a>(rules: impl Iterator<Item = (&'a str, Option<&'a str>)>) -> Decision {
        let mut named: Vec<(&str, Option<&str>)> = rules.collect();
        named.dedup();
        let (policy, rule) = named.first().copied().unwrap_or_default();
        let list: Vec<String> = named
            .iter()
            .map(|(p, r)| format!("rule {:?} of AccessPolicy {p:?}", r.unwrap_or_default()))
            .collect();
        Decision {
            policy: Some(policy.to_string()),
            rule: rule.map(str::to_string),
            enforced_policy: Some(policy.to_string()),
            enforced_rule: rule.map(str::to_string),
            ..Decision::denied(format!(
                "deny: it needs approval under {}, and none of these covers the others (the same or fewer approvers, at least as many approvals), so one AccessRequest cannot satisfy them all; make one rule's approval cover the others, or send the statements separately",
                list.join(" and ")
            ))
        }
    }

    /// The decision for an identity no policy binds to the Connection.
    pub fn not_bound(identity: &Identity, connection: &str) -> Decision {
        Decision::denied(format!(
            "no AccessPolicy in namespace {} binds {} to Connection {connection:?}",
            identity.namespace,
            identity.subject()
        ))
    }
}

/// The item whose approval requirement covers every other's, if one does.
fn covering<'a, T>(items: &[&'a T], approval: impl Fn(&T) -> Option<&Approval>) -> Option<&'a T> {
    items.iter().copied().find(|a| {
        items.iter().all(|b| {
            approval(a)
                .zip(approval(b))
                .is_some_and(|(x, y)| covers(x, y))
        })
    })
}

/// Whether approvals satisfying `a` satisfy `b`: at least as many, from
/// approvers `b` accepts too (users and groups of `a` are among `b`'s).
fn covers(a: &Approval, b: &Approval) -> bool {
    a.min_approvals >= b.min_approvals
        && a.approvers
            .users
            .iter()
            .all(|u| b.approvers.users.contains(u))
        && a.approvers
            .groups
            .iter()
            .all(|g| b.approvers.groups.contains(g))
}

fn strictest<'a>(verdicts: impl Iterator<Item = &'a Verdict>) -> Option<&'a Verdict> {
    verdicts.fold(None, |best, v| match best {
        Some(b) if b.action >= v.action => Some(b),
        _ => Some(v),
    })
}

fn describe(v: &Verdict, dry_run: bool) -> String {
    let what = match (&v.rule, v.reason) {
        (Some(rule), _) => format!("rule {rule:?} of AccessPolicy {:?}", v.policy),
        (None, VerdictReason::ParseError) => {
            format!(
                "onParseError of AccessPolicy {:?} (statement could not be parsed)",
                v.policy
            )
        }
        (None, _) => format!("defaultAction of AccessPolicy {:?}", v.policy),
    };
    let dry = if dry_run {
        " (dryRun: recorded, not enforced)"
    } else {
        ""
    };
    format!("{} by {what}{dry}", v.action.as_str())
}

/// The decision on a SQL string, with the decision on each statement.
#[derive(Clone, Debug)]
pub struct SqlDecision {
    /// The overall decision: the most restrictive over all statements.
    pub decision: Decision,
    /// Each statement with its own decision.
    pub statements: Vec<(Statement, Decision)>,
    /// The parser's message when the string could not be parsed.
    pub parse_error: Option<String>,
    /// The string with literals redacted (for audit and AccessRequests).
    pub redacted: String,
    /// Fingerprint of the string: the statements' fingerprints joined.
    pub fingerprint: String,
    /// The string is too large or too complex to classify safely
    /// ([`crate::sql::SqlError::TooLarge`], [`crate::sql::SqlError::TooComplex`]):
    /// refused whatever onParseError says (PostgreSQL's 54001).
    pub too_complex: bool,
    /// PostgreSQL's grammar reads the text otherwise than Sluice's SQL
    /// parser: refused whatever the policies say ([`crate::pg_grammar`]).
    pub disagreement: Option<crate::pg_grammar::Disagreement>,
}

impl SqlDecision {
    /// Whether this decision may not be reused for another text that differs
    /// only in literal values: some statement is
    /// [`literal_dependent`](crate::sql::literal_dependent), or the text did
    /// not parse (a literal's value can make the parser fail, e.g. a number
    /// too large for it, and a parse error is decided by `onParseError`, not
    /// by the rules that the same shape with other values would meet).
    pub fn literal_dependent(&self) -> bool {
        self.parse_error.is_some() || self.statements.iter().any(|(s, _)| s.literal_dependent)
    }
}

/// Limits in force for a session: the strictest of all applicable policies.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EffectiveLimits {
    /// Most rows a result may return.
    pub max_rows: Option<u64>,
    /// What happens past `max_rows` (refuse when any policy says so).
    pub on_max_rows: MaxRowsAction,
    /// Most statements per second.
    pub statements_per_second: Option<u32>,
    /// Most rows one write statement may change (`maxRowsAffected`).
    pub max_rows_affected: Option<u64>,
}

// === impl PolicySet ===

/// The policies that apply to one identity on one Connection, with their
/// masking compiled together. Built once per session (and again when the
/// policies change); every decision of the session goes through it.
#[derive(Debug)]
pub struct PolicySet {
    connection: String,
    policies: Vec<Arc<CompiledPolicy>>,
    maskers: Vec<Masker>,
    columns: ColumnMatcher,
    json_paths: Vec<(JsonPath, usize)>,
    detectors: Option<(DetectorSet, usize)>,
    limits: EffectiveLimits,
    warnings: Vec<String>,
    /// Set when the column globs could not be combined: every column is masked.
    mask_everything: bool,
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
        let mut entries: Vec<(&CompiledPolicy, &CompiledMasking)> = policies
            .iter()
            .flat_map(|p| p.masking.iter().map(move |m| (p.as_ref(), m)))
            .collect();
        entries.sort_by_key(|(_, m)| strategy_rank(m.strategy));
        let mut maskers = Vec::with_capacity(entries.len() + 1);
        for (p, m) in &entries {
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
        for (i, (_, m)) in entries.iter().enumerate() {
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
        PolicySet {
            connection: connection.to_string(),
            policies,
            maskers,
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
                K::Insert | K::Update | K::Merge | K::Create | K::Copy | K::Call
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
                // The kinds PostgreSQL reads, when it reads what sqlparser cannot.
                let pg_kinds = crate::pg_grammar::unparsed_kinds(text, dialect, too_complex);
                let verdicts: Vec<Verdict> = self
                    .policies
                    .iter()
                    .map(|p| p.verdict_unparsed(&pg_kinds))
                    .collect();
                // Too large or complex: refused whatever onParseError says,
                // or padding a statement would take it past every rule.
                let mut decision = if too_complex {
                    Decision::refused_by_sluice("the statement is too large or too complex")
                } else {
                    Decision::combine(&verdicts)
                };
                decision.reason = format!("{}: {e}", decision.reason);
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

    /// The most restrictive of per-statement decisions (the first on ties). An
    /// empty string decides as allow: it runs nothing.
    fn combine_statements(&self, decided: &[(Statement, Decision)]) -> Decision {
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
        best.cloned().unwrap_or_else(|| Decision {
            action: Action::Allow,
            enforced: Action::Allow,
            policy: None,
            rule: None,
            enforced_policy: None,
            enforced_rule: None,
            dry_run: false,
            approval: None,
            reason: "empty statement".into(),
        })
    }

    /// Decides an HTTP request.
    ///
    /// A path that decodes ambiguously (double encoding, malformed escapes,
    /// control characters) is refused outright: servers disagree on what it
    /// means, so no rule can be trusted to have seen the path the upstream will.
    /// The HTTP proxy answers such a request with 400 before asking.
    pub fn decide_http(&self, req: &HttpRequest<'_>) -> Decision {
        if let Err(e) = crate::http::normalize_path(req.path) {
            return Decision {
                action: Action::Deny,
                enforced: Action::Deny,
                policy: None,
                rule: None,
                enforced_policy: None,
                enforced_rule: None,
                dry_run: false,
                approval: None,
                reason: format!("deny: {e}"),
            };
        }
        let verdicts: Vec<Verdict> = self.policies.iter().map(|p| p.decide_http(req)).collect();
        Decision::combine(&verdicts)
    }

    /// Whether any masking applies on this Connection (columns, paths or detectors).
    pub fn has_masking(&self) -> bool {
        !self.maskers.is_empty()
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

    /// All maskers, indexed by rule.
    pub fn maskers(&self) -> &[Masker] {
        &self.maskers
    }

    /// The detectors to run on every text value, and the masker for what they find.
    pub fn detectors(&self) -> Option<(&DetectorSet, &Masker)> {
        self.detectors.as_ref().map(|(d, i)| (d, self.masker(*i)))
    }

    /// The detectors with the index of their masker (for [`crate::http::mask_json`]).
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

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(yaml: &str) -> Arc<CompiledPolicy> {
        let ap: AccessPolicy = serde_yaml::from_str(yaml).unwrap();
        Arc::new(CompiledPolicy::compile(&ap, &NoSecrets).unwrap())
    }

    fn compile_err(yaml: &str) -> CompileError {
        let ap: AccessPolicy = serde_yaml::from_str(yaml).unwrap();
        CompiledPolicy::compile(&ap, &NoSecrets).unwrap_err()
    }

    const BASE: &str = r#"
apiVersion: sluice.dev/v1alpha1
kind: AccessPolicy
metadata: {name: p, namespace: shop}
spec:
  subjects: [{serviceAccount: app}]
  connections: [db]
"#;

    fn with(extra: &str) -> String {
        format!("{BASE}{extra}")
    }

    fn set(policies: &[Arc<CompiledPolicy>]) -> PolicySet {
        PolicySet::select(
            policies,
            &Identity::service_account("shop", "app"),
            "db",
            None,
        )
        .unwrap()
    }

    fn action(ps: &PolicySet, sql: &str) -> (Action, Option<String>) {
        let d = ps.decide_sql(sql, SqlDialect::Postgres).decision;
        (d.action, d.rule)
    }

    #[test]
    fn binding_needs_subject_and_connection() {
        let p = policy(&with(""));
        let app = Identity::service_account("shop", "app");
        assert!(PolicySet::select(std::slice::from_ref(&p), &app, "db", None).is_some());
        assert!(PolicySet::select(std::slice::from_ref(&p), &app, "other", None).is_none());
        let other_ns = Identity::service_account("dev", "app");
        assert!(PolicySet::select(std::slice::from_ref(&p), &other_ns, "db", None).is_none());
        let g = policy(
            "apiVersion: sluice.dev/v1alpha1\nkind: AccessPolicy\nmetadata: {name: g, namespace: shop}\n\
             spec: {subjects: [{group: 'system:serviceaccounts:ci'}], connections: [db]}\n",
        );
        let ci = Identity::service_account("ci", "deployer");
        assert!(PolicySet::select(std::slice::from_ref(&g), &ci, "db", None).is_some());
        assert!(PolicySet::select(&[g], &app, "db", None).is_none());
        let cross = policy(
            "apiVersion: sluice.dev/v1alpha1\nkind: AccessPolicy\nmetadata: {name: x, namespace: shop}\n\
             spec: {subjects: [{serviceAccount: app, namespace: dev}], connections: [db]}\n",
        );
        assert!(PolicySet::select(std::slice::from_ref(&cross), &other_ns, "db", None).is_some());
        assert!(PolicySet::select(&[cross], &app, "db", None).is_none());
    }

    #[test]
    fn first_matching_rule_then_default() {
        let ps = set(&[policy(&with(
            r#"  defaultAction: deny
  rules:
    - {name: reads, match: {statements: [select]}, action: allow}
    - {name: no-select-secrets, match: {tables: [secrets]}, action: deny}
    - {name: writes, match: {statements: [insert, update]}, action: allow}
"#,
        ))]);
        // First match wins, even when a later rule would deny.
        assert_eq!(
            action(&ps, "SELECT * FROM secrets"),
            (Action::Allow, Some("reads".into()))
        );
        assert_eq!(
            action(&ps, "INSERT INTO t VALUES (1)"),
            (Action::Allow, Some("writes".into()))
        );
        assert_eq!(
            action(&ps, "DELETE FROM t WHERE id = 1"),
            (Action::Deny, None)
        );
    }

    #[test]
    fn rule_fields_are_anded_lists_ored() {
        let ps = set(&[policy(&with(
            r#"  rules:
    - {name: r, match: {statements: [delete, update], tables: ["public.accounts", "ledger_*"]}, action: deny}
    - {name: ww, match: {withoutWhere: true}, action: requireApproval, approval: {approvers: {users: [a]}}}
    - {name: tp, match: {textPattern: "(?i)sleep\\s*\\("}, action: deny}
    - {name: fn, match: {functions: ["dblink*", "pg_catalog.lo_*"]}, action: deny}
"#,
        ))]);
        let r = |s: &str| action(&ps, s).1;
        assert_eq!(r("DELETE FROM accounts WHERE id = 1"), Some("r".into()));
        assert_eq!(
            r("DELETE FROM public.accounts WHERE id = 1"),
            Some("r".into())
        );
        assert_eq!(r("DELETE FROM other.accounts WHERE id = 1"), None);
        assert_eq!(
            r("UPDATE ledger_2024 SET x = 1 WHERE id = 1"),
            Some("r".into())
        );
        assert_eq!(r("SELECT * FROM ledger_2024"), None);
        assert_eq!(r("DELETE FROM orders"), Some("ww".into()));
        assert_eq!(r("SELECT pg_sleep(1), SLEEP (2)"), Some("tp".into()));
        assert_eq!(
            r("SELECT * FROM dblink('host=x', 'select 1') AS t(a int)"),
            Some("fn".into())
        );
        assert_eq!(r("SELECT lo_import('/etc/passwd')"), Some("fn".into()));
        assert_eq!(
            r("SELECT pg_catalog.lo_import('/etc/passwd')"),
            Some("fn".into())
        );
    }

    #[test]
    fn most_restrictive_across_policies() {
        let a = policy(
            &with("  rules: [{name: ok, match: {}, action: allow}]\n")
                .replace("name: p,", "name: a,"),
        );
        let b = policy(
            &with("  rules: [{name: hold, match: {statements: [delete]}, action: requireApproval, approval: {approvers: {groups: [dba]}}}]\n")
                .replace("name: p,", "name: b,"),
        );
        let c = policy(
            &with("  rules: [{name: no, match: {tables: [t]}, action: deny}]\n")
                .replace("name: p,", "name: c,"),
        );
        let ps = set(&[a, b, c]);
        let d = ps
            .decide_sql("DELETE FROM t WHERE id = 1", SqlDialect::Postgres)
            .decision;
        assert_eq!(
            (d.action, d.policy.as_deref(), d.rule.as_deref()),
            (Action::Deny, Some("c"), Some("no"))
        );
        let d = ps
            .decide_sql("DELETE FROM u WHERE id = 1", SqlDialect::Postgres)
            .decision;
        assert_eq!(
            (d.action, d.policy.as_deref()),
            (Action::RequireApproval, Some("b"))
        );
        assert!(d.approval.is_some());
        let d = ps.decide_sql("SELECT 1", SqlDialect::Postgres).decision;
        assert_eq!(d.action, Action::Allow);
    }

    #[test]
    fn approval_requirements_never_tie() {
        // Issue 18: the requirement covering the others decides, in either
        // order; requirements none of which covers the others are refused.
        let rule = |name: &str, table: &str, approvers: &str, min: u32| {
            format!(
                "    - {{name: {name}, match: {{tables: [{table}]}}, action: requireApproval, approval: {{approvers: {approvers}, minApprovals: {min}}}}}\n"
            )
        };
        let ps = set(&[policy(&with(&format!(
            "  rules:\n{}{}{}",
            rule("one", "a", "{groups: [dba]}", 1),
            rule("two", "b", "{groups: [dba]}", 2),
            rule("sec", "c", "{groups: [security]}", 1)
        )))]);
        for sql in [
            "UPDATE a SET v = 1; UPDATE b SET v = 1",
            "UPDATE b SET v = 1; UPDATE a SET v = 1",
        ] {
            let d = ps.decide_sql(sql, SqlDialect::Postgres).decision;
            assert_eq!(
                (d.enforced, d.enforced_rule.as_deref()),
                (Action::RequireApproval, Some("two")),
                "{sql}"
            );
            assert_eq!(d.approval.unwrap().min_approvals, 2, "{sql}");
        }
        for sql in [
            "UPDATE a SET v = 1; UPDATE c SET v = 1",
            "UPDATE c SET v = 1; UPDATE a SET v = 1",
        ] {
            let d = ps.decide_sql(sql, SqlDialect::Postgres).decision;
            assert_eq!(d.enforced, Action::Deny, "{sql}");
            assert!(
                d.reason.contains("rule \"one\"") && d.reason.contains("rule \"sec\""),
                "{}",
                d.reason
            );
        }

        // Across policies: a laxer policy (fewer approvals, more approvers)
        // does not override a two-person rule, whichever sorts first.
        let named = |name: &str, rules: String| {
            policy(
                &with(&format!("  rules:\n{rules}")).replace("name: p,", &format!("name: {name},")),
            )
        };
        let strict = |name: &str| named(name, rule("two", "b", "{groups: [dba]}", 2));
        let lax = |name: &str| named(name, rule("lax", "b", "{groups: [dba, ops]}", 1));
        for (policies, strict_name) in [
            ([lax("a"), strict("b")], "b"),
            ([strict("a"), lax("b")], "a"),
        ] {
            let d = set(&policies)
                .decide_sql("UPDATE b SET v = 2", SqlDialect::Postgres)
                .decision;
            assert_eq!(
                (
                    d.enforced,
                    d.enforced_policy.as_deref(),
                    d.enforced_rule.as_deref()
                ),
                (Action::RequireApproval, Some(strict_name), Some("two"))
            );
            assert_eq!(d.approval.unwrap().min_approvals, 2);
        }
        // Approvers the other rule does not accept: no request can satisfy both.
        let other = |name: &str| named(name, rule("bob", "b", "{users: [bob]}", 2));
        for policies in [[other("a"), strict("b")], [strict("a"), other("b")]] {
            let d = set(&policies)
                .decide_sql("UPDATE b SET v = 2", SqlDialect::Postgres)
                .decision;
            assert_eq!(d.enforced, Action::Deny, "{}", d.reason);
            assert!(d.reason.contains("none of these covers"), "{}", d.reason);
        }
    }

    #[test]
    fn dry_run_records_but_does_not_block() {
        let enforce = policy(&with(
            "  rules: [{name: hold, match: {statements: [update]}, action: requireApproval, approval: {approvers: {users: [x]}}}]\n",
        ));
        let dry = policy(
            &with("  mode: dryRun\n  rules: [{name: no-drop, match: {statements: [drop, update]}, action: deny}]\n")
                .replace("name: p,", "name: q,"),
        );
        let ps = set(&[enforce, dry.clone()]);
        let d = ps.decide_sql("DROP TABLE t", SqlDialect::Postgres).decision;
        assert_eq!(
            (d.action, d.enforced, d.dry_run),
            (Action::Deny, Action::Allow, true)
        );
        assert!(d.reason.contains("dryRun"), "{}", d.reason);
        let d = ps
            .decide_sql("UPDATE t SET a = 1 WHERE b = 2", SqlDialect::Postgres)
            .decision;
        assert_eq!(
            (d.action, d.enforced),
            (Action::Deny, Action::RequireApproval)
        );
        assert_eq!(d.enforced_rule.as_deref(), Some("hold"));
        assert!(d.approval.is_some());
        // Only dry-run policies: everything runs.
        let only = set(&[dry]);
        let d = only
            .decide_sql("DROP TABLE t", SqlDialect::Postgres)
            .decision;
        assert_eq!((d.action, d.enforced), (Action::Deny, Action::Allow));
    }

    #[test]
    fn parse_errors_follow_on_parse_error() {
        let deny = set(&[policy(&with(""))]);
        let d = deny.decide_sql("SELEKT 1 FROM", SqlDialect::Postgres);
        assert_eq!(d.decision.action, Action::Deny);
        assert!(d.parse_error.is_some());
        assert!(
            d.decision.reason.contains("onParseError"),
            "{}",
            d.decision.reason
        );
        let allow = set(&[policy(&with("  onParseError: allow\n"))]);
        assert_eq!(
            allow
                .decide_sql("SELEKT 1 FROM", SqlDialect::Postgres)
                .decision
                .action,
            Action::Allow
        );
        // The redacted text of an unparseable statement keeps no literal.
        let d = deny.decide_sql("SELEKT 'secret-value' FROM", SqlDialect::Postgres);
        assert!(!d.redacted.contains("secret-value"), "{}", d.redacted);
    }

    #[test]
    fn multi_statement_strings_are_as_strict_as_their_strictest_part() {
        let ps = set(&[policy(&with(
            "  rules: [{name: no-drop, match: {statements: [drop]}, action: deny}]\n",
        ))]);
        let d = ps.decide_sql("SELECT 1; DROP TABLE t; SELECT 2", SqlDialect::Postgres);
        assert_eq!(d.statements.len(), 3);
        assert_eq!(d.decision.action, Action::Deny);
        assert_eq!(d.statements[0].1.action, Action::Allow);
        assert_eq!(d.statements[1].1.action, Action::Deny);
    }

    #[test]
    fn sql_rules_do_not_match_http_and_back() {
        let ps = set(&[policy(&with(
            r#"  rules:
    - {name: sql-only, match: {statements: [select]}, action: deny}
    - {name: http-only, match: {methods: [DELETE]}, action: deny}
"#,
        ))]);
        let get = HttpRequest {
            method: "GET",
            path: "/x",
            query: "",
            body: None,
        };
        assert_eq!(ps.decide_http(&get).action, Action::Allow);
        let del = HttpRequest {
            method: "DELETE",
            path: "/x",
            query: "",
            body: None,
        };
        assert_eq!(ps.decide_http(&del).rule.as_deref(), Some("http-only"));
        assert_eq!(
            action(&ps, "DELETE FROM t WHERE a = 1"),
            (Action::Allow, None)
        );
    }

    #[test]
    fn compile_errors_name_the_field() {
        let e = compile_err(&with(
            "  rules: [{name: r, match: {tables: ['a[']}, action: deny}]\n",
        ));
        assert_eq!(e.reason(), "InvalidPattern");
        assert!(
            e.to_string().contains("spec.rules[0].match.tables[0]"),
            "{e}"
        );
        let e = compile_err(&with(
            "  rules: [{name: r, match: {textPattern: '('}, action: deny}]\n",
        ));
        assert!(e.to_string().contains("textPattern"), "{e}");
        let e = compile_err(&with(
            "  rules: [{name: r, match: {statements: [select], methods: [GET]}, action: deny}]\n",
        ));
        assert_eq!(e.reason(), "InvalidRule");
        let e = compile_err(&with(
            "  rules: [{name: r, match: {}, action: requireApproval}]\n",
        ));
        assert!(e.to_string().contains("approval"), "{e}");
        let e = compile_err(&with("  masking: [{columns: [ssn]}]\n"));
        assert!(e.to_string().contains("spec.masking[0].columns[0]"), "{e}");
        let e = compile_err(&with(
            "  masking: [{columns: [t.c], strategy: hash, keySecretRef: {name: k, key: key}}]\n",
        ));
        assert_eq!(e.reason(), "SecretNotFound");
    }

    #[test]
    fn limits_take_the_strictest() {
        let a = policy(&with("  limits: {maxRows: 100, statementsPerSecond: 50}\n"));
        let b = policy(
            &with("  limits: {maxRows: 10, onMaxRows: refuse}\n").replace("name: p,", "name: b,"),
        );
        let l = set(&[a, b]).limits();
        assert_eq!(l.max_rows, Some(10));
        assert_eq!(l.statements_per_second, Some(50));
        assert_eq!(l.on_max_rows, MaxRowsAction::Refuse);
    }

    #[test]
    fn max_rows_affected_takes_the_smallest_and_names_its_policy() {
        let a = policy(&with("  limits: {maxRowsAffected: 100}\n"));
        let b = policy(
            &with("  limits: {maxRowsAffected: 5, maxRows: 10}\n").replace("name: p,", "name: b,"),
        );
        let c = policy(&with("  limits: {maxRows: 1}\n").replace("name: p,", "name: c,"));
        let s = set(&[a.clone(), b, c.clone()]);
        assert_eq!(s.limits().max_rows_affected, Some(5));
        assert_eq!(s.max_rows_affected_policy(), Some("b"));
        let s = set(&[c.clone(), a]);
        assert_eq!(s.limits().max_rows_affected, Some(100));
        assert_eq!(s.max_rows_affected_policy(), Some("p"));
        assert_eq!(set(&[c]).max_rows_affected_policy(), None);
    }

    #[test]
    fn read_only_most_restrictive_wins_in_enforce_mode() {
        let plain = policy(&with(""));
        let ro = policy(&with("  readOnly: true\n").replace("name: p,", "name: b,"));
        let dry =
            policy(&with("  readOnly: true\n  mode: dryRun\n").replace("name: p,", "name: c,"));
        assert_eq!(set(std::slice::from_ref(&plain)).read_only(), None);
        assert_eq!(set(&[plain.clone(), ro]).read_only(), Some("b"));
        assert_eq!(set(&[plain, dry]).read_only(), None);
    }

    #[test]
    fn masking_rules_combine_strongest_first() {
        let ps = set(&[policy(&with(
            r#"  masking:
    - {columns: ["customers.email"], strategy: partial}
    - {columns: ["customers.*"], strategy: redact}
    - {detectors: [creditCard], strategy: partial}
"#,
        ))]);
        assert!(ps.has_masking());
        let rule = ps
            .column_matcher()
            .match_column(None, "customers", "email")
            .unwrap();
        // redact is stronger than partial, and both match.
        assert_eq!(ps.masker(rule).mask("bob@example.com"), "[redacted]");
        let (detectors, masker) = ps.detectors().unwrap();
        let text = "card 4111 1111 1111 1111 on file";
        let found = detectors.find(text);
        assert_eq!(found.len(), 1);
        assert!(
            !masker
                .mask_findings(text, &found)
                .contains("4111 1111 1111 1111")
        );
    }
}
