//! `kubectl sluice audit verify`: prove an audit log was not edited, reordered,
//! dropped from or truncated, and say how much of it checkpoints anchor.
//!
//! The input may be a container's merged log (`kubectl logs POD -c
//! sluice-sidecar`: the audit events on stdout and the sidecar's own logs on
//! stderr, interleaved). Audit events are recognised by their chain fields;
//! every other line is reported (how many, which lines), never silently
//! skipped, and a line that looks like an audit event but is broken fails.
//!
//! A hash chain proves a log consistent, not complete: whoever can rewrite
//! the file can cut its newest events or recompute every hash. Checkpoints
//! (signed chain heads) close that gap up to their sequence number, and only
//! if they are authentic: with `--jwks FILE` or `--jwks-from-cluster` each
//! must carry a signature (a compact ES256 JWS over its stream, sequence and
//! hash) by one of those keys. The report then says, per stream, which
//! ranges are anchored by which checkpoint and what is not proven. Checkpoints
//! come from `--checkpoints` (the operator's history, `kubectl sluice audit
//! checkpoints`, or a standalone sidecar's checkpoint file) and from the
//! receipts the run-mode sidecar logs (`audit checkpoint signed by the
//! operator`) when they are in the input.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

use serde::Deserialize;
use serde_json::{Value, json};
use sluice_policy::audit::{ChainHead, ChainVerifier, VerifyErrorKind, VerifyReport};

/// Arguments of `audit verify`.
#[derive(clap::Args)]
pub struct VerifyArgs {
    /// The audit log (`-` for stdin): the sidecar's JSON lines, or its
    /// container's merged log as `kubectl logs` prints it (lines that are not
    /// audit events are counted and reported).
    file: PathBuf,
    /// Checkpoints to check the log against: JSON lines, each a signed
    /// checkpoint as the operator's history (`kubectl sluice audit
    /// checkpoints`), Connection status or a standalone sidecar's checkpoint
    /// file hold it (`{"stream":…,"sequence":…,"hash":…,"signature":…,"keyId":…}`),
    /// or a head recorded elsewhere (`{"stream":…,"seq":…,"hash":…}`).
    #[arg(long)]
    checkpoints: Option<PathBuf>,
    /// The public keys checkpoints must be signed by (a JSON Web Key Set: the
    /// operator's, from `kubectl sluice audit jwks`, or a standalone sidecar's
    /// `KEY.jwks.json`). Without it (or --jwks-from-cluster) checkpoints are
    /// not authenticated.
    #[arg(long, conflicts_with = "jwks_from_cluster")]
    jwks: Option<PathBuf>,
    /// Read the operator's published checkpoint keys from the cluster of the
    /// current kubeconfig context (ConfigMap `sluice-checkpoint-keys` in
    /// --operator-namespace). Off by default, so that a verification never
    /// depends on which cluster happens to be configured.
    #[arg(long)]
    jwks_from_cluster: bool,
    /// The operator's namespace (for --jwks-from-cluster).
    #[arg(long, default_value = crate::checkpoints::DEFAULT_OPERATOR_NAMESPACE)]
    operator_namespace: String,
    /// The kubeconfig (for --jwks-from-cluster; default: `KUBECONFIG`, else ~/.kube/config).
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// The kubeconfig context (for --jwks-from-cluster).
    #[arg(long)]
    context: Option<String>,
    /// Fail when a checkpoint names a stream that has no event in the log. By
    /// default such checkpoints are listed: a Connection's history holds the
    /// streams of every pod, a pod's log only its own.
    #[arg(long)]
    require_every_stream: bool,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

/// Why verification could not be attempted (exit 2).
#[derive(Debug, thiserror::Error)]
pub enum VerifyInputError {
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The path.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A checkpoint line is not a chain head.
    #[error(
        "{path} line {line}: not a checkpoint ({source}); expected {{\"stream\":…,\"sequence\":…,\"hash\":…,\"signature\":…,\"keyId\":…}} or {{\"stream\":…,\"seq\":…,\"hash\":…}}"
    )]
    Checkpoint {
        /// The file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// Parse error.
        #[source]
        source: serde_json::Error,
    },
    /// The JWKS is not a JSON Web Key Set.
    #[error(
        "{path}: not a JSON Web Key Set ({source}); give the operator's keys (kubectl sluice audit jwks) or a standalone sidecar's KEY.jwks.json"
    )]
    Jwks {
        /// The file.
        path: PathBuf,
        /// Parse error.
        #[source]
        source: serde_json::Error,
    },
    /// The keys could not be read from the cluster.
    #[error(transparent)]
    Cluster(#[from] crate::checkpoints::CheckpointsError),
}

