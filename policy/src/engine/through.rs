//! Decisions made stricter through what a statement's names stand for in
//! the database (see [`PolicySet::through_relations`]): the relations a
//! view or a partition reaches, the functions views call, and the bodies
//! of the user-defined functions a statement runs.

use std::collections::{HashMap, HashSet};

use sluice_crds::StatementKind;

use super::PolicySet;
use super::decision::{Decision, SqlDecision, Verdict};
use crate::sql::{Statement, normalize_name};

/// What a name a statement gives stands for beyond itself, as the
/// database's catalog says (see [`PolicySet::through_relations`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reach {
    /// The relations whose rows a statement reads or writes under the name
    /// (a view's tables, through views over views; a partition's
    /// partitioned table; an `INHERITS` parent or child), as
    /// `schema.name` or as a view's definition names them.
    pub relations: Vec<String>,
    /// The functions the definitions of the views the name stands for call
    /// (views over views included), each after the view whose definition
    /// calls it (`schema.name`): reading the view runs them. Names as the
    /// SQL classifier gives them.
    pub functions: Vec<(String, String)>,
    /// The words of the code that runs when a statement writes under the
    /// name without naming it (the functions its triggers, column
    /// defaults, constraints, indexes and row security policies call,
    /// with their bodies' words, and its rewrite rules' definitions),
    /// each after what runs it: counted as a user-defined function's body
    /// is (functions called, tables touched, statement kinds run) for a
    /// statement of any kind but a read, a `SET` or transaction control.
    pub on_write: Vec<(String, String)>,
    /// Whether that code runs on a read too (a row security policy calls
    /// a user-defined function).
    pub on_read: bool,
    /// What a foreign key's action writes when a statement of a kind
    /// writes under the name: (the kind that fires it, what runs it, word),
    /// the words being the kind of write it does and the table it writes
    /// (`DELETE FROM orders` deletes the `customers` rows whose key cascades
    /// from it; `TRUNCATE orders CASCADE` empties every table referencing
    /// it), matched as the code a write runs ([`Reach::on_write`]).
    pub cascades: Vec<(StatementKind, String, String)>,
}

impl PolicySet {
    /// `decided` made stricter by the deny and requireApproval rules that
    /// match a statement through what its names stand for: `related` gives,
    /// per table name of the statements, the [`Reach`] of that name (the
    /// relations whose rows the statement reads or writes under the name it
    /// gives: a view's tables, a partition's partitioned table, an
    /// `INHERITS` parent or child; and the functions the views' definitions
    /// call, which run when the view is read); `functions` gives, per
    /// function name the statements (or those views) call, what it calls in
    /// turn ([`Reach::functions`]: a user-defined function's body). A name
    /// missing from either reaches nothing. Allow rules are not matched
    /// through them: a wider reading must never loosen a decision. `None`
    /// when no decision gets stricter.
    pub fn through_relations(
        &self,
        decided: &SqlDecision,
        related: &HashMap<String, Reach>,
        functions: &HashMap<String, Reach>,
    ) -> Option<SqlDecision> {
        let mut changed = false;
        let statements: Vec<(Statement, Decision)> = decided
            .statements
            .iter()
            .map(|(s, d)| {
                let stricter = self.stricter_through(s, d, related, functions);
                changed |= stricter.is_some();
                (s.clone(), stricter.unwrap_or_else(|| d.clone()))
            })
            .collect();
        if !changed {
            return None;
        }
        let decision = self.combine_statements(&statements);
        Some(SqlDecision {
            decision,
            statements,
            ..decided.clone()
        })
    }

