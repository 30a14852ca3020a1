//! The durable checkpoint history (#18 item 4, #21 item 2): every checkpoint
//! the gateway signs, kept per Connection in a ConfigMap of the operator's
//! namespace, and every public key that signed one.
//!
//! `Connection.status.auditCheckpoint` holds one slot (the latest head of any
//! of its streams); a replica's memory holds the rest until it restarts. An
//! auditor needs the history for a period, per stream, from any replica, after
//! restarts and key rotations:
//!
//! - `sluice-checkpoints.NAMESPACE.CONNECTION` (hashed when longer than a
//!   ConfigMap name may be), data `checkpoints.jsonl`: one signed checkpoint
//!   a line (the gateway's `SignedHead` and the signing time), oldest first.
//!   Bounded by [`MAX_LINES`] and [`MAX_BYTES`]: the oldest lines go first,
//!   but a stream's newest checkpoint is kept as long as another line can go.
//! - `sluice-checkpoint-keys`, data `jwks.json`: the public keys (JWKS) that
//!   signed checkpoints, at most [`MAX_KEYS`], oldest dropped first. The
//!   gateway's `/v1/jwks` drops rotated keys; this keeps them, so an old
//!   checkpoint still verifies.
//!
//! They live in the operator's namespace, not the Connection's, so that
//! the workloads' owners (who may edit ConfigMaps in their namespace) cannot
//! thin the history, and so that it outlives a deleted Connection (evidence
//! must). Forging one is impossible without the signing key; deleting lines
//! needs write access to the operator's namespace. `kubectl sluice audit
//! checkpoints CONNECTION` and `audit jwks` read them.
//!
//! Writes are made under the resourceVersion read or last written, so
//! replicas flushing at once cannot lose each other's lines (one gets a
//! conflict). [`append`] reads, merges and writes; the audit flush appends
//! to the copy it last wrote without reading it back, and reads only after a
//! conflict (`audit_intake/history.rs`).

use std::collections::{BTreeMap, HashSet};

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::wire::SignedHead;

/// The ConfigMap of published checkpoint keys.
pub const KEYS_CONFIG_MAP: &str = "sluice-checkpoint-keys";
/// Its key holding the JWKS.
pub const KEYS_DATA_KEY: &str = "jwks.json";
/// The history ConfigMaps' key holding the checkpoints.
pub const HISTORY_DATA_KEY: &str = "checkpoints.jsonl";
/// Label on every history ConfigMap (`kubectl get cm -l sluice.dev/checkpoint-history`).
pub const HISTORY_LABEL: &str = "sluice.dev/checkpoint-history";
/// Most checkpoints one Connection's history keeps.
pub const MAX_LINES: usize = 2_000;
/// Most bytes of one Connection's history (a ConfigMap holds at most 1 MiB).
pub const MAX_BYTES: usize = 768 * 1024;
/// Most keys kept published.
pub const MAX_KEYS: usize = 64;
/// Longest ConfigMap name (a DNS subdomain).
const MAX_NAME: usize = 253;

/// One line of a history: a signed checkpoint and when it was signed. Its
/// fields are those `kubectl sluice audit verify --checkpoints` reads.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct HistoryEntry {
    /// The checkpoint as the sidecar received it.
    #[serde(flatten)]
    pub head: SignedHead,
    /// The Connection's namespace.
    pub namespace: String,
    /// When it was signed (RFC 3339).
    pub time: String,
}

/// The name of Connection `namespace/connection`'s history ConfigMap.
pub fn history_name(namespace: &str, connection: &str) -> String {
    let name = format!("sluice-checkpoints.{namespace}.{connection}");
    if name.len() <= MAX_NAME {
        return name;
    }
    let digest = Sha256::digest(format!("{namespace}/{connection}").as_bytes());
    format!("sluice-checkpoints.{}", hex::encode(&digest[..16]))
}

/// `existing` (a history's lines) with `new` appended, without repeats, cut
/// to the bounds. Lines that are not history entries are dropped (nothing
/// but the operator writes there).
pub fn merge_history(existing: &str, new: &[HistoryEntry]) -> String {
    let mut lines = Lines::parse_unbounded(existing);
    lines.push(new.iter().cloned());
    lines.bound();
    lines.text()
}

/// A history's lines in memory, each with its key (stream, sequence,
/// hash) and its text, oldest first: what [`merge_history`] makes of a
/// history, kept so that appending to it parses and writes only the new
/// lines (#25: a flush that re-read the whole history cost more the more
/// had been signed).
#[derive(Default, Debug, Clone)]
pub struct Lines {
    lines: Vec<Line>,
    /// The keys of `lines`: a line already held is not appended again.
    seen: HashSet<(String, u64, String)>,
    /// Bytes of the text (each line and its newline).
    bytes: usize,
}

