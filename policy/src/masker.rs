//! Replacing a sensitive value by its masked form, by strategy.
//!
//! - `redact`: [`REDACTED`], whatever the value;
//! - `partial`: every character but the last `keep` (default 4) becomes `*`, and
//!   never more than a third of the characters stay visible, so short values are
//!   hidden entirely (`keep` 4 on `1234` shows one character, on `12` none);
//! - `hash`: `hmac:` and the first 32 hex digits (128 bits) of
//!   HMAC-SHA256(key, value). Equal values give equal outputs, so joins and
//!   group-bys on a masked column still work, while the key keeps a dictionary
//!   attack (hashing every possible SSN) out of the reader's reach;
//! - `fixed`: the rule's `value`.
//!
//! Lengths and positions are counted in `char`s, never bytes, so masking never
//! splits a multi-byte character.

use std::fmt;
use std::ops::Range;

use hmac::{Hmac, Mac};
use sha2::Sha256;
use sluice_crds::MaskStrategy;
use zeroize::Zeroizing;

use crate::detectors::Finding;

/// What `redact` replaces a value with.
pub const REDACTED: &str = "[redacted]";
/// The prefix of `hash` output.
pub const HASH_PREFIX: &str = "hmac:";
/// How many trailing characters `partial` keeps when the rule does not say.
pub const DEFAULT_KEEP: u32 = 4;
/// The shortest HMAC key accepted for `hash`, in bytes.
pub const MIN_HASH_KEY_LEN: usize = 16;

/// Hex digits of the HMAC kept in `hash` output.
const HASH_HEX_LEN: usize = 32;

/// A masker could not be built from its masking rule.
#[derive(Debug, thiserror::Error)]
pub enum MaskerError {
    /// `hash` without a key.
    #[error(
        "masking strategy hash needs an HMAC key: set keySecretRef on the masking rule, or \
         credentials.hashKeySecretRef on the Connection, to a Secret key holding at least \
         {MIN_HASH_KEY_LEN} random bytes"
    )]
    MissingHashKey,
    /// `hash` with a key too short to resist guessing.
    #[error(
        "the HMAC key for masking strategy hash is {len} bytes long; store at least \
         {MIN_HASH_KEY_LEN} random bytes in the Secret (e.g. `openssl rand 32`)"
    )]
    WeakHashKey {
        /// The key's length in bytes.
        len: usize,
    },
    /// `fixed` without a value.
    #[error("masking strategy fixed needs value: set the replacement string in the rule's value")]
    MissingFixedValue,
}

/// Masks values with one strategy. Cheap to clone.
#[derive(Clone)]
pub struct Masker {
    kind: Kind,
}

#[derive(Clone)]
enum Kind {
    Redact,
    Partial {
        keep: usize,
    },
    /// The key is wiped from memory when the last masker holding it is dropped.
    Hash {
        key: Zeroizing<Vec<u8>>,
    },
    Fixed(String),
}

impl fmt::Debug for Masker {
    // Never prints the HMAC key.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            Kind::Redact => f.write_str("Masker(redact)"),
            Kind::Partial { keep } => write!(f, "Masker(partial, keep {keep})"),
            Kind::Hash { .. } => f.write_str("Masker(hash, key hidden)"),
            Kind::Fixed(v) => write!(f, "Masker(fixed {v:?})"),
        }
    }
}

