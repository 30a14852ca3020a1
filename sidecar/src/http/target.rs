//! What a request asks for ([`Target`]): its method, path and query as the
//! rules decide them and as they are forwarded, and its audit record.

use sluice_policy::audit::AuditCommand;
use sluice_policy::http::HttpRequest;

/// What a request asks for, as decided and as forwarded.
pub(super) struct Target {
    /// The method.
    pub(super) method: String,
    /// The path as the application sent it (rules decide on it).
    pub(super) raw_path: String,
    /// The query, `""` when none.
    pub(super) query: String,
    /// The path forwarded: the normalised path, encoded as sent (issue 16:
    /// the path decided is the path forwarded).
    pub(super) forwarded: String,
    /// Its audit record.
    pub(super) cmd: AuditCommand,
}

impl Target {
    /// The request as a rule sees it, with `body` when a rule reads it.
    pub(super) fn request<'a>(&'a self, body: Option<&'a serde_json::Value>) -> HttpRequest<'a> {
        HttpRequest {
            method: &self.method,
            path: &self.raw_path,
            query: &self.query,
            body,
        }
    }
}
