//! The audit writer: session start/end, each statement's decision (written
//! before the statement is forwarded) and its result, as hash-chained JSON
//! lines (DESIGN §7) on stdout and, when asked, in a file.
//!
//! Write-ahead: [`AuditLog::statement`] returns an error when a sink cannot
//! take the event, and the caller then refuses the statement. Commands are
//! recorded with literals redacted; no credential and no result value is
//! ever written.

use std::fs::File;
use std::io::{self, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use sluice_crds::Action;
use sluice_policy::audit::{
    AuditApproval, AuditChain, AuditCommand, AuditDecision, AuditEventDraft, AuditIdentity,
    AuditKind, AuditOutage, AuditOutcome, EventPieces, Rendered,
};

use crate::enforcement::{Binding, Decided, Refusal};

/// Why an audit event could not be written.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// Writing to standard output failed.
    #[error("writing the audit event to stdout failed: {0}")]
    Stdout(#[source] io::Error),
    /// Writing to the audit file failed.
    #[error("writing the audit event to {path} failed: {source}")]
    File {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// The event could not be serialised.
    #[error(transparent)]
    Encode(#[from] sluice_policy::audit::AuditError),
    /// The batch write holding the event failed (see [`AuditLog::durable`]).
    #[error("{0}")]
    Batch(String),
    /// The sink has been failing for so long that the events kept for the
    /// retry reached their bound: the event is not recorded.
    #[error(
        "the audit sink has been failing ({0}) and {MAX_BACKLOG} bytes of events wait for it; \
         the event is not recorded"
    )]
    Backlog(String),
    /// The sidecar is shutting down (SIGTERM or SIGINT): no new session or
    /// statement is recorded, so none runs.
    #[error(
        "Sluice is shutting down: new sessions and statements are refused; reconnect (the \
         workload's next sidecar serves it)"
    )]
    ShuttingDown,
}

/// Most bytes of events kept for a retry while the audit sink fails (a full
/// disk); past it new events are refused, so decisions are refused
/// (write-ahead) and memory stays bounded.
pub const MAX_BACKLOG: usize = 16 << 20;

/// Who a session is, for audit records.
#[derive(Debug, Clone)]
pub struct SessionInfo {
    /// Random session id.
    pub id: String,
    /// `NAMESPACE/SERVICEACCOUNT`.
    pub subject: String,
    /// Namespace of the identity.
    pub namespace: String,
    /// Service account of the identity.
    pub service_account: String,
    /// Pod, when known.
    pub pod: Option<String>,
    /// Groups of the identity.
    pub groups: Vec<String>,
    /// The Connection.
    pub connection: String,
    /// The client's address (loopback in a pod).
    pub client: String,
    /// The session's audit fields, rendered at its first statement (see
    /// [`AuditLog::statement_pending`]); shared by the session's clones.
    pub(crate) pieces: Arc<OnceLock<Option<SessionPieces>>>,
}

/// A session's `connection`, `identity` and `session` audit fields,
/// serialised once for all its statement and result events.
#[derive(Debug)]
pub(crate) struct SessionPieces {
    connection: Rendered,
    identity: Rendered,
    session: Rendered,
}

impl SessionInfo {
    /// Who the session is, as its audit events record it.
    fn identity(&self) -> AuditIdentity {
        AuditIdentity {
            namespace: self.namespace.clone(),
            service_account: self.service_account.clone(),
            pod: self.pod.clone(),
            groups: self.groups.clone(),
        }
    }

    /// [`SessionPieces`], rendered on first use (`None`: they could not be
    /// serialised, and events are drafted field by field instead).
    fn pieces(&self) -> Option<&SessionPieces> {
        self.pieces
            .get_or_init(|| {
                Some(SessionPieces {
                    connection: Rendered::connection(&self.connection).ok()?,
                    identity: Rendered::identity(&self.identity()).ok()?,
                    session: Rendered::session(&self.id).ok()?,
                })
            })
            .as_ref()
    }
}

/// A decided statement's `command` field, and its `decision` field as an
/// allowed statement of each protocol records it, rendered at its first
/// event: a statement served from the decision cache is recorded by copying
/// them (see [`AuditLog::statement_pending`]).
#[derive(Debug, Default)]
pub struct StatementPieces {
    command: OnceLock<Option<Rendered>>,
    simple: OnceLock<Option<Rendered>>,
    extended: OnceLock<Option<Rendered>>,
}

impl SessionInfo {
    /// A new session of `binding` on `connection`.
    pub fn new(binding: &Binding, connection: &str, client: SocketAddr) -> Self {
        let id: u128 = rand::random();
        let identity = binding.identity();
        SessionInfo {
            id: format!("{id:032x}"),
            subject: format!("{}/{}", identity.namespace, identity.service_account),
            namespace: identity.namespace.clone(),
            service_account: identity.service_account.clone(),
            pod: identity.pod.clone(),
            groups: identity.groups.clone(),
            connection: connection.to_string(),
            client: client.to_string(),
            pieces: Arc::default(),
        }
    }
}

/// The outcome of one statement (or query string).
#[derive(Debug, Clone)]
pub struct ResultRecord {
    /// Rows returned or affected.
    pub rows: u64,
    /// Values masked.
    pub masked: u64,
    /// Time from forwarding to the end of the result.
    pub duration: Duration,
    /// SQLSTATE of the error, if it failed.
    pub error: Option<String>,
}

/// Where audit lines go.
pub struct AuditLog {
    stream: String,
    inner: Mutex<Inner>,
    /// Also hands every event to this channel (run mode: the operator's
    /// `/v1/audit`). Best effort: stdout and the file stay the write-ahead sinks.
    forward: Option<tokio::sync::mpsc::Sender<Forwarded>>,
    /// Events the forward channel had no room for.
    forward_dropped: std::sync::atomic::AtomicU64,
    /// Group commit: wakes the committer task, which writes what is pending.
    commit: Arc<tokio::sync::Notify>,
    /// How many lines a write was attempted for, for waiters.
    written_tx: tokio::sync::watch::Sender<u64>,
    committer: std::sync::atomic::AtomicBool,
    /// Sessions started and not ended: with one, nobody shares its writes.
    open_sessions: std::sync::atomic::AtomicUsize,
    /// The PostgreSQL sessions on record and not ended, with their start:
    /// a shutdown ends those still open (see [`AuditLog::end_open_sessions`]).
    sessions: Mutex<std::collections::HashMap<String, (SessionInfo, std::time::Instant)>>,
    /// Told when a session of `sessions` ends.
    session_ended: tokio::sync::Notify,
    /// `true` once a shutdown began (see [`AuditLog::shutdown_signal`]).
    shutdown: tokio::sync::watch::Sender<bool>,
    /// Set when a shutdown ended the open sessions: nothing more is recorded.
    closed: std::sync::atomic::AtomicBool,
}

