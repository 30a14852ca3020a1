//! Which parts of a request a connection's rules need to read.

use sluice_crds::RuleMatch;

use super::matcher::HttpMatcher;
use super::path::parse_query;
use super::{HttpRequest, applies};

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
