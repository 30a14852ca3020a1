//! HTTP rule matching (method, path, query, JSON body) and masking of JSON
//! values by JSONPath.
//!
//! ## Path normalisation
//!
//! A path glob is matched against the request path as the upstream will
//! understand it, so that encoding tricks cannot slip past a deny rule
//! ([`normalize_path`]):
//!
//! 1. percent-escapes are decoded once (`%2e%2e` is `..`, `%41` is `A`);
//!    a malformed escape (`%zz`), an escape that decodes to another escape
//!    (`%252e`: double encoding, read differently by different servers), a
//!    separator hidden in an escape (`%2F`, `%5C`, `%3B`), a `;` path
//!    parameter (`/admin;jsessionid=x`, `..;`: Java servers drop them, others
//!    do not), a control character, a backslash (a separator on some
//!    servers) or invalid UTF-8 makes the path *ambiguous*;
//! 2. empty segments and `.` are removed (`//admin` is `/admin`), `..` removes
//!    the segment before it (`/v1/../admin` is `/admin`); a `..` that would
//!    climb above the root (`/../admin`: out of the Connection's baseURL) makes
//!    the path ambiguous too;
//! 3. the trailing slash is dropped (`/admin/` is `/admin`).
//!
//! The proxy forwards the decided path ([`forward_path`]), not the raw one,
//! so the upstream reads the path the rules saw whatever its own
//! normalisation. An ambiguous path cannot be matched reliably. [`HttpMatcher::matches`]
//! treats it as matching every path glob (so deny and approval rules apply),
//! and callers must refuse such requests (400) before deciding, with
//! [`normalize_path`], because an *allow* rule would match it too.
//!
//! ## Globs
//!
//! `*` matches within one segment, `**` any number of whole segments, and a
//! glob ending in `/**` also matches the path it is under (`/v1/refunds/**`
//! matches `/v1/refunds`). Globs are case-sensitive, like paths.
//!
//! ## JSONPath
//!
//! A subset: `$`, `.name`, `['name']` / `["name"]`, `[0]`, `[*]`, `.*`, and
//! recursive descent `..name`, `..*`, `..[0]`. No filters, slices, unions or
//! negative indexes (they are refused with the position of the problem).

use globset::{GlobBuilder, GlobMatcher};
use regex::{Regex, RegexBuilder};
use serde_json::Value;
use sluice_crds::{JsonBodyPredicate, RuleMatch};

use crate::detectors::DetectorSet;
use crate::masker::Masker;

/// The longest JSONPath accepted, in bytes.
const MAX_JSON_PATH_LEN: usize = 1024;
/// The most steps a JSONPath may have (the matcher keeps its state in a `u64`).
const MAX_JSON_PATH_STEPS: usize = 63;
/// Upper bound on the compiled size of a `matches` regular expression.
const REGEX_SIZE_LIMIT: usize = 1 << 20;

/// A rule's HTTP match could not be compiled; the message names the field.
#[derive(Debug, thiserror::Error)]
pub enum HttpMatchError {
    /// A path or query glob does not parse.
    #[error("{field}: invalid glob {pattern:?}: {source}")]
    InvalidGlob {
        /// The field, e.g. `paths[1]`.
        field: String,
        /// The glob as written.
        pattern: String,
        /// Why it does not parse.
        #[source]
        source: globset::Error,
    },
    /// A path glob that does not start with `/`.
    #[error("{field}: path glob {pattern:?} must start with '/', e.g. \"/v1/refunds/**\"")]
    RelativePath {
        /// The field, e.g. `paths[0]`.
        field: String,
        /// The glob as written.
        pattern: String,
    },
    /// A method that is not an HTTP method token.
    #[error("{field}: {method:?} is not an HTTP method; write e.g. GET, POST or DELETE")]
    InvalidMethod {
        /// The field, e.g. `methods[0]`.
        field: String,
        /// The method as written.
        method: String,
    },
    /// A `matches` regular expression does not compile.
    #[error("{field}: invalid regular expression: {source}")]
    InvalidRegex {
        /// The field, e.g. `jsonBody[0].matches`.
        field: String,
        /// Why it does not compile.
        #[source]
        source: regex::Error,
    },
    /// A JSONPath does not parse.
    #[error("{field}: invalid JSONPath {path:?} at character {position}: {reason}")]
    InvalidJsonPath {
        /// The field, e.g. `jsonBody[0].path` (`jsonPath` when parsed on its own).
        field: String,
        /// The path as written.
        path: String,
        /// 0-based character offset of the problem.
        position: usize,
        /// What is wrong there.
        reason: &'static str,
    },
    /// A JSON body predicate with no condition.
    #[error(
        "{field}: a jsonBody predicate needs at least one of exists, equals, oneOf, matches, \
         greaterThan, lessThan"
    )]
    EmptyPredicate {
        /// The field, e.g. `jsonBody[0]`.
        field: String,
    },
}

/// A request path that cannot be normalised unambiguously.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// A `%` not followed by two hex digits.
    #[error("the request path has a malformed percent-escape; encode '%' as %25")]
    MalformedEscape,
    /// An escape that decodes to another escape (`%252e`).
    #[error(
        "the request path is percent-encoded twice (e.g. %252e); servers disagree on what it means"
    )]
    DoubleEncoded,
    /// A decoded control character or backslash.
    #[error("the request path contains a control character or a backslash")]
    ForbiddenCharacter,
    /// Decoded bytes that are not UTF-8.
    #[error("the request path does not decode to UTF-8")]
    InvalidUtf8,
    /// A `..` segment that would climb above the root (above the
    /// Connection's baseURL).
    #[error(
        "the request path climbs above the root with '..' (it would leave the Connection's baseURL)"
    )]
    AboveRoot,
    /// `%2F`, `%5C` or `%3B`: a separator some servers decode and others do not.
    #[error(
        "the request path hides a separator in a percent-escape (%2F, %5C or %3B), which servers read differently"
    )]
    EncodedSeparator,
    /// A `;` path parameter (dropped by Java servers, kept by others).
    #[error(
        "the request path has a ';' parameter, which servers read differently; encode ';' in a query instead"
    )]
    PathParameter,
}

/// The parts of an HTTP request that rules look at.
#[derive(Clone, Copy, Debug)]
pub struct HttpRequest<'a> {
    /// The method, any case.
    pub method: &'a str,
    /// The path as received (percent-encoded, not normalised), without query.
    pub path: &'a str,
    /// The raw query string, without `?`, not decoded.
    pub query: &'a str,
    /// The request body, when it is JSON.
    pub body: Option<&'a Value>,
}

/// Whether a rule's match can apply to HTTP requests: a match with any SQL
/// field never matches HTTP.
pub fn applies(m: &RuleMatch) -> bool {
    !m.has_sql_fields()
}

/// The compiled HTTP part of a rule's match. Every field given must match.
#[derive(Clone, Debug)]
pub struct HttpMatcher {
    /// Set when the match has SQL fields: it never matches HTTP.
    never: bool,
    /// Upper-case; empty means any.
    methods: Vec<String>,
    /// Empty means any.
    paths: Vec<GlobMatcher>,
    query: Vec<(String, GlobMatcher)>,
    json_body: Vec<BodyPredicate>,
}

#[derive(Clone, Debug)]
struct BodyPredicate {
    path: JsonPath,
    exists: Option<bool>,
    equals: Option<Value>,
    one_of: Option<Vec<Value>>,
    matches: Option<Regex>,
    greater_than: Option<f64>,
    less_than: Option<f64>,
}

impl HttpMatcher {
    /// Compiles the HTTP fields of `m`; errors name the failing field.
    pub fn compile(m: &RuleMatch) -> Result<Self, HttpMatchError> {
        let mut methods = Vec::with_capacity(m.methods.len());
        for (i, method) in m.methods.iter().enumerate() {
            let valid = !method.is_empty()
                && method
                    .bytes()
                    .all(|b| b.is_ascii_alphabetic() || b == b'-' || b == b'_');
            if !valid {
                return Err(HttpMatchError::InvalidMethod {
                    field: format!("methods[{i}]"),
                    method: method.clone(),
                });
            }
            methods.push(method.to_ascii_uppercase());
        }
        let mut paths = Vec::with_capacity(m.paths.len());
        for (i, pattern) in m.paths.iter().enumerate() {
            let field = format!("paths[{i}]");
            if !pattern.starts_with('/') {
                return Err(HttpMatchError::RelativePath {
                    field,
                    pattern: pattern.clone(),
                });
            }
            // Paths are matched without their trailing slash.
            let trimmed = match pattern.trim_end_matches('/') {
                "" => "/",
                t => t,
            };
            paths.push(glob(trimmed, true, &field, pattern)?);
            if let Some(parent) = trimmed.strip_suffix("/**") {
                paths.push(glob(
                    if parent.is_empty() { "/" } else { parent },
                    true,
                    &field,
                    pattern,
                )?);
            }
        }
        let query = m
            .query
            .iter()
            .map(|(name, value)| {
                let field = format!("query.{name}");
                Ok((name.clone(), glob(value, false, &field, value)?))
            })
            .collect::<Result<Vec<_>, HttpMatchError>>()?;
        let json_body = m
            .json_body
            .iter()
            .enumerate()
            .map(|(i, p)| BodyPredicate::compile(p, &format!("jsonBody[{i}]")))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(HttpMatcher {
            never: !applies(m),
            methods,
            paths,
            query,
            json_body,
        })
    }

