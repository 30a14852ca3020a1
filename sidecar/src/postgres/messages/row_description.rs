//! RowDescription: the columns of a result.

use super::{Cursor, MessageError};

/// One result column as the server describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    /// Output name (after aliasing).
    pub name: String,
    /// OID of the table the column comes straight from, or 0 (expression).
    pub table_oid: u32,
    /// Attribute number in that table, or 0.
    pub attnum: i16,
    /// OID of the column's type.
    pub type_oid: u32,
    /// Format code: 0 text, 1 binary (always 0 in a Describe of a statement).
    pub format: i16,
}

/// Decodes a RowDescription body.
pub fn decode(body: &[u8]) -> Result<Vec<Column>, MessageError> {
    let mut c = Cursor::new(body, "RowDescription");
    // Each field takes at least 19 bytes (an empty name and 18 bytes of numbers).
    let n = c.count(19)?;
    let mut columns = Vec::with_capacity(n);
    for _ in 0..n {
        let name = c.cstr()?.to_string();
        let table_oid = c.u32()?;
        let attnum = c.i16()?;
        let type_oid = c.u32()?;
        let _size = c.i16()?;
        let _modifier = c.i32()?;
        let format = c.i16()?;
        columns.push(Column {
            name,
            table_oid,
            attnum,
            type_oid,
            format,
        });
    }
    Ok(columns)
}

#[cfg(test)]
mod tests {
    #[test]
    fn decodes_columns() {
        let mut body = vec![0, 1];
        body.extend_from_slice(b"ssn\0");
        body.extend_from_slice(&16384u32.to_be_bytes());
        body.extend_from_slice(&3i16.to_be_bytes());
        body.extend_from_slice(&25u32.to_be_bytes());
        body.extend_from_slice(&(-1i16).to_be_bytes());
        body.extend_from_slice(&(-1i32).to_be_bytes());
        body.extend_from_slice(&1i16.to_be_bytes());
        let cols = super::decode(&body).unwrap();
        assert_eq!(cols[0].name, "ssn");
        assert_eq!(cols[0].table_oid, 16384);
        assert_eq!(cols[0].attnum, 3);
        assert_eq!(cols[0].type_oid, 25);
        assert_eq!(cols[0].format, 1);
        assert!(super::decode(&body[..body.len() - 1]).is_err());
        assert!(super::decode(&[0x7f, 0xff]).is_err());
    }
}
