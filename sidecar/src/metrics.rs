//! Prometheus metrics of the sidecar (prometheus-client), names prefixed `sluice_`.

use std::time::Duration;

use std::fmt::Write as _;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use sluice_crds::Action;

/// The decision label of a statement.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub enum DecisionLabel {
    /// Ran.
    Allow,
    /// Refused by a deny rule (or a limit).
    Deny,
    /// Refused: needs an approval.
    RequireApproval,
    /// Ran, but a dryRun policy would have refused it.
    DryRunDeny,
}

/// Labels of `sluice_statements_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StatementLabels {
    /// The decision.
    pub decision: DecisionLabel,
}

/// Labels of `sluice_sessions_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SessionLabels {
    /// `opened` or `refused`.
    pub outcome: SessionOutcome,
}

/// How a session attempt ended.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub enum SessionOutcome {
    /// It was opened.
    Opened,
    /// It was refused (not bound, upstream failure, audit failure).
    Refused,
}

/// Labels of `sluice_bytes_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BytesLabels {
    /// Direction.
    pub direction: Direction,
}

/// Direction of bytes.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub enum Direction {
    /// From the application to the sidecar.
    FromClient,
    /// From the sidecar to the application.
    ToClient,
}

/// Labels of `sluice_approvals_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ApprovalLabels {
    /// The step.
    pub step: ApprovalStep,
}

/// A step of a statement's approval.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum ApprovalStep {
    /// The operator was asked (a new request, or the pending one again).
    Asked,
    /// Approved, and the statement ran.
    Granted,
    /// Denied by an approver.
    Denied,
    /// Expired without a decision.
    Expired,
    /// Refused for another reason (operator unreachable, approval already used).
    Failed,
}

/// The sidecar's metrics.
#[derive(Debug)]
pub struct Metrics {
    masked: Counter,
    sessions: Family<SessionLabels, Counter>,
    active: Gauge,
    latency: Histogram,
    // Handles into the families, taken once: the hot path only does an atomic add.
    from_client: Counter,
    to_client: Counter,
    allow: Counter,
    deny: Counter,
    approval: Counter,
    dry_run: Counter,
    approvals: Family<ApprovalLabels, Counter>,
    buffer_in_use: Gauge,
    not_read: Gauge,
    audit_unrecorded: Counter,
}

/// A session whose client is not read (see [`Metrics::client_not_read`]);
/// counted until dropped.
#[derive(Debug)]
pub struct NotRead(Gauge);

impl Drop for NotRead {
    fn drop(&mut self) {
        self.0.dec();
    }
}

impl Metrics {
    /// Client sessions open now (for `/debug/standing`).
    pub fn active_sessions(&self) -> i64 {
        self.active.get()
    }

    /// Statements refused since start (for `/debug/standing`).
    pub fn statements_refused(&self) -> u64 {
        self.deny.get()
    }

    /// The process's buffer budget of `limit` bytes, its use exported as
    /// `sluice_buffer_budget_in_use_bytes`.
    pub fn buffer_budget(&self, limit: usize) -> crate::limits::BufferBudget {
        crate::limits::BufferBudget::with_gauge(limit, self.buffer_in_use.clone())
    }

    /// Counts a session whose client is not read until the result is dropped.
    pub fn client_not_read(&self) -> NotRead {
        self.not_read.inc();
        NotRead(self.not_read.clone())
    }

