//! The connection from the sidecar to the upstream PostgreSQL server: TCP,
//! optional TLS, startup and authentication with the held credential
//! (SCRAM-SHA-256 with channel binding when TLS allows it, MD5, cleartext).

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use postgres_protocol::authentication::sasl::{self, ChannelBinding, ScramSha256};
use postgres_protocol::message::frontend;
use rustls::ClientConfig;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use zeroize::Zeroizing;

use super::framing::{Frame, FrameReader, FramingError, Peer};
use super::messages::{backend, error_response, startup};
use super::tls;

/// How long connecting and authenticating to the upstream may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);

/// The most SCRAM-SHA-256 iterations (PBKDF2 rounds) Sluice computes for an
/// upstream: PostgreSQL defaults to 4096 (`scram_iterations`); 100,000 is
/// also the most the postgres-protocol crate computes (it refuses more with
/// a message that names no number). A server asking for more is refused
/// before any work, with an error naming the count and this maximum: a
/// hostile upstream must not buy CPU time per session.
pub const MAX_SCRAM_ITERATIONS: u64 = 100_000;

/// The iteration count (`i=`) of a SCRAM server-first-message (RFC 5802
/// §7); 0 when absent or not a number (the SCRAM state machine then refuses
/// the message), `u64::MAX` when it does not fit.
fn scram_iterations(server_first: &[u8]) -> u64 {
    let Some(value) = server_first
        .split(|b| *b == b',')
        .find_map(|attr| attr.strip_prefix(b"i="))
    else {
        return 0;
    };
    if value.is_empty() || !value.iter().all(u8::is_ascii_digit) {
        return 0;
    }
    value.iter().fold(0u64, |n, d| {
        n.saturating_mul(10).saturating_add(u64::from(d - b'0'))
    })
}

/// Everything needed to open a session to the upstream.
#[derive(Clone)]
pub struct UpstreamConfig {
    /// The Connection's name (for messages).
    pub connection: String,
    /// Host name or address.
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// Database.
    pub database: String,
    /// User name from the Secret.
    pub username: String,
    /// Password from the Secret; never logged, zeroized on drop.
    pub password: Arc<Zeroizing<String>>,
    /// The TLS mode in force.
    pub tls_mode: sluice_crds::TlsMode,
    /// rustls configuration, `None` for `disable`.
    pub tls: Option<Arc<ClientConfig>>,
    /// Largest message accepted from the server.
    pub max_message_size: usize,
}

impl UpstreamConfig {
    /// The upstream of a postgres Connection named `connection`: `host`, the
    /// spec's port (PostgreSQL's by default), database (the user name by
    /// default) and TLS mode (with `ca`, the CA to trust, if the Connection
    /// names one), and the credentials. Standalone and run mode differ only
    /// in where these come from.
    pub fn new(
        connection: &str,
        spec: &sluice_crds::ConnectionSpec,
        host: String,
        username: String,
        password: Zeroizing<String>,
        ca: Option<&[u8]>,
        max_message_size: usize,
    ) -> Result<Self, tls::TlsError> {
        let tls_mode = spec.upstream.tls_mode();
        let tls = tls::client_config(connection, tls_mode, ca)?;
        Ok(UpstreamConfig {
            connection: connection.to_string(),
            host,
            port: spec
                .upstream
                .port
                .unwrap_or(sluice_crds::Protocol::Postgres.default_port()),
            database: spec
                .upstream
                .database
                .clone()
                .unwrap_or_else(|| username.clone()),
            username,
            password: Arc::new(password),
            tls_mode,
            tls,
            max_message_size,
        })
    }
}

impl std::fmt::Debug for UpstreamConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamConfig")
            .field("connection", &self.connection)
            .field("host", &self.host)
            .field("port", &self.port)
            .field("database", &self.database)
            .field("username", &self.username)
            .field("tls_mode", &tls::mode_name(self.tls_mode))
            .finish_non_exhaustive()
    }
}

