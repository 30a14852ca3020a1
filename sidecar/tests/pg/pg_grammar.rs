//! Parser differentials on the wire (issue #15, "the sidecar must see what
//! PostgreSQL sees"): texts that Sluice's SQL parser and PostgreSQL's
//! grammar could read differently, class by class, through `sluice-sidecar
//! standalone` to a real PostgreSQL with real clients (a raw protocol
//! client, tokio-postgres, psql). For every case the decision must be what
//! PostgreSQL executes: a `DROP`/`DELETE` hidden in the text never runs (the
//! seeded table survives, checked on the server), a masked column stays
//! masked, and a text both read alike is decided as before.
//!
//! The policy is permissive where it could be fooled: `defaultAction:
//! allow`, `onParseError: allow`, deny rules for `drop`, `truncate` and
//! `delete`, the SSN column masked.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use common::*;

const SSN: &str = "123-45-6789";

const POLICY: &str = r#"  defaultAction: allow
  onParseError: allow
  rules:
    - {name: no-drop, action: deny, match: {statements: [drop, truncate]}}
    - {name: no-delete, action: deny, match: {statements: [delete]}}
  masking:
    - columns: ["customers.ssn"]
      strategy: redact
"#;

/// [`POLICY`] without masking: `onParseError: allow` lets a text Sluice
/// cannot parse run only when no result values are masked.
const POLICY_UNMASKED: &str = r#"  defaultAction: allow
  onParseError: allow
  rules:
    - {name: no-drop, action: deny, match: {statements: [drop, truncate]}}
    - {name: no-delete, action: deny, match: {statements: [delete]}}
"#;

/// The SQLSTATEs of the ErrorResponses in a raw answer.
fn codes(bytes: &[u8]) -> Vec<String> {
    let mut codes = Vec::new();
    let mut i = 0;
    while i + 5 <= bytes.len() {
        let tag = bytes[i];
        let len =
            u32::from_be_bytes([bytes[i + 1], bytes[i + 2], bytes[i + 3], bytes[i + 4]]) as usize;
        let body = &bytes[i + 5..(i + 1 + len).min(bytes.len())];
        if tag == b'E' {
            for field in body.split(|b| *b == 0) {
                if let Some((b'C', code)) = field.split_first() {
                    codes.push(String::from_utf8_lossy(code).into_owned());
                }
            }
        }
        i += 1 + len;
    }
    codes
}

struct Setup {
    sidecar: Sidecar,
    admin: tokio_postgres::Client,
}

/// A database with `victims` (three rows) and `customers` (one SSN), and a
/// sidecar in front of it with `spec` as the policy's spec lines.
async fn setup(test: &str, spec: &str) -> Setup {
    let pg = server();
    let db = db_name(test);
    pg.create_database(&db).await;
    let admin = connect(&pg.admin_url(&db)).await;
    admin
        .batch_execute(&format!(
            "CREATE TABLE victims (id int, note text);
             INSERT INTO victims VALUES (1, 'a'), (2, 'b'), (3, 'c');
             CREATE TABLE customers (id int, ssn text);
             INSERT INTO customers VALUES (1, '{SSN}');"
        ))
        .await
        .unwrap();
    let sidecar = Sidecar::start(
        &manifests(pg, &db, ADMIN, "disable", &policy(spec)),
        "shop/report-job",
    );
    Setup { sidecar, admin }
}

impl Setup {
    /// `victims` still has its three rows (checked on the server).
    async fn victims_intact(&self, what: &str) {
        let n: i64 = self
            .admin
            .query_one("SELECT count(*) FROM victims", &[])
            .await
            .unwrap_or_else(|e| panic!("{what}: victims is gone: {e}"))
            .get(0);
        assert_eq!(n, 3, "{what}: rows of victims were deleted");
    }

    /// `sql` is refused with `code` by every client (raw simple query,
    /// tokio-postgres, psql), nothing of it runs and no SSN is answered.
    async fn refused(&self, sql: &str, code: &str) {
        let mut raw = RawClient::connect(self.sidecar.port);
        let bytes = raw.simple(sql);
        assert_eq!(
            codes(&bytes),
            vec![code.to_string()],
            "raw {sql:?}: {}",
            String::from_utf8_lossy(&bytes)
        );
        assert!(!contains(&bytes, SSN), "raw {sql:?}: the SSN leaked");
        let client = self.sidecar.connect().await;
        let err = client
            .simple_query(sql)
            .await
            .expect_err("tokio-postgres: refused");
        assert_eq!(
            err.code().map(|c| c.code()),
            Some(code),
            "tokio-postgres {sql:?}: {}",
            message(&err)
        );
        let (ok, out, err) = psql(self.sidecar.port, &["-At", "-c", sql]);
        assert!(!ok, "psql {sql:?} ran: {out}");
        assert!(
            !out.contains(SSN) && !err.contains(SSN),
            "psql {sql:?}: the SSN leaked"
        );
        self.victims_intact(sql).await;
    }

