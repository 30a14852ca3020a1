//! `limits.maxRowsAffected`: a write runs inside a transaction (autocommit)
//! or a savepoint (inside the client's transaction) the sidecar controls;
//! its answer is held until the server's command tag says how many rows it
//! changed, and it is rolled back with an error when that is over the limit.
//!
//! Syntax cannot tell how many rows `WHERE id = id` or a `MERGE` will touch;
//! the server's count can. This module holds what the session loop needs
//! beyond its queue: which statements are counted ([`plan`]), what is
//! refused beforehand because it could not be counted or would escape the
//! sidecar's transaction, and the verdict on the counts ([`verdict`]).
//!
//! What the command tag does not count — a trigger's writes, `ON DELETE
//! CASCADE`, a function the write calls — the server's per-transaction
//! statistics do ([`ROWS_CHANGED`], `pg_stat_xact_user_tables`, read in the
//! sidecar's transaction before and after the write): rows changed beyond
//! the tags are charged to the write ([`beyond_tags`]). So a write whose
//! trigger writes one audit row per row counts twice, and an UPDATE moving
//! rows between partitions counts a delete and an insert per row. Not seen:
//! a `SELECT f()` whose function writes (a read is not guarded), and a
//! TRUNCATE inside a function (the statistics drop the truncated table's
//! counts). TRUNCATE (no count at all) and CALL (its procedure's writes,
//! which it may also commit itself) are refused under the limit.

use std::ops::ControlFlow;

use sluice_crds::StatementKind;
use sluice_policy::sql::Statement;
use sqlparser::ast::{self, Visit, Visitor};

use super::messages::error_response;
use crate::enforcement::{Decided, Refusal};

/// How a statement's answer is counted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Count {
    /// Not a write: not counted.
    No,
    /// A write: its command tag must report a row count (INSERT, UPDATE,
    /// DELETE, MERGE, COPY), else it is rolled back (`EXPLAIN ANALYZE`).
    Strict,
    /// SQL `EXECUTE` of a prepared statement: counted when its tag is a
    /// write's (a prepared read reports `SELECT n`).
    Lenient,
}

/// One answer of a held statement, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Outcome {
    /// CommandComplete's tag.
    Tag(String),
    /// PortalSuspended: the Execute stopped at its row limit before the
    /// statement's count was reported.
    Suspended,
    /// EmptyQueryResponse.
    Empty,
}

/// What a limit applies to: the number and the policy that sets it.
pub(super) struct Limit<'a> {
    pub rows: u64,
    pub policy: &'a str,
}

fn refusal(limit: &Limit<'_>, why: &str) -> Refusal {
    Refusal {
        code: error_response::FEATURE_NOT_SUPPORTED,
        hint: Some(
            "send the write on its own, as a plain INSERT, UPDATE, DELETE, MERGE or COPY FROM"
                .into(),
        ),
        ..Refusal::plain(&format!(
            "statement refused by Sluice: AccessPolicy {:?} limits writes to {} rows each (maxRowsAffected), and {why}; nothing ran",
            limit.policy, limit.rows
        ))
    }
}

/// How statement `stmt` is counted, or why it cannot run under the limit.
fn count(stmt: &Statement) -> Result<Count, &'static str> {
    if writes_in_with(&stmt.ast) {
        return Err("a data-modifying WITH changes rows the server does not count in its answer");
    }
    if stmt.prepare_name.is_some() {
        // Counted when it is executed.
        return Ok(Count::No);
    }
    if stmt.kinds.contains(&StatementKind::Truncate) {
        return Err(
            "TRUNCATE empties its tables whole, and the server reports no row count for it",
        );
    }
    if stmt.kinds.contains(&StatementKind::Call) {
        return Err(
            "a procedure (CALL) changes rows the server does not count in its answer, and may commit them itself",
        );
    }
    if stmt.execute_name.is_some() {
        return Ok(Count::Lenient);
    }
    let is_write = |k: &StatementKind| {
        matches!(
            k,
            StatementKind::Insert
                | StatementKind::Update
                | StatementKind::Delete
                | StatementKind::Merge
        )
    };
    match stmt.kind {
        k if is_write(&k) => Ok(Count::Strict),
        StatementKind::Copy => Ok(match &stmt.ast {
            ast::Statement::Copy { to: false, .. } => Count::Strict,
            _ => Count::No,
        }),
        _ if stmt.kinds.iter().any(is_write) => Err(
            "it writes inside another statement (an SQL-text function, say), which the server does not count",
        ),
        _ => Ok(Count::No),
    }
}

