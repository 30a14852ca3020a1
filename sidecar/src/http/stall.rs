//! Bodies that must keep moving: [`Stall`], the clock of a body that fails
//! when nothing arrives for a while, and [`StallGuard`], the application's
//! request body streamed upstream, cut off with an error when nothing
//! arrives for the upstream timeout. The upstream's response body keeps
//! the same clock ([`super::response::ResponseBody`]).

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

use super::BoxError;

/// The clock of a body that must keep moving: it runs while the body waits
/// and starts again whenever something arrives. Armed at the first wait (a
/// body whose pieces are there at once costs no timer).
pub(super) struct Stall {
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
    after: Duration,
}

impl Stall {
    /// A clock that runs out after `after` without anything arriving.
    pub(super) fn new(after: Duration) -> Self {
        Stall { sleep: None, after }
    }

    /// The body waits: whether nothing has arrived for [`Stall::after`]
    /// (else the task is woken when that time comes).
    pub(super) fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        let after = self.after;
        let sleep = self
            .sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(after)));
        sleep.as_mut().poll(cx).is_ready()
    }

    /// Something arrived: the clock starts again.
    pub(super) fn moved(&mut self) {
        if let Some(sleep) = self.sleep.as_mut() {
            sleep
                .as_mut()
                .reset(tokio::time::Instant::now() + self.after);
        }
    }

    /// How long the body may wait.
    pub(super) fn after(&self) -> Duration {
        self.after
    }
}

/// A request body that fails when the application sends nothing for
/// `after` (a stalled upload must not hold an upstream connection forever).
pub(super) struct StallGuard<B> {
    inner: B,
    stall: Stall,
    what: &'static str,
}

impl<B> StallGuard<B> {
    pub(super) fn new(inner: B, after: Duration, what: &'static str) -> Self {
        StallGuard {
            inner,
            stall: Stall::new(after),
            what,
        }
    }
}

impl<B> Body for StallGuard<B>
where
    B: Body<Data = Bytes, Error = BoxError> + Unpin,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Pending => {
                if this.stall.expired(cx) {
                    let message = format!(
                        "{} stalled: nothing arrived for {} ms",
                        this.what,
                        this.stall.after().as_millis()
                    );
                    tracing::warn!("{message}");
                    return Poll::Ready(Some(Err(message.into())));
                }
                Poll::Pending
            }
            ready => {
                this.stall.moved();
                ready
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
