//! Enforcement: the only module that calls the policy engine.
//!
//! It turns the engine's decisions into what the protocol layer needs: a
//! cached [`Decided`] per statement text, a [`Refusal`] to send when a
//! statement may not run, and a [`Masking`] that builds row and COPY masks.
//! The protocol modules know nothing of policies; the engine knows nothing of
//! sockets.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::BytesMut;
use sluice_crds::{Action, Approval, ApprovalMode, MaskStrategy, MaxRowsAction, StatementKind};
use sluice_policy::engine::{CompiledPolicy, Decision, Identity, PolicySet, SqlDecision};
use sluice_policy::gateway::ApprovalAsk;
use sluice_policy::mask_plan::{
    ColumnMask, ColumnMatcher, ColumnOrigin, CopyPlan, MaskReason, OutputColumn,
};
use sluice_policy::sql::{SqlDialect, Statement};

use crate::postgres::catalog::Origin;
use crate::postgres::masking::{CopyMask, RowMask};
use crate::postgres::messages::error_response::{self, Report};
use crate::postgres::messages::row_description::Column;
use crate::rate::RateLimit;

/// How many distinct statement texts a session keeps decisions for. Past
/// this the cache starts over: an application with unbounded distinct texts
/// (literals inlined) pays a parse per statement, nothing more. Small on
/// purpose: a decision holds the statement's syntax tree (kilobytes), and
/// the sidecar must stay small in memory with many sessions.
const DECISION_CACHE_ENTRIES: usize = 64;

/// Texts longer than this are decided every time, never cached.
const DECISION_CACHE_MAX_TEXT: usize = 4096;

/// An identity's standing on one Connection: its applicable policies, or none.
///
/// In run mode the standing changes while sessions run (a new bundle, or the
/// bundle expired): [`Binding::live`] follows a watch channel, and every
/// session's [`Enforcer`] picks the change up before its next statement.
pub struct Binding {
    identity: Identity,
    connection: String,
    standing: tokio::sync::watch::Receiver<Standing>,
    /// Keeps a standalone binding's channel open (nothing ever changes it).
    _fixed: Option<tokio::sync::watch::Sender<Standing>>,
    /// `statementsPerSecond`: the bucket every session of the identity on
    /// the Connection shares; it outlives policy edits (see [`crate::rate`]).
    rate: Arc<RateLimit>,
}

/// What a binding currently says.
#[derive(Clone)]
pub enum Standing {
    /// Policies bind the identity to the Connection.
    Bound {
        /// The applicable policies.
        set: Arc<PolicySet>,
        /// Whether any rule has a `textPattern` (see [`Enforcer`]).
        literal_sensitive: bool,
        /// Identifies the masking rules and limits in force. A change of
        /// this key gives running sessions a new [`Masking`]: their next
        /// statement is masked by the new rules (see [`Enforcer::refresh`]).
        masking_key: Arc<str>,
    },
    /// No policy binds the identity to the Connection.
    NotBound,
    /// No valid policies (no bundle yet, or it expired): nothing may run.
    /// The text says why, for the client.
    Unavailable(String),
}

impl Standing {
    /// The standing for `policies` on `connection`.
    pub fn select(
        policies: &[Arc<CompiledPolicy>],
        identity: &Identity,
        connection: &str,
        hash_key: Option<&[u8]>,
        literal_sensitive: bool,
    ) -> Self {
        match PolicySet::select(policies, identity, connection, hash_key) {
            Some(set) => Standing::Bound {
                set: Arc::new(set),
                literal_sensitive,
                masking_key: Arc::from(""),
            },
            None => Standing::NotBound,
        }
    }

    /// Sets the masking key (see [`Standing::Bound`]); other standings are unchanged.
    pub fn with_masking_key(mut self, key: &str) -> Self {
        if let Standing::Bound { masking_key, .. } = &mut self {
            *masking_key = Arc::from(key);
        }
        self
    }

    fn set(&self) -> Option<&Arc<PolicySet>> {
        match self {
            Standing::Bound { set, .. } => Some(set),
            _ => None,
        }
    }
}

impl Binding {
    /// Selects the policies that bind `identity` to `connection`.
    /// `literal_sensitive` must be true when any rule of them has a
    /// `textPattern` (a decision may then depend on literal values).
    pub fn new(
        policies: &[Arc<CompiledPolicy>],
        identity: Identity,
        connection: &str,
        hash_key: Option<&[u8]>,
        literal_sensitive: bool,
    ) -> Self {
        let standing =
            Standing::select(policies, &identity, connection, hash_key, literal_sensitive);
        let (tx, rx) = tokio::sync::watch::channel(standing);
        Binding {
            identity,
            connection: connection.to_string(),
            standing: rx,
            _fixed: Some(tx),
            rate: Arc::new(RateLimit::new()),
        }
    }

