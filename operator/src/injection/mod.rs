//! Sidecar injection: the pure injector behind the mutating webhook on pods
//! ([`inject`]), the guard that keeps an injected pod's sidecar as written on
//! pod updates ([`pod_guard`]), the native-sidecar decision ([`native_sidecars`]),
//! and the AdmissionResponse their results become ([`admission`]).

pub mod admission;
pub mod inject;
pub mod native_sidecars;
pub mod pod_guard;
