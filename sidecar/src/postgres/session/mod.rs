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
//!
//! This module holds a session's state; each concern is an `impl` block in
//! its own file:
//! - `startup`: the startup packet, the binding, the upstream session, the end;
//! - `expect`: what the upstream will answer, in order ([`Expect`]);
//! - `handoff`: the expectations the client loop hands the server loop;
//! - `client`: the client loop's read loop and the checks every statement passes;
//! - `simple`: a simple Query, decided and forwarded;
//! - `extended`: an extended-protocol group, decided and forwarded at Sync or Flush;
//! - `hold`: a statement that needs approval, asked, held and settled;
//! - `prepared`: named statements kept as the server keeps them;
//! - `portals`: portals by name, the unnamed one in a slot of its own;
//! - `guard`: a write under `maxRowsAffected`, held and committed or rolled back;
//! - `server`: the server loop's read loop, the answer queue and its checks;
//! - `results`: rows, `maxRows`, command completion and the result records;
//! - `masks`: the mask of a result's columns;
//! - `scrub`: errors, notices, notifications and settings, scrubbed when masking applies;
//! - `launder`: writes of masked values read through views and functions, refused.

mod catalog_changes;
mod client;
mod expect;
mod extended;
mod guard;
mod handoff;
mod hold;
mod launder;
mod masks;
mod portals;
mod prepared;
mod redecide;
mod relations;
mod results;
mod scrub;
mod server;
mod simple;
mod startup;

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};

use bytes::{Bytes, BytesMut};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::Mutex;

use super::cancel::CancelRegistry;
use super::catalog::{Catalog, CatalogPool};
use super::framing::{Frame, FrameReader, FramingError, Peer};
use super::masking::{CopyMask, RowMask};
use super::messages;
use super::messages::bind::FormatCodes;
use super::rows_affected::{Count, Outcome};
use super::settings::ServerSettings;
use super::upstream::{ReadHalf, UpstreamConfig, WriteHalf};
use crate::approval::Approvals;
use crate::audit::{AuditError, AuditLog, ResultRecord, SessionInfo};
use crate::enforcement::{Binding, Decided, Enforcer, Masking};
use crate::metrics::Metrics;
use expect::{DescribedColumns, Expect, StatementRef};
use startup::run;

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
    /// Whether Sluice models `settings` as they are (see
    /// [`ServerSettings::unmodelled`]), written with them under their lock:
    /// every statement reads this, not the lock. False until known.
    modelled: AtomicBool,
    /// Transaction status of the server's last ReadyForQuery.
    status: AtomicU8,
    /// A write's answer held for `maxRowsAffected`, once it is complete.
    held: std::sync::Mutex<Option<HeldAnswer>>,
    /// The error the server answered the sidecar's own COMMIT, RELEASE or
    /// ROLLBACK with (scrubbed like any error).
    internal_error: std::sync::Mutex<Option<Bytes>>,
    /// The first column of the last row the sidecar's own query was
    /// answered with (`None` inside for SQL NULL): the rows changed so far
    /// in the transaction (see [`ClientLoop::rows_changed`]).
    internal_value: std::sync::Mutex<Option<Option<String>>>,
    /// The results of a write held for `maxRowsAffected`, recorded once the
    /// write is committed or rolled back (see [`ClientLoop::finish_guard`]):
    /// never as if they happened before that is known. Left here, the
    /// session's end records them (see [`startup`]).
    held_results: std::sync::Mutex<Vec<Ended>>,
    /// Named statements whose Parse the server failed or skipped, as the
    /// client loop's entries name them: it forgets those entries before
    /// its next group (see [`ClientLoop::forget_failed_parses`]). Bounded
    /// by the expectations outstanding.
    failed_parses: std::sync::Mutex<Vec<Arc<str>>>,
    /// Whether `failed_parses` may hold names: read by every group, so the
    /// lock is taken only when there is something to take.
    any_failed_parses: AtomicBool,
}

