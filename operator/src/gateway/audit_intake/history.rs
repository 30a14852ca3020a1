//! Appending a flush's checkpoints to the durable history without reading
//! it back (#25).
//!
//! A flush used to read each touched Connection's history ConfigMap, parse
//! every line, merge and write it all back: its cost grew with the lines
//! signed so far (up to [`crate::gateway::checkpoint_history::MAX_LINES`]), 1 % → 14.8 % of
//! the operator's CPU between two fleet runs. Here a replica holds the lines
//! it last wrote (or read), with the ConfigMap's resourceVersion, and a flush
//! parses and serializes only its new lines and writes the result under
//! that resourceVersion (compare-and-swap):
//!
//! - Nobody else wrote since: the write is accepted. One PUT, no GET.
//! - Another replica (or anyone) wrote since: the API server answers 409
//!   Conflict, the held copy is dropped (a stale copy is detected, never
//!   trusted), the history is read, merged and written as before, and the
//!   next flush reads first too — until a read shows that the last write was
//!   this replica's own, so two replicas writing one history cost what
//!   they cost before (a read and a write per flush), plus one refused
//!   write when they start to alternate. A deleted history is created again.
//! - Any other failure: the copy is dropped (the write may or may not have
//!   landed), the lines stay pending ([`super::flush`]), the next flush reads.
//!
//! The format is unchanged (one signed checkpoint a line, the same bounds,
//! the same keeps): readers (`kubectl sluice audit checkpoints`, `audit
//! verify --checkpoints`) and histories written before read as they did.
//! Held copies are bounded by [`HELD_BYTES`]; the one written longest ago is
//! let go first (its next flush reads).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, PoisonError};

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client};

use crate::gateway::checkpoint_history::{
    HISTORY_DATA_KEY, HistoryEntry, Lines, history_annotations, history_labels, history_name,
};

/// Most bytes of histories a replica holds (about 21 full histories).
pub const HELD_BYTES: usize = 16 * 1024 * 1024;

/// (namespace, Connection).
type Key = (String, String);

/// The histories a replica last wrote or read.
#[derive(Default)]
pub(super) struct HeldHistories {
    held: Mutex<Held>,
}

#[derive(Default)]
struct Held {
    copies: HashMap<Key, HeldCopy>,
    /// Bytes of the held lines.
    bytes: usize,
    /// Stamps the copies in the order they were written.
    clock: u64,
}

/// What a replica knew of a history before reading it.
enum Before {
    /// Nothing held (never written since the start, or let go).
    Nothing,
    /// Its write from the held copy was refused: someone else wrote.
    Refused,
    /// The version of its own last write.
    Written(Option<String>),
}

/// A history as this replica last wrote or read it.
struct HeldCopy {
    lines: Lines,
    /// The ConfigMap's metadata (its resourceVersion the one written under).
    meta: ObjectMeta,
    /// Its other data keys (none the operator writes: kept as they were).
    other: BTreeMap<String, String>,
    /// Whether the last write from this copy was accepted with nobody
    /// else's in between: only then is the next one written without a read.
    own: bool,
    stamp: u64,
}

impl HeldHistories {
    /// Appends `entries` to Connection `namespace/connection`'s history.
    pub(super) async fn append(
        &self,
        client: &Client,
        operator_namespace: &str,
        (namespace, connection): &Key,
        entries: &[HistoryEntry],
    ) -> Result<(), kube::Error> {
        let key = (namespace.clone(), connection.clone());
        let api: Api<ConfigMap> = Api::namespaced(client.clone(), operator_namespace);
        let name = history_name(namespace, connection);
        let copy = match self.take(&key) {
            Some(mut copy) if copy.own => {
                if !copy.lines.append(entries) {
                    self.keep(key, copy);
                    return Ok(());
                }
                match write(&api, &name, &mut copy).await {
                    Ok(()) => copy,
                    // Written since by another: read, merge, write.
                    Err(e) if is_code(&e, 409) || is_code(&e, 404) => {
                        self.read_and_write(
                            &api,
                            operator_namespace,
                            &key,
                            entries,
                            Before::Refused,
                        )
                        .await?
                    }
                    Err(e) => return Err(e),
                }
            }
            copy => {
                let before = match copy {
                    Some(c) => Before::Written(c.meta.resource_version),
                    None => Before::Nothing,
                };
                self.read_and_write(&api, operator_namespace, &key, entries, before)
                    .await?
            }
        };
        self.keep(key, copy);
        Ok(())
    }

    /// Reads the history, appends, writes it under the resourceVersion
    /// read. The copy is this replica's own (its next write made without a
    /// read) unless `before` shows another writer: a refused write, or a
    /// read that is not the version of this replica's own last write.
    async fn read_and_write(
        &self,
        api: &Api<ConfigMap>,
        operator_namespace: &str,
        (namespace, connection): &Key,
        entries: &[HistoryEntry],
        before: Before,
    ) -> Result<HeldCopy, kube::Error> {
        let name = history_name(namespace, connection);
        let Some(mut cm) = api.get_opt(&name).await? else {
            let mut lines = Lines::default();
            lines.append(entries);
            let cm = ConfigMap {
                metadata: ObjectMeta {
                    name: Some(name.clone()),
                    namespace: Some(operator_namespace.to_string()),
                    labels: Some(history_labels()),
                    annotations: Some(history_annotations(namespace, connection)),
                    ..Default::default()
                },
                data: Some(BTreeMap::from([(
                    HISTORY_DATA_KEY.to_string(),
                    lines.text(),
                )])),
                ..Default::default()
            };
            let created = api.create(&PostParams::default(), &cm).await?;
            return Ok(HeldCopy::written(lines, created.metadata));
        };
        let own = match before {
            Before::Nothing => true,
            Before::Refused => false,
            Before::Written(version) => {
                version.is_some() && cm.metadata.resource_version == version
            }
        };
        let mut other = cm.data.take().unwrap_or_default();
        let text = other.remove(HISTORY_DATA_KEY).unwrap_or_default();
        let mut lines = Lines::parse(&text);
        lines.append(entries);
        let mut copy = HeldCopy {
            lines,
            meta: cm.metadata,
            other,
            own,
            stamp: 0,
        };
        // As before: a history that reads the same after the merge is not written.
        if copy.lines.text() != text {
            write(api, &name, &mut copy).await?;
        }
        Ok(copy)
    }

