//! Session recording for replay (`spec.recording`, DESIGN §7): what the
//! workload received, attached to each statement's or request's `result`
//! audit event (`outcome.recorded`), so the same chain, checkpoints and
//! `kubectl sluice audit verify` cover it.
//!
//! Never an unmasked value: the recorders are fed the bytes *after* they are
//! masked, exactly as they are written to the workload (a PostgreSQL
//! DataRow or CopyData message, an HTTP body piece); nothing upstream of
//! masking reaches them.
//!
//! Bounded: a statement records at most [`STATEMENT_ROWS`] rows and
//! [`STATEMENT_BYTES`] bytes of values (counted as written in the JSON
//! line), a session at most [`SESSION_BYTES`] in all; past a bound the
//! result says what was left out (`truncated`). The bounds keep an audit
//! line small enough for every sink (the operator's `/v1/audit` takes 8 MiB
//! per batch of up to 1,000 events).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use sluice_crds::Recording;
use sluice_policy::audit::{AuditRecorded, AuditRecordedSet};

use crate::postgres::masking::oid;
use crate::postgres::messages::bind::FormatCodes;
use crate::postgres::messages::{backend, data_row, row_description};

/// Most rows one statement's recording keeps.
pub const STATEMENT_ROWS: usize = 100;
/// Most bytes of values (or of an HTTP body) one statement's recording keeps.
pub const STATEMENT_BYTES: usize = 4 * 1024;
/// Most bytes of values one session's recording keeps, over all its statements.
pub const SESSION_BYTES: u64 = 256 * 1024;

/// What a session's recordings have spent of [`SESSION_BYTES`]; shared by
/// the clones of its [`crate::audit::SessionInfo`].
#[derive(Debug, Clone, Default)]
pub struct SessionBudget(Arc<AtomicU64>);

impl SessionBudget {
    /// Takes `n` bytes from the budget; `false` (nothing taken) when they do not fit.
    fn take(&self, n: usize) -> bool {
        let n = n as u64;
        self.0
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |spent| {
                (spent + n <= SESSION_BYTES).then_some(spent + n)
            })
            .is_ok()
    }
}

/// Why values were left out, in the order they are checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cut {
    Rows,
    Bytes,
    Session,
}

impl Cut {
    fn reason(self) -> String {
        match self {
            Cut::Rows => format!("a statement's recording keeps at most {STATEMENT_ROWS} rows"),
            Cut::Bytes => {
                format!("a statement's recording keeps at most {STATEMENT_BYTES} bytes of values")
            }
            Cut::Session => format!(
                "the session's recording budget ({} KiB of values) is spent",
                SESSION_BYTES / 1024
            ),
        }
    }
}

// === impl ResultRecorder ===

/// The columns of a prepared statement's result as the Describe of it
/// answered (names and types), for the rows of its Executes, which come
/// without a RowDescription of their own (see
/// [`ResultRecorder::execute_columns`]).
pub type StatementColumns = OnceLock<Vec<row_description::Column>>;

/// How the values of the current result set are written: each column's
/// format and type (a value is recorded as hex when it is in binary and its
/// type's binary form is not its text; see [`value_text`]).
#[derive(Debug)]
struct Layout {
    /// Result format codes: a RowDescription's, or the Bind's of the
    /// portal an Execute runs (what the server writes the values in).
    formats: FormatCodes,
    /// Column type OIDs (empty when unknown).
    types: Vec<u32>,
    /// Whether an Execute's Bind formats were taken for this result.
    bound: bool,
}

impl Default for Layout {
    fn default() -> Self {
        Layout {
            formats: FormatCodes::All(0),
            types: Vec::new(),
            bound: false,
        }
    }
}

impl Layout {
    /// Whether value `i` is written in binary, other than as its text.
    fn binary(&self, i: usize) -> bool {
        self.formats.of(i) == 1 && !self.types.get(i).copied().is_some_and(binary_is_text)
    }
}

