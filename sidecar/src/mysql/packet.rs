//! MySQL packet framing: a logical packet is one or more wire packets of at
//! most 16 MiB - 1 bytes each (a full-sized one is continued by the next),
//! each with a 3-byte length and a sequence id. Reading is bounded by the
//! largest logical packet accepted; writing splits as the protocol says.

use tokio::io::{AsyncRead, AsyncReadExt};

/// The largest payload of one wire packet; a packet of exactly this size is
/// continued by the next.
pub const MAX_WIRE_PAYLOAD: usize = 0xFF_FFFF;

/// Why a packet could not be read.
#[derive(Debug, thiserror::Error)]
pub enum PacketError {
    /// The socket failed or closed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The logical packet is larger than accepted.
    #[error("a {peer} packet is larger than {max} bytes, the largest Sluice accepts")]
    TooLarge {
        /// Who sent it.
        peer: &'static str,
        /// The bound.
        max: usize,
    },
    /// The peer sent something the protocol does not allow.
    #[error("malformed {0}")]
    Malformed(String),
}

/// One logical packet: the sequence id of its first wire packet and its payload.
#[derive(Debug)]
pub struct Packet {
    /// Sequence id of the first wire packet.
    pub seq: u8,
    /// The joined payload.
    pub payload: Vec<u8>,
}

/// Reads one logical packet of at most `max` bytes.
pub async fn read_packet<R: AsyncRead + Unpin>(
    r: &mut R,
    max: usize,
    peer: &'static str,
) -> Result<Packet, PacketError> {
    let mut payload = Vec::new();
    let mut first_seq = None;
    loop {
        let mut header = [0u8; 4];
        r.read_exact(&mut header).await?;
        let len =
            usize::from(header[0]) | usize::from(header[1]) << 8 | usize::from(header[2]) << 16;
        first_seq.get_or_insert(header[3]);
        if payload.len() + len > max {
            return Err(PacketError::TooLarge { peer, max });
        }
        let start = payload.len();
        payload.resize(start + len, 0);
        r.read_exact(&mut payload[start..]).await?;
        if len < MAX_WIRE_PAYLOAD {
            return Ok(Packet {
                seq: first_seq.unwrap_or(0),
                payload,
            });
        }
    }
}

/// Appends `payload` to `out` as wire packets, the first with sequence id
/// `*seq` (advanced past the last one written).
pub fn write_packet(out: &mut Vec<u8>, seq: &mut u8, payload: &[u8]) {
    let mut rest = payload;
    loop {
        let n = rest.len().min(MAX_WIRE_PAYLOAD);
        out.extend_from_slice(&[n as u8, (n >> 8) as u8, (n >> 16) as u8, *seq]);
        out.extend_from_slice(&rest[..n]);
        *seq = seq.wrapping_add(1);
        rest = &rest[n..];
        if n < MAX_WIRE_PAYLOAD {
            return;
        }
    }
}

/// Reads a length-encoded integer at `*pos`; `None` for NULL (0xFB) or a
/// truncated buffer (`Some(Err)`: malformed).
pub fn lenenc_int(buf: &[u8], pos: &mut usize) -> Result<Option<u64>, PacketError> {
    let bad = || PacketError::Malformed("length-encoded integer".into());
    let first = *buf.get(*pos).ok_or_else(bad)?;
    let width = match first {
        0xFB => {
            *pos += 1;
            return Ok(None);
        }
        0xFC => 2,
        0xFD => 3,
        0xFE => 8,
        0xFF => return Err(bad()),
        n => {
            *pos += 1;
            return Ok(Some(u64::from(n)));
        }
    };
    let bytes = buf.get(*pos + 1..*pos + 1 + width).ok_or_else(bad)?;
    let mut v = 0u64;
    for (i, b) in bytes.iter().enumerate() {
        v |= u64::from(*b) << (8 * i);
    }
    *pos += 1 + width;
    Ok(Some(v))
}

