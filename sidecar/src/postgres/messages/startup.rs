//! The startup phase: StartupMessage, SSLRequest, GSSENCRequest and
//! CancelRequest from the client; AuthenticationOk, ParameterStatus and
//! BackendKeyData towards it.

use bytes::{BufMut, BytesMut};

use super::{Cursor, MessageError, backend, begin, finish, put_cstr};

/// Protocol version 3.0.
pub const PROTOCOL_3_0: i32 = 196_608;
/// The SSLRequest code.
pub const SSL_REQUEST: i32 = 80_877_103;
/// The GSSENCRequest code.
pub const GSSENC_REQUEST: i32 = 80_877_104;
/// The CancelRequest code.
pub const CANCEL_REQUEST: i32 = 80_877_102;

/// A packet the client sends before its first typed message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartupPacket {
    /// StartupMessage with its parameters (user, database, application_name, …).
    Startup {
        /// Protocol version requested.
        version: i32,
        /// Parameters in the order sent.
        params: Vec<(String, String)>,
    },
    /// The client asks for TLS.
    SslRequest,
    /// The client asks for GSSAPI encryption.
    GssEncRequest,
    /// The client cancels the running query of another session.
    Cancel {
        /// Process id from BackendKeyData.
        process_id: i32,
        /// Secret key from BackendKeyData.
        secret_key: i32,
    },
}

impl StartupPacket {
    /// Decodes a packet body (after its length).
    pub fn decode(body: &[u8]) -> Result<Self, MessageError> {
        let mut c = Cursor::new(body, "startup");
        let code = c.i32()?;
        match code {
            SSL_REQUEST => Ok(StartupPacket::SslRequest),
            GSSENC_REQUEST => Ok(StartupPacket::GssEncRequest),
            CANCEL_REQUEST => {
                let process_id = c.i32()?;
                let secret_key = c.i32()?;
                Ok(StartupPacket::Cancel {
                    process_id,
                    secret_key,
                })
            }
            version => {
                let mut params = Vec::new();
                loop {
                    let key = c.cstr()?;
                    if key.is_empty() {
                        break;
                    }
                    let value = c.cstr()?;
                    params.push((key.to_string(), value.to_string()));
                }
                Ok(StartupPacket::Startup { version, params })
            }
        }
    }
}

/// Writes AuthenticationOk.
pub fn authentication_ok(out: &mut BytesMut) {
    let at = begin(out, backend::AUTHENTICATION);
    out.put_i32(0);
    finish(out, at);
}

/// Writes BackendKeyData.
pub fn backend_key_data(out: &mut BytesMut, process_id: i32, secret_key: i32) {
    let at = begin(out, backend::BACKEND_KEY_DATA);
    out.put_i32(process_id);
    out.put_i32(secret_key);
    finish(out, at);
}

/// Writes ParameterStatus.
pub fn parameter_status(out: &mut BytesMut, name: &str, value: &str) {
    let at = begin(out, backend::PARAMETER_STATUS);
    put_cstr(out, name);
    put_cstr(out, value);
    finish(out, at);
}

/// Decodes BackendKeyData: (process id, secret key).
pub fn decode_backend_key_data(body: &[u8]) -> Result<(i32, i32), MessageError> {
    let mut c = Cursor::new(body, "BackendKeyData");
    Ok((c.i32()?, c.i32()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_startup_and_requests() {
        let mut body = Vec::new();
        body.extend_from_slice(&PROTOCOL_3_0.to_be_bytes());
        body.extend_from_slice(b"user\0app\0database\0x\0\0");
        assert_eq!(
            StartupPacket::decode(&body).unwrap(),
            StartupPacket::Startup {
                version: PROTOCOL_3_0,
                params: vec![
                    ("user".into(), "app".into()),
                    ("database".into(), "x".into())
                ]
            }
        );
        assert_eq!(
            StartupPacket::decode(&SSL_REQUEST.to_be_bytes()).unwrap(),
            StartupPacket::SslRequest
        );
        let mut cancel = CANCEL_REQUEST.to_be_bytes().to_vec();
        cancel.extend_from_slice(&7i32.to_be_bytes());
        cancel.extend_from_slice(&9i32.to_be_bytes());
        assert_eq!(
            StartupPacket::decode(&cancel).unwrap(),
            StartupPacket::Cancel {
                process_id: 7,
                secret_key: 9
            }
        );
        let mut bad = PROTOCOL_3_0.to_be_bytes().to_vec();
        bad.extend_from_slice(b"user\0app");
        assert!(StartupPacket::decode(&bad).is_err());
    }
}