/// One PostgreSQL result (a query string's, or an Execute's) being recorded.
#[derive(Debug, Default)]
pub struct ResultRecorder {
    sets: Vec<AuditRecordedSet>,
    /// The formats and types of the current set's columns.
    layout: Layout,
    rows: usize,
    bytes: usize,
    omitted: u64,
    cut: Option<Cut>,
    malformed: bool,
}

impl ResultRecorder {
    /// A RowDescription the workload received: a new result set with its
    /// column names.
    pub fn columns(&mut self, level: Recording, body: &[u8]) {
        if level.is_off() {
            return;
        }
        match row_description::decode(body) {
            Ok(columns) => {
                self.layout = Layout {
                    formats: FormatCodes::PerColumn(columns.iter().map(|c| c.format).collect()),
                    types: columns.iter().map(|c| c.type_oid).collect(),
                    bound: false,
                };
                self.sets.push(AuditRecordedSet {
                    columns: columns.into_iter().map(|c| c.name).collect(),
                    rows: Vec::new(),
                });
            }
            Err(_) => self.malformed = true,
        }
    }

    /// The result of an Execute of a portal bound with result `formats`
    /// (`None`: not known). Its values are in the Bind's formats, whatever
    /// a RowDescription said (a Describe of a statement says text). When
    /// the result came without a RowDescription (the client described the
    /// statement or portal earlier, as drivers do at prepare), a result set
    /// named after `described`, the answer to the Describe of its
    /// statement, with its column types. Nothing named without it (the
    /// statement was never described while the session was recorded): the
    /// rows are then recorded unnamed. Called for each of its rows; only
    /// the first call of a result does anything.
    pub fn execute_columns(
        &mut self,
        level: Recording,
        described: Option<&StatementColumns>,
        formats: Option<&FormatCodes>,
    ) {
        if level.is_off() || self.layout.bound {
            return;
        }
        self.layout.bound = true;
        if let Some(formats) = formats {
            self.layout.formats = formats.clone();
        }
        if !self.sets.is_empty() {
            // Its own RowDescription (a Describe of its portal) named it.
            return;
        }
        if let Some(columns) = described.and_then(OnceLock::get) {
            self.layout.types = columns.iter().map(|c| c.type_oid).collect();
            self.sets.push(AuditRecordedSet {
                columns: columns.iter().map(|c| c.name.clone()).collect(),
                rows: Vec::new(),
            });
        }
    }

    /// Bytes just written to the workload for one DataRow (empty when the
    /// row was withheld): its values are recorded, as the workload got them.
    pub fn data_row(&mut self, level: Recording, budget: &SessionBudget, written: &[u8]) {
        if level != Recording::Results || written.is_empty() {
            return;
        }
        let Some(body) = message_body(written, backend::DATA_ROW) else {
            self.malformed = true;
            return;
        };
        let Ok(ranges) = data_row::values(body) else {
            self.malformed = true;
            return;
        };
        let row = ranges
            .into_iter()
            .enumerate()
            .map(|(i, r)| r.map(|r| value_text(&body[r], self.layout.binary(i))))
            .collect();
        self.push(budget, row);
    }

    /// A result set of a plane that reads its own rows (MySQL): its column
    /// names, as the workload received them.
    pub fn named_set(&mut self, level: Recording, columns: impl IntoIterator<Item = String>) {
        if level.is_off() {
            return;
        }
        self.layout = Layout::default();
        self.sets.push(AuditRecordedSet {
            columns: columns.into_iter().collect(),
            rows: Vec::new(),
        });
    }

    /// A row of such a plane, just written to the workload: `decode` gives
    /// its values as text (see [`value_text`]), or `None` when the row
    /// cannot be read; it is not called once a bound cut the recording.
    pub fn decoded_row(
        &mut self,
        level: Recording,
        budget: &SessionBudget,
        decode: impl FnOnce() -> Option<Vec<Option<String>>>,
    ) {
        if level != Recording::Results {
            return;
        }
        if self.cut.is_some() {
            self.omitted += 1;
            return;
        }
        match decode() {
            Some(row) => self.push(budget, row),
            None => self.malformed = true,
        }
    }

