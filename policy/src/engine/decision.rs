//! Decisions: one policy's verdict, and how verdicts of several policies combine.

use serde::Serialize;
use sluice_crds::{Action, Approval, MaxRowsAction};

use crate::sql::Statement;

use super::Identity;

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

/// One policy's verdict on one statement or request, borrowing the
/// policy's names (only the combined [`Decision`] owns copies).
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Verdict<'a> {
    /// The action.
    pub action: Action,
    /// The policy.
    pub policy: &'a str,
    /// The matching rule; `None` for defaultAction or onParseError.
    pub rule: Option<&'a str>,
    /// The approval settings of the rule, for requireApproval.
    #[serde(skip)]
    pub approval: Option<&'a Approval>,
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
    pub(super) fn combine(verdicts: &[Verdict<'_>]) -> Decision {
        // The strictest verdict wins; among equals the first (policies are kept in name order).
        let decided = strictest(verdicts.iter());
        let mut enforced = strictest(verdicts.iter().filter(|v| !v.dry_run));
        // Approvals never tie (issue 18): the requirement that covers all the
        // others decides, or no single AccessRequest can satisfy them and it is a deny.
        if enforced.is_some_and(|e| e.action == Action::RequireApproval) {
            let held: Vec<&Verdict<'_>> = verdicts
                .iter()
                .filter(|v| !v.dry_run && v.action == Action::RequireApproval)
                .collect();
            match covering(&held, |v| v.approval) {
                Some(v) => enforced = Some(v),
                None => {
                    return Decision::mixed_approvals(held.iter().map(|v| (v.policy, v.rule)));
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
            policy: shown.map(|v| v.policy.to_string()),
            rule: shown.and_then(|v| v.rule.map(str::to_string)),
            enforced_policy: enforced.map(|v| v.policy.to_string()),
            enforced_rule: enforced.and_then(|v| v.rule.map(str::to_string)),
            dry_run,
            approval: enforced
                .filter(|e| e.action == Action::RequireApproval)
                .and_then(|e| e.approval.cloned()),
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
    pub(super) fn denied(reason: String) -> Decision {
        Decision::unattributed(Action::Deny, reason)
    }

    /// An enforced `action` that names no policy or rule, for `reason`.
    pub(super) fn unattributed(action: Action, reason: String) -> Decision {
        Decision {
            action,
            enforced: action,
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
    pub(super) fn mixed_approvals<'a>(
        rules: impl Iterator<Item = (&'a str, Option<&'a str>)>,
    ) -> Decision {
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
pub(super) fn covering<'a, T>(
    items: &[&'a T],
    approval: impl Fn(&T) -> Option<&Approval>,
) -> Option<&'a T> {
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

fn strictest<'a, 'p>(verdicts: impl Iterator<Item = &'a Verdict<'p>>) -> Option<&'a Verdict<'p>> {
    verdicts.fold(None, |best, v| match best {
        Some(b) if b.action >= v.action => Some(b),
        _ => Some(v),
    })
}

/// `allow by rule "r" of AccessPolicy "p"`, and the like: built in one
/// buffer (two `format!`s here were a measurable part of deciding an HTTP
/// request).
fn describe(v: &Verdict<'_>, dry_run: bool) -> String {
    let mut out = String::with_capacity(96 + v.policy.len() + v.rule.map_or(0, str::len));
    out.push_str(v.action.as_str());
    out.push_str(" by ");
    match (v.rule, v.reason) {
        (Some(rule), _) => {
            out.push_str("rule ");
            push_quoted(&mut out, rule);
            out.push_str(" of AccessPolicy ");
            push_quoted(&mut out, v.policy);
        }
        (None, VerdictReason::ParseError) => {
            out.push_str("onParseError of AccessPolicy ");
            push_quoted(&mut out, v.policy);
            out.push_str(" (statement could not be parsed)");
        }
        (None, _) => {
            out.push_str("defaultAction of AccessPolicy ");
            push_quoted(&mut out, v.policy);
        }
    }
    if dry_run {
        out.push_str(" (dryRun: recorded, not enforced)");
    }
    out
}

/// Appends `s` as `{s:?}` writes it: a name of printable ASCII without
/// quotes or backslashes (every Kubernetes name) is copied between quotes,
/// anything else escaped by `Debug`.
fn push_quoted(out: &mut String, s: &str) {
    if s.bytes()
        .all(|b| (b' '..=b'~').contains(&b) && b != b'"' && b != b'\\')
    {
        out.push('"');
        out.push_str(s);
        out.push('"');
    } else {
        use std::fmt::Write;
        let _ = write!(out, "{s:?}");
    }
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
    /// The table names its statements give, each once, sorted.
    pub fn table_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .statements
            .iter()
            .flat_map(|(s, _)| s.tables.iter().cloned())
            .collect();
        names.sort();
        names.dedup();
        names
    }

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

#[cfg(test)]
mod tests {
    /// The reasons' names read as `format!("{name:?}")` wrote them.
    #[test]
    fn names_are_quoted_as_debug_quotes_them() {
        let names = [
            "deny-admin",
            "a b.c_d",
            "",
            "quote\"d",
            "back\\slash",
            "tab\tnew\nline",
            "\u{7f}",
            "é",
            "\u{301}accent first",
            "emoji 🚀",
        ];
        for name in names {
            let mut out = String::new();
            super::push_quoted(&mut out, name);
            assert_eq!(out, format!("{name:?}"));
        }
    }
}
