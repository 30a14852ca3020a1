//! What a MySQL text Sluice's parser cannot read may still be seen of it:
//! its words. MariaDB runs much that sqlparser does not parse (`DELETE
//! LOW_PRIORITY QUICK FROM t`, `UPDATE a, b SET …`, `SET STATEMENT … FOR
//! DELETE …`, `BEGIN NOT ATOMIC … END`, `HANDLER t READ`, `LOAD DATA …
//! REPLACE INTO TABLE t`). PostgreSQL texts have a second grammar for this
//! (`crate::pg_grammar`); MySQL texts are read word by word, as the bodies
//! of stored code are: every word may be a statement kind it runs, a table
//! it touches or a function it calls ([`mysql_words`], [`mysql_kinds`]).
//! A text that runs dynamic SQL (`EXECUTE`) may run anything.
//! More is matched than runs, never less: these words only make
//! `onParseError`'s verdict stricter.

use sluice_crds::StatementKind;
use sqlparser::dialect::MySqlDialect;
use sqlparser::tokenizer::{Token, Tokenizer};

/// The words of a MySQL text (lower case): its keywords and names, quoted
/// names included (`` `customers` ``), string literals and comments left
/// out. A text MySQL's tokenizer cannot read gives every run of letters,
/// digits and `_` in it, strings and comments included.
pub fn mysql_words(text: &str) -> Vec<String> {
    let mut words: Vec<String> = match Tokenizer::new(&MySqlDialect {}, text).tokenize() {
        Ok(tokens) => tokens
            .into_iter()
            .filter_map(|t| match t {
                Token::Word(w) => Some(w.value.to_lowercase()),
                _ => None,
            })
            .collect(),
        Err(_) => text
            .split(|c: char| !(c.is_alphanumeric() || c == '_' || c == '$'))
            .filter(|w| !w.is_empty())
            .map(str::to_lowercase)
            .collect(),
    };
    words.sort();
    words.dedup();
    words
}

/// The statement kinds MySQL `words` (lower case, as [`mysql_words`] gives
/// them) name, and `other` always (a statement no word names, such as
/// `BINLOG`, is of no kind Sluice knows): what the text may run, read
/// conservatively. `REPLACE` deletes the rows it meets (and `CREATE OR
/// REPLACE` drops a table), `LOAD DATA`/`LOAD XML` insert, `HANDLER` reads,
/// `RENAME` alters.
pub fn mysql_kinds(words: &[String]) -> Vec<StatementKind> {
    use StatementKind as K;
    if mysql_dynamic(words) {
        return vec![
            K::Select,
            K::Insert,
            K::Update,
            K::Delete,
            K::Merge,
            K::Copy,
            K::Create,
            K::Alter,
            K::Drop,
            K::Truncate,
            K::Grant,
            K::Revoke,
            K::Set,
            K::Call,
            K::Do,
            K::Begin,
            K::Commit,
            K::Rollback,
            K::Other,
        ];
    }
    let mut kinds = vec![K::Other];
    for w in words {
        let named: &[StatementKind] = match w.as_str() {
            "select" | "values" | "table" | "show" | "handler" | "returning" => &[K::Select],
            "insert" | "load" => &[K::Insert],
            "replace" => &[K::Insert, K::Delete, K::Drop],
            "update" => &[K::Update],
            "delete" => &[K::Delete],
            "create" => &[K::Create],
            "alter" | "rename" => &[K::Alter],
            "drop" => &[K::Drop],
            "truncate" => &[K::Truncate],
            "grant" => &[K::Grant],
            "revoke" => &[K::Revoke],
            "set" => &[K::Set],
            "call" => &[K::Call],
            "do" => &[K::Do],
            "begin" | "start" | "savepoint" | "xa" => &[K::Begin],
            "commit" | "release" | "end" => &[K::Commit],
            "rollback" => &[K::Rollback],
            _ => continue,
        };
        kinds.extend_from_slice(named);
    }
    kinds.sort();
    kinds.dedup();
    kinds
}

/// Whether MySQL `words` run dynamic SQL (`EXECUTE s` after `PREPARE s
/// FROM @q`, `EXECUTE IMMEDIATE CONCAT(…)` in a `BEGIN NOT ATOMIC` block
/// or a routine's body): a text built while it runs, of any kind, on any
/// table ([`mysql_kinds`] gives every kind then).
pub fn mysql_dynamic(words: &[String]) -> bool {
    words.iter().any(|w| w == "execute")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(text: &str) -> Vec<&'static str> {
        mysql_kinds(&mysql_words(text))
            .into_iter()
            .map(StatementKind::as_str)
            .collect()
    }

    #[test]
    fn words_leave_strings_and_comments_out() {
        assert_eq!(
            mysql_words("DELETE LOW_PRIORITY /* drop */ FROM `Customers` WHERE n = 'update'"),
            ["customers", "delete", "from", "low_priority", "n", "where"]
        );
        // Unterminated: every word.
        assert!(mysql_words("SELECT 'update").contains(&"update".to_string()));
    }

    #[test]
    fn kinds_are_read_conservatively() {
        assert_eq!(
            kinds("DELETE LOW_PRIORITY QUICK FROM customers"),
            ["delete", "other"]
        );
        assert_eq!(
            kinds("SET STATEMENT max_statement_time=1 FOR UPDATE t SET a = 1"),
            ["update", "set", "other"]
        );
        assert_eq!(
            kinds("LOAD DATA INFILE 'f' REPLACE INTO TABLE t"),
            ["select", "insert", "delete", "drop", "other"]
        );
        assert_eq!(kinds("BINLOG 'AAAA'"), ["other"]);
        // Dynamic SQL: every kind.
        let dynamic = kinds("BEGIN NOT ATOMIC EXECUTE IMMEDIATE CONCAT('DEL', 'ETE FROM t'); END");
        assert!(
            dynamic.contains(&"delete") && dynamic.contains(&"drop"),
            "{dynamic:?}"
        );
    }
}
