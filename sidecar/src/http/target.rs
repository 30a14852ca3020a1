//! What a request asks for ([`Target`]): its method, path and query as the
//! rules decide them and as they are forwarded, and its audit record.

use http::{Method, Uri};
use sluice_policy::engine::{Decision, PolicySet};
use sluice_policy::http::{HttpRequest, RequestPath, decide_in_every_reading};

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
    /// by servers ([`decide_in_every_reading`]: HEAD as GET, the any-case
    /// path), so that a rule covers the request however the upstream reads
    /// it.
    pub(super) fn decide(&self, set: &PolicySet, body: Option<&serde_json::Value>) -> Decision {
        decide_in_every_reading(set, &self.request(body), &self.path, self.capitals)
    }
}
