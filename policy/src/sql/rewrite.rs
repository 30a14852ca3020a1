//! Token rewrites that let sqlparser read statements it otherwise refuses (`COPY` and `VACUUM` option lists, `COPY FROM STDIN` framing).

use sqlparser::tokenizer::{Token, TokenWithSpan};

/// Rewrites the value of a boolean `FREEZE` or `HEADER` option in the option
/// list of a PostgreSQL `COPY` to the `TRUE` / `FALSE` keyword, in place.
///
/// PostgreSQL takes `on`, `off`, `true`, `false`, `1`, `0` (bare or quoted)
/// for a boolean option, and `pgbench -i` sends `COPY … FROM STDIN WITH
/// (FREEZE ON)`; sqlparser 0.63 only knows `TRUE` and `FALSE` there, so the
/// statement would not parse and would be refused. The rewrite cannot change
/// what is decided: it touches only a value token that directly follows
/// `FREEZE` or `HEADER` as a whole item of the parenthesised option list
/// (the first parenthesis at the statement's top level after its `FROM` /
/// `TO`, before any `WHERE`), where PostgreSQL reads exactly that boolean;
/// the token count stays the same, so token ranges (redaction, fingerprint)
/// are those of the original text, and the text forwarded is the client's.
pub(super) fn normalise_copy_booleans(tokens: &mut [TokenWithSpan]) {
    let mut i = 0;
    while i < tokens.len() {
        // The start of a statement: its first significant token.
        let Some(first) = next_significant(tokens, i) else {
            return;
        };
        let end = statement_end(tokens, first);
        if is_word(&tokens[first].token, "copy")
            && let Some(open) = copy_option_list(tokens, first + 1, end)
        {
            normalise_option_items(tokens, open + 1, end);
        }
        if is_word(&tokens[first].token, "vacuum") {
            normalise_vacuum_options(tokens, first + 1, end);
        }
        i = end + 1;
    }
}

/// A `COPY … FROM STDIN` followed by another statement in the same text:
/// its 1-based number and first token. sqlparser takes everything after such
/// a COPY's `;` as inline data, so the statements after it would vanish from
/// the classification while PostgreSQL runs them once the copy ends.
pub(super) fn copy_from_stdin_not_last(tokens: &[TokenWithSpan]) -> Option<(usize, usize)> {
    let mut i = 0;
    let mut number = 0;
    while let Some(first) = next_significant(tokens, i) {
        let end = statement_end(tokens, first);
        if tokens[first].token != Token::SemiColon {
            number += 1;
        }
        if is_word(&tokens[first].token, "copy") && reads_stdin(tokens, first + 1, end) {
            let more = tokens
                .iter()
                .skip(end)
                .any(|t| !matches!(t.token, Token::Whitespace(_) | Token::SemiColon));
            return more.then_some((number, first));
        }
        i = end + 1;
    }
    None
}

/// Whether the COPY statement in `from..end` is `… FROM STDIN`.
fn reads_stdin(tokens: &[TokenWithSpan], from: usize, end: usize) -> bool {
    let mut depth = 0usize;
    for j in from..end {
        match &tokens[j].token {
            Token::LParen => depth += 1,
            Token::RParen => depth = depth.saturating_sub(1),
            tok if depth == 0 && is_word(tok, "from") => {
                return next_significant(tokens, j + 1)
                    .is_some_and(|k| k < end && is_word(&tokens[k].token, "stdin"));
            }
            _ => {}
        }
    }
    false
}

