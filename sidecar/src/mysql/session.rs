//! One MySQL client session: the handshake on loopback (the real server's
//! version and capabilities, the sidecar's own scramble, no password asked
//! of the workload), the upstream session opened with the Connection's
//! credentials, then the command loop. MySQL clients wait for each answer
//! before the next command, so one task serves both directions.
//!
//! Commands: COM_QUERY is decided per statement (a string with any
//! refused statement is refused whole), put on record before it runs, and
//! its results masked; prepared statements (COM_STMT_PREPARE, EXECUTE,
//! CLOSE, RESET, SEND_LONG_DATA) are decided at PREPARE and again at each
//! EXECUTE, their binary rows masked, and so are SQL-level ones (`PREPARE
//! s FROM '…'`, `EXECUTE s`: see `sql_prepared`); COM_PING, COM_INIT_DB (decided as
//! `USE`), COM_STATISTICS (decided as `SHOW GLOBAL STATUS`, see
//! `statistics`), COM_SET_OPTION, COM_RESET_CONNECTION (tracking set up
//! again) and COM_QUIT are passed on; COM_STMT_FETCH reads an open
//! cursor's rows (see `cursor`); everything else (COM_CHANGE_USER,
//! COM_FIELD_LIST, …) is answered with an ERR packet saying it is not
//! served. A statement a `requireApproval` rule catches is asked of the
//! operator in run mode (see `approve`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use mysql_common::constants::CapabilityFlags;
use mysql_common::packets::HandshakePacket;
use mysql_common::proto::MySerialize;
use sluice_crds::Action;
use sluice_policy::audit::{AuditCommand, AuditDecision, AuditKind, AuditOutcome};
use sluice_policy::engine::{PolicySet, SqlDecision};
use sluice_policy::sql::SqlDialect;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::watch;

use super::gate::{self, Lexed, Settings};
use super::packet::{self, PacketError};
use super::results::{self, MORE_RESULTS, OkPacket};
use super::upstream::{self, MyUpstream, Upstream};
use crate::approval::Approvals;
use crate::audit::{AuditLog, SessionInfo};
use crate::masking::{MaskCounts, Masking};
use crate::metrics::Metrics;
use crate::standing::{Binding, Standing};

mod approve;
mod code;
mod cursor;
mod decisions;
mod functions;
mod guard;
mod handshake;
mod prepared;
mod query;
mod relations;
mod relay;
mod renames;
mod sql_prepared;
mod statistics;
mod variables;
mod views;

use functions::Unseen;
use handshake::{read_settings, run, setup};

/// MySQL's error for a refused statement (ER_SPECIFIC_ACCESS_DENIED_ERROR).
const ACCESS_DENIED: u16 = 1227;
/// MySQL's error for a refused session (ER_ACCESS_DENIED_ERROR).
const SESSION_DENIED: u16 = 1045;
/// ER_UNKNOWN_COM_ERROR.
const UNKNOWN_COMMAND: u16 = 1047;

const COM_QUIT: u8 = 0x01;
const COM_INIT_DB: u8 = 0x02;
const COM_QUERY: u8 = 0x03;
const COM_STATISTICS: u8 = 0x09;
const COM_PING: u8 = 0x0e;
const COM_STMT_PREPARE: u8 = 0x16;
const COM_STMT_EXECUTE: u8 = 0x17;
const COM_STMT_SEND_LONG_DATA: u8 = 0x18;
const COM_STMT_CLOSE: u8 = 0x19;
const COM_STMT_RESET: u8 = 0x1a;
const COM_SET_OPTION: u8 = 0x1b;
const COM_STMT_FETCH: u8 = 0x1c;
const COM_RESET_CONNECTION: u8 = 0x1f;

