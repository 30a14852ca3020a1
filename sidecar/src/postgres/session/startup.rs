//! A session's start and end: the startup packet, the binding (an identity
//! no policy binds never gets a session), the upstream session, and the
//! FATAL error that tells the client why a session ended.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;
use tracing::Instrument;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::Mutex;

use super::{
    Answered, ClientLoop, ConnectionContext, Map, READ_ONLY_SQL_TRANSACTION, ResultState,
    ServerLoop, SessionError, log_unrecorded,
};
use crate::audit::SessionInfo;
use crate::enforcement::Enforcer;
use crate::postgres::cancel::CancelTarget;
use crate::postgres::catalog::Catalog;
use crate::postgres::framing::{FrameReader, FramingError};
use crate::postgres::messages::error_response::{self, INVALID_AUTHORIZATION, Report};
use crate::postgres::messages::{backend, ready_for_query, startup};
use crate::postgres::{rows_affected, settings, upstream};

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

/// SQLSTATE of a session ended by the sidecar's shutdown: admin_shutdown,
/// as PostgreSQL ends its sessions on a fast shutdown.
const ADMIN_SHUTDOWN: &str = "57P01";

/// SQLSTATE of a session whose message does not fit in the buffer budget.
const OUT_OF_MEMORY: &str = "53200";

/// Writes a FATAL error, the last message of a session.
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

/// A session from its startup packet to its end.
pub(super) async fn run<R, W>(
    ctx: &Arc<ConnectionContext>,
    client: &mut FrameReader<R>,
    writer: &mut W,
    session: SessionInfo,
    span: &tracing::Span,
) -> Result<(), SessionError>
where
    R: AsyncRead + Unpin + Send,
    W: AsyncWrite + Unpin + Send,
{
    // The start and the end inside the session's span; the loops under it
    // (see `serve`).
    let opened = open(ctx, client, writer, &session)
        .instrument(span.clone())
        .await?;
    let Some((opened, key, started)) = opened else {
        return Ok(());
    };
    let outcome = converse(ctx, &session, opened, client, writer, span).await;
    async {
        farewell(ctx, writer, &outcome).await;
        ctx.cancel.remove(key);
        ctx.metrics.session_ended();
        let error = outcome.as_ref().err().map(|e| e.to_string());
        log_unrecorded(
            span,
            ctx.audit
                .session_end(&session, started.elapsed(), error.as_deref()),
            "sessionEnd",
        );
    }
    .instrument(span.clone())
    .await;
    outcome
}

/// A session's start: the startup packets, the identity's binding, the
/// upstream session opened and the client told; `None` when the connection
/// ends without a session. With its cancel key and when it started.
async fn open<R, W>(
    ctx: &Arc<ConnectionContext>,
    client: &mut FrameReader<R>,
    writer: &mut W,
    session: &SessionInfo,
) -> Result<Option<(Opened, (i32, i32), Instant)>, SessionError>
where
    R: AsyncRead + Unpin + Send,
    W: AsyncWrite + Unpin + Send,
{
    let Some(params) = handshake(ctx, client, writer).await? else {
        return Ok(None);
    };
    // An identity no policy binds never gets a session.
    let Some(enforcer) = ctx.binding.enforcer() else {
        let message = ctx.binding.not_bound_message(&ctx.name);
        let hint = Some(ctx.binding.not_bound_hint());
        return Err(
            refuse_session(ctx, session, writer, INVALID_AUTHORIZATION, message, hint).await,
        );
    };
    let read_only: Option<Arc<str>> = enforcer.masking().read_only().map(Arc::from);
    let up = open_upstream(ctx, session, writer, params, read_only.as_deref()).await?;
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

    let opened = Opened {
        enforcer,
        up,
        read_only,
        cancel_hold,
    };
    Ok(Some((opened, key, started)))
}

