//! Table rules through the relations a name stands for: `DELETE FROM v`
//! deletes rows of the table view `v` reads, `TRUNCATE customers_p1`
//! empties a partition of `customers`, `UPDATE people_child …` changes rows
//! `SELECT … FROM people` reads. A rule that denies or holds statements on
//! `customers` must hold for each of them, so before a statement runs its
//! names are followed through the catalog ([`Catalog::related_names`]) and
//! the deny and requireApproval rules are matched against what they reach
//! too (`PolicySet::through_relations`; allow rules are not, so a wider
//! reading never loosens a decision). Only when such a rule names tables;
//! the lookups are cached for the session like the masking ones.
//!
//! Function rules the same way: `SELECT * FROM v`, where `v` is defined as
//! `SELECT pg_read_file(…)`, runs `pg_read_file`, so a rule that denies or
//! holds statements calling it must hold for the read of `v` (and of a view
//! over `v`). When a rule that denies or holds names functions, the
//! functions the definitions of the views a statement's names stand for
//! call count as called by the statement ([`Reach::functions`]), with the
//! same lookups and the same cache: one lookup per name new to the
//! session, none for a statement that names no relation.
//!
//! A user-defined function's body runs for the statement that calls it:
//! under any rule that denies or holds, the bodies of the functions a
//! statement calls (itself or through views) are read, and their words
//! count as functions it calls, tables it touches and statement kinds it
//! runs (`PolicySet::through_relations`); so are those of the code its
//! written tables run (triggers, rules, defaults, constraints, policies,
//! foreign keys' actions; their partitions' and children's too) and of the
//! code the database runs unnamed (casts, operators, domains, event
//! triggers: [`add_implicit`]). What is not followed is listed in
//! sidecar/README.md.
//!
//! [`Reach::functions`]: sluice_policy::engine::Reach::functions
//!
//! [`Catalog::related_names`]: crate::postgres::catalog::Catalog::related_names

use super::client::catalog_refusal;
use super::*;
use crate::enforcement::Refusal;
use std::collections::HashSet;

use crate::postgres::catalog::Catalog;
use crate::postgres::catalog::{CatalogError, function_key};
use sluice_policy::engine::{IMPLICIT_CODE, Reach, runs_code_on_write, runs_implicit_code};

/// What of a statement is followed through the catalog
/// ([`ClientLoop::names_to_follow`]).
pub(super) struct Follow {
    /// Its table names, when a rule that denies or holds names tables, or
    /// one names functions and some name may stand for a view.
    tables: Vec<String>,
    /// Whether the functions it (and the views its names stand for) calls
    /// are followed into user-defined functions' bodies.
    functions: bool,
}

impl ClientLoop {
    /// `decided`, made stricter through the relations its names reach and
    /// the functions it calls; a refusal when they cannot be looked up
    /// (fail closed). `follow`: what of it to follow
    /// ([`ClientLoop::names_to_follow`]).
    pub(super) async fn through_relations(
        &mut self,
        decided: Arc<Decided>,
        follow: Follow,
    ) -> Arc<Decided> {
        // Boxed, as the masking lookups: their future is large.
        let mut catalog = self.catalog.lock().await;
        let mut related = if follow.tables.is_empty() {
            Ok(HashMap::new())
        } else {
            Box::pin(catalog.related_names(&follow.tables)).await
        };
        // The code its tables run on a write (triggers, rules, defaults…),
        // into the bodies of the functions it calls.
        if let Ok(reach) = &mut related {
            catalog.add_cascades(&follow.tables, reach);
        }
        let code = catalog.code_names(&follow.tables);
        if let (Ok(reach), false) = (&mut related, code.is_empty()) {
            match Box::pin(catalog.called_through_functions(&code)).await {
                Ok(bodies) => catalog.add_code_on_write(&follow.tables, reach, &bodies),
                Err(e) if runs_table_code(&decided, &catalog, &follow.tables) => related = Err(e),
                Err(_) => {}
            }
        }
        let called = match (&related, follow.functions) {
            (Ok(related), true) => {
                let names = called_names(&decided, related);
                if names.is_empty() || catalog.no_user_functions(&names) {
                    Ok(HashMap::new())
                } else {
                    Box::pin(catalog.called_through_functions(&names)).await
                }
            }
            _ => Ok(HashMap::new()),
        };
        // The code the database runs without the statement naming it.
        let called = match called {
            Ok(mut called) if runs_implicit(&decided) => {
                Box::pin(add_implicit(&mut catalog, &mut called))
                    .await
                    .map(|()| called)
            }
            other => other,
        };
        let (related, called) = match (related, called) {
            (Ok(mut related), Ok(mut called)) => {
                match Box::pin(follow_code(
                    &mut catalog,
                    &follow.tables,
                    &mut related,
                    &mut called,
                ))
                .await
                {
                    Ok(()) => (Ok(related), Ok(called)),
                    Err(e) => (Err(e), Ok(HashMap::new())),
                }
            }
            other => other,
        };
        let user_code = match &related {
            Ok(related) => {
                let calls = calls_per_statement(&decided, related);
                let all: Vec<String> = calls.iter().flatten().cloned().collect();
                // Not known: as if every one were user-defined.
                let user = if all.is_empty() {
                    Some(Vec::new())
                } else {
                    Box::pin(catalog.user_functions(&all)).await.ok()
                };
                user_code(&decided, &calls, user.as_deref(), &catalog)
            }
            Err(_) => 0,
        };
        drop(catalog);
        with_user_code(self.settle(decided, related, called), user_code)
    }

