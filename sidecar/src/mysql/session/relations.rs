//! Table rules through views (#24 / #15): `DELETE FROM v`, where `v` is an
//! updatable view of `customers`, deletes rows of `customers`, so a rule
//! that denies or holds statements on `customers` must hold for it, as for
//! a view over a view, `UPDATE`, `INSERT`, `REPLACE` and multi-table
//! statements through one. Before a statement runs, when a rule that
//! denies or holds names tables (`PolicySet::has_restrictive_table_rules`;
//! nothing is asked otherwise), the names it gives are followed through
//! the server's view definitions, and the deny and requireApproval rules
//! are matched against what they reach too
//! (`PolicySet::through_relations`; allow rules are not, so a wider
//! reading never loosens a decision).
//!
//! The lookup asks for each name exactly as the server resolves it (the
//! candidates of the views lookup, see [`views::candidates`]: the schema
//! it is qualified with or the statement's database, every spelling in the
//! text), one `TABLE_SCHEMA = … AND TABLE_NAME = …` per candidate joined
//! with `UNION ALL`: first `information_schema.TABLES … AND TABLE_TYPE =
//! 'VIEW'` (which of them are views), then, only when some are,
//! `information_schema.VIEWS` for those views' definitions. Most statements
//! name no view, and TABLES costs the server less than half of what VIEWS
//! does per name (MariaDB 10.11, server CPU on top of a point query:
//! `sidecar/bench/mysql_lookup_cost.py`). The tables of each definition
//! found (the server writes them qualified) are asked for the same way, at
//! most [`MAX_DEPTH`] levels deep. Nothing is cached: a table may be
//! replaced by a view at any time (see [`views`]); a statement held for
//! approval is followed again after its wait (see `approve`).
//!
//! The first level's answer says which of the statement's own names are
//! views, exactly as the masking's views lookup would (the same
//! candidates, asked of information_schema as that lookup does for writes):
//! when both would run for one statement, the masking takes this answer
//! and asks nothing more ([`Followed::views`]).
//!
//! Fail closed: a statement whose names cannot be followed (a name that
//! cannot be asked precisely, too many names, a definition the server does
//! not show or Sluice cannot parse, views nested deeper than
//! [`MAX_DEPTH`], an error answer) is refused.

use std::collections::{HashMap, HashSet};

use sluice_policy::engine::Reach;

use super::views::{self, MAX_CANDIDATES};
use super::*;

/// How many levels of views over views are followed; deeper ones refuse
/// the statement.
pub(super) const MAX_DEPTH: usize = 8;

/// The most bytes of view definitions one statement's lookup reads.
const MAX_DEFINITION_BYTES: usize = 4 << 20;

/// What a refusal says when the names could not be followed.
const UNKNOWN: &str = "statement refused by Sluice: the policy has rules on tables, and Sluice could not look up which tables this statement's names stand for (views) or what code it runs (triggers, foreign keys, stored routines)";

/// A decision followed through the views its names stand for.
pub(super) struct Followed {
    /// The decision, made stricter by what its names reach.
    pub decided: Arc<SqlDecision>,
    /// Why it is refused when its names could not be followed.
    pub refused: Option<String>,
    /// When every one of its names was asked about: which of them are
    /// views (lower case, unqualified, as [`views::ViewQuery::names`]), the
    /// masking's views lookup's answer for the same statement.
    pub views: Option<Vec<String>>,
}

impl Followed {
    /// `decided` as it is: nothing looked up.
    fn unchanged(decided: &Arc<SqlDecision>) -> Self {
        Followed {
            decided: decided.clone(),
            refused: None,
            views: None,
        }
    }
}

