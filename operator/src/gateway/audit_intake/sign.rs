//! Chain heads become signed checkpoints: only heads of the caller's own
//! streams, on Connections its identity is bound to, that are events of the
//! batch and move their stream forward from its last head (this replica's
//! memory, the Connection's stored checkpoint, the durable history). A head
//! is signed when it is sent, or — when its stream was signed less than
//! [`SIGN_EVERY_SECONDS`] ago — by the next flush ([`AuditIntake::sign_waiting`]).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde::Serialize;
use sluice_crds::AuditCheckpoint;
use sluice_policy::engine::Identity;

use super::check::foreign;
use super::count::record_history;
use super::{AuditIntake, IntakeError, MAX_STREAMS, Pending, SIGN_EVERY_SECONDS, StreamKey};
use crate::catalog::{Catalog, PolicyEntry};
use crate::gateway::token::{GatewayClaims, KeySet};
use crate::wire::{AuditBatch, AuditHead, SignedHead};

/// What a checkpoint's signature covers (see [`SignedHead::signature`]),
/// serialised without an intermediate JSON value. The fields are in the
/// order of their names, as a JSON object's keys were serialised before: the
/// signed bytes are the same.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Payload<'a> {
    connection: &'a str,
    hash: &'a str,
    iat: i64,
    namespace: &'a str,
    pod: &'a str,
    pod_uid: &'a str,
    previous: Option<u64>,
    sequence: u64,
    service_account: &'a str,
    stream: &'a str,
}

/// What this replica knows of one stream's heads.
pub(super) struct StreamHeads {
    /// The last head taken (signed, or waiting for its signature): the
    /// stream's next head must move forward from it.
    seq: u64,
    hash: String,
    /// When it was taken, in Unix seconds (the stream taken longest ago is
    /// forgotten first).
    at: i64,
    /// The last head this replica signed (or began to sign), and when.
    signed: Option<(u64, i64)>,
    /// The last head taken and not signed yet: the next flush signs it.
    waiting: Option<Box<Waiting>>,
    /// A checkpoint a flush signed, for the stream's next receipt.
    undelivered: Option<Box<SignedHead>>,
}

/// A head taken whose signature waits for the flush, with what its
/// signature covers besides the head.
pub(super) struct Waiting {
    connection: String,
    seq: u64,
    hash: String,
    previous: Option<u64>,
    namespace: String,
    service_account: String,
    pod: String,
    pod_uid: String,
    identity: String,
    keys: Arc<KeySet>,
    /// When it was taken.
    at: Time,
}

/// What [`Signer::sign_heads`] made of a batch's heads.
pub(super) struct Heads {
    /// Signed now.
    pub(super) signed: Vec<SignedHead>,
    /// Signed by a flush since the stream's last upload (older heads).
    pub(super) delivered: Vec<SignedHead>,
    /// Taken, signed by the next flush.
    pub(super) acknowledged: Vec<AuditHead>,
}

/// What signing a batch's heads needs besides the batch.
pub(super) struct Signer<'a> {
    pub(super) catalog: &'a Catalog,
    pub(super) entries: &'a [PolicyEntry],
    pub(super) keys: &'a Arc<KeySet>,
    pub(super) claims: &'a GatewayClaims,
    pub(super) identity: &'a Identity,
    pub(super) now: &'a Time,
    /// Each stream's last head in the durable history.
    pub(super) floors: &'a BTreeMap<String, (u64, String)>,
}

