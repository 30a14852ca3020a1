//! Streaming JSON masking: a byte-level tokenizer that tracks where in the
//! document it is (the JSONPath location of each value) and rewrites string
//! and number values selected by a masking path or holding a detector
//! finding. Memory is bounded: it keeps the container stack (depth-limited),
//! the current object key, and one value at most [`MAX_VALUE`] bytes long;
//! a longer value that must be inspected is masked whole. Everything else is
//! copied through unchanged, byte for byte.
//!
//! Input that is not well-formed JSON where it matters (unbalanced brackets,
//! a key where a value belongs, junk after the document, nesting deeper
//! than [`MAX_DEPTH`]) is an error: the caller aborts the response rather
//! than guess what a client would make of it.

use std::sync::Arc;

use sluice_policy::detectors::DetectorSet;
use sluice_policy::engine::PolicySet;
use sluice_policy::json_path::{PathSegment, PathState};
use sluice_policy::masker::Masker;

/// The longest string or number kept to be masked or searched; past it the
/// value is masked whole (redacted).
pub const MAX_VALUE: usize = 1 << 20;
/// The longest object key kept to match paths against.
pub const MAX_KEY: usize = 64 * 1024;
/// The deepest nesting accepted.
pub const MAX_DEPTH: usize = 512;
/// The UTF-8 byte-order mark.
const BOM: [u8; 3] = [0xEF, 0xBB, 0xBF];

/// Why a JSON response could not be masked.
#[derive(Debug, thiserror::Error)]
pub enum StreamMaskError {
    /// The body is not JSON where the masker needs to understand it.
    #[error(
        "the upstream's JSON response is malformed at byte {offset} ({what}); Sluice stopped the response rather than pass values it could not mask"
    )]
    Malformed {
        /// Offset in the body.
        offset: u64,
        /// What was wrong.
        what: &'static str,
    },
}

/// What happens to the value being read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Treat {
    /// Copied through.
    Pass,
    /// Masked with masker `n`.
    Mask(usize),
    /// Searched with the detectors.
    Detect,
}

#[derive(Debug)]
struct Frame {
    object: bool,
    next_index: usize,
    key: Option<String>,
    expect_key: bool,
    /// One state per masking path (empty when none can match below here).
    states: Vec<PathState>,
    /// Set when the container is selected: everything inside is masked with it.
    cover: Option<usize>,
}

#[derive(Debug)]
enum Lex {
    Normal,
    Str {
        treat: Treat,
        key: bool,
        escape: bool,
        overflow: bool,
    },
    Scalar {
        treat: Treat,
        overflow: bool,
    },
}

/// The masker of one JSON response body.
pub struct JsonStreamMasker {
    set: Arc<PolicySet>,
    fallback: Masker,
    stack: Vec<Frame>,
    lex: Lex,
    buf: Vec<u8>,
    root_done: bool,
    /// JSON lines (`application/x-ndjson`, `json-seq`): one document after
    /// another, each matched from its own root.
    lines: bool,
    /// Bytes of a leading byte-order mark seen.
    bom: usize,
    offset: u64,
    masked: u64,
    /// `masked` by masking rule.
    counts: crate::masking::MaskCounts,
}

impl JsonStreamMasker {
    /// A masker with the masking paths, maskers and detectors of `set`.
    pub fn new(set: Arc<PolicySet>) -> Self {
        JsonStreamMasker {
            set,
            fallback: Masker::redact(),
            stack: Vec::new(),
            lex: Lex::Normal,
            buf: Vec::new(),
            root_done: false,
            lines: false,
            bom: 0,
            offset: 0,
            masked: 0,
            counts: Default::default(),
        }
    }

    /// A masker of JSON lines: documents one after another (separated by
    /// whitespace, or RS as in `application/json-seq`).
    pub fn lines(set: Arc<PolicySet>) -> Self {
        let mut m = Self::new(set);
        m.lines = true;
        m
    }

    /// How many values were masked so far.
    pub fn masked(&self) -> u64 {
        self.masked
    }

    /// [`JsonStreamMasker::masked`] by masking rule, as the audit records
    /// them.
    pub fn masks(&self) -> Vec<sluice_policy::audit::AuditMaskCount> {
        self.counts.for_audit(&self.set)
    }

