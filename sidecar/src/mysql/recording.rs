//! Session recording (`spec.recording`, see [`crate::recording`]) on the
//! MySQL plane: a result's rows read back as text from the packets written
//! to the workload, after masking, for the same [`ResultRecorder`] the
//! PostgreSQL plane feeds.
//!
//! - a text-protocol row: its length-encoded values (NULL as `null`);
//! - a binary-protocol row (EXECUTE, cursor fetches): each value in the
//!   form MySQL's text protocol would give it (integers in decimal, dates
//!   `YYYY-MM-DD[ hh:mm:ss[.fraction]]`, times `[-]hh:mm:ss[.fraction]`,
//!   strings, decimals and JSON as their bytes);
//! - bytes that are not UTF-8, or hold a NUL byte, are recorded as `\x` and
//!   hex (as a PostgreSQL binary value is).
//!
//! A row that cannot be read this way is left out and the result says so
//! (`truncated`); the row itself was relayed as any row is.
//!
//! [`ResultRecorder`]: crate::recording::ResultRecorder

use mysql_common::constants::{ColumnFlags, ColumnType};
use mysql_common::packets::Column;

use super::binary::{self, Value};
use super::packet::lenenc_bytes;
use crate::recording::value_text;

/// The column names of a result, as its column definitions give them.
pub fn names(columns: &[Column]) -> impl Iterator<Item = String> + '_ {
    columns.iter().map(|c| c.name_str().into_owned())
}

/// The values of a text-protocol row of `columns` columns.
pub fn text_row(row: &[u8], columns: usize) -> Option<Vec<Option<String>>> {
    let mut pos = 0;
    let mut out = Vec::with_capacity(columns);
    for _ in 0..columns {
        out.push(
            lenenc_bytes(row, &mut pos)
                .ok()?
                .map(|v| value_text(v, false)),
        );
    }
    (pos == row.len()).then_some(out)
}

/// The values of a binary-protocol row of `columns`.
pub fn binary_row(row: &[u8], columns: &[Column]) -> Option<Vec<Option<String>>> {
    let values = binary::values(row, columns).ok()?;
    values
        .into_iter()
        .zip(columns)
        .map(|(v, c)| match v {
            None => Some(None),
            Some(v) => binary_text(&v, c).map(Some),
        })
        .collect()
}

/// One non-NULL binary value as text; `None` when its bytes do not fit its type.
fn binary_text(v: &Value<'_>, column: &Column) -> Option<String> {
    use ColumnType::*;
    let b = match v {
        Value::Bytes(b) => return Some(value_text(b, false)),
        Value::Raw(b) => *b,
    };
    let unsigned = column.flags().contains(ColumnFlags::UNSIGNED_FLAG);
    let int = |n: usize| -> Option<String> {
        let bytes = b.get(..n).filter(|_| b.len() == n)?;
        let mut wide = [0u8; 8];
        wide[..n].copy_from_slice(bytes);
        let raw = u64::from_le_bytes(wide);
        Some(if unsigned {
            raw.to_string()
        } else {
            let shift = 64 - 8 * n as u32;
            (((raw << shift) as i64) >> shift).to_string()
        })
    };
    match column.column_type() {
        MYSQL_TYPE_TINY => int(1),
        MYSQL_TYPE_SHORT | MYSQL_TYPE_YEAR => int(2),
        MYSQL_TYPE_LONG | MYSQL_TYPE_INT24 => int(4),
        MYSQL_TYPE_LONGLONG => int(8),
        MYSQL_TYPE_FLOAT => Some(f32::from_le_bytes(b.try_into().ok()?).to_string()),
        MYSQL_TYPE_DOUBLE => Some(f64::from_le_bytes(b.try_into().ok()?).to_string()),
        MYSQL_TYPE_DATE | MYSQL_TYPE_NEWDATE => date_time(b, column.decimals(), false),
        MYSQL_TYPE_DATETIME
        | MYSQL_TYPE_TIMESTAMP
        | MYSQL_TYPE_DATETIME2
        | MYSQL_TYPE_TIMESTAMP2 => date_time(b, column.decimals(), true),
        MYSQL_TYPE_TIME | MYSQL_TYPE_TIME2 => time(b, column.decimals()),
        MYSQL_TYPE_NULL => Some(String::new()),
        _ => None,
    }
}

/// `.` and the first `decimals` digits of `micros` (none when `decimals` is 0).
fn fraction(micros: u32, decimals: u8) -> String {
    let digits = usize::from(decimals.min(6));
    if digits == 0 {
        return String::new();
    }
    let all = format!("{micros:06}");
    format!(".{}", &all[..digits])
}

