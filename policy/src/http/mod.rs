//! HTTP rule matching (method, path, query, JSON body) and the request grammar
//! (strict query strings and JSON bodies). JSONPath and JSON masking are
//! [`crate::json_path`] and [`crate::json_mask`].
//!
//! ## Path normalisation
//!
//! A path glob is matched against the request path as the upstream will
//! understand it, so that encoding tricks cannot slip past a deny rule
//! ([`normalize_path`]):
//!
//! 1. percent-escapes are decoded once (`%2e%2e` is `..`, `%41` is `A`);
//!    a malformed escape (`%zz`), an escape that decodes to another escape
//!    (`%252e`: double encoding, read differently by different servers), a
//!    separator hidden in an escape (`%2F`, `%5C`, `%3B`), a `;` path
//!    parameter (`/admin;jsessionid=x`, `..;`: Java servers drop them, others
//!    do not), a control character, a backslash (a separator on some
//!    servers) or invalid UTF-8 makes the path *ambiguous*;
//!    so does a segment that begins or ends with white space or ends with a
//!    dot (`/export%20/`, `/export./`: Spring's AntPathMatcher, .NET and
//!    Windows servers drop the padding, others keep it);
//! 2. empty segments and `.` are removed (`//admin` is `/admin`), `..` removes
//!    the segment before it (`/v1/../admin` is `/admin`); a `..` that would
//!    climb above the root (`/../admin`: out of the Connection's baseURL) makes
//!    the path ambiguous too;
//! 3. the trailing slash is dropped (`/admin/` is `/admin`).
//!
//! The proxy forwards the decided path ([`forward_path`]), not the raw one,
//! so the upstream reads the path the rules saw whatever its own
//! normalisation. An ambiguous path cannot be matched reliably. [`HttpMatcher::matches`]
//! treats it as matching every path glob (so deny and approval rules apply),
//! and callers must refuse such requests (400) before deciding, with
//! [`normalize_path`], because an *allow* rule would match it too.
//!
//! ## Globs
//!
//! `*` matches within one segment, `**` any number of whole segments, and a
//! glob ending in `/**` also matches the path it is under (`/v1/refunds/**`
//! matches `/v1/refunds`). Globs are case-sensitive, like paths, except in
//! a path's any-case reading ([`RequestPath::any_case`]: how servers that
//! route in any case read it), where they match in any case.

mod grammar; // strict JSON bodies and query strings
mod inspection; // which parts of a request the rules read
mod matcher; // HttpMatcher: a rule's HTTP conditions, compiled
mod path; // paths and query strings, decoded and normalised
mod readings; // a request decided in every reading servers give it
#[cfg(test)]
mod tests;

pub use grammar::{
    BodyError, MAX_BODY_DEPTH, MAX_BODY_NUMBER, MAX_QUERY_LEN, METHOD_PARAMETER,
    QUERY_METHOD_REFUSAL, QueryError, body_refusal, check_query, has_method_parameter, parse_body,
    query_refusal,
};
pub use inspection::{Inspection, Unreadable, folded_query_name};
pub use matcher::HttpMatcher;
pub use path::{
    RequestPath, decided_and_forwarded, forward_path, normalize_path, path_refusal, percent_decoded,
};
pub use readings::decide_in_every_reading;

use serde_json::Value;
use sluice_crds::RuleMatch;

use crate::json_path::JsonPathError;

/// A rule's HTTP match could not be compiled; the message names the field.
#[derive(Debug, thiserror::Error)]
pub enum HttpMatchError {
    /// A path or query glob does not parse.
    #[error("{field}: invalid glob {pattern:?}: {source}")]
    InvalidGlob {
        /// The field, e.g. `paths[1]`.
        field: String,
        /// The glob as written.
        pattern: String,
        /// Why it does not parse.
        #[source]
        source: globset::Error,
    },
    /// A path glob that does not start with `/`.
    #[error("{field}: path glob {pattern:?} must start with '/', e.g. \"/v1/refunds/**\"")]
    RelativePath {
        /// The field, e.g. `paths[0]`.
        field: String,
        /// The glob as written.
        pattern: String,
    },
    /// A method that is not an HTTP method token.
    #[error("{field}: {method:?} is not an HTTP method; write e.g. GET, POST or DELETE")]
    InvalidMethod {
        /// The field, e.g. `methods[0]`.
        field: String,
        /// The method as written.
        method: String,
    },
    /// A `matches` regular expression does not compile.
    #[error("{field}: invalid regular expression: {source}")]
    InvalidRegex {
        /// The field, e.g. `jsonBody[0].matches`.
        field: String,
        /// Why it does not compile.
        #[source]
        source: regex::Error,
    },
    /// A JSONPath does not parse.
    #[error(transparent)]
    InvalidJsonPath(#[from] JsonPathError),
    /// A JSON body predicate with no condition.
    #[error(
        "{field}: a jsonBody predicate needs at least one of exists, equals, oneOf, matches, \
         greaterThan, lessThan"
    )]
    EmptyPredicate {
        /// The field, e.g. `jsonBody[0]`.
        field: String,
    },
}

/// A request path that cannot be normalised unambiguously.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// A `%` not followed by two hex digits.
    #[error("the request path has a malformed percent-escape; encode '%' as %25")]
    MalformedEscape,
    /// An escape that decodes to another escape (`%252e`).
    #[error(
        "the request path is percent-encoded twice (e.g. %252e); servers disagree on what it means"
    )]
    DoubleEncoded,
    /// A decoded control character or backslash.
    #[error("the request path contains a control character or a backslash")]
    ForbiddenCharacter,
    /// Decoded bytes that are not UTF-8.
    #[error("the request path does not decode to UTF-8")]
    InvalidUtf8,
    /// A `..` segment that would climb above the root (above the
    /// Connection's baseURL).
    #[error(
        "the request path climbs above the root with '..' (it would leave the Connection's baseURL)"
    )]
    AboveRoot,
    /// `%2F`, `%5C` or `%3B`: a separator some servers decode and others do not.
    #[error(
        "the request path hides a separator in a percent-escape (%2F, %5C or %3B), which servers read differently"
    )]
    EncodedSeparator,
    /// A segment padded with white space or ending with a dot (`export%20`,
    /// `export.`): some servers drop the padding, others keep it.
    #[error(
        "a segment of the request path begins or ends with white space or ends with a dot, which some servers drop and others keep"
    )]
    PaddedSegment,
    /// A `;` path parameter (dropped by Java servers, kept by others).
    #[error(
        "the request path has a ';' parameter, which servers read differently; encode ';' in a query instead"
    )]
    PathParameter,
}

/// The parts of an HTTP request that rules look at.
#[derive(Clone, Copy, Debug)]
pub struct HttpRequest<'a> {
    /// The method, any case.
    pub method: &'a str,
    /// The path as received (percent-encoded, not normalised), without query.
    pub path: &'a str,
    /// The raw query string, without `?`, not decoded.
    pub query: &'a str,
    /// The request body, when it is JSON.
    pub body: Option<&'a Value>,
}

/// Whether a rule's match can apply to HTTP requests: a match with any SQL
/// field never matches HTTP.
pub fn applies(m: &RuleMatch) -> bool {
    !m.has_sql_fields()
}
