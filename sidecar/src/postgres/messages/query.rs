//! Query: a simple-protocol query string, possibly several statements.

use super::{Cursor, MessageError};

/// The SQL text of a Query message.
pub fn decode(body: &[u8]) -> Result<&str, MessageError> {
    Cursor::new(body, "Query").cstr()
}

#[cfg(test)]
mod tests {
    #[test]
    fn decodes_text() {
        assert_eq!(super::decode(b"select 1\0").unwrap(), "select 1");
        assert!(super::decode(b"select 1").is_err());
    }
}