    /// A binding whose standing follows `standing` (run mode).
    pub fn live(
        identity: Identity,
        connection: &str,
        standing: tokio::sync::watch::Receiver<Standing>,
    ) -> Self {
        Binding {
            identity,
            connection: connection.to_string(),
            standing,
            _fixed: None,
            rate: Arc::new(RateLimit::new()),
        }
    }

    /// The binding with `rate` as its rate bucket: run mode hands every
    /// binding of a Connection (one per bundle) the same bucket, so a policy
    /// edit does not reset it.
    pub fn with_rate(mut self, rate: Arc<RateLimit>) -> Self {
        self.rate = rate;
        self
    }

    /// The rate bucket the sessions of this binding share.
    pub fn rate(&self) -> Arc<RateLimit> {
        self.rate.clone()
    }

    /// The identity.
    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    /// Whether any policy binds the identity to the Connection.
    pub fn is_bound(&self) -> bool {
        self.standing.borrow().set().is_some()
    }

    /// Names of the applicable policies.
    pub fn policy_names(&self) -> Vec<String> {
        self.standing
            .borrow()
            .set()
            .map(|s| s.policy_names().into_iter().map(String::from).collect())
            .unwrap_or_default()
    }

    /// Warnings from building the policy set (e.g. a masker that fell back to redact).
    pub fn warnings(&self) -> Vec<String> {
        self.standing
            .borrow()
            .set()
            .map(|s| s.warnings().to_vec())
            .unwrap_or_default()
    }

    /// A new session's enforcer; `None` when the identity is not bound (or,
    /// in run mode, when no valid policies are at hand).
    pub fn enforcer(&self) -> Option<Enforcer> {
        let mut standing = self.standing.clone();
        let Standing::Bound {
            set,
            literal_sensitive,
            masking_key,
        } = standing.borrow_and_update().clone()
        else {
            return None;
        };
        Some(Enforcer {
            masking: Arc::new(Masking::new(set.clone())),
            set,
            cache: HashMap::new(),
            literal_sensitive,
            standing: self._fixed.is_none().then_some(standing),
            revoked: None,
            masking_key,
            generation: 0,
        })
    }

    /// What a client of an unbound identity is told.
    pub fn not_bound_message(&self, connection: &str) -> String {
        if let Standing::Unavailable(why) = &*self.standing.borrow() {
            return format!("Sluice refused the session: {why}");
        }
        format!(
            "Sluice refused the session: {}",
            Decision::not_bound(&self.identity, connection).reason
        )
    }

    /// What a client of an unbound identity can do about it: bind the
    /// identity, or (run mode, no valid bundle) look at the sidecar and the
    /// operator, since no policy edit helps while the bundle is unavailable.
    pub fn not_bound_hint(&self) -> &'static str {
        if let Standing::Unavailable(_) = &*self.standing.borrow() {
            return "the sidecar has no valid policy bundle from the Sluice operator (pod deleted, token refused, or operator unreachable); see the sidecar's log and the operator's /readyz";
        }
        "bind the service account to this Connection with an AccessPolicy (spec.subjects and spec.connections)"
    }

    /// The Connection.
    pub fn connection(&self) -> &str {
        &self.connection
    }
}

// === impl Enforcer ===

/// Decides a session's statements, with a decision cache.
///
/// The cache key is the statement's token stream with number and
/// single-quoted string literals replaced by a marker of their type, made
/// with the same SQL tokenizer the engine parses with: two texts with one key
/// differ only in the values of those literals, so the engine sees the same
/// statement shape, tables, functions and WHERE clauses in both. The engine's
/// decision and mask plans depend on literal values only where
/// [`SqlDecision::literal_dependent`] says so (COPY and EXPLAIN options,
/// settings, arguments of functions that take names or SQL text, casts to
/// object identifiers, and texts that do not parse) and through a rule's
/// `textPattern`: such texts are cached under their exact text only, so a
/// text of the same shape with other values is decided on its own. (The
/// engine's own fingerprint is not used as the key: it also ignores the
/// length of literal lists and is computed only after the full parse this
/// cache exists to avoid.) Texts the tokenizer rejects are keyed exactly.
///
/// A live enforcer (run mode) checks its binding's standing before each
/// decision: new policies apply from the next statement on (the cache
/// starts over); once the standing is withdrawn every statement is refused.
pub struct Enforcer {
    set: Arc<PolicySet>,
    masking: Arc<Masking>,
    cache: HashMap<Box<str>, Arc<Decided>>,
    literal_sensitive: bool,
    standing: Option<tokio::sync::watch::Receiver<Standing>>,
    /// Set while the standing is withdrawn: why statements are refused.
    revoked: Option<String>,
    /// The masking rules the session's masks were built from.
    masking_key: Arc<str>,
    /// Bumped whenever a new standing is picked up: decisions taken under an
    /// older generation (prepared statements, bound portals) are taken again.
    generation: u64,
}

