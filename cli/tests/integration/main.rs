//! The `integration` integration tests of this crate, one test binary (each file
//! below was its own binary before: one binary links the crate and its
//! dependencies once instead of once per file, which is most of the test
//! build's time). Run one file's tests with
//! `cargo test --locked --test integration FILE::`.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

#[path = "../common/mod.rs"]
mod common;
#[path = "../../../operator/tests/support/mod.rs"]
mod support;

mod approvals;
mod audit_checkpoints;
mod audit_pipeline;
mod audit_restart;
mod audit_verify;
mod check;
mod completion;
mod crd_schema;
mod ensure_deps;
mod evidence;
mod evidence_masks;
mod policy_eval;
mod policy_eval_http;
mod status;
mod tail;
mod usage;
