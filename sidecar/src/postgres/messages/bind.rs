//! Bind: creates a portal from a prepared statement and parameter values.

use super::{Cursor, MessageError};

/// The parts of a Bind message the sidecar needs, borrowed from its body
/// (decoding allocates nothing: a Bind is decoded on every execution of a
/// prepared statement).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bind<'a> {
    /// Portal name; empty for the unnamed portal.
    pub portal: &'a str,
    /// Statement name; empty for the unnamed statement.
    pub statement: &'a str,
    /// Result column format codes as sent: none (all text), one (for all), or one per column.
    pub result_formats: Formats<'a>,
}

/// Result column format codes as they are on the wire (big-endian i16s,
/// without their count): none (all text), one (for all), or one per column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Formats<'a>(&'a [u8]);

impl Formats<'_> {
    /// How many codes were sent.
    pub fn len(&self) -> usize {
        self.0.len() / 2
    }

    /// Whether none was sent (every column in text).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The `i`-th code as sent.
    pub fn get(&self, i: usize) -> Option<i16> {
        let b = self.0.get(i * 2..i * 2 + 2)?;
        Some(i16::from_be_bytes([b[0], b[1]]))
    }

    /// The format of result column `i`: 0 text, 1 binary.
    pub fn of(&self, i: usize) -> i16 {
        match self.len() {
            0 => 0,
            1 => self.get(0).unwrap_or(0),
            _ => self.get(i).unwrap_or(0),
        }
    }

    /// The codes kept past their message (none or one without an allocation).
    pub fn to_codes(&self) -> FormatCodes {
        match self.len() {
            0 => FormatCodes::All(0),
            1 => FormatCodes::All(self.get(0).unwrap_or(0)),
            n => FormatCodes::PerColumn((0..n).map(|i| self.get(i).unwrap_or(0)).collect()),
        }
    }
}

/// A Bind's result format codes, owned: one code for every column (none
/// sent, or one: what drivers send) or one per column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FormatCodes {
    /// Every column in this format.
    All(i16),
    /// Column `i` in the `i`-th (text past the last).
    PerColumn(Box<[i16]>),
}

impl FormatCodes {
    /// The format of result column `i`: 0 text, 1 binary.
    pub fn of(&self, i: usize) -> i16 {
        match self {
            FormatCodes::All(f) => *f,
            FormatCodes::PerColumn(fs) => fs.get(i).copied().unwrap_or(0),
        }
    }
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
    let result_formats = Formats(c.take(nresults * 2)?);
    Ok(Bind {
        portal,
        statement,
        result_formats,
    })
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
        assert_eq!(b.result_formats.len(), 1);
        assert_eq!(b.result_formats.of(5), 1);
        assert_eq!(b.result_formats.to_codes(), FormatCodes::All(1));
        assert_eq!(Formats::default().of(0), 0);
        assert_eq!(Formats::default().to_codes(), FormatCodes::All(0));
        let per_column = decode(b"\0s\0\0\0\0\0\0\x03\0\x01\0\0\0\x01").unwrap();
        assert_eq!(
            (0..4)
                .map(|i| per_column.result_formats.of(i))
                .collect::<Vec<_>>(),
            vec![1, 0, 1, 0]
        );
        let codes = per_column.result_formats.to_codes();
        assert_eq!(
            (0..4).map(|i| codes.of(i)).collect::<Vec<_>>(),
            vec![1, 0, 1, 0]
        );
        assert!(decode(b"p\0s\0\0\0\0\x01\0\0\0\x09ab\0\0").is_err());
    }
}
