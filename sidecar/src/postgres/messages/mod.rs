//! PostgreSQL protocol messages, one file per message family.
//!
//! Each decoder reads only what the sidecar needs from a message body and keeps
//! the rest as raw bytes; each encoder writes a message the sidecar originates
//! (errors, notices, masked rows). Type bytes repeat between directions (`D`,
//! `E`, `S`, `C`), so frontend and backend tags live in separate modules.

pub mod bind;
pub mod command_complete;
pub mod copy;
pub mod data_row;
pub mod describe;
pub mod error_response;
pub mod execute;
pub mod parse;
pub mod query;
pub mod ready_for_query;
pub mod row_description;
pub mod startup;

use bytes::{BufMut, BytesMut};

/// Type bytes of messages sent by the client.
pub mod frontend {
    /// Bind.
    pub const BIND: u8 = b'B';
    /// Close (statement or portal).
    pub const CLOSE: u8 = b'C';
    /// CopyData.
    pub const COPY_DATA: u8 = b'd';
    /// CopyDone.
    pub const COPY_DONE: u8 = b'c';
    /// CopyFail.
    pub const COPY_FAIL: u8 = b'f';
    /// Describe (statement or portal).
    pub const DESCRIBE: u8 = b'D';
    /// Execute.
    pub const EXECUTE: u8 = b'E';
    /// Flush.
    pub const FLUSH: u8 = b'H';
    /// FunctionCall (fast path).
    pub const FUNCTION_CALL: u8 = b'F';
    /// Parse.
    pub const PARSE: u8 = b'P';
    /// Password, SASL and GSS responses.
    pub const PASSWORD: u8 = b'p';
    /// Query (simple protocol).
    pub const QUERY: u8 = b'Q';
    /// Sync.
    pub const SYNC: u8 = b'S';
    /// Terminate.
    pub const TERMINATE: u8 = b'X';
}

/// Type bytes of messages sent by the server.
pub mod backend {
    /// Authentication requests.
    pub const AUTHENTICATION: u8 = b'R';
    /// BackendKeyData.
    pub const BACKEND_KEY_DATA: u8 = b'K';
    /// BindComplete.
    pub const BIND_COMPLETE: u8 = b'2';
    /// CloseComplete.
    pub const CLOSE_COMPLETE: u8 = b'3';
    /// CommandComplete.
    pub const COMMAND_COMPLETE: u8 = b'C';
    /// CopyBothResponse (replication only).
    pub const COPY_BOTH_RESPONSE: u8 = b'W';
    /// CopyData.
    pub const COPY_DATA: u8 = b'd';
    /// CopyDone.
    pub const COPY_DONE: u8 = b'c';
    /// CopyInResponse.
    pub const COPY_IN_RESPONSE: u8 = b'G';
    /// CopyOutResponse.
    pub const COPY_OUT_RESPONSE: u8 = b'H';
    /// DataRow.
    pub const DATA_ROW: u8 = b'D';
    /// EmptyQueryResponse.
    pub const EMPTY_QUERY_RESPONSE: u8 = b'I';
    /// ErrorResponse.
    pub const ERROR_RESPONSE: u8 = b'E';
    /// FunctionCallResponse.
    pub const FUNCTION_CALL_RESPONSE: u8 = b'V';
    /// NegotiateProtocolVersion.
    pub const NEGOTIATE_PROTOCOL_VERSION: u8 = b'v';
    /// NoData.
    pub const NO_DATA: u8 = b'n';
    /// NoticeResponse.
    pub const NOTICE_RESPONSE: u8 = b'N';
    /// NotificationResponse (LISTEN/NOTIFY).
    pub const NOTIFICATION_RESPONSE: u8 = b'A';
    /// ParameterDescription.
    pub const PARAMETER_DESCRIPTION: u8 = b't';
    /// ParameterStatus.
    pub const PARAMETER_STATUS: u8 = b'S';
    /// ParseComplete.
    pub const PARSE_COMPLETE: u8 = b'1';
    /// PortalSuspended.
    pub const PORTAL_SUSPENDED: u8 = b's';
    /// ReadyForQuery.
    pub const READY_FOR_QUERY: u8 = b'Z';
    /// RowDescription.
    pub const ROW_DESCRIPTION: u8 = b'T';
}

/// A message body that does not have the shape its type promises.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed {message} message: {problem}")]
pub struct MessageError {
    /// Which message.
    pub message: &'static str,
    /// What is wrong with it.
    pub problem: &'static str,
}

/// A bounds-checked reader over a message body.
pub(crate) struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
    message: &'static str,
}

impl<'a> Cursor<'a> {
    pub(crate) fn new(buf: &'a [u8], message: &'static str) -> Self {
        Cursor {
            buf,
            pos: 0,
            message,
        }
    }