/// See [`AuditLog::open_connection`].
pub struct OpenConnection(Arc<AuditLog>);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.session_closed();
    }
}

/// An event handed to the forward channel: its line, and what the
/// uploader names its chain head with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forwarded {
    /// The event's JSON line, without the newline.
    pub line: Box<str>,
    /// Its Connection.
    pub connection: Option<String>,
    /// Its `seq`.
    pub seq: u64,
    /// Its `hash`.
    pub hash: String,
}

/// Where audit lines are written: the audit file or stdout. A regular file
/// can be cut back to its last whole line after a failed write; a pipe
/// cannot, and its writes resume where the failed one stopped.
pub trait AuditSink: Send {
    /// Writes some of `buf` (as [`Write::write`]).
    fn write(&mut self, buf: &[u8]) -> io::Result<usize>;
    /// Cuts the sink back to `len` bytes and writes on from there; `Ok(false)`
    /// when it cannot be cut (a pipe, a terminal, a device).
    fn truncate(&mut self, len: u64) -> io::Result<bool>;
    /// Its length now, when it can be cut back.
    fn cut_len(&mut self) -> io::Result<Option<u64>>;
}

impl AuditSink for File {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        Write::write(self, buf)
    }

    fn truncate(&mut self, len: u64) -> io::Result<bool> {
        if !self.metadata()?.is_file() {
            return Ok(false);
        }
        self.set_len(len)?;
        // Without O_APPEND (stdout redirected by a shell) the offset must
        // follow; with it the seek is harmless.
        io::Seek::seek(self, io::SeekFrom::Start(len))?;
        Ok(true)
    }

    fn cut_len(&mut self) -> io::Result<Option<u64>> {
        let meta = self.metadata()?;
        Ok(meta.is_file().then_some(meta.len()))
    }
}

/// One sink and how much of the pending lines it has taken.
struct Sink {
    /// `stdout` or the file's path, for errors.
    name: Option<PathBuf>,
    out: Box<dyn AuditSink>,
    /// Bytes of [`Inner::pending`] this sink has taken.
    done: usize,
    /// The sink's length at `done`, when it can be cut back.
    len: Option<u64>,
    /// A failed write left a partial line that could not be cut yet: it is
    /// cut before anything else is written.
    torn: bool,
}

impl Sink {
    fn new(name: Option<PathBuf>, mut out: Box<dyn AuditSink>) -> io::Result<Self> {
        let len = out.cut_len()?;
        Ok(Sink {
            name,
            out,
            done: 0,
            len,
            torn: false,
        })
    }

    /// Writes `pending[done..]`. On failure a sink that can be cut back is
    /// cut to its last whole line, and takes the lines again next time.
    fn take(&mut self, pending: &[u8]) -> io::Result<()> {
        if self.torn
            && let Some(len) = self.len
        {
            self.out.truncate(len)?;
            self.torn = false;
        }
        let start = self.done;
        while self.done < pending.len() {
            match self.out.write(&pending[self.done..]) {
                Ok(0) => {
                    return self.failed(start, io::ErrorKind::WriteZero.into());
                }
                Ok(n) => self.done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return self.failed(start, e),
            }
        }
        if let Some(len) = &mut self.len {
            *len += (self.done - start) as u64;
        }
        Ok(())
    }

    fn failed(&mut self, start: usize, e: io::Error) -> io::Result<()> {
        if let Some(len) = self.len {
            // Cut the partial line: the lines are taken again, whole.
            self.done = start;
            match self.out.truncate(len) {
                Ok(true) => {}
                Ok(false) => self.len = None,
                Err(_) => self.torn = true,
            }
        }
        Err(e)
    }

    fn error(&self, source: io::Error) -> AuditError {
        match &self.name {
            None => AuditError::Stdout(source),
            Some(path) => AuditError::File {
                path: path.clone(),
                source,
            },
        }
    }
}

/// A sink failing, as the next `outage` event will record it.
struct Outage {
    since: String,
    from_seq: u64,
    to_seq: u64,
    failed_writes: u64,
    dropped: u64,
    error: String,
}

struct Inner {
    chain: AuditChain,
    sinks: Vec<Sink>,
    /// Lines not yet on every sink: result events wait here for the next
    /// decision event (or the periodic [`AuditLog::flush`]) so that a
    /// statement costs one write, not two; and while a sink fails, every
    /// line waits here for the retry (bounded by [`MAX_BACKLOG`]), so the
    /// chain on the sink never misses a link.
    pending: Vec<u8>,
    /// Lines appended so far (a line's number is its `seq`).
    appended: u64,
    /// Lines a write was attempted for.
    attempted: u64,
    /// Lines on every sink.
    durable: u64,
    /// Why the last write failed, while lines are not durable.
    error: Option<String>,
    /// The sink failing since, recorded once it takes writes again.
    outage: Option<Outage>,
}

impl AuditLog {
    /// An audit log on stdout (when `stdout`) and in `file` (appended) when given.
    /// `stream` names the chain (e.g. the sidecar's identity and start time).
    pub fn open(stream: &str, stdout: bool, file: Option<&Path>) -> Result<Self, AuditError> {
        let mut sinks = Vec::new();
        if stdout {
            // Stdout's own handle buffers, and would write a failed line
            // again besides the retry; a handle of its own does not.
            use std::os::fd::AsFd;
            let out = io::stdout()
                .as_fd()
                .try_clone_to_owned()
                .map(File::from)
                .and_then(|f| Sink::new(None, Box::new(f)))
                .map_err(AuditError::Stdout)?;
            sinks.push(out);
        }
        if let Some(path) = file {
            let err = |source| AuditError::File {
                path: path.to_path_buf(),
                source,
            };
            let f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(err)?;
            sinks.push(Sink::new(Some(path.to_path_buf()), Box::new(f)).map_err(err)?);
        }
        Ok(Self::with_sinks(stream, sinks))
    }

