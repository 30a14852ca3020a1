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

    /// The rules' decision on this request. A HEAD request is also decided
    /// as a GET and the stricter decision stands: servers (Go's net/http,
    /// Express, Flask, Rails, Python's http.server) run a resource's GET
    /// handler for HEAD, so a rule that denies (or holds) GET covers HEAD
    /// too, whatever the case of the method (rules match methods in any
    /// case).
    pub(super) fn decide(&self, set: &PolicySet, body: Option<&serde_json::Value>) -> Decision {
        let decision = set.decide_http_at(&self.request(body), &self.path);
        if !self.method.as_str().eq_ignore_ascii_case("HEAD") {
            return decision;
        }
        let as_get = HttpRequest {
            method: "GET",
            ..self.request(body)
        };
        let mut get = set.decide_http_at(&as_get, &self.path);
        if (get.enforced, get.action) > (decision.enforced, decision.action) {
            get.reason = format!(
                "{} (decided as GET: servers run a GET handler for HEAD)",
                get.reason
            );
            return get;
        }
        decision
    }
}
