//! The MySQL plane's decision cache: a session's decisions by the shape of
//! their text, as MySQL's lexer reads it ([`gate::lex`]).
//!
//! The key of a text is its token stream with literals that no decision
//! reads replaced by markers of their kind ([`shape_key`]): two texts with
//! one key have the same tokens in the same order, with whitespace at the
//! same places, but for the values of number and string literals, so
//! Sluice's parser builds the same statement shapes, tables, functions and
//! clauses from both. What else differs between them is not in the key and
//! never read from a cached decision: the text itself (the refusals that
//! read it, the views' spellings) is the one the client sent.
//!
//! As in the PostgreSQL plane ([`crate::enforcement::Enforcer`]), a
//! decision or mask plan may depend on a literal's value:
//! [`SqlDecision::literal_dependent`] says where (settings, `SHOW`,
//! arguments of functions that take names or SQL text, texts that do not
//! parse); such a text is cached under its exact text only, so a text of
//! the same shape with other values is decided on its own. A rule with a
//! `textPattern` can match literal values too: then nothing is cached by
//! shape at all (`literal_sensitive`).
//!
//! Every decision in the cache was taken under one standing (a policy
//! change empties it: [`Decisions::clear`]) and one reading of texts: the
//! session's `sql_mode` (ANSI_QUOTES and NO_BACKSLASH_ESCAPES change what
//! a token is), its current database (unqualified names resolve in it) and
//! `lower_case_table_names`. A change of any of them empties it too.
//! Bounded: [`ENTRIES`] texts of at most [`MAX_TEXT`] bytes.

use std::collections::HashMap;
use std::sync::Arc;

use sluice_policy::engine::{PolicySet, SqlDecision};
use sluice_policy::sql::SqlDialect;

use crate::mysql::gate::{Kind, Lexed, Settings};

/// How many distinct texts (or shapes) a session keeps decisions for; past
/// this the cache starts over. Small: a decision holds syntax trees.
pub(super) const ENTRIES: usize = 64;

/// Texts longer than this are decided every time, never cached.
pub(super) const MAX_TEXT: usize = 4096;

/// What the cached decisions were taken under, besides the standing.
#[derive(Debug, Default, PartialEq, Eq)]
struct Reading {
    sql_mode: String,
    database: Option<String>,
    lower_case_names: bool,
}

/// A session's decision cache (see the module docs).
pub(super) struct Decisions {
    /// Keyed by client-sent text (an exact text, or a shape key that starts
    /// with a NUL byte, which no text that passed the gate holds): foldhash,
    /// seeded at random per process.
    map: HashMap<Box<str>, Arc<SqlDecision>, foldhash::fast::RandomState>,
    reading: Reading,
    /// Whether a rule has a `textPattern`: no shape keys then.
    literal_sensitive: bool,
}

impl Decisions {
    /// An empty cache; `literal_sensitive` as the standing says.
    pub(super) fn new(literal_sensitive: bool) -> Self {
        Decisions {
            map: HashMap::default(),
            reading: Reading::default(),
            literal_sensitive,
        }
    }

    /// Empties it: a new standing (`literal_sensitive` as it says).
    pub(super) fn clear(&mut self, literal_sensitive: bool) {
        self.map.clear();
        self.literal_sensitive = literal_sensitive;
    }

    /// Empties it when the session's reading of texts changed since its
    /// decisions were taken.
    fn follow(&mut self, settings: &Settings) {
        let r = &self.reading;
        if r.sql_mode == settings.sql_mode
            && r.database == settings.database
            && r.lower_case_names == settings.lower_case_names
        {
            return;
        }
        self.map.clear();
        self.reading = Reading {
            sql_mode: settings.sql_mode.clone(),
            database: settings.database.clone(),
            lower_case_names: settings.lower_case_names,
        };
    }

    /// The decision on `text`, read by MySQL's lexer as `lexed` under
    /// `settings`: cached by its exact text or its shape, or taken by `set`
    /// and cached. `keep` says whether a new decision may be cached (one
    /// the caller refuses undecided is not).
    pub(super) fn decide(
        &mut self,
        set: &PolicySet,
        settings: &Settings,
        text: &str,
        lexed: &Lexed,
        keep: impl FnOnce(&SqlDecision) -> bool,
    ) -> Arc<SqlDecision> {
        let by_shape = !self.literal_sensitive;
        let shape = || by_shape.then(|| shape_key(text, lexed)).flatten();
        self.decide_keyed(set, settings, text, shape, keep)
    }

    /// The decision on `text`, a text that passed the gate when it was
    /// prepared (a prepared statement's, decided again at each EXECUTE
    /// under the standing in force): cached by its exact text.
    pub(super) fn decide_again(
        &mut self,
        set: &PolicySet,
        settings: &Settings,
        text: &str,
    ) -> Arc<SqlDecision> {
        self.decide_keyed(set, settings, text, || None, |_| true)
    }

