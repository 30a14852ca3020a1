//! Sluice end-to-end test equipment.
//!
//! The centre piece is a small Kubernetes API server for tests
//! ([`TestCluster`], binary `sluice-testcluster`): it serves what kubectl and
//! kube-rs use, so the operator can be tested end to end on machines without
//! a cluster. See e2e/README.md for what it supports and what it does not.
//!
//! - [`apiserver`]: the API server itself (routing, the verbs in `ops`,
//!   admission, patches, watches, storage, schemas, RBAC, tokens);
//! - [`TestCluster`] (`cluster`): starts it, with its users and kubeconfig;
//! - [`pki`]: its CA, serving certificates and token signer;
//! - [`chart`]: the chart's objects as the tests apply them;
//! - [`ClusterUnderTest`] (`under_test`): a real cluster instead, when one is given;
//! - [`free_port`]: loopback ports for the processes the tests start;
//! - [`harness`]: what the crates' tests share around the binaries they run
//!   (a binary beside theirs, a JSON upstream, an audit file's events).
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod apiserver;
pub mod chart;
mod cluster;
pub mod harness;
pub mod pki;
mod under_test;

pub use cluster::{ClusterError, Options, TestCluster, User};
pub use under_test::ClusterUnderTest;

/// A free loopback TCP port for a test to bind. The OS picks it; its probe
/// listener is closed before the caller binds the port, so two calls in a row
/// may get the same one (a sidecar once got its admin port equal to its
/// listen port): a port handed out earlier in this process is never handed
/// out again.
pub fn free_port() -> std::io::Result<u16> {
    static GIVEN: std::sync::Mutex<std::collections::BTreeSet<u16>> =
        std::sync::Mutex::new(std::collections::BTreeSet::new());
    loop {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        if GIVEN.lock().unwrap_or_else(|p| p.into_inner()).insert(port) {
            return Ok(port);
        }
    }
}
