//! Applying a mask to result rows (DataRow) and COPY text rows.
//!
//! Formats: in text format every value is text and goes through the masker
//! or the detectors. In binary format text-like types (text, varchar, char,
//! name, json, jsonb) are masked as text; arrays of them are walked element by
//! element for detectors. A masked value of any other binary type becomes
//! NULL: it is the only value every type's binary decoder accepts, and a
//! made-up "type-correct" value (0, epoch, a nil UUID) would pass for real
//! data. Under detectors, int8 values are checked as their decimal text (card
//! numbers are stored as bigint) and other binary types that could carry text
//! (composites, unknown types) are NULLed rather than passed unseen.

use bytes::{BufMut, BytesMut};

use super::messages::data_row::{self, Rewrite};
use super::messages::row_description::Column;
use super::messages::{Cursor, MessageError};
use crate::masking::{MaskCounts, Masking};

/// Type OIDs the sidecar knows.
pub mod oid {
    /// bool
    pub const BOOL: u32 = 16;
    /// bytea
    pub const BYTEA: u32 = 17;
    /// "char"
    pub const CHAR: u32 = 18;
    /// name
    pub const NAME: u32 = 19;
    /// int8
    pub const INT8: u32 = 20;
    /// int2
    pub const INT2: u32 = 21;
    /// int4
    pub const INT4: u32 = 23;
    /// text
    pub const TEXT: u32 = 25;
    /// oid
    pub const OID: u32 = 26;
    /// json
    pub const JSON: u32 = 114;
    /// xml
    pub const XML: u32 = 142;
    /// float4
    pub const FLOAT4: u32 = 700;
    /// float8
    pub const FLOAT8: u32 = 701;
    /// unknown
    pub const UNKNOWN: u32 = 705;
    /// bpchar
    pub const BPCHAR: u32 = 1042;
    /// varchar
    pub const VARCHAR: u32 = 1043;
    /// date
    pub const DATE: u32 = 1082;
    /// time
    pub const TIME: u32 = 1083;
    /// timestamp
    pub const TIMESTAMP: u32 = 1114;
    /// timestamptz
    pub const TIMESTAMPTZ: u32 = 1184;
    /// interval
    pub const INTERVAL: u32 = 1186;
    /// numeric
    pub const NUMERIC: u32 = 1700;
    /// uuid
    pub const UUID: u32 = 2950;
    /// jsonb
    pub const JSONB: u32 = 3802;
    /// text[]
    pub const TEXT_ARRAY: u32 = 1009;
    /// varchar[]
    pub const VARCHAR_ARRAY: u32 = 1015;
    /// bpchar[]
    pub const BPCHAR_ARRAY: u32 = 1014;
    /// name[]
    pub const NAME_ARRAY: u32 = 1003;
    /// json[]
    pub const JSON_ARRAY: u32 = 199;
    /// jsonb[]
    pub const JSONB_ARRAY: u32 = 3807;
}

fn is_text_like(type_oid: u32) -> bool {
    matches!(
        type_oid,
        oid::TEXT
            | oid::VARCHAR
            | oid::BPCHAR
            | oid::NAME
            | oid::CHAR
            | oid::UNKNOWN
            | oid::JSON
            | oid::JSONB
    )
}

/// The first OID PostgreSQL gives objects made after `initdb`: types at
/// or above it are user-defined (domains, enums, an extension's `citext`),
/// which drivers read in text format as strings.
const FIRST_NORMAL_OID: u32 = 16384;

/// Whether a masked value of this column may be sent as masked text: a
/// text-like type, or in text format also a user-defined type or `xml`
/// (a masked text is valid XML content).
/// Any other built-in type (numbers, dates, arrays, `inet`, …) is sent as
/// NULL, in text format too: `[redacted]` in a date column made drivers
/// that parse text values by type (psycopg, asyncpg's text codecs) raise
/// on the whole row. NULL is the one value every type accepts.
fn masks_as_text(type_oid: u32, binary: bool) -> bool {
    is_text_like(type_oid) || (!binary && (type_oid >= FIRST_NORMAL_OID || type_oid == oid::XML))
}

fn is_json(type_oid: u32) -> bool {
    matches!(type_oid, oid::JSON | oid::JSONB)
}