    /// `sql` runs (allowed: both read it alike), with `rows` data rows in
    /// the raw answer and no SSN in it.
    async fn runs(&self, sql: &str, rows: usize) {
        let mut raw = RawClient::connect(self.sidecar.port);
        let bytes = raw.simple(sql);
        assert!(
            codes(&bytes).is_empty(),
            "{sql:?}: {}",
            String::from_utf8_lossy(&bytes)
        );
        assert!(!contains(&bytes, SSN), "{sql:?}: the SSN leaked");
        let (tags, _) = tags_of(&bytes);
        assert_eq!(
            tags.iter().filter(|t| **t == b'D').count(),
            rows,
            "{sql:?}: {}",
            String::from_utf8_lossy(&bytes)
        );
        self.victims_intact(sql).await;
    }
}

fn tags_of(bytes: &[u8]) -> (Vec<u8>, ()) {
    let mut tags = Vec::new();
    let mut i = 0;
    while i + 5 <= bytes.len() {
        let len =
            u32::from_be_bytes([bytes[i + 1], bytes[i + 2], bytes[i + 3], bytes[i + 4]]) as usize;
        tags.push(bytes[i]);
        i += 1 + len;
    }
    (tags, ())
}

// === Operators that look like comments ===

/// sqlparser reads `#-` (a jsonb operator) in `#--`; PostgreSQL ends an
/// operator before `--`, which starts a comment. sqlparser: one SELECT;
/// PostgreSQL: SELECT, DROP, SELECT. Fails without the gate (the DROP ran).
#[tokio::test]
async fn operators_that_swallow_a_comment_start() {
    let s = setup("grammar_operators", POLICY).await;
    s.refused(
        "SELECT 1 #-- '\n2; DROP TABLE victims; SELECT '\n' || ' --'",
        "0A000",
    )
    .await;
    // sqlparser cannot read `@--` here; PostgreSQL reads a DROP in it:
    // the drop rule applies under onParseError: allow (ran without it).
    s.refused(
        "SELECT 2 - @-- '\n3; DROP TABLE victims; SELECT '\n' || ' --'",
        "42501",
    )
    .await;
    // Already safe: both end a line comment at a carriage return, and read
    // `#-`, `-->` alike where no comment is involved.
    s.refused("SELECT 1 -- x\r; DELETE FROM victims", "42501")
        .await;
    s.runs("SELECT '{\"a\":1}'::jsonb #- '{a}'", 1).await;
    s.runs("SELECT 1 --> 2", 1).await;
}

// === Escape strings ===

/// A string continued on another line keeps the first part's escapes for
/// PostgreSQL (`E'a'` + newline + `'b\'…'`: `\'` is a quote inside it);
/// sqlparser reads the second part as a plain string ending at `\'`. Fails
/// without the gate: two SELECTs for sqlparser, a SELECT and a DROP (or a
/// read of the masked column) for PostgreSQL.
#[tokio::test]
async fn escape_string_continuations() {
    let s = setup("grammar_escapes", POLICY).await;
    s.refused(
        "SELECT E'a'\n'b\\'; SELECT 1 AS x, '; DROP TABLE victims; --'",
        "0A000",
    )
    .await;
    s.refused(
        "SELECT E'a'\n'b\\'; SELECT 1 AS x, '; SELECT ssn FROM customers; --'",
        "0A000",
    )
    .await;
    // The decision cache folds string values: the same shape with a
    // harmless continuation first, in one session, must not let the hiding
    // one through on a cache hit.
    let mut raw = RawClient::connect(s.sidecar.port);
    let first = raw.simple("SELECT E'a'\n'zz'; SELECT 1 AS x, '; DROP TABLE victims; --'");
    assert!(
        codes(&first).is_empty(),
        "{}",
        String::from_utf8_lossy(&first)
    );
    let second = raw.simple("SELECT E'a'\n'b\\'; SELECT 1 AS x, '; DROP TABLE victims; --'");
    assert_eq!(codes(&second), vec!["0A000".to_string()]);
    s.victims_intact("a cache hit on the shape").await;
    // Already safe: a backslash-quote in one E'' string, an escaped
    // backslash before the closing quote, N'' and plain strings.
    s.runs("SELECT E'a\\'; DROP TABLE victims; --'", 1).await;
    s.refused("SELECT E'\\\\\\''; DROP TABLE victims; --'", "42501")
        .await;
    s.refused("SELECT N'a\\'; DROP TABLE victims; --'", "42501")
        .await;
    s.refused("SELECT 'a\\'; DROP TABLE victims; --'", "42501")
        .await;
    s.runs("SELECT E'\\x27; DROP TABLE victims; --'", 1).await;
}