    /// [`ClientLoop::through_relations`] without a lookup, for a prepared
    /// statement decided again after a policy change (a synchronous step):
    /// from what the session's catalog holds, else refused, to be prepared
    /// again (then its names are looked up).
    pub(super) fn through_relations_now(&mut self, decided: Arc<Decided>) -> Arc<Decided> {
        let Some(follow) = self.names_to_follow(&decided) else {
            return decided;
        };
        let cached = self.catalog.try_lock().ok().and_then(|catalog| {
            let mut related = if follow.tables.is_empty() {
                Ok(HashMap::new())
            } else {
                catalog.related_cached(&follow.tables)?
            };
            if let Ok(reach) = &mut related {
                catalog.add_cascades(&follow.tables, reach);
            }
            let code = catalog.code_names(&follow.tables);
            if let (Ok(reach), false) = (&mut related, code.is_empty()) {
                match catalog.called_cached(&code)? {
                    Ok(bodies) => catalog.add_code_on_write(&follow.tables, reach, &bodies),
                    Err(e) if runs_table_code(&decided, &catalog, &follow.tables) => {
                        related = Err(e);
                    }
                    Err(_) => {}
                }
            }
            let called = match (&related, follow.functions) {
                (Ok(related), true) => catalog.called_cached(&called_names(&decided, related))?,
                _ => Ok(HashMap::new()),
            };
            let called = match called {
                Ok(mut called) if runs_implicit(&decided) => {
                    add_implicit_cached(&catalog, &mut called)?.map(|()| called)
                }
                other => other,
            };
            let (related, called) = match (related, called) {
                (Ok(mut related), Ok(mut called)) => {
                    match follow_code_cached(&catalog, &follow.tables, &mut related, &mut called)? {
                        Ok(()) => (Ok(related), Ok(called)),
                        Err(e) => (Err(e), Ok(HashMap::new())),
                    }
                }
                other => other,
            };
            let user_code = match &related {
                Ok(related) => {
                    let calls = calls_per_statement(&decided, related);
                    let all: Vec<String> = calls.iter().flatten().cloned().collect();
                    let user = catalog.user_functions_cached(&all);
                    user_code(&decided, &calls, user.as_deref(), &catalog)
                }
                Err(_) => 0,
            };
            Some((related, called, user_code))
        });
        match cached {
            Some((related, called, user_code)) => {
                with_user_code(self.settle(decided, related, called), user_code)
            }
            None => Arc::new(decided.refused(Refusal::plain(
                "statement refused: the policies changed and have table or function rules; Sluice has not looked up what this prepared statement's names stand for (views, partitions, user-defined functions): prepare it again",
            ))),
        }
    }

    /// `decided` made stricter through `related` (what its names reach) and
    /// `called` (what the functions it calls call), or refused when they
    /// could not be looked up.
    fn settle(
        &self,
        decided: Arc<Decided>,
        related: Result<HashMap<String, Reach>, CatalogError>,
        called: Result<HashMap<String, Reach>, CatalogError>,
    ) -> Arc<Decided> {
        match (related, called) {
            (Ok(related), Ok(called)) => self
                .enforcer
                .through_relations(&decided, &related, &called)
                .unwrap_or(decided),
            (Err(e), _) | (_, Err(e)) => Arc::new(decided.refused(catalog_refusal(UNKNOWN, &e))),
        }
    }