    /// Whether `req` matches, refusing an ambiguous path instead of guessing:
    /// the form to use when the caller can refuse the request (400) on `Err`.
    pub fn matches_checked(&self, req: &HttpRequest<'_>) -> Result<bool, PathError> {
        normalize_path(req.path)?;
        Ok(self.matches(req))
    }

    /// Whether `req` matches. See the module documentation for how the path is
    /// normalised; an ambiguous path matches every path glob (prefer
    /// [`HttpMatcher::matches_checked`]).
    pub fn matches(&self, req: &HttpRequest<'_>) -> bool {
        self.matches_parts(req) && self.json_body.iter().all(|p| p.holds(req.body))
    }

    /// Whether `req` matches on method, path and query (the body left out):
    /// whether this rule's `jsonBody` predicates would be asked about it.
    pub fn matches_without_body(&self, req: &HttpRequest<'_>) -> bool {
        self.matches_parts(req)
    }

    fn matches_parts(&self, req: &HttpRequest<'_>) -> bool {
        if self.never {
            return false;
        }
        if !self.methods.is_empty()
            && !self
                .methods
                .iter()
                .any(|m| m.eq_ignore_ascii_case(req.method))
        {
            return false;
        }
        if !self.paths.is_empty() {
            // An ambiguous path could be any path: it matches (callers refuse
            // such requests before deciding).
            if let Ok(path) = normalize_path(req.path)
                && !self.paths.iter().any(|g| g.is_match(path.as_str()))
            {
                return false;
            }
        }
        if !self.query.is_empty() {
            let params = parse_query(req.query);
            for (name, value) in &self.query {
                let present = params
                    .iter()
                    .any(|(k, v)| k == name && value.is_match(v.as_str()));
                if !present {
                    return false;
                }
            }
        }
        true
    }
}

fn glob(
    pattern: &str,
    segments: bool,
    field: &str,
    written: &str,
) -> Result<GlobMatcher, HttpMatchError> {
    GlobBuilder::new(pattern)
        .literal_separator(segments)
        .backslash_escape(true)
        .build()
        .map(|g| g.compile_matcher())
        .map_err(|source| HttpMatchError::InvalidGlob {
            field: field.to_string(),
            pattern: written.to_string(),
            source,
        })
}

/// The decoded `name=value` pairs of a raw query (`+` is a space; a malformed
/// escape is kept as written).
fn parse_query(raw: &str) -> Vec<(String, String)> {
    raw.split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (decode_query_part(k), decode_query_part(v))
        })
        .collect()
}

fn decode_query_part(s: &str) -> String {
    let plus = s.replace('+', " ");
    match percent_decode(&plus) {
        Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
        Err(()) => plus,
    }
}

/// Decodes every `%XX`; `Err` on a `%` not followed by two hex digits.
fn percent_decode(s: &str) -> Result<Vec<u8>, ()> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hi = b.get(i + 1).and_then(|c| (*c as char).to_digit(16));
            let lo = b.get(i + 2).and_then(|c| (*c as char).to_digit(16));
            match (hi, lo) {
                (Some(hi), Some(lo)) => {
                    // Both digits are < 16, so this fits in a byte.
                    out.push(u8::try_from(hi * 16 + lo).map_err(|_| ())?);
                    i += 3;
                }
                _ => return Err(()),
            }
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    Ok(out)
}

/// The path as the rules see it (see the module documentation), or why it is
/// ambiguous. Requests with an ambiguous path should be refused before any rule
/// is consulted.
pub fn normalize_path(raw: &str) -> Result<String, PathError> {
    let segments = path_segments(raw)?;
    let mut out = String::with_capacity(raw.len() + 1);
    if segments.is_empty() {
        out.push('/');
    }
    for s in segments {
        out.push('/');
        out.push_str(&s);
    }
    Ok(out)
}

/// The path to send upstream for `raw`: exactly the path the rules decided
/// ([`normalize_path`]), each segment percent-encoded again where RFC 3986
/// needs it (so the upstream decodes it to the same segments), and the
/// trailing slash kept (`/entries/1/` is decided as `/entries/1`).
pub fn forward_path(raw: &str) -> Result<String, PathError> {
    let segments = path_segments(raw)?;
    let mut out = String::with_capacity(raw.len() + 1);
    for s in &segments {
        out.push('/');
        for b in s.bytes() {
            if b.is_ascii_alphanumeric() || b"-._~!$&'()*+,=:@".contains(&b) {
                out.push(char::from(b));
            } else {
                out.push_str(&format!("%{b:02X}"));
            }
        }
    }
    if segments.is_empty() || raw.ends_with('/') {
        out.push('/');
    }
    Ok(out)
}

/// The decoded segments of a path, dot-segments resolved; see the module
/// documentation for what is refused.
fn path_segments(raw: &str) -> Result<Vec<String>, PathError> {
    if raw.contains(';') {
        return Err(PathError::PathParameter);
    }
    let rb = raw.as_bytes();
    let hidden = rb.windows(3).any(|w| {
        w[0] == b'%'
            && matches!(
                [w[1].to_ascii_uppercase(), w[2].to_ascii_uppercase()],
                [b'2', b'F'] | [b'5', b'C'] | [b'3', b'B']
            )
    });
    if hidden {
        return Err(PathError::EncodedSeparator);
    }
    let bytes = percent_decode(raw).map_err(|()| PathError::MalformedEscape)?;
    let decoded = String::from_utf8(bytes).map_err(|_| PathError::InvalidUtf8)?;
    if decoded.chars().any(|c| c.is_control() || c == '\\') {
        return Err(PathError::ForbiddenCharacter);
    }
    let db = decoded.as_bytes();
    let double = db
        .windows(3)
        .any(|w| w[0] == b'%' && w[1].is_ascii_hexdigit() && w[2].is_ascii_hexdigit());
    if double {
        return Err(PathError::DoubleEncoded);
    }
    let mut segments: Vec<String> = Vec::new();
    for segment in decoded.split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                if segments.pop().is_none() {
                    return Err(PathError::AboveRoot);
                }
            }
            s => segments.push(s.to_string()),
        }
    }
    Ok(segments)
}

// === request grammar ===

/// The deepest nesting of arrays and objects accepted in a request body a
/// rule inspects.
pub const MAX_BODY_DEPTH: usize = 64;
/// The largest magnitude of a number in a request body a rule inspects:
/// 2^53, the range in which every integer is exact in an IEEE-754 double
/// (RFC 7493 §2.2), so every JSON reader sees the same value.
pub const MAX_BODY_NUMBER: f64 = 9_007_199_254_740_992.0;
/// [`MAX_BODY_NUMBER`] as an integer.
const MAX_BODY_INTEGER: u64 = 1 << 53;
/// The longest query string accepted when a rule inspects the query.
pub const MAX_QUERY_LEN: usize = 16 * 1024;

/// Why a request body that a rule inspects was refused: the strict grammar
/// (I-JSON, RFC 7493, with the limits above) it broke. Every JSON reader
/// agrees on a body inside this grammar; outside it they disagree (Python's
/// `json.loads` reads `NaN`, `1e400` as infinity, a byte-order mark, UTF-16,
/// lone surrogates, the last of duplicate keys), so a rule cannot be trusted
/// to have seen what the upstream will read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    /// A byte-order mark before the JSON text.
    #[error("the body starts with a byte-order mark; send UTF-8 JSON without one")]
    ByteOrderMark,
    /// Not UTF-8 (UTF-16, UTF-32, Latin-1, …), or a lone surrogate escape.
    #[error("the body is not UTF-8 JSON ({0}); send UTF-8 JSON")]
    Encoding(&'static str),
    /// Nested deeper than [`MAX_BODY_DEPTH`].
    #[error("the body nests arrays and objects deeper than {MAX_BODY_DEPTH} levels (the limit)")]
    TooDeep,
    /// A number outside ±[`MAX_BODY_NUMBER`], or `NaN`/`Infinity`.
    #[error(
        "the body has a number that is not finite or is larger than 2^53 in magnitude (the limit: readers disagree on such numbers)"
    )]
    Number,
    /// An object with the same key twice.
    #[error("the body has the object key {0:?} twice (readers disagree on which one counts)")]
    DuplicateKey(String),
    /// Not JSON at all.
    #[error("the body is not JSON: {0}")]
    Syntax(String),
}

impl BodyError {
    /// The limit broken, for the refusal's `limit` field.
    pub fn limit(&self) -> &'static str {
        match self {
            BodyError::ByteOrderMark | BodyError::Encoding(_) => "encoding",
            BodyError::TooDeep => "depth",
            BodyError::Number => "number",
            BodyError::DuplicateKey(_) => "duplicateKey",
            BodyError::Syntax(_) => "syntax",
        }
    }
}