    fn err(&self, problem: &'static str) -> MessageError {
        MessageError {
            message: self.message,
            problem,
        }
    }

    pub(crate) fn position(&self) -> usize {
        self.pos
    }

    pub(crate) fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// A NUL-terminated string (not including the NUL).
    pub(crate) fn cstr(&mut self) -> Result<&'a str, MessageError> {
        let bytes = self.cstr_bytes()?;
        std::str::from_utf8(bytes).map_err(|_| self.err("a string is not valid UTF-8"))
    }

    pub(crate) fn cstr_bytes(&mut self) -> Result<&'a [u8], MessageError> {
        let rest = &self.buf[self.pos..];
        let end = memchr::memchr(0, rest).ok_or_else(|| self.err("unterminated string"))?;
        self.pos += end + 1;
        Ok(&rest[..end])
    }

    pub(crate) fn u8(&mut self) -> Result<u8, MessageError> {
        let b = *self
            .buf
            .get(self.pos)
            .ok_or_else(|| self.err("truncated"))?;
        self.pos += 1;
        Ok(b)
    }

    pub(crate) fn i16(&mut self) -> Result<i16, MessageError> {
        let b = self.take(2)?;
        Ok(i16::from_be_bytes([b[0], b[1]]))
    }

    pub(crate) fn i32(&mut self) -> Result<i32, MessageError> {
        let b = self.take(4)?;
        Ok(i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    pub(crate) fn u32(&mut self) -> Result<u32, MessageError> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8], MessageError> {
        if self.remaining() < n {
            return Err(self.err("truncated"));
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    /// A count that must be non-negative and plausible for the bytes left,
    /// given that each item takes at least `min_item` bytes.
    pub(crate) fn count(&mut self, min_item: usize) -> Result<usize, MessageError> {
        let n = self.i16()?;
        if n < 0 {
            return Err(self.err("negative count"));
        }
        let n = n as usize;
        if n.saturating_mul(min_item) > self.remaining() {
            return Err(self.err("count larger than the message"));
        }
        Ok(n)
    }
}

/// Starts a message: writes the type byte and a placeholder length; returns
/// the offset of the length for [`finish`].
pub(crate) fn begin(out: &mut BytesMut, tag: u8) -> usize {
    out.put_u8(tag);
    let at = out.len();
    out.put_i32(0);
    at
}

/// Fills in the length of a message started with [`begin`].
pub(crate) fn finish(out: &mut BytesMut, at: usize) {
    let len = (out.len() - at) as i32;
    out[at..at + 4].copy_from_slice(&len.to_be_bytes());
}

/// Writes a NUL-terminated string, dropping any NUL inside it.
pub(crate) fn put_cstr(out: &mut BytesMut, s: &str) {
    for part in s.split('\0') {
        out.put_slice(part.as_bytes());
    }
    out.put_u8(0);
}

#[cfg(test)]
mod fuzz {
    //! Every decoder takes arbitrary bytes without panicking: a hostile
    //! client or a corrupt stream is an error, never a crash.
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn decoders_never_panic(body in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = super::startup::StartupPacket::decode(&body);
            let _ = super::query::decode(&body);
            let _ = super::parse::decode(&body);
            let _ = super::bind::decode(&body);
            let _ = super::describe::decode(&body, "Describe");
            let _ = super::execute::decode(&body);
            let _ = super::row_description::decode(&body);
            let _ = super::data_row::values(&body);
            let _ = super::error_response::decode(&body);
            let _ = super::command_complete::rows(&body);
            let _ = super::copy::overall_format(&body);
            let mut out = bytes::BytesMut::new();
            let _ = super::data_row::rewrite(&body, &mut out, |_, _| super::data_row::Rewrite::Null);
        }

        #[test]
        fn framing_never_panics(stream in proptest::collection::vec(any::<u8>(), 0..512)) {
            let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
            rt.block_on(async {
                let mut r = crate::postgres::framing::FrameReader::new(
                    &stream[..],
                    crate::postgres::framing::Peer::Client,
                    128,
                );
                let _ = r.startup_packet().await;
                while let Ok(Some(frame)) = r.next().await {
                    assert!(frame.raw.len() <= 129);
                }
            });
        }

        #[test]
        fn row_description_counts_are_bounded(n in any::<i16>(), rest in proptest::collection::vec(any::<u8>(), 0..64)) {
            let mut body = n.to_be_bytes().to_vec();
            body.extend_from_slice(&rest);
            if let Ok(cols) = super::row_description::decode(&body) {
                prop_assert!(cols.len() * 19 <= body.len());
            }
        }
    }
}