/// Why the upstream session could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// TCP connect failed.
    #[error("cannot reach {host}:{port}: {source}")]
    Connect {
        /// Host.
        host: String,
        /// Port.
        port: u16,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// It took too long.
    #[error("connecting to {host}:{port} timed out after {}s", CONNECT_TIMEOUT.as_secs())]
    Timeout {
        /// Host.
        host: String,
        /// Port.
        port: u16,
    },
    /// I/O after connecting.
    #[error("talking to the upstream failed: {0}")]
    Io(#[source] std::io::Error),
    /// Framing error.
    #[error(transparent)]
    Framing(#[from] FramingError),
    /// The server refused TLS although the mode requires it.
    #[error("the upstream refused TLS, but tls mode {mode} requires it")]
    TlsRefused {
        /// The mode.
        mode: &'static str,
    },
    /// The host is not a valid TLS server name.
    #[error("{host} is not a valid TLS server name")]
    BadServerName {
        /// Host.
        host: String,
    },
    /// The TLS handshake failed.
    #[error("TLS handshake with {host} failed (tls mode {mode}): {source}")]
    Handshake {
        /// Host.
        host: String,
        /// The mode.
        mode: &'static str,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The server rejected the session (bad credentials, no such database, …).
    #[error("the upstream refused the session: {message} (SQLSTATE {code})")]
    Rejected {
        /// SQLSTATE.
        code: String,
        /// The server's message.
        message: String,
    },
    /// An authentication method the sidecar does not implement.
    #[error(
        "the upstream asks for authentication method {method}, which Sluice does not support; use scram-sha-256, md5 or password in pg_hba.conf"
    )]
    UnsupportedAuth {
        /// The method code.
        method: i32,
    },
    /// SCRAM failed (e.g. the server's signature did not verify).
    #[error("SCRAM authentication failed: {0}")]
    Scram(#[source] std::io::Error),
    /// The server asked for more SCRAM iterations than Sluice computes.
    #[error(
        "the upstream asks for {asked} SCRAM-SHA-256 iterations, above the maximum of {max} Sluice \
         computes (PostgreSQL's default is 4096; lower scram_iterations and reset the role's password)"
    )]
    ScramIterations {
        /// The iteration count the server sent (saturated at `u64::MAX`).
        asked: u64,
        /// [`MAX_SCRAM_ITERATIONS`].
        max: u64,
    },
    /// Something unexpected was sent.
    #[error("unexpected message {tag:?} from the upstream during {phase}")]
    Unexpected {
        /// The type byte.
        tag: char,
        /// Where.
        phase: &'static str,
    },
}

/// A socket half, boxed so plain and TLS streams look the same.
pub type ReadHalf = Box<dyn AsyncRead + Send + Sync + Unpin>;
/// A socket half, boxed so plain and TLS streams look the same.
pub type WriteHalf = Box<dyn AsyncWrite + Send + Sync + Unpin>;

/// An authenticated upstream session, ready for queries.
pub struct UpstreamSession {
    /// Framed reads from the server.
    pub reader: FrameReader<ReadHalf>,
    /// Writes to the server.
    pub writer: WriteHalf,
    /// ParameterStatus and NoticeResponse messages sent during startup, to relay.
    pub startup_messages: Vec<Frame>,
    /// The server's (process id, secret key), for cancelling.
    pub backend_key: (i32, i32),
    /// Whether the stream is TLS.
    pub tls: bool,
    /// Whether SCRAM used channel binding.
    pub channel_binding: bool,
}