impl Enforcer {
    /// Picks up a changed standing, if any (run mode). A session calls it
    /// before each statement or group of extended-protocol messages, then
    /// compares [`Enforcer::masking`] with the masking it uses.
    pub fn refresh(&mut self) {
        self.follow();
    }

    /// Picks up a changed standing, if any.
    fn follow(&mut self) {
        let Some(rx) = self.standing.as_mut() else {
            return;
        };
        if !rx.has_changed().unwrap_or(false) {
            return;
        }
        self.generation += 1;
        match rx.borrow_and_update().clone() {
            Standing::Bound {
                set,
                literal_sensitive,
                masking_key,
            } => {
                // Same masking rules and limits: the session's masks stay
                // valid, so its Masking (and mask caches) are kept.
                if masking_key != self.masking_key {
                    self.masking = Arc::new(Masking::new(set.clone()));
                    self.masking_key = masking_key;
                }
                self.set = set;
                self.literal_sensitive = literal_sensitive;
                self.cache.clear();
                self.revoked = None;
            }
            Standing::NotBound => {
                self.revoked = Some(
                    "no AccessPolicy binds this identity to the Connection any more".to_string(),
                );
            }
            Standing::Unavailable(why) => self.revoked = Some(why),
        }
    }

    /// The decision on a SQL text (cached).
    pub fn decide(&mut self, sql: &str) -> Arc<Decided> {
        self.follow();
        if let Some(why) = &self.revoked {
            // Decided by the last policies for the record, refused regardless.
            let mut decided = Decided::new(self.set.decide_sql(sql, SqlDialect::Postgres));
            decided.awaits_approval = false;
            decided.refusal = Some(Refusal::plain(&format!(
                "statement refused by Sluice: {why}"
            )));
            return Arc::new(decided);
        }
        if sql.len() > DECISION_CACHE_MAX_TEXT {
            return Arc::new(Decided::new(self.set.decide_sql(sql, SqlDialect::Postgres)));
        }
        if let Some(d) = self.cache.get(sql) {
            return d.clone();
        }
        let key = if self.literal_sensitive {
            None
        } else {
            plain_literal_free_key(sql).or_else(|| literal_free_key(sql))
        };
        if let Some(key) = &key
            && let Some(d) = self.cache.get(key.as_str())
        {
            return d.clone();
        }
        let decided = Arc::new(Decided::new(self.set.decide_sql(sql, SqlDialect::Postgres)));
        if self.cache.len() >= DECISION_CACHE_ENTRIES {
            self.cache.clear();
        }
        // Shape and literal dependence go together (see `Enforcer`): no
        // text of this shape is ever cached under the shape's key.
        let key: Box<str> = match key {
            Some(k) if !decided.sql.literal_dependent() => k.into(),
            _ => sql.into(),
        };
        self.cache.insert(key, decided.clone());
        decided
    }

    /// [`Enforcer::decide`], with a text too large for the cache decided
    /// off the runtime thread when it is large enough ([`crate::parse_pool`]).
    pub async fn decide_async(&mut self, sql: &str) -> Arc<Decided> {
        if sql.len() <= DECISION_CACHE_MAX_TEXT || !crate::parse_pool::off_thread(sql) {
            return self.decide(sql);
        }
        self.follow();
        let mut decided = Decided::new(crate::parse_pool::decide_sql(self.set.clone(), sql).await);
        self.follow();
        if let Some(why) = &self.revoked {
            decided.awaits_approval = false;
            decided.refusal = Some(Refusal::plain(&format!(
                "statement refused by Sluice: {why}"
            )));
        }
        Arc::new(decided)
    }

    /// Which standing the decisions are taken under: it changes with every
    /// policy change the session picks up (see [`Enforcer::refresh`]).
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The masking in force: a new one (a different `Arc`) after a change
    /// of the masking rules or limits.
    pub fn masking(&self) -> Arc<Masking> {
        self.masking.clone()
    }
}

