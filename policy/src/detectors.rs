//! Finding sensitive values in free text: card numbers, SSNs, e-mail addresses,
//! phone numbers, IBANs, JWTs, AWS keys and PEM private keys.
//!
//! A [`DetectorSet`] is compiled once per policy bundle and then asked, for every
//! text value of a result, where the sensitive parts are. Most values (names,
//! statuses, timestamps without separators…) hold nothing any detector could
//! match, so [`DetectorSet::find`] first looks at a few cheap byte statistics
//! (digit count, `@`, well-known prefixes) and only runs the regular expressions
//! of the detectors that could possibly match.
//!
//! Each detector trades recall against false positives; the choices, per detector:
//!
//! - **creditCard**: 13–19 digits, optionally in groups separated by a single
//!   space or dash, Luhn-valid, first digit 2–6 (the major networks: Mastercard,
//!   Visa, Amex, Diners, Discover, JCB, UnionPay 62). The leading-digit rule keeps
//!   13-digit epoch-millisecond timestamps (`17…`) and most ids out. The number
//!   must stand alone: not glued to letters or further digits, and not the
//!   fraction or integer part of a decimal (`0.30000000000000004` is not a card).
//!   Inside a longer run of separated groups (`ref 12 4111 1111 1111 1111`), any
//!   run of whole groups that is a valid card is found.
//! - **ssn**: only the dashed form `AAA-GG-SSSS` with a valid area (not 000,
//!   666 or 9xx), group (not 00) and serial (not 0000). Nine bare digits are not
//!   detected: they are indistinguishable from any other 9-digit id; mask SSN
//!   columns by name instead.
//! - **email**: ASCII `local@domain.tld`; internationalised addresses are not detected.
//! - **phone**: `+` followed by 8–15 digits (E.164), optionally with single
//!   spaces, dots, dashes or a parenthesised area code between digits; and the
//!   North-American layouts `(415) 555-2671`, `415-555-2671`, `415.555.2671`,
//!   `1-415-555-2671`. Bare digit runs (years, zip codes, order ids), dates
//!   (`2024-01-15`) and national formats without `+` or the 3-3-4 layout
//!   (`020 7946 0958`) are not detected: matching them would mask most numbers.
//! - **iban**: upper-case country code, two check digits and 11–30 letters or
//!   digits, compact or in groups of four separated by single spaces; 15–34
//!   characters in all and mod-97 equal to 1.
//! - **jwt**: three base64url parts separated by dots (the signature may be
//!   empty: unsigned tokens still carry claims) whose first part decodes to a JSON
//!   object with an `alg` string.
//! - **awsKey**: access key ids (`AKIA`, `ASIA`, `ABIA`, `ACCA` + 16 upper-case
//!   letters or digits) anywhere; secret access keys (40 characters of base64)
//!   only right after a label such as `aws_secret_access_key=`,
//!   `"SecretAccessKey": "…"`: unlabelled, they are indistinguishable from any
//!   other 40-character base64 string. Only the secret itself is found, not its label.
//! - **privateKey**: the whole PEM block from `-----BEGIN … PRIVATE KEY-----` to
//!   its `-----END … PRIVATE KEY-----` (also PGP `PRIVATE KEY BLOCK`); a block
//!   without its END line (a truncated value) is found up to the end of the text.
//!
//! Text produced by the masker is never a finding: `hash` output (`hmac:` + 32
//! lower-case hex digits) has no `@`, `+`, dash or upper case, and any digit run in
//! it is glued to hex letters, so it cannot be a card. This matters because
//! re-masking a hash would break the equality the hash strategy exists to keep.

use std::ops::Range;
use std::sync::LazyLock;

use base64::Engine as _;
use regex::Regex;
use sluice_crds::Detector;

/// One sensitive span of a text: its byte range and the detector that found it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    /// Byte range in the text, on `char` boundaries.
    pub range: Range<usize>,
    /// The detector that found it (for merged overlapping findings, the one that
    /// found the earliest-starting span).
    pub detector: Detector,
}

/// The detectors of one or more masking rules. Cheap to build and clone: the
/// regular expressions are compiled once per process and shared.
#[derive(Clone, Debug, Default)]
pub struct DetectorSet {
    detectors: Vec<Detector>,
}

