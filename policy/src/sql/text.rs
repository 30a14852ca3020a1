//! Text: names, positions, redaction and the fingerprint.

use sha2::{Digest, Sha256};
use sqlparser::ast::{Ident, ObjectName, ObjectNamePart};
use sqlparser::tokenizer::{Location, Token, TokenWithSpan};

pub(super) fn normalize_ident(ident: &Ident, fold_quoted: bool) -> String {
    if ident.quote_style.is_none() || fold_quoted {
        ident.value.to_lowercase()
    } else {
        ident.value.clone()
    }
}

pub(crate) fn normalize_name(name: &ObjectName, fold_quoted: bool) -> String {
    let parts: Vec<String> = name
        .0
        .iter()
        .map(|part| match part {
            ObjectNamePart::Identifier(ident) => normalize_ident(ident, fold_quoted),
            ObjectNamePart::Function(function) => function.to_string().to_lowercase(),
        })
        .collect();
    parts.join(".")
}

// === Text: positions, redaction, fingerprint ===

/// Maps sqlparser's 1-based (line, column-in-characters) locations to byte
/// offsets.
pub(super) struct LineIndex {
    line_starts: Vec<usize>,
}

impl LineIndex {
    pub(super) fn new(sql: &str) -> Self {
        let mut line_starts = vec![0];
        line_starts.extend(sql.match_indices('\n').map(|(i, _)| i + 1));
        Self { line_starts }
    }

    pub(super) fn byte_offset(&self, sql: &str, location: Location) -> usize {
        let line = usize::try_from(location.line.saturating_sub(1)).unwrap_or(usize::MAX);
        let Some(&start) = self.line_starts.get(line) else {
            return sql.len();
        };
        let column = usize::try_from(location.column.saturating_sub(1)).unwrap_or(usize::MAX);
        let rest = sql.get(start..).unwrap_or_default();
        rest.char_indices()
            .nth(column)
            .map_or(sql.len(), |(i, _)| start + i)
    }
}

/// Tokens that carry a value from the statement. `TRUE`, `FALSE` and `NULL`
/// are keywords, and placeholders (`$1`, `?`) carry no value: both are kept.
pub(super) fn is_literal(token: &Token) -> bool {
    matches!(
        token,
        Token::Number(..)
            | Token::SingleQuotedString(_)
            | Token::DoubleQuotedString(_)
            | Token::TripleSingleQuotedString(_)
            | Token::TripleDoubleQuotedString(_)
            | Token::DollarQuotedString(_)
            | Token::SingleQuotedByteStringLiteral(_)
            | Token::DoubleQuotedByteStringLiteral(_)
            | Token::TripleSingleQuotedByteStringLiteral(_)
            | Token::TripleDoubleQuotedByteStringLiteral(_)
            | Token::SingleQuotedRawStringLiteral(_)
            | Token::DoubleQuotedRawStringLiteral(_)
            | Token::TripleSingleQuotedRawStringLiteral(_)
            | Token::TripleDoubleQuotedRawStringLiteral(_)
            | Token::NationalStringLiteral(_)
            | Token::QuoteDelimitedStringLiteral(_)
            | Token::NationalQuoteDelimitedStringLiteral(_)
            | Token::EscapedStringLiteral(_)
            | Token::UnicodeStringLiteral(_)
            | Token::HexStringLiteral(_)
    )
}

/// One significant token for redaction and fingerprinting.
enum Piece<'a> {
    /// A literal (including a word glued to a number, see below).
    Literal,
    /// Any other token.
    Token(&'a Token),
}