impl Signer<'_> {
    /// Takes the heads of `batch` in sequence order, remembering each in
    /// `streams`: a head is signed now when its stream has none waiting and
    /// was not signed here in the last [`SIGN_EVERY_SECONDS`], else it waits
    /// for the flush ([`AuditIntake::sign_waiting`]). Every check is made
    /// before either.
    pub(super) fn sign_heads(
        &self,
        streams: &Mutex<BTreeMap<StreamKey, StreamHeads>>,
        batch: &AuditBatch,
    ) -> Result<Heads, IntakeError> {
        let Signer {
            catalog,
            entries,
            keys: _,
            claims,
            identity,
            now,
            floors,
        } = *self;
        let prefix =
            crate::wire::stream_prefix(&claims.namespace, &claims.service_account, &claims.pod);
        let bound = |connection: &str| {
            entries.iter().any(|e| {
                e.compiled
                    .as_ref()
                    .is_ok_and(|c| c.binds(identity) && c.names_connection(connection))
            })
        };
        let mut heads: Vec<&AuditHead> = batch.heads.iter().collect();
        heads.sort_by_key(|h| h.head.seq);
        let at = now.0.as_second();
        let mut streams = streams
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut out = Heads {
            signed: Vec::with_capacity(heads.len()),
            delivered: Vec::new(),
            acknowledged: Vec::new(),
        };
        for head in heads {
            let (stream, seq, hash) = (&head.head.stream, head.head.seq, &head.head.hash);
            if !stream.starts_with(&prefix) {
                return Err(foreign(stream, &prefix));
            }
            if !bound(&head.connection) {
                return Err(IntakeError::UnboundConnection {
                    stream: stream.clone(),
                    connection: head.connection.clone(),
                });
            }
            let uploaded = batch.events.iter().any(|e| {
                e.stream == *stream
                    && e.seq == seq
                    && e.hash == *hash
                    && e.connection.as_deref() == Some(head.connection.as_str())
            });
            if !uploaded {
                return Err(IntakeError::UnknownHead {
                    stream: stream.clone(),
                    seq,
                    connection: head.connection.clone(),
                });
            }
            let key = (claims.namespace.clone(), stream.clone());
            // The Connection's stored checkpoint is a floor every replica shares.
            let stored = catalog
                .stored_checkpoint(&claims.namespace, &head.connection)
                .filter(|c| c.stream == *stream)
                .map(|c| (c.sequence, c.hash));
            // So is the stream's last head in the durable history.
            let floor = stored.into_iter().chain(floors.get(stream).cloned());
            let known = streams.get(&key);
            let last = known
                .map(|s| (s.seq, s.hash.clone()))
                .into_iter()
                .chain(floor.clone())
                .max_by_key(|(s, _)| *s);
            if let Some((last_seq, last_hash)) = &last {
                // The same head again (a receipt lost on the way) is taken again.
                let repeat = *last_seq == seq && last_hash == hash;
                if seq < *last_seq || (seq == *last_seq && !repeat) {
                    return Err(IntakeError::Rewind {
                        stream: stream.clone(),
                        seq,
                        last: *last_seq,
                    });
                }
            }
            // `previous` names the last *signed* head: one only taken is not.
            let previous = known
                .and_then(|s| s.signed.map(|(s, _)| s))
                .into_iter()
                .chain(floor.map(|(s, _)| s))
                .max()
                .filter(|s| *s < seq);
            let sign_now = known.is_none_or(|s| {
                s.waiting.is_none()
                    && s.signed
                        .is_none_or(|(_, when)| at - when >= SIGN_EVERY_SECONDS)
            });
            let entry = streams.entry(key).or_insert_with(|| StreamHeads {
                seq,
                hash: String::new(),
                at,
                signed: None,
                waiting: None,
                undelivered: None,
            });
            entry.seq = seq;
            entry.hash.clone_from(hash);
            entry.at = at;
            if let Some(earlier) = entry.undelivered.take() {
                out.delivered.push(*earlier);
            }
            if sign_now {
                out.signed.push(self.sign_now(head, previous)?);
                entry.signed = Some((seq, at));
            } else {
                entry.waiting = Some(Box::new(self.waiting(head, previous)));
                out.acknowledged.push(head.clone());
            }
            forget_oldest(&mut streams);
        }
        Ok(out)
    }

    /// `head`, signed now for the caller.
    fn sign_now(&self, head: &AuditHead, previous: Option<u64>) -> Result<SignedHead, IntakeError> {
        let claims = self.claims;
        let payload = Payload {
            connection: &head.connection,
            hash: &head.head.hash,
            iat: self.now.0.as_second(),
            namespace: &claims.namespace,
            pod: &claims.pod,
            pod_uid: &claims.pod_uid,
            previous,
            sequence: head.head.seq,
            service_account: &claims.service_account,
            stream: &head.head.stream,
        };
        let (signature, key_id) = self
            .keys
            .sign_payload(&payload)
            .map_err(IntakeError::Sign)?;
        Ok(SignedHead {
            connection: head.connection.clone(),
            stream: head.head.stream.clone(),
            sequence: head.head.seq,
            hash: head.head.hash.clone(),
            signature,
            key_id,
            identity: claims.sub.clone(),
            pod: claims.pod.clone(),
        })
    }

    /// `head`, to be signed by the next flush with what it covers.
    fn waiting(&self, head: &AuditHead, previous: Option<u64>) -> Waiting {
        let claims = self.claims;
        Waiting {
            connection: head.connection.clone(),
            seq: head.head.seq,
            hash: head.head.hash.clone(),
            previous,
            namespace: claims.namespace.clone(),
            service_account: claims.service_account.clone(),
            pod: claims.pod.clone(),
            pod_uid: claims.pod_uid.clone(),
            identity: claims.sub.clone(),
            keys: self.keys.clone(),
            at: self.now.clone(),
        }
    }
}

