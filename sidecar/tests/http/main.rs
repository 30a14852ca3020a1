//! The `http` integration tests of this crate, one test binary (each file
//! below was its own binary before: one binary links the crate and its
//! dependencies once instead of once per file, which is most of the test
//! build's time). Run one file's tests with
//! `cargo test --locked --test http FILE::`.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

#[path = "../common/mod.rs"]
mod common;
#[path = "../http_support/mod.rs"]
mod http_support;
#[path = "../../../operator/tests/support/mod.rs"]
mod support;

mod http;
mod http_attacks;
mod http_batched;
mod http_limits;
mod http_request_body;
mod http_soundness;
mod rate_limits;
mod run_mode_http;