impl Masker {
    /// A masker for `strategy`. `keep` is used by `partial` (default
    /// [`DEFAULT_KEEP`]), `fixed` by `fixed`, `hash_key` by `hash`; each is
    /// ignored by the other strategies.
    pub fn new(
        strategy: MaskStrategy,
        keep: Option<u32>,
        fixed: Option<String>,
        hash_key: Option<Vec<u8>>,
    ) -> Result<Masker, MaskerError> {
        // Wrap the key first so it is wiped even when it is refused.
        let hash_key = hash_key.map(Zeroizing::new);
        let kind = match strategy {
            MaskStrategy::Redact => Kind::Redact,
            MaskStrategy::Partial => Kind::Partial {
                keep: usize::try_from(keep.unwrap_or(DEFAULT_KEEP)).unwrap_or(usize::MAX),
            },
            MaskStrategy::Hash => {
                let key = hash_key.ok_or(MaskerError::MissingHashKey)?;
                if key.len() < MIN_HASH_KEY_LEN {
                    return Err(MaskerError::WeakHashKey { len: key.len() });
                }
                Kind::Hash { key }
            }
            MaskStrategy::Fixed => Kind::Fixed(fixed.ok_or(MaskerError::MissingFixedValue)?),
        };
        Ok(Masker { kind })
    }

    /// The `redact` masker (the fail-closed fallback when a rule's masker cannot be built).
    pub fn redact() -> Masker {
        Masker { kind: Kind::Redact }
    }

    /// The strategy this masker applies.
    pub fn strategy(&self) -> MaskStrategy {
        match self.kind {
            Kind::Redact => MaskStrategy::Redact,
            Kind::Partial { .. } => MaskStrategy::Partial,
            Kind::Hash { .. } => MaskStrategy::Hash,
            Kind::Fixed(_) => MaskStrategy::Fixed,
        }
    }

    /// The masked form of `value`.
    pub fn mask(&self, value: &str) -> String {
        match &self.kind {
            Kind::Redact => REDACTED.to_string(),
            Kind::Partial { keep } => partial(value, *keep),
            Kind::Hash { key } => hash(key, value),
            Kind::Fixed(v) => v.clone(),
        }
    }

    /// `text` with the spans of `findings` masked and the rest unchanged.
    ///
    /// Findings need not be sorted; overlapping ones are merged, ranges past the
    /// end are cut and ranges inside a multi-byte character are widened to it,
    /// so a sloppy finding masks more, never less.
    pub fn mask_findings(&self, text: &str, findings: &[Finding]) -> String {
        let mut ranges: Vec<Range<usize>> = findings
            .iter()
            .map(|f| floor_boundary(text, f.range.start)..ceil_boundary(text, f.range.end))
            .filter(|r| r.start < r.end)
            .collect();
        ranges.sort_by_key(|r| r.start);
        let mut out = String::with_capacity(text.len());
        let mut cursor = 0;
        let mut pending: Option<Range<usize>> = None;
        for r in ranges {
            match &mut pending {
                Some(p) if r.start <= p.end => p.end = p.end.max(r.end),
                _ => {
                    if let Some(p) = pending.replace(r) {
                        out.push_str(&text[cursor..p.start]);
                        out.push_str(&self.mask(&text[p.clone()]));
                        cursor = p.end;
                    }
                }
            }
        }
        if let Some(p) = pending {
            out.push_str(&text[cursor..p.start]);
            out.push_str(&self.mask(&text[p.clone()]));
            cursor = p.end;
        }
        out.push_str(&text[cursor..]);
        out
    }
}

fn partial(value: &str, keep: usize) -> String {
    let n = value.chars().count();
    let visible = keep.min(n / 3);
    let mut out = String::with_capacity(value.len());
    out.extend(std::iter::repeat_n('*', n - visible));
    out.extend(value.chars().skip(n - visible));
    out
}

fn hash(key: &[u8], value: &str) -> String {
    // HMAC accepts keys of any length, so this cannot fail; if it ever did,
    // redacting keeps the value hidden.
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(key) else {
        return REDACTED.to_string();
    };
    mac.update(value.as_bytes());
    let digest = mac.finalize().into_bytes();
    let mut out = String::with_capacity(HASH_PREFIX.len() + HASH_HEX_LEN);
    out.push_str(HASH_PREFIX);
    out.push_str(&hex::encode(&digest[..HASH_HEX_LEN / 2]));
    out
}

fn floor_boundary(text: &str, mut i: usize) -> usize {
    i = i.min(text.len());
    while !text.is_char_boundary(i) {
        i -= 1;
    }
    i
}