/// A result that ended, with the decision it belongs to, not yet recorded.
type Ended = (Arc<Decided>, ResultRecord);

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

    fn take_internal_value(&self) -> Option<Option<String>> {
        self.internal_value.lock().ok().and_then(|mut v| v.take())
    }

    fn take_internal_error(&self) -> Option<Bytes> {
        self.internal_error.lock().ok().and_then(|mut e| e.take())
    }

    fn parse_failed(&self, name: Arc<str>) {
        match self.failed_parses.lock() {
            Ok(mut f) => f.push(name),
            Err(p) => p.into_inner().push(name),
        }
        self.any_failed_parses.store(true, Ordering::Release);
    }

    fn take_failed_parses(&self) -> Vec<Arc<str>> {
        if !self.any_failed_parses.swap(false, Ordering::AcqRel) {
            return Vec::new();
        }
        match self.failed_parses.lock() {
            Ok(mut f) => std::mem::take(&mut *f),
            Err(p) => std::mem::take(&mut *p.into_inner()),
        }
    }

    fn take_held_results(&self) -> Vec<Ended> {
        match self.held_results.lock() {
            Ok(mut r) => std::mem::take(&mut *r),
            Err(p) => std::mem::take(&mut *p.into_inner()),
        }
    }

    /// Records a setting the server reported (see [`ServerSettings::update`]);
    /// `true` when Sluice modelled the settings before and does not now.
    fn report_setting(&self, name: &str, value: &str) -> bool {
        match self.settings.lock() {
            Ok(mut settings) => {
                let before = settings.unmodelled().is_none();
                settings.update(name, value);
                let now = settings.unmodelled().is_none();
                self.modelled.store(now, Ordering::Release);
                before && !now
            }
            Err(_) => {
                self.modelled.store(false, Ordering::Release);
                true
            }
        }
    }

    /// Why statements cannot be decided under the settings the server
    /// reported (see [`ServerSettings::unmodelled`]), as every statement
    /// asks: `None` at once while they are modelled.
    fn unmodelled(&self) -> Option<String> {
        if self.modelled.load(Ordering::Acquire) {
            return None;
        }
        match self.settings.lock() {
            Ok(s) => s.unmodelled(),
            // A poisoned lock: a panic elsewhere; refuse everything.
            Err(_) => ServerSettings {
                standard_conforming_strings: "unknown".into(),
                client_encoding: "unknown".into(),
            }
            .unmodelled(),
        }
    }
}

/// The session's maps (statements, portals, masks) and their hasher:
/// foldhash, seeded at random per process like std's, and several times
/// faster than std's SipHash on the short keys looked up for every
/// statement (#22: the hashing was about 2 % of a statement's instructions).
type Map<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

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

/// Serves one accepted client connection to its end, under the session's
/// span: every log line of the session carries its Connection, identity,
/// session id (as in its audit records) and client address. The span is
/// entered while the session starts and ends; the two loops that carry its
/// statements are not polled inside it (entering a span on every poll cost
/// about 1 % of the instructions and 6 % of the instruction-cache misses
/// of a select-only statement at 8 clients): their log lines name it as
/// their parent instead (`ClientLoop::span`, `ServerLoop::span`).
pub async fn serve(ctx: Arc<ConnectionContext>, socket: TcpStream, peer: SocketAddr) {
    let session = SessionInfo::new(&ctx.binding, &ctx.name, peer);
    // At ERROR level so that it is enabled whenever any of the session's
    // events is: a span a filter disables takes its fields along.
    let span = tracing::error_span!(
        "session",
        connection = %ctx.name,
        identity = %session.subject,
        session = %session.id,
        %peer,
    );
    serve_session(ctx, socket, session, span).await;
}

async fn serve_session(
    ctx: Arc<ConnectionContext>,
    socket: TcpStream,
    session: SessionInfo,
    span: tracing::Span,
) {
    let _ = socket.set_nodelay(true);
    let (r, w) = socket.into_split();
    let mut client = FrameReader::new(r, Peer::Client, ctx.max_message_size)
        .with_budget(ctx.buffer_budget.clone());
    let mut writer = w;
    if let Err(e) = run(&ctx, &mut client, &mut writer, session, &span).await {
        tracing::debug!(parent: &span, error = %e, "session ended with an error");
    }
    let _ = writer.shutdown().await;
}

