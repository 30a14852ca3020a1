//! The injected credential never comes back (issue 16, class 2): the values
//! of a Connection's credential headers are scrubbed from every response
//! header, trailer and body byte stream before the application sees them,
//! whatever the content type, across chunk boundaries.
//!
//! What is looked for ([`Secrets::new`]): each injected value, its token
//! after an auth scheme (`Bearer sk_…` → `sk_…`), the decoded
//! `user:password` and password of `Basic`; each of them as sent, as JSON
//! encoders escape it (minimal, `\/` as PHP writes it, `\u003c`-style HTML
//! escapes as Go writes them, every character as `\uXXXX`), and
//! percent-encoded. A match is overwritten with `*` of the same length, so
//! Content-Length and framing stay as the upstream sent them.
//!
//! Memory is bounded: the stream holds back at most the longest needle less
//! one byte between chunks.

use aho_corasick::AhoCorasick;
use bytes::Bytes;
use http::HeaderValue;

/// Injected values shorter than this are not looked for (they would match
/// ordinary text); the sidecar warns about them at start-up.
pub const MIN_SECRET_LEN: usize = 6;

/// The byte written over a scrubbed secret.
const COVER: u8 = b'*';

/// The needles of one Connection's credentials: every form of every value
/// in one automaton, so a buffer is searched once however many forms there
/// are (one `memmem` finder per form searched each header and chunk once
/// per form).
pub struct Secrets {
    needles: AhoCorasick,
    /// The same needles in any ASCII case: header names arrive lower-cased.
    names: AhoCorasick,
    longest: usize,
}

impl Secrets {
    /// The needles for credential header `values`; `None` when there is
    /// nothing to look for. Also returns the values too short to look for
    /// (by index), for the caller to warn about. An error when the forms
    /// cannot be searched for (the automaton's limits; a few dozen short
    /// needles are far below them): the Connection is then not served.
    pub fn new(
        values: &[&[u8]],
    ) -> Result<(Option<Secrets>, Vec<usize>), aho_corasick::BuildError> {
        let mut needles: Vec<Vec<u8>> = Vec::new();
        let mut short = Vec::new();
        for (i, value) in values.iter().enumerate() {
            let value = value.trim_ascii();
            let mut bases = vec![value.to_vec()];
            if let Some(space) = value.iter().position(|b| *b == b' ') {
                let (scheme, token) = (&value[..space], value[space + 1..].trim_ascii());
                if scheme.iter().all(u8::is_ascii_alphabetic) {
                    bases.push(token.to_vec());
                    if scheme.eq_ignore_ascii_case(b"basic")
                        && let Ok(plain) = base64::Engine::decode(
                            &base64::engine::general_purpose::STANDARD,
                            token,
                        )
                    {
                        if let Some(colon) = plain.iter().position(|b| *b == b':') {
                            bases.push(plain[colon + 1..].to_vec());
                        }
                        bases.push(plain);
                    }
                }
            }
            if value.len() < MIN_SECRET_LEN {
                short.push(i);
            }
            for base in bases {
                if base.len() < MIN_SECRET_LEN {
                    continue;
                }
                for v in variants(&base) {
                    if !needles.contains(&v) {
                        needles.push(v);
                    }
                }
            }
        }
        if needles.is_empty() {
            return Ok((None, short));
        }
        let longest = needles.iter().map(Vec::len).max().unwrap_or(0);
        // The standard match kind reports every occurrence, overlapping ones
        // included, so every byte of every form is covered.
        let names = AhoCorasick::builder()
            .ascii_case_insensitive(true)
            .build(&needles)?;
        let needles = AhoCorasick::new(&needles)?;
        Ok((
            Some(Secrets {
                needles,
                names,
                longest,
            }),
            short,
        ))
    }

    /// Overwrites every needle in `buf`; whether anything was found.
    fn cover(&self, buf: &mut [u8]) -> bool {
        let found: Vec<std::ops::Range<usize>> = self
            .needles
            .find_overlapping_iter(&*buf)
            .map(|m| m.range())
            .collect();
        for range in &found {
            buf[range.clone()].fill(COVER);
        }
        !found.is_empty()
    }

    /// `value` with every needle overwritten, when it had one.
    pub fn scrub_header(&self, value: &HeaderValue) -> Option<HeaderValue> {
        if !self.needles.is_match(value.as_bytes()) {
            return None;
        }
        let mut bytes = value.as_bytes().to_vec();
        self.cover(&mut bytes);
        // `*` is a valid header byte, and nothing else changed.
        HeaderValue::from_bytes(&bytes).ok()
    }