/// `VACUUM [FULL] [FREEZE] [VERBOSE] [ANALYZE] table`, PostgreSQL's older
/// option syntax (`pgbench -i` sends `vacuum analyze pgbench_branches`):
/// sqlparser 0.63 knows only `FULL`, and would read `ANALYZE` as the table.
/// The other three options are blanked (same token count). That cannot
/// change what is decided: `FREEZE`, `VERBOSE` and `ANALYZE` are reserved
/// words in PostgreSQL, so there they are options, never the table; and
/// VACUUM and ANALYZE are both of kind `other`, on the same table.
fn normalise_vacuum_options(tokens: &mut [TokenWithSpan], from: usize, end: usize) {
    let mut j = from;
    while let Some(k) = next_significant(tokens, j).filter(|&k| k < end) {
        let token = &tokens[k].token;
        if is_word(token, "full") {
        } else if is_word(token, "freeze") || is_word(token, "verbose") || is_word(token, "analyze")
        {
            tokens[k].token = Token::Whitespace(sqlparser::tokenizer::Whitespace::Space);
        } else {
            return;
        }
        j = k + 1;
    }
}

/// Index of the first non-whitespace token at or after `from`.
fn next_significant(tokens: &[TokenWithSpan], from: usize) -> Option<usize> {
    (from..tokens.len()).find(|&j| !matches!(tokens[j].token, Token::Whitespace(_)))
}

/// Index of the `;` (or the end) closing the statement starting at `from`.
fn statement_end(tokens: &[TokenWithSpan], from: usize) -> usize {
    let mut depth = 0usize;
    for (j, t) in tokens.iter().enumerate().skip(from) {
        match t.token {
            Token::LParen => depth += 1,
            Token::RParen => depth = depth.saturating_sub(1),
            Token::SemiColon if depth == 0 => return j,
            _ => {}
        }
    }
    tokens.len()
}

/// The `(` opening a COPY's option list: the first top-level parenthesis
/// after the top-level `FROM` or `TO`, unless a `WHERE` comes first.
fn copy_option_list(tokens: &[TokenWithSpan], from: usize, end: usize) -> Option<usize> {
    let mut depth = 0usize;
    let mut after_direction = false;
    for (j, t) in tokens.iter().enumerate().take(end).skip(from) {
        match &t.token {
            Token::LParen if depth == 0 && after_direction => return Some(j),
            Token::LParen => depth += 1,
            Token::RParen => depth = depth.saturating_sub(1),
            tok if depth == 0 && (is_word(tok, "from") || is_word(tok, "to")) => {
                after_direction = true;
            }
            tok if depth == 0 && is_word(tok, "where") => return None,
            _ => {}
        }
    }
    None
}

/// Within an option list starting at `from`: each top-level item that is
/// exactly `FREEZE <bool>` or `HEADER <bool>` gets its value rewritten.
fn normalise_option_items(tokens: &mut [TokenWithSpan], from: usize, end: usize) {
    let mut depth = 0usize;
    let mut item: Vec<usize> = Vec::new();
    for j in from..end {
        match tokens[j].token {
            Token::LParen => depth += 1,
            Token::RParen if depth == 0 => {
                rewrite_boolean_item(tokens, &item);
                return;
            }
            Token::RParen => depth -= 1,
            Token::Comma if depth == 0 => {
                rewrite_boolean_item(tokens, &item);
                item.clear();
                continue;
            }
            Token::Whitespace(_) => continue,
            _ => {}
        }
        item.push(j);
    }
}

fn rewrite_boolean_item(tokens: &mut [TokenWithSpan], item: &[usize]) {
    let [name, value] = item else { return };
    if !(is_word(&tokens[*name].token, "freeze") || is_word(&tokens[*name].token, "header")) {
        return;
    }
    let text = match &tokens[*value].token {
        Token::Word(w) if w.quote_style.is_none() => w.value.to_ascii_lowercase(),
        Token::SingleQuotedString(s) => s.to_ascii_lowercase(),
        Token::Number(n, false) => n.clone(),
        _ => return,
    };
    let keyword = match text.as_str() {
        "on" | "true" | "1" => "TRUE",
        "off" | "false" | "0" => "FALSE",
        _ => return,
    };
    tokens[*value].token = Token::make_keyword(keyword);
}

/// Whether `token` is the unquoted word `word` (any case).
fn is_word(token: &Token, word: &str) -> bool {
    matches!(token, Token::Word(w) if w.quote_style.is_none() && w.value.eq_ignore_ascii_case(word))
}