/// The compiled patterns; `None` only if a built-in pattern failed to compile
/// (a bug caught by this module's tests), in which case the detector fails
/// closed: every text that passes its pre-check is one whole finding.
struct Patterns {
    ssn: Option<Regex>,
    email: Option<Regex>,
    phone_intl: Option<Regex>,
    phone_nanp: Option<Regex>,
    iban: Option<Regex>,
    jwt: Option<Regex>,
    aws_key_id: Option<Regex>,
    aws_secret: Option<Regex>,
    pem_begin: Option<Regex>,
    pem_end: Option<Regex>,
}

const SSN: &str = r"(?-u:\b)([0-9]{3})-([0-9]{2})-([0-9]{4})(?-u:\b)";
const EMAIL: &str = r"[A-Za-z0-9._%+\-]+@[A-Za-z0-9](?:[A-Za-z0-9\-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9\-]*[A-Za-z0-9])?)*\.[A-Za-z]{2,63}(?-u:\b)";
const PHONE_INTL: &str = r"\+[1-9](?:[ .\-]?(?:[0-9]|\([0-9]{1,4}\)))+";
const PHONE_NANP: &str =
    r"(?:1[ .\-])?(?:\([0-9]{3}\) ?|[0-9]{3}[.\-])[0-9]{3}[.\-][0-9]{4}(?-u:\b)";
const IBAN: &str =
    r"(?-u:\b)[A-Z]{2}[0-9]{2}(?:[A-Z0-9]{11,30}|(?: [A-Z0-9]{4}){2,7}(?: [A-Z0-9]{1,4})?)(?-u:\b)";
const JWT: &str = r"eyJ[A-Za-z0-9_\-]+\.[A-Za-z0-9_\-]+\.[A-Za-z0-9_\-]*";
const AWS_KEY_ID: &str = r"(?-u:\b)(?:AKIA|ASIA|ABIA|ACCA)[A-Z0-9]{16}(?-u:\b)";
const AWS_SECRET: &str = r#"(?i:(?:aws)?[_\-. ]?secret[_\-. ]?(?:access)?[_\-. ]?key)["']?\s*[:=]\s*["']?([A-Za-z0-9/+]{40})(?:[^A-Za-z0-9/+=]|$)"#;
const PEM_BEGIN: &str = r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----";
const PEM_END: &str = r"-----END (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----";

// Word boundaries are ASCII (`(?-u:\b)`): an accented letter next to a value
// must not hide it, as a Unicode boundary would (`é` is a word character).
static PATTERNS: LazyLock<Patterns> = LazyLock::new(|| Patterns {
    ssn: Regex::new(SSN).ok(),
    email: Regex::new(EMAIL).ok(),
    phone_intl: Regex::new(PHONE_INTL).ok(),
    phone_nanp: Regex::new(PHONE_NANP).ok(),
    iban: Regex::new(IBAN).ok(),
    jwt: Regex::new(JWT).ok(),
    aws_key_id: Regex::new(AWS_KEY_ID).ok(),
    aws_secret: Regex::new(AWS_SECRET).ok(),
    pem_begin: Regex::new(PEM_BEGIN).ok(),
    pem_end: Regex::new(PEM_END).ok(),
});

impl DetectorSet {
    /// The set of the given detectors (duplicates are ignored).
    pub fn new(detectors: &[Detector]) -> Self {
        let mut list = detectors.to_vec();
        list.sort();
        list.dedup();
        if !list.is_empty() {
            LazyLock::force(&PATTERNS);
        }
        DetectorSet { detectors: list }
    }

    /// Whether the set has no detector (then nothing is ever found).
    pub fn is_empty(&self) -> bool {
        self.detectors.is_empty()
    }

    /// The detectors in the set, sorted, without duplicates.
    pub fn detectors(&self) -> &[Detector] {
        &self.detectors
    }

    /// Whether any detector finds anything in `text`.
    pub fn contains_any(&self, text: &str) -> bool {
        !self.find(text).is_empty()
    }

    /// What `find` would return without its pre-check (to test the pre-check).
    #[cfg(test)]
    fn find_everything(&self, text: &str) -> Vec<Finding> {
        let mut found = Vec::new();
        for &d in &self.detectors {
            self.find_one(d, text, &mut found);
        }
        merge(found)
    }

    /// The sensitive spans of `text`: sorted by start, non-overlapping
    /// (overlapping findings of different detectors are merged into one).
    pub fn find(&self, text: &str) -> Vec<Finding> {
        if self.detectors.is_empty() || text.len() < 6 {
            return Vec::new();
        }
        let signals = Signals::of(text);
        let mut found = Vec::new();
        for &d in &self.detectors {
            if signals.may_contain(d, text) {
                self.find_one(d, text, &mut found);
            }
        }
        merge(found)
    }

