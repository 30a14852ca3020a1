//! Execute: runs a portal.

use super::{Cursor, MessageError};

/// Decodes an Execute body: the portal name and the row limit (0 = all).
pub fn decode(body: &[u8]) -> Result<(&str, i32), MessageError> {
    let mut c = Cursor::new(body, "Execute");
    Ok((c.cstr()?, c.i32()?))
}

#[cfg(test)]
mod tests {
    #[test]
    fn decodes_execute() {
        assert_eq!(super::decode(b"p\0\0\0\0\x05").unwrap(), ("p", 5));
        assert!(super::decode(b"p\0\0").is_err());
    }
}