/// Capabilities the sidecar offers the client: never CLIENT_LOCAL_FILES
/// (LOAD DATA LOCAL), compression, TLS on loopback, query attributes or
/// optional result metadata (they change the packets the sidecar reads).
fn offered() -> CapabilityFlags {
    use CapabilityFlags as C;
    C::CLIENT_LONG_PASSWORD
        | C::CLIENT_FOUND_ROWS
        | C::CLIENT_LONG_FLAG
        | C::CLIENT_CONNECT_WITH_DB
        | C::CLIENT_NO_SCHEMA
        | C::CLIENT_ODBC
        | C::CLIENT_PROTOCOL_41
        | C::CLIENT_INTERACTIVE
        | C::CLIENT_TRANSACTIONS
        | C::CLIENT_SECURE_CONNECTION
        | C::CLIENT_MULTI_STATEMENTS
        | C::CLIENT_MULTI_RESULTS
        | C::CLIENT_PS_MULTI_RESULTS
        | C::CLIENT_PLUGIN_AUTH
        | C::CLIENT_CONNECT_ATTRS
        | C::CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA
        | C::CLIENT_SESSION_TRACK
        | C::CLIENT_DEPRECATE_EOF
}

/// Everything a MySQL listener's sessions share.
pub struct MyContext {
    /// The Connection's name.
    pub name: String,
    /// How to reach the server.
    pub upstream: MyUpstream,
    /// The identity and its policies on this Connection.
    pub binding: Binding,
    /// Audit sink.
    pub audit: Arc<AuditLog>,
    /// Largest packet accepted from the client.
    pub max_packet: usize,
    /// Why sessions are refused whatever the policies say (a setting this
    /// plane does not serve yet), when so.
    pub unserved: Option<String>,
    /// How long the client's handshake response, and the server's side of
    /// the session's start, may take (the listeners' startup timeout).
    pub startup_timeout: std::time::Duration,
    /// The operator's approval API (run mode); `None` refuses statements
    /// a `requireApproval` rule catches (standalone).
    pub approvals: Option<Approvals>,
    /// This Connection's metrics.
    pub metrics: Arc<Metrics>,
}

/// `fut`, or a timeout error naming `what` past `limit`.
async fn within<T, E: Into<SessionError>>(
    limit: std::time::Duration,
    what: &str,
    fut: impl std::future::Future<Output = Result<T, E>>,
) -> Result<T, SessionError> {
    match tokio::time::timeout(limit, fut).await {
        Ok(r) => r.map_err(Into::into),
        Err(_) => Err(SessionError::Closed(format!(
            "{what} took longer than {}s",
            limit.as_secs_f64()
        ))),
    }
}