/// Binary types whose values cannot carry free text.
fn is_opaque_scalar(type_oid: u32) -> bool {
    matches!(
        type_oid,
        oid::BOOL
            | oid::INT2
            | oid::INT4
            | oid::OID
            | oid::FLOAT4
            | oid::FLOAT8
            | oid::DATE
            | oid::TIME
            | oid::TIMESTAMP
            | oid::TIMESTAMPTZ
            | oid::INTERVAL
            | oid::UUID
            | oid::BYTEA
            | oid::NUMERIC
    )
}

/// What to do with one column of a result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnRule {
    /// The masking rule (masker index) when the whole column is masked.
    pub mask: Option<usize>,
    /// 0 text, 1 binary.
    pub format: i16,
    /// The column's type.
    pub type_oid: u32,
}

/// How one result's rows are masked.
#[derive(Debug, Clone)]
pub struct RowMask {
    /// One rule per column.
    pub columns: Vec<ColumnRule>,
    /// Whether detectors run on values of columns not masked whole.
    pub detectors: bool,
    /// Output names of the masked columns with why (for audit).
    pub reasons: Vec<(String, String)>,
}

impl RowMask {
    /// A mask from the columns of a RowDescription and per-column masker rules.
    pub fn new(columns: &[Column], masks: Vec<Option<(usize, String)>>, detectors: bool) -> Self {
        let mut reasons = Vec::new();
        let rules = columns
            .iter()
            .zip(masks.into_iter().chain(std::iter::repeat(None)))
            .map(|(c, m)| {
                if let Some((_, why)) = &m {
                    reasons.push((c.name.clone(), why.clone()));
                }
                ColumnRule {
                    mask: m.map(|(rule, _)| rule),
                    format: c.format,
                    type_oid: c.type_oid,
                }
            })
            .collect();
        RowMask {
            columns: rules,
            detectors,
            reasons,
        }
    }

    /// The same mask for a portal whose Bind asked for these result formats.
    pub fn with_formats(&self, formats: &super::messages::bind::FormatCodes) -> RowMask {
        let mut m = self.clone();
        for (i, c) in m.columns.iter_mut().enumerate() {
            c.format = formats.of(i);
        }
        m
    }

    /// A mask for rows whose columns are unknown: every value becomes NULL.
    pub fn opaque() -> RowMask {
        RowMask {
            columns: Vec::new(),
            detectors: false,
            reasons: Vec::new(),
        }
    }

    /// Whether rows pass untouched.
    pub fn is_noop(&self) -> bool {
        !self.detectors && !self.columns.is_empty() && self.columns.iter().all(|c| c.mask.is_none())
    }

    /// Masks one DataRow body. Writes the new message into `out` and returns
    /// how many values changed, or returns `Ok(None)` without writing when the
    /// row passes as it is (the caller forwards the original bytes). Each
    /// changed value is counted in `counts` under the rule that masked it.
    pub fn apply(
        &self,
        masking: &Masking,
        body: &[u8],
        out: &mut BytesMut,
        counts: &mut MaskCounts,
    ) -> Result<Option<usize>, MessageError> {
        // One pass, written straight into `out`; rolled back when nothing changed.
        let start = out.len();
        let mut c = Cursor::new(body, "DataRow");
        let n = c.count(4)?;
        let at = super::messages::begin(out, super::messages::backend::DATA_ROW);
        out.put_i16(n as i16);
        let mut changed = 0;
        for i in 0..n {
            let len = c.i32()?;
            if len < -1 {
                out.truncate(start);
                return Err(MessageError {
                    message: "DataRow",
                    problem: "negative value length",
                });
            }
            if len == -1 {
                out.put_i32(-1);
                continue;
            }
            let value = match c.take(len as usize) {
                Ok(v) => v,
                Err(e) => {
                    out.truncate(start);
                    return Err(e);
                }
            };
            let (rewrite, by) = match self.columns.get(i) {
                // A row wider than its description: mask it all rather than guess.
                None => (Rewrite::Null, None),
                Some(rule) => (
                    self.value(masking, rule, value),
                    rule.mask.or(masking.detector_rule()),
                ),
            };
            match rewrite {
                Rewrite::Keep => data_row::put_value(out, Some(value)),
                Rewrite::Null => {
                    changed += 1;
                    counts.add(by);
                    out.put_i32(-1);
                }
                Rewrite::Replace(bytes) => {
                    changed += 1;
                    counts.add(by);
                    data_row::put_value(out, Some(&bytes));
                }
            }
        }
        if changed == 0 {
            out.truncate(start);
            return Ok(None);
        }
        super::messages::finish(out, at);
        Ok(Some(changed))
    }

