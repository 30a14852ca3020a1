//! One client session: startup, then two loops running side by side.
//!
//! - The *client loop* reads the application's messages, decides each
//!   statement (simple Query at once; Parse/Bind/Describe/Execute/Close
//!   buffered until Sync or Flush and decided together), writes the audit
//!   decision event before anything is forwarded, and either forwards the
//!   messages upstream or queues the sidecar's own refusal.
//! - The *server loop* reads the upstream's messages and forwards them,
//!   masking rows, scrubbing errors and enforcing maxRows on the way.
//!
//! They share an ordered queue of what the upstream will answer ([`Expect`]),
//! so the server loop knows which statement each result belongs to, and so a
//! refusal queued by the client loop reaches the client exactly where the
//! server's answer would have been.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use sluice_crds::{Action, ApprovalMode, RequestPhase};

use sluice_policy::audit::{AuditApproval, AuditCommand, AuditDecision, AuditKind};
use sluice_policy::gateway::{ApprovalAsk, ApprovalTicket};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{Mutex, mpsc};

use super::cancel::{CancelRegistry, CancelTarget};
use super::catalog::{Catalog, CatalogError, CatalogPool};
use super::framing::{Frame, FrameReader, FramingError, Peer};
use super::masking::{CopyMask, RowMask};
use super::messages::error_response::{self, Report};
use super::messages::{
    backend, bind, command_complete, copy, describe, execute, frontend, parse, query,
    ready_for_query, row_description, startup,
};
use super::rows_affected::{self, Count, Limit, Outcome};
use super::settings::{self, Effect, ServerSettings};
use super::upstream::{self, ReadHalf, UpstreamConfig, WriteHalf};
use crate::approval::{self, ApprovalOutcome, Approvals};
use crate::audit::{AuditLog, ResultRecord, SessionInfo};
use crate::enforcement::{Binding, Decided, Enforcer, Masking, Refusal};
use crate::metrics::Metrics;

/// Everything a listener's sessions share.
pub struct ConnectionContext {
    /// The Connection's name.
    pub name: String,
    /// How to reach the upstream.
    pub upstream: UpstreamConfig,
    /// The identity and its policies on this Connection.
    pub binding: Binding,
    /// The Connection's catalog sessions, shared by its client sessions.
    pub catalog: Arc<CatalogPool>,
    /// Audit sink.
    pub audit: Arc<AuditLog>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Cancel keys.
    pub cancel: Arc<CancelRegistry>,
    /// Largest message accepted from the client.
    pub max_message_size: usize,
    /// The process's budget for large messages (shared by every session).
    pub buffer_budget: crate::limits::BufferBudget,
    /// The operator's approvals (run mode); `None` refuses statements that
    /// need approval (standalone).
    pub approvals: Option<Approvals>,
}

/// What the server loop tells the client loop: how many expectations it
/// has settled (answered or dropped), and the settings the server reported.
/// A statement after a barrier (see [`settings`]) is decided only once every
/// expectation sent before it is settled.
#[derive(Default)]
struct Answered {
    settled: AtomicU64,
    notify: tokio::sync::Notify,
    settings: std::sync::Mutex<ServerSettings>,
    /// Transaction status of the server's last ReadyForQuery.
    status: AtomicU8,
    /// A write's answer held for `maxRowsAffected`, once it is complete.
    held: std::sync::Mutex<Option<HeldAnswer>>,
    /// The error the server answered the sidecar's own COMMIT, RELEASE or
    /// ROLLBACK with (scrubbed like any error).
    internal_error: std::sync::Mutex<Option<Bytes>>,
}

/// A write's complete answer, held until its row counts are checked
/// against `maxRowsAffected` (see [`rows_affected`]).
#[derive(Default)]
struct HeldAnswer {
    /// What the client gets if the write stands, without the final
    /// ReadyForQuery (masked and scrubbed already).
    bytes: Bytes,
    /// Each statement's (or Execute's) outcome, in order.
    outcomes: Vec<Outcome>,
    /// The server answered an error: it did not commit anything of it.
    error: bool,
    /// The answer was larger than [`MAX_HELD_BYTES`] and was dropped.
    overflow: bool,
}

impl Answered {
    fn status(&self) -> u8 {
        self.status.load(Ordering::Acquire)
    }

    fn take_held(&self) -> Option<HeldAnswer> {
        self.held.lock().ok().and_then(|mut h| h.take())
    }

    fn take_internal_error(&self) -> Option<Bytes> {
        self.internal_error.lock().ok().and_then(|mut e| e.take())
    }

    fn settings(&self) -> ServerSettings {
        match self.settings.lock() {
            Ok(s) => s.clone(),
            // A poisoned lock: a panic elsewhere; refuse everything.
            Err(_) => ServerSettings {
                standard_conforming_strings: "unknown".into(),
                client_encoding: "unknown".into(),
            },
        }
    }
}

/// A result shape: the decision's address, the statement's index in it, and
/// the RowDescription body.
type MaskKey = (usize, usize, Bytes);

/// Most extended-protocol messages kept for one group before its Sync or
/// Flush (each is decided with the group).
pub const MAX_PENDING_MESSAGES: usize = 4096;

/// Most bytes of extended-protocol messages kept for one group (one message
/// alone may be larger, up to the framing's maximum message size).
pub const MAX_PENDING_BYTES: usize = 16 * 1024 * 1024;

/// Most answers owed to the client (expectations the server loop has not
/// settled) before the sidecar stops reading the client: a client that does
/// not read its answers is not read either, so refusals cannot pile up.
const MAX_OUTSTANDING: u64 = 1024;

/// Most bytes of a write's answer (its RETURNING rows) the sidecar holds
/// while it waits for the row count `maxRowsAffected` checks; past it the
/// write is rolled back.
pub const MAX_HELD_BYTES: usize = 8 * 1024 * 1024;

/// How many result shapes a session keeps masks for.
const MASK_CACHE_ENTRIES: usize = 64;

/// Startup parameters passed from the client to the upstream. Others
/// (notably `options`, which can set any server setting, and `replication`)
/// are dropped: the Connection and the policy decide, not the client.
const PASSED_PARAMETERS: &[&str] = &[
    "application_name",
    "client_encoding",
    "DateStyle",
    "TimeZone",
    "IntervalStyle",
    "extra_float_digits",
    "search_path",
];

/// Serves one accepted client connection to its end.
pub async fn serve(ctx: Arc<ConnectionContext>, socket: TcpStream, peer: SocketAddr) {
    let _ = socket.set_nodelay(true);
    let (r, w) = socket.into_split();
    let mut client = FrameReader::new(r, Peer::Client, ctx.max_message_size)
        .with_budget(ctx.buffer_budget.clone());
    let mut writer = w;
    if let Err(e) = run(&ctx, &mut client, &mut writer, peer).await {
        tracing::debug!(connection = %ctx.name, %peer, error = %e, "session ended with an error");
    }
    let _ = writer.shutdown().await;
}

/// Why a session ended abnormally.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// Framing.
    #[error(transparent)]
    Framing(#[from] FramingError),
    /// Socket write.
    #[error("write failed: {0}")]
    Io(#[from] std::io::Error),
    /// A malformed message.
    #[error(transparent)]
    Message(#[from] super::messages::MessageError),
    /// The client was refused (reported to it).
    #[error("session refused: {0}")]
    Refused(String),
    /// The client sent a message type that has no meaning after startup.
    #[error("invalid frontend message type {0:?}")]
    UnexpectedMessage(char),
    /// The upstream server closed the session (shutdown, terminated backend).
    #[error("the upstream server closed the connection")]
    UpstreamClosed,
    /// The server's answers no longer match the statements sent (see
    /// [`ServerLoop::settle`]); the session ends rather than guess.
    #[error(
        "Sluice lost track of the server's answers ({0}); the session is closed so that no answer is matched to the wrong statement"
    )]
    Desync(String),
    /// `spec.readOnly` came into force for a session that is not read-only,
    /// or the server reported the session read-write: the session ends
    /// rather than run another statement.
    #[error("{0}")]
    ReadOnly(String),
    /// The sidecar is shutting down (SIGTERM, SIGINT): the session ended
    /// once everything it had sent was answered.
    #[error(
        "the sidecar shut down (SIGTERM or SIGINT): Sluice is shutting down and ended the session once its statements were answered; reconnect"
    )]
    ShuttingDown,
}

/// SQLSTATE of a session ended by the sidecar's shutdown: admin_shutdown,
/// as PostgreSQL ends its sessions on a fast shutdown.
const ADMIN_SHUTDOWN: &str = "57P01";

/// SQLSTATE of a session whose message does not fit in the buffer budget.
const OUT_OF_MEMORY: &str = "53200";

async fn fatal<W: AsyncWrite + Unpin>(
    w: &mut W,
    code: &str,
    message: &str,
    hint: Option<&str>,
) -> std::io::Result<()> {
    let mut out = BytesMut::new();
    Report {
        severity: "FATAL",
        code,
        message,
        detail: None,
        hint,
    }
    .encode(&mut out);
    w.write_all(&out).await?;
    w.flush().await
}

async fn run<R, W>(
    ctx: &Arc<ConnectionContext>,
    client: &mut FrameReader<R>,
    writer: &mut W,
    peer: SocketAddr,
) -> Result<(), SessionError>
where
    R: AsyncRead + Unpin + Send,
    W: AsyncWrite + Unpin + Send,
{
    // === startup ===
    let params = loop {
        // A malformed startup packet gets FATAL 08P01 before the close, as
        // PostgreSQL answers it.
        let body = match client.startup_packet().await {
            Ok(Some(body)) => body,
            Ok(None) => return Ok(()),
            Err(e) => {
                let _ = fatal(
                    writer,
                    error_response::PROTOCOL_VIOLATION,
                    &e.to_string(),
                    None,
                )
                .await;
                return Err(e.into());
            }
        };
        let packet = match startup::StartupPacket::decode(&body) {
            Ok(p) => p,
            Err(e) => {
                let _ = fatal(
                    writer,
                    error_response::PROTOCOL_VIOLATION,
                    &e.to_string(),
                    None,
                )
                .await;
                return Err(e.into());
            }
        };
        match packet {
            startup::StartupPacket::SslRequest | startup::StartupPacket::GssEncRequest => {
                // Loopback only: the app talks plain TCP to the sidecar, the
                // sidecar talks TLS to the upstream.
                writer.write_all(b"N").await?;
            }
            startup::StartupPacket::Cancel {
                process_id,
                secret_key,
            } => {
                if let Some(target) = ctx.cancel.lookup((process_id, secret_key)) {
                    // A statement held for approval is cancelled here; the
                    // upstream is idle meanwhile.
                    target.held.notify_waiters();
                    if let Err(e) = upstream::cancel(&target.upstream, target.backend_key).await {
                        tracing::warn!(connection = %ctx.name, error = %e, "forwarding a cancel request failed");
                    }
                } else {
                    tracing::debug!(connection = %ctx.name, "cancel request with an unknown key ignored");
                }
                return Ok(());
            }
            startup::StartupPacket::Startup { version, params } => {
                if version >> 16 != 3 {
                    fatal(
                        writer,
                        error_response::FEATURE_NOT_SUPPORTED,
                        &format!(
                            "unsupported frontend protocol {}.{}: Sluice serves protocol 3.0",
                            version >> 16,
                            version & 0xffff
                        ),
                        None,
                    )
                    .await?;
                    return Ok(());
                }
                if params.iter().any(|(k, _)| k == "replication") {
                    fatal(
                        writer,
                        error_response::FEATURE_NOT_SUPPORTED,
                        "replication connections are not allowed through Sluice",
                        None,
                    )
                    .await?;
                    return Ok(());
                }
                if version & 0xffff != 0 {
                    negotiate(writer, &params).await?;
                }
                break params;
            }
        }
    };
    let client_params: Vec<(String, String)> = params
        .into_iter()
        .filter(|(k, _)| PASSED_PARAMETERS.contains(&k.as_str()))
        .collect();

    let session = SessionInfo::new(&ctx.binding, &ctx.name, peer);
    // === binding: an identity no policy binds never gets a session ===
    let Some(enforcer) = ctx.binding.enforcer() else {
        let message = ctx.binding.not_bound_message(&ctx.name);
        let _ = ctx.audit.session_refused(&session, &message);
        ctx.metrics.session_refused();
        fatal(
            writer,
            error_response::INVALID_AUTHORIZATION,
            &message,
            Some(ctx.binding.not_bound_hint()),
        )
        .await?;
        return Err(SessionError::Refused(message));
    };
    // === upstream ===
    // spec.readOnly: the server makes the session read-only from its start.
    // In the startup packet (not a SET sent later) it is also the value
    // `RESET` and `DISCARD ALL` bring back, and it is in force before any
    // statement; the client's own `options` never reach the server.
    let read_only: Option<Arc<str>> = enforcer.masking().read_only().map(Arc::from);
    let mut client_params = client_params;
    if read_only.is_some() {
        client_params.push((
            "options".into(),
            format!("-c {}=on", settings::READ_ONLY_SETTING),
        ));
    }
    let up = match upstream::connect(&ctx.upstream, &client_params).await {
        Ok(up) => up,
        Err(e) => {
            let message = format!(
                "Sluice could not open a session to the upstream of Connection {:?}: {e}",
                ctx.name
            );
            let _ = ctx.audit.session_refused(&session, &message);
            ctx.metrics.session_refused();
            fatal(writer, error_response::CONNECTION_FAILURE, &message, None).await?;
            return Err(SessionError::Refused(message));
        }
    };
    if let Err(e) = ctx
        .audit
        .session_start(&session, up.tls, up.channel_binding)
    {
        let message = format!("Sluice cannot write the audit log, so no session is opened: {e}");
        fatal(writer, error_response::INTERNAL_ERROR, &message, None).await?;
        return Err(SessionError::Refused(message));
    }
    if let Some(policy) = &read_only {
        // Verified from what the server reports (PostgreSQL 14 and later
        // report default_transaction_read_only): no report, no session.
        let on = up.startup_messages.iter().any(|m| {
            m.tag == backend::PARAMETER_STATUS
                && parameter_status(m.body()) == Some((settings::READ_ONLY_SETTING, "on"))
        });
        if !on {
            let message = format!(
                "AccessPolicy {policy:?} sets readOnly, but the upstream of Connection {:?} did not report default_transaction_read_only = on for the new session (PostgreSQL 14 or later reports it; a pooler in between must pass the startup `options`); no session is opened",
                ctx.name
            );
            let _ = ctx.audit.session_refused(&session, &message);
            ctx.metrics.session_refused();
            fatal(writer, READ_ONLY_SQL_TRANSACTION, &message, None).await?;
            return Err(SessionError::Refused(message));
        }
    }
    let cancel_hold = Arc::new(tokio::sync::Notify::new());
    let key = ctx.cancel.register(CancelTarget {
        upstream: ctx.upstream.clone(),
        backend_key: up.backend_key,
        held: cancel_hold.clone(),
    });
    let mut out = BytesMut::new();
    startup::authentication_ok(&mut out);
    for m in &up.startup_messages {
        out.extend_from_slice(&m.raw);
    }
    startup::backend_key_data(&mut out, key.0, key.1);
    ready_for_query::encode(&mut out, ready_for_query::IDLE);
    writer.write_all(&out).await?;
    writer.flush().await?;
    ctx.metrics.session_started();
    let started = Instant::now();

    let masking = enforcer.masking();
    let catalog = Arc::new(Mutex::new(Catalog::new(ctx.catalog.clone())));
    // What the server reported at startup: `ALTER ROLE/DATABASE … SET` and
    // the startup packet's client_encoding are in force from the start.
    let answered = Arc::new(Answered::default());
    answered
        .status
        .store(ready_for_query::IDLE, Ordering::Release);
    if let Ok(mut settings) = answered.settings.lock() {
        for m in &up.startup_messages {
            if m.tag == backend::PARAMETER_STATUS
                && let Some((name, value)) = parameter_status(m.body())
            {
                settings.update(name, value);
            }
        }
    }
    let (tx, rx) = mpsc::unbounded_channel();
    let mut client_loop = ClientLoop {
        ctx: ctx.clone(),
        session: session.clone(),
        enforcer,
        upstream: up.writer,
        out: BytesMut::with_capacity(8192),
        expect: tx,
        statements: HashMap::new(),
        portals: HashMap::new(),
        pending: Vec::new(),
        pending_bytes: 0,
        group_forwarded: false,
        discarding: false,
        catalog: catalog.clone(),
        masking: masking.clone(),
        rate: ctx.binding.rate(),
        held: None,
        approved: Vec::new(),
        cancel_hold,
        generation: 0,
        decided_generation: 0,
        answered: answered.clone(),
        sent: AtomicU64::new(0),
        barrier: false,
        read_only: read_only.clone(),
        read_only_lapse: None,
        guard: None,
        guard_name: rows_affected::reserved_name(),
        shutdown: ctx.audit.shutdown_signal(),
    };
    let mut server_loop = ServerLoop {
        ctx: ctx.clone(),
        session: session.clone(),
        upstream: up.reader.with_budget(ctx.buffer_budget.clone()),
        client: writer,
        out: BytesMut::with_capacity(64 * 1024),
        rx,
        queue: VecDeque::new(),
        status: ready_for_query::IDLE,
        parameters_seen: false,
        copy_in: None,
        copy_syncs_ignored: false,
        skipping: false,
        suppress: false,
        result: ResultState::default(),
        portal_masks: HashMap::new(),
        statement_masks: HashMap::new(),
        mask_cache: HashMap::new(),
        catalog,
        masking,
        simple: None,
        copy_mask: None,
        results: Vec::new(),
        answered,
        ran: Vec::new(),
        ran_overflow: false,
        uncertain_cache: HashMap::new(),
        read_only,
        hold: None,
    };
    let outcome = tokio::select! {
        r = client_loop.run(client) => r,
        r = server_loop.run() => r,
    };
    server_loop.record_results();
    drop(server_loop);
    match &outcome {
        Err(e @ SessionError::Framing(FramingError::OverBudget { .. })) => {
            // As PostgreSQL when it cannot allocate: this session ends, the
            // others go on.
            tracing::warn!(connection = %ctx.name, error = %e, "session closed");
            let _ = fatal(writer, OUT_OF_MEMORY, &e.to_string(), None).await;
        }
        Err(
            e @ (SessionError::Message(_)
            | SessionError::Framing(_)
            | SessionError::UnexpectedMessage(_)),
        ) => {
            // Tell the client why the session ends (a bad message cannot be skipped).
            let _ = fatal(
                writer,
                error_response::PROTOCOL_VIOLATION,
                &e.to_string(),
                None,
            )
            .await;
        }
        Err(e @ SessionError::Desync(_)) => {
            tracing::warn!(connection = %ctx.name, error = %e, "session closed");
            let _ = fatal(
                writer,
                error_response::PROTOCOL_VIOLATION,
                &e.to_string(),
                None,
            )
            .await;
        }
        Err(e @ SessionError::ReadOnly(_)) => {
            tracing::warn!(connection = %ctx.name, error = %e, "session closed");
            let _ = fatal(writer, READ_ONLY_SQL_TRANSACTION, &e.to_string(), None).await;
        }
        Err(SessionError::ShuttingDown) => {
            let _ = fatal(
                writer,
                ADMIN_SHUTDOWN,
                "Sluice is shutting down: the session is closed (its statements were answered)",
                Some(
                    "reconnect: the restarted sidecar (or another replica) serves the new session",
                ),
            )
            .await;
        }
        Err(SessionError::UpstreamClosed) => {
            let message = format!(
                "the upstream server of Connection {:?} closed the session",
                ctx.name
            );
            let _ = fatal(writer, error_response::CONNECTION_FAILURE, &message, None).await;
        }
        _ => {}
    }
    ctx.cancel.remove(key);
    ctx.metrics.session_ended();
    let error = outcome.as_ref().err().map(|e| e.to_string());
    let _ = ctx
        .audit
        .session_end(&session, started.elapsed(), error.as_deref());
    outcome
}