fn ceil_boundary(text: &str, mut i: usize) -> usize {
    i = i.min(text.len());
    while !text.is_char_boundary(i) {
        i += 1;
    }
    i
}

#[cfg(test)]
pub(crate) mod tests {
    use base64::Engine as _;
    use proptest::prelude::*;
    use sluice_crds::Detector;

    use super::*;
    use crate::detectors::DetectorSet;

    const KEY: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn masker(s: MaskStrategy) -> Masker {
        Masker::new(s, None, Some("<hidden>".into()), Some(KEY.to_vec())).expect("valid masker")
    }

    #[test]
    fn strategies() {
        assert_eq!(
            masker(MaskStrategy::Redact).mask("4111111111111111"),
            "[redacted]"
        );
        assert_eq!(
            masker(MaskStrategy::Fixed).mask("4111111111111111"),
            "<hidden>"
        );
        assert_eq!(
            masker(MaskStrategy::Partial).mask("4111111111111111"),
            "************1111"
        );
        let h = masker(MaskStrategy::Hash).mask("4111111111111111");
        assert!(h.starts_with("hmac:") && h.len() == 5 + 32, "{h}");
        assert!(
            h[5..]
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        );
        assert_eq!(h, masker(MaskStrategy::Hash).mask("4111111111111111"));
        assert_ne!(h, masker(MaskStrategy::Hash).mask("4111111111111112"));
        let other_key = Masker::new(
            MaskStrategy::Hash,
            None,
            None,
            Some(b"another key, 16+ bytes".to_vec()),
        )
        .expect("valid masker");
        assert_ne!(h, other_key.mask("4111111111111111"));
    }

    #[test]
    fn partial_never_reveals_more_than_a_third() {
        let p = |keep, v: &str| {
            Masker::new(MaskStrategy::Partial, Some(keep), None, None)
                .expect("valid masker")
                .mask(v)
        };
        assert_eq!(p(4, "1234"), "***4");
        assert_eq!(p(4, "12"), "**");
        assert_eq!(p(4, ""), "");
        assert_eq!(p(0, "4111111111111111"), "****************");
        assert_eq!(p(10, "123456789"), "******789");
        // Characters, not bytes.
        assert_eq!(p(2, "äöüßéèêë"), "******êë");
        assert_eq!(p(4, "日本語テキスト"), "*****スト");
    }

    #[test]
    fn hash_needs_a_real_key() {
        let err = Masker::new(MaskStrategy::Hash, None, None, None).expect_err("no key");
        assert!(matches!(err, MaskerError::MissingHashKey));
        assert!(err.to_string().contains("hashKeySecretRef"), "{err}");
        let err = Masker::new(MaskStrategy::Hash, None, None, Some(b"short".to_vec()))
            .expect_err("weak key");
        assert!(matches!(err, MaskerError::WeakHashKey { len: 5 }));
        let err = Masker::new(MaskStrategy::Fixed, None, None, None).expect_err("no value");
        assert!(matches!(err, MaskerError::MissingFixedValue));
    }

    #[test]
    fn debug_hides_the_key() {
        let m = masker(MaskStrategy::Hash);
        let shown = format!("{m:?}");
        assert!(!shown.contains("0123456789abcdef"), "{shown}");
        assert_eq!(m.strategy(), MaskStrategy::Hash);
    }

