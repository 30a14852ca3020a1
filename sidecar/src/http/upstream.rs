//! The upstream of an HTTP Connection ([`HttpUpstream`]): its base URL,
//! credential headers and client, and the headers that never cross.

use std::sync::Arc;
use std::time::Duration;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::request::Parts;
use http::{Request, Uri};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use super::scrub::{self, Secrets};
use super::{HttpSetupError, HttpsClient, ProxyBody};

/// Headers never forwarded either way: hop-by-hop (RFC 9110 §7.6.1).
fn is_hop_by_hop(name: &str) -> bool {
    matches!(
        name,
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "proxy-authenticate"
            | "proxy-authorization"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
    )
}

/// Request headers that never reach the upstream besides hop-by-hop ones:
/// the application's own `Host` and credentials (and, below, any name
/// that stands for one of these with `_` for `-`); the headers that make
/// servers and frameworks read another method or path than the request
/// line's (Symfony, Laravel, Rails, Express method-override, IIS URL
/// rewriting, nginx auth_request): the request is decided on its request
/// line, so these are stripped, not decided on, and the upstream executes
/// exactly what was decided; and byte ranges: a range could cut a
/// credential or a masked value in two, each half passing the scrubber and
/// the masker, so only whole representations are asked for.
fn is_withheld(name: &str) -> bool {
    matches!(
        name,
        "host"
            | "authorization"
            | "x-http-method-override"
            | "x-http-method"
            | "x-method-override"
            | "x-original-method"
            | "x-original-url"
            | "x-original-uri"
            | "x-rewrite-url"
            | "x-forwarded-uri"
            | "x-forwarded-path"
            | "range"
            | "if-range"
    )
}

/// Where and how requests of one Connection go.
pub struct HttpUpstream {
    pub(super) scheme: http::uri::Scheme,
    pub(super) authority: http::uri::Authority,
    /// The base URL's path, without a trailing slash.
    base_path: String,
    /// The `Host` header of an HTTP/1.1-only client's requests: the value
    /// hyper-util would otherwise format for every request (the host, and
    /// the port unless it is the scheme's default). `None` when HTTP/2 may
    /// be chosen: an HTTP/2 request carries the authority in `:authority`.
    host: Option<HeaderValue>,
    /// Credential headers (marked sensitive).
    credentials: Vec<(HeaderName, HeaderValue)>,
    /// The credential values as they may come back in a response (scrubbed).
    pub(super) secrets: Option<Arc<Secrets>>,
    pub(super) client: HttpsClient,
    /// How long the upstream has to answer with headers, and at most
    /// between two pieces of a response body.
    pub(super) timeout: Duration,
}

impl HttpUpstream {
    /// Parses `base_url` and builds the client. `tls` is used for `https`
    /// (its ALPN is set here); `credentials` are `(header, value)` pairs.
    ///
    /// With `http2` (the default of both modes) ALPN offers `h2` and
    /// `http/1.1` and the upstream chooses: HTTP/2 multiplexes the requests
    /// over one connection, HTTP/1.1 uses a pool of keep-alive connections.
    /// Without it only HTTP/1.1 is offered (for upstreams whose HTTP/2 is
    /// broken or limited); both measured alike in `http_bench.sh`.
    pub fn new(
        connection: &str,
        base_url: &str,
        tls: rustls::ClientConfig,
        credentials: &[(String, Vec<u8>)],
        timeout: Duration,
        http2: bool,
    ) -> Result<Self, HttpSetupError> {
        let bad = |why: &str| HttpSetupError::BaseUrl {
            connection: connection.to_string(),
            url: base_url.to_string(),
            why: why.to_string(),
        };
        let uri: Uri = base_url.parse().map_err(|_| bad("it does not parse"))?;
        let scheme = uri.scheme().cloned().ok_or_else(|| bad("no scheme"))?;
        if scheme != http::uri::Scheme::HTTP && scheme != http::uri::Scheme::HTTPS {
            return Err(bad("the scheme must be http or https"));
        }
        let authority = uri.authority().cloned().ok_or_else(|| bad("no host"))?;
        if uri.query().is_some() {
            return Err(bad("a base URL cannot have a query"));
        }
        let base_path = uri.path().trim_end_matches('/').to_string();
        let mut headers = Vec::new();
        for (key, value) in credentials {
            let err = || HttpSetupError::Header {
                connection: connection.to_string(),
                key: key.clone(),
            };
            let name = HeaderName::from_bytes(key.as_bytes()).map_err(|_| err())?;
            let mut value = HeaderValue::from_bytes(value.trim_ascii()).map_err(|_| err())?;
            value.set_sensitive(true);
            headers.push((name, value));
        }
        let values: Vec<&[u8]> = headers.iter().map(|(_, v)| v.as_bytes()).collect();
        let (secrets, short) = Secrets::new(&values).map_err(|e| HttpSetupError::Bundle {
            connection: connection.to_string(),
            what: format!("its credential values cannot be searched for in responses ({e}), so they could not be kept from the application"),
        })?;
        for i in short {
            if let Some((name, _)) = headers.get(i) {
                tracing::warn!(
                    connection,
                    header = %name,
                    "the credential header's value is shorter than {} bytes: it is not scrubbed from responses; use a longer secret",
                    scrub::MIN_SECRET_LEN
                );
            }
        }
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(timeout));
        let builder = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http();
        let host = (!http2)
            .then(|| {
                let default_port = if scheme == http::uri::Scheme::HTTPS {
                    443
                } else {
                    80
                };
                let value = match authority.port_u16() {
                    Some(port) if port != default_port => format!("{}:{port}", authority.host()),
                    _ => authority.host().to_string(),
                };
                HeaderValue::from_str(&value)
            })
            .transpose()
            .map_err(|_| bad("its host cannot be sent as a Host header"))?;
        let connector = if http2 {
            builder.enable_all_versions().wrap_connector(http)
        } else {
            builder.enable_http1().wrap_connector(http)
        };
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_max_idle_per_host(256)
            .build(connector);
        Ok(HttpUpstream {
            scheme,
            authority,
            base_path,
            host,
            credentials: headers,
            secrets: secrets.map(Arc::new),
            client,
            timeout,
        })
    }
}

