//! The audit records of requests: the command (method and path, with what
//! detectors find masked), the decision, and the result; what a
//! Connection's requests share of them ([`AuditCache`]); and what happens
//! when a refusal's record cannot be written.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use http::Method;
use sha2::Digest;
use sluice_crds::Action;
use sluice_policy::audit::{AuditCommand, AuditDecision, AuditKind, AuditOutcome, Rendered};
use sluice_policy::detectors::DetectorSet;
use sluice_policy::engine::Decision;
use sluice_policy::masker::Masker;

use super::HttpContext;
use crate::audit::{AuditError, AuditLog, HoldId, SessionInfo};

/// A request's audit command and its `command` field, serialised once.
pub(super) struct CommandPieces {
    /// The command.
    command: AuditCommand,
    /// Its `command` field (`None`: it could not be serialised ahead, and
    /// each event serialises it).
    rendered: Option<Rendered>,
}

/// A request's audit command, with its `command` field serialised once for
/// all its events (its decision and its result record the same bytes),
/// shared by the requests of the same method and path ([`AuditCache`]).
pub(super) struct RequestCommand {
    pieces: Arc<CommandPieces>,
    /// The request's decision, held for its result (batched mode: the two
    /// become one event, see [`crate::audit::HoldId`]); taken by the
    /// result, so that a request's result joins only its own decision.
    hold: Option<HoldId>,
}

impl RequestCommand {
    /// `command`, rendered.
    pub(super) fn new(command: AuditCommand) -> Self {
        let rendered = Rendered::command(&command).ok();
        RequestCommand {
            pieces: Arc::new(CommandPieces { command, rendered }),
            hold: None,
        }
    }

    /// The command.
    pub(super) fn command(&self) -> &AuditCommand {
        &self.pieces.command
    }

    /// Records the decision of a request about to run (a `statement`
    /// event, left pending: the ticket is for [`AuditLog::durable`]), its
    /// `decision` field rendered once per decision ([`AuditCache`]); in
    /// batched mode it is held for the request's result
    /// ([`RequestCommand::record_result`]), which then joins it.
    pub(super) fn record_allowed(
        &mut self,
        (audit, cache): (&AuditLog, &AuditCache),
        session: &SessionInfo,
        decision: Decision,
    ) -> Result<u64, AuditError> {
        if let (Some(rendered), Some(_)) = (&self.pieces.rendered, session.pieces())
            && let Some(field) = cache.decision(&decision)
        {
            let recorded = audit.statement_rendered(session, rendered, &field)?;
            self.hold = recorded.hold;
            return Ok(recorded.ticket);
        }
        let mut decision = decided_owned(decision);
        with_protocol(&mut decision);
        let event = (Some(decision), None);
        self.record(audit, session, AuditKind::Statement, event, false)
    }

    /// Records the request's result, left pending: one event with its
    /// decision while that is held (batched mode), else a `result` event.
    pub(super) fn record_result(
        &mut self,
        audit: &AuditLog,
        session: &SessionInfo,
        outcome: AuditOutcome,
    ) -> Result<(), AuditError> {
        let hold = self.hold.take();
        match &self.pieces.rendered {
            Some(rendered) => {
                audit.result_rendered(session, (&self.pieces.command, rendered), hold, outcome)
            }
            None => {
                let event = (None, Some(outcome));
                self.record(audit, session, AuditKind::Result, event, false)
                    .map(|_| ())
            }
        }
    }

    /// Records an event of `kind` with this command (see
    /// [`AuditLog::event`]).
    pub(super) fn record(
        &self,
        audit: &AuditLog,
        session: &SessionInfo,
        kind: AuditKind,
        (decision, outcome): (Option<AuditDecision>, Option<AuditOutcome>),
        durable: bool,
    ) -> Result<u64, AuditError> {
        let pieces = &*self.pieces;
        match &pieces.rendered {
            Some(rendered) => audit.event_rendered(
                session,
                kind,
                (&pieces.command, rendered),
                decision,
                outcome,
                durable,
            ),
            None => audit.event(
                session,
                kind,
                Some(pieces.command.clone()),
                decision,
                outcome,
                durable,
            ),
        }
    }
}