impl Session<'_> {
    /// `decided`, made stricter through the views its names (in
    /// `database`) stand for, and why it is refused when they cannot be
    /// followed (fail closed), and through the code it runs without naming
    /// it (see `code`). `decided` itself when no rule that denies or holds
    /// names tables, statement kinds or functions, when it is denied
    /// already or names no table and calls no function.
    pub(super) async fn through_views(
        &mut self,
        decided: &Arc<SqlDecision>,
        database: Option<&str>,
    ) -> Result<Followed, SessionError> {
        let denied = decided.decision.enforced == Action::Deny || decided.too_complex;
        if denied
            || self.revoked.is_some()
            || !self.set.follows_names()
            || decided
                .statements
                .iter()
                .all(|(s, _)| s.tables.is_empty() && s.functions.is_empty())
        {
            return Ok(Followed::unchanged(decided));
        }
        let refused = |why: String| Followed {
            refused: Some(format!("{UNKNOWN}: {why}")),
            ..Followed::unchanged(decided)
        };
        // Views only under rules on tables (a lookup per statement); the
        // code a statement runs under any deny/hold rule on tables,
        // statement kinds or functions (a lookup only for a write or a
        // call of a stored routine).
        let (mut related, views) = if self.set.has_restrictive_table_rules() {
            match self.related_names(decided, database).await? {
                Ok((related, views)) => (related, Some(views)),
                Err(why) => return Ok(refused(why)),
            }
        } else {
            (HashMap::new(), None)
        };
        // The code it runs without naming it (see `code`).
        let bodies = match self.code_of(decided, database, &mut related).await? {
            Ok(b) => b,
            Err(why) => return Ok(refused(why)),
        };
        let stricter = self
            .set
            .through_relations(decided, &related, &bodies)
            .map_or_else(|| decided.clone(), Arc::new);
        Ok(Followed {
            decided: stricter,
            refused: None,
            views,
        })
    }

    /// Each table name of `decided` (run in `database`) and the relations
    /// it reaches through views (their tables, theirs, …: `schema.name`
    /// as Sluice's parser reads the definitions), and which of those names
    /// are views (see [`Followed::views`]); why not when they cannot be
    /// followed.
    async fn related_names(
        &mut self,
        decided: &SqlDecision,
        database: Option<&str>,
    ) -> Result<Result<Related, String>, SessionError> {
        let names = decided.table_names();
        let texts: Vec<String> = decided
            .statements
            .iter()
            .map(|(s, _)| s.text.clone())
            .collect();
        // What each name followed so far reads (empty: not a view), and
        // the functions each view's definition calls.
        let mut reads: HashMap<String, Vec<String>> = HashMap::new();
        let mut calls: HashMap<String, Vec<String>> = HashMap::new();
        let (mut wanted, mut texts, mut database) = (names.clone(), texts, database);
        let mut depth = 0;
        let mut read_bytes = 0;
        let mut views: Vec<String> = Vec::new();
        while !wanted.is_empty() {
            if depth > MAX_DEPTH {
                return Ok(Err(format!("views are nested more than {MAX_DEPTH} deep")));
            }
            let found = match self.definitions(&wanted, &texts, database).await? {
                Ok(found) => found,
                Err(why) => return Ok(Err(why)),
            };
            let mut next_texts = Vec::new();
            for name in &wanted {
                reads.entry(name.clone()).or_default();
            }
            for (i, definition) in found {
                if depth == 0 {
                    views.push(views::unqualified(&wanted[i]));
                }
                read_bytes += definition.len();
                if read_bytes > MAX_DEFINITION_BYTES {
                    return Ok(Err("the views' definitions are too large".into()));
                }
                let (tables, functions) = match definition_tables(&definition) {
                    Ok(t) => t,
                    Err(why) => return Ok(Err(format!("{}: {why}", wanted[i]))),
                };
                reads.entry(wanted[i].clone()).or_default().extend(tables);
                calls
                    .entry(wanted[i].clone())
                    .or_default()
                    .extend(functions);
                next_texts.push(definition);
            }
            let mut next: Vec<String> = reads
                .values()
                .flatten()
                .filter(|n| !reads.contains_key(*n))
                .cloned()
                .collect();
            next.sort();
            next.dedup();
            (wanted, texts, database) = (next, next_texts, None);
            depth += 1;
        }
        views.sort();
        views.dedup();
        let related = names
            .iter()
            .map(|n| (n.clone(), reach(n, &reads, &calls)))
            .collect();
        Ok(Ok((related, views)))
    }

    /// The definitions of the views among `names` (as Sluice's parser
    /// reports them) of a text `texts`, run in `database`: (index in
    /// `names`, definition); why not when a name cannot be asked precisely
    /// or the server answers with an error.
    async fn definitions(
        &mut self,
        names: &[String],
        texts: &[String],
        database: Option<&str>,
    ) -> Result<Result<Vec<(usize, String)>, String>, SessionError> {
        let texts: Vec<&str> = texts.iter().map(String::as_str).collect();
        let candidates = match self.precise_candidates(names, &texts, database) {
            Ok(c) => c,
            Err(why) => return Ok(Err(why)),
        };
        let Some(views) = self.views_among(&candidates).await? else {
            return Ok(Err("the server answered the lookup with an error".into()));
        };
        if views.is_empty() {
            return Ok(Ok(Vec::new()));
        }
        let selects: Vec<String> = views
            .iter()
            .map(|(s, t, i)| {
                format!(
                    "SELECT CONCAT({i}, ' ', IFNULL(VIEW_DEFINITION, '')) FROM information_schema.VIEWS WHERE TABLE_SCHEMA = {} AND TABLE_NAME = {}",
                    views::literal(s),
                    views::literal(t)
                )
            })
            .collect();
        let sql = format!(
            "{} LIMIT {}",
            selects.join(" UNION ALL "),
            MAX_CANDIDATES + 1
        );
        self.up
            .commands(&[views::com_query(&sql).as_slice()])
            .await?;
        let Some(rows) = self.read_single_column().await? else {
            return Ok(Err("the server answered the lookup with an error".into()));
        };
        let mut found = Vec::new();
        for row in rows {
            let parsed = row
                .split_once(' ')
                .and_then(|(i, d)| Some((i.parse::<usize>().ok()?, d)))
                .filter(|(i, _)| *i < names.len());
            match parsed {
                Some((i, d)) if !d.trim().is_empty() => found.push((i, d.to_string())),
                Some((i, _)) => {
                    return Ok(Err(format!(
                        "the server does not show the definition of the view {} (SHOW VIEW privilege)",
                        names[i]
                    )));
                }
                None => return Ok(Err("an answer Sluice does not read".into())),
            }
        }
        // A view the server named a moment ago whose definition it does
        // not give now (dropped or replaced meanwhile): not taken for a
        // table.
        if let Some((_, _, i)) = views
            .iter()
            .find(|(_, _, i)| found.iter().all(|(f, _)| f != i))
        {
            return Ok(Err(format!(
                "the server did not give the definition of the view {}",
                names[*i]
            )));
        }
        Ok(Ok(found))
    }

    /// The relations to ask the server about for `names` of the texts
    /// `texts` run in `database` ([`views::candidates`]); why not when
    /// there are too many or one cannot be asked precisely.
    pub(super) fn precise_candidates(
        &self,
        names: &[String],
        texts: &[&str],
        database: Option<&str>,
    ) -> Result<Vec<(String, String, usize)>, String> {
        let tables: Vec<&str> = names.iter().map(String::as_str).collect();
        let lower_case = self.settings.lower_case_names;
        let Some((candidates, assumed)) = views::candidates(&tables, texts, database, lower_case)
        else {
            return Err(format!("more than {MAX_CANDIDATES} names to look up"));
        };
        if let Some(&i) = assumed.first() {
            return Err(format!("{} cannot be looked up precisely", names[i]));
        }
        Ok(candidates)
    }

    /// Which of `candidates` (see [`views::candidates`]) the server says
    /// are views, asked of `information_schema.TABLES`; `None` when it
    /// answers with an error or with what Sluice does not read.
    async fn views_among<'c>(
        &mut self,
        candidates: &'c [(String, String, usize)],
    ) -> Result<Option<Vec<&'c (String, String, usize)>>, SessionError> {
        let Some(sql) = views::lookup(
            candidates.iter().map(|(s, t, _)| (s.as_str(), t.as_str())),
            |k| k.to_string(),
            " AND TABLE_TYPE = 'VIEW'",
        ) else {
            return Ok(Some(Vec::new()));
        };
        self.up
            .commands(&[views::com_query(&sql).as_slice()])
            .await?;
        let Some(rows) = self.read_single_column().await? else {
            return Ok(None);
        };
        let mut views = Vec::with_capacity(rows.len());
        for row in rows {
            match row.parse::<usize>().ok().and_then(|k| candidates.get(k)) {
                Some(c) => views.push(c),
                None => return Ok(None),
            }
        }
        Ok(Some(views))
    }
}

