//! User-defined code a statement runs without naming it: the triggers,
//! rules, column defaults, constraints, indexes and row security policies
//! of the tables it names, when they depend on a user-defined function or
//! operator. Such code may run DDL and change what names stand for (see
//! `postgres::session::catalog_changes`), so a statement that runs it
//! counts as a catalog change. Found by the lookup that follows a name
//! ([`Catalog::related_names`]), cached with it.

use super::{Catalog, name_key, user_defined_function};

/// User-defined code the tables of a relation name run without a statement
/// naming it (see `user_code_flags`): a body that may run DDL and change
/// what names stand for (see `postgres::session::catalog_changes`).
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct UserCode {
    /// On a write (triggers, rules, defaults, constraints, indexes,
    /// policies).
    pub(super) on_write: bool,
    /// On a read too (row security policies).
    pub(super) on_read: bool,
}

/// What user-defined code the relation `rel` (an alias of `pg_class`) runs
/// without a statement naming it, as text: `w` when its triggers, rules,
/// column defaults, constraints, indexes or row security policies depend
/// on a user-defined function or operator (they may run on a write), `r`
/// when row security is on and a policy does (it runs on a read too).
/// Objects of the relation are those that depend on it automatically
/// (`deptype 'a'`); user-defined as in `Catalog::user_functions`.
pub(super) fn user_code_flags(rel: &str) -> String {
    let function = user_defined_function("p", "pn");
    let user = format!(
        "((d2.refclassid = 'pg_catalog.pg_proc'::pg_catalog.regclass AND EXISTS (SELECT 1 \
           FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace pn ON pn.oid = p.pronamespace \
           WHERE p.oid = d2.refobjid AND {function})) \
         OR (d2.refclassid = 'pg_catalog.pg_operator'::pg_catalog.regclass AND EXISTS (SELECT 1 \
           FROM pg_catalog.pg_operator o JOIN pg_catalog.pg_namespace pn ON pn.oid = o.oprnamespace \
           WHERE o.oid = d2.refobjid AND pn.nspname NOT IN ('pg_catalog', 'information_schema'))))"
    );
    let depends = |only: &str| {
        format!(
            "EXISTS (SELECT 1 FROM pg_catalog.pg_depend d1 JOIN pg_catalog.pg_depend d2 \
               ON d2.classid = d1.classid AND d2.objid = d1.objid \
             WHERE d1.refclassid = 'pg_catalog.pg_class'::pg_catalog.regclass \
               AND d1.refobjid = {rel}.oid AND d1.deptype = 'a'{only} AND {user})"
        )
    };
    format!(
        "pg_catalog.concat(CASE WHEN {write} THEN 'w' END, CASE WHEN {rel}.relrowsecurity AND {read} THEN 'r' END)",
        write = depends(""),
        read = depends(" AND d1.classid = 'pg_catalog.pg_policy'::pg_catalog.regclass"),
    )
}

impl Catalog {
    /// Whether a statement naming `table` (as written) runs user-defined
    /// code through it (see `user_code_flags`): on a write, or on any
    /// statement. `None` when the name was not looked up.
    pub fn runs_user_code_on(&self, table: &str, write: bool) -> Option<bool> {
        let code = self.user_code.get(&name_key(table))?;
        Some(code.on_read || (write && code.on_write))
    }

    /// Whether every one of `tables` (as written) was looked up and runs no
    /// user-defined code a statement does not name.
    pub fn tables_run_no_user_code(&self, tables: &[String]) -> bool {
        tables.iter().all(|t| {
            self.user_code
                .get(&name_key(t))
                .is_some_and(|c| !c.on_write && !c.on_read)
        })
    }
}
