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

use std::collections::BTreeMap;
use std::fmt;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
use sluice_crds::{Action, AuditCheckpoint, RequestPhase};

/// The audit event schema version written by this crate.
pub const SCHEMA_VERSION: u32 = 1;

/// The `prev` of a stream's first event.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// What an event records.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[serde(rename_all = "camelCase")]
pub enum AuditKind {
    /// A workload session was opened.
    SessionStart,
    /// A session ended.
    SessionEnd,
    /// A statement or request was decided (written before it is forwarded).
    Statement,
    /// The outcome of a forwarded statement or request.
    Result,
    /// Values of a result were masked.
    Mask,
    /// A statement or request was refused.
    Denial,
    /// An approval was requested or decided.
    Approval,
    /// The audit sink failed and recovered: events were written late (see
    /// [`AuditOutage`]). Chained like any event, so a recorded outage is
    /// told apart from an edit.
    Outage,
}

/// Who sent the call.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct AuditIdentity {
    /// The identity's groups.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
    /// The workload's namespace.
    pub namespace: String,
    /// The pod the call came from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
    /// Its service account.
    pub service_account: String,
}

/// The statement or request, as far as the audit trail may show it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct AuditCommand {
    /// Fingerprint of the normalised command (equal for calls differing only in literals).
    pub fingerprint: String,
    /// Statement kind (`select`, `drop`, …) or `http`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// The command with its literals redacted (e.g. `SELECT * FROM t WHERE id = ?`,
    /// `POST /v1/refunds`).
    pub text: String,
}

/// How the call was decided.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct AuditDecision {
    /// The action taken (or, in dry run, that would have been taken).
    pub action: Action,
    /// Whether the deciding policy is in dry run (the call ran whatever `action` says).
    #[serde(default)]
    pub dry_run: bool,
    /// The policy that decided; absent when no policy applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
    /// Why, in words (e.g. `default action`, `statement could not be parsed`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The rule that decided; absent for a default action or a parse-error decision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
}

/// What a forwarded call produced.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct AuditOutcome {
    /// Time from forwarding to completion.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    /// The upstream error, with literals redacted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Values masked in the result.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub masked: Option<u64>,
    /// Rows returned or affected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rows: Option<u64>,
}

/// An approval step.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct AuditApproval {
    /// The approver's comment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    /// Who decided, as authenticated by the API server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decided_by: Option<String>,
    /// Its phase after this step (`Pending` when it was just requested).
    pub phase: RequestPhase,
    /// Name of the AccessRequest.
    pub request: String,
}

/// A period in which the audit sink refused writes (a full disk, a closed
/// pipe), recorded when it took writes again. No event of the chain is lost:
/// the sidecar keeps events it could not write and writes them, in order,
/// when the sink recovers. A decision whose record could not be written was
/// refused (write-ahead), so the `statement`, `sessionStart` and `approval`
/// events from `fromSeq` to `toSeq` record calls that did not run; the
/// other events there record what happened.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct AuditOutage {
    /// Events that were never chained because the backlog kept for the
    /// retry was full (bounded memory); 0 when none.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub dropped: u64,
    /// The last write error.
    pub error: String,
    /// How many writes failed.
    pub failed_writes: u64,
    /// The first event whose first write failed.
    pub from_seq: u64,
    /// When the first write failed (RFC 3339).
    pub since: String,
    /// The last event whose first write failed.
    pub to_seq: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// One audit event, as written (one JSON line).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct AuditEvent {
    /// Schema version ([`SCHEMA_VERSION`]).
    pub v: u32,
    /// Position in the stream, from 1.
    pub seq: u64,
    /// When it happened, RFC 3339 (given by the caller).
    pub time: String,
    /// What it records.
    #[serde(rename = "type")]
    pub kind: AuditKind,
    /// The chain it belongs to (e.g. sidecar pod and boot id).
    pub stream: String,
    /// The workload session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<String>,
    /// Who.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<AuditIdentity>,
    /// The Connection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection: Option<String>,
    /// The statement or request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<AuditCommand>,
    /// The decision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decision: Option<AuditDecision>,
    /// The outcome.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<AuditOutcome>,
    /// The approval step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval: Option<AuditApproval>,
    /// An outage of the audit sink (events of type `outage`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outage: Option<AuditOutage>,
    /// Hash of the previous event of the stream ([`GENESIS`] for the first).
    pub prev: String,
    /// This event's chain hash.
    pub hash: String,
}

/// The content of an event, before the chain numbers and hashes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditEventDraft {
    /// When it happened, RFC 3339.
    pub time: String,
    /// What it records.
    pub kind: AuditKind,
    /// The workload session.
    pub session: Option<String>,
    /// Who.
    pub identity: Option<AuditIdentity>,
    /// The Connection.
    pub connection: Option<String>,
    /// The statement or request.
    pub command: Option<AuditCommand>,
    /// The decision.
    pub decision: Option<AuditDecision>,
    /// The outcome.
    pub outcome: Option<AuditOutcome>,
    /// The approval step.
    pub approval: Option<AuditApproval>,
}

impl AuditEventDraft {
    /// A draft with only a time and a kind.
    pub fn new(time: impl Into<String>, kind: AuditKind) -> Self {
        AuditEventDraft {
            time: time.into(),
            kind,
            session: None,
            identity: None,
            connection: None,
            command: None,
            decision: None,
            outcome: None,
            approval: None,
        }
    }
}

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

