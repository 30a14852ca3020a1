//! Response bodies: what they are ([`Representation`]), scrubbed of
//! credentials and masked as they stream ([`ResponseBody`]), cut off when
//! the upstream stalls, with their result recorded at the end.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::StatusCode;
use http::header::{self, HeaderMap};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use sluice_policy::audit::AuditOutcome;

use super::BoxError;
use super::body::media_type;
use super::record::RequestCommand;
use super::scrub::{ScrubStream, Secrets};
use super::stall::Stall;
use super::stream_mask::JsonStreamMasker;
use super::text_mask::TextMasker;
use super::upstream::error_chain;
use crate::audit::{AuditLog, SessionInfo};
use crate::metrics::Metrics;

/// The most bytes read to find a body's first non-whitespace byte.
const SNIFF_LIMIT: usize = 64 * 1024;

/// What the result event of a request needs, written once when the body
/// ends (or the client goes away).
pub(super) struct ResultRecord {
    pub(super) audit: Arc<AuditLog>,
    pub(super) metrics: Arc<Metrics>,
    pub(super) session: Arc<SessionInfo>,
    pub(super) command: RequestCommand,
    pub(super) started: Instant,
    pub(super) status: StatusCode,
    pub(super) bytes: u64,
    pub(super) error: Option<String>,
    /// The body as the workload receives it, when the session is recorded.
    pub(super) recorder: Option<crate::recording::BodyRecorder>,
}

/// What happens to a response body's bytes after credentials are scrubbed.
pub(super) enum Stage {
    /// Passed on as they are.
    Pass,
    /// Masked as JSON (or JSON lines) by paths and detectors.
    Json(JsonStreamMasker),
    /// Masked as text by detectors.
    Text(TextMasker),
}

impl Stage {
    fn masked(&self) -> u64 {
        match self {
            Stage::Pass => 0,
            Stage::Json(m) => m.masked(),
            Stage::Text(m) => m.masked(),
        }
    }

    /// [`Stage::masked`] by masking rule (`outcome.masks`).
    fn masks(&self) -> Vec<sluice_policy::audit::AuditMaskCount> {
        match self {
            Stage::Pass => Vec::new(),
            Stage::Json(m) => m.masks(),
            Stage::Text(m) => m.masks(),
        }
    }
}

/// What a response body is, for masking.
#[derive(Debug)]
pub(super) enum Representation {
    /// No body.
    Empty,
    /// JSON (`lines`: documents one after another).
    Json { lines: bool },
    /// UTF-8 text that is not JSON: masked by detectors.
    Text,
    /// Cannot be masked (binary, another charset, an unreadable label): why.
    Unmaskable(String),
}

/// How many bytes of `b` are a UTF-8 byte-order mark.
fn bom_len(b: &[u8]) -> usize {
    if b.starts_with(&[0xEF, 0xBB, 0xBF]) {
        3
    } else {
        0
    }
}