/// Answers a client that asked for protocol 3.x (x > 0): Sluice speaks 3.0,
/// and `_pq_.` options are not recognised.
async fn negotiate<W: AsyncWrite + Unpin>(
    writer: &mut W,
    params: &[(String, String)],
) -> std::io::Result<()> {
    use bytes::BufMut;
    let unknown: Vec<&str> = params
        .iter()
        .filter(|(k, _)| k.starts_with("_pq_."))
        .map(|(k, _)| k.as_str())
        .collect();
    let mut out = BytesMut::new();
    let at = super::messages::begin(&mut out, backend::NEGOTIATE_PROTOCOL_VERSION);
    out.put_i32(startup::PROTOCOL_3_0);
    out.put_i32(unknown.len() as i32);
    for k in unknown {
        super::messages::put_cstr(&mut out, k);
    }
    super::messages::finish(&mut out, at);
    writer.write_all(&out).await
}

// === Expect ===

/// What the upstream will send next, in order, and what it belongs to.
enum Expect {
    /// A simple Query: everything up to its ReadyForQuery.
    Simple(Box<SimpleCtx>),
    /// ParseComplete.
    ParseComplete,
    /// BindComplete. With masking, what the server loop needs to give the
    /// portal the mask of its statement in the Bind's result formats.
    BindComplete(Option<Box<BindInfo>>),
    /// A Describe's answer: ParameterDescription (statements) then
    /// RowDescription or NoData. `forward` is false for the sidecar's own
    /// Describe of a portal, whose answer the client never asked for.
    Describe {
        portal: Option<String>,
        statement: Option<String>,
        stmt: Option<StatementRef>,
        forward: bool,
    },
    /// An Execute's rows and its CommandComplete / EmptyQuery / PortalSuspended.
    Execute(Box<ExecCtx>),
    /// CloseComplete.
    CloseComplete,
    /// ReadyForQuery after Sync.
    Sync,
    /// The masking rules or limits changed (run mode): the answers after
    /// this point belong to statements decided under the new masking.
    Masking(Arc<Masking>),
    /// A message from the sidecar (a refusal), sent when its turn comes;
    /// followed by ReadyForQuery when `rfq`. `in_group` marks an error inside
    /// an extended-protocol group, dropped if the server already failed it.
    Synthetic {
        bytes: Bytes,
        rfq: bool,
        in_group: bool,
    },
    /// The client ended a COPY FROM STDIN (CopyDone or CopyFail forwarded).
    CopyEnd,
    /// `maxRowsAffected`: the answers from here to the next ReadyForQuery
    /// are held until the write's row counts are checked (see
    /// [`rows_affected`]). The first `swallow` CommandCompletes answer the
    /// sidecar's own `BEGIN;`/`SAVEPOINT …;` put in front of the client's
    /// query string, and error positions are moved back by its `shift` characters.
    HoldStart { swallow: u32, shift: u32 },
    /// One answer to the sidecar's own extended-protocol BEGIN or
    /// SAVEPOINT in front of a group (never forwarded; an error is, and the
    /// server then skips the group).
    Prefix,
    /// The answers to the sidecar's own COMMIT, RELEASE or ROLLBACK (a
    /// simple query), up to its ReadyForQuery: never forwarded.
    Internal,
}

/// A decided statement within a (possibly multi-statement) string.
#[derive(Clone)]
struct StatementRef {
    decided: Arc<Decided>,
    index: usize,
    /// The text a prepared statement was parsed from, and the enforcer
    /// generation its decision was taken under: after a policy change the
    /// decision is taken again before the statement runs (see
    /// [`ClientLoop::redecide_prepared`]). `None` for simple queries, which
    /// are decided each time they come.
    prepared: Option<(Arc<str>, u64)>,
}

impl StatementRef {
    /// The same statement decided again under the enforcer's current
    /// standing. The old decision is kept when the verdict did not change,
    /// so an approval granted for it still counts.
    fn redecided(&self, enforcer: &mut Enforcer) -> StatementRef {
        let generation = enforcer.generation();
        let Some((sql, taken)) = &self.prepared else {
            return self.clone();
        };
        if *taken == generation {
            return self.clone();
        }
        let now = enforcer.decide(sql);
        let (old, new) = (self.decided.decision(), now.decision());
        let same = old.enforced == new.enforced
            && old.enforced_policy == new.enforced_policy
            && old.enforced_rule == new.enforced_rule
            && self.decided.refusal.is_none() == now.refusal.is_none();
        StatementRef {
            decided: if same { self.decided.clone() } else { now },
            index: self.index,
            prepared: Some((sql.clone(), generation)),
        }
    }
}

struct BindInfo {
    portal: String,
    statement: String,
    formats: Vec<i16>,
}

struct SimpleCtx {
    decided: Arc<Decided>,
    started: Instant,
    copy_masks: Vec<Option<Arc<CopyMask>>>,
}

struct ExecCtx {
    portal: String,
    stmt: Option<StatementRef>,
    started: Instant,
    copy_mask: Option<Arc<CopyMask>>,
}

// === impl ClientLoop ===

struct PreparedStatement {
    stmt: StatementRef,
    /// The masking generation the sidecar described it under (`None`:
    /// not described, masking was off).
    described: Option<u64>,
}

struct Portal {
    stmt: Option<StatementRef>,
    /// The masking generation it was bound under.
    generation: u64,
}

struct ClientLoop {
    ctx: Arc<ConnectionContext>,
    session: SessionInfo,
    enforcer: Enforcer,
    upstream: WriteHalf,
    out: BytesMut,
    expect: mpsc::UnboundedSender<Expect>,
    /// Prepared statements as the server knows them (only forwarded Parses).
    statements: HashMap<String, PreparedStatement>,
    /// Portals as the server knows them.
    portals: HashMap<String, Portal>,
    /// Extended-protocol messages waiting for Sync or Flush.
    pending: Vec<Frame>,
    /// Their size.
    pending_bytes: usize,
    /// Whether part of the current Sync group was already forwarded (at a Flush).
    group_forwarded: bool,
    /// After a refusal at Flush: drop messages until Sync.
    discarding: bool,
    catalog: Arc<Mutex<Catalog>>,
    masking: Arc<Masking>,
    /// `statementsPerSecond`: shared by the identity's sessions on the Connection.
    rate: Arc<crate::rate::RateLimit>,
    /// A simple query waiting for its approval step (run mode).
    held: Option<(Frame, Arc<Decided>)>,
    /// Statements approved at Parse whose one Execute has not come yet.
    approved: Vec<Arc<Decided>>,
    /// Woken by the client's CancelRequest: a held statement is given up.
    cancel_hold: Arc<tokio::sync::Notify>,
    /// Counts masking changes during the session (see [`ClientLoop::sync_masking`]).
    generation: u64,
    /// The enforcer generation the stored statements' decisions were taken
    /// under (see [`ClientLoop::redecide_prepared`]).
    decided_generation: u64,
    /// Shared with the server loop.
    answered: Arc<Answered>,
    /// Expectations sent to the server loop.
    sent: AtomicU64,
    /// A statement that may change the settings Sluice models was sent:
    /// nothing more is decided until its answer is in (see [`settings`]).
    barrier: bool,
    /// The policy that made this session read-only at its start.
    read_only: Option<Arc<str>>,
    /// `spec.readOnly` came into force after the session started: it is
    /// closed before its next statement runs.
    read_only_lapse: Option<String>,
    /// A write sent under `maxRowsAffected` whose answer is held: decided
    /// (committed or rolled back) before the client's next message is read.
    guard: Option<Guard>,
    /// The session's savepoint and prepared-statement name for
    /// `maxRowsAffected` (random, so no client statement can name it).
    guard_name: String,
    /// Turns true when the sidecar shuts down: the session ends once what
    /// it sent is answered (at once when idle), with FATAL 57P01.
    shutdown: tokio::sync::watch::Receiver<bool>,
}

/// A write running under `maxRowsAffected` (see [`rows_affected`]).
struct Guard {
    /// How each statement (or Execute) is counted.
    counts: Vec<Count>,
    /// Their decisions, for the audit record of a refusal.
    decided: Vec<Arc<Decided>>,
    protocol: &'static str,
    /// Inside the client's transaction: a savepoint (else a transaction of
    /// the sidecar's own).
    savepoint: bool,
    /// A COPY FROM STDIN: the client's data is passed on while the answer is awaited.
    copy_in: bool,
    rows: u64,
    policy: Arc<str>,
}

impl ClientLoop {
    async fn run<R: AsyncRead + Unpin>(
        &mut self,
        client: &mut FrameReader<R>,
    ) -> Result<(), SessionError> {
        loop {
            if let Some(guard) = self.guard.take() {
                self.finish_guard(guard, client).await?;
            }
            self.read_only_in_force()?;
            if self.barrier {
                self.wait_answered(0).await;
                self.barrier = false;
            }
            // A client that does not read its answers is not read either.
            if self.sent.load(Ordering::Relaxed)
                > self.answered.settled.load(Ordering::Acquire) + MAX_OUTSTANDING
            {
                let _not_read = self.ctx.metrics.client_not_read();
                self.wait_answered(MAX_OUTSTANDING).await;
            }
            let mut shutdown = self.shutdown.clone();
            let next = tokio::select! {
                // What the client already sent is taken first (and refused:
                // the audit log takes no new statement while shutting down).
                biased;
                next = client.next() => Some(next?),
                () = async {
                    if shutdown.wait_for(|down| *down).await.is_err() {
                        // No audit log any more: nothing to wait for.
                        std::future::pending::<()>().await;
                    }
                } => None,
            };
            let Some(next) = next else {
                // Shutting down: a statement in flight finishes first.
                self.wait_answered(0).await;
                return Err(SessionError::ShuttingDown);
            };
            let Some(frame) = next else {
                return Ok(());
            };
            self.ctx.metrics.bytes_from_client(frame.raw.len());
            match frame.tag {
                frontend::QUERY | frontend::FUNCTION_CALL if self.discarding => {
                    // The group was refused before its Sync: the server would
                    // be skipping to Sync, and ignore this message too.
                }
                frontend::QUERY | frontend::FUNCTION_CALL if !self.pending.is_empty() => {
                    // Inside an unfinished extended-protocol group: what came
                    // before goes first, so the answers stay in order.
                    self.flush_group(None, false).await?;
                    if !self.discarding {
                        self.statement_message(frame, client).await?;
                    }
                }
                frontend::QUERY | frontend::FUNCTION_CALL => {
                    self.statement_message(frame, client).await?;
                }
                frontend::PARSE
                | frontend::BIND
                | frontend::DESCRIBE
                | frontend::EXECUTE
                | frontend::CLOSE => {
                    if !self.discarding {
                        self.hold(frame);
                    }
                }
                frontend::SYNC => {
                    if self.discarding {
                        self.discarding = false;
                        self.end_refused_group().await?;
                    } else {
                        self.flush_group(Some(frame), true).await?;
                    }
                    self.group_forwarded = false;
                }
                frontend::FLUSH => {
                    if !self.discarding {
                        self.flush_group(Some(frame), false).await?;
                    }
                }
                frontend::COPY_DATA => {
                    self.upstream.write_all(&frame.raw).await?;
                }
                frontend::COPY_DONE | frontend::COPY_FAIL => {
                    self.send(Expect::CopyEnd);
                    self.upstream.write_all(&frame.raw).await?;
                }
                frontend::TERMINATE => {
                    let _ = self.upstream.write_all(&frame.raw).await;
                    return Ok(());
                }
                // The stream cannot be trusted past an unknown message: the
                // session ends with FATAL 08P01, as PostgreSQL ends it.
                tag => return Err(SessionError::UnexpectedMessage(tag as char)),
            }
        }
    }

