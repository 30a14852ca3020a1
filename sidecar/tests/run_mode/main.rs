//! The `run_mode` integration tests of this crate, one test binary (each file
//! below was its own binary before: one binary links the crate and its
//! dependencies once instead of once per file, which is most of the test
//! build's time). Run one file's tests with
//! `cargo test --locked --test run_mode FILE::`.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

#[path = "../common/cluster.rs"]
mod cluster;
#[path = "../common/mod.rs"]
mod common;
#[path = "../../../operator/tests/support/mod.rs"]
mod support;

mod approval_rules;
mod approvals;
mod recording_policy_history;
mod run_mode;
mod run_mode_masking;
mod run_mode_trust;
