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
//! keywords as kinds). Followed further: the routines those bodies call
//! (level by level), the foreign keys of the tables a key's action writes
//! (level by level); a body that runs dynamic SQL (`EXECUTE`) refuses the
//! statement; the triggers, foreign keys, routines and views the words
//! of the code found name (level by level, see `code_of_words`). The server shows a routine's body
//! only to its definer (or a user who may read every routine), and a
//! trigger only to a user with the `TRIGGER` privilege on its table: code
//! a more privileged role defined may not be seen, and is then matched
//! only by what the statement names (as code another role defined is out
//! of the masking's reach on both planes). Code this identity defines
//! through Sluice is always seen.

use std::collections::{HashMap, HashSet};

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
        let mut bodies = if routines.is_empty() {
            HashMap::new()
        } else {
            match self.routine_bodies(&routines).await? {
                Ok(b) => b,
                Err(why) => return Ok(Err(why)),
            }
        };
        // The schemas the code found may name tables in: the session's,
        // and every part of the names the statement gives (a qualified
        // `db.t` or `db.f()`); the code's own and those its words name
        // are added as it is found.
        let schemas: Vec<String> = database
            .map(str::to_lowercase)
            .into_iter()
            .chain(decided.statements.iter().flat_map(|(s, _)| {
                s.tables
                    .iter()
                    .chain(s.functions.iter())
                    .flat_map(|n| n.split('.').map(|p| p.trim_matches('`').to_lowercase()))
            }))
            .collect();
        if let Err(why) = self.code_of_words(related, &mut bodies, schemas).await? {
            return Ok(Err(why));
        }
        // A view's definition names the functions it calls qualified
        // (`shop.f`): their bodies, found under `f`, under that name too.
        let view_functions: Vec<String> = related
            .values()
            .flat_map(|r| r.functions.iter().map(|(_, f)| f.clone()))
            .collect();
        for f in view_functions {
            let bare = views::unqualified(&f);
            if bare != f
                && let Some(body) = bodies.get(&bare).cloned()
            {
                bodies.entry(f).or_insert(body);
            }
        }
        Ok(Ok(bodies))
    }

    /// The code the code found so far runs in turn: the words of the
    /// triggers' bodies in `related` and of the routines' bodies in
    /// `bodies` may name tables (whose triggers run when the body writes
    /// them, and whose foreign keys' actions write their children), views
    /// (whose definitions name what the body reaches through them) and
    /// routines (whose bodies run): each such word gets that code, under
    /// the word (a trigger's, a key's and a view's in `related`, a
    /// routine's in `bodies`), which the policy engine follows as it follows the words
    /// of a body; level by level (up to [`MAX_ROUTINE_DEPTH`]; deeper, or
    /// more than [`MAX_BODY_WORDS`] words at a level, is refused).
    /// Routines of any name's schema; tables of the `schemas` the code
    /// may name them in (the statement's, the code's own, and every word
    /// of the code: a qualified name's schema is one of its words).
    async fn code_of_words(
        &mut self,
        related: &mut HashMap<String, Reach>,
        bodies: &mut HashMap<String, Reach>,
        mut schemas: Vec<String>,
    ) -> Result<Result<(), String>, SessionError> {
        let mut asked: HashSet<String> = related
            .keys()
            .chain(bodies.keys())
            .map(|n| views::unqualified(n))
            .collect();
        // The triggers' words, the functions the views read call (reading
        // the view runs them), and the routines' words.
        let mut words: Vec<String> = related
            .values()
            .flat_map(|r| {
                r.on_write
                    .iter()
                    .map(|(_, w)| w.clone())
                    .chain(r.functions.iter().map(|(_, f)| views::unqualified(f)))
            })
            .chain(
                bodies
                    .values()
                    .flat_map(|r| r.functions.iter().map(|(_, w)| w.clone())),
            )
            .collect();
        let mut pending: Vec<(String, ForeignKey)> = Vec::new();
        for _ in 0..MAX_ROUTINE_DEPTH {
            words.retain(|w| !asked.contains(w));
            words.sort();
            words.dedup();
            if words.is_empty() {
                return Ok(Ok(()));
            }
            if words.len() > MAX_BODY_WORDS {
                return Ok(Err(format!(
                    "code with more than {MAX_BODY_WORDS} words to look up"
                )));
            }
            asked.extend(words.iter().cloned());
            schemas.extend(words.iter().cloned());
            schemas.sort();
            schemas.dedup();
            let selects = code_selects(&words, &schemas);
            let Some(rows) = self.code_rows(&selects).await? else {
                return Ok(Err(
                    "the server answered the lookup of the code that code runs with an error"
                        .into(),
                ));
            };
            words = Vec::new();
            let mut keys: Vec<(String, ForeignKey)> = Vec::new();
            if let Err(why) =
                read_code_rows(rows, related, bodies, &mut words, &mut keys, &mut schemas)
            {
                return Ok(Err(why));
            }
            // A key's actions fire only when a row it references is
            // deleted or updated: held until the code found deletes or
            // updates (its words say so), then counted as code a write of
            // the table runs (a body's words are not told apart by the
            // table they write): the kinds of write and the table.
            pending.extend(keys);
            let rewrites = |w: &String| matches!(w.as_str(), "delete" | "update" | "replace");
            if asked.iter().any(rewrites) || words.iter().any(rewrites) {
                add_key_actions(pending.drain(..), related, &mut words);
            }
        }
        words.retain(|w| !asked.contains(w));
        if words.is_empty() {
            return Ok(Ok(()));
        }
        Ok(Err(format!(
            "code that runs code deeper than {MAX_ROUTINE_DEPTH} levels"
        )))
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
                     UNION ALL {}",
                    foreign_keys(*i, &s, &t)
                )
            })
            .collect();
        let Some(rows) = self.code_rows(&selects).await? else {
            return Ok(Err(
                "the server answered the lookup of triggers and foreign keys with an error".into(),
            ));
        };
        // The tables the keys' actions write, each after the name whose
        // write reaches it: their own keys' actions run in turn.
        let mut written: Vec<(String, (String, String))> = Vec::new();
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
                let Some(key) = ForeignKey::read(rest) else {
                    return Ok(Err("an answer Sluice does not read".into()));
                };
                key.add_to(reach, None);
                if key.writes() {
                    written.push((name.clone(), key.table));
                }
            }
        }
        self.cascades_of_cascades(written, related).await
    }

    /// What the foreign keys referencing the tables in `written` (each
    /// after the name whose write reaches it through a key's action) write
    /// in turn, level by level as the server follows them (`DELETE FROM
    /// customers` deletes `orders` rows whose key cascades from it, and
    /// those delete the `order_items` rows whose key cascades from theirs):
    /// added to the name's [`Reach::cascades`], for deletes and updates
    /// alike (a deleted row's children are deleted or updated as their
    /// keys say, an updated one's as theirs say). Why not when they cannot
    /// be told (more than [`MAX_CANDIDATES`] tables, or deeper than the
    /// server goes).
    async fn cascades_of_cascades(
        &mut self,
        mut written: Vec<(String, (String, String))>,
        related: &mut HashMap<String, Reach>,
    ) -> Result<Result<(), String>, SessionError> {
        let mut seen: Vec<(String, (String, String))> = written.clone();
        for _ in 0..MAX_CASCADE_DEPTH {
            if written.is_empty() {
                return Ok(Ok(()));
            }
            let selects: Vec<String> = written
                .iter()
                .enumerate()
                .map(|(i, (_, (s, t)))| foreign_keys(i, &views::literal(s), &views::literal(t)))
                .collect();
            let Some(rows) = self.code_rows(&selects).await? else {
                return Ok(Err(
                    "the server answered the lookup of foreign keys with an error".into(),
                ));
            };
            let mut next = Vec::new();
            for row in rows {
                let parsed = row
                    .strip_prefix("f ")
                    .and_then(|r| r.split_once(' '))
                    .and_then(|(i, rest)| {
                        Some((
                            written.get(i.parse::<usize>().ok()?)?,
                            ForeignKey::read(rest)?,
                        ))
                    });
                let Some(((name, (s, t)), key)) = parsed else {
                    return Ok(Err("an answer Sluice does not read".into()));
                };
                let from = format!("{s}.{t}").to_lowercase();
                key.add_to(related.entry(name.clone()).or_default(), Some(&from));
                let link = (name.clone(), key.table.clone());
                if key.writes() && !seen.contains(&link) {
                    if seen.len() >= MAX_CANDIDATES {
                        return Ok(Err(format!(
                            "more than {MAX_CANDIDATES} tables written through foreign keys"
                        )));
                    }
                    seen.push(link.clone());
                    next.push(link);
                }
            }
            written = next;
        }
        if written.is_empty() {
            return Ok(Ok(()));
        }
        Ok(Err(format!(
            "foreign keys whose actions cascade deeper than {MAX_CASCADE_DEPTH} levels"
        )))
    }

    /// The bodies of the stored routines of the names `routines` (see
    /// [`Session::code_of`]), and of the routines those bodies call, level
    /// by level (a body calling another runs that one's code too): a body
    /// word that names a routine gets that routine's body under the word,
    /// which the policy engine follows as it follows the words of a body.
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
        let mut asked: HashSet<String> = routines.iter().map(|n| views::unqualified(n)).collect();
        let mut called: Vec<String> = Vec::new();
        for row in rows {
            let parsed = row
                .split_once(' ')
                .and_then(|(i, body)| Some((routines.get(i.parse::<usize>().ok()?)?, body)));
            let Some((name, body)) = parsed else {
                return Ok(Err("an answer Sluice does not read".into()));
            };
            if let Err(why) = add_body(&mut bodies, &mut called, name, body) {
                return Ok(Err(why));
            }
        }
        for _ in 0..MAX_ROUTINE_DEPTH {
            called.retain(|w| !asked.contains(w));
            called.sort();
            called.dedup();
            if called.is_empty() {
                return Ok(Ok(bodies));
            }
            if called.len() > MAX_BODY_WORDS {
                return Ok(Err(format!(
                    "routine bodies with more than {MAX_BODY_WORDS} words to look up"
                )));
            }
            asked.extend(called.iter().cloned());
            let names: Vec<String> = called.iter().map(|w| views::literal(w)).collect();
            let select = format!(
                "SELECT CONCAT(CHAR_LENGTH(ROUTINE_NAME), ' ', LOWER(ROUTINE_NAME), ' ', \
                 IF(ROUTINE_DEFINITION IS NULL, '-', CONCAT('+', ROUTINE_DEFINITION))) \
                 FROM information_schema.ROUTINES WHERE ROUTINE_NAME IN ({})",
                names.join(", ")
            );
            let Some(rows) = self.code_rows(&[select]).await? else {
                return Ok(Err(
                    "the server answered the lookup of stored routines with an error".into(),
                ));
            };
            called = Vec::new();
            for row in rows {
                let Some((name, body)) = named_body(&row) else {
                    return Ok(Err("an answer Sluice does not read".into()));
                };
                if let Err(why) = add_body(&mut bodies, &mut called, &name, body) {
                    return Ok(Err(why));
                }
            }
        }
        called.retain(|w| !asked.contains(w));
        if called.is_empty() {
            return Ok(Ok(bodies));
        }
        Ok(Err(format!(
            "stored routines that call routines deeper than {MAX_ROUTINE_DEPTH} levels"
        )))
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