/// Reads a length-encoded string at `*pos` (`None`: NULL).
pub fn lenenc_bytes<'a>(buf: &'a [u8], pos: &mut usize) -> Result<Option<&'a [u8]>, PacketError> {
    let Some(len) = lenenc_int(buf, pos)? else {
        return Ok(None);
    };
    let len = usize::try_from(len).map_err(|_| PacketError::Malformed("string length".into()))?;
    let end = pos
        .checked_add(len)
        .filter(|e| *e <= buf.len())
        .ok_or_else(|| PacketError::Malformed("length-encoded string".into()))?;
    let s = &buf[*pos..end];
    *pos = end;
    Ok(Some(s))
}

/// Appends a length-encoded integer.
pub fn put_lenenc_int(out: &mut Vec<u8>, v: u64) {
    match v {
        0..=250 => out.push(v as u8),
        251..=0xFFFF => {
            out.push(0xFC);
            out.extend_from_slice(&(v as u16).to_le_bytes());
        }
        0x1_0000..=0xFF_FFFF => {
            out.push(0xFD);
            out.extend_from_slice(&(v as u32).to_le_bytes()[..3]);
        }
        _ => {
            out.push(0xFE);
            out.extend_from_slice(&v.to_le_bytes());
        }
    }
}

/// Appends a length-encoded string.
pub fn put_lenenc_bytes(out: &mut Vec<u8>, s: &[u8]) {
    put_lenenc_int(out, s.len() as u64);
    out.extend_from_slice(s);
}

/// An ERR packet's payload (protocol 4.1: with the SQLSTATE marker).
pub fn err_payload(code: u16, sqlstate: &str, message: &str) -> Vec<u8> {
    let mut p = vec![0xFF];
    p.extend_from_slice(&code.to_le_bytes());
    p.push(b'#');
    let mut state = [b'H', b'Y', b'0', b'0', b'0'];
    for (d, s) in state.iter_mut().zip(sqlstate.bytes()) {
        *d = s;
    }
    p.extend_from_slice(&state);
    p.extend_from_slice(message.as_bytes());
    p
}

/// An ERR packet's code, SQLSTATE and message.
pub fn parse_err(payload: &[u8]) -> (u16, String, String) {
    let code = match payload.get(1..3) {
        Some(c) => u16::from_le_bytes([c[0], c[1]]),
        None => 0,
    };
    let rest = payload.get(3..).unwrap_or_default();
    match rest.split_first() {
        Some((b'#', after)) if after.len() >= 5 => (
            code,
            String::from_utf8_lossy(&after[..5]).into_owned(),
            String::from_utf8_lossy(&after[5..]).into_owned(),
        ),
        _ => (
            code,
            "HY000".to_string(),
            String::from_utf8_lossy(rest).into_owned(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_full_sized_packet_is_continued_and_joined() {
        let payload = vec![7u8; MAX_WIRE_PAYLOAD + 10];
        let mut out = Vec::new();
        let mut seq = 3;
        write_packet(&mut out, &mut seq, &payload);
        assert_eq!(seq, 5);
        let p = read_packet(&mut out.as_slice(), usize::MAX, "test")
            .await
            .unwrap();
        assert_eq!((p.seq, p.payload.len()), (3, payload.len()));
        // Exactly full-sized: an empty packet ends it.
        let payload = vec![1u8; MAX_WIRE_PAYLOAD];
        let mut out = Vec::new();
        let mut seq = 0;
        write_packet(&mut out, &mut seq, &payload);
        assert_eq!(out.len(), MAX_WIRE_PAYLOAD + 8);
        let err = read_packet(&mut out.as_slice(), 1000, "client")
            .await
            .unwrap_err();
        assert!(err.to_string().contains("larger than 1000"), "{err}");
    }

    #[test]
    fn lenenc_round_trips() {
        for v in [0, 250, 251, 65535, 65536, 0xFF_FFFF, 0x100_0000, u64::MAX] {
            let mut out = Vec::new();
            put_lenenc_int(&mut out, v);
            let mut pos = 0;
            assert_eq!(lenenc_int(&out, &mut pos).unwrap(), Some(v));
            assert_eq!(pos, out.len());
        }
        let (code, state, msg) = parse_err(&err_payload(1142, "42000", "no"));
        assert_eq!((code, state.as_str(), msg.as_str()), (1142, "42000", "no"));
    }
}
