//! ErrorResponse and NoticeResponse: fields tagged by a byte (S severity,
//! C code, M message, D detail, H hint, W where, …).
//!
//! The sidecar writes its own errors (denials, protocol errors) and scrubs the
//! server's when masking applies, because PostgreSQL echoes values in them
//! (`Key (ssn)=(123-45-6789) already exists.`, `invalid input syntax for type
//! integer: "123-45-6789"`, `Failing row contains (…)`, RAISE messages).

use bytes::{BufMut, BytesMut};

use super::{Cursor, MessageError, backend, begin, finish, put_cstr};

/// SQLSTATE of a refused statement: insufficient_privilege.
pub const INSUFFICIENT_PRIVILEGE: &str = "42501";
/// SQLSTATE of a refused connection: invalid_authorization_specification.
pub const INVALID_AUTHORIZATION: &str = "28000";
/// SQLSTATE of a protocol violation.
pub const PROTOCOL_VIOLATION: &str = "08P01";
/// SQLSTATE when the upstream cannot be reached.
pub const CONNECTION_FAILURE: &str = "08006";
/// SQLSTATE of an internal error (e.g. the audit sink failed).
pub const INTERNAL_ERROR: &str = "XX000";
/// SQLSTATE of a feature that is not supported.
pub const FEATURE_NOT_SUPPORTED: &str = "0A000";
/// SQLSTATE for a result above its row limit: program_limit_exceeded.
pub const PROGRAM_LIMIT_EXCEEDED: &str = "54000";

/// One field of an ErrorResponse or NoticeResponse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    /// The field type byte.
    pub code: u8,
    /// The field text.
    pub value: String,
}

/// Decodes the fields of an ErrorResponse or NoticeResponse body.
pub fn decode(body: &[u8]) -> Result<Vec<Field>, MessageError> {
    let mut c = Cursor::new(body, "ErrorResponse");
    let mut fields = Vec::new();
    loop {
        let code = c.u8()?;
        if code == 0 {
            return Ok(fields);
        }
        let value = String::from_utf8_lossy(c.cstr_bytes()?).into_owned();
        fields.push(Field { code, value });
    }
}

/// The value of a field, if present.
pub fn field(fields: &[Field], code: u8) -> Option<&str> {
    fields
        .iter()
        .find(|f| f.code == code)
        .map(|f| f.value.as_str())
}

/// Writes an ErrorResponse (`tag` = `E`) or NoticeResponse (`N`) from fields.
pub fn encode_fields(out: &mut BytesMut, tag: u8, fields: &[Field]) {
    let at = begin(out, tag);
    for f in fields {
        out.put_u8(f.code);
        put_cstr(out, &f.value);
    }
    out.put_u8(0);
    finish(out, at);
}

/// A message the sidecar itself sends to the client.
#[derive(Debug, Clone)]
pub struct Report<'a> {
    /// `ERROR`, `FATAL` or `NOTICE`.
    pub severity: &'a str,
    /// SQLSTATE.
    pub code: &'a str,
    /// Primary message.
    pub message: &'a str,
    /// Optional detail.
    pub detail: Option<&'a str>,
    /// Optional hint.
    pub hint: Option<&'a str>,
}

impl Report<'_> {
    /// Writes it as an ErrorResponse (or a NoticeResponse for `NOTICE`/`WARNING`).
    pub fn encode(&self, out: &mut BytesMut) {
        let tag = match self.severity {
            "NOTICE" | "WARNING" | "INFO" => backend::NOTICE_RESPONSE,
            _ => backend::ERROR_RESPONSE,
        };
        let mut fields = vec![
            Field {
                code: b'S',
                value: self.severity.into(),
            },
            Field {
                code: b'V',
                value: self.severity.into(),
            },
            Field {
                code: b'C',
                value: self.code.into(),
            },
            Field {
                code: b'M',
                value: self.message.into(),
            },
        ];
        if let Some(d) = self.detail {
            fields.push(Field {
                code: b'D',
                value: d.into(),
            });
        }
        if let Some(h) = self.hint {
            fields.push(Field {
                code: b'H',
                value: h.into(),
            });
        }
        encode_fields(out, tag, &fields);
    }
}

/// Text put in place of a hidden field or value.
pub const HIDDEN: &str = "[hidden by Sluice: may contain a masked value]";