/// How many levels of routines calling routines are followed (deeper:
/// refused).
const MAX_ROUTINE_DEPTH: usize = 8;

/// The most body words asked about at once (whether they name routines).
const MAX_BODY_WORDS: usize = 4096;

/// Adds the words of the body `body` (`+definition`, or `-` when the server
/// does not show it) of the routine `name` to `bodies` (under `name`) and
/// to `called` (each may name a routine it calls); why not when the body
/// runs dynamic SQL.
fn add_body(
    bodies: &mut HashMap<String, Reach>,
    called: &mut Vec<String>,
    name: &str,
    body: &str,
) -> Result<(), String> {
    // The server shows a routine's body to its definer (and to users who
    // may read every routine's): one it does not show was defined by a
    // more privileged role, not through this identity, and is not
    // followed (see the module docs).
    let Some(body) = body.strip_prefix('+') else {
        return Ok(());
    };
    let key = views::unqualified(name);
    let words = code_words(body);
    // `EXECUTE s` (after `PREPARE s FROM @q`) and `EXECUTE IMMEDIATE expr`
    // run a text the body builds while it runs (`CONCAT('DEL', 'ETE FROM
    // customers')`): no word of the body says what it is.
    if words.iter().any(|w| w == "execute") {
        return Err(format!(
            "the stored routine {key} runs dynamic SQL (EXECUTE), a statement text it builds while it runs, which Sluice cannot match against the rules"
        ));
    }
    called.extend(words.iter().cloned());
    bodies
        .entry(name.to_string())
        .or_default()
        .functions
        .extend(words.into_iter().map(|w| (key.clone(), w)));
    Ok(())
}

