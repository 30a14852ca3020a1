//! The session's start: the client's handshake on loopback, the upstream
//! session opened and set up.

use super::*;
use crate::metrics::SessionRefusal;

/// The handshake and the command loop; `opened` is set once the session
/// is on record as started (its end is recorded then, not before).
pub(super) async fn run(
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
        ctx.metrics.session_refused_for(SessionRefusal::NotBound);
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
            ctx.metrics
                .session_refused_for(SessionRefusal::UpstreamUnavailable);
            send_err(&mut socket, 0, 2013, "08S01", &why).await?;
            return Ok(());
        }
    };
    let caps = offered() & greeting.capabilities;
    greet(&mut socket, &greeting, caps).await?;
    let Some(hello) = client_response(ctx, &mut socket, info, caps).await? else {
        return Ok(());
    };
    let mut reply_seq = hello.reply_seq;
    // A policy in force sets readOnly: the server makes the session's
    // transactions read-only (see Session::read_only_undo).
    let read_only: Option<Arc<str>> = standing
        .borrow()
        .set()
        .and_then(|s| s.read_only())
        .map(Arc::from);
    let opening = open_upstream(ctx, io, &greeting, &hello, read_only.is_some()).await;
    let (up, settings) = match opening {
        Ok(opened) => opened,
        Err(why) => {
            let _ = ctx.audit.session_refused(info, &why);
            ctx.metrics
                .session_refused_for(SessionRefusal::UpstreamUnavailable);
            send_err(&mut socket, reply_seq, SESSION_DENIED, "28000", &why).await?;
            return Ok(());
        }
    };
    if let Err(e) = ctx.audit.session_start(info, up.tls, false) {
        let why =
            format!("Sluice refused the session: its audit record could not be written ({e})");
        ctx.metrics.session_refused_for(SessionRefusal::AuditFailed);
        send_err(&mut socket, reply_seq, SESSION_DENIED, "28000", &why).await?;
        return Ok(());
    }
    *opened = true;
    ctx.metrics.session_started();
    let client_caps = hello.caps;
    let ok = OkPacket::with_status(0x0002);
    let mut out = Vec::new();
    packet::write_packet(&mut out, &mut reply_seq, &ok.encode(0, client_caps));
    socket.write_all(&out).await?;
    let literal_sensitive = match &*standing.borrow() {
        Standing::Bound { plane, .. } => plane.literal_sensitive,
        _ => true,
    };
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
        statements: Default::default(),
        sql_statements: Default::default(),
        routines: Default::default(),
        read_only,
        server_status: ok.status,
        cursors: Default::default(),
        opened_cursor: None,
        cursor_asked: false,
        decisions: decisions::Decisions::new(literal_sensitive),
        plan_memo: None,
        variables_tainted: false,
    };
    session.commands().await
}

/// Sends the client the server's greeting with the sidecar's own scramble
/// and `caps`.
async fn greet(
    socket: &mut TcpStream,
    greeting: &upstream::Greeting,
    caps: CapabilityFlags,
) -> std::io::Result<()> {
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
    socket.write_all(&out).await
}

/// What the sidecar takes of the client's handshake response.
struct ClientHello {
    /// The client's capabilities within those offered.
    caps: CapabilityFlags,
    /// The client's collation.
    collation: u8,
    /// The sequence id of the sidecar's answer.
    reply_seq: u8,
}

