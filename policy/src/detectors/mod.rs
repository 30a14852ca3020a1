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

#[cfg(test)]
mod tests;

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