/// A binary DATE, DATETIME or TIMESTAMP (`b`: its length byte, then year,
/// month, day, hour, minute, second, microseconds, the tail left out when zero).
fn date_time(b: &[u8], decimals: u8, with_time: bool) -> Option<String> {
    let (&len, rest) = b.split_first()?;
    if rest.len() != usize::from(len) || ![0, 4, 7, 11].contains(&len) {
        return None;
    }
    let at = |i: usize| rest.get(i).copied().unwrap_or(0);
    let year = u16::from_le_bytes([at(0), at(1)]);
    let micros = u32::from_le_bytes([at(7), at(8), at(9), at(10)]);
    let date = format!("{year:04}-{:02}-{:02}", at(2), at(3));
    if !with_time {
        return Some(date);
    }
    Some(format!(
        "{date} {:02}:{:02}:{:02}{}",
        at(4),
        at(5),
        at(6),
        fraction(micros, decimals)
    ))
}

/// A binary TIME (`b`: its length byte, then sign, days, hours, minutes,
/// seconds, microseconds).
fn time(b: &[u8], decimals: u8) -> Option<String> {
    let (&len, rest) = b.split_first()?;
    if rest.len() != usize::from(len) || ![0, 8, 12].contains(&len) {
        return None;
    }
    let at = |i: usize| rest.get(i).copied().unwrap_or(0);
    let days = u32::from_le_bytes([at(1), at(2), at(3), at(4)]);
    let hours = u64::from(days) * 24 + u64::from(at(5));
    let micros = u32::from_le_bytes([at(8), at(9), at(10), at(11)]);
    Some(format!(
        "{}{hours:02}:{:02}:{:02}{}",
        if at(0) == 1 { "-" } else { "" },
        at(6),
        at(7),
        fraction(micros, decimals)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mysql::packet::put_lenenc_bytes;
    use mysql_common::io::ParseBuf;
    use mysql_common::proto::MyDeserialize;

    /// A column definition of `ty` with `flags` and `decimals`.
    fn column(name: &str, ty: ColumnType, flags: u16, decimals: u8) -> Column {
        let mut p = Vec::new();
        for s in ["def", "db", "t", "t", name, name] {
            put_lenenc_bytes(&mut p, s.as_bytes());
        }
        p.push(0x0c);
        p.extend_from_slice(&33u16.to_le_bytes());
        p.extend_from_slice(&255u32.to_le_bytes());
        p.push(ty as u8);
        p.extend_from_slice(&flags.to_le_bytes());
        p.push(decimals);
        p.extend_from_slice(&[0, 0]);
        Column::deserialize((), &mut ParseBuf(&p)).expect("a column definition")
    }

    #[test]
    fn text_rows_are_their_values_and_null() {
        let mut row = Vec::new();
        put_lenenc_bytes(&mut row, b"[redacted]");
        row.push(0xFB);
        put_lenenc_bytes(&mut row, &[0xff, 0x00]);
        assert_eq!(
            text_row(&row, 3),
            Some(vec![
                Some("[redacted]".into()),
                None,
                Some("\\xff00".into())
            ])
        );
        // A row that does not match its column count is not read.
        assert_eq!(text_row(&row, 2), None);
        assert_eq!(text_row(&row, 4), None);
    }

    #[test]
    fn binary_values_read_as_the_text_protocol_gives_them() {
        use ColumnType::*;
        let columns = [
            column("n", MYSQL_TYPE_LONG, 0, 0),
            column("u", MYSQL_TYPE_TINY, 0x20, 0),
            column("s", MYSQL_TYPE_VAR_STRING, 0, 0),
            column("d", MYSQL_TYPE_DATE, 0, 0),
            column("at", MYSQL_TYPE_DATETIME, 0, 3),
            column("t", MYSQL_TYPE_TIME, 0, 0),
            column("x", MYSQL_TYPE_DOUBLE, 0, 31),
            column("gone", MYSQL_TYPE_VAR_STRING, 0, 0),
        ];
        // Header, NULL bitmap (column 7 NULL: bit 9), then the values.
        let mut row = vec![0x00, 0x00, 0x02];
        row.extend_from_slice(&(-3i32).to_le_bytes());
        row.push(200);
        put_lenenc_bytes(&mut row, b"[redacted]");
        row.extend_from_slice(&[4, 0xbc, 0x07, 1, 2]);
        row.extend_from_slice(&[11, 0xe4, 0x07, 3, 4, 5, 6, 7]);
        row.extend_from_slice(&123_456u32.to_le_bytes());
        row.extend_from_slice(&[8, 1, 1, 0, 0, 0, 2, 3, 4]);
        row.extend_from_slice(&1.5f64.to_le_bytes());
        assert_eq!(
            binary_row(&row, &columns),
            Some(
                [
                    Some("-3"),
                    Some("200"),
                    Some("[redacted]"),
                    Some("1980-01-02"),
                    Some("2020-03-04 05:06:07.123"),
                    Some("-26:03:04"),
                    Some("1.5"),
                    None
                ]
                .map(|v| v.map(String::from))
                .to_vec()
            )
        );
        // Cut short: not read.
        assert_eq!(binary_row(&row[..row.len() - 1], &columns), None);
    }
}
