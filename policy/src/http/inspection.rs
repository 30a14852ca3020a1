//! Which parts of a request a connection's rules need to read.

use sluice_crds::RuleMatch;

use super::matcher::HttpMatcher;
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