impl AuditEvent {
    /// Whether `hash` is the chain hash of this event's content after `prev`
    /// (a receiver of events checks each before vouching for a head).
    pub fn hash_matches(&self) -> bool {
        self.canonical_json()
            .is_ok_and(|c| chain_hash(&self.prev, c) == self.hash)
    }

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
    fn write_canonical(&self, out: &mut Vec<u8>) -> Result<usize, AuditError> {
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
fn check_generic(canonical: &[u8]) {
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
fn put_value<T: Serialize + ?Sized>(
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
fn splice_hash(canonical: &[u8], split: usize, hash: &str, line: &mut Vec<u8>) {
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
enum Slot {
    Command,
    Connection,
    Decision,
    Identity,
    Session,
}

/// One top-level field of an event serialised ahead of time, as the
/// canonical JSON has it (`"key":value,`), for fields that repeat unchanged
/// across many events: a session's identity, connection and id, a cached
/// statement's command and decision. [`AuditChain::append_pieces`] copies
/// the bytes instead of serialising (and cloning, and dropping) the field
/// again for every event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rendered {
    slot: Slot,
    bytes: Box<[u8]>,
}

impl Rendered {
    fn new<T: Serialize + ?Sized>(slot: Slot, key: &str, value: &T) -> Result<Self, AuditError> {
        let mut bytes = Vec::with_capacity(64);
        let mut first = true;
        put_value(&mut bytes, &mut first, key, value)?;
        bytes.push(b',');
        Ok(Rendered {
            slot,
            bytes: bytes.into_boxed_slice(),
        })
    }

    /// The `command` field.
    pub fn command(v: &AuditCommand) -> Result<Self, AuditError> {
        Rendered::new(Slot::Command, "command", v)
    }

    /// The `connection` field.
    pub fn connection(v: &str) -> Result<Self, AuditError> {
        Rendered::new(Slot::Connection, "connection", v)
    }

    /// The `decision` field.
    pub fn decision(v: &AuditDecision) -> Result<Self, AuditError> {
        Rendered::new(Slot::Decision, "decision", v)
    }

    /// The `identity` field.
    pub fn identity(v: &AuditIdentity) -> Result<Self, AuditError> {
        Rendered::new(Slot::Identity, "identity", v)
    }

    /// The `session` field.
    pub fn session(v: &str) -> Result<Self, AuditError> {
        Rendered::new(Slot::Session, "session", v)
    }
}

/// An event assembled from [`Rendered`] fields (no approval step; events
/// with one go through [`AuditEventDraft`]).
#[derive(Clone, Copy, Debug)]
pub struct EventPieces<'a> {
    /// What it records.
    pub kind: AuditKind,
    /// When it happened, RFC 3339.
    pub time: &'a str,
    /// [`Rendered::command`].
    pub command: Option<&'a Rendered>,
    /// [`Rendered::connection`].
    pub connection: Option<&'a Rendered>,
    /// [`Rendered::decision`].
    pub decision: Option<&'a Rendered>,
    /// [`Rendered::identity`].
    pub identity: Option<&'a Rendered>,
    /// The outcome (differs from event to event, so serialised here).
    pub outcome: Option<&'a AuditOutcome>,
    /// [`Rendered::session`].
    pub session: Option<&'a Rendered>,
}

/// What [`AuditChain::append_pieces`] appended: the event's number and hash.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Appended {
    /// The event's `seq`.
    pub seq: u64,
    hash: HexHash,
}

impl Appended {
    /// The event's `hash`.
    pub fn hash(&self) -> &str {
        self.hash.as_str()
    }
}

/// The head of a stream's chain: its last sequence number and hash. Signed by
/// the operator, it is a checkpoint.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[serde(rename_all = "camelCase")]
pub struct ChainHead {
    /// The stream.
    pub stream: String,
    /// Sequence number of its last event (0 before the first).
    pub seq: u64,
    /// Hash of that event ([`GENESIS`] before the first).
    pub hash: String,
}

impl From<&AuditCheckpoint> for ChainHead {
    fn from(c: &AuditCheckpoint) -> Self {
        ChainHead {
            stream: c.stream.clone(),
            seq: c.sequence,
            hash: c.hash.clone(),
        }
    }
}

/// The writer side of one stream's chain: numbers and hashes events.
#[derive(Clone, Debug)]
pub struct AuditChain {
    stream: String,
    last_seq: u64,
    last_hash: String,
    /// `last_hash` decoded (`None` when it is not 64 hex digits, see
    /// [`chain_hash`]), so an append does not decode it again.
    last_digest: Option<[u8; 32]>,
    /// The canonical JSON of the event being appended (kept for its allocation).
    scratch: Vec<u8>,
}

impl AuditChain {
    /// A new stream; its first event gets seq 1 and prev [`GENESIS`].
    pub fn new(stream: impl Into<String>) -> Self {
        AuditChain {
            stream: stream.into(),
            last_seq: 0,
            last_hash: GENESIS.to_string(),
            last_digest: decode_hash(GENESIS),
            scratch: Vec::new(),
        }
    }

    /// Continues a stream after its event `last_seq` with hash `last_hash`.
    pub fn resume(stream: impl Into<String>, last_seq: u64, last_hash: impl Into<String>) -> Self {
        let last_hash = last_hash.into();
        AuditChain {
            stream: stream.into(),
            last_seq,
            last_digest: decode_hash(&last_hash),
            last_hash,
            scratch: Vec::new(),
        }
    }

    /// Numbers, links and hashes `draft` as the stream's next event. The chain
    /// advances only when this succeeds.
    pub fn append(&mut self, draft: AuditEventDraft) -> Result<AuditEvent, AuditError> {
        self.append_to(draft, None)
    }

    /// [`AuditChain::append`], also appending the event's line and a newline
    /// to `line` (serialised once: the line is the hashed canonical JSON with
    /// the hash spliced in). Nothing is appended when it fails.
    pub fn append_line(
        &mut self,
        draft: AuditEventDraft,
        line: &mut Vec<u8>,
    ) -> Result<AuditEvent, AuditError> {
        self.append_to(draft, Some(line))
    }

    fn append_to(
        &mut self,
        draft: AuditEventDraft,
        line: Option<&mut Vec<u8>>,
    ) -> Result<AuditEvent, AuditError> {
        let mut event = self.next_event(draft);
        let mut canonical = std::mem::take(&mut self.scratch);
        canonical.clear();
        let written = event.write_canonical(&mut canonical);
        let result = written.map(|split| {
            let (digest, hex) = self.link(&canonical);
            if let Some(line) = line {
                splice_hash(&canonical, split, hex.as_str(), line);
                line.push(b'\n');
            }
            event.hash = hex.as_str().to_owned();
            self.advance(event.seq, &event.hash, digest);
        });
        self.scratch = canonical;
        result.map(|()| event)
    }

    /// Appends an `outage` event (see [`AuditOutage`]) at `time` and its
    /// line, as [`AuditChain::append_line`] does.
    pub fn append_outage_line(
        &mut self,
        time: &str,
        outage: AuditOutage,
        line: &mut Vec<u8>,
    ) -> Result<AuditEvent, AuditError> {
        let mut event = self.next_event(AuditEventDraft::new(time, AuditKind::Outage));
        event.outage = Some(outage);
        let mut canonical = std::mem::take(&mut self.scratch);
        canonical.clear();
        let written = event.write_canonical(&mut canonical);
        let result = written.map(|split| {
            let (digest, hex) = self.link(&canonical);
            splice_hash(&canonical, split, hex.as_str(), line);
            line.push(b'\n');
            event.hash = hex.as_str().to_owned();
            self.advance(event.seq, &event.hash, digest);
        });
        self.scratch = canonical;
        result.map(|()| event)
    }

    /// Numbers, links and hashes the event made of `pieces` as the stream's
    /// next one and appends its line and a newline to `line`: the same bytes
    /// [`AuditChain::append_line`] writes for the same content, made by
    /// copying the pre-rendered fields. The chain advances only when this
    /// succeeds; nothing is appended when it fails.
    pub fn append_pieces(
        &mut self,
        pieces: &EventPieces<'_>,
        line: &mut Vec<u8>,
    ) -> Result<Appended, AuditError> {
        let placed = [
            (pieces.command, Slot::Command),
            (pieces.connection, Slot::Connection),
            (pieces.decision, Slot::Decision),
            (pieces.identity, Slot::Identity),
            (pieces.session, Slot::Session),
        ];
        if placed
            .iter()
            .any(|(r, slot)| r.is_some_and(|r| r.slot != *slot))
        {
            return Err(AuditError::misplaced());
        }
        let seq = self.last_seq + 1;
        let mut canonical = std::mem::take(&mut self.scratch);
        canonical.clear();
        // Keys in sorted order, as in `AuditEvent::write_canonical`; every
        // piece ends with a comma, and `prev` always follows the split.
        canonical.push(b'{');
        for r in [pieces.command, pieces.connection, pieces.decision]
            .into_iter()
            .flatten()
        {
            canonical.extend_from_slice(&r.bytes);
        }
        let split = canonical.len();
        if let Some(r) = pieces.identity {
            canonical.extend_from_slice(&r.bytes);
        }
        let written = (|| {
            let mut first = true;
            if let Some(o) = pieces.outcome {
                put_value(&mut canonical, &mut first, "outcome", o)?;
            }
            put_value(&mut canonical, &mut first, "prev", &self.last_hash)?;
            put_value(&mut canonical, &mut first, "seq", &seq)?;
            canonical.push(b',');
            if let Some(r) = pieces.session {
                canonical.extend_from_slice(&r.bytes);
            }
            first = true;
            put_value(&mut canonical, &mut first, "stream", &self.stream)?;
            put_value(&mut canonical, &mut first, "time", pieces.time)?;
            put_value(&mut canonical, &mut first, "type", &pieces.kind)?;
            put_value(&mut canonical, &mut first, "v", &SCHEMA_VERSION)?;
            canonical.push(b'}');
            Ok(())
        })();
        let result = written.map(|()| {
            #[cfg(debug_assertions)]
            check_generic(&canonical);
            let (digest, hex) = self.link(&canonical);
            splice_hash(&canonical, split, hex.as_str(), line);
            line.push(b'\n');
            self.advance(seq, hex.as_str(), digest);
            Appended { seq, hash: hex }
        });
        self.scratch = canonical;
        result
    }

    /// The chain hash of the next event, whose canonical JSON is
    /// `canonical`: what [`chain_hash`] computes from `last_hash`, without
    /// decoding it again. Returns the digest and its hex text.
    fn link(&self, canonical: &[u8]) -> ([u8; 32], HexHash) {
        let mut h = Sha256::new();
        match &self.last_digest {
            Some(bytes) => h.update(bytes),
            None => h.update(self.last_hash.as_bytes()),
        }
        h.update(canonical);
        let digest: [u8; 32] = h.finalize().into();
        (digest, HexHash::of(&digest))
    }

    fn advance(&mut self, seq: u64, hash: &str, digest: [u8; 32]) {
        self.last_seq = seq;
        self.last_hash.clear();
        self.last_hash.push_str(hash);
        self.last_digest = Some(digest);
    }

    /// The next event of the stream, not yet hashed.
    fn next_event(&self, draft: AuditEventDraft) -> AuditEvent {
        AuditEvent {
            v: SCHEMA_VERSION,
            seq: self.last_seq + 1,
            time: draft.time,
            kind: draft.kind,
            stream: self.stream.clone(),
            session: draft.session,
            identity: draft.identity,
            connection: draft.connection,
            command: draft.command,
            decision: draft.decision,
            outcome: draft.outcome,
            approval: draft.approval,
            outage: None,
            prev: self.last_hash.clone(),
            hash: String::new(),
        }
    }

    /// The current head (what the operator is asked to sign).
    pub fn head(&self) -> ChainHead {
        ChainHead {
            stream: self.stream.clone(),
            seq: self.last_seq,
            hash: self.last_hash.clone(),
        }
    }
}

/// `hex(sha256(prev_bytes || canonical))`. A `prev` that is not 64 hex digits
/// is hashed as its text, so it can never collide with a well-formed one.
fn chain_hash(prev: &str, canonical: impl AsRef<[u8]>) -> String {
    let mut h = Sha256::new();
    match decode_hash(prev) {
        Some(bytes) => h.update(bytes),
        None => h.update(prev.as_bytes()),
    }
    h.update(canonical.as_ref());
    let digest = h.finalize();
    let mut out = [0u8; 64];
    if hex::encode_to_slice(digest, &mut out).is_ok()
        && let Ok(text) = std::str::from_utf8(&out)
    {
        return text.to_owned();
    }
    hex::encode(digest)
}

/// A SHA-256 digest as 64 lowercase hex digits, on the stack.
#[derive(Clone, Debug, PartialEq, Eq)]
struct HexHash([u8; 64]);

impl HexHash {
    fn of(digest: &[u8; 32]) -> Self {
        let mut out = [b'0'; 64];
        // 64 bytes hold 32 bytes' hex exactly, so the length check passes.
        let _ = hex::encode_to_slice(digest, &mut out);
        HexHash(out)
    }

    fn as_str(&self) -> &str {
        // Only ASCII hex digits are ever written into it.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

fn decode_hash(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64 || s.bytes().any(|b| b.is_ascii_uppercase()) {
        return None;
    }
    let mut out = [0u8; 32];
    hex::decode_to_slice(s, &mut out).ok()?;
    Some(out)
}

/// The canonical JSON text of `v` (see the module documentation).
pub fn canonical_json(v: &Value) -> String {
    let mut out = String::new();
    write_canonical(v, &mut out);
    out
}

fn write_canonical(v: &Value, out: &mut String) {
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

// === verification ===

/// What is wrong with a log.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum VerifyErrorKind {
    /// A line is not an audit event (not JSON, a field missing or of the wrong
    /// type, an unsupported schema version).
    Malformed,
    /// An event's content does not match its hash.
    Edited,
    /// An event appears after a later event of its stream (or twice).
    Reordered,
    /// Events are missing: a sequence gap, a `prev` that is not the previous
    /// event's hash, or a stream that does not start at 1 (or at a checkpoint).
    Dropped,
    /// The log ends before a checkpoint's event.
    Truncated,
    /// A checkpoint's hash differs from the event at its sequence number: the
    /// chain was rewritten (edited and re-hashed) up to there.
    CheckpointMismatch,
}

impl VerifyErrorKind {
    /// A stable name, for reports and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            VerifyErrorKind::Malformed => "malformed",
            VerifyErrorKind::Edited => "edited",
            VerifyErrorKind::Reordered => "reordered",
            VerifyErrorKind::Dropped => "dropped",
            VerifyErrorKind::Truncated => "truncated",
            VerifyErrorKind::CheckpointMismatch => "checkpointMismatch",
        }
    }
}

impl fmt::Display for VerifyErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The first problem found in a log.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("audit log line {line}: {kind}: {detail}")]
pub struct VerifyError {
    /// 1-based line number (for `Truncated`, one past the last line).
    pub line: usize,
    /// What is wrong.
    pub kind: VerifyErrorKind,
    /// The stream concerned, when known.
    pub stream: Option<String>,
    /// What was found, in words.
    pub detail: String,
}

/// What a successful verification covered.
#[derive(Serialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct VerifyReport {
    /// Events verified.
    pub events: u64,
    /// Streams seen.
    pub streams: usize,
    /// The last event of every stream, sorted by stream.
    pub heads: Vec<ChainHead>,
    /// Checkpoints confirmed by an event of the log.
    pub checkpoints_matched: usize,
    /// Checkpoints for events before the start of the log (not checked: the log
    /// is a later segment).
    pub checkpoints_before_log: usize,
    /// Outages of the audit sink the log records (events of type `outage`):
    /// events written late, not edited.
    pub outages: Vec<RecordedOutage>,
}

