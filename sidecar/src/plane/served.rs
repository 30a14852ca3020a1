//! The Connections one plane serves ([`Served`]), whatever its protocol:
//! each one's listener address, what its live sessions follow (the plane's
//! [`Entry`]: [`Live`] for the SQL planes) and its listener's accept loop.
//!
//! Every listener of every plane is opened here and its accept loop
//! registered in the planes' one [`AcceptLoops`], which a shutdown stops:
//! no plane keeps accepting after SIGTERM, also not one a later bundle
//! opened. The accept loops end with their [`Served`] unless it is
//! detached (standalone).

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use sluice_policy::engine::Identity;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::{AbortHandle, JoinHandle};

use super::{BindError, Listener};
use crate::rate::RateLimit;
use crate::standing::{Binding, Standing};

/// What a plane keeps for each Connection it serves: how its live sessions
/// (requests) learn what is in force.
pub trait Entry: Send + Sync + 'static {
    /// Whether policies bind the identity to the Connection now.
    fn is_bound(&self) -> bool;

    /// Every session and statement (request) of the Connection is refused
    /// with `why` from now on, until a bundle puts it in force again.
    fn refuse(&self, why: String);
}

/// Binds a new listener of Connection `connection` on `addr`; returns it
/// and the address it got (`addr` with the port the system chose for port
/// 0). The one bind of every plane's listeners.
pub async fn bind(
    connection: &str,
    addr: SocketAddr,
) -> Result<(TcpListener, SocketAddr), BindError> {
    let listener = TcpListener::bind(addr).await.map_err(|source| BindError {
        connection: connection.to_string(),
        addr,
        source,
    })?;
    let addr = listener.local_addr().unwrap_or(addr);
    Ok((listener, addr))
}

/// One served Connection.
struct Connection<E> {
    addr: SocketAddr,
    entry: E,
}

/// The Connections a plane serves, by name, and their listeners' accept
/// loops (aborted when this is dropped, unless detached).
pub struct Served<E> {
    served: BTreeMap<String, Connection<E>>,
    tasks: Vec<JoinHandle<()>>,
    accept: AcceptLoops,
}

impl<E: Entry> Served<E> {
    /// Serves nothing yet; the accept loops of its listeners are registered
    /// in `accept` (every plane's, for a shutdown to stop).
    pub fn new(accept: AcceptLoops) -> Self {
        Served {
            served: BTreeMap::new(),
            tasks: Vec::new(),
            accept,
        }
    }

    /// What Connection `name` keeps, when served.
    pub fn get(&self, name: &str) -> Option<&E> {
        self.served.get(name).map(|c| &c.entry)
    }

    /// [`Served::get`], to change it.
    pub fn get_mut(&mut self, name: &str) -> Option<&mut E> {
        self.served.get_mut(name).map(|c| &mut c.entry)
    }

    /// Serves the new Connection `name` on the listener bound to `addr`,
    /// which `accept_loop` owns and accepts on. Once the shutdown stopped
    /// the accept loops, it is dropped at once (its listener closed).
    pub fn insert(
        &mut self,
        name: String,
        addr: SocketAddr,
        entry: E,
        accept_loop: impl Future<Output = ()> + Send + 'static,
    ) {
        if let Some(task) = self.accept.spawn(accept_loop) {
            self.tasks.push(task);
        } else {
            tracing::info!(connection = %name, %addr, "shutting down: the new listener is closed");
        }
        self.served.insert(name, Connection { addr, entry });
    }

    /// Connections served but not among `in_force` refuse everything from
    /// now on: the bundle of `revision` no longer has them.
    pub fn retire_others(&self, in_force: &[String], revision: &str) {
        for (name, c) in &self.served {
            if !in_force.contains(name) {
                c.entry.refuse(format!(
                    "Connection {name:?} is no longer in this identity's policy bundle (revision {revision})"
                ));
            }
        }
    }

    /// No bundle is in force: every Connection refuses everything with `why`.
    pub fn withdraw(&self, why: &str) {
        for c in self.served.values() {
            c.entry.refuse(why.to_string());
        }
    }

    /// Every listener.
    pub fn listeners(&self) -> Vec<Listener> {
        self.served
            .iter()
            .map(|(n, c)| (n.clone(), c.addr, c.entry.is_bound()))
            .collect()
    }