    /// Decides the session's prepared statements and portals again, with
    /// fresh lookups, when what they were decided under changed while rules
    /// follow names: the policies, or the catalog (a statement that may
    /// change what names stand for ran through the Connection: see
    /// `catalog_changes`). [`ClientLoop::redecide_prepared`] then finds
    /// them decided. Each one as a new statement would be (the decision
    /// cache, then [`ClientLoop::through_relations`]), so a name whose
    /// lookup fails refuses only the statements that name it.
    pub(super) async fn warm_relations(&mut self) {
        if !self.relations_to_warm() {
            return;
        }
        let stamp = self.decision_stamp();
        let names: Vec<String> = self.statements.keys().cloned().collect();
        for name in names {
            let Some(stmt) = self.statements.get(&name).map(|s| s.stmt.clone()) else {
                continue;
            };
            let now = self.redecided_following(&stmt, stamp).await;
            if let Some(s) = self.statements.get_mut(&name) {
                s.stmt = now;
            }
        }
        for name in self.portals.names() {
            let Some(stmt) = self.portals.get(&name).and_then(|p| p.stmt.clone()) else {
                continue;
            };
            let now = self.redecided_following(&stmt, stamp).await;
            if let Some(p) = self.portals.get_mut(&name) {
                p.stmt = Some(now);
            }
        }
        self.decided_generation = stamp;
    }

    /// Whether [`ClientLoop::warm_relations`] has statements to decide
    /// again: the policies or the catalog changed since the session's
    /// statements were decided, and rules that deny or hold name tables or
    /// functions.
    pub(super) fn relations_to_warm(&mut self) -> bool {
        self.enforcer.refresh();
        self.decision_stamp() != self.decided_generation && self.enforcer.follows_names()
    }

    /// What of `decided` to follow, or `None` when its decision cannot get
    /// stricter through the catalog: refused already; or no rule that
    /// denies or holds names tables or functions; or it names no table and
    /// calls no function; or only function rules apply, every name it
    /// gives is known to this session to stand for no view and every
    /// function it calls to be no user-defined function (decided as it is,
    /// without a future or a lookup).
    pub(super) fn names_to_follow(&self, decided: &Decided) -> Option<Follow> {
        let refused = decided.refusal.is_some() && decided.awaits_approval().is_none();
        if refused || !self.enforcer.follows_names() {
            return None;
        }
        // The bodies of the user-defined functions it calls are followed
        // under any rule that denies or holds: they may call a function a
        // rule names, or run a statement of a kind on a table a rule names
        // (`SELECT f()`, `f` deleting from `customers`).
        let functions = true;
        // Calls are followed under table rules too: a user-defined function
        // may change what names stand for (see `catalog_changes`).
        let calls = decided
            .sql
            .statements
            .iter()
            .any(|(s, _)| !s.functions.is_empty());
        let names = decided.sql.table_names();
        // The code the database runs unnamed (casts, domains, operators…),
        // unless this session found there is none.
        let implicit = runs_implicit(decided)
            && !self
                .catalog
                .try_lock()
                .is_ok_and(|catalog| catalog.no_implicit_code());
        if names.is_empty() && !calls && !implicit {
            return None;
        }
        if !self.enforcer.has_restrictive_table_rules() && !implicit {
            let known = self.catalog.try_lock().is_ok_and(|catalog| {
                catalog.names_without_views(&names)
                    && catalog.tables_run_no_user_code(&names)
                    && (!calls || catalog.no_user_functions(&own_functions(decided)))
            });
            if known {
                return None;
            }
        }
        Some(Follow {
            tables: names,
            functions,
        })
    }
}

/// How many rounds [`follow_code`] follows the words of code into the
/// relations and functions they name; what is left after them refuses
/// the statement.
const MAX_CODE_ROUNDS: usize = 6;

