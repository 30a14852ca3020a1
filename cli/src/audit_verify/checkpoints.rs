//! Checkpoints: parsed from the checkpoints file or a receipt, authenticated
//! against the JWKS, and consistent with each other.

use super::failure::Failure;
use serde::Deserialize;
use sluice_policy::audit::ChainHead;
use std::collections::BTreeMap;

/// A line of a checkpoints file: a signed checkpoint, or a bare head.
#[derive(Deserialize, Clone)]
#[serde(untagged)]
pub(super) enum CheckpointLine {
    Signed(SignedCheckpoint),
    Head(ChainHead),
}

/// A signed checkpoint as the operator (history, status, receipts) and the
/// standalone sidecar write it.
#[derive(Deserialize, Clone)]
#[serde(rename_all = "camelCase")]
pub(super) struct SignedCheckpoint {
    pub(super) stream: String,
    pub(super) sequence: u64,
    pub(super) hash: String,
    pub(super) signature: String,
    pub(super) key_id: String,
}

/// What a checkpoint's signature covers. The operator's payload also names
/// the identity and pod whose stream it is, the stream's previous signed
/// head and when it was signed; a standalone sidecar's the stream and time.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SignedPayload {
    pub(super) stream: String,
    pub(super) sequence: u64,
    pub(super) hash: String,
    #[serde(default)]
    pub(super) namespace: Option<String>,
    #[serde(default)]
    pub(super) service_account: Option<String>,
    #[serde(default)]
    pub(super) pod: Option<String>,
    #[serde(default)]
    pub(super) previous: Option<u64>,
    #[serde(default)]
    pub(super) iat: Option<i64>,
}

/// A checkpoint ready to use: where it came from, what it says, and what
/// its signature proved.
pub(super) struct Checkpoint {
    /// `FILE line N`, or `input line N` for a receipt in the log.
    pub(super) source: String,
    pub(super) head: ChainHead,
    pub(super) key_id: Option<String>,
    /// When it was signed (Unix seconds), from an authenticated payload.
    pub(super) signed_at: Option<i64>,
    /// The stream's previous signed head, from an authenticated payload.
    pub(super) previous: Option<u64>,
    pub(super) authenticated: bool,
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
pub(super) fn checkpoint(
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
pub(super) fn consistent(checkpoints: &[Checkpoint]) -> Result<(), Failure> {
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