    /// Keeps an extended-protocol message until its group's Sync or Flush,
    /// within [`MAX_PENDING_MESSAGES`] and [`MAX_PENDING_BYTES`]: past
    /// either, the group is refused (54000) and discarded until Sync.
    fn hold(&mut self, frame: Frame) {
        let bytes = self.pending_bytes + frame.raw.len();
        let over = self.pending.len() >= MAX_PENDING_MESSAGES
            || (!self.pending.is_empty() && bytes > MAX_PENDING_BYTES);
        if !over {
            self.pending_bytes = bytes;
            self.pending.push(frame);
            return;
        }
        self.pending.clear();
        self.pending_bytes = 0;
        let refusal = Refusal {
            code: error_response::PROGRAM_LIMIT_EXCEEDED,
            ..Refusal::plain(&format!(
                "extended-protocol group refused by Sluice: more than {MAX_PENDING_MESSAGES} messages or {} MiB without Sync or Flush; nothing of it ran. Send Sync (or Flush) more often",
                MAX_PENDING_BYTES / (1024 * 1024)
            ))
        };
        self.queue_refusal(&refusal, false, self.group_forwarded);
        self.discarding = true;
    }

    /// A simple Query or a fast-path FunctionCall.
    async fn statement_message<R: AsyncRead + Unpin>(
        &mut self,
        frame: Frame,
        client: &mut FrameReader<R>,
    ) -> Result<(), SessionError> {
        if frame.tag == frontend::FUNCTION_CALL {
            self.function_call(&frame);
            return Ok(());
        }
        self.simple_query(frame).await?;
        if let Some((frame, decided)) = self.held.take() {
            self.approve_simple(frame, decided, client).await?;
        }
        Ok(())
    }

