//! Prometheus metrics of the sidecar (prometheus-client), names prefixed `sluice_`.
//!
//! Label values are one style across both binaries: camelCase words, like
//! the CRDs' own enum values (`requireApproval`, `fromClient`); the names of
//! objects (`connection`, `policy`, `rule`) are given as they are. Every
//! label is bounded: by an enum here, or by the Connections and policies of
//! the bundle in force.
//!
//! The families are registered at start and every process-wide series has
//! a sample from then on (zero), so `absent()` alerts mean what they say; a
//! Connection's series are created, all at zero, when the Connection is
//! first served ([`Metrics::for_connection`]), a rule's at its first
//! decision. The planes hold a
//! [`Metrics`] per Connection whose handles are resolved once: a statement
//! costs atomic adds, never a label lookup.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;
use sluice_crds::Action;

use crate::bundle_client::GatewayError;

mod labels;

pub use labels::*;

/// Buckets of the latency histograms: 50 µs to 10 s.
const LATENCY_BUCKETS: [f64; 17] = [
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 5.0, 10.0,
];

fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS)
}

type HistogramFamily = Family<ConnectionLabels, Histogram, fn() -> Histogram>;

/// The registered families, and the process-wide series.
#[derive(Debug)]
struct Families {
    statements: Family<StatementLabels, Counter>,
    rules: Family<RuleLabels, Counter>,
    masked: Family<ConnectionLabels, Counter>,
    sessions: Family<SessionLabels, Counter>,
    refusals: Family<RefusalLabels, Counter>,
    active: Family<ConnectionLabels, Gauge>,
    upstream: HistogramFamily,
    overhead: HistogramFamily,
    bytes: Family<BytesLabels, Counter>,
    approvals: Family<ApprovalLabels, Counter>,
    exchange: Family<ExchangeLabels, Counter>,
    approvals_pending: Gauge,
    buffer_in_use: Gauge,
    not_read: Gauge,
    audit_unrecorded: Counter,
    audit_queue: Gauge,
    audit_dropped: Counter,
    bundle_in_force: Gauge,
    bundle_refreshed: Gauge,
    bundle_expires: Gauge,
    bundle_failures: Counter,
    /// Sessions open and statements refused on every Connection (for
    /// `/debug/standing`; not exported).
    total_active: Gauge,
    total_refused: Counter,
    /// Each Connection's handles, made once.
    connections: Mutex<HashMap<String, Arc<Metrics>>>,
}

impl Families {
    /// The families, with the series of every approval step and token
    /// exchange failure at zero.
    fn new() -> Families {
        let f = Families {
            statements: Family::default(),
            rules: Family::default(),
            masked: Family::default(),
            sessions: Family::default(),
            refusals: Family::default(),
            active: Family::default(),
            upstream: Family::new_with_constructor(latency_histogram),
            overhead: Family::new_with_constructor(latency_histogram),
            bytes: Family::default(),
            approvals: Family::default(),
            exchange: Family::default(),
            approvals_pending: Gauge::default(),
            buffer_in_use: Gauge::default(),
            not_read: Gauge::default(),
            audit_unrecorded: Counter::default(),
            audit_queue: Gauge::default(),
            audit_dropped: Counter::default(),
            bundle_in_force: Gauge::default(),
            bundle_refreshed: Gauge::default(),
            bundle_expires: Gauge::default(),
            bundle_failures: Counter::default(),
            total_active: Gauge::default(),
            total_refused: Counter::default(),
            connections: Mutex::new(HashMap::new()),
        };
        for step in ApprovalStep::ALL {
            f.approvals.get_or_create_owned(&ApprovalLabels { step });
        }
        for reason in ExchangeFailure::ALL {
            f.exchange.get_or_create_owned(&ExchangeLabels { reason });
        }
        f
    }