/// An `outage` event found in a verified log.
#[derive(Serialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct RecordedOutage {
    /// 1-based line of the outage event.
    pub line: usize,
    /// Its stream.
    pub stream: String,
    /// Its seq.
    pub seq: u64,
    /// When the sink took writes again (the event's time).
    pub until: String,
    /// What it records.
    #[serde(flatten)]
    pub outage: AuditOutage,
}

#[derive(Debug)]
struct StreamState {
    last_seq: u64,
    last_hash: String,
    last_line: usize,
    /// First sequence number in the log (events before it are out of scope).
    first_seq: u64,
    /// Line of the first event.
    first_line: usize,
    /// The `prev` the first event must have (GENESIS, or an anchoring checkpoint's hash).
    start_hash: String,
    /// The first sequence gap not yet explained: (line, missing from, missing to).
    gap: Option<(usize, u64, u64)>,
}

/// Verifies an audit log given as lines (blank lines are skipped), against
/// operator-signed `checkpoints`. Streams may be interleaved; each is verified
/// on its own. A stream must start at seq 1, or right after one of the
/// checkpoints (to verify a later segment of a log). Returns the first
/// problem, by line. For a log too big to hold in memory, feed a
/// [`ChainVerifier`] line by line instead.
pub fn verify_lines<'a>(
    lines: impl Iterator<Item = &'a str>,
    checkpoints: &[ChainHead],
) -> Result<VerifyReport, VerifyError> {
    let mut verifier = ChainVerifier::new(checkpoints);
    for line in lines {
        verifier.push_line(line)?;
    }
    verifier.finish()
}