/// Whether any `WITH` in the statement holds an INSERT, UPDATE, DELETE or MERGE.
fn writes_in_with(statement: &ast::Statement) -> bool {
    struct Finder;
    impl Visitor for Finder {
        type Break = ();
        fn pre_visit_query(&mut self, query: &ast::Query) -> ControlFlow<()> {
            let writes = query.with.iter().flat_map(|w| &w.cte_tables).any(|cte| {
                matches!(
                    *cte.query.body,
                    ast::SetExpr::Insert(_)
                        | ast::SetExpr::Update(_)
                        | ast::SetExpr::Delete(_)
                        | ast::SetExpr::Merge(_)
                )
            });
            if writes {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        }
    }
    statement.visit(&mut Finder).is_break()
}

/// For the statements of one query string (simple protocol) or of the
/// Executes of one extended-protocol group, in order: how each is counted,
/// or `None` when nothing of it writes. Refused beforehand: text Sluice
/// could not parse (it may write), transaction control next to a write
/// (it would end the sidecar's transaction), a COPY FROM with anything
/// else, and writes the server does not count.
pub(super) fn plan(
    statements: &[Option<(&Decided, usize)>],
    extended: bool,
    limit: &Limit<'_>,
) -> Result<Option<Vec<Count>>, Refusal> {
    let mut counts = Vec::with_capacity(statements.len());
    let mut control = false;
    let mut copy_in = false;
    for statement in statements {
        let Some((decided, index)) = statement else {
            return Err(refusal(
                limit,
                "Sluice does not know which statement this Execute runs (its portal was not bound through Sluice), so it cannot tell whether it writes",
            ));
        };
        if decided.unparsed() {
            return Err(refusal(
                limit,
                "Sluice could not parse the statement, so it cannot tell whether it writes",
            ));
        }
        let Some(stmt) = decided.statement(*index) else {
            // An empty query string.
            counts.push(Count::No);
            continue;
        };
        control |= matches!(
            stmt.kind,
            StatementKind::Begin | StatementKind::Commit | StatementKind::Rollback
        );
        let c = count(stmt).map_err(|why| refusal(limit, why))?;
        copy_in |= c == Count::Strict && stmt.kind == StatementKind::Copy;
        counts.push(c);
    }
    if counts.iter().all(|c| *c == Count::No) {
        return Ok(None);
    }
    if control {
        return Err(refusal(
            limit,
            "a write cannot share its query string (or extended-protocol group) with BEGIN, COMMIT, ROLLBACK, SAVEPOINT or RELEASE: Sluice runs the write in a transaction of its own",
        ));
    }
    if copy_in && extended {
        return Err(refusal(
            limit,
            "a COPY FROM is counted through the simple query protocol only (send it as a simple query)",
        ));
    }
    if copy_in && counts.len() > 1 {
        return Err(refusal(
            limit,
            "a COPY FROM must come alone in its query string (or extended-protocol group)",
        ));
    }
    Ok(Some(counts))
}

/// The row count of a write's command tag.
fn write_rows(tag: &str) -> Option<u64> {
    let mut words = tag.split(' ');
    let command = words.next()?;
    if !matches!(command, "INSERT" | "UPDATE" | "DELETE" | "MERGE" | "COPY") {
        return None;
    }
    tag.rsplit(' ').next()?.parse().ok()
}

/// The refusal of a held answer whose counts break the limit (or cannot be
/// known), or `None` when it may be committed. `outcomes` are in the order
/// of `counts`; a statement without an outcome did not run.
pub(super) fn verdict(
    counts: &[Count],
    outcomes: &[Outcome],
    limit: &Limit<'_>,
) -> Option<(usize, Refusal)> {
    for (i, (count, outcome)) in counts.iter().zip(outcomes).enumerate() {
        let exceeded = |rows: u64, tag: &str| {
            (
                i,
                Refusal {
                    code: error_response::PROGRAM_LIMIT_EXCEEDED,
                    detail: Some(format!(
                        "the server reported {tag:?}: {rows} rows changed, the limit is {}",
                        limit.rows
                    )),
                    hint: Some(
                        "narrow the WHERE clause, or write in batches of at most the limit".into(),
                    ),
                    ..Refusal::plain(&format!(
                        "write refused by Sluice: it changed {rows} rows, more than the maxRowsAffected limit of {} set by AccessPolicy {:?}; it was rolled back",
                        limit.rows, limit.policy
                    ))
                },
            )
        };
        let uncounted = |what: &str| {
            (
                i,
                Refusal {
                    code: error_response::PROGRAM_LIMIT_EXCEEDED,
                    ..Refusal::plain(&format!(
                        "write refused by Sluice: AccessPolicy {:?} limits writes to {} rows each (maxRowsAffected), and {what}; it was rolled back",
                        limit.policy, limit.rows
                    ))
                },
            )
        };
        match (count, outcome) {
            (Count::No, _) | (_, Outcome::Empty) => {}
            (_, Outcome::Suspended) => {
                return Some(uncounted(
                    "the server had not reported how many rows it changed when the Execute's row limit stopped it (execute a write with no row limit)",
                ));
            }
            (Count::Strict, Outcome::Tag(tag)) => match write_rows(tag) {
                Some(rows) if rows > limit.rows => return Some(exceeded(rows, tag)),
                Some(_) => {}
                None => {
                    return Some(uncounted(&format!(
                        "the server did not report how many rows it changed (its answer was {tag:?})"
                    )));
                }
            },
            (Count::Lenient, Outcome::Tag(tag)) => {
                if let Some(rows) = write_rows(tag)
                    && rows > limit.rows
                {
                    return Some(exceeded(rows, tag));
                }
            }
        }
    }
    None
}

/// The sidecar's count of the rows its transaction changed so far, in every
/// user table: the server's per-transaction statistics, which see what the
/// command tag does not (rows a trigger, an `ON DELETE CASCADE` or a
/// function called by the write changed). SQL NULL when the server keeps
/// none (`track_counts` off). Every name is qualified, operators included,
/// so that no `search_path` of the client's can stand in for them.
pub(super) const ROWS_CHANGED: &str = "SELECT CASE WHEN pg_catalog.current_setting('track_counts')::pg_catalog.bool \
     THEN COALESCE((SELECT pg_catalog.sum(s.n_tup_ins OPERATOR(pg_catalog.+) s.n_tup_upd \
     OPERATOR(pg_catalog.+) s.n_tup_del) FROM pg_catalog.pg_stat_xact_user_tables s), 0)::pg_catalog.text END";

/// The refusal of a held answer within the limit by its command tags when
/// the transaction changed more rows than those tags say (`changed`, from
/// [`ROWS_CHANGED`] after the write less before it): the rows no tag counts
/// are charged to each counted statement, so none can hide writes behind a
/// trigger, a cascade or a function. `None` for `changed` (no statistics)
/// is refused: the limit could not be checked.
pub(super) fn beyond_tags(
    counts: &[Count],
    outcomes: &[Outcome],
    changed: Option<u64>,
    limit: &Limit<'_>,
) -> Option<(usize, Refusal)> {
    let tagged: Vec<(usize, u64)> = counts
        .iter()
        .zip(outcomes)
        .enumerate()
        .filter_map(|(i, (count, outcome))| match (count, outcome) {
            (Count::Strict | Count::Lenient, Outcome::Tag(tag)) => write_rows(tag).map(|r| (i, r)),
            _ => None,
        })
        .collect();
    let first = tagged.first().map_or(0, |(i, _)| *i);
    let Some(changed) = changed else {
        return Some((
            first,
            Refusal {
                code: error_response::PROGRAM_LIMIT_EXCEEDED,
                hint: Some("ask the database administrator to keep track_counts on".into()),
                ..Refusal::plain(&format!(
                    "write refused by Sluice: AccessPolicy {:?} limits writes to {} rows each (maxRowsAffected), and the server keeps no count of the rows a transaction changes (track_counts is off), so rows changed by triggers, cascades and functions could not be counted; it was rolled back",
                    limit.policy, limit.rows
                ))
            },
        ));
    };
    let untagged = changed.saturating_sub(tagged.iter().map(|(_, r)| r).sum());
    if untagged == 0 {
        return None;
    }
    let (i, rows) = tagged
        .iter()
        .copied()
        .max_by_key(|(_, r)| *r)
        .unwrap_or((first, 0));
    (rows + untagged > limit.rows).then(|| {
        (
            i,
            Refusal {
                code: error_response::PROGRAM_LIMIT_EXCEEDED,
                detail: Some(format!(
                    "the server reported {rows} rows changed by the statement and {untagged} more changed in the same write by triggers, cascades or functions; the limit is {}",
                    limit.rows
                )),
                hint: Some(
                    "narrow the WHERE clause, or write in batches small enough for what the write also changes elsewhere".into(),
                ),
                ..Refusal::plain(&format!(
                    "write refused by Sluice: it changed {} rows with what its triggers, cascades or functions changed, more than the maxRowsAffected limit of {} set by AccessPolicy {:?}; it was rolled back",
                    rows + untagged,
                    limit.rows,
                    limit.policy
                ))
            },
        )
    })
}

/// A savepoint and prepared-statement name no client can guess: a random
/// suffix drawn per session.
pub(super) fn reserved_name() -> String {
    use rand::Rng;
    let n: u64 = rand::rng().random();
    format!("sluice_guard_{n:016x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_tags_are_counted() {
        assert_eq!(write_rows("UPDATE 12"), Some(12));
        assert_eq!(write_rows("INSERT 0 3"), Some(3));
        assert_eq!(write_rows("MERGE 4"), Some(4));
        assert_eq!(write_rows("COPY 5"), Some(5));
        assert_eq!(write_rows("SELECT 5"), None);
        assert_eq!(write_rows("EXPLAIN"), None);
    }

    #[test]
    fn rows_no_tag_counts_are_charged_to_the_write() {
        let limit = Limit {
            rows: 3,
            policy: "p",
        };
        let tag = |t: &str| Outcome::Tag(t.into());
        let one = [tag("DELETE 1")];
        // The tags tell it all, or the rest keeps the write within the limit.
        assert!(beyond_tags(&[Count::Strict], &one, Some(1), &limit).is_none());
        assert!(beyond_tags(&[Count::Strict], &one, Some(3), &limit).is_none());
        let (i, r) = beyond_tags(
            &[Count::No, Count::Strict],
            &[tag("SELECT 1"), tag("DELETE 1")],
            Some(6),
            &limit,
        )
        .expect("over the limit with a cascade");
        assert_eq!(i, 1);
        assert!(r.message.contains("changed 6 rows"), "{}", r.message);
        // No statistics: refused.
        assert!(beyond_tags(&[Count::Strict], &one, None, &limit).is_some());
    }

    #[test]
    fn verdict_refuses_past_the_limit_and_the_uncounted() {
        let limit = Limit {
            rows: 2,
            policy: "p",
        };
        let tag = |t: &str| Outcome::Tag(t.into());
        assert!(verdict(&[Count::Strict], &[tag("UPDATE 2")], &limit).is_none());
        let (i, r) = verdict(
            &[Count::No, Count::Strict],
            &[tag("SELECT 9"), tag("DELETE 3")],
            &limit,
        )
        .expect("over the limit");
        assert_eq!(i, 1);
        assert!(r.message.contains("changed 3 rows"), "{}", r.message);
        assert!(verdict(&[Count::Strict], &[tag("EXPLAIN")], &limit).is_some());
        assert!(verdict(&[Count::Strict], &[Outcome::Suspended], &limit).is_some());
        assert!(verdict(&[Count::Lenient], &[tag("SELECT 9")], &limit).is_none());
        assert!(verdict(&[Count::Lenient], &[tag("DELETE 9")], &limit).is_some());
    }
}