    fn value(&self, masking: &Masking, rule: &ColumnRule, value: &[u8]) -> Rewrite {
        let binary = rule.format == 1;
        if let Some(masker) = rule.mask {
            if !masks_as_text(rule.type_oid, binary) {
                return Rewrite::Null;
            }
            if !is_json(rule.type_oid)
                && let Some(constant) = masking.constant_mask(masker)
            {
                // redact and fixed do not depend on the value: no work per row.
                return Rewrite::Replace(constant);
            }
            let text = if binary && rule.type_oid == oid::JSONB {
                value.get(1..).unwrap_or_default()
            } else {
                value
            };
            let masked = masking.mask(masker, &String::from_utf8_lossy(text));
            let masked = if is_json(rule.type_oid) {
                serde_json::Value::String(masked).to_string()
            } else {
                masked
            };
            return Rewrite::Replace(
                with_jsonb_version(binary, rule.type_oid, masked.into_bytes()).into(),
            );
        }
        if !self.detectors {
            return Rewrite::Keep;
        }
        if !binary || is_text_like(rule.type_oid) {
            let text = if binary && rule.type_oid == oid::JSONB {
                value.get(1..).unwrap_or_default()
            } else {
                value
            };
            let Ok(text) = std::str::from_utf8(text) else {
                return Rewrite::Keep;
            };
            return match masking.detect(text) {
                // A detector's mark in a number or a date would not parse.
                Some(_) if !masks_as_text(rule.type_oid, binary) => Rewrite::Null,
                Some(masked) => Rewrite::Replace(
                    with_jsonb_version(binary, rule.type_oid, masked.into_bytes()).into(),
                ),
                None => Rewrite::Keep,
            };
        }
        if rule.type_oid == oid::INT8 {
            if let Ok(bytes) = <[u8; 8]>::try_from(value)
                && masking
                    .detect(&i64::from_be_bytes(bytes).to_string())
                    .is_some()
            {
                return Rewrite::Null;
            }
            return Rewrite::Keep;
        }
        if rule.type_oid == oid::NUMERIC {
            // Card numbers are stored as numeric too: check the decimal text.
            return match numeric_text(value) {
                Some(text) if masking.detect(&text).is_some() => Rewrite::Null,
                Some(_) => Rewrite::Keep,
                None => Rewrite::Null,
            };
        }
        if is_opaque_scalar(rule.type_oid) {
            return Rewrite::Keep;
        }
        if let Some(elem) = text_array_element(rule.type_oid) {
            return match mask_binary_array(masking, value, elem) {
                Ok(Some(bytes)) => Rewrite::Replace(bytes.into()),
                Ok(None) => Rewrite::Keep,
                Err(()) => Rewrite::Null,
            };
        }
        // Composite, range, unknown: cannot be read here, so it is not passed unseen.
        Rewrite::Null
    }
}

/// The decimal text of a binary `numeric` (digits only, no exponent);
/// `None` when malformed.
fn numeric_text(value: &[u8]) -> Option<String> {
    let word = |i: usize| -> Option<i16> {
        value
            .get(i * 2..i * 2 + 2)
            .map(|b| i16::from_be_bytes([b[0], b[1]]))
    };
    let ndigits = usize::try_from(word(0)?).ok()?;
    let weight = word(1)?;
    let sign = word(2)? as u16;
    if sign & 0xC000 == 0xC000 {
        return Some("NaN".into());
    }
    let digits: Vec<i16> = (0..ndigits).map(|i| word(4 + i)).collect::<Option<_>>()?;
    let mut text = String::new();
    if sign == 0x4000 {
        text.push('-');
    }
    if weight < 0 {
        text.push('0');
    } else {
        for g in 0..=weight as usize {
            let d = digits.get(g).copied().unwrap_or(0);
            if g == 0 {
                text.push_str(&d.to_string());
            } else {
                text.push_str(&format!("{d:04}"));
            }
        }
    }
    let frac_start = (weight + 1).max(0) as usize;
    if digits.len() > frac_start || weight < -1 {
        text.push('.');
        for _ in 0..(-(weight + 1)).max(0) {
            text.push_str("0000");
        }
        for d in digits.iter().skip(frac_start) {
            text.push_str(&format!("{d:04}"));
        }
    }
    Some(text)
}

