//! SQL-level prepared statements (`PREPARE s FROM '…'`, `EXECUTE s [USING
//! …]`, `DEALLOCATE PREPARE s`), decided by the text they prepare.
//!
//! Sluice's parser does not read `PREPARE … FROM`, so these statements are
//! recognised here, by MySQL's own lexical rules, before a text is decided:
//!
//! - `PREPARE s FROM '<text>'`: the literal's text (unescaped as the
//!   session's sql_mode says) is decided as a statement of its own, under
//!   the same gate as a COM_QUERY (deny rules, read-only, maxRowsAffected);
//!   refused, nothing reaches the server; otherwise the PREPARE is
//!   forwarded and, once the server prepared it, the text is remembered by
//!   the (case-insensitive) name, at most [`MAX_SQL_PREPARED`] names and
//!   [`MAX_SQL_PREPARED_BYTES`] of text per session. The server drops a
//!   name's statement before it prepares another under it, so the name is
//!   forgotten before the PREPARE is forwarded.
//! - `EXECUTE s [USING …]`: decided again as the remembered text under the
//!   standing in force, then run as that text is (put on record, its views
//!   looked up, its results masked by the text's plan, a write guarded). A
//!   name Sluice did not see prepared is refused.
//! - `PREPARE s FROM @v` or from any expression (MariaDB reads one): the
//!   text is not known to the sidecar: refused (fail closed).
//! - `DEALLOCATE PREPARE s` / `DROP PREPARE s`: decided as any statement;
//!   the name is forgotten whatever the server answers.
//! - `EXECUTE IMMEDIATE '<text>'` (MariaDB): decided and run as its text;
//!   from anything but one literal, refused.
//! - Any of them in a string with other statements: refused (send it on
//!   its own, or wrapped in `SET STATEMENT … FOR`). A procedure (or a
//!   compound statement, which Sluice's parser does not read) can prepare
//!   statements under any name, so every name is forgotten after a CALL or
//!   a text Sluice could not parse.

use super::*;
use crate::mysql::gate::{Kind, Token};

/// The SQL-level prepared statements a session may hold at once.
pub(super) const MAX_SQL_PREPARED: usize = 256;
/// The bytes of text they may hold together.
const MAX_SQL_PREPARED_BYTES: usize = 4 << 20;

/// What a text is to this module.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Form {
    /// `PREPARE name FROM '<text>'`.
    Prepare { name: String, text: String },
    /// `EXECUTE name [USING …]` (`using`: with USING).
    Execute { name: String, using: bool },
    /// `EXECUTE IMMEDIATE '<text>'`.
    Immediate { text: String },
    /// `DEALLOCATE PREPARE name`, `DROP PREPARE name`.
    Deallocate { name: String },
    /// One of them in a form Sluice does not read, or with other
    /// statements: refused, and why.
    Refused(String),
}

/// Whether `t` is the keyword `kw`.
fn is(text: &str, t: Option<&&Token>, kw: &str) -> bool {
    t.is_some_and(|t| t.is(text, kw))
}

/// A statement name (a word or a quoted identifier), lower-cased: MySQL's
/// prepared statement names are not case sensitive.
fn name(text: &str, t: Option<&&Token>) -> Option<String> {
    match t {
        Some(t) if matches!(t.kind, Kind::Word | Kind::Quoted) => {
            Some(t.value(text).to_lowercase())
        }
        _ => None,
    }
}

/// Whether a token of `lexed` is the word PREPARE, EXECUTE or DEALLOCATE
/// (in any case): no allocation.
fn may_hold(text: &str, lexed: &Lexed) -> bool {
    lexed.tokens.iter().any(|t| {
        t.kind == Kind::Word
            && matches!(t.end - t.start, 7 | 10)
            && (t.is(text, "prepare") || t.is(text, "execute") || t.is(text, "deallocate"))
    })
}

