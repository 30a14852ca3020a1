//! The sidecar's own session with the MySQL server: TCP, TLS per the
//! Connection's `tls.mode` (SSLRequest, then rustls), the server's greeting,
//! and authentication with the Connection's credentials
//! (`mysql_native_password`; `caching_sha2_password` fast path, and its full
//! authentication over TLS or with the server's RSA key). The workload
//! never holds the credential.

use std::sync::Arc;

use mysql_common::constants::CapabilityFlags;
use mysql_common::io::ParseBuf;
use mysql_common::packets::{AuthPlugin, HandshakePacket, HandshakeResponse};
use mysql_common::proto::{MyDeserialize, MySerialize};
use rustls::ClientConfig;
use sluice_crds::TlsMode;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use zeroize::Zeroizing;

use super::packet::{self, Packet, PacketError};

/// A byte stream to the server (plain TCP or TLS).
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// How to reach a MySQL Connection's server, and as whom.
#[derive(Clone)]
pub struct MyUpstream {
    /// Connection name (for messages).
    pub connection: String,
    /// Host.
    pub host: String,
    /// Port.
    pub port: u16,
    /// The Connection's database, when set (the workload's choice is ignored).
    pub database: Option<String>,
    /// User name.
    pub username: String,
    /// Password.
    pub password: Zeroizing<String>,
    /// TLS mode.
    pub tls_mode: TlsMode,
    /// The rustls configuration, unless `disable`.
    pub tls: Option<Arc<ClientConfig>>,
    /// Largest packet accepted from the server.
    pub max_packet: usize,
}

/// Why the upstream session could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// Network.
    #[error("cannot reach the MySQL server {addr}: {source}")]
    Connect {
        /// host:port.
        addr: String,
        /// Cause.
        source: std::io::Error,
    },
    /// Framing or socket.
    #[error("the MySQL server's session failed: {0}")]
    Packet(#[from] PacketError),
    /// The server said no (bad credentials, too many connections, …).
    #[error("the MySQL server refused the session: {message} (error {code}, SQLSTATE {state})")]
    Refused {
        /// Server error code.
        code: u16,
        /// SQLSTATE.
        state: String,
        /// Server message.
        message: String,
    },
    /// Something Sluice does not do.
    #[error("{0}")]
    Unsupported(String),
    /// TLS.
    #[error("TLS with the MySQL server failed: {0}")]
    Tls(String),
}

/// The server's greeting, as the client is shown it.
pub struct Greeting {
    /// The real server version.
    pub server_version: Vec<u8>,
    /// The server's connection id.
    pub connection_id: u32,
    /// The server's capabilities.
    pub capabilities: CapabilityFlags,
    /// Default collation.
    pub collation: u8,
    /// Status flags.
    pub status: u16,
    nonce: Vec<u8>,
    plugin: Vec<u8>,
}

/// An authenticated session with the server.
pub struct Upstream {
    io: Box<dyn Io>,
    /// Capabilities agreed with the server.
    pub capabilities: CapabilityFlags,
    max_packet: usize,
    /// Whether the session runs over TLS.
    pub tls: bool,
}

impl Upstream {
    /// Reads the server's next packet.
    pub async fn read(&mut self) -> Result<Packet, PacketError> {
        packet::read_packet(&mut self.io, self.max_packet, "server").await
    }

    /// Sends a command packet (sequence id 0).
    pub async fn command(&mut self, payload: &[u8]) -> std::io::Result<()> {
        self.send(0, payload).await
    }

    /// Sends several commands at once (each with sequence id 0), in one
    /// write: the server answers them in order.
    pub async fn commands(&mut self, payloads: &[&[u8]]) -> std::io::Result<()> {
        let mut out = Vec::with_capacity(payloads.iter().map(|p| p.len() + 4).sum());
        for payload in payloads {
            let mut seq = 0;
            packet::write_packet(&mut out, &mut seq, payload);
        }
        self.io.write_all(&out).await?;
        self.io.flush().await
    }

    /// Sends a packet with sequence id `seq`.
    pub async fn send(&mut self, seq: u8, payload: &[u8]) -> std::io::Result<()> {
        let mut out = Vec::with_capacity(payload.len() + 4);
        let mut seq = seq;
        packet::write_packet(&mut out, &mut seq, payload);
        self.io.write_all(&out).await?;
        self.io.flush().await
    }
}

