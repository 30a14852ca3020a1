//! A COM_QUERY's answer, relayed from the server to the client: OK and ERR
//! packets, result sets (column definitions, text rows masked by column and
//! by detector, `maxRows`), one per statement of a multi-statement string
//! (`SERVER_MORE_RESULTS_EXISTS`). The server always speaks with session
//! tracking and OK-terminated result sets to the sidecar; the client gets
//! the format it asked for (EOF packets, OK packets without session state).

use mysql_common::constants::{CapabilityFlags, ColumnType};
use mysql_common::io::ParseBuf;
use mysql_common::packets::Column;
use mysql_common::proto::MyDeserialize;
use sluice_policy::engine::SqlDecision;
use sluice_policy::mask_plan::{
    ColumnMask, ColumnMatcher, ColumnOrigin, OutputColumn, Preview, PreviewItem,
};

use super::gate::Settings;
use super::packet::{
    self, PacketError, lenenc_bytes, lenenc_int, put_lenenc_bytes, put_lenenc_int,
};
use crate::masking::{MaskCounts, Masking};

/// `SERVER_MORE_RESULTS_EXISTS`.
pub const MORE_RESULTS: u16 = 0x0008;
/// `SERVER_SESSION_STATE_CHANGED`.
const STATE_CHANGED: u16 = 0x4000;
/// Session state entry: a system variable.
const TRACK_SYSTEM_VARIABLES: u8 = 0;

/// An OK packet (or the OK that ends a result set), as the server sent it
/// with session tracking on.
#[derive(Debug, Default)]
pub struct OkPacket {
    /// Affected rows.
    pub affected: u64,
    last_insert_id: u64,
    /// Status flags.
    pub status: u16,
    warnings: u16,
    info: Vec<u8>,
    state: Vec<u8>,
}

impl OkPacket {
    /// An OK packet with these status flags and nothing else.
    pub fn with_status(status: u16) -> OkPacket {
        OkPacket {
            status,
            ..Default::default()
        }
    }

    /// Whether it reports session state changes (system variables among
    /// them).
    pub fn reports_state(&self) -> bool {
        !self.state.is_empty()
    }

    /// Parses an OK packet of a session with CLIENT_SESSION_TRACK.
    pub fn parse(payload: &[u8]) -> Result<OkPacket, PacketError> {
        let bad = || PacketError::Malformed("OK packet".into());
        let mut pos = 1;
        let affected = lenenc_int(payload, &mut pos)?.ok_or_else(bad)?;
        let last_insert_id = lenenc_int(payload, &mut pos)?.ok_or_else(bad)?;
        let fixed = payload.get(pos..pos + 4).ok_or_else(bad)?;
        let status = u16::from_le_bytes([fixed[0], fixed[1]]);
        let warnings = u16::from_le_bytes([fixed[2], fixed[3]]);
        pos += 4;
        let mut ok = OkPacket {
            affected,
            last_insert_id,
            status,
            warnings,
            ..Default::default()
        };
        if pos < payload.len() {
            ok.info = lenenc_bytes(payload, &mut pos)?
                .unwrap_or_default()
                .to_vec();
        }
        if status & STATE_CHANGED != 0 && pos < payload.len() {
            ok.state = lenenc_bytes(payload, &mut pos)?
                .unwrap_or_default()
                .to_vec();
        }
        Ok(ok)
    }

    /// The system variables the server reports changed: `(name, value)`.
    pub fn changed_variables(&self) -> Result<Vec<(String, String)>, PacketError> {
        let mut out = Vec::new();
        let mut pos = 0;
        let s = &self.state;
        while pos < s.len() {
            let kind = s[pos];
            pos += 1;
            let data = lenenc_bytes(s, &mut pos)?.unwrap_or_default();
            if kind != TRACK_SYSTEM_VARIABLES {
                continue;
            }
            let mut at = 0;
            while at < data.len() {
                let name = lenenc_bytes(data, &mut at)?.unwrap_or_default();
                let value = lenenc_bytes(data, &mut at)?.unwrap_or_default();
                out.push((
                    String::from_utf8_lossy(name).into_owned(),
                    String::from_utf8_lossy(value).into_owned(),
                ));
            }
        }
        Ok(out)
    }

