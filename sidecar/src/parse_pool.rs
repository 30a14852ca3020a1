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

use crate::enforcement::Refusal;
use crate::postgres::messages::error_response;

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

/// The refusal of a text PostgreSQL's grammar reads otherwise than
/// Sluice's parser: 42601 (syntax error) when PostgreSQL rejects it too,
/// 0A000 (feature not supported) when it reads other statements.
pub fn grammar_refusal(sql: &SqlDecision) -> Option<Refusal> {
    let d = sql.disagreement.as_ref()?;
    Some(Refusal {
        code: if d.is_rejection() {
            SYNTAX_ERROR
        } else {
            error_response::FEATURE_NOT_SUPPORTED
        },
        message: format!("statement refused by Sluice: {}", sql.decision.reason),
        detail: Some(format!("statement: {}", sql.redacted)),
        hint: Some(
            "Sluice decides on its own reading of the text and refuses a text PostgreSQL would \
             read otherwise; nothing ran"
                .to_string(),
        ),
    })
}

/// SQLSTATE syntax_error.
const SYNTAX_ERROR: &str = "42601";

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use sluice_crds::AccessPolicy;
    use sluice_policy::engine::{CompiledPolicy, Identity, NoSecrets};
    use sluice_policy::pg_grammar::parses_on_this_thread;

    use super::*;
    use crate::enforcement::Binding;

    fn enforcer() -> crate::enforcement::Enforcer {
        let ap: AccessPolicy = serde_saphyr::from_str(
            r#"
apiVersion: sluice.dev/v1alpha1
kind: AccessPolicy
metadata: {name: p, namespace: shop}
spec:
  subjects: [{serviceAccount: app}]
  connections: [db]
  defaultAction: allow
  rules:
  - {name: no-drop, action: deny, match: {statements: [drop]}}
"#,
        )
        .expect("policy yaml");
        let policy = Arc::new(CompiledPolicy::compile(&ap, &NoSecrets).expect("compiles"));
        Binding::new(
            &[policy],
            Identity::service_account("shop", "app"),
            "db",
            None,
            false,
        )
        .enforcer()
        .expect("bound")
    }

    /// The decision cache's hits never run PostgreSQL's parser: counted,
    /// not timed. Misses run it once.
    #[test]
    fn cache_hits_never_parse_with_postgres_grammar() {
        let mut e = enforcer();
        for (text, parses) in [
            ("SELECT abalance FROM a WHERE aid = 1", 1),
            ("SELECT abalance FROM a WHERE aid = 1", 0),
            // Same shape, other literal: a hit on the shape key.
            ("SELECT abalance FROM a WHERE aid = 2", 0),
            ("SELECT E'x' FROM a WHERE aid = 3", 1),
            ("SELECT E'x' FROM a WHERE aid = 4", 0),
            ("SELECT 1; DROP TABLE a", 1),
            ("SELECT 1; DROP TABLE a", 0),
            // A plain string continuing an E'' string is read with escapes
            // by PostgreSQL: not folded, so this shape's second text (which
            // hides a DROP from sqlparser) is read again and refused.
            ("SELECT E'a'\n'zz'; SELECT 1 AS x, '; DROP TABLE a; --'", 1),
            ("SELECT E'a'\n'b\\'; SELECT 1 AS x, '; DROP TABLE a; --'", 1),
        ] {
            let before = parses_on_this_thread();
            let d = e.decide(text);
            assert_eq!(parses_on_this_thread() - before, parses, "{text}");
            let hides_drop = text.contains("'b\\'");
            let visible_drop = text.contains("DROP") && !text.contains("E'a'");
            assert_eq!(d.refusal.is_some(), visible_drop || hides_drop, "{text}");
        }
    }

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
