//! The HTTP listener's bounds (everything a peer
//! controls is bounded): a connection cap per listener ([`ListenerSlots`]), a
//! header-read timeout (slowloris), an idle timeout between keep-alive
//! requests, and a graceful end on the sidecar's shutdown signal.
//!
//! hyper's own `header_read_timeout` is not used: hyper starts it as soon
//! as the connection waits for a request, so it would also cut every
//! keep-alive connection idle for longer than the header timeout, and the
//! idle timeout (60 s by default) could never be longer. Here a connection's
//! clock is read from what it does ([`Activity`]): from the accept, or from
//! the first byte after a response, the request's headers are due within
//! `http_header_timeout` (then the connection is dropped); a connection
//! that sends nothing after a response is closed after `http_idle_timeout`
//! (hyper's graceful shutdown, which closes an idle connection at once).

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::limits::{Limits, Refused};

/// A connection's state as its timeouts see it.
#[derive(Debug, Clone, Copy)]
struct State {
    /// Requests being served (their response not yet sent in full).
    in_flight: usize,
    /// When the current request's first byte arrived (or the connection
    /// was accepted) while no request was in flight.
    head_started: Option<Instant>,
    /// When the last response was sent in full.
    idle_since: Instant,
}

/// What one connection did, shared by its socket, its requests and its
/// timer.
///
/// Updating it wakes nobody: the timer reads it when its own sleep ends
/// (see [`timer`]). A watch channel here woke the connection's task two or
/// three times per request (each wake polls hyper's dispatcher again and
/// re-arms a timer), which cost keep-alive throughput for a bound that is
/// measured in seconds.
#[derive(Debug, Clone)]
pub(super) struct Activity(Arc<Mutex<State>>);

/// A request in flight; dropped with its response body.
pub(super) struct InFlight(Activity);

impl InFlight {
    /// `body`, holding this request in flight until it is sent in full (or
    /// dropped).
    pub(super) fn hold<B>(self, body: B) -> Held<B> {
        Held {
            body,
            _in_flight: self,
        }
    }
}

/// A response body and its request in flight ([`InFlight::hold`]).
pub(super) struct Held<B> {
    body: B,
    _in_flight: InFlight,
}

impl<B: http_body::Body + Unpin> http_body::Body for Held<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<B::Data>, B::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.update(|s| {
            s.in_flight = s.in_flight.saturating_sub(1);
            if s.in_flight == 0 {
                s.idle_since = Instant::now();
                s.head_started = None;
            }
        });
    }
}

impl Activity {
    fn new() -> Self {
        let now = Instant::now();
        Activity(Arc::new(Mutex::new(State {
            in_flight: 0,
            // The first request's headers are due from the accept.
            head_started: Some(now),
            idle_since: now,
        })))
    }

    /// Changes the state. A poisoned lock still holds a whole `State`
    /// (every update is a few assignments), so it is used as it is.
    fn update(&self, change: impl FnOnce(&mut State)) {
        let mut state = self
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        change(&mut state);
    }

    fn read(&self) -> State {
        *self
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A request's headers arrived.
    pub(super) fn request(&self) -> InFlight {
        self.update(|s| {
            s.in_flight += 1;
            s.head_started = None;
        });
        InFlight(self.clone())
    }

    fn bytes_read(&self) {
        self.update(|s| {
            if s.in_flight == 0 && s.head_started.is_none() {
                s.head_started = Some(Instant::now());
            }
        });
    }
}

/// Why a connection's timer ran out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expired {
    /// A request's headers did not arrive in time.
    Header,
    /// No request came after the last response.
    Idle,
}

/// When the timer must look at `s` next (at the latest one timeout — the
/// shorter of the two — from `now`), and why the connection has expired if
/// that moment has come.
fn next_look(
    s: &State,
    now: Instant,
    header: Duration,
    idle: Duration,
) -> (Instant, Option<Expired>) {
    let recheck = now + header.min(idle);
    let due = if s.in_flight > 0 {
        None
    } else if let Some(started) = s.head_started {
        Some((started + header, Expired::Header))
    } else {
        Some((s.idle_since + idle, Expired::Idle))
    };
    // Never sleep past the next look, even towards a deadline: what the
    // connection does meanwhile (a request ends, new headers start) may
    // bring another deadline closer.
    match due {
        Some((at, why)) if at <= recheck => (at, Some(why)),
        _ => (recheck, None),
    }
}

/// Resolves when `activity` overstays a bound (never while a request is in
/// flight).
///
/// Nothing wakes the timer; it looks at the state at least once per the
/// shorter timeout. That is exact: headers that start at `t` are due at
/// `t + header`, and the timer looks at the state at some moment in
/// `[t, t + header]`, sees them, and sleeps until exactly their deadline
/// (or fires at once if it passed); likewise a response that ends at `t`
/// is seen within `[t, t + idle]`. Activity only moves the other deadlines
/// later, which the look at the old deadline finds.
async fn timer(activity: Activity, header: Duration, idle: Duration) -> Expired {
    let sleep = tokio::time::sleep(header);
    let mut sleep = std::pin::pin!(sleep);
    loop {
        let now = Instant::now();
        let (at, expired) = next_look(&activity.read(), now, header, idle);
        if let Some(why) = expired
            && at <= now
        {
            return why;
        }
        sleep.as_mut().reset(at);
        sleep.as_mut().await;
    }
}

