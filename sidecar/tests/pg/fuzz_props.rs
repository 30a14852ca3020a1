//! Fuzzing inside `cargo test` (issue #17 item 9): property tests over the
//! PostgreSQL framing and message decoders and the HTTP response maskers,
//! each a bounded number of cases (seconds on CI). The properties: nothing
//! panics on any input; output and buffers stay bounded relative to the
//! input; decode(encode(x)) == x; a masker never lets a seeded PII value out,
//! however the body is chunked; a framing error ends in an error, never a
//! wait. Crash reproducers found by these properties are kept below as plain
//! regression tests (`regression_*`). For a longer run, raise the case
//! count: `PROPTEST_CASES=100000 cargo test -p sluice-sidecar --test pg fuzz_props::`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::BytesMut;
use proptest::prelude::*;
use serde_json::Value;
use sluice_crds::AccessPolicy;
use sluice_policy::engine::{CompiledPolicy, Identity, PolicySet, SecretSource};
use sluice_sidecar::http::stream_mask::JsonStreamMasker;
use sluice_sidecar::http::text_mask::TextMasker;
use sluice_sidecar::postgres::framing::{FrameReader, FramingError, Peer};
use sluice_sidecar::postgres::messages::{
    command_complete, data_row, describe, error_response, startup,
};
use tokio::io::{AsyncRead, ReadBuf};

/// The case count: `default`, or `PROPTEST_CASES` for a longer fuzzing run.
fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

// === PostgreSQL framing ===

/// A socket that delivers the given chunks one read at a time, then ends.
struct Chunked(VecDeque<Vec<u8>>);

impl AsyncRead for Chunked {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if let Some(mut chunk) = self.0.pop_front() {
            let n = chunk.len().min(buf.remaining());
            buf.put_slice(&chunk[..n]);
            if n < chunk.len() {
                self.0.push_front(chunk.split_off(n));
            }
        }
        Poll::Ready(Ok(()))
    }
}

/// `bytes` cut at the given points (taken modulo the length).
fn chunks(bytes: &[u8], cuts: &[usize]) -> VecDeque<Vec<u8>> {
    let mut at: Vec<usize> = cuts
        .iter()
        .map(|c| c % (bytes.len() + 1))
        .chain([0, bytes.len()])
        .collect();
    at.sort_unstable();
    at.dedup();
    at.windows(2)
        .map(|w| bytes[w[0]..w[1]].to_vec())
        .filter(|c| !c.is_empty())
        .collect()
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(f)
}

/// What reading a whole stream gave: the frames (type, body), how it ended,
/// and the read buffer's capacity at the end.
type Read = (Vec<(u8, Vec<u8>)>, Result<(), String>, usize);

/// Reads a whole stream cut at `cuts`.
fn read_all(stream: &[u8], cuts: &[usize], max: usize) -> Read {
    block_on(async {
        let mut r = FrameReader::new(Chunked(chunks(stream, cuts)), Peer::Client, max);
        let mut frames = Vec::new();
        let end = loop {
            match r.next().await {
                Ok(Some(f)) => frames.push((f.tag, f.body().to_vec())),
                Ok(None) => break Ok(()),
                Err(e) => break Err(describe_framing(&e)),
            }
        };
        let (_, buf) = r.into_parts();
        (frames, end, buf.capacity())
    })
}

fn describe_framing(e: &FramingError) -> String {
    match e {
        FramingError::TooShort { .. } => "short".into(),
        FramingError::TooLarge { .. } => "large".into(),
        FramingError::Truncated { .. } => "truncated".into(),
        FramingError::Io { .. } => "io".into(),
        FramingError::OverBudget { .. } => "over budget".into(),
    }
}

