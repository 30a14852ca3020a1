//! Which parts of a request a connection's rules need to read.

use sluice_crds::RuleMatch;

use super::grammar::{QUERY_METHOD_REFUSAL, check_query, has_method_parameter, query_refusal};
use super::matcher::HttpMatcher;
use super::path::{parse_query, percent_decoded};
use super::{HttpRequest, applies};

/// A request refused (400) before any rule decides it, because servers
/// would not all read its query as the rules do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unreadable {
    /// The refusal's `error`, e.g. `queryRefused`.
    pub error: &'static str,
    /// The limit broken, e.g. `bodyField`.
    pub limit: &'static str,
    /// Why, for the application.
    pub message: String,
}

impl Unreadable {
    fn new(error: &'static str, limit: &'static str, message: String) -> Self {
        Unreadable {
            error,
            limit,
            message,
        }
    }
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
    /// Whether an enforced rule's path glob has an ASCII capital letter.
    capitals: bool,
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
                out.capitals |= m
                    .paths
                    .iter()
                    .any(|p| p.bytes().any(|b| b.is_ascii_uppercase()));
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
    /// path and query match, in any reading the sidecar decides:
    /// [`HttpMatcher::may_match_without_body`]): the body must then be
    /// strict JSON.
    pub fn strict_body(&self, req: &HttpRequest<'_>) -> bool {
        self.body_always
            || self
                .body_rules
                .iter()
                .any(|m| m.may_match_without_body(req))
    }

    /// A query parameter of `req` that an application merging its query into
    /// the JSON body (Rails: the query wins; Laravel and Express apps that
    /// spread `req.query`: the body wins) could read as a body field that an
    /// enforced `jsonBody` rule applying to `req` judges: `None` when there
    /// is none. Such a request is refused rather than judged twice: which
    /// spelling lands where (`a[b]`, `a.b`, case, which side wins) depends
    /// on the framework. A parameter can stand for a field when its name,
    /// decoded and folded (any case, without surrounding spaces, `.` and ` `
    /// as `_`), or the part before `[` or `.`, is the member of the root a
    /// predicate path starts with; for a path starting with `..` or `*`,
    /// when any part of the name is a member the path names (every
    /// parameter, when it names none).
    pub fn body_field_in_query(&self, req: &HttpRequest<'_>) -> Option<String> {
        if req.query.is_empty() || self.body_rules.is_empty() {
            return None;
        }
        let mut paths = self
            .body_rules
            .iter()
            .filter(|m| m.may_match_without_body(req))
            .flat_map(HttpMatcher::body_paths)
            .peekable();
        paths.peek()?;
        let mut roots: Vec<String> = Vec::new();
        let mut anywhere: Vec<String> = Vec::new();
        let mut every = false;
        for path in paths {
            if let Some(root) = path.root_key() {
                roots.push(folded_query_name(root));
            } else if !path.starts_with_index() {
                let before = anywhere.len();
                anywhere.extend(path.keys().map(folded_query_name));
                every |= anywhere.len() == before;
            }
        }
        parse_query(req.query).into_iter().find_map(|(name, _)| {
            let parts: Vec<String> = name
                .split(['[', ']', '.'])
                .filter(|p| !p.is_empty())
                .map(folded_query_name)
                .collect();
            let base = name
                .split('[')
                .next()
                .map(folded_query_name)
                .unwrap_or_default();
            let root = parts.first().is_some_and(|p| roots.contains(p));
            let hit = every
                || root
                || roots.contains(&base)
                || parts.iter().any(|p| anywhere.contains(p));
            hit.then_some(name)
        })
    }

    /// Why the sidecar refuses `req` (whose path is not ambiguous) before
    /// any rule decides it, `None` when it does not: a query a rule inspects
    /// that breaks the strict grammar ([`check_query`]), a parameter a rule
    /// names spelled otherwise, a `_method` where rules name methods, a
    /// parameter standing for a judged body field
    /// ([`Inspection::body_field_in_query`]).
    pub fn unreadable(&self, req: &HttpRequest<'_>) -> Option<Unreadable> {
        let query = req.query;
        if !self.query_names.is_empty()
            && let Err(e) = check_query(query, &self.query_names)
        {
            return Some(Unreadable::new(
                "queryRefused",
                e.limit(),
                query_refusal(&e),
            ));
        }
        if let Some(message) = self.disguised_parameter(query) {
            return Some(Unreadable::new(
                "queryRefused",
                "parameterSpelling",
                message,
            ));
        }
        // `_method` (Symfony, Laravel, Rails) would run another method than
        // the one decided: refused where rules tell methods apart.
        if self.methods && !query.is_empty() && has_method_parameter(query.as_bytes()) {
            return Some(Unreadable::new(
                "methodOverride",
                "methodOverride",
                QUERY_METHOD_REFUSAL.to_string(),
            ));
        }
        self.body_field_in_query(req).map(|name| {
            Unreadable::new(
                "queryRefused",
                "bodyField",
                format!(
                    "Sluice refused the request: a policy rule judges this request's JSON body, and the query parameter {name:?} is read as a body field by servers that merge the query into the body; send it in the body"
                ),
            )
        })
    }

    /// Why `query` is refused when one of its parameters is a rule's
    /// parameter to some server but spelled otherwise (`DEBUG`, `+debug`,
    /// `de.bug` for `de_bug`): the rule would not see it, the server would.
    fn disguised_parameter(&self, query: &str) -> Option<String> {
        if self.query_names.is_empty() || query.is_empty() {
            return None;
        }
        let named: Vec<(&String, String)> = self
            .query_names
            .iter()
            .map(|n| (n, folded_query_name(n)))
            .collect();
        for pair in query.split('&') {
            let raw = pair
                .split_once('=')
                .map_or(pair, |(k, _)| k)
                .replace('+', " ");
            let name = percent_decoded(&raw).unwrap_or(raw);
            let base = name.split('[').next().unwrap_or_default();
            let folded = folded_query_name(base);
            if let Some((n, _)) = named
                .iter()
                .find(|(n, f)| *f == folded && n.as_str() != base)
            {
                return Some(format!(
                    "Sluice refused the request: a policy rule inspects the query parameter {n:?}, and {base:?} is another spelling of it to some servers (names in any case, without leading or trailing spaces, with '.' and ' ' as '_'); send it as {n:?}"
                ));
            }
        }
        None
    }

    /// Whether an enforced rule names methods.
    pub fn names_methods(&self) -> bool {
        self.methods
    }

    /// Whether an enforced rule's path glob is written with capitals: every
    /// request is then also decided in its any-case reading
    /// ([`super::RequestPath::any_case`]), as servers that route in any case
    /// read it.
    pub fn globs_with_capitals(&self) -> bool {
        self.capitals
    }

    /// Query parameters enforced rules look at (empty: the query is not
    /// checked).
    pub fn query_names(&self) -> &[String] {
        &self.query_names
    }
}

/// A query parameter's name as some server reads it: in any case
/// (ASP.NET), without surrounding spaces, `.` and ` ` as `_` (PHP). The
/// sidecar folds the names it compares with a rule's by the same function.
pub fn folded_query_name(name: &str) -> String {
    name.trim_matches(' ')
        .chars()
        .map(|c| match c {
            '.' | ' ' => '_',
            c => c.to_ascii_lowercase(),
        })
        .collect()
}
