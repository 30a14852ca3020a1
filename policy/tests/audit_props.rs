//! Properties of the audit hash chain: an intact log verifies; every kind of
//! tampering is found, with the right kind and line.

// Test helpers outside #[test] functions may panic on impossible failures.
#![allow(clippy::expect_used)]

use proptest::prelude::*;
use serde_json::Value;
use sluice_crds::Action;
use sluice_policy::audit::{
    AuditChain, AuditCommand, AuditDecision, AuditEventDraft, AuditIdentity, AuditKind,
    AuditOutcome, ChainHead, VerifyErrorKind, verify_lines,
};

const STREAMS: [&str; 3] = ["pod-a/boot-1", "pod-b/boot-7", "pod-a/boot-2"];

fn kind() -> impl Strategy<Value = AuditKind> {
    prop::sample::select(vec![
        AuditKind::SessionStart,
        AuditKind::SessionEnd,
        AuditKind::Statement,
        AuditKind::Result,
        AuditKind::Mask,
        AuditKind::Denial,
        AuditKind::Approval,
    ])
}

fn draft() -> impl Strategy<Value = AuditEventDraft> {
    (
        kind(),
        "2026-0[1-9]-1[0-9]T0[0-9]:[0-5][0-9]:[0-5][0-9]Z",
        prop::option::of("[a-z0-9-]{1,12}"),
        prop::option::of((
            "[a-z]{1,8}",
            "[a-z-]{1,12}",
            prop::collection::vec("[a-z:]{1,10}", 0..3),
        )),
        prop::option::of(("\\PC{0,24}", "[0-9a-f]{8}")),
        prop::option::of((any::<bool>(), prop::option::of("[a-z-]{1,10}"))),
        prop::option::of((any::<u32>(), prop::option::of("\\PC{0,16}"))),
    )
        .prop_map(
            |(kind, time, session, identity, command, decision, outcome)| AuditEventDraft {
                session,
                identity: identity.map(|(namespace, service_account, groups)| AuditIdentity {
                    namespace,
                    service_account,
                    pod: None,
                    groups,
                }),
                connection: Some("orders-db".into()),
                command: command.map(|(text, fingerprint)| AuditCommand {
                    text,
                    fingerprint,
                    kind: Some("select".into()),
                }),
                decision: decision.map(|(deny, rule)| AuditDecision {
                    action: if deny { Action::Deny } else { Action::Allow },
                    policy: Some("reporting".into()),
                    rule,
                    dry_run: deny,
                    reason: None,
                }),
                outcome: outcome.map(|(rows, error)| AuditOutcome {
                    recorded: None,
                    rows: Some(u64::from(rows)),
                    duration_ms: Some(3),
                    error,
                    masked: None,
                    masks: Vec::new(),
                }),
                approval: None,
                ..AuditEventDraft::new(time, kind)
            },
        )
}

/// A log: events of up to three interleaved streams.
#[derive(Clone, Debug)]
struct Log {
    /// Stream of each line.
    streams: Vec<usize>,
    /// The lines.
    lines: Vec<String>,
    /// Head of each stream after each line (for intermediate checkpoints).
    heads_after: Vec<ChainHead>,
    /// Final head of every stream that has events.
    heads: Vec<ChainHead>,
}

fn build(events: &[(usize, AuditEventDraft)]) -> Log {
    let mut chains: Vec<AuditChain> = STREAMS.iter().map(|s| AuditChain::new(*s)).collect();
    let mut log = Log {
        streams: Vec::new(),
        lines: Vec::new(),
        heads_after: Vec::new(),
        heads: Vec::new(),
    };
    for (s, d) in events {
        let e = chains[*s].append(d.clone()).expect("appends");
        log.streams.push(*s);
        log.lines.push(e.to_line().expect("serialises"));
        log.heads_after.push(chains[*s].head());
    }
    log.heads = chains
        .iter()
        .map(AuditChain::head)
        .filter(|h| h.seq > 0)
        .collect();
    log
}

fn log() -> impl Strategy<Value = (Vec<(usize, AuditEventDraft)>, Log)> {
    prop::collection::vec((0usize..3, draft()), 1..24).prop_map(|events| {
        let log = build(&events);
        (events, log)
    })
}

fn verify(lines: &[String], checkpoints: &[ChainHead]) -> Result<(), (usize, VerifyErrorKind)> {
    verify_lines(lines.iter().map(String::as_str), checkpoints)
        .map(|_| ())
        .map_err(|e| (e.line, e.kind))
}

/// Changes one leaf of a JSON value (the `n`-th, in document order) so that it
/// stays well-formed: hex hashes stay hex, numbers stay numbers.
fn edit_leaf(v: &mut Value, n: &mut usize, key: Option<&str>) -> bool {
    match v {
        Value::Object(m) => {
            for (k, c) in m.iter_mut() {
                if edit_leaf(c, n, Some(k)) {
                    return true;
                }
            }
            false
        }
        Value::Array(a) => a.iter_mut().any(|c| edit_leaf(c, n, key)),
        leaf => {
            if *n > 0 {
                *n -= 1;
                return false;
            }
            match leaf {
                Value::String(s) if matches!(key, Some("prev" | "hash")) => {
                    let last = if s.ends_with('0') { '1' } else { '0' };
                    s.pop();
                    s.push(last);
                }
                Value::String(s) => s.push('x'),
                Value::Number(x) => *leaf = Value::from(x.as_u64().unwrap_or(0) + 1),
                Value::Bool(b) => *b = !*b,
                _ => *leaf = Value::from(1),
            }
            true
        }
    }
}