/// The names the words of the code a statement runs without naming it
/// (bodies in `called`, tables' code in `related`) and the views it
/// reaches call, not asked yet (`asked`, updated): the words, to follow
/// as relations (`DELETE FROM cv` in a body, `cv` a view of
/// `customers`), and the functions views call, to follow into bodies.
fn code_names_to_ask(
    related: &HashMap<String, Reach>,
    called: &HashMap<String, Reach>,
    asked: &mut HashSet<String>,
) -> (Vec<String>, Vec<String>) {
    let words = called
        .values()
        .flat_map(|r| r.functions.iter())
        .chain(related.values().flat_map(|r| r.on_write.iter()))
        .map(|(_, w)| w);
    let mut relations: Vec<String> = words
        .filter(|w| asked.insert((*w).clone()))
        .cloned()
        .collect();
    relations.sort();
    let views_call = related
        .values()
        .flat_map(|r| r.functions.iter())
        .map(|(_, f)| f);
    let mut functions: Vec<String> = views_call
        .filter(|f| !called.contains_key(*f) && asked.insert(format!("() {f}")))
        .cloned()
        .collect();
    functions.sort();
    (relations, functions)
}

/// Follows the words of the code a statement runs without naming it into
/// what they name, a few rounds deep ([`MAX_CODE_ROUNDS`]): each word that
/// names a relation gets its [`Reach`] in `related` (a view's tables and
/// functions, a table's code on write), each function a view calls its
/// body in `called`. `Err` when one cannot be followed or the rounds run
/// out (fail closed).
async fn follow_code(
    catalog: &mut Catalog,
    tables: &[String],
    related: &mut HashMap<String, Reach>,
    called: &mut HashMap<String, Reach>,
) -> Result<(), CatalogError> {
    let mut asked: HashSet<String> = tables.iter().cloned().collect();
    for _ in 0..MAX_CODE_ROUNDS {
        let (relations, functions) = code_names_to_ask(related, called, &mut asked);
        if relations.is_empty() && functions.is_empty() {
            return Ok(());
        }
        if !relations.is_empty() {
            related.extend(Box::pin(catalog.related_names(&relations)).await?);
            catalog.add_cascades(&relations, related);
            let code = catalog.code_names(&relations);
            if !code.is_empty() {
                let bodies = Box::pin(catalog.called_through_functions(&code)).await?;
                catalog.add_code_on_write(&relations, related, &bodies);
            }
        }
        let functions = functions_to_follow(functions, related, called, catalog);
        if !functions.is_empty() {
            called.extend(Box::pin(catalog.called_through_functions(&functions)).await?);
        }
    }
    Err(code_too_deep(tables))
}

/// [`follow_code`] from what the session's catalog holds: `None` when a
/// name is not in it.
fn follow_code_cached(
    catalog: &Catalog,
    tables: &[String],
    related: &mut HashMap<String, Reach>,
    called: &mut HashMap<String, Reach>,
) -> Option<Result<(), CatalogError>> {
    let mut asked: HashSet<String> = tables.iter().cloned().collect();
    for _ in 0..MAX_CODE_ROUNDS {
        let (relations, functions) = code_names_to_ask(related, called, &mut asked);
        if relations.is_empty() && functions.is_empty() {
            return Some(Ok(()));
        }
        if !relations.is_empty() {
            match catalog.related_cached(&relations)? {
                Ok(more) => related.extend(more),
                Err(e) => return Some(Err(e)),
            }
            catalog.add_cascades(&relations, related);
            let code = catalog.code_names(&relations);
            if !code.is_empty() {
                match catalog.called_cached(&code)? {
                    Ok(bodies) => catalog.add_code_on_write(&relations, related, &bodies),
                    Err(e) => return Some(Err(e)),
                }
            }
        }
        let functions = functions_to_follow(functions, related, called, catalog);
        if !functions.is_empty() {
            match catalog.called_cached(&functions)? {
                Ok(more) => called.extend(more),
                Err(e) => return Some(Err(e)),
            }
        }
    }
    Some(Err(code_too_deep(tables)))
}

/// The functions to follow into bodies after a round of [`follow_code`]:
/// those `asked` for, and those the views met call, not followed yet;
/// none when every one is known to be no user-defined function.
fn functions_to_follow(
    asked: Vec<String>,
    related: &HashMap<String, Reach>,
    called: &HashMap<String, Reach>,
    catalog: &Catalog,
) -> Vec<String> {
    let views_call = related
        .values()
        .flat_map(|r| r.functions.iter().map(|(_, f)| f.clone()));
    let functions: Vec<String> = asked
        .into_iter()
        .chain(views_call)
        .filter(|f| !called.contains_key(f))
        .collect();
    if catalog.no_user_functions(&functions) {
        return Vec::new();
    }
    functions
}