#[derive(Debug, Clone)]
struct Line {
    stream: String,
    sequence: u64,
    hash: String,
    text: String,
}

impl Lines {
    /// The lines of a history's text, within the bounds. Lines that are not
    /// history entries are dropped.
    pub fn parse(text: &str) -> Lines {
        let mut lines = Lines::parse_unbounded(text);
        lines.bound();
        lines
    }

    fn parse_unbounded(text: &str) -> Lines {
        let mut lines = Lines::default();
        lines.push(
            text.lines()
                .filter_map(|l| serde_json::from_str::<HistoryEntry>(l).ok()),
        );
        lines
    }

    /// Appends the entries of `new` not held yet, then cuts to the bounds;
    /// whether any was appended.
    pub fn append(&mut self, new: &[HistoryEntry]) -> bool {
        let before = (self.lines.len(), self.bytes);
        self.push(new.iter().cloned());
        let appended = (self.lines.len(), self.bytes) != before;
        self.bound();
        appended
    }

    /// Bytes of the text.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// The history's text: a line each, oldest first.
    pub fn text(&self) -> String {
        let mut out = String::with_capacity(self.bytes);
        for line in &self.lines {
            out.push_str(&line.text);
            out.push('\n');
        }
        out
    }

    fn push(&mut self, entries: impl Iterator<Item = HistoryEntry>) {
        for entry in entries {
            let key = (
                entry.head.stream.clone(),
                entry.head.sequence,
                entry.head.hash.clone(),
            );
            if self.seen.contains(&key) {
                continue;
            }
            if let Ok(text) = serde_json::to_string(&entry) {
                self.bytes += text.len() + 1;
                self.seen.insert(key);
                self.lines.push(Line {
                    stream: entry.head.stream,
                    sequence: entry.head.sequence,
                    hash: entry.head.hash,
                    text,
                });
            }
        }
    }

    /// Cuts to [`MAX_LINES`] and [`MAX_BYTES`] ([`within_bounds`]); nothing
    /// to do (no pass over the lines) within them.
    fn bound(&mut self) {
        if self.lines.len() <= MAX_LINES && self.bytes <= MAX_BYTES {
            return;
        }
        let sizes: Vec<(&str, usize)> = self
            .lines
            .iter()
            .map(|l| (l.stream.as_str(), l.text.len()))
            .collect();
        let mut kept = within_bounds(&sizes).into_iter().peekable();
        let mut lines = Vec::with_capacity(self.lines.len());
        for (i, line) in std::mem::take(&mut self.lines).into_iter().enumerate() {
            if kept.next_if_eq(&i).is_some() {
                lines.push(line);
            } else {
                self.bytes -= line.text.len() + 1;
                self.seen.remove(&(line.stream, line.sequence, line.hash));
            }
        }
        self.lines = lines;
    }
}

/// Which of `lines` (stream, bytes of the line; oldest first) stay within [`MAX_LINES`]
/// and [`MAX_BYTES`], in order: the oldest lines that are not their
/// stream's newest go first; when only streams' newest lines are left, the
/// oldest of those. One pass (a fleet's flush merges thousands of lines:
/// removing them one at a time was quadratic).
fn within_bounds(lines: &[(&str, usize)]) -> Vec<usize> {
    let newest: BTreeMap<&str, usize> = lines
        .iter()
        .enumerate()
        .map(|(i, (s, _))| (*s, i))
        .collect();
    let mut count = lines.len();
    let mut bytes: usize = lines.iter().map(|(_, l)| l + 1).sum();
    let over = |count: usize, bytes: usize| count > MAX_LINES || bytes > MAX_BYTES;
    let mut dropped = vec![false; lines.len()];
    // Removing a line that is not its stream's newest leaves every stream's
    // newest as it was, so one pass in age order finds them all.
    for (i, (stream, line)) in lines.iter().enumerate() {
        if !over(count, bytes) {
            break;
        }
        if newest.get(stream) != Some(&i) {
            dropped[i] = true;
            count -= 1;
            bytes -= line + 1;
        }
    }
    // Then the oldest of the newest lines (each the last of its stream).
    for (i, (_, line)) in lines.iter().enumerate() {
        if !over(count, bytes) {
            break;
        }
        if !dropped[i] {
            dropped[i] = true;
            count -= 1;
            bytes -= line + 1;
        }
    }
    (0..lines.len()).filter(|&i| !dropped[i]).collect()
}