/// Reads the client's handshake response; `None` when the session was
/// refused (TLS asked for) and the client told.
async fn client_response(
    ctx: &MyContext,
    socket: &mut TcpStream,
    info: &SessionInfo,
    offered: CapabilityFlags,
) -> Result<Option<ClientHello>, SessionError> {
    let response = within(
        ctx.startup_timeout,
        "the client's handshake response",
        packet::read_packet(socket, 64 * 1024, "client"),
    )
    .await?;
    let reply_seq = response.seq.wrapping_add(1);
    let client_caps = match response.payload.get(..4) {
        Some(c) => {
            CapabilityFlags::from_bits_truncate(u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        }
        None => return Err(PacketError::Malformed("handshake response".into()).into()),
    };
    if client_caps.contains(CapabilityFlags::CLIENT_SSL) {
        let why = "Sluice refused the session: the client asked for TLS, which the sidecar does not offer on loopback; connect without TLS (the sidecar speaks TLS to the server)";
        let _ = ctx.audit.session_refused(info, why);
        ctx.metrics.session_refused_for(SessionRefusal::Unsupported);
        send_err(socket, reply_seq, SESSION_DENIED, "28000", why).await?;
        return Ok(None);
    }
    // Only the capabilities and the collation are used: the user name,
    // database and auth data are the Connection's, not the workload's.
    // (Parsed by hand: mysql_common's HandshakeResponse parser spun forever
    // on a response with connection attributes the greeting did not offer.)
    let Some(&collation) = response.payload.get(8) else {
        return Err(PacketError::Malformed("handshake response".into()).into());
    };
    Ok(Some(ClientHello {
        caps: client_caps & offered,
        collation,
        reply_seq,
    }))
}

/// Authenticates upstream with the client's wishes the sidecar passes on,
/// and sets the session up; the error is the client's ERR message.
async fn open_upstream(
    ctx: &MyContext,
    io: Box<dyn upstream::Io>,
    greeting: &upstream::Greeting,
    hello: &ClientHello,
    read_only: bool,
) -> Result<(Upstream, Settings), String> {
    let wanted = hello.caps
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
        upstream::authenticate(&ctx.upstream, io, greeting, wanted, hello.collation),
    )
    .await
    .unwrap_or_else(|_| {
        Err(upstream::UpstreamError::Unsupported(format!(
            "the server did not finish authentication within {}s",
            ctx.startup_timeout.as_secs_f64()
        )))
    });
    let mut up = up.map_err(|e| {
        format!(
            "Sluice could not open the upstream session of Connection {:?}: {e}",
            ctx.name
        )
    })?;
    let prepare = async {
        let var = match read_only {
            true => Some(read_only_variable(&mut up).await?),
            false => None,
        };
        setup(&mut up, var).await
    };
    let set_up = tokio::time::timeout(ctx.startup_timeout, prepare).await;
    let settings = set_up
        .unwrap_or_else(|_| Err("the server did not answer in time".into()))
        .map_err(|why| {
            format!(
                "Sluice could not prepare the upstream session of Connection {:?}: {why}",
                ctx.name
            )
        })?;
    Ok((up, settings))
}

/// The sidecar's own statements at the start of the upstream session: the
/// server reports every change of the settings that change how it reads
/// statements ([`gate::TRACKED`]), and their values now. With
/// `read_only_var` (a policy sets `readOnly`), the session's transactions
/// are made read-only and that variable is followed too.
pub(super) async fn setup(
    up: &mut Upstream,
    read_only_var: Option<&'static str>,
) -> Result<Settings, String> {
    let wanted = Settings {
        read_only_var,
        ..Default::default()
    };
    own(
        up,
        &format!(
            "SET SESSION session_track_system_variables = '{}'",
            wanted.tracked_list()
        ),
        "session tracking",
    )
    .await?;
    if read_only_var.is_some() {
        own(
            up,
            "SET SESSION TRANSACTION READ ONLY",
            "a read-only session",
        )
        .await?;
    }
    let s = read_settings(up, read_only_var).await?;
    if let Some(why) = s.tracking_lost() {
        return Err(why);
    }
    if read_only_var.is_some() && !s.is_read_only() {
        return Err(format!(
            "the server did not make the session read-only ({} is {:?})",
            read_only_var.unwrap_or_default(),
            s.read_only
        ));
    }
    Ok(s)
}