fn encode_frames(messages: &[(u8, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (tag, body) in messages {
        out.push(*tag);
        out.extend_from_slice(&(body.len() as i32 + 4).to_be_bytes());
        out.extend_from_slice(body);
    }
    out
}

fn message() -> impl Strategy<Value = (u8, Vec<u8>)> {
    (any::<u8>(), proptest::collection::vec(any::<u8>(), 0..200))
}

/// The read buffer may hold one message (at most `max` + 1 bytes) plus one
/// read's worth; anything more is memory a peer made the sidecar hold.
fn buffer_bound(max: usize) -> usize {
    2 * (max + 1) + 2 * 64 * 1024 + 8192
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases(400)))]

    /// decode(encode(x)) == x for any messages, however the stream is cut.
    #[test]
    fn framing_round_trips_at_any_chunking(
        messages in proptest::collection::vec(message(), 0..12),
        cuts in proptest::collection::vec(any::<usize>(), 0..16),
    ) {
        let stream = encode_frames(&messages);
        let (frames, end, capacity) = read_all(&stream, &cuts, 4096);
        prop_assert_eq!(end, Ok(()));
        prop_assert_eq!(frames, messages);
        prop_assert!(capacity <= buffer_bound(4096));
    }

    /// Any bytes: frames within the maximum, a clean end or an error (never a
    /// wait on a closed stream), a buffer bounded by the maximum, not by the
    /// length fields a peer writes.
    #[test]
    fn framing_of_arbitrary_bytes_is_bounded(
        stream in proptest::collection::vec(any::<u8>(), 0..2048),
        cuts in proptest::collection::vec(any::<usize>(), 0..16),
        max in 4usize..1024,
    ) {
        let (frames, end, capacity) = read_all(&stream, &cuts, max);
        let consumed: usize = frames.iter().map(|(_, b)| b.len() + 5).sum();
        prop_assert!(frames.iter().all(|(_, b)| b.len() + 4 <= max));
        prop_assert!(capacity <= buffer_bound(max), "{} bytes buffered", capacity);
        match end {
            Ok(()) => prop_assert_eq!(consumed, stream.len()),
            Err(_) => prop_assert!(consumed < stream.len()),
        }
    }

    /// A truncated stream is `Truncated` wherever it is cut (the peer left
    /// mid-message), and a length above the maximum is refused at once,
    /// whatever comes after it.
    #[test]
    fn a_cut_or_oversized_message_is_an_error(
        messages in proptest::collection::vec(message(), 1..6),
        cut in any::<usize>(),
        huge in 4097i32..=i32::MAX,
    ) {
        let stream = encode_frames(&messages);
        let keep = 1 + cut % (stream.len() - 1);
        let (_, end, _) = read_all(&stream[..keep], &[], 4096);
        let boundaries: Vec<usize> = messages
            .iter()
            .scan(0, |at, (_, b)| { *at += b.len() + 5; Some(*at) })
            .collect();
        if boundaries.contains(&keep) {
            prop_assert_eq!(end, Ok(()));
        } else {
            prop_assert_eq!(end, Err("truncated".to_string()));
        }
        let mut oversized = stream.clone();
        oversized.push(b'Q');
        oversized.extend_from_slice(&huge.to_be_bytes());
        let (frames, end, capacity) = read_all(&oversized, &[], 4096);
        prop_assert_eq!(frames.len(), messages.len());
        prop_assert_eq!(end, Err("large".to_string()));
        prop_assert!(capacity <= buffer_bound(4096));
    }

    /// Startup packets: any bytes end in a packet, a clean end or an error;
    /// a well-formed packet's parameters come back as sent.
    #[test]
    fn startup_packets(
        stream in proptest::collection::vec(any::<u8>(), 0..512),
        params in proptest::collection::vec(("[a-z_]{1,12}", "[ -~]{0,24}"), 0..6),
        cuts in proptest::collection::vec(any::<usize>(), 0..8),
    ) {
        block_on(async {
            let mut r = FrameReader::new(Chunked(chunks(&stream, &cuts)), Peer::Client, 1024);
            if let Ok(Some(body)) = r.startup_packet().await {
                let _ = startup::StartupPacket::decode(&body);
            }
        });
        let mut body = 196_608i32.to_be_bytes().to_vec();
        let mut seen = std::collections::BTreeMap::new();
        for (k, v) in &params {
            if k == "user" || seen.contains_key(k) {
                continue;
            }
            seen.insert(k.clone(), v.clone());
            body.extend_from_slice(k.as_bytes());
            body.push(0);
            body.extend_from_slice(v.as_bytes());
            body.push(0);
        }
        body.extend_from_slice(b"user\0app\0\0");
        let mut packet = ((body.len() + 4) as i32).to_be_bytes().to_vec();
        packet.extend_from_slice(&body);
        let got = block_on(async {
            let mut r = FrameReader::new(Chunked(chunks(&packet, &cuts)), Peer::Client, 1024);
            r.startup_packet().await.map_err(|e| e.to_string())
        });
        let got = got.map_err(TestCaseError::fail)?.ok_or_else(|| TestCaseError::fail("no packet"))?;
        let decoded = startup::StartupPacket::decode(&got).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let startup::StartupPacket::Startup { params: got_params, .. } = decoded else {
            return Err(TestCaseError::fail("not a StartupMessage"));
        };
        for (k, v) in &seen {
            prop_assert_eq!(got_params.iter().find(|(gk, _)| gk == k).map(|(_, gv)| gv), Some(v));
        }
    }

    /// The messages the sidecar writes read back as written.
    #[test]
    fn messages_round_trip(
        fields in proptest::collection::vec((1u8..=255, "[^\0]{0,40}"), 0..8),
        values in proptest::collection::vec(proptest::option::of(proptest::collection::vec(any::<u8>(), 0..40)), 0..20),
        name in "[^\0]{0,30}",
        rows in any::<u64>(),
        verb in "[A-Z]{1,10}",
    ) {
        let fields: Vec<error_response::Field> = fields
            .into_iter()
            .map(|(code, value)| error_response::Field { code, value })
            .collect();
        let mut out = BytesMut::new();
        error_response::encode_fields(&mut out, b'E', &fields);
        prop_assert_eq!(error_response::decode(&out[5..]).unwrap(), fields);

        let mut out = BytesMut::new();
        out.extend_from_slice(&(values.len() as i16).to_be_bytes());
        for v in &values {
            data_row::put_value(&mut out, v.as_deref());
        }
        let ranges = data_row::values(&out).unwrap();
        let back: Vec<Option<Vec<u8>>> = ranges.iter().map(|r| r.clone().map(|r| out[r].to_vec())).collect();
        prop_assert_eq!(&back, &values);
        // Rewriting keeps the shape; nulling every value bounds the output.
        let mut rewritten = BytesMut::new();
        let changed = data_row::rewrite(&out, &mut rewritten, |_, _| data_row::Rewrite::Keep).unwrap();
        prop_assert_eq!(changed, 0);
        prop_assert_eq!(&rewritten[5..], &out[..]);
        let mut nulled = BytesMut::new();
        data_row::rewrite(&out, &mut nulled, |_, _| data_row::Rewrite::Null).unwrap();
        prop_assert_eq!(nulled.len(), 5 + 2 + 4 * values.len());

        let mut out = BytesMut::new();
        describe::describe_portal(&mut out, &name);
        prop_assert_eq!(describe::decode(&out[5..], "Describe").unwrap(), describe::Target::Portal(&name));
        let mut out = BytesMut::new();
        describe::describe_statement(&mut out, &name);
        prop_assert_eq!(describe::decode(&out[5..], "Describe").unwrap(), describe::Target::Statement(&name));

        let mut out = BytesMut::new();
        command_complete::encode(&mut out, &format!("{verb} {rows}"));
        prop_assert_eq!(command_complete::rows(&out[5..]), Some(rows));
        prop_assert_eq!(command_complete::with_rows(&out[5..], 7), format!("{verb} 7"));
    }

    /// Backend decoders on any bytes: no panic, and what decodes is bounded
    /// by the body (a count field cannot make a large allocation).
    #[test]
    fn backend_decoders_are_bounded(body in proptest::collection::vec(any::<u8>(), 0..512)) {
        if let Ok(v) = data_row::values(&body) {
            prop_assert!(v.len() * 4 <= body.len());
            for r in v.into_iter().flatten() {
                prop_assert!(r.end <= body.len());
            }
        }
        if let Ok(f) = error_response::decode(&body) {
            prop_assert!(f.iter().map(|f| f.value.len().min(1) + 1).sum::<usize>() <= body.len());
        }
        let mut out = BytesMut::new();
        if data_row::rewrite(&body, &mut out, |_, v| match v {
            Some(_) => data_row::Rewrite::Replace(bytes::Bytes::from_static(b"[redacted]")),
            None => data_row::Rewrite::Keep,
        }).is_ok() {
            prop_assert!(out.len() <= 5 + body.len() + 10 * body.len() / 4);
        }
        let _ = startup::decode_backend_key_data(&body);
    }
}

