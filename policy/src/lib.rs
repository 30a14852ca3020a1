//! Sluice's decision engine: pure functions and plain data, no I/O, no async,
//! no clock (callers pass times in).
//!
//! Used by the sidecar (deciding, masking, auditing), the operator (validating
//! and compiling policies, serving the gateway API) and the CLI (dry runs, audit
//! verification). One module a concept, the lower ones first:
//! - [`sql`]: SQL classification (statement kinds, tables, functions, redaction,
//!   fingerprint);
//! - [`mask_plan`]: which result columns must be masked, soundly, for a statement,
//!   and which statements would launder masked values;
//! - [`detectors`] and [`masker`]: finding sensitive values and replacing them;
//! - [`json_path`] and [`json_mask`]: the JSONPath subset, and masking JSON values
//!   by path and detector;
//! - [`http`]: HTTP request matching and the request grammar (paths, query
//!   strings, strict JSON bodies);
//! - [`engine`]: compiled policies and the decision semantics (docs/DESIGN.md §2);
//! - [`pg_grammar`]: PostgreSQL's own grammar as a second reading of SQL texts;
//! - [`audit`]: audit events, the hash chain and its verification;
//! - [`wire`]: the JSON of the operator's gateway API, one definition for the
//!   operator and the sidecar.
#![forbid(unsafe_code)]

pub mod audit;
pub mod detectors;
pub mod engine;
pub mod http;
pub mod json_mask;
pub mod json_path;
pub mod mask_plan;
pub mod masker;
pub mod pg_grammar;
pub mod sql;
pub mod wire;
