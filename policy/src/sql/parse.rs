//! Tokenizing and parsing with sqlparser, statement by statement, and parse errors scrubbed of literals.

use sqlparser::ast::{self};
use sqlparser::dialect::Dialect;
use sqlparser::parser::{Parser, ParserError};
use sqlparser::tokenizer::{Token, TokenWithSpan, Tokenizer};

use super::bounds::{check_operator_counts, check_token_bound};
use super::rewrite::{copy_from_stdin_not_last, normalise_copy_booleans};
use super::text::{LineIndex, is_literal};
use super::{MAX_SQL_BYTES, SqlDialect, SqlError, Statement, classify};

fn tokenize(
    sql: &str,
    dialect: SqlDialect,
    d: &dyn Dialect,
) -> Result<Vec<TokenWithSpan>, SqlError> {
    Tokenizer::new(d, sql)
        .tokenize_with_location()
        .map_err(|source| SqlError::Tokenize {
            dialect,
            message: source.to_string(),
            source,
        })
}

/// Where parsing stopped: statement number, index of its first token, error.
type ParseFailure = (usize, usize, ParserError);

/// `embedding`: how many SQL-text arguments deep this text is (0: the
/// client's own text; see [`SQL_TEXT_FUNCTIONS`]).
pub(super) fn parse_with(
    sql: &str,
    dialect: SqlDialect,
    d: &dyn Dialect,
    embedding: usize,
) -> Result<Vec<Statement>, SqlError> {
    if sql.len() > MAX_SQL_BYTES {
        return Err(SqlError::TooLarge {
            dialect,
            bytes: sql.len(),
            limit: MAX_SQL_BYTES,
        });
    }
    check_token_bound(sql, dialect)?;
    let mut tokens = tokenize(sql, dialect, d)?;
    check_operator_counts(&tokens, dialect)?;
    if dialect == SqlDialect::Postgres {
        if let Some((number, start)) = copy_from_stdin_not_last(&tokens) {
            let source = ParserError::ParserError(
                "COPY … FROM STDIN must be the last statement of a query string: Sluice's SQL \
                 parser would read the statements after it as COPY data and could not classify \
                 them; send them in a separate query"
                    .to_string(),
            );
            return Err(parse_error(number, dialect, &tokens, start, source));
        }
        normalise_copy_booleans(&mut tokens);
    }
    // The parser takes the tokens; they are produced again afterwards rather
    // than cloned, so a large input is held in memory once.
    let mut parser = Parser::new(d).with_tokens_with_locations(tokens);
    let parsed = parse_all(&mut parser);
    drop(parser);
    let tokens = tokenize(sql, dialect, d)?;
    let parsed = parsed
        .map_err(|(number, start, source)| parse_error(number, dialect, &tokens, start, source))?;
    let lines = LineIndex::new(sql);
    parsed
        .into_iter()
        .enumerate()
        .map(|(i, (ast, start, end))| {
            // sqlparser's `TABLE name` reads two tokens past the name (see
            // `swallowed_by_table`), past the end of the text too.
            let range = tokens.get(start..end.min(tokens.len())).unwrap_or_default();
            if swallowed_by_table(range) {
                let source = ParserError::ParserError(
                    "Sluice's SQL parser reads `TABLE name` followed by `;` as one statement \
                     with what follows; end the statement another way (e.g. SELECT * FROM name)"
                        .to_string(),
                );
                return Err(parse_error(i + 1, dialect, &tokens, start, source));
            }
            classify(sql, &lines, range, ast, dialect, i + 1, embedding)
        })
        .collect()
}

/// Whether a statement's tokens hold `TABLE name ;`: sqlparser (0.63,
/// `Parser::parse_as_table`) reads the two tokens after a `TABLE name` query
/// whatever they are, so `TABLE t; COMMIT` parses as one statement whose
/// second half the server runs unseen. Such a statement is refused as
/// unparsed; PostgreSQL texts would also meet the second parser's count.
fn swallowed_by_table(range: &[TokenWithSpan]) -> bool {
    let significant: Vec<&Token> = range
        .iter()
        .map(|t| &t.token)
        .filter(|t| !matches!(t, Token::Whitespace(_)))
        .collect();
    significant.windows(3).any(|w| {
        matches!(w[0], Token::Word(k) if k.keyword == sqlparser::keywords::Keyword::TABLE)
            && matches!(w[1], Token::Word(_))
            && matches!(w[2], Token::SemiColon)
    })
}