/// Rewrites the fields of a server error or notice so that no value from the
/// data is echoed: the detail, context and internal query are replaced or
/// dropped, quoted values after `: ` in the message are hidden, the message of
/// a user-raised error or notice (RAISE, SQLSTATE `P0…` or `00000`) is hidden,
/// and `detect` (the policies' detectors) runs over what remains.
pub fn scrub(fields: &mut Vec<Field>, detect: &dyn Fn(&str) -> Option<String>) {
    let code = field(fields, b'C').unwrap_or("").to_string();
    let user_raised = code.starts_with("P0") || code == "00000";
    fields.retain(|f| !matches!(f.code, b'W' | b'q' | b'p'));
    for f in fields.iter_mut() {
        match f.code {
            b'D' => f.value = format!("detail {HIDDEN}"),
            b'M' if user_raised => f.value = format!("message raised by a function {HIDDEN}"),
            b'M' | b'H' => f.value = hide_quoted_values(&f.value),
            _ => {}
        }
        if matches!(f.code, b'M' | b'H')
            && let Some(masked) = detect(&f.value)
        {
            f.value = masked;
        }
    }
}

/// Rewrites the fields of a server error or notice raised while a statement
/// that may read a masked column runs: only the severity, the SQLSTATE and
/// the server's source position are kept; the message says it was hidden.
pub fn scrub_all(fields: &mut Vec<Field>) {
    let code = field(fields, b'C').unwrap_or("").to_string();
    fields.retain(|f| matches!(f.code, b'S' | b'V' | b'C' | b'F' | b'L' | b'R'));
    fields.push(Field {
        code: b'M',
        value: format!(
            "message hidden by Sluice (SQLSTATE {code} kept): the statement may read a masked column, so the server's text, which can echo values, is not passed on"
        ),
    });
}

/// Hides every `"…"` that follows `: ` (how PostgreSQL quotes an offending
/// input value), and any `(…)=(…)` key echo, leaving names elsewhere intact.
fn hide_quoted_values(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find(": \"") {
        out.push_str(&rest[..i + 3]);
        let after = &rest[i + 3..];
        match after.rfind('"') {
            Some(end) => {
                out.push_str(HIDDEN);
                out.push('"');
                rest = &after[end + 1..];
            }
            None => {
                out.push_str(HIDDEN);
                rest = "";
            }
        }
    }
    out.push_str(rest);
    if let Some(i) = out.find(")=(") {
        out.truncate(i + 3);
        out.push_str(HIDDEN);
        out.push(')');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(code: u8, v: &str) -> Field {
        Field {
            code,
            value: v.into(),
        }
    }

    #[test]
    fn report_round_trip() {
        let mut out = BytesMut::new();
        Report {
            severity: "ERROR",
            code: INSUFFICIENT_PRIVILEGE,
            message: "denied",
            detail: Some("d"),
            hint: None,
        }
        .encode(&mut out);
        assert_eq!(out[0], b'E');
        let fields = decode(&out[5..]).unwrap();
        assert_eq!(field(&fields, b'C'), Some("42501"));
        assert_eq!(field(&fields, b'M'), Some("denied"));
        assert_eq!(field(&fields, b'D'), Some("d"));
    }

    #[test]
    fn scrub_hides_echoed_values() {
        let mut fields = vec![
            f(b'S', "ERROR"),
            f(b'C', "23505"),
            f(
                b'M',
                "duplicate key value violates unique constraint \"customers_ssn_key\"",
            ),
            f(b'D', "Key (ssn)=(123-45-6789) already exists."),
            f(b'W', "SQL function \"f\" statement 1: 123-45-6789"),
        ];
        scrub(&mut fields, &|_| None);
        let text = format!("{fields:?}");
        assert!(!text.contains("6789"), "{text}");
        assert!(text.contains("customers_ssn_key"));

        let mut fields = vec![
            f(b'C', "22P02"),
            f(
                b'M',
                "invalid input syntax for type integer: \"123-45-6789\"",
            ),
        ];
        scrub(&mut fields, &|_| None);
        assert!(!format!("{fields:?}").contains("6789"));

        let mut fields = vec![f(b'C', "P0001"), f(b'M', "secret 123-45-6789")];
        scrub(&mut fields, &|_| None);
        assert!(!format!("{fields:?}").contains("6789"));
    }

    #[test]
    fn scrub_all_keeps_only_the_sqlstate_and_positions() {
        let mut fields = vec![
            f(b'S', "WARNING"),
            f(b'C', "01000"),
            f(b'M', "value 123-45-6789"),
            f(b'D', "123-45-6789"),
            f(b'H', "123-45-6789"),
            f(b'c', "123-45-6789"),
            f(b'L', "42"),
        ];
        scrub_all(&mut fields);
        let text = format!("{fields:?}");
        assert!(!text.contains("6789"), "{text}");
        assert_eq!(field(&fields, b'C'), Some("01000"));
        assert!(field(&fields, b'M').unwrap().contains("hidden by Sluice"));
    }

    #[test]
    fn hides_key_echo_in_message() {
        assert_eq!(
            hide_quoted_values("Key (a)=(x) is duplicated"),
            format!("Key (a)=({HIDDEN})")
        );
    }
}
