//! Request bodies: read whole when a rule inspects them or to buffer them,
//! checked strictly (JSON grammar, media type, `_method` in forms).

use std::borrow::Cow;
use std::convert::Infallible;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::request::Parts;
use http::{Response, StatusCode};
use http_body::Body;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use sluice_policy::http::Inspection;

use super::refuse::{error_response, record_refusal, refuse_unreadable};
use super::stall::StallGuard;
use super::target::Target;
use super::{BoxError, HttpContext, ProxyBody};
use crate::audit::SessionInfo;

/// A request body as forwarded, and its JSON when a rule reads it.
pub(super) type ReadBody = (ProxyBody, Option<serde_json::Value>);

/// The body phase of a request: read whole before the upstream sees the
/// request when a rule looks into it (checked strictly: the JSON grammar,
/// the media type, `_method` in forms), and also (request buffering, as
/// nginx's proxy_request_buffering does by default) when its length is not
/// declared (chunked) or is declared within the buffering limit: a
/// malformed, stalled or cut-off body is then a 400 and the upstream sees
/// nothing of it (issue 17: it was a 502 after the headers had been
/// forwarded). A body declared larger than the limit streams through; its
/// Content-Length tells the upstream when it was cut. `Err` is the refusal,
/// on record.
pub(super) async fn read_request_body(
    ctx: &HttpContext,
    session: &SessionInfo,
    target: &Target,
    inspection: &Inspection,
    (parts, body): (&Parts, Incoming),
    timeout: std::time::Duration,
) -> Result<ReadBody, Response<ProxyBody>> {
    let form = inspection.names_methods()
        && parts.method == http::Method::POST
        && form_kind(&parts.headers).is_some();
    // Laravel reads a JSON body's `_method` as the method of a POST.
    let json_post = inspection.names_methods()
        && parts.method == http::Method::POST
        && json_labelled(&parts.headers);
    let inspect = inspection.buffers_body() || form || json_post;
    let store = match body.size_hint().exact() {
        None => true,
        Some(n) => n > 0 && n <= ctx.max_request_body as u64,
    };
    if !(inspect || store) {
        let streamed = StallGuard::new(
            body.map_err(|e| -> BoxError { Box::new(e) }),
            timeout,
            "the application's request body",
        );
        return Ok((streamed.boxed_unsync(), None));
    }
    // Boxed: held inline, the collection would make every request's
    // future (allocated and moved per request) larger, bodiless or not.
    let collect = tokio::time::timeout(timeout, Limited::new(body, ctx.max_request_body).collect());
    let collected = Box::pin(collect).await.unwrap_or_else(|_| {
        Err(format!(
            "the request body stalled: nothing arrived for {} ms",
            timeout.as_millis()
        )
        .into())
    });
    let bytes = match collected {
        Ok(collected) => collected.to_bytes(),
        Err(e) => return Err(unreadable_body(ctx, session, target, inspect, &*e)),
    };
    if !inspect {
        return Ok((full(bytes), None));
    }
    let refuse = |refusal, message| refuse_unreadable(ctx, session, &target.cmd, refusal, message);
    let method_override = ("methodOverride", "methodOverride");
    if form && let Err(message) = form_without_override(&parts.headers, &bytes) {
        return Err(refuse(method_override, message));
    }
    let strict = inspection.strict_body(&target.request(None));
    let json = if strict {
        match strict_body(&parts.headers, &bytes) {
            Ok(json) => json,
            Err((limit, e)) => {
                let message = sluice_policy::http::body_refusal(&e);
                return Err(refuse(("bodyRefused", limit), message));
            }
        }
    } else {
        // Only dry-run rules (or none) read this body: never blocks.
        serde_json::from_slice(&bytes).ok()
    };
    if json_post && has_json_method(json.as_ref()) {
        let message = "Sluice refused the request: its JSON body has a _method field, which some servers (Laravel) run as the request's method; send the method on the request line".to_string();
        return Err(refuse(method_override, message));
    }
    Ok((full(bytes), json))
}

/// Whether a Content-Type says JSON as Laravel's `isJson` reads it (`/json`
/// or `+json` in it).
fn json_labelled(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::CONTENT_TYPE)
        .iter()
        .filter_map(media_type)
        .any(|(mime, _)| mime.contains("/json") || mime.contains("+json"))
}

/// Whether a JSON body's top-level object has a `_method` key (in any case).
fn has_json_method(json: Option<&serde_json::Value>) -> bool {
    json.and_then(serde_json::Value::as_object)
        .is_some_and(|o| {
            o.keys()
                .any(|k| k.eq_ignore_ascii_case(sluice_policy::http::METHOD_PARAMETER))
        })
}

/// A whole body, to forward.
pub(super) fn full(bytes: Bytes) -> ProxyBody {
    Full::new(bytes)
        .map_err(|e: Infallible| -> BoxError { match e {} })
        .boxed_unsync()
}