    /// Bytes just written to the workload for one CopyData of a COPY TO
    /// STDOUT: recorded as a row of one value (the line).
    pub fn copy_data(&mut self, level: Recording, budget: &SessionBudget, written: &[u8]) {
        if level != Recording::Results || written.is_empty() {
            return;
        }
        let Some(body) = message_body(written, backend::COPY_DATA) else {
            self.malformed = true;
            return;
        };
        self.push(budget, vec![Some(value_text(body, false))]);
    }

    fn push(&mut self, budget: &SessionBudget, row: Vec<Option<String>>) {
        if self.cut.is_some() {
            self.omitted += 1;
            return;
        }
        let size: usize = row
            .iter()
            .map(|v| v.as_deref().map_or(4, json_len) + 1)
            .sum();
        let cut = if self.rows >= STATEMENT_ROWS {
            Some(Cut::Rows)
        } else if self.bytes + size > STATEMENT_BYTES {
            Some(Cut::Bytes)
        } else if !budget.take(size) {
            Some(Cut::Session)
        } else {
            None
        };
        if let Some(cut) = cut {
            self.cut = Some(cut);
            self.omitted += 1;
            return;
        }
        self.rows += 1;
        self.bytes += size;
        if self.sets.is_empty() {
            // Rows without a RowDescription (an Execute of a portal described earlier).
            self.sets.push(AuditRecordedSet::default());
        }
        if let Some(set) = self.sets.last_mut() {
            set.rows.push(row);
        }
    }

    /// The result ended: what was recorded of it (`None` when the session
    /// is not recorded), and a fresh recorder for the next.
    pub fn finish(&mut self, level: Recording) -> Option<AuditRecorded> {
        let done = std::mem::take(self);
        if level.is_off() {
            return None;
        }
        let mut why = Vec::new();
        if let Some(cut) = done.cut {
            why.push(format!(
                "{} rows not recorded: {}",
                done.omitted,
                cut.reason()
            ));
        }
        if done.malformed {
            why.push("a message could not be read for the recording".to_string());
        }
        Some(AuditRecorded {
            level,
            sets: done.sets,
            truncated: (!why.is_empty()).then(|| why.join("; ")),
            ..AuditRecorded::default()
        })
    }
}

// === impl BodyRecorder ===

/// One HTTP response body being recorded, as the workload receives it.
#[derive(Debug)]
pub struct BodyRecorder {
    level: Recording,
    status: u16,
    budget: SessionBudget,
    body: Vec<u8>,
    omitted: u64,
    cut: Option<Cut>,
}

impl BodyRecorder {
    /// A recorder for a response of `status`, or `None` when the session is not recorded.
    pub fn new(level: Recording, status: u16, budget: &SessionBudget) -> Option<Self> {
        (!level.is_off()).then(|| BodyRecorder {
            level,
            status,
            budget: budget.clone(),
            body: Vec::new(),
            omitted: 0,
            cut: None,
        })
    }

    /// Bytes just handed to the workload.
    pub fn feed(&mut self, sent: &[u8]) {
        if self.level != Recording::Results || sent.is_empty() {
            return;
        }
        if self.cut.is_some() {
            self.omitted += sent.len() as u64;
            return;
        }
        let room = STATEMENT_BYTES.saturating_sub(self.body.len());
        let mut take = sent.len().min(room);
        // JSON escaping can make a piece longer in the line than in the body.
        while take > 0
            && json_len_bytes(&sent[..take]) + json_len_bytes(&self.body) > STATEMENT_BYTES
        {
            take /= 2;
        }
        let cut = if take < sent.len() {
            Some(Cut::Bytes)
        } else {
            None
        };
        if take > 0 && !self.budget.take(json_len_bytes(&sent[..take])) {
            self.cut = Some(Cut::Session);
            self.omitted += sent.len() as u64;
            return;
        }
        self.body.extend_from_slice(&sent[..take]);
        if let Some(cut) = cut {
            self.cut = Some(cut);
            self.omitted += (sent.len() - take) as u64;
        }
    }

