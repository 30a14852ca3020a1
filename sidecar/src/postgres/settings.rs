//! Server settings that change how PostgreSQL reads a statement's bytes
//! (DESIGN.md §6 "Server state the sidecar must model").
//!
//! Sluice lexes statements as PostgreSQL does with
//! `standard_conforming_strings = on` and decodes them (and runs its
//! detectors on results) as UTF-8. The server reports both settings in
//! ParameterStatus (at startup, including `ALTER ROLE/DATABASE … SET`, and
//! whenever they change); the session tracks what it reports. While either
//! is anything else, every statement is refused except the few that bring
//! the session back ([`is_restore`]): with `standard_conforming_strings =
//! off`, `'a\''` ends a string where Sluice would read on, and a non-UTF-8
//! `client_encoding` hides values from the detectors (and in multi-byte
//! encodings such as SJIS moves the backslashes).
//!
//! A pipeline is decided before the server has run its earlier statements,
//! so a statement that may change these settings is a *barrier* ([`Effect`]):
//! nothing after it is decided until the server's answer to it (with its
//! ParameterStatus) has arrived. Statements that change them directly must
//! come alone: a simple query string holding one and another statement is
//! refused, as is an extended-protocol group where anything but Sync follows
//! its Execute.

/// What a statement may do to the settings Sluice models.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Effect {
    /// Nothing Sluice can see.
    None,
    /// It may change them indirectly (ending a transaction reverts `SET
    /// LOCAL`; `CALL` and SQL `EXECUTE` run text Sluice does not see here):
    /// what follows waits for its answer.
    Wait,
    /// It changes them, or may (`SET`/`RESET` of them or of `ALL`,
    /// `DISCARD`, `set_config(…)` whose name may be computed, text Sluice
    /// cannot parse): it must come alone, and what follows waits.
    Alone,
}

/// The settings as the server reported them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerSettings {
    /// `standard_conforming_strings`.
    pub standard_conforming_strings: String,
    /// `client_encoding`.
    pub client_encoding: String,
}

impl Default for ServerSettings {
    fn default() -> Self {
        ServerSettings {
            standard_conforming_strings: "on".into(),
            client_encoding: "UTF8".into(),
        }
    }
}

impl ServerSettings {
    /// Records a ParameterStatus; true when it is one of the tracked settings.
    pub fn update(&mut self, name: &str, value: &str) -> bool {
        match name {
            "standard_conforming_strings" => self.standard_conforming_strings = value.into(),
            "client_encoding" => self.client_encoding = value.into(),
            _ => return false,
        }
        true
    }

    /// Why statements cannot be decided in this state, and how to get
    /// back; `None` when Sluice models it.
    pub fn unmodelled(&self) -> Option<String> {
        if !self.standard_conforming_strings.eq_ignore_ascii_case("on") {
            return Some(format!(
                "standard_conforming_strings is {:?} in this session, and Sluice reads statements only as PostgreSQL does with it on (backslashes would end strings where Sluice reads on); send `SET standard_conforming_strings = on` (or `RESET standard_conforming_strings`) to go on",
                self.standard_conforming_strings
            ));
        }
        if !self.client_encoding.eq_ignore_ascii_case("UTF8") {
            return Some(format!(
                "client_encoding is {:?} in this session, and Sluice decides statements and masks results only in UTF8; send `SET client_encoding = 'UTF8'` to go on (and do not set PGCLIENTENCODING or client_encoding at connect)",
                self.client_encoding
            ));
        }
        None
    }
}

/// Whether the server may read `text` into other tokens than Sluice does
/// should the settings have changed where Sluice cannot see it coming. Any
/// statement may change them that way: a user-defined function, a trigger
/// of a write, or a procedure can call `set_config('standard_conforming_strings',
/// 'off', false)` or set `client_encoding` to SJIS, BIG5, GBK, UHC,
/// GB18030 or JOHAB, and their barrier ([`Effect`]) is not seen from the
/// statement's text. Both change token boundaries only through a
/// backslash: `'a\'' …` ends a string with it off, and in those encodings
/// a multi-byte character can swallow the backslash of `E'…\''`. (Quotes,
/// `-`, `/`, `*` and `$`, which open and close strings, identifiers and
/// comments, are never the second byte of a character in any encoding
/// PostgreSQL accepts from a client; JOHAB's can be a letter, a digit or
/// `;`, which changes names or merges statements into one the server
/// refuses, and is not modelled further.) So a text holding a
/// backslash is decided only once everything sent before it is answered,
/// with the settings the server reported by then; in an extended-protocol
/// group, it must come before the group's first Execute.
pub fn lexing_depends_on_settings(text: &[u8]) -> bool {
    text.contains(&b'\\')
}