    /// Statements: decisions, rules, masked values, the upstream's and Sluice's time.
    fn register_statements(&self, registry: &mut Registry) {
        registry.register(
            "sluice_statements",
            "SQL statements decided, by Connection and decision",
            self.statements.clone(),
        );
        registry.register(
            "sluice_rule_decisions",
            "SQL statements decided, by Connection, deciding AccessPolicy and rule, and the rule's action (empty policy or rule: a default)",
            self.rules.clone(),
        );
        registry.register(
            "sluice_masked_values",
            "Result values masked, by Connection",
            self.masked.clone(),
        );
        registry.register(
            "sluice_upstream_latency_seconds",
            "Time from forwarding a statement (or request) to the end of its result, by Connection: the upstream's time",
            self.upstream.clone(),
        );
        registry.register(
            "sluice_overhead_seconds",
            "Time Sluice adds before a simple query or an extended-protocol group is forwarded (deciding it and its write-ahead audit record; not a human's approval), by Connection",
            self.overhead.clone(),
        );
    }

    /// Sessions: opened, refused, open now, bytes, buffers, unread clients.
    fn register_sessions(&self, registry: &mut Registry) {
        registry.register(
            "sluice_sessions",
            "Client sessions, by Connection and outcome",
            self.sessions.clone(),
        );
        registry.register(
            "sluice_session_refusals",
            "Client sessions refused before they opened, by Connection and reason",
            self.refusals.clone(),
        );
        registry.register(
            "sluice_active_sessions",
            "Client sessions open now, by Connection",
            self.active.clone(),
        );
        registry.register(
            "sluice_bytes",
            "Bytes relayed, by Connection and direction",
            self.bytes.clone(),
        );
        registry.register(
            "sluice_buffer_budget_in_use_bytes",
            "Bytes of large PostgreSQL messages held, all sessions together (see --buffer-budget)",
            self.buffer_in_use.clone(),
        );
        registry.register(
            "sluice_pg_clients_not_read",
            "PostgreSQL sessions whose client is not read: it owes reading more than 1024 answers",
            self.not_read.clone(),
        );
    }

    /// The audit record and approvals.
    fn register_audit(&self, registry: &mut Registry) {
        registry.register(
            "sluice_audit_unrecorded_refusals",
            "Refusals whose audit record could not be written (the refusal stands; the log says why)",
            self.audit_unrecorded.clone(),
        );
        registry.register(
            "sluice_audit_forward_queue",
            "Audit events waiting to be sent to the operator (run mode)",
            self.audit_queue.clone(),
        );
        registry.register(
            "sluice_audit_forward_dropped",
            "Audit events never sent to the operator because its queue was full (they are on stdout)",
            self.audit_dropped.clone(),
        );
        registry.register(
            "sluice_approvals",
            "Approval steps of statements held for a human, by step",
            self.approvals.clone(),
        );
        registry.register(
            "sluice_approvals_pending",
            "Statements held now, waiting for a human's approval",
            self.approvals_pending.clone(),
        );
    }

    /// The build, the bundle in force and the token exchange.
    fn register_bundle(&self, registry: &mut Registry) {
        registry.register(
            "sluice_build",
            "The sidecar's version",
            Info::new(BuildLabels {
                version: env!("CARGO_PKG_VERSION"),
                binary: "sidecar",
            }),
        );
        registry.register(
            "sluice_bundle_in_force",
            "1 while policies are in force: a bundle from the operator (run mode) or the local manifests (standalone); 0 while every session is refused for want of one",
            self.bundle_in_force.clone(),
        );
        registry.register(
            "sluice_bundle_last_refresh_timestamp_seconds",
            "When the operator last vouched for the bundle in force (new or unchanged), Unix seconds; 0 before the first",
            self.bundle_refreshed.clone(),
        );
        registry.register(
            "sluice_bundle_expiry_timestamp_seconds",
            "When the bundle in force expires unless refreshed, Unix seconds; 0 without a bundle",
            self.bundle_expires.clone(),
        );
        registry.register(
            "sluice_bundle_refresh_failures",
            "Bundle polls that failed (the bundle stays in force until its expiry)",
            self.bundle_failures.clone(),
        );
        registry.register(
            "sluice_token_exchange_failures",
            "Exchanges of the pod's token for a gateway token that failed, by reason",
            self.exchange.clone(),
        );
    }
}

/// One Connection's series, resolved once.
#[derive(Debug, Clone)]
struct ConnectionHandles {
    name: String,
    allow: Counter,
    deny: Counter,
    approval: Counter,
    dry_run: Counter,
    masked: Counter,
    opened: Counter,
    refused: Counter,
    refusals: [Counter; 8],
    active: Gauge,
    upstream: Histogram,
    overhead: Histogram,
    from_client: Counter,
    to_client: Counter,
}

