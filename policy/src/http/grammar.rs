//! The request grammar: strict JSON bodies and query strings, and the refusals that name a broken bound.

use serde_json::Value;

use super::path::percent_decode;

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