/// The settings whose change Sluice must see (lower case, as written).
const TRACKED: &[&str] = &["standard_conforming_strings", "client_encoding"];

/// What `text` (one decided statement of it, `kind` as classified; `None`
/// when it did not parse) may do to the modelled settings.
pub fn effect(statement: Option<&sluice_policy::sql::Statement>, text: &str) -> Effect {
    let Some(s) = statement else {
        // Not parsed (onParseError let it through): anything may be in it.
        return if text.trim().is_empty() {
            Effect::None
        } else {
            Effect::Alone
        };
    };
    use sluice_crds::StatementKind as K;
    // `UPDATE pg_settings SET setting = …` calls set_config through a rule.
    if s.functions.iter().any(|f| f.ends_with("set_config"))
        || s.tables.iter().any(|t| t.ends_with("pg_settings"))
        || s.kinds.contains(&K::Do)
    {
        return Effect::Alone;
    }
    // The words are looked at only for the kinds that need them, so plain
    // reads and writes pay no allocation here.
    if s.kinds.iter().any(|k| matches!(k, K::Set | K::Other)) {
        let lower = s.text.to_ascii_lowercase();
        let words: Vec<&str> = lower
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .filter(|w| !w.is_empty())
            .collect();
        if matches!(words.first().copied(), Some("discard" | "load")) {
            return Effect::Alone;
        }
        // SET/RESET of another setting (search_path, say) changes nothing
        // Sluice reads; of these, of ALL, `SET NAMES`, or a quoted name
        // Sluice cannot be sure of, it does.
        if s.kinds.contains(&K::Set)
            && (TRACKED.iter().any(|t| words.contains(t))
                || words.contains(&"all")
                || words.contains(&"names")
                || quoted_name(&lower))
        {
            return Effect::Alone;
        }
        if matches!(
            words.first().copied(),
            Some(
                "release"
                    | "rollback"
                    | "abort"
                    | "end"
                    | "commit"
                    | "prepare"
                    | "execute"
                    | "call"
                    | "fetch"
                    | "move"
            )
        ) {
            return Effect::Wait;
        }
    }
    if s.kinds
        .iter()
        .any(|k| matches!(k, K::Commit | K::Rollback | K::Call))
        || s.execute_name.is_some()
        || s.prepare_name.is_some()
    {
        return Effect::Wait;
    }
    Effect::None
}

/// The setting that makes a session read-only (`spec.readOnly`).
pub const READ_ONLY_SETTING: &str = "default_transaction_read_only";

/// What in `text` (one decided statement of it; `None` when it did not
/// parse) could undo a read-only session, if anything: the sidecar opens it
/// with `default_transaction_read_only = on` (so `RESET` brings that back),
/// and refuses whatever could turn it or the transaction's own
/// `transaction_read_only` off. Fail closed: text Sluice cannot read (a
/// quoted or escaped setting name, a DO block, an unparsed statement) is
/// refused too. Writes themselves (`ALTER ROLE … SET`, `nextval`, functions
/// that write) are left to the server, which refuses them.
pub fn read_only_undo(
    statement: Option<&sluice_policy::sql::Statement>,
    text: &str,
) -> Option<&'static str> {
    let Some(s) = statement else {
        return (!text.trim().is_empty())
            .then_some("a statement Sluice cannot parse (it could change the session's settings)");
    };
    use sluice_crds::StatementKind as K;
    if s.functions.iter().any(|f| f.ends_with("set_config")) {
        return Some("set_config (the setting it names may be computed)");
    }
    if s.tables.iter().any(|t| t.ends_with("pg_settings"))
        && s.kinds
            .iter()
            .any(|k| matches!(k, K::Update | K::Insert | K::Delete | K::Merge))
    {
        return Some("a write to pg_settings (it calls set_config)");
    }
    if s.kinds.contains(&K::Do) {
        return Some("a DO block (it could SET anything)");
    }
    if !s
        .kinds
        .iter()
        .any(|k| matches!(k, K::Set | K::Begin | K::Other | K::Call | K::Alter))
    {
        return None;
    }
    let lower = s.text.to_ascii_lowercase();
    // The words of the text and of its redacted form (comments dropped, so
    // `READ /* x */ WRITE` reads as PostgreSQL reads it).
    let redacted = s.redacted.to_ascii_lowercase();
    let words: Vec<&str> = lower
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .chain(std::iter::once(";"))
        .chain(redacted.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')))
        .filter(|w| !w.is_empty())
        .collect();
    if words
        .iter()
        .any(|w| *w == READ_ONLY_SETTING || *w == "transaction_read_only")
    {
        return Some("a SET or RESET of default_transaction_read_only or transaction_read_only");
    }
    if words.windows(2).any(|w| w == ["read", "write"]) {
        return Some(
            "READ WRITE (SET TRANSACTION, BEGIN, START TRANSACTION, SET SESSION CHARACTERISTICS)",
        );
    }
    if words.first() == Some(&"discard") {
        return Some("DISCARD");
    }
    if s.kinds.contains(&K::Set) && (words.contains(&"all") || quoted_name(&lower)) {
        return Some("RESET ALL, or a SET or RESET whose setting name is quoted or escaped");
    }
    None
}