/// Reads a request body under the strict grammar (see [`BodyError`]):
/// `Ok(None)` for an empty body. serde_json does the parsing; a visitor adds
/// what it cannot check on its own (duplicate keys, our depth, number range).
pub fn parse_body(bytes: &[u8]) -> Result<Option<Value>, BodyError> {
    if bytes.is_empty() {
        return Ok(None);
    }
    if bytes.starts_with(&[0xEF, 0xBB, 0xBF])
        || bytes.starts_with(&[0xFE, 0xFF])
        || bytes.starts_with(&[0xFF, 0xFE])
    {
        return Err(BodyError::ByteOrderMark);
    }
    // UTF-16 and UTF-32 JSON is ASCII text with NUL bytes between (RFC 4627 §3).
    if bytes.iter().take(4).any(|b| *b == 0) {
        return Err(BodyError::Encoding("it looks like UTF-16 or UTF-32"));
    }
    let text = std::str::from_utf8(bytes).map_err(|_| BodyError::Encoding("invalid UTF-8"))?;
    let why = std::cell::RefCell::new(None);
    let mut de = serde_json::Deserializer::from_str(text);
    let parsed = serde::de::DeserializeSeed::deserialize(
        StrictValue {
            depth: 0,
            why: &why,
        },
        &mut de,
    )
    .and_then(|v| de.end().map(|()| v));
    match parsed {
        Ok(v) => Ok(Some(v)),
        Err(e) => Err(why.into_inner().unwrap_or_else(|| classify(text, &e))),
    }
}

/// What a serde_json error means in the grammar's terms.
fn classify(text: &str, e: &serde_json::Error) -> BodyError {
    let message = e.to_string();
    // A high surrogate escape without its low half reads as "unexpected end
    // of hex escape"; a lone low one as "lone leading surrogate".
    if message.contains("surrogate") || message.contains("end of hex escape") {
        return BodyError::Encoding("a lone surrogate escape");
    }
    if message.contains("number out of range") {
        return BodyError::Number;
    }
    // `NaN`, `Infinity`, `-Infinity` where a value belongs.
    let at = text
        .lines()
        .take(e.line().saturating_sub(1))
        .map(|l| l.len() + 1)
        .sum::<usize>()
        + e.column().saturating_sub(1);
    let rest = text.get(at.min(text.len())..).unwrap_or_default();
    let rest = rest.strip_prefix('-').unwrap_or(rest);
    if rest.starts_with("NaN") || rest.starts_with("Infinity") || rest.starts_with("Inf") {
        return BodyError::Number;
    }
    BodyError::Syntax(message)
}

/// Builds a [`Value`] while checking what serde_json leaves to the caller.
struct StrictValue<'a> {
    depth: usize,
    why: &'a std::cell::RefCell<Option<BodyError>>,
}

impl StrictValue<'_> {
    fn refuse<E: serde::de::Error>(&self, why: BodyError) -> E {
        let text = why.to_string();
        *self.why.borrow_mut() = Some(why);
        E::custom(text)
    }

    fn number<E: serde::de::Error>(&self, v: f64, n: serde_json::Number) -> Result<Value, E> {
        if v.is_finite() && v.abs() <= MAX_BODY_NUMBER {
            Ok(Value::Number(n))
        } else {
            Err(self.refuse(BodyError::Number))
        }
    }

    fn nested<E: serde::de::Error>(&self) -> Result<Self, E> {
        if self.depth >= MAX_BODY_DEPTH {
            return Err(self.refuse(BodyError::TooDeep));
        }
        Ok(StrictValue {
            depth: self.depth + 1,
            why: self.why,
        })
    }
}

impl<'de> serde::de::DeserializeSeed<'de> for StrictValue<'_> {
    type Value = Value;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for StrictValue<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Value, E> {
        if v.unsigned_abs() > MAX_BODY_INTEGER {
            return Err(self.refuse(BodyError::Number));
        }
        Ok(Value::Number(v.into()))
    }

    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Value, E> {
        if v > MAX_BODY_INTEGER {
            return Err(self.refuse(BodyError::Number));
        }
        Ok(Value::Number(v.into()))
    }

    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Value, E> {
        match serde_json::Number::from_f64(v) {
            Some(n) => self.number(v, n),
            None => Err(self.refuse(BodyError::Number)),
        }
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_string()))
    }

    fn visit_string<E: serde::de::Error>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E: serde::de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let inner = self.nested()?;
        let mut out = Vec::new();
        while let Some(v) = seq.next_element_seed(StrictValue {
            depth: inner.depth,
            why: inner.why,
        })? {
            out.push(v);
        }
        Ok(Value::Array(out))
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let inner = self.nested()?;
        let mut out = serde_json::Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if out.contains_key(&key) {
                return Err(self.refuse(BodyError::DuplicateKey(key)));
            }
            let v = map.next_value_seed(StrictValue {
                depth: inner.depth,
                why: inner.why,
            })?;
            out.insert(key, v);
        }
        Ok(Value::Object(out))
    }
}

/// The reason given when a body an enforced rule reads is refused: `why`
/// is a [`BodyError`] or a header the sidecar cannot inspect.
pub fn body_refusal(why: &dyn std::fmt::Display) -> String {
    format!("Sluice refused the request: a policy rule inspects this request's body, and {why}")
}

/// The reason given when a query an enforced rule reads is refused.
pub fn query_refusal(why: &QueryError) -> String {
    format!("Sluice refused the request: a policy rule inspects query parameters, and {why}")
}

/// The reason given when a query carries `_method` where rules name methods.
pub const QUERY_METHOD_REFUSAL: &str = "Sluice refused the request: its query has a _method parameter, which some servers run as the request's method; send the method on the request line";

/// Why a query string that a rule inspects was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    /// Longer than [`MAX_QUERY_LEN`].
    #[error("the query string is longer than {MAX_QUERY_LEN} bytes (the limit)")]
    TooLong,
    /// A `;` (a parameter separator to some servers, not to others).
    #[error(
        "the query string contains ';' (a parameter separator to some servers); use '&' and encode ';' as %3B"
    )]
    Semicolon,
    /// A `%` not followed by two hex digits.
    #[error("the query string has a malformed percent-escape; encode '%' as %25")]
    MalformedEscape,
    /// Decoded bytes that are not UTF-8, or a control character.
    #[error("the query string does not decode to UTF-8 text without control characters")]
    Encoding,
    /// A parameter a rule looks at appears more than once (servers take the
    /// first, the last or all of them).
    #[error("the query parameter {0:?} appears more than once (servers disagree on which counts)")]
    Repeated(String),
    /// An inspected parameter written `name[…]` (read as `name` by PHP and Rack).
    #[error(
        "the query parameter {0:?} has brackets, which some servers read as the parameter a rule looks at; send it without brackets"
    )]
    Bracketed(String),
}

impl QueryError {
    /// The limit broken, for the refusal's `limit` field.
    pub fn limit(&self) -> &'static str {
        match self {
            QueryError::TooLong => "size",
            QueryError::Semicolon => "separator",
            QueryError::MalformedEscape | QueryError::Encoding => "encoding",
            QueryError::Repeated(_) | QueryError::Bracketed(_) => "repeatedParameter",
        }
    }
}

/// Checks a raw query string under the strict grammar used when rules look
/// at parameters `inspected`: `&`-separated `name=value` pairs, well-formed
/// escapes decoding to UTF-8 without control characters, no `;`, and each
/// inspected name at most once (`name[]`, `name[x]` count as `name`, as PHP
/// and Rack read them).
pub fn check_query(raw: &str, inspected: &[String]) -> Result<(), QueryError> {
    if raw.len() > MAX_QUERY_LEN {
        return Err(QueryError::TooLong);
    }
    if raw.contains(';') {
        return Err(QueryError::Semicolon);
    }
    let mut seen: Vec<&str> = Vec::new();
    for pair in raw.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let mut name = String::new();
        for (i, part) in [k, v].into_iter().enumerate() {
            let bytes = percent_decode(&part.replace('+', " "))
                .map_err(|()| QueryError::MalformedEscape)?;
            let text = String::from_utf8(bytes).map_err(|_| QueryError::Encoding)?;
            if text.chars().any(char::is_control) {
                return Err(QueryError::Encoding);
            }
            if i == 0 {
                name = text;
            }
        }
        let base = name.split('[').next().unwrap_or_default();
        if let Some(n) = inspected.iter().find(|n| n.as_str() == base) {
            if base != name {
                return Err(QueryError::Bracketed(name));
            }
            if seen.contains(&n.as_str()) {
                return Err(QueryError::Repeated(n.clone()));
            }
            seen.push(n);
        }
    }
    Ok(())
}

/// The parameter that Symfony, Laravel and Rails read as the request's
/// method (in the query or a form body).
pub const METHOD_PARAMETER: &str = "_method";

/// Whether a raw query or `application/x-www-form-urlencoded` body has a
/// `_method` parameter (names decoded; a malformed escape counts as one, as
/// it cannot be ruled out).
pub fn has_method_parameter(raw: &[u8]) -> bool {
    raw.split(|b| *b == b'&').any(|pair| {
        let name = pair.split(|b| *b == b'=').next().unwrap_or_default();
        let name = String::from_utf8_lossy(name).replace('+', " ");
        match percent_decode(&name) {
            Ok(bytes) => bytes.eq_ignore_ascii_case(METHOD_PARAMETER.as_bytes()),
            Err(()) => true,
        }
    })
}