fn code_too_deep(tables: &[String]) -> CatalogError {
    CatalogError::Unknowable(format!(
        "{} and the code they run name: code naming relations whose code names relations is followed {MAX_CODE_ROUNDS} deep",
        tables.join(", ")
    ))
}

/// Whether a statement of `decided` runs the code one of `tables` runs on
/// a write (it writes, or that code runs on a read too): when what that
/// code runs cannot be told, such a statement is refused, and a read of
/// the table is not.
fn runs_table_code(decided: &Decided, catalog: &Catalog, tables: &[String]) -> bool {
    decided.sql.statements.iter().any(|(s, _)| {
        s.tables.iter().any(|t| {
            tables.contains(t)
                && catalog
                    .code_on_write(t)
                    .is_some_and(|(_, _, on_read)| on_read || runs_code_on_write(s))
        })
    })
}

/// The functions the statements of `decided` call themselves.
fn own_functions(decided: &Decided) -> Vec<String> {
    let mut names: Vec<String> = decided
        .sql
        .statements
        .iter()
        .flat_map(|(s, _)| s.functions.iter().cloned())
        .collect();
    names.sort();
    names.dedup();
    names
}

/// The functions each statement of `decided` calls, itself or through the
/// views its names stand for (`related`): unqualified, lower case.
fn calls_per_statement(decided: &Decided, related: &HashMap<String, Reach>) -> Vec<Vec<String>> {
    decided
        .sql
        .statements
        .iter()
        .map(|(s, _)| {
            let through_views = s
                .tables
                .iter()
                .filter_map(|t| related.get(t))
                .flat_map(|r| r.functions.iter().map(|(_, f)| f));
            let mut calls: Vec<String> = s
                .functions
                .iter()
                .chain(through_views)
                .map(|f| function_key(f))
                .collect();
            calls.sort();
            calls.dedup();
            calls
        })
        .collect()
}

/// The statements (bit `i`, 63 for the rest) among `calls` (see
/// [`calls_per_statement`]) that call one of `user` (user-defined
/// functions); every statement that calls anything when `user` is not
/// known.
fn user_code_mask(calls: &[Vec<String>], user: Option<&[String]>) -> u64 {
    let mut mask = 0u64;
    for (i, called) in calls.iter().enumerate() {
        let runs = match user {
            Some(user) => called.iter().any(|f| user.contains(f)),
            None => !called.is_empty(),
        };
        if runs {
            mask |= 1 << i.min(63);
        }
    }
    mask
}

/// The statements (bit `i`, 63 for the rest) of `decided` that name a table
/// running user-defined code they do not name (a trigger or a default on a
/// write, a row security policy on any statement: see
/// [`Catalog::runs_user_code_on`]); a name not looked up counts.
///
/// [`Catalog::runs_user_code_on`]: crate::postgres::catalog::Catalog::runs_user_code_on
fn tables_mask(decided: &Decided, catalog: &Catalog) -> u64 {
    use sluice_crds::StatementKind as K;
    let mut mask = 0u64;
    for (i, (s, _)) in decided.sql.statements.iter().enumerate() {
        let write = s.kinds.iter().any(|k| {
            matches!(
                k,
                K::Insert | K::Update | K::Delete | K::Merge | K::Copy | K::Truncate
            )
        });
        if s.tables
            .iter()
            .any(|t| catalog.runs_user_code_on(t, write).unwrap_or(true))
        {
            mask |= 1 << i.min(63);
        }
    }
    mask
}

/// The statements of `decided` (bit `i`, 63 for the rest) that run
/// user-defined code: they call one of `user` (`calls`: see
/// [`calls_per_statement`]; any call when `user` is not known), or name a
/// table that runs such code ([`tables_mask`]).
fn user_code(
    decided: &Decided,
    calls: &[Vec<String>],
    user: Option<&[String]>,
    catalog: &Catalog,
) -> u64 {
    user_code_mask(calls, user) | tables_mask(decided, catalog) | implicit_mask(decided, catalog)
}

/// Words of code that may change what names stand for: statements that
/// define, rename or drop, and the built-ins that set `search_path`.
const CATALOG_WORDS: &[&str] = &[
    "create",
    "alter",
    "drop",
    "rename",
    "grant",
    "revoke",
    "comment",
    "security",
    "import",
    "refresh",
    "execute",
    "call",
    "do",
    "set",
    "set_config",
    "reset",
    "discard",
];