/// What a response body is, from its headers and its first bytes
/// (`ended`: that is all of it). JSON behind another label (`text/plain`,
/// none), after a byte-order mark or not, is JSON.
pub(super) fn representation(headers: &HeaderMap, first: &[u8], ended: bool) -> Representation {
    use Representation::{Empty, Json, Text, Unmaskable};
    if ended && first.is_empty() {
        return Empty;
    }
    let mut types = headers.get_all(header::CONTENT_TYPE).iter();
    let label = types.next();
    if types.next().is_some() {
        return Unmaskable("it has more than one Content-Type".into());
    }
    let (mime, charset) = match label.map(media_type) {
        None => (None, None),
        Some(Some((m, c))) => (Some(m), c),
        Some(None) => return Unmaskable("its Content-Type cannot be read".into()),
    };
    if let Some(c) = charset
        && !matches!(c.as_ref(), "utf-8" | "utf8" | "us-ascii")
    {
        return Unmaskable(format!("its charset is {c}, and Sluice masks UTF-8 text"));
    }
    let utf16 = first.starts_with(&[0xFE, 0xFF])
        || first.starts_with(&[0xFF, 0xFE])
        || first.iter().take(4).any(|b| *b == 0);
    let sniffed_json = first[bom_len(first)..]
        .iter()
        .find(|b| !b.is_ascii_whitespace())
        .is_some_and(|b| matches!(b, b'{' | b'['));
    let found = match mime.as_deref() {
        Some("application/json" | "text/json") => Json { lines: false },
        Some(m) if m.starts_with("application/") && m.ends_with("+json") => Json { lines: false },
        Some(
            "application/x-ndjson"
            | "application/ndjson"
            | "application/jsonl"
            | "application/x-jsonl"
            | "application/jsonlines"
            | "application/x-jsonlines"
            | "application/json-seq",
        ) => Json { lines: true },
        None | Some("text/plain") if sniffed_json => Json { lines: true },
        None => match std::str::from_utf8(first) {
            Ok(_) => Text,
            // Cut inside a character at the end of what was read: still text.
            Err(e) if e.error_len().is_none() => Text,
            Err(_) => Unmaskable("it has no Content-Type and is not UTF-8 text".into()),
        },
        Some(m) if is_textual(m) => Text,
        Some(m) => Unmaskable(format!("{m} is not a textual type")),
    };
    match found {
        Json { .. } | Text if utf16 => {
            Unmaskable("it is UTF-16 or UTF-32 text, and Sluice masks UTF-8 text".into())
        }
        found => found,
    }
}

/// Types masked as text by detectors.
fn is_textual(mime: &str) -> bool {
    mime.starts_with("text/")
        || mime.ends_with("+xml")
        || matches!(
            mime,
            "application/xml"
                | "application/javascript"
                | "application/x-javascript"
                | "application/ecmascript"
                | "application/x-www-form-urlencoded"
                | "application/yaml"
                | "application/x-yaml"
                | "application/csv"
                | "application/graphql"
                | "application/sql"
        )
}

/// Whether the first bytes of a body say enough to choose how to mask it:
/// one that is not whitespace (after a byte-order mark), or [`SNIFF_LIMIT`].
pub(super) fn sniffed(got: &[u8]) -> bool {
    got.len() >= SNIFF_LIMIT || got[bom_len(got)..].iter().any(|b| !b.is_ascii_whitespace())
}

/// Reads the first bytes of a body while `need` says more are needed, up to
/// the end (`true`). Each frame must arrive within `timeout`. The first
/// frame is kept as it came (no copy); later ones are appended to it.
pub(super) async fn peek(
    body: &mut Incoming,
    timeout: Duration,
    need: impl Fn(&[u8]) -> bool,
) -> Result<(Bytes, bool), String> {
    let mut got = Bytes::new();
    while need(&got) {
        if body.is_end_stream() {
            return Ok((got, true));
        }
        let frame = tokio::time::timeout(timeout, body.frame())
            .await
            .map_err(|_| format!("nothing arrived for {} ms", timeout.as_millis()))?;
        match frame {
            None => return Ok((got, true)),
            Some(Err(e)) => return Err(error_chain(&e)),
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    got = if got.is_empty() {
                        data
                    } else {
                        let mut joined = Vec::with_capacity(got.len() + data.len());
                        joined.extend_from_slice(&got);
                        joined.extend_from_slice(&data);
                        Bytes::from(joined)
                    };
                }
            }
        }
    }
    Ok((got, body.is_end_stream()))
}