/// Significant tokens with whether whitespace preceded each. A word glued to a
/// number (`0x1F` in Postgres is `0` then `x1F`; `1_000`) is part of the
/// literal, so no digit of it survives.
fn pieces(tokens: &[TokenWithSpan]) -> Vec<(bool, Piece<'_>)> {
    let mut out: Vec<(bool, Piece<'_>)> = Vec::new();
    let mut space = false;
    let mut after_number = false;
    for t in tokens {
        match &t.token {
            Token::Whitespace(_) | Token::EOF => {
                space = true;
                after_number = false;
            }
            Token::Word(w) if after_number && !space && w.quote_style.is_none() => {}
            Token::Number(..) if after_number && !space => {}
            token if is_literal(token) => {
                after_number = matches!(token, Token::Number(..));
                out.push((space, Piece::Literal));
                space = false;
            }
            token => {
                after_number = false;
                out.push((space, Piece::Token(token)));
                space = false;
            }
        }
    }
    out
}

pub(super) fn render_redacted(tokens: &[TokenWithSpan]) -> String {
    let mut out = String::new();
    for (space, piece) in pieces(tokens) {
        if space && !out.is_empty() {
            out.push(' ');
        }
        match piece {
            Piece::Literal => out.push('?'),
            Piece::Token(token) => out.push_str(&token.to_string()),
        }
    }
    out
}

/// Normalised token for fingerprints.
#[derive(PartialEq, Eq)]
enum Norm {
    Literal,
    Text(String),
}

impl Norm {
    fn is(&self, text: &str) -> bool {
        matches!(self, Norm::Text(t) if t == text)
    }
}

/// Keywords after which a `-` or `+` is a sign, not an operator.
const EXPRESSION_STARTS: &[&str] = &[
    "select",
    "where",
    "and",
    "or",
    "not",
    "then",
    "else",
    "when",
    "case",
    "limit",
    "offset",
    "between",
    "having",
    "on",
    "values",
    "return",
    "returning",
    "like",
    "ilike",
    "is",
    "in",
    "interval",
    "by",
    "fetch",
    "first",
    "next",
    "array",
    "distinct",
    "all",
    "any",
    "some",
];

const OPERATORS: &[&str] = &[
    "(", ",", "[", "=", "==", "<>", "!=", "<", ">", "<=", ">=", "+", "-", "*", "/", "%", "||",
    "::", ":=", "=>",
];

fn is_sign_context(previous: Option<&Norm>) -> bool {
    match previous {
        None => true,
        Some(Norm::Literal) => false,
        Some(Norm::Text(t)) => {
            OPERATORS.contains(&t.as_str()) || EXPRESSION_STARTS.contains(&t.as_str())
        }
    }
}

pub(super) fn fingerprint(tokens: &[TokenWithSpan]) -> String {
    let mut out: Vec<Norm> = Vec::new();
    for (_, piece) in pieces(tokens) {
        match piece {
            Piece::Literal => {
                // A sign before a literal is part of it: `-5` and `5` share a shape.
                let n = out.len();
                if n >= 1
                    && (out[n - 1].is("-") || out[n - 1].is("+"))
                    && is_sign_context(n.checked_sub(2).and_then(|i| out.get(i)))
                {
                    out.pop();
                }
                out.push(Norm::Literal);
                // `?, ?` → `?`: lists of literals of any length share a shape.
                let n = out.len();
                if n >= 3 && out[n - 2].is(",") && out[n - 3] == Norm::Literal {
                    out.truncate(n - 2);
                }
            }
            Piece::Token(token) => {
                let text = match token {
                    Token::Word(w) if w.quote_style.is_none() => w.value.to_lowercase(),
                    other => other.to_string(),
                };
                out.push(Norm::Text(text));
                // `(?), (?)` → `(?)`: VALUES rows of literals.
                let n = out.len();
                if n >= 7
                    && out[n - 1].is(")")
                    && out[n - 2] == Norm::Literal
                    && out[n - 3].is("(")
                    && out[n - 4].is(",")
                    && out[n - 5].is(")")
                    && out[n - 6] == Norm::Literal
                    && out[n - 7].is("(")
                {
                    out.truncate(n - 4);
                }
            }
        }
    }
    let mut normalised = String::new();
    for (i, norm) in out.iter().enumerate() {
        if i > 0 {
            normalised.push(' ');
        }
        match norm {
            Norm::Literal => normalised.push('?'),
            Norm::Text(t) => normalised.push_str(t),
        }
    }
    let digest = Sha256::digest(normalised.as_bytes());
    hex::encode(digest).chars().take(16).collect()
}