    /// The fast-path interface calls any function by OID, around every SQL
    /// rule: it is refused outright (and the refusal is on record).
    fn function_call(&mut self, frame: &Frame) {
        let oid = frame
            .body()
            .get(..4)
            .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]));
        let mut refusal = Refusal::plain(
            "function calls through the fast-path interface are not allowed through Sluice; call the function in a SQL statement",
        );
        // Every refusal is on record; the arguments (values) are not.
        let text = match oid {
            Some(oid) => format!("fast-path FunctionCall of function OID {oid}"),
            None => "fast-path FunctionCall".to_string(),
        };
        let recorded = self.ctx.audit.event(
            &self.session,
            AuditKind::Denial,
            Some(AuditCommand {
                fingerprint: "fastpath-function-call".into(),
                kind: Some("functionCall".into()),
                text,
            }),
            Some(AuditDecision {
                action: Action::Deny,
                dry_run: false,
                policy: None,
                reason: Some(refusal.message.clone()),
                rule: None,
            }),
            None,
            true,
        );
        if let Err(e) = recorded {
            refusal = Refusal::audit_failed(&e);
        }
        self.refuse(&refusal);
    }

    /// A refusal on record and counted. The statement is refused whether or
    /// not its record could be written; a failed write is logged here (the
    /// audit sink reports its own outage), never dropped in silence.
    fn record_refused(&self, decided: &Decided, protocol: &str, refusal: &Refusal) {
        if let Err(e) = self
            .ctx
            .audit
            .statement(&self.session, decided, protocol, Some(refusal))
        {
            tracing::error!(error = %e, protocol, "writing the audit record of a refused statement failed");
        }
        self.ctx.metrics.statement(decided, true);
    }

    /// Queues the answer to a refused simple Query or FunctionCall: its
    /// error and ReadyForQuery; dropped by the server loop when it comes
    /// inside an extended-protocol group the server is skipping (the server
    /// would have ignored the message).
    fn refuse(&self, refusal: &Refusal) {
        self.queue_refusal(refusal, true, self.group_forwarded);
    }

    fn send(&self, e: Expect) {
        self.sent.fetch_add(1, Ordering::Relaxed);
        // The server loop only stops when the session ends, which also stops this loop.
        let _ = self.expect.send(e);
    }

    /// Waits until at most `outstanding` expectations sent to the server
    /// loop are not settled yet. With 0: the answers (and ParameterStatus)
    /// of everything forwarded are in.
    async fn wait_answered(&self, outstanding: u64) {
        loop {
            let notified = self.answered.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let settled = self.answered.settled.load(Ordering::Acquire);
            if self.sent.load(Ordering::Relaxed) <= settled + outstanding {
                return;
            }
            notified.await;
        }
    }

    /// The refusal for `text` when the session is in a state Sluice does
    /// not model and `text` does not bring it back (see [`settings`]).
    fn unmodelled(&self, text: &str) -> Option<Refusal> {
        let why = self.answered.settings().unmodelled()?;
        if settings::is_restore(text) {
            return None;
        }
        Some(Refusal {
            code: error_response::FEATURE_NOT_SUPPORTED,
            ..Refusal::plain(&format!("statement refused by Sluice: {why}"))
        })
    }

    fn queue_refusal(&self, refusal: &Refusal, rfq: bool, in_group: bool) {
        let mut out = BytesMut::new();
        refusal.encode(&mut out);
        self.send(Expect::Synthetic {
            bytes: out.freeze(),
            rfq,
            in_group,
        });
    }

    /// Picks up new masking rules or limits (run mode) before a statement
    /// runs: the server loop switches when it reaches this point of the
    /// answers, and prepared statements and portals made under the old
    /// rules are described again before their next use (see
    /// [`ClientLoop::flush_group`]), so the next statement is masked by the
    /// new rules, never by a mix.
    fn sync_masking(&mut self) {
        self.enforcer.refresh();
        let masking = self.enforcer.masking();
        if Arc::ptr_eq(&masking, &self.masking) {
            return;
        }
        self.generation += 1;
        if self.read_only.is_none()
            && let Some(policy) = masking.read_only()
        {
            self.read_only_lapse = Some(policy.to_string());
        }
        self.masking = masking.clone();
        self.send(Expect::Masking(masking));
    }

    /// `statementsPerSecond`, counted in the Connection's shared bucket.
    fn rate_check(&self) -> Option<Refusal> {
        let rate = self.masking.limits().statements_per_second;
        self.rate.check(rate, &self.ctx.name)
    }

    /// Ends the session when `spec.readOnly` came into force after it
    /// started (the upstream session is read-write): before anything more runs.
    fn read_only_in_force(&self) -> Result<(), SessionError> {
        match &self.read_only_lapse {
            Some(policy) => Err(SessionError::ReadOnly(format!(
                "AccessPolicy {policy:?} now sets readOnly, and this session was opened read-write: Sluice closes it before its next statement; reconnect to get a read-only session"
            ))),
            None => Ok(()),
        }
    }

    /// The refusal of a statement that could undo a read-only session
    /// (see [`settings::read_only_undo`]).
    fn read_only_refusal(&self, decided: &Decided, text: &str) -> Option<Refusal> {
        let policy = self.read_only.as_deref()?;
        let what = if decided.is_empty() {
            settings::read_only_undo(None, text)
        } else {
            (0..decided.len()).find_map(|i| settings::read_only_undo(decided.statement(i), text))
        }?;
        Some(Refusal {
            code: READ_ONLY_SQL_TRANSACTION,
            ..Refusal::plain(&format!(
                "statement refused by Sluice: AccessPolicy {policy:?} sets readOnly, and {what} could undo the read-only session; nothing ran"
            ))
        })
    }

    async fn simple_query(&mut self, frame: Frame) -> Result<(), SessionError> {
        let sql = query::decode(frame.body())?;
        let decided = self.enforcer.decide_async(sql).await;
        self.sync_masking();
        self.read_only_in_force()?;
        let (settings_refusal, effect) = self.settings_check(sql, &decided);
        if settings_refusal.is_none()
            && self.ctx.approvals.is_some()
            && decided.awaits_approval().is_some()
        {
            self.held = Some((frame, decided));
            return Ok(());
        }
        let mut refusal = settings_refusal.or_else(|| decided.refusal.clone());
        if refusal.is_none() {
            refusal = self.rate_check();
        }
        let copy_masks = if refusal.is_none() {
            match self.copy_masks(&decided).await {
                Ok(m) => m,
                Err(r) => {
                    refusal = Some(r);
                    Vec::new()
                }
            }
        } else {
            Vec::new()
        };
        let mut writes = None;
        if refusal.is_none() {
            match self.simple_writes(&decided) {
                Ok(w) => writes = w,
                Err(r) => refusal = Some(r),
            }
        }
        // Write-ahead: the decision is on record before anything runs (an
        // allowed statement's record may share one write with other
        // sessions' records: see AuditLog::durable).
        let recorded = match &refusal {
            Some(r) => self
                .ctx
                .audit
                .statement(&self.session, &decided, "simple", Some(r)),
            None => match self
                .ctx
                .audit
                .statement_pending(&self.session, &decided, "simple")
            {
                Ok(ticket) => self.ctx.audit.durable(ticket).await,
                Err(e) => Err(e),
            },
        };
        if let Err(e) = recorded {
            self.refuse(&Refusal::audit_failed(&e));
            return Ok(());
        }
        self.ctx.metrics.statement(&decided, refusal.is_some());
        if let Some(refusal) = refusal {
            self.refuse(&refusal);
            return Ok(());
        }
        self.forward_simple(&frame, decided, copy_masks, writes)
            .await?;
        self.barrier |= effect != Effect::None;
        Ok(())
    }

    /// `maxRowsAffected` for a simple query string: how its statements are
    /// counted (`None`: no limit, or nothing of it writes), or its refusal.
    fn simple_writes(&self, decided: &Arc<Decided>) -> Result<Option<Vec<Count>>, Refusal> {
        let Some((rows, policy)) = &self.masking.limits().max_rows_affected else {
            return Ok(None);
        };
        let statements: Vec<Option<(&Decided, usize)>> = if decided.is_empty() {
            vec![Some((&**decided, 0))]
        } else {
            (0..decided.len()).map(|i| Some((&**decided, i))).collect()
        };
        rows_affected::plan(
            &statements,
            false,
            &Limit {
                rows: *rows,
                policy,
            },
        )
    }

    /// Sends a decided simple query upstream. A write under
    /// `maxRowsAffected` goes inside a transaction (autocommit) or a
    /// savepoint (inside the client's transaction) of the sidecar's own,
    /// put in front of it in the same query string so that nothing of it
    /// runs if that fails; its answer is held until
    /// [`ClientLoop::finish_guard`] decides.
    async fn forward_simple(
        &mut self,
        frame: &Frame,
        decided: Arc<Decided>,
        copy_masks: Vec<Option<Arc<CopyMask>>>,
        writes: Option<Vec<Count>>,
    ) -> Result<(), SessionError> {
        let simple = Expect::Simple(Box::new(SimpleCtx {
            decided: decided.clone(),
            started: Instant::now(),
            copy_masks,
        }));
        let Some(counts) = writes else {
            self.send(simple);
            self.upstream.write_all(&frame.raw).await?;
            return Ok(());
        };
        let Some((rows, policy)) = self.masking.limits().max_rows_affected.clone() else {
            return Err(SessionError::Desync(
                "maxRowsAffected changed while a write was decided".into(),
            ));
        };
        // The transaction status decides between BEGIN and SAVEPOINT: what
        // was sent before is answered first.
        self.wait_answered(0).await;
        let savepoint = self.answered.status() != ready_for_query::IDLE;
        let prefix = if savepoint {
            format!("SAVEPOINT {};", self.guard_name)
        } else {
            "BEGIN;".to_string()
        };
        let sql = query::decode(frame.body())?;
        let mut out = BytesMut::new();
        postgres_protocol::message::frontend::query(&format!("{prefix}{sql}"), &mut out)?;
        self.send(Expect::HoldStart {
            swallow: 1,
            shift: prefix.len() as u32,
        });
        self.send(simple);
        self.upstream.write_all(&out).await?;
        let copy_in = decided
            .statement(0)
            .is_some_and(|s| s.kind == sluice_crds::StatementKind::Copy)
            && counts.first() == Some(&Count::Strict);
        self.guard = Some(Guard {
            decided: vec![decided; counts.len()],
            counts,
            protocol: "simple",
            savepoint,
            copy_in,
            rows,
            policy,
        });
        Ok(())
    }

    /// Whether `sql` may be decided in the session's current settings, and
    /// what it may do to them (see [`settings`]): refused while the session
    /// is in a state Sluice does not model (unless it brings it back), and
    /// when it changes them together with other statements in one string.
    fn settings_check(&self, sql: &str, decided: &Decided) -> (Option<Refusal>, Effect) {
        let effect = statement_effect(decided, sql);
        if let Some(r) = self.unmodelled(sql) {
            return (Some(r), effect);
        }
        if let Some(r) = self.read_only_refusal(decided, sql) {
            return (Some(r), effect);
        }
        if effect == Effect::Alone && decided.len() > 1 {
            return (Some(alone_refusal()), effect);
        }
        (None, effect)
    }

    /// A simple query a `requireApproval` rule catches, in run mode: asked
    /// of the operator, then held until decided (hold) or refused with the
    /// request's name until approved (retry); run once when approved. A
    /// client that leaves while its statement is held takes it along.
    async fn approve_simple<R: AsyncRead + Unpin>(
        &mut self,
        frame: Frame,
        decided: Arc<Decided>,
        client: &mut FrameReader<R>,
    ) -> Result<(), SessionError> {
        let sql = query::decode(frame.body())?;
        if let Some(refusal) = self.rate_check() {
            self.record_refused(&decided, "simple", &refusal);
            self.refuse(&refusal);
            return Ok(());
        }
        let outcome = match self.approval_ask(sql, &decided) {
            Err(refusal) => Err(refusal),
            Ok((approvals, ask, true)) => Ok(Some((approvals.retry(&ask).await, approvals))),
            Ok((approvals, ask, false)) => {
                let hold =
                    approvals.hold(&ask, |ticket| self.notify_held(&decided, ticket, "simple"));
                tokio::pin!(hold);
                // Enabled now: a CancelRequest from here on is not missed.
                let cancelled = self.cancel_hold.notified();
                tokio::pin!(cancelled);
                cancelled.as_mut().enable();
                let mut watching = true;
                loop {
                    tokio::select! {
                        outcome = &mut hold => break Ok(Some((outcome, approvals.clone()))),
                        () = &mut cancelled => break Err(self.cancelled(&decided, "simple")),
                        more = client.fill(), if watching => match more {
                            // Pipelined input waits in the reader until the statement is settled.
                            Ok(true) => watching = false,
                            Ok(false) | Err(_) => break Ok(None),
                        },
                    }
                }
            }
        };
        let refusal = match outcome {
            Err(refusal) => Some(refusal),
            Ok(None) => {
                let refusal = Refusal::plain(
                    "the client closed the session while its statement was held for approval; it did not run",
                );
                let _ = self
                    .ctx
                    .audit
                    .statement(&self.session, &decided, "simple", Some(&refusal));
                return Ok(());
            }
            Ok(Some((held, approvals))) => {
                let outcome = self.recheck(held, &approvals, sql).await;
                self.settle_approval(outcome, &decided, "simple")
            }
        };
        if let Some(refusal) = refusal {
            self.refuse(&refusal);
            return Ok(());
        }
        let copy_masks = match self.copy_masks(&decided).await {
            Ok(m) => m,
            Err(r) => {
                self.refuse(&r);
                return Ok(());
            }
        };
        let writes = match self.simple_writes(&decided) {
            Ok(w) => w,
            Err(r) => {
                let _ = self
                    .ctx
                    .audit
                    .statement(&self.session, &decided, "simple", Some(&r));
                self.refuse(&r);
                return Ok(());
            }
        };
        let effect = statement_effect(&decided, sql);
        self.forward_simple(&frame, decided, copy_masks, writes)
            .await?;
        self.barrier |= effect != Effect::None;
        Ok(())
    }

    /// A Parse a `requireApproval` rule catches, in run mode: held or
    /// refused as in [`ClientLoop::approve_simple`]; `None` when approved,
    /// and then the statement's next Execute (only) may run.
    async fn approve_parse(&mut self, sql: &str, decided: &Arc<Decided>) -> Option<Refusal> {
        let (held, approvals) = match self.approval_ask(sql, decided) {
            Err(refusal) => return Some(refusal),
            Ok((approvals, ask, true)) => (approvals.retry(&ask).await, approvals),
            Ok((approvals, ask, false)) => {
                let cancelled = self.cancel_hold.notified();
                tokio::pin!(cancelled);
                cancelled.as_mut().enable();
                let hold =
                    approvals.hold(&ask, |ticket| self.notify_held(decided, ticket, "extended"));
                tokio::select! {
                    held = hold => (held, approvals.clone()),
                    () = cancelled => return Some(self.cancelled(decided, "extended")),
                }
            }
        };
        let outcome = self.recheck(held, &approvals, sql).await;
        let refusal = self.settle_approval(outcome, decided, "extended");
        if refusal.is_none() {
            self.approved.push(decided.clone());
        }
        refusal
    }

    /// A statement approved while held runs only if the policies in force
    /// now still let it: they may have changed, or lapsed, during the wait.
    /// The verdict goes to [`Approvals::run`], which claims the approval or
    /// records on the AccessRequest that the statement did not run.
    async fn recheck(
        &mut self,
        held: approval::Held,
        approvals: &Approvals,
        sql: &str,
    ) -> ApprovalOutcome {
        let approved = match held {
            approval::Held::Settled(outcome) => return outcome,
            approval::Held::Approved(approved) => approved,
        };
        let now = self.enforcer.decide_async(sql).await;
        // Masking that changed during the wait applies to this run.
        self.sync_masking();
        let standing = match (self.read_only_in_force(), &now.refusal) {
            (Err(e), _) => Err(e.to_string()),
            (Ok(()), Some(r)) if now.awaits_approval().is_none() => {
                Err(format!("they now refuse it ({})", r.message))
            }
            (Ok(()), _) => approval::standing(&approved, &now.sql.decision),
        };
        approvals.run(approved, standing).await
    }

    /// An Execute of a statement that needs approval runs only as the one
    /// run its approval at Parse allowed: `Ok(true)` uses that approval,
    /// `Ok(false)` when none is needed, `Err` refuses any other run.
    fn approved_once(&mut self, decided: &Arc<Decided>) -> Result<bool, Refusal> {
        if self.ctx.approvals.is_none() || decided.awaits_approval().is_none() {
            return Ok(false);
        }
        match self.approved.iter().position(|d| Arc::ptr_eq(d, decided)) {
            Some(i) => {
                self.approved.swap_remove(i);
                Ok(true)
            }
            None => Err(Refusal {
                detail: Some(approval_detail(decided)),
                ..Refusal::plain(
                    "statement refused by Sluice: its approval was used by an earlier execution (an approval runs a statement once); prepare it again to ask anew",
                )
            }),
        }
    }

    /// What to ask the operator for `sql`, and whether in retry mode; or
    /// the refusal (on record) when it cannot be asked.
    #[allow(clippy::type_complexity)]
    fn approval_ask(
        &self,
        sql: &str,
        decided: &Arc<Decided>,
    ) -> Result<(Approvals, ApprovalAsk, bool), Refusal> {
        let retry = decided
            .awaits_approval()
            .is_some_and(|a| a.mode == ApprovalMode::Retry);
        match (
            self.ctx.approvals.clone(),
            decided.approval_ask(&self.ctx.name, sql),
        ) {
            (Some(approvals), Some(ask)) => Ok((approvals, ask, retry)),
            _ => {
                let refusal = Refusal::plain(
                    "statement refused by Sluice: it needs approval, but the decision names no rule to ask under",
                );
                self.record_refused(decided, "approval", &refusal);
                Err(refusal)
            }
        }
    }

    /// Puts an approval's outcome on record; `None` when the statement may
    /// run now (approved and claimed; the record is written first), else
    /// the refusal for the client.
    fn settle_approval(
        &self,
        outcome: ApprovalOutcome,
        decided: &Arc<Decided>,
        protocol: &str,
    ) -> Option<Refusal> {
        let detail = approval_detail(decided);
        match outcome {
            ApprovalOutcome::Granted { request, approvers } => {
                let who = approvers.join(", ");
                let step = AuditApproval {
                    request: request.clone(),
                    phase: RequestPhase::Executed,
                    decided_by: Some(who.clone()),
                    comment: None,
                };
                // Write-ahead: the approval and the run are on record first.
                let recorded = self.ctx.audit.approval(
                        &self.session,
                        decided,
                        AuditKind::Approval,
                        step,
                        format!(
                            "approved by {who} in AccessRequest {request}; runs once ({protocol} protocol)"
                        ),
                    );
                match recorded {
                    Ok(()) => {
                        self.ctx.metrics.approved_run();
                        None
                    }
                    Err(e) => Some(Refusal::audit_failed(&e)),
                }
            }
            ApprovalOutcome::Refused {
                request,
                phase,
                deciders,
                message,
            } => {
                let refusal = Refusal {
                    detail: Some(detail),
                    ..Refusal::plain(&message)
                };
                match (request, phase) {
                    (Some(request), Some(phase)) => {
                        let step = AuditApproval {
                            request,
                            phase,
                            decided_by: (!deciders.is_empty()).then(|| deciders.join(", ")),
                            comment: None,
                        };
                        let _ = self.ctx.audit.approval(
                            &self.session,
                            decided,
                            AuditKind::Denial,
                            step,
                            format!("{message} ({protocol} protocol)"),
                        );
                    }
                    _ => {
                        let _ = self.ctx.audit.statement(
                            &self.session,
                            decided,
                            protocol,
                            Some(&refusal),
                        );
                    }
                }
                self.ctx.metrics.statement(decided, true);
                Some(refusal)
            }
            ApprovalOutcome::Pending {
                request,
                approve_command,
                message,
                ..
            } => {
                let step = AuditApproval {
                    request,
                    phase: RequestPhase::Pending,
                    decided_by: None,
                    comment: None,
                };
                let _ = self.ctx.audit.approval(
                    &self.session,
                    decided,
                    AuditKind::Approval,
                    step,
                    format!("{message} ({protocol} protocol)"),
                );
                self.ctx.metrics.statement(decided, true);
                Some(Refusal {
                    detail: Some(detail),
                    hint: Some(format!(
                        "an approver runs: {approve_command}; then send the same statement again"
                    )),
                    ..Refusal::plain(&message)
                })
            }
        }
    }

    /// The client cancelled its held statement: nothing runs (its
    /// AccessRequest stays pending until it expires); on record.
    fn cancelled(&self, decided: &Arc<Decided>, protocol: &str) -> Refusal {
        let refusal = Refusal {
            code: QUERY_CANCELED,
            detail: Some(approval_detail(decided)),
            ..Refusal::plain(
                "canceling statement due to user request: it was held for approval and did not run",
            )
        };
        let _ = self
            .ctx
            .audit
            .statement(&self.session, decided, protocol, Some(&refusal));
        self.ctx.metrics.statement(decided, true);
        refusal
    }

    /// Hold mode, once the operator made the request: on record, and the
    /// client is told which request to approve and how.
    fn notify_held(&self, decided: &Decided, ticket: &ApprovalTicket, protocol: &str) {
        let request = format!("{}/{}", ticket.namespace, ticket.name);
        let step = AuditApproval {
            request: request.clone(),
            phase: RequestPhase::Pending,
            decided_by: None,
            comment: None,
        };
        let _ = self.ctx.audit.approval(
            &self.session,
            decided,
            AuditKind::Approval,
            step,
            format!("held for approval in AccessRequest {request} ({protocol} protocol)"),
        );
        let mut out = BytesMut::new();
        Report {
            severity: "NOTICE",
            code: "00000",
            message: &format!(
                "Sluice is holding this statement for approval: AccessRequest {request}; approve it with: {}",
                ticket.approve_command
            ),
            detail: Some(&format!(
                "{}; the statement runs once when approved, and is refused if denied or not decided by {}",
                approval_detail(decided),
                ticket.expires_at
            )),
            hint: None,
        }
        .encode(&mut out);
        self.send(Expect::Synthetic {
            bytes: out.freeze(),
            rfq: false,
            in_group: self.group_forwarded,
        });
    }

    /// COPY … TO STDOUT under masking: the plan per statement, or a refusal.
    async fn copy_masks(&self, decided: &Decided) -> Result<Vec<Option<Arc<CopyMask>>>, Refusal> {
        let mut masks = Vec::new();
        for index in 0..decided.len() {
            let Some(target) = decided.copy_out(index) else {
                masks.push(None);
                continue;
            };
            if !self.masking.active() {
                masks.push(None);
                continue;
            }
            let mut catalog = self.catalog.lock().await;
            let columns = match &target.table {
                Some((schema, table)) => catalog
                    .table_columns(schema.as_deref(), table)
                    .await
                    .map_err(|e| catalog_refusal("COPY refused: Sluice could not look up the table's columns to mask them", &e))?,
                None => None,
            };
            // `COPY (SELECT … FROM some_view) TO STDOUT`: the view's masked
            // columns, and user-defined functions.
            let views = if self.masking.has_column_rules() {
                catalog
                    .extended_matcher(
                        decided.statement(index),
                        &[],
                        self.masking.column_matcher(),
                    )
                    .await
                    .map_err(|e| catalog_refusal("COPY refused: Sluice could not look up the views it reads to mask them", &e))?
            } else {
                None
            };
            drop(catalog);
            masks.push(
                self.masking
                    .copy_mask(decided, index, columns.as_deref(), views.as_ref())?
                    .map(Arc::new),
            );
        }
        Ok(masks)
    }

    /// Decides and forwards (or refuses) the buffered extended-protocol
    /// messages, ending with `terminator` (Sync or Flush).
    async fn flush_group(
        &mut self,
        terminator: Option<Frame>,
        sync: bool,
    ) -> Result<(), SessionError> {
        self.sync_masking();
        self.read_only_in_force()?;
        self.redecide_prepared();
        let pending = std::mem::take(&mut self.pending);
        self.pending_bytes = 0;
        let mut barrier = false;
        // Pass 1: decide every Parse; statements parsed earlier in the group
        // are visible to later Binds.
        let mut parsed: HashMap<String, StatementRef> = HashMap::new();
        let mut refusal: Option<Refusal> = None;
        let mut decisions: Vec<Option<StatementRef>> = Vec::with_capacity(pending.len());
        let mut to_approve: Vec<(String, Arc<Decided>)> = Vec::new();
        for frame in &pending {
            match frame.tag {
                frontend::PARSE => {
                    let p = parse::decode(frame.body())?;
                    let decided = self.enforcer.decide_async(p.query).await;
                    if let Some(r) = self
                        .unmodelled(p.query)
                        .or_else(|| self.read_only_refusal(&decided, p.query))
                        && refusal.is_none()
                    {
                        // Read under settings Sluice does not model: refused
                        // whatever the rules say; on record.
                        self.record_refused(&decided, "extended", &r);
                        refusal = Some(r);
                    }
                    let stmt = StatementRef {
                        decided: decided.clone(),
                        index: 0,
                        prepared: Some((Arc::from(p.query), self.enforcer.generation())),
                    };
                    if self.ctx.approvals.is_some() && decided.awaits_approval().is_some() {
                        // Asked of the operator once the whole group is decided.
                        to_approve.push((p.query.to_string(), decided.clone()));
                    } else if let Some(r) = &decided.refusal {
                        // Refused at Parse: on record now, nothing of the group runs.
                        self.record_refused(&decided, "extended", r);
                        refusal.get_or_insert_with(|| r.clone());
                    }
                    parsed.insert(p.name.to_string(), stmt.clone());
                    decisions.push(Some(stmt));
                }
                frontend::EXECUTE => {
                    let (portal, _) = execute::decode(frame.body())?;
                    decisions.push(self.portal_statement(portal, &pending, &parsed));
                }
                _ => decisions.push(None),
            }
        }
        // Deciding may have picked up new rules.
        self.sync_masking();
        self.read_only_in_force()?;
        if refusal.is_none() {
            // Statements that need approval hold (or refuse) the whole group.
            for (sql, decided) in &to_approve {
                if let Some(r) = self.approve_parse(sql, decided).await {
                    refusal = Some(r);
                    break;
                }
            }
        }
        // maxRowsAffected: how the group's Executes are counted, decided
        // before anything of it is on record as run.
        let mut writes = None;
        if refusal.is_none() {
            match self.group_writes(&pending, &decisions, sync) {
                Ok(w) => writes = w,
                Err((r, decided)) => {
                    if let Some(decided) = decided {
                        self.record_refused(&decided, "extended", &r);
                    }
                    refusal = Some(r);
                }
            }
        }
        if refusal.is_none() {
            // Pass 2: each Execute runs a statement: rate limit, COPY plan and
            // the write-ahead audit record, before anything is forwarded.
            let mut ticket = None;
            for (i, (frame, stmt)) in pending.iter().zip(&decisions).enumerate() {
                if frame.tag != frontend::EXECUTE {
                    continue;
                }
                let Some(stmt) = stmt else { continue };
                let text = stmt.prepared.as_ref().map_or("", |(t, _)| t);
                let effect = statement_effect(&stmt.decided, text);
                // A statement that changes the settings must end its Sync
                // group: what follows it is read under what the server
                // reports at that Sync.
                let followed = !sync
                    || pending[i + 1..].iter().any(|f| {
                        matches!(
                            f.tag,
                            frontend::PARSE
                                | frontend::BIND
                                | frontend::EXECUTE
                                | frontend::DESCRIBE
                                | frontend::CLOSE
                        )
                    });
                let settings_refusal = self
                    .unmodelled(text)
                    .or_else(|| (effect == Effect::Alone && followed).then(alone_refusal));
                if let Some(r) = settings_refusal {
                    let _ = self.ctx.audit.statement(
                        &self.session,
                        &stmt.decided,
                        "extended",
                        Some(&r),
                    );
                    self.ctx.metrics.statement(&stmt.decided, true);
                    refusal = Some(r);
                    break;
                }
                barrier |= effect != Effect::None;
                let awaits =
                    self.ctx.approvals.is_some() && stmt.decided.awaits_approval().is_some();
                if let Some(r) = stmt.decided.refusal.as_ref().filter(|_| !awaits) {
                    // Prepared (or bound) under policies that have changed
                    // since, and refused by the ones in force now.
                    self.record_refused(&stmt.decided, "extended", r);
                    refusal = Some(r.clone());
                    break;
                }
                let approved = match self.approved_once(&stmt.decided) {
                    Ok(approved) => approved,
                    Err(r) => {
                        let _ = self.ctx.audit.statement(
                            &self.session,
                            &stmt.decided,
                            "extended",
                            Some(&r),
                        );
                        self.ctx.metrics.statement(&stmt.decided, true);
                        refusal = Some(r);
                        break;
                    }
                };
                let mut r = self.rate_check();
                if r.is_none()
                    && let Err(e) = self.copy_masks(&stmt.decided).await
                {
                    r = Some(e);
                }
                // An approved run's record is its approval's, written at Parse.
                if !approved || r.is_some() {
                    let recorded = match &r {
                        Some(_) => self.ctx.audit.statement(
                            &self.session,
                            &stmt.decided,
                            "extended",
                            r.as_ref(),
                        ),
                        // Written once for the group, below.
                        None => self
                            .ctx
                            .audit
                            .statement_pending(&self.session, &stmt.decided, "extended")
                            .map(|t| ticket = Some(t)),
                    };
                    if let Err(e) = recorded {
                        r = Some(Refusal::audit_failed(&e));
                    }
                    self.ctx.metrics.statement(&stmt.decided, r.is_some());
                }
                if r.is_some() {
                    refusal = r;
                    break;
                }
            }
            // Write-ahead: the group's records are written before it is forwarded.
            if refusal.is_none()
                && let Some(t) = ticket
                && let Err(e) = self.ctx.audit.durable(t).await
            {
                refusal = Some(Refusal::audit_failed(&e));
            }
        }
        if let Some(refusal) = refusal {
            self.queue_refusal(&refusal, false, self.group_forwarded);
            if sync {
                self.end_refused_group().await?;
            } else {
                self.discarding = true;
            }
            return Ok(());
        }

        // Forward, queueing what each message will be answered with.
        if let Some(guard) = writes {
            self.guard_prefix(guard).await?;
        } else {
            self.out.clear();
        }
        // Masking needs each result's columns; the client may never ask for
        // them, so the sidecar describes every statement it forwards, once,
        // and gives each portal its statement's mask in the Bind's formats.
        let describe_statements = self.masking.active();
        for (i, frame) in pending.iter().enumerate() {
            match frame.tag {
                frontend::PARSE => {
                    let p = parse::decode(frame.body())?;
                    if let Some(stmt) = decisions[i].clone() {
                        self.statements.insert(
                            p.name.to_string(),
                            PreparedStatement {
                                stmt,
                                described: describe_statements.then_some(self.generation),
                            },
                        );
                    }
                    self.send(Expect::ParseComplete);
                    self.out.extend_from_slice(&frame.raw);
                    if describe_statements {
                        self.send(Expect::Describe {
                            portal: None,
                            statement: Some(p.name.to_string()),
                            stmt: decisions[i].clone(),
                            forward: false,
                        });
                        describe::describe_statement(&mut self.out, p.name);
                    }
                }
                frontend::BIND => {
                    let b = bind::decode(frame.body())?;
                    let generation = self.generation;
                    let stmt = match self.statements.get_mut(b.statement) {
                        Some(s) => {
                            if describe_statements && s.described != Some(generation) {
                                // Described under other masking rules (or
                                // none): its mask is made again first.
                                s.described = Some(generation);
                                self.sent.fetch_add(1, Ordering::Relaxed);
                                let _ = self.expect.send(Expect::Describe {
                                    portal: None,
                                    statement: Some(b.statement.to_string()),
                                    stmt: Some(s.stmt.clone()),
                                    forward: false,
                                });
                                describe::describe_statement(&mut self.out, b.statement);
                            }
                            Some(s.stmt.clone())
                        }
                        None => None,
                    };
                    let portal = b.portal.to_string();
                    self.portals.insert(
                        portal.clone(),
                        Portal {
                            stmt: stmt.clone(),
                            generation,
                        },
                    );
                    let info = describe_statements.then(|| {
                        Box::new(BindInfo {
                            portal: portal.clone(),
                            statement: b.statement.to_string(),
                            formats: b.result_formats.clone(),
                        })
                    });
                    self.send(Expect::BindComplete(info));
                    self.out.extend_from_slice(&frame.raw);
                }
                frontend::DESCRIBE => {
                    let (portal, stmt) = match describe::decode(frame.body(), "Describe")? {
                        describe::Target::Portal(p) => (
                            Some(p.to_string()),
                            self.portals.get(p).and_then(|p| p.stmt.clone()),
                        ),
                        describe::Target::Statement(s) => {
                            (None, self.statements.get(s).map(|s| s.stmt.clone()))
                        }
                    };
                    self.send(Expect::Describe {
                        portal,
                        statement: None,
                        stmt,
                        forward: true,
                    });
                    self.out.extend_from_slice(&frame.raw);
                }
                frontend::EXECUTE => {
                    let (portal, _) = execute::decode(frame.body())?;
                    let generation = self.generation;
                    if describe_statements
                        && let Some(p) = self.portals.get_mut(portal)
                        && p.generation != generation
                    {
                        // A portal bound under other masking rules: its
                        // mask is made again, in its result formats, from
                        // its own description.
                        p.generation = generation;
                        self.sent.fetch_add(1, Ordering::Relaxed);
                        let _ = self.expect.send(Expect::Describe {
                            portal: Some(portal.to_string()),
                            statement: None,
                            stmt: p.stmt.clone(),
                            forward: false,
                        });
                        describe::describe_portal(&mut self.out, portal);
                    }
                    let stmt = self.portals.get(portal).and_then(|p| p.stmt.clone());
                    let copy_mask = match &stmt {
                        Some(s) => self
                            .copy_masks(&s.decided)
                            .await
                            .ok()
                            .and_then(|m| m.into_iter().next().flatten()),
                        None => None,
                    };
                    self.send(Expect::Execute(Box::new(ExecCtx {
                        portal: portal.to_string(),
                        stmt,
                        started: Instant::now(),
                        copy_mask,
                    })));
                    self.out.extend_from_slice(&frame.raw);
                }
                frontend::CLOSE => {
                    match describe::decode(frame.body(), "Close")? {
                        describe::Target::Statement(s) => {
                            self.statements.remove(s);
                        }
                        describe::Target::Portal(p) => {
                            self.portals.remove(p);
                        }
                    }
                    self.send(Expect::CloseComplete);
                    self.out.extend_from_slice(&frame.raw);
                }
                _ => self.out.extend_from_slice(&frame.raw),
            }
        }
        if sync {
            self.send(Expect::Sync);
        } else {
            self.group_forwarded = true;
        }
        if let Some(terminator) = terminator {
            self.out.extend_from_slice(&terminator.raw);
        }
        self.upstream.write_all(&self.out).await?;
        self.barrier |= barrier;
        Ok(())
    }

    /// `maxRowsAffected` for an extended-protocol group: how its Executes
    /// are counted (`None`: no limit, or nothing of it writes), or its
    /// refusal with the decision to put it on record under.
    #[allow(clippy::type_complexity)]
    fn group_writes(
        &self,
        pending: &[Frame],
        decisions: &[Option<StatementRef>],
        sync: bool,
    ) -> Result<Option<Guard>, (Refusal, Option<Arc<Decided>>)> {
        let Some((rows, policy)) = self.masking.limits().max_rows_affected.clone() else {
            return Ok(None);
        };
        let executed: Vec<&Option<StatementRef>> = pending
            .iter()
            .zip(decisions)
            .filter(|(f, _)| f.tag == frontend::EXECUTE)
            .map(|(_, d)| d)
            .collect();
        let first = executed
            .iter()
            .find_map(|d| d.as_ref().map(|s| s.decided.clone()));
        let statements: Vec<Option<(&Decided, usize)>> = executed
            .iter()
            .map(|d| d.as_ref().map(|s| (&*s.decided, s.index)))
            .collect();
        let limit = Limit {
            rows,
            policy: &policy,
        };
        let Some(counts) =
            rows_affected::plan(&statements, true, &limit).map_err(|r| (r, first.clone()))?
        else {
            return Ok(None);
        };
        if !sync {
            let refusal = Refusal {
                code: error_response::FEATURE_NOT_SUPPORTED,
                ..Refusal::plain(&format!(
                    "statement refused by Sluice: AccessPolicy {policy:?} limits writes to {rows} rows each (maxRowsAffected), and a write is counted only in an extended-protocol group that ends with Sync (this one ended with Flush); nothing ran"
                ))
            };
            return Err((refusal, first));
        }
        Ok(Some(Guard {
            decided: executed
                .iter()
                .map(|d| {
                    d.as_ref()
                        .map_or_else(|| first.clone(), |s| Some(s.decided.clone()))
                })
                .collect::<Option<Vec<_>>>()
                .unwrap_or_default(),
            counts,
            protocol: "extended",
            savepoint: false,
            copy_in: false,
            rows,
            policy,
        }))
    }

    /// Puts the sidecar's BEGIN (autocommit) or SAVEPOINT (inside the
    /// client's transaction) in front of an extended-protocol group that
    /// writes under `maxRowsAffected`, as messages of the same group: if it
    /// fails, the server skips the group. The statement and portal carry the
    /// session's reserved name, closed again at once.
    async fn guard_prefix(&mut self, mut guard: Guard) -> Result<(), SessionError> {
        use bytes::BufMut;
        // The transaction status decides: what was sent before is answered first.
        self.wait_answered(0).await;
        guard.savepoint = self.answered.status() != ready_for_query::IDLE;
        let name = self.guard_name.clone();
        let sql = if guard.savepoint {
            format!("SAVEPOINT {name}")
        } else {
            "BEGIN".to_string()
        };
        let out = &mut self.out;
        out.clear();
        postgres_protocol::message::frontend::close(b'S', &name, out)?;
        postgres_protocol::message::frontend::parse(&name, &sql, std::iter::empty(), out)?;
        let at = super::messages::begin(out, frontend::BIND);
        super::messages::put_cstr(out, &name);
        super::messages::put_cstr(out, &name);
        out.put_i16(0); // parameter formats
        out.put_i16(0); // parameters
        out.put_i16(0); // result formats
        super::messages::finish(out, at);
        postgres_protocol::message::frontend::execute(&name, 0, out)?;
        postgres_protocol::message::frontend::close(b'P', &name, out)?;
        postgres_protocol::message::frontend::close(b'S', &name, out)?;
        self.send(Expect::HoldStart {
            swallow: 0,
            shift: 0,
        });
        for _ in 0..6 {
            self.send(Expect::Prefix);
        }
        self.guard = Some(guard);
        Ok(())
    }

    /// Decides a write held under `maxRowsAffected` once its whole answer is
    /// in: commits it (RELEASE inside the client's transaction) and lets
    /// the answer through, or rolls it back (to the savepoint inside the
    /// client's transaction, whose earlier work stands) and answers an
    /// error naming the limit, the policy and the counts. One more round
    /// trip to the server per write.
    async fn finish_guard<R: AsyncRead + Unpin>(
        &mut self,
        guard: Guard,
        client: &mut FrameReader<R>,
    ) -> Result<(), SessionError> {
        if guard.copy_in {
            self.pump_copy(client).await?;
        } else {
            self.wait_answered(0).await;
        }
        let Some(held) = self.answered.take_held() else {
            return Err(SessionError::Desync(
                "the answer of a write held for maxRowsAffected did not come".into(),
            ));
        };
        let name = &self.guard_name;
        if held.error {
            // The server failed it: nothing of it is committed. Inside the
            // client's transaction, that transaction is failed, as it would
            // be without Sluice; in autocommit the sidecar's is rolled back.
            if !guard.savepoint {
                self.internal("ROLLBACK").await?;
            }
            self.release(held.bytes);
            return Ok(());
        }
        let limit = Limit {
            rows: guard.rows,
            policy: &guard.policy,
        };
        let refused = if held.overflow {
            Some((
                0,
                Refusal {
                    code: error_response::PROGRAM_LIMIT_EXCEEDED,
                    hint: Some(
                        "return fewer rows (RETURNING fewer columns, or smaller batches)".into(),
                    ),
                    ..Refusal::plain(&format!(
                        "write refused by Sluice: AccessPolicy {:?} limits writes to {} rows each (maxRowsAffected), and the write's answer was larger than the {} MiB Sluice holds until the server reports its count; it was rolled back",
                        guard.policy,
                        guard.rows,
                        MAX_HELD_BYTES / (1024 * 1024)
                    ))
                },
            ))
        } else {
            rows_affected::verdict(&guard.counts, &held.outcomes, &limit)
        };
        match refused {
            Some((i, refusal)) => {
                let undo = if guard.savepoint {
                    format!("ROLLBACK TO SAVEPOINT {name}; RELEASE SAVEPOINT {name}")
                } else {
                    "ROLLBACK".to_string()
                };
                self.internal(&undo).await?;
                if self.answered.take_internal_error().is_some() {
                    return Err(SessionError::Desync(
                        "the server refused to roll back a write over maxRowsAffected".into(),
                    ));
                }
                if let Some(decided) = guard.decided.get(i).or(guard.decided.first()) {
                    let _ = self.ctx.audit.statement(
                        &self.session,
                        decided,
                        guard.protocol,
                        Some(&refusal),
                    );
                }
                self.queue_refusal(&refusal, true, false);
            }
            None => {
                let done = if guard.savepoint {
                    format!("RELEASE SAVEPOINT {name}")
                } else {
                    "COMMIT".to_string()
                };
                self.internal(&done).await?;
                // A COMMIT can fail (a deferred constraint): then that error
                // is the answer, and nothing of the write stands.
                match self.answered.take_internal_error() {
                    Some(error) => self.release(error),
                    None => self.release(held.bytes),
                }
            }
        }
        Ok(())
    }

    /// Sends the sidecar's own simple query and waits for its answer
    /// (swallowed; an error is kept in [`Answered::internal_error`]).
    async fn internal(&mut self, sql: &str) -> Result<(), SessionError> {
        let mut out = BytesMut::new();
        postgres_protocol::message::frontend::query(sql, &mut out)?;
        self.send(Expect::Internal);
        self.upstream.write_all(&out).await?;
        self.wait_answered(0).await;
        Ok(())
    }

    /// Lets a held answer through, with the ReadyForQuery of the server's
    /// transaction status now.
    fn release(&self, bytes: Bytes) {
        self.send(Expect::Synthetic {
            bytes,
            rfq: true,
            in_group: false,
        });
    }

    /// A COPY FROM STDIN under `maxRowsAffected`: the client's data goes
    /// upstream while its answer is awaited; nothing else is read from the
    /// client until then.
    async fn pump_copy<R: AsyncRead + Unpin>(
        &mut self,
        client: &mut FrameReader<R>,
    ) -> Result<(), SessionError> {
        let mut ended = false;
        loop {
            while !ended && let Some(frame) = client.try_next()? {
                match frame.tag {
                    frontend::COPY_DATA => self.upstream.write_all(&frame.raw).await?,
                    frontend::COPY_DONE | frontend::COPY_FAIL => {
                        self.send(Expect::CopyEnd);
                        self.upstream.write_all(&frame.raw).await?;
                        ended = true;
                    }
                    // Ignored by the server during COPY FROM STDIN.
                    frontend::FLUSH | frontend::SYNC => {}
                    tag => return Err(SessionError::UnexpectedMessage(tag as char)),
                }
            }
            tokio::select! {
                () = self.wait_answered(0) => return Ok(()),
                more = client.fill(), if !ended => {
                    if !more? {
                        return Err(SessionError::Refused(
                            "the client closed the session during a COPY FROM STDIN".into(),
                        ));
                    }
                }
            }
        }
    }

    /// After a policy change, takes the decisions of the session's prepared
    /// statements and bound portals again, so the next Execute of a statement
    /// prepared under the old policies is decided by the new ones (a deny
    /// added since refuses it).
    fn redecide_prepared(&mut self) {
        self.enforcer.refresh();
        let generation = self.enforcer.generation();
        if generation == self.decided_generation {
            return;
        }
        self.decided_generation = generation;
        let enforcer = &mut self.enforcer;
        for s in self.statements.values_mut() {
            s.stmt = s.stmt.redecided(enforcer);
        }
        for p in self.portals.values_mut() {
            if let Some(stmt) = p.stmt.as_mut() {
                *stmt = stmt.redecided(enforcer);
            }
        }
    }

    /// The statement an Execute of `portal` runs, looking at Binds earlier in
    /// the same group first.
    fn portal_statement(
        &self,
        portal: &str,
        pending: &[Frame],
        parsed: &HashMap<String, StatementRef>,
    ) -> Option<StatementRef> {
        for frame in pending.iter().rev() {
            if frame.tag == frontend::BIND
                && let Ok(b) = bind::decode(frame.body())
                && b.portal == portal
            {
                return parsed
                    .get(b.statement)
                    .cloned()
                    .or_else(|| self.statements.get(b.statement).map(|s| s.stmt.clone()));
            }
        }
        self.portals.get(portal).and_then(|p| p.stmt.clone())
    }

    /// Ends a Sync group whose error was already queued: the client gets
    /// ReadyForQuery; if part of the group reached the server, its Sync goes
    /// too (the server's ReadyForQuery is then the one the client sees).
    async fn end_refused_group(&mut self) -> Result<(), SessionError> {
        self.pending.clear();
        self.pending_bytes = 0;
        if self.group_forwarded {
            self.send(Expect::Sync);
            let mut out = BytesMut::new();
            postgres_protocol::message::frontend::sync(&mut out);
            self.upstream.write_all(&out).await?;
        } else {
            self.send(Expect::Synthetic {
                bytes: Bytes::new(),
                rfq: true,
                in_group: false,
            });
        }
        Ok(())
    }
}

