//! Sluice end-to-end test equipment.
//!
//! The centre piece is a small Kubernetes API server for tests
//! ([`TestCluster`], binary `sluice-testcluster`): it serves what kubectl and
//! kube-rs use, so the operator can be tested end to end on machines without
//! a cluster. See e2e/README.md for what it supports and what it does not.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod apiserver;
mod cluster;
pub mod pki;
mod under_test;

pub use cluster::{ClusterError, Options, TestCluster, User};
pub use under_test::ClusterUnderTest;