/// The response body: the upstream's, credentials scrubbed, masked when
/// masking applies, counted for audit and metrics.
pub(super) struct ResponseBody {
    pub(super) inner: Incoming,
    /// Runs out when the upstream sends nothing for the upstream timeout:
    /// the response is then cut off (the client sees the connection end)
    /// and audited.
    pub(super) stall: Stall,
    /// The Connection's credentials, scrubbed from every byte.
    pub(super) secrets: Option<Arc<Secrets>>,
    pub(super) scrub: ScrubStream,
    pub(super) stage: Stage,
    /// The first bytes, read before answering (see [`peek`]).
    pub(super) first: Option<Bytes>,
    /// The first bytes are the whole body: it is answered in one frame,
    /// and the upstream's body is not polled again.
    pub(super) whole: bool,
    /// The end of the body went through the stages.
    pub(super) ended: bool,
    pub(super) finished: bool,
    /// The upstream's trailers, held while what the stages still held at
    /// their arrival goes out first (a data frame after trailers is lost).
    pub(super) trailers: Option<HeaderMap>,
    pub(super) record: Option<ResultRecord>,
}

impl ResponseBody {
    fn write_result(&mut self) {
        let Some(mut r) = self.record.take() else {
            return;
        };
        let masked = self.stage.masked();
        r.metrics.masked(masked);
        let error = match (&r.error, self.finished) {
            (Some(e), _) => Some(e.clone()),
            (None, false) => Some("the client went away before the response ended".into()),
            (None, true) if r.status.as_u16() >= 400 => Some(format!("HTTP {}", r.status.as_u16())),
            (None, true) => None,
        };
        let scrubbed = self.scrub.scrubbed();
        let note = (scrubbed > 0).then(|| {
            format!(
                "the injected credential was scrubbed from the response body ({scrubbed} pieces)"
            )
        });
        let error = match (error, note) {
            (Some(e), Some(n)) => Some(format!("{e}; {n}")),
            (e, n) => e.or(n),
        };
        let outcome = AuditOutcome {
            rows: None,
            duration_ms: Some(r.started.elapsed().as_millis() as u64),
            error: error.map(|e| format!("{e}; status {}, {} bytes", r.status.as_u16(), r.bytes)),
            masked: (masked > 0).then_some(masked),
            masks: self.stage.masks(),
            recorded: r.recorder.map(crate::recording::BodyRecorder::finish),
        };
        if let Err(e) = r.command.record_result(&r.audit, &r.session, outcome) {
            tracing::error!(connection = %r.session.connection, client = %r.session.client, error = %e, "writing an audit result failed");
        }
    }

    /// Bytes handed to the client (scrubbed and masked): counted, and recorded
    /// when the session is.
    fn count(&mut self, sent: &[u8]) {
        if let Some(r) = self.record.as_mut() {
            r.bytes += sent.len() as u64;
            r.metrics.bytes_to_client(sent.len());
            if let Some(recorder) = r.recorder.as_mut() {
                recorder.feed(sent);
            }
        }
    }

