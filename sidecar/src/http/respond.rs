//! The upstream's answer, checked before anything of it reaches the
//! application: its headers scrubbed of credentials and masked, a body that
//! cannot be scrubbed or masked refused with a status (502) rather than cut
//! off, then streamed through a [`ResponseBody`].

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::response::Parts;
use http::{Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use sluice_policy::engine::PolicySet;

use super::body::media_type;
use super::record::{RequestCommand, result_event};
use super::refuse::{error_response, json_response};
use super::response::{
    Representation, ResponseBody, ResultRecord, Stage, peek, representation, sniffed,
};
use super::scrub::{self, ScrubStream};
use super::stall::Stall;
use super::stream_mask::JsonStreamMasker;
use super::text_mask::TextMasker;
use super::upstream::{HttpUpstream, error_chain, strip_hop_by_hop};
use super::{HttpContext, ProxyBody};
use crate::audit::SessionInfo;

/// What the upstream answered, within its timeout.
pub(super) type Sent = Result<
    Result<Response<Incoming>, hyper_util::client::legacy::Error>,
    tokio::time::error::Elapsed,
>;

/// One answer being checked: what its refusals and its result record need.
struct Answer<'a> {
    ctx: &'a HttpContext,
    session: &'a Arc<SessionInfo>,
    up: &'a HttpUpstream,
    cmd: RequestCommand,
    label: &'static str,
    started: Instant,
}

impl Answer<'_> {
    /// The request failed upstream: its result on record, the status counted.
    fn failed(&mut self, status: StatusCode, message: String) {
        result_event(
            self.ctx,
            self.session,
            &mut self.cmd,
            self.started,
            0,
            Some(message),
        );
        self.ctx.http_metrics.request(self.label, status);
    }

    /// [`Answer::failed`], answered `{"error": error, "message": message}`.
    fn refuse(&mut self, status: StatusCode, error: &str, message: String) -> Response<ProxyBody> {
        self.failed(status, message.clone());
        error_response(status, error, message)
    }
}