// === impl ServerLoop ===

/// Row accounting of the result being streamed.
#[derive(Default)]
struct ResultState {
    mask: Option<Arc<RowMask>>,
    /// A RowDescription for this result came (simple protocol).
    described: bool,
    rows: u64,
    masked: u64,
    truncated: bool,
    refused: bool,
}

struct ServerLoop<'w, W> {
    ctx: Arc<ConnectionContext>,
    session: SessionInfo,
    upstream: FrameReader<ReadHalf>,
    client: &'w mut W,
    out: BytesMut,
    rx: mpsc::UnboundedReceiver<Expect>,
    queue: VecDeque<Expect>,
    /// Transaction status of the last ReadyForQuery.
    status: u8,
    /// A Describe's ParameterDescription came; its RowDescription or NoData is next.
    parameters_seen: bool,
    /// A COPY FROM STDIN is running: `Some(true)` when started by an Execute.
    copy_in: Option<bool>,
    /// Syncs before the next [`Expect::CopyEnd`] were ignored by the server.
    copy_syncs_ignored: bool,
    /// After an error in the extended protocol: the server skips to Sync.
    skipping: bool,
    /// maxRows refused a result: nothing but ReadyForQuery reaches the client
    /// until the cycle ends.
    suppress: bool,
    result: ResultState,
    portal_masks: HashMap<String, Option<Arc<RowMask>>>,
    /// Masks of prepared statements (result formats still text), from the
    /// sidecar's own Describe; `None` for a statement that returns no rows.
    statement_masks: HashMap<String, Option<Arc<RowMask>>>,
    mask_cache: HashMap<MaskKey, (Arc<Decided>, Option<Arc<RowMask>>)>,
    catalog: Arc<Mutex<Catalog>>,
    masking: Arc<Masking>,
    /// The running simple query: which statement of it is producing results,
    /// its rows and its first error.
    simple: Option<SimpleProgress>,
    copy_mask: Option<Arc<CopyMask>>,
    /// Results ended but not yet recorded (see [`ServerLoop::record_results`]).
    results: Vec<(Arc<Decided>, ResultRecord)>,
    /// Shared with the client loop.
    answered: Arc<Answered>,
    /// Statements run in the current transaction (see [`ServerLoop::ran`]).
    ran: Vec<StatementRef>,
    ran_overflow: bool,
    /// Per statement, whether it may read a masked column.
    uncertain_cache: HashMap<(usize, usize), (Arc<Decided>, bool)>,
    /// The policy that made this session read-only (see [`ClientLoop`]).
    read_only: Option<Arc<str>>,
    /// A write's answer being held for `maxRowsAffected` (see [`Expect::HoldStart`]).
    hold: Option<Hold>,
}

