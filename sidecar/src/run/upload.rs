//! Run mode's audit upload: every event also goes to the operator's
//! `/v1/audit` in batches, with a chain head per Connection to sign. Best
//! effort: stdout stays the write-ahead sink.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use sluice_policy::audit::ChainHead;
use sluice_policy::wire::AuditHead;
use tokio::sync::watch;
use zeroize::Zeroizing;

use crate::audit::{AuditLog, Forwarded};
use crate::bundle_client::GatewayClient;

/// Events waiting for the operator; past this, new events are dropped for
/// that sink (stdout keeps them all).
pub(super) const AUDIT_QUEUE: usize = 10_000;

/// Events per `/v1/audit` request (the operator takes up to 10 000).
const AUDIT_BATCH: usize = 1_000;

/// Bytes of event lines per `/v1/audit` request: half the operator's 8 MiB
/// body limit, which leaves room for the heads and the framing (one head per
/// Connection of the batch).
pub(super) const AUDIT_BATCH_BYTES: usize = 4 * 1024 * 1024;

/// How many of `events`, from the front, the next request carries: at most
/// [`AUDIT_BATCH`] events and [`AUDIT_BATCH_BYTES`] bytes of lines. Zero when
/// the first event alone is larger than a request may be.
pub(super) fn batch_len(events: &[Forwarded]) -> usize {
    let mut bytes = 0;
    for (i, e) in events.iter().take(AUDIT_BATCH).enumerate() {
        bytes += e.line.len() + 1;
        if bytes > AUDIT_BATCH_BYTES {
            return i;
        }
    }
    events.len().min(AUDIT_BATCH)
}

/// The body of a `POST /v1/audit` ([`sluice_policy::wire::AuditBatch`] on the wire): the
/// events' lines as they were written, and the last head per Connection of
/// the batch. The lines are copied, not parsed and serialised again.
pub(super) fn audit_body(stream: &str, events: &[Forwarded]) -> Vec<u8> {
    // The last event of each Connection names its head.
    let mut last: BTreeMap<&str, &Forwarded> = BTreeMap::new();
    let mut body = Vec::with_capacity(events.iter().map(|e| e.line.len() + 1).sum::<usize>() + 256);
    body.extend_from_slice(b"{\"events\":[");
    for (i, e) in events.iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        body.extend_from_slice(e.line.as_bytes());
        if let Some(c) = &e.connection {
            last.insert(c, e);
        }
    }
    body.extend_from_slice(b"],\"heads\":");
    let heads: Vec<AuditHead> = last
        .into_iter()
        .map(|(c, e)| AuditHead {
            connection: c.to_string(),
            head: ChainHead {
                stream: stream.to_string(),
                seq: e.seq,
                hash: e.hash.clone(),
            },
        })
        .collect();
    // A Vec of plain structs of strings and integers always serialises.
    let _ = serde_json::to_writer(&mut body, &heads);
    body.push(b'}');
    body
}

/// Sends audit events to the operator's `/v1/audit` in batches, with a
/// chain head per Connection of the batch for the operator to sign. A batch
/// the operator did not take is sent again (it is kept, bounded by [`AUDIT_QUEUE`]).
/// When the operator answers with `Retry-After` (overloaded, throttled), the
/// next upload waits at least that long, with jitter
/// ([`crate::bundle_client::honoured`]); meanwhile new events wait in the
/// bounded queue (the audit log counts what does not fit).
pub(super) async fn upload_audit(
    client: GatewayClient,
    token: watch::Receiver<Option<Zeroizing<String>>>,
    mut events: tokio::sync::mpsc::Receiver<Forwarded>,
    audit: Arc<AuditLog>,
    every: Duration,
    metrics: Arc<crate::metrics::Metrics>,
) {
    let mut batch: Vec<Forwarded> = Vec::new();
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut dropped_seen = 0;
    // Warn once per outage, not at every retry.
    let mut failing = false;
    let mut hold: Option<tokio::time::Instant> = None;
    loop {
        if let Some(until) = hold.take() {
            tokio::time::sleep_until(until).await;
        }
        tokio::select! {
            e = events.recv() => match e {
                Some(e) => {
                    batch.push(e);
                    if batch.len() < AUDIT_BATCH {
                        continue;
                    }
                }
                None => return,
            },
            _ = tick.tick() => {}
        }
        let dropped = audit.forward_dropped();
        metrics.audit_forward_dropped(dropped.saturating_sub(dropped_seen));
        if dropped > dropped_seen {
            tracing::warn!(
                dropped = dropped - dropped_seen,
                "audit events not sent to the operator: its queue was full (they are on stdout)"
            );
            dropped_seen = dropped;
        }
        metrics.audit_forward_queue(batch.len() + events.len());
        if batch.is_empty() {
            continue;
        }
        let Some(bearer) = token.borrow().clone() else {
            continue;
        };
        let take = batch_len(&batch);
        if take == 0 {
            // The operator would refuse it every time and hold up the rest.
            batch.remove(0);
            metrics.audit_forward_dropped(1);
            tracing::warn!(
                limit = AUDIT_BATCH_BYTES,
                "an audit event larger than an upload may be was not sent to the operator (it is on stdout)"
            );
            continue;
        }
        let request = audit_body(audit.stream(), &batch[..take]);
        match client.audit(&bearer, request).await {
            Ok(receipt) => {
                tracing::debug!(
                    accepted = receipt.accepted,
                    checkpoints = receipt.checkpoints.len(),
                    // Taken, signed by the operator's next flush and handed
                    // back in a later receipt.
                    acknowledged = receipt.acknowledged.len(),
                    "audit batch sent"
                );
                // The signed receipts are kept in the sidecar's log (not the
                // audit stream, which they would break): `kubectl logs` and the
                // log pipeline hold what the operator vouched for.
                for checkpoint in &receipt.checkpoints {
                    if let Ok(json) = serde_json::to_string(checkpoint) {
                        tracing::info!(checkpoint = %json, "audit checkpoint signed by the operator");
                    }
                }
                batch.drain(..take);
                if failing {
                    tracing::info!("audit events reach the operator again");
                    failing = false;
                }
            }
            Err(e) => {
                if !failing {
                    tracing::warn!(error = %e, events = take, "sending audit events to the operator failed; will retry");
                    failing = true;
                }
                hold = e.retry_after().map(|asked| {
                    tokio::time::Instant::now() + crate::bundle_client::honoured(asked)
                });
                if batch.len() > AUDIT_QUEUE {
                    let excess = batch.len() - AUDIT_QUEUE;
                    batch.drain(..excess);
                    metrics.audit_forward_dropped(excess as u64);
                    tracing::warn!(
                        dropped = excess,
                        "audit events not sent to the operator: too many waiting (they are on stdout)"
                    );
                }
            }
        }
    }
}