    fn fail(&mut self, message: String) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if let Some(r) = self.record.as_mut() {
            let session = &r.session;
            tracing::warn!(connection = %session.connection, client = %session.client, "{message}");
            r.error = Some(message.clone());
        } else {
            tracing::warn!("{message}");
        }
        self.finished = true;
        self.write_result();
        Poll::Ready(Some(Err(message.into())))
    }

    /// Runs the next piece of the body (`end`: the last) through the
    /// scrubber and the stage; returns what the client may have now (the
    /// piece itself, uncopied, when nothing in it changes).
    fn transform(&mut self, data: Bytes, end: bool) -> Result<Bytes, String> {
        if self.ended {
            return Ok(Bytes::new());
        }
        self.ended = end;
        let bytes = match &self.secrets {
            Some(s) => self.scrub.feed(s, data, end),
            None => data,
        };
        let mut out = Vec::new();
        match &mut self.stage {
            Stage::Pass => return Ok(bytes),
            Stage::Json(m) => {
                out.reserve(bytes.len());
                m.feed(&bytes, &mut out).map_err(|e| e.to_string())?;
                if end {
                    m.finish(&mut out).map_err(|e| e.to_string())?;
                }
            }
            Stage::Text(m) => {
                out.reserve(bytes.len());
                m.feed(&bytes, &mut out).map_err(|e| e.to_string())?;
                if end {
                    m.finish(&mut out).map_err(|e| e.to_string())?;
                }
            }
        }
        Ok(Bytes::from(out))
    }

    /// The body's last frame `tail` (`None` when it is empty): the body is
    /// finished and its result recorded.
    fn last(&mut self, tail: Bytes) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.finished = true;
        self.count(&tail);
        self.write_result();
        if tail.is_empty() {
            return Poll::Ready(None);
        }
        Poll::Ready(Some(Ok(Frame::data(tail))))
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        if this.finished {
            return Poll::Ready(None);
        }
        if let Some(trailers) = this.trailers.take() {
            return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
        }
        if let Some(first) = this.first.take() {
            let whole = this.whole;
            match this.transform(first, whole) {
                Ok(out) if whole => return this.last(out),
                Ok(out) if out.is_empty() => {}
                Ok(out) => {
                    this.count(&out);
                    return Poll::Ready(Some(Ok(Frame::data(out))));
                }
                Err(e) => return this.fail(e),
            }
        }
        loop {
            match Pin::new(&mut this.inner).poll_frame(cx) {
                Poll::Pending => {
                    if this.stall.expired(cx) {
                        let message = format!(
                            "the upstream response body stalled: nothing arrived for {} ms; the response was cut off",
                            this.stall.after().as_millis()
                        );
                        return this.fail(message);
                    }
                    return Poll::Pending;
                }
                Poll::Ready(Some(Ok(frame))) => {
                    this.stall.moved();
                    let data = match frame.into_data() {
                        Ok(data) => data,
                        Err(frame) => match frame.into_trailers() {
                            Ok(mut trailers) => {
                                if let Some(s) = &this.secrets {
                                    s.scrub_headers(&mut trailers);
                                }
                                // The trailers end the body: what the
                                // scrubber and the masker still hold goes
                                // out before them.
                                let tail = match this.transform(Bytes::new(), true) {
                                    Ok(tail) => tail,
                                    Err(e) => return this.fail(e),
                                };
                                if tail.is_empty() {
                                    return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
                                }
                                this.trailers = Some(trailers);
                                this.count(&tail);
                                return Poll::Ready(Some(Ok(Frame::data(tail))));
                            }
                            // Neither data nor trailers: nothing to pass on.
                            Err(_) => continue,
                        },
                    };
                    // The hot path: nothing to scrub or mask.
                    if this.secrets.is_none() && matches!(this.stage, Stage::Pass) {
                        this.count(&data);
                        return Poll::Ready(Some(Ok(Frame::data(data))));
                    }
                    let end = this.inner.is_end_stream();
                    let out = match this.transform(data, end) {
                        Ok(out) => out,
                        Err(e) => return this.fail(e),
                    };
                    if out.is_empty() {
                        continue;
                    }
                    this.count(&out);
                    return Poll::Ready(Some(Ok(Frame::data(out))));
                }
                Poll::Ready(Some(Err(e))) => {
                    let message = format!("the upstream response broke off: {}", error_chain(&e));
                    return this.fail(message);
                }
                Poll::Ready(None) => {
                    return match this.transform(Bytes::new(), true) {
                        Ok(tail) => this.last(tail),
                        Err(e) => this.fail(e),
                    };
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.finished
    }

    fn size_hint(&self) -> SizeHint {
        // Scrubbing keeps the length; masking changes it.
        if !matches!(self.stage, Stage::Pass) {
            return SizeHint::default();
        }
        // The upstream's body, less what was read before answering.
        let inner = self.inner.size_hint();
        let Some(first) = self.first.as_ref() else {
            return inner;
        };
        let held = first.len() as u64;
        let mut hint = SizeHint::new();
        hint.set_lower(inner.lower().saturating_add(held));
        if let Some(upper) = inner.upper() {
            hint.set_upper(upper.saturating_add(held));
        }
        hint
    }
}

impl Drop for ResponseBody {
    fn drop(&mut self) {
        self.write_result();
    }
}
