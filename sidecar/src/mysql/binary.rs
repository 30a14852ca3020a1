//! Binary result rows (the answers to COM_STMT_EXECUTE) masked by column.
//!
//! A binary row is a 0x00 header, a NULL bitmap (bit `i + 2` for column
//! `i`) and the values of the non-NULL columns in their binary encoding.
//! Values are walked by hand rather than decoded and encoded again with
//! mysql_common: a value that is not masked is passed on byte for byte.
//! A masked string column gets the masked text; a masked column of any
//! other type is set NULL (its bitmap bit set, its bytes left out: an
//! integer or a date cannot carry text).

use mysql_common::constants::ColumnType;
use mysql_common::packets::Column;

use super::packet::{PacketError, lenenc_bytes, put_lenenc_bytes};
use super::results::ColumnPlan;
use crate::masking::{MaskCounts, Masking};

/// Where one non-NULL value of a binary row lies.
pub(super) enum Value<'a> {
    /// A length-encoded string (strings, decimals, JSON, BIT, …).
    Bytes(&'a [u8]),
    /// A fixed-size or length-prefixed value (numbers, dates, times): its
    /// bytes as on the wire.
    Raw(&'a [u8]),
}

/// Reads the value of a column of type `ty` at `pos`.
fn value<'a>(row: &'a [u8], pos: &mut usize, ty: ColumnType) -> Result<Value<'a>, PacketError> {
    use ColumnType::*;
    let fixed = match ty {
        MYSQL_TYPE_NULL => Some(0),
        MYSQL_TYPE_TINY => Some(1),
        MYSQL_TYPE_SHORT | MYSQL_TYPE_YEAR => Some(2),
        MYSQL_TYPE_LONG | MYSQL_TYPE_INT24 | MYSQL_TYPE_FLOAT => Some(4),
        MYSQL_TYPE_LONGLONG | MYSQL_TYPE_DOUBLE => Some(8),
        MYSQL_TYPE_DATE
        | MYSQL_TYPE_DATETIME
        | MYSQL_TYPE_TIMESTAMP
        | MYSQL_TYPE_TIME
        | MYSQL_TYPE_DATETIME2
        | MYSQL_TYPE_TIMESTAMP2
        | MYSQL_TYPE_TIME2
        | MYSQL_TYPE_NEWDATE => {
            let n = *row.get(*pos).ok_or_else(short)?;
            Some(1 + usize::from(n))
        }
        _ => None,
    };
    match fixed {
        Some(n) => {
            let v = row.get(*pos..*pos + n).ok_or_else(short)?;
            *pos += n;
            Ok(Value::Raw(v))
        }
        None => {
            let v = lenenc_bytes(row, pos)?.ok_or_else(short)?;
            Ok(Value::Bytes(v))
        }
    }
}

fn short() -> PacketError {
    PacketError::Malformed("a binary row is shorter than its columns".into())
}

/// The value as text for the detectors: strings as they are, integers in
/// decimal (a number a detector knows, a card number in a BIGINT, is
/// caught as in a text row); `None` for dates, times and floats.
fn as_text(v: &Value<'_>, column: &Column) -> Option<String> {
    use ColumnType::*;
    let unsigned = column
        .flags()
        .contains(mysql_common::constants::ColumnFlags::UNSIGNED_FLAG);
    match v {
        Value::Bytes(b) => Some(String::from_utf8_lossy(b).into_owned()),
        Value::Raw(b) => {
            let mut wide = [0u8; 8];
            wide.get_mut(..b.len())?.copy_from_slice(b);
            let n = u64::from_le_bytes(wide);
            let bits = 8 * b.len() as u32;
            match column.column_type() {
                MYSQL_TYPE_TINY | MYSQL_TYPE_SHORT | MYSQL_TYPE_YEAR | MYSQL_TYPE_LONG
                | MYSQL_TYPE_INT24 | MYSQL_TYPE_LONGLONG => Some(if unsigned || bits == 0 {
                    n.to_string()
                } else {
                    // Sign-extend from `bits`.
                    let shift = 64 - bits;
                    (((n << shift) as i64) >> shift).to_string()
                }),
                _ => None,
            }
        }
    }
}