// === the input ===

/// The chain fields that make a line an audit event. The sidecar's own log
/// lines (tracing's JSON: `timestamp`, `level`, `fields`, `target`, spans)
/// carry none of them at the top level.
const CHAIN_FIELDS: [&str; 3] = ["hash", "prev", "seq"];

/// The message the run-mode sidecar logs a signed receipt under (sidecar/src/run.rs).
const RECEIPT_MESSAGE: &str = "audit checkpoint signed by the operator";

/// What one input line is.
enum Line {
    Blank,
    /// An audit event (or something that claims to be one; the chain
    /// verifier decides), with its stream and seq when they could be read.
    Audit(Option<(String, u64)>),
    /// A log line carrying a signed checkpoint receipt.
    Receipt(Box<CheckpointLine>),
    /// A JSON line that is not an audit event (a JSON log line).
    JsonOther,
    /// A line that is not JSON.
    TextOther,
}

fn classify(raw: &str) -> Line {
    let trimmed = raw.trim();
    if trimmed.is_empty() {
        return Line::Blank;
    }
    match serde_json::from_str::<Value>(trimmed) {
        Ok(Value::Object(map)) => {
            if CHAIN_FIELDS.iter().any(|f| map.contains_key(*f)) {
                let id = map
                    .get("stream")
                    .and_then(Value::as_str)
                    .zip(map.get("seq").and_then(Value::as_u64))
                    .map(|(s, q)| (s.to_string(), q));
                return Line::Audit(id);
            }
            let fields = map.get("fields");
            let receipt = fields
                .filter(|f| f.get("message").and_then(Value::as_str) == Some(RECEIPT_MESSAGE))
                .and_then(|f| f.get("checkpoint")?.as_str())
                .and_then(|c| serde_json::from_str::<CheckpointLine>(c).ok());
            match receipt {
                Some(c) => Line::Receipt(Box::new(c)),
                None => Line::JsonOther,
            }
        }
        Ok(_) => Line::JsonOther,
        // Not JSON: a text log line, unless it carries a chain field the way
        // an audit event writes it (a torn or mangled event must fail).
        Err(_) => {
            if ["\"hash\":\"", "\"prev\":\"", "\"seq\":"]
                .iter()
                .any(|m| trimmed.contains(m))
            {
                Line::Audit(None)
            } else {
                Line::TextOther
            }
        }
    }
}

/// Lines that are not audit events: counted, and the first few named.
#[derive(Default)]
struct OtherLines {
    json: usize,
    text: usize,
    receipts: usize,
    first: Vec<usize>,
}

/// How many line numbers of other lines the report names.
const OTHER_LINES_NAMED: usize = 5;

impl OtherLines {
    fn add(&mut self, line: usize) {
        if self.first.len() < OTHER_LINES_NAMED {
            self.first.push(line);
        }
    }

    fn count(&self) -> usize {
        self.json + self.text + self.receipts
    }
}

// === checkpoints ===

/// A line of a checkpoints file: a signed checkpoint, or a bare head.
#[derive(Deserialize, Clone)]
#[serde(untagged)]
enum CheckpointLine {
    Signed(SignedCheckpoint),
    Head(ChainHead),
}

/// A signed checkpoint as the operator (history, status, receipts) and the
/// standalone sidecar write it.
#[derive(Deserialize, Clone)]
#[serde(rename_all = "camelCase")]
struct SignedCheckpoint {
    stream: String,
    sequence: u64,
    hash: String,
    signature: String,
    key_id: String,
}

/// What a checkpoint's signature covers. The operator's payload also names
/// the identity and pod whose stream it is, the stream's previous signed
/// head and when it was signed; a standalone sidecar's the stream and time.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SignedPayload {
    stream: String,
    sequence: u64,
    hash: String,
    #[serde(default)]
    namespace: Option<String>,
    #[serde(default)]
    service_account: Option<String>,
    #[serde(default)]
    pod: Option<String>,
    #[serde(default)]
    previous: Option<u64>,
    #[serde(default)]
    iat: Option<i64>,
}