// === HTTP response maskers ===

struct NoSecrets;
impl SecretSource for NoSecrets {
    fn secret_key(&self, _: &str, _: &str) -> Option<Vec<u8>> {
        None
    }
}

fn policy_set(masking: &str) -> Arc<PolicySet> {
    let yaml = format!(
        "apiVersion: sluice.dev/v1alpha1\nkind: AccessPolicy\nmetadata: {{name: p, namespace: ns}}\nspec:\n  subjects: [{{serviceAccount: app}}]\n  connections: [api]\n  masking:\n{masking}"
    );
    let ap: AccessPolicy = serde_saphyr::from_str(&yaml).unwrap();
    let compiled = Arc::new(CompiledPolicy::compile(&ap, &NoSecrets).unwrap());
    Arc::new(
        PolicySet::select(
            &[compiled],
            &Identity::service_account("ns", "app"),
            "api",
            None,
        )
        .unwrap(),
    )
}

fn detector_set() -> Arc<PolicySet> {
    policy_set(
        "  - detectors: [creditCard, email, ssn]\n    strategy: redact\n  - jsonPaths: [\"$..secret\"]\n    strategy: redact\n",
    )
}

/// Seeded PII: card numbers (Luhn-valid), e-mail addresses, SSNs.
const CARDS: &[&str] = &["4111111111111111", "5500005555555559", "4000056655665556"];
const EMAILS: &[&str] = &["ann.lee@example.com", "bob@mail.example.org"];
const SSNS: &[&str] = &["219-09-9999", "078-05-1120"];
/// A value every `$..secret` path masks.
const SECRET: &str = "hunter2-topsecret";

