//! The compiled AccessPolicies of each namespace, shared by every request
//! until the namespace changes (#25): bundles and audit intake no longer
//! compile every policy of the namespace per request (or, for audit, per event).
//!
//! Freshness comes from the catalog's change counter of the namespace
//! ([`Catalog::subscribe_namespace`]), which moves after every change of a
//! watched object of the namespace has reached the catalog's stores (the
//! Connections, AccessPolicies and the Secrets they reference). An entry is
//! marked seen *before* it is compiled, so a change that lands during the
//! compilation makes the next lookup compile again: an entry is never newer
//! in name than in content.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::watch;

use crate::catalog::{Catalog, PolicyEntry};

/// Most namespaces kept; past it the cache starts over (each namespace is
/// then compiled once more). Namespaces with sidecars are far fewer.
pub const MAX_NAMESPACES: usize = 4_096;

/// Compiled policies by namespace.
#[derive(Default)]
pub struct CompiledPolicies {
    by_namespace: Mutex<HashMap<String, Cached>>,
    compilations: AtomicU64,
}

struct Cached {
    changes: watch::Receiver<u64>,
    entries: Arc<Vec<PolicyEntry>>,
}

impl CompiledPolicies {
    /// The AccessPolicies of `namespace`, compiled: from the cache when the
    /// namespace has not changed since they were compiled.
    pub fn get(&self, catalog: &Catalog, namespace: &str) -> Arc<Vec<PolicyEntry>> {
        let mut changes = {
            let mut map = self.lock();
            // An error means the counter is gone: compile, never trust.
            if let Some(cached) = map.get(namespace)
                && !cached.changes.has_changed().unwrap_or(true)
            {
                return cached.entries.clone();
            }
            match map.remove(namespace) {
                Some(cached) => cached.changes,
                None => catalog.subscribe_namespace(namespace),
            }
        };
        // Seen first, compiled second (see the module's comment).
        changes.mark_unchanged();
        let entries = Arc::new(catalog.compiled_in(namespace));
        self.compilations.fetch_add(1, Ordering::Relaxed);
        let mut map = self.lock();
        if map.len() >= MAX_NAMESPACES {
            map.clear();
        }
        map.insert(
            namespace.to_string(),
            Cached {
                changes,
                entries: entries.clone(),
            },
        );
        entries
    }

    /// How many times a namespace's policies were compiled (for tests and the bench).
    pub fn compilations(&self) -> u64 {
        self.compilations.load(Ordering::Relaxed)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Cached>> {
        self.by_namespace
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}