    /// One value masked by rule `rule` (the detectors' rule for what they
    /// find).
    fn count(&mut self, rule: Option<usize>) {
        self.masked += 1;
        self.counts.add(rule);
    }

    /// The rule the detectors' findings are masked by.
    fn detector_rule(&self) -> Option<usize> {
        self.detectors().map(|(_, m)| m)
    }

    fn masker(&self, index: usize) -> &Masker {
        self.set.maskers().get(index).unwrap_or(&self.fallback)
    }

    fn detectors(&self) -> Option<(&DetectorSet, usize)> {
        self.set
            .detectors_indexed()
            .filter(|(set, _)| !set.is_empty())
    }

    fn malformed(&self, what: &'static str) -> StreamMaskError {
        StreamMaskError::Malformed {
            offset: self.offset,
            what,
        }
    }

    /// Masks the next chunk of the body, appending the output to `out`.
    pub fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<(), StreamMaskError> {
        out.reserve(input.len());
        let mut i = 0;
        // A UTF-8 byte-order mark before the document is passed on. Only
        // the first bytes can be one: once another byte is read, the offset
        // is past what was seen of the mark for good (so the bytes after
        // the first pieces are not looked at for it).
        while i < input.len()
            && self.bom < BOM.len()
            && self.offset == self.bom as u64
            && input[i] == BOM[self.bom]
        {
            self.bom += 1;
            out.push(input[i]);
            i += 1;
            self.offset += 1;
        }
        while i < input.len() {
            let b = input[i];
            match &mut self.lex {
                Lex::Str {
                    treat,
                    key,
                    escape,
                    overflow,
                } => {
                    let (treat, key, was_overflow) = (*treat, *key, *overflow);
                    if *escape {
                        *escape = false;
                    } else if b == b'\\' {
                        *escape = true;
                    } else if b == b'"' {
                        self.lex = Lex::Normal;
                        self.end_string(treat, key, was_overflow, out)?;
                        i += 1;
                        self.offset += 1;
                        continue;
                    }
                    if treat == Treat::Pass && !key {
                        // Copy the run up to the next quote or backslash at once.
                        let run = input[i..]
                            .iter()
                            .position(|&c| c == b'"' || c == b'\\')
                            .map_or(input.len() - i, |p| p.max(1));
                        out.extend_from_slice(&input[i..i + run]);
                        // A backslash at the run's start was handled above; any
                        // inside the run cannot be (the run stops before them).
                        i += run;
                        self.offset += run as u64;
                        continue;
                    }
                    let limit = if key { MAX_KEY } else { MAX_VALUE };
                    if self.buf.len() < limit {
                        self.buf.push(b);
                    } else if key {
                        return Err(StreamMaskError::Malformed {
                            offset: self.offset,
                            what: "an object key longer than 64 KiB",
                        });
                    } else {
                        *overflow = true;
                    }
                }
                Lex::Scalar { treat, overflow } => {
                    if is_scalar_byte(b) {
                        if *treat == Treat::Pass {
                            out.push(b);
                        } else if self.buf.len() < MAX_VALUE {
                            self.buf.push(b);
                        } else {
                            *overflow = true;
                        }
                    } else {
                        let (treat, overflow) = (*treat, *overflow);
                        self.lex = Lex::Normal;
                        self.end_scalar(treat, overflow, out);
                        // The delimiter is read again in the normal state.
                        continue;
                    }
                }
                Lex::Normal => self.normal(b, out)?,
            }
            i += 1;
            self.offset += 1;
        }
        Ok(())
    }

    /// Ends the body: a top-level number still being read is completed, and
    /// an unfinished document is an error.
    pub fn finish(&mut self, out: &mut Vec<u8>) -> Result<(), StreamMaskError> {
        match self.lex {
            Lex::Scalar { treat, overflow } => {
                self.lex = Lex::Normal;
                self.end_scalar(treat, overflow, out);
            }
            Lex::Str { .. } => return Err(self.malformed("the body ends inside a string")),
            Lex::Normal => {}
        }
        if !self.stack.is_empty() {
            return Err(self.malformed("the body ends inside an object or array"));
        }
        Ok(())
    }