/// `<length> <name> <body>` (the routine's name in lower case, `length`
/// its characters), as the lookup of called routines answers.
fn named_body(row: &str) -> Option<(String, &str)> {
    let (length, rest) = row.split_once(' ')?;
    let length: usize = length.parse().ok()?;
    let split = rest
        .char_indices()
        .nth(length)
        .map_or(rest.len(), |(i, _)| i);
    let body = rest.get(split..)?.strip_prefix(' ')?;
    Some((rest.get(..split)?.to_string(), body))
}

/// How deep the server follows foreign keys' actions (MariaDB and MySQL
/// stop at 15 levels with an error).
const MAX_CASCADE_DEPTH: usize = 15;

/// The query of the foreign keys referencing the table `table` of `schema`
/// (both SQL literals), answered as `f <index> DELETE_RULE UPDATE_RULE
/// <length of the schema name> schema.table` ([`ForeignKey::read`]).
fn foreign_keys(index: usize, schema: &str, table: &str) -> String {
    format!(
        "SELECT CONCAT('f ', {index}, ' ', REPLACE(DELETE_RULE, ' ', '_'), ' ', REPLACE(UPDATE_RULE, ' ', '_'), ' ', \
         CHAR_LENGTH(CONSTRAINT_SCHEMA), ' ', CONSTRAINT_SCHEMA, '.', TABLE_NAME) \
         FROM information_schema.REFERENTIAL_CONSTRAINTS \
         WHERE UNIQUE_CONSTRAINT_SCHEMA = {schema} AND REFERENCED_TABLE_NAME = {table}"
    )
}