fn with_jsonb_version(binary: bool, type_oid: u32, mut bytes: Vec<u8>) -> Vec<u8> {
    if binary && type_oid == oid::JSONB {
        bytes.insert(0, 1);
    }
    bytes
}

fn text_array_element(type_oid: u32) -> Option<u32> {
    match type_oid {
        oid::TEXT_ARRAY => Some(oid::TEXT),
        oid::VARCHAR_ARRAY => Some(oid::VARCHAR),
        oid::BPCHAR_ARRAY => Some(oid::BPCHAR),
        oid::NAME_ARRAY => Some(oid::NAME),
        oid::JSON_ARRAY => Some(oid::JSON),
        oid::JSONB_ARRAY => Some(oid::JSONB),
        _ => None,
    }
}

/// Runs detectors over the elements of a binary array of a text-like type.
/// `Ok(None)` when nothing was found; `Err` when the value is malformed.
fn mask_binary_array(masking: &Masking, value: &[u8], elem: u32) -> Result<Option<Vec<u8>>, ()> {
    let rd = |at: usize| -> Result<i32, ()> {
        value
            .get(at..at + 4)
            .map(|b| i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
            .ok_or(())
    };
    let ndim = rd(0)?;
    if !(0..=6).contains(&ndim) {
        return Err(());
    }
    let header = 12 + 8 * ndim as usize;
    if value.len() < header {
        return Err(());
    }
    let mut out = value[..header].to_vec();
    let mut pos = header;
    let mut changed = false;
    while pos < value.len() {
        let len = rd(pos)?;
        pos += 4;
        if len < 0 {
            out.extend_from_slice(&len.to_be_bytes());
            continue;
        }
        let end = pos
            .checked_add(len as usize)
            .filter(|e| *e <= value.len())
            .ok_or(())?;
        let item = &value[pos..end];
        pos = end;
        let text = if elem == oid::JSONB {
            item.get(1..).ok_or(())?
        } else {
            item
        };
        let masked = std::str::from_utf8(text)
            .ok()
            .and_then(|t| masking.detect(t));
        match masked {
            Some(m) => {
                changed = true;
                let bytes = with_jsonb_version(true, elem, m.into_bytes());
                out.extend_from_slice(&(bytes.len() as i32).to_be_bytes());
                out.extend_from_slice(&bytes);
            }
            None => {
                out.extend_from_slice(&len.to_be_bytes());
                out.extend_from_slice(item);
            }
        }
    }
    Ok(changed.then_some(out))
}

/// How COPY TO STDOUT rows (text format) are masked: per column a masker rule.
#[derive(Debug, Clone)]
pub struct CopyMask {
    /// Masker rule per column (in COPY column order).
    pub columns: Vec<Option<usize>>,
    /// Type OID per column where known (`COPY table`; empty for
    /// `COPY (query)`): a masked value of a non-text type is written as
    /// `\N`, as rows send NULL, so the output stays valid for its type.
    pub types: Vec<Option<u32>>,
    /// Whether detectors run on every field.
    pub detectors: bool,
}

impl CopyMask {
    /// Masks one CopyData payload of a text-format COPY: lines of
    /// tab-separated fields, `\N` for NULL. Returns `None` when unchanged.
    /// Each changed value is counted in `counts` under the rule that masked it.
    pub fn apply_text(
        &self,
        masking: &Masking,
        data: &[u8],
        out: &mut BytesMut,
        counts: &mut MaskCounts,
    ) -> Option<usize> {
        let text = String::from_utf8_lossy(data);
        let mut changed = 0;
        let mut result = String::with_capacity(text.len());
        for line in text.split_inclusive('\n') {
            let (body, nl) = match line.strip_suffix('\n') {
                Some(b) => (b, "\n"),
                None => (line, ""),
            };
            for (i, field) in body.split('\t').enumerate() {
                if i > 0 {
                    result.push('\t');
                }
                if field == "\\N" {
                    result.push_str(field);
                    continue;
                }
                let (masked, by) = match self.columns.get(i).copied().flatten() {
                    Some(rule) => (Some(masking.mask(rule, &unescape_copy(field))), Some(rule)),
                    // Extra fields beyond the known columns are masked rather than guessed.
                    None if i >= self.columns.len() => {
                        (Some(masking.mask(0, &unescape_copy(field))), Some(0))
                    }
                    None if self.detectors => (
                        masking.detect(&unescape_copy(field)),
                        masking.detector_rule(),
                    ),
                    None => (None, None),
                };
                match masked {
                    Some(m) => {
                        changed += 1;
                        counts.add(by);
                        match self.types.get(i).copied().flatten() {
                            Some(t) if !masks_as_text(t, false) => result.push_str("\\N"),
                            _ => result.push_str(&escape_copy(&m)),
                        }
                    }
                    None => result.push_str(field),
                }
            }
            result.push_str(nl);
        }
        if changed == 0 {
            return None;
        }
        let at = super::messages::begin(out, super::messages::backend::COPY_DATA);
        out.put_slice(result.as_bytes());
        super::messages::finish(out, at);
        Some(changed)
    }
}

fn unescape_copy(field: &str) -> String {
    let mut out = String::with_capacity(field.len());
    let mut chars = field.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('t') => out.push('\t'),
            Some('n') => out.push('\n'),
            Some('r') => out.push('\r'),
            Some('\\') => out.push('\\'),
            Some(other) => {
                out.push('\\');
                out.push(other);
            }
            None => out.push('\\'),
        }
    }
    out
}