    fn normal(&mut self, b: u8, out: &mut Vec<u8>) -> Result<(), StreamMaskError> {
        match b {
            b' ' | b'\t' | b'\n' | b'\r' | b':' => out.push(b),
            // The record separator of `application/json-seq`.
            0x1E if self.lines && self.stack.is_empty() => out.push(b),
            b',' => {
                if let Some(top) = self.stack.last_mut()
                    && top.object
                {
                    top.expect_key = true;
                }
                out.push(b);
            }
            b'{' | b'[' => {
                if self.stack.len() >= MAX_DEPTH {
                    return Err(self.malformed("nesting deeper than 512 levels"));
                }
                let (states, cover) = self.value_start(true)?;
                self.stack.push(Frame {
                    object: b == b'{',
                    next_index: 0,
                    key: None,
                    expect_key: b == b'{',
                    states,
                    cover,
                });
                out.push(b);
            }
            b'}' | b']' => {
                let Some(top) = self.stack.pop() else {
                    return Err(self.malformed("a closing bracket with nothing open"));
                };
                if top.object != (b == b'}') {
                    return Err(self.malformed("mismatched brackets"));
                }
                out.push(b);
            }
            b'"' => {
                let key = self.stack.last().is_some_and(|f| f.object && f.expect_key);
                let treat = if key {
                    Treat::Pass
                } else {
                    self.scalar_treat()?
                };
                self.buf.clear();
                if treat == Treat::Pass || key {
                    out.push(b'"');
                }
                self.lex = Lex::Str {
                    treat,
                    key,
                    escape: false,
                    overflow: false,
                };
            }
            b if is_scalar_byte(b) => {
                let treat = self.scalar_treat()?;
                self.buf.clear();
                if treat == Treat::Pass {
                    out.push(b);
                } else {
                    self.buf.push(b);
                }
                self.lex = Lex::Scalar {
                    treat,
                    overflow: false,
                };
            }
            _ => return Err(self.malformed("an unexpected byte")),
        }
        Ok(())
    }

    /// The path states and cover of a value starting here; advances the
    /// parent's index. `keep_states`: whether the caller needs the states
    /// (containers do, scalars only need whether one matches).
    fn value_start(
        &mut self,
        keep_states: bool,
    ) -> Result<(Vec<PathState>, Option<usize>), StreamMaskError> {
        let set = self.set.clone();
        let paths = set.json_paths();
        let parent = match self.stack.last_mut() {
            None => {
                if self.root_done && !self.lines {
                    return Err(self.malformed("data after the JSON document"));
                }
                self.root_done = true;
                None
            }
            Some(top) => {
                if top.object && top.expect_key {
                    return Err(self.malformed("a value where an object key belongs"));
                }
                Some(top)
            }
        };
        let states: Vec<PathState> = match parent {
            None => paths.iter().map(|(p, _)| p.start()).collect(),
            Some(top) => {
                if let Some(m) = top.cover {
                    if top.object {
                        top.key = None;
                    } else {
                        top.next_index += 1;
                    }
                    return Ok((Vec::new(), Some(m)));
                }
                let key = if top.object { top.key.take() } else { None };
                let seg = match &key {
                    Some(k) => PathSegment::Key(k),
                    None if top.object => {
                        return Err(StreamMaskError::Malformed {
                            offset: self.offset,
                            what: "an object member without a key",
                        });
                    }
                    None => {
                        top.next_index += 1;
                        PathSegment::Index(top.next_index - 1)
                    }
                };
                if top.states.iter().all(|s| s.is_dead()) {
                    Vec::new()
                } else {
                    paths
                        .iter()
                        .zip(&top.states)
                        .map(|((p, _), s)| p.advance(*s, seg))
                        .collect()
                }
            }
        };
        let cover = paths
            .iter()
            .zip(&states)
            .find(|((p, _), s)| p.is_match(**s))
            .map(|((_, m), _)| *m);
        let states = if keep_states && states.iter().any(|s| !s.is_dead()) {
            states
        } else {
            Vec::new()
        };
        Ok((states, cover))
    }

    fn scalar_treat(&mut self) -> Result<Treat, StreamMaskError> {
        let (_, cover) = self.value_start(false)?;
        Ok(match cover {
            Some(m) => Treat::Mask(m),
            None if self.detectors().is_some() => Treat::Detect,
            None => Treat::Pass,
        })
    }