    /// An audit log on `sink` only (`name` names it in errors): for a sink
    /// that is neither stdout nor a file path, e.g. one that fails on purpose.
    pub fn open_sink(
        stream: &str,
        name: &Path,
        sink: Box<dyn AuditSink>,
    ) -> Result<Self, AuditError> {
        let sink =
            Sink::new(Some(name.to_path_buf()), sink).map_err(|source| AuditError::File {
                path: name.to_path_buf(),
                source,
            })?;
        Ok(Self::with_sinks(stream, vec![sink]))
    }

    fn with_sinks(stream: &str, sinks: Vec<Sink>) -> Self {
        AuditLog {
            stream: stream.to_string(),
            inner: Mutex::new(Inner {
                chain: AuditChain::new(stream),
                sinks,
                pending: Vec::with_capacity(4096),
                appended: 0,
                attempted: 0,
                durable: 0,
                error: None,
                outage: None,
            }),
            forward: None,
            forward_dropped: std::sync::atomic::AtomicU64::new(0),
            commit: Arc::new(tokio::sync::Notify::new()),
            written_tx: tokio::sync::watch::channel(0).0,
            committer: std::sync::atomic::AtomicBool::new(false),
            open_sessions: std::sync::atomic::AtomicUsize::new(0),
            sessions: Mutex::default(),
            session_ended: tokio::sync::Notify::new(),
            shutdown: tokio::sync::watch::Sender::new(false),
            closed: std::sync::atomic::AtomicBool::new(false),
        }
    }

    // === shutdown ===

    /// `true` once the sidecar is shutting down (SIGTERM, SIGINT). A data
    /// plane's session loop watches it: an idle session ends (PostgreSQL:
    /// `FATAL 57P01` saying Sluice is shutting down, then its `sessionEnd`);
    /// a session with a statement in flight ends after its answer. Until a
    /// loop does, new decisions are refused here (write-ahead:
    /// [`AuditError::ShuttingDown`]), and the shutdown ends the sessions
    /// still open after the grace period ([`AuditLog::end_open_sessions`]).
    pub fn shutdown_signal(&self) -> tokio::sync::watch::Receiver<bool> {
        self.shutdown.subscribe()
    }

    /// Starts the shutdown: from now on new sessions, statements and
    /// approvals are refused ([`AuditError::ShuttingDown`]); denials,
    /// results and session ends are still recorded.
    pub fn begin_shutdown(&self) {
        self.shutdown.send_replace(true);
    }

    fn shutting_down(&self) -> Result<(), AuditError> {
        if *self.shutdown.borrow() {
            return Err(AuditError::ShuttingDown);
        }
        Ok(())
    }

    /// PostgreSQL sessions started and not ended.
    pub fn open_session_count(&self) -> usize {
        self.sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .len()
    }

    /// Waits until every session has ended or `deadline` passes; returns how
    /// many are still open.
    pub async fn drained(&self, deadline: tokio::time::Instant) -> usize {
        loop {
            let ended = self.session_ended.notified();
            tokio::pin!(ended);
            ended.as_mut().enable();
            let open = self.open_session_count();
            if open == 0 {
                return 0;
            }
            tokio::select! {
                () = ended => {}
                () = tokio::time::sleep_until(deadline) => return self.open_session_count(),
            }
        }
    }

    /// Ends the shutdown: writes a `sessionEnd` (with `reason` as its error)
    /// for every session still open, then records nothing more, and writes
    /// what is pending. Returns how many sessions it ended.
    pub fn end_open_sessions(&self, reason: &str) -> Result<usize, AuditError> {
        self.begin_shutdown();
        let open: Vec<_> = {
            let mut sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
            sessions.drain().map(|(_, v)| v).collect()
        };
        let mut first_error = None;
        for (s, started) in &open {
            self.session_closed();
            if let Err(e) = self.write_session_end(s, started.elapsed(), Some(reason)) {
                first_error.get_or_insert(e);
            }
        }
        self.closed.store(true, std::sync::atomic::Ordering::SeqCst);
        let flushed = self.flush();
        match first_error {
            Some(e) => Err(e),
            None => flushed.map(|()| open.len()),
        }
    }

    /// Also hands every event to `tx` (a full channel drops the event for
    /// that sink only; see [`AuditLog::forward_dropped`]).
    pub fn forward_to(&mut self, tx: tokio::sync::mpsc::Sender<Forwarded>) {
        self.forward = Some(tx);
    }

    /// The stream (chain) the events belong to.
    pub fn stream(&self) -> &str {
        &self.stream
    }