/// Opens TCP (and TLS if the mode asks for it) to the upstream.
async fn open(
    cfg: &UpstreamConfig,
) -> Result<(ReadHalf, WriteHalf, Option<Vec<u8>>), UpstreamError> {
    let mut tcp = TcpStream::connect((cfg.host.as_str(), cfg.port))
        .await
        .map_err(|source| UpstreamError::Connect {
            host: cfg.host.clone(),
            port: cfg.port,
            source,
        })?;
    let _ = tcp.set_nodelay(true);
    let Some(tls_config) = cfg.tls.clone() else {
        let (r, w) = tcp.into_split();
        return Ok((Box::new(r), Box::new(w), None));
    };
    let mut req = BytesMut::new();
    frontend::ssl_request(&mut req);
    tcp.write_all(&req).await.map_err(UpstreamError::Io)?;
    let answer = tcp.read_u8().await.map_err(UpstreamError::Io)?;
    if answer != b'S' {
        return Err(UpstreamError::TlsRefused {
            mode: tls::mode_name(cfg.tls_mode),
        });
    }
    let name = tls::server_name(&cfg.host).ok_or_else(|| UpstreamError::BadServerName {
        host: cfg.host.clone(),
    })?;
    let stream = tokio_rustls::TlsConnector::from(tls_config)
        .connect(name, tcp)
        .await
        .map_err(|source| UpstreamError::Handshake {
            host: cfg.host.clone(),
            mode: tls::mode_name(cfg.tls_mode),
            source,
        })?;
    let binding = stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|certs| certs.first())
        .and_then(|cert| tls::server_end_point(cert));
    let (r, w) = tokio::io::split(stream);
    Ok((Box::new(r), Box::new(w), binding))
}

/// Connects and authenticates; `client_params` are the startup parameters
/// passed through from the client (user and database are the Connection's).
pub async fn connect(
    cfg: &UpstreamConfig,
    client_params: &[(String, String)],
) -> Result<UpstreamSession, UpstreamError> {
    tokio::time::timeout(CONNECT_TIMEOUT, connect_inner(cfg, client_params))
        .await
        .map_err(|_| UpstreamError::Timeout {
            host: cfg.host.clone(),
            port: cfg.port,
        })?
}

