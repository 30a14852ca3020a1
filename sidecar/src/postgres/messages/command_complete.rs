//! CommandComplete: the end of one statement's result, with its tag.

use bytes::BytesMut;

use super::{backend, begin, finish, put_cstr};

/// The row count of a command tag (`SELECT 5`, `INSERT 0 3`, `COPY 10`), if any.
pub fn rows(body: &[u8]) -> Option<u64> {
    let tag = body.strip_suffix(b"\0").unwrap_or(body);
    let last = tag.rsplit(|b| *b == b' ').next()?;
    std::str::from_utf8(last).ok()?.parse().ok()
}

/// Writes a CommandComplete with a tag.
pub fn encode(out: &mut BytesMut, tag: &str) {
    let at = begin(out, backend::COMMAND_COMPLETE);
    put_cstr(out, tag);
    finish(out, at);
}

/// The tag with its row count replaced (for a truncated result).
pub fn with_rows(body: &[u8], rows: u64) -> String {
    let tag = body.strip_suffix(b"\0").unwrap_or(body);
    let tag = String::from_utf8_lossy(tag);
    match tag.rsplit_once(' ') {
        Some((head, n)) if n.parse::<u64>().is_ok() => format!("{head} {rows}"),
        _ => tag.into_owned(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn row_counts() {
        assert_eq!(super::rows(b"SELECT 5\0"), Some(5));
        assert_eq!(super::rows(b"INSERT 0 3\0"), Some(3));
        assert_eq!(super::rows(b"CREATE TABLE\0"), None);
        assert_eq!(super::with_rows(b"SELECT 50\0", 10), "SELECT 10");
    }
}