    /// Scrubs every value of `headers` in place, and drops every field
    /// whose name carries a needle in any case (a name cannot be
    /// overwritten with `*`, and arrives lower-cased).
    pub fn scrub_headers(&self, headers: &mut http::HeaderMap) {
        for value in headers.values_mut() {
            if let Some(clean) = self.scrub_header(value) {
                *value = clean;
            }
        }
        let doomed: Vec<http::HeaderName> = headers
            .keys()
            .filter(|name| self.names.is_match(name.as_str()))
            .cloned()
            .collect();
        for name in doomed {
            headers.remove(name);
        }
    }
}

/// Media types of compressed containers: the credential could be inside,
/// where no byte scan finds it.
pub fn is_compressed_type(mime: &str) -> bool {
    matches!(
        mime,
        "application/zip"
            | "application/gzip"
            | "application/x-gzip"
            | "application/x-bzip2"
            | "application/x-xz"
            | "application/zstd"
            | "application/x-zstd"
            | "application/x-7z-compressed"
            | "application/x-rar-compressed"
            | "application/vnd.rar"
            | "application/x-compress"
            | "application/x-lzma"
            | "application/x-lz4"
            | "application/java-archive"
            | "application/x-brotli"
    )
}

/// The magic bytes of compression formats (`None`: any byte).
const MAGIC: &[(&[Option<u8>], &str)] = &[
    (&[Some(0x1F), Some(0x8B)], "gzip"),
    (&[Some(b'P'), Some(b'K'), Some(3), Some(4)], "zip"),
    (&[Some(0x28), Some(0xB5), Some(0x2F), Some(0xFD)], "zstd"),
    (
        &[
            Some(0xFD),
            Some(b'7'),
            Some(b'z'),
            Some(b'X'),
            Some(b'Z'),
            Some(0),
        ],
        "xz",
    ),
    (
        &[
            Some(b'7'),
            Some(b'z'),
            Some(0xBC),
            Some(0xAF),
            Some(0x27),
            Some(0x1C),
        ],
        "7z",
    ),
    (
        &[
            Some(b'B'),
            Some(b'Z'),
            Some(b'h'),
            None,
            Some(b'1'),
            Some(b'A'),
            Some(b'Y'),
            Some(b'&'),
            Some(b'S'),
            Some(b'Y'),
        ],
        "bzip2",
    ),
];

/// Whether `bytes` agrees with `magic` as far as both go.
fn agrees(bytes: &[u8], magic: &[Option<u8>]) -> bool {
    bytes
        .iter()
        .zip(magic)
        .all(|(b, m)| m.is_none_or(|m| m == *b))
}

/// The compression format a body starts with, by its magic bytes.
pub fn compressed_magic(first: &[u8]) -> Option<&'static str> {
    MAGIC
        .iter()
        .find(|(m, _)| first.len() >= m.len() && agrees(first, m))
        .map(|(_, kind)| *kind)
}

/// Whether the first bytes of a body may still turn out to start a
/// compression format: more must be read before [`compressed_magic`] can
/// answer (an upstream may send its body a byte a chunk).
pub fn magic_undecided(first: &[u8]) -> bool {
    MAGIC
        .iter()
        .any(|(m, _)| first.len() < m.len() && agrees(first, m))
}

/// A body stream being scrubbed.
pub struct ScrubStream {
    held: Vec<u8>,
    scrubbed: u64,
}

impl ScrubStream {
    /// A stream with nothing held.
    pub fn new() -> Self {
        ScrubStream {
            held: Vec::new(),
            scrubbed: 0,
        }
    }

    /// How many needles were overwritten (counted per chunk scan).
    pub fn scrubbed(&self) -> u64 {
        self.scrubbed
    }

    /// Scrubs the next piece of the body and returns what may be released:
    /// all of it when `end`, else all but the last bytes a needle may
    /// continue from. A piece with no needle in it and nothing held before
    /// it is released as it came, without a copy (a needle that starts
    /// before its held tail would end inside it, and be found).
    pub fn feed(&mut self, secrets: &Secrets, input: Bytes, end: bool) -> Bytes {
        if self.held.is_empty() && !secrets.needles.is_match(&input[..]) {
            if end {
                return input;
            }
            let keep = secrets.longest.saturating_sub(1).min(input.len());
            let cut = input.len() - keep;
            self.held = input[cut..].to_vec();
            return input.slice(..cut);
        }
        let mut buf = std::mem::take(&mut self.held);
        buf.extend_from_slice(&input);
        if secrets.cover(&mut buf) {
            self.scrubbed += 1;
        }
        if !end {
            let keep = secrets.longest.saturating_sub(1).min(buf.len());
            self.held = buf.split_off(buf.len() - keep);
        }
        Bytes::from(buf)
    }