/// Connects and reads the greeting (nothing is sent yet).
pub async fn connect(cfg: &MyUpstream) -> Result<(Box<dyn Io>, Greeting), UpstreamError> {
    let addr = format!("{}:{}", cfg.host, cfg.port);
    let tcp = TcpStream::connect(&addr)
        .await
        .map_err(|source| UpstreamError::Connect {
            addr: addr.clone(),
            source,
        })?;
    let _ = tcp.set_nodelay(true);
    let mut io: Box<dyn Io> = Box::new(tcp);
    let p = packet::read_packet(&mut io, cfg.max_packet, "server").await?;
    if p.payload.first() == Some(&0xFF) {
        let (code, state, message) = packet::parse_err(&p.payload);
        return Err(UpstreamError::Refused {
            code,
            state,
            message,
        });
    }
    let hs = HandshakePacket::deserialize((), &mut ParseBuf(&p.payload))
        .map_err(|e| PacketError::Malformed(format!("server greeting: {e}")))?;
    if hs.protocol_version() != 10 {
        return Err(UpstreamError::Unsupported(format!(
            "the MySQL server speaks protocol version {}; Sluice speaks 10",
            hs.protocol_version()
        )));
    }
    let greeting = Greeting {
        server_version: hs.server_version_ref().to_vec(),
        connection_id: hs.connection_id(),
        capabilities: hs.capabilities(),
        collation: hs.default_collation(),
        status: hs.status_flags().bits(),
        nonce: hs.nonce(),
        plugin: hs
            .auth_plugin_name_ref()
            .unwrap_or(b"mysql_native_password")
            .to_vec(),
    };
    Ok((io, greeting))
}

/// Capabilities the sidecar needs of the server whatever the client asked:
/// session tracking (it follows `sql_mode` and character sets through it)
/// and OK packets ending result sets (they carry the tracked changes).
pub fn required() -> CapabilityFlags {
    CapabilityFlags::CLIENT_PROTOCOL_41
        | CapabilityFlags::CLIENT_SECURE_CONNECTION
        | CapabilityFlags::CLIENT_PLUGIN_AUTH
        | CapabilityFlags::CLIENT_SESSION_TRACK
        | CapabilityFlags::CLIENT_DEPRECATE_EOF
        | CapabilityFlags::CLIENT_TRANSACTIONS
}

/// Authenticates on `io` as the Connection's user, with `caps` (the
/// client's wishes the sidecar passes on, plus [`required`]) and the
/// client's `collation` and connection attributes.
pub async fn authenticate(
    cfg: &MyUpstream,
    mut io: Box<dyn Io>,
    greeting: &Greeting,
    caps: CapabilityFlags,
    collation: u8,
) -> Result<Upstream, UpstreamError> {
    let missing = required() - greeting.capabilities;
    if !missing.is_empty() {
        return Err(UpstreamError::Unsupported(format!(
            "the MySQL server does not offer {missing:?}, which Sluice needs (MySQL 5.7+ or MariaDB 10.2+)"
        )));
    }
    let mut caps = (caps | required()) & greeting.capabilities;
    caps.remove(CapabilityFlags::CLIENT_SSL | CapabilityFlags::CLIENT_CONNECT_WITH_DB);
    if cfg.database.is_some() {
        caps.insert(CapabilityFlags::CLIENT_CONNECT_WITH_DB);
    }
    let mut seq = 1u8;
    let tls = cfg.tls.is_some();
    if let Some(config) = &cfg.tls {
        io = start_tls(cfg, config, io, greeting, &mut caps, collation, &mut seq).await?;
    }
    let plugin = AuthPlugin::from_bytes(&greeting.plugin).into_owned();
    tracing::debug!(plugin = %String::from_utf8_lossy(plugin.as_bytes()), "authenticating upstream");
    let first = scramble(&plugin, &greeting.nonce, &cfg.password)?;
    let version = (5, 7, 0);
    let response = HandshakeResponse::new(
        Some(first.as_slice()),
        version,
        Some(cfg.username.as_bytes()),
        cfg.database.as_deref().map(str::as_bytes),
        Some(plugin.clone()),
        caps,
        None,
        16 * 1024 * 1024,
    );
    let mut payload = Vec::new();
    response.serialize(&mut payload);
    tracing::debug!(bytes = payload.len(), "handshake response built");
    // The client's collation (mysql_common writes utf8mb4's): capabilities
    // (4 bytes) and the largest packet (4) come first.
    if let Some(c) = payload.get_mut(8) {
        *c = collation;
    }
    let mut out = Vec::new();
    packet::write_packet(&mut out, &mut seq, &payload);
    io.write_all(&out).await.map_err(PacketError::Io)?;
    io.flush().await.map_err(PacketError::Io)?;
    let up = Upstream {
        io,
        capabilities: caps,
        max_packet: cfg.max_packet,
        tls,
    };
    exchange(cfg, up, plugin, greeting.nonce.clone()).await
}