fn pii() -> Vec<&'static str> {
    CARDS.iter().chain(EMAILS).chain(SSNS).copied().collect()
}

/// A JSON document as written by some server: values, keys, escapes and
/// number spellings vary.
#[derive(Debug, Clone)]
enum Doc {
    Int(i64),
    /// A card number written as a JSON number, in spelling `style`.
    CardNumber(usize, u8),
    Text(String, u8),
    Pii(usize, u8),
    Bool(bool),
    Null,
    Array(Vec<Doc>),
    Object(Vec<(Key, Doc)>),
}

#[derive(Debug, Clone)]
enum Key {
    Plain(String),
    Pii(usize),
    Secret,
}

fn doc() -> impl Strategy<Value = Doc> {
    let leaf = prop_oneof![
        any::<i64>().prop_map(Doc::Int),
        (0..CARDS.len(), 0u8..5).prop_map(|(i, s)| Doc::CardNumber(i, s)),
        ("[a-z .]{0,12}", 0u8..3).prop_map(|(t, s)| Doc::Text(t, s)),
        (0..7usize, 0u8..4).prop_map(|(i, s)| Doc::Pii(i, s)),
        any::<bool>().prop_map(Doc::Bool),
        Just(Doc::Null),
    ];
    leaf.prop_recursive(5, 64, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Doc::Array),
            proptest::collection::vec(
                (
                    prop_oneof![
                        "[a-z]{1,6}".prop_map(Key::Plain),
                        (0..7usize).prop_map(Key::Pii),
                        Just(Key::Secret),
                    ],
                    inner
                ),
                0..6
            )
            .prop_map(Doc::Object),
        ]
    })
}

