//! The `control_plane` integration tests of this crate, one test binary (each file
//! below was its own binary before: one binary links the crate and its
//! dependencies once instead of once per file, which is most of the test
//! build's time). Run one file's tests with
//! `cargo test --locked --test control_plane FILE::`.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

#[path = "../support/mod.rs"]
mod support;

mod binary;
mod crd_admission;
mod faults;
mod in_flight;
mod kube_rs;
mod kubectl;
mod rbac;
mod strict;
mod webhooks;