/// The request to send upstream: `forwarded` (the decided path) under the
/// base URL with the application's query, its headers less hop-by-hop
/// ones, its own credentials, overrides and ranges, plus the Connection's
/// credentials; `None` when no URL can be built from it.
pub(super) fn upstream_request(
    up: &HttpUpstream,
    forwarded: &str,
    parts: Parts,
    body: ProxyBody,
) -> Option<Request<ProxyBody>> {
    let query = parts.uri.query();
    let mut path_and_query = String::with_capacity(
        up.base_path.len() + forwarded.len() + query.map_or(0, |q| q.len() + 1),
    );
    path_and_query.push_str(&up.base_path);
    path_and_query.push_str(forwarded);
    if let Some(q) = query {
        path_and_query.push('?');
        path_and_query.push_str(q);
    }
    let uri = Uri::builder()
        .scheme(up.scheme.clone())
        .authority(up.authority.clone())
        .path_and_query(path_and_query)
        .build()
        .ok()?;
    let mut headers = parts.headers;
    strip(&mut headers, |name| {
        if is_hop_by_hop(name) || is_withheld(name) {
            return true;
        }
        // CGI, WSGI and Rack servers read `X_HTTP_Method_Override` as
        // `X-HTTP-Method-Override` (both are HTTP_X_HTTP_METHOD_OVERRIDE):
        // a name with `_` is withheld as the name it stands for, and so is
        // one standing for a credential header.
        if !name.contains('_') {
            return false;
        }
        let dashed = name.replace('_', "-");
        is_hop_by_hop(&dashed)
            || is_withheld(&dashed)
            || up.credentials.iter().any(|(c, _)| c.as_str() == dashed)
    });
    for (name, value) in &up.credentials {
        headers.remove(name);
        headers.append(name.clone(), value.clone());
    }
    if let Some(host) = &up.host {
        headers.insert(header::HOST, host.clone());
    }
    // Masking must read the bytes the client will get.
    headers.insert(
        header::ACCEPT_ENCODING,
        HeaderValue::from_static("identity"),
    );
    let mut upstream_req = Request::new(body);
    *upstream_req.method_mut() = parts.method;
    *upstream_req.uri_mut() = uri;
    *upstream_req.headers_mut() = headers;
    Some(upstream_req)
}

/// Removes the hop-by-hop headers of a response.
pub(super) fn strip_hop_by_hop(headers: &mut HeaderMap) {
    strip(headers, is_hop_by_hop);
}

/// Removes every header `drop` names, and those the Connection header
/// names (hop-by-hop too). The names present are read once (a header map
/// holds a handful): removing each listed name instead parsed and hashed
/// two dozen names per request.
fn strip(headers: &mut HeaderMap, drop: impl Fn(&str) -> bool) {
    let mut doomed: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    doomed.extend(headers.keys().filter(|n| drop(n.as_str())).cloned());
    for name in doomed {
        headers.remove(name);
    }
}

pub(super) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}