/// The cache key of a plain text without tokenizing it: `None` unless the
/// text holds only ASCII letters, digits, `_`, whitespace, the punctuation
/// `,.=<>()*;+-!%&|~^:[]`, integer literals and single-quoted strings
/// without backslashes, and no `--`; then every integer and string is
/// replaced by a marker. Outside that subset (comments, dollar quotes, quoted
/// identifiers, escape or prefixed strings, `$n`, numbers with a fraction
/// or exponent, non-ASCII) the tokenizer decides ([`literal_free_key`]).
///
/// Within the subset, two texts with one key have the same bytes outside
/// their literals, and each literal's extent is unambiguous (a string ends
/// at a `'` not doubled, an integer is a digit run between non-identifier
/// characters), so they tokenize alike but for literal values: the
/// guarantee the cache needs. Strings become `?` and integers `#` (neither
/// character is in the subset, so a key never confuses them with the
/// text). The key starts with two NUL bytes, which neither a text (a Query
/// ends at its NUL) nor a tokenizer key has.
fn plain_literal_free_key(sql: &str) -> Option<String> {
    let b = sql.as_bytes();
    let mut key = Vec::with_capacity(b.len() + 2);
    key.extend_from_slice(b"\0\0");
    let ident = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        match c {
            b'\'' => {
                if i > 0 && ident(b[i - 1]) {
                    return None; // E'', B'', X'', N'' …
                }
                i += 1;
                loop {
                    match b.get(i)? {
                        b'\\' => return None,
                        b'\'' if b.get(i + 1) == Some(&b'\'') => i += 2,
                        b'\'' => break,
                        _ => i += 1,
                    }
                }
                key.push(b'?');
                i += 1;
            }
            b'0'..=b'9' if i == 0 || !(ident(b[i - 1]) || b[i - 1] == b'.') => {
                while i < b.len() && b[i].is_ascii_digit() {
                    i += 1;
                }
                if i < b.len() && (ident(b[i]) || b[i] == b'.') {
                    return None;
                }
                key.push(b'#');
            }
            b'-' if b.get(i + 1) == Some(&b'-') => return None,
            c if ident(c)
                || matches!(
                    c,
                    b' ' | b'\t'
                        | b'\n'
                        | b'\r'
                        | b','
                        | b'.'
                        | b'='
                        | b'<'
                        | b'>'
                        | b'('
                        | b')'
                        | b'*'
                        | b';'
                        | b'+'
                        | b'-'
                        | b'!'
                        | b'%'
                        | b'&'
                        | b'|'
                        | b'~'
                        | b'^'
                        | b':'
                        | b'['
                        | b']'
                ) =>
            {
                key.push(c);
                i += 1;
            }
            _ => return None,
        }
    }
    String::from_utf8(key).ok()
}

/// The cache key of a text with number and single-quoted string literals
/// replaced (see [`Enforcer`]); `None` when the text cannot be tokenized.
/// The key starts with a byte no SQL text contains, so it never equals a text.
fn literal_free_key(sql: &str) -> Option<String> {
    use sqlparser::tokenizer::{Token, Tokenizer, Whitespace};
    let tokens = Tokenizer::new(&sqlparser::dialect::PostgreSqlDialect {}, sql)
        .tokenize()
        .ok()?;
    let mut key = String::with_capacity(sql.len() + 8);
    key.push('\u{0}');
    // PostgreSQL reads a string continuing an E'' string (after a newline)
    // with backslash escapes, where sqlparser sees a plain string: its
    // extent depends on its value, so it is not folded (see
    // sluice_policy::pg_grammar).
    let mut escaped = false;
    for token in tokens {
        escaped = match &token {
            Token::EscapedStringLiteral(_) => true,
            Token::Whitespace(_) | Token::SingleQuotedString(_) => escaped,
            _ => false,
        };
        match token {
            // Numbers and strings apart: a literal of another type at the
            // same place can make the parser build another tree.
            Token::Number(..) => key.push('\u{2}'),
            Token::SingleQuotedString(_) if !escaped => key.push('\u{3}'),
            Token::Whitespace(Whitespace::Space | Whitespace::Newline | Whitespace::Tab) => {
                key.push(' ');
                continue;
            }
            other => {
                use std::fmt::Write as _;
                let _ = write!(key, "{other}");
            }
        }
        // A separator that cannot occur inside a token keeps the key unambiguous.
        key.push('\u{1}');
    }
    Some(key)
}

// === impl Decided ===

/// A decided SQL text: the engine's decision and what the sidecar does with it.
#[derive(Debug)]
pub struct Decided {
    /// The engine's decision.
    pub sql: SqlDecision,
    /// Set when the text may not run: what the client is told.
    pub refusal: Option<Refusal>,
    /// Whether the refusal is a `requireApproval` rule's (see [`Decided::awaits_approval`]).
    awaits_approval: bool,
    /// Its audit fields, rendered at its first event.
    pub(crate) audit: crate::audit::StatementPieces,
}