    /// `d` made stricter by the deny and requireApproval rules that match
    /// `s` through what its names reach ([`PolicySet::through_relations`]),
    /// the reason naming the names that reach a relation or call a function
    /// such a rule names (`cv reaches customers`, `v calls pg_read_file`,
    /// `vv reaches public.v, which calls pg_read_file`, `f calls
    /// pg_read_file` of a user-defined function `f`, `f's body names
    /// customers`). `None` when it gets no stricter.
    fn stricter_through(
        &self,
        s: &Statement,
        d: &Decision,
        related: &HashMap<String, Reach>,
        functions: &HashMap<String, Reach>,
    ) -> Option<Decision> {
        let (reached, called, body) = reached_by(s, related, functions);
        // What the database runs unnamed (`functions` is shadowed below).
        let implicit = functions
            .get(IMPLICIT_CODE)
            .filter(|_| runs_implicit_code(s));
        if reached.is_empty() && called.is_empty() && body.is_empty() {
            return None;
        }
        let verdicts_of = |wider: &Statement| -> Vec<Verdict> {
            self.policies
                .iter()
                .filter_map(|p| p.restrictive_verdict(wider))
                .collect()
        };
        // The statement itself, with what its names reach and the
        // functions it calls through them.
        let restrictive = |tables: &[&str], functions: &[&str]| {
            let mut wider = s.clone();
            wider.tables.extend(tables.iter().map(|t| (*t).to_string()));
            wider
                .functions
                .extend(functions.iter().map(|f| (*f).to_string()));
            verdicts_of(&wider)
        };
        // The code it runs without naming it, as a statement of its own:
        // every word of it may be a table it touches or a function it
        // calls, every statement keyword a kind of statement it runs, and
        // its UPDATE or DELETE may have no WHERE.
        let body_kinds = kinds_named(body.iter().map(|(_, w)| *w));
        let body_writes = body.iter().any(|(_, w)| matches!(*w, "delete" | "update"));
        let restrictive_body = |words: &[&str], kinds: &[StatementKind]| {
            let mut code = s.clone();
            code.kinds = kinds.to_vec();
            code.tables = words.iter().map(|w| (*w).to_string()).collect();
            code.functions.clone_from(&code.tables);
            let mut verdicts = verdicts_of(&code);
            if body_writes && !code.without_where {
                code.without_where = true;
                verdicts.extend(verdicts_of(&code));
            }
            verdicts
        };
        let tables: Vec<&str> = reached.iter().map(|(_, r)| *r).collect();
        let functions: Vec<&str> = called.iter().map(|(_, _, f)| *f).collect();
        let mut verdicts = restrictive(&tables, &functions);
        if !body.is_empty() {
            let words: Vec<&str> = body.iter().map(|(_, w)| *w).collect();
            verdicts.extend(restrictive_body(&words, &body_kinds));
        }
        let mut stricter = (!verdicts.is_empty()).then(|| Decision::combine(&verdicts))?;
        if (stricter.enforced, stricter.action) <= (d.enforced, d.action) {
            return None;
        }
        // Only now (a refusal or a hold): which of what they reach a rule names.
        let mut through: Vec<String> = reached
            .iter()
            .filter(|(_, r)| !restrictive(&[r], &[]).is_empty())
            .map(|(name, r)| format!("{name} reaches {r}"))
            .collect();
        through.extend(
            called
                .iter()
                .filter(|(_, _, f)| !restrictive(&[], &[f]).is_empty())
                .map(|(name, view, f)| {
                    if last_segment(name).eq_ignore_ascii_case(last_segment(view)) {
                        format!("{name} calls {f}")
                    } else {
                        format!("{name} reaches {view}, which calls {f}")
                    }
                }),
        );
        if through.is_empty() && !body.is_empty() {
            through.extend(body_reasons(
                &body,
                &body_kinds,
                |w: &[&str], k: &[StatementKind]| !restrictive_body(w, k).is_empty(),
            ));
            // Which of those bodies the database runs unnamed, and for what.
            let runs: Vec<String> = implicit
                .iter()
                .flat_map(|r| r.functions.iter())
                .filter(|(_, f)| {
                    let own = format!("{f}'s body");
                    through.iter().any(|t| t.starts_with(&own))
                })
                .map(|(what, f)| {
                    format!("the database runs {f} for {what}, whatever the statement says")
                })
                .collect();
            through.extend(runs);
        }
        if !through.is_empty() {
            stricter.reason = format!("{} ({})", stricter.reason, through.join(", "));
        }
        Some(stricter)
    }
}

