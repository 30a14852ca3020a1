//! A refused statement ([`Refusal`]): the PostgreSQL ErrorResponse the
//! client gets, for a decision, a limit, or a failed audit write.

use bytes::BytesMut;
use sluice_crds::{Action, ApprovalMode};
use sluice_policy::engine::SqlDecision;

use crate::postgres::messages::error_response::{self, Report};
use crate::rate::{RateLimit, exceeded};

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
    pub(super) fn for_decision(sql: &SqlDecision) -> Option<Refusal> {
        let d = &sql.decision;
        let several = sql.statements.len() > 1;
        if let Some(r) = grammar_refusal(sql) {
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
                    hint: sql.parse_error.as_ref().map(|_| {
                        if d.policy.is_some() {
                            "Sluice could not parse the statement; the policy's onParseError decides"
                        } else {
                            "Sluice could not parse the statement, and refuses it whatever onParseError says (see the message)"
                        }
                        .to_string()
                    }),
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

impl RateLimit {
    /// The PostgreSQL refusal past `rate` (`None` when the statement may run).
    pub fn check(&self, rate: Option<u32>, connection: &str) -> Option<Refusal> {
        if self.admit(rate) {
            return None;
        }
        Some(Refusal::plain(&exceeded(rate.unwrap_or(0), connection)))
    }
}

/// The refusal of a text PostgreSQL's grammar reads otherwise than
/// Sluice's parser: 42601 (syntax error) when PostgreSQL rejects it too,
/// 0A000 (feature not supported) when it reads other statements.
fn grammar_refusal(sql: &SqlDecision) -> Option<Refusal> {
    let d = sql.disagreement.as_ref()?;
    Some(Refusal {
        code: if d.is_rejection() {
            SYNTAX_ERROR
        } else {
            error_response::FEATURE_NOT_SUPPORTED
        },
        message: format!("statement refused by Sluice: {}", sql.decision.reason),
        detail: Some(format!("statement: {}", sql.redacted)),
        hint: Some(
            "Sluice decides on its own reading of the text and refuses a text PostgreSQL would \
             read otherwise; nothing ran"
                .to_string(),
        ),
    })
}

/// SQLSTATE syntax_error.
const SYNTAX_ERROR: &str = "42601";