/// The commands kept for one path, by method.
type PathCommands = Vec<(Method, Arc<CommandPieces>)>;

/// Most paths whose commands one [`AuditCache`] keeps.
const CACHED_PATHS: usize = 256;
/// Longest path whose commands are kept.
const CACHED_PATH_LEN: usize = 256;
/// Most methods kept per path.
const CACHED_METHODS: usize = 8;
/// Most decisions whose `decision` field is kept.
const CACHED_DECISIONS: usize = 32;

/// What a Connection's requests share in their audit records, built once
/// instead of once per request (issue 22): the command of a method and
/// path (every detector over the path, the SHA-256 fingerprint, the
/// rendered field: the same bytes each time, so a path is still scanned
/// before its first record), and the `decision` field of an allowed
/// request (a rule's reason is the same for every request it decides).
/// Bounded: when [`CACHED_PATHS`] paths fill it, the paths are forgotten
/// and it fills again; a longer path, or a decision past
/// [`CACHED_DECISIONS`], is built for its request alone. Each bundle's
/// context has its own (its decisions may differ).
#[derive(Default)]
pub struct AuditCache {
    /// Keyed by the decided path (client-sent text): foldhash, seeded at
    /// random per process like std's SipHash and several times cheaper per
    /// lookup, as the other planes' statement caches; the map is bounded
    /// ([`CACHED_PATHS`]), so colliding paths cost little even if found.
    commands: Mutex<HashMap<Box<str>, PathCommands, foldhash::fast::RandomState>>,
    /// Each decision (as [`decided`] records it) and its field.
    decisions: Mutex<Vec<(AuditDecision, Arc<Rendered>)>>,
}

impl AuditCache {
    /// The audit command of a request for `method` and `path` (the path as
    /// decided: see [`request_command`]).
    pub(super) fn command(&self, method: &Method, path: &str) -> RequestCommand {
        let kept = |pieces: &Arc<CommandPieces>| RequestCommand {
            pieces: pieces.clone(),
            hold: None,
        };
        if path.len() > CACHED_PATH_LEN {
            return request_command(method.as_str(), path);
        }
        let found = lock(&self.commands)
            .get(path)
            .and_then(|methods| methods.iter().find(|(m, _)| m == method))
            .map(|(_, pieces)| kept(pieces));
        if let Some(cmd) = found {
            return cmd;
        }
        // Built outside the lock (another request may build the same: the
        // first one kept wins, both are the same bytes).
        let cmd = request_command(method.as_str(), path);
        let mut commands = lock(&self.commands);
        if commands.len() >= CACHED_PATHS && !commands.contains_key(path) {
            commands.clear();
        }
        let methods = commands.entry(path.into()).or_default();
        if methods.len() < CACHED_METHODS && !methods.iter().any(|(m, _)| m == method) {
            methods.push((method.clone(), cmd.pieces.clone()));
        }
        cmd
    }

    /// The `decision` field of an allowed request decided `decision`
    /// (`None`: it cannot be serialised).
    fn decision(&self, decision: &Decision) -> Option<Arc<Rendered>> {
        let same = |k: &AuditDecision| {
            k.action == decision.action
                && k.dry_run == decision.dry_run
                && k.policy == decision.policy
                && k.rule == decision.rule
                && k.reason.as_deref() == Some(decision.reason.as_str())
        };
        if let Some((_, field)) = lock(&self.decisions).iter().find(|(k, _)| same(k)) {
            return Some(field.clone());
        }
        let key = decided(decision);
        let mut recorded = key.clone();
        with_protocol(&mut recorded);
        let field = Arc::new(Rendered::decision(&recorded).ok()?);
        let mut decisions = lock(&self.decisions);
        if decisions.len() < CACHED_DECISIONS {
            decisions.push((key, field.clone()));
        }
        Some(field)
    }
}

/// The cache's maps (a panic while one was held leaves it whole: every
/// change is one insertion or a clear).
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The detectors run over every audited path.
static AUDIT_DETECTORS: std::sync::LazyLock<DetectorSet> = std::sync::LazyLock::new(|| {
    use sluice_crds::Detector::*;
    DetectorSet::new(&[CreditCard, Ssn, Email, Phone, Iban, Jwt, AwsKey, PrivateKey])
});

