//! Bounds on hostile input, checked on tokens before parsing: token count, chaining operators per statement.

use sqlparser::tokenizer::{Token, TokenWithSpan};

use super::text::is_literal;
use super::{MAX_OPERATORS_PER_STATEMENT, MAX_TOKENS, SqlDialect, SqlError};

/// Refuses a text whose token count may exceed [`MAX_TOKENS`], before any
/// token is allocated. The count is an upper bound of what sqlparser's
/// tokenizer produces (a token starts at a non-word byte, at the start of a
/// word, or where digits and letters meet, `0x1F` being two tokens), so no
/// quoting or comment can hide tokens from it: it does not try to read
/// quotes at all.
pub(super) fn check_token_bound(sql: &str, dialect: SqlDialect) -> Result<(), SqlError> {
    let mut count = 0usize;
    let mut number = 1;
    let mut line = 1u64;
    let mut statement_line = 1u64;
    let mut previous: Option<u8> = None;
    for &b in sql.as_bytes() {
        let word = b.is_ascii_alphanumeric() || b == b'_';
        let starts = match previous {
            _ if b >= 0x80 => b & 0xC0 != 0x80,
            Some(p) if word && (p.is_ascii_alphanumeric() || p == b'_') => {
                p.is_ascii_digit() != b.is_ascii_digit()
            }
            _ => true,
        };
        if starts {
            count += 1;
            if count > MAX_TOKENS {
                return Err(SqlError::TooComplex {
                    number,
                    dialect,
                    line: statement_line,
                    what: "tokens (words, numbers, operators, spaces and string characters)",
                    limit: MAX_TOKENS,
                });
            }
        }
        match b {
            b'\n' => line += 1,
            b';' => {
                number += 1;
                statement_line = line;
            }
            _ => {}
        }
        previous = Some(b);
    }
    Ok(())
}

/// Refuses statements with more chaining operators than
/// [`MAX_OPERATORS_PER_STATEMENT`], before they are parsed into deep trees.
/// Statements are approximated by `;`-separated segments (a procedural body
/// is counted per inner statement, which is where its expressions are).
pub(super) fn check_operator_counts(
    tokens: &[TokenWithSpan],
    dialect: SqlDialect,
) -> Result<(), SqlError> {
    let mut number = 1;
    let mut count = 0usize;
    let mut line = 1;
    let mut previous: Option<&Token> = None;
    for t in tokens {
        match &t.token {
            Token::Whitespace(_) | Token::EOF => {}
            Token::SemiColon => {
                if previous.is_some() {
                    number += 1;
                }
                count = 0;
                previous = None;
            }
            token => {
                if previous.is_none() {
                    line = t.span.start.line;
                }
                if is_chaining(token) && ends_operand(previous) {
                    count += 1;
                    if count > MAX_OPERATORS_PER_STATEMENT {
                        return Err(SqlError::TooComplex {
                            number,
                            dialect,
                            line,
                            what: "chained operators",
                            limit: MAX_OPERATORS_PER_STATEMENT,
                        });
                    }
                }
                previous = Some(token);
            }
        }
    }
    Ok(())
}

/// Keywords that join two operands and so can chain without parentheses.
const CHAINING_KEYWORDS: &[&str] = &[
    "and",
    "or",
    "xor",
    "not",
    "is",
    "like",
    "ilike",
    "rlike",
    "regexp",
    "similar",
    "between",
    "in",
    "collate",
    "at",
    "overlaps",
    "union",
    "except",
    "intersect",
    "minus",
    "div",
    "mod",
    "escape",
    "operator",
    "isnull",
    "notnull",
    "member",
];

/// Tokens that may build a left-deep chain (`a + b + c`, `a[1][2]`):
/// operators and the keywords above. Identifiers, literals, placeholders,
/// separators and closing brackets do not.
pub(super) fn is_chaining(token: &Token) -> bool {
    match token {
        Token::Word(w) => {
            w.quote_style.is_none()
                && CHAINING_KEYWORDS
                    .iter()
                    .any(|k| w.value.eq_ignore_ascii_case(k))
        }
        Token::Comma
        | Token::LParen
        | Token::RParen
        | Token::RBracket
        | Token::LBrace
        | Token::RBrace
        | Token::Period
        | Token::SemiColon
        | Token::Placeholder(_)
        | Token::Whitespace(_)
        | Token::EOF => false,
        other => !is_literal(other),
    }
}

/// Reserved words after which `-`, `+` or `*` are a sign or a wildcard. Only
/// reserved words: a column may be called `first` or `next`, and the `+` in
/// `first + first` must count.
const PREFIX_CONTEXT_KEYWORDS: &[&str] = &[
    "select",
    "where",
    "and",
    "or",
    "xor",
    "not",
    "then",
    "else",
    "when",
    "case",
    "limit",
    "offset",
    "having",
    "on",
    "returning",
    "distinct",
    "all",
    "any",
    "some",
    "array",
    "fetch",
    "in",
    "is",
    "like",
    "ilike",
    "between",
];

/// Whether the previous token ends an operand, so that an operator after it is
/// binary (`a - 1`) rather than a prefix (`(-1`, `= -1`, `SELECT *`), which
/// the parser bounds itself. In doubt, an operand: counting too much only
/// lowers the limit, counting too little would let a deep chain through.
pub(super) fn ends_operand(previous: Option<&Token>) -> bool {
    match previous {
        None
        | Some(
            Token::LParen
            | Token::LBracket
            | Token::LBrace
            | Token::Comma
            | Token::Period
            | Token::SemiColon,
        ) => false,
        Some(Token::Word(w)) => {
            w.quote_style.is_some()
                || !PREFIX_CONTEXT_KEYWORDS
                    .iter()
                    .any(|k| w.value.eq_ignore_ascii_case(k))
        }
        Some(
            Token::RParen | Token::RBracket | Token::RBrace | Token::Placeholder(_) | Token::EOF,
        ) => true,
        Some(token) => is_literal(token),
    }
}
