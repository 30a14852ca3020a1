//! Framing of the PostgreSQL wire protocol: splits a byte stream into messages.
//!
//! Only the 5-byte header is read here (type byte and length); bodies are kept
//! as raw [`Bytes`] so that a message nobody needs to look at is forwarded
//! untouched. Every length is checked before anything is allocated: it must be
//! at least 4 (the length counts itself) and at most the configured maximum, so
//! a hostile or corrupt length field is a clear error, never a 2 GiB buffer.

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt};

use crate::limits::{BUDGETED_MESSAGE, BufferBudget, Charge};

/// The default largest message accepted from either side: 64 MiB.
///
/// PostgreSQL itself accepts up to 1 GiB for a few message types, but a value
/// that large cannot usefully pass through a sidecar that must stay small in
/// memory; 64 MiB leaves room for big rows and COPY chunks (libpq sends COPY
/// data in chunks far below that). Configurable with `--max-message-size`.
pub const DEFAULT_MAX_MESSAGE_SIZE: usize = 64 * 1024 * 1024;

/// The largest startup packet accepted (PostgreSQL's own limit is 10000 bytes).
pub const MAX_STARTUP_PACKET: usize = 10_000;

/// How much is read from a socket at once.
const READ_CHUNK: usize = 64 * 1024;

/// Why a message could not be framed.
#[derive(Debug, thiserror::Error)]
pub enum FramingError {
    /// The socket failed.
    #[error("{peer}: read failed: {source}")]
    Io {
        /// Which side.
        peer: Peer,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The length field is below 4.
    #[error("{peer} sent a message of type {tag:?} with invalid length {len} (below 4)")]
    TooShort {
        /// Which side.
        peer: Peer,
        /// The message type byte, as a character.
        tag: char,
        /// The length field.
        len: i64,
    },
    /// The length field is above the maximum.
    #[error(
        "{peer} sent a message of type {tag:?} of {len} bytes, above the maximum of {max} bytes \
         (raise --max-message-size if this is legitimate)"
    )]
    TooLarge {
        /// Which side.
        peer: Peer,
        /// The message type byte, as a character.
        tag: char,
        /// The length field.
        len: u64,
        /// The configured maximum.
        max: usize,
    },
    /// The message does not fit in the process-wide buffer budget.
    #[error(
        "{peer} sent a message of type {tag:?} of {len} bytes, which does not fit in the \
         sidecar's buffer budget of {budget} bytes shared by all PostgreSQL sessions ({in_use} \
         bytes in use); retry later, send smaller messages, or raise --buffer-budget \
         ({env})",
        env = crate::limits::env::BUFFER_BUDGET
    )]
    OverBudget {
        /// Which side.
        peer: Peer,
        /// The message type byte, as a character.
        tag: char,
        /// The length field.
        len: u64,
        /// The budget.
        budget: usize,
        /// Bytes charged to it when the message was refused.
        in_use: usize,
    },
    /// The stream ended in the middle of a message.
    #[error("{peer} closed the connection in the middle of a message")]
    Truncated {
        /// Which side.
        peer: Peer,
    },
}

/// Which end of the proxy a message came from; type bytes repeat between directions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Peer {
    /// The application (frontend).
    Client,
    /// The PostgreSQL server (backend).
    Server,
}

impl std::fmt::Display for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Peer::Client => "the client",
            Peer::Server => "the upstream server",
        })
    }
}

/// One framed message: its type byte and the whole message (type, length, body).
#[derive(Debug, Clone)]
pub struct Frame {
    /// The message type byte.
    pub tag: u8,
    /// The whole message as received, header included.
    pub raw: Bytes,
    /// A large message's share of the buffer budget, given back when the
    /// last clone of the frame is dropped.
    _charge: Option<std::sync::Arc<Charge>>,
}

impl Frame {
    /// A message built by the sidecar (not charged to the budget).
    pub fn new(tag: u8, raw: Bytes) -> Self {
        Frame {
            tag,
            raw,
            _charge: None,
        }
    }

    /// The body, after the 5-byte header.
    pub fn body(&self) -> &[u8] {
        &self.raw[5..]
    }

    /// The body as shared bytes.
    pub fn body_bytes(&self) -> Bytes {
        self.raw.slice(5..)
    }
}

