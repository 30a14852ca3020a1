//! The [`HttpMatcher`]: a rule's method, path, query and JSON-body conditions, compiled.

use globset::{GlobBuilder, GlobMatcher};
use regex::{Regex, RegexBuilder};
use serde_json::Value;
use sluice_crds::{JsonBodyPredicate, RuleMatch};

use super::path::{normalize_path, parse_query};
use super::{HttpMatchError, HttpRequest, PathError, RequestPath, applies};
use crate::json_path::JsonPath;

/// Upper bound on the compiled size of a `matches` regular expression.
const REGEX_SIZE_LIMIT: usize = 1 << 20;

/// The compiled HTTP part of a rule's match. Every field given must match.
#[derive(Clone, Debug)]
pub struct HttpMatcher {
    /// Set when the match has SQL fields: it never matches HTTP.
    never: bool,
    /// Upper-case; empty means any.
    methods: Vec<String>,
    /// Empty means any.
    paths: Vec<GlobMatcher>,
    /// `paths` matching in any case (for a path's any-case reading:
    /// [`RequestPath::any_case`]).
    paths_any_case: Vec<GlobMatcher>,
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
        let mut paths_any_case = Vec::with_capacity(m.paths.len());
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
            let mut globs = vec![trimmed];
            if let Some(parent) = trimmed.strip_suffix("/**") {
                globs.push(if parent.is_empty() { "/" } else { parent });
            }
            for g in globs {
                paths.push(glob(g, Segments::Path, &field, pattern)?);
                paths_any_case.push(glob(g, Segments::PathAnyCase, &field, pattern)?);
            }
        }
        let query = m
            .query
            .iter()
            .map(|(name, value)| {
                let field = format!("query.{name}");
                Ok((name.clone(), glob(value, Segments::Value, &field, value)?))
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
            paths_any_case,
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
        self.matches_parts(req, None) && self.json_body.iter().all(|p| p.holds(req.body))
    }

    /// [`HttpMatcher::matches`] of a request whose path was decoded already
    /// (`path`: `req.path`'s).
    pub fn matches_at(&self, req: &HttpRequest<'_>, path: &RequestPath) -> bool {
        self.matches_parts(req, Some(path)) && self.json_body.iter().all(|p| p.holds(req.body))
    }

    /// Whether `req` matches on method, path and query (the body left out):
    /// whether this rule's `jsonBody` predicates would be asked about it.
    pub fn matches_without_body(&self, req: &HttpRequest<'_>) -> bool {
        self.matches_parts(req, None)
    }

    /// Whether the rule may apply to `req` on method, path and query (the
    /// body left out) as any server reads it: as written, in the path's
    /// any-case reading ([`RequestPath::any_case`]), and a HEAD as a GET
    /// (the readings the sidecar decides); an ambiguous path matches.
    pub fn may_match_without_body(&self, req: &HttpRequest<'_>) -> bool {
        let head = req.method.eq_ignore_ascii_case("HEAD");
        let methods: &[&str] = if head {
            &[req.method, "GET"]
        } else {
            &[req.method]
        };
        let any_case = RequestPath::parse(req.path).ok().map(|p| p.any_case());
        methods.iter().any(|method| {
            let req = HttpRequest { method, ..*req };
            self.matches_parts(&req, None)
                || any_case
                    .as_ref()
                    .is_some_and(|p| self.matches_parts(&req, Some(p)))
        })
    }

    /// The JSONPaths of the rule's `jsonBody` predicates.
    pub(super) fn body_paths(&self) -> impl Iterator<Item = &JsonPath> {
        self.json_body.iter().map(|p| &p.path)
    }

    /// `path`: `req.path` decoded already (`None`: decoded here if a path
    /// glob needs it).
    fn matches_parts(&self, req: &HttpRequest<'_>, path: Option<&RequestPath>) -> bool {
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
            let decoded;
            let (path, globs) = match path {
                Some(p) if p.is_any_case() => (Some(p.decided()), &self.paths_any_case),
                Some(p) => (Some(p.decided()), &self.paths),
                None => {
                    decoded = normalize_path(req.path).ok();
                    (decoded.as_deref(), &self.paths)
                }
            };
            if let Some(path) = path
                && !globs.iter().any(|g| g.is_match(path))
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

/// What a glob matches: a path (`*` within one segment), a path in any case,
/// or a query value (`*` matches anything).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Segments {
    Path,
    PathAnyCase,
    Value,
}

fn glob(
    pattern: &str,
    segments: Segments,
    field: &str,
    written: &str,
) -> Result<GlobMatcher, HttpMatchError> {
    GlobBuilder::new(pattern)
        .literal_separator(segments != Segments::Value)
        .case_insensitive(segments == Segments::PathAnyCase)
        .backslash_escape(true)
        .build()
        .map(|g| g.compile_matcher())
        .map_err(|source| HttpMatchError::InvalidGlob {
            field: field.to_string(),
            pattern: written.to_string(),
            source,
        })
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