/// Whether the setting a `SET`/`RESET` names is a quoted identifier
/// (`SET "standard_conforming_strings" = off`), which the word check above
/// cannot read.
fn quoted_name(lower: &str) -> bool {
    let mut rest = lower.trim_start();
    for keyword in ["set", "reset"] {
        if let Some(r) = rest.strip_prefix(keyword) {
            rest = r.trim_start();
            break;
        }
    }
    for keyword in ["session", "local"] {
        if let Some(r) = rest.strip_prefix(keyword) {
            rest = r.trim_start();
            break;
        }
    }
    // A comment before the name hides it as well.
    rest.starts_with('"')
        || rest.starts_with("u&")
        || rest.starts_with("/*")
        || rest.starts_with("--")
}

/// Whether `text` only brings the session back to what Sluice models (or
/// ends a transaction), written so that it reads the same in every state:
/// ASCII only, no backslash, no comment, one statement.
pub fn is_restore(text: &str) -> bool {
    if !text.is_ascii() || text.contains('\\') || text.contains("--") || text.contains("/*") {
        return false;
    }
    let lower = text
        .trim()
        .trim_end_matches(';')
        .trim()
        .to_ascii_lowercase();
    if lower.contains(';') {
        return false;
    }
    let spaced = lower.replace('=', " = ");
    let w: Vec<&str> = spaced.split_whitespace().collect();
    let on = |v: &str| {
        matches!(
            v,
            "on" | "'on'" | "true" | "'true'" | "yes" | "'yes'" | "1" | "default"
        )
    };
    let utf8 = |v: &str| matches!(v, "utf8" | "'utf8'" | "'utf-8'" | "unicode" | "'unicode'");
    let set = |rest: &[&str]| -> bool {
        match rest {
            ["standard_conforming_strings", "to" | "=", v] => on(v),
            ["client_encoding", "to" | "=", v] => utf8(v),
            ["names", v] => utf8(v),
            _ => false,
        }
    };
    match w.as_slice() {
        ["set", "session", rest @ ..] => set(rest),
        ["set", rest @ ..] => set(rest),
        [
            "reset",
            "standard_conforming_strings" | "client_encoding" | "all",
        ] => true,
        ["discard", "all"] => true,
        ["rollback" | "abort" | "commit" | "end"] => true,
        [
            "rollback" | "abort" | "commit" | "end",
            "work" | "transaction",
        ] => true,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restores() {
        for t in [
            "SET standard_conforming_strings = on",
            "set standard_conforming_strings to 'on';",
            "SET SESSION standard_conforming_strings=true",
            "RESET standard_conforming_strings",
            "RESET ALL",
            "DISCARD ALL",
            "SET client_encoding = 'UTF8'",
            "SET NAMES 'utf8'",
            "ROLLBACK",
        ] {
            assert!(is_restore(t), "{t}");
        }
        for t in [
            "SET standard_conforming_strings = off",
            "SET LOCAL standard_conforming_strings = on",
            "SELECT 'a\\''",
            "SET standard_conforming_strings = on; DROP TABLE t",
            "SET standard_conforming_strings = on -- x",
            "SET client_encoding = 'LATIN1'",
            "SELECT 1",
        ] {
            assert!(!is_restore(t), "{t}");
        }
    }

    #[test]
    fn quoted_setting_names_are_caught() {
        assert!(quoted_name("set \"standard_conforming_strings\" = off"));
        assert!(quoted_name(
            "set local /* x */ standard_conforming_strings = off"
        ));
        assert!(!quoted_name("set search_path = \"$user\", public"));
    }

    #[test]
    fn unmodelled_says_how_to_go_back() {
        let mut s = ServerSettings::default();
        assert!(s.unmodelled().is_none());
        assert!(s.update("standard_conforming_strings", "off"));
        assert!(
            s.unmodelled()
                .unwrap()
                .contains("SET standard_conforming_strings = on")
        );
        s.update("standard_conforming_strings", "on");
        s.update("client_encoding", "LATIN1");
        assert!(s.unmodelled().unwrap().contains("LATIN1"));
        assert!(!s.update("search_path", "x"));
    }
}
