//! CancelRequest mapping: the client only ever sees keys the sidecar made up;
//! each maps to the upstream session's own BackendKeyData.

use std::collections::HashMap;
use std::sync::Mutex;

use rand::Rng;

use super::upstream::UpstreamConfig;

/// Where a client key leads.
#[derive(Clone)]
pub struct CancelTarget {
    /// How to reach the upstream.
    pub upstream: UpstreamConfig,
    /// The upstream's (process id, secret key).
    pub backend_key: (i32, i32),
    /// Wakes the session's statement held for approval, if any: a cancel
    /// gives it up (the upstream has nothing running meanwhile).
    pub held: std::sync::Arc<tokio::sync::Notify>,
}

/// Client-facing keys of the live sessions of this sidecar.
#[derive(Default)]
pub struct CancelRegistry {
    sessions: Mutex<HashMap<(i32, i32), CancelTarget>>,
}

impl CancelRegistry {
    /// Registers a session; returns the (process id, secret key) to give the client.
    pub fn register(&self, target: CancelTarget) -> (i32, i32) {
        let mut rng = rand::rng();
        let mut map = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            let key = (rng.random_range(1..i32::MAX), rng.random::<i32>());
            if let std::collections::hash_map::Entry::Vacant(e) = map.entry(key) {
                e.insert(target);
                return key;
            }
        }
    }

    /// Forgets a session when it ends.
    pub fn remove(&self, key: (i32, i32)) {
        self.sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&key);
    }

    /// The target of a client key, if it is a live session.
    pub fn lookup(&self, key: (i32, i32)) -> Option<CancelTarget> {
        self.sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
            .cloned()
    }
}
