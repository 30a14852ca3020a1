//! The durable history a head must move forward from, read once for every
//! upload waiting for it (#25).
//!
//! A replica that has not signed a stream since it started reads the last
//! head of that stream from its Connection's history ConfigMap
//! ([`checkpoint_history::read_floors`]). When a fleet starts uploading, every
//! sidecar's first batch needs that read, each for the same few Connections:
//! one GET and one parse of the whole history (up to 2,000 lines) per upload.
//!
//! Here the reads of one Connection are made one at a time, and a read's
//! result (the parsed last head of every stream) is shared by the uploads
//! that arrived before it started: an upload never takes a read that
//! started before it arrived, so what it sees is as fresh as its own GET
//! would have been (a history written since is read again). A failed read
//! is shared the same way. Nothing is kept once no upload waits: a result
//! that started before the next upload arrived could not serve it anyway.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use kube::Client;

use super::{AuditIntake, IntakeError};
use crate::gateway::checkpoint_history::{self, Floors};
use crate::gateway::token::GatewayClaims;
use crate::wire::AuditHead;

/// (namespace, Connection).
type Key = (String, String);

/// A shared result: the value, or the error every sharer gets.
type Shared<V, E> = Result<Arc<V>, Arc<E>>;

/// Reads by key, each shared by the requests that arrived before it started.
pub(super) struct SharedReads<V, E> {
    slots: Mutex<HashMap<Key, Arc<Slot<V, E>>>>,
    reads: AtomicU64,
}

impl<V, E> Default for SharedReads<V, E> {
    fn default() -> Self {
        SharedReads {
            slots: Mutex::default(),
            reads: AtomicU64::new(0),
        }
    }
}

struct Slot<V, E> {
    /// Reads started for the key: a read's number is this after it started.
    started: AtomicU64,
    /// Requests using the slot (changed under the map's lock).
    users: AtomicUsize,
    /// The last read's number and result; its lock makes reads one at a time.
    last: tokio::sync::Mutex<Option<(u64, Shared<V, E>)>>,
}

impl<V, E> Default for Slot<V, E> {
    fn default() -> Self {
        Slot {
            started: AtomicU64::new(0),
            users: AtomicUsize::new(0),
            last: tokio::sync::Mutex::new(None),
        }
    }
}

impl<V, E> SharedReads<V, E> {
    /// The value for `key` from a read that started after this call: the
    /// one already done by another caller when there is one, else `read`.
    pub(super) async fn get<F, Fut>(&self, key: &Key, read: F) -> Shared<V, E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<V, E>>,
    {
        let slot = {
            let mut slots = self.lock();
            let slot = slots.entry(key.clone()).or_default().clone();
            slot.users.fetch_add(1, Ordering::SeqCst);
            slot
        };
        let _leave = Leave {
            reads: self,
            key,
            slot: &slot,
        };
        // A read numbered above this started after this call.
        let arrived = slot.started.load(Ordering::SeqCst);
        let mut last = slot.last.lock().await;
        if let Some((number, result)) = last.as_ref()
            && *number > arrived
        {
            return result.clone();
        }
        let number = slot.started.fetch_add(1, Ordering::SeqCst) + 1;
        self.reads.fetch_add(1, Ordering::Relaxed);
        let result = read().await.map(Arc::new).map_err(Arc::new);
        *last = Some((number, result.clone()));
        result
    }

    /// Reads made so far (for tests and the bench).
    pub(super) fn reads(&self) -> u64 {
        self.reads.load(Ordering::Relaxed)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Arc<Slot<V, E>>>> {
        self.slots.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Leaves a slot (also when the caller is dropped while waiting); the last
/// user removes it with what it held.
struct Leave<'a, V, E> {
    reads: &'a SharedReads<V, E>,
    key: &'a Key,
    slot: &'a Arc<Slot<V, E>>,
}

impl<V, E> Drop for Leave<'_, V, E> {
    fn drop(&mut self) {
        let mut slots = self.reads.lock();
        if self.slot.users.fetch_sub(1, Ordering::SeqCst) == 1 {
            slots.remove(self.key);
        }
    }
}

/// The history reads of an intake.
pub(super) type HistoryReads = SharedReads<Floors, kube::Error>;

impl AuditIntake {
    /// The last head in the durable history of each stream of `heads` (by
    /// stream), for the heads on Connections `wanted` accepts: one shared
    /// read per Connection. An unreadable history is an error naming its
    /// ConfigMap and the first head it was read for.
    pub(super) async fn history_floors<'a>(
        &self,
        client: &Client,
        operator_namespace: &str,
        claims: &GatewayClaims,
        heads: impl Iterator<Item = &'a AuditHead>,
        wanted: impl Fn(&str) -> bool,
    ) -> Result<BTreeMap<String, (u64, String)>, IntakeError> {
        let namespace = claims.namespace.as_str();
        let mut read: BTreeMap<&str, Arc<Floors>> = BTreeMap::new();
        let mut floors: BTreeMap<String, (u64, String)> = BTreeMap::new();
        for head in heads {
            let connection = head.connection.as_str();
            if !read.contains_key(connection) {
                if !wanted(connection) {
                    continue;
                }
                let key = (namespace.to_string(), connection.to_string());
                let history = self
                    .history_reads
                    .get(&key, || {
                        checkpoint_history::read_floors(
                            client,
                            operator_namespace,
                            namespace,
                            connection,
                        )
                    })
                    .await
                    .map_err(|source| IntakeError::HistoryUnavailable {
                        config_map: format!(
                            "{operator_namespace}/{}",
                            checkpoint_history::history_name(namespace, connection)
                        ),
                        stream: head.head.stream.clone(),
                        seq: head.head.seq,
                        source,
                    })?;
                read.insert(connection, history);
            }
            let stream = &head.head.stream;
            if let Some((sequence, hash)) = read.get(connection).and_then(|h| h.get(stream))
                && floors.get(stream).is_none_or(|(s, _)| sequence > s)
            {
                floors.insert(stream.clone(), (*sequence, hash.clone()));
            }
        }
        Ok(floors)
    }

