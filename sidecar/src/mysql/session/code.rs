//! Code a statement runs without naming it (#24, as on PostgreSQL): with a
//! rule denying deletes from `customers`, `SELECT f()` or `CALL p()` (a
//! stored routine whose body deletes from `customers`), an `INSERT` into a
//! table whose trigger does, and a `DELETE` of rows that a foreign key of
//! `customers` cascades from all deleted customers while the rules matched
//! only what the statement names. When rules that deny or hold name tables
//! (the views lookup runs then, see `relations`):
//! - a statement that writes asks `information_schema.TRIGGERS` for the
//!   triggers of the tables it names (their bodies) and
//!   `information_schema.REFERENTIAL_CONSTRAINTS` for the foreign keys
//!   referencing them (what their `ON DELETE` / `ON UPDATE` actions write);
//! - a statement that calls a function that is no built-in, or a procedure,
//!   asks `information_schema.ROUTINES` for their bodies (of that name in
//!   any schema: more, never fewer).
//!
//! The words of that code are matched as the PostgreSQL plane matches
//! them (`PolicySet::through_relations`: tables, functions, statement
//! keywords as kinds). Not followed: the routines those bodies call, and
//! views their words name (one level). The server shows a routine's body
//! only to its definer (or a user who may read every routine), and a
//! trigger only to a user with the `TRIGGER` privilege on its table: code
//! a more privileged role defined may not be seen, and is then matched
//! only by what the statement names (as code another role defined is out
//! of the masking's reach on both planes). Code this identity defines
//! through Sluice is always seen.

use std::collections::HashMap;

use sluice_crds::StatementKind;
use sluice_policy::engine::{Reach, code_words, runs_code_on_write};
use sluice_policy::sql::mysql_builtin;

use super::views::{self, MAX_CANDIDATES};
use super::*;

/// The most bytes of code one statement's lookup reads.
const MAX_CODE_BYTES: usize = 4 << 20;