/// Runs one of the sidecar's own statements, answered with OK; the error
/// says the server refused `what`.
pub(super) async fn own(up: &mut Upstream, sql: &str, what: &str) -> Result<(), String> {
    let mut q = vec![COM_QUERY];
    q.extend_from_slice(sql.as_bytes());
    up.command(&q).await.map_err(|e| e.to_string())?;
    let p = up.read().await.map_err(|e| e.to_string())?;
    if p.payload.first() != Some(&0) {
        let (code, _, msg) = packet::parse_err(&p.payload);
        return Err(format!("the server refused {what} ({code}: {msg})"));
    }
    Ok(())
}

/// The name of the variable that makes the session's transactions
/// read-only on this server: `transaction_read_only` (MySQL, MariaDB 11.1
/// and later) or `tx_read_only` (MariaDB before 11.1).
pub(super) async fn read_only_variable(up: &mut Upstream) -> Result<&'static str, String> {
    for name in ["transaction_read_only", "tx_read_only"] {
        let mut q = vec![COM_QUERY];
        q.extend_from_slice(format!("SELECT @@SESSION.{name}").as_bytes());
        up.command(&q).await.map_err(|e| e.to_string())?;
        let head = up.read().await.map_err(|e| e.to_string())?;
        if head.payload.first() == Some(&0xFF) {
            continue;
        }
        // One column definition, one row, the OK that ends them.
        for _ in 0..3 {
            up.read().await.map_err(|e| e.to_string())?;
        }
        return Ok(name);
    }
    Err("the server has neither transaction_read_only nor tx_read_only, so Sluice cannot make the session read-only".into())
}

/// The settings' values now, read with the sidecar's own query, with the
/// current database and `lower_case_table_names`.
pub(super) async fn read_settings(
    up: &mut Upstream,
    read_only_var: Option<&'static str>,
) -> Result<Settings, String> {
    // As binary strings: the server sends them as they are, whatever
    // character_set_results is (a stored function may have set UTF-16).
    // LIMIT 1: a session's sql_select_limit does not apply then.
    let names: Vec<&str> = gate::TRACKED.split(',').chain(read_only_var).collect();
    let columns = names.len() + 2;
    let query = format!(
        "SELECT {}, CAST(DATABASE() AS BINARY), CAST(@@lower_case_table_names AS BINARY) LIMIT 1",
        names
            .iter()
            .map(|n| format!("CAST(@@SESSION.{n} AS BINARY)"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let mut q = vec![COM_QUERY];
    q.extend_from_slice(query.as_bytes());
    up.command(&q).await.map_err(|e| e.to_string())?;
    let head = up.read().await.map_err(|e| e.to_string())?;
    let mut pos = 0;
    let count = packet::lenenc_int(&head.payload, &mut pos)
        .ok()
        .flatten()
        .filter(|n| *n == columns as u64)
        .ok_or("the server's answer to reading the session settings has another number of columns than asked")?;
    for _ in 0..count {
        up.read().await.map_err(|e| e.to_string())?;
    }
    let row = up.read().await.map_err(|e| e.to_string())?;
    if matches!(row.payload.first(), Some(0xFE | 0xFF))
        && row.payload.len() < packet::MAX_WIRE_PAYLOAD
    {
        return Err("the server's answer to reading the session settings has no row".into());
    }
    let mut pos = 0;
    let mut values = Vec::new();
    for _ in 0..columns {
        let v = packet::lenenc_bytes(&row.payload, &mut pos).map_err(|e| e.to_string())?;
        values.push(v.map(|v| String::from_utf8_lossy(v).into_owned()));
    }
    let end = up.read().await.map_err(|e| e.to_string())?;
    if end.payload.first() != Some(&0xFE) {
        return Err(
            "the server's answer to reading the session settings has more than one row".into(),
        );
    }
    let mut s = Settings {
        read_only_var,
        ..Default::default()
    };
    let lower_case = values.pop().flatten();
    s.database = values.pop().flatten();
    // 0: names as written (case sensitive); 1 and 2: looked up in lower case.
    s.lower_case_names = lower_case.as_deref().is_some_and(|v| v.trim() != "0");
    for (name, value) in gate::TRACKED.split(',').chain(read_only_var).zip(values) {
        s.set(name, &value.unwrap_or_default());
    }
    Ok(s)
}