/// A checkpoint ready to use: where it came from, what it says, and what
/// its signature proved.
struct Checkpoint {
    /// `FILE line N`, or `input line N` for a receipt in the log.
    source: String,
    head: ChainHead,
    key_id: Option<String>,
    /// When it was signed (Unix seconds), from an authenticated payload.
    signed_at: Option<i64>,
    /// The stream's previous signed head, from an authenticated payload.
    previous: Option<u64>,
    authenticated: bool,
}

/// The algorithm checkpoints are signed with (ES256); pinned, never read from the token.
const ALGORITHM: jsonwebtoken::Algorithm = jsonwebtoken::Algorithm::ES256;

/// Checks a checkpoint's signature against `jwks`: by the key its `keyId`
/// names (and its JWS header too), with ES256, over exactly its stream,
/// sequence and hash; for the operator's, of a stream of the identity and
/// pod it names. Returns the signed payload; `Err` says why not.
fn authenticate(
    c: &SignedCheckpoint,
    jwks: &jsonwebtoken::jwk::JwkSet,
) -> Result<SignedPayload, String> {
    let header = jsonwebtoken::decode_header(&c.signature)
        .map_err(|e| format!("the signature is not a JWS ({e})"))?;
    if header.kid.as_deref() != Some(c.key_id.as_str()) {
        return Err(format!(
            "the signature names key {:?}, the checkpoint key {:?}",
            header.kid, c.key_id
        ));
    }
    let jwk = jwks.find(&c.key_id).ok_or_else(|| {
        format!(
            "key {:?} is not in the JWKS (not the signer's, or rotated out of it)",
            c.key_id
        )
    })?;
    let key = jsonwebtoken::DecodingKey::from_jwk(jwk)
        .map_err(|e| format!("key {:?} of the JWKS is unusable ({e})", c.key_id))?;
    let mut validation = jsonwebtoken::Validation::new(ALGORITHM);
    validation.validate_exp = false;
    validation.validate_aud = false;
    validation.required_spec_claims.clear();
    let payload = jsonwebtoken::decode::<SignedPayload>(&c.signature, &key, &validation)
        .map_err(|e| format!("the signature does not verify ({e})"))?
        .claims;
    if (
        payload.stream.as_str(),
        payload.sequence,
        payload.hash.as_str(),
    ) != (c.stream.as_str(), c.sequence, c.hash.as_str())
    {
        return Err(format!(
            "the signature covers stream {} seq {} hash {}, not this checkpoint's (a checkpoint of another stream or head)",
            payload.stream, payload.sequence, payload.hash
        ));
    }
    if let (Some(ns), Some(sa), Some(pod)) =
        (&payload.namespace, &payload.service_account, &payload.pod)
    {
        let prefix = sluice_policy::wire::stream_prefix(ns, sa, pod);
        if !payload.stream.starts_with(&prefix) {
            return Err(format!(
                "it was signed for {ns}/{sa} in pod {pod}, whose streams start with {prefix:?}, not for stream {}",
                payload.stream
            ));
        }
    }
    if let Some(previous) = payload.previous
        && previous >= payload.sequence
    {
        return Err(format!(
            "it names seq {previous} as the stream's previous signed head, not before its own seq {}",
            payload.sequence
        ));
    }
    Ok(payload)
}

/// Turns a parsed line into a checkpoint, authenticating it when keys are given.
fn checkpoint(
    parsed: CheckpointLine,
    source: String,
    jwks: Option<&jsonwebtoken::jwk::JwkSet>,
) -> Result<Checkpoint, Failure> {
    let forged = |why: String| Failure {
        kind: "checkpointForged",
        line: None,
        stream: None,
        detail: format!("{source}: checkpoint not authentic: {why}"),
    };
    match (parsed, jwks) {
        (CheckpointLine::Signed(c), Some(jwks)) => {
            let payload = authenticate(&c, jwks).map_err(forged)?;
            Ok(Checkpoint {
                source,
                head: ChainHead {
                    stream: c.stream,
                    seq: c.sequence,
                    hash: c.hash,
                },
                key_id: Some(c.key_id),
                signed_at: payload.iat,
                previous: payload.previous,
                authenticated: true,
            })
        }
        (CheckpointLine::Signed(c), None) => Ok(Checkpoint {
            source,
            head: ChainHead {
                stream: c.stream,
                seq: c.sequence,
                hash: c.hash,
            },
            key_id: Some(c.key_id),
            signed_at: None,
            previous: None,
            authenticated: false,
        }),
        (CheckpointLine::Head(_), Some(_)) => Err(forged(
            "it carries no signature, and the keys given ask for signed checkpoints".into(),
        )),
        (CheckpointLine::Head(h), None) => Ok(Checkpoint {
            source,
            head: h,
            key_id: None,
            signed_at: None,
            previous: None,
            authenticated: false,
        }),
    }
}

