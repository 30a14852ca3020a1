//! The places audit lines are written to ([`AuditSink`]: the audit file,
//! stdout), how a failed write is cut back to the last whole line, and how
//! a sink that a crashed writer left inside a line is written after.

use std::fs::File;
use std::io::{self, Write};
use std::path::PathBuf;

use super::{AuditError, Forwarded};

/// Where audit lines are written: the audit file or stdout. A regular file
/// can be cut back to its last whole line after a failed write; a pipe
/// cannot, and its writes resume where the failed one stopped.
pub trait AuditSink: Send {
    /// Writes some of `buf` (as [`Write::write`]).
    fn write(&mut self, buf: &[u8]) -> io::Result<usize>;
    /// Cuts the sink back to `len` bytes and writes on from there; `Ok(false)`
    /// when it cannot be cut (a pipe, a terminal, a device).
    fn truncate(&mut self, len: u64) -> io::Result<bool>;
    /// Its length now, when it can be cut back.
    fn cut_len(&mut self) -> io::Result<Option<u64>>;
    /// Whether what it already holds ends inside a line (its last byte is
    /// not a newline: a line torn by a crash of the writer before). `false`
    /// for an empty sink and one that is not a regular file.
    fn ends_inside_a_line(&mut self) -> io::Result<bool> {
        Ok(false)
    }
}

impl AuditSink for File {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        Write::write(self, buf)
    }

    fn truncate(&mut self, len: u64) -> io::Result<bool> {
        if !self.metadata()?.is_file() {
            return Ok(false);
        }
        self.set_len(len)?;
        // Without O_APPEND (stdout redirected by a shell) the offset must
        // follow; with it the seek is harmless.
        io::Seek::seek(self, io::SeekFrom::Start(len))?;
        Ok(true)
    }

    fn cut_len(&mut self) -> io::Result<Option<u64>> {
        let meta = self.metadata()?;
        Ok(meta.is_file().then_some(meta.len()))
    }

    fn ends_inside_a_line(&mut self) -> io::Result<bool> {
        use std::os::unix::fs::FileExt;
        let meta = self.metadata()?;
        if !meta.is_file() || meta.len() == 0 {
            return Ok(false);
        }
        let mut last = [0u8; 1];
        let at = meta.len() - 1;
        let read = self.read_at(&mut last, at).or_else(|_| {
            // Not opened for reading (stdout redirected to a file by a
            // shell): the same file, opened again to read (Linux).
            use std::os::fd::AsRawFd;
            File::open(format!("/proc/self/fd/{}", self.as_raw_fd()))?.read_at(&mut last, at)
        });
        // Unreadable either way: written on as before.
        Ok(matches!(read, Ok(1)) && last[0] != b'\n')
    }
}

/// One sink and how much of the pending lines it has taken.
pub(super) struct Sink {
    /// `stdout` or the file's path, for errors.
    name: Option<PathBuf>,
    out: Box<dyn AuditSink>,
    /// Bytes of the log's pending lines this sink has taken.
    pub(super) done: usize,
    /// The sink's length at `done`, when it can be cut back.
    len: Option<u64>,
    /// A failed write left a partial line that could not be cut yet: it is
    /// cut before anything else is written.
    torn: bool,
}

impl Sink {
    /// A sink writing after what `out` holds. When that ends inside a line
    /// (the last line of a writer that crashed mid-write), a newline ends
    /// it first, so that the first line written here is a line of its own:
    /// the torn line stays as it was, for `audit verify` to report as torn
    /// (not a line glued to this stream's first, which reads as tampering).
    pub(super) fn new(name: Option<PathBuf>, mut out: Box<dyn AuditSink>) -> io::Result<Self> {
        if out.ends_inside_a_line()? {
            let mut newline: &[u8] = b"\n";
            while !newline.is_empty() {
                match out.write(newline) {
                    Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                    Ok(n) => newline = &newline[n..],
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
        }
        let len = out.cut_len()?;
        Ok(Sink {
            name,
            out,
            done: 0,
            len,
            torn: false,
        })
    }

    /// Writes `pending[done..]`. On failure a sink that can be cut back is
    /// cut to its last whole line, and takes the lines again next time.
    pub(super) fn take(&mut self, pending: &[u8]) -> io::Result<()> {
        if self.torn
            && let Some(len) = self.len
        {
            self.out.truncate(len)?;
            self.torn = false;
        }
        let start = self.done;
        while self.done < pending.len() {
            match self.out.write(&pending[self.done..]) {
                Ok(0) => {
                    return self.failed(start, io::ErrorKind::WriteZero.into());
                }
                Ok(n) => self.done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return self.failed(start, e),
            }
        }
        if let Some(len) = &mut self.len {
            *len += (self.done - start) as u64;
        }
        Ok(())
    }

    fn failed(&mut self, start: usize, e: io::Error) -> io::Result<()> {
        if let Some(len) = self.len {
            // Cut the partial line: the lines are taken again, whole.
            self.done = start;
            match self.out.truncate(len) {
                Ok(true) => {}
                Ok(false) => self.len = None,
                Err(_) => self.torn = true,
            }
        }
        Err(e)
    }

    pub(super) fn error(&self, source: io::Error) -> AuditError {
        match &self.name {
            None => AuditError::Stdout(source),
            Some(path) => AuditError::File {
                path: path.clone(),
                source,
            },
        }
    }
}

impl super::AuditLog {
    /// Hands the line appended at `start` of `pending` to the forward
    /// channel, when there is one.
    pub(super) fn forward_line(
        &self,
        pending: &[u8],
        start: usize,
        seq: u64,
        hash: String,
        connection: Option<String>,
    ) {
        let Some(tx) = &self.forward else { return };
        // The line just appended, less its newline; only ASCII-safe JSON
        // is ever written, so it is UTF-8.
        let line = &pending[start..pending.len().saturating_sub(1)];
        let sent = std::str::from_utf8(line).ok().is_some_and(|line| {
            tx.try_send(Forwarded {
                line: line.into(),
                connection,
                seq,
                hash,
            })
            .is_ok()
        });
        if !sent {
            self.forward_dropped
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A file a crashed writer left inside a line is written after from a
    /// new line; a file that ends a line, and an empty one, get nothing.
    #[test]
    fn a_file_left_inside_a_line_is_written_after_from_a_new_line() {
        let dir = tempfile::tempdir().unwrap();
        // Also through a handle that cannot read (stdout a shell redirected).
        for readable in [true, false] {
            for (before, after) in [
                ("{\"seq\":1}\n{\"se", "{\"seq\":1}\n{\"se\n{\"seq\":9}\n"),
                ("{\"seq\":1}\n", "{\"seq\":1}\n{\"seq\":9}\n"),
                ("", "{\"seq\":9}\n"),
            ] {
                let path = dir.path().join("audit.jsonl");
                std::fs::write(&path, before).unwrap();
                let file = std::fs::OpenOptions::new()
                    .append(true)
                    .read(readable)
                    .open(&path)
                    .unwrap();
                let mut sink = Sink::new(Some(path.clone()), Box::new(file)).unwrap();
                sink.take(b"{\"seq\":9}\n").unwrap();
                assert_eq!(
                    std::fs::read_to_string(&path).unwrap(),
                    after,
                    "{before:?}, readable {readable}"
                );
                // Cut back after a failed write: to the new line, not into the torn one.
                assert_eq!(sink.len, Some(after.len() as u64));
            }
        }
    }
}