impl ConnectionHandles {
    /// Handles counted nowhere: the process-wide [`Metrics`] has them, so a
    /// call on it that names no Connection changes no exported series.
    fn detached() -> Self {
        ConnectionHandles {
            name: String::new(),
            allow: Counter::default(),
            deny: Counter::default(),
            approval: Counter::default(),
            dry_run: Counter::default(),
            masked: Counter::default(),
            opened: Counter::default(),
            refused: Counter::default(),
            refusals: Default::default(),
            active: Gauge::default(),
            upstream: latency_histogram(),
            overhead: latency_histogram(),
            from_client: Counter::default(),
            to_client: Counter::default(),
        }
    }

    fn resolve(f: &Families, name: &str) -> Self {
        let connection = name.to_string();
        let decision = |decision| {
            f.statements.get_or_create_owned(&StatementLabels {
                connection: connection.clone(),
                decision,
            })
        };
        let session = |outcome| {
            f.sessions.get_or_create_owned(&SessionLabels {
                connection: connection.clone(),
                outcome,
            })
        };
        let direction = |direction| {
            f.bytes.get_or_create_owned(&BytesLabels {
                connection: connection.clone(),
                direction,
            })
        };
        let labels = ConnectionLabels {
            connection: connection.clone(),
        };
        ConnectionHandles {
            allow: decision(DecisionLabel::Allow),
            deny: decision(DecisionLabel::Deny),
            approval: decision(DecisionLabel::RequireApproval),
            dry_run: decision(DecisionLabel::DryRunDeny),
            opened: session(SessionOutcome::Opened),
            refused: session(SessionOutcome::Refused),
            refusals: SessionRefusal::ALL.map(|reason| {
                f.refusals.get_or_create_owned(&RefusalLabels {
                    connection: connection.clone(),
                    reason,
                })
            }),
            from_client: direction(Direction::FromClient),
            to_client: direction(Direction::ToClient),
            masked: f.masked.get_or_create_owned(&labels),
            active: f.active.get_or_create_owned(&labels),
            upstream: f.upstream.get_or_create_owned(&labels),
            overhead: f.overhead.get_or_create_owned(&labels),
            name: connection,
        }
    }
}

/// The counter of one (policy, rule) of a decided statement, resolved at
/// its first count and kept with the decision (decisions are cached per
/// session, so a statement served from the cache costs one atomic add).
#[derive(Debug, Default)]
pub struct RuleSlot(OnceLock<Counter>);

/// The sidecar's metrics: the process-wide ones, and one Connection's
/// (see [`Metrics::for_connection`]).
#[derive(Debug)]
pub struct Metrics {
    families: Arc<Families>,
    conn: ConnectionHandles,
}

/// A guard that keeps a gauge raised until it is dropped.
#[derive(Debug)]
pub struct Raised(Gauge);

impl Drop for Raised {
    fn drop(&mut self) {
        self.0.dec();
    }
}

impl Raised {
    fn new(g: &Gauge) -> Raised {
        g.inc();
        Raised(g.clone())
    }
}

/// A session whose client is not read (see [`Metrics::client_not_read`]);
/// counted until dropped.
pub type NotRead = Raised;

impl Metrics {
    /// Creates the metrics and registers them.
    pub fn register(registry: &mut Registry) -> Self {
        let f = Families::new();
        f.register_statements(registry);
        f.register_sessions(registry);
        f.register_audit(registry);
        f.register_bundle(registry);
        Metrics {
            families: Arc::new(f),
            conn: ConnectionHandles::detached(),
        }
    }

    /// The metrics of Connection `name`: its series are created (at zero)
    /// on the first call, and the handles are shared by later calls.
    pub fn for_connection(&self, name: &str) -> Arc<Metrics> {
        let mut map = self
            .families
            .connections
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(m) = map.get(name) {
            return m.clone();
        }
        let m = Arc::new(Metrics {
            families: self.families.clone(),
            conn: ConnectionHandles::resolve(&self.families, name),
        });
        map.insert(name.to_string(), m.clone());
        m
    }

    /// Client sessions open now, every Connection (for `/debug/standing`).
    pub fn active_sessions(&self) -> i64 {
        self.families.total_active.get()
    }