    /// How many events the forward channel had no room for.
    pub fn forward_dropped(&self) -> u64 {
        self.forward_dropped
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Appends an event to the chain; writes it (and everything pending)
    /// now when `durable`, else leaves it pending.
    fn write_event(&self, draft: AuditEventDraft, durable: bool) -> Result<(), AuditError> {
        self.append_event(draft, durable).map(|_| ())
    }

    /// [`AuditLog::write_event`], returning the line's number (a ticket for
    /// [`AuditLog::durable`]).
    fn append_event(&self, draft: AuditEventDraft, durable: bool) -> Result<u64, AuditError> {
        self.append_with(durable, |chain, pending| {
            let event = chain.append_line(draft, pending)?;
            Ok((event.seq, event.hash, event.connection))
        })
    }

    /// Appends an event made of `s`'s and a statement's pre-rendered fields
    /// (the same line [`AuditLog::append_event`] writes for them).
    fn append_pieces(
        &self,
        s: &SessionInfo,
        pieces: &SessionPieces,
        event: StatementEvent<'_>,
        durable: bool,
    ) -> Result<u64, AuditError> {
        let time = now();
        self.append_with(durable, |chain, pending| {
            let appended = chain.append_pieces(
                &EventPieces {
                    kind: event.kind,
                    time: &time,
                    command: event.command,
                    connection: Some(&pieces.connection),
                    decision: event.decision,
                    identity: Some(&pieces.identity),
                    outcome: event.outcome,
                    session: Some(&pieces.session),
                },
                pending,
            )?;
            let hash = if self.forward.is_some() {
                appended.hash().to_string()
            } else {
                String::new()
            };
            let connection = self.forward.as_ref().map(|_| s.connection.clone());
            Ok((appended.seq, hash, connection))
        })
    }

    /// The body of every append: `append` adds the event's line to the
    /// pending lines (and returns its seq, hash and Connection for the
    /// forward channel); the line is written now when `durable`.
    fn append_with(
        &self,
        durable: bool,
        append: impl FnOnce(
            &mut AuditChain,
            &mut Vec<u8>,
        )
            -> Result<(u64, String, Option<String>), sluice_policy::audit::AuditError>,
    ) -> Result<u64, AuditError> {
        if self.closed.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(AuditError::ShuttingDown);
        }
        let mut guard = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let inner = &mut *guard;
        if inner.pending.len() >= MAX_BACKLOG
            && let Some(outage) = &mut inner.outage
        {
            // Not chained: the chain on the sink stays whole, and the
            // outage event counts it.
            outage.dropped += 1;
            return Err(AuditError::Backlog(outage.error.clone()));
        }
        let start = inner.pending.len();
        // Serialised once, straight into the pending lines.
        let (seq, hash, connection) = append(&mut inner.chain, &mut inner.pending)?;
        inner.appended += 1;
        let ticket = inner.appended;
        if let Some(tx) = &self.forward {
            // The line just appended, less its newline; only ASCII-safe JSON
            // is ever written, so it is UTF-8.
            let line = &inner.pending[start..inner.pending.len().saturating_sub(1)];
            let sent = std::str::from_utf8(line).ok().is_some_and(|line| {
                tx.try_send(Forwarded {
                    line: line.into(),
                    connection,
                    seq,
                    hash,
                })
                .is_ok()
            });
            if !sent {
                self.forward_dropped
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        }
        if durable {
            self.write_pending(inner).map(|()| ticket)
        } else {
            Ok(ticket)
        }
    }

    /// Waits until the line `ticket` is written (or its write failed: the
    /// error). Group commit: the first waiter wakes a committer task that
    /// runs after the sessions already woken by the same readiness have
    /// appended their lines too, then writes them all at once; on one
    /// thread that turns many sessions' statements into one write.
    pub async fn durable(self: &Arc<Self>, ticket: u64) -> Result<(), AuditError> {
        use std::sync::atomic::Ordering;
        let mut rx = self.written_tx.subscribe();
        if *rx.borrow_and_update() < ticket && self.open_sessions.load(Ordering::Relaxed) <= 1 {
            // A single session: no other record could share the write, so
            // it is written now rather than via the committer task.
            let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
            if inner.attempted < ticket {
                // Errors reach the caller through `durable`/`error`, below.
                let _ = self.write_pending(&mut inner);
            }
        }
        if *rx.borrow_and_update() < ticket {
            self.start_committer();
            self.commit.notify_one();
            // The sender lives as long as `self`.
            let _ = rx.wait_for(|&w| w >= ticket).await;
        }
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if inner.durable >= ticket {
            return Ok(());
        }
        Err(AuditError::Batch(
            inner
                .error
                .clone()
                .unwrap_or_else(|| "the audit log was not written".into()),
        ))
    }

    fn start_committer(self: &Arc<Self>) {
        use std::sync::atomic::Ordering;
        if self.committer.swap(true, Ordering::AcqRel) {
            return;
        }
        let log = Arc::downgrade(self);
        let commit = self.commit.clone();
        tokio::spawn(async move {
            loop {
                commit.notified().await;
                let Some(log) = log.upgrade() else { return };
                let mut inner = log.inner.lock().unwrap_or_else(|p| p.into_inner());
                // Errors reach the waiters through `failed`.
                let _ = log.write_pending(&mut inner);
            }
        });
    }

    fn write(&self, draft: AuditEventDraft) -> Result<(), AuditError> {
        self.write_event(draft, true)
    }

    /// Writes the pending lines to every sink. On failure they stay
    /// pending (each sink cut back to its last whole line, or resuming a
    /// pipe where it stopped) and the outage is remembered; the first write
    /// that succeeds after it records the outage as a chained `outage`
    /// event (see [`sluice_policy::audit::AuditOutage`]).
    fn write_pending(&self, inner: &mut Inner) -> Result<(), AuditError> {
        loop {
            if inner.pending.is_empty() {
                return Ok(());
            }
            let upto = inner.appended;
            let result = Self::write_out(inner);
            inner.attempted = upto;
            match &result {
                Ok(()) => {
                    inner.pending.clear();
                    for sink in &mut inner.sinks {
                        sink.done = 0;
                    }
                    inner.durable = upto;
                    inner.error = None;
                }
                Err(e) => {
                    let error = e.to_string();
                    let outage = inner.outage.get_or_insert_with(|| Outage {
                        since: now(),
                        from_seq: inner.durable + 1,
                        to_seq: upto,
                        failed_writes: 0,
                        dropped: 0,
                        error: String::new(),
                    });
                    outage.to_seq = upto;
                    outage.failed_writes += 1;
                    outage.error.clone_from(&error);
                    inner.error = Some(error);
                }
            }
            self.written_tx.send_replace(upto);
            let recovered = result.is_ok() && inner.outage.is_some();
            if !recovered {
                return result;
            }
            if let Some(o) = inner.outage.take() {
                tracing::warn!(
                    from_seq = o.from_seq,
                    to_seq = o.to_seq,
                    failed_writes = o.failed_writes,
                    dropped = o.dropped,
                    "the audit sink takes writes again; the outage is recorded"
                );
                let outage = AuditOutage {
                    dropped: o.dropped,
                    error: o.error,
                    failed_writes: o.failed_writes,
                    from_seq: o.from_seq,
                    since: o.since,
                    to_seq: o.to_seq,
                };
                inner
                    .chain
                    .append_outage_line(&now(), outage, &mut inner.pending)?;
                inner.appended += 1;
            }
        }
    }

    fn write_out(inner: &mut Inner) -> Result<(), AuditError> {
        let mut first_error = None;
        for sink in &mut inner.sinks {
            if let Err(e) = sink.take(&inner.pending) {
                let e = sink.error(e);
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Writes pending result events (called periodically, so that a quiet
    /// session's last result is on record within a fraction of a second).
    pub fn flush(&self) -> Result<(), AuditError> {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        self.write_pending(&mut inner)
    }

    fn draft(&self, s: &SessionInfo, kind: AuditKind) -> AuditEventDraft {
        let mut d = AuditEventDraft::new(now(), kind);
        d.session = Some(s.id.clone());
        d.identity = Some(s.identity());
        d.connection = Some(s.connection.clone());
        d
    }

    /// An event of any kind for `s` (used by the HTTP data plane, whose
    /// requests are not SQL [`Decided`] texts). Written now when `durable`
    /// (decisions: write-ahead), else with the next durable event. Returns
    /// the line's number: with `durable` false, a ticket for
    /// [`AuditLog::durable`] (write-ahead that shares one write with other
    /// connections' records).
    pub fn event(
        &self,
        s: &SessionInfo,
        kind: AuditKind,
        command: Option<AuditCommand>,
        decision: Option<AuditDecision>,
        outcome: Option<AuditOutcome>,
        durable: bool,
    ) -> Result<u64, AuditError> {
        if matches!(
            kind,
            AuditKind::Statement | AuditKind::SessionStart | AuditKind::Approval
        ) {
            self.shutting_down()?;
        }
        if let Some(session) = s.pieces() {
            // The session's fields pre-rendered; the request's rendered here.
            let command = command.as_ref().map(Rendered::command).transpose()?;
            let decision = decision.as_ref().map(Rendered::decision).transpose()?;
            let event = StatementEvent {
                kind,
                command: command.as_ref(),
                decision: decision.as_ref(),
                outcome: outcome.as_ref(),
            };
            return self.append_pieces(s, session, event, durable);
        }
        let mut d = self.draft(s, kind);
        d.command = command;
        d.decision = decision;
        d.outcome = outcome;
        self.append_event(d, durable)
    }

    /// Counts a connection that has no session events (HTTP) among the
    /// open sessions until the guard is dropped: with more than one open,
    /// [`AuditLog::durable`] groups their records into one write.
    pub fn open_connection(self: &Arc<Self>) -> OpenConnection {
        self.session_opened();
        OpenConnection(self.clone())
    }

    /// One more open session (see [`AuditLog::durable`]).
    fn session_opened(&self) {
        self.open_sessions
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// One open session fewer (never below zero).
    fn session_closed(&self) {
        let _ = self.open_sessions.fetch_update(
            std::sync::atomic::Ordering::Relaxed,
            std::sync::atomic::Ordering::Relaxed,
            |n| n.checked_sub(1),
        );
    }

    /// A session was refused (not bound, upstream unreachable).
    pub fn session_refused(&self, s: &SessionInfo, reason: &str) -> Result<(), AuditError> {
        let mut d = self.draft(s, AuditKind::Denial);
        d.decision = Some(AuditDecision {
            action: Action::Deny,
            policy: None,
            rule: None,
            dry_run: false,
            reason: Some(reason.to_string()),
        });
        self.write(d)
    }

    /// A session started.
    pub fn session_start(
        &self,
        s: &SessionInfo,
        tls: bool,
        channel_binding: bool,
    ) -> Result<(), AuditError> {
        self.shutting_down()?;
        let mut d = self.draft(s, AuditKind::SessionStart);
        d.decision = Some(AuditDecision {
            action: Action::Allow,
            policy: None,
            rule: None,
            dry_run: false,
            reason: Some(format!(
                "session opened for client {}; upstream tls {}, scram channel binding {}",
                s.client,
                if tls { "on" } else { "off" },
                if channel_binding { "on" } else { "off" }
            )),
        });
        self.write(d)?;
        // Counted once on record (a refused session never ends one).
        self.session_opened();
        self.sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(s.id.clone(), (s.clone(), std::time::Instant::now()));
        Ok(())
    }

    /// A session ended.
    pub fn session_end(
        &self,
        s: &SessionInfo,
        duration: Duration,
        error: Option<&str>,
    ) -> Result<(), AuditError> {
        let on_record = self
            .sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&s.id)
            .is_some();
        self.session_ended.notify_waiters();
        if !on_record && self.closed.load(std::sync::atomic::Ordering::SeqCst) {
            // The shutdown already recorded its end.
            return Ok(());
        }
        self.session_closed();
        self.write_session_end(s, duration, error)
    }

    fn write_session_end(
        &self,
        s: &SessionInfo,
        duration: Duration,
        error: Option<&str>,
    ) -> Result<(), AuditError> {
        let mut d = self.draft(s, AuditKind::SessionEnd);
        d.outcome = Some(AuditOutcome {
            rows: None,
            duration_ms: Some(duration.as_millis() as u64),
            error: error.map(String::from),
            masked: None,
        });
        self.write_event(d, true).map(|_| ())
    }

    /// A statement's decision, before it is forwarded; a `denial` event
    /// instead when it is refused.
    pub fn statement(
        &self,
        s: &SessionInfo,
        decided: &Decided,
        protocol: &str,
        refusal: Option<&Refusal>,
    ) -> Result<(), AuditError> {
        if refusal.is_none() {
            self.shutting_down()?;
        }
        let d = self.statement_draft(s, decided, protocol, refusal);
        self.write(d)
    }

    fn statement_draft(
        &self,
        s: &SessionInfo,
        decided: &Decided,
        protocol: &str,
        refusal: Option<&Refusal>,
    ) -> AuditEventDraft {
        let kind = if refusal.is_some() {
            AuditKind::Denial
        } else {
            AuditKind::Statement
        };
        let mut d = self.draft(s, kind);
        d.command = Some(command(decided));
        d.decision = Some(decision(decided, protocol, refusal));
        d
    }

    /// [`AuditLog::statement`] for an allowed statement, left pending: the
    /// caller awaits [`AuditLog::durable`] with the returned ticket before
    /// it forwards the statement (write-ahead, one write for many).
    ///
    /// The hot path: the session's and the statement's fields are copied
    /// pre-rendered (see [`StatementPieces`]), so a statement served from
    /// the decision cache costs its time, its chain link and a hash.
    pub fn statement_pending(
        &self,
        s: &SessionInfo,
        decided: &Decided,
        protocol: &str,
    ) -> Result<u64, AuditError> {
        self.shutting_down()?;
        let pieces = &decided.audit;
        let rendered = match protocol {
            "simple" => Some(&pieces.simple),
            "extended" => Some(&pieces.extended),
            _ => None,
        }
        .and_then(|slot| {
            slot.get_or_init(|| Rendered::decision(&decision(decided, protocol, None)).ok())
                .as_ref()
        });
        if let (Some(session), Some(command), Some(decision)) =
            (s.pieces(), statement_command(decided), rendered)
        {
            let event = StatementEvent {
                kind: AuditKind::Statement,
                command: Some(command),
                decision: Some(decision),
                outcome: None,
            };
            return self.append_pieces(s, session, event, false);
        }
        let d = self.statement_draft(s, decided, protocol, None);
        self.append_event(d, false)
    }

    /// A statement's result.
    pub fn result(
        &self,
        s: &SessionInfo,
        decided: &Decided,
        r: ResultRecord,
    ) -> Result<(), AuditError> {
        let outcome = AuditOutcome {
            rows: Some(r.rows),
            duration_ms: Some(r.duration.as_millis() as u64),
            error: r.error,
            masked: (r.masked > 0).then_some(r.masked),
        };
        if let (Some(session), Some(command)) = (s.pieces(), statement_command(decided)) {
            let event = StatementEvent {
                kind: AuditKind::Result,
                command: Some(command),
                decision: None,
                outcome: Some(&outcome),
            };
            return self.append_pieces(s, session, event, false).map(|_| ());
        }
        let mut d = self.draft(s, AuditKind::Result);
        d.command = Some(command(decided));
        d.outcome = Some(outcome);
        self.write_event(d, false)
    }

    /// A step of a statement's approval, written now: `Approval` events when
    /// it was asked (phase Pending) and when an approved statement is about
    /// to run (phase Executed, write-ahead: an error means it must not run);
    /// a `Denial` when it was denied, expired or could not be asked.
    pub fn approval(
        &self,
        s: &SessionInfo,
        decided: &Decided,
        kind: AuditKind,
        step: AuditApproval,
        reason: String,
    ) -> Result<(), AuditError> {
        if kind != AuditKind::Denial {
            self.shutting_down()?;
        }
        let sum = decided.summary();
        let mut d = self.draft(s, kind);
        d.command = Some(command(decided));
        d.decision = Some(AuditDecision {
            action: sum.enforced,
            policy: sum.policy,
            rule: sum.rule,
            dry_run: false,
            reason: Some(reason),
        });
        d.approval = Some(step);
        self.write(d)
    }
}

/// What [`AuditLog::append_pieces`] records besides the session's fields.
struct StatementEvent<'a> {
    kind: AuditKind,
    command: Option<&'a Rendered>,
    decision: Option<&'a Rendered>,
    outcome: Option<&'a AuditOutcome>,
}

/// The event time: now, RFC 3339 in UTC with microseconds.
fn now() -> String {
    rfc3339_micros(&chrono::Utc::now())
}

/// `t.to_rfc3339_opts(SecondsFormat::Micros, true)`, written digit by digit:
/// chrono's formatter goes through `core::fmt`, which costs more than the
/// rest of a pre-rendered event. Falls back to chrono outside years
/// 0000–9999 and for a leap second.
fn rfc3339_micros(t: &chrono::DateTime<chrono::Utc>) -> String {
    use chrono::{Datelike, Timelike};
    let (year, nanos) = (t.year(), t.nanosecond());
    let Ok(year) = u32::try_from(year) else {
        return t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    };
    if year > 9999 || nanos >= 1_000_000_000 {
        return t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    }
    let mut out = [0u8; 27];
    let fields: [(usize, usize, u32); 7] = [
        (0, 4, year),
        (5, 2, t.month()),
        (8, 2, t.day()),
        (11, 2, t.hour()),
        (14, 2, t.minute()),
        (17, 2, t.second()),
        (20, 6, nanos / 1_000),
    ];
    for (at, width, mut value) in fields {
        for i in (at..at + width).rev() {
            out[i] = b'0' + (value % 10) as u8;
            value /= 10;
        }
    }
    for (at, sep) in [
        (4, b'-'),
        (7, b'-'),
        (10, b'T'),
        (13, b':'),
        (16, b':'),
        (19, b'.'),
        (26, b'Z'),
    ] {
        out[at] = sep;
    }
    out.iter().map(|&b| b as char).collect()
}

/// `decided`'s [`command`], rendered once.
fn statement_command(decided: &Decided) -> Option<&Rendered> {
    decided
        .audit
        .command
        .get_or_init(|| Rendered::command(&command(decided)).ok())
        .as_ref()
}

/// How `decided` is recorded; `refusal` when it was refused although the
/// policy allows it (a limit or the audit sink).
fn decision(decided: &Decided, protocol: &str, refusal: Option<&Refusal>) -> AuditDecision {
    let sum = decided.summary();
    let (action, reason) = match refusal {
        Some(r) if sum.enforced == Action::Allow => (Action::Deny, r.message.clone()),
        _ => (sum.action, sum.reason),
    };
    AuditDecision {
        action,
        policy: sum.policy,
        rule: sum.rule,
        dry_run: sum.dry_run,
        reason: Some(format!("{reason} ({protocol} protocol)")),
    }
}

fn command(decided: &Decided) -> AuditCommand {
    AuditCommand {
        text: decided.redacted().to_string(),
        fingerprint: decided.fingerprint().to_string(),
        kind: decided.kind().map(String::from),
    }
}

impl Drop for AuditLog {
    fn drop(&mut self) {
        // Lets the committer task see the log is gone and end.
        self.commit.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn draft() -> AuditEventDraft {
        AuditEventDraft::new("2026-01-01T00:00:00Z", AuditKind::Statement)
    }

    fn enforcer() -> crate::enforcement::Enforcer {
        let ap: sluice_crds::AccessPolicy = serde_json::from_value(serde_json::json!({
            "apiVersion": "sluice.dev/v1alpha1",
            "kind": "AccessPolicy",
            "metadata": {"name": "p", "namespace": "shop"},
            "spec": {
                "subjects": [{"serviceAccount": "report-job"}],
                "connections": ["db"],
                "defaultAction": "allow",
                "rules": [{"name": "no-drop", "match": {"statements": ["drop"]}, "action": "deny"}],
            }
        }))
        .unwrap();
        let compiled = Arc::new(
            sluice_policy::engine::CompiledPolicy::compile(&ap, &sluice_policy::engine::NoSecrets)
                .unwrap(),
        );
        Binding::new(&[compiled], enforcer_identity(), "db", None, false)
            .enforcer()
            .unwrap()
    }

    /// Every field of an event but its time and chain links.
    fn content(line: &str) -> serde_json::Value {
        let mut v: serde_json::Value = serde_json::from_str(line).unwrap();
        let map = v.as_object_mut().unwrap();
        for key in ["time", "hash", "prev"] {
            assert!(map.remove(key).is_some(), "{key} missing from {line}");
        }
        v
    }

    /// Statement and result events made from pre-rendered pieces record
    /// what the drafted events record (all but the time and the chain
    /// links, which differ between two logs), in both protocols and again
    /// from the cache; the chain verifies; the forward channel carries the
    /// lines as written.
    #[tokio::test]
    async fn pieced_events_record_what_drafted_ones_do() {
        let dir = tempfile::tempdir().unwrap();
        let (pieced_path, drafted_path) = (dir.path().join("p"), dir.path().join("d"));
        let mut pieced = AuditLog::open("s", false, Some(&pieced_path)).unwrap();
        let (tx, mut rx) = tokio::sync::mpsc::channel(16);
        pieced.forward_to(tx);
        let drafted = AuditLog::open("s", false, Some(&drafted_path)).unwrap();
        let mut enforcer = enforcer();
        let addr: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let session = SessionInfo::new(
            &Binding::new(&[], enforcer_identity(), "db", None, false),
            "db",
            addr,
        );
        let result = || ResultRecord {
            rows: 3,
            masked: 1,
            duration: Duration::from_millis(4),
            error: Some("23505".into()),
        };
        for (sql, protocol) in [
            ("SELECT 1", "simple"),
            ("SELECT 1", "extended"),
            ("SELECT name FROM t WHERE id = 4", "simple"),
            ("SELECT 1", "simple"),
        ] {
            let decided = enforcer.decide(sql);
            pieced
                .statement_pending(&session, &decided, protocol)
                .unwrap();
            pieced.result(&session, &decided, result()).unwrap();
            let d = drafted.statement_draft(&session, &decided, protocol, None);
            drafted.append_event(d, false).unwrap();
            let mut d = drafted.draft(&session, AuditKind::Result);
            d.command = Some(command(&decided));
            let r = result();
            d.outcome = Some(AuditOutcome {
                rows: Some(r.rows),
                duration_ms: Some(r.duration.as_millis() as u64),
                error: r.error,
                masked: Some(r.masked),
            });
            drafted.append_event(d, false).unwrap();
        }
        pieced.flush().unwrap();
        drafted.flush().unwrap();
        let p = std::fs::read_to_string(&pieced_path).unwrap();
        let d = std::fs::read_to_string(&drafted_path).unwrap();
        assert_eq!(p.lines().count(), 8);
        for (a, b) in p.lines().zip(d.lines()) {
            assert_eq!(content(a), content(b));
        }
        sluice_policy::audit::verify_lines(p.lines(), &[]).unwrap();
        for (i, line) in p.lines().enumerate() {
            let f = rx.try_recv().unwrap();
            assert_eq!(&*f.line, line);
            let event: sluice_policy::audit::AuditEvent = serde_json::from_str(line).unwrap();
            assert_eq!((f.seq, &f.hash), (i as u64 + 1, &event.hash));
            assert_eq!(f.connection.as_deref(), Some("db"));
        }
    }

    #[test]
    fn event_time_is_what_chrono_writes() {
        use chrono::TimeZone;
        let mut times = vec![
            chrono::Utc.with_ymd_and_hms(2026, 1, 2, 3, 4, 5).unwrap(),
            chrono::Utc
                .with_ymd_and_hms(1999, 12, 31, 23, 59, 59)
                .unwrap(),
            chrono::Utc
                .with_ymd_and_hms(9999, 12, 31, 23, 59, 59)
                .unwrap(),
            chrono::Utc.with_ymd_and_hms(10000, 1, 1, 0, 0, 0).unwrap(),
            chrono::Utc.with_ymd_and_hms(-1, 1, 1, 0, 0, 0).unwrap(),
            chrono::Utc::now(),
        ];
        let base = times[0];
        for micros in [0, 1, 999, 123_456, 999_999] {
            times.push(base + chrono::Duration::microseconds(micros));
        }
        // Sub-microsecond digits are cut, not rounded, as chrono does.
        times.push(base + chrono::Duration::nanoseconds(999));
        for t in times {
            assert_eq!(
                rfc3339_micros(&t),
                t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
            );
        }
    }

    fn enforcer_identity() -> sluice_policy::engine::Identity {
        let mut identity = sluice_policy::engine::Identity::parse("shop/report-job").unwrap();
        identity.pod = Some("report-7d9".into());
        identity.groups = vec!["system:serviceaccounts:shop".into()];
        identity
    }

    /// Group commit: lines appended by several sessions are written by one
    /// write, and every waiter learns its line is on record.
    #[tokio::test]
    async fn durable_writes_pending_lines_once_for_all_waiters() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let log = Arc::new(AuditLog::open("s", false, Some(&path)).unwrap());
        // Several sessions: the committer task writes.
        log.open_sessions
            .store(2, std::sync::atomic::Ordering::Relaxed);
        let a = log.append_event(draft(), false).unwrap();
        let b = log.append_event(draft(), false).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "");
        let (ra, rb) = tokio::join!(log.durable(a), log.durable(b));
        ra.unwrap();
        rb.unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 2);
        sluice_policy::audit::verify_lines(text.lines(), &[]).unwrap();
        // Already written: no wait.
        log.durable(a).await.unwrap();
    }

    /// A failed batch write fails every statement waiting on it (fail closed).
    #[tokio::test]
    async fn durable_reports_a_failed_write_to_every_waiter() {
        let log = Arc::new(AuditLog::open("s", false, Some(Path::new("/dev/full"))).unwrap());
        let a = log.append_event(draft(), false).unwrap();
        let b = log.append_event(draft(), false).unwrap();
        let (ra, rb) = tokio::join!(log.durable(a), log.durable(b));
        assert!(ra.is_err() && rb.is_err(), "{ra:?} {rb:?}");
        let c = log.append_event(draft(), false).unwrap();
        assert!(log.durable(c).await.is_err());
        assert!(log.durable(a).await.is_err());
        // One session writes at once; a failure reaches it too.
        log.open_sessions
            .store(1, std::sync::atomic::Ordering::Relaxed);
        let d = log.append_event(draft(), false).unwrap();
        assert!(log.durable(d).await.is_err());
    }

    #[tokio::test]
    async fn a_single_session_writes_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let log = Arc::new(AuditLog::open("s", false, Some(&path)).unwrap());
        let a = log.append_event(draft(), false).unwrap();
        log.durable(a).await.unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap().lines().count(), 1);
        assert!(!log.committer.load(std::sync::atomic::Ordering::Relaxed));
    }