/// A decision, as recorded.
#[derive(Debug, Clone)]
pub struct DecisionSummary {
    /// Decided action (dryRun verdicts included).
    pub action: Action,
    /// What happens.
    pub enforced: Action,
    /// Deciding policy.
    pub policy: Option<String>,
    /// Deciding rule.
    pub rule: Option<String>,
    /// Whether a dryRun policy decided more strictly than what happens.
    pub dry_run: bool,
    /// Why.
    pub reason: String,
}

/// Where a `COPY … TO STDOUT` reads from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyTarget {
    /// `(schema, table)` for `COPY table [(cols)] TO STDOUT`; `None` for `COPY (query) TO STDOUT`.
    pub table: Option<(Option<String>, String)>,
}

impl Decided {
    fn new(sql: SqlDecision) -> Self {
        let refusal = Refusal::for_decision(&sql);
        let awaits_approval = sql.decision.enforced == Action::RequireApproval;
        Decided {
            sql,
            refusal,
            awaits_approval,
            audit: Default::default(),
        }
    }

    /// The approval the text waits for, when a `requireApproval` rule (and
    /// nothing stricter) is what keeps it from running. Its [`Decided::refusal`]
    /// is the answer without the operator (standalone); with the operator's
    /// approvals at hand the protocol layer asks instead.
    pub fn awaits_approval(&self) -> Option<&Approval> {
        if !self.awaits_approval {
            return None;
        }
        self.sql.decision.approval.as_ref()
    }

    /// What to ask the operator for `exact` (the text as the client sent
    /// it) on `connection`, when the text awaits approval.
    pub fn approval_ask(&self, connection: &str, exact: &str) -> Option<ApprovalAsk> {
        self.awaits_approval()?;
        let d = &self.sql.decision;
        Some(ApprovalAsk {
            connection: connection.to_string(),
            policy: d.enforced_policy.clone().or_else(|| d.policy.clone())?,
            rule: d.enforced_rule.clone().or_else(|| d.rule.clone())?,
            command: crate::approval::command(
                &self.sql.redacted,
                &self.sql.fingerprint,
                exact.as_bytes(),
            ),
            reason: None,
        })
    }

    /// How many statements the text holds.
    pub fn len(&self) -> usize {
        self.sql.statements.len()
    }

    /// Whether the text holds no statement.
    pub fn is_empty(&self) -> bool {
        self.sql.statements.is_empty()
    }

    /// Whether Sluice could not parse the text (the policy's `onParseError`
    /// decided it).
    pub fn unparsed(&self) -> bool {
        self.sql.parse_error.is_some()
    }

    /// The `index`-th statement.
    pub fn statement(&self, index: usize) -> Option<&Statement> {
        self.sql.statements.get(index).map(|(s, _)| s)
    }

    /// The overall decision.
    pub fn decision(&self) -> &Decision {
        &self.sql.decision
    }

    /// For the audit record: the decided and the enforced action, policy,
    /// rule, dry run, and the reason.
    pub fn summary(&self) -> DecisionSummary {
        let d = &self.sql.decision;
        DecisionSummary {
            action: d.action,
            enforced: d.enforced,
            policy: d.policy.clone(),
            rule: d.rule.clone(),
            dry_run: d.dry_run,
            reason: d.reason.clone(),
        }
    }

    /// The text with literals redacted.
    pub fn redacted(&self) -> &str {
        &self.sql.redacted
    }

    /// The kind of the (first) statement, e.g. `select`.
    pub fn kind(&self) -> Option<&'static str> {
        self.sql.statements.first().map(|(s, _)| s.kind.as_str())
    }

    /// The fingerprint of the text.
    pub fn fingerprint(&self) -> &str {
        &self.sql.fingerprint
    }

    /// If statement `index` is a `COPY … TO STDOUT`, where it reads from.
    pub fn copy_out(&self, index: usize) -> Option<CopyTarget> {
        let stmt = self.statement(index)?;
        if stmt.kind != StatementKind::Copy {
            return None;
        }
        use sqlparser::ast;
        match &stmt.ast {
            ast::Statement::Copy {
                source,
                to: true,
                target: ast::CopyTarget::Stdout,
                ..
            } => match source {
                ast::CopySource::Table { table_name, .. } => {
                    let parts: Vec<String> = table_name
                        .0
                        .iter()
                        .map(|p| match p.as_ident() {
                            Some(i) if i.quote_style.is_some() => i.value.clone(),
                            Some(i) => i.value.to_lowercase(),
                            None => p.to_string(),
                        })
                        .collect();
                    let table = match parts.as_slice() {
                        [t] => (None, t.clone()),
                        [.., s, t] => (Some(s.clone()), t.clone()),
                        [] => return None,
                    };
                    Some(CopyTarget { table: Some(table) })
                }
                ast::CopySource::Query(_) => Some(CopyTarget { table: None }),
            },
            _ => None,
        }
    }
}

