//! TEMPORARY stand-in (allow everything, mask nothing) while the engine's
//! `engine` module is not enabled; replaced by the real adapter.

use std::sync::Arc;

use bytes::BytesMut;
use sluice_crds::Action;

use crate::postgres::catalog::Origin;
use crate::postgres::masking::{CopyMask, RowMask};
use crate::postgres::messages::error_response::{self, Report};
use crate::postgres::messages::row_description::Column;

/// Identity placeholder.
#[derive(Debug, Clone)]
pub struct Identity {
    /// ns
    pub namespace: String,
    /// sa
    pub service_account: String,
    /// pod
    pub pod: Option<String>,
}

/// Binding.
pub struct Binding {
    identity: Identity,
}

impl Binding {
    /// New.
    pub fn stub(namespace: &str, sa: &str) -> Self {
        Binding {
            identity: Identity {
                namespace: namespace.into(),
                service_account: sa.into(),
                pod: None,
            },
        }
    }
    /// Identity.
    pub fn identity(&self) -> &Identity {
        &self.identity
    }
    /// Bound.
    pub fn is_bound(&self) -> bool {
        true
    }
    /// Names.
    pub fn policy_names(&self) -> Vec<String> {
        Vec::new()
    }
    /// Warnings.
    pub fn warnings(&self) -> Vec<String> {
        Vec::new()
    }
    /// Enforcer.
    pub fn enforcer(&self) -> Option<Enforcer> {
        Some(Enforcer {
            masking: Arc::new(Masking),
        })
    }
    /// Message.
    pub fn not_bound_message(&self, connection: &str) -> String {
        format!("not bound to {connection}")
    }
}

/// Enforcer.
pub struct Enforcer {
    masking: Arc<Masking>,
}

impl Enforcer {
    /// Decide.
    pub fn decide(&mut self, sql: &str) -> Arc<Decided> {
        Arc::new(Decided {
            refusal: None,
            redacted: sql.to_string(),
        })
    }
    /// Masking.
    pub fn masking(&self) -> Arc<Masking> {
        self.masking.clone()
    }
}

/// Decided.
#[derive(Debug)]
pub struct Decided {
    /// Refusal.
    pub refusal: Option<Refusal>,
    redacted: String,
}

/// Summary.
#[derive(Debug, Clone)]
pub struct DecisionSummary {
    /// a
    pub action: Action,
    /// e
    pub enforced: Action,
    /// p
    pub policy: Option<String>,
    /// r
    pub rule: Option<String>,
    /// d
    pub dry_run: bool,
    /// r
    pub reason: String,
}

/// Copy target.
#[derive(Debug, Clone)]
pub struct CopyTarget {
    /// t
    pub table: Option<(Option<String>, String)>,
}

impl Decided {
    /// Len.
    pub fn len(&self) -> usize {
        1
    }
    /// Empty.
    pub fn is_empty(&self) -> bool {
        false
    }
    /// Summary.
    pub fn summary(&self) -> DecisionSummary {
        DecisionSummary {
            action: Action::Allow,
            enforced: Action::Allow,
            policy: None,
            rule: None,
            dry_run: false,
            reason: "stub".into(),
        }
    }
    /// Redacted.
    pub fn redacted(&self) -> &str {
        &self.redacted
    }
    /// Fingerprint.
    pub fn fingerprint(&self) -> &str {
        ""
    }
    /// Copy out.
    pub fn copy_out(&self, _index: usize) -> Option<CopyTarget> {
        None
    }
}

/// Refusal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// c
    pub code: &'static str,
    /// m
    pub message: String,
    /// d
    pub detail: Option<String>,
    /// h
    pub hint: Option<String>,
}

impl Refusal {
    /// Plain.
    pub fn plain(message: &str) -> Self {
        Refusal {
            code: error_response::INSUFFICIENT_PRIVILEGE,
            message: message.into(),
            detail: None,
            hint: None,
        }
    }
    /// Protocol.
    pub fn protocol(message: &str) -> Self {
        Refusal {
            code: error_response::PROTOCOL_VIOLATION,
            message: message.into(),
            detail: None,
            hint: None,
        }
    }
    /// Audit.
    pub fn audit_failed(e: &dyn std::error::Error) -> Self {
        Refusal {
            code: error_response::INTERNAL_ERROR,
            message: format!("audit failed: {e}"),
            detail: None,
            hint: None,
        }
    }
    /// Encode.
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
}

/// Limits.
#[derive(Debug, Clone, Copy, Default)]
pub struct ResultLimits {
    /// m
    pub max_rows: Option<u64>,
    /// r
    pub refuse_past_max: bool,
    /// s
    pub statements_per_second: Option<u32>,
}

/// Masking.
#[derive(Debug)]
pub struct Masking;

impl Masking {
    /// Active.
    pub fn active(&self) -> bool {
        false
    }
    /// Columns.
    pub fn has_column_rules(&self) -> bool {
        false
    }
    /// Limits.
    pub fn limits(&self) -> ResultLimits {
        ResultLimits::default()
    }
    /// Mask.
    pub fn mask(&self, _rule: usize, _value: &str) -> String {
        "***".into()
    }
    /// Detect.
    pub fn detect(&self, _text: &str) -> Option<String> {
        None
    }
    /// Row mask.
    pub fn row_mask(
        &self,
        _stmt: Option<(&Decided, usize)>,
        columns: &[Column],
        _origins: Option<&[Option<Origin>]>,
    ) -> RowMask {
        RowMask::new(columns, vec![None; columns.len()], false)
    }
    /// Copy mask.
    pub fn copy_mask(
        &self,
        _d: &Decided,
        _i: usize,
        _t: Option<&[String]>,
    ) -> Result<Option<CopyMask>, Refusal> {
        Ok(None)
    }
}
