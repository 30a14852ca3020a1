//! What must hold before a MySQL statement text is decided: the session's
//! settings that change how the server reads bytes ([`Settings`]: `sql_mode`
//! and the character sets, as the server reports them through session
//! tracking), and the lexical forms where MySQL and Sluice's SQL parser
//! read a text differently ([`lexical_gate`]). A text that fails either is
//! refused with the reason: it is never decided on another reading than
//! the server's.

/// The session variables the sidecar has the server track and report in
/// its OK packets (CLIENT_SESSION_TRACK).
pub const TRACKED: &str = "sql_mode,character_set_client,character_set_connection,character_set_results,session_track_system_variables";

/// Character sets the sidecar decodes and lexes as the server does.
const UTF8: &[&str] = &["utf8mb4", "utf8mb3", "utf8"];

/// `sql_mode` flags that switch MariaDB's parser to another grammar
/// altogether (or MySQL's to an old one): statements are not decided while
/// one is on.
const FOREIGN_GRAMMARS: &[&str] = &[
    "ORACLE",
    "MSSQL",
    "DB2",
    "POSTGRESQL",
    "MAXDB",
    "MYSQL323",
    "MYSQL40",
];

/// The flags of a `sql_mode` that change how a text is read.
#[derive(Debug, Default)]
struct Modes {
    ansi_quotes: bool,
    no_backslash_escapes: bool,
    foreign: Option<&'static str>,
}

/// The session settings that change how the server reads a statement's
/// bytes, as the server last reported them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Settings {
    /// `@@sql_mode`.
    pub sql_mode: String,
    /// `@@character_set_client`.
    pub charset_client: String,
    /// `@@character_set_connection`.
    pub charset_connection: String,
    /// `@@character_set_results` (empty: NULL).
    pub charset_results: String,
    /// `@@session_track_system_variables`.
    pub tracked: String,
    /// The variable that makes the session's transactions read-only
    /// (`transaction_read_only`, `tx_read_only` on MariaDB before 11.1),
    /// followed too while a policy sets `readOnly`.
    pub read_only_var: Option<&'static str>,
    /// Its value as the server last reported it.
    pub read_only: String,
    /// The session's current database (`DATABASE()`; `None`: none
    /// selected), read with the settings: at the session's start and after
    /// every statement that is not a plain SELECT, INSERT, UPDATE or DELETE
    /// (the only ones that can change it: `USE`, COM_INIT_DB, `DROP
    /// DATABASE`).
    pub database: Option<String>,
    /// `@@lower_case_table_names`: whether the server stores and looks up
    /// table and database names in lower case (`0`: as written, case
    /// sensitive).
    pub lower_case_names: bool,
}

impl Settings {
    /// Takes a value the server reported for `name` (other names are ignored).
    pub fn set(&mut self, name: &str, value: &str) {
        let slot = match name.to_ascii_lowercase().as_str() {
            "sql_mode" => &mut self.sql_mode,
            "character_set_client" => &mut self.charset_client,
            "character_set_connection" => &mut self.charset_connection,
            "character_set_results" => &mut self.charset_results,
            "session_track_system_variables" => &mut self.tracked,
            n if self.read_only_var == Some(n) => &mut self.read_only,
            _ => return,
        };
        *slot = value.to_string();
    }

    /// Whether the session's transactions are read-only, as last reported.
    pub fn is_read_only(&self) -> bool {
        self.read_only == "1" || self.read_only.eq_ignore_ascii_case("ON")
    }

    /// The variables to have the server track: [`TRACKED`], and the
    /// read-only variable when followed.
    pub fn tracked_list(&self) -> String {
        match self.read_only_var {
            Some(v) => format!("{TRACKED},{v}"),
            None => TRACKED.to_string(),
        }
    }

    /// The flags of `sql_mode` that change how a text is read, in one pass
    /// over it: ANSI_QUOTES, NO_BACKSLASH_ESCAPES, and the first foreign
    /// grammar ([`FOREIGN_GRAMMARS`]).
    fn modes(&self) -> Modes {
        let mut m = Modes::default();
        for f in self.sql_mode.split(',').map(str::trim) {
            if f.eq_ignore_ascii_case("ANSI_QUOTES") {
                m.ansi_quotes = true;
            } else if f.eq_ignore_ascii_case("NO_BACKSLASH_ESCAPES") {
                m.no_backslash_escapes = true;
            } else if m.foreign.is_none() {
                m.foreign = FOREIGN_GRAMMARS
                    .iter()
                    .copied()
                    .find(|g| f.eq_ignore_ascii_case(g));
            }
        }
        m
    }