/// Why a session ended abnormally.
#[derive(Debug, thiserror::Error)]
enum SessionError {
    #[error(transparent)]
    Packet(#[from] PacketError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Closed(String),
}

/// Serves one accepted client to its end.
pub async fn serve(ctx: Arc<MyContext>, socket: TcpStream, peer: SocketAddr) {
    let info = SessionInfo::new(&ctx.binding, &ctx.name, peer);
    let span = tracing::error_span!("mysql_session", connection = %ctx.name, identity = %info.subject, session = %info.id, %peer);
    let _ = socket.set_nodelay(true);
    let started = Instant::now();
    let mut opened = false;
    let result = tracing::Instrument::instrument(run(&ctx, socket, &info, &mut opened), span).await;
    if opened {
        ctx.metrics.session_ended();
    }
    match result {
        _ if !opened => {}
        Ok(()) => {
            let _ = ctx.audit.session_end(&info, started.elapsed(), None);
        }
        Err(e) => {
            tracing::debug!(error = %e, "mysql session ended with an error");
            let _ = ctx
                .audit
                .session_end(&info, started.elapsed(), Some(&e.to_string()));
        }
    }
}

/// Sends an ERR packet with sequence id `seq`.
async fn send_err(
    socket: &mut TcpStream,
    seq: u8,
    code: u16,
    state: &str,
    msg: &str,
) -> std::io::Result<()> {
    let mut out = Vec::new();
    let mut seq = seq;
    packet::write_packet(&mut out, &mut seq, &packet::err_payload(code, state, msg));
    socket.write_all(&out).await
}

struct Session<'a> {
    ctx: &'a MyContext,
    info: &'a SessionInfo,
    client: TcpStream,
    up: Upstream,
    client_caps: CapabilityFlags,
    set: Arc<PolicySet>,
    masking: Arc<Masking>,
    standing: watch::Receiver<Standing>,
    revoked: Option<String>,
    settings: Settings,
    /// The prepared statements, by the server's statement id.
    statements: std::collections::HashMap<u32, Decided>,
    /// The SQL-level prepared statements (`PREPARE name FROM '…'`), by
    /// name (lower case): see `sql_prepared`.
    sql_statements: std::collections::HashMap<String, Decided>,
    /// Built-in function names: whether a stored function shares the name
    /// (`information_schema.ROUTINES`; cleared after a statement that may
    /// create one).
    routines: std::collections::HashMap<String, bool>,
    /// The policy that made the session read-only when it started
    /// (`spec.readOnly`), if any.
    read_only: Option<Arc<str>>,
    /// The server status flags of its last OK packet (in a transaction,
    /// autocommit).
    server_status: u16,
    /// The open cursors (COM_STMT_EXECUTE with a cursor type), by
    /// statement id.
    cursors: std::collections::HashMap<u32, cursor::Cursor>,
    /// The cursor the last answer opened (its columns and their masks),
    /// taken by the EXECUTE that asked for it.
    opened_cursor: Option<cursor::Opened>,
    /// Whether the EXECUTE being answered asked for a cursor.
    cursor_asked: bool,
    /// The session's decision cache.
    decisions: decisions::Decisions,
    /// The last result's mask plan (see `relay`).
    plan_memo: Option<relay::PlanMemo>,
    /// Whether a procedure or stored function ran in this session while
    /// column rules applied: it may have set a server variable from a
    /// masked column, so reads of server variables are masked whole until
    /// COM_RESET_CONNECTION (see `functions::reads_server_variables`).
    variables_tainted: bool,
}

/// A text and its decision.
struct Decided {
    text: String,
    decision: Arc<SqlDecision>,
    /// The database it runs in: the session's current one when it was
    /// decided (a prepared statement runs in the one current at PREPARE).
    database: Option<String>,
}

/// What the client gets: packets with the sequence ids of one answer.
struct Reply {
    out: Vec<u8>,
    seq: u8,
}

impl Reply {
    fn new(seq: u8) -> Self {
        Reply {
            out: Vec::new(),
            seq,
        }
    }
    fn push(&mut self, payload: &[u8]) {
        packet::write_packet(&mut self.out, &mut self.seq, payload);
    }
}

/// How a COM_QUERY's (an EXECUTE's, a fetch's) results went, for its result record.
#[derive(Default)]
struct Outcome {
    rows: u64,
    masked: u64,
    /// The masked values by masking rule.
    masks: MaskCounts,
    error: Option<String>,
    /// What the workload received, for the session's recording.
    recorder: crate::recording::ResultRecorder,
    /// Why a write's changes were not kept although the server ran it
    /// (see [`crate::recording::rolled_back`]).
    rolled_back: Option<String>,
    /// Whether the session ended before the result was complete.
    cut_short: bool,
}