fn count_leaves(v: &Value) -> usize {
    match v {
        Value::Object(m) => m.values().map(count_leaves).sum(),
        Value::Array(a) => a.iter().map(count_leaves).sum(),
        _ => 1,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn intact_logs_verify((_, log) in log(), pick in prop::collection::vec(any::<prop::sample::Index>(), 0..4)) {
        // Final heads and a few intermediate heads as checkpoints.
        let mut checkpoints = log.heads.clone();
        checkpoints.extend(pick.iter().map(|i| i.get(&log.heads_after).clone()));
        let report = verify_lines(log.lines.iter().map(String::as_str), &checkpoints)
            .expect("an intact log verifies");
        prop_assert_eq!(report.events, log.lines.len() as u64);
        prop_assert_eq!(report.streams, log.heads.len());
        let mut heads = log.heads.clone();
        heads.sort();
        prop_assert_eq!(report.heads, heads);
        prop_assert_eq!(report.checkpoints_matched, checkpoints.len());
        // Blank lines (a trailing newline) change nothing.
        let mut with_blank = log.lines.clone();
        with_blank.push(String::new());
        prop_assert!(verify(&with_blank, &checkpoints).is_ok());
    }

    #[test]
    fn any_edit_is_found_at_its_line((_, log) in log(), which in any::<prop::sample::Index>(), leaf in any::<prop::sample::Index>()) {
        let i = which.index(log.lines.len());
        let mut v: Value = serde_json::from_str(&log.lines[i]).expect("json");
        let mut n = leaf.index(count_leaves(&v));
        prop_assert!(edit_leaf(&mut v, &mut n, None));
        let mut lines = log.lines.clone();
        lines[i] = v.to_string();
        prop_assert_eq!(verify(&lines, &log.heads), Err((i + 1, VerifyErrorKind::Edited)));
    }

    #[test]
    fn swapping_events_of_a_stream_is_found((_, log) in log(), a in any::<prop::sample::Index>(), b in any::<prop::sample::Index>()) {
        // Two distinct events of the same stream.
        let s = log.streams[a.index(log.streams.len())];
        let positions: Vec<usize> = (0..log.streams.len()).filter(|p| log.streams[*p] == s).collect();
        prop_assume!(positions.len() >= 2);
        let x = a.index(positions.len());
        let mut y = b.index(positions.len());
        if x == y {
            y = (y + 1) % positions.len();
        }
        let (p, q) = (positions[x.min(y)], positions[x.max(y)]);
        let mut lines = log.lines.clone();
        lines.swap(p, q);
        // The first line of the stream after p goes backwards.
        let first_after = positions.iter().copied().find(|r| *r > p).expect("q is after p");
        prop_assert_eq!(verify(&lines, &log.heads), Err((first_after + 1, VerifyErrorKind::Reordered)));
    }

    #[test]
    fn dropping_an_event_is_found((_, log) in log(), which in any::<prop::sample::Index>()) {
        let i = which.index(log.lines.len());
        let s = log.streams[i];
        let mut lines = log.lines.clone();
        lines.remove(i);
        let next_of_stream = (i + 1..log.streams.len()).find(|r| log.streams[*r] == s);
        let expected = match next_of_stream {
            // The next event of the stream, one line earlier now, shows the gap.
            Some(r) => (r, VerifyErrorKind::Dropped),
            // The stream's last event: only its checkpoint shows it is gone.
            None => (lines.len() + 1, VerifyErrorKind::Truncated),
        };
        prop_assert_eq!(verify(&lines, &log.heads), Err(expected));
        if next_of_stream.is_none() {
            // Without a checkpoint, dropping a stream's tail cannot be seen.
            prop_assert!(verify(&lines, &[]).is_ok());
        }
    }

    #[test]
    fn truncating_the_tail_is_found((_, log) in log(), cut in any::<prop::sample::Index>()) {
        let keep = cut.index(log.lines.len());
        let lines = log.lines[..keep].to_vec();
        prop_assert_eq!(verify(&lines, &log.heads), Err((keep + 1, VerifyErrorKind::Truncated)));
    }

    #[test]
    fn a_rewritten_chain_is_found_by_its_checkpoint((events, log) in log(), which in any::<prop::sample::Index>()) {
        // Edit one event and recompute every hash: the chain is self-consistent...
        let i = which.index(events.len());
        let mut forged = events.clone();
        forged[i].1.time.push('x');
        let rewritten = build(&forged);
        prop_assert!(verify(&rewritten.lines, &[]).is_ok());
        // ...but the stream's signed head no longer matches its last event.
        let s = events[i].0;
        let last_of_stream = (0..events.len()).rev().find(|r| events[*r].0 == s).expect("i is one");
        prop_assert_eq!(
            verify(&rewritten.lines, &log.heads),
            Err((last_of_stream + 1, VerifyErrorKind::CheckpointMismatch))
        );
    }
}