/// Checks the checkpoints of each stream against each other: two for one
/// sequence number must agree (else the stream was rewritten between them),
/// and, by signing time, a stream's checkpoints only move forward (else
/// someone got a rewound head signed, or mixed in another chain's).
fn consistent(checkpoints: &[Checkpoint]) -> Result<(), Failure> {
    let mut by_stream: BTreeMap<&str, Vec<&Checkpoint>> = BTreeMap::new();
    for c in checkpoints {
        by_stream.entry(&c.head.stream).or_default().push(c);
    }
    for (stream, mut list) in by_stream {
        list.sort_by_key(|c| c.head.seq);
        for pair in list.windows(2) {
            if pair[0].head.seq == pair[1].head.seq && pair[0].head.hash != pair[1].head.hash {
                return Err(Failure {
                    kind: "checkpointFork",
                    line: None,
                    stream: Some(stream.to_string()),
                    detail: format!(
                        "{} and {} both cover seq {} of stream {stream} with different hashes: \
                         the stream was rewritten between them",
                        pair[0].source, pair[1].source, pair[0].head.seq
                    ),
                });
            }
        }
        let mut signed: Vec<&&Checkpoint> = list.iter().filter(|c| c.signed_at.is_some()).collect();
        signed.sort_by_key(|c| (c.signed_at, c.head.seq));
        for pair in signed.windows(2) {
            if pair[1].head.seq < pair[0].head.seq {
                return Err(Failure {
                    kind: "checkpointRewound",
                    line: None,
                    stream: Some(stream.to_string()),
                    detail: format!(
                        "{} (seq {}) was signed after {} (seq {}): stream {stream} was rewound",
                        pair[1].source, pair[1].head.seq, pair[0].source, pair[0].head.seq
                    ),
                });
            }
        }
    }
    Ok(())
}

// === the report ===

/// Why the log fails verification (exit 1).
pub struct Failure {
    kind: &'static str,
    /// The input line, when the failure is the log's.
    line: Option<usize>,
    stream: Option<String>,
    detail: String,
}

/// One stream of the log: its range, and which parts checkpoints anchor.
struct StreamReport {
    stream: String,
    first_seq: u64,
    last_seq: u64,
    events: u64,
    /// (from, to, checkpoint index) in seq order.
    anchored: Vec<(u64, u64, usize)>,
    /// The range no checkpoint covers, at the end.
    unanchored: Option<(u64, u64)>,
}

fn stream_reports(
    report: &VerifyReport,
    first_seq: &BTreeMap<String, u64>,
    events: &BTreeMap<String, u64>,
    checkpoints: &[Checkpoint],
) -> Vec<StreamReport> {
    report
        .heads
        .iter()
        .map(|h| {
            let first = first_seq.get(&h.stream).copied().unwrap_or(1);
            let mut mine: Vec<(u64, usize)> = checkpoints
                .iter()
                .enumerate()
                .filter(|(_, c)| c.head.stream == h.stream && c.head.seq >= first)
                .map(|(i, c)| (c.head.seq, i))
                .collect();
            mine.sort();
            mine.dedup_by_key(|(seq, _)| *seq);
            let mut from = first;
            let mut anchored = Vec::new();
            for (seq, i) in mine {
                if seq > h.seq {
                    break;
                }
                anchored.push((from, seq, i));
                from = seq + 1;
            }
            StreamReport {
                stream: h.stream.clone(),
                first_seq: first,
                last_seq: h.seq,
                events: events.get(&h.stream).copied().unwrap_or(0),
                anchored,
                unanchored: (from <= h.seq).then_some((from, h.seq)),
            }
        })
        .collect()
}

fn signed_at_text(at: Option<i64>) -> String {
    at.and_then(|s| k8s_openapi::jiff::Timestamp::from_second(s).ok())
        .map(|t| format!(", signed {t}"))
        .unwrap_or_default()
}