    fn find_one(&self, d: Detector, text: &str, out: &mut Vec<Finding>) {
        let p = &*PATTERNS;
        let mut push = |range: Range<usize>| out.push(Finding { range, detector: d });
        let whole = 0..text.len();
        match d {
            Detector::CreditCard => find_cards(text, &mut push),
            Detector::Ssn => match &p.ssn {
                Some(re) => find_ssns(re, text, &mut push),
                None => push(whole),
            },
            Detector::Email => match &p.email {
                Some(re) => re.find_iter(text).for_each(|m| push(m.range())),
                None => push(whole),
            },
            Detector::Phone => match (&p.phone_intl, &p.phone_nanp) {
                (Some(intl), Some(nanp)) => find_phones(intl, nanp, text, &mut push),
                _ => push(whole),
            },
            Detector::Iban => match &p.iban {
                Some(re) => find_ibans(re, text, &mut push),
                None => push(whole),
            },
            Detector::Jwt => match &p.jwt {
                Some(re) => find_jwts(re, text, &mut push),
                None => push(whole),
            },
            Detector::AwsKey => match (&p.aws_key_id, &p.aws_secret) {
                (Some(ids), Some(secrets)) => {
                    ids.find_iter(text).for_each(|m| push(m.range()));
                    for c in secrets.captures_iter(text) {
                        if let Some(m) = c.get(1) {
                            push(m.range());
                        }
                    }
                }
                _ => push(whole),
            },
            Detector::PrivateKey => match (&p.pem_begin, &p.pem_end) {
                (Some(begin), Some(end)) => find_pem_blocks(begin, end, text, &mut push),
                _ => push(whole),
            },
        }
    }
}

/// Sorts findings and merges overlapping ones.
fn merge(mut found: Vec<Finding>) -> Vec<Finding> {
    found.sort_by(|a, b| {
        a.range
            .start
            .cmp(&b.range.start)
            .then(b.range.end.cmp(&a.range.end))
    });
    let mut merged: Vec<Finding> = Vec::with_capacity(found.len());
    for f in found {
        match merged.last_mut() {
            Some(last) if f.range.start < last.range.end => {
                last.range.end = last.range.end.max(f.range.end);
            }
            _ => merged.push(f),
        }
    }
    merged
}

// === pre-check ===

/// Cheap facts about a text, gathered in one pass over its bytes, each of which
/// every finding of some detector implies; a detector whose fact is missing is
/// not run. (Each fact is a necessary condition of the detector's own
/// matching rules below; the property tests check the two stay in step.)
#[derive(Default)]
struct Signals {
    digits: usize,
    /// Most digits in one run of digit groups joined by single spaces or
    /// dashes (what a card number is made of).
    card_digits: usize,
    /// A run of exactly three digits followed by `-`, `.` or `)` (SSN area,
    /// North-American area code and exchange).
    three_then_separator: bool,
    /// `+` or `(` (international and parenthesised phone numbers).
    plus_or_paren: bool,
    at: bool,
    /// Two upper-case letters then two digits (an IBAN's start).
    iban_start: bool,
    /// `eyJ` (a JWT header: base64url of `{"`).
    jwt_start: bool,
    /// `AK`, `AS`, `AB` or `AC` (an access key id's prefix).
    aws_prefix: bool,
    /// Five dashes in a row (a PEM boundary).
    five_dashes: bool,
}

impl Signals {
    fn of(text: &str) -> Self {
        let b = text.as_bytes();
        let mut s = Signals::default();
        let mut run = 0usize;
        let mut group_digits = 0usize;
        let mut dashes = 0usize;
        for (i, &c) in b.iter().enumerate() {
            if c.is_ascii_digit() {
                s.digits += 1;
                run += 1;
                group_digits += 1;
                s.card_digits = s.card_digits.max(group_digits);
                if i >= 3
                    && b[i - 1].is_ascii_digit()
                    && b[i - 2].is_ascii_uppercase()
                    && b[i - 3].is_ascii_uppercase()
                {
                    s.iban_start = true;
                }
                dashes = 0;
                continue;
            }
            if run == 3 && matches!(c, b'-' | b'.' | b')') {
                s.three_then_separator = true;
            }
            let joins_groups =
                run > 0 && matches!(c, b' ' | b'-') && b.get(i + 1).is_some_and(u8::is_ascii_digit);
            if !joins_groups {
                group_digits = 0;
            }
            run = 0;
            if c == b'-' {
                dashes += 1;
                s.five_dashes |= dashes >= 5;
            } else {
                dashes = 0;
            }
            match c {
                b'@' => s.at = true,
                b'+' | b'(' => s.plus_or_paren = true,
                b'J' if i >= 2 && b[i - 2] == b'e' && b[i - 1] == b'y' => s.jwt_start = true,
                b'K' | b'S' | b'B' | b'C' if i >= 1 && b[i - 1] == b'A' => s.aws_prefix = true,
                _ => {}
            }
        }
        s
    }