/// A JSON string for `s`: style 0 plain, 1 every character `\u`-escaped,
/// 2 every other one, 3 with a `/` escape (`\/`) where allowed.
fn write_str(out: &mut String, s: &str, style: u8) {
    out.push('"');
    for (i, c) in s.chars().enumerate() {
        let escape = match style {
            1 => true,
            2 => i % 2 == 0,
            _ => false,
        };
        if escape {
            let mut units = [0u16; 2];
            for u in c.encode_utf16(&mut units) {
                out.push_str(&format!("\\u{:04x}", u));
            }
        } else if c == '"' || c == '\\' {
            out.push('\\');
            out.push(c);
        } else if c == '/' && style == 3 {
            out.push_str("\\/");
        } else {
            out.push(c);
        }
    }
    out.push('"');
}

fn write_doc(out: &mut String, d: &Doc, secret_inside: &mut Vec<String>) {
    match d {
        Doc::Int(n) => out.push_str(&n.to_string()),
        Doc::CardNumber(i, style) => {
            let card = CARDS[*i];
            // Spellings every JSON reader reads as the same number.
            match style {
                0 => out.push_str(card),
                1 => out.push_str(&format!("{card}.0")),
                2 => out.push_str(&format!("{card}e0")),
                3 => out.push_str(&format!("{}.{}e15", &card[..1], &card[1..])),
                _ => out.push_str(&format!("{card}0e-1")),
            }
        }
        Doc::Text(t, style) => write_str(out, t, *style),
        Doc::Pii(i, style) => write_str(out, pii()[*i], *style),
        Doc::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Doc::Null => out.push_str("null"),
        Doc::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_doc(out, item, secret_inside);
            }
            out.push(']');
        }
        Doc::Object(members) => {
            out.push('{');
            let mut seen = std::collections::HashSet::new();
            let mut first = true;
            for (k, v) in members {
                let key = match k {
                    Key::Plain(k) => k.clone(),
                    Key::Pii(i) => pii()[*i].to_string(),
                    Key::Secret => "secret".to_string(),
                };
                if !seen.insert(key.clone()) {
                    continue;
                }
                if !first {
                    out.push(',');
                }
                first = false;
                write_str(out, &key, 0);
                out.push(':');
                if matches!(k, Key::Secret) {
                    let mut inner = String::new();
                    write_doc(&mut inner, v, &mut Vec::new());
                    // Everything under `secret` is masked: its plain texts
                    // and numbers must not come back.
                    collect_texts(v, secret_inside);
                    out.push_str(&inner);
                } else {
                    write_doc(out, v, secret_inside);
                }
            }
            out.push('}');
        }
    }
}

/// Texts (length ≥ 4) under a masked container.
fn collect_texts(d: &Doc, into: &mut Vec<String>) {
    match d {
        Doc::Text(t, _) if t.trim().len() >= 4 => into.push(t.clone()),
        Doc::Array(items) => items.iter().for_each(|i| collect_texts(i, into)),
        Doc::Object(m) => m.iter().for_each(|(_, v)| collect_texts(v, into)),
        _ => {}
    }
}