impl PolicySet {
    /// Why `s` must be refused because it renames a table a rule that
    /// denies or holds names (`ALTER TABLE customers RENAME TO c2`, MySQL
    /// `RENAME TABLE`): the rules match names, so the table's rows would be
    /// written under the new one unguarded; or drops a schema with its
    /// tables (`DROP SCHEMA s CASCADE`) while such a rule applies to drops.
    /// `None` when it does neither, or a renamed table's new name is
    /// matched as well.
    pub(super) fn renames_ruled_table(&self, s: &Statement) -> Option<Decision> {
        use sqlparser::ast::{AlterTableOperation, RenameTableNameKind, Statement as Ast};
        if !self.restrictive_tables {
            return None;
        }
        // `DROP SCHEMA s CASCADE` drops the tables of `s` unnamed.
        if let Ast::Drop {
            object_type: sqlparser::ast::ObjectType::Schema,
            cascade: true,
            names,
            ..
        } = &s.ast
        {
            let (policy, rule) = self.policies.iter().find_map(|p| {
                p.restrictive_table_rule_for(StatementKind::Drop)
                    .map(|r| (p.name.as_str(), r))
            })?;
            let schemas: Vec<String> = names.iter().map(|n| normalize_name(n, true)).collect();
            return Some(Decision::refused_by_sluice(&format!(
                "drops schema {} with every table in it, which rule {rule} of AccessPolicy {policy} may name: the rules match tables by name, not schemas; drop the tables one by one",
                schemas.join(", ")
            )));
        }
        // `ALTER SCHEMA s RENAME TO t` renames every table of `s`.
        if let Ast::AlterSchema(a) = &s.ast
            && a.operations
                .iter()
                .any(|op| matches!(op, sqlparser::ast::AlterSchemaOperation::Rename { .. }))
        {
            let (policy, rule) = self
                .policies
                .iter()
                .enumerate()
                .find_map(|(i, p)| p.restrictive_qualified_table_rule().map(|r| (i, r)))?;
            return self.decided_by(
                policy,
                rule,
                &format!(
                    "renames schema {}, whose tables the rule may name with their schema: rules match names, so their rows would be written under the new one unguarded; ask an administrator to rename it and the rule together",
                    normalize_name(&a.name, true)
                ),
            );
        }
        let renames: Vec<(String, String)> = match &s.ast {
            Ast::AlterTable(at) => at
                .operations
                .iter()
                .filter_map(|op| match op {
                    AlterTableOperation::RenameTable {
                        table_name: RenameTableNameKind::As(to) | RenameTableNameKind::To(to),
                    } => Some((normalize_name(&at.name, true), normalize_name(to, true))),
                    _ => None,
                })
                .collect(),
            Ast::RenameTable(renames) => renames
                .iter()
                .map(|r| {
                    (
                        normalize_name(&r.old_name, true),
                        normalize_name(&r.new_name, true),
                    )
                })
                .collect(),
            _ => return None,
        };
        // (policy, rule) of the deny/hold rules on tables matching `name`.
        let ruled = |name: &str| -> Vec<(usize, &str)> {
            let mut probe = s.clone();
            probe.kinds = ALL_KINDS.to_vec();
            probe.tables = vec![name.to_string()];
            let mut rules = Vec::new();
            for without_where in [false, true] {
                probe.without_where = without_where;
                for (i, p) in self.policies.iter().enumerate() {
                    rules.extend(
                        p.restrictive_table_rules_matching(&probe)
                            .into_iter()
                            .map(|r| (i, r)),
                    );
                }
            }
            rules
        };
        // Decided by the rule the table would escape, on record with it.
        renames.iter().find_map(|(from, to)| {
            let after = ruled(to);
            let (policy, rule) = ruled(from).into_iter().find(|r| !after.contains(r))?;
            self.decided_by(
                policy,
                rule,
                &format!(
                    "renames table {from}, which the rule names: rules match names, so its rows would be written under the new one unguarded; ask an administrator to rename it and the rule together"
                ),
            )
        })
    }

    /// The decision of rule `rule` of the `policy`-th policy, its reason
    /// followed by `why`.
    fn decided_by(&self, policy: usize, rule: &str, why: &str) -> Option<Decision> {
        let verdict = self.policies.get(policy)?.verdict_of(rule)?;
        let mut decision = Decision::combine(&[verdict]);
        decision.reason = format!("{} ({why})", decision.reason);
        Some(decision)
    }
}

/// Every statement kind, for [`PolicySet::renames_ruled_table`].
const ALL_KINDS: [StatementKind; 19] = [
    StatementKind::Select,
    StatementKind::Insert,
    StatementKind::Update,
    StatementKind::Delete,
    StatementKind::Merge,
    StatementKind::Copy,
    StatementKind::Create,
    StatementKind::Alter,
    StatementKind::Drop,
    StatementKind::Truncate,
    StatementKind::Grant,
    StatementKind::Revoke,
    StatementKind::Set,
    StatementKind::Call,
    StatementKind::Do,
    StatementKind::Begin,
    StatementKind::Commit,
    StatementKind::Rollback,
    StatementKind::Other,
];