    fn may_contain(&self, d: Detector, text: &str) -> bool {
        match d {
            Detector::CreditCard => self.card_digits >= 13,
            Detector::Ssn => self.three_then_separator,
            Detector::Email => self.at,
            Detector::Phone => {
                self.digits >= 8 && (self.plus_or_paren || self.three_then_separator)
            }
            Detector::Iban => self.iban_start && text.len() >= 15,
            Detector::Jwt => self.jwt_start,
            Detector::AwsKey => {
                self.aws_prefix || (text.len() >= 40 && contains_ignore_ascii_case(text, b"secret"))
            }
            Detector::PrivateKey => self.five_dashes,
        }
    }
}

fn contains_ignore_ascii_case(text: &str, needle: &[u8]) -> bool {
    text.as_bytes()
        .windows(needle.len())
        .any(|w| w.eq_ignore_ascii_case(needle))
}

// === credit cards ===

fn find_cards(text: &str, push: &mut impl FnMut(Range<usize>)) {
    let b = text.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if !b[i].is_ascii_digit() {
            i += 1;
            continue;
        }
        // A run of digit groups separated by single spaces or dashes.
        let mut groups: Vec<Range<usize>> = Vec::new();
        let mut j = i;
        loop {
            let start = j;
            while j < b.len() && b[j].is_ascii_digit() {
                j += 1;
            }
            groups.push(start..j);
            if j + 1 < b.len() && matches!(b[j], b' ' | b'-') && b[j + 1].is_ascii_digit() {
                j += 1;
            } else {
                break;
            }
        }
        let (before_ok, after_ok) = standalone(b, i, j);
        card_windows(b, &groups, before_ok, after_ok, push);
        i = j;
    }
}

/// Whether the run `start..end` is not glued, at its start and at its end, to
/// letters, digits or a decimal point.
fn standalone(b: &[u8], start: usize, end: usize) -> (bool, bool) {
    let before_ok = match start.checked_sub(1).map(|k| b[k]) {
        None => true,
        Some(c) if c.is_ascii_alphanumeric() || c == b'_' => false,
        Some(b'.' | b',') => !(start >= 2 && b[start - 2].is_ascii_digit()),
        Some(_) => true,
    };
    let after_ok = match b.get(end) {
        None => true,
        Some(c) if c.is_ascii_alphanumeric() || *c == b'_' => false,
        Some(b'.' | b',') => !b.get(end + 1).is_some_and(u8::is_ascii_digit),
        Some(_) => true,
    };
    (before_ok, after_ok)
}

/// Finds card numbers made of whole consecutive groups, longest first from the
/// left. A window inside the run is bounded by separators; one at the run's
/// edge must be standalone there.
fn card_windows(
    b: &[u8],
    groups: &[Range<usize>],
    before_ok: bool,
    after_ok: bool,
    push: &mut impl FnMut(Range<usize>),
) {
    let last = groups.len().saturating_sub(1);
    let mut g = 0;
    while g < groups.len() {
        let mut best = None;
        let mut count = 0;
        for (h, group) in groups.iter().enumerate().skip(g) {
            count += group.len();
            if count > 19 {
                break;
            }
            let edges_ok = (g > 0 || before_ok) && (h < last || after_ok);
            if count >= 13 && edges_ok && is_card(b, &groups[g..=h]) {
                best = Some(h);
            }
        }
        match best {
            Some(h) => {
                push(groups[g].start..groups[h].end);
                g = h + 1;
            }
            None => g += 1,
        }
    }
}

fn is_card(b: &[u8], groups: &[Range<usize>]) -> bool {
    let digits = || {
        groups
            .iter()
            .flat_map(|r| b[r.clone()].iter().map(|c| c - b'0'))
    };
    matches!(digits().next(), Some(2..=6)) && luhn_valid(digits())
}