async fn connect_inner(
    cfg: &UpstreamConfig,
    client_params: &[(String, String)],
) -> Result<UpstreamSession, UpstreamError> {
    let tls = cfg.tls.is_some();
    let (r, mut writer, binding) = open(cfg).await?;
    let mut reader = FrameReader::new(r, Peer::Server, cfg.max_message_size);

    let mut params: Vec<(&str, &str)> = vec![
        ("user", cfg.username.as_str()),
        ("database", cfg.database.as_str()),
    ];
    params.extend(client_params.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    let mut out = BytesMut::new();
    frontend::startup_message(params.iter().copied(), &mut out).map_err(UpstreamError::Io)?;
    writer.write_all(&out).await.map_err(UpstreamError::Io)?;

    let channel_binding = authenticate(cfg, &mut reader, &mut writer, binding).await?;
    let (startup_messages, backend_key) = startup_answers(&mut reader).await?;
    Ok(UpstreamSession {
        reader,
        writer,
        startup_messages,
        backend_key,
        tls,
        channel_binding,
    })
}

/// The authentication exchange up to AuthenticationOk: cleartext, MD5 or
/// SCRAM-SHA-256 (-PLUS when the TLS session offers channel binding);
/// whether channel binding was used.
async fn authenticate(
    cfg: &UpstreamConfig,
    reader: &mut FrameReader<ReadHalf>,
    writer: &mut WriteHalf,
    binding: Option<Vec<u8>>,
) -> Result<bool, UpstreamError> {
    let mut out = BytesMut::new();
    let mut scram: Option<ScramSha256> = None;
    let mut channel_binding = false;
    loop {
        let frame = next(reader, "authentication").await?;
        match frame.tag {
            backend::AUTHENTICATION => {}
            backend::ERROR_RESPONSE => return Err(rejected(&frame)),
            backend::NEGOTIATE_PROTOCOL_VERSION => continue,
            tag => {
                return Err(UpstreamError::Unexpected {
                    tag: tag as char,
                    phase: "authentication",
                });
            }
        }
        let body = frame.body();
        if body.len() < 4 {
            return Err(UpstreamError::Unexpected {
                tag: 'R',
                phase: "authentication",
            });
        }
        let method = i32::from_be_bytes([body[0], body[1], body[2], body[3]]);
        let data = &body[4..];
        out.clear();
        match method {
            0 => return Ok(channel_binding),
            3 => {
                frontend::password_message(cfg.password.as_bytes(), &mut out)
                    .map_err(UpstreamError::Io)?;
            }
            5 => {
                let salt = data.get(..4).ok_or(UpstreamError::Unexpected {
                    tag: 'R',
                    phase: "md5 authentication",
                })?;
                let hash = postgres_protocol::authentication::md5_hash(
                    cfg.username.as_bytes(),
                    cfg.password.as_bytes(),
                    [salt[0], salt[1], salt[2], salt[3]],
                );
                frontend::password_message(hash.as_bytes(), &mut out).map_err(UpstreamError::Io)?;
            }
            10 => {
                let (s, plus) = sasl_start(cfg, data, binding.as_deref(), &mut out)?;
                channel_binding = plus;
                scram = Some(s);
            }
            11 => sasl_continue(&mut scram, &frame, &mut out).await?,
            12 => {
                let s = scram.as_mut().ok_or(UpstreamError::Unexpected {
                    tag: 'R',
                    phase: "SASL final without SASL start",
                })?;
                // Verifies the server's signature: a server that does not know
                // the password cannot pass itself off as the upstream.
                s.finish(data).map_err(UpstreamError::Scram)?;
                continue;
            }
            other => return Err(UpstreamError::UnsupportedAuth { method: other }),
        }
        writer.write_all(&out).await.map_err(UpstreamError::Io)?;
    }
}

/// SASL start: SCRAM-SHA-256-PLUS when the server offers it and the TLS
/// session has a channel binding, else SCRAM-SHA-256; the client's first
/// message in `out`, and whether channel binding is used.
fn sasl_start(
    cfg: &UpstreamConfig,
    data: &[u8],
    binding: Option<&[u8]>,
    out: &mut BytesMut,
) -> Result<(ScramSha256, bool), UpstreamError> {
    let mechanisms: Vec<&[u8]> = data.split(|b| *b == 0).filter(|m| !m.is_empty()).collect();
    let plus = mechanisms.contains(&sasl::SCRAM_SHA_256_PLUS.as_bytes());
    let (mechanism, cb, channel_binding) = match (binding, plus) {
        (Some(b), true) => (
            sasl::SCRAM_SHA_256_PLUS,
            ChannelBinding::tls_server_end_point(b.to_vec()),
            true,
        ),
        (Some(_), false) => (sasl::SCRAM_SHA_256, ChannelBinding::unrequested(), false),
        (None, _) => (sasl::SCRAM_SHA_256, ChannelBinding::unsupported(), false),
    };
    if !mechanisms.contains(&sasl::SCRAM_SHA_256.as_bytes()) && mechanism == sasl::SCRAM_SHA_256 {
        return Err(UpstreamError::UnsupportedAuth { method: 10 });
    }
    let s = ScramSha256::new(cfg.password.as_bytes(), cb);
    frontend::sasl_initial_response(mechanism, s.message(), out).map_err(UpstreamError::Io)?;
    Ok((s, channel_binding))
}

/// SASL continue: the server's first message; the key derivation runs off
/// the runtime thread; the client's final message in `out`.
async fn sasl_continue(
    scram: &mut Option<ScramSha256>,
    frame: &Frame,
    out: &mut BytesMut,
) -> Result<(), UpstreamError> {
    if scram.is_none() {
        return Err(UpstreamError::Unexpected {
            tag: 'R',
            phase: "SASL continue without SASL start",
        });
    }
    let iterations = scram_iterations(frame.body().get(4..).unwrap_or_default());
    if iterations > MAX_SCRAM_ITERATIONS {
        return Err(UpstreamError::ScramIterations {
            asked: iterations,
            max: MAX_SCRAM_ITERATIONS,
        });
    }
    // The key derivation (PBKDF2, `iterations` rounds) is CPU work:
    // off the runtime thread, so it stalls no other session.
    let mut owned = scram.take().ok_or(UpstreamError::Unexpected {
        tag: 'R',
        phase: "SASL continue without SASL start",
    })?;
    let server_first = frame.body_bytes().slice(4..);
    let (owned, derived) = tokio::task::spawn_blocking(move || {
        let derived = owned.update(&server_first);
        (owned, derived)
    })
    .await
    .map_err(|e| UpstreamError::Scram(std::io::Error::other(e)))?;
    derived.map_err(UpstreamError::Scram)?;
    let s = scram.insert(owned);
    frontend::sasl_response(s.message(), out).map_err(UpstreamError::Io)?;
    Ok(())
}

/// The server's startup answers after AuthenticationOk, up to
/// ReadyForQuery: its ParameterStatus and notices (passed to the client),
/// and its BackendKeyData.
async fn startup_answers(
    reader: &mut FrameReader<ReadHalf>,
) -> Result<(Vec<Frame>, (i32, i32)), UpstreamError> {
    let mut startup_messages = Vec::new();
    let mut backend_key = (0, 0);
    loop {
        let frame = next(reader, "startup").await?;
        match frame.tag {
            backend::PARAMETER_STATUS | backend::NOTICE_RESPONSE => startup_messages.push(frame),
            backend::BACKEND_KEY_DATA => {
                backend_key = startup::decode_backend_key_data(frame.body()).map_err(|_| {
                    UpstreamError::Unexpected {
                        tag: 'K',
                        phase: "startup",
                    }
                })?;
            }
            backend::READY_FOR_QUERY => break,
            backend::ERROR_RESPONSE => return Err(rejected(&frame)),
            tag => {
                return Err(UpstreamError::Unexpected {
                    tag: tag as char,
                    phase: "startup",
                });
            }
        }
    }
    Ok((startup_messages, backend_key))
}

async fn next(
    reader: &mut FrameReader<ReadHalf>,
    phase: &'static str,
) -> Result<Frame, UpstreamError> {
    reader
        .next()
        .await?
        .ok_or(UpstreamError::Io(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            format!("the upstream closed the connection during {phase}"),
        )))
}

