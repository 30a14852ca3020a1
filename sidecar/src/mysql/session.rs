//! One MySQL client session: the handshake on loopback (the real server's
//! version and capabilities, the sidecar's own scramble, no password asked
//! of the workload), the upstream session opened with the Connection's
//! credentials, then the command loop. MySQL clients wait for each answer
//! before the next command, so one task serves both directions.
//!
//! Commands: COM_QUERY is decided per statement (a string with any
//! refused statement is refused whole), put on record before it runs, and
//! its results masked; COM_PING, COM_INIT_DB (decided as `USE`),
//! COM_SET_OPTION, COM_STATISTICS, COM_RESET_CONNECTION (tracking set up
//! again) and COM_QUIT are passed on; everything else (prepared
//! statements, COM_CHANGE_USER, …) is
//! answered with an ERR packet saying it is not served.

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

use super::gate::{self, Settings};
use super::packet::{self, PacketError};
use super::results::{self, MORE_RESULTS, OkPacket};
use super::upstream::{self, MyUpstream, Upstream};
use crate::audit::{AuditLog, SessionInfo};
use crate::masking::Masking;
use crate::standing::{Binding, Standing};

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
const COM_STMT_SEND_LONG_DATA: u8 = 0x18;
const COM_STMT_CLOSE: u8 = 0x19;
const COM_SET_OPTION: u8 = 0x1b;
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