    fn end_string(
        &mut self,
        treat: Treat,
        key: bool,
        overflow: bool,
        out: &mut Vec<u8>,
    ) -> Result<(), StreamMaskError> {
        if key {
            let decoded = decode(&self.buf).ok_or_else(|| self.malformed("an invalid string"))?;
            // Keys can carry data too (`{"4111…": {...}}`); paths still match
            // the original key.
            match self.detect(&decoded) {
                Some(masked) => {
                    // The opening quote is already out.
                    let json = serde_json::to_vec(&masked).unwrap_or_default();
                    out.extend_from_slice(json.get(1..).unwrap_or_default());
                    self.count(self.detector_rule());
                }
                None => {
                    out.extend_from_slice(&self.buf);
                    out.push(b'"');
                }
            }
            if let Some(top) = self.stack.last_mut() {
                top.key = Some(decoded);
                top.expect_key = false;
            }
            return Ok(());
        }
        match treat {
            Treat::Pass => out.push(b'"'),
            Treat::Mask(m) => {
                let masked = if overflow {
                    self.fallback.mask("")
                } else {
                    let text =
                        decode(&self.buf).ok_or_else(|| self.malformed("an invalid string"))?;
                    self.masker(m).mask(&text)
                };
                write_string(out, &masked);
                self.count(Some(m));
            }
            Treat::Detect => {
                if overflow {
                    write_string(out, &self.fallback.mask(""));
                    self.count(self.detector_rule());
                    return Ok(());
                }
                let text = decode(&self.buf).ok_or_else(|| self.malformed("an invalid string"))?;
                match self.detect(&text) {
                    Some(masked) => {
                        write_string(out, &masked);
                        self.count(self.detector_rule());
                    }
                    None => {
                        out.push(b'"');
                        out.extend_from_slice(&self.buf);
                        out.push(b'"');
                    }
                }
            }
        }
        Ok(())
    }

    fn end_scalar(&mut self, treat: Treat, overflow: bool, out: &mut Vec<u8>) {
        let text = String::from_utf8_lossy(&self.buf).into_owned();
        match treat {
            Treat::Pass => {}
            // null reveals nothing.
            _ if text == "null" => out.extend_from_slice(b"null"),
            Treat::Mask(m) => {
                let masked = if overflow {
                    self.fallback.mask("")
                } else {
                    self.masker(m).mask(&text)
                };
                write_string(out, &masked);
                self.count(Some(m));
            }
            Treat::Detect => {
                let found = if overflow || text == "true" || text == "false" {
                    None
                } else {
                    // A number written with a fraction or an exponent is
                    // searched as the integer a JSON reader makes of it too:
                    // `4111111111111111.0` is a card number to the client.
                    self.detect(&text)
                        .or_else(|| integer_form(&text).and_then(|i| self.detect(&i)))
                };
                match (found, overflow) {
                    (_, true) => {
                        write_string(out, &self.fallback.mask(""));
                        self.count(self.detector_rule());
                    }
                    (Some(masked), false) => {
                        write_string(out, &masked);
                        self.count(self.detector_rule());
                    }
                    (None, false) => out.extend_from_slice(text.as_bytes()),
                }
            }
        }
    }

    fn detect(&self, text: &str) -> Option<String> {
        let (set, m) = self.detectors()?;
        let (text, findings) = super::text_mask::find_decoded(set, text);
        (!findings.is_empty()).then(|| self.masker(m).mask_findings(&text, &findings))
    }
}

/// The integer a JSON number written with a fraction or an exponent stands
/// for (`4111111111111111.0`, `4.111111111111111e15`, `41111111111111110e-1`
/// → `4111111111111111`), digit for digit, without its sign; `None` for a
/// plain integer (searched as written), a non-integer, or one longer than
/// 40 digits (longer than anything a detector finds). Found by
/// tests/pg/fuzz_props.rs: these spellings passed the detectors.
fn integer_form(text: &str) -> Option<String> {
    let t = text.strip_prefix('-').unwrap_or(text);
    if !t.contains(['.', 'e', 'E']) {
        return None;
    }
    let (mantissa, exp) = match t.find(['e', 'E']) {
        Some(i) => (&t[..i], t[i + 1..].parse::<i64>().ok()?),
        None => (t, 0),
    };
    let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let digits_only = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if int.is_empty() || !digits_only(int) || !digits_only(frac) {
        return None;
    }
    let digits = format!("{int}{frac}");
    let point = usize::try_from(i64::try_from(int.len()).ok()?.checked_add(exp)?).ok()?;
    if point == 0 || point > 40 {
        return None;
    }
    let (whole, rest) = if point >= digits.len() {
        (format!("{digits}{}", "0".repeat(point - digits.len())), "")
    } else {
        (digits[..point].to_string(), &digits[point..])
    };
    if !rest.bytes().all(|b| b == b'0') {
        return None;
    }
    let whole = whole.trim_start_matches('0');
    Some(if whole.is_empty() { "0" } else { whole }.to_string())
}

