//! Compiled policies and the decision semantics of docs/DESIGN.md §2 (AccessPolicy).
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

mod compile; // one AccessPolicy compiled: rules, globs, masking
mod decision; // verdicts and how several combine into a Decision
mod set; // PolicySet: the policies of one identity on one connection
#[cfg(test)]
mod tests;
mod through; // decisions made stricter through views, partitions and function bodies

pub use compile::{CompiledPolicy, NoSecrets, SecretSource};
pub use decision::{Decision, EffectiveLimits, SqlDecision, Verdict, VerdictReason};
pub use set::PolicySet;
pub use through::{IMPLICIT_CODE, Reach, code_words, runs_code_on_write, runs_implicit_code};

use serde::Serialize;

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