/// The handshake and the command loop; `opened` is set once the session
/// is on record as started (its end is recorded then, not before).
async fn run(
    ctx: &MyContext,
    mut socket: TcpStream,
    info: &SessionInfo,
    opened: &mut bool,
) -> Result<(), SessionError> {
    let standing = ctx.binding.standing.clone();
    let refusal = standing
        .borrow()
        .refusal(ctx.binding.identity(), &ctx.name)
        .map(|why| format!("Sluice refused the session: {why}"))
        .or_else(|| ctx.unserved.clone());
    if let Some(why) = refusal {
        let _ = ctx.audit.session_refused(info, &why);
        send_err(&mut socket, 0, SESSION_DENIED, "28000", &why).await?;
        return Ok(());
    }
    // Connect upstream first: the client is shown the real server.
    let connecting = tokio::time::timeout(ctx.startup_timeout, upstream::connect(&ctx.upstream));
    let connected = connecting.await.unwrap_or_else(|_| {
        Err(upstream::UpstreamError::Unsupported(format!(
            "the server did not greet within {}s",
            ctx.startup_timeout.as_secs_f64()
        )))
    });
    let (io, greeting) = match connected {
        Ok(g) => g,
        Err(e) => {
            let why = format!(
                "Sluice could not open the upstream session of Connection {:?}: {e}",
                ctx.name
            );
            let _ = ctx.audit.session_refused(info, &why);
            send_err(&mut socket, 0, 2013, "08S01", &why).await?;
            return Ok(());
        }
    };
    let caps = offered() & greeting.capabilities;
    let scramble: [u8; 20] = std::array::from_fn(|_| {
        // Printable, non-NUL bytes, as servers send.
        rand::random_range(b'!'..=b'~')
    });
    // The second part as servers send it: 12 bytes and a NUL (clients
    // read at least 13).
    let mut part2 = scramble[8..].to_vec();
    part2.push(0);
    let hello = HandshakePacket::new(
        10,
        greeting.server_version.as_slice(),
        greeting.connection_id,
        scramble[..8].try_into().unwrap_or([b'a'; 8]),
        Some(part2.as_slice()),
        caps,
        greeting.collation,
        mysql_common::constants::StatusFlags::from_bits_truncate(greeting.status),
        Some(&b"mysql_native_password"[..]),
    );
    let mut payload = Vec::new();
    hello.serialize(&mut payload);
    let mut out = Vec::new();
    let mut seq = 0;
    packet::write_packet(&mut out, &mut seq, &payload);
    socket.write_all(&out).await?;
    let response = within(
        ctx.startup_timeout,
        "the client's handshake response",
        packet::read_packet(&mut socket, 64 * 1024, "client"),
    )
    .await?;
    let mut reply_seq = response.seq.wrapping_add(1);
    let client_caps = match response.payload.get(..4) {
        Some(c) => {
            CapabilityFlags::from_bits_truncate(u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        }
        None => return Err(PacketError::Malformed("handshake response".into()).into()),
    };
    if client_caps.contains(CapabilityFlags::CLIENT_SSL) {
        let why = "Sluice refused the session: the client asked for TLS, which the sidecar does not offer on loopback; connect without TLS (the sidecar speaks TLS to the server)";
        let _ = ctx.audit.session_refused(info, why);
        send_err(&mut socket, reply_seq, SESSION_DENIED, "28000", why).await?;
        return Ok(());
    }
    // Only the capabilities and the collation are used: the user name,
    // database and auth data are the Connection's, not the workload's.
    // (Parsed by hand: mysql_common's HandshakeResponse parser spun forever
    // on a response with connection attributes the greeting did not offer.)
    let Some(&collation) = response.payload.get(8) else {
        return Err(PacketError::Malformed("handshake response".into()).into());
    };
    let client_caps = client_caps & caps;
    let wanted = client_caps
        & (CapabilityFlags::CLIENT_MULTI_STATEMENTS
            | CapabilityFlags::CLIENT_MULTI_RESULTS
            | CapabilityFlags::CLIENT_PS_MULTI_RESULTS
            | CapabilityFlags::CLIENT_FOUND_ROWS
            | CapabilityFlags::CLIENT_LONG_FLAG
            | CapabilityFlags::CLIENT_LONG_PASSWORD
            | CapabilityFlags::CLIENT_INTERACTIVE
            | CapabilityFlags::CLIENT_IGNORE_SIGPIPE
            | CapabilityFlags::CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA);
    let up = tokio::time::timeout(
        ctx.startup_timeout,
        upstream::authenticate(&ctx.upstream, io, &greeting, wanted, collation),
    )
    .await
    .unwrap_or_else(|_| {
        Err(upstream::UpstreamError::Unsupported(format!(
            "the server did not finish authentication within {}s",
            ctx.startup_timeout.as_secs_f64()
        )))
    });
    let mut up = match up {
        Ok(up) => up,
        Err(e) => {
            let why = format!(
                "Sluice could not open the upstream session of Connection {:?}: {e}",
                ctx.name
            );
            let _ = ctx.audit.session_refused(info, &why);
            send_err(&mut socket, reply_seq, SESSION_DENIED, "28000", &why).await?;
            return Ok(());
        }
    };
    let set_up = tokio::time::timeout(ctx.startup_timeout, setup(&mut up)).await;
    let set_up = set_up.unwrap_or_else(|_| Err("the server did not answer in time".into()));
    let settings = match set_up {
        Ok(s) => s,
        Err(why) => {
            let why = format!(
                "Sluice could not prepare the upstream session of Connection {:?}: {why}",
                ctx.name
            );
            let _ = ctx.audit.session_refused(info, &why);
            send_err(&mut socket, reply_seq, SESSION_DENIED, "28000", &why).await?;
            return Ok(());
        }
    };
    if let Err(e) = ctx.audit.session_start(info, up.tls, false) {
        let why =
            format!("Sluice refused the session: its audit record could not be written ({e})");
        send_err(&mut socket, reply_seq, SESSION_DENIED, "28000", &why).await?;
        return Ok(());
    }
    *opened = true;
    let ok = OkPacket::with_status(0x0002);
    let mut out = Vec::new();
    packet::write_packet(&mut out, &mut reply_seq, &ok.encode(0, client_caps));
    socket.write_all(&out).await?;
    let Some(set) = standing.borrow().set().cloned() else {
        return Err(SessionError::Closed(
            "the standing changed during the handshake".into(),
        ));
    };
    let mut session = Session {
        ctx,
        info,
        client: socket,
        up,
        client_caps,
        masking: Arc::new(Masking::new(set.clone())),
        set,
        standing,
        revoked: None,
        settings,
    };
    session.commands().await
}

/// The sidecar's own statements at the start of the upstream session: the
/// server reports every change of the settings that change how it reads
/// statements ([`gate::TRACKED`]), and their values now.
async fn setup(up: &mut Upstream) -> Result<Settings, String> {
    track(up).await?;
    let s = read_settings(up).await?;
    if let Some(why) = s.tracking_lost() {
        return Err(why);
    }
    Ok(s)
}

/// Has the server track [`gate::TRACKED`].
async fn track(up: &mut Upstream) -> Result<(), String> {
    let track = format!(
        "SET SESSION session_track_system_variables = '{}'",
        gate::TRACKED
    );
    let mut q = vec![COM_QUERY];
    q.extend_from_slice(track.as_bytes());
    up.command(&q).await.map_err(|e| e.to_string())?;
    let p = up.read().await.map_err(|e| e.to_string())?;
    if p.payload.first() != Some(&0) {
        let (code, _, msg) = packet::parse_err(&p.payload);
        return Err(format!(
            "the server refused session tracking ({code}: {msg})"
        ));
    }
    Ok(())
}

/// The settings' values now, read with the sidecar's own query.
async fn read_settings(up: &mut Upstream) -> Result<Settings, String> {
    let query = "SELECT @@SESSION.sql_mode, @@SESSION.character_set_client, @@SESSION.character_set_connection, @@SESSION.character_set_results, @@SESSION.session_track_system_variables";
    let mut q = vec![COM_QUERY];
    q.extend_from_slice(query.as_bytes());
    up.command(&q).await.map_err(|e| e.to_string())?;
    let head = up.read().await.map_err(|e| e.to_string())?;
    let mut pos = 0;
    let count = packet::lenenc_int(&head.payload, &mut pos)
        .ok()
        .flatten()
        .filter(|n| *n == 5)
        .ok_or("the server's answer to reading the session settings is not 5 columns")?;
    for _ in 0..count {
        up.read().await.map_err(|e| e.to_string())?;
    }
    let row = up.read().await.map_err(|e| e.to_string())?;
    let mut pos = 0;
    let mut values = Vec::new();
    for _ in 0..5 {
        let v = packet::lenenc_bytes(&row.payload, &mut pos).map_err(|e| e.to_string())?;
        values.push(String::from_utf8_lossy(v.unwrap_or_default()).into_owned());
    }
    let end = up.read().await.map_err(|e| e.to_string())?;
    if end.payload.first() != Some(&0xFE) {
        return Err(
            "the server's answer to reading the session settings has more than one row".into(),
        );
    }
    let mut s = Settings::default();
    for (name, value) in gate::TRACKED.split(',').zip(values) {
        s.set(name, &value);
    }
    Ok(s)
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

/// How a COM_QUERY's results went, for its result record.
#[derive(Default)]
struct Outcome {
    rows: u64,
    masked: u64,
    error: Option<String>,
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
                COM_STATISTICS => {
                    self.up.command(&p.payload).await?;
                    let a = self.up.read().await?;
                    let mut reply = Reply::new(reply_seq);
                    reply.push(&a.payload);
                    self.client.write_all(&reply.out).await?;
                }
                COM_RESET_CONNECTION => {
                    // The server resets the session to its defaults, the
                    // sidecar's tracking included: set up again before the
                    // client hears back.
                    self.up.command(&p.payload).await?;
                    let a = self.up.read().await?;
                    let mut reply = Reply::new(reply_seq);
                    if a.payload.first() == Some(&0) {
                        self.settings = setup(&mut self.up).await.map_err(SessionError::Closed)?;
                        reply.push(&OkPacket::with_status(0x0002).encode(0, self.client_caps));
                    } else {
                        reply.push(&a.payload);
                    }
                    self.client.write_all(&reply.out).await?;
                }
                // No answer is expected: the statement they name was never
                // prepared (COM_STMT_PREPARE is refused).
                COM_STMT_SEND_LONG_DATA | COM_STMT_CLOSE => {}
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
        results::track(ok, &mut self.settings)?;
        if let Some(why) = self.settings.tracking_lost() {
            return Err(SessionError::Closed(why));
        }
        Ok(())
    }

    /// Picks up a changed standing (run mode).
    fn follow(&mut self) {
        if !self.standing.has_changed().unwrap_or(false) {
            return;
        }
        let standing = self.standing.borrow_and_update().clone();
        match standing {
            Standing::Bound { set, .. } => {
                self.masking = Arc::new(Masking::new(set.clone()));
                self.set = set;
                self.revoked = None;
            }
            other => {
                self.revoked = other.refusal(self.ctx.binding.identity(), &self.ctx.name);
            }
        }
    }

    /// Why a decided text may not run (`None`: it may).
    fn refusal(&self, text: &str, decided: &SqlDecision) -> Option<String> {
        if let Some(why) = &self.revoked {
            return Some(format!("statement refused by Sluice: {why}"));
        }
        if let Some(why) = &self.ctx.unserved {
            return Some(why.clone());
        }
        let d = &decided.decision;
        let which = || {
            format!(
                "policy {:?}, rule {:?}",
                d.enforced_policy
                    .as_deref()
                    .or(d.policy.as_deref())
                    .unwrap_or("-"),
                d.enforced_rule
                    .as_deref()
                    .or(d.rule.as_deref())
                    .unwrap_or("(default or parse error)")
            )
        };
        if decided.too_complex {
            return Some(format!("statement refused by Sluice: {}", d.reason));
        }
        match d.enforced {
            Action::Allow => {}
            Action::Deny => {
                let mut msg = format!("statement denied by Sluice: {} ({})", d.reason, which());
                let n = decided.statements.len();
                if n > 1 {
                    let at = decided
                        .statements
                        .iter()
                        .position(|(_, s)| s.enforced == Action::Deny)
                        .map_or(1, |i| i + 1);
                    msg.push_str(&format!(
                        "; statement {at} of {n} is denied, so the whole query string was refused and none of it ran"
                    ));
                }
                return Some(msg);
            }
            Action::RequireApproval => {
                return Some(format!(
                    "statement needs approval ({}; {}), and approvals are not served on MySQL Connections by this sidecar yet: refused",
                    d.reason,
                    which()
                ));
            }
        }
        if let Some(why) = decided
            .statements
            .iter()
            .find_map(|(s, _)| s.refused.clone())
        {
            return Some(format!("statement refused by Sluice: {why}"));
        }
        let limits = self.masking.limits();
        if limits.max_rows_affected.is_some() || self.masking.read_only().is_some() {
            return Some(
                "statement refused by Sluice: the AccessPolicy sets maxRowsAffected or readOnly, which the MySQL plane does not enforce yet; every statement is refused rather than run unguarded".into(),
            );
        }
        if text.to_ascii_lowercase().contains("session_track") {
            return Some("statement refused by Sluice: the session's tracking settings (session_track_*) are Sluice's own; it follows sql_mode and the character sets through them".into());
        }
        // A statement that may change how the server reads the next ones
        // must come last in a string: the string was decided under the
        // settings in force when it arrived.
        let n = decided.statements.len();
        if n > 1
            && let Some((s, _)) = decided.statements[..n - 1].iter().find(|(s, _)| {
                !matches!(
                    s.kind,
                    sluice_crds::StatementKind::Select
                        | sluice_crds::StatementKind::Insert
                        | sluice_crds::StatementKind::Update
                        | sluice_crds::StatementKind::Delete
                )
            })
        {
            return Some(format!(
                "statement refused by Sluice: a {} statement may change how the server reads the statements after it; send it on its own, not followed by more statements in one string",
                s.kind.as_str()
            ));
        }
        let rate = self.set.limits().statements_per_second;
        if !self.ctx.binding.rate().admit(rate) {
            return Some(crate::rate::exceeded(rate.unwrap_or(0), &self.ctx.name));
        }
        None
    }

    /// A COM_QUERY: gated, decided, put on record, forwarded, its results
    /// relayed and masked; or refused with an ERR packet (the session goes on).
    async fn query(
        &mut self,
        text: Result<String, std::string::FromUtf8Error>,
        forward: &[u8],
        reply_seq: u8,
    ) -> Result<(), SessionError> {
        self.follow();
        let Ok(text) = text else {
            let why = "statement refused by Sluice: the statement text is not valid UTF-8; Sluice decides UTF-8 (utf8mb4) texts only";
            return self.refuse_undecided(why, reply_seq).await;
        };
        // The reading the server will make: settings first, then MySQL's lexer.
        let lexing = self.settings.refusal(&text).map_or_else(
            || {
                gate::lexical_gate(&text, false, false)
                    .map_err(|why| format!("statement refused by Sluice: {why}"))
            },
            |why| Err(format!("statement refused by Sluice: {why}")),
        );
        let count = match lexing {
            Ok(n) => n,
            Err(why) => return self.refuse_undecided(&why, reply_seq).await,
        };
        let decided = self.set.decide_sql(&text, SqlDialect::Mysql);
        if decided.parse_error.is_none() && decided.statements.len() != count {
            let why = format!(
                "statement refused by Sluice: MySQL splits this text into {count} statements and Sluice's parser into {}; it is not decided on a reading other than the server's",
                decided.statements.len()
            );
            return self.refuse_undecided(&why, reply_seq).await;
        }
        if let Some(why) = self.refusal(&text, &decided) {
            let _ = self.record(&decided, Some(&why));
            let mut reply = Reply::new(reply_seq);
            reply.push(&packet::err_payload(ACCESS_DENIED, "42000", &why));
            self.client.write_all(&reply.out).await?;
            return Ok(());
        }
        // Write-ahead: on record before it runs.
        if let Err(e) = self.record(&decided, None) {
            let why = format!(
                "statement not run: Sluice could not write its audit record ({e}); audit is write-ahead"
            );
            let mut reply = Reply::new(reply_seq);
            reply.push(&packet::err_payload(ACCESS_DENIED, "HY000", &why));
            self.client.write_all(&reply.out).await?;
            return Ok(());
        }
        // The server reports a view's columns with the view as their
        // origin: which of the tables the text reads are views.
        let views = if self.masking.has_column_rules() {
            self.views(&decided).await?
        } else {
            Vec::new()
        };
        let started = Instant::now();
        self.up.command(forward).await?;
        let warnings = {
            let t = text.trim_start().to_ascii_lowercase();
            t.starts_with("show") && (t.contains("warnings") || t.contains("errors"))
        };
        let outcome = self.relay(&decided, reply_seq, warnings, &views).await?;
        if may_change_settings(&decided) {
            self.recheck().await?;
        }
        let _ = self.ctx.audit.event(
            self.info,
            AuditKind::Result,
            Some(command(&decided)),
            None,
            Some(AuditOutcome {
                rows: Some(outcome.rows),
                duration_ms: Some(started.elapsed().as_millis() as u64),
                error: outcome.error,
                masked: (outcome.masked > 0).then_some(outcome.masked),
                recorded: None,
            }),
            false,
        );
        Ok(())
    }

    /// Which of the tables `decided` reads are views (names in lower case,
    /// any schema: a base table that shares a view's name is treated as
    /// one). Asked of the server before the text runs; when it cannot tell,
    /// every table counts as a view.
    async fn views(&mut self, decided: &SqlDecision) -> Result<Vec<String>, SessionError> {
        let names: Vec<String> = decided
            .statements
            .iter()
            .flat_map(|(s, _)| s.tables.iter())
            .map(|t| {
                t.rsplit('.')
                    .next()
                    .unwrap_or(t)
                    .trim_matches('`')
                    .to_lowercase()
            })
            .collect();
        if names.is_empty() {
            return Ok(Vec::new());
        }
        if names.iter().any(|n| n.contains(['\\', '\''])) {
            return Ok(names);
        }
        let list: Vec<String> = names.iter().map(|n| format!("'{n}'")).collect();
        let sql = format!(
            "SELECT LOWER(TABLE_NAME) FROM information_schema.VIEWS WHERE LOWER(TABLE_NAME) IN ({})",
            list.join(",")
        );
        let mut q = vec![COM_QUERY];
        q.extend_from_slice(sql.as_bytes());
        self.up.command(&q).await?;
        let head = self.up.read().await?;
        match head.payload.first() {
            Some(0xFF) => return Ok(names),
            Some(0x00) => return Ok(Vec::new()),
            _ => {}
        }
        // One column definition, then rows until the OK that ends them.
        self.up.read().await?;
        let mut views = Vec::new();
        loop {
            let r = self.up.read().await?;
            match r.payload.first() {
                Some(0xFE) if r.payload.len() < packet::MAX_WIRE_PAYLOAD => {
                    let ok = OkPacket::parse(&r.payload)?;
                    self.track(&ok)?;
                    return Ok(views);
                }
                Some(0xFF) => return Ok(names),
                _ => {
                    let mut pos = 0;
                    if let Some(v) = packet::lenenc_bytes(&r.payload, &mut pos)? {
                        views.push(String::from_utf8_lossy(v).into_owned());
                    }
                }
            }
        }
    }

    /// After a statement that may have changed the session's tracking
    /// itself (a procedure, dynamic SQL, …: the server would not report
    /// that), reads the settings again, and sets tracking up again when it
    /// was changed.
    async fn recheck(&mut self) -> Result<(), SessionError> {
        let mut s = read_settings(&mut self.up)
            .await
            .map_err(SessionError::Closed)?;
        if s.tracking_lost().is_some() {
            tracing::info!("the session's tracking was changed by a statement; set up again");
            s = setup(&mut self.up).await.map_err(SessionError::Closed)?;
        }
        self.settings = s;
        Ok(())
    }

    /// Refuses a text before it is decided (the session's settings or the
    /// lexer say it would be read otherwise): recorded without its text.
    async fn refuse_undecided(&mut self, why: &str, reply_seq: u8) -> Result<(), SessionError> {
        let decision = AuditDecision {
            action: Action::Deny,
            policy: None,
            rule: None,
            dry_run: false,
            reason: Some(format!("{why} (mysql text protocol)")),
        };
        let cmd = AuditCommand {
            text: "<not decided: refused before parsing>".into(),
            fingerprint: String::new(),
            kind: None,
        };
        let _ = self.ctx.audit.event(
            self.info,
            AuditKind::Denial,
            Some(cmd),
            Some(decision),
            None,
            true,
        );
        let mut reply = Reply::new(reply_seq);
        reply.push(&packet::err_payload(ACCESS_DENIED, "42000", why));
        self.client.write_all(&reply.out).await?;
        Ok(())
    }

    /// The decision's audit record: a statement event (durable) or, with
    /// `refused`, a denial.
    fn record(
        &self,
        decided: &SqlDecision,
        refused: Option<&str>,
    ) -> Result<u64, crate::audit::AuditError> {
        let d = &decided.decision;
        let (kind, action, reason) = match refused {
            Some(why) if d.enforced == Action::Allow => {
                (AuditKind::Denial, Action::Deny, why.to_string())
            }
            Some(_) => (AuditKind::Denial, d.action, d.reason.clone()),
            None => (AuditKind::Statement, d.action, d.reason.clone()),
        };
        let decision = AuditDecision {
            action,
            policy: d.policy.clone(),
            rule: d.rule.clone(),
            dry_run: d.dry_run,
            reason: Some(format!("{reason} (mysql text protocol)")),
        };
        self.ctx.audit.event(
            self.info,
            kind,
            Some(command(decided)),
            Some(decision),
            None,
            true,
        )
    }

    /// Relays the server's answer to a forwarded COM_QUERY.
    async fn relay(
        &mut self,
        decided: &SqlDecision,
        reply_seq: u8,
        warnings: bool,
        views: &[String],
    ) -> Result<Outcome, SessionError> {
        let mut reply = Reply::new(reply_seq);
        let mut outcome = Outcome::default();
        let mut index = 0;
        let limits = self.masking.limits().clone();
        let detect = self.masking.active() && self.set.detectors().is_some();
        loop {
            let p = self.up.read().await?;
            match p.payload.first() {
                Some(0x00) => {
                    let ok = OkPacket::parse(&p.payload)?;
                    self.track(&ok)?;
                    reply.push(&ok.encode(0, self.client_caps));
                    if ok.status & MORE_RESULTS == 0 {
                        break;
                    }
                    index += 1;
                }
                Some(0xFF) => {
                    let scrub = results::reads_masked(&self.masking, decided, index);
                    let err = results::scrub_err(&p.payload, &self.masking, scrub);
                    outcome.error = Some(packet::parse_err(&err).2);
                    reply.push(&err);
                    break;
                }
                Some(0xFB) => {
                    // LOCAL INFILE request: never offered; the server gets
                    // an empty file and the client an error.
                    self.up.send(p.seq.wrapping_add(1), &[]).await?;
                    let _ = self.up.read().await?;
                    let msg = "LOAD DATA LOCAL is refused by Sluice: the sidecar never offers CLIENT_LOCAL_FILES";
                    outcome.error = Some(msg.into());
                    reply.push(&packet::err_payload(ACCESS_DENIED, "42000", msg));
                    break;
                }
                _ => {
                    let more = self
                        .result_set(
                            &p.payload,
                            decided,
                            index,
                            &mut reply,
                            &mut outcome,
                            &limits,
                            detect,
                            (warnings, views),
                        )
                        .await?;
                    if !more {
                        break;
                    }
                    index += 1;
                }
            }
            if reply.out.len() > 64 * 1024 {
                self.client.write_all(&reply.out).await?;
                reply.out.clear();
            }
        }
        self.client.write_all(&reply.out).await?;
        Ok(outcome)
    }

    /// One result set; returns whether more results follow.
    #[allow(clippy::too_many_arguments)]
    async fn result_set(
        &mut self,
        head: &[u8],
        decided: &SqlDecision,
        index: usize,
        reply: &mut Reply,
        outcome: &mut Outcome,
        limits: &crate::masking::ResultLimits,
        detect: bool,
        (warnings, views): (bool, &[String]),
    ) -> Result<bool, SessionError> {
        let mut pos = 0;
        let count = packet::lenenc_int(head, &mut pos)?
            .filter(|n| *n > 0 && *n <= 4096)
            .ok_or_else(|| PacketError::Malformed("result set column count".into()))?;
        reply.push(head);
        let mut columns = Vec::new();
        for _ in 0..count {
            let c = self.up.read().await?;
            columns.push(results::column(&c.payload)?);
            reply.push(&c.payload);
        }
        let eof_client = !self
            .client_caps
            .contains(CapabilityFlags::CLIENT_DEPRECATE_EOF);
        if eof_client {
            reply.push(&OkPacket::default().eof());
        }
        let mut plan = results::plan(&self.masking, decided, index, &columns, warnings);
        if !views.is_empty() {
            results::mask_views(&self.masking, decided, &columns, &mut plan, views);
        }
        let masks = plan.iter().any(|c| c.rule.is_some()) || detect;
        let mut rows = 0u64;
        let mut past_max = false;
        loop {
            let r = self.up.read().await?;
            match r.payload.first() {
                Some(0xFE) if r.payload.len() < packet::MAX_WIRE_PAYLOAD => {
                    let ok = OkPacket::parse(&r.payload)?;
                    self.track(&ok)?;
                    outcome.rows += rows;
                    if past_max && limits.refuse_past_max {
                        // Refused: the client gets an error, the rest is drained.
                        let msg = format!(
                            "result refused by Sluice: more than {} rows, the maxRows limit of the AccessPolicy",
                            limits.max_rows.unwrap_or(0)
                        );
                        reply.push(&packet::err_payload(ACCESS_DENIED, "42000", &msg));
                        outcome.error = Some(msg);
                        if ok.status & MORE_RESULTS != 0 {
                            self.drain().await?;
                        }
                        return Ok(false);
                    }
                    if eof_client {
                        reply.push(&ok.eof());
                    } else {
                        reply.push(&ok.encode(0xFE, self.client_caps));
                    }
                    return Ok(ok.status & MORE_RESULTS != 0);
                }
                Some(0xFF) => {
                    let scrub = results::reads_masked(&self.masking, decided, index);
                    let err = results::scrub_err(&r.payload, &self.masking, scrub);
                    outcome.error = Some(packet::parse_err(&err).2);
                    reply.push(&err);
                    return Ok(false);
                }
                _ => {
                    rows += 1;
                    if limits.max_rows.is_some_and(|m| rows > m) {
                        past_max = true;
                        rows -= 1;
                        continue;
                    }
                    let masked = if masks {
                        results::mask_row(&r.payload, &plan, &self.masking, detect)?
                    } else {
                        None
                    };
                    match masked {
                        Some((row, n)) => {
                            outcome.masked += n;
                            reply.push(&row);
                        }
                        None => reply.push(&r.payload),
                    }
                    if reply.out.len() > 64 * 1024 {
                        self.client.write_all(&reply.out).await?;
                        reply.out.clear();
                    }
                }
            }
        }
    }

    /// Reads and drops the rest of an answer (after a refused result).
    async fn drain(&mut self) -> Result<(), SessionError> {
        let mut in_rows = false;
        loop {
            let p = self.up.read().await?;
            match p.payload.first() {
                Some(0x00) if !in_rows => {
                    let ok = OkPacket::parse(&p.payload)?;
                    self.track(&ok)?;
                    if ok.status & MORE_RESULTS == 0 {
                        return Ok(());
                    }
                }
                Some(0xFE) if in_rows && p.payload.len() < packet::MAX_WIRE_PAYLOAD => {
                    let ok = OkPacket::parse(&p.payload)?;
                    self.track(&ok)?;
                    if ok.status & MORE_RESULTS == 0 {
                        return Ok(());
                    }
                    in_rows = false;
                }
                Some(0xFF) => return Ok(()),
                _ if !in_rows => {
                    let mut pos = 0;
                    let n = packet::lenenc_int(&p.payload, &mut pos)?.unwrap_or(0);
                    for _ in 0..n {
                        self.up.read().await?;
                    }
                    in_rows = true;
                }
                _ => {}
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

fn command_name(c: u8) -> &'static str {
    match c {
        0x04 => "COM_FIELD_LIST",
        0x11 => "COM_CHANGE_USER: switching credentials is never served",
        0x16 => "COM_STMT_PREPARE: prepared statements",
        0x17 => "COM_STMT_EXECUTE: prepared statements",
        0x1a => "COM_STMT_RESET: prepared statements",
        0x1c => "COM_STMT_FETCH: prepared statements",
        _ => "unknown or not served",
    }
}
