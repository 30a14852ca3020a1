//! The verbs: get, list, create, update, patch, delete, and what they do to
//! stored objects (status/main split, generation, finalizers, cascades).

mod checks;
mod crd;
mod create;
mod defaults;
mod delete;
mod namespaces;
mod object;
mod read;
mod update;

pub(super) use create::create;
pub(super) use delete::{delete, delete_collection};
pub(super) use namespaces::seed_namespace;
pub use object::{partial, present};
pub(super) use read::{get, list, matches, selectors};
pub(super) use update::{patch, update};
