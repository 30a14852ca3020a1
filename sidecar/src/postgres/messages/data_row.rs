//! DataRow: one result row. Values are read in place and only the masked ones
//! are rewritten; the lengths of the new message are recomputed.

use bytes::{BufMut, BytesMut};

use super::{Cursor, MessageError, backend, begin, finish};

/// The value ranges of a DataRow body: `None` for NULL, else the byte range in the body.
pub fn values(body: &[u8]) -> Result<Vec<Option<std::ops::Range<usize>>>, MessageError> {
    let mut c = Cursor::new(body, "DataRow");
    let n = c.count(4)?;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let len = c.i32()?;
        if len == -1 {
            out.push(None);
        } else if len < 0 {
            return Err(MessageError {
                message: "DataRow",
                problem: "negative value length",
            });
        } else {
            let start = c.position();
            c.take(len as usize)?;
            out.push(Some(start..start + len as usize));
        }
    }
    Ok(out)
}

/// What becomes of one value when a row is rewritten.
#[derive(Debug, PartialEq, Eq)]
pub enum Rewrite {
    /// The value passes as it is.
    Keep,
    /// The value becomes NULL.
    Null,
    /// The value is replaced by these bytes.
    Replace(bytes::Bytes),
}

/// Writes a DataRow whose values are those of `body`, each passed through
/// `rewrite(column, value)`. Returns how many values were changed.
pub fn rewrite(
    body: &[u8],
    out: &mut BytesMut,
    mut rewrite: impl FnMut(usize, Option<&[u8]>) -> Rewrite,
) -> Result<usize, MessageError> {
    let ranges = values(body)?;
    let at = begin(out, backend::DATA_ROW);
    out.put_i16(ranges.len() as i16);
    let mut changed = 0;
    for (i, range) in ranges.into_iter().enumerate() {
        let value = range.map(|r| &body[r]);
        match rewrite(i, value) {
            Rewrite::Keep => put_value(out, value),
            Rewrite::Null => {
                changed += usize::from(value.is_some());
                out.put_i32(-1);
            }
            Rewrite::Replace(bytes) => {
                changed += 1;
                put_value(out, Some(&bytes));
            }
        }
    }
    finish(out, at);
    Ok(changed)
}

/// Writes one value (length, then bytes; -1 for NULL).
pub fn put_value(out: &mut BytesMut, value: Option<&[u8]>) {
    match value {
        None => out.put_i32(-1),
        Some(v) => {
            out.put_i32(v.len() as i32);
            out.put_slice(v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(values: &[Option<&[u8]>]) -> Vec<u8> {
        let mut body = (values.len() as i16).to_be_bytes().to_vec();
        for v in values {
            match v {
                None => body.extend_from_slice(&(-1i32).to_be_bytes()),
                Some(v) => {
                    body.extend_from_slice(&(v.len() as i32).to_be_bytes());
                    body.extend_from_slice(v);
                }
            }
        }
        body
    }

    #[test]
    fn rewrites_lengths() {
        let body = row(&[Some(b"1"), Some(b"123-45-6789"), None]);
        let mut out = BytesMut::new();
        let n = rewrite(&body, &mut out, |i, _| match i {
            1 => Rewrite::Replace(bytes::Bytes::from_static(b"***")),
            _ => Rewrite::Keep,
        })
        .unwrap();
        assert_eq!(n, 1);
        let expected = row(&[Some(b"1"), Some(b"***"), None]);
        assert_eq!(&out[5..], &expected[..]);
        assert_eq!(
            i32::from_be_bytes([out[1], out[2], out[3], out[4]]) as usize,
            expected.len() + 4
        );
    }

    #[test]
    fn rejects_bad_lengths() {
        assert!(values(&[0, 1, 0, 0, 0, 9, b'a']).is_err());
        assert!(values(&[0, 1, 0xff, 0xff, 0xff, 0xfe]).is_err());
        assert!(values(&[0x7f, 0xff]).is_err());
    }
}