    /// Creates the metrics and registers them.
    pub fn register(registry: &mut Registry) -> Self {
        let statements = Family::<StatementLabels, Counter>::default();
        let bytes = Family::<BytesLabels, Counter>::default();
        let decision = |d: DecisionLabel| {
            statements
                .get_or_create(&StatementLabels { decision: d })
                .clone()
        };
        let direction = |d: Direction| bytes.get_or_create(&BytesLabels { direction: d }).clone();
        let m = Metrics {
            allow: decision(DecisionLabel::Allow),
            deny: decision(DecisionLabel::Deny),
            approval: decision(DecisionLabel::RequireApproval),
            dry_run: decision(DecisionLabel::DryRunDeny),
            from_client: direction(Direction::FromClient),
            to_client: direction(Direction::ToClient),
            masked: Counter::default(),
            sessions: Family::default(),
            approvals: Family::default(),
            active: Gauge::default(),
            buffer_in_use: Gauge::default(),
            not_read: Gauge::default(),
            audit_unrecorded: Counter::default(),
            latency: Histogram::new([
                0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                1.0, 2.5, 5.0, 10.0,
            ]),
        };
        registry.register(
            "sluice_statements",
            "SQL statements decided, by decision",
            statements,
        );
        registry.register(
            "sluice_masked_values",
            "Result values masked",
            m.masked.clone(),
        );
        registry.register(
            "sluice_sessions",
            "Client sessions, by outcome",
            m.sessions.clone(),
        );
        registry.register(
            "sluice_active_sessions",
            "Client sessions open now",
            m.active.clone(),
        );
        registry.register(
            "sluice_upstream_latency_seconds",
            "Time from forwarding a statement to the end of its result",
            m.latency.clone(),
        );
        registry.register("sluice_bytes", "Bytes relayed, by direction", bytes);
        registry.register(
            "sluice_buffer_budget_in_use_bytes",
            "Bytes of large PostgreSQL messages held, all sessions together (see --buffer-budget)",
            m.buffer_in_use.clone(),
        );
        registry.register(
            "sluice_pg_clients_not_read",
            "PostgreSQL sessions whose client is not read: it owes reading more than 1024 answers",
            m.not_read.clone(),
        );
        registry.register(
            "sluice_audit_unrecorded_refusals",
            "Refusals whose audit record could not be written (the refusal stands; the log says why)",
            m.audit_unrecorded.clone(),
        );
        registry.register(
            "sluice_approvals",
            "Approval steps of statements held for a human, by step",
            m.approvals.clone(),
        );
        m
    }

    /// A statement (or request) was decided: `action` the decided action,
    /// `enforced` what happens, `refused` whether it was refused.
    pub fn decision(&self, action: Action, enforced: Action, refused: bool) {
        let counter = if refused {
            match enforced {
                Action::RequireApproval => &self.approval,
                _ => &self.deny,
            }
        } else if action != Action::Allow {
            &self.dry_run
        } else {
            &self.allow
        };
        counter.inc();
    }

    /// A statement an approval rule caught ran after its approval. It counts
    /// under `requireApproval`, like every statement such a rule catches
    /// (and like an approved HTTP request); `sluice_approvals_total` says
    /// which of them ran.
    pub fn approved_run(&self) {
        self.approval.inc();
    }

    /// A step of a statement's approval.
    pub fn approval(&self, step: ApprovalStep) {
        self.approvals.get_or_create(&ApprovalLabels { step }).inc();
    }

    /// A refusal's audit record could not be written: the refusal stands
    /// (nothing ran), and the gap in the trail is counted.
    pub fn refusal_unrecorded(&self) {
        self.audit_unrecorded.inc();
    }

    /// Values were masked.
    pub fn masked(&self, n: u64) {
        self.masked.inc_by(n);
    }

    /// A session was opened.
    pub fn session_started(&self) {
        self.sessions
            .get_or_create(&SessionLabels {
                outcome: SessionOutcome::Opened,
            })
            .inc();
        self.active.inc();
    }

    /// A session attempt was refused.
    pub fn session_refused(&self) {
        self.sessions
            .get_or_create(&SessionLabels {
                outcome: SessionOutcome::Refused,
            })
            .inc();
    }

    /// A session ended.
    pub fn session_ended(&self) {
        self.active.dec();
    }

    /// A statement's result ended after `d`.
    pub fn upstream_latency(&self, d: Duration) {
        self.latency.observe(d.as_secs_f64());
    }

    /// Bytes read from the client.
    pub fn bytes_from_client(&self, n: usize) {
        self.from_client.inc_by(n as u64);
    }

    /// Bytes written to the client.
    pub fn bytes_to_client(&self, n: usize) {
        self.to_client.inc_by(n as u64);
    }
}

/// Label values are the API's own words (`allow`, `requireApproval`), not Rust names.
macro_rules! label_values {
    ($ty:ty { $($variant:ident => $text:literal),* $(,)? }) => {
        impl EncodeLabelValue for $ty {
            fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> Result<(), std::fmt::Error> {
                encoder.write_str(match self {
                    $(<$ty>::$variant => $text),*
                })
            }
        }
    };
}

label_values!(DecisionLabel {
    Allow => "allow",
    Deny => "deny",
    RequireApproval => "requireApproval",
    DryRunDeny => "dryRunDeny",
});
label_values!(ApprovalStep {
    Asked => "asked",
    Granted => "granted",
    Denied => "denied",
    Expired => "expired",
    Failed => "failed",
});
label_values!(SessionOutcome { Opened => "opened", Refused => "refused" });
label_values!(Direction { FromClient => "fromClient", ToClient => "toClient" });