    /// Whether the server stopped reporting a variable the sidecar follows
    /// (the session's tracking was changed behind its back).
    pub fn tracking_lost(&self) -> Option<String> {
        // No allocation unless lost: it is asked after every OK packet
        // that reports a change.
        let tracked = || self.tracked.split(',').map(str::trim);
        if tracked().any(|v| v == "*") {
            return None;
        }
        TRACKED
            .split(',')
            .chain(self.read_only_var)
            .find(|v| !tracked().any(|t| t.eq_ignore_ascii_case(v)))
            .map(|v| {
                format!(
                    "the server no longer reports {v} (session_track_system_variables is {:?}), so Sluice cannot follow how it reads statements",
                    self.tracked
                )
            })
    }

    /// Why no statement can be decided in this state, except one that
    /// brings it back ([`restores`]); `None` when the sidecar models it.
    pub fn unmodelled(&self) -> Option<String> {
        self.unmodelled_under(&self.modes())
    }

    /// [`Settings::unmodelled`], with `sql_mode`'s flags read already.
    fn unmodelled_under(&self, modes: &Modes) -> Option<String> {
        if let Some(flag) = modes.foreign {
            return Some(format!(
                "the session's sql_mode includes {flag}, under which the server parses another SQL grammar than Sluice's MySQL one"
            ));
        }
        for (name, value) in [
            ("character_set_client", &self.charset_client),
            ("character_set_connection", &self.charset_connection),
            ("character_set_results", &self.charset_results),
        ] {
            if !UTF8.iter().any(|c| value.eq_ignore_ascii_case(c)) {
                let shown = if value.is_empty() { "NULL" } else { value };
                return Some(format!(
                    "the session's {name} is {shown}; Sluice decodes statements and results as UTF-8 only (utf8mb4, utf8mb3)"
                ));
            }
        }
        None
    }

    /// Why `text` cannot be decided under the session's settings, when so.
    pub fn refusal(&self, text: &str) -> Option<String> {
        let modes = self.modes();
        if let Some(why) = self.unmodelled_under(&modes) {
            if restores(text) {
                return None;
            }
            return Some(format!(
                "{why}; until it is set back (SET NAMES utf8mb4, SET character_set_client = utf8mb4 and the like, SET sql_mode = ...) statements are refused"
            ));
        }
        if modes.ansi_quotes && text.contains('"') {
            return Some(
                "the session's sql_mode includes ANSI_QUOTES, under which the server reads \"...\" as a name where Sluice reads a string; quote names with backticks and strings with single quotes, or turn ANSI_QUOTES off".into(),
            );
        }
        if modes.no_backslash_escapes && text.contains('\\') {
            return Some(
                "the session's sql_mode includes NO_BACKSLASH_ESCAPES, under which the server reads a backslash in a string literally where Sluice reads an escape; avoid backslashes or turn NO_BACKSLASH_ESCAPES off".into(),
            );
        }
        None
    }
}