    /// The response ended (or was cut off): what was recorded of it.
    pub fn finish(self) -> AuditRecorded {
        let mut why = Vec::new();
        let body = if self.level == Recording::Results {
            let mut bytes = self.body;
            // A cut may fall inside a character: keep the whole ones.
            match std::str::from_utf8(&bytes) {
                Ok(_) => {}
                Err(e) if e.error_len().is_none() && self.cut.is_some() => {
                    bytes.truncate(e.valid_up_to())
                }
                Err(_) => {
                    why.push("the body is not UTF-8 text and is not recorded".to_string());
                    bytes.clear();
                }
            }
            String::from_utf8(bytes).ok().filter(|b| !b.is_empty())
        } else {
            None
        };
        if let Some(cut) = self.cut {
            let what = match cut {
                Cut::Session => cut.reason(),
                _ => format!("a response's recording keeps at most {STATEMENT_BYTES} bytes"),
            };
            why.insert(0, format!("{} bytes not recorded: {what}", self.omitted));
        }
        AuditRecorded {
            body,
            level: self.level,
            status: Some(self.status),
            truncated: (!why.is_empty()).then(|| why.join("; ")),
            ..AuditRecorded::default()
        }
    }
}

/// A recorded write's result whose changes the database did not keep
/// (`maxRowsAffected` rolled it back, or its COMMIT failed): the rows it
/// returned (RETURNING) are left out, since they never were in the
/// database and the workload never received them, and `rolledBack` says
/// why. Its columns stay.
pub fn rolled_back(recorded: &mut AuditRecorded, why: &str) {
    let rows = drop_rows(recorded);
    recorded.rolled_back = Some(if rows == 0 {
        why.to_string()
    } else {
        format!("{why}; the {rows} rows it returned are not recorded")
    });
}

/// A recorded write's result whose fate is not known (the session ended
/// while it was held): its rows are left out, and `truncated` says why.
pub fn unsettled(recorded: &mut AuditRecorded, why: &str) {
    let rows = drop_rows(recorded);
    let said = format!("{rows} rows not recorded: {why}");
    recorded.truncated = Some(match recorded.truncated.take() {
        Some(before) => format!("{said}; {before}"),
        None => said,
    });
}

/// Drops the recorded rows of every set; returns how many there were.
fn drop_rows(recorded: &mut AuditRecorded) -> usize {
    let mut rows = 0;
    for set in &mut recorded.sets {
        rows += set.rows.len();
        set.rows = Vec::new();
    }
    rows
}

/// The body of the one message of type `tag` that `bytes` holds.
fn message_body(bytes: &[u8], tag: u8) -> Option<&[u8]> {
    if bytes.len() < 5 || bytes[0] != tag {
        return None;
    }
    let len = u32::from_be_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]) as usize;
    (len + 1 == bytes.len()).then(|| &bytes[5..])
}

/// A value as text: itself when it is text, else `\x` and hex. A value is
/// binary when its format is (a RowDescription's, or the Bind's of an
/// Execute: `binary`; a type whose binary form is its text is not, see
/// [`binary_is_text`]), when it is not UTF-8, or when it holds a NUL byte:
/// no text-format value does (PostgreSQL's text types cannot hold one).
pub fn value_text(v: &[u8], binary: bool) -> String {
    match std::str::from_utf8(v) {
        Ok(s) if !binary && !v.contains(&0) => s.to_string(),
        _ => {
            let mut s = String::with_capacity(2 + v.len() * 2);
            s.push_str("\\x");
            for b in v {
                s.push_str(&format!("{b:02x}"));
            }
            s
        }
    }
}

