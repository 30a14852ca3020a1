//! User-defined code a statement runs without naming it: the triggers,
//! rules, column defaults, constraints, indexes and row security policies
//! of the tables it names, when they depend on a user-defined function or
//! operator. Such code may run DDL and change what names stand for (see
//! `postgres::session::catalog_changes`), so a statement that runs it
//! counts as a catalog change. Found by the lookup that follows a name
//! ([`Catalog::related_names`]), cached with it.

use std::collections::HashMap;

use sluice_crds::StatementKind;
use sluice_policy::engine::{Reach, code_words};

use super::{Catalog, RelName, name_key, user_defined_function};

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
    /// What the foreign keys referencing it write (see `foreign_key_actions`):
    /// (the kind of write that fires it, the kind it does, the table).
    pub(super) cascades: Vec<(String, String, String)>,
}

/// A function name that stands for code whose names could not be read:
/// no user-defined function has it, so following it finds nothing; it is
/// followed as a word, never dropped.
const UNREADABLE: &str = "(unreadable)";

/// The relation `rel` (an alias of `pg_class`) and its descendants
/// (partitions, `INHERITS` children, as deep as
/// [`super::MAX_INHERITANCE_DEPTH`]), as a subquery of OIDs: a write to a
/// table writes their rows too, so their triggers, constraints, indexes
/// and foreign keys run for it (`INSERT INTO parted …` fires the trigger
/// of the partition the row lands in; `UPDATE parent …` a child's).
fn with_descendants(rel: &str) -> String {
    format!(
        "(WITH RECURSIVE h(oid, depth) AS (SELECT {rel}.oid, 0 \
           UNION ALL SELECT i.inhrelid, h.depth + 1 FROM pg_catalog.pg_inherits i \
           JOIN h ON i.inhparent = h.oid WHERE h.depth < {depth}) SELECT oid FROM h)",
        depth = super::MAX_INHERITANCE_DEPTH,
    )
}

/// What the foreign keys that reference the relation `rel` write in their
/// tables, as a JSON array of `["fires:does", schema, table]`: a delete cascades
/// (`delete:delete`) or sets the key to NULL or its default
/// (`delete:update`), an update of the key likewise (`update:update`), and
/// `TRUNCATE … CASCADE` empties every referencing table
/// (`truncate:truncate`).
pub(super) fn foreign_key_actions(rel: &str) -> String {
    format!(
        "(SELECT pg_catalog.json_agg(pg_catalog.json_build_array(a.action, rn.nspname, rc.relname))::text \
           FROM pg_catalog.pg_constraint k \
           JOIN pg_catalog.pg_class rc ON rc.oid = k.conrelid \
           JOIN pg_catalog.pg_namespace rn ON rn.oid = rc.relnamespace \
           CROSS JOIN LATERAL (VALUES \
             (CASE k.confdeltype WHEN 'c' THEN 'delete:delete' WHEN 'n' THEN 'delete:update' WHEN 'd' THEN 'delete:update' END), \
             (CASE WHEN k.confupdtype IN ('c', 'n', 'd') THEN 'update:update' END), \
             ('truncate:truncate')) AS a(action) \
           WHERE k.contype = 'f' AND k.confrelid IN {tree} AND a.action IS NOT NULL)",
        tree = with_descendants(rel),
    )
}