/// The Luhn checksum over digits given most significant first.
pub(crate) fn luhn_valid(digits: impl DoubleEndedIterator<Item = u8>) -> bool {
    let sum: u32 = digits
        .rev()
        .enumerate()
        .map(|(k, d)| {
            let d = u32::from(d);
            if !k.is_multiple_of(2) {
                let x = d * 2;
                if x > 9 { x - 9 } else { x }
            } else {
                d
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

// === SSN ===

fn find_ssns(re: &Regex, text: &str, push: &mut impl FnMut(Range<usize>)) {
    let b = text.as_bytes();
    for c in re.captures_iter(text) {
        let (Some(all), Some(area), Some(group), Some(serial)) =
            (c.get(0), c.get(1), c.get(2), c.get(3))
        else {
            continue;
        };
        let r = all.range();
        // Part of a longer dashed number (a phone, a card): not an SSN.
        let glued_before =
            r.start >= 2 && b[r.start - 1] == b'-' && b[r.start - 2].is_ascii_digit();
        let glued_after =
            b.get(r.end) == Some(&b'-') && b.get(r.end + 1).is_some_and(u8::is_ascii_digit);
        let area = area.as_str();
        let valid = area != "000"
            && area != "666"
            && !area.starts_with('9')
            && group.as_str() != "00"
            && serial.as_str() != "0000";
        if valid && !glued_before && !glued_after {
            push(r);
        }
    }
}

// === phone ===

fn find_phones(intl: &Regex, nanp: &Regex, text: &str, push: &mut impl FnMut(Range<usize>)) {
    let b = text.as_bytes();
    for m in intl.find_iter(text) {
        let digits = m.as_str().bytes().filter(u8::is_ascii_digit).count();
        let before_ok = m.start() == 0 || !b[m.start() - 1].is_ascii_alphanumeric();
        let after_ok = !b.get(m.end()).is_some_and(u8::is_ascii_alphanumeric);
        if (8..=15).contains(&digits) && before_ok && after_ok {
            push(m.range());
        }
    }
    for m in nanp.find_iter(text) {
        let before_ok = match m.start().checked_sub(1).map(|k| b[k]) {
            None => true,
            Some(c) => !(c.is_ascii_alphanumeric() || matches!(c, b'+' | b'-' | b'.' | b'_')),
        };
        let after_ok = !(matches!(b.get(m.end()), Some(b'-' | b'.'))
            && b.get(m.end() + 1).is_some_and(u8::is_ascii_digit));
        if before_ok && after_ok {
            push(m.range());
        }
    }
}

// === IBAN ===

fn find_ibans(re: &Regex, text: &str, push: &mut impl FnMut(Range<usize>)) {
    for m in re.find_iter(text) {
        let s = m.as_str();
        // A spaced IBAN may have swallowed a following upper-case word: retry
        // without trailing groups.
        let mut end = s.len();
        loop {
            let candidate = &s[..end];
            if iban_valid(candidate) {
                push(m.start()..m.start() + end);
                break;
            }
            match candidate.rfind(' ') {
                Some(k) if k >= 15 => end = k,
                _ => break,
            }
        }
    }
}

/// Length 15–34 (spaces ignored) and the ISO 13616 mod-97 check.
pub(crate) fn iban_valid(s: &str) -> bool {
    let compact: Vec<u8> = s.bytes().filter(|c| *c != b' ').collect();
    if !(15..=34).contains(&compact.len()) {
        return false;
    }
    let (head, tail) = compact.split_at(4);
    let mut rem: u32 = 0;
    for &c in tail.iter().chain(head) {
        let v = match c {
            b'0'..=b'9' => u32::from(c - b'0'),
            b'A'..=b'Z' => u32::from(c - b'A') + 10,
            _ => return false,
        };
        rem = if v >= 10 {
            (rem * 100 + v) % 97
        } else {
            (rem * 10 + v) % 97
        };
    }
    rem == 1
}

// === JWT ===

fn find_jwts(re: &Regex, text: &str, push: &mut impl FnMut(Range<usize>)) {
    let b = text.as_bytes();
    for m in re.find_iter(text) {
        let before = m.start().checked_sub(1).map(|k| b[k]);
        if before.is_some_and(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'-' | b'.')) {
            continue;
        }
        let header = m.as_str().split('.').next().unwrap_or_default();
        if jwt_header_valid(header) {
            push(m.range());
        }
    }
}

fn jwt_header_valid(header: &str) -> bool {
    let Ok(bytes) = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(header) else {
        return false;
    };
    match serde_json::from_slice::<serde_json::Value>(&bytes) {
        Ok(serde_json::Value::Object(map)) => map.get("alg").is_some_and(|a| a.is_string()),
        _ => false,
    }
}

// === PEM private keys ===

fn find_pem_blocks(begin: &Regex, end: &Regex, text: &str, push: &mut impl FnMut(Range<usize>)) {
    let mut at = 0;
    while let Some(b) = begin.find_at(text, at) {
        let stop = end.find_at(text, b.end()).map_or(text.len(), |e| e.end());
        push(b.start()..stop);
        at = stop;
        if at >= text.len() {
            break;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(d: Detector) -> DetectorSet {
        DetectorSet::new(&[d])
    }

    fn found(d: Detector, text: &str) -> Vec<&str> {
        set(d)
            .find(text)
            .into_iter()
            .map(|f| &text[f.range])
            .collect()
    }

    /// Each positive example holds exactly one value to find (the bracketed part
    /// when brackets are used, otherwise the whole text); each negative none.
    fn check(d: Detector, positives: &[(&str, &str)], negatives: &[&str]) {
        for (text, want) in positives {
            assert_eq!(
                found(d, text),
                vec![*want],
                "{d:?} should find {want:?} in {text:?}"
            );
        }
        for text in negatives {
            assert_eq!(
                found(d, text),
                Vec::<&str>::new(),
                "{d:?} should find nothing in {text:?}"
            );
        }
    }

    #[test]
    fn every_built_in_pattern_compiles() {
        let p = &*PATTERNS;
        for (name, re) in [
            ("ssn", &p.ssn),
            ("email", &p.email),
            ("phone_intl", &p.phone_intl),
            ("phone_nanp", &p.phone_nanp),
            ("iban", &p.iban),
            ("jwt", &p.jwt),
            ("aws_key_id", &p.aws_key_id),
            ("aws_secret", &p.aws_secret),
            ("pem_begin", &p.pem_begin),
            ("pem_end", &p.pem_end),
        ] {
            assert!(re.is_some(), "pattern {name} does not compile");
        }
    }

    #[test]
    fn credit_cards() {
        check(
            Detector::CreditCard,
            &[
                ("4111111111111111", "4111111111111111"),
                ("card: 4111 1111 1111 1111.", "4111 1111 1111 1111"),
                ("5500-0000-0000-0004 exp 12/29", "5500-0000-0000-0004"),
                ("amex 378282246310005", "378282246310005"),
                ("visa13 4222222222222 ok", "4222222222222"),
                ("ref 12 4111 1111 1111 1111", "4111 1111 1111 1111"),
                ("(6011111111111117)", "6011111111111117"),
                ("\"n\":\"3530111333300000\"", "3530111333300000"),
            ],
            &[
                "4111111111111112",        // Luhn fails
                "4111 1111 1111 1112",     // Luhn fails, grouped
                "41111111111111111111111", // part of a longer digit run
                "1700000000000",           // epoch millis: leading 1
                "0.30000000000000004",     // a decimal fraction
                "x4111111111111111",       // glued to a letter
                "4111111111111111abc",     // glued to letters
                "4111  1111 1111 1111",    // double space breaks the group run
                "411111111111",            // 12 digits
                "no digits here at all",
            ],
        );
    }

    #[test]
    fn ssns() {
        check(
            Detector::Ssn,
            &[
                ("123-45-6789", "123-45-6789"),
                ("ssn=078-05-1120;", "078-05-1120"),
                ("(665-12-3456)", "665-12-3456"),
            ],
            &[
                "000-12-3456",   // area 000
                "666-12-3456",   // area 666
                "912-12-3456",   // area 9xx
                "123-00-4567",   // group 00
                "123-45-0000",   // serial 0000
                "123456789",     // undashed: not detected (documented)
                "1-123-45-6789", // part of a longer dashed number
                "123-45-6789-1", // part of a longer dashed number
                "2024-01-15",    // a date
            ],
        );
    }

    #[test]
    fn emails() {
        check(
            Detector::Email,
            &[
                ("alice@example.com", "alice@example.com"),
                (
                    "to: <bob.smith+tag@mail.example.co.uk>",
                    "bob.smith+tag@mail.example.co.uk",
                ),
                ("x_y%z-1@sub-domain.io, next", "x_y%z-1@sub-domain.io"),
            ],
            &[
                "@example.com",
                "alice@",
                "alice@localhost",
                "a@b.c",
                "user at example dot com",
            ],
        );
    }

    #[test]
    fn phones() {
        check(
            Detector::Phone,
            &[
                ("+14155552671", "+14155552671"),
                ("call +44 20 7946 0958 now", "+44 20 7946 0958"),
                ("+1 (415) 555-2671", "+1 (415) 555-2671"),
                ("(415) 555-2671", "(415) 555-2671"),
                ("tel 415-555-2671.", "415-555-2671"),
                ("415.555.2671", "415.555.2671"),
                ("1-800-555-0199", "1-800-555-0199"),
            ],
            &[
                "2024",              // a year
                "order 4155552671",  // bare digits
                "2024-01-15",        // a date
                "+1234567",          // too short for E.164
                "+1234567890123456", // too long for E.164
                "10.0.0.1",          // an address
                "123-45-6789",       // an SSN layout
                "v1.2.3-4",
                "x+14155552671", // glued to a letter
            ],
        );
    }

    #[test]
    fn ibans() {
        check(
            Detector::Iban,
            &[
                ("DE89370400440532013000", "DE89370400440532013000"),
                (
                    "iban: DE89 3704 0044 0532 0130 00 EUR",
                    "DE89 3704 0044 0532 0130 00",
                ),
                ("GB82 WEST 1234 5698 7654 32", "GB82 WEST 1234 5698 7654 32"),
                ("NO9386011117947", "NO9386011117947"),
            ],
            &[
                "DE89370400440532013001", // wrong checksum
                "GB82 WEST 1234 5698 7654 33",
                "DE8937040044",            // too short
                "de89370400440532013000",  // lower case (documented)
                "XDE89370400440532013000", // glued to a letter
                "ORDER12345678901234",
            ],
        );
    }

    #[test]
    fn jwts() {
        let token = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4gRG9lIiwiaWF0IjoxNTE2MjM5MDIyfQ.SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c";
        let unsigned = "eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.";
        let bearer = format!("Authorization: Bearer {token}");
        check(
            Detector::Jwt,
            &[(token, token), (&bearer, token), (unsigned, unsigned)],
            &[
                // header {"foo":"bar"}: no alg
                "eyJmb28iOiJiYXIifQ.eyJzdWIiOiJ4In0.c2ln",
                // random base64url in three parts
                "eyJxxxxxxxxxxxxxxxx.yyyyyyyyyy.zzzzzzzz",
                "abc.def.ghi",
                // only two parts
                "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0",
            ],
        );
    }

    #[test]
    fn aws_keys() {
        check(
            Detector::AwsKey,
            &[
                ("AKIAIOSFODNN7EXAMPLE", "AKIAIOSFODNN7EXAMPLE"),
                ("key=ASIAY34FZKBOKMUTVV7A;", "ASIAY34FZKBOKMUTVV7A"),
                (
                    "aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY\n",
                    "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
                ),
                (
                    r#"{"SecretAccessKey": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"}"#,
                    "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
                ),
            ],
            &[
                "AKIAIOSFODNN7EXAMPL",   // 15 after the prefix
                "AKIAIOSFODNN7EXAMPLEX", // glued: too long
                "AKIDIOSFODNN7EXAMPLE",  // unknown prefix
                "akiaiosfodnn7example",
                "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", // unlabelled secret (documented)
                "secret: short",
            ],
        );
    }

    #[test]
    fn private_keys() {
        let rsa =
            "-----BEGIN RSA PRIVATE KEY-----\nMIIEpAIBAAKCAQEA\n-----END RSA PRIVATE KEY-----";
        let pkcs8 = "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEI\n-----END PRIVATE KEY-----";
        let openssh = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEA\n-----END OPENSSH PRIVATE KEY-----";
        let in_text = format!("key:\n{rsa}\ntrailing");
        let truncated = "-----BEGIN EC PRIVATE KEY-----\nMHcCAQEEIB";
        check(
            Detector::PrivateKey,
            &[
                (rsa, rsa),
                (pkcs8, pkcs8),
                (openssh, openssh),
                (&in_text, rsa),
                (truncated, truncated),
            ],
            &[
                "-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEA\n-----END PUBLIC KEY-----",
                "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----",
                "BEGIN RSA PRIVATE KEY",
            ],
        );
    }

    #[test]
    fn overlapping_findings_merge_and_stay_sorted() {
        let all = DetectorSet::new(&[Detector::Email, Detector::Phone, Detector::CreditCard]);
        let text = "x +14155552671 and 4111111111111111 and a@example.com";
        let got: Vec<(&str, Detector)> = all
            .find(text)
            .into_iter()
            .map(|f| (&text[f.range], f.detector))
            .collect();
        assert_eq!(
            got,
            vec![
                ("+14155552671", Detector::Phone),
                ("4111111111111111", Detector::CreditCard),
                ("a@example.com", Detector::Email),
            ]
        );
        // "+4222222222222" is both an E.164 number and a (13-digit) card: one
        // finding, attributed to the detector whose span starts first.
        let both = "+4222222222222";
        let f = all.find(both);
        assert_eq!(
            f,
            vec![Finding {
                range: 0..both.len(),
                detector: Detector::Phone
            }]
        );
    }

    #[test]
    fn hash_mask_output_is_never_a_finding() {
        let all = DetectorSet::new(&[Detector::CreditCard]);
        // Digests whose leading or trailing digits are a Luhn-valid card number.
        assert!(all.contains_any("4111111111111111"));
        assert!(!all.contains_any("hmac:4111111111111111abcdefabcdefabcd"));
        assert!(!all.contains_any("hmac:abcdefabcdefabcd4111111111111111"));
        assert!(all.contains_any("hmac:abcdefabcdefabcd4111111111111111 4111111111111111"));
    }

    #[test]
    fn empty_set_finds_nothing_and_cheap_texts_are_skipped() {
        let none = DetectorSet::new(&[]);
        assert!(none.is_empty());
        assert!(none.find("4111111111111111 a@example.com").is_empty());
        let all = DetectorSet::new(&[
            Detector::CreditCard,
            Detector::Ssn,
            Detector::Email,
            Detector::Phone,
            Detector::Iban,
            Detector::Jwt,
            Detector::AwsKey,
            Detector::PrivateKey,
        ]);
        assert!(!all.is_empty());
        assert!(!all.contains_any("shipped, awaiting pickup at the depot"));
        assert!(all.contains_any("é 4111111111111111 ü"));
    }

    #[test]
    fn values_next_to_non_ascii_letters_are_found() {
        for (d, value) in [
            (Detector::CreditCard, "4111111111111111"),
            (Detector::Ssn, "123-45-6789"),
            (Detector::Email, "alice@example.com"),
            (Detector::Phone, "415-555-2671"),
            (Detector::Iban, "DE89370400440532013000"),
            (Detector::AwsKey, "AKIAIOSFODNN7EXAMPLE"),
        ] {
            let text = format!("é{value}ü");
            assert_eq!(found(d, &text), vec![value], "{d:?} in {text:?}");
        }
    }

    #[test]
    fn findings_are_on_char_boundaries() {
        let all = DetectorSet::new(&[Detector::Email, Detector::CreditCard]);
        let text = "ünïcödé→alice@example.com←4111111111111111…";
        for f in all.find(text) {
            assert!(text.is_char_boundary(f.range.start) && text.is_char_boundary(f.range.end));
        }
        assert_eq!(all.find(text).len(), 2);
    }

    mod precheck {
        use proptest::prelude::*;

        use super::*;
        use crate::masker::tests::detector_value;

        const ALL: [Detector; 8] = [
            Detector::CreditCard,
            Detector::Ssn,
            Detector::Email,
            Detector::Phone,
            Detector::Iban,
            Detector::Jwt,
            Detector::AwsKey,
            Detector::PrivateKey,
        ];

        fn piece() -> impl Strategy<Value = String> {
            prop_oneof![
                detector_value().prop_map(|(_, v)| v),
                "[0-9]{1,5}",
                "[ .\\-+()@/:=_]",
                "[A-Z]{1,3}",
                "[a-z]{1,3}",
                "\\PC",
            ]
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(512))]

            /// The pre-check only skips work: with or without it, `find` agrees.
            #[test]
            fn precheck_never_hides_a_finding(pieces in prop::collection::vec(piece(), 0..8)) {
                let text = pieces.concat();
                let set = DetectorSet::new(&ALL);
                prop_assert_eq!(set.find(&text), set.find_everything(&text), "{:?}", text);
            }
        }
    }
}