    /// The packet in the client's format: `header` 0x00 (OK) or 0xFE (the OK
    /// ending a result set); without session state when the client did not
    /// ask for session tracking.
    pub fn encode(&self, header: u8, client: CapabilityFlags) -> Vec<u8> {
        let mut p = vec![header];
        put_lenenc_int(&mut p, self.affected);
        put_lenenc_int(&mut p, self.last_insert_id);
        if client.contains(CapabilityFlags::CLIENT_SESSION_TRACK) {
            p.extend_from_slice(&self.status.to_le_bytes());
            p.extend_from_slice(&self.warnings.to_le_bytes());
            if !self.info.is_empty() || self.status & STATE_CHANGED != 0 {
                put_lenenc_bytes(&mut p, &self.info);
            }
            if self.status & STATE_CHANGED != 0 {
                put_lenenc_bytes(&mut p, &self.state);
            }
        } else {
            p.extend_from_slice(&(self.status & !STATE_CHANGED).to_le_bytes());
            p.extend_from_slice(&self.warnings.to_le_bytes());
            p.extend_from_slice(&self.info);
        }
        p
    }

    /// The EOF packet of a client without CLIENT_DEPRECATE_EOF.
    pub fn eof(&self) -> Vec<u8> {
        let mut p = vec![0xFE];
        p.extend_from_slice(&self.warnings.to_le_bytes());
        p.extend_from_slice(&(self.status & !STATE_CHANGED).to_le_bytes());
        p
    }
}

/// Takes the variables an OK packet reports into `settings`.
pub fn track(ok: &OkPacket, settings: &mut Settings) -> Result<(), PacketError> {
    for (name, value) in ok.changed_variables()? {
        settings.set(&name, &value);
    }
    Ok(())
}

/// How one column of a result is masked.
#[derive(Debug, Clone)]
pub struct ColumnPlan {
    /// The masking rule, when masked.
    pub rule: Option<usize>,
    /// Whether the column's values are text a masked string can replace
    /// (otherwise a masked value becomes NULL, which every type can hold).
    pub text: bool,
}

/// Whether values of `column` can be replaced by masked text and stay
/// valid for its type: character and binary strings; not numbers, dates,
/// enums, sets, JSON or geometry (they get NULL).
pub fn textual(column: &Column) -> bool {
    use ColumnType::*;
    matches!(
        column.column_type(),
        MYSQL_TYPE_VARCHAR
            | MYSQL_TYPE_VAR_STRING
            | MYSQL_TYPE_STRING
            | MYSQL_TYPE_TINY_BLOB
            | MYSQL_TYPE_MEDIUM_BLOB
            | MYSQL_TYPE_LONG_BLOB
            | MYSQL_TYPE_BLOB
    ) && !column.flags().intersects(
        mysql_common::constants::ColumnFlags::ENUM_FLAG
            | mysql_common::constants::ColumnFlags::SET_FLAG,
    )
}

/// Parses a column definition packet.
pub fn column(payload: &[u8]) -> Result<Column, PacketError> {
    Column::deserialize((), &mut ParseBuf(payload))
        .map_err(|e| PacketError::Malformed(format!("column definition: {e}")))
}

