//! Faults a test arms on purpose (test-only; nothing arms one by itself):
//! the next writes of one object's status answered with an error, as
//! kube-apiserver answers a write that lost a race (409 `Conflict`, a stale
//! resourceVersion) or one its storage failed (500 `InternalError`).
//!
//! A fault answers only a write that would otherwise have been served: one
//! that passed authentication, the in-flight limits and authorization, on an
//! object that exists (a missing object is still 404). Everything else is
//! served as before, and the write a fault answered changes nothing.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use super::error::ApiError;
use super::request::{Req, Target};

/// What a faulted write is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultCode {
    /// 409 `Conflict`: "the object has been modified; please apply your
    /// changes to the latest version and try again" (a stale resourceVersion).
    Conflict,
    /// 500 `InternalError` (storage failed).
    InternalError,
}

/// The next `times` status writes (PUT or PATCH of `.../status`) of one
/// object, answered with `code`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusWriteFault {
    /// The resource's plural (`accesspolicies`, `connections`, `pods`).
    pub resource: String,
    /// The object's namespace (empty for a cluster-scoped object).
    pub namespace: String,
    /// The object's name.
    pub name: String,
    /// Only writes by this field manager (`?fieldManager=`, else the user
    /// agent's program, as kube names managers); any writer when `None`.
    pub field_manager: Option<String>,
    /// How many writes to answer with `code`; later ones are served.
    pub times: usize,
    /// The answer.
    pub code: FaultCode,
}

impl StatusWriteFault {
    /// The next `times` status writes of `namespace/name` of `resource`, by
    /// any writer, answered 409 `Conflict`.
    pub fn conflicts(resource: &str, namespace: &str, name: &str, times: usize) -> Self {
        StatusWriteFault {
            resource: resource.to_string(),
            namespace: namespace.to_string(),
            name: name.to_string(),
            field_manager: None,
            times,
            code: FaultCode::Conflict,
        }
    }

    /// Only writes by `manager`.
    pub fn by(mut self, manager: &str) -> Self {
        self.field_manager = Some(manager.to_string());
        self
    }

    /// Answered `code` instead.
    pub fn answering(mut self, code: FaultCode) -> Self {
        self.code = code;
        self
    }

    fn matches(&self, req: &Req, t: &Target, name: &str) -> bool {
        self.times > 0
            && self.resource == t.rt.plural
            && self.namespace == t.ns
            && self.name == name
            && self
                .field_manager
                .as_ref()
                .is_none_or(|m| *m == req.manager())
    }
}

/// The faults armed, and how many requests they answered.
#[derive(Default)]
pub(crate) struct Faults {
    armed: Mutex<Vec<StatusWriteFault>>,
    answered: AtomicU64,
}

impl Faults {
    pub(crate) fn arm(&self, fault: StatusWriteFault) {
        self.lock().push(fault);
    }

    /// Requests answered by a fault so far.
    pub(crate) fn answered(&self) -> u64 {
        self.answered.load(Ordering::Relaxed)
    }

    /// The error for `req` on `t` if an armed fault takes it (one of its
    /// `times` is used up). `exists` says whether the object is stored: a
    /// fault never answers for a missing one.
    pub(super) fn take(
        &self,
        req: &Req,
        t: &Target,
        exists: impl FnOnce() -> bool,
    ) -> Option<ApiError> {
        let is_status_write = t.sub.as_deref() == Some("status")
            && matches!(req.method, hyper::Method::PUT | hyper::Method::PATCH);
        let name = t.name.as_deref()?;
        if !is_status_write {
            return None;
        }
        let mut armed = self.lock();
        let fault = armed.iter_mut().find(|f| f.matches(req, t, name))?;
        if !exists() {
            return None;
        }
        fault.times -= 1;
        let code = fault.code;
        armed.retain(|f| f.times > 0);
        drop(armed);
        self.answered.fetch_add(1, Ordering::Relaxed);
        Some(match code {
            FaultCode::Conflict => ApiError::conflict(&t.rt, name),
            FaultCode::InternalError => {
                ApiError::internal("the server could not write the object (a fault the test armed)")
            }
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<StatusWriteFault>> {
        self.armed.lock().unwrap_or_else(|p| p.into_inner())
    }
}
