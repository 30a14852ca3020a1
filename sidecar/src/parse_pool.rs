//! Large SQL texts are parsed off the runtime thread (issue #17, item 2).
//!
//! Deciding a text parses it twice (sqlparser, then PostgreSQL's grammar,
//! see `sluice_policy::pg_grammar`). For ordinary statements that costs
//! microseconds and stays inline; at the token bound
//! (`sluice_policy::sql::MAX_TOKENS`) one parse takes about 0.6 s in a
//! release build, and on the sidecar's single runtime thread (the default,
//! `--worker-threads 1`) every other session would wait that long. A text
//! of at least [`OFF_THREAD_MIN_BYTES`] is therefore decided on tokio's
//! blocking pool (`spawn_blocking`; `block_in_place` would panic on a
//! current-thread runtime), at most [`MAX_OFF_THREAD_PARSES`] at a time so
//! hostile clients cannot fill the blocking pool or multiply the parse's
//! memory: others wait for a slot without holding a thread. Only texts the
//! decision cache does not keep go there, so cache hits never leave the
//! runtime thread.

use std::sync::Arc;

use sluice_policy::engine::{Decision, PolicySet, SqlDecision};
use sluice_policy::sql::SqlDialect;
use tokio::sync::Semaphore;

/// Texts at least this long are decided off the runtime thread: those the
/// decision cache does not keep (longer than 4 KiB) are parsed at every
/// execution, and cost milliseconds each. Measured in a debug build
/// (`parse_costs` in this module's tests; a release build is several times
/// faster): sqlparser + PostgreSQL's grammar take about 23 ms at 4 KiB,
/// 107 ms at 16 KiB, 440 ms at 64 KiB, 1.7 s at 256 KiB, against tens of
/// microseconds to hand a text to the blocking pool.
pub const OFF_THREAD_MIN_BYTES: usize = 4 * 1024;

/// Most texts decided off the runtime thread at once, process-wide. A
/// parse at the token bound peaks at about 200 MiB (see
/// `sluice_policy::sql::MAX_TOKENS`), so this also bounds their memory.
pub const MAX_OFF_THREAD_PARSES: usize = 2;

static SLOTS: Semaphore = Semaphore::const_new(MAX_OFF_THREAD_PARSES);

/// Whether `sql` is decided off the runtime thread.
pub fn off_thread(sql: &str) -> bool {
    sql.len() >= OFF_THREAD_MIN_BYTES
}

/// `set.decide_sql(sql)` on the blocking pool, once a slot is free. Fails
/// closed: a parse that panics refuses the text.
pub async fn decide_sql(set: Arc<PolicySet>, sql: &str) -> SqlDecision {
    let text = sql.to_owned();
    let bytes = text.len();
    // The semaphore is never closed, so acquiring cannot fail; if it did,
    // parsing without a slot would lift the bound: refuse instead.
    let Ok(permit) = SLOTS.acquire().await else {
        return undecided(bytes, "no parse slot");
    };
    let joined = tokio::task::spawn_blocking(move || {
        let _permit = permit;
        set.decide_sql(&text, SqlDialect::Postgres)
    })
    .await;
    joined.unwrap_or_else(|_| undecided(bytes, "the SQL parser failed"))
}

fn undecided(bytes: usize, what: &str) -> SqlDecision {
    SqlDecision {
        decision: Decision::refused_by_sluice(&format!(
            "the statement could not be decided ({what})"
        )),
        statements: Vec::new(),
        parse_error: Some(what.to_string()),
        redacted: format!("<statement not decided: {bytes} bytes>"),
        fingerprint: String::new(),
        too_complex: false,
        disagreement: None,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;

    /// Indicative only (debug build, shared machine): the cost of each
    /// parser per text size, and PostgreSQL's grammar's relative to
    /// sqlparser's. `cargo test -p sluice-sidecar --lib parse_costs --
    /// --ignored --nocapture`.
    #[test]
    #[ignore]
    fn parse_costs() {
        let row = "(1, 'text', 2.5, now()), ";
        for size in [256usize, 4096, 16 * 1024, 64 * 1024, 256 * 1024] {
            let mut sql = String::from("INSERT INTO t (a, b, c, d) VALUES ");
            while sql.len() < size {
                sql.push_str(row);
            }
            sql.push_str("(0, '', 0, now())");
            let n = (2_000_000 / size).clamp(3, 2000);
            let start = Instant::now();
            for _ in 0..n {
                let _ = sluice_policy::sql::parse(&sql, SqlDialect::Postgres).expect("parses");
            }
            let sqlparser = start.elapsed() / n as u32;
            let start = Instant::now();
            for _ in 0..n {
                let _ = sluice_policy::pg_grammar::kinds(&sql).expect("parses");
            }
            let pg = start.elapsed() / n as u32;
            println!(
                "{size:>7} bytes: sqlparser {sqlparser:?}, pg_query {pg:?}, ratio {:.2}",
                pg.as_secs_f64() / sqlparser.as_secs_f64()
            );
        }
    }
}