/// Types whose binary form is their text (in the client's encoding), so a
/// value of them in binary is recorded as text, as it would be in text
/// format. Every other type's binary value is recorded as hex: an `int4`
/// in binary is four bytes, whatever characters they happen to spell.
fn binary_is_text(type_oid: u32) -> bool {
    matches!(
        type_oid,
        oid::TEXT | oid::VARCHAR | oid::BPCHAR | oid::NAME | oid::UNKNOWN | oid::JSON
    )
}

/// The length of `s` as a JSON string's content (escapes included).
fn json_len(s: &str) -> usize {
    s.chars()
        .map(|c| match c {
            '"' | '\\' | '\n' | '\r' | '\t' | '\u{8}' | '\u{c}' => 2,
            c if (c as u32) < 0x20 => 6,
            c => c.len_utf8(),
        })
        .sum()
}

/// [`json_len`] of bytes read as lossy UTF-8 (each bad byte a 3-byte U+FFFD at most).
fn json_len_bytes(b: &[u8]) -> usize {
    json_len(&String::from_utf8_lossy(b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;

    fn data_row_message(values: &[Option<&[u8]>]) -> Vec<u8> {
        let mut body = BytesMut::new();
        body.extend_from_slice(&(values.len() as i16).to_be_bytes());
        for v in values {
            data_row::put_value(&mut body, *v);
        }
        let mut m = vec![backend::DATA_ROW];
        m.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
        m.extend_from_slice(&body);
        m
    }

    #[test]
    fn a_statement_keeps_at_most_its_rows_and_says_so() {
        let budget = SessionBudget::default();
        let mut r = ResultRecorder::default();
        let row = data_row_message(&[Some(b"1"), None]);
        for _ in 0..STATEMENT_ROWS + 5 {
            r.data_row(Recording::Results, &budget, &row);
        }
        let rec = r.finish(Recording::Results).expect("recorded");
        assert_eq!(rec.sets[0].rows.len(), STATEMENT_ROWS);
        assert_eq!(rec.sets[0].rows[0], vec![Some("1".to_string()), None]);
        let why = rec.truncated.expect("truncation is said");
        assert!(why.starts_with("5 rows not recorded"), "{why}");
    }

    #[test]
    fn a_session_budget_is_shared_and_spent() {
        let budget = SessionBudget::default();
        let big = vec![b'a'; STATEMENT_BYTES / 2];
        let row = data_row_message(&[Some(&big)]);
        let mut spent = 0;
        let mut cut = false;
        for _ in 0..(SESSION_BYTES as usize / STATEMENT_BYTES) * 2 + 4 {
            let mut r = ResultRecorder::default();
            r.data_row(Recording::Results, &budget, &row);
            let rec = r.finish(Recording::Results).expect("recorded");
            if let Some(why) = rec.truncated {
                assert!(why.contains("budget"), "{why}");
                cut = true;
            } else {
                spent += big.len();
            }
        }
        assert!(cut, "the session budget never ran out");
        assert!(spent as u64 <= SESSION_BYTES);
    }

    #[test]
    fn statements_level_records_columns_and_no_values() {
        let budget = SessionBudget::default();
        let mut r = ResultRecorder::default();
        r.data_row(
            Recording::Statements,
            &budget,
            &data_row_message(&[Some(b"x")]),
        );
        let rec = r.finish(Recording::Statements).expect("recorded");
        assert!(rec.sets.iter().all(|s| s.rows.is_empty()));
        assert!(r.finish(Recording::Off).is_none());
    }

    #[test]
    fn an_execute_without_a_row_description_is_named_after_its_statement() {
        let budget = SessionBudget::default();
        let names = described(&[("id", oid::TEXT), ("ssn", oid::TEXT)]);
        let row = data_row_message(&[Some(b"1"), Some(b"[redacted]")]);
        let mut r = ResultRecorder::default();
        for _ in 0..2 {
            r.execute_columns(Recording::Results, Some(&names), None);
            r.data_row(Recording::Results, &budget, &row);
        }
        let rec = r.finish(Recording::Results).expect("recorded");
        assert_eq!(rec.sets.len(), 1);
        assert_eq!(rec.sets[0].columns, ["id", "ssn"]);
        assert_eq!(rec.sets[0].rows.len(), 2);
        // A RowDescription of its own wins; unknown names leave it unnamed.
        r.columns(Recording::Results, &row_description_body(&["own"]));
        r.execute_columns(Recording::Results, Some(&names), None);
        r.execute_columns(Recording::Results, None, None);
        let rec = r.finish(Recording::Results).expect("recorded");
        assert_eq!(rec.sets.len(), 1);
        assert_eq!(rec.sets[0].columns, ["own"]);
        r.execute_columns(Recording::Results, Some(&OnceLock::new()), None);
        r.data_row(Recording::Results, &budget, &row);
        let rec = r.finish(Recording::Results).expect("recorded");
        assert!(rec.sets[0].columns.is_empty());
    }

    #[test]
    fn a_rolled_back_result_keeps_its_columns_and_drops_its_rows() {
        let budget = SessionBudget::default();
        let mut r = ResultRecorder::default();
        r.columns(Recording::Results, &row_description_body(&["id", "v"]));
        r.data_row(
            Recording::Results,
            &budget,
            &data_row_message(&[Some(b"1"), Some(b"new")]),
        );
        let mut rec = r.finish(Recording::Results).expect("recorded");
        rolled_back(&mut rec, "Sluice rolled the write back");
        assert_eq!(rec.sets[0].columns, ["id", "v"]);
        assert!(rec.sets[0].rows.is_empty());
        assert_eq!(
            rec.rolled_back.as_deref(),
            Some("Sluice rolled the write back; the 1 rows it returned are not recorded")
        );
    }

    /// A statement's columns as a Describe of it answers (text format).
    fn described(columns: &[(&str, u32)]) -> StatementColumns {
        OnceLock::from(
            columns
                .iter()
                .map(|(name, type_oid)| row_description::Column {
                    name: name.to_string(),
                    table_oid: 0,
                    attnum: 0,
                    type_oid: *type_oid,
                    format: 0,
                })
                .collect::<Vec<_>>(),
        )
    }

    fn row_description_body(names: &[&str]) -> Vec<u8> {
        row_description_formats(names, &vec![0; names.len()])
    }

    fn row_description_formats(names: &[&str], formats: &[i16]) -> Vec<u8> {
        let mut body = (names.len() as i16).to_be_bytes().to_vec();
        for (n, format) in names.iter().zip(formats) {
            body.extend_from_slice(n.as_bytes());
            body.push(0);
            body.extend_from_slice(&[0; 16]);
            body.extend_from_slice(&format.to_be_bytes());
        }
        body
    }

    /// Binary values are recorded as `\x` hex also when their bytes are
    /// valid UTF-8: when the RowDescription says binary, and when a value
    /// holds a NUL byte, which no text-format value does. Text stays text.
    #[test]
    fn binary_values_that_are_utf8_are_recorded_as_hex() {
        let budget = SessionBudget::default();
        let mut r = ResultRecorder::default();
        r.columns(
            Recording::Results,
            &row_description_formats(&["n", "code", "name"], &[1, 1, 0]),
        );
        // int4 1, and int4 0x41424344 (the bytes of "ABCD"), in binary.
        r.data_row(
            Recording::Results,
            &budget,
            &data_row_message(&[Some(&[0, 0, 0, 1]), Some(b"ABCD"), Some(b"ABCD")]),
        );
        let rec = r.finish(Recording::Results).expect("recorded");
        assert_eq!(
            rec.sets[0].rows[0],
            vec![
                Some("\\x00000001".to_string()),
                Some("\\x41424344".to_string()),
                Some("ABCD".to_string())
            ]
        );
        // Formats not known (an Execute whose Bind was not seen): a NUL
        // still says binary.
        let names = described(&[("n", oid::INT4), ("name", oid::TEXT)]);
        r.execute_columns(Recording::Results, Some(&names), None);
        r.data_row(
            Recording::Results,
            &budget,
            &data_row_message(&[Some(&[0, 0, 0, 7]), Some(b"Ada")]),
        );
        let rec = r.finish(Recording::Results).expect("recorded");
        assert_eq!(
            rec.sets[0].rows[0],
            vec![Some("\\x00000007".to_string()), Some("Ada".to_string())]
        );
    }

    /// An Execute's values are in its Bind's result formats (none: text;
    /// one: every column; else one per column), not the text formats of
    /// the Describe of its statement: a binary `int4` whose four bytes
    /// spell "ABCD" is recorded as hex, a binary `text` as its text.
    #[test]
    fn an_executes_values_are_recorded_in_its_binds_formats() {
        let budget = SessionBudget::default();
        let names = described(&[("code", oid::INT4), ("name", oid::TEXT)]);
        let row = data_row_message(&[Some(b"ABCD"), Some(b"Ada")]);
        let text = vec![Some("ABCD".to_string()), Some("Ada".to_string())];
        let cases = [
            (FormatCodes::All(0), text.clone()),
            (
                FormatCodes::All(1),
                vec![Some("\\x41424344".to_string()), Some("Ada".to_string())],
            ),
            (
                FormatCodes::PerColumn(Box::new([1, 1])),
                vec![Some("\\x41424344".to_string()), Some("Ada".to_string())],
            ),
            (FormatCodes::PerColumn(Box::new([0, 1])), text.clone()),
        ];
        let mut r = ResultRecorder::default();
        for (formats, want) in cases {
            // Called for each row: the first call of the result counts.
            for _ in 0..2 {
                r.execute_columns(Recording::Results, Some(&names), Some(&formats));
                r.data_row(Recording::Results, &budget, &row);
            }
            let rec = r.finish(Recording::Results).expect("recorded");
            assert_eq!(rec.sets.len(), 1, "{formats:?}");
            assert_eq!(rec.sets[0].columns, ["code", "name"]);
            assert_eq!(rec.sets[0].rows, vec![want.clone(), want], "{formats:?}");
        }
        // Unnamed (never described): the formats still apply, and an
        // unknown type's binary value is hex.
        r.execute_columns(Recording::Results, None, Some(&FormatCodes::All(1)));
        r.data_row(Recording::Results, &budget, &row);
        let rec = r.finish(Recording::Results).expect("recorded");
        assert_eq!(
            rec.sets[0].rows[0],
            vec![
                Some("\\x41424344".to_string()),
                Some("\\x416461".to_string())
            ]
        );
        // A Describe of its portal (the formats in its RowDescription)
        // names it; the Bind's formats agree with it.
        r.columns(
            Recording::Results,
            &row_description_formats(&["c", "n"], &[1, 0]),
        );
        r.execute_columns(
            Recording::Results,
            Some(&names),
            Some(&FormatCodes::PerColumn(Box::new([1, 0]))),
        );
        r.data_row(Recording::Results, &budget, &row);
        let rec = r.finish(Recording::Results).expect("recorded");
        assert_eq!(rec.sets[0].columns, ["c", "n"]);
        assert_eq!(
            rec.sets[0].rows[0],
            vec![Some("\\x41424344".to_string()), Some("Ada".to_string())]
        );
    }

    #[test]
    fn a_body_is_cut_at_a_character_and_the_cut_is_said() {
        let budget = SessionBudget::default();
        let mut r = BodyRecorder::new(Recording::Results, 200, &budget).expect("on");
        let text = "é".repeat(STATEMENT_BYTES);
        r.feed(text.as_bytes());
        let rec = r.finish();
        let body = rec.body.expect("a body");
        assert!(body.len() <= STATEMENT_BYTES && body.chars().all(|c| c == 'é'));
        assert!(rec.truncated.expect("said").contains("bytes not recorded"));
    }
}
