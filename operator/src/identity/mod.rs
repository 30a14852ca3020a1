//! The operator's own identity and TLS material: its CA and serving
//! certificate ([`pki`], kept in a Secret and hot-reloaded by [`certs`]), the
//! gateway token signing keys ([`keys`]), and the webhook configurations that
//! carry its CA bundle ([`webhook_config`]).

pub mod certs;
pub mod keys;
pub mod pki;
pub mod webhook_config;