/// Reads framed messages from one side of the connection.
pub struct FrameReader<R> {
    io: R,
    buf: BytesMut,
    max: usize,
    peer: Peer,
    budget: Option<BufferBudget>,
    /// The budget taken for the message being assembled.
    charge: Option<Charge>,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    /// Wraps a socket half.
    pub fn new(io: R, peer: Peer, max: usize) -> Self {
        FrameReader {
            io,
            buf: BytesMut::with_capacity(READ_CHUNK),
            max,
            peer,
            budget: None,
            charge: None,
        }
    }

    /// Charges messages larger than [`BUDGETED_MESSAGE`] to `budget` while
    /// they are assembled and held.
    pub fn with_budget(mut self, budget: BufferBudget) -> Self {
        self.budget = Some(budget);
        self
    }

    /// Gives back the socket and any bytes read past the last message.
    pub fn into_parts(self) -> (R, BytesMut) {
        (self.io, self.buf)
    }

    /// Whether bytes of a next message are already buffered.
    pub fn has_buffered(&self) -> bool {
        !self.buf.is_empty()
    }

    /// The next message if it is entirely buffered, without reading.
    pub fn try_next(&mut self) -> Result<Option<Frame>, FramingError> {
        if self.buf.len() < 5 {
            return Ok(None);
        }
        let tag = self.buf[0];
        let len = i32::from_be_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]]);
        if len < 4 {
            return Err(FramingError::TooShort {
                peer: self.peer,
                tag: tag as char,
                len: len.into(),
            });
        }
        let len = len as usize;
        if len > self.max {
            return Err(FramingError::TooLarge {
                peer: self.peer,
                tag: tag as char,
                len: len as u64,
                max: self.max,
            });
        }
        if len + 1 > BUDGETED_MESSAGE
            && self.charge.is_none()
            && let Some(budget) = &self.budget
        {
            // Charged before anything is reserved for it: a message that
            // does not fit is refused, not buffered.
            self.charge = Some(budget.charge(len + 1).ok_or(FramingError::OverBudget {
                peer: self.peer,
                tag: tag as char,
                len: len as u64,
                budget: budget.limit(),
                in_use: budget.in_use(),
            })?);
        }
        if self.buf.len() < len + 1 {
            // Reserve for the rest of this message only: it is bounded by `max`.
            self.buf.reserve(len + 1 - self.buf.len());
            return Ok(None);
        }
        let raw = self.buf.split_to(len + 1).freeze();
        Ok(Some(Frame {
            tag,
            raw,
            _charge: self.charge.take().map(std::sync::Arc::new),
        }))
    }

    /// The next message, reading as needed. `None` on a clean end of stream
    /// between messages.
    pub async fn next(&mut self) -> Result<Option<Frame>, FramingError> {
        loop {
            if let Some(frame) = self.try_next()? {
                return Ok(Some(frame));
            }
            if !self.fill().await? {
                if self.buf.is_empty() {
                    return Ok(None);
                }
                return Err(FramingError::Truncated { peer: self.peer });
            }
        }
    }

    /// Reads more bytes; false at end of stream. Cancel-safe: a cancelled read
    /// loses nothing.
    pub async fn fill(&mut self) -> Result<bool, FramingError> {
        if self.buf.capacity() - self.buf.len() < 8192 {
            self.buf.reserve(READ_CHUNK);
        }
        let n = self
            .io
            .read_buf(&mut self.buf)
            .await
            .map_err(|source| FramingError::Io {
                peer: self.peer,
                source,
            })?;
        Ok(n > 0)
    }

    /// Reads one untyped startup-phase packet (length, then body), as sent
    /// before the first typed message: StartupMessage, SSLRequest,
    /// GSSENCRequest, CancelRequest. Returns the body after the length.
    pub async fn startup_packet(&mut self) -> Result<Option<Bytes>, FramingError> {
        loop {
            if self.buf.len() >= 4 {
                let len = (&self.buf[..4]).get_i32();
                if len < 8 {
                    return Err(FramingError::TooShort {
                        peer: self.peer,
                        tag: '\0',
                        len: len.into(),
                    });
                }
                let len = len as usize;
                if len > MAX_STARTUP_PACKET {
                    return Err(FramingError::TooLarge {
                        peer: self.peer,
                        tag: '\0',
                        len: len as u64,
                        max: MAX_STARTUP_PACKET,
                    });
                }
                if self.buf.len() >= len {
                    let mut packet = self.buf.split_to(len);
                    packet.advance(4);
                    return Ok(Some(packet.freeze()));
                }
            }
            if !self.fill().await? {
                if self.buf.is_empty() {
                    return Ok(None);
                }
                return Err(FramingError::Truncated { peer: self.peer });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reader(bytes: &'static [u8], max: usize) -> FrameReader<&'static [u8]> {
        FrameReader::new(bytes, Peer::Client, max)
    }

    #[tokio::test]
    async fn splits_messages() {
        let mut r = reader(b"Q\0\0\0\x09abcd\0S\0\0\0\x04", 1024);
        let a = r.next().await.unwrap().unwrap();
        assert_eq!(a.tag, b'Q');
        assert_eq!(a.body(), b"abcd\0");
        let b = r.next().await.unwrap().unwrap();
        assert_eq!(b.tag, b'S');
        assert!(b.body().is_empty());
        assert!(r.next().await.unwrap().is_none());
    }

    #[tokio::test]
    async fn rejects_short_length() {
        let mut r = reader(b"Q\0\0\0\x03", 1024);
        assert!(matches!(
            r.next().await,
            Err(FramingError::TooShort { len: 3, .. })
        ));
    }

    #[tokio::test]
    async fn rejects_huge_length_without_allocating() {
        let mut r = reader(b"Q\x7f\xff\xff\xff", 1024);
        let err = r.next().await.unwrap_err();
        assert!(matches!(err, FramingError::TooLarge { max: 1024, .. }));
        assert!(err.to_string().contains("--max-message-size"));
        assert!(r.buf.capacity() < 1 << 20);
    }

    /// A large message is charged to the budget until its frame is
    /// dropped; one that does not fit is refused before it is buffered.
    #[tokio::test]
    async fn large_messages_are_charged_to_the_budget() {
        let budget = BufferBudget::new(300 * 1024);
        let mut big = vec![b'Q'];
        big.extend_from_slice(&(200u32 * 1024 + 4).to_be_bytes());
        big.resize(200 * 1024 + 5, b'x');
        let mut two = big.clone();
        two.extend_from_slice(&big);
        let two: &'static [u8] = two.leak();
        let mut r = FrameReader::new(two, Peer::Client, 1 << 20).with_budget(budget.clone());
        let first = r.next().await.unwrap().unwrap();
        assert_eq!(budget.in_use(), 200 * 1024 + 5);
        let err = r.next().await.unwrap_err();
        assert!(matches!(err, FramingError::OverBudget { .. }), "{err}");
        assert!(err.to_string().contains("--buffer-budget"), "{err}");
        assert!(
            r.buf.capacity() < 200 * 1024,
            "refused message was buffered"
        );
        let copy = first.clone();
        drop(first);
        assert_eq!(budget.in_use(), 200 * 1024 + 5);
        drop(copy);
        assert_eq!(budget.in_use(), 0);
        // Small messages are not charged.
        let mut r = reader(b"Q\0\0\0\x09abcd\0", 1024).with_budget(budget.clone());
        let _small = r.next().await.unwrap().unwrap();
        assert_eq!(budget.in_use(), 0);
    }

    #[tokio::test]
    async fn truncated_message_is_an_error() {
        let mut r = reader(b"Q\0\0\0\x09ab", 1024);
        assert!(matches!(
            r.next().await,
            Err(FramingError::Truncated { .. })
        ));
    }

    #[tokio::test]
    async fn startup_packet_bounds() {
        let mut r = reader(b"\0\0\0\x08\x04\xd2\x16\x2f", 1024);
        let p = r.startup_packet().await.unwrap().unwrap();
        assert_eq!(&p[..], b"\x04\xd2\x16\x2f");
        let mut r = reader(b"\x01\0\0\0", 1024);
        assert!(matches!(
            r.startup_packet().await,
            Err(FramingError::TooLarge { .. })
        ));
    }
}