    /// Statements refused since start, every Connection (for `/debug/standing`).
    pub fn statements_refused(&self) -> u64 {
        self.families.total_refused.get()
    }

    /// The process's buffer budget of `limit` bytes, its use exported as
    /// `sluice_buffer_budget_in_use_bytes`.
    pub fn buffer_budget(&self, limit: usize) -> crate::limits::BufferBudget {
        crate::limits::BufferBudget::with_gauge(limit, self.families.buffer_in_use.clone())
    }

    /// Counts a session whose client is not read until the result is dropped.
    pub fn client_not_read(&self) -> NotRead {
        Raised::new(&self.families.not_read)
    }

    /// Counts a statement held for approval until the result is dropped.
    pub fn approval_pending(&self) -> Raised {
        Raised::new(&self.families.approvals_pending)
    }

    /// A statement (or request) was decided: `action` the decided action,
    /// `enforced` what happens, `refused` whether it was refused.
    pub fn decision(&self, action: Action, enforced: Action, refused: bool) {
        let c = &self.conn;
        let counter = if refused {
            self.families.total_refused.inc();
            match enforced {
                Action::RequireApproval => &c.approval,
                _ => &c.deny,
            }
        } else if action != Action::Allow {
            &c.dry_run
        } else {
            &c.allow
        };
        counter.inc();
    }

    /// The rule that decided a statement: counted in `slot`, resolved from
    /// `policy`, `rule` and `action` at its first use only.
    pub fn rule(&self, slot: &RuleSlot, policy: Option<&str>, rule: Option<&str>, action: Action) {
        slot.0
            .get_or_init(|| {
                self.families.rules.get_or_create_owned(&RuleLabels {
                    connection: self.conn.name.clone(),
                    policy: policy.unwrap_or_default().to_string(),
                    rule: rule.unwrap_or_default().to_string(),
                    action: match action {
                        Action::Allow => ActionLabel::Allow,
                        Action::RequireApproval => ActionLabel::RequireApproval,
                        _ => ActionLabel::Deny,
                    },
                })
            })
            .inc();
    }

    /// A statement an approval rule caught ran after its approval. It counts
    /// under `requireApproval`, like every statement such a rule catches
    /// (and like an approved HTTP request); `sluice_approvals_total` says
    /// which of them ran.
    pub fn approved_run(&self) {
        self.conn.approval.inc();
    }

    /// A step of a statement's approval.
    pub fn approval(&self, step: ApprovalStep) {
        self.families
            .approvals
            .get_or_create(&ApprovalLabels { step })
            .inc();
    }

    /// A refusal's audit record could not be written: the refusal stands
    /// (nothing ran), and the gap in the trail is counted.
    pub fn refusal_unrecorded(&self) {
        self.families.audit_unrecorded.inc();
    }

    /// Values were masked.
    pub fn masked(&self, n: u64) {
        self.conn.masked.inc_by(n);
    }

    /// A session was opened.
    pub fn session_started(&self) {
        self.conn.opened.inc();
        self.conn.active.inc();
        self.families.total_active.inc();
    }

    /// A session attempt was refused with SQLSTATE `code`.
    pub fn session_refused(&self, code: &str) {
        self.session_refused_for(SessionRefusal::of_sqlstate(code));
    }

    /// A session attempt (an HTTP connection or request) was refused for `reason`.
    pub fn session_refused_for(&self, reason: SessionRefusal) {
        self.conn.refused.inc();
        if let Some(i) = SessionRefusal::ALL.iter().position(|r| *r == reason) {
            self.conn.refusals[i].inc();
        }
    }

    /// A session ended.
    pub fn session_ended(&self) {
        self.conn.active.dec();
        self.families.total_active.dec();
    }

    /// A statement's result ended after `d`.
    pub fn upstream_latency(&self, d: Duration) {
        self.conn.upstream.observe(d.as_secs_f64());
    }

    /// Sluice's own time before a statement was forwarded: its decision
    /// and its write-ahead record.
    pub fn overhead(&self, d: Duration) {
        self.conn.overhead.observe(d.as_secs_f64());
    }

    /// Bytes read from the client.
    pub fn bytes_from_client(&self, n: usize) {
        self.conn.from_client.inc_by(n as u64);
    }

