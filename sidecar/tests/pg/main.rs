//! The `pg` integration tests of this crate, one test binary (each file
//! below was its own binary before: one binary links the crate and its
//! dependencies once instead of once per file, which is most of the test
//! build's time). Run one file's tests with
//! `cargo test --locked --test pg FILE::`.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

#[path = "../common/mod.rs"]
mod common;
#[path = "../mysql_support/mod.rs"]
mod mysql_support;

mod audit_durability;
mod audit_masks;
mod enforcement;
mod fuzz_props;
mod lifecycle_limits;
mod lifecycle_shutdown;
mod lifecycle_shutdown_planes;
mod log_hygiene;
mod manifests_strict;
mod masking;
mod metrics;
mod observability_kit;
mod pg_attack;
mod pg_buffer_budget;
mod pg_catalog_changes;
mod pg_catalog_pool;
mod pg_code_bodies;
mod pg_drivers;
mod pg_equated;
mod pg_function_rules;
mod pg_grammar;
mod pg_implicit_code;
mod pg_limits;
mod pg_parse_off_thread;
mod pg_pipeline;
mod pg_read_only;
mod pg_read_only_live;
mod pg_rows_affected;
mod pg_settings;
mod proxy;
mod recording;
mod recording_prepared;
mod recording_rolled_back;
mod serving_settings;
mod sql_soundness;
