//! Streaming detector masking of textual response bodies that are not JSON
//! (XML, CSV, HTML, server-sent events, plain text): the policy's detectors
//! run over each line as it completes, findings are masked with the
//! detectors' masker, and the line is passed on. Memory is bounded by the
//! longest line ([`MAX_LINE`]); a longer line, or bytes that are not UTF-8,
//! end the response (the caller cuts it off) rather than pass text that was
//! not searched.

use std::sync::Arc;

use sluice_policy::engine::PolicySet;

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
                let findings = detectors.find(text);
                if findings.is_empty() {
                    out.extend_from_slice(&line);
                } else {
                    self.masked += findings.len() as u64;
                    let rule = self.set.detectors_indexed().map(|(_, m)| m);
                    for _ in &findings {
                        self.counts.add(rule);
                    }
                    out.extend_from_slice(masker.mask_findings(text, &findings).as_bytes());
                }
            }
            None => out.extend_from_slice(&line),
        }
        self.line = line;
        self.line.clear();
        Ok(())
    }
}