/// What the rules of one Connection look at in a request beyond method and
/// path, compiled once per bundle: which requests have their body read under
/// the strict grammar, and which query parameters.
#[derive(Clone, Debug, Default)]
pub struct Inspection {
    /// Whether any rule (enforced or dry run) has `jsonBody` predicates: the
    /// body is then buffered to decide.
    buffer_body: bool,
    /// The enforced rules with `jsonBody` predicates.
    body_rules: Vec<HttpMatcher>,
    /// A rule with `jsonBody` predicates did not compile: every body is read
    /// strictly.
    body_always: bool,
    /// Query parameters enforced rules look at.
    query_names: Vec<String>,
    /// Whether an enforced rule names methods (a `_method` field in a form
    /// body could then change which rule applies).
    methods: bool,
}

impl Inspection {
    /// The inspection of `rules`: each `(enforced, match)` (a dry-run
    /// policy's rules never block, so they do not make the grammar strict).
    pub fn new<'a>(rules: impl IntoIterator<Item = (bool, &'a RuleMatch)>) -> Self {
        let mut out = Inspection::default();
        for (enforced, m) in rules {
            if !applies(m) {
                continue;
            }
            if !m.json_body.is_empty() {
                out.buffer_body = true;
                if enforced {
                    match HttpMatcher::compile(m) {
                        Ok(matcher) => out.body_rules.push(matcher),
                        Err(_) => out.body_always = true,
                    }
                }
            }
            if enforced {
                out.methods |= !m.methods.is_empty();
                for name in m.query.keys() {
                    if !out.query_names.contains(name) {
                        out.query_names.push(name.clone());
                    }
                }
            }
        }
        out
    }

    /// The inspection of the policies naming Connection `name` (the
    /// sidecar's and `policy eval`'s: one reading for both).
    pub fn of_connection<'a>(
        policies: impl Iterator<Item = &'a sluice_crds::AccessPolicy>,
        name: &str,
    ) -> Self {
        Inspection::new(
            policies
                .filter(|ap| ap.spec.connections.iter().any(|c| c == name))
                .flat_map(|ap| {
                    let enforced = ap.spec.mode == sluice_crds::PolicyMode::Enforce;
                    ap.spec.rules.iter().map(move |r| (enforced, &r.match_))
                }),
        )
    }

    /// Whether bodies are buffered to decide.
    pub fn buffers_body(&self) -> bool {
        self.buffer_body
    }

    /// Whether an enforced rule would read the body of `req` (its method,
    /// path and query match): the body must then be strict JSON.
    pub fn strict_body(&self, req: &HttpRequest<'_>) -> bool {
        self.body_always || self.body_rules.iter().any(|m| m.matches_without_body(req))
    }

    /// Whether an enforced rule names methods.
    pub fn names_methods(&self) -> bool {
        self.methods
    }

    /// Query parameters enforced rules look at (empty: the query is not
    /// checked).
    pub fn query_names(&self) -> &[String] {
        &self.query_names
    }
}

// === impl BodyPredicate ===

impl BodyPredicate {
    fn compile(p: &JsonBodyPredicate, field: &str) -> Result<Self, HttpMatchError> {
        let path = JsonPath::parse_field(&p.path, &format!("{field}.path"))?;
        let matches = p
            .matches
            .as_ref()
            .map(|re| {
                RegexBuilder::new(re)
                    .size_limit(REGEX_SIZE_LIMIT)
                    .build()
                    .map_err(|source| HttpMatchError::InvalidRegex {
                        field: format!("{field}.matches"),
                        source,
                    })
            })
            .transpose()?;
        let pred = BodyPredicate {
            path,
            exists: p.exists,
            equals: p.equals.clone(),
            one_of: p.one_of.clone(),
            matches,
            greater_than: p.greater_than,
            less_than: p.less_than,
        };
        if pred.exists.is_none() && !pred.has_value_conditions() {
            return Err(HttpMatchError::EmptyPredicate {
                field: field.to_string(),
            });
        }
        Ok(pred)
    }

    fn has_value_conditions(&self) -> bool {
        self.equals.is_some()
            || self.one_of.is_some()
            || self.matches.is_some()
            || self.greater_than.is_some()
            || self.less_than.is_some()
    }

    /// `exists` looks at whether the path selects anything; the value conditions
    /// must all hold for one selected value (so `greaterThan` and `lessThan`
    /// bound the same number).
    fn holds(&self, body: Option<&Value>) -> bool {
        let selected = body.map(|b| self.path.select(b)).unwrap_or_default();
        if let Some(exists) = self.exists
            && exists == selected.is_empty()
        {
            return false;
        }
        if !self.has_value_conditions() {
            return true;
        }
        selected.into_iter().any(|v| self.value_holds(v))
    }

    fn value_holds(&self, v: &Value) -> bool {
        if let Some(want) = &self.equals
            && !json_eq(v, want)
        {
            return false;
        }
        if let Some(options) = &self.one_of
            && !options.iter().any(|o| json_eq(v, o))
        {
            return false;
        }
        if let Some(re) = &self.matches
            && !v.as_str().is_some_and(|s| re.is_match(s))
        {
            return false;
        }
        if let Some(min) = self.greater_than
            && !numeric(v).is_some_and(|x| x > min)
        {
            return false;
        }
        if let Some(max) = self.less_than
            && !numeric(v).is_some_and(|x| x < max)
        {
            return false;
        }
        true
    }
}

/// The number a value stands for: a JSON number, or a string an upstream
/// would read as one (`"100000"`, `" 1e5 "`, `"100_000"`, `"inf"`:
/// Python's `int()` and `float()` accept them), so `"amount": "100000"` meets
/// `greaterThan: 1000` like `100000` does.
fn numeric(v: &Value) -> Option<f64> {
    if let Some(x) = v.as_f64() {
        return Some(x);
    }
    let text = v.as_str()?.trim();
    if text.len() > 64 {
        return None;
    }
    let plain: String = text.chars().filter(|c| *c != '_').collect();
    // "inf" and "1e400" are infinite to Python too; NaN compares false there.
    plain.parse::<f64>().ok().filter(|x| !x.is_nan())
}

/// JSON equality where `1` equals `1.0`.
fn json_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            if x.is_f64() || y.is_f64() {
                x.as_f64() == y.as_f64()
            } else {
                x == y
            }
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| json_eq(a, b))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, a)| y.get(k).is_some_and(|b| json_eq(a, b)))
        }
        _ => a == b,
    }
}

// === JSONPath ===

/// One step of a concrete location in a JSON document.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PathSegment<'a> {
    /// An object member.
    Key(&'a str),
    /// An array element.
    Index(usize),
}

/// A parsed JSONPath (the subset described in the module documentation).
///
/// Besides selecting values from a whole document, it matches locations one
/// segment at a time ([`JsonPath::start`], [`JsonPath::advance`]), so a
/// streaming masker can decide as it reads without keeping the document.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JsonPath {
    text: String,
    steps: Vec<Step>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Step {
    /// `..`: the selector may apply at any depth below the current node.
    descendant: bool,
    selector: Selector,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Selector {
    Key(String),
    Index(usize),
    Wildcard,
}

impl Selector {
    fn accepts(&self, seg: PathSegment<'_>) -> bool {
        match (self, seg) {
            (Selector::Wildcard, _) => true,
            (Selector::Key(k), PathSegment::Key(s)) => k == s,
            (Selector::Index(i), PathSegment::Index(j)) => *i == j,
            _ => false,
        }
    }
}

/// Where a location stands against a [`JsonPath`]: the set of steps reached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PathState(u64);

impl PathState {
    /// Whether no continuation of the location can match any more.
    pub fn is_dead(self) -> bool {
        self.0 == 0
    }
}

impl JsonPath {
    /// Parses `text`, e.g. `$.customer.email`, `$.items[*].card`, `$..email`.
    pub fn parse(text: &str) -> Result<Self, HttpMatchError> {
        Self::parse_field(text, "jsonPath")
    }

    fn parse_field(text: &str, field: &str) -> Result<Self, HttpMatchError> {
        parse_steps(text)
            .map(|steps| JsonPath {
                text: text.to_string(),
                steps,
            })
            .map_err(|(position, reason)| HttpMatchError::InvalidJsonPath {
                field: field.to_string(),
                path: text.to_string(),
                position,
                reason,
            })
    }

    /// The path as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The values `self` selects in `v` (document order; empty when none).
    pub fn select<'v>(&self, v: &'v Value) -> Vec<&'v Value> {
        let mut current = vec![v];
        for step in &self.steps {
            let candidates = if step.descendant {
                let mut all = Vec::new();
                for c in current {
                    descendants_or_self(c, &mut all);
                }
                all
            } else {
                current
            };
            let mut next = Vec::new();
            for c in candidates {
                match (&step.selector, c) {
                    (Selector::Key(k), Value::Object(m)) => next.extend(m.get(k)),
                    (Selector::Index(i), Value::Array(a)) => next.extend(a.get(*i)),
                    (Selector::Wildcard, Value::Object(m)) => next.extend(m.values()),
                    (Selector::Wildcard, Value::Array(a)) => next.extend(a.iter()),
                    _ => {}
                }
            }
            current = next;
        }
        current
    }

    /// The state of the document root.
    pub fn start(&self) -> PathState {
        PathState(1)
    }

    /// The state after descending from a node in `state` into `seg`.
    pub fn advance(&self, state: PathState, seg: PathSegment<'_>) -> PathState {
        let mut next = 0u64;
        for (i, step) in self.steps.iter().enumerate() {
            if state.0 & (1 << i) == 0 {
                continue;
            }
            if step.descendant {
                // `..` may skip this segment and apply further down.
                next |= 1 << i;
            }
            if step.selector.accepts(seg) {
                next |= 1 << (i + 1);
            }
        }
        PathState(next)
    }

    /// Whether a node in `state` is selected by the path.
    pub fn is_match(&self, state: PathState) -> bool {
        state.0 & (1 << self.steps.len()) != 0
    }

    /// Whether the value at `location` (from the root) is selected by the path.
    pub fn matches_location(&self, location: &[PathSegment<'_>]) -> bool {
        let state = location
            .iter()
            .fold(self.start(), |s, seg| self.advance(s, *seg));
        self.is_match(state)
    }

    /// Whether the value at `location`, or one of its ancestors, is selected (a
    /// value inside a masked object or array is masked too).
    pub fn covers_location(&self, location: &[PathSegment<'_>]) -> bool {
        let mut state = self.start();
        if self.is_match(state) {
            return true;
        }
        for seg in location {
            state = self.advance(state, *seg);
            if self.is_match(state) {
                return true;
            }
        }
        false
    }
}

fn descendants_or_self<'v>(v: &'v Value, out: &mut Vec<&'v Value>) {
    out.push(v);
    match v {
        Value::Object(m) => m.values().for_each(|c| descendants_or_self(c, out)),
        Value::Array(a) => a.iter().for_each(|c| descendants_or_self(c, out)),
        _ => {}
    }
}