/// The names of the functions the relation `rel`'s objects (triggers,
/// rules, column defaults, constraints, indexes, row security policies)
/// depend on, directly or as an operator's function, comma-separated: any
/// function the catalog records a dependency on (built-ins are pinned and
/// never recorded), user-defined or an extension's.
pub(super) fn user_code_functions(rel: &str) -> String {
    format!(
        "(SELECT pg_catalog.json_agg(DISTINCT p.proname::text)::text \
           FROM pg_catalog.pg_depend d1 JOIN pg_catalog.pg_depend d2 \
             ON d2.classid = d1.classid AND d2.objid = d1.objid \
           JOIN pg_catalog.pg_proc p ON p.oid = CASE \
             WHEN d2.refclassid = 'pg_catalog.pg_proc'::pg_catalog.regclass THEN d2.refobjid \
             WHEN d2.refclassid = 'pg_catalog.pg_operator'::pg_catalog.regclass THEN \
               (SELECT o.oprcode::pg_catalog.oid FROM pg_catalog.pg_operator o WHERE o.oid = d2.refobjid) END \
           WHERE d1.refclassid = 'pg_catalog.pg_class'::pg_catalog.regclass \
             AND d1.refobjid IN {tree} AND d1.deptype = 'a')",
        tree = with_descendants(rel),
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
    let depends = |of: &str, only: &str| {
        format!(
            "EXISTS (SELECT 1 FROM pg_catalog.pg_depend d1 JOIN pg_catalog.pg_depend d2 \
               ON d2.classid = d1.classid AND d2.objid = d1.objid \
             WHERE d1.refclassid = 'pg_catalog.pg_class'::pg_catalog.regclass \
               AND d1.refobjid {of} AND d1.deptype = 'a'{only} AND {user})"
        )
    };
    // A write runs its descendants' code too; a read only the policies of
    // the table it names.
    format!(
        "pg_catalog.concat(CASE WHEN {write} THEN 'w' END, CASE WHEN {rel}.relrowsecurity AND {read} THEN 'r' END)",
        write = depends(&format!("IN {}", with_descendants(rel)), ""),
        read = depends(
            &format!("= {rel}.oid"),
            " AND d1.classid = 'pg_catalog.pg_policy'::pg_catalog.regclass"
        ),
    )
}

/// Rules' definitions (`pg_get_ruledef`) without their headers (`CREATE
/// RULE r AS`) and events (`ON INSERT TO t`): neither is a statement a rule
/// runs, its action is (only a SELECT, INSERT, UPDATE, DELETE or NOTIFY).
pub(super) fn without_events(rules: &str) -> String {
    let mut out = rules.replace("CREATE RULE ", "RULE ");
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
    /// Reads a `t` row of the lookup (see `lookup_sql`): the table's flags
    /// (`user_code_flags`), the functions its code calls
    /// (`user_code_functions`), its rules' definitions (`rule_definitions`)
    /// and what the foreign keys referencing it write
    /// (`foreign_key_actions`).
    pub(super) fn read_code(
        &mut self,
        key: RelName,
        flags: Option<String>,
        functions: Option<String>,
        rules: Option<String>,
        cascades: Option<String>,
    ) {
        let flags = flags.unwrap_or_default();
        let code = self.user_code.entry(key).or_default();
        code.on_write |= flags.contains('w');
        code.on_read |= flags.contains('r');
        // JSON arrays: names may hold any character. One that does not
        // read is taken as code that cannot be told.
        let functions: Vec<String> = match functions.as_deref().map(serde_json::from_str) {
            None => Vec::new(),
            Some(Ok(names)) => names,
            Some(Err(_)) => vec![UNREADABLE.to_string()],
        };
        code.functions
            .extend(functions.iter().map(|f| f.to_lowercase()));
        code.rule_words.extend(
            rules
                .as_deref()
                .map(|rules| code_words(&without_events(rules)))
                .unwrap_or_default(),
        );
        let cascades: Vec<[String; 3]> = cascades
            .as_deref()
            .map(|c| serde_json::from_str(c).unwrap_or_else(|_| vec![Default::default()]))
            .unwrap_or_default();
        for [action, schema, table] in cascades {
            let (fires, does) = action.split_once(':').unwrap_or(("delete", "delete"));
            let target = format!("{schema}.{table}").to_lowercase();
            code.cascades
                .push((fires.to_string(), does.to_string(), target));
        }
    }

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

    /// Adds to `related` what the foreign keys referencing each of `tables`
    /// write ([`Reach::cascades`]).
    pub fn add_cascades(&self, tables: &[String], related: &mut HashMap<String, Reach>) {
        for table in tables {
            let Some(code) = self.user_code.get(&name_key(table)) else {
                continue;
            };
            if code.cascades.is_empty() {
                continue;
            }
            let reach = related.entry(table.clone()).or_default();
            for (fires, does, target) in &code.cascades {
                let kind = match fires.as_str() {
                    "delete" => StatementKind::Delete,
                    "update" => StatementKind::Update,
                    _ => StatementKind::Truncate,
                };
                let via = format!("the foreign key of {target} to {table}");
                reach.cascades.push((kind, via.clone(), does.clone()));
                reach.cascades.push((kind, via, target.clone()));
            }
            reach.cascades.sort();
            reach.cascades.dedup();
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rules_words_are_its_actions() {
        let words = code_words(&without_events(
            "CREATE RULE r AS\n    ON UPDATE TO public.t DO INSTEAD  DELETE FROM customers WHERE (customers.id = 1); \
             CREATE RULE pg_settings_u AS\n    ON UPDATE TO pg_catalog.pg_settings\n   WHERE (new.name = old.name) DO  SELECT set_config(old.name, new.setting, false) AS set_config",
        ));
        for w in ["delete", "customers", "select", "set_config"] {
            assert!(words.contains(&w.to_string()), "{w}: {words:?}");
        }
        // The header and the event are no statements the rules run.
        for w in ["create", "update"] {
            assert!(!words.contains(&w.to_string()), "{w}: {words:?}");
        }
    }
}