/// The answer to the application: the upstream's, scrubbed and masked as it
/// streams, or the refusal (502, 504) of one that failed or cannot be
/// passed on.
pub(super) async fn respond(
    ctx: &HttpContext,
    session: &Arc<SessionInfo>,
    set: &Arc<PolicySet>,
    up: &HttpUpstream,
    cmd: RequestCommand,
    (label, started): (&'static str, Instant),
    sent: Sent,
) -> Response<ProxyBody> {
    let mut answer = Answer {
        ctx,
        session,
        up,
        cmd,
        label,
        started,
    };
    let response = match sent {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => {
            let why = error_chain(&e);
            answer.failed(StatusCode::BAD_GATEWAY, format!("upstream error: {why}"));
            return error_response(
                StatusCode::BAD_GATEWAY,
                "upstreamUnavailable",
                format!(
                    "Sluice could not reach the upstream of Connection {} ({}): {why}",
                    ctx.name, up.authority
                ),
            );
        }
        Err(_) => {
            answer.failed(StatusCode::GATEWAY_TIMEOUT, "upstream timeout".into());
            return error_response(
                StatusCode::GATEWAY_TIMEOUT,
                "upstreamTimeout",
                format!(
                    "the upstream of Connection {} did not answer within {} ms",
                    ctx.name,
                    up.timeout.as_millis()
                ),
            );
        }
    };
    ctx.metrics.upstream_latency(started.elapsed());
    let (mut parts, mut body) = response.into_parts();
    let encoded = clean_headers(&mut parts, set, up);
    let mask_rules = !set.json_paths().is_empty() || set.detectors_indexed().is_some();
    // A compressed container (zip, gzip, …) hides the credential as well as
    // a Content-Encoding does.
    let container = parts
        .headers
        .get_all(header::CONTENT_TYPE)
        .iter()
        .filter_map(media_type)
        .any(|(mime, _)| scrub::is_compressed_type(&mime));
    if (encoded || container) && (mask_rules || up.secrets.is_some()) {
        let message = format!(
            "the upstream of Connection {} sent a compressed response although Sluice asked for identity encoding; Sluice cannot scrub credentials from it or mask it, so it is not passed on",
            ctx.name
        );
        return answer.refuse(StatusCode::BAD_GATEWAY, "compressedResponse", message);
    }
    // The first bytes are read before answering when masking rules apply
    // (issue 16: a body that cannot be masked is refused with a status, not
    // cut off) and when credentials are scrubbed (compressed data under
    // another label is refused with a status, however the upstream chunks
    // its first bytes).
    let (first, ended) = if mask_rules || up.secrets.is_some() {
        let need = |got: &[u8]| {
            (mask_rules && !sniffed(got)) || (up.secrets.is_some() && scrub::magic_undecided(got))
        };
        match peek(&mut body, up.timeout, need).await {
            Ok(p) => p,
            Err(why) => {
                let message = format!("the upstream response broke off: {why}");
                return answer.refuse(StatusCode::BAD_GATEWAY, "upstreamUnavailable", message);
            }
        }
    } else {
        (Bytes::new(), false)
    };
    if up.secrets.is_some()
        && let Some(kind) = scrub::compressed_magic(&first)
    {
        let message = format!(
            "the upstream of Connection {} answered with {kind} data under another label; Sluice cannot scrub the injected credential from it, so it is not passed on",
            ctx.name
        );
        return answer.refuse(StatusCode::BAD_GATEWAY, "compressedResponse", message);
    }
    let stage = if mask_rules {
        match stage(&mut answer, set, &parts, &first, ended) {
            Ok(stage) => stage,
            Err(refused) => return refused,
        }
    } else {
        Stage::Pass
    };
    if !matches!(stage, Stage::Pass) {
        parts.headers.remove(header::CONTENT_LENGTH);
    }
    ctx.http_metrics.request(label, parts.status);
    let recorder = crate::recording::BodyRecorder::new(
        set.recording(),
        parts.status.as_u16(),
        &session.recording,
    );
    streamed(answer, parts, body, stage, (first, ended), recorder)
}

/// The answer's body as it streams to the application: credentials
/// scrubbed, masked by `stage`, its result recorded when it ends.
fn streamed(
    answer: Answer<'_>,
    parts: Parts,
    body: Incoming,
    stage: Stage,
    (first, ended): (Bytes, bool),
    recorder: Option<crate::recording::BodyRecorder>,
) -> Response<ProxyBody> {
    let (ctx, up) = (answer.ctx, answer.up);
    let status = parts.status;
    let body = ResponseBody {
        inner: body,
        stall: Stall::new(up.timeout),
        secrets: up.secrets.clone(),
        scrub: ScrubStream::new(),
        stage,
        first: (!first.is_empty() || ended).then_some(first),
        whole: ended,
        ended: false,
        finished: false,
        trailers: None,
        record: Some(ResultRecord {
            audit: ctx.audit.clone(),
            metrics: ctx.metrics.clone(),
            session: answer.session.clone(),
            command: answer.cmd,
            started: answer.started,
            status,
            bytes: 0,
            error: None,
            recorder,
        }),
    };
    Response::from_parts(parts, body.boxed_unsync())
}

/// Cleans the upstream's response head: no reason phrase of its own, no
/// hop-by-hop headers, credentials scrubbed and what the detectors find
/// masked in every header value. `true` when the body is encoded (a
/// Content-Encoding, or a transfer coding other than chunked).
fn clean_headers(parts: &mut Parts, set: &PolicySet, up: &HttpUpstream) -> bool {
    // The upstream's own reason phrase would be written back by hyper; it
    // can carry anything (a credential, a value): the canonical one is sent.
    parts.extensions.remove::<hyper::ext::ReasonPhrase>();
    // A transfer coding hyper does not remove (only chunked is) leaves the
    // body encoded like a Content-Encoding would.
    let transfer_coded = parts
        .headers
        .get_all(header::TRANSFER_ENCODING)
        .iter()
        .flat_map(|v| v.as_bytes().split(|b| *b == b','))
        .any(|c| {
            let c = c.trim_ascii();
            !c.eq_ignore_ascii_case(b"chunked") && !c.eq_ignore_ascii_case(b"identity")
        });
    // Read before the hop-by-hop headers go: an upstream's
    // `Connection: content-encoding` would strip the one header saying the
    // body is encoded (raw deflate has no magic bytes to give it away).
    let content_coded = parts
        .headers
        .get_all(header::CONTENT_ENCODING)
        .iter()
        .any(|v| !v.as_bytes().eq_ignore_ascii_case(b"identity"));
    strip_hop_by_hop(&mut parts.headers);
    if let Some(secrets) = &up.secrets {
        secrets.scrub_headers(&mut parts.headers);
    }
    // Response headers are a channel back too (a Location, a cookie, an
    // X-Contact): the detectors run over every value.
    if let Some((detectors, masker)) = set.detectors() {
        // A name cannot carry `[redacted]`: a field whose name holds a
        // finding (`x-card-4111…`) is dropped.
        let doomed: Vec<header::HeaderName> = parts
            .headers
            .keys()
            .filter(|name| !detectors.find(name.as_str()).is_empty())
            .cloned()
            .collect();
        for name in doomed {
            parts.headers.remove(name);
        }
        for value in parts.headers.values_mut() {
            let text = String::from_utf8_lossy(value.as_bytes());
            let (text, findings) = super::text_mask::find_decoded(detectors, &text);
            if !findings.is_empty() {
                let masked = masker.mask_findings(&text, &findings);
                *value = HeaderValue::from_str(&masked)
                    .unwrap_or_else(|_| HeaderValue::from_static("[redacted]"));
            }
        }
    }
    transfer_coded || content_coded
}

/// How the body is masked, from its headers and first bytes; the refusal
/// (502, on record) of a body that cannot be masked while rules apply.
#[allow(clippy::result_large_err)] // the answer itself, once per request
fn stage(
    answer: &mut Answer<'_>,
    set: &Arc<PolicySet>,
    parts: &Parts,
    first: &[u8],
    ended: bool,
) -> Result<Stage, Response<ProxyBody>> {
    let representation = representation(&parts.headers, first, ended);
    let why = match &representation {
        Representation::Empty => None,
        Representation::Json { .. } => None,
        Representation::Text if set.json_paths().is_empty() => None,
        Representation::Text => Some(
            "jsonPaths masking applies, and JSON paths cannot be found in it; ask for application/json"
                .to_string(),
        ),
        Representation::Unmaskable(why) => Some(why.clone()),
    };
    if let Some(why) = why {
        let content_type = parts
            .headers
            .get(header::CONTENT_TYPE)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
        let message = format!(
            "the upstream of Connection {} answered {} with a {} body that Sluice cannot mask ({why}); masking rules apply, so it is not passed on",
            answer.ctx.name,
            parts.status.as_u16(),
            content_type.as_deref().unwrap_or("unlabelled"),
        );
        answer.failed(StatusCode::BAD_GATEWAY, message.clone());
        return Err(json_response(
            StatusCode::BAD_GATEWAY,
            serde_json::json!({
                "error": "unmaskableResponse",
                "upstreamStatus": parts.status.as_u16(),
                "contentType": content_type,
                "message": message,
            }),
        ));
    }
    Ok(match representation {
        Representation::Json { lines: false } => Stage::Json(JsonStreamMasker::new(set.clone())),
        Representation::Json { lines: true } => Stage::Json(JsonStreamMasker::lines(set.clone())),
        Representation::Text => Stage::Text(TextMasker::new(set.clone())),
        _ => Stage::Pass,
    })
}