type ParseError = (usize, &'static str);

fn parse_steps(text: &str) -> Result<Vec<Step>, ParseError> {
    if text.len() > MAX_JSON_PATH_LEN {
        return Err((
            MAX_JSON_PATH_LEN,
            "the path is too long (at most 1024 bytes)",
        ));
    }
    let chars: Vec<char> = text.chars().collect();
    if chars.first() != Some(&'$') {
        return Err((0, "a JSONPath starts with '$'"));
    }
    let mut steps = Vec::new();
    let mut i = 1;
    while i < chars.len() {
        let descendant;
        match chars[i] {
            '.' if chars.get(i + 1) == Some(&'.') => {
                descendant = true;
                i += 2;
                if chars.get(i) == Some(&'[') {
                    let (sel, next) = parse_bracket(&chars, i)?;
                    steps.push(Step {
                        descendant,
                        selector: sel,
                    });
                    i = next;
                    continue;
                }
            }
            '.' => {
                descendant = false;
                i += 1;
            }
            '[' => {
                let (sel, next) = parse_bracket(&chars, i)?;
                steps.push(Step {
                    descendant: false,
                    selector: sel,
                });
                i = next;
                continue;
            }
            _ => return Err((i, "expected '.', '..' or '['")),
        }
        // A dotted name or `*`.
        if chars.get(i) == Some(&'*') {
            steps.push(Step {
                descendant,
                selector: Selector::Wildcard,
            });
            i += 1;
            continue;
        }
        let start = i;
        while i < chars.len() && !matches!(chars[i], '.' | '[' | ']' | '*' | '\'' | '"' | ' ') {
            i += 1;
        }
        if i == start {
            return Err((i, "expected a member name or '*' after '.'"));
        }
        steps.push(Step {
            descendant,
            selector: Selector::Key(chars[start..i].iter().collect()),
        });
    }
    if steps.len() > MAX_JSON_PATH_STEPS {
        return Err((chars.len(), "the path has too many steps (at most 63)"));
    }
    Ok(steps)
}

/// Parses `[...]` starting at `chars[i] == '['`; returns the selector and the
/// index after `]`.
fn parse_bracket(chars: &[char], i: usize) -> Result<(Selector, usize), ParseError> {
    let mut j = i + 1;
    let sel = match chars.get(j) {
        Some('*') => {
            j += 1;
            Selector::Wildcard
        }
        Some(&q @ ('\'' | '"')) => {
            j += 1;
            let mut name = String::new();
            loop {
                match chars.get(j) {
                    None => return Err((j, "unterminated quoted name")),
                    Some('\\') => {
                        match chars.get(j + 1) {
                            Some(&c @ ('\\' | '\'' | '"')) => name.push(c),
                            _ => return Err((j, "unsupported escape in a quoted name")),
                        }
                        j += 2;
                    }
                    Some(&c) if c == q => {
                        j += 1;
                        break;
                    }
                    Some(&c) => {
                        name.push(c);
                        j += 1;
                    }
                }
            }
            Selector::Key(name)
        }
        Some(c) if c.is_ascii_digit() => {
            let start = j;
            while chars.get(j).is_some_and(char::is_ascii_digit) {
                j += 1;
            }
            let digits: String = chars[start..j].iter().collect();
            let index = digits
                .parse::<usize>()
                .map_err(|_| (start, "array index too large"))?;
            Selector::Index(index)
        }
        Some('-') => return Err((j, "negative indexes are not supported")),
        Some('?') => return Err((j, "filters are not supported")),
        _ => return Err((j, "expected '*', a quoted name or an index after '['")),
    };
    match chars.get(j) {
        Some(']') => Ok((sel, j + 1)),
        Some(',') => Err((j, "unions are not supported; write one path per value")),
        Some(':') => Err((j, "slices are not supported")),
        _ => Err((j, "expected ']'")),
    }
}

// === masking JSON ===

/// Masks `value` in place and returns how many values were masked.
///
/// `paths` pairs each JSONPath with the index of its masker in `maskers`; when
/// several select the same value, the first in `paths` wins. A selected string
/// is masked as a whole; a number or boolean becomes the masked string of its
/// text (`42` → `"[redacted]"`); in a selected object or array every string,
/// number and boolean inside is masked (the shape stays); `null` stays `null`
/// (it reveals nothing). Every other string, and the text of every other
/// number (a card number stored as a JSON number), is then searched with
/// `detectors` (if given) and its findings masked with that masker (a number
/// with a finding becomes a string). Object keys in which a detector finds
/// something are masked the same way (paths match the original keys; a masked
/// key equal to another key gets a `#2`, `#3`… suffix). A masker index out
/// of range redacts.
pub fn mask_json(
    value: &mut Value,
    paths: &[(JsonPath, usize)],
    maskers: &[Masker],
    detectors: Option<(&DetectorSet, usize)>,
) -> usize {
    let detectors = detectors.filter(|(set, _)| !set.is_empty());
    let states: Vec<PathState> = paths.iter().map(|(p, _)| p.start()).collect();
    let mut walk = JsonMasking {
        paths,
        maskers,
        detectors,
        fallback: Masker::redact(),
        count: 0,
    };
    walk.node(value, &states);
    walk.count
}

struct JsonMasking<'a> {
    paths: &'a [(JsonPath, usize)],
    maskers: &'a [Masker],
    detectors: Option<(&'a DetectorSet, usize)>,
    fallback: Masker,
    count: usize,
}

impl JsonMasking<'_> {
    fn masker(&self, index: usize) -> &Masker {
        self.maskers.get(index).unwrap_or(&self.fallback)
    }

    fn node(&mut self, value: &mut Value, states: &[PathState]) {
        let selected = self
            .paths
            .iter()
            .zip(states)
            .find(|((p, _), s)| p.is_match(**s))
            .map(|((_, m), _)| *m);
        if let Some(m) = selected {
            let masked = mask_all(value, self.masker(m));
            self.count += masked;
            return;
        }
        let live = states.iter().any(|s| !s.is_dead());
        match value {
            Value::Object(map) => {
                let sensitive_keys = self
                    .detectors
                    .is_some_and(|(set, _)| map.keys().any(|k| set.contains_any(k)));
                if sensitive_keys {
                    self.object_with_masked_keys(map, states, live);
                } else {
                    for (k, child) in map.iter_mut() {
                        let next = self.advance(states, live, PathSegment::Key(k));
                        self.node(child, &next);
                    }
                }
            }
            Value::Array(items) => {
                for (i, child) in items.iter_mut().enumerate() {
                    let next = self.advance(states, live, PathSegment::Index(i));
                    self.node(child, &next);
                }
            }
            Value::String(s) => {
                if let Some((set, m)) = self.detectors {
                    let findings = set.find(s);
                    if !findings.is_empty() {
                        *s = self.masker(m).mask_findings(s, &findings);
                        self.count += 1;
                    }
                }
            }
            Value::Number(n) => {
                if let Some((set, m)) = self.detectors {
                    let text = n.to_string();
                    let findings = set.find(&text);
                    if !findings.is_empty() {
                        *value = Value::String(self.masker(m).mask_findings(&text, &findings));
                        self.count += 1;
                    }
                }
            }
            _ => {}
        }
    }

    /// An object keyed by sensitive values (`{"alice@example.com": {…}}`): the
    /// keys are masked too. Paths still match the original keys. A masked key
    /// that equals another key gets a `#2`, `#3`… suffix, so no entry is lost.
    fn object_with_masked_keys(
        &mut self,
        map: &mut serde_json::Map<String, Value>,
        states: &[PathState],
        live: bool,
    ) {
        let Some((set, m)) = self.detectors else {
            return;
        };
        let old = std::mem::take(map);
        let original: std::collections::BTreeSet<String> = old.keys().cloned().collect();
        for (k, mut child) in old {
            let next = self.advance(states, live, PathSegment::Key(&k));
            self.node(&mut child, &next);
            let findings = set.find(&k);
            let key = if findings.is_empty() {
                k
            } else {
                self.count += 1;
                let masked = self.masker(m).mask_findings(&k, &findings);
                let taken = |c: &String| original.contains(c) || map.contains_key(c);
                let mut candidate = masked.clone();
                let mut n = 2;
                while taken(&candidate) {
                    candidate = format!("{masked}#{n}");
                    n += 1;
                }
                candidate
            };
            map.insert(key, child);
        }
    }

    fn advance(&self, states: &[PathState], live: bool, seg: PathSegment<'_>) -> Vec<PathState> {
        if !live {
            return states.to_vec();
        }
        self.paths
            .iter()
            .zip(states)
            .map(|((p, _), s)| p.advance(*s, seg))
            .collect()
    }
}