/// The audit record of a request: method and normalised path (the query is
/// left out: it may carry values).
pub(super) fn request_command(method: &str, path: &str) -> RequestCommand {
    // Every detector runs over the path, whatever the masking rules: the
    // audit trail keeps no card number, e-mail or key a path carries (issue
    // 16). The fingerprint is of the masked text too.
    let findings = AUDIT_DETECTORS.find(path);
    // Built in place: `format!` (and `{:x}` over the digest's bytes) was a
    // measurable part of every request's cost.
    let mut text = String::with_capacity(method.len() + 1 + path.len());
    text.push_str(method);
    text.push(' ');
    if findings.is_empty() {
        text.push_str(path);
    } else {
        text.push_str(&Masker::redact().mask_findings(path, &findings));
    }
    let fingerprint = hex::encode(sha2::Sha256::digest(text.as_bytes()));
    RequestCommand::new(AuditCommand {
        text,
        fingerprint,
        kind: Some("http".into()),
    })
}

/// How a rule's decision on a request is recorded.
pub(super) fn decided(decision: &Decision) -> AuditDecision {
    AuditDecision {
        action: decision.action,
        policy: decision.policy.clone(),
        rule: decision.rule.clone(),
        dry_run: decision.dry_run,
        reason: Some(decision.reason.clone()),
    }
}

/// [`decided`], taking the decision's fields instead of copying them (an
/// allowed request's decision is not needed after its record).
pub(super) fn decided_owned(decision: Decision) -> AuditDecision {
    AuditDecision {
        action: decision.action,
        policy: decision.policy,
        rule: decision.rule,
        dry_run: decision.dry_run,
        reason: Some(decision.reason),
    }
}

/// How a request refused before any rule decides it is recorded.
pub(super) fn refused(reason: String) -> AuditDecision {
    AuditDecision {
        action: Action::Deny,
        policy: None,
        rule: None,
        dry_run: false,
        reason: Some(reason),
    }
}

/// A request's decision record (a `statement` when it runs, else a
/// `denial`), written now when `durable`, else left pending: the returned
/// ticket is for [`crate::audit::AuditLog::durable`].
pub(super) fn audit_decision(
    ctx: &HttpContext,
    session: &SessionInfo,
    cmd: &RequestCommand,
    mut decision: AuditDecision,
    durable: bool,
) -> Result<u64, AuditError> {
    let kind = if decision.action == Action::Allow || decision.dry_run {
        AuditKind::Statement
    } else {
        AuditKind::Denial
    };
    with_protocol(&mut decision);
    cmd.record(&ctx.audit, session, kind, (Some(decision), None), durable)
}

/// A request's decision names the protocol in its reason, as a
/// statement's does.
fn with_protocol(decision: &mut AuditDecision) {
    let mut reason = decision.reason.take().unwrap_or_default();
    reason.push_str(" (http protocol)");
    decision.reason = Some(reason);
}

/// A refusal whose record could not be written: the refusal stands (it
/// fails closed, nothing ran), and the gap in the trail is logged and
/// counted (`sluice_audit_unrecorded_refusals_total`).
pub(super) fn unrecorded<T>(ctx: &HttpContext, written: Result<T, AuditError>) {
    if let Err(e) = written {
        tracing::error!(connection = %ctx.name, error = %e, "writing the audit record of a refused request failed");
        ctx.metrics.refusal_unrecorded();
    }
}

