//! The revision of each sidecar's bundle, remembered while its namespace
//! does not change (#25): a bundle poll whose caller already holds the
//! current bundle waits (or is answered 304) without building it again.
//!
//! A bundle is built from the catalog's objects of one namespace
//! (Connections, AccessPolicies, the Secrets they reference), and every
//! change to those moves the namespace's change counter, which is what
//! makes [`crate::gateway::compiled::CompiledPolicies`] compile again: its
//! compiled policies are a new allocation after every change. A revision is
//! remembered with the compilation it was built against and is only used
//! with that same compilation, so any change of the namespace forgets it
//! (and a changed identity or pod is another entry). Only a weak reference
//! to the compilation is kept: an old one is not kept alive, and its
//! address cannot be taken by a newer one while the entry exists.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError, Weak};

use sluice_policy::engine::Identity;

use crate::catalog::PolicyEntry;

/// Most revisions remembered; past it they are forgotten all at once (each
/// caller's bundle is then built once more). Pods with sidecars are fewer.
pub const MAX_REVISIONS: usize = 65_536;

/// (namespace, service account, groups, pod): what a bundle is for.
type Key = (String, String, Vec<String>, String);

/// A revision and the compilation it was built against.
type Remembered = (Weak<Vec<PolicyEntry>>, String);

/// Bundle revisions by caller.
#[derive(Default)]
pub struct BundleRevisions {
    by_caller: Mutex<HashMap<Key, Remembered>>,
}

fn key(identity: &Identity, pod: &str) -> Key {
    (
        identity.namespace.clone(),
        identity.service_account.clone(),
        identity.groups.clone(),
        pod.to_string(),
    )
}

impl BundleRevisions {
    /// The revision of the bundle of `identity` and `pod` built against
    /// `entries` (the namespace's compilation now), if one was.
    pub fn get(
        &self,
        entries: &Arc<Vec<PolicyEntry>>,
        identity: &Identity,
        pod: &str,
    ) -> Option<String> {
        let map = self.lock();
        let (built_with, revision) = map.get(&key(identity, pod))?;
        std::ptr::eq(built_with.as_ptr(), Arc::as_ptr(entries)).then(|| revision.clone())
    }

    /// Remembers `revision` for `identity` and `pod`, built against `entries`.
    pub fn remember(
        &self,
        entries: &Arc<Vec<PolicyEntry>>,
        identity: &Identity,
        pod: &str,
        revision: &str,
    ) {
        let mut map = self.lock();
        if map.len() >= MAX_REVISIONS {
            map.clear();
        }
        map.insert(
            key(identity, pod),
            (Arc::downgrade(entries), revision.to_string()),
        );
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Remembered>> {
        self.by_caller
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_revision_is_used_only_with_the_compilation_it_was_built_against() {
        let revisions = BundleRevisions::default();
        let job = Identity::service_account("shop", "job");
        let compiled = Arc::new(Vec::new());
        revisions.remember(&compiled, &job, "job-0", "r1");
        assert_eq!(
            revisions.get(&compiled, &job, "job-0").as_deref(),
            Some("r1")
        );
        // Another pod, account or group set is another bundle.
        assert_eq!(revisions.get(&compiled, &job, "job-1"), None);
        let other = Identity::service_account("shop", "other");
        assert_eq!(revisions.get(&compiled, &other, "job-0"), None);
        let mut grouped = job.clone();
        grouped.groups = vec!["ops".into()];
        assert_eq!(revisions.get(&compiled, &grouped, "job-0"), None);
        // The namespace changed: a new compilation, the revision is forgotten.
        let recompiled = Arc::new(Vec::new());
        assert_eq!(revisions.get(&recompiled, &job, "job-0"), None);
        // Also once the old compilation is gone: a later one never passes
        // for it, whatever its address.
        drop(compiled);
        let later: Vec<_> = (0..64).map(|_| Arc::new(Vec::new())).collect();
        assert!(
            later
                .iter()
                .all(|c| revisions.get(c, &job, "job-0").is_none())
        );
    }

    #[test]
    fn remembered_revisions_are_bounded() {
        let revisions = BundleRevisions::default();
        let job = Identity::service_account("shop", "job");
        let compiled = Arc::new(Vec::new());
        for i in 0..=MAX_REVISIONS {
            revisions.remember(&compiled, &job, &format!("pod-{i}"), "r");
        }
        assert!(revisions.lock().len() <= MAX_REVISIONS);
        let last = format!("pod-{MAX_REVISIONS}");
        assert_eq!(revisions.get(&compiled, &job, &last).as_deref(), Some("r"));
    }
}
