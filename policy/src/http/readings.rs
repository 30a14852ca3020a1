//! The rules' decision on a request in every reading servers give it (the
//! sidecar's and `policy eval`'s: one function for both).

use crate::engine::{Decision, PolicySet};

use super::{HttpRequest, RequestPath};

/// The rules' decision on `req` (its path decoded as `path`): the strictest
/// of its readings by servers, so that a rule covers the request however the
/// upstream reads it.
///
/// - A HEAD request is also decided as a GET: servers (Go's net/http,
///   Express, Flask, Rails, Python's http.server) run a resource's GET
///   handler for HEAD, so a rule that denies (or holds) GET covers HEAD,
///   whatever the case of the method (rules match methods in any case).
/// - A path with ASCII upper-case letters is also decided in lower case:
///   Express (by default), ASP.NET and IIS route paths in any case, so
///   `/V1/EXPORT` runs what a rule on `/v1/export/**` names; in that
///   reading globs match in any case, so a rule on `/v1/Admin/**` covers
///   `/v1/admin/x` (decided so for every path when `capitals`: an enforced
///   glob has capitals, [`super::Inspection::globs_with_capitals`]).
pub fn decide_in_every_reading(
    set: &PolicySet,
    req: &HttpRequest<'_>,
    path: &RequestPath,
    capitals: bool,
) -> Decision {
    let decision = set.decide_http_at(req, path);
    let head = req.method.eq_ignore_ascii_case("HEAD");
    let folded = (capitals || path.decided().bytes().any(|b| b.is_ascii_uppercase()))
        .then(|| path.any_case());
    if !head && folded.is_none() {
        return decision;
    }
    let methods: &[&str] = if head {
        &[req.method, "GET"]
    } else {
        &[req.method]
    };
    let paths = std::iter::once(path).chain(folded.as_ref());
    let mut strictest = decision;
    for (i, path) in paths.enumerate() {
        for (j, method) in methods.iter().enumerate() {
            if i == 0 && j == 0 {
                continue;
            }
            let reading = HttpRequest { method, ..*req };
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
