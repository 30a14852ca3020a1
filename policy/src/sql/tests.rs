//! Unit tests of SQL classification, including its private helpers.

use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::tokenizer::{Token, Tokenizer};

use super::bounds::{ends_operand, is_chaining};
use super::parse::scrub_message;
use super::{SqlDialect, Statement, parse, redact};

fn one(sql: &str) -> Statement {
    let mut v = parse(sql, SqlDialect::Postgres).unwrap();
    assert_eq!(v.len(), 1, "{sql}");
    v.remove(0)
}

#[test]
fn sql_text_of_each_statement_is_its_own() {
    let v = parse("  SELECT 1 ;\n -- c\n DROP TABLE t;;", SqlDialect::Postgres).unwrap();
    assert_eq!(v.len(), 2);
    assert_eq!(v[0].text, "SELECT 1");
    assert_eq!(v[1].text, "DROP TABLE t");
}

/// sqlparser's `AS TABLE name` reads two tokens past the name: at the end
/// of the text the statement's text, redaction and fingerprint were empty
/// (the audit said nothing of what ran), and before `; X` it took `X` into
/// the statement unseen. Both dialects.
#[test]
fn sql_table_queries_keep_their_text_and_swallow_nothing() {
    for dialect in [SqlDialect::Postgres, SqlDialect::Mysql] {
        let v = parse("CREATE TABLE l AS TABLE secrets", dialect).unwrap();
        assert_eq!(v[0].text, "CREATE TABLE l AS TABLE secrets", "{dialect:?}");
        assert_eq!(
            v[0].redacted, "CREATE TABLE l AS TABLE secrets",
            "{dialect:?}"
        );
        assert_ne!(
            v[0].fingerprint,
            parse("SELECT 1", dialect).unwrap()[0].fingerprint
        );
        for sql in [
            "CREATE TABLE l AS TABLE secrets; COMMIT",
            "CREATE TABLE l AS TABLE secrets; SHUTDOWN;",
            "SELECT 1; CREATE TABLE l AS TABLE t; VACUUM",
        ] {
            let e = parse(sql, dialect).expect_err(sql);
            assert!(
                e.to_string().contains("`TABLE name` followed by `;`"),
                "{sql}: {e}"
            );
        }
    }
}

#[test]
fn sql_text_positions_handle_multibyte_characters() {
    let v = parse("SELECT 'é€'; SELECT \"ü\" FROM t", SqlDialect::Postgres).unwrap();
    assert_eq!(v[0].text, "SELECT 'é€'");
    assert_eq!(v[1].text, "SELECT \"ü\" FROM t");
}

#[test]
fn sql_redacts_glued_number_suffixes() {
    assert_eq!(redact("SELECT 0x1F2E", SqlDialect::Postgres), "SELECT ?");
    assert!(!one("SELECT 1_000_123").redacted.contains("123"));
}

#[test]
fn sql_parse_error_messages_are_scrubbed_of_literals() {
    let tokens = Tokenizer::new(&PostgreSqlDialect {}, "SELECT 'hunter2', 8675309")
        .tokenize_with_location()
        .unwrap();
    let scrubbed = scrub_message(
        "Expect a char, found \"hunter2\" near 8675309 at Line: 1, Column: 8",
        &tokens,
    );
    assert_eq!(
        scrubbed,
        "Expect a char, found ? near ? at Line: 1, Column: 8"
    );
    let err = parse(
        "SELECT 'top secret' 'more secret' garbage",
        SqlDialect::Postgres,
    )
    .unwrap_err()
    .to_string();
    assert!(!err.contains("secret"), "{err}");
}

#[test]
fn sql_operator_count_skips_prefix_signs_and_stars() {
    let count = |sql: &str| {
        let tokens = Tokenizer::new(&PostgreSqlDialect {}, sql)
            .tokenize_with_location()
            .unwrap();
        let mut previous = None;
        let mut n = 0;
        for t in tokens
            .iter()
            .filter(|t| !matches!(t.token, Token::Whitespace(_)))
        {
            if is_chaining(&t.token) && ends_operand(previous) {
                n += 1;
            }
            previous = Some(&t.token);
        }
        n
    };
    assert_eq!(count("SELECT *, t.*, count(*) FROM t"), 0);
    assert_eq!(count("VALUES (-1, -2), (+3, -4)"), 0);
    assert_eq!(
        count("SELECT a - 1, b * -2 FROM t WHERE c = -1 AND d OR NOT e"),
        5
    );
    assert_eq!(count("SELECT 1 UNION SELECT 2"), 1);
}