fn escape_copy(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('\t', "\\t")
        .replace('\n', "\\n")
        .replace('\r', "\\r")
}

#[cfg(test)]
mod tests {
    use super::{masks_as_text, numeric_text, oid};

    #[test]
    fn masked_values_keep_to_what_their_type_can_read() {
        // Text-like types take the masked text in both formats.
        for t in [oid::TEXT, oid::VARCHAR, oid::BPCHAR, oid::JSON, oid::JSONB] {
            assert!(masks_as_text(t, false) && masks_as_text(t, true), "{t}");
        }
        // Built-in numbers, dates and arrays get NULL, in text format too.
        for t in [
            oid::INT4,
            oid::INT8,
            oid::NUMERIC,
            oid::DATE,
            oid::TIMESTAMPTZ,
            oid::TEXT_ARRAY,
        ] {
            assert!(!masks_as_text(t, false) && !masks_as_text(t, true), "{t}");
        }
        // A user-defined type (a domain, an enum, citext) reads as a string
        // in text format; its binary form is unknown.
        assert!(masks_as_text(16_500, false));
        assert!(!masks_as_text(16_500, true));
    }

    fn numeric(weight: i16, sign: u16, digits: &[i16]) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&(digits.len() as i16).to_be_bytes());
        v.extend_from_slice(&weight.to_be_bytes());
        v.extend_from_slice(&sign.to_be_bytes());
        v.extend_from_slice(&0i16.to_be_bytes());
        for d in digits {
            v.extend_from_slice(&d.to_be_bytes());
        }
        v
    }

    #[test]
    fn numeric_binary_to_text() {
        // 4111111111111111 = 4111 1111 1111 1111 (weight 3)
        assert_eq!(
            numeric_text(&numeric(3, 0, &[4111, 1111, 1111, 1111])).unwrap(),
            "4111111111111111"
        );
        assert_eq!(numeric_text(&numeric(1, 0, &[12])).unwrap(), "120000");
        assert_eq!(
            numeric_text(&numeric(0, 0x4000, &[7, 5000])).unwrap(),
            "-7.5000"
        );
        assert_eq!(numeric_text(&numeric(-2, 0, &[5])).unwrap(), "0.00000005");
        assert!(numeric_text(&[0, 5, 0]).is_none());
    }
}