impl Session<'_> {
    async fn commands(&mut self) -> Result<(), SessionError> {
        loop {
            let p = match packet::read_packet(&mut self.client, self.ctx.max_packet, "client").await
            {
                Ok(p) => p,
                Err(PacketError::Io(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                    return Ok(());
                }
                Err(e @ PacketError::TooLarge { .. }) => {
                    let msg = format!("Sluice refused the command: {e}");
                    send_err(&mut self.client, 1, 1153, "08S01", &msg).await?;
                    return Err(e.into());
                }
                Err(e) => return Err(e.into()),
            };
            let reply_seq = p.seq.wrapping_add(1);
            let Some((&command, body)) = p.payload.split_first() else {
                return Err(PacketError::Malformed("empty command packet".into()).into());
            };
            match command {
                COM_QUIT => {
                    let _ = self.up.command(&p.payload).await;
                    return Ok(());
                }
                COM_QUERY => {
                    let text = String::from_utf8(body.to_vec());
                    self.query(text, &p.payload, reply_seq).await?;
                }
                COM_INIT_DB => {
                    let name = String::from_utf8_lossy(body).replace('`', "``");
                    let text = format!("USE `{name}`");
                    let mut forward = vec![COM_QUERY];
                    forward.extend_from_slice(text.as_bytes());
                    self.query(Ok(text), &forward, reply_seq).await?;
                }
                COM_PING | COM_SET_OPTION => {
                    self.up.command(&p.payload).await?;
                    let mut reply = Reply::new(reply_seq);
                    let a = self.up.read().await?;
                    self.relay_simple(&a.payload, &mut reply)?;
                    self.client.write_all(&reply.out).await?;
                }
                COM_STATISTICS => self.statistics(&p.payload, reply_seq).await?,
                COM_RESET_CONNECTION => {
                    // The server resets the session to its defaults, the
                    // sidecar's tracking included: set up again before the
                    // client hears back.
                    self.up.command(&p.payload).await?;
                    let a = self.up.read().await?;
                    let mut reply = Reply::new(reply_seq);
                    if a.payload.first() == Some(&0) {
                        // The server dropped the session's prepared
                        // statements, and reset its variables.
                        self.variables_tainted = false;
                        self.statements.clear();
                        self.sql_statements.clear();
                        self.cursors.clear();
                        let var = self.settings.read_only_var;
                        self.settings = setup(&mut self.up, var)
                            .await
                            .map_err(SessionError::Closed)?;
                        reply.push(&OkPacket::with_status(0x0002).encode(0, self.client_caps));
                    } else {
                        reply.push(&a.payload);
                    }
                    self.client.write_all(&reply.out).await?;
                }
                COM_STMT_PREPARE => self.prepare(body, &p.payload, reply_seq).await?,
                COM_STMT_EXECUTE => self.execute(body, &p.payload, reply_seq).await?,
                COM_STMT_FETCH => self.fetch(body, &p.payload, reply_seq).await?,
                COM_STMT_SEND_LONG_DATA | COM_STMT_CLOSE | COM_STMT_RESET => {
                    self.statement_command(command, body, &p.payload, reply_seq)
                        .await?;
                }
                other => {
                    let msg = format!(
                        "Sluice does not serve MySQL command 0x{other:02x} ({}) on Connection {:?} yet; use text queries (COM_QUERY)",
                        command_name(other),
                        self.ctx.name
                    );
                    send_err(&mut self.client, reply_seq, UNKNOWN_COMMAND, "08S01", &msg).await?;
                }
            }
        }
    }

    /// An OK or ERR answer passed on in the client's format.
    fn relay_simple(&mut self, payload: &[u8], reply: &mut Reply) -> Result<(), SessionError> {
        match payload.first() {
            Some(0x00) => {
                let ok = OkPacket::parse(payload)?;
                self.track(&ok)?;
                reply.push(&ok.encode(0, self.client_caps));
            }
            Some(0xFE)
                if !self
                    .client_caps
                    .contains(CapabilityFlags::CLIENT_DEPRECATE_EOF) =>
            {
                let ok = OkPacket::parse(payload)?;
                self.track(&ok)?;
                reply.push(&ok.eof());
            }
            _ => reply.push(payload),
        }
        Ok(())
    }

    /// Takes what an OK packet reports; the session ends when the server
    /// stopped reporting a setting the sidecar follows.
    fn track(&mut self, ok: &OkPacket) -> Result<(), SessionError> {
        self.server_status = ok.status;
        // Only a packet that reports a change can change what is followed.
        if ok.reports_state() {
            results::track(ok, &mut self.settings)?;
            if let Some(why) = self.settings.tracking_lost() {
                return Err(SessionError::Closed(why));
            }
        }
        self.read_only_kept()
    }

    /// Ends the session when a policy sets `readOnly` and the server
    /// reports the session's transactions read-write (a stored function or
    /// a view's function turned it off: Sluice refuses every statement that
    /// could, see `read_only_undo`).
    fn read_only_kept(&self) -> Result<(), SessionError> {
        match &self.read_only {
            Some(policy) if !self.settings.is_read_only() => Err(SessionError::Closed(format!(
                "AccessPolicy {policy:?} sets readOnly, and the server reported {} = {:?}: Sluice closes the session",
                self.settings
                    .read_only_var
                    .unwrap_or("transaction_read_only"),
                self.settings.read_only
            ))),
            _ => Ok(()),
        }
    }

    /// Picks up a changed standing (run mode).
    fn follow(&mut self) {
        if !self.standing.has_changed().unwrap_or(false) {
            return;
        }
        let standing = self.standing.borrow_and_update().clone();
        match standing {
            Standing::Bound { set, plane } => {
                self.decisions.clear(plane.literal_sensitive);
                self.masking = Arc::new(Masking::new(set.clone()));
                self.set = set;
                self.revoked = None;
            }
            other => {
                self.revoked = other.refusal(self.ctx.binding.identity(), &self.ctx.name);
            }
        }
    }
}