// === impl Refusal ===

/// PostgreSQL's SQLSTATE for a statement too complex to process.
const STATEMENT_TOO_COMPLEX: &str = "54001";

/// A refused statement: the ErrorResponse the client gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// SQLSTATE.
    pub code: &'static str,
    /// Primary message.
    pub message: String,
    /// Detail.
    pub detail: Option<String>,
    /// Hint.
    pub hint: Option<String>,
}

impl Refusal {
    /// A refusal with SQLSTATE 42501 and a message.
    pub fn plain(message: &str) -> Self {
        Refusal {
            code: error_response::INSUFFICIENT_PRIVILEGE,
            message: message.to_string(),
            detail: None,
            hint: None,
        }
    }

    /// A protocol violation.
    pub fn protocol(message: &str) -> Self {
        Refusal {
            code: error_response::PROTOCOL_VIOLATION,
            message: message.to_string(),
            detail: None,
            hint: None,
        }
    }

    /// The audit sink could not take the decision: the statement does not run.
    pub fn audit_failed(e: &dyn std::error::Error) -> Self {
        Refusal {
            code: error_response::INTERNAL_ERROR,
            message: format!(
                "statement not run: Sluice could not write its audit record ({e}); audit is write-ahead"
            ),
            detail: None,
            hint: Some("check the sidecar's audit sink (stdout, --audit-file)".into()),
        }
    }

    /// Writes the ErrorResponse.
    pub fn encode(&self, out: &mut BytesMut) {
        Report {
            severity: "ERROR",
            code: self.code,
            message: &self.message,
            detail: self.detail.as_deref(),
            hint: self.hint.as_deref(),
        }
        .encode(out);
    }

    /// The refusal for an engine decision, or `None` when it may run (allow,
    /// or a dryRun verdict that only records).
    fn for_decision(sql: &SqlDecision) -> Option<Refusal> {
        let d = &sql.decision;
        let several = sql.statements.len() > 1;
        if let Some(r) = crate::parse_pool::grammar_refusal(sql) {
            return Some(r);
        }
        if sql.too_complex {
            return Some(Refusal {
                code: STATEMENT_TOO_COMPLEX,
                message: format!("statement refused by Sluice: {}", d.reason),
                detail: None,
                hint: Some(
                    "send large data as bind parameters or with COPY, and split long statements"
                        .to_string(),
                ),
            });
        }
        match d.enforced {
            Action::Allow => None,
            Action::Deny => {
                let (which, whole) = refused_statement(sql);
                let mut message = format!("statement denied by Sluice: {}", d.reason);
                if several {
                    message.push_str(&format!(
                        "; statement {which} of {} is denied, so the whole query string was refused and none of it ran",
                        sql.statements.len()
                    ));
                }
                Some(Refusal {
                    code: error_response::INSUFFICIENT_PRIVILEGE,
                    message,
                    detail: Some(format!(
                        "policy {:?}, rule {:?}, statement: {whole}",
                        d.enforced_policy.as_deref().or(d.policy.as_deref()).unwrap_or("-"),
                        d.enforced_rule.as_deref().or(d.rule.as_deref()).unwrap_or("(default or parse error)")
                    )),
                    hint: sql
                        .parse_error
                        .as_ref()
                        .map(|_| "Sluice could not parse the statement; the policy's onParseError decides".to_string()),
                })
            }
            Action::RequireApproval => {
                let mode = match d.approval.as_ref().map(|a| a.mode) {
                    Some(ApprovalMode::Retry) => "retry",
                    _ => "hold",
                };
                Some(Refusal {
                    code: error_response::INSUFFICIENT_PRIVILEGE,
                    message: format!(
                        "statement needs approval ({}), and approvals need the Sluice operator, which this standalone sidecar does not have: refused",
                        d.reason
                    ),
                    detail: Some(format!(
                        "policy {:?}, rule {:?}, approval mode {mode}",
                        d.enforced_policy.as_deref().or(d.policy.as_deref()).unwrap_or("-"),
                        d.enforced_rule.as_deref().or(d.rule.as_deref()).unwrap_or("-")
                    )),
                    hint: Some("run the sidecar in the cluster with the operator to hold the statement for a human approval".into()),
                })
            }
        }
    }
}

