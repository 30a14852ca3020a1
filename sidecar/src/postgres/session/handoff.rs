//! The expectations the client loop hands the server loop ([`Expect`]), in
//! order: a queue the two share, which wakes the server loop only when an
//! expectation needs it before the upstream answers anything.
//!
//! Both loops run in one task. A channel that woke its receiver on every
//! send made the task poll both loops once more for every statement (the
//! client loop wakes its own task), although the server loop has nothing to
//! do with a statement's expectation until the upstream answers it, and that
//! answer wakes it anyway (#22: the per-statement path). So the expectations
//! that always go upstream right after they are handed over (a simple query,
//! the messages of an extended-protocol group and its Sync) wake nothing;
//! every other one (a refusal the sidecar answers itself, a masking switch
//! the client loop may wait for, the sidecar's own statements) wakes the
//! server loop as a channel would.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Poll, Waker};

use super::expect::Expect;

#[derive(Default)]
struct Shared {
    items: VecDeque<Expect>,
    /// The server loop's waker, while it waits for expectations.
    waker: Option<Waker>,
}

/// One end of the queue (the client loop's and the server loop's share it).
#[derive(Clone, Default)]
pub(super) struct Handoff(Arc<Mutex<Shared>>);

impl Handoff {
    fn shared(&self) -> MutexGuard<'_, Shared> {
        // Nothing panics while holding it; a poisoned lock's queue is whole.
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Hands `e` over, waking the server loop unless the upstream is about
    /// to be sent what `e` expects (see [`wakes`]).
    pub(super) fn send(&self, e: Expect) {
        let waker = {
            let mut shared = self.shared();
            let wake = wakes(&e);
            shared.items.push_back(e);
            if wake { shared.waker.take() } else { None }
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    /// Moves every expectation handed over so far to the back of `queue`.
    pub(super) fn drain_into(&self, queue: &mut VecDeque<Expect>) {
        let mut shared = self.shared();
        if !shared.items.is_empty() {
            queue.append(&mut shared.items);
        }
    }

    /// Ready once an expectation is waiting to be taken.
    pub(super) fn ready(&self) -> impl Future<Output = ()> + '_ {
        std::future::poll_fn(move |cx| {
            let mut shared = self.shared();
            if !shared.items.is_empty() {
                return Poll::Ready(());
            }
            if !shared
                .waker
                .as_ref()
                .is_some_and(|w| w.will_wake(cx.waker()))
            {
                shared.waker = Some(cx.waker().clone());
            }
            Poll::Pending
        })
    }
}

/// Whether handing over `e` wakes the server loop: not for what the client
/// loop forwards upstream right after handing it over (the server loop
/// takes it when the answer comes); for everything else, which the server
/// loop may have to act on (or settle for [`super::ClientLoop::wait_answered`])
/// with nothing coming from the upstream.
fn wakes(e: &Expect) -> bool {
    !matches!(
        e,
        Expect::Simple(_)
            | Expect::ParseComplete(_)
            | Expect::BindComplete(_)
            | Expect::Describe { .. }
            | Expect::Execute(_)
            | Expect::CloseComplete
            | Expect::Sync
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::{Context, Wake};

    struct Count(AtomicUsize);

    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// Expectations arrive in order; a refusal (or a masking switch) wakes
    /// the waiting server loop, a forwarded statement's expectation does not.
    #[test]
    fn only_what_the_server_loop_must_act_on_alone_wakes_it() {
        let handoff = Handoff::default();
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let waker = Waker::from(count.clone());
        let mut cx = Context::from_waker(&waker);
        let mut ready = Box::pin(handoff.ready());
        assert!(ready.as_mut().poll(&mut cx).is_pending());
        handoff.send(Expect::Sync);
        handoff.send(Expect::CloseComplete);
        assert_eq!(count.0.load(Ordering::SeqCst), 0, "forwarded: no wake");
        assert!(ready.as_mut().poll(&mut cx).is_ready());
        let mut queue = VecDeque::new();
        handoff.drain_into(&mut queue);
        assert!(matches!(queue.pop_front(), Some(Expect::Sync)));
        assert!(matches!(queue.pop_front(), Some(Expect::CloseComplete)));
        let mut ready = Box::pin(handoff.ready());
        assert!(ready.as_mut().poll(&mut cx).is_pending());
        handoff.send(Expect::Synthetic {
            bytes: bytes::Bytes::new(),
            rfq: true,
            in_group: false,
        });
        assert_eq!(count.0.load(Ordering::SeqCst), 1, "a refusal wakes");
        assert!(ready.as_mut().poll(&mut cx).is_ready());
        handoff.drain_into(&mut queue);
        assert!(matches!(queue.pop_front(), Some(Expect::Synthetic { .. })));
        assert!(queue.is_empty());
    }
}