/// A foreign key referencing a table: its actions and the table it is of.
#[derive(Debug, PartialEq, Eq)]
struct ForeignKey {
    on_delete: String,
    on_update: String,
    /// The table the key is of, as the server names it: (schema, table).
    table: (String, String),
}

impl ForeignKey {
    /// `DELETE_RULE UPDATE_RULE <schema length> schema.table` (rules with
    /// `_` for spaces), as [`foreign_keys`] answers.
    fn read(rest: &str) -> Option<Self> {
        let mut parts = rest.splitn(4, ' ');
        let (on_delete, on_update, length, name) =
            (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        let length: usize = length.parse().ok()?;
        let split = name.char_indices().nth(length).map(|(i, _)| i)?;
        let (schema, table) = (name.get(..split)?, name.get(split..)?.strip_prefix('.')?);
        Some(ForeignKey {
            on_delete: on_delete.to_string(),
            on_update: on_update.to_string(),
            table: (schema.to_string(), table.to_string()),
        })
    }

    /// What an action writes in the key's table.
    fn action_writes(rule: &str) -> Option<&'static str> {
        match rule {
            "CASCADE" => Some("delete"),
            "SET_NULL" | "SET_DEFAULT" => Some("update"),
            _ => None,
        }
    }

    /// Whether one of its actions writes.
    fn writes(&self) -> bool {
        Self::action_writes(&self.on_delete).is_some()
            || Self::action_writes(&self.on_update).is_some()
    }