/// The answer being held for `maxRowsAffected`: `out[start..]`.
struct Hold {
    start: usize,
    outcomes: Vec<Outcome>,
    error: bool,
    overflow: bool,
    swallow: u32,
    shift: u32,
}

struct SimpleProgress {
    index: usize,
    rows: u64,
    masked: u64,
    error: Option<String>,
}

impl<W: AsyncWrite + Unpin> ServerLoop<'_, W> {
    async fn run(&mut self) -> Result<(), SessionError> {
        loop {
            self.settle()?;
            // Forward everything already buffered before waiting again; the
            // sidecar's own answers that are due go out before each frame.
            while let Some(frame) = self.upstream.try_next()? {
                self.settle()?;
                self.handle(frame).await?;
                self.bound_hold();
            }
            self.settle()?;
            match self.hold.as_mut() {
                None if !self.out.is_empty() => {
                    self.client.write_all(&self.out).await?;
                    self.ctx.metrics.bytes_to_client(self.out.len());
                    self.out.clear();
                }
                // What came before the held answer goes out; the rest waits.
                Some(hold) if hold.start > 0 => {
                    let ready = self.out.split_to(hold.start);
                    hold.start = 0;
                    self.client.write_all(&ready).await?;
                    self.ctx.metrics.bytes_to_client(ready.len());
                }
                _ => {}
            }
            // A client loop held at a barrier decides again.
            self.answered.notify.notify_waiters();
            self.record_results();
            tokio::select! {
                more = self.upstream.fill() => {
                    if !more? {
                        return Err(SessionError::UpstreamClosed);
                    }
                }
                e = self.rx.recv() => match e {
                    Some(e) => self.queue.push_back(e),
                    None => return Ok(()),
                },
            }
        }
    }

    /// Takes the front expectation (answered, or dropped because the
    /// server will not answer it); counted for [`ClientLoop::wait_answered`].
    fn pop(&mut self) -> Option<Expect> {
        let e = self.queue.pop_front();
        if e.is_some() {
            self.answered.settled.fetch_add(1, Ordering::Release);
        }
        e
    }

    /// A ParameterStatus: tracked settings are recorded (see [`settings`]).
    /// One that leaves what Sluice models while statements sent after the
    /// current one are already on their way (they were decided under the
    /// old setting: a function or trigger changed it unseen) ends the session.
    async fn parameter_status(&mut self, frame: &Frame) -> Result<(), SessionError> {
        let Some((name, value)) = parameter_status(frame.body()) else {
            return Err(SessionError::Desync(
                "the server sent a malformed ParameterStatus".into(),
            ));
        };
        if let Some(policy) = &self.read_only
            && name == settings::READ_ONLY_SETTING
            && value != "on"
        {
            // Something Sluice did not see (a function, say) turned it off.
            return Err(SessionError::ReadOnly(format!(
                "AccessPolicy {policy:?} sets readOnly, and the server reported {name} = {value:?}: Sluice closes the session"
            )));
        }
        {
            let unmodelled = match self.answered.settings.lock() {
                Ok(mut settings) => {
                    let before = settings.unmodelled().is_some();
                    settings.update(name, value) && !before && settings.unmodelled().is_some()
                }
                Err(_) => true,
            };
            if unmodelled {
                self.drain_queue();
                let later = self.queue.iter().skip(1).any(|e| {
                    !matches!(
                        e,
                        Expect::Synthetic { .. }
                            | Expect::Masking(_)
                            | Expect::CopyEnd
                            | Expect::Sync
                    )
                });
                if later {
                    return Err(SessionError::Desync(format!(
                        "the server reported {name} = {value:?} while statements decided under the previous setting were already sent"
                    )));
                }
            }
        }
        if self.masking.active() && !self.suppress {
            let (name, value) = (name.to_string(), value.to_string());
            self.scrubbed_parameter(&name, &value).await;
        } else {
            self.forward(frame);
        }
        Ok(())
    }

    fn drain_queue(&mut self) {
        while let Ok(e) = self.rx.try_recv() {
            self.queue.push_back(e);
        }
    }

    /// Brings the queue to the next answer the server owes: applies masking
    /// switches, writes the sidecar's own answers (refusals) whose turn has
    /// come, and drops what the server will not answer (the rest of a Sync
    /// group after an error; Syncs swallowed by COPY FROM STDIN). Called
    /// before every upstream frame, so a refusal always reaches the client
    /// exactly where the server's answer would have been, whatever arrives
    /// in the same read.
    fn settle(&mut self) -> Result<(), SessionError> {
        self.drain_queue();
        loop {
            self.switch_masking();
            match self.queue.front() {
                Some(Expect::CopyEnd) => {
                    // The client ended a COPY FROM STDIN: Syncs it sent before
                    // were ignored by the server (see `copy_syncs_ignored`).
                    self.copy_syncs_ignored = false;
                }
                Some(Expect::Sync) if self.copy_syncs_ignored => {}
                Some(Expect::Sync) | None => return Ok(()),
                Some(Expect::Synthetic { in_group, rfq, .. }) => {
                    if self.skipping && !*in_group {
                        return Err(SessionError::Desync(
                            "a refusal outside an extended-protocol group was due while the server was still skipping to Sync".into(),
                        ));
                    }
                    let (in_group, rfq) = (*in_group, *rfq);
                    if let Some(Expect::Synthetic { bytes, .. }) = self.pop()
                        && !(in_group && self.skipping)
                    {
                        self.out.extend_from_slice(&bytes);
                        if rfq {
                            ready_for_query::encode(&mut self.out, self.status);
                        }
                    }
                    continue;
                }
                Some(Expect::HoldStart { swallow, shift }) => {
                    self.hold = Some(Hold {
                        start: self.out.len(),
                        outcomes: Vec::new(),
                        error: false,
                        overflow: false,
                        swallow: *swallow,
                        shift: *shift,
                    });
                }
                Some(_) if self.skipping => {
                    // After an error in an extended-protocol group the server
                    // ignores every message until Sync (simple Queries too).
                }
                Some(_) => return Ok(()),
            }
            self.pop();
        }
    }

    /// The session cannot go on: an answer came that is not the one the
    /// server owes next. Guessing could attach rows to the wrong statement
    /// (and its mask plan), so the session ends.
    fn desync(&self, frame: &Frame) -> SessionError {
        let expected = match self.queue.front() {
            None => "nothing",
            Some(Expect::Simple(_)) => "the answer to a simple query",
            Some(Expect::ParseComplete) => "ParseComplete",
            Some(Expect::BindComplete(_)) => "BindComplete",
            Some(Expect::Describe { .. }) => "the answer to a Describe",
            Some(Expect::Execute(_)) => "the answer to an Execute",
            Some(Expect::CloseComplete) => "CloseComplete",
            Some(Expect::Sync) => "ReadyForQuery",
            Some(
                Expect::Masking(_)
                | Expect::Synthetic { .. }
                | Expect::CopyEnd
                | Expect::HoldStart { .. }
                | Expect::Prefix
                | Expect::Internal,
            ) => "a sidecar answer",
        };
        SessionError::Desync(format!(
            "the server sent a message of type {:?} while Sluice expected {expected}",
            frame.tag as char
        ))
    }

    fn forward(&mut self, frame: &Frame) {
        if !self.suppress {
            self.out.extend_from_slice(&frame.raw);
        }
    }

    /// Applies masking changes that reached the front of the queue: every
    /// answer before them belonged to statements decided under the old
    /// rules, every answer after them to statements decided under the new.
    /// Masks made under the old rules are dropped; the client loop has the
    /// sidecar describe prepared statements and portals again before use.
    fn switch_masking(&mut self) {
        while matches!(self.queue.front(), Some(Expect::Masking(_))) {
            if let Some(Expect::Masking(masking)) = self.pop() {
                self.masking = masking;
                self.mask_cache.clear();
                self.statement_masks.clear();
                self.portal_masks.clear();
            }
        }
    }

    /// Whether `tag` may answer the expectation at the front of the queue.
    /// Asynchronous messages (notices, parameter status, notifications) are
    /// checked by the caller; everything else must belong to the front.
    fn expected(&self, tag: u8) -> bool {
        use backend::*;
        match self.queue.front() {
            Some(Expect::Simple(_)) => matches!(
                tag,
                ROW_DESCRIPTION
                    | DATA_ROW
                    | COMMAND_COMPLETE
                    | EMPTY_QUERY_RESPONSE
                    | ERROR_RESPONSE
                    | COPY_IN_RESPONSE
                    | COPY_OUT_RESPONSE
                    | COPY_DATA
                    | COPY_DONE
                    | READY_FOR_QUERY
            ),
            Some(Expect::ParseComplete) => matches!(tag, PARSE_COMPLETE | ERROR_RESPONSE),
            Some(Expect::BindComplete(_)) => matches!(tag, BIND_COMPLETE | ERROR_RESPONSE),
            Some(Expect::Describe { portal, .. }) => match tag {
                ROW_DESCRIPTION | NO_DATA | ERROR_RESPONSE => true,
                // Only a statement's description starts with its parameters.
                PARAMETER_DESCRIPTION => portal.is_none() && !self.parameters_seen,
                _ => false,
            },
            Some(Expect::Execute(_)) => matches!(
                tag,
                DATA_ROW
                    | COMMAND_COMPLETE
                    | EMPTY_QUERY_RESPONSE
                    | PORTAL_SUSPENDED
                    | ERROR_RESPONSE
                    | COPY_IN_RESPONSE
                    | COPY_OUT_RESPONSE
                    | COPY_DATA
                    | COPY_DONE
            ),
            Some(Expect::CloseComplete) => matches!(tag, CLOSE_COMPLETE | ERROR_RESPONSE),
            // An error at Sync: the implicit transaction's COMMIT failed.
            Some(Expect::Sync) => matches!(tag, READY_FOR_QUERY | ERROR_RESPONSE),
            // A FATAL error (terminated backend, shutdown) before the close.
            None => tag == ERROR_RESPONSE,
            Some(Expect::Prefix) => matches!(
                tag,
                PARSE_COMPLETE | BIND_COMPLETE | COMMAND_COMPLETE | CLOSE_COMPLETE | ERROR_RESPONSE
            ),
            Some(Expect::Internal) => matches!(
                tag,
                COMMAND_COMPLETE | EMPTY_QUERY_RESPONSE | ERROR_RESPONSE | READY_FOR_QUERY
            ),
            Some(
                Expect::Masking(_)
                | Expect::Synthetic { .. }
                | Expect::CopyEnd
                | Expect::HoldStart { .. },
            ) => false,
        }
    }

    async fn handle(&mut self, frame: Frame) -> Result<(), SessionError> {
        self.switch_masking();
        match frame.tag {
            // The sidecar's own COMMIT/ROLLBACK warns of nothing the client asked.
            backend::NOTICE_RESPONSE if matches!(self.queue.front(), Some(Expect::Internal)) => {
                return Ok(());
            }
            // Asynchronous: these may come at any point.
            backend::NOTICE_RESPONSE => {
                self.notice(frame).await;
                return Ok(());
            }
            backend::PARAMETER_STATUS => return self.parameter_status(&frame).await,
            backend::NOTIFICATION_RESPONSE => return self.notification(&frame).await,
            tag if !self.expected(tag) => return Err(self.desync(&frame)),
            _ => {}
        }
        match self.queue.front() {
            Some(Expect::Internal) => return self.internal_answer(frame).await,
            Some(Expect::Prefix) if frame.tag != backend::ERROR_RESPONSE => {
                self.pop();
                return Ok(());
            }
            _ => {}
        }
        if frame.tag == backend::COPY_IN_RESPONSE && self.hold.is_some() {
            // The client must see it to send its data; nothing of the write's
            // answer is held before it (a COPY FROM comes alone).
            self.copy_in = Some(matches!(self.queue.front(), Some(Expect::Execute(_))));
            self.forward(&frame);
            let released = self.out.len();
            if let Some(hold) = self.hold.as_mut() {
                hold.start = released;
            }
            return Ok(());
        }
        let frame = match self.hold.as_mut() {
            Some(hold) => match frame.tag {
                backend::COMMAND_COMPLETE if hold.swallow > 0 => {
                    // The sidecar's own BEGIN or SAVEPOINT.
                    hold.swallow -= 1;
                    return Ok(());
                }
                backend::COMMAND_COMPLETE => {
                    let tag = frame.body().strip_suffix(b"\0").unwrap_or(frame.body());
                    hold.outcomes
                        .push(Outcome::Tag(String::from_utf8_lossy(tag).into_owned()));
                    frame
                }
                backend::EMPTY_QUERY_RESPONSE => {
                    hold.outcomes.push(Outcome::Empty);
                    frame
                }
                backend::PORTAL_SUSPENDED => {
                    hold.outcomes.push(Outcome::Suspended);
                    frame
                }
                backend::ERROR_RESPONSE => {
                    hold.error = true;
                    match shift_position(&frame, hold.shift) {
                        Some(shifted) => shifted,
                        None => frame,
                    }
                }
                _ => frame,
            },
            None => frame,
        };
        match frame.tag {
            backend::DATA_ROW => self.data_row(frame),
            backend::COMMAND_COMPLETE | backend::EMPTY_QUERY_RESPONSE => {
                self.copy_ended();
                self.command_complete(frame)
            }
            backend::READY_FOR_QUERY => {
                self.status = ready_for_query::status(frame.body());
                self.answered.status.store(self.status, Ordering::Release);
                self.suppress = false;
                self.skipping = false;
                if let Some(Expect::Simple(s)) = self.pop() {
                    self.simple_done(&s);
                }
                if self.status == ready_for_query::IDLE {
                    self.ran.clear();
                    self.ran_overflow = false;
                }
                if let Some(hold) = self.hold.take() {
                    // The held answer is complete: the client loop decides
                    // (see [`ClientLoop::finish_guard`]).
                    let bytes = self.out.split_off(hold.start).freeze();
                    let held = HeldAnswer {
                        bytes: if hold.overflow { Bytes::new() } else { bytes },
                        outcomes: hold.outcomes,
                        error: hold.error,
                        overflow: hold.overflow,
                    };
                    if let Ok(mut slot) = self.answered.held.lock() {
                        *slot = Some(held);
                    }
                    return Ok(());
                }
                self.forward(&frame);
                Ok(())
            }
            backend::ROW_DESCRIPTION => {
                self.parameters_seen = false;
                self.row_description(frame).await
            }
            backend::NO_DATA => {
                self.parameters_seen = false;
                if let Some(Expect::Describe {
                    portal,
                    statement,
                    forward,
                    ..
                }) = self.pop()
                {
                    if let Some(p) = portal {
                        self.portal_masks.insert(p, None);
                    }
                    if let Some(s) = statement {
                        self.statement_masks.insert(s, None);
                    }
                    if forward {
                        self.forward(&frame);
                    }
                }
                Ok(())
            }
            backend::PARAMETER_DESCRIPTION => {
                self.parameters_seen = true;
                if let Some(Expect::Describe { forward, .. }) = self.queue.front()
                    && !forward
                {
                    return Ok(());
                }
                self.forward(&frame);
                Ok(())
            }
            backend::BIND_COMPLETE => {
                if let Some(Expect::BindComplete(Some(info))) = self.pop() {
                    let mask = match self.statement_masks.get(&info.statement) {
                        Some(mask) => mask
                            .as_ref()
                            .map(|m| Arc::new(m.with_formats(&info.formats))),
                        // Never described (cannot happen while masking is on):
                        // every value of its rows becomes NULL rather than pass unseen.
                        None => Some(Arc::new(RowMask::opaque())),
                    };
                    self.portal_masks.insert(info.portal, mask);
                }
                self.forward(&frame);
                Ok(())
            }
            backend::PARSE_COMPLETE | backend::CLOSE_COMPLETE => {
                self.pop();
                self.forward(&frame);
                Ok(())
            }
            backend::PORTAL_SUSPENDED => {
                if let Some(Expect::Execute(e)) = self.pop() {
                    self.execute_done(&e, None);
                }
                self.forward(&frame);
                Ok(())
            }
            backend::ERROR_RESPONSE => {
                self.copy_ended();
                self.error_response(frame).await
            }
            backend::COPY_IN_RESPONSE => {
                self.copy_in = Some(matches!(self.queue.front(), Some(Expect::Execute(_))));
                self.forward(&frame);
                Ok(())
            }
            backend::COPY_OUT_RESPONSE => {
                self.copy_mask = self.current_copy_mask();
                if let Some(mask) = &self.copy_mask
                    && copy::overall_format(frame.body())? != 0
                    && !mask.columns.iter().all(Option::is_none)
                {
                    tracing::warn!(connection = %self.ctx.name, "binary COPY with masked columns: rows are dropped");
                }
                self.forward(&frame);
                Ok(())
            }
            backend::COPY_DATA => {
                self.copy_data(frame);
                Ok(())
            }
            _ => {
                self.forward(&frame);
                Ok(())
            }
        }
    }

    /// A COPY FROM STDIN ended (its CommandComplete or error): in the
    /// extended protocol the server ignored the Syncs the client sent
    /// during it, up to its CopyDone/CopyFail (see [`ServerLoop::settle`]).
    fn copy_ended(&mut self) {
        if self.copy_in.take() == Some(true) {
            self.copy_syncs_ignored = true;
        }
    }

    fn current_copy_mask(&self) -> Option<Arc<CopyMask>> {
        match self.queue.front() {
            Some(Expect::Simple(s)) => {
                let index = self.simple.as_ref().map_or(0, |p| p.index);
                s.copy_masks.get(index).cloned().flatten()
            }
            Some(Expect::Execute(e)) => e.copy_mask.clone(),
            _ => None,
        }
    }

    fn copy_data(&mut self, frame: Frame) {
        let Some(mask) = self.copy_mask.clone() else {
            self.forward(&frame);
            return;
        };
        self.result.rows += 1;
        let before = self.out.len();
        match mask.apply_text(&self.masking, frame.body(), &mut self.out) {
            Some(n) => {
                self.result.masked += n as u64;
                self.ctx.metrics.masked(n as u64);
                if self.suppress {
                    self.out.truncate(before);
                }
            }
            None => self.forward(&frame),
        }
    }

    fn data_row(&mut self, frame: Frame) -> Result<(), SessionError> {
        self.result.rows += 1;
        if let Some(max) = self.masking.limits().max_rows
            && self.result.rows > max
        {
            if self.masking.limits().refuse_past_max {
                if !self.result.refused {
                    self.result.refused = true;
                    let mut out = BytesMut::new();
                    Report {
                        severity: "ERROR",
                        code: error_response::PROGRAM_LIMIT_EXCEEDED,
                        message: &format!(
                            "result refused: it has more than {max} rows, the maxRows limit of the AccessPolicy"
                        ),
                        detail: None,
                        hint: Some("add a LIMIT or a narrower WHERE clause"),
                    }
                    .encode(&mut out);
                    if !self.suppress {
                        self.out.extend_from_slice(&out);
                    }
                    self.suppress = true;
                }
            } else {
                self.result.truncated = true;
            }
            return Ok(());
        }
        let mask = match self.queue.front() {
            Some(Expect::Execute(e)) => match self.portal_masks.get(&e.portal) {
                Some(mask) => mask.clone(),
                // A portal the sidecar did not bind (a cursor DECLAREd in
                // SQL, say): its columns are unknown, so with masking on
                // every value becomes NULL.
                None => self.masking.active().then(|| Arc::new(RowMask::opaque())),
            },
            _ if !self.result.described && self.masking.active() => {
                Some(Arc::new(RowMask::opaque()))
            }
            _ => self.result.mask.clone(),
        };
        match mask {
            Some(mask) if !self.suppress => {
                if let Some(n) = mask.apply(&self.masking, frame.body(), &mut self.out)? {
                    self.result.masked += n as u64;
                    self.ctx.metrics.masked(n as u64);
                } else {
                    self.out.extend_from_slice(&frame.raw);
                }
            }
            _ => self.forward(&frame),
        }
        Ok(())
    }

    fn command_complete(&mut self, frame: Frame) -> Result<(), SessionError> {
        let truncated = self.result.truncated;
        let rows = self.result.rows;
        let refused = self.result.refused;
        if truncated && !self.suppress {
            let max = self.masking.limits().max_rows.unwrap_or(0);
            Report {
                severity: "NOTICE",
                code: "01000",
                message: &format!(
                    "result truncated to {max} rows by the maxRows limit of the AccessPolicy ({rows} rows were returned by the server)"
                ),
                detail: None,
                hint: None,
            }
            .encode(&mut self.out);
            command_complete::encode(
                &mut self.out,
                &command_complete::with_rows(frame.body(), max),
            );
        } else {
            self.forward(&frame);
        }
        let rows = command_complete::rows(frame.body()).unwrap_or(rows);
        let masked = self.result.masked;
        self.result = ResultState::default();
        self.copy_mask = None;
        match self.queue.front() {
            Some(Expect::Simple(_)) => {
                let p = self.simple.get_or_insert(SimpleProgress {
                    index: 0,
                    rows: 0,
                    masked: 0,
                    error: None,
                });
                p.index += 1;
                p.rows += rows;
                p.masked += masked;
                if refused && p.error.is_none() {
                    p.error = Some(error_response::PROGRAM_LIMIT_EXCEEDED.into());
                }
            }
            Some(Expect::Execute(_)) => {
                if let Some(Expect::Execute(e)) = self.pop() {
                    let error = refused.then(|| error_response::PROGRAM_LIMIT_EXCEEDED.to_string());
                    self.execute_result(&e, rows, masked, error);
                }
            }
            _ => {}
        }
        Ok(())
    }

    fn simple_done(&mut self, s: &SimpleCtx) {
        let p = self.simple.take().unwrap_or(SimpleProgress {
            index: 0,
            rows: 0,
            masked: 0,
            error: None,
        });
        let elapsed = s.started.elapsed();
        for index in 0..s.decided.len().max(1) {
            self.ran(StatementRef {
                decided: s.decided.clone(),
                index,
                prepared: None,
            });
        }
        self.results.push((
            s.decided.clone(),
            ResultRecord {
                rows: p.rows,
                masked: p.masked,
                duration: elapsed,
                error: p.error,
            },
        ));
    }

    fn execute_done(&mut self, e: &ExecCtx, error: Option<String>) {
        let rows = self.result.rows;
        let masked = self.result.masked;
        self.result = ResultState::default();
        self.execute_result(e, rows, masked, error);
    }

    fn execute_result(&mut self, e: &ExecCtx, rows: u64, masked: u64, error: Option<String>) {
        let elapsed = e.started.elapsed();
        match &e.stmt {
            Some(s) => self.ran(s.clone()),
            None if self.masking.has_column_rules() => self.ran_overflow = true,
            None => {}
        }
        if let Some(stmt) = &e.stmt {
            self.results.push((
                stmt.decided.clone(),
                ResultRecord {
                    rows,
                    masked,
                    duration: elapsed,
                    error,
                },
            ));
        } else {
            self.ctx.metrics.upstream_latency(elapsed);
        }
    }

    /// Records the results that ended since the last call (their audit
    /// events and latencies). Called after the answers are written to the
    /// client, so that this work is off the client's critical path: result
    /// events are not durable at that point anyway (they wait for the next
    /// write-ahead record or the periodic flush; see [`AuditLog`]), and
    /// every exit of the session calls it before `session_end`.
    fn record_results(&mut self) {
        for (decided, result) in self.results.drain(..) {
            self.ctx.metrics.upstream_latency(result.duration);
            let _ = self.ctx.audit.result(&self.session, &decided, result);
        }
    }

    async fn row_description(&mut self, frame: Frame) -> Result<(), SessionError> {
        let front = self.queue.front();
        let stmt = match front {
            Some(Expect::Simple(s)) => {
                let progress = self.simple.get_or_insert(SimpleProgress {
                    index: 0,
                    rows: 0,
                    masked: 0,
                    error: None,
                });
                Some(StatementRef {
                    decided: s.decided.clone(),
                    index: progress.index,
                    prepared: None,
                })
            }
            Some(Expect::Describe { stmt, .. }) => stmt.clone(),
            _ => None,
        };
        let is_describe = matches!(front, Some(Expect::Describe { .. }));
        let mask = if self.masking.active() {
            // The same statement with the same columns masks the same way:
            // plan once per session, not once per execution.
            let key = stmt.as_ref().map(|s| {
                (
                    Arc::as_ptr(&s.decided) as usize,
                    s.index,
                    frame.body_bytes(),
                )
            });
            match key.as_ref().and_then(|k| self.mask_cache.get(k)) {
                Some((_, mask)) => mask.clone(),
                // A statement or portal the sidecar did not decide (a cursor
                // DECLAREd in SQL, described as a portal): its lineage is
                // unknown, so every value is withheld.
                None if stmt.is_none() => Some(Arc::new(RowMask::opaque())),
                None => {
                    let columns = row_description::decode(frame.body())?;
                    let mask = match self.row_mask(stmt.as_ref(), &columns).await {
                        Ok(mask) => mask,
                        Err(e) => {
                            self.catalog_unavailable(&e);
                            return self.row_description_withheld(is_describe);
                        }
                    };
                    if let (Some(key), Some(stmt)) = (key, &stmt) {
                        if self.mask_cache.len() >= MASK_CACHE_ENTRIES {
                            self.mask_cache.clear();
                        }
                        // The entry holds the decision, so its address is not reused.
                        self.mask_cache
                            .insert(key, (stmt.decided.clone(), mask.clone()));
                    }
                    mask
                }
            }
        } else {
            None
        };
        if is_describe {
            if let Some(Expect::Describe {
                portal,
                statement,
                forward,
                ..
            }) = self.pop()
            {
                if let Some(p) = portal {
                    self.portal_masks.insert(p, mask.clone());
                }
                if let Some(s) = statement {
                    self.statement_masks.insert(s, mask);
                }
                if forward {
                    self.forward(&frame);
                }
            }
        } else {
            self.result.mask = mask;
            self.result.described = true;
            self.forward(&frame);
        }
        Ok(())
    }

    /// No catalog session could resolve a result's columns (#17): the
    /// statement fails with 53300 naming the cause, and nothing more of its
    /// answer reaches the client until ReadyForQuery (as maxRows' refusal),
    /// rather than values masked whole for want of a lookup.
    fn catalog_unavailable(&mut self, e: &CatalogError) {
        tracing::warn!(connection = %self.ctx.name, error = %e, "catalog session unavailable: the statement's result is withheld");
        if !self.suppress {
            Report {
                severity: "ERROR",
                code: e.code(),
                message: &e.to_string(),
                detail: Some("the server ran the statement; Sluice withheld its result because it could not tell which columns to mask"),
                hint: Some("retry later, or raise the role's connection limit (Sluice needs SLUICE_CATALOG_SESSIONS more, 2 by default)"),
            }
            .encode(&mut self.out);
        }
        self.suppress = true;
        self.result.refused = true;
        if let Some(Expect::Simple(_)) = self.queue.front() {
            let p = self.simple.get_or_insert(SimpleProgress {
                index: 0,
                rows: 0,
                masked: 0,
                error: None,
            });
            p.error.get_or_insert(e.code().to_string());
        }
    }

    /// A RowDescription whose columns could not be resolved: withheld, and
    /// the result (or the described statement or portal) gets a mask that
    /// withholds every value, should anything of it be read later.
    fn row_description_withheld(&mut self, is_describe: bool) -> Result<(), SessionError> {
        let opaque = Some(Arc::new(RowMask::opaque()));
        if is_describe {
            if let Some(Expect::Describe {
                portal, statement, ..
            }) = self.pop()
            {
                if let Some(p) = portal {
                    self.portal_masks.insert(p, opaque.clone());
                }
                if let Some(s) = statement {
                    self.statement_masks.insert(s, opaque);
                }
            }
        } else {
            self.result.mask = opaque;
            self.result.described = true;
        }
        Ok(())
    }

    /// The mask of a result with these columns, or `None` when rows pass
    /// untouched; `Err` when no catalog session could be had to resolve them.
    async fn row_mask(
        &self,
        stmt: Option<&StatementRef>,
        columns: &[row_description::Column],
    ) -> Result<Option<Arc<RowMask>>, CatalogError> {
        let (origins, views) = if self.masking.has_column_rules() {
            let keys: Vec<(u32, i16)> = columns.iter().map(|c| (c.table_oid, c.attnum)).collect();
            let statement = stmt.and_then(|s| s.decided.statement(s.index));
            let mut catalog = self.catalog.lock().await;
            let looked_up = match catalog.resolve(&keys).await {
                Ok(origins) => {
                    let named: Vec<(&str, &str)> = origins
                        .iter()
                        .flatten()
                        .map(|o| (o.schema.as_str(), o.table.as_str()))
                        .collect();
                    let views = catalog
                        .extended_matcher(statement, &named, self.masking.column_matcher())
                        .await;
                    views.map(|v| (origins, v))
                }
                Err(e) => Err(e),
            };
            match looked_up {
                Ok((origins, views)) => (Some(origins), views),
                Err(e @ CatalogError::Unavailable(_)) => return Err(e),
                Err(e) => {
                    tracing::warn!(connection = %self.ctx.name, error = %e, "catalog lookup failed: masking every column of the result");
                    (None, None)
                }
            }
        } else {
            (Some(vec![None; columns.len()]), None)
        };
        let mask = self.masking.row_mask(
            stmt.map(|s| (&*s.decided, s.index)),
            columns,
            origins.as_deref(),
            views.as_ref(),
        );
        Ok((!mask.is_noop()).then(|| Arc::new(mask)))
    }

    /// Drops a held answer past [`MAX_HELD_BYTES`] (the write will be rolled back).
    fn bound_hold(&mut self) {
        if let Some(hold) = self.hold.as_mut()
            && self.out.len() - hold.start > MAX_HELD_BYTES
        {
            self.out.truncate(hold.start);
            hold.overflow = true;
        }
    }

    /// An answer to the sidecar's own COMMIT, RELEASE or ROLLBACK: never
    /// forwarded; an error is kept (scrubbed) for the client loop.
    async fn internal_answer(&mut self, frame: Frame) -> Result<(), SessionError> {
        match frame.tag {
            backend::ERROR_RESPONSE => {
                let at = self.out.len();
                self.scrubbed(&frame, backend::ERROR_RESPONSE).await;
                let error = self.out.split_off(at).freeze();
                if let Ok(mut slot) = self.answered.internal_error.lock() {
                    slot.get_or_insert(error);
                }
            }
            backend::READY_FOR_QUERY => {
                self.status = ready_for_query::status(frame.body());
                self.answered.status.store(self.status, Ordering::Release);
                if self.status == ready_for_query::IDLE {
                    self.ran.clear();
                    self.ran_overflow = false;
                }
                self.pop();
            }
            _ => {}
        }
        Ok(())
    }

    async fn error_response(&mut self, frame: Frame) -> Result<(), SessionError> {
        let code = self.scrubbed(&frame, backend::ERROR_RESPONSE).await;
        self.result = ResultState::default();
        self.copy_mask = None;
        self.parameters_seen = false;
        match self.queue.front() {
            Some(Expect::Simple(_)) => {
                let p = self.simple.get_or_insert(SimpleProgress {
                    index: 0,
                    rows: 0,
                    masked: 0,
                    error: None,
                });
                p.error.get_or_insert(code);
            }
            Some(Expect::Sync) | None => {}
            Some(_) => {
                // Extended protocol: this message failed, and the server
                // skips every message until Sync (see [`ServerLoop::settle`]).
                if let Some(Expect::Execute(e)) = self.pop() {
                    self.execute_result(&e, 0, 0, Some(code));
                }
                self.skipping = true;
            }
        }
        Ok(())
    }

    async fn notice(&mut self, frame: Frame) {
        self.scrubbed(&frame, backend::NOTICE_RESPONSE).await;
    }

    /// Forwards an ErrorResponse or NoticeResponse, scrubbed when masking
    /// applies (every field but the SQLSTATE and positions when the
    /// statement may read a masked column: see [`ServerLoop::uncertain`]);
    /// returns its SQLSTATE.
    async fn scrubbed(&mut self, frame: &Frame, tag: u8) -> String {
        let decoded = error_response::decode(frame.body());
        let code = decoded
            .as_ref()
            .ok()
            .and_then(|f| error_response::field(f, b'C'))
            .unwrap_or("")
            .to_string();
        if self.suppress {
            return code;
        }
        if !self.masking.active() {
            self.forward(frame);
            return code;
        }
        let Ok(mut fields) = decoded else {
            // Not readable, so not scrubbable: replaced.
            let mut fields = vec![
                error_response::Field {
                    code: b'S',
                    value: "ERROR".into(),
                },
                error_response::Field {
                    code: b'C',
                    value: error_response::INTERNAL_ERROR.into(),
                },
            ];
            error_response::scrub_all(&mut fields);
            error_response::encode_fields(&mut self.out, tag, &fields);
            return code;
        };
        if self.uncertain().await {
            error_response::scrub_all(&mut fields);
        } else {
            let masking = self.masking.clone();
            error_response::scrub(&mut fields, &|t| masking.detect(t));
        }
        error_response::encode_fields(&mut self.out, tag, &fields);
        code
    }

    /// A NotificationResponse: its payload (and channel name) pass the
    /// detectors; while the statement or transaction at hand may read a
    /// masked column the payload is replaced (`pg_notify('c', ssn)`).
    async fn notification(&mut self, frame: &Frame) -> Result<(), SessionError> {
        if !self.masking.active() {
            self.forward(frame);
            return Ok(());
        }
        let body = frame.body();
        let (pid, rest) = body.split_at(body.len().min(4));
        let mut parts = rest.split(|b| *b == 0);
        let channel = String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
        let payload = String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
        let whole = self.uncertain().await;
        let channel = self.masking.detect(&channel).unwrap_or(channel);
        let payload = if whole {
            error_response::HIDDEN.to_string()
        } else {
            self.masking.detect(&payload).unwrap_or(payload)
        };
        let at = super::messages::begin(&mut self.out, backend::NOTIFICATION_RESPONSE);
        self.out.extend_from_slice(pid);
        super::messages::put_cstr(&mut self.out, &channel);
        super::messages::put_cstr(&mut self.out, &payload);
        super::messages::finish(&mut self.out, at);
        Ok(())
    }

    /// A ParameterStatus of a setting Sluice does not track, while masking
    /// applies: a free-text setting (`application_name`, `search_path`…)
    /// changed while the statement or transaction at hand may read a masked
    /// column is replaced (`set_config('application_name', ssn, false)`);
    /// every value passes the detectors.
    async fn scrubbed_parameter(&mut self, name: &str, value: &str) {
        let free_text = !matches!(
            name,
            "server_version"
                | "server_encoding"
                | "client_encoding"
                | "standard_conforming_strings"
                | "integer_datetimes"
                | "is_superuser"
                | "in_hot_standby"
                | "default_transaction_read_only"
                | "scram_iterations"
                | "DateStyle"
                | "IntervalStyle"
        );
        let value = if free_text && self.uncertain().await {
            error_response::HIDDEN.to_string()
        } else {
            self.masking
                .detect(value)
                .unwrap_or_else(|| value.to_string())
        };
        let at = super::messages::begin(&mut self.out, backend::PARAMETER_STATUS);
        super::messages::put_cstr(&mut self.out, name);
        super::messages::put_cstr(&mut self.out, &value);
        super::messages::finish(&mut self.out, at);
    }

    /// Whether the answer at hand may carry a value of a masked column: the
    /// statement whose answer is due (or, for what arrives at Sync or at the
    /// end of a transaction, any statement run in it) reads a table with
    /// masked columns (directly or through a view), calls a function (whose
    /// body Sluice does not see), runs SQL `EXECUTE`/`FETCH`/`CALL`, or is
    /// unknown. Only asked when an error, notice, notification or
    /// parameter status arrives, so plain results pay nothing.
    async fn uncertain(&mut self) -> bool {
        if !self.masking.has_column_rules() {
            return false;
        }
        let mut statements: Vec<StatementRef> = Vec::new();
        let mut transaction_end = false;
        match self.queue.front() {
            Some(Expect::Simple(s)) => {
                let index = self.simple.as_ref().map_or(0, |p| p.index);
                if let Some(stmt) = s.decided.statement(index)
                    && matches!(
                        stmt.kind,
                        sluice_crds::StatementKind::Commit | sluice_crds::StatementKind::Rollback
                    )
                {
                    transaction_end = true;
                }
                statements.push(StatementRef {
                    decided: s.decided.clone(),
                    index,
                    prepared: None,
                });
            }
            Some(Expect::Execute(e)) if e.stmt.is_some() => {
                statements.extend(e.stmt.iter().cloned());
            }
            Some(Expect::Describe { stmt: Some(s), .. }) => statements.push(s.clone()),
            // Parse, Bind, Close read no data.
            Some(Expect::ParseComplete | Expect::BindComplete(_) | Expect::CloseComplete) => {
                return false;
            }
            Some(Expect::Sync) => transaction_end = true,
            _ => return true,
        }
        if transaction_end {
            if self.ran_overflow {
                return true;
            }
            statements.extend(self.ran.iter().cloned());
        }
        for s in &statements {
            if self.statement_uncertain(s).await {
                return true;
            }
        }
        false
    }

    async fn statement_uncertain(&mut self, s: &StatementRef) -> bool {
        use sluice_crds::StatementKind as K;
        let Some(stmt) = s.decided.statement(s.index) else {
            return true;
        };
        if stmt.execute_name.is_some()
            || !stmt.functions.is_empty()
            || stmt
                .kinds
                .iter()
                .any(|k| matches!(k, K::Other | K::Call | K::Do))
        {
            return true;
        }
        if stmt.tables.is_empty() {
            return false;
        }
        let key = (Arc::as_ptr(&s.decided) as usize, s.index);
        if let Some((_, known)) = self.uncertain_cache.get(&key) {
            return *known;
        }
        let known = {
            let mut catalog = self.catalog.lock().await;
            match catalog
                .extended_matcher(Some(stmt), &[], self.masking.column_matcher())
                .await
            {
                Ok(extended) => {
                    let m = extended
                        .as_ref()
                        .unwrap_or_else(|| self.masking.column_matcher());
                    stmt.tables.iter().any(|t| {
                        let (schema, table) = match t.rsplit_once('.') {
                            Some((s, t)) => (Some(s), t),
                            None => (None, t.as_str()),
                        };
                        m.table_may_have_masked(schema, table).is_some()
                    })
                }
                Err(_) => true,
            }
        };
        if self.uncertain_cache.len() >= MASK_CACHE_ENTRIES {
            self.uncertain_cache.clear();
        }
        // The entry holds the decision, so its address is not reused.
        self.uncertain_cache.insert(key, (s.decided.clone(), known));
        known
    }

    /// A statement ran: kept until the transaction ends, for what arrives
    /// at its end (see [`ServerLoop::uncertain`]).
    fn ran(&mut self, s: StatementRef) {
        if !self.masking.has_column_rules() {
            return;
        }
        if self.ran.len() >= MAX_RAN {
            self.ran_overflow = true;
        } else {
            self.ran.push(s);
        }
    }
}