    fn take(&self, key: &Key) -> Option<HeldCopy> {
        let mut held = self.lock();
        let copy = held.copies.remove(key)?;
        held.bytes -= copy.lines.bytes();
        Some(copy)
    }

    /// Holds `copy`, letting go of the copies written longest ago beyond
    /// [`HELD_BYTES`].
    fn keep(&self, key: Key, mut copy: HeldCopy) {
        let mut held = self.lock();
        held.clock += 1;
        copy.stamp = held.clock;
        held.bytes += copy.lines.bytes();
        if let Some(old) = held.copies.insert(key, copy) {
            // Another flush of the same history ran meanwhile: this one is newer.
            held.bytes -= old.lines.bytes();
        }
        while held.bytes > HELD_BYTES {
            let Some(oldest) = held
                .copies
                .iter()
                .min_by_key(|(_, c)| c.stamp)
                .map(|(k, _)| k.clone())
            else {
                break;
            };
            if let Some(gone) = held.copies.remove(&oldest) {
                held.bytes -= gone.lines.bytes();
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Held> {
        self.held.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl HeldCopy {
    fn written(lines: Lines, meta: ObjectMeta) -> HeldCopy {
        HeldCopy {
            lines,
            meta,
            other: BTreeMap::new(),
            own: true,
            stamp: 0,
        }
    }
}

/// Writes `copy` under its resourceVersion; on success it holds the
/// written version.
async fn write(api: &Api<ConfigMap>, name: &str, copy: &mut HeldCopy) -> Result<(), kube::Error> {
    let mut meta = copy.meta.clone();
    // Kept by the API server when left out; not worth sending back.
    meta.managed_fields = None;
    let mut data = copy.other.clone();
    data.insert(HISTORY_DATA_KEY.to_string(), copy.lines.text());
    let cm = ConfigMap {
        metadata: meta,
        data: Some(data),
        ..Default::default()
    };
    let written = api.replace(name, &PostParams::default(), &cm).await?;
    copy.meta = written.metadata;
    Ok(())
}

fn is_code(error: &kube::Error, code: u16) -> bool {
    matches!(error, kube::Error::Api(s) if s.code == code)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::wire::SignedHead;

    /// A copy of `lines` lines of about 8 KiB each.
    fn copy(lines: u64) -> HeldCopy {
        let mut held = Lines::default();
        let entries: Vec<HistoryEntry> = (0..lines)
            .map(|s| HistoryEntry {
                head: SignedHead {
                    connection: "orders-db".into(),
                    stream: "s".into(),
                    sequence: s,
                    hash: format!("{s:064x}"),
                    signature: "x".repeat(8 * 1024),
                    key_id: "k".into(),
                    identity: "i".into(),
                    pod: "p".into(),
                },
                namespace: "shop".into(),
                time: "t".into(),
            })
            .collect();
        held.append(&entries);
        HeldCopy::written(held, ObjectMeta::default())
    }

    fn key(n: usize) -> Key {
        ("shop".into(), format!("c{n}"))
    }

    /// Held copies stay within HELD_BYTES: the one written longest ago goes
    /// first; one taken out (a flush under way) no longer counts.
    #[test]
    fn held_copies_are_bounded_and_the_oldest_written_goes_first() {
        let held = HeldHistories::default();
        // 90 lines of ~8 KiB: ~740 KiB a copy, 22 of them are past 16 MiB.
        for n in 0..30 {
            held.keep(key(n), copy(90));
            let state = held.lock();
            assert!(state.bytes <= HELD_BYTES, "{} bytes held", state.bytes);
            assert_eq!(
                state.bytes,
                state
                    .copies
                    .values()
                    .map(|c| c.lines.bytes())
                    .sum::<usize>()
            );
        }
        let kept: Vec<usize> = (0..30)
            .filter(|n| held.lock().copies.contains_key(&key(*n)))
            .collect();
        assert!(kept.len() >= 20 && kept.len() < 30, "{kept:?}");
        assert_eq!(
            kept,
            (30 - kept.len()..30).collect::<Vec<_>>(),
            "the newest are kept"
        );
        // Taken out while written: not counted; written again: newest.
        let first = kept[0];
        let taken = held.take(&key(first)).unwrap();
        assert!(!held.lock().copies.contains_key(&key(first)));
        held.keep(key(first), taken);
        held.keep(key(100), copy(90));
        assert!(held.lock().copies.contains_key(&key(first)));
        assert!(!held.lock().copies.contains_key(&key(kept[1])));
    }
}
