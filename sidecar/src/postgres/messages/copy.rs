//! CopyInResponse / CopyOutResponse and CopyData.

use super::{Cursor, MessageError};

/// The overall format of a COPY (0 text/csv, 1 binary) from a Copy*Response body.
pub fn overall_format(body: &[u8]) -> Result<u8, MessageError> {
    Cursor::new(body, "CopyResponse").u8()
}
