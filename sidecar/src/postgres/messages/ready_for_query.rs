//! ReadyForQuery: the end of a query cycle, with the transaction status.

use bytes::{BufMut, BytesMut};

use super::{backend, begin, finish};

/// Transaction status when idle.
pub const IDLE: u8 = b'I';

/// Decodes the transaction status (`I`, `T` or `E`).
pub fn status(body: &[u8]) -> u8 {
    body.first().copied().unwrap_or(IDLE)
}

/// Writes ReadyForQuery.
pub fn encode(out: &mut BytesMut, status: u8) {
    let at = begin(out, backend::READY_FOR_QUERY);
    out.put_u8(status);
    finish(out, at);
}
