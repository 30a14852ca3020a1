//! Unit tests of audit events, the chain and verification.

use super::GENESIS;
use super::canonical::canonical_json;
use super::chain::{AuditChain, ChainHead, EventPieces, Rendered, chain_hash};
use super::event::{
    AuditApproval, AuditCommand, AuditDecision, AuditEvent, AuditEventDraft, AuditIdentity,
    AuditKind, AuditMaskCount, AuditOutcome,
};
use super::verify::{ChainVerifier, VerifyErrorKind, verify_lines};
use serde_json::Value;
use sluice_crds::{Action, RequestPhase};

use serde_json::json;

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
            recorded: None,
            rows: Some(u64::MAX),
            duration_ms: Some(0),
            error: Some(nasty.into()),
            masked: Some(7),
            masks: vec![
                AuditMaskCount {
                    count: 4,
                    index: Some(0),
                    policy: Some(nasty.into()),
                },
                AuditMaskCount {
                    count: 3,
                    index: None,
                    policy: None,
                },
            ],
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
    let report = verify_lines(lines.iter().map(String::as_str), &[chain.head()]).expect("verifies");
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
        recorded: None,
        duration_ms: Some(3),
        error: Some("23505 \"quoted\"\n".into()),
        masked: Some(2),
        masks: vec![AuditMaskCount {
            count: 2,
            index: Some(1),
            policy: Some("shop/pii".into()),
        }],
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