/// The words of code (a function's or trigger's body, a rule's
/// definition), lower case, sorted, deduplicated: runs of letters, digits,
/// `_` and `$` not starting with a digit, and also each run's pieces
/// between `$`s (a dollar quote's tag hides the word it touches:
/// PostgreSQL's `pg_get_functiondef` writes `AS $function$DELETE FROM …`,
/// while `$` is also a letter of names). What [`Reach::on_write`] and a
/// body's [`Reach::functions`] hold.
pub fn code_words(code: &str) -> Vec<String> {
    let mut out: Vec<String> = code
        .split(|c: char| !(c.is_alphanumeric() || c == '_' || c == '$'))
        .flat_map(|run| {
            let pieces = run
                .contains('$')
                .then(|| run.split('$'))
                .into_iter()
                .flatten();
            std::iter::once(run).chain(pieces)
        })
        .filter(|w| w.chars().next().is_some_and(|c| !c.is_ascii_digit()))
        .map(str::to_lowercase)
        .collect();
    out.sort();
    out.dedup();
    out
}

/// Whether `s` runs the code a table runs on a write ([`Reach::on_write`]):
/// a statement of any kind (nested ones included) but a read, a `SET` or
/// transaction control.
pub fn runs_code_on_write(s: &Statement) -> bool {
    s.kinds
        .iter()
        .any(|k| *k != StatementKind::Select && !is_session_control(*k))
}

/// The key, among the functions of [`PolicySet::through_relations`], of
/// the code the database runs without a statement naming it or a table it
/// names (a cast's, an operator's or a domain check's function, an event
/// trigger's): its [`Reach::functions`] are (what runs it, function), and
/// the functions' bodies are keyed by their names as any other's. Taken as
/// run by every statement [`runs_implicit_code`] says: an implicit cast or
/// a domain's default runs with no syntax at all.
pub const IMPLICIT_CODE: &str = "(implicit code)";

/// Whether `s` may run the code of [`IMPLICIT_CODE`]: a statement of any
/// kind (nested ones included) but a `SET` or transaction control.
pub fn runs_implicit_code(s: &Statement) -> bool {
    s.kinds.iter().any(|k| !is_session_control(*k))
}

/// `SET` and transaction control: no code of the database's runs for them.
fn is_session_control(k: StatementKind) -> bool {
    matches!(
        k,
        StatementKind::Set | StatementKind::Begin | StatementKind::Commit | StatementKind::Rollback
    )
}

/// (name, relation reached), (name, view, function called) and
/// (user-defined function, word of its body) of what the names of `s`
/// reach and the functions it (and those views) calls call in turn.
#[allow(clippy::type_complexity)]
fn reached_by<'a>(
    s: &'a Statement,
    related: &'a HashMap<String, Reach>,
    functions: &'a HashMap<String, Reach>,
) -> (
    Vec<(&'a str, &'a str)>,
    Vec<(&'a str, &'a str, &'a str)>,
    Vec<(&'a str, &'a str)>,
) {
    let mut reached: Vec<(&str, &str)> = Vec::new();
    let mut called: Vec<(&str, &str, &str)> = Vec::new();
    let mut body: Vec<(&str, &str)> = Vec::new();
    let writes = runs_code_on_write(s);
    for name in &s.tables {
        let Some(reach) = related.get(name) else {
            continue;
        };
        if writes || reach.on_read {
            for (via, w) in &reach.on_write {
                if !body.iter().any(|(_, x)| x == w) {
                    body.push((via, w));
                }
                if !s.functions.contains(w) && !called.iter().any(|(_, _, x)| x == w) {
                    called.push((name, via, w));
                }
            }
        }
        for (kind, via, w) in &reach.cascades {
            let fires = s.kinds.contains(kind)
                || (s.kinds.contains(&StatementKind::Merge) && *kind != StatementKind::Truncate);
            if fires && !body.iter().any(|(_, x)| x == w) {
                body.push((via, w));
            }
        }
        for r in &reach.relations {
            if !s.tables.contains(r) && !reached.iter().any(|(_, x)| x == r) {
                reached.push((name, r));
            }
        }
        for (view, f) in &reach.functions {
            if !s.functions.contains(f) && !called.iter().any(|(_, _, x)| x == f) {
                called.push((name, view, f));
            }
        }
    }
    // The code the database runs without the statement naming it.
    if runs_implicit_code(s) {
        for (what, f) in functions
            .get(IMPLICIT_CODE)
            .iter()
            .flat_map(|r| r.functions.iter())
        {
            if !body.iter().any(|(_, w)| w == f) {
                body.push((what, f));
            }
            if !s.functions.contains(f) && !called.iter().any(|(_, _, x)| x == f) {
                called.push((what, what, f));
            }
        }
    }
    // What the functions called (by the statement, or by those views)
    // call in turn: the words of user-defined functions' bodies.
    let direct: Vec<&str> = s.functions.iter().map(String::as_str).collect();
    let through_views: Vec<&str> = called.iter().map(|(_, _, f)| *f).collect();
    for name in direct.into_iter().chain(through_views) {
        for (via, f) in functions.get(name).iter().flat_map(|r| r.functions.iter()) {
            if !body.iter().any(|(_, w)| w == f) {
                body.push((via, f));
            }
            if !s.functions.contains(f) && !called.iter().any(|(_, _, x)| x == f) {
                called.push((name, via, f));
            }
        }
    }
    follow_words(&mut body, related, functions);
    (reached, called, body)
}

/// Adds to `body` (what runs words of code, word) what its words name in
/// turn: a word naming a relation (`DELETE FROM cv` in a body, `cv` a view
/// of `customers`) adds the relations it reaches, the functions its views
/// call with their bodies' words, and its own code on a write (the code
/// may write it); a word naming a user-defined function adds its body's
/// words. Each word once.
fn follow_words<'a>(
    body: &mut Vec<(&'a str, &'a str)>,
    related: &'a HashMap<String, Reach>,
    functions: &'a HashMap<String, Reach>,
) {
    let mut seen: HashSet<&str> = body.iter().map(|(_, w)| *w).collect();
    let mut next = 0;
    while next < body.len() {
        let (_, word) = body[next];
        next += 1;
        let mut found: Vec<(&str, &str)> = Vec::new();
        if let Some(reach) = related.get(word) {
            found.extend(reach.relations.iter().map(|r| (word, r.as_str())));
            found.extend(
                reach
                    .functions
                    .iter()
                    .map(|(v, f)| (v.as_str(), f.as_str())),
            );
            found.extend(reach.on_write.iter().map(|(v, w)| (v.as_str(), w.as_str())));
        }
        if let Some(reach) = functions.get(word) {
            found.extend(
                reach
                    .functions
                    .iter()
                    .map(|(v, w)| (v.as_str(), w.as_str())),
            );
        }
        for (via, w) in found {
            if seen.insert(w) {
                body.push((via, w));
            }
        }
    }
}