/// Whether `text` is one of the few statements that bring the session
/// back to settings the sidecar models: `SET NAMES <utf8 charset> [COLLATE
/// <name>]`, `SET [SESSION] sql_mode = '<flags>' | DEFAULT`, `SET
/// [SESSION] character_set_client | _connection | _results = <utf8
/// charset>` (one at a time: each may be the one left). Nothing else (no
/// quote but single quotes around plain names, no comment). Each is plain
/// ASCII, which every character set a client may use reads as ASCII.
fn restores(text: &str) -> bool {
    let t = text.trim().trim_end_matches(';').trim();
    let words: Vec<String> = t
        .split_ascii_whitespace()
        .map(|w| w.to_ascii_lowercase())
        .collect();
    match words.as_slice() {
        [set, names, cs] if set == "set" && names == "names" => {
            unquoted(cs).is_some_and(|c| UTF8.contains(&c))
        }
        [set, names, cs, collate, coll]
            if set == "set" && names == "names" && collate == "collate" =>
        {
            unquoted(cs).is_some_and(|c| UTF8.contains(&c)) && unquoted(coll).is_some()
        }
        _ => {
            // SET [SESSION] sql_mode = '<A,B>' | DEFAULT, spaced any way.
            let compact: String = t.chars().filter(|c| !c.is_whitespace()).collect();
            let lower = compact.to_ascii_lowercase();
            let rest = lower
                .strip_prefix("setsession")
                .or_else(|| lower.strip_prefix("set@@session."))
                .or_else(|| lower.strip_prefix("set"));
            if let Some(value) = rest.and_then(charset_variable_value) {
                return unquoted(value).is_some_and(|c| UTF8.contains(&c));
            }
            let Some(value) = rest.and_then(|r| r.strip_prefix("sql_mode=")) else {
                return false;
            };
            if value == "default" {
                return true;
            }
            value
                .strip_prefix('\'')
                .and_then(|v| v.strip_suffix('\''))
                .is_some_and(|v| {
                    v.chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ',')
                })
                && !text.contains("--")
                && !text.contains('#')
                && !text.contains("/*")
        }
    }
}

/// The value of `character_set_client|connection|results=<value>` (spaces
/// removed, lower case), as `restores` reads it.
fn charset_variable_value(compact: &str) -> Option<&str> {
    let rest = compact.strip_prefix("character_set_")?;
    ["client=", "connection=", "results="]
        .iter()
        .find_map(|v| rest.strip_prefix(v))
}

/// `value` without one pair of single quotes around it, when it is a plain
/// name (ASCII letters, digits, `_`; `restores` compares it with names).
fn unquoted(value: &str) -> Option<&str> {
    let inner = value
        .strip_prefix('\'')
        .and_then(|v| v.strip_suffix('\''))
        .unwrap_or(value);
    inner
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '_')
        .then_some(inner)
}

/// What one token of a text is to MySQL's lexer ([`lex`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// An unquoted word (keyword, identifier or number): ASCII letters and
    /// digits, `_`, `$` and any non-ASCII byte.
    Word,
    /// A quoted identifier (backticks, or `"…"` under ANSI_QUOTES).
    Quoted,
    /// A string literal (`'…'`, or `"…"` without ANSI_QUOTES).
    Str,
    /// `@name` (a user variable) or `@@name`.
    Var,
    /// A comment (`#`, `-- `, `/* … */`), none executable.
    Comment,
    /// `;`.
    Semi,
    /// Any other byte (punctuation, operators).
    Other,
}

/// One token: its kind and its bytes `start..end` in the text (quotes and
/// comment markers included).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Token {
    /// What it is.
    pub kind: Kind,
    /// Where it starts in the text.
    pub start: usize,
    /// Where it ends (exclusive).
    pub end: usize,
    /// For a quoted token: whether a backslash escapes inside it.
    escapes: bool,
}

/// A text as MySQL's lexer reads it ([`lex`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lexed {
    /// Its tokens, whitespace left out.
    pub tokens: Vec<Token>,
    /// How many non-empty statements it holds (split at `;` outside quotes
    /// and comments).
    pub statements: usize,
}

impl Token {
    /// Its bytes as written.
    pub fn raw<'a>(&self, text: &'a str) -> &'a str {
        text.get(self.start..self.end).unwrap_or_default()
    }

    /// Whether it is the word `kw` (in any case).
    pub fn is(&self, text: &str, kw: &str) -> bool {
        self.kind == Kind::Word && self.raw(text).eq_ignore_ascii_case(kw)
    }

    /// Its value: a quoted token's content unquoted and unescaped as MySQL
    /// reads it, any other token's bytes.
    pub fn value(&self, text: &str) -> String {
        if !matches!(self.kind, Kind::Str | Kind::Quoted) {
            return self.raw(text).to_string();
        }
        let b = text.as_bytes();
        let q = b[self.start];
        let inner = &b[self.start + 1..self.end.saturating_sub(1).max(self.start + 1)];
        let mut value = Vec::with_capacity(inner.len());
        let mut i = 0;
        while i < inner.len() {
            let d = inner[i];
            if self.escapes && d == b'\\' {
                let e = inner.get(i + 1).copied().unwrap_or(b'\\');
                match e {
                    b'0' => value.push(0),
                    b'b' => value.push(8),
                    b'n' => value.push(b'\n'),
                    b'r' => value.push(b'\r'),
                    b't' => value.push(b'\t'),
                    b'Z' => value.push(26),
                    // MySQL keeps the backslash of `\%` and `\_`.
                    b'%' | b'_' => value.extend_from_slice(&[b'\\', e]),
                    _ => value.push(e),
                }
                i += 2;
                continue;
            }
            if d == q && inner.get(i + 1) == Some(&q) {
                i += 1;
            }
            value.push(d);
            i += 1;
        }
        String::from_utf8_lossy(&value).into_owned()
    }
}

