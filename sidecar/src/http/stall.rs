//! A body that must keep moving ([`StallGuard`]): the application's request
//! body streamed upstream is cut off, with an error, when nothing arrives
//! for the upstream timeout.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

use super::BoxError;

/// A request body that fails when the application sends nothing for
/// `after` (a stalled upload must not hold an upstream connection forever).
pub(super) struct StallGuard<B> {
    inner: B,
    /// Armed at the first wait.
    stall: Option<Pin<Box<tokio::time::Sleep>>>,
    after: Duration,
    what: &'static str,
}

impl<B> StallGuard<B> {
    pub(super) fn new(inner: B, after: Duration, what: &'static str) -> Self {
        StallGuard {
            inner,
            stall: None,
            after,
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
                let after = this.after;
                let stall = this
                    .stall
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(after)));
                if stall.as_mut().poll(cx).is_ready() {
                    let message = format!(
                        "{} stalled: nothing arrived for {} ms",
                        this.what,
                        this.after.as_millis()
                    );
                    tracing::warn!("{message}");
                    return Poll::Ready(Some(Err(message.into())));
                }
                Poll::Pending
            }
            ready => {
                if let Some(stall) = this.stall.as_mut() {
                    stall
                        .as_mut()
                        .reset(tokio::time::Instant::now() + this.after);
                }
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
