//! The `mysql` integration tests of this crate, one test binary (each file
//! below was its own binary before: one binary links the crate and its
//! dependencies once instead of once per file, which is most of the test
//! build's time). Run one file's tests with
//! `cargo test --locked --test mysql FILE::`.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

#[path = "../common/cluster.rs"]
mod cluster;
#[path = "../common/mod.rs"]
mod common;
#[path = "../mysql_support/mod.rs"]
mod mysql_support;
#[path = "../../../operator/tests/support/mod.rs"]
mod support;

mod mysql_approvals;
mod mysql_async_client;
mod mysql_attacks;
mod mysql_auth;
mod mysql_big_rows;
mod mysql_code;
mod mysql_commands;
mod mysql_decision_cache;
mod mysql_denial_bypasses;
mod mysql_equated;
mod mysql_function_rules;
mod mysql_functions;
mod mysql_observability;
mod mysql_plane;
mod mysql_prepared;
mod mysql_recording;
mod mysql_run_mode;
mod mysql_side_channels;
mod mysql_sql_prepared;
mod mysql_table_rules;
mod mysql_unparsed;
mod mysql_views;
mod mysql_write_limits;
