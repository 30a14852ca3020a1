//! The canonical JSON form of an event, which its hash covers.

use std::fmt::Write as _;

use super::AuditError;
use super::event::AuditEvent;
use serde::Serialize;
use serde_json::Value;

impl AuditEvent {
    /// The canonical JSON of the event without its `hash` (what the hash covers).
    pub fn canonical_json(&self) -> Result<String, AuditError> {
        let mut out = Vec::with_capacity(512);
        self.write_canonical(&mut out)?;
        String::from_utf8(out).map_err(|_| AuditError::utf8())
    }

    /// The event as one JSON line (no trailing newline): its canonical JSON
    /// with the `hash` in its sorted place.
    pub fn to_line(&self) -> Result<String, AuditError> {
        let mut canonical = Vec::with_capacity(512);
        let split = self.write_canonical(&mut canonical)?;
        let mut line = Vec::with_capacity(canonical.len() + self.hash.len() + 12);
        splice_hash(&canonical, split, &self.hash, &mut line);
        String::from_utf8(line).map_err(|_| AuditError::utf8())
    }

    /// Appends the canonical JSON of the event without its `hash` to `out`,
    /// straight from the typed fields: the keys written in sorted order here,
    /// and in the nested structs by their declaration order (which is why
    /// those declare their fields sorted by JSON name). Returns the offset in
    /// `out` where the `hash` key belongs (just before `identity`, `outcome`
    /// or, always present, `prev`).
    ///
    /// The bytes are those [`canonical_json`] makes of the event's
    /// `serde_json::Value` (what the verifier recomputes from a line);
    /// debug builds check every event against it.
    pub(super) fn write_canonical(&self, out: &mut Vec<u8>) -> Result<usize, AuditError> {
        #[cfg(debug_assertions)]
        let start = out.len();
        out.push(b'{');
        let mut first = true;
        if let Some(v) = &self.approval {
            put_value(out, &mut first, "approval", v)?;
        }
        if let Some(v) = &self.command {
            put_value(out, &mut first, "command", v)?;
        }
        if let Some(v) = &self.connection {
            put_value(out, &mut first, "connection", v)?;
        }
        if let Some(v) = &self.decision {
            put_value(out, &mut first, "decision", v)?;
        }
        if !first {
            out.push(b',');
        }
        let split = out.len();
        first = true;
        if let Some(v) = &self.identity {
            put_value(out, &mut first, "identity", v)?;
        }
        if let Some(v) = &self.outage {
            put_value(out, &mut first, "outage", v)?;
        }
        if let Some(v) = &self.outcome {
            put_value(out, &mut first, "outcome", v)?;
        }
        if let Some(v) = &self.policy {
            put_value(out, &mut first, "policy", v)?;
        }
        put_value(out, &mut first, "prev", &self.prev)?;
        put_value(out, &mut first, "seq", &self.seq)?;
        if let Some(v) = &self.session {
            put_value(out, &mut first, "session", v)?;
        }
        put_value(out, &mut first, "stream", &self.stream)?;
        put_value(out, &mut first, "time", &self.time)?;
        put_value(out, &mut first, "type", &self.kind)?;
        put_value(out, &mut first, "v", &self.v)?;
        out.push(b'}');
        #[cfg(debug_assertions)]
        self.check_canonical(&out[start..]);
        Ok(split)
    }

    /// Debug builds: the typed writer agrees with the generic canonical form.
    #[cfg(debug_assertions)]
    fn check_canonical(&self, fast: &[u8]) {
        let Ok(mut value) = serde_json::to_value(self) else {
            return;
        };
        if let Value::Object(map) = &mut value {
            map.remove("hash");
        }
        let slow = canonical_json(&value);
        assert!(
            slow.as_bytes() == fast,
            "the typed canonical JSON of an audit event differs from the generic one \
             (audit structs must declare their fields in sorted order of their JSON names, \
             and AuditEvent::write_canonical must list every top-level field):\n typed:   {}\n generic: {slow}",
            String::from_utf8_lossy(fast)
        );
    }
}

/// Debug builds: `canonical` is what the verifier recomputes from it (keys
/// sorted at every level, nothing duplicated).
#[cfg(debug_assertions)]
pub(super) fn check_generic(canonical: &[u8]) {
    let Ok(value) = serde_json::from_slice::<Value>(canonical) else {
        panic!(
            "an audit event assembled from pieces is not JSON: {}",
            String::from_utf8_lossy(canonical)
        );
    };
    let generic = canonical_json(&value);
    assert!(
        generic.as_bytes() == canonical,
        "an audit event assembled from pieces is not canonical:\n pieces:  {}\n generic: {generic}",
        String::from_utf8_lossy(canonical)
    );
}

/// Writes `,"key":value` (no comma for the first key of an object).
pub(super) fn put_value<T: Serialize + ?Sized>(
    out: &mut Vec<u8>,
    first: &mut bool,
    key: &str,
    value: &T,
) -> Result<(), AuditError> {
    if !*first {
        out.push(b',');
    }
    *first = false;
    out.push(b'"');
    out.extend_from_slice(key.as_bytes());
    out.extend_from_slice(b"\":");
    serde_json::to_writer(&mut *out, value).map_err(|source| AuditError { source })
}

/// The line of an event: its canonical JSON with `"hash":"…",` inserted at `split`.
pub(super) fn splice_hash(canonical: &[u8], split: usize, hash: &str, line: &mut Vec<u8>) {
    line.extend_from_slice(&canonical[..split]);
    line.extend_from_slice(b"\"hash\":\"");
    // A hash is 64 hex digits; anything else is escaped like any string.
    if hash.bytes().all(|b| b.is_ascii_alphanumeric()) {
        line.extend_from_slice(hash.as_bytes());
    } else {
        let mut s = String::new();
        write_string(hash, &mut s);
        line.extend_from_slice(&s.as_bytes()[1..s.len() - 1]);
    }
    line.extend_from_slice(b"\",");
    line.extend_from_slice(&canonical[split..]);
}

/// Where a [`Rendered`] field goes in an event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Slot {
    Command,
    Connection,
    Decision,
    Identity,
    Session,
}

/// The canonical JSON text of `v` (see the module documentation).
pub fn canonical_json(v: &Value) -> String {
    let mut out = String::new();
    write_canonical(v, &mut out);
    out
}

pub(super) fn write_canonical(v: &Value, out: &mut String) {
    match v {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => {
            let _ = write!(out, "{n}");
        }
        Value::String(s) => write_string(s, out),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        Value::Object(map) => {
            // Sorted here, whatever order the map keeps (serde_json's
            // `preserve_order` feature may be on in some build).
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            out.push('{');
            for (i, (k, item)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_string(k, out);
                out.push(':');
                write_canonical(item, out);
            }
            out.push('}');
        }
    }
}

fn write_string(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{08}' => out.push_str("\\b"),
            '\u{0c}' => out.push_str("\\f"),
            c if u32::from(c) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}