/// Whether `text` holds `needle` (ASCII, lower case) in any case: no
/// allocation; candidates found by `memchr` on its first letter in both
/// cases, so a long text is scanned once (some needles are asked of every
/// statement while column rules apply).
pub fn contains_ignore_case(text: &str, needle: &str) -> bool {
    let (b, n) = (text.as_bytes(), needle.as_bytes());
    let Some(&first) = n.first() else {
        return true;
    };
    memchr::memchr2_iter(first, first.to_ascii_uppercase(), b).any(|i| {
        b.get(i..i + n.len())
            .is_some_and(|s| s.eq_ignore_ascii_case(n))
    })
}

/// Whether `c` can be part of an unquoted word.
fn word_byte(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_' || c == b'$' || c >= 0x80
}

/// Where the quoted token that starts at `b[start]` (its quote character)
/// ends: past its closing quote (a doubled quote, or one after a backslash
/// when `escapes`, does not close it).
fn past_quote(b: &[u8], start: usize, escapes: bool) -> Result<usize, String> {
    let q = b[start];
    let mut i = start + 1;
    loop {
        let Some(&d) = b.get(i) else {
            return Err("the statement text has an unterminated quote".into());
        };
        if escapes && d == b'\\' {
            i += 2;
            continue;
        }
        if d == q {
            if b.get(i + 1) == Some(&q) {
                i += 2;
                continue;
            }
            return Ok(i + 1);
        }
        i += 1;
    }
}

/// What MySQL's own lexer makes of a text, in one pass: its tokens (see
/// [`Kind`]) and how many non-empty statements it holds, or why the text
/// must be refused because MySQL reads it in a way Sluice's SQL parser may
/// not: executable comments (`/*! … */`, `/*M! … */`, which MySQL runs and
/// the parser skips), `--` not followed by a space (two minus signs to
/// MySQL, a comment to the parser), NUL bytes, unterminated quotes or
/// comments. `ansi_quotes` and `no_backslash_escapes` as the session's
/// sql_mode says (see [`Settings::refusal`]).
pub fn lex(text: &str, ansi_quotes: bool, no_backslash_escapes: bool) -> Result<Lexed, String> {
    let b = text.as_bytes();
    let mut tokens = Vec::with_capacity(b.len() / 4 + 4);
    let mut i = 0;
    let mut statements = 0;
    let mut current_has_token = false;
    while i < b.len() {
        let start = i;
        let c = b[i];
        let kind = match c {
            0 => return Err("the statement text holds a NUL byte".into()),
            b'\'' | b'"' | b'`' => {
                let identifier = c == b'`' || (c == b'"' && ansi_quotes);
                let escapes = !identifier && !no_backslash_escapes;
                i = past_quote(b, i, escapes)?;
                current_has_token = true;
                let kind = if identifier { Kind::Quoted } else { Kind::Str };
                tokens.push(Token {
                    kind,
                    start,
                    end: i,
                    escapes,
                });
                continue;
            }
            b'#' => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
                Kind::Comment
            }
            b'-' if b.get(i + 1) == Some(&b'-') => match b.get(i + 2) {
                None => {
                    i = b.len();
                    Kind::Comment
                }
                Some(&n) if n <= b' ' => {
                    while i < b.len() && b[i] != b'\n' {
                        i += 1;
                    }
                    Kind::Comment
                }
                Some(_) => {
                    return Err("the statement text holds `--` not followed by a space, which MySQL reads as two minus signs and Sluice's parser as a comment; write `- -` or `-- ` ".into());
                }
            },
            b'/' if b.get(i + 1) == Some(&b'*') => {
                let body = &b[i + 2..];
                if body.first() == Some(&b'!') || body.starts_with(b"M!") {
                    return Err("the statement text holds an executable comment (/*! … */ or /*M! … */), which MySQL runs and Sluice's parser skips".into());
                }
                let Some(end) = body.windows(2).position(|w| w == b"*/") else {
                    return Err("the statement text has an unterminated comment".into());
                };
                i += 2 + end + 2;
                Kind::Comment
            }
            b';' => {
                if current_has_token {
                    statements += 1;
                }
                current_has_token = false;
                i += 1;
                Kind::Semi
            }
            c if c.is_ascii_whitespace() => {
                i += 1;
                continue;
            }
            b'@' => {
                i += 1;
                while i < b.len() && (word_byte(b[i]) || b[i] == b'@' || b[i] == b'.') {
                    i += 1;
                }
                current_has_token = true;
                Kind::Var
            }
            c if word_byte(c) => {
                while i < b.len() && word_byte(b[i]) {
                    i += 1;
                }
                current_has_token = true;
                Kind::Word
            }
            _ => {
                i += 1;
                current_has_token = true;
                Kind::Other
            }
        };
        tokens.push(Token {
            kind,
            start,
            end: i,
            escapes: false,
        });
    }
    if current_has_token {
        statements += 1;
    }
    Ok(Lexed { tokens, statements })
}