/// Incremental [`verify_lines`]: memory grows with the number of streams and
/// checkpoints, not with the log.
#[derive(Debug)]
pub struct ChainVerifier {
    checkpoints: Vec<ChainHead>,
    /// Checkpoint hash by (stream, seq).
    wanted: BTreeMap<(String, u64), String>,
    streams: BTreeMap<String, StreamState>,
    /// Hash and line of the events that checkpoints name.
    seen: BTreeMap<(String, u64), (String, usize)>,
    events: u64,
    line: usize,
    failed: Option<VerifyError>,
    outages: Vec<RecordedOutage>,
}

impl ChainVerifier {
    /// A verifier of a log covered by `checkpoints`.
    pub fn new(checkpoints: &[ChainHead]) -> Self {
        ChainVerifier {
            checkpoints: checkpoints.to_vec(),
            wanted: checkpoints
                .iter()
                .map(|c| ((c.stream.clone(), c.seq), c.hash.clone()))
                .collect(),
            streams: BTreeMap::new(),
            seen: BTreeMap::new(),
            events: 0,
            line: 0,
            failed: None,
            outages: Vec::new(),
        }
    }

    /// Checks the log's next line. After an error every further call returns
    /// that error again.
    pub fn push_line(&mut self, raw: &str) -> Result<(), VerifyError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        self.line += 1;
        match self.check(raw) {
            Ok(()) => Ok(()),
            Err(e) => {
                let e = earliest_gap(&self.streams, e);
                self.failed = Some(e.clone());
                Err(e)
            }
        }
    }

    fn check(&mut self, raw: &str) -> Result<(), VerifyError> {
        let line = self.line;
        if raw.trim().is_empty() {
            return Ok(());
        }
        let fail = |kind, stream: Option<&str>, detail: String| VerifyError {
            line,
            kind,
            stream: stream.map(str::to_string),
            detail,
        };
        let event =
            parse_line(raw).map_err(|detail| fail(VerifyErrorKind::Malformed, None, detail))?;
        let stream = event.stream.as_str();
        let computed = chain_hash(&event.prev, canonical_json(&event.rest));
        if computed != event.hash {
            return Err(fail(
                VerifyErrorKind::Edited,
                Some(stream),
                format!("seq {}: the content does not match its hash", event.seq),
            ));
        }
        if event.v != u64::from(SCHEMA_VERSION) {
            return Err(fail(
                VerifyErrorKind::Malformed,
                Some(stream),
                format!(
                    "schema version {} is not supported (this verifier reads v{SCHEMA_VERSION}); \
                     use a newer kubectl-sluice",
                    event.v
                ),
            ));
        }
        self.events += 1;
        let wanted = &self.wanted;
        let state = self.streams.entry(stream.to_string()).or_insert_with(|| {
            // A later segment may start right after a checkpoint.
            let anchored = event.seq > 1
                && wanted
                    .get(&(stream.to_string(), event.seq - 1))
                    .is_some_and(|h| *h == event.prev);
            let (last_seq, last_hash) = if anchored {
                (event.seq - 1, event.prev.clone())
            } else {
                (0, GENESIS.to_string())
            };
            StreamState {
                last_seq,
                start_hash: last_hash.clone(),
                last_hash,
                last_line: 0,
                first_seq: last_seq + 1,
                first_line: line,
                gap: None,
            }
        });
        if event.seq <= state.last_seq {
            let explains_gap = state
                .gap
                .is_some_and(|(_, from, to)| (from..=to).contains(&event.seq));
            if explains_gap {
                state.gap = None;
            }
            return Err(fail(
                VerifyErrorKind::Reordered,
                Some(stream),
                format!(
                    "seq {} comes after seq {} (line {})",
                    event.seq, state.last_seq, state.last_line
                ),
            ));
        }
        if event.seq == state.last_seq + 1 {
            if event.prev != state.last_hash {
                let after = if state.last_seq == 0 {
                    "the stream's start".to_string()
                } else {
                    format!("seq {} (line {})", state.last_seq, state.last_line)
                };
                return Err(fail(
                    VerifyErrorKind::Dropped,
                    Some(stream),
                    format!("seq {}: prev is not the hash of {after}", event.seq),
                ));
            }
        } else if state.gap.is_none() {
            state.gap = Some((line, state.last_seq + 1, event.seq - 1));
        }
        state.last_seq = event.seq;
        state.last_hash.clone_from(&event.hash);
        state.last_line = line;
        let key = (stream.to_string(), event.seq);
        if let Some(want) = self.wanted.get(&key) {
            if *want != event.hash {
                return Err(fail(
                    VerifyErrorKind::CheckpointMismatch,
                    Some(stream),
                    format!(
                        "seq {}: the checkpoint's hash is {want} but the log's is {}",
                        event.seq, event.hash
                    ),
                ));
            }
            self.seen.insert(key, (event.hash.clone(), line));
        }
        if event.rest.get("type").and_then(Value::as_str) == Some("outage") {
            let outage = event
                .rest
                .get("outage")
                .cloned()
                .and_then(|v| serde_json::from_value::<AuditOutage>(v).ok())
                .filter(|o| o.from_seq <= o.to_seq && o.to_seq < event.seq)
                .ok_or_else(|| {
                    fail(
                        VerifyErrorKind::Malformed,
                        Some(stream),
                        format!(
                            "seq {}: an outage event without a valid outage field",
                            event.seq
                        ),
                    )
                })?;
            self.outages.push(RecordedOutage {
                line,
                stream: stream.to_string(),
                seq: event.seq,
                until: event
                    .rest
                    .get("time")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string(),
                outage,
            });
        }
        Ok(())
    }

    /// Ends the log: reports sequence gaps never explained, and checkpoints the
    /// log does not reach (`Truncated`, line one past the last) or contradicts.
    pub fn finish(self) -> Result<VerifyReport, VerifyError> {
        if let Some(e) = self.failed {
            return Err(e);
        }
        if let Some(gap) = pending_gap(&self.streams) {
            return Err(gap);
        }
        let end = VerifyError {
            line: self.line + 1,
            kind: VerifyErrorKind::Truncated,
            stream: None,
            detail: String::new(),
        };
        let mut matched = 0;
        let mut before_log = 0;
        for c in &self.checkpoints {
            let mismatch = |line: usize, found: &str| VerifyError {
                line,
                kind: VerifyErrorKind::CheckpointMismatch,
                stream: Some(c.stream.clone()),
                detail: format!(
                    "seq {}: the checkpoint's hash is {} but the log's is {found}",
                    c.seq, c.hash
                ),
            };
            match self.streams.get(&c.stream) {
                _ if c.seq == 0 => {
                    if c.hash != GENESIS {
                        return Err(mismatch(1, GENESIS));
                    }
                    matched += 1;
                }
                // The checkpoint a later segment starts from: the first event's prev.
                Some(s) if c.seq + 1 == s.first_seq => {
                    if c.hash != s.start_hash {
                        return Err(mismatch(s.first_line, &s.start_hash));
                    }
                    matched += 1;
                }
                Some(s) if c.seq < s.first_seq => before_log += 1,
                Some(s) if c.seq <= s.last_seq => {
                    match self.seen.get(&(c.stream.clone(), c.seq)) {
                        Some((hash, _)) if *hash == c.hash => matched += 1,
                        Some((hash, line)) => return Err(mismatch(*line, hash)),
                        // Unreachable without a gap, and gaps are reported above.
                        None => return Err(mismatch(end.line, "missing")),
                    }
                }
                Some(s) => {
                    return Err(VerifyError {
                        stream: Some(c.stream.clone()),
                        detail: format!(
                            "the log ends at seq {} of stream {} but a checkpoint covers seq {}",
                            s.last_seq, c.stream, c.seq
                        ),
                        ..end
                    });
                }
                None => {
                    return Err(VerifyError {
                        stream: Some(c.stream.clone()),
                        detail: format!(
                            "stream {} has no event in the log but a checkpoint covers seq {}",
                            c.stream, c.seq
                        ),
                        ..end
                    });
                }
            }
        }
        Ok(VerifyReport {
            events: self.events,
            streams: self.streams.len(),
            heads: self
                .streams
                .iter()
                .map(|(stream, s)| ChainHead {
                    stream: stream.clone(),
                    seq: s.last_seq,
                    hash: s.last_hash.clone(),
                })
                .collect(),
            checkpoints_matched: matched,
            checkpoints_before_log: before_log,
            outages: self.outages,
        })
    }
}