fn is_scalar_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'+' | b'.')
}

/// The text of a JSON string's raw content (between the quotes).
fn decode(raw: &[u8]) -> Option<String> {
    // Most strings have no escape: their text is their bytes, when those are
    // UTF-8 and hold no quote or control character (which serde_json
    // refuses). Parsing them with serde_json cost two allocations and a
    // parse per key and string of every masked body.
    if !raw.iter().any(|&b| b == b'\\' || b == b'"' || b < 0x20) {
        return std::str::from_utf8(raw).ok().map(str::to_owned);
    }
    let mut quoted = Vec::with_capacity(raw.len() + 2);
    quoted.push(b'"');
    quoted.extend_from_slice(raw);
    quoted.push(b'"');
    serde_json::from_slice(&quoted).ok()
}

fn write_string(out: &mut Vec<u8>, s: &str) {
    // Serialising a &str cannot fail.
    if let Ok(json) = serde_json::to_vec(s) {
        out.extend_from_slice(&json);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use sluice_crds::AccessPolicy;
    use sluice_policy::engine::{CompiledPolicy, Identity, SecretSource};

    /// The fast path of [`decode`] reads every string as serde_json does.
    #[test]
    fn decode_reads_strings_as_serde_json_does() {
        let cases: &[&[u8]] = &[
            b"",
            b"plain",
            b"4111 1111 1111 1111",
            "caf\u{e9} \u{1f600}".as_bytes(),
            b"a\\\"b",
            b"\\u00e9\\n",
            b"\\ud800",
            b"\\ud83d\\ude00",
            b"tab\there",
            b"nl\nthere",
            b"\x7f del",
            b"quote\"inside",
            b"\xff\xfe bad utf-8",
            b"\xc3",
            b"\xed\xa0\x80 surrogate bytes",
            b"back\\",
        ];
        for raw in cases {
            let mut quoted = b"\"".to_vec();
            quoted.extend_from_slice(raw);
            quoted.push(b'"');
            let serde: Option<String> = serde_json::from_slice(&quoted).ok();
            assert_eq!(decode(raw), serde, "{:?}", String::from_utf8_lossy(raw));
        }
    }

    struct NoSecrets;
    impl SecretSource for NoSecrets {
        fn secret_key(&self, _: &str, _: &str) -> Option<Vec<u8>> {
            None
        }
    }

    fn set(masking: &str) -> Arc<PolicySet> {
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

    fn run(set: Arc<PolicySet>, input: &[u8], chunk: usize) -> (String, u64) {
        let mut m = JsonStreamMasker::new(set);
        let mut out = Vec::new();
        for c in input.chunks(chunk.max(1)) {
            m.feed(c, &mut out).unwrap();
        }
        m.finish(&mut out).unwrap();
        (String::from_utf8(out).unwrap(), m.masked())
    }

    const DOC: &str = r#"{"id": 7, "customer": {"email": "a@b.example", "name": "Ann \"Q\""}, "items": [{"card": "4111111111111111", "n": 2}, {"card": 5500005555555559}], "note": null}"#;

    #[test]
    fn masks_paths_at_every_chunking() {
        let set = set(
            "  - jsonPaths: [\"$.customer.email\", \"$.items[*].card\"]\n    strategy: redact\n",
        );
        let (whole, n) = run(set.clone(), DOC.as_bytes(), DOC.len());
        let v: serde_json::Value = serde_json::from_str(&whole).unwrap();
        assert_eq!(n, 3);
        assert_ne!(v["customer"]["email"], "a@b.example");
        assert!(v["items"][0]["card"].is_string());
        assert!(!whole.contains("4111111111111111"));
        assert!(!whole.contains("5500005555555559"));
        assert_eq!(v["customer"]["name"], "Ann \"Q\"");
        assert_eq!(v["items"][0]["n"], 2);
        // Same output whatever the chunk boundaries.
        for chunk in [1, 2, 3, 7] {
            assert_eq!(run(set.clone(), DOC.as_bytes(), chunk).0, whole);
        }
    }

    #[test]
    fn selected_containers_mask_everything_inside() {
        let set = set("  - jsonPaths: [\"$.customer\"]\n    strategy: redact\n");
        let (out, n) = run(set, DOC.as_bytes(), 5);
        assert_eq!(n, 2);
        assert!(!out.contains("a@b.example") && !out.contains("Ann"));
        assert!(out.contains("4111111111111111"));
    }

    #[test]
    fn detectors_find_values_anywhere() {
        let set = set("  - detectors: [creditCard, email]\n    strategy: redact\n");
        let (out, n) = run(set, DOC.as_bytes(), 4);
        assert!(!out.contains("4111111111111111"));
        assert!(!out.contains("5500005555555559"));
        assert!(!out.contains("a@b.example"));
        assert_eq!(n, 3);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["id"], 7);
    }

    #[test]
    fn keys_with_findings_are_masked() {
        let set = set("  - detectors: [creditCard]\n    strategy: redact\n");
        let (out, n) = run(set, br#"{"4111111111111111": {"x": 1}, "plain": 2}"#, 3);
        assert_eq!(n, 1);
        assert!(!out.contains("4111111111111111"), "{out}");
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["plain"], 2);
    }

    #[test]
    fn malformed_input_is_an_error() {
        let set = set("  - jsonPaths: [\"$.a\"]\n    strategy: redact\n");
        for bad in [
            &b"{\"a\": 1]"[..],
            b"}",
            b"{\"a\" 1, 2: 3}",
            b"{} {}",
            b"[\"open",
        ] {
            let mut m = JsonStreamMasker::new(set.clone());
            let mut out = Vec::new();
            let r = m.feed(bad, &mut out).and_then(|()| m.finish(&mut out));
            assert!(r.is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn json_lines_and_a_bom() {
        let set = set("  - jsonPaths: [\"$.s\"]\n    strategy: redact\n");
        let input = b"\xef\xbb\xbf{\"s\":\"a\"}\n{\"s\":\"b\",\"k\":1}\n\x1e[1]\n";
        for chunk in [1, 4, input.len()] {
            let mut m = JsonStreamMasker::lines(set.clone());
            let mut out = Vec::new();
            for c in input.chunks(chunk) {
                m.feed(c, &mut out).unwrap();
            }
            m.finish(&mut out).unwrap();
            assert_eq!(m.masked(), 2);
            assert_eq!(
                out,
                b"\xef\xbb\xbf{\"s\":\"[redacted]\"}\n{\"s\":\"[redacted]\",\"k\":1}\n\x1e[1]\n"
            );
        }
        // One document only, unless lines.
        let mut m = JsonStreamMasker::new(set);
        let mut out = Vec::new();
        assert!(m.feed(b"{} {}", &mut out).is_err());
    }

    #[test]
    fn integer_forms_of_numbers() {
        for (text, want) in [
            ("4111111111111111.0", Some("4111111111111111")),
            ("4.111111111111111e15", Some("4111111111111111")),
            ("4.111111111111111E+15", Some("4111111111111111")),
            ("41111111111111110e-1", Some("4111111111111111")),
            ("-4111111111111111e0", Some("4111111111111111")),
            ("411111111111111e1", Some("4111111111111110")),
            ("0.0", Some("0")),
            ("4111111111111111", None),
            ("4111.5", None),
            ("1e400", None),
            ("1e-400", None),
            ("1e99999999999999999999", None),
            ("nan", None),
        ] {
            assert_eq!(integer_form(text).as_deref(), want, "{text}");
        }
    }

    #[test]
    fn top_level_array_indexes() {
        let set = set("  - jsonPaths: [\"$[1].s\"]\n    strategy: redact\n");
        let (out, n) = run(set, br#"[{"s":"keep"},{"s":"hide"},{"s":"keep2"}]"#, 3);
        assert_eq!(n, 1);
        assert!(out.contains("keep") && out.contains("keep2") && !out.contains("hide"));
    }
}