/// Every text a client reading `v` sees: keys, strings, and numbers as
/// integers where they are integral (how JavaScript prints them).
fn seen_texts(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::String(s) => out.push(s.clone()),
        Value::Number(n) => {
            out.push(n.to_string());
            if let Some(f) = n.as_f64()
                && f.fract() == 0.0
                && f.abs() < 1e20
            {
                out.push(format!("{}", f as i128));
            }
        }
        Value::Array(items) => items.iter().for_each(|i| seen_texts(i, out)),
        Value::Object(m) => {
            for (k, v) in m {
                out.push(k.clone());
                seen_texts(v, out);
            }
        }
        _ => {}
    }
}

fn mask_json(
    set: &Arc<PolicySet>,
    input: &[u8],
    cuts: &[usize],
    lines: bool,
) -> Result<Vec<u8>, String> {
    let mut m = if lines {
        JsonStreamMasker::lines(set.clone())
    } else {
        JsonStreamMasker::new(set.clone())
    };
    let mut out = Vec::new();
    for c in chunks(input, cuts) {
        m.feed(&c, &mut out).map_err(|e| e.to_string())?;
    }
    m.finish(&mut out).map_err(|e| e.to_string())?;
    Ok(out)
}

fn mask_text(set: &Arc<PolicySet>, input: &[u8], cuts: &[usize]) -> Result<Vec<u8>, String> {
    let mut m = TextMasker::new(set.clone());
    let mut out = Vec::new();
    for c in chunks(input, cuts) {
        m.feed(&c, &mut out).map_err(|e| e.to_string())?;
    }
    m.finish(&mut out).map_err(|e| e.to_string())?;
    Ok(out)
}

