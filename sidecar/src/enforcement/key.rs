//! The decision cache's keys: a SQL text with its number and string
//! literals replaced by markers (see [`super::Enforcer`]).

/// The cache key of a plain text without tokenizing it: `None` unless the
/// text holds only ASCII letters, digits, `_`, whitespace, the punctuation
/// `,.=<>()*;+-!%&|~^:[]`, integer literals and single-quoted strings
/// without backslashes, and no `--`; then every integer and string is
/// replaced by a marker. Outside that subset (comments, dollar quotes, quoted
/// identifiers, escape or prefixed strings, `$n`, numbers with a fraction
/// or exponent, non-ASCII) the tokenizer decides ([`literal_free_key`]).
///
/// Within the subset, two texts with one key have the same bytes outside
/// their literals, and each literal's extent is unambiguous (a string ends
/// at a `'` not doubled, an integer is a digit run between non-identifier
/// characters), so they tokenize alike but for literal values: the
/// guarantee the cache needs. Strings become `?` and integers `#` (neither
/// character is in the subset, so a key never confuses them with the
/// text). The key starts with two NUL bytes, which neither a text (a Query
/// ends at its NUL) nor a tokenizer key has.
pub(super) fn plain_literal_free_key(sql: &str) -> Option<String> {
    // Every statement of the plain select path comes here (#15/#20's bench):
    // the bytes between literals are copied in runs, each byte classified
    // by one table lookup, rather than pushed one by one through a match.
    let b = sql.as_bytes();
    let mut key = Vec::with_capacity(b.len() + 2);
    key.extend_from_slice(b"\0\0");
    let ident = |c: u8| CLASS[usize::from(c)] >= IDENT;
    // `b[run..i]` is copied as it is when a literal (or the end) comes.
    let mut run = 0;
    let mut i = 0;
    while i < b.len() {
        match CLASS[usize::from(b[i])] {
            PLAIN | IDENT => i += 1,
            MINUS if b.get(i + 1) == Some(&b'-') => return None,
            MINUS => i += 1,
            // A digit inside a word (`t1`) or after a dot is part of it.
            DIGIT if i > 0 && (ident(b[i - 1]) || b[i - 1] == b'.') => i += 1,
            DIGIT => {
                key.extend_from_slice(&b[run..i]);
                while i < b.len() && b[i].is_ascii_digit() {
                    i += 1;
                }
                if i < b.len() && (ident(b[i]) || b[i] == b'.') {
                    return None;
                }
                key.push(b'#');
                run = i;
            }
            QUOTE => {
                if i > 0 && ident(b[i - 1]) {
                    return None; // E'', B'', X'', N'' …
                }
                key.extend_from_slice(&b[run..i]);
                i += 1;
                loop {
                    match b.get(i)? {
                        b'\\' => return None,
                        b'\'' if b.get(i + 1) == Some(&b'\'') => i += 2,
                        b'\'' => break,
                        _ => i += 1,
                    }
                }
                key.push(b'?');
                i += 1;
                run = i;
            }
            _ => return None,
        }
    }
    key.extend_from_slice(&b[run..]);
    String::from_utf8(key).ok()
}

/// [`plain_literal_free_key`]'s byte classes: outside the plain subset.
const REJECT: u8 = 0;
/// Whitespace and the punctuation `,.=<>()*;+!%&|~^:[]`.
const PLAIN: u8 = 1;
/// `-` (`--` starts a comment).
const MINUS: u8 = 2;
/// `'`.
const QUOTE: u8 = 3;
/// ASCII letters and `_` (the classes from here on are identifier characters).
const IDENT: u8 = 4;
/// ASCII digits.
const DIGIT: u8 = 5;