/// A sequence gap seen earlier than `e` wins over it: it is the first problem.
fn earliest_gap(streams: &BTreeMap<String, StreamState>, e: VerifyError) -> VerifyError {
    match pending_gap(streams) {
        Some(gap) if gap.line < e.line => gap,
        _ => e,
    }
}

fn pending_gap(streams: &BTreeMap<String, StreamState>) -> Option<VerifyError> {
    streams
        .iter()
        .filter_map(|(stream, s)| s.gap.map(|g| (stream, g)))
        .min_by_key(|(_, (line, _, _))| *line)
        .map(|(stream, (line, from, to))| VerifyError {
            line,
            kind: VerifyErrorKind::Dropped,
            stream: Some(stream.clone()),
            detail: if from == to {
                format!("seq {from} of stream {stream} is missing")
            } else {
                format!("seq {from} to {to} of stream {stream} are missing")
            },
        })
}

/// The chain fields of a line, and the rest of the event (everything but `hash`).
struct ParsedLine {
    v: u64,
    stream: String,
    seq: u64,
    prev: String,
    hash: String,
    rest: Value,
}

fn parse_line(raw: &str) -> Result<ParsedLine, String> {
    let StrictValue(mut value) = serde_json::from_str(raw).map_err(|e| format!("not JSON: {e}"))?;
    let Value::Object(map) = &mut value else {
        return Err("not a JSON object".to_string());
    };
    let hash = match map.remove("hash") {
        Some(Value::String(h)) => h,
        _ => return Err("no string field \"hash\"".to_string()),
    };
    let string = |name: &str| match map.get(name) {
        Some(Value::String(s)) => Ok(s.clone()),
        _ => Err(format!("no string field {name:?}")),
    };
    let number = |name: &str| {
        map.get(name)
            .and_then(Value::as_u64)
            .ok_or_else(|| format!("no unsigned integer field {name:?}"))
    };
    let parsed = ParsedLine {
        v: number("v")?,
        stream: string("stream")?,
        seq: number("seq")?,
        prev: string("prev")?,
        hash,
        rest: Value::Null,
    };
    if parsed.seq == 0 {
        return Err("seq must be at least 1".to_string());
    }
    if decode_hash(&parsed.prev).is_none() || decode_hash(&parsed.hash).is_none() {
        return Err("prev and hash must be 64 lower-case hex digits".to_string());
    }
    Ok(ParsedLine {
        rest: value,
        ..parsed
    })
}