/// Whether a text may change the session's settings in a way session
/// tracking does not report (anything but plain SELECT, INSERT, UPDATE and
/// DELETE; a text Sluice could not parse).
fn may_change_settings(decided: &SqlDecision) -> bool {
    use sluice_crds::StatementKind as K;
    decided.parse_error.is_some()
        || decided
            .statements
            .iter()
            .any(|(s, _)| !matches!(s.kind, K::Select | K::Insert | K::Update | K::Delete))
}

/// How a decided text is recorded.
fn command(decided: &SqlDecision) -> AuditCommand {
    AuditCommand {
        text: decided.redacted.clone(),
        fingerprint: decided.fingerprint.clone(),
        kind: decided
            .statements
            .first()
            .map(|(s, _)| s.kind.as_str().to_string()),
    }
}

/// The statement id a prepared statement's command (`command`: a
/// COM_STMT_* byte) starts its `body` with, once the body holds the
/// command's fixed fields: EXECUTE its flags too (5 bytes), FETCH the rows
/// asked for (8), the others the id (4).
fn statement_id(body: &[u8], command: u8) -> Result<u32, PacketError> {
    let (fixed, name) = match command {
        COM_STMT_EXECUTE => (5, "COM_STMT_EXECUTE"),
        COM_STMT_FETCH => (8, "COM_STMT_FETCH"),
        _ => (4, "a prepared statement's command"),
    };
    match body.get(..fixed) {
        Some(b) => Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]])),
        None => Err(PacketError::Malformed(name.into())),
    }
}

fn command_name(c: u8) -> &'static str {
    match c {
        0x04 => "COM_FIELD_LIST",
        0x11 => "COM_CHANGE_USER: switching credentials is never served",
        _ => "unknown or not served",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_statement_id_needs_its_commands_fixed_fields() {
        let body = [7, 1, 0, 0, 1, 2, 0, 0];
        assert_eq!(statement_id(&body, COM_STMT_FETCH).ok(), Some(263));
        assert_eq!(statement_id(&body[..5], COM_STMT_EXECUTE).ok(), Some(263));
        assert_eq!(statement_id(&body[..4], COM_STMT_CLOSE).ok(), Some(263));
        for (short, command) in [
            (7, COM_STMT_FETCH),
            (4, COM_STMT_EXECUTE),
            (3, COM_STMT_RESET),
        ] {
            assert!(statement_id(&body[..short], command).is_err());
        }
    }
}