impl Session<'_> {
    /// Adds to `related` the code a write under each name of `decided`
    /// (run in `database`) runs: its triggers' bodies and what the foreign
    /// keys referencing it write ([`Reach::on_write`], [`Reach::cascades`]);
    /// and gives the bodies of the stored routines it calls, keyed by the
    /// name as called ([`Reach::functions`]). Why not when they cannot be
    /// told.
    pub(super) async fn code_of(
        &mut self,
        decided: &SqlDecision,
        database: Option<&str>,
        related: &mut HashMap<String, Reach>,
    ) -> Result<Result<HashMap<String, Reach>, String>, SessionError> {
        let writes = decided
            .statements
            .iter()
            .any(|(s, _)| runs_code_on_write(s));
        if writes && let Err(why) = self.table_code(decided, database, related).await? {
            return Ok(Err(why));
        }
        let mut routines: Vec<String> = decided
            .statements
            .iter()
            .flat_map(|(s, _)| s.functions.iter())
            .filter(|f| !mysql_builtin(views::unqualified(f).as_str()))
            .cloned()
            .collect();
        routines.sort();
        routines.dedup();
        if routines.is_empty() {
            return Ok(Ok(HashMap::new()));
        }
        self.routine_bodies(&routines).await
    }

    /// The triggers and foreign keys of the tables `decided` names (see
    /// [`Session::code_of`]).
    async fn table_code(
        &mut self,
        decided: &SqlDecision,
        database: Option<&str>,
        related: &mut HashMap<String, Reach>,
    ) -> Result<Result<(), String>, SessionError> {
        let names = decided.table_names();
        let texts: Vec<&str> = decided
            .statements
            .iter()
            .map(|(s, _)| s.text.as_str())
            .collect();
        let candidates = match self.precise_candidates(&names, &texts, database) {
            Ok(c) => c,
            Err(why) => return Ok(Err(why)),
        };
        if candidates.is_empty() {
            return Ok(Ok(()));
        }
        let selects: Vec<String> = candidates
            .iter()
            .map(|(s, t, i)| {
                let (s, t) = (views::literal(s), views::literal(t));
                format!(
                    "SELECT CONCAT('t ', {i}, ' ', IFNULL(ACTION_STATEMENT, '')) FROM information_schema.TRIGGERS \
                     WHERE EVENT_OBJECT_SCHEMA = {s} AND EVENT_OBJECT_TABLE = {t} \
                     UNION ALL SELECT CONCAT('f ', {i}, ' ', REPLACE(DELETE_RULE, ' ', '_'), ' ', REPLACE(UPDATE_RULE, ' ', '_'), ' ', CONSTRAINT_SCHEMA, '.', TABLE_NAME) \
                     FROM information_schema.REFERENTIAL_CONSTRAINTS \
                     WHERE UNIQUE_CONSTRAINT_SCHEMA = {s} AND REFERENCED_TABLE_NAME = {t}"
                )
            })
            .collect();
        let Some(rows) = self.code_rows(&selects).await? else {
            return Ok(Err(
                "the server answered the lookup of triggers and foreign keys with an error".into(),
            ));
        };
        for row in rows {
            let mut parts = row.splitn(3, ' ');
            let (Some(what), Some(index), Some(rest)) = (parts.next(), parts.next(), parts.next())
            else {
                return Ok(Err("an answer Sluice does not read".into()));
            };
            let Some(name) = index.parse::<usize>().ok().and_then(|i| names.get(i)) else {
                return Ok(Err("an answer Sluice does not read".into()));
            };
            let reach = related.entry(name.clone()).or_default();
            if what == "t" {
                let via = format!("a trigger on {name}");
                reach
                    .on_write
                    .extend(code_words(rest).into_iter().map(|w| (via.clone(), w)));
            } else {
                add_cascade(reach, rest);
            }
        }
        Ok(Ok(()))
    }

    /// The bodies of the stored routines of the names `routines` (see
    /// [`Session::code_of`]).
    async fn routine_bodies(
        &mut self,
        routines: &[String],
    ) -> Result<Result<HashMap<String, Reach>, String>, SessionError> {
        if routines.len() > MAX_CANDIDATES {
            return Ok(Err(format!(
                "more than {MAX_CANDIDATES} routines to look up"
            )));
        }
        let selects: Vec<String> = routines
            .iter()
            .enumerate()
            .map(|(i, name)| {
                format!(
                    "SELECT CONCAT({i}, ' ', IF(ROUTINE_DEFINITION IS NULL, '-', CONCAT('+', ROUTINE_DEFINITION))) \
                     FROM information_schema.ROUTINES WHERE ROUTINE_NAME = {}",
                    views::literal(&views::unqualified(name))
                )
            })
            .collect();
        let Some(rows) = self.code_rows(&selects).await? else {
            return Ok(Err(
                "the server answered the lookup of stored routines with an error".into(),
            ));
        };
        let mut bodies: HashMap<String, Reach> = HashMap::new();
        for row in rows {
            let parsed = row
                .split_once(' ')
                .and_then(|(i, body)| Some((routines.get(i.parse::<usize>().ok()?)?, body)));
            let Some((name, body)) = parsed else {
                return Ok(Err("an answer Sluice does not read".into()));
            };
            // The server shows a routine's body to its definer (and to
            // users who may read every routine's): one it does not show
            // was defined by a more privileged role, not through this
            // identity, and is not followed (see the module docs).
            let Some(body) = body.strip_prefix('+') else {
                continue;
            };
            let key = views::unqualified(name);
            let reach = bodies.entry(name.clone()).or_default();
            reach
                .functions
                .extend(code_words(body).into_iter().map(|w| (key.clone(), w)));
        }
        Ok(Ok(bodies))
    }

    /// Runs the union of `selects` (each giving one text column), bounded;
    /// the rows, or `None` on an error answer or more than the bound.
    async fn code_rows(&mut self, selects: &[String]) -> Result<Option<Vec<String>>, SessionError> {
        let sql = format!(
            "{} LIMIT {}",
            selects.join(" UNION ALL "),
            MAX_CANDIDATES * 8
        );
        self.up
            .commands(&[views::com_query(&sql).as_slice()])
            .await?;
        let rows = self.read_single_column().await?;
        Ok(rows.filter(|r| {
            r.len() < MAX_CANDIDATES * 8
                && r.iter().map(String::len).sum::<usize>() <= MAX_CODE_BYTES
        }))
    }
}

/// Adds what a foreign key's actions write to `reach`: `rest` is
/// `DELETE_RULE UPDATE_RULE schema.table` (rules with `_` for spaces) of a
/// key referencing the table.
fn add_cascade(reach: &mut Reach, rest: &str) {
    let mut parts = rest.splitn(3, ' ');
    let (Some(on_delete), Some(on_update), Some(table)) =
        (parts.next(), parts.next(), parts.next())
    else {
        return;
    };
    let table = table.to_lowercase();
    let via = format!("the foreign key of {table}");
    let writes = |rule: &str| match rule {
        "CASCADE" => Some("delete"),
        "SET_NULL" | "SET_DEFAULT" => Some("update"),
        _ => None,
    };
    if let Some(does) = writes(on_delete) {
        reach
            .cascades
            .push((StatementKind::Delete, via.clone(), does.to_string()));
        reach
            .cascades
            .push((StatementKind::Delete, via.clone(), table.clone()));
    }
    if writes(on_update).is_some() {
        reach
            .cascades
            .push((StatementKind::Update, via.clone(), "update".to_string()));
        reach.cascades.push((StatementKind::Update, via, table));
    }
}