fn read(path: &PathBuf) -> Result<String, VerifyInputError> {
    let err = |source| VerifyInputError::Read {
        path: path.clone(),
        source,
    };
    if path.as_os_str() == "-" {
        let mut text = String::new();
        std::io::stdin().read_to_string(&mut text).map_err(err)?;
        Ok(text)
    } else {
        std::fs::read_to_string(path).map_err(err)
    }
}

fn load_jwks(args: &VerifyArgs) -> Result<Option<jsonwebtoken::jwk::JwkSet>, VerifyInputError> {
    if args.jwks_from_cluster {
        let cluster = crate::approvals::ClusterArgs {
            namespace: None,
            context: args.context.clone(),
            kubeconfig: args.kubeconfig.clone(),
            as_user: None,
            as_group: Vec::new(),
            token: None,
        };
        return Ok(Some(crate::checkpoints::cluster_jwks(
            &cluster,
            &args.operator_namespace,
        )?));
    }
    match &args.jwks {
        None => Ok(None),
        Some(path) => serde_json::from_str::<jsonwebtoken::jwk::JwkSet>(&read(path)?)
            .map(Some)
            .map_err(|source| VerifyInputError::Jwks {
                path: path.clone(),
                source,
            }),
    }
}

/// Verifies the log: exit 0 and a report when intact; exit 1 naming the
/// first problem when not.
pub fn run(args: &VerifyArgs) -> Result<ExitCode, VerifyInputError> {
    let text = read(&args.file)?;
    let jwks = load_jwks(args)?;
    let checkpoints = match &args.checkpoints {
        Some(path) => Some((path.clone(), read(path)?)),
        None => None,
    };
    let options = Options {
        checkpoints,
        jwks: jwks.as_ref(),
        require_every_stream: args.require_every_stream,
    };
    match verify(&text, &options)? {
        Ok(v) => {
            if args.json {
                println!("{}", v.to_json());
            } else {
                v.print_text();
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(f) => {
            if args.json {
                println!("{}", f.to_json());
            }
            match f.line {
                Some(line) => eprintln!("FAILED: audit log line {line}: {}: {}", f.kind, f.detail),
                None => eprintln!("FAILED: {}: {}", f.kind, f.detail),
            }
            Ok(ExitCode::from(1))
        }
    }
}

/// What to verify a log against.
pub struct Options<'a> {
    /// A checkpoints file: its path (for messages) and text.
    pub checkpoints: Option<(PathBuf, String)>,
    /// Keys checkpoints must be signed by.
    pub jwks: Option<&'a jsonwebtoken::jwk::JwkSet>,
    /// Fail on checkpoints of streams with no event in the log.
    pub require_every_stream: bool,
}

/// A log that verified, and what its report says.
pub struct Verified {
    report: VerifyReport,
    streams: Vec<StreamReport>,
    checkpoints: Vec<Checkpoint>,
    absent: Vec<usize>,
    other: OtherLines,
    authenticated: bool,
}

/// Verifies `text` (an audit log, or a merged container log): `Ok(Ok(_))`
/// when intact, `Ok(Err(failure))` when not, `Err` when the checkpoints
/// cannot be read at all.
pub fn verify(
    text: &str,
    options: &Options<'_>,
) -> Result<Result<Verified, Failure>, VerifyInputError> {
    let jwks = options.jwks;
    // The input, classified line by line.
    let mut kinds = Vec::new();
    let mut other = OtherLines::default();
    let mut first_seq: BTreeMap<String, u64> = BTreeMap::new();
    let mut events: BTreeMap<String, u64> = BTreeMap::new();
    let mut checkpoints = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = classify(raw);
        match &line {
            Line::Audit(Some((stream, seq))) => {
                let first = first_seq.entry(stream.clone()).or_insert(*seq);
                *first = (*first).min(*seq);
                *events.entry(stream.clone()).or_default() += 1;
            }
            Line::Audit(None) | Line::Blank => {}
            Line::Receipt(c) => {
                other.receipts += 1;
                other.add(i + 1);
                match checkpoint((**c).clone(), format!("input line {}", i + 1), jwks) {
                    Ok(c) => checkpoints.push(c),
                    Err(f) => return Ok(Err(f)),
                }
            }
            Line::JsonOther => {
                other.json += 1;
                other.add(i + 1);
            }
            Line::TextOther => {
                other.text += 1;
                other.add(i + 1);
            }
        }
        kinds.push(line);
    }
    if let Some((path, text)) = &options.checkpoints {
        for (i, l) in text.lines().enumerate() {
            if l.trim().is_empty() {
                continue;
            }
            let parsed = serde_json::from_str::<CheckpointLine>(l).map_err(|source| {
                VerifyInputError::Checkpoint {
                    path: path.clone(),
                    line: i + 1,
                    source,
                }
            })?;
            match checkpoint(parsed, format!("{} line {}", path.display(), i + 1), jwks) {
                Ok(c) => checkpoints.push(c),
                Err(f) => return Ok(Err(f)),
            }
        }
    }
    if let Err(f) = consistent(&checkpoints) {
        return Ok(Err(f));
    }

    // Checkpoints of streams the log does not hold are listed, not used
    // (unless every stream is required).
    let (present, absent): (Vec<usize>, Vec<usize>) =
        (0..checkpoints.len()).partition(|i| first_seq.contains_key(&checkpoints[*i].head.stream));
    if options.require_every_stream
        && let Some(i) = absent.first()
    {
        let c = &checkpoints[*i];
        return Ok(Err(Failure {
            kind: "truncated",
            line: Some(kinds.len() + 1),
            stream: Some(c.head.stream.clone()),
            detail: format!(
                "stream {} has no event in the log but {} covers its seq {}",
                c.head.stream, c.source, c.head.seq
            ),
        }));
    }
    let heads: BTreeSet<ChainHead> = present
        .iter()
        .map(|i| checkpoints[*i].head.clone())
        .collect();
    let heads: Vec<ChainHead> = heads.into_iter().collect();

    // The chain, on the audit lines only (the others count as blank, so
    // line numbers stay the input's).
    let mut verifier = ChainVerifier::new(&heads);
    let mut result = Ok(());
    for (raw, kind) in text.lines().zip(&kinds) {
        let fed = if matches!(kind, Line::Audit(_)) {
            raw
        } else {
            ""
        };
        if let Err(e) = verifier.push_line(fed) {
            result = Err(e);
            break;
        }
    }
    let result = result.and_then(|()| verifier.finish());
    let report = match result {
        Ok(report) => report,
        Err(mut e) => {
            // A last line cut mid-way (no newline, not JSON) is a truncation, not an edit.
            if e.kind == VerifyErrorKind::Malformed
                && e.line == kinds.len()
                && !text.ends_with('\n')
            {
                e.kind = VerifyErrorKind::Truncated;
                e.detail = format!("the last line is incomplete ({})", e.detail);
            }
            return Ok(Err(Failure {
                kind: e.kind.as_str(),
                line: Some(e.line),
                stream: e.stream,
                detail: e.detail,
            }));
        }
    };
    if report.events == 0 {
        return Ok(Err(Failure {
            kind: "noEvents",
            line: None,
            stream: None,
            detail: format!(
                "no audit event in the input ({} line(s), {} of them other output): nothing was verified; \
                 is this the sidecar's log (kubectl logs POD -c sluice-sidecar)?",
                kinds.len(),
                other.count()
            ),
        }));
    }
    let streams = stream_reports(&report, &first_seq, &events, &checkpoints);
    Ok(Ok(Verified {
        report,
        streams,
        checkpoints,
        absent,
        other,
        authenticated: jwks.is_some(),
    }))
}