    /// Adds what its actions write to `reach`: for a key referencing the
    /// table a statement names (`from` `None`), its `ON DELETE` action for
    /// deletes and its `ON UPDATE` action for updates; for a key
    /// referencing a table another key's action writes (`from`), both for
    /// deletes and updates (that action may delete or update its rows).
    fn add_to(&self, reach: &mut Reach, from: Option<&str>) {
        let table = format!("{}.{}", self.table.0, self.table.1).to_lowercase();
        let via = match from {
            None => format!("the foreign key of {table}"),
            Some(from) => format!("the foreign key of {table} (on {from})"),
        };
        let mut add = |fired_by: StatementKind, does: &str| {
            reach
                .cascades
                .push((fired_by, via.clone(), does.to_string()));
            reach.cascades.push((fired_by, via.clone(), table.clone()));
        };
        let on_delete = Self::action_writes(&self.on_delete);
        let on_update = Self::action_writes(&self.on_update).map(|_| "update");
        match from {
            None => {
                if let Some(does) = on_delete {
                    add(StatementKind::Delete, does);
                }
                if let Some(does) = on_update {
                    add(StatementKind::Update, does);
                }
            }
            Some(_) => {
                for does in on_delete.into_iter().chain(on_update) {
                    add(StatementKind::Delete, does);
                    add(StatementKind::Update, does);
                }
            }
        }
    }
}

