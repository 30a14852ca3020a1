//! User-defined code a statement runs without naming it: the triggers,
//! rules, column defaults, constraints, indexes and row security policies
//! of the tables it names, when they depend on a user-defined function or
//! operator. Such code may run DDL and change what names stand for (see
//! `postgres::session::catalog_changes`), so a statement that runs it
//! counts as a catalog change. Found by the lookup that follows a name
//! ([`Catalog::related_names`]), cached with it.

use std::collections::HashMap;

use sluice_policy::engine::Reach;

use super::{Catalog, name_key, user_defined_function};

/// User-defined code the tables of a relation name run without a statement
/// naming it (see `user_code_flags`): a body that may run DDL and change
/// what names stand for (see `postgres::session::catalog_changes`).
#[derive(Debug, Default, Clone)]
pub(super) struct UserCode {
    /// On a write (triggers, rules, defaults, constraints, indexes,
    /// policies).
    pub(super) on_write: bool,
    /// On a read too (row security policies).
    pub(super) on_read: bool,
    /// The functions that code calls (see `user_code_functions`).
    pub(super) functions: Vec<String>,
    /// The words of the relation's rewrite rules' definitions (see
    /// `rule_definitions`).
    pub(super) rule_words: Vec<String>,
}

/// The names of the functions the relation `rel`'s objects (triggers,
/// rules, column defaults, constraints, indexes, row security policies)
/// depend on, directly or as an operator's function, comma-separated: any
/// function the catalog records a dependency on (built-ins are pinned and
/// never recorded), user-defined or an extension's.
pub(super) fn user_code_functions(rel: &str) -> String {
    format!(
        "(SELECT pg_catalog.string_agg(DISTINCT p.proname::text, ',') \
           FROM pg_catalog.pg_depend d1 JOIN pg_catalog.pg_depend d2 \
             ON d2.classid = d1.classid AND d2.objid = d1.objid \
           JOIN pg_catalog.pg_proc p ON p.oid = CASE \
             WHEN d2.refclassid = 'pg_catalog.pg_proc'::pg_catalog.regclass THEN d2.refobjid \
             WHEN d2.refclassid = 'pg_catalog.pg_operator'::pg_catalog.regclass THEN \
               (SELECT o.oprcode::pg_catalog.oid FROM pg_catalog.pg_operator o WHERE o.oid = d2.refobjid) END \
           WHERE d1.refclassid = 'pg_catalog.pg_class'::pg_catalog.regclass \
             AND d1.refobjid = {rel}.oid AND d1.deptype = 'a')"
    )
}

/// The definitions of the relation `rel`'s rewrite rules other than a
/// view's own (`CREATE RULE … DO ALSO DELETE FROM …`), space-separated.
pub(super) fn rule_definitions(rel: &str) -> String {
    format!(
        "(SELECT pg_catalog.string_agg(pg_catalog.pg_get_ruledef(r.oid), ' ') \
           FROM pg_catalog.pg_rewrite r WHERE r.ev_class = {rel}.oid AND r.rulename <> '_RETURN')"
    )
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

/// Rules' definitions (`pg_get_ruledef`) without their events (`ON INSERT
/// TO t`): the event is no statement a rule runs, its action is.
pub(super) fn without_events(rules: &str) -> String {
    let mut out = rules.to_string();
    for event in [
        "ON INSERT TO",
        "ON UPDATE TO",
        "ON DELETE TO",
        "ON SELECT TO",
    ] {
        out = out.replace(event, "ON TO");
    }
    out
}

impl Catalog {
    /// Whether a statement naming `table` (as written) runs user-defined
    /// code through it (see `user_code_flags`): on a write, or on any
    /// statement. `None` when the name was not looked up.
    pub fn runs_user_code_on(&self, table: &str, write: bool) -> Option<bool> {
        let code = self.user_code.get(&name_key(table))?;
        Some(code.on_read || (write && code.on_write))
    }

    /// What runs when a statement writes under `table` (as written)
    /// without naming it: the functions its objects call, the words of its
    /// rewrite rules, and whether that code runs on a read too. `None`
    /// when the name was not looked up or runs nothing of the kind.
    pub fn code_on_write(&self, table: &str) -> Option<(&[String], &[String], bool)> {
        let code = self.user_code.get(&name_key(table))?;
        (!code.functions.is_empty() || !code.rule_words.is_empty()).then_some((
            code.functions.as_slice(),
            code.rule_words.as_slice(),
            code.on_read,
        ))
    }

    /// The names the code of `tables` (as written) runs on a write calls
    /// or may call ([`Catalog::code_on_write`]: functions, and the words of
    /// rules, which may name functions), to follow into bodies
    /// ([`Catalog::called_through_functions`]).
    pub fn code_names(&self, tables: &[String]) -> Vec<String> {
        let mut names: Vec<String> = tables
            .iter()
            .filter_map(|t| self.code_on_write(t))
            .flat_map(|(functions, rules, _)| functions.iter().chain(rules))
            .cloned()
            .collect();
        names.sort();
        names.dedup();
        names
    }

    /// Adds to `related` what runs when a statement writes under each of
    /// `tables` ([`Reach::on_write`], [`Reach::on_read`]): the functions
    /// its code calls and their bodies' words (`bodies`: what
    /// [`Catalog::called_through_functions`] gave for
    /// [`Catalog::code_names`]), and its rules' words.
    pub fn add_code_on_write(
        &self,
        tables: &[String],
        related: &mut HashMap<String, Reach>,
        bodies: &HashMap<String, Reach>,
    ) {
        for table in tables {
            let Some((functions, rules, on_read)) = self.code_on_write(table) else {
                continue;
            };
            let reach = related.entry(table.clone()).or_default();
            reach.on_read |= on_read;
            let rules_of = format!("a rule on {table}");
            for w in rules {
                reach.on_write.push((rules_of.clone(), w.clone()));
            }
            let code_of = format!("the code of {table}");
            for f in functions.iter().chain(rules) {
                if functions.contains(f) {
                    reach.on_write.push((code_of.clone(), f.clone()));
                }
                for (via, w) in bodies.get(f).iter().flat_map(|b| b.functions.iter()) {
                    reach.on_write.push((via.clone(), w.clone()));
                }
            }
            reach.on_write.sort();
            reach.on_write.dedup();
        }
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