/// What [`Session::related_names`] finds: each name's related names, and
/// which of the names are views.
type Related = (HashMap<String, Reach>, Vec<String>);

/// The tables a view's `definition` reads and the functions it calls, as
/// Sluice's parser reports them; why not when it does not parse as one
/// SELECT.
fn definition_tables(definition: &str) -> Result<(Vec<String>, Vec<String>), String> {
    let statements = sluice_policy::sql::parse(definition, SqlDialect::Mysql)
        .map_err(|e| format!("its definition does not parse: {e}"))?;
    if statements.len() != 1 {
        return Err("its definition is not one statement".into());
    }
    Ok(statements
        .into_iter()
        .map(|s| (s.tables, s.functions))
        .fold((Vec::new(), Vec::new()), |(mut t, mut f), (st, sf)| {
            t.extend(st);
            f.extend(sf);
            (t, f)
        }))
}

/// What `name` reaches ([`reached`]), and the functions the definitions
/// of it and of the views it reaches call (`calls`), each after its view.
fn reach(
    name: &str,
    reads: &HashMap<String, Vec<String>>,
    calls: &HashMap<String, Vec<String>>,
) -> Reach {
    let relations = reached(name, reads);
    let mut functions: Vec<(String, String)> = std::iter::once(name)
        .chain(relations.iter().map(String::as_str))
        .flat_map(|v| {
            calls
                .get(v)
                .into_iter()
                .flatten()
                .map(move |f| (v.to_string(), f.clone()))
        })
        .collect();
    functions.sort();
    functions.dedup();
    Reach {
        relations,
        functions,
        ..Reach::default()
    }
}