    /// Bytes written to the client.
    pub fn bytes_to_client(&self, n: usize) {
        self.conn.to_client.inc_by(n as u64);
    }

    /// Audit events waiting for the operator now.
    pub fn audit_forward_queue(&self, n: usize) {
        self.families
            .audit_queue
            .set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    /// Audit events dropped from the operator's queue.
    pub fn audit_forward_dropped(&self, n: u64) {
        self.families.audit_dropped.inc_by(n);
    }

    /// A bundle is in force, vouched for now, until `expires_at` (RFC 3339).
    pub fn bundle_refreshed(&self, expires_at: Option<&str>) {
        let f = &self.families;
        f.bundle_in_force.set(1);
        f.bundle_refreshed.set(unix_now());
        if let Some(at) = expires_at.and_then(|at| chrono::DateTime::parse_from_rfc3339(at).ok()) {
            f.bundle_expires.set(at.timestamp());
        }
    }

    /// Standalone: the local manifests are the policies in force.
    pub fn local_policies_in_force(&self) {
        self.families.bundle_in_force.set(1);
    }

    /// A bundle poll failed.
    pub fn bundle_refresh_failed(&self) {
        self.families.bundle_failures.inc();
    }

    /// The bundle was withdrawn: none is in force.
    pub fn bundle_withdrawn(&self) {
        self.families.bundle_in_force.set(0);
        self.families.bundle_expires.set(0);
    }

    /// Exchanging the pod's token failed.
    pub fn token_exchange_failed(&self, e: &GatewayError) {
        self.families
            .exchange
            .get_or_create(&ExchangeLabels {
                reason: ExchangeFailure::of(e),
            })
            .inc();
    }
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scrape(registry: &Registry) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, registry).unwrap();
        out
    }

    #[test]
    fn every_family_has_a_sample_from_start_and_a_connection_gets_its_series_at_zero() {
        let mut registry = Registry::default();
        let m = Metrics::register(&mut registry);
        let text = scrape(&registry);
        for line in [
            "sluice_build_info{version=\"",
            "sluice_approvals_total{step=\"asked\"} 0",
            "sluice_approvals_pending 0",
            "sluice_audit_forward_queue 0",
            "sluice_audit_forward_dropped_total 0",
            "sluice_bundle_in_force 0",
            "sluice_token_exchange_failures_total{reason=\"unreachable\"} 0",
        ] {
            assert!(text.contains(line), "{line} missing from\n{text}");
        }
        // Counted on the process-wide handle: no series names no Connection.
        m.decision(Action::Allow, Action::Allow, false);
        assert!(!scrape(&registry).contains("connection=\"\""));

        let c = m.for_connection("orders-db");
        let text = scrape(&registry);
        for line in [
            "sluice_statements_total{connection=\"orders-db\",decision=\"allow\"} 0",
            "sluice_statements_total{connection=\"orders-db\",decision=\"requireApproval\"} 0",
            "sluice_session_refusals_total{connection=\"orders-db\",reason=\"notBound\"} 0",
            "sluice_active_sessions{connection=\"orders-db\"} 0",
            "sluice_overhead_seconds_count{connection=\"orders-db\"} 0",
        ] {
            assert!(text.contains(line), "{line} missing from\n{text}");
        }
        c.decision(Action::Deny, Action::Deny, true);
        c.session_refused("28000");
        let slot = RuleSlot::default();
        c.rule(&slot, Some("shop/app"), Some("no-drop"), Action::Deny);
        c.rule(&slot, Some("ignored"), Some("ignored"), Action::Allow);
        let text = scrape(&registry);
        for line in [
            "sluice_statements_total{connection=\"orders-db\",decision=\"deny\"} 1",
            "sluice_session_refusals_total{connection=\"orders-db\",reason=\"notBound\"} 1",
            "sluice_rule_decisions_total{connection=\"orders-db\",policy=\"shop/app\",rule=\"no-drop\",action=\"deny\"} 2",
        ] {
            assert!(text.contains(line), "{line} missing from\n{text}");
        }
        assert_eq!(m.statements_refused(), 1);
        // The same Connection's handles again, not new series.
        assert!(Arc::ptr_eq(&c, &m.for_connection("orders-db")));
    }
}
