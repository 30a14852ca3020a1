//! Parse: prepares a named or unnamed statement (extended protocol).

use super::{Cursor, MessageError};

/// The parts of a Parse message the sidecar needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parse<'a> {
    /// Statement name; empty for the unnamed statement.
    pub name: &'a str,
    /// The SQL text.
    pub query: &'a str,
}

/// Decodes a Parse body.
pub fn decode(body: &[u8]) -> Result<Parse<'_>, MessageError> {
    let mut c = Cursor::new(body, "Parse");
    let name = c.cstr()?;
    let query = c.cstr()?;
    let n = c.count(4)?;
    c.take(n * 4)?;
    Ok(Parse { name, query })
}

#[cfg(test)]
mod tests {
    #[test]
    fn decodes_parse() {
        let p = super::decode(b"s1\0select $1\0\0\x01\0\0\0\x17").unwrap();
        assert_eq!(p.name, "s1");
        assert_eq!(p.query, "select $1");
        assert!(super::decode(b"s1\0select $1\0\0\x05\0\0\0\x17").is_err());
    }
}