/// Masks every leaf of `value`; returns how many.
fn mask_all(value: &mut Value, masker: &Masker) -> usize {
    match value {
        Value::String(s) => {
            *s = masker.mask(s);
            1
        }
        Value::Number(n) => {
            *value = Value::String(masker.mask(&n.to_string()));
            1
        }
        Value::Bool(b) => {
            *value = Value::String(masker.mask(if *b { "true" } else { "false" }));
            1
        }
        Value::Null => 0,
        Value::Array(items) => items.iter_mut().map(|v| mask_all(v, masker)).sum(),
        Value::Object(map) => map.values_mut().map(|v| mask_all(v, masker)).sum(),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use sluice_crds::{Detector, MaskStrategy, StatementKind};

    use super::*;

    fn rule(m: serde_json::Value) -> HttpMatcher {
        let m: RuleMatch = serde_json::from_value(m).expect("valid RuleMatch");
        HttpMatcher::compile(&m).expect("compiles")
    }

    fn req<'a>(
        method: &'a str,
        path: &'a str,
        query: &'a str,
        body: Option<&'a Value>,
    ) -> HttpRequest<'a> {
        HttpRequest {
            method,
            path,
            query,
            body,
        }
    }

    #[test]
    fn normalisation() {
        let cases = [
            ("/admin", "/admin"),
            ("/v1/../admin", "/admin"),
            ("//admin", "/admin"),
            ("/admin/", "/admin"),
            ("/v1/%2E%2E/admin", "/admin"),
            ("/v1/%2e/admin", "/v1/admin"),
            ("/caf%C3%A9", "/café"),
            ("", "/"),
            ("/", "/"),
            ("/./", "/"),
        ];
        for (raw, want) in cases {
            assert_eq!(normalize_path(raw).as_deref(), Ok(want), "{raw}");
        }
        assert_eq!(
            normalize_path("/%252e%252e/admin"),
            Err(PathError::DoubleEncoded)
        );
        assert_eq!(normalize_path("/a%zz"), Err(PathError::MalformedEscape));
        assert_eq!(normalize_path("/a%2"), Err(PathError::MalformedEscape));
        assert_eq!(normalize_path("/a%00b"), Err(PathError::ForbiddenCharacter));
        assert_eq!(
            normalize_path("/a%5c..%5cadmin"),
            Err(PathError::EncodedSeparator)
        );
        assert_eq!(normalize_path("/a%ff"), Err(PathError::InvalidUtf8));
        // Formerly clamped at the root or dropped; now refused (issue 16).
        for raw in [
            "/%2e%2e/admin",
            "/../../admin",
            "/v1/../../admin",
            "/.%2e/x",
        ] {
            assert_eq!(normalize_path(raw), Err(PathError::AboveRoot), "{raw}");
        }
        for raw in ["/v1%2fadmin", "/v1%2Fadmin", "/a%5Cb", "/a%3bb"] {
            assert_eq!(
                normalize_path(raw),
                Err(PathError::EncodedSeparator),
                "{raw}"
            );
        }
        for raw in ["/admin;jsessionid=1", "/public/..;/admin", "/a;"] {
            assert_eq!(normalize_path(raw), Err(PathError::PathParameter), "{raw}");
        }
        // What is forwarded: the decided path, encoded again, trailing slash kept.
        for (raw, want) in [
            ("/v1/../entries/1", "/entries/1"),
            ("//entries/./1/", "/entries/1/"),
            ("/%65ntries/caf%c3%a9", "/entries/caf%C3%A9"),
            ("/a%20b/%25zz/x+y", "/a%20b/%25zz/x+y"),
            ("/a%3Fb%23c", "/a%3Fb%23c"),
            ("", "/"),
            ("/", "/"),
        ] {
            assert_eq!(forward_path(raw).as_deref(), Ok(want), "{raw}");
            let again = forward_path(want).expect("forwarded paths are valid");
            assert_eq!(again, want, "{raw}: forwarding is stable");
            assert_eq!(normalize_path(want), normalize_path(raw), "{raw}");
        }
    }

    #[test]
    fn deny_rules_cannot_be_bypassed_by_encoding() {
        let deny = rule(json!({"paths": ["/admin/**"]}));
        for path in [
            "/admin",
            "/admin/",
            "/admin/users",
            "//admin/users",
            "/v1/../admin/users",
            "/%61dmin/users",
            "/%2e%2e/admin",
            "/public/%2e%2e/admin/x",
            "/admin;x=1/users",
            "/./admin",
            "/%252e%252e/admin", // ambiguous: matches every path glob
        ] {
            assert!(
                deny.matches(&req("GET", path, "", None)),
                "{path} must match"
            );
        }
        for path in ["/administrator", "/public/admin", "/", "/adminx/users"] {
            assert!(
                !deny.matches(&req("GET", path, "", None)),
                "{path} must not match"
            );
        }
    }

    #[test]
    fn globs_are_segment_aware() {
        let one = rule(json!({"paths": ["/v1/*/items"]}));
        assert!(one.matches(&req("GET", "/v1/a/items", "", None)));
        assert!(!one.matches(&req("GET", "/v1/a/b/items", "", None)));
        let many = rule(json!({"paths": ["/v1/**/items"]}));
        assert!(many.matches(&req("GET", "/v1/items", "", None)));
        assert!(many.matches(&req("GET", "/v1/a/b/items", "", None)));
        let trailing = rule(json!({"paths": ["/v1/users/"]}));
        assert!(trailing.matches(&req("GET", "/v1/users", "", None)));
        let root = rule(json!({"paths": ["/**"]}));
        assert!(root.matches(&req("GET", "/", "", None)));
        assert!(root.matches(&req("GET", "/a/b", "", None)));
        let several = rule(json!({"paths": ["/a", "/b/*"]}));
        assert!(several.matches(&req("GET", "/b/x", "", None)));
        assert!(!several.matches(&req("GET", "/c", "", None)));
    }

    #[test]
    fn methods_any_case_and_empty_means_any() {
        let m = rule(json!({"methods": ["post", "DELETE"]}));
        assert!(m.matches(&req("POST", "/x", "", None)));
        assert!(m.matches(&req("delete", "/x", "", None)));
        assert!(!m.matches(&req("GET", "/x", "", None)));
        let any = rule(json!({}));
        assert!(any.matches(&req("PATCH", "/anything", "a=b", None)));
    }

    #[test]
    fn query_params() {
        let m = rule(json!({"query": {"force": "true", "scope": "*"}}));
        assert!(m.matches(&req("GET", "/x", "force=true&scope=all", None)));
        assert!(m.matches(&req("GET", "/x", "scope=&force=%74rue", None)));
        assert!(m.matches(&req("GET", "/x", "force=false&force=true&scope=a", None)));
        assert!(!m.matches(&req("GET", "/x", "force=false&scope=all", None)));
        assert!(!m.matches(&req("GET", "/x", "force=true", None)));
        let spaced = rule(json!({"query": {"q": "a b*"}}));
        assert!(spaced.matches(&req("GET", "/x", "q=a+b+c", None)));
        let slashes = rule(json!({"query": {"redirect": "https://*"}}));
        assert!(slashes.matches(&req("GET", "/x", "redirect=https%3A%2F%2Fe.com%2Fa", None)));
    }

    #[test]
    fn json_body_predicates() {
        let big_refund = rule(json!({
            "methods": ["POST"],
            "jsonBody": [
                {"path": "$.amount", "greaterThan": 1000},
                {"path": "$.currency", "oneOf": ["EUR", "USD"]},
                {"path": "$.note", "exists": false}
            ]
        }));
        let ok = json!({"amount": 5000, "currency": "EUR"});
        let small = json!({"amount": 10, "currency": "EUR"});
        let other = json!({"amount": 5000, "currency": "GBP"});
        let noted = json!({"amount": 5000, "currency": "EUR", "note": null});
        let text = json!("not an object");
        assert!(big_refund.matches(&req("POST", "/r", "", Some(&ok))));
        assert!(!big_refund.matches(&req("POST", "/r", "", Some(&small))));
        assert!(!big_refund.matches(&req("POST", "/r", "", Some(&other))));
        assert!(!big_refund.matches(&req("POST", "/r", "", Some(&noted))));
        assert!(!big_refund.matches(&req("POST", "/r", "", Some(&text))));
        assert!(!big_refund.matches(&req("POST", "/r", "", None)));

        let any_item = rule(json!({"jsonBody": [
            {"path": "$.items[*].sku", "matches": "^GIFT-"},
            {"path": "$.version", "equals": 2}
        ]}));
        let b = json!({"version": 2.0, "items": [{"sku": "A-1"}, {"sku": "GIFT-9"}]});
        assert!(any_item.matches(&req("POST", "/o", "", Some(&b))));
        let b = json!({"version": 2, "items": [{"sku": "A-1"}]});
        assert!(!any_item.matches(&req("POST", "/o", "", Some(&b))));

        // Both bounds must hold for the same value.
        let range =
            rule(json!({"jsonBody": [{"path": "$..n", "greaterThan": 10, "lessThan": 20}]}));
        let split = json!({"a": {"n": 5}, "b": {"n": 25}});
        let inside = json!({"a": {"n": 5}, "b": {"n": 15}});
        assert!(!range.matches(&req("POST", "/", "", Some(&split))));
        assert!(range.matches(&req("POST", "/", "", Some(&inside))));

        // exists:false holds without a body; value predicates do not.
        let absent = rule(json!({"jsonBody": [{"path": "$.x", "exists": false}]}));
        assert!(absent.matches(&req("GET", "/", "", None)));
        let present = rule(json!({"jsonBody": [{"path": "$.x", "exists": true}]}));
        assert!(!present.matches(&req("GET", "/", "", None)));
    }

    #[test]
    fn numeric_strings_meet_number_predicates() {
        let big = rule(json!({"jsonBody": [{"path": "$.amount", "greaterThan": 1000}]}));
        for amount in [
            json!("100000"),
            json!(" 1e5 "),
            json!("100_000"),
            json!("1e400"),
            json!("Infinity"),
            json!(100000),
        ] {
            let body = json!({ "amount": amount });
            assert!(big.matches(&req("POST", "/", "", Some(&body))), "{amount}");
        }
        for amount in [
            json!("10"),
            json!("abc"),
            json!("NaN"),
            json!(null),
            json!([100000]),
        ] {
            let body = json!({ "amount": amount });
            assert!(!big.matches(&req("POST", "/", "", Some(&body))), "{amount}");
        }
    }

    #[test]
    fn strict_body_grammar() {
        let ok = |b: &[u8]| parse_body(b).expect("accepted");
        assert_eq!(ok(b""), None);
        assert_eq!(
            ok(br#"{"a": [1, 2.5, -3e2], "b": "\ud83d\ude00"}"#),
            Some(json!({"a": [1, 2.5, -300.0], "b": "\u{1F600}"}))
        );
        assert_eq!(ok(b"9007199254740992"), Some(json!(9007199254740992u64)));
        let nested = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
        assert!(parse_body(nested(MAX_BODY_DEPTH).as_bytes()).is_ok());
        let refused = |b: &[u8]| parse_body(b).expect_err("refused").limit();
        assert_eq!(refused(nested(MAX_BODY_DEPTH + 1).as_bytes()), "depth");
        assert_eq!(refused(b"9007199254740993"), "number");
        assert_eq!(refused(b"-1e16"), "number");
        assert_eq!(refused(b"[NaN]"), "number");
        assert_eq!(refused(b"[1, -Infinity]"), "number");
        assert_eq!(refused(b"1e400"), "number");
        assert_eq!(refused(b"\xef\xbb\xbf{}"), "encoding");
        assert_eq!(refused(b"{\0}\0"), "encoding");
        assert_eq!(refused(br#"["\ud800"]"#), "encoding");
        assert_eq!(refused(br#"["\udc00"]"#), "encoding");
        assert_eq!(refused(b"[\"\xff\"]"), "encoding");
        assert_eq!(refused(br#"{"a": 1, "a": 1}"#), "duplicateKey");
        assert_eq!(refused(br#"{"a": 1} x"#), "syntax");
        assert_eq!(refused(b"   "), "syntax");
    }

    #[test]
    fn strict_query_grammar() {
        let names = vec!["debug".to_string()];
        assert!(check_query("", &names).is_ok());
        assert!(check_query("a=1&a=2&debug=x&b", &names).is_ok());
        assert!(check_query("q=%C3%A9&x=a+b", &names).is_ok());
        let refused = |q: &str| check_query(q, &names).expect_err("refused").limit();
        assert_eq!(refused("a=1;debug=1"), "separator");
        assert_eq!(refused("a=%zz"), "encoding");
        assert_eq!(refused("a=%ff"), "encoding");
        assert_eq!(refused("a=%0a"), "encoding");
        assert_eq!(refused("debug=1&%64ebug=2"), "repeatedParameter");
        assert_eq!(refused("debug[x]=1"), "repeatedParameter");
        assert_eq!(refused(&"a".repeat(MAX_QUERY_LEN + 1)), "size");
    }

    #[test]
    fn inspection_reads_bodies_only_where_a_body_rule_may_apply() {
        let m = |v: serde_json::Value| -> RuleMatch { serde_json::from_value(v).expect("match") };
        let refunds = m(
            json!({"methods": ["POST"], "paths": ["/v1/refunds"], "jsonBody": [{"path": "$.amount", "greaterThan": 1}]}),
        );
        let trial = m(json!({"jsonBody": [{"path": "$.x", "exists": true}]}));
        let query = m(json!({"query": {"debug": "*"}}));
        let i = Inspection::new([(true, &refunds), (false, &trial), (true, &query)]);
        assert!(i.buffers_body());
        assert!(i.strict_body(&req("POST", "/v1/refunds", "", None)));
        assert!(i.strict_body(&req("POST", "/v1/x/../refunds/", "", None)));
        assert!(!i.strict_body(&req("POST", "/v1/uploads", "", None)));
        assert!(!i.strict_body(&req("GET", "/v1/refunds", "", None)));
        assert_eq!(i.query_names(), ["debug".to_string()]);
        let dry = Inspection::new([(false, &trial)]);
        assert!(dry.buffers_body() && !dry.strict_body(&req("POST", "/", "", None)));
        assert!(!Inspection::new([(true, &query)]).buffers_body());
    }

    #[test]
    fn sql_fields_never_match_http() {
        let m = RuleMatch {
            statements: vec![StatementKind::Drop],
            paths: vec!["/**".into()],
            ..RuleMatch::default()
        };
        assert!(!applies(&m));
        let compiled = HttpMatcher::compile(&m).expect("compiles");
        assert!(!compiled.matches(&req("GET", "/x", "", None)));
        assert!(applies(&RuleMatch::default()));
    }

    #[test]
    fn compile_errors_name_the_field() {
        let err = |m: serde_json::Value| {
            let m: RuleMatch = serde_json::from_value(m).expect("valid RuleMatch");
            HttpMatcher::compile(&m).expect_err("must fail").to_string()
        };
        let e = err(json!({"paths": ["/ok", "/bad/[z-a]"]}));
        assert!(e.starts_with("paths[1]: invalid glob"), "{e}");
        let e = err(json!({"paths": ["v1/x"]}));
        assert!(e.starts_with("paths[0]: path glob"), "{e}");
        let e = err(json!({"methods": ["GET", "PO ST"]}));
        assert!(e.starts_with("methods[1]:"), "{e}");
        let e = err(
            json!({"jsonBody": [{"path": "$.a", "exists": true}, {"path": "$.b", "matches": "("}]}),
        );
        assert!(
            e.starts_with("jsonBody[1].matches: invalid regular expression"),
            "{e}"
        );
        let e = err(json!({"jsonBody": [{"path": "$.a[?(@.x)]", "exists": true}]}));
        assert!(e.starts_with("jsonBody[0].path: invalid JSONPath"), "{e}");
        assert!(e.contains("filters are not supported"), "{e}");
        let e = err(json!({"jsonBody": [{"path": "$.a"}]}));
        assert!(
            e.starts_with("jsonBody[0]: a jsonBody predicate needs"),
            "{e}"
        );
        let e = err(json!({"query": {"q": "[z-a]"}}));
        assert!(e.starts_with("query.q: invalid glob"), "{e}");
    }

    #[test]
    fn json_path_parse_and_select() {
        let doc = json!({
            "a": {"b": 1, "c d": 2},
            "items": [{"card": "4111", "email": "x@e.com"}, {"card": "5500", "nested": {"email": "y@e.com"}}],
            "email": "top@e.com"
        });
        let sel = |p: &str| -> Vec<Value> {
            JsonPath::parse(p)
                .expect("parses")
                .select(&doc)
                .into_iter()
                .cloned()
                .collect()
        };
        assert_eq!(sel("$.a.b"), vec![json!(1)]);
        assert_eq!(sel("$['a']['c d']"), vec![json!(2)]);
        assert_eq!(sel("$[\"a\"].b"), vec![json!(1)]);
        assert_eq!(sel("$.items[0].card"), vec![json!("4111")]);
        assert_eq!(sel("$.items[*].card"), vec![json!("4111"), json!("5500")]);
        assert_eq!(sel("$.items[5].card"), Vec::<Value>::new());
        assert_eq!(sel("$.missing.x"), Vec::<Value>::new());
        let mut emails = sel("$..email");
        emails.sort_by_key(|v| v.to_string());
        assert_eq!(
            emails,
            vec![json!("top@e.com"), json!("x@e.com"), json!("y@e.com")]
        );
        assert_eq!(sel("$.a.*").len(), 2);
        assert_eq!(sel("$.*").len(), 3);
        assert_eq!(sel("$"), vec![doc.clone()]);
        assert_eq!(sel("$..[1].card"), vec![json!("5500")]);
        for bad in [
            "a.b",
            "$.",
            "$..",
            "$[",
            "$['a'",
            "$[-1]",
            "$[0:2]",
            "$['a','b']",
            "$.a b",
            "$[?(@)]",
        ] {
            assert!(JsonPath::parse(bad).is_err(), "{bad} must not parse");
        }
        let e = JsonPath::parse("$.a[-1]").expect_err("negative");
        assert!(e.to_string().contains("at character 4"), "{e}");
    }

    #[test]
    fn locations_match_like_select() {
        let p = JsonPath::parse("$.items[*].card").expect("parses");
        use PathSegment::{Index, Key};
        assert!(p.matches_location(&[Key("items"), Index(3), Key("card")]));
        assert!(!p.matches_location(&[Key("items"), Index(3)]));
        // `[*]` selects object members too, as in `select`.
        assert!(p.matches_location(&[Key("items"), Key("x"), Key("card")]));
        assert!(!p.matches_location(&[Key("other"), Index(0), Key("card")]));
        assert!(p.covers_location(&[Key("items"), Index(0), Key("card"), Key("number")]));
        assert!(!p.covers_location(&[Key("items"), Index(0), Key("cvv")]));
        let d = JsonPath::parse("$..email").expect("parses");
        assert!(d.matches_location(&[Key("email")]));
        assert!(d.matches_location(&[Key("a"), Index(2), Key("email")]));
        assert!(!d.matches_location(&[Key("a"), Key("emails")]));
        let root = JsonPath::parse("$").expect("parses");
        assert!(root.matches_location(&[]));
        assert!(root.covers_location(&[Key("anything")]));
        let dead = p.advance(p.start(), Key("other"));
        assert!(dead.is_dead());
    }

    fn masker(s: MaskStrategy) -> Masker {
        Masker::new(s, None, None, Some(b"0123456789abcdef".to_vec())).expect("masker")
    }

    #[test]
    fn mask_json_by_path_and_detector() {
        let mut doc = json!({
            "customer": {"email": "alice@example.com", "name": "Alice", "age": 41, "vip": true, "note": null},
            "cards": [{"number": "4111111111111111", "exp": "12/29"}, {"number": 5500000000000004u64}],
            "secret": {"inner": ["a", {"b": "c"}, 7]},
            "comment": "call +14155552671 or mail bob@example.com",
            "pan": 4111111111111111u64,
            "count": 12
        });
        let paths = vec![
            (JsonPath::parse("$.customer.email").expect("p"), 0),
            (JsonPath::parse("$.customer.age").expect("p"), 0),
            (JsonPath::parse("$.customer.vip").expect("p"), 0),
            (JsonPath::parse("$.customer.note").expect("p"), 0),
            (JsonPath::parse("$.cards[*].number").expect("p"), 1),
            (JsonPath::parse("$.secret").expect("p"), 0),
        ];
        let maskers = vec![masker(MaskStrategy::Redact), masker(MaskStrategy::Partial)];
        let set = DetectorSet::new(&[Detector::Email, Detector::Phone, Detector::CreditCard]);
        let n = mask_json(&mut doc, &paths, &maskers, Some((&set, 0)));
        assert_eq!(
            doc,
            json!({
                "customer": {"email": "[redacted]", "name": "Alice", "age": "[redacted]", "vip": "[redacted]", "note": null},
                "cards": [{"number": "************1111", "exp": "12/29"}, {"number": "************0004"}],
                "secret": {"inner": ["[redacted]", {"b": "[redacted]"}, "[redacted]"]},
                "comment": "call [redacted] or mail [redacted]",
                "pan": "[redacted]",
                "count": 12
            })
        );
        // email, age, vip, 2 card numbers, 3 leaves of secret, comment, pan.
        assert_eq!(n, 10);
    }

    #[test]
    fn mask_json_masks_sensitive_keys_without_losing_entries() {
        let mut doc = json!({
            "byEmail": {
                "alice@example.com": {"email": "alice@example.com", "n": 1},
                "bob@example.com": {"n": 2},
                "[redacted]": {"n": 3},
                "plain": {"n": 4}
            }
        });
        let paths = vec![(
            JsonPath::parse("$.byEmail['alice@example.com'].n").expect("p"),
            0,
        )];
        let maskers = vec![masker(MaskStrategy::Redact)];
        let set = DetectorSet::new(&[Detector::Email]);
        let n = mask_json(&mut doc, &paths, &maskers, Some((&set, 0)));
        let text = doc.to_string();
        assert!(!text.contains("alice@") && !text.contains("bob@"), "{text}");
        let by_email = doc["byEmail"].as_object().expect("object");
        assert_eq!(by_email.len(), 4, "{text}");
        assert_eq!(by_email["plain"], json!({"n": 4}));
        assert_eq!(by_email["[redacted]"], json!({"n": 3}));
        // The path matched the original key before it was masked.
        let alice = by_email
            .values()
            .find(|v| v.get("email").is_some())
            .expect("alice's entry");
        assert_eq!(alice, &json!({"email": "[redacted]", "n": "[redacted]"}));
        // 2 keys, alice's email value, alice's n.
        assert_eq!(n, 4);
    }

    #[test]
    fn mask_json_first_path_wins_and_bad_index_redacts() {
        let mut doc = json!({"a": "value-one", "b": "value-two"});
        let paths = vec![
            (JsonPath::parse("$.a").expect("p"), 1),
            (JsonPath::parse("$.*").expect("p"), 0),
            (JsonPath::parse("$.b").expect("p"), 1),
        ];
        let maskers = vec![masker(MaskStrategy::Redact), masker(MaskStrategy::Hash)];
        assert_eq!(mask_json(&mut doc, &paths, &maskers, None), 2);
        assert!(doc["a"].as_str().is_some_and(|s| s.starts_with("hmac:")));
        assert_eq!(doc["b"], json!("[redacted]"));
        let mut doc = json!({"a": "x"});
        let paths = vec![(JsonPath::parse("$.a").expect("p"), 9)];
        assert_eq!(mask_json(&mut doc, &paths, &maskers, None), 1);
        assert_eq!(doc, json!({"a": "[redacted]"}));
        // Nothing configured: nothing changes.
        let mut doc = json!({"mail": "a@example.com"});
        assert_eq!(mask_json(&mut doc, &[], &maskers, None), 0);
        assert_eq!(doc, json!({"mail": "a@example.com"}));
    }

    // === properties ===

    use proptest::prelude::*;

    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            (0u32..100).prop_map(|n| json!(n)),
            "[a-c]{0,3}".prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 40, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::btree_map("[a-c]", inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    fn json_path() -> impl Strategy<Value = String> {
        let step = prop_oneof![
            "\\.[a-c]",
            Just(".*".to_string()),
            Just("[*]".to_string()),
            "\\[[0-2]\\]",
            "\\.\\.[a-c]",
            Just("..*".to_string()),
            "\\['[a-c]'\\]",
        ];
        prop::collection::vec(step, 0..4).prop_map(|s| format!("${}", s.concat()))
    }

    fn locations<'v>(
        v: &'v Value,
        here: &mut Vec<PathSegment<'v>>,
        out: &mut Vec<(Vec<PathSegment<'v>>, &'v Value)>,
    ) {
        out.push((here.clone(), v));
        match v {
            Value::Object(m) => {
                for (k, c) in m {
                    here.push(PathSegment::Key(k));
                    locations(c, here, out);
                    here.pop();
                }
            }
            Value::Array(a) => {
                for (i, c) in a.iter().enumerate() {
                    here.push(PathSegment::Index(i));
                    locations(c, here, out);
                    here.pop();
                }
            }
            _ => {}
        }
    }

    proptest! {
        /// The location matcher (used for masking, and later streaming) agrees
        /// with `select` on which values a path picks.
        #[test]
        fn matches_location_agrees_with_select(doc in json_value(), path in json_path()) {
            let p = JsonPath::parse(&path).expect("generated paths parse");
            let mut selected: Vec<*const Value> = p.select(&doc).into_iter().map(|v| v as *const Value).collect();
            selected.sort();
            selected.dedup();
            let mut all = Vec::new();
            locations(&doc, &mut Vec::new(), &mut all);
            let mut by_location: Vec<*const Value> = all
                .into_iter()
                .filter(|(loc, _)| p.matches_location(loc))
                .map(|(_, v)| v as *const Value)
                .collect();
            by_location.sort();
            prop_assert_eq!(selected, by_location, "path {}", path);
        }

        /// Normalisation is idempotent, always absolute, and free of `.`/`..`/empty segments.
        #[test]
        fn normalised_paths_are_canonical(raw in "(/|%2[eEfF]|\\.|\\.\\.|[a-c]|;|%41){0,12}") {
            if let Ok(n) = normalize_path(&raw) {
                prop_assert!(n.starts_with('/'));
                prop_assert_eq!(normalize_path(&n), Ok(n.clone()));
                prop_assert!(n == "/" || !n.ends_with('/'));
                prop_assert!(n == "/" || !n.split('/').skip(1).any(|s| s.is_empty() || s == "." || s == ".."), "{}", n);
            }
        }
    }
}