/// What `text` (read by MySQL's lexer as `lexed`) is to this module, when
/// it holds a PREPARE, EXECUTE or DEALLOCATE (`None`: it holds none of
/// them).
///
/// Read without ANSI_QUOTES and with backslash escapes: a text the session's
/// sql_mode would read otherwise is refused before this is asked
/// ([`Settings::refusal`]: no `"` under ANSI_QUOTES, no `\\` under
/// NO_BACKSLASH_ESCAPES).
pub(super) fn classify(text: &str, lexed: &Lexed) -> Option<Form> {
    // Every COM_QUERY comes here: looked at further only when it holds one
    // of the keywords at all.
    if !may_hold(text, lexed) {
        return None;
    }
    let all: Vec<&Token> = lexed
        .tokens
        .iter()
        .filter(|t| t.kind != Kind::Comment)
        .collect();
    let statements: Vec<&[&Token]> = all
        .split(|t| t.kind == Kind::Semi)
        .filter(|s| !s.is_empty())
        .collect();
    let is = |t: Option<&&Token>, kw: &str| is(text, t, kw);
    let name = |t: Option<&&Token>| name(text, t);
    let ours = |s: &&&[&Token]| {
        is(s.first(), "prepare")
            || is(s.first(), "execute")
            || is(s.first(), "deallocate")
            || (is(s.first(), "drop") && is(s.get(1), "prepare"))
    };
    // MariaDB's SET STATEMENT … FOR <statement>.
    let wrapped = |s: &&[&Token]| {
        is(s.first(), "set")
            && s.windows(2).any(|w| {
                is(w.first(), "for")
                    && ["prepare", "execute", "deallocate", "drop"]
                        .iter()
                        .any(|k| is(w.get(1), k))
            })
    };
    if statements.iter().any(wrapped) {
        return Some(Form::Refused(
            "statement refused by Sluice: SET STATEMENT … FOR is not served around SQL-level PREPARE, EXECUTE or DEALLOCATE; send the statement on its own".into(),
        ));
    }
    let s = *statements.iter().find(ours)?;
    if statements.len() > 1 {
        return Some(Form::Refused(
            "statement refused by Sluice: SQL-level PREPARE, EXECUTE and DEALLOCATE are served alone in their query string; send it on its own".into(),
        ));
    }
    let unread = |what: &str| {
        Some(Form::Refused(format!(
            "statement refused by Sluice: {what}"
        )))
    };
    let kinds: Vec<Kind> = s.iter().map(|t| t.kind).collect();
    if is(s.first(), "prepare") {
        return match (
            name(s.get(1)),
            is(s.get(2), "from"),
            &kinds[3.min(s.len())..],
        ) {
            (Some(name), true, [Kind::Str]) => Some(Form::Prepare {
                name,
                text: s[3].value(text),
            }),
            (Some(_), true, [Kind::Var]) => unread(
                "PREPARE … FROM a user variable prepares a text Sluice cannot read, so it cannot be decided; write the statement as one string literal (PREPARE s FROM '…')",
            ),
            _ => unread(
                "Sluice decides SQL-level PREPARE only in the form PREPARE name FROM '<statement>' (one string literal: the text it prepares must be known to be decided)",
            ),
        };
    }
    if is(s.first(), "execute") {
        if is(s.get(1), "immediate") {
            return match &kinds[2..] {
                [Kind::Str] => Some(Form::Immediate {
                    text: s[2].value(text),
                }),
                _ => unread(
                    "EXECUTE IMMEDIATE runs a text Sluice decides only when it is one string literal (EXECUTE IMMEDIATE '…')",
                ),
            };
        }
        return match (name(s.get(1)), s.get(2)) {
            (Some(name), None) => Some(Form::Execute { name, using: false }),
            (Some(name), Some(_)) if is(s.get(2), "using") => {
                Some(Form::Execute { name, using: true })
            }
            _ => unread("Sluice reads SQL-level EXECUTE only as EXECUTE name [USING …]"),
        };
    }
    // DEALLOCATE PREPARE name, DROP PREPARE name.
    match (is(s.get(1), "prepare"), name(s.get(2)), s.len()) {
        (true, Some(name), 3) => Some(Form::Deallocate { name }),
        _ => unread("Sluice reads DEALLOCATE only as DEALLOCATE PREPARE name"),
    }
}