/// The statement kinds a function body's words name (lower case), and
/// `select` and `other` always: what the body runs, read conservatively
/// (more refused, never less).
fn kinds_named<'a>(words: impl Iterator<Item = &'a str>) -> Vec<StatementKind> {
    let mut kinds = vec![StatementKind::Select, StatementKind::Other];
    for w in words {
        kinds.push(match w {
            "select" | "values" | "table" | "show" | "perform" => StatementKind::Select,
            "insert" => StatementKind::Insert,
            "update" => StatementKind::Update,
            "delete" => StatementKind::Delete,
            "merge" => StatementKind::Merge,
            "copy" => StatementKind::Copy,
            "create" => StatementKind::Create,
            "alter" => StatementKind::Alter,
            "drop" => StatementKind::Drop,
            "truncate" => StatementKind::Truncate,
            "grant" => StatementKind::Grant,
            "revoke" => StatementKind::Revoke,
            "set" | "reset" => StatementKind::Set,
            "call" => StatementKind::Call,
            "do" => StatementKind::Do,
            "begin" | "start" | "savepoint" => StatementKind::Begin,
            "commit" | "release" | "end" => StatementKind::Commit,
            "rollback" | "abort" => StatementKind::Rollback,
            _ => continue,
        });
    }
    kinds.sort();
    kinds.dedup();
    kinds
}

/// Why a body makes a statement stricter: `f's body may run drop` when the
/// kinds its words name are enough, else `f's body names customers` for
/// each word a rule names as a table (`matches(words, kinds)`: whether a
/// rule that denies or holds matches with them).
fn body_reasons(
    body: &[(&str, &str)],
    kinds: &[StatementKind],
    matches: impl Fn(&[&str], &[StatementKind]) -> bool,
) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    if matches(&[], kinds) {
        let named: Vec<&str> = kinds
            .iter()
            .filter(|k| matches(&[], &[**k]))
            .map(|k| k.as_str())
            .collect();
        for (via, _) in body {
            let reason = format!("{} may run {}", runner(via), named.join(", "));
            if !out.contains(&reason) {
                out.push(reason);
            }
        }
        return out;
    }
    for (via, w) in body {
        if matches(&[w], kinds) {
            out.push(format!("{} names {w}", runner(via)));
        }
    }
    out
}

/// What runs words of a body, for a reason: `f's body` of a function `f`;
/// a description (`the rules on orders`) as it is.
fn runner(via: &str) -> String {
    if via.contains(' ') {
        via.to_string()
    } else {
        format!("{via}'s body")
    }
}

/// The last dot-separated segment of a name (`v` of `public.v`).
fn last_segment(name: &str) -> &str {
    name.rsplit('.').next().unwrap_or(name)
}
