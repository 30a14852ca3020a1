//! Request paths and query strings: percent-decoding and normalisation.

use super::PathError;

/// The decoded `name=value` pairs of a raw query (`+` is a space; a malformed
/// escape is kept as written).
pub(super) fn parse_query(raw: &str) -> Vec<(String, String)> {
    raw.split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (decode_query_part(k), decode_query_part(v))
        })
        .collect()
}

fn decode_query_part(s: &str) -> String {
    let plus = s.replace('+', " ");
    match percent_decode(&plus) {
        Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
        Err(()) => plus,
    }
}

/// Decodes every `%XX`; `Err` on a `%` not followed by two hex digits.
pub(super) fn percent_decode(s: &str) -> Result<Vec<u8>, ()> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hi = b.get(i + 1).and_then(|c| (*c as char).to_digit(16));
            let lo = b.get(i + 2).and_then(|c| (*c as char).to_digit(16));
            match (hi, lo) {
                (Some(hi), Some(lo)) => {
                    // Both digits are < 16, so this fits in a byte.
                    out.push(u8::try_from(hi * 16 + lo).map_err(|_| ())?);
                    i += 3;
                }
                _ => return Err(()),
            }
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    Ok(out)
}

/// How many times [`percent_decoded`] undoes percent-encoding (`%2540` is
/// `%40` is `@`).
const DECODE_ROUNDS: usize = 3;

/// `text` with its percent-escapes decoded (up to three times, as servers
/// and applications that decode again would read it; bytes that do not form
/// UTF-8 read as U+FFFD), `None` when it has none.
pub fn percent_decoded(text: &str) -> Option<String> {
    let mut current: std::borrow::Cow<'_, str> = std::borrow::Cow::Borrowed(text);
    let mut changed = false;
    for _ in 0..DECODE_ROUNDS {
        let bytes = current.as_bytes();
        if !bytes
            .windows(3)
            .any(|w| w[0] == b'%' && w[1].is_ascii_hexdigit() && w[2].is_ascii_hexdigit())
        {
            break;
        }
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            let hex = |b: u8| (b as char).to_digit(16);
            if bytes[i] == b'%'
                && let (Some(h), Some(l)) = (
                    bytes.get(i + 1).copied().and_then(hex),
                    bytes.get(i + 2).copied().and_then(hex),
                )
            {
                // Both digits are < 16: the sum fits in a byte.
                out.push(u8::try_from(h * 16 + l).unwrap_or(b'%'));
                i += 3;
            } else {
                out.push(bytes[i]);
                i += 1;
            }
        }
        current = std::borrow::Cow::Owned(String::from_utf8_lossy(&out).into_owned());
        changed = true;
    }
    changed.then(|| current.into_owned())
}

/// The sidecar's answer (400 `ambiguousPath`) to a request whose path is
/// ambiguous.
pub fn path_refusal(why: &PathError) -> String {
    format!(
        "Sluice refused the request: {why}; servers would not agree on the path, so no rule can decide it. Send the path plainly"
    )
}

/// The path as the rules see it (see the module documentation), or why it is
/// ambiguous. Requests with an ambiguous path should be refused before any rule
/// is consulted.
pub fn normalize_path(raw: &str) -> Result<String, PathError> {
    Ok(decided(&path_segments(raw)?, raw))
}

/// The path to send upstream for `raw`: exactly the path the rules decided
/// ([`normalize_path`]), each segment percent-encoded again where RFC 3986
/// needs it (so the upstream decodes it to the same segments), and the
/// trailing slash kept (`/entries/1/` is decided as `/entries/1`).
pub fn forward_path(raw: &str) -> Result<String, PathError> {
    Ok(forwarded(&path_segments(raw)?, raw))
}

/// [`normalize_path`] and [`forward_path`] of `raw`, the path decoded once.
pub fn decided_and_forwarded(raw: &str) -> Result<(String, String), PathError> {
    RequestPath::parse(raw).map(|p| (p.decided, p.forwarded))
}

/// A request path decoded once: as the rules decide it ([`normalize_path`])
/// and as it is forwarded ([`forward_path`]). Made only from the raw path,
/// so whoever holds one holds the path its rules must see; deciding with it
/// ([`crate::engine::PolicySet::decide_http_at`]) does not decode the path
/// again for every policy and rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestPath {
    decided: String,
    forwarded: String,
    /// The reading of a server that routes paths in any case
    /// ([`RequestPath::any_case`]): globs match it in any case too.
    any_case: bool,
}