impl Session<'_> {
    /// A COM_QUERY holding a PREPARE, EXECUTE or DEALLOCATE (`form`): see
    /// the module docs.
    pub(super) async fn sql_prepared(
        &mut self,
        form: Form,
        text: String,
        forward: &[u8],
        reply_seq: u8,
    ) -> Result<(), SessionError> {
        match form {
            Form::Refused(why) => self.refuse_undecided(&why, reply_seq, false).await,
            Form::Prepare { name, text: inner } => {
                self.sql_prepare(name, inner, forward, reply_seq).await
            }
            Form::Execute { name, using } => {
                let Some(prepared) = self.sql_statements.get(&name) else {
                    let why = format!(
                        "statement refused by Sluice: no statement named {name:?} was prepared through Sluice in this session (PREPARE {name} FROM '…'), so Sluice cannot tell what EXECUTE would run"
                    );
                    return self.refuse_undecided(&why, reply_seq, false).await;
                };
                let (mut inner, database) = (prepared.text.clone(), prepared.database.clone());
                // USING passes user variables, which may hold masked
                // values: its parameters are decided as the variables they
                // are (masked as any table's data, never stored).
                if using && self.masking.has_column_rules() {
                    inner = parameters_as_variables(&inner);
                }
                // Decided again under the standing in force; it runs in the
                // database current at its PREPARE.
                let decided = Decided {
                    decision: self
                        .decisions
                        .decide_again(&self.set, &self.settings, &inner),
                    text: inner,
                    database,
                };
                self.run_decided(&decided, forward, reply_seq, false).await
            }
            Form::Immediate { text: inner } => match self.decide_inner(inner) {
                Ok(decided) => self.run_decided(&decided, forward, reply_seq, false).await,
                Err(why) => self.refuse_undecided(&why, reply_seq, false).await,
            },
            Form::Deallocate { name } => {
                self.sql_statements.remove(&name);
                let decided = self.decide(Ok(text));
                match decided {
                    Ok(d) => self.run_decided(&d, forward, reply_seq, false).await,
                    Err(why) => self.refuse_undecided(&why, reply_seq, false).await,
                }
            }
        }
    }

    /// The text a PREPARE or EXECUTE IMMEDIATE names, decided as a
    /// COM_QUERY is (the server reads it under the same settings), one
    /// statement, none of this module's.
    fn decide_inner(&mut self, inner: String) -> Result<Decided, String> {
        let lexed = self.read(&inner)?;
        if classify(&inner, &lexed).is_some() {
            return Err("statement refused by Sluice: a prepared text may not itself be a PREPARE, EXECUTE or DEALLOCATE".into());
        }
        let decided = self.decide_lexed(inner, &lexed)?;
        if decided.decision.statements.len() > 1 {
            return Err(
                "statement refused by Sluice: a prepared statement holds one statement".into(),
            );
        }
        Ok(decided)
    }

    /// `PREPARE name FROM '<inner>'`: decided as `inner`; refused, or
    /// forwarded and remembered once the server prepared it.
    async fn sql_prepare(
        &mut self,
        name: String,
        inner: String,
        forward: &[u8],
        reply_seq: u8,
    ) -> Result<(), SessionError> {
        let decided = match self.decide_inner(inner) {
            Ok(d) => d,
            Err(why) => return self.refuse_undecided(&why, reply_seq, false).await,
        };
        let held: usize = self.sql_statements.values().map(|d| d.text.len()).sum();
        let refusal = if !self.sql_statements.contains_key(&name)
            && (self.sql_statements.len() >= MAX_SQL_PREPARED
                || held + decided.text.len() > MAX_SQL_PREPARED_BYTES)
        {
            Some(format!(
                "statement refused by Sluice: this session holds {} SQL-level prepared statements already (at most {MAX_SQL_PREPARED}, with {} MiB of text together); deallocate some (DEALLOCATE PREPARE name)",
                self.sql_statements.len(),
                MAX_SQL_PREPARED_BYTES >> 20
            ))
        } else {
            self.refusal(&decided.text, &decided.decision, false)
        };
        if let Some(why) = refusal {
            let _ = self.record(&decided.decision, Some(&why), false);
            return self.send_refusal(reply_seq, &why).await;
        }
        // The server drops the name's statement before preparing this one.
        self.sql_statements.remove(&name);
        self.up.command(forward).await?;
        let a = self.up.read().await?;
        let mut reply = Reply::new(reply_seq);
        if a.payload.first() == Some(&0x00) {
            self.relay_simple(&a.payload, &mut reply)?;
            self.sql_statements.insert(name, decided);
        } else {
            let scrub = results::reads_masked(&self.masking, &decided.decision, 0);
            reply.push(&results::scrub_err(&a.payload, &self.masking, scrub));
        }
        self.client.write_all(&reply.out).await?;
        Ok(())
    }
}

