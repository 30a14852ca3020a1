//! Describe and Close: both name a statement (`S`) or a portal (`P`).

use bytes::BytesMut;

use super::{Cursor, MessageError, begin, finish, frontend, put_cstr};

/// What a Describe or Close refers to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target<'a> {
    /// A prepared statement.
    Statement(&'a str),
    /// A portal.
    Portal(&'a str),
}

/// Decodes a Describe or Close body.
pub fn decode<'a>(body: &'a [u8], message: &'static str) -> Result<Target<'a>, MessageError> {
    let mut c = Cursor::new(body, message);
    let kind = c.u8()?;
    let name = c.cstr()?;
    match kind {
        b'S' => Ok(Target::Statement(name)),
        b'P' => Ok(Target::Portal(name)),
        _ => Err(MessageError {
            message,
            problem: "target is neither 'S' nor 'P'",
        }),
    }
}

/// Writes a Describe of a portal (the sidecar adds one after a Bind when it
/// must know a result's columns to mask it).
pub fn describe_portal(out: &mut BytesMut, portal: &str) {
    let at = begin(out, frontend::DESCRIBE);
    out.extend_from_slice(b"P");
    put_cstr(out, portal);
    finish(out, at);
}

/// Writes a Describe of a prepared statement (the sidecar adds one after a
/// Parse when it must know the statement's columns to mask its results).
pub fn describe_statement(out: &mut BytesMut, statement: &str) {
    let at = begin(out, frontend::DESCRIBE);
    out.extend_from_slice(b"S");
    put_cstr(out, statement);
    finish(out, at);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_targets() {
        assert_eq!(decode(b"Sx\0", "Describe").unwrap(), Target::Statement("x"));
        assert_eq!(decode(b"P\0", "Close").unwrap(), Target::Portal(""));
        assert!(decode(b"Q\0", "Close").is_err());
        let mut out = BytesMut::new();
        describe_portal(&mut out, "p1");
        assert_eq!(&out[..], b"D\0\0\0\x08Pp1\0");
    }
}