/// What `name` reaches through `reads` (a name's tables when it is a view,
/// theirs, …), sorted, `name` itself left out.
fn reached(name: &str, reads: &HashMap<String, Vec<String>>) -> Vec<String> {
    let mut seen: HashSet<&str> = HashSet::new();
    let mut todo: Vec<&str> = vec![name];
    while let Some(n) = todo.pop() {
        for r in reads.get(n).into_iter().flatten() {
            if seen.insert(r.as_str()) {
                todo.push(r.as_str());
            }
        }
    }
    seen.remove(name);
    let mut out: Vec<String> = seen.into_iter().map(str::to_string).collect();
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn views_over_views_are_followed_to_their_tables() {
        let reads: HashMap<String, Vec<String>> = [
            ("vv", vec!["shop.v"]),
            ("shop.v", vec!["shop.customers", "shop.v"]),
            ("shop.customers", vec![]),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.into_iter().map(String::from).collect()))
        .collect();
        assert_eq!(reached("vv", &reads), vec!["shop.customers", "shop.v"]);
        assert!(reached("shop.customers", &reads).is_empty());
    }

    #[test]
    fn definitions_give_their_tables() {
        let d = "select `shop`.`customers`.`id` AS `id` from (`shop`.`customers` join `other`.`Notes` `n`)";
        let (t, _) = definition_tables(d).unwrap();
        assert!(t.contains(&"shop.customers".to_string()), "{t:?}");
        assert!(definition_tables("select from from").is_err());
    }
}