/// `existing` (a JWKS) with the keys of `new` it lacks appended, at most
/// [`MAX_KEYS`] (the oldest dropped). An unreadable JWKS starts afresh.
pub fn merge_keys(existing: &str, new: &[jsonwebtoken::jwk::Jwk]) -> jsonwebtoken::jwk::JwkSet {
    let mut set: jsonwebtoken::jwk::JwkSet =
        serde_json::from_str(existing).unwrap_or(jsonwebtoken::jwk::JwkSet { keys: Vec::new() });
    for key in new {
        let kid = key.common.key_id.as_deref();
        if kid.is_some() && !set.keys.iter().any(|k| k.common.key_id.as_deref() == kid) {
            set.keys.push(key.clone());
        }
    }
    let excess = set.keys.len().saturating_sub(MAX_KEYS);
    set.keys.drain(..excess);
    set
}

/// Reads ConfigMap `name`, lets `change` compute the new value of `key` from
/// the old (empty when absent), and writes it back under the resourceVersion
/// read (or creates it).
async fn update(
    client: &Client,
    namespace: &str,
    name: &str,
    key: &str,
    labels: BTreeMap<String, String>,
    annotations: BTreeMap<String, String>,
    change: impl FnOnce(&str) -> String,
) -> Result<(), kube::Error> {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    match api.get_opt(name).await? {
        Some(mut cm) => {
            let data = cm.data.get_or_insert_with(BTreeMap::new);
            let old = data.get(key).map(String::as_str).unwrap_or_default();
            let new = change(old);
            if new == old {
                return Ok(());
            }
            data.insert(key.to_string(), new);
            api.replace(name, &PostParams::default(), &cm).await?;
        }
        None => {
            let cm = ConfigMap {
                metadata: ObjectMeta {
                    name: Some(name.to_string()),
                    namespace: Some(namespace.to_string()),
                    labels: Some(labels),
                    annotations: (!annotations.is_empty()).then_some(annotations),
                    ..Default::default()
                },
                data: Some(BTreeMap::from([(key.to_string(), change(""))])),
                ..Default::default()
            };
            api.create(&PostParams::default(), &cm).await?;
        }
    }
    Ok(())
}

/// Appends `entries` to the history of Connection `namespace/connection`.
pub async fn append(
    client: &Client,
    operator_namespace: &str,
    namespace: &str,
    connection: &str,
    entries: &[HistoryEntry],
) -> Result<(), kube::Error> {
    update(
        client,
        operator_namespace,
        &history_name(namespace, connection),
        HISTORY_DATA_KEY,
        history_labels(),
        history_annotations(namespace, connection),
        |old| merge_history(old, entries),
    )
    .await
}

/// The labels of a history ConfigMap.
pub fn history_labels() -> BTreeMap<String, String> {
    BTreeMap::from([
        (HISTORY_LABEL.to_string(), "true".to_string()),
        (
            "app.kubernetes.io/managed-by".to_string(),
            "sluice-operator".to_string(),
        ),
    ])
}

/// The annotations of Connection `namespace/connection`'s history ConfigMap
/// (names up to 253 characters do not fit a label value).
pub fn history_annotations(namespace: &str, connection: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (
            "sluice.dev/connection-namespace".to_string(),
            namespace.to_string(),
        ),
        ("sluice.dev/connection".to_string(), connection.to_string()),
    ])
}

/// The last head (sequence, hash) of each stream in a Connection's durable
/// history.
pub type Floors = std::collections::HashMap<String, (u64, String)>;

/// Reads Connection `namespace/connection`'s durable history: the last head
/// of each of its streams (none when there is no history yet). One GET.
pub async fn read_floors(
    client: &Client,
    operator_namespace: &str,
    namespace: &str,
    connection: &str,
) -> Result<Floors, kube::Error> {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), operator_namespace);
    let cm = api.get_opt(&history_name(namespace, connection)).await?;
    Ok(cm
        .and_then(|cm| cm.data?.remove(HISTORY_DATA_KEY))
        .map(|text| floors_of(&text, namespace, connection))
        .unwrap_or_default())
}

/// The fields of a history line the floors need, borrowed where the line
/// lets them be (the signature and the rest are skipped, not copied).
#[derive(Deserialize)]
struct LineHead<'a> {
    #[serde(borrow)]
    connection: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    stream: std::borrow::Cow<'a, str>,
    sequence: u64,
    #[serde(borrow)]
    hash: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    namespace: std::borrow::Cow<'a, str>,
}

