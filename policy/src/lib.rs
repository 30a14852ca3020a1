//! Sluice's decision engine: pure functions and plain data, no I/O, no async.
//!
//! Used by the sidecar (enforcement), the operator (validation, compilation) and
//! the CLI (dry runs). Each module is one concept:
//! - [`sql`]: SQL classification (statement kind, tables, functions, fingerprint, redaction);
//! - [`mask_plan`]: which result columns must be masked, soundly, for a statement;
//! - [`detectors`] and [`masker`]: finding sensitive values and replacing them;
//! - [`http`]: HTTP request matching and JSON masking by path;
//! - [`engine`]: compiled policies and the decision semantics;
//! - [`pg_grammar`]: PostgreSQL's own grammar as a second reading of SQL texts;
//! - [`audit`]: audit events and the hash chain.
#![forbid(unsafe_code)]

pub mod audit;
pub mod detectors;
pub mod engine;
pub mod gateway;
pub mod http;
pub mod mask_plan;
pub mod masker;
pub mod pg_grammar;
pub mod sql;