/// How many non-empty statements MySQL's lexer splits `text` into, or why
/// it is refused (see [`lex`]).
pub fn lexical_gate(
    text: &str,
    ansi_quotes: bool,
    no_backslash_escapes: bool,
) -> Result<usize, String> {
    lex(text, ansi_quotes, no_backslash_escapes).map(|l| l.statements)
}

/// What in `decided` could undo a read-only session, if anything: the
/// sidecar makes the session's transactions read-only (`SET SESSION
/// TRANSACTION READ ONLY`) and the server refuses every write in them, so
/// what must not run is whatever could turn that off: a SET (or `SET
/// STATEMENT … FOR`) of `transaction_read_only` / `tx_read_only`, `READ
/// WRITE` (SET [SESSION] TRANSACTION, START TRANSACTION), a CALL (a
/// procedure can turn it off and write in the same call, each of its
/// statements its own transaction), SQL-level PREPARE / EXECUTE (text
/// Sluice does not see), and text Sluice cannot parse. A stored function
/// that turns it off runs inside its statement's read-only transaction;
/// the server reports the change and the session is closed.
pub fn read_only_undo(decided: &sluice_policy::engine::SqlDecision) -> Option<&'static str> {
    if decided.parse_error.is_some() {
        return Some("a statement Sluice cannot parse (it could change the session's settings)");
    }
    decided
        .statements
        .iter()
        .find_map(|(s, _)| statement_undoes_read_only(s))
}

/// What in statement `s` could undo a read-only session (see
/// [`read_only_undo`]).
fn statement_undoes_read_only(s: &sluice_policy::sql::Statement) -> Option<&'static str> {
    use sluice_crds::StatementKind as K;
    if s.kinds.contains(&K::Call) {
        return Some("CALL (a procedure can turn the session read-write and write in one call)");
    }
    if s.prepare_name.is_some() || s.execute_name.is_some() {
        return Some("SQL-level PREPARE or EXECUTE (it runs text Sluice decides elsewhere)");
    }
    if s.kinds
        .iter()
        .all(|k| matches!(k, K::Select | K::Insert | K::Update | K::Delete))
    {
        return None;
    }
    // The words of the text and of its redacted form (comments dropped,
    // so `READ /* x */ WRITE` reads as the server reads it).
    let split = |t: &str| -> Vec<String> {
        t.to_ascii_lowercase()
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .filter(|w| !w.is_empty())
            .map(str::to_string)
            .collect()
    };
    for words in [split(&s.text), split(&s.redacted)] {
        if words
            .iter()
            .any(|w| w == "tx_read_only" || w == "transaction_read_only")
        {
            return Some("a SET of transaction_read_only or tx_read_only");
        }
        if words.windows(2).any(|w| w[0] == "read" && w[1] == "write") {
            return Some("READ WRITE (SET [SESSION] TRANSACTION, START TRANSACTION)");
        }
    }
    None
}