/// The refusal of a body that could not be read: too large to decide or to
/// buffer (413), or broken (400). On record.
fn unreadable_body(
    ctx: &HttpContext,
    session: &SessionInfo,
    target: &Target,
    inspect: bool,
    e: &(dyn std::error::Error + Send + Sync + 'static),
) -> Response<ProxyBody> {
    let too_large = e.is::<http_body_util::LengthLimitError>();
    let (status, error, message) = if too_large && inspect {
        (
            StatusCode::PAYLOAD_TOO_LARGE,
            "bodyTooLarge",
            format!(
                "Sluice refused the request: a policy rule inspects JSON bodies, and this body is larger than the {} bytes Sluice buffers to decide",
                ctx.max_request_body
            ),
        )
    } else if too_large {
        (
            StatusCode::PAYLOAD_TOO_LARGE,
            "bodyTooLarge",
            format!(
                "Sluice refused the request: its body is chunked (no Content-Length) and larger than the {} bytes Sluice reads before forwarding such a body; send it with a Content-Length, or raise --http-max-body",
                ctx.max_request_body
            ),
        )
    } else {
        (
            StatusCode::BAD_REQUEST,
            "badBody",
            format!("Sluice could not read the request body: {e}"),
        )
    };
    record_refusal(ctx, session, &target.cmd, status, message.clone());
    error_response(status, error, message)
}

/// Whether the body is a form (`Some(true)` multipart, `Some(false)`
/// urlencoded), whose `_method` field frameworks run as the method.
fn form_kind(headers: &HeaderMap) -> Option<bool> {
    headers
        .get_all(header::CONTENT_TYPE)
        .iter()
        .find_map(|ct| match media_type(ct)?.0.as_ref() {
            "multipart/form-data" => Some(true),
            "application/x-www-form-urlencoded" => Some(false),
            _ => None,
        })
}

/// A form body must not carry `_method` (nor hide its fields in an encoding).
fn form_without_override(headers: &HeaderMap, bytes: &[u8]) -> Result<(), String> {
    if headers
        .get_all(header::CONTENT_ENCODING)
        .iter()
        .any(|v| !v.as_bytes().eq_ignore_ascii_case(b"identity"))
    {
        return Err("Sluice refused the request: its form body is compressed, so Sluice cannot tell whether it carries a _method field that some servers run as the method; send it unencoded".into());
    }
    let found = match form_kind(headers) {
        Some(true) => bytes
            .windows(sluice_policy::http::METHOD_PARAMETER.len())
            .any(|w| w.eq_ignore_ascii_case(sluice_policy::http::METHOD_PARAMETER.as_bytes())),
        _ => sluice_policy::http::has_method_parameter(bytes),
    };
    if found {
        return Err("Sluice refused the request: its form body has a _method field, which some servers run as the request's method; send the method on the request line".into());
    }
    Ok(())
}

/// The media type of a Content-Type value, lower-case, and its charset
/// parameter (lower-case, unquoted) if any. Copied only when not already
/// lower-case (a label is read on every response).
pub(super) fn media_type(value: &HeaderValue) -> Option<(Cow<'_, str>, Option<Cow<'_, str>>)> {
    let text = value.to_str().ok()?;
    let mut parts = text.split(';');
    let mime = lower(parts.next()?.trim());
    let mut charset = None;
    for p in parts {
        if let Some((k, v)) = p.split_once('=')
            && k.trim().eq_ignore_ascii_case("charset")
        {
            charset = Some(lower(v.trim().trim_matches('"')));
        }
    }
    Some((mime, charset))
}

/// `s` in lower case, copied only when it has an upper-case letter.
fn lower(s: &str) -> Cow<'_, str> {
    if s.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(s.to_ascii_lowercase())
    } else {
        Cow::Borrowed(s)
    }
}

/// A request body an enforced `jsonBody` rule reads: it must be unencoded,
/// labelled as JSON (or as text, or not at all: servers such as Starlette
/// parse any label), UTF-8, and strict JSON
/// ([`sluice_policy::http::parse_body`]). `Err` names the limit broken.
#[allow(clippy::result_large_err)]
fn strict_body(
    headers: &HeaderMap,
    bytes: &[u8],
) -> Result<Option<serde_json::Value>, (&'static str, String)> {
    if bytes.is_empty() {
        return Ok(None);
    }
    for v in headers.get_all(header::CONTENT_ENCODING) {
        if !v.as_bytes().eq_ignore_ascii_case(b"identity") {
            return Err((
                "contentEncoding",
                format!(
                    "its Content-Encoding {:?} cannot be inspected; send the body unencoded",
                    String::from_utf8_lossy(v.as_bytes())
                ),
            ));
        }
    }
    let mut types = headers.get_all(header::CONTENT_TYPE).iter();
    if let Some(ct) = types.next() {
        if types.next().is_some() {
            return Err((
                "contentType",
                "it has more than one Content-Type; send one, application/json".into(),
            ));
        }
        let readable = media_type(ct).is_some_and(|(mime, charset)| {
            let json = mime == "application/json"
                || mime == "text/json"
                || mime == "text/plain"
                || (mime.starts_with("application/") && mime.ends_with("+json"));
            json && charset.is_none_or(|c| c == "utf-8" || c == "utf8")
        });
        if !readable {
            return Err((
                "contentType",
                format!(
                    "its Content-Type {:?} cannot be inspected; send JSON as application/json in UTF-8",
                    String::from_utf8_lossy(ct.as_bytes())
                ),
            ));
        }
    }
    sluice_policy::http::parse_body(bytes).map_err(|e| (e.limit(), e.to_string()))
}

/// Reads a whole body of at most `max` bytes.
pub(super) async fn read_limited(mut body: ProxyBody, max: usize) -> Result<Bytes, String> {
    let mut out = bytes::BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| e.to_string())?;
        if let Ok(data) = frame.into_data() {
            if out.len() + data.len() > max {
                return Err(format!("the body is larger than {max} bytes"));
            }
            out.extend_from_slice(&data);
        }
    }
    Ok(out.freeze())
}
