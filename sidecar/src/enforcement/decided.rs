//! A decided SQL text ([`Decided`]): the engine's decision, the refusal the
//! client gets when it may not run, and its audit fields rendered once.

use std::sync::OnceLock;

use sluice_crds::{Action, Approval, StatementKind};
use sluice_policy::audit::Rendered;
use sluice_policy::engine::{Decision, SqlDecision};
use sluice_policy::sql::Statement;
use sluice_policy::wire::ApprovalAsk;

use super::Refusal;

/// A decided statement's `command` field, and its `decision` field as an
/// allowed statement of each protocol records it, rendered at its first
/// event: a statement served from the decision cache is recorded by copying
/// them (see [`crate::audit::AuditLog::statement_pending`]).
#[derive(Debug, Default)]
pub struct StatementPieces {
    pub(crate) command: OnceLock<Option<Rendered>>,
    pub(crate) simple: OnceLock<Option<Rendered>>,
    pub(crate) extended: OnceLock<Option<Rendered>>,
    pub(crate) rule: crate::metrics::RuleSlot,
}

/// A decided SQL text: the engine's decision and what the sidecar does with it.
#[derive(Debug)]
pub struct Decided {
    /// The engine's decision.
    pub sql: SqlDecision,
    /// Set when the text may not run: what the client is told.
    pub refusal: Option<Refusal>,
    /// Whether the refusal is a `requireApproval` rule's (see [`Decided::awaits_approval`]).
    pub(super) awaits_approval: bool,
    /// Its audit fields, rendered at its first event.
    pub(crate) audit: StatementPieces,
    /// Which of its statements call a user-defined function (directly or
    /// through a view they read): bit `i` for statement `i`, bit 63 for
    /// every statement from the 64th on. Found through the catalog while
    /// rules follow names; such a function may change what names stand for
    /// (see `postgres::session::catalog_changes`).
    user_code: u64,
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
    pub(super) fn new(sql: SqlDecision) -> Self {
        let refusal = Refusal::for_decision(&sql);
        let awaits_approval = sql.decision.enforced == Action::RequireApproval;
        Decided {
            sql,
            refusal,
            awaits_approval,
            audit: Default::default(),
            user_code: 0,
        }
    }

    /// This decision, with `user_code` (see [`Decided::runs_user_code`])
    /// marking the statements that call user-defined functions.
    pub fn with_user_code(&self, user_code: u64) -> Decided {
        let mut decided = Decided::new(self.sql.clone());
        decided.refusal = self.refusal.clone();
        decided.awaits_approval = self.awaits_approval;
        decided.user_code = user_code;
        decided
    }

    /// Whether statement `index` was found to call a user-defined function.
    pub fn runs_user_code(&self, index: usize) -> bool {
        self.user_code & (1 << index.min(63)) != 0
    }

    /// This decision refused by Sluice itself with `refusal` (recorded as
    /// a refusal by Sluice, whatever the policies said).
    pub fn refused(&self, refusal: Refusal) -> Decided {
        let mut sql = self.sql.clone();
        sql.decision = sluice_policy::engine::Decision::refused_by_sluice(&refusal.message);
        let mut decided = Decided::new(sql);
        decided.awaits_approval = false;
        decided.refusal = Some(refusal);
        decided
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
            command: crate::approval::approval_command(
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