/// A JSON value that refuses duplicate object keys. A parser keeps one of two
/// equal keys (serde_json the last, others the first), so a duplicate would
/// let a forged field sit next to the hashed one and be shown by some readers.
struct StrictValue(Value);

impl<'de> Deserialize<'de> for StrictValue {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(StrictVisitor).map(StrictValue)
    }
}

struct StrictVisitor;

impl<'de> serde::de::Visitor<'de> for StrictVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value without duplicate object keys")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_string()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(StrictValue(v)) = seq.next_element()? {
            items.push(v);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = serde_json::Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if out.contains_key(&key) {
                return Err(serde::de::Error::custom(format!("duplicate key {key:?}")));
            }
            let StrictValue(v) = map.next_value()?;
            out.insert(key, v);
        }
        Ok(Value::Object(out))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn draft(kind: AuditKind) -> AuditEventDraft {
        AuditEventDraft {
            session: Some("s-1".into()),
            identity: Some(AuditIdentity {
                namespace: "shop".into(),
                service_account: "report-job".into(),
                pod: Some("report-job-7d9".into()),
                groups: vec!["system:serviceaccounts:shop".into()],
            }),
            connection: Some("orders-db".into()),
            command: Some(AuditCommand {
                text: "SELECT * FROM orders WHERE id = ?".into(),
                fingerprint: "3f1c".into(),
                kind: Some("select".into()),
            }),
            decision: Some(AuditDecision {
                action: Action::Allow,
                policy: Some("reporting".into()),
                rule: None,
                dry_run: false,
                reason: Some("default action".into()),
            }),
            ..AuditEventDraft::new("2026-01-02T03:04:05Z", kind)
        }
    }

    #[test]
    fn serialises_in_camel_case_and_skips_absent_fields() {
        let mut chain = AuditChain::new("pod-a/boot-1");
        let e = chain
            .append(AuditEventDraft::new(
                "2026-01-02T03:04:05Z",
                AuditKind::SessionStart,
            ))
            .expect("appends");
        let v: Value = serde_json::from_str(&e.to_line().expect("line")).expect("json");
        let keys: Vec<&str> = v
            .as_object()
            .expect("object")
            .keys()
            .map(String::as_str)
            .collect();
        let mut sorted = keys.clone();
        sorted.sort_unstable();
        assert_eq!(
            sorted,
            vec!["hash", "prev", "seq", "stream", "time", "type", "v"]
        );
        assert_eq!(v["type"], json!("sessionStart"));
        assert_eq!(v["prev"], json!(GENESIS));
        assert_eq!(v["seq"], json!(1));
        let e = chain.append(draft(AuditKind::Statement)).expect("appends");
        let v: Value = serde_json::from_str(&e.to_line().expect("line")).expect("json");
        assert_eq!(v["identity"]["serviceAccount"], json!("report-job"));
        assert_eq!(v["decision"]["dryRun"], json!(false));
        assert!(v["decision"].get("rule").is_none());
        let back: AuditEvent = serde_json::from_value(v).expect("round trip");
        assert_eq!(back, e);
    }

    #[test]
    fn canonical_json_sorts_keys_and_has_no_whitespace() {
        // Keys inserted out of order, nested, with characters needing escapes.
        let mut inner = serde_json::Map::new();
        inner.insert("z".into(), json!(1));
        inner.insert("a".into(), json!([true, null, "x\"y\\z\n\u{1}é"]));
        let mut outer = serde_json::Map::new();
        outer.insert("b".into(), Value::Object(inner));
        outer.insert("A".into(), json!(-5));
        outer.insert("a".into(), json!(18446744073709551615u64));
        assert_eq!(
            canonical_json(&Value::Object(outer)),
            r#"{"A":-5,"a":18446744073709551615,"b":{"a":[true,null,"x\"y\\z\n\u0001é"],"z":1}}"#
        );
        // The event's canonical form does not follow the struct's field order.
        let mut chain = AuditChain::new("s");
        let e = chain.append(draft(AuditKind::Statement)).expect("appends");
        let c = e.canonical_json().expect("canonical");
        assert!(
            c.starts_with(r#"{"command":{"fingerprint":"3f1c","kind":"select","text":"#),
            "{c}"
        );
        assert!(!c.contains("\"hash\""));
        assert!(!c.contains(": ") && !c.contains(", "));
    }

    /// A fixed event's hash, computed independently (Python:
    /// `json.dumps(e, sort_keys=True, separators=(",", ":"), ensure_ascii=False)`
    /// then `sha256(bytes.fromhex(prev) + canonical)`), pins the format.
    #[test]
    fn known_hash_vector() {
        let mut chain = AuditChain::new("pod-a/boot-1");
        let e = chain
            .append(AuditEventDraft {
                connection: Some("orders-db".into()),
                ..AuditEventDraft::new("2026-01-02T03:04:05Z", AuditKind::SessionStart)
            })
            .expect("appends");
        assert_eq!(
            e.canonical_json().expect("canonical"),
            r#"{"connection":"orders-db","prev":"0000000000000000000000000000000000000000000000000000000000000000","seq":1,"stream":"pod-a/boot-1","time":"2026-01-02T03:04:05Z","type":"sessionStart","v":1}"#
        );
        assert_eq!(e.hash, KNOWN_HASH);
    }

    /// The typed writer (what the chain hashes and writes) gives the same
    /// bytes as the generic canonical form of the event's JSON value (what
    /// the verifier recomputes), for every field and characters that need
    /// escaping; the spliced line is the event's JSON and verifies.
    #[test]
    fn typed_canonical_matches_the_generic_form() {
        let nasty = "x\"y\\z\n\r\t\u{1}\u{8}\u{c}\u{1f}\u{7f}é😀\u{2028}/ok";
        let full = AuditEventDraft {
            session: Some(nasty.into()),
            identity: Some(AuditIdentity {
                namespace: nasty.into(),
                service_account: "sa".into(),
                pod: Some("p".into()),
                groups: vec!["g1".into(), nasty.into()],
            }),
            connection: Some(nasty.into()),
            command: Some(AuditCommand {
                text: nasty.into(),
                fingerprint: "f".into(),
                kind: Some("select".into()),
            }),
            decision: Some(AuditDecision {
                action: Action::RequireApproval,
                policy: Some(nasty.into()),
                rule: Some("r".into()),
                dry_run: true,
                reason: Some(nasty.into()),
            }),
            outcome: Some(AuditOutcome {
                rows: Some(u64::MAX),
                duration_ms: Some(0),
                error: Some(nasty.into()),
                masked: Some(7),
            }),
            approval: Some(AuditApproval {
                request: "req-1".into(),
                phase: RequestPhase::Approved,
                decided_by: Some(nasty.into()),
                comment: Some(nasty.into()),
            }),
            ..AuditEventDraft::new(nasty, AuditKind::Approval)
        };
        let head_only = AuditEventDraft {
            command: full.command.clone(),
            decision: full.decision.clone(),
            ..AuditEventDraft::new("t", AuditKind::Statement)
        };
        let tail_only = AuditEventDraft {
            identity: full.identity.clone(),
            outcome: Some(AuditOutcome::default()),
            ..AuditEventDraft::new("t", AuditKind::Result)
        };
        let bare = AuditEventDraft::new("t", AuditKind::SessionEnd);
        let mut chain = AuditChain::new(nasty);
        let mut log = Vec::new();
        for d in [full, head_only, tail_only, bare] {
            let before = log.len();
            let e = chain.append_line(d, &mut log).expect("appends");
            let mut value = serde_json::to_value(&e).expect("value");
            value.as_object_mut().expect("object").remove("hash");
            assert_eq!(
                e.canonical_json().expect("canonical"),
                canonical_json(&value)
            );
            let line = std::str::from_utf8(&log[before..]).expect("utf-8");
            assert_eq!(line, format!("{}\n", e.to_line().expect("line")));
            let back: AuditEvent = serde_json::from_str(line).expect("json");
            assert_eq!(back, e);
        }
        let text = String::from_utf8(log).expect("utf-8");
        let report = verify_lines(text.lines(), &[]).expect("verifies");
        assert_eq!(report.events, 4);
    }

    const KNOWN_HASH: &str = "5ee9b03d7b94ac54c161b3afa8fb90593ce44f9729f58c990bf2981aee3e9ea0";

    #[test]
    fn chain_links_and_resumes() {
        let mut chain = AuditChain::new("s");
        assert_eq!(
            chain.head(),
            ChainHead {
                stream: "s".into(),
                seq: 0,
                hash: GENESIS.into()
            }
        );
        let a = chain.append(draft(AuditKind::Statement)).expect("appends");
        let b = chain.append(draft(AuditKind::Result)).expect("appends");
        assert_eq!((a.seq, b.seq), (1, 2));
        assert_eq!(b.prev, a.hash);
        assert_ne!(a.hash, b.hash);
        let mut resumed = AuditChain::resume("s", b.seq, b.hash.clone());
        let mut original = chain.clone();
        let c1 = resumed
            .append(draft(AuditKind::SessionEnd))
            .expect("appends");
        let c2 = original
            .append(draft(AuditKind::SessionEnd))
            .expect("appends");
        assert_eq!(c1, c2);
        let lines: Vec<String> = [a, b, c1]
            .iter()
            .map(|e| e.to_line().expect("line"))
            .collect();
        let report =
            verify_lines(lines.iter().map(String::as_str), &[chain.head()]).expect("verifies");
        assert_eq!(report.events, 3);
        assert_eq!(report.heads, vec![resumed.head()]);
        assert_eq!(report.checkpoints_matched, 1);
    }

    #[test]
    fn append_line_writes_what_append_and_to_line_would() {
        // Two chains fed the same drafts: one through append + to_line, one
        // through append_line (which reuses its buffer and the decoded
        // previous hash). Also from a resumed head that is not 64 hex digits
        // (hashed as text, as the verifier does).
        for (seq, hash) in [(0, GENESIS.to_string()), (7, "not-a-hash".to_string())] {
            let mut typed = AuditChain::resume("s", seq, hash.clone());
            let mut lined = AuditChain::resume("s", seq, hash.clone());
            let mut text = Vec::new();
            let mut expected = String::new();
            for kind in [
                AuditKind::Statement,
                AuditKind::Result,
                AuditKind::SessionEnd,
            ] {
                let event = typed.append(draft(kind)).expect("appends");
                expected.push_str(&event.to_line().expect("line"));
                expected.push('\n');
                let same = lined.append_line(draft(kind), &mut text).expect("appends");
                assert_eq!(same, event);
            }
            assert_eq!(String::from_utf8(text).unwrap(), expected);
            assert_eq!(lined.head(), typed.head());
            if seq == 0 {
                let report = verify_lines(expected.lines(), &[lined.head()]).expect("verifies");
                assert_eq!(report.events, 3);
            }
        }
    }

    #[test]
    fn append_pieces_writes_what_append_line_would() {
        // The same content through drafts and through pre-rendered pieces,
        // with and without the optional fields, also from a resumed head
        // that is not 64 hex digits, gives byte-identical lines and heads.
        let outcome = AuditOutcome {
            duration_ms: Some(3),
            error: Some("23505 \"quoted\"\n".into()),
            masked: Some(2),
            rows: Some(10),
        };
        for (seq, hash) in [(0, GENESIS.to_string()), (7, "not-a-hash".to_string())] {
            let mut drafted = AuditChain::resume("pod-a/boot-1", seq, hash.clone());
            let mut pieced = AuditChain::resume("pod-a/boot-1", seq, hash.clone());
            let (mut expected, mut text) = (Vec::new(), Vec::new());
            for (kind, full, with_outcome) in [
                (AuditKind::Statement, true, false),
                (AuditKind::Result, true, true),
                (AuditKind::Result, false, true),
                (AuditKind::Statement, false, false),
            ] {
                let mut d = draft(kind);
                if !full {
                    d.identity = None;
                    d.session = None;
                    d.decision = None;
                }
                if with_outcome {
                    d.outcome = Some(outcome.clone());
                    d.decision = None;
                }
                let event = drafted
                    .append_line(d.clone(), &mut expected)
                    .expect("appends");
                let command = d.command.as_ref().map(|c| Rendered::command(c).unwrap());
                let connection = d
                    .connection
                    .as_deref()
                    .map(|c| Rendered::connection(c).unwrap());
                let decision = d.decision.as_ref().map(|c| Rendered::decision(c).unwrap());
                let identity = d.identity.as_ref().map(|c| Rendered::identity(c).unwrap());
                let session = d.session.as_deref().map(|c| Rendered::session(c).unwrap());
                let appended = pieced
                    .append_pieces(
                        &EventPieces {
                            kind,
                            time: &d.time,
                            command: command.as_ref(),
                            connection: connection.as_ref(),
                            decision: decision.as_ref(),
                            identity: identity.as_ref(),
                            outcome: d.outcome.as_ref(),
                            session: session.as_ref(),
                        },
                        &mut text,
                    )
                    .expect("appends");
                assert_eq!((appended.seq, appended.hash()), (event.seq, &*event.hash));
            }
            assert_eq!(
                String::from_utf8(text).unwrap(),
                String::from_utf8(expected).unwrap()
            );
            assert_eq!(pieced.head(), drafted.head());
        }
    }

    #[test]
    fn append_pieces_refuses_a_field_in_the_wrong_place() {
        let mut chain = AuditChain::new("s");
        let session = Rendered::session("s-1").unwrap();
        let mut line = Vec::new();
        let pieces = EventPieces {
            kind: AuditKind::Statement,
            time: "2026-01-02T03:04:05Z",
            command: None,
            connection: Some(&session),
            decision: None,
            identity: None,
            outcome: None,
            session: None,
        };
        assert!(chain.append_pieces(&pieces, &mut line).is_err());
        assert!(line.is_empty());
        assert_eq!(chain.head().seq, 0);
    }

    #[test]
    fn malformed_lines() {
        let mut chain = AuditChain::new("s");
        let good = chain
            .append(draft(AuditKind::Statement))
            .expect("appends")
            .to_line()
            .expect("line");
        for (bad, what) in [
            ("not json", "not JSON"),
            ("[1]", "not a JSON object"),
            (r#"{"v":1}"#, "hash"),
            (
                r#"{"v":1,"stream":"s","seq":1,"prev":"00","hash":"00"}"#,
                "64 lower-case hex",
            ),
        ] {
            let lines = [good.as_str(), "", bad];
            let err = verify_lines(lines.into_iter(), &[]).expect_err("malformed");
            assert_eq!(
                (err.line, err.kind),
                (3, VerifyErrorKind::Malformed),
                "{bad}"
            );
            assert!(err.detail.contains(what), "{err}");
        }
    }

    #[test]
    fn a_duplicated_field_is_malformed_even_if_the_hash_holds() {
        let mut chain = AuditChain::new("s");
        let line = chain
            .append(draft(AuditKind::Statement))
            .expect("appends")
            .to_line()
            .expect("line");
        // serde_json keeps the last of two equal keys, so the hash would still
        // verify while other readers show the forged first one.
        let forged = line.replacen("{", r#"{"connection":"forged-db","#, 1);
        let err = verify_lines([forged.as_str()].into_iter(), &[]).expect_err("duplicate");
        assert_eq!((err.line, err.kind), (1, VerifyErrorKind::Malformed));
        assert!(verify_lines([line.as_str()].into_iter(), &[]).is_ok());
    }

    #[test]
    fn unsupported_version_is_malformed() {
        // A well-hashed event of a future schema.
        let mut v: Value = serde_json::from_str(
            &AuditChain::new("s")
                .append(draft(AuditKind::Statement))
                .expect("appends")
                .to_line()
                .expect("line"),
        )
        .expect("json");
        v["v"] = json!(2);
        let map = v.as_object_mut().expect("object");
        map.remove("hash");
        let hash = chain_hash(GENESIS, canonical_json(&v));
        v["hash"] = json!(hash);
        let line = v.to_string();
        let err = verify_lines([line.as_str()].into_iter(), &[]).expect_err("v2");
        assert_eq!(err.kind, VerifyErrorKind::Malformed);
        assert!(err.detail.contains("schema version 2"), "{err}");
    }

    #[test]
    fn a_later_segment_verifies_from_its_checkpoint() {
        let mut chain = AuditChain::new("s");
        let events: Vec<AuditEvent> = (0..5)
            .map(|_| chain.append(draft(AuditKind::Statement)).expect("appends"))
            .collect();
        let lines: Vec<String> = events.iter().map(|e| e.to_line().expect("line")).collect();
        let anchor = ChainHead {
            stream: "s".into(),
            seq: 2,
            hash: events[1].hash.clone(),
        };
        let early = ChainHead {
            stream: "s".into(),
            seq: 1,
            hash: events[0].hash.clone(),
        };
        let tail = lines[2..].iter().map(String::as_str);
        let report =
            verify_lines(tail, &[early.clone(), anchor.clone(), chain.head()]).expect("verifies");
        assert_eq!(report.events, 3);
        assert_eq!(report.checkpoints_matched, 2);
        assert_eq!(report.checkpoints_before_log, 1);
        // Without the anchor, the missing start is a drop.
        let err = verify_lines(lines[2..].iter().map(String::as_str), &[]).expect_err("no anchor");
        assert_eq!((err.line, err.kind), (1, VerifyErrorKind::Dropped));
    }

    #[test]
    fn incremental_verifier_keeps_its_first_error() {
        let mut chain = AuditChain::new("s");
        let lines: Vec<String> = (0..3)
            .map(|_| {
                chain
                    .append(draft(AuditKind::Statement))
                    .expect("appends")
                    .to_line()
                    .expect("line")
            })
            .collect();
        // A gap is only an error once no later line explains it.
        let mut v = ChainVerifier::new(&[]);
        v.push_line(&lines[0]).expect("seq 1");
        v.push_line(&lines[2])
            .expect("seq 3: a gap, maybe a reordering");
        let err = v.push_line(&lines[1]).expect_err("seq 2 after seq 3");
        assert_eq!((err.line, err.kind), (3, VerifyErrorKind::Reordered));
        assert_eq!(v.push_line(&lines[1]), Err(err.clone()));
        assert_eq!(v.finish(), Err(err));
        let mut v = ChainVerifier::new(&[]);
        v.push_line(&lines[0]).expect("seq 1");
        v.push_line(&lines[2]).expect("seq 3");
        let err = v.finish().expect_err("seq 2 never came");
        assert_eq!((err.line, err.kind), (2, VerifyErrorKind::Dropped));
    }
}