/// Whether `text` calls a built-in's name where the server may run a
/// stored function of that name instead: one of
/// [`MYSQL_SPACE_SENSITIVE`](sluice_policy::sql::MYSQL_SPACE_SENSITIVE)
/// followed by whitespace or a comment before its `(` (`count (x)` runs
/// `db.count` unless IGNORE_SPACE is on), or a built-in's name in backticks
/// before a `(`. The parser reads both as the built-in. Read conservatively:
/// a table or column of such a name before `(` counts too.
pub fn spaced_builtin_call(text: &str) -> bool {
    use sluice_policy::sql::{MYSQL_SPACE_SENSITIVE, mysql_builtin};
    let b = text.as_bytes();
    let word = |c: u8| c.is_ascii_alphanumeric() || c == b'_' || c == b'$' || c >= 0x80;
    // Past whitespace and comments from `i`: where the next token starts,
    // and whether anything was skipped.
    let skip = |mut i: usize| -> (usize, bool) {
        let start = i;
        loop {
            match b.get(i) {
                Some(c) if c.is_ascii_whitespace() => i += 1,
                Some(b'#') => {
                    while i < b.len() && b[i] != b'\n' {
                        i += 1;
                    }
                }
                Some(b'-') if b.get(i + 1) == Some(&b'-') => {
                    while i < b.len() && b[i] != b'\n' {
                        i += 1;
                    }
                }
                Some(b'/') if b.get(i + 1) == Some(&b'*') => {
                    match b[i + 2..].windows(2).position(|w| w == b"*/") {
                        Some(end) => i += 2 + end + 2,
                        None => i = b.len(),
                    }
                }
                _ => return (i, i > start),
            }
        }
    };
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            q @ (b'\'' | b'"') => {
                i += 1;
                while i < b.len() && b[i] != q {
                    i += if b[i] == b'\\' { 2 } else { 1 };
                }
                i += 1;
            }
            b'`' => {
                let start = i + 1;
                let end = b[start..]
                    .iter()
                    .position(|&c| c == b'`')
                    .map_or(b.len(), |e| start + e);
                let name = String::from_utf8_lossy(&b[start..end]).to_ascii_lowercase();
                i = end + 1;
                let (next, _) = skip(i);
                if b.get(next) == Some(&b'(')
                    && (mysql_builtin(&name) || MYSQL_SPACE_SENSITIVE.contains(&name.as_str()))
                {
                    return true;
                }
            }
            b'#' | b'-' | b'/' if skip(i).1 => i = skip(i).0,
            c if word(c) => {
                let start = i;
                while i < b.len() && word(b[i]) {
                    i += 1;
                }
                let name = String::from_utf8_lossy(&b[start..i]).to_ascii_lowercase();
                if MYSQL_SPACE_SENSITIVE.contains(&name.as_str()) {
                    let (next, skipped) = skip(i);
                    if skipped && b.get(next) == Some(&b'(') {
                        return true;
                    }
                }
            }
            _ => i += 1,
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_could_undo_a_read_only_session_is_found() {
        use sluice_policy::sql::{SqlDialect, parse};
        let undoes = |sql: &str| {
            parse(sql, SqlDialect::Mysql)
                .unwrap_or_else(|e| panic!("{sql}: {e}"))
                .iter()
                .find_map(statement_undoes_read_only)
        };
        for sql in [
            "SET SESSION TRANSACTION READ WRITE",
            "SET TRANSACTION READ /* x */ WRITE",
            "START TRANSACTION READ WRITE",
            "SET @@session.tx_read_only = 0",
            "SET SESSION `transaction_read_only` = OFF",
            "CALL p()",
        ] {
            assert!(undoes(sql).is_some(), "{sql}");
        }
        for sql in [
            "SET SESSION TRANSACTION READ ONLY",
            "SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED",
            "START TRANSACTION READ ONLY",
            "SELECT @@tx_read_only",
            "UPDATE t SET read_write = 1",
        ] {
            assert_eq!(undoes(sql), None, "{sql}");
        }
    }

    #[test]
    fn built_in_names_where_a_stored_function_may_run_are_found() {
        assert!(!spaced_builtin_call(
            "select count(*), concat (a, b) from t"
        ));
        assert!(spaced_builtin_call("select count (ssn) from t"));
        assert!(spaced_builtin_call("select SUM/**/(x) from t"));
        assert!(spaced_builtin_call("select max#c\n(x) from t"));
        assert!(spaced_builtin_call("select `concat`(ssn) from t"));
        assert!(!spaced_builtin_call("select 'count (x)', `t` (x)"));
        assert!(!spaced_builtin_call("insert into t (a) values (1)"));
    }

    fn utf8() -> Settings {
        Settings {
            sql_mode: "STRICT_TRANS_TABLES".into(),
            charset_client: "utf8mb4".into(),
            charset_connection: "utf8mb4".into(),
            charset_results: "utf8mb4".into(),
            tracked: TRACKED.into(),
            ..Default::default()
        }
    }

    #[test]
    fn statements_are_counted_as_mysql_splits_them() {
        let n = |t: &str| lexical_gate(t, false, false);
        assert_eq!(n("select 1; select 2"), Ok(2));
        assert_eq!(n(r"select 'a\'; drop table t; -- '"), Ok(1));
        assert_eq!(n("select 'a'; drop table t; -- '"), Ok(2));
        assert_eq!(
            lexical_gate(r"select 'a\'; drop table t; -- '", false, true).ok(),
            Some(2)
        );
        assert_eq!(n("select 1 # ; drop\n; select 2;"), Ok(2));
        assert_eq!(n("select 1 -- ; drop\n"), Ok(1));
        assert!(n("select 1 --1; drop table t").is_err());
        assert!(n("select 1 /*! ; drop table t */").is_err());
        assert!(n("select 1 /*M!100000 , ssn */").is_err());
        assert_eq!(n("select 1 /* ; */ ;;"), Ok(1));
        assert_eq!(n("select \"a;\" ; select `b;`"), Ok(2));
        assert!(n("select 'a").is_err());
    }

    #[test]
    fn settings_refuse_what_they_change() {
        let mut s = utf8();
        assert_eq!(s.refusal(r#"select "x", 'a\b'"#), None);
        s.set("sql_mode", "ANSI_QUOTES");
        assert!(s.refusal(r#"select "ssn" from customers"#).is_some());
        assert_eq!(s.refusal("select ssn from customers"), None);
        s.set("SQL_MODE", "NO_BACKSLASH_ESCAPES");
        assert!(s.refusal(r"select 'a\' ; drop table t; -- '").is_some());
        s.set("sql_mode", "PIPES_AS_CONCAT,ORACLE");
        assert!(s.refusal("select 1").is_some());
        assert_eq!(s.refusal("SET sql_mode = ''"), None);
        assert_eq!(
            s.refusal("set session sql_mode='STRICT_TRANS_TABLES';"),
            None
        );
        assert!(s.refusal("set sql_mode='' ; drop table t").is_some());
        let mut s = utf8();
        s.set("character_set_client", "gbk");
        assert!(s.refusal("select 1").unwrap().contains("gbk"));
        assert_eq!(s.refusal("SET NAMES utf8mb4"), None);
        assert_eq!(s.refusal("set names 'utf8mb4' collate utf8mb4_bin"), None);
        assert!(s.refusal("set names gbk").is_some());
        // One variable at a time, each a way back.
        assert_eq!(s.refusal("SET character_set_client = utf8mb4"), None);
        assert_eq!(
            s.refusal("set session character_set_results='utf8mb3';"),
            None
        );
        assert_eq!(
            s.refusal("SET @@session.character_set_connection = utf8"),
            None
        );
        assert!(s.refusal("SET character_set_client = big5").is_some());
        assert!(s.refusal("SET character_set_client = @x").is_some());
        assert!(
            s.refusal("SET character_set_client = utf8mb4; select 1")
                .is_some()
        );
        assert!(s.refusal("SET character_set_server = utf8mb4").is_some());
        s.set("character_set_client", "utf8mb4");
        s.set("character_set_results", "");
        assert!(s.refusal("select 1").unwrap().contains("NULL"));
        let mut s = utf8();
        assert_eq!(s.tracking_lost(), None);
        s.set("session_track_system_variables", "autocommit");
        assert!(s.tracking_lost().is_some());
    }
}