/// The statements of `decided` (bit `i`, 63 for the rest) that run the
/// user-defined code the database runs unnamed (see [`add_implicit`]),
/// when this session found some whose words (nested functions' included)
/// may change what names stand for, or cannot be told: counted as
/// catalog changes (see `catalog_changes`). A domain's check that only
/// compares leaves statements as they are (`SELECT 1; SELECT 2` in one
/// query string).
fn implicit_mask(decided: &Decided, catalog: &Catalog) -> u64 {
    let Some(implicit) = catalog.implicit_cached().filter(|i| !i.is_empty()) else {
        return 0;
    };
    let names: Vec<String> = implicit.iter().map(|i| i.function.clone()).collect();
    let changes = match catalog.called_cached(&names) {
        Some(Ok(reach)) => reach
            .values()
            .flat_map(|r| r.functions.iter())
            .any(|(_, w)| CATALOG_WORDS.contains(&w.as_str())),
        _ => true,
    };
    if !changes {
        return 0;
    }
    let mut mask = 0u64;
    for (i, (s, _)) in decided.sql.statements.iter().enumerate() {
        if runs_implicit_code(s) {
            mask |= 1 << i.min(63);
        }
    }
    mask
}

/// Whether a statement of `decided` may run the code the database runs
/// without naming it ([`runs_implicit_code`]).
fn runs_implicit(decided: &Decided) -> bool {
    decided
        .sql
        .statements
        .iter()
        .any(|(s, _)| runs_implicit_code(s))
}

/// Adds to `called` the user-defined functions the database runs without
/// a statement naming them (casts, operators, domains, event triggers,
/// operator classes: `Catalog::implicit_code`), their bodies read as any
/// called function's, under [`IMPLICIT_CODE`] with what runs each. `Err`
/// when they cannot be told (fail closed).
async fn add_implicit(
    catalog: &mut Catalog,
    called: &mut HashMap<String, Reach>,
) -> Result<(), CatalogError> {
    let implicit = catalog.implicit_code().await?;
    if implicit.is_empty() {
        return Ok(());
    }
    let names: Vec<String> = implicit.iter().map(|i| i.function.clone()).collect();
    let bodies = Box::pin(catalog.called_through_functions(&names)).await?;
    called.extend(bodies);
    called.insert(IMPLICIT_CODE.to_string(), implicit_reach(&implicit));
    Ok(())
}

/// [`add_implicit`] from the session's cache: `None` when something is
/// not in it.
fn add_implicit_cached(
    catalog: &Catalog,
    called: &mut HashMap<String, Reach>,
) -> Option<Result<(), CatalogError>> {
    let implicit = catalog.implicit_cached()?;
    if implicit.is_empty() {
        return Some(Ok(()));
    }
    let names: Vec<String> = implicit.iter().map(|i| i.function.clone()).collect();
    match catalog.called_cached(&names)? {
        Ok(bodies) => called.extend(bodies),
        Err(e) => return Some(Err(e)),
    }
    called.insert(IMPLICIT_CODE.to_string(), implicit_reach(implicit));
    Some(Ok(()))
}

/// The [`IMPLICIT_CODE`] entry: (what runs it, function) of each.
fn implicit_reach(implicit: &[crate::postgres::catalog::Implicit]) -> Reach {
    Reach {
        functions: implicit
            .iter()
            .map(|i| (i.what.clone(), i.function.clone()))
            .collect(),
        ..Reach::default()
    }
}

/// `decided`, marked with `user_code` when it is not empty.
fn with_user_code(decided: Arc<Decided>, user_code: u64) -> Arc<Decided> {
    if user_code == 0 {
        decided
    } else {
        Arc::new(decided.with_user_code(user_code))
    }
}

/// The functions the statements of `decided` call, and those the views
/// their names stand for call (`related`).
fn called_names(decided: &Decided, related: &HashMap<String, Reach>) -> Vec<String> {
    let mut names = own_functions(decided);
    names.extend(
        related
            .values()
            .flat_map(|r| r.functions.iter().map(|(_, f)| f.clone())),
    );
    names.sort();
    names.dedup();
    names
}

/// What a refusal says when the names could not be followed.
const UNKNOWN: &str = "statement refused: the policy has table or function rules, and Sluice could not look up what its names stand for (views, partitions, the functions views call)";