/// The startup packets up to the client's StartupMessage: its parameters
/// Sluice passes on, or `None` when the connection ends without a session
/// (a CancelRequest, a protocol Sluice does not serve, the client gone).
async fn handshake<R, W>(
    ctx: &ConnectionContext,
    client: &mut FrameReader<R>,
    writer: &mut W,
) -> Result<Option<Vec<(String, String)>>, SessionError>
where
    R: AsyncRead + Unpin + Send,
    W: AsyncWrite + Unpin + Send,
{
    let params = loop {
        // A malformed startup packet gets FATAL 08P01 before the close, as
        // PostgreSQL answers it.
        let body = match client.startup_packet().await {
            Ok(Some(body)) => body,
            Ok(None) => return Ok(None),
            Err(e) => return Err(protocol_violation(ctx, writer, e.into()).await),
        };
        let packet = match startup::StartupPacket::decode(&body) {
            Ok(p) => p,
            Err(e) => return Err(protocol_violation(ctx, writer, e.into()).await),
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
                cancel(ctx, (process_id, secret_key)).await;
                return Ok(None);
            }
            startup::StartupPacket::Startup { version, params } => {
                if version >> 16 != 3 {
                    ctx.metrics
                        .session_refused(error_response::FEATURE_NOT_SUPPORTED);
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
                    return Ok(None);
                }
                if params.iter().any(|(k, _)| k == "replication") {
                    ctx.metrics
                        .session_refused(error_response::FEATURE_NOT_SUPPORTED);
                    fatal(
                        writer,
                        error_response::FEATURE_NOT_SUPPORTED,
                        "replication connections are not allowed through Sluice",
                        None,
                    )
                    .await?;
                    return Ok(None);
                }
                if version & 0xffff != 0 {
                    negotiate(writer, &params).await?;
                }
                break params;
            }
        }
    };
    Ok(Some(
        params
            .into_iter()
            .filter(|(k, _)| PASSED_PARAMETERS.contains(&k.as_str()))
            .collect(),
    ))
}

/// A malformed startup packet: FATAL 08P01 (written if the client still
/// reads), then the session ends with `e`.
async fn protocol_violation<W: AsyncWrite + Unpin>(
    ctx: &ConnectionContext,
    writer: &mut W,
    e: SessionError,
) -> SessionError {
    ctx.metrics
        .session_refused(error_response::PROTOCOL_VIOLATION);
    let _ = fatal(
        writer,
        error_response::PROTOCOL_VIOLATION,
        &e.to_string(),
        None,
    )
    .await;
    e
}

/// A CancelRequest: passed to the upstream of the session it names (whose
/// statement held for approval is given up too); an unknown key is ignored.
async fn cancel(ctx: &ConnectionContext, key: (i32, i32)) {
    if let Some(target) = ctx.cancel.lookup(key) {
        // A statement held for approval is cancelled here; the
        // upstream is idle meanwhile.
        target.held.notify_waiters();
        if let Err(e) = upstream::cancel(&target.upstream, target.backend_key).await {
            tracing::warn!(error = %e, "forwarding a cancel request failed");
        }
    } else {
        tracing::debug!("cancel request with an unknown key ignored");
    }
}

/// Opens the session's upstream session with the client's parameters and
/// puts the session's start on record; under `spec.readOnly` the server
/// makes it read-only from its start, and must say so.
async fn open_upstream<W: AsyncWrite + Unpin>(
    ctx: &ConnectionContext,
    session: &SessionInfo,
    writer: &mut W,
    mut client_params: Vec<(String, String)>,
    read_only: Option<&str>,
) -> Result<upstream::UpstreamSession, SessionError> {
    // spec.readOnly: the server makes the session read-only from its start.
    // In the startup packet (not a SET sent later) it is also the value
    // `RESET` and `DISCARD ALL` bring back, and it is in force before any
    // statement; the client's own `options` never reach the server.
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
            let code = error_response::CONNECTION_FAILURE;
            return Err(refuse_session(ctx, session, writer, code, message, None).await);
        }
    };
    if let Err(e) = ctx.audit.session_start(session, up.tls, up.channel_binding) {
        let message = format!("Sluice cannot write the audit log, so no session is opened: {e}");
        ctx.metrics.session_refused(error_response::INTERNAL_ERROR);
        fatal(writer, error_response::INTERNAL_ERROR, &message, None).await?;
        return Err(SessionError::Refused(message));
    }
    if let Some(policy) = read_only {
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
            let code = READ_ONLY_SQL_TRANSACTION;
            return Err(refuse_session(ctx, session, writer, code, message, None).await);
        }
    }
    Ok(up)
}

/// Refuses a session before it opens: on record, counted, and the client
/// told why (FATAL).
async fn refuse_session<W: AsyncWrite + Unpin>(
    ctx: &ConnectionContext,
    session: &SessionInfo,
    writer: &mut W,
    code: &str,
    message: String,
    hint: Option<&str>,
) -> SessionError {
    log_unrecorded(
        &tracing::Span::current(),
        ctx.audit.session_refused(session, &message),
        "sessionRefused",
    );
    ctx.metrics.session_refused(code);
    if let Err(e) = fatal(writer, code, &message, hint).await {
        return e.into();
    }
    SessionError::Refused(message)
}

/// What an opened session holds when its two loops start.
struct Opened {
    enforcer: Enforcer,
    up: upstream::UpstreamSession,
    /// The policy that made the session read-only at its start.
    read_only: Option<Arc<str>>,
    /// Woken by the client's CancelRequest (see [`ClientLoop`]).
    cancel_hold: Arc<tokio::sync::Notify>,
}

