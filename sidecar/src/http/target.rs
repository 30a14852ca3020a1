//! What a request asks for ([`Target`]): its method, path and query as the
//! rules decide them and as they are forwarded, and its audit record.

use http::{Method, Uri};
use sluice_policy::engine::{Decision, PolicySet};
use sluice_policy::http::{HttpRequest, RequestPath};

use super::record::RequestCommand;

/// What a request asks for, as decided and as forwarded.
pub(super) struct Target {
    /// The method.
    pub(super) method: Method,
    /// The request's URI as the application sent it: its path is what the
    /// rules decide on, its query what query rules read. (A clone of the
    /// request's own: shared bytes, not a copy of the path and query.)
    pub(super) uri: Uri,
    /// The path decoded once: as decided, and as forwarded (the normalised
    /// path, encoded as sent; issue 16: the path decided is the path
    /// forwarded).
    pub(super) path: RequestPath,
    /// Its audit record.
    pub(super) cmd: RequestCommand,
    /// Whether an enforced rule's path glob has capitals: the any-case
    /// reading is then decided for every path.
    pub(super) capitals: bool,
}

impl Target {
    /// The path as the application sent it.
    pub(super) fn raw_path(&self) -> &str {
        self.uri.path()
    }

    /// The query, `""` when none.
    pub(super) fn query(&self) -> &str {
        self.uri.query().unwrap_or("")
    }

    /// The request as a rule sees it, with `body` when a rule reads it.
    pub(super) fn request<'a>(&'a self, body: Option<&'a serde_json::Value>) -> HttpRequest<'a> {
        HttpRequest {
            method: self.method.as_str(),
            path: self.raw_path(),
            query: self.query(),
            body,
        }
    }

    /// The rules' decision on this request: the strictest of its readings
    /// by servers, so that a rule covers the request however the upstream
    /// reads it.
    ///
    /// - A HEAD request is also decided as a GET: servers (Go's net/http,
    ///   Express, Flask, Rails, Python's http.server) run a resource's GET
    ///   handler for HEAD, so a rule that denies (or holds) GET covers HEAD,
    ///   whatever the case of the method (rules match methods in any case).
    /// - A path with ASCII upper-case letters is also decided in lower case:
    ///   Express (by default), ASP.NET and IIS route paths in any case, so
    ///   `/V1/EXPORT` runs what a rule on `/v1/export/**` names; in that
    ///   reading globs match in any case, so a rule on `/v1/Admin/**` covers
    ///   `/v1/admin/x` (decided so for every path when a glob has capitals).
    pub(super) fn decide(&self, set: &PolicySet, body: Option<&serde_json::Value>) -> Decision {
        let decision = set.decide_http_at(&self.request(body), &self.path);
        let head = self.method.as_str().eq_ignore_ascii_case("HEAD");
        let folded = (self.capitals || self.path.decided().bytes().any(|b| b.is_ascii_uppercase()))
            .then(|| self.path.any_case());
        if !head && folded.is_none() {
            return decision;
        }
        let methods: &[&str] = if head {
            &[self.method.as_str(), "GET"]
        } else {
            &[self.method.as_str()]
        };
        let paths = std::iter::once(&self.path).chain(folded.as_ref());
        let mut strictest = decision;
        for (i, path) in paths.enumerate() {
            for (j, method) in methods.iter().enumerate() {
                if i == 0 && j == 0 {
                    continue;
                }
                let reading = HttpRequest {
                    method,
                    ..self.request(body)
                };
                let mut other = set.decide_http_at(&reading, path);
                if (other.enforced, other.action) > (strictest.enforced, strictest.action) {
                    other.reason = format!(
                        "{} (decided as {method} {}: servers read the request so too)",
                        other.reason,
                        path.decided()
                    );
                    strictest = other;
                }
            }
        }
        strictest
    }
}