/// The authentication exchange after the handshake response, as
/// `plugin` with the server's `nonce`: switches, more data, a public key,
/// until the server's OK or ERR.
async fn exchange(
    cfg: &MyUpstream,
    mut up: Upstream,
    mut plugin: AuthPlugin<'static>,
    mut nonce: Vec<u8>,
) -> Result<Upstream, UpstreamError> {
    // Whether the server's public key was asked for (full authentication
    // without TLS): only then is a key taken, and only once.
    let mut asked_key = false;
    // At most a few exchanges: switch, more data, public key.
    for _ in 0..6 {
        let p = up.read().await?;
        let next = p.seq.wrapping_add(1);
        match p.payload.first() {
            Some(0x00) => return Ok(up),
            Some(0xFF) => {
                let (code, state, message) = packet::parse_err(&p.payload);
                return Err(UpstreamError::Refused {
                    code,
                    state,
                    message,
                });
            }
            Some(0xFE) => {
                // AuthSwitchRequest: plugin name NUL, then its data.
                let body = &p.payload[1..];
                let end = body.iter().position(|b| *b == 0).unwrap_or(body.len());
                plugin = AuthPlugin::from_bytes(&body[..end]).into_owned();
                let data = body.get(end + 1..).unwrap_or_default();
                nonce = data.strip_suffix(&[0]).unwrap_or(data).to_vec();
                let answer = scramble(&plugin, &nonce, &cfg.password)?;
                up.send(next, &answer).await.map_err(PacketError::Io)?;
            }
            Some(0x01) if plugin == AuthPlugin::CachingSha2Password => {
                match p.payload.get(1) {
                    // The server's public key (PEM), asked for below: the
                    // password goes out encrypted with it, never in clear.
                    _ if asked_key => {
                        asked_key = false;
                        let sealed = rsa_password(&cfg.password, &nonce, &p.payload[1..])?;
                        up.send(next, &sealed).await.map_err(PacketError::Io)?;
                    }
                    // Fast authentication succeeded: the OK follows.
                    Some(3) => {}
                    // Full authentication: the password in clear over TLS,
                    // else encrypted with the server's RSA key.
                    Some(4) if up.tls => {
                        let mut clear = Zeroizing::new(cfg.password.as_bytes().to_vec());
                        clear.push(0);
                        up.send(next, &clear).await.map_err(PacketError::Io)?;
                    }
                    Some(4) => {
                        asked_key = true;
                        up.send(next, &[2]).await.map_err(PacketError::Io)?;
                    }
                    _ => {
                        return Err(UpstreamError::Unsupported(
                            "the MySQL server sent caching_sha2_password data Sluice does not know"
                                .into(),
                        ));
                    }
                }
            }
            _ => {
                return Err(UpstreamError::Unsupported(format!(
                    "the MySQL server answered authentication with a packet Sluice does not know (plugin {:?})",
                    String::from_utf8_lossy(plugin.as_bytes())
                )));
            }
        }
    }
    Err(UpstreamError::Unsupported(
        "the MySQL server's authentication did not end".into(),
    ))
}

/// Asks the server for TLS (an SSL request with `caps`, which gains
/// CLIENT_SSL) and returns the TLS stream; `seq` moves past the request.
async fn start_tls(
    cfg: &MyUpstream,
    config: &Arc<ClientConfig>,
    mut io: Box<dyn Io>,
    greeting: &Greeting,
    caps: &mut CapabilityFlags,
    collation: u8,
    seq: &mut u8,
) -> Result<Box<dyn Io>, UpstreamError> {
    if !greeting.capabilities.contains(CapabilityFlags::CLIENT_SSL) {
        return Err(UpstreamError::Tls(format!(
            "tls.mode is {} but the server does not offer TLS",
            crate::tls::mode_name(cfg.tls_mode)
        )));
    }
    caps.insert(CapabilityFlags::CLIENT_SSL);
    let mut req = Vec::with_capacity(32);
    req.extend_from_slice(&caps.bits().to_le_bytes());
    req.extend_from_slice(&(16u32 * 1024 * 1024).to_le_bytes());
    req.push(collation);
    req.extend_from_slice(&[0u8; 23]);
    let mut out = Vec::new();
    packet::write_packet(&mut out, seq, &req);
    io.write_all(&out).await.map_err(PacketError::Io)?;
    let name = crate::tls::server_name(&cfg.host)
        .ok_or_else(|| UpstreamError::Tls(format!("{:?} is not a valid server name", cfg.host)))?;
    let stream = tokio_rustls::TlsConnector::from(config.clone())
        .connect(name, io)
        .await
        .map_err(|e| UpstreamError::Tls(e.to_string()))?;
    Ok(Box::new(stream))
}