impl Failure {
    /// The failure as the JSON report prints it.
    pub fn to_json(&self) -> Value {
        json!({"ok": false, "line": self.line, "kind": self.kind,
               "stream": self.stream, "detail": self.detail})
    }
}

impl Verified {
    /// The report as JSON (`audit verify --json`).
    pub fn to_json(&self) -> Value {
        let Verified {
            report,
            streams,
            checkpoints,
            absent,
            other,
            authenticated,
        } = self;
        let authenticated = *authenticated;
        let cp = |i: usize| {
            let c = &checkpoints[i];
            json!({"source": c.source, "stream": c.head.stream, "seq": c.head.seq,
               "keyId": c.key_id, "signedAt": c.signed_at, "previous": c.previous,
               "authenticated": c.authenticated})
        };
        let streams: Vec<Value> = streams
            .iter()
            .map(|s| {
                json!({
                    "stream": s.stream, "firstSeq": s.first_seq, "lastSeq": s.last_seq,
                    "events": s.events,
                    "anchored": s.anchored.iter().map(|(from, to, i)| json!({
                        "from": from, "to": to, "checkpoint": cp(*i)})).collect::<Vec<_>>(),
                    "unanchored": s.unanchored.map(|(from, to)| json!({"from": from, "to": to})),
                })
            })
            .collect();
        let heads: Vec<_> = report
            .heads
            .iter()
            .map(|h| json!({"stream": h.stream, "seq": h.seq, "hash": h.hash}))
            .collect();
        json!({
            "ok": true, "events": report.events, "streams": report.streams,
            "checkpointsMatched": report.checkpoints_matched, "heads": heads,
            "checkpointsAuthenticated": authenticated && !checkpoints.is_empty(),
            "outages": report.outages,
            "anchoring": streams,
            "checkpointsWithoutEvents": absent.iter().map(|i| cp(*i)).collect::<Vec<_>>(),
            "otherLines": {"count": other.count(), "json": other.json, "text": other.text,
                           "receipts": other.receipts, "first": other.first},
        })
    }