// === Dollar quoting, nested comments, quoted identifiers ===

/// Already safe: sqlparser reads dollar quotes (tags are case-sensitive,
/// nest, may be non-ASCII or `_`), nested comments and doubled quotes in
/// identifiers as PostgreSQL does. Each case is decided on PostgreSQL's
/// reading: a `DROP` inside a quote or comment is not run and not denied,
/// one outside is denied.
#[tokio::test]
async fn dollar_quotes_comments_and_identifiers() {
    let s = setup("grammar_quotes", POLICY).await;
    for sql in [
        "SELECT $a$ x $A$; DROP TABLE victims; --$a$",
        "SELECT $a$ x $b$ ; DROP TABLE victims; $b$ y $a$",
        "SELECT $é$ ; DROP TABLE victims; $é$",
        "SELECT $_$ ; DROP TABLE victims; $_$",
        "SELECT $$$; DROP TABLE victims; $$",
        "SELECT $ab$ x $a$ ; DROP TABLE victims; $ab$",
        "SELECT 1 /* a /* b */ ; DROP TABLE victims; -- */",
        "SELECT 1 AS \"a\"\"; DROP TABLE victims; --\"",
        "SELECT U&'\\0027; DROP TABLE victims; --'",
    ] {
        s.runs(sql, 1).await;
    }
    for sql in [
        "SELECT $a$ $a $a$ ; DROP TABLE victims",
        "SELECT 1 /* a /* b */ */ ; DROP TABLE victims",
        "SELECT 1 AS x$a$; DROP TABLE victims; --$a$",
        "SELECT 'x' AS \"a;b\"; DROP TABLE victims",
    ] {
        s.refused(sql, "42501").await;
    }
    // sqlparser cannot read UESCAPE; PostgreSQL reads the DROP after it.
    s.refused("SELECT U&'a' UESCAPE '!'; DROP TABLE victims", "42501")
        .await;
}

// === Numbers, casts, keywords as identifiers ===

/// Numeric literal oddities and keywords used as names: decided on what
/// PostgreSQL reads. A text PostgreSQL's grammar rejects is refused with
/// 42601 (its own error class) before it reaches the server.
#[tokio::test]
async fn numbers_casts_and_keywords() {
    let s = setup("grammar_numbers", POLICY).await;
    s.refused("SELECT 0x1F; DROP TABLE victims", "42501").await;
    s.refused("SELECT 1e", "42601").await;
    s.refused("SELECT 'a' 'b'; SELECT 1", "42601").await;
    s.runs("SELECT 1::int; SELECT 'a'::text::varchar(3)", 2)
        .await;
    s.runs("SELECT \"select\" FROM (SELECT 1 AS \"select\") s", 1)
        .await;
    s.runs("SELECT * FROM victims AS drop", 3).await;
    s.runs("SELECT 1.e1, .5, 1e-3", 1).await;
}

// === Kinds: EXPLAIN (ANALYSE) ===

/// `ANALYSE` is PostgreSQL's other spelling of `ANALYZE`: `EXPLAIN
/// (ANALYSE) DELETE` runs the DELETE, while sqlparser reads a plain EXPLAIN
/// (kind select). Already safe before the gate (its nested kinds hold
/// `delete`, and `maxRowsAffected` refuses a write inside another
/// statement, also 0A000); the gate now refuses it for the right reason.
#[tokio::test]
async fn explain_analyse_runs_its_statement() {
    let s = setup(
        "grammar_explain",
        "  defaultAction: allow\n  limits: {maxRowsAffected: 1}\n",
    )
    .await;
    s.refused("EXPLAIN (ANALYSE) DELETE FROM victims", "0A000")
        .await;
    s.refused("EXPLAIN (ANALYSE true) DELETE FROM victims", "0A000")
        .await;
}

// === Texts only PostgreSQL reads: DO, xmlelement(name …) ===

