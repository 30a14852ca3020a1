//! Why a log fails verification: the kind, the input line and stream, what
//! was found.

use serde_json::{Value, json};

/// Why the log fails verification (exit 1).
pub struct Failure {
    pub(super) kind: &'static str,
    /// The input line, when the failure is the log's.
    pub(super) line: Option<usize>,
    pub(super) stream: Option<String>,
    pub(super) detail: String,
}

impl Failure {
    /// The failure as the JSON report prints it.
    pub fn to_json(&self) -> Value {
        json!({"ok": false, "line": self.line, "kind": self.kind,
               "stream": self.stream, "detail": self.detail})
    }
}