/// A request's result record, left pending (written with the next durable
/// record, or by the periodic flush; joined with its held decision in
/// batched mode).
pub(super) fn result_event(
    ctx: &HttpContext,
    session: &SessionInfo,
    cmd: &mut RequestCommand,
    started: Instant,
    masked: u64,
    error: Option<String>,
) {
    let outcome = AuditOutcome {
        recorded: None,
        rows: None,
        duration_ms: Some(started.elapsed().as_millis() as u64),
        error,
        masked: (masked > 0).then_some(masked),
        masks: Vec::new(),
    };
    if let Err(e) = cmd.record_result(&ctx.audit, session, outcome) {
        tracing::error!(connection = %session.connection, client = %session.client, error = %e, "writing an audit result failed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decision(reason: &str, rule: Option<&str>) -> Decision {
        Decision {
            action: Action::Allow,
            enforced: Action::Allow,
            policy: Some("api-rules".into()),
            rule: rule.map(String::from),
            enforced_policy: Some("api-rules".into()),
            enforced_rule: rule.map(String::from),
            dry_run: false,
            approval: None,
            reason: reason.into(),
        }
    }

    /// A command taken from the cache is the one built for the request:
    /// the detectors' findings in the path are masked on every hit, and a
    /// method is never served another method's command.
    #[test]
    fn cached_commands_are_the_commands_built_for_the_request() {
        let cache = AuditCache::default();
        let path = "/users/ann@example.com/cards/4111111111111111";
        for method in [Method::GET, Method::DELETE, Method::GET, Method::DELETE] {
            let cached = cache.command(&method, path);
            let built = request_command(method.as_str(), path);
            assert_eq!(cached.command(), built.command());
            assert_eq!(cached.pieces.rendered, built.pieces.rendered);
            let text = &cached.command().text;
            assert!(text.starts_with(method.as_str()), "{text}");
            assert!(!text.contains("ann@example.com"), "{text}");
            assert!(!text.contains("4111111111111111"), "{text}");
        }
        let a = cache.command(&Method::GET, path);
        let b = cache.command(&Method::GET, path);
        assert!(Arc::ptr_eq(&a.pieces, &b.pieces), "not kept");
        // A path longer than kept is built for its request alone.
        let long = format!("/{}", "a".repeat(CACHED_PATH_LEN));
        let c = cache.command(&Method::GET, &long);
        assert_eq!(c.command(), request_command("GET", &long).command());
    }

    /// Many paths never grow the cache past its bound.
    #[test]
    fn the_command_cache_is_bounded() {
        let cache = AuditCache::default();
        for i in 0..CACHED_PATHS * 3 + 7 {
            let path = format!("/items/{i}");
            let cmd = cache.command(&Method::GET, &path);
            assert_eq!(cmd.command().text, format!("GET {path}"));
            assert!(lock(&cache.commands).len() <= CACHED_PATHS);
        }
        for i in 0..CACHED_METHODS * 2 {
            let method = Method::from_bytes(format!("M{i}").as_bytes()).unwrap();
            cache.command(&method, "/one");
        }
        let methods = lock(&cache.commands).get("/one").map_or(0, Vec::len);
        assert!(methods <= CACHED_METHODS, "{methods}");
    }

    /// A decision's field is kept per decision: each of its fields tells
    /// decisions apart, and the field is the one rendered for it.
    #[test]
    fn decision_fields_are_kept_per_decision() {
        let cache = AuditCache::default();
        let render = |d: &Decision| {
            let mut recorded = decided(d);
            with_protocol(&mut recorded);
            Rendered::decision(&recorded).unwrap()
        };
        let mut dry = decision("allow by rule", Some("r"));
        dry.dry_run = true;
        let mut other_policy = decision("allow by rule", Some("r"));
        other_policy.policy = Some("other".into());
        let mut denied = decision("allow by rule", Some("r"));
        denied.action = Action::Deny;
        let all = [
            decision("allow by rule", Some("r")),
            decision("allow by rule", Some("s")),
            decision("allow by rule", None),
            decision("allow by defaultAction", Some("r")),
            dry,
            other_policy,
            denied,
        ];
        for _ in 0..2 {
            for d in &all {
                assert_eq!(*cache.decision(d).unwrap(), render(d), "{d:?}");
            }
        }
        assert_eq!(lock(&cache.decisions).len(), all.len());
        for i in 0..CACHED_DECISIONS * 2 {
            let d = decision(&format!("reason {i}"), None);
            assert_eq!(*cache.decision(&d).unwrap(), render(&d));
        }
        assert_eq!(lock(&cache.decisions).len(), CACHED_DECISIONS);
    }
}