    /// A file that takes only `room` more bytes (a full disk): a write past
    /// it takes what fits, then fails with ENOSPC, as a real file system does.
    struct FullDisk {
        file: File,
        room: Arc<std::sync::atomic::AtomicUsize>,
    }

    impl AuditSink for FullDisk {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            use std::sync::atomic::Ordering;
            let room = self.room.load(Ordering::SeqCst);
            if room == 0 {
                return Err(io::Error::from_raw_os_error(28)); // ENOSPC
            }
            let n = Write::write(&mut self.file, &buf[..buf.len().min(room)])?;
            self.room.fetch_sub(n, Ordering::SeqCst);
            Ok(n)
        }

        fn truncate(&mut self, len: u64) -> io::Result<bool> {
            AuditSink::truncate(&mut self.file, len)
        }

        fn cut_len(&mut self) -> io::Result<Option<u64>> {
            AuditSink::cut_len(&mut self.file)
        }
    }

    /// A transient full disk: the failed writes are refused to their
    /// callers (write-ahead), the file never holds a partial line, and once
    /// the disk has room the kept events are written in order with an
    /// `outage` event after them: the chain verifies and the outage shows.
    #[tokio::test]
    async fn a_transient_full_disk_keeps_the_chain_and_records_the_outage() {
        use std::sync::atomic::Ordering;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let room = Arc::new(std::sync::atomic::AtomicUsize::new(usize::MAX));
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .unwrap();
        let sink = FullDisk {
            file,
            room: room.clone(),
        };
        let log = Arc::new(AuditLog::open_sink("s", &path, Box::new(sink)).unwrap());
        let a = log.append_event(draft(), false).unwrap();
        log.durable(a).await.unwrap();
        let whole_lines = |n: usize| {
            let text = std::fs::read_to_string(&path).unwrap();
            assert!(
                text.is_empty() || text.ends_with('\n'),
                "a torn line: {text:?}"
            );
            assert_eq!(text.lines().count(), n, "{text}");
            sluice_policy::audit::verify_lines(text.lines(), &[]).unwrap()
        };
        whole_lines(1);
        // The disk fills up in the middle of the next line.
        room.store(40, Ordering::SeqCst);
        let b = log.append_event(draft(), false).unwrap();
        let err = log.durable(b).await.unwrap_err();
        assert!(err.to_string().contains("No space left"), "{err}");
        whole_lines(1);
        // A result waits, a decision fails: both are kept.
        log.append_event(draft(), false).unwrap();
        let d = log.append_event(draft(), false).unwrap();
        assert!(log.durable(d).await.is_err());
        assert!(log.flush().is_err());
        whole_lines(1);
        // Room again: the next flush writes b, c, d and the outage.
        room.store(usize::MAX, Ordering::SeqCst);
        log.flush().unwrap();
        let report = whole_lines(5);
        assert_eq!(report.outages.len(), 1, "{report:?}");
        let o = &report.outages[0];
        assert_eq!((o.seq, o.outage.from_seq, o.outage.to_seq), (5, 2, 4));
        assert_eq!(o.outage.failed_writes, 3);
        assert!(o.outage.error.contains("No space left"), "{o:?}");
        // The log goes on as before.
        let e = log.append_event(draft(), false).unwrap();
        log.durable(e).await.unwrap();
        assert_eq!(whole_lines(6).outages.len(), 1);
    }

    /// While the sink fails, the events kept for the retry are bounded
    /// ([`MAX_BACKLOG`]): past it new events are refused (not chained) and
    /// counted in the outage event; the chain on the sink stays whole.
    #[tokio::test]
    async fn the_retry_backlog_is_bounded() {
        use std::sync::atomic::Ordering;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let room = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .unwrap();
        let sink = FullDisk {
            file,
            room: room.clone(),
        };
        let log = Arc::new(AuditLog::open_sink("s", &path, Box::new(sink)).unwrap());
        let first = log.append_event(draft(), false).unwrap();
        assert!(log.durable(first).await.is_err());
        let mut kept = 1u64;
        let refused = loop {
            match log.append_event(draft(), false) {
                Ok(_) => kept += 1,
                Err(e) => break e,
            }
            let pending = log.inner.lock().unwrap().pending.len();
            assert!(pending < MAX_BACKLOG + 1024, "the backlog is not bounded");
        };
        assert!(matches!(refused, AuditError::Backlog(_)), "{refused}");
        let pending = log.inner.lock().unwrap().pending.len();
        assert!(
            (MAX_BACKLOG..MAX_BACKLOG + 1024).contains(&pending),
            "{pending}"
        );
        assert!(log.append_event(draft(), false).is_err());
        room.store(usize::MAX, Ordering::SeqCst);
        log.flush().unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let report = sluice_policy::audit::verify_lines(text.lines(), &[]).unwrap();
        assert_eq!(report.events, kept + 1);
        let o = &report.outages[0].outage;
        assert_eq!((o.from_seq, o.to_seq, o.dropped), (1, 1, 2));
        // After the outage, events are chained again.
        let next = log.append_event(draft(), false).unwrap();
        log.durable(next).await.unwrap();
    }
}