/// The values of a binary row of `columns`, in order (`None`: NULL).
pub(super) fn values<'a>(
    row: &'a [u8],
    columns: &[Column],
) -> Result<Vec<Option<Value<'a>>>, PacketError> {
    let bitmap_len = (columns.len() + 7 + 2) / 8;
    let bad = || PacketError::Malformed("a binary row does not match its column count".into());
    if row.first() != Some(&0x00) || row.len() < 1 + bitmap_len {
        return Err(bad());
    }
    let bitmap = &row[1..1 + bitmap_len];
    let mut pos = 1 + bitmap_len;
    let mut out = Vec::with_capacity(columns.len());
    for (i, column) in columns.iter().enumerate() {
        let bit = i + 2;
        if bitmap[bit / 8] & (1 << (bit % 8)) != 0 {
            out.push(None);
        } else {
            out.push(Some(value(row, &mut pos, column.column_type())?));
        }
    }
    if pos != row.len() {
        return Err(bad());
    }
    Ok(out)
}

/// `row` with the masks of `plan` (and the detectors when `detect`)
/// applied; `None` when nothing was masked. `columns` are the result's
/// column definitions, in order. Each masked value is counted in `counts`
/// under the rule that masked it.
pub fn mask_binary_row(
    row: &[u8],
    columns: &[Column],
    plan: &[ColumnPlan],
    masking: &Masking,
    detect: bool,
    counts: &mut MaskCounts,
) -> Result<Option<(Vec<u8>, u64)>, PacketError> {
    let n = columns.len();
    let bitmap_len = (n + 7 + 2) / 8;
    if row.first() != Some(&0x00) || row.len() < 1 + bitmap_len || plan.len() != n {
        return Err(PacketError::Malformed(
            "a binary row does not match its column count".into(),
        ));
    }
    let mut bitmap = row[1..1 + bitmap_len].to_vec();
    let mut values = Vec::with_capacity(row.len());
    let mut pos = 1 + bitmap_len;
    let mut masked = 0u64;
    for (i, (column, col)) in columns.iter().zip(plan).enumerate() {
        let bit = i + 2;
        if bitmap[bit / 8] & (1 << (bit % 8)) != 0 {
            continue;
        }
        let start = pos;
        let v = value(row, &mut pos, column.column_type())?;
        let replacement = match col.rule {
            Some(rule) => Some(match (&v, col.text) {
                (Value::Bytes(b), true) => Some(masking.mask(rule, &String::from_utf8_lossy(b))),
                _ => None,
            }),
            None if detect => as_text(&v, column)
                .and_then(|t| masking.detect(&t))
                .map(|m| {
                    matches!(v, Value::Bytes(_))
                        .then_some(m)
                        .filter(|_| col.text)
                }),
            None => None,
        };
        if replacement.is_some() {
            masked += 1;
            counts.add(col.rule.or_else(|| masking.detector_rule()));
        }
        match replacement {
            None => values.extend_from_slice(&row[start..pos]),
            Some(Some(text)) => put_lenenc_bytes(&mut values, text.as_bytes()),
            Some(None) => bitmap[bit / 8] |= 1 << (bit % 8),
        }
    }
    if pos != row.len() {
        return Err(PacketError::Malformed(
            "a binary row does not match its column count".into(),
        ));
    }
    if masked == 0 {
        return Ok(None);
    }
    let mut out = Vec::with_capacity(1 + bitmap_len + values.len());
    out.push(0x00);
    out.extend_from_slice(&bitmap);
    out.extend_from_slice(&values);
    Ok(Some((out, masked)))
}