/// The lookups of [`Session::code_of_words`] for `words`: the triggers of
/// tables of those names, the foreign keys referencing them and the views
/// of those names in `schemas`, and the routines of those names anywhere.
fn code_selects(words: &[String], schemas: &[String]) -> [String; 4] {
    let literals = |names: &[String]| {
        names
            .iter()
            .map(|w| views::literal(w))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let (list, in_schemas) = (literals(words), literals(schemas));
    [
        format!(
            "SELECT CONCAT('t ', CHAR_LENGTH(EVENT_OBJECT_SCHEMA), ' ', LOWER(EVENT_OBJECT_SCHEMA), ' ', \
             CHAR_LENGTH(EVENT_OBJECT_TABLE), ' ', LOWER(EVENT_OBJECT_TABLE), ' ', IFNULL(ACTION_STATEMENT, '')) \
             FROM information_schema.TRIGGERS \
             WHERE EVENT_OBJECT_TABLE IN ({list}) AND EVENT_OBJECT_SCHEMA IN ({in_schemas})"
        ),
        format!(
            "SELECT CONCAT('f ', CHAR_LENGTH(UNIQUE_CONSTRAINT_SCHEMA), ' ', LOWER(UNIQUE_CONSTRAINT_SCHEMA), ' ', \
             CHAR_LENGTH(REFERENCED_TABLE_NAME), ' ', LOWER(REFERENCED_TABLE_NAME), ' ', \
             REPLACE(DELETE_RULE, ' ', '_'), ' ', REPLACE(UPDATE_RULE, ' ', '_'), ' ', \
             CHAR_LENGTH(CONSTRAINT_SCHEMA), ' ', CONSTRAINT_SCHEMA, '.', TABLE_NAME) \
             FROM information_schema.REFERENTIAL_CONSTRAINTS \
             WHERE REFERENCED_TABLE_NAME IN ({list}) AND UNIQUE_CONSTRAINT_SCHEMA IN ({in_schemas})"
        ),
        format!(
            "SELECT CONCAT('v ', CHAR_LENGTH(TABLE_SCHEMA), ' ', LOWER(TABLE_SCHEMA), ' ', \
             CHAR_LENGTH(TABLE_NAME), ' ', LOWER(TABLE_NAME), ' ', \
             IF(IFNULL(VIEW_DEFINITION, '') = '', '-', CONCAT('+', VIEW_DEFINITION))) \
             FROM information_schema.VIEWS \
             WHERE TABLE_NAME IN ({list}) AND TABLE_SCHEMA IN ({in_schemas})"
        ),
        format!(
            "SELECT CONCAT('r ', CHAR_LENGTH(ROUTINE_SCHEMA), ' ', LOWER(ROUTINE_SCHEMA), ' ', \
             CHAR_LENGTH(ROUTINE_NAME), ' ', LOWER(ROUTINE_NAME), ' ', \
             IF(ROUTINE_DEFINITION IS NULL, '-', CONCAT('+', ROUTINE_DEFINITION))) \
             FROM information_schema.ROUTINES WHERE ROUTINE_NAME IN ({list})"
        ),
    ]
}

/// Reads the rows of [`code_selects`] into `related` (triggers', views'
/// words), `bodies` (routines'), `keys` (foreign keys, held until a write
/// fires them) and the next level's `words`; each row's schema joins
/// `schemas`. `Err` for an answer Sluice does not read.
fn read_code_rows(
    rows: Vec<String>,
    related: &mut HashMap<String, Reach>,
    bodies: &mut HashMap<String, Reach>,
    words: &mut Vec<String>,
    keys: &mut Vec<(String, ForeignKey)>,
    schemas: &mut Vec<String>,
) -> Result<(), String> {
    for row in rows {
        let parsed = row.split_once(' ').and_then(|(what, rest)| {
            let (schema, rest) = named_body(rest)?;
            Some((what, schema, named_body(rest)?))
        });
        let Some((what, schema, (name, rest))) = parsed else {
            return Err("an answer Sluice does not read".into());
        };
        // The code's own schema: where its unqualified names are.
        schemas.push(schema);
        match what {
            "t" => {
                let via = format!("a trigger on {name}");
                let code = code_words(rest);
                words.extend(code.iter().cloned());
                related
                    .entry(name)
                    .or_default()
                    .on_write
                    .extend(code.into_iter().map(|w| (via.clone(), w)));
            }
            "f" => {
                let Some(key) = ForeignKey::read(rest) else {
                    return Err("an answer Sluice does not read".into());
                };
                keys.push((name, key));
            }
            "r" => {
                add_body(bodies, words, &name, rest)?;
            }
            // A view the code reads or writes through: its
            // definition's words are what it reaches (and the
            // tables a write through it writes, whose code runs).
            "v" => {
                let Some(definition) = rest.strip_prefix('+') else {
                    return Err(format!(
                        "the code names the view {name}, whose definition the server does not show this identity"
                    ));
                };
                let reached = code_words(definition);
                words.extend(reached.iter().cloned());
                related.entry(name).or_default().relations.extend(reached);
            }
            _ => return Err("an answer Sluice does not read".into()),
        }
    }
    Ok(())
}

/// Counts the actions of the foreign keys `pending` (referencing a table,
/// the key) as code a write of that table runs, under it in `related`;
/// the children they write join `words`.
fn add_key_actions(
    pending: impl Iterator<Item = (String, ForeignKey)>,
    related: &mut HashMap<String, Reach>,
    words: &mut Vec<String>,
) {
    for (name, key) in pending {
        let table = format!("{}.{}", key.table.0, key.table.1).to_lowercase();
        let via = format!("the foreign key of {table}");
        let mut code: Vec<String> = [&key.on_delete, &key.on_update]
            .into_iter()
            .filter_map(|r| ForeignKey::action_writes(r))
            .map(str::to_string)
            .collect();
        if !code.is_empty() {
            code.push(table);
            words.push(key.table.1.to_lowercase());
        }
        related
            .entry(name)
            .or_default()
            .on_write
            .extend(code.into_iter().map(|w| (via.clone(), w)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn foreign_keys_are_read_with_dotted_names() {
        let key = ForeignKey::read("CASCADE NO_ACTION 3 a.b.c.d").unwrap();
        assert_eq!(key.table, ("a.b".to_string(), "c.d".to_string()));
        assert!(key.writes());
        assert!(
            !ForeignKey::read("RESTRICT NO_ACTION 2 db.t")
                .unwrap()
                .writes()
        );
        assert_eq!(ForeignKey::read("CASCADE CASCADE 9 db.t"), None);
        assert_eq!(ForeignKey::read("CASCADE CASCADE db.t"), None);
    }

    #[test]
    fn called_routines_are_read_with_spaced_names() {
        assert_eq!(
            named_body("7 inner p +DELETE FROM t"),
            Some(("inner p".to_string(), "+DELETE FROM t"))
        );
        assert_eq!(named_body("3 abc -"), Some(("abc".to_string(), "-")));
        assert_eq!(named_body("9 abc -"), None);
    }

    #[test]
    fn chained_keys_fire_on_deletes_and_updates() {
        let mut reach = Reach::default();
        ForeignKey::read("SET_NULL RESTRICT 2 db.g3")
            .unwrap()
            .add_to(&mut reach, Some("db.g2"));
        for kind in [StatementKind::Delete, StatementKind::Update] {
            assert!(reach.cascades.contains(&(
                kind,
                "the foreign key of db.g3 (on db.g2)".into(),
                "db.g3".into()
            )));
            assert!(reach.cascades.contains(&(
                kind,
                "the foreign key of db.g3 (on db.g2)".into(),
                "update".into()
            )));
        }
    }
}