    /// Lets the accept loops run on after this is dropped (a shutdown still
    /// stops them).
    pub fn detach(&mut self) {
        self.tasks.clear();
    }
}

impl<E> Drop for Served<E> {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

// === impl Live ===

/// A SQL plane's served Connection ([`Entry`]): the standing its live
/// sessions follow at their next statement, the context a new session
/// starts from, and the `statementsPerSecond` bucket, which is the
/// Connection's whatever the bundle (see [`crate::rate`]).
pub struct Live<C> {
    standing: watch::Sender<Standing>,
    context: watch::Sender<Arc<C>>,
    rate: Arc<RateLimit>,
}

impl<C: Send + Sync + 'static> Live<C> {
    /// A new Connection's, under `standing`; `context` makes what its
    /// sessions start from out of their live [`Binding`]. Returns the
    /// receiver its accept loop takes each session's context from.
    pub fn new(
        identity: &Identity,
        connection: &str,
        standing: Standing,
        context: impl FnOnce(Binding) -> C,
    ) -> (Self, watch::Receiver<Arc<C>>) {
        let (standing, standing_rx) = watch::channel(standing);
        let rate = Arc::new(RateLimit::new());
        let binding =
            Binding::live(identity.clone(), connection, standing_rx).with_rate(rate.clone());
        let (context, contexts) = watch::channel(Arc::new(context(binding)));
        let live = Live {
            standing,
            context,
            rate,
        };
        (live, contexts)
    }

    /// A new bundle's: live sessions follow `standing` at their next
    /// statement; new sessions start from what `context` makes.
    pub fn update(
        &self,
        identity: &Identity,
        connection: &str,
        standing: Standing,
        context: impl FnOnce(Binding) -> C,
    ) {
        self.standing.send_replace(standing);
        let binding = Binding::live(identity.clone(), connection, self.standing.subscribe())
            .with_rate(self.rate.clone());
        self.context.send_replace(Arc::new(context(binding)));
    }

    /// What a new session starts from now.
    pub fn context(&self) -> Arc<C> {
        self.context.borrow().clone()
    }
}

impl<C: Send + Sync + 'static> Entry for Live<C> {
    fn is_bound(&self) -> bool {
        self.standing.borrow().is_bound()
    }

    fn refuse(&self, why: String) {
        self.standing.send_replace(Standing::Unavailable(why));
    }
}

// === impl AcceptLoops ===

/// The accept loops of every plane's listeners, also those a later bundle
/// opens, for a shutdown to stop ([`crate::shutdown::drain`]).
#[derive(Clone, Default)]
pub struct AcceptLoops(Arc<Mutex<AcceptState>>);

#[derive(Default)]
struct AcceptState {
    loops: Vec<AbortHandle>,
    stopped: bool,
}

impl AcceptLoops {
    /// Stops every accept loop: their listeners close, so a new connection
    /// is refused, while the sessions they accepted go on. A listener
    /// registered later is closed at once. Returns how many loops it stopped.
    pub fn stop(&self) -> usize {
        let mut state = self.0.lock().unwrap_or_else(|p| p.into_inner());
        state.stopped = true;
        for l in &state.loops {
            l.abort();
        }
        std::mem::take(&mut state.loops).len()
    }