/// The masks of a result's columns: the engine's plan for `decided`'s
/// statement `index` (the last one for the extra results of a `CALL`) on
/// the columns as the server describes them (origin table and column),
/// under `extended` (the rules' matcher with the stored functions the
/// statement calls) when given.
/// A text Sluice could not parse, allowed by `onParseError`, has every
/// column masked when any column rule exists.
pub fn plan(
    masking: &Masking,
    decided: &SqlDecision,
    index: usize,
    columns: &[Column],
    warnings: bool,
    extended: Option<&ColumnMatcher>,
) -> Vec<ColumnPlan> {
    let text: Vec<bool> = columns.iter().map(textual).collect();
    let mut rules: Vec<Option<usize>> = vec![None; columns.len()];
    let set = &masking.set;
    let matcher = extended.unwrap_or_else(|| set.column_matcher());
    if masking.has_column_rules() {
        let stmt = decided
            .statements
            .get(index)
            .or_else(|| decided.statements.last())
            .map(|(s, _)| s);
        match stmt {
            Some(stmt) => {
                let output: Vec<OutputColumn> = columns
                    .iter()
                    .map(|c| OutputColumn {
                        name: c.name_str().into_owned(),
                        origin: (!c.org_table_ref().is_empty()).then(|| ColumnOrigin {
                            schema: (!c.schema_ref().is_empty())
                                .then(|| c.schema_str().into_owned()),
                            table: c.org_table_str().into_owned(),
                            column: c.org_name_str().into_owned(),
                        }),
                    })
                    .collect();
                let mask = set.mask_plan(stmt, &output, matcher);
                for (slot, m) in rules.iter_mut().zip(mask.columns) {
                    if let ColumnMask::Mask { rule, .. } = m {
                        *slot = Some(rule);
                    }
                }
                if explains_relations(stmt) {
                    let strongest = matcher.strongest_rule();
                    rules.iter_mut().for_each(|r| *r = r.or(strongest));
                }
            }
            None => {
                let strongest = matcher.strongest_rule();
                rules.iter_mut().for_each(|r| *r = strongest);
            }
        }
    }
    // SHOW WARNINGS / SHOW ERRORS echo values of the statements before
    // them ("Truncated incorrect DOUBLE value: '123-45-6789'"): their
    // messages are masked whenever masking applies.
    if warnings && masking.active() {
        let strongest = matcher.strongest_rule().unwrap_or(0);
        for (c, r) in columns.iter().zip(rules.iter_mut()) {
            if c.name_ref().eq_ignore_ascii_case(b"message") {
                *r = Some(strongest);
            }
        }
    }
    rules
        .into_iter()
        .zip(text)
        .map(|(rule, text)| ColumnPlan { rule, text })
        .collect()
}

/// Every column masked with the strongest rule (a result whose values may
/// come from a call the lineage analysis cannot place).
pub fn mask_all(masking: &Masking, plan: &mut [ColumnPlan]) {
    if let Some(strongest) = masking.column_matcher().strongest_rule() {
        plan.iter_mut().for_each(|p| p.rule = Some(strongest));
    }
}

/// A statement that reads a view: the server reports the view's columns
/// with the view as origin, and the lineage analysis does not see through
/// it, so every column whose origin is a view, or that has no origin, is
/// masked with the strongest rule (the view's definition is not planned
/// yet: this masks more than needed, never less).
pub fn mask_views(
    masking: &Masking,
    decided: &SqlDecision,
    columns: &[Column],
    plan: &mut [ColumnPlan],
    views: &[String],
) {
    let Some(strongest) = masking.column_matcher().strongest_rule() else {
        return;
    };
    // Base tables the text names; any other origin (a view, a derived
    // table's alias MySQL reports as origin) is not trusted.
    let tables: Vec<String> = decided
        .statements
        .iter()
        .flat_map(|(s, _)| s.tables.iter())
        .map(|t| {
            t.rsplit('.')
                .next()
                .unwrap_or(t)
                .trim_matches('`')
                .to_lowercase()
        })
        .filter(|t| !views.contains(t))
        .collect();
    for (c, p) in columns.iter().zip(plan.iter_mut()) {
        let origin = c.org_table_str().to_lowercase();
        if !tables.contains(&origin) {
            p.rule = Some(strongest);
        }
    }
}