/// Parses statement after statement, remembering each one's token range.
fn parse_all(parser: &mut Parser<'_>) -> Result<Vec<(ast::Statement, usize, usize)>, ParseFailure> {
    let mut parsed = Vec::new();
    loop {
        while parser.consume_token(&Token::SemiColon) {}
        if parser.peek_token_ref().token == Token::EOF {
            return Ok(parsed);
        }
        let number = parsed.len() + 1;
        let start = parser.index();
        let ast = parser
            .parse_statement()
            .map_err(|source| (number, start, source))?;
        let end = parser.index();
        let next = parser.peek_token_ref();
        if !matches!(next.token, Token::SemiColon | Token::EOF) {
            let found = if is_literal(&next.token) {
                "a literal".to_string()
            } else {
                next.token.to_string()
            };
            let source = ParserError::ParserError(format!(
                "Expected: end of statement, found: {found} at {}",
                next.span.start
            ));
            return Err((number, start, source));
        }
        parsed.push((ast, start, end));
    }
}

/// Builds a parse error whose message names the offending token unless it is a
/// literal, and recognises statements we know the parser lacks.
fn parse_error(
    number: usize,
    dialect: SqlDialect,
    tokens: &[TokenWithSpan],
    start: usize,
    source: ParserError,
) -> SqlError {
    let first = tokens
        .get(start..)
        .unwrap_or_default()
        .iter()
        .find(|t| !matches!(t.token, Token::Whitespace(_)));
    if let Some(first) = first
        && let Token::Word(w) = &first.token
        && w.quote_style.is_none()
        && w.value.eq_ignore_ascii_case("do")
    {
        return SqlError::Unsupported {
            number,
            dialect,
            what: "DO",
            line: first.span.start.line,
            column: first.span.start.column,
        };
    }
    let source = scrub_parser_error(source, tokens);
    let message = source.to_string();
    SqlError::Parse {
        number,
        dialect,
        message,
        source,
    }
}

/// sqlparser's messages can quote what they stopped at (`found: 'secret'`,
/// `Could not parse '123' as u64`): every literal of the input, as printed
/// and as its bare value, is replaced by `?` in the message. The location
/// suffix (`at Line: 1, Column: 8`) is kept as is.
fn scrub_parser_error(error: ParserError, tokens: &[TokenWithSpan]) -> ParserError {
    match error {
        ParserError::ParserError(m) => ParserError::ParserError(scrub_message(&m, tokens)),
        ParserError::TokenizerError(m) => ParserError::TokenizerError(scrub_message(&m, tokens)),
        ParserError::RecursionLimitExceeded => ParserError::RecursionLimitExceeded,
    }
}

pub(super) fn scrub_message(message: &str, tokens: &[TokenWithSpan]) -> String {
    let (head, tail) = match message.rfind(" at Line: ") {
        Some(at) => message.split_at(at),
        None => (message, ""),
    };
    let mut head = head.to_string();
    for token in tokens.iter().map(|t| &t.token).filter(|t| is_literal(t)) {
        let printed = token.to_string();
        let value = literal_value(token).unwrap_or_default();
        let debug = format!("{value:?}");
        // Longest first, so a quoted form goes whole rather than leaving quotes.
        let mut needles = [debug.as_str(), printed.as_str(), value];
        needles.sort_by_key(|n| std::cmp::Reverse(n.len()));
        for needle in needles {
            // One-character values are left alone: they cannot hide much and
            // replacing them would mangle the rest of the message.
            if needle.chars().count() > 1 && head.contains(needle) {
                head = head.replace(needle, "?");
            }
        }
    }
    head + tail
}

/// The value a literal token carries, as sqlparser stores it.
fn literal_value(token: &Token) -> Option<&str> {
    match token {
        Token::Number(v, _)
        | Token::SingleQuotedString(v)
        | Token::DoubleQuotedString(v)
        | Token::TripleSingleQuotedString(v)
        | Token::TripleDoubleQuotedString(v)
        | Token::SingleQuotedByteStringLiteral(v)
        | Token::DoubleQuotedByteStringLiteral(v)
        | Token::TripleSingleQuotedByteStringLiteral(v)
        | Token::TripleDoubleQuotedByteStringLiteral(v)
        | Token::SingleQuotedRawStringLiteral(v)
        | Token::DoubleQuotedRawStringLiteral(v)
        | Token::TripleSingleQuotedRawStringLiteral(v)
        | Token::TripleDoubleQuotedRawStringLiteral(v)
        | Token::NationalStringLiteral(v)
        | Token::EscapedStringLiteral(v)
        | Token::UnicodeStringLiteral(v)
        | Token::HexStringLiteral(v) => Some(v),
        Token::DollarQuotedString(d) => Some(&d.value),
        Token::QuoteDelimitedStringLiteral(q) | Token::NationalQuoteDelimitedStringLiteral(q) => {
            Some(&q.value)
        }
        _ => None,
    }
}