/// Past [`MAX_STREAMS`], the stream taken longest ago is forgotten (a head
/// of it still waiting was taken longer ago than any other stream's last).
fn forget_oldest(streams: &mut BTreeMap<StreamKey, StreamHeads>) {
    if streams.len() > MAX_STREAMS
        && let Some(oldest) = streams
            .iter()
            .min_by_key(|(_, s)| s.at)
            .map(|(k, _)| k.clone())
    {
        streams.remove(&oldest);
    }
}

impl AuditIntake {
    /// Signs every head waiting for its signature (taken since its stream's
    /// last signature, [`SIGN_EVERY_SECONDS`]) and adds the checkpoints to
    /// `pending` (history and Connection status) as a batch's signed heads
    /// are added; each is also handed to its stream's next receipt. Called
    /// by the flush before it writes, so no head waits longer than a flush.
    pub(super) fn sign_waiting(&self, pending: &mut Pending, now: &Time) {
        let at = now.0.as_second();
        // Taken out under the lock, signed outside it: a head taken meanwhile
        // waits for the next flush (its stream counts as signed now).
        let waiting: Vec<(StreamKey, Box<Waiting>)> = {
            let mut streams = self
                .signed
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            streams
                .iter_mut()
                .filter_map(|(key, s)| {
                    let w = s.waiting.take()?;
                    s.signed = Some((w.seq, at));
                    Some((key.clone(), w))
                })
                .collect()
        };
        if waiting.is_empty() {
            return;
        }
        let mut signed = Vec::with_capacity(waiting.len());
        for ((namespace, stream), w) in waiting {
            let payload = Payload {
                connection: &w.connection,
                hash: &w.hash,
                iat: at,
                namespace: &w.namespace,
                pod: &w.pod,
                pod_uid: &w.pod_uid,
                previous: w.previous,
                sequence: w.seq,
                service_account: &w.service_account,
                stream: &stream,
            };
            let (signature, key_id) = match w.keys.sign_payload(&payload) {
                Ok(s) => s,
                Err(error) => {
                    // Only a key set without keys fails: nothing to sign with.
                    tracing::warn!(error = %crate::error_chain(&error), %stream, seq = w.seq, "a waiting audit chain head could not be signed");
                    continue;
                }
            };
            let head = SignedHead {
                connection: w.connection.clone(),
                stream: stream.clone(),
                sequence: w.seq,
                hash: w.hash.clone(),
                signature,
                key_id,
                identity: w.identity.clone(),
                pod: w.pod.clone(),
            };
            if self.history_namespace.is_some() {
                record_history(
                    pending,
                    &w.keys,
                    &namespace,
                    std::slice::from_ref(&head),
                    now,
                );
            }
            // The status slot holds the head taken last, of any stream.
            let slot = (namespace.clone(), w.connection.clone());
            if pending
                .checkpoints
                .get(&slot)
                .is_none_or(|c| c.time.0 <= w.at.0)
            {
                pending.checkpoints.insert(
                    slot,
                    AuditCheckpoint {
                        stream: head.stream.clone(),
                        sequence: head.sequence,
                        hash: head.hash.clone(),
                        signature: head.signature.clone(),
                        key_id: head.key_id.clone(),
                        time: w.at.clone(),
                    },
                );
            }
            signed.push(((namespace, stream), head));
        }
        let mut streams = self
            .signed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for (key, head) in signed {
            if let Some(s) = streams.get_mut(&key) {
                s.undelivered = Some(Box::new(head));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::gateway::token::Subject;
    use serde_json::{Value, json};
    use sluice_crds::AccessPolicy;
    use sluice_policy::audit::{AuditChain, AuditEvent, AuditEventDraft, AuditKind};
    use sluice_policy::engine::{CompiledPolicy, NoSecrets};
    use std::time::{Duration, SystemTime};

    const STREAM: &str = "sidecar:shop/job:job-0:boot";

    /// A sidecar of `shop/job` in pod `job-0`, bound to Connection `db`.
    struct Sidecar {
        catalog: Catalog,
        entries: Vec<PolicyEntry>,
        keys: Arc<KeySet>,
        claims: GatewayClaims,
        identity: Identity,
        chain: AuditChain,
    }

    impl Sidecar {
        fn new() -> Sidecar {
            let policy: AccessPolicy = serde_json::from_value(json!({
                "apiVersion": "sluice.dev/v1alpha1", "kind": "AccessPolicy",
                "metadata": {"name": "p", "namespace": "shop"},
                "spec": {"subjects": [{"serviceAccount": "job"}], "connections": ["db"]}
            }))
            .unwrap();
            let subject = Subject {
                namespace: "shop".into(),
                service_account: "job".into(),
                pod: "job-0".into(),
                pod_uid: "uid-0".into(),
                service_account_uid: "sa-uid".into(),
                groups: vec![],
            };
            let now = SystemTime::now();
            let claims =
                GatewayClaims::new("https://op", &subject, now, Duration::from_secs(600)).unwrap();
            let identity = super::super::identity_of(&claims);
            Sidecar {
                catalog: Catalog::empty(),
                entries: vec![PolicyEntry {
                    compiled: CompiledPolicy::compile(&policy, &NoSecrets),
                    policy: Arc::new(policy),
                }],
                keys: Arc::new(KeySet::generate(now).unwrap()),
                claims,
                identity,
                chain: AuditChain::new(STREAM.to_string()),
            }
        }

        /// `n` more events of the stream, and its head.
        fn batch(&mut self, n: usize) -> AuditBatch {
            self.batch_at(n, "2026-01-01T00:00:00Z")
        }

        /// `n` more events of the stream at `time`, and its head.
        fn batch_at(&mut self, n: usize, time: &str) -> AuditBatch {
            let events: Vec<AuditEvent> = (0..n)
                .map(|_| {
                    let mut draft = AuditEventDraft::new(time, AuditKind::Statement);
                    draft.connection = Some("db".into());
                    self.chain.append(draft).unwrap()
                })
                .collect();
            let head = self.chain.head();
            AuditBatch {
                events,
                heads: vec![AuditHead {
                    connection: "db".into(),
                    head,
                }],
            }
        }

        fn send(
            &self,
            intake: &AuditIntake,
            batch: &AuditBatch,
            at: i64,
        ) -> Result<super::super::Taken, IntakeError> {
            let now = Time(k8s_openapi::jiff::Timestamp::from_second(at).unwrap());
            let floors = BTreeMap::new();
            let signer = Signer {
                catalog: &self.catalog,
                entries: &self.entries,
                keys: &self.keys,
                claims: &self.claims,
                identity: &self.identity,
                now: &now,
                floors: &floors,
            };
            intake.record_with_floors(&signer, batch)
        }

        /// The payload of `head`'s signature, verified with the JWKS.
        fn verified(&self, head: &SignedHead) -> Value {
            use jsonwebtoken::{Algorithm, DecodingKey, Validation};
            let jwks = self.keys.jwks();
            let key = DecodingKey::from_jwk(jwks.find(&head.key_id).unwrap()).unwrap();
            let mut validation = Validation::new(Algorithm::ES256);
            validation.validate_exp = false;
            validation.validate_aud = false;
            validation.required_spec_claims.clear();
            let claims = jsonwebtoken::decode::<Value>(&head.signature, &key, &validation)
                .unwrap()
                .claims;
            assert_eq!(claims["stream"], head.stream.as_str());
            assert_eq!(claims["sequence"], head.sequence);
            assert_eq!(claims["hash"], head.hash.as_str());
            claims
        }
    }

    const T: i64 = 1_765_000_000;

    /// #25: a head of a stream signed moments ago is taken and acknowledged
    /// unsigned; the flush signs it (naming the last signed head as
    /// `previous`, not a head only acknowledged), writes it into the history
    /// and the status slot, and the stream's next receipt carries it.
    #[test]
    fn a_head_signed_moments_ago_is_signed_by_the_flush_and_handed_back() {
        let intake = AuditIntake::with_history("sluice-system");
        let mut sidecar = Sidecar::new();
        let first = sidecar.batch(2);
        let taken = sidecar.send(&intake, &first, T).unwrap();
        assert_eq!(
            taken.checkpoints.len(),
            1,
            "a stream's first head is signed at once"
        );
        assert!(taken.acknowledged.is_empty());
        assert_eq!(
            sidecar.verified(&taken.checkpoints[0])["previous"],
            Value::Null
        );

        // Two more uploads within SIGN_EVERY_SECONDS: acknowledged, unsigned.
        for n in [3, 4] {
            let batch = sidecar.batch(1);
            let taken = sidecar.send(&intake, &batch, T + 2).unwrap();
            assert!(taken.checkpoints.is_empty(), "{taken:?}");
            assert_eq!(taken.acknowledged, batch.heads);
            assert_eq!(taken.acknowledged[0].head.seq, n);
        }
        // Taken, though: a head behind the last one taken is refused.
        let behind = AuditBatch {
            events: first.events.clone(),
            heads: first.heads.clone(),
        };
        assert!(matches!(
            sidecar.send(&intake, &behind, T + 3),
            Err(IntakeError::Rewind { last: 4, .. })
        ));

        // The flush signs the last head taken (4), after the last signed (2).
        let mut pending = Pending::default();
        let flushed_at = Time(k8s_openapi::jiff::Timestamp::from_second(T + 5).unwrap());
        intake.sign_waiting(&mut pending, &flushed_at);
        let history = &pending.history[&("shop".to_string(), "db".to_string())];
        assert_eq!(history.len(), 1);
        let signed = &history[0].head;
        assert_eq!((signed.stream.as_str(), signed.sequence), (STREAM, 4));
        let payload = sidecar.verified(signed);
        assert_eq!(payload["previous"], 2);
        assert_eq!(payload["pod"], "job-0");
        assert_eq!(signed.identity, "system:serviceaccount:shop:job");
        let slot = &pending.checkpoints[&("shop".to_string(), "db".to_string())];
        assert_eq!((slot.sequence, &slot.signature), (4, &signed.signature));
        assert!(pending.keys.contains_key(&signed.key_id));
        // Nothing is left waiting: a second flush signs nothing.
        let mut again = Pending::default();
        intake.sign_waiting(&mut again, &flushed_at);
        assert!(again.history.is_empty() && again.checkpoints.is_empty());

        // The next upload gets it back, and its own head waits (signed at T + 5).
        let batch = sidecar.batch(1);
        let taken = sidecar.send(&intake, &batch, T + 6).unwrap();
        assert_eq!(taken.checkpoints, vec![signed.clone()]);
        assert_eq!(taken.acknowledged[0].head.seq, 5);
        // Handed back once only.
        let batch = sidecar.batch(1);
        let taken = sidecar.send(&intake, &batch, T + 7).unwrap();
        assert!(taken.checkpoints.is_empty());
        assert_eq!(taken.acknowledged[0].head.seq, 6);

        // A head still waiting holds back a signature at once, however long
        // ago the last was; the flush signs the newest.
        let batch = sidecar.batch(1);
        let taken = sidecar.send(&intake, &batch, T + 60).unwrap();
        assert!(taken.checkpoints.is_empty());
        let mut pending = Pending::default();
        let later = Time(k8s_openapi::jiff::Timestamp::from_second(T + 61).unwrap());
        intake.sign_waiting(&mut pending, &later);
        let history = &pending.history[&("shop".to_string(), "db".to_string())];
        assert_eq!(history.len(), 1);
        assert_eq!(history[0].head.sequence, 7);
        assert_eq!(sidecar.verified(&history[0].head)["previous"], 4);

        // SIGN_EVERY_SECONDS after the last signature, with none waiting:
        // signed at once again (with the flush's signature handed back first).
        let batch = sidecar.batch(1);
        let taken = sidecar
            .send(&intake, &batch, T + 61 + SIGN_EVERY_SECONDS)
            .unwrap();
        assert!(taken.acknowledged.is_empty());
        let sequences: Vec<u64> = taken.checkpoints.iter().map(|c| c.sequence).collect();
        assert_eq!(sequences, vec![7, 8]);
        assert_eq!(sidecar.verified(&taken.checkpoints[1])["previous"], 7);
    }

    /// A head waiting for the flush is the stream's head all the same: the
    /// same head again is acknowledged again, another head at its sequence
    /// (a fork) is refused, and an edited event never gets that far.
    #[test]
    fn a_waiting_head_is_held_to_the_same_checks() {
        let intake = AuditIntake::default();
        let mut sidecar = Sidecar::new();
        let first = sidecar.batch(1);
        sidecar.send(&intake, &first, T).unwrap();
        let second = sidecar.batch(2);
        let taken = sidecar.send(&intake, &second, T + 1).unwrap();
        assert_eq!(taken.acknowledged.len(), 1);
        let again = sidecar.send(&intake, &second, T + 2).unwrap();
        assert_eq!(again.acknowledged, second.heads);
        // A fork at seq 3: another event, the same sequence.
        let mut fork = Sidecar::new();
        let forked = fork.batch_at(3, "2026-01-03T00:00:00Z");
        let fork_batch = AuditBatch {
            events: forked.events[2..].to_vec(),
            heads: forked.heads.clone(),
        };
        // (The fork's event 3 chains to its own event 2, not this stream's:
        // as a batch of its own it passes the event checks.)
        assert!(matches!(
            sidecar.send(&intake, &fork_batch, T + 3),
            Err(IntakeError::Rewind {
                seq: 3,
                last: 3,
                ..
            })
        ));
        // An edited event: its hash no longer matches.
        let mut edited = sidecar.batch(1);
        edited.events[0].time = "2026-01-02T00:00:00Z".into();
        assert!(matches!(
            sidecar.send(&intake, &edited, T + 4),
            Err(IntakeError::BrokenChain { .. })
        ));
    }

    /// The checkpoint payload serialises to the bytes the JSON object of
    /// earlier releases did (keys in name order): receipts keep their format.
    #[test]
    fn the_signed_payload_keeps_its_bytes() {
        for previous in [None, Some(6)] {
            let payload = Payload {
                connection: "orders-db",
                hash: "ab12",
                iat: 1_765_000_000,
                namespace: "shop",
                pod: "report-0",
                pod_uid: "uid-0",
                previous,
                sequence: 7,
                service_account: "report-job",
                stream: "sidecar:shop/report-job:report-0:boot",
            };
            let object = json!({
                "namespace": "shop",
                "serviceAccount": "report-job",
                "pod": "report-0",
                "podUid": "uid-0",
                "connection": "orders-db",
                "stream": "sidecar:shop/report-job:report-0:boot",
                "sequence": 7,
                "hash": "ab12",
                "previous": previous,
                "iat": 1_765_000_000,
            });
            assert_eq!(
                String::from_utf8(serde_json::to_vec(&payload).unwrap()).unwrap(),
                String::from_utf8(serde_json::to_vec(&object).unwrap()).unwrap()
            );
        }
    }
}
