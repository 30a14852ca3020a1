//! Statements MySQL's lexer and Sluice's SQL parser split alike but the
//! parser reads otherwise than the server, on words the parser takes for
//! names: refused before they are decided ([`misread`]), since a decision
//! on another reading than the server's holds for another statement.
//!
//! - `UPDATE [LOW_PRIORITY] [IGNORE] t SET …`: the parser has no place for
//!   the modifiers and reads `UPDATE IGNORE customers SET name = ssn` as an
//!   update of a table `ignore` aliased `customers`. Rules on `customers`
//!   did not match it (a rule denying updates of a table let `UPDATE
//!   IGNORE t …` through), and the masking's check of writes read `ssn` as
//!   a column of `ignore` (the SSN was copied into a column read back in
//!   clear).

use crate::mysql::gate::{Kind, Lexed};

/// Words the parser takes for a table name right after `UPDATE`.
const UPDATE_MODIFIERS: &[&str] = &["low_priority", "ignore"];

/// Why `text` (lexed by MySQL's rules as `lexed`) must be refused because
/// Sluice's parser would read one of its statements otherwise than the
/// server; `None` when it reads as the server does (as far as known).
pub fn misread(text: &str, lexed: &Lexed) -> Option<String> {
    let mut words = lexed.tokens.iter().filter(|t| t.kind != Kind::Comment);
    let mut previous = words.next()?;
    for t in words {
        if previous.is(text, "update")
            && let Some(m) = UPDATE_MODIFIERS.iter().find(|m| t.is(text, m))
        {
            return Some(format!(
                "statement refused by Sluice: Sluice's SQL parser reads UPDATE {} as a table named {m}, not as the modifier MySQL reads, so the statement would be decided as a write of another table; send the UPDATE without LOW_PRIORITY or IGNORE",
                m.to_ascii_uppercase()
            ));
        }
        previous = t;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mysql::gate::lex;

    fn check(text: &str) -> Option<String> {
        misread(text, &lex(text, false, false).unwrap())
    }

    #[test]
    fn update_modifiers_are_refused_in_any_spelling() {
        for text in [
            "UPDATE IGNORE orders SET total = 0",
            "update low_priority orders set total = 0",
            "UPDATE /* x */ Ignore orders SET total = 0",
            "UPDATE LOW_PRIORITY IGNORE orders SET total = 0",
            "WITH x AS (SELECT 1) UPDATE IGNORE orders SET total = 0",
            "SELECT 1; UPDATE\nIGNORE customers SET name = ssn",
        ] {
            assert!(check(text).is_some(), "{text}");
        }
        for text in [
            "UPDATE orders SET total = 0",
            "UPDATE `ignore` SET x = 1",
            "SELECT 'update ignore'",
            "INSERT IGNORE INTO t VALUES (1)",
            "SELECT * FROM t FOR UPDATE",
            "INSERT INTO t VALUES (1) ON DUPLICATE KEY UPDATE q = 'ignore'",
        ] {
            assert_eq!(check(text), None, "{text}");
        }
    }
}