    #[test]
    fn mask_findings_replaces_only_the_findings() {
        let set = DetectorSet::new(&[Detector::Email, Detector::CreditCard]);
        let text = "mail alice@example.com, card 4111 1111 1111 1111, done";
        let out = masker(MaskStrategy::Redact).mask_findings(text, &set.find(text));
        assert_eq!(out, "mail [redacted], card [redacted], done");
        // Sloppy findings: unsorted, overlapping, out of range, mid-character.
        let text = "ab€cd";
        let sloppy = [
            Finding {
                range: 3..100,
                detector: Detector::Email,
            },
            Finding {
                range: 0..1,
                detector: Detector::Email,
            },
            Finding {
                range: 0..2,
                detector: Detector::Email,
            },
        ];
        let out = masker(MaskStrategy::Redact).mask_findings(text, &sloppy);
        assert_eq!(out, "[redacted]");
        let apart = [
            Finding {
                range: 4..5,
                detector: Detector::Email,
            },
            Finding {
                range: 0..1,
                detector: Detector::Email,
            },
        ];
        let out = masker(MaskStrategy::Redact).mask_findings(text, &apart);
        assert_eq!(out, "[redacted]b[redacted]cd");
        assert_eq!(masker(MaskStrategy::Redact).mask_findings(text, &[]), text);
    }

    // === generators of valid detector values ===

    fn luhn_complete(mut digits: Vec<u8>) -> Vec<u8> {
        for check in 0..10 {
            digits.push(check);
            if crate::detectors::luhn_valid(digits.iter().copied()) {
                return digits;
            }
            digits.pop();
        }
        digits
    }

    fn card() -> impl Strategy<Value = String> {
        (2u8..=6, prop::collection::vec(0u8..10, 11..=17), 0usize..3).prop_map(
            |(first, rest, style)| {
                let mut d = vec![first];
                d.extend(rest);
                let d = luhn_complete(d);
                let s: String = d.iter().map(|x| char::from(b'0' + x)).collect();
                let sep = match style {
                    0 => return s,
                    1 => " ",
                    _ => "-",
                };
                s.as_bytes()
                    .chunks(4)
                    .map(|c| String::from_utf8_lossy(c).into_owned())
                    .collect::<Vec<_>>()
                    .join(sep)
            },
        )
    }

    fn ssn() -> impl Strategy<Value = String> {
        (1u32..900, 1u32..100, 1u32..10000)
            .prop_filter("area 666", |(a, _, _)| *a != 666)
            .prop_map(|(a, g, s)| format!("{a:03}-{g:02}-{s:04}"))
    }

    fn email() -> impl Strategy<Value = String> {
        "[a-z0-9][a-z0-9._+-]{0,15}@[a-z0-9]{1,10}(\\.[a-z0-9]{1,8}){0,2}\\.[a-z]{2,6}"
    }

    fn phone() -> impl Strategy<Value = String> {
        prop_oneof![
            "\\+[1-9][0-9]{7,14}",
            "\\+[1-9][0-9]{0,2} [0-9]{2,4} [0-9]{3,4} [0-9]{4}",
            "\\([2-9][0-9]{2}\\) [0-9]{3}-[0-9]{4}",
            "[2-9][0-9]{2}-[0-9]{3}-[0-9]{4}",
        ]
    }

    fn iban() -> impl Strategy<Value = String> {
        ("[A-Z]{2}", "[A-Z0-9]{11,30}", any::<bool>()).prop_map(|(cc, bban, spaced)| {
            let mut rem: u32 = 0;
            for c in format!("{bban}{cc}00").bytes() {
                let v = u32::from(if c.is_ascii_digit() {
                    c - b'0'
                } else {
                    c - b'A' + 10
                });
                rem = if v >= 10 {
                    (rem * 100 + v) % 97
                } else {
                    (rem * 10 + v) % 97
                };
            }
            let compact = format!("{cc}{:02}{bban}", 98 - rem);
            if !spaced {
                return compact;
            }
            compact
                .as_bytes()
                .chunks(4)
                .map(|c| String::from_utf8_lossy(c).into_owned())
                .collect::<Vec<_>>()
                .join(" ")
        })
    }