/// Under `onParseError: allow` (and no masking: see
/// [`unparsed_texts_under_masking_are_refused_whatever_on_parse_error_says`]),
/// a DO block runs, but a DROP after it meets the drop rule (it ran without
/// the second reading), and a rule denying `do` denies a DO block.
#[tokio::test]
async fn do_blocks_meet_the_rules_naming_their_kinds() {
    let s = setup("grammar_do", POLICY_UNMASKED).await;
    s.runs("DO $$BEGIN PERFORM 1; END$$", 0).await;
    s.runs("SELECT xmlelement(name foo)", 1).await;
    s.refused("DO $$BEGIN PERFORM 1; END$$; DROP TABLE victims", "42501")
        .await;
    s.refused("SELECT xmlelement(name foo); TRUNCATE victims", "42501")
        .await;
    let no_do = setup(
        "grammar_no_do",
        "  defaultAction: allow\n  onParseError: allow\n  rules:\n    - {name: no-do, action: deny, match: {statements: [do]}}\n",
    )
    .await;
    no_do
        .refused("DO $$BEGIN DELETE FROM victims; END$$", "42501")
        .await;
    // An allow rule does not loosen onParseError: deny.
    let deny = setup(
        "grammar_do_deny",
        "  defaultAction: allow\n  onParseError: deny\n  rules:\n    - {name: do-ok, action: allow, match: {statements: [do]}}\n",
    )
    .await;
    deny.refused("DO $$BEGIN DELETE FROM victims; END$$", "42501")
        .await;
}

/// Under masking, a text Sluice cannot parse is refused whatever
/// `onParseError` says: Sluice cannot tell which values it reads or where
/// it sends them. Before, under `onParseError: allow`, `COPY (SELECT
/// xmlelement(name x, ssn) …) TO STDOUT` answered the SSN raw (COPY is
/// masked by the statement's plan, and an unparsed text has none),
/// `INSERT … SELECT xmlelement(…)` and a DO block stored it where no rule
/// looks, and `DETACH PARTITION`, `NO INHERIT`, `SET SCHEMA` moved a masked
/// table's rows out of the rules' sight; all ran.
#[tokio::test]
async fn unparsed_texts_under_masking_are_refused_whatever_on_parse_error_says() {
    let spec = POLICY.replace(
        r#"["customers.ssn"]"#,
        r#"["customers.ssn", "acct.ssn", "family.ssn"]"#,
    );
    let s = setup("grammar_unparsed_masked", &spec).await;
    s.admin
        .batch_execute(&format!(
            "CREATE TABLE notes (note text);
             CREATE TABLE acct (id int, ssn text) PARTITION BY RANGE (id);
             CREATE TABLE acct_p1 PARTITION OF acct FOR VALUES FROM (0) TO (100);
             INSERT INTO acct VALUES (1, '{SSN}');
             CREATE TABLE family (id int, ssn text);
             CREATE TABLE kid () INHERITS (family);
             INSERT INTO kid VALUES (1, '{SSN}');
             CREATE SCHEMA scratch;"
        ))
        .await
        .unwrap();
    for sql in [
        "COPY (SELECT xmlelement(name x, ssn) FROM customers) TO STDOUT",
        "SELECT xmlelement(name x, ssn) FROM customers",
        "INSERT INTO notes SELECT xmlelement(name x, ssn)::text FROM customers",
        "DO $$BEGIN INSERT INTO notes SELECT ssn FROM customers; END$$",
        "ALTER TABLE acct DETACH PARTITION acct_p1",
        "ALTER TABLE kid NO INHERIT family",
        "ALTER TABLE customers SET SCHEMA scratch",
        "CREATE RULE r AS ON INSERT TO victims DO ALSO INSERT INTO notes VALUES ('x')",
    ] {
        s.refused(sql, "42501").await;
        let mut raw = RawClient::connect(s.sidecar.port);
        let bytes = raw.extended(sql, false);
        assert!(
            contains(&bytes, "C42501")
                && contains(&bytes, "cannot parse the statement")
                && contains(&bytes, "refuses it whatever onParseError says")
                && !contains(&bytes, "onParseError decides"),
            "extended {sql:?}: {}",
            String::from_utf8_lossy(&bytes)
        );
        assert!(!contains(&bytes, SSN), "extended {sql:?}: the SSN leaked");
    }
    // Nothing of them ran: checked on the server.
    let state = s
        .admin
        .query_one(
            "SELECT (SELECT count(*) FROM notes),
                    (SELECT count(*) FROM pg_inherits WHERE inhrelid IN ('acct_p1'::regclass, 'kid'::regclass)),
                    (SELECT count(*) FROM pg_rules WHERE rulename = 'r'),
                    (SELECT schemaname::text FROM pg_tables WHERE tablename = 'customers')",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(state.get::<_, i64>(0), 0, "notes were written");
    assert_eq!(
        state.get::<_, i64>(1),
        2,
        "a partition or child was detached"
    );
    assert_eq!(state.get::<_, i64>(2), 0, "the rule was created");
    assert_eq!(state.get::<_, String>(3), "public", "customers was moved");
    // Texts Sluice reads are decided as before.
    s.runs("SELECT ssn FROM customers", 1).await;
}
