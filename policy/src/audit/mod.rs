//! Audit events (schema v1) and the hash chain that makes an audit log
//! tamper-evident.
//!
//! Every event is one JSON line. Events of one *stream* (one sidecar boot: the
//! writer of a chain) carry consecutive sequence numbers from 1 and are chained:
//!
//! ```text
//! hash = hex(sha256(prev_bytes || canonical_json(event without "hash")))
//! ```
//!
//! where `prev_bytes` are the 32 bytes of the previous event's hash (32 zero
//! bytes, written as 64 `0`s, for the first event) and the canonical JSON is
//! the event with its keys sorted (by UTF-8 bytes), no whitespace, strings
//! escaped only where JSON requires it (`"`, `\`, control characters; `\n`-style
//! short forms where they exist, otherwise `\u00xx`), integers in decimal. It
//! does not depend on the order in which the line was written, so a verifier
//! recomputes it from any parse of the line, including fields it does not know.
//!
//! The chain alone proves a log consistent, not complete: whoever can rewrite
//! the file can recompute every hash after an edit, or cut the tail. Chain heads
//! signed by the operator ([`ChainHead`], checkpoints) close that gap:
//! [`verify_lines`] fails when the log ends before a checkpoint or disagrees
//! with one. It takes the heads as given: their signatures are checked by
//! the caller (`kubectl sluice audit verify --jwks`) before they count.
//!
//! The policy crate never reads the clock: callers pass the event time in.

mod canonical; // the canonical JSON the hash covers
mod chain; // the hash chain: appending events to a stream
mod event; // the event (schema v1) and its parts
mod strict; // strict JSON reading (duplicate keys are malformed)
#[cfg(test)]
mod tests;
mod verify; // verifying a log against its chain and checkpoints

pub use canonical::canonical_json;
pub use chain::{Appended, AuditChain, ChainHead, EventPieces, Rendered};
pub use event::{
    AuditApproval, AuditCommand, AuditDecision, AuditEvent, AuditEventDraft, AuditIdentity,
    AuditKind, AuditMaskCount, AuditOutage, AuditOutcome, AuditPolicy, AuditRecorded,
    AuditRecordedSet,
};
pub use verify::{
    ChainVerifier, RecordedOutage, VerifyError, VerifyErrorKind, VerifyReport, verify_lines,
};

/// The audit event schema version written by this crate.
pub const SCHEMA_VERSION: u32 = 1;

/// The `prev` of a stream's first event.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// An event could not be serialised.
#[derive(Debug, thiserror::Error)]
#[error("the audit event could not be serialised to JSON; the call must not run unaudited")]
pub struct AuditError {
    #[source]
    source: serde_json::Error,
}

impl AuditError {
    /// serde_json writes UTF-8 only; kept as an error rather than a panic.
    fn utf8() -> Self {
        AuditError {
            source: <serde_json::Error as serde::ser::Error>::custom("the JSON is not UTF-8"),
        }
    }

    /// A [`Rendered`] field given for another field of [`EventPieces`].
    fn misplaced() -> Self {
        AuditError {
            source: <serde_json::Error as serde::ser::Error>::custom(
                "a pre-rendered audit field was given for another field",
            ),
        }
    }
}