/// How many statements of one transaction the server loop keeps for
/// [`ServerLoop::uncertain`]; beyond, its end is treated as uncertain.
const MAX_RAN: usize = 256;

/// What a decided text may do to the settings Sluice models: the strongest
/// effect of its statements (see [`settings::effect`]).
fn statement_effect(decided: &Decided, text: &str) -> Effect {
    if decided.is_empty() {
        return settings::effect(None, text);
    }
    (0..decided.len())
        .map(|i| settings::effect(decided.statement(i), text))
        .max()
        .unwrap_or(Effect::None)
}

/// The refusal of a settings change that does not come alone.
fn alone_refusal() -> Refusal {
    Refusal {
        code: error_response::FEATURE_NOT_SUPPORTED,
        ..Refusal::plain(
            "statement refused by Sluice: a statement that may change standard_conforming_strings or client_encoding (SET/RESET of them or of ALL, DISCARD, set_config, or text Sluice cannot parse) must be sent alone: in its own query string, or last in its extended-protocol group, followed by Sync; Sluice then reads what follows under the settings the server reports",
        )
    }
}

/// An ErrorResponse with its position moved back by `shift` characters
/// (the sidecar's own `BEGIN;` in front of the client's query string), or
/// `None` when it has no position to move.
fn shift_position(frame: &Frame, shift: u32) -> Option<Frame> {
    if shift == 0 {
        return None;
    }
    let mut fields = error_response::decode(frame.body()).ok()?;
    let position = fields.iter_mut().find(|f| f.code == b'P')?;
    let at: u32 = position.value.parse().ok()?;
    position.value = at.saturating_sub(shift).max(1).to_string();
    let mut out = BytesMut::new();
    error_response::encode_fields(&mut out, backend::ERROR_RESPONSE, &fields);
    Some(Frame::new(backend::ERROR_RESPONSE, out.freeze()))
}

