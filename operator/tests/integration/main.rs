//! The `integration` integration tests of this crate, one test binary (each file
//! below was its own binary before: one binary links the crate and its
//! dependencies once instead of once per file, which is most of the test
//! build's time). Run one file's tests with
//! `cargo test --locked --test integration FILE::`.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

#[path = "../support/mod.rs"]
mod support;

mod approvals;
mod binary;
mod cert_manager;
mod checkpoint_writes;
mod cli;
mod fleet;
mod inject_golden;
mod inject_props;
mod logs;
mod metrics;
mod native_sidecars;
mod operator;
mod pod_updates;
mod settings_file;
