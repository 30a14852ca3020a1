//! Streaming detector masking of textual response bodies that are not JSON
//! (XML, CSV, HTML, server-sent events, plain text): the policy's detectors
//! run over each line as it completes, findings are masked with the
//! detectors' masker, and the line is passed on. Memory is bounded by the
//! longest line ([`MAX_LINE`]); a longer line, or bytes that are not UTF-8,
//! end the response (the caller cuts it off) rather than pass text that was
//! not searched.

use std::borrow::Cow;
use std::sync::Arc;

use sluice_policy::detectors::{DetectorSet, Finding};
use sluice_policy::engine::PolicySet;
use sluice_policy::http::percent_decoded;

/// The longest line searched; a longer one cannot be masked.
pub const MAX_LINE: usize = 1 << 20;

/// Why a text body could not be masked.
#[derive(Debug, thiserror::Error)]
pub enum TextMaskError {
    /// A line longer than [`MAX_LINE`].
    #[error(
        "the upstream's text response has a line longer than 1 MiB at byte {0}; Sluice stopped the response rather than pass text it could not search"
    )]
    LineTooLong(u64),
    /// Not UTF-8.
    #[error(
        "the upstream's text response is not UTF-8 at byte {0}; Sluice stopped the response rather than pass text it could not search"
    )]
    NotUtf8(u64),
}

/// The masker of one textual response body.
pub struct TextMasker {
    set: Arc<PolicySet>,
    line: Vec<u8>,
    offset: u64,
    masked: u64,
    /// `masked` by masking rule (the detectors').
    counts: crate::masking::MaskCounts,
}

impl TextMasker {
    /// A masker with the detectors of `set`.
    pub fn new(set: Arc<PolicySet>) -> Self {
        TextMasker {
            set,
            line: Vec::new(),
            offset: 0,
            masked: 0,
            counts: Default::default(),
        }
    }

    /// How many findings were masked so far.
    pub fn masked(&self) -> u64 {
        self.masked
    }

    /// [`TextMasker::masked`] by masking rule, as the audit records them.
    pub fn masks(&self) -> Vec<sluice_policy::audit::AuditMaskCount> {
        self.counts.for_audit(&self.set)
    }

    /// Masks the next chunk, appending complete lines to `out`.
    pub fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<(), TextMaskError> {
        let mut rest = input;
        while let Some(nl) = memchr::memchr(b'\n', rest) {
            self.line.extend_from_slice(&rest[..=nl]);
            rest = &rest[nl + 1..];
            self.flush(out)?;
        }
        self.line.extend_from_slice(rest);
        if self.line.len() > MAX_LINE {
            return Err(TextMaskError::LineTooLong(self.offset));
        }
        Ok(())
    }

    /// Ends the body: the last line is masked.
    pub fn finish(&mut self, out: &mut Vec<u8>) -> Result<(), TextMaskError> {
        self.flush(out)
    }

    fn flush(&mut self, out: &mut Vec<u8>) -> Result<(), TextMaskError> {
        if self.line.len() > MAX_LINE {
            return Err(TextMaskError::LineTooLong(self.offset));
        }
        let line = std::mem::take(&mut self.line);
        let text = std::str::from_utf8(&line)
            .map_err(|e| TextMaskError::NotUtf8(self.offset + e.valid_up_to() as u64))?;
        self.offset += line.len() as u64;
        match self.set.detectors() {
            Some((detectors, masker)) => {
                let (text, findings) = find_decoded(detectors, text);
                if findings.is_empty() {
                    out.extend_from_slice(&line);
                } else {
                    self.masked += findings.len() as u64;
                    let rule = self.set.detectors_indexed().map(|(_, m)| m);
                    for _ in &findings {
                        self.counts.add(rule);
                    }
                    out.extend_from_slice(masker.mask_findings(&text, &findings).as_bytes());
                }
            }
            None => out.extend_from_slice(&line),
        }
        self.line = line;
        self.line.clear();
        Ok(())
    }
}

/// What the detectors find in `text`, and the text they found it in:
/// `text` itself, or, when it has percent-escapes and its decoded form
/// holds findings, that form (a `Location: /users/ann%40example.com`, a
/// `next=%34111…` reads as the value to any URL decoder). The caller masks
/// the findings in the text returned, so a value with a finding leaves
/// decoded, masked.
pub(super) fn find_decoded<'a>(
    detectors: &DetectorSet,
    text: &'a str,
) -> (Cow<'a, str>, Vec<Finding>) {
    if let Some(decoded) = percent_decoded(text) {
        let findings = detectors.find(&decoded);
        if !findings.is_empty() {
            return (Cow::Owned(decoded), findings);
        }
    }
    let findings = detectors.find(text);
    (Cow::Borrowed(text), findings)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_escapes_are_undone_a_bounded_number_of_times() {
        assert_eq!(percent_decoded("plain"), None);
        assert_eq!(percent_decoded("100%"), None);
        assert_eq!(percent_decoded("%zz%4"), None);
        assert_eq!(percent_decoded("a%40b").as_deref(), Some("a@b"));
        assert_eq!(percent_decoded("a%2540b").as_deref(), Some("a@b"));
        assert_eq!(percent_decoded("%25252540").as_deref(), Some("%40"));
        assert_eq!(percent_decoded("%ff").as_deref(), Some("\u{fffd}"));
        assert_eq!(percent_decoded("caf%C3%A9").as_deref(), Some("café"));
    }
}