fn rejected(frame: &Frame) -> UpstreamError {
    let fields = error_response::decode(frame.body()).unwrap_or_default();
    UpstreamError::Rejected {
        code: error_response::field(&fields, b'C')
            .unwrap_or("")
            .to_string(),
        message: error_response::field(&fields, b'M')
            .unwrap_or("")
            .to_string(),
    }
}

/// Sends a CancelRequest for `backend_key` on a new connection to the upstream.
pub async fn cancel(cfg: &UpstreamConfig, backend_key: (i32, i32)) -> Result<(), UpstreamError> {
    let (_r, mut w, _) = tokio::time::timeout(CONNECT_TIMEOUT, open(cfg))
        .await
        .map_err(|_| UpstreamError::Timeout {
            host: cfg.host.clone(),
            port: cfg.port,
        })??;
    let mut out = BytesMut::new();
    frontend::cancel_request(backend_key.0, backend_key.1, &mut out);
    w.write_all(&out).await.map_err(UpstreamError::Io)?;
    w.shutdown().await.map_err(UpstreamError::Io)?;
    Ok(())
}

/// Runs a simple query on a session the sidecar owns (not the client's) and
/// returns the rows in text format. Used for catalog lookups.
pub async fn simple_query(
    session: &mut UpstreamSession,
    sql: &str,
) -> Result<Vec<Vec<Option<String>>>, UpstreamError> {
    let mut out = BytesMut::new();
    frontend::query(sql, &mut out).map_err(UpstreamError::Io)?;
    session
        .writer
        .write_all(&out)
        .await
        .map_err(UpstreamError::Io)?;
    let mut rows = Vec::new();
    let mut error = None;
    loop {
        let frame = next(&mut session.reader, "a catalog query").await?;
        match frame.tag {
            backend::DATA_ROW => {
                let body = frame.body();
                let ranges = super::messages::data_row::values(body).map_err(|_| {
                    UpstreamError::Unexpected {
                        tag: 'D',
                        phase: "a catalog query",
                    }
                })?;
                rows.push(
                    ranges
                        .into_iter()
                        .map(|r| r.map(|r| String::from_utf8_lossy(&body[r]).into_owned()))
                        .collect(),
                );
            }
            backend::ERROR_RESPONSE => error = Some(rejected(&frame)),
            backend::READY_FOR_QUERY => break,
            _ => {}
        }
    }
    match error {
        Some(e) => Err(e),
        None => Ok(rows),
    }
}