impl RequestPath {
    /// The path `raw` (as received, without its query), or why it is
    /// ambiguous.
    pub fn parse(raw: &str) -> Result<Self, PathError> {
        let segments = path_segments(raw)?;
        Ok(RequestPath {
            decided: decided(&segments, raw),
            forwarded: forwarded(&segments, raw),
            any_case: false,
        })
    }

    /// The path as a server that routes in any case reads it (Express by
    /// default, ASP.NET, IIS): in lower case, and path globs match it in
    /// any case (`/v1/Admin/**` covers `/v1/admin/x` and `/V1/ADMIN/x`).
    pub fn any_case(&self) -> RequestPath {
        RequestPath {
            decided: self.decided.to_ascii_lowercase(),
            forwarded: self.forwarded.to_ascii_lowercase(),
            any_case: true,
        }
    }

    /// Whether this is a path's any-case reading.
    pub fn is_any_case(&self) -> bool {
        self.any_case
    }

    /// The path as the rules decide it ([`normalize_path`]).
    pub fn decided(&self) -> &str {
        &self.decided
    }

    /// The path to send upstream ([`forward_path`]).
    pub fn forwarded(&self) -> &str {
        &self.forwarded
    }
}

fn decided(segments: &[String], raw: &str) -> String {
    let mut out = String::with_capacity(raw.len() + 1);
    if segments.is_empty() {
        out.push('/');
    }
    for s in segments {
        out.push('/');
        out.push_str(s);
    }
    out
}

fn forwarded(segments: &[String], raw: &str) -> String {
    let mut out = String::with_capacity(raw.len() + 1);
    for s in segments {
        out.push('/');
        for b in s.bytes() {
            if b.is_ascii_alphanumeric() || b"-._~!$&'()*+,=:@".contains(&b) {
                out.push(char::from(b));
            } else {
                out.push_str(&format!("%{b:02X}"));
            }
        }
    }
    if segments.is_empty() || raw.ends_with('/') {
        out.push('/');
    }
    out
}

/// The decoded segments of a path, dot-segments resolved; see the module
/// documentation for what is refused.
fn path_segments(raw: &str) -> Result<Vec<String>, PathError> {
    if raw.contains(';') {
        return Err(PathError::PathParameter);
    }
    let rb = raw.as_bytes();
    let hidden = rb.windows(3).any(|w| {
        w[0] == b'%'
            && matches!(
                [w[1].to_ascii_uppercase(), w[2].to_ascii_uppercase()],
                [b'2', b'F'] | [b'5', b'C'] | [b'3', b'B']
            )
    });
    if hidden {
        return Err(PathError::EncodedSeparator);
    }
    let bytes = percent_decode(raw).map_err(|()| PathError::MalformedEscape)?;
    let decoded = String::from_utf8(bytes).map_err(|_| PathError::InvalidUtf8)?;
    if decoded.chars().any(|c| c.is_control() || c == '\\') {
        return Err(PathError::ForbiddenCharacter);
    }
    let db = decoded.as_bytes();
    let double = db
        .windows(3)
        .any(|w| w[0] == b'%' && w[1].is_ascii_hexdigit() && w[2].is_ascii_hexdigit());
    if double {
        return Err(PathError::DoubleEncoded);
    }
    let mut segments: Vec<String> = Vec::new();
    for segment in decoded.split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                if segments.pop().is_none() {
                    return Err(PathError::AboveRoot);
                }
            }
            s if padded(s) => return Err(PathError::PaddedSegment),
            s => segments.push(s.to_string()),
        }
    }
    Ok(segments)
}

/// Whether a segment (not `.` or `..`) begins or ends with white space or
/// ends with a dot: servers drop such padding (Spring's AntPathMatcher
/// trims tokens, .NET's `Trim`, Windows and IIS drop trailing dots and
/// spaces), so `/export%20/` runs `/export/` there and `/export /` elsewhere.
fn padded(segment: &str) -> bool {
    segment.ends_with('.')
        || segment.starts_with(char::is_whitespace)
        || segment.ends_with(char::is_whitespace)
}

// === request grammar ===