/// Logs an audit record that could not be written, never dropped in
/// silence. What the session does about it is the caller's: a statement
/// whose write-ahead record fails does not run; a refusal is sent whether
/// or not its record was written; the audit sink reports its own outage.
fn log_unrecorded(span: &tracing::Span, recorded: Result<(), AuditError>, record: &'static str) {
    if let Err(e) = recorded {
        tracing::error!(parent: span, error = %e, record, "writing an audit record failed");
    }
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
    Message(#[from] crate::postgres::messages::MessageError),
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

struct PreparedStatement {
    /// Its name (the map's key), shared with what each Bind of it tells
    /// the server loop.
    name: Arc<str>,
    stmt: StatementRef,
    /// The masking generation the sidecar described it under (`None`:
    /// not described, masking was off).
    described: Option<u64>,
    /// Its columns once described, while the session is recorded.
    columns: Option<DescribedColumns>,
}

struct Portal {
    stmt: Option<StatementRef>,
    /// The masking generation it was bound under.
    generation: u64,
    /// Its statement's columns, while the session is recorded.
    columns: Option<DescribedColumns>,
    /// The result formats its Bind asked for.
    formats: FormatCodes,
}

struct ClientLoop {
    ctx: Arc<ConnectionContext>,
    session: SessionInfo,
    /// The session's span, the parent of this loop's log lines (see
    /// [`serve`]).
    span: tracing::Span,
    enforcer: Enforcer,
    upstream: WriteHalf,
    out: BytesMut,
    expect: handoff::Handoff,
    /// Prepared statements as the server knows them (only forwarded Parses).
    statements: Map<String, PreparedStatement>,
    /// Portals as the server knows them.
    portals: portals::Portals<Portal>,
    /// Statements prepared with SQL `PREPARE` under column masking, by name
    /// (see [`ClientLoop::laundering_through`]).
    sql_prepared: Map<String, Vec<StatementRef>>,
    /// More were prepared than [`ClientLoop::sql_prepared`] keeps.
    sql_prepared_overflow: bool,
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
    /// The Connection's catalog changes this session's catalog cache has
    /// seen (see `catalog_changes`).
    catalog_seen: u64,
    /// The session catalog's revision counter (see `Catalog::revision`).
    catalog_revision: Arc<AtomicU64>,
    /// The last decision found to need nothing of the catalog while rules
    /// follow names (its names all known tables, its functions built-ins),
    /// with the catalog revision and enforcer generation it was found
    /// under: the same decision again needs nothing either while both are
    /// unchanged (see `ClientLoop::decide`).
    plain: Option<(Arc<Decided>, u64, u64)>,
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
    /// Rows changed in the transaction before the write, by the server's
    /// own per-transaction statistics (see [`ClientLoop::rows_changed`]);
    /// `None` when the server keeps none.
    changed_before: Option<u64>,
}

/// Row accounting of the result being streamed.
#[derive(Default)]
struct ResultState {
    mask: Option<Arc<RowMask>>,
    /// A RowDescription for this result came (simple protocol).
    described: bool,
    rows: u64,
    masked: u64,
    /// `masked` by masking rule.
    masks: crate::masking::MaskCounts,
    truncated: bool,
    refused: bool,
}

struct ServerLoop<'w, W> {
    ctx: Arc<ConnectionContext>,
    session: SessionInfo,
    /// The session's span, the parent of this loop's log lines (see
    /// [`serve`]).
    span: tracing::Span,
    upstream: FrameReader<ReadHalf>,
    client: &'w mut W,
    out: BytesMut,
    rx: handoff::Handoff,
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
    portal_masks: portals::Portals<Option<Arc<RowMask>>>,
    /// Masks of prepared statements (result formats still text), from the
    /// sidecar's own Describe.
    statement_masks: Map<String, StatementMask>,
    mask_cache: Map<MaskKey, (Arc<Decided>, Option<Arc<RowMask>>)>,
    catalog: Arc<Mutex<Catalog>>,
    masking: Arc<Masking>,
    /// The running simple query: which statement of it is producing results,
    /// its rows and its first error.
    simple: Option<SimpleProgress>,
    copy_mask: Option<Arc<CopyMask>>,
    /// Results ended but not yet recorded (see [`ServerLoop::record_results`]).
    results: Vec<Ended>,
    /// The current result as the client receives it, when the session is recorded.
    recorder: crate::recording::ResultRecorder,
    /// Shared with the client loop.
    answered: Arc<Answered>,
    /// Statements run in the current transaction (see [`ServerLoop::ran`]).
    ran: Vec<StatementRef>,
    ran_overflow: bool,
    /// Statements found to maybe read a masked column (see
    /// [`ServerLoop::statement_uncertain`]: the other answer is never kept).
    uncertain_cache: Map<(usize, usize), Arc<Decided>>,
    /// The policy that made this session read-only (see [`ClientLoop`]).
    read_only: Option<Arc<str>>,
    /// The upstream backend's process ID (its BackendKeyData): whose
    /// notifications are this session's own.
    backend_pid: i32,
    /// A write's answer being held for `maxRowsAffected` (see [`Expect::HoldStart`]).
    hold: Option<Hold>,
}

/// A prepared statement's mask from the sidecar's own Describe (`None`:
/// its rows pass untouched, or it returns none), and the last one made
/// from it for a Bind's result formats: a statement bound again and again
/// in the same formats (every execution of a prepared statement) reuses it.
struct StatementMask {
    mask: Option<Arc<RowMask>>,
    bound: Option<(FormatCodes, Arc<RowMask>)>,
    /// The statement and its described columns when `mask` rests on what
    /// names are now (views, functions: see [`ServerLoop::row_mask`]): it
    /// is planned again at each Bind, never reused from an earlier one.
    recheck: Option<(StatementRef, Vec<messages::row_description::Column>)>,
}

impl StatementMask {
    fn new(mask: Option<Arc<RowMask>>) -> StatementMask {
        StatementMask {
            mask,
            bound: None,
            recheck: None,
        }
    }

    /// The mask planned again (see `recheck`).
    fn replanned(&mut self, mask: Option<Arc<RowMask>>) {
        self.mask = mask;
        self.bound = None;
    }

    /// The mask of a portal bound from the statement in `formats`.
    fn in_formats(&mut self, formats: &FormatCodes) -> Option<Arc<RowMask>> {
        let mask = self.mask.as_ref()?;
        if let Some((f, m)) = &self.bound
            && f == formats
        {
            return Some(m.clone());
        }
        let m = Arc::new(mask.with_formats(formats));
        self.bound = Some((formats.clone(), m.clone()));
        Some(m)
    }
}

/// The answer being held for `maxRowsAffected`: `out[start..]`.
struct Hold {
    start: usize,
    outcomes: Vec<Outcome>,
    error: bool,
    overflow: bool,
    swallow: u32,
    shift: u32,
    /// The results of the write's statements, recorded once it is settled.
    results: Vec<Ended>,
}

#[derive(Default)]
struct SimpleProgress {
    index: usize,
    rows: u64,
    masked: u64,
    masks: crate::masking::MaskCounts,
    error: Option<String>,
}

/// SQLSTATE of a statement refused in a read-only session (as PostgreSQL's
/// own refusal of a write): read_only_sql_transaction.
const READ_ONLY_SQL_TRANSACTION: &str = "25006";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::postgres::masking::ColumnRule;

    fn rule(mask: Option<usize>) -> ColumnRule {
        ColumnRule {
            mask,
            format: 0,
            type_oid: 25,
        }
    }

    #[test]
    fn a_statement_bound_again_in_the_same_formats_reuses_its_mask_and_only_then() {
        let described = RowMask {
            columns: vec![rule(None), rule(Some(0))],
            detectors: false,
            reasons: Vec::new(),
        };
        let mut s = StatementMask::new(Some(Arc::new(described)));
        let formats = |m: &Arc<RowMask>| m.columns.iter().map(|c| c.format).collect::<Vec<_>>();
        let text = s.in_formats(&FormatCodes::All(0)).unwrap();
        let again = s.in_formats(&FormatCodes::All(0)).unwrap();
        assert!(Arc::ptr_eq(&text, &again), "same formats: the same mask");
        assert_eq!(formats(&text), vec![0, 0]);
        let binary = s.in_formats(&FormatCodes::All(1)).unwrap();
        assert_eq!(formats(&binary), vec![1, 1]);
        let mixed = s
            .in_formats(&FormatCodes::PerColumn(vec![0, 1].into()))
            .unwrap();
        assert_eq!(formats(&mixed), vec![0, 1]);
        let text_again = s.in_formats(&FormatCodes::All(0)).unwrap();
        assert_eq!(formats(&text_again), vec![0, 0]);
        assert_eq!(text_again.columns[1].mask, Some(0));
        // A statement whose rows pass untouched gets no mask in any format.
        assert!(
            StatementMask::new(None)
                .in_formats(&FormatCodes::All(1))
                .is_none()
        );
    }
}