    /// Prints the report as text.
    pub fn print_text(&self) {
        let Verified {
            report,
            streams,
            checkpoints,
            absent,
            other,
            authenticated,
        } = self;
        let authenticated = *authenticated;
        let absent_streams: BTreeSet<&str> = absent
            .iter()
            .map(|i| checkpoints[*i].head.stream.as_str())
            .collect();
        let used = checkpoints.len() - absent.len();
        println!(
            "OK: {} events in {} stream(s) verified; {} of {} checkpoint(s) matched{}",
            report.events,
            report.streams,
            report.checkpoints_matched,
            used,
            match (authenticated, checkpoints.is_empty()) {
                (_, true) => "",
                (true, false) => ", their signatures verified",
                (false, false) => " (not authenticated: give --jwks to check their signatures)",
            }
        );
        for s in streams {
            println!(
                "stream {}: seq {}..{} ({} event(s))",
                s.stream, s.first_seq, s.last_seq, s.events
            );
            for (from, to, i) in &s.anchored {
                let c = &checkpoints[*i];
                println!(
                    "  seq {from}..{to} anchored by the checkpoint at seq {} ({}{}{}){}",
                    c.head.seq,
                    c.source,
                    c.key_id
                        .as_deref()
                        .map(|k| format!(", key {k}"))
                        .unwrap_or_default(),
                    signed_at_text(c.signed_at),
                    if c.authenticated {
                        ""
                    } else {
                        " — NOT authenticated"
                    }
                );
            }
            if let Some((from, to)) = s.unanchored {
                println!(
                    "  seq {from}..{to} NOT anchored: no checkpoint covers them, so events cut from \
                 the end, or the chain recomputed from seq {from} on, would not be detected"
                );
            }
        }
        if !absent.is_empty() {
            println!(
                "note: {} checkpoint(s) of {} stream(s) with no event in this log were not used \
             (other pods' or earlier containers' streams of the Connection; if this log should \
             hold them, their events are missing — pass --require-every-stream to fail): {}",
                absent.len(),
                absent_streams.len(),
                absent_streams
                    .iter()
                    .copied()
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        for o in &report.outages {
            let dropped = match o.outage.dropped {
                0 => String::new(),
                n => format!(", {n} event(s) could not be kept and are not in the log"),
            };
            println!(
                "note: line {}: recorded audit outage in stream {}: the sink failed from {} \
             to {} ({} failed write(s): {}){dropped}; seq {} to {} were written late, \
             intact; the statements, sessions and approvals they record were refused \
             and did not run",
                o.line,
                o.stream,
                o.outage.since,
                o.until,
                o.outage.failed_writes,
                o.outage.error,
                o.outage.from_seq,
                o.outage.to_seq
            );
        }
        if other.count() > 0 {
            let lines: Vec<String> = other.first.iter().map(ToString::to_string).collect();
            println!(
                "note: {} line(s) are not audit events and were not verified ({} JSON log line(s), \
             {} text line(s), {} checkpoint receipt(s)); first at line(s) {}{}",
                other.count(),
                other.json,
                other.text,
                other.receipts,
                lines.join(", "),
                if other.count() > other.first.len() {
                    ", …"
                } else {
                    ""
                }
            );
        }
        if checkpoints.is_empty() {
            println!(
                "note: no checkpoints given, so events cut from the end of the log, or a chain \
             recomputed after an edit, cannot be detected"
            );
        }
    }
}