/// The client's socket, telling [`Activity`] when bytes arrive.
pub(super) struct Tracked {
    socket: TcpStream,
    activity: Activity,
}

impl AsyncRead for Tracked {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.socket).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.bytes_read();
        }
        polled
    }
}

impl AsyncWrite for Tracked {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.socket).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.socket).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.socket).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.socket).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.socket.is_write_vectored()
    }
}

/// Wraps an accepted socket.
pub(super) fn track(socket: TcpStream) -> (Tracked, Activity) {
    let activity = Activity::new();
    (
        Tracked {
            socket,
            activity: activity.clone(),
        },
        activity,
    )
}

/// Resolves once `signal` is true (never if its sender is gone).
pub(super) async fn shutdown(mut signal: watch::Receiver<bool>) {
    if signal.wait_for(|down| *down).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// Drives one connection `conn` (a hyper http1 connection over a
/// [`Tracked`] socket) within `limits`, shutting it down gracefully when
/// `signal` turns true: the request in flight is answered, then the
/// connection closes.
pub(super) async fn drive<S, B>(
    conn: hyper::server::conn::http1::Connection<hyper_util::rt::TokioIo<Tracked>, S>,
    activity: Activity,
    limits: &Limits,
    signal: watch::Receiver<bool>,
    (connection, peer): (&str, std::net::SocketAddr),
) where
    S: hyper::service::HttpService<hyper::body::Incoming, ResBody = B>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    B: http_body::Body + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let mut conn = std::pin::pin!(conn);
    // The connection is polled at every wake of its task (several a
    // request); the timer and the shutdown signal only when they fired.
    let mut timer = gated(timer(
        activity,
        limits.http_header_timeout,
        limits.http_idle_timeout,
    ));
    let mut down = gated(shutdown(signal));
    let (mut timing, mut draining) = (true, false);
    loop {
        tokio::select! {
            biased;
            ended = conn.as_mut() => {
                if let Err(e) = ended {
                    tracing::debug!(%connection, %peer, error = %e, "http connection ended with an error");
                }
                return;
            }
            why = &mut timer, if timing => match why {
                Expired::Header => {
                    tracing::info!(%connection, %peer, timeout_s = limits.http_header_timeout.as_secs_f64(), "client sent no complete request headers in time; closed");
                    return;
                }
                Expired::Idle => {
                    timing = false;
                    conn.as_mut().graceful_shutdown();
                }
            },
            () = &mut down, if !draining => {
                draining = true;
                conn.as_mut().graceful_shutdown();
            }
        }
    }
}

/// A future polled only on its first poll and after its own waker fired
/// ([`gated`]); otherwise its poll only notes the task to wake. A
/// connection's timer and shutdown signal are gated: polling them at every
/// wake of the connection's task (a timer entry and a watch channel looked
/// at several times a request) was a cost of every request. (futures-util's
/// `FuturesUnordered` does the same for a set of futures; it is not a
/// dependency of the sidecar, and this is all that is needed of it.)
pub(super) struct Gated<F> {
    future: Pin<Box<F>>,
    gate: Arc<Gate>,
    /// Wakes `gate`.
    waker: std::task::Waker,
}

/// Whether a gated future's waker fired, and the task to wake when it does.
struct Gate {
    woken: AtomicBool,
    task: Mutex<Option<std::task::Waker>>,
}

impl std::task::Wake for Gate {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::SeqCst);
        let task = self
            .task
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone();
        if let Some(task) = task {
            task.wake();
        }
    }
}

/// `future`, gated (see [`Gated`]).
pub(super) fn gated<F: Future>(future: F) -> Gated<F> {
    let gate = Arc::new(Gate {
        // The first poll polls the future (and so registers its waker).
        woken: AtomicBool::new(true),
        task: Mutex::new(None),
    });
    Gated {
        future: Box::pin(future),
        waker: std::task::Waker::from(gate.clone()),
        gate,
    }
}

impl<F: Future> Future for Gated<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = &mut *self;
        {
            // Noted before `woken` is read: a wake after the read finds it.
            let mut task = this
                .gate
                .task
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            if !task.as_ref().is_some_and(|t| t.will_wake(cx.waker())) {
                *task = Some(cx.waker().clone());
            }
        }
        if !this.gate.woken.swap(false, Ordering::SeqCst) {
            return Poll::Pending;
        }
        this.future
            .as_mut()
            .poll(&mut Context::from_waker(&this.waker))
    }
}