/// Which statement (1-based) of a string caused the refusal, and its redacted text.
fn refused_statement(sql: &SqlDecision) -> (usize, String) {
    let worst = sql.decision.enforced;
    sql.statements
        .iter()
        .position(|(_, d)| d.enforced == worst)
        .map(|i| (i + 1, sql.statements[i].0.redacted.clone()))
        .unwrap_or((1, sql.redacted.clone()))
}

// === impl Masking ===

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
    set: Arc<PolicySet>,
    /// Per masking rule, the replacement when it does not depend on the
    /// value (redact, fixed).
    constants: Vec<Option<bytes::Bytes>>,
    active: bool,
    column_rules: bool,
    detectors: bool,
    limits: ResultLimits,
}

impl Masking {
    fn new(set: Arc<PolicySet>) -> Self {
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

    /// The mask of a result: `stmt` is the statement that produced it (when
    /// known), `origins` the resolved origin of each column (`None` when the
    /// lookup failed: every column is then masked). `views`: the masking
    /// rules' matcher as the catalog extended it (views, user-defined
    /// functions), in place of the rules' own.
    pub fn row_mask(
        &self,
        stmt: Option<(&Decided, usize)>,
        columns: &[Column],
        origins: Option<&[Option<Origin>]>,
        views: Option<&ColumnMatcher>,
    ) -> RowMask {
        let strongest = 0;
        let Some(origins) = origins else {
            let why = "the result's columns could not be resolved to tables".to_string();
            return RowMask::new(
                columns,
                columns
                    .iter()
                    .map(|_| Some((strongest, why.clone())))
                    .collect(),
                self.detectors,
            );
        };
        let statement = stmt.and_then(|(d, i)| d.statement(i));
        let Some(statement) = statement else {
            if !self.column_rules {
                return RowMask::new(columns, vec![None; columns.len()], self.detectors);
            }
            // No statement to reason about (e.g. a portal whose statement the
            // sidecar never saw): mask what comes from a masked column, and
            // every computed column, since it could be derived from one.
            let why = "the statement behind this result is unknown to Sluice".to_string();
            return RowMask::new(
                columns,
                columns
                    .iter()
                    .map(|_| Some((strongest, why.clone())))
                    .collect(),
                self.detectors,
            );
        };
        let output: Vec<OutputColumn> = columns
            .iter()
            .zip(origins)
            .map(|(c, o)| OutputColumn {
                name: c.name.clone(),
                origin: o.as_ref().map(|o| ColumnOrigin {
                    schema: Some(o.schema.clone()),
                    table: o.table.clone(),
                    column: o.column.clone(),
                }),
            })
            .collect();
        let matcher = views.unwrap_or_else(|| self.set.column_matcher());
        let plan = self.set.mask_plan(statement, &output, matcher);
        let masks = plan
            .columns
            .iter()
            .map(|c| match c {
                ColumnMask::Clear => None,
                ColumnMask::Mask { rule, reason } => Some((*rule, describe_reason(reason))),
            })
            .collect();
        RowMask::new(columns, masks, self.detectors)
    }

    /// The mask of `COPY … TO STDOUT` (statement `index` of `decided`), given
    /// the table's columns when it copies a table; `Err` when it must be refused.
    pub fn copy_mask(
        &self,
        decided: &Decided,
        index: usize,
        table_columns: Option<&[String]>,
        views: Option<&ColumnMatcher>,
    ) -> Result<Option<CopyMask>, Refusal> {
        let Some(stmt) = decided.statement(index) else {
            return Ok(None);
        };
        let matcher = views.unwrap_or_else(|| self.set.column_matcher());
        match self.set.copy_plan(stmt, table_columns, matcher) {
            CopyPlan::Deny(why) => Err(Refusal::plain(&format!(
                "COPY refused by Sluice: masking applies and {why}"
            ))),
            CopyPlan::Columns(plan) => {
                let columns: Vec<Option<usize>> = plan
                    .columns
                    .iter()
                    .map(|c| match c {
                        ColumnMask::Clear => None,
                        ColumnMask::Mask { rule, .. } => Some(*rule),
                    })
                    .collect();
                if columns.iter().all(Option::is_none) && !self.detectors {
                    return Ok(None);
                }
                if copy_is_not_text(stmt) {
                    return Err(Refusal::plain(
                        "COPY refused by Sluice: masking applies, and Sluice masks COPY only in text format (not csv or binary)",
                    ));
                }
                Ok(Some(CopyMask {
                    columns,
                    detectors: self.detectors,
                }))
            }
        }
    }
}

fn describe_reason(reason: &MaskReason) -> String {
    match reason {
        MaskReason::Origin => "a masked column".to_string(),
        MaskReason::DerivedFrom(c) => format!("derived from masked column {c}"),
        MaskReason::Uncertain(why) => format!("masked whole: {why}"),
    }
}

fn has_column_globs(set: &PolicySet) -> bool {
    !set.column_matcher().is_empty()
}

/// Whether a COPY asks for anything but the plain text format (csv, binary,
/// another delimiter or NULL string), which the sidecar's COPY masking does not read.
fn copy_is_not_text(stmt: &Statement) -> bool {
    use sqlparser::ast;
    match &stmt.ast {
        ast::Statement::Copy {
            options,
            legacy_options,
            ..
        } => !legacy_options.is_empty()
            || !options.iter().all(
                |o| matches!(o, ast::CopyOption::Format(f) if f.value.eq_ignore_ascii_case("text")),
            ),
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::{literal_free_key, plain_literal_free_key};

    #[test]
    fn plain_key_folds_only_plain_literals() {
        let k = |s: &str| plain_literal_free_key(s);
        let a = k("SELECT abalance FROM pgbench_accounts WHERE aid = 81235;").unwrap();
        assert_eq!(
            a,
            k("SELECT abalance FROM pgbench_accounts WHERE aid = 7;").unwrap()
        );
        assert_eq!(
            k("SELECT * FROM t WHERE a = 'it''s' AND b = 1").unwrap(),
            k("SELECT * FROM t WHERE a = '--/*;DROP' AND b = 22").unwrap()
        );
        assert_ne!(
            a,
            k("SELECT abalance FROM pgbench_accounts WHERE aid = aid;").unwrap()
        );
        assert_ne!(
            k("SELECT t1 FROM t").unwrap(),
            k("SELECT t2 FROM t").unwrap()
        );
        // Anything outside the plain subset goes to the tokenizer.
        for text in [
            "SELECT 1 -- comment",
            "SELECT 1 /* c */",
            "SELECT E'a\\'' FROM t",
            "SELECT 'a\\' FROM t",
            "SELECT x'ff'",
            "SELECT $1",
            "SELECT $$a$$",
            "SELECT \"a\" FROM t",
            "SELECT 1.5",
            "SELECT 1e5",
            "SELECT 12abc",
            "SELECT 'unterminated",
            "SELECT 'é' FROM té",
            "SELECT a ? b",
            "SELECT # 1",
        ] {
            assert!(k(text).is_none(), "{text}");
        }
        // Never equal to a tokenizer key or a text.
        let t = literal_free_key("SELECT 1").unwrap();
        assert!(a.starts_with("\0\0") && !t.starts_with("\0\0"));
    }

    #[test]
    fn literal_free_key_only_folds_literals() {
        let a = literal_free_key("SELECT * FROM t WHERE id = 1").unwrap();
        let b = literal_free_key("SELECT * FROM t WHERE id = 42").unwrap();
        let c = literal_free_key("SELECT * FROM t WHERE id = 'x'").unwrap();
        assert_eq!(a, b);
        // A string where a number was is another shape: the parser may
        // build another tree from it.
        assert_ne!(a, c);
        assert_eq!(
            c,
            literal_free_key("SELECT * FROM t WHERE id = 'other'").unwrap()
        );
        assert_ne!(
            a,
            literal_free_key("SELECT * FROM t WHERE id = id").unwrap()
        );
        assert_ne!(a, literal_free_key("SELECT * FROM u WHERE id = 1").unwrap());
        // A quote inside a comment is not a literal: the DROP stays in the key.
        let tricky = literal_free_key("SELECT 1 /* ' */; DROP TABLE t; /* ' */").unwrap();
        assert_ne!(
            tricky,
            literal_free_key("SELECT 1 /* ' */ /* ' */").unwrap()
        );
        assert!(tricky.contains("DROP"));
        // Identifiers and dollar-quoted bodies are kept.
        assert_ne!(
            literal_free_key("SELECT \"a\" FROM t").unwrap(),
            literal_free_key("SELECT \"b\" FROM t").unwrap()
        );
        assert_ne!(
            literal_free_key("DO $$ BEGIN PERFORM 1; END $$").unwrap(),
            literal_free_key("DO $$ BEGIN DROP TABLE t; END $$").unwrap()
        );
        assert!(literal_free_key("SELECT 'unterminated").is_none());
    }
}