/// `text` (a prepared statement's, read as MySQL reads it at its PREPARE)
/// with each parameter marker `?` written as the user variable
/// `@sluice_using`: what `EXECUTE … USING @v` passes is a user variable's
/// value, which the masking reads as any table's data (`SELECT ?` with
/// `USING @v`, `@v` set from the SSN, gave the SSN in clear, and `INSERT
/// INTO t VALUES (?)` stored it).
fn parameters_as_variables(text: &str) -> String {
    let Ok(lexed) = crate::mysql::gate::lex(text, false, false) else {
        // Lexed at its PREPARE already; were it not, every `?` counts.
        return text.replace('?', "@sluice_using");
    };
    let mut out = String::with_capacity(text.len() + 32);
    let mut at = 0;
    for t in &lexed.tokens {
        if t.kind == Kind::Other && t.raw(text) == "?" {
            out.push_str(text.get(at..t.start).unwrap_or_default());
            out.push_str("@sluice_using");
            at = t.end;
        }
    }
    out.push_str(text.get(at..).unwrap_or_default());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prepare(name: &str, text: &str) -> Option<Form> {
        Some(Form::Prepare {
            name: name.into(),
            text: text.into(),
        })
    }

    #[test]
    fn the_forms_are_read_as_mysql_reads_them() {
        let c = |t: &str| classify(t, &crate::mysql::gate::lex(t, false, false).unwrap());
        let held = |t: &str| may_hold(t, &crate::mysql::gate::lex(t, false, false).unwrap());
        assert_eq!(c("SELECT 'prepare s from x'"), None);
        assert!(!held("SELECT name FROM customers WHERE id = 1"));
        assert!(held("x DeAlLoCaTe"));
        assert_eq!(c("select 1; select 2"), None);
        assert_eq!(
            c("PREPARE S FROM 'SELECT ssn FROM customers'"),
            prepare("s", "SELECT ssn FROM customers")
        );
        assert_eq!(
            c("prepare /* c */ `My` from \"select 'a''b', \\\"x\\\" \";"),
            prepare("my", "select 'a''b', \"x\" ")
        );
        assert_eq!(
            c(r"PREPARE s FROM 'select ''a'', \'b\', ''c\\'''"),
            prepare("s", r"select 'a', 'b', 'c\'")
        );
        let value = |t: &str, ansi: bool, nbe: bool| {
            let lexed = crate::mysql::gate::lex(t, ansi, nbe).unwrap();
            let [tok] = lexed.tokens.as_slice() else {
                panic!("{t}: {lexed:?}")
            };
            (tok.kind, tok.value(t))
        };
        assert_eq!(value(r"'a\n'", false, true), (Kind::Str, r"a\n".into()));
        assert_eq!(value(r"'a\n'", false, false), (Kind::Str, "a\n".into()));
        assert!(
            matches!(c("PREPARE s FROM @v"), Some(Form::Refused(w)) if w.contains("user variable"))
        );
        assert!(matches!(
            c("PREPARE s FROM CONCAT('select ', 'ssn')"),
            Some(Form::Refused(_))
        ));
        assert!(matches!(
            c("PREPARE s FROM 'select 1' 'x'"),
            Some(Form::Refused(_))
        ));
        assert!(matches!(
            c("SELECT 1; PREPARE s FROM 'select 1'"),
            Some(Form::Refused(_))
        ));
        assert!(matches!(c("EXECUTE s; SELECT 1"), Some(Form::Refused(_))));
        assert_eq!(
            c("execute S"),
            Some(Form::Execute {
                name: "s".into(),
                using: false
            })
        );
        assert_eq!(
            c("EXECUTE s USING @a, @b"),
            Some(Form::Execute {
                name: "s".into(),
                using: true
            })
        );
        assert_eq!(
            parameters_as_variables("SELECT ?, '?', `?`, ? /* ? */ FROM t WHERE id = ?"),
            "SELECT @sluice_using, '?', `?`, @sluice_using /* ? */ FROM t WHERE id = @sluice_using"
        );
        assert_eq!(
            c("EXECUTE IMMEDIATE 'DROP TABLE t'"),
            Some(Form::Immediate {
                text: "DROP TABLE t".into()
            })
        );
        assert!(matches!(c("EXECUTE IMMEDIATE @q"), Some(Form::Refused(_))));
        assert!(matches!(
            c("SET STATEMENT max_statement_time = 1 FOR EXECUTE s"),
            Some(Form::Refused(_))
        ));
        assert_eq!(
            c("DEALLOCATE PREPARE S"),
            Some(Form::Deallocate { name: "s".into() })
        );
        assert_eq!(
            c("drop prepare `s`"),
            Some(Form::Deallocate { name: "s".into() })
        );
        // ANSI_QUOTES: a double-quoted name is an identifier, not a text.
        assert_eq!(
            value("\"select 1\"", true, false),
            (Kind::Quoted, "select 1".into())
        );
    }
}
