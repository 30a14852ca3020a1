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
            _ => return,
        };
        *slot = value.to_string();
    }

    fn has_mode(&self, flag: &str) -> bool {
        self.sql_mode
            .split(',')
            .any(|f| f.trim().eq_ignore_ascii_case(flag))
    }

    /// Whether the server stopped reporting a variable the sidecar follows
    /// (the session's tracking was changed behind its back).
    pub fn tracking_lost(&self) -> Option<String> {
        let tracked: Vec<String> = self
            .tracked
            .split(',')
            .map(|v| v.trim().to_ascii_lowercase())
            .collect();
        if tracked.iter().any(|v| v == "*") {
            return None;
        }
        TRACKED
            .split(',')
            .find(|v| !tracked.iter().any(|t| t == v))
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
        if let Some(flag) = FOREIGN_GRAMMARS.iter().find(|f| self.has_mode(f)) {
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
        if let Some(why) = self.unmodelled() {
            if restores(text) {
                return None;
            }
            return Some(format!(
                "{why}; until it is set back (SET NAMES utf8mb4, SET sql_mode = ...) statements are refused"
            ));
        }
        if self.has_mode("ANSI_QUOTES") && text.contains('"') {
            return Some(
                "the session's sql_mode includes ANSI_QUOTES, under which the server reads \"...\" as a name where Sluice reads a string; quote names with backticks and strings with single quotes, or turn ANSI_QUOTES off".into(),
            );
        }
        if self.has_mode("NO_BACKSLASH_ESCAPES") && text.contains('\\') {
            return Some(
                "the session's sql_mode includes NO_BACKSLASH_ESCAPES, under which the server reads a backslash in a string literally where Sluice reads an escape; avoid backslashes or turn NO_BACKSLASH_ESCAPES off".into(),
            );
        }
        None
    }
}

/// Whether `text` is one of the few statements that bring the session
/// back to settings the sidecar models: `SET NAMES <utf8 charset> [COLLATE
/// <name>]`, `SET [SESSION] sql_mode = '<flags>' | DEFAULT`. Nothing else
/// (no quote but single quotes around plain flag names, no comment).
fn restores(text: &str) -> bool {
    let t = text.trim().trim_end_matches(';').trim();
    let words: Vec<String> = t
        .split_ascii_whitespace()
        .map(|w| w.to_ascii_lowercase())
        .collect();
    let plain = |w: &str| w.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    let unquote = |w: &str| -> Option<String> {
        let inner = w.strip_prefix('\'').and_then(|w| w.strip_suffix('\''));
        let w = inner.unwrap_or(w);
        plain(w).then(|| w.to_string())
    };
    match words.as_slice() {
        [set, names, cs] if set == "set" && names == "names" => {
            unquote(cs).is_some_and(|c| UTF8.contains(&c.as_str()))
        }
        [set, names, cs, collate, coll]
            if set == "set" && names == "names" && collate == "collate" =>
        {
            unquote(cs).is_some_and(|c| UTF8.contains(&c.as_str())) && unquote(coll).is_some()
        }
        _ => {
            // SET [SESSION] sql_mode = '<A,B>' | DEFAULT, spaced any way.
            let compact: String = t.chars().filter(|c| !c.is_whitespace()).collect();
            let lower = compact.to_ascii_lowercase();
            let rest = lower
                .strip_prefix("setsession")
                .or_else(|| lower.strip_prefix("set@@session."))
                .or_else(|| lower.strip_prefix("set"));
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

/// What MySQL's own lexer makes of a text: how many non-empty statements
/// it holds (split at `;` outside quotes and comments), or why the text
/// must be refused because MySQL reads it in a way Sluice's SQL parser may
/// not: executable comments (`/*! … */`, `/*M! … */`, which MySQL runs and
/// the parser skips), `--` not followed by a space (two minus signs to
/// MySQL, a comment to the parser), NUL bytes, unterminated quotes or
/// comments. `ansi_quotes` and `no_backslash_escapes` as the session's
/// sql_mode says (see [`Settings::refusal`]).
pub fn lexical_gate(
    text: &str,
    ansi_quotes: bool,
    no_backslash_escapes: bool,
) -> Result<usize, String> {
    let b = text.as_bytes();
    let mut i = 0;
    let mut statements = 0;
    let mut current_has_token = false;
    while i < b.len() {
        let c = b[i];
        match c {
            0 => return Err("the statement text holds a NUL byte".into()),
            b'\'' | b'"' | b'`' => {
                let escapes = c != b'`' && !(c == b'"' && ansi_quotes) && !no_backslash_escapes;
                i += 1;
                loop {
                    let Some(&d) = b.get(i) else {
                        return Err("the statement text has an unterminated quote".into());
                    };
                    if escapes && d == b'\\' {
                        i += 2;
                        continue;
                    }
                    if d == c {
                        if b.get(i + 1) == Some(&c) {
                            i += 2;
                            continue;
                        }
                        break;
                    }
                    i += 1;
                }
                // Past the closing quote.
                i += 1;
                current_has_token = true;
                continue;
            }
            b'#' => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
            }
            b'-' if b.get(i + 1) == Some(&b'-') => match b.get(i + 2) {
                None => i = b.len(),
                Some(&n) if n <= b' ' => {
                    while i < b.len() && b[i] != b'\n' {
                        i += 1;
                    }
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
                continue;
            }
            b';' => {
                if current_has_token {
                    statements += 1;
                }
                current_has_token = false;
                i += 1;
                continue;
            }
            c if c.is_ascii_whitespace() => {}
            _ => current_has_token = true,
        }
        i += 1;
    }
    if current_has_token {
        statements += 1;
    }
    Ok(statements)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utf8() -> Settings {
        Settings {
            sql_mode: "STRICT_TRANS_TABLES".into(),
            charset_client: "utf8mb4".into(),
            charset_connection: "utf8mb4".into(),
            charset_results: "utf8mb4".into(),
            tracked: TRACKED.into(),
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
        s.set("character_set_client", "utf8mb4");
        s.set("character_set_results", "");
        assert!(s.refusal("select 1").unwrap().contains("NULL"));
        let mut s = utf8();
        assert_eq!(s.tracking_lost(), None);
        s.set("session_track_system_variables", "autocommit");
        assert!(s.tracking_lost().is_some());
    }
}