    /// [`Decisions::decide`] with the shape key (`None`: the exact text
    /// only) made by `shape`, when the exact text is not cached.
    fn decide_keyed(
        &mut self,
        set: &PolicySet,
        settings: &Settings,
        text: &str,
        shape: impl FnOnce() -> Option<String>,
        keep: impl FnOnce(&SqlDecision) -> bool,
    ) -> Arc<SqlDecision> {
        if text.len() > MAX_TEXT {
            return Arc::new(decide_sql(set, text));
        }
        self.follow(settings);
        if let Some(d) = self.map.get(text) {
            return d.clone();
        }
        let key = shape();
        if let Some(key) = &key
            && let Some(d) = self.map.get(key.as_str())
        {
            return d.clone();
        }
        let decided = Arc::new(decide_sql(set, text));
        if !keep(&decided) {
            return decided;
        }
        if self.map.len() >= ENTRIES {
            self.map.clear();
        }
        // Shape and literal dependence go together: no text of this shape
        // is ever cached under the shape's key.
        let key: Box<str> = match key {
            Some(k) if !decided.literal_dependent() => k.into(),
            _ => text.into(),
        };
        self.map.insert(key, decided.clone());
        decided
    }
}

/// The shape key of `text` (read as `lexed`): its tokens as written,
/// separated by `\u{1}` (and a space where whitespace separated them), but
/// for
/// - a number (a word of ASCII digits only, with no `.` next to it): `#`;
/// - a string literal without a backslash, not written right after a word
///   (`X'…'`, `N'…'`, `_utf8mb4'…'` keep their value): `\u{3}` and its
///   quote character.
///
/// Comments stay as written. `None` when the text holds a byte below
/// `\u{4}` (the markers could then be confused with it).
pub(super) fn shape_key(text: &str, lexed: &Lexed) -> Option<String> {
    let b = text.as_bytes();
    if b.iter().any(|&c| c < 4) {
        return None;
    }
    let word = |c: u8| c.is_ascii_alphanumeric() || c == b'_' || c == b'$' || c >= 0x80;
    let mut key = String::with_capacity(text.len() + lexed.tokens.len() + 1);
    key.push('\0');
    let mut last_end = 0;
    for t in &lexed.tokens {
        if t.start > last_end {
            key.push(' ');
        }
        last_end = t.end;
        let raw = &b[t.start..t.end];
        let before = t.start.checked_sub(1).map(|i| b[i]);
        let after = b.get(t.end).copied();
        match t.kind {
            Kind::Word
                if raw.iter().all(u8::is_ascii_digit)
                    && before != Some(b'.')
                    && after != Some(b'.') =>
            {
                key.push('#');
            }
            Kind::Str if !raw.contains(&b'\\') && !before.is_some_and(word) => {
                key.push('\u{3}');
                key.push(char::from(raw[0]));
            }
            _ => key.push_str(t.raw(text)),
        }
        key.push('\u{1}');
    }
    Some(key)
}

/// `text` decided under `set`, a rename that takes a table out of its
/// rules' sight decided by those rules (see `renames`).
pub(super) fn decide_sql(set: &PolicySet, text: &str) -> SqlDecision {
    let decided = set.decide_sql(text, SqlDialect::Mysql);
    super::renames::escape(set, &decided).unwrap_or(decided)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mysql::gate::lex;

    fn key(text: &str) -> Option<String> {
        shape_key(text, &lex(text, false, false).unwrap())
    }

    #[test]
    fn shapes_fold_only_plain_literals() {
        let a = key("SELECT name FROM customers WHERE id = 42").unwrap();
        assert_eq!(a, key("SELECT name FROM customers WHERE id = 7").unwrap());
        assert_eq!(
            key("SELECT * FROM t WHERE a = 'it''s' AND b = \"x\"").unwrap(),
            key("SELECT * FROM t WHERE a = '--/*;DROP' AND b = \"\"").unwrap()
        );
        for (x, y) in [
            // Names, their case and quoting stay.
            ("SELECT a FROM t", "SELECT b FROM t"),
            ("SELECT a FROM Customers", "SELECT a FROM customers"),
            ("SELECT `a` FROM t", "SELECT a FROM t"),
            ("SELECT t1 FROM t", "SELECT t2 FROM t"),
            // Kinds of literals apart.
            ("SELECT 'a'", "SELECT \"a\""),
            ("SELECT 'a'", "SELECT 1"),
            // Literals whose reading depends on their value or prefix.
            ("SELECT 1.5", "SELECT 2.5"),
            ("SELECT t.1", "SELECT t.2"),
            ("SELECT 0x1f", "SELECT 0x2f"),
            ("SELECT 1e5", "SELECT 2e5"),
            ("SELECT X'ff'", "SELECT X'fe'"),
            ("SELECT _utf8mb4'a'", "SELECT _utf8mb4'b'"),
            (r"SELECT 'a\'b'", r"SELECT 'a\'c'"),
            // Whitespace where it separates.
            ("SELECT count (a) FROM t", "SELECT count(a) FROM t"),
            // Comments stay.
            ("SELECT 1 /* a */", "SELECT 1 /* b */"),
            // Statements stay.
            ("SELECT 1; SELECT 2", "SELECT 1 SELECT 2"),
            ("SELECT @a", "SELECT @b"),
        ] {
            assert_ne!(key(x), key(y), "{x} / {y}");
        }
        assert_eq!(key("SELECT 1 \u{1} 2"), None);
        // Never equal to a text that passed the gate (no NUL in those).
        assert!(a.starts_with('\0'));
    }
}
