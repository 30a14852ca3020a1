//! The hash chain: appending events to one stream, and pre-rendered event pieces.

#[cfg(debug_assertions)]
use super::canonical::check_generic;
use super::canonical::{Slot, put_value, splice_hash};
use super::event::{
    AuditCommand, AuditDecision, AuditEvent, AuditEventDraft, AuditIdentity, AuditKind,
    AuditOutage, AuditOutcome, AuditPolicy,
};
use super::{AuditError, GENESIS, SCHEMA_VERSION};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sluice_crds::AuditCheckpoint;

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
    pub(super) fn new<T: Serialize + ?Sized>(
        slot: Slot,
        key: &str,
        value: &T,
    ) -> Result<Self, AuditError> {
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

    /// Appends the `command`, `connection` and `decision` fields of an
    /// event to `out`, as [`AuditChain::append_head`] takes them: for an
    /// event sealed later than its fields are known (batched mode holds a
    /// statement's decision until its result comes, to write one event).
    /// Fails, appending nothing, when a piece is given for another field.
    pub fn write_head(
        command: Option<&Rendered>,
        connection: Option<&Rendered>,
        decision: Option<&Rendered>,
        out: &mut Vec<u8>,
    ) -> Result<(), AuditError> {
        let placed = [
            (command, Slot::Command),
            (connection, Slot::Connection),
            (decision, Slot::Decision),
        ];
        if placed
            .iter()
            .any(|(r, slot)| r.is_some_and(|r| r.slot != *slot))
        {
            return Err(AuditError::misplaced());
        }
        for r in [command, connection, decision].into_iter().flatten() {
            out.extend_from_slice(&r.bytes);
        }
        Ok(())
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
        let event = self.next_event(draft);
        self.seal(event, line)
    }

    /// Hashes `event` (numbered by [`AuditChain::next_event`]) onto the chain,
    /// appending its line and a newline to `line` when given. The chain
    /// advances only when this succeeds.
    fn seal(
        &mut self,
        mut event: AuditEvent,
        line: Option<&mut Vec<u8>>,
    ) -> Result<AuditEvent, AuditError> {
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
        self.seal(event, Some(line))
    }

    /// Appends a `policy` event (see [`AuditPolicy`]) at `time` and its
    /// line, as [`AuditChain::append_line`] does.
    pub fn append_policy_line(
        &mut self,
        time: &str,
        policy: AuditPolicy,
        line: &mut Vec<u8>,
    ) -> Result<AuditEvent, AuditError> {
        let mut event = self.next_event(AuditEventDraft::new(time, AuditKind::Policy));
        event.policy = Some(policy);
        self.seal(event, Some(line))
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
        self.append_pieces_after(None, pieces, line)
    }

    /// [`AuditChain::append_pieces`] with the `command`, `connection` and
    /// `decision` fields given as `head`, the bytes [`Rendered::write_head`]
    /// wrote (`pieces` must then leave those three out).
    pub fn append_head(
        &mut self,
        head: &[u8],
        pieces: &EventPieces<'_>,
        line: &mut Vec<u8>,
    ) -> Result<Appended, AuditError> {
        if pieces.command.is_some() || pieces.connection.is_some() || pieces.decision.is_some() {
            return Err(AuditError::misplaced());
        }
        self.append_pieces_after(Some(head), pieces, line)
    }

    fn append_pieces_after(
        &mut self,
        head: Option<&[u8]>,
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
        if let Some(head) = head {
            canonical.extend_from_slice(head);
        }
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
            policy: None,
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

impl AuditEvent {
    /// Whether `hash` is the chain hash of this event's content after `prev`
    /// (a receiver of events checks each before vouching for a head).
    pub fn hash_matches(&self) -> bool {
        self.canonical_json()
            .is_ok_and(|c| chain_hash(&self.prev, c) == self.hash)
    }
}

/// `hex(sha256(prev_bytes || canonical))`. A `prev` that is not 64 hex digits
/// is hashed as its text, so it can never collide with a well-formed one.
pub(super) fn chain_hash(prev: &str, canonical: impl AsRef<[u8]>) -> String {
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

pub(super) fn decode_hash(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64 || s.bytes().any(|b| b.is_ascii_uppercase()) {
        return None;
    }
    let mut out = [0u8; 32];
    hex::decode_to_slice(s, &mut out).ok()?;
    Some(out)
}