/// Name and value of a ParameterStatus body.
fn parameter_status(body: &[u8]) -> Option<(&str, &str)> {
    let mut parts = body.split(|b| *b == 0);
    let name = std::str::from_utf8(parts.next()?).ok()?;
    let value = std::str::from_utf8(parts.next()?).ok()?;
    Some((name, value))
}

/// SQLSTATE of a statement the client cancelled.
const QUERY_CANCELED: &str = "57014";

/// SQLSTATE of a statement refused in a read-only session (as PostgreSQL's
/// own refusal of a write): read_only_sql_transaction.
const READ_ONLY_SQL_TRANSACTION: &str = "25006";

/// Which rule asked for the approval, for the client.
fn approval_detail(decided: &Decided) -> String {
    let d = decided.decision();
    format!(
        "rule {:?} of AccessPolicy {:?} requires a human approval",
        d.enforced_rule
            .as_deref()
            .or(d.rule.as_deref())
            .unwrap_or("-"),
        d.enforced_policy
            .as_deref()
            .or(d.policy.as_deref())
            .unwrap_or("-")
    )
}

/// A statement refused because a catalog lookup it needs failed: 53300 when
/// no catalog session could be had, naming the cause.
fn catalog_refusal(what: &str, e: &CatalogError) -> Refusal {
    let mut refusal = Refusal::plain(&format!("{what}: {e}"));
    if let CatalogError::Unavailable(_) = e {
        refusal.code = e.code();
    }
    refusal
}