/// Masks one text-protocol row; returns the row to send and how many values
/// were masked (`None`: the row passes untouched), each counted in `counts`
/// under the rule that masked it.
pub fn mask_row(
    row: &[u8],
    plan: &[ColumnPlan],
    masking: &Masking,
    detect: bool,
    counts: &mut MaskCounts,
) -> Result<Option<(Vec<u8>, u64)>, PacketError> {
    let mut pos = 0;
    let mut out = Vec::with_capacity(row.len());
    let mut masked = 0;
    for col in plan {
        let Some(value) = lenenc_bytes(row, &mut pos)? else {
            out.push(0xFB);
            continue;
        };
        let replacement = match col.rule {
            Some(rule) => Some(
                col.text
                    .then(|| masking.mask(rule, &String::from_utf8_lossy(value))),
            ),
            None if detect => masking
                .detect(&String::from_utf8_lossy(value))
                .map(|m| col.text.then_some(m)),
            None => None,
        };
        if replacement.is_some() {
            masked += 1;
            counts.add(col.rule.or_else(|| masking.detector_rule()));
        }
        match replacement {
            None => put_lenenc_bytes(&mut out, value),
            Some(Some(text)) => put_lenenc_bytes(&mut out, text.as_bytes()),
            Some(None) => out.push(0xFB),
        }
    }
    if pos != row.len() {
        return Err(PacketError::Malformed(
            "a row does not match its column count".into(),
        ));
    }
    Ok((masked > 0).then_some((out, masked)))
}

/// Whether statement `index` of `decided` may read a masked value: then the
/// server's error texts for it are scrubbed (they can echo values:
/// `Duplicate entry '123-45-6789' for key …`).
pub fn reads_masked(masking: &Masking, decided: &SqlDecision, index: usize) -> bool {
    if !masking.active() {
        return false;
    }
    if !masking.has_column_rules() {
        // Detectors only: the error texts go through the detectors.
        return false;
    }
    let Some((stmt, _)) = decided
        .statements
        .get(index)
        .or_else(|| decided.statements.last())
    else {
        return true;
    };
    let masked = |m: &ColumnMask| !matches!(m, ColumnMask::Clear);
    match sluice_policy::mask_plan::preview(&stmt.ast, masking.column_matcher()) {
        Preview::NoTableData => false,
        Preview::Elsewhere { mask } => masked(&mask),
        Preview::Rows(items) => {
            // Writes read values too (INSERT … VALUES into a masked column
            // echoes them in duplicate-key errors): any table that may hold
            // masked columns counts.
            items.iter().any(|i| match i {
                PreviewItem::Column { mask, .. }
                | PreviewItem::TableColumns { mask, .. }
                | PreviewItem::Unknown { mask } => masked(mask),
            }) || stmt.tables.iter().any(|t| {
                let (schema, table) = match t.rsplit_once('.') {
                    Some((s, t)) => (Some(s), t),
                    None => (None, t.as_str()),
                };
                masking
                    .column_matcher()
                    .table_may_have_masked(schema, table)
                    .is_some()
            })
        }
    }
}

/// Whether `stmt` is an EXPLAIN (or DESCRIBE) of a statement naming a
/// relation: while it plans, the server reads const tables (a row found
/// by its primary key) and constant subqueries, and writes what it read
/// into the plan (`"attached_condition": "t.q = '123-45-6789'"` in
/// `EXPLAIN FORMAT=JSON`), which has no column origins to mask by. Under
/// column rules every column of such a plan is masked.
fn explains_relations(stmt: &sluice_policy::sql::Statement) -> bool {
    matches!(stmt.ast, sqlparser::ast::Statement::Explain { .. }) && !stmt.tables.is_empty()
}

/// An ERR packet with its message scrubbed (code and SQLSTATE kept), or
/// with what the detectors find masked.
pub fn scrub_err(payload: &[u8], masking: &Masking, scrub: bool) -> Vec<u8> {
    let (code, state, message) = packet::parse_err(payload);
    if scrub {
        return packet::err_payload(
            code,
            &state,
            &format!(
                "the server's error message was scrubbed by Sluice: the statement reads masked data (error {code}, SQLSTATE {state})"
            ),
        );
    }
    match masking.detect(&message) {
        Some(masked) => packet::err_payload(code, &state, &masked),
        None => payload.to_vec(),
    }
}
