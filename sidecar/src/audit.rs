//! The audit writer: session start/end, each statement's decision (written
//! before the statement is forwarded) and its result, as hash-chained JSON
//! lines (docs/DESIGN.md §7) on stdout and, when asked, in a file.
//!
//! Write-ahead: [`AuditLog::statement`] returns an error when a sink cannot
//! take the event, and the caller then refuses the statement. A Connection
//! may trade that for fewer writes (`spec.audit.durability: batched`, see
//! [`durability`]). Commands are recorded with literals redacted; no
//! credential and no result value is ever written.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sluice_policy::audit::{
    AuditChain, AuditEventDraft, AuditKind, AuditOutage, AuditOutcome, EventPieces, Rendered,
};

pub mod durability;
mod events;
mod held;
mod lifecycle;
mod session;
mod sink;
mod time;

use durability::WriteMode;
pub use durability::{AuditDurability, AuditSettings};
pub use held::{HoldId, Recorded};
pub use session::SessionInfo;
pub(crate) use session::SessionPieces;
pub use sink::AuditSink;
use sink::Sink;
pub(crate) use time::now;

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
    /// A durability setting is not valid.
    #[error(transparent)]
    Setting(#[from] durability::SettingError),
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

/// The outcome of one statement (or query string).
#[derive(Debug, Clone)]
pub struct ResultRecord {
    /// Rows returned or affected.
    pub rows: u64,
    /// Values masked.
    pub masked: u64,
    /// `masked` by masking rule (see [`crate::masking::Masking::mask_counts`]).
    pub masks: Vec<sluice_policy::audit::AuditMaskCount>,
    /// Time from forwarding to the end of the result.
    pub duration: Duration,
    /// SQLSTATE of the error, if it failed.
    pub error: Option<String>,
    /// What the workload received, when the session is recorded (see [`crate::recording`]).
    pub recorded: Option<sluice_policy::audit::AuditRecorded>,
    /// The statement's held decision (batched mode), which the result
    /// joins in one event while it is held (see [`held`]).
    pub hold: Option<HoldId>,
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
    /// The default durability and the batched window.
    settings: AuditSettings,
    /// Each Connection's durability (see [`AuditLog::configure`]).
    durabilities: std::sync::RwLock<std::collections::HashMap<String, AuditDurability>>,
    /// Batched mode: wakes the flusher, which writes after the window.
    batch: tokio::sync::Notify,
    /// The policies in force, for their change history (see [`AuditLog::configure`]).
    policies: crate::policy_history::PolicyHistory,
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
    /// A batched record waits and the flusher's timer runs for it.
    batch_armed: bool,
    /// Batched decisions held for their results (see [`held`]).
    holds: held::Holds,
}

impl AuditLog {
    /// An audit log on stdout (when `stdout`) and in `file` (appended) when given.
    /// `stream` names the chain (e.g. the sidecar's identity and start time).
    /// Its durability settings come from the environment
    /// ([`AuditSettings::from_env`]).
    pub fn open(stream: &str, stdout: bool, file: Option<&Path>) -> Result<Self, AuditError> {
        let settings = AuditSettings::from_env()?;
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
            // A regular file is opened readable too, to see whether a crash
            // left its last line torn (sink.rs). Anything else (a FIFO, a
            // device) is opened write-only: a FIFO opened read-write holds
            // its own read end, so writes would go on succeeding after the
            // real reader left, and a lost audit record must fail the
            // statement instead (fail closed).
            let regular = std::fs::metadata(path).map_or(true, |m| m.is_file());
            let f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .read(regular)
                .open(path)
                .map_err(err)?;
            sinks.push(Sink::new(Some(path.to_path_buf()), Box::new(f)).map_err(err)?);
        }
        Ok(Self::with_sinks(stream, sinks).with_settings(settings))
    }

    /// The same log with `settings` (the default durability and the
    /// batched window) instead of those it has.
    pub fn with_settings(mut self, settings: AuditSettings) -> Self {
        self.settings = settings;
        self
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
                batch_armed: false,
                holds: held::Holds::default(),
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
            settings: AuditSettings::default(),
            durabilities: Default::default(),
            batch: tokio::sync::Notify::new(),
            policies: Default::default(),
        }
    }

    // === durability ===

    /// Takes each Connection's durability from `bundle`
    /// (`spec.audit.durability`, else the default of [`AuditSettings`]).
    /// A session keeps the durability in force at its first record.
    pub fn configure(&self, bundle: &sluice_policy::wire::Bundle) {
        let map = bundle
            .connections
            .iter()
            .map(|c| {
                let d = c.spec.audit.as_ref().and_then(|a| a.durability);
                (c.name.clone(), d.unwrap_or(self.settings.durability))
            })
            .collect();
        *self.durabilities.write().unwrap_or_else(|p| p.into_inner()) = map;
        // The bundle's policies: each new version, and each one that left,
        // on record (see crate::policy_history).
        self.policies
            .record(bundle, |policy| self.policy_version(policy));
    }

    /// Appends a `policy` event (see [`crate::policy_history`]), written
    /// with the next write: before the first decision taken under it.
    pub(crate) fn policy_version(
        &self,
        policy: sluice_policy::audit::AuditPolicy,
    ) -> Result<(), AuditError> {
        let time = now();
        self.append_with(WriteMode::Pending, |chain, pending| {
            let event = chain.append_policy_line(&time, policy, pending)?;
            Ok((event.seq, event.hash, None))
        })
        .map(|_| ())
    }

    /// The durability of `s`'s records (its Connection's when its first
    /// record was written).
    pub fn durability(&self, s: &SessionInfo) -> AuditDurability {
        *s.durability.get_or_init(|| {
            self.durabilities
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .get(&s.connection)
                .copied()
                .unwrap_or(self.settings.durability)
        })
    }

    /// How a record of `s` is written: batched for a batched session, else
    /// now when `durable`, else pending.
    pub(crate) fn write_mode(&self, s: &SessionInfo, durable: bool) -> WriteMode {
        match self.durability(s) {
            AuditDurability::Batched => WriteMode::Batched,
            AuditDurability::WriteAhead if durable => WriteMode::Now,
            AuditDurability::WriteAhead => WriteMode::Pending,
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

    pub(crate) fn shutting_down(&self) -> Result<(), AuditError> {
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

    /// Waits until every session has ended and every connection without
    /// session events closed ([`AuditLog::open_now`]), or `deadline` passes;
    /// returns how many are still open.
    pub async fn drained(&self, deadline: tokio::time::Instant) -> usize {
        loop {
            let ended = self.session_ended.notified();
            tokio::pin!(ended);
            ended.as_mut().enable();
            let open = self.open_now();
            if open == 0 {
                return 0;
            }
            tokio::select! {
                () = ended => {}
                () = tokio::time::sleep_until(deadline) => return self.open_now(),
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

    /// Appends an event to the chain, written as `write` says.
    pub(crate) fn write_event(
        &self,
        draft: AuditEventDraft,
        write: WriteMode,
    ) -> Result<(), AuditError> {
        self.append_event(draft, write).map(|_| ())
    }

    /// [`AuditLog::write_event`], returning its ticket for
    /// [`AuditLog::durable`] (see [`AuditLog::append_with`]).
    pub(crate) fn append_event(
        &self,
        draft: AuditEventDraft,
        write: WriteMode,
    ) -> Result<u64, AuditError> {
        self.append_with(write, |chain, pending| {
            let event = chain.append_line(draft, pending)?;
            Ok((event.seq, event.hash, event.connection))
        })
    }

    /// Appends an event made of `s`'s and a statement's pre-rendered fields
    /// (the same line [`AuditLog::append_event`] writes for them).
    pub(crate) fn append_pieces(
        &self,
        s: &SessionInfo,
        pieces: &SessionPieces,
        event: StatementEvent<'_>,
        write: WriteMode,
    ) -> Result<u64, AuditError> {
        let time = now();
        self.append_with(write, |chain, pending| {
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
    /// forward channel); the line is written as `write` says. Returns the
    /// ticket to await with [`AuditLog::durable`] before what the record
    /// decides runs: the line's number; for a batched record see
    /// [`AuditLog::batched_ticket`]: its plane waits only while the batch is
    /// full (fail closed: a record is never dropped, and a crash loses at
    /// most a batch).
    fn append_with(
        &self,
        write: WriteMode,
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
        self.forward_line(&inner.pending, start, seq, hash, connection);
        match write {
            WriteMode::Now => self.write_pending(inner).map(|()| ticket),
            WriteMode::Pending => Ok(ticket),
            WriteMode::Batched => Ok(self.batched_ticket(inner)),
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

    /// Writes `draft`, a record of `s`, now (batched for a batched session).
    pub(crate) fn write(&self, s: &SessionInfo, draft: AuditEventDraft) -> Result<(), AuditError> {
        self.write_event(draft, self.write_mode(s, true))
    }

    /// Writes the pending lines to every sink. On failure they stay
    /// pending (each sink cut back to its last whole line, or resuming a
    /// pipe where it stopped) and the outage is remembered; the first write
    /// that succeeds after it records the outage as a chained `outage`
    /// event (see [`sluice_policy::audit::AuditOutage`]).
    fn write_pending(&self, inner: &mut Inner) -> Result<(), AuditError> {
        if inner.holds.live > 0 {
            // Held decisions are written with the batch, on their own.
            self.seal_held(inner)?;
        }
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

    /// Writes the pending result events every 200 ms (or the batched
    /// window, when longer), so that a quiet session's last result is on
    /// record soon (see [`AuditLog::flush`]),
    /// and batched records within their window of being queued; starts the
    /// committer that writes a full batch.
    pub fn flush_periodically(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        self.start_committer();
        let log = self.clone();
        tokio::spawn(async move {
            // A result of a write-ahead session waits for the next write at
            // most this long (never less than a batched record may wait).
            let every = Duration::from_millis(200).max(log.settings.batch_window);
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    () = log.batch.notified() => {
                        tokio::time::sleep(log.settings.batch_window).await;
                    }
                }
                if let Err(e) = log.flush() {
                    tracing::error!(error = %e, "writing pending audit events failed");
                }
            }
        })
    }

    /// Writes pending result events (called periodically, so that a quiet
    /// session's last result is on record within a fraction of a second).
    pub fn flush(&self) -> Result<(), AuditError> {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        inner.batch_armed = false;
        self.write_pending(&mut inner)
    }

    pub(crate) fn draft(&self, s: &SessionInfo, kind: AuditKind) -> AuditEventDraft {
        let mut d = AuditEventDraft::new(now(), kind);
        d.session = Some(s.id.clone());
        d.identity = Some(s.identity());
        d.connection = Some(s.connection.clone());
        d
    }
}
/// What [`AuditLog::append_pieces`] records besides the session's fields.
pub(crate) struct StatementEvent<'a> {
    pub(crate) kind: AuditKind,
    pub(crate) command: Option<&'a Rendered>,
    pub(crate) decision: Option<&'a Rendered>,
    pub(crate) outcome: Option<&'a AuditOutcome>,
}

impl Drop for AuditLog {
    fn drop(&mut self) {
        // Lets the committer task see the log is gone and end.
        self.commit.notify_one();
    }
}

#[cfg(test)]
mod tests;
