//! Bind: creates a portal from a prepared statement and parameter values.

use super::{Cursor, MessageError};

/// The parts of a Bind message the sidecar needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bind<'a> {
    /// Portal name; empty for the unnamed portal.
    pub portal: &'a str,
    /// Statement name; empty for the unnamed statement.
    pub statement: &'a str,
    /// Result column format codes as sent: none (all text), one (for all), or one per column.
    pub result_formats: Vec<i16>,
}

/// Decodes a Bind body.
pub fn decode(body: &[u8]) -> Result<Bind<'_>, MessageError> {
    let mut c = Cursor::new(body, "Bind");
    let portal = c.cstr()?;
    let statement = c.cstr()?;
    let nformats = c.count(2)?;
    c.take(nformats * 2)?;
    let nparams = c.count(4)?;
    for _ in 0..nparams {
        let len = c.i32()?;
        if len > 0 {
            c.take(len as usize)?;
        } else if len < -1 {
            return Err(MessageError {
                message: "Bind",
                problem: "negative parameter length",
            });
        }
    }
    let nresults = c.count(2)?;
    let mut result_formats = Vec::with_capacity(nresults);
    for _ in 0..nresults {
        result_formats.push(c.i16()?);
    }
    Ok(Bind {
        portal,
        statement,
        result_formats,
    })
}

/// The format of result column `i` given Bind's format codes: 0 text, 1 binary.
pub fn format_of(formats: &[i16], i: usize) -> i16 {
    match formats.len() {
        0 => 0,
        1 => formats[0],
        _ => formats.get(i).copied().unwrap_or(0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_bind() {
        let body = b"p\0s\0\0\x01\0\x01\0\x01\0\0\0\x02ab\0\x01\0\x01";
        let b = decode(body).unwrap();
        assert_eq!(b.portal, "p");
        assert_eq!(b.statement, "s");
        assert_eq!(b.result_formats, vec![1]);
        assert_eq!(format_of(&b.result_formats, 5), 1);
        assert_eq!(format_of(&[], 0), 0);
        assert!(decode(b"p\0s\0\0\0\0\x01\0\0\0\x09ab\0\0").is_err());
    }
}