/// The class of each byte (see [`plain_literal_free_key`]).
static CLASS: [u8; 256] = {
    let mut table = [REJECT; 256];
    let mut c = 0;
    while c < 256 {
        table[c] = match c as u8 {
            b'a'..=b'z' | b'A'..=b'Z' | b'_' => IDENT,
            b'0'..=b'9' => DIGIT,
            b'\'' => QUOTE,
            b'-' => MINUS,
            b' ' | b'\t' | b'\n' | b'\r' | b',' | b'.' | b'=' | b'<' | b'>' | b'(' | b')'
            | b'*' | b';' | b'+' | b'!' | b'%' | b'&' | b'|' | b'~' | b'^' | b':' | b'[' | b']' => {
                PLAIN
            }
            _ => REJECT,
        };
        c += 1;
    }
    table
};

/// The cache key of a text with number and single-quoted string literals
/// replaced (see [`Enforcer`]); `None` when the text cannot be tokenized.
/// The key starts with a byte no SQL text contains, so it never equals a text.
pub(super) fn literal_free_key(sql: &str) -> Option<String> {
    use sqlparser::tokenizer::{Token, Tokenizer, Whitespace};
    let tokens = Tokenizer::new(&sqlparser::dialect::PostgreSqlDialect {}, sql)
        .tokenize()
        .ok()?;
    let mut key = String::with_capacity(sql.len() + 8);
    key.push('\u{0}');
    // PostgreSQL reads a string continuing an E'' string (after a newline)
    // with backslash escapes, where sqlparser sees a plain string: its
    // extent depends on its value, so it is not folded (see
    // sluice_policy::pg_grammar).
    let mut escaped = false;
    for token in tokens {
        escaped = match &token {
            Token::EscapedStringLiteral(_) => true,
            Token::Whitespace(_) | Token::SingleQuotedString(_) => escaped,
            _ => false,
        };
        match token {
            // Numbers and strings apart: a literal of another type at the
            // same place can make the parser build another tree.
            Token::Number(..) => key.push('\u{2}'),
            Token::SingleQuotedString(_) if !escaped => key.push('\u{3}'),
            Token::Whitespace(Whitespace::Space | Whitespace::Newline | Whitespace::Tab) => {
                key.push(' ');
                continue;
            }
            other => {
                use std::fmt::Write as _;
                let _ = write!(key, "{other}");
            }
        }
        // A separator that cannot occur inside a token keeps the key unambiguous.
        key.push('\u{1}');
    }
    Some(key)
}

#[cfg(test)]
mod tests {
    use super::{literal_free_key, plain_literal_free_key};

    #[test]
    fn plain_key_folds_only_plain_literals() {
        let k = |s: &str| plain_literal_free_key(s);
        let a = k("SELECT abalance FROM pgbench_accounts WHERE aid = 81235;").unwrap();
        assert_eq!(
            a,
            k("SELECT abalance FROM pgbench_accounts WHERE aid = 7;").unwrap()
        );
        assert_eq!(
            k("SELECT * FROM t WHERE a = 'it''s' AND b = 1").unwrap(),
            k("SELECT * FROM t WHERE a = '--/*;DROP' AND b = 22").unwrap()
        );
        assert_ne!(
            a,
            k("SELECT abalance FROM pgbench_accounts WHERE aid = aid;").unwrap()
        );
        assert_ne!(
            k("SELECT t1 FROM t").unwrap(),
            k("SELECT t2 FROM t").unwrap()
        );
        // Anything outside the plain subset goes to the tokenizer.
        for text in [
            "SELECT 1 -- comment",
            "SELECT 1 /* c */",
            "SELECT E'a\\'' FROM t",
            "SELECT 'a\\' FROM t",
            "SELECT x'ff'",
            "SELECT $1",
            "SELECT $$a$$",
            "SELECT \"a\" FROM t",
            "SELECT 1.5",
            "SELECT 1e5",
            "SELECT 12abc",
            "SELECT 'unterminated",
            "SELECT 'é' FROM té",
            "SELECT a ? b",
            "SELECT # 1",
        ] {
            assert!(k(text).is_none(), "{text}");
        }
        // Never equal to a tokenizer key or a text.
        let t = literal_free_key("SELECT 1").unwrap();
        assert!(a.starts_with("\0\0") && !t.starts_with("\0\0"));
    }