fn assert_no_pii(out: &[u8], extra: &[String]) -> Result<(), TestCaseError> {
    let text = String::from_utf8_lossy(out);
    for p in pii()
        .iter()
        .copied()
        .chain([SECRET])
        .chain(extra.iter().map(String::as_str))
    {
        prop_assert!(!text.contains(p), "{} leaked: {}", p, text);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases(300)))]

    /// However a JSON document is written (escapes, number spellings, PII in
    /// keys) and however it is chunked, no seeded PII reaches the client, in
    /// the bytes or in the values a JSON reader gets; the output is JSON,
    /// the same at every chunking, and bounded by the input.
    #[test]
    fn json_masking_never_leaks_seeded_pii(
        d in doc(),
        cuts in proptest::collection::vec(any::<usize>(), 0..24),
    ) {
        let set = detector_set();
        let mut text = String::new();
        let mut secret_inside = Vec::new();
        write_doc(&mut text, &d, &mut secret_inside);
        let whole = mask_json(&set, text.as_bytes(), &[], false).map_err(TestCaseError::fail)?;
        let cut = mask_json(&set, text.as_bytes(), &cuts, false).map_err(TestCaseError::fail)?;
        prop_assert_eq!(&whole, &cut, "chunking changed the output of {}", text);
        assert_no_pii(&whole, &secret_inside)?;
        let v: Value = serde_json::from_slice(&whole)
            .map_err(|e| TestCaseError::fail(format!("{e}: {}", String::from_utf8_lossy(&whole))))?;
        let mut texts = Vec::new();
        seen_texts(&v, &mut texts);
        for t in &texts {
            for p in pii() {
                let digits: String = p.chars().filter(char::is_ascii_digit).collect();
                prop_assert!(!t.contains(p), "{} reaches a JSON reader in {:?} (input {})", p, t, text);
                if digits.len() >= 13 {
                    prop_assert!(!t.contains(&digits), "{} reaches a JSON reader in {:?} (input {})", p, t, text);
                }
            }
        }
        prop_assert!(whole.len() <= 8 * text.len() + 64);
    }

    /// JSON lines: the same, document by document.
    #[test]
    fn json_lines_masking_never_leaks_seeded_pii(
        docs in proptest::collection::vec(doc(), 1..5),
        cuts in proptest::collection::vec(any::<usize>(), 0..24),
    ) {
        let set = detector_set();
        let mut text = String::new();
        let mut secret_inside = Vec::new();
        for d in &docs {
            write_doc(&mut text, d, &mut secret_inside);
            text.push('\n');
        }
        let whole = mask_json(&set, text.as_bytes(), &[], true).map_err(TestCaseError::fail)?;
        let cut = mask_json(&set, text.as_bytes(), &cuts, true).map_err(TestCaseError::fail)?;
        prop_assert_eq!(&whole, &cut);
        assert_no_pii(&whole, &secret_inside)?;
    }

    /// Any bytes into the JSON masker: an error or output, never a panic,
    /// and output bounded by the input.
    #[test]
    fn json_masker_takes_any_bytes(
        input in proptest::collection::vec(any::<u8>(), 0..1024),
        cuts in proptest::collection::vec(any::<usize>(), 0..8),
        lines in any::<bool>(),
    ) {
        let set = detector_set();
        if let Ok(out) = mask_json(&set, &input, &cuts, lines) {
            prop_assert!(out.len() <= 8 * input.len() + 64);
        }
    }

    /// Text bodies (CSV, XML, plain): PII anywhere in a line, any chunking:
    /// never passes, and the output is the same at every chunking.
    #[test]
    fn text_masking_never_leaks_seeded_pii(
        parts in proptest::collection::vec((0..7usize, "[a-z ,;<>=\"]{0,10}", any::<bool>()), 1..12),
        cuts in proptest::collection::vec(any::<usize>(), 0..24),
    ) {
        let set = detector_set();
        let mut text = String::new();
        for (i, filler, newline) in &parts {
            text.push_str(filler);
            text.push(' ');
            text.push_str(pii()[*i]);
            text.push(if *newline { '\n' } else { ' ' });
        }
        let whole = mask_text(&set, text.as_bytes(), &[]).map_err(TestCaseError::fail)?;
        let cut = mask_text(&set, text.as_bytes(), &cuts).map_err(TestCaseError::fail)?;
        prop_assert_eq!(&whole, &cut);
        let out = String::from_utf8_lossy(&whole);
        for p in pii() {
            prop_assert!(!out.contains(p), "{} leaked: {}", p, out);
        }
        prop_assert!(whole.len() <= 4 * text.len() + 64);
    }

    /// Any bytes into the text masker: no panic, output bounded.
    #[test]
    fn text_masker_takes_any_bytes(
        input in proptest::collection::vec(any::<u8>(), 0..1024),
        cuts in proptest::collection::vec(any::<usize>(), 0..8),
    ) {
        let set = detector_set();
        if let Ok(out) = mask_text(&set, &input, &cuts) {
            prop_assert!(out.len() <= 4 * input.len() + 64);
        }
    }
}

/// Reproducer found by `json_masking_never_leaks_seeded_pii`: a card number
/// written as a JSON number with a fraction or an exponent passed the
/// detectors, and every JSON reader reads it as the card.
#[test]
fn regression_card_numbers_spelt_as_floats_are_masked() {
    let set = detector_set();
    for spelling in [
        "4111111111111111.0",
        "4111111111111111e0",
        "4.111111111111111e15",
        "41111111111111110e-1",
        "-4111111111111111.00",
    ] {
        let doc = format!(r#"{{"a": [{spelling}], "b": {spelling}}}"#);
        let out = mask_json(&set, doc.as_bytes(), &[], false).unwrap();
        let v: Value = serde_json::from_slice(&out).unwrap();
        let mut texts = Vec::new();
        seen_texts(&v, &mut texts);
        assert!(
            texts.iter().all(|t| !t.contains("4111111111111111")),
            "{spelling}: {}",
            String::from_utf8_lossy(&out)
        );
        assert_eq!(v["b"], "[redacted]", "{spelling}");
    }
}