    /// The bytes still held (the body ended).
    pub fn finish(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.held)
    }
}

impl Default for ScrubStream {
    fn default() -> Self {
        Self::new()
    }
}

/// `base` as it may appear in a response (see the module documentation).
fn variants(base: &[u8]) -> Vec<Vec<u8>> {
    let mut out = vec![base.to_vec()];
    let Ok(text) = std::str::from_utf8(base) else {
        return out;
    };
    let json = serde_json::to_string(text).unwrap_or_default();
    let json = json
        .get(1..json.len().saturating_sub(1))
        .unwrap_or_default()
        .to_string();
    out.push(json.clone().into_bytes());
    out.push(json.replace('/', "\\/").into_bytes());
    let html = json
        .replace('<', "\\u003c")
        .replace('>', "\\u003e")
        .replace('&', "\\u0026");
    out.push(html.into_bytes());
    for upper in [false, true] {
        let mut all = String::new();
        for unit in text.encode_utf16() {
            all.push_str(&if upper {
                format!("\\u{unit:04X}")
            } else {
                format!("\\u{unit:04x}")
            });
        }
        out.push(all.into_bytes());
    }
    let mut pct = String::new();
    for b in base {
        if b.is_ascii_alphanumeric() || b"-._~".contains(b) {
            pct.push(char::from(*b));
        } else {
            pct.push_str(&format!("%{b:02X}"));
        }
    }
    out.push(pct.replace("%20", "+").into_bytes());
    out.push(pct.clone().into_bytes());
    out.push(pct.to_ascii_lowercase().into_bytes());
    out.sort();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    const TOKEN: &[u8] = b"Bearer sk_live_abc/def+ghi";

    fn run(s: &Secrets, input: &[u8], chunk: usize) -> Vec<u8> {
        let mut st = ScrubStream::new();
        let mut out = Vec::new();
        for c in input.chunks(chunk) {
            out.extend_from_slice(&st.feed(s, Bytes::copy_from_slice(c), false));
        }
        out.extend(st.finish());
        out
    }

    #[test]
    fn every_form_is_scrubbed_at_every_chunking() {
        let (s, short) = Secrets::new(&[TOKEN, b"Basic dXNlcjpwYXNzd29yZDEyMw==", b"abc"]).unwrap();
        let s = s.unwrap();
        assert_eq!(short, vec![2]);
        let body = br#"a Bearer sk_live_abc/def+ghi b sk_live_abc\/def+ghi c sk_live_abc%2Fdef%2Bghi d \u0073\u006b\u005f\u006c\u0069\u0076\u0065\u005f\u0061\u0062\u0063\u002f\u0064\u0065\u0066\u002b\u0067\u0068\u0069 e password123 f user:password123 abc"#;
        let want = run(&s, body, body.len());
        for needle in [&b"sk_live"[..], b"password123", b"\\u0073\\u006b"] {
            assert!(
                memchr::memmem::find(&want, needle).is_none(),
                "{}",
                String::from_utf8_lossy(&want)
            );
        }
        assert_eq!(want.len(), body.len(), "same length");
        assert!(want.ends_with(b" abc"), "short values are left alone");
        for chunk in [1, 2, 5, 13] {
            assert_eq!(run(&s, body, chunk), want, "chunk {chunk}");
        }
    }

    /// The body fed in `chunk`-byte pieces, the last one marked as the end
    /// (the path of a body whose pieces all arrived before it is answered).
    fn run_to_end(s: &Secrets, input: &[u8], chunk: usize) -> Vec<u8> {
        let mut st = ScrubStream::new();
        let mut out = Vec::new();
        let pieces: Vec<&[u8]> = input.chunks(chunk).collect();
        for (i, c) in pieces.iter().enumerate() {
            let end = i + 1 == pieces.len();
            out.extend_from_slice(&st.feed(s, Bytes::copy_from_slice(c), end));
        }
        out.extend(st.finish());
        out
    }

    #[test]
    fn a_piece_without_a_secret_is_passed_on_uncopied() {
        let (s, _) = Secrets::new(&[TOKEN]).unwrap();
        let s = s.unwrap();
        let body = Bytes::from(r#"{"id":1,"name":"Ann","email":"ann@example.com"}"#.repeat(20));
        assert!(body.len() > s.longest);
        // A whole body: the same bytes come back.
        let out = ScrubStream::new().feed(&s, body.clone(), true);
        assert_eq!(out, body);
        assert_eq!(out.as_ptr(), body.as_ptr(), "released without a copy");
        // A first piece: all but the tail a needle may continue from.
        let mut st = ScrubStream::new();
        let out = st.feed(&s, body.clone(), false);
        assert_eq!(out.as_ptr(), body.as_ptr(), "released without a copy");
        assert_eq!(out.len(), body.len() - (s.longest - 1));
        let mut all = out.to_vec();
        all.extend(st.finish());
        assert_eq!(all, body);
        // A piece with a secret is covered, whatever path it takes.
        let dirty = Bytes::from_static(b"token sk_live_abc/def+ghi end");
        let out = ScrubStream::new().feed(&s, dirty, true);
        assert_eq!(&out[..], format!("token {} end", "*".repeat(19)).as_bytes());
    }

    #[test]
    fn magic_is_decided_however_the_bytes_arrive() {
        let gzip = [0x1F, 0x8B, 8, 0, 0, 0, 0, 0, 0, 3];
        let bzip2 = b"BZh91AY&SY rest";
        for (body, kind) in [(&gzip[..], "gzip"), (&bzip2[..], "bzip2")] {
            for n in 0..body.len() {
                let prefix = &body[..n];
                if compressed_magic(prefix).is_none() {
                    assert!(magic_undecided(prefix), "{kind} at {n} bytes");
                }
            }
            assert_eq!(compressed_magic(body), Some(kind));
        }
        // Ordinary bodies are decided at their first byte.
        for body in [&b"{"[..], b"token: ", b"<html>", b"Bx"] {
            assert!(!magic_undecided(body), "{body:?}");
            assert_eq!(compressed_magic(body), None);
        }
    }

    #[test]
    fn headers_are_scrubbed() {
        let (s, _) = Secrets::new(&[TOKEN]).unwrap();
        let s = s.unwrap();
        let v = HeaderValue::from_static("token=sk_live_abc/def+ghi; Path=/");
        let clean = s.scrub_header(&v).unwrap();
        assert_eq!(
            clean.to_str().unwrap(),
            format!("token={}; Path=/", "*".repeat(19))
        );
        assert!(
            s.scrub_header(&HeaderValue::from_static("nothing"))
                .is_none()
        );
    }

    proptest::proptest! {
        /// Against a naive oracle: after scrubbing, no form of the secret is
        /// left anywhere, and every byte outside the forms' occurrences in
        /// the input is as it was — at every chunking.
        #[test]
        fn scrubbing_covers_exactly_the_occurrences(
            pieces in proptest::collection::vec((0usize..6, "[a-z /+%\\\\]{0,12}"), 0..12),
            chunk in 1usize..40,
        ) {
            let (s, _) = Secrets::new(&[TOKEN, b"Basic dXNlcjpwYXNzd29yZDEyMw=="]).unwrap();
            let s = s.unwrap();
            let forms: &[&[u8]] = &[
                b"sk_live_abc/def+ghi", b"sk_live_abc\\/def+ghi", b"sk_live_abc%2Fdef%2Bghi",
                b"password123", b"user:password123",
            ];
            let mut body = Vec::new();
            for (form, filler) in &pieces {
                if let Some(f) = forms.get(*form) {
                    body.extend_from_slice(f);
                }
                body.extend_from_slice(filler.as_bytes());
            }
            // Every byte inside some occurrence of some needle, found naively.
            let mut inside = vec![false; body.len()];
            for form in forms {
                for at in 0..body.len() {
                    if body[at..].starts_with(form) {
                        inside[at..at + form.len()].iter_mut().for_each(|b| *b = true);
                    }
                }
            }
            let out = run(&s, &body, chunk);
            proptest::prop_assert_eq!(&run_to_end(&s, &body, chunk), &out);
            proptest::prop_assert_eq!(out.len(), body.len());
            for form in forms {
                proptest::prop_assert!(memchr::memmem::find(&out, form).is_none());
            }
            for (i, (a, b)) in body.iter().zip(&out).enumerate() {
                if !inside[i] {
                    proptest::prop_assert_eq!(a, b, "byte {} outside every occurrence changed", i);
                }
            }
        }
    }
}