    /// History reads made so far (for tests and the bench).
    pub fn history_reads(&self) -> u64 {
        self.history_reads.reads()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use tokio::sync::oneshot;

    fn key() -> Key {
        ("shop".into(), "orders-db".into())
    }

    type Reads = Arc<SharedReads<&'static str, String>>;

    /// A first read of [`key`] that answers `value` once the sender is
    /// used, spawned, and under way when this returns.
    async fn first_read_held(
        reads: &Reads,
        value: &'static str,
    ) -> (
        oneshot::Sender<()>,
        tokio::task::JoinHandle<Shared<&'static str, String>>,
    ) {
        let (release, released) = oneshot::channel::<()>();
        let first = {
            let reads = reads.clone();
            tokio::spawn(async move {
                reads
                    .get(&key(), || async move {
                        released.await.unwrap();
                        Ok(value)
                    })
                    .await
            })
        };
        while reads.reads() < 1 {
            tokio::task::yield_now().await;
        }
        (release, first)
    }

    /// `n` calls for [`key`], spawned, each reading `value` if it reads.
    fn spawn_waiters(
        reads: &Reads,
        n: usize,
        value: Result<&'static str, String>,
    ) -> Vec<tokio::task::JoinHandle<Shared<&'static str, String>>> {
        (0..n)
            .map(|_| {
                let (reads, value) = (reads.clone(), value.clone());
                tokio::spawn(async move { reads.get(&key(), || async { value }).await })
            })
            .collect()
    }

    /// Until `users` calls (the first read's included) share [`key`]'s slot.
    async fn until_queued(reads: &Reads, users: usize) {
        while reads
            .lock()
            .get(&key())
            .unwrap()
            .users
            .load(Ordering::SeqCst)
            < users
        {
            tokio::task::yield_now().await;
        }
    }

    /// Uploads that arrive while a read is under way share the next read
    /// (one GET for all of them, not one each), and none of them takes the
    /// read that started before it arrived: the history changed meanwhile.
    #[tokio::test]
    async fn waiters_share_one_read_started_after_they_arrived() {
        let reads: Reads = Arc::default();
        // The first read is under way, and the history changes while it is.
        let (release, first) = first_read_held(&reads, "before the change").await;
        let waiters = spawn_waiters(&reads, 5, Ok("after the change"));
        // Every waiter is queued behind the first read.
        until_queued(&reads, 6).await;
        release.send(()).unwrap();
        assert_eq!(*first.await.unwrap().unwrap(), "before the change");
        for waiter in waiters {
            assert_eq!(*waiter.await.unwrap().unwrap(), "after the change");
        }
        assert_eq!(reads.reads(), 2, "one read for the five waiters");
        // Nothing is kept once nobody waits: a later call reads again.
        assert!(reads.lock().is_empty());
        let later = reads.get(&key(), || async { Ok("later") }).await;
        assert_eq!(*later.unwrap(), "later");
        assert_eq!(reads.reads(), 3);
    }

    /// A failed read fails the uploads sharing it (they send their batch
    /// again) instead of each trying it in turn; the next arrival reads anew.
    #[tokio::test]
    async fn a_failed_read_is_shared_and_not_kept() {
        let reads: Reads = Arc::default();
        let (release, first) = first_read_held(&reads, "first").await;
        let waiters = spawn_waiters(&reads, 3, Err("refused".to_string()));
        until_queued(&reads, 4).await;
        release.send(()).unwrap();
        first.await.unwrap().unwrap();
        for waiter in waiters {
            assert_eq!(*waiter.await.unwrap().unwrap_err(), "refused");
        }
        assert_eq!(reads.reads(), 2);
        let next = reads.get(&key(), || async { Ok("read again") }).await;
        assert_eq!(*next.unwrap(), "read again");
    }

    /// Another Connection's read is its own.
    #[tokio::test]
    async fn keys_are_read_apart() {
        let reads: SharedReads<String, String> = SharedReads::default();
        let a = reads.get(&key(), || async { Ok("a".to_string()) }).await;
        let other = ("shop".to_string(), "billing-db".to_string());
        let b = reads.get(&other, || async { Ok("b".to_string()) }).await;
        assert_eq!((a.unwrap().as_str(), b.unwrap().as_str()), ("a", "b"));
        assert_eq!(reads.reads(), 2);
    }
}
