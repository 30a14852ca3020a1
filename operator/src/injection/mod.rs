//! Sidecar injection: the pure injector behind the mutating webhook on pods
//! ([`inject`]), the guard that keeps an injected pod's sidecar as written on
//! pod updates ([`pod_guard`]), the native-sidecar decision ([`native_sidecars`]),
//! the per-pod settings pods may ask for by annotation ([`pod_settings`]),
//! the AdmissionResponse their results become ([`admission`]), the sidecar it
//! writes ([`sidecar`]), and the check that a running pod's sidecar is still
//! exactly that one before its token is exchanged ([`token_holder`]).

pub mod admission;
pub mod inject;
pub mod native_sidecars;
pub mod pod_guard;
pub mod pod_settings;
pub mod sidecar;
pub mod token_holder;