    /// The plain key as it was written before it copied runs (#15/#20's
    /// bench), byte by byte: the reference the table-driven one must equal.
    fn reference_plain_key(sql: &str) -> Option<String> {
        let b = sql.as_bytes();
        let mut key = Vec::with_capacity(b.len() + 2);
        key.extend_from_slice(b"\0\0");
        let ident = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
        let mut i = 0;
        while i < b.len() {
            let c = b[i];
            match c {
                b'\'' => {
                    if i > 0 && ident(b[i - 1]) {
                        return None;
                    }
                    i += 1;
                    loop {
                        match b.get(i)? {
                            b'\\' => return None,
                            b'\'' if b.get(i + 1) == Some(&b'\'') => i += 2,
                            b'\'' => break,
                            _ => i += 1,
                        }
                    }
                    key.push(b'?');
                    i += 1;
                }
                b'0'..=b'9' if i == 0 || !(ident(b[i - 1]) || b[i - 1] == b'.') => {
                    while i < b.len() && b[i].is_ascii_digit() {
                        i += 1;
                    }
                    if i < b.len() && (ident(b[i]) || b[i] == b'.') {
                        return None;
                    }
                    key.push(b'#');
                }
                b'-' if b.get(i + 1) == Some(&b'-') => return None,
                c if ident(c) || b" \t\n\r,.=<>()*;+-!%&|~^:[]".contains(&c) => {
                    key.push(c);
                    i += 1;
                }
                _ => return None,
            }
        }
        String::from_utf8(key).ok()
    }

    #[test]
    fn plain_key_equals_the_byte_by_byte_reference() {
        // Texts over an alphabet of every byte class the key tells apart,
        // from a fixed xorshift sequence: the same every run.
        let alphabet: &[&str] = &[
            "a", "Z", "_", "0", "7", "'", "''", "\\", "-", "--", ".", " ", "\n", ",", "=", "(",
            ")", ";", "$", "\"", "/", "*", "é", "E", "e", "x", "1.5", "SELECT ", " FROM t",
        ];
        let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..20_000 {
            let len = (next() % 12) as usize;
            let text: String = (0..len)
                .map(|_| alphabet[(next() % alphabet.len() as u64) as usize])
                .collect();
            assert_eq!(
                plain_literal_free_key(&text),
                reference_plain_key(&text),
                "{text:?}"
            );
        }
    }

    #[test]
    fn literal_free_key_only_folds_literals() {
        let a = literal_free_key("SELECT * FROM t WHERE id = 1").unwrap();
        let b = literal_free_key("SELECT * FROM t WHERE id = 42").unwrap();
        let c = literal_free_key("SELECT * FROM t WHERE id = 'x'").unwrap();
        assert_eq!(a, b);
        // A string where a number was is another shape: the parser may
        // build another tree from it.
        assert_ne!(a, c);
        assert_eq!(
            c,
            literal_free_key("SELECT * FROM t WHERE id = 'other'").unwrap()
        );
        assert_ne!(
            a,
            literal_free_key("SELECT * FROM t WHERE id = id").unwrap()
        );
        assert_ne!(a, literal_free_key("SELECT * FROM u WHERE id = 1").unwrap());
        // A quote inside a comment is not a literal: the DROP stays in the key.
        let tricky = literal_free_key("SELECT 1 /* ' */; DROP TABLE t; /* ' */").unwrap();
        assert_ne!(
            tricky,
            literal_free_key("SELECT 1 /* ' */ /* ' */").unwrap()
        );
        assert!(tricky.contains("DROP"));
        // Identifiers and dollar-quoted bodies are kept.
        assert_ne!(
            literal_free_key("SELECT \"a\" FROM t").unwrap(),
            literal_free_key("SELECT \"b\" FROM t").unwrap()
        );
        assert_ne!(
            literal_free_key("DO $$ BEGIN PERFORM 1; END $$").unwrap(),
            literal_free_key("DO $$ BEGIN DROP TABLE t; END $$").unwrap()
        );
        assert!(literal_free_key("SELECT 'unterminated").is_none());
    }
}