/// The auth response of `plugin` for `password` and the server's `nonce`.
fn scramble(
    plugin: &AuthPlugin<'_>,
    nonce: &[u8],
    password: &str,
) -> Result<Vec<u8>, UpstreamError> {
    use mysql_common::auth::plugins::caching_sha2_password::scramble_sha256;
    use mysql_common::auth::plugins::mysql_native_password::scramble_native;
    if password.is_empty() {
        return Ok(Vec::new());
    }
    match plugin {
        AuthPlugin::MysqlNativePassword => Ok(scramble_native(nonce, password.as_bytes())
            .map(|s| s.to_vec())
            .unwrap_or_default()),
        AuthPlugin::CachingSha2Password => {
            let nonce: [u8; 20] =
                nonce
                    .get(..20)
                    .and_then(|n| n.try_into().ok())
                    .ok_or_else(|| {
                        UpstreamError::Unsupported("the server's scramble is not 20 bytes".into())
                    })?;
            Ok(scramble_sha256(&nonce, password.as_bytes())
                .map(|s| s.to_vec())
                .unwrap_or_default())
        }
        other => Err(UpstreamError::Unsupported(format!(
            "the MySQL server asks for authentication plugin {:?}; Sluice speaks mysql_native_password and caching_sha2_password",
            String::from_utf8_lossy(other.as_bytes())
        ))),
    }
}

/// The smallest RSA key the password is sent under (MySQL generates 2048-bit
/// keys): a smaller one protects it too little.
const MIN_RSA_BITS: usize = 2048;

/// caching_sha2_password's full authentication without TLS: the password
/// (NUL-terminated, XORed with the nonce) encrypted with the server's RSA
/// key (OAEP). A key Sluice cannot read strictly, or a weak one, ends the
/// authentication: the password is then not sent at all.
fn rsa_password(password: &str, nonce: &[u8], pem: &[u8]) -> Result<Vec<u8>, UpstreamError> {
    let key = server_key(pem)?;
    let mut block = Zeroizing::new(password.as_bytes().to_vec());
    block.push(0);
    if nonce.is_empty() {
        return Err(UpstreamError::Unsupported(
            "the server sent no scramble".into(),
        ));
    }
    for (i, b) in block.iter_mut().enumerate() {
        *b ^= nonce[i % nonce.len()];
    }
    // OAEP with SHA-1 carries at most k - 42 bytes (encrypt_block panics past it).
    if block.len() + 42 > key.num_octets() {
        return Err(UpstreamError::Unsupported(
            "the password is too long for the server's RSA key: use tls.mode require or stronger"
                .into(),
        ));
    }
    let pad =
        mysql_common::crypto::rsa::Pkcs1OaepPadding::new(mysql_common::crypto::rsa::GetRandom);
    key.encrypt_block(block.as_slice(), pad)
        .map_err(|e| UpstreamError::Unsupported(format!("RSA encryption of the password: {e:?}")))
}

/// The server's RSA public key (PEM: `PUBLIC KEY`, as MySQL sends it, or
/// `RSA PUBLIC KEY`), read with x509-parser: mysql_common's own reader
/// indexes the DER unchecked and panics on a malformed key.
fn server_key(pem: &[u8]) -> Result<mysql_common::crypto::rsa::PublicKey, UpstreamError> {
    use mysql_common::num_bigint::BigUint;
    use x509_parser::prelude::{FromDer, SubjectPublicKeyInfo};
    use x509_parser::public_key::{PublicKey, RSAPublicKey};
    let refused = |what: &str| {
        UpstreamError::Unsupported(format!(
            "the MySQL server asked for caching_sha2_password's full authentication, and its RSA public key {what}, so Sluice did not send the password; use tls.mode require or stronger (the password then goes over TLS), or give the server a valid key of {MIN_RSA_BITS} bits or more"
        ))
    };
    let (_, pem) =
        x509_parser::pem::parse_x509_pem(pem).map_err(|_| refused("is not a PEM document"))?;
    let rsa = match pem.label.as_str() {
        "PUBLIC KEY" => {
            let (_, spki) = SubjectPublicKeyInfo::from_der(&pem.contents)
                .map_err(|_| refused("is not a valid public key"))?;
            match spki.parsed() {
                Ok(PublicKey::RSA(k)) => (k.modulus.to_vec(), k.exponent.to_vec()),
                _ => return Err(refused("is not an RSA key")),
            }
        }
        "RSA PUBLIC KEY" => {
            let (_, k) = RSAPublicKey::from_der(&pem.contents)
                .map_err(|_| refused("is not a valid RSA key"))?;
            (k.modulus.to_vec(), k.exponent.to_vec())
        }
        _ => return Err(refused("is not a public key")),
    };
    let modulus = BigUint::from_bytes_be(&rsa.0);
    let exponent = BigUint::from_bytes_be(&rsa.1);
    let bits = usize::try_from(modulus.bits()).unwrap_or(0);
    if bits < MIN_RSA_BITS {
        return Err(refused(&format!("has {bits} bits")));
    }
    if exponent < BigUint::from(3u8) || !modulus.bit(0) {
        return Err(refused("is not a valid RSA key"));
    }
    Ok(mysql_common::crypto::rsa::PublicKey::new(modulus, exponent))
}