    /// Whether [`AcceptLoops::stop`] ran.
    pub fn stopped(&self) -> bool {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).stopped
    }

    /// Spawns `accept_loop` and registers it; `None` (and `accept_loop`
    /// dropped) once stopped. Under the lock: a loop is either registered
    /// before a stop, which aborts it, or never spawned.
    fn spawn(
        &self,
        accept_loop: impl Future<Output = ()> + Send + 'static,
    ) -> Option<JoinHandle<()>> {
        let mut state = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if state.stopped {
            return None;
        }
        let task = tokio::spawn(accept_loop);
        state.loops.push(task.abort_handle());
        Some(task)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::{Duration, Instant};

    /// A Connection as the tests keep it.
    #[derive(Default)]
    struct Flag(AtomicBool, Mutex<Option<String>>);

    impl Entry for Arc<Flag> {
        fn is_bound(&self) -> bool {
            self.0.load(Ordering::SeqCst)
        }
        fn refuse(&self, why: String) {
            self.0.store(false, Ordering::SeqCst);
            *self.1.lock().unwrap() = Some(why);
        }
    }

    /// Accepts connections (and drops them) until stopped.
    async fn accept_forever(listener: TcpListener) {
        while listener.accept().await.is_ok() {}
    }

    /// Polls until a connect to `addr` is refused (20 s at most).
    async fn until_refused(addr: SocketAddr) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while tokio::net::TcpStream::connect(addr).await.is_ok() {
            assert!(Instant::now() < deadline, "{addr} still accepts");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    fn loopback() -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 0))
    }

    #[tokio::test]
    async fn a_stop_closes_every_listener_also_one_opened_after_it() {
        let accept = AcceptLoops::default();
        let mut one: Served<Arc<Flag>> = Served::new(accept.clone());
        let mut other: Served<Arc<Flag>> = Served::new(accept.clone());
        let (listener, a) = bind("a", loopback()).await.unwrap();
        one.insert("a".into(), a, Arc::default(), accept_forever(listener));
        let (listener, b) = bind("b", loopback()).await.unwrap();
        other.insert("b".into(), b, Arc::default(), accept_forever(listener));
        tokio::net::TcpStream::connect(a).await.unwrap();
        assert!(!accept.stopped());

        assert_eq!(accept.stop(), 2);
        until_refused(a).await;
        until_refused(b).await;
        // A bundle put in force during the grace period opens no listener
        // that accepts.
        let (listener, c) = bind("c", loopback()).await.unwrap();
        other.insert("c".into(), c, Arc::default(), accept_forever(listener));
        assert!(tokio::net::TcpStream::connect(c).await.is_err());
        assert_eq!(other.listeners().len(), 2);
        assert!(accept.stopped());
    }

    #[tokio::test]
    async fn dropping_a_set_ends_its_accept_loops_unless_detached() {
        let accept = AcceptLoops::default();
        let mut kept: Served<Arc<Flag>> = Served::new(accept.clone());
        let (listener, a) = bind("a", loopback()).await.unwrap();
        kept.insert("a".into(), a, Arc::default(), accept_forever(listener));
        kept.detach();
        drop(kept);
        let mut dropped: Served<Arc<Flag>> = Served::new(accept.clone());
        let (listener, b) = bind("b", loopback()).await.unwrap();
        dropped.insert("b".into(), b, Arc::default(), accept_forever(listener));
        drop(dropped);
        until_refused(b).await;
        // The detached one serves on, and a shutdown still stops it.
        tokio::net::TcpStream::connect(a).await.unwrap();
        accept.stop();
        until_refused(a).await;
    }

    #[tokio::test]
    async fn connections_left_out_of_a_bundle_or_withdrawn_refuse_with_the_reason() {
        let mut served: Served<Arc<Flag>> = Served::new(AcceptLoops::default());
        let flags: Vec<Arc<Flag>> = (0..2).map(|_| Arc::default()).collect();
        for (name, flag) in ["a", "b"].into_iter().zip(&flags) {
            flag.0.store(true, Ordering::SeqCst);
            let (listener, addr) = bind(name, loopback()).await.unwrap();
            served.insert(name.into(), addr, flag.clone(), accept_forever(listener));
        }
        served.retire_others(&["a".to_string()], "r2");
        let bound: Vec<bool> = served.listeners().iter().map(|l| l.2).collect();
        assert_eq!(bound, [true, false]);
        let why = flags[1].1.lock().unwrap().clone().unwrap();
        assert!(
            why.contains("\"b\" is no longer") && why.contains("revision r2"),
            "{why}"
        );
        served.withdraw("the bundle expired");
        assert!(served.listeners().iter().all(|l| !l.2));
        assert_eq!(
            flags[0].1.lock().unwrap().as_deref(),
            Some("the bundle expired")
        );
    }

    #[tokio::test]
    async fn a_busy_port_names_the_connection_and_the_address() {
        let (_held, addr) = bind("a", loopback()).await.unwrap();
        let err = bind("orders-db", addr).await.unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("orders-db") && text.contains(&addr.to_string()),
            "{text}"
        );
    }
}