/// The last head of each stream of `namespace/connection` in a history's
/// text: the highest sequence (the first line of it when repeated). Lines
/// that do not read as history lines, or name another Connection, are skipped.
fn floors_of(text: &str, namespace: &str, connection: &str) -> Floors {
    let mut floors = Floors::new();
    for line in text.lines() {
        let Ok(head) = serde_json::from_str::<LineHead<'_>>(line) else {
            continue;
        };
        if head.namespace != namespace || head.connection != connection {
            continue;
        }
        match floors.get_mut(head.stream.as_ref()) {
            Some(floor) if floor.0 >= head.sequence => {}
            Some(floor) => *floor = (head.sequence, head.hash.into_owned()),
            None => {
                floors.insert(
                    head.stream.into_owned(),
                    (head.sequence, head.hash.into_owned()),
                );
            }
        }
    }
    floors
}

/// Adds `keys` to the published checkpoint keys.
pub async fn publish_keys(
    client: &Client,
    operator_namespace: &str,
    keys: &[jsonwebtoken::jwk::Jwk],
) -> Result<(), kube::Error> {
    let labels = BTreeMap::from([(
        "app.kubernetes.io/managed-by".to_string(),
        "sluice-operator".to_string(),
    )]);
    update(
        client,
        operator_namespace,
        KEYS_CONFIG_MAP,
        KEYS_DATA_KEY,
        labels,
        BTreeMap::new(),
        |old| {
            let merged = merge_keys(old, keys);
            serde_json::to_string(&merged).unwrap_or_else(|_| old.to_string())
        },
    )
    .await
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn entry(stream: &str, seq: u64, pad: usize) -> HistoryEntry {
        HistoryEntry {
            head: SignedHead {
                connection: "orders-db".into(),
                stream: stream.into(),
                sequence: seq,
                hash: format!("{seq:064x}"),
                signature: "s".repeat(pad),
                key_id: "k".into(),
                identity: "system:serviceaccount:shop:app".into(),
                pod: "app-0".into(),
            },
            namespace: "shop".into(),
            time: "2026-12-06T08:00:00Z".into(),
        }
    }

    fn seqs(text: &str) -> Vec<(String, u64)> {
        text.lines()
            .map(|l| serde_json::from_str::<HistoryEntry>(l).unwrap())
            .map(|e| (e.head.stream, e.head.sequence))
            .collect()
    }

    #[test]
    fn history_appends_without_repeats_and_keeps_each_streams_newest_within_bounds() {
        let first = merge_history("", &[entry("a", 1, 10), entry("b", 1, 10)]);
        let second = merge_history(&first, &[entry("a", 1, 10), entry("a", 2, 10)]);
        assert_eq!(
            seqs(&second),
            [("a".into(), 1), ("b".into(), 1), ("a".into(), 2)]
        );
        // Over the count: the oldest lines go, but not b's only (newest) one.
        let many: Vec<HistoryEntry> = (3..(MAX_LINES as u64 + 10))
            .map(|s| entry("a", s, 10))
            .collect();
        let full = merge_history(&second, &many);
        let kept = seqs(&full);
        assert_eq!(kept.len(), MAX_LINES);
        assert!(kept.contains(&("b".into(), 1)), "b's newest was dropped");
        assert_eq!(kept.last(), Some(&("a".into(), MAX_LINES as u64 + 9)));
        // Over the bytes.
        let big: Vec<HistoryEntry> = (1..200).map(|s| entry("c", s, 8 * 1024)).collect();
        assert!(merge_history(&full, &big).len() <= MAX_BYTES);
    }

    /// The bound as it was written first (a line at a time), the oracle
    /// of the one-pass [`within_bounds`].
    fn line_by_line(mut lines: Vec<(String, String)>) -> Vec<(String, String)> {
        let bytes =
            |lines: &[(String, String)]| lines.iter().map(|(_, l)| l.len() + 1).sum::<usize>();
        while lines.len() > MAX_LINES || bytes(&lines) > MAX_BYTES {
            let newest: BTreeMap<&str, usize> = lines
                .iter()
                .enumerate()
                .map(|(i, (s, _))| (s.as_str(), i))
                .collect();
            let victim = lines
                .iter()
                .enumerate()
                .position(|(i, (s, _))| newest.get(s.as_str()) != Some(&i))
                .unwrap_or(0);
            lines.remove(victim);
        }
        lines
    }

    #[test]
    fn the_one_pass_bound_keeps_what_the_line_by_line_one_kept() {
        // Streams of uneven rates and line sizes, over the count, over the
        // bytes, over both, and only streams' newest lines over the count.
        let cases: Vec<Vec<(String, String)>> = vec![
            (0..MAX_LINES + 700)
                .map(|i| (format!("s{}", i % 7), "x".repeat(40 + i % 13)))
                .collect(),
            (0..900)
                .map(|i| (format!("s{}", i % 3), "y".repeat(1_000 + (i * 37) % 900)))
                .collect(),
            (0..MAX_LINES + 50)
                .map(|i| (format!("s{}", i % 1_500), "z".repeat(300 + i % 200)))
                .collect(),
            (0..MAX_LINES + 30)
                .map(|i| (format!("only-{i}"), "w".repeat(20)))
                .collect(),
        ];
        for lines in cases {
            let sizes: Vec<(&str, usize)> =
                lines.iter().map(|(s, l)| (s.as_str(), l.len())).collect();
            let kept: Vec<(String, String)> = within_bounds(&sizes)
                .into_iter()
                .map(|i| lines[i].clone())
                .collect();
            assert_eq!(kept, line_by_line(lines));
        }
    }

    /// Held lines appended to flush after flush write, byte for byte, what
    /// reading, merging and writing the whole text wrote: through repeats,
    /// lines sent again after the bound dropped them, and both bounds.
    #[test]
    fn appending_to_held_lines_writes_what_merging_the_text_wrote() {
        let mut text = String::new();
        let mut held = Lines::default();
        let mut previous: Vec<HistoryEntry> = Vec::new();
        for flush in 0..40u64 {
            let mut new: Vec<HistoryEntry> = (0..(flush * 37 % 150 + 1))
                .map(|i| {
                    entry(
                        &format!("s{}", i % 9),
                        flush * 1_000 + i,
                        (i as usize * 131) % 700,
                    )
                })
                .collect();
            new.extend(previous.iter().take(3).cloned());
            new.push(entry("s1", 5, 1));
            text = merge_history(&text, &new);
            let appended = held.append(&new);
            assert!(appended);
            assert_eq!(held.text(), text, "flush {flush}");
            assert_eq!(held.bytes(), text.len());
            // The same again: what merging wrote (lines the bound dropped come back
            // as they would have); nothing to write while within the bounds.
            let mut again = held.clone();
            let appended = again.append(&new);
            assert_eq!(again.text(), merge_history(&text, &new));
            if flush < 3 {
                assert!(!appended, "nothing new the second time");
            }
            previous = new;
        }
        assert!(seqs(&text).len() == MAX_LINES || text.len() > MAX_BYTES - 1_000);
        assert_eq!(Lines::parse(&text).text(), text);
        let written_elsewhere = format!("not json\n{text}");
        assert_eq!(
            Lines::parse(&written_elsewhere).text(),
            merge_history(&written_elsewhere, &[])
        );
    }

    #[test]
    fn floors_are_each_streams_highest_sequence_on_that_connection() {
        let mut other_connection = entry("a", 9, 1);
        other_connection.head.connection = "billing-db".into();
        let mut other_namespace = entry("a", 8, 1);
        other_namespace.namespace = "else".into();
        let mut repeat = entry("a", 3, 1);
        repeat.head.hash = "later".into();
        let text = [
            entry("a", 2, 1),
            entry("a", 3, 1),
            entry("b", 7, 1),
            repeat,
            entry("a", 1, 1),
            other_connection,
            other_namespace,
        ]
        .iter()
        .map(|e| serde_json::to_string(e).unwrap())
        .chain(["not json".to_string(), String::new()])
        .collect::<Vec<_>>()
        .join("\n");
        let floors = floors_of(&text, "shop", "orders-db");
        assert_eq!(floors.len(), 2, "{floors:?}");
        assert_eq!(floors["a"], (3, format!("{:064x}", 3)));
        assert_eq!(floors["b"], (7, format!("{:064x}", 7)));
        // A line with escapes in a field still reads (borrowed or not).
        let escaped = serde_json::to_string(&entry("s\"q", 4, 1)).unwrap();
        assert_eq!(floors_of(&escaped, "shop", "orders-db")["s\"q"].0, 4);
    }

    #[test]
    fn long_names_are_hashed_to_a_valid_config_map_name() {
        assert_eq!(
            history_name("shop", "orders-db"),
            "sluice-checkpoints.shop.orders-db"
        );
        let long = history_name("shop", &"c".repeat(253));
        assert!(long.len() <= MAX_NAME && long.starts_with("sluice-checkpoints."));
        assert_ne!(long, history_name("shop", &"d".repeat(253)));
    }
}