/// Bytes of a frame, for relaying.
pub fn raw(frame: &Frame) -> Bytes {
    frame.raw.clone()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)] // test code

    use super::*;
    use tokio::io::AsyncReadExt;
    use tokio::net::TcpListener;

    #[test]
    fn scram_iterations_are_read_from_the_server_first_message() {
        assert_eq!(scram_iterations(b"r=abc,s=c2FsdA==,i=4096"), 4096);
        assert_eq!(scram_iterations(b"i=7,r=abc,s=c2FsdA=="), 7);
        assert_eq!(
            scram_iterations(b"r=abc,s=c2FsdA==,i=99999999999999999999999999"),
            u64::MAX
        );
        assert_eq!(scram_iterations(b"r=abc,s=c2FsdA=="), 0);
        assert_eq!(scram_iterations(b"r=abc,s=c2FsdA==,i=-1"), 0);
    }

    /// A fake upstream that speaks SCRAM up to its server-first-message,
    /// asking for `iterations` rounds; returns its port.
    async fn fake_scram_upstream(iterations: &'static str) -> u16 {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let len = s.read_i32().await.unwrap();
            let mut startup = vec![0; len as usize - 4];
            s.read_exact(&mut startup).await.unwrap();
            // AuthenticationSASL: SCRAM-SHA-256.
            let mechanisms = b"SCRAM-SHA-256\0\0";
            let mut m = vec![b'R'];
            m.extend_from_slice(&(8 + mechanisms.len() as i32).to_be_bytes());
            m.extend_from_slice(&10i32.to_be_bytes());
            m.extend_from_slice(mechanisms);
            s.write_all(&m).await.unwrap();
            // SASLInitialResponse: the client-first-message ends in r=NONCE.
            assert_eq!(s.read_u8().await.unwrap(), b'p');
            let len = s.read_i32().await.unwrap();
            let mut body = vec![0; len as usize - 4];
            s.read_exact(&mut body).await.unwrap();
            let text = String::from_utf8_lossy(&body).to_string();
            let nonce = text.rsplit("r=").next().unwrap().to_string();
            let first = format!("r={nonce}srv,s=c2FsdHNhbHQ=,i={iterations}");
            let mut m = vec![b'R'];
            m.extend_from_slice(&(8 + first.len() as i32).to_be_bytes());
            m.extend_from_slice(&11i32.to_be_bytes());
            m.extend_from_slice(first.as_bytes());
            s.write_all(&m).await.unwrap();
            // Hold the socket until the client gives up.
            let mut rest = Vec::new();
            let _ = s.read_to_end(&mut rest).await;
        });
        port
    }

    fn config(port: u16) -> UpstreamConfig {
        UpstreamConfig {
            connection: "fake".into(),
            host: "127.0.0.1".into(),
            port,
            database: "app".into(),
            username: "app".into(),
            password: Arc::new(Zeroizing::new("secret".into())),
            tls_mode: sluice_crds::TlsMode::Disable,
            tls: None,
            max_message_size: 1 << 20,
        }
    }

    /// Issue #17 item 8: an upstream asking for an absurd iteration count
    /// is refused before any work, with an error naming the count and the
    /// maximum (postgres-protocol refused it too, with a message naming
    /// neither, so an operator could not tell what to change).
    #[tokio::test]
    async fn an_absurd_scram_iteration_count_is_refused() {
        for asked in ["2147483647", "100001", "184467440737095516150"] {
            let port = fake_scram_upstream(asked).await;
            let err = match connect(&config(port), &[]).await {
                Ok(_) => panic!("{asked} iterations: the session opened"),
                Err(e) => e,
            };
            let UpstreamError::ScramIterations { asked: got, max } = &err else {
                panic!("{asked} iterations: {err}");
            };
            assert_eq!(*max, MAX_SCRAM_ITERATIONS);
            assert_eq!(
                got.to_string(),
                asked
                    .parse::<u64>()
                    .map_or("18446744073709551615".into(), |n| n.to_string())
            );
            let text = err.to_string();
            assert!(
                text.contains("SCRAM")
                    && text.contains("maximum of 100000 ")
                    && text.contains("scram_iterations"),
                "{text}"
            );
        }
    }
}