/// Answers a connection past the listener's bounds `503` with why, without
/// reading its request, and closes it.
pub(super) async fn refuse(mut socket: TcpStream, refused: Refused) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let body = serde_json::json!({"error": "too many connections", "message": refused.to_string()})
        .to_string();
    let response = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
         content-length: {}\r\nconnection: close\r\nretry-after: 1\r\n\r\n{body}",
        body.len()
    );
    let bound = Duration::from_secs(1);
    if let Ok(Ok(())) = tokio::time::timeout(bound, socket.write_all(response.as_bytes())).await {
        let _ = socket.shutdown().await;
        // Discard (a bounded amount of) what the client sent before closing,
        // so that the close does not reset the connection before the client
        // read the answer (a lingering close, as nginx does).
        let mut sink = [0u8; 4096];
        let until = Instant::now() + bound;
        let mut left = 64 * 1024usize;
        while left > 0 {
            match tokio::time::timeout_at(until, socket.read(&mut sink)).await {
                Ok(Ok(n)) if n > 0 => left = left.saturating_sub(n),
                _ => break,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER: Duration = Duration::from_secs(10);
    const IDLE: Duration = Duration::from_secs(60);

    fn state(in_flight: usize, head: Option<u64>, idle_since: u64, t0: Instant) -> State {
        State {
            in_flight,
            head_started: head.map(|s| t0 + Duration::from_secs(s)),
            idle_since: t0 + Duration::from_secs(idle_since),
        }
    }

    #[tokio::test]
    async fn a_gated_future_is_polled_when_it_fires_and_only_then() {
        use std::sync::atomic::AtomicUsize;
        let polls = Arc::new(AtomicUsize::new(0));
        let counted = polls.clone();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<()>();
        let mut gated = gated(std::future::poll_fn(move |cx| {
            counted.fetch_add(1, Ordering::SeqCst);
            rx.poll_recv(cx).map(|_| "fired")
        }));
        // The task is woken by something else three times: polled once.
        let (poke, mut pokes) = tokio::sync::mpsc::unbounded_channel::<()>();
        for _ in 0..3 {
            poke.send(()).unwrap_or_default();
            tokio::select! {
                biased;
                _ = &mut gated => unreachable!("nothing was sent"),
                Some(()) = pokes.recv() => {}
            }
        }
        assert_eq!(polls.load(Ordering::SeqCst), 1);
        // Its own waker fires: polled, and ready.
        tx.send(()).unwrap_or_default();
        assert_eq!((&mut gated).await, "fired");
        assert_eq!(polls.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn the_timer_looks_again_within_the_shorter_timeout() {
        // A long header timeout must not delay seeing a short idle one.
        let t0 = Instant::now();
        let busy = state(1, None, 0, t0);
        let long = Duration::from_secs(3600);
        let short = Duration::from_secs(1);
        assert_eq!(next_look(&busy, t0, long, short), (t0 + short, None));
        assert_eq!(next_look(&busy, t0, short, long), (t0 + short, None));
    }

    #[test]
    fn a_long_header_deadline_does_not_hide_a_short_idle_one() {
        // Headers started at the accept are due in an hour; the timer must
        // still look again within the idle timeout, because the request may
        // arrive and be answered meanwhile, and then the idle second counts.
        let t0 = Instant::now();
        let started = state(0, Some(0), 0, t0);
        let long = Duration::from_secs(3600);
        let short = Duration::from_secs(1);
        assert_eq!(next_look(&started, t0, long, short), (t0 + short, None));
    }

    #[test]
    fn a_request_in_flight_never_expires() {
        let t0 = Instant::now();
        let s = state(1, None, 0, t0);
        for now in [0, 59, 61, 1000] {
            let now = t0 + Duration::from_secs(now);
            assert_eq!(next_look(&s, now, HEADER, IDLE), (now + HEADER, None));
        }
    }

    #[test]
    fn started_headers_are_due_exactly_one_header_timeout_after_their_first_byte() {
        let t0 = Instant::now();
        let s = state(0, Some(5), 0, t0);
        // Whenever the timer looks (before or after the deadline), it sees
        // the exact deadline and why.
        for now in [5, 6, 14, 15, 40] {
            let now = t0 + Duration::from_secs(now);
            assert_eq!(
                next_look(&s, now, HEADER, IDLE),
                (t0 + Duration::from_secs(15), Some(Expired::Header))
            );
        }
    }

    #[test]
    fn an_idle_connection_is_looked_at_every_header_timeout_until_its_idle_deadline() {
        let t0 = Instant::now();
        let s = state(0, None, 0, t0);
        let look = |at: u64| next_look(&s, t0 + Duration::from_secs(at), HEADER, IDLE);
        // Far from the idle deadline: look again one header timeout later,
        // so headers starting meanwhile are seen before they are due.
        assert_eq!(look(0), (t0 + Duration::from_secs(10), None));
        assert_eq!(look(45), (t0 + Duration::from_secs(55), None));
        // Within one header timeout of it: sleep until it, and expire there.
        assert_eq!(
            look(50),
            (t0 + Duration::from_secs(60), Some(Expired::Idle))
        );
        assert_eq!(
            look(70),
            (t0 + Duration::from_secs(60), Some(Expired::Idle))
        );
    }
}