/// Runs the client loop and the server loop side by side until either ends
/// (see the module doc); the results still unrecorded are recorded.
async fn converse<R, W>(
    ctx: &Arc<ConnectionContext>,
    session: &SessionInfo,
    opened: Opened,
    client: &mut FrameReader<R>,
    writer: &mut W,
    span: &tracing::Span,
) -> Result<(), SessionError>
where
    R: AsyncRead + Unpin + Send,
    W: AsyncWrite + Unpin + Send,
{
    let Opened {
        enforcer,
        up,
        read_only,
        cancel_hold,
    } = opened;
    let up_pid = up.backend_key.0;
    let masking = enforcer.masking();
    let catalog = Catalog::new(ctx.catalog.clone());
    let catalog_revision = catalog.revision();
    let catalog = Arc::new(Mutex::new(catalog));
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
        answered
            .modelled
            .store(settings.unmodelled().is_none(), Ordering::Release);
    }
    let tx = super::handoff::Handoff::default();
    let rx = tx.clone();
    let mut client_loop = ClientLoop {
        ctx: ctx.clone(),
        session: session.clone(),
        span: span.clone(),
        enforcer,
        upstream: up.writer,
        out: BytesMut::with_capacity(8192),
        expect: tx,
        statements: Map::default(),
        portals: Default::default(),
        sql_prepared: Map::default(),
        sql_prepared_overflow: false,
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
        catalog_seen: ctx.catalog.changes(),
        catalog_revision,
        plain: None,
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
        span: span.clone(),
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
        portal_masks: Default::default(),
        statement_masks: Map::default(),
        mask_cache: Map::default(),
        catalog,
        masking,
        simple: None,
        copy_mask: None,
        results: Vec::new(),
        recorder: Default::default(),
        answered,
        ran: Vec::new(),
        ran_overflow: false,
        uncertain_cache: Map::default(),
        read_only,
        backend_pid: up_pid,
        hold: None,
    };
    let outcome = tokio::select! {
        r = client_loop.run(client) => r,
        r = server_loop.run() => r,
    };
    server_loop.record_results();
    server_loop.record_unsettled();
    outcome
}

/// Tells the client why its session ends, when it ends abnormally (as
/// PostgreSQL would: a FATAL error with its SQLSTATE).
async fn farewell<W: AsyncWrite + Unpin>(
    ctx: &ConnectionContext,
    writer: &mut W,
    outcome: &Result<(), SessionError>,
) {
    let Err(e) = outcome else {
        return;
    };
    let (code, message, hint) = match e {
        // As PostgreSQL when it cannot allocate: this session ends, the
        // others go on.
        SessionError::Framing(FramingError::OverBudget { .. }) => {
            (OUT_OF_MEMORY, e.to_string(), None)
        }
        // A bad message cannot be skipped; answers Sluice cannot match
        // cannot be guessed.
        SessionError::Message(_)
        | SessionError::Framing(_)
        | SessionError::UnexpectedMessage(_)
        | SessionError::Desync(_) => (error_response::PROTOCOL_VIOLATION, e.to_string(), None),
        SessionError::ReadOnly(_) => (READ_ONLY_SQL_TRANSACTION, e.to_string(), None),
        SessionError::ShuttingDown => (
            ADMIN_SHUTDOWN,
            "Sluice is shutting down: the session is closed (its statements were answered)".into(),
            Some("reconnect: the restarted sidecar (or another replica) serves the new session"),
        ),
        SessionError::UpstreamClosed => (
            error_response::CONNECTION_FAILURE,
            format!(
                "the upstream server of Connection {:?} closed the session",
                ctx.name
            ),
            None,
        ),
        // Written already, or nothing to write to.
        SessionError::Refused(_) | SessionError::Io(_) => return,
    };
    // The sidecar closed the session: worth the operator's attention.
    if matches!(
        e,
        SessionError::Framing(FramingError::OverBudget { .. })
            | SessionError::Desync(_)
            | SessionError::ReadOnly(_)
    ) {
        tracing::warn!(error = %e, "session closed");
    }
    let _ = fatal(writer, code, &message, hint).await;
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
    let at = crate::postgres::messages::begin(&mut out, backend::NEGOTIATE_PROTOCOL_VERSION);
    out.put_i32(startup::PROTOCOL_3_0);
    out.put_i32(unknown.len() as i32);
    for k in unknown {
        crate::postgres::messages::put_cstr(&mut out, k);
    }
    crate::postgres::messages::finish(&mut out, at);
    writer.write_all(&out).await
}

/// Name and value of a ParameterStatus body.
pub(super) fn parameter_status(body: &[u8]) -> Option<(&str, &str)> {
    let mut parts = body.split(|b| *b == 0);
    let name = std::str::from_utf8(parts.next()?).ok()?;
    let value = std::str::from_utf8(parts.next()?).ok()?;
    Some((name, value))
}