    fn jwt() -> impl Strategy<Value = String> {
        (
            prop::sample::select(vec!["HS256", "RS256", "ES256", "none", "EdDSA"]),
            "[a-z0-9]{1,12}",
            prop::collection::vec(any::<u8>(), 0..48),
        )
            .prop_map(|(alg, sub, sig)| {
                let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
                let header = b64.encode(format!(r#"{{"alg":"{alg}","typ":"JWT"}}"#));
                let payload = b64.encode(format!(r#"{{"sub":"{sub}"}}"#));
                format!("{header}.{payload}.{}", b64.encode(sig))
            })
    }

    fn aws_key() -> impl Strategy<Value = String> {
        "(AKIA|ASIA|ABIA|ACCA)[A-Z0-9]{16}"
    }

    fn private_key() -> impl Strategy<Value = String> {
        (
            prop::sample::select(vec!["", "RSA ", "EC ", "OPENSSH ", "ENCRYPTED "]),
            prop::collection::vec("[A-Za-z0-9+/]{64}", 1..6),
        )
            .prop_map(|(kind, lines)| {
                format!(
                    "-----BEGIN {kind}PRIVATE KEY-----\n{}\n-----END {kind}PRIVATE KEY-----",
                    lines.join("\n")
                )
            })
    }

    /// A valid value for a random detector (shared with the detectors' tests).
    pub(crate) fn detector_value() -> impl Strategy<Value = (Detector, String)> {
        prop_oneof![
            card().prop_map(|v| (Detector::CreditCard, v)),
            ssn().prop_map(|v| (Detector::Ssn, v)),
            email().prop_map(|v| (Detector::Email, v)),
            phone().prop_map(|v| (Detector::Phone, v)),
            iban().prop_map(|v| (Detector::Iban, v)),
            jwt().prop_map(|v| (Detector::Jwt, v)),
            aws_key().prop_map(|v| (Detector::AwsKey, v)),
            private_key().prop_map(|v| (Detector::PrivateKey, v)),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// Generated values are what their detector finds, as a whole; masked,
        /// they are neither found again nor contained in the output.
        #[test]
        fn masked_values_are_not_found_again((detector, value) in detector_value()) {
            let set = DetectorSet::new(&[detector]);
            let found: Vec<_> = set.find(&value).into_iter().map(|f| f.range).collect();
            prop_assert_eq!(found, vec![0..value.len()], "generator sanity: {}", value);
            for s in [MaskStrategy::Redact, MaskStrategy::Partial, MaskStrategy::Hash] {
                let out = masker(s).mask(&value);
                prop_assert!(set.find(&out).is_empty(), "{:?} output {:?} is found again", s, out);
                prop_assert!(!out.contains(&value), "{:?} output contains the value", s);
                // Also inside text, masked through findings.
                let text = format!("before {value} after");
                let out = masker(s).mask_findings(&text, &set.find(&text));
                prop_assert!(set.find(&out).is_empty(), "{:?}: {:?} is found again", s, out);
                prop_assert!(!out.contains(&value));
                prop_assert!(out.starts_with("before ") && out.ends_with(" after"));
            }
        }

        /// `partial` shows at most `keep` and at most a third of the characters,
        /// all at the end, and hides every other one.
        #[test]
        fn partial_keeps_only_the_allowed_suffix(value in "\\PC{0,40}", keep in 0u32..10) {
            let out = Masker::new(MaskStrategy::Partial, Some(keep), None, None)
                .expect("valid masker")
                .mask(&value);
            let chars: Vec<char> = value.chars().collect();
            let visible = (keep as usize).min(chars.len() / 3);
            let out_chars: Vec<char> = out.chars().collect();
            prop_assert_eq!(out_chars.len(), chars.len());
            let hidden = chars.len() - visible;
            prop_assert!(out_chars[..hidden].iter().all(|c| *c == '*'));
            prop_assert_eq!(&out_chars[hidden..], &chars[hidden..]);
        }

        /// `hash` is a function of the value: equal in, equal out; different in,
        /// different out.
        #[test]
        fn hash_is_deterministic_and_distinguishes(a in "\\PC{0,30}", b in "\\PC{0,30}") {
            let m = masker(MaskStrategy::Hash);
            prop_assert_eq!(m.mask(&a), m.mask(&a));
            if a != b {
                prop_assert_ne!(m.mask(&a), m.mask(&b));
            }
        }
    }
}
